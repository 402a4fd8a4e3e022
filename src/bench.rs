//! The standard workloads of ../shared/WORKLOADS.md (W1-W4) and every kernel on its own, timed
//! by a [`Clock`]: GPU timestamps where the device has them, else the host clock around the
//! submits and a device wait (the run's own work only: pipelines, buffers and data are built and
//! warmed up first).

use crate::error::Result;
use crate::gpu::{Clock, Gpu};
use crate::mixture::GaussianMixture;
use crate::model::{DenseChoice, MlpShape, ScoreMlp, Weights};
use crate::objective::{geometric_sigmas, Objective, Parametrisation};
use crate::rng::{self, Stream};
use crate::sample::{Method, Path, Sampler, SamplerConfig, ScoreSource};
use crate::train::{TrainConfig, Trainer};

/// One workload's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Workload::W1, Workload::W2, Workload::W3, Workload::W4];

    pub fn name(&self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
        }
    }

    pub fn shape(&self) -> MlpShape {
        match self {
            Workload::W1 | Workload::W3 => MlpShape::new(2, 3, 128),
            Workload::W2 | Workload::W4 => MlpShape::new(64, 3, 512),
        }
    }

    /// Training batch or particle count.
    pub fn size(&self) -> usize {
        match self {
            Workload::W1 => 4096,
            Workload::W2 => 1024,
            Workload::W3 => 16384,
            Workload::W4 => 4096,
        }
    }

    pub fn is_training(&self) -> bool {
        matches!(self, Workload::W1 | Workload::W2)
    }
}

/// The timing of one workload.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub workload: Workload,
    /// Training steps or sampler steps per timed run.
    pub steps: usize,
    /// Seconds per timed run: median, min, max.
    pub seconds: [f64; 3],
    /// The workload's figure at the median: training steps/s or particle-steps/s.
    pub figure: f64,
    pub figure_unit: &'static str,
    pub gflops: f64,
    /// How the steps were dispatched (sampling) or recorded (training).
    pub path: String,
    /// How the seconds were measured ([`Clock::describe`]).
    pub timing: &'static str,
}

/// NCSN over 10 levels 1 -> 0.01 (WORKLOADS.md, "The objective").
fn objective() -> Objective {
    Objective::Ncsn { sigma_max: 1.0, sigma_min: 0.01, levels: 10 }
}

fn data(workload: Workload) -> Vec<f32> {
    match workload {
        Workload::W1 | Workload::W3 => {
            GaussianMixture::eight_gaussians().sample(65536, 1).0.iter().map(|&v| v as f32).collect()
        }
        Workload::W2 | Workload::W4 => {
            rng::normals(1, Stream::Data.at(0), 0, 16384 * 64).iter().map(|&v| (0.5 * v) as f32).collect()
        }
    }
}

