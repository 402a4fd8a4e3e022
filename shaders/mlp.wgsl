// mlp.wgsl: the dense layers of the score MLP as one tiled matrix kernel with three modes.
//
// Bindings (group 0):
//   0  storage, read        lhs:  left operand (activations or their gradients)
//   1  storage, read        rhs:  right operand (the flat parameter buffer, or activations)
//   2  storage, read        aux:  pre-activations of the layer below (BACKWARD_INPUT only)
//   3  storage, read_write  out0: main output
//   4  storage, read_write  out1: post-activations (FORWARD with ACT only)
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
//   MODE 2, BACKWARD_WEIGHT (M = OUT, N = IN + 1, K = batch):
//       A = lhs[k*M + m] (dL/dz, transposed),  B = rhs[k*(N-1) + n] (input), or 1 for n = N-1
//       out0[OFF_W + m*(N-1) + n] = C  (dL/dW);  out0[OFF_B + m] = C at n = N-1  (dL/db)
//   The batch reduction of MODE 2 is the K loop: no atomics, a fixed order, bit-reproducible.
//
// Blocking: a workgroup of 16 x 16 invocations covers a 64 x 64 tile of C, each invocation a
// 4 x 4 block in four vec4 registers, reading A and B straight from storage (caches serve the
// reuse). A version staging 16 x 64 slices through workgroup memory ran at half this speed on
// llvmpipe (its barriers are expensive); see BENCHMARKS.md.

override MODE: u32 = 0u;
override ACT: bool = true;
override M: u32 = 1u;
override N: u32 = 1u;
override K: u32 = 1u;
override OFF_W: u32 = 0u;
override OFF_B: u32 = 0u;

const TILE: u32 = 64u;   // rows and columns of C per workgroup
const T: u32 = 4u;       // rows and columns of C per invocation

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;

fn silu(z: f32) -> f32 {
    return z / (1.0 + exp(-z));
}

fn silu_grad(z: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

fn load_a(m: u32, k: u32) -> f32 {
    if m >= M || k >= K {
        return 0.0;
    }
    if MODE == 2u {
        return lhs[k * M + m];
    }
    return lhs[m * K + k];
}

fn load_b(k: u32, n: u32) -> f32 {
    if k >= K || n >= N {
        return 0.0;
    }
    if MODE == 0u {
        return rhs[OFF_W + n * K + k];
    }
    if MODE == 1u {
        return rhs[OFF_W + k * N + n];
    }
    if n == N - 1u {
        return 1.0;
    }
    return rhs[k * (N - 1u) + n];
}

fn store(m: u32, n: u32, c: f32) {
    if m >= M || n >= N {
        return;
    }
    if MODE == 0u {
        let z = c + rhs[OFF_B + n];
        out0[m * N + n] = z;
        if ACT {
            out1[m * N + n] = silu(z);
        }
    } else if MODE == 1u {
        out0[m * N + n] = c * silu_grad(aux[m * N + n]);
    } else if n == N - 1u {
        out0[OFF_B + m] = c;
    } else {
        out0[OFF_W + m * (N - 1u) + n] = c;
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.y * TILE + lid.y * T;
    let c = wid.x * TILE + lid.x * T;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let b = vec4<f32>(load_b(k, c), load_b(k, c + 1u), load_b(k, c + 2u), load_b(k, c + 3u));
        c0 = fma(vec4<f32>(load_a(r, k)), b, c0);
        c1 = fma(vec4<f32>(load_a(r + 1u, k)), b, c1);
        c2 = fma(vec4<f32>(load_a(r + 2u, k)), b, c2);
        c3 = fma(vec4<f32>(load_a(r + 3u, k)), b, c3);
    }
    for (var j = 0u; j < T; j++) {
        store(r, c + j, c0[j]);
        store(r + 1u, c + j, c1[j]);
        store(r + 2u, c + j, c2[j]);
        store(r + 3u, c + j, c3[j]);
    }
}
