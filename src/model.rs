//! ScoreMlp: the noise-conditional score network, its layer layout in one flat parameter buffer,
//! initialisation, and the recorded forward/backward passes over a batch.
//!
//! Input: x in R^d and the 2F = 32 features sin(c w_k), cos(c w_k) of a conditioning scalar c
//! (log sigma for VE/NCSN objectives, t for VP/DDPM), with F = 16 fixed frequencies
//! w_k ~ N(0, 16^2) drawn at initialisation (../shared/WORKLOADS.md). Then `hidden_layers`
//! dense layers of `width` with SiLU and a linear layer to R^d.
//!
//! The residual network (`MlpShape::residual`) feeds the embedding e to every layer, not only the
//! first, and adds a skip connection around every hidden layer but the first:
//!   h_0 = silu(W_0 [x, e] + b_0),  h_l = h_{l-1} + silu(W_l [h_{l-1}, e] + b_l),
//!   output = W_H [h_{H-1}, e] + b_H.
//! W_l [h, e] is W_l's h columns times h plus a learned projection of the embedding, the way
//! DDPM's ResNet blocks add a projected time embedding to every block (Ho et al. 2020, and
//! score_sde's ncsnpp `ResnetBlockDDPM`: `h += Dense(temb)`); issue #20's JAX model that generates
//! digits is this MLP. Each hidden row stores [h, e], so the next layer's input is one row.
//!
//! A class-conditional network (`MlpShape::classes` = C > 0) appends the one-hot code of a label
//! to the embedding: e = [sin, cos, onehot(label)], all zeros for "no class", so a column of
//! W_l per class is a learned class embedding added at every layer that reads e, and one network
//! learns the conditional and the unconditional score (Ho & Salimans 2022, classifier-free
//! guidance: the label is dropped with probability p in training; the zero code stands for their
//! null token, its embedding being the layer's bias). The code takes `classes` rounded up to a
//! multiple of 4 columns (`MlpShape::class_columns`), the extra ones always zero with zero
//! weights, so that a conditional network's rows are whole vec4s like an unconditional one's:
//! the dense kernels read a row a vec4 at a time only then (digits: 256 + 32 + 10 = 298 floats
//! would be read a float at a time). Checkpoints hold the `classes` columns only (`Layer::inputs`).
//!
//! The network's output is
//! sigma * score (score parametrisation) or the predicted noise (eps parametrisation); the
//! division by sigma happens where a score is needed, not inside the network.

use crate::error::{Error, Result};
use crate::gpu::{uniform_window, Bound, DenseKernel, Gpu, GpuBuffer, PackedWeights, Tuning, UNIFORM_WINDOW_BYTES};
use crate::objective::kernels::binding as embed;
use crate::rng::{self, Stream};
use crate::sample::{pre_rows, train_rows, train_rows_fit, TrainBuffers, TrainRows};
use crate::shaders;

/// Fourier frequencies of the noise embedding; the embedding has twice as many features.
pub const EMBED_FREQS: usize = 16;
/// Standard deviation of the embedding frequencies.
pub const EMBED_STD: f64 = 16.0;

/// Most classes of a class-conditional network (each is an input column of every layer).
pub const MAX_CLASSES: usize = 1024;

/// More parameters than any network this engine trains (1 GiB of f32 each for the weights, EMA
/// and two Adam moments): refused before anything is allocated.
pub const MAX_PARAMS: usize = 1 << 28;

/// The network's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Data dimension d.
    pub dim: usize,
    /// Number of hidden (SiLU) layers H.
    pub hidden_layers: usize,
    /// Width W of the hidden layers.
    pub width: usize,
    /// The embedding fed to every layer and skip connections around the hidden layers (see the
    /// module docs); false: the embedding enters the first layer only, no skips.
    pub residual: bool,
    /// Classes of a class-conditional network (0: unconditional): the input row ends with the
    /// label's one-hot code, all zeros for "no class" (see the module docs).
    pub classes: usize,
}

/// One dense layer's place in the flat parameter buffer: W is [fan_out, fan_in] row-major at
/// `w_offset` (PyTorch's `nn.Linear.weight` layout), b at `b_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub fan_in: usize,
    /// The columns of a row that carry data: `fan_in` less the class code's zero padding (see
    /// the module docs), the `nn.Linear` fan_in a checkpoint stores. The rest of a row is zeros.
    pub inputs: usize,
    pub fan_out: usize,
    pub w_offset: usize,
    pub b_offset: usize,
}

impl Layer {
    /// Whether flat parameter `p` is one of this layer's padding weights: a W column past
    /// `inputs` (the class code's zero columns, see the module docs).
    pub fn is_padding(&self, p: usize) -> bool {
        p >= self.w_offset && p < self.b_offset && (p - self.w_offset) % self.fan_in >= self.inputs
    }
}

impl MlpShape {
    /// A plain network: the embedding enters the first layer only.
    pub const fn new(dim: usize, hidden_layers: usize, width: usize) -> Self {
        Self { dim, hidden_layers, width, residual: false, classes: 0 }
    }

    /// The same shape, residual or plain.
    pub const fn with_residual(self, residual: bool) -> Self {
        Self { residual, ..self }
    }

    /// The same shape, conditioned on one of `classes` labels (0: unconditional).
    pub const fn with_classes(self, classes: usize) -> Self {
        Self { classes, ..self }
    }

    /// The class code's columns: `classes` rounded up to a multiple of 4, the columns past
    /// `classes` always zero (see the module docs).
    pub fn class_columns(&self) -> usize {
        self.classes.next_multiple_of(4)
    }

    /// The conditioning columns after x in an input row: the noise embedding, then the class
    /// code.
    pub fn conditioning(&self) -> usize {
        2 * EMBED_FREQS + self.class_columns()
    }

    pub fn input_width(&self) -> usize {
        self.dim + self.conditioning()
    }

    /// The conditioning columns each hidden row carries after its activations (the next
    /// layer's input is [h, e]): all of them for the residual network, none for the plain one.
    pub fn carried(&self) -> usize {
        if self.residual {
            self.conditioning()
        } else {
            0
        }
    }

    /// Row width of a hidden layer's stored activations [h, e] (the next layer's fan_in).
    pub fn hidden_row(&self) -> usize {
        self.width + self.carried()
    }

    /// Whether hidden layer `l` adds its input (a skip connection): every one but the first,
    /// in the residual network.
    pub fn skips(&self, l: usize) -> bool {
        self.residual && l >= 1 && l < self.hidden_layers
    }

