// The key-tile walk and the per-warp softmax steps shared by the tensor-core attention
// kernels (attention_mma.cu: mma.sync; attention_wgmma.cu: sm_90a wgmma): which 64-key tiles
// a row block visits (TileIter), how a tile is staged into shared memory (load_kv_rows,
// load_keys), and, on one warp's m16 row tile in the m16n8 accumulator layout both
// instruction families share, masking, the online softmax and the output store.
// Needs AttnParams and MODE_* (attention.cu) and mma_common.cuh.

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
            if (!any_sink && !any_local) {
                // Past the sink and before the window: jump to the first tile that can hold
                // a window key (tiles before (start_m - local) / 64 end at or before it).
                const int first_local = (start_m - local) / BLOCK_N; // > 0 here
                if (first_local > t) t = first_local;
                continue;
            }
            const bool all_sink = e < sink;
            const bool all_local = (end_m - 1) - s < local;
            tile.full = e <= start_m && e < n && (all_sink || all_local);
            return true;
        }
    }
};

// Shared layouts of a [rows, D] tile of 16-bit elements. Padded (mma.sync + ldmatrix): row
// r at r * (D + SMEM_PAD) halfs. Swizzled (wgmma's 128-byte swizzle, D a multiple of 64): the
// tile is D / 64 column panels of [rows, 64]; in a panel row r is 128 bytes at r * 128 and its
// 16-byte chunk c sits at chunk c ^ (r % 8) (panels 1024-byte aligned).
template <int D, bool SW128>
struct TileLayout {
    // Byte offset of 16-byte chunk `ch` (0 <= ch < D / 8) of row `r` in a tile of `rows` rows.
    static __device__ __forceinline__ u32 at(int r, int ch, int rows) {
        if (SW128) return (u32)((ch >> 3) * rows * 128 + r * 128 + (((ch & 7) ^ (r & 7)) << 4));
        return (u32)(r * (D + SMEM_PAD) + ch * 8) * 2;
    }
    // Bytes between row r and row r + k (swizzled: k a multiple of 8).
    static __device__ __forceinline__ u32 rows_bytes(int k) {
        return SW128 ? (u32)k * 128 : (u32)(k * (D + SMEM_PAD) * 2);
    }
};

// load_kv_tile: the tile's 64 key rows of K or V into shared memory in layout L (`dst`: the
// tile's shared-window address); rows of missing keys (padding, >= N) are zero-filled. NT
// threads, each copying fixed 16-byte chunks: row r0 + pass * NT / CHUNKS, chunk tid % CHUNKS.
// Contiguous tiles wholly below N take the unchecked path.
template <int D, int NT, bool SW128 = false>
__device__ __forceinline__ void load_kv_rows(u32 dst, const u16* src, const Tile& tile, int n) {
    using L = TileLayout<D, SW128>;
    constexpr int CHUNKS = D / 8;            // 16-byte chunks per row
    constexpr int ROWS_PER_PASS = NT / CHUNKS;
    constexpr int PASSES = BLOCK_N / ROWS_PER_PASS;
    static_assert(NT % CHUNKS == 0 && BLOCK_N % ROWS_PER_PASS == 0, "thread layout");
    static_assert(!SW128 || ROWS_PER_PASS % 8 == 0, "passes keep the swizzle phase");
    const int ch = threadIdx.x % CHUNKS, r0 = threadIdx.x / CHUNKS;
    const u32 at = dst + L::at(r0, ch, BLOCK_N);
    const u32 PASS_BYTES = L::rows_bytes(ROWS_PER_PASS);
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

// mask_m16: keys past N, after the row, or outside an A-shape window score -inf. `s` is
// one warp's [16 rows, 64 keys] score tile (NB n8 blocks); i0 is the query row of lane group g.
template <int NB>
__device__ __forceinline__ void mask_m16(float (&s)[NB][4], const int* keys_s, int i0, int mode,
                                         int sink, int local) {
    const int cq = (threadIdx.x & 3) * 2;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = keys_s[nb * 8 + cq + (e & 1)];
            const int i = i0 + (e >> 1) * 8;
            bool ok = key >= 0 && key <= i;
            if (mode == MODE_A_SHAPE) ok = ok && (key < sink || i - key < local);
            if (!ok) s[nb][e] = NEG_INF;
        }
    }
}

