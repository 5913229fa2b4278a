//! The wgpu backend (work in progress: opens with an error until its kernels land).
use crate::error::{Error, Result};

/// The wgpu backend.
pub struct WgpuBackend;

impl WgpuBackend {
    /// Open the backend.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<crate::cpu::CpuBackend> {
        Err(Error::Unavailable {
            backend: "wgpu",
            reason: "not implemented yet".into(),
        })
    }
}
