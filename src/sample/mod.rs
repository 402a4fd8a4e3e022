//! Sampler: N particles in one device buffer, moved by a score field through the steps of a
//! sampling method (see [`Method`]), many steps per submit and, for small networks and analytic
//! scores, many steps per dispatch.
//!
//! The particle buffer is `[N, d]` f32, row-major, usable as STORAGE, VERTEX and COPY_SRC: an
//! application can bind it as a vertex buffer (stride `4 d` bytes, `Float32x2` for d = 2) and
//! draw it without a copy. Sampling records into an encoder and never waits; reading back is
//! asynchronous.

pub mod classes;
mod fused;
pub mod known;
pub mod method;
mod staged;

use fused::{fit_loop_budget, fused_kernel, fused_network, fused_particles, is_wide, scratch_floats};
pub(crate) use fused::{pre_rows, train_rows, train_rows_fit, TrainBuffers, TrainRows};
use staged::{staged_kernels, Staged};

pub use classes::{Classes, NO_CLASS};
pub use known::{ImageMask, Known};
pub use method::{Churn, Method, PlannedStep, SampleCursor, SampleStep};

use crate::error::{Error, Result};
use crate::gpu::{Bound, Gpu, GpuBuffer, PackedWeights};
use crate::mixture::GaussianMixture;
use crate::model::{DenseChoice, ScoreMlp, Weights, EMBED_FREQS};
use crate::objective::Parametrisation;
use method::FLAG_IMPUTE;

/// Where the score comes from.
#[derive(Clone, Copy)]
pub enum ScoreSource<'a> {
    /// The exact score of a Gaussian mixture under the noise of each step.
    Mixture(&'a GaussianMixture),
    /// A trained network; `parametrisation` says how its output becomes a score (the training
    /// objective's, [`crate::objective::Objective::parametrisation`]).
    Network { model: &'a ScoreMlp, weights: Weights, parametrisation: Parametrisation },
}

impl ScoreSource<'_> {
    pub fn dim(&self) -> usize {
        match self {
            ScoreSource::Mixture(m) => m.dim,
            ScoreSource::Network { model, .. } => model.shape.dim,
        }
    }

    /// The classes of a class-conditional network; 0 for any other source.
    pub fn classes(&self) -> usize {
        match self {
            ScoreSource::Mixture(_) => 0,
            ScoreSource::Network { model, .. } => model.shape.classes,
        }
    }

    /// The class code's columns in the network's input rows (`MlpShape::class_columns`).
    pub fn class_columns(&self) -> usize {
        match self {
            ScoreSource::Mixture(_) => 0,
            ScoreSource::Network { model, .. } => model.shape.class_columns(),
        }
    }
}

/// How the steps are dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Fused where the source and method allow it, staged otherwise.
    Auto,
    /// Many steps per dispatch, each particle in private memory (analytic scores, and networks
    /// up to width 128 and d <= 64; not for methods that couple particles).
    Fused,
    /// One score evaluation and one update per step, as separate dispatches (any network).
    Staged,
}

/// Particles, seed and dispatch settings of a sampling run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplerConfig {
    pub particles: usize,
    pub seed: u64,
    pub path: Path,
    /// Fused path: steps per dispatch. Shorter dispatches keep a desktop responsive (and under
    /// an OS's GPU watchdog); longer ones cost fewer dispatches.
    pub steps_per_dispatch: usize,
    /// Dispatches recorded per submit by [`Sampler::run`].
    pub dispatches_per_submit: usize,
    /// Keep a copy of the particles after the initial draw and after every `k`-th step of the
    /// method (and at the end); 0 keeps none.
    pub snapshot_every: usize,
}

impl SamplerConfig {
    pub fn new(particles: usize, seed: u64) -> Self {
        Self { particles, seed, path: Path::Auto, steps_per_dispatch: 50, dispatches_per_submit: 64, snapshot_every: 0 }
    }
}

/// Largest particle dimension of the per-particle kernels (fused path and exact mixture scores).
pub const MAX_FUSED_DIM: usize = 64;
/// Floats of the fused kernel's private particle arrays (`MAX_D` in sample.wgsl): PPI particles
/// of d dimensions.
pub const MAX_FUSED_FLOATS: usize = 256;
/// Largest network width, and input width d + 32, of the fused path; the width must also be a
/// multiple of 4.
pub const MAX_FUSED_WIDTH: usize = 512;
/// Most layers (hidden + output) of a fused network (`MAX_LAYERS` in sample.wgsl).
pub const MAX_FUSED_LAYERS: usize = 5;
/// Most particles per invocation of the fused network kernel (`MAX_PPI` in sample.wgsl).
pub const MAX_FUSED_PARTICLES: usize = 4;
/// Network width (and input width) up to which the fused kernel reads the weights through
/// uniform windows and keeps the activations of up to `MAX_FUSED_PARTICLES` particles in
/// private arrays (`MAX_H4` = 128 / 4 x 4 vec4s in sample.wgsl); a wider network is WIDE.
pub const MAX_FUSED_NARROW_WIDTH: usize = 128;

