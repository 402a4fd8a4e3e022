//! What the page draws: the toy's density as the background (a smoothed histogram of its
//! points, drawn as a texture), the score field as arrows read straight from the engine's
//! evaluator buffer, and the particles read straight from the sampler's buffer. The arrows and
//! points are the live viewer's (examples/common).
//!
//! The scene is drawn into a texture and copied into the canvas through its 2-D context, not
//! presented through a WebGPU canvas context: headless Chromium on SwiftShader (the browser
//! test) loses the whole WebGPU instance as soon as a WebGPU canvas is presented, and a 640 x
//! 640 copy per frame (1.6 MB) costs a real GPU well under a millisecond. One path for every
//! browser, and it is the tested one.

use scorefield::gpu::{Gpu, GpuBuffer, PendingRead};
use wasm_bindgen::{Clamped, JsCast};

use crate::draw;

/// The drawn square is [-EXTENT, EXTENT]^2 in data coordinates: every toy fits.
pub const EXTENT: f32 = 6.0;
/// Arrows on a GRID x GRID lattice of cell centres.
pub const GRID: usize = 24;
/// The density histogram's bins per side.
const BINS: usize = 160;

/// A full-screen triangle showing the density texture.
const DENSITY: &str = r#"
@group(0) @binding(0) var density: texture_2d<f32>;
@group(0) @binding(1) var linear_sampler: sampler;

struct Varyings {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@vertex
fn vs(@builtin(vertex_index) v: u32) -> Varyings {
    let p = vec2(f32((v << 1u) & 2u), f32(v & 2u));
    return Varyings(vec4(2.0 * p - 1.0, 0.0, 1.0), vec2(p.x, 1.0 - p.y));
}

@fragment
fn fs(in: Varyings) -> @location(0) vec4<f32> {
    return textureSample(density, linear_sampler, in.uv);
}
"#;

pub struct Scene {
    gpu: Gpu,
    canvas: web_sys::CanvasRenderingContext2d,
    size: (u32, u32),
    /// The scene is drawn here, then copied out to `pixels` and into the canvas.
    target: wgpu::Texture,
    pixels: GpuBuffer<u32>,
    density: wgpu::RenderPipeline,
    density_group: Option<wgpu::BindGroup>,
    arrows: wgpu::RenderPipeline,
    particles: wgpu::RenderPipeline,
    /// The arrows' lattice, on the host (the evaluator's input) and on the device.
    pub points: Vec<f32>,
    grid: GpuBuffer<f32>,
}

/// The scene texture's format: RGBA bytes, as the canvas's ImageData wants them.
const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

impl Scene {
    /// A scene the size of `canvas` (its width must make rows of a multiple of 256 bytes:
    /// a multiple of 64 pixels).
    pub fn new(gpu: &Gpu, canvas: &web_sys::HtmlCanvasElement) -> Result<Self, String> {
        let size = (canvas.width(), canvas.height());
        if size.0 == 0 || size.1 == 0 || !size.0.is_multiple_of(64) {
            return Err(format!("the canvas is {}x{}: its width must be a positive multiple of 64", size.0, size.1));
        }
        let context = canvas
            .get_context("2d")
            .ok()
            .flatten()
            .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
            .ok_or("the canvas has no 2-D context")?;
        let device = gpu.device();
        let target = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("page.scene"),
            size: wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let pixels = GpuBuffer::<u32>::new(gpu, "page.pixels", (size.0 * size.1) as usize, wgpu::BufferUsages::empty())
            .map_err(|e| e.to_string())?;
        let density = draw::fullscreen_pipeline(device, "page.density", DENSITY, FORMAT);
        let half = 1.5 * 2.0 / size.0 as f32;
        let arrows = draw::arrows_pipeline(device, FORMAT, EXTENT, 2.0 * EXTENT / GRID as f32);
        let particles = draw::points_pipeline(device, FORMAT, EXTENT, half, [0.05, 0.55, 0.6]);
        let points = draw::lattice(GRID, EXTENT);
        let grid =
            GpuBuffer::from_slice(gpu, "page.grid", &points, wgpu::BufferUsages::empty()).map_err(|e| e.to_string())?;
        Ok(Self {
            gpu: gpu.clone(),
            canvas: context,
            size,
            target,
            pixels,
            density,
            density_group: None,
            arrows,
            particles,
            points,
            grid,
        })
    }

