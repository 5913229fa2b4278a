// Cooperative-matrix matmul microbenchmark (tests/wgpu_coop_bench.rs): C = A B with f16
// inputs and f32 accumulation, square DIM x DIM, all row-major, on 16x16x16 cooperative
// matrices. It measures what naga's SPIR-V and the driver make of the WGSL matrix ops, not
// a tuned GEMM (the `matmul_prefetch_*` and `matmul_double_*` kernels at the end pipeline the
// staging as far as WGSL allows: register prefetch, two buffers). Every kernel assumes subgroups of
// 32 invocations (the test skips other adapters), so a workgroup of 128 holds 4 subgroups.
//
// Entry points (subgroup tiles in 16x16 blocks; grids in the test):
// - `matmul_direct_1x1`: A and B straight from storage, one 16x16 accumulator per subgroup,
//   4 subgroups as 2 x 2 (32 x 32 per workgroup);
// - `matmul_direct_2x2`: from storage, a 32 x 32 block per subgroup (4 accumulators, each
//   A and B fragment used twice), 64 x 64 per workgroup; accumulators in named variables;
// - `matmul_direct_2x2_array`: the same with the accumulators in a private array indexed by
//   loop counters (shows whether the driver still keeps them in registers: naga bounds every
//   loop with an extra counter, which can stop the unrolling that constant indices need);
// - `matmul_direct_4x4`: from storage, 64 x 64 per subgroup (16 accumulators), 128 x 128
//   per workgroup;
// - `matmul_shared_4sg`: A and B chunks of BK = 32 staged in workgroup memory (padded rows),
//   then coopLoad from there; 64 x 64 per workgroup of 4 subgroups (32 x 32 each);
// - `matmul_shared_8sg`: the same with 8 subgroups (256 invocations), 128 x 64 per workgroup;
// - `matmul_shared_4sg_rt`: `matmul_shared_4sg` with the workgroup-memory strides of coopLoad
//   unknown to the compiler (equal at run time, taken from `arrayLength`), as in the first coop
//   attention kernel, which passed `params.head_dim`.
// - `matmul_shared_2x4`: staged like `matmul_shared_8sg` but with named accumulators: 8
//   subgroups of 32 x 64 (2 x 4), 128 x 128 per workgroup (the shared kernels above keep their
//   accumulators in an array behind a pointer, which `matmul_direct_2x2_array` shows spills);
// - `matmul_shared_4x4`: staged, named, 4 subgroups of 64 x 64 (16 accumulators), 128 x 128
//   per workgroup: the same loads per product as `matmul_direct_4x4`, from workgroup memory;
// - `mma_peak_2x4`: no loads in the loop: each subgroup loads 2 A and 4 B fragments once and
//   multiplies them DIM / 16 times into 8 named accumulators (the grid of a 128 x 64 block
//   per workgroup: as many products as the matmul). C = (DIM / 16) A[rows, 0..16] B[0..16,
//   cols]: the ceiling of the matrix instructions alone.
enable f16;
enable wgpu_cooperative_matrix;
// Matrix ops must run in subgroup-uniform control flow; every branch and loop bound below
// depends only on constants, workgroup_id and subgroup_id.
diagnostic(off, derivative_uniformity);

/// Rows = columns = inner dimension (a pipeline constant: strides are compile-time).
override DIM: u32 = 4096u;
/// Side of a cooperative matrix.
const TILE: u32 = 16u;
/// K chunk staged per step by the shared-memory kernels.
const BK: u32 = 32u;
/// Padded row of a staged A chunk, in vec4<f16> (BK + 8 halves: 16-byte aligned rows that
/// start in different bank groups).
const A_ROW4: u32 = BK / 4u + 2u;
/// Padded row of a staged B chunk (64 columns + 8), in vec4<f16>.
const B_ROW4: u32 = 64u / 4u + 2u;

@group(0) @binding(0) var<storage, read> a: array<vec4<f16>>;       // [DIM, DIM]
@group(0) @binding(1) var<storage, read> b: array<vec4<f16>>;       // [DIM, DIM]
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>; // [DIM, DIM]

// Staged chunks of the shared-memory kernels: A [128, BK], B [BK, 64].
var<workgroup> a_tile: array<vec4<f16>, 128u * A_ROW4>;
var<workgroup> b_tile: array<vec4<f16>, BK * B_ROW4>;
/// Padded row of a staged 128-column B chunk, in vec4<f16>.
const WIDE_B_ROW4: u32 = 128u / 4u + 2u;
// Staged B chunk of the 128 x 128 named kernels: [BK, 128].
var<workgroup> wide_b_tile: array<vec4<f16>, BK * WIDE_B_ROW4>;

alias Acc = coop_mat16x16<f32, C>;
alias MatA = coop_mat16x16<f16, A>;
alias MatB = coop_mat16x16<f16, B>;

/// A rows [row, row + 16) x columns [kk, kk + 16), from storage.
fn a_frag(row: u32, kk: u32) -> MatA {
    return coopLoadT<MatA>(&a[(row * DIM + kk) / 4u], DIM / 4u);
}

/// B rows [kk, kk + 16) x columns [col, col + 16), from storage.
fn b_frag(kk: u32, col: u32) -> MatB {
    return coopLoadT<MatB>(&b[(kk * DIM + col) / 4u], DIM / 4u);
}

fn store_c(acc: Acc, row: u32, col: u32) {
    coopStoreT(acc, &c[(row * DIM + col) / 4u], DIM / 4u);
}

