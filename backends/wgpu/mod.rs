//! The WGSL backend on wgpu: every stage on the GPU, no host round trip between stages.
//!
//! Kernels (one `shaders/*.wgsl` file per family, entry points `{stem}_{dtype}`):
//! - `vertical_slash_estimate`: last-64-query softmax on 64-key score tiles (stats, combine),
//!   column and diagonal sums (sums, slash), forced entries;
//! - `block_sparse_index`: mean pooling (coalesced rows, k pooled once per kv head) and the
//!   block scores as a causal tiled matmul (64 x 64 output tiles, lower triangle only);
//! - `top_k_select`: radix select of the columns, offsets and blocks (ties to the smaller
//!   index); lists of at most [`TOP_K_SHORT_LEN`] keys (every block-sparse row block) take
//!   `top_k_select_short`, which reads its list into workgroup memory once;
//! - `vertical_slash_index`: the -1 padding (fill), then the conversion of the selections to
//!   `block_count`/`block_offset`/`column_count`/`column_index` (block-sparse rows included);
//! - `sparse_attention`, `a_shape_attention`, `dense_attention`: FlashAttention-style tiles
//!   with an f32 online softmax, in one family per [`Variant`]:
//!   - [`Variant::Rowwise`] (`attention_core.wgsl`): one query row per invocation, K/V read
//!     from storage, no workgroup memory; the fallback that runs anywhere;
//!   - [`Variant::Tiled`] (`attention_tiled_core.wgsl`, stems `{kind}_tiled`): 64 rows x 64
//!     keys per tile, 256 invocations, each with a 4 x 4 score micro-tile and a 4 x D/16
//!     output micro-tile; Q/K chunks, P and V chunks in 32 KiB of workgroup memory; chosen by
//!     [`WgpuBackend::new`] when the adapter's workgroup limits fit it and it has no
//!     cooperative matrices;
//!   - [`Variant::CoopMatrix`] (`attention_coop.wgsl`, stems `{kind}_coop`, f16 tensors only):
//!     Q.K^T and P.V on 16x16x16 cooperative matrices, 64 rows x 32 keys per tile, 8 subgroups
//!     of 32 (each 16 rows x half the keys in S and half the head dim in O; 64-key tiles with
//!     32-row subgroups by [`COOP_BLOCK_N_ENV`]) with Q, O and S in named matrix registers, K/V
//!     staged 16 bytes a chunk, O rescaled lazily, under 24 KiB of workgroup memory so that
//!     two workgroups share an SM; head dim and tile as pipeline constants
//!     ([`coop_constants`]); modules built without wgpu's
//!     runtime checks (`Family::trusted`); the device opts into
//!     `EXPERIMENTAL_COOPERATIVE_MATRIX`, `SHADER_F16` and `SUBGROUP` only where the adapter
//!     has them and reports a 16x16x16 f16->f32 configuration. Chosen by [`WgpuBackend::new`]
//!     there (proven on the H100 and H200 through Vulkan: every suite and vector; 7.5x the
//!     tiled variant's speed dense, 6-7x sparse); f32 tensors take the portable kernels.
//!
//! Storage: f32 as f32 words, f16 as packed pairs in u32 words (`unpack2x16float`, so no
//! SHADER_F16 feature is needed), bf16 converted to f32 on upload and rounded back on download.

mod context;

use crate::backend::{check_a_shape, check_qkv, Backend, BackendInfo, DeviceIndex, DeviceTensor};
use crate::error::{invalid, Result};
use crate::index::{HostIndex, IndexMeta};
use crate::pattern::{Pattern, BLOCK, LAST_Q};
use crate::tensor::{AttnShape, DType, HostTensor, TensorData};
use bytemuck::{Pod, Zeroable};
#[doc(hidden)]
pub use context::first_adapter;
use context::{give_back, BufferPool, Context, Family, Kernel, Slot, NAME};
use half::f16;

/// `LOG2E`: the kernels keep scores in base 2 (`exp2`), with `scale * LOG2E` folded once.
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// Query rows per workgroup of the attention kernels (= the index's row block).
const BLOCK_M: usize = BLOCK;
/// Largest head dim the kernels' private arrays hold (`MAX_HEAD_DIM` in WGSL).
const MAX_HEAD_DIM: usize = 128;
/// Head dims supported (and tested): even (packed f16 pairs) and at most `MAX_HEAD_DIM`.
const HEAD_DIMS: [usize; 2] = [64, 128];
/// `head_kind` codes shared with the WGSL kernels.
const KIND_VERTICAL_SLASH: u32 = 1;
const KIND_BLOCK_SPARSE: u32 = 2;
/// Workgroups per grid row of `top_k_select` (its lists are laid out on a 2D grid).
const TOP_K_GRID_X: usize = 65535;
/// Longest list `top_k_select_short` takes (`SHORT_LEN` in `top_k_select.wgsl`): its keys,
/// 8 KiB, are staged in workgroup memory. Dispatches whose lists are all this short use it.
const TOP_K_SHORT_LEN: usize = 2048;
/// Output tile edge of `block_sparse_index_scores` (`SCORE_TILE` in WGSL).
const BLOCK_SPARSE_SCORE_TILE: usize = 64;
/// Channels `block_sparse_index_scores` stages per step (`SCORE_K`): every head dim is a
/// multiple of it.
const BLOCK_SPARSE_SCORE_K: usize = 16;
const _: () = assert!(HEAD_DIMS[0] % BLOCK_SPARSE_SCORE_K == 0);
const _: () = assert!(HEAD_DIMS[1] % BLOCK_SPARSE_SCORE_K == 0);

use Slot::{Read, ReadWrite, Uniform};

/// An attention family: its WGSL files concatenated in order (for the cooperative-matrix
/// kernels the core leads, as its `enable` directives must open the module).
macro_rules! attention_family {
    ($stem:literal, [$($file:literal),+], $slots:expr) => {
        attention_family!($stem, [$($file),+], $slots, false)
    };
    ($stem:literal, [$($file:literal),+], $slots:expr, $trusted:expr) => {
        Family {
            stem: $stem,
            source: concat!($(include_str!(concat!("../../shaders/", $file))),+),
            slots: $slots,
            trusted: $trusted,
        }
    };
}

/// Bindings of the attention kernels: params, q, k, v, out (then the kind's own buffers).
const DENSE_SLOTS: &[Slot] = &[Uniform, Read, Read, Read, ReadWrite];
/// ... plus the A-shape windows.
const A_SHAPE_SLOTS: &[Slot] = &[Uniform, Read, Read, Read, ReadWrite, Read];
/// ... plus the index: block_count, block_offset, column_count, column_index.
const SPARSE_SLOTS: &[Slot] = &[Uniform, Read, Read, Read, ReadWrite, Read, Read, Read, Read];

const DENSE_ATTENTION: Family = attention_family!(
    "dense_attention",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_core.wgsl",
        "dense_attention.wgsl"
    ],
    DENSE_SLOTS
);

const A_SHAPE_ATTENTION: Family = attention_family!(
    "a_shape_attention",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_core.wgsl",
        "a_shape_attention.wgsl"
    ],
    A_SHAPE_SLOTS
);

const SPARSE_ATTENTION: Family = attention_family!(
    "sparse_attention",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_core.wgsl",
        "sparse_index.wgsl",
        "sparse_attention.wgsl"
    ],
    SPARSE_SLOTS
);

const DENSE_ATTENTION_TILED: Family = attention_family!(
    "dense_attention_tiled",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_tiled_core.wgsl",
        "dense_attention_tiled.wgsl"
    ],
    DENSE_SLOTS
);

const A_SHAPE_ATTENTION_TILED: Family = attention_family!(
    "a_shape_attention_tiled",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_tiled_core.wgsl",
        "a_shape_attention_tiled.wgsl"
    ],
    A_SHAPE_SLOTS
);

const SPARSE_ATTENTION_TILED: Family = attention_family!(
    "sparse_attention_tiled",
    [
        "common.wgsl",
        "attention_common.wgsl",
        "attention_tiled_core.wgsl",
        "sparse_index.wgsl",
        "sparse_attention_tiled.wgsl"
    ],
    SPARSE_SLOTS
);

/// Invocations per workgroup of the tiled attention kernels (`THREADS` in
/// `attention_tiled_core.wgsl`): a 16 x 16 grid of 4 x 4 score micro-tiles.
const TILED_THREADS: u32 = 256;
/// Workgroup memory of the tiled attention kernels: `stage` (16 KiB) + `p_tile` (16 KiB).
const TILED_WORKGROUP_BYTES: u32 = 32768;

/// Offsets per workgroup of `vertical_slash_estimate_slash` (`SLASH_THREADS` in WGSL).
const VERTICAL_SLASH_SLASH_THREADS: usize = 256;