fn median_min_max(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// Times `workload` `repeats` times. Training runs `steps` steps per timing (WORKLOADS.md asks
/// for at least 200); sampling runs the whole W3/W4 schedule scaled to `steps` sampler steps
/// (1000 is the workload as defined).
pub async fn run(
    gpu: &Gpu,
    clock: &Clock,
    workload: Workload,
    steps: usize,
    repeats: usize,
    path: Path,
) -> Result<BenchResult> {
    let shape = workload.shape();
    let n = workload.size();
    let repeats = repeats.max(1);
    if workload.is_training() {
        let (seconds, path) = time_training(gpu, clock, shape, objective(), n, &data(workload), steps, repeats).await?;
        let flop = 3.0 * shape.forward_flop() * n as f64 * steps as f64;
        return Ok(BenchResult {
            workload,
            steps,
            seconds,
            figure: steps as f64 / seconds[0],
            figure_unit: "steps/s",
            gflops: flop / seconds[0] / 1e9,
            path,
            timing: clock.describe(),
        });
    }
    let mut times = Vec::with_capacity(repeats);
    let model = ScoreMlp::new(gpu, shape, 1)?;
    // W3/W4: L = 10 levels, T steps each, alpha_i = 2e-5 sigma_i^2 / sigma_L^2.
    let method = Method::AnnealedLangevin {
        sigmas: geometric_sigmas(1.0, 0.01, 10),
        steps_per_level: (steps / 10).max(1),
        eps: 2e-5,
        denoise: false,
    };
    let source = ScoreSource::Network { model: &model, weights: Weights::Ema, parametrisation: Parametrisation::Score };
    let config = SamplerConfig { path, ..SamplerConfig::new(n, 1) };
    let mut sampler = Sampler::new(gpu, source, &method, config).await?;
    let sampler_steps = sampler.plan().len() - 1;
    sampler.run();
    sampler.read().await?;
    for _ in 0..repeats {
        sampler.reset();
        let run = || {
            sampler.run();
            Ok(())
        };
        times.push(clock.time(gpu, run).await?);
    }
    let seconds = median_min_max(times);
    let particle_steps = (n * sampler_steps) as f64;
    Ok(BenchResult {
        workload,
        steps: sampler_steps,
        seconds,
        figure: particle_steps / seconds[0],
        figure_unit: "particle-steps/s",
        gflops: shape.forward_flop() * particle_steps / seconds[0] / 1e9,
        path: if sampler.is_fused() {
            let wide = if sampler.fused_wide() { ", wide (storage weights and activations)" } else { "" };
            format!("fused, {} weight loads{wide}", gpu.tuning().dense.name())
        } else {
            dense_path(gpu, "staged", sampler.dense())
        },
        timing: clock.describe(),
    })
}

/// `path` (what ran on the dense layers, "staged" or more), with how the dense layers read their
/// operands (`Tuning::operands`) and the kernel they ran on.
fn dense_path(gpu: &Gpu, path: &str, dense: Option<DenseChoice>) -> String {
    let kernel = dense.map_or(String::new(), |d| format!(", {}", d.describe()));
    format!("{path}, {} operands{kernel}", gpu.tuning().operands())
}

/// Seconds for `steps` training steps of `objective` (median, min, max of `repeats` timings),
/// after two warm-up steps, and the dense kernel they ran on.
#[allow(clippy::too_many_arguments)]
async fn time_training(
    gpu: &Gpu,
    clock: &Clock,
    shape: MlpShape,
    objective: Objective,
    batch: usize,
    data: &[f32],
    steps: usize,
    repeats: usize,
) -> Result<([f64; 3], String)> {
    let config = TrainConfig { batch, seed: 1, steps_per_submit: 20, ..TrainConfig::new(shape, objective) };
    let mut trainer = Trainer::new(gpu, config, data).await?;
    trainer.run(2, 0)?;
    trainer.finish().await?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        times.push(clock.time(gpu, || trainer.run(steps as u64, 0)).await?);
        trainer.finish().await?;
    }
    // The forward pass and input gradients on the fused network kernel (`Tuning::fused_training`) or, as the
    // backward always is, on the dense kernels.
    let path = if trainer.fused_rows() { "fused rows, staged weight gradients" } else { "staged" };
    Ok((median_min_max(times), dense_path(gpu, path, Some(trainer.dense()))))
}

