/* norm.cu: rmsnorm and layernorm, forward and backward, fused: one warp per
 * row (N rows of C channels), statistics in float32 (the final 1/sqrt in
 * double, as the CPU kernel computes it), the parameter gradients dw and db
 * as deterministic column sums (per-chunk partials, then a second pass);
 * rmsnorm's dw summed by its backward kernel itself where C allows. */
#include "common.cuh"

#define ROWS_PER_BLOCK 4 /* warps per block, one row each */

static unsigned row_blocks(int64_t N) { return (unsigned)((N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK); }

/* -------------------------------------------------------------- rmsnorm */

template <class T>
__global__ void rmsnorm_fwd(T *out, float *rstd, const T *inp, const T *w, int64_t N, int64_t C,
			    float eps)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C;
	T *y = out + row * C;
	float ss = 0.0f;
	for (int64_t i = lane; i < C; i += 32) {
		float v = tof(x[i]);
		ss += v * v;
	}
	ss = warp_sum(ss);
	float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)eps));
	for (int64_t i = lane; i < C; i += 32)
		y[i] = fromf<T>(tof(x[i]) * r * (w ? tof(w[i]) : 1.0f));
	if (lane == 0)
		rstd[row] = r;
}

/* The same, eight channels a lane (16-byte loads): C a multiple of 8 and
 * every row aligned (vec8_ok). Fewer dependent loads per lane matter most
 * for a single row (decoding), where the kernel is all latency. */
template <class T>
__global__ void rmsnorm_fwd8(T *out, float *rstd, const T *inp, const T *w, int64_t N, int64_t C,
			     float eps)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C;
	T *y = out + row * C;
	float ss = 0.0f, xv[8], wv[8];
	for (int64_t i = 8 * lane; i < C; i += 8 * 32) {
		ld8(xv, x + i);
		for (int k = 0; k < 8; k++)
			ss += xv[k] * xv[k];
	}
	ss = warp_sum(ss);
	float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)eps));
	for (int k = 0; k < 8; k++)
		wv[k] = 1.0f;
	for (int64_t i = 8 * lane; i < C; i += 8 * 32) {
		ld8(xv, x + i);
		if (w)
			ld8(wv, w + i);
		for (int k = 0; k < 8; k++)
			xv[k] = xv[k] * r * wv[k];
		st8(y + i, xv);
	}
	if (lane == 0)
		rstd[row] = r;
}

/* rmsnorm_fwd8 with the row in registers, G groups of 256 channels
 * (C <= 256 G): x and w loaded at once, x not read again. The same sums
 * in the same order: the same bits. */
template <class T, int G>
__global__ void rmsnorm_fwd8r(T *out, float *rstd, const T *inp, const T *w, int64_t N, int64_t C,
			      float eps)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C;
	T *y = out + row * C;
	packed8<T> xr[G], wr[G];
#pragma unroll
	for (int q = 0; q < G; q++) {
		int64_t i = 8 * lane + 256 * q;
		if (i < C) {
			ld_packed8(xr[q], x + i);
			if (w)
				ld_packed8(wr[q], w + i);
		}
	}
	float ss = 0.0f;
#pragma unroll
	for (int q = 0; q < G; q++)
		if (8 * lane + 256 * q < C) {
			float xv[8];
			unpack8(xv, xr[q]);
			for (int k = 0; k < 8; k++)
				ss += xv[k] * xv[k];
		}
	ss = warp_sum(ss);
	float r = (float)(1.0 / sqrt((double)ss / (double)C + (double)eps));
#pragma unroll
	for (int q = 0; q < G; q++) {
		int64_t i = 8 * lane + 256 * q;
		if (i < C) {
			float xv[8], wv[8];
			unpack8(xv, xr[q]);
			if (w)
				unpack8(wv, wr[q]);
			else
				for (int k = 0; k < 8; k++)
					wv[k] = 1.0f;
			for (int k = 0; k < 8; k++)
				xv[k] = xv[k] * r * wv[k];
			st8(y + i, xv);
		}
	}
	if (lane == 0)
		rstd[row] = r;
}

