// The FlashAttention core of the cooperative-matrix variant, row-owner mapping (dense,
// A-shape and sparse; the backend picks it with 16-key tiles, `MINFERENCE_WGPU_COOP_BLOCK_N=16`).
// Like `attention_coop.wgsl` it comes first in its modules (it carries their `enable`
// directives and its own f16 views of q, k, v) and provides `start_row_block`, `attend_tile`
// and `finish_row_block` to the kernel files.
//
// One workgroup of 128 invocations (4 subgroups of 32) owns BLOCK_M = 64 query rows of one
// (batch, query head), the index's row block, and walks its keys BLOCK_N = 16 at a time.
// Subgroup `sg` owns the 16 rows [16 sg, +16) outright, as FlashAttention-2's warps do: all
// BLOCK_N keys of their scores S = Q K^T (Q held in registers as 16x16 A fragments), their
// softmax and all HEAD_DIM columns of their O += P V (f32 accumulators held for the whole key
// walk). Only K and V are shared, so the workgroup meets at two barriers per tile (K and V
// staged); S, the softmax, P and the O rescale stay inside the subgroup, ordered by
// `subgroupBarrier` on its own rows of s_tile and p_tile.
// Per key tile (`attend_tile`):
//   fetch_kv (the tile's K and V rows into registers), P.V of the previous tile (overlaps those
//   loads), barrier, put_kv (K, V and the tile's keys into workgroup memory), barrier, scores
//   (S = Q.K^T, coopStore to the subgroup's rows of s_tile), online_softmax (two lanes per
//   row: mask, tile max, lazy max update, O rescale if some row of the subgroup needs it,
//   P as f16 to the subgroup's rows of p_tile).
// The P.V of the last tile runs in `finish_row_block`, before the store.
// Rescaling is lazy as in `attention_coop.wgsl` (WGSL has no element access to cooperative
// matrices): P is computed against `m_used`, which moves only when a score passes it by more
// than RESCALE_THRESHOLD; then the subgroup's O blocks go through its own rows of s_tile, one
// 16x16 block at a time, each lane scaling its row.
// Workgroup memory (HEAD_DIM = 128; `coop_rows_workgroup_bytes`): kv_tile 2 x BLOCK_N rows (Q
// at the start, 32 rows a pass; then K in rows [0, 16), V in rows [16, 32); rows padded by 8
// halves) + s_tile 64 rows (f32 scores, rows padded by 4; the scratch of the O rescale and
// store) + p_tile 64 rows (f16 P, unpadded: one fragment load per tile) + tile_keys:
// 8704 + 5120 + 2048 + 64 = 15,936 bytes, so that three workgroups share an H100/H200 SM
// (whose Vulkan driver gives about 50-57 KiB of workgroup memory per SM in all:
// tests/wgpu_residency.rs).
// HEAD_DIM is a pipeline constant (64 or 128, `coop_constants`). The backend builds these
// modules without wgpu's runtime checks (`Family::trusted`): every workgroup-array index below
// is in range by construction (local_invocation_index < 128, subgroup_id < 4 with subgroups of
// exactly 32, constants), every loop ends, every divisor is a nonzero constant or a validated
// param, and storage reads stay inside the head (rows < N; keys from ranges below N or from an
// index validated on upload or built by the backend's own kernels).
// Uniformity: coop ops run in subgroup-uniform control flow (branches on constants, params,
// workgroup_id, subgroup_id, subgroupAny and values read by all invocations at one address
// after a barrier), barriers in workgroup-uniform control flow; WGSL's analysis treats
// builtins and storage reads as non-uniform, so it is turned off below.
// Requires subgroups of exactly 32 invocations made of consecutive local_invocation_index
// values (checked by the backend): the two lanes of a softmax row swap maxima by shuffles.
// Memory model: `subgroupBarrier` orders the subgroup's own workgroup-memory hand-offs (coopStore
// of S, then lane reads; lane writes of P, then coopLoad) as a warp barrier does on NVIDIA;
// formally naga emits it with subgroup-memory semantics only (and see gfx-rs/wgpu#8805 in
// `attention_coop.wgsl`). Wrong results that look like stale scores point there first.
enable f16;
enable wgpu_cooperative_matrix;
diagnostic(off, derivative_uniformity);

