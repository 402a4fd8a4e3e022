//! Log-likelihoods through the probability-flow ODE (Song et al. 2021, "Score-Based Generative
//! Modeling through Stochastic Differential Equations", eq. 13 and appendix D.2; score_sde
//! `likelihood.py`; k-diffusion's `log_likelihood`): shaders/likelihood.wgsl's host twin.
//!
//! log p_0(x) = log p_T(x_T) + integral from eps to T of div f~(x_t, t) dt, along
//! dx/dt = f~(x, t) = f(x, t) - g(t)^2 / 2 s(x, t), integrated from the data to the prior by
//! Dormand-Prince 5(4) with adaptive steps (scipy's RK45, score_sde's default; rtol = atol =
//! 1e-5, eps = 1e-5 as score_sde). The batch shares one step size, as score_sde's `solve_ivp` on
//! the flattened batch does: one controller, one reduction per attempt, and the whole batch on
//! the device; a batch of very different points takes the steps its hardest point needs. The
//! step control runs on the device, so the host records many attempts per submit and reads
//! back only a small clock between submits.
//!
//! The divergence is exact for a Gaussian mixture (closed form) and, for a network, from d
//! forward-mode passes (the tangent rows of exact score matching: the Jacobian's diagonal,
//! `Divergence::Exact`) or Hutchinson's estimator with M fixed probes per point
//! (`Divergence::Hutchinson`: unbiased, variance falling as 1/M; score_sde's
//! `get_div_fn` with Gaussian or Rademacher `hutchinson_type`).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bound, Gpu, GpuBuffer};
use crate::model::{MlpPass, EMBED_FREQS};
// The probes' codes (`ESTIMATOR` in likelihood.wgsl) are score matching's.
use crate::objective::{Parametrisation, Projection, ESTIMATOR_EXACT, ESTIMATOR_GAUSSIAN, ESTIMATOR_RADEMACHER};
use crate::rng::Stream;
use crate::sample::ScoreSource;
use crate::schedule::Sde;
use crate::shaders;

/// How the divergence of the score is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// The trace of the Jacobian exactly: closed form for a mixture, d tangent rows per point
    /// for a network (cost d forward passes).
    Exact,
    /// (1/M) sum_m v_m . J v_m over `probes` = M fixed directions per point, Gaussian or
    /// Rademacher (a network only).
    Hutchinson { probes: usize, projection: Projection },
}

/// The ODE's time span, tolerances and divergence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OdeConfig {
    /// The SDE whose probability flow is integrated (a DDPM model: its VP SDE).
    pub sde: Sde,
    /// The start time (score_sde: 1e-5); the end is t = 1.
    pub eps: f64,
    pub rtol: f64,
    pub atol: f64,
    pub divergence: Divergence,
    /// Seeds the Hutchinson probes.
    pub seed: u64,
    /// Points integrated together (one step size each batch).
    pub batch: usize,
    /// Step attempts before the solve is given up.
    pub max_attempts: usize,
}

impl OdeConfig {
    /// score_sde's settings: rtol = atol = 1e-5, eps = 1e-5, exact divergence.
    pub fn new(sde: Sde) -> Self {
        Self {
            sde,
            eps: 1e-5,
            rtol: 1e-5,
            atol: 1e-5,
            divergence: Divergence::Exact,
            seed: 0,
            batch: 1024,
            max_attempts: 10_000,
        }
    }
}

/// The log-likelihood of each point and what the solves cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Likelihood {
    /// log p_0(x) per point, nats.
    pub log_p: Vec<f64>,
    /// Drift evaluations (each a score and its divergence at every point of a batch), summed
    /// over the batches.
    pub evaluations: usize,
    /// Accepted and rejected steps, summed over the batches.
    pub steps: usize,
    pub rejected: usize,
}

impl Likelihood {
    /// The mean negative log-likelihood, nats.
    pub fn mean_nll(&self) -> f64 {
        -self.log_p.iter().sum::<f64>() / self.log_p.len().max(1) as f64
    }

    /// Adds a batch's solve to the cost (its first evaluation is the one before the steps).
    fn tally(&mut self, clock: &Clock) {
        self.evaluations += clock.evaluations as usize + 1;
        self.steps += (clock.attempts - clock.rejected) as usize;
        self.rejected += clock.rejected as usize;
    }
}

/// Twin of `Clock` in shaders/likelihood.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Clock {
    pub seed: [u32; 2],
    pub t: f32,
    pub h: f32,
    pub done: u32,
    pub accepted: u32,
    pub attempts: u32,
    pub rejected: u32,
    pub evaluations: u32,
    pub err: f32,
}

