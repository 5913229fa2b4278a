//! Benchmarks: every pattern on every available backend over sequence lengths, timed with
//! the device synchronized before the clock stops, reported in useful FLOPs.
//!
//! This module holds the logic of `minference bench` (and the sizes and helpers of the
//! criterion benches in `benches/attention.rs`):
//!
//! - **useful FLOPs** = `4 * D * (computed (query, key) pairs)`, summed over batch and heads:
//!   two multiply-adds per pair for `q . k` and two for `p * v`. Dense causal attention is
//!   `4 * D * H * N (N + 1) / 2`, about `2 N^2 D H`, so sparse and dense kernels compare in
//!   TFLOP/s on one scale. Pairs come from the index the backend built (for vertical-slash and
//!   block-sparse), from the window (A-shape) or from the causal triangle (dense).
//! - **density** = computed pairs / causal pairs.
//! - **layer time**: [`run_layer_into`] (index building included for index patterns), `warmup`
//!   unrecorded runs (continued until [`MIN_WARMUP`] has passed, see [`time_runs`]), then
//!   `reps` runs each between two [`Backend::synchronize`] calls; median, min, max, p10 and
//!   p90 are reported.
//! - **index share**: median time of [`Backend::build_index`] alone over the median layer time.
//! - **index size**: bytes of the kernel index (`block_count`, `block_offset`, `column_count`,
//!   `column_index`) and of the raw selections, from the [`IndexMeta`] widths (i32 entries).
//! - **peak device memory**: the trait cannot tell it yet, so it is reported as unknown
//!   (`null` in JSON, `n/a` in the table); the q, k, v and output bytes are reported instead.
//!
//! ```
//! use minference::bench::{run_bench, BenchConfig, PatternCase};
//!
//! let cfg = BenchConfig {
//!     backends: Some(vec!["cpu".into()]),
//!     patterns: PatternCase::parse_list("dense,a-shape,vertical-slash,block-sparse")?,
//!     seq_lens: Some(vec![128]),
//!     heads: Some(2),
//!     head_dim: Some(32),
//!     warmup: 0,
//!     reps: 1,
//!     ..BenchConfig::default()
//! };
//! let report = run_bench(&cfg, false)?;
//! assert_eq!(report.rows.len(), 4);
//! println!("{}", report.table());
//! # Ok::<(), minference::Error>(())
//! ```

use crate::backend::{run_layer_into, Backend, BackendInfo};
use crate::error::{invalid, Error, Result};
use crate::generate::{structured_qkv, HeadKind};
use crate::index::HostIndex;
use crate::io::StFile;
use crate::pattern::{Pattern, BLOCK};
use crate::registry::{open_cuda, open_wgpu};
use crate::tensor::{AttnShape, DType, HostTensor};
use crate::CpuBackend;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pattern families, in the order of the table.
pub const FAMILIES: [&str; 4] = ["dense", "a-shape", "vertical-slash", "block-sparse"];

/// Backends in the order they are tried when none is named.
pub const BACKENDS: [&str; 3] = ["cpu", "wgpu", "cuda"];

/// One pattern to time: a family whose budgets scale with `N`, or a fixed spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternCase {
    /// The family (`dense`, `a-shape`, `vertical-slash`, `block-sparse`).
    pub family: &'static str,
    /// A fixed pattern, or `None` for the family's budgets scaled with `N`
    /// (see [`PatternCase::at`]).
    pub fixed: Option<Pattern>,
}

impl PatternCase {
    /// A family with scaled budgets.
    pub fn family(name: &str) -> Result<Self> {
        let family = FAMILIES.iter().find(|f| **f == name).ok_or_else(|| {
            invalid(
                "--patterns",
                format!("`{name}` is not one of {}", FAMILIES.join(", ")),
            )
        })?;
        Ok(Self {
            family,
            fixed: None,
        })
    }

    /// Parse a comma list of families (`dense`, `a-shape` ...) and full specs
    /// (`a-shape:64,1024`); numbers after a spec's colon stay with it, so
    /// `dense,a-shape:64,1024,block-sparse` is three cases.
    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        let mut items: Vec<String> = Vec::new();
        for tok in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match items.last_mut() {
                Some(last) if tok.chars().all(|c| c.is_ascii_digit()) => {
                    last.push(',');
                    last.push_str(tok);
                }
                _ => items.push(tok.to_string()),
            }
        }
        if items.is_empty() {
            return Err(invalid("--patterns", "empty list"));
        }
        items
            .iter()
            .map(|s| {
                if s.contains(':') {
                    let p: Pattern = s.parse()?;
                    Ok(Self {
                        family: p.family(),
                        fixed: Some(p),
                    })
                } else {
                    Self::family(s)
                }
            })
            .collect()
    }

    /// The pattern at sequence length `n`. Scaled budgets keep the density roughly constant
    /// over `N` (as `minference demo` does): A-shape sink 64 and local `N/8`, vertical-slash
    /// `N/32` columns and `N/16` diagonals, block-sparse top-`max(2, R/8)` of `R = N/64` blocks.
    pub fn at(&self, n: usize) -> Pattern {
        if let Some(p) = self.fixed {
            return p;
        }
        match self.family {
            "a-shape" => Pattern::AShape {
                sink: 64,
                local: (n / 8).max(1),
            },
            "vertical-slash" => Pattern::VerticalSlash {
                vertical: (n / 32).max(1),
                slash: (n / 16).max(1),
            },
            "block-sparse" => Pattern::BlockSparse {
                top_k: (n.div_ceil(BLOCK) / 8).max(2),
            },
            _ => Pattern::Dense,
        }
    }

    /// How the case is named in tables, JSON and bench ids: the family, or the fixed spec.
    pub fn label(&self) -> String {
        match self.fixed {
            Some(p) => p.to_string(),
            None => self.family.to_string(),
        }
    }
}

