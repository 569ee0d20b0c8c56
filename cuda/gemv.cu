/* gemv.cu: out (N,OC) = inp (N,IC) wᵀ + b for a few rows N (decoding), where
 * a cuBLASLt call costs 4-5 µs for a matrix it could stream in 0.2 µs.
 * Shape letters: N rows, IC inputs, OC outputs; w is (OC,IC) row-major.
 *
 * A warp per output column o: lane l reads eight consecutive weights at a
 * time (one 16-byte load in bf16, two in f32) at l*8, l*8 + 256, ..., the
 * matching eight inputs of each of the N rows (small, from L1/L2), and
 * keeps N float32 sums; a butterfly over the warp finishes them and lane r
 * writes row r's output, with the bias added before the one rounding. The
 * weights are read once for all N rows. Where IC is not a multiple of 8 or
 * a pointer is not 16-byte aligned, the same with one element a lane at a
 * time. N is a template argument (1..LMK_GEMV_MAX_ROWS) so that the sums
 * stay in registers.
 *
 * For a recorded decoding step (lib/llama.c), one launch can do more than
 * the linear op (gemv_cuda.h): up to three products of the same input (q,
 * k and v; the warps' columns run over the three in turn), a residual
 * added to the rounded product as the add op adds it, or the gate and up
 * products of a SwiGLU MLP with the activation applied (two sums a warp,
 * each rounded as its own product would be, then swiglu as elementwise.cu
 * computes it), and the rmsnorm of the input in front: each warp first
 * sums the squares of its rows (the lanes' elements in norm.cu's order, so
 * the same 1/rms), then rounds each normalised input as the norm's output
 * would be before it multiplies; so that the result has the bits of the
 * separate ops.
 * Launches allow programmatic dependent launch (pdl.cuh): a kernel's first
 * weight loads overlap the end of the kernel before it. */
#include "common.cuh"
#include "gemv_cuda.h"
#include "pdl.cuh"

#define GEMV_WARPS 8
#define MAXPART 3

template <class T>
struct part {
	T *out;
	const T *w, *b, *res;
	int oc;
};

template <class T>
struct parts {
	part<T> p[MAXPART];
	int n;
	const T *nw; /* NORM: the rmsnorm weight (IC) */
	float eps;
};

/* 1 / (1 + e^-x), as elementwise.cu's swiglu */
static __device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Eight elements as loaded (16 or 32 bytes), converted when used: the
 * registers of the loads in flight hold raw bits, not floats. */
template <class T>
struct __align__(16) raw8 {
	uint4 u[sizeof(T) / 2];
};

static __device__ __forceinline__ void cvt8(float *v, const raw8<bf16> &r)
{
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)r.u;
	for (int k = 0; k < 4; k++) {
		const float2 f = __bfloat1622float2(h[k]);
		v[2 * k] = f.x;
		v[2 * k + 1] = f.y;
	}
}

static __device__ __forceinline__ void cvt8(float *v, const raw8<float> &r)
{
	const float *f = (const float *)r.u;
	for (int k = 0; k < 8; k++)
		v[k] = f[k];
}

/* The first weight loads of a lane (w[c], c = lane*8 + 256 u for u <
 * PREFETCH) are issued before the kernel waits for the one before it
 * (pdl.cuh); the rest run in dot_vec's loop. */
#define PREFETCH 2

/* The weights of one batch: w[c0 + 256 u .. + 8) for u < U, as loaded. */
template <class T, int U>
struct wbatch {
	raw8<T> r[U];
};

template <class T, int U>
static __device__ __forceinline__ void load_batch(wbatch<T, U> &b, const T *__restrict__ w, int c0,
						  int IC)
{
#pragma unroll
	for (int u = 0; u < U; u++)
		if (c0 + 256 * u < IC)
			b.r[u] = *(const raw8<T> *)(w + c0 + 256 * u);
}

/* acc[r] += the weights wf (8 at c) . x[r, c..c+8); NORM: x[r, i] taken as
 * the rmsnorm output, rounded to T: x[r, i] rs[r] nw[i] */
