// A-shape attention (StreamingLLM) on cooperative matrices, token-exact: row i sees keys
// j <= i with j < sink or i - j < local. Heads whose window is absent (sink = -1) are left
// untouched. Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup WORKGROUP_SIZE invocations. f16 storage only.

@group(0) @binding(5) var<storage, read> windows: array<vec2<i32>>; // [Hq]: (sink, local), sink -1 = not this kernel's head

fn a_shape_attention_coop(wid: vec3<u32>, local: u32, subgroup: u32) {
    let w = windows[wid.y % params.q_heads];
    if w.x < 0 {
        return; // uniform: the whole workgroup reads the same window
    }
    start_row_block(wid.y, wid.x, local, subgroup);
    let sink = min(u32(w.x), params.seq_len);
    let local_window = u32(w.y);
    window_sink = sink;
    window_local = local_window;
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    // The sink keys, then the window keys of the block's rows that the sink did not cover.
    let sink_end = min(sink, row_end);
    visit_range(0u, sink_end);
    var window_lo = 0u;
    if row0 + 1u > local_window {
        window_lo = row0 + 1u - local_window;
    }
    visit_range(max(window_lo, sink_end), row_end);
    finish_row_block();
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn a_shape_attention_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    a_shape_attention_coop(wid, local, subgroup);
}

/// Key in slot `s` of the current range tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    return select(-1, i32(x), x < tile_hi);
}
