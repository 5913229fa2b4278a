//! The CUDA backend on cudarc: kernels in `kernels/*.cu`, compiled by NVRTC at first use for
//! the device's compute capability and cached, one module per kernel family: in memory per
//! backend, and as PTX on disk across processes ([`ptx_cache_dir`]).
//!
//! Everything runs on the GPU: upload, the whole index pipeline (vertical-slash estimate,
//! top-k selection, conversion; block-sparse pooling, scores, selection) and attention.
//! Inputs are checked on the host before any launch; every launch's result is checked.

use crate::backend::{check_a_shape, check_qkv, Backend, BackendInfo, DeviceIndex, DeviceTensor};
use crate::error::{invalid, Error, Result};
use crate::index::{HostIndex, IndexMeta};
use crate::pattern::{Pattern, BLOCK, FORCED_COLUMNS, FORCED_OFFSETS, LAST_Q};
use crate::tensor::{AttnShape, DType, HostTensor, TensorData};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const NAME: &str = "cuda";

const COMMON: &str = include_str!("../../kernels/common.cuh");
const INDEX_COMMON: &str = include_str!("../../kernels/index_common.cuh");
const ATTENTION: &str = include_str!("../../kernels/attention.cu");
const MMA_COMMON: &str = include_str!("../../kernels/mma_common.cuh");
const ATTENTION_TILES: &str = include_str!("../../kernels/attention_tiles.cuh");
const ATTENTION_MMA: &str = include_str!("../../kernels/attention_mma.cu");
const ATTENTION_WGMMA: &str = include_str!("../../kernels/attention_wgmma.cu");
const VERTICAL_SLASH_INDEX: &str = include_str!("../../kernels/vertical_slash_index.cu");
const BLOCK_SPARSE_INDEX: &str = include_str!("../../kernels/block_sparse_index.cu");

/// Rows handled by one CTA of the scalar attention kernel (one warp per row).
const ROWS_PER_CTA: usize = 8;
/// Query rows per CTA of the tensor-core kernel (`BLOCK_M`): one index row block.
const BLOCK_M: usize = BLOCK;
/// How the tensor-core kernel tiles the query rows: `block_m` rows per CTA (64, or 128 for
/// dense and A-shape heads only: the sparse kernel serves one index row block) and `warp_mt`
/// m16 row tiles per warp (`block_m / (16 * warp_mt)` warps; with 2, each K/V fragment read
/// from shared memory feeds two MMAs, halving that traffic, at about 255 registers).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MmaTiling {
    /// Query rows per CTA: 64 or 128.
    pub block_m: usize,
    /// m16 row tiles per warp: 1 or 2.
    pub warp_mt: usize,
}

impl MmaTiling {
    /// Dense and A-shape default: 128-row CTAs of 4 warps x 32 rows. H100, bf16, D = 128
    /// (2026-11-23): dense N = 16384 337 TFLOP/s, against 284 for 64 x 1, 293 for 64 x 2 and
    /// 234 for 128 x 1.
    pub const WINDOW_DEFAULT: MmaTiling = MmaTiling {
        block_m: 128,
        warp_mt: 2,
    };
    /// Sparse default: 64-row CTAs (one index row block) of 4 warps x 16 rows: vertical-slash
    /// at N = 131072 ran at 294 TFLOP/s against 281 for 2 warps x 32 rows.
    pub const SPARSE_DEFAULT: MmaTiling = MmaTiling {
        block_m: BLOCK_M,
        warp_mt: 1,
    };

    fn check(self, sparse: bool) -> Result<Self> {
        let rows_ok = if sparse {
            self.block_m == BLOCK_M
        } else {
            matches!(self.block_m, 64 | 128)
        };
        if !rows_ok || !matches!(self.warp_mt, 1 | 2) {
            return Err(invalid(
                "tiling",
                format!(
                    "{self:?}: want block_m {} and warp_mt 1 or 2",
                    if sparse { "64" } else { "64 or 128" }
                ),
            ));
        }
        Ok(self)
    }
}

/// Dynamic shared memory of the tensor-core kernel: a Q tile of [block_m, D + 8] halfs and
/// K and V tiles of [64, D + 8] halfs.
fn mma_smem_bytes(block_m: usize, head_dim: usize) -> u32 {
    ((block_m + 2 * BLOCK) * (head_dim + 8) * 2) as u32
}
/// Dynamic shared memory of the wgmma kernel: q [block_m, D], k and v [64, D] halfs in the
/// swizzled layout, plus 1 KiB to align them to 1024 bytes.
fn wgmma_smem_bytes(block_m: usize, head_dim: usize) -> u32 {
    ((block_m + 2 * BLOCK) * head_dim * 2 + 1024) as u32
}
/// Default query rows per wgmma CTA for dense and A-shape heads.
pub const WGMMA_WINDOW_ROWS: usize = 64;
/// Key columns per CTA in the scalar vertical-slash estimate (`STAT_COLS` in the kernel).
const STAT_COLS: usize = 256;
/// Key columns per CTA in the tensor-core vertical-slash estimate (`VS_MMA_KEYS`).
const VS_MMA_KEYS: usize = 64;
/// Threads of a top-k selection CTA.
const SELECT_THREADS: u32 = 1024;
/// Estimate rows folded per `vs_combine` CTA (`COMBINE_ROWS`), and its threads.
const COMBINE_ROWS: usize = 8;
const COMBINE_THREADS: u32 = (COMBINE_ROWS * 32) as u32;
/// Row blocks per `vs_convert` CTA, one thread each (`CONVERT_THREADS`).
const CONVERT_THREADS: usize = 64;
/// Output tile edge of `bs_scores` (`SCORE_TILE`; 256 threads of 4 x 4 outputs).
const SCORE_TILE: usize = 64;
/// Head dims the kernels are written for.
const HEAD_DIMS: [usize; 2] = [64, 128];
/// Grid y and z limit of CUDA.
const MAX_GRID_YZ: usize = 65535;

