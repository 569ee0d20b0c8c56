/* gguf_llama.c: Llama models from GGUF files.
 *
 * Names: GGUF "blk.N.attn_q.weight" is Hugging Face
 * "model.layers.N.self_attn.q_proj.weight", and so on (table below).
 * Shapes: a GGUF tensor lists ne[0] (the row length, the input dimension)
 * first, so a Hugging Face (out, in) weight has ne = [in, out] and the same
 * bytes in the same order: no transpose, only dequantization.
 * Rotary layout: Hugging Face rotates pairs (x[i], x[i + D/2]) of each head
 * (rotate_half); llama.cpp rotates adjacent pairs (x[2i], x[2i + 1]). Its
 * converter therefore reorders the rows of q_proj and k_proj (weights and
 * biases) within each head: Hugging Face row i * D/2 + j (i in {0, 1},
 * j < D/2) is stored as row 2 j + i. We undo that here, as transformers'
 * GGUF loader does (_reverse_permute_weights), so that a model loaded from
 * GGUF computes what the Hugging Face model computes.
 * Shape letters: C hidden, H heads, K kv heads, D head dim, F intermediate,
 * V vocabulary, L layers. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "llama.h"

/* An integer key that must fit in int and lie in [lo, INT_MAX]. def < lo
 * means required. */
static int get_int(const lmk_gguf *g, const char *key, int lo, long long def, int *v)
{
	int64_t x;
	if (!lmk_gguf_find(g, key)) {
		if (def < lo)
			return lmk_err(LMK_EFORMAT, "%s: key '%s': expected an integer, found no such key",
				       g->path, key);
		*v = (int)def;
		return 0;
	}
	int rc = lmk_gguf_get_i64(g, key, &x);
	if (rc)
		return rc;
	if (x < lo || x > INT_MAX)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected an integer from %d to %d, found %lld",
			       g->path, key, lo, INT_MAX, (long long)x);
	*v = (int)x;
	return 0;
}

static int get_float(const lmk_gguf *g, const char *key, float def, int required, float *v)
{
	if (!lmk_gguf_find(g, key)) {
		if (required)
			return lmk_err(LMK_EFORMAT, "%s: key '%s': expected a number, found no such key",
				       g->path, key);
		*v = def;
		return 0;
	}
	int rc = lmk_gguf_get_f32(g, key, v);
	if (rc)
		return rc;
	if (!(*v > 0) || *v > 1e30f)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected a positive number, found %g", g->path,
			       key, (double)*v);
	return 0;
}

static int add_eos(lmk_llama_config *cfg, int id)
{
	for (int i = 0; i < cfg->neos; i++)
		if (cfg->eos_token_id[i] == id)
			return 0;
	if (cfg->neos < LMK_MAX_EOS)
		cfg->eos_token_id[cfg->neos++] = id;
	return 0;
}

/* llama.cpp stores Llama 3 rope scaling not as keys but as the tensor
 * rope_freqs (D/2 factors that divide each rotary frequency), computed by
 * its converter from factor, low_freq_factor, high_freq_factor and
 * original_max_position_embeddings as transformers' llama3 rope does:
 * 1 for wavelengths below orig/high, factor above orig/low, and
 * 1 / ((1 - s) / factor + s) with s = (orig / wavelength - low) / (high -
 * low) between. We recover the parameters (factor from the lowest
 * frequency, low 1 and high 4 as in every Llama 3 release, orig from a
 * factor in the smooth band, else llama.rope.scaling.original_context_length
 * or 8192) and accept them only if they reproduce every factor. */
