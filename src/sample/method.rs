//! The samplers as lists of steps. Every sampler here is, per step, one score evaluation at a
//! noise level and an elementwise update x <- c_x x + c_s s + c_z z + c_p p (p: Heun's partial
//! sum), or a Langevin corrector step whose size comes from the particles' mean norms. This file
//! turns each method into that list, with the defaults and update rules of its reference; the
//! kernels (shaders/sample.wgsl) only ever see the list.

use bytemuck::{Pod, Zeroable};

use crate::error::{positive, Error, Result};
use crate::objective::{ddpm_beta, Objective};
use crate::rng::Stream;
use crate::schedule::{NoiseLevel, Sde};

/// Twin of `SampleStep` in shaders/sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SampleStep {
    pub stream: [u32; 2],
    pub flags: u32,
    pub _pad: u32,
    pub a: f32,
    pub sigma: f32,
    pub cond: f32,
    pub out_scale: f32,
    pub c_x: f32,
    pub c_s: f32,
    pub c_z: f32,
    pub c_p: f32,
    pub k_x: f32,
    pub k_s: f32,
    pub snr: f32,
    pub snr_alpha: f32,
}

/// Twin of `SampleCursor` in shaders/sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SampleCursor {
    pub seed: [u32; 2],
    pub first: u32,
    pub count: u32,
}

pub const FLAG_SAVE: u32 = 1;
pub const FLAG_NO_SCORE: u32 = 2;
/// The step weighs the denoised estimate clipped to [-1, 1] by c_s, not the score.
pub const FLAG_CLIP_X0: u32 = 4;
/// After the step, the known coordinates are reset (inpainting; the `impute` kernel).
pub const FLAG_IMPUTE: u32 = 8;

/// A sampling method with its settings. Constructors with the reference defaults are below.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Langevin dynamics at one noise level: x <- x + alpha/2 s(x) + sqrt(alpha) z, from
    /// N(0, init_std^2 I).
    Langevin { level: NoiseLevel, step_size: f64, steps: usize, init_std: f64 },
    /// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for sigma_1 > ... > sigma_L,
    /// `steps_per_level` Langevin steps with alpha_i = eps sigma_i^2 / sigma_L^2, from
    /// N(0, sigma_1^2 I); with `denoise`, a last step x + sigma_L^2 s(x, sigma_L) (Tweedie's
    /// formula; Song & Ermon 2020, Jolicoeur-Martineau et al. 2021).
    AnnealedLangevin { sigmas: Vec<f64>, steps_per_level: usize, eps: f64, denoise: bool },
    /// Reverse-time SDE with Euler-Maruyama steps (score_sde `EulerMaruyamaPredictor`): t from
    /// 1 to the SDE's sampling eps in `steps` steps of dt = -1/steps; the last step adds no noise
    /// (score_sde's `noise_removal`).
    ReverseSde { sde: Sde, steps: usize },
    /// Predictor-corrector (score_sde `pc_sampler`): per time step, `corrector_steps` Langevin
    /// corrector steps with signal-to-noise ratio `snr`, then one reverse-diffusion predictor
    /// step (the SDE's own discretisation run backwards).
    PredictorCorrector { sde: Sde, steps: usize, snr: f64, corrector_steps: usize },
    /// The probability-flow ODE dx/dt = f(x, t) - g(t)^2 / 2 s(x, t), from t = 1 to the SDE's
    /// sampling eps on a uniform grid of `steps` steps, with Euler or Heun (Karras et al. 2022,
    /// Algorithm 1) steps.
    ProbabilityFlow { sde: Sde, steps: usize, heun: bool },
    /// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) over the linear beta schedule of
    /// `Objective::Ddpm`, with sigma_t^2 = beta_t; conditioned on t / steps like its training.
    /// With `clip`, each step goes through the denoised estimate x0 clipped to [-1, 1], the
    /// range of image data: x_{t-1} = c0 clip(x0) + c1 x_t + sigma_t z with the posterior
    /// mean's coefficients c0 = beta_t sqrt(abar_{t-1}) / (1 - abar_t), c1 = (1 - abar_{t-1})
    /// sqrt(alpha_t) / (1 - abar_t) (Ho et al.'s `p_mean_variance` with `clip_denoised`,
    /// diffusion_utils_2.py); without clipping it is the same step.
    Ddpm { beta_min: f64, beta_max: f64, steps: usize, clip: bool },
    /// EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
    /// Models", Algorithm 2; k-diffusion `sample_heun`) for a VE model, whose network is
    /// conditioned on log sigma: `steps` levels sigma_i = (sigma_max^(1/rho) + i / (steps - 1)
    /// (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho and then 0, a Heun step between
    /// neighbouring levels and an Euler step to 0 (2 steps - 1 score evaluations), with the
    /// optional stochastic churn.
    Edm { sigma_min: f64, sigma_max: f64, steps: usize, rho: f64, churn: Churn },
    /// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    /// Diffusion Probabilistic Models", Algorithm 2, the data-prediction multistep form;
    /// k-diffusion `sample_dpmpp_2m`) on an SDE's marginals (VE, VP, and DDPM models through
    /// their VP SDE): `steps - 1` steps from t = 1 to the SDE's sampling eps, uniform in
    /// lambda = log(a / sigma) as Lu et al. advise for small images, the first of first order,
    /// then the denoised estimate at the last time (`steps` score evaluations).
    DpmSolver2M { sde: Sde, steps: usize },
}

