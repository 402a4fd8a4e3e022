//! The fused path: every step of a dispatch in one kernel per particle (or PPI particles), the
//! particle in private memory, a network's weights through uniform windows and its activations
//! in private arrays, or, for a network wider than 128, both in storage buffers; and the loop
//! budget that caps its steps per dispatch on llvmpipe.

use super::{
    binding, fused_grid, SharedBindings, MAX_FUSED_DIM, MAX_FUSED_LAYERS, MAX_FUSED_NARROW_WIDTH, MAX_FUSED_PARTICLES,
    MAX_FUSED_WIDTH, WG,
};
use crate::error::{Error, Result};
use crate::gpu::{
    uniform_window, Bound, DenseKernel, Gpu, GpuBuffer, KernelSource, PackedWeights, UNIFORM_WINDOW_BYTES,
};
use crate::model::Weights;
use crate::model::{Layer, MlpShape, EMBED_FREQS};
use crate::sample::{SamplerConfig, ScoreSource};
use crate::shaders;

/// Whether the fused kernel runs `shape` as a wide network (WIDE in sample.wgsl).
pub(super) fn is_wide(shape: &MlpShape) -> bool {
    shape.width.max(shape.input_width()) > MAX_FUSED_NARROW_WIDTH
}

/// Floats of a wide network's scratch activations for `invocations` fused invocations of
/// `ppi` particles each (all the dispatches run, past the last particle included): h and g of
/// `act4` vec4s each (sample.wgsl), the widest layer input for the invocation's particles.
pub(super) fn scratch_floats(shape: &MlpShape, ppi: usize, invocations: usize) -> usize {
    invocations * 2 * shape.input_width().div_ceil(4).max(shape.width / 4) * ppi * 4
}

/// The fused kernel with its bind group and, for a network, the copies that fill its weight
/// windows or pack its weights; and the buffers bound besides (a placeholder, and the scratch
/// activations: `scratch` floats for a wide network, else a vec4) to keep alive.
pub(super) async fn fused_kernel(
    gpu: &Gpu,
    source: &ScoreSource<'_>,
    constants: &[(&str, f64)],
    scratch: usize,
    shared: &SharedBindings<'_>,
) -> Result<((Bound, PackedWeights), Vec<GpuBuffer<f32>>)> {
    let kernel = match source {
        ScoreSource::Network { .. } => network_kernel(gpu),
        ScoreSource::Mixture(_) => &shaders::SAMPLE,
    };
    let pipeline = gpu.pipeline(kernel, "fused", constants).await?;
    // Both score sources and both kinds of network are in the kernel, so every binding must be
    // filled; the read-only storage ones not used get a placeholder (a vec4, the least a vec4
    // array binds).
    let placeholder = GpuBuffer::<f32>::new(gpu, "scorefield.sample.unused", 4, wgpu::BufferUsages::empty())?;
    let network = match *source {
        ScoreSource::Network { model, weights, .. } => Some((
            &model.shape,
            match weights {
                Weights::Raw => &model.params,
                Weights::Ema => &model.ema,
            },
        )),
        ScoreSource::Mixture(_) => None,
    };
    let net = NetworkBindings::new(gpu, network.map(|(shape, src)| (shape, src.raw())), &placeholder, scratch)?;
    let f = match *source {
        ScoreSource::Network { model, .. } => model.freqs.binding(),
        ScoreSource::Mixture(_) => placeholder.binding(),
    };
    let mut entries = vec![
        (binding::SAVED, shared.saved.binding()),
        (binding::MIXTURE, shared.mixture.binding()),
        (binding::FREQS, f),
    ];
    entries.extend(net.entries(&placeholder));
    let bg = shared.particle_kernel(gpu, &pipeline, &entries);
    Ok(((Bound::new(pipeline, bg), net.weights), vec![placeholder, net.scratch]))
}

/// The kernel that computes the fused network: its weight loads shared by the lanes of a
/// subgroup where the device runs the subgroup kernels (the same values either way).
fn network_kernel(gpu: &Gpu) -> &'static KernelSource {
    match gpu.tuning().dense {
        DenseKernel::Subgroup => &shaders::SAMPLE_SUBGROUP,
        DenseKernel::Block => &shaders::SAMPLE,
    }
}

