//! A check of generated digits (issue #20, item 4), calibrated like eight.rs: the project's
//! quality judge (src/quality.rs) reads its thresholds off real held-out digits (the ceiling)
//! and a Gaussian fitted to the digits (deliberately wrong samples: the data's mean and
//! covariance, no digit shapes), and `rejects_what_it_must` shows it fails those and passes
//! real digits.
//!
//! - mean top-class probability at least `reach` of the way from the Gaussian fit's to real
//!   digits' (`new`), or issue #20's bar, within 0.05 of real digits' (`issue_bars`);
//! - with `issue_bars`, issue #20's feature distance: at most a quarter of the way from real
//!   digits' to the Gaussian fit's (clamped to the pixel range, as samples are written);
//! - every class between 5% and 16% of the samples (issue #20's band);
//! - at most 5% copies of training images (real held-out digits: 0.9%);
//! - no pixel outside the data's range (by more than the judge's 0.05).

use scorefield::quality::{Quality, QualityJudge};

pub struct DigitsCheck {
    judge: QualityJudge,
    real: Quality,
    gaussian: Quality,
    min_top: f64,
    max_features: Option<f64>,
}

impl DigitsCheck {
    pub fn new(reach: f64) -> Self {
        let judge = QualityJudge::digits().unwrap();
        let n = judge.held_out().len() / judge.dim();
        let real = judge.judge(judge.held_out()).unwrap();
        let gaussian = judge.judge(&judge.gaussian_fit(n, 0)).unwrap();
        let min_top =
            gaussian.mean_top_probability + reach * (real.mean_top_probability - gaussian.mean_top_probability);
        eprintln!(
            "digits check: mean top-class probability at least {min_top:.3} (Gaussian fit {:.3}, real {:.3}); \
             classes 5-16%; copies at most 5%; pixels in range",
            gaussian.mean_top_probability, real.mean_top_probability
        );
        Self { judge, real, gaussian, min_top, max_features: None }
    }

    /// Issue #20's bars: mean top-class probability within 0.05 of real digits', feature
    /// distance at most a quarter of the way from real digits' to the Gaussian fit's.
    pub fn issue_bars() -> Self {
        let mut check = Self::new(0.0);
        check.min_top = check.real.mean_top_probability - 0.05;
        let bar = check.real.feature_distance + 0.25 * (check.gaussian.feature_distance - check.real.feature_distance);
        check.max_features = Some(bar);
        eprintln!(
            "issue #20's bars: mean top-class probability at least {:.3}, feature distance at most {bar:.3}",
            check.min_top
        );
        check
    }

    /// What is wrong with `samples` (8x8 digits, pixels in [-1, 1]), or nothing.
    pub fn problems(&self, samples: &[f32]) -> Vec<String> {
        let q = self.judge.judge(samples).unwrap();
        let (lo, hi) = q.class_shares.iter().fold((1.0f64, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        eprintln!(
            "    {} samples: top {:.3}, confident {:.3}, classes {lo:.3}..{hi:.3}, features {:.3} (real {:.3}, \
             Gaussian fit {:.3}), copies {:.3}, out of range {:.4}",
            q.count,
            q.mean_top_probability,
            q.confident_share,
            q.feature_distance,
            self.real.feature_distance,
            self.gaussian.feature_distance,
            q.copies,
            q.out_of_range
        );
        let mut problems = Vec::new();
        if q.mean_top_probability < self.min_top {
            problems.push(format!("mean top-class probability {:.3} < {:.3}", q.mean_top_probability, self.min_top));
        }
        if let Some(bar) = self.max_features.filter(|&bar| q.feature_distance > bar) {
            problems.push(format!("feature distance {:.3} > {bar:.3}", q.feature_distance));
        }
        if lo < 0.05 || hi > 0.16 {
            problems.push(format!("class shares {lo:.3}..{hi:.3} outside 0.05..0.16"));
        }
        if q.copies > 0.05 {
            problems.push(format!("{:.3} of the samples copy training images", q.copies));
        }
        if q.out_of_range > 0.0 {
            problems.push(format!("{:.4} of the pixels lie outside [-1.05, 1.05]", q.out_of_range));
        }
        problems
    }

    /// Real held-out digits pass; a Gaussian fit (another draw than the calibration's) fails.
    pub fn rejects_what_it_must(&self) {
        let n = self.judge.held_out().len() / self.judge.dim();
        assert!(self.problems(self.judge.held_out()).is_empty(), "real held-out digits must pass");
        assert!(!self.problems(&self.judge.gaussian_fit(n, 1)).is_empty(), "a Gaussian fit must fail");
    }
}
