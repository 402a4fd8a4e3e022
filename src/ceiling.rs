//! The adapter's float32 FMA ceiling: the figure every benchmark is measured against.
//!
//! A kernel of long independent FMA chains (shaders/fma.wgsl) runs with a sweep of accumulator
//! counts and workgroup sizes; each configuration is timed several times with the host clock
//! around a submit and a device wait, and the best configuration's median is the ceiling.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{Gpu, GpuBuffer};
use crate::shaders;

/// One configuration's timing.
#[derive(Clone, Debug)]
pub struct FmaProbe {
    pub workgroup_size: u32,
    pub accumulators: u32,
    pub median_gflops: f64,
    pub min_gflops: f64,
    pub max_gflops: f64,
}

/// The result of a sweep: every probe and the best one.
#[derive(Clone, Debug)]
pub struct FmaCeiling {
    pub probes: Vec<FmaProbe>,
    pub best: FmaProbe,
}

/// vec4 FMAs each invocation performs in total, split over its accumulators.
const FMAS_PER_INVOCATION: u32 = 4096;
/// Invocations per dispatch.
const INVOCATIONS: u32 = 1 << 16;
/// Wall time one timed repetition should take, so the clock and dispatch overhead are small.
const TARGET_SECONDS: f64 = 0.05;

/// Measures the FMA ceiling with `repeats` timings per configuration.
pub async fn measure(gpu: &Gpu, repeats: usize) -> Result<FmaCeiling> {
    let out = GpuBuffer::<f32>::new(gpu, "scorefield.fma.out", INVOCATIONS as usize, wgpu::BufferUsages::empty())?;
    let mut probes = Vec::new();
    for &wg in &[64u32, 256] {
        for &acc in &[1u32, 2, 4, 8, 16] {
            let iters = FMAS_PER_INVOCATION / acc;
            let constants = [("WG", wg as f64), ("ACC", acc as f64), ("ITERS", iters as f64)];
            let pipeline = gpu.pipeline(&shaders::FMA, "main", &constants).await?;
            let bind_group = pipeline.bind_group(gpu, &[(shaders::fma_binding::OUT, out.binding())]);
            let grid = gpu.grid(INVOCATIONS / wg);
            let flop_per_dispatch = INVOCATIONS as f64 * FMAS_PER_INVOCATION as f64 * 8.0;
            let run = |dispatches: u32| -> Result<f64> {
                let mut encoder = gpu.encoder("scorefield.fma");
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("scorefield.fma"),
                        timestamp_writes: None,
                    });
                    for _ in 0..dispatches {
                        pipeline.dispatch(&mut pass, &bind_group, grid);
                    }
                }
                let start = Instant::now();
                let submission = gpu.submit(encoder);
                gpu.wait(Some(submission))?;
                Ok(start.elapsed().as_secs_f64())
            };
            // Warm up (compiles the pipeline on lazy drivers), then size the run to the target time.
            let once = run(1)?.max(1e-6);
            let dispatches = ((TARGET_SECONDS / once).ceil() as u32).clamp(1, 4096);
            let mut gflops: Vec<f64> = Vec::with_capacity(repeats);
            for _ in 0..repeats.max(1) {
                let seconds = run(dispatches)?;
                gflops.push(flop_per_dispatch * dispatches as f64 / seconds / 1e9);
            }
            probes.push(FmaProbe {
                workgroup_size: wg,
                accumulators: acc,
                median_gflops: median(&mut gflops),
                min_gflops: gflops[0],
                max_gflops: gflops[gflops.len() - 1],
            });
        }
    }
    let best = probes
        .iter()
        .max_by(|a, b| a.median_gflops.total_cmp(&b.median_gflops))
        .cloned()
        .expect("the sweep has at least one configuration");
    Ok(FmaCeiling { probes, best })
}

/// Sorts `v` and returns its median (mean of the middle two for even lengths).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
