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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { repeats } => pollster::block_on(info(repeats)),
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

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
