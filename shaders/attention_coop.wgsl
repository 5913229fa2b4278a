// The FlashAttention core of the cooperative-matrix variant (dense, A-shape and sparse).
// This file comes first in each coop module: it carries the module's `enable` directives.
//
// One workgroup owns BLOCK_M = 32 query rows of one (batch, query head): 64 invocations,
// one or more subgroups. Q.K^T and P.V run on 16x16x16 cooperative matrices (f16 inputs,
// f32 accumulation); the 16-row slices of the tile are dealt out to the subgroups
// (`slice = subgroup_id; slice += num_subgroups`), so any subgroup size of 16..64 is correct.
// Per key tile of BLOCK_N = 32 keys:
//   barrier, load_kv_tile (K and V rows as f16), barrier,
//   scores (S = Q.K^T per 16x16 block, coopStore to s_tile), barrier,
//   online_softmax (invocation (r, key_half): mask, running max/sum of row r, P of its half of
//     the keys as f16, its half of O's row r rescaled by the correction), barrier,
//   accumulate_pv (O = coopLoad(o_tile) + P.V, coopStore back to o_tile).
// O lives in workgroup memory as f32, so the per-row rescale is plain element-wise code and
// the matrix units accumulate straight onto it (no P.V scratch, no register O).
// Workgroup memory (D = 128): q 8 KiB + k 8 KiB + v 8 KiB + o 16 KiB + s 4 KiB + p 2 KiB
// + zeros 1 KiB = 48128 bytes (`COOP_WORKGROUP_BYTES` in Rust), under the 48 KiB Vulkan gives on NVIDIA;
// this is why BLOCK_M is 32 here (64 rows would need 32 KiB for O alone).
// Uniformity: coop ops must run in subgroup-uniform control flow and barriers in workgroup-
// uniform control flow. WGSL's analysis treats every builtin (subgroup_id) and every storage
// read (block_count, ...) as non-uniform, so it is turned off below; the loops are uniform by
// construction: slice loops depend only on subgroup_id/num_subgroups, every other loop bound
// and branch depends only on params, workgroup_id and index words read at the same address
// by all invocations.
// Known wgpu caveat (gfx-rs/wgpu#8805): modules with cooperative matrices are emitted under
// the Vulkan memory model without NonPrivatePointer/MakeAvailable/MakeVisible semantics, so the
// workgroup-memory hand-offs across workgroupBarrier are formally private accesses; drivers
// treat them as under GLSL450 in practice. Wrong results that look like stale tiles on a GPU
// point there first.
enable f16;
enable wgpu_cooperative_matrix;
diagnostic(off, derivative_uniformity);

// AttentionParams, `params` and `out`: attention_common.wgsl.

/// Query rows per workgroup.
const BLOCK_M: u32 = 32u;
/// Keys per tile.
const BLOCK_N: u32 = 32u;
/// Side of a cooperative matrix.
const TILE: u32 = 16u;
const ROW_SLICES: u32 = BLOCK_M / TILE;
const KEY_SLICES: u32 = BLOCK_N / TILE;
const WORKGROUP_SIZE: u32 = 64u;
/// Invocations per query row in the softmax and the output store.
const HALVES: u32 = WORKGROUP_SIZE / BLOCK_M;
/// Start of the running max: finite, far below any base-2 score.
const MASKED: f32 = -1.0e30;
const_assert KEY_SLICES == 2u;
const_assert HALVES == 2u;

var<workgroup> q_tile: array<f16, BLOCK_M * MAX_HEAD_DIM>; // [BLOCK_M, D] row-major
var<workgroup> k_tile: array<f16, BLOCK_N * MAX_HEAD_DIM>; // [BLOCK_N, D] row-major
var<workgroup> v_tile: array<f16, BLOCK_N * MAX_HEAD_DIM>; // [BLOCK_N, D] row-major
var<workgroup> o_tile: array<f32, BLOCK_M * MAX_HEAD_DIM>; // [BLOCK_M, D] unnormalised O
var<workgroup> s_tile: array<f32, BLOCK_M * BLOCK_N>;      // [BLOCK_M, BLOCK_N] raw scores
var<workgroup> p_tile: array<f16, BLOCK_M * BLOCK_N>;      // [BLOCK_M, BLOCK_N] probabilities
// [TILE, TILE] zeros: the scores' accumulators start from a load of it (a plain load, rather
// than the zero-value constructor's OpConstantNull of a cooperative-matrix type).
var<workgroup> zero_tile: array<f32, TILE * TILE>;

