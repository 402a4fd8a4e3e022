//! The scorefield command-line tool. With no arguments it runs the main job: train the W1
//! network on the eight Gaussians, sample it, and write the pictures into runs/main.

mod config;
mod files;
mod inpaint;
mod likelihood;
mod picture;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use scorefield::gpu::{list_adapters, Clock, DenseKernel, Gpu, Tuning};

use config::{Run, RunConfig};

#[derive(Parser)]
#[command(name = "scorefield", version, about = "Train and sample score-based generative models on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// On an error, print where it happened (a backtrace) after its causes; the same as
    /// SCOREFIELD_BACKTRACE=1. RUST_BACKTRACE alone does not, so a shell that keeps it set still
    /// gets one-line errors.
    #[arg(short, long, global = true)]
    verbose: bool,
}

/// Settings that override the config file (or the defaults).
#[derive(Args, Clone, Debug, Default)]
struct Overrides {
    /// A TOML config (see README.md); the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset: eight-gaussians, two-moons, swiss-roll, checkerboard, rings, spirals, digits,
    /// mixture (weights, means and stds in the config), density (a PNG, --data-path) or images
    /// (a folder of PNGs, --data-path).
    #[arg(long)]
    dataset: Option<String>,
    /// The PNG of a `density` dataset, or the folder of an `images` one.
    #[arg(long)]
    data_path: Option<PathBuf>,
    /// Use the adapter whose name contains this (see `scorefield info`).
    #[arg(long)]
    adapter: Option<String>,
    /// Objective: dsm, ncsn, ddpm, ve, vp, exact, sliced or sliced-vr. Each samples with its own
    /// sampler and schedule unless --sampler says otherwise.
    #[arg(long)]
    objective: Option<String>,
    /// The noise level of dsm; of exact and sliced score matching, 0 for the data score itself.
    #[arg(long)]
    sigma: Option<f64>,
    /// Projections per example of sliced score matching.
    #[arg(long)]
    projections: Option<usize>,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    hidden_layers: Option<usize>,
    /// The residual network: the noise embedding fed to every layer, skip connections around
    /// the hidden layers (for images; see README's digits recipe).
    #[arg(long)]
    residual: bool,
    /// A class-conditional network: each training point's class (the digits' digit, a mixture's
    /// component) is an input too, dropped with probability --class-drop so that one network
    /// learns the conditional and unconditional scores (classifier-free guidance).
    #[arg(long)]
    conditional: bool,
    /// The probability that a training point's class is dropped (Ho & Salimans 2022: 0.1-0.2).
    #[arg(long)]
    class_drop: Option<f64>,
    /// Training steps.
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// The training seed (batches, noise, initial weights, data).
    #[arg(long)]
    seed: Option<u64>,
    /// Weight each example's loss by min(SNR, gamma) / SNR of its noise level (Min-SNR-gamma,
    /// Hang et al. 2023, who use 5); 0: uniform.
    #[arg(long)]
    min_snr: Option<f64>,
    /// Sampler: annealed, langevin, euler-maruyama, pc, ode-euler, ode-heun, rk45 (the
    /// probability-flow ODE with adaptive Dormand-Prince steps, score_sde's default ODE
    /// sampler), ddpm, edm (Karras et al. 2022; VE models) or dpm-solver++ (DPM-Solver++(2M));
    /// default auto, the
    /// objective's own (annealed for ncsn, pc for ve, euler-maruyama for vp, ddpm for ddpm,
    /// langevin for the one-level dsm, exact and sliced).
    #[arg(long)]
    sampler: Option<String>,
    /// Particles to sample.
    #[arg(short = 'n', long)]
    particles: Option<usize>,
    /// Sampler steps (per level for annealed Langevin; default 100 for annealed and Langevin,
    /// 1000 for the SDE and ODE samplers).
    #[arg(long)]
    sampler_steps: Option<usize>,
    /// Annealed Langevin's eps, or Langevin's step size.
    #[arg(long)]
    step_size: Option<f64>,
    /// The ddpm sampler: go through the denoised estimate clipped to [-1, 1] (image data).
    #[arg(long)]
    clip: bool,
    /// The sampling seed.
    #[arg(long)]
    sample_seed: Option<u64>,
    /// A conditional model's class to sample: K, all (the samples in one block per class) or
    /// none (unconditional).
    #[arg(long)]
    class: Option<String>,
    /// Classifier-free guidance weight w: samples follow (1 + w) s(x | class) - w s(x); larger w
    /// gives samples more typical of their class, less varied.
    #[arg(long)]
    guidance: Option<f64>,
}

