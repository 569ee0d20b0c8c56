/* path.h: PaTH attention (Yang et al. 2025, "PaTH Attention: Position
 * Encoding via Accumulating Householder Transformations") and its
 * forget-gate variant PaTH-FoX, as a differentiable op, plus a decoding cache.
 * Owns: the op's CPU kernels (a naive reference, the specification, and a
 * blockwise UT/WY version), and the cache's buffers. Needs: tensor, op, err;
 * in a CUDA build cuda/path_cuda.h. Never: prints, exits, or computes w,
 * beta or logf from activations (the layer that calls it does).
 *
 * Shape letters: B batch, T time, H query heads, K key/value heads (H a
 * multiple of K; query head h reads key head g = h/(H/K)), D head dim.
 * q (B,T,H,D); k, v, w (B,T,K,D); beta (B,T,K); logf (B,T,H) or NULL.
 *
 * With H_t = I - beta_t w_t w_tᵀ (w_t of key head g, rows unit vectors:
 * the caller L2-normalises them; beta_t in (0,2) makes H_t a reflection-
 * like map of norm <= 1), query i and key j <= i of query head h meet in
 *   s_ij = scale * q_iᵀ (H_i H_{i-1} ... H_{j+1}) k_j
 *          + sum_{r=j+1..i} logf_r            (PaTH-FoX; absent for NULL)
 * so the product holds the transforms of the positions after j up to and
 * including i, the latest leftmost (s_ii = scale q_iᵀ k_i); o_i =
 * sum_{j<=i} softmax_j(s_i.) v_j. This is fla's naive_path_attn
 * (fla/ops/path_attn, tests/ops/test_path_attn.py: tril(Q Wᵀ) including the
 * diagonal, the UT factor on w_s for s > j) and the paper's eq. for
 * A_ij. w and beta are per key head as in fla (their gradients summed over
 * the query heads of the group); logf is per query head, as fla's g.
 * One difference from fla: fla multiplies the forget-gate sum by scale too
 * (softmax(scale (qᵀPk + G_i - G_j))); here the sum is added unscaled, as
 * the Forgetting Transformer defines it. Pass scale * logf to get fla's.
 *
 * Decoding: the cache keeps every past key already multiplied by the
 * transforms that came after it, k_j <- H_t k_j for each new token t
 * (applied before t's own key is appended, which stays as it is), so a new
 * query needs one dot product per key: s_tj = scale q_tᵀ k_j + the running
 * sum of logf over (j, t]. */
#ifndef LMK_PATH_H
#define LMK_PATH_H

#include <stdint.h>

#include "tensor.h"

enum { LMK_PATH_AUTO = 0, LMK_PATH_NAIVE = 1, LMK_PATH_BLOCKWISE = 2, LMK_PATH_BLOCKWISE_FP32 = 3 };

typedef struct lmk_path_opts {
	int block; /* key/query block of the blockwise algorithm; 0: 64. On
		    * CUDA at most 64 */
	int algo;  /* LMK_PATH_AUTO (blockwise), LMK_PATH_NAIVE (CPU only: the
		    * O(T² D) reference, one transform at a time),
		    * LMK_PATH_BLOCKWISE (on CUDA in BF16 with D a multiple
		    * of 16, the products of the O(T²) passes on the tensor
		    * cores, bf16 operands, fp32 accumulation),
		    * LMK_PATH_BLOCKWISE_FP32 (every product in float32;
		    * the same as BLOCKWISE on the CPU) */
} lmk_path_opts;

/* The attention above -> (B,T,H,D). o may be NULL (defaults). Gradients
 * reach q, k, v, w, beta and logf, whichever require grad; w is treated as
 * a free input (no gradient through a normalisation the caller did).
 * Compute dtype: F32 on the CPU, F32 or BF16 on CUDA (float32 inside).
 * Memory (float32): the forward keeps about 3 T D per head plus N C² per
 * head (N = ceil(T/C)) in the arena; the blockwise backward needs the
 * query walk's levels and adjoints, N (N-1) C D floats per query head
 * (126 MiB at T = 4096, D = 128, C = 64; 2 GiB at T = 16K), only during
 * the call: heap on the CPU, the backend's scratch on CUDA.
 * @return : NULL on failure (bad shapes, scale not finite, block < 1,
 * NAIVE on CUDA, D > 128 on CUDA), message recorded */
lmk_tensor *lmk_path_attention(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			       lmk_tensor *w, lmk_tensor *beta, lmk_tensor *logf, float scale,
			       const lmk_path_opts *o);

/* ---- CPU kernels (float32, results independent of the thread count) ---- */

/* The specification: for each query row, walks j from i down to 0 with
 * u = H_{j+1}...H_i q_i (one transform per step) and the running logf sum.
 * lse (B,H,T) receives each row's logsumexp. */
void lmk_path_cpu_naive_forward(float *out /*(B,T,H,D)*/, float *lse /*(B,H,T)*/,
				const float *q /*(B,T,H,D)*/, const float *k /*(B,T,K,D)*/,
				const float *v /*(B,T,K,D)*/, const float *w /*(B,T,K,D)*/,
				const float *beta /*(B,T,K)*/, const float *logf /*(B,T,H) or NULL*/,
				int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, float scale);
/* Adds into the gradients (each may be NULL); scratch is
 * lmk_path_cpu_naive_scratch floats. */
void lmk_path_cpu_naive_backward(float *dq, float *dk, float *dv, float *dw, float *dbeta,
				 float *dlogf, float *scratch, const float *dout /*(B,T,H,D)*/,
				 const float *q, const float *k, const float *v, const float *w,
				 const float *beta, const float *logf, int64_t B, int64_t T,
				 int64_t H, int64_t K, int64_t D, float scale);