/// What the fused network reads besides its inputs (sample.wgsl's bindings 11-16, 20 and 21):
/// the weights through uniform windows, or for a wide network packed in one storage buffer, and
/// the scratch activations a wide network keeps.
struct NetworkBindings {
    weights: PackedWeights,
    /// The windows bound where the network reads none (a wide network's), else None.
    spare: Option<PackedWeights>,
    scratch: GpuBuffer<f32>,
    wide: bool,
    /// Windows the network reads W from (its layers; 0 when wide or for a mixture).
    layers: usize,
}

impl NetworkBindings {
    /// For `network` (its shape and parameter buffer; None for a mixture score) with `scratch`
    /// floats of scratch activations; `placeholder` stands in for what is not read.
    fn new(
        gpu: &Gpu,
        network: Option<(&MlpShape, &wgpu::Buffer)>,
        placeholder: &GpuBuffer<f32>,
        scratch: usize,
    ) -> Result<Self> {
        let wide = network.is_some_and(|(shape, _)| is_wide(shape));
        // The weights through uniform windows, or for a wide network in one storage buffer; the
        // windows of a wide network get a placeholder window.
        let weights = match network {
            Some((shape, src)) if wide => packed_weights(gpu, shape, src),
            Some((shape, src)) => weight_windows(gpu, shape, src)?,
            None => PackedWeights::windows(gpu, "scorefield.sample.weights_unused", placeholder.raw(), 1, Vec::new()),
        };
        let spare = wide
            .then(|| PackedWeights::windows(gpu, "scorefield.sample.windows_unused", placeholder.raw(), 1, Vec::new()));
        let layers = if wide { 0 } else { network.map_or(0, |(shape, _)| shape.hidden_layers + 1) };
        // Written by the kernel, so never the read-only placeholder (one buffer cannot be bound
        // both ways in a dispatch): a vec4 of its own where the network is not wide.
        let scratch =
            GpuBuffer::<f32>::new(gpu, "scorefield.sample.scratch", scratch.max(4), wgpu::BufferUsages::empty())?;
        Ok(Self { weights, spare, scratch, wide, layers })
    }

    fn entries<'a>(&'a self, placeholder: &'a GpuBuffer<f32>) -> [(u32, wgpu::BindingResource<'a>); 8] {
        let window_buffer = self.spare.as_ref().unwrap_or(&self.weights).buffer();
        let window = |w: usize| {
            // Windows past the network's layers are never read; they repeat window 0, as do all
            // of them for a mixture or a wide network.
            let at = if self.layers > 0 && (w < self.layers || w == MAX_FUSED_LAYERS) { w } else { 0 };
            uniform_window(window_buffer, at as u64 * UNIFORM_WINDOW_BYTES)
        };
        let net = if self.wide { self.weights.buffer().as_entire_binding() } else { placeholder.binding() };
        [
            (binding::W0, window(0)),
            (binding::W1, window(1)),
            (binding::W2, window(2)),
            (binding::W3, window(3)),
            (binding::W4, window(4)),
            (binding::BIASES, window(MAX_FUSED_LAYERS)),
            (binding::NET, net),
            (binding::SCRATCH, self.scratch.binding()),
        ]
    }
}

/// Whether the fused kernel computes `shape` (the plain, unconditional network, as on the
/// sampler's fused path).
pub(crate) fn fused_network(shape: &MlpShape) -> bool {
    !shape.residual
        && shape.classes == 0
        && shape.dim <= MAX_FUSED_DIM
        && shape.width <= MAX_FUSED_WIDTH
        && shape.width.is_multiple_of(4)
        && shape.hidden_layers < MAX_FUSED_LAYERS
        && shape.input_width() <= MAX_FUSED_WIDTH
}

/// Storage buffers `train_forward` binds: the input, five pre-activation and four
/// post-activation buffers, the packed weights and the scratch (`train_backward` binds as many:
/// the five pre-activation buffers, five of dL/dz, the weights and the scratch).
const TRAIN_ROWS_STORAGE_BUFFERS: u32 = 12;

