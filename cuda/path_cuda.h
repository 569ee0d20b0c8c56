/* path_cuda.h: PaTH attention on the GPU, the CUDA face of the blockwise
 * kernels of lib/path.c (lmk_path_cpu_forward/backward) and of the decoding
 * cache, with the same arguments after the backend and the compute dtype.
 * Owns: nothing (the workspace comes from the caller's arena).
 * Needs: cuda.h (the context's stream). Never: prints, exits, waits.
 *
 * q, k, v, w, beta, logf, out, dout are device pointers in dt (LMK_F32 or
 * LMK_BF16); every member of the workspace is float32 device memory
 * (lib/path.h says what each holds; the mma backward keeps lv and adj in
 * bf16, in the first half of their memory); gradients are lmk_gbuf (F32 or dt),
 * added into. Each pass writes disjoint outputs per thread block and sums
 * in a fixed order: results repeat bit for bit.
 * @return (every launcher) : 0, or LMK_EINVAL / LMK_EUNSUP / LMK_EDEVICE
 * with a message */
#ifndef LMK_CUDA_PATH_H
#define LMK_CUDA_PATH_H

#include <stdint.h>

#include "ops_cuda.h" /* lmk_gbuf, dtype.h */

#ifdef __cplusplus
extern "C" {
#endif

struct lmk_path_ws;

int lmk_cuda_path_forward(void *be, lmk_dtype dt, void *out /*(B,T,H,D)*/,
			  const void *q /*(B,T,H,D)*/, const void *k /*(B,T,K,D)*/,
			  const void *v /*(B,T,K,D)*/, const void *w /*(B,T,K,D)*/,
			  const void *beta /*(B,T,K)*/, const void *logf /*(B,T,H) or NULL*/,
			  struct lmk_path_ws *ws, float scale);
int lmk_cuda_path_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk, lmk_gbuf dv,
			   lmk_gbuf dw, lmk_gbuf dbeta, lmk_gbuf dlogf,
			   const void *dout /*(B,T,H,D)*/, const void *out /*(B,T,H,D)*/,
			   const void *q, const void *k, const void *v, const void *w,
			   const void *beta, const void *logf, struct lmk_path_ws *ws, float scale);

/* kc (B,cap,K,D) float32, vc (B,cap,K,D) in dt, bias (B,cap,H) float32 or
 * NULL; k, v, w (B,K,D), beta (B,K), logf (B,H) in dt. Moves the len cached
 * keys by the new transform and writes row len. */
int lmk_cuda_path_cache_update(void *be, lmk_dtype dt, float *kc, void *vc, float *bias,
			       const void *k, const void *v, const void *w, const void *beta,
			       const void *logf, int64_t B, int64_t cap, int64_t len, int64_t H,
			       int64_t K, int64_t D);
/* out, q (B,H,D): one query per head against the first len cached rows. */
int lmk_cuda_path_decode_attend(void *be, lmk_dtype dt, void *out, const void *q,
				const float *kc, const void *vc, const float *bias, int64_t B,
				int64_t cap, int64_t len, int64_t H, int64_t K, int64_t D,
				float scale);

#ifdef __cplusplus
}
#endif
#endif
