//! Pictures of a run, drawn straight into RGB buffers (no fonts needed, so they render the same
//! on any machine): point clouds as density panels, the loss curve, and an animation.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

use crate::files::write_atomic;

const PANEL: u32 = 400;
const BACKGROUND: Rgb<u8> = Rgb([250, 250, 248]);
const AXIS: Rgb<u8> = Rgb([200, 200, 200]);

/// The square [-extent, extent]^2 that holds most of the points (the 99.5th percentile of
/// |coordinate|, plus a margin), shared by every panel so they compare.
pub fn extent(points: &[f32]) -> f32 {
    let mut abs: Vec<f32> = points.iter().filter(|v| v.is_finite()).map(|v| v.abs()).collect();
    if abs.is_empty() {
        return 1.0;
    }
    abs.sort_by(f32::total_cmp);
    (abs[(abs.len() * 995) / 1000].max(1e-3)) * 1.15
}

/// One panel: the first two coordinates of the points as a density, darker where more points
/// fall (log scale, so a scatter of few points and a heatmap of many both read well).
fn density_panel(points: &[f32], dim: usize, extent: f32, colour: [u8; 3]) -> RgbImage {
    let mut counts = vec![0u32; (PANEL * PANEL) as usize];
    for p in points.chunks(dim) {
        let (x, y) = (p[0], if dim > 1 { p[1] } else { 0.0 });
        let px = ((x / extent + 1.0) * 0.5 * PANEL as f32) as i64;
        let py = ((1.0 - y / extent) * 0.5 * PANEL as f32) as i64;
        if (0..PANEL as i64).contains(&px) && (0..PANEL as i64).contains(&py) {
            counts[(py * PANEL as i64 + px) as usize] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f32;
    let mut img = RgbImage::from_pixel(PANEL, PANEL, BACKGROUND);
    let mid = PANEL / 2;
    for i in 0..PANEL {
        img.put_pixel(i, mid, AXIS);
        img.put_pixel(mid, i, AXIS);
    }
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 {
            let t = 0.35 + 0.65 * (1.0 + c as f32).ln() / (1.0 + max).ln();
            let shade = |bg: u8, fg: u8| (bg as f32 + t * (fg as f32 - bg as f32)) as u8;
            let pixel = Rgb([
                shade(BACKGROUND[0], colour[0]),
                shade(BACKGROUND[1], colour[1]),
                shade(BACKGROUND[2], colour[2]),
            ]);
            img.put_pixel(i as u32 % PANEL, i as u32 / PANEL, pixel);
        }
    }
    img
}

/// Panels in rows of `cols`, with white gaps.
fn tile(panels: &[RgbImage], cols: usize) -> RgbImage {
    let gap = 8;
    let cols = cols.clamp(1, panels.len().max(1)) as u32;
    let rows = (panels.len() as u32).div_ceil(cols).max(1);
    let mut out = RgbImage::from_pixel(cols * (PANEL + gap) - gap, rows * (PANEL + gap) - gap, Rgb([255, 255, 255]));
    for (k, p) in panels.iter().enumerate() {
        let (r, c) = (k as u32 / cols, k as u32 % cols);
        image::imageops::replace(&mut out, p, (c * (PANEL + gap)) as i64, (r * (PANEL + gap)) as i64);
    }
    out
}

fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    write_atomic(path, &bytes)
}

/// The data (left, blue) beside the samples (right, red), on the same axes.
pub fn samples_beside_data(path: &Path, data: &[f32], samples: &[f32], dim: usize) -> Result<()> {
    // The data's square: samples far outside it are off the picture, as they are off the data.
    let e = extent(data) * 1.25;
    let panels = [density_panel(data, dim, e, [30, 80, 200]), density_panel(samples, dim, e, [200, 40, 40])];
    save_png(&tile(&panels, 2), path).with_context(|| format!("writing {}", path.display()))
}

