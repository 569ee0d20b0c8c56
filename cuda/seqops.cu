/* seqops.cu: the kernels of lib/seqops.h: the causal depthwise convolution
 * (forward, dx, and dw/db as deterministic sums over rows), L2 norm of rows
 * (one warp per row), the gates' elementwise functions, rows times scalars
 * (ds as deterministic sums over row chunks), and the column
 * copies behind slice and concat. Values are computed in float32 whatever
 * the storage type T (float or bf16), in the CPU kernels' order where a
 * thread sums (the convolution's taps). Shape letters as in seqops.h. */
#include "common.cuh"
#include "seqops_cuda.h"

extern "C" {
#include "seqops.h" /* lmk_unary_kind */
}

#define THREADS 256

#define GRID_STRIDE(i, n)                                                          \
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
	     i += (int64_t)gridDim.x * blockDim.x)

/* as lib/seqops.c's sigm: through e^-|x| */
static __device__ __forceinline__ float sigm_(float x)
{
	float e = expf(-fabsf(x));
	return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

/* ----------------------------------------------------------- conv1d */

/* Pre-activation of (t, c) of batch row xb (T,C): bias, then the taps in
 * order, as the CPU. */
template <class T>
static __device__ __forceinline__ float conv_pre(const T *xb, const T *w, const T *b, int64_t t,
						 int64_t c, int64_t C, int64_t W)
{
	float a = b ? tof(b[c]) : 0.0f;
	for (int64_t i = 0; i < W; i++) {
		int64_t s = t - W + 1 + i;
		if (s >= 0)
			a += tof(w[c * W + i]) * tof(xb[s * C + c]);
	}
	return a;
}

static __device__ __forceinline__ float conv_dact(float a, int silu)
{
	if (!silu)
		return 1.0f;
	float s = sigm_(a);
	return s * (1.0f + a * (1.0f - s));
}

template <class T>
__global__ void conv_fwd(T *out /*(B,T,C)*/, const T *x /*(B,T,C)*/, const T *w /*(C,W)*/,
			 const T *b /*(C) or NULL*/, int64_t BT, int64_t Tn, int64_t C, int64_t W,
			 int silu)
{
	GRID_STRIDE(i, BT * C)
	{
		int64_t r = i / C, c = i % C, t = r % Tn;
		float a = conv_pre(x + (r - t) * C, w, b, t, c, C, W);
		out[i] = fromf<T>(silu ? a * sigm_(a) : a);
	}
}

/* x[s] feeds the outputs t = s + W-1-i through tap i. */
template <class T>
__global__ void conv_bwd_dx(gacc dx /*(B,T,C)*/, const T *dout /*(B,T,C)*/, const T *x /*(B,T,C)*/,
			    const T *w /*(C,W)*/, const T *b /*(C) or NULL*/, int64_t BT, int64_t Tn,
			    int64_t C, int64_t W, int silu)
{
	GRID_STRIDE(e, BT * C)
	{
		int64_t r = e / C, c = e % C, s = r % Tn;
		const T *xb = x + (r - s) * C, *gb = dout + (r - s) * C;
		float acc = 0.0f;
		for (int64_t i = 0; i < W; i++) {
			int64_t t = s + W - 1 - i;
			if (t >= Tn)
				continue;
			float d = tof(gb[t * C + c]);
			if (silu)
				d *= conv_dact(conv_pre(xb, w, b, t, c, C, W), 1);
			acc += tof(w[c * W + i]) * d;
		}
		gadd(dx, e, acc);
	}
}

#define CV_TX 32
#define CV_TY 8

/* part[(tap*R + chunk)*C + c]: the sum over the rows of chunk blockIdx.y of
 * the term of tap blockIdx.z (tap W: the bias) for channel c. */
template <class T>
__global__ void conv_bwd_part(float *part /*(W+1,R,C)*/, const T *dout /*(B,T,C)*/,
			      const T *x /*(B,T,C)*/, const T *w /*(C,W)*/,
			      const T *b /*(C) or NULL*/, int64_t BT, int64_t Tn, int64_t C,
			      int64_t W, int silu, int64_t rows_per)
{
	__shared__ float sh[CV_TY][CV_TX + 1];
	int64_t c = (int64_t)blockIdx.x * CV_TX + threadIdx.x, tap = blockIdx.z;
	int64_t r0 = (int64_t)blockIdx.y * rows_per;
	int64_t r1 = r0 + rows_per < BT ? r0 + rows_per : BT;
	float acc = 0.0f;
	if (c < C)
		for (int64_t r = r0 + threadIdx.y; r < r1; r += CV_TY) {
			int64_t t = r % Tn;
			const T *xb = x + (r - t) * C;
			float d = tof(dout[r * C + c]);
			if (silu)
				d *= conv_dact(conv_pre(xb, w, b, t, c, C, W), 1);
			if (tap == W) {
				acc += d;
			} else {
				int64_t s = t - W + 1 + tap;
				if (s >= 0)
					acc += d * tof(xb[s * C + c]);
			}
		}
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && c < C) {
		float s = 0.0f;
		for (int k = 0; k < CV_TY; k++)
			s += sh[k][threadIdx.x];
		part[((int64_t)tap * gridDim.y + blockIdx.y) * C + c] = s;
	}
}