template <class T, int R, bool NORM>
static __device__ __forceinline__ void use8(float (&acc)[R], const float *wf, int c,
					    const T *__restrict__ x, const float (&rs)[R],
					    const T *__restrict__ nw, int IC)
{
	float nf[8];
	if (NORM)
		ld8(nf, nw + c);
#pragma unroll
	for (int r = 0; r < R; r++) {
		float xf[8];
		ld8(xf, x + (int64_t)r * IC + c);
#pragma unroll
		for (int e = 0; e < 8; e++)
			acc[r] += wf[e] * (NORM ? tof(fromf<T>(xf[e] * rs[r] * nf[e])) : xf[e]);
	}
}

/* acc[r] += the batch's weights . x[r, same elements] */
template <class T, int R, int U, bool NORM>
static __device__ __forceinline__ void use_batch(float (&acc)[R], const wbatch<T, U> &b, int c0,
						 const T *__restrict__ x, const float (&rs)[R],
						 const T *__restrict__ nw, int IC)
{
#pragma unroll
	for (int u = 0; u < U; u++) {
		const int c = c0 + 256 * u;
		if (c >= IC)
			break;
		float wf[8];
		cvt8(wf, b.r[u]);
		use8<T, R, NORM>(acc, wf, c, x, rs, nw, IC);
	}
}

/* acc[r] += w . x[r] over this lane's share from c0 on, in increasing
 * order (16-byte loads: VEC kernels). A plain loop unrolled by four: the
 * loads of several iterations in flight without holding registers for
 * more (an explicit batch of eight cost a third of the bandwidth). */
template <class T, int R, bool NORM>
static __device__ __forceinline__ void dot_vec(float (&acc)[R], const T *__restrict__ w,
					       const T *__restrict__ x, const float (&rs)[R],
					       const T *__restrict__ nw, int IC, int c0)
{
#pragma unroll 4
	for (int c = c0; c < IC; c += 256) {
		float wf[8];
		ld8(wf, w + c);
		use8<T, R, NORM>(acc, wf, c, x, rs, nw, IC);
	}
}

/* the same, one element a lane at a time (any alignment) */
template <class T, int R, bool NORM>
static __device__ __forceinline__ void dot_one(float (&acc)[R], const T *__restrict__ w,
					       const T *__restrict__ x, const float (&rs)[R],
					       const T *__restrict__ nw, int IC, int lane)
{
	for (int c = lane; c < IC; c += 32) {
		const float wv = tof(w[c]), nv = NORM ? tof(nw[c]) : 1.f;
#pragma unroll
		for (int r = 0; r < R; r++) {
			const float xv = tof(x[(int64_t)r * IC + c]);
			acc[r] += wv * (NORM ? tof(fromf<T>(xv * rs[r] * nv)) : xv);
		}
	}
}

/* rs[r] = 1 / rms of row r, as norm.cu's rmsnorm computes it (its vector
 * kernel's order when VEC, its one-element kernel's otherwise) */
template <class T, int R, bool VEC>
static __device__ __forceinline__ void row_rstd(float (&rs)[R], const T *__restrict__ x, int IC,
						float eps, int lane)
{
#pragma unroll
	for (int r = 0; r < R; r++) {
		const T *xr = x + (int64_t)r * IC;
		float ss = 0.f;
		if (VEC) {
			for (int c = lane * 8; c < IC; c += 256) {
				float xf[8];
				ld8(xf, xr + c);
				for (int e = 0; e < 8; e++)
					ss += xf[e] * xf[e];
			}
		} else {
			for (int c = lane; c < IC; c += 32) {
				const float v = tof(xr[c]);
				ss += v * v;
			}
		}
		ss = warp_sum(ss);
		rs[r] = (float)(1.0 / sqrt((double)ss / (double)IC + (double)eps));
	}
}

/* GLU: a.p[0] is the gate (its out the result), a.p[1] the up product.
 * Launched with pdl_launch: the first batch of weights (and the biases)
 * is loaded before pdl_wait, under the previous kernel's tail. */
