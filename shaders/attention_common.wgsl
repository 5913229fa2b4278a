// What every attention core (rowwise, tiled, coop) shares: the params (mirrored by
// `AttentionParams` in backends/wgpu/mod.rs), the output, the current tile and the walk over
// a key range. Each core provides `attend_tile()` (one tile: scores, mask, online softmax,
// P.V) and each kernel file `tile_key(s)`.

struct AttentionParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    nnz_s: u32,      // width of block_offset (sparse only)
    nnz_v: u32,      // width of column_index (sparse only)
    scale_log2: f32, // softmax scale * LOG2E: scores are kept in base 2
}

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(4) var<storage, read_write> out: array<u32>; // [B, Hq, N, D]: f32 words or f16 pairs

// The current tile's keys, computed by every invocation alike (no shared key list): a range
// tile holds keys tile_base + s below tile_hi; a column tile (tile_columns) holds
// column_index[tile_base + s] for tile_base + s < tile_hi.
var<private> tile_base: u32;
var<private> tile_hi: u32;
var<private> tile_columns: bool;

/// Visit keys `[lo, hi)` in tiles of BLOCK_N (lo and hi workgroup-uniform).
fn visit_range(lo: u32, hi: u32) {
    tile_columns = false;
    tile_hi = hi;
    for (var t = lo; t < hi; t += BLOCK_N) {
        tile_base = t;
        attend_tile();
    }
}
