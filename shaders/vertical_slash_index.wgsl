// The kernel index from the raw selections, one invocation per (batch, head, row block):
// vertical-slash rows exactly as src/index.rs `convert_vertical_slash_row` (MInference's
// `convert_vertical_slash_indexes`), block-sparse rows as `block_index * 64`, other heads
// empty (count 0, all -1).
// Grid: (cdiv(R, 64), B * Hq).

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: VerticalSlashIndexParams;
@group(0) @binding(1) var<storage, read> head_kind: array<u32>;          // [Hq]: 1 vertical-slash, 2 block-sparse
@group(0) @binding(2) var<storage, read> selections: array<i32>;         // [B,Hq,nv] ++ [B,Hq,ns] ++ [B,Hq,R,top_k]
@group(0) @binding(3) var<storage, read_write> block_count: array<i32>;  // [B, Hq, R]
@group(0) @binding(4) var<storage, read_write> block_offset: array<i32>; // [B, Hq, R, NNZ_S]
@group(0) @binding(5) var<storage, read_write> column_count: array<i32>; // [B, Hq, R]
@group(0) @binding(6) var<storage, read_write> column_index: array<i32>; // [B, Hq, R, NNZ_V]

const BLOCK: i32 = 64;
const KIND_VERTICAL_SLASH: u32 = 1u;
const KIND_BLOCK_SPARSE: u32 = 2u;

var<private> chunks: u32;       // chunks written so far in this row
var<private> chunk_row_at: u32; // this row's first block_offset slot

fn push_chunk(s: i32) {
    if chunks < params.nnz_s {
        block_offset[chunk_row_at + chunks] = s;
        chunks += 1u;
    }
}

/// Store the range [s, e) as its 64-column chunk starts.
fn flush_range(s: i32, e: i32) {
    for (var x = s; x < e; x += BLOCK) {
        push_chunk(x);
    }
}

@compute @workgroup_size(64)
fn vertical_slash_index(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let m = wid.x * 64u + lid;
    if m >= params.rows {
        return;
    }
    let row_at = bh * params.rows + m;
    chunk_row_at = row_at * params.nnz_s;
    chunks = 0u;
    var columns = 0u;
    let column_row_at = row_at * params.nnz_v;
    let kind = head_kind[bh % params.q_heads];
    if kind == KIND_VERTICAL_SLASH {
        let start_m = i32(m) * BLOCK;
        let end_m = start_m + BLOCK;
        // Steps 1-2: the ends e = max(end_m - o, 64) of the offsets o < end_m, ascending
        // (offsets are ascending, so walk them backwards), then offset 0; merge into ranges.
        let slash_at = params.slash_at + bh * params.ns;
        var range_start = 0;
        var range_end = 0;
        var open = false;
        for (var t = i32(params.ns) - 1; t >= -1; t--) {
            var o = 0;
            if t >= 0 {
                o = selections[slash_at + u32(t)];
                if o < 0 || o >= end_m {
                    continue;
                }
            }
            let e = max(end_m - o, BLOCK);
            if !open {
                range_start = e - BLOCK;
                range_end = e;
                open = true;
            } else if e > range_end + BLOCK {
                flush_range(range_start, range_end);
                range_start = e - BLOCK;
                range_end = e;
            } else if e > range_end {
                range_end += BLOCK;
            }
        }
        flush_range(range_start, range_end);
        // Step 4: selected columns before the row block and in no chunk (both ascending).
        let vertical_at = bh * params.nv;
        var p = 0u;
        var last = -1;
        for (var t = 0u; t < params.nv; t++) {
            let c = selections[vertical_at + t];
            if c < 0 || c >= start_m || c == last {
                continue;
            }
            while p < chunks && block_offset[chunk_row_at + p] + BLOCK <= c {
                p += 1u;
            }
            let in_chunk = p < chunks && block_offset[chunk_row_at + p] <= c;
            if !in_chunk && columns < params.nnz_v {
                column_index[column_row_at + columns] = c;
                columns += 1u;
                last = c;
            }
        }
    } else if kind == KIND_BLOCK_SPARSE {
        let sel_at = params.block_at + row_at * params.top_k;
        for (var t = 0u; t < params.top_k; t++) {
            let c = selections[sel_at + t];
            if c >= 0 {
                push_chunk(c * BLOCK);
            }
        }
    }
    block_count[row_at] = i32(chunks);
    column_count[row_at] = i32(columns);
    for (var x = chunks; x < params.nnz_s; x++) {
        block_offset[chunk_row_at + x] = -1;
    }
    for (var x = columns; x < params.nnz_v; x++) {
        column_index[column_row_at + x] = -1;
    }
}
