//! The fused path: every step of a dispatch in one kernel per particle (or PPI particles), the
//! particle in private memory, the network's weights through uniform windows; and the loop
//! budget that caps its steps per dispatch on llvmpipe.

use super::{binding, SharedBindings, MAX_FUSED_LAYERS, WINDOW_BYTES};
use crate::error::{Error, Result};
use crate::gpu::{uniform_window, Bound, DenseKernel, Gpu, GpuBuffer, WeightWindows};
use crate::model::Weights;
use crate::sample::{SamplerConfig, ScoreSource};
use crate::shaders;

/// The fused kernel with its bind group and, for a network, the copies that fill its weight
/// windows; and the placeholder buffer bound where the other score source's inputs go.
pub(super) async fn fused_kernel(
    gpu: &Gpu,
    source: &ScoreSource<'_>,
    constants: &[(&str, f64)],
    shared: &SharedBindings<'_>,
) -> Result<((Bound, WeightWindows), GpuBuffer<f32>)> {
    // A network's weight loads shared by the lanes of a subgroup where the device runs the
    // subgroup kernels (the same values either way).
    let network = matches!(source, ScoreSource::Network { .. });
    let kernel = match gpu.tuning().dense {
        DenseKernel::Subgroup if network => &shaders::SAMPLE_SUBGROUP,
        _ => &shaders::SAMPLE,
    };
    let pipeline = gpu.pipeline(kernel, "fused", constants).await?;
    // Both score sources are in the kernel, so every binding must be filled; the one
    // not used gets a placeholder.
    let placeholder = GpuBuffer::<f32>::new(gpu, "scorefield.sample.unused", 1, wgpu::BufferUsages::empty())?;
    let windows = match *source {
        ScoreSource::Network { model, weights, .. } => {
            let src = match weights {
                Weights::Raw => &model.params,
                Weights::Ema => &model.ema,
            };
            fused_weight_windows(gpu, &model.shape, src.raw())?
        }
        ScoreSource::Mixture(_) => {
            WeightWindows::new(gpu, "scorefield.sample.weights_unused", placeholder.raw(), 1, Vec::new())
        }
    };
    let layers = match *source {
        ScoreSource::Network { model, .. } => model.shape.hidden_layers + 1,
        ScoreSource::Mixture(_) => 0,
    };
    let window = |w: usize| {
        // Windows past the network's layers are never read; they repeat window 0, as do
        // all of them for a mixture.
        let at = if layers > 0 && (w < layers || w == MAX_FUSED_LAYERS) { w } else { 0 };
        uniform_window(windows.buffer(), at as u64 * WINDOW_BYTES)
    };
    let f = match *source {
        ScoreSource::Network { model, .. } => model.freqs.binding(),
        ScoreSource::Mixture(_) => placeholder.binding(),
    };
    let entries = [
        (binding::SAVED, shared.saved.binding()),
        (binding::MIXTURE, shared.mixture.binding()),
        (binding::FREQS, f),
        (binding::W0, window(0)),
        (binding::W1, window(1)),
        (binding::W2, window(2)),
        (binding::W3, window(3)),
        (binding::W4, window(4)),
        (binding::BIASES, window(MAX_FUSED_LAYERS)),
    ];
    let bg = shared.particle_kernel(gpu, &pipeline, &entries);
    Ok(((Bound::new(pipeline, bg), windows), placeholder))
}

/// Where the driver ends an invocation's loops past a budget (llvmpipe), a fused
/// dispatch runs no more steps than fit half of it, and a score that alone does not fit
/// (a mixture of very many components) is refused rather than silently cut short. A network
/// on the staged path is evaluated by the dense-layer kernels, layer by layer and row block by
/// row block, never in one invocation, so it is not held to the budget.
pub(super) fn fit_loop_budget(
    gpu: &Gpu,
    source: &ScoreSource<'_>,
    fused: bool,
    fused_particles: usize,
    config: &mut SamplerConfig,
) -> Result<()> {
    let in_one_invocation = fused || matches!(source, ScoreSource::Mixture(_));
    if let (Some(limit), true) = (gpu.tuning().loop_limit, in_one_invocation) {
        let score = score_loop_iterations(source, fused_particles);
        if score > limit / 2 {
            return Err(Error::invalid(
                "score source",
                format!(
                    "one score evaluation loops about {score} times per particle, more than this adapter runs in \
                     one invocation ({} of its {limit}-iteration loop budget: {}); use a mixture of fewer \
                     components or a GPU driver without that limit",
                    limit / 2,
                    gpu.adapter_info().name
                ),
            ));
        }
        if fused {
            let fit = (limit / 2 / fused_step_loop_iterations(source, fused_particles)).max(1);
            config.steps_per_dispatch = config.steps_per_dispatch.min(fit);
        }
    }
    Ok(())
}

/// About how many loop iterations one step of sample.wgsl's `fused` entry runs per invocation
/// of `ppi` particles: the score and each particle's update (and zeroed score).
fn fused_step_loop_iterations(source: &ScoreSource<'_>, ppi: usize) -> usize {
    let d = source.dim();
    ppi * (5 * d.div_ceil(4) + 1 + d) + score_loop_iterations(source, ppi)
}

/// About how many loop iterations one score evaluation runs per invocation of `ppi`
/// particles: the mixture's component loops (`mixture_score`, also the staged `score_mixture`;
/// one particle), or the network's embedding (per particle), dense-layer (shared by the
/// particles) and output loops.
fn score_loop_iterations(source: &ScoreSource<'_>, ppi: usize) -> usize {
    let d = source.dim();
    match source {
        ScoreSource::Mixture(m) => m.components() * (3 * d + 3) + 2 * d,
        ScoreSource::Network { model, .. } => {
            let dense: usize =
                model.shape.layers().iter().map(|l| l.fan_out.div_ceil(8) * (l.fan_in.div_ceil(4) + 1)).sum();
            model.shape.input_width().div_ceil(4) * (4 + 5 * ppi) + dense + ppi * (d + 1)
        }
    }
}

/// The fused kernel's view of the network: each layer's W with rows padded to a multiple of 4
/// in its own 64 KiB uniform window, then every bias in one more window; the copies that fill
/// them from the flat parameter buffer, recorded before each batch of sampling dispatches.
fn fused_weight_windows(gpu: &Gpu, shape: &crate::model::MlpShape, src: &wgpu::Buffer) -> Result<WeightWindows> {
    let mut copies = Vec::new();
    let mut bias_at = MAX_FUSED_LAYERS as u64 * WINDOW_BYTES;
    for (l, layer) in shape.layers().iter().enumerate() {
        let row = layer.fan_in.next_multiple_of(4) as u64 * 4;
        if layer.fan_out as u64 * row > WINDOW_BYTES {
            return Err(Error::invalid("fused network", format!("layer {l} does not fit a 64 KiB window")));
        }
        let window = l as u64 * WINDOW_BYTES;
        let w = layer.w_offset as u64 * 4;
        if layer.fan_in.is_multiple_of(4) {
            copies.push((w, window, (layer.fan_in * layer.fan_out) as u64 * 4));
        } else {
            for r in 0..layer.fan_out as u64 {
                copies.push((w + r * layer.fan_in as u64 * 4, window + r * row, layer.fan_in as u64 * 4));
            }
        }
        copies.push((layer.b_offset as u64 * 4, bias_at, layer.fan_out as u64 * 4));
        bias_at += layer.fan_out as u64 * 4;
    }
    Ok(WeightWindows::new(gpu, "scorefield.sample.weights", src, MAX_FUSED_LAYERS + 1, copies))
}
