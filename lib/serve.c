/* serve.c: loading a model for serving, completion requests in JSON, and
 * generation with stop tokens and stop strings.
 * Text is kept twice while generating: raw, the bytes of the tokens as they
 * come, and out, the part of raw already handed to the caller, made valid
 * UTF-8. A suffix of raw is held back while it could still become a stop
 * string or complete a UTF-8 character; a stop string can therefore only
 * start in the held-back part, which is what lets it be cut off before any
 * of it was handed out. Shape letters: V vocabulary, T tokens. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "bytetok.h"
#include "ckpt.h"
#include "err.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "progress.h"
#include "serve.h"

const char *lmk_serve_source_name(lmk_serve_source src)
{
	switch (src) {
	case LMK_SERVE_GGUF: return "gguf";
	case LMK_SERVE_HF: return "hf";
	case LMK_SERVE_BYTES: return "lla-train";
	default: return "none";
	}
}

/* ---- small helpers ---------------------------------------------------- */

typedef struct buf {
	char *s;
	size_t n, cap;
} buf;

static int buf_put(buf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *q = realloc(b->s, cap);
		if (!q)
			return lmk_err(LMK_ENOMEM, "serve: out of memory for %zu bytes of text", cap);
		b->s = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->s + b->n, p, n);
	b->n += n;
	b->s[b->n] = 0;
	return 0;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), n = strlen(name);
	char *p = malloc(a + n + 2);
	if (!p) {
		lmk_err(LMK_ENOMEM, "serve: cannot allocate a path");
		return NULL;
	}
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, n + 1);
	return p;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Length of a UTF-8 sequence led by c (0 for a byte that cannot lead). */
static int utf8_lead(unsigned char c)
{
	return c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
}

/* Length of the valid sequence at p (n bytes available), 0 if invalid or
 * cut short. Overlong forms, surrogates and values past U+10FFFF are
 * invalid, as in jansson and Python. */