/* dx = r (g w - x̂ mean(g w x̂)) with x̂ = x r */
template <class T>
__global__ void rmsnorm_bwd(gacc dinp, bool set, const T *dout, const T *inp, const T *w,
			    const float *rstd, int64_t N, int64_t C)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C, *g = dout + row * C;
	float r = rstd[row], dot = 0.0f;
	for (int64_t i = lane; i < C; i += 32)
		dot += tof(g[i]) * (w ? tof(w[i]) : 1.0f) * tof(x[i]) * r;
	float m = warp_sum(dot) / (float)C;
	for (int64_t i = lane; i < C; i += 32)
		gput(dinp, set, row * C + i,
		     r * (tof(g[i]) * (w ? tof(w[i]) : 1.0f) - tof(x[i]) * r * m));
}

/* A row's dx once m = mean(g w x̂) is known, eight channels a lane:
 * r (g w - x̂ r m), as rmsnorm_bwd's second loop. */
template <class T>
static __device__ __forceinline__ void rms_dx8(gacc dinp, bool set, int64_t row, const T *x,
					       const T *g, const T *w, float r, float m, int64_t C,
					       int lane)
{
	float xv[8], gv[8], wv[8];
	for (int k = 0; k < 8; k++)
		wv[k] = 1.0f;
	for (int64_t i = 8 * lane; i < C; i += 8 * 32) {
		ld8(xv, x + i);
		ld8(gv, g + i);
		if (w)
			ld8(wv, w + i);
		for (int k = 0; k < 8; k++)
			gv[k] = r * (gv[k] * wv[k] - xv[k] * r * m);
		gput8(dinp, set, row * C + i, gv);
	}
}

/* The same, eight channels a lane (16-byte loads): C a multiple of 8 and
 * every row aligned (vec8_ok). */
template <class T>
__global__ void rmsnorm_bwd8(gacc dinp, bool set, const T *dout, const T *inp, const T *w,
			     const float *rstd, int64_t N, int64_t C)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C, *g = dout + row * C;
	float r = rstd[row], dot = 0.0f, xv[8], gv[8], wv[8];
	for (int k = 0; k < 8; k++)
		wv[k] = 1.0f;
	for (int64_t i = 8 * lane; i < C; i += 8 * 32) {
		ld8(xv, x + i);
		ld8(gv, g + i);
		if (w)
			ld8(wv, w + i);
		for (int k = 0; k < 8; k++)
			dot += gv[k] * wv[k] * xv[k] * r;
	}
	rms_dx8(dinp, set, row, x, g, w, r, warp_sum(dot) / (float)C, C, lane);
}

/* rmsnorm_bwd8 with dw summed on the way, instead of a column sum that
 * reads dout and inp again: block b takes the DW_ROWS rows from b*DW_ROWS
 * (warp k every DW_WARPS-th of them), each warp adds its rows' terms
 * g x̂ into accumulators of its own (registers: G groups of 256 channels,
 * C <= 256 G), and the block writes their sum, in warp order, as part[b];
 * rmsnorm_dw_finish adds the blocks' parts in block order. The chunks
 * depend on N alone: the same bits on every run and device. A row's x, g
 * and (when dx accumulates) dx are loaded at once and kept in registers
 * for dx: one wait a row, x and g read once. dx is in DT (the compute
 * dtype or float32). At the block's end a lane's eight channels of group
 * q go to acc[((q*8 + k)*32 + lane)] of its warp: consecutive lanes,
 * consecutive words. On the H200 at 32768 x 768 with dx added into
 * (bench/bw_gpu.cu, with rmsnorm_dw_finish): 61.5 us, 72.7 with the rows
 * loaded group by group and the sums in shared memory. */
#define DW_ROWS 32
#define DW_WARPS 8
#define DW_MAX_G 6
#define DW_MAX_C (256 * DW_MAX_G) /* DW_WARPS warps of C floats in 48 KiB */

static __host__ __device__ int64_t dw_groups(int64_t C) { return (C + 255) / 256; }

