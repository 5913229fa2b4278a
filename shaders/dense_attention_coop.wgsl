// Dense causal attention on cooperative matrices: every block of BLOCK_M rows (64, or 128 in
// the split kernel) visits keys [0, min(N, row0 + BLOCK_M)), with the split walk (two barriers
// per tile) when SPLIT_KV = 1. Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup WORKGROUP_SIZE
// invocations (attention_coop.wgsl). f16 storage only (f32 storage runs the tiled or rowwise
// kernels).

fn dense_attention_coop(wid: vec3<u32>, local: u32, subgroup: u32) {
    // Heaviest row blocks first (the last ones see the most keys): a shorter tail.
    let blocks = (params.seq_len + BLOCK_M - 1u) / BLOCK_M;
    start_row_block(wid.y, blocks - 1u - wid.x, local, subgroup);
    let keys_end = min(params.seq_len, row0 + BLOCK_M);
    if SPLIT_KV == 1u {
        visit_range_split(0u, keys_end);
    } else {
        visit_range(0u, keys_end);
    }
    finish_row_block();
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn dense_attention_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    dense_attention_coop(wid, local, subgroup);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