template <class T, int R, bool VEC, bool GLU, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
	gemv_k(const parts<T> a, const T *__restrict__ x, int IC)
{
	constexpr int U = PREFETCH;
	pdl_trigger();
	const int lane = threadIdx.x & 31;
	int o = blockIdx.x * GEMV_WARPS + threadIdx.x / 32, s = 0;
	if (!GLU)
		while (s + 1 < a.n && o >= a.p[s].oc)
			o -= a.p[s++].oc;
	const part<T> P = s == 0 ? a.p[0] : s == 1 ? a.p[1] : a.p[2];
	if (o >= P.oc)
		return; /* the whole warp */
	const T *wo = P.w + (int64_t)o * IC, *wu = GLU ? a.p[1].w + (int64_t)o * IC : NULL;
	wbatch<T, U> b0, u0;
	if (VEC) {
		load_batch<T, U>(b0, wo, lane * 8, IC);
		if (GLU)
			load_batch<T, U>(u0, wu, lane * 8, IC);
	}
	const float bias = P.b ? tof(P.b[o]) : 0.f;
	const float ubias = GLU && a.p[1].b ? tof(a.p[1].b[o]) : 0.f;
	pdl_wait();

	float acc[R], up[R], rs[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = up[r] = rs[r] = 0.f;
	if (NORM)
		row_rstd<T, R, VEC>(rs, x, IC, a.eps, lane);
	if (VEC) {
		use_batch<T, R, U, NORM>(acc, b0, lane * 8, x, rs, a.nw, IC);
		dot_vec<T, R, NORM>(acc, wo, x, rs, a.nw, IC, lane * 8 + 256 * U);
		if (GLU) {
			use_batch<T, R, U, NORM>(up, u0, lane * 8, x, rs, a.nw, IC);
			dot_vec<T, R, NORM>(up, wu, x, rs, a.nw, IC, lane * 8 + 256 * U);
		}
	} else {
		dot_one<T, R, NORM>(acc, wo, x, rs, a.nw, IC, lane);
		if (GLU)
			dot_one<T, R, NORM>(up, wu, x, rs, a.nw, IC, lane);
	}
#pragma unroll
	for (int r = 0; r < R; r++) {
		const float sum = warp_sum(acc[r]);
		const float usum = GLU ? warp_sum(up[r]) : 0.f;
		if (lane != r)
			continue;
		const int64_t i = (int64_t)r * P.oc + o;
		float y = tof(fromf<T>(sum + bias));
		if (GLU)
			y = y * sigmoid_(y) * tof(fromf<T>(usum + ubias));
		else if (P.res)
			y = tof(P.res[i]) + y;
		P.out[i] = fromf<T>(y);
	}
}

template <class T, int R, bool GLU, bool NORM>
static cudaError_t launch(cudaStream_t st, bool vec, const parts<T> &a, const T *x, int IC,
			  int64_t cols)
{
	const unsigned blocks = (unsigned)((cols + GEMV_WARPS - 1) / GEMV_WARPS);
	if (vec)
		return pdl_launch(gemv_k<T, R, true, GLU, NORM>, blocks, GEMV_WARPS * 32, 0, st, a,
				  x, IC);
	return pdl_launch(gemv_k<T, R, false, GLU, NORM>, blocks, GEMV_WARPS * 32, 0, st, a, x, IC);
}

template <class T, bool GLU, bool NORM>
static cudaError_t launch_rows(cudaStream_t st, int N, bool vec, const parts<T> &a, const T *x,
			       int IC, int64_t cols)
{
	switch (N) {
	case 1: return launch<T, 1, GLU, NORM>(st, vec, a, x, IC, cols);
	case 2: return launch<T, 2, GLU, NORM>(st, vec, a, x, IC, cols);
	case 3: return launch<T, 3, GLU, NORM>(st, vec, a, x, IC, cols);
	case 4: return launch<T, 4, GLU, NORM>(st, vec, a, x, IC, cols);
	case 5: return launch<T, 5, GLU, NORM>(st, vec, a, x, IC, cols);
	case 6: return launch<T, 6, GLU, NORM>(st, vec, a, x, IC, cols);
	case 7: return launch<T, 7, GLU, NORM>(st, vec, a, x, IC, cols);
	default: return launch<T, 8, GLU, NORM>(st, vec, a, x, IC, cols);
	}
}

static int check(const char *who, int64_t N, int64_t IC, int n)
{
	if (N < 1 || N > LMK_GEMV_MAX_ROWS || IC < 1 || IC > INT32_MAX || n < 1 || n > MAXPART)
		return lmk_err(LMK_EINVAL, "%s: N %lld, IC %lld, %d products: expected 1 <= N <= "
			       "%d, IC >= 1, 1 to %d products", who, (long long)N, (long long)IC, n,
			       LMK_GEMV_MAX_ROWS, MAXPART);
	return 0;
}

/* Launches the products of outs (the GLU pair when glu), of the rmsnorm
 * of inp when norm is given. */
template <class T>
static int run(void *be, bool glu, const void *inp, const void *norm, float eps, int64_t N,
	       int64_t IC, const lmk_gemv_out *outs, int n)
{
	parts<T> a = {};
	int64_t cols = 0;
	/* the bias and the residual are read one element at a time: their
	 * alignment does not matter */
	bool vec = vec8_ok(IC, inp, norm);
	for (int i = 0; i < n; i++) {
		if (outs[i].oc < 0 || outs[i].oc > INT32_MAX)
			return lmk_err(LMK_EINVAL, "gemv: %lld outputs", (long long)outs[i].oc);
		a.p[i] = part<T>{(T *)outs[i].out, (const T *)outs[i].w, (const T *)outs[i].b,
				 (const T *)outs[i].res, (int)outs[i].oc};
		vec = vec && al16(outs[i].w);
		cols += glu ? 0 : outs[i].oc;
	}
	a.n = n;
	a.nw = (const T *)norm;
	a.eps = eps;
	if (glu)
		cols = outs[0].oc;
	if (cols == 0)
		return 0;
	if (cols > (int64_t)INT32_MAX - GEMV_WARPS)
		return lmk_err(LMK_EINVAL, "gemv: %lld outputs in all", (long long)cols);
	cudaStream_t st = LMK_BE(be)->stream;
	const T *x = (const T *)inp;
	cudaError_t e;
	if (glu && norm)
		e = launch_rows<T, true, true>(st, (int)N, vec, a, x, (int)IC, cols);
	else if (glu)
		e = launch_rows<T, true, false>(st, (int)N, vec, a, x, (int)IC, cols);
	else if (norm)
		e = launch_rows<T, false, true>(st, (int)N, vec, a, x, (int)IC, cols);
	else
		e = launch_rows<T, false, false>(st, (int)N, vec, a, x, (int)IC, cols);
	LMK_CK(e);
	return 0;
}

extern "C" int lmk_cuda_gemv_multi(void *be, lmk_dtype dt, const void *inp, const void *norm,
				   float eps, int64_t N, int64_t IC, const lmk_gemv_out *outs,
				   int n)
{
	if (check("gemv", N, IC, n) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "gemv", return run<T>(be, false, inp, norm, eps, N, IC, outs, n));
	return 0;
}

extern "C" int lmk_cuda_gemv(void *be, lmk_dtype dt, void *out, const void *inp, const void *w,
			     const void *b, int64_t N, int64_t IC, int64_t OC)
{
	const lmk_gemv_out o = {out, w, b, NULL, OC};
	return lmk_cuda_gemv_multi(be, dt, inp, NULL, 0.f, N, IC, &o, 1);
}

extern "C" int lmk_cuda_gemv_swiglu(void *be, lmk_dtype dt, void *out, const void *inp,
				    const void *norm, float eps, const void *wg, const void *bg,
				    const void *wu, const void *bu, int64_t N, int64_t IC, int64_t OC)
{
	if (check("gemv swiglu", N, IC, 2) < 0)
		return lmk_errcode();
	const lmk_gemv_out o[2] = {{out, wg, bg, NULL, OC}, {NULL, wu, bu, NULL, OC}};
	LMK_DT_SWITCH(dt, "gemv swiglu", return run<T>(be, true, inp, norm, eps, N, IC, o, 2));
	return 0;
}
