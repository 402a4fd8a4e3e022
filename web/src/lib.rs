//! scorefield in the browser. web/index.html calls [`start`] with its canvas; the engine then
//! trains the W1 network (../shared/WORKLOADS.md) on a 2-D toy, live, and samples it with
//! annealed Langevin, drawing every animation frame: the toy's density, the learned score field
//! as arrows and the particles, all read from the engine's own buffers.
//!
//! Everything runs in one async loop ([`run`]) paced by `requestAnimationFrame`: training
//! steps and sampler steps are recorded a few per frame, losses come back through the engine's
//! non-blocking readbacks, and nothing ever blocks the browser's thread. The page's controls
//! reach the loop through [`Page`]'s setters and its state comes back through the getters
//! (the browser test, tests/web.rs, reads them too).
//!
//! The engine is used exactly as a native wgpu application embeds it (`Gpu::from_device` on
//! the page's own device), except for [`philox`] and [`normals`], which open the engine's own
//! device with `Gpu::new` as the command-line program does.
#![cfg(target_arch = "wasm32")]

#[path = "../../examples/common/mod.rs"]
mod draw;
mod scene;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use scorefield::data::Dataset;
use scorefield::gpu::{Gpu, GpuBuffer};
use scorefield::model::{Evaluator, MlpShape, Weights};
use scorefield::noise::NoiseKernels;
use scorefield::objective::{geometric_sigmas, Objective};
use scorefield::optim::{AdamConfig, LrSchedule};
use scorefield::sample::{Method, Sampler, SamplerConfig, ScoreSource};
use scorefield::train::{NonFinite, TrainConfig, Trainer};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use scene::{Scene, GRID};

/// NCSN's levels for every toy: the main job's (sigma 10 down to 0.1, ten levels).
const SIGMA_MAX: f64 = 10.0;
const SIGMA_MIN: f64 = 0.1;
const LEVELS: usize = 10;
/// Points drawn from a toy: the training set and the density picture.
const DATA_POINTS: usize = 65536;
/// Training steps between loss readbacks; the first steps are each logged, so the chart and
/// the browser test see where the loss started.
const LOG_EVERY: u64 = 10;
const LOG_FIRST: u64 = 5;
/// Adam's peak rate under the cosine decay. Higher than the main job's 3e-3, which is tuned for
/// 16000 steps: for a budget of hundreds to a few thousand steps 1e-2 learns the modes far
/// better (eight Gaussians, batch 64, 400 steps, 2048 samples within 1.5 of a mode: 3e-3 0.47,
/// 5e-3 0.59, 1e-2 0.80, 2e-2 0.73; 3000 x 512 at 1e-2: 0.986, per-axis spread 0.51 against
/// the exact 0.5; measured with the command-line program on lavapipe).
const LR: f64 = 1e-2;
/// Annealed Langevin: steps per level, and eps (alpha_i = eps sigma_i^2 / sigma_L^2, the main
/// job's; at alpha = sigma^2 per step each level settles in a few steps, and 30 per level gave
/// the figures above as 100 do).
const STEPS_PER_LEVEL: usize = 30;
const EPS: f64 = 0.01;

/// The run's sizes, from the page (its URL can change them).
#[wasm_bindgen]
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Training steps before sampling starts.
    pub steps: u32,
    pub batch: u32,
    pub particles: u32,
    /// Training steps recorded per animation frame.
    pub steps_per_frame: u32,
    /// Sampler steps recorded per animation frame.
    pub sampler_steps_per_frame: u32,
}

