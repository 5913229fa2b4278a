//! Offline, kernel-aware pattern search and accuracy evaluation (MInference's per-head
//! config search, done on captured q, k, v).
//!
//! # What is searched
//! For every query head of every captured layer, [`candidates`] builds one candidate per
//! MInference default, each scaled to the **same kernel cost**:
//!
//! | candidate | MInference default | scaled to the capture |
//! |---|---|---|
//! | A-shape | sink 1024, local 4096 | window `W = sink + local` at the budget, sink = `W/5` |
//! | vertical-slash | (30, 2048), (100, 1800), (500, 1500), (3000, 200), (1000, 6096) | each `(v, s)` times one factor `t`, found by bisection |
//! | block-sparse | top-100 | the largest top-k within the budget |
//!
//! # The cost model
//! The cost of a pattern is the number of (query, key) pairs the kernel computes, counted on
//! the index the online builder produces for this head (chunks clipped to the causal
//! diagonal, plus single columns; see [`row_block_pairs`]), not on nominal sizes: a lone
//! slash costs a 64-wide chunk per row block, a vertical one key per row. The budget
//! ([`SearchOptions::budget`]) is a fraction of the causal pairs `N(N+1)/2`; each candidate
//! is the largest of its shape whose cost stays within it (or the smallest of its shape when
//! even that is over, e.g. the forced 30 columns and 100 offsets of vertical-slash at a tiny
//! budget). The vertical-slash calibration uses the scores of batch 0; every batch is scored.
//! MInference's own defaults cost about 5,000 to 7,000 keys per row at 128K tokens, i.e. a
//! few percent of the causal pairs; the default budget here, 0.1, is the same order at the
//! shorter lengths one searches on a CPU.
//!
//! # The scores
//! - **recall**: the share of the dense softmax mass of a query row that lands on the keys
//!   the pattern's kernel actually attends ([`HostIndex::keys_of_row`] on the index
//!   [`build_index`] builds; [`window_keys`] for A-shape), averaged over the scored rows;
//! - **rel err**: `||o_pattern - o_dense|| / ||o_dense||` over the scored rows, where
//!   `o_pattern` is the softmax renormalised over the pattern's keys (what the kernel
//!   computes).
//!
//! The dense reference is computed one query row at a time (`O(N)` memory per row, never
//! `N x N`). The scored rows ([`sample_rows`]) are the last 64 rows (the rows the
//! vertical-slash estimate reads) plus a strided sample of the rest; `sample_rows = 0`
//! scores every row. Density is always exact over all rows.
//!
//! # The choice
//! The candidate with the highest recall wins, except that a candidate whose recall is
//! within [`SearchOptions::tie`] of the best and whose online index is cheaper wins over it
//! (A-shape needs no index, block-sparse a mean pool, vertical-slash a softmax of the last
//! 64 queries against all keys). A candidate whose density is more than [`OVER_BUDGET`]
//! times the budget (at short N, vertical-slash's forced 30 columns and 100 offsets alone
//! can cost more; batches other than the calibrated one can differ) competes only when no
//! candidate is within it.
//!
//! ```
//! use minference::generate::{structured_qkv, HeadKind};
//! use minference::search::{search, Capture, SearchOptions};
//! use minference::DType;
//!
//! let kinds = [HeadKind::BlockSparse];
//! let (q, k, v) = structured_qkv(1, 1, 2048, 64, &kinds, DType::F32, 1)?;
//! let capture = Capture::from_tensors(vec![(q, k, v)])?;
//! let options = SearchOptions { budget: 0.15, ..SearchOptions::default() };
//! let report = search(&capture, &options, &|_, _| {})?;
//! assert_eq!(report.layers[0][0].chosen.pattern.family(), "block-sparse");
//! let json = report.to_minference_json(); // what `run --config` reads
//! assert!(json[0]["0"][0] == "block_sparse");
//! # Ok::<(), minference::Error>(())
//! ```

