//! `Gpu`: the device and queue the engine runs on, either its own (headless, chosen from the
//! usual wgpu environment overrides) or an application's.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::kernel::PipelineCache;

/// A limit the engine checks: its name, how to read it, and the least value the kernels need.
pub type LimitCheck = (&'static str, fn(&wgpu::Limits) -> u64, u64);

/// Limits below wgpu's defaults that the engine's kernels need, checked when wrapping an
/// application's device. Each kernel stays within a 16 KiB workgroup tile and 256 invocations.
pub const MIN_LIMITS: &[LimitCheck] = &[
    ("max_compute_workgroup_storage_size", |l| l.max_compute_workgroup_storage_size as u64, 16 << 10),
    ("max_compute_invocations_per_workgroup", |l| l.max_compute_invocations_per_workgroup as u64, 256),
    ("max_compute_workgroup_size_x", |l| l.max_compute_workgroup_size_x as u64, 256),
    ("max_storage_buffers_per_shader_stage", |l| l.max_storage_buffers_per_shader_stage as u64, 6),
    ("max_storage_buffer_binding_size", |l| l.max_storage_buffer_binding_size, 16 << 20),
    ("max_compute_workgroups_per_dimension", |l| l.max_compute_workgroups_per_dimension as u64, 1024),
    ("max_uniform_buffer_binding_size", |l| l.max_uniform_buffer_binding_size, super::UNIFORM_WINDOW_BYTES),
    // The fused sampler binds a cursor, five weight windows and a bias window.
    ("max_uniform_buffers_per_shader_stage", |l| l.max_uniform_buffers_per_shader_stage as u64, 7),
];

/// An adapter's identity and the limits the engine depends on, for `scorefield info`.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        Self { info: adapter.get_info(), limits: adapter.limits(), features: adapter.features() }
    }
}

/// Kernel choices that depend on the kind of adapter rather than on the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Read the dense layers' activation operands through 64 KiB uniform windows, one dispatch
    /// per chunk of batch rows, instead of from storage in one dispatch over the whole batch.
    /// On llvmpipe a uniform load costs a twelfth of a storage load, which makes the chunks pay
    /// (measured, BENCHMARKS.md). On a GPU they would not: a 128-row chunk of a 128-wide layer
    /// is four workgroups, far too few to fill the device, and activation reads differ from lane
    /// to lane, which uniform (constant) caches serialise. Not measured on a GPU (none lent yet).
    /// A weight gradient whose chunks would be under 128 rows (a layer wider than 128) reads
    /// storage either way (model.rs `MIN_WEIGHT_CHUNK_ROWS`).
    pub chunked_operands: bool,
    /// The most loop iterations one shader invocation may run, all its loops together, where
    /// the driver silently ends loops past a budget: llvmpipe's 65535 (Mesa gallivm's
    /// LP_MAX_TGSI_LOOP_ITERATIONS, a counter "shared between every loop in a shader"). The
    /// sampler keeps each invocation within half of it (fewer fused steps per dispatch) and
    /// refuses a mixture score too large for one invocation. None: no such limit.
    pub loop_limit: Option<usize>,
    /// Particles per invocation of the fused sampler kernel with a network score (1 to 4):
    /// they share each load of a weight. On llvmpipe the loads, not the FMAs, set the speed
    /// (BENCHMARKS.md). On a GPU a weight load is a broadcast to the whole warp already, and
    /// four particles' activations would take four times the private memory per invocation
    /// (already spilled at W1's width), so there it stays 1. Not measured on a GPU.
    pub fused_particles: u32,
    /// Whether the sampler's `auto` path runs networks wider than 128 (up to 512) fused, their
    /// weights and activations in storage buffers. On llvmpipe W4 (3 x 512) ran 1.2-1.4x faster
    /// fused than staged, about 1.6x with sixteen outputs per load (BENCHMARKS.md, "The fused
    /// sampler for wide networks"); on a GPU, where one invocation per particle would evaluate a 512-wide network
    /// alone while the staged path's matrix products fill the device, it stays off. Not
    /// measured on a GPU; `--path fused` forces it.
    pub fused_wide: bool,
    /// Whether a training step's forward pass and the input-gradient half of its backward pass
    /// run as the fused sampler runs its network (every layer of `fused_particles` rows in one
    /// invocation, train_rows.wgsl) where the network is one the fused kernel computes, instead
    /// of layer by layer on the dense kernels (the weight gradients stay there either way). On
    /// llvmpipe the staged layers lose to reading back rows another dispatch wrote (BENCHMARKS.md,
    /// sessions 17 and 18); on a GPU the staged layers' matrix products fill the device and one
    /// invocation per row would not, so it stays off. Not measured on a GPU.
    pub fused_training: bool,
    /// Which kernel computes the dense layers ([`DenseKernel`]): the guess from the adapter's
    /// kind, used as it is unless `measure_dense` replaces it.
    pub dense: DenseKernel,
    /// Where the device runs both dense kernels: time them on each pass's network when the pass
    /// is built (`MlpPass`: three alternated forward passes over up to 1024 rows each, a fraction
    /// of a second) and keep the faster. They give the same results, so only speed depends on
    /// it. The fused sampler's shared weight loads follow `dense` (not measured).
    pub measure_dense: bool,
}

