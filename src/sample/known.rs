//! Inpainting: sampling the unknown coordinates of each particle given the known ones (Song et
//! al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
//! appendix I.2; score_sde's `controllable_generation.get_pc_inpainter`). What is known, per
//! particle, and the image masks the CLI offers.

use crate::error::{Error, Result};

/// Known coordinates of every particle: `values` and `mask` are both `[N, d]` row-major, and
/// where `mask` is set the particle's coordinate is known to be the value (elsewhere the value
/// is ignored).
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    pub(crate) values: Vec<f32>,
    pub(crate) mask: Vec<u32>,
    pub(crate) dim: usize,
}

impl Known {
    /// Known coordinates of `values.len() / dim` particles; `mask` has one flag per value.
    pub fn new(values: Vec<f32>, mask: &[bool], dim: usize) -> Result<Self> {
        if dim == 0 || !values.len().is_multiple_of(dim) || mask.len() != values.len() {
            return Err(Error::invalid(
                "known coordinates",
                format!(
                    "{} values and {} mask flags for particles of dimension {dim}: both must be [N, d]",
                    values.len(),
                    mask.len()
                ),
            ));
        }
        if let Some(i) = values.iter().zip(mask).position(|(v, &m)| m && !v.is_finite()) {
            return Err(Error::invalid("known coordinates", format!("value {i} is not finite")));
        }
        Ok(Self { values, mask: mask.iter().map(|&m| m as u32).collect(), dim })
    }

    /// `copies` particles for each of the `observations` ([m, d]), all with the same `mask` [d]:
    /// particle `i * copies + c` completes observation i.
    pub fn repeated(observations: &[f32], mask: &[bool], copies: usize) -> Result<Self> {
        let dim = mask.len();
        if dim == 0 || !observations.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "known coordinates",
                format!("{} observation values are not whole rows of the mask's {dim}", observations.len()),
            ));
        }
        let values: Vec<f32> =
            observations.chunks(dim).flat_map(|row| std::iter::repeat_n(row, copies).flatten().copied()).collect();
        let flags: Vec<bool> = std::iter::repeat_n(mask, values.len() / dim).flatten().copied().collect();
        Self::new(values, &flags, dim)
    }

    pub fn particles(&self) -> usize {
        self.values.len() / self.dim
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// Which pixels of a `width x height` image are hidden (to be inpainted); the rest are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageMask {
    Top,
    Bottom,
    Left,
    Right,
    /// Columns `x0..x1` of rows `y0..y1`.
    Box {
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
    },
}

impl ImageMask {
    /// Parses `top`, `bottom`, `left`, `right` or `box:X0,Y0,X1,Y1` (the hidden columns X0..X1 of
    /// rows Y0..Y1, ends excluded).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "mask",
                format!("`{text}`: expected top, bottom, left, right (the half hidden) or box:X0,Y0,X1,Y1"),
            )
        };
        Ok(match text {
            "top" => ImageMask::Top,
            "bottom" => ImageMask::Bottom,
            "left" => ImageMask::Left,
            "right" => ImageMask::Right,
            _ => {
                let corners = text.strip_prefix("box:").ok_or_else(bad)?;
                let v: Vec<usize> =
                    corners.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>().map_err(|_| bad())?;
                let [x0, y0, x1, y1] = v[..] else { return Err(bad()) };
                if x0 >= x1 || y0 >= y1 {
                    return Err(Error::invalid("mask", format!("`{text}`: the box must have X0 < X1 and Y0 < Y1")));
                }
                ImageMask::Box { x0, y0, x1, y1 }
            }
        })
    }

    /// Known flags of the `width * height` pixels, row-major: true where the pixel is kept.
    pub fn known(&self, width: usize, height: usize) -> Result<Vec<bool>> {
        let hidden = |x: usize, y: usize| match *self {
            ImageMask::Top => y < height / 2,
            ImageMask::Bottom => y >= height / 2,
            ImageMask::Left => x < width / 2,
            ImageMask::Right => x >= width / 2,
            ImageMask::Box { x0, y0, x1, y1 } => (x0..x1).contains(&x) && (y0..y1).contains(&y),
        };
        if let ImageMask::Box { x1, y1, .. } = *self {
            if x1 > width || y1 > height {
                return Err(Error::invalid(
                    "mask",
                    format!("the box reaches ({x1}, {y1}), past the {width} x {height} image"),
                ));
            }
        }
        Ok((0..width * height).map(|i| !hidden(i % width, i / width)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_what_they_name() {
        let count = |m: &str| ImageMask::parse(m).unwrap().known(8, 8).unwrap().iter().filter(|&&k| !k).count();
        assert_eq!(count("bottom"), 32);
        assert_eq!(count("box:2,3,5,7"), 12);
        let bottom = ImageMask::Bottom.known(8, 8).unwrap();
        assert!(bottom[..32].iter().all(|&k| k) && bottom[32..].iter().all(|&k| !k));
        let left = ImageMask::Left.known(8, 8).unwrap();
        assert!(!left[0] && left[7] && !left[8]);
        for bad in ["middle", "box:1,2,3", "box:3,0,1,4", "box:a,b,c,d"] {
            assert!(ImageMask::parse(bad).is_err(), "{bad}");
        }
        assert!(ImageMask::parse("box:0,0,9,2").unwrap().known(8, 8).is_err());
    }

    #[test]
    fn repeated_observations_keep_their_order() {
        let known = Known::repeated(&[1.0, 2.0, 3.0, 4.0], &[true, false], 3).unwrap();
        assert_eq!(known.particles(), 6);
        assert_eq!(known.values, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]);
        assert_eq!(known.mask, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
        assert!(Known::new(vec![f32::NAN, 0.0], &[true, false], 2).is_err());
        assert!(Known::new(vec![f32::NAN, 0.0], &[false, true], 2).is_ok());
        assert!(Known::new(vec![0.0; 3], &[true; 3], 2).is_err());
    }
}
