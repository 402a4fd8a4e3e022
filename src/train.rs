//! Trainer: keeps the data, the network, its gradients and Adam state on the device, and records
//! whole training steps (batch draw and noise, forward, loss gradient, backward, Adam) into one
//! compute pass, many steps per submit. The loss comes back every `log_every` steps through a
//! readback that never waits.

use std::collections::BTreeMap;

use bytemuck::{Pod, Zeroable};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer, PendingRead, Pipeline};
use crate::model::{MlpPass, MlpShape, ScoreMlp, Weights, EMBED_FREQS};
use crate::objective::{Objective, Parametrisation, Projection, MAX_TANGENTS, T_MIN};
use crate::optim::AdamConfig;
use crate::shaders;

/// Twin of `StepParams` in shaders/step.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct StepParams {
    pub seed: [u32; 2],
    pub step: u32,
    pub n_data: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub bias_c1: f32,
    pub bias_c2: f32,
    pub ema_decay: f32,
    pub t_min: f32,
    pub sigma_min: f32,
    pub sigma_max: f32,
    pub beta_min: f32,
    pub beta_max: f32,
}

/// The kernels of a training step, in order (timed one at a time by `scorefield bench --kernels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKernel {
    /// Batch draw, noise and embedding (and score matching's directions).
    Perturb,
    /// The dense layers forward (and the tangent rows).
    Forward,
    /// The loss and its gradient at the output.
    Loss,
    /// The dense layers backward: input and weight gradients.
    Backward,
    /// Adam and the EMA over every parameter.
    Adam,
}

impl StepKernel {
    pub const ALL: [StepKernel; 5] =
        [StepKernel::Perturb, StepKernel::Forward, StepKernel::Loss, StepKernel::Backward, StepKernel::Adam];
}

/// Everything that defines a training run besides the data.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub shape: MlpShape,
    pub objective: Objective,
    pub adam: AdamConfig,
    pub batch: usize,
    pub seed: u64,
    /// Steps recorded per submit: more means fewer submits, less host work per step.
    pub steps_per_submit: usize,
    /// What happens when the loss, a gradient or a parameter turns non-finite.
    pub on_nonfinite: NonFinite,
    /// How each example's loss is weighted by its noise level.
    pub loss_weight: LossWeight,
}

/// The weight of each example's loss by its noise level, on top of the objective's own
/// lambda(sigma) = sigma^2 (score parametrisation) or 1 (eps parametrisation), which make the
/// same eps-prediction loss.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum LossWeight {
    /// Every example weighs 1.
    #[default]
    Uniform,
    /// Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    /// Strategy"): min(SNR, gamma) / SNR with SNR = a^2 / sigma^2, so the nearly clean levels,
    /// whose loss is mostly irreducible noise and dominates the plain loss, weigh less. They
    /// use gamma = 5. Not for exact and sliced score matching, which have no noise levels.
    MinSnr { gamma: f64 },
}

impl LossWeight {
    /// The kernel's MIN_SNR constant: gamma, or 0 for uniform weights.
    fn gamma(&self) -> f64 {
        match *self {
            LossWeight::Uniform => 0.0,
            LossWeight::MinSnr { gamma } => gamma,
        }
    }
}

impl TrainConfig {
    /// A run of `objective` on a network of `shape` with the engine's defaults: Adam's
    /// ([`AdamConfig::default`]), batch 128, seed 0, 25 steps per submit, a stop at the first
    /// non-finite value, and uniform loss weights. Change the rest with struct update syntax:
    /// `TrainConfig { batch: 1024, ..TrainConfig::new(shape, objective) }`.
    pub fn new(shape: MlpShape, objective: Objective) -> Self {
        Self {
            shape,
            objective,
            adam: AdamConfig::default(),
            batch: 128,
            seed: 0,
            steps_per_submit: 25,
            on_nonfinite: NonFinite::Stop,
            loss_weight: LossWeight::Uniform,
        }
    }
}