use crate::error::{invalid, Result};
use crate::generate::{structured_qkv, HeadKind};
use crate::index::{
    build_index, convert_vertical_slash_row, vertical_slash_scores,
    vertical_slash_select_from_scores, HostIndex,
};
use crate::io::StFile;
use crate::pattern::{LayerConfig, Pattern, BLOCK, LAST_Q};
use crate::reference::window_keys;
use crate::tensor::{AttnShape, DType, HostTensor, TensorData};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// MInference's A-shape default: 1024 sink tokens and a 4096-token local window.
pub const A_SHAPE_DEFAULT: (usize, usize) = (1024, 4096);
/// MInference's vertical-slash defaults `(vertical, slash)`; their ratios are kept.
pub const VERTICAL_SLASH_DEFAULTS: [(usize, usize); 5] = [
    (30, 2048),
    (100, 1800),
    (500, 1500),
    (3000, 200),
    (1000, 6096),
];
/// MInference's block-sparse default top-k.
pub const BLOCK_SPARSE_DEFAULT: usize = 100;
/// Metadata key of a capture listing each query head's generated kind (`gen-capture`).
pub const HEAD_KINDS_KEY: &str = "head_kinds";

/// Knobs of [`search`].
#[derive(Clone, Debug)]
pub struct SearchOptions {
    /// Kernel cost per candidate, as a fraction of the causal pairs (0 < budget <= 1).
    pub budget: f64,
    /// Query rows scored per head: the last 64 plus a strided sample; 0 = every row.
    pub sample_rows: usize,
    /// Recall margin within which the candidate with the cheaper online index wins.
    pub tie: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            budget: 0.1,
            sample_rows: 512,
            tie: 0.01,
        }
    }
}

impl SearchOptions {
    /// Check the options.
    pub fn validate(&self) -> Result<()> {
        if !(self.budget > 0.0 && self.budget <= 1.0) {
            return Err(invalid(
                "--budget",
                format!(
                    "must be a fraction of the causal pairs in (0, 1], got {}",
                    self.budget
                ),
            ));
        }
        if !(self.tie >= 0.0 && self.tie.is_finite()) {
            return Err(invalid("--tie", format!("must be >= 0, got {}", self.tie)));
        }
        Ok(())
    }
}

/// One layer of a capture: its shape and where its q, k, v live.
#[derive(Clone, Debug)]
pub struct CaptureLayer {
    /// The layer's attention shape.
    pub shape: AttnShape,
    q: Arc<HostTensor>,
    k: Arc<HostTensor>,
    v: Arc<HostTensor>,
    /// Index along the leading `layer` axis of a rank-5 tensor (0 for rank 4).
    slot: usize,
}

/// The q, k, v of one (batch, query head) in float64, `[N, D]` each (k, v of its kv head).
#[derive(Clone, Debug)]
pub struct HeadData {
    /// Sequence length.
    pub n: usize,
    /// Head dim.
    pub d: usize,
    /// Query rows.
    pub q: Vec<f64>,
    /// Key rows of the head's kv head.
    pub k: Vec<f64>,
    /// Value rows of the head's kv head.
    pub v: Vec<f64>,
}

impl HeadData {
    /// Softmax scale `1/sqrt(D)`.
    pub fn scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }
}

/// Elements `[start, start + len)` of a tensor widened to f64.
fn slice_f64(t: &HostTensor, start: usize, len: usize) -> Vec<f64> {
    match &t.data {
        TensorData::F32(x) => x[start..start + len].iter().map(|&y| y as f64).collect(),
        TensorData::F16(x) => x[start..start + len].iter().map(|y| y.to_f64()).collect(),
        TensorData::BF16(x) => x[start..start + len].iter().map(|y| y.to_f64()).collect(),
    }
}

impl CaptureLayer {
    /// The float64 data of batch `b`, query head `h`.
    pub fn head(&self, b: usize, h: usize) -> HeadData {
        let s = &self.shape;
        let (n, d) = (s.seq_len, s.head_dim);
        let q_layer = s.q_dims().iter().product::<usize>() * self.slot;
        let kv_layer = s.kv_dims().iter().product::<usize>() * self.slot;
        let (qo, kvo) = (q_layer + s.q_offset(b, h), kv_layer + s.kv_offset(b, h));
        HeadData {
            n,
            d,
            q: slice_f64(&self.q, qo, n * d),
            k: slice_f64(&self.k, kvo, n * d),
            v: slice_f64(&self.v, kvo, n * d),
        }
    }
}

/// Captured q, k, v of one or more layers.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The layers, in order.
    pub layers: Vec<CaptureLayer>,
    /// Per query head, the kind it was generated as (from a `gen-capture` file), if known.
    pub head_kinds: Option<Vec<String>>,
}