/* dw[c,tap] (and db[c] for tap W) += the chunks' sums in chunk order. */
__global__ void conv_bwd_finish(gacc dw /*(C,W)*/, gacc db /*(C)*/, const float *part /*(W+1,R,C)*/,
				int64_t R, int64_t C, int64_t W)
{
	GRID_STRIDE(e, (W + 1) * C)
	{
		int64_t tap = e / C, c = e % C;
		float s = 0.0f;
		for (int64_t k = 0; k < R; k++)
			s += part[(tap * R + k) * C + c];
		if (tap < W) {
			if (dw.p)
				gadd(dw, c * W + tap, s);
		} else if (db.p) {
			gadd(db, c, s);
		}
	}
}

extern "C" int lmk_cuda_conv1d_causal_forward(void *be, lmk_dtype dt, void *out, const void *x,
					      const void *w, const void *b, int64_t B, int64_t Tn,
					      int64_t C, int64_t W, int silu)
{
	int64_t n = B * Tn * C;
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "conv1d_causal",
		      conv_fwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, (const T *)x, (const T *)w, (const T *)b, B * Tn, Tn, C, W,
			      silu));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_conv1d_causal_backward(void *be, lmk_dtype dt, lmk_gbuf dx, lmk_gbuf dw,
					       lmk_gbuf db, const void *dout, const void *x,
					       const void *w, const void *b, int64_t B, int64_t Tn,
					       int64_t C, int64_t W, int silu)
{
	/* Tn: T names the storage type of LMK_DT_SWITCH here */
	lmk_cuda_backend *bk = LMK_BE(be);
	int64_t BT = B * Tn, n = BT * C;
	if (n == 0)
		return 0;
	if (check_gbuf("conv1d_causal", dt, dx) < 0 || check_gbuf("conv1d_causal", dt, dw) < 0 ||
	    check_gbuf("conv1d_causal", dt, db) < 0)
		return lmk_errcode();
	if (dx.p) {
		LMK_DT_SWITCH(dt, "conv1d_causal",
			      conv_bwd_dx<T><<<grid_for(n, THREADS), THREADS, 0, bk->stream>>>(
				      to_gacc(dx), (const T *)dout, (const T *)x, (const T *)w,
				      (const T *)b, BT, Tn, C, W, silu));
		LMK_CK_LAUNCH();
	}
	if (!dw.p && !db.p)
		return 0;
	/* the chunks are a function of B*T alone: the same sums on any device */
	int64_t R = colsum_chunks(BT), rows_per = (BT + R - 1) / R;
	R = (BT + rows_per - 1) / rows_per;
	float *part = (float *)lmk_cuda_scratch(bk, (size_t)((W + 1) * R * C) * sizeof(float));
	if (!part)
		return lmk_errcode();
	dim3 grid((unsigned)((C + CV_TX - 1) / CV_TX), (unsigned)R, (unsigned)(W + 1));
	LMK_DT_SWITCH(dt, "conv1d_causal",
		      conv_bwd_part<T><<<grid, dim3(CV_TX, CV_TY), 0, bk->stream>>>(
			      part, (const T *)dout, (const T *)x, (const T *)w, (const T *)b, BT, Tn,
			      C, W, silu, rows_per));
	LMK_CK_LAUNCH();
	conv_bwd_finish<<<grid_for((W + 1) * C, THREADS), THREADS, 0, bk->stream>>>(
		to_gacc(dw), to_gacc(db), part, R, C, W);
	LMK_CK_LAUNCH();
	return 0;
}