    /// The background for a new toy: a histogram of `data` ([n, 2]) smoothed over
    /// about a bin, shaded from white (no mass) to blue-grey (the densest bin).
    pub fn set_density(&mut self, data: &[f32]) {
        let mut bins = vec![0f32; BINS * BINS];
        let scale = BINS as f32 / (2.0 * EXTENT);
        for p in data.chunks_exact(2) {
            let (col, row) = ((p[0] + EXTENT) * scale, (EXTENT - p[1]) * scale);
            if (0.0..BINS as f32).contains(&col) && (0.0..BINS as f32).contains(&row) {
                bins[row as usize * BINS + col as usize] += 1.0;
            }
        }
        let smoothed = blur(&blur(&bins, 1), BINS);
        let top = smoothed.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
        let texels: Vec<u8> = smoothed
            .iter()
            .flat_map(|&v| {
                let t = (v / top).sqrt();
                let shade = |depth: f32| (255.0 * (1.0 - depth * t)) as u8;
                [shade(0.45), shade(0.35), shade(0.2), 255]
            })
            .collect();
        let size = wgpu::Extent3d { width: BINS as u32, height: BINS as u32, depth_or_array_layers: 1 };
        let texture = self.gpu.device().create_texture(&wgpu::TextureDescriptor {
            label: Some("page.density"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        self.gpu.queue().write_texture(
            texture.as_image_copy(),
            &texels,
            wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * BINS as u32), rows_per_image: None },
            size,
        );
        let sampler = self.gpu.device().create_sampler(&wgpu::SamplerDescriptor {
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let view = texture.create_view(&Default::default());
        self.density_group = Some(self.gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("page.density"),
            layout: &self.density.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view) },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::Sampler(&sampler) },
            ],
        }));
    }

    /// The bind group drawing arrows from `field` ([GRID * GRID, 2] f32, sigma * score).
    pub fn arrows_group(&self, field: &wgpu::Buffer) -> wgpu::BindGroup {
        self.gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("page.arrows"),
            layout: &self.arrows.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: self.grid.raw().as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: field.as_entire_binding() },
            ],
        })
    }

    /// Draws the density, the arrows and (when sampling) the particles ([n, 2] f32) after the
    /// engine's work in `encoder`, submits, and copies the picture into the canvas once the GPU
    /// has drawn it.
    pub async fn draw(
        &self,
        mut encoder: wgpu::CommandEncoder,
        arrows: &wgpu::BindGroup,
        particles: Option<(&wgpu::Buffer, u32)>,
    ) -> scorefield::Result<()> {
        let view = self.target.create_view(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("page.scene"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::WHITE),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            if let Some(group) = &self.density_group {
                pass.set_pipeline(&self.density);
                pass.set_bind_group(0, group, &[]);
                pass.draw(0..3, 0..1);
            }
            pass.set_pipeline(&self.arrows);
            pass.set_bind_group(0, arrows, &[]);
            pass.draw(0..(6 * GRID * GRID) as u32, 0..1);
            if let Some((buffer, n)) = particles {
                pass.set_pipeline(&self.particles);
                pass.set_vertex_buffer(0, buffer.slice(..));
                pass.draw(0..6, 0..n);
            }
        }
        let (width, height) = self.size;
        encoder.copy_texture_to_buffer(
            self.target.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: self.pixels.raw(),
                layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * width), rows_per_image: None },
            },
            wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        );
        let read = PendingRead::<u32>::record(&self.gpu, &mut encoder, self.pixels.raw(), 0, self.pixels.len())?;
        let submission = self.gpu.submit(encoder);
        let rgba = read.finish(&self.gpu, Some(submission)).await?;
        let image =
            web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(bytemuck::cast_slice(&rgba)), width, height);
        // Neither fails for a canvas-sized image of whole rows; nothing to recover if they did.
        if let Ok(image) = image {
            let _ = self.canvas.put_image_data(&image, 0.0, 0.0);
        }
        Ok(())
    }
}

/// A 5-tap binomial blur (about a Gaussian of one bin) along rows (`step` 1) or columns
/// (`step` BINS) of a BINS x BINS image; zero outside.
fn blur(values: &[f32], step: usize) -> Vec<f32> {
    const TAPS: [f32; 5] = [1.0, 4.0, 6.0, 4.0, 1.0];
    let mut out = vec![0f32; values.len()];
    for (i, o) in out.iter_mut().enumerate() {
        let along = (i / step) % BINS;
        for (k, &w) in TAPS.iter().enumerate() {
            let j = along as isize + k as isize - 2;
            if (0..BINS as isize).contains(&j) {
                *o += w / 16.0 * values[i - along * step + j as usize * step];
            }
        }
    }
    out
}
