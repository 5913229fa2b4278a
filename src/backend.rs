//! The `Backend` trait: the few operations sparse prefill needs, the same for every device.

use crate::error::{invalid, Error, Result};
use crate::index::{HostIndex, IndexMeta};
use crate::pattern::Pattern;
use crate::tensor::{AttnShape, DType, HostTensor};
use std::any::Any;

/// A tensor living on a backend's device. Opaque: only its backend can read the storage.
pub struct DeviceTensor {
    dims: Vec<usize>,
    dtype: DType,
    backend: &'static str,
    storage: Box<dyn Any + Send + Sync>,
}

impl DeviceTensor {
    /// Wrap a backend's storage (used by backend implementations).
    pub fn new<T: Any + Send + Sync>(
        backend: &'static str,
        dims: &[usize],
        dtype: DType,
        storage: T,
    ) -> Self {
        Self {
            dims: dims.to_vec(),
            dtype,
            backend,
            storage: Box::new(storage),
        }
    }
    /// Dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Name of the backend that owns it.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    /// The backend's storage, or an error naming both backends.
    pub fn storage<T: Any>(&self, backend: &'static str, arg: &str) -> Result<&T> {
        let owner = self.backend;
        self.storage
            .downcast_ref::<T>()
            .filter(|_| owner == backend)
            .ok_or_else(|| {
                invalid(
                    arg,
                    format!("tensor lives on backend `{owner}`, used with `{backend}`"),
                )
            })
    }
    /// Mutable access to the backend's storage.
    pub fn storage_mut<T: Any>(&mut self, backend: &'static str, arg: &str) -> Result<&mut T> {
        let owner = self.backend;
        self.storage
            .downcast_mut::<T>()
            .filter(|_| owner == backend)
            .ok_or_else(|| {
                invalid(
                    arg,
                    format!("tensor lives on backend `{owner}`, used with `{backend}`"),
                )
            })
    }
}

impl std::fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceTensor({}, {:?}, {})",
            self.backend, self.dims, self.dtype
        )
    }
}

/// A layer's sparse index (and raw selections) on a backend's device.
pub struct DeviceIndex {
    /// Array widths and per-head patterns.
    pub meta: IndexMeta,
    backend: &'static str,
    storage: Box<dyn Any + Send + Sync>,
}

impl DeviceIndex {
    /// Wrap a backend's index storage.
    pub fn new<T: Any + Send + Sync>(backend: &'static str, meta: IndexMeta, storage: T) -> Self {
        Self {
            meta,
            backend,
            storage: Box::new(storage),
        }
    }
    /// The backend's storage, or an error naming both backends.
    pub fn storage<T: Any>(&self, backend: &'static str) -> Result<&T> {
        let owner = self.backend;
        self.storage
            .downcast_ref::<T>()
            .filter(|_| owner == backend)
            .ok_or_else(|| {
                invalid(
                    "index",
                    format!("index lives on backend `{owner}`, used with `{backend}`"),
                )
            })
    }
}

/// What a backend is and what it can run.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    /// Backend name (`cpu`, `wgpu`, `cuda`).
    pub name: &'static str,
    /// The device in words (adapter or GPU name, driver).
    pub device: String,
    /// Storage dtypes accepted for q, k, v.
    pub dtypes: Vec<DType>,
    /// Head dims accepted; empty means any.
    pub head_dims: Vec<usize>,
    /// Kernel variant or other notes (e.g. "portable", "cooperative-matrix").
    pub notes: String,
}

impl BackendInfo {
    /// An error if `dtype` or `head_dim` is not supported.
    pub fn check(&self, dtype: DType, head_dim: usize) -> Result<()> {
        if !self.dtypes.contains(&dtype) {
            return Err(Error::Unsupported {
                backend: self.name,
                what: format!("dtype {dtype} (supported: {:?})", self.dtypes),
            });
        }
        if !self.head_dims.is_empty() && !self.head_dims.contains(&head_dim) {
            return Err(Error::Unsupported {
                backend: self.name,
                what: format!("head dim {head_dim} (supported: {:?})", self.head_dims),
            });
        }
        Ok(())
    }
}

/// A device that runs sparse prefill.
///
/// All attention entry points take q `[B, Hq, N, D]`, k and v `[B, Hkv, N, D]` and write into
/// `out` `[B, Hq, N, D]` (same dtype as q): the sparse and A-shape kernels write only the
/// heads they serve, so one output buffer can collect a layer of mixed heads.
/// Work may be asynchronous: call [`Backend::synchronize`] before reading a clock.
pub trait Backend: Send + Sync {
    /// What the backend is and supports.
    fn info(&self) -> BackendInfo;
    /// Copy a host tensor to the device.
    fn upload(&self, t: &HostTensor) -> Result<DeviceTensor>;
    /// Copy a device tensor back.
    fn download(&self, t: &DeviceTensor) -> Result<HostTensor>;
    /// A new device tensor; its contents are unspecified until written.
    fn empty(&self, dims: &[usize], dtype: DType) -> Result<DeviceTensor>;
    /// Build the index of a layer (`patterns`: one per query head) from q and k on the device.
    fn build_index(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
    ) -> Result<DeviceIndex>;
    /// Copy a host index to the device (validated first: kernels trust it).
    fn upload_index(&self, index: &HostIndex) -> Result<DeviceIndex>;
    /// Copy an index (and its raw selections) back.
    fn download_index(&self, index: &DeviceIndex) -> Result<HostIndex>;
    /// Sparse attention over the index; writes the heads whose pattern uses the index.
    fn sparse_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        index: &DeviceIndex,
        out: &mut DeviceTensor,
    ) -> Result<()>;
    /// Dense causal attention over every head.
    fn dense_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<()>;
    /// A-shape attention; `windows[h]` is `Some((sink, local))` for the heads to write.
    fn a_shape_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        windows: &[Option<(usize, usize)>],
        out: &mut DeviceTensor,
    ) -> Result<()>;
    /// Wait for all queued device work.
    fn synchronize(&self) -> Result<()>;
}

