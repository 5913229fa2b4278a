// Shared device helpers for every kernel family: element loads/stores for f32, f16 and
// bf16 (no CUDA headers: NVRTC compiles this alone), warp and block reductions.
// Requires sm_80 or newer (cvt.rn.bf16.f32).

typedef unsigned short u16;
typedef unsigned int u32;

#define LOG2E 1.4426950408889634f
#define BLOCK 64
#define NEG_INF (-__int_as_float(0x7f800000))
#define POS_INF (__int_as_float(0x7f800000))

struct F32 {
    typedef float storage;
    static __device__ __forceinline__ float load(const float* p) { return *p; }
    static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};

struct F16 {
    typedef u16 storage;
    static __device__ __forceinline__ float load(const u16* p) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
        return f;
    }
    static __device__ __forceinline__ void store(u16* p, float v) {
        u16 h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        *p = h;
    }
};

struct BF16 {
    typedef u16 storage;
    static __device__ __forceinline__ float load(const u16* p) {
        return __uint_as_float(((u32)*p) << 16);
    }
    static __device__ __forceinline__ void store(u16* p, float v) {
        u16 h;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
        *p = h;
    }
};

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// Inclusive prefix sum over the block (blockDim.x a multiple of 32, at most 1024).
// `scratch`: 32 ints of shared memory. Returns the inclusive sum; `total` gets the block sum.
__device__ __forceinline__ int block_inclusive_scan(int x, int* scratch, int* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = x;
    __syncthreads();
    if (warp == 0) {
        int w = lane < nwarps ? scratch[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        if (lane < nwarps) scratch[lane] = w;
    }
    __syncthreads();
    if (warp > 0) x += scratch[warp - 1];
    *total = scratch[nwarps - 1];
    __syncthreads();
    return x;
}
