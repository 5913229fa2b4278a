// Vertical-slash index on the GPU: estimate (last 64 queries vs all keys, causal softmax,
// column and diagonal sums), top-k selection with forced entries, and the conversion of
// every row block to chunks and columns (exactly `convert_vertical_slash_row`).

// Scaled logits (log2 units) of the last LAST_Q queries against key j = tile * STAT_COLS + tid.
// q_s: [LAST_Q, D] shared, already scaled; rows >= last_q are zero.
template <typename T>
__device__ __forceinline__ void vs_logits(const IndexParams& p, const float* q_s,
                                          const typename T::storage* kh, int j, float acc[LAST_Q]) {
    const int n = p.seq_len, d = p.head_dim;
#pragma unroll
    for (int r = 0; r < LAST_Q; ++r) acc[r] = 0.f;
    if (j >= n) return;
    for (int c = 0; c < d; ++c) {
        const float kv = T::load(kh + (size_t)j * d + c);
#pragma unroll
        for (int r = 0; r < LAST_Q; ++r) acc[r] += q_s[r * d + c] * kv;
    }
}

__device__ __forceinline__ bool vs_valid(const IndexParams& p, int r, int j) {
    const int i_r = p.seq_len - p.last_q + r;
    return r < p.last_q && j < p.seq_len && j <= i_r;
}

template <typename T>
__device__ void vs_load_q(const IndexParams& p, const typename T::storage* qh, float* q_s) {
    const int n = p.seq_len, d = p.head_dim;
    for (int t = threadIdx.x; t < LAST_Q * d; t += blockDim.x) {
        const int r = t / d, c = t % d;
        q_s[t] = r < p.last_q ? T::load(qh + (size_t)(n - p.last_q + r) * d + c) * p.scale_log2 : 0.f;
    }
    __syncthreads();
}

// Pass 1: per (head, column tile) the max and sum of exp2 of every estimate row.
template <typename T>
__device__ void vs_stats(const IndexParams p, const int* heads, const typename T::storage* q,
                         const typename T::storage* k,
                         float* part_max,   // [B, Hq, stat_tiles, LAST_Q]
                         float* part_sum) { // [B, Hq, stat_tiles, LAST_Q]
    __shared__ float q_s[LAST_Q * 128];
    __shared__ float red[STAT_COLS / 32][LAST_Q];
    __shared__ float row_max[LAST_Q];
    const int bh = blockIdx.y, h = bh % p.q_heads, b = bh / p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const int hk = h / (p.q_heads / p.kv_heads);
    const int n = p.seq_len, d = p.head_dim;
    vs_load_q<T>(p, q + (size_t)bh * n * d, q_s);
    const int j = blockIdx.x * STAT_COLS + threadIdx.x;
    float acc[LAST_Q];
    vs_logits<T>(p, q_s, k + ((size_t)b * p.kv_heads + hk) * n * d, j, acc);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < LAST_Q; ++r) {
        const float m = warp_max(vs_valid(p, r, j) ? acc[r] : NEG_INF);
        if (lane == 0) red[warp][r] = m;
    }
    __syncthreads();
    if (threadIdx.x < LAST_Q) {
        float m = NEG_INF;
        for (int w = 0; w < STAT_COLS / 32; ++w) m = fmaxf(m, red[w][threadIdx.x]);
        row_max[threadIdx.x] = m;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < LAST_Q; ++r) {
        const float e = vs_valid(p, r, j) ? exp2f(acc[r] - row_max[r]) : 0.f;
        const float s = warp_sum(e);
        if (lane == 0) red[warp][r] = s;
    }
    __syncthreads();
    if (threadIdx.x < LAST_Q) {
        float s = 0.f;
        for (int w = 0; w < STAT_COLS / 32; ++w) s += red[w][threadIdx.x];
        const size_t at = ((size_t)bh * p.stat_tiles + blockIdx.x) * LAST_Q + threadIdx.x;
        part_max[at] = row_max[threadIdx.x];
        part_sum[at] = s;
    }
}

