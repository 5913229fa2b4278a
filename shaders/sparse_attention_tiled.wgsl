// Sparse attention over the shared index, tiled; vertical-slash and block-sparse heads in one
// dispatch. Row block m visits its `block_count` chunks (64 keys [s, s + 64), causal inside
// the chunk) and its `column_count` single columns (all before the row block), gathered
// BLOCK_N at a time into one tile (slots past the count are masked). Rows of heads with an
// empty index row (heads that do not use the index) are left untouched.
// Grid: (R = cdiv(N, 64), B * Hq); workgroup THREADS = 256 invocations (attention_tiled_core).

// The index bindings and its walk (index_counts, visit_index_row, tile_key): sparse_index.wgsl.

fn sparse_attention_tiled(wid: vec3<u32>, local: u32) {
    let bh = wid.y;
    let rows = (params.seq_len + BLOCK_M - 1u) / BLOCK_M;
    // Late row blocks first (they tend to hold the most chunks): a shorter tail.
    let m = rows - 1u - wid.x;
    let at = bh * rows + m;
    // Read at the workgroup's own index row: workgroup-uniform, and so are the loops below.
    let counts = index_counts(at);
    if counts.x == 0u && counts.y == 0u {
        return; // the whole workgroup, before any barrier
    }
    start_row_block(bh, m, local);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    visit_index_row(at, counts, row_end);
    store_o(bh);
}

@compute @workgroup_size(256)
fn sparse_attention_tiled_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    storage_f16 = false;
    sparse_attention_tiled(wid, local);
}

@compute @workgroup_size(256)
fn sparse_attention_tiled_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    storage_f16 = true;
    sparse_attention_tiled(wid, local);
}