const VERTICAL_SLASH_ESTIMATE: Family = Family {
    stem: "vertical_slash_estimate",
    source: concat!(
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/vertical_slash_estimate.wgsl")
    ),
    slots: &[
        Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
    ],
    trusted: false,
};

const BLOCK_SPARSE_INDEX: Family = Family {
    stem: "block_sparse_index",
    source: concat!(
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/block_sparse_index.wgsl")
    ),
    slots: &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite],
    trusted: false,
};

const TOP_K_SELECT: Family = Family {
    stem: "top_k_select",
    source: include_str!("../../shaders/top_k_select.wgsl"),
    slots: &[Uniform, Read, Read, ReadWrite],
    trusted: false,
};

/// Row blocks per workgroup of `vertical_slash_index` (`ROWS` in WGSL).
const CONVERT_ROWS: usize = 32;
/// Workgroups of `vertical_slash_index_fill` (`FILL_GROUPS` in WGSL: its stride).
const CONVERT_FILL_GROUPS: u32 = 1024;

const VERTICAL_SLASH_INDEX: Family = Family {
    stem: "vertical_slash_index",
    source: include_str!("../../shaders/vertical_slash_index.wgsl"),
    slots: &[
        Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
    ],
    trusted: false,
};

/// Workgroup memory of the cooperative-matrix kernels at `MAX_HEAD_DIM` with `block_n`-key
/// tiles (mirrors the arrays of `attention_coop.wgsl`, rows padded): kv_tile block_n x
/// (128 + 8) f16, s_tile 64 x (block_n + 4) f32, p_tile 64 x (block_n + 8) f16, tile_keys
/// 2 x block_n i32, row_stat 2 x 64 f32, rescale_flag 2 u32 (45,064 bytes at 64 keys, 23,816
/// at 32).
#[doc(hidden)]
pub const fn coop_workgroup_bytes(block_n: u32) -> u32 {
    coop_workgroup_bytes_with(block_n, 64, false)
}

/// [`coop_workgroup_bytes`] with `block_m` query rows and, with `split`, K and V in their own
/// halves of kv_tile (the split dense kernel: 47,368 bytes at 32 keys and 128 rows).
#[doc(hidden)]
pub const fn coop_workgroup_bytes_with(block_n: u32, block_m: u32, split: bool) -> u32 {
    let kv_rows = if split { 2 * block_n } else { block_n };
    kv_rows * 136 * 2
        + block_m * (block_n + 4) * 4
        + block_m * (block_n + 8) * 2
        + 2 * block_n * 4
        + 2 * block_m * 4
        + 2 * 4
}

/// Query rows, invocations and workgroup memory of the split dense kernel
/// ([`COOP_SPLIT_CONSTANTS`]).
const COOP_SPLIT_ROWS: usize = 128;
const COOP_SPLIT_THREADS: u32 = 512;
#[doc(hidden)]
pub const COOP_SPLIT_BYTES: u32 = coop_workgroup_bytes_with(32, 128, true);

/// Pipeline constants of the split dense kernel (`visit_range_split` in
/// `attention_coop.wgsl`): 128 query rows and 16 subgroups per workgroup (the narrow mapping's
/// 16-row bands, eight of them), K and V of a 32-key tile in their own halves of kv_tile, so a
/// tile takes two barriers instead of four and each K/V tile serves 128 rows. One workgroup
/// (16 warps) per SM, 120 registers; 5-6% faster than the 64-row four-barrier kernel (two
/// workgroups per SM) on the H200 (docs/coop.md). HEAD_DIM = 128 only (one 16-byte chunk per
/// invocation per K or V tile).
#[doc(hidden)]
pub const COOP_SPLIT_CONSTANTS: &[(&str, u32)] = &[
    ("HEAD_DIM", 128),
    ("BLOCK_N", 32),
    ("BLOCK_M", COOP_SPLIT_ROWS as u32),
    ("WORKGROUP_SIZE", COOP_SPLIT_THREADS),
    ("SPLIT_KV", 1),
];
/// The tile widths the cooperative-matrix kernels run (`BLOCK_N`, see [`coop_constants`]): 32
/// (the narrow mapping, the default) and 64 (the wide one).
pub const COOP_BLOCK_NS: [u32; 2] = [32, 64];
/// The environment variable that picks the cooperative-matrix kernels' tile width (one of
/// [`COOP_BLOCK_NS`]; default [`COOP_BLOCK_N`]).
pub const COOP_BLOCK_N_ENV: &str = "MINFERENCE_WGPU_COOP_BLOCK_N";
/// Invocations per workgroup of the cooperative-matrix kernels: 8 subgroups of 32 in both
/// mappings ([`coop_constants`]).
const COOP_THREADS: u32 = 256;
/// Keys per tile of the cooperative-matrix kernels by default (`BLOCK_N` in
/// `attention_coop.wgsl`; [`COOP_BLOCK_N_ENV`] picks another of [`COOP_BLOCK_NS`]).
#[doc(hidden)]
pub const COOP_BLOCK_N: u32 = 32;
// The matrix steps of `attention_coop.wgsl` index workgroup memory for 32- and 64-key tiles
// only, and run without wgpu's runtime checks (`Family::trusted`).
const _: () = assert!(COOP_BLOCK_N == COOP_BLOCK_NS[0]);

/// Pipeline constants of the cooperative-matrix kernels for head dim `d` and `block_n` keys
/// per tile: the tile sizes become compile-time constants of the driver's code (strides,
/// loop bounds, how many O accumulators each subgroup holds).
/// - BLOCK_N = 32 (the default, the narrow mapping): each subgroup holds 16 rows x 16 keys
///   of S and 16 rows x D/2 of O; 120 registers per invocation and 23,816 bytes of
///   workgroup memory, so two workgroups (16 warps) share an H100/H200 SM, whose Vulkan
///   driver keeps only one workgroup of more than about 24 KiB per SM
///   (`tests/wgpu_residency.rs`); 4 barriers per 32 keys. (Dense attention at D = 128 runs
///   the split kernel instead where it fits: [`COOP_SPLIT_CONSTANTS`].)
/// - BLOCK_N = 64 (the wide mapping): each subgroup holds 32 rows x 16 keys of S and 32 rows
///   x D/4 of O (every K, P and V fragment feeds two products), 4 barriers per 64 keys, but
///   177 registers and 45,064 bytes: one workgroup (8 warps) per SM. 8-18% slower than the
///   narrow mapping on the H200 (docs/coop.md).
/// - HEAD_DIM = d: 64 or 128 (`HEAD_DIMS`).
///
/// Anything but 64 for `block_n` gives 32.
#[doc(hidden)]
pub fn coop_constants(d: usize, block_n: u32) -> &'static [(&'static str, u32)] {
    match (d <= 64, block_n == 64) {
        (true, true) => &[("HEAD_DIM", 64), ("BLOCK_N", 64)],
        (true, false) => &[("HEAD_DIM", 64), ("BLOCK_N", 32)],
        (false, true) => &[("HEAD_DIM", 128), ("BLOCK_N", 64)],
        (false, false) => &[("HEAD_DIM", 128), ("BLOCK_N", 32)],
    }
}

/// The cooperative-matrix kernels (f16 storage only): the core comes first, it carries the
/// module's `enable` directives and its own f16 views of q, k, v (so no common.wgsl).
const DENSE_ATTENTION_COOP: Family = attention_family!(
    "dense_attention_coop",
    [
        "attention_coop.wgsl",
        "attention_common.wgsl",
        "dense_attention_coop.wgsl"
    ],
    DENSE_SLOTS,
    true
);

const A_SHAPE_ATTENTION_COOP: Family = attention_family!(
    "a_shape_attention_coop",
    [
        "attention_coop.wgsl",
        "attention_common.wgsl",
        "a_shape_attention_coop.wgsl"
    ],
    A_SHAPE_SLOTS,
    true
);

const SPARSE_ATTENTION_COOP: Family = attention_family!(
    "sparse_attention_coop",
    [
        "attention_coop.wgsl",
        "attention_common.wgsl",
        "sparse_index.wgsl",
        "sparse_attention_coop.wgsl"
    ],
    SPARSE_SLOTS,
    true
);

/// The WGSL sources of the cooperative-matrix families, by stem (for offline validation).
#[doc(hidden)]
pub const COOP_SOURCES: [(&str, &str); 3] = [
    (DENSE_ATTENTION_COOP.stem, DENSE_ATTENTION_COOP.source),
    (A_SHAPE_ATTENTION_COOP.stem, A_SHAPE_ATTENTION_COOP.source),
    (SPARSE_ATTENTION_COOP.stem, SPARSE_ATTENTION_COOP.source),
];

/// The three attention kernels (each has a family per [`Variant`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum AttentionKind {
    Dense,
    AShape,
    Sparse,
}

