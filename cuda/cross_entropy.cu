/* cross_entropy.cu: fused softmax cross-entropy over N rows of V logits.
 * The forward keeps one (max, sum) pair per thread over its strided share of
 * the row (an online softmax), merges the pairs across the block, and saves
 * only the row's logsumexp: the probabilities are never stored, for any V.
 * A second, single-block kernel takes the mean over the counted rows in a
 * fixed order. The backward recomputes each probability from lse and adds
 * it into dlogits row by row, or writes dlogits whole (zeros in the rows not
 * counted) when the tape left it unwritten (set). Both read eight logits at
 * a time (16-byte loads) when V is a multiple of 8. In a training step the
 * forward writes the gradient itself while each row is at hand
 * (ce_rows_grad8: the count first, then one pass over the logits instead
 * of two; in BF16 up to V 32768 ce_rows_grad8_reg, the row in registers),
 * and the backward only checks that the loss's gradient is 1. */
#include <math.h>

#include "common.cuh"

#define THREADS 256

/* (m, s) stands for s * exp(m): the sum of exp(x - m) over some x. */
static __device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2)
{
	float M = fmaxf(m, m2);
	float a = m == -INFINITY ? 0.0f : s * expf(m - M);
	float b = m2 == -INFINITY ? 0.0f : s2 * expf(m2 - M);
	m = M;
	s = a + b;
}

/* Eight more logits into the running (m, s): the max first, so that s is
 * rescaled once per eight. */
static __device__ __forceinline__ void lse_add8(float &m, float &s, const float (&v)[8])
{
	float m8 = v[0];
	for (int k = 1; k < 8; k++)
		m8 = fmaxf(m8, v[k]);
	if (m8 > m) {
		s = m == -INFINITY ? 0.0f : s * expf(m - m8);
		m = m8;
	}
	if (m != -INFINITY)
		for (int k = 0; k < 8; k++)
			s += expf(v[k] - m);
}

static __device__ __forceinline__ int counted(int32_t t, int ignore, int64_t V)
{
	return t != ignore && t >= 0 && t < V;
}

/* Whether row n counts; one that does not (its target the ignore index,
 * or out of range: flagged on the device) gets lse and loss 0, as the CPU
 * kernel leaves an ignored row. */
static __device__ __forceinline__ bool ce_row_counts(int64_t n, int32_t t, int64_t V, int ignore,
						  float *lse, float *rowloss, unsigned *flags)
{
	if (counted(t, ignore, V))
		return true;
	if (threadIdx.x == 0) {
		if (t != ignore)
			atomicOr(flags, (unsigned)LMK_CUDA_BAD_TARGET);
		lse[n] = 0.0f;
		rowloss[n] = 0.0f;
	}
	return false;
}

/* 2^x by the special-function unit (ex2.approx: a relative error near
 * 2^-22, 0 for -inf, results below 2^-126 flushed to 0): one instruction
 * where expf takes about eight. */
static __device__ __forceinline__ float ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/* lse_merge with (m, s) standing for s * 2^m */
static __device__ __forceinline__ void lse_merge2(float &m, float &s, float m2, float s2)
{
	float M = fmaxf(m, m2);
	float a = m == -INFINITY ? 0.0f : s * ex2(m - M);
	float b = m2 == -INFINITY ? 0.0f : s2 * ex2(m2 - M);
	m = M;
	s = a + b;
}

/* The end of a row of ce_rows and ce_rows8: each thread's (m, s) merged
 * over the block (a butterfly in each warp, every lane ending with the
 * same bits, then the warps' pairs in warp 0), lse and the row's loss
 * (xt points to the target's logit) written; shm and shs (32 each) are
 * free again on return. lane, wid, nw: the thread's lane and warp, the
 * block's warps. Returns lse to every thread through shl (shared) where
 * shl is not NULL. B2: the pairs in base 2 (lse_merge2, m a logit times
 * log2 e), and the lse returned in base 2 too (lse / ln 2). */
