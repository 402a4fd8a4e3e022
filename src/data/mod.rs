//! Datasets: 2-D toys drawn from the engine's RNG (so a seed names the same points on every
//! machine) and Gaussian mixtures, whose noised scores are exact. Each toy's shape follows the
//! common definitions of the score-model and flow literature (scikit-learn's `make_moons` and
//! `make_swiss_roll`, FFJORD's `checkerboard`, `rings` and `2spirals` toys), scaled to about
//! [-4, 4]^2 like the eight Gaussians. Pictures make datasets too (images.rs): a grayscale PNG as
//! a 2-D density, the 8x8 digits, a folder of PNGs.

mod images;

pub use images::{digit_labels, DensityImage, ImageSet};

use crate::error::{Error, Result};
use crate::mixture::GaussianMixture;
use crate::rng::{self, Stream};

/// A 2-D toy distribution, a Gaussian mixture, a picture's density or a set of images.
#[derive(Clone, Debug, PartialEq)]
pub enum Dataset {
    /// Eight Gaussians of std 0.5 on a circle of radius 4 (WORKLOADS.md W1).
    EightGaussians,
    /// Any Gaussian mixture (from a config: weights, means, stds).
    Mixture(GaussianMixture),
    TwoMoons,
    SwissRoll,
    Checkerboard,
    Rings,
    Spirals,
    /// A grayscale picture read as a 2-D density.
    Density(DensityImage),
    /// Images whose pixels are the coordinates (the digits, or a folder of PNGs).
    Images(ImageSet),
}

/// The built-in dataset names the CLI and configs accept (the 2-D toys, then the digits).
pub const TOY_NAMES: &[&str] =
    &["eight-gaussians", "two-moons", "swiss-roll", "checkerboard", "rings", "spirals", "digits"];

