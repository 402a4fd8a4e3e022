//! A live window: particles moving under Langevin dynamics over the eight-Gaussian data, and the
//! score field as arrows, both drawn straight from the engine's buffers by the application's own
//! render passes, with the sampler steps recorded into the application's encoder every frame.
//! Seeing how noise smooths the score landscape as sigma grows is the point.
//!
//! ```sh
//! cargo run --release --example live
//! ```
//! Keys: Up/Down sigma x/÷ 1.25, Right/Left step size x/÷ 2, S Langevin at sigma <-> annealed
//! from sigma down, L learned <-> exact score, R reset the particles, +/- sampler steps per
//! frame x/÷ 2, Esc quit. The title and stdout show the settings and the frame time.
//!
//! `-- --screenshot out.png --frames N` renders N frames, writes the last to a PNG and exits
//! (the test runs it that way under Xvfb); `--steps-per-frame K` starts with K sampler steps
//! per frame and `--learned` with the learned score (the frame-budget measurements of
//! BENCHMARKS.md).

#[allow(dead_code)] // not every example draws everything
mod common;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use scorefield::gpu::{Gpu, GpuBuffer};
use scorefield::mixture::GaussianMixture;
use scorefield::model::{Evaluator, MlpShape, Weights};
use scorefield::objective::{geometric_sigmas, NoiseLevel, Objective, Parametrisation};
use scorefield::optim::{AdamConfig, LrSchedule};
use scorefield::sample::{Method, Sampler, SamplerConfig, ScoreSource};
use scorefield::train::{TrainConfig, Trainer};
use winit::application::ApplicationHandler;
use winit::event::{ElementState, KeyEvent, WindowEvent};
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

const EXTENT: f32 = 6.0;
const GRID: usize = 24;
const PARTICLES: usize = 4096;
const TRAIN_STEPS: u64 = 300;
const SIZE: u32 = 640;
/// Steps of one Langevin run; when they are done the run goes on with a new seed.
const LANGEVIN_STEPS: usize = 100_000;
/// The render target the scene is drawn into, then copied to the window (and to a screenshot).
const SCENE_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// A full-screen triangle that copies the scene texture to the window, pixel for pixel.
const BLIT: &str = r#"
@group(0) @binding(0) var scene: texture_2d<f32>;

@vertex
fn vs(@builtin(vertex_index) v: u32) -> @builtin(position) vec4<f32> {
    let xy = vec2(f32(v & 1u) * 4.0 - 1.0, f32(v >> 1u) * 4.0 - 1.0);
    return vec4(xy, 0.0, 1.0);
}

@fragment
fn fs(@builtin(position) p: vec4<f32>) -> @location(0) vec4<f32> {
    return textureLoad(scene, vec2<i32>(p.xy), 0);
}
"#;

#[derive(Clone, Copy, Debug)]
struct Settings {
    sigma: f64,
    step: f64,
    annealed: bool,
    learned: bool,
    steps_per_frame: usize,
}

/// The engine's side: the model, the sampler, the learned and exact fields.
struct Engine {
    gpu: Gpu,
    mixture: GaussianMixture,
    trainer: Trainer,
    sampler: Sampler,
    /// The sampler's seed, new for every sampler.
    seed: u64,
    field: Evaluator,
    /// The arrows' grid points, on the host (for the exact field) and on the device.
    points: Vec<f32>,
    grid: GpuBuffer<f32>,
    exact_field: GpuBuffer<f32>,
    data: GpuBuffer<f32>,
}