// AttentionParams, `params` and `out`: attention_common.wgsl.
@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>; // [B, Hq, N, D]
// K and V are read 16 bytes (8 halves, as a mat2x4) at a time.
@group(0) @binding(2) var<storage, read> k: array<mat2x4<f16>>; // [B, Hkv, N, D / 8] x 8 halves
@group(0) @binding(3) var<storage, read> v: array<mat2x4<f16>>; // [B, Hkv, N, D / 8] x 8 halves

/// Head dim, 64 or 128 (pipeline constant).
override HEAD_DIM: u32 = 128u;
/// Keys per tile.
const BLOCK_N: u32 = 16u;
/// Query rows per workgroup: one index row block.
const BLOCK_M: u32 = 64u;
/// 4 subgroups of 32, each owning 16 rows.
const WORKGROUP_SIZE: u32 = 128u;
/// Side of a cooperative matrix (and the rows of a subgroup).
const TILE: u32 = 16u;
/// Start of the running max: finite, far below any base-2 score.
const MASKED: f32 = -1.0e30;
/// How far (base 2) a score may pass the max P is computed against before O is rescaled.
const RESCALE_THRESHOLD: f32 = 8.0;
/// vec4 elements of a head's row.
override D4: u32 = HEAD_DIM / 4u;
/// Padded rows (in array elements) of kv_tile (vec4<f16>), s_tile (vec4<f32>); p_tile rows
/// are unpadded (vec4<f16>).
override KV_ROW4: u32 = HEAD_DIM / 4u + 2u;
const S_ROW4: u32 = BLOCK_N / 4u + 1u;
const P_ROW4: u32 = BLOCK_N / 4u;
/// 16-byte chunks of a K or V row, rows of a tile moved per pass of the workgroup, passes per
/// tile (each invocation moves one K and one V chunk per pass, always the same column chunk):
/// 2 at HEAD_DIM = 128, 1 at 64.
override CHUNKS: u32 = HEAD_DIM / 8u;
override PASS_ROWS: u32 = WORKGROUP_SIZE / CHUNKS;
override PASSES: u32 = BLOCK_N / PASS_ROWS;
/// Rows of kv_tile: K rows [0, BLOCK_N), V rows [BLOCK_N, 2 BLOCK_N).
const KV_ROWS: u32 = 2u * BLOCK_N;

var<workgroup> kv_tile: array<vec4<f16>, KV_ROWS * KV_ROW4>; // [2, BLOCK_N, D]: Q rows at the start, then K and V
var<workgroup> s_tile: array<vec4<f32>, BLOCK_M * S_ROW4>;   // [BLOCK_M, BLOCK_N] raw scores (subgroup sg: rows [16 sg, +16))
var<workgroup> p_tile: array<vec4<f16>, BLOCK_M * P_ROW4>;   // [BLOCK_M, BLOCK_N] P
var<workgroup> tile_keys: array<vec4<i32>, BLOCK_N / 4u>;    // [BLOCK_N] key of each slot, -1 none

var<private> lid: u32;
var<private> sg: u32;          // subgroup 0..4: rows [16 sg, +16)
var<private> srow: u32;        // the row (of the subgroup's 16) this invocation runs the softmax of
var<private> key_half: u32;        // which half of the tile's keys it turns into P (0..2)
var<private> bh: u32;          // batch * Hq + head
var<private> row0: u32;        // first query row of the workgroup
var<private> q_base4: u32;     // vec4 offset of row 0 of this (b, h) in q (and out / 2)
var<private> kv_base4: u32;    // vec4 offset of key 0 of this head's kv head
var<private> m_used: f32;      // the max P of row `srow` is computed against (base 2)
var<private> l_part: f32;      // running sum of this half's P of row `srow`
var<private> window_sink: u32;
var<private> window_local: u32;
var<private> pending: bool;    // the last tile's P.V is still to be accumulated
// The tile's K and V chunks this invocation moves, fetched from storage ahead of their barrier:
// chunk `lid % CHUNKS` of slot `lid / CHUNKS + PASS_ROWS t` in fk<t>, fv<t>. Named, not arrays.
var<private> fk0: mat2x4<f16>;
var<private> fk1: mat2x4<f16>;
var<private> fv0: mat2x4<f16>;
var<private> fv1: mat2x4<f16>;
// The current tile (tile_base, tile_hi, tile_columns) and visit_range: attention_common.wgsl.