/// Problem sizes for one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Sequence lengths.
    pub seq_lens: Vec<usize>,
    /// Query heads (kv heads = query heads).
    pub heads: usize,
    /// Head dim.
    pub head_dim: usize,
}

/// Whether the backend computes on the host CPU (the float64 backend, or wgpu on Mesa's
/// lavapipe / llvmpipe): such backends get small problems.
pub fn is_host_device(info: &BackendInfo) -> bool {
    let dev = info.device.to_lowercase();
    info.name == "cpu"
        || dev.contains("llvmpipe")
        || dev.contains("lavapipe")
        || dev.contains("swiftshader")
        || dev.contains("cpu")
}

/// Default sizes of `minference bench` per backend: small on host devices (float64 CPU,
/// lavapipe at about 0.2 to 1 GFLOP/s), the shapes of the GPU figures (H=32, D=128)
/// elsewhere.
pub fn default_sizes(info: &BackendInfo) -> Sizes {
    if is_host_device(info) {
        Sizes {
            seq_lens: vec![256, 512, 1024],
            heads: 4,
            head_dim: 64,
        }
    } else {
        Sizes {
            seq_lens: vec![4096, 16384, 65536],
            heads: 32,
            head_dim: 128,
        }
    }
}

/// Sizes of the criterion benches per backend: smaller still on host devices, so that
/// `cargo bench` on a machine without a GPU finishes in a few minutes.
pub fn criterion_sizes(info: &BackendInfo) -> Sizes {
    if is_host_device(info) {
        Sizes {
            seq_lens: vec![256, 512],
            heads: 2,
            head_dim: 64,
        }
    } else {
        Sizes {
            seq_lens: vec![4096, 16384],
            heads: 32,
            head_dim: 128,
        }
    }
}

/// The dtype to time when none is asked for: f16 where the backend has it, else f32.
pub fn default_dtype(info: &BackendInfo) -> DType {
    if info.dtypes.contains(&DType::F16) {
        DType::F16
    } else if info.dtypes.contains(&DType::F32) || info.dtypes.is_empty() {
        DType::F32
    } else {
        info.dtypes[0]
    }
}

/// A backend that could not be opened, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// Backend name.
    pub backend: String,
    /// The error it answered with.
    pub reason: String,
}

/// Opened backends, in the order asked for.
pub type Backends = Vec<Box<dyn Backend>>;

/// Open `names` (default: every backend in [`BACKENDS`]); absent ones are returned as skipped.
/// An error only for an unknown name, or when nothing opens.
pub fn open_backends(names: Option<&[String]>) -> Result<(Backends, Vec<Skipped>)> {
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => BACKENDS.iter().map(|s| s.to_string()).collect(),
    };
    let (mut opened, mut skipped) = (Vec::new(), Vec::new());
    for name in &names {
        let res: Result<Box<dyn Backend>> = match name.as_str() {
            "cpu" => Ok(Box::new(CpuBackend::new())),
            "wgpu" => open_wgpu(),
            "cuda" => open_cuda(),
            other => {
                return Err(invalid(
                    "--backend",
                    format!("`{other}` is not one of {}", BACKENDS.join(", ")),
                ))
            }
        };
        match res {
            Ok(b) => opened.push(b),
            Err(e) => skipped.push(Skipped {
                backend: name.clone(),
                reason: e.to_string(),
            }),
        }
    }
    if opened.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.backend, s.reason))
            .collect();
        return Err(invalid(
            "--backend",
            format!("no backend could be opened ({})", why.join("; ")),
        ));
    }
    Ok((opened, skipped))
}

