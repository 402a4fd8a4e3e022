//! Every kernel, as composed by the loader, parsed and validated by naga and translated to
//! SPIR-V, MSL, HLSL and GLSL, with no GPU. Where `spirv-val` and `glslangValidator` are
//! installed (scripts/setup.sh installs them; without them that part skips and says so, except
//! under SCOREFIELD_REQUIRE_TOOLS=1, as in CI, where their absence is a failure)
//! the SPIR-V and GLSL are checked by them too, so a kernel one backend would reject fails here.
//! Also checks that each `#[repr(C)]` params struct matches its WGSL twin byte for byte.

mod common;

use std::path::PathBuf;
use std::process::Command;

use naga::back::pipeline_constants::process_overrides;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

fn parse_and_validate(name: &str, source: &str) -> Result<(naga::Module, ModuleInfo), String> {
    let module =
        naga::front::wgsl::parse_str(source).map_err(|e| format!("{name}: parse: {}", e.emit_to_string(source)))?;
    // Subgroup operations are allowed here; only kernels marked `subgroups` use them (checked
    // below), and the host builds those only on devices with the feature.
    let info = Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP)
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {}", e.emit_to_string(source)))?;
    Ok((module, info))
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shaders");
    std::fs::create_dir_all(&dir).expect("create shader output dir");
    dir
}

/// Whether spirv-val and glslangValidator are installed (see [`common::tools_present`]).
fn validators_present() -> bool {
    let missing: Vec<&str> =
        [("spirv-val", "spirv-val (spirv-tools)"), ("glslangValidator", "glslangValidator (glslang-tools)")]
            .into_iter()
            .filter(|(tool, _)| !common::runs(tool, "--version"))
            .map(|(_, what)| what)
            .collect();
    common::tools_present("checking the SPIR-V and GLSL with their validators", &missing)
}

/// Runs an external validator; returns an error string if it rejects the file or cannot run.
fn external_check(tool: &str, args: &[&str], file: &PathBuf) -> Option<String> {
    match Command::new(tool).args(args).arg(file).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{tool} rejects {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Some(format!("{tool} could not run: {e}")),
    }
}

#[test]
fn every_kernel_validates_and_translates_to_every_backend() {
    let mut errors = Vec::new();
    let dir = out_dir();
    let validators = validators_present();
    for kernel in scorefield::shaders::ALL {
        let source = kernel.compose();
        let (module, info) = match parse_and_validate(kernel.name, &source) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !kernel.subgroups && Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module).is_err()
        {
            errors.push(format!("{}: uses subgroup operations but is not marked `subgroups`", kernel.name));
        }
        for ep in &module.entry_points {
            let stage_ep = Some((ep.stage, ep.name.as_str()));
            // Specialise with the defaults, as a pipeline without constants would.
            let (m, i) = match process_overrides(&module, &info, stage_ep, &Default::default()) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("{}.{}: overrides: {e:?}", kernel.name, ep.name));
                    continue;
                }
            };
            let tag = format!("{}.{}", kernel.name, ep.name);

            let spv_opts = naga::back::spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
            // Group operations need SPIR-V 1.3, which wgpu's Vulkan backend writes for them.
            let spv = naga::back::spv::Options {
                lang_version: if kernel.subgroups { (1, 3) } else { naga::back::spv::Options::default().lang_version },
                ..Default::default()
            };
            match naga::back::spv::write_vec(&m, &i, &spv, Some(&spv_opts)) {
                Ok(words) => {
                    let file = dir.join(format!("{tag}.spv"));
                    std::fs::write(&file, bytemuck::cast_slice::<u32, u8>(&words)).expect("write spv");
                    errors.extend(
                        validators
                            .then(|| external_check("spirv-val", &["--target-env", "vulkan1.1"], &file))
                            .flatten(),
                    );
                }
                Err(e) => errors.push(format!("{tag}: SPIR-V: {e}")),
            }

            let msl_opts = naga::back::msl::PipelineOptions {
                entry_point: Some((ep.stage, ep.name.clone())),
                ..Default::default()
            };
            if let Err(e) = naga::back::msl::write_string(&m, &i, &Default::default(), &msl_opts) {
                errors.push(format!("{tag}: MSL: {e}"));
            }

            // Wave intrinsics (subgroups) need shader model 6.
            let hlsl_opts = naga::back::hlsl::Options {
                shader_model: if kernel.subgroups {
                    naga::back::hlsl::ShaderModel::V6_0
                } else {
                    naga::back::hlsl::Options::default().shader_model
                },
                ..Default::default()
            };
            let hlsl_pipe = naga::back::hlsl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())) };
            let mut hlsl = String::new();
            if let Err(e) = naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_opts, &hlsl_pipe).write(&m, &i, None) {
                errors.push(format!("{tag}: HLSL: {e}"));
            }

            // wgpu's GL backend offers no subgroups: such kernels never run there.
            if kernel.subgroups {
                continue;
            }
            let glsl_opts = naga::back::glsl::Options {
                version: naga::back::glsl::Version::Embedded { version: 310, is_webgl: false },
                ..Default::default()
            };
            let glsl_pipe = naga::back::glsl::PipelineOptions {
                shader_stage: ep.stage,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            let mut glsl = String::new();
            match naga::back::glsl::Writer::new(&mut glsl, &m, &i, &glsl_opts, &glsl_pipe, Default::default())
                .and_then(|mut w| w.write())
            {
                Ok(_) => {
                    let file = dir.join(format!("{tag}.comp"));
                    std::fs::write(&file, &glsl).expect("write glsl");
                    errors.extend(validators.then(|| external_check("glslangValidator", &[], &file)).flatten());
                }
                Err(e) => errors.push(format!("{tag}: GLSL: {e}")),
            }
        }
    }
    assert!(errors.is_empty(), "{} shader problems:\n{}", errors.len(), errors.join("\n"));
}