/// Four accumulators side by side: C rows [row, row + 16) x columns [col, col + 64).
fn store_row4(a0: Acc, a1: Acc, a2: Acc, a3: Acc, row: u32, col: u32) {
    store_c(a0, row, col);
    store_c(a1, row, col + TILE);
    store_c(a2, row, col + 2u * TILE);
    store_c(a3, row, col + 3u * TILE);
}

@compute @workgroup_size(128)
fn matmul_direct_1x1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
    let row = wid.y * 32u + (sg / 2u) * TILE;
    let col = wid.x * 32u + (sg % 2u) * TILE;
    var acc = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        acc = coopMultiplyAdd(a_frag(row, kk), b_frag(kk, col), acc);
    }
    store_c(acc, row, col);
}

@compute @workgroup_size(128)
fn matmul_direct_2x2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
    let row = wid.y * 64u + (sg / 2u) * 32u;
    let col = wid.x * 64u + (sg % 2u) * 32u;
    var c00 = Acc();
    var c01 = Acc();
    var c10 = Acc();
    var c11 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let a0 = a_frag(row, kk);
        let a1 = a_frag(row + TILE, kk);
        let b0 = b_frag(kk, col);
        let b1 = b_frag(kk, col + TILE);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
    }
    store_c(c00, row, col);
    store_c(c01, row, col + TILE);
    store_c(c10, row + TILE, col);
    store_c(c11, row + TILE, col + TILE);
}

@compute @workgroup_size(128)
fn matmul_direct_2x2_array(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
    let row = wid.y * 64u + (sg / 2u) * 32u;
    let col = wid.x * 64u + (sg % 2u) * 32u;
    var acc: array<Acc, 4>;
    for (var kk = 0u; kk < DIM; kk += TILE) {
        var af: array<MatA, 2>;
        var bf: array<MatB, 2>;
        for (var i = 0u; i < 2u; i++) {
            af[i] = a_frag(row + i * TILE, kk);
            bf[i] = b_frag(kk, col + i * TILE);
        }
        for (var i = 0u; i < 2u; i++) {
            for (var j = 0u; j < 2u; j++) {
                acc[2u * i + j] = coopMultiplyAdd(af[i], bf[j], acc[2u * i + j]);
            }
        }
    }
    for (var i = 0u; i < 2u; i++) {
        for (var j = 0u; j < 2u; j++) {
            store_c(acc[2u * i + j], row + i * TILE, col + j * TILE);
        }
    }
}

@compute @workgroup_size(128)
fn matmul_direct_4x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
    let row = wid.y * 128u + (sg / 2u) * 64u;
    let col = wid.x * 128u + (sg % 2u) * 64u;
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    var c20 = Acc(); var c21 = Acc(); var c22 = Acc(); var c23 = Acc();
    var c30 = Acc(); var c31 = Acc(); var c32 = Acc(); var c33 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let b0 = b_frag(kk, col);
        let b1 = b_frag(kk, col + TILE);
        let b2 = b_frag(kk, col + 2u * TILE);
        let b3 = b_frag(kk, col + 3u * TILE);
        let a0 = a_frag(row, kk);
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        let a1 = a_frag(row + TILE, kk);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
        let a2 = a_frag(row + 2u * TILE, kk);
        c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
        c22 = coopMultiplyAdd(a2, b2, c22); c23 = coopMultiplyAdd(a2, b3, c23);
        let a3 = a_frag(row + 3u * TILE, kk);
        c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
        c32 = coopMultiplyAdd(a3, b2, c32); c33 = coopMultiplyAdd(a3, b3, c33);
    }
    store_row4(c00, c01, c02, c03, row, col);
    let r1 = row + TILE;
    store_row4(c10, c11, c12, c13, r1, col);
    let r2 = row + 2u * TILE;
    store_row4(c20, c21, c22, c23, r2, col);
    let r3 = row + 3u * TILE;
    store_row4(c30, c31, c32, c33, r3, col);
}

/// Stage A rows [row0, row0 + rows) x [kk, kk + BK) and B rows [kk, kk + BK) x
/// [col0, col0 + 64) into workgroup memory; `threads` invocations, one vec4<f16> each per step.
fn stage_chunk(lid: u32, threads: u32, row0: u32, rows: u32, col0: u32, kk: u32) {
    for (var i = lid; i < rows * (BK / 4u); i += threads) {
        let r = i / (BK / 4u);
        let c4 = i % (BK / 4u);
        a_tile[r * A_ROW4 + c4] = a[((row0 + r) * DIM + kk) / 4u + c4];
    }
    for (var i = lid; i < BK * 16u; i += threads) {
        let r = i / 16u;
        let c4 = i % 16u;
        b_tile[r * B_ROW4 + c4] = b[((kk + r) * DIM + col0) / 4u + c4];
    }
}

/// One subgroup's 32 x 32 block from the staged chunk: rows [r, r + 32) of a_tile, columns
/// [cc, cc + 32) of b_tile, BK / 16 steps.
fn mma_staged_2x2(r: u32, cc: u32, acc: ptr<function, array<Acc, 4>>) {
    mma_staged_2x2_strides(r, cc, A_ROW4, B_ROW4, acc);
}