    /// Checks the shape is usable.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.hidden_layers == 0 || self.width == 0 {
            return Err(Error::invalid(
                "model shape",
                format!("dim, hidden_layers and width must all be at least 1 (got {self:?})"),
            ));
        }
        if self.classes > MAX_CLASSES {
            return Err(Error::invalid(
                "model shape",
                format!("{} classes is more than the {MAX_CLASSES} a conditional network takes", self.classes),
            ));
        }
        // Bounded before param_count() multiplies (u128 cannot overflow here).
        let size = (self.input_width() as u128 + self.dim as u128 + self.hidden_row() as u128 + 1)
            * (self.width as u128 + 1)
            * (self.hidden_layers as u128 + 1);
        if size > MAX_PARAMS as u128 {
            return Err(Error::invalid(
                "model shape",
                format!("{self:?} has more than {MAX_PARAMS} parameters: lower the width or hidden_layers"),
            ));
        }
        Ok(())
    }

    /// The layout table: `hidden_layers + 1` layers, weights then bias for each, in order. A
    /// layer above the first reads [h, e] (`hidden_row` columns; h alone in the plain network).
    pub fn layers(&self) -> Vec<Layer> {
        let fan_outs = std::iter::repeat_n(self.width, self.hidden_layers).chain([self.dim]);
        let padding = self.class_columns() - self.classes;
        let (mut fan_in, mut inputs) = (self.input_width(), self.input_width() - padding);
        let mut offset = 0;
        fan_outs
            .map(|fan_out| {
                let layer = Layer { fan_in, inputs, fan_out, w_offset: offset, b_offset: offset + fan_in * fan_out };
                offset += fan_in * fan_out + fan_out;
                fan_in = self.hidden_row();
                inputs = fan_in - if self.residual { padding } else { 0 };
                layer
            })
            .collect()
    }

    pub fn param_count(&self) -> usize {
        self.layers().last().map(|l| l.b_offset + l.fan_out).unwrap_or(0)
    }

    /// FLOP of one forward pass of one example (2 per multiply-add).
    pub fn forward_flop(&self) -> f64 {
        self.layers().iter().map(|l| 2.0 * (l.fan_in * l.fan_out) as f64).sum()
    }
}

/// Initial parameters and embedding frequencies for `seed`: weights and biases uniform in
/// (-1/sqrt(fan_in), 1/sqrt(fan_in)) from u32 number p of stream `Init.at(0)` for parameter p
/// (fan_in: the layer's `inputs`; the class code's padding columns get zero weights, which stay
/// zero since their inputs are); frequencies 16 * normal k of stream `Init.at(1)`.
pub fn init_params(shape: &MlpShape, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut params = vec![0.0f32; shape.param_count()];
    for layer in shape.layers() {
        let bound = 1.0 / (layer.inputs as f64).sqrt();
        let end = layer.b_offset + layer.fan_out;
        for (p, value) in params.iter_mut().enumerate().take(end).skip(layer.w_offset) {
            let u = rng::uniform_at(seed, Stream::Init.at(0), p as u64) as f64;
            *value = if layer.is_padding(p) { 0.0 } else { (bound * (2.0 * u - 1.0)) as f32 };
        }
    }
    let freqs = rng::normals(seed, Stream::Init.at(1), 0, EMBED_FREQS).iter().map(|z| (EMBED_STD * z) as f32).collect();
    (params, freqs)
}

/// The network on the device: parameters, their EMA, and the embedding frequencies.
pub struct ScoreMlp {
    pub shape: MlpShape,
    pub params: GpuBuffer<f32>,
    pub ema: GpuBuffer<f32>,
    pub freqs: GpuBuffer<f32>,
}

impl ScoreMlp {
    /// A freshly initialised network (see [`init_params`]); the EMA starts equal to it.
    pub fn new(gpu: &Gpu, shape: MlpShape, seed: u64) -> Result<Self> {
        shape.validate()?;
        let (params, freqs) = init_params(&shape, seed);
        Self::from_values(gpu, shape, &params, &params, &freqs)
    }

    /// The network a checkpoint holds: its weights, EMA and embedding frequencies.
    pub fn from_checkpoint(gpu: &Gpu, ckpt: &crate::checkpoint::Checkpoint) -> Result<Self> {
        Self::from_values(gpu, ckpt.shape, &ckpt.params, &ckpt.ema, &ckpt.freqs)
    }

    /// A network with given values (e.g. from a checkpoint).
    pub fn from_values(gpu: &Gpu, shape: MlpShape, params: &[f32], ema: &[f32], freqs: &[f32]) -> Result<Self> {
        shape.validate()?;
        let n = shape.param_count();
        if params.len() != n || ema.len() != n || freqs.len() != EMBED_FREQS {
            return Err(Error::invalid(
                "model values",
                format!(
                    "shape {shape:?} needs {n} parameters and {EMBED_FREQS} frequencies, got {}, {} (EMA) and {}",
                    params.len(),
                    ema.len(),
                    freqs.len()
                ),
            ));
        }
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            shape,
            // Whole vec4s: Adam (adam.wgsl) updates them four parameters at a time.
            params: GpuBuffer::from_slice_vec4s(gpu, "scorefield.model.params", params, none)?,
            ema: GpuBuffer::from_slice_vec4s(gpu, "scorefield.model.ema", ema, none)?,
            freqs: GpuBuffer::from_slice(gpu, "scorefield.model.freqs", freqs, none)?,
        })
    }
}

/// Which weights a pass reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    Raw,
    Ema,
}

/// Per-layer activations of a set of rows: the network input, each layer's pre-activation z and
/// stored hidden row (hidden layers: h, and for the residual network the carried embedding, so
/// [h, e]), and, when training, dL/dz of each layer. Tangent rows (forward-mode directions, see
/// mlp.wgsl) hold z', h' = silu'(z) z' and dL/dz' in the same places. When training, `dpost`
/// holds dL/dh of each hidden layer where something reads it: the second-order term of tangent
/// rows, and the skip connections of the residual network.
pub(crate) struct Activations {
    pub input: GpuBuffer<f32>,
    pub pre: Vec<GpuBuffer<f32>>,
    pub post: Vec<GpuBuffer<f32>>,
    pub dpre: Vec<GpuBuffer<f32>>,
    pub dpost: Vec<GpuBuffer<f32>>,
}

