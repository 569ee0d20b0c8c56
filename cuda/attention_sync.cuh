/* attention_sync.cuh: what attention.cu's mma.sync kernels and
 * attention_wg.cu's wgmma kernels share: 2^x on the special-function unit,
 * and the counters of the ordered dQ sums. C++ only. */
#ifndef LMK_CUDA_ATTENTION_SYNC_CUH
#define LMK_CUDA_ATTENTION_SYNC_CUH

/* 2^x by the special-function unit alone (exp2f adds a denormal fix-up);
 * results below 2^-126 flush to 0, as 2^-inf does. */
static __device__ __forceinline__ float ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
	return y;
}

/* The counters of the ordered dQ sums, as CUTLASS's semaphores use them:
 * an acquiring read that sees the count acquires the parts it counts for
 * this thread and those ordered after it (by __syncwarp); a fence, then a
 * relaxed add, releases this thread's stores and those ordered before it.
 * (On sm_90 the acquiring read is a load and an L1 invalidation, while the
 * fence is a full memory barrier.) */
static __device__ __forceinline__ int ld_acquire(const int *p)
{
	int v;
	asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
	return v;
}

static __device__ __forceinline__ void fence_acq_rel()
{
	asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
}

static __device__ __forceinline__ void red_relaxed(int *p)
{
	asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;\n" ::"l"(p) : "memory");
}

/* The same protocol in halves, so that no read waits where its count is
 * not yet needed: a relaxed read of a counter (on sm_90 a load, with no
 * L1 invalidation that waits for it), and later, once a read has seen the
 * count, fence_acquire, which acquires what that read saw (the L1
 * invalidation alone, which waits for every load in flight); before
 * red_relaxed, fence_release releases (the memory barrier alone, which
 * waits for every store in flight, without fence_acq_rel's invalidation).
 * sm_90 and later. */
static __device__ __forceinline__ int ld_relaxed(const int *p)
{
	int v;
	asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
	return v;
}

static __device__ __forceinline__ void fence_acquire()
{
	asm volatile("fence.acquire.gpu;\n" ::: "memory");
}

static __device__ __forceinline__ void fence_release()
{
	asm volatile("fence.release.gpu;\n" ::: "memory");
}

#endif