/// Size and member offsets of a WGSL struct, from naga's layouter.
fn wgsl_layout(source: &str, name: &str) -> (u32, Vec<(String, u32)>) {
    let (module, _) = parse_and_validate(name, source).expect("kernel validates");
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).expect("layout");
    let (handle, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let naga::TypeInner::Struct { members, .. } = &ty.inner else { panic!("{name} is not a struct") };
    (layouter[handle].size, members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset)).collect())
}

macro_rules! check_twin {
    ($kernel:expr, $ty:ty, $wgsl:literal, [$($field:ident),*]) => {{
        let (size, members) = wgsl_layout(&$kernel.compose(), $wgsl);
        assert_eq!(size as usize, std::mem::size_of::<$ty>(), "size of {}", $wgsl);
        let rust: Vec<(String, u32)> = vec![$((stringify!($field).to_string(), std::mem::offset_of!($ty, $field) as u32)),*];
        assert_eq!(members, rust, "member offsets of {}", $wgsl);
    }};
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    use scorefield::shaders;
    check_twin!(shaders::NOISE, scorefield::noise::NoiseParams, "NoiseParams", [seed, stream, offset, count, _pad]);
    check_twin!(
        shaders::ADAM,
        scorefield::train::StepParams,
        "StepParams",
        [
            seed, step, n_data, lr, beta1, beta2, adam_eps, bias_c1, bias_c2, ema_decay, t_min, sigma_min, sigma_max,
            beta_min, beta_max
        ]
    );
    check_twin!(
        shaders::SAMPLE,
        scorefield::sample::SampleStep,
        "SampleStep",
        [stream, flags, _pad, a, sigma, cond, out_scale, c_x, c_s, c_z, c_p, k_x, k_s, snr, snr_alpha]
    );
    check_twin!(shaders::SAMPLE, scorefield::sample::SampleCursor, "SampleCursor", [seed, first, count]);
    check_twin!(
        shaders::LIKELIHOOD,
        scorefield::likelihood::Clock,
        "Clock",
        [seed, t, h, done, accepted, attempts, rejected, evaluations, err]
    );
}

/// The `const NAME: u32 = VALUE;` declarations of a WGSL source, by name.
fn wgsl_constants(source: &str) -> std::collections::BTreeMap<String, u64> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("const ")?;
            let (name, rest) = rest.split_once(':')?;
            let value = rest.split_once('=')?.1.split(';').next()?.trim().trim_end_matches('u');
            let value = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => value.parse().ok()?,
            };
            Some((name.trim().to_string(), value))
        })
        .collect()
}

