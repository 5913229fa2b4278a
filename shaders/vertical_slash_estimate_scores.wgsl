// The scalar scores of the vertical-slash estimate (portable variants): S = Q_last K^T of
// one key tile on the 16 x 16 invocation grid, from Q and K chunks of QK_CHUNK = 32 dims
// staged in `stage`, and the `_f32` / `_f16` stats and sums entry points. Comes after
// common.wgsl, math.wgsl and vertical_slash_estimate.wgsl (the passes and the other entry
// points); vertical_slash_estimate_scores_coop.wgsl is the cooperative-matrix counterpart.

/// vec4 columns of a staged Q or K chunk (QK_CHUNK = 32 dims).
const QK_CHUNK4: u32 = 8u;
/// vec4 slots of a staged Q or K chunk: LAST_Q (= BLOCK_N) rows of QK_CHUNK4.
const CHUNK_SLOTS: u32 = 512u;
/// vec4 slots of `stage`: 16 KiB.
const STAGE4: u32 = 1024u;
// In turn: the Q chunk (slots [0, CHUNK_SLOTS)) and the K chunk (the rest), each
// [64 rows, QK_CHUNK4] swizzled (`qk_at`); the stats partials [16 (tx), 64 (row)]; the
// probability tile P [64 rows, BLOCK_N / 4]; the combine's partials (one per invocation).
var<workgroup> stage: array<vec4<f32>, STAGE4>;

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