/// The dense layers' kernel: shaders/mlp.wgsl or shaders/mlp_subgroup.wgsl. Both compute every
/// output with the same chain of FMAs, so they agree bit for bit and the choice is speed alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseKernel {
    /// An 8 x 8 block of outputs per invocation, loading its own operands (any adapter).
    Block,
    /// Eight lanes of a subgroup share each load of B through `subgroupBroadcast`: needs the
    /// `SUBGROUP` feature and subgroups of 8 or more lanes. On llvmpipe, where every load is a
    /// per-lane gather, it loads a third as much per FMA (BENCHMARKS.md). On a GPU a workgroup of
    /// 8 would leave most of a 32- or 64-wide warp idle. Not measured on a GPU.
    Subgroup,
}

impl DenseKernel {
    pub fn name(&self) -> &'static str {
        match self {
            DenseKernel::Block => "block",
            DenseKernel::Subgroup => "subgroup",
        }
    }

    /// Whether a device can run this kernel.
    pub fn runs_on(&self, features: wgpu::Features, info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> bool {
        match self {
            DenseKernel::Block => true,
            // Not in browsers: their WGSL needs `enable subgroups;`, which naga (30) refuses.
            DenseKernel::Subgroup => {
                !cfg!(target_arch = "wasm32")
                    && features.contains(wgpu::Features::SUBGROUP)
                    && info.subgroup_min_size >= 8
                    && limits.max_uniform_buffers_per_shader_stage >= SUBGROUP_UNIFORM_BUFFERS
                    && limits.max_storage_buffers_per_shader_stage >= SUBGROUP_STORAGE_BUFFERS
            }
        }
    }
}

/// Uniform buffers mlp_subgroup.wgsl binds: W's window and the A window, and six more pairs of
/// windows for the weight gradient's chunks (llvmpipe has 15, D3D12 14; browsers do not run
/// the kernel).
pub const SUBGROUP_UNIFORM_BUFFERS: u32 = 14;

/// Storage buffers mlp_subgroup.wgsl binds: dense.wgsl's lhs, rhs, aux, out0, out1 and skip, and
/// lhs and rhs again as vec4s (VEC4).
pub const SUBGROUP_STORAGE_BUFFERS: u32 = 8;

/// llvmpipe's loop budget per invocation, see [`Tuning::loop_limit`].
pub const LLVMPIPE_LOOP_ITERATIONS: usize = 65535;

