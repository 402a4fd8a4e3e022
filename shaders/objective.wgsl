// objective.wgsl: noise injection, the network input (x with its noise-level embedding), and the
// loss with its gradient at the network output. Composed after rng.wgsl, step.wgsl and embed.wgsl.
//
// Bindings (group 0), by entry point:
//   perturb:   0 uniform step: StepParams (this step's ring slot)  1 read data [n_data, D]
//              2 read table [L] vec4 (a, sigma, cond, 0)    3 read freqs [F]
//              4 rw input [B, IN]  5 rw noise [B, D]  6 rw level [B]  16 read labels [n_data]
//   embed:     3 read freqs  4 rw input [B, IN]  7 read x [B, D]  8 read cond [B]
//   loss_grad: 0 uniform step  2 read table  5 rw noise (read only here)  6 rw level (read only
//              here)  9 read output [B, D]  10 rw dout [B, D]  11 rw loss [B]  15 rw health
//              (step.wgsl)
//   directions: 0 uniform step  12 rw tangent input [B*T, IN]
//   trace_loss: 0 uniform step  9 read output  10 rw dout  11 rw loss  12 rw tangent input (read
//               only here)  13 read tangent output [B*T, D]  14 rw tangent dout [B*T, D]  15 rw health
// Both loss kernels raise HEALTH_LOSS for a non-finite loss[b].
//
// perturb, one invocation per batch row b:
//   i = u32(BatchIndex) mod n_data;  the noise level from the schedule:
//     SCHEDULE 0 (table: DSM, NCSN levels, DDPM steps): l = u32(NoiseLevel) mod L,
//                (a, sigma, cond) = table[l], level[b] = l
//     SCHEDULE 1 (VE SDE): t ~ U(t_min, 1), a = 1, sigma = sigma_min (sigma_max/sigma_min)^t,
//                cond = log sigma, level[b] = t
//     SCHEDULE 2 (VP SDE): t ~ U(t_min, 1), log m = -t^2 (beta_max - beta_min)/4 - t beta_min/2,
//                a = m, sigma = sqrt(1 - m^2), cond = t, level[b] = t
//   eps ~ N(0, I) (NoiseValue stream, normals b*D4*4 .. + D, D4 = ceil(D/4));
//   noise[b] = eps, input[b] = (a x_i + sigma eps, sin(cond w_k), cos(cond w_k), code).
//   A class-conditional network (CLASSES = C > 0) ends the row with the C-column code of label
//   labels[i]: one-hot, or all zeros ("no class") with probability CLASS_DROP (u32 b of the
//   ClassDrop stream below it, as 24-bit uniform); CLASSES = 0 writes no code. IN = D + 2F + C.
//   (Ho & Salimans 2022, classifier-free guidance: p_uncond 0.1-0.2.)
// embed: input[b] = (x[b], sin(cond[b] w_k), cos(cond[b] w_k), zeros), for evaluating the network
//   (unconditionally, where it is class-conditional).
// loss_grad: r = out + eps (PARAM 0: the network predicts sigma * score, target -eps)
//            r = out - eps (PARAM 1: the network predicts eps, DDPM);
//   loss[b] = 0.5 w |r|^2,  dout[b] = w r / B (the gradient of the batch mean), with w = 1, or
//   with MIN_SNR = gamma > 0 the Min-SNR weight w = min(SNR, gamma) / SNR of the row's level,
//   SNR = a^2 / sigma^2 (Hang et al. 2023, for the eps loss, which both parametrisations are:
//   |sigma s + eps|^2 = |eps_theta - eps|^2 with eps_theta = -sigma s).
//
// Score matching (exact and sliced; T = TANGENTS directions per example, row r = b*T + t):
// directions: the tangent input rows u'_r = (v_r, 0 .. 0) (zeros on the embedding):
//     ESTIMATOR 0 (exact): v = e_t, T = D;  1 (sliced, Gaussian): v ~ N(0, I) from the
//     Projection stream, normals r*D4*4 .. + D;  2 (sliced, Rademacher): v = sign of those normals.
// trace_loss: with n = output[b] = kappa * s (kappa = SCALE), n'_r = J_n v_r (tangent output),
//     w = 1 (exact) or 1/T (sliced), and the loss times kappa^2 (lambda = sigma^2 weighting):
//     loss[b] = kappa w sum_t v_t . n'_t + (0.5 |n|^2                    exact, sliced-VR
//                                          0.5 w sum_t (v_t . n)^2      sliced)
//     dout[b] = (n  or  w sum_t (v_t . n) v_t) / B,   tangent dout[r] = kappa w v_t / B.

