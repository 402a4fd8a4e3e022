//! The host twin of shaders/objective.wgsl for training: the data and the noise schedule on the
//! device, and the dispatches of a step's batch draw (`perturb`, and score matching's
//! `directions`) and of its loss with the gradient at the network's output (`loss_grad`, or
//! `trace_loss` for score matching), each with one bind group per step-ring slot.

use crate::error::{Error, Result};
use crate::gpu::{Bound, Gpu, GpuBuffer, Pipeline};
use crate::model::{MlpPass, ScoreMlp, EMBED_FREQS};
use crate::objective::{
    Objective, Parametrisation, Projection, ESTIMATOR_EXACT, ESTIMATOR_GAUSSIAN, ESTIMATOR_RADEMACHER,
};
use crate::shaders;
use crate::step::StepRing;
use crate::train::TrainConfig;

/// Invocations per workgroup (one per batch row or tangent row).
const WG_ROWS: u32 = 64;

/// shaders/objective.wgsl's bindings.
pub mod binding {
    crate::bindings! {
        STEP = 0, DATA = 1, TABLE = 2, FREQS = 3, INPUT = 4, NOISE = 5, LEVEL = 6, X_EVAL = 7, COND_EVAL = 8,
        OUTPUT = 9, DOUT = 10, LOSS = 11, TAN_INPUT = 12, TAN_OUTPUT = 13, TAN_DOUT = 14, HEALTH = 15,
        LABELS = 16,
    }
}

pub(crate) struct ObjectiveKernels {
    /// Kept alive with the bind groups that read them.
    _data: GpuBuffer<f32>,
    _table: GpuBuffer<f32>,
    _labels: GpuBuffer<u32>,
    /// Each batch row's noise, level, and loss (the last step's).
    pub noise: GpuBuffer<f32>,
    pub level: GpuBuffer<f32>,
    pub loss: GpuBuffer<f32>,
    perturb: Bound,
    /// Score matching's tangent directions, drawn each step.
    directions: Option<Bound>,
    loss_grad: Bound,
    batch: usize,
    tangent_rows: usize,
}

