//! Noise injection and the loss in f64, drawing the same random numbers as the kernels.

use crate::model::MlpShape;
use crate::objective::{Objective, Parametrisation, Projection, T_MIN};
use crate::reference::mlp::{embed, set_class_codes};
use crate::rng::{self, Stream};
use crate::train::LossWeight;

/// One drawn batch: which data rows, the noise, the network input, and each row's level and
/// signal-to-noise ratio a^2 / sigma^2.
pub struct Batch {
    pub index: Vec<usize>,
    pub noise: Vec<f64>,
    pub input: Vec<f64>,
    pub level: Vec<f64>,
    pub snr: Vec<f64>,
}

impl Batch {
    /// The class codes of a class-conditional network's batch, as `perturb` writes them: row
    /// b takes the label of its data row, or no class with probability `drop` (uniform b of
    /// stream `ClassDrop.at(step)` below it).
    pub fn label(&mut self, shape: &MlpShape, labels: &[u32], drop: f64, seed: u64, step: u32) {
        let row_labels: Vec<u32> = self
            .index
            .iter()
            .enumerate()
            .map(|(b, &i)| {
                let dropped = (rng::uniform_at(seed, Stream::ClassDrop.at(step), b as u64) as f64) < drop as f32 as f64;
                if dropped {
                    shape.classes as u32
                } else {
                    labels[i]
                }
            })
            .collect();
        set_class_codes(shape, &mut self.input, &row_labels);
    }

    /// Each row's loss weight: 1, or Min-SNR's min(SNR, gamma) / SNR.
    pub fn loss_weights(&self, weight: LossWeight) -> Vec<f64> {
        match weight {
            LossWeight::Uniform => vec![1.0; self.snr.len()],
            LossWeight::MinSnr { gamma } => self.snr.iter().map(|&snr| snr.min(gamma) / snr).collect(),
        }
    }
}

/// The batch of training step `step`, as shaders/objective.wgsl `perturb` draws it.
pub fn perturb(
    objective: &Objective,
    shape: &MlpShape,
    freqs: &[f64],
    data: &[f64],
    seed: u64,
    step: u32,
    batch: usize,
) -> Batch {
    let d = shape.dim;
    let n_data = (data.len() / d) as u64;
    let d4 = d.div_ceil(4) as u64;
    let levels = objective.levels();
    let (mut index, mut noise, mut x, mut cond, mut level, mut snr) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for b in 0..batch as u64 {
        let i = (rng::u32_at(seed, Stream::BatchIndex.at(step), b) as u64 % n_data) as usize;
        let u = rng::u32_at(seed, Stream::NoiseLevel.at(step), b);
        let (lvl, nl) = if levels.is_empty() {
            // f32 as the kernel computes t, then f64 from there.
            let t = T_MIN as f32 + (1.0 - T_MIN as f32) * ((u >> 8) as f32 * (1.0 / 16_777_216.0));
            (t as f64, objective.at_time(t as f64).expect("continuous objective"))
        } else {
            let l = u as usize % levels.len();
            (l as f64, levels[l])
        };
        for j in 0..d as u64 {
            let e = rng::normal_at(seed, Stream::NoiseValue.at(step), b * d4 * 4 + j);
            noise.push(e);
            x.push(nl.a * data[i * d + j as usize] + nl.sigma * e);
        }
        index.push(i);
        cond.push(nl.cond);
        level.push(lvl);
        snr.push(nl.a * nl.a / (nl.sigma * nl.sigma));
    }
    let input = embed(shape, freqs, &x, &cond);
    Batch { index, noise, input, level, snr }
}

/// Per-example losses 0.5 w |r|^2 and dL/d(output) for the batch mean; r = output + eps (score
/// parametrisation) or output - eps (eps parametrisation), w the row's weight.
pub fn loss_grad(
    param: Parametrisation,
    output: &[f64],
    noise: &[f64],
    weights: &[f64],
    dim: usize,
) -> (Vec<f64>, Vec<f64>) {
    let batch = output.len() / dim;
    let sign = if param == Parametrisation::Eps { -1.0 } else { 1.0 };
    let r: Vec<f64> = output.iter().zip(noise).map(|(o, e)| o + sign * e).collect();
    let losses = r.chunks(dim).zip(weights).map(|(row, w)| 0.5 * w * row.iter().map(|v| v * v).sum::<f64>()).collect();
    let dout = r.iter().enumerate().map(|(i, v)| weights[i / dim] * v / batch as f64).collect();
    (losses, dout)
}

/// Score matching's directions for step `step`, [batch * T, d] (row b*T + t), as
/// shaders/objective.wgsl `directions` draws them. Empty for the other objectives.
pub fn directions(objective: &Objective, dim: usize, seed: u64, step: u32, batch: usize) -> Vec<f64> {
    let t = objective.tangents(dim);
    let d4 = dim.div_ceil(4) as u64;
    let mut v = Vec::with_capacity(batch * t * dim);
    for r in 0..(batch * t) as u64 {
        for j in 0..dim as u64 {
            let normal = || rng::normal_at(seed, Stream::Projection.at(step), r * d4 * 4 + j);
            v.push(match objective {
                Objective::Sliced { projection: Projection::Gaussian, .. } => normal(),
                Objective::Sliced { projection: Projection::Rademacher, .. } => normal().signum(),
                _ => f64::from(r % t as u64 == j),
            });
        }
    }
    v
}

/// Score matching's per-example losses, dL/d(output) and dL/d(J v) for the batch mean, as
/// `trace_loss` computes them: with n = kappa s (kappa the model level's sigma), w = 1 (exact)
/// or 1/T (sliced), loss = kappa w sum_t v_t . (J v_t) + 0.5 |n|^2 (exact, sliced-VR) or
/// + 0.5 w sum_t (v_t . n)^2 (sliced).
pub fn trace_loss_grad(
    objective: &Objective,
    output: &[f64],
    tangent_output: &[f64],
    dirs: &[f64],
    dim: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let batch = output.len() / dim;
    let t = objective.tangents(dim);
    let kappa = objective.model_level().map_or(1.0, |l| l.sigma);
    let squared = matches!(objective, Objective::Sliced { variance_reduced: false, .. });
    let w = if matches!(objective, Objective::Exact { .. }) { 1.0 } else { 1.0 / t as f64 };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (mut losses, mut dout, mut dtan) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..batch {
        let n = &output[b * dim..(b + 1) * dim];
        let mut loss = if squared { 0.0 } else { 0.5 * dot(n, n) };
        let mut dn: Vec<f64> = if squared { vec![0.0; dim] } else { n.to_vec() };
        for r in b * t..(b + 1) * t {
            let v = &dirs[r * dim..(r + 1) * dim];
            loss += kappa * w * dot(v, &tangent_output[r * dim..(r + 1) * dim]);
            if squared {
                let vn = dot(v, n);
                loss += 0.5 * w * vn * vn;
                dn.iter_mut().zip(v).for_each(|(g, vj)| *g += w * vn * vj);
            }
            dtan.extend(v.iter().map(|vj| kappa * w * vj / batch as f64));
        }
        losses.push(loss);
        dout.extend(dn.iter().map(|g| g / batch as f64));
    }
    (losses, dout, dtan)
}
