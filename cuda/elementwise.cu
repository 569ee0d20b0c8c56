/* elementwise.cu: silu, gelu (erf and tanh forms), swiglu, add and mul with
 * a broadcast operand, scale, dropout (the CPU's Philox, bit for bit), and
 * the helpers accumulate (grad += float32) and convert (F32 <-> BF16).
 * A backward adds into its gradients, or assigns those its launcher's
 * assign bits name (gput: gradients the tape left unwritten).
 * One thread per element in a grid-stride loop, or eight (16-byte accesses)
 * where the sizes and pointers allow (vec8_ok); values are computed in
 * float32 whatever the storage type. Shape letters: n elements, N rows of
 * M elements for a broadcast operand of (M). */
#include "common.cuh"

#define THREADS 256

#define GRID_STRIDE(i, n)                                                          \
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
	     i += (int64_t)gridDim.x * blockDim.x)

static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ----------------------------------------------------------------- silu */

template <class T>
__global__ void silu_fwd(T *out, const T *inp, int64_t n)
{
	GRID_STRIDE(i, n)
	{
		float x = tof(inp[i]);
		out[i] = fromf<T>(x * sigmoidf_(x));
	}
}

template <class T>
__global__ void silu_bwd(gacc dinp, bool set, const T *dout, const T *inp, int64_t n)
{
	GRID_STRIDE(i, n)
	{
		float x = tof(inp[i]), s = sigmoidf_(x);
		gput(dinp, set, i, tof(dout[i]) * s * (1.0f + x * (1.0f - s)));
	}
}

extern "C" int lmk_cuda_silu_forward(void *be, lmk_dtype dt, void *out, const void *inp, int64_t n)
{
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "silu", silu_fwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					  (T *)out, (const T *)inp, n));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_silu_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
				      const void *inp, int64_t n, int assign)
{
	if (n == 0 || !dinp.p)
		return 0;
	if (check_gbuf("silu", dt, dinp) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "silu", silu_bwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					  to_gacc(dinp), assign & 1, (const T *)dout, (const T *)inp, n));
	LMK_CK_LAUNCH();
	return 0;
}

/* ----------------------------------------------------------------- gelu */

/* gelu(x) = x Phi(x), written without the cancellation of 1 + erf or
 * 1 + tanh for negative x (at x = -2.9 that sum is 0.0037, so one ulp of
 * erf became 2e-5 of the result): 0.5 x erfc(-x / sqrt 2), and the tanh
 * form's 0.5 (1 + tanh z) as the logistic of 2z, its 1 - t^2 as
 * 4 s(2z) s(-2z) */
#define GELU_K 0.7978845608028654f   /* sqrt(2/pi) */
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

template <class T>
__global__ void gelu_fwd(T *out, const T *inp, int64_t n, int approx)
{
	GRID_STRIDE(i, n)
	{
		float x = tof(inp[i]), y;
		if (approx)
			y = x / (1.0f + expf(-2.0f * GELU_K * (x + GELU_C * x * x * x)));
		else
			y = 0.5f * x * erfcf(-x * INV_SQRT2);
		out[i] = fromf<T>(y);
	}
}

template <class T>
__global__ void gelu_bwd(gacc dinp, bool set, const T *dout, const T *inp, int64_t n, int approx)
{
	GRID_STRIDE(i, n)
	{
		float x = tof(inp[i]), d;
		if (approx) {
			float z = 2.0f * GELU_K * (x + GELU_C * x * x * x);
			float s = 1.0f / (1.0f + expf(-z)), s1 = 1.0f / (1.0f + expf(z));
			d = s + 2.0f * x * s * s1 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
		} else {
			d = 0.5f * erfcf(-x * INV_SQRT2) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
		}
		gput(dinp, set, i, tof(dout[i]) * d);
	}
}

