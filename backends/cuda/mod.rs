//! The cuda backend (work in progress: opens with an error until its kernels land).
use crate::error::{Error, Result};

/// The cuda backend.
pub struct CudaBackend;

impl CudaBackend {
    /// Open the backend.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<crate::cpu::CpuBackend> {
        Err(Error::Unavailable {
            backend: "cuda",
            reason: "not implemented yet".into(),
        })
    }
}
