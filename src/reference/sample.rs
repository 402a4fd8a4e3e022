//! The sampler steps of shaders/sample.wgsl in f64: the same plan, the same normals (from
//! `rng::normal_at`), any score function.

use crate::rng::{self, Stream};
use crate::sample::method::{PlannedStep, FLAG_CLIP_X0, FLAG_IMPUTE, FLAG_NO_SCORE, FLAG_SAVE};
use crate::sample::Known;
use crate::schedule::NoiseLevel;

/// Runs `plan[range]` on `x` [n, d] (and Heun's partial sums `p`, same shape) with the score
/// `score(points [n, d], level) -> [n, d]`.
pub fn run(
    plan: &[PlannedStep],
    range: std::ops::Range<usize>,
    seed: u64,
    d: usize,
    x: &mut [f64],
    p: &mut [f64],
    score: impl Fn(&[f64], &NoiseLevel) -> Vec<f64>,
) {
    let n = x.len() / d;
    let d4 = d.div_ceil(4) as u64 * 4;
    for planned in &plan[range] {
        let st = &planned.step;
        let stream = st.stream[0] as u64 | (st.stream[1] as u64) << 32;
        let z: Vec<f64> =
            (0..n * d).map(|i| rng::normal_at(seed, stream, (i / d) as u64 * d4 + (i % d) as u64)).collect();
        let s = if st.flags & FLAG_NO_SCORE != 0 { vec![0.0; n * d] } else { score(x, &planned.level) };
        let (mut c_x, mut c_s, mut c_z) = (st.c_x as f64, st.c_s as f64, st.c_z as f64);
        if st.snr > 0.0 {
            // score_sde LangevinCorrector: means over particles of the per-particle norms.
            let norm = |v: &[f64], i: usize| v[i * d..(i + 1) * d].iter().map(|a| a * a).sum::<f64>().sqrt();
            let s_norm: f64 = (0..n).map(|i| norm(&s, i)).sum();
            let z_norm: f64 = (0..n).map(|i| norm(&z, i)).sum();
            let eps = 2.0 * st.snr_alpha as f64 * (st.snr as f64 * z_norm / s_norm).powi(2);
            (c_x, c_s, c_z) = (1.0, eps, (2.0 * eps).sqrt());
        }
        for i in 0..n * d {
            let xc = if c_x == 0.0 { 0.0 } else { c_x * x[i] };
            let pc = if st.c_p == 0.0 { 0.0 } else { st.c_p as f64 * p[i] };
            // Clipped steps weigh the denoised estimate, clipped to [-1, 1], not the score.
            let sc = if st.flags & FLAG_CLIP_X0 != 0 {
                let (a, sigma) = (planned.level.a, planned.level.sigma);
                ((x[i] + sigma * sigma * s[i]) / a).clamp(-1.0, 1.0)
            } else {
                s[i]
            };
            let x_new = xc + c_s * sc + c_z * z[i] + pc;
            if st.flags & FLAG_SAVE != 0 {
                p[i] = st.k_x as f64 * x[i] + st.k_s as f64 * s[i];
            }
            x[i] = x_new;
        }
    }
}

/// [`run`] of a whole inpainting plan (`Sampler::plan` of `Sampler::inpaint`): after each step
/// flagged FLAG_IMPUTE, the known coordinates become a y + sigma z at the next step's level
/// (y itself after the last), z from stream `SamplerImpute.at(step)`.
pub fn run_inpainting(
    plan: &[PlannedStep],
    seed: u64,
    x: &mut [f64],
    p: &mut [f64],
    known: &Known,
    score: impl Fn(&[f64], &NoiseLevel) -> Vec<f64>,
) {
    let d = known.dim;
    let d4 = d.div_ceil(4) as u64 * 4;
    for i in 0..plan.len() {
        run(plan, i..i + 1, seed, d, x, p, &score);
        if plan[i].step.flags & FLAG_IMPUTE == 0 {
            continue;
        }
        let (a, sigma) = plan.get(i + 1).map_or((1.0, 0.0), |next| (next.step.a as f64, next.step.sigma as f64));
        let stream = Stream::SamplerImpute.at(i as u32);
        for (k, v) in x.iter_mut().enumerate() {
            if known.mask[k] != 0 {
                let z = rng::normal_at(seed, stream, (k / d) as u64 * d4 + (k % d) as u64);
                *v = a * known.values[k] as f64 + sigma * z;
            }
        }
    }
}
