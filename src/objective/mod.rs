//! The training objectives and their noise schedules.
//!
//! Every objective perturbs a data point x as x~ = a x + sigma eps, eps ~ N(0, I), conditions the
//! network on a scalar c, and minimises the batch mean of 0.5 |r|^2, where
//! - score parametrisation (DSM, NCSN, VE and VP SDE): the network output n = sigma * s(x~) and
//!   r = n + eps. This is lambda(sigma) = sigma^2 weighting: sigma^2 * 0.5 |s + eps/sigma|^2
//!   (Song & Ermon 2019, eq. 6; Song et al. 2021's `get_sde_loss_fn` with
//!   `likelihood_weighting=False`, yang-song/score_sde losses.py, up to its factor 0.5);
//! - eps parametrisation (DDPM, Ho et al. 2020, L_simple): n = eps_theta(x~, t) and r = n - eps.
//!   The score is then -n / sigma.
//!
//! The score-matching objectives (exact, Hyvarinen 2005; sliced, Song et al. 2019) instead learn
//! the score of the (optionally slightly noised) data itself from the network's input Jacobian;
//! see [`Objective::Exact`] and [`Objective::Sliced`], and shaders/objective.wgsl `trace_loss`.

use crate::error::{non_negative, positive, Error, Result};
pub use crate::schedule::NoiseLevel;

pub(crate) mod kernels;

/// objective.wgsl's SCHEDULE codes: discrete levels from the table, or the VE or VP SDE's
/// continuous times.
pub const SCHEDULE_TABLE: u32 = 0;
pub const SCHEDULE_VE: u32 = 1;
pub const SCHEDULE_VP: u32 = 2;

/// objective.wgsl's ESTIMATOR codes: exact score matching, sliced with Gaussian or Rademacher
/// projections.
pub const ESTIMATOR_EXACT: u32 = 0;
pub const ESTIMATOR_GAUSSIAN: u32 = 1;
pub const ESTIMATOR_RADEMACHER: u32 = 2;
use crate::schedule::Sde;
pub(crate) use kernels::ObjectiveKernels;

/// Continuous-time objectives draw t ~ U(T_MIN, 1): `eps=1e-5` in score_sde's
/// `get_sde_loss_fn` (losses.py), which avoids the singular sigma(0) of the VP SDE.
pub const T_MIN: f64 = 1e-5;

/// A training objective with its noise schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// Denoising score matching at one noise level (Vincent 2011).
    Dsm { sigma: f64 },
    /// NCSN: `levels` noise levels geometric from `sigma_max` down to `sigma_min`, one drawn
    /// uniformly per example, lambda(sigma) = sigma^2 (Song & Ermon 2019).
    Ncsn { sigma_max: f64, sigma_min: f64, levels: usize },
    /// DDPM eps-prediction over `steps` discrete steps with betas linear from `beta_min` to
    /// `beta_max` (Ho et al. 2020: 1e-4, 0.02, 1000). Conditioned on t / steps.
    Ddpm { beta_min: f64, beta_max: f64, steps: usize },
    /// Continuous-time VE SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t; conditioned on
    /// log sigma(t) (Song et al. 2021).
    VeSde { sigma_min: f64, sigma_max: f64 },
    /// Continuous-time VP SDE: beta(t) = beta_min + t (beta_max - beta_min) (score_sde defaults
    /// 0.1 and 20); conditioned on t.
    VpSde { beta_min: f64, beta_max: f64 },
    /// Exact score matching (Hyvarinen 2005): J = E_x[tr(grad_x s(x)) + 0.5 |s(x)|^2], the trace
    /// from d forward-mode (tangent) passes along e_1 .. e_d. With `sigma` > 0 the data is first
    /// perturbed by N(0, sigma^2 I) and the score learned is that of the noised data.
    Exact { sigma: f64 },
    /// Sliced score matching (Song et al. 2019, "Sliced Score Matching", eq. 7):
    /// J = E_x E_v[v^T grad_x(v^T s(x)) + 0.5 (v^T s(x))^2] over `projections` directions v per
    /// example; with `variance_reduced` the second term is 0.5 |s(x)|^2 (SSM-VR, eq. 8).
    Sliced { sigma: f64, projections: usize, projection: Projection, variance_reduced: bool },
}

/// The distribution of sliced score matching's projections (ermongroup/sliced_score_matching
/// `losses/sliced_sm.py`: `noise_type` 'gaussian' or 'radermacher' [sic]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    /// v ~ N(0, I).
    Gaussian,
    /// v uniform on {-1, 1}^d (the sign of a standard normal).
    Rademacher,
}

/// The most tangent directions per example: exact score matching's d, or the projections of
/// sliced score matching. Each costs about one more forward and backward pass.
pub const MAX_TANGENTS: usize = 1024;

/// How the network's output relates to the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parametrisation {
    /// output = sigma * score
    Score,
    /// output = predicted noise; score = -output / sigma
    Eps,
}

