// fused_rows_subgroup.wgsl: the fused sampler's weight loads shared by the lanes of a subgroup,
// and its entry point (needs the `subgroups` feature and subgroups of at least 8 lanes; the
// other choice is fused_rows.wgsl).
//
// Every particle reads the same weights, so where each invocation loads the eight rows itself
// (on llvmpipe: eight per-lane gathers of one address), lane r of each group of eight loads row r
// alone and `subgroupBroadcast` hands it to the others: one load for eight rows. The values, and
// so the samples, are the same as with fused_rows.wgsl.

// This invocation's lane within its group of eight (set by `fused` before anything else).
var<private> lane: u32;

fn rows8(l: u32, lo: vec4<u32>, hi: vec4<u32>, k: u32) -> Rows8 {
    let mine = weight_row4(l, select(lo, hi, lane >= 4u)[lane % 4u], k);
    return Rows8(
        subgroupBroadcast(mine, 0u),
        subgroupBroadcast(mine, 1u),
        subgroupBroadcast(mine, 2u),
        subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u),
        subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u),
        subgroupBroadcast(mine, 7u),
    );
}

@compute @workgroup_size(WG)
fn fused(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
) {
    lane = subgroup_lane % 8u;
    fused_steps(gid, nwg);
}

@compute @workgroup_size(WG)
fn train_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
) {
    lane = subgroup_lane % 8u;
    train_rows(gid, nwg);
}

@compute @workgroup_size(WG)
fn train_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
) {
    lane = subgroup_lane % 8u;
    train_input_gradients(gid, nwg);
}
