// Vertical-slash estimate: scores of every key column and every diagonal offset from the
// last LAST_Q = min(64, N) queries of each vertical-slash head (src/index.rs
// `vertical_slash_scores`), with the forced entries (columns j < 30, offsets o < 100) at +inf.
//
// S = Q_last K^T is computed in key tiles of BLOCK_N = 64 keys by workgroups of THREADS = 256
// invocations on a 16 x 16 grid (tx = lid % 16, ty = lid / 16): invocation (tx, ty) holds the
// 4 x 4 micro-tile S[4ty + r, 4tx + j] (rows are the last queries, columns the tile's keys),
// from Q and K chunks of QK_CHUNK = 32 dims staged in 16 KiB of workgroup memory (the
// portable WebGPU limit). Four entry points, dispatched in order:
// - `vertical_slash_estimate_stats_*`: grid (tiles, B * Hq): per (row, tile) the max and sum
//   of exp2 over the tile's visible keys (base 2);
// - `vertical_slash_estimate_combine`: grid (LAST_Q, B * Hq), 64 invocations per row folding
//   the row's tile partials (coalesced, online merge), then a fixed-order tree: the row's
//   causal softmax max and sum;
// - `vertical_slash_estimate_sums_*`: grid (tiles, B * Hq): the probabilities of the tile
//   (S recomputed) in workgroup memory, then one invocation per key sums its column over the
//   rows (vertical, complete) and one per local diagonal r - c sums it: the diagonals with
//   r >= c are complete offsets (written to the slash scores); those with r < c hold the low
//   rows of offsets whose high rows are in the next tile (written to `slash_lower`);
// - `vertical_slash_estimate_slash`: grid (cdiv(N, 256), B * Hq): slash = lower + upper part,
//   forced offsets. No atomics: every sum has a fixed order.
// Rows are ordered by query (ascending), so each sum adds rows in ascending order, as the
// reference does, up to the split of a diagonal in two.

struct VerticalSlashEstimateParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    last_q: u32,
    scale_log2: f32,
    tiles: u32, // cdiv(N, BLOCK_N)
}

@group(0) @binding(0) var<uniform> params: VerticalSlashEstimateParams;
@group(0) @binding(4) var<storage, read> head_kind: array<u32>;             // [Hq]: 1 = vertical-slash
@group(0) @binding(5) var<storage, read_write> tile_stats: array<vec2<f32>>; // [B, Hq, LAST_Q, tiles]: (max, sum)
@group(0) @binding(6) var<storage, read_write> row_stats: array<vec2<f32>>;  // [B, Hq, LAST_Q]: (max, sum)
@group(0) @binding(7) var<storage, read_write> scores: array<f32>;           // [2, B, Hq, N]: vertical, slash
@group(0) @binding(8) var<storage, read_write> slash_lower: array<f32>;      // [B, Hq, N]

const LAST_Q: u32 = 64u;
const BLOCK_N: u32 = 64u;
const THREADS: u32 = 256u;
const GRID: u32 = 16u;
/// vec4 columns of a staged Q or K chunk (QK_CHUNK = 32 dims).
const QK_CHUNK4: u32 = 8u;
/// vec4 slots of a staged Q or K chunk: LAST_Q (= BLOCK_N) rows of QK_CHUNK4.
const CHUNK_SLOTS: u32 = 512u;
/// vec4 slots of `stage`: 16 KiB.
const STAGE4: u32 = 1024u;
/// Combine: invocations per estimate row.
const COMBINE_THREADS: u32 = 64u;
/// Slash: offsets per workgroup.
const SLASH_THREADS: u32 = 256u;
const FORCED_COLUMNS: u32 = 30u;
const FORCED_OFFSETS: u32 = 100u;
const KIND_VERTICAL_SLASH: u32 = 1u;
/// Score of a masked entry and running max of an empty key set: finite (no infinities),
/// below any base-2 score.
const MASKED: f32 = -1.0e30;