/// A training step's rows on the fused network kernel (train_rows.wgsl): `forward` writes every
/// layer's pre- and post-activations of the batch in one dispatch, `backward` (after the loss
/// kernel) every hidden layer's dL/dz from the output's, both over the same grid. Their weights
/// are packed from the parameter buffer like the sampler's: `weights.record` after every change.
pub(crate) struct TrainRows {
    pub forward: Bound,
    pub backward: Bound,
    pub grid: [u32; 2],
    pub weights: PackedWeights,
    _buffers: Vec<GpuBuffer<f32>>,
}

/// The buffers of a training pass that [`train_rows`] reads and writes, one per layer: the
/// network input, z and silu(z), and dL/dz (the output layer's from the loss kernel).
pub(crate) struct TrainBuffers<'a> {
    pub input: &'a GpuBuffer<f32>,
    pub pre: &'a [GpuBuffer<f32>],
    pub post: &'a [GpuBuffer<f32>],
    pub dpre: &'a [GpuBuffer<f32>],
}

/// Whether a training step over `shape` runs its rows fused on `gpu` (`Tuning::fused_training`,
/// a network the fused kernel computes, and enough storage bindings). One invocation runs one
/// forward or one input-gradient pass: at most about 23000 loop iterations (4 x 512 hidden,
/// d = 64: `dense`'s blocks of 16 outputs times vec4 inputs, and the writes of 4 rows), inside
/// llvmpipe's loop budget.
pub(crate) fn train_rows_fit(gpu: &Gpu, shape: &MlpShape) -> bool {
    gpu.tuning().fused_training
        && fused_network(shape)
        && gpu.limits().max_storage_buffers_per_shader_stage >= TRAIN_ROWS_STORAGE_BUFFERS
}

/// The fused forward and input-gradient passes of `rows` rows of `bufs` through the weights in
/// `w`.
pub(crate) async fn train_rows(
    gpu: &Gpu,
    shape: &MlpShape,
    w: &GpuBuffer<f32>,
    bufs: TrainBuffers<'_>,
    rows: usize,
) -> Result<TrainRows> {
    let wide = is_wide(shape);
    let ppi = fused_particles(gpu);
    let mut constants = vec![
        ("D", shape.dim as f64),
        ("H", shape.hidden_layers as f64),
        ("W", shape.width as f64),
        ("F", EMBED_FREQS as f64),
        ("WG", WG as f64),
        ("PPI", ppi as f64),
        ("WIDE", if wide { 1.0 } else { 0.0 }),
    ];
    let forward = gpu.pipeline(network_kernel(gpu), "train_forward", &constants).await?;
    constants.push(("TRANSPOSE", 1.0));
    let backward = gpu.pipeline(network_kernel(gpu), "train_backward", &constants).await?;
    let placeholder = GpuBuffer::<f32>::new(gpu, "scorefield.train_rows.unused", 4, wgpu::BufferUsages::empty())?;
    // The layers the network does not have: one placeholder for all of them, never written.
    let unwritten = GpuBuffer::<f32>::new(gpu, "scorefield.train_rows.unwritten", 4, wgpu::BufferUsages::empty())?;
    let grid = fused_grid(gpu, rows, ppi);
    let scratch = match wide {
        true => scratch_floats(shape, ppi, (grid[0] * grid[1] * WG) as usize),
        false => 0,
    };
    let net = NetworkBindings::new(gpu, Some((shape, w.raw())), &placeholder, scratch)?;
    let layer = |buffers, l| layer_binding(buffers, l, &unwritten);
    // The hidden layers' z (vec4 rows in the kernel) apart from the output layer's (d floats).
    let (hidden_pre, output_pre) = bufs.pre.split_at(shape.hidden_layers);
    let mut entries = net.entries(&placeholder).to_vec();
    entries.extend([
        (binding::TRAIN_IN, bufs.input.binding()),
        (binding::PRE0, layer(hidden_pre, 0)),
        (binding::PRE1, layer(hidden_pre, 1)),
        (binding::PRE2, layer(hidden_pre, 2)),
        (binding::PRE3, layer(hidden_pre, 3)),
        (binding::PRE_OUT, output_pre[0].binding()),
        (binding::POST0, layer(bufs.post, 0)),
        (binding::POST1, layer(bufs.post, 1)),
        (binding::POST2, layer(bufs.post, 2)),
        (binding::POST3, layer(bufs.post, 3)),
    ]);
    let forward_bg = forward.bind_group(gpu, &entries);
    // The backward's: the output layer's dL/dz in, the hidden layers' out (the layers the
    // network does not have get the placeholder, as above).
    let hidden = &bufs.dpre[..shape.hidden_layers];
    let mut entries = net.entries(&placeholder).to_vec();
    entries.extend([
        (binding::PRE0, layer(hidden_pre, 0)),
        (binding::PRE1, layer(hidden_pre, 1)),
        (binding::PRE2, layer(hidden_pre, 2)),
        (binding::PRE3, layer(hidden_pre, 3)),
        (binding::PRE_OUT, output_pre[0].binding()),
        (binding::DZ_OUT, bufs.dpre[shape.hidden_layers].binding()),
        (binding::DZ0, layer(hidden, 0)),
        (binding::DZ1, layer(hidden, 1)),
        (binding::DZ2, layer(hidden, 2)),
        (binding::DZ3, layer(hidden, 3)),
    ]);
    let backward_bg = backward.bind_group(gpu, &entries);
    let keep = vec![placeholder, unwritten, net.scratch];
    Ok(TrainRows {
        forward: Bound::new(forward, forward_bg),
        backward: Bound::new(backward, backward_bg),
        grid,
        weights: net.weights,
        _buffers: keep,
    })
}

