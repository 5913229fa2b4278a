// Dense causal attention, tiled: every row block visits keys [0, min(N, row0 + BLOCK_M)).
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup THREADS = 256 invocations (attention_tiled_core).

fn dense_attention_tiled(wid: vec3<u32>, local: u32) {
    let bh = wid.y;
    // Heaviest row blocks first (the last ones see the most keys): a shorter tail.
    let blocks = (params.seq_len + BLOCK_M - 1u) / BLOCK_M;
    start_row_block(bh, blocks - 1u - wid.x, local);
    visit_range(0u, min(params.seq_len, row0 + BLOCK_M));
    store_o(bh);
}

@compute @workgroup_size(256)
fn dense_attention_tiled_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    storage_f16 = false;
    dense_attention_tiled(wid, local);
}

@compute @workgroup_size(256)
fn dense_attention_tiled_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    storage_f16 = true;
    dense_attention_tiled(wid, local);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
