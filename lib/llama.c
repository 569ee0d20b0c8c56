/* llama.c: the Llama-family decoder (Llama 2/3, SmolLM2, Qwen2) as forward
 * code over ops.h, its Hugging Face config.json, a KV cache for decoding and
 * a sampler. The forward follows transformers' LlamaForCausalLM (eager
 * attention, float32) step for step, so that logits and gradients agree with
 * it to rounding (tests/test_llama.c checks against tests/fixtures).
 * Shape letters: B batch, T time, C hidden, H heads, K kv heads, D head dim,
 * F intermediate, V vocabulary, L layers, S cached positions. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "fileio.h"
#include "llama.h"
#include "lora.h"
#if LMK_CUDA
#include "../cuda/attention.h"
#include "../cuda/cuda.h"
#include "../cuda/decode_cuda.h"
#include "../cuda/gemv_cuda.h"
#include "op.h"
#endif

/* ---- configuration ---------------------------------------------------- */

void lmk_llama_config_default(lmk_llama_config *cfg)
{
	/* The shape of llama2.c's stories15M: small enough to train on a CPU. */
	memset(cfg, 0, sizeof *cfg);
	strcpy(cfg->model_type, "llama");
	cfg->hidden_size = 288;
	cfg->intermediate_size = 768;
	cfg->num_hidden_layers = 6;
	cfg->num_attention_heads = 6;
	cfg->num_key_value_heads = 6;
	cfg->head_dim = 48;
	cfg->vocab_size = 32000;
	cfg->max_position_embeddings = 2048;
	cfg->rms_norm_eps = 1e-5f;
	cfg->rope_theta = 10000.0f;
	cfg->rope_scaling.type = LMK_ROPE_NONE;
	cfg->tie_word_embeddings = 1;
	cfg->initializer_range = 0.02f;
	cfg->bos_token_id = 1;
	cfg->eos_token_id[0] = 2;
	cfg->neos = 1;
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "a list";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

/* An integer key; absent or null gives def, or an error when required. */
static int get_int(const json_t *o, const char *key, int *out, int def, int required,
		   const char *name)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		if (required)
			return lmk_err(LMK_EFORMAT, "%s: missing key '%s'", name, key);
		*out = def;
		return 0;
	}
	/* 1.0 is an integer in Python's eyes too (json writes ints as ints,
	 * but hand-edited configs sometimes say 32.0). */
	double d;
	if (json_is_integer(v))
		d = (double)json_integer_value(v);
	else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v))
		d = json_real_value(v);
	else
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected an integer, found %s", name,
			       key, json_kind(v));
	if (d < INT_MIN || d > INT_MAX)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': %.0f is out of range", name, key, d);
	*out = (int)d;
	return 0;
}

static int get_float(const json_t *o, const char *key, float *out, float def, int required,
		     const char *name)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		if (required)
			return lmk_err(LMK_EFORMAT, "%s: missing key '%s'", name, key);
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected a number, found %s", name, key,
			       json_kind(v));
	*out = (float)json_number_value(v);
	return 0;
}

static int get_bool(const json_t *o, const char *key, int *out, int def, const char *name)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v))
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected true or false, found %s", name,
			       key, json_kind(v));
	*out = json_is_true(v);
	return 0;
}

/* A rope_scaling object (transformers 4) or rope_parameters (transformers 5,
 * which also carries rope_theta). */
static int parse_rope(const json_t *o, const char *key, lmk_llama_config *cfg, const char *name)
{
	const json_t *r = json_object_get(o, key);
	lmk_rope_scaling *s = &cfg->rope_scaling;
	char who[64];
	int rc;

	if (!r || json_is_null(r))
		return 0;
	if (!json_is_object(r))
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected an object or null, found %s",
			       name, key, json_kind(r));
	snprintf(who, sizeof who, "%s", key);
	if (json_object_get(r, "rope_theta") &&
	    (rc = get_float(r, "rope_theta", &cfg->rope_theta, 0, 1, name)) < 0)
		return rc;
	const json_t *t = json_object_get(r, "rope_type");
	if (!t || json_is_null(t))
		t = json_object_get(r, "type");
	if (!t || json_is_null(t)) {
		if (strcmp(key, "rope_parameters") == 0) /* theta alone */
			return 0;
		return lmk_err(LMK_EFORMAT, "%s: %s has no 'rope_type' (or 'type')", name, who);
	}
	if (!json_is_string(t))
		return lmk_err(LMK_EFORMAT, "%s: %s: rope_type: expected a string, found %s", name,
			       who, json_kind(t));
	const char *type = json_string_value(t);
	char sub[96];
	snprintf(sub, sizeof sub, "%s: %s", name, who);
	memset(s, 0, sizeof *s);
	if (strcmp(type, "default") == 0) {
		s->type = LMK_ROPE_NONE;
		return 0;
	}
	if (strcmp(type, "linear") == 0) {
		s->type = LMK_ROPE_LINEAR;
		return get_float(r, "factor", &s->factor, 0, 1, sub);
	}
	if (strcmp(type, "llama3") == 0) {
		s->type = LMK_ROPE_LLAMA3;
		if ((rc = get_float(r, "factor", &s->factor, 0, 1, sub)) < 0 ||
		    (rc = get_float(r, "low_freq_factor", &s->low_freq_factor, 0, 1, sub)) < 0 ||
		    (rc = get_float(r, "high_freq_factor", &s->high_freq_factor, 0, 1, sub)) < 0 ||
		    (rc = get_int(r, "original_max_position_embeddings", &s->original_max_pos, 0,
				  1, sub)) < 0)
			return rc;
		return 0;
	}
	return lmk_err(LMK_EFORMAT,
		       "%s: %s: rope type '%s' is not supported (expected default, linear or "
		       "llama3)", name, who, type);
}

/* The "lmk_mixer" object of a model_type lmk_mixer config: the kind's
 * defaults at hidden_size, then the keys given. */
static int parse_mixer(lmk_llama_config *cfg, const json_t *o, const char *name)
{
	const json_t *m = json_object_get(o, "lmk_mixer"), *k;
	if (!json_is_object(m))
		return lmk_err(LMK_EFORMAT, "%s: model_type lmk_mixer needs an object 'lmk_mixer'", name);
	k = json_object_get(m, "kind");
	int kind = json_is_string(k) ? lmk_mixer_kind_parse(json_string_value(k)) : LMK_EINVAL;
	if (kind < 0)
		return lmk_err(LMK_EFORMAT, "%s: lmk_mixer.kind: expected a mixer's name", name);
	lmk_mixer_defaults(&cfg->mix, kind, cfg->hidden_size);
	cfg->mixer = 1 + kind;
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)m, key, v) {
		if (!strcmp(key, "kind") || !strcmp(key, "norm_eps") || json_is_null(v))
			continue;
		if (!json_is_integer(v) || lmk_mixer_config_set(&cfg->mix, key, json_integer_value(v)) < 0)
			return lmk_err(LMK_EFORMAT, "%s: lmk_mixer.%s: expected one of the mixer's sizes",
				       name, key);
	}
	const json_t *e = json_object_get(m, "norm_eps");
	if (e && json_is_number(e))
		cfg->mix.norm_eps = (float)json_number_value(e);
	return 0;
}

static int parse_obj(lmk_llama_config *cfg, const json_t *o, const char *name)
{
	int rc, d;
	const json_t *v;

	memset(cfg, 0, sizeof *cfg);
	v = json_object_get(o, "model_type");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return lmk_err(LMK_EFORMAT, "%s: key 'model_type': expected a string, found %s",
				       name, json_kind(v));
		const char *mt = json_string_value(v);
		if (strcmp(mt, "llama") != 0 && strcmp(mt, "qwen2") != 0 && strcmp(mt, "lmk_mixer") != 0)
			return lmk_err(LMK_EFORMAT,
				       "%s: model_type '%s' is not supported (expected llama, qwen2 "
				       "or lmk_mixer)", name, mt);
		snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
	} else {
		strcpy(cfg->model_type, "llama");
	}
	int qwen2 = strcmp(cfg->model_type, "qwen2") == 0;

	if ((rc = get_int(o, "hidden_size", &cfg->hidden_size, 0, 1, name)) < 0 ||
	    (rc = get_int(o, "intermediate_size", &cfg->intermediate_size, 0, 1, name)) < 0 ||
	    (rc = get_int(o, "num_hidden_layers", &cfg->num_hidden_layers, 0, 1, name)) < 0 ||
	    (rc = get_int(o, "num_attention_heads", &cfg->num_attention_heads, 0, 1, name)) < 0 ||
	    (rc = get_int(o, "vocab_size", &cfg->vocab_size, 0, 1, name)) < 0)
		return rc;
	if ((rc = get_int(o, "num_key_value_heads", &cfg->num_key_value_heads,
			  cfg->num_attention_heads, 0, name)) < 0)
		return rc;
	if ((rc = get_int(o, "head_dim", &d, -1, 0, name)) < 0)
		return rc;
	if (d == -1) {
		if (cfg->num_attention_heads <= 0 ||
		    cfg->hidden_size % cfg->num_attention_heads != 0)
			return lmk_err(LMK_EFORMAT,
				       "%s: hidden_size %d is not a multiple of num_attention_heads %d "
				       "and no head_dim is given", name, cfg->hidden_size,
				       cfg->num_attention_heads);
		d = cfg->hidden_size / cfg->num_attention_heads;
	}
	cfg->head_dim = d;
	if ((rc = get_int(o, "max_position_embeddings", &cfg->max_position_embeddings,
			  qwen2 ? 32768 : 2048, 0, name)) < 0 ||
	    (rc = get_float(o, "rms_norm_eps", &cfg->rms_norm_eps, 1e-6f, 0, name)) < 0 ||
	    (rc = get_float(o, "rope_theta", &cfg->rope_theta, 10000.0f, 0, name)) < 0 ||
	    (rc = get_float(o, "initializer_range", &cfg->initializer_range, 0.02f, 0, name)) < 0 ||
	    (rc = get_bool(o, "tie_word_embeddings", &cfg->tie_word_embeddings, 0, name)) < 0 ||
	    (rc = get_bool(o, "attention_bias", &cfg->attention_bias, 0, name)) < 0 ||
	    (rc = get_bool(o, "mlp_bias", &cfg->mlp_bias, 0, name)) < 0)
		return rc;
	cfg->rope_scaling.type = LMK_ROPE_NONE;
	if ((rc = parse_rope(o, "rope_scaling", cfg, name)) < 0 ||
	    (rc = parse_rope(o, "rope_parameters", cfg, name)) < 0)
		return rc;
	if (qwen2) {
		int sw;
		if ((rc = get_bool(o, "use_sliding_window", &sw, 0, name)) < 0)
			return rc;
		if (sw)
			return lmk_err(LMK_EFORMAT, "%s: use_sliding_window true is not supported",
				       name);
		cfg->attention_bias = 1; /* Qwen2 always has q, k, v biases */
	}

	v = json_object_get(o, "hidden_act");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return lmk_err(LMK_EFORMAT, "%s: key 'hidden_act': expected a string, found %s",
				       name, json_kind(v));
		if (strcmp(json_string_value(v), "silu") != 0)
			return lmk_err(LMK_EFORMAT,
				       "%s: hidden_act '%s' is not supported (expected silu)", name,
				       json_string_value(v));
	}

	if ((rc = get_int(o, "bos_token_id", &cfg->bos_token_id, -1, 0, name)) < 0)
		return rc;
	v = json_object_get(o, "eos_token_id");
	if (v && json_is_array(v)) {
		size_t n = json_array_size(v);
		if (n > LMK_MAX_EOS)
			return lmk_err(LMK_EFORMAT, "%s: eos_token_id: expected at most %d ids, found %zu",
				       name, LMK_MAX_EOS, n);
		for (size_t i = 0; i < n; i++) {
			const json_t *e = json_array_get(v, i);
			if (!json_is_integer(e) || json_integer_value(e) < 0 ||
			    json_integer_value(e) > INT_MAX)
				return lmk_err(LMK_EFORMAT,
					       "%s: eos_token_id[%zu]: expected a token id, found %s",
					       name, i, json_kind(e));
			cfg->eos_token_id[cfg->neos++] = (int)json_integer_value(e);
		}
	} else {
		int e;
		if ((rc = get_int(o, "eos_token_id", &e, -1, 0, name)) < 0)
			return rc;
		if (e >= 0)
			cfg->eos_token_id[cfg->neos++] = e;
	}
	if (!strcmp(cfg->model_type, "lmk_mixer")) {
		/* a Llama whose blocks mix with cfg->mixer; written back as lmk_mixer */
		if ((rc = parse_mixer(cfg, o, name)) < 0)
			return rc;
		strcpy(cfg->model_type, "llama");
	}
	return lmk_llama_config_check(cfg, name);
}

