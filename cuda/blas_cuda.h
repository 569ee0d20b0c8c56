/* blas_cuda.h: float32 matrix products on the context's stream for the
 * parts of lib/ that work on whole float32 buffers rather than through ops
 * (adapter merges, GaLore's projections), and GaLore's elementwise Adam.
 * Row-major, as lib/ is: C (M,N) = alpha op(A) op(B) + beta C, op(X) = X
 * or X^T as ta/tb say, lda/ldb/ldc the row strides.
 * Owns: nothing. Needs: the backend of cuda.h (cuBLAS). Never: prints or
 * exits. @return (each) : 0, or LMK_EDEVICE with a message */
#ifndef LMK_BLAS_CUDA_H
#define LMK_BLAS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int lmk_cuda_sgemm(void *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
		   int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Adam's moments over x (n) and its direction m / (sqrt(v) / bc2_sqrt + eps)
 * into out, with lib/galore.c's arithmetic (w1 = 1 - beta1, om1 = 1 - w1,
 * small_w: which of torch's two lerp forms, w2 = 1 - beta2, b2 = beta2). */
int lmk_cuda_adam_direction(void *be, float *out, const float *x, float *m, float *v, size_t n,
			    float w1, float om1, int small_w, float w2, float b2, float eps,
			    float bc2_sqrt);
/* p *= keep (when decay), then p += neg_step * dir, and lp = bf16(p) when
 * lp is not NULL (n elements). */
int lmk_cuda_adam_apply(void *be, float *p, const float *dir, void *lp, size_t n, int decay,
			float keep, float neg_step);

/* GaLore's SVD projector on the device (cuda/svd.cu): out gets the first r
 * left singular vectors of the row-major g (rows, cols) as (rows, r) when
 * left (rows <= cols), else the first r right ones as (r, cols) (rows >=
 * cols). cuSOLVER is loaded at the first call; without it the call fails
 * with LMK_EUNSUP and the caller makes the projector on the host. Waits
 * for the stream. */
int lmk_cuda_svd_projector(void *be, float *out, const float *g, int rows, int cols, int r,
			   int left);
/* Whether cuSOLVER could be loaded. */
int lmk_cuda_svd_available(void);

#ifdef __cplusplus
}
#endif
#endif