impl Dataset {
    /// A toy by name (see [`TOY_NAMES`]); mixtures come from a config instead.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "eight-gaussians" => Dataset::EightGaussians,
            "two-moons" => Dataset::TwoMoons,
            "swiss-roll" => Dataset::SwissRoll,
            "checkerboard" => Dataset::Checkerboard,
            "rings" => Dataset::Rings,
            "spirals" => Dataset::Spirals,
            "digits" => Dataset::Images(ImageSet::digits()?),
            _ => {
                return Err(Error::invalid(
                    "dataset",
                    format!(
                        "unknown dataset `{name}`; choose one of {}, `mixture` with weights, means and stds, \
                         `density` with the path of a PNG, or `images` with the path of a folder of PNGs",
                        TOY_NAMES.join(", ")
                    ),
                ))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Dataset::EightGaussians => "eight-gaussians",
            Dataset::Mixture(_) => "mixture",
            Dataset::TwoMoons => "two-moons",
            Dataset::SwissRoll => "swiss-roll",
            Dataset::Checkerboard => "checkerboard",
            Dataset::Rings => "rings",
            Dataset::Spirals => "spirals",
            Dataset::Density(_) => "density",
            Dataset::Images(_) => "images",
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Dataset::Mixture(m) => m.dim,
            Dataset::Images(set) => set.dim(),
            _ => 2,
        }
    }

    /// The images, where the dataset is a set of them.
    pub fn images(&self) -> Option<&ImageSet> {
        match self {
            Dataset::Images(set) => Some(set),
            _ => None,
        }
    }

    /// The mixture, where the dataset is one: its noised score is exact.
    pub fn mixture(&self) -> Option<GaussianMixture> {
        match self {
            Dataset::EightGaussians => Some(GaussianMixture::eight_gaussians()),
            Dataset::Mixture(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// The classes of a labelled dataset: the digits' ten, a mixture's components; 0 where
    /// the points have no labels.
    pub fn classes(&self) -> usize {
        match self {
            Dataset::Images(set) => set.classes,
            _ => self.mixture().map_or(0, |m| m.components()),
        }
    }

    /// `n` points [n, d] for `seed` with each point's class (see [`Dataset::classes`]): a
    /// mixture's component, drawn as [`Dataset::sample`] draws the points. Image sets give all
    /// their images with their labels, whatever `n`. None for an unlabelled dataset.
    pub fn labelled(&self, n: usize, seed: u64) -> Option<(Vec<f32>, Vec<u32>)> {
        if self.classes() == 0 {
            return None;
        }
        if let Dataset::Images(set) = self {
            return Some((set.pixels.clone(), set.labels.clone()));
        }
        let (x, components) = self.mixture()?.sample(n, seed);
        Some((x.iter().map(|&v| v as f32).collect(), components.iter().map(|&k| k as u32).collect()))
    }

    /// `n` points [n, d] for `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        match self {
            Dataset::Density(density) => return density.sample(n, seed),
            Dataset::Images(set) => return set.sample(n, seed),
            _ => {}
        }
        if let Some(m) = self.mixture() {
            return m.sample(n, seed).0.iter().map(|&v| v as f32).collect();
        }
        // Per point i: uniforms u32 4i .. 4i + 3 and normals 4i .. 4i + 3 of the Data streams.
        let u = |i: usize, j: usize| rng::uniform_at(seed, Stream::Data.at(2), 4 * i as u64 + j as u64) as f64;
        let z = |i: usize, j: usize| rng::normal_at(seed, Stream::Data.at(3), 4 * i as u64 + j as u64);
        let pi = std::f64::consts::PI;
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (x, y) = match self {
                Dataset::EightGaussians | Dataset::Mixture(_) | Dataset::Density(_) | Dataset::Images(_) => break,
                Dataset::TwoMoons => {
                    // make_moons: upper moon (cos t, sin t), lower (1 - cos t, 0.5 - sin t),
                    // t in [0, pi], noise 0.1; centred and scaled by 2.
                    let t = pi * u(i, 0);
                    let (x, y) = if u(i, 1) < 0.5 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
                    (2.0 * (x - 0.5 + 0.1 * z(i, 0)), 2.0 * (y - 0.25 + 0.1 * z(i, 1)))
                }
                Dataset::SwissRoll => {
                    // make_swiss_roll's (t cos t, t sin t), t = 1.5 pi (1 + 2u), scaled by 1/3.
                    let t = 1.5 * pi * (1.0 + 2.0 * u(i, 0));
                    ((t * t.cos() + 0.5 * z(i, 0)) / 3.0, (t * t.sin() + 0.5 * z(i, 1)) / 3.0)
                }
                Dataset::Checkerboard => {
                    // FFJORD: x1 ~ U(-2, 2), x2 in alternating unit squares; scaled by 2.
                    let x1 = 4.0 * u(i, 0) - 2.0;
                    let x2 = u(i, 1) - 2.0 * (u(i, 2) < 0.5) as u8 as f64 + x1.floor().rem_euclid(2.0);
                    (2.0 * x1, 2.0 * x2)
                }
                Dataset::Rings => {
                    // Four concentric rings of radii 1..4, noise 0.08.
                    let r = 1.0 + (4.0 * u(i, 0)).floor().min(3.0);
                    let a = 2.0 * pi * u(i, 1);
                    (r * a.cos() + 0.08 * z(i, 0), r * a.sin() + 0.08 * z(i, 1))
                }
                Dataset::Spirals => {
                    // FFJORD's 2spirals: n = sqrt(u) 540 degrees, arms (-cos n n, sin n n) and
                    // its mirror; scaled to radius ~4.
                    let t = u(i, 0).sqrt() * 3.0 * pi;
                    let sign = if u(i, 1) < 0.5 { 1.0 } else { -1.0 };
                    let (x, y) = (-t.cos() * t, t.sin() * t);
                    (sign * x * 0.42 + 0.1 * z(i, 0), sign * y * 0.42 + 0.1 * z(i, 1))
                }
            };
            out.push(x as f32);
            out.push(y as f32);
        }
        out
    }
}
