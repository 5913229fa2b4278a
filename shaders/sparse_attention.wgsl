// Sparse attention over the shared index, vertical-slash and block-sparse heads in one
// dispatch. Row block m visits its `block_count` chunks (64 keys [s, s + 64), causal inside
// the chunk) and its `column_count` single columns (all before the row block). Rows of heads
// with an empty index row (heads that do not use the index) are left untouched: an index
// head's row always holds at least its diagonal chunk.
// Grid: (R = cdiv(N, 64), B * Hq); workgroup BLOCK_M = 64 invocations, one query row each.

// The index bindings and its walk (index_counts, visit_index_row, tile_key): sparse_index.wgsl.

fn sparse_attention(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let m = wid.x;
    let rows = (params.seq_len + BLOCK_M - 1u) / BLOCK_M;
    let at = bh * rows + m;
    let counts = index_counts(at);
    if counts.x == 0u && counts.y == 0u {
        return;
    }
    let row0 = m * BLOCK_M;
    load_q_tile(bh, row0, lid);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    visit_index_row(at, counts, row_end);
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
