// dense.wgsl: what the dense-layer kernels of the score MLP share: one tiled matrix product with
// three modes, its operands, epilogues and bindings. The kernels that compute it are mlp.wgsl
// (a block of C per invocation, with `second_order`) and mlp_subgroup.wgsl (subgroup lanes
// sharing each weight load); the host picks one per device (model.rs, Tuning::dense).
//
// Bindings (group 0):
//   0  storage, read        lhs:  left operand (activations or their gradients)
//   1  storage, read        rhs:  right operand (the flat parameter buffer, or activations)
//   2  storage, read        aux:  pre-activations of the layer below (BACKWARD_INPUT only)
//   3  storage, read_write  out0: main output
//   4  storage, read_write  out1: post-activations (FORWARD with ACT only)
//   5  uniform              wwin: the layer's W, when WIN (FORWARD and BACKWARD_INPUT), or
//                           a chunk of its input rows (BACKWARD_WEIGHT)
//   6  uniform              awin: a chunk of A's rows, when AWIN (the activations of FORWARD,
//                           dL/dz of BACKWARD_INPUT and BACKWARD_WEIGHT)
//   7  storage, read        skip: dL/dh of this layer, when SKIP (BACKWARD_INPUT only)
//   8-13 uniform            wwin1, awin1 .. wwin3, awin3: as 5 and 6, for the BACKWARD_WEIGHT
//                           chunks 1-3 of a dispatch that sums several (mlp_subgroup.wgsl)
//   14-15 storage, read     lhs4, rhs4: lhs and rhs again, read a vec4 at a time by
//                           mlp_subgroup.wgsl's BACKWARD_WEIGHT from storage (VEC4)
//   16-21 uniform           wwin4, awin4 .. wwin6, awin6: chunks 4-6, as 8-13
// Unused bindings get a small dummy buffer.
//
// C[m, n] = sum_k A(m, k) B(k, n), with A, B and the epilogue chosen by MODE. A layer maps
// fan_in = IN features to fan_out = OUT features; W is stored [OUT, IN] row-major at OFF_W in
// the parameter buffer, b at OFF_B; activations are [batch, features] row-major.
//   MODE 0, FORWARD         (M = batch, N = OUT, K = IN):
//       A = lhs[m*K + k] (input),  B = W[n, k];  z = C + b[n]
//       out0[m*N + n] = z;  if ACT: out1[m*N + n] = silu(z)
//   MODE 1, BACKWARD_INPUT  (M = batch, N = IN, K = OUT):
//       A = lhs[m*K + k] (dL/dz of this layer),  B = W[k, n]
//       out0[m*N + n] = C * silu'(aux[m*N + n])   (dL/dz of the layer below)
//   MODE 2, BACKWARD_WEIGHT (M = OUT, N = IN, K = batch):
//       A = lhs[k*M + m] (dL/dz, transposed),  B = rhs[k*N + n] (input)
//       out0[OFF_W + m*N + n] = C  (dL/dW);  out0[OFF_B + m] = sum_k A(m, k)  (dL/db, summed
//       by the invocations of column 0 from the A values they load anyway: 8 adds per 64
//       FMAs, where a column of ones would take a 64-column tile of its own)
//   The residual network (model.rs) changes MODE 0 and MODE 1 by three constants:
//   CARRY (the embedding columns a hidden row carries after its activations): MODE 0 stores
//       post-activation rows of N + CARRY columns and copies A's last CARRY columns (the layer
//       input's embedding) after them; MODE 1 reads W rows of N + CARRY columns and computes the
//       gradient of the first N only (the embedding's is not needed).
//   SKIP (a skip connection h = silu(z) + h_below): MODE 0 adds A(m, n) to out1; MODE 1 adds
//       skip[m*N + n] (dL/dh of this layer) to C before the activation derivative.
//   KEEP_DH: MODE 1 also stores dL/dh below = C (+ skip) in out1, for the layer below's skip.
//   The batch reduction of MODE 2 is the K loop: no atomics, a fixed order, bit-reproducible.
//   With WIN and AWIN it runs chunk by chunk (K = the chunk's rows, operands from uniform
//   windows), each chunk's dispatch adding to the last (ACCUM): still a fixed order.
//   mlp_subgroup.wgsl can take several chunks per dispatch (WINDOWS), each chunk's sums added
//   to the stored ones in the same order as the dispatches would: the same numbers.
//   With AWIN, MODE 0 and MODE 1 run chunk by chunk of batch rows too (M = the chunk's rows, A
//   from the window, out0, out1 and aux bound at the chunk's first row): the same sums.
//
// Tangent rows (TANGENTS = T > 0; exact and sliced score matching): the forward-mode pass
// carrying T directions per example, T rows per primal row b (row m belongs to b = m / T).
// With u' = (v, 0) the direction in the input, z' = W h'_below, h' = silu'(z) z', output n' = J v:
//   MODE 0: z' = C (no bias);  out0 = z';  if ACT: out1 = silu'(aux[b*N + n]) * z'
//           (aux: this layer's primal pre-activations)
//   MODE 1: the adjoint of h' = silu'(z) z':  out0 = C * silu'(aux[b*N + n])  (dL/dz' below),
//           out1 = C  (dL/dh' below, for the second-order term; C + skip with SKIP)
//   MODE 2: as usual, but no bias gradient: z' has no bias.
// mlp.wgsl's entry `second_order` (one invocation per primal element, M = batch, N = features)
// adds the second-order term of h' = silu'(z) z' to the primal gradient:
//   out0[b*N + j] += silu''(aux[b*N + j]) * sum_t lhs[(b*T + t)*N + j] * rhs[(b*T + t)*N + j]
//   with aux = z, lhs = z', rhs = dL/dh', out0 = dL/dz of the primal rows.

