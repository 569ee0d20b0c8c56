/* arctrain.c: training on ARC's masked examples and greedy prediction
 * (arctrain.h). Shape letters: B examples, T positions, V vocabulary. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "arctrain.h"
#include "bytetok.h"
#include "err.h"
#include "fileio.h"
#include "ops.h"
#include "rng.h"

#define STATE_KIND "lmk-arctrain-state"
#define STATE_SCHEMA "1"

/* ---- tokenizers ---- */

void lmk_arctok_init(lmk_arctok *t, lmk_bpe *bpe)
{
	memset(t, 0, sizeof *t);
	t->bpe = bpe;
	if (!bpe) {
		t->bos = LMK_BYTETOK_BOS;
		t->eos = LMK_BYTETOK_EOS;
		return;
	}
	const lmk_bpe_info *in = lmk_bpe_get_info(bpe);
	t->bos = in->add_bos ? in->bos : -1;
	t->eos = in->eos;
}

void lmk_arctok_free(lmk_arctok *t)
{
	free(t->scratch);
	t->scratch = NULL;
	t->scap = 0;
}

int lmk_arctok_encode(void *arg, const char *text, size_t len, int32_t *out, int cap)
{
	lmk_arctok *t = arg;

	if (!t->bpe) {
		if (len > INT_MAX)
			return lmk_err(LMK_EINVAL, "arctok: text of %zu bytes", len);
		if ((int)len <= cap)
			lmk_bytetok_encode(text, len, out, 0);
		return (int)len;
	}
	int64_t n = lmk_bpe_encode(t->bpe, text, len, 0, &t->scratch, &t->scap);
	if (n < 0)
		return (int)n;
	if (n > INT_MAX)
		return lmk_err(LMK_EINVAL, "arctok: text of %zu bytes", len);
	memcpy(out, t->scratch, (size_t)(n < cap ? n : cap) * sizeof *out);
	return (int)n;
}

size_t lmk_arctok_piece(const lmk_arctok *t, int32_t id, char *buf, size_t cap)
{
	size_t n = 0;
	const char *s = NULL;
	char b;

	if (cap == 0)
		return 0;
	if (!t->bpe) {
		if (id >= 0 && id < 256) {
			b = (char)id;
			s = &b;
			n = 1;
		}
	} else if (!lmk_bpe_is_special(t->bpe, id)) {
		s = lmk_bpe_token(t->bpe, id, &n);
	}
	if (!s)
		n = 0;
	if (n > cap - 1)
		n = cap - 1;
	if (n)
		memcpy(buf, s, n);
	buf[n] = 0;
	return n;
}

/* ---- batches and the loss ---- */

int lmk_arctrain_batch(const lmk_arc_example *const *ex, int n, int32_t **ids, int32_t **tgt,
		       size_t *cap)
{
	int T = 0;

	if (n < 1)
		return lmk_err(LMK_EINVAL, "arctrain: an empty batch");
	for (int b = 0; b < n; b++) {
		if (ex[b]->n < 2)
			return lmk_err(LMK_EINVAL, "arctrain: example %d: expected 2 tokens or more, "
				       "found %d", b, ex[b]->n);
		if (ex[b]->n - 1 > T)
			T = ex[b]->n - 1;
	}
	size_t need = (size_t)n * (size_t)T;
	if (need > *cap) {
		int32_t *a = realloc(*ids, need * sizeof *a);
		if (a)
			*ids = a;
		int32_t *g = a ? realloc(*tgt, need * sizeof *g) : NULL;
		if (!a || !g)
			return lmk_err(LMK_ENOMEM, "arctrain: a batch of %d x %d", n, T);
		*tgt = g;
		*cap = need;
	}
	for (int b = 0; b < n; b++) {
		const lmk_arc_example *e = ex[b];
		int32_t *x = *ids + (size_t)b * T, *y = *tgt + (size_t)b * T;
		for (int i = 0; i < T; i++) {
			int in = i + 1 < e->n;
			x[i] = i < e->n ? e->ids[i] : 0;
			y[i] = in && e->mask[i + 1] ? e->ids[i + 1] : -1;
		}
	}
	return T;
}

