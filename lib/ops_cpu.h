/* ops_cpu.h: the CPU kernels of the ops, float32 on raw pointers, in the
 * manner of llm.c: the specification every CUDA kernel is tested against.
 * Every backward takes the gradient pointers of its inputs, each of which
 * may be NULL (not needed), and adds (+=) into them, except those its last
 * argument `assign` names where it has one: bit k for its k-th gradient
 * pointer (those a comment lists), which it writes (=) whole without
 * reading it, for a gradient the tape left unwritten (tensor.h). Assigning
 * gives the bits of adding into zeros (0 + x is x, but for the sign of a
 * zero). Results do not depend on the number of threads (no float atomics;
 * every sum in a fixed order).
 * Shape letters: N rows (leading dims flattened), C channels, IC/OC linear
 * in/out features, V vocabulary, B batch, T time, H query heads, K key/value
 * heads, D head dim, M elements of a broadcast operand.
 * Owns: nothing. Needs: OpenMP, OpenBLAS (cblas_sgemm), rng (dropout).
 * Never: allocates, checks shapes (ops.c does), records errors, prints. */
#ifndef LMK_OPS_CPU_H
#define LMK_OPS_CPU_H

#include <stdint.h>

/* OpenBLAS on one thread: the kernels parallelise over rows or heads
 * themselves and call it from inside their parallel regions; kernels of
 * other files that do the same call this before their region. */
void lmk_cpu_blas_one_thread(void);

/* C (M,N; ldc) = alpha op(A) op(B) + beta C, row-major, op the transpose
 * when ta / tb: one OpenBLAS product on the calling thread (for kernels
 * that parallelise over heads and multiply small per-head matrices). */
void lmk_cpu_mm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
		int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* out[n] = w[ids[n]]; ids already checked to lie in [0,V). */
void lmk_cpu_embedding_forward(float *out /*(N,C)*/, const int32_t *ids /*(N)*/,
			       const float *w /*(V,C)*/, int64_t N, int64_t C);
void lmk_cpu_embedding_backward(float *dw /*(V,C)*/, const float *dout /*(N,C)*/,
				const int32_t *ids /*(N)*/, int64_t N, int64_t C);

/* out = inp wᵀ + b; assign: dinp (bit 0) and dw (bit 1) */
void lmk_cpu_linear_forward(float *out /*(N,OC)*/, const float *inp /*(N,IC)*/,
			    const float *w /*(OC,IC)*/, const float *b /*(OC) or NULL*/,
			    int64_t N, int64_t IC, int64_t OC);
void lmk_cpu_linear_backward(float *dinp /*(N,IC)*/, float *dw /*(OC,IC)*/, float *db /*(OC)*/,
			     const float *dout /*(N,OC)*/, const float *inp /*(N,IC)*/,
			     const float *w /*(OC,IC)*/, int64_t N, int64_t IC, int64_t OC,
			     int assign);
/* out = r + (inp wᵀ + b): the product rounded, then the residual added, the
 * bits of lmk_cpu_linear_forward then lmk_cpu_add_forward. The backward is
 * the linear one's, and r's gradient is dout. */
void lmk_cpu_linear_add_forward(float *out /*(N,OC)*/, const float *inp /*(N,IC)*/,
				const float *w /*(OC,IC)*/, const float *b /*(OC) or NULL*/,
				const float *r /*(N,OC)*/, int64_t N, int64_t IC, int64_t OC);

/* out = inp * rstd * w, rstd = 1/sqrt(mean(inp²) + eps) saved per row;
 * assign: dinp (bit 0), and so for layernorm; rmsnorm's dw too (bit 1). */
void lmk_cpu_rmsnorm_forward(float *out /*(N,C)*/, float *rstd /*(N)*/,
			     const float *inp /*(N,C)*/, const float *w /*(C) or NULL*/,
			     int64_t N, int64_t C, float eps);
void lmk_cpu_rmsnorm_backward(float *dinp /*(N,C)*/, float *dw /*(C)*/,
			      const float *dout /*(N,C)*/, const float *inp /*(N,C)*/,
			      const float *w /*(C) or NULL*/, const float *rstd /*(N)*/,
			      int64_t N, int64_t C, int assign);

/* out = (inp - mean) * rstd * w + b, biased variance, mean and rstd saved. */
void lmk_cpu_layernorm_forward(float *out /*(N,C)*/, float *mean /*(N)*/, float *rstd /*(N)*/,
			       const float *inp /*(N,C)*/, const float *w /*(C) or NULL*/,
			       const float *b /*(C) or NULL*/, int64_t N, int64_t C, float eps);
void lmk_cpu_layernorm_backward(float *dinp /*(N,C)*/, float *dw /*(C)*/, float *db /*(C)*/,
				const float *dout /*(N,C)*/, const float *inp /*(N,C)*/,
				const float *w /*(C) or NULL*/, const float *mean /*(N)*/,
				const float *rstd /*(N)*/, int64_t N, int64_t C, int assign);

/* Rotary embedding, rotate_half pairing (i, i + D/2): with
 * a = (float)pos[n] * inv_freq[i] (float32, as Hugging Face computes it),
 * c = cos(a) * attn_factor, s = sin(a) * attn_factor,
 * out[i] = x[i] c - x[i+D/2] s, out[i+D/2] = x[i+D/2] c + x[i] s.
 * assign: dinp (bit 0). */
void lmk_cpu_rope_forward(float *out /*(N,H,D)*/, const float *inp /*(N,H,D)*/,
			  const int32_t *pos /*(N)*/, const float *inv_freq /*(D/2)*/,
			  float attn_factor, int64_t N, int64_t H, int64_t D);