/// The objective's constants in objective.wgsl.
fn constants(config: &TrainConfig, levels: usize) -> [(&'static str, f64); 14] {
    let objective = &config.objective;
    let d = config.shape.dim;
    let (estimator, variance_reduced) = match *objective {
        Objective::Sliced { projection: Projection::Gaussian, variance_reduced, .. } => {
            (ESTIMATOR_GAUSSIAN, variance_reduced)
        }
        Objective::Sliced { projection: Projection::Rademacher, variance_reduced, .. } => {
            (ESTIMATOR_RADEMACHER, variance_reduced)
        }
        _ => (ESTIMATOR_EXACT, false),
    };
    [
        ("D", d as f64),
        ("F", EMBED_FREQS as f64),
        ("B", config.batch as f64),
        ("L", levels.max(1) as f64),
        ("SCHEDULE", objective.schedule_kind() as f64),
        ("PARAM", if objective.parametrisation() == Parametrisation::Eps { 1.0 } else { 0.0 }),
        ("WG", WG_ROWS as f64),
        ("TANGENTS", objective.tangents(d).max(1) as f64),
        ("ESTIMATOR", estimator as f64),
        ("VARIANCE_REDUCED", if variance_reduced { 1.0 } else { 0.0 }),
        ("SCALE", objective.model_level().map_or(1.0, |l| l.sigma)),
        ("MIN_SNR", config.loss_weight.gamma()),
        ("CLASSES", config.shape.class_columns() as f64),
        ("CLASS_DROP", config.class_drop),
    ]
}

impl ObjectiveKernels {
    /// Uploads `data` (with its class `labels`, one per row, for a class-conditional network;
    /// empty otherwise) and the schedule and binds the kernels to `mlp`'s input and output rows,
    /// the model's embedding frequencies, the health flags and every slot of `ring`.
    pub async fn new(
        gpu: &Gpu,
        config: &TrainConfig,
        (data, labels): (&[f32], &[u32]),
        model: &ScoreMlp,
        mlp: &MlpPass,
        health: &GpuBuffer<u32>,
        ring: &StepRing,
    ) -> Result<Self> {
        let (batch, d) = (config.batch, config.shape.dim);
        let none = wgpu::BufferUsages::empty();
        let data_buf = GpuBuffer::from_slice(gpu, "scorefield.train.data", data, none)?;
        // An unconditional network reads no label, but the binding needs one word.
        let labels_buf =
            GpuBuffer::from_slice(gpu, "scorefield.train.labels", if labels.is_empty() { &[0] } else { labels }, none)?;
        let levels = config.objective.levels();
        let mut table: Vec<f32> =
            levels.iter().flat_map(|l| [l.a as f32, l.sigma as f32, l.cond as f32, 0.0]).collect();
        // Continuous-time objectives read no table, but the binding needs one vec4.
        table.resize(table.len().max(4), 0.0);
        let table_buf = GpuBuffer::from_slice(gpu, "scorefield.train.schedule", &table, none)?;
        let noise = GpuBuffer::<f32>::new(gpu, "scorefield.train.noise", batch * d, none)?;
        let level = GpuBuffer::<f32>::new(gpu, "scorefield.train.level", batch, none)?;
        let loss = GpuBuffer::<f32>::new(gpu, "scorefield.train.loss", batch, none)?;
        let constants = constants(config, levels.len());
        let per_slot = |pipeline: &Pipeline, entries: &[(u32, wgpu::BindingResource<'_>)]| -> Vec<wgpu::BindGroup> {
            (0..ring.slots())
                .map(|i| {
                    let mut entries = entries.to_vec();
                    entries.push((binding::STEP, ring.slot(i)));
                    pipeline.bind_group(gpu, &entries)
                })
                .collect()
        };

        let perturb = gpu.pipeline(&shaders::OBJECTIVE, "perturb", &constants).await?;
        let perturb_groups = per_slot(
            &perturb,
            &[
                (binding::DATA, data_buf.binding()),
                (binding::LABELS, labels_buf.binding()),
                (binding::TABLE, table_buf.binding()),
                (binding::FREQS, model.freqs.binding()),
                (binding::INPUT, mlp.acts.input.binding()),
                (binding::NOISE, noise.binding()),
                (binding::LEVEL, level.binding()),
            ],
        );
        let output_grad = mlp.output_grad().ok_or_else(|| Error::invalid("trainer", "no backward pass"))?;
        let mut loss_entries = vec![
            (binding::OUTPUT, mlp.output().binding()),
            (binding::DOUT, output_grad.binding()),
            (binding::LOSS, loss.binding()),
            (binding::HEALTH, health.binding()),
        ];
        // Score matching: the directions of the tangent rows each step, and the trace loss.
        let (directions, loss_entry) = match (mlp.tangent_input(), mlp.tangent_output(), mlp.tangent_output_grad()) {
            (Some(tan_input), Some(tan_output), Some(tan_dout)) => {
                let directions = gpu.pipeline(&shaders::OBJECTIVE, "directions", &constants).await?;
                let groups = per_slot(&directions, &[(binding::TAN_INPUT, tan_input.binding())]);
                loss_entries.extend([
                    (binding::TAN_INPUT, tan_input.binding()),
                    (binding::TAN_OUTPUT, tan_output.binding()),
                    (binding::TAN_DOUT, tan_dout.binding()),
                ]);
                (Some(Bound::per_slot(directions, groups)), "trace_loss")
            }
            _ => {
                loss_entries.extend([
                    (binding::TABLE, table_buf.binding()),
                    (binding::NOISE, noise.binding()),
                    (binding::LEVEL, level.binding()),
                ]);
                (None, "loss_grad")
            }
        };
        let loss_pipeline = gpu.pipeline(&shaders::OBJECTIVE, loss_entry, &constants).await?;
        let loss_groups = per_slot(&loss_pipeline, &loss_entries);
        Ok(Self {
            _data: data_buf,
            _table: table_buf,
            _labels: labels_buf,
            noise,
            level,
            loss,
            perturb: Bound::per_slot(perturb, perturb_groups),
            directions,
            loss_grad: Bound::per_slot(loss_pipeline, loss_groups),
            batch,
            tangent_rows: batch * config.objective.tangents(d),
        })
    }

    fn grid(gpu: &Gpu, rows: usize) -> [u32; 2] {
        gpu.grid((rows as u32).div_ceil(WG_ROWS))
    }

    /// The batch draw of the step in ring slot `slot`: rows, noise, network input (and the
    /// tangent rows' directions).
    pub fn record_draw(&self, gpu: &Gpu, pass: &mut wgpu::ComputePass<'_>, slot: usize) {
        self.perturb.dispatch_slot(pass, slot, Self::grid(gpu, self.batch));
        if let Some(directions) = &self.directions {
            directions.dispatch_slot(pass, slot, Self::grid(gpu, self.tangent_rows));
        }
    }

    /// The loss of the step in ring slot `slot` and its gradient at the network's output.
    pub fn record_loss(&self, gpu: &Gpu, pass: &mut wgpu::ComputePass<'_>, slot: usize) {
        self.loss_grad.dispatch_slot(pass, slot, Self::grid(gpu, self.batch));
    }
}
