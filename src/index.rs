//! Index building, the reference semantics: the vertical-slash estimate and selection,
//! its conversion to the kernel index, and block-sparse pooling and selection.
//!
//! All of it in float64, written to be obviously right; GPU backends are held to it.
//!
//! # The kernel index (MInference's layout and names, i32)
//! For every batch `b`, query head `h` and row block `m` (rows `[64m, 64m + 64)`):
//! - `block_count[b,h,m]` chunks start at `block_offset[b,h,m,0..count]`: each chunk is the
//!   64 key columns `[s, s + 64)`, of which row `i` sees those `<= i` and `< N`;
//! - `column_count[b,h,m]` single key columns `column_index[b,h,m,0..count]`, all before
//!   the row block and outside every chunk.
//!
//! Chunks and columns are disjoint, so no key is counted twice. Padding is `-1`.

use crate::error::{invalid, Result};
use crate::pattern::{Pattern, BLOCK, FORCED_COLUMNS, FORCED_OFFSETS, LAST_Q};
use crate::tensor::AttnShape;
use rayon::prelude::*;

/// Widths of the index arrays for one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMeta {
    /// The problem's shape.
    pub shape: AttnShape,
    /// Pattern of every query head; heads that are neither vertical-slash nor block-sparse
    /// have empty rows in the index (the sparse kernel leaves them alone).
    pub patterns: Vec<Pattern>,
    /// Row blocks `R = cdiv(N, 64)`.
    pub rows: usize,
    /// Width of `block_offset`: the most chunks any row block can have.
    pub nnz_s: usize,
    /// Width of `column_index`: the most single columns any row block can have.
    pub nnz_v: usize,
    /// Width of `vertical_index`: the largest effective vertical budget.
    pub nv: usize,
    /// Width of `slash_index`: the largest effective slash budget.
    pub ns: usize,
    /// Width of `block_index`: the largest effective top-k (capped at `R`).
    pub top_k: usize,
}

impl IndexMeta {
    /// Array widths for `patterns` (one per query head) at `shape`.
    pub fn new(shape: AttnShape, patterns: &[Pattern]) -> Result<Self> {
        if patterns.len() != shape.q_heads {
            return Err(invalid(
                "patterns",
                format!(
                    "{} patterns for {} query heads",
                    patterns.len(),
                    shape.q_heads
                ),
            ));
        }
        patterns.iter().try_for_each(Pattern::validate)?;
        let n = shape.seq_len;
        let rows = shape.rows();
        let (mut nv, mut ns, mut top_k, mut nnz_s) = (0, 0, 0, 0);
        for p in patterns {
            match *p {
                Pattern::VerticalSlash { vertical, slash } => {
                    let (v, s) = Pattern::vertical_slash_budgets(vertical, slash, n);
                    nv = nv.max(v);
                    ns = ns.max(s);
                    // Each selected offset adds at most one chunk (offset 0 is added if missing),
                    // and chunks are distinct 64-aligned-apart starts below end_m + 64.
                    nnz_s = nnz_s.max((s + 1).min(rows + 1));
                }
                Pattern::BlockSparse { top_k: k } => {
                    top_k = top_k.max(k.min(rows));
                    nnz_s = nnz_s.max(k.min(rows));
                }
                _ => {}
            }
        }
        Ok(Self {
            shape,
            patterns: patterns.to_vec(),
            rows,
            nnz_s,
            nnz_v: nv,
            nv,
            ns,
            top_k,
        })
    }

    /// Number of (batch, query head) pairs.
    pub fn heads_total(&self) -> usize {
        self.shape.batch * self.shape.q_heads
    }
}

/// A layer's sparse index and the raw selections it was built from, on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIndex {
    /// Array widths and per-head patterns.
    pub meta: IndexMeta,
    /// `[B, Hq, nv]`: selected key columns, ascending, `-1` padded.
    pub vertical_index: Vec<i32>,
    /// `[B, Hq, ns]`: selected diagonal offsets `o = i - j`, ascending, `-1` padded.
    pub slash_index: Vec<i32>,
    /// `[B, Hq, R, top_k]`: selected key blocks per row block, ascending, `-1` padded.
    pub block_index: Vec<i32>,
    /// `[B, Hq, R]`: chunks per row block.
    pub block_count: Vec<i32>,
    /// `[B, Hq, R, NNZ_S]`: chunk starts (64-column ranges), ascending, `-1` padded.
    pub block_offset: Vec<i32>,
    /// `[B, Hq, R]`: single columns per row block.
    pub column_count: Vec<i32>,
    /// `[B, Hq, R, NNZ_V]`: single key columns, ascending, `-1` padded.
    pub column_index: Vec<i32>,
}

