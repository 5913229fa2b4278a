// Shared by the index families: their params struct, the per-head budget table, GPU
// top-k selection (radix select; ties to the smaller index) and a fill kernel.

struct IndexParams {
    int batch, q_heads, kv_heads, seq_len, head_dim;
    int rows;         // R = cdiv(N, BLOCK)
    int nv, ns;       // widths of vertical_index, slash_index
    int top_k;        // width of block_index
    int nnz_s, nnz_v; // widths of block_offset, column_index
    int last_q;       // min(LAST_Q, N)
    int stat_tiles;   // cdiv(N, STAT_COLS)
    int forced_columns, forced_offsets;
    float scale_log2; // softmax scale * LOG2E
};

// heads: [Hq, 3] = (kind, a, b): kind HEAD_VS (a = nv_h, b = ns_h) or HEAD_BS (a = top_k_h).
#define HEAD_NONE 0
#define HEAD_VS 1
#define HEAD_BS 2
#define STAT_COLS 256 // key columns per CTA in the vertical-slash estimate
#define LAST_Q 64

// Orderable key: larger score -> larger key; forced entries above everything.
__device__ __forceinline__ u32 score_key(const float* scores, int i, int forced) {
    if (i < forced) return 0xffffffffu;
    const u32 bits = __float_as_uint(scores[i]);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Indices of the k highest of scores[0..n) (i < forced counts as +inf), ascending, written
// to out[0..k). Ties go to the smaller index. Needs k <= n. Whole block must call it.
__device__ void select_top(const float* scores, int n, int k, int forced, int* out) {
    __shared__ int hist[256];
    __shared__ int scratch[32];
    __shared__ u32 s_prefix, s_mask;
    __shared__ int s_remaining;
    const int tid = threadIdx.x;
    if (k <= 0) return;
    if (tid == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_remaining = k;
    }
    __syncthreads();
    // Radix select of the k-th largest key, 8 bits at a time from the top.
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int t = tid; t < 256; t += blockDim.x) hist[t] = 0;
        __syncthreads();
        const u32 prefix = s_prefix, mask = s_mask;
        // Warp-aggregated histogram: scores cluster in a few bins (the top byte is mostly
        // sign and exponent), so lanes with the same bin add once, by their lowest lane.
        // Uniform trip count: every lane of a warp reaches the ballot.
        for (int start = 0; start < n; start += blockDim.x) {
            const int i = start + tid;
            const u32 key = i < n ? score_key(scores, i, forced) : 0u;
            const bool hit = i < n && (key & mask) == prefix;
            const u32 bin = (key >> shift) & 255u;
            const u32 active = __ballot_sync(0xffffffffu, hit);
            if (hit) {
                const u32 peers = __match_any_sync(active, bin);
                if ((tid & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
            }
        }
        __syncthreads();
        if (tid == 0) {
            int rem = s_remaining;
            for (int bin = 255; bin >= 0; --bin) {
                if (hist[bin] >= rem) {
                    s_prefix = prefix | ((u32)bin << shift);
                    s_mask = mask | (255u << shift);
                    break;
                }
                rem -= hist[bin];
            }
            s_remaining = rem;
        }
        __syncthreads();
    }
    const u32 threshold = s_prefix;
    const int need_eq = s_remaining; // how many keys equal to the threshold to take
    int base = 0, eq_base = 0;
    for (int start = 0; start < n; start += blockDim.x) {
        const int i = start + tid;
        const u32 key = i < n ? score_key(scores, i, forced) : 0u;
        const int gt = i < n && key > threshold;
        const int eq = i < n && key == threshold;
        int eq_total, total;
        const int eq_rank = eq_base + block_inclusive_scan(eq, scratch, &eq_total) - eq;
        const int take = gt || (eq && eq_rank < need_eq);
        const int pos = base + block_inclusive_scan(take, scratch, &total) - take;
        if (take && pos < k) out[pos] = i;
        base += total;
        eq_base += eq_total;
    }
    __syncthreads();
}

extern "C" __global__ void index_fill_i32(int* __restrict__ dst, unsigned long long n, int value) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        dst[i] = value;
}
