/* optim.c: AdamW as torch.optim.AdamW computes it (single-tensor path, the
 * same arithmetic in float32 and in the same order), gradient clipping as
 * torch.nn.utils.clip_grad_norm_, and learning-rate schedules.
 * Every loop is elementwise or a reduction in double, split into fixed
 * chunks, so results do not depend on the number of threads. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "optim.h"
#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/optim_cuda.h"
#endif

void lmk_adamw_config_default(lmk_adamw_config *cfg)
{
	cfg->beta1 = 0.9f;
	cfg->beta2 = 0.999f;
	cfg->eps = 1e-8f;
	cfg->weight_decay = 0.01f;
}

static float *zalloc(size_t n)
{
	size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
	void *p = NULL;
	if (bytes == 0)
		bytes = 64;
	if (posix_memalign(&p, 64, bytes) != 0)
		return NULL;
	memset(p, 0, bytes);
	return p;
}

/* Moments on the device, zeroed, and the table of spans the fused kernel
 * looks each element's tensor up in. */
static int adamw_init_device(lmk_adamw *o)
{
#if LMK_CUDA
	const lmk_params *p = o->p;
	size_t bytes = (p->n ? p->n : 16) * sizeof(float);
	int nt = p->nt ? p->nt : 1;
	lmk_cuda_span *tab = calloc((size_t)nt, sizeof *tab);
	int rc = tab ? 0 : lmk_err(LMK_ENOMEM, "adamw: cannot allocate %d spans", nt);
	for (int i = 0; rc == 0 && i < p->nt; i++) {
		tab[i].off = p->offset[i];
		tab[i].n = p->t[i].n;
		tab[i].decay = o->decay[i];
	}
	if (rc == 0)
		rc = lmk_cuda_mem_alloc((void **)&o->m, bytes);
	if (rc == 0)
		rc = lmk_cuda_mem_alloc((void **)&o->v, bytes);
	if (rc == 0)
		rc = lmk_cuda_mem_alloc(&o->spans, (size_t)nt * sizeof *tab);
	if (rc == 0)
		rc = lmk_cuda_memset(p->backend, o->m, 0, bytes);
	if (rc == 0)
		rc = lmk_cuda_memset(p->backend, o->v, 0, bytes);
	if (rc == 0)
		rc = lmk_cuda_upload(p->backend, o->spans, tab, (size_t)nt * sizeof *tab);
	free(tab);
	if (rc < 0)
		lmk_adamw_free(o);
	return rc;
#else
	(void)o;
	return lmk_err(LMK_EUNSUP, "adamw: cuda parameters in a cpu-only build");
#endif
}

/* The step on the device, with the scalars of adamw_span computed here the
 * same way, so that the kernel repeats the CPU's float32 arithmetic. */
static void adamw_step_device(lmk_adamw *o, float lr, float gscale, float step_size,
			      float bc2_sqrt)
{
#if LMK_CUDA
	const lmk_params *p = o->p;
	const double b1 = o->cfg.beta1, wd = o->cfg.weight_decay;
	const float w1 = (float)(1.0 - b1), w2 = (float)(1.0 - (double)o->cfg.beta2);
	const float keep = (float)(1.0 - (double)lr * wd);
	lmk_cuda_adamw_step(p->backend, p->data, p->grad, o->m, o->v, p->lp, o->spans, p->nt, p->n,
			    gscale, w1, 1.0f - w1, 1.0 - b1 < 0.5, w2, o->cfg.beta2, o->cfg.eps,
			    wd != 0.0, keep, -step_size, bc2_sqrt);
#else
	(void)o;
	(void)lr;
	(void)gscale;
	(void)step_size;
	(void)bc2_sqrt;
#endif
}

