//! Pictures of a run, drawn with plotters into RGB buffers and saved as PNG or GIF: every panel
//! has a title and axes with tick values, every curve a legend entry. The font (DejaVu Sans,
//! assets/fonts/) is compiled in and registered with plotters' ab_glyph backend, which reads no
//! system font, so the pictures render the same on a machine without fonts.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::files::write_atomic;

/// Side of a square scatter panel, in pixels.
const PANEL: u32 = 420;
const FONT: &str = "sans-serif";
const TITLE_SIZE: u32 = 20;
const LABEL_SIZE: u32 = 14;
pub const DATA_COLOUR: RGBColor = RGBColor(30, 80, 200);
pub const SAMPLE_COLOUR: RGBColor = RGBColor(200, 40, 40);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers the compiled-in font under [`FONT`] once per process.
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the compiled-in font assets/fonts/DejaVuSans.ttf could not be read"))
    }
}

/// A plotters error (a drawing backend's, or a font's) as an anyhow one.
fn plot<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| anyhow!("drawing a picture: {e}"))
}

/// A `width` x `height` picture drawn by `draw` on a white background.
fn render(width: u32, height: u32, draw: impl FnOnce(&Area) -> Result<()>) -> Result<RgbImage> {
    register_font()?;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        draw(&root)?;
        plot(root.present())?;
    }
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| anyhow!("picture buffer of the wrong size"))
}

fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

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

/// Points of `dim` coordinates drawn by their first two, in one colour.
struct Points<'a> {
    values: &'a [f32],
    dim: usize,
    colour: RGBColor,
    /// Opacity of one dot: low for thousands of points, so that density reads as darkness.
    alpha: f64,
}

/// Arrows of a vector field on a grid: `field[i]` drawn from `points[i]`.
struct Arrows<'a> {
    points: &'a [f32],
    field: &'a [f32],
    /// The longest arrow, in data units (about one grid cell).
    max_len: f32,
}

/// One scatter panel over [-extent, extent]^2 with its title, axes x1 and x2, the point
/// layers in order and optionally arrows on top.
fn scatter_panel(area: &Area, title: &str, extent: f32, layers: &[Points], arrows: Option<Arrows>) -> Result<()> {
    let mut chart = plot(
        ChartBuilder::on(area)
            .caption(title, (FONT, TITLE_SIZE))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(-extent..extent, -extent..extent),
    )?;
    plot(
        chart
            .configure_mesh()
            .x_desc("x1")
            .y_desc("x2")
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw(),
    )?;
    let inside = |x: f32, y: f32| x.abs() <= extent && y.abs() <= extent;
    for layer in layers {
        let style = layer.colour.mix(layer.alpha).filled();
        let dots = layer
            .values
            .chunks(layer.dim)
            .map(|p| (p[0], if layer.dim > 1 { p[1] } else { 0.0 }))
            .filter(|&(x, y)| inside(x, y))
            .map(|(x, y)| Circle::new((x, y), 2, style));
        plot(chart.draw_series(dots))?;
    }
    if let Some(a) = arrows {
        let ink = RGBColor(20, 20, 20).stroke_width(1);
        let mut strokes = Vec::new();
        for (p, v) in a.points.chunks(2).zip(a.field.chunks(2)) {
            let norm = v[0].hypot(v[1]);
            if !norm.is_finite() || norm == 0.0 {
                continue;
            }
            // Length grows with |v| and saturates at max_len, so every level reads alike.
            let len = a.max_len * norm / (1.0 + norm);
            let (dx, dy) = (v[0] / norm * len, v[1] / norm * len);
            let tip = (p[0] + dx, p[1] + dy);
            strokes.push(vec![(p[0], p[1]), tip]);
            // A short head: two strokes back from the tip at +-30 degrees.
            for angle in [2.6f32, -2.6] {
                let (s, c) = angle.sin_cos();
                let (hx, hy) = (dx * c - dy * s, dx * s + dy * c);
                strokes.push(vec![tip, (tip.0 + 0.35 * hx, tip.1 + 0.35 * hy)]);
            }
        }
        plot(chart.draw_series(strokes.into_iter().map(|s| PathElement::new(s, ink))))?;
    }
    Ok(())
}

/// Opacity for `n` dots: about 0.6 for a few hundred, falling to 0.15 for tens of thousands.
fn dot_alpha(n: usize) -> f64 {
    (60.0 / (n.max(1) as f64).sqrt()).clamp(0.15, 0.6)
}