/// shaders/sample.wgsl's bindings.
pub mod binding {
    crate::bindings! {
        CURSOR = 0, SCHEDULE = 1, PARTICLES = 2, SAVED = 3, SCORE = 4, MIXTURE = 5, FREQS = 7, NORMS = 8,
        NORM_SUM = 9, NET_INPUT = 10, W0 = 11, W1 = 12, W2 = 13, W3 = 14, W4 = 15, BIASES = 16, KNOWN = 17,
        KNOWN_MASK = 18, LABELS = 19, NET = 20, SCRATCH = 21, TRAIN_IN = 22, PRE0 = 23, PRE1 = 24, PRE2 = 25,
        PRE3 = 26, PRE_OUT = 27, POST0 = 28, POST1 = 29, POST2 = 30, POST3 = 31, DZ_OUT = 32, DZ0 = 33, DZ1 = 34,
        DZ2 = 35, DZ3 = 36,
    }
}

const WG: u32 = 64;
const CURSOR_BYTES: u64 = std::mem::size_of::<SampleCursor>() as u64;

/// A run of dispatches between two cursor updates.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    first: usize,
    count: usize,
    /// Snapshot slot to copy the particles into after this chunk.
    snapshot: Option<usize>,
}

/// A sampling run on the device.
pub struct Sampler {
    gpu: Gpu,
    dim: usize,
    config: SamplerConfig,
    plan: Vec<PlannedStep>,
    chunks: Vec<Chunk>,
    position: usize,
    /// The fused kernel and its packed weights (none filled for a mixture).
    fused: Option<(Bound, PackedWeights)>,
    /// Particles per invocation of the fused kernel (PPI in sample.wgsl).
    fused_particles: usize,
    /// Whether the fused network is wide (WIDE): weights and activations in storage buffers.
    fused_wide: bool,
    staged: Option<Staged>,
    particles: GpuBuffer<f32>,
    // Read by the kernels; kept alive with their bind groups.
    _schedule: GpuBuffer<SampleStep>,
    cursors: GpuBuffer<SampleCursor>,
    cursor: wgpu::Buffer,
    snapshots: Option<GpuBuffer<f32>>,
    snapshot_count: usize,
    // Bound by the kernels; kept alive with their bind groups.
    _buffers: Vec<GpuBuffer<f32>>,
}

impl Sampler {
    /// Builds every pipeline, buffer and bind group of the run; records nothing yet. A
    /// class-conditional network samples through [`Sampler::conditional`].
    pub async fn new(gpu: &Gpu, source: ScoreSource<'_>, method: &Method, config: SamplerConfig) -> Result<Self> {
        Self::build(gpu, source, method, config, None, None).await
    }

    /// A sampler of a class-conditional network: each particle follows the score of its class
    /// (or the unconditional one, [`NO_CLASS`]), with classifier-free guidance of weight
    /// `classes.guidance` (Ho & Salimans 2022; see [`Classes`]). Runs staged; with guidance the
    /// network evaluates every particle twice per step.
    pub async fn conditional(
        gpu: &Gpu,
        source: ScoreSource<'_>,
        method: &Method,
        config: SamplerConfig,
        classes: &Classes,
    ) -> Result<Self> {
        let config = staged_only(config, "class-conditional sampling")?;
        Self::build(gpu, source, method, config, None, Some(classes)).await
    }

    /// A sampler that inpaints: each particle's known coordinates are held at their values
    /// (noised to each step's level, exactly as given at the end) while the method samples the
    /// rest (Song et al. 2021, appendix I.2). `config.particles` must be `known.particles()`.
    /// Runs staged: the known coordinates are reset by a kernel of their own after each step.
    /// A class-conditional network inpaints with its unconditional score.
    pub async fn inpaint(
        gpu: &Gpu,
        source: ScoreSource<'_>,
        method: &Method,
        config: SamplerConfig,
        known: &Known,
    ) -> Result<Self> {
        if known.particles() != config.particles || known.dim() != source.dim() {
            return Err(Error::invalid(
                "known coordinates",
                format!(
                    "{} particles of dimension {} are known, the sampler has {} of dimension {}",
                    known.particles(),
                    known.dim(),
                    config.particles,
                    source.dim()
                ),
            ));
        }
        let config = staged_only(config, "inpainting")?;
        let classes = (source.classes() > 0).then(|| Classes::none(config.particles));
        Self::build(gpu, source, method, config, Some(known), classes.as_ref()).await
    }