lmk_tensor *lmk_arctrain_loss(lmk_ctx *c, lmk_llama *m, const int32_t *ids, const int32_t *tgt,
			      int B, int T, lmk_tensor **logits, int64_t *count)
{
	const int64_t shape[2] = {B, T};
	lmk_tensor *x = lmk_tensor_upload(c, LMK_I32, 2, shape, ids);
	lmk_tensor *y = x ? lmk_tensor_upload(c, LMK_I32, 2, shape, tgt) : NULL;
	lmk_tensor *z = y ? lmk_llama_forward(c, m, x, NULL, NULL) : NULL;
	if (logits)
		*logits = z;
	return lmk_cross_entropy(c, z, y, -1, count);
}

/* ---- training ---- */

void lmk_arctrain_config_default(lmk_arctrain_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->batch = 2;
	cfg->lr = 5e-5f;
	cfg->min_lr = 0;
	cfg->warmup = 0;
	cfg->total = 0;
	cfg->schedule = LMK_SCHED_COSINE;
	cfg->weight_decay = 0;
	cfg->beta1 = 0.9f;
	cfg->beta2 = 0.999f;
	cfg->eps = 1e-8f;
	cfg->grad_clip = 1;
}

int lmk_arctrain_init(lmk_arctrain *tr, const lmk_arctrain_config *cfg, lmk_ctx *c,
		      lmk_llama *m, lmk_params *p)
{
	lmk_adamw_config ac;

	memset(tr, 0, sizeof *tr);
	if (cfg->batch < 1 || !(cfg->lr >= 0) || cfg->warmup < 0)
		return lmk_err(LMK_EINVAL, "arctrain: bad settings (batch %d, lr %g, warmup %lld)",
			       cfg->batch, cfg->lr, (long long)cfg->warmup);
	if (!p->trainable || p->dev != c->dev)
		return lmk_err(LMK_EINVAL, "arctrain: the parameters must be trainable and where the "
			       "context computes");
	tr->cfg = *cfg;
	tr->c = c;
	tr->m = m;
	tr->p = p;
	lmk_adamw_config_default(&ac);
	ac.beta1 = cfg->beta1;
	ac.beta2 = cfg->beta2;
	ac.eps = cfg->eps;
	ac.weight_decay = cfg->weight_decay;
	int rc = lmk_adamw_init(&tr->opt, p, &ac);
	if (rc < 0)
		return rc;
	tr->sched.kind = cfg->schedule;
	tr->sched.lr = cfg->lr;
	tr->sched.min_lr = cfg->min_lr;
	tr->sched.warmup = cfg->warmup;
	tr->sched.total = cfg->total > cfg->warmup ? cfg->total : cfg->warmup + 1;
	return 0;
}

void lmk_arctrain_free(lmk_arctrain *tr)
{
	if (tr->p)
		lmk_adamw_free(&tr->opt);
	free(tr->ids);
	free(tr->tgt);
	memset(tr, 0, sizeof *tr);
}