impl Overrides {
    fn apply(&self, mut c: RunConfig) -> RunConfig {
        if let Some(v) = &self.dataset {
            c.data.dataset = v.clone();
        }
        if let Some(v) = &self.data_path {
            c.data.path = v.display().to_string();
        }
        if let Some(v) = &self.adapter {
            c.device.adapter = v.clone();
        }
        if let Some(v) = &self.objective {
            c.objective.kind = v.clone();
        }
        if let Some(v) = self.sigma {
            c.objective.sigma = v;
        }
        if let Some(v) = self.projections {
            c.objective.projections = v;
        }
        if let Some(v) = self.width {
            c.model.width = v;
        }
        if let Some(v) = self.hidden_layers {
            c.model.hidden_layers = v;
        }
        if self.residual {
            c.model.residual = true;
        }
        if self.conditional {
            c.model.conditional = true;
        }
        if let Some(v) = self.class_drop {
            c.train.class_drop = v;
        }
        if let Some(v) = self.steps {
            c.train.steps = v;
        }
        if let Some(v) = self.batch {
            c.train.batch = v;
        }
        if let Some(v) = self.lr {
            c.train.lr = v;
        }
        if let Some(v) = self.seed {
            c.train.seed = v;
        }
        if let Some(v) = self.min_snr {
            c.train.min_snr = v;
        }
        if let Some(v) = &self.sampler {
            c.sample.sampler = v.clone();
        }
        if let Some(v) = self.particles {
            c.sample.particles = v;
        }
        if let Some(v) = self.sampler_steps {
            c.sample.steps = Some(v);
        }
        if let Some(v) = self.step_size {
            c.sample.step_size = v;
        }
        if self.clip {
            c.sample.clip = true;
        }
        if let Some(v) = self.sample_seed {
            c.sample.seed = v;
        }
        if let Some(v) = &self.class {
            c.sample.class = v.clone();
        }
        if let Some(v) = self.guidance {
            c.sample.guidance = v;
        }
        c
    }