int lmk_llama_config_parse(lmk_llama_config *cfg, const char *json, size_t len, const char *name)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!name)
		name = "config.json";
	if (!o)
		return lmk_err(LMK_EFORMAT, "%s: line %d, column %d: %s", name, je.line, je.column,
			       je.text);
	if (!json_is_object(o)) {
		int rc = lmk_err(LMK_EFORMAT, "%s: expected a JSON object, found %s", name,
				 json_kind(o));
		json_decref(o);
		return rc;
	}
	int rc = parse_obj(cfg, o, name);
	json_decref(o);
	return rc;
}

int lmk_llama_config_load(lmk_llama_config *cfg, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	size_t cap = 4096, n = 0, got;
	char *buf = malloc(cap);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			if (cap >= (16u << 20)) {
				free(buf);
				fclose(f);
				return lmk_err(LMK_EFORMAT, "%s: larger than 16 MiB, not a config", path);
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	int bad = ferror(f);
	fclose(f);
	if (!buf)
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate", path);
	if (bad) {
		free(buf);
		return lmk_err(LMK_EIO, "cannot read '%s'", path);
	}
	int rc = lmk_llama_config_parse(cfg, buf, n, path);
	free(buf);
	return rc;
}

int lmk_llama_config_check(const lmk_llama_config *cfg, const char *name)
{
	if (cfg->mixer) {
		if (cfg->mixer < 1 || cfg->mixer > LMK_MIXER_NKINDS)
			return lmk_err(LMK_EINVAL, "%s: mixer %d is not a mixer", name, cfg->mixer);
		if (cfg->mix.hidden != cfg->hidden_size)
			return lmk_err(LMK_EINVAL, "%s: the mixer's hidden size %lld is not hidden_size %d",
				       name, (long long)cfg->mix.hidden, cfg->hidden_size);
		if (lmk_mixer_check(&cfg->mix) < 0)
			return lmk_err_wrap(lmk_errcode(), "%s", name);
	}
	const int big = 1 << 20;
	if (!name)
		name = "config";
	struct { const char *key; int v, max; } dims[] = {
		{"hidden_size", cfg->hidden_size, big},
		{"intermediate_size", cfg->intermediate_size, big},
		{"num_hidden_layers", cfg->num_hidden_layers, 4096},
		{"num_attention_heads", cfg->num_attention_heads, 4096},
		{"num_key_value_heads", cfg->num_key_value_heads, 4096},
		{"head_dim", cfg->head_dim, 4096},
		{"vocab_size", cfg->vocab_size, 1 << 24},
		{"max_position_embeddings", cfg->max_position_embeddings, INT_MAX},
	};
	for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
		if (dims[i].v <= 0 || dims[i].v > dims[i].max)
			return lmk_err(LMK_EFORMAT, "%s: %s: expected 1 to %d, found %d", name,
				       dims[i].key, dims[i].max, dims[i].v);
	if (cfg->num_attention_heads % cfg->num_key_value_heads != 0)
		return lmk_err(LMK_EFORMAT,
			       "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
			       name, cfg->num_attention_heads, cfg->num_key_value_heads);
	if (cfg->head_dim % 2 != 0)
		return lmk_err(LMK_EFORMAT, "%s: head_dim: expected an even number, found %d", name,
			       cfg->head_dim);
	if ((int64_t)cfg->num_attention_heads * cfg->head_dim > big)
		return lmk_err(LMK_EFORMAT, "%s: num_attention_heads * head_dim: expected at most %d, "
			       "found %lld", name, big,
			       (long long)cfg->num_attention_heads * cfg->head_dim);
	if (!(cfg->rms_norm_eps > 0) || !isfinite(cfg->rms_norm_eps))
		return lmk_err(LMK_EFORMAT, "%s: rms_norm_eps: expected a positive number, found %g",
			       name, cfg->rms_norm_eps);
	if (!(cfg->rope_theta > 0) || !isfinite(cfg->rope_theta))
		return lmk_err(LMK_EFORMAT, "%s: rope_theta: expected a positive number, found %g",
			       name, cfg->rope_theta);
	if (!(cfg->initializer_range >= 0) || !isfinite(cfg->initializer_range))
		return lmk_err(LMK_EFORMAT, "%s: initializer_range: expected >= 0, found %g", name,
			       cfg->initializer_range);
	const lmk_rope_scaling *s = &cfg->rope_scaling;
	if (s->type != LMK_ROPE_NONE && s->type != LMK_ROPE_LINEAR && s->type != LMK_ROPE_LLAMA3)
		return lmk_err(LMK_EFORMAT, "%s: unknown rope scaling type %d", name, s->type);
	if (s->type != LMK_ROPE_NONE && (!(s->factor > 0) || !isfinite(s->factor)))
		return lmk_err(LMK_EFORMAT, "%s: rope_scaling factor: expected > 0, found %g", name,
			       s->factor);
	if (s->type == LMK_ROPE_LLAMA3 &&
	    (!(s->low_freq_factor > 0) || !(s->high_freq_factor > s->low_freq_factor) ||
	     s->original_max_pos <= 0))
		return lmk_err(LMK_EFORMAT,
			       "%s: llama3 rope_scaling: expected 0 < low_freq_factor < "
			       "high_freq_factor and original_max_position_embeddings > 0, found "
			       "%g, %g, %d", name, s->low_freq_factor, s->high_freq_factor,
			       s->original_max_pos);
	if (cfg->neos < 0 || cfg->neos > LMK_MAX_EOS)
		return lmk_err(LMK_EFORMAT, "%s: expected 0 to %d eos ids, found %d", name,
			       LMK_MAX_EOS, cfg->neos);
	if (strcmp(cfg->model_type, "llama") != 0 && strcmp(cfg->model_type, "qwen2") != 0)
		return lmk_err(LMK_EFORMAT, "%s: model_type '%.32s' is not supported", name,
			       cfg->model_type);
	return 0;
}

/* The double whose shortest decimal form reads back as f, so that 1e-5f is
 * written "1e-05" and not "9.99999975e-06". */
static double tidy(float f)
{
	char buf[32];
	for (int p = 1; p < 10; p++) {
		snprintf(buf, sizeof buf, "%.*g", p, (double)f);
		if (strtof(buf, NULL) == f)
			return strtod(buf, NULL);
	}
	return f;
}

int lmk_llama_config_save(const lmk_llama_config *cfg, const char *path, const char *torch_dtype)
{
	int rc = lmk_llama_config_check(cfg, path);
	if (rc < 0)
		return rc;
	int qwen2 = strcmp(cfg->model_type, "qwen2") == 0;
	json_t *o = json_object(), *rs;
	if (!o)
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate", path);
	json_object_set_new(o, "architectures",
			    json_pack("[s]", qwen2 ? "Qwen2ForCausalLM"
					     : cfg->mixer ? "LmkMixerForCausalLM" : "LlamaForCausalLM"));
	json_object_set_new(o, "model_type", json_string(cfg->mixer ? "lmk_mixer" : cfg->model_type));
	if (cfg->mixer) {
		const lmk_mixer_config *x = &cfg->mix;
		json_object_set_new(o, "lmk_mixer",
				    json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:f}",
					      "kind", lmk_mixer_kind_name(cfg->mixer - 1),
					      "heads", (json_int_t)x->heads, "head_dim", (json_int_t)x->head_dim,
					      "head_dim_v", (json_int_t)x->head_dim_v,
					      "state", (json_int_t)x->state, "groups", (json_int_t)x->groups,
					      "conv", (json_int_t)x->conv, "levels", (json_int_t)x->levels,
					      "w_rank", (json_int_t)x->w_rank, "chunk", x->chunk,
					      "norm_eps", tidy(x->norm_eps)));
		json_t *mo = json_object_get(o, "lmk_mixer");
		json_object_set_new(mo, "decay", json_integer(x->decay));
		json_object_set_new(mo, "neg_eig", json_integer(x->neg_eig));
	}
	json_object_set_new(o, "attention_bias", json_boolean(cfg->attention_bias));
	json_object_set_new(o, "attention_dropout", json_real(0.0));
	json_object_set_new(o, "bos_token_id",
			    cfg->bos_token_id >= 0 ? json_integer(cfg->bos_token_id) : json_null());
	if (cfg->neos == 0) {
		json_object_set_new(o, "eos_token_id", json_null());
	} else if (cfg->neos == 1) {
		json_object_set_new(o, "eos_token_id", json_integer(cfg->eos_token_id[0]));
	} else {
		json_t *a = json_array();
		for (int i = 0; i < cfg->neos; i++)
			json_array_append_new(a, json_integer(cfg->eos_token_id[i]));
		json_object_set_new(o, "eos_token_id", a);
	}
	json_object_set_new(o, "head_dim", json_integer(cfg->head_dim));
	json_object_set_new(o, "hidden_act", json_string("silu"));
	json_object_set_new(o, "hidden_size", json_integer(cfg->hidden_size));
	json_object_set_new(o, "initializer_range", json_real(tidy(cfg->initializer_range)));
	json_object_set_new(o, "intermediate_size", json_integer(cfg->intermediate_size));
	json_object_set_new(o, "max_position_embeddings",
			    json_integer(cfg->max_position_embeddings));
	json_object_set_new(o, "mlp_bias", json_boolean(cfg->mlp_bias));
	json_object_set_new(o, "num_attention_heads", json_integer(cfg->num_attention_heads));
	json_object_set_new(o, "num_hidden_layers", json_integer(cfg->num_hidden_layers));
	json_object_set_new(o, "num_key_value_heads", json_integer(cfg->num_key_value_heads));
	json_object_set_new(o, "pretraining_tp", json_integer(1));
	json_object_set_new(o, "rms_norm_eps", json_real(tidy(cfg->rms_norm_eps)));
	const lmk_rope_scaling *s = &cfg->rope_scaling;
	if (s->type == LMK_ROPE_LINEAR) {
		rs = json_pack("{s:s, s:f}", "rope_type", "linear", "factor", tidy(s->factor));
	} else if (s->type == LMK_ROPE_LLAMA3) {
		rs = json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
			       tidy(s->factor), "low_freq_factor", tidy(s->low_freq_factor),
			       "high_freq_factor", tidy(s->high_freq_factor),
			       "original_max_position_embeddings", s->original_max_pos);
	} else {
		rs = json_null();
	}
	/* The transformers 4 spelling (rope_theta and rope_scaling at the top),
	 * which transformers 5 still reads. */
	json_object_set_new(o, "rope_scaling", rs);
	json_object_set_new(o, "rope_theta", json_real(tidy(cfg->rope_theta)));
	json_object_set_new(o, "tie_word_embeddings", json_boolean(cfg->tie_word_embeddings));
	json_object_set_new(o, "torch_dtype", json_string(torch_dtype ? torch_dtype : "float32"));
	json_object_set_new(o, "use_cache", json_true());
	json_object_set_new(o, "vocab_size", json_integer(cfg->vocab_size));
	if (qwen2) {
		json_object_set_new(o, "use_sliding_window", json_false());
		json_object_set_new(o, "sliding_window", json_null());
		json_object_set_new(o, "max_window_layers", json_integer(cfg->num_hidden_layers));
	}
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
	json_decref(o);
	if (!text)
		return lmk_err(LMK_ENOMEM, "%s: cannot format the config", path);
	size_t len = strlen(text);
	char *buf = realloc(text, len + 2);
	if (!buf) {
		free(text);
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate", path);
	}
	buf[len++] = '\n';
	buf[len] = 0;
	rc = lmk_write_file_atomic(path, buf, len);
	free(buf);
	return rc;
}