/// The data (left, blue) beside the samples (right, red), on the same axes; `sampler` names
/// how the samples were drawn, for the right panel's title.
pub fn samples_beside_data(path: &Path, data: &[f32], samples: &[f32], dim: usize, sampler: &str) -> Result<()> {
    // The data's square: samples far outside it are off the picture, as they are off the data.
    let e = extent(data) * 1.25;
    let (n_data, n_samples) = (data.len() / dim.max(1), samples.len() / dim.max(1));
    let img = render(2 * PANEL, PANEL, |root| {
        let panels = root.split_evenly((1, 2));
        let data_layer = Points { values: data, dim, colour: DATA_COLOUR, alpha: dot_alpha(n_data) };
        scatter_panel(&panels[0], &format!("data ({n_data} points)"), e, &[data_layer], None)?;
        let sample_layer = Points { values: samples, dim, colour: SAMPLE_COLOUR, alpha: dot_alpha(n_samples) };
        scatter_panel(&panels[1], &format!("samples ({n_samples}, {sampler})"), e, &[sample_layer], None)
    })?;
    save_png(&img, path)
}

/// Pixel squares per image pixel, so that an 8x8 digit is 32 pixels wide.
fn tile_scale(width: usize, height: usize) -> u32 {
    (32 / width.max(height)).max(1) as u32
}

/// Hidden pixels of an inpainting's known image are drawn in this colour.
const HIDDEN_COLOUR: image::Rgb<u8> = image::Rgb([70, 110, 200]);

/// Draws one image (values in [-1, 1], black to white; NaN, a diverged sample, red) with its
/// top-left corner at (x0, y0), each pixel a `scale`-sized square; pixels whose `hidden` flag is
/// set are drawn in [`HIDDEN_COLOUR`].
fn draw_tile(out: &mut RgbImage, (x0, y0): (u32, u32), img: &[f32], width: usize, scale: u32, hidden: Option<&[bool]>) {
    for (i, &v) in img.iter().enumerate() {
        let pixel = if hidden.is_some_and(|h| h[i]) {
            HIDDEN_COLOUR
        } else if v.is_finite() {
            let g = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5) as u8;
            image::Rgb([g, g, g])
        } else {
            image::Rgb([255, 0, 0])
        };
        let (px, py) = (x0 + (i % width) as u32 * scale, y0 + (i / width) as u32 * scale);
        for dy in 0..scale {
            for dx in 0..scale {
                out.put_pixel(px + dx, py + dy, pixel);
            }
        }
    }
}

/// Images as a grid: the first 100 (10 x 10) of `images` [n, width * height].
fn image_grid(images: &[f32], width: usize, height: usize) -> RgbImage {
    let (cols, gap) = (10u32, 2u32);
    let scale = tile_scale(width, height);
    let (w, h) = (width as u32 * scale, height as u32 * scale);
    let count = (images.len() / (width * height)).min(100) as u32;
    let rows = count.div_ceil(cols).max(1);
    let mut out = RgbImage::from_pixel(cols * (w + gap) + gap, rows * (h + gap) + gap, image::Rgb([255, 255, 255]));
    for (k, img) in images.chunks(width * height).take(count as usize).enumerate() {
        let corner = (gap + (k as u32 % cols) * (w + gap), gap + (k as u32 / cols) * (h + gap));
        draw_tile(&mut out, corner, img, width, scale, None);
    }
    out
}

/// Inpainting: one row per image (the first 10), the original, what was known (hidden pixels
/// in blue), and its completions, under column titles. `originals` is [m, width * height],
/// `hidden` one flag per pixel, `completions` [m * per, width * height] (image i's in rows
/// i * per ..); images are drawn twice as large as in the sample grids.
pub fn inpainting(
    path: &Path,
    originals: &[f32],
    hidden: &[bool],
    completions: &[f32],
    (width, height): (usize, usize),
    per: usize,
) -> Result<()> {
    let d = width * height;
    let (gap, band, column_gap) = (6u32, 30u32, 24u32);
    let scale = 2 * tile_scale(width, height);
    let (w, h) = (width as u32 * scale, height as u32 * scale);
    let rows = (originals.len() / d).min(10);
    let left = 2 * (w + gap) + column_gap;
    let total_w = left + per as u32 * (w + gap) + gap;
    let total_h = band + rows as u32 * (h + gap) + gap;
    let titles = [
        ("original", gap + w / 2),
        ("known", 2 * gap + w + w / 2),
        ("completions", left + (per as u32 * (w + gap)) / 2),
    ];
    let mut img = render(total_w.max(left + 100), total_h, |root| {
        for (title, centre) in titles {
            let style = TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
            plot(root.draw(&Text::new(title, (centre as i32, band as i32 / 2), style)))?;
        }
        Ok(())
    })?;
    for (i, original) in originals.chunks(d).take(rows).enumerate() {
        let y0 = band + i as u32 * (h + gap);
        draw_tile(&mut img, (gap, y0), original, width, scale, None);
        draw_tile(&mut img, (gap + w + gap, y0), original, width, scale, Some(hidden));
        for (c, completion) in completions.chunks(d).skip(i * per).take(per).enumerate() {
            draw_tile(&mut img, (left + c as u32 * (w + gap), y0), completion, width, scale, None);
        }
    }
    save_png(&img, path)
}

