//! The device layer: adapter choice, buffers, readback, kernels and pipelines. Nothing here knows
//! about score models.

mod buffer;
mod context;
mod kernel;
mod timer;

pub use buffer::{uniform_window, GpuBuffer, PendingRead, UNIFORM_WINDOW_BYTES};
pub use context::{list_adapters, AdapterSummary, Gpu, Tuning, MIN_LIMITS};
pub use kernel::{KernelSource, Pipeline};
pub use timer::{Clock, GpuTimer};