/// What training does when the loss, a gradient or a parameter turns non-finite (NaN or
/// infinite). Either way the last healthy state, kept on the device, is restored first.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum NonFinite {
    /// Stop with [`Error::Diverged`], the trainer holding the last healthy state.
    #[default]
    Stop,
    /// Continue from the last healthy state with the learning rate times `factor`, at most
    /// `times` times over the run; then stop as [`NonFinite::Stop`] does.
    Backoff { factor: f64, times: u32 },
}

/// One recovery from a blow-up: which quantity went non-finite at which step, the step whose
/// state was restored, and the learning-rate factor used from then on.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    pub quantity: &'static str,
    pub step: u64,
    pub restored_step: u64,
    pub lr_factor: f64,
}

/// The health flags the step kernels raise (shaders/step.wgsl): per quantity, the first step
/// at which it was non-finite, u32::MAX while it never was.
pub const HEALTH_CLEAN: [u32; 3] = [u32::MAX; 3];
/// What each health flag watches, in the order of step.wgsl's HEALTH_LOSS, HEALTH_GRADIENT
/// and HEALTH_PARAMETER.
pub const HEALTH_QUANTITIES: [&str; 3] = ["loss", "gradient", "parameter update (weights or Adam moments)"];

/// The earliest non-finite quantity and its step, if any (ties in pipeline order).
fn first_nonfinite(health: &[u32]) -> Option<(&'static str, u64)> {
    (0..3)
        .filter(|&q| health[q] != u32::MAX)
        .min_by_key(|&q| health[q])
        .map(|q| (HEALTH_QUANTITIES[q], health[q] as u64))
}

/// The per-example losses of one logged step, with each example's noise level (the level
/// index for discrete schedules, t for continuous ones).
#[derive(Clone, Debug)]
pub struct LossRecord {
    pub step: u64,
    pub losses: Vec<f32>,
    pub levels: Vec<f32>,
}

impl LossRecord {
    pub fn mean(&self) -> f64 {
        self.losses.iter().map(|&l| l as f64).sum::<f64>() / self.losses.len().max(1) as f64
    }
}

const WG_ROWS: u32 = 64;
const WG_ADAM: u32 = 256;

/// Calls of [`Trainer::record_steps`] an application may record before it submits: each call
/// takes its own `steps_per_submit` slots of step parameters.
pub const RING_CALLS: usize = 4;

/// A training run on the device.
pub struct Trainer {
    gpu: Gpu,
    config: TrainConfig,
    model: ScoreMlp,
    n_data: usize,
    step: u64,
    _data: GpuBuffer<f32>,
    _table: GpuBuffer<f32>,
    grads: GpuBuffer<f32>,
    adam_m: GpuBuffer<f32>,
    adam_v: GpuBuffer<f32>,
    noise: GpuBuffer<f32>,
    level: GpuBuffer<f32>,
    loss: GpuBuffer<f32>,
    /// A ring of `RING_CALLS * steps_per_submit` uniform slots, one StepParams each, and the
    /// slot the next `record_steps` call starts at.
    step_ring: wgpu::Buffer,
    slot_stride: u64,
    ring_cursor: usize,
    mlp: MlpPass,
    perturb: (Pipeline, Vec<wgpu::BindGroup>),
    /// Score matching's tangent directions, drawn each step (per ring slot).
    directions: Option<(Pipeline, Vec<wgpu::BindGroup>)>,
    /// The loss and its gradient: `loss_grad`, or `trace_loss` for score matching (per slot).
    loss_grad: (Pipeline, Vec<wgpu::BindGroup>),
    adam: (Pipeline, Vec<wgpu::BindGroup>),
    /// Copies (params, m, v, EMA) into `good` while no health flag is raised.
    snapshot: (Pipeline, wgpu::BindGroup),
    health: GpuBuffer<u32>,
    /// The last healthy state: params, Adam m and v, EMA, each `param_count` floats.
    good: GpuBuffer<f32>,
    /// The step `good` holds.
    good_step: u64,
    /// The learning rate's factor after backoffs, and the backoffs so far.
    lr_factor: f64,
    backoffs: Vec<Backoff>,
    /// Backoffs not yet collected by [`Trainer::take_backoffs`].
    new_backoffs: usize,
    pending: Vec<PendingLoss>,
}

