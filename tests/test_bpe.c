/* test_bpe.c: byte-level BPE tokenizers (lib/bpe).
 *
 * Against Hugging Face `tokenizers` (tests/fixtures/tokenizer, made by
 * scripts/tokenizer-check.py fixtures): a 700-token tokenizer.json and
 * variants of it (GPT-2, SmolLM2, Llama 3, Qwen2 and GPT-4o pre-tokenizers,
 * each Split behaviour, inverted and zero-width patterns, NFC, added tokens
 * with lstrip, rstrip, single_word and normalized), loaded from JSON and, for
 * the pre-tokenizers GGUF names, from a GGUF image built here. Then round
 * trips of arbitrary bytes, errors for what is not supported, decoding
 * limits, and SmolLM2-135M-Instruct (models/smollm2-135m-instruct.gguf,
 * from scripts/get-model.sh) when it is there: known ids and the speed on
 * tinyshakespeare.
 *
 * Two more modes serve tests/interop/test_tokenizer.py:
 *   test_bpe --encode FILE [--special] [--records] < text
 *       FILE is a tokenizer.json or a GGUF. Prints the ids of the whole
 *       input on one line, space separated; with --records the input is
 *       records separated by NUL bytes and each gets its line. --special
 *       matches special tokens in the text. Prints the time on stderr.
 *   test_bpe --decode FILE < ids
 *       Each input line of ids is decoded and written out followed by a NUL.
 * Fixtures and the model are found under $LMK_ROOT (default "."), the data
 * under $LMK_DATA (default $LMK_ROOT/../shared/data). */
#include <check.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bpe.h"
#include "err.h"
#include "gguf.h"

static const char *root(void)
{
	const char *r = getenv("LMK_ROOT");
	return r && *r ? r : ".";
}

static char *path_in(const char *fmt, const char *a)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ & 3];
	snprintf(b, sizeof buf[0], fmt, root(), a);
	return b;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0, r;
	char *b = malloc(cap + 1);
	while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			b = realloc(b, (cap *= 2) + 1);
	}
	fclose(f);
	if (b) {
		b[n] = 0;
		*len = n;
	}
	return b;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int load_str(const char *json, lmk_bpe **t);

/* ------------------------------------------------------------ fixtures */

static json_t *fx_base, *fx_cases;

static void fixtures_load(void)
{
	json_error_t e;
	if (!fx_base)
		fx_base = json_load_file(path_in("%s/tests/fixtures/tokenizer/%s", "tiny.json"), 0, &e);
	if (!fx_cases)
		fx_cases = json_load_file(path_in("%s/tests/fixtures/tokenizer/%s", "tiny_cases.json"),
					  0, &e);
	ck_assert_msg(fx_base && fx_cases, "tests/fixtures/tokenizer: %s (line %d)", e.text, e.line);
}

/* tiny.json with a variant's overrides, as scripts/tokenizer-check.py's
 * apply_variant makes it. */
static json_t *variant_json(const char *name)
{
	const json_t *v = json_object_get(json_object_get(fx_cases, "variants"), name);
	ck_assert_msg(v != NULL, "no variant %s", name);
	json_t *d = json_deep_copy(fx_base);
	json_t *x;
	if ((x = json_object_get(v, "normalizer")))
		json_object_set(d, "normalizer", x);
	if ((x = json_object_get(v, "pre_tokenizer")))
		json_object_set(d, "pre_tokenizer", x);
	json_t *model = json_object_get(d, "model");
	if (json_is_true(json_object_get(v, "ignore_merges")))
		json_object_set_new(model, "ignore_merges", json_true());
	if (json_is_true(json_object_get(v, "merges_as_strings"))) {
		json_t *m = json_array();
		size_t i;
		json_t *p;
		json_array_foreach(json_object_get(model, "merges"), i, p) {
			char s[256];
			snprintf(s, sizeof s, "%s %s", json_string_value(json_array_get(p, 0)),
				 json_string_value(json_array_get(p, 1)));
			json_array_append_new(m, json_string(s));
		}
		json_object_set_new(model, "merges", m);
	}
	json_int_t n = (json_int_t)json_object_size(json_object_get(model, "vocab"));
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(v, "added_tokens"), i, a) {
		bool special = json_is_true(json_object_get(a, "special"));
		const json_t *norm = json_object_get(a, "normalized");
		json_t *t = json_pack("{s:I, s:O, s:b, s:b, s:b, s:b, s:b}", "id", n + (json_int_t)i,
				      "content", json_object_get(a, "content"), "single_word",
				      json_is_true(json_object_get(a, "single_word")), "lstrip",
				      json_is_true(json_object_get(a, "lstrip")), "rstrip",
				      json_is_true(json_object_get(a, "rstrip")), "normalized",
				      norm ? json_is_true(norm) : !special, "special", special);
		json_array_append_new(json_object_get(d, "added_tokens"), t);
	}
	return d;
}

