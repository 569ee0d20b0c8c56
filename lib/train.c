/* train.c: the shared training loop (see train.h). Shape letters: B windows
 * of a micro-batch, T tokens a window predicts, W ranks of a data-parallel
 * group. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "err.h"
#include "galore.h"
#include "train.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/decode_cuda.h"
#include "../cuda/nccl_dp.h"
#endif

#define NCCL_ID_BYTES 128
#if LMK_CUDA
_Static_assert(NCCL_ID_BYTES == LMK_NCCL_ID_BYTES, "the NCCL id's size");
#endif

/* What a data-parallel rank adds to the trainer. */
struct lmk_train_dp {
	lmk_dist d;
	int32_t *gx, *gy;    /* (W*B,T) the group's micro-batch; x, y: rows
			      * rank*B .. rank*B+B-1 of it */
	int nb;              /* gradient buckets (lmk_dist_buckets) */
	int *first;          /* (nt) bucket k's first tensor */
	int *bucket_of;      /* (nt) each tensor's bucket */
	int *ready;          /* (nb) the tape node after whose backward the
			      * bucket's gradients are complete */
	int signal;          /* the signal the ranks agreed on */
#if LMK_CUDA
	lmk_nccl *comm;
#endif
};

/* What a step on one GPU with AdamW adds (step_device): the step queues
 * everything and waits once, at its end, for one small download; after a
 * first step run eagerly it is recorded as a CUDA graph and replayed. */
struct lmk_train_dev {
	int32_t *x, *y;      /* (A,B,T) pinned: the step's micro-batches;
			      * tr->x, tr->y are the first */
	char *d;             /* device: lmk_cuda_adamw_dev (LMK_ADAMW_DEV_BYTES),
			      * the A losses (float32), the backward's seed 1/A */
	void *hin, *hout;    /* pinned: the scalars staged for the update; the
			      * first part of d, copied back at the step's end */
	void *graph;         /* the recorded step, or NULL */
	int warm;            /* a step has run: its launches are fixed */
	const void *base;    /* the graph's arena chunk and scratch */
	size_t reserved, scratch_bytes;
	void *scratch;
};

/* OpenBLAS's own thread count (its pthreads build ignores OpenMP's). */
void openblas_set_num_threads(int n);

#define IGNORE_TARGET (-1)

void lmk_train_config_default(lmk_train_config *c)
{
	memset(c, 0, sizeof *c);
	c->batch = 16;
	c->seq = 128;
	c->accum = 1;
	c->steps = 1000;
	c->decay_steps = 0;
	c->lr = 1e-3f;
	c->min_lr = 1e-4f;
	c->warmup = 100;
	c->schedule = LMK_SCHED_COSINE;
	c->weight_decay = 0.1f;
	c->beta1 = 0.9f;
	c->beta2 = 0.95f;
	c->eps = 1e-8f;
	c->grad_clip = 1.0f;
	snprintf(c->optim, sizeof c->optim, "adamw");
	c->eval_every = 100;
	c->eval_batches = 20;
	c->save_every = 500;
	c->seed = 1337;
	c->val_frac = 0.1;
	c->threads = 0;
	c->device = LMK_DEV_CPU;
	c->device_index = 0;
	c->dtype = LMK_F32;
	c->cuda_graph = 1;
}

int lmk_train_config_check(const lmk_train_config *c)
{
	if (c->batch < 1 || c->seq < 1 || c->accum < 1)
		return lmk_err(LMK_EINVAL, "batch %d, seq %d, accum %d: expected each at least 1",
			       c->batch, c->seq, c->accum);
	if ((int64_t)c->batch * c->seq > INT32_MAX)
		return lmk_err(LMK_EINVAL, "batch %d times seq %d is too large", c->batch, c->seq);
	if (c->steps < 0 || c->decay_steps < 0 || c->warmup < 0 || c->eval_every < 0 ||
	    c->save_every < 0 || c->eval_batches < 1)
		return lmk_err(LMK_EINVAL, "negative step count or eval_batches below 1");
	if (!(c->lr >= 0) || !(c->min_lr >= 0) || !isfinite(c->lr) || !isfinite(c->min_lr))
		return lmk_err(LMK_EINVAL, "learning rates %g and %g: expected finite and >= 0",
			       c->lr, c->min_lr);
	if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
		return lmk_err(LMK_EINVAL, "betas (%g, %g): expected each in [0, 1)", c->beta1, c->beta2);
	if (!(c->weight_decay >= 0) || !(c->eps >= 0) || !(c->grad_clip >= 0))
		return lmk_err(LMK_EINVAL, "weight_decay, eps and grad_clip must be >= 0");
	lmk_galore_config gc;
	lmk_galore_config_default(&gc);
	if (lmk_galore_config_parse(&gc, c->optim) < 0)
		return lmk_errcode();
	if (!(c->val_frac >= 0 && c->val_frac < 1))
		return lmk_err(LMK_EINVAL, "val_frac %g: expected a number in [0, 1)", c->val_frac);
	if (c->device != LMK_DEV_CPU && c->device != LMK_DEV_CUDA)
		return lmk_err(LMK_EINVAL, "device %d: expected the cpu or cuda", (int)c->device);
	if (c->device_index < 0)
		return lmk_err(LMK_EINVAL, "device index %d: expected >= 0", c->device_index);
	if (c->dtype != LMK_F32 && !(c->dtype == LMK_BF16 && c->device == LMK_DEV_CUDA))
		return lmk_err(LMK_EINVAL, "dtype %s: expected f32, or bf16 on cuda",
			       lmk_dtype_name(c->dtype));
	return 0;
}

int lmk_train_parse_device(const char *s, lmk_device *dev, int *index)
{
	char *end;
	long i;

	if (strcmp(s, "cpu") == 0) {
		*dev = LMK_DEV_CPU;
		*index = 0;
		return 0;
	}
	if (strncmp(s, "cuda", 4) != 0 || (s[4] && s[4] != ':'))
		return lmk_err(LMK_EINVAL, "device '%s': expected cpu, cuda or cuda:N", s);
	i = 0;
	if (s[4] == ':') {
		errno = 0;
		i = strtol(s + 5, &end, 10);
		if (errno || end == s + 5 || *end || i < 0 || i > 1023)
			return lmk_err(LMK_EINVAL, "device '%s': expected cuda:N with N from 0 to 1023", s);
	}
	*dev = LMK_DEV_CUDA;
	*index = (int)i;
	return 0;
}

int lmk_train_parse_dtype(const char *s, lmk_dtype *dt)
{
	if (strcmp(s, "f32") == 0)
		*dt = LMK_F32;
	else if (strcmp(s, "bf16") == 0)
		*dt = LMK_BF16;
	else
		return lmk_err(LMK_EINVAL, "dtype '%s': expected f32 or bf16", s);
	return 0;
}

lmk_dtype lmk_train_default_dtype(lmk_device dev)
{
	return dev == LMK_DEV_CUDA ? LMK_BF16 : LMK_F32;
}

int lmk_train_device_count(void)
{
#if LMK_CUDA
	return lmk_cuda_device_count();
#else
	return 0;
#endif
}

int lmk_train_device_check(lmk_device dev, int index)
{
	if (dev == LMK_DEV_CPU)
		return 0;
#if LMK_CUDA
	int n = lmk_cuda_device_count();
	if (n == 0)
		return lmk_err(LMK_EDEVICE, "cuda: no CUDA device on this machine");
	if (index >= n)
		return lmk_err(LMK_EDEVICE, "cuda: no device %d (this machine has %d)", index, n);
	return 0;
#else
	(void)index;
	return lmk_err(LMK_EUNSUP, "cuda: this build has no CUDA support (build with make CUDA=1)");
#endif
}

uint64_t lmk_train_subseed(uint64_t seed, int stream)
{
	uint32_t o[4];
	lmk_philox(seed, (1ull << 63) + (uint64_t)stream, o);
	return (uint64_t)o[0] << 32 | o[1];
}

