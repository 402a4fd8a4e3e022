//! `train` and `sample`: a run folder holds config.toml, log.jsonl, checkpoint.safetensors, the
//! samples (.npy) and the pictures.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use scorefield::checkpoint::Checkpoint;
use scorefield::gpu::Gpu;
use scorefield::likelihood::{sample_ode, OdeConfig};
use scorefield::model::{ScoreMlp, Weights};
use scorefield::objective::{NoiseLevel, Objective};
use scorefield::rng::Stream;
use scorefield::sample::{Sampler, SamplerConfig, ScoreSource};
use scorefield::train::{LossRecord, Trainer};

use crate::config::{Run, RunConfig};
use crate::files::{check_writable, npy_bytes, remove_stale_temporaries, write_atomic};
use crate::picture;

pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// The training points of a run and, for a class-conditional model, their labels (the data
/// seed is derived from the run seed, so changing the seed changes both).
fn training_data(run: &Run) -> Result<(Vec<f32>, Vec<u32>)> {
    let (dataset, config) = (&run.dataset, &run.config);
    let seed = config.train.seed ^ Stream::Data.at(0);
    if run.train.shape.classes > 0 {
        // Checked when the config was resolved: the dataset has labels.
        let labelled = dataset.labelled(config.data.points, seed);
        return labelled.ok_or_else(|| anyhow::anyhow!("dataset {} has no class labels", dataset.name()));
    }
    // An image set trains on all its images.
    let data = match dataset.images() {
        Some(set) => set.pixels.clone(),
        None => dataset.sample(config.data.points, seed),
    };
    Ok((data, Vec::new()))
}

