// The FlashAttention core of the cooperative-matrix variant (dense, A-shape and sparse).
// This file comes first in each coop module: it carries the module's `enable` directives and
// its own f16 views of q, k, v (the coop modules do not include common.wgsl).
//
// One workgroup of 256 invocations (8 subgroups of 32) owns BLOCK_M = 64 query rows of one
// (batch, query head), the index's row block, and walks its keys BLOCK_N at a time (the split
// dense kernel, below: 512 invocations and 128 rows). Two mappings of the matrix work onto
// the subgroups (see the matrix steps section):
// - narrow (BLOCK_N = 32, the backend's default): subgroup `sg` owns the 16 rows
//   [16 band, +16) (`band = sg / 2`), the keys [16 side, +16) of S = Q K^T (against its Q
//   rows held in registers as 16x16 A fragments, all of D) and the columns
//   [D/2 side, +D/2) of O += P V (`side = sg % 2`; f32 accumulators held for the whole key
//   walk). 120 registers and 23,816 bytes of workgroup memory: two workgroups (16 warps)
//   share an H100/H200 SM, whose Vulkan driver keeps only one workgroup of more than about
//   24 KiB (tests/wgpu_residency.rs); the two overlap each other's barriers and softmax.
// - wide (BLOCK_N = 64): subgroup `sg` owns the 32 rows [32 row_half, +32)
//   (`row_half = sg / 4`), the keys [16 quarter, +16) of S and the columns [D/4 quarter,
//   +D/4) of O (`quarter = sg % 4`): every K, P and V fragment feeds two products and the
//   per-tile overhead is paid once per 64 keys, but 177 registers and 45,064 bytes leave one
//   workgroup (8 warps) per SM. 8-18% slower than narrow on the H200 (docs/coop.md).
// Per key tile of BLOCK_N keys (`attend_tile`):
//   fetch_k (K rows into registers), finish the previous tile (rescale O if flagged, O += P.V:
//   this overlaps the K loads), barrier, put_k_at (K rows and the tile's keys into workgroup
//   memory), barrier, scores (S = Q.K^T per 16x16 block, coopStore to s_tile), fetch_v (V
//   rows into registers, in flight across the barrier), barrier, put_fetched_at (V over K),
//   online_softmax (four invocations per row: mask, tile max, lazy max update, P as f16).
// The P.V of the last tile runs in `finish_row_block`, before the store.
// The split dense kernel (SPLIT_KV = 1, the backend's dense kernel at HEAD_DIM = 128 with
// 32-key tiles: `COOP_SPLIT_CONSTANTS`): 512 invocations, 16 subgroups in the narrow
// mapping's bands (8 bands of 16 rows, BLOCK_M = 128), K and V of a tile in their own halves
// of kv_tile, and a walk of two barriers per tile instead of four (`visit_range_split`: the
// next tile's K and this tile's V are put during this tile's softmax). 120 registers and
// 47,368 bytes: one workgroup (16 warps) per SM; each K/V tile serves 128 rows. 5-6% faster
// dense than two workgroups of the four-barrier walk on the H200 (docs/coop.md). Range tiles
// only (the walk looks one tile ahead), so A-shape and sparse keep `attend_tile`.
// WGSL has no element access to cooperative matrices, so O cannot be rescaled per row in
// registers. Rescaling is lazy instead (as FlashAttention-4 does): the max `m_used` that P is
// computed against moves only when a score passes it by more than RESCALE_THRESHOLD (2^8 in
// P, fine for f16 and the f32 sums); only then are O's rows scaled, through workgroup memory
// (`rescale_o`), for the whole workgroup at once. On the first visible tile of a row O and l
// are still 0 and nothing is scaled, so for typical data it is rare after the first tile.
// Workgroup memory (HEAD_DIM = 128; `coop_workgroup_bytes`): kv_tile BLOCK_N rows (Q at the
// start, BLOCK_N rows a pass, then K and V of each tile in turn; rows padded by 8 halves)
// + s_tile 64 rows (f32 scores, rows padded by 4; also the scratch of the O rescale and
// store) + p_tile 64 rows (f16 P, rows padded by 8) + tile_keys (two halves) + row_stat 512
// + rescale_flag 8: 8704 + 9216 + 5120 + 256 + 520 = 23816 bytes at BLOCK_N = 32, 17408 +
// 17408 + 9216 + 512 + 520 = 45064 at 64; the split kernel 17408 (K and V) + 18432 + 10240
// + 256 + 1032 = 47368. All under the 48 KiB Vulkan gives on NVIDIA. The
// paddings put the rows of a 16x16 fragment in distinct bank groups (row strides of 16 bytes
// mod 128) and keep them 16-byte aligned.
// HEAD_DIM, BLOCK_N, BLOCK_M, WORKGROUP_SIZE and SPLIT_KV are pipeline constants (the backend
// sets them, see `coop_constants` and `COOP_SPLIT_CONSTANTS`): strides, loop bounds and the
// number of accumulators are compile-time for the driver.
// The backend builds these modules without wgpu's runtime checks (`Family::trusted`). What
// keeps every access in range then, and what the backend guarantees for it: BLOCK_N 32 or 64
// and HEAD_DIM 64 or 128 (`coop_constants`; other head dims are refused), subgroups of
// exactly 32 so subgroup_id < WORKGROUP_SIZE / 32 (checked before the variant is offered),
// WORKGROUP_SIZE = 4 BLOCK_M: 256 invocations and 64 rows, or in the split kernel 512 and 128
// with BLOCK_N = 32 and HEAD_DIM = 128 (one chunk per invocation per K or V tile: PASSES = 1,
// lid / CHUNKS < BLOCK_N); with those, every workgroup-array index below is in
// range by construction (local_invocation_index, subgroup_id and constants), every loop
// ends, every divisor is a nonzero constant or a validated param (Hq a multiple of Hkv >= 1),
// and the storage reads stay inside the head (rows < N; keys from ranges below N, or from an
// index validated on upload or built by the backend's own kernels).
// Uniformity: coop ops must run in subgroup-uniform control flow and barriers in workgroup-
// uniform control flow. WGSL's analysis treats every builtin (subgroup_id) and every storage
// or atomic read (block_count, rescale_flag, ...) as non-uniform, so it is turned off below;
// every branch and loop around a barrier or a coop op depends only on constants, params,
// workgroup_id, subgroup_id and values that all invocations read at the same address after
// a barrier.
// Requires subgroups of exactly 32 invocations (checked by the backend), made of consecutive
// local_invocation_index values (the four lanes of a softmax row swap maxima by shuffles).
// Everything outside the matrix steps maps work by local_invocation_index alone and talks
// through workgroup memory.
// Known wgpu caveat (gfx-rs/wgpu#8805): modules with cooperative matrices are emitted under
// the Vulkan memory model without NonPrivatePointer/MakeAvailable/MakeVisible semantics, so the
// workgroup-memory hand-offs across workgroupBarrier are formally private accesses; drivers
// treat them as under GLSL450 in practice. Wrong results that look like stale tiles on a GPU
// point there first.
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
/// Keys per tile (pipeline constant): 64 (the wide mapping of the matrix steps) or 32 (the
/// narrow one: 23,816 bytes of workgroup memory at HEAD_DIM = 128). `fetch_rows` takes 1, 2
/// or 4 passes.
override BLOCK_N: u32 = 64u;
/// Query rows per workgroup (pipeline constant): 64, one index row block; 128 in the split
/// dense kernel (SPLIT_KV = 1).
override BLOCK_M: u32 = 64u;
/// Invocations: four per query row (pipeline constant; the backend sets 4 BLOCK_M, asserted
/// at compile time in Rust): 8 subgroups of 32 at BLOCK_M = 64, 16 at 128.
override WORKGROUP_SIZE: u32 = 256u;
/// 1: K and V of a tile in their own halves of kv_tile, two barriers per tile
/// (`visit_range_split`, range tiles only: the dense kernel; narrow mapping; PASSES must be 1,
/// which the backend asserts for its constants: HEAD_DIM = 128 with 512 invocations);
/// 0: one buffer, K then V, four barriers per tile (`attend_tile`).
override SPLIT_KV: u32 = 0u;
/// Invocations per query row in the softmax (consecutive lanes of one subgroup): 4.
override ROW_LANES: u32 = WORKGROUP_SIZE / BLOCK_M;
/// Side of a cooperative matrix.
const TILE: u32 = 16u;
/// Start of the running max: finite, far below any base-2 score.
const MASKED: f32 = -1.0e30;
/// How far (base 2) a score may pass the max P is computed against before O is rescaled.
const RESCALE_THRESHOLD: f32 = 8.0;
/// vec4 elements of a head's row.
override D4: u32 = HEAD_DIM / 4u;
/// Padded rows (in array elements) of kv_tile (vec4<f16>), s_tile (vec4<f32>), p_tile
/// (vec4<f16>).
override KV_ROW4: u32 = HEAD_DIM / 4u + 2u;
override S_ROW4: u32 = BLOCK_N / 4u + 1u;
override P_ROW4: u32 = BLOCK_N / 4u + 2u;
/// 16-byte chunks of a K or V row, rows of a tile moved per pass of the workgroup, passes per
/// tile (each invocation moves one chunk per pass, always the same column chunk): with 256
/// invocations 4 at HEAD_DIM = 128 and BLOCK_N = 64, 2 at 128 and 32 or 64 and 64, 1 at 64
/// and 32; the split kernel (512 invocations, 128 and 32) 1.
override CHUNKS: u32 = HEAD_DIM / 8u;
override PASS_ROWS: u32 = WORKGROUP_SIZE / CHUNKS;
override PASSES: u32 = BLOCK_N / PASS_ROWS;
/// vec4 chunks of scores each softmax lane reads per tile (4 at BLOCK_N = 64, 2 at 32).
override LANE_CHUNKS: u32 = BLOCK_N / 4u / ROW_LANES;
/// O columns per subgroup (its quarter of D: 32 at HEAD_DIM = 128, 16 at 64). (Overrides stay
/// above the functions: naga 30's override processing panicked on ones declared below.)
override O_COLUMNS: u32 = HEAD_DIM / 4u;

