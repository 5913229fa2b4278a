// Block-sparse index building (src/index.rs `block_sparse_select`, before selection):
// - `block_sparse_index_pool_*`: grid (R, B * Hq + B * Hkv), POOL_THREADS invocations. Row
//   y < B * Hq of the grid pools query head y, row B * Hq + j pools kv head j (once per kv
//   head, when one of its query heads is block-sparse): the mean of each 64-row block
//   (a partial last block averages its valid rows). Each invocation owns u32 words of the
//   rows (one f32 element or two f16 ones; the workgroup reads a row coalesced) and sums
//   its columns over the rows in row order, 8 row loads in flight.
// - `block_sparse_index_scores`: grid (cdiv(R, SCORE_TILE), cdiv(R, SCORE_TILE), B * Hq),
//   SCORE_THREADS invocations: the causal f32 matmul `q_pool[m] . k_pool[c]` for c < m in
//   SCORE_TILE x SCORE_TILE output tiles (tiles wholly above the diagonal exit); pooled
//   rows staged through workgroup memory SCORE_K channels at a time (channel-major, so
//   each invocation reads its 4 rows and its 4 columns as two vec4s), 4 x 4 outputs per
//   invocation. Each output is one sequential sum over the channels in channel order, as
//   the one-output-per-invocation kernel it replaces computed it. The top_k_select kernel
//   then picks per row block.

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
@group(0) @binding(4) var<storage, read> head_kind: array<u32>;          // [Hq]: 2 = block-sparse
@group(0) @binding(5) var<storage, read_write> pooled: array<f32>;      // [B * Hq + B * Hkv, R, D]: q heads, then kv heads
@group(0) @binding(6) var<storage, read_write> block_scores: array<f32>; // [B, Hq, R * (R - 1) / 2]: row m's c < m from m * (m - 1) / 2

const BLOCK: u32 = 64u;
const KIND_BLOCK_SPARSE: u32 = 2u;

/// Invocations per pooling workgroup (one per u32 word of a row: f16 at D = 128).
const POOL_THREADS: u32 = 64u;
/// Output tile edge of the scores (rows m and columns c).
const SCORE_TILE: u32 = 64u;
/// Channels staged per step (the head dim is a multiple of it: 64 or 128). 16 keeps the
/// two staging arrays at 8.5 KiB, under WebGPU's 16 KiB default workgroup memory.
const SCORE_K: u32 = 16u;
/// Invocations per scores workgroup: a 16 x 16 grid of 4 x 4 output micro-tiles.
const SCORE_THREADS: u32 = 256u;
/// vec4s of one staged channel: SCORE_TILE rows, 4 per vec4, plus one of padding (the
/// transposing stores then spread over 8 banks).
const STAGE_STRIDE4: u32 = SCORE_TILE / 4u + 1u;
/// Rows one staging pass covers: SCORE_THREADS invocations, SCORE_K channels each row.
const STAGE_ROWS: u32 = SCORE_THREADS / SCORE_K;

// Channel-major: element [channel][row] at vec4 channel * STAGE_STRIDE4 + row / 4.
var<workgroup> q_stage: array<vec4<f32>, SCORE_K * STAGE_STRIDE4>; // [SCORE_K, STAGE_STRIDE4]
var<workgroup> k_stage: array<vec4<f32>, SCORE_K * STAGE_STRIDE4>; // [SCORE_K, STAGE_STRIDE4]

// ---- Mean pooling ----

/// Word `i` of q or of k.
fn load_word(is_k: bool, i: u32) -> u32 {
    if is_k {
        return k[i];
    }
    return q[i];
}

/// `sum` plus the element(s) of `word`: one f32 (in x), or two f16.
fn add_word(sum: vec2<f32>, word: u32) -> vec2<f32> {
    if storage_f16 {
        return sum + unpack2x16float(word);
    }
    return vec2<f32>(sum.x + bitcast<f32>(word), 0.0);
}

/// Column sums of rows [lo, hi) of the word at `at` in row 0 (rows `stride` words apart),
/// added in row order; the loads of 8 rows are issued before their adds.
fn sum_rows(is_k: bool, at: u32, stride: u32, lo: u32, hi: u32) -> vec2<f32> {
    var sum = vec2<f32>(0.0);
    var i = lo;
    for (; i + 8u <= hi; i += 8u) {
        let w = at + i * stride;
        let x0 = load_word(is_k, w);
        let x1 = load_word(is_k, w + stride);
        let x2 = load_word(is_k, w + 2u * stride);
        let x3 = load_word(is_k, w + 3u * stride);
        let x4 = load_word(is_k, w + 4u * stride);
        let x5 = load_word(is_k, w + 5u * stride);
        let x6 = load_word(is_k, w + 6u * stride);
        let x7 = load_word(is_k, w + 7u * stride);
        sum = add_word(add_word(add_word(add_word(sum, x0), x1), x2), x3);
        sum = add_word(add_word(add_word(add_word(sum, x4), x5), x6), x7);
    }
    for (; i < hi; i++) {
        sum = add_word(sum, load_word(is_k, at + i * stride));
    }
    return sum;
}

/// Whether kv head `kvh` (of any batch) serves a block-sparse query head.
fn kv_head_is_needed(kvh: u32) -> bool {
    let group = params.q_heads / params.kv_heads;
    for (var h = kvh * group; h < (kvh + 1u) * group; h++) {
        if head_kind[h] == KIND_BLOCK_SPARSE {
            return true;
        }
    }
    return false;
}