impl Engine {
    async fn new(gpu: Gpu, settings: Settings) -> Result<Self> {
        let mixture = GaussianMixture::eight_gaussians();
        let samples: Vec<f32> = mixture.sample(65536, 0).0.iter().map(|&v| v as f32).collect();
        let config = TrainConfig {
            adam: AdamConfig {
                lr: 3e-3,
                schedule: LrSchedule::Cosine { steps: TRAIN_STEPS },
                ema_decay: 0.99,
                ..AdamConfig::default()
            },
            batch: 256,
            seed: 1,
            steps_per_submit: 25,
            ..TrainConfig::new(
                MlpShape::new(2, 3, 128),
                Objective::Ncsn { sigma_max: 10.0, sigma_min: 0.1, levels: 10 },
            )
        };
        let mut trainer = Trainer::new(&gpu, config, &samples).await?;
        trainer.run(TRAIN_STEPS, 0)?;
        trainer.finish().await?;
        let field = Evaluator::new(&gpu, trainer.model(), Weights::Ema, GRID * GRID).await?;
        let points = common::lattice(GRID, EXTENT);
        let none = wgpu::BufferUsages::empty();
        let grid = GpuBuffer::from_slice(&gpu, "app.grid", &points, none)?;
        let exact_field = GpuBuffer::<f32>::new(&gpu, "app.exact_field", 2 * GRID * GRID, none)?;
        let data = GpuBuffer::from_slice(&gpu, "app.data", &samples[..2 * PARTICLES], wgpu::BufferUsages::VERTEX)?;
        let sampler = Self::sampler(&gpu, &mixture, &trainer, settings, 0).await?;
        let mut engine = Self { gpu, mixture, trainer, sampler, seed: 0, field, points, grid, exact_field, data };
        engine.set_fields(settings.sigma)?;
        Ok(engine)
    }

    async fn sampler(
        gpu: &Gpu,
        mixture: &GaussianMixture,
        trainer: &Trainer,
        s: Settings,
        seed: u64,
    ) -> Result<Sampler> {
        let method = if s.annealed {
            let sigmas = geometric_sigmas(s.sigma, 0.1f64.min(0.5 * s.sigma), 10);
            Method::AnnealedLangevin { sigmas, steps_per_level: 60, eps: s.step, denoise: true }
        } else {
            // eps sigma^2: the same step rule as annealed Langevin at its last level.
            let level = NoiseLevel::ve(s.sigma);
            Method::Langevin { level, step_size: s.step * s.sigma * s.sigma, steps: LANGEVIN_STEPS, init_std: 4.0 }
        };
        let source = if s.learned {
            ScoreSource::Network {
                model: trainer.model(),
                weights: Weights::Ema,
                parametrisation: Parametrisation::Score,
            }
        } else {
            ScoreSource::Mixture(mixture)
        };
        // One step per dispatch, so "steps per frame" counts steps.
        let config = SamplerConfig { steps_per_dispatch: 1, ..SamplerConfig::new(PARTICLES, seed) };
        Ok(Sampler::new(gpu, source, &method, config).await?)
    }

    /// The fields drawn at `sigma`: the learned one's points, and the exact one on the host.
    fn set_fields(&mut self, sigma: f64) -> Result<()> {
        self.field.set_points(&self.gpu, &self.points, &vec![sigma.ln() as f32; GRID * GRID])?;
        let p64: Vec<f64> = self.points.iter().map(|&v| v as f64).collect();
        let exact: Vec<f32> = self.mixture.noised_score(&p64, 1.0, sigma).iter().map(|v| (v * sigma) as f32).collect();
        self.exact_field.write(&self.gpu, 0, &exact);
        Ok(())
    }

    /// A new sampler for changed settings, continuing from the current particles.
    fn change(&mut self, encoder: &mut wgpu::CommandEncoder, s: Settings, keep_particles: bool) -> Result<()> {
        self.seed += 1;
        let mut sampler = pollster::block_on(Self::sampler(&self.gpu, &self.mixture, &self.trainer, s, self.seed))?;
        if keep_particles {
            sampler.continue_from(encoder, &self.sampler)?;
        }
        self.sampler = sampler;
        self.set_fields(s.sigma)
    }
}

/// The application's side: window, surface, pipelines, the scene texture.
struct View {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    device: wgpu::Device,
    queue: wgpu::Queue,
    scene: wgpu::Texture,
    blit: (wgpu::RenderPipeline, wgpu::BindGroup),
    data_points: wgpu::RenderPipeline,
    particles: wgpu::RenderPipeline,
    arrows: wgpu::RenderPipeline,
    arrow_groups: [wgpu::BindGroup; 2],
    engine: Engine,
    settings: Settings,
    frames: u64,
    last: Instant,
    frame_ms: Vec<f64>,
}

