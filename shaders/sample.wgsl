// sample.wgsl: sampler steps over N particles, one invocation per particle. Composed after
// rng.wgsl, embed.wgsl and mixture.wgsl (the exact mixture score).
//
// Bindings (group 0), by entry point:
//   all:           0 uniform cursor: SampleCursor (seed; the schedule entries this dispatch runs)
//                  1 read schedule: array<SampleStep>     2 rw particles [N, D]
//   fused:         3 rw saved [N, D] (Heun)  5 read mixture (SOURCE 0)  7 read freqs (SOURCE 1)
//                  11-15 uniform weight windows, 16 uniform biases (SOURCE 1; see below)
//                  20 read net: packed weights and biases, 21 rw scratch: activations
//                  (SOURCE 1 with WIDE)
//   score_mixture: 4 rw score [N, D]  5 read mixture
//   embed:         7 read freqs  10 rw net_input [N or 2N, D + 2F + CLASSES]  19 read labels [N]
//   measure_norms: 4 rw score  8 rw norms [2N]
//   reduce_norms:  8 rw norms  9 rw norm_sum [2]
//   update:        3 rw saved  4 rw score  9 rw norm_sum (read only here)
//   impute:        17 read known [N, D]  18 read known_mask [N, D]
//
// Every sampler is a list of SampleSteps, built on the host (src/sample/method.rs). Step i
// evaluates the score s = s(x; a_i, sigma_i) of the noised density at the particle, draws
// z ~ N(0, I) and sets, elementwise,
//     x <- c_x x + c_s s + c_z z + c_p p,      and, if SAVE, p <- k_x x + k_s s
// with the coefficients of the step; p is a second register per particle (Heun's partial sum).
// A step with SNR > 0 is a Langevin corrector step (Song et al. 2021, score_sde `LangevinCorrector`):
//     eps = 2 alpha (snr |z| / |s|)^2 with |z|, |s| averaged over all particles,
//     x <- x + eps s + sqrt(2 eps) z,
// which couples the particles and so runs staged only (measure_norms, reduce_norms, update).
//
// The score comes from SOURCE:
//   0: a Gaussian mixture with diagonal covariances, exactly (mixture.wgsl).
//   1: the score MLP (src/model.rs layout): out_scale * net(x, cond), with out_scale = 1/sigma
//      (score parametrisation) or -1/sigma (eps parametrisation).
// Two paths give the same numbers (tests/sample.rs):
//   fused:  every step of cursor.first .. first + count in one dispatch, the particle in private
//           memory, the network evaluated per particle (D <= 64, W <= 512, W a multiple of 4,
//           at most 4 hidden layers); with a network, PPI particles per invocation
//           (PPI D <= MAX_D), which share each weight load and give the same numbers as one per
//           invocation;
//   staged: per step, score_mixture or embed + the dense-layer kernels (mlp.wgsl) write the
//           score (or network output) to `score`, then update applies it; for any D and width.
// A class-conditional network (CLASSES = C > 0, staged only) takes particle n's label as the
// one-hot code after the noise embedding (labels[n] >= C: no class, zeros). With classifier-free
// guidance (GUIDED, weight w = GUIDANCE; Ho & Salimans 2022, eq. 6) the network also evaluates
// every particle without its label, in rows N .. 2N, and the score is
//     (1 + w) s(x | label) - w s(x),
// combined from the network outputs (linear in them for either parametrisation).
// Noise of step i: normals mul_wide(n, ceil(D/4)) + j/4 of stream (step.stream), lane j % 4.

struct SampleStep {
    stream: vec2<u32>,   // Philox stream of this step's noise
    flags: u32,          // FLAG_SAVE | FLAG_NO_SCORE | FLAG_CLIP_X0 | FLAG_IMPUTE
    _pad: u32,
    a: f32,              // the noise level the score is evaluated at: x~ = a x + sigma eps
    sigma: f32,
    cond: f32,           // the network's conditioning value
    out_scale: f32,      // score = out_scale * network output (1 for the mixture)
    c_x: f32,
    c_s: f32,
    c_z: f32,
    c_p: f32,
    k_x: f32,
    k_s: f32,
    snr: f32,            // > 0: Langevin corrector step with this signal-to-noise ratio
    snr_alpha: f32,
}

struct SampleCursor {
    seed: vec2<u32>,
    first: u32,          // schedule index of the first step of this dispatch
    count: u32,          // steps in this dispatch (fused; staged dispatches run one)
}

const FLAG_SAVE: u32 = 1u;
const FLAG_NO_SCORE: u32 = 2u;
const FLAG_CLIP_X0: u32 = 4u;
const FLAG_IMPUTE: u32 = 8u;
const STREAM_SAMPLER_IMPUTE: u32 = 9u;
const MAX_D: u32 = 256u;     // private particle arrays: PPI particles of D (fused path, mixture scores)