/// Set up the workgroup for row block `block` of (batch, head) `head`: stage Q (zeros past
/// N), load the Q fragments, clear O and the softmax state.
fn start_row_block(head: u32, block: u32, local: u32, subgroup: u32) {
    lid = local;
    sg = subgroup;
    bh = head;
    row0 = block * BLOCK_M;
    let n = params.seq_len;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    kv_base4 = (b * params.kv_heads + kvh) * n * D4;
    q_base4 = bh * n * D4;
    // The two lanes of a row are neighbours in one subgroup (they swap maxima).
    srow = (lid % 32u) / 2u;
    key_half = lid % 2u;
    m_used = MASKED;
    l_part = 0.0;
    window_sink = n;
    window_local = n + 1u;
    pending = false;
    // Q rows [KV_ROWS q_pass, +KV_ROWS) through kv_tile, one pass at a time, each followed
    // by the fragment loads of the two subgroups whose rows it holds.
    for (var q_pass = 0u; q_pass < BLOCK_M / KV_ROWS; q_pass++) {
        if q_pass > 0u {
            workgroupBarrier(); // the previous pass's fragments are loaded
        }
        for (var i = lid; i < KV_ROWS * D4; i += WORKGROUP_SIZE) {
            let r = i / D4;
            let row = row0 + KV_ROWS * q_pass + r;
            var x = vec4<f16>(0.0h);
            if row < n {
                x = q[q_base4 + row * D4 + i % D4];
            }
            kv_tile[r * KV_ROW4 + i % D4] = x;
        }
        workgroupBarrier();
        load_q_fragments(q_pass);
    }
    clear_o();
    // kv_tile is next written after the first tile's first barrier.
}

/// Chunk `lid % CHUNKS` of key `key`'s K (`is_v` false) or V row, or zeros for no key (-1).
fn fetch_chunk(key: i32, is_v: bool) -> mat2x4<f16> {
    if key < 0 {
        return mat2x4<f16>();
    }
    let at = (kv_base4 + u32(key) * D4) / 2u + lid % CHUNKS;
    if is_v {
        return v[at];
    }
    return k[at];
}

/// This invocation's chunks of the tile's K and V rows, into registers (missing keys are 0).
fn fetch_kv() {
    let slot = lid / CHUNKS;
    let key0 = tile_key(slot);
    fk0 = fetch_chunk(key0, false);
    fv0 = fetch_chunk(key0, true);
    if PASSES > 1u {
        let key1 = tile_key(slot + PASS_ROWS);
        fk1 = fetch_chunk(key1, false);
        fv1 = fetch_chunk(key1, true);
    }
}

/// One fetched chunk into kv_tile row `row` (two vec4<f16>).
fn put_chunk(row: u32, x: mat2x4<f16>) {
    let at = row * KV_ROW4 + 2u * (lid % CHUNKS);
    kv_tile[at] = x[0];
    kv_tile[at + 1u] = x[1];
}

/// The fetched K and V rows and the tile's keys into workgroup memory (between barriers).
fn put_kv() {
    let slot = lid / CHUNKS;
    put_chunk(slot, fk0);
    put_chunk(BLOCK_N + slot, fv0);
    if PASSES > 1u {
        put_chunk(slot + PASS_ROWS, fk1);
        put_chunk(BLOCK_N + slot + PASS_ROWS, fv1);
    }
    if lid < BLOCK_N {
        tile_keys[lid / 4u][lid % 4u] = tile_key(lid);
    }
}

/// Which of `keys` row `row` sees: present, causal, inside the A-shape window, row < N.
fn visible4(row: u32, keys: vec4<i32>) -> vec4<bool> {
    let j = vec4<u32>(max(keys, vec4<i32>(0)));
    let i = vec4<u32>(row);
    let in_window = (j < vec4<u32>(window_sink)) | (i - j < vec4<u32>(window_local));
    return (keys >= vec4<i32>(0)) & (j <= i) & in_window & vec4<bool>(row < params.seq_len);
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

/// exp2 that is exactly 0 below 2^-120 and never sees a huge negative argument.
fn exp2_clamped(x: f32) -> f32 {
    return select(0.0, exp2(max(x, -120.0)), x > -120.0);
}

fn exp2_clamped4(x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp2(max(x, vec4<f32>(-120.0))), x > vec4<f32>(-120.0));
}

