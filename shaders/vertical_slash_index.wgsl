// The kernel index from the raw selections, one invocation per (batch, head, row block):
// vertical-slash rows exactly as src/index.rs `convert_vertical_slash_row` (MInference's
// `convert_vertical_slash_indexes`), block-sparse rows as `block_index * 64`, other heads
// empty (count 0, all -1).
// Two entry points, dispatched in order:
// - `vertical_slash_index_fill`: grid (FILL_GROUPS, 2): every entry of block_offset (y = 0)
//   and column_index (y = 1) to -1 (the padding), coalesced;
// - `vertical_slash_index`: grid (cdiv(R, ROWS), B * Hq), ROWS = 32 row blocks (invocations)
//   per workgroup: the counts and the valid entries.
//
// The selections come from top_k_select: per head, the valid entries ascending, then -1
// padding. A vertical-slash row block m (rows [64m, 64m + 64), end_m = 64m + 64) uses the
// offsets o < end_m, a prefix of the list found by binary search. The workgroup stages the
// head's offsets in workgroup memory OFFSET_CHUNK at a time, from the top of the list down
// (the prefix of its last row block), and each invocation walks its part of every chunk
// backwards: ends e = max(end_m - o, 64) ascending, merged into ranges (steps 1-2), then
// offset 0. Each range's 64-column chunks are written as the range reaches them (step 3),
// and when a range closes, the selected columns below it that no range holds are emitted
// (step 4: ranges and columns both ascend, so one pointer per invocation walks the columns
// once). The columns are read from workgroup memory when the list fits COLUMN_STAGE, else
// from storage. The walk is one flat loop (see `vertical_slash_rows`).

