/* optim_cuda.h: the CUDA side of lib/optim.c: fused AdamW over the single
 * parameter buffer (fp32 master weights and moments, refreshing the bf16
 * copy that ops read), and the global gradient norm and clipping.
 * Owns: nothing. Needs: the backend of cuda.h. Never: prints or exits.
 * @return (every launcher) : 0, or LMK_EDEVICE with a message */
#ifndef LMK_OPTIM_CUDA_H
#define LMK_OPTIM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor of the buffer: elements [off, off + n), with weight decay or
 * not. A table of them, sorted by off, lives on the device. */
typedef struct lmk_cuda_span {
	uint64_t off;
	int64_t n;
	int32_t decay;
	int32_t pad;
} lmk_cuda_span;

/* One AdamW step over every span on the gradient g * gscale (rounded to
 * float32, as a clipping pass would leave it; g itself is not written),
 * with the scalars lib/optim.c computes on the host (so that the arithmetic is the CPU's, operation for operation,
 * in float32 with no fused multiply-adds): w1 = 1 - beta1, om1 = 1 - w1,
 * w2 = 1 - beta2, keep = 1 - lr * weight_decay (applied where the span
 * decays and weight_decay != 0), neg_step = -lr / bias_correction1. When lp
 * is not NULL, lp[i] = bf16(p[i]) for every updated element. Elements
 * between spans (padding) are left alone. */
int lmk_cuda_adamw_step(void *be, float *p, const float *g, float *m, float *v,
			void *lp /*bf16 (n) or NULL*/, const lmk_cuda_span *spans /*device (nt)*/,
			int nt, size_t n, float gscale, float w1, float om1, int small_w, float w2,
			float b2,
			float eps, int decay, float keep, float neg_step, float bc2_sqrt);

/* The per-step numbers of a step that never waits (lib/train.c), in device
 * memory: the host's scalars of this step (written into pinned memory and
 * copied in on the stream, so that a step replayed as a CUDA graph reads
 * the values of its own launch), then what lmk_cuda_grad_norm_dev leaves
 * for the update and for the host to read once the step is over. */
typedef struct lmk_cuda_adamw_dev {
	float keep, neg_step, bc2_sqrt; /* as lmk_cuda_adamw_step's, from lr and t */
	float gscale;                   /* the clipping factor (1: no clipping) */
	int32_t skip;                   /* nonzero: the update changes nothing */
	int32_t pad;
	double norm;                    /* the gradient's global norm */
} lmk_cuda_adamw_dev;

/* lmk_cuda_adamw_step with keep, neg_step, bc2_sqrt and gscale read from s
 * (device memory) when the kernel runs; nothing at all is written when
 * s->skip is set. The same bits as lmk_cuda_adamw_step on the same values. */
int lmk_cuda_adamw_step_dev(void *be, float *p, const float *g, float *m, float *v, void *lp,
			    const lmk_cuda_span *spans, int nt, size_t n,
			    const lmk_cuda_adamw_dev *s /*device*/, float w1, float om1, int small_w,
			    float w2, float b2, float eps, int decay);

/* *norm = sqrt(sum of g[i]²) in double, in a fixed order (chunks of 65536
 * elements, then the chunks' partial sums): the same bits on every run.
 * Waits for the stream to hand the norm back. */
int lmk_cuda_grad_norm(void *be, double *norm, const float *g, size_t n);
/* The same norm into s->norm without waiting, and with it s->gscale, the
 * factor lib/optim.c's lmk_grad_norm computes on the host from max_norm
 * (the same double arithmetic: max_norm / (norm + 1e-6) when below 1 and
 * max_norm > 0, else 1), and s->skip: set when the norm or one of loss[0..
 * nloss) (device float32) is not finite, or a kernel has flagged a bad id
 * or target since the last sync (lmk_cuda_sync), as the host would stop
 * there before updating. */
int lmk_cuda_grad_norm_dev(void *be, lmk_cuda_adamw_dev *s /*device*/, const float *g, size_t n,
			   double max_norm, const float *loss /*device (nloss)*/, int nloss);
/* g *= c */
int lmk_cuda_grad_scale(void *be, float *g, size_t n, float c);

#ifdef __cplusplus
}
#endif
#endif
