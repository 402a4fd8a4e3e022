//! `inpaint`: completes images of which only some pixels are known, with an image model's
//! sampler (the library's `Sampler::inpaint`), and judges the completions of held-out digits.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use scorefield::checkpoint::Checkpoint;
use scorefield::data::ImageSet;
use scorefield::gpu::Gpu;
use scorefield::model::{ScoreMlp, Weights};
use scorefield::quality::QualityJudge;
use scorefield::sample::{ImageMask, Known, Sampler, SamplerConfig, ScoreSource};

use crate::config::Run;
use crate::files::{folder_of, npy_bytes, read_pngs, write_atomic};
use crate::picture;
use crate::run::clamp_to_pixels;

/// What to complete and how.
pub struct Request {
    /// top, bottom, left, right, box:X0,Y0,X1,Y1, or a PNG (white known, black hidden).
    pub mask: String,
    /// PNG images to complete; none: the first `count` held-out digits.
    pub images: Vec<PathBuf>,
    pub count: usize,
    pub completions: usize,
}

/// Completes the request's images with the checkpoint's model; writes the completions as .npy
/// `[images * completions, pixels]` to `out` and inpaint.png beside it.
pub fn inpaint(run: &Run, ckpt: &Checkpoint, request: &Request, out: &Path) -> Result<()> {
    let Some(set) = run.dataset.images() else {
        bail!("inpaint completes images; this checkpoint was trained on the 2-D dataset {}", run.dataset.name());
    };
    let (width, height) = (set.width, set.height);
    if request.completions == 0 {
        bail!("--completions must be at least 1");
    }
    let known_flags = mask_flags(&request.mask, width, height)?;
    let judge = if run.config.data.dataset == "digits" { Some(QualityJudge::digits()?) } else { None };
    let (originals, labels) = observations(request, judge.as_ref(), width, height)?;
    let known = Known::repeated(&originals, &known_flags, request.completions)?;

    let gpu = pollster::block_on(Gpu::with_adapter(run.config.adapter()))?;
    let model = ScoreMlp::from_checkpoint(&gpu, ckpt)?;
    let weights = if run.config.sample.ema { Weights::Ema } else { Weights::Raw };
    let source = ScoreSource::Network { model: &model, weights, parametrisation: run.objective.parametrisation() };
    let config = SamplerConfig::new(known.particles(), run.config.sample.seed);
    let mut sampler = pollster::block_on(Sampler::inpaint(&gpu, source, &run.method, config, &known))?;
    sampler.run();
    let mut x = pollster::block_on(sampler.read())?;
    clamp_to_pixels(&mut x);

    let d = width * height;
    let per = request.completions;
    let changed = (0..x.len()).filter(|&i| known_flags[i % d] && x[i] != originals[(i / d / per) * d + i % d]).count();
    write_atomic(out, &npy_bytes(&x, d)?)?;
    let dir = folder_of(out);
    let hidden: Vec<bool> = known_flags.iter().map(|k| !k).collect();
    picture::inpainting(&dir.join("inpaint.png"), &originals, &hidden, &x, (width, height), per)?;
    let images = originals.len() / d;
    println!(
        "{images} images x {per} completions ({}) -> {}, {}",
        run.method.name(),
        out.display(),
        dir.join("inpaint.png").display()
    );
    let known_count = known_flags.iter().filter(|&&k| k).count() * images * per;
    println!("known pixels kept exactly: {} of {known_count}", known_count - changed);
    if let (Some(judge), Some(labels)) = (judge, labels) {
        report_labels(&judge, set, &originals, &hidden, &x, &labels, per);
    }
    Ok(())
}

/// Known flags per pixel from the --mask value.
fn mask_flags(mask: &str, width: usize, height: usize) -> Result<Vec<bool>> {
    if !mask.to_ascii_lowercase().ends_with(".png") {
        return Ok(ImageMask::parse(mask)?.known(width, height)?);
    }
    let picture = read_pngs(&[PathBuf::from(mask)]).context("the --mask PNG")?;
    if (picture.width, picture.height) != (width, height) {
        bail!("the mask {mask} is {}x{}; the model's images are {width}x{height}", picture.width, picture.height);
    }
    // White (above mid-gray) is known.
    Ok(picture.pixels.iter().map(|&v| v > 0.0).collect())
}

/// The images to complete, [m, pixels], and their labels where they are held-out digits.
fn observations(
    request: &Request,
    judge: Option<&QualityJudge>,
    width: usize,
    height: usize,
) -> Result<(Vec<f32>, Option<Vec<usize>>)> {
    if !request.images.is_empty() {
        let set = read_pngs(&request.images)?;
        if (set.width, set.height) != (width, height) {
            bail!("the images are {}x{}; the model's are {width}x{height}", set.width, set.height);
        }
        return Ok((set.pixels, None));
    }
    let Some(judge) = judge else {
        bail!("give the images to complete with --image (PNG files of {width}x{height}); only digits models have held-out images built in");
    };
    let available = judge.held_out_labels().len();
    if request.count == 0 || request.count > available {
        bail!("--count {} held-out digits asked; there are {available}", request.count);
    }
    let d = judge.dim();
    Ok((judge.held_out()[..request.count * d].to_vec(), Some(judge.held_out_labels()[..request.count].to_vec())))
}

/// How often the classifier reads each completion as its original's digit, beside the
/// originals themselves and the known pixels alone (the hidden ones set to the data's mean).
fn report_labels(
    judge: &QualityJudge,
    set: &ImageSet,
    originals: &[f32],
    hidden: &[bool],
    completions: &[f32],
    labels: &[usize],
    per: usize,
) {
    let d = hidden.len();
    let share = |images: &[f32], per: usize| {
        let hits = images.chunks(d).enumerate().filter(|(k, img)| judge.classify(img).0 == labels[k / per]).count();
        hits as f64 / (images.len() / d) as f64
    };
    let mean: Vec<f32> = (0..d).map(|j| set.pixels.iter().skip(j).step_by(d).sum::<f32>() / set.len() as f32).collect();
    let mean_filled: Vec<f32> =
        originals.chunks(d).flat_map(|img| (0..d).map(|j| if hidden[j] { mean[j] } else { img[j] })).collect();
    println!(
        "completions the classifier reads as the original's digit: {:.3} (the originals: {:.3}; the known pixels \
         with the hidden ones at the data's mean: {:.3}; chance: {:.3})",
        share(completions, per),
        share(originals, 1),
        share(&mean_filled, 1),
        1.0 / judge.classes() as f64
    );
}