impl Activations {
    fn new(gpu: &Gpu, shape: &MlpShape, rows: usize, training: bool, tangent: bool) -> Result<Self> {
        let layers = shape.layers();
        let kind = if tangent { "tangent" } else { "primal" };
        let label = |what: &str| format!("scorefield.mlp.{kind}.{what}");
        let buf = |what: &str, len: usize| GpuBuffer::<f32>::new(gpu, &label(what), len, wgpu::BufferUsages::empty());
        // Chunked passes read layer inputs and dL/dz in 64 KiB uniform windows, the last of
        // which may run past the rows: those buffers carry one window of slack.
        let windowed = |what: &str, len: usize| {
            GpuBuffer::<f32>::new(gpu, &label(what), len + WINDOW_FLOATS, wgpu::BufferUsages::UNIFORM)
        };
        let hidden = &layers[..layers.len() - 1];
        // The hidden layers' z holds whole blocks of the fused training kernels' rows (their
        // layout, `pre_rows`); the output layer's, exactly the rows.
        let pre_len = |l: usize| match l < hidden.len() {
            true => pre_rows(gpu, rows) * layers[l].fan_out,
            false => rows * layers[l].fan_out,
        };
        Ok(Self {
            input: windowed("input", rows * layers[0].fan_in)?,
            // VERTEX: the network output can be drawn straight from here (`Evaluator::output`).
            pre: (0..layers.len())
                .map(|l| GpuBuffer::<f32>::new(gpu, &label("pre"), pre_len(l), wgpu::BufferUsages::VERTEX))
                .collect::<Result<_>>()?,
            post: hidden.iter().map(|_| windowed("post", rows * shape.hidden_row())).collect::<Result<_>>()?,
            dpre: match training {
                true => layers.iter().map(|l| windowed("dpre", rows * l.fan_out)).collect::<Result<_>>()?,
                false => Vec::new(),
            },
            dpost: match training && (tangent || shape.residual) {
                true => hidden.iter().map(|l| buf("dpost", rows * l.fan_out)).collect::<Result<_>>()?,
                false => Vec::new(),
            },
        })
    }

    /// The input of layer `l`: the network input or the activations below.
    fn layer_input(&self, l: usize) -> &GpuBuffer<f32> {
        if l == 0 {
            &self.input
        } else {
            &self.post[l - 1]
        }
    }
}

/// A bound dense-layer kernel and its grid.
type Dispatch = (Bound, [u32; 2]);

/// The dense-layer dispatches of one batch size, with their bind groups, built once; with
/// tangents, also the forward-mode rows that carry input directions and, when training, the
/// reverse pass through them (second order).
pub(crate) struct MlpPass {
    pub acts: Activations,
    tangent: Option<Activations>,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    // Bound where a mode does not use a binding; kept alive with the bind groups.
    _dummy_read: GpuBuffer<f32>,
    _dummy_write: GpuBuffer<f32>,
    /// The weights' uniform windows (layer l's W in window l, where the layer is windowed).
    windows: PackedWeights,
    /// The kernel its dense layers run on, and how it was chosen.
    pub dense: DenseChoice,
    /// A training pass's forward and input gradients on the fused network kernel, where they
    /// run there (`Tuning::fused_training`); `forward` is then empty and `backward` holds the
    /// weight gradients only.
    fused_rows: Option<TrainRows>,
}

/// The dense kernel of a pass, with the forward timings it was chosen by when it was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseChoice {
    pub kernel: DenseKernel,
    /// How the kernels did on this network, where the choice was measured.
    pub measured: Option<DenseMeasurement>,
}

/// The two dense kernels on one network's forward pass over the same input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseMeasurement {
    /// Seconds of one forward pass, the best of the alternated runs.
    pub block: f64,
    pub subgroup: f64,
    /// Whether their outputs agreed (as they must: the same FMA chains). Where they do not (a
    /// device that maps a workgroup's invocations to subgroup lanes otherwise than the kernel
    /// assumes), the block kernel is kept whatever the timings.
    pub agree: bool,
}

impl DenseChoice {
    /// "subgroup kernel (measured: block 12.3 ms, subgroup 6.5 ms per forward)", or "block
    /// kernel" where it was not measured.
    pub fn describe(&self) -> String {
        match self.measured {
            Some(m) => format!(
                "{} kernel (measured: block {:.1} ms, subgroup {:.1} ms per forward{})",
                self.kernel.name(),
                m.block * 1e3,
                m.subgroup * 1e3,
                if m.agree { "" } else { "; the subgroup kernel's outputs differed, so it is not used" }
            ),
            None => format!("{} kernel", self.kernel.name()),
        }
    }
}

/// Whether two kernels' outputs are the same numbers (a zero's sign aside; NaN where both have
/// one, as neither kernel makes one from finite input).
pub fn same_outputs(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

/// Rows of the forward passes that time the dense kernels (`Tuning::measure_dense`): with
/// chunked operands, the same chunks the run dispatches, so timing all of a large batch would
/// tell nothing more.
const MEASURE_ROWS: usize = 1024;
/// Forward passes per kernel, alternated; the best counts (the least disturbed by other load).
const MEASURE_ROUNDS: usize = 3;

/// Bytes of one uniform window (`wwin`, `awin` in mlp.wgsl).
const WINDOW_BYTES: u64 = UNIFORM_WINDOW_BYTES;
const WINDOW_FLOATS: usize = WINDOW_BYTES as usize / 4;

/// shaders/mlp.wgsl's bindings; what each operand is depends on the mode (see there).
pub mod binding {
    crate::bindings!(
        LHS = 0,
        RHS = 1,
        AUX = 2,
        OUT0 = 3,
        OUT1 = 4,
        WWIN = 5,
        AWIN = 6,
        SKIP = 7,
        WWIN1 = 8,
        AWIN1 = 9,
        WWIN2 = 10,
        AWIN2 = 11,
        WWIN3 = 12,
        AWIN3 = 13,
        LHS4 = 14,
        RHS4 = 15,
        WWIN4 = 16,
        AWIN4 = 17,
        WWIN5 = 18,
        AWIN5 = 19,
        WWIN6 = 20,
        AWIN6 = 21,
    );
}

/// Batch rows per chunk when operands `windowed` floats wide (per row) go through 64 KiB uniform
/// windows and buffers `bound` floats wide are bound at each chunk's first row: the largest power
/// of two whose rows fit a window, if every chunk then starts at an offset the device allows.
/// None where the adapter's tuning reads operands from storage in one dispatch.
fn chunk_rows(gpu: &Gpu, windowed: &[usize], bound: &[usize]) -> Option<usize> {
    if !gpu.tuning().chunked_operands {
        return None;
    }
    let widest = windowed.iter().copied().max()?;
    if widest == 0 || widest > WINDOW_FLOATS {
        return None;
    }
    let rows = 1usize << (WINDOW_FLOATS / widest).ilog2();
    let limits = gpu.limits();
    let align = limits.min_uniform_buffer_offset_alignment.max(limits.min_storage_buffer_offset_alignment) as usize / 4;
    windowed.iter().chain(bound).all(|w| (rows * w).is_multiple_of(align)).then_some(rows)
}

/// Fewest batch rows per chunk of a chunked weight gradient; a layer whose chunks would be
/// shorter (either side wider than 128: W2's 512-wide layers took 32-row chunks, 32 dispatches
/// of 512 small workgroups per layer and step) sums every row from storage in one dispatch.
/// Measured on W2 on llvmpipe, alternated: 0.60-1.22 s per 5 steps (median 0.84) against
/// 0.82-1.17 (median 0.97) chunked (BENCHMARKS.md, session 17). The sum then runs over the
/// batch in one chain, as with storage operands.
const MIN_WEIGHT_CHUNK_ROWS: usize = 128;

/// The chunk's elements `(start, len)` of a per-row buffer, or all of it without chunking.
fn rows_binding(buffer: &GpuBuffer<f32>, chunk: Option<(usize, usize)>) -> wgpu::BindingResource<'_> {
    match chunk {
        Some((start, len)) => buffer.range_binding(start, len),
        None => buffer.binding(),
    }
}