static lmk_bpe *load_variant(const char *name)
{
	json_t *d = variant_json(name);
	char *s = json_dumps(d, JSON_COMPACT);
	lmk_bpe *t = NULL;
	int rc = lmk_bpe_load_json_mem(&t, s, strlen(s), NULL, 0, name);
	ck_assert_msg(rc == 0, "variant %s: %s", name, lmk_errmsg());
	free(s);
	json_decref(d);
	return t;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
	fprintf(stderr, "  %s:", what);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %d", ids[i]);
	fprintf(stderr, "\n");
}

/* Runs every case of variant `name` through t. @return : mismatches */
static int check_cases(lmk_bpe *t, const char *name, const char *label, int *ncmp)
{
	int bad = 0;
	int32_t *ids = NULL;
	size_t cap = 0, i;
	json_t *c;
	json_array_foreach(json_object_get(fx_cases, "cases"), i, c) {
		if (strcmp(json_string_value(json_object_get(c, "variant")), name))
			continue;
		const json_t *txt = json_object_get(c, "text");
		const char *text = json_string_value(txt);
		size_t len = json_string_length(txt);
		int special = json_is_true(json_object_get(c, "special"));
		int64_t n = lmk_bpe_encode(t, text, len, special ? LMK_BPE_SPECIAL : 0, &ids, &cap);
		ck_assert_msg(n >= 0, "%s: encode: %s", label, lmk_errmsg());
		const json_t *want = json_object_get(c, "ids");
		bool same = (size_t)n == json_array_size(want);
		for (size_t k = 0; same && k < (size_t)n; k++)
			same = ids[k] == json_integer_value(json_array_get(want, k));
		(*ncmp)++;
		if (!same && bad++ < 5) {
			fprintf(stderr, "test_bpe: %s: special %d: '%s'\n", label, special, text);
			print_ids("ours", ids, (size_t)n);
			fprintf(stderr, "  HF:  ");
			for (size_t k = 0; k < json_array_size(want); k++)
				fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, k)));
			fprintf(stderr, "\n");
		}
		/* decoding gives the text back, except where NFC changed it,
		 * a prefix space was added or white space removed */
		char out[4096];
		size_t m = lmk_bpe_decode(t, ids, (size_t)n, out, sizeof out, 0);
		if (strcmp(lmk_bpe_get_info(t)->normalizer, "nfc") && strcmp(name, "prefix-space") &&
		    strcmp(name, "removed"))
			ck_assert_msg(m == len && !memcmp(out, text, len), "%s: round trip of '%s'",
				      label, text);
	}
	free(ids);
	return bad;
}

START_TEST(test_hf_variants)
{
	fixtures_load();
	const char *name;
	json_t *v;
	int bad = 0, ncmp = 0, nvar = 0;
	json_object_foreach(json_object_get(fx_cases, "variants"), name, v) {
		lmk_bpe *t = load_variant(name);
		bad += check_cases(t, name, name, &ncmp);
		lmk_bpe_free(t);
		nvar++;
	}
	printf("test_bpe: %d variants, %d encodings compared with tokenizers, %d mismatches\n",
	       nvar, ncmp, bad);
	ck_assert_int_eq(bad, 0);
	ck_assert_int_gt(ncmp, 500);
}
END_TEST

/* ---------------------------------------------------------- GGUF image */

typedef struct gbuf {
	unsigned char *b;
	size_t n, cap;
} gbuf;

static void gput(gbuf *g, const void *p, size_t n)
{
	while (g->n + n > g->cap)
		g->b = realloc(g->b, g->cap = g->cap ? 2 * g->cap : 4096);
	memcpy(g->b + g->n, p, n);
	g->n += n;
}
static void gu32(gbuf *g, uint32_t v) { gput(g, &v, 4); }
static void gu64(gbuf *g, uint64_t v) { gput(g, &v, 8); }
static void gstr(gbuf *g, const char *s, size_t n)
{
	gu64(g, n);
	gput(g, s, n);
}
static void gkey(gbuf *g, const char *k, uint32_t type)
{
	gstr(g, k, strlen(k));
	gu32(g, type);
}
static void gkv_str(gbuf *g, const char *k, const char *v)
{
	gkey(g, k, LMK_GGUF_STRING);
	gstr(g, v, strlen(v));
}
static void gkv_u32(gbuf *g, const char *k, uint32_t v)
{
	gkey(g, k, LMK_GGUF_U32);
	gu32(g, v);
}

/* A GGUF holding tiny.json's vocabulary, merges and token types, with
 * tokenizer.ggml.model and .pre as given. */
