/* gdn.h: the core op of Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024) and of
 * log-linear Gated DeltaNet (Guo et al. 2025, "Log-Linear Attention"): the
 * differentiable op, its CPU kernels (recurrent, chunked, materialised) and a
 * decoding state stepped one token at a time.
 * Owns: the decoding state's memory. Needs: tensor, op (checks, tape),
 * fenwick, ops_cpu (lmk_cpu_mm: the chunk products through OpenBLAS), and
 * in a CUDA build cuda/gdn_cuda.h.
 * Never: prints, exits, or normalises q and k (the caller does).
 *
 * Shape letters: B batch, T time, H heads, Dk key dim, Dv value dim, NL
 * log-linear levels. Per head, with a_t = exp(loga_t) (1 when loga is NULL)
 * and the transition A_t = a_t (I - beta_t k_t k_tᵀ) (Dk x Dk):
 *
 *   S_t = A_t S_{t-1} + beta_t k_t v_tᵀ     (S is Dk x Dv, S_{-1} = 0)
 *   o_t = scale S_tᵀ q_t
 *
 * Log-linear (lam given): with P(t,s) = A_t A_{t-1} ... A_{s+1} (I when
 * s == t) and l(t,s) = lmk_fenwick_level(t,s),
 *
 *   o_t = scale sum_{s<=t} lam_t[l(t,s)] q_tᵀ P(t,s) k_s beta_s v_sᵀ
 *
 * i.e. one state per Fenwick level, S_t^(l) = sum over the keys s of level l
 * of P(t,s) k_s beta_s v_sᵀ, all levels evolving under the same A_t. As a
 * recurrence this is a binary counter: at step t >= 1, with j = ctz(t), the
 * old levels 0..j merge into level j+1 (which is empty), levels 1..j empty,
 * every level >= 1 is multiplied by A_t, and level 0 becomes beta_t k_t v_tᵀ;
 * o_t = scale sum_l lam_t[l] S_t^(l)ᵀ q_t. With lam all ones it is the plain
 * op. This is the hierarchical form of the paper (section on log-linear
 * Gated DeltaNet: the Fenwick partition of the masked attention matrix of
 * Gated DeltaNet, each bucket's block weighted by lambda_t^(l)), in the
 * convention of lib/fenwick.h (level 0 is the token itself) shared with
 * log-linear Mamba-2.
 *
 * Algorithms (all give the same result up to rounding):
 *  - recurrent: the recurrence above, O(T Dk Dv) per head (times the number
 *    of live levels for log-linear): the specification;
 *  - chunked: chunks of C tokens (ragged last chunk allowed): inside a chunk
 *    the product of the transitions in WY/UT form (the pseudo-values
 *    U = (I + M)^-1 (diag(beta) V - diag(beta gamma) K S0) with M the
 *    strictly lower beta_i gamma_i/gamma_j k_iᵀ k_j), the chunk's attention
 *    matrix materialised so that each query-key pair gets its level's
 *    lambda, and between chunks one state (or, log-linear, one per
 *    chunk-level Fenwick bucket). For log-linear C is rounded down to a
 *    power of two, so that chunks are aligned with the Fenwick buckets;
 *  - materialised: the chunked form with one chunk of T tokens (T x T
 *    matrices: small T only).
 * Backwards: recurrent (algo LMK_GDN_RECURRENT): the recurrence run
 * backwards over windows of C steps from states checkpointed at window
 * starts; chunked (any other algo): the chunks in reverse, each taking the
 * gradient of its leaving states to its entering ones through the chunk's
 * matrices (derived by hand, checked against the recurrent one and finite
 * differences). Both recompute what they need: the forward saves nothing. */
#ifndef LMK_GDN_H
#define LMK_GDN_H

#include <stdint.h>

#include "tensor.h"

enum { LMK_GDN_AUTO = 0, LMK_GDN_RECURRENT, LMK_GDN_MATERIALIZED, LMK_GDN_CHUNKED };

typedef struct lmk_gdn_opts {
	int chunk;   /* tokens per chunk (and backward window); 0: 64 */
	int algo;    /* LMK_GDN_*; AUTO: chunked on the CPU */
	float scale; /* 0 means 1/sqrt(Dk) */
} lmk_gdn_opts;

/* q, k (B,T,H,Dk) (L2-normalised by the caller), v (B,T,H,Dv), loga (B,T,H)
 * log decays <= 0 or NULL (plain DeltaNet), beta (B,T,H) in (0,2), lam
 * (B,T,H,NL) with NL >= lmk_fenwick_levels(T) or NULL (not log-linear)
 * -> (B,T,H,Dv). Gradients to any of them. Every algorithm gives the same
 * result up to rounding. On CUDA (cuda/gdn_cuda.h: Dk, Dv <= 128) algo
 * LMK_GDN_RECURRENT runs the recurrent kernels and any other the chunked
 * ones, whose chunk is always 64. @return : NULL on failure (message
 * recorded) */