override D: u32 = 2u;        // particle dimension
override N: u32 = 1u;        // particles
override SOURCE: u32 = 0u;   // 0 Gaussian mixture, 1 score MLP
override K: u32 = 1u;        // mixture components
override H: u32 = 1u;        // hidden layers of the network
override W: u32 = 1u;        // hidden width
override F: u32 = 16u;       // embedding frequencies (2F embedding features)
override WG: u32 = 64u;
// Particles per invocation of `fused` (1 to MAX_PPI; 1 with the mixture source). Particle
// n0 + q of an invocation keeps dimension j at x[q * D + j] and its activations at
// h[k * PPI + q].
override PPI: u32 = 1u;
// A network wider than 128 (or with an input wider than 128): weights from `net` instead of the
// uniform windows, activations in `scratch` instead of private arrays (see below).
override WIDE: bool = false;
override CLASSES: u32 = 0u;     // C: the class code's columns of a class-conditional network
override GUIDED: bool = false;  // rows N .. 2N hold the unconditional outputs
override GUIDANCE: f32 = 0.0;   // w
// `dense` multiplies by the transposes of the packed W, without biases: the input-gradient
// pass of training (train_rows.wgsl's `train_backward`), from the same packed weights, no
// transposed copy (see `transposed_blocks`).
override TRANSPOSE: bool = false;

@group(0) @binding(0) var<uniform> cursor: SampleCursor;
@group(0) @binding(1) var<storage, read> schedule: array<SampleStep>;
@group(0) @binding(2) var<storage, read_write> particles: array<f32>;
@group(0) @binding(3) var<storage, read_write> saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> score: array<f32>;
@group(0) @binding(5) var<storage, read> mixture: array<f32>;
@group(0) @binding(7) var<storage, read> freqs: array<f32>;
@group(0) @binding(8) var<storage, read_write> norms: array<f32>;
@group(0) @binding(9) var<storage, read_write> norm_sum: array<f32>;
@group(0) @binding(10) var<storage, read_write> net_input: array<f32>;
@group(0) @binding(17) var<storage, read> known: array<f32>;
@group(0) @binding(18) var<storage, read> known_mask: array<u32>;
@group(0) @binding(19) var<storage, read> labels: array<u32>;

fn particle_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The four normals of `stream` for particle n, dimensions j0 .. j0 + 3 (j0 a multiple of 4).
fn noise4(stream: vec2<u32>, n: u32, j0: u32) -> vec4<f32> {
    return normal4(cursor.seed, stream, add_u64(mul_wide(n, (D + 3u) / 4u), vec2<u32>(j0 / 4u, 0u)));
}

// The score stage's value for element j of particle n: the score (mixture) or the network
// output, combined with the unconditional one where guided.
fn staged_output(n: u32, j: u32) -> f32 {
    let own = score[n * D + j];
    if !GUIDED {
        return own;
    }
    return (1.0 + GUIDANCE) * own - GUIDANCE * score[(N + n) * D + j];
}

// The update of one element: (new x, new p).
fn update_elem(st: SampleStep, x: f32, s: f32, z: f32, p: f32) -> vec2<f32> {
    // c_x = 0 starts afresh: the old x may be anything, even NaN, and must not leak in.
    let xc = select(st.c_x * x, 0.0, st.c_x == 0.0);
    let pc = select(st.c_p * p, 0.0, st.c_p == 0.0);
    // FLAG_CLIP_X0: c_s multiplies the denoised estimate x0 = (x + sigma^2 s) / a (Tweedie),
    // clipped to the data range [-1, 1], instead of the score.
    var sc = s;
    if (st.flags & FLAG_CLIP_X0) != 0u {
        sc = clamp((x + st.sigma * st.sigma * s) / st.a, -1.0, 1.0);
    }
    let x_new = xc + st.c_s * sc + st.c_z * z + pc;
    return vec2<f32>(x_new, st.k_x * x + st.k_s * s);
}

// ---- the score MLP, one particle at a time (fused path) ---------------------------------------
//
// The weights are packed by the host (src/sample/fused.rs) from the flat parameter buffer: layer
// l's W [fan_out, round_up(fan_in, 4)] (zero-padded rows), then every bias. Every invocation
// reads the same weight at the same time: a broadcast on GPUs, and on llvmpipe the subgroup's
// lanes share the load (fused_rows_subgroup.wgsl). A network up to 128 wide reads them through
// uniform windows: W of layer l in window l, the biases in `biases`. A wider one (WIDE) reads
// them from `net`, W of layer l from vec4 layer_start(l), which measured 6-13% slower on W3 on
// llvmpipe but fits any width (BENCHMARKS.md, "The fused sampler for wide networks").

const WINDOW: u32 = 4096u;   // vec4s per 64 KiB uniform window
const MAX_LAYERS: u32 = 5u;  // fused networks have at most 4 hidden layers