override MODE: u32 = 0u;
const MODE_FORWARD: u32 = 0u;
const MODE_BACKWARD_INPUT: u32 = 1u;
const MODE_BACKWARD_WEIGHT: u32 = 2u;
override ACT: bool = true;
override M: u32 = 1u;
override N: u32 = 1u;
override K: u32 = 1u;
override OFF_W: u32 = 0u;
override OFF_B: u32 = 0u;
// W through a uniform window (binding 5): the layer's W copied to the start of a 64 KiB window
// before the pass (MlpPass::record_weight_copies). On llvmpipe a uniform load costs a twelfth
// of a storage load (BENCHMARKS.md); for layers of more than 16384 weights W stays in storage.
override WIN: bool = false;
// A through a uniform window (binding 6): a chunk of M batch rows (K for BACKWARD_WEIGHT) bound
// at its first row (Tuning::chunked_operands on the host).
override AWIN: bool = false;
// BACKWARD_WEIGHT over a chunk of K batch rows whose dL/dz and inputs come through uniform
// windows (bindings 6 and 5), adding to out0 unless this is the first chunk (ACCUM false).
override ACCUM: bool = false;
// Tangent directions per primal row; 0 for primal rows (see the header).
override TANGENTS: u32 = 0u;
// The residual network's constants (see the header).
override CARRY: u32 = 0u;
override SKIP: bool = false;
override KEEP_DH: bool = false;


@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;
@group(0) @binding(5) var<uniform> wwin: array<vec4<f32>, 4096>;
@group(0) @binding(6) var<uniform> awin: array<vec4<f32>, 4096>;
@group(0) @binding(7) var<storage, read> skip: array<f32>;

// MODE 2 over several chunks in one dispatch (mlp_subgroup.wgsl's WINDOWS): set once the sums
// in registers include what earlier dispatches stored (ACCUM), so the tile is stored, not
// added to the stored one.
var<private> stored_included: bool;

fn window(i: u32) -> f32 {
    return wwin[i / 4u][i % 4u];
}

fn silu(z: f32) -> f32 {
    return z / (1.0 + exp(-z));
}

fn silu_grad(z: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

// silu''(z) = s (1 - s) (2 + z (1 - 2 s)), s = sigmoid(z).
fn silu_second(z: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s));
}

