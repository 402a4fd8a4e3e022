//! Errors on the device paths: a missing adapter and a device without the limits the kernels
//! need are `Err`s that say what to do, never panics. (One test binary of its own, since the
//! adapter test sets a process-wide environment variable.)

use scorefield::gpu::Gpu;
use scorefield::Error;

#[test]
fn unknown_adapter_name_is_an_error_listing_the_adapters() {
    // The only test in this binary that reads or writes the environment.
    std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere");
    let result = pollster::block_on(Gpu::new());
    std::env::remove_var("WGPU_ADAPTER_NAME");
    match result {
        Err(e @ Error::AdapterNotFound { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no-such-adapter-anywhere"), "message does not name the request: {msg}");
            assert!(msg.contains("the adapters here are"), "message does not list the adapters: {msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an adapter matched a name no adapter has"),
    }
}

#[test]
fn an_app_device_without_the_needed_limits_is_refused_by_name() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("CI has an adapter");
    // A device as a cautious app might make it: WebGL2-level limits, no storage buffers at all.
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::downlevel_webgl2_defaults(),
        ..Default::default()
    }))
    .expect("a device with lower limits");
    match Gpu::from_device(device, queue) {
        Err(e @ Error::Limit { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("max_") && msg.contains("needs at least"), "unclear message: {msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a device without storage buffers was accepted"),
    }
}

#[test]
fn a_lost_device_ends_training_with_an_error() {
    use scorefield::model::MlpShape;
    use scorefield::objective::Objective;

    use scorefield::train::{TrainConfig, Trainer};
    let gpu = pollster::block_on(Gpu::new()).expect("CI has an adapter");
    let config = TrainConfig {
        batch: 32,
        seed: 1,
        steps_per_submit: 5,
        ..TrainConfig::new(MlpShape::new(2, 1, 16), Objective::Dsm { sigma: 0.1 })
    };
    let data: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let mut trainer = pollster::block_on(Trainer::new(&gpu, config, &data)).unwrap();
    trainer.run(10, 5).unwrap();
    pollster::block_on(trainer.finish()).unwrap();
    // The closest wgpu offers to a device reset or an unplugged GPU.
    gpu.device().destroy();
    let lost = |what: &str, result: Result<(), Error>| match result {
        Err(e @ Error::DeviceLost(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("device lost (Destroyed)") && msg.contains("--resume"), "{what}: {msg}");
        }
        other => panic!("{what}: expected a device-lost error, got {other:?}"),
    };
    let run = trainer.run(10, 5).and_then(|()| pollster::block_on(trainer.finish()).map(|_| ()));
    lost("training", run);
    // No checkpoint can be taken from a lost device, so none overwrites the last good one.
    lost("checkpoint", pollster::block_on(trainer.checkpoint(Default::default())).map(|_| ()));
}

/// A device with the least limits the engine accepts: what does not fit one dispatch or one
/// binding is refused naming the limit, and evaluation, which runs in chunks, gives the same
/// numbers in chunks as in one pass.
#[test]
fn small_device_limits_are_named_or_worked_around() {
    use scorefield::mixture::GaussianMixture;
    use scorefield::model::{Evaluator, MlpShape, ScoreMlp, Weights};
    use scorefield::objective::Objective;

    use scorefield::sample::{Method, Sampler, SamplerConfig, ScoreSource};
    use scorefield::train::{TrainConfig, Trainer};
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("CI has an adapter");
    let limits = wgpu::Limits {
        max_compute_workgroups_per_dimension: 1024,
        max_storage_buffer_binding_size: 16 << 20,
        max_buffer_size: 16 << 20,
        ..wgpu::Limits::default()
    };
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() }),
    )
    .expect("a device with small limits");
    let gpu = Gpu::from_device(device, queue).expect("the least limits the engine accepts");
    let shape = MlpShape::new(2, 1, 16);
    // One more batch row than 1024 workgroups of 64 rows.
    let config = TrainConfig {
        batch: 1024 * 64 + 1,
        seed: 1,
        steps_per_submit: 1,
        ..TrainConfig::new(shape, Objective::Dsm { sigma: 0.1 })
    };
    let data = vec![0.5f32; 64];
    let msg = pollster::block_on(Trainer::new(&gpu, config, &data)).err().expect("refused").to_string();
    assert!(msg.contains("max_compute_workgroups_per_dimension") && msg.contains("65537"), "{msg}");
    // 2.2 million 2-D particles: more than 16 MiB in one buffer.
    let mixture = GaussianMixture::eight_gaussians();
    let method = Method::annealed_langevin(4.0);
    let source = ScoreSource::Mixture(&mixture);
    let err = pollster::block_on(Sampler::new(&gpu, source, &method, SamplerConfig::new(2_200_000, 1))).err();
    let msg = err.expect("refused").to_string();
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
    // Evaluation in chunks of 100 rows matches one pass over all 1000, bit for bit.
    let model = ScoreMlp::new(&gpu, shape, 3).unwrap();
    let x: Vec<f32> = (0..2000).map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0).collect();
    let cond = vec![-1.0f32; 1000];
    let eval = |batch| {
        let e = pollster::block_on(Evaluator::new(&gpu, &model, Weights::Raw, batch)).unwrap();
        pollster::block_on(e.run(&gpu, &x, &cond)).unwrap()
    };
    let (chunked, whole) = (eval(100), eval(1000));
    assert!(chunked.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "chunks differ from one pass");
}

/// Issue #18: a command the device rejects outside the engine's error scopes (a validation
/// error) is reported as an internal error naming what failed, not as a lost device whose
/// message sends the user to `--resume`.
#[test]
fn a_rejected_command_is_an_internal_error_not_a_lost_device() {
    let gpu = pollster::block_on(Gpu::new()).expect("CI has an adapter");
    assert!(gpu.check().is_ok());
    // MAP_READ may only go with COPY_DST: a validation error, outside any error scope.
    let _bad = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test.rejected"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    match gpu.wait(None) {
        Err(e @ Error::Internal(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("test.rejected") && msg.contains("bug") && !msg.contains("--resume"), "{msg}");
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
}