impl View {
    async fn new(event_loop: &ActiveEventLoop, instance: &wgpu::Instance, start: Settings) -> Result<Self> {
        let attributes = Window::default_attributes()
            .with_title("scorefield live")
            .with_inner_size(winit::dpi::PhysicalSize::new(SIZE, SIZE));
        let window = Arc::new(event_loop.create_window(attributes)?);
        let surface = instance.create_surface(window.clone())?;
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions { compatible_surface: Some(&surface), ..Default::default() })
            .await
            .context("no adapter can draw to this window")?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("app.device"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await?;
        let size = window.inner_size();
        let config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .context("the surface is not supported by the adapter")?;
        surface.configure(&device, &config);
        let gpu = Gpu::from_device(device.clone(), queue.clone())?;
        let settings = start;
        let engine = Engine::new(gpu, settings).await?;
        let scene = scene_texture(&device, &config);
        let blit = blit_pipeline(&device, config.format, &scene);
        let half = 1.5 * 2.0 / config.width as f32;
        let data_points = common::points_pipeline(&device, SCENE_FORMAT, EXTENT, half, [0.12, 0.06, 0.0]);
        let particles = common::points_pipeline(&device, SCENE_FORMAT, EXTENT, half, [0.03, 0.25, 0.25]);
        let arrows = common::arrows_pipeline(&device, SCENE_FORMAT, EXTENT, 2.0 * EXTENT / GRID as f32);
        let group = |field: &wgpu::Buffer| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("app.arrows"),
                layout: &arrows.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: engine.grid.raw().as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: field.as_entire_binding() },
                ],
            })
        };
        // The exact field, and the learned one straight from the evaluator's output buffer.
        let arrow_groups = [group(engine.exact_field.raw()), group(engine.field.output())];
        Ok(Self {
            window,
            surface,
            config,
            device,
            queue,
            scene,
            blit,
            data_points,
            particles,
            arrows,
            arrow_groups,
            engine,
            settings,
            frames: 0,
            last: Instant::now(),
            frame_ms: Vec::new(),
        })
    }

    /// A window of another size (a window manager or a high-DPI screen may not give the one
    /// asked for): the surface, the scene texture and the blit's binding follow it.
    fn resize(&mut self, size: winit::dpi::PhysicalSize<u32>) {
        if size.width == 0 || size.height == 0 {
            return;
        }
        self.config.width = size.width;
        self.config.height = size.height;
        self.surface.configure(&self.device, &self.config);
        self.scene = scene_texture(&self.device, &self.config);
        self.blit = blit_pipeline(&self.device, self.config.format, &self.scene);
    }

    fn key(&mut self, key: &Key) -> Result<()> {
        let mut s = self.settings;
        let mut keep = true;
        match key {
            Key::Named(NamedKey::ArrowUp) => s.sigma = (s.sigma * 1.25).min(20.0),
            Key::Named(NamedKey::ArrowDown) => s.sigma = (s.sigma / 1.25).max(0.02),
            Key::Named(NamedKey::ArrowRight) => s.step = (s.step * 2.0).min(1.0),
            Key::Named(NamedKey::ArrowLeft) => s.step /= 2.0,
            Key::Character(c) if c.as_str() == "s" => s.annealed = !s.annealed,
            Key::Character(c) if c.as_str() == "l" => s.learned = !s.learned,
            Key::Character(c) if c.as_str() == "r" => keep = false,
            Key::Character(c) if c.as_str() == "+" || c.as_str() == "=" => {
                s.steps_per_frame = (s.steps_per_frame * 2).min(1024)
            }
            Key::Character(c) if c.as_str() == "-" => s.steps_per_frame = (s.steps_per_frame / 2).max(1),
            _ => return Ok(()),
        }
        self.settings = s;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        self.engine.change(&mut encoder, s, keep)?;
        self.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// One frame: the engine's sampler steps and field into the app's encoder, the scene drawn
    /// from the engine's buffers, then copied to the window. Returns the scene texture's
    /// readback when `capture` is set.
    fn frame(&mut self, capture: bool) -> Result<Option<wgpu::Buffer>> {
        let target = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t) | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            _ => {
                self.surface.configure(&self.device, &self.config);
                return Ok(None);
            }
        };
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let s = self.settings;
        if self.engine.sampler.is_done() && !s.annealed {
            self.engine.change(&mut encoder, s, true)?;
        }
        self.engine.sampler.record(&mut encoder, s.steps_per_frame);
        if s.learned {
            self.engine.field.record(&self.engine.gpu, &mut encoder);
        }
        let scene_view = self.scene.create_view(&Default::default());
        {
            let mut pass = render_pass(&mut encoder, &scene_view, Some(wgpu::Color::WHITE));
            pass.set_pipeline(&self.data_points);
            pass.set_vertex_buffer(0, self.engine.data.raw().slice(..));
            pass.draw(0..6, 0..PARTICLES as u32);
            pass.set_pipeline(&self.arrows);
            pass.set_bind_group(0, &self.arrow_groups[s.learned as usize], &[]);
            pass.draw(0..(6 * GRID * GRID) as u32, 0..1);
            pass.set_pipeline(&self.particles);
            pass.set_vertex_buffer(0, self.engine.sampler.particles().raw().slice(..));
            pass.draw(0..6, 0..PARTICLES as u32);
        }
        {
            let view = target.texture.create_view(&Default::default());
            let mut pass = render_pass(&mut encoder, &view, None);
            pass.set_pipeline(&self.blit.0);
            pass.set_bind_group(0, &self.blit.1, &[]);
            pass.draw(0..3, 0..1);
        }
        let readback = capture.then(|| copy_out(&self.device, &mut encoder, &self.scene));
        self.queue.submit([encoder.finish()]);
        self.window.pre_present_notify();
        self.queue.present(target);
        let now = Instant::now();
        self.frame_ms.push(now.duration_since(self.last).as_secs_f64() * 1e3);
        self.last = now;
        self.frames += 1;
        if self.frame_ms.len() == 30 {
            self.report();
        }
        Ok(readback)
    }

    fn report(&mut self) {
        let mut ms = std::mem::take(&mut self.frame_ms);
        ms.sort_by(f64::total_cmp);
        let s = self.settings;
        let line = format!(
            "sigma {:.3}  step {:.4}  {}  {} score  {} steps/frame ({} particle-steps)  frame {:.1} ms median \
             ({:.1}-{:.1})",
            s.sigma,
            s.step,
            if s.annealed { "annealed" } else { "langevin" },
            if s.learned { "learned" } else { "exact" },
            s.steps_per_frame,
            s.steps_per_frame * PARTICLES,
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        );
        println!("{line}");
        self.window.set_title(&format!("scorefield live: {line}"));
    }
}

