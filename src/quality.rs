//! How good generated images are, judged against real labelled images the model never saw
//! (issue #20): host code in f64, no GPU.
//!
//! The real images are split by index into three disjoint parts: `train`, half of them (what
//! the classifier and the copy check compare with), `reference`, a quarter (the statistics a
//! sample set's feature distance is measured to) and `held_out`, a quarter (real images judged
//! like samples: the real-vs-real baseline). For a set of samples:
//! - a k-nearest-neighbour classifier in pixel space (k = [`K`] neighbours among `train`, votes
//!   weighted by inverse squared distance as class probabilities): the mean top-class
//!   probability, the share of samples whose top class has more than 0.8, and the class shares;
//! - a Frechet distance in a fixed nonlinear feature space, FID's formula (Heusel et al. 2017)
//!   on features that, like Inception's, separate digit-like images from blurs: per class, the
//!   mean distance to that class's [`K`] nearest `train` images. (Pixels themselves would not
//!   do: a Gaussian with the data's mean and covariance matches the data's first two moments
//!   exactly, so any linear feature space rates it perfect.)
//! - the distance of each sample to its nearest `train` image, and the share of samples closer
//!   to one than almost every real held-out image is ([`Quality::copies`]): a model that copies
//!   its training images is not generating;
//! - the share of pixel values outside the data's range [-1, 1] (by more than 0.05).

use crate::error::{Error, Result};

/// Neighbours of the classifier and of the features.
pub const K: usize = 10;

/// Real labelled images split three ways, and what every judgement compares with.
pub struct QualityJudge {
    dim: usize,
    classes: usize,
    train: Vec<f32>,
    train_labels: Vec<usize>,
    held_out: Vec<f32>,
    held_out_labels: Vec<usize>,
    /// Mean and covariance of the reference quarter's features.
    reference: Moments,
    /// The 1st percentile of held-out real images' distances to their nearest train image.
    copy_distance: f64,
}

/// What [`QualityJudge::judge`] finds for a set of images.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    pub count: usize,
    /// The classifier's mean probability of each sample's most likely class.
    pub mean_top_probability: f64,
    /// The share of samples whose most likely class has probability above 0.8.
    pub confident_share: f64,
    /// The share of samples in each class (by the most likely class).
    pub class_shares: Vec<f64>,
    /// The Frechet distance of the samples' features to the reference quarter's.
    pub feature_distance: f64,
    /// The median distance of a sample to its nearest training image (pixels in [-1, 1]).
    pub median_nearest_train: f64,
    /// The share of samples nearer to a training image than 99% of real held-out images are.
    pub copies: f64,
    /// The share of pixel values outside [-1.05, 1.05] (or not finite).
    pub out_of_range: f64,
}

impl QualityJudge {
    /// The judge of `images` ([n, dim], values in [-1, 1]) with their `labels` (0..classes).
    pub fn new(images: &[f32], labels: &[usize], dim: usize) -> Result<Self> {
        let n = labels.len();
        if dim == 0 || images.len() != n * dim {
            return Err(Error::invalid("labelled images", format!("{} values for {n} labels of {dim}", images.len())));
        }
        let classes = labels.iter().max().map_or(0, |m| m + 1);
        // Half to train (indices 0, 1 mod 4), a quarter each for the reference and held out.
        let mut parts: [(Vec<f32>, Vec<usize>); 3] = Default::default();
        for (i, (img, &label)) in images.chunks(dim).zip(labels).enumerate() {
            let part = [0, 0, 1, 2][i % 4];
            parts[part].0.extend_from_slice(img);
            parts[part].1.push(label);
        }
        let [(train, train_labels), (reference, _), (held_out, held_out_labels)] = parts;
        for c in 0..classes {
            if train_labels.iter().filter(|&&l| l == c).count() < K {
                return Err(Error::invalid(
                    "labelled images",
                    format!("class {c} has fewer than {K} training images (half of the set)"),
                ));
            }
        }
        let mut judge = Self {
            dim,
            classes,
            train,
            train_labels,
            held_out,
            held_out_labels,
            reference: Moments::default(),
            copy_distance: 0.0,
        };
        let reference_features: Vec<Vec<f64>> = reference.chunks(dim).map(|x| judge.look(x).features).collect();
        judge.reference = Moments::of(&reference_features);
        let mut nearest: Vec<f64> = judge.held_out.chunks(dim).map(|x| judge.look(x).nearest).collect();
        nearest.sort_by(f64::total_cmp);
        judge.copy_distance = nearest[nearest.len() / 100];
        Ok(judge)
    }

