//! Adam over the flat parameter buffer, with an EMA of the weights for sampling: its settings,
//! and the host twin of shaders/adam.wgsl (`Optimizer`: the moments, the update, and the copy of
//! the last healthy state that a blow-up restores).

use crate::error::Result;
use crate::gpu::{Bound, Gpu, GpuBuffer};
use crate::model::ScoreMlp;
use crate::shaders;
use crate::step::StepRing;

/// Adam's settings and the EMA decay. Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8
/// (../shared/WORKLOADS.md), EMA 0.999 (score-model practice; ncsnv2 and score_sde use
/// 0.999-0.9999).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The peak learning rate (the rate throughout, for a constant schedule).
    pub lr: f64,
    /// How the learning rate changes over the steps.
    pub schedule: LrSchedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub ema_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, schedule: LrSchedule::Constant, beta1: 0.9, beta2: 0.999, eps: 1e-8, ema_decay: 0.999 }
    }
}

/// The learning rate over training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from lr to 0 over `steps` (Loshchilov & Hutter 2017, SGDR without
    /// restarts), 0 after: a short run ends with small, low-noise updates instead of stopping
    /// mid-stride, which is what a fixed budget of steps wants.
    Cosine {
        steps: u64,
    },
}

impl AdamConfig {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine { steps } => {
                let progress = (step as f64 / steps.max(1) as f64).min(1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Bias corrections (1 - beta1^t, 1 - beta2^t) for the update with 1-based count t.
    pub fn bias_corrections(&self, t: u64) -> (f64, f64) {
        let t = t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// Invocations per workgroup of adam.wgsl's entry points.
const WG_ADAM: u32 = 256;

/// shaders/adam.wgsl's bindings.
pub mod binding {
    crate::bindings!(STEP = 0, GRADS = 1, PARAMS = 2, M = 3, V = 4, EMA = 5, HEALTH = 6, GOOD = 7);
}

/// Adam's moments and dispatches over a network's flat parameters, and the last healthy state
/// (params, m, v, EMA: `param_count` floats each) with the step it belongs to.
pub(crate) struct Optimizer {
    pub m: GpuBuffer<f32>,
    pub v: GpuBuffer<f32>,
    /// `main` per ring slot: the update of params, m, v and the EMA from the gradients.
    adam: Bound,
    /// Copies (params, m, v, EMA) into `kept` while no health flag is raised.
    snapshot: Bound,
    kept: GpuBuffer<f32>,
    kept_step: u64,
    params: usize,
}

impl Optimizer {
    pub async fn new(
        gpu: &Gpu,
        model: &ScoreMlp,
        grads: &GpuBuffer<f32>,
        health: &GpuBuffer<u32>,
        ring: &StepRing,
    ) -> Result<Self> {
        let p = model.shape.param_count();
        let none = wgpu::BufferUsages::empty();
        // Whole vec4s, as the parameters and their gradients (adam.wgsl runs a vec4 each).
        let m = GpuBuffer::<f32>::new_vec4s(gpu, "scorefield.train.adam_m", p, none)?;
        let v = GpuBuffer::<f32>::new_vec4s(gpu, "scorefield.train.adam_v", p, none)?;
        // Four of those buffers end to end: adam.wgsl's `snapshot` and `copies` below step by a
        // whole buffer (its vec4s), not by `p`.
        let kept = GpuBuffer::<f32>::new(gpu, "scorefield.train.good_state", 4 * p.next_multiple_of(4), none)?;
        let constants = [("P", p as f64), ("WG", WG_ADAM as f64)];
        let adam = gpu.pipeline(&shaders::ADAM, "main", &constants).await?;
        let adam_groups = (0..ring.slots())
            .map(|i| {
                adam.bind_group(
                    gpu,
                    &[
                        (binding::STEP, ring.slot(i)),
                        (binding::GRADS, grads.binding()),
                        (binding::PARAMS, model.params.binding()),
                        (binding::M, m.binding()),
                        (binding::V, v.binding()),
                        (binding::EMA, model.ema.binding()),
                        (binding::HEALTH, health.binding()),
                    ],
                )
            })
            .collect();
        let snapshot = gpu.pipeline(&shaders::ADAM, "snapshot", &constants).await?;
        let snapshot_group = snapshot.bind_group(
            gpu,
            &[
                (binding::PARAMS, model.params.binding()),
                (binding::M, m.binding()),
                (binding::V, v.binding()),
                (binding::EMA, model.ema.binding()),
                (binding::HEALTH, health.binding()),
                (binding::GOOD, kept.binding()),
            ],
        );
        Ok(Self {
            m,
            v,
            adam: Bound::per_slot(adam, adam_groups),
            snapshot: Bound::new(snapshot, snapshot_group),
            kept,
            kept_step: 0,
            params: p,
        })
    }

    /// One invocation per vec4 of parameters.
    fn grid(&self, gpu: &Gpu) -> [u32; 2] {
        gpu.grid((self.params.div_ceil(4) as u32).div_ceil(WG_ADAM))
    }

    /// The update with the step parameters of ring slot `slot`.
    pub fn record_update(&self, gpu: &Gpu, pass: &mut wgpu::ComputePass<'_>, slot: usize) {
        self.adam.dispatch_slot(pass, slot, self.grid(gpu));
    }

    /// Keeps the state as it is after the work recorded before, if no health flag is raised by
    /// then; it belongs to `step` (see [`Optimizer::healthy_step`]).
    pub fn record_snapshot(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("scorefield.train.snapshot"),
            timestamp_writes: None,
        });
        self.snapshot.dispatch(&mut pass, self.grid(gpu));
    }

    /// The step of the last healthy state kept on the device.
    pub fn healthy_step(&self) -> u64 {
        self.kept_step
    }

    /// Records that a snapshot whose flags came back clean holds `step`.
    pub fn kept_healthy(&mut self, step: u64) {
        self.kept_step = step;
    }

    /// Copies the live state into the kept one now (unconditionally: a fresh or resumed state
    /// is healthy); it belongs to `step`.
    pub fn keep(&mut self, gpu: &Gpu, model: &ScoreMlp, step: u64) {
        gpu.submit(self.copies(gpu, model, true));
        self.kept_step = step;
    }

    /// Copies the kept state back into the live one (submitted now); returns
    /// its step.
    pub fn restore(&self, gpu: &Gpu, model: &ScoreMlp) -> u64 {
        gpu.submit(self.copies(gpu, model, false));
        self.kept_step
    }

    /// An encoder with the copies of params, m, v and EMA into the kept state (`keep`) or back.
    fn copies(&self, gpu: &Gpu, model: &ScoreMlp, keep: bool) -> wgpu::CommandEncoder {
        let mut encoder = gpu.encoder("scorefield.train.copy_state");
        let bytes = model.params.raw().size();
        for (i, live) in [&model.params, &self.m, &self.v, &model.ema].into_iter().enumerate() {
            let at = i as u64 * bytes;
            match keep {
                true => encoder.copy_buffer_to_buffer(live.raw(), 0, self.kept.raw(), at, bytes),
                false => encoder.copy_buffer_to_buffer(self.kept.raw(), at, live.raw(), 0, bytes),
            }
        }
        encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_decays_from_lr_to_zero() {
        let a = AdamConfig { lr: 2e-3, schedule: LrSchedule::Cosine { steps: 100 }, ..AdamConfig::default() };
        assert_eq!(a.lr_at(0), 2e-3);
        assert!((a.lr_at(50) - 1e-3).abs() < 1e-12);
        assert!(a.lr_at(100).abs() < 1e-12 && a.lr_at(500).abs() < 1e-12);
        assert!((1..100).all(|t| a.lr_at(t) < a.lr_at(t - 1)));
        let c = AdamConfig { lr: 2e-3, ..AdamConfig::default() };
        assert_eq!(c.lr_at(12345), 2e-3);
    }
}