static int utf8_valid(const unsigned char *p, size_t n)
{
	int l = utf8_lead(p[0]);
	if (l == 0 || (size_t)l > n)
		return 0;
	for (int i = 1; i < l; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if ((l == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (l == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
	    (l == 4 && p[0] == 0xf0 && p[1] < 0x90) || (l == 4 && p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return l;
}

/* The length of the prefix of p[0..n) that does not end in the start of a
 * character still missing bytes. */
static size_t utf8_complete(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t k = 1; k <= 3 && k <= n; k++) {
		unsigned char c = p[n - k];
		if ((c & 0xc0) == 0x80)
			continue;
		int l = utf8_lead(c);
		return l > (int)k ? n - k : n;
	}
	return n;
}

/* Appends p[0..n) to b with each byte that is not part of a valid sequence
 * replaced by U+FFFD. */
static int utf8_clean(buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0;
	int rc = 0;
	while (i < n && rc == 0) {
		int l = utf8_valid(p + i, n - i);
		if (l > 0) {
			i += (size_t)l;
			continue;
		}
		rc = buf_put(b, p + run, i - run);
		if (rc == 0)
			rc = buf_put(b, "\xef\xbf\xbd", 3);
		run = ++i;
	}
	return rc ? rc : buf_put(b, p + run, n - run);
}

/* ---- loading ---------------------------------------------------------- */

static void add_stop_id(lmk_serve *s, int32_t id)
{
	if (id < 0 || id >= s->m.cfg.vocab_size)
		return;
	for (int i = 0; i < s->nstop_ids; i++)
		if (s->stop_ids[i] == id)
			return;
	if (s->nstop_ids < LMK_SERVE_MAX_STOP_IDS)
		s->stop_ids[s->nstop_ids++] = id;
}

/* The sampling keys llama.cpp's converter writes (general.sampling.*). */
static void gguf_defaults(lmk_serve *s, const lmk_gguf *g)
{
	float f;
	int64_t v;
	if (lmk_gguf_get_f32(g, "general.sampling.temp", &f) == 0 && f >= 0 && isfinite(f)) {
		s->temperature = f;
		s->defaults_from = "model";
	}
	if (lmk_gguf_get_f32(g, "general.sampling.top_p", &f) == 0 && f >= 0 && f <= 1) {
		s->top_p = f;
		s->defaults_from = "model";
	}
	if (lmk_gguf_get_i64(g, "general.sampling.top_k", &v) == 0 && v >= 0 && v <= INT_MAX) {
		s->top_k = (int)v;
		s->defaults_from = "model";
	}
	lmk_err_clear();
}

/* generation_config.json: "do_sample": false means greedy, as in
 * transformers; else its temperature, top_p and top_k; its eos ids end a
 * completion too. A file that cannot be read or parsed is an error:
 * it is part of the model. */
static int gen_config(lmk_serve *s, const char *path)
{
	json_error_t e;
	json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &e), *v;
	if (!o)
		return lmk_err(LMK_EFORMAT, "%s: line %d: %s", path, e.line, e.text);
	if (!json_is_object(o)) {
		json_decref(o);
		return lmk_err(LMK_EFORMAT, "%s: expected a JSON object", path);
	}
	/* Only what the file names counts as the model's: a file without any
	 * sampling key (most) leaves the built-in defaults. */
	v = json_object_get(o, "do_sample");
	if (json_is_false(v)) {
		s->temperature = 0;
		s->defaults_from = "model";
	} else {
		if ((v = json_object_get(o, "temperature")) && json_is_number(v) &&
		    json_number_value(v) >= 0) {
			s->temperature = (float)json_number_value(v);
			s->defaults_from = "model";
		}
		if ((v = json_object_get(o, "top_p")) && json_is_number(v) && json_number_value(v) >= 0 &&
		    json_number_value(v) <= 1) {
			s->top_p = (float)json_number_value(v);
			s->defaults_from = "model";
		}
		if ((v = json_object_get(o, "top_k")) && json_is_integer(v) && json_integer_value(v) >= 0 &&
		    json_integer_value(v) <= INT_MAX) {
			s->top_k = (int)json_integer_value(v);
			s->defaults_from = "model";
		}
	}
	v = json_object_get(o, "eos_token_id");
	if (json_is_integer(v))
		add_stop_id(s, (int32_t)json_integer_value(v));
	for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++)
		if (json_is_integer(json_array_get(v, i)))
			add_stop_id(s, (int32_t)json_integer_value(json_array_get(v, i)));
	json_decref(o);
	return 0;
}

static int load_gguf(lmk_serve *s, const char *path)
{
	lmk_gguf g;
	int rc = lmk_gguf_open(&g, path);
	if (rc < 0)
		return rc;
	if ((rc = lmk_gguf_llama_load(&g, &s->m, 0)) == 0 &&
	    (rc = lmk_bpe_load_gguf(&s->bpe, &g)) == 0)
		gguf_defaults(s, &g);
	lmk_gguf_close(&g);
	s->source = LMK_SERVE_GGUF;
	return rc;
}

static int load_dir(lmk_serve *s, const char *dir)
{
	char *cpath = join(dir, "config.json"), *tpath = join(dir, "tokenizer.json"),
	     *gpath = join(dir, "generation_config.json");
	int rc = 0;
	if (!cpath || !tpath || !gpath) {
		rc = LMK_ENOMEM;
		goto out;
	}
	if (!exists(cpath)) {
		rc = lmk_err(LMK_EIO, "%s: no config.json (expected a GGUF file or a Hugging Face "
			     "directory)", dir);
		goto out;
	}
	if (exists(tpath)) {
		s->source = LMK_SERVE_HF;
	} else {
		/* Without a tokenizer, only the byte-level one can be right, and
		 * only a model trained with it says so. */
		lmk_llama_config cfg;
		int eos = 0;
		if ((rc = lmk_llama_config_load(&cfg, cpath)) < 0)
			goto out;
		for (int i = 0; i < cfg.neos; i++)
			eos |= cfg.eos_token_id[i] == LMK_BYTETOK_EOS;
		if (cfg.bos_token_id != LMK_BYTETOK_BOS || !eos || cfg.vocab_size < LMK_BYTETOK_VOCAB) {
			rc = lmk_err(LMK_EFORMAT, "%s: no tokenizer.json, and config.json is not that of a "
				     "byte-level model (bos 256, eos 257, as lla-train trains on text)", dir);
			goto out;
		}
		s->source = LMK_SERVE_BYTES;
	}
	if ((rc = lmk_ckpt_load(dir, &s->m, 0)) < 0)
		goto out;
	if (s->source == LMK_SERVE_HF && (rc = lmk_bpe_load_json(&s->bpe, tpath)) < 0)
		goto out;
	if (exists(gpath))
		rc = gen_config(s, gpath);
out:
	free(cpath);
	free(tpath);
	free(gpath);
	return rc;
}

int lmk_serve_load(lmk_serve *s, const char *path, int ctx_len, uint64_t seed, int flags)
{
	struct stat st;
	int rc, fell_back = 0;
	char fell_msg[512] = "";

	memset(s, 0, sizeof *s);
	s->temperature = 1.0f;
	s->top_p = 1.0f;
	s->top_k = 0;
	s->max_tokens = 512;
	s->defaults_from = "builtin";
	s->flags = flags;
	if (ctx_len < 0)
		return lmk_err(LMK_EINVAL, "serve: context length %d: expected >= 0", ctx_len);
	if (stat(path, &st) != 0)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	rc = S_ISDIR(st.st_mode) ? load_dir(s, path) : load_gguf(s, path);
	if (rc < 0)
		goto fail;

	const lmk_llama_config *cfg = &s->m.cfg;
	const char *tmpl = NULL, *bos = NULL;
	size_t blen = 0;
	char bosbuf[256];
	if (s->bpe) {
		const lmk_bpe_info *in = lmk_bpe_get_info(s->bpe);
		if (in->n_vocab > cfg->vocab_size) {
			rc = lmk_err(LMK_EFORMAT, "%s: the tokenizer has %d tokens, the model only %d",
				     path, in->n_vocab, cfg->vocab_size);
			goto fail;
		}
		tmpl = in->chat_template;
		s->add_bos = in->add_bos && in->bos >= 0;
		if (in->bos >= 0 && (bos = lmk_bpe_token(s->bpe, in->bos, &blen)) && blen < sizeof bosbuf) {
			memcpy(bosbuf, bos, blen);
			bosbuf[blen] = 0;
			bos = bosbuf;
		} else {
			bos = NULL;
		}
		add_stop_id(s, in->eos);
		add_stop_id(s, in->eot);
	}
	for (int i = 0; i < cfg->neos; i++)
		add_stop_id(s, cfg->eos_token_id[i]);
	rc = lmk_chat_init(&s->chat, tmpl, bos, flags & LMK_SERVE_PLAIN ? LMK_CHAT_ALLOW_PLAIN : 0);
	if (rc == LMK_CHAT_FELL_BACK) {
		fell_back = 1;
		snprintf(fell_msg, sizeof fell_msg, "%s", lmk_errmsg());
	} else if (rc == LMK_EUNSUP) {
		if (!(s->chat_err = strdup(lmk_errmsg()))) {
			rc = lmk_err(LMK_ENOMEM, "serve: out of memory");
			goto fail;
		}
		lmk_err_clear();
	} else if (rc < 0) {
		goto fail;
	}
	if (s->chat.stop && s->bpe)
		add_stop_id(s, lmk_bpe_find(s->bpe, s->chat.stop, strlen(s->chat.stop)));

	if (ctx_len == 0)
		ctx_len = cfg->max_position_embeddings < LMK_SERVE_DEFAULT_CTX ?
			  cfg->max_position_embeddings : LMK_SERVE_DEFAULT_CTX;
	s->ctx_len = ctx_len;
	if ((rc = lmk_kvcache_init(&s->kv, &s->m, ctx_len)) < 0)
		goto fail;
	s->seq = malloc(sizeof *s->seq * (size_t)ctx_len);
	s->logits = malloc(sizeof *s->logits * (size_t)cfg->vocab_size);
	if (!s->seq || !s->logits) {
		rc = lmk_err(LMK_ENOMEM, "serve: cannot allocate %d logits", cfg->vocab_size);
		goto fail;
	}
	if ((rc = lmk_ctx_init(&s->c, LMK_DEV_CPU)) < 0)
		goto fail;
	s->c.grad_enabled = 0;
	lmk_rng_init(&s->rng, seed);
	if (fell_back) {
		lmk_err(LMK_OK, "%s", fell_msg);
		return LMK_SERVE_FELL_BACK;
	}
	return 0;
fail:
	if (rc < 0 && !strstr(lmk_errmsg(), path))
		lmk_err_wrap(rc, "%s", path);
	lmk_serve_free(s);
	return rc < 0 ? rc : LMK_EFORMAT;
}

void lmk_serve_free(lmk_serve *s)
{
	if (!s)
		return;
	lmk_llama_free(&s->m);
	lmk_bpe_free(s->bpe);
	lmk_chat_free(&s->chat);
	free(s->chat_err);
	lmk_kvcache_free(&s->kv);
	free(s->seq);
	free(s->logits);
	lmk_ctx_free(&s->c);
	memset(s, 0, sizeof *s);
}

/* ---- requests --------------------------------------------------------- */

static const char *kind_of(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "a list";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	default: return "null";
	}
}

/* "found 2" for numbers, "found a string" for the rest */
static int bad(const char *key, const char *want, const json_t *v)
{
	if (json_is_integer(v))
		return lmk_err(LMK_EFORMAT, "'%s': expected %s, found %lld", key, want,
			       (long long)json_integer_value(v));
	if (json_is_real(v))
		return lmk_err(LMK_EFORMAT, "'%s': expected %s, found %g", key, want, json_real_value(v));
	return lmk_err(LMK_EFORMAT, "'%s': expected %s, found %s", key, want, kind_of(v));
}

static int parse_messages(lmk_serve_request *r, const json_t *v)
{
	if (!json_is_array(v) || json_array_size(v) == 0)
		return json_is_array(v) ? lmk_err(LMK_EFORMAT, "'messages': expected at least one message")
					: bad("messages", "a list of messages", v);
	size_t n = json_array_size(v);
	if (!(r->msgs = calloc(n, sizeof *r->msgs)))
		return lmk_err(LMK_ENOMEM, "request: out of memory for %zu messages", n);
	r->nmsgs = n;
	for (size_t i = 0; i < n; i++) {
		const json_t *m = json_array_get(v, i), *role, *content;
		const char *key;
		json_t *val;
		if (!json_is_object(m))
			return lmk_err(LMK_EFORMAT, "'messages'[%zu]: expected an object, found %s", i,
				       kind_of(m));
		json_object_foreach((json_t *)m, key, val)
			if (strcmp(key, "role") && strcmp(key, "content"))
				return lmk_err(LMK_EFORMAT, "'messages'[%zu]: unknown key '%s' (expected "
					       "role and content)", i, key);
		role = json_object_get(m, "role");
		content = json_object_get(m, "content");
		if (!json_is_string(role))
			return lmk_err(LMK_EFORMAT, "'messages'[%zu].role: expected a string, found %s", i,
				       role ? kind_of(role) : "none");
		if (!json_is_string(content))
			return lmk_err(LMK_EFORMAT, "'messages'[%zu].content: expected a string, found %s",
				       i, content ? kind_of(content) : "none");
		r->msgs[i].role = json_string_value(role);
		r->msgs[i].content = json_string_value(content);
	}
	return 0;
}

static int parse_stop(lmk_serve_request *r, const json_t *v)
{
	if (json_is_string(v)) {
		if (json_string_length(v) == 0)
			return lmk_err(LMK_EFORMAT, "'stop': expected a non-empty string");
		r->stop[r->nstop++] = json_string_value(v);
		return 0;
	}
	if (!json_is_array(v))
		return bad("stop", "a string or a list of strings", v);
	if (json_array_size(v) > LMK_SERVE_MAX_STOP)
		return lmk_err(LMK_EFORMAT, "'stop': expected at most %d strings, found %zu",
			       LMK_SERVE_MAX_STOP, json_array_size(v));
	for (size_t i = 0; i < json_array_size(v); i++) {
		const json_t *s = json_array_get(v, i);
		if (!json_is_string(s) || json_string_length(s) == 0)
			return lmk_err(LMK_EFORMAT, "'stop'[%zu]: expected a non-empty string, found %s",
				       i, json_is_string(s) ? "\"\"" : kind_of(s));
		r->stop[r->nstop++] = json_string_value(s);
	}
	return 0;
}

int lmk_serve_request_parse(lmk_serve_request *r, const char *line, size_t len)
{
	json_error_t e;
	json_t *o, *v;
	const char *key;

	memset(r, 0, sizeof *r);
	r->max_tokens = -1;
	r->top_k = -1;
	r->temperature = NAN;
	r->top_p = NAN;
	r->stream = -1;
	o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
	if (!o)
		return lmk_err(LMK_EFORMAT, "invalid JSON at column %d: %s", e.column, e.text);
	r->root = o;
	if (!json_is_object(o))
		return lmk_err(LMK_EFORMAT, "expected a JSON object, found %s", kind_of(o));
	r->id = json_object_get(o, "id");
	json_object_foreach(o, key, v) {
		int rc = 0;
		if (!strcmp(key, "prompt")) {
			if (!json_is_string(v))
				return bad(key, "a string", v);
			r->prompt = json_string_value(v);
		} else if (!strcmp(key, "messages")) {
			rc = parse_messages(r, v);
		} else if (!strcmp(key, "max_tokens")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return bad(key, "an integer >= 0", v);
			r->max_tokens = json_integer_value(v) > INT_MAX / 2 ? INT_MAX / 2
									  : (int)json_integer_value(v);
		} else if (!strcmp(key, "temperature")) {
			if (!json_is_number(v) || !(json_number_value(v) >= 0) ||
			    !isfinite(json_number_value(v)))
				return bad(key, "a number >= 0", v);
			r->temperature = (float)json_number_value(v);
		} else if (!strcmp(key, "top_p")) {
			if (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) <= 1))
				return bad(key, "a number in [0, 1]", v);
			r->top_p = (float)json_number_value(v);
		} else if (!strcmp(key, "top_k")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return bad(key, "an integer >= 0", v);
			r->top_k = json_integer_value(v) > INT_MAX ? INT_MAX : (int)json_integer_value(v);
		} else if (!strcmp(key, "seed")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return bad(key, "an integer >= 0", v);
			r->seed = (uint64_t)json_integer_value(v);
			r->has_seed = 1;
		} else if (!strcmp(key, "stop")) {
			rc = parse_stop(r, v);
		} else if (!strcmp(key, "stream")) {
			if (!json_is_boolean(v))
				return bad(key, "true or false", v);
			r->stream = json_is_true(v);
		} else if (strcmp(key, "id") && strcmp(key, "model")) {
			return lmk_err(LMK_EFORMAT, "unknown key '%s' (expected prompt or messages, "
				       "max_tokens, temperature, top_p, top_k, seed, stop, stream, id)", key);
		}
		if (rc < 0)
			return rc;
	}
	if (!r->prompt && !r->msgs)
		return lmk_err(LMK_EFORMAT, "expected 'prompt' or 'messages'");
	if (r->prompt && r->msgs)
		return lmk_err(LMK_EFORMAT, "expected 'prompt' or 'messages', not both");
	return 0;
}

