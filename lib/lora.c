/* lora.c: LoRA and one-sided LoRA adapters (lora.h), in PEFT's files. */
#include <cblas.h>
/* OpenBLAS pulls in <complex.h>, whose I would shadow our in-feature counts */
#undef I
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "fileio.h"
#include "frame.h"
#include "galore.h"
#include "lora.h"
#include "ops.h"
#include "rng.h"
#if LMK_CUDA
#include "../cuda/blas_cuda.h"
#include "../cuda/cuda.h"
#include "../cuda/ops_cuda.h"
#endif

#define PEFT_PREFIX "base_model.model."

/* ---- settings strings and targets ------------------------------------- */

int lmk_spec_begin(const char *spec, char *kind, size_t size, const char **rest)
{
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
	if (n == 0 || n >= size)
		return lmk_err(LMK_EINVAL, "'%s': expected KIND or KIND:KEY=VALUE,...", spec);
	memcpy(kind, spec, n);
	kind[n] = 0;
	*rest = colon ? colon + 1 : spec + n;
	return 0;
}

/* The length of the item at s (up to a comma or the end). */
static size_t item_len(const char *s) { return strcspn(s, ","); }

int lmk_spec_next(const char **rest, char *key, size_t ksize, char *val, size_t vsize)
{
	const char *s = *rest;
	if (!*s)
		return 0;
	size_t n = item_len(s);
	const char *eq = memchr(s, '=', n);
	if (!eq || eq == s || (size_t)(eq - s) >= ksize)
		return lmk_err(LMK_EINVAL, "'%.*s': expected KEY=VALUE", (int)n, s);
	memcpy(key, s, (size_t)(eq - s));
	key[eq - s] = 0;
	/* the value, and the items after it that have no '=' */
	const char *v = eq + 1, *end = s + n;
	while (*end == ',' && end[1] && !memchr(end + 1, '=', item_len(end + 1)))
		end += 1 + item_len(end + 1);
	if ((size_t)(end - v) >= vsize)
		return lmk_err(LMK_EINVAL, "'%s': value too long", key);
	memcpy(val, v, (size_t)(end - v));
	val[end - v] = 0;
	*rest = *end ? end + 1 : end;
	if (*end && !**rest)
		return lmk_err(LMK_EINVAL, "'%s': a trailing comma", s);
	return 1;
}

static const char *const short_names[] = {"q", "k", "v", "o", "gate", "up", "down"};

static int is_short(const char *t, size_t n)
{
	for (size_t i = 0; i < sizeof short_names / sizeof *short_names; i++)
		if (strlen(short_names[i]) == n && !strncmp(short_names[i], t, n))
			return 1;
	return 0;
}

int lmk_module_match(const char *targets, const char *module)
{
	const char *last = strrchr(module, '.');
	last = last ? last + 1 : module;
	for (const char *t = targets; *t;) {
		size_t n = item_len(t);
		char pat[256];
		if (n > 0 && n < sizeof pat) {
			memcpy(pat, t, n);
			pat[n] = 0;
			if (!strcmp(pat, "all")) {
				if (!strncmp(module, "model.layers.", 13))
					return 1;
			} else if (is_short(t, n)) {
				if (strlen(last) == n + 5 && !strncmp(last, t, n) && !strcmp(last + n, "_proj"))
					return 1;
			} else if (!fnmatch(pat, module, 0) || !strcmp(pat, last)) {
				return 1;
			}
		}
		t += n;
		if (*t == ',')
			t++;
	}
	return 0;
}

/* ---- configuration ---------------------------------------------------- */

void lmk_lora_config_default(lmk_lora_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->r = 8;
	cfg->alpha = 16.0f;
	cfg->dropout = 0.0f;
	snprintf(cfg->targets, sizeof cfg->targets, "q,v");
	cfg->side = LMK_SIDE_AUTO;
	cfg->proj = LMK_PROJ_GAUSSIAN;
}