@group(0) @binding(11) var<uniform> w0: array<vec4<f32>, WINDOW>;
@group(0) @binding(12) var<uniform> w1: array<vec4<f32>, WINDOW>;
@group(0) @binding(13) var<uniform> w2: array<vec4<f32>, WINDOW>;
@group(0) @binding(14) var<uniform> w3: array<vec4<f32>, WINDOW>;
@group(0) @binding(15) var<uniform> w4: array<vec4<f32>, WINDOW>;
@group(0) @binding(16) var<uniform> biases: array<vec4<f32>, WINDOW>;
@group(0) @binding(20) var<storage, read> net: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> scratch: array<vec4<f32>>;

// Where layer l's W starts in `net` (l = H: the output layer's; l = H + 1: the biases).
fn layer_start(l: u32) -> u32 {
    let first = W * ((D + 2u * F + 3u) / 4u);
    let hidden = W * (W / 4u);
    return select(0u, select(first + (l - 1u) * hidden, first + (H - 1u) * hidden + D * (W / 4u), l > H), l > 0u);
}

fn weight4(l: u32, i: u32) -> vec4<f32> {
    if WIDE {
        return net[layer_start(l) + i];
    }
    switch l {
        case 0u: { return w0[i]; }
        case 1u: { return w1[i]; }
        case 2u: { return w2[i]; }
        case 3u: { return w3[i]; }
        default: { return w4[i]; }
    }
}

// Layer l's inputs and outputs (the network's, not its transpose's).
fn layer_fan_in4(l: u32) -> u32 {
    return select(W / 4u, (D + 2u * F + 3u) / 4u, l == 0u);
}

fn layer_fan_out(l: u32) -> u32 {
    return select(W, D, l == H);
}

// How `dense` reads W^T (TRANSPOSE). A WIDE network's W, in storage, as 4 x 4 blocks of W^T:
// four vec4s of W's rows (`row_ats`), which `rows4` multiplies as columns. On llvmpipe every load
// from storage is a loop over the lanes, a vec4's four floats inside one, so gathering W^T's rows
// a float at a time made four loops per vec4 (W2's training backward 1.2x slower relative to its
// forward: BENCHMARKS.md, session 21). Through uniform windows a row of W^T is gathered a float
// at a time: there a vec4 load is four gathers anyway, and the blocks measured a little slower
// on W1.
fn transposed_blocks() -> bool {
    return TRANSPOSE && WIDE;
}

// Float i of layer l's W in its uniform window (a network that is not WIDE).
fn weight1(l: u32, i: u32) -> f32 {
    switch l {
        case 0u: { return w0[i / 4u][i % 4u]; }
        case 1u: { return w1[i / 4u][i % 4u]; }
        case 2u: { return w2[i / 4u][i % 4u]; }
        case 3u: { return w3[i / 4u][i % 4u]; }
        default: { return w4[i / 4u][i % 4u]; }
    }
}

// The vec4 of layer l's W that `dense` reads at input vec4 k for `at` (from `row_ats`): vec4 k
// of the W row whose first vec4 is `at`. With TRANSPOSE, zeros past W's last row, and from
// blocks, at = t (vec4s per W row) + c: the vec4 at column vec4 c of W's row 4 k + t; else at = a
// row of W^T (a column of W): its floats 4 k .. 4 k + 3.
fn weight_row4(l: u32, at: u32, k: u32) -> vec4<f32> {
    let last = layer_fan_out(l) - 1u;
    if transposed_blocks() {
        let stride = layer_fan_in4(l);
        let row = 4u * k + at / stride;
        let v = weight4(l, min(row, last) * stride + at % stride);
        return select(vec4<f32>(0.0), v, row <= last);
    }
    if TRANSPOSE {
        let stride = 4u * layer_fan_in4(l);
        let o = 4u * k + vec4<u32>(0u, 1u, 2u, 3u);
        let i = min(o, vec4<u32>(last)) * stride + at;
        let v = vec4<f32>(weight1(l, i.x), weight1(l, i.y), weight1(l, i.z), weight1(l, i.w));
        return select(vec4<f32>(0.0), v, o <= vec4<u32>(last));
    }
    return weight4(l, at + k);
}

// Outputs per block of `dense`: 32 for a WIDE network, whose activations come from `scratch`,
// where each load is a loop over the lanes, so that each feeds twice the FMAs; 16 where they
// come from private arrays (BENCHMARKS.md, session 21).
fn out_block() -> u32 {
    return select(16u, 32u, WIDE);
}

// The `at`s (weight_row4) of `dense`'s outputs j + 4 g .. j + 4 g + 3 (last: its last output;
// past it, the last): the first vec4s of W's rows j + 4 g + 0 .. 3, or of W^T's the rows
// themselves; from blocks of W^T, W's rows 4 k + 0 .. 3 at column vec4 j / 4 + g, whose vec4s
// are those outputs' weights for inputs 4 k .. 4 k + 3.
fn row_ats(l: u32, j: u32, g: u32, last: u32, fan_in4: u32) -> vec4<u32> {
    let t = vec4<u32>(0u, 1u, 2u, 3u);
    if transposed_blocks() {
        return t * layer_fan_in4(l) + min(j / 4u + g, last / 4u);
    }
    return min(j + 4u * g + t, vec4<u32>(last)) * select(fan_in4, 1u, TRANSPOSE);
}