void lmk_serve_request_free(lmk_serve_request *r)
{
	if (!r)
		return;
	free(r->msgs);
	json_decref(r->root);
	memset(r, 0, sizeof *r);
}

/* ---- encoding --------------------------------------------------------- */

static int64_t encode_text(lmk_serve *s, const char *text, size_t len, int bos, int32_t **ids)
{
	if (s->bpe) {
		size_t cap = 0;
		int flags = LMK_BPE_SPECIAL | (bos ? LMK_BPE_BOS : 0);
		*ids = NULL;
		int64_t n = lmk_bpe_encode(s->bpe, text, len, flags, ids, &cap);
		if (n < 0) {
			free(*ids);
			*ids = NULL;
		}
		return n;
	}
	if (!(*ids = malloc(sizeof **ids * (len + 2))))
		return lmk_err(LMK_ENOMEM, "serve: out of memory for %zu tokens", len + 2);
	return (int64_t)lmk_bytetok_encode(text, len, *ids, 0);
}

int64_t lmk_serve_encode(lmk_serve *s, const lmk_serve_request *r, int32_t **ids)
{
	*ids = NULL;
	if (r->prompt)
		return encode_text(s, r->prompt, strlen(r->prompt), s->add_bos, ids);
	if (s->chat.kind == LMK_CHAT_NONE)
		return lmk_err(LMK_EUNSUP, "cannot render messages: %s",
			       s->chat_err ? s->chat_err : "the model has no chat template");
	char *text = NULL;
	int64_t len = lmk_chat_render(&s->chat, r->msgs, r->nmsgs, 1, &text);
	if (len < 0)
		return len;
	/* Templates write their own bos; plain prompting is a prompt. */
	int64_t n = encode_text(s, text, (size_t)len, s->chat.kind == LMK_CHAT_PLAIN && s->add_bos, ids);
	free(text);
	return n;
}