/// Images as a grid: the first 100 (10 x 10) of `images` [n, width * height], values in
/// [-1, 1] drawn black to white, each pixel a square so that an 8x8 digit is 32 pixels wide.
fn image_grid(images: &[f32], width: usize, height: usize) -> RgbImage {
    let (cols, gap) = (10u32, 2u32);
    let scale = (32 / width.max(height)).max(1) as u32;
    let (w, h) = (width as u32 * scale, height as u32 * scale);
    let count = (images.len() / (width * height)).min(100) as u32;
    let rows = count.div_ceil(cols).max(1);
    let mut out = RgbImage::from_pixel(cols * (w + gap) + gap, rows * (h + gap) + gap, Rgb([255, 255, 255]));
    for (k, img) in images.chunks(width * height).take(count as usize).enumerate() {
        let (x0, y0) = (gap + (k as u32 % cols) * (w + gap), gap + (k as u32 / cols) * (h + gap));
        for (i, &v) in img.iter().enumerate() {
            // NaN (a diverged sample) shows as red.
            let pixel = if v.is_finite() {
                let g = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5) as u8;
                Rgb([g, g, g])
            } else {
                Rgb([255, 0, 0])
            };
            let (px, py) = (x0 + (i % width) as u32 * scale, y0 + (i / width) as u32 * scale);
            for dy in 0..scale {
                for dx in 0..scale {
                    out.put_pixel(px + dx, py + dy, pixel);
                }
            }
        }
    }
    out
}

/// For image data: a grid of data images (left) beside a grid of samples (right).
pub fn image_grids(path: &Path, data: &[f32], samples: &[f32], width: usize, height: usize) -> Result<()> {
    let (left, right) = (image_grid(data, width, height), image_grid(samples, width, height));
    let gap = 16;
    let mut out = RgbImage::from_pixel(
        left.width() + gap + right.width(),
        left.height().max(right.height()),
        Rgb([255, 255, 255]),
    );
    image::imageops::replace(&mut out, &left, 0, 0);
    image::imageops::replace(&mut out, &right, (left.width() + gap) as i64, 0);
    save_png(&out, path).with_context(|| format!("writing {}", path.display()))
}

/// The mean loss against the step, on a log scale in both axes' spirit: x linear in steps, y
/// log10 of the loss, with faint lines at each power of ten.
pub fn loss_curve(path: &Path, points: &[(u64, f64)]) -> Result<()> {
    let (w, h) = (640u32, 320u32);
    let mut img = RgbImage::from_pixel(w, h, BACKGROUND);
    let finite: Vec<(u64, f64)> = points.iter().copied().filter(|(_, l)| l.is_finite() && *l > 0.0).collect();
    if finite.len() >= 2 {
        let last = finite[finite.len() - 1].0.max(1) as f64;
        let logs: Vec<f64> = finite.iter().map(|(_, l)| l.log10()).collect();
        // The y range: the losses' own, padded, in steps of a tenth of a decade (a run whose
        // loss moves within one decade still fills the picture); faint lines at each decade.
        let lo = (logs.iter().cloned().fold(f64::INFINITY, f64::min) * 10.0).floor() / 10.0;
        let hi = ((logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) * 10.0).ceil() / 10.0).max(lo + 0.1);
        let to_px = |step: u64, log: f64| {
            let x = (step as f64 / last * (w - 21) as f64) as i64 + 10;
            let y = ((hi - log) / (hi - lo) * (h - 21) as f64) as i64 + 10;
            (x, y)
        };
        for decade in lo as i64..=hi as i64 {
            let (_, y) = to_px(0, decade as f64);
            for x in 0..w {
                if (0..h as i64).contains(&y) {
                    img.put_pixel(x, y as u32, AXIS);
                }
            }
        }
        // Each logged loss is one batch's, noisy at small batches: drawn faint, with a moving
        // average over about a fiftieth of the run (in log space) drawn over it.
        let steps: Vec<u64> = finite.iter().map(|p| p.0).collect();
        let half = (logs.len() / 50).max(1);
        let smooth: Vec<f64> = (0..logs.len())
            .map(|i| {
                let window = &logs[i.saturating_sub(half)..(i + half + 1).min(logs.len())];
                window.iter().sum::<f64>() / window.len() as f64
            })
            .collect();
        for (values, colour) in [(&logs, Rgb([190, 190, 225])), (&smooth, Rgb([40, 40, 160]))] {
            for i in 1..values.len() {
                let (p0, p1) = (to_px(steps[i - 1], values[i - 1]), to_px(steps[i], values[i]));
                let n = (p1.0 - p0.0).abs().max((p1.1 - p0.1).abs()).max(1);
                for t in 0..=n {
                    let x = p0.0 + (p1.0 - p0.0) * t / n;
                    let y = p0.1 + (p1.1 - p0.1) * t / n;
                    if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
                        img.put_pixel(x as u32, y as u32, colour);
                    }
                }
            }
        }
    }
    save_png(&img, path).with_context(|| format!("writing {}", path.display()))
}

