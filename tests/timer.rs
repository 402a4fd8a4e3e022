//! The benchmarks' GPU clock (`scorefield::gpu::Clock`): timestamps around a stretch of device
//! work read a positive time within the host time around the same call, and close enough to it
//! that the work itself was timed, not only the empty marking passes.

mod common;

use scorefield::gpu::{Clock, GpuBuffer};
use scorefield::noise::NoiseKernels;

#[test]
fn gpu_timestamps_time_the_work_between_the_marks() {
    let gpu = common::gpu();
    if gpu.adapter_info().name.contains("llvmpipe") {
        // lavapipe and llvmpipe's GL offer timestamp queries: the device must have asked for them.
        assert!(gpu.has_timestamps(), "the device was created without the adapter's timestamp queries");
    }
    let clock = Clock::new(&gpu, false);
    if !matches!(clock, Clock::Timestamps(_)) {
        eprintln!("{}: no timestamp queries; the benchmarks use the host clock", gpu.describe());
        return;
    }
    let noise = pollster::block_on(NoiseKernels::new(&gpu)).unwrap();
    let n = 1 << 20;
    let out = GpuBuffer::<f32>::new(&gpu, "test.timer.normals", n, wgpu::BufferUsages::empty()).unwrap();
    noise.fill_normal(&gpu, &out, 1, 1, 0).unwrap();
    gpu.wait(None).unwrap();
    for fills in [1, 8] {
        let host = std::time::Instant::now();
        let work = || (0..fills).try_for_each(|r| noise.fill_normal(&gpu, &out, 1, 1, (r * n) as u64));
        let device = pollster::block_on(clock.time(&gpu, work)).unwrap();
        let host = host.elapsed().as_secs_f64();
        eprintln!(
            "{fills} fills of {n} normals: {:.3} ms on the device clock, {:.3} ms on the host's",
            device * 1e3,
            host * 1e3
        );
        assert!(device > 0.0 && device <= host, "device {device} s, host {host} s");
        // Not a speed claim: the two clocks around the same work. A stop mark that did not wait
        // for the work would read the empty passes' microseconds against the fills' milliseconds.
        assert!(device > host / 20.0, "device {device} s against host {host} s: the work was not timed");
    }
}
