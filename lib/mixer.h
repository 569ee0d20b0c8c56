/* mixer.h: token-mixer layers (B,T,C) -> (B,T,C) built from a core op and
 * the ops around it: causal linear attention, Mamba-2, Gated DeltaNet, their
 * log-linear versions, and PaTH attention (with the FoX forget gate): the
 * configuration, the parameters (registered into an lmk_params under a
 * prefix, named as the Hugging Face / fla modules name them), their
 * initialisation as the papers do it, and the forward, written with ops only
 * so that the tape gives the backward.
 * Owns: nothing beyond the lmk_mixer struct and a decoding state's buffers
 * (the parameters live in the caller's lmk_params). Needs: ops, seqops,
 * ssd, gdn, path, rng.
 * Never: prints, exits, allocates parameters itself, or knows about blocks,
 * residuals or the model around it.
 *
 * Shape letters: B batch, T time, C hidden, H heads, Dk/Dv key and value
 * head dims, P Mamba-2's head dim, N its state size, G its groups (PaTH:
 * key/value heads K), W the short convolution's width, NL log-linear
 * levels. */
#ifndef LMK_MIXER_H
#define LMK_MIXER_H

#include <stdint.h>

#include "gdn.h"
#include "path.h"
#include "ssd.h"
#include "tensor.h"

typedef enum {
	LMK_MIXER_LINEAR,
	LMK_MIXER_MAMBA2,
	LMK_MIXER_GDN,
	LMK_MIXER_LL_MAMBA2,
	LMK_MIXER_LL_GDN,
	LMK_MIXER_PATH,
	LMK_MIXER_PATH_FOX,
	LMK_MIXER_NKINDS
} lmk_mixer_kind;

/* What each kind computes (x the layer's input (B,T,C); linear layers
 * without bias unless said; "conv" is lmk_conv1d_causal, gated by SiLU):
 *
 * linear (fla's LinearAttention, identity feature map, output RMSNorm):
 *   q, k (B,T,H,Dk), v (B,T,H,Dv) projections; o = lmk_ssd(q, k, v) with
 *   scale 1/sqrt(Dk) and no decay; per-head RMSNorm(o) (norm.weight (Dv));
 *   o_proj. With decay set, a scalar data-dependent decay per head as
 *   fla's SimpleGLA: loga = logsigmoid(gk_proj x + b) / 16 (gk_proj (H,C)
 *   with a bias, after v_proj).
 * mamba2 (mamba_ssm's Mamba2; P = head_dim, d_inner = H*P):
 *   in_proj -> z (d_inner), xBC (d_inner + 2GN), dt (H); xBC = conv(xBC) +
 *   conv bias, SiLU; split into x (B,T,H,P), B, C (B,T,G,N); dt =
 *   softplus(dt + dt_bias); loga = -exp(A_log) dt; y = lmk_ssd(q = C,
 *   k = B, v = x dt, loga) + D x; y = RMSNorm(y * silu(z)) (the gate
 *   before the norm, over all of d_inner: mamba_ssm's RMSNormGated with
 *   norm_before_gate=False, as fla's LogLinearMamba2); out_proj.
 * ll-mamba2 (fla's LogLinearMamba2): in_proj also gives dl (H*NL) after
 *   dt; lam = softplus(L * dl) with L (H,NL); lmk_ssd with lam.
 * gdn (fla's GatedDeltaNet, Dv = head_dim_v): q, k, v projections, each
 *   through its own short conv (no bias) and SiLU; q, k L2-normalised per
 *   head (eps 1e-6 inside the root, as fla's l2norm); beta =
 *   sigmoid(b_proj x) (2 sigmoid with neg_eig: fla's allow_neg_eigval); loga = -exp(A_log) softplus(a_proj x + dt_bias);
 *   o = lmk_gdn(q, k, v, loga, beta) with scale 1/sqrt(Dk); o =
 *   RMSNorm(o) * silu(g_proj x) per head (o_norm.weight (Dv)); o_proj.
 * ll-gdn: a dl_proj (H*NL rows) and L (H,NL): lam = softplus(L * dl).
 * path (fla's PaTHAttention, D = head_dim, K = groups key/value heads):
 *   q (B,T,H,D), k, v (B,T,K,D) projections; w = l2norm(SiLU(conv_3(w_proj
 *   x))) per head, w_proj low rank (C -> w_rank -> K*D: w_proj.0,
 *   w_proj.1) when K == H, full (w_proj) otherwise; beta = 2
 *   sigmoid(bt_proj x + b); o = lmk_path_attention(q, k, v, w, beta,
 *   logf, 1/sqrt(D)); o_proj.
 * path-fox: logf = logsigmoid(g_proj x + b) (B,T,H), added to the logits
 *   unscaled (lib/path.h: fla scales it by 1/sqrt(D) too). */
