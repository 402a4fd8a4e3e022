//! Adam over the flat parameter buffer, with an EMA of the weights for sampling.

/// Adam's settings and the EMA decay. Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8
/// (../shared/WORKLOADS.md), EMA 0.999 (score-model practice; ncsnv2 and score_sde use
/// 0.999-0.9999).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub ema_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, ema_decay: 0.999 }
    }
}

impl AdamConfig {
    /// Bias corrections (1 - beta1^t, 1 - beta2^t) for the update with 1-based count t.
    pub fn bias_corrections(&self, t: u64) -> (f64, f64) {
        let t = t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}