#[wasm_bindgen]
impl Options {
    #[wasm_bindgen(constructor)]
    pub fn new(steps: u32, batch: u32, particles: u32, steps_per_frame: u32, sampler_steps_per_frame: u32) -> Options {
        Options { steps, batch, particles, steps_per_frame, sampler_steps_per_frame }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Training,
    Sampling,
    Done,
    Failed,
}

/// What the page and the loop share: controls one way, progress the other.
struct Shared {
    // Set by the page.
    next_toy: Option<String>,
    sigma: f64,
    sigma_changed: bool,
    resample: bool,
    // Set by the loop.
    phase: Phase,
    toy: String,
    step: u64,
    loss_steps: Vec<u32>,
    losses: Vec<f32>,
    samples: Vec<f32>,
    /// Sampler steps done and in all.
    sampled: (usize, usize),
    /// When the last frames ended (ms since the epoch), the last 30.
    frame_ends: std::collections::VecDeque<f64>,
    error: Option<String>,
}

/// The page's handle on the running engine.
#[wasm_bindgen]
pub struct Page {
    shared: Rc<RefCell<Shared>>,
    adapter: String,
}

#[wasm_bindgen]
impl Page {
    /// Trains afresh on another toy ("eight-gaussians", "two-moons", "swiss-roll",
    /// "checkerboard", "rings", "spirals").
    /// Fails, leaving the page as it is, for a name that is not a 2-D toy.
    pub fn set_toy(&self, toy: &str) -> Result<(), JsError> {
        toy_dataset(toy).map_err(|e| JsError::new(&e))?;
        self.shared.borrow_mut().next_toy = Some(toy.to_owned());
        Ok(())
    }

    /// The noise level of the arrows, and where annealed Langevin starts (restarts sampling).
    pub fn set_sigma(&self, sigma: f64) {
        let mut s = self.shared.borrow_mut();
        s.sigma = sigma.clamp(SIGMA_MIN, SIGMA_MAX);
        s.sigma_changed = true;
    }

    /// Samples again from fresh noise (once training has finished).
    pub fn resample(&self) {
        self.shared.borrow_mut().resample = true;
    }

    /// "training", "sampling", "done" or "failed".
    pub fn phase(&self) -> String {
        format!("{:?}", self.shared.borrow().phase).to_lowercase()
    }

    pub fn toy(&self) -> String {
        self.shared.borrow().toy.clone()
    }

    /// Training steps taken on the current toy.
    pub fn step(&self) -> f64 {
        self.shared.borrow().step as f64
    }

    /// The steps at which [`Page::losses`] were taken.
    pub fn loss_steps(&self) -> Vec<u32> {
        self.shared.borrow().loss_steps.clone()
    }

    /// The batch's mean loss every few steps.
    pub fn losses(&self) -> Vec<f32> {
        self.shared.borrow().losses.clone()
    }

    /// The finished samples, [particles, 2]; empty until sampling is done.
    pub fn samples(&self) -> Vec<f32> {
        self.shared.borrow().samples.clone()
    }

    /// Sampler steps done so far and in all (0 of 0 before sampling).
    pub fn sampled(&self) -> Vec<u32> {
        let (done, total) = self.shared.borrow().sampled;
        vec![done as u32, total as u32]
    }

    /// The mean time between the last 30 frames, in milliseconds (0 before there are two).
    pub fn frame_ms(&self) -> f64 {
        let ends = &self.shared.borrow().frame_ends;
        match (ends.front(), ends.back()) {
            (Some(first), Some(last)) if ends.len() > 1 => (last - first) / (ends.len() - 1) as f64,
            _ => 0.0,
        }
    }

    /// What went wrong, if anything did.
    pub fn error(&self) -> Option<String> {
        self.shared.borrow().error.clone()
    }

    /// The adapter the page runs on.
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }
}

