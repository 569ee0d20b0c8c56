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

#ifdef __cplusplus
}
#endif
#endif
