//! Filling device buffers with the engine's reproducible randomness (see [`crate::rng`]).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer, Pipeline};
use crate::rng::split;
use crate::shaders;

/// Twin of `NoiseParams` in shaders/noise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct NoiseParams {
    pub seed: [u32; 2],
    pub stream: [u32; 2],
    pub offset: [u32; 2],
    pub count: u32,
    pub _pad: u32,
}

const WG: u32 = 256;

/// shaders/noise.wgsl's bindings.
pub mod binding {
    crate::bindings!(PARAMS = 0, OUT_U32 = 1);
}

/// The noise kernels and their parameter buffer, built once. Each fill writes the parameters
/// (`queue.write_buffer`, which lands before the fill's own submit) and submits.
pub struct NoiseKernels {
    uniform_u32: Pipeline,
    normal: Pipeline,
    params: GpuBuffer<NoiseParams>,
}

impl NoiseKernels {
    pub async fn new(gpu: &Gpu) -> Result<Self> {
        let constants = [("WG", WG as f64)];
        Ok(Self {
            uniform_u32: gpu.pipeline(&shaders::NOISE, "uniform_u32", &constants).await?,
            normal: gpu.pipeline(&shaders::NOISE, "normal", &constants).await?,
            params: GpuBuffer::new(gpu, "scorefield.noise.params", 1, wgpu::BufferUsages::UNIFORM)?,
        })
    }

    /// Writes u32 numbers `offset ..` of `(seed, stream)` into `out`.
    pub fn fill_u32(&self, gpu: &Gpu, out: &GpuBuffer<u32>, seed: u64, stream: u64, offset: u64) -> Result<()> {
        self.run(gpu, &self.uniform_u32, out.raw(), out.len(), seed, stream, offset)
    }

    /// Writes standard normals `offset ..` of `(seed, stream)` into `out`.
    pub fn fill_normal(&self, gpu: &Gpu, out: &GpuBuffer<f32>, seed: u64, stream: u64, offset: u64) -> Result<()> {
        self.run(gpu, &self.normal, out.raw(), out.len(), seed, stream, offset)
    }

    /// Writes the first `n` elements of `out` only (the rest stay as they were).
    pub fn fill_normal_prefix(
        &self,
        gpu: &Gpu,
        out: &GpuBuffer<f32>,
        n: usize,
        seed: u64,
        stream: u64,
        offset: u64,
    ) -> Result<()> {
        if n > out.len() {
            return Err(Error::invalid("noise length", format!("{n} exceeds the buffer's {} elements", out.len())));
        }
        self.run(gpu, &self.normal, out.raw(), n, seed, stream, offset)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        gpu: &Gpu,
        pipeline: &Pipeline,
        out: &wgpu::Buffer,
        len: usize,
        seed: u64,
        stream: u64,
        offset: u64,
    ) -> Result<()> {
        if !offset.is_multiple_of(4) {
            return Err(Error::invalid(
                "noise offset",
                format!("{offset} is not a multiple of 4 (one Philox block holds four numbers)"),
            ));
        }
        let count = u32::try_from(len).map_err(|_| Error::invalid("noise length", format!("{len} exceeds 2^32")))?;
        let params = NoiseParams { seed: split(seed), stream: split(stream), offset: split(offset), count, _pad: 0 };
        self.params.write(gpu, 0, &[params]);
        let bind_group = pipeline
            .bind_group(gpu, &[(binding::PARAMS, self.params.binding()), (binding::OUT_U32, out.as_entire_binding())]);
        let mut encoder = gpu.encoder(pipeline.label());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(pipeline.label()),
                timestamp_writes: None,
            });
            pipeline.dispatch(&mut pass, &bind_group, gpu.grid(count.div_ceil(4).div_ceil(WG)));
        }
        gpu.submit(encoder);
        Ok(())
    }
}