/* ---- parameters ------------------------------------------------------- */

enum { P_LN1, P_WQ, P_BQ, P_WK, P_BK, P_WV, P_BV, P_WO, P_BO, P_LN2,
       P_WG, P_BG, P_WU, P_BU, P_WD, P_BD, P_NLAYER };

static int add_param(lmk_params *p, const char *fmt, int layer, int64_t rows, int64_t cols)
{
	char name[128];
	int64_t shape[2] = {rows, cols};
	snprintf(name, sizeof name, fmt, layer);
	return lmk_params_add(p, name, cols > 0 ? 2 : 1, shape);
}

int lmk_llama_init(lmk_llama *m, const lmk_llama_config *cfg, int trainable)
{
	int rc = lmk_llama_config_check(cfg, "llama");
	memset(m, 0, sizeof *m);
	if (rc < 0)
		return rc;
	m->cfg = *cfg;
	const int64_t C = cfg->hidden_size, F = cfg->intermediate_size, V = cfg->vocab_size;
	const int64_t HD = (int64_t)cfg->num_attention_heads * cfg->head_dim;
	const int64_t KD = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
	const int L = cfg->num_hidden_layers, ab = cfg->attention_bias, mb = cfg->mlp_bias;
	const int obias = ab && strcmp(cfg->model_type, "qwen2") != 0;
	lmk_params *p = &m->params;
	int *idx = malloc(sizeof(int) * (size_t)L * P_NLAYER);
	int iwte, inorm, ihead = -1;

	lmk_params_init(p, trainable);
	m->layers = calloc((size_t)L, sizeof *m->layers);
	if (!idx || !m->layers) {
		free(idx);
		free(m->layers);
		m->layers = NULL;
		return lmk_err(LMK_ENOMEM, "llama: cannot allocate");
	}
	for (int i = 0; i < L * P_NLAYER; i++)
		idx[i] = -1;
	/* transformers' named_parameters() order, so that the flat buffer lines
	 * up with a PyTorch model's parameters. */
	if ((iwte = rc = add_param(p, "model.embed_tokens.weight", 0, V, C)) < 0)
		goto fail;
#define ADD(slot, fmt, r, c) \
	do { if ((rc = idx[l * P_NLAYER + slot] = add_param(p, fmt, l, r, c)) < 0) goto fail; } while (0)
	for (int l = 0; l < L; l++) {
		if (cfg->mixer) {
			char prefix[64];
			snprintf(prefix, sizeof prefix, "model.layers.%d.mixer.", l);
			if ((rc = lmk_mixer_register(&m->layers[l].mix, &cfg->mix, p, prefix)) < 0)
				goto fail;
			goto mlp;
		}
		ADD(P_WQ, "model.layers.%d.self_attn.q_proj.weight", HD, C);
		if (ab)
			ADD(P_BQ, "model.layers.%d.self_attn.q_proj.bias", HD, 0);
		ADD(P_WK, "model.layers.%d.self_attn.k_proj.weight", KD, C);
		if (ab)
			ADD(P_BK, "model.layers.%d.self_attn.k_proj.bias", KD, 0);
		ADD(P_WV, "model.layers.%d.self_attn.v_proj.weight", KD, C);
		if (ab)
			ADD(P_BV, "model.layers.%d.self_attn.v_proj.bias", KD, 0);
		ADD(P_WO, "model.layers.%d.self_attn.o_proj.weight", C, HD);
		if (obias)
			ADD(P_BO, "model.layers.%d.self_attn.o_proj.bias", C, 0);
	mlp:
		ADD(P_WG, "model.layers.%d.mlp.gate_proj.weight", F, C);
		if (mb)
			ADD(P_BG, "model.layers.%d.mlp.gate_proj.bias", F, 0);
		ADD(P_WU, "model.layers.%d.mlp.up_proj.weight", F, C);
		if (mb)
			ADD(P_BU, "model.layers.%d.mlp.up_proj.bias", F, 0);
		ADD(P_WD, "model.layers.%d.mlp.down_proj.weight", C, F);
		if (mb)
			ADD(P_BD, "model.layers.%d.mlp.down_proj.bias", C, 0);
		ADD(P_LN1, "model.layers.%d.input_layernorm.weight", C, 0);
		ADD(P_LN2, "model.layers.%d.post_attention_layernorm.weight", C, 0);
	}
#undef ADD
	if ((inorm = rc = add_param(p, "model.norm.weight", 0, C, 0)) < 0)
		goto fail;
	if (!cfg->tie_word_embeddings && (ihead = rc = add_param(p, "lm_head.weight", 0, V, C)) < 0)
		goto fail;
	if ((rc = lmk_params_alloc(p)) < 0)
		goto fail;
	for (int l = 0; cfg->mixer && l < L; l++)
		if ((rc = lmk_mixer_bind(&m->layers[l].mix, p)) < 0)
			goto fail;
	m->wte = &p->t[iwte];
	m->norm = &p->t[inorm];
	m->lm_head = ihead >= 0 ? &p->t[ihead] : m->wte;
	for (int l = 0; l < L; l++) {
		const int *ix = idx + l * P_NLAYER;
		lmk_tensor **slot[P_NLAYER] = {
			[P_LN1] = &m->layers[l].ln1, [P_WQ] = &m->layers[l].wq, [P_BQ] = &m->layers[l].bq,
			[P_WK] = &m->layers[l].wk, [P_BK] = &m->layers[l].bk, [P_WV] = &m->layers[l].wv,
			[P_BV] = &m->layers[l].bv, [P_WO] = &m->layers[l].wo, [P_BO] = &m->layers[l].bo,
			[P_LN2] = &m->layers[l].ln2, [P_WG] = &m->layers[l].wg,
			[P_BG] = &m->layers[l].bg, [P_WU] = &m->layers[l].wu, [P_BU] = &m->layers[l].bu,
			[P_WD] = &m->layers[l].wd, [P_BD] = &m->layers[l].bd,
		};
		for (int s = 0; s < P_NLAYER; s++)
			*slot[s] = ix[s] >= 0 ? &p->t[ix[s]] : NULL;
	}
	free(idx);
	idx = NULL;
	if ((rc = lmk_rope_init(&m->rope, cfg->head_dim, cfg->rope_theta, &cfg->rope_scaling)) < 0)
		goto fail;
	return 0;
fail:
	free(idx);
	lmk_llama_free(m);
	return rc;
}

