// objective.wgsl: noise injection, the network input (x with its noise-level embedding), and the
// loss with its gradient at the network output. Composed after rng.wgsl and step.wgsl.
//
// Bindings (group 0), by entry point:
//   perturb:   0 uniform step: StepParams (dynamic offset)  1 read data [n_data, D]
//              2 read table [L] vec4 (a, sigma, cond, 0)    3 read freqs [F]
//              4 rw input [B, IN]  5 rw noise [B, D]  6 rw level [B]
//   embed:     3 read freqs  4 rw input [B, IN]  7 read x [B, D]  8 read cond [B]
//   loss_grad: 5 rw noise (read only here)  9 read output [B, D]  10 rw dout [B, D]  11 rw loss [B]
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
//   noise[b] = eps, input[b] = (a x_i + sigma eps, sin(cond w_k), cos(cond w_k)).
// embed: input[b] = (x[b], sin(cond[b] w_k), cos(cond[b] w_k)), for evaluating the network.
// loss_grad: r = out + eps (PARAM 0: the network predicts sigma * score, target -eps)
//            r = out - eps (PARAM 1: the network predicts eps, DDPM);
//   loss[b] = 0.5 |r|^2,  dout[b] = r / B (the gradient of the batch mean).

override D: u32 = 2u;          // data dimension
override F: u32 = 16u;         // Fourier frequencies; the embedding has 2F features
override B: u32 = 1u;          // batch rows
override L: u32 = 1u;          // table entries (SCHEDULE 0)
override SCHEDULE: u32 = 0u;
override PARAM: u32 = 0u;
override WG: u32 = 64u;

const STREAM_BATCH_INDEX: u32 = 2u;
const STREAM_NOISE_LEVEL: u32 = 3u;
const STREAM_NOISE_VALUE: u32 = 4u;

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

fn row_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn write_embedding(b: u32, cond: f32) {
    let base = b * (D + 2u * F) + D;
    for (var k = 0u; k < F; k++) {
        let arg = cond * freqs[k];
        input[base + k] = sin(arg);
        input[base + F + k] = cos(arg);
    }
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
    var a = 1.0;
    var sigma = 1.0;
    var cond = 0.0;
    var lvl = 0.0;
    if SCHEDULE == 0u {
        let l = u % L;
        let e = table[l];
        a = e.x;
        sigma = e.y;
        cond = e.z;
        lvl = f32(l);
    } else {
        let t = step.t_min + (1.0 - step.t_min) * uniform_closed0(u);
        lvl = t;
        if SCHEDULE == 1u {
            sigma = step.sigma_min * pow(step.sigma_max / step.sigma_min, t);
            cond = log(sigma);
        } else {
            let log_mean = -0.25 * t * t * (step.beta_max - step.beta_min) - 0.5 * t * step.beta_min;
            a = exp(log_mean);
            sigma = sqrt(1.0 - exp(2.0 * log_mean));
            cond = t;
        }
    }
    let d4 = (D + 3u) / 4u;
    let noise_stream = vec2<u32>(STREAM_NOISE_VALUE, step.step);
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        let z = normal4(step.seed, noise_stream, mul_wide(b, d4) + vec2<u32>(j0 / 4u, 0u));
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            let e = z[j - j0];
            noise[b * D + j] = e;
            input[b * (D + 2u * F) + j] = a * data[i * D + j] + sigma * e;
        }
    }
    write_embedding(b, cond);
    level[b] = lvl;
}

@compute @workgroup_size(WG)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    for (var j = 0u; j < D; j++) {
        input[b * (D + 2u * F) + j] = x_eval[b * D + j];
    }
    write_embedding(b, cond_eval[b]);
}

@compute @workgroup_size(WG)
fn loss_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = row_id(gid, nwg);
    if b >= B {
        return;
    }
    let sign = select(1.0, -1.0, PARAM == 1u);
    var total = 0.0;
    for (var j = 0u; j < D; j++) {
        let r = output[b * D + j] + sign * noise[b * D + j];
        total += r * r;
        dout[b * D + j] = r / f32(B);
    }
    loss[b] = 0.5 * total;
}
