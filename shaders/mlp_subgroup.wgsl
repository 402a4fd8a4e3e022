// mlp_subgroup.wgsl: the dense layers' subgroup kernel (the modes, operands and bindings are in
// dense.wgsl). Needs the `subgroups` feature and subgroups of at least 8 lanes (the host checks
// the adapter's smallest subgroup size).
//
// A workgroup is 8 invocations, lanes of one subgroup, and computes a 32 x COLS tile of C (COLS =
// 4, 8 or 16): lane l holds rows r + l, r + l + 8, r + l + 16 and r + l + 24 (with VEC4, r + 4 l ..
// r + 4 l + 3), every column, in up to sixteen vec4 registers. For each block of 8 k, lane l loads
// B(k0 + l, n) of the tile's COLS columns, so one load across the 8 lanes fetches 8 different
// values where mlp.wgsl's lanes fetch one column each; `subgroupBroadcast` then hands lane j's
// values to every lane for k = k0 + j (a register shuffle on llvmpipe, where every load is a
// per-lane gather). Per k and 8 lanes: 4 loads of A and COLS / 8 of B for 4 x COLS FMAs per lane
// (the 8 x 8 block: 16 loads per 64). With W in storage (the 512-wide layers) the B loads are the
// dear ones, and the subgroup loads an eighth as many of them.
//
// Each output is the same fma chain over k = 0, 1, ..., K - 1 as in mlp.wgsl, so the two kernels
// agree bit for bit (a k past K adds fma(0, 0, c): c itself, up to the sign of a zero).

// Columns per workgroup (model.rs subgroup_cols): 16, or fewer for a narrow C.
override COLS: u32 = 16u;

// MODE 2 chunk by chunk (WIN and AWIN): chunks per dispatch, 1 to 7 (more than 1: the entry
// point `chunks`), each through its own
// pair of windows (dense.wgsl's load_a_in, load_b_in, awin4_in, wwin4_in); each chunk's tile is
// summed from zero and added to the ones before it in the order one dispatch per chunk would add
// it to the stored tile, and the sum stored once (model.rs WEIGHT_GRADIENT_WINDOWS: on llvmpipe
// each dispatch costs 35-300 microseconds besides its work, by the machine's hour).
override WINDOWS: u32 = 1u;

// MODE 2 with M and N multiples of 4 (the host decides): A and B read a vec4 at a time, from
// storage (lhs4, rhs4) or from the chunks' windows (awin4_in, wwin4_in), the lane's rows of the
// tile 4 l .. 4 l + 3 instead of l, l + 8, l + 16, l + 24. On llvmpipe every load from storage
// is a loop over the lanes, with a vec4's four loads inside one: per k, one loop for A where
// there were four (BENCHMARKS.md, session 21); from a window a vec4 is still four gathers, but
// with one index, one bounds test and one set of lane addresses (W1's weight gradients about
// 10% faster, session 22). Each output's fma chain is the same either way.
override VEC4: bool = false;

// The step between the lane's four rows of the tile.
fn row_step() -> u32 {
    return select(8u, 1u, VEC4);
}

// The accumulators of one lane: row i of the lane's four, columns 4q..4q+3 of the tile in cq;
// bias: row sums of A for MODE 2's bias gradient.
struct Tile {
    r0c0: vec4<f32>, r0c1: vec4<f32>, r0c2: vec4<f32>, r0c3: vec4<f32>,
    r1c0: vec4<f32>, r1c1: vec4<f32>, r1c2: vec4<f32>, r1c3: vec4<f32>,
    r2c0: vec4<f32>, r2c1: vec4<f32>, r2c2: vec4<f32>, r2c3: vec4<f32>,
    r3c0: vec4<f32>, r3c1: vec4<f32>, r3c2: vec4<f32>, r3c3: vec4<f32>,
    bias: vec4<f32>,
}