/// One NVRTC module per kernel family.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `kernels/attention.cu`: the scalar attention kernel (f32, and the fallback).
    Attention,
    /// `kernels/attention_mma.cu`: the tensor-core attention kernel (f16, bf16; sm_80+).
    AttentionMma,
    /// `kernels/attention_wgmma.cu`: the Hopper warpgroup tensor-core attention kernel
    /// (f16, bf16; sm_90a only).
    AttentionWgmma,
    /// `kernels/vertical_slash_index.cu`.
    VerticalSlashIndex,
    /// `kernels/block_sparse_index.cu`.
    BlockSparseIndex,
}

impl Family {
    /// The module's full source: shared helpers, then the family's file.
    pub fn source(self) -> String {
        match self {
            Family::Attention => format!("{COMMON}\n{ATTENTION}"),
            Family::AttentionMma => {
                format!("{COMMON}\n{ATTENTION}\n{MMA_COMMON}\n{ATTENTION_TILES}\n{ATTENTION_MMA}")
            }
            Family::AttentionWgmma => {
                format!("{COMMON}\n{ATTENTION}\n{MMA_COMMON}\n{ATTENTION_TILES}\n{ATTENTION_WGMMA}")
            }
            Family::VerticalSlashIndex => {
                format!("{COMMON}\n{INDEX_COMMON}\n{MMA_COMMON}\n{VERTICAL_SLASH_INDEX}")
            }
            Family::BlockSparseIndex => format!("{COMMON}\n{INDEX_COMMON}\n{BLOCK_SPARSE_INDEX}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Attention => "attention",
            Family::AttentionMma => "attention_mma",
            Family::AttentionWgmma => "attention_wgmma",
            Family::VerticalSlashIndex => "vertical_slash_index",
            Family::BlockSparseIndex => "block_sparse_index",
        }
    }
    /// The NVRTC target of this family on a device of `arch` (e.g. `sm_90`), or `None` where
    /// the family does not run there (wgmma needs exactly sm_90, compiled as `sm_90a`).
    pub fn target(self, arch: &'static str) -> Option<&'static str> {
        match self {
            Family::AttentionWgmma => (arch == "sm_90").then_some("sm_90a"),
            _ => Some(arch),
        }
    }
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Attention,
        Family::AttentionMma,
        Family::AttentionWgmma,
        Family::VerticalSlashIndex,
        Family::BlockSparseIndex,
    ];
}

/// NVRTC options of every family (part of the PTX cache key).
const NVRTC_OPTIONS: [&str; 1] = ["--std=c++17"];

/// Compile one family to PTX for `arch` (e.g. `sm_90`).
pub fn compile_family(family: Family, arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    if !nvrtc_present() {
        // cudarc's dynamic loading would panic on the first NVRTC call.
        return Err(Error::Unavailable {
            backend: NAME,
            reason: "libnvrtc not found (install the CUDA runtime compiler)".into(),
        });
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect(),
        name: Some(format!("{}.cu", family.name())),
        ..Default::default()
    };
    compile_ptx_with_opts(family.source(), opts).map_err(|e| Error::Device {
        backend: NAME,
        kernel: family.name().into(),
        msg: format!("NVRTC compile for {arch} failed: {e}"),
    })
}

/// Where the backend keeps compiled PTX between processes: `$MINFERENCE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/minference`, else `$HOME/.cache/minference`; `None` (compile every time)
/// when none is set. NVRTC takes about 20 s per process for all families without it.
pub fn ptx_cache_dir() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("MINFERENCE_CACHE_DIR")
        .map(Into::into)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| std::path::Path::new(&d).join("minference")))
        .or_else(|| var("HOME").map(|d| std::path::Path::new(&d).join(".cache/minference")))
}

/// [`compile_family`] through a PTX cache in `dir` (none: compile). An entry is used only if
/// its recorded key (arch, NVRTC version and options, the family's whole source) equals this
/// build's, so an edited kernel, another arch or another NVRTC compiles afresh; an unreadable or unwritable cache only
/// costs the compile. Entries are written atomically (temporary file, then rename).
pub fn compile_family_cached(
    family: Family,
    arch: &'static str,
    dir: Option<&std::path::Path>,
) -> Result<cudarc::nvrtc::Ptx> {
    use std::hash::{Hash, Hasher};
    let Some(dir) = dir else {
        return compile_family(family, arch);
    };
    if !nvrtc_present() {
        return compile_family(family, arch); // the clear error, before nvrtcVersion below
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints through valid pointers; it needs libnvrtc, which
    // compile_family needs as well (a failure leaves 0.0 in the key: still exact-matched).
    let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    let key = format!(
        "arch {arch}\nnvrtc {major}.{minor}\noptions {}\n{}",
        NVRTC_OPTIONS.join(" "),
        family.source()
    );
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let stem = dir
        .join("ptx")
        .join(format!("{}-{arch}-{:016x}", family.name(), h.finish()));
    let (key_path, ptx_path) = (stem.with_extension("key"), stem.with_extension("ptx"));
    if std::fs::read_to_string(&key_path).is_ok_and(|k| k == key) {
        if let Ok(src) = std::fs::read_to_string(&ptx_path) {
            return Ok(cudarc::nvrtc::Ptx::from_src(src));
        }
    }
    let ptx = compile_family(family, arch)?;
    let write = |path: &std::path::Path, text: &str| -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    };
    // The PTX first, then the key that vouches for it.
    let _ = std::fs::create_dir_all(dir.join("ptx"))
        .and_then(|()| write(&ptx_path, &ptx.to_src()))
        .and_then(|()| write(&key_path, &key));
    Ok(ptx)
}