int lmk_train_set_threads(int n)
{
	if (n <= 0)
		n = omp_get_num_procs();
	omp_set_num_threads(n);
	openblas_set_num_threads(n);
	return n;
}

/* ---- data parallel: the parts that need NCCL ---- */

static int dp_get_id(void *id)
{
#if LMK_CUDA
	return lmk_nccl_get_id(id);
#else
	(void)id;
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support (NCCL); build with "
		       "make CUDA=1");
#endif
}

static int dp_join(struct lmk_train_dp *dp, lmk_ctx *c, const void *id)
{
#if LMK_CUDA
	return lmk_nccl_init(&dp->comm, c->backend, id, dp->d.rank, dp->d.world);
#else
	(void)dp, (void)c, (void)id;
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support");
#endif
}

/* Queues the mean over the ranks of buf[0..n) behind what is queued. */
static int dp_reduce_async(struct lmk_train_dp *dp, float *buf, size_t n)
{
#if LMK_CUDA
	return lmk_nccl_allreduce_avg_async(dp->comm, buf, n);
#else
	(void)dp, (void)buf, (void)n;
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support");
#endif
}

/* The context's stream waits for the all-reduces queued. */
static int dp_wait(struct lmk_train_dp *dp)
{
#if LMK_CUDA
	return lmk_nccl_wait(dp->comm);
#else
	(void)dp;
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support");
#endif
}

/* v := the sum (max) over the ranks, on every rank; waits. */
static int dp_host(struct lmk_train_dp *dp, double *v, int n, int max)
{
#if LMK_CUDA
	return lmk_nccl_allreduce_host(dp->comm, v, n, max ? LMK_NCCL_MAX : LMK_NCCL_SUM);
#else
	(void)dp, (void)v, (void)n, (void)max;
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support");
#endif
}

static void dp_free(struct lmk_train_dp *dp)
{
	if (!dp)
		return;
#if LMK_CUDA
	lmk_nccl_free(dp->comm);
#endif
	free(dp->gx);
	free(dp->gy);
	free(dp->first);
	free(dp->bucket_of);
	free(dp->ready);
	free(dp);
}

/* What every rank must share for their steps to be one run's: the options
 * (not the device index or the threads, which are each rank's own), the
 * data and the initial weights (p on the host). */
static uint64_t run_fingerprint(const lmk_train_config *c, const lmk_tokdata *d, const lmk_params *p)
{
	char buf[512];
	uint64_t h = LMK_DIST_HASH_INIT;
	int k;

	k = snprintf(buf, sizeof buf,
		     "%d %d %d %lld %lld %.9g %.9g %lld %d %.9g %.9g %.9g %.9g %.9g %lld %d %lld %llu "
		     "%.17g %d %d | %lld %lld %d %llx | %zu %d",
		     c->batch, c->seq, c->accum, (long long)c->steps, (long long)c->decay_steps, c->lr,
		     c->min_lr, (long long)c->warmup, (int)c->schedule, c->weight_decay, c->beta1, c->beta2,
		     c->eps, c->grad_clip, (long long)c->eval_every, c->eval_batches,
		     (long long)c->save_every, (unsigned long long)c->seed, c->val_frac, (int)c->device,
		     (int)c->dtype, (long long)d->n, (long long)d->ntrain, d->vocab,
		     (unsigned long long)d->hash, p->n, p->nt);
	h = lmk_dist_hash(h, buf, (size_t)k < sizeof buf ? (size_t)k : sizeof buf);
	h = lmk_dist_hash(h, c->optim, strlen(c->optim));
	for (int i = 0; i < p->nt; i++)
		h = lmk_dist_hash(h, p->t[i].name, strlen(p->t[i].name));
	/* the weights a word at a time: FNV's bytewise loop is slow for
	 * hundreds of megabytes */
	const uint32_t *w = (const uint32_t *)p->data;
	for (size_t i = 0; i < p->n; i++)
		h = (h ^ w[i]) * 0x100000001b3ull;
	return h;
}

/* Checks, the rendezvous (on the host: a rank that does not come is found
 * before any GPU work), and the group's batch buffers. id receives rank
 * 0's NCCL id. */
static int dp_begin(lmk_trainer *tr, const lmk_dist *dist, void *id)
{
	const lmk_train_config *c = &tr->cfg;
	struct lmk_train_dp *dp;
	size_t gbt;
	int rc;

#if !LMK_CUDA
	return lmk_err(LMK_EUNSUP, "data parallel: this build has no CUDA support (NCCL); build with "
		       "make CUDA=1");
#endif
	if (c->device != LMK_DEV_CUDA)
		return lmk_err(LMK_EINVAL, "data parallel: every rank trains on a GPU (device cuda)");
	if (dist->world < 1 || dist->rank < 0 || dist->rank >= dist->world)
		return lmk_err(LMK_EINVAL, "data parallel: rank %d of %d", dist->rank, dist->world);
	if ((int64_t)dist->world * c->batch * c->seq > INT32_MAX)
		return lmk_err(LMK_EINVAL, "data parallel: %d ranks of batch %d times seq %d is too large",
			       dist->world, c->batch, c->seq);
	if (!(dp = calloc(1, sizeof *dp)))
		return lmk_err(LMK_ENOMEM, "out of memory");
	tr->dp = dp;
	dp->d = *dist;
	gbt = (size_t)dist->world * (size_t)c->batch * (size_t)c->seq;
	dp->gx = malloc(gbt * sizeof *dp->gx);
	dp->gy = malloc(gbt * sizeof *dp->gy);
	if (!dp->gx || !dp->gy)
		return lmk_err(LMK_ENOMEM, "out of memory for a batch of %zu tokens", gbt);
	tr->x = dp->gx + (size_t)dist->rank * (size_t)c->batch * (size_t)c->seq;
	tr->y = dp->gy + (size_t)dist->rank * (size_t)c->batch * (size_t)c->seq;
	memset(id, 0, NCCL_ID_BYTES);
	if (dist->rank == 0 && (rc = dp_get_id(id)) < 0)
		return rc;
	return lmk_dist_rendezvous(dist, id, NCCL_ID_BYTES,
				   run_fingerprint(c, tr->data, tr->params));
}

/* The buckets over the parameters' layout (p->offset), from its end. */
static int dp_buckets(struct lmk_train_dp *dp, const lmk_params *p)
{
	size_t maxe = dp->d.bucket_bytes / sizeof(float);
	int nt = p->nt;

	dp->first = malloc((size_t)(nt ? nt : 1) * sizeof *dp->first);
	dp->bucket_of = malloc((size_t)(nt ? nt : 1) * sizeof *dp->bucket_of);
	dp->ready = malloc((size_t)(nt ? nt : 1) * sizeof *dp->ready);
	if (!dp->first || !dp->bucket_of || !dp->ready)
		return lmk_err(LMK_ENOMEM, "out of memory");
	dp->nb = lmk_dist_buckets(p->offset, nt, p->n, maxe, dp->first);
	for (int k = 0; k < dp->nb; k++)
		for (int i = dp->first[k]; i < (k ? dp->first[k - 1] : nt); i++)
			dp->bucket_of[i] = k;
	return 0;
}

/* Elements of bucket k: [*lo, *hi) of the parameters' buffer. */
static void bucket_range(const struct lmk_train_dp *dp, const lmk_params *p, int k, size_t *lo, size_t *hi)
{
	*lo = p->offset[dp->first[k]];
	*hi = k ? p->offset[dp->first[k - 1]] : p->n;
}

/* The tensor of p whose gradient holds g (a parameter or a view of one),
 * or -1 for any other gradient. */
