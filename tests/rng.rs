//! The GPU Philox stream against the host one, and the statistics of the GPU normals.

mod common;

use common::*;
use scorefield::gpu::GpuBuffer;
use scorefield::noise::NoiseKernels;
use scorefield::rng;

fn kernels(gpu: &scorefield::gpu::Gpu) -> NoiseKernels {
    pollster::block_on(NoiseKernels::new(gpu)).expect("noise kernels build")
}

#[test]
fn gpu_u32_stream_is_bit_identical_to_host() {
    let gpu = gpu();
    let noise = kernels(&gpu);
    let mut r = TestRng(test_seed());
    // Random positions, plus block counters that cross 2^32 and sit near 2^64.
    let mut cases: Vec<(u64, u64, u64)> =
        (0..6).map(|_| (r.next_u64(), r.next_u64(), r.next_u64() >> 3 << 2)).collect();
    cases.push((r.next_u64(), 7, (1u64 << 34) - 64)); // block counter crosses 2^32
    cases.push((u64::MAX, u64::MAX, u64::MAX - 4095)); // the very end of the counter space
    cases.push((0, 0, 0));
    for (seed, stream, offset) in cases {
        let len = 1000;
        let out = GpuBuffer::<u32>::new(&gpu, "test.u32", len, wgpu::BufferUsages::empty()).unwrap();
        out.fill(&gpu, POISON.to_bits());
        noise.fill_u32(&gpu, &out, seed, stream, offset).unwrap();
        let got = pollster::block_on(out.read(&gpu)).unwrap();
        let want: Vec<u32> = (0..len as u64).map(|i| rng::u32_at(seed, stream, offset.wrapping_add(i))).collect();
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(
            first_bad, None,
            "seed {seed:#x} stream {stream:#x} offset {offset:#x}: first mismatch at {first_bad:?}"
        );
    }
}

fn gpu_normals(seed: u64, stream: u64, offset: u64, len: usize) -> Vec<f32> {
    let gpu = gpu();
    let noise = kernels(&gpu);
    let out = GpuBuffer::<f32>::new(&gpu, "test.normals", len, wgpu::BufferUsages::empty()).unwrap();
    out.fill(&gpu, POISON);
    noise.fill_normal(&gpu, &out, seed, stream, offset).unwrap();
    let v = pollster::block_on(out.read(&gpu)).unwrap();
    assert_written("normals", &v);
    v
}

#[test]
fn gpu_normals_match_host_box_muller() {
    let mut r = TestRng(test_seed());
    let (seed, stream, offset) = (r.next_u64(), r.next_u64(), r.next_u64() >> 3 << 2);
    let got = gpu_normals(seed, stream, offset, 4096);
    let want = rng::normals(seed, stream, offset, 4096);
    // f32 transcendentals: |z| <= 5.8, so absolute error of a few ulps of log/cos.
    let worst = worst(got.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()));
    assert!(worst < 2e-4, "GPU normals differ from host Box-Muller by up to {worst}");
}

/// Kolmogorov-Smirnov distance of samples from N(0, 1).
fn ks_distance(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    worst(samples.iter().enumerate().map(|(i, &x)| {
        let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        (cdf - i as f64 / n).abs().max((i as f64 + 1.0) / n - cdf)
    }))
}

/// erf from the Chebyshev fit to erfc in Numerical Recipes (fractional error below 1.2e-7,
/// far under the KS thresholds used here).
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - ans
    } else {
        ans - 1.0
    }
}

#[test]
fn gpu_normals_are_standard_normal() {
    // 2^20 draws. Thresholds, each ~5 standard errors so a correct generator passes:
    //   mean: SE = 1/sqrt(n) ~ 0.00098          -> |mean| < 0.005
    //   variance: SE = sqrt(2/n) ~ 0.0014       -> |var - 1| < 0.007 (a 1% scale error moves it 0.02)
    //   KS: the 0.1% critical value 1.95/sqrt(n) ~ 0.0019 (a 1% scale error gives D ~ 0.0024)
    let n = 1 << 20;
    let mut r = TestRng(test_seed());
    let v = gpu_normals(r.next_u64(), r.next_u64(), 0, n);
    let mut x: Vec<f64> = v.iter().map(|&a| a as f64).collect();
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (n as f64 - 1.0);
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((var - 1.0).abs() < 0.007, "variance {var}");
    let d = ks_distance(&mut x);
    assert!(d < 1.95 / (n as f64).sqrt(), "KS distance {d} vs N(0,1)");
    // The same tests reject a generator off by 1% in scale.
    let mut scaled: Vec<f64> = v.iter().map(|&a| a as f64 * 1.01).collect();
    let var_scaled = scaled.iter().map(|a| a * a).sum::<f64>() / n as f64;
    assert!((var_scaled - 1.0).abs() > 0.007, "variance test cannot see a 1% scale error");
    assert!(ks_distance(&mut scaled) > 1.95 / (n as f64).sqrt(), "KS test cannot see a 1% scale error");
}

#[test]
fn neighbouring_streams_are_uncorrelated() {
    // Correlation of 2^18 pairs: SE = 1/sqrt(n) ~ 0.002; require |rho| < 0.01.
    let n = 1 << 18;
    let mut r = TestRng(test_seed());
    let (seed, stream) = (r.next_u64(), r.next_u64() >> 1);
    let a = gpu_normals(seed, stream, 0, n);
    let b = gpu_normals(seed, stream + 1, 0, n);
    let c = gpu_normals(seed.wrapping_add(1), stream, 0, n);
    for (name, other) in [("stream + 1", &b), ("seed + 1", &c)] {
        let rho = a.iter().zip(other.iter()).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / n as f64;
        assert!(rho.abs() < 0.01, "correlation with {name}: {rho}");
    }
    // And within a stream, lag-one correlation (neighbouring counters).
    let lag = a.windows(2).map(|w| w[0] as f64 * w[1] as f64).sum::<f64>() / (n - 1) as f64;
    assert!(lag.abs() < 0.01, "lag-one correlation {lag}");
}

#[test]
fn poisoned_tail_is_caught() {
    // A kernel that writes only part of its output must be caught by the poison check.
    let gpu = gpu();
    let noise = kernels(&gpu);
    let out = GpuBuffer::<f32>::new(&gpu, "test.partial", 1000, wgpu::BufferUsages::empty()).unwrap();
    out.fill(&gpu, POISON);
    noise.fill_normal_prefix(&gpu, &out, 997, 1, 2, 0).unwrap();
    let v = pollster::block_on(out.read(&gpu)).unwrap();
    assert_eq!(unwritten(&v), vec![997, 998, 999]);
}