static int llama3_from_factors(const lmk_gguf *g, const lmk_gguf_tensor *rf, lmk_llama_config *cfg)
{
	const int n = cfg->head_dim / 2;
	const double low = 1, high = 4, pi = 3.14159265358979323846;
	float f[512];
	int rc;

	if (n > 512 || lmk_gguf_tensor_numel(rf) != n || rf->ne[0] != n)
		return lmk_err(LMK_EFORMAT, "%s: tensor 'rope_freqs.weight': expected ne [%d], found [%lld, %lld]",
			       g->path, n, (long long)rf->ne[0], (long long)rf->ne[1]);
	if ((rc = lmk_gguf_tensor_f32(rf, f)))
		return lmk_err_wrap(rc, "%s", g->path);
	int ones = 1;
	for (int i = 0; i < n; i++)
		ones &= f[i] == 1.0f;
	if (ones)
		return 0;
	if (cfg->rope_scaling.type != LMK_ROPE_NONE)
		return lmk_err(LMK_EUNSUP, "%s: tensor 'rope_freqs.weight': rope factors together with linear rope scaling are not supported",
			       g->path);
	double factor = f[n - 1], orig = -1;
	if (!(factor > 1 && factor < 1e6))
		return lmk_err(LMK_EUNSUP, "%s: tensor 'rope_freqs.weight': expected llama 3 rope factors, found %g for the lowest frequency",
			       g->path, factor);
	for (int i = 0; i < n && orig < 0; i++) {
		double inv = pow(cfg->rope_theta, -2.0 * i / cfg->head_dim), wl = 2 * pi / inv;
		if (fabs(f[i] - 1) > 1e-6 && fabs(f[i] - factor) > 1e-6 * factor) {
			double smooth = (1 / (double)f[i] - 1 / factor) / (1 - 1 / factor);
			orig = nearbyint(wl * (smooth * (high - low) + low));
		}
	}
	if (orig < 0) {
		int o = 0;
		if ((rc = get_int(g, "llama.rope.scaling.original_context_length", 1, 8192, &o)))
			return rc;
		orig = o;
	}
	if (!(orig >= 1 && orig <= INT_MAX))
		return lmk_err(LMK_EUNSUP, "%s: tensor 'rope_freqs.weight': factors do not follow llama 3 rope scaling",
			       g->path);
	for (int i = 0; i < n; i++) {
		double inv = pow(cfg->rope_theta, -2.0 * i / cfg->head_dim), wl = 2 * pi / inv, want;
		if (wl < orig / high)
			want = 1;
		else if (wl > orig / low)
			want = factor;
		else {
			double smooth = (orig / wl - low) / (high - low);
			want = 1 / ((1 - smooth) / factor + smooth);
		}
		if (!(fabs(f[i] - want) <= 1e-4 * want))
			return lmk_err(LMK_EUNSUP, "%s: tensor 'rope_freqs.weight': factor %d is %g where llama 3 rope scaling (factor %g, low 1, high 4, original context %.0f) gives %g",
				       g->path, i, (double)f[i], factor, orig, want);
	}
	cfg->rope_scaling.type = LMK_ROPE_LLAMA3;
	cfg->rope_scaling.factor = (float)factor;
	cfg->rope_scaling.low_freq_factor = (float)low;
	cfg->rope_scaling.high_freq_factor = (float)high;
	cfg->rope_scaling.original_max_pos = (int)orig;
	return 0;
}

