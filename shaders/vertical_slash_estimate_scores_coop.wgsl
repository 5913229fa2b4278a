// The scores of the vertical-slash estimate on cooperative matrices (the coop variant, f16
// storage): S = Q_last K^T of one 64-key tile by the 8 subgroups of the estimate's 256
// invocations, subgroup `sg` owning rows [16 (sg / 2), +16) x keys [32 (sg % 2), +32) (two
// 16x16 f32 accumulators, HEAD_DIM / 16 products each). The last queries are staged as f16
// in `qk_tile` (zeros past last_q), each subgroup takes its row slice as A fragments, then
// the tile's keys are staged over them (zeros past N); S goes to `stage` (rows padded to 68
// floats) and every invocation reads back its 4 x 4 micro-tile, scaled to base 2, for the
// passes of vertical_slash_estimate.wgsl. This file comes first in its module (it carries
// the `enable` directives and its own f16 views of q and k), then math.wgsl and
// vertical_slash_estimate.wgsl. Requires subgroups of exactly 32 (the coop variant's check).
// Uniformity: every coop op and barrier runs in workgroup-uniform control flow (the entry
// points leave, as a whole workgroup, only on the head's kind), which WGSL's analysis cannot
// see through storage reads, hence the diagnostic below.
enable f16;
enable wgpu_cooperative_matrix;
diagnostic(off, derivative_uniformity);

@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>; // [B, Hq, N, D]
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>; // [B, Hkv, N, D]

/// Side of a cooperative matrix.
const COOP_TILE: u32 = 16u;
/// Padded rows of `qk_tile` (vec4<f16>: D = 128 plus 8 halves) and of S in `stage`
/// (vec4<f32>: 64 keys plus 4 floats): 16 bytes mod 128 apart, 16-byte aligned.
const QK_ROW4: u32 = 34u;
const S_ROW4: u32 = 17u;
/// vec4<f32> slots of `stage`: S [64 rows, S_ROW4], and at least the 1024 the passes use.
const STAGE4: u32 = 1088u;

var<workgroup> stage: array<vec4<f32>, STAGE4>;
var<workgroup> qk_tile: array<vec4<f16>, 64u * QK_ROW4>; // [64, D]: Q_last, then the tile's keys

alias CoopAcc = coop_mat16x16<f32, C>;
alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;

var<private> sg: u32; // this invocation's subgroup
// This subgroup's Q rows, dims [16 c, 16 c + 16) in qf<c> (named: kept in registers).
var<private> qf0: CoopA;
var<private> qf1: CoopA;
var<private> qf2: CoopA;
var<private> qf3: CoopA;
var<private> qf4: CoopA;
var<private> qf5: CoopA;
var<private> qf6: CoopA;
var<private> qf7: CoopA;
// Its two score blocks: keys [32 (sg % 2), +16) and [32 (sg % 2) + 16, +16).
var<private> sa0: CoopAcc;
var<private> sa1: CoopAcc;

/// Rows [0, 64) of qk_tile from `q` (rows < last_q) or `k` (keys < N), starting at element
/// `base`; zeros elsewhere. Between barriers.
fn stage_rows(from_q: bool, base: u32, rows: u32) {
    let d4 = params.head_dim / 4u;
    for (var i = lid; i < 64u * d4; i += THREADS) {
        let r = i / d4;
        let c = i % d4;
        var x = vec4<f16>(0.0h);
        if r < rows {
            let at = base / 4u + r * d4 + c;
            if from_q {
                x = q[at];
            } else {
                x = k[at];
            }
        }
        qk_tile[r * QK_ROW4 + c] = x;
    }
}

/// Rows [16 (sg / 2), +16), dims [16 c, +16) of qk_tile as an A fragment.
fn q_fragment(c: u32) -> CoopA {
    return coopLoadT<CoopA>(&qk_tile[COOP_TILE * (sg / 2u) * QK_ROW4 + 4u * c], QK_ROW4);
}

/// Keys [16 j, +16), dims [16 c, +16) of qk_tile as the B operand K^T.
fn k_fragment(j: u32, c: u32) -> CoopB {
    return coopLoad<CoopB>(&qk_tile[COOP_TILE * j * QK_ROW4 + 4u * c], QK_ROW4);
}

/// One 16-dim step of this subgroup's two score blocks.
fn score_step(qc: CoopA, c: u32) {
    let j = 2u * (sg % 2u);
    sa0 = coopMultiplyAdd(qc, k_fragment(j, c), sa0);
    sa1 = coopMultiplyAdd(qc, k_fragment(j + 1u, c), sa1);
}

/// s = Q_last K^T for the micro-tile (base 2), through `stage`.
fn scores_tile() {
    workgroupBarrier(); // the previous users of qk_tile and stage are done
    stage_rows(true, q_base, params.last_q);
    workgroupBarrier();
    qf0 = q_fragment(0u);
    qf1 = q_fragment(1u);
    qf2 = q_fragment(2u);
    qf3 = q_fragment(3u);
    let wide = params.head_dim > 64u;
    if wide {
        qf4 = q_fragment(4u);
        qf5 = q_fragment(5u);
        qf6 = q_fragment(6u);
        qf7 = q_fragment(7u);
    }
    workgroupBarrier(); // every Q fragment is loaded
    stage_rows(false, k_base + j0 * params.head_dim, min(BLOCK_N, params.seq_len - j0));
    workgroupBarrier();
    sa0 = CoopAcc();
    sa1 = CoopAcc();
    score_step(qf0, 0u);
    score_step(qf1, 1u);
    score_step(qf2, 2u);
    score_step(qf3, 3u);
    if wide {
        score_step(qf4, 4u);
        score_step(qf5, 5u);
        score_step(qf6, 6u);
        score_step(qf7, 7u);
    }
    let at = COOP_TILE * (sg / 2u) * S_ROW4 + 8u * (sg % 2u);
    coopStoreT(sa0, &stage[at], S_ROW4);
    coopStoreT(sa1, &stage[at + 4u], S_ROW4);
    workgroupBarrier();
    let scale = params.scale_log2;
    s[0] = stage[(4u * ty) * S_ROW4 + tx] * scale;
    s[1] = stage[(4u * ty + 1u) * S_ROW4 + tx] * scale;
    s[2] = stage[(4u * ty + 2u) * S_ROW4 + tx] * scale;
    s[3] = stage[(4u * ty + 3u) * S_ROW4 + tx] * scale;
    // The passes barrier before they overwrite `stage`.
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_stats_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    sg = subgroup;
    start_tile(wid.y, wid.x, local);
    tile_stats_pass(wid.y, wid.x);
}

@compute @workgroup_size(256)
fn vertical_slash_estimate_sums_coop_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    if !is_vertical_slash(wid.y) {
        return; // uniform
    }
    sg = subgroup;
    start_tile(wid.y, wid.x, local);
    sums_pass(wid.y, wid.x);
}