typedef struct lmk_mixer_config {
	int kind;            /* lmk_mixer_kind */
	int64_t hidden;      /* C */
	int64_t heads;       /* H (query heads) */
	int64_t head_dim;    /* Dk (linear, gdn, path) or P (mamba2) */
	int64_t head_dim_v;  /* Dv (linear, gdn); ignored otherwise */
	int64_t state;       /* N (mamba2) */
	int64_t groups;      /* G (mamba2: B/C groups) or K (path: kv heads) */
	int64_t conv;        /* W of the short convolutions */
	int64_t levels;      /* NL (log-linear): sequences up to 2^(NL-1) tokens */
	int64_t w_rank;      /* path: rank of the low-rank w_proj */
	float norm_eps;      /* of the RMSNorms */
	int chunk;           /* the core op's chunk / block; 0: its default */
	float init_std;      /* linear weights ~ N(0, init_std) */
	int decay;           /* linear: the SimpleGLA scalar decay (0: none) */
	int neg_eig;         /* gdn, ll-gdn: beta in (0,2), transitions with
			      * eigenvalues down to -1 (Grazzi et al. 2024) */
} lmk_mixer_config;

/* The papers' layer at hidden size C (C a multiple of 64 gives whole
 * heads): mamba2 and ll-mamba2 P 64, H 2C/64, N 128, G 1, W 4; gdn and
 * ll-gdn fla's 0.75 C of key dims: Dk 128 (256 from C = 2048), H =
 * max(1, 0.75 C / Dk), Dv 2 Dk, W 4; linear H C/64, Dk Dv 64; path and
 * path-fox H C/64, D 64, K H, rank 32, W 3; NL 15 (fla: up to 16384
 * tokens); norm_eps 1e-5; init_std 0.02. */
void lmk_mixer_defaults(lmk_mixer_config *cfg, int kind, int64_t hidden);
/* "linear", "mamba2", "gdn", "ll-mamba2", "ll-gdn", "path", "path-fox".
 * @return : the kind, or LMK_EINVAL (message recorded) */
int lmk_mixer_kind_parse(const char *name);
/* @return : the name, or "?" */
const char *lmk_mixer_kind_name(int kind);
/* Sets one setting by its name, as --mixer NAME:KEY=VALUE and config.json's
 * "lmk_mixer" spell them: heads, head_dim, head_dim_v, state, groups, conv,
 * levels, w_rank, chunk, decay, neg_eig. @return : 0, or LMK_EINVAL (an
 * unknown key or a value out of range: message recorded) */
int lmk_mixer_config_set(lmk_mixer_config *cfg, const char *key, int64_t value);
/* @return : 0, LMK_EINVAL (a size out of range) or LMK_EUNSUP (PaTH in a
 * build without lib/path.h) */
int lmk_mixer_check(const lmk_mixer_config *cfg);

/* The number of parameters of one layer (closed form; equals the sum of
 * the sizes lmk_mixer_register adds). With d = d_inner = H P, kd = H Dk,
 * vd = H Dv, cd = d + 2 G N, kv = K D:
 *   linear    (2 kd + vd) C + Dv + C vd, with decay + H C + H
 *   mamba2    (2d + 2GN + H) C + cd (W + 1) + 3H + d + C d
 *   ll-mamba2 mamba2 + H NL C + H NL
 *   gdn       (2 kd + 2 vd + 2H) C + 2H + (2 kd + vd) W + Dv + C vd
 *   ll-gdn    gdn + H NL C + H NL
 *   path      H D C + 2 kv C + [K == H: r C + kv r; else kv C] + kv W +
 *             K C + K + C H D
 *   path-fox  path + H C + H
 * @return : the count, or < 0 for a bad config */