int lmk_gguf_llama_config(const lmk_gguf *g, lmk_llama_config *cfg)
{
	char *arch = NULL;
	int rc;

	lmk_llama_config_default(cfg);
	if ((rc = lmk_gguf_get_str(g, "general.architecture", &arch)))
		return rc;
	if (strcmp(arch, "llama") != 0) {
		rc = lmk_err(LMK_EUNSUP, "%s: key 'general.architecture': expected 'llama', found '%.60s'",
			     g->path, arch);
		free(arch);
		return rc;
	}
	free(arch);
	snprintf(cfg->model_type, sizeof cfg->model_type, "llama");

	int experts = 0;
	if ((rc = get_int(g, "llama.expert_count", 0, 0, &experts)))
		return rc;
	if (experts > 0)
		return lmk_err(LMK_EUNSUP, "%s: key 'llama.expert_count': mixture of experts (%d) is not supported",
			       g->path, experts);

	if ((rc = get_int(g, "llama.block_count", 1, -1, &cfg->num_hidden_layers)) ||
	    (rc = get_int(g, "llama.embedding_length", 1, -1, &cfg->hidden_size)) ||
	    (rc = get_int(g, "llama.feed_forward_length", 1, -1, &cfg->intermediate_size)) ||
	    (rc = get_int(g, "llama.attention.head_count", 1, -1, &cfg->num_attention_heads)) ||
	    (rc = get_int(g, "llama.attention.head_count_kv", 1, cfg->num_attention_heads,
			  &cfg->num_key_value_heads)) ||
	    (rc = get_int(g, "llama.context_length", 1, 2048, &cfg->max_position_embeddings)))
		return rc;
	/* feed_forward_length and head_count may be per-layer arrays in newer
	 * files (OpenELM and the like); get_i64 refuses those as not integers */
	if ((rc = get_float(g, "llama.attention.layer_norm_rms_epsilon", 0, 1, &cfg->rms_norm_eps)) ||
	    (rc = get_float(g, "llama.rope.freq_base", 10000.0f, 0, &cfg->rope_theta)))
		return rc;

	int H = cfg->num_attention_heads, D, Dv, Dr;
	if (cfg->hidden_size % H != 0 && !lmk_gguf_find(g, "llama.attention.key_length"))
		return lmk_err(LMK_EFORMAT, "%s: key 'llama.embedding_length': %d is not a multiple of the head count %d",
			       g->path, cfg->hidden_size, H);
	if ((rc = get_int(g, "llama.attention.key_length", 1, cfg->hidden_size / H, &D)) ||
	    (rc = get_int(g, "llama.attention.value_length", 1, D, &Dv)) ||
	    (rc = get_int(g, "llama.rope.dimension_count", 1, D, &Dr)))
		return rc;
	if (Dv != D)
		return lmk_err(LMK_EUNSUP, "%s: key 'llama.attention.value_length': expected the key length %d, found %d",
			       g->path, D, Dv);
	if (Dr != D)
		return lmk_err(LMK_EUNSUP, "%s: key 'llama.rope.dimension_count': expected the head dim %d (partial rotary is not supported), found %d",
			       g->path, D, Dr);
	if (D % 2)
		return lmk_err(LMK_EFORMAT, "%s: key 'llama.attention.key_length': expected an even head dim, found %d",
			       g->path, D);
	cfg->head_dim = D;

	/* rope scaling */
	cfg->rope_scaling.type = LMK_ROPE_NONE;
	cfg->rope_scaling.factor = 1;
	const lmk_gguf_kv *st = lmk_gguf_find(g, "llama.rope.scaling.type");
	if (st) {
		char *type = NULL;
		if ((rc = lmk_gguf_get_str(g, "llama.rope.scaling.type", &type)))
			return rc;
		if (strcmp(type, "linear") == 0) {
			cfg->rope_scaling.type = LMK_ROPE_LINEAR;
			rc = get_float(g, "llama.rope.scaling.factor", 0, 1, &cfg->rope_scaling.factor);
		} else if (strcmp(type, "none") != 0) {
			rc = lmk_err(LMK_EUNSUP, "%s: key 'llama.rope.scaling.type': expected 'none' or 'linear', found '%.40s'",
				     g->path, type);
		}
		free(type);
		if (rc)
			return rc;
	} else if (lmk_gguf_find(g, "llama.rope.scale_linear")) {
		float f;
		if ((rc = get_float(g, "llama.rope.scale_linear", 1, 1, &f)))
			return rc;
		if (f != 1) {
			cfg->rope_scaling.type = LMK_ROPE_LINEAR;
			cfg->rope_scaling.factor = f;
		}
	}
	const lmk_gguf_tensor *rf = lmk_gguf_find_tensor(g, "rope_freqs.weight");
	if (rf && (rc = llama3_from_factors(g, rf, cfg)))
		return rc;

	/* vocabulary: the explicit key, the token list, or the embedding */
	const lmk_gguf_kv *toks = lmk_gguf_find(g, "tokenizer.ggml.tokens");
	const lmk_gguf_tensor *emb = lmk_gguf_find_tensor(g, "token_embd.weight");
	long long vdef = toks && toks->type == LMK_GGUF_ARRAY ? (long long)toks->n
			 : emb && emb->ndim == 2 ? (long long)emb->ne[1] : -1;
	if ((rc = get_int(g, "llama.vocab_size", 1, vdef, &cfg->vocab_size)))
		return rc;

	cfg->tie_word_embeddings = lmk_gguf_find_tensor(g, "output.weight") == NULL;
	cfg->attention_bias = lmk_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
	cfg->mlp_bias = lmk_gguf_find_tensor(g, "blk.0.ffn_gate.bias") != NULL;

	cfg->bos_token_id = -1;
	if (lmk_gguf_find(g, "tokenizer.ggml.bos_token_id") &&
	    (rc = get_int(g, "tokenizer.ggml.bos_token_id", 0, 0, &cfg->bos_token_id)))
		return rc;
	cfg->neos = 0;
	static const char *const eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
					       "tokenizer.ggml.eom_token_id"};
	for (size_t i = 0; i < sizeof eos_keys / sizeof *eos_keys; i++) {
		int id;
		if (!lmk_gguf_find(g, eos_keys[i]))
			continue;
		if ((rc = get_int(g, eos_keys[i], 0, 0, &id)))
			return rc;
		add_eos(cfg, id);
	}
	return lmk_llama_config_check(cfg, g->path);
}

