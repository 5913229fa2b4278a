// FlashAttention-style attention on Hopper's warpgroup tensor cores (sm_90a: wgmma.mma_async,
// f16/bf16 inputs, f32 accumulation), for dense causal, A-shape and the shared sparse index:
// the same tile walk, masking and online softmax as attention_mma.cu (attention_tiles.cuh),
// with each 64-row slice of the CTA owned by one warpgroup (4 warps x 16 rows) that issues
// S = Q K^T as m64n64k16 products with both operands in shared memory, and O += P V as
// m64nDk16 products with P in registers (the S accumulator layout is the A-fragment layout)
// and V read transposed from shared memory. Q, K and V tiles live in shared memory in the
// 128-byte swizzled layout wgmma reads (TileLayout<D, true>), staged with cp.async: V(t)'s
// copy overlaps S(t), K(t+1)'s overlaps P(t) V(t).
// Uses AttnParams and MODE_* (attention.cu), mma_common.cuh and attention_tiles.cuh.

typedef unsigned long long u64;

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading byte offset
// (K-major: unused; MN-major: bytes between 64-element column panels) and stride byte offset
// (bytes between 8-row groups), each in 16-byte units.
__device__ __forceinline__ u64 sw128_desc(u32 addr, u32 lead_bytes, u32 stride_bytes) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lead_bytes >> 4) << 16) |
           ((u64)(stride_bytes >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// Shared memory written by cp.async (generic proxy) becomes visible to wgmma (async proxy).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Keeps the compiler from moving accumulator registers across an in-flight wgmma.
template <int NB>
__device__ __forceinline__ void pin_regs(float (&d)[NB][4]) {
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

template <typename T> struct Wgmma;
// The three products for one element type (PTX type name TY): ss_* with A and B read through
// shared-memory descriptors (accumulate = 0 overwrites D), rs_* with A in registers and B
// read transposed (N-major), always accumulating.
#define WGMMA_PRODUCTS(TY) \
    static __device__ __forceinline__ void ss_m64n64k16(float (&d)[8][4], u64 desc_a, u64 desc_b, int accumulate) { \
        asm volatile( \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
            "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
            : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]) \
            : "l"(desc_a), "l"(desc_b), "r"(accumulate)); \
    } \
    static __device__ __forceinline__ void rs_m64n64k16(float (&d)[8][4], const u32 (&a)[4], u64 desc_b) { \
        asm volatile( \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
            "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
            : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]) \
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1)); \
    } \
    static __device__ __forceinline__ void rs_m64n128k16(float (&d)[16][4], const u32 (&a)[4], u64 desc_b) { \
        asm volatile( \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
            "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
            : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]) \
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1)); \
    } \

template <> struct Wgmma<F16> { WGMMA_PRODUCTS("f16") };
template <> struct Wgmma<BF16> { WGMMA_PRODUCTS("bf16") };