template <class T, class DT, int G>
__global__ void __launch_bounds__(32 * DW_WARPS)
	rmsnorm_bwd8_dw(DT *dinp, bool set, float *part /*(R,C)*/, const T *dout, const T *inp,
			const T *w, const float *rstd, int64_t N, int64_t C)
{
	extern __shared__ float acc_all[];
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
	float acc[G][8];
	packed8<T> wr[G];
#pragma unroll
	for (int q = 0; q < G; q++) {
		for (int k = 0; k < 8; k++)
			acc[q][k] = 0.0f;
		if (w && 8 * lane + 256 * q < C)
			ld_packed8(wr[q], w + 8 * lane + 256 * q);
	}
	int64_t r0 = (int64_t)blockIdx.x * DW_ROWS, r1 = r0 + DW_ROWS < N ? r0 + DW_ROWS : N;
	for (int64_t row = r0 + wid; row < r1; row += DW_WARPS) {
		const T *x = inp + row * C, *g = dout + row * C;
		DT *d = dinp ? dinp + row * C : NULL;
		packed8<T> xr[G], gr[G];
		packed8<DT> dr[G];
#pragma unroll
		for (int q = 0; q < G; q++) {
			int64_t i = 8 * lane + 256 * q;
			if (i < C) {
				ld_packed8(xr[q], x + i);
				ld_packed8(gr[q], g + i);
				if (dinp && !set)
					ld_packed8(dr[q], d + i);
			}
		}
		float r = rstd[row], dot = 0.0f;
#pragma unroll
		for (int q = 0; q < G; q++)
			if (8 * lane + 256 * q < C) {
				float xv[8], gv[8], wv[8];
				unpack8(xv, xr[q]);
				unpack8(gv, gr[q]);
				if (w)
					unpack8(wv, wr[q]);
				else
					for (int k = 0; k < 8; k++)
						wv[k] = 1.0f;
				for (int k = 0; k < 8; k++) {
					dot += gv[k] * wv[k] * xv[k] * r;
					acc[q][k] += gv[k] * (xv[k] * r);
				}
			}
		if (!dinp)
			continue;
		float m = warp_sum(dot) / (float)C;
		/* as rms_dx8 and gput8 */
#pragma unroll
		for (int q = 0; q < G; q++) {
			int64_t i = 8 * lane + 256 * q;
			if (i < C) {
				float xv[8], gv[8], wv[8], c[8];
				unpack8(xv, xr[q]);
				unpack8(gv, gr[q]);
				if (w)
					unpack8(wv, wr[q]);
				else
					for (int k = 0; k < 8; k++)
						wv[k] = 1.0f;
				for (int k = 0; k < 8; k++)
					gv[k] = r * (gv[k] * wv[k] - xv[k] * r * m);
				if (!set) {
					unpack8(c, dr[q]);
					for (int k = 0; k < 8; k++)
						gv[k] = c[k] + gv[k];
				}
				st8(d + i, gv);
			}
		}
	}
	float *mine = acc_all + wid * G * 256;
#pragma unroll
	for (int q = 0; q < G; q++)
		for (int k = 0; k < 8; k++)
			mine[(q * 8 + k) * 32 + lane] = acc[q][k];
	__syncthreads();
	for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
		int64_t q = j / 256, l = j % 256 / 8, k = j % 8, at = (q * 8 + k) * 32 + l;
		float s = 0.0f;
		for (int v = 0; v < DW_WARPS; v++)
			s += acc_all[v * G * 256 + at];
		part[(int64_t)blockIdx.x * C + j] = s;
	}
}

/* rmsnorm_bwd8_dw<T, DT, G> for G = dw_groups(C) */
template <class T, class DT>
static void rms_bwd_dw(cudaStream_t st, unsigned blocks, DT *dinp, bool set, float *part,
		       const T *dout, const T *inp, const T *w, const float *rstd, int64_t N,
		       int64_t C)
{
	int G = (int)dw_groups(C);
	size_t shm = (size_t)(DW_WARPS * G * 256) * sizeof(float);
#define DW_CASE(g)                                                                          \
	case g:                                                                             \
		rmsnorm_bwd8_dw<T, DT, g><<<blocks, 32 * DW_WARPS, shm, st>>>(                 \
			dinp, set, part, dout, inp, w, rstd, N, C);                                \
		break
	switch (G) {
		DW_CASE(1);
		DW_CASE(2);
		DW_CASE(3);
		DW_CASE(4);
		DW_CASE(5);
		DW_CASE(6);
	}
#undef DW_CASE
}

/* dw[j] += the R parts of column j in order (or =, set): thread (x, y) of
 * a block of DWF_X columns sums parts y, y + 32, ... (eight loads in
 * flight at a time), then row 0 adds the 32 sums in order. Few columns a
 * block, so that C of 768 takes 96 SMs rather than 24. */
#define DWF_X 8

__global__ void rmsnorm_dw_finish(gacc dw, bool set, const float *part, int64_t R, int64_t C)
{
	__shared__ float sh[32][DWF_X + 1];
	int64_t j = (int64_t)blockIdx.x * DWF_X + threadIdx.x;
	float s = 0.0f;
	if (j < C)
#pragma unroll 8
		for (int64_t c = threadIdx.y; c < R; c += 32)
			s += part[c * C + j];
	sh[threadIdx.y][threadIdx.x] = s;
	__syncthreads();
	if (threadIdx.y == 0 && j < C) {
		float t = 0.0f;
		for (int y = 0; y < 32; y++)
			t += sh[y][threadIdx.x];
		gput(dw, set, j, t);
	}
}

