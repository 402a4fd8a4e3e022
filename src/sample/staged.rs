//! The staged path: per step, the score for all particles (the exact mixture, or the embedding
//! and the dense-layer kernels), the corrector's norms where the step has one, the update, and
//! when inpainting the imputation; for any network and for methods that couple the particles.

use super::method::{SampleStep, FLAG_IMPUTE, FLAG_NO_SCORE};
use super::{binding, Classes, Known, SharedBindings};
use crate::error::Result;
use crate::gpu::{Bound, Gpu, GpuBuffer};
use crate::model::MlpPass;
use crate::sample::ScoreSource;
use crate::shaders;

/// How a staged step gets its score.
enum ScoreStage {
    Mixture(Bound),
    Network { embed: Embed, mlp: Box<MlpPass> },
}

/// The `embed` kernel (the network's input rows) and the particles' labels it reads.
struct Embed {
    kernel: Bound,
    _labels: GpuBuffer<u32>,
}

pub(super) struct Staged {
    score: ScoreStage,
    norms: Bound,
    reduce: Bound,
    update: Bound,
    /// Inpainting: the kernel that resets the known coordinates after each step of the method.
    impute: Option<Impute>,
}

/// The `impute` kernel and the known values and mask it reads.
struct Impute {
    kernel: Bound,
    _values: GpuBuffer<f32>,
    _mask: GpuBuffer<u32>,
}

impl Staged {
    /// Records one step's dispatches over `grid` (workgroups of the particles).
    pub(super) fn record(&self, pass: &mut wgpu::ComputePass<'_>, step: &SampleStep, grid: [u32; 2]) {
        if step.flags & FLAG_NO_SCORE == 0 {
            match &self.score {
                ScoreStage::Mixture(score) => score.dispatch(pass, grid),
                ScoreStage::Network { embed, mlp } => {
                    embed.kernel.dispatch(pass, grid);
                    mlp.record_forward(pass);
                }
            }
        }
        if step.snr > 0.0 {
            self.norms.dispatch(pass, grid);
            self.reduce.dispatch(pass, [1, 1]);
        }
        self.update.dispatch(pass, grid);
        if let Some(impute) = self.impute.as_ref().filter(|_| step.flags & FLAG_IMPUTE != 0) {
            impute.kernel.dispatch(pass, grid);
        }
    }

    /// The network's dense-layer pass, whose weight windows need refreshing before a batch.
    pub(super) fn network(&self) -> Option<&MlpPass> {
        match &self.score {
            ScoreStage::Network { mlp, .. } => Some(mlp),
            ScoreStage::Mixture(..) => None,
        }
    }
}

/// The staged kernels (score, corrector norms, update, and with `known` the imputation) with
/// their bind groups, and the buffers they need kept alive. A class-conditional network reads
/// each particle's label from `classes` and, guided, evaluates every particle twice (rows N ..
/// 2N unconditional).
pub(super) async fn staged_kernels(
    gpu: &Gpu,
    source: &ScoreSource<'_>,
    constants: &[(&str, f64)],
    n: usize,
    shared: &SharedBindings<'_>,
    (known, classes): (Option<&Known>, Option<&Classes>),
) -> Result<(Staged, Vec<GpuBuffer<f32>>)> {
    let d = source.dim();
    let none = wgpu::BufferUsages::empty();
    let buf = |label: &str, len: usize| GpuBuffer::<f32>::new(gpu, label, len, none);
    let mut keep = Vec::new();
    let norms = buf("scorefield.sample.norms", 2 * n)?;
    let norm_sum = buf("scorefield.sample.norm_sum", 2)?;
    let (score_stage, score_buffer) = match *source {
        ScoreSource::Mixture(_) => {
            let score = buf("scorefield.sample.score", n * d)?;
            let pipeline = gpu.pipeline(&shaders::SAMPLE, "score_mixture", constants).await?;
            let bg = shared.particle_kernel(
                gpu,
                &pipeline,
                &[(binding::SCORE, score.binding()), (binding::MIXTURE, shared.mixture.binding())],
            );
            let raw = score.raw().clone();
            keep.push(score);
            (ScoreStage::Mixture(Bound::new(pipeline, bg)), raw)
        }
        ScoreSource::Network { model, weights, .. } => {
            let rows = if classes.is_some_and(Classes::guided) { 2 * n } else { n };
            let mlp = MlpPass::new(gpu, model, weights, rows, 0, None).await?;
            // An unconditional network reads no label, but the binding needs one word.
            let labels = classes.map_or(vec![0], |c| c.labels.clone());
            let labels = GpuBuffer::from_slice(gpu, "scorefield.sample.labels", &labels, none)?;
            let pipeline = gpu.pipeline(&shaders::SAMPLE, "embed", constants).await?;
            let bg = shared.particle_kernel(
                gpu,
                &pipeline,
                &[
                    (binding::FREQS, model.freqs.binding()),
                    (binding::NET_INPUT, mlp.acts.input.binding()),
                    (binding::LABELS, labels.binding()),
                ],
            );
            let raw = mlp.output().raw().clone();
            let embed = Embed { kernel: Bound::new(pipeline, bg), _labels: labels };
            (ScoreStage::Network { embed, mlp: Box::new(mlp) }, raw)
        }
    };
    let score_binding =
        || wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &score_buffer, offset: 0, size: None });
    let measure = gpu.pipeline(&shaders::SAMPLE, "measure_norms", constants).await?;
    let measure_bg = measure.bind_group(
        gpu,
        &[
            (binding::CURSOR, shared.cursor_binding()),
            (binding::SCHEDULE, shared.schedule.binding()),
            (binding::SCORE, score_binding()),
            (binding::NORMS, norms.binding()),
        ],
    );
    let reduce = gpu.pipeline(&shaders::SAMPLE, "reduce_norms", constants).await?;
    let reduce_bg =
        reduce.bind_group(gpu, &[(binding::NORMS, norms.binding()), (binding::NORM_SUM, norm_sum.binding())]);
    let update = gpu.pipeline(&shaders::SAMPLE, "update", constants).await?;
    let update_bg = shared.particle_kernel(
        gpu,
        &update,
        &[
            (binding::SAVED, shared.saved.binding()),
            (binding::SCORE, score_binding()),
            (binding::NORM_SUM, norm_sum.binding()),
        ],
    );
    keep.push(norms);
    keep.push(norm_sum);
    let impute = match known {
        Some(known) => Some(impute_kernel(gpu, constants, shared, known).await?),
        None => None,
    };
    let staged = Staged {
        score: score_stage,
        norms: Bound::new(measure, measure_bg),
        reduce: Bound::new(reduce, reduce_bg),
        update: Bound::new(update, update_bg),
        impute,
    };
    Ok((staged, keep))
}

/// The `impute` kernel over the known values and mask.
async fn impute_kernel(
    gpu: &Gpu,
    constants: &[(&str, f64)],
    shared: &SharedBindings<'_>,
    known: &Known,
) -> Result<Impute> {
    let none = wgpu::BufferUsages::empty();
    let values = GpuBuffer::from_slice(gpu, "scorefield.sample.known", &known.values, none)?;
    let mask = GpuBuffer::from_slice(gpu, "scorefield.sample.known_mask", &known.mask, none)?;
    let pipeline = gpu.pipeline(&shaders::SAMPLE, "impute", constants).await?;
    let bind_group = shared.particle_kernel(
        gpu,
        &pipeline,
        &[(binding::KNOWN, values.binding()), (binding::KNOWN_MASK, mask.binding())],
    );
    Ok(Impute { kernel: Bound::new(pipeline, bind_group), _values: values, _mask: mask })
}
