//! Gaussian mixtures with diagonal covariances: exact samples and exact noised scores, the
//! ground truth every learned score and every sampler is checked against. A single Gaussian is
//! a mixture of one component.

use crate::error::{Error, Result};
use crate::rng::{self, Stream};

/// sum_k w_k N(mu_k, diag(s_k)^2) in R^d.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    pub dim: usize,
    pub weights: Vec<f64>,
    /// [K, d] row-major.
    pub means: Vec<f64>,
    /// [K, d] row-major: the standard deviation of each component along each axis.
    pub stds: Vec<f64>,
}

impl GaussianMixture {
    /// A mixture of `weights.len()` components with `means` [K, d] and `stds` either [K]
    /// (isotropic components) or [K, d] (diagonal ones).
    pub fn new(dim: usize, weights: Vec<f64>, means: Vec<f64>, stds: Vec<f64>) -> Result<Self> {
        let k = weights.len();
        if dim == 0 || k == 0 || means.len() != k * dim || (stds.len() != k && stds.len() != k * dim) {
            return Err(Error::invalid(
                "mixture",
                format!(
                    "{k} weights in {dim} dimensions need {} means and {k} or {} stds (got {} and {})",
                    k * dim,
                    k * dim,
                    means.len(),
                    stds.len()
                ),
            ));
        }
        let total: f64 = weights.iter().sum();
        if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) || (total - 1.0).abs() > 1e-6 {
            return Err(Error::invalid("mixture weights", format!("{weights:?} must be positive and sum to 1")));
        }
        if let Some(s) = stds.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(Error::invalid("mixture stds", format!("{s} is not a positive finite number")));
        }
        if let Some(m) = means.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid("mixture means", format!("{m} is not finite")));
        }
        let stds =
            if stds.len() == k { stds.iter().flat_map(|&s| std::iter::repeat_n(s, dim)).collect() } else { stds };
        Ok(Self { dim, weights, means, stds })
    }

    /// One Gaussian N(mean, diag(std)^2).
    pub fn gaussian(mean: Vec<f64>, std: Vec<f64>) -> Result<Self> {
        Self::new(mean.len(), vec![1.0], mean, std)
    }

    /// Eight Gaussians of std 0.5 with means on a circle of radius 4 (../shared/WORKLOADS.md W1).
    pub fn eight_gaussians() -> Self {
        let means = (0..8)
            .flat_map(|k| {
                let a = std::f64::consts::TAU * k as f64 / 8.0;
                [4.0 * a.cos(), 4.0 * a.sin()]
            })
            .collect();
        Self { dim: 2, weights: vec![0.125; 8], means, stds: vec![0.5; 16] }
    }

    pub fn components(&self) -> usize {
        self.weights.len()
    }

    pub fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    pub fn std(&self, k: usize) -> &[f64] {
        &self.stds[k * self.dim..(k + 1) * self.dim]
    }

    /// `n` exact samples [n, d] and their components, from stream `Stream::Data.at(0)` of `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
        let d = self.dim as u64;
        let d4 = d.div_ceil(4) * 4 + 4;
        let mut x = Vec::with_capacity(n * self.dim);
        let mut comp = Vec::with_capacity(n);
        for i in 0..n as u64 {
            // Per sample: one block of d4 normals; the uniform for the component comes from the
            // u32 stream of Data.at(1).
            let u = rng::uniform_at(seed, Stream::Data.at(1), i) as f64;
            let mut acc = 0.0;
            let k = self.weights.iter().position(|w| {
                acc += w;
                u < acc
            });
            let k = k.unwrap_or(self.components() - 1);
            for j in 0..d {
                let z = rng::normal_at(seed, Stream::Data.at(0), i * d4 + j);
                x.push(self.mean(k)[j as usize] + self.std(k)[j as usize] * z);
            }
            comp.push(k);
        }
        (x, comp)
    }

    /// The score of the perturbed density of x~ = a x + sigma eps at the points `x` [n, d]:
    /// component k becomes N(a mu_k, diag(a^2 s_k^2 + sigma^2)), and the score is
    /// sum_k r_k(x) (a mu_k - x) / (a^2 s_k^2 + sigma^2) with responsibilities r_k.
    pub fn noised_score(&self, x: &[f64], a: f64, sigma: f64) -> Vec<f64> {
        x.chunks(self.dim).flat_map(|row| self.noised_at(row, a, sigma).score).collect()
    }

    /// log p of the perturbed density at each point of `x` [n, d].
    pub fn noised_log_density(&self, x: &[f64], a: f64, sigma: f64) -> Vec<f64> {
        x.chunks(self.dim).map(|row| self.noised_at(row, a, sigma).log_density).collect()
    }

    /// The divergence of the perturbed density's score at each point of `x` [n, d]:
    /// sum_k r_k (|s_k|^2 - sum_j 1 / v_kj) - |s|^2 (shaders/mixture.wgsl derives it).
    pub fn noised_divergence(&self, x: &[f64], a: f64, sigma: f64) -> Vec<f64> {
        x.chunks(self.dim).map(|row| self.noised_at(row, a, sigma).divergence).collect()
    }

    /// The perturbed density at one point: its log, score and the score's divergence.
    fn noised_at(&self, row: &[f64], a: f64, sigma: f64) -> NoisedPoint {
        let d = self.dim;
        let var = |k: usize, j: usize| a * a * self.std(k)[j].powi(2) + sigma * sigma;
        let half_log_2pi = 0.5 * std::f64::consts::TAU.ln();
        let logp: Vec<f64> = (0..self.components())
            .map(|k| {
                self.weights[k].ln()
                    + (0..d)
                        .map(|j| {
                            -0.5 * (row[j] - a * self.mean(k)[j]).powi(2) / var(k, j)
                                - 0.5 * var(k, j).ln()
                                - half_log_2pi
                        })
                        .sum::<f64>()
            })
            .collect();
        let max = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let norm: f64 = logp.iter().map(|l| (l - max).exp()).sum();
        let mut score = vec![0.0; d];
        let mut curvature = 0.0;
        for (k, lp) in logp.iter().enumerate() {
            let r = (lp - max).exp() / norm;
            for (j, s) in score.iter_mut().enumerate() {
                let sk = (a * self.mean(k)[j] - row[j]) / var(k, j);
                *s += r * sk;
                curvature += r * (sk * sk - 1.0 / var(k, j));
            }
        }
        let divergence = curvature - score.iter().map(|s| s * s).sum::<f64>();
        NoisedPoint { log_density: max + norm.ln(), score, divergence }
    }
}