void lmk_llama_init_weights(lmk_llama *m, uint64_t seed)
{
	lmk_params *p = &m->params;
	const float std = m->cfg.initializer_range;
	const float resid = std / sqrtf(2.0f * (float)m->cfg.num_hidden_layers);
	for (int i = 0; i < p->nt; i++) {
		lmk_tensor *t = &p->t[i];
		float *d = t->data;
		const uint64_t off = p->offset[i];
		if (strstr(t->name, ".mixer."))
			continue; /* below, as its paper does */
		if (t->ndim == 1) {
			float val = strstr(t->name, "norm") ? 1.0f : 0.0f;
			for (int64_t j = 0; j < t->n; j++)
				d[j] = val;
			continue;
		}
		float s = (strstr(t->name, "o_proj.weight") || strstr(t->name, "down_proj.weight"))
				  ? resid : std;
		/* The element's global offset indexes the stream: the same
		 * weights whatever the number of threads. */
		#pragma omp parallel for schedule(static) if (t->n > 65536)
		for (int64_t j = 0; j < t->n; j++)
			d[j] = s * lmk_philox_normal(seed, 0, off + (uint64_t)j);
	}
	for (int l = 0; m->cfg.mixer && l < m->cfg.num_hidden_layers; l++)
		lmk_mixer_init_weights(&m->layers[l].mix, seed ^ (0x6d697865ull + (uint64_t)l * 0x9e3779b97f4a7c15ull));
}

void lmk_llama_free(lmk_llama *m)
{
	lmk_params_free(&m->params);
	free(m->layers);
	if (m->rope.inv_freq)
		lmk_rope_free(&m->rope);
	memset(m, 0, sizeof *m);
}

/* ---- forward ---------------------------------------------------------- */

/* Positions start..start+T-1 of each row, (B,T) I32 on c's device. On a
 * device a kernel writes them (nothing is uploaded, so that a training step
 * replayed as a CUDA graph makes them too). */
static lmk_tensor *positions(lmk_ctx *c, int64_t B, int64_t T, int start)
{
	int64_t shape[2] = {B, T};
	lmk_tensor *pos = lmk_tensor_new(c, LMK_I32, 2, shape, 0);
	if (!pos)
		return NULL;
#if LMK_CUDA
	if (c->dev == LMK_DEV_CUDA)
		return lmk_cuda_fill_positions(c->backend, pos->data, B, T, start) < 0 ? NULL : pos;
#endif
	int32_t *d = pos->data;
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			d[b * T + t] = start + (int32_t)t;
	return pos;
}

/* q, k, v of layer l for x (B,T,C), with rope applied to q and k:
 * q (B,T,H,D), k and v (B,T,K,D). */
static void qkv(lmk_ctx *c, const lmk_llama *m, const lmk_llama_layer *ly, lmk_tensor *h,
		lmk_tensor *pos, lmk_tensor **q, lmk_tensor **k, lmk_tensor **v)
{
	const lmk_llama_config *cfg = &m->cfg;
	int64_t B = h ? h->shape[0] : 0, T = h ? h->shape[1] : 0;
	int64_t qs[4] = {B, T, cfg->num_attention_heads, cfg->head_dim};
	int64_t ks[4] = {B, T, cfg->num_key_value_heads, cfg->head_dim};
	const lmk_lora *a = m->lora;
	*q = lmk_rope_apply(c, lmk_reshape(c, lmk_lora_linear(c, a, h, ly->wq, ly->bq), 4, qs),
			    &m->rope, pos);
	*k = lmk_rope_apply(c, lmk_reshape(c, lmk_lora_linear(c, a, h, ly->wk, ly->bk), 4, ks),
			    &m->rope, pos);
	*v = lmk_reshape(c, lmk_lora_linear(c, a, h, ly->wv, ly->bv), 4, ks);
}

/* The residual r plus the product of a with w (and b): the add fused into
 * the product, or with an adapter on w the two ops (the adapter's own add
 * comes first, as before). */
static lmk_tensor *residual(lmk_ctx *c, const lmk_llama *m, lmk_tensor *r, lmk_tensor *a,
			    lmk_tensor *w, lmk_tensor *b)
{
	if (lmk_lora_find(m->lora, w))
		return lmk_add(c, r, lmk_lora_linear(c, m->lora, a, w, b));
	return lmk_linear_add(c, a, w, b, r);
}

/* The MLP half of a block: x (B,T,C) -> new residual (B,T,C). */
static lmk_tensor *mlp_block(lmk_ctx *c, const lmk_llama *m, const lmk_llama_layer *ly,
			     lmk_tensor *x)
{
	const lmk_lora *ad = m->lora;
	lmk_tensor *h = lmk_rmsnorm(c, x, ly->ln2, m->cfg.rms_norm_eps);
	lmk_tensor *wgu[2] = {ly->wg, ly->wu}, *g;
	/* gate and up as one product against the stacked [wg; wu] (adjacent
	 * in the parameters, transformers' order) when neither has a bias or
	 * an adapter */
	if (!ly->bg && !ly->bu && !lmk_lora_find(ad, ly->wg) && !lmk_lora_find(ad, ly->wu) &&
	    lmk_linear_cat_ok(2, wgu))
		g = lmk_swiglu_cat(c, lmk_linear_cat(c, h, 2, wgu));
	else
		g = lmk_swiglu(c, lmk_lora_linear(c, ad, h, ly->wg, ly->bg),
			       lmk_lora_linear(c, ad, h, ly->wu, ly->bu));
	return residual(c, m, x, g, ly->wd, ly->bd);
}

/* The rest of a layer after attention: a (B,T,H,D) -> new residual (B,T,C). */
static lmk_tensor *finish_layer(lmk_ctx *c, const lmk_llama *m, const lmk_llama_layer *ly,
				lmk_tensor *x, lmk_tensor *a)
{
	int64_t B = x ? x->shape[0] : 0, T = x ? x->shape[1] : 0;
	int64_t as[3] = {B, T, (int64_t)m->cfg.num_attention_heads * m->cfg.head_dim};
	x = residual(c, m, x, lmk_reshape(c, a, 3, as), ly->wo, ly->bo);
	return mlp_block(c, m, ly, x);
}

/* The decoders' last step: logits (rows,V) into host memory from the
 * residual rows x (rows,C) (NULL: the error of what made it). */
static int decode_logits(lmk_ctx *c, const lmk_llama *m, lmk_tensor *x, float *logits)
{
	lmk_tensor *y = x ? lmk_linear(c, lmk_rmsnorm(c, x, m->norm, m->cfg.rms_norm_eps),
				       m->lm_head, NULL)
			  : NULL;
	if (!y)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	return lmk_tensor_read_f32(c, y, 0, logits);
}

lmk_tensor *lmk_llama_hidden(lmk_ctx *c, lmk_llama *m, lmk_tensor *ids, lmk_tensor *pos,
			     lmk_tensor *seg)
{
	if (!ids)
		return NULL;
	if (ids->ndim != 2 || ids->dtype != LMK_I32) {
		lmk_err(LMK_EINVAL, "llama: ids: expected (B,T) I32, found %d dims of %s", ids->ndim,
			lmk_dtype_name(ids->dtype));
		return NULL;
	}
	const int64_t B = ids->shape[0], T = ids->shape[1];
	if (m->cfg.mixer && seg) {
		lmk_err(LMK_EUNSUP, "llama: packed sequences (seg) with the %s mixer: its states would "
			"carry across them", lmk_mixer_kind_name(m->cfg.mixer - 1));
		return NULL;
	}
	if (!pos && !(pos = positions(c, B, T, 0)))
		return NULL;
	const float scale = 1.0f / sqrtf((float)m->cfg.head_dim);
	lmk_tensor *x = lmk_embedding(c, ids, m->wte); /* (B,T,C) */
	for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
		const lmk_llama_layer *ly = &m->layers[l];
		lmk_tensor *q, *k, *v;
		if (m->cfg.mixer) {
			lmk_tensor *h = lmk_rmsnorm(c, x, ly->ln1, m->cfg.rms_norm_eps);
			x = mlp_block(c, m, ly, lmk_add(c, x, lmk_mixer_forward(c, &ly->mix, h)));
			continue;
		}
		qkv(c, m, ly, lmk_rmsnorm(c, x, ly->ln1, m->cfg.rms_norm_eps), pos, &q, &k, &v);
		x = finish_layer(c, m, ly, x, lmk_attention(c, q, k, v, seg, scale));
	}
	return lmk_rmsnorm(c, x, m->norm, m->cfg.rms_norm_eps);
}

lmk_tensor *lmk_llama_forward(lmk_ctx *c, lmk_llama *m, lmk_tensor *ids, lmk_tensor *pos,
			      lmk_tensor *seg)
{
	return lmk_linear(c, lmk_llama_hidden(c, m, ids, pos, seg), m->lm_head, NULL);
}

/* ---- decoding with a KV cache ----------------------------------------- */

#if LMK_CUDA
/* A cache's recorded one-token step (decode_graph below). */
struct lmk_decode_graph {
	const lmk_llama *m;              /* what it was recorded for */
	const void *weights;             /* m->params.data */
	void *backend;
	lmk_dtype dtype;
	lmk_ctx g;                       /* the step's context: c's backend, an
					  * arena of its own that nothing else
					  * touches while the graph lives */
	void *exec;                      /* the graph, NULL until recorded */
	int runs;                        /* steps run so far */
	int nsplit;                      /* attention's parts (from max_t) */
	int32_t *state;                  /* device: token, position, argmax */
	float *freq;                     /* device: the rope table (D/2) */
	float *flogits;                  /* device: the logits as float32 (V) */
	int32_t *host;                   /* pinned: token and position to upload,
					  * two slots of tokens read back */
	const void *logits;              /* the step's (V) of dtype, in g's arena */
};

static void graph_free(struct lmk_decode_graph *dg)
{
	if (!dg)
		return;
	lmk_cuda_graph_free(dg->exec);
	lmk_arena_free(&dg->g.arena);
	lmk_arena_free(&dg->g.meta);
	if (dg->state)
		lmk_cuda_mem_free(dg->state);
	lmk_cuda_host_free(dg->host);
	free(dg);
}
#endif

/* A mixer model's cache: each layer's decoding state on c's device. */
static int mixer_states(lmk_kvcache *kv, const lmk_llama *m, int max_t, lmk_ctx *c)
{
	const int L = m->cfg.num_hidden_layers;
	int rc = 0;

	if (!(kv->mix = calloc((size_t)L, sizeof *kv->mix)))
		return lmk_err(LMK_ENOMEM, "kvcache: %d mixer states", L);
	for (int l = 0; l < L && rc == 0; l++)
		if ((rc = lmk_mixer_state_init(&kv->mix[l], &m->layers[l].mix, c, 1, max_t)) == 0)
			kv->nmix++;
	if (rc < 0) {
		lmk_kvcache_free(kv);
		return rc;
	}
	kv->dev = c->dev;
	kv->dtype = c->dev == LMK_DEV_CPU ? LMK_F32 : c->dtype;
	kv->max_t = max_t;
	return 0;
}