/// Rows of kv_tile: BLOCK_N (K or V of a tile), or 2 BLOCK_N with SPLIT_KV (K in the first
/// BLOCK_N rows, V in the others); Q is staged through it KV_ROWS rows at a time.
override KV_ROWS: u32 = BLOCK_N * (1u + SPLIT_KV);
/// First kv_tile row of V: 0, or BLOCK_N with SPLIT_KV.
override V_ROW0: u32 = BLOCK_N * SPLIT_KV;

var<workgroup> kv_tile: array<vec4<f16>, KV_ROWS * KV_ROW4>; // [KV_ROWS, D] Q rows, then K and V
var<workgroup> s_tile: array<vec4<f32>, BLOCK_M * S_ROW4>;   // [BLOCK_M, BLOCK_N] raw scores
var<workgroup> p_tile: array<vec4<f16>, BLOCK_M * P_ROW4>;   // [BLOCK_M, BLOCK_N] P
// [2, BLOCK_N]: key of each slot, -1 none; the tile's in half `parity` (always 0 unless
// SPLIT_KV, where the next tile's keys go to the other half while this tile's are read).
var<workgroup> tile_keys: array<vec4<i32>, BLOCK_N / 2u>;
// [2, BLOCK_M]: the tile's O correction of each row (first half); at the end each row's sum
// (first half).
var<workgroup> row_stat: array<f32, 2u * BLOCK_M>;
// [2]: some row of the tile needs O rescaled (the tile's at `parity`, as tile_keys).
var<workgroup> rescale_flag: array<atomic<u32>, 2>;

