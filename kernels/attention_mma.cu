// FlashAttention-2 style attention on tensor cores (mma.sync m16n8k16, f16/bf16 inputs,
// f32 accumulation, online softmax in exp2), one core for dense causal, A-shape and the
// shared sparse index. A CTA owns one 64-row block (BLOCK_M = BLOCK; 4 warps x 16 rows, or
// 2 warps x 32 rows: WARP_MT) and
// walks the key tiles its mode names (TileIter): aligned 64-key tiles (dense, A-shape), the
// index's chunks, and its single columns gathered 64 at a time into dense tiles. K and V
// tiles are staged through shared memory with cp.async; V(t)'s copy overlaps Q.K(t)^T and
// K(t+1)'s overlaps P.V(t). Q stays in shared memory (dynamic: 3 x [64, D + 8] halfs).
// Uses AttnParams and MODE_* from attention.cu and the helpers of mma_common.cuh (same
// module).

#define BLOCK_M 64
#define BLOCK_N 64

// One key tile: 64 consecutive keys from `start`, or (gather) up to 64 listed columns.
struct Tile {
    int start;
    const int* cols; // non-null: gathered columns cols[0..count)
    int count;
    bool full;       // no key of the tile needs masking for any row of the block
};

// "Which key tiles does row block m visit": the policy lives here, not in the core.
struct TileIter {
    int mode, m, bm, n, sink, local; // bm: rows of the CTA (64, or 128 for dense/A-shape)
    int cc, bc;
    const int* cols;
    const int* offsets;
    int t;

    __device__ bool next(Tile& tile) {
        const int start_m = m * bm, end_m = min(start_m + bm, n);
        if (mode == MODE_SPARSE) {
            const int gathers = (cc + BLOCK_N - 1) / BLOCK_N;
            if (t < gathers) {
                tile.start = 0;
                tile.cols = cols + t * BLOCK_N;
                tile.count = min(BLOCK_N, cc - t * BLOCK_N);
                tile.full = tile.count == BLOCK_N; // columns precede the row block
                ++t;
                return true;
            }
            if (t < gathers + bc) {
                tile.start = offsets[t - gathers];
                tile.cols = nullptr;
                tile.count = BLOCK_N;
                tile.full = tile.start + BLOCK_N - 1 <= start_m && tile.start + BLOCK_N <= n;
                ++t;
                return true;
            }
            return false;
        }
        // Dense and A-shape: aligned tiles s = 64t up to the one holding the last row.
        for (;;) {
            const int s = t * BLOCK_N;
            if (s > end_m - 1) return false;
            ++t;
            tile.start = s;
            tile.cols = nullptr;
            tile.count = BLOCK_N;
            const int e = s + BLOCK_N - 1; // last key of the tile
            if (mode == MODE_DENSE) {
                tile.full = e <= start_m && e < n;
                return true;
            }
            // A-shape: key j is seen by row i iff j <= i and (j < sink or i - j < local).
            const bool any_sink = s < sink;
            const bool any_local = e > start_m - local; // some row i >= start_m has i - e < local
            if (!any_sink && !any_local) continue;
            const bool all_sink = e < sink;
            const bool all_local = (end_m - 1) - s < local;
            tile.full = e <= start_m && e < n && (all_sink || all_local);
            return true;
        }
    }
};