// Pass 2: fold the tiles' partial stats into each row's max and sum. One CTA per
// (head, COMBINE_ROWS estimate rows); its threads split the tiles (reads coalesced over the
// rows of a tile), then fold their partials in shared memory: first the max, then the sum.
#define COMBINE_ROWS 8
#define COMBINE_LANES 32 // tile lanes per row: blockDim.x = COMBINE_ROWS * COMBINE_LANES
extern "C" __global__ void __launch_bounds__(COMBINE_ROWS * COMBINE_LANES)
    vs_combine(const IndexParams p, const int* heads,
               const float* __restrict__ part_max, // [B, Hq, stat_tiles, LAST_Q]
               const float* __restrict__ part_sum, // [B, Hq, stat_tiles, LAST_Q]
               float* row_max,                     // [B, Hq, LAST_Q]
               float* row_sum) {                   // [B, Hq, LAST_Q]
    __shared__ float red[COMBINE_LANES][COMBINE_ROWS];
    __shared__ float s_max[COMBINE_ROWS];
    const int bh = blockIdx.x, h = bh % p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const int lr = threadIdx.x % COMBINE_ROWS, lane = threadIdx.x / COMBINE_ROWS;
    const int r = blockIdx.y * COMBINE_ROWS + lr;
    const float* pm = part_max + (size_t)bh * p.stat_tiles * LAST_Q + r;
    const float* ps = part_sum + (size_t)bh * p.stat_tiles * LAST_Q + r;
    // Step 1: the row's max over every tile.
    float m = NEG_INF;
    for (int t = lane; t < p.stat_tiles; t += COMBINE_LANES) m = fmaxf(m, pm[(size_t)t * LAST_Q]);
    red[lane][lr] = m;
    __syncthreads();
    if (lane == 0) {
        for (int l = 1; l < COMBINE_LANES; ++l) m = fmaxf(m, red[l][lr]);
        s_max[lr] = m;
    }
    __syncthreads();
    m = s_max[lr];
    // Step 2: the tiles' sums rescaled to that max.
    float s = 0.f;
    for (int t = lane; t < p.stat_tiles; t += COMBINE_LANES) {
        const float tm = pm[(size_t)t * LAST_Q];
        if (tm != NEG_INF) s += ps[(size_t)t * LAST_Q] * exp2f(tm - m);
    }
    red[lane][lr] = s;
    __syncthreads();
    if (lane == 0) {
        for (int l = 1; l < COMBINE_LANES; ++l) s += red[l][lr];
        row_max[(size_t)bh * LAST_Q + r] = m;
        row_sum[(size_t)bh * LAST_Q + r] = s;
    }
}

// Pass 3: probabilities; column sums (one thread per column) and diagonal sums (atomics).
template <typename T>
__device__ void vs_accumulate(const IndexParams p, const int* heads, const typename T::storage* q,
                              const typename T::storage* k, const float* row_max,
                              const float* row_sum,
                              float* vertical,  // [B, Hq, N]
                              float* slash) {   // [B, Hq, N], zeroed before
    __shared__ float q_s[LAST_Q * 128];
    const int bh = blockIdx.y, h = bh % p.q_heads, b = bh / p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const int hk = h / (p.q_heads / p.kv_heads);
    const int n = p.seq_len, d = p.head_dim;
    vs_load_q<T>(p, q + (size_t)bh * n * d, q_s);
    const int j = blockIdx.x * STAT_COLS + threadIdx.x;
    float acc[LAST_Q];
    vs_logits<T>(p, q_s, k + ((size_t)b * p.kv_heads + hk) * n * d, j, acc);
    if (j >= n) return;
    float col = 0.f;
#pragma unroll
    for (int r = 0; r < LAST_Q; ++r) {
        if (!vs_valid(p, r, j)) continue;
        const float pr = exp2f(acc[r] - row_max[(size_t)bh * LAST_Q + r]) / row_sum[(size_t)bh * LAST_Q + r];
        col += pr;
        atomicAdd(&slash[(size_t)bh * n + (n - p.last_q + r - j)], pr);
    }
    vertical[(size_t)bh * n + j] = col;
}