/// Whether every row of the block sees every key of the current tile: a full range tile
/// entirely at or below the block's first row, inside the A-shape window of every row.
/// Workgroup-uniform (params, the tile bounds and row0 only).
fn tile_fully_visible() -> bool {
    let last = tile_base + BLOCK_N - 1u;
    let rows_end = row0 + BLOCK_M; // rows past N are never stored: seeing more keys is harmless
    let in_window = last < window_sink || rows_end - 1u - tile_base < window_local;
    return !tile_columns && tile_hi >= tile_base + BLOCK_N && last <= row0 && in_window;
}

/// Row of the workgroup this invocation runs the softmax of.
fn softmax_row() -> u32 {
    return TILE * sg + srow;
}

/// vec4 chunk `i` (0 or 1) of this invocation's half of the row: the two lanes of a row start
/// at different chunks, which puts them in different bank groups.
fn lane_chunk(i: u32) -> u32 {
    return 2u * key_half + (i + key_half) % 2u;
}

/// Scores of chunk `i` of this invocation's half of the row, base 2; MASKED where the row
/// does not see the key (not checked on fully visible tiles).
fn lane_scores(i: u32, full: bool) -> vec4<f32> {
    let c = lane_chunk(i);
    let x = s_tile[softmax_row() * S_ROW4 + c] * params.scale_log2;
    if full {
        return x;
    }
    return select(vec4<f32>(MASKED), x, visible4(row0 + softmax_row(), tile_keys[c]));
}

/// P of chunk `i` (scores `x`) against m_used, to p_tile; returns its sum.
fn emit_p(i: u32, x: vec4<f32>, full: bool) -> f32 {
    var p: vec4<f32>;
    if full {
        p = exp2(x - vec4<f32>(m_used));
    } else {
        // Masked keys are exactly MASKED: P = 0 there, also while m_used is still MASKED.
        p = select(vec4<f32>(0.0), exp2_clamped4(x - vec4<f32>(m_used)), x != vec4<f32>(MASKED));
    }
    p_tile[softmax_row() * P_ROW4 + lane_chunk(i)] = vec4<f16>(p);
    return dot(p, vec4<f32>(1.0));
}

/// Online softmax of row `srow` of the subgroup with lazy rescaling. Each of the row's two
/// lanes reads its half of the scores once, they swap their maxima (so they agree on
/// `m_used`); if some row of the subgroup moved its max, the subgroup rescales its O rows
/// (through s_tile, whose scores are in registers by then); then each lane turns its keys
/// into P (f16, to p_tile) and keeps its own part of the row sum. Full tiles below the
/// diagonal skip the mask. No infinities are used (drivers may compile with fast math):
/// masked scores are the finite MASKED and never reach exp2 unselected; a fully masked tile
/// leaves the row unchanged.
fn online_softmax() {
    let full = tile_fully_visible();
    let x0 = lane_scores(0u, full);
    let x1 = lane_scores(1u, full);
    let lane_max = max(max4(x0), max4(x1));
    let tile_max = max(lane_max, subgroupShuffleXor(lane_max, 1u));
    var correction = 1.0;
    if tile_max > m_used + RESCALE_THRESHOLD {
        if m_used > MASKED {
            correction = exp2_clamped(m_used - tile_max);
        }
        m_used = tile_max;
    }
    if subgroupAny(correction != 1.0) {
        rescale_o(correction);
    }
    let sum = emit_p(0u, x0, full) + emit_p(1u, x1, full);
    l_part = l_part * correction + sum;
    subgroupBarrier(); // P is complete for the subgroup's P.V
}

/// One key tile (keys tile_key(0..BLOCK_N)); called by every invocation alike.
fn attend_tile() {
    fetch_kv();
    if pending {
        accumulate_pv(); // the previous tile's, while this tile's loads are in flight
    }
    workgroupBarrier(); // every subgroup is done with the last tile's kv_tile and tile_keys
    put_kv();
    workgroupBarrier();
    scores();
    online_softmax();
    pending = true;
}

