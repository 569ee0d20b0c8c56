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
 * stay in registers. */
#include "common.cuh"
#include "gemv_cuda.h"

#define GEMV_WARPS 8

template <class T, int R, bool VEC>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
	gemv_k(T *__restrict__ out, const T *__restrict__ x, const T *__restrict__ w,
	       const T *__restrict__ b, int IC, int OC)
{
	const int lane = threadIdx.x & 31;
	const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
	if (o >= OC)
		return; /* the whole warp */
	const T *wo = w + o * IC;
	float acc[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		acc[r] = 0.f;
	if (VEC) {
#pragma unroll 4
		for (int c = lane * 8; c < IC; c += 256) {
			float wf[8];
			ld8(wf, wo + c);
#pragma unroll
			for (int r = 0; r < R; r++) {
				float xf[8];
				ld8(xf, x + (int64_t)r * IC + c);
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc[r] += wf[e] * xf[e];
			}
		}
	} else {
		for (int c = lane; c < IC; c += 32) {
			const float wv = tof(wo[c]);
#pragma unroll
			for (int r = 0; r < R; r++)
				acc[r] += wv * tof(x[(int64_t)r * IC + c]);
		}
	}
	const float bias = b ? tof(b[o]) : 0.f;
#pragma unroll
	for (int r = 0; r < R; r++) {
		const float s = warp_sum(acc[r]);
		if (lane == r)
			out[(int64_t)r * OC + o] = fromf<T>(s + bias);
	}
}

template <class T, int R>
static void launch(cudaStream_t st, bool vec, T *out, const T *x, const T *w, const T *b, int IC,
		   int OC)
{
	const unsigned blocks = (unsigned)((OC + GEMV_WARPS - 1) / GEMV_WARPS);
	if (vec)
		gemv_k<T, R, true><<<blocks, GEMV_WARPS * 32, 0, st>>>(out, x, w, b, IC, OC);
	else
		gemv_k<T, R, false><<<blocks, GEMV_WARPS * 32, 0, st>>>(out, x, w, b, IC, OC);
}

template <class T>
static void launch_rows(cudaStream_t st, int N, bool vec, T *out, const T *x, const T *w,
			const T *b, int IC, int OC)
{
	switch (N) {
	case 1: launch<T, 1>(st, vec, out, x, w, b, IC, OC); break;
	case 2: launch<T, 2>(st, vec, out, x, w, b, IC, OC); break;
	case 3: launch<T, 3>(st, vec, out, x, w, b, IC, OC); break;
	case 4: launch<T, 4>(st, vec, out, x, w, b, IC, OC); break;
	case 5: launch<T, 5>(st, vec, out, x, w, b, IC, OC); break;
	case 6: launch<T, 6>(st, vec, out, x, w, b, IC, OC); break;
	case 7: launch<T, 7>(st, vec, out, x, w, b, IC, OC); break;
	default: launch<T, 8>(st, vec, out, x, w, b, IC, OC); break;
	}
}

extern "C" int lmk_cuda_gemv(void *be, lmk_dtype dt, void *out, const void *inp, const void *w,
			     const void *b, int64_t N, int64_t IC, int64_t OC)
{
	if (N < 1 || N > LMK_GEMV_MAX_ROWS || IC < 1 || IC > INT32_MAX || OC > INT32_MAX)
		return lmk_err(LMK_EINVAL, "gemv: N %lld, IC %lld, OC %lld: expected 1 <= N <= %d, "
			       "IC >= 1", (long long)N, (long long)IC, (long long)OC,
			       LMK_GEMV_MAX_ROWS);
	if (OC <= 0)
		return 0;
	/* the bias is read one element at a time: its alignment does not matter */
	const bool vec = vec8_ok(IC, inp, w);
	cudaStream_t st = LMK_BE(be)->stream;
	LMK_DT_SWITCH(dt, "gemv",
		      launch_rows<T>(st, (int)N, vec, (T *)out, (const T *)inp, (const T *)w,
				     (const T *)b, (int)IC, (int)OC));
	LMK_CK_LAUNCH();
	return 0;
}
