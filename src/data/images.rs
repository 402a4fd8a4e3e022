//! Datasets made of pictures: a grayscale image read as a 2-D density, and a set of small
//! images (the 8x8 digits shipped in assets/, or a folder of PNGs) whose pixels are the
//! coordinates. The library takes encoded bytes, never paths, so it does no file I/O (the binary
//! reads the files, a web page would fetch them).

use crate::error::{Error, Result};
use crate::rng::{self, Stream};

/// A grayscale picture as a density on the plane: a point falls in a pixel with probability
/// proportional to its brightness (or darkness, inverted), uniformly within it. The picture is
/// centred with its longer side spanning [-4, 4], the range of the 2-D toys; y points up.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityImage {
    width: usize,
    height: usize,
    /// Cumulative pixel weights, row by row from the top, normalised to end at 1.
    cdf: Vec<f64>,
}

/// Half the span of the longer side of a density picture.
const DENSITY_HALF_SPAN: f64 = 4.0;

impl DensityImage {
    /// From an encoded PNG (any colour type; its luma is used). `invert`: dark pixels are dense
    /// (a drawing in black on white).
    pub fn from_png(bytes: &[u8], invert: bool) -> Result<Self> {
        let img = decode(bytes)?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let mut total = 0.0;
        let cdf = img
            .pixels()
            .map(|p| {
                let v = p.0[0] as f64 / 255.0;
                total += if invert { 1.0 - v } else { v };
                total
            })
            .collect::<Vec<_>>();
        if total <= 0.0 {
            let dense = if invert { "dark" } else { "bright" };
            return Err(Error::invalid("density image", format!("no {dense} pixel: the density is zero everywhere")));
        }
        Ok(Self { width, height, cdf: cdf.into_iter().map(|c| c / total).collect() })
    }

    /// `n` points [n, 2] for `seed`: point i takes uniforms 3i .. 3i + 2 of a Data stream.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let u = |i: usize, j: usize| rng::uniform_at(seed, Stream::Data.at(4), 3 * i as u64 + j as u64) as f64;
        let scale = 2.0 * DENSITY_HALF_SPAN / self.width.max(self.height) as f64;
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            let pixel = self.cdf.partition_point(|&c| c <= u(i, 0)).min(self.cdf.len() - 1);
            let (col, row) = ((pixel % self.width) as f64, (pixel / self.width) as f64);
            out.push(((col + u(i, 1) - 0.5 * self.width as f64) * scale) as f32);
            out.push(((0.5 * self.height as f64 - row - u(i, 2)) * scale) as f32);
        }
        out
    }
}

/// Equal-sized grayscale images, pixels scaled from 0..255 to [-1, 1], each a point of
/// dimension width x height (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub width: usize,
    pub height: usize,
    /// [count, height * width].
    pub pixels: Vec<f32>,
    /// Each image's class (the digits' digit), or empty where the images have none.
    pub labels: Vec<u32>,
    /// How many classes the labels name (0: unlabelled).
    pub classes: usize,
}

/// The 8x8 handwritten digits (1797 images; assets/digits/README.md has their source and
/// licence): one PNG holding a grid of 45 x 40 tiles, the last three empty.
const DIGITS_PNG: &[u8] = include_bytes!("../../assets/digits/digits.png");
const DIGITS_COUNT: usize = 1797;
/// The digit (0-9) of each tile, one per line.
const DIGITS_LABELS: &str = include_str!("../../assets/digits/labels.txt");

/// The labels of [`ImageSet::digits`], in the same order.
pub fn digit_labels() -> Vec<usize> {
    DIGITS_LABELS.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

impl ImageSet {
    /// The 8x8 digits shipped with the crate.
    pub fn digits() -> Result<Self> {
        let labels = digit_labels().iter().map(|&l| l as u32).collect();
        Ok(Self { labels, classes: 10, ..Self::from_tiles(DIGITS_PNG, 8, 8, DIGITS_COUNT)? })
    }

    /// `count` tiles of `tile_w` x `tile_h` from a grid PNG, filled row by row (unlabelled).
    pub fn from_tiles(bytes: &[u8], tile_w: usize, tile_h: usize, count: usize) -> Result<Self> {
        let img = decode(bytes)?;
        let cols = img.width() as usize / tile_w;
        let rows = img.height() as usize / tile_h;
        if count == 0 || count > cols * rows {
            return Err(Error::invalid(
                "image grid",
                format!("{count} tiles of {tile_w}x{tile_h} asked of a {}x{} picture", img.width(), img.height()),
            ));
        }
        let mut pixels = Vec::with_capacity(count * tile_w * tile_h);
        for k in 0..count {
            let (x0, y0) = ((k % cols) * tile_w, (k / cols) * tile_h);
            for y in y0..y0 + tile_h {
                for x in x0..x0 + tile_w {
                    pixels.push(to_unit(img.get_pixel(x as u32, y as u32).0[0]));
                }
            }
        }
        Ok(Self { width: tile_w, height: tile_h, pixels, labels: Vec::new(), classes: 0 })
    }

    /// One image per encoded PNG; `files` are (name, bytes), the name used in errors. All must
    /// have the size of the first.
    pub fn from_pngs<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self> {
        let mut set: Option<Self> = None;
        for (name, bytes) in files {
            let img = decode(bytes).map_err(|e| Error::invalid(format!("image {name}"), e.to_string()))?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            let set = set.get_or_insert_with(|| Self {
                width: w,
                height: h,
                pixels: Vec::new(),
                labels: Vec::new(),
                classes: 0,
            });
            if (w, h) != (set.width, set.height) {
                return Err(Error::invalid(
                    format!("image {name}"),
                    format!(
                        "it is {w}x{h}, but the first image is {}x{}; every image must have one size",
                        set.width, set.height
                    ),
                ));
            }
            set.pixels.extend(img.pixels().map(|p| to_unit(p.0[0])));
        }
        set.ok_or_else(|| Error::invalid("image set", "no images: the folder holds no .png file"))
    }

    pub fn dim(&self) -> usize {
        self.width * self.height
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.dim()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// `n` images [n, dim] drawn with replacement for `seed` (image i takes uniform i of a Data
    /// stream).
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        for i in 0..n {
            let u = rng::uniform_at(seed, Stream::Data.at(5), i as u64) as f64;
            let k = ((u * self.len() as f64) as usize).min(self.len() - 1);
            out.extend_from_slice(&self.pixels[k * d..(k + 1) * d]);
        }
        out
    }
}

fn decode(bytes: &[u8]) -> Result<image::GrayImage> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| Error::invalid("PNG", format!("cannot decode it: {e}")))?;
    Ok(img.into_luma8())
}