/// Accumulate the last tile, then write the normalised output rows as f16 pairs, 16 columns
/// at a time through the subgroup's rows of s_tile.
fn finish_row_block() {
    if pending {
        accumulate_pv();
        pending = false;
    }
    let row_sum = l_part + subgroupShuffleXor(l_part, 1u);
    let inv = select(0.0, 1.0 / row_sum, row_sum > 0.0);
    let row = row0 + softmax_row();
    for (var c = 0u; c < HEAD_DIM / TILE; c++) {
        stash_o(c);
        if row < params.seq_len {
            // This lane's 8 columns [16 c + 8 key_half, +8) of its row.
            let at = softmax_row() * S_ROW4 + 2u * key_half;
            let lo = s_tile[at] * inv;
            let hi = s_tile[at + 1u] * inv;
            let w = 2u * (q_base4 + row * D4 + 4u * c + 2u * key_half);
            out[w] = pack2x16float(lo.xy);
            out[w + 1u] = pack2x16float(lo.zw);
            out[w + 2u] = pack2x16float(hi.xy);
            out[w + 3u] = pack2x16float(hi.zw);
        }
    }
}

/// Scale this lane's half of its row of the stashed O block by `correction`.
fn scale_stash(correction: f32) {
    let at = softmax_row() * S_ROW4 + 2u * key_half;
    s_tile[at] *= correction;
    s_tile[at + 1u] *= correction;
}

// ---- matrix steps: the only code that touches cooperative matrices ----------------------
// (tests/wgpu_coop_emulated.rs swaps this section for scalar code with the same contract.)
// Subgroup `sg` holds Q rows [16 sg, +16) in q<c> (dims [16 c, +16)) and O rows [16 sg, +16)
// in o<c> (columns [16 c, +16); c < HEAD_DIM / 16).
// - load_q_fragments(q_pass): Q rows [KV_ROWS q_pass, +KV_ROWS), staged in kv_tile rows
//   [0, KV_ROWS), into the registers of the subgroups that hold them;
// - clear_o(): O = 0;
// - scores(): s_tile rows [16 sg, +16) = Q . K^T for the K rows in kv_tile, then a subgroup
//   barrier;
// - accumulate_pv(): O[r] += sum_s P[r][s] V[s] (p_tile rows [16 sg, +16), V rows in kv_tile);
// - rescale_o(correction): O row `softmax_row()` *= correction (each lane passes its row's);
//   uses the subgroup's rows of s_tile as scratch;
// - stash_o(c): O columns [16 c, +16) of the subgroup's rows into its rows of s_tile
//   columns [0, 16), readable by every lane of the subgroup on return.

alias Acc = coop_mat16x16<f32, C>;
alias MatA = coop_mat16x16<f16, A>;
alias MatB = coop_mat16x16<f16, B>;

// Named, never array elements (arrays of matrices went to local memory).
var<private> q0: MatA;
var<private> q1: MatA;
var<private> q2: MatA;
var<private> q3: MatA;
var<private> q4: MatA;
var<private> q5: MatA;
var<private> q6: MatA;
var<private> q7: MatA;
var<private> o0: Acc;
var<private> o1: Acc;
var<private> o2: Acc;
var<private> o3: Acc;
var<private> o4: Acc;
var<private> o5: Acc;
var<private> o6: Acc;
var<private> o7: Acc;
// The tile's scores: the even dims' products in s0, the odd ones' in s1 (two chains of half
// the depth), summed before the store.
var<private> s0: Acc;
var<private> s1: Acc;

/// Q rows [16 sg, +16), dims [16 c, +16), staged at kv_tile row (16 sg) % KV_ROWS.
fn q_frag(c: u32) -> MatA {
    return coopLoadT<MatA>(&kv_tile[((TILE * sg) % KV_ROWS) * KV_ROW4 + 4u * c], KV_ROW4);
}

fn load_q_fragments(q_pass: u32) {
    if (TILE * sg) / KV_ROWS != q_pass {
        return; // subgroup-uniform: another pass stages these rows
    }
    q0 = q_frag(0u);
    q1 = q_frag(1u);
    q2 = q_frag(2u);
    q3 = q_frag(3u);
    if HEAD_DIM > 64u {
        q4 = q_frag(4u);
        q5 = q_frag(5u);
        q6 = q_frag(6u);
        q7 = q_frag(7u);
    }
}