impl Capture {
    /// Layers from `(q, k, v)` triples: rank 4 (`[B,H,N,D]`, one layer) or rank 5
    /// (`[L,B,H,N,D]`, `L` layers) each; every layer must have the same number of query heads.
    pub fn from_tensors(triples: Vec<(HostTensor, HostTensor, HostTensor)>) -> Result<Self> {
        let mut layers = Vec::new();
        for (q, k, v) in triples {
            let (count, q4, k4, v4) = match (q.dims.len(), k.dims.len(), v.dims.len()) {
                (4, 4, 4) => (1, q.dims.clone(), k.dims.clone(), v.dims.clone()),
                (5, 5, 5) if q.dims[0] == k.dims[0] && k.dims[0] == v.dims[0] => (
                    q.dims[0],
                    q.dims[1..].to_vec(),
                    k.dims[1..].to_vec(),
                    v.dims[1..].to_vec(),
                ),
                _ => {
                    return Err(invalid(
                        "q",
                        format!(
                            "want q, k, v all rank 4 [B,H,N,D] or all rank 5 [L,B,H,N,D] with \
                             the same L, got {:?}, {:?}, {:?}",
                            q.dims, k.dims, v.dims
                        ),
                    ))
                }
            };
            let shape = AttnShape::from_dims(&q4, &k4, &v4)?;
            let (q, k, v) = (Arc::new(q), Arc::new(k), Arc::new(v));
            for slot in 0..count {
                layers.push(CaptureLayer {
                    shape,
                    q: q.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    slot,
                });
            }
        }
        if layers.is_empty() {
            return Err(invalid("--input", "no layers in the capture"));
        }
        let hq = layers[0].shape.q_heads;
        if let Some(l) = layers.iter().position(|l| l.shape.q_heads != hq) {
            return Err(invalid(
                "--input",
                format!(
                    "layer {l} has {} query heads, layer 0 has {hq}",
                    layers[l].shape.q_heads
                ),
            ));
        }
        Ok(Self {
            layers,
            head_kinds: None,
        })
    }

    /// Read one or more capture files (`q`, `k`, `v` as for `run`, optionally rank 5), in
    /// order: the layers of the first file, then of the second ...
    pub fn read(paths: &[&Path]) -> Result<Self> {
        let mut triples = Vec::new();
        let mut kinds = None;
        for p in paths {
            let f = StFile::read(p)?;
            if kinds.is_none() {
                kinds = f
                    .metadata
                    .get(HEAD_KINDS_KEY)
                    .map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>());
            }
            triples.push((
                f.float("q")?.clone(),
                f.float("k")?.clone(),
                f.float("v")?.clone(),
            ));
        }
        let mut c = Self::from_tensors(triples)?;
        c.head_kinds = kinds.filter(|k| k.len() == c.layers[0].shape.q_heads);
        Ok(c)
    }

    /// Query heads per layer.
    pub fn q_heads(&self) -> usize {
        self.layers[0].shape.q_heads
    }
}

/// Query rows to score at length `n`: the last `min(64, n)` rows plus `count - 64` rows
/// strided evenly over the rest, ascending; every row when `count` is 0 or `>= n`.
pub fn sample_rows(n: usize, count: usize) -> Vec<usize> {
    if count == 0 || count >= n {
        return (0..n).collect();
    }
    let last = LAST_Q.min(n).min(count);
    let head = n - last;
    let strided = count - last;
    let mut rows: Vec<usize> = (0..strided)
        .map(|s| ((2 * s + 1) * head) / (2 * strided))
        .collect();
    rows.extend(head..n);
    rows.dedup();
    rows
}

/// Pairs the sparse kernel computes in row block `m` (rows `[64m, min(64m + 64, n))`) for
/// chunks starting at `offsets` and `columns` single columns (all before the row block):
/// row `i` sees chunk columns `<= i` and `< n`, and every single column.
pub fn row_block_pairs(offsets: &[i32], columns: usize, m: usize, n: usize) -> u64 {
    let start = m * BLOCK;
    let end = (start + BLOCK).min(n);
    if start >= end {
        return 0;
    }
    let rows = (end - start) as u64;
    let mut total = columns as u64 * rows;
    for &s in offsets {
        let s = s.max(0) as usize;
        if s + BLOCK <= (start + 1).min(n) {
            total += BLOCK as u64 * rows;
        } else {
            total += (start..end)
                .map(|i| (s + BLOCK).min(i + 1).min(n).saturating_sub(s) as u64)
                .sum::<u64>();
        }
    }
    total
}