/// For image data: a grid of data images (left) beside a grid of samples (right), each under
/// its title (`samples_title` for the samples).
pub fn image_grids(
    path: &Path,
    data: &[f32],
    samples: &[f32],
    (width, height): (usize, usize),
    samples_title: &str,
) -> Result<()> {
    let grids = [("data", image_grid(data, width, height)), (samples_title, image_grid(samples, width, height))];
    let (gap, band) = (24u32, 36u32);
    let grid_w = grids[0].1.width().max(grids[1].1.width());
    let total_w = 2 * grid_w + gap;
    let total_h = band + grids[0].1.height().max(grids[1].1.height());
    let mut img = render(total_w, total_h, |root| {
        for (k, (title, _)) in grids.iter().enumerate() {
            let centre = (k as u32 * (grid_w + gap) + grid_w / 2) as i32;
            let style = TextStyle::from((FONT, TITLE_SIZE).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
            plot(root.draw(&Text::new(*title, (centre, band as i32 / 2), style)))?;
        }
        Ok(())
    })?;
    for (k, (_, grid)) in grids.iter().enumerate() {
        image::imageops::replace(&mut img, grid, (k as u32 * (grid_w + gap)) as i64, band as i64);
    }
    save_png(&img, path)
}

/// The loss per noise level against the training step. `steps[i]` is a logged step,
/// `levels[i][j]` the mean loss of level j in that step's batch (NaN where the batch drew none),
/// `labels[j]` the level's name. Each level's curve is smoothed over about a fiftieth of the run
/// (a logged loss is one batch's, noisy at small batches) and drawn on a log axis, so that levels
/// whose losses differ by decades all read; the batch mean is drawn in black.
pub fn loss_curves(path: &Path, steps: &[u64], mean: &[f64], levels: &[Vec<f64>], labels: &[String]) -> Result<()> {
    let smooth = |values: &[f64]| -> Vec<(f64, f64)> {
        let points: Vec<(f64, f64)> = steps
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite() && **v > 0.0)
            .map(|(&s, &v)| (s as f64, v.ln()))
            .collect();
        let half = (points.len() / 50).max(1);
        (0..points.len())
            .map(|i| {
                let window = &points[i.saturating_sub(half)..(i + half + 1).min(points.len())];
                (points[i].0, (window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64).exp())
            })
            .collect()
    };
    // (legend label, colour, smoothed (step, loss) points)
    type Curve = (String, RGBColor, Vec<(f64, f64)>);
    let mut curves: Vec<Curve> = Vec::new();
    let count = labels.len();
    for (j, label) in labels.iter().enumerate() {
        let column: Vec<f64> = levels.iter().map(|l| l.get(j).copied().unwrap_or(f64::NAN)).collect();
        let curve = smooth(&column);
        if curve.len() >= 2 {
            // Largest noise red, smallest blue.
            let hue = 0.7 * j as f64 / (count.max(2) - 1) as f64;
            curves.push((label.clone(), colour_of(HSLColor(hue, 0.75, 0.45)), curve));
        }
    }
    let mean_curve = smooth(mean);
    if mean_curve.len() >= 2 {
        curves.push(("batch mean".into(), RGBColor(0, 0, 0), mean_curve));
    }
    let finite = curves.iter().flat_map(|c| c.2.iter().map(|p| p.1));
    let (lo, hi) = finite.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > 0.0 { (lo / 1.3, hi * 1.3) } else { (0.1, 1.0) };
    let last = steps.last().copied().unwrap_or(1).max(1) as f64;
    let img = render(820, 420, |root| {
        let (chart_area, legend_area) = root.split_horizontally(640);
        let mut chart = plot(
            ChartBuilder::on(&chart_area)
                .caption("training loss per noise level", (FONT, TITLE_SIZE))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..last, (lo..hi).log_scale()),
        )?;
        plot(
            chart
                .configure_mesh()
                .x_desc("training step")
                .y_desc("loss (log scale)")
                .label_style((FONT, LABEL_SIZE))
                .axis_desc_style((FONT, LABEL_SIZE))
                .y_label_formatter(&|v| tick(*v))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .light_line_style(WHITE)
                .bold_line_style(RGBColor(225, 225, 225))
                .draw(),
        )?;
        for (_, colour, curve) in &curves {
            plot(chart.draw_series(LineSeries::new(curve.iter().copied(), colour.stroke_width(2))))?;
        }
        // The legend beside the chart, one row per curve.
        for (k, (label, colour, _)) in curves.iter().enumerate() {
            let y = 40 + 22 * k as i32;
            plot(legend_area.draw(&Rectangle::new([(8, y - 2), (30, y + 2)], colour.filled())))?;
            let style = TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            plot(legend_area.draw(&Text::new(label.as_str(), (38, y), style)))?;
        }
        Ok(())
    })?;
    save_png(&img, path)
}

