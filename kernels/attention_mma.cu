// FlashAttention-2 style attention on tensor cores (mma.sync m16n8k16, f16/bf16 inputs,
// f32 accumulation, online softmax in exp2), one core for dense causal, A-shape and the
// shared sparse index. A CTA owns one 64-row block (BLOCK_M = BLOCK; 4 warps x 16 rows, or
// 2 warps x 32 rows: WARP_MT) and
// walks the key tiles its mode names (TileIter): aligned 64-key tiles (dense, A-shape), the
// index's chunks, and its single columns gathered 64 at a time into dense tiles. K and V
// tiles are staged through shared memory with cp.async; V(t)'s copy overlaps Q.K(t)^T and
// K(t+1)'s overlaps P.V(t). Q stays in shared memory (dynamic: 3 x [64, D + 8] halfs).
// Uses AttnParams and MODE_* from attention.cu, mma_common.cuh and the tile walk and softmax
// steps of attention_tiles.cuh (same module).

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
    const int g = lane >> 2;

    TileIter it = make_tile_iter(p, bh, m, BM, sink, local, block_count, block_offset, column_count,
                                 column_index);
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
            for (int mt = 0; mt < WARP_MT; ++mt)
                mask_m16(s[mt], keys_s, start_m + warp_row + mt * 16 + g, p.mode, sink, local);
        }
        // online_softmax (exp2; softmax scale * LOG2E folded into scale_log2).
        u32 pf[WARP_MT][NB / 2][4]; // P as A fragments of the P.V product
#pragma unroll
        for (int mt = 0; mt < WARP_MT; ++mt) softmax_m16<T>(s[mt], row_m[mt], row_l[mt], o[mt], pf[mt], p.scale_log2);
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

    // store_o: normalise by the row sums.
    u16* oh = out + (size_t)bh * n * D;
#pragma unroll
    for (int mt = 0; mt < WARP_MT; ++mt) store_m16<T>(oh, o[mt], row_l[mt], start_m + warp_row + mt * 16 + g, n);
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
