// rng.wgsl: Philox4x32-10 and Box-Muller normals, shared by every kernel that needs noise.
//
// Shared WGSL: functions only, no bindings, no entry points. The loader prepends this file to
// the kernels that use it. Bit-identical to src/rng.rs (see there for the stream layout):
//   u32 number n of stream s under seed k is lane n % 4 of philox(ctr = (n/4 as u64, s as u64), k)
//   normals 0,1 of a block come from lanes (0,1), normals 2,3 from lanes (2,3), by Box-Muller.
// 64-bit quantities are vec2<u32> (low word first), since WGSL has no u64.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// Full 32 x 32 -> 64-bit product as (lo, hi), from 16-bit halves.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let lo = (mid << 16u) | (ll & 0xFFFFu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// 64-bit addition of (lo, hi) pairs.
fn add_u64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    let carry = select(0u, 1u, lo < a.x);
    return vec2<u32>(lo, a.y + b.y + carry);
}

// 64-bit right shift of a (lo, hi) pair by s in 1..31.
fn shr_u64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if round > 0u {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = mul_wide(PHILOX_M0, c.x);
        let p1 = mul_wide(PHILOX_M1, c.z);
        c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
    }
    return c;
}

// Block `blk` (64-bit) of stream `stream` (64-bit) under `seed` (64-bit).
fn rng_block(seed: vec2<u32>, stream: vec2<u32>, blk: vec2<u32>) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(blk, stream), seed);
}

// Top 24 bits plus one, times 2^-24: a uniform in (0, 1], exact in f32.
fn uniform_open0(x: u32) -> f32 {
    return f32((x >> 8u) + 1u) * (1.0 / 16777216.0);
}

// Top 24 bits times 2^-24: a uniform in [0, 1), exact in f32.
fn uniform_closed0(x: u32) -> f32 {
    return f32(x >> 8u) * (1.0 / 16777216.0);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * log(uniform_open0(a)));
    let theta = 6.283185307179586 * uniform_open0(b);
    return vec2<f32>(r * cos(theta), r * sin(theta));
}

// The four normals of one block.
fn normal4(seed: vec2<u32>, stream: vec2<u32>, blk: vec2<u32>) -> vec4<f32> {
    let u = rng_block(seed, stream, blk);
    return vec4<f32>(box_muller(u.x, u.y), box_muller(u.z, u.w));
}

// Normal number n (64-bit) of a stream. Computes a whole block for one value: kernels that
// need many consecutive normals should call normal4 once per four.
fn normal_at(seed: vec2<u32>, stream: vec2<u32>, n: vec2<u32>) -> f32 {
    let v = normal4(seed, stream, shr_u64(n, 2u));
    let lane = n.x & 3u;
    return select(select(v.x, v.y, lane == 1u), select(v.z, v.w, lane == 3u), lane >= 2u);
}

// u32 number n (64-bit) of a stream.
fn u32_at(seed: vec2<u32>, stream: vec2<u32>, n: vec2<u32>) -> u32 {
    let v = rng_block(seed, stream, shr_u64(n, 2u));
    let lane = n.x & 3u;
    return select(select(v.x, v.y, lane == 1u), select(v.z, v.w, lane == 3u), lane >= 2u);
}
