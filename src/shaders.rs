//! The WGSL sources, compiled into the binary, and how they compose into kernels.

use crate::gpu::KernelSource;

pub const RNG_WGSL: &str = include_str!("../shaders/rng.wgsl");
pub const NOISE_WGSL: &str = include_str!("../shaders/noise.wgsl");
pub const FMA_WGSL: &str = include_str!("../shaders/fma.wgsl");

/// Philox output and normals into a buffer.
pub const NOISE: KernelSource = KernelSource { name: "noise", parts: &[RNG_WGSL, NOISE_WGSL] };
/// The FMA-ceiling probe.
pub const FMA: KernelSource = KernelSource { name: "fma", parts: &[FMA_WGSL] };

/// Every kernel, for the validation test and for warming the pipeline cache.
pub const ALL: &[KernelSource] = &[NOISE, FMA];
