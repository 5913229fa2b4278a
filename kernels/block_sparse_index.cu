// Block-sparse index on the GPU: mean-pool q and k per 64-row block, score every earlier
// block, keep the diagonal plus the top_k - 1 best earlier blocks (ties to the smaller).

// pooled[bh, m, :] = mean of the valid rows of block m of q (is_k = 0) or of the head's k.
template <typename T>
__device__ void bs_pool(const IndexParams p, const int* heads, const typename T::storage* src,
                        int is_k, float* pooled) { // [B, Hq, R, D]
    const int bh = blockIdx.y, h = bh % p.q_heads, b = bh / p.q_heads, m = blockIdx.x;
    const int c = threadIdx.x;
    if (heads[3 * h] != HEAD_BS || c >= p.head_dim) return;
    const int n = p.seq_len, d = p.head_dim;
    const int hk = h / (p.q_heads / p.kv_heads);
    const typename T::storage* base =
        is_k ? src + ((size_t)b * p.kv_heads + hk) * n * d : src + (size_t)bh * n * d;
    const int lo = m * BLOCK, hi = min(lo + BLOCK, n);
    float s = 0.f;
    for (int i = lo; i < hi; ++i) s += T::load(base + (size_t)i * d + c);
    pooled[((size_t)bh * p.rows + m) * d + c] = s / (float)(hi - lo);
}

// scores[bh, m, c] = q_pool[m] . k_pool[c] for c < m: a causal f32 matmul in 64 x 64
// output tiles (tiles wholly above the diagonal exit), D staged SCORE_K channels at a time
// through shared memory, 4 x 4 outputs per thread. Each output is one sequential sum over
// the channels, in channel order.
#define SCORE_TILE 64
#define SCORE_K 32
extern "C" __global__ void __launch_bounds__(256)
    bs_scores(const IndexParams p, const int* heads,
              const float* __restrict__ q_pool, // [B, Hq, R, D]
              const float* __restrict__ k_pool, // [B, Hq, R, D]
              float* scores) {                  // [B, Hq, R, R]
    __shared__ float q_s[SCORE_K][SCORE_TILE + 4]; // channel-major: row reads broadcast
    __shared__ float k_s[SCORE_K][SCORE_TILE + 4];
    const int bh = blockIdx.z, h = bh % p.q_heads;
    const int m0 = blockIdx.y * SCORE_TILE, c0 = blockIdx.x * SCORE_TILE;
    if (heads[3 * h] != HEAD_BS || c0 > m0) return;
    const int d = p.head_dim, r = p.rows;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16; // outputs (ty + 16 i, tx + 16 j)
    const float* qb = q_pool + (size_t)bh * r * d;
    const float* kb = k_pool + (size_t)bh * r * d;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < d; k0 += SCORE_K) {
        // Stage: thread t loads channel k0 + t % 32 of rows t / 32 + 8 i (coalesced).
        __syncthreads();
        const int kk = threadIdx.x % SCORE_K, c = k0 + kk;
#pragma unroll
        for (int i = 0; i < SCORE_TILE / 8; ++i) {
            const int row = threadIdx.x / SCORE_K + 8 * i;
            q_s[kk][row] = (m0 + row < r && c < d) ? qb[(size_t)(m0 + row) * d + c] : 0.f;
            k_s[kk][row] = (c0 + row < r && c < d) ? kb[(size_t)(c0 + row) * d + c] : 0.f;
        }
        __syncthreads();
        // Multiply: rank-1 updates over the staged channels.
#pragma unroll 8
        for (int t = 0; t < SCORE_K; ++t) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = q_s[t][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = k_s[t][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
    }
    // Store the causal part (c < m < R).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int c = c0 + tx + 16 * j;
            if (m < r && c < m) scores[((size_t)bh * r + m) * r + c] = acc[i][j];
        }
    }
}

// Per (head, row block): the selection (block_index) and its chunks (block_offset).
extern "C" __global__ void bs_select(const IndexParams p, const int* heads, const float* scores,
                                     int* block_index,   // [B, Hq, R, top_k]
                                     int* block_count,   // [B, Hq, R]
                                     int* block_offset) { // [B, Hq, R, NNZ_S]
    const int bh = blockIdx.y, h = bh % p.q_heads, m = blockIdx.x;
    if (heads[3 * h] != HEAD_BS) return;
    const int k_h = heads[3 * h + 1];
    const size_t row = (size_t)bh * p.rows + m;
    int* sel = block_index + row * p.top_k;
    int count;
    if (m < k_h) {
        for (int c = threadIdx.x; c <= m; c += blockDim.x) sel[c] = c;
        count = m + 1;
    } else {
        select_top(scores + row * p.rows, m, k_h - 1, 0, sel);
        if (threadIdx.x == 0) sel[k_h - 1] = m;
        count = k_h;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < count; c += blockDim.x) block_offset[row * p.nnz_s + c] = sel[c] * BLOCK;
    if (threadIdx.x == 0) block_count[row] = count;
}

#define BS_ENTRIES(SUFFIX, T)                                                                  \
    extern "C" __global__ void bs_pool_##SUFFIX(const IndexParams p, const int* heads,         \
                                                const T::storage* src, int is_k, float* pooled) { \
        bs_pool<T>(p, heads, src, is_k, pooled);                                               \
    }

BS_ENTRIES(f32, F32)
BS_ENTRIES(f16, F16)
BS_ENTRIES(bf16, BF16)