/// Mirrors `AttentionParams` in `attention_core.wgsl` (shared by the three attention
/// kernels: their inputs differ only in buffers, not in scalars).
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct AttentionParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    nnz_s: u32,
    nnz_v: u32,
    scale_log2: f32,
}

/// Mirrors `VerticalSlashEstimateParams` in `vertical_slash_estimate.wgsl`.
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct VerticalSlashEstimateParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    last_q: u32,
    scale_log2: f32,
    /// Key tiles of `BLOCK_N` = 64 keys: `cdiv(N, 64)`.
    tiles: u32,
}

/// Mirrors `BlockSparseIndexParams` in `block_sparse_index.wgsl`.
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct BlockSparseIndexParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    rows: u32,
    _pad: [u32; 2],
}

/// Mirrors `TopKSelectParams` in `top_k_select.wgsl`.
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct TopKSelectParams {
    list_count: u32,
    grid_x: u32,
    _pad: [u32; 2],
}

/// Mirrors `TopKList` in `top_k_select.wgsl`: one selection problem.
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct TopKList {
    scores_at: u32,
    len: u32,
    k: u32,
    out_at: u32,
    width: u32,
    append: i32,
    _pad: [u32; 2],
}

/// Mirrors `VerticalSlashIndexParams` in `vertical_slash_index.wgsl`.
#[repr(C)]
#[derive(Copy, Clone, Pod, Zeroable)]
struct VerticalSlashIndexParams {
    q_heads: u32,
    rows: u32,
    nv: u32,
    ns: u32,
    top_k: u32,
    nnz_s: u32,
    nnz_v: u32,
    slash_at: u32,
    block_at: u32,
    heads: u32,
    _pad: [u32; 2],
}

/// A tensor on the device: f32 words, or f16 pairs packed in u32 words.
struct WgpuTensor {
    buffer: wgpu::Buffer,
    /// True when elements are stored as f16 (else f32, also for bf16 tensors).
    f16: bool,
}

/// A layer's index on the device.
struct WgpuIndex {
    /// `[B, Hq, nv]` ++ `[B, Hq, ns]` ++ `[B, Hq, R, top_k]`: the raw selections, i32.
    selections: wgpu::Buffer,
    /// `[B, Hq, R]`
    block_count: wgpu::Buffer,
    /// `[B, Hq, R, NNZ_S]`
    block_offset: wgpu::Buffer,
    /// `[B, Hq, R]`
    column_count: wgpu::Buffer,
    /// `[B, Hq, R, NNZ_V]`
    column_index: wgpu::Buffer,
    /// Where the buffers go when the index is dropped (built indexes: the next
    /// `build_index` of the same sizes takes them instead of allocating; uploaded ones: none).
    pool: Option<BufferPool>,
}

impl Drop for WgpuIndex {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            give_back(
                pool,
                [
                    self.selections.clone(),
                    self.block_count.clone(),
                    self.block_offset.clone(),
                    self.column_count.clone(),
                    self.column_index.clone(),
                ],
            );
        }
    }
}

/// Element counts of the three selection arrays inside `WgpuIndex::selections`.
fn selection_lens(m: &IndexMeta) -> (usize, usize, usize) {
    let bh = m.heads_total();
    (bh * m.nv, bh * m.ns, bh * m.rows * m.top_k)
}

/// The dispatches of `build_index`: recorded into one encoder and submitted once, or, when
/// timing ([`WgpuBackend::index_stage_times`]), submitted one by one, each waited for and
/// timed on the host.
struct Stages<'a> {
    ctx: &'a Context,
    encoder: wgpu::CommandEncoder,
    times: Option<(&'a mut Vec<(String, f64)>, std::time::Instant)>,
}

impl<'a> Stages<'a> {
    fn new(ctx: &'a Context, times: Option<&'a mut Vec<(String, f64)>>) -> Result<Self> {
        let times = match times {
            Some(t) => {
                ctx.wait()?; // earlier work (uploads) is not this index's
                Some((t, std::time::Instant::now()))
            }
            None => None,
        };
        Ok(Self {
            ctx,
            encoder: ctx.encoder("build_index"),
            times,
        })
    }

    fn dispatch(
        &mut self,
        kernel: &Kernel,
        buffers: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) -> Result<()> {
        self.ctx
            .dispatch(&mut self.encoder, kernel, buffers, grid)?;
        if let Some((times, t0)) = &mut self.times {
            let encoder = std::mem::replace(&mut self.encoder, self.ctx.encoder("build_index"));
            self.ctx.submit("build_index", encoder)?;
            self.ctx.wait()?;
            let now = std::time::Instant::now();
            times.push((kernel.name.clone(), (now - *t0).as_secs_f64() * 1e3));
            *t0 = now;
        }
        Ok(())
    }

    /// Zero `buffer` (recorded before the dispatches that follow).
    fn clear(&mut self, buffer: &wgpu::Buffer) {
        self.encoder.clear_buffer(buffer, 0, None);
    }

    fn finish(self) -> Result<()> {
        self.ctx.submit("build_index", self.encoder)
    }
}

fn u32_of(what: &str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| invalid(what, format!("{x} does not fit in u32")))
}

/// Which attention kernels (dense, A-shape, sparse) the backend runs. The index kernels are
/// the same for every variant.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// One query row per invocation, K and V read straight from storage, no workgroup memory:
    /// the slowest and the most forgiving (runs on any adapter, lavapipe included).
    Rowwise,
    /// K/V tiles in workgroup memory and register-blocked scores; needs no optional feature.
    Tiled,
    /// Q.K^T and P.V on cooperative matrices (wgpu's experimental feature), where the adapter
    /// reports 16x16x16 f16 inputs with f32 accumulation.
    CoopMatrix,
}

impl Variant {
    /// Every variant, slowest first.
    pub const ALL: [Variant; 3] = [Variant::Rowwise, Variant::Tiled, Variant::CoopMatrix];

    /// The name used by `MINFERENCE_WGPU_VARIANT` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Rowwise => "rowwise",
            Variant::Tiled => "tiled",
            Variant::CoopMatrix => "coop",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                invalid(
                    "variant",
                    format!("`{s}` is not one of rowwise, tiled, coop"),
                )
            })
    }
}

/// The environment variable that forces a variant in [`WgpuBackend::new`].
pub const VARIANT_ENV: &str = "MINFERENCE_WGPU_VARIANT";

/// The wgpu backend.
pub struct WgpuBackend {
    ctx: Context,
    variant: Variant,
    /// Keys per tile of the cooperative-matrix kernels (one of [`COOP_BLOCK_NS`]).
    coop_block_n: u32,
    /// Whether f16 dense attention at D = 128 runs the split kernel ([`COOP_SPLIT_CONSTANTS`]):
    /// the coop variant with 32-key tiles, on an adapter that fits its workgroup.
    coop_split: bool,
}

/// The tile width named by [`COOP_BLOCK_N_ENV`], or [`COOP_BLOCK_N`] when it is unset or
/// empty.
fn coop_block_n_from_env() -> Result<u32> {
    match std::env::var(COOP_BLOCK_N_ENV) {
        Ok(s) if !s.is_empty() => parse_coop_block_n(&s),
        _ => Ok(COOP_BLOCK_N),
    }
}

/// A tile width as [`COOP_BLOCK_N_ENV`] gives it: one of [`COOP_BLOCK_NS`], else an error
/// naming the variable and the value.
fn parse_coop_block_n(s: &str) -> Result<u32> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| COOP_BLOCK_NS.contains(n))
        .ok_or_else(|| {
            invalid(
                COOP_BLOCK_N_ENV,
                format!("`{s}` is not one of {COOP_BLOCK_NS:?}"),
            )
        })
}

impl WgpuBackend {
    /// Open the first wgpu adapter with the fastest variant it runs: `coop` where the adapter
    /// reports 16x16x16 f16 -> f32 cooperative matrices (its experimental features are then
    /// requested; f32 tensors still take the portable kernels), else `tiled`, else `rowwise`;
    /// or the variant named by `MINFERENCE_WGPU_VARIANT` (`rowwise`, `tiled`, `coop`).
    /// [`crate::Error::Unavailable`] when there is no adapter; [`crate::Error::Unsupported`]
    /// when the named variant does not run on it.
    pub fn new() -> Result<Self> {
        match std::env::var(VARIANT_ENV) {
            Ok(s) if !s.is_empty() => {
                let v = s.parse::<Variant>().map_err(|_| {
                    invalid(
                        VARIANT_ENV,
                        format!("`{s}` is not one of rowwise, tiled, coop"),
                    )
                })?;
                Self::with_variant(v)
            }
            _ => {
                let coop_block_n = coop_block_n_from_env()?;
                let mut b = Self {
                    ctx: Context::open(true)?,
                    variant: Variant::Rowwise,
                    coop_block_n,
                    coop_split: false,
                };
                b.variant = if Self::unsupported_reason(&b.ctx, Variant::CoopMatrix, coop_block_n)
                    .is_none()
                {
                    Variant::CoopMatrix
                } else {
                    b.portable_variant()
                };
                b.coop_split = b.split_fits();
                Ok(b)
            }
        }
    }