static int parse_num(const char *key, const char *val, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(val, &end);
	if (!*val || *end || !(v >= lo && v <= hi))
		return lmk_err(LMK_EINVAL, "adapter: %s=%s: expected a number in [%g, %g]", key, val,
			       lo, hi);
	*out = v;
	return 0;
}

int lmk_lora_config_parse(lmk_lora_config *cfg, const char *spec)
{
	char kind[32], key[32], val[LMK_LORA_TARGETS];
	const char *rest;
	int rc = lmk_spec_begin(spec, kind, sizeof kind, &rest);
	if (rc < 0)
		return rc;
	if (!strcmp(kind, "lora"))
		cfg->onesided = 0;
	else if (!strcmp(kind, "onesided"))
		cfg->onesided = 1;
	else
		return lmk_err(LMK_EINVAL, "adapter '%s': expected lora:KEY=VALUE,... or "
			       "onesided:KEY=VALUE,...", spec);
	while ((rc = lmk_spec_next(&rest, key, sizeof key, val, sizeof val)) > 0) {
		double v = 0;
		if (!strcmp(key, "r")) {
			if ((rc = parse_num(key, val, 1, 65536, &v)) < 0)
				return rc;
			if (v != (int)v)
				return lmk_err(LMK_EINVAL, "adapter: r=%s: expected an integer", val);
			cfg->r = (int)v;
		} else if (!strcmp(key, "alpha")) {
			if ((rc = parse_num(key, val, 1e-6, 1e6, &v)) < 0)
				return rc;
			cfg->alpha = (float)v;
		} else if (!strcmp(key, "dropout")) {
			if ((rc = parse_num(key, val, 0, 0.999, &v)) < 0)
				return rc;
			cfg->dropout = (float)v;
		} else if (!strcmp(key, "rslora")) {
			if ((rc = parse_num(key, val, 0, 1, &v)) < 0)
				return rc;
			cfg->rslora = v != 0;
		} else if (!strcmp(key, "targets")) {
			snprintf(cfg->targets, sizeof cfg->targets, "%s", val);
		} else if (!strcmp(key, "side")) {
			if (!strcmp(val, "auto"))
				cfg->side = LMK_SIDE_AUTO;
			else if (!strcmp(val, "left"))
				cfg->side = LMK_SIDE_LEFT;
			else if (!strcmp(val, "right"))
				cfg->side = LMK_SIDE_RIGHT;
			else
				return lmk_err(LMK_EINVAL, "adapter: side=%s: expected auto, left or right",
					       val);
		} else if (!strcmp(key, "proj")) {
			if ((rc = lmk_proj_parse(val, &cfg->proj)) < 0)
				return rc;
		} else {
			return lmk_err(LMK_EINVAL, "adapter: unknown setting '%s' (expected r, alpha, "
				       "dropout, rslora, targets%s)", key,
				       cfg->onesided ? ", side, proj" : "");
		}
	}
	if (rc == 0 && !cfg->onesided && (strstr(rest, "side=") || strstr(rest, "proj=")))
		return lmk_err(LMK_EINVAL, "adapter: side and proj are for onesided adapters");
	return rc;
}

void lmk_lora_config_str(const lmk_lora_config *cfg, char *buf, size_t size)
{
	static const char *const sides[] = {"auto", "left", "right"};
	if (cfg->onesided)
		snprintf(buf, size, "onesided:r=%d,alpha=%g,dropout=%g,side=%s,proj=%s,targets=%s",
			 cfg->r, cfg->alpha, cfg->dropout, sides[cfg->side], lmk_proj_name(cfg->proj),
			 cfg->targets);
	else
		snprintf(buf, size, "lora:r=%d,alpha=%g,dropout=%g%s,targets=%s", cfg->r, cfg->alpha,
			 cfg->dropout, cfg->rslora ? ",rslora=1" : "", cfg->targets);
}

/* ---- making and dropping ---------------------------------------------- */

int lmk_module_of(const char *name, char *buf, size_t size)
{
	size_t n = strlen(name);
	if (n < 8 || strcmp(name + n - 7, ".weight") || n - 7 >= size)
		return 0;
	memcpy(buf, name, n - 7);
	buf[n - 7] = 0;
	return 1;
}

