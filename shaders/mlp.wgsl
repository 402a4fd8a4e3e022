// mlp.wgsl: the dense layers of the score MLP as one tiled matrix kernel with three modes.
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
// Entry `second_order` (one invocation per primal element, M = batch, N = features) adds the
// second-order term of h' = silu'(z) z' to the primal gradient:
//   out0[b*N + j] += silu''(aux[b*N + j]) * sum_t lhs[(b*T + t)*N + j] * rhs[(b*T + t)*N + j]
//   with aux = z, lhs = z', rhs = dL/dh', out0 = dL/dz of the primal rows.
//
// Blocking: a workgroup of WG_X x WG_Y invocations (8 x 8 unless C is narrow: the host shapes
// it to C, so the d-wide output layer is not computed as a 64-wide tile) covers an
// 8 WG_Y x 8 WG_X tile of C, each invocation an 8 x 8 block in sixteen vec4 registers,
// reading A and B straight from storage or uniform windows (caches serve the reuse): 16 loads
// per 64 FMAs. On llvmpipe every storage load costs about 4 ns per lane
// whatever its pattern, so loads per FMA set the speed; see BENCHMARKS.md for the measurements
// (a 4 x 4 block ran at 0.6x, staging through workgroup memory at 0.3x of this).

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

// The workgroup's invocations along C's columns and rows (model.rs matmul_workgroup).
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;
@group(0) @binding(5) var<uniform> wwin: array<vec4<f32>, 4096>;
@group(0) @binding(6) var<uniform> awin: array<vec4<f32>, 4096>;
@group(0) @binding(7) var<storage, read> skip: array<f32>;

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

fn load_a(m: u32, k: u32) -> f32 {
    if m >= M || k >= K {
        return 0.0;
    }
    let i = select(m * K + k, k * M + m, MODE == MODE_BACKWARD_WEIGHT);
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
        out0[i] = select(c, out0[i] + c, ACCUM);
    }
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
        out0[i] = select(c, out0[i] + c, ACCUM);
    }
}

fn store_bias4(m: u32, v: vec4<f32>) {
    store_bias(m, v.x);
    store_bias(m + 1u, v.y);
    store_bias(m + 2u, v.z);
    store_bias(m + 3u, v.w);
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = (wid.y * WG_Y + lid.y) * 8u;
    let c = (wid.x * WG_X + lid.x) * 8u;
    var lo0 = vec4<f32>(0.0);
    var hi0 = vec4<f32>(0.0);
    var lo1 = vec4<f32>(0.0);
    var hi1 = vec4<f32>(0.0);
    var lo2 = vec4<f32>(0.0);
    var hi2 = vec4<f32>(0.0);
    var lo3 = vec4<f32>(0.0);
    var hi3 = vec4<f32>(0.0);
    var lo4 = vec4<f32>(0.0);
    var hi4 = vec4<f32>(0.0);
    var lo5 = vec4<f32>(0.0);
    var hi5 = vec4<f32>(0.0);
    var lo6 = vec4<f32>(0.0);
    var hi6 = vec4<f32>(0.0);
    var lo7 = vec4<f32>(0.0);
    var hi7 = vec4<f32>(0.0);
    // Row sums of A for the bias gradient (MODE 2); folded away in the other modes.
    var bias_lo = vec4<f32>(0.0);
    var bias_hi = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let bl = vec4<f32>(load_b(k, c), load_b(k, c + 1u), load_b(k, c + 2u), load_b(k, c + 3u));
        let bh = vec4<f32>(load_b(k, c + 4u), load_b(k, c + 5u), load_b(k, c + 6u), load_b(k, c + 7u));
        let a0 = load_a(r + 0u, k);
        lo0 = fma(vec4<f32>(a0), bl, lo0);
        hi0 = fma(vec4<f32>(a0), bh, hi0);
        let a1 = load_a(r + 1u, k);
        lo1 = fma(vec4<f32>(a1), bl, lo1);
        hi1 = fma(vec4<f32>(a1), bh, hi1);
        let a2 = load_a(r + 2u, k);
        lo2 = fma(vec4<f32>(a2), bl, lo2);
        hi2 = fma(vec4<f32>(a2), bh, hi2);
        let a3 = load_a(r + 3u, k);
        lo3 = fma(vec4<f32>(a3), bl, lo3);
        hi3 = fma(vec4<f32>(a3), bh, hi3);
        let a4 = load_a(r + 4u, k);
        lo4 = fma(vec4<f32>(a4), bl, lo4);
        hi4 = fma(vec4<f32>(a4), bh, hi4);
        let a5 = load_a(r + 5u, k);
        lo5 = fma(vec4<f32>(a5), bl, lo5);
        hi5 = fma(vec4<f32>(a5), bh, hi5);
        let a6 = load_a(r + 6u, k);
        lo6 = fma(vec4<f32>(a6), bl, lo6);
        hi6 = fma(vec4<f32>(a6), bh, hi6);
        let a7 = load_a(r + 7u, k);
        lo7 = fma(vec4<f32>(a7), bl, lo7);
        hi7 = fma(vec4<f32>(a7), bh, hi7);
        if MODE == MODE_BACKWARD_WEIGHT {
            bias_lo += vec4<f32>(a0, a1, a2, a3);
            bias_hi += vec4<f32>(a4, a5, a6, a7);
        }
    }

    // Stores with constant component indices: a vector indexed by a loop variable would make
    // the compiler keep every accumulator in memory for the whole k loop.
    store4(r + 0u, c, lo0);
    store4(r + 0u, c + 4u, hi0);
    store4(r + 1u, c, lo1);
    store4(r + 1u, c + 4u, hi1);
    store4(r + 2u, c, lo2);
    store4(r + 2u, c + 4u, hi2);
    store4(r + 3u, c, lo3);
    store4(r + 3u, c + 4u, hi3);
    store4(r + 4u, c, lo4);
    store4(r + 4u, c + 4u, hi4);
    store4(r + 5u, c, lo5);
    store4(r + 5u, c + 4u, hi5);
    store4(r + 6u, c, lo6);
    store4(r + 6u, c + 4u, hi6);
    store4(r + 7u, c, lo7);
    store4(r + 7u, c + 4u, hi7);
    if MODE == MODE_BACKWARD_WEIGHT && TANGENTS == 0u && c == 0u {
        store_bias4(r, bias_lo);
        store_bias4(r + 4u, bias_hi);
    }
    if MODE == MODE_FORWARD && ACT && CARRY > 0u && c == 0u {
        for (var i = 0u; i < 8u; i++) {
            carry_row(r + i);
        }
    }
}

@compute @workgroup_size(64)
fn second_order(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if i >= M * N {
        return;
    }
    let b = i / N;
    let j = i % N;
    var acc = 0.0;
    for (var t = 0u; t < TANGENTS; t++) {
        let r = (b * TANGENTS + t) * N + j;
        acc += lhs[r] * rhs[r];
    }
    out0[i] += silu_second(aux[i]) * acc;
}