/// Pairs head `(b, h)` of `index` computes (the sum of [`row_block_pairs`] over row blocks;
/// equal to counting [`HostIndex::keys_of_row`]).
pub fn index_head_pairs(index: &HostIndex, b: usize, h: usize) -> u64 {
    let m = &index.meta;
    let n = m.shape.seq_len;
    (0..m.rows)
        .map(|row| {
            let at = (b * m.shape.q_heads + h) * m.rows + row;
            let bc = index.block_count[at].max(0) as usize;
            let cc = index.column_count[at].max(0) as usize;
            row_block_pairs(
                &index.block_offset[at * m.nnz_s..at * m.nnz_s + bc],
                cc,
                row,
                n,
            )
        })
        .sum()
}

/// Causal pairs of one head, `n(n+1)/2`.
pub fn causal_pairs(n: usize) -> u64 {
    n as u64 * (n as u64 + 1) / 2
}

/// Pairs of an A-shape (or any window of `w = sink + local` keys) at length `n`:
/// row `i` sees `min(i + 1, w)` keys.
fn window_pairs(w: usize, n: usize) -> u64 {
    let w = w.min(n) as u64;
    let n = n as u64;
    w * (w + 1) / 2 + (n - w) * w
}

/// Pairs of block-sparse top-`k` at length `n` (independent of the data): row block `m`
/// has `min(k, m + 1) - 1` full earlier blocks and its diagonal triangle.
fn block_sparse_pairs(k: usize, n: usize) -> u64 {
    (0..n.div_ceil(BLOCK))
        .map(|m| {
            let rows = (BLOCK.min(n - m * BLOCK)) as u64;
            (k.min(m + 1) as u64 - 1) * BLOCK as u64 * rows + rows * (rows + 1) / 2
        })
        .sum()
}

/// Pairs of a vertical-slash pattern on one head, from its precomputed scores.
fn vertical_slash_pairs(vs: &[f64], ss: &[f64], vertical: usize, slash: usize) -> u64 {
    let n = vs.len();
    let (v, s) = vertical_slash_select_from_scores(vs.to_vec(), ss.to_vec(), vertical, slash);
    (0..n.div_ceil(BLOCK))
        .map(|m| {
            let r = convert_vertical_slash_row(m, &v, &s);
            row_block_pairs(&r.block_offset, r.column_index.len(), m, n)
        })
        .sum()
}

/// The largest `x` in `[lo, hi]` with `cost(x) <= target`, for a non-decreasing `cost`;
/// `lo` when even `cost(lo)` is over.
fn largest_within(lo: usize, hi: usize, target: u64, cost: impl Fn(usize) -> u64) -> usize {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if cost(mid) <= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The equal-cost candidates for one head (see the module docs): one A-shape, the five
/// vertical-slash shapes and one block-sparse, each the largest of its shape whose kernel
/// cost is within `budget` of the causal pairs. Duplicates are dropped.
pub fn candidates(head: &HeadData, budget: f64) -> Vec<Pattern> {
    let n = head.n;
    let target = (budget * causal_pairs(n) as f64).round() as u64;
    let mut out = Vec::new();
    // A-shape: W keys per row, split 1:4 as MInference's 1024 + 4096.
    let w = largest_within(1, n, target, |w| window_pairs(w, n));
    let (sink0, local0) = A_SHAPE_DEFAULT;
    let sink = w * sink0 / (sink0 + local0);
    out.push(Pattern::AShape {
        sink,
        local: (w - sink).max(1),
    });
    // Vertical-slash: one scale factor per MInference shape; scores computed once.
    let (vs, ss) = vertical_slash_scores(&head.q, &head.k, n, head.d, head.scale());
    for (v0, s0) in VERTICAL_SLASH_DEFAULTS {
        // Scale t / 1024: (v0 * t / 1024, s0 * t / 1024); t_max reaches N in both.
        let shape_at = |t: usize| ((v0 * t) / 1024, (s0 * t) / 1024);
        let t_max = (n * 1024).div_ceil(v0.min(s0));
        let steps = largest_within(0, t_max, target, |t| {
            let (v, s) = shape_at(t);
            vertical_slash_pairs(&vs, &ss, v, s)
        });
        let (v, s) = shape_at(steps);
        let (nv, ns) = Pattern::vertical_slash_budgets(v, s, n);
        out.push(Pattern::VerticalSlash {
            vertical: nv,
            slash: ns,
        });
    }
    // Block-sparse: the largest top-k within the budget.
    let rows = n.div_ceil(BLOCK);
    let k = largest_within(1, rows, target, |k| block_sparse_pairs(k, n));
    out.push(Pattern::BlockSparse { top_k: k });
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(*p));
    out
}