struct VerticalSlashIndexParams {
    q_heads: u32,
    rows: u32,   // R
    nv: u32,     // width of vertical_index
    ns: u32,     // width of slash_index
    top_k: u32,  // width of block_index
    nnz_s: u32,  // width of block_offset
    nnz_v: u32,  // width of column_index
    slash_at: u32, // slash_index's offset in `selections`
    block_at: u32, // block_index's offset in `selections`
    heads: u32,  // B * Hq
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: VerticalSlashIndexParams;
@group(0) @binding(1) var<storage, read> head_kind: array<u32>;          // [Hq]: 1 vertical-slash, 2 block-sparse
@group(0) @binding(2) var<storage, read> selections: array<i32>;         // [B,Hq,nv] ++ [B,Hq,ns] ++ [B,Hq,R,top_k]
@group(0) @binding(3) var<storage, read_write> block_count: array<i32>;  // [B, Hq, R]
@group(0) @binding(4) var<storage, read_write> block_offset: array<i32>; // [B, Hq, R, NNZ_S]
@group(0) @binding(5) var<storage, read_write> column_count: array<i32>; // [B, Hq, R]
@group(0) @binding(6) var<storage, read_write> column_index: array<i32>; // [B, Hq, R, NNZ_V]

const BLOCK: i32 = 64;
/// Row blocks (invocations) per workgroup.
const ROWS: u32 = 32u;
/// Offsets staged per step: 8 KiB.
const OFFSET_CHUNK: u32 = 2048u;
/// Longest column list staged whole: 6 KiB.
const COLUMN_STAGE: u32 = 1536u;
/// Workgroups along x of the fill (each invocation strides over its array).
const FILL_GROUPS: u32 = 1024u;
const FILL_THREADS: u32 = 256u;
const KIND_VERTICAL_SLASH: u32 = 1u;
const KIND_BLOCK_SPARSE: u32 = 2u;

var<workgroup> wg_offsets: array<i32, OFFSET_CHUNK>;
var<workgroup> wg_columns: array<i32, COLUMN_STAGE>;
var<workgroup> wg_top: u32; // offsets used by the workgroup's last row block

var<private> chunks: u32;       // chunks written so far in this row
var<private> chunk_row_at: u32; // this row's first block_offset slot
var<private> columns: u32;      // columns written so far in this row
var<private> column_row_at: u32; // this row's first column_index slot
var<private> columns_staged: bool;
var<private> vertical_at: u32;  // the head's first vertical_index entry in `selections`
var<private> next_column: u32;  // first column of the list not yet handled
var<private> last_column: i32;  // last column written (-1: none)
var<private> start_m: i32;      // first row of this row block
// The open range [range_start, range_end) of the merge (none before the first end).
var<private> range_open: bool;
var<private> range_start: i32;
var<private> range_end: i32;
// Column work left by the last closed range [pending_start, pending_end): the columns below
// it are emitted, those inside it skipped.
var<private> pending: bool;
var<private> pending_start: i32;
var<private> pending_end: i32;

fn push_chunk(s: i32) {
    if chunks < params.nnz_s {
        block_offset[chunk_row_at + chunks] = s;
        chunks += 1u;
    }
}

/// Entry t of the head's column list (the staged copy when it fits).
fn column_at(t: u32) -> i32 {
    if columns_staged {
        return wg_columns[t];
    }
    return selections[vertical_at + t];
}

/// The next column handled, or -1 at the list's end (padding included).
fn next_column_value() -> i32 {
    if next_column < params.nv {
        return column_at(next_column);
    }
    return -1;
}

fn emit_column(c: i32) {
    if c != last_column && columns < params.nnz_v {
        column_index[column_row_at + columns] = c;
        columns += 1u;
        last_column = c;
    }
}

/// One step of the pending column work: the next column is emitted if it precedes the
/// closed range (no range holds it: earlier ranges' columns were stepped past already),
/// stepped past if inside it; at or past the range's end, the work is done. Range starts
/// are at most start_m (ends at most end_m), so emitted columns precede the row block.
fn column_step() {
    let c = next_column_value();
    if c < 0 || c >= pending_end {
        pending = false;
        return;
    }
    if c < pending_start {
        emit_column(c);
    }
    next_column += 1u;
}

/// Close the open range: its column work becomes pending.
fn close_range() {
    pending = true;
    pending_start = range_start;
    pending_end = range_end;
}

/// Open the range [e - 64, e) with its first chunk.
fn open_range(e: i32) {
    range_open = true;
    range_start = e - BLOCK;
    range_end = e;
    push_chunk(range_start);
}

/// Step 2 for the next end e (ends come ascending): open, extend by one chunk (MInference's
/// rule: range_end += 64, whatever e is), or close the range and open a new one. Each
/// chunk (step 3) is written as its range reaches it, so chunks come out ascending. Only
/// called with no column work pending.
fn push_end(e: i32) {
    if !range_open {
        open_range(e);
    } else if e > range_end + BLOCK {
        close_range();
        open_range(e);
    } else if e > range_end {
        push_chunk(range_end);
        range_end += BLOCK;
    }
}

/// Do the pending column work.
fn finish_pending() {
    loop {
        if !pending {
            break;
        }
        column_step();
    }
}

/// How many leading entries of the head's offset list are >= 0 and < end (a prefix: valid
/// entries ascend, padding -1 follows).
fn offsets_below(slash_at: u32, end: i32) -> u32 {
    var lo = 0u;
    var hi = params.ns;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        let o = selections[slash_at + mid];
        if o >= 0 && o < end {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

fn vertical_slash_rows(bh: u32, m0: u32, m: u32, lid: u32) {
    let valid = m < params.rows;
    start_m = i32(m) * BLOCK;
    let end_m = start_m + BLOCK;
    let slash_at = params.slash_at + bh * params.ns;
    vertical_at = bh * params.nv;
    next_column = 0u;
    last_column = -1;
    range_open = false;
    pending = false;
    // Stage the column list when it fits.
    columns_staged = params.nv <= COLUMN_STAGE;
    if columns_staged {
        for (var t = lid; t < params.nv; t += ROWS) {
            wg_columns[t] = selections[vertical_at + t];
        }
    }
    var mine = 0u; // offsets of this row block
    if valid {
        mine = offsets_below(slash_at, end_m);
    }
    if lid == 0u {
        let last = min(m0 + ROWS, params.rows) - 1u;
        wg_top = offsets_below(slash_at, (i32(last) + 1) * BLOCK);
    }
    let top = workgroupUniformLoad(&wg_top);
    // Steps 1-2 over the staged chunks, top down: each chunk [lo, hi) of the list, walked
    // backwards from min(hi, mine).
    for (var hi = top; hi > 0u; hi -= min(hi, OFFSET_CHUNK)) {
        let lo = hi - min(hi, OFFSET_CHUNK);
        workgroupBarrier(); // the previous chunk is done
        for (var t = lo + lid; t < hi; t += ROWS) {
            wg_offsets[t - lo] = selections[slash_at + t];
        }
        workgroupBarrier();
        // One loop, one unit of work per iteration (a column step while column work is
        // pending, else the next offset), no loop nested in it: llvmpipe's loop limit counts
        // the iterations of loops inside untaken branches too.
        var t = min(hi, mine);
        loop {
            if pending {
                column_step();
                continue;
            }
            if t <= lo {
                break;
            }
            t -= 1u;
            push_end(max(end_m - wg_offsets[t - lo], BLOCK));
        }
    }
    if valid {
        // Offset 0, always selected: the largest end; then the last range's column work and
        // the columns after it.
        push_end(end_m);
        finish_pending();
        close_range();
        finish_pending();
        loop {
            let c = next_column_value();
            if c < 0 || c >= start_m {
                break;
            }
            emit_column(c);
            next_column += 1u;
        }
    }
}

fn block_sparse_row(row_at: u32) {
    let sel_at = params.block_at + row_at * params.top_k;
    for (var t = 0u; t < params.top_k; t++) {
        let c = selections[sel_at + t];
        if c >= 0 {
            push_chunk(c * BLOCK);
        }
    }
}

@compute @workgroup_size(32)
fn vertical_slash_index(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let m0 = wid.x * ROWS;
    let m = m0 + lid;
    let row_at = bh * params.rows + m;
    chunk_row_at = row_at * params.nnz_s;
    column_row_at = row_at * params.nnz_v;
    chunks = 0u;
    columns = 0u;
    let kind = head_kind[bh % params.q_heads];
    if kind == KIND_VERTICAL_SLASH {
        vertical_slash_rows(bh, m0, m, lid); // every invocation: it holds barriers
    } else if kind == KIND_BLOCK_SPARSE && m < params.rows {
        block_sparse_row(row_at);
    }
    if m < params.rows {
        block_count[row_at] = i32(chunks);
        column_count[row_at] = i32(columns);
    }
}

@compute @workgroup_size(256)
fn vertical_slash_index_fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let stride = FILL_GROUPS * FILL_THREADS;
    let first = wid.x * FILL_THREADS + lid;
    let rows = params.heads * params.rows;
    if wid.y == 0u {
        for (var i = first; i < rows * params.nnz_s; i += stride) {
            block_offset[i] = -1;
        }
    } else {
        for (var i = first; i < rows * params.nnz_v; i += stride) {
            column_index[i] = -1;
        }
    }
}