/* Fills dst, a Hugging Face parameter of shape (out, in) or (n), from the
 * GGUF tensor name; nhead > 0 undoes the rotary row permutation with that
 * many heads. used marks the GGUF tensors consumed. */
static int fill(const lmk_gguf *g, const char *name, lmk_tensor *dst, int nhead, unsigned char *used)
{
	const lmk_gguf_tensor *t = lmk_gguf_find_tensor(g, name);
	int64_t want[4] = {1, 1, 1, 1};
	int rc;

	if (!dst)
		return lmk_err(LMK_EINVAL, "%s: tensor '%s': the model has no parameter for it", g->path, name);
	if (!t)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected for %s, found no such tensor", g->path,
			       name, dst->name ? dst->name : "the model");
	used[t - g->t] = 1;
	if (dst->ndim == 2) {
		want[0] = dst->shape[1];
		want[1] = dst->shape[0];
	} else if (dst->ndim == 1) {
		want[0] = dst->shape[0];
	} else {
		return lmk_err(LMK_EINVAL, "%s: tensor '%s': parameter of %d dimensions", g->path, name, dst->ndim);
	}
	if (memcmp(want, t->ne, sizeof want) != 0)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected ne [%lld, %lld] for %s, found [%lld, %lld, %lld, %lld]",
			       g->path, name, (long long)want[0], (long long)want[1],
			       dst->name ? dst->name : "the model", (long long)t->ne[0], (long long)t->ne[1],
			       (long long)t->ne[2], (long long)t->ne[3]);
	if (dst->dtype != LMK_F32 || dst->dev != LMK_DEV_CPU)
		return lmk_err(LMK_EINVAL, "%s: tensor '%s': expected a float32 CPU parameter", g->path, name);
	float *out = dst->data;
	if (nhead <= 0) {
		if ((rc = lmk_gguf_tensor_f32(t, out)))
			return lmk_err_wrap(rc, "%s", g->path);
		return 0;
	}
	int64_t rows = dst->ndim == 2 ? want[1] : want[0];
	int64_t cols = dst->ndim == 2 ? want[0] : 1;
	if (rows % (2 * nhead) != 0)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': %lld rows do not split into %d heads of an even size",
			       g->path, name, (long long)rows, nhead);
	float *tmp = malloc((size_t)(rows * cols) * sizeof *tmp);
	if (!tmp)
		return lmk_err(LMK_ENOMEM, "%s: tensor '%s': out of memory", g->path, name);
	if ((rc = lmk_gguf_tensor_f32(t, tmp))) {
		free(tmp);
		return lmk_err_wrap(rc, "%s", g->path);
	}
	int64_t D = rows / nhead, half = D / 2;
	for (int64_t h = 0; h < nhead; h++)
		for (int64_t i = 0; i < 2; i++)
			for (int64_t j = 0; j < half; j++)
				memcpy(out + (h * D + i * half + j) * cols, tmp + (h * D + 2 * j + i) * cols,
				       (size_t)cols * sizeof *out);
	free(tmp);
	return 0;
}

