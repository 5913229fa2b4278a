// Sparse attention over the shared index on cooperative matrices, vertical-slash and
// block-sparse heads in one dispatch. A workgroup owns index row block m (BLOCK_M = 64
// rows): it visits the row's `block_count` chunks (64 keys [s, s + 64), causal inside the
// chunk, clipped to the block's last row) and its `column_count` single columns (all before
// the row block), BLOCK_N per tile. Heads with an empty index row are left untouched.
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup WORKGROUP_SIZE invocations. f16 storage only.

// The index bindings and its walk (index_counts, visit_index_row, tile_key): sparse_index.wgsl.

// BLOCK_M is INDEX_BLOCK here: the backend builds this module with the core's default
// BLOCK_M = 64 (a pipeline constant, which const_assert cannot check).

fn sparse_attention_coop(wid: vec3<u32>, local: u32, subgroup: u32) {
    let m = wid.x;
    let rows = (params.seq_len + INDEX_BLOCK - 1u) / INDEX_BLOCK;
    let at = wid.y * rows + m;
    // Every invocation reads the same words: the counts and offsets are uniform.
    let counts = index_counts(at);
    if counts.x == 0u && counts.y == 0u {
        return;
    }
    start_row_block(wid.y, m, local, subgroup);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    visit_index_row(at, counts, row_end);
    finish_row_block();
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn sparse_attention_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    sparse_attention_coop(wid, local, subgroup);
}