int lmk_adamw_init(lmk_adamw *o, lmk_params *p, const lmk_adamw_config *cfg)
{
	memset(o, 0, sizeof *o);
	if (!p || !p->data || !p->grad)
		return lmk_err(LMK_EINVAL, "adamw: parameters are not allocated or not trainable");
	if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) ||
	    !(cfg->eps >= 0) || !(cfg->weight_decay >= 0))
		return lmk_err(LMK_EINVAL,
			       "adamw: expected 0 <= beta < 1, eps >= 0, weight_decay >= 0, found "
			       "betas (%g, %g), eps %g, weight_decay %g",
			       cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay);
	o->cfg = *cfg;
	o->p = p;
	o->dev = p->dev;
	o->decay = calloc(p->nt ? (size_t)p->nt : 1, 1);
	if (!o->decay) {
		lmk_adamw_free(o);
		return lmk_err(LMK_ENOMEM, "adamw: cannot allocate moments for %zu parameters", p->n);
	}
	/* Norm weights and biases are 1-d; decaying them toward 0 only hurts. */
	for (int i = 0; i < p->nt; i++)
		o->decay[i] = p->t[i].ndim >= 2;
	if (p->dev == LMK_DEV_CUDA)
		return adamw_init_device(o);
	o->m = zalloc(p->n);
	o->v = zalloc(p->n);
	if (!o->m || !o->v) {
		lmk_adamw_free(o);
		return lmk_err(LMK_ENOMEM, "adamw: cannot allocate moments for %zu parameters", p->n);
	}
	return 0;
}

void lmk_adamw_free(lmk_adamw *o)
{
#if LMK_CUDA
	if (o->dev == LMK_DEV_CUDA) {
		lmk_cuda_mem_free(o->m);
		lmk_cuda_mem_free(o->v);
		lmk_cuda_mem_free(o->spans);
		o->m = o->v = NULL;
		o->spans = NULL;
	}
#endif
	free(o->m);
	free(o->v);
	free(o->decay);
	o->m = o->v = NULL;
	o->decay = NULL;
}

int lmk_adamw_moments_to_host(const lmk_adamw *o, float *m, float *v)
{
	size_t bytes = o->p->n * sizeof(float);
#if LMK_CUDA
	if (o->dev == LMK_DEV_CUDA) {
		int rc = lmk_cuda_download(o->p->backend, m, o->m, bytes);
		return rc < 0 ? rc : lmk_cuda_download(o->p->backend, v, o->v, bytes);
	}
#endif
	memcpy(m, o->m, bytes);
	memcpy(v, o->v, bytes);
	return 0;
}

int lmk_adamw_moments_from_host(lmk_adamw *o, const float *m, const float *v)
{
	size_t bytes = o->p->n * sizeof(float);
#if LMK_CUDA
	if (o->dev == LMK_DEV_CUDA) {
		int rc = lmk_cuda_upload(o->p->backend, o->m, m, bytes);
		return rc < 0 ? rc : lmk_cuda_upload(o->p->backend, o->v, v, bytes);
	}
#endif
	memcpy(o->m, m, bytes);
	memcpy(o->v, v, bytes);
	return 0;
}

/* One tensor's update, n elements from offset off. The scalars are
 * computed in double and rounded to float once, as torch passes Python
 * floats to its float32 kernels. */
static void adamw_span(const lmk_adamw *o, size_t off, int64_t n, double lr, double wd,
		       float step_size, float bc2_sqrt)
{
	const double b1 = o->cfg.beta1;
	const float w1 = (float)(1.0 - b1), w2 = (float)(1.0 - (double)o->cfg.beta2);
	const float b2 = o->cfg.beta2, eps = o->cfg.eps;
	const float keep = (float)(1.0 - lr * wd), neg_step = -step_size;
	const int small_w = 1.0 - b1 < 0.5;
	float *p = o->p->data + off, *g = o->p->grad + off;
	float *m = o->m + off, *v = o->v + off;

	#pragma omp parallel for schedule(static) if (n > 65536)
	for (int64_t i = 0; i < n; i++) {
		float gi = g[i];
		if (wd != 0.0)
			p[i] *= keep;
		/* exp_avg.lerp_(grad, 1 - beta1), in torch's two forms */
		if (small_w)
			m[i] = m[i] + w1 * (gi - m[i]);
		else
			m[i] = gi - (gi - m[i]) * (1.0f - w1);
		/* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) */
		v[i] = v[i] * b2 + w2 * (gi * gi);
		float denom = sqrtf(v[i]) / bc2_sqrt + eps;
		p[i] = p[i] + neg_step * (m[i] / denom);
	}
}