/// `mma_staged_2x2` with the staged rows' strides (in vec4<f16>) as arguments.
fn mma_staged_2x2_strides(r: u32, cc: u32, sa: u32, sb: u32, acc: ptr<function, array<Acc, 4>>) {
    for (var s = 0u; s < BK; s += TILE) {
        let a0 = coopLoadT<MatA>(&a_tile[r * sa + s / 4u], sa);
        let a1 = coopLoadT<MatA>(&a_tile[(r + TILE) * sa + s / 4u], sa);
        let b0 = coopLoadT<MatB>(&b_tile[s * sb + cc / 4u], sb);
        let b1 = coopLoadT<MatB>(&b_tile[s * sb + (cc + TILE) / 4u], sb);
        (*acc)[0] = coopMultiplyAdd(a0, b0, (*acc)[0]);
        (*acc)[1] = coopMultiplyAdd(a0, b1, (*acc)[1]);
        (*acc)[2] = coopMultiplyAdd(a1, b0, (*acc)[2]);
        (*acc)[3] = coopMultiplyAdd(a1, b1, (*acc)[3]);
    }
}

fn store_2x2(acc: array<Acc, 4>, row: u32, col: u32) {
    store_c(acc[0], row, col);
    store_c(acc[1], row, col + TILE);
    store_c(acc[2], row + TILE, col);
    store_c(acc[3], row + TILE, col + TILE);
}

@compute @workgroup_size(128)
fn matmul_shared_4sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 32u;
    var acc: array<Acc, 4>;
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        stage_chunk(lid, 128u, row0, 64u, col0, kk);
        workgroupBarrier();
        mma_staged_2x2(r, cc, &acc);
    }
    store_2x2(acc, row0 + r, col0 + cc);
}

@compute @workgroup_size(256)
fn matmul_shared_8sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 64u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 32u;
    var acc: array<Acc, 4>;
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        stage_chunk(lid, 256u, row0, 128u, col0, kk);
        workgroupBarrier();
        mma_staged_2x2(r, cc, &acc);
    }
    store_2x2(acc, row0 + r, col0 + cc);
}

@compute @workgroup_size(128)
fn matmul_shared_4sg_rt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    // A_ROW4 and B_ROW4 at run time: c always has DIM * DIM / 4 > 0 elements.
    let unknown = arrayLength(&c) == 0u;
    let sa = select(A_ROW4, 1u, unknown);
    let sb = select(B_ROW4, 1u, unknown);
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 32u;
    var acc: array<Acc, 4>;
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        stage_chunk(lid, 128u, row0, 64u, col0, kk);
        workgroupBarrier();
        mma_staged_2x2_strides(r, cc, sa, sb, &acc);
    }
    store_2x2(acc, row0 + r, col0 + cc);
}

/// Stage A rows [row0, row0 + 128) x [kk, kk + BK) into a_tile and B rows [kk, kk + BK) x
/// [col0, col0 + 128) into wide_b_tile; `threads` invocations, one vec4<f16> each per step.
fn stage_wide_chunk(lid: u32, threads: u32, row0: u32, col0: u32, kk: u32) {
    for (var i = lid; i < 128u * (BK / 4u); i += threads) {
        let r = i / (BK / 4u);
        let c4 = i % (BK / 4u);
        a_tile[r * A_ROW4 + c4] = a[((row0 + r) * DIM + kk) / 4u + c4];
    }
    for (var i = lid; i < BK * 32u; i += threads) {
        let r = i / 32u;
        let c4 = i % 32u;
        wide_b_tile[r * WIDE_B_ROW4 + c4] = b[((kk + r) * DIM + col0) / 4u + c4];
    }
}

/// Staged A rows [r, r + 16) x chunk columns [s, s + 16).
fn a_staged(r: u32, s: u32) -> MatA {
    return coopLoadT<MatA>(&a_tile[r * A_ROW4 + s / 4u], A_ROW4);
}

/// Staged B chunk rows [s, s + 16) x columns [cc, cc + 16).
fn b_staged(s: u32, cc: u32) -> MatB {
    return coopLoadT<MatB>(&wide_b_tile[s * WIDE_B_ROW4 + cc / 4u], WIDE_B_ROW4);
}

@compute @workgroup_size(256)
fn matmul_shared_2x4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        stage_wide_chunk(lid, 256u, row0, col0, kk);
        workgroupBarrier();
        for (var s = 0u; s < BK; s += TILE) {
            let b0 = b_staged(s, cc);
            let b1 = b_staged(s, cc + TILE);
            let b2 = b_staged(s, cc + 2u * TILE);
            let b3 = b_staged(s, cc + 3u * TILE);
            let a0 = a_staged(r, s);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
            let a1 = a_staged(r + TILE, s);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
        }
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    let r1 = row + TILE;
    store_row4(c10, c11, c12, c13, r1, col);
}

@compute @workgroup_size(128)
fn matmul_shared_4x4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 64u;
    let cc = (sg % 2u) * 64u;
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    var c20 = Acc(); var c21 = Acc(); var c22 = Acc(); var c23 = Acc();
    var c30 = Acc(); var c31 = Acc(); var c32 = Acc(); var c33 = Acc();
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        stage_wide_chunk(lid, 128u, row0, col0, kk);
        workgroupBarrier();
        for (var s = 0u; s < BK; s += TILE) {
            let b0 = b_staged(s, cc);
            let b1 = b_staged(s, cc + TILE);
            let b2 = b_staged(s, cc + 2u * TILE);
            let b3 = b_staged(s, cc + 3u * TILE);
            let a0 = a_staged(r, s);
            c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
            let a1 = a_staged(r + TILE, s);
            c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
            let a2 = a_staged(r + 2u * TILE, s);
            c20 = coopMultiplyAdd(a2, b0, c20); c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22); c23 = coopMultiplyAdd(a2, b3, c23);
            let a3 = a_staged(r + 3u * TILE, s);
            c30 = coopMultiplyAdd(a3, b0, c30); c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32); c33 = coopMultiplyAdd(a3, b3, c33);
        }
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    let r1 = row + TILE;
    store_row4(c10, c11, c12, c13, r1, col);
    let r2 = row + 2u * TILE;
    store_row4(c20, c21, c22, c23, r2, col);
    let r3 = row + 3u * TILE;
    store_row4(c30, c31, c32, c33, r3, col);
}

