// mixture.wgsl: the exact score of a Gaussian mixture with diagonal covariances under the noise
// x~ = a x + sigma eps, and its divergence (functions only; the kernel that composes it declares
// the overrides D and K, the constant MAX_D and the `mixture` buffer). Component k of the noised
// density is N(a mu_k, diag(v_k)), v_kj = a^2 s_kj^2 + sigma^2; mixture[k * (1 + 2D)] = log w_k,
// then mu_k [D], then s_k [D]. The responsibilities use a max-shifted log-sum-exp.
//
// With the component scores s_k = (a mu_k - x) / v_k and responsibilities r_k, the score is
// s = sum_k r_k s_k, and since grad r_k = r_k (s_k - s), its divergence is
//     div s = sum_k r_k (|s_k|^2 - sum_j 1 / v_kj) - |s|^2.

fn component_logit(x: ptr<function, array<f32, MAX_D>>, k: u32, a: f32, sigma: f32) -> f32 {
    let base = k * (1u + 2u * D);
    var l = mixture[base];
    for (var j = 0u; j < D; j++) {
        let sd = mixture[base + 1u + D + j];
        let v = a * a * sd * sd + sigma * sigma;
        let r = (*x)[j] - a * mixture[base + 1u + j];
        l -= 0.5 * (r * r / v + log(v));
    }
    return l;
}

// Writes the score at x into s; returns its divergence.
fn mixture_score(x: ptr<function, array<f32, MAX_D>>, s: ptr<function, array<f32, MAX_D>>, a: f32, sigma: f32) -> f32 {
    var top = -3.0e38;
    for (var k = 0u; k < K; k++) {
        top = max(top, component_logit(x, k, a, sigma));
    }
    var total = 0.0;
    var curvature = 0.0;
    for (var j = 0u; j < D; j++) {
        (*s)[j] = 0.0;
    }
    for (var k = 0u; k < K; k++) {
        let r = exp(component_logit(x, k, a, sigma) - top);
        total += r;
        let base = k * (1u + 2u * D);
        var own = 0.0;
        for (var j = 0u; j < D; j++) {
            let sd = mixture[base + 1u + D + j];
            // One division serves the score and the curvature term, so the samplers, which
            // discard the divergence, pay an FMA for it and no more.
            let inv_v = 1.0 / (a * a * sd * sd + sigma * sigma);
            let sk = (a * mixture[base + 1u + j] - (*x)[j]) * inv_v;
            (*s)[j] += r * sk;
            own += sk * sk - inv_v;
        }
        curvature += r * own;
    }
    var norm2 = 0.0;
    for (var j = 0u; j < D; j++) {
        (*s)[j] /= total;
        norm2 += (*s)[j] * (*s)[j];
    }
    return curvature / total - norm2;
}