// softmax_m16: the online softmax (exp2; the softmax scale * LOG2E is scale_log2) of one
// warp's m16 score tile: updates the rows' running max and sum, writes P as the A fragments
// of the P.V product (pf[k16 step]) and rescales the warp's O rows.
template <typename T, int NB, int DB>
__device__ __forceinline__ void softmax_m16(float (&s)[NB][4], float (&row_m)[2], float (&row_l)[2],
                                            float (&o)[DB][4], u32 (&pf)[NB / 2][4], float scale_log2) {
    float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
        tile_max[0] = fmaxf(tile_max[0], fmaxf(s[nb][0], s[nb][1]));
        tile_max[1] = fmaxf(tile_max[1], fmaxf(s[nb][2], s[nb][3]));
    }
    float m_use[2], corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        // Row maxima stay in raw q.k units; scale_log2 is applied inside each exponent with
        // one FMA: 2^(s * scale_log2 - m * scale_log2).
        const float m_new = fmaxf(row_m[r], tile_max[r]);
        m_use[r] = m_new == NEG_INF ? 0.f : m_new * scale_log2;
        corr[r] = fast_exp2(row_m[r] * scale_log2 - m_use[r]);
        row_m[r] = m_new;
        row_l[r] *= corr[r];
    }
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
        const float p0 = fast_exp2(fmaf(s[nb][0], scale_log2, -m_use[0]));
        const float p1 = fast_exp2(fmaf(s[nb][1], scale_log2, -m_use[0]));
        const float p2 = fast_exp2(fmaf(s[nb][2], scale_log2, -m_use[1]));
        const float p3 = fast_exp2(fmaf(s[nb][3], scale_log2, -m_use[1]));
        row_l[0] += p0 + p1;
        row_l[1] += p2 + p3;
        pf[nb >> 1][(nb & 1) * 2 + 0] = Mma<T>::pack(p0, p1);
        pf[nb >> 1][(nb & 1) * 2 + 1] = Mma<T>::pack(p2, p3);
    }
    // rescale_o: skipped (warp-uniformly) when no row of the m16 tile got a new maximum,
    // the common case once a row has seen its large scores.
    if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
        for (int db = 0; db < DB; ++db) {
            o[db][0] *= corr[0];
            o[db][1] *= corr[0];
            o[db][2] *= corr[1];
            o[db][3] *= corr[1];
        }
    }
}

// store_m16: one warp's O rows i0 and i0 + 8 normalised by their sums (reduced over the 4
// lanes of a row); rows >= N are not written. oh: the head's [N, D] output, D = 8 DB.
template <typename T, int DB>
__device__ __forceinline__ void store_m16(u16* oh, const float (&o)[DB][4], float (&row_l)[2], int i0,
                                          int n) {
    constexpr int D = DB * 8;
    const int cq = (threadIdx.x & 3) * 2;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row_l[r] += __shfl_xor_sync(0xffffffffu, row_l[r], 1);
        row_l[r] += __shfl_xor_sync(0xffffffffu, row_l[r], 2);
    }
    const float inv0 = row_l[0] > 0.f ? 1.f / row_l[0] : 0.f;
    const float inv1 = row_l[1] > 0.f ? 1.f / row_l[1] : 0.f;
    const int i1 = i0 + 8;
#pragma unroll
    for (int db = 0; db < DB; ++db) {
        if (i0 < n) *(u32*)&oh[(size_t)i0 * D + db * 8 + cq] = Mma<T>::pack(o[db][0] * inv0, o[db][1] * inv0);
        if (i1 < n) *(u32*)&oh[(size_t)i1 * D + db * 8 + cq] = Mma<T>::pack(o[db][2] * inv1, o[db][3] * inv1);
    }
}

// Sparse-mode state of row block m: its index row (counts and lists) for TileIter.
__device__ __forceinline__ TileIter make_tile_iter(const AttnParams& p, int bh, int m, int bm, int sink,
                                                   int local, const int* block_count,
                                                   const int* block_offset, const int* column_count,
                                                   const int* column_index) {
    TileIter it;
    it.mode = p.mode;
    it.m = m;
    it.bm = bm;
    it.n = p.seq_len;
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
    return it;
}