/* ---- generation ------------------------------------------------------- */

/* The bytes of token id: nothing for special tokens (they are markup, as
 * transformers' skip_special_tokens has it), U+FFFD for an id the
 * tokenizer does not know. */
static const char *token_text(const lmk_serve *s, int32_t id, size_t *len, char tmp[4])
{
	if (s->bpe) {
		if (lmk_bpe_is_special(s->bpe, id)) {
			*len = 0;
			return "";
		}
		const char *t = lmk_bpe_token(s->bpe, id, len);
		if (t)
			return t;
	} else if (id >= 0 && id < 256) {
		tmp[0] = (char)id;
		*len = 1;
		return tmp;
	} else if (id < LMK_BYTETOK_VOCAB) {
		*len = 0;
		return "";
	}
	*len = 3;
	return "\xef\xbf\xbd";
}

typedef struct gen {
	buf raw, out;
	size_t sent;      /* bytes of raw handed out */
	const lmk_serve_request *r;
	lmk_serve_piece_fn fn;
	void *arg;
} gen;

/* Hands out raw[sent..upto) made valid. @return : 0, 1 (the callback asks
 * to stop) or a negative code */
static int release(gen *g, size_t upto, int32_t id)
{
	if (upto <= g->sent)
		return 0;
	size_t from = g->out.n;
	int rc = utf8_clean(&g->out, g->raw.s + g->sent, upto - g->sent);
	if (rc < 0)
		return rc;
	g->sent = upto;
	if (g->fn && g->out.n > from && g->fn(g->arg, g->out.s + from, g->out.n - from, id))
		return 1;
	return 0;
}

