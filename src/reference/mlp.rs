//! The score MLP in f64: forward with the values backward needs, and backward; the forward-mode
//! (tangent) pass that carries input directions, and the reverse pass through both (second
//! order), for exact and sliced score matching.

use crate::model::{Layer, MlpShape, EMBED_FREQS};

fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
}

fn silu_grad(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}

fn silu_second(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
}

/// The network input rows: x then sin(c w_k), cos(c w_k), and for a class-conditional network
/// the "no class" code (zeros; [`set_class_codes`] writes labels).
pub fn embed(shape: &MlpShape, freqs: &[f64], x: &[f64], cond: &[f64]) -> Vec<f64> {
    let d = shape.dim;
    let mut input = Vec::with_capacity(cond.len() * shape.input_width());
    for (b, &c) in cond.iter().enumerate() {
        input.extend_from_slice(&x[b * d..(b + 1) * d]);
        input.extend(freqs.iter().take(EMBED_FREQS).map(|w| (c * w).sin()));
        input.extend(freqs.iter().take(EMBED_FREQS).map(|w| (c * w).cos()));
        input.extend(std::iter::repeat_n(0.0, shape.class_columns()));
    }
    input
}

/// Writes row b's class code into input rows [rows, input_width]: one-hot of `labels[b]`, or
/// zeros for a label that is no class (not below `shape.classes`).
pub fn set_class_codes(shape: &MlpShape, input: &mut [f64], labels: &[u32]) {
    let (width, start) = (shape.input_width(), shape.dim + 2 * EMBED_FREQS);
    for (row, &label) in input.chunks_mut(width).zip(labels) {
        for (k, v) in row[start..].iter_mut().enumerate() {
            *v = if k == label as usize && k < shape.classes { 1.0 } else { 0.0 };
        }
    }
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

/// z = W x (+ b) for `x` [rows, fan_in].
fn dense(layer: &Layer, params: &[f64], x: &[f64], bias: bool) -> Vec<f64> {
    let rows = x.len() / layer.fan_in;
    let mut z = vec![0.0; rows * layer.fan_out];
    for b in 0..rows {
        for o in 0..layer.fan_out {
            let mut acc = if bias { params[layer.b_offset + o] } else { 0.0 };
            for i in 0..layer.fan_in {
                acc += params[layer.w_offset + o * layer.fan_in + i] * x[b * layer.fan_in + i];
            }
            z[b * layer.fan_out + o] = acc;
        }
    }
    z
}

/// Adds dL/dW (and dL/db with `bias`) of z = W x (+ b) to `grads`; returns dL/dx = W^T dz.
fn dense_backward(layer: &Layer, params: &[f64], x: &[f64], dz: &[f64], bias: bool, grads: &mut [f64]) -> Vec<f64> {
    let rows = x.len() / layer.fan_in;
    let mut dx = vec![0.0; rows * layer.fan_in];
    for b in 0..rows {
        for o in 0..layer.fan_out {
            let g = dz[b * layer.fan_out + o];
            if bias {
                grads[layer.b_offset + o] += g;
            }
            for i in 0..layer.fan_in {
                grads[layer.w_offset + o * layer.fan_in + i] += g * x[b * layer.fan_in + i];
                dx[b * layer.fan_in + i] += g * params[layer.w_offset + o * layer.fan_in + i];
            }
        }
    }
    dx
}

/// A hidden layer's stored row from its pre-activations `z` and activation `act` (silu or, for
/// tangent rows, silu'(z) z'): h = act, plus the layer's input h_below where it skips, then the
/// embedding columns the input carries (the residual network; see model.rs).
fn hidden_rows(shape: &MlpShape, l: usize, x: &[f64], fan_in: usize, act: &[f64]) -> Vec<f64> {
    let (w, carried) = (shape.width, shape.carried());
    let mut h = Vec::with_capacity(act.len() / w * shape.hidden_row());
    for (row, a) in x.chunks(fan_in).zip(act.chunks(w)) {
        match shape.skips(l) {
            true => h.extend(a.iter().zip(row).map(|(a, below)| a + below)),
            false => h.extend_from_slice(a),
        }
        h.extend_from_slice(&row[fan_in - carried..]);
    }
    h
}

/// dL/dh_below from dL/d(layer input) `dx` (the h columns; the carried embedding's gradient is
/// not needed) plus, where layer `l` skips, dL/dh of the layer itself `dh_above`.
fn below_grad(shape: &MlpShape, l: usize, dx: &[f64], fan_in: usize, dh_above: &[f64]) -> Vec<f64> {
    let w = shape.width;
    let mut dh: Vec<f64> = dx.chunks(fan_in).flat_map(|row| row[..w].iter().copied()).collect();
    if shape.skips(l) {
        dh.iter_mut().zip(dh_above).for_each(|(g, a)| *g += a);
    }
    dh
}

pub fn forward(shape: &MlpShape, params: &[f64], input: &[f64]) -> Forward {
    let layers = shape.layers();
    let batch = input.len() / shape.input_width();
    let mut pre = Vec::new();
    let mut post: Vec<Vec<f64>> = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let x = if l == 0 { input } else { &post[l - 1] };
        let z = dense(layer, params, x, true);
        if l + 1 < layers.len() {
            let act: Vec<f64> = z.iter().map(|&v| silu(v)).collect();
            post.push(hidden_rows(shape, l, x, layer.fan_in, &act));
        }
        pre.push(z);
    }
    Forward { batch, input: input.to_vec(), pre, post }
}