/// One pattern's scores on one head.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadScore {
    /// The pattern.
    pub pattern: Pattern,
    /// Pairs computed / causal pairs, exact over all rows (averaged over the batch).
    pub density: f64,
    /// Mean share of the dense softmax mass on the pattern's keys, over the scored rows.
    pub recall: f64,
    /// `||o - o_dense|| / ||o_dense||` over the scored rows.
    pub rel_err: f64,
    /// Squared error and squared norm behind `rel_err` (for aggregating over heads).
    pub err_sq: f64,
    /// Squared norm of the dense output over the scored rows.
    pub norm_sq: f64,
}

/// What the kernel attends for one candidate of one head.
enum Keys {
    Window(Pattern),
    Index(Box<HostIndex>),
}

impl Keys {
    fn build(head: &HeadData, pattern: Pattern) -> Result<Self> {
        Ok(if pattern.uses_index() {
            let shape = AttnShape::new(1, 1, 1, head.n, head.d)?;
            Keys::Index(Box::new(build_index(&shape, &head.q, &head.k, &[pattern])?))
        } else {
            Keys::Window(pattern)
        })
    }

    fn keys(&self, i: usize) -> Vec<usize> {
        match self {
            Keys::Window(p) => window_keys(p, i),
            Keys::Index(ix) => ix.keys_of_row(0, 0, i),
        }
    }

    fn pairs(&self, n: usize) -> u64 {
        match self {
            Keys::Window(Pattern::AShape { sink, local }) => (0..n)
                .map(|i| {
                    let seen = i + 1;
                    let sunk = (*sink).min(seen);
                    (sunk + seen.saturating_sub(sunk.max(seen.saturating_sub(*local)))) as u64
                })
                .sum(),
            Keys::Window(_) => causal_pairs(n),
            Keys::Index(ix) => index_head_pairs(ix, 0, 0),
        }
    }
}

/// Per-candidate sums over scored rows: recall, squared error, squared dense norm.
#[derive(Clone, Copy, Default)]
struct Sums {
    recall: f64,
    err_sq: f64,
    norm_sq: f64,
}

/// Score `patterns` on the batches of one head, at the rows `rows`. The dense softmax of each
/// row is computed once and shared by every pattern.
pub fn score_patterns(
    batches: &[HeadData],
    patterns: &[Pattern],
    rows: &[usize],
) -> Result<Vec<HeadScore>> {
    let mut total = vec![Sums::default(); patterns.len()];
    let mut pairs = vec![0u64; patterns.len()];
    let mut n_rows = 0usize;
    for head in batches {
        let (n, d) = (head.n, head.d);
        if let Some(&bad) = rows.iter().find(|&&i| i >= n) {
            return Err(invalid("rows", format!("row {bad} outside 0..{n}")));
        }
        let keys: Vec<Keys> = patterns
            .iter()
            .map(|&p| Keys::build(head, p))
            .collect::<Result<_>>()?;
        for (p, k) in pairs.iter_mut().zip(&keys) {
            *p += k.pairs(n);
        }
        let scale = head.scale();
        let per_row: Vec<Vec<Sums>> = rows
            .par_iter()
            .map(|&i| {
                let qi = &head.q[i * d..(i + 1) * d];
                let mut p: Vec<f64> = (0..=i)
                    .map(|j| scale * crate::index::dot(qi, &head.k[j * d..(j + 1) * d]))
                    .collect();
                let max = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for x in p.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                p.iter_mut().for_each(|x| *x /= sum);
                let weighted = |ks: &mut dyn Iterator<Item = usize>| {
                    let mut o = vec![0.0; d];
                    let mut mass = 0.0;
                    for j in ks {
                        mass += p[j];
                        for (oc, vc) in o.iter_mut().zip(&head.v[j * d..(j + 1) * d]) {
                            *oc += p[j] * vc;
                        }
                    }
                    (o, mass)
                };
                let (dense, _) = weighted(&mut (0..=i));
                let norm_sq: f64 = dense.iter().map(|x| x * x).sum();
                keys.iter()
                    .map(|k| {
                        let (o, mass) = weighted(&mut k.keys(i).into_iter());
                        let err_sq = if mass > 0.0 {
                            o.iter()
                                .zip(&dense)
                                .map(|(a, b)| (a / mass - b) * (a / mass - b))
                                .sum()
                        } else {
                            norm_sq
                        };
                        Sums {
                            recall: mass,
                            err_sq,
                            norm_sq,
                        }
                    })
                    .collect()
            })
            .collect();
        for row in per_row {
            for (t, s) in total.iter_mut().zip(row) {
                t.recall += s.recall;
                t.err_sq += s.err_sq;
                t.norm_sq += s.norm_sq;
            }
        }
        n_rows += rows.len();
    }
    let n = batches.first().map_or(0, |h| h.n);
    let causal = (causal_pairs(n) * batches.len() as u64).max(1) as f64;
    Ok(patterns
        .iter()
        .zip(total)
        .zip(pairs)
        .map(|((&pattern, s), pairs)| HeadScore {
            pattern,
            density: pairs as f64 / causal,
            recall: s.recall / n_rows.max(1) as f64,
            rel_err: rel(s.err_sq, s.norm_sq),
            err_sq: s.err_sq,
            norm_sq: s.norm_sq,
        })
        .collect())
}