fn bias(i: u32) -> f32 {
    if TRANSPOSE {
        return 0.0;
    }
    if WIDE {
        return net[layer_start(H + 1u) + i / 4u][i % 4u];
    }
    return biases[i / 4u][i % 4u];
}

const MAX_PPI: u32 = 4u;
// vec4s of a private activation array: one layer's inputs or outputs for the PPI particles of a
// network up to 128 wide. Larger arrays took minutes to compile on llvmpipe (4.5 minutes at
// 512), so wider networks keep their activations in `scratch` (WIDE), 2 act4() per invocation.
const MAX_H4: u32 = 128u;

// vec4s of one activation array of an invocation: the widest layer input for the PPI particles.
fn act4() -> u32 {
    return max((D + 2u * F + 3u) / 4u, W / 4u) * PPI;
}

// The activations of the invocation's particles, a layer at a time: two arrays, h (0) and g
// (1), private, or for a WIDE network in `scratch` (`scratch_at`). Each layer reads one and
// writes the other. (Module-scope arrays named by a constant rather than pointers passed to
// these helpers: wgpu's GL backend passes an array pointer as a copy in and out, which took
// llvmpipe's GL compiler past 8 minutes.)
var<private> h: array<vec4<f32>, MAX_H4>;
var<private> g: array<vec4<f32>, MAX_H4>;
var<private> scratch_base: u32;

// Invocations per block of what each writes to memory only for itself (a WIDE network's
// activations here, train_rows.wgsl's z): llvmpipe's SIMD width, its 256-bit vectors.
const BLOCK_LANES: u32 = 8u;

// Points invocation p at its activations in `scratch`: in blocks of BLOCK_LANES invocations,
// vec4 by vec4, the lanes' vectors side by side, as train_rows.wgsl lays out z. A load or store
// of the eight lanes then touches two cache lines of one page where a layout by invocation
// touched eight lines 2 act4() vec4s apart, all in one cache set. (It was meant to cure W2's
// slow runs and did not: those were the machine's; W2's profile did not move, W4 ran a little
// faster in two rounds. BENCHMARKS.md, session 21.)
fn start_scratch(p: u32) {
    scratch_base = (p / BLOCK_LANES) * 2u * act4() * BLOCK_LANES + p % BLOCK_LANES;
}

// Where vec4 i of the invocation's activation array a is in `scratch`.
fn scratch_at(a: u32, i: u32) -> u32 {
    return scratch_base + (a * act4() + i) * BLOCK_LANES;
}

fn load_act(a: u32, i: u32) -> vec4<f32> {
    if WIDE {
        return scratch[scratch_at(a, i)];
    }
    if a == 0u {
        return h[i];
    }
    return g[i];
}

fn store_act(a: u32, i: u32, v: vec4<f32>) {
    if WIDE {
        scratch[scratch_at(a, i)] = v;
    } else if a == 0u {
        h[i] = v;
    } else {
        g[i] = v;
    }
}

// Rows lo.x .. hi.w of layer l's W at vec4 column k: the eight rows `dense` computes at a time.
// `rows8` is in fused_rows.wgsl (each invocation loads all eight) or fused_rows_subgroup.wgsl
// (eight lanes of a subgroup load one row each and broadcast them), which also hold the `fused`
// entry point; both return the same values.
struct Rows8 {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
    r4: vec4<f32>,
    r5: vec4<f32>,
    r6: vec4<f32>,
    r7: vec4<f32>,
}

// Four outputs of a layer for one particle: the rows w0 .. w3 of W against its inputs h; from
// blocks of W^T (`transposed_blocks`), w0 .. w3 are the four outputs' weights for inputs h.x ..
// h.w, summed in the same order.
fn rows4(w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>, h: vec4<f32>) -> vec4<f32> {
    if transposed_blocks() {
        return w0 * h.x + w1 * h.y + w2 * h.z + w3 * h.w;
    }
    return vec4<f32>(dot(w0, h), dot(w1, h), dot(w2, h), dot(w3, h));
}

fn activate(z: vec4<f32>, act: bool) -> vec4<f32> {
    return select(z, z / (1.0 + exp(-z)), act);
}

// The sums of eight outputs of a layer (lo: the first four, hi: the next four) for each of the
// invocation's particles, to store.
struct Block8 {
    lo0: vec4<f32>,
    hi0: vec4<f32>,
    lo1: vec4<f32>,
    hi1: vec4<f32>,
    lo2: vec4<f32>,
    hi2: vec4<f32>,
    lo3: vec4<f32>,
    hi3: vec4<f32>,
}