/// sample.wgsl's BLOCK_LANES: invocations per block of the hidden layers' z (and of a wide
/// network's scratch activations, whose invocations come in workgroups of WG, a multiple).
const BLOCK_LANES: usize = 8;

/// Rows a hidden layer's z buffer holds for a pass of `rows` rows: train_rows.wgsl stores z in
/// blocks of BLOCK_LANES invocations of PPI rows each (`pre_at`), so the rows round up to a
/// whole block.
pub(crate) fn pre_rows(gpu: &Gpu, rows: usize) -> usize {
    rows.next_multiple_of(BLOCK_LANES * fused_particles(gpu))
}

/// Rows (particles) per invocation of the fused kernels, PPI, as the adapter's tuning asks (the
/// sampler takes fewer where a particle's dimensions would overfill the private arrays).
pub(super) fn fused_particles(gpu: &Gpu) -> usize {
    (gpu.tuning().fused_particles as usize).clamp(1, MAX_FUSED_PARTICLES)
}

/// Layer l's buffer of `buffers`, or `missing` for a layer the network does not have.
fn layer_binding<'a>(
    buffers: &'a [GpuBuffer<f32>],
    l: usize,
    missing: &'a GpuBuffer<f32>,
) -> wgpu::BindingResource<'a> {
    buffers.get(l).unwrap_or(missing).binding()
}

/// Where the driver ends an invocation's loops past a budget (llvmpipe), a fused
/// dispatch runs no more steps than fit half of it, and a score that alone does not fit
/// (a mixture of very many components) is refused rather than silently cut short. A network
/// on the staged path is evaluated by the dense-layer kernels, layer by layer and row block by
/// row block, never in one invocation, so it is not held to the budget.
pub(super) fn fit_loop_budget(
    gpu: &Gpu,
    source: &ScoreSource<'_>,
    fused: bool,
    fused_particles: usize,
    config: &mut SamplerConfig,
) -> Result<()> {
    let in_one_invocation = fused || matches!(source, ScoreSource::Mixture(_));
    if let (Some(limit), true) = (gpu.tuning().loop_limit, in_one_invocation) {
        let score = score_loop_iterations(source, fused_particles);
        if score > limit / 2 {
            return Err(Error::invalid(
                "score source",
                format!(
                    "one score evaluation loops about {score} times per particle, more than this adapter runs in \
                     one invocation ({} of its {limit}-iteration loop budget: {}); use a mixture of fewer \
                     components or a GPU driver without that limit",
                    limit / 2,
                    gpu.adapter_info().name
                ),
            ));
        }
        if fused {
            let fit = (limit / 2 / fused_step_loop_iterations(source, fused_particles)).max(1);
            config.steps_per_dispatch = config.steps_per_dispatch.min(fit);
        }
    }
    Ok(())
}

