// mlp.wgsl: the dense layers' block kernel (the modes, operands and bindings are in dense.wgsl).
//
// Blocking: a workgroup of WG_X x WG_Y invocations (8 x 8 unless C is narrow: the host shapes
// it to C, so the d-wide output layer is not computed as a 64-wide tile) covers an
// 8 WG_Y x 8 WG_X tile of C, each invocation an 8 x 8 block in sixteen vec4 registers,
// reading A and B straight from storage or uniform windows (caches serve the reuse): 16 loads
// per 64 FMAs. On llvmpipe every storage load costs about 4 ns per lane
// whatever its pattern, so loads per FMA set the speed; see BENCHMARKS.md for the measurements
// (a 4 x 4 block ran at 0.6x, staging through workgroup memory at 0.3x of this).

// The workgroup's invocations along C's columns and rows (model.rs matmul_workgroup).
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

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
