/* ckpt.c: Hugging Face checkpoint directories (config.json and
 * model.safetensors, or shards listed by model.safetensors.index.json) to
 * and from an lmk_llama. Weights travel as frames (lib/frame.h), which are
 * safetensors files byte for byte; F16 and BF16 are widened to float32 on
 * load and rounded (to nearest even) on save.
 * A tied model (tie_word_embeddings) has no lm_head.weight of its own: save
 * leaves it out, as transformers does; load accepts a checkpoint that has
 * one anyway only when it equals model.embed_tokens.weight exactly (after
 * conversion), since silently preferring either copy could hide a wrong
 * config. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ckpt.h"
#include "err.h"
#include "fileio.h"
#include "frame.h"

static const char *torch_dtype(lmk_dtype dt)
{
	return dt == LMK_F16 ? "float16" : dt == LMK_BF16 ? "bfloat16" : "float32";
}

int lmk_ckpt_save(const char *dir, const lmk_llama *m, lmk_dtype dt)
{
	if (dt != LMK_F32 && dt != LMK_F16 && dt != LMK_BF16)
		return lmk_err(LMK_EINVAL, "%s: cannot save weights as %s (expected F32, F16 or BF16)",
			       dir, lmk_dtype_name(dt));
	int rc = lmk_mkdirs(dir);
	if (rc < 0)
		return rc;
	char *wpath = lmk_path_join(dir, "model.safetensors"), *cpath = lmk_path_join(dir, "config.json");
	const lmk_params *p = &m->params;
	size_t esz = lmk_dtype_size(dt);
	void *conv = NULL;
	lmk_frame f;

	lmk_frame_init(&f);
	if (!wpath || !cpath) {
		rc = LMK_ENOMEM;
		goto out;
	}
	if (dt != LMK_F32 && !(conv = malloc(p->n * esz + 1))) {
		rc = lmk_err(LMK_ENOMEM, "%s: cannot allocate %zu bytes", wpath, p->n * esz);
		goto out;
	}
	/* transformers' own files say {"format": "pt"} and some readers (and
	 * older transformers) insist on it. */
	if ((rc = lmk_frame_set_meta(&f, "format", "pt")) < 0)
		goto out;
	for (int i = 0; i < p->nt; i++) {
		const lmk_tensor *t = &p->t[i];
		const void *data = t->data;
		if (conv) {
			char *dst = (char *)conv + p->offset[i] * esz;
			if ((rc = lmk_dtype_from_f32(dt, t->data, dst, (size_t)t->n)) < 0)
				goto out;
			data = dst;
		}
		if ((rc = lmk_frame_add(&f, t->name, dt, t->ndim, t->shape, data)) < 0) {
			lmk_err_wrap(rc, "%s", wpath);
			goto out;
		}
	}
	/* Weights first: a config.json beside them is the sign of a whole
	 * checkpoint. */
	if ((rc = lmk_frame_save(wpath, &f, 0)) < 0) {
		if (!strstr(lmk_errmsg(), wpath))
			lmk_err_wrap(rc, "%s", wpath);
		goto out;
	}
	rc = lmk_llama_config_save(&m->cfg, cpath, torch_dtype(dt));
out:
	lmk_frame_free(&f);
	free(conv);
	free(wpath);
	free(cpath);
	return rc;
}

typedef struct {
	lmk_llama *m;
	unsigned char *seen;   /* per parameter tensor */
	float *head;           /* a tied model's lm_head.weight, if present */
	char *head_file;       /* where it came from */
} loader;

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
	size_t o = (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
}

static int take(loader *ld, const char *file, const lmk_ftensor *ft)
{
	lmk_llama *m = ld->m;
	const char *name = ft->name;
	size_t nl = strlen(name);
	const char *suffix = "rotary_emb.inv_freq";
	size_t sl = strlen(suffix);

	/* older transformers saved the rotary tables as buffers */
	if (nl >= sl && strcmp(name + nl - sl, suffix) == 0)
		return 0;
	int tied_head = m->cfg.tie_word_embeddings && strcmp(name, "lm_head.weight") == 0;
	lmk_tensor *t = tied_head ? m->wte : lmk_params_find(&m->params, name);
	if (!t)
		return lmk_err(LMK_EFORMAT, "%s: unexpected tensor '%s' (not in a %s model of this "
			       "config)", file, name, m->cfg.model_type);
	if (ft->dtype != LMK_F32 && ft->dtype != LMK_F16 && ft->dtype != LMK_BF16)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected F32, F16 or BF16, found %s",
			       file, name, lmk_dtype_name(ft->dtype));
	int same = ft->ndim == t->ndim;
	for (int i = 0; same && i < t->ndim; i++)
		same = ft->shape[i] == t->shape[i];
	if (!same) {
		char want[96], got[96];
		shape_str(want, sizeof want, t->ndim, t->shape);
		shape_str(got, sizeof got, ft->ndim, ft->shape);
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected shape %s, found %s", file, name,
			       want, got);
	}
	size_t n = (size_t)t->n;
	if (ft->nbytes != n * lmk_dtype_size(ft->dtype))
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected %zu bytes, found %zu", file,
			       name, n * lmk_dtype_size(ft->dtype), ft->nbytes);
	if (tied_head) {
		if (ld->head)
			return lmk_err(LMK_EFORMAT, "%s: tensor '%s' appears twice", file, name);
		if (!(ld->head = malloc(n * sizeof(float) + 1)))
			return lmk_err(LMK_ENOMEM, "%s: cannot allocate", file);
		lmk_dtype_to_f32(ft->dtype, ft->data, ld->head, n);
		ld->head_file = strdup(file);
		return 0;
	}
	int i = (int)(t - m->params.t);
	if (ld->seen[i])
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s' appears twice", file, name);
	ld->seen[i] = 1;
	lmk_dtype_to_f32(ft->dtype, ft->data, t->data, n);
	return 0;
}

