//! The samplers against the f64 reference of their steps and, with exact scores of Gaussians and
//! Gaussian mixtures, against the distributions they should reach: moments, mixture weights,
//! and MMD to exact samples with a threshold calibrated on exact-vs-exact samples.

mod common;

use common::*;
use scorefield::gpu::{DenseKernel, Gpu, Tuning};
use scorefield::mixture::GaussianMixture;
use scorefield::model::{MlpShape, ScoreMlp, Weights};
use scorefield::objective::Parametrisation;
use scorefield::reference::{mlp, sample as rsample};
use scorefield::sample::{Churn, Classes, Method, Path, Sampler, SamplerConfig, ScoreSource, NO_CLASS};
use scorefield::schedule::{NoiseLevel, Sde};

fn run_sampler(gpu: &Gpu, source: ScoreSource<'_>, method: &Method, config: SamplerConfig) -> (Vec<f32>, bool) {
    let mut sampler = pollster::block_on(Sampler::new(gpu, source, method, config)).unwrap();
    (run_poisoned(gpu, &mut sampler), sampler.is_fused())
}

fn with_path(mut config: SamplerConfig, path: Path) -> SamplerConfig {
    config.path = path;
    config
}

/// Every method, shortened, for the step-level comparisons.
fn short_methods() -> Vec<Method> {
    let ve = Sde::ve(0.01, 4.0);
    let vp = Sde::vp_default();
    vec![
        Method::Langevin { level: NoiseLevel::ve(0.3), step_size: 0.05, steps: 6, init_std: 3.0 },
        Method::AnnealedLangevin { sigmas: vec![10.0, 1.0, 0.1], steps_per_level: 2, eps: 1e-2, denoise: true },
        Method::ReverseSde { sde: ve, steps: 5 },
        Method::ReverseSde { sde: vp, steps: 5 },
        Method::PredictorCorrector { sde: ve, steps: 4, snr: 0.16, corrector_steps: 2 },
        // VP's discrete betas reach beta_max / steps = 20 / steps, which must stay below 1.
        Method::PredictorCorrector { sde: vp, steps: 24, snr: 0.16, corrector_steps: 1 },
        Method::ProbabilityFlow { sde: ve, steps: 5, heun: false },
        Method::ProbabilityFlow { sde: vp, steps: 5, heun: true },
        Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 6, clip: false },
        // Clipped to [-1, 1] through x0: the mixture's means lie out to 3, so clipping acts.
        Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 6, clip: true },
        edm(4.0, 4, Churn::NONE),
        edm(4.0, 4, Churn { s_churn: 2.0, s_tmin: 0.05, s_tmax: 2.0, s_noise: 1.007 }),
        Method::DpmSolver2M { sde: ve, steps: 5 },
        Method::DpmSolver2M { sde: vp, steps: 5 },
    ]
}

/// EDM and DPM-Solver++(2M) against transcriptions of their algorithms, in f64 with the exact
/// score of a 1-D Gaussian N(mu, sd^2): run through the reference sampler, each plan's
/// coefficients give the particles the algorithm gives. EDM: Karras et al. (2022) Algorithm 2
/// without churn (k-diffusion `sample_heun`). DPM-Solver++(2M): Lu et al. (2022) Algorithm 2,
/// on the plan's own times, which must be uniform in lambda = log(a / sigma).
#[test]
fn edm_and_dpm_solver_plans_are_their_algorithms() {
    let (mu, sd) = (0.7, 0.4);
    // The noised score at level (a, sigma): x_t = a x0 + sigma z.
    let score = |x: f64, a: f64, sigma: f64| -(x - a * mu) / (a * a * sd * sd + sigma * sigma);
    let starts = [-3.0, 0.5, 4.0];
    let run_plan = |method: &Method| {
        let plan = method.plan().unwrap();
        let (mut x, mut p) = (starts.to_vec(), vec![0.0; starts.len()]);
        rsample::run(&plan, 1..plan.len(), 0, 1, &mut x, &mut p, |pts, l| {
            pts.iter().map(|&v| score(v, l.a, l.sigma)).collect()
        });
        (plan, x)
    };
    // The plan stores its coefficients in f32 (SampleStep): about 6e-8 relative each, over a
    // dozen steps; a wrong coefficient or rule errs by 1e-3 or more.
    let close = |got: &[f64], want: &[f64], what: &str| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6 * (1.0 + w.abs()), "{what}: {got:?} vs {want:?}");
        }
    };

    let (sigma_min, sigma_max, n, rho) = (0.01, 5.0, 7, 7.0);
    let (_, got) = run_plan(&Method::Edm { sigma_min, sigma_max, steps: n, rho, churn: Churn::NONE });
    let t: Vec<f64> = (0..n)
        .map(|i| {
            let (hi, lo) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
            (hi + i as f64 / (n - 1) as f64 * (lo - hi)).powf(rho)
        })
        .chain([0.0])
        .collect();
    let denoise = |x: f64, sigma: f64| x + sigma * sigma * score(x, 1.0, sigma);
    let want: Vec<f64> = starts
        .iter()
        .map(|&x0| {
            let mut x = x0;
            for i in 0..n {
                let d = (x - denoise(x, t[i])) / t[i];
                let mut next = x + (t[i + 1] - t[i]) * d;
                if t[i + 1] != 0.0 {
                    let d2 = (next - denoise(next, t[i + 1])) / t[i + 1];
                    next = x + (t[i + 1] - t[i]) * 0.5 * (d + d2);
                }
                x = next;
            }
            x
        })
        .collect();
    close(&got, &want, "edm");

    for sde in [Sde::ve(0.01, 5.0), Sde::vp_default()] {
        let steps = 6;
        let (plan, got) = run_plan(&Method::DpmSolver2M { sde, steps });
        // The levels of the solver's steps: one per time, the last twice (the final denoising).
        let levels: Vec<_> =
            plan[1..plan.len() - 1].iter().map(|p| p.level).chain([plan[plan.len() - 1].level]).collect();
        assert_eq!(levels.len(), steps);
        let lambda: Vec<f64> = levels.iter().map(|l| (l.a / l.sigma).ln()).collect();
        let h: Vec<f64> = lambda.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(h.iter().all(|&hi| (hi - h[0]).abs() < 1e-9 * h[0].abs()), "lambda steps {h:?}");
        assert!((plan[1].level.a - sde.marginal(1.0).a).abs() < 1e-12, "starts at t = 1");
        let data =
            |x: f64, l: &scorefield::schedule::NoiseLevel| (x + l.sigma * l.sigma * score(x, l.a, l.sigma)) / l.a;
        let want: Vec<f64> = starts
            .iter()
            .map(|&x0| {
                let mut x = x0;
                let mut previous: Option<f64> = None;
                for i in 1..steps {
                    let (here, next) = (&levels[i - 1], &levels[i]);
                    let d = data(x, here);
                    let d_i = match previous {
                        None => d,
                        Some(prev) => {
                            let r = h[i - 2] / h[i - 1];
                            (1.0 + 1.0 / (2.0 * r)) * d - prev / (2.0 * r)
                        }
                    };
                    x = next.sigma / here.sigma * x - next.a * ((-h[i - 1]).exp() - 1.0) * d_i;
                    previous = Some(d);
                }
                data(x, &levels[steps - 1])
            })
            .collect();
        close(&got, &want, &format!("dpm-solver++ {sde:?}"));
    }
}