/// True if libnvrtc can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its known names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn dev_err(kernel: &str, e: impl std::fmt::Display) -> Error {
    Error::Device {
        backend: NAME,
        kernel: kernel.into(),
        msg: e.to_string(),
    }
}

/// Attention kernel params; mirrors `AttnParams` in `kernels/attention.cu` byte for byte.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
struct AttnParams {
    batch: i32,
    q_heads: i32,
    kv_heads: i32,
    seq_len: i32,
    head_dim: i32,
    mode: i32,
    rows: i32,
    nnz_s: i32,
    nnz_v: i32,
    scale_log2: f32,
}
// SAFETY: plain `repr(C)` struct of i32/f32, passed by value to the kernel.
unsafe impl DeviceRepr for AttnParams {}

const MODE_DENSE: i32 = 0;
const MODE_A_SHAPE: i32 = 1;
const MODE_SPARSE: i32 = 2;

/// Index kernel params; mirrors `IndexParams` in `kernels/index_common.cuh`.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
struct IndexParams {
    batch: i32,
    q_heads: i32,
    kv_heads: i32,
    seq_len: i32,
    head_dim: i32,
    rows: i32,
    nv: i32,
    ns: i32,
    top_k: i32,
    nnz_s: i32,
    nnz_v: i32,
    last_q: i32,
    stat_tiles: i32,
    forced_columns: i32,
    forced_offsets: i32,
    scale_log2: f32,
}
// SAFETY: plain `repr(C)` struct of i32/f32, passed by value to the kernel.
unsafe impl DeviceRepr for IndexParams {}

const HEAD_NONE: i32 = 0;
const HEAD_VS: i32 = 1;
const HEAD_BS: i32 = 2;

/// Device storage of a tensor: its raw little-endian elements.
struct CudaBuf(CudaSlice<u8>);

/// Device storage of an index: the seven arrays of [`HostIndex`].
struct CudaIndex {
    vertical_index: CudaSlice<i32>,
    slash_index: CudaSlice<i32>,
    block_index: CudaSlice<i32>,
    block_count: CudaSlice<i32>,
    block_offset: CudaSlice<i32>,
    column_count: CudaSlice<i32>,
    column_index: CudaSlice<i32>,
}

/// The CUDA backend (device 0).
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    device: String,
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
    scalar_only: AtomicBool,
    window_tiling: Mutex<MmaTiling>,
    sparse_tiling: Mutex<MmaTiling>,
    wgmma_rows: Mutex<Option<usize>>,
}

/// A settings lock; a panic while holding it leaves a usable value (plain `Copy` data).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn dtype_suffix(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
    }
}

fn to_i32(name: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| invalid(name, format!("{x} does not fit in i32")))
}

/// NVRTC's `arch` option for a compute capability (it takes a `'static` name). Known ones
/// are literals; any other is leaked once per backend opened (a few bytes).
fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        _ => Box::leak(format!("sm_{major}{minor}").into_boxed_str()),
    }
}

