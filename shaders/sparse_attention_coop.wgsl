// Sparse attention over the shared index on cooperative matrices, vertical-slash and
// block-sparse heads in one dispatch. A workgroup owns 32 rows, half of index row block
// m = row0 / 64: it visits the row's `block_count` chunks (64 keys [s, s + 64), causal inside
// the chunk, clipped to the workgroup's last row) and its `column_count` single columns (all
// before the row block), BLOCK_N per tile. Heads with an empty index row are left untouched.
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup 64 invocations. f16 storage only.

// The index bindings and its walk (index_counts, visit_index_row, tile_key): sparse_index.wgsl.

fn sparse_attention_coop(wid: vec3<u32>, local: u32, sg: u32, nsg: u32) {
    let m = (wid.x * BLOCK_M) / INDEX_BLOCK;
    let rows = (params.seq_len + INDEX_BLOCK - 1u) / INDEX_BLOCK;
    let at = wid.y * rows + m;
    // Every invocation reads the same words: the counts and offsets are uniform.
    let counts = index_counts(at);
    if counts.x == 0u && counts.y == 0u {
        return;
    }
    load_q_tile(wid, local, sg, nsg);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    visit_index_row(at, counts, row_end);
    store_o();
}

@compute @workgroup_size(64)
fn sparse_attention_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    sparse_attention_coop(wid, local, sg, nsg);
}
