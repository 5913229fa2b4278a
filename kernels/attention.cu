// Scalar attention (one warp per query row, f32 arithmetic, online softmax in exp2) over
// any key set: dense causal, A-shape windows, or the shared sparse index. The simple,
// obviously-right kernel: it serves f32 inputs and is the fallback for every dtype.

struct AttnParams {
    int batch, q_heads, kv_heads, seq_len, head_dim;
    int mode;        // MODE_DENSE, MODE_A_SHAPE or MODE_SPARSE
    int rows;        // cdiv(seq_len, BLOCK)
    int nnz_s, nnz_v;
    float scale_log2; // softmax scale * LOG2E, folded once on the host
};

#define MODE_DENSE 0
#define MODE_A_SHAPE 1
#define MODE_SPARSE 2
#define MAX_D_PER_LANE 4 // head_dim <= 128
#define ROWS_PER_CTA 8   // one warp per row

template <typename T>
struct RowState {
    float q[MAX_D_PER_LANE];
    float acc[MAX_D_PER_LANE];
    float m, l;
};

// online_softmax + accumulate_pv for one key j.
template <typename T>
__device__ __forceinline__ void visit_key(RowState<T>& st, const typename T::storage* kh,
                                          const typename T::storage* vh, int j, int d,
                                          float scale_log2) {
    const int lane = threadIdx.x & 31;
    const int per = d >> 5;
    float s = 0.f;
    for (int t = 0; t < per; ++t) s += st.q[t] * T::load(kh + (size_t)j * d + lane + 32 * t);
    s = warp_sum(s) * scale_log2;
    const float m_new = fmaxf(st.m, s);
    const float corr = exp2f(st.m - m_new);
    const float p = exp2f(s - m_new);
    st.l = st.l * corr + p;
    for (int t = 0; t < per; ++t)
        st.acc[t] = st.acc[t] * corr + p * T::load(vh + (size_t)j * d + lane + 32 * t);
    st.m = m_new;
}

template <typename T>
__device__ void attention_scalar(const AttnParams p,
                                 const typename T::storage* __restrict__ q,  // [B, Hq, N, D]
                                 const typename T::storage* __restrict__ k,  // [B, Hkv, N, D]
                                 const typename T::storage* __restrict__ v,  // [B, Hkv, N, D]
                                 typename T::storage* __restrict__ out,      // [B, Hq, N, D]
                                 const int* __restrict__ windows,            // [Hq, 2] (sink, local); sink < 0: skip
                                 const int* __restrict__ head_uses_index,    // [Hq]
                                 const int* __restrict__ block_count,        // [B, Hq, R]
                                 const int* __restrict__ block_offset,       // [B, Hq, R, NNZ_S]
                                 const int* __restrict__ column_count,       // [B, Hq, R]
                                 const int* __restrict__ column_index) {     // [B, Hq, R, NNZ_V]
    const int bh = blockIdx.y;
    const int b = bh / p.q_heads, h = bh % p.q_heads;
    const int i = blockIdx.x * ROWS_PER_CTA + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    const int n = p.seq_len, d = p.head_dim;
    if (i >= n) return;
    if (p.mode == MODE_A_SHAPE && windows[2 * h] < 0) return;
    if (p.mode == MODE_SPARSE && !head_uses_index[h]) return;
    const int hk = h / (p.q_heads / p.kv_heads);
    const typename T::storage* qh = q + ((size_t)bh * n + i) * d;
    const typename T::storage* kh = k + ((size_t)b * p.kv_heads + hk) * n * d;
    const typename T::storage* vh = v + ((size_t)b * p.kv_heads + hk) * n * d;
    RowState<T> st;
    const int per = d >> 5;
    for (int t = 0; t < per; ++t) {
        st.q[t] = T::load(qh + lane + 32 * t);
        st.acc[t] = 0.f;
    }
    st.m = NEG_INF;
    st.l = 0.f;
    if (p.mode == MODE_DENSE) {
        for (int j = 0; j <= i; ++j) visit_key<T>(st, kh, vh, j, d, p.scale_log2);
    } else if (p.mode == MODE_A_SHAPE) {
        const int sink = windows[2 * h], local = windows[2 * h + 1];
        const int sink_end = min(sink, i + 1);
        for (int j = 0; j < sink_end; ++j) visit_key<T>(st, kh, vh, j, d, p.scale_log2);
        for (int j = max(i + 1 - local, sink_end); j <= i; ++j)
            visit_key<T>(st, kh, vh, j, d, p.scale_log2);
    } else {
        const size_t row = (size_t)bh * p.rows + i / BLOCK;
        const int cc = column_count[row], bc = block_count[row];
        for (int c = 0; c < cc; ++c)
            visit_key<T>(st, kh, vh, column_index[row * p.nnz_v + c], d, p.scale_log2);
        for (int c = 0; c < bc; ++c) {
            const int s = block_offset[row * p.nnz_s + c];
            const int e = min(min(s + BLOCK, i + 1), n);
            for (int j = s; j < e; ++j) visit_key<T>(st, kh, vh, j, d, p.scale_log2);
        }
    }
    const float inv = st.l > 0.f ? 1.f / st.l : 0.f;
    typename T::storage* oh = out + ((size_t)bh * n + i) * d;
    for (int t = 0; t < per; ++t) T::store(oh + lane + 32 * t, st.acc[t] * inv);
}

#define ATTENTION_SCALAR_ENTRY(NAME, T)                                                        \
    extern "C" __global__ void __launch_bounds__(32 * ROWS_PER_CTA) NAME(                     \
        const AttnParams p, const T::storage* q, const T::storage* k, const T::storage* v,    \
        T::storage* out, const int* windows, const int* head_uses_index,                      \
        const int* block_count, const int* block_offset, const int* column_count,             \
        const int* column_index) {                                                            \
        attention_scalar<T>(p, q, k, v, out, windows, head_uses_index, block_count,           \
                            block_offset, column_count, column_index);                        \
    }

ATTENTION_SCALAR_ENTRY(attention_scalar_f32, F32)
ATTENTION_SCALAR_ENTRY(attention_scalar_f16, F16)
ATTENTION_SCALAR_ENTRY(attention_scalar_bf16, BF16)
