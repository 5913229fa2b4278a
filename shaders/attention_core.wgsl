// The FlashAttention-style core shared by the dense, A-shape and sparse kernels.
//
// One workgroup owns BLOCK_M = 64 query rows of one (batch, query head); invocation `lid`
// owns row `row0 + lid` (its q row and f32 accumulator live in private memory). Keys are
// visited in tiles of BLOCK_N: every row scores the tile, masks it, and folds it in with the
// online softmax (running max `m_i`, running sum `l_i`, accumulator rescaled once per tile).
// K and V rows are read straight from storage: all invocations of a workgroup read the
// same key at the same time (a broadcast), so the key loop needs no workgroup barriers.
// On Mesa's lavapipe 22.3 an earlier version (K/V tiles in workgroup memory, barriers in the
// key loop, q and acc as scalar `array<f32, 128>`) silently skipped the output stores of
// some invocations; keeping q and acc as `vec4` arrays and dropping the barriers fixed it
// (which of the two mattered was not isolated: the scalar-array, barrier-free version
// still failed, so the vec4 layout is the known-good one). The tiled kernels
// (attention_tiled_core.wgsl) keep workgroup tiles and barriers in the key loop and pass on
// lavapipe: every barrier there is in workgroup-uniform control flow.
// Which keys a tile holds is the caller's policy: a contiguous range (`visit_range`) or a
// list of columns (`visit_columns`). Masking: key `j` is visible to row `i` iff `j <= i` and
// (`j < window_sink` or `i - j < window_local`); dense and sparse use an open window.

// AttentionParams, `params` and `out`: attention_common.wgsl.

const BLOCK_M: u32 = 64u;
const BLOCK_N: u32 = 16u;
/// Start of the running max: finite, far below any base-2 score (exp2_clamped(MASKED - x) == 0).
const MASKED: f32 = -1.0e30;


const MAX_HEAD_DIM4: u32 = MAX_HEAD_DIM / 4u;
var<private> q_row: array<vec4<f32>, MAX_HEAD_DIM4>; // this row of q, pre-scaled, [D / 4]
var<private> acc: array<vec4<f32>, MAX_HEAD_DIM4>;   // unnormalised output, [D / 4]
var<private> m_i: f32;
var<private> l_i: f32;
var<private> row: u32;        // this invocation's query row
var<private> row_valid: bool; // row < N
var<private> kv_base: u32;    // element offset of key 0 of this head's kv head
var<private> window_sink: u32;
var<private> window_local: u32;
// The current tile (tile_base, tile_hi, tile_columns) and visit_range: attention_common.wgsl.

/// Set up this invocation's row: load q, clear the accumulator.
fn load_q_tile(bh: u32, row0: u32, lid: u32) {
    let n = params.seq_len;
    let d = params.head_dim;
    let b = bh / params.q_heads;
    let h = bh % params.q_heads;
    let kvh = h / (params.q_heads / params.kv_heads);
    kv_base = (b * params.kv_heads + kvh) * n * d;
    row = row0 + lid;
    row_valid = row < n;
    m_i = MASKED;
    l_i = 0.0;
    let q_base = (bh * n + min(row, n - 1u)) * d;
    for (var c = 0u; c < d / 4u; c++) {
        q_row[c] = load_q4(q_base + 4u * c) * params.scale_log2;
        acc[c] = vec4<f32>(0.0);
    }
    window_sink = n;
    window_local = n + 1u;
}

fn visible(key: i32) -> bool {
    if key < 0 || !row_valid {
        return false;
    }
    let j = u32(key);
    return j <= row && (j < window_sink || row - j < window_local);
}

/// Scores of the tile, causal/window mask, online softmax, and P @ V for this row.
/// No infinities are used (drivers may compile with fast math): masked keys score the
/// finite MASKED, which is also where the running max starts.
fn attend_tile() {
    let d = params.head_dim;
    var scores: array<f32, BLOCK_N>;
    var tile_max = MASKED;
    for (var s = 0u; s < BLOCK_N; s++) {
        var x = MASKED;
        if visible(tile_key(s)) {
            let k_at = kv_base + u32(tile_key(s)) * d;
            var qk = vec4<f32>(0.0);
            for (var c = 0u; c < d / 4u; c++) {
                qk += q_row[c] * load_k4(k_at + 4u * c);
            }
            x = qk.x + qk.y + qk.z + qk.w;
        }
        scores[s] = x;
        tile_max = max(tile_max, x);
    }
    // A fully masked tile leaves m_i, l_i and acc unchanged (correction 1, every p 0).
    let m_new = max(m_i, tile_max);
    let correction = exp2_clamped(m_i - m_new);
    m_i = m_new;
    l_i *= correction;
    for (var c = 0u; c < d / 4u; c++) {
        acc[c] *= correction;
    }
    for (var s = 0u; s < BLOCK_N; s++) {
        if scores[s] > MASKED {
            let p = exp2_clamped(scores[s] - m_new);
            let v_at = kv_base + u32(tile_key(s)) * d;
            l_i += p;
            for (var c = 0u; c < d / 4u; c++) {
                acc[c] += p * load_v4(v_at + 4u * c);
            }
        }
    }
}

/// Write this row's normalised output (f32 words or packed f16 pairs).
fn store_o(bh: u32) {
    if !row_valid {
        return;
    }
    let d = params.head_dim;
    let base = (bh * params.seq_len + row) * d;
    var inv = 0.0;
    if l_i > 0.0 {
        inv = 1.0 / l_i;
    }
    for (var c = 0u; c < d / 4u; c++) {
        let o = acc[c] * inv;
        if storage_f16 {
            let w = (base + 4u * c) >> 1u;
            out[w] = pack2x16float(o.xy);
            out[w + 1u] = pack2x16float(o.zw);
        } else {
            let at = base + 4u * c;
            out[at] = bitcast<u32>(o.x);
            out[at + 1u] = bitcast<u32>(o.y);
            out[at + 2u] = bitcast<u32>(o.z);
            out[at + 3u] = bitcast<u32>(o.w);
        }
    }
}