static unsigned char *tiny_gguf(const char *model, const char *pre, size_t *len)
{
	json_t *m = json_object_get(fx_base, "model");
	json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
	size_t nv = json_object_size(vocab);
	const char **toks = calloc(nv, sizeof *toks);
	int32_t *types = calloc(nv, sizeof *types);
	const char *key;
	json_t *v;
	json_object_foreach(vocab, key, v) {
		toks[json_integer_value(v)] = key;
		types[json_integer_value(v)] = 1;
	}
	size_t i;
	json_array_foreach(json_object_get(fx_base, "added_tokens"), i, v) {
		json_int_t id = json_integer_value(json_object_get(v, "id"));
		toks[id] = json_string_value(json_object_get(v, "content"));
		types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
	}
	gbuf g = {0};
	gput(&g, "GGUF", 4);
	gu32(&g, 3);
	gu64(&g, 0); /* tensors */
	gu64(&g, 7 + (pre != NULL));
	gkv_str(&g, "general.architecture", "llama");
	gkv_str(&g, "tokenizer.ggml.model", model);
	if (pre)
		gkv_str(&g, "tokenizer.ggml.pre", pre);
	gkey(&g, "tokenizer.ggml.tokens", LMK_GGUF_ARRAY);
	gu32(&g, LMK_GGUF_STRING);
	gu64(&g, nv);
	for (i = 0; i < nv; i++)
		gstr(&g, toks[i], strlen(toks[i]));
	gkey(&g, "tokenizer.ggml.token_type", LMK_GGUF_ARRAY);
	gu32(&g, LMK_GGUF_I32);
	gu64(&g, nv);
	gput(&g, types, 4 * nv);
	gkey(&g, "tokenizer.ggml.merges", LMK_GGUF_ARRAY);
	gu32(&g, LMK_GGUF_STRING);
	gu64(&g, json_array_size(merges));
	json_array_foreach(merges, i, v) {
		char s[256];
		int n = snprintf(s, sizeof s, "%s %s", json_string_value(json_array_get(v, 0)),
				 json_string_value(json_array_get(v, 1)));
		gstr(&g, s, (size_t)n);
	}
	gkv_u32(&g, "tokenizer.ggml.bos_token_id", 3);
	gkv_u32(&g, "tokenizer.ggml.eos_token_id", 0);
	while (g.n % 32)
		gput(&g, "", 1);
	free(toks);
	free(types);
	*len = g.n;
	return g.b;
}

START_TEST(test_gguf_pre_names)
{
	/* GGUF pre name -> the tokenizer.json variant it stands for */
	static const char *pairs[][2] = {
		{"gpt2", "gpt2"}, {"smollm", "smollm"}, {"starcoder", "smollm"},
		{"llama-bpe", "llama3"}, {"qwen2", "qwen2"}, {"gpt-4o", "gpt4o"},
	};
	fixtures_load();
	int bad = 0, ncmp = 0;
	for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
		size_t len;
		unsigned char *img = tiny_gguf("gpt2", pairs[i][0], &len);
		lmk_gguf g;
		ck_assert_msg(lmk_gguf_parse(&g, img, len, "tiny.gguf") == 0, "%s", lmk_errmsg());
		lmk_bpe *t;
		ck_assert_msg(lmk_bpe_load_gguf(&t, &g) == 0, "%s: %s", pairs[i][0], lmk_errmsg());
		const lmk_bpe_info *in = lmk_bpe_get_info(t);
		ck_assert_str_eq(in->pre, pairs[i][0]);
		ck_assert_int_eq(in->n_vocab, 700);
		ck_assert_int_eq(in->bos, 3);
		ck_assert_int_eq(in->eos, 0);
		ck_assert_int_eq(in->eot, 4); /* <|eot_id|> */
		ck_assert_int_eq(in->add_bos, !strcmp(pairs[i][0], "llama-bpe"));
		char label[64];
		snprintf(label, sizeof label, "gguf %s", pairs[i][0]);
		bad += check_cases(t, pairs[i][1], label, &ncmp);
		lmk_bpe_free(t);
		lmk_gguf_close(&g);
		free(img);
	}
	printf("test_bpe: GGUF pre-tokenizers: %d encodings compared, %d mismatches\n", ncmp, bad);
	ck_assert_int_eq(bad, 0);
}
END_TEST