int lmk_kvcache_init(lmk_kvcache *kv, const lmk_llama *m, int max_t)
{
	memset(kv, 0, sizeof *kv);
	if (max_t <= 0)
		return lmk_err(LMK_EINVAL, "kvcache: expected max_t > 0, found %d", max_t);
	if (m->cfg.mixer) {
		lmk_ctx host;
		if (lmk_ctx_init(&host, LMK_DEV_CPU) < 0)
			return lmk_errcode();
		int rc = mixer_states(kv, m, max_t, &host);
		lmk_ctx_free(&host);
		return rc;
	}
	size_t n = (size_t)m->cfg.num_hidden_layers * (size_t)max_t *
		   (size_t)m->cfg.num_key_value_heads * (size_t)m->cfg.head_dim;
	kv->k = malloc(n * sizeof(float));
	kv->v = malloc(n * sizeof(float));
	if (!kv->k || !kv->v) {
		lmk_kvcache_free(kv);
		return lmk_err(LMK_ENOMEM, "kvcache: cannot allocate 2 x %zu floats", n);
	}
	kv->dtype = LMK_F32;
	kv->max_t = max_t;
	return 0;
}

int lmk_kvcache_init_ctx(lmk_kvcache *kv, const lmk_llama *m, int max_t, const lmk_ctx *c)
{
	if (c->dev == LMK_DEV_CPU)
		return lmk_kvcache_init(kv, m, max_t);
	memset(kv, 0, sizeof *kv);
	if (max_t <= 0)
		return lmk_err(LMK_EINVAL, "kvcache: expected max_t > 0, found %d", max_t);
	if (m->cfg.mixer) /* the states take c for its device and stream only */
		return mixer_states(kv, m, max_t, (lmk_ctx *)c);
#if LMK_CUDA
	size_t n = (size_t)m->cfg.num_hidden_layers * (size_t)max_t *
		   (size_t)m->cfg.num_key_value_heads * (size_t)m->cfg.head_dim;
	size_t bytes = n * lmk_dtype_size(c->dtype);
	kv->dev = c->dev;
	kv->dtype = c->dtype;
	int rc = lmk_cuda_mem_alloc(&kv->dk, bytes);
	if (rc == 0)
		rc = lmk_cuda_mem_alloc(&kv->dv, bytes);
	if (rc < 0) {
		lmk_kvcache_free(kv);
		return rc;
	}
	kv->max_t = max_t;
	return 0;
#else
	return lmk_err(LMK_EUNSUP, "kvcache: cuda in a cpu-only build");
#endif
}

void lmk_kvcache_free(lmk_kvcache *kv)
{
	for (int l = 0; l < kv->nmix; l++)
		lmk_mixer_state_free(&kv->mix[l]);
	free(kv->mix);
	free(kv->k);
	free(kv->v);
#if LMK_CUDA
	graph_free(kv->graph);
	if (kv->dk)
		lmk_cuda_mem_free(kv->dk);
	if (kv->dv)
		lmk_cuda_mem_free(kv->dv);
#endif
	memset(kv, 0, sizeof *kv);
}

/* Causal attention of n new queries at positions S0..S0+n-1 over the cache
 * (which already holds them): the same arithmetic as the CPU attention
 * kernel's forward, one row at a time. scratch is (nthreads, S0+n). On one
 * thread unless the work is large (a long prompt): a decoded token's few
 * hundred thousand multiply-adds take less time than a fork and a join,
 * and far less when another program holds the other core. */
static void cache_attend(float *out /*(n,H,D)*/, const float *q /*(n,H,D)*/,
			 const float *kc /*(S,K,D)*/, const float *vc /*(S,K,D)*/,
			 float *scratch, int S0, int n, int H, int K, int D, float scale)
{
	const int group = H / K, S = S0 + n;
	#pragma omp parallel for collapse(2) schedule(static) \
		if ((int64_t)n * H * S * D > ((int64_t)1 << 22))
	for (int i = 0; i < n; i++) {
		for (int h = 0; h < H; h++) {
			float *att = scratch + (size_t)omp_get_thread_num() * (size_t)S;
			const float *qi = q + ((size_t)i * H + h) * D;
			const int kh = h / group, last = S0 + i;
			float mx = -INFINITY;
			for (int j = 0; j <= last; j++) {
				const float *kj = kc + ((size_t)j * K + kh) * D;
				float s = 0.0f;
				#pragma omp simd reduction(+ : s)
				for (int d = 0; d < D; d++)
					s += qi[d] * kj[d];
				s *= scale;
				att[j] = s;
				if (s > mx)
					mx = s;
			}
			float sum = 0.0f;
			for (int j = 0; j <= last; j++) {
				att[j] = expf(att[j] - mx);
				sum += att[j];
			}
			float inv = 1.0f / sum;
			float *oi = out + ((size_t)i * H + h) * D;
			for (int d = 0; d < D; d++)
				oi[d] = 0.0f;
			for (int j = 0; j <= last; j++) {
				const float *vj = vc + ((size_t)j * K + kh) * D;
				float w = att[j] * inv;
				#pragma omp simd
				for (int d = 0; d < D; d++)
					oi[d] += w * vj[d];
			}
		}
	}
}

/* Decoding's half of a layer before attention: q, k, v of x (with rope at
 * pos) in dtype dt, and a, the attention output to fill, (shape as).
 * @return : 0 or a negative code */
static int decode_qkv(lmk_ctx *c, const lmk_llama *m, const lmk_llama_layer *ly, lmk_tensor *x,
		      lmk_tensor *pos, lmk_dtype dt, const int64_t as[4], lmk_tensor **q,
		      lmk_tensor **k, lmk_tensor **v, lmk_tensor **a)
{
	qkv(c, m, ly, lmk_rmsnorm(c, x, ly->ln1, m->cfg.rms_norm_eps), pos, q, k, v);
	*a = lmk_tensor_new(c, dt, 4, as, 0);
	if (!*q || !*k || !*v || !*a)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	if ((*q)->dtype != dt || (*k)->dtype != dt || (*v)->dtype != dt)
		return lmk_err(LMK_EINVAL, "llama decode: expected q, k, v in %s, found %s",
			       lmk_dtype_name(dt), lmk_dtype_name((*q)->dtype));
	return 0;
}

static int decode(lmk_ctx *c, lmk_llama *m, lmk_kvcache *kv, const int32_t *ids, int n,
		  float *logits)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int H = cfg->num_attention_heads, K = cfg->num_key_value_heads, D = cfg->head_dim;
	const int64_t C = cfg->hidden_size;
	const size_t kvrow = (size_t)K * D;
	const float scale = 1.0f / sqrtf((float)D);
	int64_t is[2] = {1, n}, as[4] = {1, n, H, D}, ls[2] = {1, C};

	lmk_tensor *idt = lmk_tensor_wrap(c, LMK_I32, 2, is, (void *)ids);
	lmk_tensor *pos = positions(c, 1, n, kv->len);
	int nth = omp_get_max_threads();
	float *scratch = lmk_arena_alloc(&c->arena, sizeof(float) * (size_t)nth *
					 (size_t)(kv->len + n));
	if (!idt || !pos || !scratch)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	lmk_tensor *x = lmk_embedding(c, idt, m->wte);
	for (int l = 0; l < cfg->num_hidden_layers && x; l++) {
		const lmk_llama_layer *ly = &m->layers[l];
		lmk_tensor *q, *k, *v, *a;
		int rc = decode_qkv(c, m, ly, x, pos, LMK_F32, as, &q, &k, &v, &a);
		if (rc < 0)
			return rc;
		float *kc = kv->k + (size_t)l * kv->max_t * kvrow;
		float *vc = kv->v + (size_t)l * kv->max_t * kvrow;
		memcpy(kc + (size_t)kv->len * kvrow, k->data, (size_t)n * kvrow * sizeof(float));
		memcpy(vc + (size_t)kv->len * kvrow, v->data, (size_t)n * kvrow * sizeof(float));
		cache_attend(a->data, q->data, kc, vc, scratch, kv->len, n, H, K, D, scale);
		x = finish_layer(c, m, ly, x, a);
	}
	if (!x)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	/* Only the last position's logits: (1,V) rather than (n,V). */
	lmk_tensor *last = lmk_tensor_wrap(c, LMK_F32, 2, ls, (float *)x->data + (size_t)(n - 1) * C);
	int rc = decode_logits(c, m, last, logits);
	if (rc < 0)
		return rc;
	kv->len += n;
	return 0;
}

#if LMK_CUDA
/* decode on a device: the n new tokens through the ops at once, their k and
 * v copied into the cache rows len..len+n-1 on the stream, then attention:
 * a prompt into the empty cache as one causal pass of the flash kernel over
 * its own k and v (the rows it just wrote), else query row i over the first
 * len+i+1 rows of the cache (causal by construction), a launch per row. */
static int decode_dev(lmk_ctx *c, lmk_llama *m, lmk_kvcache *kv, const int32_t *ids, int n,
		      float *logits)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int H = cfg->num_attention_heads, K = cfg->num_key_value_heads, D = cfg->head_dim;
	const int64_t C = cfg->hidden_size;
	const lmk_dtype dt = c->dtype;
	const size_t es = lmk_dtype_size(dt);
	const size_t kvrow = (size_t)K * D * es, qrow = (size_t)H * D * es;
	const float scale = 1.0f / sqrtf((float)D);
	int64_t is[2] = {1, n}, as[4] = {1, n, H, D}, ls[2] = {1, C};
	int rc;

	lmk_tensor *idt = lmk_tensor_upload(c, LMK_I32, 2, is, ids);
	lmk_tensor *pos = positions(c, 1, n, kv->len);
	if (!idt || !pos)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	lmk_tensor *x = lmk_embedding(c, idt, m->wte);
	for (int l = 0; l < cfg->num_hidden_layers && x; l++) {
		const lmk_llama_layer *ly = &m->layers[l];
		lmk_tensor *q, *k, *v, *a;
		if ((rc = decode_qkv(c, m, ly, x, pos, dt, as, &q, &k, &v, &a)) < 0)
			return rc;
		char *kc = (char *)kv->dk + (size_t)l * kv->max_t * kvrow;
		char *vc = (char *)kv->dv + (size_t)l * kv->max_t * kvrow;
		if ((rc = lmk_cuda_copy(c->backend, kc + (size_t)kv->len * kvrow, k->data,
					(size_t)n * kvrow)) < 0 ||
		    (rc = lmk_cuda_copy(c->backend, vc + (size_t)kv->len * kvrow, v->data,
					(size_t)n * kvrow)) < 0)
			return rc;
		if (kv->len == 0 && n > 1) {
			int64_t lss[3] = {1, H, n};
			lmk_tensor *lse = lmk_tensor_new(c, LMK_F32, 3, lss, 0);
			if (!lse)
				return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
			rc = lmk_cuda_attention_forward(c->backend, dt, a->data, lse->data, q->data,
							k->data, v->data, NULL, 1, n, H, K, D, scale,
							1);
			if (rc < 0)
				return rc;
		} else {
			for (int i = 0; i < n; i++)
				if ((rc = lmk_cuda_attention_decode(
					     c->backend, dt, (char *)a->data + i * qrow,
					     (const char *)q->data + i * qrow, kc, vc, kv->len + i + 1, H,
					     K, D, scale)) < 0)
					return rc;
		}
		x = finish_layer(c, m, ly, x, a);
	}
	if (!x)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	lmk_tensor *last = lmk_tensor_wrap(c, x->dtype, 2, ls,
					   (char *)x->data + (size_t)(n - 1) * C * es);
	if ((rc = decode_logits(c, m, last, logits)) < 0)
		return rc;
	kv->len += n;
	return 0;
}