fn rel(err_sq: f64, norm_sq: f64) -> f64 {
    if norm_sq > 0.0 {
        (err_sq / norm_sq).sqrt()
    } else {
        err_sq.sqrt()
    }
}

/// How expensive a pattern's online index is (lower is cheaper), for breaking near-ties.
fn index_cost_rank(p: &Pattern) -> u8 {
    match p {
        Pattern::AShape { .. } => 0,
        Pattern::BlockSparse { .. } => 1,
        Pattern::VerticalSlash { .. } => 2,
        Pattern::Dense => 3,
    }
}

/// Candidates more than this factor over the budget compete only when none is within it.
pub const OVER_BUDGET: f64 = 1.1;

/// The winner among scored candidates (see the module docs): among those within the budget
/// (density at most [`OVER_BUDGET`] times `budget`; all, when none is), the best recall,
/// unless a candidate within `tie` of it has a cheaper online index.
pub fn choose(scores: &[HeadScore], tie: f64, budget: f64) -> Option<&HeadScore> {
    let within = |s: &&HeadScore| s.density <= OVER_BUDGET * budget;
    let pool: Vec<&HeadScore> = if scores.iter().any(|s| within(&s)) {
        scores.iter().filter(within).collect()
    } else {
        scores.iter().collect()
    };
    let best = pool
        .iter()
        .map(|s| s.recall)
        .fold(f64::NEG_INFINITY, f64::max);
    pool.into_iter()
        .filter(|s| s.recall >= best - tie)
        .min_by(|a, b| {
            index_cost_rank(&a.pattern)
                .cmp(&index_cost_rank(&b.pattern))
                .then(b.recall.total_cmp(&a.recall))
        })
}

/// The search result of one head.
#[derive(Clone, Debug)]
pub struct HeadSearch {
    /// The winner.
    pub chosen: HeadScore,
    /// Every candidate, in [`candidates`] order.
    pub candidates: Vec<HeadScore>,
    /// The kind the head was generated as, if the capture says.
    pub generated: Option<String>,
}

impl HeadSearch {
    /// The best candidate of a family (`a-shape`, `vertical-slash`, `block-sparse`).
    pub fn best_of(&self, family: &str) -> Option<&HeadScore> {
        self.candidates
            .iter()
            .filter(|c| c.pattern.family() == family)
            .max_by(|a, b| a.recall.total_cmp(&b.recall))
    }
}

/// The result of [`search`]: per layer, per query head.
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// `layers[l][h]`.
    pub layers: Vec<Vec<HeadSearch>>,
    /// The options used.
    pub options: SearchOptions,
}