/// EDM's stochastic churn (Karras et al. 2022, Algorithm 2): at each level sigma_i in
/// [t_min, t_max], noise of S_noise sqrt(sigma_hat^2 - sigma_i^2) lifts the particles to
/// sigma_hat = (1 + gamma) sigma_i, gamma = min(S_churn / steps, sqrt(2) - 1), before the step.
/// `Churn::NONE` (S_churn = 0) is their deterministic sampler (Algorithm 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Churn {
    pub const NONE: Churn = Churn { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 };

    /// gamma_i of the level `sigma` in a run of `steps` levels.
    fn gamma(&self, sigma: f64, steps: usize) -> f64 {
        match (self.s_tmin..=self.s_tmax).contains(&sigma) {
            true => (self.s_churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0),
            false => 0.0,
        }
    }
}

/// The most steps (score evaluations) one sampler run may plan.
pub const MAX_SAMPLER_STEPS: usize = 1_000_000;

/// One step of a sampler as the host plans it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedStep {
    pub level: NoiseLevel,
    pub step: SampleStep,
    /// This step ends one step of the method (snapshots are taken at these).
    pub boundary: bool,
}

impl Method {
    /// Annealed Langevin with the settings that sample a 2-D mixture well (../shared/
    /// WORKLOADS.md, notes for a default 2-D run): L = 10 sigmas geometric from `sigma_max`
    /// (about the largest distance between modes) to 0.01, T = 100, eps = 1e-4, and the final
    /// denoising step. Song & Ermon (2019) used sigma 1 .. 0.01, T = 100, eps = 2e-5 for images.
    pub fn annealed_langevin(sigma_max: f64) -> Self {
        Method::AnnealedLangevin {
            sigmas: crate::objective::geometric_sigmas(sigma_max, 0.01, 10),
            steps_per_level: 100,
            eps: 1e-4,
            denoise: true,
        }
    }

    /// score_sde's VE predictor-corrector defaults: 1000 steps (`model.num_scales`), snr 0.16,
    /// one corrector step (`configs/ve/*`).
    pub fn predictor_corrector(sde: Sde) -> Self {
        Method::PredictorCorrector { sde, steps: 1000, snr: 0.16, corrector_steps: 1 }
    }

    /// Ho et al. (2020): betas 1e-4 .. 0.02 over 1000 steps.
    pub fn ddpm() -> Self {
        Method::Ddpm { beta_min: 1e-4, beta_max: 0.02, steps: 1000, clip: false }
    }