/// `Clock::done` values.
pub const DONE_RUNNING: u32 = 0;
pub const DONE_REACHED: u32 = 1;
pub const DONE_FAILED: u32 = 2;

/// Runge-Kutta stages of Dormand-Prince 5(4): six new ones per attempt, the seventh's drift
/// being the next step's first.
const STAGES: u32 = 7;
/// Step attempts recorded per submit, between reads of the clock.
const ATTEMPTS_PER_SUBMIT: usize = 16;
const WG: u32 = 64;

/// shaders/likelihood.wgsl's bindings.
pub mod binding {
    crate::bindings! {
        CLOCK = 0, MIXTURE = 1, STATE = 2, STAGES = 3, Y = 4, NET_INPUT = 5, FREQS = 6, TAN_INPUT = 7,
        NET_OUTPUT = 8, TAN_OUTPUT = 9, POINT_ERR = 10,
    }
}

/// log p_0 of every point of `points` [n, d] under the model (or mixture) `source`, through the
/// probability-flow ODE of `config.sde`. A class-conditional network is evaluated
/// unconditionally.
pub async fn log_likelihood(
    gpu: &Gpu,
    source: ScoreSource<'_>,
    points: &[f32],
    config: &OdeConfig,
) -> Result<Likelihood> {
    let d = source.dim();
    check(&source, points, config)?;
    let mut result = Likelihood { log_p: Vec::new(), evaluations: 0, steps: 0, rejected: 0 };
    for batch in points.chunks(config.batch * d) {
        let solve = Solve::new(gpu, &source, batch.len() / d, config, Direction::Likelihood).await?;
        let (state, clock) = solve.run(gpu, batch, config.eps, config).await?;
        let prior = Prior(config.sde);
        for row in state.chunks(d + 1) {
            result.log_p.push(prior.log_density(&row[..d]) + row[d] as f64);
        }
        result.tally(&clock);
    }
    Ok(result)
}

/// `particles` samples of the model (or mixture) `source` by the probability-flow ODE of
/// `config.sde` from its prior at t = 1 down to `config.eps`, Dormand-Prince 5(4) with adaptive
/// steps (score_sde's default `ode` sampler, `solve_ivp(..., method='RK45')` with rtol = atol =
/// 1e-5; its eps for samples is the SDE's `sampling_eps`). The prior's draw is the other
/// samplers' initial step, stream `SamplerInit` of `config.seed`. Returns the samples
/// [particles, d] and the cost (`log_p` empty; the divergence setting is not used).
pub async fn sample_ode(
    gpu: &Gpu,
    source: ScoreSource<'_>,
    particles: usize,
    config: &OdeConfig,
) -> Result<(Vec<f32>, Likelihood)> {
    let d = source.dim();
    let std = config.sde.prior_std();
    let d4 = d.div_ceil(4) as u64 * 4;
    let prior: Vec<f32> = (0..particles * d)
        .map(|i| {
            let z = crate::rng::normal_at(config.seed, Stream::SamplerInit.at(0), (i / d) as u64 * d4 + (i % d) as u64);
            (std * z) as f32
        })
        .collect();
    check(&source, &prior, &OdeConfig { divergence: Divergence::Exact, ..*config })?;
    let mut x = Vec::with_capacity(prior.len());
    let mut cost = Likelihood { log_p: Vec::new(), evaluations: 0, steps: 0, rejected: 0 };
    for batch in prior.chunks(config.batch * d) {
        let solve = Solve::new(gpu, &source, batch.len() / d, config, Direction::Sample).await?;
        let (state, clock) = solve.run(gpu, batch, 1.0, config).await?;
        x.extend(state.chunks(d + 1).flat_map(|row| row[..d].to_vec()));
        cost.tally(&clock);
    }
    Ok((x, cost))
}