/// (first row, rows) of each chunk of `rows` rows: one chunk of all of them without chunking.
fn row_chunks(rows: usize, chunk: Option<usize>) -> Vec<(usize, usize)> {
    match chunk {
        Some(c) => (0..rows.div_ceil(c)).map(|i| (i * c, c.min(rows - i * c))).collect(),
        None => vec![(0, rows)],
    }
}

/// Consecutive chunks of equal length, up to `windows` at a time: the chunks each weight-gradient
/// dispatch sums. The first group of a run of equal chunks takes the remainder and the others
/// `windows` each (W1's 32 chunks per layer: 4, 7, 7, 7, 7), so a layer's dispatches are two
/// pipelines, the first one's (which stores its sums) and the rest's (which add theirs): each
/// pipeline of seven windows takes llvmpipe several seconds to compile.
fn chunk_groups(chunks: &[(usize, usize)], windows: usize) -> Vec<Vec<(usize, usize)>> {
    let mut groups = Vec::new();
    for run in chunks.chunk_by(|a, b| a.1 == b.1) {
        let first = match run.len() % windows {
            0 => windows.min(run.len()),
            rest => rest,
        };
        groups.push(run[..first].to_vec());
        groups.extend(run[first..].chunks(windows).map(<[_]>::to_vec));
    }
    groups
}

/// mlp.wgsl's MODE codes.
pub const MODE_FORWARD: u32 = 0;
pub const MODE_BACKWARD_INPUT: u32 = 1;
pub const MODE_BACKWARD_WEIGHT: u32 = 2;
/// Rows of C per workgroup of the dense-layer kernel when C is wider than 8 columns; a narrower
/// C has more (`matmul_workgroup`), so this bounds the workgroups a batch needs.
const MATMUL_ROWS: usize = 64;
/// Invocations per workgroup of `second_order` in mlp.wgsl.
const SECOND_ORDER_WG: u32 = 64;

/// Invocations [x, y] of a dense-layer workgroup (WG_X, WG_Y in mlp.wgsl), each computing an
/// 8 x 8 block of C [m, n]: 8 x 8 (a 64 x 64 tile) for wide C, and for narrow C as many along
/// the columns as they fill, the rest along the rows. The d = 2 output layer of W1 then
/// computes 8 columns per row where a 64 x 64 tile computed 64 (half a hidden layer's work for
/// 2 columns); the weight gradient of its 2-row W, 8 rows instead of 64.
fn matmul_workgroup(m: usize, n: usize) -> [usize; 2] {
    let x = n.div_ceil(8).next_power_of_two().min(8);
    let y = m.div_ceil(8).next_power_of_two().min(64 / x);
    [x, y]
}

fn matmul_grid(m: usize, n: usize) -> [u32; 2] {
    let [x, y] = matmul_workgroup(m, n);
    [n.div_ceil(8 * x) as u32, m.div_ceil(8 * y) as u32]
}

/// Rows of C per workgroup of mlp_subgroup.wgsl (8 lanes, 4 rows each).
const SUBGROUP_ROWS: usize = 32;

/// Columns of C per workgroup of mlp_subgroup.wgsl (COLS): 16, or 4 or 8 for a narrower C (the
/// d = 2 output layer of W1 computes 4 columns, not 16).
fn subgroup_cols(n: usize) -> usize {
    n.next_multiple_of(4).next_power_of_two().min(16)
}

/// Weight-gradient chunks one dispatch of the subgroup kernel sums (WINDOWS in
/// mlp_subgroup.wgsl), as many as its uniform buffers allow: W1's 4096 rows took 32 dispatches
/// per layer of 128-row chunks, each costing 35-300 microseconds on llvmpipe besides its work,
/// by the machine's hour (BENCHMARKS.md, sessions 18, 20 and 22); with seven, 5 per layer.
const WEIGHT_GRADIENT_WINDOWS: usize = 7;

/// Where the dense kernel takes several weight-gradient chunks per dispatch (the subgroup
/// kernel), how many; else 1.
fn weight_gradient_windows(gpu: &Gpu) -> usize {
    match gpu.tuning().dense {
        DenseKernel::Subgroup => WEIGHT_GRADIENT_WINDOWS,
        DenseKernel::Block => 1,
    }
}

/// A side of a pass: its activations, its rows, and the tangent directions per primal row (0 for
/// the primal rows).
type Side<'a> = (&'a Activations, usize, usize);

/// What every dense-layer dispatch of a pass binds besides its own rows: the weights, their
/// uniform windows, and the placeholders for bindings a mode does not use.
struct LayerBindings<'a> {
    gpu: &'a Gpu,
    shape: &'a MlpShape,
    layers: &'a [Layer],
    w: &'a GpuBuffer<f32>,
    windows: &'a wgpu::Buffer,
    dummy_read: &'a GpuBuffer<f32>,
    dummy_write: &'a GpuBuffer<f32>,
}

/// Whether a layer's W fits a 64 KiB uniform window.
fn windowed(layer: &Layer) -> bool {
    (layer.fan_in * layer.fan_out * 4) as u64 <= WINDOW_BYTES
}