/* After raw grew from old bytes: cuts raw at the first stop string (return
 * 2), else hands out what can no longer become one. */
static int advance(gen *g, size_t old, int32_t id)
{
	const lmk_serve_request *r = g->r;
	size_t n = g->raw.n, hit = SIZE_MAX;
	for (int i = 0; i < r->nstop; i++) {
		size_t sl = strlen(r->stop[i]);
		size_t from = old >= sl - 1 ? old - (sl - 1) : 0;
		if (from < g->sent)
			from = g->sent;
		const char *p = memmem(g->raw.s + from, n - from, r->stop[i], sl);
		if (p && (size_t)(p - g->raw.s) < hit)
			hit = (size_t)(p - g->raw.s);
	}
	if (hit != SIZE_MAX) {
		int rc = release(g, hit, id);
		g->raw.n = hit;
		return rc < 0 ? rc : 2;
	}
	size_t limit = n;
	for (int i = 0; i < r->nstop; i++) {
		size_t sl = strlen(r->stop[i]);
		for (size_t k = sl - 1; k >= 1; k--) {
			if (k > n - g->sent)
				continue;
			if (memcmp(g->raw.s + n - k, r->stop[i], k) == 0) {
				if (n - k < limit)
					limit = n - k;
				break;
			}
		}
	}
	limit = g->sent + utf8_complete(g->raw.s + g->sent, limit - g->sent);
	return release(g, limit, id);
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
	size_t i = 0;
	while (i < na && i < nb && a[i] == b[i])
		i++;
	return i;
}