template <bool B2 = false, class T>
static __device__ __forceinline__ float row_finish(float *lse, float *rowloss, int64_t n, float m,
						   float s, const T *xt, float *shm, float *shs,
						   int lane, int wid, int nw, float *shl = NULL)
{
	for (int o = 16; o > 0; o >>= 1) {
		float m2 = __shfl_xor_sync(0xffffffffu, m, o);
		float s2 = __shfl_xor_sync(0xffffffffu, s, o);
		if (B2)
			lse_merge2(m, s, m2, s2);
		else
			lse_merge(m, s, m2, s2);
	}
	if (lane == 0) {
		shm[wid] = m;
		shs[wid] = s;
	}
	__syncthreads();
	if (wid == 0) {
		m = lane < nw ? shm[lane] : -INFINITY;
		s = lane < nw ? shs[lane] : 0.0f;
		for (int o = 16; o > 0; o >>= 1) {
			float m2 = __shfl_xor_sync(0xffffffffu, m, o);
			float s2 = __shfl_xor_sync(0xffffffffu, s, o);
			if (B2)
				lse_merge2(m, s, m2, s2);
			else
				lse_merge(m, s, m2, s2);
		}
		if (lane == 0) {
			float L2 = B2 ? m + log2f(s) : 0.0f;
			float L = B2 ? L2 * 0.693147180559945309f : m + logf(s);
			lse[n] = L;
			rowloss[n] = L - tof(*xt);
			if (shl)
				*shl = B2 ? L2 : L;
		}
	}
	__syncthreads(); /* shm is reused by the next row */
	/* shl is written again only after the next row's first barrier */
	return shl ? *shl : 0.0f;
}

template <class T>
__global__ void ce_rows(float *lse, float *rowloss, const T *logits, const int32_t *targets,
			int64_t N, int64_t V, int ignore, unsigned *flags)
{
	__shared__ float shm[32], shs[32];
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		if (!ce_row_counts(n, t, V, ignore, lse, rowloss, flags))
			continue;
		const T *x = logits + n * V;
		float m = -INFINITY, s = 0.0f;
		for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
			float v = tof(x[j]);
			if (v > m) {
				s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
				m = v;
			} else if (m != -INFINITY) {
				s += expf(v - m);
			}
		}
		row_finish(lse, rowloss, n, m, s, x + t, shm, shs, lane, wid, nw);
	}
}

/* ce_rows with eight logits a thread (16-byte loads): V a multiple of 8,
 * logits aligned. A thread folds each group's maximum into its pair first,
 * then the group's eight terms. */
template <class T>
__global__ void ce_rows8(float *lse, float *rowloss, const T *logits, const int32_t *targets,
			 int64_t N, int64_t V, int ignore, unsigned *flags)
{
	__shared__ float shm[32], shs[32];
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		if (!ce_row_counts(n, t, V, ignore, lse, rowloss, flags))
			continue;
		const T *x = logits + n * V;
		float m = -INFINITY, s = 0.0f;
		for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
			float v[8];
			ld8(v, x + 8 * j);
			lse_add8(m, s, v);
		}
		row_finish(lse, rowloss, n, m, s, x + t, shm, shs, lane, wid, nw);
	}
}

__global__ void ce_mean(float *loss, int64_t *count, const float *rowloss, const int32_t *targets,
			int64_t N, int64_t V, int ignore)
{
	__shared__ double sh[32];
	double sum = 0.0, cnt = 0.0;
	/* a thread's rows n, n + blockDim.x, ... in order, eight loads of
	 * each array in flight (rowloss is written for every row) */
	for (int64_t n0 = threadIdx.x; n0 < N; n0 += 8 * (int64_t)blockDim.x) {
		int32_t t[8];
		float l[8];
#pragma unroll
		for (int k = 0; k < 8; k++) {
			int64_t n = n0 + k * (int64_t)blockDim.x;
			t[k] = n < N ? targets[n] : ignore;
			l[k] = n < N ? rowloss[n] : 0.0f;
		}
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (counted(t[k], ignore, V)) {
				sum += (double)l[k];
				cnt += 1.0;
			}
	}
	sum = block_sum_d(sum, sh);
	cnt = block_sum_d(cnt, sh);
	if (threadIdx.x == 0) {
		*count = (int64_t)cnt;
		loss[0] = cnt > 0 ? (float)(sum / cnt) : 0.0f;
	}
}