/// Opens WebGPU on `canvas`, starts training on `toy` and returns the page's handle. Fails with
/// a readable message where the browser offers no WebGPU adapter or the adapter lacks what the
/// kernels need.
#[wasm_bindgen]
pub async fn start(canvas: web_sys::HtmlCanvasElement, toy: String, options: Options) -> Result<Page, JsError> {
    std::panic::set_hook(Box::new(report_panic));
    let dataset = toy_dataset(&toy).map_err(|e| JsError::new(&e))?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| JsError::new(&format!("this browser offers WebGPU but no adapter for it ({e})")))?;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("page.device"),
            required_limits: adapter.limits(),
            ..Default::default()
        })
        .await
        .map_err(js)?;
    // The page owns this device: its errors and its loss are the page's to report (the loop
    // picks them up; the callbacks must be Send, the shared state is not).
    let fault = Arc::new(Mutex::new(None::<String>));
    let errors = Arc::clone(&fault);
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| keep_first(&errors, e.to_string())));
    let lost = Arc::clone(&fault);
    device.set_device_lost_callback(move |reason, message| {
        keep_first(&lost, format!("device lost ({reason:?}): {message}"))
    });
    let gpu = Gpu::from_device(device, queue).map_err(js)?;
    let adapter = gpu.describe();
    let mut scene = Scene::new(&gpu, &canvas).map_err(|e| JsError::new(&e))?;
    let shared = Rc::new(RefCell::new(Shared {
        next_toy: None,
        sigma: SIGMA_MAX,
        sigma_changed: false,
        resample: false,
        phase: Phase::Training,
        toy: toy.clone(),
        step: 0,
        loss_steps: Vec::new(),
        losses: Vec::new(),
        samples: Vec::new(),
        sampled: (0, 0),
        frame_ends: Default::default(),
        error: None,
    }));
    let engine = Engine::new(&gpu, &dataset, options).await.map_err(js)?;
    engine.set_sigma(&gpu, &scene.points, SIGMA_MAX).map_err(js)?;
    scene.set_density(&engine.data);
    let loop_shared = Rc::clone(&shared);
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = run(gpu, scene, engine, options, &loop_shared, &fault).await {
            fail(&loop_shared, e);
        }
    });
    Ok(Page { shared, adapter })
}

/// Philox4x32-10 numbers `offset .. offset + count` of `(seed, stream)`, computed by the
/// engine's noise kernel on its own device: the browser test compares them with the native
/// ones bit for bit.
#[wasm_bindgen]
pub async fn philox(seed: u32, stream: u32, offset: u32, count: u32) -> Result<Vec<u32>, JsError> {
    let gpu = Gpu::new().await.map_err(js)?;
    let out = GpuBuffer::<u32>::new(&gpu, "page.philox", count as usize, wgpu::BufferUsages::empty()).map_err(js)?;
    out.fill(&gpu, u32::MAX);
    let kernels = NoiseKernels::new(&gpu).await.map_err(js)?;
    kernels.fill_u32(&gpu, &out, seed as u64, stream as u64, offset as u64).map_err(js)?;
    out.read(&gpu).await.map_err(js)
}

/// Standard normals `offset .. offset + count` of `(seed, stream)` from the engine's
/// Box-Muller kernel, as [`philox`].
#[wasm_bindgen]
pub async fn normals(seed: u32, stream: u32, offset: u32, count: u32) -> Result<Vec<f32>, JsError> {
    let gpu = Gpu::new().await.map_err(js)?;
    let out = GpuBuffer::<f32>::new(&gpu, "page.normals", count as usize, wgpu::BufferUsages::empty()).map_err(js)?;
    out.fill(&gpu, f32::NAN);
    let kernels = NoiseKernels::new(&gpu).await.map_err(js)?;
    kernels.fill_normal(&gpu, &out, seed as u64, stream as u64, offset as u64).map_err(js)?;
    out.read(&gpu).await.map_err(js)
}

/// The engine's side for one toy: the data, the trainer, the learned field on the arrows'
/// lattice, and the sampler once training is done.
struct Engine {
    data: Vec<f32>,
    trainer: Trainer,
    field: Evaluator,
    sampler: Option<Sampler>,
    /// A new seed for every sampler, so "sample again" draws new noise.
    sampler_seed: u64,
}