/// One row block's entries of the kernel index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowIndex {
    /// Chunk starts, ascending.
    pub block_offset: Vec<i32>,
    /// Single columns, ascending.
    pub column_index: Vec<i32>,
}

/// Indices of the `count` highest scores, returned in ascending index order.
/// Ties go to the smaller index; `+inf` (forced) entries are taken first, in index order.
pub fn select_top(scores: &[f64], count: usize) -> Vec<i32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut top: Vec<i32> = order.into_iter().take(count).map(|i| i as i32).collect();
    top.sort_unstable();
    top
}

/// Vertical and slash scores of one head from its last `min(64, N)` queries.
///
/// `q`: `[N, D]` of the query head, `k`: `[N, D]` of its kv head. Returns
/// `(vertical[N], slash[N])` where `vertical[j] = sum_r P[r, j]`, `slash[o] = sum_r P[r, i_r - o]`,
/// with `P` the causal softmax of `scale * q . k^T` over the last rows. Forced entries are
/// not applied here (see [`vertical_slash_select`]).
pub fn vertical_slash_scores(
    q: &[f64],
    k: &[f64],
    n: usize,
    d: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let last_q = LAST_Q.min(n);
    let mut vertical = vec![0.0; n];
    let mut slash = vec![0.0; n];
    let mut p = vec![0.0; n];
    for i in n - last_q..n {
        let qi = &q[i * d..(i + 1) * d];
        let mut max = f64::NEG_INFINITY;
        for (j, pj) in p.iter_mut().enumerate().take(i + 1) {
            *pj = scale * dot(qi, &k[j * d..(j + 1) * d]);
            max = max.max(*pj);
        }
        let mut sum = 0.0;
        for pj in p.iter_mut().take(i + 1) {
            *pj = (*pj - max).exp();
            sum += *pj;
        }
        for (j, &pj) in p.iter().enumerate().take(i + 1) {
            vertical[j] += pj / sum;
            slash[i - j] += pj / sum;
        }
    }
    (vertical, slash)
}

/// Select a vertical-slash head's columns and offsets (both ascending).
///
/// Columns `j < 30` and offsets `o < 100` are forced (`+inf`); the budgets become
/// `nv = min(N, max(vertical, 30))`, `ns = min(N, max(slash, 50))`.
pub fn vertical_slash_select(
    q: &[f64],
    k: &[f64],
    n: usize,
    d: usize,
    scale: f64,
    vertical: usize,
    slash: usize,
) -> (Vec<i32>, Vec<i32>) {
    let (vs, ss) = vertical_slash_scores(q, k, n, d, scale);
    vertical_slash_select_from_scores(vs, ss, vertical, slash)
}

/// The selection step of [`vertical_slash_select`] on scores already computed by
/// [`vertical_slash_scores`] (`N` = their length): force the sink columns and the local
/// offsets, then keep the top `nv` columns and `ns` offsets. Lets a caller try many budgets
/// on one head without recomputing the scores.
pub fn vertical_slash_select_from_scores(
    mut vs: Vec<f64>,
    mut ss: Vec<f64>,
    vertical: usize,
    slash: usize,
) -> (Vec<i32>, Vec<i32>) {
    let n = vs.len();
    vs.iter_mut()
        .take(FORCED_COLUMNS)
        .for_each(|x| *x = f64::INFINITY);
    ss.iter_mut()
        .take(FORCED_OFFSETS)
        .for_each(|x| *x = f64::INFINITY);
    let (nv, ns) = Pattern::vertical_slash_budgets(vertical, slash, n);
    (select_top(&vs, nv), select_top(&ss, ns))
}