/* Whether one-token steps of m run recorded: attention, no adapter (its
 * products stay the ops'), and not LMK_DECODE_GRAPH=0 in the environment. */
static int graph_ok(const lmk_llama *m)
{
	const char *e = getenv("LMK_DECODE_GRAPH");
	return !m->cfg.mixer && !m->lora && !(e && !strcmp(e, "0"));
}

/* A step's context over c's backend: its own arenas (4 MiB chunks: a step
 * needs a few), no tape. */
static void graph_ctx(lmk_ctx *g, const lmk_ctx *c)
{
	memset(g, 0, sizeof *g);
	g->dev = c->dev;
	g->dtype = c->dtype;
	g->backend = c->backend;
	g->seed = c->seed;
	g->arena.dev = c->dev;
	g->arena.backend = c->backend;
	g->arena.poison = c->arena.poison;
	g->arena.chunk = (size_t)4 << 20;
	g->meta.dev = LMK_DEV_CPU;
	g->meta.chunk = c->meta.chunk;
}

/* The recorded step of kv for (m, c), made if missing or made for others. */
static int graph_get(lmk_ctx *c, const lmk_llama *m, lmk_kvcache *kv,
		     struct lmk_decode_graph **out)
{
	struct lmk_decode_graph *dg = kv->graph;
	if (dg && (dg->m != m || dg->weights != m->params.data || dg->backend != c->backend ||
		   dg->dtype != c->dtype)) {
		graph_free(dg);
		kv->graph = dg = NULL;
	}
	if (!dg) {
		const int D = m->cfg.head_dim;
		int rc;
		if (!(dg = calloc(1, sizeof *dg)))
			return lmk_err(LMK_ENOMEM, "llama decode: cannot allocate the step's state");
		dg->m = m;
		dg->weights = m->params.data;
		dg->backend = c->backend;
		dg->dtype = c->dtype;
		graph_ctx(&dg->g, c);
		dg->nsplit = lmk_cuda_decode_splits(c->backend, m->cfg.num_attention_heads, kv->max_t);
		/* the state's three words padded to 16 bytes, the float32
		 * logits, then the table */
		const size_t V = (size_t)m->cfg.vocab_size;
		rc = lmk_cuda_mem_alloc((void **)&dg->state,
					16 + sizeof(float) * (V + (size_t)(D / 2)));
		if (rc == 0) {
			dg->flogits = (float *)(dg->state + 4);
			dg->freq = dg->flogits + V;
			rc = lmk_cuda_upload(c->backend, dg->freq, m->rope.inv_freq,
					     sizeof(float) * (size_t)(D / 2));
		}
		if (rc == 0)
			rc = lmk_cuda_host_alloc((void **)&dg->host, 4 * sizeof(int32_t));
		if (rc < 0) {
			graph_free(dg);
			return rc;
		}
		kv->graph = dg;
	}
	*out = dg;
	return 0;
}

/* A new (1,1,n) activation of g. */
static lmk_tensor *row_new(lmk_ctx *g, int64_t n)
{
	int64_t shape[3] = {1, 1, n};
	return lmk_tensor_new(g, g->dtype, 3, shape, 0);
}

/* q, k and v (1,1,H*D) (1,1,K*D) (1,1,K*D) of the residual x (1,1,C)
 * after the layer's input norm, in one launch of the gemv kernel (the norm
 * inside). */
static int step_qkv(lmk_ctx *g, const lmk_llama *m, const lmk_llama_layer *ly, lmk_tensor *x,
		    lmk_tensor **q, lmk_tensor **k, lmk_tensor **v)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int64_t HD = (int64_t)cfg->num_attention_heads * cfg->head_dim;
	const int64_t KD = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
	*q = row_new(g, HD);
	*k = row_new(g, KD);
	*v = row_new(g, KD);
	if (!*q || !*k || !*v)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	const lmk_gemv_out o[3] = {
		{(*q)->data, lmk_op_x(g, ly->wq), lmk_op_x(g, ly->bq), NULL, HD},
		{(*k)->data, lmk_op_x(g, ly->wk), lmk_op_x(g, ly->bk), NULL, KD},
		{(*v)->data, lmk_op_x(g, ly->wv), lmk_op_x(g, ly->bv), NULL, KD},
	};
	return lmk_cuda_gemv_multi(g->backend, g->dtype, x->data, lmk_op_x(g, ly->ln1),
				   cfg->rms_norm_eps, 1, cfg->hidden_size, o, 3);
}

/* The rest of a layer after attention, as finish_layer, in three launches
 * (o_proj with the residual add; the norm, the gate and up products and
 * SwiGLU; down_proj with the residual add). */
static lmk_tensor *step_finish(lmk_ctx *g, const lmk_llama *m, const lmk_llama_layer *ly,
			       lmk_tensor *x, lmk_tensor *a)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int64_t C = cfg->hidden_size, F = cfg->intermediate_size;
	const int64_t HD = (int64_t)cfg->num_attention_heads * cfg->head_dim;
	lmk_tensor *x1 = row_new(g, C), *gu = row_new(g, F), *x2 = row_new(g, C);
	if (!x1 || !gu || !x2)
		return NULL;
	const lmk_gemv_out o = {x1->data, lmk_op_x(g, ly->wo), lmk_op_x(g, ly->bo), x->data, C};
	const lmk_gemv_out d = {x2->data, lmk_op_x(g, ly->wd), lmk_op_x(g, ly->bd), x1->data, C};
	if (lmk_cuda_gemv_multi(g->backend, g->dtype, a->data, NULL, 0.0f, 1, HD, &o, 1) < 0 ||
	    lmk_cuda_gemv_swiglu(g->backend, g->dtype, gu->data, x1->data, lmk_op_x(g, ly->ln2),
				 cfg->rms_norm_eps, lmk_op_x(g, ly->wg), lmk_op_x(g, ly->bg),
				 lmk_op_x(g, ly->wu), lmk_op_x(g, ly->bu), 1, C, F) < 0 ||
	    lmk_cuda_gemv_multi(g->backend, g->dtype, gu->data, NULL, 0.0f, 1, F, &d, 1) < 0)
		return NULL;
	return x2;
}

/* The logits (1,V) of the residual x after the final norm, in one launch. */
static lmk_tensor *step_logits(lmk_ctx *g, const lmk_llama *m, lmk_tensor *x)
{
	const lmk_llama_config *cfg = &m->cfg;
	lmk_tensor *y = row_new(g, cfg->vocab_size);
	if (!y)
		return NULL;
	const lmk_gemv_out o = {y->data, lmk_op_x(g, m->lm_head), NULL, NULL, cfg->vocab_size};
	if (lmk_cuda_gemv_multi(g->backend, g->dtype, x->data, lmk_op_x(g, m->norm),
				cfg->rms_norm_eps, 1, cfg->hidden_size, &o, 1) < 0)
		return NULL;
	return y;
}

/* The one-token step on dg's context, every position-dependent read from
 * the state: decode_dev's ops, but the embedding (lmk_cuda_decode_embed),
 * rope and the cache append (lmk_cuda_decode_rope_append), attention
 * reading the length from the state (lmk_cuda_decode_attention), and the
 * norms, products and residual adds fused as step_qkv, step_finish and
 * step_logits say (the bits of the ops): 6 launches a layer instead of
 * 15; then the argmax of the logits into the state. Only for a model
 * without an adapter (m->lora NULL: graph_ok). No host copy, wait or
 * allocation beyond the arena's first step: it can be recorded. */
static int graph_step(struct lmk_decode_graph *dg, const lmk_llama *m, lmk_kvcache *kv)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int H = cfg->num_attention_heads, K = cfg->num_key_value_heads, D = cfg->head_dim;
	const float scale = 1.0f / sqrtf((float)D);
	lmk_ctx *g = &dg->g;
	const lmk_dtype dt = g->dtype;
	const size_t kvrow = (size_t)K * D * lmk_dtype_size(dt);
	int64_t as[4] = {1, 1, H, D};
	const size_t pbytes = lmk_cuda_decode_scratch(dg->nsplit, H, D);
	int rc;

	lmk_tensor *x = row_new(g, cfg->hidden_size);
	if (!x)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	if ((rc = lmk_cuda_decode_embed(g->backend, dt, x->data, lmk_op_x(g, m->wte), dg->state,
					cfg->hidden_size, cfg->vocab_size)) < 0)
		return rc;
	for (int l = 0; l < cfg->num_hidden_layers && x; l++) {
		const lmk_llama_layer *ly = &m->layers[l];
		lmk_tensor *q, *k, *v;
		if ((rc = step_qkv(g, m, ly, x, &q, &k, &v)) < 0)
			return rc;
		lmk_tensor *a = lmk_tensor_new(g, dt, 4, as, 0);
		float *part = pbytes ? lmk_arena_alloc(&g->arena, pbytes) : NULL;
		if (!a || (pbytes && !part))
			return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
		char *kc = (char *)kv->dk + (size_t)l * kv->max_t * kvrow;
		char *vc = (char *)kv->dv + (size_t)l * kv->max_t * kvrow;
		if ((rc = lmk_cuda_decode_rope_append(g->backend, dt, q->data, k->data, v->data, kc,
						      vc, dg->state, dg->freq, m->rope.attn_factor,
						      H, K, D)) < 0 ||
		    (rc = lmk_cuda_decode_attention(g->backend, dt, a->data, q->data, kc, vc,
						    dg->state, H, K, D, scale, dg->nsplit, part)) < 0)
			return rc;
		x = step_finish(g, m, ly, x, a);
	}
	lmk_tensor *y = x ? step_logits(g, m, x) : NULL;
	if (!y)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	dg->logits = y->data;
	return lmk_cuda_decode_argmax(g->backend, dt, y->data, cfg->vocab_size, dg->state);
}