/// EDM down to sigma 0.01 with Karras et al.'s rho = 7.
fn edm(sigma_max: f64, steps: usize, churn: Churn) -> Method {
    Method::Edm { sigma_min: 0.01, sigma_max, steps, rho: 7.0, churn }
}

/// |a - b| / (1 + |b|) elementwise, sorted ascending.
fn sorted_errors(a: &[f32], b: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), b.len());
    let mut e: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / (1.0 + y.abs())).collect();
    e.sort_by(f64::total_cmp);
    e
}

/// max |a - b| / (1 + |b|) elementwise.
fn max_err(a: &[f32], b: &[f64]) -> f64 {
    *sorted_errors(a, b).last().unwrap()
}

fn reference_run(
    method: &Method,
    seed: u64,
    n: usize,
    d: usize,
    score: impl Fn(&[f64], &NoiseLevel) -> Vec<f64>,
) -> Vec<f64> {
    let plan = method.plan().unwrap();
    let mut x = vec![0.0; n * d];
    let mut p = vec![0.0; n * d];
    rsample::run(&plan, 0..plan.len(), seed, d, &mut x, &mut p, score);
    x
}

#[test]
fn every_method_matches_the_reference_with_an_exact_score() {
    let gpu = gpu();
    let mut r = TestRng(test_seed());
    // A 3-D mixture with diagonal stds and unequal weights.
    let mix = random_mixture(&mut r, 3);
    let n = 300;
    for method in short_methods() {
        let seed = r.next_u64();
        let want = reference_run(&method, seed, n, 3, |x, l| mix.noised_score(x, l.a, l.sigma));
        for path in [Path::Fused, Path::Staged] {
            if path == Path::Fused && method.couples_particles() {
                continue;
            }
            let config = with_path(SamplerConfig { steps_per_dispatch: 3, ..SamplerConfig::new(n, seed) }, path);
            let (got, _) = run_sampler(&gpu, ScoreSource::Mixture(&mix), &method, config);
            let errors = sorted_errors(&got, &want);
            let (p99, max) = (errors[errors.len() * 99 / 100], errors[errors.len() - 1]);
            eprintln!("{} {path:?}: error p99 {p99:.2e}, max {max:.2e}", method.name());
            // f32 steps of f32 coefficients: a few ulps per step of terms that partly cancel (the
            // VE steps at large sigma add drift and noise larger than their sum); over 30 seeds
            // the 99th percentile stayed below 8e-6. A wrong coefficient or rule errs by 1e-2 or
            // more on most particles, which the 99th percentile catches. The few particles a
            // five-step run leaves far out between two components (|x - a mu| ~ 20 at
            // sigma ~ 0.05) have logits ~ 1e3 that an ulp of x moves by ~1e-4, shifting their
            // responsibilities: there an f64 reference fed f32 states and f32 scores differs by
            // 1.2e-4 from the pure f64 one, and the GPU by up to 1.5e-4 with sigma_max = 10
            // (7.5e-4 once in 30 seeds) and 8.2e-5 with sigma_max = 4 (30 seeds), hence the
            // looser bound on the max.
            assert!(
                p99 < 2e-5,
                "{} {path:?}: 99th-percentile error {p99:.2e} against the f64 reference",
                method.name()
            );
            assert!(max < 1e-3, "{} {path:?}: max error {max:.2e} against the f64 reference", method.name());
        }
    }
}

