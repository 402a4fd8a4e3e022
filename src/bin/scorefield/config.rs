//! The run config: a TOML file (every key optional, unknown keys rejected), with command-line
//! overrides applied on top. The defaults are the main job: the W1 network on the eight
//! Gaussians, sampled with annealed Langevin.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use scorefield::data::{Dataset, DensityImage, ImageSet};
use scorefield::mixture::GaussianMixture;
use scorefield::model::MlpShape;
use scorefield::objective::{Objective, Projection};
use scorefield::optim::{AdamConfig, LrSchedule};
use scorefield::sample::{Churn, Classes, Method};
use scorefield::schedule::{NoiseLevel, Sde};
use scorefield::train::{LossWeight, NonFinite, TrainConfig};

/// The most training points, batch rows or particles a config may ask for.
const MAX_POINTS: usize = 1 << 26;

/// A run config resolved once ([`RunConfig::resolve`]): what every command reads from it.
pub struct Run {
    pub config: RunConfig,
    pub dataset: Dataset,
    pub objective: Objective,
    pub train: TrainConfig,
    pub method: Method,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub objective: ObjectiveConfig,
    pub train: TrainSettings,
    pub sample: SampleConfig,
    pub device: DeviceConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// A part of the adapter's name (`scorefield info` lists them); empty: the best adapter, or
    /// WGPU_ADAPTER_NAME.
    pub adapter: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A built-in name (a 2-D toy or "digits"), "mixture" with the three lists below, "density"
    /// with `path` a PNG, or "images" with `path` a folder of PNGs.
    pub dataset: String,
    /// Training points drawn from the dataset (image sets train on all their images).
    pub points: usize,
    /// The PNG of a density, or the folder of an image set.
    pub path: String,
    /// For a density: dark pixels are dense (a drawing in black on white).
    pub invert: bool,
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    /// One std per component (isotropic) or one list per component (diagonal).
    pub stds: Vec<StdSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StdSpec {
    Isotropic(f64),
    Diagonal(Vec<f64>),
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "eight-gaussians".into(),
            points: 65536,
            path: String::new(),
            invert: false,
            weights: vec![],
            means: vec![],
            stds: vec![],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub hidden_layers: usize,
    pub width: usize,
    /// The noise embedding fed to every layer and skip connections (model.rs).
    pub residual: bool,
    /// Class-conditional: the network also takes each point's class (the dataset's labels: the
    /// digits, a mixture's components), dropped with probability train.class_drop, for
    /// classifier-free guidance.
    pub conditional: bool,
}

impl Default for ModelConfig {
    /// W1 (../shared/WORKLOADS.md).
    fn default() -> Self {
        Self { hidden_layers: 3, width: 128, residual: false, conditional: false }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// "dsm", "ncsn", "ddpm", "ve", "vp", "exact", "sliced" or "sliced-vr".
    pub kind: String,
    /// dsm: its noise level; exact, sliced, sliced-vr: the data's noise level, 0 for none.
    pub sigma: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub levels: usize,
    /// vp: the SDE's beta(t) range, default 0.1 to 20 (score_sde `configs/vp`); ddpm: the
    /// discrete betas, default 1e-4 to 0.02 (Ho et al. 2020). Unset: the objective's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_max: Option<f64>,
    /// ddpm: the number of discrete steps T (Ho et al. 2020: 1000).
    pub steps: usize,
    /// sliced, sliced-vr: projections per example (ermongroup/sliced_score_matching: 1).
    pub projections: usize,
    /// sliced, sliced-vr: "gaussian" or "rademacher" projections (ermongroup/sliced_score_matching
    /// `sliced_VR_score_matching`: gaussian).
    pub projection: String,
}

impl Default for ObjectiveConfig {
    /// NCSN over L = 10 levels from sigma_max = 10 (about the largest distance between the
    /// eight Gaussians' modes: Song & Ermon 2020, technique 1; WORKLOADS.md notes) to
    /// sigma_min = 0.1. Not 0.01: in a short run the smallest levels are barely learned (at
    /// sigma = 0.01 the optimal loss is 99% irreducible noise, so their gradient signal is
    /// tiny), and 0.1 with the final Tweedie step already ends within 2% of the data's
    /// spread with the exact score (0.489 for 0.5; 0.05: 0.500). Measured with the main job's
    /// training, 4096 samples: sigma_min 0.01 left the modes 18% too wide, 0.05 2.4-4.4%, 0.1
    /// 1.4%.
    fn default() -> Self {
        Self {
            kind: "ncsn".into(),
            sigma: 0.1,
            sigma_min: 0.1,
            sigma_max: 10.0,
            levels: 10,
            beta_min: None,
            beta_max: None,
            steps: 1000,
            projections: 1,
            projection: "gaussian".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    /// "constant", or "cosine" (decay to 0 over `steps`; a resumed run with more steps
    /// stretches the rest of the curve).
    pub lr_schedule: String,
    pub ema_decay: f64,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub steps_per_submit: usize,
    /// When the loss, a gradient or a parameter turns NaN or infinite, the last healthy state
    /// (kept on the device, refreshed at every logged step) is restored, and then: "backoff"
    /// continues with a tenth of the learning rate, at most three times; "stop" ends the run
    /// with a message, the checkpoint holding the healthy state.
    pub on_nonfinite: String,
    /// The Min-SNR-gamma loss weight min(SNR, gamma) / SNR per example (Hang et al. 2023: 5);
    /// 0: every example weighs 1.
    pub min_snr: f64,
    /// A conditional model: the probability that an example's class is dropped, so that the
    /// network learns the unconditional score too (Ho & Salimans 2022: 0.1-0.2).
    pub class_drop: f64,
}

impl Default for TrainSettings {
    /// The main job's training: 16000 steps at batch 128 with Adam at a peak lr of 3e-3 and a
    /// cosine decay, EMA 0.999 (under 3 minutes on lavapipe). Chosen by measurement on a
    /// budget of minutes, 4096 samples each, against the modes' per-axis spread of 0.5
    /// (tests/cli.rs has the full check): with a constant lr, 3500 x 512 left the modes 24%
    /// too wide at lr 3e-3 (22% at 6e-3, a ring at 1e-3) and 1000 x 2048 75% (steps matter
    /// more than batch); with the cosine decay (and sigma_min 0.05) 3500 x 512 +19%,
    /// 6000 x 256 +4.6%, 9000 x 256 +2.4%, 12000 x 128 +4.4%, and with sigma_min 0.1,
    /// 9000 x 256 +1.0%, 12000 x 128 +1.4%, 16000 x 128 +0.4%, the worst mode weight then off
    /// by 0.025, 0.018 and 0.012 (0.026 is the check's tolerance). WORKLOADS.md's reference
    /// needed ~10k steps at batch 4096 at a constant 1e-3.
    fn default() -> Self {
        Self {
            steps: 16000,
            batch: 128,
            lr: 3e-3,
            lr_schedule: "cosine".into(),
            ema_decay: 0.999,
            seed: 0,
            log_every: 50,
            checkpoint_every: 1000,
            steps_per_submit: 25,
            on_nonfinite: "backoff".into(),
            min_snr: 0.0,
            class_drop: 0.1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// "auto" (the objective's own, see [`RunConfig::sampler`]), "langevin", "annealed",
    /// "euler-maruyama", "pc", "ode-euler", "ode-heun", "rk45", "ddpm", "edm" or "dpm-solver++".
    pub sampler: String,
    pub particles: usize,
    pub seed: u64,
    /// Sampler steps: per level for annealed Langevin, in total for the others. Unset: 100
    /// for annealed Langevin and Langevin, 1000 for the SDE and ODE samplers (score_sde's N),
    /// 18 levels for edm (35 score evaluations), 25 for dpm-solver++; ddpm takes the
    /// objective's steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Annealed Langevin's eps, or Langevin's step size.
    pub step_size: f64,
    /// Predictor-corrector's signal-to-noise ratio.
    pub snr: f64,
    /// Sample with the EMA weights (the raw weights stay noisy under constant-lr Adam).
    pub ema: bool,
    /// Snapshots for the animation: every this many sampler steps (0: none).
    pub snapshot_every: usize,
    /// The noise levels of score_field.png (2-D data, VE-type models); empty: 4 (or sigma_max
    /// if smaller), 1 and 0.1.
    pub field_sigmas: Vec<f64>,
    /// The ddpm sampler: each step through the denoised estimate clipped to [-1, 1], the range
    /// of image data (Ho et al.'s `clip_denoised`).
    pub clip: bool,
    /// The edm sampler's spacing of levels (Karras et al.: 7) and its stochastic churn:
    /// S_churn (0: deterministic), applied at levels in [churn_tmin, churn_tmax], with noise
    /// scaled by churn_noise (S_noise).
    pub rho: f64,
    pub churn: f64,
    pub churn_tmin: f64,
    pub churn_tmax: f64,
    pub churn_noise: f64,
    /// A conditional model's class: a number, "all" (the particles in one block per class) or
    /// "none" (the unconditional score); required for a conditional model, refused otherwise.
    pub class: String,
    /// Classifier-free guidance weight w: (1 + w) s(x | class) - w s(x); 0 samples the
    /// conditional score as learned.
    pub guidance: f64,
}

impl Default for SampleConfig {
    /// The objective's own sampler. For the default NCSN: annealed Langevin with alpha_i =
    /// eps sigma_i^2 / sigma_L^2, eps = 0.01 (alpha_i = sigma_i^2 for sigma_L = 0.1, the step
    /// WORKLOADS.md notes found right for mode weights and spread with the exact score; 3x that
    /// diverged with a learned one), T = 100, over the objective's own levels. Keep eps =
    /// sigma_min^2 when changing sigma_min.
    fn default() -> Self {
        Self {
            sampler: "auto".into(),
            particles: 2048,
            seed: 1,
            steps: None,
            step_size: 1e-2,
            snr: 0.16,
            ema: true,
            snapshot_every: 20,
            field_sigmas: vec![],
            clip: false,
            rho: 7.0,
            churn: 0.0,
            churn_tmin: 0.0,
            churn_tmax: f64::INFINITY,
            churn_noise: 1.0,
            class: String::new(),
            guidance: 0.0,
        }
    }
}

impl RunConfig {
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            // serde names the field only in some messages; the span says where it is.
            let key = e.span().and_then(|span| key_at(text, span.start));
            match key {
                Some(key) => anyhow::anyhow!("{key}: {e}"),
                None => e.into(),
            }
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    pub fn dataset(&self) -> Result<Dataset> {
        let d = &self.data;
        let path = std::path::Path::new(&d.path);
        match d.dataset.as_str() {
            "mixture" if d.weights.is_empty() => {
                bail!("data.dataset = \"mixture\" needs data.weights, data.means and data.stds")
            }
            "mixture" => {}
            "density" => {
                let bytes = read_data_file(path)?;
                let density = DensityImage::from_png(&bytes, d.invert)
                    .with_context(|| format!("data.path = {}", path.display()))?;
                return Ok(Dataset::Density(density));
            }
            "images" => return Ok(Dataset::Images(read_image_folder(path)?)),
            name => return Ok(Dataset::from_name(name)?),
        }
        let dim = d.means.first().map(|m| m.len()).unwrap_or(0);
        if let Some((i, m)) = d.means.iter().enumerate().find(|(_, m)| m.len() != dim) {
            bail!("data.means[{i}] has {} numbers, data.means[0] has {dim}", m.len());
        }
        let mut stds = Vec::new();
        for (i, s) in d.stds.iter().enumerate() {
            match s {
                StdSpec::Isotropic(v) => stds.extend(std::iter::repeat_n(*v, dim)),
                StdSpec::Diagonal(v) if v.len() == dim => stds.extend_from_slice(v),
                StdSpec::Diagonal(v) => bail!("data.stds[{i}] has {} numbers; give one or {dim}", v.len()),
            }
        }
        let mixture = GaussianMixture::new(dim, d.weights.clone(), d.means.concat(), stds)
            .context("data.weights, data.means and data.stds do not make a mixture")?;
        Ok(Dataset::Mixture(mixture))
    }

    fn lr_schedule(&self) -> Result<LrSchedule> {
        Ok(match self.train.lr_schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { steps: self.train.steps },
            other => bail!("train.lr_schedule = \"{other}\"; choose constant or cosine"),
        })
    }

    /// The config resolved once, every check a run makes made up front (so a bad sampler
    /// setting is not found after minutes of training): the dataset read (an image folder's
    /// files once), the objective, the training config and the sampler. Each error names its
    /// key. With `exact_score` the sampler draws from the dataset's exact score, which any
    /// sampler can use, rather than from a network trained with the objective.
    pub fn resolve(self, exact_score: bool) -> Result<Run> {
        let dataset = self.dataset()?;
        // Host memory bounds, before anything is drawn or allocated (the device's own limits
        // are checked when the buffers are made).
        if !(1..=MAX_POINTS).contains(&self.data.points) {
            bail!("data.points = {}; draw between 1 and {MAX_POINTS} training points", self.data.points);
        }
        if self.train.batch > MAX_POINTS {
            bail!("train.batch = {} is more than {MAX_POINTS}", self.train.batch);
        }
        let train = self.train_config(&dataset)?;
        let method = if exact_score { self.exact_method()? } else { self.method()? };
        if !(1..=MAX_POINTS).contains(&self.sample.particles) {
            bail!("sample.particles = {}; ask for between 1 and {MAX_POINTS}", self.sample.particles);
        }
        if let Some(bad) = self.sample.field_sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("sample.field_sigmas holds {bad}; every noise level must be a positive number");
        }
        let objective = train.objective.clone();
        Ok(Run { config: self, dataset, objective, train, method })
    }

    /// The classes to sample a network of `classes` classes with (0: unconditional), from
    /// sample.class and sample.guidance; None for an unconditional network.
    pub fn sample_classes(&self, classes: usize, particles: usize) -> Result<Option<Classes>> {
        let (class, guidance) = (self.sample.class.as_str(), self.sample.guidance);
        if !guidance.is_finite() {
            bail!("sample.guidance = {guidance} must be a number");
        }
        if classes == 0 {
            if !class.is_empty() || guidance != 0.0 {
                bail!(
                    "--class and --guidance need a class-conditional model; this one is not (train with --conditional)"
                );
            }
            return Ok(None);
        }
        let w = guidance as f32;
        Ok(Some(match class {
            "" => bail!(
                "the model is class-conditional ({classes} classes): give --class K (0 to {}), --class all (a block \
                 of samples per class) or --class none (unconditional)",
                classes - 1
            ),
            "all" => Classes::each(classes, particles, w),
            "none" => Classes { guidance: w, ..Classes::none(particles) },
            k => match k.parse::<usize>() {
                Ok(k) if k < classes => Classes::one(k as u32, particles, w),
                _ => bail!("--class {k}: the model knows classes 0 to {}; or give all or none", classes - 1),
            },
        }))
    }

    /// The adapter asked for, if any.
    pub fn adapter(&self) -> Option<&str> {
        Some(self.device.adapter.as_str()).filter(|a| !a.is_empty())
    }

    pub fn objective(&self) -> Result<Objective> {
        let o = &self.objective;
        let objective = match o.kind.as_str() {
            "dsm" => Objective::Dsm { sigma: o.sigma },
            "ncsn" => Objective::Ncsn { sigma_max: o.sigma_max, sigma_min: o.sigma_min, levels: o.levels },
            "ddpm" => Objective::Ddpm {
                beta_min: o.beta_min.unwrap_or(1e-4),
                beta_max: o.beta_max.unwrap_or(0.02),
                steps: o.steps,
            },
            "ve" => Objective::VeSde { sigma_min: o.sigma_min, sigma_max: o.sigma_max },
            "vp" => Objective::VpSde { beta_min: o.beta_min.unwrap_or(0.1), beta_max: o.beta_max.unwrap_or(20.0) },
            "exact" => Objective::Exact { sigma: o.sigma },
            "sliced" | "sliced-vr" => Objective::Sliced {
                sigma: o.sigma,
                projections: o.projections,
                projection: match o.projection.as_str() {
                    "gaussian" => Projection::Gaussian,
                    "rademacher" => Projection::Rademacher,
                    other => bail!("objective.projection = \"{other}\"; choose gaussian or rademacher"),
                },
                variance_reduced: o.kind == "sliced-vr",
            },
            other => bail!("objective.kind = \"{other}\"; choose dsm, ncsn, ddpm, ve, vp, exact, sliced or sliced-vr"),
        };
        objective.validate().context("in [objective]")?;
        Ok(objective)
    }

    pub fn train_config(&self, dataset: &Dataset) -> Result<TrainConfig> {
        let (t, dim) = (&self.train, dataset.dim());
        if t.batch == 0 {
            bail!("train.batch = 0; use at least 1");
        }
        if t.steps_per_submit == 0 {
            bail!("train.steps_per_submit = 0; use at least 1");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            bail!("train.lr = {} must be a positive number", t.lr);
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            bail!("train.ema_decay = {} must be in [0, 1)", t.ema_decay);
        }
        if t.steps == 0 {
            bail!("train.steps = 0; train at least 1 step");
        }
        if !(t.min_snr.is_finite() && t.min_snr >= 0.0) {
            bail!("train.min_snr = {} must be a number >= 0 (0: uniform weights)", t.min_snr);
        }
        let objective = self.objective()?;
        if t.min_snr > 0.0 && objective.tangents(dim) > 0 {
            bail!("train.min_snr weights noise levels, which objective.kind = \"{}\" has none of", self.objective.kind);
        }
        let classes = if self.model.conditional { dataset.classes() } else { 0 };
        if self.model.conditional && classes == 0 {
            bail!(
                "model.conditional needs a dataset with classes (digits, eight-gaussians or a mixture); {} has none",
                dataset.name()
            );
        }
        if !(0.0..1.0).contains(&t.class_drop) {
            bail!("train.class_drop = {} must be a probability in [0, 1) (0.1-0.2 is usual)", t.class_drop);
        }
        let shape = MlpShape::new(dim, self.model.hidden_layers, self.model.width)
            .with_residual(self.model.residual)
            .with_classes(classes);
        shape.validate().context("in [model]")?;
        Ok(TrainConfig {
            adam: AdamConfig {
                lr: t.lr,
                schedule: self.lr_schedule()?,
                ema_decay: t.ema_decay,
                ..AdamConfig::default()
            },
            batch: t.batch,
            seed: t.seed,
            steps_per_submit: t.steps_per_submit,
            on_nonfinite: match t.on_nonfinite.as_str() {
                "backoff" => NonFinite::Backoff { factor: 0.1, times: 3 },
                "stop" => NonFinite::Stop,
                other => bail!("train.on_nonfinite = \"{other}\"; choose backoff or stop"),
            },
            loss_weight: match t.min_snr {
                0.0 => LossWeight::Uniform,
                gamma => LossWeight::MinSnr { gamma },
            },
            class_drop: t.class_drop,
            ..TrainConfig::new(shape, objective)
        })
    }

    /// The sampler's name: `sample.sampler`, or for "auto" the objective's own: annealed
    /// Langevin over its levels for ncsn (Song & Ermon 2019, Algorithm 1); predictor-corrector
    /// for ve (score_sde's VE configs: reverse diffusion + Langevin corrector, snr 0.16);
    /// Euler-Maruyama for vp (score_sde's VP configs: predictor euler_maruyama, no corrector);
    /// ancestral sampling for ddpm (Ho et al. 2020, Algorithm 2); Langevin at the model's one
    /// level for the single-level objectives dsm, exact and sliced score matching.
    pub fn sampler(&self) -> &str {
        match (self.sample.sampler.as_str(), self.objective.kind.as_str()) {
            ("auto", "ncsn") => "annealed",
            ("auto", "ve") => "pc",
            ("auto", "vp") => "euler-maruyama",
            ("auto", "ddpm") => "ddpm",
            ("auto", _) => "langevin",
            (name, _) => name,
        }
    }

    /// The SDE the objective's model is sampled through by the SDE and ODE samplers (and whose
    /// probability flow gives its likelihood).
    pub fn sde(objective: &Objective) -> Sde {
        match *objective {
            Objective::VpSde { beta_min, beta_max } => Sde::Vp { beta_min, beta_max },
            // The VP SDE whose discretisation is this DDPM (score_sde: beta_i = beta(t_i) / N).
            Objective::Ddpm { beta_min, beta_max, steps } => {
                Sde::Vp { beta_min: beta_min * steps as f64, beta_max: beta_max * steps as f64 }
            }
            Objective::VeSde { sigma_min, sigma_max } | Objective::Ncsn { sigma_max, sigma_min, .. } => {
                Sde::ve(sigma_min, sigma_max)
            }
            Objective::Dsm { .. } | Objective::Exact { .. } | Objective::Sliced { .. } => {
                let sigma = objective.model_level().map_or(1.0, |l| l.sigma);
                Sde::ve(sigma, 10.0 * sigma)
            }
        }
    }

    /// The sampler for a network trained with the objective, on its noise schedule.
    pub fn method(&self) -> Result<Method> {
        let method = self.exact_method()?;
        self.check_model_sampler(&method)?;
        Ok(method)
    }

    /// The sampler on the objective's noise schedule, for a score that is defined at every
    /// level (--exact-score): every sampler serves.
    pub fn exact_method(&self) -> Result<Method> {
        let s = &self.sample;
        let sampler = self.sampler();
        // The settings the chosen sampler reads, checked under their config names (the
        // library's own checks below name the method's parameters).
        let uses_step_size = matches!(sampler, "annealed" | "langevin");
        if s.clip && sampler != "ddpm" {
            bail!("sample.clip clips the ddpm sampler's denoised estimate; sample.sampler = \"{sampler}\" has none");
        }
        if uses_step_size && !(s.step_size.is_finite() && s.step_size > 0.0) {
            bail!("sample.step_size = {} must be a positive number for the {sampler} sampler", s.step_size);
        }
        if sampler == "pc" && !(s.snr.is_finite() && s.snr > 0.0) {
            bail!("sample.snr = {} must be a positive number", s.snr);
        }
        let steps = s.steps.unwrap_or(match sampler {
            "annealed" | "langevin" => 100,
            "edm" => 18,
            "dpm-solver++" => 25,
            _ => 1000,
        });
        if steps == 0 {
            bail!("sample.steps = 0; use at least 1 (2 for the SDE and ODE samplers)");
        }
        let objective = self.objective()?;
        let sde = Self::sde(&objective);
        let method = match sampler {
            "annealed" => {
                // Other schedules: ten levels from the prior down to the VE SDE's sigma_min, or
                // 0.1, where the default eps = 0.01 = sigma_L^2 keeps alpha_1 = eps (sigma_1 /
                // sigma_L)^2 stable.
                let sigmas = match (&objective, sde) {
                    (Objective::Ncsn { .. }, _) => objective.levels().iter().map(|l| l.sigma).collect(),
                    (_, Sde::Ve { sigma_min, .. }) => {
                        scorefield::objective::geometric_sigmas(sde.prior_std(), sigma_min, 10)
                    }
                    _ => scorefield::objective::geometric_sigmas(sde.prior_std(), 0.1, 10),
                };
                Method::AnnealedLangevin { sigmas, steps_per_level: steps, eps: s.step_size, denoise: true }
            }
            "langevin" => {
                // A single-level model at its level; otherwise the smallest level trained.
                let level = objective
                    .model_level()
                    .or_else(|| objective.levels().last().copied())
                    .unwrap_or(NoiseLevel::ve(0.01));
                Method::Langevin { level, step_size: s.step_size, steps, init_std: sde.prior_std() }
            }
            "euler-maruyama" => Method::ReverseSde { sde, steps },
            "pc" => Method::PredictorCorrector { sde, steps, snr: s.snr, corrector_steps: 1 },
            "ode-euler" => Method::ProbabilityFlow { sde, steps, heun: false },
            // rk45 is adaptive (`sample` runs likelihood::sample_ode); its plan-based stand-in,
            // for the checks and the step count, is the same ODE under Heun's steps.
            "ode-heun" | "rk45" => Method::ProbabilityFlow { sde, steps, heun: true },
            "ddpm" => match objective {
                Objective::Ddpm { beta_min, beta_max, steps } => Method::Ddpm { beta_min, beta_max, steps, clip: s.clip },
                // Ho et al.'s schedule on an exact score of another objective's config.
                _ => Method::Ddpm { beta_min: 1e-4, beta_max: 0.02, steps: 1000, clip: s.clip },
            },
            "edm" => {
                // The VE-equivalent levels sigma / a of the schedule's ends (a = 1 for VE).
                let level = |t: f64| sde.marginal(t).sigma / sde.marginal(t).a;
                let churn = Churn { s_churn: s.churn, s_tmin: s.churn_tmin, s_tmax: s.churn_tmax, s_noise: s.churn_noise };
                Method::Edm { sigma_min: level(sde.sampling_eps()), sigma_max: level(1.0), steps, rho: s.rho, churn }
            }
            "dpm-solver++" => Method::DpmSolver2M { sde, steps },
            other => bail!(
                "sample.sampler = \"{other}\"; choose auto, annealed, langevin, euler-maruyama, pc, ode-euler, ode-heun, \
                 rk45, ddpm, edm or dpm-solver++"
            ),
        };
        method.validate().context("in [sample]")?;
        Ok(method)
    }

    /// Refuses a sampler that would feed a network trained with the objective levels it does
    /// not know.
    fn check_model_sampler(&self, method: &Method) -> Result<()> {
        let objective = self.objective()?;
        let sampler = self.sampler();
        // A network is conditioned as it was trained: log sigma for VE-type objectives, t for
        // VP and DDPM. Samplers whose levels speak the other language would feed it nonsense.
        // Score matching learns one level: only Langevin at that level samples it.
        if matches!(objective, Objective::Exact { .. } | Objective::Sliced { .. }) && sampler != "langevin" {
            bail!(
                "sample.sampler = \"{sampler}\" needs a model of many noise levels, but objective.kind = \"{}\" \
                 learns the score at one level: use sample.sampler = \"langevin\" (--sampler langevin)",
                self.objective.kind
            );
        }
        let ve_model = matches!(
            objective,
            Objective::Dsm { .. }
                | Objective::Ncsn { .. }
                | Objective::VeSde { .. }
                | Objective::Exact { .. }
                | Objective::Sliced { .. }
        );
        let ve_sampler =
            matches!(method, Method::Langevin { .. } | Method::AnnealedLangevin { .. } | Method::Edm { .. });
        let ddpm_sampler = matches!(method, Method::Ddpm { .. });
        if (ve_sampler && !ve_model) || (ddpm_sampler && ve_model) {
            bail!(
                "sample.sampler = \"{sampler}\" does not match objective.kind = \"{}\": Langevin, annealed \
                 Langevin and edm sample dsm, ncsn and ve models; ddpm samples ddpm and vp models; the SDE samplers \
                 (euler-maruyama, pc, ode-euler, ode-heun, dpm-solver++) sample any; leave sample.sampler = \"auto\" \
                 for the objective's own",
                self.objective.kind
            );
        }
        Ok(())
    }
}

/// The `section.key` whose line holds byte `at` of a TOML text (None outside a key's line).
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(str::trim));
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    })
}

