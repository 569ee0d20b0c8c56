/* optim.cu: fused AdamW over the whole parameter buffer (one launch: each
 * group of four elements finds its tensor in the span table by binary
 * search) and the global gradient norm (two passes in double, fixed order)
 * with clipping.
 * AdamW's arithmetic is lib/optim.c's, operation for operation, written
 * with __fadd_rn/__fmul_rn/__fdiv_rn/__fsqrt_rn so that the compiler fuses
 * nothing into FMAs: on the same inputs the GPU gives the CPU's bits. */
#include "common.cuh"
#include "optim_cuda.h"

#define THREADS 256
#define NORM_CHUNK 65536 /* elements per partial sum, as lib/optim.c */

/* The last span starting at or before i. */
static __device__ __forceinline__ lmk_cuda_span span_of(const lmk_cuda_span *spans, int nt,
							int64_t i)
{
	int lo = 0, hi = nt - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if ((int64_t)spans[mid].off <= i)
			lo = mid;
		else
			hi = mid - 1;
	}
	return spans[lo];
}

/* One element's update (g already times gscale); *p, *m, *v in and out. */
static __device__ __forceinline__ void adamw_one(float &pi, float &mi, float &vi, float gi,
						 bool dec, float w1, float om1, int small_w,
						 float w2, float b2, float eps, float keep,
						 float neg_step, float bc2_sqrt)
{
	if (dec)
		pi = __fmul_rn(pi, keep);
	if (small_w)
		mi = __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)));
	else
		mi = __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), om1));
	vi = __fadd_rn(__fmul_rn(vi, b2), __fmul_rn(w2, __fmul_rn(gi, gi)));
	float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
	pi = __fadd_rn(pi, __fmul_rn(neg_step, __fdiv_rn(mi, denom)));
}

/* One step's scalars: by value, or (DEV) read from device memory when the
 * kernel runs, where a set skip leaves everything as it is. */
struct adamw_args {
	float gscale, keep, neg_step, bc2_sqrt;
};

template <bool DEV>
static __device__ __forceinline__ bool adamw_load(adamw_args &a, const lmk_cuda_adamw_dev *s)
{
	if (!DEV)
		return true;
	if (s->skip)
		return false;
	a.gscale = s->gscale;
	a.keep = s->keep;
	a.neg_step = s->neg_step;
	a.bc2_sqrt = s->bc2_sqrt;
	return true;
}

template <bool DEV>
__global__ void adamw_k(float *p, const float *g, float *m, float *v, bf16 *lp,
			const lmk_cuda_span *spans, int nt, int64_t n, adamw_args a,
			const lmk_cuda_adamw_dev *s, float w1, float om1, int small_w, float w2,
			float b2, float eps, int decay)
{
	if (!adamw_load<DEV>(a, s))
		return;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		const lmk_cuda_span sp = span_of(spans, nt, i);
		if (i < (int64_t)sp.off || i >= (int64_t)sp.off + sp.n)
			continue; /* padding between tensors */
		float pi = p[i], mi = m[i], vi = v[i];
		adamw_one(pi, mi, vi, __fmul_rn(g[i], a.gscale), decay && sp.decay, w1, om1, small_w,
			  w2, b2, eps, a.keep, a.neg_step, a.bc2_sqrt);
		p[i] = pi;
		m[i] = mi;
		v[i] = vi;
		if (lp)
			lp[i] = __float2bfloat16_rn(pi);
	}
}

/* The same, four elements a thread with 16-byte accesses (n a multiple of
 * 4, the buffers aligned: adamw4_ok): a group of four never straddles two
 * tensors, which start at multiples of 16 elements (lmk_params), so one
 * search serves it; elements past its tensor's end are padding. */
