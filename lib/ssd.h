/* ssd.h: the core op of the scalar-decay linear token mixers: causal linear
 * attention, Mamba-2's state-space duality (SSD) and the log-linear Mamba-2
 * of "Log-Linear Attention" (Guo et al. 2025), as one differentiable op, its
 * CPU kernels (recurrent, materialised, chunked) and a decoding state.
 * Owns: the decoding state's memory. Needs: tensor, op (checks, tape),
 * fenwick, ops_cpu (lmk_cpu_mm: the chunk products through OpenBLAS), and
 * in a CUDA build cuda/ssd_cuda.h.
 * Never: prints, exits, or knows which layer calls it.
 *
 * Shape letters: B batch, T time, H heads, G key groups (H a multiple of G;
 * head h reads group h / (H/G), as Mamba-2's groups), Dk key dim, Dv value
 * dim, NL Fenwick levels (>= lmk_fenwick_levels(T)).
 *
 *   o_t = scale * sum_{s<=t} w(t,s) (q_t . k_s) v_s
 *   w(t,s) = exp(loga_{s+1} + ... + loga_t) * (lam ? lam_t[level(t,s)] : 1)
 *
 * with level(t,s) = lmk_fenwick_level(t,s). Recurrently: h_t = a_t h_{t-1} +
 * k_t v_tᵀ, o_t = scale h_tᵀ q_t; log-linear keeps one state per Fenwick
 * level, merged as a binary counter, o_t = scale sum_l lam_t[l] S_t^(l)ᵀ q_t.
 */
#ifndef LMK_SSD_H
#define LMK_SSD_H

#include <stdint.h>

#include "tensor.h"

enum { LMK_SSD_AUTO = 0, LMK_SSD_RECURRENT, LMK_SSD_MATERIALIZED, LMK_SSD_CHUNKED };

typedef struct lmk_ssd_opts {
	int chunk;   /* tokens per chunk of the chunked form; 0: 64. With lam and
		      * more than one chunk it is rounded down to a power of two,
		      * so that chunks are whole Fenwick buckets */
	int algo;    /* LMK_SSD_AUTO (chunked), _RECURRENT, _MATERIALIZED, _CHUNKED;
		      * the CPU honours it, CUDA always runs the chunked form */
	float scale; /* multiplies q.k; 0 means 1 */
} lmk_ssd_opts;

/* q, k (B,T,G,Dk), v (B,T,H,Dv), loga (B,T,H) log decays (<= 0, not
 * checked) or NULL (no decay), lam (B,T,H,NL) or NULL (not log-linear)
 * -> (B,T,H,Dv) in the context's compute dtype. Any subset of the inputs
 * may require grad. On CUDA the chunk is at most 64 (a larger one runs as
 * 64: the result does not depend on it), Dk and Dv at most 128 (else
 * LMK_EUNSUP). @return : NULL on failure (message recorded) */
lmk_tensor *lmk_ssd(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v, lmk_tensor *loga,
		    lmk_tensor *lam, const lmk_ssd_opts *o);

/* ---- decoding: the recurrent form, one token (per batch row) at a time */

typedef struct lmk_ssd_state {
	int64_t B, H, Dk, Dv;
	int64_t NL;          /* Fenwick levels held; 0: not log-linear (one state) */
	int64_t t;           /* tokens stepped since init or reset */
	lmk_device dev;
	void *backend;       /* CUDA: the context's backend */
	float *S;            /* (B,H,max(NL,1),Dk,Dv) float32, on dev */
} lmk_ssd_state;

/* A zeroed state for B rows of H heads on c's device. With NL > 0 it holds
 * NL levels, enough for 2^(NL-1) tokens (lam's last dim in lmk_ssd).
 * @return : 0, LMK_EINVAL or LMK_ENOMEM */
int lmk_ssd_state_init(lmk_ssd_state *s, lmk_ctx *c, int64_t B, int64_t H, int64_t Dk,
		       int64_t Dv, int64_t NL);
/* Back to t = 0 (all states zero). @return : 0 or < 0 */
int lmk_ssd_state_reset(lmk_ctx *c, lmk_ssd_state *s);
/* Feeds T tokens (T >= 1; usually 1): q, k (B,T,G,Dk), v (B,T,H,Dv), loga
 * (B,T,H) or NULL, lam (B,T,H,NL) given iff the state has NL > 0, and
 * returns their outputs (B,T,H,Dv), the rows lmk_ssd gives at positions
 * s->t .. s->t+T-1 of the whole sequence. Records nothing on the tape.
 * @return : NULL on failure (bad shapes, more tokens than NL levels hold) */
lmk_tensor *lmk_ssd_step(lmk_ctx *c, lmk_ssd_state *s, lmk_tensor *q, lmk_tensor *k,
			 lmk_tensor *v, lmk_tensor *loga, lmk_tensor *lam,
			 const lmk_ssd_opts *o);
void lmk_ssd_state_free(lmk_ssd_state *s);

/* ---- the CPU kernels (the specification), float32 on raw pointers.
 * algo is RECURRENT, MATERIALIZED or CHUNKED (AUTO: chunked); chunk > 0.
 * The backward adds (+=) into each gradient that is not NULL; out is the
 * forward's output. Results do not depend on the number of threads.
 * @return : 0 or LMK_ENOMEM (recorded) */
int lmk_cpu_ssd_forward(float *out /*(B,T,H,Dv)*/, const float *q /*(B,T,G,Dk)*/,
			const float *k /*(B,T,G,Dk)*/, const float *v /*(B,T,H,Dv)*/,
			const float *loga /*(B,T,H) or NULL*/,
			const float *lam /*(B,T,H,NL) or NULL*/, int64_t B, int64_t T, int64_t H,
			int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale, int algo,
			int chunk);
int lmk_cpu_ssd_backward(float *dq /*(B,T,G,Dk)*/, float *dk /*(B,T,G,Dk)*/,
			 float *dv /*(B,T,H,Dv)*/, float *dloga /*(B,T,H)*/,
			 float *dlam /*(B,T,H,NL)*/, const float *dout /*(B,T,H,Dv)*/,
			 const float *q, const float *k, const float *v, const float *loga,
			 const float *lam, const float *out /*(B,T,H,Dv)*/, int64_t B, int64_t T,
			 int64_t H, int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale,
			 int algo, int chunk);

/* The chunk the chunked form really uses: chunk, or with lam and more than
 * one chunk the largest power of two <= chunk. */
int lmk_ssd_effective_chunk(int chunk, int64_t T, int loglinear);

#endif
