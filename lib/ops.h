/* ops.h: the differentiable operations models are written with.
 * Each op takes a context and tensors, returns a new tensor from the arena
 * and, when grad is enabled and an input requires grad, records a tape node
 * whose backward adds (+=) into the inputs' gradients (or, where it can,
 * writes those the tape has left unwritten: tensor.h). Any NULL input makes
 * an op return NULL at once, so forward code may chain calls and test only
 * the final result; the first failure's message is the one recorded.
 * The tape keeps pointers to an op's inputs (and to memory they wrap), so
 * these must stay valid until the step's backward has run.
 * Backends: the CPU kernels of ops_cpu.h are the specification; a CUDA
 * build dispatches to cuda/ when c->dev is LMK_DEV_CUDA (docs/cuda.md).
 * There, float inputs and outputs are in the context's compute dtype
 * (c->dtype: F32, or BF16 with a parameter read through its bf16 copy);
 * ids, positions, segments and targets are I32 tensors on the device
 * (lmk_tensor_upload); every op only queues kernels on the context's stream
 * and never waits, so ids or targets out of range are found by the kernels
 * and reported by the next lmk_ctx_sync (or copy to the host).
 * Shape letters: B batch, T time, C channels, H query heads, K key/value
 * heads, D head dim, V vocabulary, N rows (any leading dims flattened).
 * Owns: nothing beyond the arena memory it asks for. Needs: tensor, ops_cpu.
 * Never: prints or exits. */
#ifndef LMK_OPS_H
#define LMK_OPS_H

#include "tensor.h"

/* ids (B,T) I32, w (V,C) -> (B,T,C). Out-of-range ids fail. */
lmk_tensor *lmk_embedding(lmk_ctx *c, lmk_tensor *ids, lmk_tensor *w);

/* x (...,I), w (O,I), b (O) or NULL -> (...,O): y = x wᵀ + b. */
lmk_tensor *lmk_linear(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b);

/* x (...,I), w (O,I), b (O) or NULL, r (...,O) -> (...,O): y = r + (x wᵀ + b),
 * a residual add fused into the product (on CUDA the product accumulates
 * onto r: one rounding instead of two). r's gradient is y's: the tape
 * hands y's gradient memory on to r where it can (tensor.h), so the
 * backward copies nothing. */
lmk_tensor *lmk_linear_add(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b,
			   lmk_tensor *r);

/* x (...,I) and nw weights w[j] (O_j,I), 1 <= nw <= 5, that lie one after
 * another in memory (lmk_linear_cat_ok) -> (...,O) with O = Σ O_j: y =
 * x [w_0; ...; w_{nw-1}]ᵀ, each row the nw products of lmk_linear (no bias)
 * side by side. One product against the stacked matrix forward, one for
 * x's gradient and one for the weights' (a model's gate and up, or q, k
 * and v, in one wider product each: better use of the device). */
lmk_tensor *lmk_linear_cat(lmk_ctx *c, lmk_tensor *x, int nw, lmk_tensor *const *w);
/* Whether w[0..nw-1] may be lmk_linear_cat's weights: 2-d with the same
 * columns, dtype, device and requires_grad, each one's data (and gradient
 * and bf16 copy, where they exist) starting where the one before ends, as
 * consecutive parameters of one lmk_params whose sizes keep its alignment. */
int lmk_linear_cat_ok(int nw, lmk_tensor *const *w);

/* x (...,C), w (C) or NULL: y = x / sqrt(mean(x²) + eps) * w. */
lmk_tensor *lmk_rmsnorm(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, float eps);
/* x (...,C), w (C) or NULL, b (C) or NULL: y = (x - mean) / sqrt(var + eps) * w + b. */
lmk_tensor *lmk_layernorm(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, float eps);

/* Rotary tables in the Hugging Face Llama convention: dimension i pairs with
 * i + D/2 ("rotate_half"), inv_freq[i] = theta^(-2i/D), optionally rescaled
 * as Llama 3's rope_scaling ("llama3": factor, low_freq_factor,
 * high_freq_factor, original_max_position_embeddings), or "linear"
 * (positions divided by factor). */