// Stores act(z0 .. z3), four outputs of each particle, at o .. o + PPI - 1 of array dst.
fn store4(dst: u32, o: u32, z0: vec4<f32>, z1: vec4<f32>, z2: vec4<f32>, z3: vec4<f32>, act: bool) {
    store_act(dst, o, activate(z0, act));
    if PPI > 1u {
        store_act(dst, o + 1u, activate(z1, act));
    }
    if PPI > 2u {
        store_act(dst, o + 2u, activate(z2, act));
    }
    if PPI > 3u {
        store_act(dst, o + 3u, activate(z3, act));
    }
}

// Stores outputs j .. j + 7 of array dst from b, with their biases (from b_off) and activation,
// for each particle; outputs past the last are not stored.
fn store8(dst: u32, b: Block8, j: u32, last: u32, b_off: u32, act: bool) {
    let b_lo = vec4<f32>(bias(b_off + j), bias(b_off + min(j + 1u, last)), bias(b_off + min(j + 2u, last)), bias(b_off + min(j + 3u, last)));
    let b_hi = vec4<f32>(bias(b_off + min(j + 4u, last)), bias(b_off + min(j + 5u, last)), bias(b_off + min(j + 6u, last)), bias(b_off + min(j + 7u, last)));
    let o = (j / 4u) * PPI;
    store4(dst, o, b.lo0 + b_lo, b.lo1 + b_lo, b.lo2 + b_lo, b.lo3 + b_lo, act);
    if j + 4u <= last {
        store4(dst, o + PPI, b.hi0 + b_hi, b.hi1 + b_hi, b.hi2 + b_hi, b.hi3 + b_hi, act);
    }
}

