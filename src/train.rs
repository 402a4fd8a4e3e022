//! Trainer: keeps the data, the network, its gradients and Adam state on the device, and records
//! whole training steps (batch draw and noise, forward, loss gradient, backward, Adam) into one
//! compute pass, many steps per submit. The loss comes back every `log_every` steps through a
//! readback that never waits.

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer, PendingRead};
use crate::health::{first_nonfinite, Health};
pub use crate::health::{Backoff, NonFinite, HEALTH_CLEAN, HEALTH_QUANTITIES};
use crate::model::{DenseChoice, MlpPass, MlpShape, ScoreMlp, Weights};
use crate::objective::{Objective, ObjectiveKernels, MAX_TANGENTS, T_MIN};
use crate::optim::{AdamConfig, Optimizer};
pub use crate::step::StepParams;
use crate::step::StepRing;

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
    /// A class-conditional network (`shape.classes` > 0): the probability that a row's label
    /// is dropped to "no class", so the network learns the unconditional score too
    /// (classifier-free guidance; Ho & Salimans 2022 found 0.1 and 0.2 alike, 0.5 worse).
    pub class_drop: f64,
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
    pub(crate) fn gamma(&self) -> f64 {
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
            class_drop: 0.1,
        }
    }

    /// Checks the config and the training data (`n` rows of `shape.dim` finite floats, and for a
    /// class-conditional network `n` labels below `shape.classes`) before anything is
    /// allocated.
    fn check(&self, data: &[f32], labels: &[u32]) -> Result<()> {
        self.shape.validate()?;
        self.objective.validate()?;
        let d = self.shape.dim;
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
        if self.batch == 0 || self.steps_per_submit == 0 {
            return Err(Error::invalid("trainer", "batch and steps_per_submit must be at least 1"));
        }
        self.check_labels(data.len() / d, labels)?;
        let tangents = self.objective.tangents(d);
        if let LossWeight::MinSnr { gamma } = self.loss_weight {
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
        Ok(())
    }
}

impl TrainConfig {
    fn check_labels(&self, rows: usize, labels: &[u32]) -> Result<()> {
        let classes = self.shape.classes;
        if classes == 0 {
            return if labels.is_empty() {
                Ok(())
            } else {
                Err(Error::invalid("labels", "the network is not class-conditional: give it classes, or no labels"))
            };
        }
        if labels.len() != rows {
            return Err(Error::invalid(
                "labels",
                format!(
                    "a class-conditional network needs one label per training row: {} for {rows} rows",
                    labels.len()
                ),
            ));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
            return Err(Error::invalid(
                "labels",
                format!("label {} of row {i} is not below {classes} classes", labels[i]),
            ));
        }
        if !(0.0..1.0).contains(&self.class_drop) {
            return Err(Error::invalid(
                "class drop",
                format!("{} is not a probability below 1 (0.1-0.2 is usual)", self.class_drop),
            ));
        }
        Ok(())
    }
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

/// Calls of [`Trainer::record_steps`] an application may record before it submits: each call
/// takes its own `steps_per_submit` slots of step parameters.
pub const RING_CALLS: usize = 4;

/// A training run on the device: the network and its gradients, the objective's kernels (with
/// the data), the dense layers' passes, Adam, and the health flags, wired to one ring of step
/// parameters.
pub struct Trainer {
    gpu: Gpu,
    config: TrainConfig,
    model: ScoreMlp,
    n_data: usize,
    step: u64,
    grads: GpuBuffer<f32>,
    ring: StepRing,
    mlp: MlpPass,
    objective: ObjectiveKernels,
    optimizer: Optimizer,
    health: Health,
    pending: Vec<PendingLoss>,
    /// The staging buffer of the last completed loss readback, for the next.
    spare_staging: Option<wgpu::Buffer>,
}

/// A logged step's losses, levels and health flags on their way back, in one staging buffer:
/// [losses (batch) | levels (batch) | flags], the floats as their bits.
struct PendingLoss {
    step: u64,
    read: PendingRead<u32>,
}

impl PendingLoss {
    /// (losses, levels, health flags) from the read's words.
    fn split(words: &[u32], batch: usize) -> (Vec<f32>, Vec<f32>, &[u32]) {
        let floats = |w: &[u32]| w.iter().map(|&b| f32::from_bits(b)).collect();
        (floats(&words[..batch]), floats(&words[batch..2 * batch]), &words[2 * batch..])
    }
}

impl Trainer {
    /// Uploads `data` (`n` rows of `config.shape.dim` floats, row-major) and builds every
    /// pipeline and bind group the steps need.
    pub async fn new(gpu: &Gpu, config: TrainConfig, data: &[f32]) -> Result<Self> {
        Self::new_labelled(gpu, config, data, &[]).await
    }

