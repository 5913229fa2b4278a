// Dense causal attention on cooperative matrices: every 32-row block visits keys
// [0, min(N, row0 + BLOCK_M)). Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup 64 invocations.
// f16 storage only (f32 storage runs the rowwise kernels).

fn dense_attention_coop(wid: vec3<u32>, local: u32, sg: u32, nsg: u32) {
    load_q_tile(wid, local, sg, nsg);
    visit_range(0u, min(params.seq_len, row0 + BLOCK_M));
    store_o();
}

@compute @workgroup_size(64)
fn dense_attention_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    dense_attention_coop(wid, local, sg, nsg);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
