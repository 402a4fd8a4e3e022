//! The WGSL sources, compiled into the binary, and how they compose into kernels.

use crate::gpu::KernelSource;

pub const RNG_WGSL: &str = include_str!("../shaders/rng.wgsl");
pub const NOISE_WGSL: &str = include_str!("../shaders/noise.wgsl");
pub const FMA_WGSL: &str = include_str!("../shaders/fma.wgsl");
pub const STEP_WGSL: &str = include_str!("../shaders/step.wgsl");
pub const EMBED_WGSL: &str = include_str!("../shaders/embed.wgsl");
pub const DENSE_WGSL: &str = include_str!("../shaders/dense.wgsl");
pub const MLP_WGSL: &str = include_str!("../shaders/mlp.wgsl");
pub const MLP_SUBGROUP_WGSL: &str = include_str!("../shaders/mlp_subgroup.wgsl");
pub const OBJECTIVE_WGSL: &str = include_str!("../shaders/objective.wgsl");
pub const ADAM_WGSL: &str = include_str!("../shaders/adam.wgsl");
pub const SAMPLE_WGSL: &str = include_str!("../shaders/sample.wgsl");
pub const TRAIN_ROWS_WGSL: &str = include_str!("../shaders/train_rows.wgsl");
pub const FUSED_ROWS_WGSL: &str = include_str!("../shaders/fused_rows.wgsl");
pub const FUSED_ROWS_SUBGROUP_WGSL: &str = include_str!("../shaders/fused_rows_subgroup.wgsl");
pub const MIXTURE_WGSL: &str = include_str!("../shaders/mixture.wgsl");
pub const LIKELIHOOD_WGSL: &str = include_str!("../shaders/likelihood.wgsl");

/// Philox output and normals into a buffer.
pub const NOISE: KernelSource = KernelSource {
    name: "noise",
    parts: &[RNG_WGSL, NOISE_WGSL],
    bindings: crate::noise::binding::ALL,
    subgroups: false,
};
/// The FMA-ceiling probe.
pub const FMA: KernelSource =
    KernelSource { name: "fma", parts: &[FMA_WGSL], bindings: fma_binding::ALL, subgroups: false };
/// shaders/fma.wgsl's binding (here: its host, src/ceiling.rs, is native-only, the kernel is not).
pub mod fma_binding {
    crate::bindings!(OUT = 0);
}

/// Dense layers: forward, backward to the input, backward to the weights; a block of C per
/// invocation.
pub const MLP: KernelSource = KernelSource {
    name: "mlp",
    parts: &[DENSE_WGSL, MLP_WGSL],
    bindings: crate::model::binding::ALL,
    subgroups: false,
};
/// The same dense layers computed by subgroups that share each load of B.
pub const MLP_SUBGROUP: KernelSource = KernelSource {
    name: "mlp_subgroup",
    parts: &[DENSE_WGSL, MLP_SUBGROUP_WGSL],
    bindings: crate::model::binding::ALL,
    subgroups: true,
};
/// Noise injection, input embedding, loss and its gradient.
pub const OBJECTIVE: KernelSource = KernelSource {
    name: "objective",
    parts: &[RNG_WGSL, STEP_WGSL, EMBED_WGSL, OBJECTIVE_WGSL],
    bindings: crate::objective::kernels::binding::ALL,
    subgroups: false,
};
/// Adam and the EMA of the weights.
pub const ADAM: KernelSource = KernelSource {
    name: "adam",
    parts: &[STEP_WGSL, ADAM_WGSL],
    bindings: crate::optim::binding::ALL,
    subgroups: false,
};

/// Sampler steps: exact mixture scores, the per-particle network, updates, the corrector's norms;
/// and the training forward pass computed as the per-particle network is.
pub const SAMPLE: KernelSource = KernelSource {
    name: "sample",
    parts: &[RNG_WGSL, EMBED_WGSL, MIXTURE_WGSL, SAMPLE_WGSL, TRAIN_ROWS_WGSL, FUSED_ROWS_WGSL],
    bindings: crate::sample::binding::ALL,
    subgroups: false,
};
/// The same, with the fused network's weight loads shared by the lanes of a subgroup.
pub const SAMPLE_SUBGROUP: KernelSource = KernelSource {
    name: "sample_subgroup",
    parts: &[RNG_WGSL, EMBED_WGSL, MIXTURE_WGSL, SAMPLE_WGSL, TRAIN_ROWS_WGSL, FUSED_ROWS_SUBGROUP_WGSL],
    bindings: crate::sample::binding::ALL,
    subgroups: true,
};

/// The probability-flow ODE's Runge-Kutta stages, step control and divergence.
pub const LIKELIHOOD: KernelSource = KernelSource {
    name: "likelihood",
    parts: &[RNG_WGSL, EMBED_WGSL, MIXTURE_WGSL, LIKELIHOOD_WGSL],
    bindings: crate::likelihood::binding::ALL,
    subgroups: false,
};

/// Every kernel, for the validation test and for warming the pipeline cache.
pub const ALL: &[KernelSource] = &[NOISE, FMA, MLP, MLP_SUBGROUP, OBJECTIVE, ADAM, SAMPLE, SAMPLE_SUBGROUP, LIKELIHOOD];