/// The most noise levels (NCSN) or timesteps (DDPM) a schedule may have: their tables live in
/// host and device memory (score_sde and DDPM use 1000-2000).
pub const MAX_LEVELS: usize = 100_000;

impl Objective {
    /// Checks the settings, naming the offending one.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Objective::Dsm { sigma } => positive("sigma", sigma),
            Objective::Ncsn { sigma_max, sigma_min, levels } => {
                positive("sigma_max", sigma_max)?;
                positive("sigma_min", sigma_min)?;
                if sigma_min >= sigma_max || !(2..=MAX_LEVELS).contains(&levels) {
                    return Err(Error::invalid(
                        "ncsn schedule",
                        format!(
                            "need sigma_min < sigma_max and 2 <= levels <= {MAX_LEVELS} (got {sigma_min}, {sigma_max}, \
                             {levels})"
                        ),
                    ));
                }
                Ok(())
            }
            Objective::Ddpm { beta_min, beta_max, steps } => {
                positive("beta_min", beta_min)?;
                if !(beta_min <= beta_max && beta_max < 1.0 && (2..=MAX_LEVELS).contains(&steps)) {
                    return Err(Error::invalid(
                        "ddpm schedule",
                        format!(
                            "need 0 < beta_min <= beta_max < 1 and 2 <= steps <= {MAX_LEVELS} (got {beta_min}, \
                             {beta_max}, {steps})"
                        ),
                    ));
                }
                Ok(())
            }
            Objective::VeSde { sigma_min, sigma_max } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                if sigma_min >= sigma_max {
                    return Err(Error::invalid(
                        "ve schedule",
                        format!("sigma_min {sigma_min} >= sigma_max {sigma_max}"),
                    ));
                }
                Ok(())
            }
            Objective::VpSde { beta_min, beta_max } => {
                positive("beta_min", beta_min)?;
                positive("beta_max", beta_max)?;
                if beta_min > beta_max {
                    return Err(Error::invalid("vp schedule", format!("beta_min {beta_min} > beta_max {beta_max}")));
                }
                Ok(())
            }
            Objective::Exact { sigma } => non_negative("sigma", sigma),
            Objective::Sliced { sigma, projections, .. } => {
                non_negative("sigma", sigma)?;
                if !(1..=MAX_TANGENTS).contains(&projections) {
                    return Err(Error::invalid(
                        "projections",
                        format!("{projections}; use 1 to {MAX_TANGENTS} projections per example"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Tangent (forward-mode) passes per example: d for exact score matching, the number of
    /// projections for sliced, none for the denoising objectives.
    pub fn tangents(&self, dim: usize) -> usize {
        match *self {
            Objective::Exact { .. } => dim,
            Objective::Sliced { projections, .. } => projections,
            _ => 0,
        }
    }

    /// The level a single-level score model is conditioned on and scaled by: its output is
    /// sigma * score at this level (DSM: its sigma; exact and sliced score matching: their sigma,
    /// or 1 when the data is not noised). None for multi-level objectives.
    pub fn model_level(&self) -> Option<NoiseLevel> {
        match *self {
            Objective::Dsm { sigma } => Some(NoiseLevel::ve(sigma)),
            Objective::Exact { sigma } | Objective::Sliced { sigma, .. } => {
                Some(NoiseLevel::ve(score_matching_scale(sigma)))
            }
            _ => None,
        }
    }

    pub fn parametrisation(&self) -> Parametrisation {
        match self {
            Objective::Ddpm { .. } => Parametrisation::Eps,
            _ => Parametrisation::Score,
        }
    }

    /// The schedule kind the perturb kernel uses (objective.wgsl's SCHEDULE).
    pub fn schedule_kind(&self) -> u32 {
        match self {
            Objective::VeSde { .. } => SCHEDULE_VE,
            Objective::VpSde { .. } => SCHEDULE_VP,
            _ => SCHEDULE_TABLE,
        }
    }

    /// The discrete levels (DSM: one; NCSN: sigma_1 > ... > sigma_L; DDPM: t = 0 .. T-1).
    /// Empty for continuous-time objectives.
    pub fn levels(&self) -> Vec<NoiseLevel> {
        match *self {
            Objective::Dsm { sigma } => vec![NoiseLevel::ve(sigma)],
            Objective::Ncsn { sigma_max, sigma_min, levels } => {
                geometric_sigmas(sigma_max, sigma_min, levels).into_iter().map(NoiseLevel::ve).collect()
            }
            Objective::Ddpm { beta_min, beta_max, steps } => {
                let mut alpha_bar = 1.0;
                (0..steps)
                    .map(|t| {
                        alpha_bar *= 1.0 - ddpm_beta(beta_min, beta_max, steps, t);
                        NoiseLevel {
                            a: alpha_bar.sqrt(),
                            sigma: (1.0 - alpha_bar).sqrt(),
                            cond: t as f64 / steps as f64,
                        }
                    })
                    .collect()
            }
            Objective::VeSde { .. } | Objective::VpSde { .. } => Vec::new(),
            // Noise of `sigma` (possibly none), the network conditioned on its model level.
            Objective::Exact { sigma } | Objective::Sliced { sigma, .. } => {
                vec![NoiseLevel { a: 1.0, sigma, cond: score_matching_scale(sigma).ln() }]
            }
        }
    }

    /// The SDE of a continuous-time objective.
    pub fn sde(&self) -> Option<Sde> {
        match *self {
            Objective::VeSde { sigma_min, sigma_max } => Some(Sde::Ve { sigma_min, sigma_max }),
            Objective::VpSde { beta_min, beta_max } => Some(Sde::Vp { beta_min, beta_max }),
            _ => None,
        }
    }

    /// The perturbation at continuous time t (VE and VP SDEs).
    pub fn at_time(&self, t: f64) -> Option<NoiseLevel> {
        self.sde().map(|sde| sde.marginal(t))
    }
}

/// The scale kappa of a score-matching model (output = kappa * score, conditioned on log kappa):
/// its noise level, or 1 when the data is not noised.
fn score_matching_scale(sigma: f64) -> f64 {
    if sigma > 0.0 {
        sigma
    } else {
        1.0
    }
}

/// beta_t of a linear DDPM schedule, t = 0 .. steps-1.
pub fn ddpm_beta(beta_min: f64, beta_max: f64, steps: usize, t: usize) -> f64 {
    beta_min + (beta_max - beta_min) * t as f64 / (steps - 1) as f64
}

/// `levels` sigmas geometric from `sigma_max` down to `sigma_min` (ncsn's `np.exp(np.linspace(
/// np.log(sigma_begin), np.log(sigma_end), num_classes))`, ermongroup/ncsn).
pub fn geometric_sigmas(sigma_max: f64, sigma_min: f64, levels: usize) -> Vec<f64> {
    if levels == 1 {
        return vec![sigma_max];
    }
    (0..levels)
        .map(|i| (sigma_max.ln() + (sigma_min.ln() - sigma_max.ln()) * i as f64 / (levels - 1) as f64).exp())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The noise-level tables the training step uploads, against their definitions written out
    /// here (the step test's reference reads the same tables, so it cannot check them).
    #[test]
    fn the_noise_tables_match_their_definitions() {
        // NCSN: sigma_i = sigma_max (sigma_min / sigma_max)^(i / (L - 1)), conditioned on ln sigma.
        let (hi, lo, l) = (10.0f64, 0.01f64, 7usize);
        let levels = Objective::Ncsn { sigma_max: hi, sigma_min: lo, levels: l }.levels();
        assert_eq!(levels.len(), l);
        for (i, level) in levels.iter().enumerate() {
            let sigma = hi * (lo / hi).powf(i as f64 / (l - 1) as f64);
            assert!((level.sigma - sigma).abs() < 1e-12 * sigma, "ncsn level {i}: {} vs {sigma}", level.sigma);
            assert!(level.a == 1.0 && (level.cond - sigma.ln()).abs() < 1e-12);
        }
        // DDPM (Ho et al. 2020): beta_t linear in t from 1e-4 to 0.02 over T = 1000, alpha-bar
        // the running product of 1 - beta; a = sqrt(alpha-bar), sigma = sqrt(1 - alpha-bar),
        // conditioned on t / T. alpha-bar at the last step is 4.04e-5 for these betas.
        let steps = 1000;
        let levels = Objective::Ddpm { beta_min: 1e-4, beta_max: 0.02, steps }.levels();
        let mut alpha_bar = 1.0f64;
        for (t, level) in levels.iter().enumerate() {
            alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / 999.0);
            assert!((level.a - alpha_bar.sqrt()).abs() < 1e-12, "ddpm a at {t}");
            assert!((level.sigma - (1.0 - alpha_bar).sqrt()).abs() < 1e-12, "ddpm sigma at {t}");
            assert!((level.cond - t as f64 / steps as f64).abs() < 1e-15);
        }
        assert!((alpha_bar - 4.036e-5).abs() < 1e-8, "alpha-bar at T: {alpha_bar}");
        // The SDEs' marginals (score_sde sde_lib.py marginal_prob): VE sigma(t) = sigma_min
        // (sigma_max / sigma_min)^t; VP mean coefficient exp(-t^2 (b1 - b0) / 4 - t b0 / 2).
        for t in [1e-5, 0.1, 0.5, 0.9, 1.0] {
            let ve = Objective::VeSde { sigma_min: 0.01, sigma_max: 50.0 }.at_time(t).unwrap();
            assert!((ve.sigma - 0.01 * 5000f64.powf(t)).abs() < 1e-12 * ve.sigma && ve.a == 1.0);
            let vp = Objective::VpSde { beta_min: 0.1, beta_max: 20.0 }.at_time(t).unwrap();
            let mean = (-t * t * 19.9 / 4.0 - t * 0.05).exp();
            assert!((vp.a - mean).abs() < 1e-12 && (vp.sigma - (1.0 - mean * mean).sqrt()).abs() < 1e-9);
        }
    }
}
