//! The binary end to end: a tiny training run, sampling from its checkpoint and from an exact
//! score, the .npy read back, resuming, and bad input met with messages that name the problem.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use scorefield::mixture::GaussianMixture;

/// The binary, set up to run in `dir`.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scorefield"));
    command.args(args).current_dir(dir).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    command
}

fn scorefield(dir: &Path, args: &[&str]) -> Output {
    let out = command(dir, args).output().expect("the binary runs");
    eprintln!(
        "scorefield {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("scorefield-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A grayscale PNG of `width` x `height` with pixel values from `f(x, y)`.
fn write_png(path: &Path, width: u32, height: u32, f: impl Fn(u32, u32) -> u8) {
    image::GrayImage::from_fn(width, height, |x, y| image::Luma([f(x, y)])).save(path).unwrap();
}

/// The number printed right after `label` in `text`.
fn number_after(text: &str, label: &str) -> f64 {
    text.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in {text}"))
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

#[test]
fn train_sample_and_resume_from_the_command_line() {
    let dir = temp_dir("e2e");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "64", "--dataset", "two-moons"];
    let out = scorefield(&dir, &[&["train", "--run", "run", "--steps", "40"][..], &tiny].concat());
    assert!(out.status.success());
    for f in ["config.toml", "log.jsonl", "checkpoint.safetensors", "loss.png"] {
        assert!(dir.join("run").join(f).exists(), "{f} missing from the run folder");
    }
    let log = std::fs::read_to_string(dir.join("run/log.jsonl")).unwrap();
    assert!(log.lines().count() >= 1 && log.contains("\"loss_per_level\""), "log: {log}");

    // Resume to 60 steps.
    let out = scorefield(&dir, &[&["train", "--run", "run", "--steps", "60", "--resume"][..], &tiny].concat());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("trained 60 steps"));

    let args = [
        "sample",
        "--checkpoint",
        "run/checkpoint.safetensors",
        "--out",
        "run/x.npy",
        "-n",
        "300",
        "--sampler-steps",
        "3",
    ];
    assert!(scorefield(&dir, &args).status.success());
    let (shape, values) = read_npy(&dir.join("run/x.npy"));
    assert_eq!(shape, vec![300, 2]);
    assert!(values.iter().all(|v| v.is_finite()));
    for f in ["samples.png", "score_field.png", "sampling.gif"] {
        assert!(dir.join("run").join(f).exists(), "{f} missing after sampling");
    }

    let args = [
        "sample",
        "--exact-score",
        "--sampler",
        "euler-maruyama",
        "--sampler-steps",
        "200",
        "-n",
        "500",
        "--out",
        "exact/y.npy",
    ];
    assert!(scorefield(&dir, &args).status.success());
    let (shape, values) = read_npy(&dir.join("exact/y.npy"));
    assert_eq!(shape, vec![500, 2]);
    // The exact score of the eight Gaussians puts the samples near radius 4.
    let mean_radius = values.chunks(2).map(|p| (p[0].hypot(p[1])) as f64).sum::<f64>() / 500.0;
    assert!((mean_radius - 4.0).abs() < 0.3, "mean radius {mean_radius}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_a_message_that_names_it() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("typo.toml"), "[train]\nstepz = 10\n").unwrap();
    std::fs::write(
        dir.join("mix.toml"),
        "[data]\ndataset = \"mixture\"\nweights = [0.5, 0.6]\nmeans = [[0, 0], [1, 1]]\nstds = [1, 1]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("nan.toml"),
        "[data]\ndataset = \"mixture\"\nweights = [0.5, 0.5]\nmeans = [[0, nan], [1, 1]]\nstds = [1, 1]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("mixed")).unwrap();
    write_png(&dir.join("mixed/a.png"), 4, 4, |x, _| x as u8 * 60);
    write_png(&dir.join("mixed/b.png"), 5, 4, |x, _| x as u8 * 60);
    std::fs::create_dir_all(dir.join("broken")).unwrap();
    write_png(&dir.join("broken/a.png"), 4, 4, |x, _| x as u8 * 60);
    std::fs::write(dir.join("broken/b.png"), b"\x89PNG truncated").unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    for (args, needle) in [
        (vec!["train", "--config", "typo.toml"], "stepz"),
        (vec!["train", "--config", "mix.toml", "--steps", "1"], "sum to 1"),
        (vec!["train", "--dataset", "moons", "--steps", "1"], "unknown dataset `moons`"),
        (vec!["train", "--batch", "0", "--steps", "1"], "train.batch"),
        (vec!["sample", "--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (vec!["sample", "--exact-score", "--dataset", "spirals"], "exact noised score"),
        (vec!["sample"], "--checkpoint PATH or --exact-score"),
        // A bad output path is found before the work, not after it.
        (vec!["sample", "--exact-score", "--out", "typo.toml/x.npy"], "cannot write typo.toml/x.npy"),
        (vec!["train", "--run", "typo.toml/run", "--steps", "1"], "cannot write typo.toml/run/config.toml"),
        (vec!["fields", "--checkpoint", "missing.safetensors", "--out", "mixed"], "mixed is a folder"),
        (vec!["train", "--config", "nan.toml", "--steps", "1"], "is not finite"),
        (vec!["train", "--dataset", "images", "--data-path", "mixed", "--steps", "1"], "b.png"),
        (vec!["train", "--dataset", "images", "--data-path", "broken", "--steps", "1"], "b.png"),
        (vec!["train", "--dataset", "images", "--data-path", "empty", "--steps", "1"], "no images"),
        (vec!["train", "--dataset", "density", "--data-path", "gone.png", "--steps", "1"], "gone.png"),
        (vec!["train", "--adapter", "no-such-gpu", "--steps", "1"], "no-such-gpu"),
    ] {
        // Many users keep RUST_BACKTRACE=1 in their shell: errors still read as a few lines.
        let out = command(&dir, &args).env("RUST_BACKTRACE", "1").output().expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("scorefield {}:\n{err}", args.join(" "));
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: the message should name `{needle}`: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(err.starts_with("error: ") || err.contains("\nerror: "), "{args:?}: no `error: ` line: {err}");
        assert!(!err.contains("backtrace") && !err.contains("lang_start"), "{args:?} printed a backtrace: {err}");
        assert!(err.lines().count() <= 8, "{args:?}: {} lines of error: {err}", err.lines().count());
        // Found before any work: nothing was sampled or trained.
        assert!(!String::from_utf8_lossy(&out.stdout).contains("samples ("), "{args:?} sampled first");
    }
    // A backtrace when asked for.
    let out = command(&dir, &["-v", "sample", "--checkpoint", "missing.safetensors"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("backtrace:"), "-v: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pictures_are_datasets_too() {
    let dir = temp_dir("pictures");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "32", "--steps", "20"];
    // A folder of 6x4 images: training on it and sampling gives [n, 24] and a grid picture.
    std::fs::create_dir_all(dir.join("faces")).unwrap();
    for k in 0..5u32 {
        write_png(&dir.join(format!("faces/{k}.png")), 6, 4, |x, y| ((x + y + k) * 20) as u8);
    }
    let out = scorefield(
        &dir,
        &[&["train", "--run", "img", "--dataset", "images", "--data-path", "faces"][..], &tiny].concat(),
    );
    assert!(out.status.success());
    let args = [
        "sample",
        "--checkpoint",
        "img/checkpoint.safetensors",
        "--out",
        "img/x.npy",
        "-n",
        "40",
        "--sampler-steps",
        "2",
    ];
    assert!(scorefield(&dir, &args).status.success());
    let (shape, _) = read_npy(&dir.join("img/x.npy"));
    assert_eq!(shape, vec![40, 24]);
    let grid = image::open(dir.join("img/samples.png")).unwrap();
    // Two grids (24 pixels apart) of 4 rows of 10 images, each 6x4 image scaled 5x (32 / 6) to
    // 30x20, with 2-pixel gaps around every image, under a 36-pixel band of titles.
    assert_eq!((grid.width(), grid.height()), (2 * (10 * 32 + 2) + 24, 36 + 4 * 22 + 2));
    // The titles ("data", "samples") are drawn in the band over each grid.
    let grid = grid.to_rgb8();
    for x0 in [0, 10 * 32 + 2 + 24] {
        let ink = (x0..x0 + 10 * 32).flat_map(|x| (0..36).map(move |y| (x, y)));
        let dark = ink.filter(|&(x, y)| grid.get_pixel(x, y).0.iter().all(|&c| c < 100)).count();
        assert!(dark > 30, "no title over the grid at x = {x0} ({dark} dark pixels)");
    }

    // A picture as a 2-D density: a bright square in the top-right quarter of a dark 16x16.
    write_png(&dir.join("square.png"), 16, 16, |x, y| if x >= 8 && y < 8 { 255 } else { 0 });
    let out = scorefield(
        &dir,
        &[&["train", "--run", "dens", "--dataset", "density", "--data-path", "square.png"][..], &tiny].concat(),
    );
    assert!(out.status.success());
    assert!(dir.join("dens/loss.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_stops_training_cleanly_with_a_checkpoint() {
    let dir = temp_dir("ctrlc");
    let args =
        ["train", "--run", "run", "--steps", "1000000", "--width", "16", "--hidden-layers", "1", "--batch", "64"];
    let child =
        command(&dir, &args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait until training has logged (so the handler is installed and steps are running).
    let log = dir.join("run/log.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(started.elapsed().as_secs() < 120, "training never logged");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "Ctrl-C should end the run normally");
    assert!(stdout.contains("stopped at step"), "{stdout}");
    let bytes = std::fs::read(dir.join("run/checkpoint.safetensors")).unwrap();
    let ckpt = scorefield::checkpoint::Checkpoint::from_bytes(&bytes).unwrap();
    assert!(ckpt.step > 0 && ckpt.step < 1_000_000, "checkpoint at step {}", ckpt.step);
    assert!(ckpt.params.iter().all(|v| v.is_finite()));
    // And the run resumes from it.
    let target = (ckpt.step + 10).to_string();
    let args = [
        "train",
        "--run",
        "run",
        "--resume",
        "--steps",
        &target,
        "--width",
        "16",
        "--hidden-layers",
        "1",
        "--batch",
        "64",
    ];
    let out = scorefield(&dir, &args);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("trained {target} steps")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #6, item 7: the main job's model samples the eight Gaussians, checked against exact
/// samples with the thresholds of tests/common/eight.rs.
#[test]
fn the_main_job_learns_the_eight_gaussians() {
    let dir = temp_dir("main-job");
    // The main job itself: no arguments, into runs/main.
    let out = scorefield(&dir, &[]);
    assert!(out.status.success());
    // Not in a terminal (stderr is a pipe here): progress lines instead of a bar, at least one
    // over the minutes of training.
    let err = String::from_utf8_lossy(&out.stderr);
    let progress = err.lines().filter(|l| l.starts_with("step ") && l.contains("steps/s") && l.ends_with("left"));
    assert!(progress.count() >= 1, "no progress lines: {err}");
    for f in ["checkpoint.safetensors", "samples.npy", "samples.png", "loss.png", "score_field.png", "sampling.gif"] {
        assert!(dir.join("runs/main").join(f).exists(), "the main job did not write {f}");
    }
    // A fresh, larger sample from its checkpoint, with the main job's sampler.
    let seed = common::test_seed();
    let n = 4096;
    let seed_arg = (seed % 1_000_000).to_string();
    let args = [
        "sample",
        "--checkpoint",
        "runs/main/checkpoint.safetensors",
        "--out",
        "check/x.npy",
        "-n",
        "4096",
        "--sample-seed",
        &seed_arg,
    ];
    assert!(scorefield(&dir, &args).status.success());
    let (shape, x) = read_npy(&dir.join("check/x.npy"));
    assert_eq!(shape, vec![n as u64, 2]);
    // The tolerated weight error, 0.02 on two modes: the main job's recipe leaves its model's
    // weights off by 0.011-0.024 (largest |share - 1/8| over 4096-sample draws; a systematic
    // 0.011 in 24576 samples of the current model; BENCHMARKS.md "The main job's mode
    // weights"), and with none tolerated its MMD^2 (2-4.5e-4 over seven draws) sat at the
    // exact-score limit, failing some CI runs.
    let check = common::EightGaussiansCheck::new(n, seed, 0.02);
    check.rejects_what_it_must(n, seed);
    eprintln!("main job samples:");
    let problems = check.problems(&x);
    assert!(problems.is_empty(), "{problems:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #10, item 4: SIGKILL at random moments (checkpoints are written every few steps, so
/// many kills land during a write) never leaves the run without a loadable checkpoint, and
/// `--resume` continues from it.
#[test]
fn killing_training_at_random_moments_leaves_a_loadable_checkpoint() {
    let dir = temp_dir("sigkill");
    std::fs::write(
        dir.join("tiny.toml"),
        "[model]\nwidth = 16\nhidden_layers = 1\n[train]\nsteps = 1000000\nbatch = 64\nlog_every = 5\ncheckpoint_every = 5\n",
    )
    .unwrap();
    let ckpt = dir.join("run/checkpoint.safetensors");
    let mut rng = common::TestRng(common::test_seed());
    let mut last_step = 0;
    for round in 0..8 {
        let mut args = vec!["train", "--run", "run", "--config", "tiny.toml"];
        if round > 0 {
            args.push("--resume");
            // What a write killed halfway leaves (whether or not this round's kill did).
            std::fs::write(dir.join("run/.checkpoint.safetensors.tmp-4000000"), b"half a checkpoint").unwrap();
        }
        let mut child = command(&dir, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it reach a checkpoint beyond the last one, then kill it 0-300 ms later.
        let started = std::time::Instant::now();
        loop {
            let step = std::fs::read(&ckpt)
                .ok()
                .and_then(|b| scorefield::checkpoint::Checkpoint::from_bytes(&b).ok())
                .map(|c| c.step);
            if step.is_some_and(|s| s > last_step) {
                // The run has started and written: no temporary file of a killed run is left
                // (a write killed halfway leaves `.name.tmp-PID`; a new run removes them).
                let own = format!(".tmp-{}", child.id());
                let stale: Vec<String> = std::fs::read_dir(dir.join("run"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.contains(".tmp-") && !n.ends_with(&own))
                    .collect();
                assert!(stale.is_empty(), "round {round}: temporary files of killed runs left: {stale:?}");
                break;
            }
            assert!(started.elapsed().as_secs() < 120, "round {round}: no new checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.next_u64() % 300));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let bytes = std::fs::read(&ckpt).unwrap_or_else(|e| panic!("round {round}: no checkpoint after the kill: {e}"));
        let loaded = scorefield::checkpoint::Checkpoint::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("round {round}: the checkpoint does not load: {e}"));
        assert!(
            loaded.step >= last_step,
            "round {round}: the checkpoint went back from {last_step} to {}",
            loaded.step
        );
        let left = std::fs::read_dir(dir.join("run"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count();
        eprintln!("round {round}: killed; checkpoint at step {}; {left} temporary files left by the kill", loaded.step);
        last_step = loaded.step;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn score_matching_objectives_train_sample_and_compare_fields() {
    let dir = temp_dir("score-matching");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "32", "--steps", "20", "--sigma", "0"];
    for objective in ["exact", "sliced", "sliced-vr"] {
        let args = [&["train", "--run", objective, "--objective", objective][..], &tiny].concat();
        assert!(scorefield(&dir, &args).status.success(), "training with {objective}");
    }
    // The sampler follows the single-level objective (Langevin) without being told.
    let args = ["sample", "--checkpoint", "sliced/checkpoint.safetensors", "--out", "sliced/x.npy", "-n", "40"];
    assert!(scorefield(&dir, &args).status.success());
    assert_eq!(read_npy(&dir.join("sliced/x.npy")).0, vec![40, 2]);
    let args = [
        "fields",
        "--checkpoint",
        "exact/checkpoint.safetensors",
        "--checkpoint",
        "sliced/checkpoint.safetensors",
        "--checkpoint",
        "sliced-vr/checkpoint.safetensors",
        "--out",
        "fields.png",
    ];
    assert!(scorefield(&dir, &args).status.success());
    // Three learned panels and the exact one, side by side (square panels, thin gaps).
    let (w, h) = image::image_dimensions(dir.join("fields.png")).unwrap();
    assert_eq!((w as f64 / h as f64).round(), 4.0, "fields.png is {w} x {h}");
    // A sampler that needs many levels is refused by name for a one-level model.
    let out = scorefield(
        &dir,
        &["sample", "--checkpoint", "exact/checkpoint.safetensors", "--sampler", "annealed", "--out", "a.npy"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sample.sampler") && err.contains("langevin"), "{err}");
}

#[test]
fn a_diverging_run_ends_with_a_message_and_a_finite_checkpoint() {
    let dir = temp_dir("diverge");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "32", "--steps", "200", "--lr", "1e10"];
    // The default policy backs off three times (a tenth of the rate each), then gives up.
    let out = scorefield(&dir, &[&["train", "--run", "backoff"][..], &tiny].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("from now on").count(), 3, "{err}");
    assert!(err.contains("learning rate x 1.000e-3 from now on"), "{err}");
    assert!(err.contains("training diverged") && err.contains("holds that state"), "{err}");
    // Stopping at once, as configured.
    std::fs::write(dir.join("stop.toml"), "[train]\non_nonfinite = \"stop\"\n").unwrap();
    let out = scorefield(&dir, &[&["train", "--run", "stop", "--config", "stop.toml"][..], &tiny].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("from now on") && err.contains("training diverged: the loss"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for run in ["backoff", "stop"] {
        let bytes = std::fs::read(dir.join(run).join("checkpoint.safetensors")).unwrap();
        let ckpt = scorefield::checkpoint::Checkpoint::from_bytes(&bytes).unwrap();
        assert!(ckpt.params.iter().chain(&ckpt.ema).all(|p| p.is_finite()), "{run}: non-finite checkpoint");
    }
    // The healthy state resumes (at a sane rate) and trains to the end.
    let args = ["train", "--run", "stop", "--resume", "--width", "16", "--hidden-layers", "1", "--batch", "32"];
    assert!(scorefield(&dir, &[&args[..], &["--steps", "200", "--lr", "1e-3"]].concat()).status.success());
}

/// `info` lists the adapters, names the chosen one with the kernel choices the engine makes on
/// it (the same line as the benchmarks' header, so a reader sees them before a long run), and
/// measures the FMA ceiling.
#[test]
fn info_names_the_kernel_choices_and_the_ceiling() {
    let dir = temp_dir("info");
    let out = scorefield(&dir, &["info", "--repeats", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let chosen = lines.iter().position(|l| l.starts_with("chosen: ")).expect("names the chosen adapter");
    let choices = lines.get(chosen + 1).copied().unwrap_or_default();
    assert!(choices.starts_with("kernel choices: dense layers: "), "{text}");
    for flag in ["--dense", "--operands", "--fused-particles", "--path", "--training-rows"] {
        assert!(choices.contains(flag), "the choices name how to change them ({flag}): {choices}");
    }
    let operands = ["chunked operands", "storage operands"];
    assert_eq!(operands.iter().filter(|o| choices.contains(*o)).count(), 1, "{choices}");
    let ceiling = lines.iter().find_map(|l| l.strip_prefix("FMA ceiling: ")).expect("the ceiling");
    let gflops: f64 = ceiling.split(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(gflops.is_finite() && gflops > 0.0, "{ceiling}");
}

#[test]
fn bench_reports_the_workloads_against_the_ceiling() {
    // What the benchmark prints, not how fast anything is: each requested workload once, with
    // a positive figure, GFLOP/s and fraction of a measured ceiling, and the kernel choices and
    // clock the flags asked for (lavapipe has timestamps, the default clock where offered).
    // Without --dense the dense kernel is timed where the adapter runs both (the path then
    // names the timings), else the block kernel.
    let dir = temp_dir("bench");
    let block = |p: &str| p == "fused rows, staged weight gradients, storage operands, block kernel";
    let timed = |p: &str| {
        p.starts_with("fused rows, staged weight gradients, storage operands, ")
            && p.contains(" kernel (measured: block ")
    };
    let fused = |p: &str| ["fused, block weight loads", "fused, subgroup weight loads"].contains(&p);
    type Check<'a> = &'a dyn Fn(&str) -> bool;
    let cases: [(&[&str], Check, Check, &str); 2] = [
        (
            &["--operands", "chunked", "--dense", "block", "--training-rows", "staged"],
            &|p| p == "staged, chunked operands, block kernel",
            &|p| p == "fused, block weight loads",
            "GPU timestamps",
        ),
        (
            &["--operands", "storage", "--host-clock", "--training-rows", "fused"],
            &|p| block(p) || timed(p),
            &fused,
            "host clock",
        ),
    ];
    for (flags, training_path, sampling_path, timing) in cases {
        let args = [
            &["bench", "--workload", "W1", "--workload", "W3", "--steps", "10", "--repeats", "1", "--json"][..],
            flags,
        ]
        .concat();
        let out = scorefield(&dir, &args);
        assert!(out.status.success());
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let names: Vec<&str> = rows.iter().map(|r| r["workload"].as_str().unwrap()).collect();
        assert_eq!(names, ["W1", "W3"]);
        for (row, path) in rows.iter().zip([training_path, sampling_path]) {
            assert!(row["path"].as_str().is_some_and(path), "{row}");
            assert!(row["timing"].as_str().is_some_and(|t| t.starts_with(timing)), "{row}");
            for key in ["median_s", "figure", "gflops", "ceiling_gflops", "fraction"] {
                let v = row[key].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite() && v > 0.0, "{key} = {v} in {row}");
            }
            let fraction = row["gflops"].as_f64().unwrap() / row["ceiling_gflops"].as_f64().unwrap();
            assert!((row["fraction"].as_f64().unwrap() - fraction).abs() < 1e-9, "{row}");
        }
    }
}

/// The objectives `train --help` lists.
fn listed_objectives(dir: &Path) -> Vec<String> {
    let help = String::from_utf8_lossy(&scorefield(dir, &["train", "--help"]).stdout).to_string();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let list = help.split("Objective: ").nth(1).and_then(|rest| rest.split('.').next()).expect("--help lists them");
    list.replace(" or ", ", ").split(", ").map(str::to_string).collect()
}

/// Issue #19: every objective that `--help` lists trains and samples with nothing but
/// `--objective` (the network and run kept tiny for time; the sampler, its steps and the
/// schedule are each objective's defaults), and an exact score takes any sampler.
#[test]
fn every_objective_trains_and_samples_with_its_defaults() {
    let dir = temp_dir("objectives");
    let objectives = listed_objectives(&dir);
    assert_eq!(objectives.len(), 8, "{objectives:?}");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "32", "--steps", "20"];
    for objective in &objectives {
        let args = [&["train", "--run", objective, "--objective", objective][..], &tiny].concat();
        assert!(scorefield(&dir, &args).status.success(), "training with --objective {objective}");
        let ckpt = format!("{objective}/checkpoint.safetensors");
        let out = format!("{objective}/x.npy");
        let result = scorefield(&dir, &["sample", "--checkpoint", &ckpt, "-n", "64", "--out", &out]);
        assert!(result.status.success(), "sampling a {objective} model with its defaults");
        let (shape, x) = read_npy(&dir.join(&out));
        assert_eq!(shape, vec![64, 2]);
        assert!(x.iter().all(|v| v.is_finite()), "{objective}: non-finite samples");
    }
    // A network keeps the sampler it can be sampled with.
    let out = scorefield(&dir, &["sample", "--checkpoint", "ncsn/checkpoint.safetensors", "--sampler", "ddpm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match objective.kind"));
    // DDPM ancestral sampling on the exact score of the eight Gaussians, on the default (NCSN)
    // config and on DDPM's own schedule: the samples sit on the ring of modes.
    for extra in [&[][..], &["--objective", "ddpm"][..]] {
        let args =
            [&["sample", "--exact-score", "--sampler", "ddpm", "-n", "512", "--out", "e/x.npy"][..], extra].concat();
        assert!(scorefield(&dir, &args).status.success(), "{args:?}");
        let (_, x) = read_npy(&dir.join("e/x.npy"));
        let mean_radius = x.chunks(2).map(|p| p[0].hypot(p[1]) as f64).sum::<f64>() / 512.0;
        assert!((mean_radius - 4.0).abs() < 0.3, "{args:?}: mean radius {mean_radius}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's short digits recipe (issue #20, item 4): the residual network, DDPM with
/// Min-SNR-5 weights, 10000 steps (about 9 minutes on lavapipe alone; the full recipe runs
/// longer, see README.md).
const SHORT_DIGITS_RECIPE: &[&str] = &[
    "--dataset",
    "digits",
    "--objective",
    "ddpm",
    "--min-snr",
    "5",
    "--residual",
    "--width",
    "256",
    "--hidden-layers",
    "4",
    "--batch",
    "128",
    "--steps",
    "10000",
    "--lr",
    "1e-3",
];

/// Issue #20, item 4, and #23: the short digits recipe, class-conditional, from a random
/// training seed; its samples, fifty of each digit with guidance 0.5, pass issue
/// #20's bars (top-class probability within 0.05 of real digits', feature distance a quarter of
/// the way from real digits' to a Gaussian fit's, every class, no copies, pixels in range:
/// tests/common/digits.rs), which the unconditional short recipe it replaced does not (0.83-0.85
/// against 0.897), and the classifier reads them as the digit asked for.
#[test]
fn the_short_digits_recipe_generates_digits_a_classifier_reads() {
    let check = common::DigitsCheck::issue_bars();
    check.rejects_what_it_must();
    let dir = temp_dir("digits");
    let seed = (common::test_seed() % 1000).to_string();
    let args = [&["train", "--run", "d", "--seed", &seed, "--conditional"][..], SHORT_DIGITS_RECIPE].concat();
    assert!(scorefield(&dir, &args).status.success());
    let args = ["sample", "--checkpoint", "d/checkpoint.safetensors", "--class", "all", "--guidance", "0.5"];
    let out = scorefield(&dir, &[&args[..], &["-n", "500", "--out", "d/x.npy"]].concat());
    assert!(out.status.success());
    let (shape, x) = read_npy(&dir.join("d/x.npy"));
    assert_eq!(shape, vec![500, 64]);
    let problems = check.problems(&x);
    assert!(problems.is_empty(), "{problems:#?}");
    // Measured 0.998-0.999 with guidance 0.5 and 0.977 without (three seeds, 1000 samples).
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let read_as_asked = number_after(&text, "samples read as their class: ");
    assert!(read_as_asked > 0.9, "{read_as_asked} of the samples read as the digit asked for: {text}");
    // Issue #23, part 2: 100 held-out digits with the bottom half hidden, two completions each,
    // by the network's unconditional score. Measured: 0.655 with this recipe (seed 0), 0.635-0.655
    // with the unconditional short recipe (seeds 0, 1), 0.68-0.73 at 60000 steps; the known
    // half with the data's mean below: 0.78; chance 0.1. Mostly keeping it, with 4 standard
    // errors (0.034 each) of room, is the bar.
    let args = ["inpaint", "--checkpoint", "d/checkpoint.safetensors", "--count", "100", "--completions", "2"];
    let out = scorefield(&dir, &[&args[..], &["--out", "d/inpaint.npy"]].concat());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("known pixels kept exactly: 6400 of 6400"), "{text}");
    let share = number_after(&text, "classifier reads as the original's digit: ");
    assert!(share > 0.5, "{share} of the completions keep the original's digit: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #23, part 1: a class-conditional model of the eight Gaussians (each point's class is
/// its mode) samples the mode asked for, every mode with `--class all`, and the whole mixture
/// with `--class none`; conditional sampling without a class, or with one the model does not
/// know, is refused with a message, as is a class for an unconditional model.
#[test]
fn class_conditional_models_sample_the_class_asked_for() {
    let dir = temp_dir("conditional");
    let modes = GaussianMixture::eight_gaussians();
    // The share of points nearest to each mode.
    let shares = |x: &[f32]| -> Vec<f64> {
        let mut counts = [0usize; 8];
        for p in x.chunks(2) {
            let dist = |k: usize| (0..2).map(|j| (p[j] as f64 - modes.mean(k)[j]).powi(2)).sum::<f64>();
            counts[(0..8).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap()] += 1;
        }
        counts.iter().map(|&c| c as f64 / (x.len() / 2) as f64).collect()
    };
    let seed = (common::test_seed() % 1000).to_string();
    let args = ["train", "--run", "c", "--conditional", "--steps", "3000", "--seed", &seed];
    assert!(scorefield(&dir, &args).status.success());
    let sample = |extra: &[&str]| {
        // 30 annealed steps per level (300 in all) find the modes as well as the default 100.
        let base = ["sample", "--checkpoint", "c/checkpoint.safetensors", "-n", "800", "--sampler-steps", "30"];
        let args = [&base[..], &["--out", "c/x.npy"], extra].concat();
        let out = scorefield(&dir, &args);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // Measured: 0.997 of the samples of a class at its own mode (6000 steps), 0.988 (3000 steps,
    // 30 steps per level); an unconditional model puts 1/8 there.
    assert!(sample(&["--class", "5"]).0);
    let s = shares(&read_npy(&dir.join("c/x.npy")).1);
    assert!(s[5] > 0.9, "--class 5: mode shares {s:.3?}");
    assert!(sample(&["--class", "all", "--guidance", "1"]).0);
    let x = read_npy(&dir.join("c/x.npy")).1;
    for (k, block) in x.chunks(2 * 100).enumerate() {
        let s = shares(block);
        assert!(s[k] > 0.9, "--class all, block {k}: mode shares {s:.3?}");
    }
    assert!(sample(&["--class", "none"]).0);
    let s = shares(&read_npy(&dir.join("c/x.npy")).1);
    assert!(s.iter().all(|&w| w > 0.03), "--class none: mode shares {s:.3?}");
    for (extra, says) in [
        (vec![], "class-conditional (8 classes): give --class K (0 to 7)"),
        (vec!["--class", "8"], "knows classes 0 to 7"),
        (vec!["--class", "two"], "knows classes 0 to 7"),
    ] {
        let (ok, err) = sample(&extra);
        assert!(!ok && err.contains(says), "{extra:?}: {err}");
    }
    let args = ["train", "--run", "u", "--steps", "20"];
    assert!(scorefield(&dir, &args).status.success());
    let args = ["sample", "--checkpoint", "u/checkpoint.safetensors", "--class", "1", "--out", "u/x.npy"];
    let out = scorefield(&dir, &args);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("train with --conditional"));
    let out = scorefield(&dir, &["train", "--run", "m", "--conditional", "--dataset", "two-moons", "--steps", "1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("two-moons has none"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #22: `likelihood` with the exact score of the eight Gaussians gives their
/// cross-entropy (the mixture's exact log-density at the same points, which it prints beside
/// it), writes the per-point values, and refuses what it cannot do.
#[test]
fn likelihoods_from_the_command_line() {
    let dir = temp_dir("likelihood");
    let out = scorefield(&dir, &["likelihood", "--exact-score", "-n", "500", "--out", "l/nll.npy"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let gap = number_after(&text, "gap ");
    // Measured 0.005 nats: the config's VE SDE ends at sigma_min = 0.1, which widens each mode
    // a little (0.5 -> 0.51), and its prior N(0, 10^2) is the noised mixture only roughly.
    assert!(gap.abs() < 0.03, "exact-score likelihood {gap} nats off the mixture's cross-entropy: {text}");
    let (shape, nll) = read_npy(&dir.join("l/nll.npy"));
    assert_eq!(shape, vec![500, 1]);
    assert!(nll.iter().all(|v| v.is_finite() && *v > 0.0 && *v < 30.0), "per-point NLLs out of range");
    // The adaptive RK45 sampler (part 2) from the command line; its statistics are held in
    // tests/likelihood.rs.
    let out = scorefield(&dir, &["sample", "--exact-score", "--sampler", "rk45", "-n", "300", "--out", "l/rk45.npy"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("rk45: "));
    assert_eq!(read_npy(&dir.join("l/rk45.npy")).0, vec![300, 2]);
    // A VE-SDE model of the main job's data (its network, 6000 steps, about 40 s): its NLL on
    // fresh points against the cross-entropy. Measured gaps: 0.26 nats at 4000 steps, 0.09-0.11
    // at 6000 (two seeds), 0.037 at 16000. The bar is a quarter of the way to a Gaussian fitted
    // to the mixture (N(0, 8.25 I): cross-entropy log(2 pi 8.25) + 1 = 4.948 nats, 1.40 above
    // the mixture's 3.548); a model can only be worse than the mixture on average (the gap is a
    // KL divergence plus the noise of 1000 points).
    let seed = (common::test_seed() % 1000).to_string();
    let args = ["train", "--run", "ve", "--objective", "ve", "--steps", "6000", "--seed", &seed];
    assert!(scorefield(&dir, &args).status.success());
    let out = scorefield(
        &dir,
        &["likelihood", "--checkpoint", "ve/checkpoint.safetensors", "-n", "1000", "--out", "l/ve.npy"],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let gap = number_after(&text, "gap ");
    assert!((-0.05..0.35).contains(&gap), "the VE model's NLL is {gap} nats off the cross-entropy: {text}");
    let out = scorefield(&dir, &["likelihood", "--exact-score", "--divergence", "hutchinson", "--out", "l/h.npy"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Hutchinson's estimator is for networks")
    );
    assert!(scorefield(&dir, &["train", "--run", "dsm", "--objective", "dsm", "--steps", "20"]).status.success());
    let out = scorefield(&dir, &["likelihood", "--checkpoint", "dsm/checkpoint.safetensors", "--out", "l/d.npy"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("single-level model"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #20, item 1: `sample` on the digits reports their quality beside real held-out digits
/// and a Gaussian fit, `eval` does the same for a .npy, and a file of other shape is refused.
#[test]
fn digit_samples_are_judged_against_real_ones() {
    let dir = temp_dir("eval");
    let tiny = ["--width", "16", "--hidden-layers", "1", "--batch", "32", "--steps", "20"];
    let args = [&["train", "--run", "d", "--dataset", "digits"][..], &tiny].concat();
    assert!(scorefield(&dir, &args).status.success());
    let args =
        ["sample", "--checkpoint", "d/checkpoint.safetensors", "-n", "50", "--sampler-steps", "2", "--out", "d/x.npy"];
    let out = scorefield(&dir, &args);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    for row in ["| samples | 50 |", "| real held-out digits |", "| Gaussian fit to the data |"] {
        assert!(table.contains(row), "no `{row}` row: {table}");
    }
    // Image samples are pixels: clamped to [-1, 1], with a line saying how many were outside.
    assert!(table.contains("were outside [-1, 1] and are clamped"), "{table}");
    let (_, x) = read_npy(&dir.join("d/x.npy"));
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)), "a sample pixel outside [-1, 1]");
    let out = scorefield(&dir, &["eval", "--samples", "d/x.npy"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("| samples | 50 |"));
    // Inpainting: the completions, [images * completions, 64] with the known pixels as given,
    // and the picture; a mask or a count it cannot serve gets a one-line error.
    let inpaint = ["inpaint", "--checkpoint", "d/checkpoint.safetensors", "--sampler-steps", "2"];
    let args = [&inpaint[..], &["--count", "3", "--completions", "2", "--mask", "box:2,2,6,6", "--out", "d/i.npy"]];
    let out = scorefield(&dir, &args.concat());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("known pixels kept exactly: 288 of 288"));
    let (shape, _) = read_npy(&dir.join("d/i.npy"));
    assert_eq!(shape, vec![6, 64]);
    assert!(dir.join("d/inpaint.png").exists());
    for (flag, value, says) in [("--mask", "middle", "expected top, bottom"), ("--count", "5000", "there are 449")] {
        let out = scorefield(&dir, &[&inpaint[..], &[flag, value]].concat());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(says) && err.lines().count() <= 2, "{err}");
    }
    // A 2-D sample set is not digits.
    let args = ["sample", "--exact-score", "-n", "16", "--sampler-steps", "2", "--out", "e/x.npy"];
    assert!(scorefield(&dir, &args).status.success());
    let out = scorefield(&dir, &["eval", "--samples", "e/x.npy"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[16, 2]"));
    let _ = std::fs::remove_dir_all(&dir);
}