var<private> lid: u32;
var<private> sg: u32;          // subgroup 0..WORKGROUP_SIZE / 32
var<private> row_half: u32;    // its rows [32 row_half, +32) in S and O
var<private> quarter: u32;     // its keys [16 quarter, +16) in S, columns [O_COLUMNS quarter, +) in O
var<private> bh: u32;          // batch * Hq + head
var<private> row0: u32;        // first query row of the workgroup
var<private> q_base4: u32;     // vec4 offset of row 0 of this (b, h) in q (and out / 2)
var<private> kv_base4: u32;    // vec4 offset of key 0 of this head's kv head
var<private> srow: u32;        // the row this invocation runs the softmax of
var<private> slane: u32;       // which quarter of the tile's keys it turns into P (0..4)
var<private> m_used: f32;      // the max P of row `srow` is computed against (base 2)
var<private> l_part: f32;      // running sum of this quarter's P of row `srow`
var<private> window_sink: u32;
var<private> window_local: u32;
var<private> pending: bool;    // the last tile's P.V is still to be accumulated
var<private> parity: u32;      // which half of tile_keys and rescale_flag is the tile's
// The tile's K or V chunks this invocation moves, fetched from storage ahead of their barrier:
// f<t> is chunk `lid % CHUNKS` of slot `lid / CHUNKS + PASS_ROWS t` (PASSES <= 4: D = 128 with
// BLOCK_N = 64). Named, not an array: loop-indexed private arrays live in local memory.
var<private> f0: mat2x4<f16>;
var<private> f1: mat2x4<f16>;
var<private> f2: mat2x4<f16>;
var<private> f3: mat2x4<f16>;
// The current tile (tile_base, tile_hi, tile_columns) and visit_range: attention_common.wgsl.