/// What `minference bench` runs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Backend names; `None`: every available one.
    pub backends: Option<Vec<String>>,
    /// Patterns to time.
    pub patterns: Vec<PatternCase>,
    /// Sequence lengths; `None`: [`default_sizes`] per backend.
    pub seq_lens: Option<Vec<usize>>,
    /// Query heads (= kv heads); `None`: [`default_sizes`].
    pub heads: Option<usize>,
    /// Head dim; `None`: [`default_sizes`].
    pub head_dim: Option<usize>,
    /// Storage dtype; `None`: [`default_dtype`] per backend.
    pub dtype: Option<DType>,
    /// Unrecorded runs before timing (when nonzero, continued until [`MIN_WARMUP`] has
    /// passed).
    pub warmup: usize,
    /// Timed runs.
    pub reps: usize,
    /// Time q, k, v from this safetensors file (as `minference run` reads them) instead of
    /// the structured generator; its shape replaces the sizes.
    pub input: Option<PathBuf>,
    /// Seed of the structured generator.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            backends: None,
            patterns: FAMILIES
                .iter()
                .map(|f| PatternCase {
                    family: f,
                    fixed: None,
                })
                .collect(),
            seq_lens: None,
            heads: None,
            head_dim: None,
            dtype: None,
            warmup: 1,
            reps: 5,
            input: None,
            seed: 2024,
        }
    }
}

/// Summary of repeated timings, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Median.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// 10th percentile (nearest rank).
    pub p10_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    /// Every timed run, in order.
    pub samples_ms: Vec<f64>,
}

impl Stats {
    /// Summarize samples (at least one).
    pub fn new(samples_ms: Vec<f64>) -> Result<Self> {
        if samples_ms.is_empty() {
            return Err(invalid("--reps", "need at least one timed run"));
        }
        let mut s = samples_ms.clone();
        s.sort_by(f64::total_cmp);
        let at = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
        let median = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            0.5 * (s[s.len() / 2 - 1] + s[s.len() / 2])
        };
        Ok(Self {
            median_ms: median,
            min_ms: s[0],
            max_ms: s[s.len() - 1],
            p10_ms: at(0.1),
            p90_ms: at(0.9),
            samples_ms,
        })
    }
}

/// One measured (backend, pattern, sequence length).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Backend name.
    pub backend: String,
    /// Pattern label (family, or fixed spec).
    pub pattern: String,
    /// The pattern actually run at this length.
    pub spec: String,
    /// Storage dtype.
    pub dtype: String,
    /// Batch.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Sequence length.
    pub seq_len: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Computed (query, key) pairs over all batches and heads.
    pub pairs: u64,
    /// Causal pairs (dense).
    pub causal_pairs: u64,
    /// `pairs / causal_pairs`.
    pub density: f64,
    /// `4 * D * pairs`.
    pub useful_flops: f64,
    /// Layer time (index building included).
    pub time: Stats,
    /// Useful TFLOP/s at the median layer time.
    pub tflops: f64,
    /// `build_index` alone, for index patterns.
    pub index_time: Option<Stats>,
    /// Median index time / median layer time.
    pub index_share: Option<f64>,
    /// The same backend's dense median / this median (same length), if dense was timed.
    pub speedup_vs_dense: Option<f64>,
    /// This median / the fastest backend's median for the same pattern and shape.
    pub ratio_to_fastest: Option<f64>,
    /// Bytes of the kernel index (`block_count`, `block_offset`, `column_count`,
    /// `column_index`), 0 without an index.
    pub index_kernel_bytes: u64,
    /// Bytes of the raw selections (`vertical_index`, `slash_index`, `block_index`).
    pub index_selection_bytes: u64,
    /// Bytes of q, k, v and the output.
    pub tensor_bytes: u64,
    /// Peak device memory, where the backend can tell (none can yet).
    pub peak_device_bytes: Option<u64>,
}

/// The machine the benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cpu_threads: usize,
    /// `std::env::consts::OS` / `ARCH`.
    pub os: String,
}

impl Machine {
    /// Read what the host says about itself (Linux `/proc`; `unknown` elsewhere).
    pub fn detect() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let hostname = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let cpu = read("/proc/cpuinfo")
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            hostname,
            cpu,
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// A backend that ran.
#[derive(Clone, Debug, Serialize)]
pub struct BackendEntry {
    /// Backend name.
    pub name: String,
    /// Adapter or GPU name, driver.
    pub device: String,
    /// Kernel variant and other notes.
    pub notes: String,
}

/// Everything `minference bench` measured, and where.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// This crate's version.
    pub crate_version: String,
    /// The compiler that built it.
    pub rustc: String,
    /// The host.
    pub machine: Machine,
    /// Backends that ran.
    pub backends: Vec<BackendEntry>,
    /// Backends that were absent, with the reason.
    pub skipped: Vec<Skipped>,
    /// Where q, k, v came from (`structured seed S` or the input file).
    pub inputs: String,
    /// Unrecorded runs per measurement.
    pub warmup: usize,
    /// Timed runs per measurement.
    pub reps: usize,
    /// One row per backend, pattern and sequence length.
    pub rows: Vec<BenchRow>,
}