int lmk_arctrain_step(lmk_arctrain *tr, const lmk_arc_example *const *ex, int n,
		      lmk_arctrain_stats *st)
{
	lmk_ctx *c = tr->c;
	int T = lmk_arctrain_batch(ex, n, &tr->ids, &tr->tgt, &tr->cap);
	float loss = NAN;
	int rc;

	if (T < 0)
		return T;
	memset(st, 0, sizeof *st);
	for (size_t i = 0; i < (size_t)n * T; i++)
		st->targets += tr->tgt[i] >= 0;
	st->tokens = (int64_t)n * T;
	for (int b = 0; b < n; b++)
		st->real += ex[b]->n - 1;
	lmk_ctx_reset(c);
	lmk_params_zero_grad(tr->p);
	c->grad_enabled = 1;
	lmk_tensor *l = lmk_arctrain_loss(c, tr->m, tr->ids, tr->tgt, n, T, NULL, NULL);
	if (!l)
		return lmk_errcode() ? lmk_errcode() : LMK_EINVAL;
	if ((rc = lmk_backward(c, l, 1.0f)) < 0 || (rc = lmk_tensor_read_f32(c, l, 0, &loss)) < 0) {
		lmk_ctx_reset(c);
		return rc;
	}
	lmk_ctx_reset(c);
	st->loss = loss;
	if (!isfinite(loss))
		return lmk_err(LMK_ENUM, "arctrain: step %lld: the loss is %g", (long long)tr->step,
			       loss);
	st->grad_norm = lmk_clip_grad_norm(tr->p, tr->cfg.grad_clip);
	if (isnan(st->grad_norm) && lmk_errcode())
		return lmk_errcode();
	if (!isfinite(st->grad_norm))
		return lmk_err(LMK_ENUM, "arctrain: step %lld: the gradient's norm is %g",
			       (long long)tr->step, st->grad_norm);
	st->lr = lmk_schedule_lr(&tr->sched, tr->step);
	lmk_adamw_step(&tr->opt, st->lr);
	tr->step++;
	if (c->dev != LMK_DEV_CPU && (rc = lmk_ctx_sync(c)) < 0)
		return rc;
	return 0;
}

static int frame_i64_meta(lmk_frame *f, const char *key, int64_t v)
{
	char b[32];
	snprintf(b, sizeof b, "%lld", (long long)v);
	return lmk_frame_set_meta(f, key, b);
}

int lmk_arctrain_save(const lmk_arctrain *tr, const char *path, const char *const *extra)
{
	const size_t n = tr->p->n;
	const int64_t shape[1] = {(int64_t)n};
	float *buf = malloc(3 * (n ? n : 1) * sizeof *buf);
	lmk_frame f;
	int rc;

	if (!buf)
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate the state", path);
	lmk_frame_init(&f);
	rc = lmk_params_copy_to_host(tr->p, 0, buf);
	if (rc == 0)
		rc = lmk_adamw_moments_to_host(&tr->opt, buf + n, buf + 2 * n);
	if (rc == 0)
		rc = lmk_frame_set_meta(&f, "kind", STATE_KIND);
	if (rc == 0)
		rc = lmk_frame_set_meta(&f, "schema", STATE_SCHEMA);
	if (rc == 0)
		rc = frame_i64_meta(&f, "step", tr->step);
	if (rc == 0)
		rc = frame_i64_meta(&f, "adamw_t", tr->opt.t);
	for (int i = 0; rc == 0 && extra && extra[i]; i += 2)
		if (extra[i + 1])
			rc = lmk_frame_set_meta(&f, extra[i], extra[i + 1]);
	if (rc == 0)
		rc = lmk_frame_add(&f, "params", LMK_F32, 1, shape, buf);
	if (rc == 0)
		rc = lmk_frame_add(&f, "adamw.m", LMK_F32, 1, shape, buf + n);
	if (rc == 0)
		rc = lmk_frame_add(&f, "adamw.v", LMK_F32, 1, shape, buf + 2 * n);
	if (rc == 0)
		rc = lmk_frame_save(path, &f, 0);
	lmk_frame_free(&f);
	free(buf);
	return rc < 0 ? lmk_err_wrap(rc, "%s", path) : 0;
}

static int meta_i64(const lmk_frame *f, const char *path, const char *key, int64_t *v)
{
	const char *s = lmk_frame_meta(f, key);
	char *end;

	if (!s)
		return lmk_err(LMK_EFORMAT, "%s: no metadata '%s'", path, key);
	long long x = strtoll(s, &end, 10);
	if (!*s || *end || x < 0)
		return lmk_err(LMK_EFORMAT, "%s: metadata '%s': expected a count, found '%s'", path,
			       key, s);
	*v = x;
	return 0;
}