    async fn build(
        gpu: &Gpu,
        source: ScoreSource<'_>,
        method: &Method,
        config: SamplerConfig,
        known: Option<&Known>,
        classes: Option<&Classes>,
    ) -> Result<Self> {
        let mut plan = method.plan()?;
        let fusable = !method.couples_particles();
        let d = source.dim();
        let n = config.particles;
        if n == 0 || config.steps_per_dispatch == 0 || config.dispatches_per_submit == 0 {
            return Err(Error::invalid(
                "sampler config",
                "particles, steps_per_dispatch and dispatches_per_submit must be at least 1",
            ));
        }
        let max_groups = gpu.limits().max_compute_workgroups_per_dimension as usize;
        if n.div_ceil(WG as usize) > max_groups * max_groups {
            return Err(Error::Limit {
                limit: "max_compute_workgroups_per_dimension^2 * 64 particles",
                have: (max_groups * max_groups * WG as usize) as u64,
                need: n as u64,
            });
        }
        match classes {
            Some(classes) => classes.check(n, source.classes())?,
            None if source.classes() > 0 => {
                return Err(Error::invalid(
                    "sampler",
                    format!(
                        "the network is class-conditional ({} classes): sample it with Sampler::conditional \
                         (Classes::none for its unconditional score)",
                        source.classes()
                    ),
                ))
            }
            None => {}
        }
        for p in &mut plan {
            p.step.out_scale = out_scale(&source, p.level.sigma);
            if known.is_some() && p.boundary {
                p.step.flags |= FLAG_IMPUTE;
            }
        }
        let FusedChoice { fused, particles: fused_particles, wide: fused_wide } =
            choose_path(gpu, &source, fusable, &config)?;
        let mut config = config;
        fit_loop_budget(gpu, &source, fused, fused_particles, &mut config)?;
        let chunks = plan_chunks(&plan, fused, config);
        let snapshot_count = chunks.iter().filter_map(|c| c.snapshot).max().map_or(0, |m| m + 1);

        let none = wgpu::BufferUsages::empty();
        let particles = GpuBuffer::new(gpu, "scorefield.sample.particles", n * d, wgpu::BufferUsages::VERTEX)?;
        let steps: Vec<SampleStep> = plan.iter().map(|p| p.step).collect();
        let schedule = GpuBuffer::from_slice(gpu, "scorefield.sample.schedule", &steps, none)?;
        let seed = crate::rng::split(config.seed);
        let cursor_values: Vec<SampleCursor> =
            chunks.iter().map(|c| SampleCursor { seed, first: c.first as u32, count: c.count as u32 }).collect();
        let cursors = GpuBuffer::from_slice(gpu, "scorefield.sample.cursors", &cursor_values, none)?;
        let cursor = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("scorefield.sample.cursor"),
            size: CURSOR_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let snapshots = if snapshot_count > 0 {
            Some(GpuBuffer::new(gpu, "scorefield.sample.snapshots", snapshot_count * n * d, none)?)
        } else {
            None
        };
        let buf = |label: &str, len: usize| GpuBuffer::<f32>::new(gpu, label, len, none);
        let saved = buf("scorefield.sample.saved", n * d)?;
        let mixture_values = match source {
            ScoreSource::Mixture(m) => pack_mixture(m),
            ScoreSource::Network { .. } => vec![0.0],
        };
        let mixture = GpuBuffer::from_slice(gpu, "scorefield.sample.mixture", &mixture_values, none)?;
        let (source_kind, k, h, w) = match source {
            ScoreSource::Mixture(m) => (0.0, m.components(), 1, 1),
            ScoreSource::Network { model, .. } => (1.0, 1, model.shape.hidden_layers, model.shape.width),
        };
        let constants = [
            ("D", d as f64),
            ("N", n as f64),
            ("SOURCE", source_kind),
            ("K", k as f64),
            ("H", h as f64),
            ("W", w as f64),
            ("F", EMBED_FREQS as f64),
            ("WG", WG as f64),
            ("PPI", fused_particles as f64),
            ("WIDE", if fused_wide { 1.0 } else { 0.0 }),
            ("CLASSES", source.class_columns() as f64),
            ("GUIDED", if classes.is_some_and(Classes::guided) { 1.0 } else { 0.0 }),
            ("GUIDANCE", classes.map_or(0.0, |c| c.guidance as f64)),
        ];
        let shared = SharedBindings {
            cursor: &cursor,
            schedule: &schedule,
            particles: &particles,
            saved: &saved,
            mixture: &mixture,
        };
        let mut keep = Vec::new();
        let (fused_kernel, staged) = if fused {
            let scratch = match source {
                ScoreSource::Network { model, .. } if fused_wide => {
                    let [x, y] = fused_grid(gpu, n, fused_particles);
                    scratch_floats(&model.shape, fused_particles, (x * y * WG) as usize)
                }
                _ => 0,
            };
            let (kernel, buffers) = fused_kernel(gpu, &source, &constants, scratch, &shared).await?;
            keep.extend(buffers);
            (Some(kernel), None)
        } else {
            let (staged, buffers) = staged_kernels(gpu, &source, &constants, n, &shared, (known, classes)).await?;
            keep.extend(buffers);
            (None, Some(staged))
        };
        keep.push(saved);
        keep.push(mixture);
        Ok(Self {
            gpu: gpu.clone(),
            dim: d,
            config,
            plan,
            chunks,
            position: 0,
            fused: fused_kernel,
            fused_particles,
            fused_wide,
            staged,
            particles,
            _schedule: schedule,
            cursors,
            cursor,
            snapshots,
            snapshot_count,
            _buffers: keep,
        })
    }

