//! scorefield: train and sample score-based generative models on any GPU through wgpu, with
//! hand-written WGSL compute kernels and a thin host that schedules them.
//!
//! ```no_run
//! # async fn run() -> scorefield::Result<()> {
//! use scorefield::{gpu::{Gpu, GpuBuffer}, noise::NoiseKernels, rng::Stream};
//! let gpu = Gpu::new().await?;
//! let noise = NoiseKernels::new(&gpu).await?;
//! let out = GpuBuffer::<f32>::new(&gpu, "example.normals", 1024, wgpu::BufferUsages::empty())?;
//! noise.fill_normal(&gpu, &out, 42, Stream::User.at(0), 0)?;
//! let normals = out.read(&gpu).await?;
//! assert_eq!(normals.len(), 1024);
//! # Ok(()) }
//! ```
//!
//! # Inside a wgpu application (the guest role)
//!
//! An application that owns a device hands clones of it to [`gpu::Gpu::from_device`] and
//! records the engine's work into its own command encoders, then submits when it likes:
//!
//! ```no_run
//! # async fn frame(device: wgpu::Device, queue: wgpu::Queue, data: &[f32]) -> scorefield::Result<()> {
//! use scorefield::{gpu::Gpu, model::{Evaluator, Weights}, mixture::GaussianMixture};
//! use scorefield::sample::{Method, Sampler, SamplerConfig, ScoreSource};
//! use scorefield::train::{TrainConfig, Trainer};
//! let gpu = Gpu::from_device(device.clone(), queue.clone())?; // checks the limits it needs
//! let mixture = GaussianMixture::eight_gaussians();
//! let method = Method::annealed_langevin(4.0);
//! let mut sampler = Sampler::new(&gpu, ScoreSource::Mixture(&mixture), &method, SamplerConfig::new(4096, 1)).await?;
//! # let config: TrainConfig = todo!();
//! let mut trainer = Trainer::new(&gpu, config, data).await?;
//! let field = Evaluator::new(&gpu, trainer.model(), Weights::Ema, 24 * 24).await?;
//! # let (grid, cond): (Vec<f32>, Vec<f32>) = todo!();
//! field.set_points(&gpu, &grid, &cond)?;
//! // Every frame, in the application's encoder, beside its own passes:
//! let mut encoder = device.create_command_encoder(&Default::default());
//! trainer.record_steps(&mut encoder, 4)?; // a few training steps
//! sampler.record(&mut encoder, 1); // a few sampler steps
//! field.record(&gpu, &mut encoder); // the learned score on a grid
//! // ... the application's render pass draws `sampler.particles().raw()` and `field.output()`
//! // as vertex buffers (Float32x2 per row for 2-D data) ...
//! queue.submit([encoder.finish()]);
//! # Ok(()) }
//! ```
//!
//! What the engine never does to the application:
//! - create an instance, adapter, device, surface or window, or install an error or
//!   device-lost handler on the application's device (it does on a device it opened itself,
//!   [`gpu::Gpu::new`], to turn a lost device into [`Error::DeviceLost`]);
//! - submit, wait or poll on the recording paths ([`train::Trainer::record_steps`],
//!   [`sample::Sampler::record`], [`model::Evaluator::record`]); their only queue operations are
//!   `write_buffer`s into the engine's own buffers, which land before the application's next
//!   submit (up to [`train::RING_CALLS`] training calls may be recorded before it);
//! - touch a buffer, texture or pipeline it did not create. The buffers it hands out
//!   (particles, the evaluator's output) are VERTEX | STORAGE | COPY_SRC, laid out as `[n, d]`
//!   f32 row-major, and stay valid as long as their owner lives.
//!
//! Waiting happens only in the `async` read methods (`read`, `finish`, `checkpoint`) and in the
//! convenience runners (`Trainer::run`, `Sampler::run`), which submit themselves.

// Host-clock timing (std::time::Instant, which the browser does not have): native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod ceiling;
pub mod checkpoint;
pub mod data;
mod error;
pub mod gpu;
pub mod health;
pub mod likelihood;
pub mod mixture;
pub mod model;
pub mod noise;
pub mod objective;
pub mod optim;
pub mod quality;
pub mod reference;
pub mod rng;
pub mod sample;
pub mod schedule;
pub mod shaders;
pub mod step;
pub mod train;

pub use error::{Error, Result};

/// README.md's Rust code, compiled by `cargo test` (doctests) so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