fn grid_1d(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

impl CudaBackend {
    /// Open device 0, or say why not (no driver, no NVRTC, no GPU, GPU older than sm_80).
    pub fn new() -> Result<Self> {
        let unavailable = |reason: String| Error::Unavailable {
            backend: NAME,
            reason,
        };
        // SAFETY: only tries to dlopen libcuda by its known names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable(
                "libcuda not found (no NVIDIA driver on this machine)".into(),
            ));
        }
        if !nvrtc_present() {
            return Err(unavailable(
                "libnvrtc not found (install the CUDA runtime compiler, or `pip install nvidia-cuda-nvrtc` and set LD_LIBRARY_PATH)".into(),
            ));
        }
        let ctx = CudaContext::new(0).map_err(|e| unavailable(format!("no CUDA device: {e}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| unavailable(format!("compute capability: {e}")))?;
        if major < 8 {
            return Err(unavailable(format!(
                "compute capability {major}.{minor}: the kernels need sm_80 or newer"
            )));
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let arch = arch_name(major, minor);
        let stream = ctx.default_stream();
        // SAFETY: the backend runs everything on this one stream, so cudarc's cross-stream
        // event tracking (two events created per allocation) has nothing to order.
        unsafe { ctx.disable_event_tracking() };
        Ok(Self {
            device: format!("{name} ({arch}), cudarc + NVRTC"),
            ctx,
            stream,
            arch,
            modules: Mutex::new(HashMap::new()),
            scalar_only: AtomicBool::new(false),
            window_tiling: Mutex::new(MmaTiling::WINDOW_DEFAULT),
            sparse_tiling: Mutex::new(MmaTiling::SPARSE_DEFAULT),
            wgmma_rows: Mutex::new(
                Family::AttentionWgmma
                    .target(arch)
                    .map(|_| WGMMA_WINDOW_ROWS),
            ),
        })
    }

    /// Use the scalar attention kernel for every dtype (for comparisons); default off:
    /// f16 and bf16 run on the tensor-core kernel.
    pub fn set_scalar_only(&self, on: bool) {
        self.scalar_only.store(on, Ordering::Relaxed);
    }

    /// The tensor-core kernel's tiling for dense and A-shape heads (for tuning and benches;
    /// default [`MmaTiling::WINDOW_DEFAULT`]).
    pub fn set_window_tiling(&self, tiling: MmaTiling) -> Result<()> {
        *lock(&self.window_tiling) = tiling.check(false)?;
        Ok(())
    }

    /// The tensor-core kernel's tiling for sparse heads (`block_m` must be 64; default
    /// [`MmaTiling::SPARSE_DEFAULT`]).
    pub fn set_sparse_tiling(&self, tiling: MmaTiling) -> Result<()> {
        *lock(&self.sparse_tiling) = tiling.check(true)?;
        Ok(())
    }

    /// True if this device runs the Hopper wgmma kernel (sm_90).
    pub fn has_wgmma(&self) -> bool {
        Family::AttentionWgmma.target(self.arch).is_some()
    }

    /// The f16/bf16 attention kernel on sm_90: `Some(rows)` runs the wgmma kernel with `rows`
    /// (64 or 128) query rows per CTA for dense and A-shape heads (sparse heads: 64), `None`
    /// the mma.sync kernel with its tilings. Default on sm_90: `Some(WGMMA_WINDOW_ROWS)`;
    /// elsewhere `None`, and asking for wgmma is an error.
    pub fn set_wgmma(&self, rows: Option<usize>) -> Result<()> {
        if let Some(r) = rows {
            if !matches!(r, 64 | 128) {
                return Err(invalid("wgmma rows", format!("{r}: want 64 or 128")));
            }
            if !self.has_wgmma() {
                return Err(Error::Unsupported {
                    backend: NAME,
                    what: format!("the wgmma kernel on {} (it needs sm_90)", self.arch),
                });
            }
        }
        *lock(&self.wgmma_rows) = rows;
        Ok(())
    }

    /// The kernel `name` of `family`, compiling and loading the family on first use.
    fn function(&self, family: Family, name: &str) -> Result<CudaFunction> {
        let module = {
            let mut map = self
                .modules
                .lock()
                .map_err(|_| dev_err(family.name(), "module cache lock poisoned"))?;
            match map.get(&family) {
                Some(m) => m.clone(),
                None => {
                    let target = family.target(self.arch).ok_or_else(|| {
                        dev_err(family.name(), format!("does not run on {}", self.arch))
                    })?;
                    let ptx = compile_family_cached(family, target, ptx_cache_dir().as_deref())?;
                    let m = self
                        .ctx
                        .load_module(ptx)
                        .map_err(|e| dev_err(family.name(), format!("load module: {e}")))?;
                    map.insert(family, m.clone());
                    m
                }
            }
        };
        module
            .load_function(name)
            .map_err(|e| dev_err(name, format!("load function: {e}")))
    }

    fn buf<'a>(&self, t: &'a DeviceTensor, arg: &str) -> Result<&'a CudaSlice<u8>> {
        Ok(&t.storage::<CudaBuf>(NAME, arg)?.0)
    }

    fn alloc_i32(&self, len: usize, fill: i32) -> Result<CudaSlice<i32>> {
        let len = len.max(1);
        if fill == 0 {
            return self
                .stream
                .alloc_zeros::<i32>(len)
                .map_err(|e| dev_err("alloc", e));
        }
        // SAFETY: every element is written by the fill kernel below before any use (same
        // stream).
        let mut s = unsafe { self.stream.alloc::<i32>(len) }.map_err(|e| dev_err("alloc", e))?;
        let f = self.function(Family::VerticalSlashIndex, "index_fill_i32")?;
        let n = len as u64;
        let cfg = LaunchConfig {
            grid_dim: (grid_1d(len, 256).min(65535), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `s` holds `len` i32; the kernel writes indices < n = len (grid-stride).
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&mut s)
                .arg(&n)
                .arg(&fill)
                .launch(cfg)
        }
        .map_err(|e| dev_err("index_fill_i32", e))?;
        Ok(s)
    }

    fn alloc_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| dev_err("alloc", e))
    }

    fn upload_i32(&self, v: &[i32]) -> Result<CudaSlice<i32>> {
        if v.is_empty() {
            return self.alloc_i32(1, 0);
        }
        self.stream.clone_htod(v).map_err(|e| dev_err("upload", e))
    }

    fn download_i32(&self, s: &CudaSlice<i32>, len: usize) -> Result<Vec<i32>> {
        let mut v = self
            .stream
            .clone_dtoh(s)
            .map_err(|e| dev_err("download", e))?;
        v.truncate(len);
        Ok(v)
    }

    fn check_limits(&self, shape: &AttnShape) -> Result<()> {
        let bh = shape.batch * shape.q_heads;
        if bh > MAX_GRID_YZ {
            return Err(Error::Unsupported {
                backend: NAME,
                what: format!("batch * heads = {bh} (at most {MAX_GRID_YZ})"),
            });
        }
        to_i32("seq_len", shape.seq_len.saturating_mul(BLOCK))?;
        Ok(())
    }

    /// One launch of the attention kernel in `mode` over every head it serves.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        mode: i32,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
        windows: &[i32],
        uses_index: &[i32],
        index: Option<&DeviceIndex>,
    ) -> Result<()> {
        let shape = check_qkv(&self.info(), q, k, v, Some(out))?;
        self.check_limits(&shape)?;
        let (nnz_s, nnz_v, rows) = match index {
            Some(ix) => (ix.meta.nnz_s, ix.meta.nnz_v, ix.meta.rows),
            None => (0, 0, shape.rows()),
        };
        let p = AttnParams {
            batch: to_i32("batch", shape.batch)?,
            q_heads: to_i32("q_heads", shape.q_heads)?,
            kv_heads: to_i32("kv_heads", shape.kv_heads)?,
            seq_len: to_i32("seq_len", shape.seq_len)?,
            head_dim: to_i32("head_dim", shape.head_dim)?,
            mode,
            rows: to_i32("rows", rows)?,
            nnz_s: to_i32("nnz_s", nnz_s)?,
            nnz_v: to_i32("nnz_v", nnz_v)?,
            scale_log2: (shape.scale() * std::f64::consts::LOG2_E) as f32,
        };
        let windows = self.upload_i32(windows)?;
        let uses_index = self.upload_i32(uses_index)?;
        let dummy = self.alloc_i32(1, 0)?;
        let cix = match index {
            Some(ix) => Some(ix.storage::<CudaIndex>(NAME)?),
            None => None,
        };
        let (bc, bo, cc, ci) = match cix {
            Some(c) => (
                &c.block_count,
                &c.block_offset,
                &c.column_count,
                &c.column_index,
            ),
            None => (&dummy, &dummy, &dummy, &dummy),
        };
        let mma = q.dtype() != DType::F32 && !self.scalar_only.load(Ordering::Relaxed);
        let MmaTiling { block_m, warp_mt } = if mode == MODE_SPARSE {
            *lock(&self.sparse_tiling)
        } else {
            *lock(&self.window_tiling)
        };
        let wgmma_rows = if mma { *lock(&self.wgmma_rows) } else { None };
        let sfx = dtype_suffix(q.dtype());
        let d = shape.head_dim;
        // (family, entry point, query rows per CTA, threads, dynamic shared memory)
        let (family, name, rows, threads, smem) = match wgmma_rows {
            Some(rows) => {
                let block_m = if mode == MODE_SPARSE { BLOCK_M } else { rows };
                let bm = if block_m == 128 { "_bm128" } else { "" };
                (
                    Family::AttentionWgmma,
                    format!("attention_wgmma_{sfx}_d{d}{bm}"),
                    block_m,
                    2 * block_m,
                    wgmma_smem_bytes(block_m, d),
                )
            }
            None if mma => {
                let bm = if block_m == 128 { "_bm128" } else { "" };
                (
                    Family::AttentionMma,
                    format!("attention_mma_{sfx}_d{d}_mt{warp_mt}{bm}"),
                    block_m,
                    2 * block_m / warp_mt,
                    mma_smem_bytes(block_m, d),
                )
            }
            None => (
                Family::Attention,
                format!("attention_scalar_{sfx}"),
                ROWS_PER_CTA,
                32 * ROWS_PER_CTA,
                0,
            ),
        };
        let cfg = LaunchConfig {
            grid_dim: (
                grid_1d(shape.seq_len, rows),
                (shape.batch * shape.q_heads) as u32,
                1,
            ),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: smem,
        };
        let f = self.function(family, &name)?;
        if mma {
            // Both tensor-core kernels: above 48 KiB dynamic shared memory must be opted into.
            f.set_attribute(
                cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                cfg.shared_mem_bytes as i32,
            )
            .map_err(|e| dev_err(&name, format!("set max dynamic shared memory: {e}")))?;
        }
        let (qb, kb, vb) = (self.buf(q, "q")?, self.buf(k, "k")?, self.buf(v, "v")?);
        let ob = &mut out.storage_mut::<CudaBuf>(NAME, "out")?.0;
        // SAFETY: check_qkv proved q/out are [B, Hq, N, D] and k/v [B, Hkv, N, D] of one dtype
        // (the buffers hold exactly those bytes); D is 64 or 128 (info().head_dims): the
        // scalar kernel's D/32 <= 4 slots per lane fit, and the tensor-core kernels are
        // instantiated for exactly that D and block_m (their dynamic shared memory,
        // mma_smem_bytes: [block_m + 128, D + 8] halfs, wgmma_smem_bytes: [block_m + 128, D]
        // halfs + 1 KiB of alignment slack, opted into above; the wgmma family exists only
        // on sm_90; block_m = 128 only in dense/A-shape modes, which read no index rows). Rows i >= N are
        // neither read (zero-filled) nor written; keys >= N are zero-filled and masked;
        // grid.y = B*Hq, grid.x = cdiv(N, rows per CTA). `windows`
        // and `uses_index` hold Hq pairs/entries; in sparse mode the index was built or
        // validated for this shape (checked by the caller), so every row's counts are within
        // NNZ_S/NNZ_V and every key it names is < N.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&p)
                .arg(qb)
                .arg(kb)
                .arg(vb)
                .arg(ob)
                .arg(&windows)
                .arg(&uses_index)
                .arg(bc)
                .arg(bo)
                .arg(cc)
                .arg(ci)
                .launch(cfg)
        }
        .map_err(|e| dev_err(&name, e))?;
        Ok(())
    }

    fn index_params(&self, meta: &IndexMeta) -> Result<IndexParams> {
        let s = &meta.shape;
        let last_q = LAST_Q.min(s.seq_len);
        Ok(IndexParams {
            batch: to_i32("batch", s.batch)?,
            q_heads: to_i32("q_heads", s.q_heads)?,
            kv_heads: to_i32("kv_heads", s.kv_heads)?,
            seq_len: to_i32("seq_len", s.seq_len)?,
            head_dim: to_i32("head_dim", s.head_dim)?,
            rows: to_i32("rows", meta.rows)?,
            nv: to_i32("nv", meta.nv)?,
            ns: to_i32("ns", meta.ns)?,
            top_k: to_i32("top_k", meta.top_k)?,
            nnz_s: to_i32("nnz_s", meta.nnz_s)?,
            nnz_v: to_i32("nnz_v", meta.nnz_v)?,
            last_q: to_i32("last_q", last_q)?,
            stat_tiles: to_i32("stat_tiles", s.seq_len.div_ceil(STAT_COLS))?,
            forced_columns: FORCED_COLUMNS as i32,
            forced_offsets: FORCED_OFFSETS as i32,
            scale_log2: (s.scale() * std::f64::consts::LOG2_E) as f32,
        })
    }

    /// The vertical-slash stages: estimate, selection, conversion.
    #[allow(clippy::too_many_arguments)]
    fn build_vertical_slash(
        &self,
        meta: &IndexMeta,
        p: &IndexParams,
        heads: &CudaSlice<i32>,
        q: &CudaSlice<u8>,
        k: &CudaSlice<u8>,
        dtype: DType,
        ix: &mut CudaIndex,
    ) -> Result<()> {
        let s = &meta.shape;
        let (n, bh) = (s.seq_len, meta.heads_total());
        // f16/bf16 estimate on tensor cores (64-key stat tiles, 128 threads); f32 (and the
        // scalar-only mode) on the scalar kernels (256-key stat tiles).
        let mma = dtype != DType::F32 && !self.scalar_only.load(Ordering::Relaxed);
        let (tile_keys, threads) = if mma {
            (VS_MMA_KEYS, 128)
        } else {
            (STAT_COLS, STAT_COLS as u32)
        };
        let tiles = n.div_ceil(tile_keys);
        let mut p = *p;
        p.stat_tiles = to_i32("stat_tiles", tiles)?;
        let p = &p;
        let mut part_max = self.alloc_f32(bh * tiles * LAST_Q)?;
        let mut part_sum = self.alloc_f32(bh * tiles * LAST_Q)?;
        let mut row_max = self.alloc_f32(bh * LAST_Q)?;
        let mut row_sum = self.alloc_f32(bh * LAST_Q)?;
        let mut vertical = self.alloc_f32(bh * n)?;
        let mut slash = self.alloc_f32(bh * n)?;
        let sfx = dtype_suffix(dtype);
        let (stats, accumulate) = if mma {
            (
                format!("vs_mma_stats_{sfx}_d{}", s.head_dim),
                format!("vs_mma_accumulate_{sfx}_d{}", s.head_dim),
            )
        } else {
            (format!("vs_stats_{sfx}"), format!("vs_accumulate_{sfx}"))
        };
        let tile_cfg = LaunchConfig {
            grid_dim: (tiles as u32, bh as u32, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function(Family::VerticalSlashIndex, &stats)?;
        // SAFETY: q [B,Hq,N,D], k [B,Hkv,N,D] checked by the caller; D is 64 or 128: the
        // scalar kernel's [64, 128] shared q tile fits it and the tensor-core kernel is
        // instantiated for exactly that D; columns j >= N are masked (zero-filled keys);
        // part_* hold bh * tiles * 64 with p.stat_tiles = tiles.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(q)
                .arg(k)
                .arg(&mut part_max)
                .arg(&mut part_sum)
                .launch(tile_cfg)
        }
        .map_err(|e| dev_err(&stats, e))?;
        let f = self.function(Family::VerticalSlashIndex, "vs_combine")?;
        let cfg = LaunchConfig {
            grid_dim: (bh as u32, (LAST_Q / COMBINE_ROWS) as u32, 1),
            block_dim: (COMBINE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: part_* hold bh * tiles * 64 floats, row_* bh * 64; CTA (bh, y) folds rows
        // 8y..8y+8 < 64 over tiles < p.stat_tiles = tiles.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&part_max)
                .arg(&part_sum)
                .arg(&mut row_max)
                .arg(&mut row_sum)
                .launch(cfg)
        }
        .map_err(|e| dev_err("vs_combine", e))?;
        let f = self.function(Family::VerticalSlashIndex, &accumulate)?;
        // SAFETY: as the stats pass; vertical and slash hold bh * N floats; every column
        // written is < N and every offset i_r - j added is in 0..N (checked in the kernel).
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(q)
                .arg(k)
                .arg(&row_max)
                .arg(&row_sum)
                .arg(&mut vertical)
                .arg(&mut slash)
                .launch(tile_cfg)
        }
        .map_err(|e| dev_err(&accumulate, e))?;
        let f = self.function(Family::VerticalSlashIndex, "vs_select")?;
        let cfg = LaunchConfig {
            grid_dim: (bh as u32, 2, 1),
            block_dim: (SELECT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: per head nv_h <= nv and ns_h <= ns (IndexMeta widths) and both <= N, so
        // select_top writes at most nv/ns entries into each head's row.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&vertical)
                .arg(&slash)
                .arg(&mut ix.vertical_index)
                .arg(&mut ix.slash_index)
                .launch(cfg)
        }
        .map_err(|e| dev_err("vs_select", e))?;
        let mut gaps = self.alloc_i32(bh * meta.ns, 0)?;
        let mut gap_count = self.alloc_i32(bh, 0)?;
        let f = self.function(Family::VerticalSlashIndex, "vs_gaps")?;
        let cfg = LaunchConfig {
            grid_dim: (bh as u32, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one warp per head reads its first ns_h <= ns selected offsets and writes
        // fewer than ns_h positions into its row of `gaps` (bh * ns) and one count.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&ix.slash_index)
                .arg(&mut gaps)
                .arg(&mut gap_count)
                .launch(cfg)
        }
        .map_err(|e| dev_err("vs_gaps", e))?;
        let f = self.function(Family::VerticalSlashIndex, "vs_convert")?;
        let cfg = LaunchConfig {
            grid_dim: (grid_1d(meta.rows, CONVERT_THREADS), bh as u32, 1),
            block_dim: (CONVERT_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one thread per row block m < R; writes are bounded by NNZ_S / NNZ_V in the
        // kernel; selections were just written ascending (the first ns_h / nv_h entries of
        // each head's row are read) and gaps holds gap_count < ns_h positions t < ns_h - 1.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&ix.vertical_index)
                .arg(&ix.slash_index)
                .arg(&gaps)
                .arg(&gap_count)
                .arg(&mut ix.block_count)
                .arg(&mut ix.block_offset)
                .arg(&mut ix.column_count)
                .arg(&mut ix.column_index)
                .launch(cfg)
        }
        .map_err(|e| dev_err("vs_convert", e))?;
        Ok(())
    }

    /// The block-sparse stages: pooling, scores, selection.
    #[allow(clippy::too_many_arguments)]
    fn build_block_sparse(
        &self,
        meta: &IndexMeta,
        p: &IndexParams,
        heads: &CudaSlice<i32>,
        q: &CudaSlice<u8>,
        k: &CudaSlice<u8>,
        dtype: DType,
        ix: &mut CudaIndex,
    ) -> Result<()> {
        let s = &meta.shape;
        let (r, bh, d) = (meta.rows, meta.heads_total(), s.head_dim);
        let mut q_pool = self.alloc_f32(bh * r * d)?;
        let mut k_pool = self.alloc_f32(bh * r * d)?;
        let mut scores = self.alloc_f32(bh * r * r)?;
        let name = format!("bs_pool_{}", dtype_suffix(dtype));
        let f = self.function(Family::BlockSparseIndex, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (r as u32, bh as u32, 1),
            block_dim: (d as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        for (src, is_k, dst) in [(q, 0i32, &mut q_pool), (k, 1i32, &mut k_pool)] {
            // SAFETY: one CTA per (row block < R, head), one thread per channel < D; rows
            // read are < N of the head's q or kv slice; pooled holds bh * R * D floats.
            unsafe {
                self.stream
                    .launch_builder(&f)
                    .arg(p)
                    .arg(heads)
                    .arg(src)
                    .arg(&is_k)
                    .arg(dst)
                    .launch(cfg)
            }
            .map_err(|e| dev_err(&name, e))?;
        }
        let f = self.function(Family::BlockSparseIndex, "bs_scores")?;
        let cfg = LaunchConfig {
            grid_dim: (grid_1d(r, SCORE_TILE), grid_1d(r, SCORE_TILE), bh as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads rows < R and channels < D of the pooled [bh, R, D] buffers; writes
        // scores[bh, m, c] for c < m < R into bh * R * R floats.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&q_pool)
                .arg(&k_pool)
                .arg(&mut scores)
                .launch(cfg)
        }
        .map_err(|e| dev_err("bs_scores", e))?;
        let f = self.function(Family::BlockSparseIndex, "bs_select")?;
        let cfg = LaunchConfig {
            grid_dim: (r as u32, bh as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: per row block at most top_k_h <= top_k = min(k, R) <= NNZ_S entries are
        // written to block_index and block_offset rows of those widths.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(p)
                .arg(heads)
                .arg(&scores)
                .arg(&mut ix.block_index)
                .arg(&mut ix.block_count)
                .arg(&mut ix.block_offset)
                .launch(cfg)
        }
        .map_err(|e| dev_err("bs_select", e))?;
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: NAME,
            device: self.device.clone(),
            dtypes: vec![DType::F32, DType::F16, DType::BF16],
            head_dims: HEAD_DIMS.to_vec(),
            notes: format!(
                "f16/bf16: tensor-core {} kernel; f32: scalar kernel (one warp per row, f32 \
                 arithmetic); index pipeline on the GPU",
                match *lock(&self.wgmma_rows) {
                    Some(rows) => format!("wgmma ({rows}-row CTAs)"),
                    None => "mma.sync FA2".into(),
                }
            ),
        }
    }

    fn upload(&self, t: &HostTensor) -> Result<DeviceTensor> {
        let bytes = t.as_bytes();
        let s = if bytes.is_empty() {
            self.stream.alloc_zeros::<u8>(1)
        } else {
            self.stream.clone_htod(bytes)
        }
        .map_err(|e| dev_err("upload", e))?;
        Ok(DeviceTensor::new(NAME, &t.dims, t.dtype(), CudaBuf(s)))
    }

    fn download(&self, t: &DeviceTensor) -> Result<HostTensor> {
        let n: usize = t.dims().iter().product();
        let mut bytes = self
            .stream
            .clone_dtoh(self.buf(t, "tensor")?)
            .map_err(|e| dev_err("download", e))?;
        bytes.truncate(n * t.dtype().size());
        let data = match t.dtype() {
            DType::F32 => TensorData::F32(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)),
            DType::F16 => TensorData::F16(bytemuck::pod_collect_to_vec::<u8, f16>(&bytes)),
            DType::BF16 => TensorData::BF16(bytemuck::pod_collect_to_vec::<u8, bf16>(&bytes)),
        };
        Ok(HostTensor {
            dims: t.dims().to_vec(),
            data,
        })
    }

    fn empty(&self, dims: &[usize], dtype: DType) -> Result<DeviceTensor> {
        let n: usize = dims.iter().product::<usize>() * dtype.size();
        let s = self
            .stream
            .alloc_zeros::<u8>(n.max(1))
            .map_err(|e| dev_err("alloc", e))?;
        Ok(DeviceTensor::new(NAME, dims, dtype, CudaBuf(s)))
    }

    fn build_index(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
    ) -> Result<DeviceIndex> {
        let shape = check_qkv(&self.info(), q, k, k, None)?;
        self.check_limits(&shape)?;
        let meta = IndexMeta::new(shape, patterns)?;
        let n = shape.seq_len;
        let mut heads = Vec::with_capacity(3 * shape.q_heads);
        for p in patterns {
            match *p {
                Pattern::VerticalSlash { vertical, slash } => {
                    let (nv, ns) = Pattern::vertical_slash_budgets(vertical, slash, n);
                    heads.extend([HEAD_VS, to_i32("vertical", nv)?, to_i32("slash", ns)?]);
                }
                Pattern::BlockSparse { top_k } => {
                    heads.extend([HEAD_BS, to_i32("top_k", top_k.min(meta.rows))?, 0]);
                }
                _ => heads.extend([HEAD_NONE, 0, 0]),
            }
        }
        let (bh, r) = (meta.heads_total(), meta.rows);
        let mut ix = CudaIndex {
            vertical_index: self.alloc_i32(bh * meta.nv, -1)?,
            slash_index: self.alloc_i32(bh * meta.ns, -1)?,
            block_index: self.alloc_i32(bh * r * meta.top_k, -1)?,
            block_count: self.alloc_i32(bh * r, 0)?,
            block_offset: self.alloc_i32(bh * r * meta.nnz_s, -1)?,
            column_count: self.alloc_i32(bh * r, 0)?,
            column_index: self.alloc_i32(bh * r * meta.nnz_v, -1)?,
        };
        let p = self.index_params(&meta)?;
        let heads_d = self.upload_i32(&heads)?;
        let (qb, kb) = (self.buf(q, "q")?, self.buf(k, "k")?);
        if patterns
            .iter()
            .any(|p| matches!(p, Pattern::VerticalSlash { .. }))
        {
            self.build_vertical_slash(&meta, &p, &heads_d, qb, kb, q.dtype(), &mut ix)?;
        }
        if patterns
            .iter()
            .any(|p| matches!(p, Pattern::BlockSparse { .. }))
        {
            self.build_block_sparse(&meta, &p, &heads_d, qb, kb, q.dtype(), &mut ix)?;
        }
        Ok(DeviceIndex::new(NAME, meta, ix))
    }

    fn upload_index(&self, index: &HostIndex) -> Result<DeviceIndex> {
        index.validate()?;
        let ix = CudaIndex {
            vertical_index: self.upload_i32(&index.vertical_index)?,
            slash_index: self.upload_i32(&index.slash_index)?,
            block_index: self.upload_i32(&index.block_index)?,
            block_count: self.upload_i32(&index.block_count)?,
            block_offset: self.upload_i32(&index.block_offset)?,
            column_count: self.upload_i32(&index.column_count)?,
            column_index: self.upload_i32(&index.column_index)?,
        };
        Ok(DeviceIndex::new(NAME, index.meta.clone(), ix))
    }

    fn download_index(&self, index: &DeviceIndex) -> Result<HostIndex> {
        let ix = index.storage::<CudaIndex>(NAME)?;
        let m = &index.meta;
        let (bh, r) = (m.heads_total(), m.rows);
        Ok(HostIndex {
            meta: m.clone(),
            vertical_index: self.download_i32(&ix.vertical_index, bh * m.nv)?,
            slash_index: self.download_i32(&ix.slash_index, bh * m.ns)?,
            block_index: self.download_i32(&ix.block_index, bh * r * m.top_k)?,
            block_count: self.download_i32(&ix.block_count, bh * r)?,
            block_offset: self.download_i32(&ix.block_offset, bh * r * m.nnz_s)?,
            column_count: self.download_i32(&ix.column_count, bh * r)?,
            column_index: self.download_i32(&ix.column_index, bh * r * m.nnz_v)?,
        })
    }

    fn sparse_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        index: &DeviceIndex,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        let shape = crate::backend::check_sparse(&self.info(), q, k, v, index, out)?;
        let uses: Vec<i32> = index
            .meta
            .patterns
            .iter()
            .map(|p| p.uses_index() as i32)
            .collect();
        let windows = vec![-1; 2 * shape.q_heads];
        self.attention(MODE_SPARSE, q, k, v, out, &windows, &uses, Some(index))
    }

    fn dense_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        let shape = check_qkv(&self.info(), q, k, v, Some(out))?;
        let windows = vec![0; 2 * shape.q_heads];
        let uses = vec![0; shape.q_heads];
        self.attention(MODE_DENSE, q, k, v, out, &windows, &uses, None)
    }

    fn a_shape_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        windows: &[Option<(usize, usize)>],
        out: &mut DeviceTensor,
    ) -> Result<()> {
        let shape = check_a_shape(&self.info(), q, k, v, windows, out)?;
        let n = shape.seq_len;
        let mut w = Vec::with_capacity(2 * windows.len());
        for win in windows {
            match *win {
                // Windows wider than N behave as N: clamp so they fit in i32.
                Some((sink, local)) => {
                    w.extend([to_i32("sink", sink.min(n))?, to_i32("local", local.min(n))?])
                }
                None => w.extend([-1, -1]),
            }
        }
        let uses = vec![0; shape.q_heads];
        self.attention(MODE_A_SHAPE, q, k, v, out, &w, &uses, None)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("synchronize", e))
    }
}
