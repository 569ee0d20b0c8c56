/* ops_cuda.h: the CUDA kernels of the ops, one host launcher for each CPU
 * kernel of ops_cpu.h, named lmk_cuda_<op>_<pass> and taking the same
 * arguments in the same order, after two more: the backend (lmk_ctx.backend)
 * and the compute dtype dt (LMK_F32 or LMK_BF16).
 * Activations, their gradients and the weights an op reads are in dt (a
 * parameter's weights through its bf16 copy in a BF16 context); saved
 * statistics (rstd, mean, lse) and losses are float32. A gradient is an
 * lmk_gbuf: its pointer (NULL: not needed) and its dtype, dt for an
 * activation, F32 for a parameter (fp32 gradients whatever dt is). Every
 * backward adds (+=) into its gradients, or assigns those its last argument
 * `assign` names (bit k for its k-th gradient, as the CPU kernel's), as the
 * CPU kernels do. Every
 * statistic and sum is accumulated in float32, and every sum over rows into
 * a gradient (dw, db) runs in a fixed order (per-block partial sums, then a
 * second pass), so results are the same from run to run.
 * Launchers queue work on the context's stream and return without waiting.
 * Owns: nothing. Needs: the backend of cuda.h, cuBLASLt, CUB.
 * Never: allocates memory of a step (scratch comes from the backend),
 * checks shapes (ops.c does), prints.
 * @return (every launcher) : 0, or LMK_EDEVICE / LMK_EUNSUP with a message */
#ifndef LMK_OPS_CUDA_H
#define LMK_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h" /* a C header without extern "C" guards of its own */

typedef struct lmk_gbuf {
	void *p;        /* NULL: this gradient is not wanted */
	lmk_dtype dt;   /* LMK_F32 or LMK_BF16 */
} lmk_gbuf;

/* out[n] = w[ids[n]]. Ids outside [0,V) set LMK_CUDA_BAD_ID (reported at
 * the next sync) and give a row of zeros. The backward is deterministic:
 * a stable radix sort of the ids, then one block per distinct id adds its
 * rows in position order. */
int lmk_cuda_embedding_forward(void *be, lmk_dtype dt, void *out /*(N,C)*/,
			       const int32_t *ids /*(N)*/, const void *w /*(V,C)*/, int64_t N,
			       int64_t C, int64_t V);
int lmk_cuda_embedding_backward(void *be, lmk_dtype dt, lmk_gbuf dw /*(V,C)*/,
				const void *dout /*(N,C)*/, const int32_t *ids /*(N)*/, int64_t N,
				int64_t C, int64_t V);

/* out = inp wᵀ + b through cuBLASLt (fp32 accumulation, CUBLAS_COMPUTE_32F
 * without TF32; the bias in the epilogue); the backward's dinp and dw
 * accumulate with beta = 1 into their own dtypes, or are assigned with
 * beta = 0 (assign bits 0 and 1). */
int lmk_cuda_linear_forward(void *be, lmk_dtype dt, void *out /*(N,OC)*/,
			    const void *inp /*(N,IC)*/, const void *w /*(OC,IC)*/,
			    const void *b /*(OC) or NULL*/, int64_t N, int64_t IC, int64_t OC);
int lmk_cuda_linear_backward(void *be, lmk_dtype dt, lmk_gbuf dinp /*(N,IC)*/,
			     lmk_gbuf dw /*(OC,IC)*/, lmk_gbuf db /*(OC)*/,
			     const void *dout /*(N,OC)*/, const void *inp /*(N,IC)*/,
			     const void *w /*(OC,IC)*/, int64_t N, int64_t IC, int64_t OC,
			     int assign);
/* out = r + (inp wᵀ + b): cuBLASLt with beta = 1 onto r (C = r, D = out),
 * rounded once; a forward of at most LMK_GEMV_MAX_ROWS rows rounds the
 * product first, as gemv.cu's fused residual does. No backward of its own:
 * the linear one's, and r's gradient is dout (lmk_cuda_add_backward). */
int lmk_cuda_linear_add_forward(void *be, lmk_dtype dt, void *out /*(N,OC)*/,
				const void *inp /*(N,IC)*/, const void *w /*(OC,IC)*/,
				const void *b /*(OC) or NULL*/, const void *r /*(N,OC)*/, int64_t N,
				int64_t IC, int64_t OC);

int lmk_cuda_rmsnorm_forward(void *be, lmk_dtype dt, void *out /*(N,C)*/, float *rstd /*(N)*/,
			     const void *inp /*(N,C)*/, const void *w /*(C) or NULL*/, int64_t N,
			     int64_t C, float eps);
int lmk_cuda_rmsnorm_backward(void *be, lmk_dtype dt, lmk_gbuf dinp /*(N,C)*/, lmk_gbuf dw /*(C)*/,
			      const void *dout /*(N,C)*/, const void *inp /*(N,C)*/,
			      const void *w /*(C) or NULL*/, const float *rstd /*(N)*/, int64_t N,
			      int64_t C, int assign);
int lmk_cuda_layernorm_forward(void *be, lmk_dtype dt, void *out /*(N,C)*/, float *mean /*(N)*/,
			       float *rstd /*(N)*/, const void *inp /*(N,C)*/,
			       const void *w /*(C) or NULL*/, const void *b /*(C) or NULL*/,
			       int64_t N, int64_t C, float eps);
int lmk_cuda_layernorm_backward(void *be, lmk_dtype dt, lmk_gbuf dinp /*(N,C)*/,
				lmk_gbuf dw /*(C)*/, lmk_gbuf db /*(C)*/, const void *dout /*(N,C)*/,
				const void *inp /*(N,C)*/, const void *w /*(C) or NULL*/,
				const float *mean /*(N)*/, const float *rstd /*(N)*/, int64_t N,
				int64_t C, int assign);

