// train_rows.wgsl: the training forward pass of the plain score MLP, computed the way the fused
// sampler computes its network (composed after sample.wgsl; the entry point `train_forward` is
// in fused_rows.wgsl and fused_rows_subgroup.wgsl, beside `fused`). PPI batch rows per
// invocation, every layer in the one invocation, the activations in its private arrays (or, WIDE,
// its scratch), the weights packed and shared as there; each layer's pre-activations z and
// post-activations silu(z) are written out for the backward pass (src/model.rs, MlpPass).
//
// The staged dense layers write each layer's rows for the next dispatch to read back; here an
// invocation reads back, layer after layer, the few kilobytes it wrote itself. On llvmpipe that,
// not the loads' form, is what the staged kernels lose (BENCHMARKS.md, session 17).
//
// Bindings (group 0), besides sample.wgsl's weights (11-16, 20) and scratch (21):
//   22 read train_in [N, D + 2F]: the network input rows (the objective's perturb kernel)
//   23-26 rw pre0..pre3: z of hidden layer l, vec4s in blocks of invocations (`pre_at`)
//   27 rw pre_out: z of the output layer [N, D]
//   28-31 rw post0..post3: silu(z) of hidden layer l [N, W / 4] vec4s
//   32 read dz_out [N, D]: dL/dz of the output layer (the loss kernel's)
//   33-36 rw dz0..dz3: dL/dz of hidden layer l [N, W / 4] vec4s (train_backward writes them)
// The rows are as many as pre_out holds (its length over D), not the override N: so one
// pipeline serves every batch size. Hidden layers past H get placeholders, never written.
//
// The hidden layers' rows go out and come back as vec4s: llvmpipe runs every storage access as
// a loop over the SIMD lanes, with each component's load or store inside (Mesa's
// lp_bld_nir_soa.c, emit_store_mem), so a vec4 access costs one loop where four floats cost
// four (BENCHMARKS.md, session 20).
//
// `train_backward` (the pipeline with TRANSPOSE) is the input-gradient half of the backward
// pass the same way: dL/dh of layer l - 1 = W_l^T dL/dz_l by `dense` over the transposed
// weights, then dL/dz = dL/dh silu'(z) with z read back from pre, for l = H down to 1, each
// layer's dL/dz written for the weight gradients (still the dense kernels' batch products).

@group(0) @binding(22) var<storage, read> train_in: array<f32>;
@group(0) @binding(23) var<storage, read_write> pre0: array<vec4<f32>>;
@group(0) @binding(24) var<storage, read_write> pre1: array<vec4<f32>>;
@group(0) @binding(25) var<storage, read_write> pre2: array<vec4<f32>>;
@group(0) @binding(26) var<storage, read_write> pre3: array<vec4<f32>>;
@group(0) @binding(27) var<storage, read_write> pre_out: array<f32>;
@group(0) @binding(28) var<storage, read_write> post0: array<vec4<f32>>;
@group(0) @binding(29) var<storage, read_write> post1: array<vec4<f32>>;
@group(0) @binding(30) var<storage, read_write> post2: array<vec4<f32>>;
@group(0) @binding(31) var<storage, read_write> post3: array<vec4<f32>>;

@group(0) @binding(32) var<storage, read> dz_out: array<f32>;
@group(0) @binding(33) var<storage, read_write> dz0: array<vec4<f32>>;
@group(0) @binding(34) var<storage, read_write> dz1: array<vec4<f32>>;
@group(0) @binding(35) var<storage, read_write> dz2: array<vec4<f32>>;
@group(0) @binding(36) var<storage, read_write> dz3: array<vec4<f32>>;

// Hidden layer l's z (vec4 i, at pre_at) and silu(z) and dL/dz (vec4 i of the row-major rows
// the weight gradients read): one vector per access, since llvmpipe runs every storage access
// as a loop over the lanes whatever its width.
fn store_pre(l: u32, i: u32, v: vec4<f32>) {
    switch l {
        case 0u: { pre0[i] = v; }
        case 1u: { pre1[i] = v; }
        case 2u: { pre2[i] = v; }
        default: { pre3[i] = v; }
    }
}

