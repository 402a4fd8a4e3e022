// adam.wgsl: Adam (Kingma & Ba 2015) over the flat parameter buffer, and the EMA of the weights.
// Composed after step.wgsl.
//
// Every buffer is bound as vec4s, one per invocation: llvmpipe runs each storage access as a loop
// over the SIMD lanes whatever its width, so a vec4 access costs one loop where four floats cost
// four (BENCHMARKS.md, session 20). The parameter-shaped buffers are allocated in whole vec4s
// (GpuBuffer::new_vec4s), zeros past the P parameters: Adam keeps a zero with a zero gradient at
// zero, so the padding never changes and never raises a health flag.
//
// Bindings (group 0):
//   0  uniform              step: StepParams (this step's ring slot): lr, betas, eps, bias corrections
//   1  storage, read        grads [P4]
//   2  storage, read_write  params [P4]
//   3  storage, read_write  m [P4]   first moment
//   4  storage, read_write  v [P4]   second moment
//   5  storage, read_write  ema [P4] exponential moving average of the parameters
//   6  storage, read_write  health: first non-finite step per quantity (step.wgsl)
//   7  storage, read_write  good [4 P4]: params, m, v, ema of the last healthy snapshot (`snapshot`)
// (P4 = ceil(P / 4) vec4s each.)
//
// main, for each p < P:  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   params -= lr (m / c1) / (sqrt(v / c2) + eps)   with c1 = 1 - b1^t, c2 = 1 - b2^t;
//   ema = decay ema + (1 - decay) params.
//   A non-finite g raises HEALTH_GRADIENT, a non-finite new parameter or moment HEALTH_PARAMETER.
// snapshot, for each p < P: if no health flag is raised, good = (params, m, v, ema). Recorded at
//   every logged step, so the last healthy state stays on the device to restore after a blow-up.

override P: u32 = 1u;
override WG: u32 = 256u;

// Vec4s per buffer: P4.
fn vec4s() -> u32 {
    return (P + 3u) / 4u;
}

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ema: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> health: array<atomic<u32>, 3>;
@group(0) @binding(7) var<storage, read_write> good: array<vec4<f32>>;

fn finite4(x: vec4<f32>) -> bool {
    return is_finite(x.x) && is_finite(x.y) && is_finite(x.z) && is_finite(x.w);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * nwg.x * WG;
    if p >= vec4s() {
        return;
    }
    let g = grads[p];
    if !finite4(g) {
        report_nonfinite(HEALTH_GRADIENT, step.step);
    }
    let m1 = step.beta1 * m[p] + (1.0 - step.beta1) * g;
    let v1 = step.beta2 * v[p] + (1.0 - step.beta2) * g * g;
    m[p] = m1;
    v[p] = v1;
    let w = params[p] - step.lr * (m1 / step.bias_c1) / (sqrt(v1 / step.bias_c2) + step.adam_eps);
    params[p] = w;
    // A finite g whose square overflows leaves v infinite and the update finite: caught here.
    if !(finite4(w) && finite4(m1) && finite4(v1)) {
        report_nonfinite(HEALTH_PARAMETER, step.step);
    }
    ema[p] = step.ema_decay * ema[p] + (1.0 - step.ema_decay) * w;
}

@compute @workgroup_size(WG)
fn snapshot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * nwg.x * WG;
    if p >= vec4s() {
        return;
    }
    let healthy = atomicLoad(&health[HEALTH_LOSS]) == HEALTH_CLEAN
        && atomicLoad(&health[HEALTH_GRADIENT]) == HEALTH_CLEAN
        && atomicLoad(&health[HEALTH_PARAMETER]) == HEALTH_CLEAN;
    if healthy {
        good[p] = params[p];
        good[vec4s() + p] = m[p];
        good[2u * vec4s() + p] = v[p];
        good[3u * vec4s() + p] = ema[p];
    }
}