START_TEST(test_gguf_refused)
{
	fixtures_load();
	static const char *cases[][3] = {
		{"llama", "smollm", "SentencePiece"},
		{"bert", "gpt2", "'bert' is not supported"},
		{"gpt2", "deepseek-coder", "tokenizer.ggml.pre 'deepseek-coder' is not supported"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		size_t len;
		unsigned char *img = tiny_gguf(cases[i][0], cases[i][1], &len);
		lmk_gguf g;
		ck_assert_int_eq(lmk_gguf_parse(&g, img, len, "x.gguf"), 0);
		lmk_bpe *t = (lmk_bpe *)1;
		ck_assert_int_eq(lmk_bpe_load_gguf(&t, &g), LMK_EUNSUP);
		ck_assert_ptr_null(t);
		ck_assert_msg(strstr(lmk_errmsg(), cases[i][2]) && strstr(lmk_errmsg(), "x.gguf"),
			      "message: %s", lmk_errmsg());
		lmk_gguf_close(&g);
		free(img);
	}
	/* no pre name at all: GPT-2's pattern, as llama.cpp's default */
	size_t len;
	unsigned char *img = tiny_gguf("gpt2", NULL, &len);
	lmk_gguf g;
	ck_assert_int_eq(lmk_gguf_parse(&g, img, len, "x.gguf"), 0);
	lmk_bpe *t;
	ck_assert_int_eq(lmk_bpe_load_gguf(&t, &g), 0);
	ck_assert_str_eq(lmk_bpe_get_info(t)->pre, "default");
	lmk_bpe_free(t);
	lmk_gguf_close(&g);
	free(img);
}
END_TEST

/* ------------------------------------------------------- byte round trips */

static void round_trip(lmk_bpe *t, const char *s, size_t n, int flags)
{
	int32_t *ids = NULL;
	size_t cap = 0;
	int64_t m = lmk_bpe_encode(t, s, n, flags, &ids, &cap);
	ck_assert_msg(m >= 0, "%s", lmk_errmsg());
	size_t need = lmk_bpe_decode(t, ids, (size_t)m, NULL, 0, 0);
	char *o = malloc(need + 1);
	ck_assert_uint_eq(lmk_bpe_decode(t, ids, (size_t)m, o, need + 1, 0), need);
	ck_assert_msg(need == n && !memcmp(o, s, n), "round trip of %zu bytes gave %zu", n, need);
	free(o);
	free(ids);
}

START_TEST(test_invalid_utf8)
{
	static const char *vars[] = {"gpt2", "smollm", "llama3", "qwen2", "added-opts", "zero-width"};
	static const char *odd[] = {
		"\xff", "\xc3", "a\xe2\x82" "b", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"x\xe2\x80\xa8\xff \xff\xfe  \xf0\x9f\x91", "\xcc\x81\xcc\x81", "caf\x65\xcc\x81\xff",
	};
	fixtures_load();
	for (size_t v = 0; v < sizeof vars / sizeof *vars; v++) {
		lmk_bpe *t = load_variant(vars[v]);
		int nfc = !strcmp(vars[v], "qwen2") || !strcmp(vars[v], "added-opts");
		for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
			if (nfc && strstr(odd[i], "\xcc\x81"))
				continue; /* NFC changes e + U+0301 */
			round_trip(t, odd[i], strlen(odd[i]), LMK_BPE_SPECIAL);
		}
		/* random bytes, biased to UTF-8 lead and continuation bytes */
		uint64_t x = 88172645463325252ull + v;
		char buf[600];
		for (int r = 0; r < 200 && !nfc; r++) {
			size_t n = (size_t)(r * 3 % 600);
			for (size_t i = 0; i < n; i++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				unsigned c = (unsigned)(x >> 40) & 0xff;
				buf[i] = (char)((x >> 32) % 3 == 0 ? c : (x >> 32) % 3 == 1 ? (0x80 | (c & 0x3f))
											  : (unsigned char)"ab <|\n1'"[c % 8]);
			}
			round_trip(t, buf, n, r & 1 ? LMK_BPE_SPECIAL : 0);
		}
		lmk_bpe_free(t);
	}
}
END_TEST

START_TEST(test_long_pieces)
{
	fixtures_load();
	lmk_bpe *t = load_variant("gpt2");
	size_t n = 200000;
	char *s = malloc(n);
	const char *fill[] = {"a", " ", "ab", "\xe6\x97\xa5", "1", " \n", "!?", "\xcc\x81"};
	static const char *vars[] = {"gpt2", "llama3", "qwen2", "gpt4o"};
	for (size_t f = 0; f < sizeof fill * 4 / sizeof *fill; f++) {
		if (f % 8 == 0 && f) {
			lmk_bpe_free(t);
			t = load_variant(vars[f / 8]);
		}
		const char *fl = fill[f % 8];
		size_t l = strlen(fl);
		for (size_t i = 0; i < n; i++)
			s[i] = fl[i % l];
		double t0 = now();
		if (strcmp(vars[f / 8], "qwen2") || fl[0] != '\xcc') /* NFC would change it */
			round_trip(t, s, n - n % l, 0);
		ck_assert_msg(now() - t0 < 10, "%s: %zu bytes of '%s' took %.1f s", vars[f / 8], n, fl,
			      now() - t0);
	}
	free(s);
	lmk_bpe_free(t);
}
END_TEST

/* A byte without a token (0x04, spelled U+0104, taken out of tiny.json) is
 * dropped, or becomes the unknown token, fused or not, as in HF (ids from
 * tokenizers). Twice, for the word cache. */
START_TEST(test_missing_bytes)
{
	static const struct { const char *unk; int fuse; int n; int32_t ids[6]; } want[] = {
		{NULL, 0, 3, {69, 70, 225}},
		{"<|endoftext|>", 0, 6, {69, 0, 0, 70, 225, 0}},
		{"<|endoftext|>", 1, 5, {69, 0, 70, 225, 0}},
	};
	fixtures_load();
	for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
		json_t *d = variant_json("gpt2");
		json_t *m = json_object_get(d, "model");
		ck_assert_int_eq(json_object_del(json_object_get(m, "vocab"), "\xc4\x84"), 0);
		json_object_set_new(m, "unk_token", want[k].unk ? json_string(want[k].unk) : json_null());
		json_object_set_new(m, "fuse_unk", json_boolean(want[k].fuse));
		char *s = json_dumps(d, JSON_COMPACT);
		lmk_bpe *t;
		ck_assert_int_eq(load_str(s, &t), 0);
		int32_t *ids = NULL;
		size_t cap = 0;
		for (int rep = 0; rep < 2; rep++) {
			ck_assert_int_eq(lmk_bpe_encode(t, "a\x04\x04" "b \x04", 6, 0, &ids, &cap), want[k].n);
			for (int i = 0; i < want[k].n; i++)
				ck_assert_int_eq(ids[i], want[k].ids[i]);
			ck_assert_int_eq(lmk_bpe_encode(t, "\x04", 1, 0, &ids, &cap), want[k].unk ? 1 : 0);
		}
		free(ids);
		free(s);
		json_decref(d);
		lmk_bpe_free(t);
	}
}
END_TEST

