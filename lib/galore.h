/* galore.h: GaLore (Zhao et al. 2024): Adam on the gradient of a weight W
 * (O,I) projected to rank r, mapped back and applied with a scale factor,
 * with the projector refreshed every T steps; and the projectors it shares
 * with one-sided LoRA (lib/lora.h): the top-r singular vectors of a
 * gradient (LAPACK's sgesvd), a randomized range finder, or a Gaussian or
 * Rademacher sketch.
 * Sides follow GaLore's code: with O >= I the gradient G is projected on
 * the right, R = G Q^T with Q (r,I), and the update is N Q; otherwise on
 * the left, R = P^T G with P (O,r), and the update is P N; N is Adam's
 * direction m_hat / (sqrt(v_hat) + eps) over R, with the arithmetic of
 * lmk_adamw_step. The weight then moves by -lr * scale * (update), and
 * decays by lr * weight_decay as AdamW (matrices only). Weights that are
 * not targets (embeddings, norms, the output head) get plain AdamW.
 * A refresh keeps the moments (the official code does too), so that a
 * GaLore run is one-sided LoRA with merge and re-initialisation at the
 * same steps, the moments carried over.
 * Owns: the projectors and every moment (O*r or r*I per target, the
 * tensor's size for the others). Needs:
 * tensor, optim, rng, OpenBLAS/LAPACK, and in a CUDA build cuda/ (cuBLAS,
 * and cuSOLVER when it can be loaded: cuda/svd.cu). Never: prints or exits. */
#ifndef LMK_GALORE_H
#define LMK_GALORE_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "optim.h"
#include "rng.h"
#include "tensor.h"

enum { LMK_PROJ_SVD, LMK_PROJ_RSVD, LMK_PROJ_GAUSSIAN, LMK_PROJ_RADEMACHER };

/* "svd", "rsvd", "random" (Gaussian), "gaussian", "rademacher".
 * @return : 0 or LMK_EINVAL */
int lmk_proj_parse(const char *s, int *proj);
const char *lmk_proj_name(int proj);
/* Whether proj needs a gradient (svd, rsvd) or only random numbers. */
int lmk_proj_needs_grad(int proj);

/* A projector for a gradient G (O,I) on side left (P (O,r): the first r
 * left singular vectors, columns orthonormal) or right (Q (r,I): the first
 * r right singular vectors, rows orthonormal). A sketch has entries of
 * variance 1/n (n = O left, I right) so that P^T P ~ I like the SVD's.
 * rsvd: the range of G Omega (Omega (I, r + 8) Gaussian), QR, then the SVD
 * of the small matrix. G may be NULL for a sketch; rng gives its numbers.
 * r must be <= min(O, I) for svd and rsvd.
 * @return : 0, LMK_EINVAL, LMK_ENOMEM or LMK_ENUM (LAPACK failed) */
int lmk_proj_make(float *out, int left, const float *G /*(O,I) or NULL*/, int64_t O,
		  int64_t cols, int r, int proj, lmk_rng *rng);

/* GaLore's side for a weight (O,I): 1 left, 0 right. */
static inline int lmk_galore_left(int64_t rows, int64_t cols) { return rows < cols; }

typedef struct lmk_galore_config {
	int rank;            /* r (paper: 128 for 60M-350M models, 256-512 larger) */
	int every;           /* T: refresh every T steps (paper: 200); 0: never
			      * after the first */
	int proj;            /* LMK_PROJ_* */
	float scale;         /* alpha (paper: 0.25) */
	char targets[256];   /* as lmk_lora_config.targets (paper: attention
			      * and MLP: q,k,v,o,gate,up,down) */
	int nlayer_r;        /* per-layer ranks: the first pattern (a target
			      * spelling, as targets) that matches a module
			      * gives its rank instead of rank */
	char layer_pat[8][64];
	int layer_r[8];
} lmk_galore_config;

void lmk_galore_config_default(lmk_galore_config *cfg);
/* Parses "galore:r=128,every=200,proj=svd,scale=0.25,targets=q,k,v,o,gate,up,down",
 * with up to 8 per-layer ranks "layer_r=PATTERN/R" (e.g. layer_r=down/64,
 * layer_r=model.layers.0.*\/256).
 * @return : 0 or LMK_EINVAL naming the item */
int lmk_galore_config_parse(lmk_galore_config *cfg, const char *spec);
void lmk_galore_config_str(const lmk_galore_config *cfg, char *buf, size_t size);

/* One tensor of p: a target (projected) or a plain one (AdamW). */
typedef struct lmk_galore_slot {
	int mode;            /* -1 plain, 0 right, 1 left */
	int64_t rows, cols;        /* a target's shape */
	int r;               /* min(rank, O, I) */
	float *P;            /* (O,r) left, (r,I) right; NULL for plain */
	float *m, *v;        /* moments: (r,I) left, (O,r) right, or the
			      * tensor's own size for plain */
	size_t nm;           /* elements of m (and of v) */
} lmk_galore_slot;

typedef struct lmk_galore {
	lmk_galore_config cfg;
	lmk_adamw_config acfg;
	lmk_params *p;
	lmk_galore_slot *slots; /* one per tensor of p */
	int nslots;
	int ntarget;
	lmk_rng rng;         /* sketches and rsvd */
	int64_t t;           /* steps taken */
	int fixed;           /* projectors were given: never refresh */
	float *work;         /* host scratch */
	size_t nwork;
	float *dwork;        /* CUDA: device scratch */
	size_t ndwork;
	lmk_device dev;      /* where P, m, v live: p's at init */
	int svd_where;       /* CUDA, proj svd: 0 not yet, 1 LAPACK on the host
			      * (no cuSOLVER), 2 cuSOLVER on the device */
	void *backend;       /* CUDA: p's backend */
} lmk_galore;

/* GaLore over p (trainable; on the host or already on a device) with AdamW
 * settings acfg for the moments and the plain tensors. The first step
 * makes the projectors from its gradients.
 * @return : 0, LMK_EINVAL (no target, a bad rank) or LMK_ENOMEM */
int lmk_galore_init(lmk_galore *g, lmk_params *p, const lmk_adamw_config *acfg,
		    const lmk_galore_config *cfg, uint64_t seed);
void lmk_galore_free(lmk_galore *g);
/* Sets the projector of p's tensor i (a target) from P (host, its shape) and keeps every
 * projector fixed from then on (tests of the duality with one-sided LoRA).
 * @return : 0 or a negative code */
int lmk_galore_set_projector(lmk_galore *g, int i, const float *P);
/* One step at learning rate lr over p's gradients: refresh the projectors
 * when t % every == 0 (and at the first step), then the projected Adam
 * update of the targets and AdamW for the others.
 * @return : 0 or a negative code */
int lmk_galore_step(lmk_galore *g, float lr);

/* Bytes of optimizer state: moments and projectors (and the plain
 * tensors' moments). */
size_t lmk_galore_state_bytes(const lmk_galore *g);

/* The optimizer's state into a frame (copied: "galore.t", "galore.rng",
 * and per tensor of p "galore.m/NAME", "galore.v/NAME", for targets
 * "galore.P/NAME"), and back from one made by the same settings over the
 * same parameters. @return : 0 or a negative code naming path */
int lmk_galore_to_frame(const lmk_galore *g, lmk_frame *f);
int lmk_galore_from_frame(lmk_galore *g, const lmk_frame *st, const char *path);

#endif
