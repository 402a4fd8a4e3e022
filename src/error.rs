//! The library's error type. Every failure a user or a weak adapter can cause ends up here with
//! a message that says what was wrong and what to do.

/// Errors returned by scorefield.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{detail}. Install a GPU driver, or on a headless Linux machine \
         Mesa's software Vulkan: `apt-get install mesa-vulkan-drivers libvulkan1`"
    )]
    NoAdapter { detail: String },

    #[error("no adapter's name contains {wanted:?} (asked for by --adapter or WGPU_ADAPTER_NAME); the adapters here are: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("the GPU device could not be created: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),

    #[error(
        "the device's limit `{limit}` is {have}, but scorefield needs at least {need}; \
         request it when creating the device (the adapter may offer more than the default)"
    )]
    Limit { limit: &'static str, have: u64, need: u64 },

    #[error("kernel `{kernel}` failed to build on this device: {message}")]
    Kernel { kernel: String, message: String },

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error(
        "the GPU device failed or was lost ({0}); work since the last checkpoint is gone. Restart \
         the run (`--resume` continues from the last checkpoint, which is intact)"
    )]
    DeviceLost(String),

    #[error(
        "the GPU rejected a command: {0}. This is a bug in scorefield (or, when embedding it, in how \
         the application uses its buffers): please report it with this message. The device itself \
         is fine"
    )]
    Internal(String),

    #[error("waiting for the GPU failed (device lost or timed out): {0}")]
    Poll(#[from] wgpu::PollError),

    #[error(
        "training diverged: the {quantity} became non-finite (NaN or infinite) at step {step}. The weights, \
         EMA and optimiser state of step {restored_step}, the last healthy one, are restored. Lower the \
         learning rate (it was {lr:.3e}), or let training back off (train.on_nonfinite = \"backoff\")"
    )]
    Diverged { quantity: &'static str, step: u64, restored_step: u64, lr: f64 },

    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid { what: what.into(), why: why.into() }
    }
}

/// Checks a setting is a positive finite number, naming it otherwise.
pub(crate) fn positive(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(name, format!("{v} must be a positive finite number")))
    }
}

/// Checks a setting is a finite number >= 0, naming it otherwise.
pub(crate) fn non_negative(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(name, format!("{v} must be a finite number >= 0")))
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