/// About how many loop iterations one step of sample.wgsl's `fused` entry runs per invocation
/// of `ppi` particles: the score and each particle's update (and zeroed score).
fn fused_step_loop_iterations(source: &ScoreSource<'_>, ppi: usize) -> usize {
    let d = source.dim();
    ppi * (5 * d.div_ceil(4) + 1 + d) + score_loop_iterations(source, ppi)
}

/// About how many loop iterations one score evaluation runs per invocation of `ppi`
/// particles: the mixture's component loops (`mixture_score`, also the staged `score_mixture`;
/// one particle), or the network's embedding (per particle), dense-layer (shared by the
/// particles) and output loops.
fn score_loop_iterations(source: &ScoreSource<'_>, ppi: usize) -> usize {
    let d = source.dim();
    match source {
        ScoreSource::Mixture(m) => m.components() * (3 * d + 3) + 2 * d,
        ScoreSource::Network { model, .. } => {
            let dense: usize =
                model.shape.layers().iter().map(|l| l.fan_out.div_ceil(8) * (l.fan_in.div_ceil(4) + 1)).sum();
            model.shape.input_width().div_ceil(4) * (4 + 5 * ppi) + dense + ppi * (d + 1)
        }
    }
}

/// The fused kernel's view of a network up to 128 wide: each layer's W with rows padded to a
/// multiple of 4 in its own 64 KiB uniform window, then every bias in one more window; the
/// copies that fill them from the flat parameter buffer, recorded before each batch of sampling
/// dispatches.
fn weight_windows(gpu: &Gpu, shape: &MlpShape, src: &wgpu::Buffer) -> Result<PackedWeights> {
    let mut copies = Vec::new();
    let mut bias_at = MAX_FUSED_LAYERS as u64 * UNIFORM_WINDOW_BYTES;
    for (l, layer) in shape.layers().iter().enumerate() {
        let row = layer.fan_in.next_multiple_of(4) as u64 * 4;
        if layer.fan_out as u64 * row > UNIFORM_WINDOW_BYTES {
            return Err(Error::invalid("fused network", format!("layer {l} does not fit a 64 KiB window")));
        }
        let window = l as u64 * UNIFORM_WINDOW_BYTES;
        copies.extend(padded_rows(layer, window));
        copies.push((layer.b_offset as u64 * 4, bias_at, layer.fan_out as u64 * 4));
        bias_at += layer.fan_out as u64 * 4;
    }
    Ok(PackedWeights::windows(gpu, "scorefield.sample.weights", src, MAX_FUSED_LAYERS + 1, copies))
}

/// A wide network's weights for the fused kernel (`layer_start` in sample.wgsl): each layer's
/// W with rows padded to a multiple of 4, one after the other, then every bias, in one storage
/// buffer.
fn packed_weights(gpu: &Gpu, shape: &MlpShape, src: &wgpu::Buffer) -> PackedWeights {
    let mut copies = Vec::new();
    let mut at = 0;
    let layers = shape.layers();
    for layer in &layers {
        copies.extend(padded_rows(layer, at));
        at += layer.fan_out as u64 * layer.fan_in.next_multiple_of(4) as u64 * 4;
    }
    for layer in &layers {
        copies.push((layer.b_offset as u64 * 4, at, layer.fan_out as u64 * 4));
        at += layer.fan_out as u64 * 4;
    }
    PackedWeights::storage(gpu, "scorefield.sample.weights", src, at, copies)
}

/// The copies of a layer's W to `at` with each row padded to a multiple of 4 floats (one copy
/// where the rows need no padding).
fn padded_rows(layer: &Layer, at: u64) -> Vec<(u64, u64, u64)> {
    let w = layer.w_offset as u64 * 4;
    let row = layer.fan_in as u64 * 4;
    if layer.fan_in.is_multiple_of(4) {
        vec![(w, at, row * layer.fan_out as u64)]
    } else {
        let padded = layer.fan_in.next_multiple_of(4) as u64 * 4;
        (0..layer.fan_out as u64).map(|r| (w + r * row, at + r * padded, row)).collect()
    }
}