    /// As [`Trainer::new`] for a class-conditional network (`config.shape.classes` > 0): each
    /// data row with its class label (below `classes`).
    pub async fn new_labelled(gpu: &Gpu, config: TrainConfig, data: &[f32], labels: &[u32]) -> Result<Self> {
        let model = ScoreMlp::new(gpu, config.shape, config.seed)?;
        Self::build(gpu, config, data, labels, model).await
    }

    /// As [`Trainer::new`], starting from a given network.
    pub async fn with_model(gpu: &Gpu, config: TrainConfig, data: &[f32], model: ScoreMlp) -> Result<Self> {
        Self::build(gpu, config, data, &[], model).await
    }

    async fn build(gpu: &Gpu, config: TrainConfig, data: &[f32], labels: &[u32], model: ScoreMlp) -> Result<Self> {
        config.check(data, labels)?;
        if model.shape != config.shape {
            return Err(Error::invalid(
                "model",
                format!("shape {:?} differs from the config's {:?}", model.shape, config.shape),
            ));
        }
        let (d, tangents) = (config.shape.dim, config.objective.tangents(config.shape.dim));
        // Whole vec4s, as the parameters: Adam reads them four at a time.
        let grads = GpuBuffer::<f32>::new_vec4s(
            gpu,
            "scorefield.train.grads",
            config.shape.param_count(),
            wgpu::BufferUsages::empty(),
        )?;
        let ring = StepRing::new(gpu, RING_CALLS * config.steps_per_submit);
        let mlp = MlpPass::new(gpu, &model, Weights::Raw, config.batch, tangents, Some(&grads)).await?;
        let health = Health::new(gpu, config.on_nonfinite)?;
        let objective = ObjectiveKernels::new(gpu, &config, (data, labels), &model, &mlp, &health.flags, &ring).await?;
        let mut optimizer = Optimizer::new(gpu, &model, &grads, &health.flags, &ring).await?;
        optimizer.keep(gpu, &model, 0);
        Ok(Self {
            gpu: gpu.clone(),
            config,
            model,
            n_data: data.len() / d,
            step: 0,
            grads,
            ring,
            mlp,
            objective,
            optimizer,
            health,
            pending: Vec::new(),
            spare_staging: None,
        })
    }

    /// After a blow-up: copies the last healthy state back, clears the flags, drops the loss
    /// records in flight (they belong to the abandoned steps), and backs off or stops as
    /// configured.
    fn recover(&mut self, quantity: &'static str, step: u64) -> Result<()> {
        self.pending.clear();
        self.step = self.optimizer.restore(&self.gpu, &self.model);
        let lr = self.config.adam.lr * self.health.lr_factor();
        self.health.after_blowup(&self.gpu, quantity, step, self.step, lr)
    }

    /// The backoffs since the last call (see [`NonFinite::Backoff`]).
    pub fn take_backoffs(&mut self) -> Vec<Backoff> {
        self.health.take_backoffs()
    }

    /// The step of the last healthy state kept on the device.
    pub fn last_healthy_step(&self) -> u64 {
        self.optimizer.healthy_step()
    }

    /// Continues a run from a checkpoint: its weights, EMA, Adam moments and step, so that the
    /// steps after it draw the same batches and noise as an uninterrupted run would.
    pub async fn resume(gpu: &Gpu, config: TrainConfig, data: &[f32], ckpt: &Checkpoint) -> Result<Self> {
        Self::resume_labelled(gpu, config, data, &[], ckpt).await
    }