/// Set up the workgroup for row block `block` of (batch, head) `head`: stage Q (zeros past
/// N), load the Q fragments, clear O and the softmax state.
fn start_row_block(head: u32, block: u32, local: u32, subgroup: u32) {
    lid = local;
    sg = subgroup;
    row_half = sg / 4u;
    quarter = sg % 4u;
    bh = head;
    row0 = block * BLOCK_M;
    let n = params.seq_len;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    kv_base4 = (b * params.kv_heads + kvh) * n * D4;
    q_base4 = bh * n * D4;
    // The four lanes of a row are neighbours in one subgroup (they swap maxima).
    srow = lid / ROW_LANES;
    slane = lid % ROW_LANES;
    m_used = MASKED;
    l_part = 0.0;
    window_sink = n;
    window_local = n + 1u;
    pending = false;
    parity = 0u;
    if lid < 2u {
        atomicStore(&rescale_flag[lid], 0u);
    }
    // Q rows [KV_ROWS q_pass, +KV_ROWS) through kv_tile, one pass at a time (two with 32-key
    // tiles), each followed by the fragment loads of the subgroups whose rows it holds.
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

/// Chunk `lid % CHUNKS` of the K (`is_v` false) or V row of tile slot `slot`, or zeros when
/// the slot holds no key.
fn fetch_chunk(slot: u32, is_v: bool) -> mat2x4<f16> {
    let key = tile_key(slot);
    if key < 0 {
        return mat2x4<f16>();
    }
    let at = (kv_base4 + u32(key) * D4) / 2u + lid % CHUNKS;
    if is_v {
        return v[at];
    }
    return k[at];
}

/// This invocation's chunks of the tile's K or V rows, into registers (missing keys are 0).
fn fetch_rows(is_v: bool) {
    let slot = lid / CHUNKS;
    f0 = fetch_chunk(slot, is_v);
    if PASSES > 1u {
        f1 = fetch_chunk(slot + PASS_ROWS, is_v);
    }
    if PASSES > 2u {
        f2 = fetch_chunk(slot + 2u * PASS_ROWS, is_v);
        f3 = fetch_chunk(slot + 3u * PASS_ROWS, is_v);
    }
}

fn fetch_k() {
    fetch_rows(false);
}

fn fetch_v() {
    fetch_rows(true);
}

/// One fetched chunk into kv_tile row `slot` (two vec4<f16>).
fn put_chunk(slot: u32, x: mat2x4<f16>) {
    let at = slot * KV_ROW4 + 2u * (lid % CHUNKS);
    kv_tile[at] = x[0];
    kv_tile[at + 1u] = x[1];
}

/// The fetched rows into kv_tile rows from `row` (between barriers: nobody else reads those
/// rows meanwhile): K at 0, V at V_ROW0.
fn put_fetched_at(row: u32) {
    let slot = row + lid / CHUNKS;
    put_chunk(slot, f0);
    if PASSES > 1u {
        put_chunk(slot + PASS_ROWS, f1);
    }
    if PASSES > 2u {
        put_chunk(slot + 2u * PASS_ROWS, f2);
        put_chunk(slot + 3u * PASS_ROWS, f3);
    }
}

/// K rows and the tile's keys (into half `half` of tile_keys) into workgroup memory; the
/// rescale flag of that half starts clear.
fn put_k_at(half: u32) {
    put_fetched_at(0u);
    if lid < BLOCK_N {
        tile_keys[half * (BLOCK_N / 4u) + lid / 4u][lid % 4u] = tile_key(lid);
    }
    if lid == 0u {
        atomicStore(&rescale_flag[half], 0u);
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

/// vec4 chunk `i` (of LANE_CHUNKS) of this invocation's quarter of the row: the lanes of a row
/// start at different chunks of their quarters, which puts them in different bank groups.
fn lane_chunk(i: u32) -> u32 {
    return slane * LANE_CHUNKS + (i + slane) % LANE_CHUNKS;
}

/// Scores of chunk `i` of this invocation's quarter of the row, base 2; MASKED where the row
/// does not see the key (not checked on fully visible tiles).
fn lane_scores(i: u32, full: bool) -> vec4<f32> {
    let c = lane_chunk(i);
    let x = s_tile[srow * S_ROW4 + c] * params.scale_log2;
    if full {
        return x;
    }
    return select(vec4<f32>(MASKED), x, visible4(row0 + srow, tile_keys[parity * (BLOCK_N / 4u) + c]));
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
    p_tile[srow * P_ROW4 + lane_chunk(i)] = vec4<f16>(p);
    return dot(p, vec4<f32>(1.0));
}

/// Online softmax of row `srow` with lazy rescaling. Each of the row's four lanes reads its
/// quarter of the scores once (held in registers: BLOCK_N = 64, 4 chunks), the lanes swap
/// their maxima (so they agree on `m_used`), then each turns its keys into P (f16, to p_tile)
/// and keeps its own part of the row sum. Lane 0 publishes the row's O correction (1 when
/// unchanged) and raises the rescale flag. Full tiles below the diagonal skip the mask. No
/// infinities are used (drivers may compile with fast math): masked scores are the finite
/// MASKED and never reach exp2 unselected; a fully masked tile leaves the row unchanged.
fn online_softmax() {
    let full = tile_fully_visible();
    let x0 = lane_scores(0u, full);
    let x1 = lane_scores(1u, full);
    var lane_max = max(max4(x0), max4(x1));
    var x2 = vec4<f32>(MASKED);
    var x3 = vec4<f32>(MASKED);
    if LANE_CHUNKS > 2u {
        x2 = lane_scores(2u, full);
        x3 = lane_scores(3u, full);
        lane_max = max(lane_max, max(max4(x2), max4(x3)));
    }
    let pair_max = max(lane_max, subgroupShuffleXor(lane_max, 1u));
    let tile_max = max(pair_max, subgroupShuffleXor(pair_max, 2u));
    var correction = 1.0;
    if tile_max > m_used + RESCALE_THRESHOLD {
        if m_used > MASKED {
            correction = exp2_clamped(m_used - tile_max);
        }
        m_used = tile_max;
    }
    var sum = emit_p(0u, x0, full) + emit_p(1u, x1, full);
    if LANE_CHUNKS > 2u {
        sum += emit_p(2u, x2, full) + emit_p(3u, x3, full);
    }
    l_part = l_part * correction + sum;
    if slane == 0u {
        row_stat[srow] = correction;
        if correction != 1.0 {
            atomicOr(&rescale_flag[parity], 1u);
        }
    }
}

/// The pending tile's end: O rescaled if some row's max moved, then O += P.V.
fn finish_pending_tile() {
    workgroupBarrier(); // P, V, the corrections and the flag are complete
    if atomicLoad(&rescale_flag[parity]) != 0u {
        rescale_o();
    }
    accumulate_pv();
    pending = false;
}

/// One key tile (keys tile_key(0..BLOCK_N)); called by every invocation alike.
fn attend_tile() {
    fetch_k();
    if pending {
        finish_pending_tile();
    }
    workgroupBarrier(); // the last tile's readers of kv_tile, p_tile, tile_keys, row_stat are done
    put_k_at(0u);
    workgroupBarrier();
    scores();
    fetch_v(); // after the scores: fewer registers live during them (measured 3% faster)
    workgroupBarrier(); // S is complete and every K read done
    put_fetched_at(V_ROW0);
    online_softmax();
    pending = true;
}

// V(t) of the split walk, fetched beside K(t + 1) (f0).
var<private> fv: mat2x4<f16>;

/// SPLIT_KV = 1 (range tiles, PASSES = 1): visit keys [lo, hi) with two barriers per tile.
/// Tile t's keys and K are in place when its step starts; then
///   phase 1: V(t) and K(t + 1) are fetched into registers (they land during the products),
///            O is rescaled if tile t - 1 raised its flag, O += P(t - 1) V(t - 1), S(t) = Q K(t);
///   barrier (S(t) complete; K(t), P(t - 1), V(t - 1) and the flag read);
///   phase 2: V(t) over V(t - 1), K(t + 1) over K(t) with its keys in the other half of
///            tile_keys (whose flag is cleared), then the online softmax of tile t (P(t) over
///            P(t - 1), tile t's keys and flag at `parity`);
///   barrier.
/// K and V live in their own halves of kv_tile, so no step waits for the other's readers; the
/// last tile's P.V runs after the loop.
fn visit_range_split(lo: u32, hi: u32) {
    tile_columns = false;
    tile_hi = hi;
    if lo >= hi {
        return; // workgroup-uniform
    }
    tile_base = lo;
    fetch_k();
    workgroupBarrier(); // Q's fragments are loaded: kv_tile is free
    put_k_at(0u);
    workgroupBarrier();
    for (var t = lo; t < hi; t += BLOCK_N) {
        // Phase 1.
        tile_base = t;
        fv = fetch_chunk(lid / CHUNKS, true);
        tile_base = t + BLOCK_N; // past hi: every slot -1, nothing loaded
        fetch_k();
        tile_base = t;
        if pending {
            if atomicLoad(&rescale_flag[1u - parity]) != 0u {
                rescale_o();
            }
            accumulate_pv();
        }
        scores();
        workgroupBarrier();
        // Phase 2.
        put_chunk(V_ROW0 + lid / CHUNKS, fv);
        tile_base = t + BLOCK_N;
        put_k_at(1u - parity);
        tile_base = t;
        online_softmax();
        pending = true;
        parity = 1u - parity;
        workgroupBarrier();
    }
    // The last tile's P.V (its flag is at 1 - parity now).
    parity = 1u - parity;
    if atomicLoad(&rescale_flag[parity]) != 0u {
        rescale_o();
    }
    accumulate_pv();
    pending = false;
}

/// Accumulate the last tile, then write the normalised output rows as f16 pairs, 32 columns
/// at a time through s_tile.
fn finish_row_block() {
    if pending {
        finish_pending_tile();
    }
    let pair_sum = l_part + subgroupShuffleXor(l_part, 1u);
    let row_sum = pair_sum + subgroupShuffleXor(pair_sum, 2u);
    workgroupBarrier(); // the corrections and s_tile are no longer read
    if slane == 0u {
        row_stat[srow] = row_sum;
    }
    for (var pair = 0u; pair < HEAD_DIM / 32u; pair++) {
        stash_o(pair);
        workgroupBarrier();
        for (var i = lid; i < BLOCK_M * 8u; i += WORKGROUP_SIZE) {
            let r = i / 8u;
            let row = row0 + r;
            if row < params.seq_len {
                let l = row_stat[r];
                let inv = select(0.0, 1.0 / l, l > 0.0);
                let o = s_tile[r * S_ROW4 + i % 8u] * inv;
                let w = 2u * (q_base4 + row * D4 + pair * 8u + i % 8u);
                out[w] = pack2x16float(o.xy);
                out[w + 1u] = pack2x16float(o.zw);
            }
        }
        workgroupBarrier(); // s_tile is read before the next stash
    }
}

// ---- matrix steps: the only code that touches cooperative matrices ----------------------
// (tests/wgpu_coop_emulated.rs swaps this section for scalar code with the same contract.)
// - load_q_fragments(q_pass): Q rows [KV_ROWS q_pass, +KV_ROWS), staged in kv_tile rows
//   [0, KV_ROWS), into the registers of the subgroups that hold them;
// - clear_o(): O = 0;
// - scores(): s_tile[r][0, BLOCK_N) = Q[r] . K[s] for the K rows in kv_tile;
// - accumulate_pv(): O[r] += sum_s P[r][s] V[s] (p_tile, V rows in kv_tile);
// - rescale_o(): O[r] *= row_stat[r] (uses s_tile as scratch; workgroup-uniform, barriers);
// - stash_o(pair): O columns [32 pair, 32 pair + 32) -> s_tile[r][0, 32) (the caller
//   barriers before reading).
// Two mappings of the subgroups (8; 16 in the split kernel's narrow mapping), by tile width (workgroup-uniform: BLOCK_N is a constant):
// - wide (BLOCK_N = 64): subgroup `sg` holds rows [32 row_half, +32) (`row_half = sg / 4`),
//   keys [16 quarter, +16) in S and columns [O_COLUMNS quarter, +O_COLUMNS) in O
//   (`quarter = sg % 4`): every K, P and V fragment feeds two products;
// - narrow (BLOCK_N = 32): subgroup `sg` holds the 16 rows [16 band, +16) (`band = sg / 2`),
//   keys [16 side, +16) in S and columns [HEAD_DIM / 2 side, +HEAD_DIM / 2) in O
//   (`side = sg % 2`): half the Q and S registers of the wide mapping, so that with under
//   24 KiB of workgroup memory two workgroups share an SM (docs/coop.md).

alias Acc = coop_mat16x16<f32, C>;
alias MatA = coop_mat16x16<f16, A>;
alias MatB = coop_mat16x16<f16, B>;

// Every matrix is a named variable, never an array element: the driver keeps named matrices
// in registers, while arrays of matrices went to local memory (tests/wgpu_coop_bench.rs:
// `matmul_direct_2x2_array` ran 6x slower than `matmul_direct_2x2`).
// Wide: this subgroup's Q rows 32 row_half + [16 r, +16), dims [16 c, +16) in q<8 r + c>
// (c < 4 only at HEAD_DIM = 64). Narrow: rows 16 band + [0, 16), dims [16 c, +16) in q<c>.
var<private> q0: MatA;
var<private> q1: MatA;
var<private> q2: MatA;
var<private> q3: MatA;
var<private> q4: MatA;
var<private> q5: MatA;
var<private> q6: MatA;
var<private> q7: MatA;
var<private> q8: MatA;
var<private> q9: MatA;
var<private> q10: MatA;
var<private> q11: MatA;
var<private> q12: MatA;
var<private> q13: MatA;
var<private> q14: MatA;
var<private> q15: MatA;
// Its part of the unnormalised O. Wide: rows 32 row_half + [16 r, +16), columns
// O_COLUMNS quarter + [16 c, +16) in o<2 r + c> (o1, o3 only at HEAD_DIM = 128). Narrow:
// rows 16 band + [0, 16), columns HEAD_DIM / 2 side + [16 c, +16) in o<c> (o2, o3 only at
// HEAD_DIM = 128).
var<private> o0: Acc;
var<private> o1: Acc;
var<private> o2: Acc;
var<private> o3: Acc;
// The tile's scores. Wide: rows 32 row_half + [16 r, +16), keys [16 quarter, +16) in s<r>.
// Narrow: rows 16 band + [0, 16), keys [16 side, +16), the even dims' products in s0 and the
// odd ones' in s1 (two chains of half the depth), summed before the store.
var<private> s0: Acc;
var<private> s1: Acc;

/// Whether the narrow mapping runs (32-key tiles).
fn narrow() -> bool {
    return BLOCK_N == 32u;
}

/// Narrow mapping: the subgroup's 16-row band (0..BLOCK_M / 16) and side (0..2).
fn band() -> u32 {
    return sg / 2u;
}

fn side() -> u32 {
    return sg % 2u;
}

/// Q rows 32 row_half + [16 r, +16), dims [16 c, +16) from the staged Q in kv_tile (wide:
/// all BLOCK_M rows are staged at once).
fn q_frag(r: u32, c: u32) -> MatA {
    return coopLoadT<MatA>(&kv_tile[(2u * row_half + r) * TILE * KV_ROW4 + 4u * c], KV_ROW4);
}

/// Narrow: Q rows 16 band + [0, 16), dims [16 c, +16), staged at kv_tile row
/// (16 band) % KV_ROWS.
fn q_band_frag(c: u32) -> MatA {
    return coopLoadT<MatA>(&kv_tile[((TILE * band()) % KV_ROWS) * KV_ROW4 + 4u * c], KV_ROW4);
}

fn load_q_fragments(q_pass: u32) {
    if narrow() {
        if (TILE * band()) / KV_ROWS != q_pass {
            return; // subgroup-uniform: another pass stages this band
        }
        q0 = q_band_frag(0u);
        q1 = q_band_frag(1u);
        q2 = q_band_frag(2u);
        q3 = q_band_frag(3u);
        if HEAD_DIM > 64u {
            q4 = q_band_frag(4u);
            q5 = q_band_frag(5u);
            q6 = q_band_frag(6u);
            q7 = q_band_frag(7u);
        }
        return;
    }
    q0 = q_frag(0u, 0u);
    q1 = q_frag(0u, 1u);
    q2 = q_frag(0u, 2u);
    q3 = q_frag(0u, 3u);
    q8 = q_frag(1u, 0u);
    q9 = q_frag(1u, 1u);
    q10 = q_frag(1u, 2u);
    q11 = q_frag(1u, 3u);
    if HEAD_DIM > 64u {
        q4 = q_frag(0u, 4u);
        q5 = q_frag(0u, 5u);
        q6 = q_frag(0u, 6u);
        q7 = q_frag(0u, 7u);
        q12 = q_frag(1u, 4u);
        q13 = q_frag(1u, 5u);
        q14 = q_frag(1u, 6u);
        q15 = q_frag(1u, 7u);
    }
}

fn clear_o() {
    o0 = Acc();
    o1 = Acc();
    o2 = Acc();
    o3 = Acc();
}

/// Keys [16 kb, +16), dims [16 c, +16) as the B operand K^T (column-major view of row-major K).
fn k_frag(kb: u32, c: u32) -> MatB {
    return coopLoad<MatB>(&kv_tile[TILE * kb * KV_ROW4 + 4u * c], KV_ROW4);
}

/// Wide: one 16-dim step of S, the K fragment feeding both row blocks.
fn score_step(qa: MatA, qb: MatA, c: u32) {
    let kf = k_frag(quarter, c);
    s0 = coopMultiplyAdd(qa, kf, s0);
    s1 = coopMultiplyAdd(qb, kf, s1);
}

/// Narrow: two 16-dim steps of S, one into each chain.
fn score_pair(qa: MatA, qb: MatA, c: u32) {
    s0 = coopMultiplyAdd(qa, k_frag(side(), c), s0);
    s1 = coopMultiplyAdd(qb, k_frag(side(), c + 1u), s1);
}

fn scores() {
    s0 = Acc();
    s1 = Acc();
    if narrow() {
        score_pair(q0, q1, 0u);
        score_pair(q2, q3, 2u);
        if HEAD_DIM > 64u {
            score_pair(q4, q5, 4u);
            score_pair(q6, q7, 6u);
        }
        coopStoreT(s0 + s1, &s_tile[TILE * band() * S_ROW4 + 4u * side()], S_ROW4);
        return;
    }
    score_step(q0, q8, 0u);
    score_step(q1, q9, 1u);
    score_step(q2, q10, 2u);
    score_step(q3, q11, 3u);
    if HEAD_DIM > 64u {
        score_step(q4, q12, 4u);
        score_step(q5, q13, 5u);
        score_step(q6, q14, 6u);
        score_step(q7, q15, 7u);
    }
    let at = 2u * row_half * TILE * S_ROW4 + 4u * quarter;
    coopStoreT(s0, &s_tile[at], S_ROW4);
    coopStoreT(s1, &s_tile[at + TILE * S_ROW4], S_ROW4);
}

/// V rows [16 j, 16 j + 16), columns [col, col + 16) as the B operand (row-major).
fn v_frag(j: u32, col: u32) -> MatB {
    return coopLoadT<MatB>(&kv_tile[(V_ROW0 + j * TILE) * KV_ROW4 + col / 4u], KV_ROW4);
}

/// P rows [row, row + 16), keys [16 j, +16).
fn p_frag(row: u32, j: u32) -> MatA {
    return coopLoadT<MatA>(&p_tile[row * P_ROW4 + 4u * j], P_ROW4);
}

/// Wide: O += P[rows, keys 16 j..] . V[keys 16 j.., columns]: each P and V fragment feeds two
/// independent products.
fn pv_step(j: u32) {
    let p0 = p_frag(2u * row_half * TILE, j);
    let p1 = p_frag((2u * row_half + 1u) * TILE, j);
    let col = O_COLUMNS * quarter;
    let v0 = v_frag(j, col);
    o0 = coopMultiplyAdd(p0, v0, o0);
    o2 = coopMultiplyAdd(p1, v0, o2);
    if O_COLUMNS > 16u {
        let v1 = v_frag(j, col + 16u);
        o1 = coopMultiplyAdd(p0, v1, o1);
        o3 = coopMultiplyAdd(p1, v1, o3);
    }
}

/// Narrow: O[band, its columns] += P[band, keys 16 j..] . V[keys 16 j.., its columns]: the P
/// fragment feeds HEAD_DIM / 32 products.
fn pv_band_step(j: u32) {
    let p = p_frag(TILE * band(), j);
    let col = (HEAD_DIM / 2u) * side();
    o0 = coopMultiplyAdd(p, v_frag(j, col), o0);
    o1 = coopMultiplyAdd(p, v_frag(j, col + 16u), o1);
    if HEAD_DIM > 64u {
        o2 = coopMultiplyAdd(p, v_frag(j, col + 32u), o2);
        o3 = coopMultiplyAdd(p, v_frag(j, col + 48u), o3);
    }
}

fn accumulate_pv() {
    if narrow() {
        pv_band_step(0u);
        pv_band_step(1u);
        return;
    }
    pv_step(0u);
    pv_step(1u);
    pv_step(2u);
    pv_step(3u);
}

/// Whether this subgroup holds O columns of the pair [32 pair, 32 pair + 32) (subgroup-
/// uniform). Wide: two subgroups do at HEAD_DIM = 128 (one per row half), four at 64.
/// Narrow: the subgroups of one side (each for its band: four, eight in the split kernel).
fn owns_pair(pair: u32) -> bool {
    if narrow() {
        return (32u * pair) / (HEAD_DIM / 2u) == side();
    }
    return (O_COLUMNS * quarter) / 32u == pair;
}

/// Wide: where this subgroup's O block goes in s_tile (vec4 index of its first element): its
/// rows, its columns' offset inside their pair.
fn stash_at(r: u32) -> u32 {
    return (2u * row_half + r) * TILE * S_ROW4 + ((O_COLUMNS * quarter) % 32u) / 4u;
}

/// Narrow: whether the pair is the second of the side's two (HEAD_DIM = 128), whose columns
/// are in o2, o3.
fn second_pair(pair: u32) -> bool {
    return HEAD_DIM > 64u && pair % 2u == 1u;
}

/// This subgroup's O block(s) of `pair` into s_tile (its rows, its columns within the
/// pair's 32).
fn stash_own(pair: u32) {
    if narrow() {
        let at = TILE * band() * S_ROW4;
        if second_pair(pair) {
            coopStoreT(o2, &s_tile[at], S_ROW4);
            coopStoreT(o3, &s_tile[at + 4u], S_ROW4);
        } else {
            coopStoreT(o0, &s_tile[at], S_ROW4);
            coopStoreT(o1, &s_tile[at + 4u], S_ROW4);
        }
        return;
    }
    coopStoreT(o0, &s_tile[stash_at(0u)], S_ROW4);
    coopStoreT(o2, &s_tile[stash_at(1u)], S_ROW4);
    if O_COLUMNS > 16u {
        coopStoreT(o1, &s_tile[stash_at(0u) + 4u], S_ROW4);
        coopStoreT(o3, &s_tile[stash_at(1u) + 4u], S_ROW4);
    }
}

/// This subgroup's O block(s) of `pair` back from s_tile.
fn unstash_own(pair: u32) {
    if narrow() {
        let at = TILE * band() * S_ROW4;
        if second_pair(pair) {
            o2 = coopLoadT<Acc>(&s_tile[at], S_ROW4);
            o3 = coopLoadT<Acc>(&s_tile[at + 4u], S_ROW4);
        } else {
            o0 = coopLoadT<Acc>(&s_tile[at], S_ROW4);
            o1 = coopLoadT<Acc>(&s_tile[at + 4u], S_ROW4);
        }
        return;
    }
    o0 = coopLoadT<Acc>(&s_tile[stash_at(0u)], S_ROW4);
    o2 = coopLoadT<Acc>(&s_tile[stash_at(1u)], S_ROW4);
    if O_COLUMNS > 16u {
        o1 = coopLoadT<Acc>(&s_tile[stash_at(0u) + 4u], S_ROW4);
        o3 = coopLoadT<Acc>(&s_tile[stash_at(1u) + 4u], S_ROW4);
    }
}

/// Scale the stashed columns [0, 32) of every row by the row's correction, between barriers.
fn scale_stash() {
    workgroupBarrier();
    for (var i = lid; i < BLOCK_M * 8u; i += WORKGROUP_SIZE) {
        let r = i / 8u;
        s_tile[r * S_ROW4 + i % 8u] *= row_stat[r];
    }
    workgroupBarrier();
}

// One 32-column pair of O per round (s_tile holds 32 columns of every row), stashed and taken
// back by the subgroups that hold it; the last barrier of each round keeps s_tile from
// being overwritten before they have read it back.
fn rescale_o() {
    for (var pair = 0u; pair < HEAD_DIM / 32u; pair++) {
        if owns_pair(pair) {
            stash_own(pair);
        }
        scale_stash();
        if owns_pair(pair) {
            unstash_own(pair);
        }
        workgroupBarrier();
    }
}

fn stash_o(pair: u32) {
    if owns_pair(pair) {
        stash_own(pair);
    }
}
// ---- end of matrix steps -----------------------------------------------------------------