fn to_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
        let img = image::GrayImage::from_raw(width, height, pixels.to_vec()).unwrap();
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn a_density_puts_points_in_proportion_to_brightness() {
        // 4 x 2 pixels, each 2 x 2 units: top-left 255, bottom-right 85, the rest black. Points
        // fall in [-4, -2] x [0, 2] with probability 3/4 and in [2, 4] x [-2, 0] with 1/4.
        let mut pixels = [0u8; 8];
        pixels[0] = 255;
        pixels[7] = 85;
        let density = DensityImage::from_png(&png(4, 2, &pixels), false).unwrap();
        let n = 20_000;
        let points = density.sample(n, 7);
        let mut top_left = 0;
        for p in points.chunks(2) {
            let (x, y) = (p[0], p[1]);
            if (-4.0..=-2.0).contains(&x) && (0.0..=2.0).contains(&y) {
                top_left += 1;
            } else {
                assert!((2.0..=4.0).contains(&x) && (-2.0..=0.0).contains(&y), "({x}, {y}) is on a black pixel");
            }
        }
        // Binomial standard error of the share: sqrt(0.75 * 0.25 / n) = 0.003; allow 5 of them.
        let share = top_left as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.015, "share of the bright pixel {share}");
        // Inverted, the dark pixels are dense and the brightest one empty.
        let inverted = DensityImage::from_png(&png(4, 2, &pixels), true).unwrap();
        let p = inverted.sample(2000, 3);
        assert!(!p.chunks(2).any(|p| p[0] < -2.0 && p[1] > 0.0), "a point fell on the white pixel");
    }

    #[test]
    fn a_black_density_is_refused() {
        let err = DensityImage::from_png(&png(2, 2, &[0; 4]), false).unwrap_err().to_string();
        assert!(err.contains("zero everywhere"), "{err}");
    }

    #[test]
    fn the_digits_are_1797_images_of_8x8_in_unit_range() {
        let digits = ImageSet::digits().unwrap();
        assert_eq!((digits.width, digits.height, digits.len()), (8, 8, 1797));
        assert!(digits.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Every digit has ink (the grid's three empty tiles are not included).
        for (k, img) in digits.pixels.chunks(64).enumerate() {
            assert!(img.iter().any(|&v| v > 0.0), "digit {k} is blank");
        }
        let sample = digits.sample(10, 1);
        assert_eq!(sample.len(), 640);
        assert!(sample.chunks(64).all(|s| digits.pixels.chunks(64).any(|d| d == s)));
    }

    #[test]
    fn bad_image_sets_name_the_file() {
        let (a, b) = (png(2, 2, &[0, 64, 128, 255]), png(3, 2, &[0; 6]));
        let set = ImageSet::from_pngs([("a.png", a.as_slice()), ("c.png", a.as_slice())]).unwrap();
        assert_eq!((set.len(), set.dim()), (2, 4));
        assert_eq!(set.pixels[..4], [-1.0, 64.0 / 127.5 - 1.0, 128.0 / 127.5 - 1.0, 1.0]);
        let err = ImageSet::from_pngs([("a.png", a.as_slice()), ("b.png", b.as_slice())]).unwrap_err().to_string();
        assert!(err.contains("b.png") && err.contains("3x2") && err.contains("2x2"), "{err}");
        let err =
            ImageSet::from_pngs([("a.png", a.as_slice()), ("broken.png", &b"not a png"[..])]).unwrap_err().to_string();
        assert!(err.contains("broken.png") && err.contains("decode"), "{err}");
        let err = ImageSet::from_pngs(std::iter::empty()).unwrap_err().to_string();
        assert!(err.contains("no images"), "{err}");
    }
}