extern "C" int lmk_cuda_rmsnorm_forward(void *be, lmk_dtype dt, void *out, float *rstd,
					const void *inp, const void *w, int64_t N, int64_t C,
					float eps)
{
	if (N == 0)
		return 0;
	if (C > 0 && C <= DW_MAX_C && vec8_ok(C, out, inp, w))
		LMK_DT_SWITCH(dt, "rmsnorm", {
			typedef void (*fn)(T *, float *, const T *, const T *, int64_t, int64_t, float);
			static const fn k[DW_MAX_G] = {rmsnorm_fwd8r<T, 1>, rmsnorm_fwd8r<T, 2>,
						       rmsnorm_fwd8r<T, 3>, rmsnorm_fwd8r<T, 4>,
						       rmsnorm_fwd8r<T, 5>, rmsnorm_fwd8r<T, 6>};
			k[dw_groups(C) - 1]<<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0,
					      LMK_BE(be)->stream>>>((T *)out, rstd, (const T *)inp,
								    (const T *)w, N, C, eps);
		});
	else if (vec8_ok(C, out, inp, w))
		LMK_DT_SWITCH(dt, "rmsnorm",
			      rmsnorm_fwd8<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0,
						LMK_BE(be)->stream>>>((T *)out, rstd, (const T *)inp,
								      (const T *)w, N, C, eps));
	else
		LMK_DT_SWITCH(dt, "rmsnorm",
			      rmsnorm_fwd<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0,
					       LMK_BE(be)->stream>>>((T *)out, rstd, (const T *)inp,
								     (const T *)w, N, C, eps));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_rmsnorm_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, lmk_gbuf dw,
					 const void *dout, const void *inp, const void *w,
					 const float *rstd, int64_t N, int64_t C, int assign)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (N == 0 || C == 0)
		return 0;
	if (check_gbuf("rmsnorm", dt, dinp) < 0 || check_gbuf("rmsnorm", dt, dw) < 0)
		return lmk_errcode();
	if (dw.p && C <= DW_MAX_C && vec8_ok(C, dinp.p, dout, inp, w)) {
		int64_t R = (N + DW_ROWS - 1) / DW_ROWS;
		float *part = (float *)lmk_cuda_scratch(b, (size_t)(R * C) * sizeof(float));
		if (!part)
			return lmk_errcode();
		LMK_DT_SWITCH(dt, "rmsnorm", {
			if (dinp.p && dinp.dt == LMK_F32)
				rms_bwd_dw<T, float>(b->stream, (unsigned)R, (float *)dinp.p,
						     assign & 1, part, (const T *)dout,
						     (const T *)inp, (const T *)w, rstd, N, C);
			else
				rms_bwd_dw<T, T>(b->stream, (unsigned)R, (T *)dinp.p, assign & 1,
						 part, (const T *)dout, (const T *)inp,
						 (const T *)w, rstd, N, C);
		});
		LMK_CK_LAUNCH();
		rmsnorm_dw_finish<<<(unsigned)((C + DWF_X - 1) / DWF_X), dim3(DWF_X, 32), 0,
				    b->stream>>>(
			to_gacc(dw), assign & 2, part, R, C);
		LMK_CK_LAUNCH();
		return 0;
	}
	if (dinp.p && vec8_ok(C, dinp.p, dout, inp, w)) {
		LMK_DT_SWITCH(dt, "rmsnorm",
			      rmsnorm_bwd8<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0, b->stream>>>(
				      to_gacc(dinp), assign & 1, (const T *)dout, (const T *)inp,
				      (const T *)w, rstd, N, C));
		LMK_CK_LAUNCH();
	} else if (dinp.p) {
		LMK_DT_SWITCH(dt, "rmsnorm",
			      rmsnorm_bwd<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0, b->stream>>>(
				      to_gacc(dinp), assign & 1, (const T *)dout, (const T *)inp,
				      (const T *)w, rstd, N, C));
		LMK_CK_LAUNCH();
	}
	if (dw.p && (assign & 2))
		LMK_CK(cudaMemsetAsync(dw.p, 0, (size_t)C * lmk_dtype_size(dw.dt), b->stream));
	if (dw.p)
		LMK_DT_SWITCH(dt, "rmsnorm",
			      return colsum<COLSUM_RMS, T>(b, dw, (const T *)dout, (const T *)inp, rstd,
							   NULL, N, C));
	return 0;
}

