// The tiled FlashAttention core shared by the `_tiled` dense, A-shape and sparse kernels.
//
// One workgroup of THREADS = 256 invocations owns BLOCK_M = 64 query rows of one (batch,
// query head) and visits keys in tiles of BLOCK_N = 64. The invocations form a 16 x 16 grid
// (tx = lid % 16, ty = lid / 16):
// - scores: invocation (tx, ty) computes the 4 x 4 micro-tile S[4ty + r, 4tx + j] from Q and
//   K chunks of QK_CHUNK = 64 dims staged in workgroup memory (vec4 loads along D, swizzled);
// - online softmax: the row max goes through workgroup memory (each invocation writes its
//   4 partial maxima, every invocation of the row group reads the 16 partials), so all 16
//   invocations of a row group hold the same running max m; each keeps its own partial row
//   sum l (over its keys, rescaled alike, summed once at the end) and writes its P
//   micro-tile to `p_tile`;
// - P.V: invocation (tx, ty) accumulates O[4ty + r, 4(tx + 16g) .. + 4] (g < D / 64) from
//   `p_tile` and V chunks of STAGE4 / (D / 4) keys staged in workgroup memory.
// Workgroup memory, 32 KiB (lavapipe's limit): `stage` (16 KiB: the K chunk, the row
// partials, the V chunk in turn) and `p_tile` (16 KiB: the Q chunk during the scores, then P).
// Barriers per tile: 2 per Q/K chunk, 2 for the row max, 2 per V chunk; 10 for D = 128, 6 for
// D = 64. The global loads of the next chunk are issued into registers before the current
// chunk is computed (`fetch_*`, then `put_*` after the next barrier), so only the first
// chunk of a tile waits for memory.
// Every loop that holds a barrier has a workgroup-uniform trip count (params, the tile
// bounds, index entries read at the workgroup's own index row); invalid rows and keys are
// masked, never skipped, so every invocation reaches every barrier (an earlier lavapipe
// failure with barriers in the key loop is described in attention_core.wgsl).
// Which keys a tile holds is the caller's policy (`tile_key`): a contiguous range
// (`visit_range`) or a list of columns (`visit_columns`). Masking as in the rowwise core:
// key `j` is visible to row `i` iff `j <= i` and (`j < window_sink` or `i - j < window_local`).

// AttentionParams, `params` and `out`: attention_common.wgsl.

const BLOCK_M: u32 = 64u;
const BLOCK_N: u32 = 64u;
/// Invocations per workgroup: a 16 x 16 grid of 4 x 4 score micro-tiles.
const THREADS: u32 = 256u;
const GRID: u32 = 16u;
/// vec4 columns of a staged Q or K chunk (QK_CHUNK = 64 dims).
const QK_CHUNK4: u32 = 16u;
/// vec4 elements each invocation moves per staged chunk (STAGE4 / THREADS).
const PER_THREAD4: u32 = 4u;
/// vec4 slots of `stage`: 16 KiB.
const STAGE4: u32 = 1024u;
/// Start of the running max: finite, far below any base-2 score (exp2_clamped(MASKED - x) == 0).
const MASKED: f32 = -1.0e30;

// In turn: K chunk [BLOCK_N, QK_CHUNK4] (swizzled, see `qk_at`); row partials [16 (ty), 16 (tx)]
// of vec4 (one component per row of the micro-tile); V chunk [STAGE4 / (D / 4) keys, D / 4].
var<workgroup> stage: array<vec4<f32>, STAGE4>;
// In turn: Q chunk [BLOCK_M, QK_CHUNK4] (swizzled, pre-scaled); P [BLOCK_M, BLOCK_N / 4].
var<workgroup> p_tile: array<vec4<f32>, STAGE4>;

