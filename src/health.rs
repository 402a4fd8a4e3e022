//! What training does about a blow-up: the health flags the step kernels raise when the loss, a
//! gradient or a parameter turns non-finite (shaders/step.wgsl), the policy ([`NonFinite`]),
//! and the backoffs taken. The healthy state itself is kept by the optimiser
//! (`optim::Optimizer`), since it is the optimiser's state.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer};

/// What training does when the loss, a gradient or a parameter turns non-finite (NaN or
/// infinite). Either way the last healthy state, kept on the device, is restored first.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum NonFinite {
    /// Stop with [`Error::Diverged`], the trainer holding the last healthy state.
    #[default]
    Stop,
    /// Continue from the last healthy state with the learning rate times `factor`, at most
    /// `times` times over the run; then stop as [`NonFinite::Stop`] does.
    Backoff { factor: f64, times: u32 },
}

/// One recovery from a blow-up: which quantity went non-finite at which step, the step whose
/// state was restored, and the learning-rate factor used from then on.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    pub quantity: &'static str,
    pub step: u64,
    pub restored_step: u64,
    pub lr_factor: f64,
}

/// The health flags the step kernels raise (shaders/step.wgsl): per quantity, the first step
/// at which it was non-finite, u32::MAX while it never was.
pub const HEALTH_CLEAN: [u32; 3] = [u32::MAX; 3];
/// What each health flag watches, in the order of step.wgsl's HEALTH_LOSS, HEALTH_GRADIENT
/// and HEALTH_PARAMETER.
pub const HEALTH_QUANTITIES: [&str; 3] = ["loss", "gradient", "parameter update (weights or Adam moments)"];

/// The earliest non-finite quantity and its step, if any (ties in pipeline order).
pub(crate) fn first_nonfinite(flags: &[u32]) -> Option<(&'static str, u64)> {
    (0..3).filter(|&q| flags[q] != u32::MAX).min_by_key(|&q| flags[q]).map(|q| (HEALTH_QUANTITIES[q], flags[q] as u64))
}

/// The flags on the device and the run's record of blow-ups.
pub(crate) struct Health {
    pub flags: GpuBuffer<u32>,
    policy: NonFinite,
    /// The learning rate's factor after the backoffs so far.
    lr_factor: f64,
    backoffs: Vec<Backoff>,
    /// Backoffs not yet collected by [`Health::take_backoffs`].
    new_backoffs: usize,
}

impl Health {
    pub fn new(gpu: &Gpu, policy: NonFinite) -> Result<Self> {
        let flags = GpuBuffer::from_slice(gpu, "scorefield.train.health", &HEALTH_CLEAN, wgpu::BufferUsages::empty())?;
        Ok(Self { flags, policy, lr_factor: 1.0, backoffs: Vec::new(), new_backoffs: 0 })
    }

    pub fn lr_factor(&self) -> f64 {
        self.lr_factor
    }

    /// After `quantity` went non-finite at `step` and the state of `restored_step` was restored:
    /// clears the flags and backs off (Ok), or returns [`Error::Diverged`] (`lr` is the rate it
    /// diverged at) once the policy allows no more backoffs.
    pub fn after_blowup(
        &mut self,
        gpu: &Gpu,
        quantity: &'static str,
        step: u64,
        restored_step: u64,
        lr: f64,
    ) -> Result<()> {
        self.flags.write(gpu, 0, &HEALTH_CLEAN);
        match self.policy {
            NonFinite::Backoff { factor, times } if (self.backoffs.len() as u32) < times => {
                self.lr_factor *= factor;
                self.backoffs.push(Backoff { quantity, step, restored_step, lr_factor: self.lr_factor });
                self.new_backoffs += 1;
                Ok(())
            }
            _ => Err(Error::Diverged { quantity, step, restored_step, lr }),
        }
    }

    /// The backoffs since the last call.
    pub fn take_backoffs(&mut self) -> Vec<Backoff> {
        let new = self.backoffs[self.backoffs.len() - self.new_backoffs..].to_vec();
        self.new_backoffs = 0;
        new
    }
}