fn check(source: &ScoreSource<'_>, points: &[f32], config: &OdeConfig) -> Result<()> {
    let d = source.dim();
    if points.is_empty() || !points.len().is_multiple_of(d) {
        return Err(Error::invalid("points", format!("{} floats is not a whole number of rows of {d}", points.len())));
    }
    if let Some(i) = points.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid("points", format!("value {} of row {} is not finite", points[i], i / d)));
    }
    config.sde.validate()?;
    if !(config.eps > 0.0 && config.eps < 1.0 && config.rtol > 0.0 && config.atol > 0.0) {
        return Err(Error::invalid("likelihood config", "eps must lie in (0, 1), rtol and atol be positive"));
    }
    if config.batch == 0 || config.max_attempts == 0 {
        return Err(Error::invalid("likelihood config", "batch and max_attempts must be at least 1"));
    }
    match (source, config.divergence) {
        (ScoreSource::Mixture(m), _) if m.dim > crate::sample::MAX_FUSED_DIM => Err(Error::invalid(
            "mixture dimension",
            format!("{} > {}: exact mixture scores are computed per point", m.dim, crate::sample::MAX_FUSED_DIM),
        )),
        (ScoreSource::Mixture(_), Divergence::Hutchinson { .. }) => Err(Error::invalid(
            "divergence",
            "a mixture's divergence is exact in closed form; Hutchinson's estimator is for networks",
        )),
        (_, Divergence::Hutchinson { probes: 0, .. }) => {
            Err(Error::invalid("divergence", "Hutchinson's estimator needs at least 1 probe"))
        }
        _ => Ok(()),
    }
}

/// The prior at t = 1: N(0, sigma_max^2 I) for VE, N(0, I) for VP (score_sde's `prior_logp`).
struct Prior(Sde);

impl Prior {
    fn log_density(&self, z: &[f32]) -> f64 {
        let std = self.0.prior_std();
        let sq: f64 = z.iter().map(|&v| (v as f64 / std).powi(2)).sum();
        -0.5 * z.len() as f64 * (std::f64::consts::TAU * std * std).ln() - 0.5 * sq
    }
}

/// One batch's ODE solve on the device: its buffers and kernels.
struct Solve {
    n: usize,
    d: usize,
    clock: GpuBuffer<Clock>,
    state: GpuBuffer<f32>,
    probes: Option<Bound>,
    /// Per stage: its input, the network (if any), its drift.
    stage_inputs: Vec<Bound>,
    stage_drifts: Vec<Bound>,
    mlp: Option<MlpPass>,
    point_error: Bound,
    control: Bound,
    accept: Bound,
    _buffers: Vec<GpuBuffer<f32>>,
}

/// Which way a solve runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From eps to 1 with the divergence: log-likelihoods.
    Likelihood,
    /// From 1 to eps, x alone: samples.
    Sample,
}

