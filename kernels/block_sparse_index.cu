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

// scores[bh, m, c] = q_pool[m] . k_pool[c] for c < m.
extern "C" __global__ void bs_scores(const IndexParams p, const int* heads, const float* q_pool,
                                     const float* k_pool,
                                     float* scores) { // [B, Hq, R, R]
    const int bh = blockIdx.z, h = bh % p.q_heads;
    const int m = blockIdx.y * 16 + threadIdx.y, c = blockIdx.x * 16 + threadIdx.x;
    if (heads[3 * h] != HEAD_BS || m >= p.rows || c >= m) return;
    const int d = p.head_dim;
    const float* qm = q_pool + ((size_t)bh * p.rows + m) * d;
    const float* kc = k_pool + ((size_t)bh * p.rows + c) * d;
    float s = 0.f;
    for (int t = 0; t < d; ++t) s += qm[t] * kc[t];
    scores[((size_t)bh * p.rows + m) * p.rows + c] = s;
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