/* g *= c over p's whole gradient (the CPU's clipping pass) */
static void grad_scale_host(lmk_params *p, float c)
{
	const size_t n = p->n;
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t i = 0; i < n; i++)
		p->grad[i] *= c;
}

void lmk_adamw_step(lmk_adamw *o, float lr)
{
	lmk_adamw_step_scaled(o, lr, 1.0f);
}

/* Counts a step and gives its scalars: torch computes the corrections in
 * Python floats (double), then passes step_size and
 * bias_correction2_sqrt to float32 kernels. */
static void step_scalars(lmk_adamw *o, float lr, float *step_size, float *bc2_sqrt)
{
	o->t++;
	double bc1 = 1.0 - pow((double)o->cfg.beta1, (double)o->t);
	double bc2 = 1.0 - pow((double)o->cfg.beta2, (double)o->t);
	*step_size = (float)((double)lr / bc1);
	*bc2_sqrt = (float)sqrt(bc2);
}

void lmk_adamw_step_scaled(lmk_adamw *o, float lr, float gscale)
{
	float step_size, bc2_sqrt;
	/* the CPU scales first (the bits of clipping, then a step) */
	if (o->dev != LMK_DEV_CUDA && gscale != 1.0f)
		grad_scale_host(o->p, gscale);
	step_scalars(o, lr, &step_size, &bc2_sqrt);
	if (o->dev == LMK_DEV_CUDA) {
		adamw_step_device(o, lr, gscale, step_size, bc2_sqrt);
		return;
	}
	for (int i = 0; i < o->p->nt; i++) {
		double wd = o->decay[i] ? (double)o->cfg.weight_decay : 0.0;
		adamw_span(o, o->p->offset[i], o->p->t[i].n, lr, wd, step_size, bc2_sqrt);
	}
}

#if LMK_CUDA
_Static_assert(sizeof(lmk_cuda_adamw_dev) <= LMK_ADAMW_DEV_BYTES, "lmk_adamw_dev's size");
#endif

void lmk_adamw_stage(lmk_adamw *o, float lr, void *h)
{
	float step_size, bc2_sqrt;
	step_scalars(o, lr, &step_size, &bc2_sqrt);
#if LMK_CUDA
	/* adamw_step_device's scalars, the same way */
	lmk_cuda_adamw_dev *s = h;
	s->keep = (float)(1.0 - (double)lr * (double)o->cfg.weight_decay);
	s->neg_step = -step_size;
	s->bc2_sqrt = bc2_sqrt;
#else
	(void)h;
#endif
}

int lmk_adamw_queue(lmk_adamw *o, void *d, const void *h)
{
	if (o->dev != LMK_DEV_CUDA)
		return lmk_err(LMK_EINVAL, "adamw: a step from device memory needs cuda parameters");
#if LMK_CUDA
	const lmk_params *p = o->p;
	const double b1 = o->cfg.beta1, wd = o->cfg.weight_decay;
	const float w1 = (float)(1.0 - b1), w2 = (float)(1.0 - (double)o->cfg.beta2);
	int rc = lmk_cuda_upload(p->backend, d, h, offsetof(lmk_cuda_adamw_dev, gscale));
	if (rc < 0)
		return rc;
	return lmk_cuda_adamw_step_dev(p->backend, p->data, p->grad, o->m, o->v, p->lp, o->spans, p->nt,
				       p->n, d, w1, 1.0f - w1, 1.0 - b1 < 0.5, w2, o->cfg.beta2,
				       o->cfg.eps, wd != 0.0);
#else
	(void)d, (void)h;
	return 0;
#endif
}

int lmk_grad_norm_dev(lmk_params *p, double max_norm, void *d, const float *loss, int nloss)
{
	if (p->dev != LMK_DEV_CUDA || !p->grad)
		return lmk_err(LMK_EINVAL, "grad norm: expected trainable cuda parameters");
#if LMK_CUDA
	return lmk_cuda_grad_norm_dev(p->backend, d, p->grad, p->n, max_norm, loss, nloss);
#else
	(void)max_norm, (void)d, (void)loss, (void)nloss;
	return 0;
#endif
}

