// likelihood.wgsl: log-likelihoods through the probability-flow ODE (Song et al. 2021, eq. 13 and
// appendix D.2; score_sde `likelihood.py`), integrated by Dormand-Prince 5(4) with adaptive steps
// (scipy's RK45, score_sde's `solve_ivp` default). Composed after rng.wgsl, embed.wgsl and
// mixture.wgsl.
//
// Each point carries the augmented state z = (x, l), A = D + 1 numbers, from t = EPS to T_END:
//     dx/dt = f~(x, t) = alpha(t) x - 1/2 g(t)^2 s(x, t)
//     dl/dt = div f~   = alpha(t) D - 1/2 g(t)^2 div s(x, t)
// so that log p_0(x) = log p_T(x_T) + l_T (the host adds the prior). The score s and its
// divergence come from SOURCE 0, a Gaussian mixture exactly, or SOURCE 1, the network: s =
// OUT_SIGN / sigma * net(x, cond), div s from its tangent rows (mlp.wgsl, TANGENTS), exactly (the
// D directions e_j, ESTIMATOR 0) or by Hutchinson's estimator (1/M) sum_m v_m . J v_m with M
// fixed probes per point (ESTIMATOR 1 Gaussian, 2 Rademacher; fixed for the whole integration,
// as score_sde draws its epsilon once, so the ODE is deterministic for the step control).
//
// The same solve samples (score_sde's default `ode` sampler): DIRECTION = -1 integrates x alone
// (DIVERGENCE false: no tangent rows, l stays 0 and is left out of the error norm) from t = 1,
// the prior's draw, down to T_END = eps. h is a magnitude; time moves by DIRECTION h.
//
// One step size for the whole batch (score_sde solves the flattened batch as one ODE): the
// error norm is the RMS over every point and component of err / (ATOL + RTOL max(|z|, |z_new|)),
// as scipy's. The step control runs on the device (`control`, one workgroup) and writes `clock`,
// which every other kernel reads, so the host records many attempts per submit without reading
// anything back; once t reaches T_END every kernel returns at once.
//
// Bindings (group 0), by entry point:
//   probes:      0 clock  7 rw tan_input [N*TANGENTS, IN]
//   stage_input: 0 clock  2 rw state [N, A]  3 rw stages [7, N, A]  4 rw y [N, A]
//                5 rw net_input [N, IN] (SOURCE 1)  6 read freqs (SOURCE 1)
//   stage_drift: 0 clock  1 read mixture (SOURCE 0)  3 stages  4 y  7 tan_input (SOURCE 1)
//                8 read net_output [N, D]  9 read tan_output [N*TANGENTS, D] (SOURCE 1)
//   point_error: 0 clock  2 state  3 stages  4 y  10 rw point_err [N]
//   control:     0 clock  10 point_err
//   accept:      0 clock  2 state  3 stages  4 y

struct Clock {
    seed: vec2<u32>,
    t: f32,
    h: f32,
    done: u32,        // 0 running, 1 reached T_END, 2 failed (step size underflow or NaN)
    accepted: u32,    // whether the last attempt was accepted
    attempts: u32,
    rejected: u32,
    evaluations: u32, // of the drift (each a score and its divergence at every point)
    err: f32,         // the last attempt's error norm
}

override D: u32 = 2u;
override N: u32 = 1u;
override F: u32 = 16u;
override CLASSES: u32 = 0u;
override SOURCE: u32 = 0u;
override K: u32 = 1u;            // mixture components
override SDE: u32 = 0u;          // 0 VE (P0 = sigma_min, P1 = sigma_max), 1 VP (beta_min, beta_max)
override P0: f32 = 0.01;
override P1: f32 = 50.0;
override T_END: f32 = 1.0;
override RTOL: f32 = 1e-5;
override ATOL: f32 = 1e-5;
override OUT_SIGN: f32 = 1.0;    // +1: the network predicts sigma * score; -1: the noise
override TANGENTS: u32 = 1u;
override ESTIMATOR: u32 = 0u;    // ESTIMATOR_EXACT, _GAUSSIAN or _RADEMACHER
override STAGE: u32 = 1u;        // 1..7: which Runge-Kutta stage
override DIRECTION: f32 = 1.0;   // +1: from eps up to T_END = 1 (likelihood); -1: down to T_END = eps
override DIVERGENCE: bool = true;
override WG: u32 = 64u;

const MAX_D: u32 = 64u;
const STREAM_PROBE: u32 = 11u;
const ESTIMATOR_EXACT: u32 = 0u;
const ESTIMATOR_GAUSSIAN: u32 = 1u;
const ESTIMATOR_RADEMACHER: u32 = 2u;
const DONE_RUNNING: u32 = 0u;
const DONE_REACHED: u32 = 1u;
const DONE_FAILED: u32 = 2u;
const MIN_STEP: f32 = 1e-10;

