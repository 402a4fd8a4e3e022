//! Adam over the flat parameter buffer, with an EMA of the weights for sampling.

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