// In turn: the Q chunk (slots [0, CHUNK_SLOTS)) and the K chunk (the rest), each
// [64 rows, QK_CHUNK4] swizzled (`qk_at`); the stats partials [16 (tx), 64 (row)]; the
// probability tile P [64 rows, BLOCK_N / 4]; the combine's partials (one per invocation).
var<workgroup> stage: array<vec4<f32>, STAGE4>;

var<private> lid: u32;
var<private> tx: u32;
var<private> ty: u32;
var<private> j0: u32;     // first key of the tile
var<private> q_base: u32; // element offset of query row n - last_q of this (b, h)
var<private> k_base: u32; // element offset of key 0 of this head's kv head
// Scores of the micro-tile: s[r][j] = S[4ty + r, 4tx + j] (base 2, pre-scaled).
var<private> s: array<vec4<f32>, 4>;

/// Fold (m2, l2) into (m1, l1): the running max and sum of two disjoint key sets.
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp2_clamped(a.x - m) + b.y * exp2_clamped(b.x - m));
}

fn is_vertical_slash(bh: u32) -> bool {
    return head_kind[bh % params.q_heads] == KIND_VERTICAL_SLASH;
}

/// Set up this invocation's place in the tile `tile` of (batch, head) `bh`.
fn start_tile(bh: u32, tile: u32, local: u32) {
    lid = local;
    tx = local % GRID;
    ty = local / GRID;
    j0 = tile * BLOCK_N;
    let n = params.seq_len;
    let d = params.head_dim;
    let b = bh / params.q_heads;
    let kvh = (bh % params.q_heads) / (params.q_heads / params.kv_heads);
    q_base = (bh * n + n - params.last_q) * d;
    k_base = (b * params.kv_heads + kvh) * n * d;
}

/// Slot of (row, vec4 column c) in a staged chunk: rows of QK_CHUNK4 vec4, columns
/// XOR-swizzled by row / 4 so the 8 rows 4tx read at once hit distinct banks.
fn qk_at(row: u32, c: u32) -> u32 {
    return row * QK_CHUNK4 + (c ^ ((row >> 2u) & 7u));
}

/// Stage dims [4 c0, 4 c0 + QK_CHUNK) of the last queries (pre-scaled; rows >= last_q are 0)
/// and of the tile's keys (keys >= N are 0), between two barriers.
fn load_qk_chunk(c0: u32) {
    workgroupBarrier(); // the previous users of `stage` are done
    for (var e = 0u; e < CHUNK_SLOTS / THREADS; e++) {
        let i = lid + e * THREADS;
        let row = i / QK_CHUNK4;
        let c = i % QK_CHUNK4;
        var q4 = vec4<f32>(0.0);
        if row < params.last_q {
            q4 = load_q4(q_base + row * params.head_dim + 4u * (c0 + c)) * params.scale_log2;
        }
        var k4 = vec4<f32>(0.0);
        if j0 + row < params.seq_len {
            k4 = load_k4(k_base + (j0 + row) * params.head_dim + 4u * (c0 + c));
        }
        stage[qk_at(row, c)] = q4;
        stage[CHUNK_SLOTS + qk_at(row, c)] = k4;
    }
    workgroupBarrier();
}

/// s = Q_last K^T for the micro-tile, over D in chunks of QK_CHUNK.
fn scores_tile() {
    s[0] = vec4<f32>(0.0);
    s[1] = vec4<f32>(0.0);
    s[2] = vec4<f32>(0.0);
    s[3] = vec4<f32>(0.0);
    for (var c0 = 0u; c0 < params.head_dim / 4u; c0 += QK_CHUNK4) {
        load_qk_chunk(c0);
        for (var c = 0u; c < QK_CHUNK4; c++) {
            // Column j of k4 is key 4tx + j: q * k4 = (q . k_0, .., q . k_3).
            let k4 = mat4x4<f32>(
                stage[CHUNK_SLOTS + qk_at(4u * tx, c)],
                stage[CHUNK_SLOTS + qk_at(4u * tx + 1u, c)],
                stage[CHUNK_SLOTS + qk_at(4u * tx + 2u, c)],
                stage[CHUNK_SLOTS + qk_at(4u * tx + 3u, c)],
            );
            s[0] += stage[qk_at(4u * ty, c)] * k4;
            s[1] += stage[qk_at(4u * ty + 1u, c)] * k4;
            s[2] += stage[qk_at(4u * ty + 2u, c)] * k4;
            s[3] += stage[qk_at(4u * ty + 3u, c)] * k4;
        }
    }
}

