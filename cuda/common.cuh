/* common.cuh: what the kernel files share: float/bf16 loads and stores,
 * gradient accumulation into either dtype, warp and block sums in a fixed
 * order, the dtype switch of the launchers, grid sizes, and the column sums
 * (sum over rows into a (M) gradient) that several backwards use.
 * C++ only; included by cuda/<op>.cu. */
#ifndef LMK_CUDA_COMMON_CUH
#define LMK_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "ops_cuda.h" /* first: it includes dtype.h with C linkage */
#include "backend.h"
#include "check.h"

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float tof(float x) { return x; }
static __device__ __forceinline__ float tof(bf16 x) { return __bfloat162float(x); }

template <class T> static __device__ __forceinline__ T fromf(float x);
template <> __device__ __forceinline__ float fromf<float>(float x) { return x; }
/* round to nearest even, as lmk_f32_to_bf16 */
template <> __device__ __forceinline__ bf16 fromf<bf16>(float x) { return __float2bfloat16_rn(x); }

/* A gradient as a kernel sees it. The dtype test is uniform across a
 * launch, so it costs a predicted branch, not divergence. */
struct gacc {
	void *p;
	int f32;
};

static inline gacc to_gacc(lmk_gbuf g) { return gacc{g.p, g.dt == LMK_F32}; }

static __device__ __forceinline__ void gadd(gacc g, int64_t i, float v)
{
	if (g.f32) {
		float *q = (float *)g.p;
		q[i] += v;
	} else {
		bf16 *q = (bf16 *)g.p;
		q[i] = __float2bfloat16_rn(__bfloat162float(q[i]) + v);
	}
}

/* ---- eight consecutive elements at once: one 16-byte access for bf16, two
 * for float32. The caller checks vec8_ok (every pointer 16-byte aligned)
 * and keeps the index a multiple of 8. Values and roundings are those of
 * the one-element forms (tof, fromf, gadd), so a kernel gives the same bits
 * either way. */