/* Queues one step of dg on the state as the device holds it (the token
 * and position the host uploaded, or those the previous step left): the
 * first run of the step runs it (sizing its arena), the second records and
 * replays it, later ones replay it. */
static int graph_run(lmk_ctx *c, const lmk_llama *m, lmk_kvcache *kv, struct lmk_decode_graph *dg)
{
	int rc;
	if (!dg->exec) {
		/* nothing of the step may allocate while it is recorded: the
		 * first run sized the arena, whose reset happens here */
		lmk_ctx_reset(&dg->g);
		if (dg->runs == 0) {
			rc = graph_step(dg, m, kv);
		} else if ((rc = lmk_cuda_capture_begin(c->backend)) == 0) {
			rc = graph_step(dg, m, kv);
			int rc2 = lmk_cuda_capture_end(c->backend, &dg->exec);
			if (rc == 0)
				rc = rc2;
			if (rc == 0) {
				rc = lmk_cuda_graph_launch(c->backend, dg->exec);
			} else {
				/* a step that failed while recorded ends its
				 * recording cleanly: keep none of it */
				lmk_cuda_graph_free(dg->exec);
				dg->exec = NULL;
			}
		}
	} else {
		rc = lmk_cuda_graph_launch(c->backend, dg->exec);
	}
	if (rc < 0)
		return rc;
	dg->runs++;
	kv->len++;
	return 0;
}

/* One token at position kv->len through kv's recorded step, its logits
 * (V float32) back: converted on the device and copied straight into
 * logits (a host conversion of V bf16 values costs as much as the step). */
static int decode_graph(lmk_ctx *c, const lmk_llama *m, lmk_kvcache *kv, int32_t tok,
			float *logits)
{
	struct lmk_decode_graph *dg = NULL;
	int rc = graph_get(c, m, kv, &dg);
	if (rc < 0)
		return rc;
	dg->host[0] = tok;
	dg->host[1] = kv->len;
	if ((rc = lmk_cuda_upload(c->backend, dg->state, dg->host, 2 * sizeof(int32_t))) < 0 ||
	    (rc = graph_run(c, m, kv, dg)) < 0 ||
	    (rc = lmk_cuda_decode_to_f32(c->backend, c->dtype, dg->flogits, dg->logits,
					 m->cfg.vocab_size)) < 0)
		return rc;
	/* a download reads the error word too: a token outside the vocabulary
	 * fails here, as in decode_dev */
	return lmk_cuda_download(c->backend, logits, dg->flogits,
				 sizeof(float) * (size_t)m->cfg.vocab_size);
}
#endif
/* One new token for each of n sequences, each at its own position in its
 * own cache: the ops run on (n,1) rows together; the cache rows are written
 * and attended row by row. */
static int decode_batch(lmk_ctx *c, lmk_llama *m, lmk_kvcache *const *kv, const int32_t *ids,
			int n, float *logits)
{
	const lmk_llama_config *cfg = &m->cfg;
	const int H = cfg->num_attention_heads, K = cfg->num_key_value_heads, D = cfg->head_dim;
	const lmk_dtype dt = c->dev == LMK_DEV_CPU ? LMK_F32 : c->dtype;
	const size_t es = lmk_dtype_size(dt);
	const size_t kvrow = (size_t)K * D * es, qrow = (size_t)H * D * es;
	const float scale = 1.0f / sqrtf((float)D);
	int64_t is[2] = {n, 1}, as[4] = {n, 1, H, D};
	int maxlen = 0, rc = 0;

	int32_t *pd = lmk_arena_alloc(c->dev == LMK_DEV_CPU ? &c->arena : &c->meta,
				      (size_t)n * sizeof *pd);
	if (!pd)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	for (int i = 0; i < n; i++) {
		pd[i] = kv[i]->len;
		if (kv[i]->len + 1 > maxlen)
			maxlen = kv[i]->len + 1;
	}
	lmk_tensor *idt = c->dev == LMK_DEV_CPU ? lmk_tensor_wrap(c, LMK_I32, 2, is, (void *)ids)
						: lmk_tensor_upload(c, LMK_I32, 2, is, ids);
	lmk_tensor *pos = c->dev == LMK_DEV_CPU ? lmk_tensor_wrap(c, LMK_I32, 2, is, pd)
						: lmk_tensor_upload(c, LMK_I32, 2, is, pd);
	float *scratch = c->dev == LMK_DEV_CPU
				 ? lmk_arena_alloc(&c->arena, sizeof(float) * (size_t)omp_get_max_threads() *
							      (size_t)maxlen)
				 : NULL;
	if (!idt || !pos || (c->dev == LMK_DEV_CPU && !scratch))
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	lmk_tensor *x = lmk_embedding(c, idt, m->wte);
	for (int l = 0; l < cfg->num_hidden_layers && x; l++) {
		const lmk_llama_layer *ly = &m->layers[l];
		lmk_tensor *q, *k, *v, *a;
		if ((rc = decode_qkv(c, m, ly, x, pos, dt, as, &q, &k, &v, &a)) < 0)
			return rc;
		for (int i = 0; i < n; i++) {
			const lmk_kvcache *kvi = kv[i];
			const size_t at = (size_t)l * kvi->max_t + (size_t)kvi->len;
			const char *ki = (const char *)k->data + i * kvrow;
			const char *vi = (const char *)v->data + i * kvrow;
			if (c->dev == LMK_DEV_CPU) {
				float *kc = kvi->k + (size_t)l * kvi->max_t * (kvrow / es);
				float *vc = kvi->v + (size_t)l * kvi->max_t * (kvrow / es);
				memcpy((char *)kvi->k + at * kvrow, ki, kvrow);
				memcpy((char *)kvi->v + at * kvrow, vi, kvrow);
				cache_attend((float *)a->data + (size_t)i * H * D,
					     (const float *)q->data + (size_t)i * H * D, kc, vc, scratch,
					     kvi->len, 1, H, K, D, scale);
				continue;
			}
#if LMK_CUDA
			char *kc = (char *)kvi->dk + (size_t)l * kvi->max_t * kvrow;
			char *vc = (char *)kvi->dv + (size_t)l * kvi->max_t * kvrow;
			if ((rc = lmk_cuda_copy(c->backend, (char *)kvi->dk + at * kvrow, ki, kvrow)) < 0 ||
			    (rc = lmk_cuda_copy(c->backend, (char *)kvi->dv + at * kvrow, vi, kvrow)) < 0 ||
			    (rc = lmk_cuda_attention_decode(c->backend, dt, (char *)a->data + i * qrow,
							    (const char *)q->data + i * qrow, kc, vc,
							    kvi->len + 1, H, K, D, scale)) < 0)
				return rc;
#else
			(void)qrow;
			return lmk_err(LMK_EUNSUP, "llama decode: cuda in a cpu-only build");
#endif
		}
		x = finish_layer(c, m, ly, x, a);
	}
	if (!x)
		return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	int64_t ls[2] = {n, cfg->hidden_size};
	if ((rc = decode_logits(c, m, lmk_reshape(c, x, 2, ls), logits)) < 0)
		return rc;
	for (int i = 0; i < n; i++)
		kv[i]->len++;
	return 0;
}

/* decode with a token mixer: the tokens one at a time through each
 * layer's step (lmk_mixer_step), c reset between them. */
static int decode_mixer(lmk_ctx *c, lmk_llama *m, lmk_kvcache *kv, const int32_t *ids, int n,
			float *logits)
{
	const lmk_llama_config *cfg = &m->cfg;
	int64_t is[2] = {1, 1}, ls[2] = {1, cfg->hidden_size};
	lmk_tensor *x = NULL;
	int rc;

	for (int i = 0; i < n; i++) {
		if (i)
			lmk_ctx_reset(c);
		lmk_tensor *idt = c->dev == LMK_DEV_CPU
					  ? lmk_tensor_wrap(c, LMK_I32, 2, is, (void *)(ids + i))
					  : lmk_tensor_upload(c, LMK_I32, 2, is, ids + i);
		x = idt ? lmk_embedding(c, idt, m->wte) : NULL;
		for (int l = 0; l < cfg->num_hidden_layers && x; l++) {
			const lmk_llama_layer *ly = &m->layers[l];
			lmk_tensor *h = lmk_rmsnorm(c, x, ly->ln1, cfg->rms_norm_eps);
			lmk_tensor *o = lmk_mixer_step(c, &ly->mix, &kv->mix[l], h);
			x = o ? mlp_block(c, m, ly, lmk_add(c, x, o)) : NULL;
		}
		if (!x)
			return lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	}
	if ((rc = decode_logits(c, m, lmk_reshape(c, x, 2, ls), logits)) < 0)
		return rc;
	kv->len += n;
	return 0;
}

int lmk_llama_decode(lmk_ctx *c, lmk_llama *m, lmk_kvcache *kv, const int32_t *ids, int n,
		     float *logits)
{
	if (n < 1)
		return lmk_err(LMK_EINVAL, "llama decode: expected at least 1 token, found %d", n);
	if ((m->cfg.mixer != 0) != (kv->nmix != 0) ||
	    (kv->nmix && kv->nmix != m->cfg.num_hidden_layers))
		return lmk_err(LMK_EINVAL, "llama decode: the cache was made for another model");
	if (n > kv->max_t - kv->len)
		return lmk_err(LMK_EINVAL,
			       "llama decode: %d new tokens overflow the cache (%d of %d used)", n,
			       kv->len, kv->max_t);
	if (kv->dev != c->dev || (c->dev != LMK_DEV_CPU && kv->dtype != c->dtype))
		return lmk_err(LMK_EINVAL, "llama decode: the cache is not where the context "
			       "computes (%s %s, found %s %s)",
			       c->dev == LMK_DEV_CPU ? "cpu" : "cuda", lmk_dtype_name(c->dtype),
			       kv->dev == LMK_DEV_CPU ? "cpu" : "cuda", lmk_dtype_name(kv->dtype));
	if (c->dev != LMK_DEV_CPU && m->params.dev != c->dev)
		return lmk_err(LMK_EINVAL, "llama decode: the parameters are not on the context's "
			       "device (lmk_params_to_device)");
	int grad = c->grad_enabled;
	c->grad_enabled = 0;
#if LMK_CUDA
	int rc = m->cfg.mixer ? decode_mixer(c, m, kv, ids, n, logits)
		 : c->dev == LMK_DEV_CPU ? decode(c, m, kv, ids, n, logits)
		 : n == 1 && graph_ok(m) ? decode_graph(c, m, kv, ids[0], logits)
					    : decode_dev(c, m, kv, ids, n, logits);
#else
	int rc = m->cfg.mixer ? decode_mixer(c, m, kv, ids, n, logits)
			      : decode(c, m, kv, ids, n, logits);
#endif
	c->grad_enabled = grad;
	return rc;
}