#[test]
fn network_scores_match_the_reference_on_both_paths() {
    // Width 20: the fused kernel computes eight outputs at a time, so its last block of a
    // hidden layer is half full, as is every block of the 2-wide output layer.
    network_scores_match_the_reference(MlpShape::new(2, 2, 20), &[Path::Fused, Path::Staged]);
}

/// A network wider than 128 runs fused with its weights and activations in storage buffers
/// (WIDE); width 132 leaves its last block of eight outputs half full.
#[test]
fn a_wide_network_matches_the_reference_on_both_paths() {
    network_scores_match_the_reference(MlpShape::new(2, 2, 132), &[Path::Fused, Path::Staged]);
}

/// The residual network runs staged: the fused kernel computes the plain network, so `auto`
/// picks staged and asking for fused is refused with a message.
#[test]
fn the_residual_network_samples_staged() {
    let shape = MlpShape::new(2, 3, 24).with_residual(true);
    network_scores_match_the_reference(shape, &[Path::Auto]);
    let gpu = gpu();
    let model = ScoreMlp::new(&gpu, shape, test_seed()).unwrap();
    let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: Parametrisation::Eps };
    let method = Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 5, clip: false };
    let config = with_path(SamplerConfig::new(10, 1), Path::Fused);
    let err = pollster::block_on(Sampler::new(&gpu, source, &method, config)).err().expect("fused refused");
    assert!(err.to_string().contains("plain (not residual) network"), "{err}");
}

fn network_scores_match_the_reference(shape: MlpShape, paths: &[Path]) {
    let gpu = gpu();
    let mut r = TestRng(test_seed());
    let model = ScoreMlp::new(&gpu, shape, r.next_u64()).unwrap();
    let params: Vec<f64> = pollster::block_on(model.params.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let freqs: Vec<f64> = pollster::block_on(model.freqs.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let n = 200;
    for (method, param) in [
        (
            Method::AnnealedLangevin { sigmas: vec![3.0, 0.5], steps_per_level: 3, eps: 0.05, denoise: true },
            Parametrisation::Score,
        ),
        (Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 5, clip: true }, Parametrisation::Eps),
        (Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 3, heun: true }, Parametrisation::Score),
    ] {
        let seed = r.next_u64();
        let sign = if param == Parametrisation::Eps { -1.0 } else { 1.0 };
        let want = reference_run(&method, seed, n, 2, |x, l| {
            let cond = vec![l.cond as f32 as f64; x.len() / 2];
            let out = mlp::forward(&shape, &params, &mlp::embed(&shape, &freqs, x, &cond));
            out.output().iter().map(|o| sign * o / l.sigma).collect()
        });
        let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: param };
        let mut results = Vec::new();
        for &path in paths {
            let (got, fused) = run_sampler(&gpu, source, &method, with_path(SamplerConfig::new(n, seed), path));
            assert_eq!(fused, path == Path::Fused);
            let err = max_err(&got, &want);
            eprintln!("network {} {path:?}: max error {err:.2e}", method.name());
            // As forward_matches_reference in tests/train.rs: the embedding's f32 sin/cos of
            // large arguments limits agreement to ~1e-5 relative per evaluation; f32 sums of n
            // terms round about as sqrt(n), so a wider net gets sqrt(width / 20) of it (a
            // width-132 net's ODE run measured 1.5e-4 once; its broken variants 6e-2 and more).
            let tol = 1e-4 * (shape.width as f64 / 20.0).sqrt().max(1.0);
            assert!(err < tol, "network {} {path:?}: max error {err:.2e} (tolerance {tol:.1e})", method.name());
            results.push(got);
        }
        if let [fused, staged] = &results[..] {
            let diff = worst(fused.iter().zip(staged).map(|(&a, &b)| ((a - b).abs() / (1.0 + b.abs())) as f64));
            eprintln!(
                "network {}: fused vs staged max difference {diff:.2e} (bit-identical: {})",
                method.name(),
                diff == 0.0
            );
            assert!(diff < 1e-5, "fused and staged paths differ by {diff:.2e}");
        }
    }
}