void lmk_lora_free(lmk_lora *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->slots[i].module);
	free(a->slots);
	lmk_params_free(&a->params);
	lmk_params_free(&a->frozen);
	memset(a, 0, sizeof *a);
}

static float lora_scale(const lmk_lora_config *cfg)
{
	return cfg->rslora ? cfg->alpha / sqrtf((float)cfg->r) : cfg->alpha / (float)cfg->r;
}

static int tensor_index(const lmk_params *p, const lmk_tensor *t)
{
	return (int)(t - p->t);
}

/* Registers the slots' factors and lays them out; modules[i] of n. */
static int make_slots(lmk_lora *a, lmk_params *base, char **modules, lmk_tensor **w, int n)
{
	int rc = 0;
	char name[320];
	lmk_params_init(&a->params, 1);
	lmk_params_init(&a->frozen, 0);
	a->slots = calloc((size_t)n, sizeof *a->slots);
	if (!a->slots)
		return lmk_err(LMK_ENOMEM, "adapter: cannot allocate %d slots", n);
	a->n = n;
	/* indices first: tensors move until both sets are laid out */
	int *ia = malloc(2 * (size_t)n * sizeof *ia), *ib = ia ? ia + n : NULL;
	if (!ia)
		return lmk_err(LMK_ENOMEM, "adapter: cannot allocate");
	for (int i = 0; i < n && rc == 0; i++) {
		lmk_lora_slot *s = &a->slots[i];
		const int64_t O = w[i]->shape[0], I = w[i]->shape[1], r = a->cfg.r;
		s->module = modules[i];
		modules[i] = NULL;
		s->base = w[i];
		s->boff = base->offset[tensor_index(base, w[i])];
		if (a->cfg.onesided)
			s->frozen = a->cfg.side != LMK_SIDE_AUTO ? a->cfg.side
				  : lmk_galore_left(O, I) ? LMK_SIDE_LEFT : LMK_SIDE_RIGHT;
		if (r > O || r > I) {
			rc = lmk_err(LMK_EINVAL, "adapter: rank %lld exceeds the size of %s (%lld x %lld)",
				     (long long)r, s->module, (long long)O, (long long)I);
			break;
		}
		snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_A.weight", s->module);
		rc = lmk_params_add(s->frozen == LMK_SIDE_RIGHT ? &a->frozen : &a->params, name, 2,
				    (int64_t[]){r, I});
		ia[i] = rc;
		if (rc < 0)
			break;
		snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_B.weight", s->module);
		rc = lmk_params_add(s->frozen == LMK_SIDE_LEFT ? &a->frozen : &a->params, name, 2,
				    (int64_t[]){O, r});
		ib[i] = rc;
		rc = rc < 0 ? rc : 0;
	}
	if (rc == 0)
		rc = lmk_params_alloc(&a->params);
	if (rc == 0)
		rc = lmk_params_alloc(&a->frozen);
	for (int i = 0; rc == 0 && i < n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		s->a = &(s->frozen == LMK_SIDE_RIGHT ? &a->frozen : &a->params)->t[ia[i]];
		s->b = &(s->frozen == LMK_SIDE_LEFT ? &a->frozen : &a->params)->t[ib[i]];
	}
	free(ia);
	return rc;
}

/* The trained factors' initial values: LoRA's A uniform(+-1/sqrt(I)) (what
 * kaiming_uniform_ with a = sqrt(5) gives) and B zero; one-sided: zero. */
static void init_trained(lmk_lora *a, uint64_t seed)
{
	lmk_rng rng;
	lmk_rng_init(&rng, seed);
	for (int i = 0; i < a->n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		if (s->frozen != LMK_SIDE_LEFT)
			memset(s->b->data, 0, (size_t)s->b->n * sizeof(float));
		if (s->frozen == LMK_SIDE_RIGHT)
			continue;
		float *d = s->a->data;
		const float bound = 1.0f / sqrtf((float)s->a->shape[1]);
		for (int64_t j = 0; j < s->a->n; j++)
			d[j] = a->cfg.onesided ? 0.0f : bound * (2.0f * lmk_rng_uniform(&rng) - 1.0f);
	}
}