impl LayerBindings<'_> {
    /// One dense-layer dispatch: C is [m, n] with a k-long reduction (see dense.wgsl), by the
    /// device's dense kernel; by the block kernel where the subgroup kernel's grid would be too
    /// tall. `chunks`: the (input, dL/dz) windows of the weight gradient's chunks after the first,
    /// where one dispatch sums several (`weight_gradient_windows`); the subgroup kernel's windows
    /// a dispatch does not read get window 0, and its vec4 operands (LHS4, RHS4) the placeholder
    /// where it reads floats.
    async fn dense(
        &self,
        variant: Variant,
        [m, n, k]: [usize; 3],
        layer: &Layer,
        entries: &[(u32, wgpu::BindingResource<'_>)],
        chunks: &[(wgpu::BindingResource<'_>, wgpu::BindingResource<'_>)],
    ) -> Result<Dispatch> {
        let gpu = self.gpu;
        let mut constants = shape_constants(variant, m, n, k, layer).to_vec();
        let mut entries = entries.to_vec();
        let rows_fit = m.div_ceil(SUBGROUP_ROWS) <= gpu.limits().max_compute_workgroups_per_dimension as usize;
        let (kernel, entry, grid) = if gpu.tuning().dense == DenseKernel::Subgroup && rows_fit {
            let cols = subgroup_cols(n);
            // The weight gradient reads its operands a vec4 at a time where its rows are whole
            // vec4s: from the chunks' windows, or from storage through the same buffers bound
            // again as vec4 arrays.
            let vec4 = variant.mode == MODE_BACKWARD_WEIGHT && m.is_multiple_of(4) && n.is_multiple_of(4);
            let bound = |b: u32| entries.iter().find(|(at, _)| *at == b).map(|(_, r)| r.clone());
            let (lhs4, rhs4) = match (vec4 && !variant.window, bound(binding::LHS), bound(binding::RHS)) {
                (true, Some(lhs), Some(rhs)) => (lhs, rhs),
                _ => (self.dummy_read.binding(), self.dummy_read.binding()),
            };
            entries.extend([(binding::LHS4, lhs4), (binding::RHS4, rhs4)]);
            constants.extend([
                ("COLS", cols as f64),
                ("WINDOWS", (1 + chunks.len()) as f64),
                ("VEC4", if vec4 { 1.0 } else { 0.0 }),
            ]);
            for (i, binding) in
                [binding::WWIN1, binding::WWIN2, binding::WWIN3, binding::WWIN4, binding::WWIN5, binding::WWIN6]
                    .into_iter()
                    .enumerate()
            {
                let (b, a) = chunks.get(i).cloned().unwrap_or((self.window(0), self.window(0)));
                entries.extend([(binding, b), (binding + 1, a)]);
            }
            // Several chunks per dispatch are an entry point of their own (mlp_subgroup.wgsl).
            let entry = if chunks.is_empty() { "main" } else { "chunks" };
            (&shaders::MLP_SUBGROUP, entry, [n.div_ceil(cols) as u32, m.div_ceil(SUBGROUP_ROWS) as u32])
        } else {
            if !chunks.is_empty() {
                return Err(Error::Internal(
                    "the block dense kernel sums one weight-gradient chunk per dispatch".into(),
                ));
            }
            let [wg_x, wg_y] = matmul_workgroup(m, n);
            constants.extend([("WG_X", wg_x as f64), ("WG_Y", wg_y as f64)]);
            (&shaders::MLP, "main", matmul_grid(m, n))
        };
        let pipeline = gpu.pipeline(kernel, entry, &constants).await?;
        let bg = pipeline.bind_group(gpu, &entries);
        Ok((Bound::new(pipeline, bg), grid))
    }

    /// Layer `l`'s weight window; layers too large for one read W from storage and get window
    /// 0 bound, unused.
    fn window(&self, l: usize) -> wgpu::BindingResource<'_> {
        uniform_window(self.windows, if windowed(&self.layers[l]) { l as u64 * WINDOW_BYTES } else { 0 })
    }

    /// The forward dispatches of every layer, primal rows then tangent rows per layer.
    async fn forward(&self, sides: &[Side<'_>], acts: &Activations) -> Result<Vec<Dispatch>> {
        let last = self.layers.len() - 1;
        let mut forward = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let (n, k) = (layer.fan_out, layer.fan_in);
            // A hidden row stores the layer's n activations and the carried embedding.
            let (act, carry) = (l < last, if l < last { self.shape.carried() } else { 0 });
            for &(side, rows, t) in sides {
                // Primal rows may run chunk by chunk with their input through uniform windows;
                // tangent rows read their primal rows' pre-activations by row, so stay whole.
                let chunk = if t == 0 { chunk_rows(self.gpu, &[k], &[n, n + carry]) } else { None };
                let variant = Variant {
                    mode: MODE_FORWARD,
                    act,
                    window: windowed(layer),
                    a_window: chunk.is_some(),
                    accumulate: false,
                    tangents: t,
                    carry,
                    skip: self.shape.skips(l),
                    keep_dh: false,
                };
                let input = side.layer_input(l);
                for (start, len) in row_chunks(rows, chunk) {
                    let rows_of = |b, width: usize| rows_binding(b, chunk.map(|_| (start * width, len * width)));
                    // Tangent rows read the primal pre-activations of their layer for silu'(z).
                    let aux = if t > 0 { acts.pre[l].binding() } else { self.dummy_read.binding() };
                    let out1 = if act { rows_of(&side.post[l], n + carry) } else { self.dummy_write.binding() };
                    let a_window = match chunk {
                        Some(_) => uniform_window(input.raw(), (start * k * 4) as u64),
                        None => self.window(0),
                    };
                    let entries = [
                        (binding::LHS, input.binding()),
                        (binding::RHS, self.w.binding()),
                        (binding::AUX, aux),
                        (binding::OUT0, rows_of(&side.pre[l], n)),
                        (binding::OUT1, out1),
                        (binding::WWIN, self.window(l)),
                        (binding::AWIN, a_window),
                        (binding::SKIP, self.dummy_read.binding()),
                    ];
                    forward.push(self.dense(variant, [len, n, k], layer, &entries, &[]).await?);
                }
            }
        }
        Ok(forward)
    }

    /// The backward dispatches, top layer first: the weight gradients into `grads` over every
    /// side's rows, then, unless `input_gradients` is false (the fused kernel computes them), dL/dz
    /// of the layer below (and, with tangent rows, the second-order term).
    async fn backward(
        &self,
        sides: &[Side<'_>],
        acts: &Activations,
        tangent: Option<&Activations>,
        grads: &GpuBuffer<f32>,
        input_gradients: bool,
    ) -> Result<Vec<Dispatch>> {
        let (batch, tangents) = (sides[0].1, sides.get(1).map_or(0, |s| s.2));
        let mut backward = Vec::new();
        for (l, layer) in self.layers.iter().enumerate().rev() {
            // dL/dW and dL/db of layer l, summed over the primal rows and then the tangent
            // rows (no bias there): over all rows from storage, or chunk by chunk of `rows`
            // rows through uniform windows, adding up in a fixed order; from storage where the
            // chunks would be short (see MIN_WEIGHT_CHUNK_ROWS).
            let (m, n) = (layer.fan_out, layer.fan_in);
            let chunk = chunk_rows(self.gpu, &[m, n], &[]).filter(|&rows| rows >= MIN_WEIGHT_CHUNK_ROWS);
            let windows = if chunk.is_some() { weight_gradient_windows(self.gpu) } else { 1 };
            let mut first = true;
            for &(side, rows, t) in sides {
                let input = side.layer_input(l);
                let windows_at = |start: usize| match chunk {
                    Some(_) => (
                        uniform_window(input.raw(), (start * n * 4) as u64),
                        uniform_window(side.dpre[l].raw(), (start * m * 4) as u64),
                    ),
                    None => (self.window(0), self.window(0)),
                };
                for group in chunk_groups(&row_chunks(rows, chunk), windows) {
                    let (start, k) = group[0];
                    let variant = Variant {
                        mode: MODE_BACKWARD_WEIGHT,
                        window: chunk.is_some(),
                        a_window: chunk.is_some(),
                        accumulate: !first,
                        tangents: t,
                        ..Variant::default()
                    };
                    first = false;
                    let (b_win, a_win) = windows_at(start);
                    let later: Vec<_> = group[1..].iter().map(|&(start, _)| windows_at(start)).collect();
                    let entries = [
                        (binding::LHS, side.dpre[l].binding()),
                        (binding::RHS, input.binding()),
                        (binding::AUX, self.dummy_read.binding()),
                        (binding::OUT0, grads.binding()),
                        (binding::OUT1, self.dummy_write.binding()),
                        (binding::WWIN, b_win),
                        (binding::AWIN, a_win),
                        (binding::SKIP, self.dummy_read.binding()),
                    ];
                    backward.push(self.dense(variant, [m, n, k], layer, &entries, &later).await?);
                }
            }
            // dL/dz of layer l - 1 (the network input's gradient is not needed).
            if l == 0 || !input_gradients {
                continue;
            }
            // The gradient of the layer input's h columns (not of the carried embedding).
            let (carry, k) = (self.shape.carried(), layer.fan_out);
            let n = layer.fan_in - carry;
            // dL/dh below is kept for the second-order term (tangent rows) and for the
            // skip of the layer below; dL/dh of this layer passes down its own skip.
            let (skip, keep_dh) = (self.shape.skips(l), self.shape.skips(l - 1));
            for &(side, rows, t) in sides {
                // Chunked as the forward pass: primal rows only.
                let chunk = if t == 0 { chunk_rows(self.gpu, &[k], &[n]) } else { None };
                let variant = Variant {
                    mode: MODE_BACKWARD_INPUT,
                    window: windowed(layer),
                    a_window: chunk.is_some(),
                    tangents: t,
                    carry,
                    skip,
                    keep_dh,
                    ..Variant::default()
                };
                for (start, len) in row_chunks(rows, chunk) {
                    let rows_of = |b| rows_binding(b, chunk.map(|_| (start * n, len * n)));
                    let out1 = if t > 0 || keep_dh { rows_of(&side.dpost[l - 1]) } else { self.dummy_write.binding() };
                    let skip_in = if skip { rows_of(&side.dpost[l]) } else { self.dummy_read.binding() };
                    let a_window = match chunk {
                        Some(_) => uniform_window(side.dpre[l].raw(), (start * k * 4) as u64),
                        None => self.window(0),
                    };
                    let entries = [
                        (binding::LHS, side.dpre[l].binding()),
                        (binding::RHS, self.w.binding()),
                        (binding::AUX, rows_of(&acts.pre[l - 1])),
                        (binding::OUT0, rows_of(&side.dpre[l - 1])),
                        (binding::OUT1, out1),
                        (binding::WWIN, self.window(l)),
                        (binding::AWIN, a_window),
                        (binding::SKIP, skip_in),
                    ];
                    backward.push(self.dense(variant, [len, n, k], layer, &entries, &[]).await?);
                }
            }
            if let Some(tan) = tangent {
                let features = self.shape.width;
                let constants = [("M", batch as f64), ("N", features as f64), ("TANGENTS", tangents as f64)];
                let pipeline = self.gpu.pipeline(&shaders::MLP, "second_order", &constants).await?;
                let bg = pipeline.bind_group(
                    self.gpu,
                    &[
                        (binding::LHS, tan.pre[l - 1].binding()),
                        (binding::RHS, tan.dpost[l - 1].binding()),
                        (binding::AUX, acts.pre[l - 1].binding()),
                        (binding::OUT0, acts.dpre[l - 1].binding()),
                    ],
                );
                let grid = self.gpu.grid(((batch * features) as u32).div_ceil(SECOND_ORDER_WG));
                backward.push((Bound::new(pipeline, bg), grid));
            }
        }
        Ok(backward)
    }
}

impl MlpPass {
    /// Buffers and dispatches for `batch` rows through `model`'s `weights`, each with `tangents`
    /// forward-mode directions (0 for none); with `grads`, also the backward pass writing
    /// parameter gradients there.
    ///
    /// The dense kernel is the tuning's, or where it asks for a measurement and the device runs
    /// both, the faster at this network's forward pass (the kernels give the same results).
    pub async fn new(
        gpu: &Gpu,
        model: &ScoreMlp,
        weights: Weights,
        batch: usize,
        tangents: usize,
        grads: Option<&GpuBuffer<f32>>,
    ) -> Result<Self> {
        let tuning = gpu.tuning();
        let mut dense = DenseChoice { kernel: tuning.dense, measured: None };
        // The block kernel runs everywhere: a choice exists where the subgroup kernel runs too.
        if tuning.measure_dense && gpu.runs(DenseKernel::Subgroup) {
            let rows = batch.clamp(1, MEASURE_ROWS);
            // The same input rows for both, values in [-1, 1) (the embedding's range), so
            // their outputs can be compared.
            let width = model.shape.input_width();
            let input: Vec<f32> = (0..rows * width).map(|i| (i * 7919 % 2048) as f32 / 1024.0 - 1.0).collect();
            let mut passes = Vec::new();
            for kernel in [DenseKernel::Block, DenseKernel::Subgroup] {
                let fixed = DenseChoice { kernel, measured: None };
                let pass = Self::build(gpu, model, weights, rows, 0, None, fixed).await?;
                pass.acts.input.write(gpu, 0, &input);
                passes.push(pass);
            }
            let [block, subgroup] = time_forwards(gpu, &passes)?;
            let agree = same_outputs(&passes[0].output().read(gpu).await?, &passes[1].output().read(gpu).await?);
            let kernel = if agree && subgroup < block { DenseKernel::Subgroup } else { DenseKernel::Block };
            dense = DenseChoice { kernel, measured: Some(DenseMeasurement { block, subgroup, agree }) };
        }
        Self::build(gpu, model, weights, batch, tangents, grads, dense).await
    }

    /// [`MlpPass::new`] on a given dense kernel.
    async fn build(
        gpu: &Gpu,
        model: &ScoreMlp,
        weights: Weights,
        batch: usize,
        tangents: usize,
        grads: Option<&GpuBuffer<f32>>,
        dense: DenseChoice,
    ) -> Result<Self> {
        // The dispatches below read the kernel from the tuning.
        let gpu = &gpu.clone().with_tuning(Tuning { dense: dense.kernel, ..gpu.tuning() });
        let layers = model.shape.layers();
        let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
        let tangent_rows = batch.saturating_mul(tangents);
        if batch == 0 || batch.div_ceil(MATMUL_ROWS) > limit {
            return Err(Error::invalid(
                "batch size",
                format!(
                    "{batch} rows; this device allows 1 to {} per pass (64 rows per workgroup, and its \
                     max_compute_workgroups_per_dimension is {limit})",
                    limit * MATMUL_ROWS
                ),
            ));
        }
        if tangent_rows.div_ceil(MATMUL_ROWS) > limit {
            return Err(Error::invalid(
                "batch size",
                format!(
                    "{batch} rows x {tangents} tangent directions = {tangent_rows} rows; this device allows {} per \
                     pass (its max_compute_workgroups_per_dimension is {limit}): lower the batch or the number of \
                     projections",
                    limit * MATMUL_ROWS
                ),
            ));
        }
        let training = grads.is_some();
        let shape = &model.shape;
        let acts = Activations::new(gpu, shape, batch, training, false)?;
        let tangent = match tangents {
            0 => None,
            _ => Some(Activations::new(gpu, shape, tangent_rows, training, true)?),
        };
        let none = wgpu::BufferUsages::empty();
        // Four floats: the smallest a vec4 array binding (LHS4, RHS4) takes.
        let dummy_read = GpuBuffer::<f32>::new(gpu, "scorefield.mlp.unused_read", 4, none)?;
        let dummy_write = GpuBuffer::<f32>::new(gpu, "scorefield.mlp.unused_write", 1, none)?;
        let w = match weights {
            Weights::Raw => &model.params,
            Weights::Ema => &model.ema,
        };
        let copies: Vec<(u64, u64, u64)> = layers
            .iter()
            .enumerate()
            .filter(|(_, layer)| windowed(layer))
            .map(|(l, layer)| {
                (layer.w_offset as u64 * 4, l as u64 * WINDOW_BYTES, (layer.fan_in * layer.fan_out * 4) as u64)
            })
            .collect();
        let windows = PackedWeights::windows(gpu, "scorefield.mlp.weight_windows", w.raw(), layers.len(), copies);
        // The primal rows, then the tangent rows (rows, directions per primal row).
        let mut sides = vec![(&acts, batch, 0)];
        sides.extend(tangent.as_ref().map(|t| (t, tangent_rows, tangents)));
        let bindings = LayerBindings {
            gpu,
            shape,
            layers: &layers,
            w,
            windows: windows.buffer(),
            dummy_read: &dummy_read,
            dummy_write: &dummy_write,
        };
        // A training pass's rows through the fused network kernel where it applies; a pass with
        // tangent rows (exact and sliced score matching) keeps both sides on the dense kernels.
        let fused_rows = match grads {
            Some(_) if tangents == 0 && train_rows_fit(gpu, shape) => {
                let bufs = TrainBuffers { input: &acts.input, pre: &acts.pre, post: &acts.post, dpre: &acts.dpre };
                Some(train_rows(gpu, shape, w, bufs, batch).await?)
            }
            _ => None,
        };
        let forward = match fused_rows {
            Some(_) => Vec::new(),
            None => bindings.forward(&sides, &acts).await?,
        };
        let input_gradients = fused_rows.is_none();
        let backward = match grads {
            Some(grads) => bindings.backward(&sides, &acts, tangent.as_ref(), grads, input_gradients).await?,
            None => Vec::new(),
        };
        Ok(Self {
            acts,
            tangent,
            forward,
            backward,
            _dummy_read: dummy_read,
            _dummy_write: dummy_write,
            windows,
            dense,
            fused_rows,
        })
    }

    /// Whether the forward pass and the input gradients run on the fused network kernel
    /// (`Tuning::fused_training`).
    pub fn fused_rows(&self) -> bool {
        self.fused_rows.is_some()
    }

    /// The network output (sigma * score or predicted noise), [batch, d].
    pub fn output(&self) -> &GpuBuffer<f32> {
        self.acts.pre.last().expect("a network has at least one layer")
    }

    /// dL/d(output), [batch, d]: where the loss kernel writes.
    pub fn output_grad(&self) -> Option<&GpuBuffer<f32>> {
        self.acts.dpre.last()
    }

    /// The tangent rows' input [batch * T, input width]: direction v in the first d columns,
    /// zeros on the embedding.
    pub fn tangent_input(&self) -> Option<&GpuBuffer<f32>> {
        self.tangent.as_ref().map(|t| &t.input)
    }

    /// The tangent rows' output J v, [batch * T, d].
    pub fn tangent_output(&self) -> Option<&GpuBuffer<f32>> {
        self.tangent.as_ref().and_then(|t| t.pre.last())
    }

    /// dL/d(J v), [batch * T, d]: where the trace loss writes.
    pub fn tangent_output_grad(&self) -> Option<&GpuBuffer<f32>> {
        self.tangent.as_ref().and_then(|t| t.dpre.last())
    }

    /// Copies the current weights into their uniform windows: record it outside any pass,
    /// after the weights last changed and before the next forward or backward pass.
    pub fn record_weight_copies(&self, encoder: &mut wgpu::CommandEncoder) {
        self.windows.record(encoder);
        if let Some(fused) = &self.fused_rows {
            fused.weights.record(encoder);
        }
    }

    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(fused) = &self.fused_rows {
            fused.forward.dispatch(pass, fused.grid);
        }
        for (kernel, grid) in &self.forward {
            kernel.dispatch(pass, *grid);
        }
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        // Every layer's dL/dz first: the weight gradients read them.
        if let Some(fused) = &self.fused_rows {
            fused.backward.dispatch(pass, fused.grid);
        }
        for (kernel, grid) in &self.backward {
            kernel.dispatch(pass, *grid);
        }
    }
}