@group(0) @binding(0) var<storage, read_write> clock: Clock;
@group(0) @binding(1) var<storage, read> mixture: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> stages: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> net_input: array<f32>;
@group(0) @binding(6) var<storage, read> freqs: array<f32>;
@group(0) @binding(7) var<storage, read_write> tan_input: array<f32>;
@group(0) @binding(8) var<storage, read> net_output: array<f32>;
@group(0) @binding(9) var<storage, read> tan_output: array<f32>;
@group(0) @binding(10) var<storage, read_write> point_err: array<f32>;

// Dormand-Prince 5(4) (scipy `RK45`): the nodes c_i, the rows of A (row 7 is the fifth-order
// weights B, so stage 7 evaluates at the new state: first same as last), and E = B - B*, the
// error weights of the seven stages.
var<private> RK_C: array<f32, 7> = array<f32, 7>(0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0);
var<private> RK_A: array<f32, 42> = array<f32, 42>(
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.2, 0.0, 0.0, 0.0, 0.0, 0.0,
    3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0,
    44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0,
    19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0, 0.0,
    9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0, 0.0,
    35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0,
);
var<private> RK_E: array<f32, 7> = array<f32, 7>(
    -71.0 / 57600.0, 0.0, 71.0 / 16695.0, -71.0 / 1920.0, 17253.0 / 339200.0, -22.0 / 525.0, 1.0 / 40.0,
);

fn point_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn width() -> u32 {
    return D + 1u;
}

// The components the error norm counts: x, and l where the divergence is integrated.
fn counted() -> u32 {
    return select(D, D + 1u, DIVERGENCE);
}

fn input_width() -> u32 {
    return D + 2u * F + CLASSES;
}

// 1 - exp(x) without the cancellation of small |x| (the VP variance near t = 0).
fn one_minus_exp(x: f32) -> f32 {
    if abs(x) < 1e-3 {
        return -x * (1.0 + x * (0.5 + x / 6.0));
    }
    return 1.0 - exp(x);
}

// The SDE at time t (src/schedule.rs): (a, sigma, cond) of the marginal and (alpha, g^2) of
// dx = alpha x dt + g dw.
struct Level {
    a: f32,
    sigma: f32,
    cond: f32,
    alpha: f32,
    g2: f32,
}

fn level_at(t: f32) -> Level {
    if SDE == 0u {
        let sigma = P0 * pow(P1 / P0, t);
        return Level(1.0, sigma, log(sigma), 0.0, sigma * sigma * 2.0 * log(P1 / P0));
    }
    let log_mean = -0.25 * t * t * (P1 - P0) - 0.5 * t * P0;
    let beta = P0 + t * (P1 - P0);
    return Level(exp(log_mean), sqrt(one_minus_exp(2.0 * log_mean)), t, -0.5 * beta, beta);
}

fn stage_at(i: u32, n: u32, c: u32) -> f32 {
    return stages[(i * N + n) * width() + c];
}

@compute @workgroup_size(WG)
fn probes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = point_id(gid, nwg);
    if r >= N * TANGENTS {
        return;
    }
    let base = r * input_width();
    let d4 = (D + 3u) / 4u;
    for (var j0 = 0u; j0 < D; j0 += 4u) {
        var v = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u) == vec4<u32>(r % TANGENTS));
        if ESTIMATOR != ESTIMATOR_EXACT {
            v = normal4(clock.seed, vec2<u32>(STREAM_PROBE, 0u), mul_wide(r, d4) + vec2<u32>(j0 / 4u, 0u));
            if ESTIMATOR == ESTIMATOR_RADEMACHER {
                v = select(vec4<f32>(-1.0), vec4<f32>(1.0), v >= vec4<f32>(0.0));
            }
        }
        for (var j = j0; j < min(j0 + 4u, D); j++) {
            tan_input[base + j] = v[j - j0];
        }
    }
    for (var j = D; j < input_width(); j++) {
        tan_input[base + j] = 0.0;
    }
}

// y = z + h sum_{j < i} A_ij k_j at t + c_i h (stage i = STAGE - 1; stage 0 is z itself), and
// for the network its input row.
@compute @workgroup_size(WG)
fn stage_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = point_id(gid, nwg);
    if n >= N || clock.done != DONE_RUNNING {
        return;
    }
    let i = STAGE - 1u;
    let h = DIRECTION * clock.h;
    for (var c = 0u; c < width(); c++) {
        var acc = 0.0;
        for (var j = 0u; j < i; j++) {
            acc += RK_A[i * 6u + j] * stage_at(j, n, c);
        }
        y[n * width() + c] = state[n * width() + c] + h * acc;
    }
    if SOURCE == 1u {
        let cond = level_at(clock.t + RK_C[i] * h).cond;
        let base = n * input_width();
        for (var j = 0u; j < D; j++) {
            net_input[base + j] = y[n * width() + j];
        }
        for (var k = 0u; k < 2u * F; k++) {
            net_input[base + D + k] = embedding(cond, k);
        }
        for (var k = 0u; k < CLASSES; k++) {
            net_input[base + D + 2u * F + k] = 0.0;
        }
    }
}

