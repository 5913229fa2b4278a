// Tensor-core building blocks shared by the attention and vertical-slash index families
// (sm_80+): shared-window addresses, cp.async, ldmatrix, mma.sync m16n8k16 for f16/bf16 with
// f32 accumulation, and exp2 on the SFU. Needs common.cuh (u16, u32, F16, BF16).

#define SMEM_PAD 8 // halfs of padding per shared row of 16-bit tiles: conflict-free ldmatrix

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
// The same on a shared-window address; `valid` false zero-fills the 16 bytes.
__device__ __forceinline__ void cp_async16_at(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
}
// Unconditional copy (the source is known to be in bounds).
__device__ __forceinline__ void cp_async16_at(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// On a shared-window address (bases computed once; per-fragment offsets fold into the
// instruction's immediate).
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// 2^x on the SFU (ex2.approx.ftz: 2^-inf = 0), for the online softmax.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <typename T> struct Mma;
// m16n8k16 with f32 accumulation, and two f32 packed into a register, for one element type
// (PTX type name TY).
#define MMA_OPS(TY) \
    static __device__ __forceinline__ void run(float c[4], const u32 a[4], u32 b0, u32 b1) { \
        asm volatile( \
            "mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
            "{%8,%9}, {%0,%1,%2,%3};" \
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) \
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)); \
    } \
    static __device__ __forceinline__ u32 pack(float lo, float hi) { \
        u32 r; \
        asm("cvt.rn." TY "x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); \
        return r; \
    }

template <> struct Mma<F16> { MMA_OPS("f16") };
template <> struct Mma<BF16> { MMA_OPS("bf16") };