/// A class-conditional network with classifier-free guidance against the f64 reference: each
/// particle's label (some no class) in its input row, and (1 + w) s(x | k) - w s(x) from the
/// network's two evaluations per step, through the update, Heun's saved sum and the corrector's
/// norms.
#[test]
fn guided_class_conditional_sampling_matches_the_reference() {
    let gpu = gpu();
    let mut r = TestRng(test_seed());
    let shape = MlpShape::new(3, 2, 24).with_residual(true).with_classes(4);
    let model = ScoreMlp::new(&gpu, shape, r.next_u64()).unwrap();
    let params: Vec<f64> = pollster::block_on(model.params.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let freqs: Vec<f64> = pollster::block_on(model.freqs.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let n = 150;
    let mut labels: Vec<u32> = (0..n).map(|_| r.below(shape.classes) as u32).collect();
    labels[..10].fill(NO_CLASS);
    let methods = [
        (Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 5, clip: false }, Parametrisation::Eps),
        (
            Method::PredictorCorrector { sde: Sde::ve(0.01, 4.0), steps: 3, snr: 0.16, corrector_steps: 1 },
            Parametrisation::Score,
        ),
        (Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 3, heun: true }, Parametrisation::Score),
    ];
    for guidance in [0.0, 2.5] {
        for (method, param) in &methods {
            let seed = r.next_u64();
            let sign = if *param == Parametrisation::Eps { -1.0 } else { 1.0 };
            let w = guidance as f64;
            let want = reference_run(method, seed, n, shape.dim, |x, l| {
                let cond = vec![l.cond as f32 as f64; x.len() / shape.dim];
                let unconditional = mlp::embed(&shape, &freqs, x, &cond);
                let mut conditional = unconditional.clone();
                mlp::set_class_codes(&shape, &mut conditional, &labels);
                let c = mlp::forward(&shape, &params, &conditional);
                let u = mlp::forward(&shape, &params, &unconditional);
                c.output().iter().zip(u.output()).map(|(c, u)| sign * ((1.0 + w) * c - w * u) / l.sigma).collect()
            });
            let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: *param };
            let classes = Classes { labels: labels.clone(), guidance };
            let mut sampler =
                pollster::block_on(Sampler::conditional(&gpu, source, method, SamplerConfig::new(n, seed), &classes))
                    .unwrap();
            let got = run_poisoned(&gpu, &mut sampler);
            let err = max_err(&got, &want);
            eprintln!("conditional {} guidance {guidance}: max error {err:.2e}", method.name());
            // As network_scores_match_the_reference.
            assert!(err < 1e-4, "conditional {} guidance {guidance}: max error {err:.2e}", method.name());
        }
    }
}

/// A class-conditional network is sampled through `Sampler::conditional`, with labels it
/// knows; everything else is refused with a message.
#[test]
fn class_conditional_sampling_refuses_what_it_cannot_do() {
    let gpu = gpu();
    let method = Method::Ddpm { beta_min: 1e-4, beta_max: 0.2, steps: 5, clip: false };
    let config = SamplerConfig::new(10, 1);
    let conditional = ScoreMlp::new(&gpu, MlpShape::new(2, 2, 8).with_classes(3), 1).unwrap();
    let plain = ScoreMlp::new(&gpu, MlpShape::new(2, 2, 8), 1).unwrap();
    let source = |model| ScoreSource::Network { model, weights: Weights::Raw, parametrisation: Parametrisation::Eps };
    let refused = |result: scorefield::Result<Sampler>| result.err().expect("refused").to_string();
    let err = refused(pollster::block_on(Sampler::new(&gpu, source(&conditional), &method, config)));
    assert!(err.contains("class-conditional (3 classes)") && err.contains("Sampler::conditional"), "{err}");
    for (classes, model, says) in [
        (Classes::one(3, 10, 0.0), &conditional, "knows classes 0 to 2"),
        (Classes::one(1, 9, 0.0), &conditional, "9 labels for 10 particles"),
        (Classes::one(1, 10, f32::NAN), &conditional, "not finite"),
        (Classes::one(1, 10, 0.0), &plain, "not class-conditional"),
    ] {
        let err = refused(pollster::block_on(Sampler::conditional(&gpu, source(model), &method, config, &classes)));
        assert!(err.contains(says), "{err}");
    }
    // Every known label and no class are accepted.
    let mut labels = Classes::each(3, 10, 1.0);
    labels.labels[0] = NO_CLASS;
    assert!(pollster::block_on(Sampler::conditional(&gpu, source(&conditional), &method, config, &labels)).is_ok());
}

/// The fused kernel's choices (particles per invocation; weight loads of its own or shared by a
/// subgroup's lanes) change how it loads, not what it computes: the same particles to the bit.
#[test]
fn the_fused_kernels_choices_give_the_same_particles() {
    // Width 20: the last of each layer's blocks of eight rows is half full.
    fused_choices_give_the_same_particles(20);
}

/// The same for a wide network, whose weights and activations are in storage buffers, each
/// invocation's activations in its own part of the scratch buffer.
#[test]
fn the_fused_kernels_choices_give_the_same_particles_for_a_wide_network() {
    fused_choices_give_the_same_particles(132);
}

/// `auto` runs a wide network fused only where the tuning says so (CPU adapters), and staged
/// otherwise (GPUs, where the staged path's matrix products are expected to be faster).
#[test]
fn auto_runs_a_wide_network_fused_where_the_tuning_says_so() {
    let gpu = gpu();
    let model = ScoreMlp::new(&gpu, MlpShape::new(2, 1, 132), test_seed()).unwrap();
    let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: Parametrisation::Score };
    let method = Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 2, heun: false };
    for fused_wide in [false, true] {
        let gpu = gpu.clone().with_tuning(Tuning { fused_wide, ..gpu.tuning() });
        let sampler = pollster::block_on(Sampler::new(&gpu, source, &method, SamplerConfig::new(8, 1))).unwrap();
        assert_eq!((sampler.is_fused(), sampler.fused_wide()), (fused_wide, fused_wide), "fused_wide {fused_wide}");
    }
}