/* ------------------------------------------------------------ layernorm */

template <class T>
__global__ void layernorm_fwd(T *out, float *mean, float *rstd, const T *inp, const T *w,
			      const T *b, int64_t N, int64_t C, float eps)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C;
	T *y = out + row * C;
	float s = 0.0f;
	for (int64_t i = lane; i < C; i += 32)
		s += tof(x[i]);
	float m = C ? warp_sum(s) / (float)C : 0.0f;
	/* two passes (x - mean)², as the CPU: no cancellation for large means */
	float ss = 0.0f;
	for (int64_t i = lane; i < C; i += 32) {
		float d = tof(x[i]) - m;
		ss += d * d;
	}
	ss = warp_sum(ss);
	float r = (float)(1.0 / sqrt((C ? (double)ss / (double)C : 0.0) + (double)eps));
	for (int64_t i = lane; i < C; i += 32)
		y[i] = fromf<T>((tof(x[i]) - m) * r * (w ? tof(w[i]) : 1.0f) + (b ? tof(b[i]) : 0.0f));
	if (lane == 0) {
		mean[row] = m;
		rstd[row] = r;
	}
}

/* dx = r (g w - mean(g w) - x̂ mean(g w x̂)) */
template <class T>
__global__ void layernorm_bwd(gacc dinp, bool set, const T *dout, const T *inp, const T *w,
			      const float *mean, const float *rstd, int64_t N, int64_t C)
{
	int64_t row = (int64_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const T *x = inp + row * C, *g = dout + row * C;
	float m = mean[row], r = rstd[row], s = 0.0f, sx = 0.0f;
	for (int64_t i = lane; i < C; i += 32) {
		float gw = __fmul_rn(tof(g[i]), w ? tof(w[i]) : 1.0f);
		s += gw;
		sx += gw * ((tof(x[i]) - m) * r);
	}
	float ms = warp_sum(s) / (float)C, msx = warp_sum(sx) / (float)C;
	/* g w rounded, as in s and on the CPU: an fma would keep the product's
	 * rounding error, times r (1/sqrt(eps) at C 1, where dx is 0) */
	for (int64_t i = lane; i < C; i += 32)
		gput(dinp, set, row * C + i,
		     r * (__fmul_rn(tof(g[i]), w ? tof(w[i]) : 1.0f) - ms -
			  (tof(x[i]) - m) * r * msx));
}

extern "C" int lmk_cuda_layernorm_forward(void *be, lmk_dtype dt, void *out, float *mean,
					  float *rstd, const void *inp, const void *w,
					  const void *b, int64_t N, int64_t C, float eps)
{
	if (N == 0)
		return 0;
	LMK_DT_SWITCH(dt, "layernorm",
		      layernorm_fwd<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0, LMK_BE(be)->stream>>>(
			      (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, N, C,
			      eps));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_layernorm_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, lmk_gbuf dw,
					   lmk_gbuf db, const void *dout, const void *inp,
					   const void *w, const float *mean, const float *rstd,
					   int64_t N, int64_t C, int assign)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N == 0 || C == 0)
		return 0;
	if (check_gbuf("layernorm", dt, dinp) < 0 || check_gbuf("layernorm", dt, dw) < 0 ||
	    check_gbuf("layernorm", dt, db) < 0)
		return lmk_errcode();
	int rc = 0;
	LMK_DT_SWITCH(dt, "layernorm", {
		if (dinp.p) {
			layernorm_bwd<T><<<row_blocks(N), 32 * ROWS_PER_BLOCK, 0, bk->stream>>>(
				to_gacc(dinp), assign & 1, (const T *)dout, (const T *)inp,
				(const T *)w, mean, rstd, N, C);
			LMK_CK_LAUNCH();
		}
		if (db.p && (rc = colsum<COLSUM_G, T>(bk, db, (const T *)dout, (const T *)NULL, NULL,
						      NULL, N, C)) < 0)
			return rc;
		if (dw.p && (rc = colsum<COLSUM_LN, T>(bk, dw, (const T *)dout, (const T *)inp, mean,
						       rstd, N, C)) < 0)
			return rc;
	});
	return 0;
}