int lmk_lora_init(lmk_lora *a, const lmk_lora_config *cfg, lmk_params *base, uint64_t seed)
{
	memset(a, 0, sizeof *a);
	if (cfg->r < 1)
		return lmk_err(LMK_EINVAL, "adapter: expected a rank >= 1, found %d", cfg->r);
	if (base->dev != LMK_DEV_CPU)
		return lmk_err(LMK_EINVAL, "adapter: make it before the base goes to the device");
	a->cfg = *cfg;
	a->scale = lora_scale(cfg);
	char **mods = calloc((size_t)(base->nt ? base->nt : 1), sizeof *mods);
	lmk_tensor **w = calloc((size_t)(base->nt ? base->nt : 1), sizeof *w);
	int n = 0, rc = mods && w ? 0 : lmk_err(LMK_ENOMEM, "adapter: cannot allocate");
	for (int i = 0; rc == 0 && i < base->nt; i++) {
		char mod[300];
		lmk_tensor *t = &base->t[i];
		if (t->ndim != 2 || !lmk_module_of(t->name, mod, sizeof mod) ||
		    !lmk_module_match(cfg->targets, mod))
			continue;
		/* the embedding and the head are not linear layers of a block */
		if (!strcmp(mod, "model.embed_tokens") || !strcmp(mod, "lm_head"))
			continue;
		if (!(mods[n] = strdup(mod)))
			rc = lmk_err(LMK_ENOMEM, "adapter: cannot allocate");
		w[n++] = t;
	}
	if (rc == 0 && n == 0)
		rc = lmk_err(LMK_EINVAL, "adapter: no linear layer matches the targets '%s'",
			     cfg->targets);
	if (rc == 0)
		rc = make_slots(a, base, mods, w, n);
	for (int i = 0; mods && i < n; i++)
		free(mods[i]);
	free(mods);
	free(w);
	if (rc == 0) {
		init_trained(a, seed);
		if (cfg->onesided && !lmk_proj_needs_grad(cfg->proj)) {
			lmk_rng rng;
			lmk_rng_init(&rng, seed ^ 0x9e3779b97f4a7c15ull);
			rc = lmk_lora_set_projectors(a, NULL, &rng);
		}
	}
	if (rc < 0)
		lmk_lora_free(a);
	return rc;
}

/* ---- forward ---------------------------------------------------------- */

const lmk_lora_slot *lmk_lora_find(const lmk_lora *a, const lmk_tensor *w)
{
	for (int i = 0; a && i < a->n; i++)
		if (a->slots[i].base == w)
			return &a->slots[i];
	return NULL;
}

lmk_tensor *lmk_lora_linear(lmk_ctx *c, const lmk_lora *a, lmk_tensor *x, lmk_tensor *w,
			    lmk_tensor *b)
{
	lmk_tensor *y = lmk_linear(c, x, w, b);
	const lmk_lora_slot *s = lmk_lora_find(a, w);
	if (!s)
		return y;
	lmk_tensor *h = lmk_linear(c, lmk_dropout(c, x, a->cfg.dropout), s->a, NULL);
	return lmk_add(c, y, lmk_scale(c, lmk_linear(c, h, s->b, NULL), a->scale));
}

/* ---- projectors and merging ------------------------------------------- */

/* Host float32 copies of a parameter set's data, and back. */
static float *host_copy(const lmk_params *p)
{
	float *h = malloc((p->n ? p->n : 1) * sizeof *h);
	if (!h) {
		lmk_err(LMK_ENOMEM, "adapter: cannot allocate %zu floats", p->n);
		return NULL;
	}
	if (p->dev == LMK_DEV_CPU) {
		memcpy(h, p->data, p->n * sizeof *h);
	} else if (lmk_params_copy_to_host(p, 0, h) < 0) {
		free(h);
		return NULL;
	}
	return h;
}

