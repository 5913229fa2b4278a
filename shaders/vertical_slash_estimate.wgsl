// Vertical-slash estimate: scores of every key column and every diagonal offset from the
// last LAST_Q = min(64, N) queries of each vertical-slash head (src/index.rs
// `vertical_slash_scores`), with the forced entries (columns j < 30, offsets o < 100) at +inf.
//
// Two entry points per dtype, dispatched in order:
// - `vertical_slash_estimate_stats_*`: grid (LAST_Q, B * Hq), one workgroup per last query
//   row: the causal softmax's max and sum (base 2) over keys 0..=i, 64 invocations striding
//   over the keys, then a fixed-order tree.
// - `vertical_slash_estimate_*`: grid (cdiv(N, 64), B * Hq), one invocation per index x:
//   vertical[x] = sum_r P[r, x], slash[x] = sum_r P[r, i_r - x], rows in ascending order.

struct VerticalSlashEstimateParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    seq_len: u32,
    head_dim: u32,
    last_q: u32,
    scale_log2: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: VerticalSlashEstimateParams;
@group(0) @binding(4) var<storage, read> head_kind: array<u32>;           // [Hq]: 1 = vertical-slash
@group(0) @binding(5) var<storage, read_write> row_stats: array<vec2<f32>>; // [B, Hq, LAST_Q]: (max, sum)
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;         // [2, B, Hq, N]: vertical, slash

const LAST_Q: u32 = 64u;
const FORCED_COLUMNS: u32 = 30u;
const FORCED_OFFSETS: u32 = 100u;
const KIND_VERTICAL_SLASH: u32 = 1u;
/// Running max of an empty key set: finite (no infinities), below any base-2 score.
const STATS_MASKED: f32 = -1.0e30;

fn q_base(bh: u32, i: u32) -> u32 {
    return (bh * params.seq_len + i) * params.head_dim;
}

fn k_base(bh: u32, j: u32) -> u32 {
    let b = bh / params.q_heads;
    let kvh = (bh % params.q_heads) / (params.q_heads / params.kv_heads);
    return ((b * params.kv_heads + kvh) * params.seq_len + j) * params.head_dim;
}

/// scale * LOG2E * q_i . k_j
fn score(bh: u32, i: u32, j: u32) -> f32 {
    let qa = q_base(bh, i);
    let ka = k_base(bh, j);
    var qk = 0.0;
    for (var c = 0u; c < params.head_dim; c++) {
        qk += load_q(qa + c) * load_k(ka + c);
    }
    return qk * params.scale_log2;
}

/// Fold (m2, l2) into (m1, l1): the running max and sum of two disjoint key sets.
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp2_clamped(a.x - m) + b.y * exp2_clamped(b.x - m));
}

var<workgroup> partial: array<vec2<f32>, 64>;

fn stats(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let r = wid.x;
    if head_kind[bh % params.q_heads] != KIND_VERTICAL_SLASH || r >= params.last_q {
        return; // uniform: the whole workgroup leaves
    }
    let i = params.seq_len - params.last_q + r;
    // Invocation lid folds keys lid, lid + 64, ... <= i; empty invocations hold (MASKED, 0).
    var acc = vec2<f32>(STATS_MASKED, 0.0);
    for (var j = lid; j <= i; j += 64u) {
        acc = combine(acc, vec2<f32>(score(bh, i, j), 1.0));
    }
    partial[lid] = acc;
    workgroupBarrier();
    // Fixed-order tree: deterministic.
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] = combine(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        row_stats[bh * LAST_Q + r] = partial[0];
    }
}

fn estimate(wid: vec3<u32>, lid: u32) {
    let bh = wid.y;
    let n = params.seq_len;
    let x = wid.x * 64u + lid;
    if head_kind[bh % params.q_heads] != KIND_VERTICAL_SLASH || x >= n {
        return;
    }
    var vertical = 0.0;
    var slash = 0.0;
    for (var r = 0u; r < params.last_q; r++) {
        let i = n - params.last_q + r;
        let st = row_stats[bh * LAST_Q + r];
        if x <= i {
            if x >= FORCED_COLUMNS {
                vertical += exp2_clamped(score(bh, i, x) - st.x) / st.y;
            }
            if x >= FORCED_OFFSETS {
                slash += exp2_clamped(score(bh, i, i - x) - st.x) / st.y;
            }
        }
    }
    if x < FORCED_COLUMNS {
        vertical = positive_infinity();
    }
    if x < FORCED_OFFSETS {
        slash = positive_infinity();
    }
    let heads = params.batch * params.q_heads;
    scores[bh * n + x] = vertical;
    scores[(heads + bh) * n + x] = slash;
}

@compute @workgroup_size(64)
fn vertical_slash_estimate_stats_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    stats(wid, lid);
}

@compute @workgroup_size(64)
fn vertical_slash_estimate_stats_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    stats(wid, lid);
}

@compute @workgroup_size(64)
fn vertical_slash_estimate_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = false;
    estimate(wid, lid);
}

@compute @workgroup_size(64)
fn vertical_slash_estimate_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    storage_f16 = true;
    estimate(wid, lid);
}