/// Search every head of every layer of `capture`; `on_head(layer, head)` is called as each
/// head finishes (from worker threads; for a progress bar).
pub fn search(
    capture: &Capture,
    options: &SearchOptions,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> Result<SearchReport> {
    options.validate()?;
    let hq = capture.q_heads();
    let jobs: Vec<(usize, usize)> = (0..capture.layers.len())
        .flat_map(|l| (0..hq).map(move |h| (l, h)))
        .collect();
    let results: Vec<HeadSearch> = jobs
        .par_iter()
        .map(|&(l, h)| {
            let layer = &capture.layers[l];
            let batches: Vec<HeadData> = (0..layer.shape.batch).map(|b| layer.head(b, h)).collect();
            let cands = candidates(&batches[0], options.budget);
            let rows = sample_rows(layer.shape.seq_len, options.sample_rows);
            let scores = score_patterns(&batches, &cands, &rows)?;
            let chosen = choose(&scores, options.tie, options.budget)
                .cloned()
                .ok_or_else(|| invalid("candidates", "no candidate scored"))?;
            on_head(l, h);
            Ok(HeadSearch {
                chosen,
                candidates: scores,
                generated: capture.head_kinds.as_ref().map(|k| k[h].clone()),
            })
        })
        .collect::<Result<_>>()?;
    let mut layers: Vec<Vec<HeadSearch>> = Vec::new();
    for (r, &(l, _)) in results.into_iter().zip(&jobs) {
        if layers.len() <= l {
            layers.push(Vec::new());
        }
        layers[l].push(r);
    }
    Ok(SearchReport {
        layers,
        options: options.clone(),
    })
}

impl SearchReport {
    /// The chosen patterns as one [`LayerConfig`] per layer.
    pub fn configs(&self) -> Vec<LayerConfig> {
        self.layers
            .iter()
            .map(|heads| LayerConfig {
                heads: heads.iter().map(|h| h.chosen.pattern).collect(),
            })
            .collect()
    }

    /// The config in MInference's format: a list with one `{"HEAD": [TYPE, V, S, RECALL]}`
    /// object per layer, as [`LayerConfig::from_minference_json`] and `run --config` read.
    pub fn to_minference_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.configs()
                .iter()
                .zip(&self.layers)
                .map(|(cfg, heads)| {
                    let scores: Vec<f64> = heads.iter().map(|h| h.chosen.recall).collect();
                    cfg.to_minference_json(Some(&scores))
                })
                .collect(),
        )
    }

    /// A per-head summary table: the chosen pattern and its scores, and the best recall of
    /// each family (and the generated kind, when known).
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:>5} {:>4} {:>15} {:<28} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8}\n",
            "layer",
            "head",
            "generated",
            "chosen",
            "density",
            "recall",
            "rel err",
            "a-shape",
            "v-slash",
            "b-sparse"
        );
        for (l, heads) in self.layers.iter().enumerate() {
            for (h, r) in heads.iter().enumerate() {
                let fam = |f: &str| {
                    r.best_of(f)
                        .map_or("-".into(), |c| format!("{:.4}", c.recall))
                };
                s += &format!(
                    "{:>5} {:>4} {:>15} {:<28} {:>8.4} {:>8.4} {:>9.3e} | {:>8} {:>8} {:>8}\n",
                    l,
                    h,
                    r.generated.as_deref().unwrap_or("-"),
                    r.chosen.pattern.to_string(),
                    r.chosen.density,
                    r.chosen.recall,
                    r.chosen.rel_err,
                    fam("a-shape"),
                    fam("vertical-slash"),
                    fam("block-sparse"),
                );
            }
        }
        s
    }
}

/// Evaluation of one layer: per head and over the layer.
#[derive(Clone, Debug)]
pub struct LayerEval {
    /// Per query head.
    pub heads: Vec<HeadScore>,
    /// Pairs computed / causal pairs over all heads.
    pub density: f64,
    /// Mean recall over heads.
    pub recall: f64,
    /// `||o - o_dense|| / ||o_dense||` over all heads' scored rows.
    pub rel_err: f64,
}