// dst = act(W src + b) for layer l (src, dst: the activation arrays, 0 h or 1 g; fan_in4 vec4s
// per row of W; biases from b_off), for the PPI particles of the invocation. Sixteen outputs at
// a time (a WIDE network: 32, `out_block`) share each load of src, and the PPI particles each
// load of W: on llvmpipe the loads, not the FMAs, set the speed (BENCHMARKS.md: eight outputs
// instead of four 1.03-1.2x on W3, session 14; sixteen instead of eight 1.2x on W3 and 1.3-1.4x
// on W4, session 16). Each output is the same sum over k in the same order however many share a
// load.
fn dense(src: u32, dst: u32, l: u32, fan_in4: u32, fan_out: u32, b_off: u32, act: bool) {
    let last = fan_out - 1u;
    for (var j = 0u; j < fan_out; j += out_block()) {
        // The weights of outputs j .. j + 7 (a), j + 8 .. j + 15 (b), and where WIDE,
        // j + 16 .. j + 23 (c) and j + 24 .. j + 31 (d).
        let a_rows = row_ats(l, j, 0u, last, fan_in4);
        let a_rows_hi = row_ats(l, j, 1u, last, fan_in4);
        let b_rows = row_ats(l, j, 2u, last, fan_in4);
        let b_rows_hi = row_ats(l, j, 3u, last, fan_in4);
        let c_rows = row_ats(l, j, 4u, last, fan_in4);
        let c_rows_hi = row_ats(l, j, 5u, last, fan_in4);
        let d_rows = row_ats(l, j, 6u, last, fan_in4);
        let d_rows_hi = row_ats(l, j, 7u, last, fan_in4);
        // The sums of outputs j .. j + 3 (a_lo), j + 4 .. j + 7 (a_hi), j + 8 .. j + 15 (b_lo,
        // b_hi), ... for particle q (the digit). Written out: as structs passed through helpers,
        // the same sums ran W4 1.3x slower on llvmpipe.
        var a_lo0 = vec4<f32>(0.0);
        var a_hi0 = vec4<f32>(0.0);
        var b_lo0 = vec4<f32>(0.0);
        var b_hi0 = vec4<f32>(0.0);
        var a_lo1 = vec4<f32>(0.0);
        var a_hi1 = vec4<f32>(0.0);
        var b_lo1 = vec4<f32>(0.0);
        var b_hi1 = vec4<f32>(0.0);
        var a_lo2 = vec4<f32>(0.0);
        var a_hi2 = vec4<f32>(0.0);
        var b_lo2 = vec4<f32>(0.0);
        var b_hi2 = vec4<f32>(0.0);
        var a_lo3 = vec4<f32>(0.0);
        var a_hi3 = vec4<f32>(0.0);
        var b_lo3 = vec4<f32>(0.0);
        var b_hi3 = vec4<f32>(0.0);
        var c_lo0 = vec4<f32>(0.0);
        var c_hi0 = vec4<f32>(0.0);
        var d_lo0 = vec4<f32>(0.0);
        var d_hi0 = vec4<f32>(0.0);
        var c_lo1 = vec4<f32>(0.0);
        var c_hi1 = vec4<f32>(0.0);
        var d_lo1 = vec4<f32>(0.0);
        var d_hi1 = vec4<f32>(0.0);
        var c_lo2 = vec4<f32>(0.0);
        var c_hi2 = vec4<f32>(0.0);
        var d_lo2 = vec4<f32>(0.0);
        var d_hi2 = vec4<f32>(0.0);
        var c_lo3 = vec4<f32>(0.0);
        var c_hi3 = vec4<f32>(0.0);
        var d_lo3 = vec4<f32>(0.0);
        var d_hi3 = vec4<f32>(0.0);
        for (var k = 0u; k < fan_in4; k++) {
            let wa = rows8(l, a_rows, a_rows_hi, k);
            let wb = rows8(l, b_rows, b_rows_hi, k);
            let i = k * PPI;
            let h0 = load_act(src, i);
            var h1 = vec4<f32>(0.0);
            var h2 = vec4<f32>(0.0);
            var h3 = vec4<f32>(0.0);
            a_lo0 += rows4(wa.r0, wa.r1, wa.r2, wa.r3, h0);
            a_hi0 += rows4(wa.r4, wa.r5, wa.r6, wa.r7, h0);
            b_lo0 += rows4(wb.r0, wb.r1, wb.r2, wb.r3, h0);
            b_hi0 += rows4(wb.r4, wb.r5, wb.r6, wb.r7, h0);
            if PPI > 1u {
                h1 = load_act(src, i + 1u);
                a_lo1 += rows4(wa.r0, wa.r1, wa.r2, wa.r3, h1);
                a_hi1 += rows4(wa.r4, wa.r5, wa.r6, wa.r7, h1);
                b_lo1 += rows4(wb.r0, wb.r1, wb.r2, wb.r3, h1);
                b_hi1 += rows4(wb.r4, wb.r5, wb.r6, wb.r7, h1);
            }
            if PPI > 2u {
                h2 = load_act(src, i + 2u);
                a_lo2 += rows4(wa.r0, wa.r1, wa.r2, wa.r3, h2);
                a_hi2 += rows4(wa.r4, wa.r5, wa.r6, wa.r7, h2);
                b_lo2 += rows4(wb.r0, wb.r1, wb.r2, wb.r3, h2);
                b_hi2 += rows4(wb.r4, wb.r5, wb.r6, wb.r7, h2);
            }
            if PPI > 3u {
                h3 = load_act(src, i + 3u);
                a_lo3 += rows4(wa.r0, wa.r1, wa.r2, wa.r3, h3);
                a_hi3 += rows4(wa.r4, wa.r5, wa.r6, wa.r7, h3);
                b_lo3 += rows4(wb.r0, wb.r1, wb.r2, wb.r3, h3);
                b_hi3 += rows4(wb.r4, wb.r5, wb.r6, wb.r7, h3);
            }
            if out_block() > 16u {
                let wc = rows8(l, c_rows, c_rows_hi, k);
                let wd = rows8(l, d_rows, d_rows_hi, k);
                c_lo0 += rows4(wc.r0, wc.r1, wc.r2, wc.r3, h0);
                c_hi0 += rows4(wc.r4, wc.r5, wc.r6, wc.r7, h0);
                d_lo0 += rows4(wd.r0, wd.r1, wd.r2, wd.r3, h0);
                d_hi0 += rows4(wd.r4, wd.r5, wd.r6, wd.r7, h0);
                if PPI > 1u {
                    c_lo1 += rows4(wc.r0, wc.r1, wc.r2, wc.r3, h1);
                    c_hi1 += rows4(wc.r4, wc.r5, wc.r6, wc.r7, h1);
                    d_lo1 += rows4(wd.r0, wd.r1, wd.r2, wd.r3, h1);
                    d_hi1 += rows4(wd.r4, wd.r5, wd.r6, wd.r7, h1);
                }
                if PPI > 2u {
                    c_lo2 += rows4(wc.r0, wc.r1, wc.r2, wc.r3, h2);
                    c_hi2 += rows4(wc.r4, wc.r5, wc.r6, wc.r7, h2);
                    d_lo2 += rows4(wd.r0, wd.r1, wd.r2, wd.r3, h2);
                    d_hi2 += rows4(wd.r4, wd.r5, wd.r6, wd.r7, h2);
                }
                if PPI > 3u {
                    c_lo3 += rows4(wc.r0, wc.r1, wc.r2, wc.r3, h3);
                    c_hi3 += rows4(wc.r4, wc.r5, wc.r6, wc.r7, h3);
                    d_lo3 += rows4(wd.r0, wd.r1, wd.r2, wd.r3, h3);
                    d_hi3 += rows4(wd.r4, wd.r5, wd.r6, wd.r7, h3);
                }
            }
        }
        store8(dst, Block8(a_lo0, a_hi0, a_lo1, a_hi1, a_lo2, a_hi2, a_lo3, a_hi3), j, last, b_off, act);
        if j + 8u <= last {
            store8(dst, Block8(b_lo0, b_hi0, b_lo1, b_hi1, b_lo2, b_hi2, b_lo3, b_hi3), j + 8u, last, b_off, act);
        }
        if out_block() > 16u && j + 16u <= last {
            store8(dst, Block8(c_lo0, c_hi0, c_lo1, c_hi1, c_lo2, c_hi2, c_lo3, c_hi3), j + 16u, last, b_off, act);
        }
        if out_block() > 16u && j + 24u <= last {
            store8(dst, Block8(d_lo0, d_hi0, d_lo1, d_hi1, d_lo2, d_hi2, d_lo3, d_hi3), j + 24u, last, b_off, act);
        }
    }
}