    /// The judge of the 8x8 digits shipped in assets/digits/ (1797 images, labels 0-9).
    pub fn digits() -> Result<Self> {
        let set = crate::data::ImageSet::digits()?;
        Self::new(&set.pixels, &crate::data::digit_labels(), set.dim())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The classifier's most likely class of one image and its probability.
    pub fn classify(&self, image: &[f32]) -> (usize, f64) {
        top_class(&self.look(image).probabilities)
    }

    /// The held-out quarter, [n, dim]: real images the classifier and the reference never saw.
    pub fn held_out(&self) -> &[f32] {
        &self.held_out
    }

    pub fn held_out_labels(&self) -> &[usize] {
        &self.held_out_labels
    }

    /// The training half, [n, dim]: what the classifier compares with.
    pub fn train(&self) -> &[f32] {
        &self.train
    }

    /// Draws from a Gaussian with the training half's mean and full covariance, as images:
    /// clamped to the pixel range [-1, 1] like every image sample the CLI writes. A baseline
    /// that has (up to the clamp) the data's first two moments and no digits: the bar a model
    /// must clear.
    pub fn gaussian_fit(&self, n: usize, seed: u64) -> Vec<f32> {
        let d = self.dim;
        let rows: Vec<Vec<f64>> = self.train.chunks(d).map(|x| x.iter().map(|&v| v as f64).collect()).collect();
        let m = Moments::of(&rows);
        let l = cholesky(&m.cov, d);
        let z = crate::rng::normals(seed, crate::rng::Stream::User.at(0), 0, n * d);
        let mut out = Vec::with_capacity(n * d);
        for zi in z.chunks(d) {
            for r in 0..d {
                let v: f64 = m.mean[r] + (0..=r).map(|c| l[r * d + c] * zi[c]).sum::<f64>();
                out.push(v.clamp(-1.0, 1.0) as f32);
            }
        }
        out
    }

    /// The quality of `samples` ([n, dim]).
    pub fn judge(&self, samples: &[f32]) -> Result<Quality> {
        let d = self.dim;
        if samples.is_empty() || !samples.len().is_multiple_of(d) {
            return Err(Error::invalid("samples", format!("{} values are not images of {d} pixels", samples.len())));
        }
        let count = samples.len() / d;
        let out_of_range =
            samples.iter().filter(|v| !v.is_finite() || v.abs() > 1.05).count() as f64 / samples.len() as f64;
        let mut shares = vec![0.0; self.classes];
        let (mut top_sum, mut confident, mut copies) = (0.0, 0usize, 0usize);
        let mut nearest = Vec::with_capacity(count);
        let mut features = Vec::with_capacity(count);
        for x in samples.chunks(d) {
            // A non-finite sample is judged as the most ambiguous image there is: all zeros.
            let finite: Vec<f32> = x.iter().map(|&v| if v.is_finite() { v.clamp(-10.0, 10.0) } else { 0.0 }).collect();
            let look = self.look(&finite);
            let (top, p) = top_class(&look.probabilities);
            shares[top] += 1.0 / count as f64;
            top_sum += p;
            confident += (p > 0.8) as usize;
            copies += (look.nearest < self.copy_distance) as usize;
            nearest.push(look.nearest);
            features.push(look.features);
        }
        nearest.sort_by(f64::total_cmp);
        Ok(Quality {
            count,
            mean_top_probability: top_sum / count as f64,
            confident_share: confident as f64 / count as f64,
            class_shares: shares,
            feature_distance: frechet(&Moments::of(&features), &self.reference),
            median_nearest_train: nearest[count / 2],
            copies: copies as f64 / count as f64,
            out_of_range,
        })
    }

    /// One image against the training half: class probabilities, features, nearest distance.
    fn look(&self, x: &[f32]) -> Look {
        // Distances to every training image, grouped by class.
        let mut all: Vec<(f64, usize)> = self
            .train
            .chunks(self.dim)
            .zip(&self.train_labels)
            .map(|(t, &label)| {
                let d2: f64 = t.iter().zip(x).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
                (d2.sqrt(), label)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Distance-weighted votes (inverse squared distance), so that a tie among far
        // neighbours counts less than one near one.
        let mut probabilities = vec![0.0; self.classes];
        let weight = |dist: f64| 1.0 / (dist * dist + 1e-6);
        let total: f64 = all[..K].iter().map(|n| weight(n.0)).sum();
        for &(dist, label) in &all[..K] {
            probabilities[label] += weight(dist) / total;
        }
        let mut features = vec![0.0; self.classes];
        let mut seen = vec![0usize; self.classes];
        for &(dist, label) in &all {
            if seen[label] < K {
                seen[label] += 1;
                features[label] += dist / K as f64;
            }
        }
        Look { probabilities, features, nearest: all[0].0 }
    }
}

/// The most likely class and its probability (the first of equals).
fn top_class(probabilities: &[f64]) -> (usize, f64) {
    probabilities.iter().copied().enumerate().fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a })
}

struct Look {
    probabilities: Vec<f64>,
    features: Vec<f64>,
    nearest: f64,
}

/// Mean and covariance (row-major, unbiased) of feature rows.
#[derive(Clone, Debug, Default)]
struct Moments {
    mean: Vec<f64>,
    cov: Vec<f64>,
}

impl Moments {
    fn of(rows: &[Vec<f64>]) -> Self {
        let d = rows.first().map_or(0, Vec::len);
        let n = rows.len() as f64;
        let mut mean = vec![0.0; d];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n;
            }
        }
        let mut cov = vec![0.0; d * d];
        for r in rows {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0).max(1.0);
                }
            }
        }
        Self { mean, cov }
    }
}

