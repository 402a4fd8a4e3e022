// step.wgsl: the per-step parameters shared by the objective and optimiser kernels, and the
// health flags they raise. Shared WGSL: a struct and functions. `StepParams` is the twin of
// `StepParams` in src/train.rs: the trainer writes one per step into a ring of 256-byte slots,
// each bound by its own bind group (auto-derived layouts have no dynamic offsets).
//
// Health (src/train.rs `HEALTH_QUANTITIES`, `first_nonfinite`): a kernel that includes this file declares
//   var<storage, read_write> health: array<atomic<u32>, 3>;
// holding, per quantity (HEALTH_LOSS, HEALTH_GRADIENT, HEALTH_PARAMETER), the first step at
// which it was non-finite, u32::MAX while it never was. Sticky: only the host clears it.

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

const HEALTH_LOSS: u32 = 0u;
const HEALTH_GRADIENT: u32 = 1u;
const HEALTH_PARAMETER: u32 = 2u;
const HEALTH_CLEAN: u32 = 0xffffffffu;

// NaN and infinities have an all-ones exponent. A bit test, because fast-math compilers may
// fold x == x and x - x == 0 to true.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Records that `quantity` was non-finite at step `at`.
fn report_nonfinite(quantity: u32, at: u32) {
    atomicMin(&health[quantity], at);
}
