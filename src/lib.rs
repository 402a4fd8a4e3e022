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

// Host-clock timing (std::time::Instant): native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod ceiling;
pub mod checkpoint;
pub mod data;
mod error;
pub mod gpu;
pub mod mixture;
pub mod model;
pub mod noise;
pub mod objective;
pub mod optim;
pub mod reference;
pub mod rng;
pub mod sample;
pub mod schedule;
pub mod shaders;
pub mod train;

pub use error::{Error, Result};