// k_i = (f~(y, t_i), div f~(y, t_i)).
@compute @workgroup_size(WG)
fn stage_drift(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = point_id(gid, nwg);
    if n >= N || clock.done != DONE_RUNNING {
        return;
    }
    let i = STAGE - 1u;
    let lv = level_at(clock.t + RK_C[i] * DIRECTION * clock.h);
    var x: array<f32, MAX_D>;
    var s: array<f32, MAX_D>;
    for (var j = 0u; j < D; j++) {
        x[j] = y[n * width() + j];
    }
    var div = 0.0;
    if SOURCE == 0u {
        div = mixture_score(&x, &s, lv.a, lv.sigma);
    } else if !DIVERGENCE {
        for (var j = 0u; j < D; j++) {
            s[j] = OUT_SIGN / lv.sigma * net_output[n * D + j];
        }
    } else {
        let scale = OUT_SIGN / lv.sigma;
        for (var j = 0u; j < D; j++) {
            s[j] = scale * net_output[n * D + j];
        }
        var trace = 0.0;
        for (var m = 0u; m < TANGENTS; m++) {
            let r = n * TANGENTS + m;
            for (var j = 0u; j < D; j++) {
                trace += tan_input[r * input_width() + j] * tan_output[r * D + j];
            }
        }
        // Exact: the D directions e_j sum the diagonal; Hutchinson: the mean over the probes.
        div = scale * select(trace / f32(TANGENTS), trace, ESTIMATOR == ESTIMATOR_EXACT);
    }
    let out = (i * N + n) * width();
    for (var j = 0u; j < D; j++) {
        stages[out + j] = lv.alpha * x[j] - 0.5 * lv.g2 * s[j];
    }
    stages[out + D] = select(0.0, lv.alpha * f32(D) - 0.5 * lv.g2 * div, DIVERGENCE);
}

// The point's share of the error norm: sum over its components of (err / scale)^2, with y the
// new state (stage 7's input) and err = h sum_i E_i k_i.
@compute @workgroup_size(WG)
fn point_error(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = point_id(gid, nwg);
    if n >= N || clock.done != DONE_RUNNING {
        return;
    }
    var total = 0.0;
    for (var c = 0u; c < counted(); c++) {
        var e = 0.0;
        for (var i = 0u; i < 7u; i++) {
            e += RK_E[i] * stage_at(i, n, c);
        }
        let z = n * width() + c;
        let scale = ATOL + RTOL * max(abs(state[z]), abs(y[z]));
        let r = clock.h * e / scale;
        total += r * r;
    }
    point_err[n] = total;
}

const REDUCE_WG: u32 = 256u;
var<workgroup> partial: array<f32, REDUCE_WG>;

// The step control (scipy RK45: safety 0.9, factors 0.2 .. 10, error exponent -1/5): sums the
// points' errors in a fixed order, accepts the step if the RMS is at most 1, and sets the next
// step size, never past T_END.
@compute @workgroup_size(REDUCE_WG)
fn control(@builtin(local_invocation_index) lid: u32) {
    if clock.done != DONE_RUNNING {
        return;
    }
    var acc = 0.0;
    for (var n = lid; n < N; n += REDUCE_WG) {
        acc += point_err[n];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var w = REDUCE_WG / 2u; w > 0u; w /= 2u) {
        if lid < w {
            partial[lid] += partial[lid + w];
        }
        workgroupBarrier();
    }
    if lid != 0u {
        return;
    }
    let err = sqrt(partial[0] / f32(N * counted()));
    clock.err = err;
    clock.attempts += 1u;
    clock.evaluations += 6u;
    if !(err <= 1.0) && !(err > 1.0) {
        clock.done = DONE_FAILED;
        clock.accepted = 0u;
        return;
    }
    var factor = 10.0;
    if err > 0.0 {
        factor = clamp(0.9 * pow(err, -0.2), 0.2, 10.0);
    }
    if err <= 1.0 {
        clock.accepted = 1u;
        // The step that reaches T_END ends there exactly, whatever t + h rounds to.
        if clock.h >= DIRECTION * (T_END - clock.t) {
            clock.t = T_END;
            clock.done = DONE_REACHED;
        } else {
            clock.t += DIRECTION * clock.h;
        }
    } else {
        clock.accepted = 0u;
        clock.rejected += 1u;
        factor = min(factor, 1.0);
    }
    clock.h = min(clock.h * factor, DIRECTION * (T_END - clock.t));
    if clock.done == DONE_RUNNING && clock.h < MIN_STEP {
        clock.done = DONE_FAILED;
    }
}

// After an accepted step: the new state, and its drift as the next step's first stage.
@compute @workgroup_size(WG)
fn accept(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = point_id(gid, nwg);
    if n >= N || clock.accepted == 0u || clock.done == DONE_FAILED {
        return;
    }
    for (var c = 0u; c < width(); c++) {
        let z = n * width() + c;
        state[z] = y[z];
        stages[n * width() + c] = stages[(6u * N + n) * width() + c];
    }
}
