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

fn side_by_side(panels: &[RgbImage]) -> RgbImage {
    let gap = 8;
    let width = panels.len() as u32 * (PANEL + gap) - gap;
    let mut out = RgbImage::from_pixel(width, PANEL, Rgb([255, 255, 255]));
    for (k, p) in panels.iter().enumerate() {
        image::imageops::replace(&mut out, p, (k as u32 * (PANEL + gap)) as i64, 0);
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
    save_png(&side_by_side(&panels), path).with_context(|| format!("writing {}", path.display()))
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
        let lo = logs.iter().cloned().fold(f64::INFINITY, f64::min).floor();
        let hi = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
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
        for pair in finite.windows(2).zip(logs.windows(2)) {
            let ((a, _), (b, _)) = (pair.0[0], pair.0[1]);
            let (p0, p1) = (to_px(a, pair.1[0]), to_px(b, pair.1[1]));
            let n = (p1.0 - p0.0).abs().max((p1.1 - p0.1).abs()).max(1);
            for t in 0..=n {
                let x = p0.0 + (p1.0 - p0.0) * t / n;
                let y = p0.1 + (p1.1 - p0.1) * t / n;
                if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
                    img.put_pixel(x as u32, y as u32, Rgb([40, 40, 160]));
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
