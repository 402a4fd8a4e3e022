//! The probability-flow ODE solve of shaders/likelihood.wgsl in f64: Dormand-Prince 5(4) with
//! the same step control (scipy RK45's), one step size for the batch, over any drift.

/// Dormand-Prince 5(4): nodes, the rows of A (row 7 = the fifth-order weights) and the error
/// weights E = B - B* (scipy `RK45`).
const C: [f64; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const A: [[f64; 6]; 7] = [
    [0.0; 6],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0, 0.0],
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0, 0.0],
    [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
];
const E: [f64; 7] =
    [-71.0 / 57600.0, 0.0, 71.0 / 16695.0, -71.0 / 1920.0, 17253.0 / 339200.0, -22.0 / 525.0, 1.0 / 40.0];

/// What a solve cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    pub evaluations: usize,
    pub steps: usize,
    pub rejected: usize,
}

/// Integrates dz/dt = `drift(z, t)` (z: the whole batch, flattened) from `t0` to 1 with a first
/// step of `h0`; returns z(1).
pub fn solve(
    mut z: Vec<f64>,
    t0: f64,
    h0: f64,
    (rtol, atol): (f64, f64),
    drift: impl Fn(&[f64], f64) -> Vec<f64>,
) -> (Vec<f64>, Cost) {
    let (mut t, mut h) = (t0, h0);
    let mut k = vec![drift(&z, t)];
    let mut cost = Cost { evaluations: 1, steps: 0, rejected: 0 };
    while t < 1.0 {
        k.truncate(1);
        let mut y = z.clone();
        for i in 1..7 {
            y = (0..z.len()).map(|c| z[c] + h * (0..i).map(|j| A[i][j] * k[j][c]).sum::<f64>()).collect();
            k.push(drift(&y, t + C[i] * h));
        }
        cost.evaluations += 6;
        let norm = ((0..z.len())
            .map(|c| {
                let e = h * (0..7).map(|i| E[i] * k[i][c]).sum::<f64>();
                (e / (atol + rtol * z[c].abs().max(y[c].abs()))).powi(2)
            })
            .sum::<f64>()
            / z.len() as f64)
            .sqrt();
        let mut factor = if norm > 0.0 { (0.9 * norm.powf(-0.2)).clamp(0.2, 10.0) } else { 10.0 };
        if norm <= 1.0 {
            t = if h >= 1.0 - t { 1.0 } else { t + h };
            z = y;
            k[0] = k[6].clone();
            cost.steps += 1;
        } else {
            factor = factor.min(1.0);
            cost.rejected += 1;
        }
        h = (h * factor).min(1.0 - t);
    }
    (z, cost)
}