    /// EDM's deterministic sampler with Karras et al.'s rho = 7 and 18 levels (35 score
    /// evaluations, their CIFAR-10 setting) between a VE model's sigmas.
    pub fn edm(sigma_min: f64, sigma_max: f64) -> Self {
        Method::Edm { sigma_min, sigma_max, steps: 18, rho: 7.0, churn: Churn::NONE }
    }

    /// EDM's levels: `steps` from sigma_max down to sigma_min, spaced by rho, then 0.
    fn edm_sigmas(sigma_min: f64, sigma_max: f64, steps: usize, rho: f64) -> Vec<f64> {
        let (hi, lo) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
        let last = (steps - 1).max(1) as f64;
        (0..steps).map(|i| (hi + i as f64 / last * (lo - hi)).powf(rho)).chain([0.0]).collect()
    }

    /// DPM-Solver++'s times: `count` from 1 down to the SDE's sampling eps, uniform in
    /// lambda = log(a / sigma) (bisection in t: lambda falls monotonically).
    fn lambda_uniform_times(sde: &Sde, count: usize) -> Vec<f64> {
        let lambda = |t: f64| {
            let l = sde.marginal(t);
            (l.a / l.sigma).ln()
        };
        let (t_end, l_start) = (sde.sampling_eps(), lambda(1.0));
        let l_end = lambda(t_end);
        let last = (count - 1).max(1) as f64;
        (0..count)
            .map(|k| {
                let target = l_start + k as f64 / last * (l_end - l_start);
                let (mut lo, mut hi) = (t_end, 1.0);
                for _ in 0..100 {
                    let mid = 0.5 * (lo + hi);
                    if lambda(mid) > target {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                0.5 * (lo + hi)
            })
            .collect()
    }

    /// The method's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Langevin { .. } => "langevin",
            Method::AnnealedLangevin { .. } => "annealed",
            Method::ReverseSde { .. } => "euler-maruyama",
            Method::PredictorCorrector { .. } => "pc",
            Method::ProbabilityFlow { heun: false, .. } => "ode-euler",
            Method::ProbabilityFlow { heun: true, .. } => "ode-heun",
            Method::Ddpm { .. } => "ddpm",
            Method::Edm { .. } => "edm",
            Method::DpmSolver2M { .. } => "dpm-solver++",
        }
    }

    /// Whether some step couples the particles (the corrector's mean norms): such methods run
    /// on the staged path only.
    pub fn couples_particles(&self) -> bool {
        matches!(self, Method::PredictorCorrector { corrector_steps, .. } if *corrector_steps > 0)
    }