fn store_post(l: u32, i: u32, v: vec4<f32>) {
    switch l {
        case 0u: { post0[i] = v; }
        case 1u: { post1[i] = v; }
        case 2u: { post2[i] = v; }
        default: { post3[i] = v; }
    }
}

fn load_pre(l: u32, i: u32) -> vec4<f32> {
    switch l {
        case 0u: { return pre0[i]; }
        case 1u: { return pre1[i]; }
        case 2u: { return pre2[i]; }
        default: { return pre3[i]; }
    }
}

fn store_dz(l: u32, i: u32, v: vec4<f32>) {
    switch l {
        case 0u: { dz0[i] = v; }
        case 1u: { dz1[i] = v; }
        case 2u: { dz2[i] = v; }
        default: { dz3[i] = v; }
    }
}

// Where vec4 j4 of row n0 + q's z is for invocation p (n0 = p PPI): in blocks of BLOCK_LANES
// invocations, each block j4 by j4 and row by row, the lanes' vectors side by side. Only
// train_forward writes z and only train_backward reads it, so its layout is theirs: this way the
// lanes of one access touch two whole cache lines and a block's z is one run of memory, which
// the prefetcher follows (row-major, each access touched eight rows and the backward's loads
// stalled on misses: BENCHMARKS.md, session 20). The buffers hold the rows rounded up to a
// multiple of BLOCK_LANES PPI (fused.rs, pre_rows).
fn pre_at(p: u32, q: u32, j4: u32) -> u32 {
    return (((p / BLOCK_LANES) * (W / 4u) + j4) * PPI + q) * BLOCK_LANES + p % BLOCK_LANES;
}

// Points invocation p's scratch at its own and returns how many of its PPI rows exist (the
// rows are as many as pre_out, the output layer's z, holds).
fn start_rows(p: u32) -> u32 {
    start_scratch(p);
    let rows = arrayLength(&pre_out) / D;
    return min(PPI, rows - min(p * PPI, rows));
}

// Layer l's outputs z (bias added, left in activation array a by `dense`) for the invocation's
// `count` rows (invocation p's): stored as pre[l] and, for a hidden layer, activated in place
// (the next layer's input) and stored as post[l].
fn emit_layer(a: u32, l: u32, fan_out: u32, p: u32, count: u32, hidden: bool) {
    let n0 = p * PPI;
    for (var j4 = 0u; j4 < (fan_out + 3u) / 4u; j4++) {
        for (var q = 0u; q < PPI; q++) {
            let z = load_act(a, j4 * PPI + q);
            if hidden {
                let h = activate(z, true);
                store_act(a, j4 * PPI + q, h);
                if q < count {
                    store_pre(l, pre_at(p, q, j4), z);
                    store_post(l, (n0 + q) * (fan_out / 4u) + j4, h);
                }
            } else if q < count {
                for (var t = 0u; t < 4u; t++) {
                    let j = 4u * j4 + t;
                    if j < fan_out {
                        pre_out[(n0 + q) * fan_out + j] = z[t];
                    }
                }
            }
        }
    }
}