/// A tick value of a log axis: plain with up to three significant digits between 0.001 and
/// 10^4, else in e-notation.
fn tick(v: f64) -> String {
    if (1e-3..1e4).contains(&v.abs()) {
        let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        let text = format!("{v:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    } else {
        format!("{v:.1e}")
    }
}

fn colour_of(c: HSLColor) -> RGBColor {
    let (r, g, b) = c.rgb();
    RGBColor(r, g, b)
}

/// An animated GIF of the particles through the sampler's snapshots, each frame a panel with
/// axes titled by `titles[k]`.
pub fn animation(path: &Path, frames: &[Vec<f32>], dim: usize, extent: f32, titles: &[String]) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        for (k, f) in frames.iter().enumerate() {
            let n = f.len() / dim.max(1);
            let title = titles.get(k).map_or("", String::as_str);
            let panel = render(PANEL, PANEL, |root| {
                let layer = Points { values: f, dim, colour: SAMPLE_COLOUR, alpha: dot_alpha(n) };
                scatter_panel(root, title, extent, &[layer], None)
            })?;
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

/// Score fields as arrows over the data, one panel per entry of `fields` titled by the same
/// entry of `titles`, `cols` to a row (one row per source, one column per noise level; each
/// field the scores at [`grid`]`(n, extent)`, already scaled by sigma so every level reads
/// alike). An arrow points along sigma * s, its length growing with |sigma * s| up to one grid
/// cell.
pub fn score_fields(
    path: &Path,
    data: &[f32],
    fields: &[Vec<f32>],
    titles: &[String],
    n: usize,
    extent: f32,
    cols: usize,
) -> Result<()> {
    let points = grid(n, extent);
    let cols = cols.clamp(1, fields.len().max(1));
    let rows = fields.len().div_ceil(cols).max(1);
    let img = render(cols as u32 * PANEL, rows as u32 * PANEL, |root| {
        let panels = root.split_evenly((rows, cols));
        for (k, field) in fields.iter().enumerate() {
            let data_layer = Points { values: data, dim: 2, colour: RGBColor(150, 180, 230), alpha: 0.25 };
            let arrows = Arrows { points: &points, field, max_len: 0.9 * 2.0 * extent / n as f32 };
            let title = titles.get(k).map_or("", String::as_str);
            scatter_panel(&panels[k], title, extent, &[data_layer], Some(arrows))?;
        }
        Ok(())
    })?;
    save_png(&img, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels of `img` in the box that are dark (text, axes, arrows).
    fn dark(img: &RgbImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count()
    }

    /// The pictures carry text drawn from the compiled-in font (a title over each panel, tick
    /// values beside the axes) and a legend entry per noise level in its own colour.
    #[test]
    fn pictures_carry_titles_ticks_and_legends() {
        let dir = std::env::temp_dir().join(format!("scorefield-pictures-{}", std::process::id()));
        let data: Vec<f32> = (0..800).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        samples_beside_data(&dir.join("s.png"), &data, &data, 2, "annealed").unwrap();
        let img = image::open(dir.join("s.png")).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * PANEL, PANEL));
        for panel in 0..2 {
            let x0 = panel * PANEL;
            let title = dark(&img, x0..x0 + PANEL, 0..30);
            let ticks = dark(&img, x0..x0 + 50, 40..PANEL - 50);
            assert!(title > 100 && ticks > 100, "panel {panel}: title {title}, tick labels {ticks} dark pixels");
        }

        let steps: Vec<u64> = (1..=40).map(|s| 50 * s).collect();
        let levels: Vec<Vec<f64>> =
            steps.iter().map(|&s| (0..3).map(|j| 10f64.powi(-j) / (s as f64).sqrt()).collect()).collect();
        let mean: Vec<f64> = levels.iter().map(|l| l.iter().sum::<f64>() / 3.0).collect();
        let labels: Vec<String> = ["σ = 10", "σ = 1", "σ = 0.1"].map(String::from).to_vec();
        loss_curves(&dir.join("l.png"), &steps, &mean, &levels, &labels).unwrap();
        let img = image::open(dir.join("l.png")).unwrap().to_rgb8();
        // The legend (right of the chart): one coloured swatch per level, each its own colour.
        let swatches: std::collections::BTreeSet<[u8; 3]> =
            (0..4).map(|k| img.get_pixel(640 + 20, 40 + 22 * k).0).filter(|c| c.iter().any(|&v| v < 200)).collect();
        assert_eq!(swatches.len(), 4, "legend swatches {swatches:?}");
        assert!(dark(&img, 640 + 38..820, 30..130) > 100, "no legend labels");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
