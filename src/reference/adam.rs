//! Adam and the EMA in f64, as shaders/adam.wgsl applies them.

use crate::optim::AdamConfig;

/// The Adam update with 1-based count `t`, in place, then the EMA.
pub fn step(
    cfg: &AdamConfig,
    t: u64,
    params: &mut [f64],
    grads: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    ema: &mut [f64],
) {
    let (c1, c2) = cfg.bias_corrections(t);
    for p in 0..params.len() {
        let g = grads[p];
        m[p] = cfg.beta1 * m[p] + (1.0 - cfg.beta1) * g;
        v[p] = cfg.beta2 * v[p] + (1.0 - cfg.beta2) * g * g;
        params[p] -= cfg.lr * (m[p] / c1) / ((v[p] / c2).sqrt() + cfg.eps);
        ema[p] = cfg.ema_decay * ema[p] + (1.0 - cfg.ema_decay) * params[p];
    }
}