@compute @workgroup_size(128)
fn mma_peak_2x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
    let row = wid.y * 128u + sg * 32u;
    let col = wid.x * 64u;
    let a0 = a_frag(row, 0u);
    let a1 = a_frag(row + TILE, 0u);
    let b0 = b_frag(0u, col);
    let b1 = b_frag(0u, col + TILE);
    let b2 = b_frag(0u, col + 2u * TILE);
    let b3 = b_frag(0u, col + 3u * TILE);
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
    }
    store_row4(c00, c01, c02, c03, row, col);
    let r1 = row + TILE;
    store_row4(c10, c11, c12, c13, r1, col);
}

// ---- fragment loads from workgroup memory, alone -------------------------------------------
// The `smem_peak_*` kernels stage A rows [row0, +128) x k [0, PEAK_K) and B k [0, PEAK_K) x
// columns [col0, +128) once, then run the `matmul_shared_2x4` inner step DIM / 16 times on
// them (8 subgroups of 32 x 64, 2 A and 4 B fragment loads per 8 products, no barriers):
// C = (DIM / PEAK_K) A[:, 0..PEAK_K] B[0..PEAK_K, :]. What they time is coopLoad from
// workgroup memory feeding the products, in four layouts:
// - `smem_peak_vec4`: vec4<f16> arrays, B row-major (coopLoadT), as the attention's V and P;
// - `smem_peak_f16`: the same in scalar f16 arrays (pointer and stride in halves);
// - `smem_peak_vec4_kt`: B stored transposed (one row per column, k contiguous) and loaded
//   column-major (coopLoad), as the attention's K^T;
// - `smem_peak_f16_kt`: the same in scalar f16 arrays.

/// k columns staged once by the smem_peak kernels.
const PEAK_K: u32 = 64u;
/// Padded rows: A and B^T [128, PEAK_K + 8 halves], B [PEAK_K, 128 + 8 halves].
const PA_ROW: u32 = PEAK_K + 8u;
const PB_ROW: u32 = 128u + 8u;
const PA_ROW4: u32 = PA_ROW / 4u;
const PB_ROW4: u32 = PB_ROW / 4u;

var<workgroup> pa4: array<vec4<f16>, 128u * PA_ROW4>;   // A [128, PEAK_K]
var<workgroup> pb4: array<vec4<f16>, PEAK_K * PB_ROW4>; // B [PEAK_K, 128]
var<workgroup> pbt4: array<vec4<f16>, 128u * PA_ROW4>;  // B^T [128, PEAK_K]
var<workgroup> pa_h: array<f16, 128u * PA_ROW>;         // A [128, PEAK_K]
var<workgroup> pb_h: array<f16, PEAK_K * PB_ROW>;       // B [PEAK_K, 128]
var<workgroup> pbt_h: array<f16, 128u * PA_ROW>;        // B^T [128, PEAK_K]

fn a_elem(row: u32, col: u32) -> f16 {
    return a[(row * DIM + col) / 4u][col % 4u];
}

fn b_elem(row: u32, col: u32) -> f16 {
    return b[(row * DIM + col) / 4u][col % 4u];
}

/// A rows [row0, +128) x [0, PEAK_K) into pa4 (each kernel stages only the arrays it uses:
/// all six would pass the 48 KiB).
fn stage_pa4(lid: u32, row0: u32) {
    for (var i = lid; i < 128u * (PEAK_K / 4u); i += 256u) {
        let r = i / (PEAK_K / 4u);
        let c4 = i % (PEAK_K / 4u);
        pa4[r * PA_ROW4 + c4] = a[(row0 + r) * DIM / 4u + c4];
    }
}

/// B [0, PEAK_K) x [col0, +128) into pb4.
fn stage_pb4(lid: u32, col0: u32) {
    for (var i = lid; i < PEAK_K * 32u; i += 256u) {
        let r = i / 32u;
        let c4 = i % 32u;
        pb4[r * PB_ROW4 + c4] = b[(r * DIM + col0) / 4u + c4];
    }
}

/// B [0, PEAK_K) x [col0, +128) transposed into pbt4.
fn stage_pbt4(lid: u32, col0: u32) {
    for (var i = lid; i < 128u * (PEAK_K / 4u); i += 256u) {
        let n = i / (PEAK_K / 4u);
        let k = 4u * (i % (PEAK_K / 4u));
        pbt4[n * PA_ROW4 + k / 4u] = vec4<f16>(
            b_elem(k, col0 + n), b_elem(k + 1u, col0 + n), b_elem(k + 2u, col0 + n), b_elem(k + 3u, col0 + n)
        );
    }
}

/// As stage_pa4, stage_pb4 and stage_pbt4, into the scalar arrays.
fn stage_pa_h(lid: u32, row0: u32) {
    for (var i = lid; i < 128u * PEAK_K; i += 256u) {
        pa_h[(i / PEAK_K) * PA_ROW + i % PEAK_K] = a_elem(row0 + i / PEAK_K, i % PEAK_K);
    }
}

