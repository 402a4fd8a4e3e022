//! Typed device buffers, upload, and asynchronous readback.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytemuck::Pod;
use futures_intrusive::channel::shared::{oneshot_channel, OneshotReceiver};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Bytes of a uniform window: the largest uniform binding WebGPU guarantees
/// (`max_uniform_buffer_binding_size` of its default limits). Kernels read operands through
/// such windows where uniform loads are cheaper than storage loads (see BENCHMARKS.md).
pub const UNIFORM_WINDOW_BYTES: u64 = 65536;

/// A uniform binding of [`UNIFORM_WINDOW_BYTES`] of `buffer` from `offset` (a multiple of the
/// device's `min_uniform_buffer_offset_alignment`).
pub fn uniform_window(buffer: &wgpu::Buffer, offset: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new(UNIFORM_WINDOW_BYTES),
    })
}

/// Weights repacked from a parameter buffer by buffer copies: uniform windows of
/// `UNIFORM_WINDOW_BYTES` each, how the dense layers read W through the uniform path, or one
/// storage buffer, how the fused sampler reads its network. The copies are fixed at creation;
/// `record` replays them (outside any pass) whenever the weights changed since.
pub struct PackedWeights {
    src: wgpu::Buffer,
    packed: wgpu::Buffer,
    /// (source offset, packed-buffer offset, bytes).
    copies: Vec<(u64, u64, u64)>,
}

impl PackedWeights {
    /// `count` uniform windows filled from `src` by `copies` (source offset, window-buffer
    /// offset, bytes).
    pub fn windows(gpu: &Gpu, label: &str, src: &wgpu::Buffer, count: usize, copies: Vec<(u64, u64, u64)>) -> Self {
        let bytes = count.max(1) as u64 * UNIFORM_WINDOW_BYTES;
        Self::new(gpu, label, src, bytes, wgpu::BufferUsages::UNIFORM, copies)
    }

    /// One storage buffer of `bytes` filled from `src` by `copies`.
    pub fn storage(gpu: &Gpu, label: &str, src: &wgpu::Buffer, bytes: u64, copies: Vec<(u64, u64, u64)>) -> Self {
        Self::new(gpu, label, src, bytes.max(16), wgpu::BufferUsages::STORAGE, copies)
    }

    fn new(
        gpu: &Gpu,
        label: &str,
        src: &wgpu::Buffer,
        bytes: u64,
        usage: wgpu::BufferUsages,
        copies: Vec<(u64, u64, u64)>,
    ) -> Self {
        let packed = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self { src: src.clone(), packed, copies }
    }

    /// The packed buffer, to bind whole or with [`uniform_window`].
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.packed
    }

    /// Records the copies that refresh the packed weights from the parameter buffer.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        for &(from, to, bytes) in &self.copies {
            encoder.copy_buffer_to_buffer(&self.src, from, &self.packed, to, bytes);
        }
    }
}