/// Trains as the config says, in `dir`; with `resume`, continues from the checkpoint there.
pub fn train(run: &Run, dir: &Path, resume: bool) -> Result<()> {
    let config = &run.config;
    check_writable(&dir.join("config.toml"))?;
    remove_stale_temporaries(dir);
    let gpu = pollster::block_on(Gpu::with_adapter(config.adapter()))?;
    let (data, labels) = training_data(run)?;
    let train_config = run.train.clone();
    let ckpt_path = dir.join(CHECKPOINT);
    let mut trainer = if resume {
        let ckpt = load_checkpoint(&ckpt_path)?;
        pollster::block_on(Trainer::resume_labelled(&gpu, train_config, &data, &labels, &ckpt))?
    } else {
        write_atomic(&dir.join("config.toml"), config.to_toml()?.as_bytes())?;
        // A fresh run starts a fresh log.
        let _ = std::fs::remove_file(dir.join("log.jsonl"));
        pollster::block_on(Trainer::new_labelled(&gpu, train_config, &data, &labels))?
    };
    let total = config.train.steps;
    if trainer.step() >= total {
        println!("{} already holds {} of {total} steps", ckpt_path.display(), trainer.step());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed in one process (tests call train twice); the
        // first one keeps working.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let bar = ProgressBar::new(total).with_position(trainer.step());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  loss {msg}  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log.jsonl"))
        .with_context(|| format!("opening {}", dir.join("log.jsonl").display()))?;
    let log_every = config.train.log_every.max(1);
    let objective = &run.objective;
    let levels = objective.levels().len();
    let mut curve = Vec::new();
    let started = Instant::now();
    let first_step = trainer.step();
    let mut progress = ProgressLines::new(total, first_step);
    let rate = loop {
        while trainer.step() < total && !stop.load(Ordering::SeqCst) {
            let chunk = (total - trainer.step()).min(log_every);
            trainer.run(chunk, log_every)?;
            let records = healthy(trainer.take_losses(), &trainer, config, &ckpt_path)?;
            report_backoffs(&mut trainer, &bar);
            for record in records {
                let line =
                    log_line(&record, levels, (trainer.step() - first_step) as f64 / started.elapsed().as_secs_f64());
                writeln!(log, "{line}")?;
                bar.set_message(format!("{:.4}", record.mean()));
                progress.loss = record.mean();
                curve.push(record.step);
            }
            bar.set_position(trainer.step());
            progress.report(trainer.step());
            let every = config.train.checkpoint_every;
            if every > 0 && trainer.step() % every < chunk && trainer.step() < total {
                save_checkpoint(&trainer, config, &ckpt_path)?;
            }
        }
        let rate = (trainer.step() - first_step) as f64 / started.elapsed().as_secs_f64();
        let mut records = healthy(pollster::block_on(trainer.finish()), &trainer, config, &ckpt_path)?;
        report_backoffs(&mut trainer, &bar);
        let done = trainer.step() >= total || stop.load(Ordering::SeqCst);
        // The last step is always logged, so a short run has a record too.
        if done && records.last().map(|r| r.step).or(curve.last().copied()) != Some(trainer.step()) {
            records.push(pollster::block_on(trainer.last_losses())?);
        }
        for record in records {
            writeln!(log, "{}", log_line(&record, levels, rate))?;
            curve.push(record.step);
        }
        // A blow-up found by the last check rewound the run to its last healthy step: go on.
        if done {
            break rate;
        }
    };
    bar.finish_and_clear();
    save_checkpoint(&trainer, config, &ckpt_path)?;
    if stop.load(Ordering::SeqCst) {
        println!("stopped at step {} (checkpoint saved; continue with --resume)", trainer.step());
    }
    println!("trained {} steps ({rate:.1} steps/s) -> {}", trainer.step(), ckpt_path.display());
    // The whole run's log (a resumed run's too), one record per logged step.
    let log = LogCurve::read(&dir.join("log.jsonl"))?;
    let groups = loss_groups(objective);
    let per_group: Vec<Vec<f64>> = log.per_level.iter().map(|row| group_means(row, &groups)).collect();
    let labels: Vec<String> = groups.into_iter().map(|g| g.0).collect();
    picture::loss_curves(&dir.join("loss.png"), &log.steps, &log.mean, &per_group, &labels)?;
    Ok(())
}

/// The loss curve's groups of noise levels (at most ten): a label and the columns of the log's
/// `loss_per_level` it averages. Discrete schedules log one column per level (NCSN's sigmas,
/// DDPM's t), continuous ones one per tenth of t.
fn loss_groups(objective: &Objective) -> Vec<(String, std::ops::Range<usize>)> {
    let levels = objective.levels();
    let columns = if levels.is_empty() { 10 } else { levels.len() };
    let groups = columns.min(10);
    (0..groups)
        .map(|g| {
            let range = g * columns / groups..(g + 1) * columns / groups;
            let (first, last) = (range.start, range.end - 1);
            let label = if levels.is_empty() {
                format!("t in [{}, {})", short(first as f64 / 10.0), short(range.end as f64 / 10.0))
            } else if matches!(objective, Objective::Ddpm { .. }) {
                format!("t = {first}..{last}")
            } else if first == last {
                format!("σ = {}", short(levels[first].sigma))
            } else {
                format!("σ = {}..{}", short(levels[first].sigma), short(levels[last].sigma))
            };
            (label, range)
        })
        .collect()
}

/// The mean of each group's columns that the batch drew (NaN where it drew none).
fn group_means(row: &[f64], groups: &[(String, std::ops::Range<usize>)]) -> Vec<f64> {
    groups
        .iter()
        .map(|(_, range)| {
            let drawn: Vec<f64> =
                row.get(range.clone()).unwrap_or(&[]).iter().copied().filter(|v| v.is_finite()).collect();
            if drawn.is_empty() {
                f64::NAN
            } else {
                drawn.iter().sum::<f64>() / drawn.len() as f64
            }
        })
        .collect()
}

/// Progress where no bar can be drawn (stderr is not a terminal: CI, nohup, a pipe): a line on
/// stderr at most every [`ProgressLines::EVERY`] with the step, the last logged loss, steps/s
/// and the time left, so a log shows the run moving.
struct ProgressLines {
    enabled: bool,
    total: u64,
    first_step: u64,
    started: Instant,
    last: Instant,
    loss: f64,
}

impl ProgressLines {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(15);

    fn new(total: u64, first_step: u64) -> Self {
        use std::io::IsTerminal;
        let now = Instant::now();
        let enabled = !std::io::stderr().is_terminal();
        Self { enabled, total, first_step, started: now, last: now, loss: f64::NAN }
    }

    fn report(&mut self, step: u64) {
        if !self.enabled || self.last.elapsed() < Self::EVERY || step >= self.total {
            return;
        }
        self.last = Instant::now();
        let rate = (step - self.first_step) as f64 / self.started.elapsed().as_secs_f64();
        let left = (self.total - step) as f64 / rate.max(1e-9);
        // Before the first logged step there is no loss to show.
        let loss = if self.loss.is_nan() { "-".to_string() } else { format!("{:.4}", self.loss) };
        eprintln!(
            "step {step}/{} ({:.0}%)  loss {loss}  {rate:.1} steps/s  {} left",
            self.total,
            100.0 * step as f64 / self.total as f64,
            duration(left)
        );
    }
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One JSONL record: the step, the batch-mean loss, the mean per noise level (discrete schedules:
/// per level index; continuous ones: per tenth of t), and steps/s.
fn log_line(record: &LossRecord, levels: usize, steps_per_s: f64) -> String {
    let bins = if levels > 0 { levels } else { 10 };
    let mut sum = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for (&l, &level) in record.losses.iter().zip(&record.levels) {
        let b = if levels > 0 { level as usize } else { ((level * 10.0) as usize).min(9) };
        if b < bins {
            sum[b] += l as f64;
            count[b] += 1;
        }
    }
    let per_level: Vec<String> = sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| if c > 0 { format!("{:.6}", s / c as f64) } else { "null".into() })
        .collect();
    format!(
        "{{\"step\":{},\"loss\":{:.6},\"loss_per_level\":[{}],\"steps_per_s\":{:.3}}}",
        record.step,
        record.mean(),
        per_level.join(","),
        steps_per_s
    )
}

/// log.jsonl read back: per logged step (sorted), the batch mean and the per-level means (NaN
/// where the batch drew none of a level).
struct LogCurve {
    steps: Vec<u64>,
    mean: Vec<f64>,
    per_level: Vec<Vec<f64>>,
}

impl LogCurve {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut rows: Vec<(u64, f64, Vec<f64>)> = text.lines().filter_map(Self::parse).collect();
        rows.sort_by_key(|r| r.0);
        Ok(Self {
            steps: rows.iter().map(|r| r.0).collect(),
            mean: rows.iter().map(|r| r.1).collect(),
            per_level: rows.into_iter().map(|r| r.2).collect(),
        })
    }

    /// One line of [`log_line`]'s format.
    fn parse(line: &str) -> Option<(u64, f64, Vec<f64>)> {
        let value = |key: &str| -> Option<&str> {
            let rest = &line[line.find(&format!("\"{key}\":"))? + key.len() + 3..];
            rest.split(['}']).next()
        };
        let number = |key: &str| -> Option<f64> { value(key)?.split(',').next()?.parse().ok() };
        let levels = value("loss_per_level")?.strip_prefix('[')?.split(']').next()?;
        let per_level = levels.split(',').filter(|v| !v.is_empty()).map(|v| v.parse().unwrap_or(f64::NAN)).collect();
        Some((number("step")? as u64, number("loss")?, per_level))
    }
}

/// A training result, or, when training diverged and stopped, the checkpoint of the last
/// healthy state written and an error that says so.
fn healthy<T>(result: scorefield::Result<T>, trainer: &Trainer, config: &RunConfig, path: &Path) -> Result<T> {
    match result {
        Err(e @ scorefield::Error::Diverged { .. }) => {
            save_checkpoint(trainer, config, path)?;
            bail!("{e}. {} holds that state (step {}).", path.display(), trainer.step())
        }
        other => Ok(other?),
    }
}

/// Says when training recovered from a blow-up by lowering the learning rate.
fn report_backoffs(trainer: &mut Trainer, bar: &ProgressBar) {
    for b in trainer.take_backoffs() {
        // Printed beside the bar, or plainly when there is no terminal to draw it on.
        bar.suspend(|| {
            eprintln!(
                "the {} became non-finite at step {}: back to step {}, learning rate x {:.3e} from now on",
                b.quantity, b.step, b.restored_step, b.lr_factor
            )
        });
    }
}

fn save_checkpoint(trainer: &Trainer, config: &RunConfig, path: &Path) -> Result<()> {
    let meta = BTreeMap::from([("config".to_string(), config.to_toml()?)]);
    let ckpt = pollster::block_on(trainer.checkpoint(meta))?;
    write_atomic(path, &ckpt.to_bytes()?)
}

pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    Checkpoint::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

/// Where the score comes from for `sample`.
pub enum Source {
    /// A checkpoint, read once by the caller (which took the run config from it).
    Checkpoint(Box<Checkpoint>),
    Exact,
}

/// The samples of `source` by the run's sampler, and its snapshots: the planned samplers
/// through a `Sampler` (conditional where `classes` say so), rk45 through the adaptive ODE solve
/// (no snapshots).
fn draw(
    gpu: &Gpu,
    run: &Run,
    source: ScoreSource<'_>,
    sampler_config: SamplerConfig,
    classes: Option<&scorefield::sample::Classes>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let s = &run.config.sample;
    if run.config.sampler() == "rk45" {
        if classes.is_some() {
            bail!(
                "the rk45 sampler integrates the unconditional probability flow; sample classes with another sampler"
            );
        }
        let sde = RunConfig::sde(&run.objective);
        let ode = OdeConfig { eps: sde.sampling_eps(), seed: s.seed, ..OdeConfig::new(sde) };
        let (x, cost) = pollster::block_on(sample_ode(gpu, source, s.particles, &ode))?;
        println!("rk45: {} score evaluations in {} steps ({} rejected)", cost.evaluations, cost.steps, cost.rejected);
        return Ok((x, Vec::new()));
    }
    let mut sampler = match classes {
        Some(classes) => pollster::block_on(Sampler::conditional(gpu, source, &run.method, sampler_config, classes))?,
        None => pollster::block_on(Sampler::new(gpu, source, &run.method, sampler_config))?,
    };
    sampler.run();
    Ok((pollster::block_on(sampler.read())?, pollster::block_on(sampler.read_snapshots())?))
}

/// Samples as the config's [sample] says; writes `out` (.npy) and the pictures into `dir`.
pub fn sample(run: &Run, source: Source, dir: &Path, out: &Path) -> Result<()> {
    let config = &run.config;
    let gpu = pollster::block_on(Gpu::with_adapter(config.adapter()))?;
    let method = &run.method;
    let s = &config.sample;
    let mut sampler_config = SamplerConfig::new(s.particles, s.seed);
    // Snapshots are counted in the method's steps; about 60 frames make the animation.
    let steps = method.plan()?.iter().filter(|p| p.boundary).count();
    sampler_config.snapshot_every = if s.snapshot_every > 0 { s.snapshot_every.max(steps / 60) } else { 0 };
    let dataset = &run.dataset;
    let model_classes = match &source {
        Source::Checkpoint(ckpt) => ckpt.shape.classes,
        Source::Exact => 0,
    };
    let classes = config.sample_classes(model_classes, s.particles)?;
    let sampler_name = if config.sampler() == "rk45" { "rk45" } else { method.name() };
    let mut model_for_field = None;
    let (x, snapshots, dim) = match source {
        Source::Exact => {
            let Some(mixture) = dataset.mixture() else {
                bail!(
                    "--exact-score needs a dataset with an exact noised score (eight-gaussians or a mixture), not {}",
                    dataset.name()
                );
            };
            let (x, snapshots) = draw(&gpu, run, ScoreSource::Mixture(&mixture), sampler_config, None)?;
            (x, snapshots, mixture.dim)
        }
        Source::Checkpoint(ckpt) => {
            let model = ScoreMlp::from_checkpoint(&gpu, &ckpt)?;
            let weights = if s.ema { Weights::Ema } else { Weights::Raw };
            let parametrisation = run.objective.parametrisation();
            let source = ScoreSource::Network { model: &model, weights, parametrisation };
            let (x, snapshots) = draw(&gpu, run, source, sampler_config, classes.as_ref())?;
            model_for_field = Some((model, weights));
            (x, snapshots, ckpt.shape.dim)
        }
    };
    if dim == 2 {
        score_field_picture(&gpu, run, &dir.join("score_field.png"), model_for_field.as_ref())?;
    }
    let bad = x.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        eprintln!(
            "warning: {bad} of {} sample values are not finite (the sampler diverged; try a smaller step)",
            x.len()
        );
    }
    let mut x = x;
    if dataset.images().is_some() {
        clamp_to_pixels(&mut x);
    }
    write_atomic(out, &npy_bytes(&x, dim)?)?;
    let data = dataset.sample(s.particles, config.train.seed ^ Stream::Data.at(1));
    if let Some(set) = dataset.images() {
        // Images: a grid of data images beside a grid of samples (no scatter, no animation);
        // samples of every class: the first ten of each class, a row per class.
        let (shown, title) = match &classes {
            Some(c) if config.sample.class == "all" => (
                first_of_each_class(&x, &c.labels, set.dim(), 10),
                format!("samples, a row per class (guidance {})", config.sample.guidance),
            ),
            Some(c) => (x.clone(), format!("samples of class {} (guidance {})", config.sample.class, c.guidance)),
            None => (x.clone(), "samples".to_string()),
        };
        picture::image_grids(&dir.join("samples.png"), &data, &shown, (set.width, set.height), &title)?;
        if config.data.dataset == "digits" {
            let judge = scorefield::quality::QualityJudge::digits()?;
            print_quality(&judge, &x)?;
            if let Some(c) = &classes {
                print_class_recognition(&judge, &x, &c.labels)?;
            }
        }
    } else {
        picture::samples_beside_data(&dir.join("samples.png"), &data, &x, dim, sampler_name)?;
        if snapshots.len() > 1 {
            // Snapshot k holds the particles after step k * every (0: the initial draw); the
            // last, after the last step.
            let last = steps.saturating_sub(1);
            let every = sampler_config.snapshot_every;
            let titles: Vec<String> = (0..snapshots.len())
                .map(|k| {
                    let step = if k + 1 == snapshots.len() { last } else { (k * every).min(last) };
                    format!("{}: step {step} of {last}", method.name())
                })
                .collect();
            picture::animation(&dir.join("sampling.gif"), &snapshots, dim, picture::extent(&data) * 1.5, &titles)?;
        }
    }
    println!("{} samples ({}) -> {}", s.particles, sampler_name, out.display());
    Ok(())
}