/// The objectives whose training-step cost [`objective_costs`] compares: denoising score
/// matching, exact score matching (d tangent passes) and sliced score matching with one
/// projection (SSM-VR costs the same: it only changes the loss kernel's arithmetic).
pub fn cost_objectives() -> [(&'static str, Objective); 3] {
    let sliced = Objective::Sliced {
        sigma: 0.0,
        projections: 1,
        projection: crate::objective::Projection::Gaussian,
        variance_reduced: false,
    };
    [("dsm", Objective::Dsm { sigma: 0.1 }), ("exact", Objective::Exact { sigma: 0.0 }), ("sliced, M=1", sliced)]
}

/// Seconds per training step (median, min, max) of each of [`cost_objectives`] for `shape` at
/// `batch`, over `steps` steps per timing, on standard-normal data.
pub async fn objective_costs(
    gpu: &Gpu,
    clock: &Clock,
    shape: MlpShape,
    batch: usize,
    steps: usize,
    repeats: usize,
) -> Result<Vec<(&'static str, [f64; 3])>> {
    let data: Vec<f32> = rng::normals(1, Stream::Data.at(0), 0, 4096 * shape.dim).iter().map(|&v| v as f32).collect();
    let mut costs = Vec::new();
    for (name, objective) in cost_objectives() {
        let (t, _) = time_training(gpu, clock, shape, objective, batch, &data, steps, repeats).await?;
        costs.push((name, t.map(|s| s / steps.max(1) as f64)));
    }
    Ok(costs)
}

/// One kernel's micro-benchmark: seconds per call (median, min, max over the timings) and its
/// work rate, in GFLOP/s for the matrix kernels and sampler steps, GB/s for memory-bound ones.
#[derive(Clone, Debug)]
pub struct KernelResult {
    pub kernel: String,
    pub size: String,
    pub seconds: [f64; 3],
    pub gflops: Option<f64>,
    pub gbytes: Option<f64>,
}

impl KernelResult {
    /// One markdown row of [`KERNEL_TABLE_HEADER`]; compute-bound rates also as a fraction of
    /// the FMA `ceiling` (no memory ceiling is measured).
    pub fn table_row(&self, ceiling: f64) -> String {
        let rate = match (self.gflops, self.gbytes) {
            (Some(g), _) => format!("{g:.2} GFLOP/s | {:.1}%", 100.0 * g / ceiling),
            (None, Some(b)) => format!("{b:.2} GB/s | -"),
            (None, None) => "- | -".into(),
        };
        let [median, min, max] = self.seconds.map(|s| s * 1e3);
        format!("| {} | {} | {median:.3} | {min:.3} | {max:.3} | {rate} |", self.kernel, self.size)
    }
}

/// The header of the kernel table.
pub const KERNEL_TABLE_HEADER: &str = "| kernel | size | ms median | min | max | rate | of FMA ceiling |\n\
                                       |---|---|---|---|---|---|---|";

/// Micro-benchmarks of every kernel at the W1/W3 shapes (WORKLOADS.md): the five phases of a
/// training step (batch 4096, NCSN), the normal generator (2^22 numbers), and one step of each
/// sampler over 16384 particles with the network's score, each timed `repeats` times.
pub async fn kernels(gpu: &Gpu, clock: &Clock, reps: usize, repeats: usize) -> Result<Vec<KernelResult>> {
    use crate::train::StepKernel;
    let repeats = repeats.max(1);
    let shape = Workload::W1.shape();
    let batch = Workload::W1.size();
    let config = TrainConfig { batch, seed: 1, steps_per_submit: 1, ..TrainConfig::new(shape, objective()) };
    let mut trainer = Trainer::new(gpu, config, &data(Workload::W1)).await?;
    let layers = shape.layers();
    let p = shape.param_count() as f64;
    let b = batch as f64;
    let (d, width) = (shape.dim as f64, shape.input_width() as f64);
    let forward = shape.forward_flop() * b;
    // Weight gradients: one multiply-add per weight and row; input gradients for all but layer 0.
    let backward = forward + layers[1..].iter().map(|l| 2.0 * (l.fan_in * l.fan_out) as f64 * b).sum::<f64>();
    let mut results = Vec::new();
    for kernel in StepKernel::ALL {
        let mut times = Vec::new();
        for _ in 0..repeats {
            times.push(trainer.time_kernel(clock, kernel, reps).await?);
        }
        let seconds = median_min_max(times);
        let (name, gflop, gbyte) = match kernel {
            StepKernel::Perturb => {
                ("train: perturb (batch, noise, embedding)", None, Some(b * (width + 2.0 * d + 1.0) * 4.0))
            }
            StepKernel::Forward => ("train: forward (3 dense layers)", Some(forward), None),
            StepKernel::Loss => ("train: loss and its gradient", None, Some(b * (3.0 * d + 1.0) * 4.0)),
            StepKernel::Backward => ("train: backward (input and weight gradients)", Some(backward), None),
            StepKernel::Adam => ("train: Adam + EMA", None, Some(p * 9.0 * 4.0)),
        };
        results.push(KernelResult {
            kernel: name.into(),
            size: format!("W1 net, batch {batch}"),
            seconds,
            gflops: gflop.map(|f| f / seconds[0] / 1e9),
            gbytes: gbyte.map(|f| f / seconds[0] / 1e9),
        });
    }

    let noise = crate::noise::NoiseKernels::new(gpu).await?;
    let n = 1 << 22;
    let out = crate::gpu::GpuBuffer::<f32>::new(gpu, "scorefield.bench.normals", n, wgpu::BufferUsages::empty())?;
    noise.fill_normal(gpu, &out, 1, 1, 0)?;
    gpu.wait(None)?;
    let mut times = Vec::new();
    for _ in 0..repeats {
        let fills = || (0..reps).try_for_each(|r| noise.fill_normal(gpu, &out, 1, 1, (r * n) as u64));
        times.push(clock.time(gpu, fills).await? / reps.max(1) as f64);
    }
    let seconds = median_min_max(times);
    results.push(KernelResult {
        kernel: "noise: Philox normals".into(),
        size: format!("{n} numbers"),
        seconds,
        gflops: None,
        gbytes: Some(n as f64 * 4.0 / seconds[0] / 1e9),
    });

    let model = ScoreMlp::new(gpu, shape, 1)?;
    let particles = Workload::W3.size();
    let ve = crate::schedule::Sde::ve(0.01, 1.0);
    let methods = [
        Method::Langevin { level: crate::objective::NoiseLevel::ve(0.1), step_size: 1e-4, steps: reps, init_std: 1.0 },
        Method::AnnealedLangevin {
            sigmas: geometric_sigmas(1.0, 0.01, 10),
            steps_per_level: reps.div_ceil(10),
            eps: 2e-5,
            denoise: false,
        },
        Method::ReverseSde { sde: ve, steps: reps.max(2) },
        Method::PredictorCorrector { sde: ve, steps: reps.max(2), snr: 0.16, corrector_steps: 1 },
        Method::ProbabilityFlow { sde: ve, steps: reps.max(2), heun: false },
        Method::ProbabilityFlow { sde: ve, steps: reps.max(2), heun: true },
        Method::Ddpm { beta_min: 1e-4, beta_max: 0.02, steps: reps.max(2), clip: false },
    ];
    for method in &methods {
        let source =
            ScoreSource::Network { model: &model, weights: Weights::Ema, parametrisation: Parametrisation::Score };
        let mut sampler = Sampler::new(gpu, source, method, SamplerConfig::new(particles, 1)).await?;
        let steps = sampler.plan().len() - 1;
        sampler.run();
        sampler.read().await?;
        let mut times = Vec::new();
        for _ in 0..repeats {
            sampler.reset();
            let run = || {
                sampler.run();
                Ok(())
            };
            times.push(clock.time(gpu, run).await? / steps.max(1) as f64);
        }
        let seconds = median_min_max(times);
        let path = if sampler.is_fused() { "fused" } else { "staged" };
        results.push(KernelResult {
            kernel: format!("sample: {} step ({path})", method.name()),
            size: format!("W1 net, {particles} particles, {steps} steps"),
            seconds,
            gflops: Some(shape.forward_flop() * particles as f64 / seconds[0] / 1e9),
            gbytes: None,
        });
    }
    Ok(results)
}

/// The header of the markdown table [`BenchResult::table_row`] fills.
pub const TABLE_HEADER: &str =
    "| workload | path | steps | median s | min s | max s | figure | GFLOP/s | of ceiling |\n\
                                |---|---|---|---|---|---|---|---|---|";

impl BenchResult {
    /// One markdown table row, with the fraction of the FMA `ceiling` (GFLOP/s).
    pub fn table_row(&self, ceiling: f64) -> String {
        let Self { path, steps, seconds: [median, min, max], figure, figure_unit, gflops, .. } = self;
        let (name, share) = (self.workload.name(), 100.0 * gflops / ceiling);
        format!(
            "| {name} | {path} | {steps} | {median:.3} | {min:.3} | {max:.3} | {figure:.4e} {figure_unit} | {gflops:.2} | {share:.1}% |"
        )
    }

    /// One JSON object (a line of JSONL).
    pub fn json(&self, adapter: &str, ceiling: f64) -> String {
        let Self { path, steps, seconds: [median, min, max], figure, figure_unit, gflops, timing, .. } = self;
        let (name, adapter, fraction) = (self.workload.name(), adapter.replace(['"', '\\'], "'"), gflops / ceiling);
        format!(
            "{{\"workload\":\"{name}\",\"adapter\":\"{adapter}\",\"path\":\"{path}\",\"steps\":{steps},\"median_s\":{median},\
             \"min_s\":{min},\"max_s\":{max},\"figure\":{figure},\"unit\":\"{figure_unit}\",\"gflops\":{gflops},\
             \"ceiling_gflops\":{ceiling},\"fraction\":{fraction},\"timing\":\"{timing}\"}}"
        )
    }
}