impl Engine {
    async fn new(gpu: &Gpu, dataset: &Dataset, options: Options) -> scorefield::Result<Self> {
        let data = dataset.sample(DATA_POINTS, 0);
        let steps = options.steps as u64;
        let config = TrainConfig {
            adam: AdamConfig {
                lr: LR,
                schedule: LrSchedule::Cosine { steps },
                // An average over the last ~1/10 of the run, within the usual 0.99 .. 0.999.
                ema_decay: (1.0 - 10.0 / steps.max(1) as f64).clamp(0.99, 0.999),
                ..AdamConfig::default()
            },
            batch: options.batch as usize,
            seed: 0,
            steps_per_submit: options.steps_per_frame.max(1) as usize,
            on_nonfinite: NonFinite::Backoff { factor: 0.1, times: 3 },
            ..TrainConfig::new(
                MlpShape::new(2, 3, 128),
                Objective::Ncsn { sigma_max: SIGMA_MAX, sigma_min: SIGMA_MIN, levels: LEVELS },
            )
        };
        let trainer = Trainer::new(gpu, config, &data).await?;
        let field = Evaluator::new(gpu, trainer.model(), Weights::Ema, GRID * GRID).await?;
        Ok(Self { data, trainer, field, sampler: None, sampler_seed: 0 })
    }

    /// The learned field at noise level `sigma` on the arrows' lattice `points`.
    fn set_sigma(&self, gpu: &Gpu, points: &[f32], sigma: f64) -> scorefield::Result<()> {
        self.field.set_points(gpu, points, &vec![sigma.ln() as f32; GRID * GRID])
    }

    /// A sampler from fresh noise, annealing from `sigma` down to the smallest trained level.
    async fn start_sampling(&mut self, gpu: &Gpu, sigma: f64, options: Options) -> scorefield::Result<()> {
        self.sampler_seed += 1;
        let method = Method::AnnealedLangevin {
            sigmas: geometric_sigmas(sigma, SIGMA_MIN, LEVELS),
            steps_per_level: STEPS_PER_LEVEL,
            eps: EPS,
            denoise: true,
        };
        let source = ScoreSource::Network {
            model: self.trainer.model(),
            weights: Weights::Ema,
            parametrisation: self.trainer.config().objective.parametrisation(),
        };
        // One dispatch per frame.
        let config = SamplerConfig {
            steps_per_dispatch: options.sampler_steps_per_frame.max(1) as usize,
            ..SamplerConfig::new(options.particles as usize, self.sampler_seed)
        };
        self.sampler = Some(Sampler::new(gpu, source, &method, config).await?);
        Ok(())
    }
}

/// The page's loop: one iteration per animation frame until the page goes away.
async fn run(
    gpu: Gpu,
    mut scene: Scene,
    mut engine: Engine,
    options: Options,
    shared: &Rc<RefCell<Shared>>,
    fault: &Mutex<Option<String>>,
) -> Result<(), String> {
    let mut arrows = scene.arrows_group(engine.field.output());
    loop {
        next_frame().await?;
        if let Some(fault) = fault.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(fault);
        }
        let (next_toy, sigma, sigma_changed, resample, phase) = {
            let mut s = shared.borrow_mut();
            let taken = (s.next_toy.take(), s.sigma, s.sigma_changed, s.resample, s.phase);
            (s.sigma_changed, s.resample) = (false, false);
            taken
        };
        if phase == Phase::Failed {
            return Ok(());
        }
        if let Some(toy) = next_toy {
            engine = Engine::new(&gpu, &toy_dataset(&toy)?, options).await.map_err(text)?;
            engine.set_sigma(&gpu, &scene.points, sigma).map_err(text)?;
            scene.set_density(&engine.data);
            arrows = scene.arrows_group(engine.field.output());
            let mut s = shared.borrow_mut();
            (s.toy, s.phase, s.step, s.samples) = (toy, Phase::Training, 0, Vec::new());
            s.loss_steps.clear();
            s.losses.clear();
            continue;
        }
        if sigma_changed {
            engine.set_sigma(&gpu, &scene.points, sigma).map_err(text)?;
        }
        let mut encoder = gpu.encoder("page.frame");
        match phase {
            Phase::Training => {
                let step = engine.trainer.step();
                let (steps, log_every) = if step < LOG_FIRST {
                    (1, 1)
                } else {
                    ((options.steps as u64).saturating_sub(step).min(options.steps_per_frame as u64), LOG_EVERY)
                };
                engine.trainer.run(steps, log_every).map_err(text)?;
                let records = engine.trainer.take_losses().map_err(text)?;
                let done = engine.trainer.step() >= options.steps as u64;
                if done {
                    // The last losses, then sampling with the finished model.
                    let rest = engine.trainer.finish().await.map_err(text)?;
                    engine.start_sampling(&gpu, sigma, options).await.map_err(text)?;
                    record_losses(shared, records.into_iter().chain(rest));
                } else {
                    record_losses(shared, records);
                }
                let mut s = shared.borrow_mut();
                s.step = engine.trainer.step();
                if done {
                    s.phase = Phase::Sampling;
                }
            }
            Phase::Sampling | Phase::Done if sigma_changed || resample => {
                engine.start_sampling(&gpu, sigma, options).await.map_err(text)?;
                let mut s = shared.borrow_mut();
                (s.phase, s.samples) = (Phase::Sampling, Vec::new());
            }
            Phase::Sampling => {
                let sampler = engine.sampler.as_mut().ok_or("sampling without a sampler")?;
                sampler.record(&mut encoder, 1);
                if sampler.is_done() {
                    // Submit this frame's steps first: the read waits for them.
                    gpu.submit(std::mem::replace(&mut encoder, gpu.encoder("page.frame")));
                    let samples = sampler.read().await.map_err(text)?;
                    let mut s = shared.borrow_mut();
                    (s.phase, s.samples) = (Phase::Done, samples);
                }
            }
            Phase::Done | Phase::Failed => {}
        }
        engine.field.record(&gpu, &mut encoder);
        let particles = engine.sampler.as_ref().map(|s| (s.particles().raw(), options.particles));
        scene.draw(encoder, &arrows, particles).await.map_err(text)?;
        let mut s = shared.borrow_mut();
        s.sampled = engine.sampler.as_ref().map_or((0, 0), Sampler::progress);
        if s.frame_ends.len() == 30 {
            s.frame_ends.pop_front();
        }
        s.frame_ends.push_back(js_sys::Date::now());
    }
}