// The primal row whose pre-activations a row's activation derivative reads.
fn primal_row(m: u32) -> u32 {
    return select(m, m / max(TANGENTS, 1u), TANGENTS > 0u);
}

// Where A(m, k) is in lhs or its window.
fn a_index(m: u32, k: u32) -> u32 {
    return select(m * K + k, k * M + m, MODE == MODE_BACKWARD_WEIGHT);
}

fn load_a(m: u32, k: u32) -> f32 {
    if m >= M || k >= K {
        return 0.0;
    }
    let i = a_index(m, k);
    if AWIN {
        return awin[i / 4u][i % 4u];
    }
    return lhs[i];
}

fn load_b(k: u32, n: u32) -> f32 {
    if k >= K || n >= N {
        return 0.0;
    }
    if MODE == MODE_FORWARD {
        if WIN {
            return window(n * K + k);
        }
        return rhs[OFF_W + n * K + k];
    }
    if MODE == MODE_BACKWARD_INPUT {
        let i = k * (N + CARRY) + n;
        if WIN {
            return window(i);
        }
        return rhs[OFF_W + i];
    }
    if WIN {
        return window(k * N + n);
    }
    return rhs[k * N + n];
}

// The windows of MODE 2's chunks 1 to 6 where one dispatch sums several (mlp_subgroup.wgsl's
// WINDOWS; the block kernel reads chunk 0 only). load_a and load_b do not call the `_in` forms
// below: mlp.wgsl calls them, and a function that names windows 1-6 would make the block
// kernel's bind group need them too. Seven chunks take 14 of llvmpipe's 15 uniform buffers per
// stage (D3D12 has 14): W1's 4096 rows are 5 dispatches per layer, not 8 of four chunks.
@group(0) @binding(8) var<uniform> wwin1: array<vec4<f32>, 4096>;
@group(0) @binding(9) var<uniform> awin1: array<vec4<f32>, 4096>;
@group(0) @binding(10) var<uniform> wwin2: array<vec4<f32>, 4096>;
@group(0) @binding(11) var<uniform> awin2: array<vec4<f32>, 4096>;
@group(0) @binding(12) var<uniform> wwin3: array<vec4<f32>, 4096>;
@group(0) @binding(13) var<uniform> awin3: array<vec4<f32>, 4096>;
@group(0) @binding(16) var<uniform> wwin4: array<vec4<f32>, 4096>;
@group(0) @binding(17) var<uniform> awin4: array<vec4<f32>, 4096>;
@group(0) @binding(18) var<uniform> wwin5: array<vec4<f32>, 4096>;
@group(0) @binding(19) var<uniform> awin5: array<vec4<f32>, 4096>;
@group(0) @binding(20) var<uniform> wwin6: array<vec4<f32>, 4096>;
@group(0) @binding(21) var<uniform> awin6: array<vec4<f32>, 4096>;

// lhs and rhs as vec4s (mlp_subgroup.wgsl's VEC4; the host binds the same buffers there and a
// placeholder elsewhere).
@group(0) @binding(14) var<storage, read> lhs4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> rhs4: array<vec4<f32>>;

// A(m, k) of chunk c (a constant where it is called, so the switch folds).
fn load_a_in(c: u32, m: u32, k: u32) -> f32 {
    if c == 0u {
        return load_a(m, k);
    }
    if m >= M || k >= K {
        return 0.0;
    }
    let i = a_index(m, k);
    switch c {
        case 1u: { return awin1[i / 4u][i % 4u]; }
        case 2u: { return awin2[i / 4u][i % 4u]; }
        case 3u: { return awin3[i / 4u][i % 4u]; }
        case 4u: { return awin4[i / 4u][i % 4u]; }
        case 5u: { return awin5[i / 4u][i % 4u]; }
        default: { return awin6[i / 4u][i % 4u]; }
    }
}

// Vec4 i of chunk c's windows of MODE 2's A (dL/dz) and B (the layer input's rows), read
// whole by mlp_subgroup.wgsl's VEC4.
fn awin4_in(c: u32, i: u32) -> vec4<f32> {
    switch c {
        case 0u: { return awin[i]; }
        case 1u: { return awin1[i]; }
        case 2u: { return awin2[i]; }
        case 3u: { return awin3[i]; }
        case 4u: { return awin4[i]; }
        case 5u: { return awin5[i]; }
        default: { return awin6[i]; }
    }
}