// B(k0 + lane, c + 4q .. c + 4q + 3): this lane's share of the tile's B values for a block of k.
fn load_b4(c: u32, k: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        if k >= K || n >= N {
            return vec4<f32>(0.0);
        }
        if WIN {
            return wwin4_in(c, (k * N + n) / 4u);
        }
        return rhs4[(k * N + n) / 4u];
    }
    return vec4<f32>(load_b_in(c, k, n), load_b_in(c, k, n + 1u), load_b_in(c, k, n + 2u), load_b_in(c, k, n + 3u));
}

// A(r + i row_step, k) for i = 0 .. 3: the lane's four rows from r.
fn load_a4(c: u32, r: u32, k: u32) -> vec4<f32> {
    if VEC4 {
        if r >= M || k >= K {
            return vec4<f32>(0.0);
        }
        if AWIN {
            return awin4_in(c, (k * M + r) / 4u);
        }
        return lhs4[(k * M + r) / 4u];
    }
    let s = row_step();
    return vec4<f32>(load_a_in(c, r, k), load_a_in(c, r + s, k), load_a_in(c, r + 2u * s, k), load_a_in(c, r + 3u * s, k));
}

// One k for the lane's four rows from r (row_step apart): b0..b3 are B(k, c .. c + 15),
// broadcast by the caller (a lane index must be a constant).
fn accumulate(t: ptr<function, Tile>, c: u32, r: u32, k: u32, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    let a = load_a4(c, r, k);
    let a0 = vec4<f32>(a.x);
    let a1 = vec4<f32>(a.y);
    let a2 = vec4<f32>(a.z);
    let a3 = vec4<f32>(a.w);
    (*t).r0c0 = fma(a0, b0, (*t).r0c0);
    (*t).r1c0 = fma(a1, b0, (*t).r1c0);
    (*t).r2c0 = fma(a2, b0, (*t).r2c0);
    (*t).r3c0 = fma(a3, b0, (*t).r3c0);
    if COLS > 4u {
        (*t).r0c1 = fma(a0, b1, (*t).r0c1);
        (*t).r1c1 = fma(a1, b1, (*t).r1c1);
        (*t).r2c1 = fma(a2, b1, (*t).r2c1);
        (*t).r3c1 = fma(a3, b1, (*t).r3c1);
    }
    if COLS > 8u {
        (*t).r0c2 = fma(a0, b2, (*t).r0c2);
        (*t).r1c2 = fma(a1, b2, (*t).r1c2);
        (*t).r2c2 = fma(a2, b2, (*t).r2c2);
        (*t).r3c2 = fma(a3, b2, (*t).r3c2);
        (*t).r0c3 = fma(a0, b3, (*t).r0c3);
        (*t).r1c3 = fma(a1, b3, (*t).r1c3);
        (*t).r2c3 = fma(a2, b3, (*t).r2c3);
        (*t).r3c3 = fma(a3, b3, (*t).r3c3);
    }
    if MODE == MODE_BACKWARD_WEIGHT {
        (*t).bias += a;
    }
}

// Row r's columns c + 4q .. c + 4q + 3, where the tile has them.
fn store_cols(r: u32, c: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    store4(r, c, v0);
    if COLS > 4u {
        store4(r, c + 4u, v1);
    }
    if COLS > 8u {
        store4(r, c + 8u, v2);
        store4(r, c + 12u, v3);
    }
}

