/* seqops.h: the small ops that token-mixer layers (Mamba-2, Gated DeltaNet,
 * PaTH, linear attention) compose around their core op: the depthwise
 * causal "short convolution", L2 normalisation of rows, the gates'
 * elementwise functions (sigmoid, softplus, logsigmoid, exp, affine), rows
 * times per-row scalars (Mamba-2's x * dt and D * x), and slices and
 * concatenations along the last dimension (one fused input projection
 * split into its parts).
 * Owns: nothing beyond the arena memory it asks for. Needs: tensor, op,
 * and in a CUDA build cuda/seqops_cuda.h.
 * Never: prints, exits, or knows about any particular layer.
 *
 * The ops follow ops.h: NULL in, NULL out; a tape node when an input
 * requires grad, whose backward adds (+=) into the inputs' gradients; on
 * CUDA float inputs in the context's compute dtype (F32 or BF16, a float32
 * parameter read through its bf16 copy), values computed in float32.
 * Shape letters: B batch, T time, C channels, W convolution width, D the
 * last dimension, N rows (leading dims flattened). */
#ifndef LMK_SEQOPS_H
#define LMK_SEQOPS_H

#include <stdint.h>

#include "tensor.h"

/* x (B,T,C), w (C,W) depthwise taps, b (C) or NULL -> (B,T,C):
 *   y[b,t,c] = act(b[c] + sum_{i<W} w[c,i] x[b,t-W+1+i,c])
 * with x = 0 before t = 0 and act SiLU when silu != 0, else the identity.
 * This is PyTorch's nn.Conv1d(C, C, W, groups=C, padding=W-1) applied to
 * x transposed to (B,C,T) and truncated to its first T outputs, with the
 * weight (C,1,W) squeezed to (C,W): tap W-1 multiplies the current step.
 * The backward recomputes the pre-activation instead of storing it. */
lmk_tensor *lmk_conv1d_causal(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, int silu);

/* x (...,D) -> (...,D): y = x / sqrt(sum_d x² + eps) per row, with eps
 * inside the square root as fla's l2norm (fla.modules.l2norm, eps 1e-6
 * there): not torch's F.normalize, which divides by max(||x||, eps). */
lmk_tensor *lmk_l2norm(lmk_ctx *c, lmk_tensor *x, float eps);

/* Elementwise, any shape, in forms that stay finite for any finite x:
 * sigmoid 1/(1+e^-x) (evaluated through e^-|x|); softplus log(1+e^x),
 * and x itself above 20 (PyTorch's threshold, beta 1); logsigmoid
 * min(x,0) - log1p(e^-|x|); exp e^x; affine alpha*x + beta (2*sigmoid for
 * PaTH's beta through lmk_affine(c, lmk_sigmoid(c, x), 2, 0)). */
lmk_tensor *lmk_sigmoid(lmk_ctx *c, lmk_tensor *x);
lmk_tensor *lmk_softplus(lmk_ctx *c, lmk_tensor *x);
lmk_tensor *lmk_logsigmoid(lmk_ctx *c, lmk_tensor *x);
lmk_tensor *lmk_exp(lmk_ctx *c, lmk_tensor *x);
lmk_tensor *lmk_affine(lmk_ctx *c, lmk_tensor *x, float alpha, float beta);

/* x (...,D), s whose shape is x's without the last dim, or a trailing part
 * of that (broadcast over the leading dims) -> (...,D): each row of x
 * times its scalar, y[r,d] = x[r,d] s[r mod M] with M = s's elements. For
 * Mamba-2's x * dt (x (B,T,H,P), dt (B,T,H)) and D * x (D (H)). */
lmk_tensor *lmk_mul_rows(lmk_ctx *c, lmk_tensor *x, lmk_tensor *s);

/* x (...,D) -> (...,len), a copy of x[..., start:start+len] (0 <= start,
 * 1 <= len, start + len <= D); the backward adds into those columns. */
lmk_tensor *lmk_slice(lmk_ctx *c, lmk_tensor *x, int64_t start, int64_t len);

/* xs[k] (...,D_k), 1 <= n, the same leading dims -> (...,sum_k D_k), the
 * inputs side by side in order. The xs array itself may be reused once
 * the call returns. */
lmk_tensor *lmk_concat(lmk_ctx *c, int n, lmk_tensor **xs);

/* ---- the CPU kernels: the specification of cuda/seqops.cu. Each
 * backward's gradient pointers may be NULL (not needed) and are added
 * into. Results do not depend on the number of threads. */

void lmk_cpu_conv1d_causal_forward(float *out /*(B,T,C)*/, const float *x /*(B,T,C)*/,
				   const float *w /*(C,W)*/, const float *b /*(C) or NULL*/,
				   int64_t B, int64_t T, int64_t C, int64_t W, int silu);
void lmk_cpu_conv1d_causal_backward(float *dx /*(B,T,C)*/, float *dw /*(C,W)*/,
				    float *db /*(C)*/, const float *dout /*(B,T,C)*/,
				    const float *x /*(B,T,C)*/, const float *w /*(C,W)*/,
				    const float *b /*(C) or NULL*/, int64_t B, int64_t T,
				    int64_t C, int64_t W, int silu);

/* rstd = 1/sqrt(sum x² + eps) saved per row. */
void lmk_cpu_l2norm_forward(float *out /*(N,D)*/, float *rstd /*(N)*/, const float *x /*(N,D)*/,
			    int64_t N, int64_t D, float eps);
void lmk_cpu_l2norm_backward(float *dx /*(N,D)*/, const float *dout /*(N,D)*/,
			     const float *x /*(N,D)*/, const float *rstd /*(N)*/, int64_t N,
			     int64_t D);

/* The elementwise functions above; alpha and beta are read by affine only. */
typedef enum {
	LMK_UNARY_SIGMOID,
	LMK_UNARY_SOFTPLUS,
	LMK_UNARY_LOGSIGMOID,
	LMK_UNARY_EXP,
	LMK_UNARY_AFFINE,
} lmk_unary_kind;
void lmk_cpu_unary_forward(float *out /*(n)*/, const float *x /*(n)*/, int64_t n, int kind,
			   float alpha, float beta);
void lmk_cpu_unary_backward(float *dx /*(n)*/, const float *dout /*(n)*/, const float *x /*(n)*/,
			    int64_t n, int kind, float alpha);

/* Row r of x times s[r mod M]; ds[m] sums its rows r = m, m+M, .. in order. */
void lmk_cpu_mul_rows_forward(float *out /*(N,D)*/, const float *x /*(N,D)*/,
			      const float *s /*(M)*/, int64_t N, int64_t D, int64_t M);
void lmk_cpu_mul_rows_backward(float *dx /*(N,D)*/, float *ds /*(M)*/, const float *dout /*(N,D)*/,
			       const float *x /*(N,D)*/, const float *s /*(M)*/, int64_t N,
			       int64_t D, int64_t M);

/* A block of M columns of N rows between row-major matrices of row lengths
 * ldo and ldi, starting at columns oo and io: cols_copy assigns
 * out[r*ldo+oo+j] = inp[r*ldi+io+j], cols_add adds into out instead (the
 * backwards of slice and concat). */
void lmk_cpu_cols_copy(float *out /*(N,ldo)*/, int64_t ldo, int64_t oo,
		       const float *inp /*(N,ldi)*/, int64_t ldi, int64_t io, int64_t N, int64_t M);
void lmk_cpu_cols_add(float *out /*(N,ldo)*/, int64_t ldo, int64_t oo,
		      const float *inp /*(N,ldi)*/, int64_t ldi, int64_t io, int64_t N, int64_t M);

#endif