fn stage_pb_h(lid: u32, col0: u32) {
    for (var i = lid; i < PEAK_K * 128u; i += 256u) {
        pb_h[(i / 128u) * PB_ROW + i % 128u] = b_elem(i / 128u, col0 + i % 128u);
    }
}

fn stage_pbt_h(lid: u32, col0: u32) {
    for (var i = lid; i < 128u * PEAK_K; i += 256u) {
        pbt_h[(i / PEAK_K) * PA_ROW + i % PEAK_K] = b_elem(i % PEAK_K, col0 + i / PEAK_K);
    }
}

/// Which staged 16-column step the loop at `kk` reads: (kk / 16) salt mod PEAK_K / 16, where
/// `salt` is 1 at run time but unknown to the compiler (from arrayLength), so the loads stay
/// in the loop instead of being hoisted out of it as loop-invariant.
fn peak_step(kk: u32, salt: u32) -> u32 {
    return ((kk / TILE) * salt) % (PEAK_K / TILE) * TILE;
}

fn salt() -> u32 {
    return arrayLength(&a) / (DIM * DIM / 4u);
}

@compute @workgroup_size(256)
fn smem_peak_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    stage_pa4(lid, row0);
    stage_pb4(lid, col0);
    workgroupBarrier();
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    let salt = salt();
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let s = peak_step(kk, salt);
        let b0 = coopLoadT<MatB>(&pb4[s * PB_ROW4 + cc / 4u], PB_ROW4);
        let b1 = coopLoadT<MatB>(&pb4[s * PB_ROW4 + (cc + TILE) / 4u], PB_ROW4);
        let b2 = coopLoadT<MatB>(&pb4[s * PB_ROW4 + (cc + 2u * TILE) / 4u], PB_ROW4);
        let b3 = coopLoadT<MatB>(&pb4[s * PB_ROW4 + (cc + 3u * TILE) / 4u], PB_ROW4);
        let a0 = coopLoadT<MatA>(&pa4[r * PA_ROW4 + s / 4u], PA_ROW4);
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        let a1 = coopLoadT<MatA>(&pa4[(r + TILE) * PA_ROW4 + s / 4u], PA_ROW4);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    store_row4(c10, c11, c12, c13, row + TILE, col);
}

@compute @workgroup_size(256)
fn smem_peak_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    stage_pa_h(lid, row0);
    stage_pb_h(lid, col0);
    workgroupBarrier();
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    let salt = salt();
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let s = peak_step(kk, salt);
        let b0 = coopLoadT<MatB>(&pb_h[s * PB_ROW + cc], PB_ROW);
        let b1 = coopLoadT<MatB>(&pb_h[s * PB_ROW + cc + TILE], PB_ROW);
        let b2 = coopLoadT<MatB>(&pb_h[s * PB_ROW + cc + 2u * TILE], PB_ROW);
        let b3 = coopLoadT<MatB>(&pb_h[s * PB_ROW + cc + 3u * TILE], PB_ROW);
        let a0 = coopLoadT<MatA>(&pa_h[r * PA_ROW + s], PA_ROW);
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        let a1 = coopLoadT<MatA>(&pa_h[(r + TILE) * PA_ROW + s], PA_ROW);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    store_row4(c10, c11, c12, c13, row + TILE, col);
}

@compute @workgroup_size(256)
fn smem_peak_vec4_kt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    stage_pa4(lid, row0);
    stage_pbt4(lid, col0);
    workgroupBarrier();
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    let salt = salt();
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let s = peak_step(kk, salt);
        let b0 = coopLoad<MatB>(&pbt4[cc * PA_ROW4 + s / 4u], PA_ROW4);
        let b1 = coopLoad<MatB>(&pbt4[(cc + TILE) * PA_ROW4 + s / 4u], PA_ROW4);
        let b2 = coopLoad<MatB>(&pbt4[(cc + 2u * TILE) * PA_ROW4 + s / 4u], PA_ROW4);
        let b3 = coopLoad<MatB>(&pbt4[(cc + 3u * TILE) * PA_ROW4 + s / 4u], PA_ROW4);
        let a0 = coopLoadT<MatA>(&pa4[r * PA_ROW4 + s / 4u], PA_ROW4);
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        let a1 = coopLoadT<MatA>(&pa4[(r + TILE) * PA_ROW4 + s / 4u], PA_ROW4);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    store_row4(c10, c11, c12, c13, row + TILE, col);
}

@compute @workgroup_size(256)
fn smem_peak_f16_kt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    stage_pa_h(lid, row0);
    stage_pbt_h(lid, col0);
    workgroupBarrier();
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    let salt = salt();
    var c00 = Acc(); var c01 = Acc(); var c02 = Acc(); var c03 = Acc();
    var c10 = Acc(); var c11 = Acc(); var c12 = Acc(); var c13 = Acc();
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let s = peak_step(kk, salt);
        let b0 = coopLoad<MatB>(&pbt_h[cc * PA_ROW + s], PA_ROW);
        let b1 = coopLoad<MatB>(&pbt_h[(cc + TILE) * PA_ROW + s], PA_ROW);
        let b2 = coopLoad<MatB>(&pbt_h[(cc + 2u * TILE) * PA_ROW + s], PA_ROW);
        let b3 = coopLoad<MatB>(&pbt_h[(cc + 3u * TILE) * PA_ROW + s], PA_ROW);
        let a0 = coopLoadT<MatA>(&pa_h[r * PA_ROW + s], PA_ROW);
        c00 = coopMultiplyAdd(a0, b0, c00); c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02); c03 = coopMultiplyAdd(a0, b3, c03);
        let a1 = coopLoadT<MatA>(&pa_h[(r + TILE) * PA_ROW + s], PA_ROW);
        c10 = coopMultiplyAdd(a1, b0, c10); c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12); c13 = coopMultiplyAdd(a1, b3, c13);
    }
    let row = row0 + r;
    let col = col0 + cc;
    store_row4(c00, c01, c02, c03, row, col);
    store_row4(c10, c11, c12, c13, row + TILE, col);
}

