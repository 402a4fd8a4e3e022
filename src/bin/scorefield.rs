//! The scorefield command-line tool.

use anyhow::Result;
use clap::{Parser, Subcommand};
use scorefield::gpu::{list_adapters, Gpu};

#[derive(Parser)]
#[command(name = "scorefield", version, about = "Train and sample score-based generative models on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters with the limits the engine depends on, and measure the chosen adapter's
    /// float32 FMA ceiling.
    Info {
        /// Timed repetitions per configuration of the FMA probe.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Time the standard workloads W1-W4 (../shared/WORKLOADS.md) against the FMA ceiling.
    Bench {
        /// Workloads to run (default: all four).
        #[arg(long = "workload", value_parser = ["W1", "W2", "W3", "W4"])]
        workloads: Vec<String>,
        /// Training steps per timing (default 200), or sampler steps per run (default 1000,
        /// the workload as defined; fewer scale the levels' step count down).
        #[arg(long)]
        steps: Option<usize>,
        /// Timed runs per workload; the median is reported with min and max.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Sampler dispatch path.
        #[arg(long, default_value = "auto", value_parser = ["auto", "fused", "staged"])]
        path: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { repeats } => pollster::block_on(info(repeats)),
        Command::Bench { workloads, steps, repeats, path, json } => {
            pollster::block_on(bench(workloads, steps, repeats, &path, json))
        }
    }
}

async fn info(repeats: usize) -> Result<()> {
    let adapters = list_adapters().await;
    println!("adapters ({}):", adapters.len());
    for a in &adapters {
        let l = &a.limits;
        println!("  {}", a.describe());
        println!(
            "    workgroup storage {} KiB, invocations/workgroup {}, storage binding {} MiB, max buffer {} MiB, \
             storage buffers/stage {}, workgroups/dim {}",
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffer_binding_size / (1 << 20),
            l.max_buffer_size / (1 << 20),
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
        );
        let f = a.features;
        println!(
            "    subgroups {}, f16 {}, timestamps {} (inside passes {})",
            yes(f.contains(wgpu::Features::SUBGROUP)),
            yes(f.contains(wgpu::Features::SHADER_F16)),
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)),
        );
    }
    let gpu = Gpu::new().await?;
    println!("chosen: {}", gpu.describe());
    println!("measuring the float32 FMA ceiling ({repeats} runs per configuration)...");
    let ceiling = scorefield::ceiling::measure(&gpu, repeats).await?;
    for p in &ceiling.probes {
        println!(
            "  workgroup {:>3}, {:>2} vec4 accumulators: median {:>8.1} GFLOP/s (min {:.1}, max {:.1})",
            p.workgroup_size, p.accumulators, p.median_gflops, p.min_gflops, p.max_gflops
        );
    }
    let b = &ceiling.best;
    println!(
        "FMA ceiling: {:.1} GFLOP/s (median; min {:.1}, max {:.1}; workgroup {}, {} accumulators)",
        b.median_gflops, b.min_gflops, b.max_gflops, b.workgroup_size, b.accumulators
    );
    Ok(())
}

async fn bench(workloads: Vec<String>, steps: Option<usize>, repeats: usize, path: &str, json: bool) -> Result<()> {
    use scorefield::bench::{self, Workload};
    use scorefield::sample::Path;
    let gpu = Gpu::new().await?;
    let adapter = gpu.describe();
    let ceiling = scorefield::ceiling::measure(&gpu, 3).await?.best.median_gflops;
    let path = match path {
        "fused" => Path::Fused,
        "staged" => Path::Staged,
        _ => Path::Auto,
    };
    let chosen: Vec<Workload> = if workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        Workload::ALL.iter().copied().filter(|w| workloads.iter().any(|n| n == w.name())).collect()
    };
    if !json {
        println!("adapter: {adapter}");
        println!("FMA ceiling: {ceiling:.1} GFLOP/s; timing: host clock around submits and a device wait");
        println!("| workload | path | steps | median s | min s | max s | figure | GFLOP/s | of ceiling |");
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for w in chosen {
        let n = steps.unwrap_or(if w.is_training() { 200 } else { 1000 });
        let r = bench::run(&gpu, w, n, repeats, path).await?;
        let fraction = r.gflops / ceiling;
        if json {
            println!(
                "{{\"workload\":\"{}\",\"adapter\":\"{}\",\"path\":\"{}\",\"steps\":{},\"median_s\":{},\"min_s\":{},\"max_s\":{},\"figure\":{},\"unit\":\"{}\",\"gflops\":{},\"ceiling_gflops\":{},\"fraction\":{}}}",
                w.name(), adapter.replace('"', "'"), r.path, r.steps, r.seconds[0], r.seconds[1], r.seconds[2],
                r.figure, r.figure_unit, r.gflops, ceiling, fraction
            );
        } else {
            println!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.4e} {} | {:.2} | {:.1}% |",
                w.name(),
                r.path,
                r.steps,
                r.seconds[0],
                r.seconds[1],
                r.seconds[2],
                r.figure,
                r.figure_unit,
                r.gflops,
                100.0 * fraction
            );
        }
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