// Top-k of the columns (blockIdx.y == 0) or offsets (== 1), ascending, -1 padding kept.
extern "C" __global__ void __launch_bounds__(1024) vs_select(const IndexParams p, const int* heads,
                                                             const float* vertical, const float* slash,
                                                             int* vertical_index,  // [B, Hq, nv]
                                                             int* slash_index) {   // [B, Hq, ns]
    const int bh = blockIdx.x, h = bh % p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const size_t n = p.seq_len;
    if (blockIdx.y == 0)
        select_top(vertical + bh * n, p.seq_len, heads[3 * h + 1], p.forced_columns,
                   vertical_index + (size_t)bh * p.nv);
    else
        select_top(slash + bh * n, p.seq_len, heads[3 * h + 2], p.forced_offsets,
                   slash_index + (size_t)bh * p.ns);
}

// One row block's conversion, written as it is built: ranges merged from ascending range
// ends (step 2), each closed range stored as its 64-column chunk starts (step 3, bounded by
// the row's width), and the selected columns below the row block that fall in no range
// emitted between ranges (step 4; columns ascending, duplicates dropped).
struct RowWriter {
    int* bo;                    // [NNZ_S] chunk starts
    int* ci;                    // [NNZ_V] single columns
    int width_s, width_v;       // NNZ_S, NNZ_V
    const int* __restrict__ vi; // [nv_h] selected columns, ascending (-1 padding)
    int nv_h;
    int start_m;                // first row of the block: columns >= it are never single
    int count = 0, cc = 0, cp = 0, last = -1;
    bool open = false;
    int rs = 0, re = 0;

    // Step 4 below `limit`: columns not covered by a range, ascending, deduplicated.
    __device__ void columns_below(int limit) {
        for (; cp < nv_h; ++cp) {
            const int c = __ldg(vi + cp);
            if (c >= limit) break;
            if (c < 0 || c >= start_m || c == last) continue;
            if (cc < width_v) ci[cc++] = c;
            last = c;
        }
    }
    // Skip the columns a range [.., limit) covers.
    __device__ void skip_below(int limit) {
        while (cp < nv_h && __ldg(vi + cp) < limit) ++cp;
    }
    // Step 3 for the open range, then the columns up to its end.
    __device__ void close_range() {
        columns_below(rs);
        for (int s = rs; s < re; s += BLOCK)
            if (count < width_s) bo[count++] = s;
        skip_below(re);
    }
    // Step 2: ends arrive ascending. Only a range break branches (rare); extending is a select.
    __device__ __forceinline__ void push_end(int e) {
        const bool brk = open && e > re + BLOCK;
        if (brk) close_range();
        const bool fresh = !open || brk;
        re = fresh ? e : (e > re ? re + BLOCK : re);
        rs = fresh ? e - BLOCK : rs;
        open = true;
    }
    // The open range after further ends up to e, none of them a break: it grows to the first
    // 64-column boundary (from rs) at or past e.
    __device__ __forceinline__ void extend_to(int e) {
        if (e > re) re = rs + ((e - rs + BLOCK - 1) / BLOCK) * BLOCK;
    }
};

