//! `scorefield likelihood`: the negative log-likelihood of points under a checkpoint's model (or
//! the dataset's exact score) through the probability-flow ODE (the library's
//! `likelihood::log_likelihood`), with bits per dimension for images and, where the data is a
//! mixture, the gap to its exact log-density at the same points.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use scorefield::checkpoint::Checkpoint;
use scorefield::gpu::Gpu;
use scorefield::likelihood::{log_likelihood, Divergence, OdeConfig};
use scorefield::model::{ScoreMlp, Weights};
use scorefield::objective::{Objective, Projection};
use scorefield::rng::{self, Stream};
use scorefield::sample::ScoreSource;

use crate::config::{Run, RunConfig};
use crate::files::{npy_bytes, read_npy, write_atomic};

/// Largest dimension whose divergence `auto` computes exactly (d forward-mode passes per
/// evaluation); beyond it, Hutchinson's estimator with one probe (score_sde's default).
const EXACT_UP_TO: usize = 16;

/// What the command was asked.
pub struct Request {
    pub points: Option<PathBuf>,
    /// "auto", "exact" or "hutchinson".
    pub divergence: String,
    pub probes: usize,
    pub projection: String,
    pub rtol: f64,
    pub atol: f64,
    pub eps: f64,
}

/// Scores the points and writes the per-point negative log-likelihoods to `out` ([n, 1] .npy).
pub fn likelihood(run: &Run, ckpt: Option<&Checkpoint>, request: &Request, out: &Path) -> Result<()> {
    let config = &run.config;
    let objective = &run.objective;
    if ckpt.is_some() && matches!(objective, Objective::Dsm { .. } | Objective::Exact { .. } | Objective::Sliced { .. })
    {
        bail!(
            "a single-level model (objective {}) has no probability flow to integrate; likelihoods need a model of \
             every noise level: ve, vp, ddpm or ncsn",
            config.objective.kind
        );
    }
    let dim = run.dataset.dim();
    let (points, dequantized) = points(run, request.points.as_deref(), dim)?;
    let divergence = divergence(request, dim)?;
    let sde = RunConfig::sde(objective);
    let ode_config = OdeConfig {
        eps: request.eps,
        rtol: request.rtol,
        atol: request.atol,
        divergence,
        seed: config.sample.seed,
        ..OdeConfig::new(sde)
    };
    let gpu = pollster::block_on(Gpu::with_adapter(config.adapter()))?;
    let mixture = run.dataset.mixture();
    let result = match ckpt {
        Some(ckpt) => {
            let model = ScoreMlp::from_checkpoint(&gpu, ckpt)?;
            let weights = if config.sample.ema { Weights::Ema } else { Weights::Raw };
            let source = ScoreSource::Network { model: &model, weights, parametrisation: objective.parametrisation() };
            pollster::block_on(log_likelihood(&gpu, source, &points, &ode_config))?
        }
        None => {
            let Some(mixture) = &mixture else {
                bail!(
                    "--exact-score needs a dataset with an exact noised score (eight-gaussians or a mixture), not {}",
                    run.dataset.name()
                );
            };
            pollster::block_on(log_likelihood(&gpu, ScoreSource::Mixture(mixture), &points, &ode_config))?
        }
    };
    let nll: Vec<f32> = result.log_p.iter().map(|&l| -l as f32).collect();
    write_atomic(out, &npy_bytes(&nll, 1)?)?;
    let n = result.log_p.len() as f64;
    let mean = result.mean_nll();
    let se = (result.log_p.iter().map(|l| (-l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0) / n).sqrt();
    let how = match divergence {
        Divergence::Exact if mixture.is_some() && ckpt.is_none() => "exact divergence (closed form)".to_string(),
        Divergence::Exact => format!("exact divergence ({dim} tangent rows per point)"),
        Divergence::Hutchinson { probes, projection } => {
            format!("Hutchinson's divergence ({probes} {projection:?} probe(s) per point)")
        }
    };
    println!(
        "mean negative log-likelihood {mean:.4} nats (standard error {se:.4}) over {} points, {how}; {:?} from t = {}; \
         {} drift evaluations in {} steps ({} rejected)",
        result.log_p.len(),
        sde,
        request.eps,
        result.evaluations,
        result.steps,
        result.rejected
    );
    if let Some(bin) = dequantized {
        // P(pixel bin) = p(x) bin^d: bits per dimension of the 8-bit images (score_sde's offset
        // 7 for data in [-1, 1]).
        let bpd = mean / (dim as f64 * std::f64::consts::LN_2) - bin.log2();
        println!("bits per dimension {bpd:.4} (8-bit pixels, dequantized by uniform noise over each pixel's bin)");
    }
    if let Some(mixture) = &mixture {
        let x: Vec<f64> = points.iter().map(|&v| v as f64).collect();
        let exact = -mixture.noised_log_density(&x, 1.0, 0.0).iter().sum::<f64>() / n;
        println!(
            "the mixture's own negative log-density at the same points: {exact:.4} nats (the cross-entropy); \
             gap {:.4} nats",
            mean - exact
        );
    }
    println!("per-point negative log-likelihoods -> {}", out.display());
    Ok(())
}

/// The points to score [n, d] and, for images, the pixel bin they were dequantized over.
fn points(run: &Run, path: Option<&Path>, dim: usize) -> Result<(Vec<f32>, Option<f64>)> {
    let n = run.config.sample.particles;
    let seed = run.config.sample.seed ^ Stream::Data.at(6);
    let mut points = match path {
        Some(path) => {
            let (shape, values) = read_npy(path)?;
            if shape.len() != 2 || shape[1] as usize != dim {
                bail!("{} holds an array of shape {shape:?}; the model's points are [n, {dim}]", path.display());
            }
            values
        }
        None => match run.dataset.images() {
            Some(set) => set.pixels[..n.min(set.len()) * dim].to_vec(),
            None => run.dataset.sample(n, seed),
        },
    };
    if run.dataset.images().is_none() {
        return Ok((points, None));
    }
    // Uniform dequantization (score_sde): each 8-bit pixel spread over its bin, 2/255 wide in
    // [-1, 1], so that the continuous density integrates to the pixels' probabilities.
    let bin = 2.0 / 255.0;
    for (i, v) in points.iter_mut().enumerate() {
        *v += ((rng::uniform_at(seed, Stream::Data.at(7), i as u64) as f64 - 0.5) * bin) as f32;
    }
    Ok((points, Some(bin)))
}

fn divergence(request: &Request, dim: usize) -> Result<Divergence> {
    let projection = match request.projection.as_str() {
        "gaussian" => Projection::Gaussian,
        "rademacher" => Projection::Rademacher,
        other => bail!("--probe {other}: choose gaussian or rademacher"),
    };
    let hutchinson = Divergence::Hutchinson { probes: request.probes, projection };
    Ok(match request.divergence.as_str() {
        "exact" => Divergence::Exact,
        "hutchinson" => hutchinson,
        "auto" if dim <= EXACT_UP_TO => Divergence::Exact,
        "auto" => hutchinson,
        other => bail!("--divergence {other}: choose auto, exact or hutchinson"),
    })
}
