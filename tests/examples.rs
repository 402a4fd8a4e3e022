//! The examples run and do what they say. `headless_render` draws the engine's particle buffer
//! with the application's own render pipeline; its picture is checked where the eight modes are
//! and where they are not.

mod common;

use std::process::Command;

/// Panel geometry of examples/headless_render.rs.
const SIZE: u32 = 384;
const EXTENT: f64 = 6.0;

/// How much darker than the background a pixel is (particles darken green and blue).
fn ink(img: &image::RgbaImage, panel: u32, x: f64, y: f64, radius: f64) -> f64 {
    let mut total = 0.0;
    for py in 0..SIZE {
        for px in 0..SIZE {
            let cx = (px as f64 + 0.5) / SIZE as f64 * 2.0 * EXTENT - EXTENT;
            let cy = EXTENT - (py as f64 + 0.5) / SIZE as f64 * 2.0 * EXTENT;
            if (cx - x).hypot(cy - y) <= radius {
                total += 250.0 - img.get_pixel(panel * SIZE + px, py).0[1] as f64;
            }
        }
    }
    total
}

#[test]
fn headless_render_draws_the_particles_where_the_modes_are() {
    let out = std::env::temp_dir().join(format!("scorefield-headless-{}.png", std::process::id()));
    let status = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--example", "headless_render", "--"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success());
    let img = image::open(&out).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (2 * SIZE, SIZE));
    let at = |k: f64| {
        let a = std::f64::consts::TAU * k / 8.0;
        (4.0 * a.cos(), 4.0 * a.sin())
    };
    for panel in 0..2 {
        let modes: Vec<f64> = (0..8).map(|k| ink(&img, panel, at(k as f64).0, at(k as f64).1, 0.75)).collect();
        let between: Vec<f64> =
            (0..8).map(|k| ink(&img, panel, at(k as f64 + 0.5).0, at(k as f64 + 0.5).1, 0.5)).collect();
        let centre = ink(&img, panel, 0.0, 0.0, 1.5);
        let corners: f64 = [(-5.0, -5.0), (-5.0, 5.0), (5.0, -5.0), (5.0, 5.0)]
            .iter()
            .map(|&(x, y)| ink(&img, panel, x, y, 0.8))
            .sum();
        let min_mode = modes.iter().cloned().fold(f64::INFINITY, f64::min);
        eprintln!(
            "panel {panel}: ink at modes {modes:.0?}, between {between:.0?}, centre {centre:.0}, corners {corners:.0}"
        );
        assert!(min_mode > 2000.0, "panel {panel}: a mode is missing ({modes:.0?})");
        if panel == 0 {
            // The exact score. N(mu, 0.25 I) puts 1e-7 of its mass beyond 3.5 from its mean,
            // so nothing may be in the middle or the corners (one particle's quad is ~9 pixels
            // x 200 of ink); and between two modes (2.2 stds from each: density e^-2.4 of a
            // mode's centre, on a disc of 0.44 x the area) there is far less ink.
            assert!(centre + corners < 2000.0, "exact panel: particles in the centre or corners");
            let max_between = between.iter().cloned().fold(0.0, f64::max);
            assert!(max_between < 0.25 * min_mode, "exact panel: modes not separated ({between:.0?} vs {modes:.0?})");
        } else {
            // A model of a few hundred steps has learned the ring, not yet the modes (README),
            // with a few strays inside it (measured: ~4 of 4096 particles): the ink lies on
            // the ring, under 2% of it in the middle and the corners.
            let on_modes: f64 = modes.iter().sum();
            assert!(
                centre + corners < 0.02 * on_modes,
                "learned panel: {centre:.0} + {corners:.0} of ink off the ring"
            );
        }
    }
    let _ = std::fs::remove_file(&out);
}

/// examples/live.rs's window and scene.
const LIVE_SIZE: u32 = 640;

#[test]
fn the_live_viewer_shows_particles_and_arrows_under_xvfb() {
    // xvfb-run has no version flag: look for it (and Xvfb, xauth) on PATH.
    let missing: Vec<&str> = [("xvfb-run", "xvfb-run (xvfb)"), ("Xvfb", "Xvfb (xvfb)"), ("xauth", "xauth")]
        .into_iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, what)| what)
        .collect();
    if !common::tools_present("the live viewer's window test", &missing) {
        return;
    }
    let out = std::env::temp_dir().join(format!("scorefield-live-{}.png", std::process::id()));
    // Build first, so the X server only waits for the program itself.
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--example", "live"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(built.success());
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/live");
    let run = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 800x800x24"])
        .arg(&exe)
        .args(["--screenshot"])
        .arg(&out)
        .args(["--frames", "60"])
        .output()
        .expect("xvfb-run runs");
    let log = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    eprintln!("{log}");
    assert!(run.status.success(), "the live viewer failed under Xvfb");
    assert!(log.contains("frame") && log.contains("particle-steps"), "no frame time reported");
    let img = image::open(&out).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (LIVE_SIZE, LIVE_SIZE));
    // Colours (examples/live.rs): white background; arrows subtract 0.75 (dark grey); particles
    // subtract (0.03, 0.25, 0.25) (red); the data subtracts (0.12, 0.06, 0) (light blue).
    let at = |px: u32, py: u32| {
        let s = 2.0 * 6.0 / LIVE_SIZE as f64;
        (px as f64 * s - 6.0, 6.0 - py as f64 * s)
    };
    let (mut grey, mut red_near_modes, mut red_centre) = (0usize, 0usize, 0usize);
    for (px, py, p) in img.enumerate_pixels() {
        let [r, g, b, _] = p.0.map(|c| c as i32);
        if r < 110 && g < 110 && b < 110 && (r - g).abs() < 30 {
            grey += 1;
        }
        if r > 200 && r - g > 30 && r - b > 30 {
            let (x, y) = at(px, py);
            if (x.hypot(y) - 4.0).abs() < 1.2 {
                red_near_modes += 1;
            } else if x.hypot(y) < 1.2 {
                red_centre += 1;
            }
        }
    }
    eprintln!("grey (arrow) pixels {grey}, red (particle) pixels near the ring of modes {red_near_modes}, centre {red_centre}");
    // 576 arrows of up to ~25 pixels each.
    assert!(grey > 2000, "the score field's arrows are missing ({grey} grey pixels)");
    // The ring |x| in 4 +- 1.2 has 16 times the centre disc's area; Langevin at sigma = 1 puts
    // far more than 16 times the particles there.
    assert!(red_near_modes > 2000, "the particles are missing ({red_near_modes} red pixels at the modes)");
    assert!(red_near_modes > 40 * red_centre.max(1), "the particles are not at the modes");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
