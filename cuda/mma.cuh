/* mma.cuh: the warp-level tensor-core primitives the BF16 kernels share
 * (attention, GDN, PaTH, SSD): asynchronous 16- and 4-byte copies to
 * shared memory, ldmatrix loads of m8n8 tiles, mma.sync m16n8k16 with bf16
 * operands and fp32 accumulators, and the repacking of accumulators as the
 * A operand of a next product. C++ only; include after common.cuh. */
#ifndef LMK_CUDA_MMA_CUH
#define LMK_CUDA_MMA_CUH

#include <stdint.h>

#include <cuda_bf16.h>

static __device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, zero-filled when !valid (src is then not read
 * but must still be a mapped address). */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid)
{
	int n = valid ? 16 : 0;
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n)
		     : "memory");
}

static __device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, bool valid)
{
	int n = valid ? 4 : 0;
	asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n)
		     : "memory");
}

static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N> static __device__ __forceinline__ void cp_wait()
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void ldsm4(uint32_t (&r)[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(addr)
		     : "memory");
}

static __device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], uint32_t addr)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(addr)
		     : "memory");
}

/* c (16x8 fp32) += a (16x16 bf16, row) b (16x8 bf16, col) */
static __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
						uint32_t b1)
{
	asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
	    "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats as a bf16x2 register, lo in the low half (the lower column). */
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}

/* The accumulators of two adjacent n8 tiles (16 columns), times f, as the
 * A operand of the next product: the m16n8 C layout and the m16k16 A
 * layout agree thread for thread. (f = 1 is exact: the same bits.) */
static __device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4],
					      const float (&c1)[4], float f = 1.f)
{
	a[0] = pack_bf16(f * c0[0], f * c0[1]);
	a[1] = pack_bf16(f * c0[2], f * c0[3]);
	a[2] = pack_bf16(f * c1[0], f * c1[1]);
	a[3] = pack_bf16(f * c1[2], f * c1[3]);
}

#endif
