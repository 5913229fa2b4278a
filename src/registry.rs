//! Opening backends by name, and `auto` (cuda, then wgpu, then cpu).

use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::error::{invalid, Error, Result};

/// Which backend to open.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The float64 CPU backend.
    Cpu,
    /// The WGSL backend on wgpu.
    Wgpu,
    /// The CUDA backend on cudarc.
    Cuda,
    /// The first that opens of cuda, wgpu, cpu.
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            _ => Err(invalid(
                "--backend",
                format!("`{s}` is not one of cpu, wgpu, cuda, auto"),
            )),
        }
    }
}

/// An opened backend, and for `auto` why the ones before it were skipped.
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn Backend>,
    /// `(name, reason)` for every backend `auto` tried and skipped.
    pub skipped: Vec<(&'static str, String)>,
}

/// Open the WGSL backend, or say why not.
pub fn open_wgpu() -> Result<Box<dyn Backend>> {
    #[cfg(feature = "wgpu")]
    {
        Ok(Box::new(crate::wgpu_backend::WgpuBackend::new()?))
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Err(Error::NotCompiled {
            backend: "wgpu",
            feature: "wgpu",
        })
    }
}

/// Open the CUDA backend, or say why not.
pub fn open_cuda() -> Result<Box<dyn Backend>> {
    #[cfg(feature = "cuda")]
    {
        Ok(Box::new(crate::cuda_backend::CudaBackend::new()?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::NotCompiled {
            backend: "cuda",
            feature: "cuda",
        })
    }
}

/// Open `kind`; `Auto` tries cuda, then wgpu, then cpu, and records why each was skipped.
pub fn open(kind: BackendKind) -> Result<Opened> {
    let one = |backend| {
        Ok(Opened {
            backend,
            skipped: vec![],
        })
    };
    match kind {
        BackendKind::Cpu => one(Box::new(CpuBackend::new())),
        BackendKind::Wgpu => one(open_wgpu()?),
        BackendKind::Cuda => one(open_cuda()?),
        BackendKind::Auto => {
            let mut skipped = Vec::new();
            for (name, f) in [
                ("cuda", open_cuda as fn() -> Result<Box<dyn Backend>>),
                ("wgpu", open_wgpu),
            ] {
                match f() {
                    Ok(backend) => return Ok(Opened { backend, skipped }),
                    Err(e) => skipped.push((name, e.to_string())),
                }
            }
            Ok(Opened {
                backend: Box::new(CpuBackend::new()),
                skipped,
            })
        }
    }
}