// First index i in [0, n) with a[i] >= x (a ascending), or n.
__device__ __forceinline__ int lower_bound(const int* __restrict__ a, int n, int x) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (__ldg(a + mid) < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Range breaks of each head's selected offsets (ascending): the positions t where the step
// from offset si[t + 1] down to si[t] exceeds BLOCK. A row's ends are end_m - offset, so only
// there can its merge start a new range: after an end e the open range ends at re with
// e <= re < e + BLOCK, and a new range needs an end past re + BLOCK. One warp per head,
// compacted with ballots.
extern "C" __global__ void __launch_bounds__(32)
    vs_gaps(const IndexParams p, const int* heads,
            const int* __restrict__ slash_index, // [B, Hq, ns]
            int* gaps,                           // [B, Hq, ns]: the first gap_count entries
            int* gap_count) {                    // [B, Hq]
    const int bh = blockIdx.x, h = bh % p.q_heads, lane = threadIdx.x;
    if (heads[3 * h] != HEAD_VS) return;
    const int ns_h = heads[3 * h + 2];
    const int* si = slash_index + (size_t)bh * p.ns;
    int* out = gaps + (size_t)bh * p.ns;
    int total = 0;
    for (int t0 = 0; t0 < ns_h - 1; t0 += 32) {
        const int t = t0 + lane;
        const bool gap = t < ns_h - 1 && si[t + 1] - si[t] > BLOCK;
        const u32 ballot = __ballot_sync(0xffffffffu, gap);
        if (gap) out[total + __popc(ballot & ((1u << lane) - 1u))] = t;
        total += __popc(ballot);
    }
    if (lane == 0) gap_count[bh] = total;
}

#define CONVERT_THREADS 64 // row blocks per CTA (one thread each)

// One thread per row block: merge the selected diagonals into 64-column chunks and keep the
// selected columns outside them (MInference's convert_vertical_slash_indexes). The row's ends
// are end_m - o for its offsets o < end_m, walked ascending; offsets in [end_m - 64, end_m)
// all give the clamped end 64. Between range breaks (vs_gaps) the open range only grows to
// the next 64-column boundary past the largest end, so the walk visits the breaks, not every
// offset.
extern "C" __global__ void __launch_bounds__(CONVERT_THREADS)
    vs_convert(const IndexParams p, const int* heads,
               const int* __restrict__ vertical_index, // [B, Hq, nv]
               const int* __restrict__ slash_index,    // [B, Hq, ns]
               const int* __restrict__ gaps,           // [B, Hq, ns] (vs_gaps)
               const int* __restrict__ gap_count,      // [B, Hq]
               int* block_count,                        // [B, Hq, R]
               int* block_offset,                       // [B, Hq, R, NNZ_S]
               int* column_count,                       // [B, Hq, R]
               int* column_index) {                     // [B, Hq, R, NNZ_V]
    const int bh = blockIdx.y, h = bh % p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const int m = blockIdx.x * CONVERT_THREADS + threadIdx.x;
    if (m >= p.rows) return;
    const int nv_h = heads[3 * h + 1], ns_h = heads[3 * h + 2];
    const int* si = slash_index + (size_t)bh * p.ns;
    const int* g = gaps + (size_t)bh * p.ns;
    const size_t row = (size_t)bh * p.rows + m;
    const int start_m = m * BLOCK, end_m = start_m + BLOCK;
    RowWriter w{block_offset + row * p.nnz_s, column_index + row * p.nnz_v, p.nnz_s, p.nnz_v,
                vertical_index + (size_t)bh * p.nv, nv_h, start_m};
    const int u = lower_bound(si, ns_h, end_m - BLOCK); // offsets below u: unclamped ends
    const int v = lower_bound(si, ns_h, end_m);         // offsets from v on: not this row's
    if (v > u) w.push_end(BLOCK);
    if (u > 0) {
        w.push_end(end_m - __ldg(si + u - 1));
        // Breaks between consecutive unclamped ends (t + 1 <= u - 1), ascending ends.
        for (int k = lower_bound(g, gap_count[bh], u - 1) - 1; k >= 0; --k) {
            const int t = __ldg(g + k);
            w.extend_to(end_m - __ldg(si + t + 1));
            w.push_end(end_m - __ldg(si + t));
        }
        w.extend_to(end_m - __ldg(si));
    }
    w.push_end(end_m); // offset 0: always part of the row
    w.close_range();
    w.columns_below(start_m);
    block_count[row] = w.count;
    column_count[row] = w.cc;
}

#define VS_ENTRIES(SUFFIX, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(STAT_COLS) vs_stats_##SUFFIX(                  \
        const IndexParams p, const int* heads, const T::storage* q, const T::storage* k,       \
        float* part_max, float* part_sum) {                                                     \
        vs_stats<T>(p, heads, q, k, part_max, part_sum);                                        \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(STAT_COLS) vs_accumulate_##SUFFIX(             \
        const IndexParams p, const int* heads, const T::storage* q, const T::storage* k,       \
        const float* row_max, const float* row_sum, float* vertical, float* slash) {            \
        vs_accumulate<T>(p, heads, q, k, row_max, row_sum, vertical, slash);                    \
    }