/// Least warm-up time before a measurement when warm-up runs are asked for: a GPU that has
/// been idle runs at its idle clocks for a few hundred milliseconds of work (measured on the
/// H200: one 17 ms warm-up run left the next five runs 1.5-2.5x slow).
pub const MIN_WARMUP: Duration = Duration::from_millis(500);
/// Most warm-up runs spent reaching [`MIN_WARMUP`] beyond the `warmup` asked for.
pub const MAX_EXTRA_WARMUP_RUNS: usize = 200;

/// Time `f` `reps` times with the device synchronized around every timed run, after
/// `warmup` unrecorded runs; when `warmup > 0`, warm-up continues until it has taken
/// [`MIN_WARMUP`] (at most [`MAX_EXTRA_WARMUP_RUNS`] more runs), so that a device coming
/// out of idle reaches its clocks before the clock starts.
pub fn time_runs<F>(backend: &dyn Backend, warmup: usize, reps: usize, mut f: F) -> Result<Stats>
where
    F: FnMut() -> Result<()>,
{
    let start = Instant::now();
    for _ in 0..warmup {
        f()?;
    }
    if warmup > 0 {
        backend.synchronize()?;
        for _ in 0..MAX_EXTRA_WARMUP_RUNS {
            if start.elapsed() >= MIN_WARMUP {
                break;
            }
            f()?;
            backend.synchronize()?;
        }
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        backend.synchronize()?;
        let t0 = Instant::now();
        f()?;
        backend.synchronize()?;
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Stats::new(samples)
}

/// Computed (query, key) pairs of an index's heads, from the kernel index: per row block,
/// each chunk contributes its columns `<= i` and `< N` for every row `i`, each single column
/// every row at or after it. Same count as [`HostIndex::pairs`], without listing keys.
pub fn index_pairs(ix: &HostIndex) -> u64 {
    let m = &ix.meta;
    let n = m.shape.seq_len;
    let mut total = 0u64;
    for b in 0..m.shape.batch {
        for h in 0..m.shape.q_heads {
            if !m.patterns[h].uses_index() {
                continue;
            }
            for r in 0..m.rows {
                let at = (b * m.shape.q_heads + h) * m.rows + r;
                let (r0, r1) = (r * BLOCK, ((r + 1) * BLOCK).min(n));
                let bc = ix.block_count[at].max(0) as usize;
                let cc = ix.column_count[at].max(0) as usize;
                for &s in &ix.block_offset[at * m.nnz_s..at * m.nnz_s + bc] {
                    // Row i (< N) sees clamp(i + 1 - s, 0, 64) columns of the chunk.
                    let s = i64::from(s.max(0));
                    total += clamped_sum(r0 as i64 + 1 - s, r1 as i64 - s);
                }
                for &c in &ix.column_index[at * m.nnz_v..at * m.nnz_v + cc] {
                    let c = c.max(0) as usize;
                    total += r1.saturating_sub(c.max(r0)) as u64;
                }
            }
        }
    }
    total
}

/// `sum of clamp(a, 0, BLOCK)` for `a` in `lo..=hi`, in closed form.
fn clamped_sum(lo: i64, hi: i64) -> u64 {
    let b = BLOCK as i64;
    // Sum of clamp(a, 0, b) for all a <= x.
    let upto = |x: i64| -> i64 {
        if x <= 0 {
            0
        } else if x <= b {
            x * (x + 1) / 2
        } else {
            b * (b + 1) / 2 + b * (x - b)
        }
    };
    if hi < lo {
        return 0;
    }
    (upto(hi) - upto(lo - 1)).max(0) as u64
}

/// Pairs of a token-level pattern (dense or A-shape) over all batches and heads: row `i`
/// sees `min(i + 1, sink + local)` keys under A-shape, `i + 1` under dense.
pub fn window_pairs(shape: &AttnShape, p: &Pattern) -> u64 {
    let n = shape.seq_len as u64;
    let per_head = match *p {
        Pattern::AShape { sink, local } => {
            let w = (sink + local) as u64;
            (0..n).map(|i| (i + 1).min(w)).sum::<u64>()
        }
        _ => n * (n + 1) / 2,
    };
    per_head * (shape.batch * shape.q_heads) as u64
}

/// Index bytes (kernel arrays, raw selections) from the widths of `patterns` at `shape`.
pub fn index_bytes(shape: AttnShape, patterns: &[Pattern]) -> Result<(u64, u64)> {
    if !patterns.iter().any(Pattern::uses_index) {
        return Ok((0, 0));
    }
    let m = crate::index::IndexMeta::new(shape, patterns)?;
    let heads = m.heads_total() as u64;
    let r = m.rows as u64;
    let i32b = 4u64;
    let kernel = heads * r * (2 + m.nnz_s as u64 + m.nnz_v as u64) * i32b;
    let selections = heads * (m.nv as u64 + m.ns as u64 + r * m.top_k as u64) * i32b;
    Ok((kernel, selections))
}

/// Run the benchmark; with `progress`, a progress bar on stderr.
pub fn run_bench(cfg: &BenchConfig, progress: bool) -> Result<BenchReport> {
    if cfg.reps == 0 {
        return Err(invalid("--reps", "need at least one timed run"));
    }
    let (backends, mut skipped) = open_backends(cfg.backends.as_deref())?;
    if progress {
        for k in &skipped {
            eprintln!("skipped backend {}: {}", k.backend, k.reason);
        }
        for b in &backends {
            let info = b.info();
            eprintln!("backend {}: {} [{}]", info.name, info.device, info.notes);
        }
    }
    let input = match &cfg.input {
        Some(p) => Some(read_input(p)?),
        None => None,
    };
    // Plan: per backend, its sizes.
    let mut plan = Vec::new();
    for be in &backends {
        let info = be.info();
        let d = default_sizes(&info);
        let dtype = match (cfg.dtype, &input) {
            (Some(t), _) => t,
            (None, Some((q, _, _))) if info.dtypes.contains(&q.dtype()) => q.dtype(),
            _ => default_dtype(&info),
        };
        let shapes: Vec<AttnShape> = match &input {
            Some((q, k, v)) => vec![AttnShape::from_dims(&q.dims, &k.dims, &v.dims)?],
            None => {
                let heads = cfg.heads.unwrap_or(d.heads);
                let head_dim = cfg.head_dim.unwrap_or(d.head_dim);
                cfg.seq_lens
                    .clone()
                    .unwrap_or(d.seq_lens)
                    .into_iter()
                    .map(|n| AttnShape::new(1, heads, heads, n, head_dim))
                    .collect::<Result<_>>()?
            }
        };
        if let Some(e) = shapes
            .iter()
            .find_map(|s| info.check(dtype, s.head_dim).err())
        {
            if progress {
                eprintln!("skipped backend {}: {e}", info.name);
            }
            skipped.push(Skipped {
                backend: info.name.into(),
                reason: e.to_string(),
            });
            continue;
        }
        plan.push((be, info, dtype, shapes));
    }
    if plan.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.backend, s.reason))
            .collect();
        return Err(invalid(
            "--backend",
            format!("no backend can run this benchmark ({})", why.join("; ")),
        ));
    }
    let steps: usize = plan
        .iter()
        .map(|(_, _, _, s)| s.len() * cfg.patterns.len())
        .sum();
    let bar = if progress {
        let b = indicatif::ProgressBar::new(steps as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    for (be, info, dtype, shapes) in &plan {
        for shape in shapes {
            let (q, k, v) = match &input {
                Some((q, k, v)) => (q.cast(*dtype), k.cast(*dtype), v.cast(*dtype)),
                None => {
                    let kinds: Vec<HeadKind> = (0..shape.q_heads)
                        .map(|h| HeadKind::CYCLE[h % HeadKind::CYCLE.len()])
                        .collect();
                    structured_qkv(
                        shape.batch,
                        shape.kv_heads,
                        shape.seq_len,
                        shape.head_dim,
                        &kinds,
                        *dtype,
                        cfg.seed,
                    )?
                }
            };
            let (qd, kd, vd) = (be.upload(&q)?, be.upload(&k)?, be.upload(&v)?);
            let mut out = be.empty(&shape.q_dims(), *dtype)?;
            let tensor_bytes = ((2 * q.len() + k.len() + v.len()) * dtype.size()) as u64;
            for case in &cfg.patterns {
                let p = case.at(shape.seq_len);
                bar.set_message(format!("{} {} N={}", info.name, p, shape.seq_len));
                let pats = vec![p; shape.q_heads];
                let time = time_runs(be.as_ref(), cfg.warmup, cfg.reps, || {
                    run_layer_into(be.as_ref(), &qd, &kd, &vd, &pats, &mut out).map(|_| ())
                })?;
                let (pairs, index_time) = if p.uses_index() {
                    let ix = be.build_index(&qd, &kd, &pats)?;
                    let pairs = index_pairs(&be.download_index(&ix)?);
                    let t = time_runs(be.as_ref(), cfg.warmup, cfg.reps, || {
                        be.build_index(&qd, &kd, &pats).map(|_| ())
                    })?;
                    (pairs, Some(t))
                } else {
                    (window_pairs(shape, &p), None)
                };
                let (index_kernel_bytes, index_selection_bytes) = index_bytes(*shape, &pats)?;
                let useful_flops = 4.0 * shape.head_dim as f64 * pairs as f64;
                let causal = shape.causal_pairs();
                rows.push(BenchRow {
                    backend: info.name.to_string(),
                    pattern: case.label(),
                    spec: p.to_string(),
                    dtype: dtype.to_string(),
                    batch: shape.batch,
                    heads: shape.q_heads,
                    kv_heads: shape.kv_heads,
                    seq_len: shape.seq_len,
                    head_dim: shape.head_dim,
                    pairs,
                    causal_pairs: causal,
                    density: pairs as f64 / causal as f64,
                    useful_flops,
                    tflops: useful_flops / (time.median_ms * 1e-3) / 1e12,
                    index_share: index_time.as_ref().map(|t| t.median_ms / time.median_ms),
                    index_time,
                    time,
                    speedup_vs_dense: None,
                    ratio_to_fastest: None,
                    index_kernel_bytes,
                    index_selection_bytes,
                    tensor_bytes,
                    peak_device_bytes: None,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    fill_ratios(&mut rows);
    Ok(BenchReport {
        crate_version: env!("CARGO_PKG_VERSION").into(),
        rustc: env!("MINFERENCE_RUSTC_VERSION").into(),
        machine: Machine::detect(),
        backends: plan
            .iter()
            .map(|(_, info, _, _)| BackendEntry {
                name: info.name.into(),
                device: info.device.clone(),
                notes: info.notes.clone(),
            })
            .collect(),
        skipped,
        inputs: match &cfg.input {
            Some(p) => format!("file {}", p.display()),
            None => format!(
                "structured generator (a-shape / vertical-slash / block-sparse heads), seed {}",
                cfg.seed
            ),
        },
        warmup: cfg.warmup,
        reps: cfg.reps,
        rows,
    })
}

/// Speed-up over the same backend's dense run, and the ratio to the fastest backend.
fn fill_ratios(rows: &mut [BenchRow]) {
    let same_shape = |a: &BenchRow, b: &BenchRow| {
        (a.batch, a.heads, a.kv_heads, a.seq_len, a.head_dim)
            == (b.batch, b.heads, b.kv_heads, b.seq_len, b.head_dim)
    };
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        r.speedup_vs_dense = snapshot
            .iter()
            .find(|d| {
                d.backend == r.backend
                    && d.spec == "dense"
                    && d.dtype == r.dtype
                    && same_shape(d, r)
            })
            .map(|d| d.time.median_ms / r.time.median_ms);
        let fastest = snapshot
            .iter()
            .filter(|o| o.pattern == r.pattern && same_shape(o, r))
            .map(|o| o.time.median_ms)
            .fold(f64::INFINITY, f64::min);
        r.ratio_to_fastest = Some(r.time.median_ms / fastest);
    }
}

/// q, k, v from a safetensors file, as `minference run` reads them.
fn read_input(path: &Path) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let f = StFile::read(path)?;
    let (q, k, v) = (
        f.float("q")?.clone(),
        f.float("k")?.clone(),
        f.float("v")?.clone(),
    );
    AttnShape::from_dims(&q.dims, &k.dims, &v.dims)?;
    Ok((q, k, v))
}

/// Three significant digits, without exponent for everyday magnitudes.
fn sig(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 1e-4 {
        let decimals = (2.0 - a.log10().floor()) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

/// Bytes in KiB/MiB/GiB.
fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{} GiB", sig(b / (1024.0 * 1024.0 * 1024.0)))
    } else if b >= 1024.0 * 1024.0 {
        format!("{} MiB", sig(b / (1024.0 * 1024.0)))
    } else if b >= 1024.0 {
        format!("{} KiB", sig(b / 1024.0))
    } else {
        format!("{b} B")
    }
}

impl BenchReport {
    /// The results as a Markdown table: per backend, pattern and length the median time
    /// and spread, useful TFLOP/s, density, speed-up over dense, index share and size, and
    /// the ratio to the fastest backend.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| backend | pattern | dtype | N | time ms (median) | p10-p90 ms | TFLOP/s | density | vs dense | index share | index size | peak dev mem | / fastest |\n");
        s.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let opt = |x: Option<f64>, suffix: &str| match x {
                Some(v) => format!("{}{suffix}", sig(v)),
                None => "-".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {}-{} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.backend,
                r.spec,
                r.dtype,
                r.seq_len,
                sig(r.time.median_ms),
                sig(r.time.p10_ms),
                sig(r.time.p90_ms),
                sig(r.tflops),
                sig(r.density),
                opt(r.speedup_vs_dense, "x"),
                match r.index_share {
                    Some(v) => format!("{:.0}%", 100.0 * v),
                    None => "-".into(),
                },
                if r.index_kernel_bytes > 0 {
                    bytes(r.index_kernel_bytes + r.index_selection_bytes)
                } else {
                    "-".into()
                },
                r.peak_device_bytes.map_or("n/a".into(), bytes),
                opt(r.ratio_to_fastest, "x"),
            ));
        }
        s
    }

    /// Header lines: machine, versions, backends and skipped ones, shapes.
    pub fn header(&self) -> String {
        let mut s = format!(
            "minference {} ({}) on {} ({}, {} threads)\n",
            self.crate_version,
            self.rustc,
            self.machine.hostname,
            self.machine.cpu,
            self.machine.cpu_threads
        );
        for b in &self.backends {
            s.push_str(&format!("backend {}: {} [{}]\n", b.name, b.device, b.notes));
        }
        for k in &self.skipped {
            s.push_str(&format!("skipped {}: {}\n", k.backend, k.reason));
        }
        if let Some(r) = self.rows.first() {
            s.push_str(&format!(
                "inputs: {}; B={} Hq={} Hkv={} D={}; warm-up {} runs{}, {} timed runs, index building included in the layer time\n",
                self.inputs, r.batch, r.heads, r.kv_heads, r.head_dim, self.warmup,
                if self.warmup > 0 { format!(" and at least {} ms", MIN_WARMUP.as_millis()) } else { String::new() },
                self.reps
            ));
        }
        s
    }

    /// Write every figure as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| io_err(path, e))?;
        std::fs::write(path, text).map_err(|e| io_err(path, e))
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Font files tried for the plot's text, after `$MINFERENCE_FONT`.
const FONT_CANDIDATES: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Find a TrueType font: `$MINFERENCE_FONT`, a few usual paths, any `.ttf` under the system
/// font folders, then matplotlib's DejaVu Sans under `/opt` and the library folders.
fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MINFERENCE_FONT") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = FONT_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(p.to_path_buf());
    }
    fn scan(dir: &Path, depth: usize) -> Option<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        if let Some(f) = entries
            .iter()
            .find(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")))
        {
            return Some(f.clone());
        }
        if depth == 0 {
            return None;
        }
        entries
            .iter()
            .filter(|p| p.is_dir())
            .find_map(|p| scan(p, depth - 1))
    }
    /// A file called `name` under `dir` (real folders only), visiting at most `budget` folders.
    fn find_named(dir: &Path, name: &str, depth: usize, budget: &mut usize) -> Option<PathBuf> {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
            let ft = e.file_type().ok()?;
            if ft.is_file() && e.file_name() == name {
                return Some(e.path());
            }
            if ft.is_dir() {
                dirs.push(e.path());
            }
        }
        if depth == 0 {
            return None;
        }
        dirs.sort();
        dirs.iter()
            .find_map(|d| find_named(d, name, depth - 1, budget))
    }
    ["/usr/share/fonts", "/usr/local/share/fonts"]
        .iter()
        .find_map(|d| scan(Path::new(d), 4))
        .or_else(|| {
            // Machines without system fonts often have matplotlib's copy of DejaVu Sans
            // (`.../site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf`).
            let mut budget = 50_000;
            ["/opt", "/usr/lib", "/usr/local/lib", "/root/.local/lib"]
                .iter()
                .find_map(|d| find_named(Path::new(d), "DejaVuSans.ttf", 10, &mut budget))
        })
}