int lmk_arctrain_restore(lmk_arctrain *tr, const char *path, lmk_frame *st)
{
	const char *names[3] = {"params", "adamw.m", "adamw.v"};
	const float *d[3];
	const size_t n = tr->p->n;
	int64_t step = 0, t = 0; /* set by meta_i64; initialised for -O3's warnings */
	int rc = lmk_frame_load(path, st);

	if (rc < 0)
		return rc;
	const char *k = lmk_frame_meta(st, "kind"), *s = lmk_frame_meta(st, "schema");
	if (!k || strcmp(k, STATE_KIND) || !s || strcmp(s, STATE_SCHEMA))
		return lmk_err(LMK_EFORMAT, "%s: expected kind %s schema %s, found %s schema %s", path,
			       STATE_KIND, STATE_SCHEMA, k ? k : "none", s ? s : "none");
	if ((rc = meta_i64(st, path, "step", &step)) < 0 || (rc = meta_i64(st, path, "adamw_t", &t)) < 0)
		return rc;
	for (int i = 0; i < 3; i++) {
		const lmk_ftensor *f = lmk_frame_find(st, names[i]);
		if (!f || f->dtype != LMK_F32 || f->ndim != 1 || (size_t)f->shape[0] != n)
			return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected F32 (%zu), found %s", path,
				       names[i], n, f ? "another dtype or shape" : "none");
		d[i] = f->data;
	}
	/* the frame's data may be unaligned (a mapping at any offset) */
	float *buf = malloc(3 * (n ? n : 1) * sizeof *buf);
	if (!buf)
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate the state", path);
	for (int i = 0; i < 3; i++)
		memcpy(buf + i * n, d[i], n * sizeof *buf);
	rc = lmk_params_copy_from_host(tr->p, buf);
	if (rc == 0)
		rc = lmk_adamw_moments_from_host(&tr->opt, buf + n, buf + 2 * n);
	free(buf);
	if (rc < 0)
		return lmk_err_wrap(rc, "%s", path);
	tr->step = step;
	tr->opt.t = t;
	return 0;
}

/* ---- data ---- */

/* A seed of its own for (seed, epoch, i): one Philox block, so that epochs
 * and tasks never share a stream. */
static uint64_t subseed(uint64_t seed, int64_t epoch, int64_t i)
{
	uint32_t w[4];
	lmk_philox(seed, ((uint64_t)epoch << 32) ^ (uint64_t)i ^ 0x5eed000000000000ull, w);
	return (uint64_t)w[0] | (uint64_t)w[1] << 32;
}

int lmk_arctrain_epoch(lmk_arc_examples *e, const lmk_arc_task *t, int n,
		       const lmk_arctrain_data *d, int64_t epoch, const lmk_arc_example_opts *o)
{
	int added = 0, rc = 0;

	for (int i = 0; i < n && rc >= 0; i++) {
		uint64_t s = subseed(d->seed, epoch, i);
		if (d->loo > 0 && t[i].ntrain >= 2) {
			lmk_arc_task *loo;
			int k = lmk_arc_ttt_tasks(&t[i], d->loo, d->flags, s, &loo);
			if (k < 0)
				return k;
			rc = lmk_arc_examples_add(e, loo, k, o);
			lmk_arc_tasks_free(loo, k);
			if (rc < 0)
				break;
			added += rc;
		}
		if (d->aug < 0)
			continue;
		if ((rc = lmk_arc_examples_add(e, &t[i], 1, o)) < 0)
			break;
		added += rc;
		lmk_rng r;
		lmk_rng_init(&r, s ^ 0xa06a06a06ull);
		for (int j = 0; j < d->aug && rc >= 0; j++) {
			lmk_arc_tf tf;
			lmk_arc_task a;
			lmk_arc_tf_random(&tf, &r, t[i].ntrain, d->flags);
			if ((rc = lmk_arc_task_apply(&a, &t[i], &tf)) < 0)
				break;
			rc = lmk_arc_examples_add(e, &a, 1, o);
			lmk_arc_task_free(&a);
			if (rc >= 0)
				added += rc;
		}
	}
	return rc < 0 ? rc : added;
}

