// noise.wgsl: raw Philox output and standard normals into a buffer.
//
// Bindings (group 0):
//   0  uniform              params: NoiseParams (seed, stream, first index, count)
//   1  storage, read_write  out: array<u32> (entry `uniform_u32`) or array<f32> (entry `normal`)
//
// `uniform_u32`: out[i] = u32 number (offset + i) of the stream, for i < count.
// `normal`:      out[i] = normal number (offset + i) of the stream, for i < count.
// Each invocation computes one Philox block (four numbers), so `offset` must be a multiple of 4
// for the block boundaries to line up; the host checks this. Composed after rng.wgsl.

struct NoiseParams {
    seed: vec2<u32>,
    stream: vec2<u32>,
    offset: vec2<u32>,
    count: u32,
    _pad: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: NoiseParams;
@group(0) @binding(1) var<storage, read_write> out_u32: array<u32>;

// Linear invocation index over a 2-D dispatch (rows of 65535 workgroups at most).
fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn uniform_u32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg) * 4u;
    if i >= params.count {
        return;
    }
    let blk = shr_u64(add_u64(params.offset, vec2<u32>(i, 0u)), 2u);
    let v = rng_block(params.seed, params.stream, blk);
    for (var lane = 0u; lane < 4u; lane++) {
        if i + lane < params.count {
            out_u32[i + lane] = v[lane];
        }
    }
}

@compute @workgroup_size(WG)
fn normal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg) * 4u;
    if i >= params.count {
        return;
    }
    let blk = shr_u64(add_u64(params.offset, vec2<u32>(i, 0u)), 2u);
    let v = normal4(params.seed, params.stream, blk);
    for (var lane = 0u; lane < 4u; lane++) {
        if i + lane < params.count {
            out_u32[i + lane] = bitcast<u32>(v[lane]);
        }
    }
}