/* More distinct words than the word cache holds: it grows, empties and
 * refills, and the ids stay those of words encoded one at a time. */
START_TEST(test_cache)
{
	fixtures_load();
	lmk_bpe *t = load_variant("gpt2"), *fresh = load_variant("gpt2");
	size_t nw = 70000, len = 0;
	char *text = malloc(nw * 8);
	for (size_t w = 0; w < nw; w++) {
		text[len++] = ' ';
		for (size_t x = w * 2654435761u % 11881376; x; x /= 26)
			text[len++] = (char)('a' + x % 26);
		text[len++] = 'q';
	}
	int32_t *a = NULL, *b = NULL, *one = NULL;
	size_t ca = 0, cb = 0, co = 0;
	int64_t na = lmk_bpe_encode(t, text, len, 0, &a, &ca);
	int64_t nb = lmk_bpe_encode(t, text, len, 0, &b, &cb);
	ck_assert_int_gt(na, (int64_t)nw);
	ck_assert_int_eq(na, nb);
	ck_assert(!memcmp(a, b, (size_t)na * sizeof *a));
	size_t k = 0;
	for (size_t s = 0, e; s < len; s = e) {
		for (e = s + 1; e < len && text[e] != ' '; e++)
			;
		int64_t n = lmk_bpe_encode(fresh, text + s, e - s, 0, &one, &co);
		ck_assert(k + (size_t)n <= (size_t)na && !memcmp(a + k, one, (size_t)n * sizeof *one));
		k += (size_t)n;
	}
	ck_assert_uint_eq(k, (size_t)na);
	free(a);
	free(b);
	free(one);
	free(text);
	lmk_bpe_free(t);
	lmk_bpe_free(fresh);
}
END_TEST

/* A folder with tokenizer.json and tokenizer_config.json, as HF saves it. */
START_TEST(test_folder)
{
	fixtures_load();
	char dir[] = "/tmp/lmk-bpe-XXXXXX", path[64];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	ck_assert_int_eq(json_dump_file(fx_base, path, JSON_COMPACT), 0);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	FILE *f = fopen(path, "w");
	fputs("{\"eos_token\": \"<|im_end|>\", \"chat_template\": [{\"name\": \"tool_use\", "
	      "\"template\": \"x\"}, {\"name\": \"default\", \"template\": \"<|im_start|>\"}]}", f);
	fclose(f);
	lmk_bpe *t;
	ck_assert_msg(lmk_bpe_load(&t, dir) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(lmk_bpe_get_info(t)->eos, 2);
	ck_assert_str_eq(lmk_bpe_get_info(t)->chat_template, "<|im_start|>");
	lmk_bpe_free(t);
	f = fopen(path, "w");
	fputs("{\"eos_token\": ", f);
	fclose(f);
	ck_assert_int_eq(lmk_bpe_load(&t, dir), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "tokenizer_config.json"));
	remove(path);
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	remove(path);
	rmdir(dir);
}
END_TEST

/* ------------------------------------------------------------- errors */

static int load_str(const char *json, lmk_bpe **t)
{
	return lmk_bpe_load_json_mem(t, json, strlen(json), NULL, 0, "t.json");
}

static void expect_error(const char *override_key, const char *override, int code, const char *msg)
{
	json_t *d = variant_json("gpt2");
	json_error_t e;
	json_t *o = json_loads(override, JSON_DECODE_ANY, &e);
	ck_assert_msg(o != NULL, "%s", e.text);
	if (!strcmp(override_key, "model.type") || !strcmp(override_key, "model.byte_fallback") ||
	    !strcmp(override_key, "model.continuing_subword_prefix") ||
	    !strcmp(override_key, "model.merges"))
		json_object_set_new(json_object_get(d, "model"), strchr(override_key, '.') + 1, o);
	else
		json_object_set_new(d, override_key, o);
	char *s = json_dumps(d, JSON_COMPACT);
	lmk_bpe *t = (lmk_bpe *)1;
	ck_assert_int_eq(load_str(s, &t), code);
	ck_assert_ptr_null(t);
	ck_assert_msg(strstr(lmk_errmsg(), msg) && !strncmp(lmk_errmsg(), "t.json: ", 8),
		      "%s: message '%s' lacks '%s'", override_key, lmk_errmsg(), msg);
	free(s);
	json_decref(d);
}