extern "C" int lmk_cuda_gelu_forward(void *be, lmk_dtype dt, void *out, const void *inp, int64_t n,
				     int approx)
{
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "gelu", gelu_fwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					  (T *)out, (const T *)inp, n, approx));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_gelu_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
				      const void *inp, int64_t n, int approx, int assign)
{
	if (n == 0 || !dinp.p)
		return 0;
	if (check_gbuf("gelu", dt, dinp) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "gelu", gelu_bwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					  to_gacc(dinp), assign & 1, (const T *)dout, (const T *)inp, n,
					  approx));
	LMK_CK_LAUNCH();
	return 0;
}

/* --------------------------------------------------------------- swiglu */

/* Over N rows of F elements: out (N,F), gate and up (and dgate and dup)
 * with row stride ld, so that one kernel serves separate tensors (one row
 * of n: N 1, F = ld = n) and the two halves of one product's output
 * (swiglu_cat: up = gate + F, ld = 2F). Columns in a grid-stride loop along
 * x, rows along y: no division per element. */
#define ROWS_Y(r, N) for (int64_t r = blockIdx.y; r < (N); r += gridDim.y)
#define COLS_X(j, n)                                                                \
	for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < (n); \
	     j += (int64_t)gridDim.x * blockDim.x)

static inline dim3 grid_rows(int64_t N, int64_t cols)
{
	return dim3(grid_for(cols, THREADS), (unsigned)(N < 65535 ? (N < 1 ? 1 : N) : 65535));
}

template <class T>
__global__ void swiglu_fwd(T *out, const T *gate, const T *up, int64_t ld, int64_t N, int64_t F)
{
	ROWS_Y(r, N)
	COLS_X(j, F)
	{
		float g = tof(gate[r * ld + j]);
		out[r * F + j] = fromf<T>(g * sigmoidf_(g) * tof(up[r * ld + j]));
	}
}

/* The same, eight elements a thread (F8 groups a row; vec8_ok of F, ld
 * and every pointer). */
template <class T>
__global__ void swiglu_fwd8(T *out, const T *gate, const T *up, int64_t ld, int64_t N,
			    int64_t F8)
{
	ROWS_Y(r, N)
	COLS_X(j, F8)
	{
		float g[8], u[8], y[8];
		ld8(g, gate + r * ld + 8 * j);
		ld8(u, up + r * ld + 8 * j);
		for (int k = 0; k < 8; k++)
			y[k] = g[k] * sigmoidf_(g[k]) * u[k];
		st8(out + r * 8 * F8 + 8 * j, y);
	}
}

/* dgate and dup (row stride ld, as gate and up) */
template <class T>
__global__ void swiglu_bwd(gacc dgate, bool sg, gacc dup, bool su, const T *dout, const T *gate,
			   const T *up, int64_t ld, int64_t N, int64_t F)
{
	ROWS_Y(r, N)
	COLS_X(j, F)
	{
		int64_t i = r * ld + j;
		float x = tof(gate[i]), s = sigmoidf_(x), g = tof(dout[r * F + j]);
		if (dgate.p)
			gput(dgate, sg, i, g * tof(up[i]) * s * (1.0f + x * (1.0f - s)));
		if (dup.p)
			gput(dup, su, i, g * x * s);
	}
}

template <class T>
__global__ void swiglu_bwd8(gacc dgate, bool sg, gacc dup, bool su, const T *dout, const T *gate,
			    const T *up, int64_t ld, int64_t N, int64_t F8)
{
	ROWS_Y(r, N)
	COLS_X(j, F8)
	{
		int64_t i = r * ld + 8 * j;
		float x[8], u[8], g[8], dg[8], du[8];
		ld8(x, gate + i);
		ld8(u, up + i);
		ld8(g, dout + r * 8 * F8 + 8 * j);
		for (int k = 0; k < 8; k++) {
			float s = sigmoidf_(x[k]);
			dg[k] = g[k] * u[k] * s * (1.0f + x[k] * (1.0f - s));
			du[k] = g[k] * x[k] * s;
		}
		if (dgate.p)
			gput8(dgate, sg, i, dg);
		if (dup.p)
			gput8(dup, su, i, du);
	}
}