/* A row that adds nothing: left alone, or zeroed when set. */
template <class G>
static __device__ __forceinline__ void ce_zero_row(G *q, int64_t V)
{
	for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
		q[j] = fromf<G>(0.0f);
}

template <class T>
__global__ void ce_bwd(gacc dlogits, bool set, bool pre, const float *dloss, const T *logits,
		       const float *lse, const int32_t *targets, int64_t N, int64_t V, int ignore,
		       const int64_t *count)
{
	if (pre && dloss[0] == 1.0f)
		return;
	int64_t cnt = *count;
	if (cnt == 0 && !set)
		return;
	float f = cnt ? dloss[0] / (float)cnt : 0.0f;
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		if (!counted(t, ignore, V) || cnt == 0) {
			if (set && dlogits.f32)
				ce_zero_row((float *)dlogits.p + n * V, V);
			else if (set)
				ce_zero_row((bf16 *)dlogits.p + n * V, V);
			continue;
		}
		const T *x = logits + n * V;
		float L = lse[n];
		for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
			float d = f * expf(tof(x[j]) - L);
			int64_t i = n * V + j;
			if (j != t) {
				gput(dlogits, set, i, d);
			} else if (dlogits.f32) {
				/* two roundings, as the CPU's += then -= */
				float *q = (float *)dlogits.p;
				q[i] = ((set ? 0.0f : q[i]) + d) - f;
			} else {
				bf16 *q = (bf16 *)dlogits.p;
				q[i] = __float2bfloat16_rn(((set ? 0.0f : __bfloat162float(q[i])) + d) - f);
			}
		}
	}
}

/* q[k] = (q[k] + d[k]) - (k == tk ? f : 0), q read as 0 when set: the
 * rounding of ce_bwd's two cases (x - 0 is x) */
template <class G>
static __device__ __forceinline__ void ce_put8(G *q, bool set, const float *d, int64_t tk, float f)
{
	float c[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	if (!set)
		ld8(c, q);
	for (int k = 0; k < 8; k++)
		c[k] = (c[k] + d[k]) - (k == tk ? f : 0.0f);
	st8(q, c);
}

/* ce_bwd with eight logits a thread: V a multiple of 8, both buffers
 * aligned. */
template <class T>
__global__ void ce_bwd8(gacc dlogits, bool set, bool pre, const float *dloss, const T *logits,
			const float *lse, const int32_t *targets, int64_t N, int64_t V, int ignore,
			const int64_t *count)
{
	if (pre && dloss[0] == 1.0f)
		return;
	int64_t cnt = *count;
	if (cnt == 0 && !set)
		return;
	float f = cnt ? dloss[0] / (float)cnt : 0.0f;
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		if (!counted(t, ignore, V) || cnt == 0) {
			if (set && dlogits.f32)
				ce_zero_row((float *)dlogits.p + n * V, V);
			else if (set)
				ce_zero_row((bf16 *)dlogits.p + n * V, V);
			continue;
		}
		const T *x = logits + n * V;
		float L = lse[n];
		for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
			float d[8];
			ld8(d, x + 8 * j);
			for (int k = 0; k < 8; k++)
				d[k] = f * expf(d[k] - L);
			int64_t i = n * V + 8 * j;
			if (dlogits.f32)
				ce_put8((float *)dlogits.p + i, set, d, t - 8 * j, f);
			else
				ce_put8((bf16 *)dlogits.p + i, set, d, t - 8 * j, f);
		}
	}
}

/* *count = the rows counted, before ce_rows_grad8 needs it. */
__global__ void ce_count(int64_t *count, const int32_t *targets, int64_t N, int64_t V, int ignore)
{
	__shared__ double sh[32];
	double cnt = 0.0;
	for (int64_t n0 = threadIdx.x; n0 < N; n0 += 8 * (int64_t)blockDim.x) {
		int32_t t[8]; /* eight loads in flight */
#pragma unroll
		for (int k = 0; k < 8; k++) {
			int64_t n = n0 + k * (int64_t)blockDim.x;
			t[k] = n < N ? targets[n] : ignore;
		}
#pragma unroll
		for (int k = 0; k < 8; k++)
			cnt += counted(t[k], ignore, V);
	}
	cnt = block_sum_d(cnt, sh);
	if (threadIdx.x == 0)
		*count = (int64_t)cnt;
}

