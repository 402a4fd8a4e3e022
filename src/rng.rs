//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
//! bit-identical to `shaders/rng.wgsl`.
//!
//! Randomness in scorefield is a pure function of `(seed, stream, index)`:
//! - the 64-bit `seed` is the Philox key;
//! - the 64-bit `stream` names what the numbers are for (see [`Stream`]) and, in its high word,
//!   usually the training step or sampler step they belong to;
//! - the 64-bit `index` counts u32 outputs (or normals) within the stream.
//!
//! The Philox counter of block `i` of a stream is `(i_lo, i_hi, stream_lo, stream_hi)`, and each
//! block gives four u32 outputs, so u32 number `n` is lane `n % 4` of block `n / 4`.
//!
//! Normals come from Box-Muller on the two halves of a block: lanes (0, 1) give normals 0 and 1 of
//! the block, lanes (2, 3) normals 2 and 3. Box-Muller is chosen over Ziggurat or the inverse CDF
//! because it is branch-free (no rejection loop, so no divergence in a warp and a fixed number of
//! counters per draw, which keeps every draw a pure function of its index), needs no tables in
//! workgroup memory, and is exact in distribution up to the 24-bit resolution of the uniforms,
//! which bounds |z| by sqrt(-2 ln 2^-24) ~= 5.77 (a tail of probability ~8e-9).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// What a stream of random numbers is used for: the low word of the stream id. Keeping these
/// distinct means no two uses of one seed ever share numbers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Parameter initialisation and the fixed Fourier frequencies of the noise embedding.
    Init = 1,
    /// Which training example each batch row takes.
    BatchIndex = 2,
    /// Which noise level (or time t) each batch row takes.
    NoiseLevel = 3,
    /// The Gaussian noise added to each batch row.
    NoiseValue = 4,
    /// Initial particles of a sampler.
    SamplerInit = 5,
    /// The noise of each sampler step.
    SamplerStep = 6,
    /// Projections of sliced score matching.
    Projection = 7,
    /// Exact samples of analytic datasets (Gaussian mixtures).
    Data = 8,
    /// The noise of the known coordinates when a sampler inpaints (sub-stream: the step).
    SamplerImpute = 9,
    /// Whether a training row's class label is dropped to "no class" (class-conditional
    /// networks; sub-stream: the step).
    ClassDrop = 10,
    /// Hutchinson's probes of a likelihood solve (one set per solve: sub-stream 0).
    Probe = 11,
    /// Free for tests and user code.
    User = 100,
}

impl Stream {
    /// The 64-bit stream id for this purpose at a given step (or other sub-stream number).
    pub fn at(self, step: u32) -> u64 {
        (self as u32 as u64) | ((step as u64) << 32)
    }
}

/// One Philox4x32-10 block: 10 rounds on a 128-bit counter under a 64-bit key.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A 64-bit value as the (low, high) word pair the shaders use for it.
pub fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

/// Block `block` of stream `stream` under `seed`.
pub fn block(seed: u64, stream: u64, block: u64) -> [u32; 4] {
    let [b0, b1] = split(block);
    let [s0, s1] = split(stream);
    philox4x32_10([b0, b1, s0, s1], split(seed))
}

/// The `n`-th u32 of a stream.
pub fn u32_at(seed: u64, stream: u64, n: u64) -> u32 {
    block(seed, stream, n >> 2)[(n & 3) as usize]
}

/// A u32 to a uniform in (0, 1]: the top 24 bits plus one, times 2^-24. Never 0, so `ln` is
/// finite; exactly representable in f32, so the GPU computes the same value.
pub fn uniform_open0(x: u32) -> f32 {
    ((x >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Box-Muller on two u32s: (r cos(2 pi u2), r sin(2 pi u2)) with r = sqrt(-2 ln u1).
/// Computed in f64 here; the GPU computes it in f32, so GPU and host normals agree to f32
/// rounding of the transcendental functions, not bit for bit (the u32 streams do).
pub fn box_muller(a: u32, b: u32) -> [f64; 2] {
    let u1 = uniform_open0(a) as f64;
    let u2 = uniform_open0(b) as f64;
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    [r * theta.cos(), r * theta.sin()]
}

/// The `n`-th standard normal of a stream.
pub fn normal_at(seed: u64, stream: u64, n: u64) -> f64 {
    let b = block(seed, stream, n >> 2);
    let lane = (n & 3) as usize;
    let pair = box_muller(b[lane & 2], b[(lane & 2) + 1]);
    pair[lane & 1]
}

/// `len` normals of a stream starting at index `offset`.
pub fn normals(seed: u64, stream: u64, offset: u64, len: usize) -> Vec<f64> {
    (0..len as u64).map(|i| normal_at(seed, stream, offset + i)).collect()
}

/// A uniform in [0, 1) from the `n`-th u32 of a stream, at f32 resolution (24 bits).
pub fn uniform_at(seed: u64, stream: u64, n: u64) -> f32 {
    (u32_at(seed, stream, n) >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's kat_vectors (philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_stay_in_range() {
        assert_eq!(uniform_open0(0), 1.0 / 16_777_216.0);
        assert_eq!(uniform_open0(u32::MAX), 1.0);
        assert!(uniform_at(1, 2, 3) < 1.0);
    }
}