/* The launches of both forms: N rows of F, inputs with row stride ld. */
static int swiglu_fwd_rows(void *be, lmk_dtype dt, void *out, const void *gate, const void *up,
			   int64_t ld, int64_t N, int64_t F)
{
	cudaStream_t st = LMK_BE(be)->stream;
	if (N == 0 || F == 0)
		return 0;
	if (vec8_ok(F, out, gate, up) && ld % 8 == 0)
		LMK_DT_SWITCH(dt, "swiglu",
			      swiglu_fwd8<T><<<grid_rows(N, F / 8), THREADS, 0, st>>>(
				      (T *)out, (const T *)gate, (const T *)up, ld, N, F / 8));
	else
		LMK_DT_SWITCH(dt, "swiglu",
			      swiglu_fwd<T><<<grid_rows(N, F), THREADS, 0, st>>>(
				      (T *)out, (const T *)gate, (const T *)up, ld, N, F));
	LMK_CK_LAUNCH();
	return 0;
}

static int swiglu_bwd_rows(void *be, lmk_dtype dt, lmk_gbuf dgate, lmk_gbuf dup, const void *dout,
			   const void *gate, const void *up, int64_t ld, int64_t N, int64_t F,
			   int assign)
{
	cudaStream_t st = LMK_BE(be)->stream;
	if (N == 0 || F == 0 || (!dgate.p && !dup.p))
		return 0;
	if (check_gbuf("swiglu", dt, dgate) < 0 || check_gbuf("swiglu", dt, dup) < 0)
		return lmk_errcode();
	if (vec8_ok(F, dgate.p, dup.p, dout, gate, up) && ld % 8 == 0)
		LMK_DT_SWITCH(dt, "swiglu",
			      swiglu_bwd8<T><<<grid_rows(N, F / 8), THREADS, 0, st>>>(
				      to_gacc(dgate), assign & 1, to_gacc(dup), assign & 2,
				      (const T *)dout, (const T *)gate, (const T *)up, ld, N, F / 8));
	else
		LMK_DT_SWITCH(dt, "swiglu",
			      swiglu_bwd<T><<<grid_rows(N, F), THREADS, 0, st>>>(
				      to_gacc(dgate), assign & 1, to_gacc(dup), assign & 2,
				      (const T *)dout, (const T *)gate, (const T *)up, ld, N, F));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_swiglu_forward(void *be, lmk_dtype dt, void *out, const void *gate,
				       const void *up, int64_t n)
{
	return swiglu_fwd_rows(be, dt, out, gate, up, n, 1, n);
}

extern "C" int lmk_cuda_swiglu_backward(void *be, lmk_dtype dt, lmk_gbuf dgate, lmk_gbuf dup,
					const void *dout, const void *gate, const void *up,
					int64_t n, int assign)
{
	return swiglu_bwd_rows(be, dt, dgate, dup, dout, gate, up, n, 1, n, assign);
}

extern "C" int lmk_cuda_swiglu_cat_forward(void *be, lmk_dtype dt, void *out, const void *gu,
					   int64_t N, int64_t F)
{
	const char *up = (const char *)gu + (size_t)F * lmk_dtype_size(dt);
	return swiglu_fwd_rows(be, dt, out, gu, up, 2 * F, N, F);
}

extern "C" int lmk_cuda_swiglu_cat_backward(void *be, lmk_dtype dt, lmk_gbuf dgu,
					    const void *dout, const void *gu, int64_t N,
					    int64_t F, int assign)
{
	const char *up = (const char *)gu + (size_t)F * lmk_dtype_size(dt);
	lmk_gbuf dup = dgu;
	if (dgu.p)
		dup.p = (char *)dgu.p + (size_t)F * lmk_dtype_size(dgu.dt);
	/* both halves are dgu's: its assign bit is theirs */
	return swiglu_bwd_rows(be, dt, dgu, dup, dout, gu, up, 2 * F, N, F,
			       assign & 1 ? 3 : 0);
}

/* -------------------------------------------------------------- add, mul */

template <class T, int MUL>
__global__ void binary_fwd(T *out, const T *a, const T *b, int64_t N, int64_t M)
{
	GRID_STRIDE(i, N * M)
	{
		float x = tof(a[i]), y = tof(b[M == N * M ? i : i % M]);
		out[i] = fromf<T>(MUL ? x * y : x + y);
	}
}

/* da += dout (add) or dout * b (mul); with N == 1 for add, db += dout too
 * (sa, sb: assign instead). */
template <class T, int MUL>
__global__ void binary_bwd_a(gacc da, bool sa, gacc db_same, bool sb, const T *dout, const T *b,
			     int64_t N, int64_t M)
{
	GRID_STRIDE(i, N * M)
	{
		float g = tof(dout[i]);
		if (da.p)
			gput(da, sa, i, MUL ? g * tof(b[i % M]) : g);
		if (db_same.p)
			gput(db_same, sb, i, g);
	}
}

/* The same, eight elements a thread: N*M a multiple of 8 and b either a's
 * shape or a row of M, a multiple of 8 (binary_vec). */
template <class T, int MUL>
__global__ void binary_fwd8(T *out, const T *a, const T *b, int64_t N, int64_t M)
{
	GRID_STRIDE(i, N * M / 8)
	{
		float x[8], y[8];
		ld8(x, a + 8 * i);
		ld8(y, b + (M == N * M ? 8 * i : 8 * i % M));
		for (int k = 0; k < 8; k++)
			x[k] = MUL ? x[k] * y[k] : x[k] + y[k];
		st8(out + 8 * i, x);
	}
}

template <class T, int MUL>
__global__ void binary_bwd_a8(gacc da, bool sa, gacc db_same, bool sb, const T *dout, const T *b,
			      int64_t N, int64_t M)
{
	GRID_STRIDE(i, N * M / 8)
	{
		float g[8], y[8];
		ld8(g, dout + 8 * i);
		if (da.p) {
			if (MUL) {
				ld8(y, b + 8 * i % M);
				for (int k = 0; k < 8; k++)
					y[k] *= g[k];
				gput8(da, sa, 8 * i, y);
			} else {
				gput8(da, sa, 8 * i, g);
			}
		}
		if (db_same.p)
			gput8(db_same, sb, 8 * i, g);
	}
}

static bool binary_vec(int64_t N, int64_t M, const void *a, const void *b, const void *c,
		       const void *d)
{
	return vec8_ok(N * M, a, b, c, d) && (N == 1 || M % 8 == 0);
}

template <int MUL>
static int binary_forward(const char *who, void *be, lmk_dtype dt, void *out, const void *a,
			  const void *b, int64_t N, int64_t M)
{
	if (N * M == 0)
		return 0;
	if (binary_vec(N, M, out, a, b, NULL))
		LMK_DT_SWITCH(dt, who,
			      binary_fwd8<T, MUL><<<grid_for(N * M / 8, THREADS), THREADS, 0,
						    LMK_BE(be)->stream>>>((T *)out, (const T *)a,
									  (const T *)b, N, M));
	else
		LMK_DT_SWITCH(dt, who,
			      binary_fwd<T, MUL><<<grid_for(N * M, THREADS), THREADS, 0,
						   LMK_BE(be)->stream>>>((T *)out, (const T *)a,
									 (const T *)b, N, M));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_add_forward(void *be, lmk_dtype dt, void *out, const void *a, const void *b,
				    int64_t N, int64_t M)
{
	return binary_forward<0>("add", be, dt, out, a, b, N, M);
}

extern "C" int lmk_cuda_mul_forward(void *be, lmk_dtype dt, void *out, const void *a, const void *b,
				    int64_t N, int64_t M)
{
	return binary_forward<1>("mul", be, dt, out, a, b, N, M);
}

extern "C" int lmk_cuda_add_backward(void *be, lmk_dtype dt, lmk_gbuf da, lmk_gbuf db,
				     const void *dout, int64_t N, int64_t M, int assign)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N * M == 0)
		return 0;
	if (check_gbuf("add", dt, da) < 0 || check_gbuf("add", dt, db) < 0)
		return lmk_errcode();
	/* N == 1: b has a's shape and its gradient is elementwise too */
	lmk_gbuf same = N == 1 ? db : lmk_gbuf{NULL, LMK_F32};
	if ((da.p || same.p) && binary_vec(N, M, da.p, same.p, dout, NULL))
		LMK_DT_SWITCH(dt, "add",
			      binary_bwd_a8<T, 0><<<grid_for(N * M / 8, THREADS), THREADS, 0,
						    bk->stream>>>(to_gacc(da), assign & 1,
								  to_gacc(same), assign & 2,
								  (const T *)dout, (const T *)NULL, N, M));
	else if (da.p || same.p)
		LMK_DT_SWITCH(dt, "add",
			      binary_bwd_a<T, 0><<<grid_for(N * M, THREADS), THREADS, 0, bk->stream>>>(
				      to_gacc(da), assign & 1, to_gacc(same), assign & 2,
				      (const T *)dout, (const T *)NULL, N, M));
	LMK_CK_LAUNCH();
	if (db.p && N != 1)
		LMK_DT_SWITCH(dt, "add",
			      return colsum<COLSUM_G, T>(bk, db, (const T *)dout, (const T *)NULL,
							 NULL, NULL, N, M));
	return 0;
}

