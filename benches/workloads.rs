//! `cargo bench`: the workloads W1-W4 of ../shared/WORKLOADS.md against the adapter's measured
//! FMA ceiling, as a markdown table. The whole workloads take long on a CPU adapter, so the
//! step counts are settings: SCOREFIELD_BENCH_TRAIN_STEPS (default 20; WORKLOADS.md asks for 200)
//! and SCOREFIELD_BENCH_SAMPLE_STEPS (default 20; 1000 is W3/W4 as defined), and
//! SCOREFIELD_BENCH_REPEATS (default 3). `scorefield bench` runs the same with flags.
//! `cargo bench --bench workloads -- kernels` times each kernel on its own instead
//! (`scorefield bench --kernels`), SCOREFIELD_BENCH_KERNEL_CALLS (default 10) calls per timing.
//! Timed with GPU timestamps where the adapter has them; SCOREFIELD_BENCH_HOST_CLOCK=1 times
//! with the host clock instead.

use scorefield::bench::{self, Workload, TABLE_HEADER};
use scorefield::gpu::{Clock, Gpu};
use scorefield::sample::Path;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> scorefield::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument picks workloads by name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    pollster::block_on(async {
        let gpu = Gpu::new().await?;
        let ceiling = scorefield::ceiling::measure(&gpu, 3).await?.best.median_gflops;
        println!("adapter: {}", gpu.describe());
        let clock = Clock::new(&gpu, setting("SCOREFIELD_BENCH_HOST_CLOCK", 0) != 0);
        println!("FMA ceiling: {ceiling:.1} GFLOP/s; timing: {}", clock.describe());
        let repeats = setting("SCOREFIELD_BENCH_REPEATS", 3);
        if filter.iter().any(|f| f == "kernels") {
            println!("{}", bench::KERNEL_TABLE_HEADER);
            for r in bench::kernels(&gpu, &clock, setting("SCOREFIELD_BENCH_KERNEL_CALLS", 10), repeats).await? {
                println!("{}", r.table_row(ceiling));
            }
            return Ok(());
        }
        println!("{TABLE_HEADER}");
        for w in Workload::ALL {
            if !filter.is_empty() && !filter.iter().any(|f| w.name().contains(f.as_str())) {
                continue;
            }
            let steps = if w.is_training() {
                setting("SCOREFIELD_BENCH_TRAIN_STEPS", 20)
            } else {
                setting("SCOREFIELD_BENCH_SAMPLE_STEPS", 20)
            };
            let r = bench::run(&gpu, &clock, w, steps, repeats, Path::Auto).await?;
            println!("{}", r.table_row(ceiling));
        }
        Ok(())
    })
}
