// Dense causal attention: every row block visits keys [0, min(N, row0 + BLOCK_M)).
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup BLOCK_M invocations, one query row each.

fn dense_attention(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let row0 = wid.x * BLOCK_M;
    load_q_tile(bh, row0, lid);
    visit_range(0u, min(params.seq_len, row0 + BLOCK_M));
    store_o(bh);
}

@compute @workgroup_size(64)
fn dense_attention_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    dense_attention(wid, lid);
}

@compute @workgroup_size(64)
fn dense_attention_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    dense_attention(wid, lid);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