/// The Frechet distance between the Gaussians of two moment sets (FID's formula):
/// |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
fn frechet(a: &Moments, b: &Moments) -> f64 {
    let d = a.mean.len();
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let root_a = sqrt_psd(&a.cov, d);
    let inner = matmul(&matmul(&root_a, &b.cov, d), &root_a, d);
    let cross = sqrt_psd(&inner, d);
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * trace(&cross)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            for j in 0..d {
                out[i * d + j] += a[i * d + k] * b[k * d + j];
            }
        }
    }
    out
}

/// The square root of a symmetric positive semi-definite matrix, through its eigenvectors
/// (negative eigenvalues from rounding taken as 0).
fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = jacobi_eigen(m, d);
    let mut out = vec![0.0; d * d];
    for k in 0..d {
        let s = values[k].max(0.0).sqrt();
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] += s * vectors[i * d + k] * vectors[j * d + k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (column k of the row-major result) of a symmetric matrix by
/// cyclic Jacobi rotations (Golub & Van Loan, Algorithm 8.5.3); exact enough in tens of sweeps
/// for the 10 x 10 matrices here.
fn jacobi_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v: Vec<f64> = (0..d * d).map(|i| if i / d == i % d { 1.0 } else { 0.0 }).collect();
    for _ in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-30 * scale.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// The lower Cholesky factor of a symmetric positive semi-definite matrix, with a small ridge
/// so that the digits' constant border pixels (zero variance) do not stop it.
fn cholesky(m: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                l[i * d + i] = (m[i * d + i] + 1e-9 - s).max(1e-12).sqrt();
            } else {
                l[i * d + j] = (m[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix square root and the Frechet distance against closed forms: for diagonal
    /// covariances the distance is |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2, and it is
    /// invariant under a rotation of both.
    #[test]
    fn frechet_matches_its_closed_form() {
        let d = 3;
        let diag = |v: [f64; 3]| {
            let mut m = vec![0.0; 9];
            for i in 0..3 {
                m[i * 3 + i] = v[i];
            }
            m
        };
        let a = Moments { mean: vec![1.0, 0.0, -1.0], cov: diag([4.0, 1.0, 0.25]) };
        let b = Moments { mean: vec![0.0, 0.5, -1.0], cov: diag([1.0, 9.0, 0.25]) };
        let expected = 1.0 + 0.25 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((frechet(&a, &b) - expected).abs() < 1e-9, "{} vs {expected}", frechet(&a, &b));
        // Rotate both by the same rotation: the distance stays.
        let (c, s) = (0.6, 0.8);
        let r = vec![c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let rt: Vec<f64> = (0..9).map(|i| r[(i % 3) * 3 + i / 3]).collect();
        let rotate = |m: &Moments| Moments {
            mean: (0..3).map(|i| (0..3).map(|j| r[i * 3 + j] * m.mean[j]).sum()).collect(),
            cov: matmul(&matmul(&r, &m.cov, d), &rt, d),
        };
        assert!((frechet(&rotate(&a), &rotate(&b)) - expected).abs() < 1e-9);
        assert!(frechet(&a, &a).abs() < 1e-9);
    }

    /// The digits judged: real held-out images score well, a Gaussian with the data's moments
    /// and noised real images score badly, and copies of training images are caught.
    #[test]
    fn real_digits_score_well_and_blurs_and_noise_badly() {
        let judge = QualityJudge::digits().unwrap();
        let real = judge.judge(judge.held_out()).unwrap();
        let n = judge.held_out().len() / judge.dim();
        let gaussian = judge.judge(&judge.gaussian_fit(n, 3)).unwrap();
        let noise = crate::rng::normals(5, crate::rng::Stream::User.at(1), 0, judge.held_out().len());
        let noised: Vec<f32> =
            judge.held_out().iter().zip(&noise).map(|(&x, &z)| (x as f64 + 0.5 * z).clamp(-1.0, 1.0) as f32).collect();
        let noised = judge.judge(&noised).unwrap();
        let copies = judge.judge(&judge.train()[..n * judge.dim()]).unwrap();
        for (name, q) in [("real", &real), ("gaussian fit", &gaussian), ("noised", &noised), ("copies", &copies)] {
            eprintln!(
                "{name:>12}: top {:.3}, confident {:.3}, classes {:.3}..{:.3}, features {:.3}, nearest {:.3}, copies {:.3}, out {:.4}",
                q.mean_top_probability,
                q.confident_share,
                q.class_shares.iter().cloned().fold(1.0, f64::min),
                q.class_shares.iter().cloned().fold(0.0, f64::max),
                q.feature_distance,
                q.median_nearest_train,
                q.copies,
                q.out_of_range
            );
        }
        assert!(real.mean_top_probability > 0.93 && real.confident_share > 0.85, "{real:?}");
        assert!(real.class_shares.iter().all(|s| (0.05..0.16).contains(s)), "{real:?}");
        assert!(real.copies < 0.05 && real.out_of_range == 0.0, "{real:?}");
        assert!(gaussian.mean_top_probability < real.mean_top_probability - 0.1, "{gaussian:?}");
        assert!(gaussian.feature_distance > 4.0 * real.feature_distance, "{gaussian:?} vs {real:?}");
        assert!(noised.feature_distance > 4.0 * real.feature_distance, "{noised:?} vs {real:?}");
        assert!(copies.copies > 0.95, "{copies:?}");
    }
}
