//! Helpers shared by the GPU tests.
#![allow(dead_code)]

mod digits;
mod eight;

#[allow(unused_imports)] // not every test binary uses every helper
pub use digits::DigitsCheck;
#[allow(unused_imports)]
pub use eight::{mode_shares, EightGaussiansCheck};
use scorefield::gpu::{Gpu, Tuning};

/// The test GPU. No adapter is a failure, never a skip: CI must find lavapipe. Its dense kernel
/// is the adapter's guess, not timed per network (`Tuning::measure_dense`): the kernels agree
/// to the bit, tests that compare them choose them, and timing each network the tests build
/// would only add minutes (train.rs tests the measurement itself).
pub fn gpu() -> Gpu {
    match pollster::block_on(Gpu::new()) {
        Ok(gpu) => {
            let tuning = Tuning { measure_dense: false, ..gpu.tuning() };
            gpu.with_tuning(tuning)
        }
        Err(e) => panic!("GPU tests need an adapter (CI installs lavapipe): {e}"),
    }
}

/// A NaN with a payload no kernel produces: buffers are filled with it before a kernel runs, so
/// an element the kernel did not write is caught.
pub const POISON: f32 = f32::from_bits(0x7FBA_DBAD);

/// Indices still holding the poison pattern.
pub fn unwritten(values: &[f32]) -> Vec<usize> {
    values.iter().enumerate().filter(|(_, v)| v.to_bits() == POISON.to_bits()).map(|(i, _)| i).collect()
}

/// Panics naming the first unwritten elements, if any.
pub fn assert_written(what: &str, values: &[f32]) {
    let missing = unwritten(values);
    assert!(
        missing.is_empty(),
        "{what}: {} elements left unwritten, first {:?}",
        missing.len(),
        &missing[..missing.len().min(8)]
    );
}

/// Largest |a - b| / max(|b|, floor) over the elements.
pub fn max_rel_err(a: &[f32], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    worst(a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / y.abs().max(floor)))
}

/// The largest of `errors`, NaN if any is NaN (`f64::max` would drop a NaN, and a comparison
/// with a tolerance must fail on one).
pub fn worst(errors: impl IntoIterator<Item = f64>) -> f64 {
    errors.into_iter().fold(0.0, |acc, e| if acc.is_nan() || e.is_nan() { f64::NAN } else { acc.max(e) })
}

/// The worst relative error of `grads` against central differences of `loss` at `params`
/// (relative to |g|, floored at 1e-3 for gradients near zero). NaN-propagating, like
/// [`worst`]. The step h = 1e-5 is about the optimum eps^(1/3) for f64 central differences:
/// truncation O(h^2 f''') ~ 1e-10 and rounding eps |L| / h ~ 1e-11 |L|. With h = 1e-6 the
/// rounding term dominated for the residual network's larger losses (|L| ~ 10: errors up to
/// 1.7e-6, 10x more at h = 1e-7 and 20x less at h = 1e-5 for the same seed).
pub fn finite_difference_error(params: &[f64], grads: &[f64], loss: impl Fn(&[f64]) -> f64) -> f64 {
    let h = 1e-5;
    worst((0..params.len()).map(|p| {
        let (mut up, mut down) = (params.to_vec(), params.to_vec());
        up[p] += h;
        down[p] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h);
        (fd - grads[p]).abs() / grads[p].abs().max(1e-3)
    }))
}

/// A small deterministic generator for test inputs, seeded from the clock so every run draws
/// fresh inputs; the seed is printed so a failure can be replayed with SCOREFIELD_TEST_SEED.
pub fn test_seed() -> u64 {
    let seed = std::env::var("SCOREFIELD_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("test seed: {seed} (replay with SCOREFIELD_TEST_SEED={seed})");
    seed
}

/// splitmix64: plain and good enough for test inputs.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    /// An integer in 0 .. n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform(0.0, n as f64) as usize).min(n.saturating_sub(1))
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform(f64::MIN_POSITIVE, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Whether a test that needs optional tools (Xvfb, the shader validators, the browser) can run.
/// With every tool present, true. Otherwise it prints what is missing and how to install it
/// (`bash scripts/setup.sh` installs them all) and returns false, so the test skips; but where
/// SCOREFIELD_REQUIRE_TOOLS=1 (CI sets it) a missing tool fails the test instead.
pub fn tools_present(test: &str, missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var("SCOREFIELD_REQUIRE_TOOLS").map_or(true, |v| v != "1"),
        "{test} needs {missing} (SCOREFIELD_REQUIRE_TOOLS=1: a missing tool is a failure)"
    );
    eprintln!("SKIPPED: {test} needs {missing}; bash scripts/setup.sh installs it");
    false
}

/// Whether `program` runs on this machine (found on PATH and starts).
pub fn runs(program: &str, version_flag: &str) -> bool {
    std::process::Command::new(program)
        .arg(version_flag)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// A `d`-dimensional two-component mixture with weights 0.3 / 0.7, means uniform in [-3, 3] and
/// diagonal stds uniform in [0.3, 1.5]: the samplers' reference tests' exact score.
pub fn random_mixture(r: &mut TestRng, d: usize) -> scorefield::mixture::GaussianMixture {
    let means = (0..2 * d).map(|_| r.uniform(-3.0, 3.0)).collect();
    let stds = (0..2 * d).map(|_| r.uniform(0.3, 1.5)).collect();
    scorefield::mixture::GaussianMixture::new(d, vec![0.3, 0.7], means, stds).unwrap()
}

/// Runs a sampler to the end over poisoned particles and reads them back, checking that every
/// particle was written.
pub fn run_poisoned(gpu: &Gpu, sampler: &mut scorefield::sample::Sampler) -> Vec<f32> {
    sampler.particles().fill(gpu, POISON);
    sampler.run();
    let x = pollster::block_on(sampler.read()).unwrap();
    assert_written("particles", &x);
    x
}