extern "C" int lmk_cuda_mul_backward(void *be, lmk_dtype dt, lmk_gbuf da, lmk_gbuf db,
				     const void *dout, const void *a, const void *b, int64_t N,
				     int64_t M, int assign)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N * M == 0)
		return 0;
	if (check_gbuf("mul", dt, da) < 0 || check_gbuf("mul", dt, db) < 0)
		return lmk_errcode();
	if (da.p && binary_vec(N, M, da.p, dout, b, NULL))
		LMK_DT_SWITCH(dt, "mul",
			      binary_bwd_a8<T, 1><<<grid_for(N * M / 8, THREADS), THREADS, 0,
						    bk->stream>>>(to_gacc(da), assign & 1,
								  gacc{NULL, 1}, false,
								  (const T *)dout, (const T *)b, N, M));
	else if (da.p)
		LMK_DT_SWITCH(dt, "mul",
			      binary_bwd_a<T, 1><<<grid_for(N * M, THREADS), THREADS, 0, bk->stream>>>(
				      to_gacc(da), assign & 1, gacc{NULL, 1}, false, (const T *)dout,
				      (const T *)b, N, M));
	LMK_CK_LAUNCH();
	if (db.p)
		LMK_DT_SWITCH(dt, "mul",
			      return colsum<COLSUM_GA, T>(bk, db, (const T *)dout, (const T *)a, NULL,
							  NULL, N, M));
	return 0;
}