impl Tuning {
    /// Chunked operands, four particles per fused invocation and (where the device has
    /// subgroups) the subgroup dense kernel on CPU adapters (llvmpipe, SwiftShader, WARP), none
    /// of them on GPUs; the loop budget on llvmpipe.
    pub fn for_adapter(info: &wgpu::AdapterInfo, features: wgpu::Features, limits: &wgpu::Limits) -> Self {
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let subgroup = cpu && DenseKernel::Subgroup.runs_on(features, info, limits);
        Self {
            chunked_operands: cpu,
            fused_particles: if cpu { 4 } else { 1 },
            fused_wide: cpu,
            fused_training: cpu,
            loop_limit: info.name.contains("llvmpipe").then_some(LLVMPIPE_LOOP_ITERATIONS),
            dense: if subgroup { DenseKernel::Subgroup } else { DenseKernel::Block },
            measure_dense: true,
        }
    }

    /// How the dense layers read their operands: "chunked" or "storage".
    pub fn operands(&self) -> &'static str {
        if self.chunked_operands {
            "chunked"
        } else {
            "storage"
        }
    }
}

/// The GPU the engine runs on: a device, its queue, and the engine's pipeline cache.
///
/// Cheap to clone: clones share the device, queue and cache.
#[derive(Clone)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    tuning: Tuning,
    pub(crate) pipelines: Arc<PipelineCache>,
    /// The first error or loss reported by the handlers of a device the engine owns (wgpu's
    /// default handler would panic); None for an application's device, whose handlers are its own.
    fault: Arc<Mutex<Option<Fault>>>,
}

/// What a device's handlers reported.
#[derive(Clone, Debug)]
enum Fault {
    /// The device is gone (reset, unplugged, destroyed): the work since the last readback is lost.
    Lost(String),
    /// A command the device rejected outside the engine's error scopes (a validation or
    /// internal error): the device lives, but the engine or the application broke a rule.
    Rejected(String),
}

impl Gpu {
    /// Opens a headless device on the best adapter. Honours wgpu's environment overrides:
    /// `WGPU_BACKEND` (e.g. `vulkan`, `gl`), `WGPU_ADAPTER_NAME` (a substring of the adapter's
    /// name) and `WGPU_POWER_PREF` (`low` or `high`). Requests every limit the adapter offers,
    /// so large batches fit where the hardware allows.
    pub async fn new() -> Result<Self> {
        Self::with_adapter(None).await
    }