/// Which keys of the micro-tile row r (0..4) sees: (row 4ty + r, key j) counts iff the row
/// is one of the last_q, j < N and j <= i = n - last_q + row.
fn visible(r: u32) -> vec4<bool> {
    let row = 4u * ty + r;
    let i = params.seq_len - params.last_q + row;
    let j = vec4<u32>(j0 + 4u * tx) + vec4<u32>(0u, 1u, 2u, 3u);
    return (j <= vec4<u32>(i)) & vec4<bool>(row < params.last_q);
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

fn exp2_clamped4(x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp2(max(x, vec4<f32>(-120.0))), x > vec4<f32>(-120.0));
}

/// (max, sum of exp2) of micro-tile row r (scores x) over its visible keys; (MASKED, 0) if
/// none.
fn micro_row_stats(x: vec4<f32>, r: u32) -> vec2<f32> {
    let v = visible(r);
    let xv = select(vec4<f32>(MASKED), x, v);
    let m = max4(xv);
    let p = select(vec4<f32>(0.0), exp2_clamped4(xv - vec4<f32>(m)), v);
    return vec2<f32>(m, dot(p, vec4<f32>(1.0)));
}

fn tile_stats_pass(bh: u32, tile: u32) {
    scores_tile();
    // The 16 partials of each row (one per tx) to `stage` [tx, row], then one invocation per
    // row folds them in tx order.
    let at = tx * LAST_Q + 4u * ty;
    let st0 = micro_row_stats(s[0], 0u);
    let st1 = micro_row_stats(s[1], 1u);
    let st2 = micro_row_stats(s[2], 2u);
    let st3 = micro_row_stats(s[3], 3u);
    workgroupBarrier(); // the scores are done with `stage`
    stage[at] = vec4<f32>(st0, 0.0, 0.0);
    stage[at + 1u] = vec4<f32>(st1, 0.0, 0.0);
    stage[at + 2u] = vec4<f32>(st2, 0.0, 0.0);
    stage[at + 3u] = vec4<f32>(st3, 0.0, 0.0);
    workgroupBarrier();
    if lid < LAST_Q {
        var acc = vec2<f32>(MASKED, 0.0);
        for (var t = 0u; t < GRID; t++) {
            acc = combine(acc, stage[t * LAST_Q + lid].xy);
        }
        tile_stats[(bh * LAST_Q + lid) * params.tiles + tile] = acc;
    }
}

fn combine_rows(wid: vec3<u32>, local: u32) {
    let bh = wid.y;
    let r = wid.x;
    if !is_vertical_slash(bh) || r >= params.last_q {
        return; // uniform: the whole workgroup leaves
    }
    // Invocation `local` folds tiles local, local + 64, ... (consecutive invocations read
    // consecutive tiles); empty invocations hold (MASKED, 0).
    let at = (bh * LAST_Q + r) * params.tiles;
    var acc = vec2<f32>(MASKED, 0.0);
    for (var t = local; t < params.tiles; t += COMBINE_THREADS) {
        acc = combine(acc, tile_stats[at + t]);
    }
    stage[local] = vec4<f32>(acc, 0.0, 0.0);
    workgroupBarrier();
    // Fixed-order tree: deterministic.
    for (var stride = COMBINE_THREADS / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            stage[local] = vec4<f32>(combine(stage[local].xy, stage[local + stride].xy), 0.0, 0.0);
        }
        workgroupBarrier();
    }
    if local == 0u {
        row_stats[bh * LAST_Q + r] = stage[0].xy;
    }
}

/// P[row, key] of the tile in `stage` (row-major, BLOCK_N / 4 vec4 per row).
fn p_at(row: u32, key: u32) -> f32 {
    return stage[row * (BLOCK_N / 4u) + key / 4u][key % 4u];
}