impl Solve {
    async fn new(
        gpu: &Gpu,
        source: &ScoreSource<'_>,
        n: usize,
        config: &OdeConfig,
        direction: Direction,
    ) -> Result<Self> {
        let d = source.dim();
        let sampling = direction == Direction::Sample;
        let width = d + 1;
        let none = wgpu::BufferUsages::empty();
        let buf = |label: &str, len: usize| GpuBuffer::<f32>::new(gpu, label, len.max(1), none);
        let clock = GpuBuffer::<Clock>::new(gpu, "scorefield.likelihood.clock", 1, none)?;
        let state = buf("scorefield.likelihood.state", n * width)?;
        let stages = buf("scorefield.likelihood.stages", STAGES as usize * n * width)?;
        let y = buf("scorefield.likelihood.y", n * width)?;
        let point_err = buf("scorefield.likelihood.point_err", n)?;
        let (tangents, estimator) = match config.divergence {
            _ if sampling => (0, ESTIMATOR_EXACT),
            Divergence::Exact => (d, ESTIMATOR_EXACT),
            Divergence::Hutchinson { probes, projection: Projection::Gaussian } => (probes, ESTIMATOR_GAUSSIAN),
            Divergence::Hutchinson { probes, projection: Projection::Rademacher } => (probes, ESTIMATOR_RADEMACHER),
        };
        let (sde_kind, p0, p1) = match config.sde {
            Sde::Ve { sigma_min, sigma_max } => (0.0, sigma_min, sigma_max),
            Sde::Vp { beta_min, beta_max } => (1.0, beta_min, beta_max),
        };
        let (source_kind, k, classes, out_sign, mixture_values) = match *source {
            ScoreSource::Mixture(m) => (0.0, m.components(), 0, 1.0, crate::sample::pack_mixture(m)),
            ScoreSource::Network { model, parametrisation, .. } => {
                let sign = if parametrisation == Parametrisation::Eps { -1.0 } else { 1.0 };
                (1.0, 1, model.shape.class_columns(), sign, vec![0.0])
            }
        };
        let mixture = GpuBuffer::from_slice(gpu, "scorefield.likelihood.mixture", &mixture_values, none)?;
        let mut constants = vec![
            ("D", d as f64),
            ("N", n as f64),
            ("F", EMBED_FREQS as f64),
            ("CLASSES", classes as f64),
            ("SOURCE", source_kind),
            ("K", k as f64),
            ("SDE", sde_kind),
            ("P0", p0),
            ("P1", p1),
            ("RTOL", config.rtol),
            ("ATOL", config.atol),
            ("OUT_SIGN", out_sign),
            ("TANGENTS", tangents as f64),
            ("ESTIMATOR", estimator as f64),
            ("WG", WG as f64),
            ("DIRECTION", if sampling { -1.0 } else { 1.0 }),
            ("T_END", if sampling { config.eps } else { 1.0 }),
            ("DIVERGENCE", if sampling { 0.0 } else { 1.0 }),
        ];
        let pipeline = |entry: &'static str, constants: Vec<(&'static str, f64)>| async move {
            gpu.pipeline(&shaders::LIKELIHOOD, entry, &constants).await
        };
        let clock_entry = (binding::CLOCK, clock.binding());
        let mut keep = Vec::new();
        // The network's buffers by binding; the kernels name them also in branches a mixture
        // (or a sampling solve, the tangent rows) never takes, so those get placeholders, one
        // each: a kernel may not bind one buffer both read-only and read-write.
        let mut net: Vec<(u32, wgpu::Buffer)> = Vec::new();
        let (mlp, probes) = match *source {
            ScoreSource::Network { model, weights, .. } => {
                let mlp = MlpPass::new(gpu, model, weights, n, tangents, None).await?;
                net.extend([
                    (binding::NET_INPUT, mlp.acts.input.raw().clone()),
                    (binding::NET_OUTPUT, mlp.output().raw().clone()),
                    (binding::FREQS, model.freqs.raw().clone()),
                ]);
                let probes = match (mlp.tangent_input(), mlp.tangent_output()) {
                    (Some(tan_input), Some(tan_output)) => {
                        net.extend([
                            (binding::TAN_INPUT, tan_input.raw().clone()),
                            (binding::TAN_OUTPUT, tan_output.raw().clone()),
                        ]);
                        let probes = pipeline("probes", constants.clone()).await?;
                        let bg =
                            probes.bind_group(gpu, &[clock_entry.clone(), (binding::TAN_INPUT, tan_input.binding())]);
                        Some(Bound::new(probes, bg))
                    }
                    _ => None,
                };
                (Some(mlp), probes)
            }
            ScoreSource::Mixture(_) => (None, None),
        };
        for b in [binding::NET_INPUT, binding::TAN_INPUT, binding::NET_OUTPUT, binding::TAN_OUTPUT, binding::FREQS] {
            if !net.iter().any(|(have, _)| *have == b) {
                let placeholder = buf("scorefield.likelihood.unused", 1)?;
                net.push((b, placeholder.raw().clone()));
                keep.push(placeholder);
            }
        }
        let net_binding = |name: u32| {
            net.iter().find(|(b, _)| *b == name).map(|(b, buffer)| {
                (*b, wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset: 0, size: None }))
            })
        };
        let mut stage_inputs = Vec::new();
        let mut stage_drifts = Vec::new();
        for stage in 1..=STAGES {
            constants.retain(|(name, _)| *name != "STAGE");
            constants.push(("STAGE", stage as f64));
            let input = pipeline("stage_input", constants.clone()).await?;
            let mut entries = vec![
                clock_entry.clone(),
                (binding::STATE, state.binding()),
                (binding::STAGES, stages.binding()),
                (binding::Y, y.binding()),
            ];
            entries.extend([binding::NET_INPUT, binding::FREQS].into_iter().filter_map(net_binding));
            stage_inputs.push(Bound::new(input.clone(), input.bind_group(gpu, &entries)));
            let drift = pipeline("stage_drift", constants.clone()).await?;
            let mut entries = vec![
                clock_entry.clone(),
                (binding::STAGES, stages.binding()),
                (binding::Y, y.binding()),
                (binding::MIXTURE, mixture.binding()),
            ];
            entries.extend(
                [binding::TAN_INPUT, binding::NET_OUTPUT, binding::TAN_OUTPUT].into_iter().filter_map(net_binding),
            );
            stage_drifts.push(Bound::new(drift.clone(), drift.bind_group(gpu, &entries)));
        }
        let point_error = pipeline("point_error", constants.clone()).await?;
        let point_error_bg = point_error.bind_group(
            gpu,
            &[
                clock_entry.clone(),
                (binding::STATE, state.binding()),
                (binding::STAGES, stages.binding()),
                (binding::Y, y.binding()),
                (binding::POINT_ERR, point_err.binding()),
            ],
        );
        let control = pipeline("control", constants.clone()).await?;
        let control_bg = control.bind_group(gpu, &[clock_entry.clone(), (binding::POINT_ERR, point_err.binding())]);
        let accept = pipeline("accept", constants.clone()).await?;
        let accept_bg = accept.bind_group(
            gpu,
            &[
                clock_entry,
                (binding::STATE, state.binding()),
                (binding::STAGES, stages.binding()),
                (binding::Y, y.binding()),
            ],
        );
        keep.extend([stages, y, point_err, mixture]);
        Ok(Self {
            n,
            d,
            clock,
            state,
            probes,
            stage_inputs,
            stage_drifts,
            mlp,
            point_error: Bound::new(point_error, point_error_bg),
            control: Bound::new(control, control_bg),
            accept: Bound::new(accept, accept_bg),
            _buffers: keep,
        })
    }

    /// Records stage `i` (0-based): its input, the network, its drift.
    fn record_stage(&self, pass: &mut wgpu::ComputePass<'_>, i: usize, grid: [u32; 2]) {
        self.stage_inputs[i].dispatch(pass, grid);
        if let Some(mlp) = &self.mlp {
            mlp.record_forward(pass);
        }
        self.stage_drifts[i].dispatch(pass, grid);
    }

    /// Integrates the batch `points` from `t0` (eps, or 1 when sampling) to the other end: the
    /// final augmented states [n, d + 1] and the clock.
    async fn run(&self, gpu: &Gpu, points: &[f32], t0: f64, config: &OdeConfig) -> Result<(Vec<f32>, Clock)> {
        let (n, d) = (self.n, self.d);
        let mut state = vec![0.0f32; n * (d + 1)];
        for (row, x) in state.chunks_mut(d + 1).zip(points.chunks(d)) {
            row[..d].copy_from_slice(x);
        }
        self.state.write(gpu, 0, &state);
        // A first step of a thousandth of the span; the control grows it up to tenfold a step.
        let start = Clock {
            seed: crate::rng::split(config.seed),
            t: t0 as f32,
            h: (1e-3 * (1.0 - config.eps)) as f32,
            ..Clock::default()
        };
        self.clock.write(gpu, 0, &[start]);
        let grid = gpu.grid((n as u32).div_ceil(WG));
        let mut encoder = gpu.encoder("scorefield.likelihood.start");
        if let Some(mlp) = &self.mlp {
            mlp.record_weight_copies(&mut encoder);
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            if let Some(probes) = &self.probes {
                let rows = (n * self.mlp.as_ref().map_or(1, |_| self.tangent_rows_per_point(config))) as u32;
                probes.dispatch(&mut pass, gpu.grid(rows.div_ceil(WG)));
            }
            self.record_stage(&mut pass, 0, grid);
        }
        gpu.submit(encoder);
        let mut attempts = 0;
        loop {
            let mut encoder = gpu.encoder("scorefield.likelihood.steps");
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for _ in 0..ATTEMPTS_PER_SUBMIT {
                    for i in 1..STAGES as usize {
                        self.record_stage(&mut pass, i, grid);
                    }
                    self.point_error.dispatch(&mut pass, grid);
                    self.control.dispatch(&mut pass, [1, 1]);
                    self.accept.dispatch(&mut pass, grid);
                }
            }
            gpu.submit(encoder);
            attempts += ATTEMPTS_PER_SUBMIT;
            let clock = self.clock.read(gpu).await?[0];
            match clock.done {
                DONE_REACHED => return Ok((self.state.read(gpu).await?, clock)),
                DONE_FAILED => {
                    return Err(Error::invalid(
                        "likelihood",
                        format!(
                            "the ODE solve failed at t = {} (error norm {}, step {}): the score is not finite or \
                             too stiff there; try a larger atol / rtol or eps",
                            clock.t, clock.err, clock.h
                        ),
                    ))
                }
                _ if attempts >= config.max_attempts => {
                    return Err(Error::invalid(
                        "likelihood",
                        format!(
                            "the ODE solve took more than {} step attempts and reached t = {} of 1; raise \
                             max_attempts or loosen rtol / atol",
                            config.max_attempts, clock.t
                        ),
                    ))
                }
                _ => {}
            }
        }
    }

    fn tangent_rows_per_point(&self, config: &OdeConfig) -> usize {
        match config.divergence {
            Divergence::Exact => self.d,
            Divergence::Hutchinson { probes, .. } => probes,
        }
    }
}