    /// Open the first wgpu adapter with `variant`; [`crate::Error::Unsupported`] when the
    /// adapter cannot run it (the message says why).
    pub fn with_variant(variant: Variant) -> Result<Self> {
        let coop_block_n = coop_block_n_from_env()?;
        let ctx = Context::open(variant == Variant::CoopMatrix)?;
        if let Some(why) = Self::unsupported_reason(&ctx, variant, coop_block_n) {
            return Err(crate::Error::Unsupported {
                backend: NAME,
                what: format!(
                    "variant `{variant}` on adapter `{}`: {why}",
                    ctx.adapter_info.name
                ),
            });
        }
        let mut b = Self {
            ctx,
            variant,
            coop_block_n,
            coop_split: false,
        };
        b.coop_split = b.split_fits();
        Ok(b)
    }

    /// Whether the split dense kernel runs here: the coop variant with 32-key tiles, and
    /// limits that fit its 512 invocations and workgroup memory.
    fn split_fits(&self) -> bool {
        let l = &self.ctx.limits;
        self.variant == Variant::CoopMatrix
            && self.coop_block_n == 32
            && l.max_compute_invocations_per_workgroup >= COOP_SPLIT_THREADS
            && l.max_compute_workgroup_size_x >= COOP_SPLIT_THREADS
            && l.max_compute_workgroup_storage_size >= COOP_SPLIT_BYTES
    }

    /// The variant this backend runs.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The fastest portable variant (no optional feature) this adapter runs: tiled, else
    /// rowwise.
    fn portable_variant(&self) -> Variant {
        if Self::unsupported_reason(&self.ctx, Variant::Tiled, self.coop_block_n).is_none() {
            Variant::Tiled
        } else {
            Variant::Rowwise
        }
    }

    /// lavapipe (llvmpipe) ends every loop of an invocation, silently, once the invocation
    /// has taken this many loop iterations in all (a guard against endless loops): rows
    /// whose key loops need more are simply never written. Seen with the rowwise kernels at
    /// D = 128 from about 920 keys per row on.
    const LLVMPIPE_LOOP_LIMIT: usize = 65535;

    /// On llvmpipe, an error instead of a silently incomplete output when a kernel's loop
    /// iterations per invocation, for up to `max_keys` keys per row, may pass the limit.
    /// Per key, the rowwise kernels take D / 4 iterations for Q.K, D / 4 for P.V and a few
    /// more (measured: rows with 921 keys at D = 128 were dropped: 71 per key); the tiled
    /// and cooperative kernels take about 85 per 64-key tile at D = 128 (96 used here).
    fn check_loop_budget(
        &self,
        variant: Variant,
        family: &Family,
        head_dim: usize,
        max_keys: usize,
    ) -> Result<()> {
        if !self.is_llvmpipe() {
            return Ok(());
        }
        let need = if variant == Variant::Rowwise {
            max_keys.saturating_mul(head_dim / 2 + 8) + BLOCK
        } else {
            (max_keys.div_ceil(BLOCK) + 2).saturating_mul(96) + BLOCK
        };
        if need > Self::LLVMPIPE_LOOP_LIMIT {
            return Err(crate::Error::Unsupported {
                backend: NAME,
                what: format!(
                    "`{}` with up to {max_keys} keys per query row at D = {head_dim} on llvmpipe \
                     (lavapipe): about {need} loop iterations per invocation, over llvmpipe's \
                     limit of {} (it would leave rows unwritten); use fewer keys, the tiled \
                     variant, or a GPU",
                    family.stem,
                    Self::LLVMPIPE_LOOP_LIMIT
                ),
            });
        }
        Ok(())
    }

    fn is_llvmpipe(&self) -> bool {
        let a = &self.ctx.adapter_info;
        a.driver.contains("llvmpipe") || a.name.contains("llvmpipe")
    }

    /// On llvmpipe, an error instead of a silently incomplete index when an index kernel's
    /// loop iterations per invocation may pass the limit. llvmpipe also counts one iteration
    /// of every loop nested in an untaken branch of a loop, so the kernels keep their long
    /// loops flat; the bounds below follow their loops:
    /// - `vertical_slash_index`: the walk, one offset (<= ns) or one column step (<= nv,
    ///   plus one per closed range: <= nnz_s) per iteration; the staging of the offsets
    ///   (ns / 32) and of the columns (nv / 32); two binary searches; the block-sparse
    ///   rows (top_k); `vertical_slash_index_fill`: its grid-stride loop;
    /// - `top_k_select`: 4 radix passes of len / 1024 steps plus a 256-bin scan, the
    ///   compaction's len / 2048 steps of 8 + 8 keys plus a scan, the padding (width / 256);
    ///   `top_k_select_short` (len <= 2048): the staging (len / 64), 4 passes of len / 64
    ///   keys and 4 bins plus a 64-entry scan, one compaction step of 2 x len / 64 keys,
    ///   the padding (width / 64): at most a few hundred;
    /// - `vertical_slash_estimate`: fixed per tile, but the combine folds cdiv(N, 64) / 64
    ///   tiles per invocation.
    ///
    /// Measured on lavapipe (LLVM 15, 256 bits) with budgets of N: N = 30000 (bound 62.5k)
    /// converts completely, N = 45000 (bound 93.6k) did not.
    fn check_index_loop_budget(&self, meta: &IndexMeta) -> Result<()> {
        if !self.is_llvmpipe() {
            return Ok(());
        }
        let (n, ns, nv) = (meta.shape.seq_len, meta.ns, meta.nv);
        let scan = 8 + 2;
        let fill = (meta.heads_total() * meta.rows * meta.nnz_s.max(meta.nnz_v))
            / (CONVERT_FILL_GROUPS as usize * 256)
            + 2;
        let convert = ns + ns / 32 + nv + nv / 32 + meta.nnz_s + meta.top_k + 128;
        let top_k = 4 * (n / 1024 + 1 + scan) + (n / 2048 + 1) * (16 + scan) + n / 256 + 16;
        let estimate = n.div_ceil(BLOCK) / 64 + 256;
        let (need, kernel) = [
            (convert.max(fill), VERTICAL_SLASH_INDEX.stem),
            (top_k, TOP_K_SELECT.stem),
            (estimate, VERTICAL_SLASH_ESTIMATE.stem),
        ]
        .into_iter()
        .max_by_key(|&(need, _)| need)
        .unwrap_or((0, ""));
        if need > Self::LLVMPIPE_LOOP_LIMIT {
            return Err(crate::Error::Unsupported {
                backend: NAME,
                what: format!(
                    "the index at N = {n} (nv {nv}, ns {ns}) on llvmpipe (lavapipe): `{kernel}` \
                     takes about {need} loop iterations per invocation, over llvmpipe's limit \
                     of {} (it would leave the index incomplete); use smaller budgets or a GPU",
                    Self::LLVMPIPE_LOOP_LIMIT
                ),
            });
        }
        Ok(())
    }

    /// How many buffers of dropped indexes this backend keeps for reuse (for tests).
    #[doc(hidden)]
    pub fn pooled_buffers(&self) -> usize {
        self.ctx.pooled()
    }

