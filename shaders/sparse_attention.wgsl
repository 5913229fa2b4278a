// Sparse attention over the shared index, vertical-slash and block-sparse heads in one
// dispatch. Row block m visits its `block_count` chunks (64 keys [s, s + 64), causal inside
// the chunk) and its `column_count` single columns (all before the row block). Rows of heads
// with an empty index row (heads that do not use the index) are left untouched: an index
// head's row always holds at least its diagonal chunk.
// Grid: (R = cdiv(N, 64), B * Hq); workgroup BLOCK_M = 64 invocations, one query row each.

@group(0) @binding(5) var<storage, read> block_count: array<i32>;  // [B, Hq, R]
@group(0) @binding(6) var<storage, read> block_offset: array<i32>; // [B, Hq, R, NNZ_S]
@group(0) @binding(7) var<storage, read> column_count: array<i32>; // [B, Hq, R]
@group(0) @binding(8) var<storage, read> column_index: array<i32>; // [B, Hq, R, NNZ_V]

var<workgroup> row_counts: vec2<u32>; // (chunks, columns) of this row block
var<workgroup> chunk_start: u32;

/// Visit `count` single columns listed at `column_index[at..]`, BLOCK_N per tile.
fn visit_columns(at: u32, count: u32, lid: u32) {
    for (var t = 0u; t < count; t += BLOCK_N) {
        workgroupBarrier();
        if lid < BLOCK_N {
            let slot = t + lid;
            tile_keys[lid] = select(-1, column_index[at + min(slot, count - 1u)], slot < count);
        }
        workgroupBarrier();
        load_kv_tile(lid);
        workgroupBarrier();
        online_softmax_tile();
    }
}

fn sparse_attention(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let m = wid.x;
    let rows = (params.seq_len + BLOCK_M - 1u) / BLOCK_M;
    let at = bh * rows + m;
    if lid == 0u {
        row_counts = vec2<u32>(u32(max(block_count[at], 0)), u32(max(column_count[at], 0)));
    }
    let counts = workgroupUniformLoad(&row_counts);
    if counts.x == 0u && counts.y == 0u {
        return;
    }
    let row0 = m * BLOCK_M;
    load_q_tile(bh, row0, lid);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    for (var c = 0u; c < counts.x; c++) {
        if lid == 0u {
            chunk_start = u32(block_offset[at * params.nnz_s + c]);
        }
        let s = workgroupUniformLoad(&chunk_start);
        visit_range(s, min(s + BLOCK_M, row_end), lid);
    }
    visit_columns(at * params.nnz_v, counts.y, lid);
    store_o(bh);
}

@compute @workgroup_size(64)
fn sparse_attention_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    sparse_attention(wid, lid);
}

@compute @workgroup_size(64)
fn sparse_attention_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    sparse_attention(wid, lid);
}
