//! The class labels of a class-conditional network's particles and the weight of
//! classifier-free guidance (Ho & Salimans 2022): each particle follows
//! (1 + w) s(x | its class) - w s(x), where the network gives both scores (`MlpShape::classes`).

use crate::error::{Error, Result};

/// A label that is no class: the particle follows the unconditional score.
pub const NO_CLASS: u32 = u32::MAX;

/// Per particle its class (below the network's `classes`, or [`NO_CLASS`]), and the guidance
/// weight w shared by all: 0 samples the conditional score as learned, larger w trades variety
/// for samples more typical of their class.
#[derive(Clone, Debug, PartialEq)]
pub struct Classes {
    pub labels: Vec<u32>,
    pub guidance: f32,
}

impl Classes {
    /// Every particle of class `class`.
    pub fn one(class: u32, particles: usize, guidance: f32) -> Self {
        Self { labels: vec![class; particles], guidance }
    }

    /// The particles split into `classes` consecutive blocks, class k's block before k + 1's
    /// (particle n has class n * classes / particles), e.g. for a picture with a row per class.
    pub fn each(classes: usize, particles: usize, guidance: f32) -> Self {
        let labels = (0..particles).map(|n| (n * classes / particles.max(1)) as u32).collect();
        Self { labels, guidance }
    }

    /// No particle has a class: the network's unconditional score.
    pub fn none(particles: usize) -> Self {
        Self { labels: vec![NO_CLASS; particles], guidance: 0.0 }
    }

    /// Whether the network evaluates the particles a second time, unconditionally.
    pub(crate) fn guided(&self) -> bool {
        self.guidance != 0.0
    }

    /// Checks the labels against `particles` and a network of `classes` classes.
    pub(crate) fn check(&self, particles: usize, classes: usize) -> Result<()> {
        if classes == 0 {
            return Err(Error::invalid(
                "classes",
                "the network is not class-conditional: sample it without classes (Sampler::new)",
            ));
        }
        if self.labels.len() != particles {
            return Err(Error::invalid(
                "classes",
                format!("{} labels for {particles} particles: give one per particle", self.labels.len()),
            ));
        }
        if let Some(n) = self.labels.iter().position(|&l| l as usize >= classes && l != NO_CLASS) {
            return Err(Error::invalid(
                "classes",
                format!(
                    "particle {n} asks for class {}; the network knows classes 0 to {}",
                    self.labels[n],
                    classes - 1
                ),
            ));
        }
        if !self.guidance.is_finite() {
            return Err(Error::invalid("guidance", format!("weight {} is not finite", self.guidance)));
        }
        Ok(())
    }
}