// The body of `train_forward`. Invocations past the last row run along on zeros and store
// nothing (a subgroup's lanes must all be there when they share the weights).
fn train_rows(gid: vec3<u32>, nwg: vec3<u32>) {
    let p = particle_id(gid, nwg);
    let n0 = p * PPI;
    let count = start_rows(p);
    let fan_in = D + 2u * F;
    let fan_in4 = (fan_in + 3u) / 4u;
    for (var k = 0u; k < fan_in4; k++) {
        for (var q = 0u; q < PPI; q++) {
            var v = vec4<f32>(0.0);
            for (var t = 0u; t < 4u; t++) {
                let i = 4u * k + t;
                if q < count && i < fan_in {
                    v[t] = train_in[(n0 + q) * fan_in + i];
                }
            }
            store_act(0u, k * PPI + q, v);
        }
    }
    // As network_score: the layers spelled out, each with a constant l, so layer_start folds;
    // `dense` leaves z (activation off) and emit_layer activates it.
    let w4 = W / 4u;
    dense(0u, 1u, 0u, fan_in4, W, 0u, false);
    emit_layer(1u, 0u, W, p, count, true);
    if H > 1u {
        dense(1u, 0u, 1u, w4, W, W, false);
        emit_layer(0u, 1u, W, p, count, true);
    }
    if H > 2u {
        dense(0u, 1u, 2u, w4, W, 2u * W, false);
        emit_layer(1u, 2u, W, p, count, true);
    }
    if H > 3u {
        dense(1u, 0u, 3u, w4, W, 3u * W, false);
        emit_layer(0u, 3u, W, p, count, true);
    }
    // After H hidden layers the activations are in g (H odd) or h (H even).
    if (H & 1u) == 1u {
        dense(1u, 0u, H, w4, D, H * W, false);
        emit_layer(0u, H, D, p, count, false);
    } else {
        dense(0u, 1u, H, w4, D, H * W, false);
        emit_layer(1u, H, D, p, count, false);
    }
}

// dL/dh of hidden layer l (left in activation array a by `dense` over W_{l+1}^T) for the
// `count` rows of invocation p: times silu'(z), z read back from pre[l], into dL/dz, kept in
// place (the next transposed layer's input) and stored as dz[l].
fn emit_gradient(a: u32, l: u32, p: u32, count: u32) {
    let n0 = p * PPI;
    for (var j4 = 0u; j4 < W / 4u; j4++) {
        for (var q = 0u; q < PPI; q++) {
            var z = vec4<f32>(0.0);
            if q < count {
                z = load_pre(l, pre_at(p, q, j4));
            }
            let s = 1.0 / (1.0 + exp(-z));
            let dz = load_act(a, j4 * PPI + q) * s * (1.0 + z * (1.0 - s));
            store_act(a, j4 * PPI + q, dz);
            if q < count {
                store_dz(l, (n0 + q) * (W / 4u) + j4, dz);
            }
        }
    }
}

// The body of `train_backward` (TRANSPOSE): dL/dz of every hidden layer from dL/dz of the
// output, layer by layer down, as `train_rows` went up. Invocations past the last row run along
// on zeros and store nothing.
fn train_input_gradients(gid: vec3<u32>, nwg: vec3<u32>) {
    let p = particle_id(gid, nwg);
    let n0 = p * PPI;
    let count = start_rows(p);
    let d4 = (D + 3u) / 4u;
    for (var k = 0u; k < d4; k++) {
        for (var q = 0u; q < PPI; q++) {
            var v = vec4<f32>(0.0);
            for (var t = 0u; t < 4u; t++) {
                let i = 4u * k + t;
                if q < count && i < D {
                    v[t] = dz_out[(n0 + q) * D + i];
                }
            }
            store_act(0u, k * PPI + q, v);
        }
    }
    // dense(src, dst, l, ...) multiplies by W_l^T: from the output layer's D inputs down to W
    // outputs, each l spelled out as in train_rows (max: no u32 underflow in the branches a
    // small H skips).
    let w4 = W / 4u;
    dense(0u, 1u, H, d4, W, 0u, false);
    emit_gradient(1u, H - 1u, p, count);
    if H > 1u {
        dense(1u, 0u, H - 1u, w4, W, 0u, false);
        emit_gradient(0u, max(H, 2u) - 2u, p, count);
    }
    if H > 2u {
        dense(0u, 1u, max(H, 2u) - 2u, w4, W, 0u, false);
        emit_gradient(1u, max(H, 3u) - 3u, p, count);
    }
    if H > 3u {
        dense(1u, 0u, max(H, 3u) - 3u, w4, W, 0u, false);
        emit_gradient(0u, max(H, 4u) - 4u, p, count);
    }
}
