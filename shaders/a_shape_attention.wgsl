// A-shape attention (StreamingLLM), token-exact: row i sees keys j <= i with j < sink or
// i - j < local. Heads whose window is absent (sink = -1) are left untouched.
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup BLOCK_M invocations, one query row each.

@group(0) @binding(5) var<storage, read> windows: array<vec2<i32>>; // [Hq]: (sink, local), sink -1 = not this kernel's head

fn a_shape_attention(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let row0 = wid.x * BLOCK_M;
    let w = windows[bh % params.q_heads];
    if w.x < 0 {
        return;
    }
    load_q_tile(bh, row0, lid);
    let sink = min(u32(w.x), params.seq_len);
    let local = u32(w.y);
    window_sink = sink;
    window_local = local;
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    // The sink keys, then the window keys of the tile's rows that the sink did not cover.
    let sink_end = min(sink, row_end);
    visit_range(0u, sink_end);
    var window_lo = 0u;
    if row0 + 1u > local {
        window_lo = row0 + 1u - local;
    }
    visit_range(max(window_lo, sink_end), row_end);
    store_o(bh);
}

@compute @workgroup_size(64)
fn a_shape_attention_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    a_shape_attention(wid, lid);
}

@compute @workgroup_size(64)
fn a_shape_attention_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    a_shape_attention(wid, lid);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