/* ----------------------------------------------------------- l2norm */

#define WARPS (THREADS / 32)

template <class T>
__global__ void l2norm_fwd(T *out /*(N,D)*/, float *rstd /*(N)*/, const T *x /*(N,D)*/, int64_t N,
			   int64_t D, float eps)
{
	int lane = threadIdx.x % 32;
	/* the loop bound is uniform over a warp, as warp_sum needs */
	for (int64_t r = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; r < N;
	     r += (int64_t)gridDim.x * WARPS) {
		const T *xr = x + r * D;
		float ss = 0.0f;
		for (int64_t d = lane; d < D; d += 32) {
			float v = tof(xr[d]);
			ss += v * v;
		}
		float s = 1.0f / sqrtf(warp_sum(ss) + eps);
		if (lane == 0)
			rstd[r] = s;
		for (int64_t d = lane; d < D; d += 32)
			out[r * D + d] = fromf<T>(tof(xr[d]) * s);
	}
}

template <class T>
__global__ void l2norm_bwd(gacc dx /*(N,D)*/, const T *dout /*(N,D)*/, const T *x /*(N,D)*/,
			   const float *rstd /*(N)*/, int64_t N, int64_t D)
{
	int lane = threadIdx.x % 32;
	for (int64_t r = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; r < N;
	     r += (int64_t)gridDim.x * WARPS) {
		const T *xr = x + r * D, *gr = dout + r * D;
		float dot = 0.0f;
		for (int64_t d = lane; d < D; d += 32)
			dot += tof(gr[d]) * tof(xr[d]);
		dot = warp_sum(dot);
		float s = rstd[r], k = s * s * s * dot;
		for (int64_t d = lane; d < D; d += 32)
			gadd(dx, r * D + d, s * tof(gr[d]) - k * tof(xr[d]));
	}
}