/// A render pass over `view`, cleared to `clear` or keeping what is there.
fn render_pass<'a>(
    encoder: &'a mut wgpu::CommandEncoder,
    view: &wgpu::TextureView,
    clear: Option<wgpu::Color>,
) -> wgpu::RenderPass<'a> {
    let load = clear.map_or(wgpu::LoadOp::Load, wgpu::LoadOp::Clear);
    encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
        label: None,
        color_attachments: &[Some(wgpu::RenderPassColorAttachment {
            view,
            depth_slice: None,
            resolve_target: None,
            ops: wgpu::Operations { load, store: wgpu::StoreOp::Store },
        })],
        ..Default::default()
    })
}

/// The texture the scene is drawn into, the window's size.
fn scene_texture(device: &wgpu::Device, config: &wgpu::SurfaceConfiguration) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("app.scene"),
        size: wgpu::Extent3d { width: config.width, height: config.height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: SCENE_FORMAT,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT
            | wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    })
}

fn blit_pipeline(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    scene: &wgpu::Texture,
) -> (wgpu::RenderPipeline, wgpu::BindGroup) {
    let pipeline = common::fullscreen_pipeline(device, "app.blit", BLIT, format);
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("app.blit"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::TextureView(&scene.create_view(&Default::default())),
        }],
    });
    (pipeline, group)
}

