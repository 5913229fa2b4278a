// The attention kernels' params and output, shared by every variant's core (rowwise, tiled,
// coop); mirrored by `AttentionParams` in backends/wgpu/mod.rs.

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