struct NoisedPoint {
    log_density: f64,
    score: Vec<f64>,
    divergence: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The score is the gradient of the log density and the divergence the trace of the
    /// score's Jacobian, both against central differences, on a 3-D mixture with unequal
    /// weights and diagonal stds at a few noise levels.
    #[test]
    fn score_and_divergence_are_the_log_densitys_derivatives() {
        let m = GaussianMixture::new(
            3,
            vec![0.2, 0.5, 0.3],
            vec![1.0, -2.0, 0.5, -1.5, 0.0, 2.0, 0.3, 1.2, -0.7],
            vec![0.5, 0.8, 1.1, 0.3, 0.6, 0.9, 1.4, 0.4, 0.7],
        )
        .unwrap();
        let h = 1e-5;
        for (a, sigma) in [(1.0, 0.0), (1.0, 0.7), (0.6, 0.8)] {
            for x in [[0.1, 0.2, -0.3], [1.2, -1.9, 0.6], [-2.0, 0.5, 1.5]] {
                let score = m.noised_score(&x, a, sigma);
                let div = m.noised_divergence(&x, a, sigma)[0];
                let mut trace = 0.0;
                for j in 0..3 {
                    let (mut up, mut down) = (x, x);
                    up[j] += h;
                    down[j] -= h;
                    let grad =
                        (m.noised_log_density(&up, a, sigma)[0] - m.noised_log_density(&down, a, sigma)[0]) / (2.0 * h);
                    assert!(
                        (grad - score[j]).abs() < 1e-6 * (1.0 + grad.abs()),
                        "d log p / dx_{j} {grad} vs score {}",
                        score[j]
                    );
                    trace += (m.noised_score(&up, a, sigma)[j] - m.noised_score(&down, a, sigma)[j]) / (2.0 * h);
                }
                assert!((trace - div).abs() < 1e-5 * (1.0 + trace.abs()), "trace {trace} vs divergence {div}");
            }
        }
        // A single Gaussian's log density in closed form.
        let g = GaussianMixture::gaussian(vec![1.0, -1.0], vec![2.0, 0.5]).unwrap();
        let want = -(2.0f64 * 0.5).ln() - std::f64::consts::TAU.ln() - 0.5 * (0.25 + 4.0);
        assert!((g.noised_log_density(&[2.0, 0.0], 1.0, 0.0)[0] - want).abs() < 1e-12);
    }
}
