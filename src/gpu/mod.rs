//! The device layer: adapter choice, buffers, readback, kernels and pipelines. Nothing here knows
//! about score models.

mod buffer;
mod context;
mod kernel;
// The benchmarks' clock (its host fallback uses std::time::Instant, which the browser lacks).
#[cfg(not(target_arch = "wasm32"))]
mod timer;

pub use buffer::{uniform_window, GpuBuffer, PackedWeights, PendingRead, UNIFORM_WINDOW_BYTES};
pub use context::{list_adapters, AdapterSummary, DenseKernel, Gpu, Tuning, LLVMPIPE_LOOP_ITERATIONS, MIN_LIMITS};
pub use kernel::{Bound, KernelSource, Pipeline};
#[cfg(not(target_arch = "wasm32"))]
pub use timer::{Clock, GpuTimer};