override D: u32 = 2u;          // data dimension
override F: u32 = 16u;         // Fourier frequencies; the embedding has 2F features
override B: u32 = 1u;          // batch rows
override L: u32 = 1u;          // table entries (SCHEDULE 0)
override SCHEDULE: u32 = 0u;
const SCHEDULE_TABLE: u32 = 0u;  // discrete levels from `table`
const SCHEDULE_VE: u32 = 1u;
const SCHEDULE_VP: u32 = 2u;
override PARAM: u32 = 0u;
override WG: u32 = 64u;
override TANGENTS: u32 = 1u;   // T
override ESTIMATOR: u32 = 0u;
const ESTIMATOR_EXACT: u32 = 0u;
const ESTIMATOR_GAUSSIAN: u32 = 1u;    // sliced, Gaussian projections
const ESTIMATOR_RADEMACHER: u32 = 2u;  // sliced, Rademacher projections
override VARIANCE_REDUCED: bool = false;
override SCALE: f32 = 1.0;     // kappa: the network's output is kappa * score
override MIN_SNR: f32 = 0.0;   // gamma of the Min-SNR loss weight; 0: every row weighs 1
override CLASSES: u32 = 0u;    // C, the class code's columns (0: unconditional network)
override CLASS_DROP: f32 = 0.0;  // probability that a row's label is dropped to "no class"

const STREAM_BATCH_INDEX: u32 = 2u;
const STREAM_NOISE_LEVEL: u32 = 3u;
const STREAM_NOISE_VALUE: u32 = 4u;
const STREAM_PROJECTION: u32 = 7u;
const STREAM_CLASS_DROP: u32 = 10u;

@group(0) @binding(0) var<uniform> step: StepParams;
@group(0) @binding(1) var<storage, read> data: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> freqs: array<f32>;
@group(0) @binding(4) var<storage, read_write> input: array<f32>;
@group(0) @binding(5) var<storage, read_write> noise: array<f32>;
@group(0) @binding(6) var<storage, read_write> level: array<f32>;
@group(0) @binding(7) var<storage, read> x_eval: array<f32>;
@group(0) @binding(8) var<storage, read> cond_eval: array<f32>;
@group(0) @binding(9) var<storage, read> output: array<f32>;
@group(0) @binding(10) var<storage, read_write> dout: array<f32>;
@group(0) @binding(11) var<storage, read_write> loss: array<f32>;
@group(0) @binding(12) var<storage, read_write> tan_input: array<f32>;
@group(0) @binding(13) var<storage, read> tan_output: array<f32>;
@group(0) @binding(14) var<storage, read_write> tan_dout: array<f32>;
@group(0) @binding(15) var<storage, read_write> health: array<atomic<u32>, 3>;
@group(0) @binding(16) var<storage, read> labels: array<u32>;

// Columns of a network input row: x, the noise embedding, the class code.
fn input_width() -> u32 {
    return D + 2u * F + CLASSES;
}

fn write_loss(b: u32, value: f32) {
    loss[b] = value;
    if !is_finite(value) {
        report_nonfinite(HEALTH_LOSS, step.step);
    }
}