fn wwin4_in(c: u32, i: u32) -> vec4<f32> {
    switch c {
        case 0u: { return wwin[i]; }
        case 1u: { return wwin1[i]; }
        case 2u: { return wwin2[i]; }
        case 3u: { return wwin3[i]; }
        case 4u: { return wwin4[i]; }
        case 5u: { return wwin5[i]; }
        default: { return wwin6[i]; }
    }
}

// B(k, n) of chunk c (MODE 2: the layer input's rows).
fn load_b_in(c: u32, k: u32, n: u32) -> f32 {
    if c == 0u {
        return load_b(k, n);
    }
    if k >= K || n >= N {
        return 0.0;
    }
    let i = k * N + n;
    switch c {
        case 1u: { return wwin1[i / 4u][i % 4u]; }
        case 2u: { return wwin2[i / 4u][i % 4u]; }
        case 3u: { return wwin3[i / 4u][i % 4u]; }
        case 4u: { return wwin4[i / 4u][i % 4u]; }
        case 5u: { return wwin5[i / 4u][i % 4u]; }
        default: { return wwin6[i / 4u][i % 4u]; }
    }
}


fn store(m: u32, n: u32, c: f32) {
    if m >= M || n >= N {
        return;
    }
    if MODE == MODE_FORWARD {
        // Tangent rows: z' = C, no bias.
        var z = c;
        if TANGENTS == 0u {
            z = c + rhs[OFF_B + n];
        }
        out0[m * N + n] = z;
        if ACT {
            var h = silu(z);
            if TANGENTS > 0u {
                h = silu_grad(aux[primal_row(m) * N + n]) * c;
            }
            if SKIP {
                h += load_a(m, n);
            }
            out1[m * (N + CARRY) + n] = h;
        }
    } else if MODE == MODE_BACKWARD_INPUT {
        var dh = c;
        if SKIP {
            dh += skip[m * N + n];
        }
        out0[m * N + n] = dh * silu_grad(aux[primal_row(m) * N + n]);
        if TANGENTS > 0u || KEEP_DH {
            out1[m * N + n] = dh;
        }
    } else {
        let i = OFF_W + m * N + n;
        out0[i] = select(c, out0[i] + c, ACCUM && !stored_included);
    }
}

// What out0 holds of MODE 2's dW at row m, columns n .. n + 3 (zero past M or N).
fn stored4(m: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var t = 0u; t < 4u; t++) {
        if m < M && n + t < N {
            v[t] = out0[OFF_W + m * N + n + t];
        }
    }
    return v;
}

// What out0 holds of MODE 2's db at row m (zero past M).
fn stored_bias(m: u32) -> f32 {
    if m < M {
        return out0[OFF_B + m];
    }
    return 0.0;
}

fn store4(m: u32, n: u32, v: vec4<f32>) {
    store(m, n, v.x);
    store(m, n + 1u, v.y);
    store(m, n + 2u, v.z);
    store(m, n + 3u, v.w);
}

// The embedding columns of row m's input, carried after its activations (MODE 0, CARRY > 0).
fn carry_row(m: u32) {
    if m >= M {
        return;
    }
    for (var j = 0u; j < CARRY; j++) {
        out1[m * (N + CARRY) + N + j] = load_a(m, K - CARRY + j);
    }
}

// dL/db of row m of a MODE 2 tile (primal rows only: z' has no bias).
fn store_bias(m: u32, c: f32) {
    if m < M {
        let i = OFF_B + m;
        out0[i] = select(c, out0[i] + c, ACCUM && !stored_included);
    }
}

fn store_bias4(m: u32, v: vec4<f32>) {
    store_bias(m, v.x);
    store_bias(m + 1u, v.y);
    store_bias(m + 2u, v.z);
    store_bias(m + 3u, v.w);
}
