//! GPU-side timing of a stretch of queue work with timestamp queries, for the benchmarks.
//!
//! An empty compute pass writes a timestamp at its beginning before the timed work is submitted,
//! and another at its end after it; the difference, times the queue's timestamp period, is the
//! device time from the first timed command to the last (gaps where the device waited for the
//! host between submits included). Only `TIMESTAMP_QUERY` is needed: the timestamps are a pass's
//! own `timestamp_writes`, not writes inside a pass or an encoder.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, PendingRead};

/// A pair of timestamp queries and the buffer they resolve into.
pub struct GpuTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl GpuTimer {
    /// A timer, or `None` where the device was created without timestamp queries (the caller
    /// then times with the host clock around a device wait).
    pub fn new(gpu: &Gpu) -> Option<Self> {
        if !gpu.has_timestamps() {
            return None;
        }
        let queries = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("scorefield.timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolved = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("scorefield.timer.resolved"),
            size: 2 * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Self { queries, resolved, period_ns: gpu.queue().get_timestamp_period() as f64 })
    }

    /// Submits the start mark; submit the timed work after it.
    pub fn start(&self, gpu: &Gpu) {
        gpu.submit(self.mark(gpu, 0));
    }

    /// Submits the stop mark, waits for it, and returns the seconds since the start mark.
    pub async fn stop(&self, gpu: &Gpu) -> Result<f64> {
        let mut encoder = self.mark(gpu, 1);
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
        let pending = PendingRead::<u64>::record(gpu, &mut encoder, &self.resolved, 0, 2)?;
        let submission = gpu.submit(encoder);
        let ticks = pending.finish(gpu, Some(submission)).await?;
        // Timestamps may wrap or, on some drivers, come from different clocks; neither is a time.
        let elapsed = ticks[1].checked_sub(ticks[0]).filter(|&t| t > 0).ok_or_else(|| Error::Invalid {
            what: "GPU timestamps".into(),
            why: format!(
                "the stop mark ({}) is not after the start mark ({}); time with the host clock (bench --host-clock)",
                ticks[1], ticks[0]
            ),
        })?;
        Ok(elapsed as f64 * self.period_ns * 1e-9)
    }

    /// An encoder holding one empty pass that writes timestamp `index`: at the pass's
    /// beginning for the start mark, at its end for the stop mark.
    fn mark(&self, gpu: &Gpu, index: u32) -> wgpu::CommandEncoder {
        let mut encoder = gpu.encoder("scorefield.timer.mark");
        let (beginning, end) = if index == 0 { (Some(0), None) } else { (None, Some(1)) };
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("scorefield.timer.mark"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: beginning,
                end_of_pass_write_index: end,
            }),
        });
        encoder
    }
}

/// How the benchmarks time device work: GPU timestamps where the device has them, else the
/// host clock around the submits and a device wait.
pub enum Clock {
    Timestamps(GpuTimer),
    Host,
}

impl Clock {
    /// Timestamps where `gpu` has them, unless `host` asks for the host clock.
    pub fn new(gpu: &Gpu, host: bool) -> Self {
        match GpuTimer::new(gpu) {
            Some(timer) if !host => Clock::Timestamps(timer),
            _ => Clock::Host,
        }
    }

    /// What the timings mean, for tables and JSON.
    pub fn describe(&self) -> &'static str {
        match self {
            Clock::Timestamps(_) => "GPU timestamps from before the first submit to after the last",
            Clock::Host => "host clock around the submits and a device wait",
        }
    }

    /// Seconds that `work` (which records and submits device work, and does not wait for it)
    /// takes, waiting for the device.
    pub async fn time(&self, gpu: &Gpu, work: impl FnOnce() -> Result<()>) -> Result<f64> {
        match self {
            Clock::Timestamps(timer) => {
                timer.start(gpu);
                work()?;
                timer.stop(gpu).await
            }
            Clock::Host => {
                let start = std::time::Instant::now();
                work()?;
                gpu.wait(None)?;
                Ok(start.elapsed().as_secs_f64())
            }
        }
    }
}
