// fma.wgsl: the adapter's float32 FMA ceiling, measured with long independent FMA chains.
//
// Bindings (group 0):
//   0  storage, read_write  out: array<f32>, one value per invocation (keeps the work alive)
//
// Tuning constants (override): WG invocations per workgroup, ACC independent vec4 accumulators
// per invocation, ITERS loop trips. Each trip does ACC vec4 FMAs = 8 * ACC FLOP, so one
// invocation does 8 * ACC * ITERS FLOP. Several accumulators hide the FMA latency that bounds
// a single dependent chain; the host sweeps ACC and WG and keeps the best.

override WG: u32 = 256u;
override ACC: u32 = 8u; // 1, 2, 4, 8 or 16
override ITERS: u32 = 1024u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

// Accumulators are named variables rather than an array: an array indexed in a loop can end up
// in memory on some compilers (llvmpipe does this), which measures loads, not FMAs. The
// `ACC > k` tests are constant after specialisation and fold away.
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    // Values the compiler cannot fold: they depend on the invocation id.
    let s = f32(id & 255u) * 1e-3;
    let a = vec4<f32>(0.999, 0.998, 0.997, 0.996) + s * 1e-6;
    let b = vec4<f32>(1e-4, 2e-4, 3e-4, 4e-4);
    var c0 = vec4<f32>(s);
    var c1 = c0 + 1.0; var c2 = c0 + 2.0; var c3 = c0 + 3.0;
    var c4 = c0 + 4.0; var c5 = c0 + 5.0; var c6 = c0 + 6.0; var c7 = c0 + 7.0;
    var c8 = c0 + 8.0; var c9 = c0 + 9.0; var c10 = c0 + 10.0; var c11 = c0 + 11.0;
    var c12 = c0 + 12.0; var c13 = c0 + 13.0; var c14 = c0 + 14.0; var c15 = c0 + 15.0;
    for (var it = 0u; it < ITERS; it++) {
        c0 = fma(c0, a, b);
        if ACC > 1u { c1 = fma(c1, a, b); }
        if ACC > 2u { c2 = fma(c2, a, b); c3 = fma(c3, a, b); }
        if ACC > 4u { c4 = fma(c4, a, b); c5 = fma(c5, a, b); c6 = fma(c6, a, b); c7 = fma(c7, a, b); }
        if ACC > 8u {
            c8 = fma(c8, a, b); c9 = fma(c9, a, b); c10 = fma(c10, a, b); c11 = fma(c11, a, b);
            c12 = fma(c12, a, b); c13 = fma(c13, a, b); c14 = fma(c14, a, b); c15 = fma(c15, a, b);
        }
    }
    var total = c0;
    if ACC > 1u { total += c1; }
    if ACC > 2u { total += c2 + c3; }
    if ACC > 4u { total += c4 + c5 + c6 + c7; }
    if ACC > 8u { total += c8 + c9 + c10 + c11 + c12 + c13 + c14 + c15; }
    out[id] = total.x + total.y + total.z + total.w;
}