fn fused_choices_give_the_same_particles(width: usize) {
    let gpu = gpu();
    let mut r = TestRng(test_seed());
    let model = ScoreMlp::new(&gpu, MlpShape::new(3, 2, width), r.next_u64()).unwrap();
    let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: Parametrisation::Score };
    let method = Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 4, heun: true };
    // 203 particles: the last invocation has fewer than its share, and the invocations past the
    // end share a subgroup with some that are not.
    let config = SamplerConfig { path: Path::Fused, ..SamplerConfig::new(203, r.next_u64()) };
    let run = |ppi: u32, dense: DenseKernel| {
        let gpu = gpu.clone().with_tuning(Tuning { fused_particles: ppi, dense, ..gpu.tuning() });
        run_sampler(&gpu, source, &method, config).0
    };
    let one = run(1, DenseKernel::Block);
    let wide = pollster::block_on(Sampler::new(&gpu, source, &method, config)).unwrap().fused_wide();
    assert_eq!(wide, width > 128, "width {width}: runs wide");
    // Shared loads with four particles per invocation, as CPU adapters with subgroups run it
    // (each fused pipeline takes seconds to build on llvmpipe).
    let shared = gpu.runs(DenseKernel::Subgroup).then_some((4, DenseKernel::Subgroup));
    for (ppi, dense) in [2, 3, 4].map(|ppi| (ppi, DenseKernel::Block)).into_iter().chain(shared) {
        let got = run(ppi, dense);
        let same = one.iter().zip(&got).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
        assert_eq!(
            same,
            one.len(),
            "width {width}, {ppi} particles per invocation, {} weight loads: {same} of {} values as with one, block",
            dense.name(),
            one.len()
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_particles() {
    let gpu = gpu();
    let mix = GaussianMixture::eight_gaussians();
    let method = Method::ReverseSde { sde: Sde::ve(0.01, 10.0), steps: 50 };
    let seed = test_seed();
    for path in [Path::Fused, Path::Staged] {
        let config = with_path(SamplerConfig::new(1000, seed), path);
        let a = run_sampler(&gpu, ScoreSource::Mixture(&mix), &method, config).0;
        let b = run_sampler(&gpu, ScoreSource::Mixture(&mix), &method, config).0;
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{path:?}: same seed, different particles");
        let other = SamplerConfig { seed: seed ^ 1, ..config };
        let c = run_sampler(&gpu, ScoreSource::Mixture(&mix), &method, other).0;
        assert!(
            a.iter().zip(&c).filter(|(x, y)| x != y).count() > a.len() * 9 / 10,
            "another seed should move the particles"
        );
    }
}

#[test]
fn snapshots_record_the_run() {
    let gpu = gpu();
    let mix = GaussianMixture::eight_gaussians();
    let method =
        Method::AnnealedLangevin { sigmas: vec![10.0, 1.0, 0.1], steps_per_level: 10, eps: 0.01, denoise: false };
    let config = SamplerConfig { snapshot_every: 7, ..SamplerConfig::new(500, 5) };
    let mut sampler = pollster::block_on(Sampler::new(&gpu, ScoreSource::Mixture(&mix), &method, config)).unwrap();
    sampler.run();
    let snaps = pollster::block_on(sampler.read_snapshots()).unwrap();
    let last = pollster::block_on(sampler.read()).unwrap();
    // The initial draw, steps 7, 14, 21, 28, and the last (30).
    assert_eq!(snaps.len(), 6);
    assert_eq!(snaps.len(), sampler.snapshot_count());
    assert_eq!(snaps.last().unwrap(), &last);
    // The initial draw is N(0, 10^2 I): its spread is far wider than the end's.
    let spread = |v: &[f32]| (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt();
    assert!(spread(&snaps[0]) > 8.0 && spread(&last) < 5.0, "{} {}", spread(&snaps[0]), spread(&last));
}

// ---- distributions -----------------------------------------------------------------------------

#[test]
fn langevin_recovers_the_mean_and_covariance_of_a_gaussian() {
    let gpu = gpu();
    let (mean, std) = ([1.0, -2.0], [0.5, 1.5]);
    let target = GaussianMixture::gaussian(mean.to_vec(), std.to_vec()).unwrap();
    // alpha = 0.01: the chain's stationary variance is v / (1 - alpha / (4 v)), 1% above v on
    // the narrow axis; 3000 steps contract the wide axis's start error in the mean by
    // (1 - alpha / (2 * 2.25))^3000 ~ e^-6.7 (and in the variance by its square).
    let method = Method::Langevin { level: NoiseLevel::ve(1e-3), step_size: 0.01, steps: 3000, init_std: 3.0 };
    let n = 65536;
    let config = SamplerConfig { steps_per_dispatch: 1000, ..SamplerConfig::new(n, test_seed()) };
    let (x, _) = run_sampler(&gpu, ScoreSource::Mixture(&target), &method, config);
    for j in 0..2 {
        let col: Vec<f64> = x.iter().skip(j).step_by(2).map(|&v| v as f64).collect();
        let m = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let want_var = std[j] * std[j];
        // 5 standard errors: of the mean std / sqrt(n); of the variance v sqrt(2 / n), plus the
        // chain's known 1% bias.
        let mean_tol = 5.0 * std[j] / (n as f64).sqrt();
        let var_tol = want_var * (5.0 * (2.0 / n as f64).sqrt() + 0.01);
        eprintln!("axis {j}: mean {m:.4} (want {}), variance {var:.4} (want {want_var})", mean[j]);
        assert!((m - mean[j]).abs() < mean_tol, "axis {j}: mean {m} vs {} (tolerance {mean_tol:.4})", mean[j]);
        assert!((var - want_var).abs() < var_tol, "axis {j}: variance {var} vs {want_var} (tolerance {var_tol:.4})");
    }
    let cov = x.chunks(2).map(|p| (p[0] as f64 - mean[0]) * (p[1] as f64 - mean[1])).sum::<f64>() / n as f64;
    let cov_tol = 5.0 * std[0] * std[1] / (n as f64).sqrt();
    assert!(cov.abs() < cov_tol, "covariance {cov} should be 0 (tolerance {cov_tol:.4})");
}

#[test]
fn annealed_langevin_recovers_mixture_weights_where_plain_langevin_does_not() {
    let gpu = gpu();
    // Song & Ermon (2019), section 3.2 and Figure 3: 1/5 N((-5, -5), I) + 4/5 N((5, 5), I),
    // sigmas geometric 20 .. 1 (L = 10), eps = 0.1. With their T = 100 the particles stop
    // hopping between the modes while the noised modes still overlap, and the left share
    // freezes near 0.217 (measured); T = 1000 lets them equilibrate further down (0.1995).
    let mix = GaussianMixture::new(2, vec![0.2, 0.8], vec![-5.0, -5.0, 5.0, 5.0], vec![1.0, 1.0]).unwrap();
    let n = 16384;
    let seed = test_seed();
    let annealed = Method::AnnealedLangevin {
        sigmas: scorefield::objective::geometric_sigmas(20.0, 1.0, 10),
        steps_per_level: 1000,
        eps: 0.1,
        denoise: true,
    };
    let config = SamplerConfig { steps_per_dispatch: 500, ..SamplerConfig::new(n, seed) };
    let (x, _) = run_sampler(&gpu, ScoreSource::Mixture(&mix), &annealed, config);
    let shares = mode_shares(&mix, &x);
    // 5 standard errors of a share: 5 sqrt(0.2 * 0.8 / n) = 0.016.
    let tol = 5.0 * (0.2f64 * 0.8 / n as f64).sqrt();
    eprintln!("annealed Langevin: mode shares {shares:?} (want [0.2, 0.8], tolerance {tol:.4})");
    assert!((shares[0] - 0.2).abs() < tol, "annealed Langevin shares {shares:?}");
    // Plain Langevin at the smallest level from the same start keeps the start's split (about
    // half and half): the modes do not mix, which is why annealing exists. The weight check above
    // must be able to see that.
    let plain = Method::Langevin { level: NoiseLevel::ve(1.0), step_size: 0.1, steps: 1000, init_std: 20.0 };
    let (y, _) = run_sampler(&gpu, ScoreSource::Mixture(&mix), &plain, SamplerConfig::new(n, seed));
    let plain_shares = mode_shares(&mix, &y);
    eprintln!("plain Langevin: mode shares {plain_shares:?}");
    assert!((plain_shares[0] - 0.2).abs() > 10.0 * tol, "plain Langevin should not find the weights");
}

#[test]
fn every_sampler_matches_the_eight_gaussians() {
    let gpu = gpu();
    let mix = GaussianMixture::eight_gaussians();
    let n = 4000;
    let seed = test_seed();
    // Thresholds: tests/common/eight.rs. The methods' own O(step) biases in the spread,
    // measured over 6 seeds, reach +3.9% for the predictor-corrector (its snr-0.16 corrector
    // inflates a Gaussian's variance by 1 / (1 - snr^2) and the predictor's noise adds to it)
    // and, with 1000 steps, -3.7% for the probability-flow ODE under Euler steps (first-order
    // error of a contraction by sigma_max / sigma_min = 1000: ln(1000)^2 / (2 N) = 2.4%, so
    // 2000 steps are used below); the check allows 5%.
    let check = EightGaussiansCheck::new(n, seed, 0.0);
    check.rejects_what_it_must(n, seed);
    let ve = Sde::ve(0.01, 10.0);
    let vp = Sde::vp_default();
    let methods = [
        Method::annealed_langevin(10.0),
        Method::ReverseSde { sde: ve, steps: 1000 },
        Method::ReverseSde { sde: vp, steps: 1000 },
        Method::predictor_corrector(ve),
        Method::PredictorCorrector { sde: vp, steps: 1000, snr: 0.16, corrector_steps: 1 },
        Method::ProbabilityFlow { sde: ve, steps: 2000, heun: false },
        Method::ProbabilityFlow { sde: vp, steps: 200, heun: true },
        Method::ddpm(),
        // Issue #22: the few-step samplers, at 35 (EDM) and 25 (DPM-Solver++) score evaluations.
        Method::edm(0.01, 10.0),
        // Churn at its most (gamma = sqrt 2 - 1 every step) over 18 steps left the spread 3.4-6%
        // wide (0.517-0.530, session 24) against the 5% the check allows, and failed it in 2 of
        // 7 seeds (MMD^2 or the far share); over 40 steps (79 evaluations) gamma is 0.25, and the
        // spread was 1-2% wide in 4 seeds.
        edm(10.0, 40, Churn { s_churn: 10.0, s_tmin: 0.05, s_tmax: 10.0, s_noise: 1.0 }),
        Method::DpmSolver2M { sde: ve, steps: 25 },
        Method::DpmSolver2M { sde: vp, steps: 25 },
    ];
    let mut failures = Vec::new();
    for method in &methods {
        eprintln!("{} {}:", method.name(), method_sde(method));
        let (x, _) = run_sampler(&gpu, ScoreSource::Mixture(&mix), method, SamplerConfig::new(n, seed ^ 12345));
        for problem in check.problems(&x) {
            failures.push(format!("{} {}: {problem}", method.name(), method_sde(method)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn method_sde(method: &Method) -> &'static str {
    match method {
        Method::ReverseSde { sde, .. }
        | Method::PredictorCorrector { sde, .. }
        | Method::ProbabilityFlow { sde, .. }
        | Method::DpmSolver2M { sde, .. } => match sde {
            Sde::Ve { .. } => "VE",
            Sde::Vp { .. } => "VP",
        },
        Method::Edm { churn, .. } if churn.s_churn > 0.0 => "churn",
        _ => "",
    }
}

#[test]
fn recording_everything_into_an_app_encoder_gives_the_same_particles() {
    let gpu = gpu();
    let mix = GaussianMixture::eight_gaussians();
    let method =
        Method::AnnealedLangevin { sigmas: vec![4.0, 1.0, 0.1], steps_per_level: 20, eps: 1e-2, denoise: true };
    let config = || SamplerConfig { steps_per_dispatch: 7, ..SamplerConfig::new(256, 5) };
    let (want, _) = run_sampler(&gpu, ScoreSource::Mixture(&mix), &method, config());
    let mut sampler = pollster::block_on(Sampler::new(&gpu, ScoreSource::Mixture(&mix), &method, config())).unwrap();
    sampler.particles().fill(&gpu, POISON);
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    // "As many as there are" must not overflow: the whole run, then nothing more.
    let recorded = sampler.record(&mut encoder, usize::MAX);
    assert_eq!((recorded, sampler.progress().0), (sampler.progress().1, sampler.progress().1));
    assert_eq!(sampler.record(&mut encoder, usize::MAX), 0);
    gpu.queue().submit([encoder.finish()]);
    let got = pollster::block_on(sampler.read()).unwrap();
    assert_written("particles", &got);
    assert_eq!(got, want);
}

/// The fused path over a long run with many steps per dispatch (1000 steps of annealed Langevin,
/// 50 asked per dispatch: the CLI's default), against the staged path and the f64 reference. The
/// short runs above fit in one dispatch; this one found that llvmpipe ends every loop of an
/// invocation once their iterations together reach 65535 (Mesa gallivm's loop limiter): with
/// the W1 shape (3 x 128, about 2,500 loop iterations a step) the fused path went wrong from 26
/// steps per dispatch up (max error 3-7 against 1.3e-5 for the staged path; 25 and fewer were
/// right, as was a 3 x 64 net at 50). The sampler now caps steps per dispatch on llvmpipe to
/// half that budget; without the cap this test fails (tried).
#[test]
fn a_long_fused_run_matches_the_staged_path_and_the_reference() {
    let gpu = gpu();
    let mut r = TestRng(test_seed());
    let shape = MlpShape::new(2, 3, 128);
    let model = ScoreMlp::new(&gpu, shape, r.next_u64()).unwrap();
    let params: Vec<f64> = pollster::block_on(model.params.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let freqs: Vec<f64> = pollster::block_on(model.freqs.read(&gpu)).unwrap().iter().map(|&v| v as f64).collect();
    let n = 128;
    let method = Method::AnnealedLangevin {
        sigmas: scorefield::objective::geometric_sigmas(3.0, 0.1, 10),
        steps_per_level: 100,
        eps: 1e-3,
        denoise: true,
    };
    let seed = r.next_u64();
    let want = reference_run(&method, seed, n, 2, |x, l| {
        let cond = vec![l.cond as f32 as f64; x.len() / 2];
        let out = mlp::forward(&shape, &params, &mlp::embed(&shape, &freqs, x, &cond));
        out.output().iter().map(|o| o / l.sigma).collect()
    });
    let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: Parametrisation::Score };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for path in [Path::Fused, Path::Staged] {
        let config = SamplerConfig { steps_per_dispatch: 50, ..with_path(SamplerConfig::new(n, seed), path) };
        let (got, fused) = run_sampler(&gpu, source, &method, config);
        assert_eq!(fused, path == Path::Fused);
        let e = sorted_errors(&got, &want);
        eprintln!("long run {path:?}: 99th percentile error {:.2e}, max {:.2e}", e[e.len() * 99 / 100], e[e.len() - 1]);
        results.push(got);
        errors.push(e[e.len() - 1]);
    }
    for (path, max) in [Path::Fused, Path::Staged].iter().zip(errors) {
        // Measured max 0.9e-5..1.7e-5 on both paths over 1000 steps, four seeds (the same
        // ~1e-5 per evaluation as the short runs, not growing: the annealed steps contract);
        // fused vs staged 1.4e-6..2.4e-6.
        assert!(max < 1e-4, "long run {path:?}: max error {max:.2e}");
    }
    let diff = worst(results[0].iter().zip(&results[1]).map(|(&a, &b)| ((a - b).abs() / (1.0 + b.abs())) as f64));
    eprintln!("long run: fused vs staged max difference {diff:.2e}");
    assert!(diff < 1e-5, "fused and staged paths differ by {diff:.2e} after 1000 steps");
}

/// Issue #18: where the adapter ends an invocation's loops past a budget (llvmpipe's 65535
/// iterations, `Tuning::loop_limit`), a mixture score too large for one invocation is refused
/// by name rather than silently cut short, and one that fits is exact on both paths. The budget
/// is set here, so the test means the same on any adapter.
#[test]
fn a_mixture_past_the_loop_budget_is_refused_and_one_within_it_is_exact() {
    use scorefield::gpu::{Tuning, LLVMPIPE_LOOP_ITERATIONS};
    let plain = gpu();
    let gpu = plain.clone().with_tuning(Tuning { loop_limit: Some(LLVMPIPE_LOOP_ITERATIONS), ..plain.tuning() });
    let mut r = TestRng(test_seed());
    let d = 16;
    // About components * (3d + 3) iterations per score: 700 components are 35,700, past half the
    // budget (32,767); 300 are 15,300.
    let mixture = |k: usize, r: &mut TestRng| {
        GaussianMixture::new(
            d,
            vec![1.0 / k as f64; k],
            (0..k * d).map(|_| r.uniform(-3.0, 3.0)).collect(),
            (0..k * d).map(|_| r.uniform(0.5, 1.5)).collect(),
        )
        .unwrap()
    };
    let method = Method::Langevin { level: NoiseLevel::ve(0.5), step_size: 0.05, steps: 4, init_std: 3.0 };
    let big = mixture(700, &mut r);
    for path in [Path::Fused, Path::Staged] {
        let config = with_path(SamplerConfig::new(64, 1), path);
        match pollster::block_on(Sampler::new(&gpu, ScoreSource::Mixture(&big), &method, config)) {
            Err(e) => assert!(e.to_string().contains("loop budget"), "{path:?}: {e}"),
            Ok(_) => panic!("{path:?}: a 700-component mixture in 16 dimensions was accepted under the loop budget"),
        }
    }
    let fits = mixture(300, &mut r);
    let (n, seed) = (64, r.next_u64());
    let want = reference_run(&method, seed, n, d, |x, l| fits.noised_score(x, l.a, l.sigma));
    for path in [Path::Fused, Path::Staged] {
        let (got, _) =
            run_sampler(&gpu, ScoreSource::Mixture(&fits), &method, with_path(SamplerConfig::new(n, seed), path));
        let max = max_err(&got, &want);
        eprintln!("300 components, d = 16, {path:?}: max error {max:.2e}");
        assert!(max < 1e-3, "{path:?}: max error {max:.2e} against the f64 reference");
    }
}

/// A network runs in one invocation only on the fused path: on the staged path the dense-layer
/// kernels evaluate it layer by layer, so no loop budget applies there. A budget too small for
/// one fused evaluation of a small network must refuse the fused path and leave the staged path
/// exact (W4, a 3 x 512 network on llvmpipe, was refused on the staged path before).
#[test]
fn a_network_past_the_loop_budget_samples_staged() {
    let plain = gpu();
    let gpu = plain.clone().with_tuning(Tuning { loop_limit: Some(200), ..plain.tuning() });
    let mut r = TestRng(test_seed());
    let model = ScoreMlp::new(&gpu, MlpShape::new(2, 2, 24), r.next_u64()).unwrap();
    let source = ScoreSource::Network { model: &model, weights: Weights::Raw, parametrisation: Parametrisation::Score };
    let method = Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 4, heun: false };
    let (n, seed) = (64, r.next_u64());
    match pollster::block_on(Sampler::new(&gpu, source, &method, with_path(SamplerConfig::new(n, seed), Path::Fused))) {
        Err(e) => assert!(e.to_string().contains("loop budget"), "fused: {e}"),
        Ok(_) => panic!("the fused path was accepted with a 200-iteration loop budget"),
    }
    let (budgeted, _) = run_sampler(&gpu, source, &method, with_path(SamplerConfig::new(n, seed), Path::Staged));
    let (free, _) = run_sampler(&plain, source, &method, with_path(SamplerConfig::new(n, seed), Path::Staged));
    let same = budgeted.iter().zip(&free).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    assert_eq!(same, free.len(), "staged under the budget: {same} of {} values as without it", free.len());
}
