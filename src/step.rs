//! The host twin of shaders/step.wgsl: the parameters every step kernel reads (`StepParams`) and
//! the ring of uniform slots they are written into, one slot per recorded step, so that many
//! steps go into one submit with no host round trip between them.

use bytemuck::{Pod, Zeroable};

use crate::gpu::Gpu;

/// Twin of `StepParams` in shaders/step.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct StepParams {
    pub seed: [u32; 2],
    pub step: u32,
    pub n_data: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub bias_c1: f32,
    pub bias_c2: f32,
    pub ema_decay: f32,
    pub t_min: f32,
    pub sigma_min: f32,
    pub sigma_max: f32,
    pub beta_min: f32,
    pub beta_max: f32,
}

/// A ring of uniform slots of one `StepParams` each (at the device's uniform offset alignment),
/// each bound by its own bind groups, and the slot the next recording starts at.
pub(crate) struct StepRing {
    buffer: wgpu::Buffer,
    stride: u64,
    slots: usize,
    cursor: usize,
}

impl StepRing {
    pub fn new(gpu: &Gpu, slots: usize) -> Self {
        let stride = (std::mem::size_of::<StepParams>() as u64)
            .next_multiple_of(gpu.limits().min_uniform_buffer_offset_alignment as u64);
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("scorefield.train.step_params"),
            size: stride * slots as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self { buffer, stride, slots, cursor: 0 }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `i` as a uniform binding.
    pub fn slot(&self, i: usize) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: i as u64 * self.stride,
            size: wgpu::BufferSize::new(std::mem::size_of::<StepParams>() as u64),
        })
    }

    /// The first of `n` consecutive slots for the next recording (from the start again when
    /// fewer are left), which then count as taken.
    pub fn take(&mut self, n: usize) -> usize {
        if self.cursor + n > self.slots {
            self.cursor = 0;
        }
        let first = self.cursor;
        self.cursor += n;
        first
    }

    /// Writes `params` into the slots `first ..` (lands before the next submit).
    pub fn write(&self, gpu: &Gpu, first: usize, params: &[StepParams]) {
        let mut bytes = vec![0u8; self.stride as usize * params.len()];
        for (i, p) in params.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + std::mem::size_of::<StepParams>()].copy_from_slice(bytemuck::bytes_of(p));
        }
        gpu.queue().write_buffer(&self.buffer, first as u64 * self.stride, &bytes);
    }
}