typedef struct lmk_rope_scaling {
	int type;            /* LMK_ROPE_NONE, LMK_ROPE_LINEAR, LMK_ROPE_LLAMA3 */
	float factor, low_freq_factor, high_freq_factor;
	int original_max_pos;
} lmk_rope_scaling;
enum { LMK_ROPE_NONE, LMK_ROPE_LINEAR, LMK_ROPE_LLAMA3 };
typedef struct lmk_rope {
	int head_dim;
	float *inv_freq;     /* (D/2) */
	float attn_factor;   /* multiplies cos and sin (1 for the types above) */
} lmk_rope;
int lmk_rope_init(lmk_rope *r, int head_dim, float theta, const lmk_rope_scaling *s);
void lmk_rope_free(lmk_rope *r);
/* x (B,T,H,D), pos (B,T) I32 positions -> (B,T,H,D) rotated. */
lmk_tensor *lmk_rope_apply(lmk_ctx *c, lmk_tensor *x, const lmk_rope *r, lmk_tensor *pos);

/* Causal scaled-dot-product attention with grouped-query heads:
 * q (B,T,H,D), k and v (B,T,K,D) with H a multiple of K -> (B,T,H,D).
 * Query head h reads key/value head h / (H/K). Query i sees key j when
 * j <= i and, if seg (B,T) I32 is given, seg[j] == seg[i] (packed
 * sequences); a query with seg < 0 (padding) sees nothing and outputs 0.
 * scale multiplies the logits (1/sqrt(D) usually). */
lmk_tensor *lmk_attention(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			  lmk_tensor *seg, float scale);
/* The same with causal 0 for bidirectional attention (encoders, vision
 * transformers): query i sees every key j of its segment. lmk_attention is
 * lmk_attention_ex(..., 1). seg may be NULL (one segment per batch row). */
lmk_tensor *lmk_attention_ex(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			     lmk_tensor *seg, float scale, int causal);

/* Elementwise. */
lmk_tensor *lmk_silu(lmk_ctx *c, lmk_tensor *x);
/* approx 0: exact erf form ("gelu"); 1: tanh form ("gelu_pytorch_tanh"). */
lmk_tensor *lmk_gelu(lmk_ctx *c, lmk_tensor *x, int approx);
/* silu(gate) * up, same shapes. */
lmk_tensor *lmk_swiglu(lmk_ctx *c, lmk_tensor *gate, lmk_tensor *up);
/* gu (...,2F), gate then up in each row (lmk_linear_cat of wg and wu) ->
 * (...,F): silu(gate) * up, the elements of lmk_swiglu. */
lmk_tensor *lmk_swiglu_cat(lmk_ctx *c, lmk_tensor *gu);
/* a + b and a * b, same shapes, or b's shape the trailing dimensions of a's
 * (a (B,T,C) + b (T,C) or (C)): b is broadcast over a's leading dims. */
lmk_tensor *lmk_add(lmk_ctx *c, lmk_tensor *a, lmk_tensor *b);
lmk_tensor *lmk_mul(lmk_ctx *c, lmk_tensor *a, lmk_tensor *b);
/* s * x */
lmk_tensor *lmk_scale(lmk_ctx *c, lmk_tensor *x, float s);
/* Inverted dropout: each element is zeroed with probability p (0 <= p <= 1)
 * and the others multiplied by 1/(1-p). Element i is dropped when
 * lmk_philox_uniform(c->seed, c->counter, i) < p; the op then advances
 * c->counter by x->n, so a step is reproducible from (seed, counter) and the
 * backward regenerates the mask instead of storing it. With p == 0 or grad
 * disabled (evaluation) it returns x itself. */
lmk_tensor *lmk_dropout(lmk_ctx *c, lmk_tensor *x, float p);

/* Mean softmax cross-entropy over the rows whose target is not ignore:
 * logits (N,V) or (B,T,V), targets (N) or (B,T) I32 -> 0-d loss.
 * *count (may be NULL) receives the number of rows counted; a row with a
 * target outside [0,V) that is not ignore fails. With no row counted the
 * loss is 0 and its gradient 0. The loss is float32 in any compute dtype;
 * on CUDA a non-NULL count makes the op wait for the device (pass NULL in
 * a training step, and read the loss once the step is queued). */
lmk_tensor *lmk_cross_entropy(lmk_ctx *c, lmk_tensor *logits, lmk_tensor *targets,
			      int ignore, int64_t *count);

#endif