template <bool DEV>
__global__ void adamw4_k(float *p, const float *g, float *m, float *v, bf16 *lp,
			 const lmk_cuda_span *spans, int nt, int64_t n4, adamw_args a,
			 const lmk_cuda_adamw_dev *s, float w1, float om1, int small_w, float w2,
			 float b2, float eps, int decay)
{
	if (!adamw_load<DEV>(a, s))
		return;
	for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < n4;
	     q += (int64_t)gridDim.x * blockDim.x) {
		const int64_t i = 4 * q;
		const lmk_cuda_span sp = span_of(spans, nt, i);
		const int64_t end = (int64_t)sp.off + sp.n;
		if (i < (int64_t)sp.off || i >= end)
			continue;
		float4 P = *(float4 *)(p + i), G = *(const float4 *)(g + i);
		float4 M = *(float4 *)(m + i), V = *(float4 *)(v + i);
		float *pp = &P.x, *gg = &G.x, *mm = &M.x, *vv = &V.x;
		for (int k = 0; k < 4; k++)
			if (i + k < end)
				adamw_one(pp[k], mm[k], vv[k], __fmul_rn(gg[k], a.gscale),
					  decay && sp.decay, w1, om1, small_w, w2, b2, eps, a.keep,
					  a.neg_step, a.bc2_sqrt);
		*(float4 *)(p + i) = P;
		*(float4 *)(m + i) = M;
		*(float4 *)(v + i) = V;
		if (lp) {
			__nv_bfloat162 h[2] = {__floats2bfloat162_rn(P.x, P.y),
					       __floats2bfloat162_rn(P.z, P.w)};
			*(uint2 *)(lp + i) = *(uint2 *)h;
		}
	}
}

static bool adamw4_ok(size_t n, const void *p, const void *g, const void *m, const void *v,
		      const void *lp)
{
	return n % 4 == 0 && al16(p) && al16(g) && al16(m) && al16(v) && ((uintptr_t)lp & 7) == 0;
}

