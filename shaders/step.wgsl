// step.wgsl: the per-step parameters shared by the objective and optimiser kernels.
// Shared WGSL: a struct only. Twin of `StepParams` in src/train.rs. The trainer writes one of
// these per step into a ring of 256-byte slots and binds the slot with a dynamic offset.

struct StepParams {
    seed: vec2<u32>,
    step: u32,
    n_data: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    adam_eps: f32,
    bias_c1: f32,     // 1 - beta1^t, t = step + 1
    bias_c2: f32,     // 1 - beta2^t
    ema_decay: f32,
    t_min: f32,       // continuous-time objectives draw t ~ U(t_min, 1)
    sigma_min: f32,   // VE SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t
    sigma_max: f32,
    beta_min: f32,    // VP SDE: beta(t) = beta_min + t (beta_max - beta_min)
    beta_max: f32,
}