    /// The config file (or `base`) with the flags applied, checked for a network's samples or,
    /// with `exact_score`, for the dataset's exact score.
    fn resolve(&self, base: RunConfig, exact_score: bool) -> Result<Run> {
        let c = match &self.config {
            Some(path) => RunConfig::load(path)?,
            None => base,
        };
        self.apply(c).resolve(exact_score)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a score model; writes config.toml, log.jsonl, checkpoint.safetensors and loss.png
    /// into the run folder.
    Train {
        /// The run folder.
        #[arg(long, default_value = "runs/train")]
        run: PathBuf,
        /// Continue from the run folder's checkpoint.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Sample from a checkpoint, or from the exact score of an analytic dataset; writes the
    /// samples as .npy (float32 [n, d]) and samples.png / sampling.gif beside them.
    Sample {
        /// A checkpoint written by `train` (its config comes with it).
        #[arg(long, conflicts_with = "exact_score")]
        checkpoint: Option<PathBuf>,
        /// Use the dataset's exact noised score (eight-gaussians or a config's mixture).
        #[arg(long)]
        exact_score: bool,
        /// The .npy file to write (pictures go into the same folder).
        #[arg(long, default_value = "samples.npy")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Complete images of which only some pixels are known (inpainting, Song et al. 2021): the
    /// known pixels are held at their values, noised to each step's level, while the
    /// checkpoint's sampler fills the rest. Writes the completions as .npy and inpaint.png
    /// (original, known, completions) beside them; for digits, how often the classifier reads a
    /// completion as its original's digit.
    Inpaint {
        /// A checkpoint of an image model (digits, or a folder of PNGs).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The pixels hidden: top, bottom, left or right (that half), box:X0,Y0,X1,Y1 (columns X0..X1
        /// of rows Y0..Y1), or a PNG of the images' size (white known, black hidden).
        #[arg(long, default_value = "bottom")]
        mask: String,
        /// PNG images to complete (the model's size); repeat the flag for each. Without it, the
        /// first --count held-out digits (digits models).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Held-out digits to complete when no --image is given.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Completions per image.
        #[arg(long, default_value_t = 4)]
        completions: usize,
        /// The .npy file to write ([images * completions, pixels]; inpaint.png goes beside it).
        #[arg(long, default_value = "inpaint.npy")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// The negative log-likelihood of points under a checkpoint's model, or under the dataset's
    /// exact score, through the probability-flow ODE (Song et al. 2021; score_sde's
    /// likelihood.py): an adaptive Dormand-Prince solve from the data to the prior. Prints the
    /// mean in nats (bits per dimension for images) and, for a mixture, the gap to its exact
    /// log-density; writes the per-point values as .npy [n, 1].
    Likelihood {
        /// A checkpoint written by `train` (a ve, vp, ddpm or ncsn model).
        #[arg(long, conflicts_with = "exact_score")]
        checkpoint: Option<PathBuf>,
        /// Use the dataset's exact noised score (eight-gaussians or a config's mixture).
        #[arg(long)]
        exact_score: bool,
        /// The points to score, a .npy of float32 [n, d]; default: -n fresh points of the
        /// dataset (an image set's first n images, dequantized).
        #[arg(long)]
        points: Option<PathBuf>,
        /// How the divergence is computed: exact (d forward-mode passes per evaluation),
        /// hutchinson (--probes random probes), or auto: exact up to d = 16.
        #[arg(long, default_value = "auto", value_parser = ["auto", "exact", "hutchinson"])]
        divergence: String,
        /// Hutchinson's probes per point.
        #[arg(long, default_value_t = 1)]
        probes: usize,
        /// Hutchinson's probe distribution.
        #[arg(long, default_value = "rademacher", value_parser = ["rademacher", "gaussian"])]
        probe: String,
        /// The solver's relative and absolute tolerances and the start time (score_sde: 1e-5).
        #[arg(long, default_value_t = 1e-5)]
        rtol: f64,
        #[arg(long, default_value_t = 1e-5)]
        atol: f64,
        #[arg(long, default_value_t = 1e-5)]
        eps: f64,
        /// The .npy file of per-point negative log-likelihoods.
        #[arg(long, default_value = "nll.npy")]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Draw the learned score fields of several checkpoints side by side (each at its own level,
    /// or at --sigma), and last the exact field when the data is a mixture: for comparing
    /// objectives trained on the same data.
    Fields {
        /// Checkpoints written by `train`; repeat the flag for each.
        #[arg(long, required = true)]
        checkpoint: Vec<PathBuf>,
        /// The noise level to draw every model at (default: each single-level model's own).
        #[arg(long)]
        sigma: Option<f64>,
        /// The PNG to write.
        #[arg(long, default_value = "fields.png")]
        out: PathBuf,
    },
    /// Judge samples of the digits against real ones the model never saw: a nearest-neighbour
    /// classifier's confidence and class shares, a Frechet distance in a fixed feature space,
    /// copies of training images, pixels out of range; beside the same figures for real
    /// held-out digits and for a Gaussian fitted to the data (src/quality.rs).
    Eval {
        /// The samples: a .npy of float32 [n, 64] written by `sample` from a digits model.
        #[arg(long)]
        samples: PathBuf,
    },
    /// List the adapters with the limits the engine depends on, and measure the chosen adapter's
    /// float32 FMA ceiling.
    Info {
        /// Timed repetitions per configuration of the FMA probe.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Measure the adapter whose name contains this.
        #[arg(long)]
        adapter: Option<String>,
    },
    /// Time the standard workloads W1-W4 (../shared/WORKLOADS.md) against the FMA ceiling.
    Bench {
        /// Workloads to run (default: all four).
        #[arg(long = "workload", value_parser = ["W1", "W2", "W3", "W4"])]
        workloads: Vec<String>,
        /// Training steps per timing (default 200), or sampler steps per run (default 1000,
        /// the workload as defined; fewer scale the levels' step count down).
        #[arg(long)]
        steps: Option<usize>,
        /// Timed runs per workload; the median is reported with min and max.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Sampler dispatch path.
        #[arg(long, default_value = "auto", value_parser = ["auto", "fused", "staged"])]
        path: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Instead of the workloads: the cost of a training step of dsm, exact and sliced score
        /// matching at d = 2 (the W1 network) and d = 64 (the W2 network), at --batch.
        #[arg(long, conflicts_with_all = ["workloads", "json"])]
        objectives: bool,
        /// The training batch of --objectives.
        #[arg(long, default_value_t = 256, requires = "objectives")]
        batch: usize,
        /// Instead of the workloads: each kernel on its own (the five phases of a W1 training
        /// step, the normal generator, one step of each sampler over W3's particles), --steps
        /// calls per timing.
        #[arg(long, conflicts_with_all = ["workloads", "json", "objectives"])]
        kernels: bool,
        /// Run on the adapter whose name contains this.
        #[arg(long)]
        adapter: Option<String>,
        /// How the dense layers read activations: chunk by chunk through uniform windows (a
        /// weight gradient whose chunks would be under 128 rows still reads storage), or whole
        /// batches from storage (default: the adapter's choice, chunked on CPU adapters).
        #[arg(long, default_value = "auto", value_parser = ["auto", "chunked", "storage"])]
        operands: String,
        /// Time with the host clock around the submits and a device wait, even where the
        /// adapter has GPU timestamps (the default there).
        #[arg(long)]
        host_clock: bool,
        /// Particles per invocation of the fused sampler with a network score, 1 to 4
        /// (default: the adapter's choice, 4 on CPU adapters).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4))]
        fused_particles: Option<u32>,
        /// The dense layers' kernel: an 8 x 8 block per invocation, or subgroups sharing each
        /// weight load (needs subgroups of 8 or more lanes). Default: where the device runs
        /// both, the faster for each network, timed when it is built; the fused sampler's
        /// weight loads: subgroup on CPU adapters that have them.
        #[arg(long, default_value = "auto", value_parser = ["auto", "block", "subgroup"])]
        dense: String,
        /// A training step's forward pass and input gradients: on the fused network kernel
        /// (every layer of a few rows in one invocation, where the network is one the fused
        /// sampler computes) or layer by layer on the dense kernels, which compute the weight
        /// gradients either way (default: the adapter's choice, fused on CPU adapters).
        #[arg(long, default_value = "auto", value_parser = ["auto", "fused", "staged"])]
        training_rows: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let backtrace = cli.verbose || std::env::var("SCOREFIELD_BACKTRACE").is_ok_and(|v| v == "1");
    // anyhow captures a backtrace when RUST_LIB_BACKTRACE (else RUST_BACKTRACE) says so: only
    // when one was asked for here (and capturing costs time). Single-threaded still.
    std::env::set_var("RUST_LIB_BACKTRACE", if backtrace { "1" } else { "0" });
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", error_report(&e, backtrace));
            ExitCode::FAILURE
        }
    }
}

/// An error as the user reads it: `error: ` and what went wrong, then each cause on its own
/// line, and the backtrace only when asked for.
fn error_report(e: &anyhow::Error, backtrace: bool) -> String {
    let mut report = format!("error: {e}\n");
    for cause in e.chain().skip(1) {
        report += &format!("  caused by: {cause}\n");
    }
    if backtrace {
        report += &format!("backtrace:\n{}\n", e.backtrace());
    }
    report
}

fn run(command: Option<Command>) -> Result<()> {
    let Some(command) = command else { return main_job() };
    match command {
        Command::Train { run, resume, overrides } => {
            let resolved = overrides.resolve(RunConfig::default(), false)?;
            run::train(&resolved, &run, resume)
        }
        Command::Sample { checkpoint, exact_score, out, overrides } => {
            let (base, source) = match (&checkpoint, exact_score) {
                (Some(path), _) => {
                    let (base, ckpt) = checkpoint_with_config(path)?;
                    (base, run::Source::Checkpoint(Box::new(ckpt)))
                }
                (None, true) => (RunConfig::default(), run::Source::Exact),
                (None, false) => bail!("say where the score comes from: --checkpoint PATH or --exact-score"),
            };
            let resolved = overrides.resolve(base, exact_score)?;
            files::check_writable(&out)?;
            let dir = files::folder_of(&out);
            run::sample(&resolved, source, dir, &out)
        }
        Command::Inpaint { checkpoint, mask, image, count, completions, out, overrides } => {
            let (base, ckpt) = checkpoint_with_config(&checkpoint)?;
            let resolved = overrides.resolve(base, false)?;
            files::check_writable(&out)?;
            let request = inpaint::Request { mask, images: image, count, completions };
            inpaint::inpaint(&resolved, &ckpt, &request, &out)
        }
        Command::Likelihood {
            checkpoint,
            exact_score,
            points,
            divergence,
            probes,
            probe,
            rtol,
            atol,
            eps,
            out,
            overrides,
        } => {
            let (base, ckpt) = match (&checkpoint, exact_score) {
                (Some(path), _) => {
                    let (base, ckpt) = checkpoint_with_config(path)?;
                    (base, Some(ckpt))
                }
                (None, true) => (RunConfig::default(), None),
                (None, false) => bail!("say where the score comes from: --checkpoint PATH or --exact-score"),
            };
            let resolved = overrides.resolve(base, exact_score)?;
            files::check_writable(&out)?;
            let request = likelihood::Request { points, divergence, probes, projection: probe, rtol, atol, eps };
            likelihood::likelihood(&resolved, ckpt.as_ref(), &request, &out)
        }
        Command::Fields { checkpoint, sigma, out } => {
            files::check_writable(&out)?;
            run::fields(&checkpoint, sigma, &out)
        }
        Command::Eval { samples } => run::eval(&samples),
        Command::Info { repeats, adapter } => pollster::block_on(info(repeats, adapter.as_deref())),
        Command::Bench {
            workloads,
            steps,
            repeats,
            path,
            json,
            objectives,
            batch,
            kernels,
            adapter,
            operands,
            host_clock,
            fused_particles,
            dense,
            training_rows,
        } => {
            let choices =
                Choices { operands: &operands, fused_particles, dense: &dense, training_rows: &training_rows };
            let gpu = pollster::block_on(bench_gpu(adapter.as_deref(), choices))?;
            let clock = Clock::new(&gpu, host_clock);
            if kernels {
                pollster::block_on(bench_kernels(&gpu, &clock, steps.unwrap_or(10), repeats))
            } else if objectives {
                pollster::block_on(bench_objectives(&gpu, &clock, steps.unwrap_or(10), repeats, batch))
            } else {
                pollster::block_on(bench(&gpu, &clock, workloads, steps, repeats, &path, json))
            }
        }
    }
}

/// A checkpoint and the config it was trained with (the defaults for a file without one).
fn checkpoint_with_config(path: &std::path::Path) -> Result<(RunConfig, scorefield::checkpoint::Checkpoint)> {
    let ckpt = run::load_checkpoint(path)?;
    let base = match ckpt.metadata.get("config") {
        Some(text) => RunConfig::from_toml(text)?,
        None => RunConfig::default(),
    };
    Ok((base, ckpt))
}

/// The main job: the default config end to end into runs/main.
fn main_job() -> Result<()> {
    let dir = PathBuf::from("runs/main");
    let resolved = RunConfig::default().resolve(false)?;
    let config = &resolved.config;
    println!(
        "main job: train the W1 network ({} x {}) on the eight Gaussians for {} steps, then sample it into {}",
        config.model.hidden_layers,
        config.model.width,
        config.train.steps,
        dir.display()
    );
    run::train(&resolved, &dir, false)?;
    let ckpt = run::load_checkpoint(&dir.join(run::CHECKPOINT))?;
    run::sample(&resolved, run::Source::Checkpoint(Box::new(ckpt)), &dir, &dir.join("samples.npy"))?;
    println!(
        "pictures: {0}/loss.png, {0}/samples.png (data left, samples right), {0}/score_field.png (learned top, \
         exact bottom), {0}/sampling.gif",
        dir.display()
    );
    Ok(())
}

async fn info(repeats: usize, adapter: Option<&str>) -> Result<()> {
    let adapters = list_adapters().await;
    println!("adapters ({}):", adapters.len());
    for a in &adapters {
        let l = &a.limits;
        println!("  {}", a.describe());
        println!(
            "    workgroup storage {} KiB, invocations/workgroup {}, storage binding {} MiB, uniform binding {} KiB, \
             max buffer {} MiB, storage buffers/stage {}, uniform buffers/stage {}, workgroups/dim {}",
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffer_binding_size / (1 << 20),
            l.max_uniform_buffer_binding_size / 1024,
            l.max_buffer_size / (1 << 20),
            l.max_storage_buffers_per_shader_stage,
            l.max_uniform_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
        );
        let f = a.features;
        println!(
            "    subgroups {}, f16 {}, timestamps {} (inside passes {})",
            yes(f.contains(wgpu::Features::SUBGROUP)),
            yes(f.contains(wgpu::Features::SHADER_F16)),
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)),
        );
    }
    let gpu = Gpu::with_adapter(adapter).await?;
    println!("chosen: {}", gpu.describe());
    println!("kernel choices: {}", choices_line(&gpu));
    println!("measuring the float32 FMA ceiling ({repeats} runs per configuration)...");
    let ceiling = scorefield::ceiling::measure(&gpu, repeats).await?;
    for p in &ceiling.probes {
        println!(
            "  workgroup {:>3}, {:>2} vec4 accumulators: median {:>8.1} GFLOP/s (min {:.1}, max {:.1})",
            p.workgroup_size, p.accumulators, p.median_gflops, p.min_gflops, p.max_gflops
        );
    }
    let b = &ceiling.best;
    println!(
        "FMA ceiling: {:.1} GFLOP/s (median; min {:.1}, max {:.1}; workgroup {}, {} accumulators)",
        b.median_gflops, b.min_gflops, b.max_gflops, b.workgroup_size, b.accumulators
    );
    Ok(())
}

/// The kernel choices a benchmark asks for: "auto" (or none) keeps the adapter's own.
struct Choices<'a> {
    operands: &'a str,
    fused_particles: Option<u32>,
    dense: &'a str,
    training_rows: &'a str,
}

/// The device of a benchmark, with the kernel choices asked for (`--operands`,
/// `--fused-particles`, `--dense`, `--training-rows`) in place of the adapter's own.
async fn bench_gpu(adapter: Option<&str>, choices: Choices<'_>) -> Result<Gpu> {
    let Choices { operands, fused_particles, dense, training_rows } = choices;
    let gpu = Gpu::with_adapter(adapter).await?;
    let own = gpu.tuning();
    let (dense, measure_dense) = match dense {
        "block" => (DenseKernel::Block, false),
        "subgroup" => (DenseKernel::Subgroup, false),
        _ => (own.dense, own.measure_dense),
    };
    if !gpu.runs(dense) {
        bail!("--dense {}: this adapter has no subgroups of 8 or more lanes; use --dense block or auto", dense.name());
    }
    let tuning = Tuning {
        chunked_operands: match operands {
            "chunked" => true,
            "storage" => false,
            _ => own.chunked_operands,
        },
        fused_particles: fused_particles.unwrap_or(own.fused_particles),
        fused_training: match training_rows {
            "fused" => true,
            "staged" => false,
            _ => own.fused_training,
        },
        dense,
        measure_dense,
        ..own
    };
    Ok(gpu.with_tuning(tuning))
}

/// The kernel choices on `gpu`, for `info` and the benchmarks' headers.
fn choices_line(gpu: &Gpu) -> String {
    let t = gpu.tuning();
    let dense = if t.measure_dense && gpu.runs(DenseKernel::Subgroup) {
        "the faster of the block and subgroup kernels, timed per network".to_string()
    } else {
        format!("{} kernel", t.dense.name())
    };
    format!(
        "dense layers: {dense} (bench --dense block|subgroup), {} operands (--operands chunked|storage); fused \
         sampler: {} particle(s) per invocation with a network (--fused-particles), {} weight loads, networks wider \
         than 128 {} (--path); training forward passes and input gradients {} where the fused sampler computes the network \
         (--training-rows)",
        t.operands(),
        t.fused_particles,
        t.dense.name(),
        if t.fused_wide { "fused" } else { "staged" },
        if t.fused_training { "fused" } else { "staged" }
    )
}

async fn bench(
    gpu: &Gpu,
    clock: &Clock,
    workloads: Vec<String>,
    steps: Option<usize>,
    repeats: usize,
    path: &str,
    json: bool,
) -> Result<()> {
    use scorefield::bench::{self, Workload};
    use scorefield::sample::Path;
    let adapter = gpu.describe();
    let ceiling = scorefield::ceiling::measure(gpu, 3).await?.best.median_gflops;
    let path = match path {
        "fused" => Path::Fused,
        "staged" => Path::Staged,
        _ => Path::Auto,
    };
    let chosen: Vec<Workload> = if workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        Workload::ALL.iter().copied().filter(|w| workloads.iter().any(|n| n == w.name())).collect()
    };
    if !json {
        println!("adapter: {adapter}");
        println!("{}", choices_line(gpu));
        println!("FMA ceiling: {ceiling:.1} GFLOP/s; timing: {}", clock.describe());
        println!("{}", bench::TABLE_HEADER);
    }
    for w in chosen {
        let n = steps.unwrap_or(if w.is_training() { 200 } else { 1000 });
        let r = bench::run(gpu, clock, w, n, repeats, path).await?;
        println!("{}", if json { r.json(&adapter, ceiling) } else { r.table_row(ceiling) });
    }
    Ok(())
}