/// Issue #18: every constant mirrored between a WGSL file and Rust has the same value on both
/// sides (they were kept equal by comments only): RNG stream ids, sampler step flags, the fused
/// path's size limits, the uniform window, the health flags.
#[test]
fn constants_mirrored_between_wgsl_and_rust_agree() {
    use scorefield::rng::Stream;
    use scorefield::sample::method::{FLAG_CLIP_X0, FLAG_IMPUTE, FLAG_NO_SCORE, FLAG_SAVE};
    use scorefield::sample::{
        MAX_FUSED_DIM, MAX_FUSED_FLOATS, MAX_FUSED_LAYERS, MAX_FUSED_NARROW_WIDTH, MAX_FUSED_PARTICLES,
    };
    use scorefield::shaders;
    use scorefield::train::{HEALTH_CLEAN, HEALTH_QUANTITIES};
    let objective = wgsl_constants(shaders::OBJECTIVE_WGSL);
    let sample = wgsl_constants(shaders::SAMPLE_WGSL);
    let step = wgsl_constants(shaders::STEP_WGSL);
    let mlp = wgsl_constants(shaders::DENSE_WGSL);
    let likelihood = wgsl_constants(shaders::LIKELIHOOD_WGSL);
    use scorefield::{model, objective};
    let window_vec4s = scorefield::gpu::UNIFORM_WINDOW_BYTES / 16;
    let pairs: Vec<(&str, &std::collections::BTreeMap<String, u64>, u64)> = vec![
        ("STREAM_BATCH_INDEX", &objective, Stream::BatchIndex as u64),
        ("STREAM_NOISE_LEVEL", &objective, Stream::NoiseLevel as u64),
        ("STREAM_NOISE_VALUE", &objective, Stream::NoiseValue as u64),
        ("STREAM_PROJECTION", &objective, Stream::Projection as u64),
        ("STREAM_CLASS_DROP", &objective, Stream::ClassDrop as u64),
        ("STREAM_PROBE", &likelihood, Stream::Probe as u64),
        ("ESTIMATOR_EXACT", &likelihood, objective::ESTIMATOR_EXACT as u64),
        ("ESTIMATOR_GAUSSIAN", &likelihood, objective::ESTIMATOR_GAUSSIAN as u64),
        ("ESTIMATOR_RADEMACHER", &likelihood, objective::ESTIMATOR_RADEMACHER as u64),
        ("DONE_RUNNING", &likelihood, scorefield::likelihood::DONE_RUNNING as u64),
        ("DONE_REACHED", &likelihood, scorefield::likelihood::DONE_REACHED as u64),
        ("DONE_FAILED", &likelihood, scorefield::likelihood::DONE_FAILED as u64),
        ("MAX_D", &likelihood, MAX_FUSED_DIM as u64),
        ("FLAG_SAVE", &sample, FLAG_SAVE as u64),
        ("FLAG_NO_SCORE", &sample, FLAG_NO_SCORE as u64),
        ("FLAG_CLIP_X0", &sample, FLAG_CLIP_X0 as u64),
        ("FLAG_IMPUTE", &sample, FLAG_IMPUTE as u64),
        ("STREAM_SAMPLER_IMPUTE", &sample, Stream::SamplerImpute as u64),
        ("MAX_D", &sample, MAX_FUSED_FLOATS as u64),
        ("MAX_PPI", &sample, MAX_FUSED_PARTICLES as u64),
        ("MAX_H4", &sample, (MAX_FUSED_NARROW_WIDTH / 4 * MAX_FUSED_PARTICLES) as u64),
        ("MAX_LAYERS", &sample, MAX_FUSED_LAYERS as u64),
        ("WINDOW", &sample, window_vec4s),
        ("HEALTH_LOSS", &step, HEALTH_QUANTITIES.iter().position(|q| *q == "loss").unwrap() as u64),
        ("HEALTH_GRADIENT", &step, HEALTH_QUANTITIES.iter().position(|q| *q == "gradient").unwrap() as u64),
        ("HEALTH_PARAMETER", &step, HEALTH_QUANTITIES.iter().position(|q| q.starts_with("parameter")).unwrap() as u64),
        ("HEALTH_CLEAN", &step, HEALTH_CLEAN[0] as u64),
        ("MODE_FORWARD", &mlp, model::MODE_FORWARD as u64),
        ("MODE_BACKWARD_INPUT", &mlp, model::MODE_BACKWARD_INPUT as u64),
        ("MODE_BACKWARD_WEIGHT", &mlp, model::MODE_BACKWARD_WEIGHT as u64),
        ("SCHEDULE_TABLE", &objective, objective::SCHEDULE_TABLE as u64),
        ("SCHEDULE_VE", &objective, objective::SCHEDULE_VE as u64),
        ("SCHEDULE_VP", &objective, objective::SCHEDULE_VP as u64),
        ("ESTIMATOR_EXACT", &objective, objective::ESTIMATOR_EXACT as u64),
        ("ESTIMATOR_GAUSSIAN", &objective, objective::ESTIMATOR_GAUSSIAN as u64),
        ("ESTIMATOR_RADEMACHER", &objective, objective::ESTIMATOR_RADEMACHER as u64),
    ];
    for (name, constants, rust) in pairs {
        let wgsl = constants.get(name).unwrap_or_else(|| panic!("{name} is not declared in its WGSL file"));
        assert_eq!(*wgsl, rust, "{name}: WGSL {wgsl} vs Rust {rust}");
    }
}

/// Issue #18: the host builds bind groups from named binding numbers (each family's
/// `binding` module); every kernel's table names exactly the WGSL variables of group 0 with
/// their numbers, so renumbering a binding on one side only fails here.
#[test]
fn named_bindings_match_the_shaders() {
    let mut errors = Vec::new();
    for kernel in scorefield::shaders::ALL {
        let source = kernel.compose();
        let (module, _) = parse_and_validate(kernel.name, &source).unwrap();
        let mut in_wgsl: Vec<(String, u32)> = module
            .global_variables
            .iter()
            .filter_map(|(_, var)| {
                let binding = var.binding.as_ref()?;
                assert_eq!(binding.group, 0, "{}: {:?} is not in group 0", kernel.name, var.name);
                Some((var.name.clone().unwrap_or_default(), binding.binding))
            })
            .collect();
        let mut in_rust: Vec<(String, u32)> =
            kernel.bindings.iter().map(|(name, binding)| (name.to_lowercase(), *binding)).collect();
        in_wgsl.sort();
        in_rust.sort();
        if in_wgsl != in_rust {
            errors.push(format!("{}: WGSL {in_wgsl:?}\n  Rust {in_rust:?}", kernel.name));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