fn row_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The conditioning columns of row b: the embedding of `cond`, then the code of `label` (a
// class below CLASSES, anything else is "no class": zeros).
fn write_conditioning(b: u32, cond: f32, label: u32) {
    let base = b * input_width() + D;
    for (var k = 0u; k < 2u * F; k++) {
        input[base + k] = embedding(cond, k);
    }
    for (var k = 0u; k < CLASSES; k++) {
        input[base + 2u * F + k] = select(0.0, 1.0, k == label);
    }
}

// (a, sigma, cond) of a row's level: a table index (SCHEDULE 0) or a time t (1: VE SDE, 2: VP SDE).
fn noise_level(lvl: f32) -> vec3<f32> {
    if SCHEDULE == SCHEDULE_TABLE {
        return table[u32(lvl)].xyz;
    }
    let t = lvl;
    if SCHEDULE == SCHEDULE_VE {
        let sigma = step.sigma_min * pow(step.sigma_max / step.sigma_min, t);
        return vec3<f32>(1.0, sigma, log(sigma));
    }
    let log_mean = -0.25 * t * t * (step.beta_max - step.beta_min) - 0.5 * t * step.beta_min;
    return vec3<f32>(exp(log_mean), sqrt(1.0 - exp(2.0 * log_mean)), t);
}

@compute @workgroup_size(WG)
fn perturb(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    let row = vec2<u32>(b, 0u);
    let i = u32_at(step.seed, vec2<u32>(STREAM_BATCH_INDEX, step.step), row) % step.n_data;
    let u = u32_at(step.seed, vec2<u32>(STREAM_NOISE_LEVEL, step.step), row);
    var lvl = 0.0;
    if SCHEDULE == SCHEDULE_TABLE {
        lvl = f32(u % L);
    } else {
        lvl = step.t_min + (1.0 - step.t_min) * uniform_closed0(u);
    }
    let level_now = noise_level(lvl);
    let a = level_now.x;
    let sigma = level_now.y;
    let cond = level_now.z;
    let d4 = (D + 3u) / 4u;
    let noise_stream = vec2<u32>(STREAM_NOISE_VALUE, step.step);
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        let z = normal4(step.seed, noise_stream, mul_wide(b, d4) + vec2<u32>(j0 / 4u, 0u));
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            let e = z[j - j0];
            noise[b * D + j] = e;
            input[b * input_width() + j] = a * data[i * D + j] + sigma * e;
        }
    }
    var label = CLASSES;
    if CLASSES > 0u {
        let drop = uniform_closed0(u32_at(step.seed, vec2<u32>(STREAM_CLASS_DROP, step.step), row)) < CLASS_DROP;
        label = select(labels[i], CLASSES, drop);
    }
    write_conditioning(b, cond, label);
    level[b] = lvl;
}

@compute @workgroup_size(WG)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    for (var j = 0u; j < D; j++) {
        input[b * input_width() + j] = x_eval[b * D + j];
    }
    write_conditioning(b, cond_eval[b], CLASSES);
}

@compute @workgroup_size(WG)
fn loss_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    let sign = select(1.0, -1.0, PARAM == 1u);
    var w = 1.0;
    if MIN_SNR > 0.0 {
        let l = noise_level(level[b]);
        let snr = (l.x * l.x) / (l.y * l.y);
        w = min(snr, MIN_SNR) / snr;
    }
    var total = 0.0;
    for (var j = 0u; j < D; j++) {
        let r = output[b * D + j] + sign * noise[b * D + j];
        total += r * r;
        dout[b * D + j] = w * r / f32(B);
    }
    write_loss(b, 0.5 * w * total);
}

@compute @workgroup_size(WG)
fn directions(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_id(gid, nwg);
    if r >= B * TANGENTS {
        return;
    }
    let width = input_width();
    let d4 = (D + 3u) / 4u;
    let stream = vec2<u32>(STREAM_PROJECTION, step.step);
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        var v = vec4<f32>(0.0);
        if ESTIMATOR == ESTIMATOR_EXACT {
            let t = r % TANGENTS;
            v = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u) == vec4<u32>(t));
        } else {
            v = normal4(step.seed, stream, mul_wide(r, d4) + vec2<u32>(j0 / 4u, 0u));
            if ESTIMATOR == ESTIMATOR_RADEMACHER {
                v = select(vec4<f32>(-1.0), vec4<f32>(1.0), v >= vec4<f32>(0.0));
            }
        }
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            tan_input[r * width + j] = v[j - j0];
        }
    }
    for (var j = D; j < width; j++) {
        tan_input[r * width + j] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn trace_loss(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    let width = input_width();
    let sliced_square = ESTIMATOR != 0u && !VARIANCE_REDUCED;
    let w = select(1.0 / f32(TANGENTS), 1.0, ESTIMATOR == ESTIMATOR_EXACT);
    let inv_b = 1.0 / f32(B);
    var norm = 0.0;
    for (var j = 0u; j < D; j++) {
        let n = output[b * D + j];
        norm += n * n;
        dout[b * D + j] = select(n * inv_b, 0.0, sliced_square);
    }
    var trace = 0.0;
    var projected = 0.0;
    for (var t = 0u; t < TANGENTS; t++) {
        let r = b * TANGENTS + t;
        var vn = 0.0;
        for (var j = 0u; j < D; j++) {
            let v = tan_input[r * width + j];
            trace += v * tan_output[r * D + j];
            vn += v * output[b * D + j];
            tan_dout[r * D + j] = SCALE * w * v * inv_b;
        }
        if sliced_square {
            projected += vn * vn;
            for (var j = 0u; j < D; j++) {
                dout[b * D + j] += w * vn * tan_input[r * width + j] * inv_b;
            }
        }
    }
    write_loss(b, SCALE * w * trace + select(0.5 * norm, 0.5 * w * projected, sliced_square));
}