/// `bench --kernels`: every kernel on its own against the FMA ceiling.
async fn bench_kernels(gpu: &Gpu, clock: &Clock, reps: usize, repeats: usize) -> Result<()> {
    let ceiling = scorefield::ceiling::measure(gpu, 3).await?.best.median_gflops;
    println!("adapter: {}", gpu.describe());
    println!("{}", choices_line(gpu));
    println!(
        "FMA ceiling: {ceiling:.1} GFLOP/s; timing: {}, one submit of {reps} calls, {repeats} timings",
        clock.describe()
    );
    println!("{}", scorefield::bench::KERNEL_TABLE_HEADER);
    for r in scorefield::bench::kernels(gpu, clock, reps, repeats).await? {
        println!("{}", r.table_row(ceiling));
    }
    Ok(())
}

/// `bench --objectives`: seconds per training step of each objective, relative to dsm.
async fn bench_objectives(gpu: &Gpu, clock: &Clock, steps: usize, repeats: usize, batch: usize) -> Result<()> {
    use scorefield::bench::{objective_costs, Workload};
    println!("adapter: {}", gpu.describe());
    println!("{}", choices_line(gpu));
    println!("timing: {}; {steps} steps per timing, {repeats} timings", clock.describe());
    println!("| d | network | batch | objective | ms/step median | min | max | relative to dsm |");
    println!("|---|---|---|---|---|---|---|---|");
    for workload in [Workload::W1, Workload::W2] {
        let shape = workload.shape();
        let costs = objective_costs(gpu, clock, shape, batch, steps, repeats).await?;
        let dsm = costs[0].1[0];
        for (name, [median, min, max]) in costs {
            println!(
                "| {} | {} x {} ({}) | {batch} | {name} | {:.2} | {:.2} | {:.2} | {:.2}x |",
                shape.dim,
                shape.hidden_layers,
                shape.width,
                workload.name(),
                1e3 * median,
                1e3 * min,
                1e3 * max,
                median / dsm
            );
        }
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