template <bool DEV>
static int adamw_launch(lmk_cuda_backend *b, float *p, const float *g, float *m, float *v, void *lp,
			const lmk_cuda_span *spans, int nt, size_t n, adamw_args a,
			const lmk_cuda_adamw_dev *s, float w1, float om1, int small_w, float w2,
			float b2, float eps, int decay)
{
	if (n == 0 || nt == 0)
		return 0;
	if (adamw4_ok(n, p, g, m, v, lp))
		adamw4_k<DEV><<<grid_for((int64_t)n / 4, THREADS), THREADS, 0, b->stream>>>(
			p, g, m, v, (bf16 *)lp, spans, nt, (int64_t)n / 4, a, s, w1, om1, small_w, w2,
			b2, eps, decay);
	else
		adamw_k<DEV><<<grid_for((int64_t)n, THREADS), THREADS, 0, b->stream>>>(
			p, g, m, v, (bf16 *)lp, spans, nt, (int64_t)n, a, s, w1, om1, small_w, w2, b2,
			eps, decay);
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_adamw_step(void *be, float *p, const float *g, float *m, float *v,
				   void *lp, const lmk_cuda_span *spans, int nt, size_t n, float gscale,
				   float w1, float om1, int small_w, float w2, float b2, float eps, int decay,
				   float keep, float neg_step, float bc2_sqrt)
{
	const adamw_args a = {gscale, keep, neg_step, bc2_sqrt};
	return adamw_launch<false>(LMK_BE(be), p, g, m, v, lp, spans, nt, n, a, nullptr, w1, om1,
				   small_w, w2, b2, eps, decay);
}

extern "C" int lmk_cuda_adamw_step_dev(void *be, float *p, const float *g, float *m, float *v,
				       void *lp, const lmk_cuda_span *spans, int nt, size_t n,
				       const lmk_cuda_adamw_dev *s, float w1, float om1, int small_w,
				       float w2, float b2, float eps, int decay)
{
	const adamw_args a = {};
	return adamw_launch<true>(LMK_BE(be), p, g, m, v, lp, spans, nt, n, a, s, w1, om1, small_w,
				  w2, b2, eps, decay);
}

/* part[c] = sum of g² over chunk c, in double. */
__global__ void sumsq_part(double *part, const float *g, int64_t n)
{
	__shared__ double sh[32];
	int64_t lo = (int64_t)blockIdx.x * NORM_CHUNK;
	int64_t hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
	double s = 0.0;
	for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
		s += (double)g[i] * (double)g[i];
	s = block_sum_d(s, sh);
	if (threadIdx.x == 0)
		part[blockIdx.x] = s;
}

__global__ void sumsq_finish(double *out, const double *part, int64_t nchunk)
{
	__shared__ double sh[32];
	double s = 0.0;
	for (int64_t c = threadIdx.x; c < nchunk; c += blockDim.x)
		s += part[c];
	s = block_sum_d(s, sh);
	if (threadIdx.x == 0)
		*out = sqrt(s);
}

extern "C" int lmk_cuda_grad_norm(void *be, double *norm, const float *g, size_t n)
{
	lmk_cuda_backend *b = LMK_BE(be);
	*norm = 0.0;
	if (n == 0)
		return 0;
	int64_t nchunk = ((int64_t)n + NORM_CHUNK - 1) / NORM_CHUNK;
	double *part = (double *)lmk_cuda_scratch(b, (size_t)(nchunk + 1) * sizeof(double));
	if (!part)
		return lmk_errcode();
	if (nchunk > INT32_MAX)
		return lmk_err(LMK_EUNSUP, "grad norm: %zu elements is too many", n);
	sumsq_part<<<(unsigned)nchunk, THREADS, 0, b->stream>>>(part + 1, g, (int64_t)n);
	LMK_CK_LAUNCH();
	sumsq_finish<<<1, 1024, 0, b->stream>>>(part, part + 1, nchunk);
	LMK_CK_LAUNCH();
	LMK_CK(cudaMemcpyAsync(norm, part, sizeof *norm, cudaMemcpyDeviceToHost, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
	return 0;
}

/* sumsq_finish's norm into s, with the clipping factor and the skip flag
 * of lmk_cuda_grad_norm_dev. */
__global__ void norm_finish_dev(lmk_cuda_adamw_dev *st, const double *part, int64_t nchunk,
				double max_norm, const float *loss, int nloss, const unsigned *flags)
{
	__shared__ double sh[32];
	double s = 0.0;
	for (int64_t c = threadIdx.x; c < nchunk; c += blockDim.x)
		s += part[c];
	s = block_sum_d(s, sh);
	if (threadIdx.x != 0)
		return;
	const double norm = sqrt(s);
	float coef = 1.0f;
	if (max_norm > 0) {
		const double c = max_norm / (norm + 1e-6);
		if (c < 1.0)
			coef = (float)c;
	}
	int skip = !isfinite(norm) || *flags != 0;
	for (int i = 0; i < nloss; i++)
		skip |= !isfinite(loss[i]);
	st->norm = norm;
	st->gscale = coef;
	st->skip = skip;
}

extern "C" int lmk_cuda_grad_norm_dev(void *be, lmk_cuda_adamw_dev *s, const float *g, size_t n,
				      double max_norm, const float *loss, int nloss)
{
	lmk_cuda_backend *b = LMK_BE(be);
	int64_t nchunk = ((int64_t)n + NORM_CHUNK - 1) / NORM_CHUNK;
	if (nchunk > INT32_MAX)
		return lmk_err(LMK_EUNSUP, "grad norm: %zu elements is too many", n);
	double *part = (double *)lmk_cuda_scratch(b, (size_t)(nchunk ? nchunk : 1) * sizeof(double));
	if (!part)
		return lmk_errcode();
	if (nchunk) {
		sumsq_part<<<(unsigned)nchunk, THREADS, 0, b->stream>>>(part, g, (int64_t)n);
		LMK_CK_LAUNCH();
	}
	norm_finish_dev<<<1, 1024, 0, b->stream>>>(s, part, nchunk, max_norm, loss, nloss, b->flags);
	LMK_CK_LAUNCH();
	return 0;
}

__global__ void scale_k(float *g, int64_t n, float c)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		g[i] *= c;
}

extern "C" int lmk_cuda_grad_scale(void *be, float *g, size_t n, float c)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (n == 0)
		return 0;
	scale_k<<<grid_for((int64_t)n, THREADS), THREADS, 0, b->stream>>>(g, (int64_t)n, c);
	LMK_CK_LAUNCH();
	return 0;
}
