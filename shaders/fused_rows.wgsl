// fused_rows.wgsl: the fused sampler's weight loads where each invocation loads its own (any
// adapter), and its entry point. The other choice is fused_rows_subgroup.wgsl.

fn rows8(l: u32, lo: vec4<u32>, hi: vec4<u32>, k: u32) -> Rows8 {
    return Rows8(
        weight_row4(l, lo.x, k),
        weight_row4(l, lo.y, k),
        weight_row4(l, lo.z, k),
        weight_row4(l, lo.w, k),
        weight_row4(l, hi.x, k),
        weight_row4(l, hi.y, k),
        weight_row4(l, hi.z, k),
        weight_row4(l, hi.w, k),
    );
}

@compute @workgroup_size(WG)
fn fused(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    fused_steps(gid, nwg);
}

@compute @workgroup_size(WG)
fn train_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    train_rows(gid, nwg);
}

@compute @workgroup_size(WG)
fn train_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    train_input_gradients(gid, nwg);
}