var<private> lid: u32;
var<private> slice0: u32;      // this subgroup's first row slice
var<private> slice_step: u32;  // number of subgroups
var<private> bh: u32;          // batch * Hq + head
var<private> row0: u32;        // first query row of the workgroup
var<private> local_row: u32;   // this invocation's row in the tile (softmax, store)
var<private> key_half: u32;        // which half of the keys / of D this invocation handles
var<private> row: u32;         // row0 + local_row
var<private> row_valid: bool;  // row < N
var<private> m_i: f32;         // running max of row `row` (both halves keep identical copies)
var<private> l_i: f32;         // running sum of row `row`
var<private> kv_base: u32;     // element offset of key 0 of this head's kv head
var<private> window_sink: u32;
var<private> window_local: u32;
// The current tile (tile_base, tile_hi, tile_columns) and visit_range: attention_common.wgsl.

/// The two f16 elements of a packed word, element 2w (the low half) first; exact (f16 -> f32
/// -> f16). naga has no width-changing bitcast to vec2<f16>.
fn f16_pair(word: u32) -> vec2<f16> {
    return vec2<f16>(unpack2x16float(word));
}

/// Set up the workgroup: stage Q rows [row0, row0 + BLOCK_M) as f16 (zero past N), clear O.
fn load_q_tile(wid: vec3<u32>, local: u32, sg: u32, nsg: u32) {
    lid = local;
    slice0 = sg;
    slice_step = max(nsg, 1u);
    bh = wid.y;
    row0 = wid.x * BLOCK_M;
    local_row = local % BLOCK_M;
    key_half = local / BLOCK_M;
    let n = params.seq_len;
    let d = params.head_dim;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    kv_base = (b * params.kv_heads + kvh) * n * d;
    row = row0 + local_row;
    row_valid = row < n;
    m_i = MASKED;
    l_i = 0.0;
    window_sink = n;
    window_local = n + 1u;
    let half_d = d / 2u;
    for (var w = lid; w < BLOCK_M * half_d; w += WORKGROUP_SIZE) {
        let r = w / half_d;
        let c = 2u * (w % half_d);
        var pair = vec2<f16>(0.0h);
        if row0 + r < n {
            pair = f16_pair(q[((bh * n + row0 + r) * d + c) >> 1u]);
        }
        q_tile[r * d + c] = pair.x;
        q_tile[r * d + c + 1u] = pair.y;
    }
    for (var i = lid; i < BLOCK_M * d; i += WORKGROUP_SIZE) {
        o_tile[i] = 0.0;
    }
    for (var i = lid; i < TILE * TILE; i += WORKGROUP_SIZE) {
        zero_tile[i] = 0.0;
    }
}

fn visible(key: i32) -> bool {
    if key < 0 || !row_valid {
        return false;
    }
    let j = u32(key);
    return j <= row && (j < window_sink || row - j < window_local);
}

/// Stage the tile's K and V rows as f16; slots without a key are zero.
fn load_kv_tile() {
    let d = params.head_dim;
    let half_d = d / 2u;
    for (var w = lid; w < BLOCK_N * half_d; w += WORKGROUP_SIZE) {
        let s = w / half_d;
        let c = 2u * (w % half_d);
        let key = tile_key(s);
        var kp = vec2<f16>(0.0h);
        var vp = vec2<f16>(0.0h);
        if key >= 0 {
            let at = (kv_base + u32(key) * d + c) >> 1u;
            kp = f16_pair(k[at]);
            vp = f16_pair(v[at]);
        }
        k_tile[s * d + c] = kp.x;
        k_tile[s * d + c + 1u] = kp.y;
        v_tile[s * d + c] = vp.x;
        v_tile[s * d + c + 1u] = vp.y;
    }
}