    /// The variants this backend's device can run, slowest first (`coop` only on a backend
    /// opened with [`Self::with_variant`]`(Variant::CoopMatrix)`: the others open the device
    /// without the experimental features).
    pub fn available_variants(&self) -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|v| Self::unsupported_reason(&self.ctx, *v, self.coop_block_n).is_none())
            .collect()
    }

    /// Why `ctx`'s adapter cannot run `variant`, or `None` when it can.
    /// (`coop_block_n`: the cooperative-matrix kernels' tile width.)
    fn unsupported_reason(ctx: &Context, variant: Variant, coop_block_n: u32) -> Option<String> {
        match variant {
            Variant::Rowwise => None,
            Variant::Tiled => {
                let l = &ctx.limits;
                if l.max_compute_workgroup_storage_size < TILED_WORKGROUP_BYTES {
                    Some(format!(
                        "the tiled kernels need {TILED_WORKGROUP_BYTES} bytes of workgroup memory, \
                         max_compute_workgroup_storage_size is {}",
                        l.max_compute_workgroup_storage_size
                    ))
                } else if l.max_compute_invocations_per_workgroup < TILED_THREADS
                    || l.max_compute_workgroup_size_x < TILED_THREADS
                {
                    Some(format!(
                        "the tiled kernels need {TILED_THREADS} invocations per workgroup, \
                         max_compute_invocations_per_workgroup is {} and \
                         max_compute_workgroup_size_x is {}",
                        l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_size_x
                    ))
                } else {
                    None
                }
            }
            Variant::CoopMatrix => {
                if let Err(why) = &ctx.coop {
                    return Some(why.clone());
                }
                let have = ctx.limits.max_compute_workgroup_storage_size;
                let need = coop_workgroup_bytes(coop_block_n);
                if have < need {
                    return Some(format!(
                        "max_compute_workgroup_storage_size is {have} bytes, the cooperative-matrix \
                         kernels with {coop_block_n}-key tiles need {need}"
                    ));
                }
                let a = &ctx.adapter_info;
                if (a.subgroup_min_size, a.subgroup_max_size) != (32, 32) {
                    return Some(format!(
                        "subgroups of {}..{} invocations: the cooperative-matrix kernels give each \
                         of their 8 subgroups of exactly 32 a fixed share of the rows and keys",
                        a.subgroup_min_size, a.subgroup_max_size
                    ));
                }
                let l = &ctx.limits;
                if l.max_compute_invocations_per_workgroup < COOP_THREADS
                    || l.max_compute_workgroup_size_x < COOP_THREADS
                {
                    return Some(format!(
                        "the cooperative-matrix kernels need {COOP_THREADS} invocations per \
                         workgroup"
                    ));
                }
                None
            }
        }
    }

    /// The variant that runs tensors of `f16` storage or not: this backend's, except that the
    /// coop kernels take f16 only (f32 and bf16-as-f32 storage run the tiled kernels where the
    /// adapter fits them, else the rowwise ones, as f16 tiles would lose their precision and
    /// range).
    fn effective_variant(&self, f16: bool) -> Variant {
        match self.variant {
            Variant::CoopMatrix if !f16 => self.portable_variant(),
            v => v,
        }
    }

    /// The family of attention kernel `kind` in `variant`.
    fn attention_family(kind: AttentionKind, variant: Variant) -> &'static Family {
        match (kind, variant) {
            (AttentionKind::Dense, Variant::CoopMatrix) => &DENSE_ATTENTION_COOP,
            (AttentionKind::AShape, Variant::CoopMatrix) => &A_SHAPE_ATTENTION_COOP,
            (AttentionKind::Sparse, Variant::CoopMatrix) => &SPARSE_ATTENTION_COOP,
            (AttentionKind::Dense, Variant::Tiled) => &DENSE_ATTENTION_TILED,
            (AttentionKind::AShape, Variant::Tiled) => &A_SHAPE_ATTENTION_TILED,
            (AttentionKind::Sparse, Variant::Tiled) => &SPARSE_ATTENTION_TILED,
            (AttentionKind::Dense, _) => &DENSE_ATTENTION,
            (AttentionKind::AShape, _) => &A_SHAPE_ATTENTION,
            (AttentionKind::Sparse, _) => &SPARSE_ATTENTION,
        }
    }

    fn tensor<'a>(&self, t: &'a DeviceTensor, arg: &str) -> Result<&'a WgpuTensor> {
        t.storage::<WgpuTensor>(NAME, arg)
    }

    fn entry(stem: &'static str, f16: bool) -> &'static str {
        // Entry points are `{stem}_{dtype}`; spelled out so they stay &'static str.
        match (stem, f16) {
            ("dense_attention", false) => "dense_attention_f32",
            ("dense_attention", true) => "dense_attention_f16",
            ("a_shape_attention", false) => "a_shape_attention_f32",
            ("a_shape_attention", true) => "a_shape_attention_f16",
            ("sparse_attention", false) => "sparse_attention_f32",
            ("sparse_attention", true) => "sparse_attention_f16",
            ("dense_attention_tiled", false) => "dense_attention_tiled_f32",
            ("dense_attention_tiled", true) => "dense_attention_tiled_f16",
            ("a_shape_attention_tiled", false) => "a_shape_attention_tiled_f32",
            ("a_shape_attention_tiled", true) => "a_shape_attention_tiled_f16",
            ("sparse_attention_tiled", false) => "sparse_attention_tiled_f32",
            ("sparse_attention_tiled", true) => "sparse_attention_tiled_f16",
            ("dense_attention_coop", true) => "dense_attention_coop_f16",
            ("a_shape_attention_coop", true) => "a_shape_attention_coop_f16",
            ("sparse_attention_coop", true) => "sparse_attention_coop_f16",
            ("vertical_slash_estimate_stats", false) => "vertical_slash_estimate_stats_f32",
            ("vertical_slash_estimate_stats", true) => "vertical_slash_estimate_stats_f16",
            ("vertical_slash_estimate_sums", false) => "vertical_slash_estimate_sums_f32",
            ("vertical_slash_estimate_sums", true) => "vertical_slash_estimate_sums_f16",
            ("block_sparse_index_pool", false) => "block_sparse_index_pool_f32",
            ("block_sparse_index_pool", true) => "block_sparse_index_pool_f16",
            _ => stem,
        }
    }

    fn attention_params(shape: &AttnShape, nnz_s: usize, nnz_v: usize) -> Result<AttentionParams> {
        Ok(AttentionParams {
            batch: u32_of("batch", shape.batch)?,
            q_heads: u32_of("q_heads", shape.q_heads)?,
            kv_heads: u32_of("kv_heads", shape.kv_heads)?,
            seq_len: u32_of("seq_len", shape.seq_len)?,
            head_dim: u32_of("head_dim", shape.head_dim)?,
            nnz_s: u32_of("nnz_s", nnz_s)?,
            nnz_v: u32_of("nnz_v", nnz_v)?,
            scale_log2: (shape.scale() * LOG2E) as f32,
        })
    }

    /// Grid of the attention kernels: one workgroup per (row block of `rows` rows (`BLOCK_M`,
    /// or 128 in the split dense kernel), batch * head).
    fn attention_grid(shape: &AttnShape, rows: usize) -> Result<[u32; 3]> {
        Ok([
            u32_of("seq_len", shape.seq_len.div_ceil(rows))?,
            u32_of("batch * q_heads", shape.batch * shape.q_heads)?,
            1,
        ])
    }

    /// Record and submit one attention kernel over q, k, v, out plus `extra` buffers.
    #[allow(clippy::too_many_arguments)]
    /// `max_keys`: an upper bound on the keys any query row visits (for [`Self::check_loop_budget`]).
    #[allow(clippy::too_many_arguments)]
    fn run_attention(
        &self,
        kind: AttentionKind,
        max_keys: usize,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
        params: AttentionParams,
        extra: &[&wgpu::Buffer],
    ) -> Result<()> {
        let shape = check_qkv(&self.info(), q, k, v, Some(out))?;
        let (qt, kt, vt) = (
            self.tensor(q, "q")?,
            self.tensor(k, "k")?,
            self.tensor(v, "v")?,
        );
        let variant = self.effective_variant(qt.f16);
        let family = Self::attention_family(kind, variant);
        self.check_loop_budget(variant, family, shape.head_dim, max_keys)?;
        let ot = out.storage::<WgpuTensor>(NAME, "out")?;
        let split = variant == Variant::CoopMatrix
            && kind == AttentionKind::Dense
            && shape.head_dim == 128
            && self.coop_split;
        let (constants, rows) = if split {
            (COOP_SPLIT_CONSTANTS, COOP_SPLIT_ROWS)
        } else if variant == Variant::CoopMatrix {
            (coop_constants(shape.head_dim, self.coop_block_n), BLOCK_M)
        } else {
            (&[][..], BLOCK_M)
        };
        let kernel = self
            .ctx
            .kernel_with(family, Self::entry(family.stem, qt.f16), constants)?;
        let params = self.ctx.uniform(family.stem, &params);
        let mut buffers = vec![&params, &qt.buffer, &kt.buffer, &vt.buffer, &ot.buffer];
        buffers.extend_from_slice(extra);
        let mut encoder = self.ctx.encoder(family.stem);
        self.ctx.dispatch(
            &mut encoder,
            &kernel,
            &buffers,
            Self::attention_grid(&shape, rows)?,
        )?;
        self.ctx.submit(family.stem, encoder)
    }

    fn i32_bytes(v: &[i32]) -> &[u8] {
        bytemuck::cast_slice(v)
    }

    fn read_i32(&self, what: &str, buf: &wgpu::Buffer, len: usize) -> Result<Vec<i32>> {
        let bytes = self.ctx.read(what, buf, (len * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Run [`Backend::build_index`] with one submission per kernel, each waited for and timed
    /// on the host: `(kernel, milliseconds)` in dispatch order (`top_k_select` or
    /// `top_k_select_short` once for the vertical-slash lists, once for the block-sparse
    /// ones). A stage's time includes the
    /// host work recorded since the previous one (buffer creation, uniform writes) and one
    /// submit-to-completion round trip, so the sum exceeds a plain `build_index`.
    #[doc(hidden)]
    pub fn index_stage_times(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
    ) -> Result<Vec<(String, f64)>> {
        let mut times = Vec::new();
        self.record_index(q, k, patterns, Some(&mut times))?;
        Ok(times)
    }

    /// The index pipeline behind [`Backend::build_index`]; with `times`, every kernel is
    /// submitted alone, waited for and timed (see [`Self::index_stage_times`]).
    fn record_index(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
        times: Option<&mut Vec<(String, f64)>>,
    ) -> Result<DeviceIndex> {
        let shape = check_qkv(&self.info(), q, k, k, None)?;
        let meta = IndexMeta::new(shape, patterns)?;
        self.check_index_loop_budget(&meta)?;
        let (qt, kt) = (self.tensor(q, "q")?, self.tensor(k, "k")?);
        let (n, d, r) = (shape.seq_len, shape.head_dim, meta.rows);
        let bh_total = meta.heads_total();
        let heads_u32 = u32_of("batch * q_heads", bh_total)?;
        let (nv_len, ns_len, bi_len) = selection_lens(&meta);
        let (slash_at, block_at) = (nv_len, nv_len + ns_len);
        let ctx = &self.ctx;

        let head_kind: Vec<u32> = patterns
            .iter()
            .map(|p| match p {
                Pattern::VerticalSlash { .. } => KIND_VERTICAL_SLASH,
                Pattern::BlockSparse { .. } => KIND_BLOCK_SPARSE,
                _ => 0,
            })
            .collect();
        let head_kind = ctx.storage_with("head_kind", bytemuck::cast_slice(&head_kind))?;
        // The outputs: buffers of an earlier, dropped index of the same sizes where the pool
        // has them (allocating hundreds of MiB per call cost about as much as the kernels),
        // else new ones. Not uploaded: top_k_select writes every row of every array it has
        // (a head of another kind gets an empty list there, so its row is all -1). The small
        // arrays are cleared, so a reused buffer holds what a new one would; block_offset and
        // column_index are set whole by the fill kernel.
        let selections =
            ctx.reused_storage("selections", ((nv_len + ns_len + bi_len) * 4) as u64)?;
        let block_count = ctx.reused_storage("block_count", (bh_total * r * 4) as u64)?;
        let block_offset =
            ctx.reused_storage("block_offset", (bh_total * r * meta.nnz_s * 4) as u64)?;
        let column_count = ctx.reused_storage("column_count", (bh_total * r * 4) as u64)?;
        let column_index =
            ctx.reused_storage("column_index", (bh_total * r * meta.nnz_v * 4) as u64)?;

        // The block-sparse intermediates and the list tables are scratch, reused by later
        // calls: this call owns them until its last dispatch is submitted.
        let mut scratch = ctx.scratch();
        let mut stages = Stages::new(ctx, times)?;
        for buf in [&selections, &block_count, &column_count] {
            stages.clear(buf);
        }
        let f16 = qt.f16;
        let any_vs = patterns
            .iter()
            .any(|p| matches!(p, Pattern::VerticalSlash { .. }));
        let any_bs = patterns
            .iter()
            .any(|p| matches!(p, Pattern::BlockSparse { .. }));

        // Vertical-slash: estimate, then radix-select columns and offsets.
        let mut vs_lists = Vec::new();
        let vs_scores = if any_vs {
            let tiles = n.div_ceil(BLOCK);
            let params = VerticalSlashEstimateParams {
                batch: u32_of("batch", shape.batch)?,
                q_heads: u32_of("q_heads", shape.q_heads)?,
                kv_heads: u32_of("kv_heads", shape.kv_heads)?,
                seq_len: u32_of("seq_len", n)?,
                head_dim: u32_of("head_dim", d)?,
                last_q: u32_of("last_q", LAST_Q.min(n))?,
                scale_log2: (shape.scale() * LOG2E) as f32,
                tiles: u32_of("tiles", tiles)?,
            };
            let params = ctx.uniform("vertical_slash_estimate", &params);
            // Scratch, cleared as new buffers are.
            let tile_stats =
                scratch.storage("tile_stats", (bh_total * LAST_Q * tiles * 8) as u64)?;
            let row_stats = scratch.storage("row_stats", (bh_total * LAST_Q * 8) as u64)?;
            let scores = scratch.storage("vertical_slash_scores", (2 * bh_total * n * 4) as u64)?;
            let slash_lower = scratch.storage("slash_lower", (bh_total * n * 4) as u64)?;
            for buf in [&tile_stats, &row_stats, &scores, &slash_lower] {
                stages.clear(buf);
            }
            let bufs = [
                &params,
                &qt.buffer,
                &kt.buffer,
                &kt.buffer,
                &head_kind,
                &tile_stats,
                &row_stats,
                &scores,
                &slash_lower,
            ];
            let tiles_u32 = u32_of("tiles", tiles)?;
            let family = &VERTICAL_SLASH_ESTIMATE;
            let stats = ctx.kernel(family, Self::entry("vertical_slash_estimate_stats", f16))?;
            stages.dispatch(&stats, &bufs, [tiles_u32, heads_u32, 1])?;
            let combine = ctx.kernel(family, "vertical_slash_estimate_combine")?;
            let last_q = u32_of("last_q", LAST_Q.min(n))?;
            stages.dispatch(&combine, &bufs, [last_q, heads_u32, 1])?;
            let sums = ctx.kernel(family, Self::entry("vertical_slash_estimate_sums", f16))?;
            stages.dispatch(&sums, &bufs, [tiles_u32, heads_u32, 1])?;
            let slash = ctx.kernel(family, "vertical_slash_estimate_slash")?;
            let grid_x = u32_of("seq_len", n.div_ceil(VERTICAL_SLASH_SLASH_THREADS))?;
            stages.dispatch(&slash, &bufs, [grid_x, heads_u32, 1])?;
            // Every head's rows: a head of another kind selects nothing (all -1).
            for bh in 0..bh_total {
                let (len, nv, ns) = match patterns[bh % shape.q_heads] {
                    Pattern::VerticalSlash { vertical, slash } => {
                        let (nv, ns) = Pattern::vertical_slash_budgets(vertical, slash, n);
                        (n, nv, ns)
                    }
                    _ => (0, 0, 0),
                };
                vs_lists.push(TopKList {
                    scores_at: u32_of("scores", bh * n)?,
                    len: u32_of("seq_len", len)?,
                    k: u32_of("vertical", nv)?,
                    out_at: u32_of("vertical_index", bh * meta.nv)?,
                    width: u32_of("nv", meta.nv)?,
                    append: -1,
                    _pad: [0; 2],
                });
                vs_lists.push(TopKList {
                    scores_at: u32_of("scores", (bh_total + bh) * n)?,
                    len: u32_of("seq_len", len)?,
                    k: u32_of("slash", ns)?,
                    out_at: u32_of("slash_index", slash_at + bh * meta.ns)?,
                    width: u32_of("ns", meta.ns)?,
                    append: -1,
                    _pad: [0; 2],
                });
            }
            Some(scores)
        } else {
            None
        };

        // Block-sparse: pool, score, then per row block select top_k - 1 and append the diagonal.
        // Scores are packed lower triangles: head bh's row block m at bh R(R-1)/2 + m(m-1)/2.
        let triangle = |m: usize| m * m.saturating_sub(1) / 2;
        let mut bs_lists = Vec::new();
        let bs_scores = if any_bs {
            let params = BlockSparseIndexParams {
                batch: u32_of("batch", shape.batch)?,
                q_heads: u32_of("q_heads", shape.q_heads)?,
                kv_heads: u32_of("kv_heads", shape.kv_heads)?,
                seq_len: u32_of("seq_len", n)?,
                head_dim: u32_of("head_dim", d)?,
                rows: u32_of("rows", r)?,
                _pad: [0; 2],
            };
            let params = ctx.uniform("block_sparse_index", &params);
            // Pooled q heads, then pooled kv heads: [B * Hq + B * Hkv, R, D].
            let pooled_heads = bh_total + shape.batch * shape.kv_heads;
            let pooled = scratch.storage("pooled", (pooled_heads * r * d * 4) as u64)?;
            // [B, Hq, R (R - 1) / 2]
            let scores_len = bh_total * triangle(r);
            u32_of("block_scores", scores_len)?;
            let scores = scratch.storage("block_scores", (scores_len * 4) as u64)?;
            let bufs = [
                &params, &qt.buffer, &kt.buffer, &kt.buffer, &head_kind, &pooled, &scores,
            ];
            let pool = ctx.kernel(
                &BLOCK_SPARSE_INDEX,
                Self::entry("block_sparse_index_pool", f16),
            )?;
            let r_u32 = u32_of("rows", r)?;
            let pooled_u32 = u32_of("pooled heads", pooled_heads)?;
            stages.dispatch(&pool, &bufs, [r_u32, pooled_u32, 1])?;
            let sc = ctx.kernel(&BLOCK_SPARSE_INDEX, "block_sparse_index_scores")?;
            let tiles = u32_of("rows", r.div_ceil(BLOCK_SPARSE_SCORE_TILE))?;
            stages.dispatch(&sc, &bufs, [tiles, tiles, heads_u32])?;
            // Every head's rows: a head of another kind selects nothing (all -1).
            for bh in 0..bh_total {
                let top_k = match patterns[bh % shape.q_heads] {
                    Pattern::BlockSparse { top_k } => Some(top_k),
                    _ => None,
                };
                for m in 0..r {
                    let (len, k, append) = match top_k {
                        Some(top_k) => (m, top_k.saturating_sub(1).min(m), m as i32),
                        None => (0, 0, -1),
                    };
                    bs_lists.push(TopKList {
                        scores_at: u32_of("block_scores", bh * triangle(r) + triangle(m))?,
                        len: u32_of("rows", len)?,
                        k: u32_of("top_k", k)?,
                        out_at: u32_of("block_index", block_at + (bh * r + m) * meta.top_k)?,
                        width: u32_of("top_k", meta.top_k)?,
                        append,
                        _pad: [0; 2],
                    });
                }
            }
            Some(scores)
        } else {
            None
        };

        for (lists, scores, label) in [
            (&vs_lists, &vs_scores, "top_k_lists (vertical-slash)"),
            (&bs_lists, &bs_scores, "top_k_lists (block-sparse)"),
        ] {
            let Some(scores) = scores else { continue };
            if lists.is_empty() {
                continue;
            }
            // Lists that fit workgroup memory (all of them) take the staged kernel.
            let longest = lists.iter().map(|l| l.len as usize).max().unwrap_or(0);
            let entry = if longest <= TOP_K_SHORT_LEN {
                "top_k_select_short"
            } else {
                "top_k_select"
            };
            let top_k = ctx.kernel(&TOP_K_SELECT, entry)?;
            let params = TopKSelectParams {
                list_count: u32_of("lists", lists.len())?,
                grid_x: TOP_K_GRID_X as u32,
                _pad: [0; 2],
            };
            let params = ctx.uniform("top_k_select", &params);
            let list_bytes: &[u8] = bytemuck::cast_slice(lists);
            let list_buf = scratch.storage(label, list_bytes.len() as u64)?;
            ctx.queue.write_buffer(&list_buf, 0, list_bytes);
            let grid = [
                u32_of("lists", lists.len().min(TOP_K_GRID_X))?,
                u32_of("lists", lists.len().div_ceil(TOP_K_GRID_X))?,
                1,
            ];
            stages.dispatch(&top_k, &[&params, &list_buf, scores, &selections], grid)?;
        }

        // Conversion to the kernel index, every (batch, head, row block).
        let params = VerticalSlashIndexParams {
            q_heads: u32_of("q_heads", shape.q_heads)?,
            rows: u32_of("rows", r)?,
            nv: u32_of("nv", meta.nv)?,
            ns: u32_of("ns", meta.ns)?,
            top_k: u32_of("top_k", meta.top_k)?,
            nnz_s: u32_of("nnz_s", meta.nnz_s)?,
            nnz_v: u32_of("nnz_v", meta.nnz_v)?,
            slash_at: u32_of("slash_index", slash_at)?,
            block_at: u32_of("block_index", block_at)?,
            heads: heads_u32,
            _pad: [0; 2],
        };
        let params = ctx.uniform("vertical_slash_index", &params);
        let index_bufs = [
            &params,
            &head_kind,
            &selections,
            &block_count,
            &block_offset,
            &column_count,
            &column_index,
        ];
        let fill = ctx.kernel(&VERTICAL_SLASH_INDEX, "vertical_slash_index_fill")?;
        stages.dispatch(&fill, &index_bufs, [CONVERT_FILL_GROUPS, 2, 1])?;
        let convert = ctx.kernel(&VERTICAL_SLASH_INDEX, "vertical_slash_index")?;
        stages.dispatch(
            &convert,
            &index_bufs,
            [u32_of("rows", r.div_ceil(CONVERT_ROWS))?, heads_u32, 1],
        )?;
        stages.finish()?;
        drop(scratch); // every dispatch on it is submitted
        Ok(DeviceIndex::new(
            NAME,
            meta,
            WgpuIndex {
                selections,
                block_count,
                block_offset,
                column_count,
                column_index,
                pool: Some(ctx.pool()),
            },
        ))
    }
}

impl Backend for WgpuBackend {
    fn info(&self) -> BackendInfo {
        let a = &self.ctx.adapter_info;
        BackendInfo {
            name: NAME,
            device: format!("{} ({:?}, {})", a.name, a.backend, a.driver),
            dtypes: vec![DType::F32, DType::F16, DType::BF16],
            head_dims: HEAD_DIMS.to_vec(),
            notes: format!(
                "variant {}: {}; f32 online softmax; f16 stored as packed pairs (no SHADER_F16 \
                 needed); bf16 converted to f32 on upload and rounded to bf16 on download",
                self.variant,
                match self.variant {
                    Variant::Rowwise => "one query row per invocation, K/V from storage".into(),
                    Variant::Tiled => {
                        "K/V tiles in workgroup memory, register-blocked scores".into()
                    }
                    Variant::CoopMatrix => format!(
                        "Q.K^T and P.V on 16x16x16 cooperative matrices (f16 inputs, f32 \
                         accumulation, 64 query rows x {} keys per tile{}, O in registers, lazy \
                         rescaling) for f16 tensors; f32 and bf16 tensors run the {} kernels",
                        self.coop_block_n,
                        if self.coop_split {
                            "; dense at D = 128: 128 rows, K and V apart, two barriers per tile"
                        } else {
                            ""
                        },
                        self.portable_variant()
                    ),
                }
            ),
        }
    }

    fn upload(&self, t: &HostTensor) -> Result<DeviceTensor> {
        let (buffer, f16) = match &t.data {
            TensorData::F32(_) | TensorData::F16(_) => {
                let buf = self.ctx.storage_with("tensor", t.as_bytes())?;
                (buf, t.dtype() == DType::F16)
            }
            TensorData::BF16(_) => {
                let v = t.to_f32();
                (
                    self.ctx
                        .storage_with("tensor (bf16 as f32)", bytemuck::cast_slice(&v))?,
                    false,
                )
            }
        };
        Ok(DeviceTensor::new(
            NAME,
            &t.dims,
            t.dtype(),
            WgpuTensor { buffer, f16 },
        ))
    }

    fn download(&self, t: &DeviceTensor) -> Result<HostTensor> {
        let wt = self.tensor(t, "tensor")?;
        let n: usize = t.dims().iter().product();
        if wt.f16 {
            let bytes = self.ctx.read("download", &wt.buffer, (n * 2) as u64)?;
            let v: Vec<f16> = bytemuck::pod_collect_to_vec(&bytes);
            return Ok(HostTensor {
                dims: t.dims().to_vec(),
                data: TensorData::F16(v),
            });
        }
        let bytes = self.ctx.read("download", &wt.buffer, (n * 4) as u64)?;
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        HostTensor::from_f32(t.dims(), &v, t.dtype())
    }

    fn empty(&self, dims: &[usize], dtype: DType) -> Result<DeviceTensor> {
        let n: usize = dims.iter().product();
        let f16 = dtype == DType::F16;
        let bytes = if f16 { n * 2 } else { n * 4 };
        let buffer = self.ctx.storage("tensor", bytes as u64)?;
        Ok(DeviceTensor::new(
            NAME,
            dims,
            dtype,
            WgpuTensor { buffer, f16 },
        ))
    }

    fn build_index(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
    ) -> Result<DeviceIndex> {
        self.record_index(q, k, patterns, None)
    }

    fn upload_index(&self, index: &HostIndex) -> Result<DeviceIndex> {
        index.validate()?;
        let mut selections = index.vertical_index.clone();
        selections.extend_from_slice(&index.slash_index);
        selections.extend_from_slice(&index.block_index);
        let ctx = &self.ctx;
        Ok(DeviceIndex::new(
            NAME,
            index.meta.clone(),
            WgpuIndex {
                selections: ctx.storage_with("selections", Self::i32_bytes(&selections))?,
                block_count: ctx
                    .storage_with("block_count", Self::i32_bytes(&index.block_count))?,
                block_offset: ctx
                    .storage_with("block_offset", Self::i32_bytes(&index.block_offset))?,
                column_count: ctx
                    .storage_with("column_count", Self::i32_bytes(&index.column_count))?,
                column_index: ctx
                    .storage_with("column_index", Self::i32_bytes(&index.column_index))?,
                pool: None,
            },
        ))
    }

    fn download_index(&self, index: &DeviceIndex) -> Result<HostIndex> {
        let ix = index.storage::<WgpuIndex>(NAME)?;
        let m = index.meta.clone();
        let (nv_len, ns_len, bi_len) = selection_lens(&m);
        let rows = m.heads_total() * m.rows;
        let mut sel = self.read_i32("download_index", &ix.selections, nv_len + ns_len + bi_len)?;
        let block_index = sel.split_off(nv_len + ns_len);
        let slash_index = sel.split_off(nv_len);
        Ok(HostIndex {
            vertical_index: sel,
            slash_index,
            block_index,
            block_count: self.read_i32("download_index", &ix.block_count, rows)?,
            block_offset: self.read_i32("download_index", &ix.block_offset, rows * m.nnz_s)?,
            column_count: self.read_i32("download_index", &ix.column_count, rows)?,
            column_index: self.read_i32("download_index", &ix.column_index, rows * m.nnz_v)?,
            meta: m,
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
        let ix = index.storage::<WgpuIndex>(NAME)?;
        let m = &index.meta;
        let params = Self::attention_params(&shape, m.nnz_s, m.nnz_v)?;
        self.run_attention(
            AttentionKind::Sparse,
            m.nnz_s * BLOCK + m.nnz_v,
            q,
            k,
            v,
            out,
            params,
            &[
                &ix.block_count,
                &ix.block_offset,
                &ix.column_count,
                &ix.column_index,
            ],
        )
    }

    fn dense_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        let shape = check_qkv(&self.info(), q, k, v, Some(out))?;
        let params = Self::attention_params(&shape, 0, 0)?;
        self.run_attention(
            AttentionKind::Dense,
            shape.seq_len,
            q,
            k,
            v,
            out,
            params,
            &[],
        )
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
        // Windows beyond N behave as N: clamp so they fit i32.
        let cap = shape.seq_len + 1;
        let w: Vec<[i32; 2]> = windows
            .iter()
            .map(|w| match *w {
                Some((sink, local)) => [sink.min(cap) as i32, local.min(cap) as i32],
                None => [-1, -1],
            })
            .collect();
        let wbuf = self.ctx.storage_with("windows", bytemuck::cast_slice(&w))?;
        let params = Self::attention_params(&shape, 0, 0)?;
        // Sink keys, then the window's tiles (one extra tile each side for alignment).
        let widest = windows
            .iter()
            .flatten()
            .map(|&(sink, local)| sink.saturating_add(local).saturating_add(2 * BLOCK))
            .max()
            .unwrap_or(0);
        self.run_attention(
            AttentionKind::AShape,
            widest.min(shape.seq_len),
            q,
            k,
            v,
            out,
            params,
            &[&wbuf],
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.ctx.wait()
    }
}

const _: () = assert!(HEAD_DIMS[1] <= MAX_HEAD_DIM);
// The 48 KiB of workgroup memory Vulkan gives on NVIDIA.
const _: () = assert!(coop_workgroup_bytes(64) <= 48 * 1024);
const _: () = assert!(coop_workgroup_bytes(32) <= 24 * 1024);
const _: () = assert!(COOP_SPLIT_BYTES <= 48 * 1024);
// The split walk (`visit_range_split`) moves one 16-byte chunk per invocation per K or V tile
// (PASSES = 1: 512 invocations, 16 chunks per 128-wide row, 32 rows), and the softmax takes
// four invocations per row. The modules run without runtime checks, so these must hold.
const _: () = assert!(COOP_SPLIT_THREADS == 4 * COOP_SPLIT_ROWS as u32);
const _: () = assert!(COOP_SPLIT_THREADS / (128 / 8) == 32);

#[cfg(test)]
mod tests {
    use super::*;

    /// The index constants the host relies on are the WGSL's own: the staged top-k's longest
    /// list, the scores' tile (its grid) and channel step (a divisor of every head dim).
    #[test]
    fn index_constants_match_the_wgsl() {
        let top_k = include_str!("../../shaders/top_k_select.wgsl");
        assert!(top_k.contains("const SHORT_WG: u32 = 64u;"));
        assert!(top_k.contains("const SHORT_ITEMS: u32 = 32u;"));
        assert_eq!(TOP_K_SHORT_LEN, 64 * 32);
        assert!(top_k.contains("@compute @workgroup_size(SHORT_WG)\nfn top_k_select_short("));
        let bs = include_str!("../../shaders/block_sparse_index.wgsl");
        assert!(bs.contains(&format!(
            "const SCORE_TILE: u32 = {BLOCK_SPARSE_SCORE_TILE}u;"
        )));
        assert!(bs.contains(&format!("const SCORE_K: u32 = {BLOCK_SPARSE_SCORE_K}u;")));
    }

    /// The index families need no more workgroup memory than WebGPU's default limit
    /// (16 KiB), so they run on every adapter without a check (all entry points together).
    #[test]
    fn index_families_fit_the_default_workgroup_memory() {
        for family in [
            &VERTICAL_SLASH_ESTIMATE,
            &BLOCK_SPARSE_INDEX,
            &TOP_K_SELECT,
            &VERTICAL_SLASH_INDEX,
        ] {
            let m = naga::front::wgsl::parse_str(family.source)
                .unwrap_or_else(|e| panic!("{}: {}", family.stem, e.emit_to_string(family.source)));
            let bytes: u32 = m
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                .map(|(_, g)| m.types[g.ty].inner.size(m.to_ctx()))
                .sum();
            let default = wgpu::Limits::default().max_compute_workgroup_storage_size;
            assert!(bytes <= default, "{}: {bytes} bytes", family.stem);
        }
    }

    /// `MINFERENCE_WGPU_COOP_BLOCK_N` takes the two tile widths and names itself and the value
    /// in its error otherwise.
    #[test]
    fn coop_block_n_parses_and_names_bad_values() {
        assert_eq!(parse_coop_block_n("32").ok(), Some(32));
        assert_eq!(parse_coop_block_n(" 64 ").ok(), Some(64));
        for bad in ["48", "0", "wide", "-32"] {
            let e = parse_coop_block_n(bad).map(|_| ()).unwrap_err().to_string();
            assert!(
                e.contains(COOP_BLOCK_N_ENV) && e.contains(bad),
                "{bad}: {e}"
            );
        }
        // The figure the docs give for the default width (the bounds are compile-time asserts).
        assert_eq!(coop_workgroup_bytes(COOP_BLOCK_N), 23_816);
        assert_eq!(COOP_SPLIT_BYTES, 47_368);
        // The A-shape and sparse kernels (64-row index blocks, `attention_grid` with BLOCK_M)
        // rely on the core's defaults for what only the split kernel sets.
        for d in HEAD_DIMS {
            for n in COOP_BLOCK_NS {
                for (name, _) in coop_constants(d, n) {
                    assert!(
                        !["BLOCK_M", "WORKGROUP_SIZE", "SPLIT_KV"].contains(name),
                        "coop_constants({d}, {n}) sets {name}"
                    );
                }
            }
        }
        let split = |name: &str| {
            COOP_SPLIT_CONSTANTS
                .iter()
                .find(|(k, _)| *k == name)
                .map(|&(_, v)| v)
        };
        assert_eq!(split("BLOCK_M"), Some(COOP_SPLIT_ROWS as u32));
        assert_eq!(split("WORKGROUP_SIZE"), Some(COOP_SPLIT_THREADS));
        assert_eq!(split("HEAD_DIM"), Some(128));
        assert_eq!(split("BLOCK_N"), Some(32));
    }

    /// The limits `unsupported_reason` checks for the tiled kernels are the WGSL's own.
    #[test]
    fn tiled_limits_match_the_wgsl() {
        let core = include_str!("../../shaders/attention_tiled_core.wgsl");
        assert!(core.contains(&format!("const THREADS: u32 = {TILED_THREADS}u;")));
        // Two workgroup arrays (`stage`, `p_tile`) of STAGE4 vec4<f32>, nothing else.
        assert!(core.contains("const STAGE4: u32 = 1024u;"));
        assert_eq!(core.matches("var<workgroup>").count(), 2);
        assert_eq!(TILED_WORKGROUP_BYTES, 2 * 1024 * 16);
        for family in [
            &DENSE_ATTENTION_TILED,
            &A_SHAPE_ATTENTION_TILED,
            &SPARSE_ATTENTION_TILED,
        ] {
            let size = format!("@workgroup_size({TILED_THREADS})");
            assert_eq!(family.source.matches(&size).count(), 2, "{}", family.stem);
        }
    }
}