int64_t lmk_path_cpu_naive_scratch(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D);

/* The blockwise algorithm's saved state and scratch (float32, from the
 * arena), laid out head-major; see path.c for what each holds. C is the
 * block, N = ceil(T/C), P = N(N-1)/2 pairs of blocks (m > n). */
typedef struct lmk_path_ws {
	int64_t B, T, H, K, D, C, N;
	float *tm;    /* (B,K,N,C,C) T = (I + strictlower(diag(beta) W Wᵀ))⁻¹ */
	float *u;     /* (B,K,T,D) U = T diag(beta) W per block */
	float *z;     /* (B,K,N,C,C) Z = T strictlower(diag(beta) W Kᵀ) */
	float *kt;    /* (B,K,T,D) keys moved to the end of their block */
	float *qt;    /* (B,H,T,D) queries moved to the start of their block */
	float *aloc;  /* (B,H,N,C,C) the logits (without scale) inside a block */
	float *g;     /* (B,H,T) running sum of logf, or NULL */
	float *lse;   /* (B,H,T) */
	/* backward only */
	float *lv;    /* (B,H,P,C,D) query block m moved down to key block n */
	float *adj;   /* (B,H,P,C,D) the adjoint of lv(m, n-1) */
	float *dqt;   /* (B,H,T,D) */
	float *daloc; /* (B,H,N,C,C) */
	float *dkt;   /* (B,K,T,D) */
	float *du;    /* (B,K,T,D) */
	float *dwp;   /* (B,K,T,D) gradient of w through the block products */
	float *dgr, *dgc; /* (B,H,T) gradient of g as query / as key */
	float *delta; /* (B,H,T) rowsum(dout * out) */
	float *tmp;   /* per-thread scratch: nthr * lmk_path_cpu_tmp(C, D) */
	int nthr;
	int tc;       /* CUDA: tensor cores allowed (not BLOCKWISE_FP32) */
} lmk_path_ws;

int64_t lmk_path_cpu_tmp(int64_t C, int64_t D);
/* Points the backward-only members (lv .. delta) into base, each at a
 * multiple of 32 floats (base NULL: sets them NULL, only counts).
 * @return : the floats they take */
int64_t lmk_path_bwd_carve(lmk_path_ws *s, float *base);

void lmk_path_cpu_forward(lmk_path_ws *s, float *out /*(B,T,H,D)*/, const float *q,
			  const float *k, const float *v, const float *w, const float *beta,
			  const float *logf, float scale);
void lmk_path_cpu_backward(lmk_path_ws *s, float *dq, float *dk, float *dv, float *dw,
			   float *dbeta, float *dlogf, const float *dout, const float *out,
			   const float *q, const float *k, const float *v, const float *w,
			   const float *beta, const float *logf, float scale);

/* ---- decoding ---- */

/* Keys and values of up to cap tokens for B sequences, on the context's
 * device; keys kept transformed as described above, in float32 (each is
 * rewritten at every step: bf16 would round it that many times), values
 * in the compute dtype. The logf running sums (FoX) are float32. */
typedef struct lmk_path_cache {
	lmk_device dev;
	lmk_dtype dt;
	int64_t B, cap, len, H, K, D;
	int fox;        /* the cache keeps running logf sums */
	float *k;       /* (B,cap,K,D) */
	void *v;        /* (B,cap,K,D) */
	float *bias;    /* (B,cap,H): sum of logf over (j, len-1], or NULL */
	void *backend;  /* CUDA: the context's backend */
} lmk_path_cache;

/* @return : 0, LMK_EINVAL, LMK_ENOMEM or LMK_EDEVICE */
int lmk_path_cache_init(lmk_path_cache *pc, lmk_ctx *c, int64_t B, int64_t cap, int64_t H,
			int64_t K, int64_t D, int fox);
void lmk_path_cache_free(lmk_path_cache *pc);
/* Forgets every token (len = 0). */
void lmk_path_cache_reset(lmk_path_cache *pc);

/* One new token per sequence: q (B,1,H,D), k, v, w (B,1,K,D), beta (B,1,K),
 * logf (B,1,H) (non-NULL exactly when the cache was made with fox).
 * Moves the cached keys by H_t, appends k and v, and returns the new
 * token's attention output (B,1,H,D) (no gradient). Equal to the last row
 * of lmk_path_attention over the tokens so far.
 * @return : NULL on failure (cache full: LMK_EINVAL) */
lmk_tensor *lmk_path_decode(lmk_ctx *c, lmk_path_cache *pc, lmk_tensor *q, lmk_tensor *k,
			    lmk_tensor *v, lmk_tensor *w, lmk_tensor *beta, lmk_tensor *logf,
			    float scale);

/* CPU kernels of the decoder (cache in float32). */
void lmk_path_cpu_cache_update(float *kc /*(B,cap,K,D)*/, float *vc /*(B,cap,K,D)*/,
			       float *bias /*(B,cap,H) or NULL*/, const float *k /*(B,K,D)*/,
			       const float *v /*(B,K,D)*/, const float *w /*(B,K,D)*/,
			       const float *beta /*(B,K)*/, const float *logf /*(B,H) or NULL*/,
			       int64_t B, int64_t cap, int64_t len, int64_t H, int64_t K,
			       int64_t D);
void lmk_path_cpu_decode_attend(float *out /*(B,H,D)*/, const float *q /*(B,H,D)*/,
				const float *kc, const float *vc, const float *bias, int64_t B,
				int64_t cap, int64_t len, int64_t H, int64_t K, int64_t D,
				float scale);

#endif