/// The best of [`MEASURE_ROUNDS`] forward passes of each pass, alternated, in seconds by the host
/// clock around a submit and its wait (the passes' weight windows filled once before, untimed).
fn time_forwards(gpu: &Gpu, passes: &[MlpPass]) -> Result<[f64; 2]> {
    let mut encoder = gpu.encoder("scorefield.mlp.measure_copies");
    for pass in passes {
        pass.record_weight_copies(&mut encoder);
    }
    gpu.wait(Some(gpu.submit(encoder)))?;
    let mut best = [f64::INFINITY; 2];
    for _ in 0..MEASURE_ROUNDS {
        for (pass, best) in passes.iter().zip(&mut best) {
            let mut encoder = gpu.encoder("scorefield.mlp.measure");
            {
                let mut compute = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("scorefield.mlp.measure"),
                    timestamp_writes: None,
                });
                pass.record_forward(&mut compute);
            }
            // Not reached in browsers (no `Instant` there): they run the block kernel only.
            let start = std::time::Instant::now();
            gpu.wait(Some(gpu.submit(encoder)))?;
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

/// How a dense-layer dispatch is specialised: the mode, the activation, whether W (or, for
/// the weight gradient, its input chunk) and the A operand's chunk come through uniform
/// windows, and whether a weight-gradient chunk adds to what earlier chunks wrote.
#[derive(Clone, Copy, Default)]
struct Variant {
    mode: u32,
    act: bool,
    window: bool,
    a_window: bool,
    accumulate: bool,
    /// Tangent directions per primal row when these are tangent rows, else 0.
    tangents: usize,
    /// The residual network's CARRY, SKIP and KEEP_DH (mlp.wgsl's header).
    carry: usize,
    skip: bool,
    keep_dh: bool,
}

/// The override constants dense.wgsl declares (the kernel's own shape constants come on top).
fn shape_constants(v: Variant, m: usize, n: usize, k: usize, layer: &Layer) -> [(&'static str, f64); 14] {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    [
        ("TANGENTS", v.tangents as f64),
        ("MODE", v.mode as f64),
        ("ACT", flag(v.act)),
        ("WIN", flag(v.window)),
        ("AWIN", flag(v.a_window)),
        ("ACCUM", flag(v.accumulate)),
        ("M", m as f64),
        ("N", n as f64),
        ("K", k as f64),
        ("OFF_W", layer.w_offset as f64),
        ("OFF_B", layer.b_offset as f64),
        ("CARRY", v.carry as f64),
        ("SKIP", flag(v.skip)),
        ("KEEP_DH", flag(v.keep_dh)),
    ]
}

/// Evaluates the network at given points and conditioning values, for score fields, pictures
/// and tests: embed, then forward, for up to `batch` rows at a time. A class-conditional
/// network is evaluated unconditionally (the "no class" code).
pub struct Evaluator {
    pass: MlpPass,
    embed: Bound,
    x: GpuBuffer<f32>,
    cond: GpuBuffer<f32>,
    batch: usize,
    dim: usize,
}

const WG_ROWS: u32 = 64;

impl Evaluator {
    pub async fn new(gpu: &Gpu, model: &ScoreMlp, weights: Weights, batch: usize) -> Result<Self> {
        let pass = MlpPass::new(gpu, model, weights, batch, 0, None).await?;
        let d = model.shape.dim;
        let none = wgpu::BufferUsages::empty();
        let x = GpuBuffer::new(gpu, "scorefield.eval.x", batch * d, none)?;
        let cond = GpuBuffer::new(gpu, "scorefield.eval.cond", batch, none)?;
        let constants = [
            ("D", d as f64),
            ("F", EMBED_FREQS as f64),
            ("CLASSES", model.shape.class_columns() as f64),
            ("B", batch as f64),
            ("WG", WG_ROWS as f64),
        ];
        let pipeline = gpu.pipeline(&shaders::OBJECTIVE, "embed", &constants).await?;
        let bg = pipeline.bind_group(
            gpu,
            &[
                (embed::FREQS, model.freqs.binding()),
                (embed::INPUT, pass.acts.input.binding()),
                (embed::X_EVAL, x.binding()),
                (embed::COND_EVAL, cond.binding()),
            ],
        );
        Ok(Self { pass, embed: Bound::new(pipeline, bg), x, cond, batch, dim: d })
    }

    /// The network output [n, d] at the points `x` [n, d] with conditioning values `cond` [n].
    pub async fn run(&self, gpu: &Gpu, x: &[f32], cond: &[f32]) -> Result<Vec<f32>> {
        let n = cond.len();
        if x.len() != n * self.dim {
            return Err(Error::invalid(
                "evaluation points",
                format!("{} floats for {n} rows of {}", x.len(), self.dim),
            ));
        }
        let mut out = Vec::with_capacity(x.len());
        for start in (0..n).step_by(self.batch) {
            let rows = (n - start).min(self.batch);
            self.set_points(gpu, &x[start * self.dim..(start + rows) * self.dim], &cond[start..start + rows])?;
            let mut encoder = gpu.encoder("scorefield.eval");
            self.record(gpu, &mut encoder);
            gpu.submit(encoder);
            out.extend(self.pass.output().read_range(gpu, 0, rows * self.dim).await?);
        }
        Ok(out)
    }

    /// Sets the points `x` [n, d] and conditioning values `cond` [n] (n <= the batch) that
    /// [`Evaluator::record`] evaluates; written before the next submit. Rows past n keep what
    /// they held.
    pub fn set_points(&self, gpu: &Gpu, x: &[f32], cond: &[f32]) -> Result<()> {
        let n = cond.len();
        if x.len() != n * self.dim || n > self.batch {
            return Err(Error::invalid(
                "evaluation points",
                format!("{} floats and {n} values for rows of {} (at most {} rows)", x.len(), self.dim, self.batch),
            ));
        }
        self.x.write(gpu, 0, x);
        self.cond.write(gpu, 0, cond);
        Ok(())
    }

    /// Records the evaluation of the points set into `encoder` (an application's own; it
    /// submits). Never waits. The result lands in [`Evaluator::output`]: for a score model, sigma
    /// times the score at each point, ready to draw (e.g. as arrows over a grid).
    pub fn record(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder) {
        self.pass.record_weight_copies(encoder);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("scorefield.eval"),
            timestamp_writes: None,
        });
        let grid = gpu.grid((self.batch as u32).div_ceil(WG_ROWS));
        self.embed.dispatch(&mut pass, grid);
        self.pass.record_forward(&mut pass);
    }

    /// The network's output for the points set: `batch` rows of d f32 (row-major; for d = 2
    /// one `Float32x2` vertex per row, stride 8 bytes). Usable as VERTEX, STORAGE and COPY_SRC,
    /// so an application draws it without a copy.
    pub fn output(&self) -> &wgpu::Buffer {
        self.pass.output().raw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group sizes, and that the groups hold every chunk once, in order.
    fn group_sizes(rows: usize, windows: usize) -> Vec<usize> {
        let chunks = row_chunks(rows, Some(128));
        let groups = chunk_groups(&chunks, windows);
        assert_eq!(groups.concat(), chunks, "{rows} rows, {windows} windows: the groups lose or reorder chunks");
        assert!(groups.iter().all(|g| g.iter().all(|c| c.1 == g[0].1)), "a group mixes chunk lengths");
        groups.iter().map(Vec::len).collect()
    }

    #[test]
    fn weight_gradient_chunk_groups_take_the_remainder_first() {
        assert_eq!(group_sizes(4096, 7), [4, 7, 7, 7, 7]);
        assert_eq!(group_sizes(9 * 128 + 50, 7), [2, 7, 1]);
        assert_eq!(group_sizes(14 * 128, 7), [7, 7]);
        assert_eq!(group_sizes(3 * 128, 7), [3]);
        assert_eq!(group_sizes(4096, 1), vec![1; 32]);
    }
}