    /// The particles, `[N, d]` f32 row-major (STORAGE | VERTEX | COPY_SRC).
    pub fn particles(&self) -> &GpuBuffer<f32> {
        &self.particles
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Whether the fused path was chosen.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Whether the fused network runs as a wide one (wider than 128): its weights and
    /// activations in storage buffers rather than uniform windows and private arrays.
    pub fn fused_wide(&self) -> bool {
        self.fused_wide
    }

    /// The dense kernel of the staged network pass and how it was chosen; None when fused or
    /// with a mixture score.
    pub fn dense(&self) -> Option<DenseChoice> {
        self.staged.as_ref().and_then(Staged::network).map(|mlp| mlp.dense)
    }

    /// The planned steps (the initial draw first).
    pub fn plan(&self) -> &[PlannedStep] {
        &self.plan
    }

    /// Dispatch groups (cursor updates) in the whole run, and how many are recorded so far.
    pub fn progress(&self) -> (usize, usize) {
        (self.position, self.chunks.len())
    }

    pub fn is_done(&self) -> bool {
        self.position == self.chunks.len()
    }

    /// Starts over from a fresh initial draw at the next record.
    pub fn reset(&mut self) {
        self.position = 0;
    }

    /// Starts over from the given particles `[N, d]`, skipping the initial draw.
    pub fn restart_from(&mut self, particles: &[f32]) -> Result<()> {
        if particles.len() != self.particles.len() {
            return Err(Error::invalid(
                "particles",
                format!("{} floats given, the sampler holds {} x {}", particles.len(), self.config.particles, self.dim),
            ));
        }
        self.particles.write(&self.gpu, 0, particles);
        self.position = 1;
        Ok(())
    }

    /// Starts over from another sampler's particles (same count and dimension), skipping the
    /// initial draw: records a device copy into `encoder`, never waits. For switching the method,
    /// noise level or score source of a live run without moving the particles.
    pub fn continue_from(&mut self, encoder: &mut wgpu::CommandEncoder, other: &Sampler) -> Result<()> {
        if other.particles.len() != self.particles.len() {
            return Err(Error::invalid(
                "particles",
                format!(
                    "{} floats given, the sampler holds {} x {}",
                    other.particles.len(),
                    self.config.particles,
                    self.dim
                ),
            ));
        }
        let bytes = (self.particles.len() * 4) as u64;
        encoder.copy_buffer_to_buffer(other.particles.raw(), 0, self.particles.raw(), 0, bytes);
        self.position = 1;
        Ok(())
    }

    /// Records up to `max_dispatches` more dispatch groups into `encoder` (the embedding path:
    /// the caller submits). Returns how many were recorded; 0 once the run is done.
    pub fn record(&mut self, encoder: &mut wgpu::CommandEncoder, max_dispatches: usize) -> usize {
        let end = self.position.saturating_add(max_dispatches).min(self.chunks.len());
        if end > self.position {
            // The network's current weights, so a model still training is sampled as it is now.
            if let Some((_, windows)) = &self.fused {
                windows.record(encoder);
            }
            if let Some(mlp) = self.staged.as_ref().and_then(Staged::network) {
                mlp.record_weight_copies(encoder);
            }
        }
        let nd_bytes = (self.config.particles * self.dim * 4) as u64;
        for c in self.position..end {
            let chunk = self.chunks[c];
            encoder.copy_buffer_to_buffer(self.cursors.raw(), c as u64 * CURSOR_BYTES, &self.cursor, 0, CURSOR_BYTES);
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("scorefield.sample.step"),
                    timestamp_writes: None,
                });
                self.record_chunk(&mut pass, chunk);
            }
            if let (Some(slot), Some(snaps)) = (chunk.snapshot, &self.snapshots) {
                encoder.copy_buffer_to_buffer(self.particles.raw(), 0, snaps.raw(), slot as u64 * nd_bytes, nd_bytes);
            }
        }
        let recorded = end - self.position;
        self.position = end;
        recorded
    }

    fn record_chunk(&self, pass: &mut wgpu::ComputePass<'_>, chunk: Chunk) {
        let grid = self.gpu.grid((self.config.particles as u32).div_ceil(WG));
        if let Some((kernel, _)) = &self.fused {
            kernel.dispatch(pass, fused_grid(&self.gpu, self.config.particles, self.fused_particles));
            return;
        }
        if let Some(staged) = &self.staged {
            staged.record(pass, &self.plan[chunk.first].step, grid);
        }
    }

    /// Records and submits the rest of the run, `dispatches_per_submit` at a time. Never waits.
    pub fn run(&mut self) {
        while !self.is_done() {
            let mut encoder = self.gpu.encoder("scorefield.sample");
            self.record(&mut encoder, self.config.dispatches_per_submit);
            self.gpu.submit(encoder);
        }
    }

    /// Reads the particles back (waits for the work before it).
    pub async fn read(&self) -> Result<Vec<f32>> {
        self.particles.read(&self.gpu).await
    }

    /// The snapshots taken so far, oldest first, each `[N, d]` (waits for the work before it).
    pub async fn read_snapshots(&self) -> Result<Vec<Vec<f32>>> {
        let Some(snaps) = &self.snapshots else { return Ok(Vec::new()) };
        let taken = self.chunks[..self.position].iter().filter_map(|c| c.snapshot).max().map_or(0, |m| m + 1);
        let all = snaps.read_range(&self.gpu, 0, taken * self.particles.len()).await?;
        Ok(all.chunks(self.particles.len().max(1)).map(|c| c.to_vec()).collect())
    }

    /// How many snapshots a whole run takes.
    pub fn snapshot_count(&self) -> usize {
        self.snapshot_count
    }
}