START_TEST(test_refusals)
{
	fixtures_load();
	expect_error("normalizer", "{\"type\":\"Lowercase\"}", LMK_EUNSUP, "normalizer 'Lowercase'");
	expect_error("normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
		     "{\"type\":\"Prepend\",\"prepend\":\"x\"}]}", LMK_EUNSUP, "'Prepend'");
	expect_error("pre_tokenizer", "{\"type\":\"Metaspace\"}", LMK_EUNSUP, "'Metaspace'");
	expect_error("pre_tokenizer", "null", LMK_EUNSUP, "pre_tokenizer");
	expect_error("pre_tokenizer", "{\"type\":\"Digits\"}", LMK_EUNSUP, "no ByteLevel");
	expect_error("pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
		     "\"ByteLevel\"},{\"type\":\"Digits\"}]}", LMK_EUNSUP, "after ByteLevel");
	expect_error("pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
		     "\"behavior\":\"Isolated\"}", LMK_EUNSUP, "pattern '('");
	expect_error("pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
		     "\"behavior\":\"Sideways\"}", LMK_EFORMAT, "'Sideways'");
	expect_error("decoder", "{\"type\":\"Metaspace\"}", LMK_EUNSUP, "decoder 'Metaspace'");
	expect_error("decoder", "null", LMK_EUNSUP, "decoder 'none'");
	expect_error("model.type", "\"WordPiece\"", LMK_EUNSUP, "model type 'WordPiece'");
	expect_error("model.byte_fallback", "true", LMK_EUNSUP, "byte_fallback");
	expect_error("model.continuing_subword_prefix", "\"##\"", LMK_EUNSUP, "continuing_subword");
	expect_error("model.merges", "[\"a b c\"]", LMK_EFORMAT, "merges[0]");
	expect_error("model.merges", "[[\"\\u0100\",\"\\u2603\"]]", LMK_EFORMAT, "not in the vocabulary");
	expect_error("added_tokens", "[{\"id\":-1,\"content\":\"x\"}]", LMK_EFORMAT, "added_tokens[0]");
	expect_error("added_tokens", "[{\"id\":16777216,\"content\":\"x\"}]", LMK_EFORMAT,
		     "added_tokens[0]");
	expect_error("added_tokens", "[{\"id\":1000000,\"content\":\"x\"}]", LMK_EFORMAT,
		     "expected ids below");

	lmk_bpe *t = (lmk_bpe *)1;
	ck_assert_int_eq(load_str("{\"model\": ", &t), LMK_EFORMAT);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "t.json: line 1"));
	ck_assert_int_eq(load_str("[]", &t), LMK_EFORMAT);
	ck_assert_int_eq(lmk_bpe_load(&t, "/nonexistent/tokenizer.json"), LMK_EIO);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "/nonexistent/tokenizer.json"));
}
END_TEST

/* ------------------------------------------------------- decode, flags */