static int param_of(const lmk_params *p, const void *g)
{
	uintptr_t a = (uintptr_t)g, base = (uintptr_t)p->grad;
	size_t e;
	int lo = 0, hi = p->nt - 1;

	if (!g || !p->grad || a < base || a >= base + p->n * sizeof(float))
		return -1;
	e = (size_t)(a - base) / sizeof(float);
	while (lo < hi) { /* the last tensor starting at or before e */
		int mid = (lo + hi + 1) / 2;
		if (p->offset[mid] <= e)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* lmk_backward with the gradient all-reduce: the tape replayed in reverse
 * as lib/tensor.c does (the same backward calls in the same order, so one
 * rank computes the same bits), and after each node the buckets it
 * completed queued for their all-reduce, in bucket order (the same on
 * every rank, as NCCL needs). A parameter's gradient is complete once the
 * first node of the tape that reads it has run its backward; a parameter
 * no node reads is complete from the start. */
static int dp_backward(lmk_trainer *tr, lmk_tensor *loss, float scale)
{
	struct lmk_train_dp *dp = tr->dp;
	lmk_ctx *c = &tr->ctx;
	const lmk_params *p = tr->params;
	int rc, next = 0;
	size_t lo, hi;

	if (!loss || !loss->requires_grad || !loss->grad)
		return lmk_err(LMK_EINVAL, "backward: the loss has no gradient");
	if (loss->n != 1)
		return lmk_err(LMK_EINVAL, "backward: expected a loss of 1 element, found %lld",
			       (long long)loss->n);
	for (int k = 0; k < dp->nb; k++)
		dp->ready[k] = c->ntape;
	for (int i = 0; i < c->ntape; i++) {
		const lmk_node *n = &c->tape[i];
		if (!n->backward)
			continue;
		for (int j = 0; j < LMK_NODE_MAXIN; j++) {
			int t = n->in[j] ? param_of(p, n->in[j]->grad) : -1;
			if (t >= 0 && dp->ready[dp->bucket_of[t]] > i)
				dp->ready[dp->bucket_of[t]] = i;
		}
	}
	if ((rc = lmk_tensor_write_f32(c, loss, 1, &scale)) < 0)
		return rc;
	for (int i = c->ntape; i >= 0; i--) {
		if (i < c->ntape) {
			lmk_node *n = &c->tape[i];
			if ((rc = lmk_node_backward(c, n)) < 0)
				return lmk_err_wrap(rc, "backward of %s (node %d)", n->op, i);
		}
		for (; next < dp->nb && dp->ready[next] >= i; next++) {
			bucket_range(dp, p, next, &lo, &hi);
			if ((rc = dp_reduce_async(dp, p->grad + lo, hi - lo)) < 0)
				return rc;
		}
	}
	return 0;
}

static void dev_free(struct lmk_train_dev *dv)
{
	if (!dv)
		return;
#if LMK_CUDA
	lmk_cuda_graph_free(dv->graph);
	lmk_cuda_host_free(dv->x);
	lmk_cuda_host_free(dv->y);
	lmk_cuda_host_free(dv->hin);
	lmk_cuda_host_free(dv->hout);
	lmk_cuda_mem_free(dv->d);
#endif
	free(dv);
}

void lmk_trainer_free(lmk_trainer *tr)
{
	if (tr->dev) {
		dev_free(tr->dev); /* before the context, whose stream it used */
		tr->x = tr->y = NULL;
	}
	lmk_adamw_free(&tr->opt);
	if (tr->galore) {
		if (tr->galore->p)
			lmk_galore_free(tr->galore);
		free(tr->galore);
	}
	if (tr->dp) {
		dp_free(tr->dp); /* before the context, whose stream it follows */
	} else {
		free(tr->x);
		free(tr->y);
	}
	lmk_ctx_free(&tr->ctx);
	memset(tr, 0, sizeof *tr);
}

int lmk_trainer_attach(lmk_trainer *tr, lmk_params *p)
{
	if (tr->nattached == (int)(sizeof tr->attached / sizeof *tr->attached))
		return lmk_err(LMK_EINVAL, "trainer: more than %d parameter sets attached",
			       tr->nattached);
	int rc = p->dev == tr->ctx.dev ? 0 : lmk_params_to_device(p, &tr->ctx);
	if (rc == 0)
		tr->attached[tr->nattached++] = p;
	return rc;
}

static size_t weight_bytes(const lmk_params *p)
{
	return p->n * sizeof(float) + (p->lp ? p->n * 2 : 0);
}

void lmk_trainer_memory(const lmk_trainer *tr, lmk_train_memory *m)
{
	const lmk_params *p = tr->params;
	m->weights = weight_bytes(p);
	for (int i = 0; i < tr->nattached; i++)
		m->weights += weight_bytes(tr->attached[i]);
	m->grads = p->grad ? p->n * sizeof(float) : 0;
	m->optimizer = tr->galore ? lmk_galore_state_bytes(tr->galore) : 2 * p->n * sizeof(float);
	m->activations = tr->ctx.arena.peak;
}

int lmk_trainer_rank(const lmk_trainer *tr) { return tr->dp ? tr->dp->d.rank : 0; }
int lmk_trainer_world(const lmk_trainer *tr) { return tr->dp ? tr->dp->d.world : 1; }

/* The pinned batches and the step's device numbers of step_device. */
static int dev_init(lmk_trainer *tr)
{
#if LMK_CUDA
	const int A = tr->cfg.accum;
	const size_t bt = (size_t)tr->cfg.batch * (size_t)tr->cfg.seq * (size_t)A;
	const float seed = 1.0f / (float)A;
	struct lmk_train_dev *dv = calloc(1, sizeof *dv);
	int rc;

	if (!dv)
		return lmk_err(LMK_ENOMEM, "trainer: out of memory");
	tr->dev = dv;
	if ((rc = lmk_cuda_host_alloc((void **)&dv->x, bt * sizeof *dv->x)) < 0 ||
	    (rc = lmk_cuda_host_alloc((void **)&dv->y, bt * sizeof *dv->y)) < 0 ||
	    (rc = lmk_cuda_host_alloc(&dv->hin, LMK_ADAMW_DEV_BYTES)) < 0 ||
	    (rc = lmk_cuda_host_alloc(&dv->hout, LMK_ADAMW_DEV_BYTES + (size_t)A * sizeof(float))) < 0 ||
	    (rc = lmk_cuda_mem_alloc((void **)&dv->d, LMK_ADAMW_DEV_BYTES + (size_t)(A + 1) * sizeof(float))) < 0 ||
	    (rc = lmk_cuda_upload(tr->ctx.backend, dv->d + LMK_ADAMW_DEV_BYTES + (size_t)A * sizeof(float),
				  &seed, sizeof seed)) < 0)
		return rc;
	tr->x = dv->x;
	tr->y = dv->y;
	return 0;
#else
	(void)tr;
	return lmk_err(LMK_EUNSUP, "trainer: cuda in a cpu-only build");
#endif
}

int lmk_trainer_init(lmk_trainer *tr, const lmk_train_config *cfg, lmk_params *p, void *model,
		     lmk_train_loss_fn loss, lmk_tokdata *data)
{
	return lmk_trainer_init_dist(tr, cfg, NULL, p, model, loss, data);
}

int lmk_trainer_init_dist(lmk_trainer *tr, const lmk_train_config *cfg, const lmk_dist *dist,
			  lmk_params *p, void *model, lmk_train_loss_fn loss, lmk_tokdata *data)
{
	lmk_adamw_config ac;
	unsigned char id[NCCL_ID_BYTES];
	size_t bt;
	int rc;

	memset(tr, 0, sizeof *tr);
	if ((rc = lmk_train_config_check(cfg)) < 0)
		return rc;
	tr->cfg = *cfg;
	if (tr->cfg.decay_steps == 0)
		tr->cfg.decay_steps = tr->cfg.steps;
	tr->params = p;
	tr->model = model;
	tr->loss = loss;
	tr->data = data;
	if (p->dev != LMK_DEV_CPU)
		return lmk_err(LMK_EINVAL, "trainer: the parameters are on a device already; give "
			       "them on the host");
	if (dist && (rc = dp_begin(tr, dist, id)) < 0)
		goto fail;
	if ((rc = lmk_ctx_init_ex(&tr->ctx, cfg->device, cfg->device_index, cfg->dtype)) < 0)
		goto fail;
	lmk_ctx_set_nondeterministic(&tr->ctx, cfg->nondeterministic);
	if (tr->dp && ((rc = dp_join(tr->dp, &tr->ctx, id)) < 0 || (rc = dp_buckets(tr->dp, p)) < 0))
		goto fail;
	/* Before the optimizer, so that its moments are made beside them. */
	if ((rc = lmk_params_to_device(p, &tr->ctx)) < 0)
		goto fail;
	ac.beta1 = cfg->beta1;
	ac.beta2 = cfg->beta2;
	ac.eps = cfg->eps;
	ac.weight_decay = cfg->weight_decay;
	lmk_galore_config gc;
	lmk_galore_config_default(&gc);
	if ((rc = lmk_galore_config_parse(&gc, cfg->optim)) < 0)
		goto fail;
	if (gc.rank > 0) {
		if (!(tr->galore = calloc(1, sizeof *tr->galore))) {
			rc = lmk_err(LMK_ENOMEM, "trainer: cannot allocate the optimizer");
			goto fail;
		}
		if ((rc = lmk_galore_init(tr->galore, p, &ac, &gc,
					  lmk_train_subseed(cfg->seed, LMK_TRAIN_SEED_OPTIM))) < 0)
			goto fail;
	} else if ((rc = lmk_adamw_init(&tr->opt, p, &ac)) < 0) {
		goto fail;
	}
	tr->sched.kind = cfg->schedule;
	tr->sched.lr = cfg->lr;
	tr->sched.min_lr = cfg->min_lr;
	tr->sched.warmup = cfg->warmup;
	tr->sched.total = tr->cfg.decay_steps;
	tr->ctx.seed = lmk_train_subseed(cfg->seed, LMK_TRAIN_SEED_CTX);
	tr->ctx.counter = 0;
	bt = (size_t)cfg->batch * (size_t)cfg->seq;
	if (!tr->dp && !tr->galore && cfg->device == LMK_DEV_CUDA) {
		if ((rc = dev_init(tr)) < 0)
			goto fail;
	} else if (!tr->dp) {
		tr->x = malloc(bt * sizeof *tr->x);
		tr->y = malloc(bt * sizeof *tr->y);
		if (!tr->x || !tr->y) {
			rc = lmk_err(LMK_ENOMEM, "out of memory for a batch of %zu tokens", bt);
			goto fail;
		}
	}
	lmk_tokdata_seed(data, lmk_train_subseed(cfg->seed, LMK_TRAIN_SEED_DATA));
	lmk_rng_init(&tr->sample_rng, lmk_train_subseed(cfg->seed, LMK_TRAIN_SEED_SAMPLE));
	return 0;
fail:
	/* p may be on the device by now: the caller frees it as on success */
	lmk_trainer_free(tr);
	return rc;
}

/* The loss of the batch in tr->x, tr->y; with grad, its backward too
 * (scaled by scale), which with reduce all-reduces the gradients as it
 * goes (data parallel). count: NULL, or receives the targets counted. The
 * loss is read once the backward is queued: on a device that is the one
 * wait of a micro-batch, and the weights are still untouched if it is not
 * finite. In data parallel a rank does not stop there on its own: the
 * caller judges the mean over the ranks, which every rank sees. */
static int micro_batch(lmk_trainer *tr, int grad, float scale, double *loss, int64_t *count,
		       int reduce)
{
	lmk_ctx *c = &tr->ctx;
	const int64_t shape[2] = { tr->cfg.batch, tr->cfg.seq };
	lmk_tensor *ids, *tg, *l;
	float lv;
	int rc;

	lmk_ctx_reset(c);
	c->grad_enabled = grad;
	if (c->dev == LMK_DEV_CPU) {
		ids = lmk_tensor_wrap(c, LMK_I32, 2, shape, tr->x);
		tg = lmk_tensor_wrap(c, LMK_I32, 2, shape, tr->y);
	} else {
		/* staged before the call returns: x and y may be refilled at once */
		ids = lmk_tensor_upload(c, LMK_I32, 2, shape, tr->x);
		tg = lmk_tensor_upload(c, LMK_I32, 2, shape, tr->y);
	}
	if (!ids || !tg)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	l = tr->loss(tr->model, c, ids, tg, count);
	if (!l)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_EINVAL;
	if (grad && (rc = reduce ? dp_backward(tr, l, scale) : lmk_backward(c, l, scale)) < 0)
		return rc;
	if ((rc = lmk_tensor_read_f32(c, l, 0, &lv)) < 0)
		return rc;
	*loss = lv;
	if (!tr->dp && !isfinite(lv))
		return lmk_err(LMK_ENUM, "step %lld: the loss is %g; the run diverged (try a lower --lr)",
			       (long long)tr->step + 1, lv);
	return 0;
}

/* The step on the host's terms: the CPU, data parallel and GaLore, each
 * waiting where it reads a number. */
static int step_host(lmk_trainer *tr, lmk_train_stats *st)
{
	const int A = tr->cfg.accum, W = lmk_trainer_world(tr);
	struct lmk_train_dp *dp = tr->dp;
	double sum = 0, l = 0;
	int rc;

	/* The gradients start unwritten and the first backward to reach each
	 * assigns it, instead of a pass zeroing them all; data parallel
	 * all-reduces buckets as they complete, before any settling, so it
	 * zeroes them. */
	if (dp)
		lmk_params_zero_grad(tr->params);
	else
		lmk_params_grad_unwritten(tr->params);
	for (int a = 0; a < A; a++) {
		/* data parallel: the group's windows, the same draw on every
		 * rank; tr->x and tr->y are this rank's rows of them */
		if (dp)
			rc = lmk_tokdata_train_batch(tr->data, W * tr->cfg.batch, tr->cfg.seq, dp->gx, dp->gy);
		else
			rc = lmk_tokdata_train_batch(tr->data, tr->cfg.batch, tr->cfg.seq, tr->x, tr->y);
		if (rc < 0)
			return rc;
		/* the gradients are averaged once, in the last micro-batch */
		if ((rc = micro_batch(tr, 1, 1.0f / (float)A, &l, NULL, dp && a == A - 1)) < 0)
			return rc;
		sum += l;
	}
	if (!dp && (rc = lmk_params_grad_settle(tr->params)) < 0)
		return rc;
	lmk_ctx_reset(&tr->ctx);
	st->loss = sum / A;
	if (dp) {
		double v = st->loss, sig = lmk_train_signal();
		if ((rc = dp_wait(dp)) < 0 || (rc = dp_host(dp, &v, 1, 0)) < 0 ||
		    (rc = dp_host(dp, &sig, 1, 1)) < 0)
			return rc;
		st->loss = v / W; /* with one rank: the same bits */
		dp->signal = (int)sig;
		if (!isfinite(st->loss))
			return lmk_err(LMK_ENUM, "step %lld: the loss (the mean over %d ranks) is %g; the run "
				       "diverged (try a lower --lr)", (long long)tr->step + 1, W, st->loss);
	}
	/* AdamW applies the clipping factor as it reads the gradient; GaLore
	 * reads the gradient itself, so clip it first */
	float coef = 1.0f;
	st->grad_norm = tr->galore ? lmk_clip_grad_norm(tr->params, tr->cfg.grad_clip)
				   : lmk_grad_norm(tr->params, tr->cfg.grad_clip, &coef);
	if (!isfinite(st->grad_norm))
		return lmk_err(LMK_ENUM, "step %lld: the gradient norm is %g; the run diverged (try a lower --lr)",
			       (long long)tr->step + 1, st->grad_norm);
	st->lr = lmk_schedule_lr(&tr->sched, tr->step);
	if (!tr->galore)
		lmk_adamw_step_scaled(&tr->opt, st->lr, coef);
	else if ((rc = lmk_galore_step(tr->galore, st->lr)) < 0)
		return rc;
	/* On a device the update is only queued: wait for it, so that the step
	 * is over when this returns and a failed launch is this step's error. */
	if (tr->ctx.dev != LMK_DEV_CPU && (rc = lmk_ctx_sync(&tr->ctx)) < 0)
		return rc;
	tr->step++;
	tr->tokens += (int64_t)W * A * tr->cfg.batch * tr->cfg.seq;
	return 0;
}

#if LMK_CUDA
/* Queues one whole step on the micro-batches staged in tr->dev at
 * learning rate lr: micro_batch's work and the update of step_host, the
 * same kernels in the same order, with every number that step_host reads
 * on the host left in device memory instead: each loss copied into d, the
 * backward's seed read from d, the norm, the clipping factor and the skip
 * flag computed into d, the step's scalars copied in from the pinned hin. */
static int queue_step(lmk_trainer *tr, float lr)
{
	struct lmk_train_dev *dv = tr->dev;
	lmk_ctx *c = &tr->ctx;
	const int A = tr->cfg.accum;
	const int64_t shape[2] = { tr->cfg.batch, tr->cfg.seq };
	const size_t bt = (size_t)tr->cfg.batch * (size_t)tr->cfg.seq;
	float *loss = (float *)(dv->d + LMK_ADAMW_DEV_BYTES), *seed = loss + A;
	int rc;

	lmk_params_grad_unwritten(tr->params);
	for (int a = 0; a < A; a++) {
		lmk_tensor *ids, *tg, *l;
		lmk_ctx_reset(c);
		c->grad_enabled = 1;
		ids = lmk_tensor_upload(c, LMK_I32, 2, shape, dv->x + a * bt);
		tg = lmk_tensor_upload(c, LMK_I32, 2, shape, dv->y + a * bt);
		if (!ids || !tg)
			return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
		if (!(l = tr->loss(tr->model, c, ids, tg, NULL)))
			return lmk_errcode() < 0 ? lmk_errcode() : LMK_EINVAL;
		if (l->dtype != LMK_F32 || l->n != 1)
			return lmk_err(LMK_EINVAL, "trainer: the loss is %s with %lld elements, expected one "
				       "f32", lmk_dtype_name(l->dtype), (long long)l->n);
		if ((rc = lmk_backward_dev(c, l, seed)) < 0 ||
		    (rc = lmk_cuda_copy(c->backend, loss + a, l->data, sizeof *loss)) < 0)
			return rc;
	}
	if ((rc = lmk_params_grad_settle(tr->params)) < 0)
		return rc;
	lmk_ctx_reset(c);
	if ((rc = lmk_grad_norm_dev(tr->params, tr->cfg.grad_clip, dv->d, loss, A)) < 0)
		return rc;
	lmk_adamw_stage(&tr->opt, lr, dv->hin);
	return lmk_adamw_queue(&tr->opt, dv->d, dv->hin);
}

/* Whether the graph's addresses still hold: the arena one chunk at the
 * same place and the scratch not grown since (an evaluation may have
 * needed more of either). */
static int graph_fresh(const lmk_trainer *tr)
{
	const struct lmk_train_dev *dv = tr->dev;
	size_t sb;
	void *sp = lmk_cuda_scratch_at(tr->ctx.backend, &sb);
	return lmk_arena_nchunks(&tr->ctx.arena) == 1 && lmk_arena_base(&tr->ctx.arena) == dv->base &&
	       tr->ctx.arena.reserved == dv->reserved && sp == dv->scratch && sb == dv->scratch_bytes;
}

/* queue_step recorded as a graph (nothing runs meanwhile), then its first
 * replay. A step that cannot be recorded (a capture error: some op waits,
 * uploads from pageable memory or allocates device memory), or whose
 * recording would not replay the same (it drew random numbers, grew the
 * arena or the scratch), runs eagerly instead, from then on, with the
 * reason in tr->graph_note. */
static int record_step(lmk_trainer *tr, float lr)
{
	struct lmk_train_dev *dv = tr->dev;
	lmk_ctx *c = &tr->ctx;
	const int64_t t = tr->opt.t;
	const uint64_t counter = c->counter;
	const void *base = lmk_arena_base(&c->arena);
	const size_t reserved = c->arena.reserved;
	void *graph = NULL;
	int rc;

	dv->scratch = lmk_cuda_scratch_at(c->backend, &dv->scratch_bytes);
	dv->base = base;
	dv->reserved = reserved;
	rc = lmk_cuda_capture_begin(c->backend);
	if (rc == 0) {
		rc = queue_step(tr, lr);
		int rc2 = lmk_cuda_capture_end(c->backend, &graph);
		if (rc == 0)
			rc = rc2;
	}
	if (rc == 0 && c->counter == counter && graph_fresh(tr)) {
		dv->graph = graph;
		return lmk_cuda_graph_launch(c->backend, graph);
	}
	snprintf(tr->graph_note, sizeof tr->graph_note, "cuda graph: %s; the steps run eagerly",
		 rc < 0 ? lmk_errmsg() : "the step draws random numbers or allocates");
	lmk_err_clear();
	lmk_cuda_graph_free(graph);
	tr->cfg.cuda_graph = 0;
	tr->opt.t = t;
	c->counter = counter;
	lmk_ctx_reset(c);
	return queue_step(tr, lr);
}

/* One AdamW step on one GPU that waits for the device once, at its end,
 * for the losses, the norm and the skip flag in one download (the update
 * itself skipped on the device when step_host would have stopped before
 * it, so that the weights stay untouched as there). The micro-batches are
 * drawn first, in their order, into pinned memory. */
static int step_device(lmk_trainer *tr, lmk_train_stats *st)
{
	struct lmk_train_dev *dv = tr->dev;
	lmk_ctx *c = &tr->ctx;
	const int A = tr->cfg.accum;
	const size_t bt = (size_t)tr->cfg.batch * (size_t)tr->cfg.seq;
	const float *loss = (const float *)((const char *)dv->hout + LMK_ADAMW_DEV_BYTES);
	double sum = 0;
	int rc, skip;

	for (int a = 0; a < A; a++)
		if ((rc = lmk_tokdata_train_batch(tr->data, tr->cfg.batch, tr->cfg.seq, dv->x + a * bt,
						  dv->y + a * bt)) < 0)
			return rc;
	st->lr = lmk_schedule_lr(&tr->sched, tr->step);
	if (dv->graph && !graph_fresh(tr)) {
		lmk_cuda_graph_free(dv->graph);
		dv->graph = NULL;
	}
	if (dv->graph) {
		lmk_adamw_stage(&tr->opt, st->lr, dv->hin);
		rc = lmk_cuda_graph_launch(c->backend, dv->graph);
	} else if (tr->cfg.cuda_graph && dv->warm) {
		rc = record_step(tr, st->lr);
	} else {
		rc = queue_step(tr, st->lr);
	}
	if (rc == 0)
		rc = lmk_cuda_fetch_async(c->backend, dv->hout, dv->d,
					  LMK_ADAMW_DEV_BYTES + (size_t)A * sizeof(float));
	if (rc < 0)
		return rc;
	/* the one wait; it reports the ids and targets found bad first */
	rc = lmk_ctx_sync(c);
	lmk_adamw_dev_read(dv->hout, &st->grad_norm, &skip);
	if (skip)
		tr->opt.t--; /* the update changed nothing */
	if (rc < 0)
		return rc;
	dv->warm = 1;
	for (int a = 0; a < A; a++) {
		if (!isfinite(loss[a]))
			return lmk_err(LMK_ENUM, "step %lld: the loss is %g; the run diverged (try a lower --lr)",
				       (long long)tr->step + 1, loss[a]);
		sum += loss[a];
	}
	st->loss = sum / A;
	if (!isfinite(st->grad_norm))
		return lmk_err(LMK_ENUM, "step %lld: the gradient norm is %g; the run diverged (try a lower --lr)",
			       (long long)tr->step + 1, st->grad_norm);
	tr->step++;
	tr->tokens += (int64_t)A * tr->cfg.batch * tr->cfg.seq;
	return 0;
}
#endif

int lmk_trainer_step(lmk_trainer *tr, lmk_train_stats *st)
{
#if LMK_CUDA
	if (tr->dev)
		return step_device(tr, st);
#endif
	return step_host(tr, st);
}

int lmk_trainer_eval(lmk_trainer *tr, double *loss)
{
	const int B = tr->cfg.batch, T = tr->cfg.seq;
	/* data parallel: batches of the group's G = W*B windows, rank r
	 * taking rows r*B .. r*B+B-1 of each, as in training */
	const int64_t G = (int64_t)lmk_trainer_world(tr) * B, mine = (int64_t)lmk_trainer_rank(tr) * B;
	int64_t W = lmk_tokdata_val_windows(tr->data, T), nsel, count, total = 0;
	double sum = 0, l = 0;
	int rc;

	if (W == 0)
		return lmk_err(LMK_EINVAL, "%s: no validation window of %d tokens", tr->data->name, T + 1);
	nsel = (int64_t)tr->cfg.eval_batches * G;
	if (nsel > W)
		nsel = W;
	for (int64_t first = 0; first < nsel; first += G) {
		if (first + mine >= nsel)
			break; /* the set ends before this rank's rows */
		lmk_tokdata_val_batch(tr->data, B, T, nsel, first + mine, IGNORE_TARGET, tr->x, tr->y);
		rc = micro_batch(tr, 0, 1.0f, &l, &count, 0);
		if (rc < 0) {
			lmk_ctx_reset(&tr->ctx);
			tr->ctx.grad_enabled = 1;
			return rc;
		}
		sum += l * (double)count;
		total += count;
	}
	lmk_ctx_reset(&tr->ctx);
	tr->ctx.grad_enabled = 1;
	if (tr->dp) {
		double v[2] = { sum, (double)total };
		if ((rc = dp_host(tr->dp, v, 2, 0)) < 0)
			return rc;
		sum = v[0];
		total = (int64_t)v[1];
		if (!isfinite(sum))
			return lmk_err(LMK_ENUM, "step %lld: the validation loss is %g; the run diverged (try "
				       "a lower --lr)", (long long)tr->step, sum);
	}
	*loss = total ? sum / (double)total : 0;
	return 0;
}

/* ---- the state file ---- */

static int put_meta(lmk_frame *f, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int put_meta(lmk_frame *f, const char *key, const char *fmt, ...)
{
	char buf[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return lmk_frame_set_meta(f, key, buf);
}

static const char *sched_name(lmk_sched_kind k)
{
	return k == LMK_SCHED_COSINE ? "cosine" : k == LMK_SCHED_LINEAR ? "linear" : "constant";
}

/* %.9g gives back the same float, %.17g the same double. */
static int config_meta(lmk_frame *f, const lmk_train_config *c)
{
	int rc = 0;
	rc |= put_meta(f, "batch", "%d", c->batch);
	rc |= put_meta(f, "seq", "%d", c->seq);
	rc |= put_meta(f, "accum", "%d", c->accum);
	rc |= put_meta(f, "steps", "%" PRId64, c->steps);
	rc |= put_meta(f, "decay_steps", "%" PRId64, c->decay_steps);
	rc |= put_meta(f, "lr", "%.9g", c->lr);
	rc |= put_meta(f, "min_lr", "%.9g", c->min_lr);
	rc |= put_meta(f, "warmup", "%" PRId64, c->warmup);
	rc |= lmk_frame_set_meta(f, "schedule", sched_name(c->schedule));
	rc |= put_meta(f, "weight_decay", "%.9g", c->weight_decay);
	rc |= put_meta(f, "beta1", "%.9g", c->beta1);
	rc |= put_meta(f, "beta2", "%.9g", c->beta2);
	rc |= put_meta(f, "eps", "%.9g", c->eps);
	rc |= put_meta(f, "grad_clip", "%.9g", c->grad_clip);
	rc |= put_meta(f, "eval_every", "%" PRId64, c->eval_every);
	rc |= put_meta(f, "eval_batches", "%d", c->eval_batches);
	rc |= put_meta(f, "save_every", "%" PRId64, c->save_every);
	rc |= put_meta(f, "seed", "%" PRIu64, c->seed);
	rc |= put_meta(f, "val_frac", "%.17g", c->val_frac);
	rc |= put_meta(f, "threads", "%d", c->threads);
	rc |= lmk_frame_set_meta(f, "device", c->device == LMK_DEV_CUDA ? "cuda" : "cpu");
	rc |= lmk_frame_set_meta(f, "dtype", c->dtype == LMK_BF16 ? "bf16" : "f32");
	rc |= lmk_frame_set_meta(f, "optim", c->optim);
	return rc ? LMK_ENOMEM : 0;
}

/* Adds each parameter tensor of p, with data base + offset, as prefix/NAME. */
static int add_params(lmk_frame *f, const lmk_params *p, const float *base, const char *prefix)
{
	char name[512];
	int rc;
	for (int i = 0; i < p->nt; i++) {
		const lmk_tensor *t = &p->t[i];
		snprintf(name, sizeof name, "%s/%s", prefix, t->name);
		if ((rc = lmk_frame_add(f, name, LMK_F32, t->ndim, t->shape, base + p->offset[i])) < 0)
			return rc;
	}
	return 0;
}

int lmk_trainer_save(const lmk_trainer *tr, const char *path, double now_elapsed,
		     const char *const *extra)
{
	lmk_frame f;
	lmk_tokdata_pos pos;
	int64_t step = tr->step, t = tr->galore ? tr->galore->t : tr->opt.t, tokens = tr->tokens, rd[3], rc2[2], rs[2];
	double elapsed = tr->elapsed + now_elapsed;
	const int64_t three = 3, two = 2;
	const float *pd = tr->params->data, *pm = tr->opt.m, *pv = tr->opt.v;
	float *host = NULL;
	int rc;

	if (lmk_trainer_rank(tr) != 0)
		return 0;
	if (tr->params->dev != LMK_DEV_CPU) {
		/* weights, then the two moments, in the parameters' layout */
		const size_t n = tr->params->n;
		if (!(host = malloc(3 * n * sizeof(float) + 1)))
			return lmk_err(LMK_ENOMEM, "%s: cannot allocate %zu bytes for a host copy", path,
				       3 * n * sizeof(float));
		rc = lmk_params_copy_to_host(tr->params, 0, host);
		if (!rc && !tr->galore)
			rc = lmk_adamw_moments_to_host(&tr->opt, host + n, host + 2 * n);
		if (rc < 0) {
			free(host);
			return lmk_err_wrap(rc, "%s", path);
		}
		pd = host;
		pm = host + n;
		pv = host + 2 * n;
	}
	lmk_tokdata_tell(tr->data, &pos);
	rd[0] = (int64_t)pos.seed;
	rd[1] = (int64_t)pos.words;
	rd[2] = pos.windows;
	rc2[0] = (int64_t)tr->ctx.seed;
	rc2[1] = (int64_t)tr->ctx.counter;
	rs[0] = (int64_t)tr->sample_rng.seed;
	rs[1] = (int64_t)lmk_rng_tell(&tr->sample_rng);

	lmk_frame_init(&f);
	rc = lmk_frame_set_meta(&f, "kind", LMK_TRAIN_STATE_KIND);
	if (!rc) rc = lmk_frame_set_meta(&f, "schema", LMK_TRAIN_STATE_SCHEMA);
	if (!rc) rc = put_meta(&f, "step", "%" PRId64, step);
	if (!rc) rc = config_meta(&f, &tr->cfg);
	if (!rc) rc = put_meta(&f, "data_tokens", "%" PRId64, tr->data->n);
	if (!rc) rc = put_meta(&f, "data_train_tokens", "%" PRId64, tr->data->ntrain);
	if (!rc) rc = put_meta(&f, "data_vocab", "%d", tr->data->vocab);
	if (!rc) rc = put_meta(&f, "data_hash", "%016" PRIx64, tr->data->hash);
	if (!rc) rc = put_meta(&f, "world_size", "%d", lmk_trainer_world(tr));
	for (int i = 0; !rc && extra && extra[i] && extra[i + 1]; i += 2)
		rc = lmk_frame_set_meta(&f, extra[i], extra[i + 1]);
	if (!rc) rc = lmk_frame_add(&f, "step", LMK_I64, 0, NULL, &step);
	if (!rc) rc = lmk_frame_add(&f, "adamw.t", LMK_I64, 0, NULL, &t);
	if (!rc) rc = lmk_frame_add(&f, "tokens", LMK_I64, 0, NULL, &tokens);
	if (!rc) rc = lmk_frame_add(&f, "elapsed", LMK_F64, 0, NULL, &elapsed);
	if (!rc) rc = lmk_frame_add(&f, "rng.data", LMK_I64, 1, &three, rd);
	if (!rc) rc = lmk_frame_add(&f, "rng.ctx", LMK_I64, 1, &two, rc2);
	if (!rc) rc = lmk_frame_add(&f, "rng.sample", LMK_I64, 1, &two, rs);
	if (!rc) rc = add_params(&f, tr->params, pd, "param");
	if (!rc && !tr->galore) rc = add_params(&f, tr->params, pm, "adamw.m");
	if (!rc && !tr->galore) rc = add_params(&f, tr->params, pv, "adamw.v");
	if (!rc && tr->galore) rc = lmk_galore_to_frame(tr->galore, &f);
	if (rc < 0) {
		lmk_frame_free(&f);
		free(host);
		return lmk_err_wrap(rc, "%s", path);
	}
	rc = lmk_frame_save(path, &f, 0);
	lmk_frame_free(&f);
	free(host);
	return rc;
}

int lmk_train_state_read(const char *path, lmk_frame *st)
{
	const char *kind, *schema;
	int rc;

	lmk_frame_init(st);
	if ((rc = lmk_frame_load(path, st)) < 0)
		return rc;
	kind = lmk_frame_meta(st, "kind");
	schema = lmk_frame_meta(st, "schema");
	if (!kind || strcmp(kind, LMK_TRAIN_STATE_KIND) != 0) {
		rc = lmk_err(LMK_EFORMAT, "%s: kind '%s', expected '%s'", path, kind ? kind : "(none)",
			     LMK_TRAIN_STATE_KIND);
	} else if (!schema || strcmp(schema, LMK_TRAIN_STATE_SCHEMA) != 0) {
		rc = lmk_err(LMK_EUNSUP, "%s: schema '%s', this build reads schema %s", path,
			     schema ? schema : "(none)", LMK_TRAIN_STATE_SCHEMA);
	}
	if (rc < 0)
		lmk_frame_free(st);
	return rc;
}

static int meta_i64(const lmk_frame *st, const char *path, const char *key, int64_t lo, int64_t hi,
		    int64_t *out)
{
	const char *s = lmk_frame_meta(st, key);
	char *end;
	long long v;

	if (!s)
		return lmk_err(LMK_EFORMAT, "%s: metadata '%s' is missing", path, key);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return lmk_err(LMK_EFORMAT, "%s: metadata '%s' is '%s', expected a whole number from %lld to %lld",
			       path, key, s, (long long)lo, (long long)hi);
	*out = v;
	return 0;
}

static int meta_f64(const lmk_frame *st, const char *path, const char *key, double *out)
{
	const char *s = lmk_frame_meta(st, key);
	char *end;

	if (!s)
		return lmk_err(LMK_EFORMAT, "%s: metadata '%s' is missing", path, key);
	errno = 0;
	*out = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(*out))
		return lmk_err(LMK_EFORMAT, "%s: metadata '%s' is '%s', expected a number", path, key, s);
	return 0;
}

int lmk_train_state_config(const lmk_frame *st, const char *path, lmk_train_config *c)
{
	int64_t v;
	double d;
	const char *s;
	int rc;

#define I(key, field, lo, hi) \
	if ((rc = meta_i64(st, path, key, lo, hi, &v)) < 0) return rc; \
	c->field = v;
#define F(key, field) \
	if ((rc = meta_f64(st, path, key, &d)) < 0) return rc; \
	c->field = (float)d;
	lmk_train_config_default(c);
	I("batch", batch, 1, INT32_MAX)
	I("seq", seq, 1, INT32_MAX)
	I("accum", accum, 1, INT32_MAX)
	I("steps", steps, 0, INT64_MAX)
	I("decay_steps", decay_steps, 0, INT64_MAX)
	F("lr", lr)
	F("min_lr", min_lr)
	I("warmup", warmup, 0, INT64_MAX)
	F("weight_decay", weight_decay)
	F("beta1", beta1)
	F("beta2", beta2)
	F("eps", eps)
	F("grad_clip", grad_clip)
	I("eval_every", eval_every, 0, INT64_MAX)
	I("eval_batches", eval_batches, 1, INT32_MAX)
	I("save_every", save_every, 0, INT64_MAX)
	I("threads", threads, 0, 4096)
#undef I
#undef F
	if ((rc = meta_f64(st, path, "val_frac", &c->val_frac)) < 0)
		return rc;
	s = lmk_frame_meta(st, "seed");
	if (!s || sscanf(s, "%" SCNu64, &c->seed) != 1)
		return lmk_err(LMK_EFORMAT, "%s: metadata 'seed' is missing or not a number", path);
	s = lmk_frame_meta(st, "schedule");
	if (!s || lmk_schedule_parse(s, &c->schedule) < 0)
		return lmk_err(LMK_EFORMAT, "%s: metadata 'schedule' is '%s', expected cosine, linear or constant",
			       path, s ? s : "(none)");
	s = lmk_frame_meta(st, "device");
	if (s && (strcmp(s, "cpu") != 0 && strcmp(s, "cuda") != 0))
		return lmk_err(LMK_EFORMAT, "%s: metadata 'device' is '%s', expected cpu or cuda", path, s);
	c->device = s && strcmp(s, "cuda") == 0 ? LMK_DEV_CUDA : LMK_DEV_CPU;
	s = lmk_frame_meta(st, "dtype");
	if (s && lmk_train_parse_dtype(s, &c->dtype) < 0)
		return lmk_err(LMK_EFORMAT, "%s: metadata 'dtype' is '%s', expected f32 or bf16", path, s);
	if (c->dtype == LMK_BF16 && c->device != LMK_DEV_CUDA)
		return lmk_err(LMK_EFORMAT, "%s: metadata says dtype bf16 on the cpu", path);
	s = lmk_frame_meta(st, "optim"); /* absent: saved before GaLore */
	if (s) {
		lmk_galore_config gc;
		lmk_galore_config_default(&gc);
		if (strlen(s) >= sizeof c->optim || lmk_galore_config_parse(&gc, s) < 0)
			return lmk_err(LMK_EFORMAT, "%s: metadata 'optim' is '%s', expected adamw or "
				       "galore:...", path, s);
		snprintf(c->optim, sizeof c->optim, "%s", s);
	}
	return 0;
}

/* The tensor name of st as dtype dt with n elements, or an error. */
static int find(const lmk_frame *st, const char *path, const char *name, lmk_dtype dt, int64_t n,
		const lmk_ftensor **out)
{
	const lmk_ftensor *t = lmk_frame_find(st, name);
	if (!t)
		return lmk_err(LMK_EFORMAT, "%s: no tensor '%s'", path, name);
	if (t->dtype != dt || lmk_ftensor_numel(t) != n)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected %s with %lld elements, found %s with %lld",
			       path, name, lmk_dtype_name(dt), (long long)n, lmk_dtype_name(t->dtype),
			       (long long)lmk_ftensor_numel(t));
	*out = t;
	return 0;
}

static int get_params(const lmk_frame *st, const char *path, const lmk_params *p, float *base,
		      const char *prefix)
{
	char name[512];
	const lmk_ftensor *t;
	int rc;

	for (int i = 0; i < p->nt; i++) {
		const lmk_tensor *pt = &p->t[i];
		snprintf(name, sizeof name, "%s/%s", prefix, pt->name);
		if ((rc = find(st, path, name, LMK_F32, pt->n, &t)) < 0)
			return rc;
		if (t->ndim != pt->ndim || memcmp(t->shape, pt->shape, (size_t)pt->ndim * sizeof *pt->shape))
			return lmk_err(LMK_EFORMAT, "%s: tensor '%s' has another shape than the model's", path, name);
		memcpy(base + p->offset[i], t->data, (size_t)pt->n * sizeof(float));
	}
	return 0;
}

static int match_i64(const lmk_frame *st, const char *path, const char *key, int64_t now, const char *what)
{
	int64_t v;
	int rc;
	if ((rc = meta_i64(st, path, key, INT64_MIN, INT64_MAX, &v)) < 0)
		return rc;
	if (v != now)
		return lmk_err(LMK_EINVAL, "%s: saved with %s %lld, this run has %lld", path, what,
			       (long long)v, (long long)now);
	return 0;
}

int lmk_trainer_restore(lmk_trainer *tr, const lmk_frame *st, const char *path)
{
	lmk_train_config saved;
	const lmk_ftensor *t;
	const char *h;
	char hash[24];
	int64_t v[3], nparam = 0;
	double e;
	lmk_tokdata_pos pos;
	const size_t n = tr->params->n;
	float *pd = tr->params->data, *pm = tr->opt.m, *pv = tr->opt.v, *host = NULL;
	int rc;

	if ((rc = lmk_train_state_config(st, path, &saved)) < 0)
		return rc;
	/* windows per micro-batch: one rank's batch times the ranks */
	if (!lmk_frame_meta(st, "world_size"))
		v[0] = 1; /* saved before data parallel */
	else if ((rc = meta_i64(st, path, "world_size", 1, 1 << 20, &v[0])) < 0)
		return rc;
	if (v[0] == 1 && !tr->dp && saved.batch != tr->cfg.batch)
		return lmk_err(LMK_EINVAL, "%s: saved with batch %d, this run has %d", path, saved.batch, tr->cfg.batch);
	if (v[0] * saved.batch != (int64_t)lmk_trainer_world(tr) * tr->cfg.batch)
		return lmk_err(LMK_EINVAL, "%s: saved with %lld rank%s of batch %d (%lld windows a micro-batch), "
			       "this run has %d of batch %d (%lld)", path, (long long)v[0], v[0] == 1 ? "" : "s",
			       saved.batch, (long long)(v[0] * saved.batch), lmk_trainer_world(tr), tr->cfg.batch,
			       (long long)lmk_trainer_world(tr) * tr->cfg.batch);
	if (strcmp(saved.optim, tr->cfg.optim) != 0)
		return lmk_err(LMK_EINVAL, "%s: saved with optimizer %s, this run has %s", path,
			       saved.optim, tr->cfg.optim);
	if (saved.seq != tr->cfg.seq)
		return lmk_err(LMK_EINVAL, "%s: saved with seq %d, this run has %d", path, saved.seq, tr->cfg.seq);
	if (saved.accum != tr->cfg.accum)
		return lmk_err(LMK_EINVAL, "%s: saved with accum %d, this run has %d", path, saved.accum, tr->cfg.accum);
	if (saved.seed != tr->cfg.seed)
		return lmk_err(LMK_EINVAL, "%s: saved with seed %" PRIu64 ", this run has %" PRIu64, path,
			       saved.seed, tr->cfg.seed);
	if (saved.val_frac != tr->cfg.val_frac)
		return lmk_err(LMK_EINVAL, "%s: saved with val_frac %.17g, this run has %.17g", path,
			       saved.val_frac, tr->cfg.val_frac);
	if ((rc = match_i64(st, path, "data_tokens", tr->data->n, "data of tokens")) < 0 ||
	    (rc = match_i64(st, path, "data_train_tokens", tr->data->ntrain, "training tokens")) < 0)
		return rc;
	snprintf(hash, sizeof hash, "%016" PRIx64, tr->data->hash);
	h = lmk_frame_meta(st, "data_hash");
	if (!h || strcmp(h, hash) != 0)
		return lmk_err(LMK_EINVAL, "%s: saved with data of hash %s, this run's data (%s) has %s", path,
			       h ? h : "(none)", tr->data->name, hash);

	/* Every parameter tensor present, and no other. */
	for (int i = 0; i < st->ntensors; i++)
		if (strncmp(st->t[i].name, "param/", 6) == 0)
			nparam++;
	if (nparam != tr->params->nt)
		return lmk_err(LMK_EFORMAT, "%s: %lld parameter tensors, the model has %d", path,
			       (long long)nparam, tr->params->nt);
	if (tr->params->dev != LMK_DEV_CPU) {
		/* read on the host in the parameters' layout (its padding zero),
		 * then uploaded whole */
		if (!(host = calloc(3 * n + 1, sizeof(float))))
			return lmk_err(LMK_ENOMEM, "%s: cannot allocate %zu bytes for a host copy", path,
				       3 * n * sizeof(float));
		pd = host;
		pm = host + n;
		pv = host + 2 * n;
	}
	if ((rc = get_params(st, path, tr->params, pd, "param")) < 0 ||
	    (!tr->galore && (rc = get_params(st, path, tr->params, pm, "adamw.m")) < 0) ||
	    (!tr->galore && (rc = get_params(st, path, tr->params, pv, "adamw.v")) < 0) ||
	    (tr->galore && (rc = lmk_galore_from_frame(tr->galore, st, path)) < 0)) {
		free(host);
		return rc;
	}
	if (host) {
		rc = lmk_params_copy_from_host(tr->params, pd);
		if (!rc && !tr->galore)
			rc = lmk_adamw_moments_from_host(&tr->opt, pm, pv);
		if (!rc)
			rc = lmk_ctx_sync(&tr->ctx);
		free(host);
		if (rc < 0)
			return lmk_err_wrap(rc, "%s", path);
	}

	if ((rc = find(st, path, "step", LMK_I64, 1, &t)) < 0)
		return rc;
	memcpy(&tr->step, t->data, 8);
	if ((rc = find(st, path, "adamw.t", LMK_I64, 1, &t)) < 0)
		return rc;
	memcpy(&tr->opt.t, t->data, 8);
	if ((rc = find(st, path, "tokens", LMK_I64, 1, &t)) < 0)
		return rc;
	memcpy(&tr->tokens, t->data, 8);
	if ((rc = find(st, path, "elapsed", LMK_F64, 1, &t)) < 0)
		return rc;
	memcpy(&e, t->data, 8);
	tr->elapsed = e;
	if (tr->step < 0 || tr->opt.t < 0)
		return lmk_err(LMK_EFORMAT, "%s: negative step", path);

	if ((rc = find(st, path, "rng.data", LMK_I64, 3, &t)) < 0)
		return rc;
	memcpy(v, t->data, 24);
	pos.seed = (uint64_t)v[0];
	pos.words = (uint64_t)v[1];
	pos.windows = v[2];
	lmk_tokdata_seek(tr->data, &pos);
	if ((rc = find(st, path, "rng.ctx", LMK_I64, 2, &t)) < 0)
		return rc;
	memcpy(v, t->data, 16);
	tr->ctx.seed = (uint64_t)v[0];
	tr->ctx.counter = (uint64_t)v[1];
	if ((rc = find(st, path, "rng.sample", LMK_I64, 2, &t)) < 0)
		return rc;
	memcpy(v, t->data, 16);
	lmk_rng_init(&tr->sample_rng, (uint64_t)v[0]);
	lmk_rng_seek(&tr->sample_rng, (uint64_t)v[1]);
	return 0;
}

/* ---- signals ---- */

static volatile sig_atomic_t caught;

static void on_signal(int sig) { caught = sig; }

int lmk_train_catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* the second signal finds the default action again and ends the run */
	sa.sa_flags = SA_RESETHAND | SA_RESTART;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return lmk_err(LMK_EIO, "cannot catch signals: %s", strerror(errno));
	return 0;
}

int lmk_train_signal(void) { return caught; }

int lmk_trainer_signal(const lmk_trainer *tr) { return tr->dp ? tr->dp->signal : caught; }