/// `config` on the staged path, for what runs there only (`what`); refuses an explicit Fused.
fn staged_only(config: SamplerConfig, what: &str) -> Result<SamplerConfig> {
    if config.path == Path::Fused {
        return Err(Error::invalid(
            "sampler path",
            format!("{what} runs on the staged path; use Path::Staged or Auto"),
        ));
    }
    Ok(SamplerConfig { path: Path::Staged, ..config })
}

/// The factor from the source's output to a score at noise level sigma.
fn out_scale(source: &ScoreSource<'_>, sigma: f64) -> f32 {
    match source {
        ScoreSource::Mixture(_) => 1.0,
        ScoreSource::Network { parametrisation: Parametrisation::Score, .. } => (1.0 / sigma) as f32,
        ScoreSource::Network { parametrisation: Parametrisation::Eps, .. } => (-1.0 / sigma) as f32,
    }
}

/// The mixture as the kernel reads it: per component log w, mean [d], std [d].
pub(crate) fn pack_mixture(m: &GaussianMixture) -> Vec<f32> {
    (0..m.components())
        .flat_map(|k| {
            std::iter::once(m.weights[k].ln() as f32)
                .chain(m.mean(k).iter().map(|&v| v as f32))
                .chain(m.std(k).iter().map(|&v| v as f32))
        })
        .collect()
}

/// The buffers every sampler kernel binds, for building their bind groups.
struct SharedBindings<'a> {
    cursor: &'a wgpu::Buffer,
    schedule: &'a GpuBuffer<SampleStep>,
    particles: &'a GpuBuffer<f32>,
    saved: &'a GpuBuffer<f32>,
    mixture: &'a GpuBuffer<f32>,
}