START_TEST(test_decode_and_flags)
{
	fixtures_load();
	lmk_bpe *t = load_variant("gpt2");
	const lmk_bpe_info *in = lmk_bpe_get_info(t);
	ck_assert_int_eq(in->n_vocab, 700);
	ck_assert_int_eq(in->bos, -1); /* tiny.json names none */
	ck_assert_int_eq(in->eot, 4);
	ck_assert_ptr_null(in->chat_template);
	ck_assert_str_eq(in->normalizer, "none");

	int32_t im_end = lmk_bpe_find(t, "<|im_end|>", 10);
	ck_assert_int_eq(im_end, 2);
	ck_assert(lmk_bpe_is_special(t, im_end));
	ck_assert(!lmk_bpe_is_special(t, 300));
	ck_assert(!lmk_bpe_is_special(t, 700));
	ck_assert_int_eq(lmk_bpe_find(t, " the", 4) > 4, 1);
	ck_assert_int_eq(lmk_bpe_find(t, "no such token at all", 20), -1);

	int32_t *ids = NULL;
	size_t cap = 0, l;
	ck_assert_int_eq(lmk_bpe_encode(t, "x", 1, LMK_BPE_BOS, &ids, &cap), LMK_EINVAL);
	ck_assert_int_eq(lmk_bpe_encode(t, "x", 1, LMK_BPE_EOS, &ids, &cap), LMK_EINVAL);
	ck_assert_int_eq(lmk_bpe_encode(t, NULL, 0, 0, &ids, &cap), 0);
	ck_assert_int_eq(lmk_bpe_encode(t, NULL, 1, 0, &ids, &cap), LMK_EINVAL);

	/* special tokens as text or as ids */
	int64_t n = lmk_bpe_encode(t, "a<|im_end|>", 11, LMK_BPE_SPECIAL, &ids, &cap);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(ids[1], im_end);
	n = lmk_bpe_encode(t, "a<|im_end|>", 11, 0, &ids, &cap);
	ck_assert_int_gt(n, 2);
	for (int64_t i = 0; i < n; i++)
		ck_assert_int_ne(ids[i], im_end);

	/* snprintf-like decoding; specials skipped on request; bad ids */
	int32_t d[] = {im_end, 700, -5};
	char out[32];
	ck_assert_uint_eq(lmk_bpe_decode(t, d, 3, out, sizeof out, 0), 16);
	ck_assert_str_eq(out, "<|im_end|>\xEF\xBF\xBD\xEF\xBF\xBD");
	ck_assert_uint_eq(lmk_bpe_decode(t, d, 3, out, sizeof out, LMK_BPE_SKIP_SPECIAL), 6);
	ck_assert_uint_eq(lmk_bpe_decode(t, d, 3, out, 5, 0), 16);
	ck_assert_str_eq(out, "<|im");
	ck_assert_uint_eq(lmk_bpe_decode(t, d, 3, NULL, 0, 0), 16);
	ck_assert_uint_eq(lmk_bpe_decode(t, d, 0, out, 1, 0), 0);
	ck_assert_str_eq(out, "");
	const char *b = lmk_bpe_token(t, im_end, &l);
	ck_assert(b && l == 10 && !memcmp(b, "<|im_end|>", 10));
	ck_assert_ptr_null(lmk_bpe_token(t, 700, &l));
	ck_assert_ptr_null(lmk_bpe_token(t, -1, &l));
	lmk_bpe_free(t);

	/* bos and eos from tokenizer_config.json, and from a post-processor */
	json_t *dj = variant_json("gpt2");
	char *s = json_dumps(dj, JSON_COMPACT);
	const char *cfg = "{\"bos_token\": {\"content\": \"<|begin_of_text|>\"}, \"eos_token\": "
			  "\"<|im_end|>\", \"add_bos_token\": true, \"model_max_length\": "
			  "1000000000000000019884624838656, \"chat_template\": \"{{ x }}\"}";
	ck_assert_int_eq(lmk_bpe_load_json_mem(&t, s, strlen(s), cfg, strlen(cfg), "t"), 0);
	in = lmk_bpe_get_info(t);
	ck_assert_int_eq(in->bos, 3);
	ck_assert_int_eq(in->eos, 2);
	ck_assert_int_eq(in->add_bos, 1);
	ck_assert_str_eq(in->chat_template, "{{ x }}");
	n = lmk_bpe_encode(t, "hi", 2, LMK_BPE_BOS | LMK_BPE_EOS, &ids, &cap);
	ck_assert_int_ge(n, 3);
	ck_assert_int_eq(ids[0], 3);
	ck_assert_int_eq(ids[n - 1], 2);
	lmk_bpe_free(t);
	free(s);
	json_object_set_new(dj, "post_processor", json_loads(
		"{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
		"\"<|begin_of_text|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
		"\"special_tokens\":{\"<|begin_of_text|>\":{\"id\":\"<|begin_of_text|>\",\"ids\":[3],"
		"\"tokens\":[\"<|begin_of_text|>\"]}}}", 0, NULL));
	s = json_dumps(dj, JSON_COMPACT);
	ck_assert_int_eq(load_str(s, &t), 0);
	ck_assert_int_eq(lmk_bpe_get_info(t)->bos, 3);
	ck_assert_int_eq(lmk_bpe_get_info(t)->add_bos, 1);
	ck_assert_int_eq(lmk_bpe_get_info(t)->add_eos, 0);
	lmk_bpe_free(t);
	free(s);
	json_decref(dj);
	free(ids);
}
END_TEST

/* ----------------------------------------------------------- SmolLM2 */

static const char *model_path(void)
{
	return path_in("%s/models/%s", "smollm2-135m-instruct.gguf");
}

START_TEST(test_smollm2)
{
	lmk_bpe *t;
	if (lmk_bpe_load(&t, model_path()) == LMK_EIO) {
		printf("test_bpe: SmolLM2 skipped: %s (scripts/get-model.sh fetches it)\n", lmk_errmsg());
		return;
	}
	ck_assert_msg(t != NULL, "%s", lmk_errmsg());
	const lmk_bpe_info *in = lmk_bpe_get_info(t);
	ck_assert_int_eq(in->n_vocab, 49152);
	ck_assert_int_eq(in->bos, 1);
	ck_assert_int_eq(in->eos, 2);
	ck_assert_int_eq(in->eot, 2);
	ck_assert_int_eq(in->add_bos, 0);
	ck_assert_str_eq(in->pre, "smollm");
	ck_assert_ptr_nonnull(in->chat_template);
	ck_assert_ptr_nonnull(strstr(in->chat_template, "named SmolLM"));
	/* ids from Hugging Face's tokenizer for SmolLM2 */
	static const struct { const char *text; int n; int32_t ids[16]; } known[] = {
		{"Hello world! 123", 7, {19556, 905, 17, 216, 33, 34, 35}},
		{"  multiple   spaces", 4, {216, 2701, 256, 5600}},
		{"a  1", 3, {81, 256, 33}},
		{"<|im_start|>user\nHi<|im_end|>\n", 6, {1, 4093, 198, 26843, 2, 198}},
		{"", 0, {0}},
	};
	int32_t *ids = NULL;
	size_t cap = 0;
	for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
		int64_t n = lmk_bpe_encode(t, known[i].text, strlen(known[i].text), LMK_BPE_SPECIAL,
					   &ids, &cap);
		ck_assert_int_eq(n, known[i].n);
		for (int k = 0; k < known[i].n; k++)
			ck_assert_int_eq(ids[k], known[i].ids[k]);
	}
	size_t len;
	char *path = malloc(4096);
	const char *data = getenv("LMK_DATA");
	snprintf(path, 4096, "%s/text/tinyshakespeare.txt", data ? data : path_in("%s/../shared/%s", "data"));
	char *text = slurp(path, &len);
	free(path);
	if (text) {
		double t0 = now();
		int64_t n = lmk_bpe_encode(t, text, len, 0, &ids, &cap);
		double dt = now() - t0;
		ck_assert_int_eq(n, 341094); /* as many as Hugging Face's tokenizer gives */
		printf("test_bpe: tinyshakespeare: %zu bytes, %lld tokens in %.3f s (%.1f MB/s)\n", len,
		       (long long)n, dt, (double)len / dt / 1e6);
		ck_assert_msg(dt < 20, "tinyshakespeare took %.1f s", dt);
		char *o = malloc(len + 1);
		ck_assert_uint_eq(lmk_bpe_decode(t, ids, (size_t)n, o, len + 1, 0), len);
		ck_assert(!memcmp(o, text, len));
		free(o);
		free(text);
	}
	free(ids);
	lmk_bpe_free(t);
}
END_TEST