/// Register a system font for plotters' text (once per process).
fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = find_font().ok_or_else(|| {
            "no TrueType font found (system font folders, matplotlib); set MINFERENCE_FONT=FILE.ttf"
                .to_string()
        })?;
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the whole process: leak the bytes once.
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, data)
            .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
    })
    .clone()
    .map_err(|msg| invalid("--plot", msg))
}

/// Line colours per pattern (distinguishable on white).
const PALETTE: [plotters::style::RGBColor; 6] = [
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(140, 86, 75),
];

/// Draw median latency against sequence length, log-log, one line per backend and pattern
/// (colour: pattern; marker: backend), with axes, units and a legend, as a PNG.
pub fn plot(report: &BenchReport, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    if report.rows.is_empty() {
        return Err(invalid("--plot", "no results to plot"));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, 0.0f64, f64::MAX, 0.0f64);
    for r in &report.rows {
        x0 = x0.min(r.seq_len as f64);
        x1 = x1.max(r.seq_len as f64);
        y0 = y0.min(r.time.min_ms);
        y1 = y1.max(r.time.max_ms);
    }
    let (x0, x1) = (x0 / 1.3, x1 * 1.3);
    let (y0, y1) = (y0 / 1.5, y1 * 1.5);
    // Ticks at the measured lengths, and at 1-2-5 steps of every decade of the latency.
    let mut x_ticks: Vec<f64> = report.rows.iter().map(|r| r.seq_len as f64).collect();
    x_ticks.sort_by(f64::total_cmp);
    x_ticks.dedup();
    let mut y_ticks = Vec::new();
    let mut decade = 10f64.powf(y0.log10().floor());
    while decade <= y1 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * decade;
            if (y0..=y1).contains(&t) {
                y_ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    let draw_err = |e: &dyn std::fmt::Display| io_err(path, e);
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let first = &report.rows[0];
    let title = format!(
        "Prefill attention latency per layer (B={}, H={}, D={})",
        first.batch, first.heads, first.head_dim
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(x_ticks),
            (y0..y1).log_scale().with_key_points(y_ticks),
        )
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("sequence length N (tokens)")
        .y_desc("latency per layer (ms, median)")
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                sig(*y)
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| draw_err(&e))?;
    let mut series: Vec<(String, String)> = Vec::new();
    for r in &report.rows {
        let key = (r.backend.clone(), r.pattern.clone());
        if !series.contains(&key) {
            series.push(key);
        }
    }
    let patterns: Vec<String> = {
        let mut p: Vec<String> = series.iter().map(|(_, p)| p.clone()).collect();
        p.dedup();
        let mut uniq = Vec::new();
        for x in p {
            if !uniq.contains(&x) {
                uniq.push(x);
            }
        }
        uniq
    };
    let backends: Vec<String> = report.backends.iter().map(|b| b.name.clone()).collect();
    for (backend, pattern) in &series {
        let ci = patterns.iter().position(|p| p == pattern).unwrap_or(0);
        let bi = backends.iter().position(|b| b == backend).unwrap_or(0);
        let color = PALETTE[ci % PALETTE.len()];
        let mut pts: Vec<(f64, f64)> = report
            .rows
            .iter()
            .filter(|r| &r.backend == backend && &r.pattern == pattern)
            .map(|r| (r.seq_len as f64, r.time.median_ms))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = ShapeStyle::from(&color).stroke_width(2);
        let dtype = report
            .rows
            .iter()
            .find(|r| &r.backend == backend)
            .map_or("", |r| r.dtype.as_str());
        chart
            .draw_series(LineSeries::new(pts.clone(), style))
            .map_err(|e| draw_err(&e))?
            .label(format!("{backend} ({dtype}) / {pattern}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        match bi % 3 {
            0 => chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, style.filled()))),
            1 => chart.draw_series(
                pts.iter()
                    .map(|&p| TriangleMarker::new(p, 5, style.filled())),
            ),
            _ => chart.draw_series(pts.iter().map(|&p| Cross::new(p, 5, style))),
        }
        .map_err(|e| draw_err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

/// The arguments of `minference bench` (a clap `Args` struct, so that the program only
/// dispatches to [`BenchArgs::run`]).
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Backends, comma separated (cpu, wgpu, cuda); default: every available one.
    #[arg(long, value_delimiter = ',')]
    pub backend: Option<Vec<String>>,
    /// Patterns, comma separated: families (budgets scale with N) or full specs such as
    /// `a-shape:64,1024`.
    #[arg(long, default_value = "dense,a-shape,vertical-slash,block-sparse")]
    pub patterns: String,
    /// Sequence lengths, comma separated; default per backend (256,512,1024 on host
    /// devices, 4096,16384,65536 on GPUs).
    #[arg(long, value_delimiter = ',')]
    pub seq_lens: Option<Vec<usize>>,
    /// Query heads (= kv heads); default 4 on host devices, 32 on GPUs.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Head dim; default 64 on host devices, 128 on GPUs.
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// Storage dtype (f32, f16, bf16); default f16 where the backend has it, else f32.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Unrecorded runs before timing; when nonzero, warm-up goes on until 500 ms have passed
    /// (an idle GPU needs that long to reach its clocks).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Write every figure, the machine and the versions as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency against sequence length (log-log) as a PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Time q, k, v from this safetensors file (as `run` reads them) instead of the
    /// structured generator.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

impl BenchArgs {
    /// The configuration these arguments ask for.
    pub fn config(&self) -> Result<BenchConfig> {
        Ok(BenchConfig {
            backends: self.backend.clone(),
            patterns: PatternCase::parse_list(&self.patterns)?,
            seq_lens: self.seq_lens.clone(),
            heads: self.heads,
            head_dim: self.head_dim,
            dtype: self.dtype.as_deref().map(str::parse).transpose()?,
            warmup: self.warmup,
            reps: self.reps,
            input: self.input.clone(),
            ..BenchConfig::default()
        })
    }

    /// Run the benchmark: skipped backends and the header on stderr, the table on stdout,
    /// then the JSON and the plot if asked for.
    pub fn run(&self) -> Result<()> {
        let cfg = self.config()?;
        if cfg.input.is_some()
            && (cfg.seq_lens.is_some() || cfg.heads.is_some() || cfg.head_dim.is_some())
        {
            eprintln!(
                "note: --input sets the shape; --seq-lens, --heads and --head-dim are ignored"
            );
        }
        let report = run_bench(&cfg, true)?;
        println!("{}", report.header());
        println!("{}", report.table());
        println!("time: layer incl. index building, median of {} after {} warm-up runs (and at least {} ms of them when any) (p10-p90); TFLOP/s: useful FLOPs 4*D*pairs / median; density: pairs / causal pairs; vs dense: same backend's dense time / this; index share: build_index alone / layer; / fastest: this time / fastest backend's", report.reps, report.warmup, MIN_WARMUP.as_millis());
        if let Some(p) = &self.json {
            report.write_json(p)?;
            eprintln!("wrote {}", p.display());
        }
        if let Some(p) = &self.plot {
            plot(&report, p)?;
            eprintln!("wrote {}", p.display());
        }
        Ok(())
    }
}