// load_kv_tile: the tile's 64 key rows of K or V into shared rows of D + SMEM_PAD halfs
// (`dst`: the tile's shared-window address); rows of missing keys (padding, >= N) are
// zero-filled. NT threads, each copying fixed 16-byte chunks: row r0 + pass * NT / CHUNKS,
// chunk tid % CHUNKS. Contiguous tiles wholly below N take the unchecked path.
template <int D, int NT>
__device__ __forceinline__ void load_kv_rows(u32 dst, const u16* src, const Tile& tile, int n) {
    constexpr int CHUNKS = D / 8;            // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = NT / CHUNKS;
    constexpr int PASSES = BLOCK_N / ROWS_PER_PASS;
    static_assert(NT % CHUNKS == 0 && BLOCK_N % ROWS_PER_PASS == 0, "thread layout");
    const int ch = threadIdx.x % CHUNKS, r0 = threadIdx.x / CHUNKS;
    const u32 at = dst + (u32)(r0 * (D + SMEM_PAD) + ch * 8) * 2;
    constexpr u32 PASS_BYTES = ROWS_PER_PASS * (D + SMEM_PAD) * 2;
    if (!tile.cols) {
        const u16* from = src + (size_t)(tile.start + r0) * D + ch * 8;
        if (tile.start + BLOCK_N <= n) {
#pragma unroll
            for (int pass = 0; pass < PASSES; ++pass)
                cp_async16_at(at + pass * PASS_BYTES, from + (size_t)pass * ROWS_PER_PASS * D);
        } else {
#pragma unroll
            for (int pass = 0; pass < PASSES; ++pass) {
                const bool ok = tile.start + r0 + pass * ROWS_PER_PASS < n;
                cp_async16_at(at + pass * PASS_BYTES,
                              ok ? from + (size_t)pass * ROWS_PER_PASS * D : src, ok);
            }
        }
    } else {
#pragma unroll
        for (int pass = 0; pass < PASSES; ++pass) {
            const int r = r0 + pass * ROWS_PER_PASS;
            const int key = r < tile.count ? tile.cols[r] : -1;
            const bool ok = key >= 0 && key < n;
            cp_async16_at(at + pass * PASS_BYTES, src + (size_t)(ok ? key : 0) * D + ch * 8, ok);
        }
    }
}

// The tile's key of every column (-1: none), for apply_mask.
__device__ __forceinline__ void load_keys(const Tile& tile, int n, int* keys_s) {
    if (threadIdx.x < BLOCK_N) {
        const int t = threadIdx.x;
        const int key = tile.cols ? (t < tile.count ? tile.cols[t] : -1) : tile.start + t;
        keys_s[t] = key < n ? key : -1;
    }
}

