//! The score MLP in f64: forward with the values backward needs, and backward.

use crate::model::{MlpShape, EMBED_FREQS};

fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
}

fn silu_grad(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}

/// The network input rows: x then sin(c w_k), cos(c w_k).
pub fn embed(shape: &MlpShape, freqs: &[f64], x: &[f64], cond: &[f64]) -> Vec<f64> {
    let d = shape.dim;
    let mut input = Vec::with_capacity(cond.len() * shape.input_width());
    for (b, &c) in cond.iter().enumerate() {
        input.extend_from_slice(&x[b * d..(b + 1) * d]);
        input.extend(freqs.iter().take(EMBED_FREQS).map(|w| (c * w).sin()));
        input.extend(freqs.iter().take(EMBED_FREQS).map(|w| (c * w).cos()));
    }
    input
}

/// A forward pass over a batch: each layer's pre-activation and (hidden layers) post-activation.
pub struct Forward {
    pub batch: usize,
    pub input: Vec<f64>,
    pub pre: Vec<Vec<f64>>,
    pub post: Vec<Vec<f64>>,
}

impl Forward {
    /// The network output [batch, d].
    pub fn output(&self) -> &[f64] {
        self.pre.last().map(|v| v.as_slice()).unwrap_or(&[])
    }
}

pub fn forward(shape: &MlpShape, params: &[f64], input: &[f64]) -> Forward {
    let layers = shape.layers();
    let batch = input.len() / shape.input_width();
    let mut pre = Vec::new();
    let mut post: Vec<Vec<f64>> = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let x = if l == 0 { input } else { &post[l - 1] };
        let mut z = vec![0.0; batch * layer.fan_out];
        for b in 0..batch {
            for o in 0..layer.fan_out {
                let mut acc = params[layer.b_offset + o];
                for i in 0..layer.fan_in {
                    acc += params[layer.w_offset + o * layer.fan_in + i] * x[b * layer.fan_in + i];
                }
                z[b * layer.fan_out + o] = acc;
            }
        }
        if l + 1 < layers.len() {
            post.push(z.iter().map(|&v| silu(v)).collect());
        }
        pre.push(z);
    }
    Forward { batch, input: input.to_vec(), pre, post }
}

/// Gradients of a loss with dL/d(output) = `dout`: the parameter gradients (flat, in the
/// layout table's order) and dL/d(input).
pub fn backward(shape: &MlpShape, params: &[f64], fwd: &Forward, dout: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let layers = shape.layers();
    let batch = fwd.batch;
    let mut grads = vec![0.0; shape.param_count()];
    let mut dz = dout.to_vec();
    let mut dinput = Vec::new();
    for (l, layer) in layers.iter().enumerate().rev() {
        let x = if l == 0 { &fwd.input } else { &fwd.post[l - 1] };
        for b in 0..batch {
            for o in 0..layer.fan_out {
                let g = dz[b * layer.fan_out + o];
                grads[layer.b_offset + o] += g;
                for i in 0..layer.fan_in {
                    grads[layer.w_offset + o * layer.fan_in + i] += g * x[b * layer.fan_in + i];
                }
            }
        }
        let mut dx = vec![0.0; batch * layer.fan_in];
        for b in 0..batch {
            for i in 0..layer.fan_in {
                let mut acc = 0.0;
                for o in 0..layer.fan_out {
                    acc += dz[b * layer.fan_out + o] * params[layer.w_offset + o * layer.fan_in + i];
                }
                dx[b * layer.fan_in + i] = acc;
            }
        }
        if l == 0 {
            dinput = dx;
        } else {
            dz = dx.iter().zip(&fwd.pre[l - 1]).map(|(g, &z)| g * silu_grad(z)).collect();
        }
    }
    (grads, dinput)
}