// The lane's sums of chunk `ch` (0 unless WINDOWS > 1) for its rows from r, columns from c.
fn chunk_tile(ch: u32, r: u32, c: u32, lane: u32) -> Tile {
    let zero = vec4<f32>(0.0);
    var t = Tile(zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero);
    for (var k0 = 0u; k0 < K; k0 += 8u) {
        let kl = k0 + lane;
        let b0 = load_b4(ch, kl, c);
        var b1 = zero;
        var b2 = zero;
        var b3 = zero;
        if COLS > 4u {
            b1 = load_b4(ch, kl, c + 4u);
        }
        if COLS > 8u {
            b2 = load_b4(ch, kl, c + 8u);
            b3 = load_b4(ch, kl, c + 12u);
        }
        accumulate(&t, ch, r, k0, subgroupBroadcast(b0, 0u), subgroupBroadcast(b1, 0u), subgroupBroadcast(b2, 0u), subgroupBroadcast(b3, 0u));
        accumulate(&t, ch, r, k0 + 1u, subgroupBroadcast(b0, 1u), subgroupBroadcast(b1, 1u), subgroupBroadcast(b2, 1u), subgroupBroadcast(b3, 1u));
        accumulate(&t, ch, r, k0 + 2u, subgroupBroadcast(b0, 2u), subgroupBroadcast(b1, 2u), subgroupBroadcast(b2, 2u), subgroupBroadcast(b3, 2u));
        accumulate(&t, ch, r, k0 + 3u, subgroupBroadcast(b0, 3u), subgroupBroadcast(b1, 3u), subgroupBroadcast(b2, 3u), subgroupBroadcast(b3, 3u));
        accumulate(&t, ch, r, k0 + 4u, subgroupBroadcast(b0, 4u), subgroupBroadcast(b1, 4u), subgroupBroadcast(b2, 4u), subgroupBroadcast(b3, 4u));
        accumulate(&t, ch, r, k0 + 5u, subgroupBroadcast(b0, 5u), subgroupBroadcast(b1, 5u), subgroupBroadcast(b2, 5u), subgroupBroadcast(b3, 5u));
        accumulate(&t, ch, r, k0 + 6u, subgroupBroadcast(b0, 6u), subgroupBroadcast(b1, 6u), subgroupBroadcast(b2, 6u), subgroupBroadcast(b3, 6u));
        accumulate(&t, ch, r, k0 + 7u, subgroupBroadcast(b0, 7u), subgroupBroadcast(b1, 7u), subgroupBroadcast(b2, 7u), subgroupBroadcast(b3, 7u));
    }
    return t;
}

// Stores the lane's tile (rows from r, columns from c), and where they fall to this lane, the
// bias gradient (MODE 2) or the carried embedding (MODE 0).
fn store_tile(t: Tile, r: u32, c: u32) {
    let s = row_step();
    store_cols(r, c, t.r0c0, t.r0c1, t.r0c2, t.r0c3);
    store_cols(r + s, c, t.r1c0, t.r1c1, t.r1c2, t.r1c3);
    store_cols(r + 2u * s, c, t.r2c0, t.r2c1, t.r2c2, t.r2c3);
    store_cols(r + 3u * s, c, t.r3c0, t.r3c1, t.r3c2, t.r3c3);
    if MODE == MODE_BACKWARD_WEIGHT && TANGENTS == 0u && c == 0u {
        store_bias(r, t.bias.x);
        store_bias(r + s, t.bias.y);
        store_bias(r + 2u * s, t.bias.z);
        store_bias(r + 3u * s, t.bias.w);
    }
    if MODE == MODE_FORWARD && ACT && CARRY > 0u && c == 0u {
        carry_row(r);
        carry_row(r + s);
        carry_row(r + 2u * s);
        carry_row(r + 3u * s);
    }
}

