//! The examples run and do what they say. `headless_render` draws the engine's particle buffer
//! with the application's own render pipeline; its picture is checked where the eight modes are
//! and where they are not.

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