/* ce_rows8 that also writes the gradient of the mean loss (dloss 1) into
 * dlogits, as ce_bwd8 would assign it, while the row is at hand: each
 * thread keeps its logits of the row in shared memory (SM: V of them fit)
 * or reads them again (the first pass brought them into the caches), so
 * the backward need not read the logits again. Each thread reads back only
 * what it stored: no barrier between the passes beyond row_finish's. */
template <class T, bool SM>
__global__ void ce_rows_grad8(float *lse, float *rowloss, T *dlogits, const T *logits,
			      const int32_t *targets, int64_t N, int64_t V, int ignore,
			      const int64_t *count, unsigned *flags)
{
	extern __shared__ uint4 row_sh[];
	__shared__ float shm[32], shs[32];
	T *rs = (T *)row_sh;
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	int64_t cnt = *count;
	float f = cnt ? 1.0f / (float)cnt : 0.0f;
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		T *q = dlogits + n * V;
		if (!ce_row_counts(n, t, V, ignore, lse, rowloss, flags)) {
			ce_zero_row(q, V);
			continue;
		}
		const T *x = logits + n * V;
		float m = -INFINITY, s = 0.0f;
		for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
			float v[8];
			ld8(v, x + 8 * j);
			if (SM)
				st8(rs + 8 * j, v);
			lse_add8(m, s, v);
		}
		row_finish(lse, rowloss, n, m, s, x + t, shm, shs, lane, wid, nw);
		float L = lse[n]; /* written by thread 0 before row_finish's barrier */
		for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
			float d[8];
			ld8(d, SM ? rs + 8 * j : x + 8 * j);
			for (int k = 0; k < 8; k++)
				d[k] = f * expf(d[k] - L);
			ce_put8(q + 8 * j, true, d, t - 8 * j, f);
		}
	}
}

/* ce_rows_grad8 for BF16 with the row in registers instead of shared
 * memory: each thread's (at most) CE_REG_G groups of eight logits are
 * loaded together, all in flight before the first is used, and kept as
 * raw bf16 (four registers a group) for the gradient. No shared row lets
 * two blocks of 512 threads share an SM, and no store to shared memory
 * stands between a load and its use.
 * The arithmetic is in base 2, each exponential one fma and one ex2: a
 * thread's maximum x0 of its logits (on the bf16 pairs: exact), m = x0
 * log2 e and s = sum of 2^(x log2 e - m); the pairs (m, s) merged over
 * the block as ce_rows_grad8's, lse2 = m + log2 s, lse = lse2 ln 2; the
 * gradient f e^(x - lse) = 2^(x log2 e - (lse2 + log2 count)), d - f at
 * the target. Two exponentials a logit still: keeping the first's terms
 * for the gradient would take 64 more registers a thread where two blocks
 * of 512 threads leave 64 in all (or 128 KiB of shared memory a row); it
 * was expf's eight instructions each (range reduction, the unit's ex2,
 * scaling) that bound the kernel, not the unit: two ex2 a logit are 0.5 ms
 * of it at N = V = 32768, the memory's time 0.93 ms. The results differ
 * from ce_rows8's and ce_bwd8's (expf) by a few units in the last place
 * of a float (the gradient is then rounded to bf16: about one element in
 * 10^4 one bf16 unit apart), and are the same bits from run to run (every
 * sum in a fixed order). On the H200 at N = V = 32768 (bench/bw_gpu.cu,
 * with ce_count and ce_mean): 1122 us (3.8 TB/s), with expf 1466 (ncu:
 * issue slots 75% busy, DRAM 2.9 TB/s); one block an SM streaming its rows
 * through shared memory (cp.async, two rows ahead) with the first
 * exponentials kept in registers for the gradient (one a logit, 128
 * registers a thread): 1344 us. */
#define CE_REG_G 8
#define CE_LOG2E 1.44269504088896341f

static __device__ __forceinline__ __nv_bfloat162 as_bf162(uint32_t w)
{
	__nv_bfloat162 h;
	memcpy(&h, &w, sizeof h);
	return h;
}