fn pool(wid: vec3<u32>, lid: u32) {
    let m = wid.x;
    let q_rows = params.batch * params.q_heads;
    let is_k = wid.y >= q_rows;
    // Step 1: the tensor head this workgroup pools, if it is needed.
    var head = wid.y; // b * Hq + h of q, or b * Hkv + kvh of k
    if is_k {
        head = wid.y - q_rows;
        if !kv_head_is_needed(head % params.kv_heads) {
            return;
        }
    } else if head_kind[head % params.q_heads] != KIND_BLOCK_SPARSE {
        return;
    }
    // Step 2: per owned word, the column sums over the block's rows, then the means.
    let n = params.seq_len;
    let d = params.head_dim;
    let per_word = select(1u, 2u, storage_f16);
    let words = d / per_word; // u32 words per row
    let lo = m * BLOCK;
    let hi = min(lo + BLOCK, n);
    let count = f32(hi - lo);
    let head_at = head * n * words;
    for (var w = lid; w < words; w += POOL_THREADS) {
        let sum = sum_rows(is_k, head_at + w, words, lo, hi);
        let out_at = (wid.y * params.rows + m) * d + w * per_word;
        pooled[out_at] = sum.x / count;
        if storage_f16 {
            pooled[out_at + 1u] = sum.y / count;
        }
    }
}

@compute @workgroup_size(POOL_THREADS)
fn block_sparse_index_pool_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    pool(wid, lid);
}

@compute @workgroup_size(POOL_THREADS)
fn block_sparse_index_pool_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    pool(wid, lid);
}

// ---- Block scores ----

/// Stage channels [k0, k0 + SCORE_K) of the tile's pooled q rows m0.. and k rows c0..
/// (rows past R as 0): invocation `lid` loads channel k0 + lid % SCORE_K of rows
/// lid / SCORE_K + STAGE_ROWS i, so each SCORE_K invocations read 64 contiguous bytes.
fn load_chunk(q_at: u32, k_at: u32, m0: u32, c0: u32, k0: u32, lid: u32) {
    let r = params.rows;
    let d = params.head_dim;
    let kk = lid % SCORE_K;
    for (var i = 0u; i < SCORE_TILE / STAGE_ROWS; i++) {
        let row = lid / SCORE_K + STAGE_ROWS * i;
        var qv = 0.0;
        var kv = 0.0;
        if m0 + row < r {
            qv = pooled[q_at + (m0 + row) * d + k0 + kk];
        }
        if c0 + row < r {
            kv = pooled[k_at + (c0 + row) * d + k0 + kk];
        }
        let slot = kk * STAGE_STRIDE4 + row / 4u;
        q_stage[slot][row % 4u] = qv;
        k_stage[slot][row % 4u] = kv;
    }
}

/// First entry of row block m's scores within its head: m (m - 1) / 2 (the head's
/// R (R - 1) / 2 entries fit the binding, checked on the host, so m (m - 1) fits u32).
fn triangle_at(m: u32) -> u32 {
    return m * (m - 1u) / 2u;
}

/// Add channels [k0, k0 + SCORE_K) of the staged chunk to this invocation's 4 x 4 outputs
/// (rows 4 ty + i in acc[i], columns 4 tx + j in component j), channel by channel: each
/// output's sum stays in channel order.
fn accumulate_chunk(acc: ptr<function, array<vec4<f32>, 4>>, tx: u32, ty: u32) {
    for (var t = 0u; t < SCORE_K; t++) {
        let a = q_stage[t * STAGE_STRIDE4 + ty];
        let kc = k_stage[t * STAGE_STRIDE4 + tx];
        (*acc)[0] += a.x * kc;
        (*acc)[1] += a.y * kc;
        (*acc)[2] += a.z * kc;
        (*acc)[3] += a.w * kc;
    }
}

/// Store scores (m, c .. c + 3) of `v`, those with c < m (m < R).
fn store_scores(head_at: u32, m: u32, c: u32, v: vec4<f32>) {
    if m >= params.rows {
        return;
    }
    let row_at = head_at + triangle_at(m);
    for (var j = 0u; j < 4u; j++) {
        if c + j < m {
            block_scores[row_at + c + j] = v[j];
        }
    }
}

@compute @workgroup_size(SCORE_THREADS)
fn block_sparse_index_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.z;
    let m0 = wid.y * SCORE_TILE;
    let c0 = wid.x * SCORE_TILE;
    let h = bh % params.q_heads;
    if head_kind[h] != KIND_BLOCK_SPARSE || c0 > m0 {
        return; // workgroup-uniform: the head is not block-sparse, or the tile has no c < m
    }
    let r = params.rows;
    let d = params.head_dim;
    let b = bh / params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    let q_at = bh * r * d;
    let k_at = (params.batch * params.q_heads + b * params.kv_heads + kvh) * r * d;
    // This invocation's outputs: rows m0 + 4 ty + i, columns c0 + 4 tx + j.
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < d; k0 += SCORE_K) {
        workgroupBarrier(); // the previous chunk is consumed
        load_chunk(q_at, k_at, m0, c0, k0, lid);
        workgroupBarrier();
        accumulate_chunk(&acc, tx, ty);
    }
    let head_at = bh * triangle_at(r);
    let m = m0 + 4u * ty;
    let c = c0 + 4u * tx;
    store_scores(head_at, m, c, acc[0]);
    store_scores(head_at, m + 1u, c, acc[1]);
    store_scores(head_at, m + 2u, c, acc[2]);
    store_scores(head_at, m + 3u, c, acc[3]);
}
