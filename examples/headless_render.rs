//! The engine as a guest in an application's wgpu device: the app creates the device, wraps it
//! with `Gpu::from_device`, lets the engine sample the eight-Gaussian mixture (with the exact
//! score, and with a model trained here for a few hundred steps), and draws the particles
//! straight from the engine's particle buffer with its own render pipeline into a texture,
//! written to a PNG: exact score on the left, learned on the right.
//!
//! ```sh
//! cargo run --release --example headless_render -- headless.png
//! ```

#[allow(dead_code)] // the arrows are the live viewer's
mod common;

use anyhow::{Context, Result};
use scorefield::gpu::Gpu;
use scorefield::mixture::GaussianMixture;
use scorefield::model::{MlpShape, Weights};
use scorefield::objective::Objective;
use scorefield::optim::{AdamConfig, LrSchedule};
use scorefield::sample::{Method, Sampler, SamplerConfig, ScoreSource};
use scorefield::train::{TrainConfig, Trainer};

/// Each panel is SIZE x SIZE pixels and shows [-EXTENT, EXTENT]^2.
const SIZE: u32 = 384;
const EXTENT: f32 = 6.0;
const PARTICLES: usize = 4096;
const TRAIN_STEPS: u64 = 400;

fn main() -> Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "headless_render.png".into());
    // The application's device: its own instance, adapter and limits.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).context("no adapter")?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app.device"),
        // The engine's kernels want more than the defaults (large uniform windows, many
        // storage buffers); the app asks for what the adapter has.
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    // The engine shares it (wgpu handles are reference-counted clones).
    let gpu = Gpu::from_device(device.clone(), queue.clone())?;

    let mix = GaussianMixture::eight_gaussians();
    let method = Method::annealed_langevin(10.0);
    let mut exact =
        pollster::block_on(Sampler::new(&gpu, ScoreSource::Mixture(&mix), &method, SamplerConfig::new(PARTICLES, 1)))?;

    let data: Vec<f32> = mix.sample(65536, 0).0.iter().map(|&v| v as f32).collect();
    let objective = Objective::Ncsn { sigma_max: 10.0, sigma_min: 0.01, levels: 10 };
    let config = TrainConfig {
        adam: AdamConfig {
            lr: 3e-3,
            schedule: LrSchedule::Cosine { steps: TRAIN_STEPS },
            ema_decay: 0.99,
            ..AdamConfig::default()
        },
        batch: 512,
        seed: 2,
        steps_per_submit: 25,
        ..TrainConfig::new(MlpShape::new(2, 3, 128), objective.clone())
    };
    let mut trainer = pollster::block_on(Trainer::new(&gpu, config, &data))?;
    trainer.run(TRAIN_STEPS, TRAIN_STEPS)?;
    let source = ScoreSource::Network {
        model: trainer.model(),
        weights: Weights::Ema,
        parametrisation: objective.parametrisation(),
    };
    let mut learned = pollster::block_on(Sampler::new(&gpu, source, &method, SamplerConfig::new(PARTICLES, 1)))?;

    // The app's frame: its encoder, the engine's sampling recorded into it, then its own
    // render passes reading the particle buffers as vertex buffers. One submit.
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("app.target"),
        size: wgpu::Extent3d { width: 2 * SIZE, height: SIZE, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    // 3-pixel quads, darkening the light background towards red.
    let pipeline = common::points_pipeline(
        &device,
        wgpu::TextureFormat::Rgba8Unorm,
        EXTENT,
        1.5 * 2.0 / SIZE as f32,
        [0.03, 0.2, 0.2],
    );
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("app.frame") });
    while exact.record(&mut encoder, usize::MAX) > 0 {}
    while learned.record(&mut encoder, usize::MAX) > 0 {}
    let view = target.create_view(&Default::default());
    {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("app.particles"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                resolve_target: None,
                depth_slice: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color { r: 0.98, g: 0.98, b: 0.97, a: 1.0 }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pass.set_pipeline(&pipeline);
        for (panel, sampler) in [&exact, &learned].into_iter().enumerate() {
            pass.set_viewport((panel as u32 * SIZE) as f32, 0.0, SIZE as f32, SIZE as f32, 0.0, 1.0);
            pass.set_vertex_buffer(0, sampler.particles().raw().slice(..));
            pass.draw(0..6, 0..PARTICLES as u32);
        }
    }
    let bytes_per_row = 2 * SIZE * 4; // 3072: a multiple of 256 as copies require
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app.readback"),
        size: (bytes_per_row * SIZE) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    encoder.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(bytes_per_row), rows_per_image: None },
        },
        target.size(),
    );
    queue.submit([encoder.finish()]);

    readback.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("mapping the picture"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let pixels = readback.slice(..).get_mapped_range()?.to_vec();
    let img = image::RgbaImage::from_raw(2 * SIZE, SIZE, pixels).context("picture size")?;
    img.save(&out).with_context(|| format!("writing {out}"))?;
    println!("{out}: {PARTICLES} particles, exact score (left) and a model trained {TRAIN_STEPS} steps (right)");
    Ok(())
}