// ---- pipelined staging: how far a staged GEMM gets through this path -------------------------
// `matmul_shared_2x4`'s work (8 subgroups of 32 x 64, 128 x 128 per workgroup) with the
// staging pipelined the ways WGSL allows (no asynchronous copies): the next chunk's global
// loads are issued before this chunk's products and land in registers while they run
// (16-byte loads, as the attention's K and V), then go to workgroup memory:
// - `matmul_prefetch_2x4`: BK = 32, one buffer, two barriers per chunk (18,944 bytes);
// - `matmul_double_2x4`: BK = 32, two buffers, one barrier per chunk (37,888 bytes: one
//   workgroup per SM through the NVIDIA Vulkan driver, tests/wgpu_residency.rs);
// - `matmul_double_2x4_bk16`: BK = 16, two buffers, one barrier per chunk (20,992 bytes: two
//   workgroups per SM if the registers allow).
// A chunk that would start past DIM re-fetches the last one (never read): control flow stays
// uniform and every load in range.

@group(0) @binding(3) var<storage, read> a8: array<mat2x4<f16>>; // a, 8 halves per element
@group(0) @binding(4) var<storage, read> b8: array<mat2x4<f16>>; // b, 8 halves per element

/// One A or B buffer of `matmul_double_2x4` (vec4 elements): A [128, BK], B [BK, 128].
const DA: u32 = 128u * A_ROW4;
const DB: u32 = BK * WIDE_B_ROW4;
var<workgroup> da: array<vec4<f16>, 2u * DA>;
var<workgroup> db: array<vec4<f16>, 2u * DB>;
/// Padded row of a BK = 16 A chunk (16 + 8 halves, 48 bytes) and one buffer of each.
const HA_ROW4: u32 = 16u / 4u + 2u;
const HA: u32 = 128u * HA_ROW4;
const HB: u32 = 16u * WIDE_B_ROW4;
var<workgroup> ha: array<vec4<f16>, 2u * HA>;
var<workgroup> hb: array<vec4<f16>, 2u * HB>;

// The subgroup's 32 x 64 block (rows [r, +32) = g0*, g1*), named (never an array).
var<private> g00: Acc;
var<private> g01: Acc;
var<private> g02: Acc;
var<private> g03: Acc;
var<private> g10: Acc;
var<private> g11: Acc;
var<private> g12: Acc;
var<private> g13: Acc;
// This invocation's fetched 16-byte chunks of the next A (x0, x1) and B (x2, x3) chunk.
var<private> x0: mat2x4<f16>;
var<private> x1: mat2x4<f16>;
var<private> x2: mat2x4<f16>;
var<private> x3: mat2x4<f16>;

fn clear_g() {
    g00 = Acc(); g01 = Acc(); g02 = Acc(); g03 = Acc();
    g10 = Acc(); g11 = Acc(); g12 = Acc(); g13 = Acc();
}

fn store_g(row: u32, col: u32) {
    store_row4(g00, g01, g02, g03, row, col);
    store_row4(g10, g11, g12, g13, row + TILE, col);
}

/// Eight products: rows (a0, a1) x columns (b0..b3).
fn mma_2x4(a0: MatA, a1: MatA, b0: MatB, b1: MatB, b2: MatB, b3: MatB) {
    g00 = coopMultiplyAdd(a0, b0, g00); g01 = coopMultiplyAdd(a0, b1, g01);
    g02 = coopMultiplyAdd(a0, b2, g02); g03 = coopMultiplyAdd(a0, b3, g03);
    g10 = coopMultiplyAdd(a1, b0, g10); g11 = coopMultiplyAdd(a1, b1, g11);
    g12 = coopMultiplyAdd(a1, b2, g12); g13 = coopMultiplyAdd(a1, b3, g13);
}

/// A [row0, +128) x [kk, +32) and B [kk, +32) x [col0, +128): 512 chunks each, two per
/// invocation, into registers.
fn fetch_bk32(lid: u32, row0: u32, col0: u32, kk: u32) {
    x0 = a8[((row0 + lid / 4u) * DIM + kk) / 8u + lid % 4u];
    x1 = a8[((row0 + 64u + lid / 4u) * DIM + kk) / 8u + lid % 4u];
    x2 = b8[((kk + lid / 16u) * DIM + col0) / 8u + lid % 16u];
    x3 = b8[((kk + 16u + lid / 16u) * DIM + col0) / 8u + lid % 16u];
}

/// The fetched BK = 32 chunk into buffer `buf` of da / db.
fn put_double(lid: u32, buf: u32) {
    let a_at = buf * DA + (lid / 4u) * A_ROW4 + 2u * (lid % 4u);
    da[a_at] = x0[0];
    da[a_at + 1u] = x0[1];
    da[a_at + 64u * A_ROW4] = x1[0];
    da[a_at + 64u * A_ROW4 + 1u] = x1[1];
    let b_at = buf * DB + (lid / 16u) * WIDE_B_ROW4 + 2u * (lid % 16u);
    db[b_at] = x2[0];
    db[b_at + 1u] = x2[1];
    db[b_at + 16u * WIDE_B_ROW4] = x3[0];
    db[b_at + 16u * WIDE_B_ROW4 + 1u] = x3[1];
}