static int load_file(loader *ld, const char *path)
{
	lmk_frame f;
	lmk_frame_init(&f);
	int rc = lmk_frame_load(path, &f);
	if (rc < 0) {
		if (!strstr(lmk_errmsg(), path))
			lmk_err_wrap(rc, "%s", path);
		lmk_frame_free(&f);
		return rc;
	}
	for (int i = 0; i < f.ntensors && rc >= 0; i++)
		rc = take(ld, path, &f.t[i]);
	lmk_frame_free(&f);
	return rc;
}

/* Shards named by an index's weight_map, each loaded once, in the order
 * they are first named. */
static int load_index(loader *ld, const char *dir, const char *ipath)
{
	json_error_t je;
	json_t *o = json_load_file(ipath, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return lmk_err(LMK_EFORMAT, "%s: line %d: %s", ipath, je.line, je.text);
	json_t *wm = json_object_get(o, "weight_map");
	int rc = 0;
	if (!json_is_object(wm)) {
		rc = lmk_err(LMK_EFORMAT, "%s: expected an object 'weight_map'", ipath);
		goto out;
	}
	const char *key;
	json_t *val;
	json_t *done = json_object();
	if (!done) {
		rc = lmk_err(LMK_ENOMEM, "%s: cannot allocate", ipath);
		goto out;
	}
	json_object_foreach(wm, key, val) {
		if (!json_is_string(val)) {
			rc = lmk_err(LMK_EFORMAT, "%s: weight_map['%s']: expected a file name", ipath,
				     key);
			break;
		}
		const char *file = json_string_value(val);
		if (!*file || strchr(file, '/') || strcmp(file, "..") == 0) {
			rc = lmk_err(LMK_EFORMAT, "%s: weight_map['%s']: '%s' is not a file name in "
				     "the directory", ipath, key, file);
			break;
		}
		if (json_object_get(done, file))
			continue;
		json_object_set_new(done, file, json_true());
		char *path = lmk_path_join(dir, file);
		if (!path) {
			rc = LMK_ENOMEM;
			break;
		}
		rc = load_file(ld, path);
		free(path);
		if (rc < 0)
			break;
	}
	json_decref(done);
out:
	json_decref(o);
	return rc;
}

int lmk_ckpt_load(const char *dir, lmk_llama *m, int trainable)
{
	lmk_llama_config cfg;
	char *cpath = lmk_path_join(dir, "config.json");
	char *wpath = lmk_path_join(dir, "model.safetensors");
	char *ipath = lmk_path_join(dir, "model.safetensors.index.json");
	loader ld = {.m = m};
	int rc;

	memset(m, 0, sizeof *m);
	if (!cpath || !wpath || !ipath) {
		rc = LMK_ENOMEM;
		goto out;
	}
	if ((rc = lmk_llama_config_load(&cfg, cpath)) < 0)
		goto out;
	if ((rc = lmk_llama_init(m, &cfg, trainable)) < 0) {
		lmk_err_wrap(rc, "%s", cpath);
		goto out;
	}
	if (!(ld.seen = calloc((size_t)m->params.nt + 1, 1))) {
		rc = lmk_err(LMK_ENOMEM, "%s: cannot allocate", dir);
		goto out;
	}
	/* transformers' order: the single file first, then the index */
	const char *src = wpath;
	if (access(wpath, F_OK) == 0) {
		rc = load_file(&ld, wpath);
	} else if (access(ipath, F_OK) == 0) {
		src = ipath;
		rc = load_index(&ld, dir, ipath);
	} else {
		rc = lmk_err(LMK_EIO, "%s: found neither model.safetensors nor "
			     "model.safetensors.index.json", dir);
	}
	if (rc < 0)
		goto out;
	for (int i = 0; i < m->params.nt; i++)
		if (!ld.seen[i]) {
			rc = lmk_err(LMK_EFORMAT, "%s: missing tensor '%s'", src, m->params.t[i].name);
			goto out;
		}
	if (ld.head && memcmp(ld.head, m->wte->data, sizeof(float) * (size_t)m->wte->n) != 0)
		rc = lmk_err(LMK_EFORMAT, "%s: tensor 'lm_head.weight' differs from "
			     "'model.embed_tokens.weight' but tie_word_embeddings is true",
			     ld.head_file ? ld.head_file : src);
out:
	free(ld.head);
	free(ld.head_file);
	free(ld.seen);
	free(cpath);
	free(wpath);
	free(ipath);
	if (rc < 0)
		lmk_llama_free(m);
	return rc;
}
