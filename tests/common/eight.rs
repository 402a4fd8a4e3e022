//! A statistical check of samples against the eight-Gaussian mixture, with thresholds
//! calibrated on exact samples: independent draws against the same reference give the null
//! distribution of each statistic (64 draws, so the sds are estimated to ~10%: with 16 for
//! MMD^2, an sd read 30% low put the limit under exact-score samplers' MMD^2, and two CI runs of
//! session 18 failed `every_sampler_matches_the_eight_gaussians` at 4.3-6.1e-4 against limits of
//! 4.5e-4, the failing samplers' other statistics inside their tolerances).
//!
//! - mode shares (nearest mode): each within 5 binomial standard errors of 1/8, plus the
//!   tolerated weight error (below): a model allowed weights off by 0.02 was held to shares
//!   within 0.026 of 1/8, so 1.1 standard errors of noise failed it (the main job's samples
//!   failed a session-18 CI run at 0.0259 against 0.0258);
//! - spread (rms distance to the nearest mode, per axis; 0.5 exactly): within 3 sd plus 5%;
//! - far share (farther than 1.5 = 3 stds from every mode; 1.1% exactly): below the far share of
//!   a 5% too wide mixture plus 4 sd;
//! - MMD^2 (Gaussian kernel, bandwidth 0.5): below that of a 5% too wide mixture plus 5 sd. Not
//!   4 as for the far share: the unbiased MMD^2's null is a weighted sum of centred chi-squares,
//!   skewed to the right, so 4 sd covers less of it than of a normal, and one test holds twelve
//!   samplers to the limit, those of one initial noise together (the deterministic ones moved
//!   as one in the failures below). The check still rejects two weights off by 0.05 on MMD^2
//!   alone (1.4-2.2e-3 against limits of 5-7e-4) and a 10% too wide mixture on its spread.
//!
//! "That of a 5% too wide mixture" (the tolerated mixture) is its mean over several draws (8 for MMD^2, 64 for the far
//! share), not one draw: one draw's MMD^2 varies by about the null sd itself, so a limit built on
//! it was sometimes two sds low, and the 4 sd margin, meant for the tested sample's own noise,
//! shrank to under 3 (a CI run failed the main job's samples at MMD^2 4.5e-4 against a limit of
//! 3.7e-4 when the limit's mean is about 5.5e-4).
//!
//! The 5% is the bias a method may have: samplers' own O(step) biases reach ~4%
//! (tests/sample.rs), a learned score's ~2-4% (WORKLOADS.md notes). `rejects_what_it_must`
//! shows the check fails a 10% error in the spread and a 0.05 error in two weights.
//!
//! A learned score also gets the mode weights wrong by a little (MMD^2 is more sensitive to
//! that than the share check): `weight_error` makes the tolerated mixture's first two weights
//! 1/8 +- that much as well. Exact scores get 0; the main job's model gets the error its recipe
//! is measured to leave (tests/cli.rs).

use scorefield::mixture::GaussianMixture;

pub struct EightGaussiansCheck {
    mix: GaussianMixture,
    reference: Vec<f64>,
    mmd_limit: f64,
    spread_mean: f64,
    spread_tol: f64,
    far_limit: f64,
    share_tol: f64,
}

const FAR: f64 = 1.5;

impl EightGaussiansCheck {
    pub fn new(n: usize, seed: u64, weight_error: f64) -> Self {
        let mix = GaussianMixture::eight_gaussians();
        let reference = mix.sample(n, seed).0;
        let draw = |i: u64| to32(&mix.sample(n, seed ^ (i * 7919)).0);
        let mut weights = mix.weights.clone();
        weights[0] += weight_error;
        weights[1] -= weight_error;
        let tolerated = GaussianMixture { stds: vec![0.525; 16], weights, ..mix.clone() };
        let tolerated_draw = |i: u64| to32(&tolerated.sample(n, seed ^ 4242 ^ (i * 104_729)).0);
        let (_, mmd_sd) = mean_sd(&(1..=64).map(|i| mmd2(&draw(i), &reference)).collect::<Vec<_>>());
        let (mmd_tolerated, _) = mean_sd(&(1..=8).map(|i| mmd2(&tolerated_draw(i), &reference)).collect::<Vec<_>>());
        let mmd_limit = mmd_tolerated + 5.0 * mmd_sd;
        let nulls: Vec<Vec<f32>> = (1..=64).map(draw).collect();
        let (spread_mean, spread_sd) = mean_sd(&nulls.iter().map(|x| mode_spread(&mix, x)).collect::<Vec<_>>());
        let (_, far_sd) = mean_sd(&nulls.iter().map(|x| far_share(&mix, x)).collect::<Vec<_>>());
        let (far_tolerated, _) = mean_sd(&(1..=64).map(|i| far_share(&mix, &tolerated_draw(i))).collect::<Vec<_>>());
        let check = Self {
            far_limit: far_tolerated + 4.0 * far_sd,
            spread_tol: 3.0 * spread_sd + 0.05 * spread_mean,
            share_tol: weight_error + 5.0 * (0.125f64 * 0.875 / n as f64).sqrt(),
            mmd_limit,
            spread_mean,
            mix,
            reference,
        };
        eprintln!(
            "eight-Gaussian check (tolerated weight error {weight_error}): MMD^2 limit {:.2e}; spread {:.4} +- {:.4}; far share limit {:.4}; share tolerance {:.4}",
            check.mmd_limit, check.spread_mean, check.spread_tol, check.far_limit, check.share_tol
        );
        check
    }