int lmk_lora_set_projectors(lmk_lora *a, const float *grads, lmk_rng *rng)
{
	if (!a->cfg.onesided)
		return lmk_err(LMK_EINVAL, "adapter: projectors are for onesided adapters");
	if (!grads && lmk_proj_needs_grad(a->cfg.proj))
		return lmk_err(LMK_EINVAL, "adapter: projector %s needs the gradients of the base",
			       lmk_proj_name(a->cfg.proj));
	lmk_params *f = &a->frozen;
	float *h = f->dev == LMK_DEV_CPU ? f->data : host_copy(f);
	if (!h)
		return lmk_errcode();
	int rc = 0;
	for (int i = 0; rc == 0 && i < a->n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		lmk_tensor *P = s->frozen == LMK_SIDE_LEFT ? s->b : s->a;
		rc = lmk_proj_make(h + f->offset[tensor_index(f, P)], s->frozen == LMK_SIDE_LEFT,
				   grads ? grads + s->boff : NULL, s->base->shape[0],
				   s->base->shape[1], a->cfg.r, a->cfg.proj, rng);
		if (rc < 0)
			rc = lmk_err_wrap(rc, "adapter: %s", s->module);
	}
	if (rc == 0 && f->dev != LMK_DEV_CPU)
		rc = lmk_params_copy_from_host(f, h);
	if (h != f->data)
		free(h);
	return rc;
}

/* W += s B A for slot i, on the host: W (O,I), B (O,r), A (r,I). */
static void merge_host(float *W, const float *A, const float *B, int64_t O, int64_t I, int r,
		       float s)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)I, r, s, B, r, A,
		    (int)I, 1.0f, W, (int)I);
}

int lmk_lora_merge(lmk_lora *a, int reinit, uint64_t seed)
{
	int rc = 0;
	for (int i = 0; rc == 0 && i < a->n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		const int64_t O = s->base->shape[0], I = s->base->shape[1];
		if (s->base->dev != s->a->dev || s->base->dev != s->b->dev)
			return lmk_err(LMK_EINVAL, "adapter: %s: the base and the adapter are on "
				       "different devices", s->module);
		if (s->base->dev == LMK_DEV_CPU) {
			merge_host(s->base->data, s->a->data, s->b->data, O, I, a->cfg.r, a->scale);
			continue;
		}
#if LMK_CUDA
		void *be = a->params.backend ? a->params.backend : a->frozen.backend;
		rc = lmk_cuda_sgemm(be, 0, 0, (int)O, (int)I, a->cfg.r, a->scale, s->b->data,
				    a->cfg.r, s->a->data, (int)I, 1.0f, s->base->data, (int)I);
		if (rc == 0 && s->base->lp)
			rc = lmk_cuda_convert(be, s->base->lp, LMK_BF16, s->base->data, LMK_F32,
					      s->base->n);
#else
		rc = lmk_err(LMK_EUNSUP, "adapter: cuda in a cpu-only build");
#endif
	}
	if (rc < 0 || !reinit)
		return rc;
	if (a->params.dev == LMK_DEV_CPU) {
		init_trained(a, seed);
		return 0;
	}
	/* on a device: initialise a host image of the trained factors */
	float *h = host_copy(&a->params);
	if (!h)
		return lmk_errcode();
	for (int i = 0; i < a->n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		/* point the slots at the image while it is filled */
		if (s->frozen != LMK_SIDE_RIGHT)
			s->a->data = h + a->params.offset[tensor_index(&a->params, s->a)];
		if (s->frozen != LMK_SIDE_LEFT)
			s->b->data = h + a->params.offset[tensor_index(&a->params, s->b)];
	}
	init_trained(a, seed);
	for (int i = 0; i < a->n; i++) {
		lmk_lora_slot *s = &a->slots[i];
		if (s->frozen != LMK_SIDE_RIGHT)
			s->a->data = a->params.data + a->params.offset[tensor_index(&a->params, s->a)];
		if (s->frozen != LMK_SIDE_LEFT)
			s->b->data = a->params.data + a->params.offset[tensor_index(&a->params, s->b)];
	}
	rc = lmk_params_copy_from_host(&a->params, h);
	free(h);
	return rc;
}

