//! The SDEs of Song et al. (2021), "Score-Based Generative Modeling through Stochastic
//! Differential Equations", as in yang-song/score_sde `sde_lib.py`: their marginals, drift and
//! diffusion, and the discretisations the samplers step with.

use crate::error::{Error, Result};

/// A forward noising SDE on t in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sde {
    /// Variance exploding: dx = sqrt(d sigma(t)^2 / dt) dw with
    /// sigma(t) = sigma_min (sigma_max / sigma_min)^t (`VESDE`).
    Ve { sigma_min: f64, sigma_max: f64 },
    /// Variance preserving: dx = -beta(t)/2 x dt + sqrt(beta(t)) dw with
    /// beta(t) = beta_min + t (beta_max - beta_min) (`VPSDE`).
    Vp { beta_min: f64, beta_max: f64 },
}

/// Where a noise level sits: x~ = a x + sigma eps, and the network's conditioning value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseLevel {
    pub a: f64,
    pub sigma: f64,
    pub cond: f64,
}

impl NoiseLevel {
    /// A VE level (a = 1), conditioned on log sigma as the NCSN and VE models are.
    pub fn ve(sigma: f64) -> Self {
        Self { a: 1.0, sigma, cond: sigma.ln() }
    }
}

impl Sde {
    /// score_sde's defaults: VE sigma 0.01 .. 50 is for images; here sigma_max comes from the
    /// data (the largest distance between points, Song & Ermon 2020, technique 1).
    pub fn ve(sigma_min: f64, sigma_max: f64) -> Self {
        Sde::Ve { sigma_min, sigma_max }
    }

    /// score_sde's VP defaults: beta_min 0.1, beta_max 20 (`configs/default_*_configs.py`).
    pub fn vp_default() -> Self {
        Sde::Vp { beta_min: 0.1, beta_max: 20.0 }
    }

    pub fn validate(&self) -> Result<()> {
        let (name, lo, hi) = match *self {
            Sde::Ve { sigma_min, sigma_max } => ("ve sde sigma_min, sigma_max", sigma_min, sigma_max),
            Sde::Vp { beta_min, beta_max } => ("vp sde beta_min, beta_max", beta_min, beta_max),
        };
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi) {
            return Err(Error::invalid(name, format!("({lo}, {hi}) must be positive, finite and increasing")));
        }
        Ok(())
    }

    /// The perturbation kernel p_t(x~ | x) = N(a x, sigma^2 I) and the conditioning value the
    /// models of this SDE take (log sigma for VE, t for VP): `marginal_prob` in sde_lib.py.
    pub fn marginal(&self, t: f64) -> NoiseLevel {
        match *self {
            Sde::Ve { sigma_min, sigma_max } => NoiseLevel::ve(sigma_min * (sigma_max / sigma_min).powf(t)),
            Sde::Vp { beta_min, beta_max } => {
                let log_mean = -0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min;
                NoiseLevel { a: log_mean.exp(), sigma: (-(2.0 * log_mean).exp_m1()).sqrt(), cond: t }
            }
        }
    }

    /// The drift f(x, t) = alpha(t) x and squared diffusion g(t)^2, as (alpha, g^2).
    pub fn drift_diffusion(&self, t: f64) -> (f64, f64) {
        match *self {
            Sde::Ve { sigma_min, sigma_max } => {
                let sigma = self.marginal(t).sigma;
                (0.0, sigma * sigma * 2.0 * (sigma_max / sigma_min).ln())
            }
            Sde::Vp { beta_min, beta_max } => {
                let beta = beta_min + t * (beta_max - beta_min);
                (-0.5 * beta, beta)
            }
        }
    }

    /// The standard deviation of the prior at t = 1 that sampling starts from (`prior_sampling`):
    /// sigma_max for VE, 1 for VP.
    pub fn prior_std(&self) -> f64 {
        match *self {
            Sde::Ve { sigma_max, .. } => sigma_max,
            Sde::Vp { .. } => 1.0,
        }
    }

    /// The smallest time sampling goes down to: score_sde's `sampling.eps`, 1e-5 for VE and
    /// 1e-3 for VP (`run_lib.py`), where the VP marginal is not yet degenerate.
    pub fn sampling_eps(&self) -> f64 {
        match self {
            Sde::Ve { .. } => 1e-5,
            Sde::Vp { .. } => 1e-3,
        }
    }

    /// The N-step discretisation at t (`discretize` of VESDE / VPSDE): x_{i+1} = (1 + f) x + G z
    /// read as (f as a multiple of x, G), with timestep i = floor(t (N - 1)).
    /// VE: the SMLD chain, f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2) over sigmas geometric from
    /// sigma_min to sigma_max (sigma_{-1} = 0). VP: the DDPM chain, f = sqrt(1 - beta_i) - 1,
    /// G = sqrt(beta_i), betas linear from beta_min / N to beta_max / N.
    pub fn discretize(&self, t: f64, n: usize) -> (f64, f64) {
        let i = (t * (n - 1) as f64).floor() as usize;
        match *self {
            Sde::Ve { sigma_min, sigma_max } => {
                let sigma_at = |i: usize| sigma_min * (sigma_max / sigma_min).powf(i as f64 / (n - 1) as f64);
                let prev = if i == 0 { 0.0 } else { sigma_at(i - 1) };
                (0.0, (sigma_at(i).powi(2) - prev * prev).sqrt())
            }
            Sde::Vp { .. } => {
                let beta = self.discrete_beta(t, n);
                ((1.0 - beta).sqrt() - 1.0, beta.sqrt())
            }
        }
    }

    /// beta_i of the VP DDPM chain at timestep floor(t (N - 1)); 0 for VE.
    pub fn discrete_beta(&self, t: f64, n: usize) -> f64 {
        match *self {
            Sde::Ve { .. } => 0.0,
            Sde::Vp { beta_min, beta_max } => {
                let i = (t * (n - 1) as f64).floor();
                let (b0, b1) = (beta_min / n as f64, beta_max / n as f64);
                b0 + (b1 - b0) * i / (n - 1) as f64
            }
        }
    }
}