/// Evaluate `configs` (one per layer of `capture`) at `sample_rows` scored rows per head
/// (0 = every row); `on_head(layer, head)` is called as each head finishes.
pub fn eval(
    capture: &Capture,
    configs: &[LayerConfig],
    sample_rows: usize,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<LayerEval>> {
    if configs.len() != capture.layers.len() {
        return Err(invalid(
            "--config",
            format!(
                "{} layer configs for {} captured layers",
                configs.len(),
                capture.layers.len()
            ),
        ));
    }
    let hq = capture.q_heads();
    for c in configs {
        c.validate(hq)?;
    }
    let jobs: Vec<(usize, usize)> = (0..capture.layers.len())
        .flat_map(|l| (0..hq).map(move |h| (l, h)))
        .collect();
    let scores: Vec<HeadScore> = jobs
        .par_iter()
        .map(|&(l, h)| {
            let layer = &capture.layers[l];
            let batches: Vec<HeadData> = (0..layer.shape.batch).map(|b| layer.head(b, h)).collect();
            let rows = self::sample_rows(layer.shape.seq_len, sample_rows);
            let s = score_patterns(&batches, &[configs[l].heads[h]], &rows)?;
            on_head(l, h);
            s.into_iter()
                .next()
                .ok_or_else(|| invalid("config", "no pattern scored"))
        })
        .collect::<Result<_>>()?;
    Ok(scores
        .chunks(hq)
        .map(|heads| {
            let k = heads.len() as f64;
            let (e, nrm) = heads
                .iter()
                .fold((0.0, 0.0), |(e, n), h| (e + h.err_sq, n + h.norm_sq));
            LayerEval {
                heads: heads.to_vec(),
                density: heads.iter().map(|h| h.density).sum::<f64>() / k,
                recall: heads.iter().map(|h| h.recall).sum::<f64>() / k,
                rel_err: rel(e, nrm),
            }
        })
        .collect())
}

/// The evaluation as a table: one line per head, then one per layer.
pub fn eval_table(layers: &[LayerEval]) -> String {
    let mut s = format!(
        "{:>5} {:>5} {:<28} {:>8} {:>8} {:>9}\n",
        "layer", "head", "pattern", "density", "recall", "rel err"
    );
    for (l, le) in layers.iter().enumerate() {
        for (h, hs) in le.heads.iter().enumerate() {
            s += &format!(
                "{:>5} {:>5} {:<28} {:>8.4} {:>8.4} {:>9.3e}\n",
                l,
                h,
                hs.pattern.to_string(),
                hs.density,
                hs.recall,
                hs.rel_err
            );
        }
        s += &format!(
            "{:>5} {:>5} {:<28} {:>8.4} {:>8.4} {:>9.3e}\n",
            l, "all", "", le.density, le.recall, le.rel_err
        );
    }
    s
}

/// The evaluation as JSON: `{"layers": [{"density", "recall", "rel_err", "heads": [{"head",
/// "pattern", "density", "recall", "rel_err"}]}]}`.
pub fn eval_json(layers: &[LayerEval]) -> serde_json::Value {
    serde_json::json!({
        "layers": layers.iter().enumerate().map(|(l, le)| serde_json::json!({
            "layer": l,
            "density": le.density,
            "recall": le.recall,
            "rel_err": le.rel_err,
            "heads": le.heads.iter().enumerate().map(|(h, hs)| serde_json::json!({
                "head": h,
                "pattern": hs.pattern.to_string(),
                "density": hs.density,
                "recall": hs.recall,
                "rel_err": hs.rel_err,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The family name a generated head kind should be recognised as (`noise` for noise).
pub fn kind_family(kind: HeadKind) -> &'static str {
    match kind {
        HeadKind::AShape => "a-shape",
        HeadKind::VerticalSlash => "vertical-slash",
        HeadKind::BlockSparse => "block-sparse",
        HeadKind::Noise => "noise",
    }
}

/// Parse a head kind: `a-shape`, `vertical-slash`, `block-sparse` or `noise`.
pub fn parse_kind(s: &str) -> Result<HeadKind> {
    Ok(match s.trim() {
        "a-shape" => HeadKind::AShape,
        "vertical-slash" => HeadKind::VerticalSlash,
        "block-sparse" => HeadKind::BlockSparse,
        "noise" => HeadKind::Noise,
        other => {
            return Err(invalid(
                "--kinds",
                format!(
                "unknown head kind `{other}` (want a-shape, vertical-slash, block-sparse, noise)"
            ),
            ))
        }
    })
}

/// A capture file from the structured generator ([`structured_qkv`]): `layers` layers
/// (rank 4 when 1, else rank 5 `[L,B,H,N,D]`, layer `l` with seed `seed + l`), query head
/// `h` of kind `kinds[h]`, and the kinds in the metadata under [`HEAD_KINDS_KEY`].
#[allow(clippy::too_many_arguments)]
pub fn structured_capture(
    layers: usize,
    batch: usize,
    kv_heads: usize,
    n: usize,
    d: usize,
    kinds: &[HeadKind],
    dtype: DType,
    seed: u64,
) -> Result<StFile> {
    if layers == 0 {
        return Err(invalid("--layers", "must be at least 1, got 0"));
    }
    let mut parts: [Vec<f64>; 3] = Default::default();
    let mut dims: [Vec<usize>; 3] = Default::default();
    for l in 0..layers {
        let (q, k, v) = structured_qkv(batch, kv_heads, n, d, kinds, dtype, seed + l as u64)?;
        for (i, t) in [q, k, v].into_iter().enumerate() {
            parts[i].extend(t.to_f64());
            dims[i] = t.dims;
        }
    }
    let mut f = StFile::default();
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let mut dm = dims[i].clone();
        if layers > 1 {
            dm.insert(0, layers);
        }
        f.put_float(name, HostTensor::from_f64(&dm, &parts[i], dtype)?);
    }
    let names: Vec<&str> = kinds.iter().map(|&k| kind_family(k)).collect();
    f.metadata.insert(HEAD_KINDS_KEY.into(), names.join(","));
    Ok(f)
}