fn read_data_file(path: &std::path::Path) -> Result<Vec<u8>> {
    if path.as_os_str().is_empty() {
        bail!("data.path is empty: data.dataset = \"density\" reads a PNG from it");
    }
    std::fs::read(path).with_context(|| format!("reading data.path = {}", path.display()))
}

/// Every .png in `dir` (sorted by name, so the set is the same on every machine).
fn read_image_folder(dir: &std::path::Path) -> Result<ImageSet> {
    if dir.as_os_str().is_empty() {
        bail!("data.path is empty: data.dataset = \"images\" reads a folder of PNGs from it");
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the image folder {}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("reading the image folder {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            paths.push(path);
        }
    }
    paths.sort();
    crate::files::read_pngs(&paths).with_context(|| format!("in the image folder {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every key a config may hold, as (section, key).
    const KEYS: &[(&str, &str)] = &[
        ("data", "dataset"),
        ("data", "points"),
        ("data", "path"),
        ("data", "invert"),
        ("data", "weights"),
        ("data", "means"),
        ("data", "stds"),
        ("model", "hidden_layers"),
        ("model", "width"),
        ("model", "residual"),
        ("model", "conditional"),
        ("objective", "kind"),
        ("objective", "sigma"),
        ("objective", "sigma_min"),
        ("objective", "sigma_max"),
        ("objective", "levels"),
        ("objective", "beta_min"),
        ("objective", "beta_max"),
        ("objective", "steps"),
        ("objective", "projections"),
        ("objective", "projection"),
        ("train", "steps"),
        ("train", "batch"),
        ("train", "lr"),
        ("train", "lr_schedule"),
        ("train", "ema_decay"),
        ("train", "seed"),
        ("train", "log_every"),
        ("train", "checkpoint_every"),
        ("train", "steps_per_submit"),
        ("train", "on_nonfinite"),
        ("train", "min_snr"),
        ("train", "class_drop"),
        ("sample", "sampler"),
        ("sample", "particles"),
        ("sample", "seed"),
        ("sample", "steps"),
        ("sample", "step_size"),
        ("sample", "snr"),
        ("sample", "ema"),
        ("sample", "snapshot_every"),
        ("sample", "field_sigmas"),
        ("sample", "clip"),
        ("sample", "rho"),
        ("sample", "churn"),
        ("sample", "churn_tmin"),
        ("sample", "churn_tmax"),
        ("sample", "churn_noise"),
        ("sample", "class"),
        ("sample", "guidance"),
        ("device", "adapter"),
    ];

    /// TOML values of every type, many of them out of range.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (-3i64..=3).prop_map(|v| v.to_string()),
            prop::sample::select(vec![0i64, 1, 2, 7, 100, 1 << 20, 1 << 40, -1 << 40]).prop_map(|v| v.to_string()),
            prop::sample::select(vec!["0.0", "-1.5", "1e-9", "0.5", "1.0", "20.0", "1e30", "nan", "inf", "-inf"])
                .prop_map(str::to_string),
            prop::sample::select(vec!["\"\"", "\"ncsn\"", "\"vp\"", "\"pc\"", "\"digits\"", "\"mixture\"", "\"x\""])
                .prop_map(str::to_string),
            prop::sample::select(vec!["true", "[]", "[0.5, 0.5]", "[[0, 0], [1, 1]]", "[1, -1]", "[\"a\"]", "{}"])
                .prop_map(str::to_string),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// The defaults with one key set to an arbitrary value: loading and validating never
        /// panics, and a rejection names the key (as `section.key`, or `key` in `[section]`).
        #[test]
        fn a_bad_value_is_refused_by_name(key in prop::sample::select(KEYS), value in value()) {
            let (section, name) = key;
            let text = format!("[{section}]\n{name} = {value}\n");
            let result = RunConfig::from_toml(&text).and_then(|c| c.resolve(false).map(|_| ()));
            if let Err(e) = result {
                let msg = format!("{e:#}");
                prop_assert!(
                    msg.contains(&format!("{section}.{name}")) || (msg.contains(name) && msg.contains(section)),
                    "{section}.{name} = {value}: the message does not name the key: {msg}"
                );
            }
        }

        /// An unknown key is refused by name.
        #[test]
        fn an_unknown_key_is_refused_by_name(section in prop::sample::select(&["data", "model", "train", "sample"][..]), name in "[a-z]{3,8}_x") {
            let msg = format!("{:#}", RunConfig::from_toml(&format!("[{section}]\n{name} = 1\n")).unwrap_err());
            prop_assert!(msg.contains(&name), "{msg}");
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        RunConfig::default().resolve(false).unwrap();
    }

    /// Every objective trains and samples with its own defaults: nothing but objective.kind
    /// set (the CLI's `--objective`), the config validates, and the sampler is the objective's.
    #[test]
    fn every_objective_has_working_defaults() {
        let expected = [
            ("dsm", "langevin"),
            ("ncsn", "annealed"),
            ("ddpm", "ddpm"),
            ("ve", "pc"),
            ("vp", "euler-maruyama"),
            ("exact", "langevin"),
            ("sliced", "langevin"),
            ("sliced-vr", "langevin"),
        ];
        for (kind, sampler) in expected {
            let mut config = RunConfig::default();
            config.objective.kind = kind.into();
            config.clone().resolve(false).unwrap_or_else(|e| panic!("--objective {kind}: {e:#}"));
            assert_eq!(config.method().unwrap().name(), sampler, "--objective {kind}");
        }
        // DDPM's discrete betas and VP's beta(t) are different numbers (beta_i = beta(t_i) / N).
        let mut ddpm = RunConfig::default();
        ddpm.objective.kind = "ddpm".into();
        assert!(matches!(ddpm.objective().unwrap(), Objective::Ddpm { beta_min: 1e-4, beta_max: 0.02, steps: 1000 }));
    }

    /// With an exact score every sampler serves, whatever the objective (which sets only the
    /// schedule); a network keeps its own.
    #[test]
    fn an_exact_score_takes_any_sampler() {
        for objective in ["ncsn", "ddpm", "vp", "ve"] {
            for sampler in ["annealed", "langevin", "euler-maruyama", "pc", "ode-euler", "ode-heun", "ddpm"] {
                let mut config = RunConfig::default();
                config.objective.kind = objective.into();
                config.sample.sampler = sampler.into();
                config.resolve(true).unwrap_or_else(|e| panic!("{objective} / {sampler}: {e:#}"));
            }
        }
        let mut config = RunConfig::default();
        config.sample.sampler = "ddpm".into();
        assert!(config.resolve(false).is_err(), "a ddpm sampler on an ncsn network");
    }
}