    /// As [`Trainer::resume`] for a class-conditional network (see [`Trainer::new_labelled`]).
    pub async fn resume_labelled(
        gpu: &Gpu,
        config: TrainConfig,
        data: &[f32],
        labels: &[u32],
        ckpt: &Checkpoint,
    ) -> Result<Self> {
        ckpt.validate()?;
        let model = ScoreMlp::from_checkpoint(gpu, ckpt)?;
        let mut trainer = Self::build(gpu, config, data, labels, model).await?;
        trainer.optimizer.m.write(gpu, 0, &ckpt.adam_m);
        trainer.optimizer.v.write(gpu, 0, &ckpt.adam_v);
        trainer.step = ckpt.step;
        trainer.optimizer.keep(gpu, &trainer.model, ckpt.step);
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
            adam_m: self.optimizer.m.read(gpu).await?,
            adam_v: self.optimizer.v.read(gpu).await?,
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

    /// The kernel the dense layers run on and how it was chosen (`Tuning::measure_dense`).
    pub fn dense(&self) -> DenseChoice {
        self.mlp.dense
    }

    /// Whether the forward pass and the input gradients run on the fused network kernel
    /// (`Tuning::fused_training`).
    pub fn fused_rows(&self) -> bool {
        self.mlp.fused_rows()
    }

    /// Adam's first and second moments.
    pub fn adam_state(&self) -> (&GpuBuffer<f32>, &GpuBuffer<f32>) {
        (&self.optimizer.m, &self.optimizer.v)
    }

    /// The noise drawn for the last step's batch, [batch, d].
    pub fn noise(&self) -> &GpuBuffer<f32> {
        &self.objective.noise
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
            lr: (a.lr_at(step) * self.health.lr_factor()) as f32,
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
        let first = self.ring.take(n);
        self.write_step_ring(first, n)?;
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
        let params = (0..n as u64).map(|i| self.step_params(self.step + i)).collect::<Result<Vec<_>>>()?;
        self.ring.write(&self.gpu, first, &params);
        Ok(())
    }

    /// Records one phase of a step with the parameters in ring slot `slot`.
    fn record_kernel(&self, pass: &mut wgpu::ComputePass<'_>, kernel: StepKernel, slot: usize) {
        match kernel {
            StepKernel::Perturb => self.objective.record_draw(&self.gpu, pass, slot),
            StepKernel::Forward => self.mlp.record_forward(pass),
            StepKernel::Loss => self.objective.record_loss(&self.gpu, pass, slot),
            StepKernel::Backward => self.mlp.record_backward(pass),
            StepKernel::Adam => self.optimizer.record_update(&self.gpu, pass, slot),
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
                self.optimizer.record_snapshot(&self.gpu, &mut encoder);
                let b = self.config.batch;
                let ranges = [
                    (self.objective.loss.raw(), 0, b),
                    (self.objective.level.raw(), 0, b),
                    (self.health.flags.raw(), 0, HEALTH_CLEAN.len()),
                ];
                let read = PendingRead::record_ranges(&self.gpu, &mut encoder, &ranges, self.spare_staging.take())?;
                logged = Some(PendingLoss { step: self.step, read });
            }
            self.gpu.submit(encoder);
            if let Some(mut p) = logged {
                p.read.start();
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
                self.optimizer.kept_healthy(step);
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
            let Some(words) = p.read.try_take(&self.gpu)? else { break };
            let p = self.pending.remove(0);
            self.spare_staging = Some(p.read.into_staging());
            let (losses, levels, health) = PendingLoss::split(&words, self.config.batch);
            match self.check(p.step, losses, levels, health)? {
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
            let words = p.read.finish(&self.gpu, None).await?;
            let (losses, levels, health) = PendingLoss::split(&words, self.config.batch);
            match self.check(p.step, losses, levels, health)? {
                Some(record) => done.push(record),
                None => return Ok(done),
            }
        }
        self.gpu.wait(None)?;
        if let Some((quantity, at)) = first_nonfinite(&self.health.flags.read(&self.gpu).await?) {
            self.recover(quantity, at)?;
        }
        Ok(done)
    }

    /// The per-example losses and levels of the last step (waits for it).
    pub async fn last_losses(&self) -> Result<LossRecord> {
        Ok(LossRecord {
            step: self.step,
            losses: self.objective.loss.read(&self.gpu).await?,
            levels: self.objective.level.read(&self.gpu).await?,
        })
    }
}