/* inv_freq is device memory. */
int lmk_cuda_rope_forward(void *be, lmk_dtype dt, void *out /*(N,H,D)*/, const void *inp /*(N,H,D)*/,
			  const int32_t *pos /*(N)*/, const float *inv_freq /*(D/2)*/,
			  float attn_factor, int64_t N, int64_t H, int64_t D);
int lmk_cuda_rope_backward(void *be, lmk_dtype dt, lmk_gbuf dinp /*(N,H,D)*/,
			   const void *dout /*(N,H,D)*/, const int32_t *pos /*(N)*/,
			   const float *inv_freq /*(D/2)*/, float attn_factor, int64_t N, int64_t H,
			   int64_t D, int assign);

/* Elementwise over n; broadcast operands b are (M), a and out (N,M). */
int lmk_cuda_silu_forward(void *be, lmk_dtype dt, void *out, const void *inp, int64_t n);
int lmk_cuda_silu_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
			   const void *inp, int64_t n, int assign);
int lmk_cuda_gelu_forward(void *be, lmk_dtype dt, void *out, const void *inp, int64_t n,
			  int approx);
int lmk_cuda_gelu_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
			   const void *inp, int64_t n, int approx, int assign);
int lmk_cuda_swiglu_forward(void *be, lmk_dtype dt, void *out, const void *gate, const void *up,
			    int64_t n);
int lmk_cuda_swiglu_backward(void *be, lmk_dtype dt, lmk_gbuf dgate, lmk_gbuf dup,
			     const void *dout, const void *gate, const void *up, int64_t n,
			     int assign);
/* gu (N,2F): gate then up in each row (lmk_cpu_swiglu_cat_forward) -> out (N,F) */
int lmk_cuda_swiglu_cat_forward(void *be, lmk_dtype dt, void *out, const void *gu, int64_t N,
				int64_t F);
int lmk_cuda_swiglu_cat_backward(void *be, lmk_dtype dt, lmk_gbuf dgu, const void *dout,
				 const void *gu, int64_t N, int64_t F, int assign);
int lmk_cuda_add_forward(void *be, lmk_dtype dt, void *out, const void *a, const void *b,
			 int64_t N, int64_t M);
int lmk_cuda_add_backward(void *be, lmk_dtype dt, lmk_gbuf da, lmk_gbuf db, const void *dout,
			  int64_t N, int64_t M, int assign);
int lmk_cuda_mul_forward(void *be, lmk_dtype dt, void *out, const void *a, const void *b,
			 int64_t N, int64_t M);
int lmk_cuda_mul_backward(void *be, lmk_dtype dt, lmk_gbuf da, lmk_gbuf db, const void *dout,
			  const void *a, const void *b, int64_t N, int64_t M, int assign);
int lmk_cuda_scale_forward(void *be, lmk_dtype dt, void *out, const void *inp, float s, int64_t n);
int lmk_cuda_scale_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout, float s,
			    int64_t n, int assign);
/* The mask of the CPU kernel, bit for bit: element i is dropped when
 * lmk_philox_uniform(seed, counter, i) < p (the same Philox4x32-10). */
int lmk_cuda_dropout_forward(void *be, lmk_dtype dt, void *out, const void *inp, int64_t n,
			     float p, uint64_t seed, uint64_t counter);
int lmk_cuda_dropout_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout, int64_t n,
			      float p, uint64_t seed, uint64_t counter, int assign);

/* Fused softmax cross-entropy, one block per row with an online max and
 * sum over V: no probabilities are stored. loss, lse, count live on the
 * device; rowloss is (N) float scratch. Targets outside [0,V) that are not
 * ignore set LMK_CUDA_BAD_TARGET and count as ignored. The backward reads
 * dloss[0] and count from the device and adds into dlogits row by row (or
 * assigns it, zeros in the rows not counted).
 * A training step's forward may be given dlogits (NULL: none), the logits'
 * unwritten gradient in dt: it then assigns there, while each row is at
 * hand, the gradient the backward would assign for dloss 1 (the mean
 * loss's own), so that the backward need not read the logits again, and
 * returns 1; it returns 0 where it did not (V not a multiple of 8, pointers
 * not 16-byte aligned). The backward is then told pre: with assign set and
 * dloss[0] == 1 it has nothing to do (it checks on the device); otherwise
 * it runs as without. */
int lmk_cuda_cross_entropy_forward(void *be, lmk_dtype dt, float *loss /*(1)*/, float *lse /*(N)*/,
				   int64_t *count /*(1)*/, float *rowloss /*(N) scratch*/,
				   const void *logits /*(N,V)*/, const int32_t *targets /*(N)*/,
				   int64_t N, int64_t V, int ignore, void *dlogits /*(N,V) or NULL*/);
int lmk_cuda_cross_entropy_backward(void *be, lmk_dtype dt, lmk_gbuf dlogits /*(N,V)*/,
				    const float *dloss /*(1)*/, const void *logits /*(N,V)*/,
				    const float *lse /*(N)*/, const int32_t *targets /*(N)*/,
				    int64_t N, int64_t V, int ignore, const int64_t *count /*(1)*/,
				    int assign, int pre);

/* dst += src (a gradient from elsewhere, float32 on the device). */
int lmk_cuda_accumulate(void *be, lmk_gbuf dst, const float *src, int64_t n);
/* dst = src converted (F32 <-> BF16, or a copy when the dtypes agree). */
int lmk_cuda_convert(void *be, void *dst, lmk_dtype ddt, const void *src, lmk_dtype sdt, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