var<private> lid: u32;
var<private> tx: u32;
var<private> ty: u32;
var<private> row0: u32;       // first query row of the workgroup
var<private> q_base: u32;     // element offset of row 0 of this (b, h) in q and out
var<private> kv_base: u32;    // element offset of key 0 of this head's kv head
var<private> head_dim4: u32;  // D / 4
var<private> head_dim4_log2: u32;
var<private> wide: bool;      // D == 128: two output vec4 columns per invocation, else one
var<private> window_sink: u32;
var<private> window_local: u32;
// Scores of the micro-tile: s[r][j] = S[4ty + r, 4tx + j] (base 2, pre-scaled).
var<private> s: array<vec4<f32>, 4>;
// Running max and this invocation's partial running sum, component r = row 4ty + r.
var<private> m_i: vec4<f32>;
var<private> l_i: vec4<f32>;
// Unnormalised output: acc[2r + g] = O[4ty + r, 4(tx + 16g) .. + 4].
var<private> acc: array<vec4<f32>, 8>;
// The next chunk's elements, fetched from storage ahead of their barrier: slot t holds
// element lid + THREADS t of the chunk (Q or V in fetched_a, K in fetched_b).
var<private> fetched_a: array<vec4<f32>, PER_THREAD4>;
var<private> fetched_b: array<vec4<f32>, PER_THREAD4>;
// The current tile (tile_base, tile_hi, tile_columns) and visit_range: attention_common.wgsl.

/// Set up this invocation's place in the workgroup and clear the softmax state.
fn start_row_block(bh: u32, block: u32, local: u32) {
    let n = params.seq_len;
    let d = params.head_dim;
    lid = local;
    tx = local % GRID;
    ty = local / GRID;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    kv_base = (b * params.kv_heads + kvh) * n * d;
    q_base = bh * n * d;
    head_dim4 = d / 4u;
    head_dim4_log2 = firstTrailingBit(head_dim4); // D is 64 or 128
    wide = d > 64u;
    row0 = block * BLOCK_M;
    m_i = vec4<f32>(MASKED);
    l_i = vec4<f32>(0.0);
    acc = array<vec4<f32>, 8>();
    window_sink = n;
    window_local = n + 1u;
}

/// Slot of (row, vec4 column c) in a staged Q or K chunk: rows of QK_CHUNK4 vec4, columns
/// XOR-swizzled by row / 4 so the 8 rows 4tx (or 4ty) read at once hit distinct banks.
fn qk_at(row: u32, c: u32) -> u32 {
    return row * QK_CHUNK4 + (c ^ ((row >> 2u) & 7u));
}

// The private arrays below are only indexed by constants (unrolled by hand), so drivers
// keep them in registers.

/// Fetch dims [4 c0, 4 c0 + QK_CHUNK) of the block's Q rows (pre-scaled; rows past N repeat
/// row N - 1) and of the tile's K rows (missing keys are 0) into registers.
fn fetch_qk(c0: u32) {
    fetched_a[0] = fetch_q(c0, lid);
    fetched_b[0] = fetch_k(c0, lid);
    fetched_a[1] = fetch_q(c0, lid + THREADS);
    fetched_b[1] = fetch_k(c0, lid + THREADS);
    fetched_a[2] = fetch_q(c0, lid + 2u * THREADS);
    fetched_b[2] = fetch_k(c0, lid + 2u * THREADS);
    fetched_a[3] = fetch_q(c0, lid + 3u * THREADS);
    fetched_b[3] = fetch_k(c0, lid + 3u * THREADS);
}

/// Element i of the Q chunk at c0: row i / QK_CHUNK4, vec4 column c0 + i % QK_CHUNK4.
fn fetch_q(c0: u32, i: u32) -> vec4<f32> {
    let row = min(row0 + i / QK_CHUNK4, params.seq_len - 1u);
    return load_q4(q_base + row * params.head_dim + 4u * (c0 + i % QK_CHUNK4)) * params.scale_log2;
}

/// Element i of the K chunk at c0: tile slot i / QK_CHUNK4, vec4 column c0 + i % QK_CHUNK4.
fn fetch_k(c0: u32, i: u32) -> vec4<f32> {
    let key = tile_key(i / QK_CHUNK4);
    if key < 0 {
        return vec4<f32>(0.0);
    }
    return load_k4(kv_base + u32(key) * params.head_dim + 4u * (c0 + i % QK_CHUNK4));
}