/// Records a copy of the scene texture into a mappable buffer (rows padded to 256 bytes).
fn copy_out(device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, scene: &wgpu::Texture) -> wgpu::Buffer {
    let padded = (scene.width() * 4).next_multiple_of(256);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app.screenshot"),
        size: (padded * scene.height()) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    encoder.copy_texture_to_buffer(
        scene.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(padded), rows_per_image: None },
        },
        scene.size(),
    );
    buffer
}

fn save_png(device: &wgpu::Device, buffer: &wgpu::Buffer, width: u32, height: u32, path: &str) -> Result<()> {
    buffer.slice(..).map_async(wgpu::MapMode::Read, |_| ());
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let padded = (width * 4).next_multiple_of(256) as usize;
    let data = buffer.get_mapped_range(..)?;
    let pixels: Vec<u8> =
        (0..height as usize).flat_map(|r| data[r * padded..r * padded + width as usize * 4].to_vec()).collect();
    image::RgbaImage::from_raw(width, height, pixels).context("screenshot size")?.save(path)?;
    Ok(())
}

struct App {
    instance: wgpu::Instance,
    view: Option<View>,
    screenshot: Option<(String, u64)>,
    start: Settings,
    error: Option<anyhow::Error>,
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.view.is_none() {
            match pollster::block_on(View::new(event_loop, &self.instance, self.start)) {
                Ok(view) => {
                    view.window.request_redraw();
                    self.view = Some(view);
                }
                Err(e) => {
                    self.error = Some(e);
                    event_loop.exit();
                }
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        let Some(view) = self.view.as_mut() else { return };
        let result = match event {
            WindowEvent::CloseRequested
            | WindowEvent::KeyboardInput {
                event: KeyEvent { logical_key: Key::Named(NamedKey::Escape), state: ElementState::Pressed, .. },
                ..
            } => {
                event_loop.exit();
                Ok(())
            }
            WindowEvent::KeyboardInput {
                event: KeyEvent { logical_key, state: ElementState::Pressed, .. }, ..
            } => view.key(&logical_key),
            WindowEvent::Resized(size) => {
                view.resize(size);
                Ok(())
            }
            WindowEvent::RedrawRequested => {
                let capture = self.screenshot.as_ref().is_some_and(|(_, n)| view.frames + 1 >= *n);
                match view.frame(capture) {
                    Ok(Some(buffer)) => {
                        let (path, _) = self.screenshot.as_ref().expect("capture implies a screenshot");
                        let (w, h) = (view.scene.width(), view.scene.height());
                        let saved = save_png(&view.device, &buffer, w, h, path);
                        if !view.frame_ms.is_empty() {
                            view.report();
                        }
                        event_loop.exit();
                        saved
                    }
                    Ok(None) => {
                        view.window.request_redraw();
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.error = Some(e);
            event_loop.exit();
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let screenshot = match flag("--screenshot") {
        Some(path) => Some((path, flag("--frames").map(|n| n.parse()).transpose()?.unwrap_or(60))),
        None => None,
    };
    let event_loop = EventLoop::new().context("no window system (on a headless machine run under xvfb-run)")?;
    event_loop.set_control_flow(ControlFlow::Poll);
    let display = Box::new(event_loop.owned_display_handle());
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(display));
    let start = Settings {
        sigma: 1.0,
        step: 0.05,
        annealed: false,
        learned: args.iter().any(|a| a == "--learned"),
        steps_per_frame: flag("--steps-per-frame").map(|n| n.parse()).transpose()?.unwrap_or(4),
    };
    let mut app = App { instance, view: None, screenshot, start, error: None };
    event_loop.run_app(&mut app)?;
    match app.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