void lmk_arctrain_order(int *perm, int n, uint64_t seed, int64_t epoch)
{
	lmk_rng r;

	for (int i = 0; i < n; i++)
		perm[i] = i;
	lmk_rng_init(&r, subseed(seed, epoch, -1));
	lmk_rng_shuffle(&r, perm, n);
}

/* Sorting a window by length, ties by position (qsort is not stable). */
struct bylen {
	int len, at, idx;
};

static int cmp_bylen(const void *a, const void *b)
{
	const struct bylen *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->at < y->at ? -1 : x->at > y->at;
}

int lmk_arctrain_order_grouped(int *perm, const lmk_arc_examples *ex, int batch, int group,
			       uint64_t seed, int64_t epoch)
{
	const int n = ex->n;

	lmk_arctrain_order(perm, n, seed, epoch);
	if (group <= 0 || batch <= 1 || n <= batch)
		return 0;
	const int64_t w64 = (int64_t)group * batch;
	const int w = w64 < n ? (int)w64 : n;
	struct bylen *win = malloc((size_t)w * sizeof *win);
	int *order = malloc(((size_t)w / batch + 1) * sizeof *order);
	int *tmp = malloc((size_t)w * sizeof *tmp);
	if (!win || !order || !tmp) {
		free(win);
		free(order);
		free(tmp);
		return lmk_err(LMK_ENOMEM, "arctrain: an order of %d examples", n);
	}
	lmk_rng r;
	lmk_rng_init(&r, subseed(seed, epoch, -2));
	for (int s0 = 0; s0 < n; s0 += w) {
		const int m = n - s0 < w ? n - s0 : w, nb = (m + batch - 1) / batch;
		for (int i = 0; i < m; i++)
			win[i] = (struct bylen){ex->ex[perm[s0 + i]].n, i, perm[s0 + i]};
		qsort(win, (size_t)m, sizeof *win, cmp_bylen);
		/* whole batches in a random order; a short one (the window's
		 * longest) stays last, where the epoch's short batch goes */
		const int full = m / batch;
		for (int b = 0; b < nb; b++)
			order[b] = b;
		lmk_rng_shuffle(&r, order, full);
		int k = 0;
		for (int b = 0; b < nb; b++)
			for (int i = order[b] * batch; i < m && i < (order[b] + 1) * batch; i++)
				tmp[k++] = win[i].idx;
		memcpy(perm + s0, tmp, (size_t)m * sizeof *perm);
	}
	free(win);
	free(order);
	free(tmp);
	return 0;
}

/* ---- adapters ---- */

static int param_index(const lmk_params *p, const lmk_tensor *t)
{
	for (int i = 0; i < p->nt; i++)
		if (&p->t[i] == t)
			return i;
	return -1;
}

/* The adapter's parameters to a host image and back, wherever they are. */
static float *image(const lmk_params *p)
{
	float *h = calloc(p->n ? p->n : 1, sizeof *h);
	if (!h)
		lmk_err(LMK_ENOMEM, "adapter: cannot allocate %zu floats", p->n);
	return h;
}

int lmk_arctrain_lora_reset(lmk_lora *a, uint64_t seed)
{
	if (a->cfg.onesided)
		return lmk_err(LMK_EINVAL, "adapter: reset is for two-sided LoRA");
	float *h = image(&a->params);
	lmk_rng r;
	if (!h)
		return LMK_ENOMEM;
	lmk_rng_init(&r, seed);
	for (int i = 0; i < a->n; i++) {
		const lmk_lora_slot *s = &a->slots[i];
		int k = param_index(&a->params, s->a);
		if (k < 0) {
			free(h);
			return lmk_err(LMK_EINVAL, "adapter: %s: lora_A is not a trained factor", s->module);
		}
		float *d = h + a->params.offset[k];
		const float bound = 1.0f / sqrtf((float)s->a->shape[1]);
		for (int64_t j = 0; j < s->a->n; j++)
			d[j] = bound * (2.0f * lmk_rng_uniform(&r) - 1.0f);
	}
	int rc = lmk_params_copy_from_host(&a->params, h);
	free(h);
	return rc;
}