/// P of micro-tile row r (scores x): 2^(x - row max) / row sum on visible keys, else 0.
fn probabilities(bh: u32, x: vec4<f32>, r: u32) -> vec4<f32> {
    let row = 4u * ty + r;
    var st = vec2<f32>(0.0, 1.0);
    if row < params.last_q {
        st = row_stats[bh * LAST_Q + row];
    }
    return select(vec4<f32>(0.0), exp2_clamped4(x - vec4<f32>(st.x)) / st.y, visible(r));
}

fn sums_pass(bh: u32, tile: u32) {
    scores_tile();
    let p0 = probabilities(bh, s[0], 0u);
    let p1 = probabilities(bh, s[1], 1u);
    let p2 = probabilities(bh, s[2], 2u);
    let p3 = probabilities(bh, s[3], 3u);
    workgroupBarrier(); // the scores are done with `stage`
    let at = 4u * ty * (BLOCK_N / 4u) + tx;
    stage[at] = p0;
    stage[at + BLOCK_N / 4u] = p1;
    stage[at + 2u * (BLOCK_N / 4u)] = p2;
    stage[at + 3u * (BLOCK_N / 4u)] = p3;
    workgroupBarrier();
    let n = params.seq_len;
    if lid < BLOCK_N {
        // Column sum of key j0 + lid over the rows.
        let j = j0 + lid;
        var vertical = 0.0;
        for (var row = 0u; row < LAST_Q; row++) {
            vertical += p_at(row, lid);
        }
        if j < n {
            scores[bh * n + j] = select(vertical, positive_infinity(), j < FORCED_COLUMNS);
        }
    } else if lid < BLOCK_N + LAST_Q + BLOCK_N - 1u {
        // Local diagonal delta = row - key (-63..63): offset o = n - last_q - j0 + delta.
        let delta = i32(lid - BLOCK_N) - i32(BLOCK_N - 1u);
        var sum = 0.0;
        for (var row = u32(max(delta, 0)); row < min(LAST_Q, u32(i32(BLOCK_N) + delta)); row++) {
            sum += p_at(row, u32(i32(row) - delta));
        }
        let o = i32(n - params.last_q) - i32(j0) + delta;
        if o >= 0 && o < i32(n) {
            if delta >= 0 {
                let heads = params.batch * params.q_heads;
                scores[(heads + bh) * n + u32(o)] = sum;
            } else {
                slash_lower[bh * n + u32(o)] = sum;
            }
        }
    }
}

fn finish_slash(wid: vec3<u32>, local: u32) {
    let bh = wid.y;
    let n = params.seq_len;
    let o = wid.x * SLASH_THREADS + local;
    if !is_vertical_slash(bh) || o >= n {
        return;
    }
    let at = (params.batch * params.q_heads + bh) * n + o;
    if o < FORCED_OFFSETS {
        scores[at] = positive_infinity();
        return;
    }
    // The low rows of offset o sit in tile u / 64 as local diagonal -(u % 64), where
    // u = n - last_q - o; none when u % 64 == 0 (the whole diagonal is in one tile) or u <= 0.
    let u = i32(n - params.last_q) - i32(o);
    if u > 0 && (u % i32(BLOCK_N)) != 0 {
        scores[at] = slash_lower[bh * n + o] + scores[at];
    }
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_stats_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    storage_f16 = false;
    start_tile(wid.y, wid.x, local);
    tile_stats_pass(wid.y, wid.x);
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_stats_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    storage_f16 = true;
    start_tile(wid.y, wid.x, local);
    tile_stats_pass(wid.y, wid.x);
}

@compute @workgroup_size(64)
fn vertical_slash_estimate_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    combine_rows(wid, local);
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_sums_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    storage_f16 = false;
    start_tile(wid.y, wid.x, local);
    sums_pass(wid.y, wid.x);
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_sums_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    storage_f16 = true;
    start_tile(wid.y, wid.x, local);
    sums_pass(wid.y, wid.x);
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_slash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    finish_slash(wid, local);
}
