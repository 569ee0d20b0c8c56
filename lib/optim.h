/* optim.h: AdamW over an lmk_params buffer, gradient clipping by global norm,
 * and learning-rate schedules.
 * Moments share the parameters' layout (one float32 buffer each), so a
 * checkpoint of the optimizer is two writes. Decoupled weight decay
 * (Loshchilov & Hutter) applies to matrices only, never to 1-d tensors
 * (norm weights and biases).
 * Owns: the moment buffers. Needs: tensor. Never: prints or exits. */
#ifndef LMK_OPTIM_H
#define LMK_OPTIM_H

#include <stdint.h>

#include "tensor.h"

typedef struct lmk_adamw_config {
	float beta1, beta2, eps, weight_decay;
} lmk_adamw_config;

typedef struct lmk_adamw {
	lmk_adamw_config cfg;
	lmk_params *p;
	float *m, *v;        /* same layout as p->data */
	uint8_t *decay;      /* per tensor of p: 1 if weight decay applies */
	int64_t t;           /* steps taken */
} lmk_adamw;

/* PyTorch's defaults: beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01. */
void lmk_adamw_config_default(lmk_adamw_config *cfg);
int lmk_adamw_init(lmk_adamw *o, lmk_params *p, const lmk_adamw_config *cfg);
/* One step with learning rate lr, as torch.optim.AdamW computes it. */
void lmk_adamw_step(lmk_adamw *o, float lr);
void lmk_adamw_free(lmk_adamw *o);

/* Global L2 norm of p's gradient (in double, before clipping); if max_norm
 * > 0 and the norm exceeds it, scales the gradient by max_norm / (norm +
 * 1e-6) as torch.nn.utils.clip_grad_norm_ does. @return : the norm */
double lmk_clip_grad_norm(lmk_params *p, double max_norm);

typedef enum { LMK_SCHED_CONSTANT, LMK_SCHED_COSINE, LMK_SCHED_LINEAR } lmk_sched_kind;
typedef struct lmk_schedule {
	lmk_sched_kind kind;
	float lr, min_lr;    /* peak and final learning rate */
	int64_t warmup, total;
} lmk_schedule;
/* Linear warm-up from lr/warmup to lr over warmup steps, then decay to
 * min_lr at total (cosine or linear) or stay (constant). step counts from 0. */
float lmk_schedule_lr(const lmk_schedule *s, int64_t step);
/* Parses "cosine", "linear" or "constant". @return : 0 or LMK_EINVAL */
int lmk_schedule_parse(const char *name, lmk_sched_kind *kind);

#endif