/* ---- PEFT files ------------------------------------------------------- */

int lmk_lora_save(const lmk_lora *a, const char *dir, const char *base_name)
{
	int rc = lmk_mkdirs(dir);
	if (rc < 0)
		return rc;
	float *hp = host_copy(&a->params), *hf = a->frozen.n ? host_copy(&a->frozen) : NULL;
	char *path = lmk_path_join(dir, "adapter_model.safetensors");
	char *cpath = lmk_path_join(dir, "adapter_config.json");
	lmk_frame f;
	lmk_frame_init(&f);
	if (!hp || (a->frozen.n && !hf) || !path || !cpath) {
		rc = lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
		goto out;
	}
	char cfgstr[512];
	lmk_lora_config_str(&a->cfg, cfgstr, sizeof cfgstr);
	rc = lmk_frame_set_meta(&f, "format", "pt");
	/* our settings (a one-sided adapter's side and projector) beside PEFT's */
	if (rc == 0)
		rc = lmk_frame_set_meta(&f, "lmk_adapter", cfgstr);
	for (int i = 0; rc == 0 && i < a->n; i++) {
		const lmk_lora_slot *s = &a->slots[i];
		const lmk_tensor *t[2] = {s->a, s->b};
		for (int j = 0; rc == 0 && j < 2; j++) {
			const lmk_params *p = (j == 0 ? s->frozen == LMK_SIDE_RIGHT
						    : s->frozen == LMK_SIDE_LEFT)
						      ? &a->frozen
						      : &a->params;
			const float *h = p == &a->frozen ? hf : hp;
			rc = lmk_frame_add(&f, t[j]->name, LMK_F32, 2, t[j]->shape,
					   h + p->offset[tensor_index(p, t[j])]);
		}
	}
	if (rc == 0)
		rc = lmk_frame_save(path, &f, 0);
	if (rc < 0)
		goto out;
	/* adapter_config.json with the keys PEFT writes */
	json_t *o = json_object(), *tm = json_array();
	int all_short = 1;
	for (const char *t = a->cfg.targets; *t;) {
		size_t n = item_len(t);
		all_short &= is_short(t, n);
		t += n + (t[n] == ',');
	}
	if (all_short) {
		for (const char *t = a->cfg.targets; *t;) {
			size_t n = item_len(t);
			char buf[32];
			snprintf(buf, sizeof buf, "%.*s_proj", (int)n, t);
			json_array_append_new(tm, json_string(buf));
			t += n + (t[n] == ',');
		}
	} else {
		for (int i = 0; i < a->n; i++)
			json_array_append_new(tm, json_string(a->slots[i].module));
	}
	json_object_set_new(o, "alpha_pattern", json_object());
	json_object_set_new(o, "auto_mapping", json_null());
	json_object_set_new(o, "base_model_name_or_path", base_name ? json_string(base_name) : json_null());
	json_object_set_new(o, "bias", json_string("none"));
	json_object_set_new(o, "fan_in_fan_out", json_false());
	json_object_set_new(o, "inference_mode", json_true());
	json_object_set_new(o, "init_lora_weights", json_true());
	json_object_set_new(o, "layers_pattern", json_null());
	json_object_set_new(o, "layers_to_transform", json_null());
	json_object_set_new(o, "lora_alpha", json_real(a->cfg.alpha));
	json_object_set_new(o, "lora_dropout", json_real(a->cfg.dropout));
	json_object_set_new(o, "modules_to_save", json_null());
	json_object_set_new(o, "peft_type", json_string("LORA"));
	json_object_set_new(o, "r", json_integer(a->cfg.r));
	json_object_set_new(o, "rank_pattern", json_object());
	json_object_set_new(o, "revision", json_null());
	json_object_set_new(o, "target_modules", tm);
	json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
	json_object_set_new(o, "use_dora", json_false());
	json_object_set_new(o, "use_rslora", a->cfg.rslora ? json_true() : json_false());
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(o);
	if (!text) {
		rc = lmk_err(LMK_ENOMEM, "%s: cannot format", cpath);
		goto out;
	}
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	if (nl) {
		text = nl;
		text[len++] = '\n';
		text[len] = 0;
	}
	rc = lmk_write_file_atomic(cpath, text, len);
	free(text);
out:
	lmk_frame_free(&f);
	free(hp);
	free(hf);
	free(path);
	free(cpath);
	return rc;
}