/// A device buffer of `len` elements of `T`. Usable as STORAGE, COPY_SRC and COPY_DST, plus
/// whatever extra usages it was created with (VERTEX for particle buffers, UNIFORM for params).
pub struct GpuBuffer<T: Pod> {
    buffer: wgpu::Buffer,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: Pod> GpuBuffer<T> {
    /// An uninitialised (zeroed by wgpu) buffer of `len` elements.
    pub fn new(gpu: &Gpu, label: &str, len: usize, extra: wgpu::BufferUsages) -> Result<Self> {
        Self::with_elements(gpu, label, len, len, extra)
    }

    /// A zeroed buffer of `len` elements in whole 16-byte vectors, zeros past `len`: for the
    /// buffers a kernel reads and writes a vec4 at a time (adam.wgsl, over the parameters).
    pub fn new_vec4s(gpu: &Gpu, label: &str, len: usize, extra: wgpu::BufferUsages) -> Result<Self> {
        let per_vec4 = (16 / std::mem::size_of::<T>()).max(1);
        Self::with_elements(gpu, label, len, len.next_multiple_of(per_vec4), extra)
    }

    /// A buffer of `len` elements with room for `room` (at least `len`).
    fn with_elements(gpu: &Gpu, label: &str, len: usize, room: usize, extra: wgpu::BufferUsages) -> Result<Self> {
        let size = Self::byte_size(gpu, label, room)?;
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        });
        Ok(Self { buffer, len, _elem: PhantomData })
    }

    /// A buffer holding `data`.
    pub fn from_slice(gpu: &Gpu, label: &str, data: &[T], extra: wgpu::BufferUsages) -> Result<Self> {
        Self::new(gpu, label, data.len(), extra)?.holding(gpu, data)
    }

    /// A buffer holding `data` in whole 16-byte vectors ([`GpuBuffer::new_vec4s`]).
    pub fn from_slice_vec4s(gpu: &Gpu, label: &str, data: &[T], extra: wgpu::BufferUsages) -> Result<Self> {
        Self::new_vec4s(gpu, label, data.len(), extra)?.holding(gpu, data)
    }

    fn holding(self, gpu: &Gpu, data: &[T]) -> Result<Self> {
        self.write(gpu, 0, data);
        Ok(self)
    }

    /// Byte size, checked against the device's limits; never zero (wgpu rejects empty bindings).
    fn byte_size(gpu: &Gpu, label: &str, len: usize) -> Result<u64> {
        let bytes = (len.max(1) * std::mem::size_of::<T>()) as u64;
        let bytes = bytes.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT;
        let limits = gpu.limits();
        let max = limits.max_buffer_size.min(limits.max_storage_buffer_binding_size);
        if bytes > max {
            return Err(Error::invalid(
                format!("buffer `{label}`"),
                format!(
                    "{len} elements ({bytes} bytes) exceed this device's largest storage binding ({max} bytes: \
                     the least of its max_buffer_size and max_storage_buffer_binding_size); use a smaller batch or \
                     particle count"
                ),
            ));
        }
        Ok(bytes)
    }

    /// Schedules `data` to be written at element `offset` before the next submit.
    pub fn write(&self, gpu: &Gpu, offset: usize, data: &[T]) {
        if !data.is_empty() {
            gpu.queue().write_buffer(
                &self.buffer,
                (offset * std::mem::size_of::<T>()) as u64,
                bytemuck::cast_slice(data),
            );
        }
    }

    /// Fills the whole buffer with one value, e.g. a NaN pattern before a kernel runs, so that an
    /// element the kernel fails to write shows up in a test.
    pub fn fill(&self, gpu: &Gpu, value: T) {
        self.write(gpu, 0, &vec![value; self.len]);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }

    /// A binding of `len` elements from element `start` (its byte offset a multiple of the
    /// device's offset alignment for the binding's kind).
    pub fn range_binding(&self, start: usize, len: usize) -> wgpu::BindingResource<'_> {
        let size = std::mem::size_of::<T>();
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: (start * size) as u64,
            size: wgpu::BufferSize::new((len * size) as u64),
        })
    }

    /// Reads the whole buffer back. Submits a copy, then waits for that submission only.
    pub async fn read(&self, gpu: &Gpu) -> Result<Vec<T>> {
        self.read_range(gpu, 0, self.len).await
    }

    /// Reads `len` elements starting at element `offset`.
    pub async fn read_range(&self, gpu: &Gpu, offset: usize, len: usize) -> Result<Vec<T>> {
        let mut encoder = gpu.encoder("scorefield.readback");
        let pending =
            PendingRead::record(gpu, &mut encoder, &self.buffer, (offset * std::mem::size_of::<T>()) as u64, len)?;
        let submission = gpu.submit(encoder);
        pending.finish(gpu, Some(submission)).await
    }
}

type MapResult = Result<(), wgpu::BufferAsyncError>;

/// A readback in flight: a staging copy recorded into an encoder. After the encoder is submitted,
/// `start` maps the staging buffer; `try_take` collects the data once the GPU has got there, without
/// waiting, and `finish` waits for it. This lets a training loop read its loss every N steps
/// while the GPU keeps running.
pub struct PendingRead<T: Pod> {
    staging: wgpu::Buffer,
    len: usize,
    receiver: Option<OneshotReceiver<MapResult>>,
    /// Set by the map callback too, so `try_take` can look without awaiting.
    done: Arc<Mutex<Option<MapResult>>>,
    _elem: PhantomData<T>,
}