/// Store the fetched Q chunk to `p_tile` and K chunk to `stage`, between two barriers.
fn put_qk() {
    workgroupBarrier(); // the previous users of `stage` and `p_tile` are done
    put_qk_element(lid, fetched_a[0], fetched_b[0]);
    put_qk_element(lid + THREADS, fetched_a[1], fetched_b[1]);
    put_qk_element(lid + 2u * THREADS, fetched_a[2], fetched_b[2]);
    put_qk_element(lid + 3u * THREADS, fetched_a[3], fetched_b[3]);
    workgroupBarrier();
}

fn put_qk_element(i: u32, q4: vec4<f32>, k4: vec4<f32>) {
    let at = qk_at(i / QK_CHUNK4, i % QK_CHUNK4);
    p_tile[at] = q4;
    stage[at] = k4;
}

/// Fetch the V rows of tile slots [k0, k0 + STAGE4 / (D / 4)) into registers (missing keys 0).
fn fetch_v(k0: u32) {
    fetched_a[0] = fetch_v_element(k0, lid);
    fetched_a[1] = fetch_v_element(k0, lid + THREADS);
    fetched_a[2] = fetch_v_element(k0, lid + 2u * THREADS);
    fetched_a[3] = fetch_v_element(k0, lid + 3u * THREADS);
}

/// Element i of the V chunk at k0: tile slot k0 + i / (D / 4), vec4 column i % (D / 4).
fn fetch_v_element(k0: u32, i: u32) -> vec4<f32> {
    let key = tile_key(k0 + (i >> head_dim4_log2));
    if key < 0 {
        return vec4<f32>(0.0);
    }
    return load_v4(kv_base + u32(key) * params.head_dim + 4u * (i & (head_dim4 - 1u)));
}

/// Store the fetched V chunk to `stage`, between two barriers.
fn put_v() {
    workgroupBarrier(); // the previous users of `stage` are done
    stage[lid] = fetched_a[0];
    stage[lid + THREADS] = fetched_a[1];
    stage[lid + 2u * THREADS] = fetched_a[2];
    stage[lid + 3u * THREADS] = fetched_a[3];
    workgroupBarrier();
}

/// s = Q K^T for the micro-tile, over D in chunks of QK_CHUNK; ends with the first V
/// chunk fetched.
fn scores() {
    s[0] = vec4<f32>(0.0);
    s[1] = vec4<f32>(0.0);
    s[2] = vec4<f32>(0.0);
    s[3] = vec4<f32>(0.0);
    fetch_qk(0u);
    for (var c0 = 0u; c0 < head_dim4; c0 += QK_CHUNK4) {
        put_qk();
        if c0 + QK_CHUNK4 < head_dim4 {
            fetch_qk(c0 + QK_CHUNK4);
        } else {
            fetch_v(0u);
        }
        for (var c = 0u; c < QK_CHUNK4; c++) {
            // Column j of k4 is key 4tx + j: q * k4 = (q . k_0, .., q . k_3).
            let k4 = mat4x4<f32>(
                stage[qk_at(4u * tx, c)],
                stage[qk_at(4u * tx + 1u, c)],
                stage[qk_at(4u * tx + 2u, c)],
                stage[qk_at(4u * tx + 3u, c)],
            );
            s[0] += p_tile[qk_at(4u * ty, c)] * k4;
            s[1] += p_tile[qk_at(4u * ty + 1u, c)] * k4;
            s[2] += p_tile[qk_at(4u * ty + 2u, c)] * k4;
            s[3] += p_tile[qk_at(4u * ty + 3u, c)] * k4;
        }
    }
}