// Tensor-core estimate (f16/bf16): the same passes 1 and 3 with S = Q_last K^T on mma.sync.
// One CTA per 64-key tile (stat tile = 64 keys), 4 warps x 16 of the last 64 queries; Q_last
// and the K tile through padded shared memory. Pass 1 writes per (tile, row) the max and the
// sum of exp2; pass 3 writes each key's column sum (the CTA holds all 64 rows: no atomics)
// and adds the tile's 127 diagonal partial sums, gathered in shared memory first, to `slash`.
#define VS_MMA_ROWS 64
#define VS_MMA_KEYS 64
template <typename T, int D, bool ACCUMULATE>
__device__ void vs_mma(const IndexParams p, const int* heads, const u16* __restrict__ q,
                       const u16* __restrict__ k,
                       float* part_max,        // [B, Hq, tiles, 64] (pass 1)
                       float* part_sum,        // [B, Hq, tiles, 64] (pass 1)
                       const float* row_max,   // [B, Hq, 64] (pass 3)
                       const float* row_sum,   // [B, Hq, 64] (pass 3)
                       float* vertical,        // [B, Hq, N] (pass 3)
                       float* slash) {         // [B, Hq, N] (pass 3), zeroed before
    constexpr int LD = D + SMEM_PAD, CHUNKS = D / 8, KD = D / 16, NB = VS_MMA_KEYS / 8;
    __shared__ __align__(16) u16 q_s[VS_MMA_ROWS * LD]; // [64, D + 8]: the last queries
    __shared__ __align__(16) u16 k_s[VS_MMA_KEYS * LD]; // [64, D + 8]: this tile's keys
    __shared__ float col_s[4][VS_MMA_KEYS];             // per-warp column sums
    __shared__ float diag_s[VS_MMA_ROWS + VS_MMA_KEYS]; // diagonal sums, local offset r - c + 63
    const int bh = blockIdx.y, h = bh % p.q_heads, b = bh / p.q_heads;
    if (heads[3 * h] != HEAD_VS) return;
    const int hk = h / (p.q_heads / p.kv_heads);
    const int n = p.seq_len, tile = blockIdx.x, j0 = tile * VS_MMA_KEYS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const u16* qh = q + (size_t)bh * n * D;
    const u16* kh = k + ((size_t)b * p.kv_heads + hk) * n * D;

    // load_tiles: query row r is n - last_q + r (rows >= last_q zero-filled), key row c is
    // j0 + c (keys >= N zero-filled).
    for (int c = tid; c < VS_MMA_ROWS * CHUNKS; c += blockDim.x) {
        const int r = c / CHUNKS, ch = c % CHUNKS;
        const bool q_ok = r < p.last_q;
        cp_async16(&q_s[r * LD + ch * 8], qh + (size_t)(q_ok ? n - p.last_q + r : 0) * D + ch * 8, q_ok);
        const bool k_ok = j0 + r < n;
        cp_async16(&k_s[r * LD + ch * 8], kh + (size_t)(k_ok ? j0 + r : 0) * D + ch * 8, k_ok);
    }
    cp_async_commit();
    if (ACCUMULATE)
        for (int t = tid; t < VS_MMA_ROWS + VS_MMA_KEYS; t += blockDim.x) diag_s[t] = 0.f;
    cp_async_wait<0>();
    __syncthreads();

    // scores: this warp's 16 rows x 64 keys, in log2 units.
    float s[NB][4];
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
    const u32 q_frag = smem_addr(q_s) + (u32)((warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8) * 2;
    const u32 k_frag = smem_addr(k_s) + (u32)(((lane & 7) + ((lane >> 4) << 3)) * LD + ((lane >> 3) & 1) * 8) * 2;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
        u32 qf[4];
        ldmatrix_x4(qf, q_frag + kk * 16 * 2);
#pragma unroll
        for (int nb = 0; nb < NB; nb += 2) {
            u32 bfr[4];
            ldmatrix_x4(bfr, k_frag + (nb * 8 * LD + kk * 16) * 2);
            Mma<T>::run(s[nb], qf, bfr[0], bfr[1]);
            Mma<T>::run(s[nb + 1], qf, bfr[2], bfr[3]);
        }
    }
    // mask: (row r, key j) counts iff r < last_q, j < N and j <= n - last_q + r.
    const int g = lane >> 2, cq = (lane & 3) * 2;
    const int r0 = warp * 16 + g; // rows r0 (e < 2) and r0 + 8 (e >= 2)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = r0 + (e >> 1) * 8, j = j0 + nb * 8 + cq + (e & 1);
            s[nb][e] = vs_valid(p, r, j) ? s[nb][e] * p.scale_log2 : NEG_INF;
        }
    if (!ACCUMULATE) {
        // tile_stats: max and sum of exp2 per row, reduced over the 4 lanes of a row.
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float m = NEG_INF;
#pragma unroll
            for (int nb = 0; nb < NB; ++nb) m = fmaxf(m, fmaxf(s[nb][2 * half], s[nb][2 * half + 1]));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            float sum = 0.f;
            if (m != NEG_INF)
#pragma unroll
                for (int nb = 0; nb < NB; ++nb)
                    sum += fast_exp2(s[nb][2 * half] - m) + fast_exp2(s[nb][2 * half + 1] - m);
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if ((lane & 3) == 0) {
                const size_t at = ((size_t)bh * p.stat_tiles + tile) * LAST_Q + r0 + half * 8;
                part_max[at] = m;
                part_sum[at] = sum;
            }
        }
        return;
    }
    // probabilities: p = 2^(s - row max) / row sum; column sums over this warp's 16 rows
    // (2 per lane, then the 8 lanes of a column: xor 4, 8, 16) and diagonal sums in shared
    // memory.
    float m_r[2], inv_r[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int r = r0 + half * 8;
        m_r[half] = r < p.last_q ? row_max[(size_t)bh * LAST_Q + r] : 0.f;
        const float l = r < p.last_q ? row_sum[(size_t)bh * LAST_Q + r] : 0.f;
        inv_r[half] = l > 0.f ? 1.f / l : 0.f;
    }
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
        float col[2] = {0.f, 0.f};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int half = e >> 1;
            const float pr = s[nb][e] == NEG_INF ? 0.f : fast_exp2(s[nb][e] - m_r[half]) * inv_r[half];
            col[e & 1] += pr;
            if (pr != 0.f) atomicAdd(&diag_s[r0 + half * 8 - (nb * 8 + cq + (e & 1)) + VS_MMA_KEYS - 1], pr);
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            col[c] += __shfl_xor_sync(0xffffffffu, col[c], 4);
            col[c] += __shfl_xor_sync(0xffffffffu, col[c], 8);
            col[c] += __shfl_xor_sync(0xffffffffu, col[c], 16);
        }
        if (g == 0) {
            col_s[warp][nb * 8 + cq] = col[0];
            col_s[warp][nb * 8 + cq + 1] = col[1];
        }
    }
    __syncthreads();
    // store: one thread per key writes its column sum; one per local diagonal adds its sum.
    if (tid < VS_MMA_KEYS && j0 + tid < n)
        vertical[(size_t)bh * n + j0 + tid] = col_s[0][tid] + col_s[1][tid] + col_s[2][tid] + col_s[3][tid];
    for (int t = tid; t < VS_MMA_ROWS + VS_MMA_KEYS - 1; t += blockDim.x) {
        // local t = r - c + 63  ->  offset i_r - j = (n - last_q + r) - (j0 + c)
        const long long o = (long long)n - p.last_q - j0 + t - (VS_MMA_KEYS - 1);
        if (diag_s[t] != 0.f && o >= 0 && o < n) atomicAdd(&slash[(size_t)bh * n + o], diag_s[t]);
    }
}

#define VS_MMA_ENTRIES(SUFFIX, T, D)                                                            \
    extern "C" __global__ void __launch_bounds__(128) vs_mma_stats_##SUFFIX##_d##D(             \
        const IndexParams p, const int* heads, const u16* q, const u16* k, float* part_max,    \
        float* part_sum) {                                                                      \
        vs_mma<T, D, false>(p, heads, q, k, part_max, part_sum, nullptr, nullptr, nullptr,      \
                            nullptr);                                                           \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(128) vs_mma_accumulate_##SUFFIX##_d##D(        \
        const IndexParams p, const int* heads, const u16* q, const u16* k, const float* row_max, \
        const float* row_sum, float* vertical, float* slash) {                                  \
        vs_mma<T, D, true>(p, heads, q, k, nullptr, nullptr, row_max, row_sum, vertical, slash); \
    }

VS_MMA_ENTRIES(f16, F16, 64)
VS_MMA_ENTRIES(f16, F16, 128)
VS_MMA_ENTRIES(bf16, BF16, 64)
VS_MMA_ENTRIES(bf16, BF16, 128)

VS_ENTRIES(f32, F32)
VS_ENTRIES(f16, F16)
VS_ENTRIES(bf16, BF16)