__global__ void __launch_bounds__(512, 2)
	ce_rows_grad8_reg(float *lse, float *rowloss, bf16 *dlogits, const bf16 *logits,
			  const int32_t *targets, int64_t N, int64_t V, int ignore,
			  const int64_t *count, unsigned *flags)
{
	__shared__ float shm[32], shs[32], shl;
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	int64_t cnt = *count;
	float f = cnt ? 1.0f / (float)cnt : 0.0f;
	float lf = log2f((float)cnt); /* f = 2^-lf where a row counts */
	int V8 = (int)(V / 8);
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t t = targets[n];
		uint4 *q = (uint4 *)(dlogits + n * V);
		if (!ce_row_counts(n, t, V, ignore, lse, rowloss, flags)) {
			for (int j = threadIdx.x; j < V8; j += blockDim.x)
				q[j] = make_uint4(0, 0, 0, 0);
			continue;
		}
		const uint4 *x = (const uint4 *)(logits + n * V);
		packed8<bf16> u[CE_REG_G];
#pragma unroll
		for (int g = 0; g < CE_REG_G; g++) {
			int j = (int)threadIdx.x + g * (int)blockDim.x;
			if (j < V8)
				u[g].u[0] = __ldcs(x + j); /* read once: evict first */
		}
		__nv_bfloat162 x0 = as_bf162(0xff80ff80u); /* -inf, -inf */
#pragma unroll
		for (int g = 0; g < CE_REG_G; g++) {
			int j = (int)threadIdx.x + g * (int)blockDim.x;
			if (j < V8) {
				x0 = __hmax2(x0, as_bf162(u[g].u[0].x));
				x0 = __hmax2(x0, as_bf162(u[g].u[0].y));
				x0 = __hmax2(x0, as_bf162(u[g].u[0].z));
				x0 = __hmax2(x0, as_bf162(u[g].u[0].w));
			}
		}
		float m = fmaxf(__low2float(x0), __high2float(x0)) * CE_LOG2E, s = 0.0f;
		if (m != -INFINITY) {
#pragma unroll
			for (int g = 0; g < CE_REG_G; g++) {
				int j = (int)threadIdx.x + g * (int)blockDim.x;
				if (j < V8) {
					float v[8];
					unpack8(v, u[g]);
					for (int k = 0; k < 8; k++)
						s += ex2(fmaf(v[k], CE_LOG2E, -m));
				}
			}
		}
		float K = row_finish<true>(lse, rowloss, n, m, s, logits + n * V + t, shm, shs,
					   lane, wid, nw, &shl) +
			  lf;
#pragma unroll
		for (int g = 0; g < CE_REG_G; g++) {
			int j = (int)threadIdx.x + g * (int)blockDim.x;
			if (j < V8) {
				float d[8];
				unpack8(d, u[g]);
				for (int k = 0; k < 8; k++)
					d[k] = ex2(fmaf(d[k], CE_LOG2E, -K));
				int tk = t - 8 * j;
				if (tk >= 0 && tk < 8)
					for (int k = 0; k < 8; k++)
						d[k] = k == tk ? d[k] - f : d[k];
				st8((bf16 *)(q + j), d);
			}
		}
	}
}

#define CE_GRAD_THREADS 512
#define CE_ROW_SMEM (64 << 10) /* a row kept in shared memory up to this size */

static unsigned row_grid(int64_t N) { return (unsigned)(N < (1 << 30) ? (N < 1 ? 1 : N) : (1 << 30)); }