/// An animated GIF of the particles through the sampler's snapshots.
pub fn animation(path: &Path, frames: &[Vec<f32>], dim: usize, extent: f32) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        for (k, f) in frames.iter().enumerate() {
            let panel = density_panel(f, dim, extent, [200, 40, 40]);
            let rgba = image::DynamicImage::ImageRgb8(panel).to_rgba8();
            // Hold the last frame so the result can be seen.
            let ms = if k + 1 == frames.len() { 1500 } else { 120 };
            let frame = image::Frame::from_parts(rgba, 0, 0, image::Delay::from_numer_denom_ms(ms, 1));
            encoder.encode_frame(frame)?;
        }
    }
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Grid points for a score field: `n` x `n` cell centres over [-extent, extent]^2, row-major
/// from the top left.
pub fn grid(n: usize, extent: f32) -> Vec<f32> {
    let cell = 2.0 * extent / n as f32;
    (0..n * n)
        .flat_map(|i| {
            let (r, c) = (i / n, i % n);
            [-extent + (c as f32 + 0.5) * cell, extent - (r as f32 + 0.5) * cell]
        })
        .collect()
}

/// Score fields as arrows over the data's density, one panel per entry of `fields`, `cols` to a
/// row (one row per source, one column per noise level; each field the scores at
/// [`grid`]`(n, extent)`, already scaled by sigma so every level reads alike). An arrow points
/// along sigma * s, its length growing with |sigma * s| up to one grid cell.
pub fn score_fields(path: &Path, data: &[f32], fields: &[Vec<f32>], n: usize, extent: f32, cols: usize) -> Result<()> {
    let cell = PANEL as f32 / n as f32;
    let panels: Vec<RgbImage> = fields
        .iter()
        .map(|field| {
            let mut img = density_panel(data, 2, extent, [150, 180, 230]);
            for (i, v) in field.chunks(2).enumerate() {
                let (r, c) = (i / n, i % n);
                let (cx, cy) = ((c as f32 + 0.5) * cell, (r as f32 + 0.5) * cell);
                let norm = v[0].hypot(v[1]);
                if !norm.is_finite() || norm == 0.0 {
                    continue;
                }
                let len = 0.9 * cell * (norm / (1.0 + norm));
                let (dx, dy) = (v[0] / norm * len, -v[1] / norm * len);
                let tip = (cx + dx, cy + dy);
                line(&mut img, (cx, cy), tip, Rgb([20, 20, 20]));
                // A short head: two strokes back from the tip at +-30 degrees.
                for angle in [2.6f32, -2.6] {
                    let (s, c) = angle.sin_cos();
                    let (hx, hy) = (dx * c - dy * s, dx * s + dy * c);
                    line(&mut img, tip, (tip.0 + 0.35 * hx, tip.1 + 0.35 * hy), Rgb([20, 20, 20]));
                }
            }
            img
        })
        .collect();
    save_png(&tile(&panels, cols), path).with_context(|| format!("writing {}", path.display()))
}

fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), colour: Rgb<u8>) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for t in 0..=steps {
        let f = t as f32 / steps as f32;
        let (x, y) = (a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1));
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}
