/* seqops_cuda.h: the CUDA kernels of lib/seqops.h, one host launcher for each
 * of its CPU kernels, named lmk_cuda_<op>_<pass> and taking the same
 * arguments in the same order after the backend and the compute dtype dt,
 * with gradients as lmk_gbuf (see ops_cuda.h for the conventions: values
 * and gradients of activations in dt, parameters' gradients float32, every
 * backward adds, every sum in float32 and in a fixed order).
 * Owns: nothing. Needs: the backend of cuda.h, ops_cuda.h (lmk_gbuf).
 * Never: allocates memory of a step (scratch comes from the backend),
 * checks shapes (lib/seqops.c does), prints.
 * @return (every launcher) : 0, or LMK_EDEVICE / LMK_EUNSUP with a message */
#ifndef LMK_SEQOPS_CUDA_H
#define LMK_SEQOPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "ops_cuda.h" /* lmk_gbuf, and dtype.h with C linkage */

#ifdef __cplusplus
extern "C" {
#endif

/* One thread per output element; the backward recomputes the
 * pre-activation (W taps) wherever it needs it, and sums dw and db over
 * the B*T rows in chunks of rows, then the chunks in order. */
int lmk_cuda_conv1d_causal_forward(void *be, lmk_dtype dt, void *out /*(B,T,C)*/,
				   const void *x /*(B,T,C)*/, const void *w /*(C,W)*/,
				   const void *b /*(C) or NULL*/, int64_t B, int64_t T, int64_t C,
				   int64_t W, int silu);
int lmk_cuda_conv1d_causal_backward(void *be, lmk_dtype dt, lmk_gbuf dx /*(B,T,C)*/,
				    lmk_gbuf dw /*(C,W)*/, lmk_gbuf db /*(C)*/,
				    const void *dout /*(B,T,C)*/, const void *x /*(B,T,C)*/,
				    const void *w /*(C,W)*/, const void *b /*(C) or NULL*/,
				    int64_t B, int64_t T, int64_t C, int64_t W, int silu);

/* One warp per row. rstd is float32 on the device. */
int lmk_cuda_l2norm_forward(void *be, lmk_dtype dt, void *out /*(N,D)*/, float *rstd /*(N)*/,
			    const void *x /*(N,D)*/, int64_t N, int64_t D, float eps);
int lmk_cuda_l2norm_backward(void *be, lmk_dtype dt, lmk_gbuf dx /*(N,D)*/,
			     const void *dout /*(N,D)*/, const void *x /*(N,D)*/,
			     const float *rstd /*(N)*/, int64_t N, int64_t D);

/* kind is an lmk_unary_kind of lib/seqops.h. */
int lmk_cuda_unary_forward(void *be, lmk_dtype dt, void *out /*(n)*/, const void *x /*(n)*/,
			   int64_t n, int kind, float alpha, float beta);
int lmk_cuda_unary_backward(void *be, lmk_dtype dt, lmk_gbuf dx /*(n)*/, const void *dout /*(n)*/,
			    const void *x /*(n)*/, int64_t n, int kind, float alpha);

/* ds sums over row chunks, then the chunks in order. */
int lmk_cuda_mul_rows_forward(void *be, lmk_dtype dt, void *out /*(N,D)*/, const void *x /*(N,D)*/,
			      const void *s /*(M)*/, int64_t N, int64_t D, int64_t M);
int lmk_cuda_mul_rows_backward(void *be, lmk_dtype dt, lmk_gbuf dx /*(N,D)*/, lmk_gbuf ds /*(M)*/,
			       const void *dout /*(N,D)*/, const void *x /*(N,D)*/,
			       const void *s /*(M)*/, int64_t N, int64_t D, int64_t M);

/* out and inp in dt (cols_copy); out an lmk_gbuf of dt or F32 (cols_add). */
int lmk_cuda_cols_copy(void *be, lmk_dtype dt, void *out /*(N,ldo)*/, int64_t ldo, int64_t oo,
		       const void *inp /*(N,ldi)*/, int64_t ldi, int64_t io, int64_t N, int64_t M);
int lmk_cuda_cols_add(void *be, lmk_dtype dt, lmk_gbuf out /*(N,ldo)*/, int64_t ldo, int64_t oo,
		      const void *inp /*(N,ldi)*/, int64_t ldi, int64_t io, int64_t N, int64_t M);

#ifdef __cplusplus
}
#endif
#endif