fn clear_o() {
    o0 = Acc();
    o1 = Acc();
    o2 = Acc();
    o3 = Acc();
    o4 = Acc();
    o5 = Acc();
    o6 = Acc();
    o7 = Acc();
}

/// The tile's keys, dims [16 c, +16) as the B operand K^T (column-major view of row-major K).
fn k_frag(c: u32) -> MatB {
    return coopLoad<MatB>(&kv_tile[4u * c], KV_ROW4);
}

/// The tile's V rows, columns [16 c, +16) as the B operand (row-major).
fn v_frag(c: u32) -> MatB {
    return coopLoadT<MatB>(&kv_tile[BLOCK_N * KV_ROW4 + 4u * c], KV_ROW4);
}

fn scores() {
    s0 = coopMultiplyAdd(q0, k_frag(0u), Acc());
    s1 = coopMultiplyAdd(q1, k_frag(1u), Acc());
    s0 = coopMultiplyAdd(q2, k_frag(2u), s0);
    s1 = coopMultiplyAdd(q3, k_frag(3u), s1);
    if HEAD_DIM > 64u {
        s0 = coopMultiplyAdd(q4, k_frag(4u), s0);
        s1 = coopMultiplyAdd(q5, k_frag(5u), s1);
        s0 = coopMultiplyAdd(q6, k_frag(6u), s0);
        s1 = coopMultiplyAdd(q7, k_frag(7u), s1);
    }
    coopStoreT(s0 + s1, &s_tile[TILE * sg * S_ROW4], S_ROW4);
    subgroupBarrier(); // S is complete for the subgroup's lanes
}

fn accumulate_pv() {
    let p = coopLoadT<MatA>(&p_tile[TILE * sg * P_ROW4], P_ROW4);
    o0 = coopMultiplyAdd(p, v_frag(0u), o0);
    o1 = coopMultiplyAdd(p, v_frag(1u), o1);
    o2 = coopMultiplyAdd(p, v_frag(2u), o2);
    o3 = coopMultiplyAdd(p, v_frag(3u), o3);
    if HEAD_DIM > 64u {
        o4 = coopMultiplyAdd(p, v_frag(4u), o4);
        o5 = coopMultiplyAdd(p, v_frag(5u), o5);
        o6 = coopMultiplyAdd(p, v_frag(6u), o6);
        o7 = coopMultiplyAdd(p, v_frag(7u), o7);
    }
}

/// O block `o` through the subgroup's rows of s_tile: stored, each lane's row scaled, loaded.
fn rescaled(o: Acc, correction: f32) -> Acc {
    subgroupBarrier(); // the subgroup's earlier reads of its s_tile rows are done
    coopStoreT(o, &s_tile[TILE * sg * S_ROW4], S_ROW4);
    subgroupBarrier();
    scale_stash(correction);
    subgroupBarrier();
    return coopLoadT<Acc>(&s_tile[TILE * sg * S_ROW4], S_ROW4);
}

fn rescale_o(correction: f32) {
    o0 = rescaled(o0, correction);
    o1 = rescaled(o1, correction);
    o2 = rescaled(o2, correction);
    o3 = rescaled(o3, correction);
    if HEAD_DIM > 64u {
        o4 = rescaled(o4, correction);
        o5 = rescaled(o5, correction);
        o6 = rescaled(o6, correction);
        o7 = rescaled(o7, correction);
    }
}

/// O block `o` into the subgroup's rows of s_tile, readable by its lanes on return.
fn stash(o: Acc) {
    subgroupBarrier(); // the subgroup's earlier reads of its s_tile rows are done
    coopStoreT(o, &s_tile[TILE * sg * S_ROW4], S_ROW4);
    subgroupBarrier();
}

fn stash_o(c: u32) {
    switch c {
        case 0u: { stash(o0); }
        case 1u: { stash(o1); }
        case 2u: { stash(o2); }
        case 3u: { stash(o3); }
        case 4u: { stash(o4); }
        case 5u: { stash(o5); }
        case 6u: { stash(o6); }
        default: { stash(o7); }
    }
}
// ---- end of matrix steps -----------------------------------------------------------------
