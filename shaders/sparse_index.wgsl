// The shared sparse index as the sparse attention kernels of every variant read it: its
// buffers, the walk over a row block's single columns, and the key in each slot of a tile.
// Needs attention_common.wgsl (the tile state) and a core's `attend_tile()`.

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
        attend_tile();
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

/// Keys per index row block and per chunk (the contract's BLOCK).
const INDEX_BLOCK: u32 = 64u;

/// Index row `at`'s (chunk count, column count), clamped at 0. Read at the workgroup's own
/// row, so workgroup-uniform, and so are the loops of `visit_index_row`.
fn index_counts(at: u32) -> vec2<u32> {
    return vec2<u32>(u32(max(block_count[at], 0)), u32(max(column_count[at], 0)));
}

/// Visit index row `at`: its `counts.x` chunks (INDEX_BLOCK keys from each start, clipped to
/// `row_end`, the end of this workgroup's rows; a chunk starting at or past it is empty) and
/// its `counts.y` single columns.
fn visit_index_row(at: u32, counts: vec2<u32>, row_end: u32) {
    for (var c = 0u; c < counts.x; c++) {
        let s = u32(block_offset[at * params.nnz_s + c]);
        visit_range(s, min(s + INDEX_BLOCK, row_end));
    }
    visit_columns(at * params.nnz_v, counts.y);
}