/// The fetched BK = 32 chunk into a_tile / wide_b_tile.
fn put_single(lid: u32) {
    let a_at = (lid / 4u) * A_ROW4 + 2u * (lid % 4u);
    a_tile[a_at] = x0[0];
    a_tile[a_at + 1u] = x0[1];
    a_tile[a_at + 64u * A_ROW4] = x1[0];
    a_tile[a_at + 64u * A_ROW4 + 1u] = x1[1];
    let b_at = (lid / 16u) * WIDE_B_ROW4 + 2u * (lid % 16u);
    wide_b_tile[b_at] = x2[0];
    wide_b_tile[b_at + 1u] = x2[1];
    wide_b_tile[b_at + 16u * WIDE_B_ROW4] = x3[0];
    wide_b_tile[b_at + 16u * WIDE_B_ROW4 + 1u] = x3[1];
}

/// k [s, s + 16) of the chunk in a_tile / wide_b_tile.
fn step_single(r: u32, cc: u32, s: u32) {
    mma_2x4(
        a_staged(r, s), a_staged(r + TILE, s),
        b_staged(s, cc), b_staged(s, cc + TILE), b_staged(s, cc + 2u * TILE), b_staged(s, cc + 3u * TILE),
    );
}

fn da_frag(buf: u32, r: u32, s: u32) -> MatA {
    return coopLoadT<MatA>(&da[buf * DA + r * A_ROW4 + s / 4u], A_ROW4);
}

fn db_frag(buf: u32, s: u32, cc: u32) -> MatB {
    return coopLoadT<MatB>(&db[buf * DB + s * WIDE_B_ROW4 + cc / 4u], WIDE_B_ROW4);
}

/// k [s, s + 16) of the chunk in buffer `buf` of da / db.
fn step_double(buf: u32, r: u32, cc: u32, s: u32) {
    mma_2x4(
        da_frag(buf, r, s), da_frag(buf, r + TILE, s),
        db_frag(buf, s, cc), db_frag(buf, s, cc + TILE), db_frag(buf, s, cc + 2u * TILE),
        db_frag(buf, s, cc + 3u * TILE),
    );
}

@compute @workgroup_size(256)
fn matmul_prefetch_2x4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    clear_g();
    fetch_bk32(lid, row0, col0, 0u);
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier(); // the last chunk's products are done
        put_single(lid);
        workgroupBarrier();
        fetch_bk32(lid, row0, col0, min(kk + BK, DIM - BK)); // lands during the products
        step_single(r, cc, 0u);
        step_single(r, cc, TILE);
    }
    store_g(row0 + r, col0 + cc);
}

@compute @workgroup_size(256)
fn matmul_double_2x4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    clear_g();
    fetch_bk32(lid, row0, col0, 0u);
    put_double(lid, 0u);
    workgroupBarrier();
    fetch_bk32(lid, row0, col0, min(BK, DIM - BK));
    for (var kk = 0u; kk < DIM; kk += BK) {
        let buf = (kk / BK) % 2u;
        step_double(buf, r, cc, 0u);
        step_double(buf, r, cc, TILE);
        // The other buffer was last read by the previous chunk's products, before the last
        // barrier.
        put_double(lid, 1u - buf);
        workgroupBarrier();
        fetch_bk32(lid, row0, col0, min(kk + 2u * BK, DIM - BK));
    }
    store_g(row0 + r, col0 + cc);
}

/// A [row0, +128) x [kk, +16) and B [kk, +16) x [col0, +128): 256 chunks each, one per
/// invocation.
fn fetch_bk16(lid: u32, row0: u32, col0: u32, kk: u32) {
    x0 = a8[((row0 + lid / 2u) * DIM + kk) / 8u + lid % 2u];
    x2 = b8[((kk + lid / 16u) * DIM + col0) / 8u + lid % 16u];
}

fn put_bk16(lid: u32, buf: u32) {
    let a_at = buf * HA + (lid / 2u) * HA_ROW4 + 2u * (lid % 2u);
    ha[a_at] = x0[0];
    ha[a_at + 1u] = x0[1];
    let b_at = buf * HB + (lid / 16u) * WIDE_B_ROW4 + 2u * (lid % 16u);
    hb[b_at] = x2[0];
    hb[b_at + 1u] = x2[1];
}

fn ha_frag(buf: u32, r: u32) -> MatA {
    return coopLoadT<MatA>(&ha[buf * HA + r * HA_ROW4], HA_ROW4);
}

fn hb_frag(buf: u32, cc: u32) -> MatB {
    return coopLoadT<MatB>(&hb[buf * HB + cc / 4u], WIDE_B_ROW4);
}

@compute @workgroup_size(256)
fn matmul_double_2x4_bk16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    clear_g();
    fetch_bk16(lid, row0, col0, 0u);
    put_bk16(lid, 0u);
    workgroupBarrier();
    fetch_bk16(lid, row0, col0, min(TILE, DIM - TILE));
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let buf = (kk / TILE) % 2u;
        mma_2x4(
            ha_frag(buf, r), ha_frag(buf, r + TILE),
            hb_frag(buf, cc), hb_frag(buf, cc + TILE), hb_frag(buf, cc + 2u * TILE),
            hb_frag(buf, cc + 3u * TILE),
        );
        put_bk16(lid, 1u - buf);
        workgroupBarrier();
        fetch_bk16(lid, row0, col0, min(kk + 2u * TILE, DIM - TILE));
    }
    store_g(row0 + r, col0 + cc);
}