/* A number of adapter_config.json, or def when absent or null. */
static int cfg_num(json_t *o, const char *key, double def, double *out, const char *path)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return lmk_err(LMK_EFORMAT, "%s: \"%s\": expected a number", path, key);
	*out = json_number_value(v);
	return 0;
}

/* A key that must be absent, null, false, empty or equal to ok. */
static int cfg_refuse(json_t *o, const char *key, const char *ok, const char *path)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v) || json_is_false(v) ||
	    (json_is_object(v) && json_object_size(v) == 0) ||
	    (json_is_array(v) && json_array_size(v) == 0) ||
	    (ok && json_is_string(v) && !strcmp(json_string_value(v), ok)))
		return 0;
	return lmk_err(LMK_EUNSUP, "%s: \"%s\" is set: not supported (only plain LoRA adapters)",
		       path, key);
}

int lmk_lora_load(lmk_lora *a, const char *dir, lmk_params *base)
{
	memset(a, 0, sizeof *a);
	if (base->dev != LMK_DEV_CPU)
		return lmk_err(LMK_EINVAL, "adapter: load it before the base goes to the device");
	char *cpath = lmk_path_join(dir, "adapter_config.json");
	char *path = lmk_path_join(dir, "adapter_model.safetensors");
	json_t *o = NULL;
	lmk_frame f;
	lmk_frame_init(&f);
	char **mods = NULL;
	lmk_tensor **w = NULL;
	int n = 0, rc = cpath && path ? 0 : LMK_ENOMEM;
	if (rc < 0)
		goto out;
	json_error_t je;
	if (!(o = json_load_file(cpath, 0, &je)) || !json_is_object(o)) {
		rc = lmk_err(LMK_EFORMAT, "%s: %s", cpath, o ? "expected an object" : je.text);
		goto out;
	}
	json_t *pt = json_object_get(o, "peft_type");
	if (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA")) {
		rc = lmk_err(LMK_EUNSUP, "%s: peft_type: expected \"LORA\"", cpath);
		goto out;
	}
	double r = 0, alpha = 0, dropout = 0;
	if ((rc = cfg_num(o, "r", 8, &r, cpath)) < 0 ||
	    (rc = cfg_num(o, "lora_alpha", 8, &alpha, cpath)) < 0 ||
	    (rc = cfg_num(o, "lora_dropout", 0, &dropout, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "fan_in_fan_out", NULL, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "use_dora", NULL, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "modules_to_save", NULL, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "rank_pattern", NULL, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "alpha_pattern", NULL, cpath)) < 0 ||
	    (rc = cfg_refuse(o, "bias", "none", cpath)) < 0)
		goto out;
	if (!(r >= 1 && r <= 65536 && r == (int)r) || !(alpha > 0) || !(dropout >= 0 && dropout < 1)) {
		rc = lmk_err(LMK_EFORMAT, "%s: expected r >= 1, lora_alpha > 0, 0 <= lora_dropout < 1",
			     cpath);
		goto out;
	}
	lmk_lora_config_default(&a->cfg);
	a->cfg.r = (int)r;
	a->cfg.alpha = (float)alpha;
	a->cfg.dropout = (float)dropout;
	a->cfg.rslora = json_is_true(json_object_get(o, "use_rslora"));
	a->scale = lora_scale(&a->cfg);
	if ((rc = lmk_frame_load(path, &f)) < 0)
		goto out;
	mods = calloc((size_t)f.ntensors + 1, sizeof *mods);
	w = calloc((size_t)f.ntensors + 1, sizeof *w);
	if (!mods || !w) {
		rc = lmk_err(LMK_ENOMEM, "adapter: cannot allocate");
		goto out;
	}
	/* every tensor names MODULE.lora_A.weight or .lora_B.weight of a base weight */
	for (int i = 0; i < f.ntensors; i++) {
		const char *nm = f.t[i].name;
		size_t l = strlen(nm), pl = strlen(PEFT_PREFIX);
		int isa = l > pl + 14 && !strcmp(nm + l - 14, ".lora_A.weight");
		int isb = l > pl + 14 && !strcmp(nm + l - 14, ".lora_B.weight");
		if (strncmp(nm, PEFT_PREFIX, pl) || !(isa || isb)) {
			rc = lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected %sMODULE.lora_A.weight or "
				     ".lora_B.weight", path, nm, PEFT_PREFIX);
			goto out;
		}
		if (!isa)
			continue;
		char mod[300], wname[320];
		snprintf(mod, sizeof mod, "%.*s", (int)(l - 14 - pl), nm + pl);
		snprintf(wname, sizeof wname, "%s.weight", mod);
		lmk_tensor *t = lmk_params_find(base, wname);
		if (!t || t->ndim != 2) {
			rc = lmk_err(LMK_EFORMAT, "%s: tensor '%s': the model has no linear layer '%s'",
				     path, nm, mod);
			goto out;
		}
		if (!(mods[n] = strdup(mod))) {
			rc = lmk_err(LMK_ENOMEM, "adapter: cannot allocate");
			goto out;
		}
		w[n++] = t;
	}
	if (n == 0 || 2 * n != f.ntensors) {
		rc = lmk_err(LMK_EFORMAT, "%s: expected a lora_A and a lora_B for each module, found %d "
			     "tensors for %d modules", path, f.ntensors, n);
		goto out;
	}
	snprintf(a->cfg.targets, sizeof a->cfg.targets, "%s", "");
	if ((rc = make_slots(a, base, mods, w, n)) < 0)
		goto out;
	/* targets: the modules themselves (they are what was loaded) */
	size_t used = 0;
	for (int i = 0; i < n && used < sizeof a->cfg.targets; i++)
		used += (size_t)snprintf(a->cfg.targets + used, sizeof a->cfg.targets - used, "%s%s",
					 i ? "," : "", a->slots[i].module);
	for (int i = 0; rc == 0 && i < a->n; i++) {
		const lmk_lora_slot *s = &a->slots[i];
		const lmk_tensor *t[2] = {s->a, s->b};
		for (int j = 0; rc == 0 && j < 2; j++) {
			const lmk_ftensor *ft = lmk_frame_find(&f, t[j]->name);
			if (!ft) {
				rc = lmk_err(LMK_EFORMAT, "%s: no tensor '%s'", path, t[j]->name);
				break;
			}
			if (ft->ndim != 2 || ft->shape[0] != t[j]->shape[0] ||
			    ft->shape[1] != t[j]->shape[1]) {
				rc = lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected (%lld,%lld) for r %d",
					     path, t[j]->name, (long long)t[j]->shape[0],
					     (long long)t[j]->shape[1], a->cfg.r);
				break;
			}
			if (ft->dtype != LMK_F32 && ft->dtype != LMK_F16 && ft->dtype != LMK_BF16) {
				rc = lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected F32, F16 or BF16, "
					     "found %s", path, t[j]->name, lmk_dtype_name(ft->dtype));
				break;
			}
			lmk_dtype_to_f32(ft->dtype, ft->data, t[j]->data, (size_t)t[j]->n);
		}
	}
out:
	for (int i = 0; mods && i < n; i++)
		free(mods[i]);
	free(mods);
	free(w);
	json_decref(o);
	lmk_frame_free(&f);
	free(path);
	free(cpath);
	if (rc < 0)
		lmk_lora_free(a);
	return rc;
}