static int read_config(const lmk_lora *a, const char *dir)
{
	char *path = lmk_path_join(dir, "adapter_config.json");
	json_error_t je;
	json_t *o;
	int rc = 0;

	if (!path)
		return LMK_ENOMEM;
	if (!(o = json_load_file(path, 0, &je))) {
		rc = lmk_err(LMK_EIO, "%s: %s", path, je.text);
	} else {
		json_t *r = json_object_get(o, "r"), *al = json_object_get(o, "lora_alpha");
		if (!json_is_integer(r) || json_integer_value(r) != a->cfg.r || !json_is_number(al) ||
		    fabs(json_number_value(al) - a->cfg.alpha) > 1e-6 * fabs(a->cfg.alpha))
			rc = lmk_err(LMK_EFORMAT, "%s: expected r %d and lora_alpha %g", path, a->cfg.r,
				     a->cfg.alpha);
		json_decref(o);
	}
	free(path);
	return rc;
}

int lmk_arctrain_lora_read(lmk_lora *a, const char *dir)
{
	char *path = lmk_path_join(dir, "adapter_model.safetensors");
	lmk_frame f;
	float *h = NULL;
	int rc;

	if (!path)
		return LMK_ENOMEM;
	lmk_frame_init(&f);
	if ((rc = read_config(a, dir)) < 0 || (rc = lmk_frame_load(path, &f)) < 0)
		goto out;
	if (f.ntensors != a->params.nt) {
		rc = lmk_err(LMK_EFORMAT, "%s: expected %d tensors, found %d", path, a->params.nt,
			     f.ntensors);
		goto out;
	}
	if (!(h = image(&a->params))) {
		rc = LMK_ENOMEM;
		goto out;
	}
	for (int i = 0; i < a->params.nt && rc == 0; i++) {
		const lmk_tensor *t = &a->params.t[i];
		const lmk_ftensor *ft = lmk_frame_find(&f, t->name);
		if (!ft) {
			rc = lmk_err(LMK_EFORMAT, "%s: no tensor '%s'", path, t->name);
			break;
		}
		if (ft->ndim != 2 || ft->shape[0] != t->shape[0] || ft->shape[1] != t->shape[1] ||
		    (ft->dtype != LMK_F32 && ft->dtype != LMK_BF16 && ft->dtype != LMK_F16)) {
			rc = lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected F32, BF16 or F16 (%lld,%lld)",
				     path, t->name, (long long)t->shape[0], (long long)t->shape[1]);
			break;
		}
		lmk_dtype_to_f32(ft->dtype, ft->data, h + a->params.offset[i], (size_t)t->n);
	}
	if (rc == 0)
		rc = lmk_params_copy_from_host(&a->params, h);
out:
	free(h);
	lmk_frame_free(&f);
	free(path);
	return rc;
}

/* ---- prediction ---- */

/* The answer grows in out; generation stops once the text decides its
 * grid (lmk_arc_scan_byte): what it would have added changes nothing. */
struct answer {
	const lmk_arctok *tok;
	char *out;
	size_t cap, len;
	lmk_arc_scan scan;
};

static int on_token(void *arg, int32_t id)
{
	struct answer *a = arg;
	char piece[256];
	size_t n = lmk_arctok_piece(a->tok, id, piece, sizeof piece);
	int stop = 0;

	for (size_t i = 0; i < n && !stop; i++) {
		if (a->len + 1 < a->cap)
			a->out[a->len++] = piece[i];
		else
			stop = 1;
		stop |= lmk_arc_scan_byte(&a->scan, piece[i]);
	}
	a->out[a->len] = 0;
	return stop;
}

/* The prompts are encoded and go into their own caches one by one, then
 * decoded together, one token for every unfinished answer per step
 * (lmk_llama_decode_batch): the same greedy answers as one at a time. */
