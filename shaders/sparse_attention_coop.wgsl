// Sparse attention over the shared index on cooperative matrices, vertical-slash and
// block-sparse heads in one dispatch. A workgroup owns 32 rows, half of index row block
// m = row0 / 64: it visits the row's `block_count` chunks (64 keys [s, s + 64), causal inside
// the chunk, clipped to the workgroup's last row) and its `column_count` single columns (all
// before the row block), BLOCK_N per tile. Heads with an empty index row are left untouched.
// Grid: (cdiv(N, BLOCK_M), B * Hq); workgroup 64 invocations. f16 storage only.

@group(0) @binding(5) var<storage, read> block_count: array<i32>;  // [B, Hq, R]
@group(0) @binding(6) var<storage, read> block_offset: array<i32>; // [B, Hq, R, NNZ_S]
@group(0) @binding(7) var<storage, read> column_count: array<i32>; // [B, Hq, R]
@group(0) @binding(8) var<storage, read> column_index: array<i32>; // [B, Hq, R, NNZ_V]

/// Visit `count` single columns listed at `column_index[at..]`, BLOCK_N per tile.
fn visit_columns(at: u32, count: u32) {
    tile_columns = true;
    tile_hi = at + count;
    for (var t = 0u; t < count; t += BLOCK_N) {
        tile_base = at + t;
        visit_tile();
    }
}

/// Key in slot `s` of the current tile, or -1.
fn tile_key(s: u32) -> i32 {
    let x = tile_base + s;
    if x >= tile_hi {
        return -1;
    }
    if tile_columns {
        return column_index[x];
    }
    return i32(x);
}

fn sparse_attention_coop(wid: vec3<u32>, local: u32, sg: u32, nsg: u32) {
    let m = (wid.x * BLOCK_M) / INDEX_BLOCK;
    let rows = (params.seq_len + INDEX_BLOCK - 1u) / INDEX_BLOCK;
    let at = wid.y * rows + m;
    // Every invocation reads the same words: the counts and offsets are uniform.
    let counts = vec2<u32>(u32(max(block_count[at], 0)), u32(max(column_count[at], 0)));
    if counts.x == 0u && counts.y == 0u {
        return;
    }
    load_q_tile(wid, local, sg, nsg);
    let row_end = min(params.seq_len, row0 + BLOCK_M);
    for (var c = 0u; c < counts.x; c++) {
        let s = u32(block_offset[at * params.nnz_s + c]);
        if s < row_end {
            visit_range(s, min(s + INDEX_BLOCK, row_end));
        }
    }
    visit_columns(at * params.nnz_v, counts.y);
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