/// Convert one row block's selections to chunks and columns, as MInference's
/// `convert_vertical_slash_indexes` (64x64) does, bounds-safe for every input.
///
/// `vertical`: selected columns, ascending (negative entries ignored); `slash`: selected
/// offsets (any order, negative entries ignored). Offset 0 is always treated as selected.
pub fn convert_vertical_slash_row(m: usize, vertical: &[i32], slash: &[i32]) -> RowIndex {
    let start_m = (m * BLOCK) as i64;
    let end_m = start_m + BLOCK as i64;
    let b = BLOCK as i64;
    // Step 1: every offset below end_m names the 64 columns ending at e = max(end_m - o, 64).
    let mut ends: Vec<i64> = slash
        .iter()
        .map(|&o| o as i64)
        .filter(|&o| o >= 0 && o < end_m)
        .chain(std::iter::once(0))
        .map(|o| (end_m - o).max(b))
        .collect();
    ends.sort_unstable();
    // Step 2: walk the ends in ascending order, merging into ranges.
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let (mut range_start, mut range_end) = (ends[0] - b, ends[0]);
    for &e in &ends[1..] {
        if e > range_end + b {
            ranges.push((range_start, range_end));
            (range_start, range_end) = (e - b, e);
        } else if e > range_end {
            range_end += b;
        }
    }
    ranges.push((range_start, range_end));
    // Step 3: store every range as its 64-column chunk starts.
    let block_offset = ranges
        .iter()
        .flat_map(|&(s, e)| (s..e).step_by(BLOCK).map(|x| x as i32))
        .collect();
    // Step 4: a selected column before the row block and in no range is a single column.
    let in_range = |c: i64| ranges.iter().any(|&(s, e)| s <= c && c < e);
    let mut column_index: Vec<i32> = vertical
        .iter()
        .map(|&c| c as i64)
        .filter(|&c| c >= 0 && c < start_m && !in_range(c))
        .map(|c| c as i32)
        .collect();
    column_index.sort_unstable();
    column_index.dedup();
    RowIndex {
        block_offset,
        column_index,
    }
}

/// Mean of each 64-row block of `x` (`[N, D]`); a partial last block averages its valid rows.
pub fn mean_pool(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let rows = n.div_ceil(BLOCK);
    let mut out = vec![0.0; rows * d];
    for m in 0..rows {
        let (lo, hi) = (m * BLOCK, ((m + 1) * BLOCK).min(n));
        let o = &mut out[m * d..(m + 1) * d];
        for i in lo..hi {
            for (oc, xc) in o.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                *oc += xc;
            }
        }
        o.iter_mut().for_each(|v| *v /= (hi - lo) as f64);
    }
    out
}

/// Block-sparse selection of one head: per row block `m`, the diagonal block plus the
/// `top_k - 1` best earlier blocks by `q_pool[m] . k_pool[n]` (ties to the smaller
/// index); all of `0..=m` when `m + 1 <= top_k`. Each list is ascending.
pub fn block_sparse_select(
    q: &[f64],
    k: &[f64],
    n: usize,
    d: usize,
    top_k: usize,
) -> Vec<Vec<i32>> {
    let rows = n.div_ceil(BLOCK);
    let qp = mean_pool(q, n, d);
    let kp = mean_pool(k, n, d);
    (0..rows)
        .map(|m| {
            if m < top_k {
                return (0..=m as i32).collect();
            }
            let scores: Vec<f64> = (0..m)
                .map(|c| dot(&qp[m * d..(m + 1) * d], &kp[c * d..(c + 1) * d]))
                .collect();
            let mut keep = select_top(&scores, top_k.saturating_sub(1));
            keep.push(m as i32);
            keep
        })
        .collect()
}

/// Build a layer's index from q (`[B, Hq, N, D]`) and k (`[B, Hkv, N, D]`) in float64.
pub fn build_index(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    patterns: &[Pattern],
) -> Result<HostIndex> {
    let meta = IndexMeta::new(*shape, patterns)?;
    check_len("q", q.len(), shape.q_dims().iter().product())?;
    check_len("k", k.len(), shape.kv_dims().iter().product())?;
    let (n, d) = (shape.seq_len, shape.head_dim);
    let heads: Vec<HeadSelection> = (0..meta.heads_total())
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
            let qh = &q[shape.q_offset(b, h)..shape.q_offset(b, h) + n * d];
            let kh = &k[shape.kv_offset(b, h)..shape.kv_offset(b, h) + n * d];
            match patterns[h] {
                Pattern::VerticalSlash { vertical, slash } => {
                    let (v, s) =
                        vertical_slash_select(qh, kh, n, d, shape.scale(), vertical, slash);
                    HeadSelection::VerticalSlash(v, s)
                }
                Pattern::BlockSparse { top_k } => {
                    HeadSelection::Blocks(block_sparse_select(qh, kh, n, d, top_k))
                }
                _ => HeadSelection::None,
            }
        })
        .collect();
    HostIndex::assemble(meta, &heads)
}