    pub fn validate(&self) -> Result<()> {
        // The plan holds every step on the host and the device; bound it before building it.
        let steps = match self {
            Method::Langevin { steps, .. } => *steps as u128,
            Method::AnnealedLangevin { sigmas, steps_per_level, .. } => sigmas.len() as u128 * *steps_per_level as u128,
            Method::ReverseSde { steps, .. } | Method::Ddpm { steps, .. } => *steps as u128,
            Method::PredictorCorrector { steps, corrector_steps, .. } => {
                *steps as u128 * (1 + *corrector_steps as u128)
            }
            Method::ProbabilityFlow { steps, .. } | Method::Edm { steps, .. } => 2 * *steps as u128,
            Method::DpmSolver2M { steps, .. } => *steps as u128,
        };
        if steps > MAX_SAMPLER_STEPS as u128 {
            return Err(Error::invalid(
                "sampler steps",
                format!("{steps} steps in all is more than {MAX_SAMPLER_STEPS}; score_sde's samplers take 1000-2000"),
            ));
        }
        let at_least = |name: &str, v: usize, min: usize| {
            if v >= min {
                Ok(())
            } else {
                Err(Error::invalid(name, format!("{v} must be at least {min}")))
            }
        };
        match self {
            Method::Langevin { level, step_size, steps, init_std } => {
                positive("langevin sigma", level.sigma)?;
                positive("langevin step_size", *step_size)?;
                positive("langevin init_std", *init_std)?;
                at_least("langevin steps", *steps, 1)
            }
            Method::AnnealedLangevin { sigmas, steps_per_level, eps, .. } => {
                positive("annealed eps", *eps)?;
                at_least("annealed steps_per_level", *steps_per_level, 1)?;
                at_least("annealed sigmas (count)", sigmas.len(), 1)?;
                for s in sigmas {
                    positive("annealed sigmas", *s)?;
                }
                if sigmas.windows(2).any(|w| w[1] >= w[0]) {
                    return Err(Error::invalid("annealed sigmas", format!("{sigmas:?} must be strictly decreasing")));
                }
                Ok(())
            }
            Method::ReverseSde { sde, steps } | Method::ProbabilityFlow { sde, steps, .. } => {
                sde.validate()?;
                at_least("sampler steps", *steps, 2)
            }
            Method::PredictorCorrector { sde, steps, snr, .. } => {
                sde.validate()?;
                positive("pc snr", *snr)?;
                at_least("sampler steps", *steps, 2)?;
                // The DDPM chain's betas reach beta_max / N, and sqrt(1 - beta) needs beta < 1.
                if let Sde::Vp { beta_max, .. } = sde {
                    if *beta_max >= *steps as f64 {
                        return Err(Error::invalid(
                            "sampler steps",
                            format!(
                                "{steps} is too few for the VP predictor-corrector: its discrete betas reach \
                                 beta_max / steps = {}, which must stay below 1 (use more than {beta_max} steps)",
                                beta_max / *steps as f64
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Method::Ddpm { beta_min, beta_max, steps, .. } => {
                Objective::Ddpm { beta_min: *beta_min, beta_max: *beta_max, steps: *steps }.validate()
            }
            Method::Edm { sigma_min, sigma_max, steps, rho, churn } => {
                positive("edm sigma_min", *sigma_min)?;
                positive("edm rho", *rho)?;
                crate::error::non_negative("edm churn", churn.s_churn)?;
                positive("edm churn noise", churn.s_noise)?;
                at_least("sampler steps", *steps, 2)?;
                if sigma_max <= sigma_min || churn.s_tmin.is_nan() || churn.s_tmax.is_nan() {
                    return Err(Error::invalid(
                        "edm sigmas",
                        format!(
                            "sigma_max {sigma_max} must exceed sigma_min {sigma_min}, and the churn's range be numbers"
                        ),
                    ));
                }
                Ok(())
            }
            Method::DpmSolver2M { sde, steps } => {
                sde.validate()?;
                at_least("sampler steps", *steps, 2)
            }
        }
    }

    /// The standard deviation of the Gaussian the particles start from.
    pub fn init_std(&self) -> f64 {
        match self {
            Method::Langevin { init_std, .. } => *init_std,
            // Validation refuses an empty list; 1 keeps an unvalidated method from panicking.
            Method::AnnealedLangevin { sigmas, .. } => sigmas.first().copied().unwrap_or(1.0),
            Method::ReverseSde { sde, .. }
            | Method::PredictorCorrector { sde, .. }
            | Method::ProbabilityFlow { sde, .. } => sde.prior_std(),
            Method::Ddpm { .. } => 1.0,
            Method::DpmSolver2M { sde, .. } => sde.prior_std(),
            // N(0, sigma_0^2) lifted by the first level's churn (Algorithm 2, line 5).
            Method::Edm { sigma_max, steps, churn, .. } => {
                let lift = churn.gamma(*sigma_max, *steps) * sigma_max;
                let hat = sigma_max + lift;
                (sigma_max * sigma_max + churn.s_noise.powi(2) * (hat * hat - sigma_max * sigma_max)).sqrt()
            }
        }
    }

    /// The whole run: an initial step drawing x ~ N(0, init_std^2 I), then the method's steps.
    /// Step i (the initial one is 0) draws its noise from stream `SamplerStep.at(i)`, the initial
    /// one from `SamplerInit.at(0)`.
    pub fn plan(&self) -> Result<Vec<PlannedStep>> {
        self.validate()?;
        let mut plan = vec![PlannedStep {
            level: NoiseLevel::ve(1.0),
            step: SampleStep {
                stream: crate::rng::split(Stream::SamplerInit.at(0)),
                flags: FLAG_NO_SCORE,
                c_z: self.init_std() as f32,
                ..Default::default()
            },
            boundary: true,
        }];
        let mut push = |level: NoiseLevel, c: Coefficients, boundary: bool| push_step(&mut plan, level, c, boundary);
        match self {
            Method::Langevin { level, step_size, steps, .. } => {
                for _ in 0..*steps {
                    push(*level, Coefficients::langevin(*step_size), true)?;
                }
            }
            Method::AnnealedLangevin { sigmas, steps_per_level, eps, denoise } => {
                let last = sigmas[sigmas.len() - 1];
                for &sigma in sigmas {
                    let alpha = eps * sigma * sigma / (last * last);
                    for _ in 0..*steps_per_level {
                        push(NoiseLevel::ve(sigma), Coefficients::langevin(alpha), true)?;
                    }
                }
                if *denoise {
                    push(NoiseLevel::ve(last), Coefficients { s: last * last, ..Coefficients::IDENTITY }, true)?;
                }
            }
            Method::ReverseSde { sde, steps } => {
                let n = *steps as f64;
                for (k, t) in sde_times(sde, *steps).enumerate() {
                    // x + (f - g^2 s) dt + g sqrt(-dt) z, dt = -1/N; f = alpha x.
                    let (alpha, g2) = sde.drift_diffusion(t);
                    let last = k + 1 == *steps;
                    let c = Coefficients {
                        x: 1.0 - alpha / n,
                        s: g2 / n,
                        z: if last { 0.0 } else { (g2 / n).sqrt() },
                        ..Coefficients::IDENTITY
                    };
                    push(sde.marginal(t), c, true)?;
                }
            }
            Method::PredictorCorrector { sde, steps, snr, corrector_steps } => {
                for (k, t) in sde_times(sde, *steps).enumerate() {
                    let level = sde.marginal(t);
                    // score_sde LangevinCorrector: alpha = alphas[timestep] for VP, 1 for VE.
                    let snr_alpha = 1.0 - sde.discrete_beta(t, *steps);
                    for _ in 0..*corrector_steps {
                        push(level, Coefficients { snr: *snr, snr_alpha, ..Coefficients::IDENTITY }, false)?;
                    }
                    // ReverseDiffusionPredictor: x - (f - G^2 s) + G z with (f, G) = discretize.
                    let (f, g) = sde.discretize(t, *steps);
                    let last = k + 1 == *steps;
                    let c =
                        Coefficients { x: 1.0 - f, s: g * g, z: if last { 0.0 } else { g }, ..Coefficients::IDENTITY };
                    push(level, c, true)?;
                }
            }
            Method::ProbabilityFlow { sde, steps, heun } => {
                let t_end = sde.sampling_eps();
                let time = |k: usize| 1.0 + (t_end - 1.0) * k as f64 / *steps as f64;
                for k in 0..*steps {
                    let (t, t_next) = (time(k), time(k + 1));
                    let h = t_next - t;
                    // d(x, t) = alpha x + beta s with beta = -g^2 / 2.
                    let (alpha, g2) = sde.drift_diffusion(t);
                    let beta = -0.5 * g2;
                    let euler = Coefficients { x: 1.0 + h * alpha, s: h * beta, ..Coefficients::IDENTITY };
                    if !*heun {
                        push(sde.marginal(t), euler, true)?;
                        continue;
                    }
                    // Heun: x~ = x + h d(x, t); x' = x + h/2 (d(x, t) + d(x~, t')). The first
                    // evaluation moves to x~ and keeps p = x + h/2 d(x, t); the second adds
                    // h/2 d(x~, t') to p.
                    let (alpha2, g2_next) = sde.drift_diffusion(t_next);
                    let predict =
                        Coefficients { k_x: 1.0 + 0.5 * h * alpha, k_s: 0.5 * h * beta, flags: FLAG_SAVE, ..euler };
                    push(sde.marginal(t), predict, false)?;
                    let correct = Coefficients {
                        x: 0.5 * h * alpha2,
                        s: 0.5 * h * -0.5 * g2_next,
                        p: 1.0,
                        ..Coefficients::IDENTITY
                    };
                    push(sde.marginal(t_next), correct, true)?;
                }
            }
            Method::Ddpm { beta_min, beta_max, steps, clip } => {
                let levels = Objective::Ddpm { beta_min: *beta_min, beta_max: *beta_max, steps: *steps }.levels();
                for t in (0..*steps).rev() {
                    let beta = ddpm_beta(*beta_min, *beta_max, *steps, t);
                    let root_alpha = (1.0 - beta).sqrt();
                    let z = if t == 0 { 0.0 } else { beta.sqrt() };
                    let c = if *clip {
                        // x_{t-1} = c0 clip(x0) + c1 x_t + sigma_t z.
                        let abar = levels[t].a * levels[t].a;
                        let abar_prev = if t == 0 { 1.0 } else { levels[t - 1].a * levels[t - 1].a };
                        Coefficients {
                            x: (1.0 - abar_prev) * root_alpha / (1.0 - abar),
                            s: beta * abar_prev.sqrt() / (1.0 - abar),
                            z,
                            flags: FLAG_CLIP_X0,
                            ..Coefficients::IDENTITY
                        }
                    } else {
                        // x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z,
                        // and eps = -sqrt(1 - abar_t) s.
                        Coefficients { x: 1.0 / root_alpha, s: beta / root_alpha, z, ..Coefficients::IDENTITY }
                    };
                    push(levels[t], c, true)?;
                }
            }
            Method::Edm { sigma_min, sigma_max, steps, rho, churn } => {
                edm_steps(&mut push, *sigma_min, *sigma_max, *steps, *rho, churn)?
            }
            Method::DpmSolver2M { sde, steps } => dpm_solver_steps(&mut push, sde, *steps)?,
        }
        Ok(plan)
    }
}

/// EDM's steps (see [`Method::Edm`]) through `push`.
fn edm_steps(
    push: &mut impl FnMut(NoiseLevel, Coefficients, bool) -> Result<()>,
    sigma_min: f64,
    sigma_max: f64,
    steps: usize,
    rho: f64,
    churn: &Churn,
) -> Result<()> {
    // Per level i, from x_hat at sigma_hat = (1 + gamma_i) sigma_i (the churn noise
    // that lifts x_i there is added by the step before, or the initial draw):
    // d = (x_hat - D(x_hat)) / sigma_hat = -sigma_hat s with D = x + sigma^2 s, and
    // h = sigma_{i+1} - sigma_hat. Euler: x~ = x_hat + h d. Heun, where
    // sigma_{i+1} > 0: x_{i+1} = x_hat + h/2 (d + d(x~, sigma_{i+1})), as
    // ProbabilityFlow's Heun: the first evaluation keeps p = x_hat + h/2 d.
    let sigmas = Method::edm_sigmas(sigma_min, sigma_max, steps, rho);
    let hat = |i: usize| sigmas[i] * (1.0 + churn.gamma(sigmas[i], steps));
    for i in 0..steps {
        let (sigma_hat, next) = (hat(i), sigmas[i + 1]);
        let h = next - sigma_hat;
        let euler = Coefficients { s: -h * sigma_hat, ..Coefficients::IDENTITY };
        if next == 0.0 {
            push(NoiseLevel::ve(sigma_hat), euler, true)?;
            continue;
        }
        let predict = Coefficients { k_x: 1.0, k_s: -0.5 * h * sigma_hat, flags: FLAG_SAVE, ..euler };
        push(NoiseLevel::ve(sigma_hat), predict, false)?;
        // The churn of the next level: S_noise sqrt(sigma_hat'^2 - sigma'^2) z.
        let lift = (hat(i + 1).powi(2) - next * next).max(0.0).sqrt();
        let correct =
            Coefficients { x: 0.0, s: -0.5 * h * next, p: 1.0, z: churn.s_noise * lift, ..Coefficients::IDENTITY };
        push(NoiseLevel::ve(next), correct, true)?;
    }
    Ok(())
}

/// DPM-Solver++(2M)'s steps (see [`Method::DpmSolver2M`]) through `push`.
fn dpm_solver_steps(
    push: &mut impl FnMut(NoiseLevel, Coefficients, bool) -> Result<()>,
    sde: &Sde,
    steps: usize,
) -> Result<()> {
    // At x_{i-1} (level l = (a, sigma) at t_{i-1}): the denoised estimate
    // D = (x + sigma^2 s) / a; with h_i = lambda_i - lambda_{i-1} and
    // A = a_i (1 - e^{-h_i}), x_i = (sigma_i / sigma_{i-1}) x + A D_i, where D_i = D
    // (first step) or (1 + 1/(2 r)) D - 1/(2 r) D_prev with r = h_{i-1} / h_i. D_prev
    // is the partial sum p, saved by each step for the next.
    let times = Method::lambda_uniform_times(sde, steps);
    let levels: Vec<NoiseLevel> = times.iter().map(|&t| sde.marginal(t)).collect();
    let lambda = |l: &NoiseLevel| (l.a / l.sigma).ln();
    for i in 1..levels.len() {
        let (here, next) = (levels[i - 1], levels[i]);
        let h = lambda(&next) - lambda(&here);
        let big_a = next.a * -(-h).exp_m1();
        let (w, w_prev) = match i {
            1 => (1.0, 0.0),
            _ => {
                let r = (lambda(&here) - lambda(&levels[i - 2])) / h;
                (1.0 + 0.5 / r, -0.5 / r)
            }
        };
        let c = Coefficients {
            x: next.sigma / here.sigma + big_a * w / here.a,
            s: big_a * w * here.sigma * here.sigma / here.a,
            p: big_a * w_prev,
            k_x: 1.0 / here.a,
            k_s: here.sigma * here.sigma / here.a,
            flags: FLAG_SAVE,
            ..Coefficients::IDENTITY
        };
        push(here, c, true)?;
    }
    // The denoised estimate at the last time (Lu et al.'s `denoise_to_zero`).
    let last = levels[levels.len() - 1];
    let c = Coefficients { x: 1.0 / last.a, s: last.sigma * last.sigma / last.a, ..Coefficients::IDENTITY };
    push(last, c, true)?;
    Ok(())
}

/// Appends step `plan.len()` with its own noise stream.
fn push_step(plan: &mut Vec<PlannedStep>, level: NoiseLevel, c: Coefficients, boundary: bool) -> Result<()> {
    let i = u32::try_from(plan.len()).map_err(|_| Error::invalid("sampler", "more than 2^32 steps"))?;
    plan.push(PlannedStep {
        level,
        step: SampleStep {
            stream: crate::rng::split(Stream::SamplerStep.at(i)),
            flags: c.flags,
            a: level.a as f32,
            sigma: level.sigma as f32,
            cond: level.cond as f32,
            out_scale: 1.0,
            c_x: c.x as f32,
            c_s: c.s as f32,
            c_z: c.z as f32,
            c_p: c.p as f32,
            k_x: c.k_x as f32,
            k_s: c.k_s as f32,
            snr: c.snr as f32,
            snr_alpha: c.snr_alpha as f32,
            _pad: 0,
        },
        boundary,
    });
    Ok(())
}

/// The times of score_sde's samplers: `torch.linspace(sde.T, eps, sde.N)`.
fn sde_times(sde: &Sde, steps: usize) -> impl Iterator<Item = f64> {
    let eps = sde.sampling_eps();
    (0..steps).map(move |k| 1.0 + (eps - 1.0) * k as f64 / (steps - 1) as f64)
}

/// The coefficients of one step, in f64 until they go to the device.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    x: f64,
    s: f64,
    z: f64,
    p: f64,
    k_x: f64,
    k_s: f64,
    snr: f64,
    snr_alpha: f64,
    flags: u32,
}

impl Coefficients {
    const IDENTITY: Self =
        Self { x: 1.0, s: 0.0, z: 0.0, p: 0.0, k_x: 0.0, k_s: 0.0, snr: 0.0, snr_alpha: 1.0, flags: 0 };

    fn langevin(alpha: f64) -> Self {
        Self { s: 0.5 * alpha, z: alpha.sqrt(), ..Self::IDENTITY }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_planned_coefficient_is_finite() {
        let methods = [
            Method::annealed_langevin(4.0),
            Method::ReverseSde { sde: Sde::vp_default(), steps: 3 },
            Method::predictor_corrector(Sde::ve(0.01, 50.0)),
            Method::PredictorCorrector { sde: Sde::vp_default(), steps: 21, snr: 0.16, corrector_steps: 1 },
            Method::ProbabilityFlow { sde: Sde::vp_default(), steps: 3, heun: true },
            Method::ddpm(),
        ];
        for m in methods {
            for p in m.plan().unwrap() {
                let s = p.step;
                let c = [s.c_x, s.c_s, s.c_z, s.c_p, s.k_x, s.k_s, s.snr, s.snr_alpha, s.a, s.sigma, s.cond];
                assert!(c.iter().all(|v| v.is_finite()), "{}: {s:?}", m.name());
            }
        }
    }

    #[test]
    fn vp_predictor_corrector_with_too_few_steps_is_refused() {
        let m = Method::PredictorCorrector { sde: Sde::vp_default(), steps: 20, snr: 0.16, corrector_steps: 1 };
        let err = m.plan().unwrap_err().to_string();
        assert!(err.contains("sampler steps") && err.contains("beta_max / steps"), "{err}");
    }

    /// Where nothing is clipped, the clipped DDPM step (posterior mean through x0) is the plain
    /// one: c0 x0 + c1 x_t = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) for
    /// x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), at every t; the noise is the same.
    #[test]
    fn the_clipped_ddpm_step_is_the_plain_one_inside_the_range() {
        let (beta_min, beta_max, steps) = (1e-4, 0.02, 1000);
        let plain = Method::Ddpm { beta_min, beta_max, steps, clip: false }.plan().unwrap();
        let clipped = Method::Ddpm { beta_min, beta_max, steps, clip: true }.plan().unwrap();
        for (p, c) in plain.iter().zip(&clipped).skip(1) {
            let (a, sigma) = (c.level.a, c.level.sigma);
            // An x_t and eps whose x0 lies inside [-1, 1].
            let (x0, eps) = (0.3f64, -0.7f64);
            let x = a * x0 + sigma * eps;
            let score = -eps / sigma;
            let (ps, cs) = (&p.step, &c.step);
            let via_score = ps.c_x as f64 * x + ps.c_s as f64 * score;
            let denoised = (x + sigma * sigma * score) / a;
            let via_x0 = cs.c_x as f64 * x + cs.c_s as f64 * denoised;
            assert!((via_score - via_x0).abs() < 1e-5 * (1.0 + via_score.abs()), "a {a}: {via_score} vs {via_x0}");
            assert_eq!((ps.c_z, cs.flags), (cs.c_z, FLAG_CLIP_X0));
        }
    }
}