extern "C" int lmk_cuda_l2norm_forward(void *be, lmk_dtype dt, void *out, float *rstd,
				       const void *x, int64_t N, int64_t D, float eps)
{
	if (N == 0)
		return 0;
	LMK_DT_SWITCH(dt, "l2norm",
		      l2norm_fwd<T><<<grid_for(N, WARPS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, rstd, (const T *)x, N, D, eps));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_l2norm_backward(void *be, lmk_dtype dt, lmk_gbuf dx, const void *dout,
					const void *x, const float *rstd, int64_t N, int64_t D)
{
	if (N == 0 || !dx.p)
		return 0;
	if (check_gbuf("l2norm", dt, dx) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "l2norm",
		      l2norm_bwd<T><<<grid_for(N, WARPS), THREADS, 0, LMK_BE(be)->stream>>>(
			      to_gacc(dx), (const T *)dout, (const T *)x, rstd, N, D));
	LMK_CK_LAUNCH();
	return 0;
}

/* ------------------------------------------------------------ unary */

static __device__ __forceinline__ float unary_f(int kind, float x, float alpha, float beta)
{
	switch (kind) {
	case LMK_UNARY_SIGMOID:
		return sigm_(x);
	case LMK_UNARY_SOFTPLUS:
		return x > 20.0f ? x : log1pf(expf(x));
	case LMK_UNARY_LOGSIGMOID:
		return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
	case LMK_UNARY_EXP:
		return expf(x);
	default:
		return alpha * x + beta;
	}
}

static __device__ __forceinline__ float unary_d(int kind, float x, float alpha)
{
	switch (kind) {
	case LMK_UNARY_SIGMOID: {
		float s = sigm_(x);
		return s * (1.0f - s);
	}
	case LMK_UNARY_SOFTPLUS:
		return x > 20.0f ? 1.0f : sigm_(x);
	case LMK_UNARY_LOGSIGMOID:
		return sigm_(-x);
	case LMK_UNARY_EXP:
		return expf(x);
	default:
		return alpha;
	}
}

template <class T>
__global__ void unary_fwd(T *out, const T *x, int64_t n, int kind, float alpha, float beta)
{
	GRID_STRIDE(i, n) out[i] = fromf<T>(unary_f(kind, tof(x[i]), alpha, beta));
}

template <class T>
__global__ void unary_bwd(gacc dx, const T *dout, const T *x, int64_t n, int kind, float alpha)
{
	GRID_STRIDE(i, n) gadd(dx, i, tof(dout[i]) * unary_d(kind, tof(x[i]), alpha));
}

extern "C" int lmk_cuda_unary_forward(void *be, lmk_dtype dt, void *out, const void *x, int64_t n,
				      int kind, float alpha, float beta)
{
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "unary",
		      unary_fwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, (const T *)x, n, kind, alpha, beta));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_unary_backward(void *be, lmk_dtype dt, lmk_gbuf dx, const void *dout,
				       const void *x, int64_t n, int kind, float alpha)
{
	if (n == 0 || !dx.p)
		return 0;
	if (check_gbuf("unary", dt, dx) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "unary",
		      unary_bwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      to_gacc(dx), (const T *)dout, (const T *)x, n, kind, alpha));
	LMK_CK_LAUNCH();
	return 0;
}

/* --------------------------------------------------------- mul_rows */

template <class T>
__global__ void mul_rows_fwd(T *out /*(N,D)*/, const T *x /*(N,D)*/, const T *s /*(M)*/, int64_t N,
			     int64_t D, int64_t M)
{
	GRID_STRIDE(e, N * D) out[e] = fromf<T>(tof(x[e]) * tof(s[(e / D) % M]));
}

template <class T>
__global__ void mul_rows_bwd_dx(gacc dx /*(N,D)*/, const T *dout /*(N,D)*/, const T *s /*(M)*/,
				int64_t N, int64_t D, int64_t M)
{
	GRID_STRIDE(e, N * D) gadd(dx, e, tof(dout[e]) * tof(s[(e / D) % M]));
}

/* part[chunk*M + m]: over the rows r = i*M + m of chunk blockIdx.y (i its
 * row groups), the sum of dout[r].x[r]. */
template <class T>
__global__ void mul_rows_bwd_part(float *part /*(R,M)*/, const T *dout /*(N,D)*/,
				  const T *x /*(N,D)*/, int64_t NG, int64_t D, int64_t M,
				  int64_t groups_per)
{
	__shared__ float sh[CV_TY][CV_TX + 1];
	int64_t m = (int64_t)blockIdx.x * CV_TX + threadIdx.x;
	int64_t i0 = (int64_t)blockIdx.y * groups_per;
	int64_t i1 = i0 + groups_per < NG ? i0 + groups_per : NG;
	float acc = 0.0f;
	if (m < M)
		for (int64_t i = i0 + threadIdx.y; i < i1; i += CV_TY) {
			int64_t r = i * M + m;
			float dot = 0.0f;
			for (int64_t d = 0; d < D; d++)
				dot += tof(dout[r * D + d]) * tof(x[r * D + d]);
			acc += dot;
		}
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && m < M) {
		float t = 0.0f;
		for (int k = 0; k < CV_TY; k++)
			t += sh[k][threadIdx.x];
		part[(int64_t)blockIdx.y * M + m] = t;
	}
}

__global__ void mul_rows_bwd_finish(gacc ds /*(M)*/, const float *part /*(R,M)*/, int64_t R,
				    int64_t M)
{
	GRID_STRIDE(m, M)
	{
		float t = 0.0f;
		for (int64_t k = 0; k < R; k++)
			t += part[k * M + m];
		gadd(ds, m, t);
	}
}