int64_t lmk_mixer_param_count(const lmk_mixer_config *cfg);

#define LMK_MIXER_MAXP 16

typedef struct lmk_mixer {
	lmk_mixer_config cfg;
	int np;                      /* parameters registered */
	int idx[LMK_MIXER_MAXP];     /* their indices in the lmk_params */
	lmk_tensor *w[LMK_MIXER_MAXP]; /* bound by lmk_mixer_bind */
	int role[LMK_MIXER_MAXP];    /* what each is (mixer.c) */
} lmk_mixer;

/* Checks cfg and adds the layer's parameters to p as "<prefix><name>"
 * (prefix may be "" or e.g. "model.layers.3.mixer."), in the order the
 * reference modules declare them. Conv weights are (channels, W): the
 * (channels, 1, W) of PyTorch's depthwise Conv1d with the 1 squeezed (the
 * same bytes). @return : 0 or < 0 (lmk_params_add's codes, config errors) */
int lmk_mixer_register(lmk_mixer *m, const lmk_mixer_config *cfg, lmk_params *p,
		       const char *prefix);
/* Points m at its tensors once p is allocated (lmk_params_alloc); still
 * valid after lmk_params_to_device. @return : 0 or LMK_EINVAL */
int lmk_mixer_bind(lmk_mixer *m, lmk_params *p);
/* Initialises the layer's parameters in host memory (after bind, before
 * lmk_params_to_device), reproducibly from seed:
 *   linear weights N(0, init_std) and biases 0 (fla's and HF's
 *   _init_weights); conv weights and biases U(-1/sqrt(W), 1/sqrt(W))
 *   (PyTorch's Conv1d default, kept by mamba_ssm); Mamba-2: A_log =
 *   log U[1,16], dt_bias = softplus⁻¹(dt) with dt = exp(U[log 0.001, log
 *   0.1]) floored at 1e-4, D = 1; GDN: A_log = log U[0,16] (fla), dt_bias
 *   as Mamba-2; norm weights 1; L = 1 (fla's LogLinearMamba2).
 * @return : 0, or LMK_EINVAL (not bound, or on a device already) */
int lmk_mixer_init_weights(lmk_mixer *m, uint64_t seed);

/* x (B,T,C) -> (B,T,C) in c's compute dtype. Log-linear kinds need T <=
 * 2^(NL-1). @return : NULL on failure (message recorded) */
lmk_tensor *lmk_mixer_forward(lmk_ctx *c, const lmk_mixer *m, lmk_tensor *x);

/* ---- decoding: one token at a time, with the layer's state ----
 * The short convolutions keep their last W-1 inputs; the core keeps its
 * recurrent state: one (Dk, Dv) matrix per head (linear, mamba2, gdn: O(1)
 * in the tokens), one per Fenwick level (ll-*: O(log T)), or PaTH's key
 * cache, whose keys each new token's transform moves (O(T)). */
typedef struct lmk_mixer_state {
	int kind;
	int64_t B, t;           /* rows; tokens stepped */
	lmk_device dev;
	int nconv;
	int64_t conv_w, conv_ch[3];
	void *conv[3];          /* (B, W-1, ch) in the compute dtype */
	int core;               /* the core state below is made */
	lmk_ssd_state ssd;      /* linear, mamba2, ll-mamba2 */
	lmk_gdn_state gdn;      /* gdn, ll-gdn */
	lmk_path_cache path;    /* path, path-fox */
} lmk_mixer_state;

/* A state at t = 0 for B rows on c's device, for up to max_t tokens (the
 * log-linear kinds need max_t <= 2^(NL-1); PaTH's cache holds max_t).
 * @return : 0, LMK_EINVAL, LMK_ENOMEM or LMK_EDEVICE */
int lmk_mixer_state_init(lmk_mixer_state *st, const lmk_mixer *m, lmk_ctx *c, int64_t B,
			 int64_t max_t);
void lmk_mixer_state_free(lmk_mixer_state *st);
/* One token for every row: x (B,1,C) -> (B,1,C), the forward's output at
 * position st->t of the sequence so far (up to rounding), and the state
 * moved on. Records nothing on the tape. @return : NULL on failure */
lmk_tensor *lmk_mixer_step(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x);

#endif