void lmk_cpu_rope_backward(float *dinp /*(N,H,D)*/, const float *dout /*(N,H,D)*/,
			   const int32_t *pos /*(N)*/, const float *inv_freq /*(D/2)*/,
			   float attn_factor, int64_t N, int64_t H, int64_t D, int assign);

/* Scaled-dot-product attention, query head h on key/value head h/(H/K).
 * Query i sees key j when (!causal || j <= i) and, with seg, seg[i] >= 0
 * and seg[j] == seg[i]. Saves the logsumexp of each row's logits (-inf for
 * a row that sees nothing; its output is 0). The backward recomputes the
 * probabilities from lse, as flash attention does; delta is its scratch
 * (rowsum(dout * out)). */
void lmk_cpu_attention_forward(float *out /*(B,T,H,D)*/, float *lse /*(B,H,T)*/,
			       const float *q /*(B,T,H,D)*/, const float *k /*(B,T,K,D)*/,
			       const float *v /*(B,T,K,D)*/, const int32_t *seg /*(B,T) or NULL*/,
			       int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
			       float scale, int causal);
void lmk_cpu_attention_backward(float *dq /*(B,T,H,D)*/, float *dk /*(B,T,K,D)*/,
				float *dv /*(B,T,K,D)*/, float *delta /*(B,H,T) scratch*/,
				const float *dout /*(B,T,H,D)*/, const float *q, const float *k,
				const float *v, const float *out /*(B,T,H,D)*/,
				const float *lse /*(B,H,T)*/, const int32_t *seg /*(B,T) or NULL*/,
				int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
				float scale, int causal);

/* Elementwise over n. gelu approx 0: x Φ(x) (erf); 1: the tanh form.
 * assign: dinp (bit 0); swiglu's dgate (bit 0) and dup (bit 1); add's and
 * mul's da (bit 0) and, for add with N = 1 only, db (bit 1). */
void lmk_cpu_silu_forward(float *out, const float *inp, int64_t n);
void lmk_cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n,
			   int assign);
void lmk_cpu_gelu_forward(float *out, const float *inp, int64_t n, int approx);
void lmk_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n,
			   int approx, int assign);
/* out = silu(gate) * up */
void lmk_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
void lmk_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
			     const float *up, int64_t n, int assign);
/* The same over rows of gu that hold gate then up side by side (the output
 * of one product against the stacked [wg; wu]): out[r,j] = silu(gu[r,j]) *
 * gu[r,F+j], each element as lmk_cpu_swiglu_forward computes it. The
 * backward writes dgu's two halves (assign bit 0: assigns both). */
void lmk_cpu_swiglu_cat_forward(float *out /*(N,F)*/, const float *gu /*(N,2F)*/, int64_t N,
				int64_t F);
void lmk_cpu_swiglu_cat_backward(float *dgu /*(N,2F)*/, const float *dout /*(N,F)*/,
				 const float *gu /*(N,2F)*/, int64_t N, int64_t F, int assign);
/* out = a + b and a * b with b broadcast over rows (N = 1: same shapes). */
void lmk_cpu_add_forward(float *out /*(N,M)*/, const float *a /*(N,M)*/, const float *b /*(M)*/,
			 int64_t N, int64_t M);
void lmk_cpu_add_backward(float *da /*(N,M)*/, float *db /*(M)*/, const float *dout /*(N,M)*/,
			  int64_t N, int64_t M, int assign);
void lmk_cpu_mul_forward(float *out /*(N,M)*/, const float *a /*(N,M)*/, const float *b /*(M)*/,
			 int64_t N, int64_t M);
void lmk_cpu_mul_backward(float *da /*(N,M)*/, float *db /*(M)*/, const float *dout /*(N,M)*/,
			  const float *a /*(N,M)*/, const float *b /*(M)*/, int64_t N, int64_t M,
			  int assign);
void lmk_cpu_scale_forward(float *out, const float *inp, float s, int64_t n);
void lmk_cpu_scale_backward(float *dinp, const float *dout, float s, int64_t n, int assign);
/* Element i is kept, times 1/(1-p), when lmk_philox_uniform(seed, counter, i)
 * >= p, and zeroed otherwise; the backward regenerates the same mask. */
void lmk_cpu_dropout_forward(float *out, const float *inp, int64_t n, float p, uint64_t seed,
			     uint64_t counter);
void lmk_cpu_dropout_backward(float *dinp, const float *dout, int64_t n, float p,
			      uint64_t seed, uint64_t counter, int assign);

/* loss[0] = mean over counted rows (targets[n] != ignore) of
 * lse[n] - logits[n, targets[n]]; 0 when none is counted. Targets are
 * already checked. @return : the number of rows counted */
int64_t lmk_cpu_cross_entropy_forward(float *loss /*(1)*/, float *lse /*(N)*/,
				      const float *logits /*(N,V)*/, const int32_t *targets /*(N)*/,
				      int64_t N, int64_t V, int ignore);
/* dlogits += dloss[0] / count * (softmax(logits) - onehot(target)) over the
 * counted rows; assign (bit 0): dlogits = that, zeros in the other rows */
void lmk_cpu_cross_entropy_backward(float *dlogits /*(N,V)*/, const float *dloss /*(1)*/,
				    const float *logits /*(N,V)*/, const float *lse /*(N)*/,
				    const int32_t *targets /*(N)*/, int64_t N, int64_t V,
				    int ignore, int64_t count, int assign);

#endif