fn record_losses(shared: &Rc<RefCell<Shared>>, records: impl IntoIterator<Item = scorefield::train::LossRecord>) {
    let mut s = shared.borrow_mut();
    for r in records {
        s.loss_steps.push(r.step as u32);
        s.losses.push(r.mean() as f32);
    }
}

/// A 2-D toy by name (the page draws the plane; image datasets are for the command line).
fn toy_dataset(name: &str) -> Result<Dataset, String> {
    let dataset = Dataset::from_name(name).map_err(text)?;
    if dataset.dim() != 2 {
        return Err(format!("{name} is not a 2-D toy: the page draws points in the plane"));
    }
    Ok(dataset)
}

/// Resolves at the browser's next animation frame.
async fn next_frame() -> Result<(), String> {
    let window = web_sys::window().ok_or("no window (the page must run in a browser tab)")?;
    let mut asked = Ok(0);
    let frame = js_sys::Promise::new(&mut |resolve, _| asked = window.request_animation_frame(&resolve));
    asked.map_err(|e| format!("requestAnimationFrame failed: {e:?}"))?;
    JsFuture::from(frame).await.map(|_| ()).map_err(|e| format!("animation frame: {e:?}"))
}

/// A panic is a bug: say so on the page (main.js shows `scorefield.error`) and in the console,
/// instead of leaving the page frozen.
fn report_panic(info: &std::panic::PanicHookInfo) {
    let message = format!("the engine stopped on a bug: {info}");
    web_sys::console::error_1(&message.clone().into());
    if let Ok(page) = js_sys::Reflect::get(&js_sys::global(), &"scorefield".into()) {
        if page.is_object() {
            let _ = js_sys::Reflect::set(&page, &"error".into(), &message.into());
        }
    }
}

fn keep_first(fault: &Mutex<Option<String>>, message: String) {
    fault.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
}

/// Ends the run with `message` (the first failure is kept: later ones are its consequences).
fn fail(shared: &Rc<RefCell<Shared>>, message: String) {
    web_sys::console::error_1(&message.clone().into());
    let mut s = shared.borrow_mut();
    s.phase = Phase::Failed;
    s.error.get_or_insert(message);
}

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn text(e: scorefield::Error) -> String {
    e.to_string()
}