// ---- one workgroup of 16 subgroups: does lockstep cost what two workgroups of 8 hide? -------
// The same pipelines with 512 invocations (16 subgroups of 32 x 64, 256 x 128 per workgroup,
// one workgroup per SM), against the 256-invocation kernels above, two per SM:
// - `matmul_prefetch_2x4_wg512`: BK = 32, one buffer, two barriers per chunk (29,184 bytes);
// - `matmul_double_2x4_bk16_wg512`: BK = 16, two buffers, one barrier per chunk (33,280 bytes).

var<workgroup> wa: array<vec4<f16>, 256u * A_ROW4>;       // A [256, 32]
var<workgroup> wha: array<vec4<f16>, 2u * 256u * HA_ROW4>; // 2 x A [256, 16]

/// A [row0, +256) x [kk, +32) (1024 chunks, two per invocation) and B [kk, +32) x [col0, +128)
/// (512 chunks, one per invocation).
fn fetch_bk32_wg512(lid: u32, row0: u32, col0: u32, kk: u32) {
    x0 = a8[((row0 + lid / 4u) * DIM + kk) / 8u + lid % 4u];
    x1 = a8[((row0 + 128u + lid / 4u) * DIM + kk) / 8u + lid % 4u];
    x2 = b8[((kk + lid / 16u) * DIM + col0) / 8u + lid % 16u];
}

fn put_bk32_wg512(lid: u32) {
    let a_at = (lid / 4u) * A_ROW4 + 2u * (lid % 4u);
    wa[a_at] = x0[0];
    wa[a_at + 1u] = x0[1];
    wa[a_at + 128u * A_ROW4] = x1[0];
    wa[a_at + 128u * A_ROW4 + 1u] = x1[1];
    let b_at = (lid / 16u) * WIDE_B_ROW4 + 2u * (lid % 16u);
    wide_b_tile[b_at] = x2[0];
    wide_b_tile[b_at + 1u] = x2[1];
}

fn wa_frag(r: u32, s: u32) -> MatA {
    return coopLoadT<MatA>(&wa[r * A_ROW4 + s / 4u], A_ROW4);
}

@compute @workgroup_size(512)
fn matmul_prefetch_2x4_wg512(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 256u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    clear_g();
    fetch_bk32_wg512(lid, row0, col0, 0u);
    for (var kk = 0u; kk < DIM; kk += BK) {
        workgroupBarrier();
        put_bk32_wg512(lid);
        workgroupBarrier();
        fetch_bk32_wg512(lid, row0, col0, min(kk + BK, DIM - BK));
        for (var s = 0u; s < BK; s += TILE) {
            mma_2x4(
                wa_frag(r, s), wa_frag(r + TILE, s),
                b_staged(s, cc), b_staged(s, cc + TILE), b_staged(s, cc + 2u * TILE),
                b_staged(s, cc + 3u * TILE),
            );
        }
    }
    store_g(row0 + r, col0 + cc);
}

/// A [row0, +256) x [kk, +16) (512 chunks, one per invocation) and B [kk, +16) x [col0, +128)
/// (256 chunks: invocations below 256; the others fetch a chunk they do not store).
fn fetch_bk16_wg512(lid: u32, row0: u32, col0: u32, kk: u32) {
    x0 = a8[((row0 + lid / 2u) * DIM + kk) / 8u + lid % 2u];
    let bl = lid % 256u;
    x2 = b8[((kk + bl / 16u) * DIM + col0) / 8u + bl % 16u];
}

fn put_bk16_wg512(lid: u32, buf: u32) {
    let a_at = buf * 256u * HA_ROW4 + (lid / 2u) * HA_ROW4 + 2u * (lid % 2u);
    wha[a_at] = x0[0];
    wha[a_at + 1u] = x0[1];
    if lid < 256u {
        let b_at = buf * HB + (lid / 16u) * WIDE_B_ROW4 + 2u * (lid % 16u);
        hb[b_at] = x2[0];
        hb[b_at + 1u] = x2[1];
    }
}

fn wha_frag(buf: u32, r: u32) -> MatA {
    return coopLoadT<MatA>(&wha[buf * 256u * HA_ROW4 + r * HA_ROW4], HA_ROW4);
}

@compute @workgroup_size(512)
fn matmul_double_2x4_bk16_wg512(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let row0 = wid.y * 256u;
    let col0 = wid.x * 128u;
    let r = (sg / 2u) * 32u;
    let cc = (sg % 2u) * 64u;
    clear_g();
    fetch_bk16_wg512(lid, row0, col0, 0u);
    put_bk16_wg512(lid, 0u);
    workgroupBarrier();
    fetch_bk16_wg512(lid, row0, col0, min(TILE, DIM - TILE));
    for (var kk = 0u; kk < DIM; kk += TILE) {
        let buf = (kk / TILE) % 2u;
        mma_2x4(
            wha_frag(buf, r), wha_frag(buf, r + TILE),
            hb_frag(buf, cc), hb_frag(buf, cc + TILE), hb_frag(buf, cc + 2u * TILE),
            hb_frag(buf, cc + 3u * TILE),
        );
        put_bk16_wg512(lid, 1u - buf);
        workgroupBarrier();
        fetch_bk16_wg512(lid, row0, col0, min(kk + 2u * TILE, DIM - TILE));
    }
    store_g(row0 + r, col0 + cc);
}