impl SharedBindings<'_> {
    fn cursor_binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: self.cursor, offset: 0, size: None })
    }

    /// The bind group of a kernel that reads or moves the particles: the cursor, the schedule
    /// and the particles, then `more`.
    fn particle_kernel(
        &self,
        gpu: &Gpu,
        pipeline: &crate::gpu::Pipeline,
        more: &[(u32, wgpu::BindingResource<'_>)],
    ) -> wgpu::BindGroup {
        let mut entries = vec![
            (binding::CURSOR, self.cursor_binding()),
            (binding::SCHEDULE, self.schedule.binding()),
            (binding::PARTICLES, self.particles.binding()),
        ];
        entries.extend_from_slice(more);
        pipeline.bind_group(gpu, &entries)
    }
}

/// How a sampler runs: fused (the whole step in one kernel per particle) or staged, and for the
/// fused path how many particles share an invocation and where a network's activations live.
struct FusedChoice {
    fused: bool,
    /// Particles per fused invocation (PPI); 1 when staged.
    particles: usize,
    /// A fused network wider than 128 (WIDE in sample.wgsl).
    wide: bool,
}

/// Chooses the path; refuses a fused path that cannot serve.
fn choose_path(gpu: &Gpu, source: &ScoreSource<'_>, fusable: bool, config: &SamplerConfig) -> Result<FusedChoice> {
    let d = source.dim();
    let fused_ok = fusable
        && match *source {
            ScoreSource::Mixture(m) => m.dim <= MAX_FUSED_DIM,
            // The fused kernel computes the plain, unconditional network; the residual and
            // the class-conditional ones run staged.
            ScoreSource::Network { model, .. } => fused_network(&model.shape),
        };
    if let ScoreSource::Mixture(m) = *source {
        if m.dim > MAX_FUSED_DIM {
            return Err(Error::invalid(
                "mixture dimension",
                format!("{} > {MAX_FUSED_DIM}: exact mixture scores are computed per particle", m.dim),
            ));
        }
    }
    let wide = matches!(*source, ScoreSource::Network { model, .. } if is_wide(&model.shape));
    let fused = match config.path {
        Path::Auto => fused_ok && (!wide || gpu.tuning().fused_wide),
        Path::Staged => false,
        Path::Fused if fused_ok => true,
        Path::Fused => {
            return Err(Error::invalid(
                "sampler path",
                format!(
                    "the fused path needs an uncoupled method (not predictor-corrector), d <= {MAX_FUSED_DIM} \
                     and a plain (not residual) network of at most {} hidden layers no wider than \
                     {MAX_FUSED_WIDTH} (a multiple of 4); use the staged path",
                    MAX_FUSED_LAYERS - 1
                ),
            ))
        }
    };
    // A network's particles share each weight load, several per invocation where the
    // adapter's tuning asks for it and their dimensions fit the private arrays.
    let particles = match *source {
        ScoreSource::Network { .. } if fused => fused_particles(gpu).min(MAX_FUSED_FLOATS / d),
        _ => 1,
    };
    Ok(FusedChoice { fused, particles, wide: fused && wide })
}

/// The fused kernel's workgroups for `particles` at `ppi` per invocation.
fn fused_grid(gpu: &Gpu, particles: usize, ppi: usize) -> [u32; 2] {
    gpu.grid((particles.div_ceil(ppi) as u32).div_ceil(WG))
}

/// Groups the steps into dispatches: one step each when staged; when fused, up to
/// `steps_per_dispatch`, cut at snapshots. The initial draw is always its own group, so a run
/// can restart after it.
fn plan_chunks(plan: &[PlannedStep], fused: bool, config: SamplerConfig) -> Vec<Chunk> {
    let k = config.snapshot_every;
    let mut boundaries = 0;
    let mut slot = 0;
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut start = 0;
    for (i, p) in plan.iter().enumerate() {
        let mut snapshot = None;
        if p.boundary && k > 0 {
            // The initial draw is boundary 0; then every k-th step; and the last.
            if boundaries % k == 0 || i + 1 == plan.len() {
                snapshot = Some(slot);
                slot += 1;
            }
            boundaries += 1;
        }
        let len = i + 1 - start;
        let cut = !fused || i == 0 || snapshot.is_some() || len == config.steps_per_dispatch || i + 1 == plan.len();
        if cut {
            chunks.push(Chunk { first: start, count: len, snapshot });
            start = i + 1;
        }
    }
    chunks
}