int lmk_serve_complete(lmk_serve *s, const lmk_serve_request *r, lmk_serve_piece_fn on_piece,
		       void *arg, lmk_serve_result *res)
{
	const int V = s->m.cfg.vocab_size;
	int32_t *ids = NULL, last = -1;
	gen g = {.r = r, .fn = on_piece, .arg = arg};
	lmk_sampler sm;
	int rc = 0, stop = 0;

	memset(res, 0, sizeof *res);
	res->finish_reason = "length";
	int64_t n = lmk_serve_encode(s, r, &ids);
	if (n < 0)
		return (int)n;
	if (n == 0) {
		int32_t bos = s->bpe ? lmk_bpe_get_info(s->bpe)->bos : s->m.cfg.bos_token_id;
		if (bos < 0) {
			free(ids);
			return lmk_err(LMK_EINVAL, "empty prompt, and the model has no bos token to start from");
		}
		free(ids);
		if (!(ids = malloc(sizeof *ids)))
			return lmk_err(LMK_ENOMEM, "serve: out of memory");
		ids[0] = bos;
		n = 1;
	}
	if (n > s->ctx_len) {
		free(ids);
		return lmk_err(LMK_EINVAL, "the prompt's %lld tokens do not fit the context of %d tokens",
			       (long long)n, s->ctx_len);
	}
	res->prompt_tokens = (int)n;
	sm.temperature = isnan(r->temperature) ? s->temperature : r->temperature;
	sm.top_p = isnan(r->top_p) ? s->top_p : r->top_p;
	sm.top_k = r->top_k >= 0 ? r->top_k : s->top_k;
	sm.rng = s->rng;
	if (r->has_seed)
		lmk_rng_init(&sm.rng, r->seed);
	int max_new = r->max_tokens >= 0 ? r->max_tokens : s->max_tokens;
	if (buf_put(&g.raw, "", 0) < 0 || buf_put(&g.out, "", 0) < 0) {
		rc = LMK_ENOMEM;
		goto out;
	}
	if (max_new == 0)
		goto out;

	/* The prompt: all of it, or what follows the prefix already cached. */
	size_t keep = 0;
	if (s->flags & LMK_SERVE_REUSE) {
		keep = common_prefix(s->seq, (size_t)s->kv.len, ids, (size_t)n);
		if (keep == (size_t)n)
			keep--; /* the last prompt token must run, for its logits */
	}
	s->kv.len = (int)keep;
	double t0 = lmk_now();
	lmk_ctx_reset(&s->c);
	rc = lmk_llama_decode(&s->c, &s->m, &s->kv, ids + keep, (int)(n - (int64_t)keep), s->logits);
	lmk_ctx_reset(&s->c);
	if (rc < 0) {
		s->kv.len = 0;
		goto out;
	}
	memcpy(s->seq + keep, ids + keep, sizeof *ids * (size_t)(n - (int64_t)keep));
	double t1 = lmk_now();
	res->prompt_ms = (t1 - t0) * 1e3;

	for (;;) {
		int tok = lmk_sample(&sm, s->logits, V);
		if (tok < 0) {
			rc = tok;
			break;
		}
		last = tok;
		res->tokens++;
		for (int i = 0; i < s->nstop_ids; i++)
			if (tok == s->stop_ids[i])
				stop = 1;
		if (stop) {
			res->finish_reason = "stop";
			break;
		}
		size_t tl, old = g.raw.n;
		char tmp[4];
		const char *tt = token_text(s, tok, &tl, tmp);
		if ((rc = buf_put(&g.raw, tt, tl)) < 0)
			break;
		if ((rc = advance(&g, old, tok)) != 0) {
			if (rc > 0) {
				res->finish_reason = "stop";
				rc = 0;
			}
			break;
		}
		if (res->tokens >= max_new || s->kv.len >= s->ctx_len)
			break;
		int32_t t32 = tok;
		rc = lmk_llama_decode(&s->c, &s->m, &s->kv, &t32, 1, s->logits);
		lmk_ctx_reset(&s->c);
		if (rc < 0)
			break;
		s->seq[s->kv.len - 1] = t32;
	}
	res->decode_ms = (lmk_now() - t1) * 1e3;
	if (res->tokens > 1 && res->decode_ms > 0)
		res->tokens_per_s = (res->tokens - 1) / (res->decode_ms / 1e3);
	if (rc == 0 && g.sent < g.raw.n) {
		/* the end: what was held back is final now */
		int k = release(&g, g.raw.n, last);
		rc = k < 0 ? k : 0;
	}
	s->rng = r->has_seed ? s->rng : sm.rng;
out:
	free(ids);
	free(g.raw.s);
	if (rc < 0) {
		free(g.out.s);
		memset(res, 0, sizeof *res);
		return rc;
	}
	res->text = g.out.s;
	res->len = g.out.n;
	return 0;
}

int lmk_serve_logits(lmk_serve *s, const int32_t *ids, int n, float *out)
{
	const int V = s->m.cfg.vocab_size;
	int64_t shape[2] = {1, n};
	if (n < 1)
		return lmk_err(LMK_EINVAL, "logits: expected at least 1 token, found %d", n);
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= V)
			return lmk_err(LMK_EINVAL, "logits: token %d is %d, outside the vocabulary of %d",
				       i, ids[i], V);
	lmk_ctx_reset(&s->c);
	lmk_tensor *idt = lmk_tensor_wrap(&s->c, LMK_I32, 2, shape, (void *)ids);
	lmk_tensor *y = lmk_llama_forward(&s->c, &s->m, idt, NULL, NULL);
	int rc = 0;
	if (!y)
		rc = lmk_errcode() < 0 ? lmk_errcode() : LMK_ENOMEM;
	else
		memcpy(out, y->data, sizeof *out * (size_t)n * (size_t)V);
	lmk_ctx_reset(&s->c);
	return rc;
}