    /// What is wrong with the samples `x` [n, 2] (empty: they pass).
    pub fn problems(&self, x: &[f32]) -> Vec<String> {
        let m = mmd2(x, &self.reference);
        let spread = mode_spread(&self.mix, x);
        let far = far_share(&self.mix, x);
        let shares = mode_shares(&self.mix, x);
        let worst = super::worst(shares.iter().map(|s| (s - 0.125).abs()));
        eprintln!("    MMD^2 {m:.2e}, spread {spread:.4}, far share {far:.4}, worst share error {worst:.4}");
        let mut bad = Vec::new();
        if m.is_nan() || m >= self.mmd_limit {
            bad.push(format!("MMD^2 {m:.2e} > {:.2e}", self.mmd_limit));
        }
        if spread.is_nan() || (spread - self.spread_mean).abs() >= self.spread_tol {
            bad.push(format!("spread {spread:.4} vs {:.4} +- {:.4}", self.spread_mean, self.spread_tol));
        }
        if far.is_nan() || far >= self.far_limit {
            bad.push(format!("{far:.4} of the samples are far from every mode (limit {:.4})", self.far_limit));
        }
        if worst.is_nan() || worst >= self.share_tol {
            bad.push(format!("a mode share is off by {worst:.4} > {:.4}; shares {shares:.3?}", self.share_tol));
        }
        bad
    }

    /// Panics unless the check rejects a 10% too wide mixture and one with two weights off by 0.05.
    pub fn rejects_what_it_must(&self, n: usize, seed: u64) {
        let wider = GaussianMixture { stds: vec![0.55; 16], ..self.mix.clone() };
        let skewed = GaussianMixture {
            weights: vec![0.175, 0.075, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125],
            ..self.mix.clone()
        };
        for (what, wrong) in [("stds 0.55", wider), ("two weights off by 0.05", skewed)] {
            eprintln!("{what}:");
            assert!(!self.problems(&to32(&wrong.sample(n, seed ^ 99).0)).is_empty(), "the check must reject {what}");
        }
    }
}

fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

/// Squared distance of `p` to its nearest mean, and that mean's index.
fn nearest(mix: &GaussianMixture, p: &[f32]) -> (f64, usize) {
    let dist = |k: usize| p.iter().zip(mix.mean(k)).map(|(&a, b)| (a as f64 - b).powi(2)).sum::<f64>();
    (0..mix.components()).map(|k| (dist(k), k)).fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
}

/// Share of the points nearest each mean.
pub fn mode_shares(mix: &GaussianMixture, x: &[f32]) -> Vec<f64> {
    let mut counts = vec![0usize; mix.components()];
    for p in x.chunks(mix.dim) {
        counts[nearest(mix, p).1] += 1;
    }
    counts.iter().map(|&c| c as f64 / (x.len() / mix.dim) as f64).collect()
}

/// The root-mean-square distance of points to their nearest mean, per axis (0.5 for exact
/// samples of the eight Gaussians, up to the sliver of tails nearer another mode). NaN points
/// make it NaN.
pub fn mode_spread(mix: &GaussianMixture, x: &[f32]) -> f64 {
    let total: f64 =
        x.chunks(mix.dim).map(|p| if p.iter().all(|v| v.is_finite()) { nearest(mix, p).0 } else { f64::NAN }).sum();
    (total / (x.len() as f64)).sqrt()
}

/// Share of the points farther than `FAR` from every mean (non-finite points count as far).
fn far_share(mix: &GaussianMixture, x: &[f32]) -> f64 {
    let far = x
        .chunks(mix.dim)
        .filter(|p| nearest(mix, p).0.partial_cmp(&(FAR * FAR)) != Some(std::cmp::Ordering::Less))
        .count();
    far as f64 / (x.len() / mix.dim) as f64
}

/// Unbiased MMD^2 between 2-D point sets, Gaussian kernel of bandwidth 0.5 (the modes' std).
pub fn mmd2(x: &[f32], y: &[f64]) -> f64 {
    let k = |a: &[f64], b: &[f64]| {
        let r2: f64 = a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum();
        (-r2 / (2.0 * 0.25)).exp()
    };
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (xs, ys): (Vec<&[f64]>, Vec<&[f64]>) = (x.chunks(2).collect(), y.chunks(2).collect());
    let (n, m) = (xs.len() as f64, ys.len() as f64);
    let within = |s: &[&[f64]]| {
        let mut t = 0.0;
        for i in 0..s.len() {
            for j in 0..i {
                t += 2.0 * k(s[i], s[j]);
            }
        }
        t
    };
    let cross: f64 = xs.iter().map(|a| ys.iter().map(|b| k(a, b)).sum::<f64>()).sum();
    within(&xs) / (n * (n - 1.0)) + within(&ys) / (m * (m - 1.0)) - 2.0 * cross / (n * m)
}