    /// As [`Gpu::new`], on the adapter whose name contains `name` (case-insensitive) where one
    /// is given; `None` leaves the choice to `WGPU_ADAPTER_NAME` or the best adapter.
    pub async fn with_adapter(name: Option<&str>) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let wanted = name.map(str::to_owned).or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let adapter = choose_adapter(&instance, wanted).await?;
        let summary = AdapterSummary::of(&adapter);
        check_limits(&summary.limits)?;
        // Timestamp queries feed the benchmarks (`GpuTimer`), subgroups a dense-layer kernel
        // (`DenseKernel::Subgroup`); take them where the adapter has them.
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("scorefield.device"),
                required_features: summary.features & wanted,
                required_limits: summary.limits.clone(),
                ..Default::default()
            })
            .await?;
        let gpu = Self::wrap(device, queue, summary.info);
        // Errors outside the engine's error scopes, and the loss of the device, are recorded
        // and surface from the next wait, poll or readback: a rejected command as
        // `Error::Internal`, a loss as `Error::DeviceLost`.
        let fault = Arc::clone(&gpu.fault);
        gpu.device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let what = match &e {
                wgpu::Error::OutOfMemory { .. } => Fault::Lost(format!("out of GPU memory: {e}")),
                _ => Fault::Rejected(e.to_string()),
            };
            record_fault(&fault, what)
        }));
        let fault = Arc::clone(&gpu.fault);
        // A loss explains the errors around it better than they do: it takes precedence.
        gpu.device.set_device_lost_callback(move |reason, message| {
            *fault.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Fault::Lost(format!("device lost ({reason:?}) {message}")));
        });
        Ok(gpu)
    }

    /// Wraps an application's own device and queue (the embedding path). The engine never
    /// creates an instance or surface and never installs an error handler on this device.
    /// Fails with [`Error::Limit`] if the device lacks a limit the kernels need.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        check_limits(&device.limits())?;
        let info = device.adapter_info();
        Ok(Self::wrap(device, queue, info))
    }

    fn wrap(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let tuning = Tuning::for_adapter(&info, device.features(), &device.limits());
        Self { device, queue, info, tuning, pipelines: Arc::new(PipelineCache::default()), fault: Arc::default() }
    }

    /// Whether this device can run a dense-layer kernel.
    pub fn runs(&self, kernel: DenseKernel) -> bool {
        kernel.runs_on(self.device.features(), &self.info, &self.device.limits())
    }

    /// The kernel choices made for this adapter ([`Tuning::for_adapter`]).
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// This device with other kernel choices, for comparing them (benchmarks, tests). Passes
    /// built before keep the choices they were built with.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// `Err(Error::DeviceLost)` once the device (one the engine opened) has been lost, and
    /// `Err(Error::Internal)` once it has rejected a command outside the engine's error scopes.
    pub fn check(&self) -> Result<()> {
        match self.fault.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(Fault::Lost(what)) => Err(Error::DeviceLost(what.clone())),
            Some(Fault::Rejected(what)) => Err(Error::Internal(what.clone())),
            None => Ok(()),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Whether GPU timestamp queries are available (at compute pass boundaries: what
    /// [`GpuTimer`](crate::gpu::GpuTimer) needs).
    pub fn has_timestamps(&self) -> bool {
        self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// A one-line description: name, backend, device type, driver.
    pub fn describe(&self) -> String {
        describe_info(&self.info)
    }

    /// Submits recorded work.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit([encoder.finish()])
    }

    /// A new command encoder with a label.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Waits until the given submission (or all work, with `None`) has finished. Native only in
    /// effect: on the web the browser drives the queue and this returns at once.
    pub fn wait(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::Wait { submission_index: submission, timeout: None });
        self.check()?;
        polled.map(|_| ()).map_err(Error::from)
    }

    /// Lets finished work run its callbacks (e.g. completed readbacks) without waiting.
    pub fn poll(&self) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::Poll);
        self.check()?;
        polled.map(|_| ()).map_err(Error::from)
    }
}

/// Keeps the first fault: later ones are usually its consequences.
fn record_fault(fault: &Mutex<Option<Fault>>, what: Fault) {
    fault.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(what);
}

/// `name (backend, device type, driver driver_info)`.
pub fn describe_info(info: &wgpu::AdapterInfo) -> String {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} ({:?}, {:?}, driver: {})",
        // Browsers keep the adapter's name to themselves.
        if info.name.is_empty() { "unnamed adapter" } else { &info.name },
        info.backend,
        info.device_type,
        if driver.is_empty() { "unknown" } else { &driver }
    )
}

impl AdapterSummary {
    pub fn describe(&self) -> String {
        describe_info(&self.info)
    }
}

/// Every adapter the environment's backends offer (`WGPU_BACKEND` narrows them).
pub async fn list_adapters() -> Vec<AdapterSummary> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    instance.enumerate_adapters(wgpu::Backends::all()).await.iter().map(AdapterSummary::of).collect()
}

async fn choose_adapter(instance: &wgpu::Instance, wanted: Option<String>) -> Result<wgpu::Adapter> {
    // wgpu's own `initialize_adapter_from_env` panics when the name matches nothing; this
    // returns an error listing what there is instead.
    if let Some(wanted) = wanted {
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| describe_info(&a.get_info())).collect();
        let wanted_lc = wanted.to_lowercase();
        return adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&wanted_lc)).ok_or(
            Error::AdapterNotFound {
                wanted,
                available: if names.is_empty() { "none".into() } else { names.join("; ") },
            },
        );
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter { detail: format!(" ({e})") })
}

fn check_limits(limits: &wgpu::Limits) -> Result<()> {
    for &(limit, get, need) in MIN_LIMITS {
        let have = get(limits);
        if have < need {
            return Err(Error::Limit { limit, have, need });
        }
    }
    Ok(())
}