/// The raw selection of one (batch, head).
#[derive(Clone, Debug)]
pub enum HeadSelection {
    /// Not an index head.
    None,
    /// Columns and offsets, ascending.
    VerticalSlash(Vec<i32>, Vec<i32>),
    /// Per row block, the selected key blocks, ascending.
    Blocks(Vec<Vec<i32>>),
}

impl HostIndex {
    /// All arrays at their widths, selections and index `-1`, counts 0.
    fn empty(meta: IndexMeta) -> Self {
        let bh = meta.heads_total();
        let r = meta.rows;
        Self {
            vertical_index: vec![-1; bh * meta.nv],
            slash_index: vec![-1; bh * meta.ns],
            block_index: vec![-1; bh * r * meta.top_k],
            block_count: vec![0; bh * r],
            block_offset: vec![-1; bh * r * meta.nnz_s],
            column_count: vec![0; bh * r],
            column_index: vec![-1; bh * r * meta.nnz_v],
            meta,
        }
    }

    /// Fill the arrays from per-(batch, head) selections, converting as the contract says.
    pub fn assemble(meta: IndexMeta, heads: &[HeadSelection]) -> Result<Self> {
        if heads.len() != meta.heads_total() {
            return Err(invalid(
                "selections",
                format!("{} heads, want {}", heads.len(), meta.heads_total()),
            ));
        }
        let mut ix = Self::empty(meta);
        let m = ix.meta.clone();
        let r = m.rows;
        for (bh, sel) in heads.iter().enumerate() {
            let rows: Vec<RowIndex> = match sel {
                HeadSelection::None => continue,
                HeadSelection::VerticalSlash(v, s) => {
                    put(&mut ix.vertical_index, bh, m.nv, v, "vertical_index")?;
                    put(&mut ix.slash_index, bh, m.ns, s, "slash_index")?;
                    (0..r)
                        .map(|row| convert_vertical_slash_row(row, v, s))
                        .collect()
                }
                HeadSelection::Blocks(blocks) => {
                    if blocks.len() != r {
                        return Err(invalid(
                            "block_index",
                            format!("{} row blocks, want {r}", blocks.len()),
                        ));
                    }
                    for (row, sel) in blocks.iter().enumerate() {
                        put(
                            &mut ix.block_index,
                            bh * r + row,
                            m.top_k,
                            sel,
                            "block_index",
                        )?;
                    }
                    blocks
                        .iter()
                        .map(|sel| RowIndex {
                            block_offset: sel.iter().map(|&c| c * BLOCK as i32).collect(),
                            column_index: Vec::new(),
                        })
                        .collect()
                }
            };
            for (row, ri) in rows.iter().enumerate() {
                let at = bh * r + row;
                ix.block_count[at] = ri.block_offset.len() as i32;
                ix.column_count[at] = ri.column_index.len() as i32;
                put(
                    &mut ix.block_offset,
                    at,
                    m.nnz_s,
                    &ri.block_offset,
                    "block_offset",
                )?;
                put(
                    &mut ix.column_index,
                    at,
                    m.nnz_v,
                    &ri.column_index,
                    "column_index",
                )?;
            }
        }
        Ok(ix)
    }

    /// Rebuild the kernel index from this index's own raw selections (the conversion rule).
    pub fn reconverted(&self) -> Result<Self> {
        let m = &self.meta;
        let heads: Vec<HeadSelection> = (0..m.heads_total())
            .map(|bh| match m.patterns[bh % m.shape.q_heads] {
                Pattern::VerticalSlash { .. } => HeadSelection::VerticalSlash(
                    valid(&self.vertical_index[bh * m.nv..(bh + 1) * m.nv]),
                    valid(&self.slash_index[bh * m.ns..(bh + 1) * m.ns]),
                ),
                Pattern::BlockSparse { .. } => HeadSelection::Blocks(
                    (0..m.rows)
                        .map(|row| {
                            let at = (bh * m.rows + row) * m.top_k;
                            valid(&self.block_index[at..at + m.top_k])
                        })
                        .collect(),
                ),
                _ => HeadSelection::None,
            })
            .collect();
        Self::assemble(m.clone(), &heads)
    }