/// A logged step's losses and levels on their way back.
struct PendingLoss {
    step: u64,
    losses: PendingRead<f32>,
    levels: PendingRead<f32>,
    health: PendingRead<u32>,
    got_losses: Option<Vec<f32>>,
    got_levels: Option<Vec<f32>>,
}

impl Trainer {
    /// Uploads `data` (`n` rows of `config.shape.dim` floats, row-major) and builds every
    /// pipeline and bind group the steps need.
    pub async fn new(gpu: &Gpu, config: TrainConfig, data: &[f32]) -> Result<Self> {
        let model = ScoreMlp::new(gpu, config.shape, config.seed)?;
        Self::with_model(gpu, config, data, model).await
    }

    /// As [`Trainer::new`], starting from a given network.
    pub async fn with_model(gpu: &Gpu, config: TrainConfig, data: &[f32], model: ScoreMlp) -> Result<Self> {
        config.shape.validate()?;
        config.objective.validate()?;
        if model.shape != config.shape {
            return Err(Error::invalid(
                "model",
                format!("shape {:?} differs from the config's {:?}", model.shape, config.shape),
            ));
        }
        let d = config.shape.dim;
        if data.is_empty() || !data.len().is_multiple_of(d) {
            return Err(Error::invalid(
                "training data",
                format!("{} floats is not a non-empty whole number of {d}-dimensional rows", data.len()),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "training data",
                format!("value {} at row {}, column {} is not finite", data[i], i / d, i % d),
            ));
        }
        if config.batch == 0 || config.steps_per_submit == 0 {
            return Err(Error::invalid("trainer", "batch and steps_per_submit must be at least 1"));
        }
        let tangents = config.objective.tangents(d);
        if let LossWeight::MinSnr { gamma } = config.loss_weight {
            crate::error::positive("min-SNR gamma", gamma)?;
            if tangents > 0 {
                return Err(Error::invalid(
                    "loss weight",
                    "exact and sliced score matching have no noise levels to weight: use uniform weights",
                ));
            }
        }
        if tangents > MAX_TANGENTS {
            return Err(Error::invalid(
                "objective",
                format!(
                    "exact score matching takes one tangent pass per dimension, and d = {d} is more than \
                     {MAX_TANGENTS}: use sliced score matching, whose cost is set by its projections"
                ),
            ));
        }
        let n_data = data.len() / d;
        let batch = config.batch;
        let p = config.shape.param_count();
        let none = wgpu::BufferUsages::empty();
        let data_buf = GpuBuffer::from_slice(gpu, "scorefield.train.data", data, none)?;
        let levels = config.objective.levels();
        let mut table: Vec<f32> =
            levels.iter().flat_map(|l| [l.a as f32, l.sigma as f32, l.cond as f32, 0.0]).collect();
        // Continuous-time objectives read no table, but the binding needs one vec4.
        table.resize(table.len().max(4), 0.0);
        let table_buf = GpuBuffer::from_slice(gpu, "scorefield.train.schedule", &table, none)?;
        let zeros = |label: &str, len: usize| GpuBuffer::<f32>::new(gpu, label, len, none);
        let grads = zeros("scorefield.train.grads", p)?;
        let adam_m = zeros("scorefield.train.adam_m", p)?;
        let adam_v = zeros("scorefield.train.adam_v", p)?;
        let noise = zeros("scorefield.train.noise", batch * d)?;
        let level = zeros("scorefield.train.level", batch)?;
        let loss = zeros("scorefield.train.loss", batch)?;
        let health = GpuBuffer::from_slice(gpu, "scorefield.train.health", &HEALTH_CLEAN, none)?;
        let good = zeros("scorefield.train.good_state", 4 * p)?;

        let slot_stride = (std::mem::size_of::<StepParams>() as u64)
            .next_multiple_of(gpu.limits().min_uniform_buffer_offset_alignment as u64);
        let slots = RING_CALLS * config.steps_per_submit;
        let step_ring = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("scorefield.train.step_params"),
            size: slot_stride * slots as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let slot = |i: usize| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &step_ring,
                offset: i as u64 * slot_stride,
                size: wgpu::BufferSize::new(std::mem::size_of::<StepParams>() as u64),
            })
        };

        let mlp = MlpPass::new(gpu, &model, Weights::Raw, batch, tangents, Some(&grads)).await?;

        let (estimator, variance_reduced) = match config.objective {
            Objective::Sliced { projection: Projection::Gaussian, variance_reduced, .. } => (1.0, variance_reduced),
            Objective::Sliced { projection: Projection::Rademacher, variance_reduced, .. } => (2.0, variance_reduced),
            _ => (0.0, false),
        };
        let objective_constants = [
            ("D", d as f64),
            ("F", EMBED_FREQS as f64),
            ("B", batch as f64),
            ("L", levels.len().max(1) as f64),
            ("SCHEDULE", config.objective.schedule_kind() as f64),
            ("PARAM", if config.objective.parametrisation() == Parametrisation::Eps { 1.0 } else { 0.0 }),
            ("WG", WG_ROWS as f64),
            ("TANGENTS", tangents.max(1) as f64),
            ("ESTIMATOR", estimator),
            ("VARIANCE_REDUCED", if variance_reduced { 1.0 } else { 0.0 }),
            ("SCALE", config.objective.model_level().map_or(1.0, |l| l.sigma)),
            ("MIN_SNR", config.loss_weight.gamma()),
        ];
        let perturb = gpu.pipeline(&shaders::OBJECTIVE, "perturb", &objective_constants).await?;
        let perturb_groups = (0..slots)
            .map(|i| {
                perturb.bind_group(
                    gpu,
                    &[
                        (0, slot(i)),
                        (1, data_buf.binding()),
                        (2, table_buf.binding()),
                        (3, model.freqs.binding()),
                        (4, mlp.acts.input.binding()),
                        (5, noise.binding()),
                        (6, level.binding()),
                    ],
                )
            })
            .collect();
        let output_grad = mlp.output_grad().ok_or_else(|| Error::invalid("trainer", "no backward pass"))?;
        // The loss kernel binds the step's slot and the health flags besides its own buffers.
        let mut loss_entries = vec![
            (9, mlp.output().binding()),
            (10, output_grad.binding()),
            (11, loss.binding()),
            (15, health.binding()),
        ];
        // Score matching: the directions of the tangent rows each step, and the trace loss.
        let (directions, loss_entry) = match (mlp.tangent_input(), mlp.tangent_output(), mlp.tangent_output_grad()) {
            (Some(tan_input), Some(tan_output), Some(tan_dout)) => {
                let directions = gpu.pipeline(&shaders::OBJECTIVE, "directions", &objective_constants).await?;
                let groups = (0..slots)
                    .map(|i| directions.bind_group(gpu, &[(0, slot(i)), (12, tan_input.binding())]))
                    .collect();
                loss_entries.extend([(12, tan_input.binding()), (13, tan_output.binding()), (14, tan_dout.binding())]);
                (Some((directions, groups)), "trace_loss")
            }
            _ => {
                loss_entries.extend([(2, table_buf.binding()), (5, noise.binding()), (6, level.binding())]);
                (None, "loss_grad")
            }
        };
        let loss_pipeline = gpu.pipeline(&shaders::OBJECTIVE, loss_entry, &objective_constants).await?;
        let loss_groups = (0..slots)
            .map(|i| {
                let mut entries = loss_entries.clone();
                entries.push((0, slot(i)));
                loss_pipeline.bind_group(gpu, &entries)
            })
            .collect();
        let adam = gpu.pipeline(&shaders::ADAM, "main", &[("P", p as f64), ("WG", WG_ADAM as f64)]).await?;
        let adam_groups = (0..slots)
            .map(|i| {
                adam.bind_group(
                    gpu,
                    &[
                        (0, slot(i)),
                        (1, grads.binding()),
                        (2, model.params.binding()),
                        (3, adam_m.binding()),
                        (4, adam_v.binding()),
                        (5, model.ema.binding()),
                        (6, health.binding()),
                    ],
                )
            })
            .collect();
        let snapshot = gpu.pipeline(&shaders::ADAM, "snapshot", &[("P", p as f64), ("WG", WG_ADAM as f64)]).await?;
        let snapshot_group = snapshot.bind_group(
            gpu,
            &[
                (2, model.params.binding()),
                (3, adam_m.binding()),
                (4, adam_v.binding()),
                (5, model.ema.binding()),
                (6, health.binding()),
                (7, good.binding()),
            ],
        );
        let mut trainer = Self {
            gpu: gpu.clone(),
            config,
            model,
            n_data,
            step: 0,
            _data: data_buf,
            _table: table_buf,
            grads,
            adam_m,
            adam_v,
            noise,
            level,
            loss,
            step_ring,
            slot_stride,
            ring_cursor: 0,
            mlp,
            perturb: (perturb, perturb_groups),
            directions,
            loss_grad: (loss_pipeline, loss_groups),
            adam: (adam, adam_groups),
            snapshot: (snapshot, snapshot_group),
            health,
            good,
            good_step: 0,
            lr_factor: 1.0,
            backoffs: Vec::new(),
            new_backoffs: 0,
            pending: Vec::new(),
        };
        trainer.keep_current_state();
        Ok(trainer)
    }

    /// Copies the live state into `good` (unconditionally: a fresh or resumed state is healthy).
    fn keep_current_state(&mut self) {
        let encoder = self.copy_state(true);
        self.gpu.submit(encoder);
        self.good_step = self.step;
    }

    /// An encoder holding the copies of params, m, v and EMA into `good` (`keep`) or back.
    fn copy_state(&self, keep: bool) -> wgpu::CommandEncoder {
        let mut encoder = self.gpu.encoder("scorefield.train.copy_state");
        let bytes = self.model.params.raw().size();
        for (i, live) in [&self.model.params, &self.adam_m, &self.adam_v, &self.model.ema].into_iter().enumerate() {
            let at = i as u64 * bytes;
            match keep {
                true => encoder.copy_buffer_to_buffer(live.raw(), 0, self.good.raw(), at, bytes),
                false => encoder.copy_buffer_to_buffer(self.good.raw(), at, live.raw(), 0, bytes),
            }
        }
        encoder
    }

    /// After a blow-up: copies the last healthy state back, clears the flags, drops the loss
    /// records in flight (they belong to the abandoned steps), and backs off or stops as
    /// configured.
    fn recover(&mut self, quantity: &'static str, step: u64) -> Result<()> {
        self.pending.clear();
        let encoder = self.copy_state(false);
        self.health.write(&self.gpu, 0, &HEALTH_CLEAN);
        self.gpu.submit(encoder);
        self.step = self.good_step;
        let lr = self.config.adam.lr * self.lr_factor;
        match self.config.on_nonfinite {
            NonFinite::Backoff { factor, times } if (self.backoffs.len() as u32) < times => {
                self.lr_factor *= factor;
                let restored_step = self.good_step;
                self.backoffs.push(Backoff { quantity, step, restored_step, lr_factor: self.lr_factor });
                self.new_backoffs += 1;
                Ok(())
            }
            _ => Err(Error::Diverged { quantity, step, restored_step: self.good_step, lr }),
        }
    }

    /// The backoffs since the last call (see [`NonFinite::Backoff`]).
    pub fn take_backoffs(&mut self) -> Vec<Backoff> {
        let new = self.backoffs[self.backoffs.len() - self.new_backoffs..].to_vec();
        self.new_backoffs = 0;
        new
    }

    /// The step of the last healthy state kept on the device.
    pub fn last_healthy_step(&self) -> u64 {
        self.good_step
    }

    /// Continues a run from a checkpoint: its weights, EMA, Adam moments and step, so that the
    /// steps after it draw the same batches and noise as an uninterrupted run would.
    pub async fn resume(gpu: &Gpu, config: TrainConfig, data: &[f32], ckpt: &Checkpoint) -> Result<Self> {
        ckpt.validate()?;
        let model = ScoreMlp::from_checkpoint(gpu, ckpt)?;
        let mut trainer = Self::with_model(gpu, config, data, model).await?;
        trainer.adam_m.write(gpu, 0, &ckpt.adam_m);
        trainer.adam_v.write(gpu, 0, &ckpt.adam_v);
        trainer.step = ckpt.step;
        trainer.keep_current_state();
        Ok(trainer)
    }

    /// The training state after the work submitted so far (waits for it).
    pub async fn checkpoint(&self, metadata: BTreeMap<String, String>) -> Result<Checkpoint> {
        let gpu = &self.gpu;
        Ok(Checkpoint {
            shape: self.config.shape,
            step: self.step,
            params: self.model.params.read(gpu).await?,
            ema: self.model.ema.read(gpu).await?,
            adam_m: self.adam_m.read(gpu).await?,
            adam_v: self.adam_v.read(gpu).await?,
            freqs: self.model.freqs.read(gpu).await?,
            metadata,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn model(&self) -> &ScoreMlp {
        &self.model
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn grads(&self) -> &GpuBuffer<f32> {
        &self.grads
    }

    /// Adam's first and second moments.
    pub fn adam_state(&self) -> (&GpuBuffer<f32>, &GpuBuffer<f32>) {
        (&self.adam_m, &self.adam_v)
    }

    /// The noise drawn for the last step's batch, [batch, d].
    pub fn noise(&self) -> &GpuBuffer<f32> {
        &self.noise
    }

    /// The parameters of step `step` (0-based) as the kernels see them.
    pub fn step_params(&self, step: u64) -> Result<StepParams> {
        let a = &self.config.adam;
        let (c1, c2) = a.bias_corrections(step + 1);
        let step32 = u32::try_from(step).map_err(|_| Error::invalid("step", "more than 2^32 steps"))?;
        let (sigma_min, sigma_max, beta_min, beta_max) = match self.config.objective {
            Objective::VeSde { sigma_min, sigma_max } => (sigma_min, sigma_max, 0.0, 0.0),
            Objective::VpSde { beta_min, beta_max } => (0.0, 0.0, beta_min, beta_max),
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        Ok(StepParams {
            seed: crate::rng::split(self.config.seed),
            step: step32,
            n_data: self.n_data as u32,
            lr: (a.lr_at(step) * self.lr_factor) as f32,
            beta1: a.beta1 as f32,
            beta2: a.beta2 as f32,
            adam_eps: a.eps as f32,
            bias_c1: c1 as f32,
            bias_c2: c2 as f32,
            ema_decay: a.ema_decay as f32,
            t_min: T_MIN as f32,
            sigma_min: sigma_min as f32,
            sigma_max: sigma_max as f32,
            beta_min: beta_min as f32,
            beta_max: beta_max as f32,
        })
    }

    /// Records up to `steps_per_submit` steps into `encoder` (the embedding path: the caller
    /// submits, whenever it likes). Returns how many were recorded. Never waits. Each call's step
    /// parameters go into their own slots of a ring (written with `queue.write_buffer`, which
    /// lands before the next submit), so up to [`RING_CALLS`] calls may be recorded, into one
    /// encoder or several, before they are submitted.
    pub fn record_steps(&mut self, encoder: &mut wgpu::CommandEncoder, steps: usize) -> Result<usize> {
        let n = steps.min(self.config.steps_per_submit);
        if self.ring_cursor + n > RING_CALLS * self.config.steps_per_submit {
            self.ring_cursor = 0;
        }
        let first = self.ring_cursor;
        self.write_step_ring(first, n)?;
        self.ring_cursor += n;
        for slot in first..first + n {
            // Adam changed the weights at the end of the step before: refresh their windows.
            self.mlp.record_weight_copies(encoder);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("scorefield.train.step"),
                timestamp_writes: None,
            });
            for kernel in StepKernel::ALL {
                self.record_kernel(&mut pass, kernel, slot);
            }
        }
        self.step += n as u64;
        Ok(n)
    }

    /// Writes the parameters of the next `n` steps into the ring's slots `first ..`.
    fn write_step_ring(&self, first: usize, n: usize) -> Result<()> {
        let mut ring = vec![0u8; self.slot_stride as usize * n];
        for i in 0..n {
            let params = self.step_params(self.step + i as u64)?;
            let at = i * self.slot_stride as usize;
            ring[at..at + std::mem::size_of::<StepParams>()].copy_from_slice(bytemuck::bytes_of(&params));
        }
        self.gpu.queue().write_buffer(&self.step_ring, first as u64 * self.slot_stride, &ring);
        Ok(())
    }

    /// Records one phase of a step with the parameters in ring slot `slot`.
    fn record_kernel(&self, pass: &mut wgpu::ComputePass<'_>, kernel: StepKernel, slot: usize) {
        let grid = |n: usize, wg: u32| self.gpu.grid((n as u32).div_ceil(wg));
        let batch = self.config.batch;
        match kernel {
            StepKernel::Perturb => {
                self.perturb.0.dispatch(pass, &self.perturb.1[slot], &[], grid(batch, WG_ROWS));
                if let Some((pipeline, groups)) = &self.directions {
                    let tangents = self.config.objective.tangents(self.config.shape.dim);
                    pipeline.dispatch(pass, &groups[slot], &[], grid(batch * tangents, WG_ROWS));
                }
            }
            StepKernel::Forward => self.mlp.record_forward(pass),
            StepKernel::Loss => self.loss_grad.0.dispatch(pass, &self.loss_grad.1[slot], &[], grid(batch, WG_ROWS)),
            StepKernel::Backward => self.mlp.record_backward(pass),
            StepKernel::Adam => {
                self.adam.0.dispatch(pass, &self.adam.1[slot], &[], grid(self.config.shape.param_count(), WG_ADAM))
            }
        }
    }

    /// Seconds per recording of `kernel` alone, `reps` times in one pass and one submit, after
    /// a warm-up (the kernel micro-benchmarks of `crate::bench`). Leaves the trainer's state
    /// changed where the kernel writes it (Adam: the weights), so time on a throwaway trainer.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) async fn time_kernel(
        &mut self,
        clock: &crate::gpu::Clock,
        kernel: StepKernel,
        reps: usize,
    ) -> Result<f64> {
        self.write_step_ring(0, 1)?;
        let mut seconds = 0.0;
        // One warm-up call, then the timed ones.
        for calls in [1, reps.max(1)] {
            let mut encoder = self.gpu.encoder("scorefield.bench.kernel");
            self.mlp.record_weight_copies(&mut encoder);
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("scorefield.bench.kernel"),
                    timestamp_writes: None,
                });
                for _ in 0..calls {
                    self.record_kernel(&mut pass, kernel, 0);
                }
            }
            let gpu = &self.gpu;
            seconds = clock
                .time(gpu, || {
                    gpu.submit(encoder);
                    Ok(())
                })
                .await?
                / calls as f64;
        }
        Ok(seconds)
    }

    /// Runs `steps` steps, submitting every `steps_per_submit`. With `log_every > 0`, the
    /// per-example losses of every step whose count is a multiple of it are copied out and
    /// collected by [`Trainer::take_losses`] once the GPU has finished them.
    pub fn run(&mut self, steps: u64, log_every: u64) -> Result<()> {
        self.gpu.check()?;
        let mut left = steps;
        while left > 0 {
            // Stop a chunk at the next logged step so its losses can be copied right after it.
            let mut chunk = left.min(self.config.steps_per_submit as u64);
            if log_every > 0 {
                let to_log = log_every - (self.step % log_every);
                chunk = chunk.min(to_log);
            }
            let mut encoder = self.gpu.encoder("scorefield.train");
            let n = self.record_steps(&mut encoder, chunk as usize)? as u64;
            let mut logged = None;
            if log_every > 0 && self.step.is_multiple_of(log_every) {
                // Keep this state on the device if it is healthy, and read the flags that say
                // whether it was, with the losses.
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("scorefield.train.snapshot"),
                        timestamp_writes: None,
                    });
                    let grid = self.gpu.grid((self.config.shape.param_count() as u32).div_ceil(WG_ADAM));
                    self.snapshot.0.dispatch(&mut pass, &self.snapshot.1, &[], grid);
                }
                let b = self.config.batch;
                let losses = PendingRead::record(&self.gpu, &mut encoder, self.loss.raw(), 0, b)?;
                let levels = PendingRead::record(&self.gpu, &mut encoder, self.level.raw(), 0, b)?;
                let health = PendingRead::record(&self.gpu, &mut encoder, self.health.raw(), 0, HEALTH_CLEAN.len())?;
                logged =
                    Some(PendingLoss { step: self.step, losses, levels, health, got_losses: None, got_levels: None });
            }
            self.gpu.submit(encoder);
            if let Some(mut p) = logged {
                p.losses.start();
                p.levels.start();
                p.health.start();
                self.pending.push(p);
            }
            left -= n;
        }
        Ok(())
    }

    /// A logged step's record, if its flags say the state was healthy: the device kept that
    /// state. Otherwise recovers (see [`NonFinite`]) and returns None.
    fn check(&mut self, step: u64, losses: Vec<f32>, levels: Vec<f32>, health: &[u32]) -> Result<Option<LossRecord>> {
        match first_nonfinite(health) {
            None => {
                self.good_step = step;
                Ok(Some(LossRecord { step, losses, levels }))
            }
            Some((quantity, at)) => self.recover(quantity, at).map(|()| None),
        }
    }

    /// The loss records whose readback has completed, oldest first; never waits. A record whose
    /// health flags show a blow-up ends the list: the trainer restores its last healthy state
    /// and backs off or returns [`Error::Diverged`], as configured.
    pub fn take_losses(&mut self) -> Result<Vec<LossRecord>> {
        let mut done = Vec::new();
        while let Some(p) = self.pending.first_mut() {
            if p.got_losses.is_none() {
                p.got_losses = p.losses.try_take(&self.gpu)?;
            }
            if p.got_levels.is_none() {
                p.got_levels = p.levels.try_take(&self.gpu)?;
            }
            if p.got_losses.is_none() || p.got_levels.is_none() {
                break;
            }
            let Some(health) = p.health.try_take(&self.gpu)? else { break };
            let p = self.pending.remove(0);
            let (losses, levels) = (p.got_losses.unwrap_or_default(), p.got_levels.unwrap_or_default());
            match self.check(p.step, losses, levels, &health)? {
                Some(record) => done.push(record),
                None => break,
            }
        }
        Ok(done)
    }

    /// Waits for all submitted work and returns every outstanding loss record; then checks the
    /// health flags once more, for the steps after the last logged one. After a backoff the
    /// step count is back at the last healthy state's: run on from there.
    pub async fn finish(&mut self) -> Result<Vec<LossRecord>> {
        let mut done = Vec::new();
        while !self.pending.is_empty() {
            let p = self.pending.remove(0);
            let losses = match p.got_losses {
                Some(l) => l,
                None => p.losses.finish(&self.gpu, None).await?,
            };
            let levels = match p.got_levels {
                Some(l) => l,
                None => p.levels.finish(&self.gpu, None).await?,
            };
            let health = p.health.finish(&self.gpu, None).await?;
            match self.check(p.step, losses, levels, &health)? {
                Some(record) => done.push(record),
                None => return Ok(done),
            }
        }
        self.gpu.wait(None)?;
        if let Some((quantity, at)) = first_nonfinite(&self.health.read(&self.gpu).await?) {
            self.recover(quantity, at)?;
        }
        Ok(done)
    }

    /// The per-example losses and levels of the last step (waits for it).
    pub async fn last_losses(&self) -> Result<LossRecord> {
        Ok(LossRecord {
            step: self.step,
            losses: self.loss.read(&self.gpu).await?,
            levels: self.level.read(&self.gpu).await?,
        })
    }
}