extern "C" int lmk_cuda_mul_rows_forward(void *be, lmk_dtype dt, void *out, const void *x,
					 const void *s, int64_t N, int64_t D, int64_t M)
{
	if (N * D == 0)
		return 0;
	LMK_DT_SWITCH(dt, "mul_rows",
		      mul_rows_fwd<T><<<grid_for(N * D, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, (const T *)x, (const T *)s, N, D, M));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_mul_rows_backward(void *be, lmk_dtype dt, lmk_gbuf dx, lmk_gbuf ds,
					  const void *dout, const void *x, const void *s, int64_t N,
					  int64_t D, int64_t M)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N * D == 0)
		return 0;
	if (check_gbuf("mul_rows", dt, dx) < 0 || check_gbuf("mul_rows", dt, ds) < 0)
		return lmk_errcode();
	if (dx.p) {
		LMK_DT_SWITCH(dt, "mul_rows",
			      mul_rows_bwd_dx<T><<<grid_for(N * D, THREADS), THREADS, 0, bk->stream>>>(
				      to_gacc(dx), (const T *)dout, (const T *)s, N, D, M));
		LMK_CK_LAUNCH();
	}
	if (!ds.p)
		return 0;
	/* N/M groups of M rows, chunked as a function of the groups alone */
	int64_t NG = N / M, R = colsum_chunks(NG), per = (NG + R - 1) / R;
	R = (NG + per - 1) / per;
	float *part = (float *)lmk_cuda_scratch(bk, (size_t)(R * M) * sizeof(float));
	if (!part)
		return lmk_errcode();
	dim3 grid((unsigned)((M + CV_TX - 1) / CV_TX), (unsigned)R);
	LMK_DT_SWITCH(dt, "mul_rows",
		      mul_rows_bwd_part<T><<<grid, dim3(CV_TX, CV_TY), 0, bk->stream>>>(
			      part, (const T *)dout, (const T *)x, NG, D, M, per));
	LMK_CK_LAUNCH();
	mul_rows_bwd_finish<<<grid_for(M, THREADS), THREADS, 0, bk->stream>>>(to_gacc(ds), part, R, M);
	LMK_CK_LAUNCH();
	return 0;
}

/* ------------------------------------------------------------- cols */

template <class T>
__global__ void cols_copy_k(T *out, int64_t ldo, int64_t oo, const T *inp, int64_t ldi, int64_t io,
			    int64_t N, int64_t M)
{
	GRID_STRIDE(e, N * M)
	{
		int64_t r = e / M, j = e % M;
		out[r * ldo + oo + j] = inp[r * ldi + io + j];
	}
}

template <class T>
__global__ void cols_add_k(gacc out, int64_t ldo, int64_t oo, const T *inp, int64_t ldi, int64_t io,
			   int64_t N, int64_t M)
{
	GRID_STRIDE(e, N * M)
	{
		int64_t r = e / M, j = e % M;
		gadd(out, r * ldo + oo + j, tof(inp[r * ldi + io + j]));
	}
}

extern "C" int lmk_cuda_cols_copy(void *be, lmk_dtype dt, void *out, int64_t ldo, int64_t oo,
				  const void *inp, int64_t ldi, int64_t io, int64_t N, int64_t M)
{
	if (N * M == 0)
		return 0;
	LMK_DT_SWITCH(dt, "cols_copy",
		      cols_copy_k<T><<<grid_for(N * M, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, ldo, oo, (const T *)inp, ldi, io, N, M));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_cols_add(void *be, lmk_dtype dt, lmk_gbuf out, int64_t ldo, int64_t oo,
				 const void *inp, int64_t ldi, int64_t io, int64_t N, int64_t M)
{
	if (N * M == 0 || !out.p)
		return 0;
	if (check_gbuf("cols_add", dt, out) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "cols_add",
		      cols_add_k<T><<<grid_for(N * M, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      to_gacc(out), ldo, oo, (const T *)inp, ldi, io, N, M));
	LMK_CK_LAUNCH();
	return 0;
}
