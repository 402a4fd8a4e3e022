//! Kernels: WGSL sources compiled into the binary, composed with the shared WGSL they use,
//! specialised with `override` constants, and cached as pipelines keyed by (kernel, entry point,
//! constants). Pipelines are created inside error scopes, so a kernel the device rejects becomes
//! an `Err` naming the kernel rather than a validation panic.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One kernel family: a name (used in labels: `scorefield.<name>.<entry>`) and the WGSL files it
/// is made of, shared ones first. Composition is plain concatenation: shared WGSL holds
/// functions and structs only, so any order of shared files before the kernel works.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub parts: &'static [&'static str],
    /// The group-0 bindings the host binds: (WGSL variable, binding number), from the family's
    /// [`bindings!`](crate::bindings) table (tests/shaders.rs checks it against the shader).
    pub bindings: &'static [(&'static str, u32)],
    /// Whether the kernel uses subgroup operations: built only on devices with the `SUBGROUP`
    /// feature (and translated for the backends that have them).
    pub subgroups: bool,
}

/// Declares a kernel family's group-0 binding numbers under the names of their WGSL variables,
/// upper-cased: a `u32` constant each, and `ALL`, the table of (constant name, binding) that
/// tests/shaders.rs compares, lower-cased, with the variables of the parsed shader. Bind groups
/// are built from these names, never from bare numbers.
#[macro_export]
macro_rules! bindings {
    ($($name:ident = $binding:literal),* $(,)?) => {
        $(pub const $name: u32 = $binding;)*
        /// Every binding: (constant name, the WGSL variable's upper-cased; binding number).
        pub const ALL: &[(&str, u32)] = &[$((stringify!($name), $binding)),*];
    };
}

impl KernelSource {
    /// The composed WGSL of this kernel.
    pub fn compose(&self) -> String {
        self.parts.join("\n")
    }
}

/// A compute pipeline with the label it was built under.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    label: String,
}

impl Pipeline {
    pub fn raw(&self) -> &wgpu::ComputePipeline {
        &self.pipeline
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A bind group for group 0 from `(binding, resource)` pairs. Layouts are derived from the
    /// shader, so only the bindings the entry point uses may be given.
    pub fn bind_group(&self, gpu: &Gpu, entries: &[(u32, wgpu::BindingResource<'_>)]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding: *binding, resource: resource.clone() })
            .collect();
        gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.label),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Records one dispatch of `workgroups` workgroups (spread over x and y when there are more
    /// than one dimension allows) into a compute pass.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, workgroups: [u32; 2]) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], 1);
    }
}

/// A pipeline with the bind groups it runs with: one, or one per slot of the step ring (the
/// training kernels, whose step parameters rotate through the ring's uniform slots).
pub struct Bound {
    pipeline: Pipeline,
    groups: Vec<wgpu::BindGroup>,
}

impl Bound {
    pub fn new(pipeline: Pipeline, group: wgpu::BindGroup) -> Self {
        Self { pipeline, groups: vec![group] }
    }

    pub fn per_slot(pipeline: Pipeline, groups: Vec<wgpu::BindGroup>) -> Self {
        Self { pipeline, groups }
    }

    /// Records one dispatch with the (first) bind group.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, workgroups: [u32; 2]) {
        self.pipeline.dispatch(pass, &self.groups[0], workgroups);
    }

    /// Records one dispatch with the bind group of ring slot `slot`.
    pub fn dispatch_slot(&self, pass: &mut wgpu::ComputePass<'_>, slot: usize, workgroups: [u32; 2]) {
        self.pipeline.dispatch(pass, &self.groups[slot], workgroups);
    }
}

type PipelineKey = (&'static str, String, Vec<(String, u64)>);

/// Pipelines and shader modules built so far on one device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Pipeline>>,
}

impl Gpu {
    /// The pipeline for `entry` of `kernel` with the given override constants, built on first
    /// use and cached. Build pipelines when an engine object is created, never per step.
    pub async fn pipeline(&self, kernel: &KernelSource, entry: &str, constants: &[(&str, f64)]) -> Result<Pipeline> {
        let key: PipelineKey =
            (kernel.name, entry.to_string(), constants.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect());
        if let Some(p) = lock(&self.pipelines.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let label = format!("scorefield.{}.{}", kernel.name, entry);
        let device = self.device();
        let internal_scope = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation_scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = lock(&self.pipelines.modules);
            modules
                .entry(kernel.name)
                .or_insert_with(|| {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("scorefield.{}", kernel.name)),
                        source: wgpu::ShaderSource::Wgsl(kernel.compose().into()),
                    })
                })
                .clone()
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        });
        let validation = validation_scope.pop().await;
        let internal = internal_scope.pop().await;
        if let Some(err) = validation.or(internal) {
            // A module that failed must not stay cached: the next attempt would reuse it.
            lock(&self.pipelines.modules).remove(kernel.name);
            return Err(Error::Kernel { kernel: label, message: err.to_string() });
        }
        let pipeline = Pipeline { pipeline, label };
        lock(&self.pipelines.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Workgroup counts `[x, y]` covering `count` workgroups within the per-dimension limit; the
    /// kernels linearise `(x, y)` back to one index and skip the excess.
    pub fn grid(&self, count: u32) -> [u32; 2] {
        let max = self.limits().max_compute_workgroups_per_dimension.max(1);
        if count <= max {
            [count.max(1), 1]
        } else {
            let y = count.div_ceil(max);
            [count.div_ceil(y), y]
        }
    }
}

/// Locks a cache mutex; a poisoned lock only means another thread panicked mid-insert, and the
/// map itself is still consistent, so keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