// BM: query rows per CTA (64: one index row block, or 128 for dense and A-shape), one
// warpgroup per 64 rows.
template <typename T, int D, int BM>
__device__ void attention_wgmma(const AttnParams p, const u16* __restrict__ q,
                                const u16* __restrict__ k, const u16* __restrict__ v,
                                u16* __restrict__ out, const int* __restrict__ windows,
                                const int* __restrict__ head_uses_index,
                                const int* __restrict__ block_count, const int* __restrict__ block_offset,
                                const int* __restrict__ column_count,
                                const int* __restrict__ column_index) {
    using L = TileLayout<D, true>;
    constexpr int KD = D / 16;         // k-steps of Q.K^T
    constexpr int NB = BLOCK_N / 8;    // n8 blocks of S
    constexpr int DB = D / 8;          // n8 blocks of O
    constexpr int CHUNKS = D / 8;      // 16-byte chunks per row
    constexpr int NT = 2 * BM;         // threads: BM / 64 warpgroups
    constexpr u32 Q_BYTES = BM * D * 2, KV_BYTES = BLOCK_N * D * 2;
    // Dynamic shared memory, 1024-byte aligned panels: q_s [BM, D], k_s [64, D], v_s [64, D]
    // in TileLayout<D, true>.
    extern __shared__ __align__(1024) u16 smem[];
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

    const u32 base = (smem_addr(smem) + 1023u) & ~1023u; // the launch adds 1 KiB of slack
    const u32 q_tile = base, k_tile = q_tile + Q_BYTES, v_tile = k_tile + KV_BYTES;

    // load_q_tile: BM rows (rows >= N zero-filled).
    for (int c = tid; c < BM * CHUNKS; c += NT) {
        const int r = c / CHUNKS, ch = c % CHUNKS;
        const int i = start_m + r;
        cp_async16_at(q_tile + L::at(r, ch, BM), qh + (size_t)min(i, n - 1) * D + ch * 8, i < n);
    }
    cp_async_commit();

    // This warp's rows: warpgroup wg owns rows 64 wg.., its warp w rows 16 w.. of those.
    const int wg = warp >> 2;
    const int warp_row = wg * 64 + (warp & 3) * 16;
    const int g = lane >> 2;
    // Descriptors (k-step offsets added per use): Q and K K-major (32 bytes per k16 step
    // inside a 128-byte panel row; 8-row groups 1024 bytes apart), V MN-major (16 keys = two
    // 8-row groups per k16 step; D panels KV_PANEL bytes apart).
    constexpr u32 Q_PANEL = BM * 128, KV_PANEL = BLOCK_N * 128;
    const u32 q_wg = q_tile + wg * 64 * 128;

    float o[DB][4];
#pragma unroll
    for (int db = 0; db < DB; ++db) o[db][0] = o[db][1] = o[db][2] = o[db][3] = 0.f;
    float row_m[2] = {NEG_INF, NEG_INF}, row_l[2] = {0.f, 0.f};

    TileIter it = make_tile_iter(p, bh, m, BM, sink, local, block_count, block_offset, column_count,
                                 column_index);
    Tile tile, next_tile;
    bool have = it.next(tile);
    if (have) {
        load_keys(tile, n, keys_s);
        load_kv_rows<D, NT, true>(k_tile, kh, tile, n);
        cp_async_commit();
    }
    while (have) {
        const bool have_next = it.next(next_tile);
        cp_async_wait<0>(); // Q, K(t) and its keys are in
        fence_proxy_async();
        __syncthreads();
        load_kv_rows<D, NT, true>(v_tile, vh, tile, n);
        cp_async_commit();

        // scores: S = Q K^T for this warpgroup's 64 rows x 64 keys.
        float s[NB][4] = {}; // overwritten by the first k-step (scale-d = 0)
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            const u32 off = (kk & 3) * 32; // k16 step inside the panel row
            Wgmma<T>::ss_m64n64k16(s, sw128_desc(q_wg + (kk >> 2) * Q_PANEL + off, 16, 1024),
                                   sw128_desc(k_tile + (kk >> 2) * KV_PANEL + off, 16, 1024), kk > 0);
        }
        wgmma_commit();
        wgmma_wait_all();
        pin_regs(s);

        if (!tile.full) mask_m16(s, keys_s, start_m + warp_row + g, p.mode, sink, local);
        u32 pf[NB / 2][4]; // P as A fragments of the P.V product
        softmax_m16<T>(s, row_m, row_l, o, pf, p.scale_log2);

        // accumulate_pv: O += P V, with K(t+1) in flight.
        cp_async_wait<0>(); // V(t) is in; every warp is done with k_s and keys_s
        fence_proxy_async();
        __syncthreads();
        if (have_next) {
            load_keys(next_tile, n, keys_s);
            load_kv_rows<D, NT, true>(k_tile, kh, next_tile, n);
            cp_async_commit();
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
            if constexpr (D == 128)
                Wgmma<T>::rs_m64n128k16(o, pf[kk], sw128_desc(v_tile + kk * 2048, KV_PANEL, 1024));
            else
                Wgmma<T>::rs_m64n64k16(o, pf[kk], sw128_desc(v_tile + kk * 2048, KV_PANEL, 1024));
        }
        wgmma_commit();
        wgmma_wait_all();
        pin_regs(o);
        __syncthreads(); // every warp is done with v_s
        tile = next_tile;
        have = have_next;
    }

    // store_o: normalise by the row sums.
    store_m16<T>(out + (size_t)bh * n * D, o, row_l, start_m + warp_row + g, n);
}

#define ATTENTION_WGMMA_ENTRY(NAME, T, D, BM)                                                   \
    extern "C" __global__ void __launch_bounds__(2 * BM) NAME(                                  \
        const AttnParams p, const u16* q, const u16* k, const u16* v, u16* out,                 \
        const int* windows, const int* head_uses_index, const int* block_count,                 \
        const int* block_offset, const int* column_count, const int* column_index) {            \
        attention_wgmma<T, D, BM>(p, q, k, v, out, windows, head_uses_index, block_count,       \
                                  block_offset, column_count, column_index);                    \
    }

ATTENTION_WGMMA_ENTRY(attention_wgmma_f16_d64, F16, 64, BLOCK_M)
ATTENTION_WGMMA_ENTRY(attention_wgmma_f16_d128, F16, 128, BLOCK_M)
ATTENTION_WGMMA_ENTRY(attention_wgmma_bf16_d64, BF16, 64, BLOCK_M)
ATTENTION_WGMMA_ENTRY(attention_wgmma_bf16_d128, BF16, 128, BLOCK_M)
ATTENTION_WGMMA_ENTRY(attention_wgmma_f16_d64_bm128, F16, 64, 128)
ATTENTION_WGMMA_ENTRY(attention_wgmma_f16_d128_bm128, F16, 128, 128)
ATTENTION_WGMMA_ENTRY(attention_wgmma_bf16_d64_bm128, BF16, 64, 128)
ATTENTION_WGMMA_ENTRY(attention_wgmma_bf16_d128_bm128, BF16, 128, 128)
