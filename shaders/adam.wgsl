// adam.wgsl: Adam (Kingma & Ba 2015) over the flat parameter buffer, and the EMA of the weights.
// Composed after step.wgsl.
//
// Bindings (group 0):
//   0  uniform              step: StepParams (dynamic offset): lr, betas, eps, bias corrections
//   1  storage, read        grads [P]
//   2  storage, read_write  params [P]
//   3  storage, read_write  m [P]   first moment
//   4  storage, read_write  v [P]   second moment
//   5  storage, read_write  ema [P] exponential moving average of the parameters
//
// For each p < P:  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   params -= lr (m / c1) / (sqrt(v / c2) + eps)   with c1 = 1 - b1^t, c2 = 1 - b2^t;
//   ema = decay ema + (1 - decay) params.

override P: u32 = 1u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> ema: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * nwg.x * WG;
    if p >= P {
        return;
    }
    let g = grads[p];
    let m1 = step.beta1 * m[p] + (1.0 - step.beta1) * g;
    let v1 = step.beta2 * v[p] + (1.0 - step.beta2) * g * g;
    m[p] = m1;
    v[p] = v1;
    let w = params[p] - step.lr * (m1 / step.bias_c1) / (sqrt(v1 / step.bias_c2) + step.adam_eps);
    params[p] = w;
    ema[p] = step.ema_decay * ema[p] + (1.0 - step.ema_decay) * w;
}