impl<T: Pod> PendingRead<T> {
    /// Records a copy of `len` elements of `source` from byte `offset` into a fresh staging buffer.
    pub fn record(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        source: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Self> {
        Self::record_ranges(gpu, encoder, &[(source, offset, len)], None)
    }

    /// Records copies of several ranges, (source, byte offset, elements), laid end to end in one
    /// staging buffer: `spare` (a staging buffer an earlier read gave back with
    /// [`PendingRead::into_staging`]) if it is large enough, else a fresh one.
    pub fn record_ranges(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        ranges: &[(&wgpu::Buffer, u64, usize)],
        spare: Option<wgpu::Buffer>,
    ) -> Result<Self> {
        let elem = std::mem::size_of::<T>() as u64;
        let total: u64 = ranges.iter().map(|&(_, _, len)| len as u64 * elem).sum();
        let staging = match spare.filter(|b| b.size() >= total.max(wgpu::COPY_BUFFER_ALIGNMENT)) {
            Some(buffer) => buffer,
            None => gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("scorefield.readback.staging"),
                size: total.max(wgpu::COPY_BUFFER_ALIGNMENT),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        let mut at = 0;
        for &(source, offset, len) in ranges {
            let bytes = len as u64 * elem;
            if !bytes.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
                || !offset.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
                || offset + bytes > source.size()
            {
                return Err(Error::Readback(format!(
                    "range {offset}..{} of a {}-byte buffer is out of bounds or not 4-byte aligned",
                    offset + bytes,
                    source.size()
                )));
            }
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(source, offset, &staging, at, bytes);
            }
            at += bytes;
        }
        let len = (total / elem) as usize;
        Ok(Self { staging, len, receiver: None, done: Arc::default(), _elem: PhantomData })
    }

    /// The staging buffer, unmapped, for the next read of the same size once this one's data
    /// was taken.
    pub fn into_staging(self) -> wgpu::Buffer {
        self.staging
    }

    /// Asks for the staging buffer to be mapped; call after submitting the encoder.
    pub fn start(&mut self) {
        if self.receiver.is_none() {
            let (sender, receiver) = oneshot_channel();
            let done = Arc::clone(&self.done);
            self.staging.map_async(wgpu::MapMode::Read, .., move |result| {
                *done.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
                // The receiver may be gone if the read was abandoned; nothing to do then.
                let _ignored = sender.send(result);
            });
            self.receiver = Some(receiver);
        }
    }

    /// The data, if the GPU has finished the copy; never waits. `Ok(None)` means not yet.
    pub fn try_take(&mut self, gpu: &Gpu) -> Result<Option<Vec<T>>> {
        self.start();
        gpu.poll()?;
        let ready = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        match ready {
            None => Ok(None),
            Some(Ok(())) => self.copy_out().map(Some),
            Some(Err(e)) => Err(gpu.check().err().unwrap_or(Error::Readback(e.to_string()))),
        }
    }

    /// Waits for the data. `submission` is the submit that carried the copy (waits for all
    /// work if `None`).
    pub async fn finish(mut self, gpu: &Gpu, submission: Option<wgpu::SubmissionIndex>) -> Result<Vec<T>> {
        self.start();
        gpu.wait(submission)?;
        let receiver = self.receiver.take().ok_or_else(|| Error::Readback("map was never requested".into()))?;
        match receiver.receive().await {
            Some(Ok(())) => self.copy_out(),
            Some(Err(e)) => Err(gpu.check().err().unwrap_or(Error::Readback(e.to_string()))),
            None => Err(gpu.check().err().unwrap_or(Error::Readback("the map callback was dropped".into()))),
        }
    }

    fn copy_out(&self) -> Result<Vec<T>> {
        let bytes = self.len * std::mem::size_of::<T>();
        let out = {
            let view = self.staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, T>(&view[..bytes]).to_vec()
        };
        self.staging.unmap();
        Ok(out)
    }
}