// What earlier dispatches stored of the lane's tile (MODE 2 with ACCUM): dW at its rows from r,
// columns from c, and where the bias gradient falls to this lane (c = 0), db.
fn stored_tile(r: u32, c: u32) -> Tile {
    let zero = vec4<f32>(0.0);
    var t = Tile(zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero);
    let s = row_step();
    t.r0c0 = stored4(r, c);
    t.r1c0 = stored4(r + s, c);
    t.r2c0 = stored4(r + 2u * s, c);
    t.r3c0 = stored4(r + 3u * s, c);
    if COLS > 4u {
        t.r0c1 = stored4(r, c + 4u);
        t.r1c1 = stored4(r + s, c + 4u);
        t.r2c1 = stored4(r + 2u * s, c + 4u);
        t.r3c1 = stored4(r + 3u * s, c + 4u);
    }
    if COLS > 8u {
        t.r0c2 = stored4(r, c + 8u);
        t.r1c2 = stored4(r + s, c + 8u);
        t.r2c2 = stored4(r + 2u * s, c + 8u);
        t.r3c2 = stored4(r + 3u * s, c + 8u);
        t.r0c3 = stored4(r, c + 12u);
        t.r1c3 = stored4(r + s, c + 12u);
        t.r2c3 = stored4(r + 2u * s, c + 12u);
        t.r3c3 = stored4(r + 3u * s, c + 12u);
    }
    if TANGENTS == 0u && c == 0u {
        t.bias = vec4<f32>(stored_bias(r), stored_bias(r + s), stored_bias(r + 2u * s), stored_bias(r + 3u * s));
    }
    return t;
}

fn add_tiles(a: Tile, b: Tile) -> Tile {
    return Tile(
        a.r0c0 + b.r0c0, a.r0c1 + b.r0c1, a.r0c2 + b.r0c2, a.r0c3 + b.r0c3,
        a.r1c0 + b.r1c0, a.r1c1 + b.r1c1, a.r1c2 + b.r1c2, a.r1c3 + b.r1c3,
        a.r2c0 + b.r2c0, a.r2c1 + b.r2c1, a.r2c2 + b.r2c2, a.r2c3 + b.r2c3,
        a.r3c0 + b.r3c0, a.r3c1 + b.r3c1, a.r3c2 + b.r3c2, a.r3c3 + b.r3c3,
        a.bias + b.bias,
    );
}

// The lane's first row and the tile's first column.
fn tile_origin(wid: vec3<u32>, lane: u32) -> vec2<u32> {
    return vec2<u32>(wid.y * 32u + lane * select(1u, 4u, VEC4), wid.x * COLS);
}

// One chunk per dispatch: every mode, WINDOWS = 1.
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let o = tile_origin(wid, lane);
    store_tile(chunk_tile(0u, o.x, o.y, lane), o.x, o.y);
}

// MODE 2 over WINDOWS > 1 chunks per dispatch. An entry point of its own rather than a branch
// of `main` on WINDOWS: lavapipe inlines everything an entry point reaches before it drops the
// branches its constants rule out, and the six more chunk tiles made every one-chunk pipeline
// take three times as long to build (BENCHMARKS.md, session 24).
@compute @workgroup_size(8)
fn chunks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let o = tile_origin(wid, lane);
    let r = o.x;
    let c = o.y;
    var t = chunk_tile(0u, r, c, lane);
    // Summed here, the stored tile first where earlier dispatches stored one, then chunk by
    // chunk, each addition the one a dispatch per chunk would make in memory (so bit for bit
    // the block kernel's), and stored once: on llvmpipe every float loaded from or stored to
    // storage is a loop over the lanes (BENCHMARKS.md, session 20).
    if ACCUM {
        t = add_tiles(stored_tile(r, c), t);
    }
    t = add_tiles(t, chunk_tile(1u, r, c, lane));
    if WINDOWS > 2u {
        t = add_tiles(t, chunk_tile(2u, r, c, lane));
    }
    if WINDOWS > 3u {
        t = add_tiles(t, chunk_tile(3u, r, c, lane));
    }
    if WINDOWS > 4u {
        t = add_tiles(t, chunk_tile(4u, r, c, lane));
    }
    if WINDOWS > 5u {
        t = add_tiles(t, chunk_tile(5u, r, c, lane));
    }
    if WINDOWS > 6u {
        t = add_tiles(t, chunk_tile(6u, r, c, lane));
    }
    stored_included = true;
    store_tile(t, r, c);
}