/// Scores of keys their row may not see (or of rows past N) become MASKED.
fn apply_mask() {
    let keys = vec4<i32>(tile_key(4u * tx), tile_key(4u * tx + 1u), tile_key(4u * tx + 2u), tile_key(4u * tx + 3u));
    let present = keys >= vec4<i32>(0);
    let j = vec4<u32>(max(keys, vec4<i32>(0)));
    let row = row0 + 4u * ty;
    s[0] = select(vec4<f32>(MASKED), s[0], present & visible(row, j));
    s[1] = select(vec4<f32>(MASKED), s[1], present & visible(row + 1u, j));
    s[2] = select(vec4<f32>(MASKED), s[2], present & visible(row + 2u, j));
    s[3] = select(vec4<f32>(MASKED), s[3], present & visible(row + 3u, j));
}

/// Which of keys j row `row` sees (the rule at the top; rows past N see none).
fn visible(row: u32, j: vec4<u32>) -> vec4<bool> {
    let i = vec4<u32>(row);
    let in_window = (j < vec4<u32>(window_sink)) | (i - j < vec4<u32>(window_local));
    return (j <= i) & in_window & vec4<bool>(row < params.seq_len);
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

fn exp2_clamped4(x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp2(max(x, vec4<f32>(-120.0))), x > vec4<f32>(-120.0));
}

/// Max over the 16 invocations of this row group of `x` (one component per row).
/// Starts and ends with a barrier: `stage` is free before and after.
fn row_group_max(x: vec4<f32>) -> vec4<f32> {
    workgroupBarrier();
    stage[ty * GRID + tx] = x;
    workgroupBarrier();
    var m = vec4<f32>(MASKED);
    for (var t = 0u; t < GRID; t++) {
        m = max(m, stage[ty * GRID + t]);
    }
    return m;
}

/// P of micro-tile row r (masked scores give 0, also when the whole row is masked).
fn probabilities(x: vec4<f32>, m: f32) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp2_clamped4(x - vec4<f32>(m)), x > vec4<f32>(MASKED));
}

/// Online softmax: new running max, rescale of l and acc, P of the micro-tile to `p_tile`.
/// No infinities are used (drivers may compile with fast math): masked keys score the
/// finite MASKED, which is also where the running max starts; a fully masked tile leaves
/// m, l and acc unchanged (correction 1, every p 0).
fn online_softmax() {
    let tile_max = row_group_max(vec4<f32>(max4(s[0]), max4(s[1]), max4(s[2]), max4(s[3])));
    let m_new = max(m_i, tile_max);
    let correction = exp2_clamped4(m_i - m_new);
    m_i = m_new;
    let p0 = probabilities(s[0], m_new.x);
    let p1 = probabilities(s[1], m_new.y);
    let p2 = probabilities(s[2], m_new.z);
    let p3 = probabilities(s[3], m_new.w);
    let one = vec4<f32>(1.0);
    l_i = l_i * correction + vec4<f32>(dot(p0, one), dot(p1, one), dot(p2, one), dot(p3, one));
    p_tile[(4u * ty) * (BLOCK_N / 4u) + tx] = p0;
    p_tile[(4u * ty + 1u) * (BLOCK_N / 4u) + tx] = p1;
    p_tile[(4u * ty + 2u) * (BLOCK_N / 4u) + tx] = p2;
    p_tile[(4u * ty + 3u) * (BLOCK_N / 4u) + tx] = p3;
    acc[0] *= correction.x;
    acc[1] *= correction.x;
    acc[2] *= correction.y;
    acc[3] *= correction.y;
    acc[4] *= correction.z;
    acc[5] *= correction.z;
    acc[6] *= correction.w;
    acc[7] *= correction.w;
}

/// acc += P V over the tile, V staged in chunks of STAGE4 / (D / 4) keys (the first one
/// fetched by `scores`).
fn accumulate_pv() {
    let keys = STAGE4 >> head_dim4_log2;
    for (var k0 = 0u; k0 < BLOCK_N; k0 += keys) {
        put_v();
        if k0 + keys < BLOCK_N {
            fetch_v(k0 + keys);
        }
        if wide {
            for (var kk = 0u; kk < keys; kk += 4u) {
                let p4 = p_block(k0 + kk);
                add_columns_lo(v_block(kk, tx) * p4);
                add_columns_hi(v_block(kk, tx + GRID) * p4);
            }
        } else {
            for (var kk = 0u; kk < keys; kk += 4u) {
                add_columns_lo(v_block(kk, tx) * p_block(k0 + kk));
            }
        }
    }
}