/* -------------------------------------------------- tool modes (interop) */

static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 1 << 16, n = 0, r;
	char *b = malloc(cap + 1);
	while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			b = realloc(b, (cap *= 2) + 1);
	}
	if (b)
		b[n] = 0;
	*len = n;
	return b;
}

static int tool(int argc, char **argv)
{
	int encode = !strcmp(argv[1], "--encode"), special = 0, records = 0;
	if (argc < 3) {
		fprintf(stderr, "usage: test_bpe --encode FILE [--special] [--records] < text\n"
				"       test_bpe --decode FILE < ids\n");
		return 2;
	}
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--special"))
			special = 1;
		else if (!strcmp(argv[i], "--records"))
			records = 1;
		else {
			fprintf(stderr, "test_bpe: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	lmk_bpe *t;
	if (lmk_bpe_load(&t, argv[2])) {
		fprintf(stderr, "test_bpe: %s\n", lmk_errmsg());
		return 1;
	}
	size_t len;
	char *in = read_all(stdin, &len);
	int32_t *ids = NULL;
	size_t cap = 0;
	if (encode) {
		double t0 = now(), busy = 0;
		size_t ntok = 0;
		for (size_t s = 0; s <= len;) {
			size_t e = len;
			if (records) {
				char *z = memchr(in + s, 0, len - s);
				e = z ? (size_t)(z - in) : len;
				if (!z && s == len && len > 0)
					break; /* input ended with a NUL */
			}
			double t1 = now();
			int64_t n = lmk_bpe_encode(t, in + s, e - s, special ? LMK_BPE_SPECIAL : 0, &ids, &cap);
			busy += now() - t1;
			if (n < 0) {
				fprintf(stderr, "test_bpe: %s\n", lmk_errmsg());
				return 1;
			}
			for (int64_t i = 0; i < n; i++)
				printf(i ? " %d" : "%d", ids[i]);
			putchar('\n');
			ntok += (size_t)n;
			s = e + 1;
		}
		fprintf(stderr, "test_bpe: encoded %zu bytes into %zu tokens in %.3f s (%.3f s in all)\n",
			len, ntok, busy, now() - t0);
	} else {
		for (char *line = in, *nl; line < in + len; line = nl + 1) {
			size_t n = 0;
			if (!(nl = memchr(line, '\n', (size_t)(in + len - line))))
				nl = in + len;
			*nl = 0;
			for (char *p = line, *q; *p; p = q) {
				long v = strtol(p, &q, 10);
				if (q == p)
					break;
				if (n == cap)
					ids = realloc(ids, (cap = cap ? 2 * cap : 1024) * sizeof *ids);
				ids[n++] = (int32_t)v;
			}
			size_t need = lmk_bpe_decode(t, ids, n, NULL, 0, 0);
			char *o = malloc(need + 1);
			lmk_bpe_decode(t, ids, n, o, need + 1, 0);
			fwrite(o, 1, need, stdout);
			putchar(0);
			free(o);
		}
	}
	free(ids);
	free(in);
	lmk_bpe_free(t);
	return fflush(stdout) ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "--encode") || !strcmp(argv[1], "--decode")))
		return tool(argc, argv);
	Suite *s = suite_create("bpe");
	TCase *tc = tcase_create("bpe");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_hf_variants);
	tcase_add_test(tc, test_gguf_pre_names);
	tcase_add_test(tc, test_gguf_refused);
	tcase_add_test(tc, test_invalid_utf8);
	tcase_add_test(tc, test_long_pieces);
	tcase_add_test(tc, test_cache);
	tcase_add_test(tc, test_missing_bytes);
	tcase_add_test(tc, test_folder);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_decode_and_flags);
	tcase_add_test(tc, test_smollm2);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