void lmk_adamw_dev_read(const void *h, double *norm, int *skip)
{
#if LMK_CUDA
	const lmk_cuda_adamw_dev *s = h;
	*norm = s->norm;
	*skip = s->skip != 0;
#else
	(void)h;
	*norm = NAN;
	*skip = 1;
#endif
}

double lmk_clip_grad_norm(lmk_params *p, double max_norm)
{
	float c;
	double norm = lmk_grad_norm(p, max_norm, &c);
	if (c == 1.0f || isnan(norm))
		return norm;
#if LMK_CUDA
	if (p->dev == LMK_DEV_CUDA)
		return lmk_cuda_grad_scale(p->backend, p->grad, p->n, c) < 0 ? NAN : norm;
#endif
	grad_scale_host(p, c);
	return norm;
}

/* sqrt of the sum of g² over p's gradient, in double and a fixed order */
static double norm_of(lmk_params *p)
{
#if LMK_CUDA
	if (p->dev == LMK_DEV_CUDA) {
		double norm;
		return lmk_cuda_grad_norm(p->backend, &norm, p->grad, p->n) < 0 ? NAN : norm;
	}
#endif
	const size_t n = p->n, chunk = 1 << 16;
	const size_t nchunk = (n + chunk - 1) / chunk;
	double total = 0.0;
	/* Fixed chunks summed in order: the same bits for any thread count.
	 * The partial sums of up to GROUP chunks at a time live on the stack,
	 * so that a training step allocates nothing here. */
	enum { GROUP = 256 };
	double part[GROUP];
	for (size_t g = 0; g < nchunk; g += GROUP) {
		size_t ng = nchunk - g < GROUP ? nchunk - g : GROUP;
		#pragma omp parallel for schedule(static)
		for (size_t c = 0; c < ng; c++) {
			size_t lo = (g + c) * chunk, hi = lo + chunk < n ? lo + chunk : n;
			double s = 0.0;
			for (size_t i = lo; i < hi; i++)
				s += (double)p->grad[i] * p->grad[i];
			part[c] = s;
		}
		for (size_t c = 0; c < ng; c++)
			total += part[c];
	}
	return sqrt(total);
}

double lmk_grad_norm(lmk_params *p, double max_norm, float *coef)
{
	*coef = 1.0f;
	if (!p->grad || p->n == 0)
		return 0.0;
	double norm = norm_of(p);
	if (max_norm > 0) {
		/* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1,
		 * and multiplies in float32 */
		double c = max_norm / (norm + 1e-6);
		if (c < 1.0)
			*coef = (float)c;
	}
	return norm;
}

float lmk_schedule_lr(const lmk_schedule *s, int64_t step)
{
	if (step < 0)
		step = 0;
	if (s->warmup > 0 && step < s->warmup)
		return s->lr * (float)(step + 1) / (float)s->warmup;
	if (s->kind == LMK_SCHED_CONSTANT)
		return s->lr;
	if (step >= s->total || s->total <= s->warmup)
		return s->min_lr;
	double progress = (double)(step - s->warmup) / (double)(s->total - s->warmup);
	double range = (double)s->lr - s->min_lr;
	if (s->kind == LMK_SCHED_COSINE)
		return (float)(s->min_lr + 0.5 * range * (1.0 + cos(M_PI * progress)));
	return (float)(s->lr - range * progress);
}

int lmk_schedule_parse(const char *name, lmk_sched_kind *kind)
{
	static const struct { const char *name; lmk_sched_kind kind; } tab[] = {
		{"cosine", LMK_SCHED_COSINE},
		{"linear", LMK_SCHED_LINEAR},
		{"constant", LMK_SCHED_CONSTANT},
	};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (name && strcmp(name, tab[i].name) == 0) {
			*kind = tab[i].kind;
			return 0;
		}
	return lmk_err(LMK_EINVAL, "unknown schedule '%s' (expected cosine, linear or constant)",
		       name ? name : "");
}
