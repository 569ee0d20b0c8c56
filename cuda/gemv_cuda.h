/* gemv_cuda.h: the forward of the linear op for a few rows (batch-1 and
 * small-batch decoding), out = inp wᵀ + b without cuBLAS: a warp per output
 * column, the weights streamed once with 16-byte loads. linear.cu sends
 * products of at most LMK_GEMV_MAX_ROWS rows here.
 * Owns: nothing. Needs: the backend's stream (cuda.h).
 * Never: allocates, waits, prints. */
#ifndef LMK_GEMV_CUDA_H
#define LMK_GEMV_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h" /* a C header without extern "C" guards of its own */

/* The most rows a product goes through lmk_cuda_gemv (linear.cu). */
#define LMK_GEMV_MAX_ROWS 8

/* out (N,OC) = inp (N,IC) w (OC,IC)ᵀ + b (OC, or NULL), all of dtype dt
 * (LMK_F32 or LMK_BF16), row-major, any alignment; 1 <= N <=
 * LMK_GEMV_MAX_ROWS, IC >= 1. Accumulates in float32 in a fixed order
 * (each lane its own strided elements, then a butterfly over the warp) and
 * rounds once, after adding the bias: the contract of the cuBLASLt path,
 * up to the order of the sum. @return : 0, LMK_EINVAL (N, IC) or
 * LMK_EUNSUP (dt), LMK_EDEVICE when the launch fails */
int lmk_cuda_gemv(void *be, lmk_dtype dt, void *out, const void *inp, const void *w,
		  const void *b, int64_t N, int64_t IC, int64_t OC);

/* What a recorded decoding step fuses (lib/llama.c), with the bits of the
 * separate ops. One product of inp: out (N,oc) = inp wᵀ + b (rounded),
 * then, when res (N,oc) is given, res + that (rounded), as lmk_add. */
typedef struct lmk_gemv_out {
	void *out;
	const void *w, *b, *res; /* w (oc,IC); b (oc) and res (N,oc) may be NULL */
	int64_t oc;
} lmk_gemv_out;
/* n (1 to 3) products of the same input in one launch (q, k and v; a
 * product with its residual). The input is inp (N,IC), or with norm (IC)
 * given rmsnorm(inp, norm, eps) as lmk_rmsnorm gives it.
 * @return : as lmk_cuda_gemv */
int lmk_cuda_gemv_multi(void *be, lmk_dtype dt, const void *inp, const void *norm, float eps,
			int64_t N, int64_t IC, const lmk_gemv_out *outs, int n);
/* out (N,OC) = swiglu(x wgᵀ + bg, x wuᵀ + bu), x the input as above, each
 * product rounded to dt before the activation, as lmk_swiglu of two
 * lmk_linear gives it. @return : as lmk_cuda_gemv */
int lmk_cuda_gemv_swiglu(void *be, lmk_dtype dt, void *out, const void *inp, const void *norm,
			 float eps, const void *wg, const void *bg, const void *wu, const void *bu,
			 int64_t N, int64_t IC, int64_t OC);

#ifdef __cplusplus
}
#endif
#endif