// The scores s[q * D + j] of the invocation's PPI particles x[q * D + j].
fn network_score(x: ptr<function, array<f32, MAX_D>>, s: ptr<function, array<f32, MAX_D>>, st: SampleStep) {
    // The input: x, sin(c w), cos(c w), zeros up to a multiple of 4; the embedding is the same
    // for every particle of the step.
    let fan_in4 = (D + 2u * F + 3u) / 4u;
    for (var k = 0u; k < fan_in4; k++) {
        var v = vec4<f32>(0.0);
        for (var t = 0u; t < 4u; t++) {
            let i = 4u * k + t;
            if i >= D && i < D + 2u * F {
                v[t] = embedding(st.cond, i - D);
            }
        }
        for (var q = 0u; q < PPI; q++) {
            var u = v;
            for (var t = 0u; t < 4u; t++) {
                let i = 4u * k + t;
                if i < D {
                    u[t] = (*x)[q * D + i];
                }
            }
            store_act(0u, k * PPI + q, u);
        }
    }
    let w4 = W / 4u;
    // The layers are spelled out (MAX_LAYERS - 1 hidden at most), each with a constant l, so
    // layer_start folds once dense is inlined.
    dense(0u, 1u, 0u, fan_in4, W, 0u, true);
    if H > 1u {
        dense(1u, 0u, 1u, w4, W, W, true);
    }
    if H > 2u {
        dense(0u, 1u, 2u, w4, W, 2u * W, true);
    }
    if H > 3u {
        dense(1u, 0u, 3u, w4, W, 3u * W, true);
    }
    // After H hidden layers the activations are in g (H odd) or h (H even).
    if (H & 1u) == 1u {
        dense(1u, 0u, H, w4, D, H * W, false);
        for (var q = 0u; q < PPI; q++) {
            for (var j = 0u; j < D; j++) {
                (*s)[q * D + j] = st.out_scale * load_act(0u, (j / 4u) * PPI + q)[j % 4u];
            }
        }
    } else {
        dense(0u, 1u, H, w4, D, H * W, false);
        for (var q = 0u; q < PPI; q++) {
            for (var j = 0u; j < D; j++) {
                (*s)[q * D + j] = st.out_scale * load_act(1u, (j / 4u) * PPI + q)[j % 4u];
            }
        }
    }
}

// ---- entry points -----------------------------------------------------------------------------

// The body of the `fused` entry point (fused_rows.wgsl, fused_rows_subgroup.wgsl). Invocations
// past the last particle run along on zeros and store nothing: a subgroup's lanes must all be
// there when they share the weights.
fn fused_steps(gid: vec3<u32>, nwg: vec3<u32>) {
    let n0 = particle_id(gid, nwg) * PPI;
    start_scratch(particle_id(gid, nwg));
    // The invocation's particles: PPI, fewer at the end (the rest stay zero and are not stored).
    let count = min(PPI, N - min(n0, N));
    var x: array<f32, MAX_D>;
    var p: array<f32, MAX_D>;
    var s: array<f32, MAX_D>;
    for (var i = 0u; i < count * D; i++) {
        x[i] = particles[n0 * D + i];
        p[i] = saved[n0 * D + i];
    }
    for (var i = cursor.first; i < cursor.first + cursor.count; i++) {
        let st = schedule[i];
        if (st.flags & FLAG_NO_SCORE) != 0u {
            for (var j = 0u; j < PPI * D; j++) {
                s[j] = 0.0;
            }
        } else if SOURCE == 0u {
            _ = mixture_score(&x, &s, st.a, st.sigma);
        } else {
            network_score(&x, &s, st);
        }
        let save = (st.flags & FLAG_SAVE) != 0u;
        for (var q = 0u; q < count; q++) {
            for (var j0 = 0u; j0 < D; j0 += 4u) {
                let z = noise4(st.stream, n0 + q, j0);
                for (var j = j0; j < min(j0 + 4u, D); j++) {
                    let e = q * D + j;
                    let r = update_elem(st, x[e], s[e], z[j - j0], p[e]);
                    x[e] = r.x;
                    if save {
                        p[e] = r.y;
                    }
                }
            }
        }
    }
    for (var i = 0u; i < count * D; i++) {
        particles[n0 * D + i] = x[i];
        saved[n0 * D + i] = p[i];
    }
}