/* ---------------------------------------------------------------- scale */

template <class T>
__global__ void scale_fwd(T *out, const T *inp, float s, int64_t n)
{
	GRID_STRIDE(i, n) out[i] = fromf<T>(s * tof(inp[i]));
}

template <class T>
__global__ void scale_bwd(gacc dinp, bool set, const T *dout, float s, int64_t n)
{
	GRID_STRIDE(i, n) gput(dinp, set, i, s * tof(dout[i]));
}

extern "C" int lmk_cuda_scale_forward(void *be, lmk_dtype dt, void *out, const void *inp, float s,
				      int64_t n)
{
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "scale", scale_fwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					   (T *)out, (const T *)inp, s, n));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_scale_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
				       float s, int64_t n, int assign)
{
	if (n == 0 || !dinp.p)
		return 0;
	if (check_gbuf("scale", dt, dinp) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "scale", scale_bwd<T><<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
					   to_gacc(dinp), assign & 1, (const T *)dout, s, n));
	LMK_CK_LAUNCH();
	return 0;
}

/* -------------------------------------------------------------- dropout */

/* lib/rng.c's lmk_philox, statement for statement. */
static __device__ __forceinline__ void philox(uint64_t seed, uint64_t counter, uint32_t out[4])
{
	uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
	for (int r = 0; r < 10; r++) {
		uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
		uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
		uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
		c0 = n0;
		c1 = n1;
		c2 = n2;
		c3 = n3;
		k0 += 0x9E3779B9u;
		k1 += 0xBB67AE85u;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* Element i uses word i % 4 of block counter + i / 4, as lmk_philox_uniform:
 * one thread per block of 4 elements. ACC: into the gradient gout (gput)
 * instead of out =. */
template <class T, int ACC>
__global__ void dropout_k(T *out, gacc gout, bool set, const T *inp, int64_t n, float p,
			  float keep, uint64_t seed, uint64_t counter)
{
	int64_t nq = (n + 3) / 4;
	GRID_STRIDE(q, nq)
	{
		uint32_t w[4];
		philox(seed, counter + (uint64_t)q, w);
#pragma unroll
		for (int k = 0; k < 4; k++) {
			int64_t i = 4 * q + k;
			if (i >= n)
				break;
			float u = (float)(w[k] >> 8) * (1.0f / 16777216.0f);
			float y = u < p ? 0.0f : tof(inp[i]) * keep;
			if (ACC)
				gput(gout, set, i, y);
			else
				out[i] = fromf<T>(y);
		}
	}
}

static float keep_of(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }

extern "C" int lmk_cuda_dropout_forward(void *be, lmk_dtype dt, void *out, const void *inp,
					int64_t n, float p, uint64_t seed, uint64_t counter)
{
	if (n == 0)
		return 0;
	LMK_DT_SWITCH(dt, "dropout",
		      dropout_k<T, 0><<<grid_for((n + 3) / 4, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, gacc{NULL, 1}, false, (const T *)inp, n, p, keep_of(p),
			      seed, counter));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_dropout_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
					 int64_t n, float p, uint64_t seed, uint64_t counter,
					 int assign)
{
	if (n == 0 || !dinp.p)
		return 0;
	if (check_gbuf("dropout", dt, dinp) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "dropout",
		      dropout_k<T, 1><<<grid_for((n + 3) / 4, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)NULL, to_gacc(dinp), assign & 1, (const T *)dout, n, p,
			      keep_of(p), seed, counter));
	LMK_CK_LAUNCH();
	return 0;
}

/* ------------------------------------------------- accumulate, convert */

__global__ void accumulate_k(gacc dst, const float *src, int64_t n)
{
	GRID_STRIDE(i, n) gadd(dst, i, src[i]);
}

extern "C" int lmk_cuda_accumulate(void *be, lmk_gbuf dst, const float *src, int64_t n)
{
	if (n == 0 || !dst.p)
		return 0;
	if (dst.dt != LMK_F32 && dst.dt != LMK_BF16)
		return lmk_err(LMK_EUNSUP, "accumulate: no cuda kernel for a %s gradient",
			       lmk_dtype_name(dst.dt));
	accumulate_k<<<grid_for(n, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(to_gacc(dst), src, n);
	LMK_CK_LAUNCH();
	return 0;
}

template <class D, class S>
__global__ void convert_k(D *dst, const S *src, int64_t n)
{
	GRID_STRIDE(i, n) dst[i] = fromf<D>(tof(src[i]));
}

extern "C" int lmk_cuda_convert(void *be, void *dst, lmk_dtype ddt, const void *src, lmk_dtype sdt,
				int64_t n)
{
	cudaStream_t s = LMK_BE(be)->stream;
	if (n == 0)
		return 0;
	if (ddt == sdt) {
		LMK_CK(cudaMemcpyAsync(dst, src, (size_t)n * lmk_dtype_size(ddt),
				       cudaMemcpyDeviceToDevice, s));
		return 0;
	}
	if (ddt == LMK_BF16 && sdt == LMK_F32)
		convert_k<bf16, float><<<grid_for(n, THREADS), THREADS, 0, s>>>((bf16 *)dst,
										(const float *)src, n);
	else if (ddt == LMK_F32 && sdt == LMK_BF16)
		convert_k<float, bf16><<<grid_for(n, THREADS), THREADS, 0, s>>>((float *)dst,
										(const bf16 *)src, n);
	else
		return lmk_err(LMK_EUNSUP, "convert: no cuda kernel from %s to %s",
			       lmk_dtype_name(sdt), lmk_dtype_name(ddt));
	LMK_CK_LAUNCH();
	return 0;
}