/// S = Q.K^T for this subgroup's row slices: 16x16 blocks summed over D in steps of 16.
/// Q is read row-major (coopLoadT); K^T is K's row-major tile read column-major (coopLoad).
fn scores() {
    let d = params.head_dim;
    for (var slice = slice0; slice < ROW_SLICES; slice += slice_step) {
        for (var j = 0u; j < KEY_SLICES; j++) {
            var acc = coopLoadT<coop_mat16x16<f32, C>>(&zero_tile[0], TILE);
            for (var c = 0u; c < d; c += TILE) {
                let a = coopLoadT<coop_mat16x16<f16, A>>(&q_tile[slice * TILE * d + c], d);
                let b = coopLoad<coop_mat16x16<f16, B>>(&k_tile[j * TILE * d + c], d);
                acc = coopMultiplyAdd(a, b, acc);
            }
            coopStoreT(acc, &s_tile[slice * TILE * BLOCK_N + j * TILE], BLOCK_N);
        }
    }
}

/// Mask and online softmax of row `local_row`: both halves compute the row's statistics
/// (identically); each writes P for its key_half of the keys and rescales its half of O's row.
/// A fully masked tile leaves m_i, l_i and O unchanged (correction 1, every p 0).
fn online_softmax() {
    let d = params.head_dim;
    var x: array<f32, BLOCK_N>;
    var tile_max = MASKED;
    for (var s = 0u; s < BLOCK_N; s++) {
        var xs = MASKED;
        if visible(tile_key(s)) {
            xs = s_tile[local_row * BLOCK_N + s] * params.scale_log2;
        }
        x[s] = xs;
        tile_max = max(tile_max, xs);
    }
    let m_new = max(m_i, tile_max);
    let correction = exp2_clamped(m_i - m_new);
    m_i = m_new;
    var sum = 0.0;
    let keys_per_half = BLOCK_N / HALVES;
    for (var s = 0u; s < BLOCK_N; s++) {
        var p = 0.0;
        if x[s] > MASKED {
            p = exp2_clamped(x[s] - m_new);
        }
        sum += p;
        if s / keys_per_half == key_half {
            p_tile[local_row * BLOCK_N + s] = f16(p);
        }
    }
    l_i = l_i * correction + sum;
    if correction != 1.0 {
        let cols = d / HALVES;
        for (var c = key_half * cols; c < (key_half + 1u) * cols; c++) {
            o_tile[local_row * d + c] *= correction;
        }
    }
}

/// O += P.V for this subgroup's row slices, accumulated onto O loaded from o_tile.
fn accumulate_pv() {
    let d = params.head_dim;
    for (var slice = slice0; slice < ROW_SLICES; slice += slice_step) {
        let p_at = slice * TILE * BLOCK_N;
        let p0 = coopLoadT<coop_mat16x16<f16, A>>(&p_tile[p_at], BLOCK_N);
        let p1 = coopLoadT<coop_mat16x16<f16, A>>(&p_tile[p_at + TILE], BLOCK_N);
        for (var c = 0u; c < d; c += TILE) {
            let o_at = slice * TILE * d + c;
            var o = coopLoadT<coop_mat16x16<f32, C>>(&o_tile[o_at], d);
            o = coopMultiplyAdd(p0, coopLoadT<coop_mat16x16<f16, B>>(&v_tile[c], d), o);
            o = coopMultiplyAdd(p1, coopLoadT<coop_mat16x16<f16, B>>(&v_tile[TILE * d + c], d), o);
            coopStoreT(o, &o_tile[o_at], d);
        }
    }
}

/// One key tile (keys tile_key(0..BLOCK_N)); called by every invocation alike.
fn attend_tile() {
    workgroupBarrier(); // the previous tile's readers of k, v, p, s and o are done
    load_kv_tile();
    workgroupBarrier();
    scores();
    workgroupBarrier();
    online_softmax();
    workgroupBarrier();
    accumulate_pv();
}

/// Write this invocation's key_half of row `row`, normalised, as packed f16 pairs.
fn store_o() {
    workgroupBarrier(); // the last accumulate_pv's stores to o_tile are visible
    if !row_valid {
        return;
    }
    let d = params.head_dim;
    let base = (bh * params.seq_len + row) * d;
    var inv = 0.0;
    if l_i > 0.0 {
        inv = 1.0 / l_i;
    }
    let cols = d / HALVES;
    for (var c = key_half * cols; c < (key_half + 1u) * cols; c += 2u) {
        let o = vec2<f32>(o_tile[local_row * d + c], o_tile[local_row * d + c + 1u]) * inv;
        out[(base + c) >> 1u] = pack2x16float(o);
    }
}
