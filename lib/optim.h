/* optim.h: AdamW over an lmk_params buffer, gradient clipping by global norm,
 * and learning-rate schedules.
 * Moments share the parameters' layout (one float32 buffer each), so a
 * checkpoint of the optimizer is two writes. Decoupled weight decay
 * (Loshchilov & Hutter) applies to matrices only, never to 1-d tensors
 * (norm weights and biases).
 * Parameters on CUDA (lmk_params_to_device) keep their moments on the device
 * too, and one fused kernel updates the fp32 master weights, the moments and
 * the bf16 copy (cuda/optim_cuda.h), with the CPU's arithmetic.
 * Owns: the moment buffers. Needs: tensor, and in a CUDA build cuda/.
 * Never: prints or exits. */
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
	lmk_device dev;      /* where m and v live: p's device at init */
	void *spans;         /* CUDA: the tensors' spans, on the device */
} lmk_adamw;

/* PyTorch's defaults: beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01. */
void lmk_adamw_config_default(lmk_adamw_config *cfg);
int lmk_adamw_init(lmk_adamw *o, lmk_params *p, const lmk_adamw_config *cfg);
/* One step with learning rate lr, as torch.optim.AdamW computes it. On CUDA
 * it is queued on the parameters' stream; a launch failure is recorded
 * (lmk_errcode) and the next sync fails too. */
void lmk_adamw_step(lmk_adamw *o, float lr);
/* The same on the gradient times gscale (lmk_grad_norm's coef), the bits
 * of scaling it first (lmk_clip_grad_norm) then stepping, without a pass of
 * its own on CUDA; the gradient itself is left unscaled there (on the CPU
 * it is scaled in place, as by clipping). */
void lmk_adamw_step_scaled(lmk_adamw *o, float lr, float gscale);
/* A step on CUDA parameters that never waits for the device (lib/train.c),
 * so that it can be recorded as a CUDA graph and replayed: d is device
 * memory and h pinned host memory, LMK_ADAMW_DEV_BYTES each.
 * lmk_grad_norm_dev (below) leaves the norm, the clipping factor and a
 * skip flag in d; lmk_adamw_stage counts the step (t) and writes its
 * scalars for lr into h; lmk_adamw_queue queues their copy from h into d
 * (a replay copies what h holds at its launch) and the update, which
 * reads them and the factor from d and changes nothing when the skip flag
 * is set. Together the bits of lmk_grad_norm then lmk_adamw_step_scaled.
 * @return (queue) : 0 or < 0 */
#define LMK_ADAMW_DEV_BYTES 32
void lmk_adamw_stage(lmk_adamw *o, float lr, void *h);
int lmk_adamw_queue(lmk_adamw *o, void *d, const void *h);
void lmk_adamw_free(lmk_adamw *o);
/* The moments (p->n float32 each) to and from host memory, for
 * checkpoints, on either device. @return : 0 or < 0 */
int lmk_adamw_moments_to_host(const lmk_adamw *o, float *m, float *v);
int lmk_adamw_moments_from_host(lmk_adamw *o, const float *m, const float *v);

/* Global L2 norm of p's gradient (in double, before clipping); if max_norm
 * > 0 and the norm exceeds it, scales the gradient by max_norm / (norm +
 * 1e-6) as torch.nn.utils.clip_grad_norm_ does. On CUDA a deterministic
 * two-pass reduction, and the call waits for the norm.
 * @return : the norm (NaN with an error recorded if the device failed) */
double lmk_clip_grad_norm(lmk_params *p, double max_norm);
/* The norm alone, and in *coef the factor clipping would scale the
 * gradient by (1 when it would not), for lmk_adamw_step_scaled. */
double lmk_grad_norm(lmk_params *p, double max_norm, float *coef);
/* lmk_grad_norm for CUDA parameters, queued without waiting: the norm
 * and the factor go to d (lmk_adamw_queue's), with the skip flag set when
 * the norm or one of loss[0..nloss) (float32 on the device) is not finite
 * or a kernel flagged a bad id or target since the last sync. Read d once
 * it is in host memory with lmk_adamw_dev_read. @return : 0 or < 0 */
int lmk_grad_norm_dev(lmk_params *p, double max_norm, void *d, const float *loss, int nloss);
void lmk_adamw_dev_read(const void *h, double *norm, int *skip);

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