    /// Check every array's length, every count against its width and every entry against
    /// `N`; a GPU kernel may trust an index that passes.
    pub fn validate(&self) -> Result<()> {
        let m = &self.meta;
        let (bh, r) = (m.heads_total(), m.rows);
        for (name, len, want) in [
            ("vertical_index", self.vertical_index.len(), bh * m.nv),
            ("slash_index", self.slash_index.len(), bh * m.ns),
            ("block_index", self.block_index.len(), bh * r * m.top_k),
            ("block_count", self.block_count.len(), bh * r),
            ("block_offset", self.block_offset.len(), bh * r * m.nnz_s),
            ("column_count", self.column_count.len(), bh * r),
            ("column_index", self.column_index.len(), bh * r * m.nnz_v),
        ] {
            check_len(name, len, want)?;
        }
        for row in 0..bh * r {
            let (bc, cc) = (self.block_count[row], self.column_count[row]);
            if bc < 0 || bc as usize > m.nnz_s || cc < 0 || cc as usize > m.nnz_v {
                return Err(invalid(
                    "index",
                    format!(
                        "row {row}: block_count {bc} / column_count {cc} outside 0..={}/0..={}",
                        m.nnz_s, m.nnz_v
                    ),
                ));
            }
            let start_m = ((row % r) * BLOCK) as i32;
            for &s in &self.block_offset[row * m.nnz_s..row * m.nnz_s + bc as usize] {
                // Chunks start before end_m (ranges end below end_m + 64); columns >= N are skipped.
                if s < 0 || s >= start_m + BLOCK as i32 {
                    return Err(invalid(
                        "block_offset",
                        format!(
                            "row {row}: chunk start {s} outside 0..{}",
                            start_m + BLOCK as i32
                        ),
                    ));
                }
            }
            for &c in &self.column_index[row * m.nnz_v..row * m.nnz_v + cc as usize] {
                if c < 0 || c >= start_m {
                    return Err(invalid(
                        "column_index",
                        format!("row {row}: column {c} outside 0..{start_m} (must precede the row block)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key columns query row `i` of (batch `b`, head `h`) attends to in the sparse
    /// kernel, ascending (chunks clipped to `<= i` and `< N`, plus single columns).
    pub fn keys_of_row(&self, b: usize, h: usize, i: usize) -> Vec<usize> {
        let m = &self.meta;
        let n = m.shape.seq_len;
        let at = (b * m.shape.q_heads + h) * m.rows + i / BLOCK;
        let bc = self.block_count[at].max(0) as usize;
        let cc = self.column_count[at].max(0) as usize;
        let mut keys: Vec<usize> = self.column_index[at * m.nnz_v..at * m.nnz_v + cc]
            .iter()
            .map(|&c| c as usize)
            .collect();
        for &s in &self.block_offset[at * m.nnz_s..at * m.nnz_s + bc] {
            let s = s as usize;
            keys.extend(s..(s + BLOCK).min(i + 1).min(n));
        }
        keys.sort_unstable();
        keys
    }

    /// Number of (query, key) pairs the sparse kernel computes for index heads.
    pub fn pairs(&self) -> u64 {
        let m = &self.meta;
        let mut total = 0u64;
        for b in 0..m.shape.batch {
            for h in 0..m.shape.q_heads {
                if !m.patterns[h].uses_index() {
                    continue;
                }
                for i in 0..m.shape.seq_len {
                    total += self.keys_of_row(b, h, i).len() as u64;
                }
            }
        }
        total
    }
}

/// Entries of a `-1`-padded slice that are not padding.
fn valid(s: &[i32]) -> Vec<i32> {
    s.iter().copied().filter(|&x| x >= 0).collect()
}

/// Write `vals` into row `row` of a `[.., width]` array (the rest stays `-1`).
fn put(dst: &mut [i32], row: usize, width: usize, vals: &[i32], name: &str) -> Result<()> {
    if vals.len() > width {
        return Err(invalid(
            name,
            format!("{} entries in a row of width {width}", vals.len()),
        ));
    }
    dst[row * width..row * width + vals.len()].copy_from_slice(vals);
    Ok(())
}

fn check_len(name: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(invalid(name, format!("{len} elements, want {want}")));
    }
    Ok(())
}

/// Dot product in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[c * 4 + l] * b[c * 4 + l];
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for i in chunks * 4..a.len() {
        s += a[i] * b[i];
    }
    s
}