int lmk_gguf_llama_load(const lmk_gguf *g, lmk_llama *m, int trainable)
{
	lmk_llama_config cfg;
	int rc;
	char name[96];

	if ((rc = lmk_gguf_llama_config(g, &cfg)))
		return rc;
	if ((rc = lmk_llama_init(m, &cfg, trainable)))
		return lmk_err_wrap(rc, "%s", g->path);
	unsigned char *used = calloc(g->ntensors ? (size_t)g->ntensors : 1, 1);
	if (!used) {
		lmk_llama_free(m);
		return lmk_err(LMK_ENOMEM, "%s: out of memory", g->path);
	}
	const int H = cfg.num_attention_heads, K = cfg.num_key_value_heads;
	if ((rc = fill(g, "token_embd.weight", m->wte, 0, used)) ||
	    (rc = fill(g, "output_norm.weight", m->norm, 0, used)) ||
	    (!cfg.tie_word_embeddings && (rc = fill(g, "output.weight", m->lm_head, 0, used))))
		goto fail;
	for (int l = 0; l < cfg.num_hidden_layers; l++) {
		lmk_llama_layer *y = &m->layers[l];
		struct { const char *gguf; lmk_tensor *dst; int nhead; int present; } map[] = {
			{"attn_norm.weight", y->ln1, 0, 1},
			{"attn_q.weight", y->wq, H, 1},
			{"attn_k.weight", y->wk, K, 1},
			{"attn_v.weight", y->wv, 0, 1},
			{"attn_output.weight", y->wo, 0, 1},
			{"ffn_norm.weight", y->ln2, 0, 1},
			{"ffn_gate.weight", y->wg, 0, 1},
			{"ffn_up.weight", y->wu, 0, 1},
			{"ffn_down.weight", y->wd, 0, 1},
			{"attn_q.bias", y->bq, H, cfg.attention_bias},
			{"attn_k.bias", y->bk, K, cfg.attention_bias},
			{"attn_v.bias", y->bv, 0, cfg.attention_bias},
			{"attn_output.bias", y->bo, 0, cfg.attention_bias && y->bo},
			{"ffn_gate.bias", y->bg, 0, cfg.mlp_bias},
			{"ffn_up.bias", y->bu, 0, cfg.mlp_bias},
			{"ffn_down.bias", y->bd, 0, cfg.mlp_bias},
		};
		for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
			if (!map[i].present)
				continue;
			snprintf(name, sizeof name, "blk.%d.%s", l, map[i].gguf);
			if ((rc = fill(g, name, map[i].dst, map[i].nhead, used)))
				goto fail;
		}
	}
	const lmk_gguf_tensor *rf = lmk_gguf_find_tensor(g, "rope_freqs.weight");
	if (rf)
		used[rf - g->t] = 1; /* read by the config */
	for (int i = 0; i < g->ntensors; i++)
		if (!used[i]) {
			rc = lmk_err(LMK_EFORMAT, "%s: tensor '%.100s': not part of a llama model of this config",
				     g->path, g->t[i].name);
			goto fail;
		}
	free(used);
	return 0;
fail:
	free(used);
	lmk_llama_free(m);
	return rc;
}
