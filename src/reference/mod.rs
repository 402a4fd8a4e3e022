//! f64 CPU versions of every kernel, small and plainly right, for tests and for checking.
//! File for file beside shaders/: mlp.rs ~ mlp.wgsl, objective.rs ~ objective.wgsl,
//! adam.rs ~ adam.wgsl, sample.rs ~ sample.wgsl, likelihood.rs ~ likelihood.wgsl.

pub mod adam;
pub mod likelihood;
pub mod mlp;
pub mod objective;
pub mod sample;