lmk_tensor *lmk_gdn(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v, lmk_tensor *loga,
		    lmk_tensor *beta, lmk_tensor *lam, const lmk_gdn_opts *o);

/* The CPU kernels, float32, parallel over (b,h) and independent of the
 * thread count. algo and chunk as in lmk_gdn_opts (0: defaults); NL is 0
 * when lam is NULL. The backward adds (+=) into the gradients that are not
 * NULL; its algo picks the recurrent backward (LMK_GDN_RECURRENT, chunk its
 * window) or the chunked one. @return : 0, or LMK_ENOMEM */
int lmk_cpu_gdn_forward(float *out /*(B,T,H,Dv)*/, const float *q /*(B,T,H,Dk)*/,
			const float *k /*(B,T,H,Dk)*/, const float *v /*(B,T,H,Dv)*/,
			const float *loga /*(B,T,H) or NULL*/, const float *beta /*(B,T,H)*/,
			const float *lam /*(B,T,H,NL) or NULL*/, int64_t B, int64_t T, int64_t H,
			int64_t Dk, int64_t Dv, int64_t NL, float scale, int algo, int chunk);
int lmk_cpu_gdn_backward(float *dq /*(B,T,H,Dk)*/, float *dk /*(B,T,H,Dk)*/,
			 float *dv /*(B,T,H,Dv)*/, float *dloga /*(B,T,H)*/,
			 float *dbeta /*(B,T,H)*/, float *dlam /*(B,T,H,NL)*/,
			 const float *dout /*(B,T,H,Dv)*/, const float *q, const float *k,
			 const float *v, const float *loga, const float *beta, const float *lam,
			 int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
			 float scale, int algo, int chunk);

/* Decoding: the state after the tokens stepped so far, float32 whatever the
 * context's dtype, on the context's device: (B,H,nlev,Dk,Dv) with nlev 1, or
 * lmk_fenwick_levels(max_t) for log-linear. Every row of the batch is at the
 * same position t. */
typedef struct lmk_gdn_state {
	lmk_device dev;
	int64_t B, H, Dk, Dv;
	int loglinear;
	int nlev;
	int64_t max_t;       /* log-linear: steps the levels allow */
	int64_t t;           /* tokens stepped */
	float *S;            /* (B,H,nlev,Dk,Dv), zero at t = 0 */
	void *backend;       /* CUDA: the context's backend */
} lmk_gdn_state;

/* A zero state. max_t bounds the tokens of a log-linear state (ignored
 * otherwise). @return : 0, LMK_EINVAL, LMK_ENOMEM or LMK_EDEVICE */
int lmk_gdn_state_init(lmk_gdn_state *s, lmk_ctx *c, int64_t B, int64_t H, int64_t Dk,
		       int64_t Dv, int loglinear, int64_t max_t);
/* Back to t = 0. @return : 0 or < 0 */
int lmk_gdn_state_reset(lmk_gdn_state *s);
void lmk_gdn_state_free(lmk_gdn_state *s);
/* One token for every row: q, k (B,1,H,Dk), v (B,1,H,Dv), loga (B,1,H) or
 * NULL, beta (B,1,H), lam (B,1,H,NL) with NL >= lmk_fenwick_levels(t + 1)
 * exactly when the state is log-linear -> o (B,1,H,Dv), the parallel op's
 * output at position t. No gradient is recorded. scale 0 means 1/sqrt(Dk).
 * @return : NULL on failure (message recorded) */
lmk_tensor *lmk_gdn_step(lmk_ctx *c, lmk_gdn_state *s, lmk_tensor *q, lmk_tensor *k,
			 lmk_tensor *v, lmk_tensor *loga, lmk_tensor *beta, lmk_tensor *lam,
			 float scale);
/* The CPU step kernel (the state, in and out, is S of lmk_gdn_state). */
void lmk_cpu_gdn_step(float *S /*(B,H,nlev,Dk,Dv)*/, float *out /*(B,H,Dv)*/,
		      const float *q /*(B,H,Dk)*/, const float *k /*(B,H,Dk)*/,
		      const float *v /*(B,H,Dv)*/, const float *loga /*(B,H) or NULL*/,
		      const float *beta /*(B,H)*/, const float *lam /*(B,H,NL) or NULL*/,
		      int64_t B, int64_t H, int64_t Dk, int64_t Dv, int64_t NL, int nlev,
		      int64_t t, float scale);

#endif