int lmk_llama_decode_batch(lmk_ctx *c, lmk_llama *m, lmk_kvcache *const *kv, const int32_t *ids,
			   int n, float *logits)
{
	if (n < 1)
		return lmk_err(LMK_EINVAL, "llama decode: expected at least 1 sequence, found %d", n);
	if (m->cfg.mixer)
		return lmk_err(LMK_EUNSUP, "llama decode: several sequences at once with the %s "
			       "mixer are not built (one at a time: lmk_llama_decode)",
			       lmk_mixer_kind_name(m->cfg.mixer - 1));
	if (c->dev != LMK_DEV_CPU && m->params.dev != c->dev)
		return lmk_err(LMK_EINVAL, "llama decode: the parameters are not on the context's "
			       "device (lmk_params_to_device)");
	for (int i = 0; i < n; i++) {
		if (kv[i]->len >= kv[i]->max_t)
			return lmk_err(LMK_EINVAL, "llama decode: sequence %d: its cache is full (%d)",
				       i, kv[i]->max_t);
		if (kv[i]->dev != c->dev || (c->dev != LMK_DEV_CPU && kv[i]->dtype != c->dtype))
			return lmk_err(LMK_EINVAL, "llama decode: sequence %d: the cache is not where "
				       "the context computes", i);
		for (int j = 0; j < i; j++)
			if (kv[j] == kv[i])
				return lmk_err(LMK_EINVAL, "llama decode: sequences %d and %d share a "
					       "cache", j, i);
	}
	int grad = c->grad_enabled;
	c->grad_enabled = 0;
	int rc = decode_batch(c, m, kv, ids, n, logits);
	c->grad_enabled = grad;
	return rc;
}

/* ---- sampling and generation ------------------------------------------ */

typedef struct { float v; int i; } cand;

/* Larger logit first; the lower id first among equals (a total order, so
 * qsort's result does not depend on its algorithm). */
static int cand_cmp(const void *pa, const void *pb)
{
	const cand *a = pa, *b = pb;
	if (a->v != b->v)
		return a->v > b->v ? -1 : 1;
	return (a->i > b->i) - (a->i < b->i);
}

int lmk_sample(lmk_sampler *s, float *logits, int V)
{
	if (V <= 0)
		return lmk_err(LMK_EINVAL, "sample: expected V > 0, found %d", V);
	if (!(s->temperature > 0)) {
		int best = 0;
		for (int i = 1; i < V; i++)
			if (logits[i] > logits[best])
				best = i;
		return best;
	}
	int k = s->top_k > 0 && s->top_k < V ? s->top_k : V;
	int narrow = k < V || s->top_p < 1.0f;
	cand *cs = NULL;
	if (narrow) {
		cs = malloc(sizeof *cs * (size_t)V);
		if (!cs)
			return lmk_err(LMK_ENOMEM, "sample: cannot allocate %d candidates", V);
		for (int i = 0; i < V; i++)
			cs[i] = (cand){logits[i], i};
		qsort(cs, (size_t)V, sizeof *cs, cand_cmp);
	} else {
		k = V;
	}
	/* softmax(logits / temperature) over the k candidates, unnormalised */
	float mx = -INFINITY;
	for (int j = 0; j < k; j++) {
		float l = narrow ? cs[j].v : logits[j];
		if (l > mx)
			mx = l;
	}
	double sum = 0.0;
	for (int j = 0; j < k; j++) {
		float l = narrow ? cs[j].v : logits[j];
		float p = expf((l - mx) / s->temperature);
		if (narrow)
			cs[j].v = p;
		else
			logits[j] = p;
		sum += p;
	}
	if (s->top_p < 1.0f) {
		/* the smallest prefix whose mass reaches top_p (at least one) */
		double target = (double)s->top_p * sum, acc = 0.0;
		int keep = 0;
		while (keep < k) {
			acc += cs[keep++].v;
			if (acc >= target)
				break;
		}
		k = keep;
		sum = acc;
	}
	double r = (double)lmk_rng_uniform(&s->rng) * sum, acc = 0.0;
	int tok = narrow ? cs[k - 1].i : k - 1;
	for (int j = 0; j < k; j++) {
		acc += narrow ? cs[j].v : logits[j];
		if (r < acc) {
			tok = narrow ? cs[j].i : j;
			break;
		}
	}
	free(cs);
	return tok;
}

/* Whether generation stops after tok (an end-of-sequence token of the
 * config or of eos, or on_token says so). */
static int gen_stop(const lmk_llama *m, int tok, const int32_t *eos, int neos,
		    int (*on_token)(void *arg, int32_t tok), void *arg)
{
	int stop = 0;
	for (int i = 0; i < m->cfg.neos; i++)
		stop |= tok == m->cfg.eos_token_id[i];
	for (int i = 0; eos && i < neos; i++)
		stop |= tok == eos[i];
	if (on_token && on_token(arg, tok))
		stop = 1;
	return stop;
}

#if LMK_CUDA
/* Greedy generation after the prompt through kv's recorded step, first the
 * prompt's token: each step leaves its argmax and the next position in the
 * state, so steps follow one another on the device without the host; two
 * are kept queued, each followed by a copy of its token into a pinned slot
 * and an event, and the host reads token t while step t + 1 runs. A step
 * queued past the end of sequence is wasted, never past max_new. */
static int generate_dev(lmk_ctx *c, const lmk_llama *m, lmk_kvcache *kv, int32_t first,
			int max_new, const int32_t *eos, int neos,
			int (*on_token)(void *arg, int32_t tok), void *arg, int32_t *out, int *n)
{
	struct lmk_decode_graph *dg = NULL;
	void *ev[2] = {NULL, NULL};
	int rc = graph_get(c, m, kv, &dg);
	if (rc == 0)
		rc = lmk_cuda_event_new(&ev[0]);
	if (rc == 0)
		rc = lmk_cuda_event_new(&ev[1]);
	if (rc == 0) {
		dg->host[0] = first;
		dg->host[1] = kv->len;
		rc = lmk_cuda_upload(c->backend, dg->state, dg->host, 2 * sizeof(int32_t));
	}
	int32_t tok = first;
	int queued = 1; /* step s computes token s; the next to queue */
	for (int t = 0; rc == 0; t++) {
		if (t > 0) {
			if ((rc = lmk_cuda_event_wait(ev[t % 2])) < 0)
				break;
			tok = dg->host[2 + t % 2];
		}
		out[(*n)++] = tok;
		if (gen_stop(m, tok, eos, neos, on_token, arg) || *n == max_new)
			break;
		while (rc == 0 && queued <= t + 2 && queued < max_new) {
			if ((rc = graph_run(c, m, kv, dg)) == 0 &&
			    (rc = lmk_cuda_fetch_async(c->backend, dg->host + 2 + queued % 2,
						       dg->state + 2, sizeof(int32_t))) == 0)
				rc = lmk_cuda_event_record(c->backend, ev[queued % 2]);
			queued++;
		}
	}
	/* steps still queued write into the cache and the pinned slots */
	int rc2 = lmk_ctx_sync(c);
	lmk_cuda_event_free(ev[0]);
	lmk_cuda_event_free(ev[1]);
	return rc < 0 ? rc : rc2;
}
#endif

int lmk_llama_generate(lmk_ctx *c, lmk_llama *m, const int32_t *prompt, int n_prompt,
		       int max_new, lmk_sampler *s, const int32_t *eos, int neos,
		       int (*on_token)(void *arg, int32_t tok), void *arg, int32_t *out)
{
	if (n_prompt < 1 || max_new < 0)
		return lmk_err(LMK_EINVAL, "generate: expected a prompt and max_new >= 0, found %d "
			       "and %d", n_prompt, max_new);
	if (max_new == 0)
		return 0;
	if (n_prompt > INT_MAX - max_new)
		return lmk_err(LMK_EINVAL, "generate: prompt and max_new too long");
	const int V = m->cfg.vocab_size;
	lmk_kvcache kv;
	int rc = lmk_kvcache_init_ctx(&kv, m, n_prompt + max_new, c);
	if (rc < 0)
		return rc;
	float *logits = malloc(sizeof(float) * (size_t)V);
	if (!logits) {
		lmk_kvcache_free(&kv);
		return lmk_err(LMK_ENOMEM, "generate: cannot allocate %d logits", V);
	}
	int n = 0;
	lmk_ctx_reset(c);
	rc = lmk_llama_decode(c, m, &kv, prompt, n_prompt, logits);
	lmk_ctx_reset(c);
#if LMK_CUDA
	/* greedy on the device: the recorded step's argmax, 4 bytes back */
	if (rc == 0 && c->dev != LMK_DEV_CPU && !(s->temperature > 0) && graph_ok(m)) {
		int first = lmk_sample(s, logits, V);
		rc = first < 0 ? first
			       : generate_dev(c, m, &kv, first, max_new, eos, neos, on_token, arg,
					      out, &n);
		free(logits);
		lmk_kvcache_free(&kv);
		return rc < 0 ? rc : n;
	}
#endif
	while (rc == 0) {
		int tok = lmk_sample(s, logits, V);
		if (tok < 0) {
			rc = tok;
			break;
		}
		out[n++] = tok;
		if (gen_stop(m, tok, eos, neos, on_token, arg) || n == max_new)
			break;
		int32_t t32 = tok;
		rc = lmk_llama_decode(c, m, &kv, &t32, 1, logits);
		lmk_ctx_reset(c);
	}
	free(logits);
	lmk_kvcache_free(&kv);
	return rc < 0 ? rc : n;
}
