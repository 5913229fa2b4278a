// Block-sparse index building (src/index.rs `block_sparse_select`, before selection):
// - `block_sparse_index_pool_*`: grid (R, B * Hq), mean of each 64-row block of q and of
//   the head's k (a partial last block averages its valid rows);
// - `block_sparse_index_scores`: grid (cdiv(R, 8), cdiv(R, 8), B * Hq), block scores
//   `q_pool[m] . k_pool[c]` for c < m (the top_k_select kernel then picks per row block).

struct BlockSparseIndexParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: BlockSparseIndexParams;
@group(0) @binding(4) var<storage, read> head_kind: array<u32>;        // [Hq]: 2 = block-sparse
@group(0) @binding(5) var<storage, read_write> pooled: array<f32>;    // [2, B, Hq, R, D]: q, k
@group(0) @binding(6) var<storage, read_write> block_scores: array<f32>; // [B, Hq, R, R]

const BLOCK: u32 = 64u;
const KIND_BLOCK_SPARSE: u32 = 2u;

fn pool(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let m = wid.x;
    if head_kind[bh % params.q_heads] != KIND_BLOCK_SPARSE {
        return;
    }
    let n = params.seq_len;
    let d = params.head_dim;
    let b = bh / params.q_heads;
    let kvh = (bh % params.q_heads) / (params.q_heads / params.kv_heads);
    let lo = m * BLOCK;
    let hi = min(lo + BLOCK, n);
    let q_at = bh * n * d;
    let k_at = (b * params.kv_heads + kvh) * n * d;
    let heads = params.batch * params.q_heads;
    for (var c = lid; c < d; c += 64u) {
        var qs = 0.0;
        var ks = 0.0;
        for (var i = lo; i < hi; i++) {
            qs += load_q(q_at + i * d + c);
            ks += load_k(k_at + i * d + c);
        }
        let count = f32(hi - lo);
        pooled[(bh * params.rows + m) * d + c] = qs / count;
        pooled[((heads + bh) * params.rows + m) * d + c] = ks / count;
    }
}

@compute @workgroup_size(64)
fn block_sparse_index_pool_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    pool(wid, lid);
}

@compute @workgroup_size(64)
fn block_sparse_index_pool_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    pool(wid, lid);
}

@compute @workgroup_size(8, 8)
fn block_sparse_index_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
    let bh = gid.z;
    let m = gid.y;
    let c = gid.x;
    let r = params.rows;
    if head_kind[bh % params.q_heads] != KIND_BLOCK_SPARSE || m >= r || c >= m {
        return;
    }
    let d = params.head_dim;
    let heads = params.batch * params.q_heads;
    let qa = (bh * r + m) * d;
    let ka = ((heads + bh) * r + c) * d;
    var qk = 0.0;
    for (var x = 0u; x < d; x++) {
        qk += pooled[qa + x] * pooled[ka + x];
    }
    block_scores[(bh * r + m) * r + c] = qk;
}