static __device__ __forceinline__ void ld8(float *v, const float *p)
{
	float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
	v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
	v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

static __device__ __forceinline__ void ld8(float *v, const bf16 *p)
{
	uint4 u = *(const uint4 *)p;
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
	for (int k = 0; k < 4; k++) {
		float2 f = __bfloat1622float2(h[k]);
		v[2 * k] = f.x;
		v[2 * k + 1] = f.y;
	}
}

static __device__ __forceinline__ void st8(float *p, const float *v)
{
	*(float4 *)p = make_float4(v[0], v[1], v[2], v[3]);
	*(float4 *)(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

static __device__ __forceinline__ void st8(bf16 *p, const float *v)
{
	uint4 u;
	__nv_bfloat162 *h = (__nv_bfloat162 *)&u;
	for (int k = 0; k < 4; k++)
		h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
	*(uint4 *)p = u;
}

/* Eight elements as loaded: the raw words (four registers in bf16, eight
 * in float32), unpacked where used, so that a kernel can issue all of a
 * row's loads before the first use with few registers. ld_packed8 needs
 * p 16-byte aligned (as ld8); unpacked, the values of ld8. */
template <class T> struct packed8 {
	uint4 u[sizeof(T) / 2];
};

template <class T> static __device__ __forceinline__ void ld_packed8(packed8<T> &r, const T *p)
{
	for (int k = 0; k < (int)(sizeof(T) / 2); k++)
		r.u[k] = ((const uint4 *)p)[k];
}

static __device__ __forceinline__ void unpack8(float *v, const packed8<float> &r)
{
	for (int k = 0; k < 2; k++) {
		v[4 * k] = __uint_as_float(r.u[k].x);
		v[4 * k + 1] = __uint_as_float(r.u[k].y);
		v[4 * k + 2] = __uint_as_float(r.u[k].z);
		v[4 * k + 3] = __uint_as_float(r.u[k].w);
	}
}

/* a bf16 is the high half of its float */
static __device__ __forceinline__ void unpack8(float *v, const packed8<bf16> &r)
{
	const uint32_t w[4] = {r.u[0].x, r.u[0].y, r.u[0].z, r.u[0].w};
	for (int k = 0; k < 4; k++) {
		v[2 * k] = __uint_as_float(w[k] << 16);
		v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
	}
}

/* g[i..i+7] += v */
static __device__ __forceinline__ void gadd8(gacc g, int64_t i, const float *v)
{
	float c[8];
	if (g.f32) {
		float *q = (float *)g.p + i;
		ld8(c, q);
		for (int k = 0; k < 8; k++)
			c[k] += v[k];
		st8(q, c);
	} else {
		bf16 *q = (bf16 *)g.p + i;
		ld8(c, q);
		for (int k = 0; k < 8; k++)
			c[k] += v[k];
		st8(q, c);
	}
}

/* g[i] = v when set, else g[i] += v: set for a gradient the tape left
 * unwritten (a backward's assign bit, tensor.h), which is never read. The
 * same roundings as gadd (0 + v is v). */
static __device__ __forceinline__ void gput(gacc g, bool set, int64_t i, float v)
{
	if (!set)
		gadd(g, i, v);
	else if (g.f32)
		((float *)g.p)[i] = v;
	else
		((bf16 *)g.p)[i] = __float2bfloat16_rn(v);
}

static __device__ __forceinline__ void gput8(gacc g, bool set, int64_t i, const float *v)
{
	if (!set)
		gadd8(g, i, v);
	else if (g.f32)
		st8((float *)g.p + i, v);
	else
		st8((bf16 *)g.p + i, v);
}

static inline bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* n elements in groups of 8, every pointer (NULL counts) 16-byte aligned */
static inline bool vec8_ok(int64_t n, const void *a, const void *b = NULL, const void *c = NULL,
			   const void *d = NULL, const void *e = NULL)
{
	return n % 8 == 0 && al16(a) && al16(b) && al16(c) && al16(d) && al16(e);
}

/* Butterfly sum: every lane ends with the same bits (a + b == b + a). */
static __device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ __forceinline__ double warp_sum_d(double v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Sum over a block of at most 1024 threads (a multiple of 32), returned to
 * every thread; sh holds 32 floats. Fixed order for a fixed block size. */
static __device__ __forceinline__ float block_sum(float v, float *sh)
{
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	v = warp_sum(v);
	__syncthreads(); /* sh may still be read from a previous call */
	if (lane == 0)
		sh[wid] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : 0.0f;
	return warp_sum(v);
}

static __device__ __forceinline__ double block_sum_d(double v, double *sh)
{
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
	v = warp_sum_d(v);
	__syncthreads();
	if (lane == 0)
		sh[wid] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : 0.0;
	return warp_sum_d(v);
}

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned grid_for(int64_t n, int threads)
{
	int64_t g = (n + threads - 1) / threads;
	if (g > (1 << 20))
		g = 1 << 20;
	return (unsigned)(g < 1 ? 1 : g);
}

#define LMK_BE(be) ((lmk_cuda_backend *)(be))

/* Runs the statements with T the storage type of dt. */
#define LMK_DT_SWITCH(dt, who, ...)                                                  \
	do {                                                                         \
		if ((dt) == LMK_F32) {                                               \
			typedef float T;                                             \
			__VA_ARGS__;                                                 \
		} else if ((dt) == LMK_BF16) {                                       \
			typedef bf16 T;                                              \
			__VA_ARGS__;                                                 \
		} else {                                                             \
			return lmk_err(LMK_EUNSUP, "%s: no cuda kernel for %s", who, \
				       lmk_dtype_name(dt));                          \
		}                                                                    \
	} while (0)

/* A gradient's dtype must be F32 or the compute dtype. */
static inline int check_gbuf(const char *who, lmk_dtype dt, lmk_gbuf g)
{
	if (g.p && g.dt != LMK_F32 && g.dt != dt)
		return lmk_err(LMK_EUNSUP, "%s: a %s gradient in a %s computation", who,
			       lmk_dtype_name(g.dt), lmk_dtype_name(dt));
	return 0;
}

/* ---- column sums: out[j] += sum over rows r of f(r, j), deterministic --- */

enum { COLSUM_G, COLSUM_GA, COLSUM_RMS, COLSUM_LN };

/* The term of row r, column j. */
template <int MODE, class T>
static __device__ __forceinline__ float colsum_term(const T *g, const T *x, const float *s0,
						    const float *s1, int64_t r, int64_t M, int64_t j)
{
	float gv = tof(g[r * M + j]);
	if (MODE == COLSUM_G)
		return gv;
	float xv = tof(x[r * M + j]);
	if (MODE == COLSUM_GA)
		return gv * xv;
	if (MODE == COLSUM_RMS)
		return gv * (xv * s0[r]);
	return gv * ((xv - s0[r]) * s1[r]);
}

#define COLSUM_TX 32
#define COLSUM_TY 8

/* part[c][j] = sum of the terms of the rows of chunk c = blockIdx.y.
 * Threads of a warp take consecutive columns (coalesced rows). */
template <int MODE, class T>
__global__ void colsum_part_kernel(float *part /*(R,M)*/, const T *g /*(N,M)*/, const T *x /*(N,M)*/,
				   const float *s0 /*(N)*/, const float *s1 /*(N)*/, int64_t N,
				   int64_t M, int64_t rows_per)
{
	__shared__ float sh[COLSUM_TY][COLSUM_TX + 1];
	int64_t j = (int64_t)blockIdx.x * COLSUM_TX + threadIdx.x;
	int64_t r0 = (int64_t)blockIdx.y * rows_per;
	int64_t r1 = r0 + rows_per < N ? r0 + rows_per : N;
	float acc = 0.0f;
	if (j < M)
		for (int64_t r = r0 + threadIdx.y; r < r1; r += COLSUM_TY)
			acc += colsum_term<MODE, T>(g, x, s0, s1, r, M, j);
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && j < M) {
		float s = 0.0f;
		for (int k = 0; k < COLSUM_TY; k++)
			s += sh[k][threadIdx.x];
		part[(int64_t)blockIdx.y * M + j] = s;
	}
}

/* out[j] += the chunks' partial sums, in chunk order. (A template only so
 * that each kernel file has its own copy without an unused-function
 * warning.) */
template <int UNUSED = 0>
__global__ void colsum_finish_kernel(gacc out /*(M)*/, const float *part /*(R,M)*/, int64_t R,
				     int64_t M)
{
	for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < M;
	     j += (int64_t)gridDim.x * blockDim.x) {
		float s = 0.0f;
		for (int64_t c = 0; c < R; c++)
			s += part[c * M + j];
		gadd(out, j, s);
	}
}

/* Chunks of rows: a function of N alone, so that the sums' order does not
 * depend on the device. */
static inline int64_t colsum_chunks(int64_t N)
{
	int64_t R = (N + 63) / 64;
	return R > 64 ? 64 : (R < 1 ? 1 : R);
}

/* out[j] += sum over the N rows of the MODE term. */
template <int MODE, class T>
static int colsum(lmk_cuda_backend *b, lmk_gbuf out, const T *g, const T *x, const float *s0,
		  const float *s1, int64_t N, int64_t M)
{
	if (!out.p || M == 0 || N == 0)
		return 0;
	int64_t R = colsum_chunks(N), rows_per = (N + R - 1) / R;
	R = (N + rows_per - 1) / rows_per;
	float *part = (float *)lmk_cuda_scratch(b, (size_t)(R * M) * sizeof(float));
	if (!part)
		return lmk_errcode();
	dim3 grid((unsigned)((M + COLSUM_TX - 1) / COLSUM_TX), (unsigned)R);
	colsum_part_kernel<MODE, T><<<grid, dim3(COLSUM_TX, COLSUM_TY), 0, b->stream>>>(
		part, g, x, s0, s1, N, M, rows_per);
	LMK_CK_LAUNCH();
	colsum_finish_kernel<0><<<grid_for(M, 256), 256, 0, b->stream>>>(to_gacc(out), part, R, M);
	LMK_CK_LAUNCH();
	return 0;
}

#endif