/* With dlogits, the gradient too, where ce_rows_grad8 applies. */
static int ce_forward_grad(lmk_cuda_backend *b, lmk_dtype dt, float *lse, int64_t *count,
			   float *rowloss, void *dlogits, const void *logits,
			   const int32_t *targets, int64_t N, int64_t V, int ignore)
{
	ce_count<<<1, 1024, 0, b->stream>>>(count, targets, N, V, ignore);
	LMK_CK_LAUNCH();
	size_t row = (size_t)V * lmk_dtype_size(dt);
	unsigned grid = (unsigned)(N < 65536 ? N : 65536);
	if (dt == LMK_BF16 && V <= (int64_t)CE_REG_G * 8 * CE_GRAD_THREADS) {
		ce_rows_grad8_reg<<<grid, CE_GRAD_THREADS, 0, b->stream>>>(
			lse, rowloss, (bf16 *)dlogits, (const bf16 *)logits, targets, N, V, ignore,
			count, b->flags);
	} else if (row <= CE_ROW_SMEM) {
		LMK_DT_SWITCH(dt, "cross_entropy", {
			LMK_CK(cudaFuncSetAttribute(ce_rows_grad8<T, true>,
						    cudaFuncAttributeMaxDynamicSharedMemorySize,
						    CE_ROW_SMEM));
			ce_rows_grad8<T, true><<<grid, CE_GRAD_THREADS, row, b->stream>>>(
				lse, rowloss, (T *)dlogits, (const T *)logits, targets, N, V, ignore,
				count, b->flags);
		});
	} else {
		LMK_DT_SWITCH(dt, "cross_entropy",
			      ce_rows_grad8<T, false><<<grid, CE_GRAD_THREADS, 0, b->stream>>>(
				      lse, rowloss, (T *)dlogits, (const T *)logits, targets, N, V,
				      ignore, count, b->flags));
	}
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_cross_entropy_forward(void *be, lmk_dtype dt, float *loss, float *lse,
					      int64_t *count, float *rowloss, const void *logits,
					      const int32_t *targets, int64_t N, int64_t V,
					      int ignore, void *dlogits)
{
	lmk_cuda_backend *b = LMK_BE(be);
	int wrote = 0;
	if (N > 0 && dlogits && vec8_ok(V, logits, dlogits)) {
		int rc = ce_forward_grad(b, dt, lse, count, rowloss, dlogits, logits, targets, N, V,
					 ignore);
		if (rc < 0)
			return rc;
		wrote = 1;
	} else if (N > 0) {
		if (vec8_ok(V, logits))
			LMK_DT_SWITCH(dt, "cross_entropy",
				      ce_rows8<T><<<row_grid(N), THREADS, 0, b->stream>>>(
					      lse, rowloss, (const T *)logits, targets, N, V, ignore,
					      b->flags));
		else
			LMK_DT_SWITCH(dt, "cross_entropy",
				      ce_rows<T><<<row_grid(N), THREADS, 0, b->stream>>>(
					      lse, rowloss, (const T *)logits, targets, N, V, ignore,
					      b->flags));
		LMK_CK_LAUNCH();
	}
	ce_mean<<<1, 1024, 0, b->stream>>>(loss, count, rowloss, targets, N, V, ignore);
	LMK_CK_LAUNCH();
	return wrote;
}

extern "C" int lmk_cuda_cross_entropy_backward(void *be, lmk_dtype dt, lmk_gbuf dlogits,
					       const float *dloss, const void *logits,
					       const float *lse, const int32_t *targets, int64_t N,
					       int64_t V, int ignore, const int64_t *count, int assign,
					       int pre)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (N == 0 || V == 0 || !dlogits.p)
		return 0;
	if (check_gbuf("cross_entropy", dt, dlogits) < 0)
		return lmk_errcode();
	/* with the forward's gradient in place most launches only read dloss:
	 * fewer blocks (the kernels stride over the rows either way) */
	unsigned grid = pre && (assign & 1) && N > 2048 ? 2048 : row_grid(N);
	if (vec8_ok(V, logits, dlogits.p))
		LMK_DT_SWITCH(dt, "cross_entropy",
			      ce_bwd8<T><<<grid, THREADS, 0, b->stream>>>(
				      to_gacc(dlogits), assign & 1, pre && (assign & 1), dloss,
				      (const T *)logits, lse,
				      targets, N, V, ignore, count));
	else
		LMK_DT_SWITCH(dt, "cross_entropy",
			      ce_bwd<T><<<grid, THREADS, 0, b->stream>>>(
				      to_gacc(dlogits), assign & 1, pre && (assign & 1), dloss,
				      (const T *)logits, lse,
				      targets, N, V, ignore, count));
	LMK_CK_LAUNCH();
	return 0;
}