/// The score field at three noise levels as arrows over the data: the learned one (top row,
/// with a model) and the exact one (bottom row, for mixtures). For VE-type objectives, whose
/// levels are sigmas; the network is conditioned on log sigma.
fn score_field_picture(gpu: &Gpu, run: &Run, path: &Path, model: Option<&(ScoreMlp, Weights)>) -> Result<()> {
    let (config, objective) = (&run.config, &run.objective);
    if !matches!(objective.sde(), Some(scorefield::schedule::Sde::Ve { .. }) | None)
        || objective.parametrisation() != scorefield::objective::Parametrisation::Score
    {
        return Ok(());
    }
    let FieldGrid { data, extent, points } = FieldGrid::new(&run.dataset, config.train.seed);
    let dataset = &run.dataset;
    let n = FIELD_GRID;
    let sigma_max = match *objective {
        Objective::Ncsn { sigma_max, .. } | Objective::VeSde { sigma_max, .. } => sigma_max,
        Objective::Dsm { sigma } => sigma,
        _ => 1.0,
    };
    // (the level the network is conditioned on and scaled by, the noise of the exact field):
    // score matching learns one level, possibly of un-noised data; the others, any sigma.
    let levels: Vec<(f64, f64)> = match (&objective, &config.sample.field_sigmas) {
        (Objective::Exact { sigma } | Objective::Sliced { sigma, .. }, s) if s.is_empty() => {
            vec![(objective.model_level().map_or(1.0, |l| l.sigma), *sigma)]
        }
        (_, s) if s.is_empty() => [sigma_max.min(4.0), 1.0, 0.1].iter().map(|&s| (s, s)).collect(),
        (_, s) => s.iter().map(|&s| (s, s)).collect(),
    };
    let mut fields = Vec::new();
    let mut titles = Vec::new();
    if let Some((model, weights)) = model {
        for &(scale, noise) in &levels {
            fields.push(learned_field(gpu, model, *weights, &points, scale.ln())?);
            titles.push(format!("learned score, σ = {}", short(noise)));
        }
    }
    if let Some(mixture) = dataset.mixture() {
        let p64: Vec<f64> = points.iter().map(|&v| v as f64).collect();
        for &(scale, noise) in &levels {
            fields.push(mixture.noised_score(&p64, 1.0, noise).iter().map(|v| (v * scale) as f32).collect());
            titles.push(format!("true score, σ = {}", short(noise)));
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    picture::score_fields(path, &data, &fields, &titles, n, extent, levels.len())
}

/// A noise level for a title: at most three decimals, no trailing zeros.
fn short(v: f64) -> String {
    format!("{}", (v * 1000.0).round() / 1000.0)
}

/// Arrows per side of a score-field picture.
const FIELD_GRID: usize = 24;

/// Where a score field is drawn: 4096 points of the dataset (drawn with the run's `seed`), and
/// the grid.
struct FieldGrid {
    data: Vec<f32>,
    extent: f32,
    points: Vec<f32>,
}

impl FieldGrid {
    fn new(dataset: &scorefield::data::Dataset, seed: u64) -> Self {
        let data = dataset.sample(4096, seed ^ Stream::Data.at(1));
        let extent = picture::extent(&data) * 1.25;
        Self { data, extent, points: picture::grid(FIELD_GRID, extent) }
    }
}

/// The network at `points` conditioned on `cond`: for score-parametrised VE-type models,
/// sigma * score at that level, exactly the scaled field drawn.
fn learned_field(gpu: &Gpu, model: &ScoreMlp, weights: Weights, points: &[f32], cond: f64) -> Result<Vec<f32>> {
    let rows = points.len() / 2;
    let eval = pollster::block_on(scorefield::model::Evaluator::new(gpu, model, weights, rows))?;
    Ok(pollster::block_on(eval.run(gpu, points, &vec![cond as f32; rows]))?)
}

/// `fields`: the learned score fields of several checkpoints side by side, each at its own level
/// (single-level models: dsm, exact, sliced) or at `sigma`, and last the exact field when the
/// first checkpoint's dataset is a mixture, all over the first one's data. For comparing
/// objectives trained on the same data.
pub fn fields(checkpoints: &[PathBuf], sigma: Option<f64>, out: &Path) -> Result<()> {
    let mut runs = Vec::new();
    for path in checkpoints {
        let ckpt = load_checkpoint(path)?;
        let Some(text) = ckpt.metadata.get("config") else {
            bail!("{} holds no run config; `fields` reads each model's objective from it", path.display());
        };
        let config = RunConfig::from_toml(text).with_context(|| format!("the config in {}", path.display()))?;
        runs.push((path, ckpt, config));
    }
    let Some((_, _, first)) = runs.first() else { bail!("give at least one --checkpoint") };
    let gpu = pollster::block_on(Gpu::with_adapter(first.adapter()))?;
    let dataset = first.dataset()?;
    if dataset.dim() != 2 {
        bail!("score fields are drawn for 2-D data; {} is {}-dimensional", dataset.name(), dataset.dim());
    }
    let grid = FieldGrid::new(&dataset, first.train.seed);
    let mut fields = Vec::new();
    let mut titles = Vec::new();
    let mut exact_level = None;
    for (path, ckpt, config) in &runs {
        let objective = config.objective()?;
        if objective.parametrisation() != scorefield::objective::Parametrisation::Score
            || matches!(objective.sde(), Some(scorefield::schedule::Sde::Vp { .. }))
        {
            bail!(
                "{}: a {} model is conditioned on time, not on a noise level; `fields` draws dsm, ncsn, ve, exact \
                 and sliced models",
                path.display(),
                config.objective.kind
            );
        }
        // (the level the network is conditioned on and scaled by, the noise of the exact field)
        let (level, noise) = match (sigma, objective.model_level(), &objective) {
            (Some(s), _, _) => (NoiseLevel::ve(s), s),
            (None, Some(l), Objective::Exact { sigma } | Objective::Sliced { sigma, .. }) => (l, *sigma),
            (None, Some(l), _) => (l, l.sigma),
            (None, None, _) => bail!("{}: a model of many noise levels; say which with --sigma", path.display()),
        };
        let model = ScoreMlp::from_checkpoint(&gpu, ckpt)?;
        fields.push(learned_field(&gpu, &model, Weights::Ema, &grid.points, level.cond)?);
        titles.push(format!("{}, σ = {}", config.objective.kind, short(noise)));
        println!("{}: {} at sigma {}", path.display(), config.objective.kind, level.sigma);
        exact_level.get_or_insert((level.sigma, noise));
    }
    if let (Some(mixture), Some((scale, noise))) = (dataset.mixture(), exact_level) {
        let p64: Vec<f64> = grid.points.iter().map(|&v| v as f64).collect();
        fields.push(mixture.noised_score(&p64, 1.0, noise).iter().map(|v| (v * scale) as f32).collect());
        titles.push(format!("true score, σ = {}", short(noise)));
        println!("exact score of {} at noise {noise}, last", dataset.name());
    }
    picture::score_fields(out, &grid.data, &fields, &titles, FIELD_GRID, grid.extent, fields.len())?;
    println!("-> {}", out.display());
    Ok(())
}

/// Samples of an image set are images: each value is clamped to the pixel range [-1, 1], as
/// DDPM's and score_sde's image outputs are when they become pixels. Says how many were outside.
pub fn clamp_to_pixels(x: &mut [f32]) {
    let outside = x.iter().filter(|v| v.abs() > 1.0).count();
    x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
    println!(
        "{outside} of {} pixel values ({:.1}%) were outside [-1, 1] and are clamped to it",
        x.len(),
        100.0 * outside as f64 / x.len().max(1) as f64
    );
}

/// `eval`: the quality of digit samples in a .npy file, beside the real and Gaussian baselines.
pub fn eval(path: &Path) -> Result<()> {
    let (shape, values) = crate::files::read_npy(path)?;
    let judge = scorefield::quality::QualityJudge::digits()?;
    if shape.len() != 2 || shape[1] as usize != judge.dim() {
        bail!("{} holds an array of shape {shape:?}; eval judges 8x8 digits, [n, {}]", path.display(), judge.dim());
    }
    print_quality(&judge, &values)
}

/// The first `per` samples of each class in `labels`, class by class (a row each in a grid of
/// `per` columns).
fn first_of_each_class(x: &[f32], labels: &[u32], dim: usize, per: usize) -> Vec<f32> {
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    classes
        .iter()
        .flat_map(|&k| {
            let rows = labels.iter().enumerate().filter(move |(_, &l)| l == k).take(per);
            rows.flat_map(|(n, _)| x[n * dim..(n + 1) * dim].iter().copied()).collect::<Vec<f32>>()
        })
        .collect()
}

/// For samples of given classes: per class, the share the classifier reads as that class.
fn print_class_recognition(judge: &scorefield::quality::QualityJudge, x: &[f32], labels: &[u32]) -> Result<()> {
    let mut per_class: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
    for (image, &label) in x.chunks(judge.dim()).zip(labels) {
        if label == scorefield::sample::NO_CLASS {
            continue;
        }
        let entry = per_class.entry(label).or_default();
        entry.0 += usize::from(judge.classify(image).0 == label as usize);
        entry.1 += 1;
    }
    if per_class.is_empty() {
        return Ok(());
    }
    let shares: Vec<String> =
        per_class.iter().map(|(k, (hit, n))| format!("{k}: {:.3}", *hit as f64 / *n as f64)).collect();
    let (hits, total) = per_class.values().fold((0, 0), |(h, t), (hit, n)| (h + hit, t + n));
    println!(
        "samples read as their class: {:.3} overall (chance {:.3}); per class {}",
        hits as f64 / total as f64,
        1.0 / judge.classes() as f64,
        shares.join(", ")
    );
    Ok(())
}

/// A table of the quality of `samples` beside real held-out digits and a Gaussian fit.
fn print_quality(judge: &scorefield::quality::QualityJudge, samples: &[f32]) -> Result<()> {
    let n = judge.held_out().len() / judge.dim();
    let rows = [
        ("samples", judge.judge(samples)?),
        ("real held-out digits", judge.judge(judge.held_out())?),
        ("Gaussian fit to the data", judge.judge(&judge.gaussian_fit(n, 0))?),
    ];
    println!(
        "| images | n | mean top-class probability | share > 0.8 | class shares | feature distance | median nearest-train distance | copies | pixels out of range |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, q) in &rows {
        let (lo, hi) = q.class_shares.iter().fold((1.0f64, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        println!(
            "| {name} | {} | {:.3} | {:.3} | {lo:.3}-{hi:.3} | {:.3} | {:.2} | {:.3} | {:.4} |",
            q.count,
            q.mean_top_probability,
            q.confident_share,
            q.feature_distance,
            q.median_nearest_train,
            q.copies,
            q.out_of_range
        );
    }
    Ok(())
}