@compute @workgroup_size(WG)
fn score_mixture(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = particle_id(gid, nwg);
    if n >= N {
        return;
    }
    let st = schedule[cursor.first];
    var x: array<f32, MAX_D>;
    var s: array<f32, MAX_D>;
    for (var j = 0u; j < D; j++) {
        x[j] = particles[n * D + j];
    }
    _ = mixture_score(&x, &s, st.a, st.sigma);
    for (var j = 0u; j < D; j++) {
        score[n * D + j] = s[j];
    }
}

@compute @workgroup_size(WG)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = particle_id(gid, nwg);
    if n >= N {
        return;
    }
    let cond = schedule[cursor.first].cond;
    write_input(n, n, cond, labels[n]);
    if GUIDED {
        write_input(N + n, n, cond, CLASSES);
    }
}

// Network input row `row`: particle n, the embedding of `cond`, the code of `label` (zeros
// for a label that is no class).
fn write_input(row: u32, n: u32, cond: f32, label: u32) {
    let base = row * (D + 2u * F + CLASSES);
    for (var j = 0u; j < D; j++) {
        net_input[base + j] = particles[n * D + j];
    }
    for (var k = 0u; k < 2u * F; k++) {
        net_input[base + D + k] = embedding(cond, k);
    }
    for (var k = 0u; k < CLASSES; k++) {
        net_input[base + D + 2u * F + k] = select(0.0, 1.0, k == label);
    }
}

@compute @workgroup_size(WG)
fn measure_norms(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = particle_id(gid, nwg);
    if n >= N {
        return;
    }
    let st = schedule[cursor.first];
    var s2 = 0.0;
    var z2 = 0.0;
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        let z = noise4(st.stream, n, j0);
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            let s = st.out_scale * staged_output(n, j);
            s2 += s * s;
            z2 += z[j - j0] * z[j - j0];
        }
    }
    norms[2u * n] = sqrt(s2);
    norms[2u * n + 1u] = sqrt(z2);
}

const REDUCE_WG: u32 = 256u;
var<workgroup> partial: array<vec2<f32>, REDUCE_WG>;

// One workgroup sums the per-particle norms in a fixed order (strided, then a tree), so the
// corrector's step size is reproducible.
@compute @workgroup_size(REDUCE_WG)
fn reduce_norms(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0);
    for (var n = lid; n < N; n += REDUCE_WG) {
        acc += vec2<f32>(norms[2u * n], norms[2u * n + 1u]);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var width = REDUCE_WG / 2u; width > 0u; width /= 2u) {
        if lid < width {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        norm_sum[0] = partial[0].x;
        norm_sum[1] = partial[0].y;
    }
}

@compute @workgroup_size(WG)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = particle_id(gid, nwg);
    if n >= N {
        return;
    }
    var st = schedule[cursor.first];
    if st.snr > 0.0 {
        // The ratio of the mean norms is the ratio of their sums.
        let ratio = st.snr * norm_sum[1] / norm_sum[0];
        let eps = 2.0 * st.snr_alpha * ratio * ratio;
        st.c_x = 1.0;
        st.c_s = eps;
        st.c_z = sqrt(2.0 * eps);
    }
    let no_score = (st.flags & FLAG_NO_SCORE) != 0u;
    let save = (st.flags & FLAG_SAVE) != 0u;
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        let z = noise4(st.stream, n, j0);
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            let i = n * D + j;
            let s = select(st.out_scale * staged_output(n, j), 0.0, no_score);
            let r = update_elem(st, particles[i], s, z[j - j0], saved[i]);
            particles[i] = r.x;
            if save {
                saved[i] = r.y;
            }
        }
    }
}

// Inpainting (Song et al. 2021, appendix I.2, score_sde's `get_pc_inpainter`; NCSNv2's
// `anneal_Langevin_dynamics_inpainting`): after a step with FLAG_IMPUTE (each step of the
// method), the known coordinates y of each particle are replaced by y noised to the level of
// the next score evaluation, a y + sigma z, with fresh z; after the last step by y itself, so
// they end exactly as given. The unknown ones follow the score of the whole, noised, particle.
@compute @workgroup_size(WG)
fn impute(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = particle_id(gid, nwg);
    if n >= N {
        return;
    }
    let next = cursor.first + 1u;
    var a = 1.0;
    var sigma = 0.0;
    if next < arrayLength(&schedule) {
        a = schedule[next].a;
        sigma = schedule[next].sigma;
    }
    let stream = vec2<u32>(STREAM_SAMPLER_IMPUTE, cursor.first);
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        let z = noise4(stream, n, j0);
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            let i = n * D + j;
            if known_mask[i] != 0u {
                particles[i] = select(a * known[i] + sigma * z[j - j0], a * known[i], sigma == 0.0);
            }
        }
    }
}