/// Column r: P[4ty + r, key .. key + 4] (key a multiple of 4).
fn p_block(key: u32) -> mat4x4<f32> {
    let at = (4u * ty) * (BLOCK_N / 4u) + key / 4u;
    return mat4x4<f32>(
        p_tile[at],
        p_tile[at + BLOCK_N / 4u],
        p_tile[at + 2u * (BLOCK_N / 4u)],
        p_tile[at + 3u * (BLOCK_N / 4u)],
    );
}

/// Column e: the staged V row kk + e, vec4 column `col`. So (v_block * p_block) column r is
/// sum_e P[4ty + r, key + e] V[key + e, 4 col .. + 4].
fn v_block(kk: u32, col: u32) -> mat4x4<f32> {
    let at = kk * head_dim4 + col;
    return mat4x4<f32>(
        stage[at],
        stage[at + head_dim4],
        stage[at + 2u * head_dim4],
        stage[at + 3u * head_dim4],
    );
}

/// acc[2r] += o[r]: output columns 4tx .. + 4 of the 4 rows.
fn add_columns_lo(o: mat4x4<f32>) {
    acc[0] += o[0];
    acc[2] += o[1];
    acc[4] += o[2];
    acc[6] += o[3];
}

/// acc[2r + 1] += o[r]: output columns 4(tx + 16) .. + 4 of the 4 rows (D = 128).
fn add_columns_hi(o: mat4x4<f32>) {
    acc[1] += o[0];
    acc[3] += o[1];
    acc[5] += o[2];
    acc[7] += o[3];
}

/// One tile: scores, mask, online softmax, P V.
fn attend_tile() {
    scores();
    apply_mask();
    online_softmax();
    accumulate_pv();
}

/// Write the normalised output of the micro-tile's rows (f32 words or packed f16 pairs).
/// The row sums are the sums of the 16 partials of the row group.
fn store_o(bh: u32) {
    workgroupBarrier();
    stage[ty * GRID + tx] = l_i;
    workgroupBarrier();
    var l = vec4<f32>(0.0);
    for (var t = 0u; t < GRID; t++) {
        l += stage[ty * GRID + t];
    }
    let inv = select(vec4<f32>(0.0), vec4<f32>(1.0) / max(l, vec4<f32>(1.0e-30)), l > vec4<f32>(0.0));
    let row = row0 + 4u * ty;
    store_row(row, acc[0] * inv.x, acc[1] * inv.x);
    store_row(row + 1u, acc[2] * inv.y, acc[3] * inv.y);
    store_row(row + 2u, acc[4] * inv.z, acc[5] * inv.z);
    store_row(row + 3u, acc[6] * inv.w, acc[7] * inv.w);
}

/// Columns 4tx .. + 4 (o0) and, for D = 128, 4(tx + 16) .. + 4 (o1) of output row `row`.
fn store_row(row: u32, o0: vec4<f32>, o1: vec4<f32>) {
    if row >= params.seq_len {
        return;
    }
    let base = q_base + row * params.head_dim;
    store4(base + 4u * tx, o0);
    if wide {
        store4(base + 4u * (tx + GRID), o1);
    }
}

fn store4(at: u32, o: vec4<f32>) {
    if storage_f16 {
        let w = at >> 1u;
        out[w] = pack2x16float(o.xy);
        out[w + 1u] = pack2x16float(o.zw);
    } else {
        out[at] = bitcast<u32>(o.x);
        out[at + 1u] = bitcast<u32>(o.y);
        out[at + 2u] = bitcast<u32>(o.z);
        out[at + 3u] = bitcast<u32>(o.w);
    }
}