int lmk_arctrain_predict(void *arg, int n, const char *const *prompts, char *const *outs,
			 size_t cap)
{
	lmk_arctrain_predictor *p = arg;
	if (n <= 0)
		return 0;
	lmk_ctx *c = p->c;
	lmk_llama *m = p->m;
	/* the largest grid, its end marker and eos: no token is shorter than
	 * a byte */
	const int most = LMK_ARC_MAXSIDE * (LMK_ARC_MAXSIDE + 1) + 3;
	const int V = m->cfg.vocab_size;
	struct row {
		lmk_kvcache kv;
		struct answer a;
		int left, live;
	} *rows = calloc((size_t)n, sizeof *rows);
	float *logits = malloc((size_t)n * V * sizeof *logits);
	float *step = malloc((size_t)n * V * sizeof *step);
	int32_t *toks = malloc((size_t)n * sizeof *toks);
	int *which = malloc((size_t)n * sizeof *which);
	lmk_kvcache **kvs = malloc((size_t)n * sizeof *kvs);
	int32_t *ids = NULL;
	int rc = 0, saved = c->grad_enabled;
	lmk_sampler s = {.temperature = 0, .top_k = 0, .top_p = 1};

	if (!rows || !logits || !step || !toks || !which || !kvs) {
		rc = lmk_err(LMK_ENOMEM, "predict: out of memory");
		goto done;
	}
	c->grad_enabled = 0;
	for (int i = 0; i < n && rc >= 0; i++) {
		size_t len = strlen(prompts[i]);
		int32_t *ni = realloc(ids, (len + 2) * sizeof *ids);
		if (!ni) {
			rc = lmk_err(LMK_ENOMEM, "predict: out of memory");
			break;
		}
		ids = ni;
		int k = 0;
		if (p->tok->bos >= 0)
			ids[k++] = p->tok->bos;
		/* BPE never gives more tokens than bytes: room for all */
		int nt = lmk_arctok_encode(p->tok, prompts[i], len, ids + k, (int)len);
		if (nt < 0) {
			rc = nt;
			break;
		}
		k += nt;
		outs[i][0] = 0;
		int max_new = p->max_len - k < most ? p->max_len - k : most;
		if (max_new < 2) {
			p->nlong++;
			continue;
		}
		struct row *r = &rows[i];
		if ((rc = lmk_kvcache_init_ctx(&r->kv, m, k + max_new, c)) < 0)
			break;
		r->live = 1;
		r->left = max_new;
		r->a = (struct answer){.tok = p->tok, .out = outs[i], .cap = cap};
		lmk_ctx_reset(c);
		rc = lmk_llama_decode(c, m, &r->kv, ids, k, logits + (size_t)i * V);
		lmk_ctx_reset(c);
	}
	while (rc >= 0) {
		int nb = 0;
		for (int i = 0; i < n; i++) {
			struct row *r = &rows[i];
			if (!r->live)
				continue;
			int tok = lmk_sample(&s, logits + (size_t)i * V, V);
			if (tok < 0) {
				rc = tok;
				break;
			}
			p->tokens++;
			r->left--;
			int stop = tok == p->tok->eos;
			for (int e = 0; e < m->cfg.neos; e++)
				stop |= tok == m->cfg.eos_token_id[e];
			stop |= on_token(&r->a, tok);
			if (stop || r->left == 0) {
				r->live = 0;
				lmk_kvcache_free(&r->kv);
				continue;
			}
			toks[nb] = tok;
			which[nb] = i;
			kvs[nb++] = &r->kv;
		}
		if (rc < 0 || nb == 0)
			break;
		lmk_ctx_reset(c);
		rc = lmk_llama_decode_batch(c, m, kvs, toks, nb, step);
		lmk_ctx_reset(c);
		for (int j = 0; rc >= 0 && j < nb; j++)
			memcpy(logits + (size_t)which[j] * V, step + (size_t)j * V, (size_t)V * sizeof *step);
	}
	c->grad_enabled = saved;
done:
	for (int i = 0; rows && i < n; i++)
		if (rows[i].live)
			lmk_kvcache_free(&rows[i].kv);
	free(rows);
	free(logits);
	free(step);
	free(toks);
	free(which);
	free(kvs);
	free(ids);
	return rc < 0 ? rc : 0;
}
