//! # minference
//!
//! MInference-style dynamic sparse attention for long-context prefill, in Rust.
//!
//! Long-context attention heads follow a few patterns: **A-shape** (sink tokens and a
//! local window), **Vertical-Slash** (a few key columns and diagonals, found online from the
//! last 64 queries) and **Block-Sparse** (top-k 64x64 blocks from pooled q and k). This crate
//! defines each pattern and its index building once ([`pattern`], [`index`]), holds them
//! with a float64 reference ([`reference`](crate::reference)), and runs them on any [`Backend`]: the CPU
//! ([`CpuBackend`]), WGSL on wgpu (feature `wgpu`) and CUDA on cudarc (feature `cuda`).
//! [`bench`] times every pattern on every available backend in useful TFLOP/s
//! (`minference bench`).
//!
//! ```
//! use minference::{run_layer, Backend, CpuBackend, DType, HostTensor, Pattern};
//! use minference::generate::random_qkv;
//!
//! let (b, hq, hkv, n, d) = (1, 2, 1, 200, 64);
//! let (q, k, v) = random_qkv(b, hq, hkv, n, d, DType::F32, 7)?;
//! let cpu = CpuBackend::new();
//! let (q, k, v) = (cpu.upload(&q)?, cpu.upload(&k)?, cpu.upload(&v)?);
//! let pattern: Pattern = "vertical-slash:64,128".parse()?;
//! let layer = run_layer(&cpu, &q, &k, &v, &[pattern; 2])?;
//! let out = cpu.download(&layer.out)?;
//! assert_eq!(out.dims, vec![b, hq, n, d]);
//! let index = cpu.download_index(layer.index.as_ref().unwrap())?;
//! assert_eq!(index, index.reconverted()?); // the index is the conversion of its selections
//! # Ok::<(), minference::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod cpu;
pub mod error;
pub mod generate;
pub mod index;
pub mod io;
pub mod pattern;
pub mod reference;
pub mod registry;
pub mod search;
pub mod tensor;
pub mod vectors;

#[cfg(feature = "wgpu")]
#[path = "../backends/wgpu/mod.rs"]
pub mod wgpu_backend;

#[cfg(feature = "cuda")]
#[path = "../backends/cuda/mod.rs"]
pub mod cuda_backend;

pub use backend::{run_layer, Backend, BackendInfo, DeviceIndex, DeviceTensor, LayerOutput};
pub use cpu::CpuBackend;
pub use error::{Error, Result};
pub use index::{HostIndex, IndexMeta};
pub use pattern::{LayerConfig, Pattern, BLOCK};
pub use registry::{open, BackendKind};
pub use tensor::{AttnShape, DType, HostTensor};