/// Check q, k, v (and `out`) against each other and the backend; return the shape.
pub fn check_qkv(
    info: &BackendInfo,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    out: Option<&DeviceTensor>,
) -> Result<AttnShape> {
    let shape = AttnShape::from_dims(q.dims(), k.dims(), v.dims())?;
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != q.dtype() {
            return Err(invalid(
                name,
                format!("dtype {} differs from q's {}", t.dtype(), q.dtype()),
            ));
        }
    }
    if let Some(o) = out {
        if o.dims() != q.dims() || o.dtype() != q.dtype() {
            return Err(invalid(
                "out",
                format!(
                    "{:?} {} must match q {:?} {}",
                    o.dims(),
                    o.dtype(),
                    q.dims(),
                    q.dtype()
                ),
            ));
        }
    }
    info.check(q.dtype(), shape.head_dim)?;
    Ok(shape)
}

/// Check the operands of a sparse-attention call ([`check_qkv`] plus the index's shape).
pub fn check_sparse(
    info: &BackendInfo,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    index: &DeviceIndex,
    out: &DeviceTensor,
) -> Result<AttnShape> {
    let shape = check_qkv(info, q, k, v, Some(out))?;
    if index.meta.shape != shape {
        return Err(invalid(
            "index",
            format!("built for {:?}, used with {shape:?}", index.meta.shape),
        ));
    }
    Ok(shape)
}

/// Check the operands of an A-shape call ([`check_qkv`] plus [`check_windows`]).
pub fn check_a_shape(
    info: &BackendInfo,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    windows: &[Option<(usize, usize)>],
    out: &DeviceTensor,
) -> Result<AttnShape> {
    let shape = check_qkv(info, q, k, v, Some(out))?;
    check_windows(&shape, windows)?;
    Ok(shape)
}

/// Check `windows` (one per query head) for the A-shape kernel.
pub fn check_windows(shape: &AttnShape, windows: &[Option<(usize, usize)>]) -> Result<()> {
    if windows.len() != shape.q_heads {
        return Err(invalid(
            "windows",
            format!(
                "{} entries for {} query heads",
                windows.len(),
                shape.q_heads
            ),
        ));
    }
    for (sink, local) in windows.iter().flatten() {
        Pattern::AShape {
            sink: *sink,
            local: *local,
        }
        .validate()?;
    }
    Ok(())
}

/// The output of a layer run: the attention output and, for layers with index heads, the index.
pub struct LayerOutput {
    /// `[B, Hq, N, D]` in q's dtype.
    pub out: DeviceTensor,
    /// The sparse index, if any head uses it.
    pub index: Option<DeviceIndex>,
}

/// Run a layer with one pattern per query head on `backend`: the A-shape kernel for A-shape
/// (and, in mixed layers, dense) heads, index building and the sparse kernel for
/// vertical-slash and block-sparse heads, the dense kernel when every head is dense.
pub fn run_layer(
    backend: &dyn Backend,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[Pattern],
) -> Result<LayerOutput> {
    let mut out = backend.empty(q.dims(), q.dtype())?;
    let index = run_layer_into(backend, q, k, v, patterns, &mut out)?;
    Ok(LayerOutput { out, index })
}

/// [`run_layer`] into a given output tensor (tests poison it first); returns the index.
pub fn run_layer_into(
    backend: &dyn Backend,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[Pattern],
    out: &mut DeviceTensor,
) -> Result<Option<DeviceIndex>> {
    let shape = check_qkv(&backend.info(), q, k, v, Some(out))?;
    crate::pattern::LayerConfig {
        heads: patterns.to_vec(),
    }
    .validate(shape.q_heads)?;
    let index = if patterns.iter().any(Pattern::uses_index) {
        Some(backend.build_index(q, k, patterns)?)
    } else {
        None
    };
    attend_layer(backend, q, k, v, patterns, index.as_ref(), out)?;
    Ok(index)
}

/// The attention kernels of a layer whose index (if any head uses one) is built: one dense
/// kernel when every head is dense; otherwise the A-shape kernel for dense and A-shape heads
/// (dense as the window `(0, N)`) and the sparse kernel for index heads. Each kernel writes
/// only the heads it serves.
pub fn attend_layer(
    backend: &dyn Backend,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[Pattern],
    index: Option<&DeviceIndex>,
    out: &mut DeviceTensor,
) -> Result<()> {
    if patterns.iter().all(|p| *p == Pattern::Dense) {
        return backend.dense_attention(q, k, v, out);
    }
    let n = check_qkv(&backend.info(), q, k, v, Some(out))?.seq_len;
    let windows: Vec<Option<(usize, usize)>> = patterns
        .iter()
        .map(|p| match *p {
            Pattern::Dense => Some((0, n)),
            Pattern::AShape { sink, local } => Some((sink, local)),
            _ => None,
        })
        .collect();
    if windows.iter().any(Option::is_some) {
        backend.a_shape_attention(q, k, v, &windows, out)?;
    }
    if patterns.iter().any(Pattern::uses_index) {
        let ix = index.ok_or_else(|| {
            crate::error::invalid("index", "the layer has index heads but no index was given")
        })?;
        backend.sparse_attention(q, k, v, ix, out)?;
    }
    Ok(())
}
