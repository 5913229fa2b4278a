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

// Pass 2: fold the tiles' partial stats into each row's max and sum.
extern "C" __global__ void vs_combine(const IndexParams p, const int* heads, const float* part_max,
                                      const float* part_sum,
                                      float* row_max,   // [B, Hq, LAST_Q]
                                      float* row_sum) { // [B, Hq, LAST_Q]
    const int bh = blockIdx.x, h = bh % p.q_heads, r = threadIdx.x;
    if (heads[3 * h] != HEAD_VS || r >= LAST_Q) return;
    float m = NEG_INF;
    for (int t = 0; t < p.stat_tiles; ++t)
        m = fmaxf(m, part_max[((size_t)bh * p.stat_tiles + t) * LAST_Q + r]);
    float s = 0.f;
    for (int t = 0; t < p.stat_tiles; ++t) {
        const size_t at = ((size_t)bh * p.stat_tiles + t) * LAST_Q + r;
        if (part_max[at] != NEG_INF) s += part_sum[at] * exp2f(part_max[at] - m);
    }
    row_max[(size_t)bh * LAST_Q + r] = m;
    row_sum[(size_t)bh * LAST_Q + r] = s;
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

// Step 2 and 3 of the conversion: merge ascending range ends, write each closed range as
// its 64-column chunk starts (bounded by the row's width).
struct ChunkWriter {
    int* bo;
    int width;
    int count;
    bool open;
    long long rs, re;
    __device__ void flush() {
        for (long long s = rs; s < re; s += BLOCK)
            if (count < width) bo[count++] = (int)s;
    }
    __device__ void push_end(long long e) {
        if (!open) {
            rs = e - BLOCK;
            re = e;
            open = true;
        } else if (e > re + BLOCK) {
            flush();
            rs = e - BLOCK;
            re = e;
        } else if (e > re) {
            re += BLOCK;
        }
    }
};

// One thread per row block: merge the selected diagonals into 64-column chunks and keep
// the selected columns outside them (MInference's convert_vertical_slash_indexes).
extern "C" __global__ void vs_convert(const IndexParams p, const int* heads,
                                      const int* vertical_index, const int* slash_index,
                                      int* block_count,   // [B, Hq, R]
                                      int* block_offset,  // [B, Hq, R, NNZ_S]
                                      int* column_count,  // [B, Hq, R]
                                      int* column_index) { // [B, Hq, R, NNZ_V]
    const int bh = blockIdx.y, h = bh % p.q_heads;
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (heads[3 * h] != HEAD_VS || m >= p.rows) return;
    const int nv_h = heads[3 * h + 1], ns_h = heads[3 * h + 2];
    const int* vi = vertical_index + (size_t)bh * p.nv;
    const int* si = slash_index + (size_t)bh * p.ns;
    const size_t row = (size_t)bh * p.rows + m;
    int* bo = block_offset + row * p.nnz_s;
    int* ci = column_index + row * p.nnz_v;
    const long long start_m = (long long)m * BLOCK, end_m = start_m + BLOCK;
    ChunkWriter w{bo, p.nnz_s, 0, false, 0, 0};
    // Offsets ascending -> ends ascending when walked backwards; offset 0 (always selected)
    // has the largest end and comes last.
    for (int t = ns_h - 1; t >= 0; --t) {
        const long long o = si[t];
        if (o < 0 || o >= end_m) continue;
        w.push_end(max(end_m - o, (long long)BLOCK));
    }
    w.push_end(end_m);
    w.flush();
    const int count = w.count;
    block_count[row] = count;
    // Columns before the row block and in no chunk (chunks ascending and disjoint).
    int cc = 0, at = 0, last = -1;
    for (int t = 0; t < nv_h; ++t) {
        const int c = vi[t];
        if (c < 0 || c >= start_m) continue;
        while (at < count && bo[at] + BLOCK <= c) ++at;
        if (at < count && bo[at] <= c) continue;
        if (c == last) continue;
        if (cc < p.nnz_v) ci[cc++] = c;
        last = c;
    }
    column_count[row] = cc;
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

VS_ENTRIES(f32, F32)
VS_ENTRIES(f16, F16)
VS_ENTRIES(bf16, BF16)