/// Gradients of a loss with dL/d(output) = `dout`: the parameter gradients (flat, in the
/// layout table's order) and dL/d(input).
pub fn backward(shape: &MlpShape, params: &[f64], fwd: &Forward, dout: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let layers = shape.layers();
    let mut grads = vec![0.0; shape.param_count()];
    let mut dz = dout.to_vec();
    let mut dh = Vec::new();
    for (l, layer) in layers.iter().enumerate().rev() {
        let x = if l == 0 { &fwd.input } else { &fwd.post[l - 1] };
        let dx = dense_backward(layer, params, x, &dz, true, &mut grads);
        if l == 0 {
            return (grads, dx);
        }
        dh = below_grad(shape, l, &dx, layer.fan_in, &dh);
        dz = dh.iter().zip(&fwd.pre[l - 1]).map(|(g, &z)| g * silu_grad(z)).collect();
    }
    (grads, Vec::new())
}

/// The forward-mode pass along `tangents` input directions per example: `dirs` [batch * T, d],
/// row b*T + t. Each layer's z' = W h'_below (no bias) and, for hidden layers,
/// h' = silu'(z) z' (+ h'_below where the layer skips) with z the primal pre-activation of
/// example b; the embedding's tangent is zero. The output is J v.
pub struct Tangent {
    pub tangents: usize,
    pub input: Vec<f64>,
    pub pre: Vec<Vec<f64>>,
    pub post: Vec<Vec<f64>>,
}

impl Tangent {
    /// J v for every direction, [batch * T, d].
    pub fn output(&self) -> &[f64] {
        self.pre.last().map(|v| v.as_slice()).unwrap_or(&[])
    }
}

pub fn tangent_forward(shape: &MlpShape, params: &[f64], fwd: &Forward, dirs: &[f64], tangents: usize) -> Tangent {
    let layers = shape.layers();
    let (d, width) = (shape.dim, shape.input_width());
    let rows = dirs.len() / d;
    let mut input = vec![0.0; rows * width];
    for r in 0..rows {
        input[r * width..r * width + d].copy_from_slice(&dirs[r * d..(r + 1) * d]);
    }
    let mut pre = Vec::new();
    let mut post: Vec<Vec<f64>> = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let x = if l == 0 { &input } else { &post[l - 1] };
        let z = dense(layer, params, x, false);
        if l + 1 < layers.len() {
            let n = layer.fan_out;
            let act: Vec<f64> =
                (0..z.len()).map(|i| silu_grad(fwd.pre[l][(i / n / tangents) * n + i % n]) * z[i]).collect();
            post.push(hidden_rows(shape, l, x, layer.fan_in, &act));
        }
        pre.push(z);
    }
    Tangent { tangents, input, pre, post }
}

/// Parameter gradients of a loss of the output and the tangent outputs, given dL/d(output)
/// `dout` [batch, d] and dL/d(J v) `dtan` [batch * T, d]. Through h' = silu'(z) z':
/// dL/dz' = silu'(z) dL/dh', and the primal dL/dz gains silu''(z) sum_t z'_t dL/dh'_t; a skip
/// passes dL/dh and dL/dh' down unchanged beside them.
pub fn tangent_backward(
    shape: &MlpShape,
    params: &[f64],
    fwd: &Forward,
    tan: &Tangent,
    dout: &[f64],
    dtan: &[f64],
) -> Vec<f64> {
    let layers = shape.layers();
    let t = tan.tangents;
    let mut grads = vec![0.0; shape.param_count()];
    let (mut dz, mut dzt) = (dout.to_vec(), dtan.to_vec());
    let (mut dh, mut dht) = (Vec::new(), Vec::new());
    for (l, layer) in layers.iter().enumerate().rev() {
        let (x, xt) = if l == 0 { (&fwd.input, &tan.input) } else { (&fwd.post[l - 1], &tan.post[l - 1]) };
        let dx = dense_backward(layer, params, x, &dz, true, &mut grads);
        let dxt = dense_backward(layer, params, xt, &dzt, false, &mut grads);
        if l == 0 {
            break;
        }
        dh = below_grad(shape, l, &dx, layer.fan_in, &dh);
        dht = below_grad(shape, l, &dxt, layer.fan_in, &dht);
        let (z, zt, n) = (&fwd.pre[l - 1], &tan.pre[l - 1], shape.width);
        dz = (0..dh.len())
            .map(|i| {
                let (b, j) = (i / n, i % n);
                let second: f64 = (0..t).map(|k| zt[(b * t + k) * n + j] * dht[(b * t + k) * n + j]).sum();
                silu_grad(z[i]) * dh[i] + silu_second(z[i]) * second
            })
            .collect();
        dzt = (0..dht.len()).map(|i| silu_grad(z[(i / n / t) * n + i % n]) * dht[i]).collect();
    }
    grads
}