// WARP_MT: m16 tiles per warp (each K/V fragment feeds WARP_MT MMAs); BM / (16 WARP_MT) warps.
// BM: query rows per CTA, BLOCK_M (one index row block) or 128 (dense and A-shape only: each
// K/V tile then serves twice the rows, halving L2 traffic per FLOP).
template <typename T, int D, int WARP_MT, int BM>
__device__ void attention_mma(const AttnParams p, const u16* __restrict__ q,
                              const u16* __restrict__ k, const u16* __restrict__ v,
                              u16* __restrict__ out, const int* __restrict__ windows,
                              const int* __restrict__ head_uses_index,
                              const int* __restrict__ block_count, const int* __restrict__ block_offset,
                              const int* __restrict__ column_count,
                              const int* __restrict__ column_index) {
    constexpr int LD = D + SMEM_PAD;
    constexpr int KD = D / 16; // k-steps of Q.K^T
    constexpr int NB = BLOCK_N / 8;
    constexpr int DB = D / 8;
    constexpr int CHUNKS = D / 8; // 16-byte chunks per row of the Q tile
    constexpr int NT = 2 * BM / WARP_MT; // threads: BM / (16 WARP_MT) warps
    // Dynamic shared memory: q_s [BM, LD], k_s [64, LD], v_s [64, LD] halfs.
    extern __shared__ __align__(16) u16 smem[];
    u16* q_s = smem;
    u16* k_s = q_s + BM * LD;
    u16* v_s = k_s + BLOCK_N * LD;
    __shared__ int keys_s[BLOCK_N];

    const int bh = blockIdx.y, b = bh / p.q_heads, h = bh % p.q_heads;
    const int m = gridDim.x - 1 - blockIdx.x; // heaviest row blocks first
    const int n = p.seq_len;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int sink = 0, local = 0;
    if (p.mode == MODE_A_SHAPE) {
        sink = windows[2 * h];
        local = windows[2 * h + 1];
        if (sink < 0) return;
    }
    if (p.mode == MODE_SPARSE && !head_uses_index[h]) return;
    const int hk = h / (p.q_heads / p.kv_heads);
    const u16* qh = q + (size_t)bh * n * D;
    const u16* kh = k + ((size_t)b * p.kv_heads + hk) * n * D;
    const u16* vh = v + ((size_t)b * p.kv_heads + hk) * n * D;
    const int start_m = m * BM;

    // load_q_tile: stays in shared memory; A fragments are re-read per k-step.
    for (int c = tid; c < BM * CHUNKS; c += NT) {
        const int r = c / CHUNKS, ch = c % CHUNKS;
        const int i = start_m + r;
        cp_async16(&q_s[r * LD + ch * 8], qh + (size_t)min(i, n - 1) * D + ch * 8, i < n);
    }
    cp_async_commit();

    // Shared-window addresses of this lane's ldmatrix rows; every fragment's address is one
    // of these plus a compile-time offset.
    const int warp_row = warp * 16 * WARP_MT; // first of this warp's rows within the block
    const u32 k_tile = smem_addr(k_s), v_tile = smem_addr(v_s);
    const u32 q_frag = smem_addr(q_s) + (u32)((warp_row + (lane & 15)) * LD + (lane >> 4) * 8) * 2;
    const u32 k_frag = k_tile + (u32)(((lane & 7) + ((lane >> 4) << 3)) * LD + ((lane >> 3) & 1) * 8) * 2;
    const u32 v_frag = v_tile + (u32)(((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8) * 2;

    float o[WARP_MT][DB][4];
#pragma unroll
    for (int mt = 0; mt < WARP_MT; ++mt)
#pragma unroll
        for (int db = 0; db < DB; ++db) o[mt][db][0] = o[mt][db][1] = o[mt][db][2] = o[mt][db][3] = 0.f;
    float row_m[WARP_MT][2], row_l[WARP_MT][2];
#pragma unroll
    for (int mt = 0; mt < WARP_MT; ++mt) {
        row_m[mt][0] = row_m[mt][1] = NEG_INF;
        row_l[mt][0] = row_l[mt][1] = 0.f;
    }
    const int g = lane >> 2, cq = (lane & 3) * 2;

    TileIter it;
    it.mode = p.mode;
    it.m = m;
    it.bm = BM;
    it.n = n;
    it.sink = sink;
    it.local = local;
    it.t = 0;
    it.cc = 0;
    it.bc = 0;
    it.cols = nullptr;
    it.offsets = nullptr;
    if (p.mode == MODE_SPARSE) {
        const size_t row = (size_t)bh * p.rows + m;
        it.cc = column_count[row];
        it.bc = block_count[row];
        it.cols = column_index + row * p.nnz_v;
        it.offsets = block_offset + row * p.nnz_s;
    }
    // Software pipeline: V(t) streams in while S(t) is computed, K(t+1) while P(t).V(t) is.
    Tile tile, next_tile;
    bool have = it.next(tile);
    if (have) {
        load_keys(tile, n, keys_s);
        load_kv_rows<D, NT>(k_tile, kh, tile, n);
        cp_async_commit();
    }
    while (have) {
        const bool have_next = it.next(next_tile);
        cp_async_wait<0>(); // Q, K(t) and its keys are in
        __syncthreads();
        load_kv_rows<D, NT>(v_tile, vh, tile, n);
        cp_async_commit();

        // scores: S = Q K^T for this warp's 16 * WARP_MT rows x 64 keys; each K fragment
        // serves WARP_MT m16 tiles.
        float s[WARP_MT][NB][4];
#pragma unroll
        for (int mt = 0; mt < WARP_MT; ++mt)
#pragma unroll
            for (int nb = 0; nb < NB; ++nb) s[mt][nb][0] = s[mt][nb][1] = s[mt][nb][2] = s[mt][nb][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            u32 qf[WARP_MT][4];
#pragma unroll
            for (int mt = 0; mt < WARP_MT; ++mt) ldmatrix_x4(qf[mt], q_frag + (mt * 16 * LD + kk * 16) * 2);
#pragma unroll
            for (int nb = 0; nb < NB; nb += 2) {
                u32 bfr[4];
                ldmatrix_x4(bfr, k_frag + (nb * 8 * LD + kk * 16) * 2);
#pragma unroll
                for (int mt = 0; mt < WARP_MT; ++mt) {
                    Mma<T>::run(s[mt][nb], qf[mt], bfr[0], bfr[1]);
                    Mma<T>::run(s[mt][nb + 1], qf[mt], bfr[2], bfr[3]);
                }
            }
        }
        // apply_mask: only tiles that need it (a CTA-uniform branch); keys past N, after
        // the row, or outside an A-shape window score -inf.
        if (!tile.full) {
#pragma unroll
            for (int mt = 0; mt < WARP_MT; ++mt) {
                const int i0 = start_m + warp_row + mt * 16 + g;
#pragma unroll
                for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int key = keys_s[nb * 8 + cq + (e & 1)];
                        const int i = i0 + (e >> 1) * 8;
                        bool ok = key >= 0 && key <= i;
                        if (p.mode == MODE_A_SHAPE) ok = ok && (key < sink || i - key < local);
                        if (!ok) s[mt][nb][e] = NEG_INF;
                    }
                }
            }
        }
        // online_softmax (exp2; softmax scale * LOG2E folded into scale_log2).
        u32 pf[WARP_MT][NB / 2][4]; // P as A fragments of the P.V product
#pragma unroll
        for (int mt = 0; mt < WARP_MT; ++mt) {
            float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
            for (int nb = 0; nb < NB; ++nb) {
                tile_max[0] = fmaxf(tile_max[0], fmaxf(s[mt][nb][0], s[mt][nb][1]));
                tile_max[1] = fmaxf(tile_max[1], fmaxf(s[mt][nb][2], s[mt][nb][3]));
            }
            float m_use[2], corr[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
                tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
                // Row maxima stay in raw q.k units; scale_log2 is applied inside each
                // exponent with one FMA: 2^(s * scale_log2 - m * scale_log2).
                const float m_new = fmaxf(row_m[mt][r], tile_max[r]);
                m_use[r] = m_new == NEG_INF ? 0.f : m_new * p.scale_log2;
                corr[r] = fast_exp2(row_m[mt][r] * p.scale_log2 - m_use[r]);
                row_m[mt][r] = m_new;
                row_l[mt][r] *= corr[r];
            }
#pragma unroll
            for (int nb = 0; nb < NB; ++nb) {
                const float sc = p.scale_log2;
                const float p0 = fast_exp2(fmaf(s[mt][nb][0], sc, -m_use[0]));
                const float p1 = fast_exp2(fmaf(s[mt][nb][1], sc, -m_use[0]));
                const float p2 = fast_exp2(fmaf(s[mt][nb][2], sc, -m_use[1]));
                const float p3 = fast_exp2(fmaf(s[mt][nb][3], sc, -m_use[1]));
                row_l[mt][0] += p0 + p1;
                row_l[mt][1] += p2 + p3;
                pf[mt][nb >> 1][(nb & 1) * 2 + 0] = Mma<T>::pack(p0, p1);
                pf[mt][nb >> 1][(nb & 1) * 2 + 1] = Mma<T>::pack(p2, p3);
            }
            // rescale_o: skipped (warp-uniformly) when no row of the warp's m16 tile got a
            // new maximum, the common case once a row has seen its large scores.
            if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
                for (int db = 0; db < DB; ++db) {
                    o[mt][db][0] *= corr[0];
                    o[mt][db][1] *= corr[0];
                    o[mt][db][2] *= corr[1];
                    o[mt][db][3] *= corr[1];
                }
            }
        }
        // accumulate_pv: O += P V, with K(t+1) in flight.
        cp_async_wait<0>(); // V(t) is in; every warp is done with k_s and keys_s
        __syncthreads();
        if (have_next) {
            load_keys(next_tile, n, keys_s);
            load_kv_rows<D, NT>(k_tile, kh, next_tile, n);
            cp_async_commit();
        }
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
#pragma unroll
            for (int db = 0; db < DB; db += 2) {
                u32 bfr[4];
                ldmatrix_x4_trans(bfr, v_frag + (kk * 16 * LD + db * 8) * 2);
#pragma unroll
                for (int mt = 0; mt < WARP_MT; ++mt) {
                    Mma<T>::run(o[mt][db], pf[mt][kk], bfr[0], bfr[1]);
                    Mma<T>::run(o[mt][db + 1], pf[mt][kk], bfr[2], bfr[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with v_s
        tile = next_tile;
        have = have_next;
    }

    // store_o: normalise by the row sums (reduced over the 4 lanes of a row).
    u16* oh = out + (size_t)bh * n * D;
#pragma unroll
    for (int mt = 0; mt < WARP_MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            row_l[mt][r] += __shfl_xor_sync(0xffffffffu, row_l[mt][r], 1);
            row_l[mt][r] += __shfl_xor_sync(0xffffffffu, row_l[mt][r], 2);
        }
        const float inv0 = row_l[mt][0] > 0.f ? 1.f / row_l[mt][0] : 0.f;
        const float inv1 = row_l[mt][1] > 0.f ? 1.f / row_l[mt][1] : 0.f;
        const int i0 = start_m + warp_row + mt * 16 + g, i1 = i0 + 8;
#pragma unroll
        for (int db = 0; db < DB; ++db) {
            if (i0 < n)
                *(u32*)&oh[(size_t)i0 * D + db * 8 + cq] =
                    Mma<T>::pack(o[mt][db][0] * inv0, o[mt][db][1] * inv0);
            if (i1 < n)
                *(u32*)&oh[(size_t)i1 * D + db * 8 + cq] =
                    Mma<T>::pack(o[mt][db][2] * inv1, o[mt][db][3] * inv1);
        }
    }
}

#define ATTENTION_MMA_ENTRY(NAME, T, D, MT, BM)                                                 \
    extern "C" __global__ void __launch_bounds__(2 * BM / MT) NAME(                             \
        const AttnParams p, const u16* q, const u16* k, const u16* v, u16* out,                 \
        const int* windows, const int* head_uses_index, const int* block_count,                 \
        const int* block_offset, const int* column_count, const int* column_index) {            \
        attention_mma<T, D, MT, BM>(p, q, k, v, out, windows, head_uses_index, block_count,     \
                                    block_offset, column_count, column_index);                  \
    }

ATTENTION_MMA_ENTRY(attention_mma_f16_d64_mt1, F16, 64, 1, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_f16_d128_mt1, F16, 128, 1, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d64_mt1, BF16, 64, 1, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d128_mt1, BF16, 128, 1, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_f16_d64_mt2, F16, 64, 2, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_f16_d128_mt2, F16, 128, 2, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d64_mt2, BF16, 64, 2, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d128_mt2, BF16, 128, 2, BLOCK_M)
ATTENTION_MMA_ENTRY(attention_mma_f16_d64_mt1_bm128, F16, 64, 1, 128)
ATTENTION_MMA_ENTRY(attention_mma_f16_d128_mt1_bm128, F16, 128, 1, 128)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d64_mt1_bm128, BF16, 64, 1, 128)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d128_mt1_bm128, BF16, 128, 1, 128)
ATTENTION_MMA_ENTRY(attention_mma_f16_d64_mt2_bm128, F16, 64, 2, 128)
ATTENTION_MMA_ENTRY(attention_mma_f16_d128_mt2_bm128, F16, 128, 2, 128)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d64_mt2_bm128, BF16, 64, 2, 128)
ATTENTION_MMA_ENTRY(attention_mma_bf16_d128_mt2_bm128, BF16, 128, 2, 128)
