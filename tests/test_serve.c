/* test_serve.c: serving (lib/serve).
 *
 * Requests: well-formed lines and each way a line can be refused.
 * Generation, on a tiny byte-level model built here whose greedy output is
 * known: after token a it says b, then the two bytes of "é", then c, d and
 * its eos (from bos it says a). That exercises the finish reasons, stop
 * strings inside and across tokens, text held back while it may start a stop
 * string or a UTF-8 character, the pieces handed out, max_tokens, a full
 * cache, an empty prompt, the lla-train checkpoint path of the loader, and
 * sampling reproducible by seed with invalid bytes made U+FFFD.
 * SmolLM2-135M-Instruct, when models/smollm2-135m-instruct.gguf is there: our
 * logits for the ids of tests/fixtures/smollm2-logits/expected.safetensors
 * (scripts/gguf-logits.py: transformers on the same GGUF) have the same top-5
 * ids at every position and those logits within 1e-3 relative, through the
 * full forward pass and through the KV-cache decoder.
 * Files are found under $LMK_ROOT (default "."). */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytetok.h"
#include "ckpt.h"
#include "err.h"
#include "frame.h"
#include "serve.h"

static const char *root(void)
{
	const char *r = getenv("LMK_ROOT");
	return r && *r ? r : ".";
}

/* ---------------------------------------------------------------- requests */

START_TEST(test_parse_ok)
{
	lmk_serve_request r;
	const char *l1 = "{\"prompt\":\"hi\",\"max_tokens\":3,\"temperature\":0.5,\"top_p\":1,"
			 "\"top_k\":40,\"seed\":7,\"stop\":[\"a\",\"bc\"],\"stream\":true,\"id\":[1],"
			 "\"model\":\"x\"}\n";
	ck_assert_msg(lmk_serve_request_parse(&r, l1, strlen(l1)) == 0, "%s", lmk_errmsg());
	ck_assert_str_eq(r.prompt, "hi");
	ck_assert_ptr_null(r.msgs);
	ck_assert_int_eq(r.max_tokens, 3);
	ck_assert(r.temperature == 0.5f && r.top_p == 1.0f);
	ck_assert_int_eq(r.top_k, 40);
	ck_assert(r.has_seed && r.seed == 7);
	ck_assert_int_eq(r.nstop, 2);
	ck_assert_str_eq(r.stop[1], "bc");
	ck_assert_int_eq(r.stream, 1);
	ck_assert(json_is_array((json_t *)r.id));
	lmk_serve_request_free(&r);

	const char *l2 = "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
			 "{\"content\":\"h\\u00e9\",\"role\":\"user\"}],\"stop\":\"x\",\"temperature\":0}";
	ck_assert_msg(lmk_serve_request_parse(&r, l2, strlen(l2)) == 0, "%s", lmk_errmsg());
	ck_assert_ptr_null(r.prompt);
	ck_assert_uint_eq(r.nmsgs, 2);
	ck_assert_str_eq(r.msgs[1].role, "user");
	ck_assert_str_eq(r.msgs[1].content, "h\xc3\xa9");
	ck_assert_int_eq(r.nstop, 1);
	ck_assert(r.temperature == 0);
	/* what the request leaves out is unset */
	ck_assert_int_eq(r.max_tokens, -1);
	ck_assert_int_eq(r.top_k, -1);
	ck_assert(isnan(r.top_p));
	ck_assert(!r.has_seed && r.stream == -1 && r.id == NULL);
	lmk_serve_request_free(&r);
}
END_TEST

static const struct bad_case {
	const char *line, *msg;
} bad_cases[] = {
	{"", "invalid JSON at column"},
	{"{\"prompt\":", "invalid JSON"},
	{"{\"prompt\":\"a\"} x", "invalid JSON"},
	{"[1]", "expected a JSON object, found a list"},
	{"\"hi\"", "invalid JSON"},
	{"{}", "expected 'prompt' or 'messages'"},
	{"{\"prompt\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"b\"}]}", "not both"},
	{"{\"prompt\":3}", "'prompt': expected a string, found 3"},
	{"{\"prompt\":\"a\",\"prompt\":\"b\"}", "invalid JSON"},
	{"{\"messages\":{}}", "'messages': expected a list of messages, found an object"},
	{"{\"messages\":[]}", "'messages': expected at least one message"},
	{"{\"messages\":[\"hi\"]}", "'messages'[0]: expected an object, found a string"},
	{"{\"messages\":[{\"role\":\"user\"}]}", "'messages'[0].content: expected a string, found none"},
	{"{\"messages\":[{\"role\":1,\"content\":\"a\"}]}", "'messages'[0].role: expected a string"},
	{"{\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"name\":\"x\"}]}", "unknown key 'name'"},
	{"{\"prompt\":\"a\",\"max_tokens\":-1}", "'max_tokens': expected an integer >= 0, found -1"},
	{"{\"prompt\":\"a\",\"max_tokens\":1.5}", "'max_tokens': expected an integer >= 0, found 1.5"},
	{"{\"prompt\":\"a\",\"temperature\":-0.1}", "'temperature': expected a number >= 0"},
	{"{\"prompt\":\"a\",\"temperature\":\"hot\"}", "found a string"},
	{"{\"prompt\":\"a\",\"top_p\":2}", "'top_p': expected a number in [0, 1], found 2"},
	{"{\"prompt\":\"a\",\"top_k\":null}", "'top_k': expected an integer >= 0, found null"},
	{"{\"prompt\":\"a\",\"seed\":-5}", "'seed': expected an integer >= 0"},
	{"{\"prompt\":\"a\",\"stop\":\"\"}", "'stop': expected a non-empty string"},
	{"{\"prompt\":\"a\",\"stop\":[\"x\",2]}", "'stop'[1]: expected a non-empty string, found an integer"},
	{"{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\","
	 "\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}", "at most 16 strings, found 17"},
	{"{\"prompt\":\"a\",\"stream\":1}", "'stream': expected true or false"},
	{"{\"prompt\":\"a\",\"max_token\":5}", "unknown key 'max_token'"},
	{"{\"prompt\":\"a\\u0000b\"}", "invalid JSON"},
};

START_TEST(test_parse_bad)
{
	const struct bad_case *c = &bad_cases[_i];
	lmk_serve_request r;
	ck_assert_int_eq(lmk_serve_request_parse(&r, c->line, strlen(c->line)), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), c->msg), "%s: expected '%s', found '%s'", c->line, c->msg,
		      lmk_errmsg());
	lmk_serve_request_free(&r);
}
END_TEST

START_TEST(test_parse_bad_keeps_id)
{
	lmk_serve_request r;
	const char *l = "{\"id\":\"q7\",\"prompt\":5}";
	ck_assert_int_eq(lmk_serve_request_parse(&r, l, strlen(l)), LMK_EFORMAT);
	ck_assert_str_eq(json_string_value((json_t *)r.id), "q7");
	lmk_serve_request_free(&r);
}
END_TEST

/* -------------------------------------------------------------- tiny model */

/* A byte-level model that, greedily, follows a chain: each source token
 * gets a dimension of its own in the embedding, and lm_head maps that
 * dimension to the next token with logit 10 * 4 (rmsnorm makes a one-hot
 * of 16 dims worth 4), every other token 0. One layer of zeros leaves the
 * residual stream as it is. */
static const int chain[][2] = {
	{LMK_BYTETOK_BOS, 'a'}, {'a', 'b'}, {'b', 0xc3}, {0xc3, 0xa9}, {0xa9, 'c'}, {'c', 'd'},
	{'d', LMK_BYTETOK_EOS},
};

static char tmpdir[64];

static void rmdir_all(const char *dir)
{
	static const char *const files[] = {"config.json", "model.safetensors", NULL};
	char p[256];
	for (int i = 0; files[i]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

static void make_tiny(const char *dir, int bos)
{
	lmk_llama_config cfg;
	lmk_llama m;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 16;
	cfg.num_hidden_layers = 1;
	cfg.num_attention_heads = 2;
	cfg.num_key_value_heads = 2;
	cfg.head_dim = 8;
	cfg.intermediate_size = 32;
	cfg.vocab_size = LMK_BYTETOK_VOCAB;
	cfg.max_position_embeddings = 64;
	cfg.tie_word_embeddings = 0;
	cfg.bos_token_id = bos;
	cfg.eos_token_id[0] = LMK_BYTETOK_EOS;
	cfg.neos = 1;
	ck_assert_msg(lmk_llama_init(&m, &cfg, 0) == 0, "%s", lmk_errmsg());
	float *wte = m.wte->data, *head = m.lm_head->data, *norm = m.norm->data;
	for (int c = 0; c < 16; c++)
		norm[c] = 1;
	for (int i = 0; i < (int)(sizeof chain / sizeof chain[0]); i++) {
		wte[chain[i][0] * 16 + i] = 1;
		head[chain[i][1] * 16 + i] = 10;
	}
	ck_assert_msg(lmk_ckpt_save(dir, &m, LMK_F32) == 0, "%s", lmk_errmsg());
	lmk_llama_free(&m);
}

static void tiny_setup(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_serve.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	make_tiny(tmpdir, LMK_BYTETOK_BOS);
}

static void tiny_teardown(void)
{
	rmdir_all(tmpdir);
}

struct pieces {
	char text[256];
	char joined[256];    /* the pieces with '|' between them */
	int n;
	int32_t id[32];
	int stop_after;      /* ask to stop after this many pieces (0: never) */
};

static int on_piece(void *arg, const char *text, size_t len, int32_t id)
{
	struct pieces *p = arg;
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_lt(strlen(p->text) + len, sizeof p->text);
	strncat(p->text, text, len);
	if (p->n)
		strcat(p->joined, "|");
	strncat(p->joined, text, len);
	p->id[p->n++] = id;
	return p->stop_after && p->n >= p->stop_after;
}

static const struct gen_case {
	const char *req, *text, *finish;
	int tokens, prompt_tokens;
	const char *pieces;  /* the pieces joined by '|' */
} gen_cases[] = {
	{"{\"prompt\":\"a\",\"temperature\":0}", "b\xc3\xa9" "cd", "stop", 6, 1, "b|\xc3\xa9|c|d"},
	{"{\"prompt\":\"a\"}", "b\xc3\xa9" "cd", "stop", 6, 1, NULL}, /* logits 40 vs 0: as greedy */
	{"{\"prompt\":\"\"}", "ab\xc3\xa9" "cd", "stop", 7, 1, NULL},  /* bos starts */
	{"{\"prompt\":\"a\",\"max_tokens\":0}", "", "length", 0, 1, ""},
	{"{\"prompt\":\"a\",\"max_tokens\":1}", "b", "length", 1, 1, "b"},
	/* half a character at the end becomes U+FFFD */
	{"{\"prompt\":\"a\",\"max_tokens\":2}", "b\xef\xbf\xbd", "length", 2, 1, "b|\xef\xbf\xbd"},
	{"{\"prompt\":\"a\",\"max_tokens\":3}", "b\xc3\xa9", "length", 3, 1, "b|\xc3\xa9"},
	{"{\"prompt\":\"xa\"}", "b\xc3\xa9" "cd", "stop", 6, 2, NULL},
	/* stop strings: across tokens, inside a character, first match wins */
	{"{\"prompt\":\"a\",\"stop\":\"cd\"}", "b\xc3\xa9", "stop", 5, 1, "b|\xc3\xa9"},
	{"{\"prompt\":\"a\",\"stop\":[\"zz\",\"\xc3\xa9" "c\"]}", "b", "stop", 4, 1, "b"},
	{"{\"prompt\":\"a\",\"stop\":[\"d\",\"b\xc3\xa9\"]}", "", "stop", 3, 1, ""},
	{"{\"prompt\":\"a\",\"stop\":\"b\"}", "", "stop", 1, 1, ""},
	{"{\"prompt\":\"a\",\"stop\":\"d\"}", "b\xc3\xa9" "c", "stop", 5, 1, "b|\xc3\xa9|c"},
	/* a prefix of a stop string that does not complete is handed out */
	{"{\"prompt\":\"a\",\"stop\":\"cx\"}", "b\xc3\xa9" "cd", "stop", 6, 1, "b|\xc3\xa9|cd"},
	{"{\"prompt\":\"a\",\"stop\":\"dx\",\"max_tokens\":5}", "b\xc3\xa9" "cd", "length", 5, 1,
	 "b|\xc3\xa9|c|d"},
	/* the stop text is not in the model's output at all */
	{"{\"prompt\":\"a\",\"stop\":\"<|eos|>\"}", "b\xc3\xa9" "cd", "stop", 6, 1, NULL},
};

START_TEST(test_generate)
{
	const struct gen_case *c = &gen_cases[_i];
	lmk_serve s;
	lmk_serve_request r;
	lmk_serve_result res;
	struct pieces p = {.n = 0};

	ck_assert_msg(lmk_serve_load(&s, tmpdir, 0, 1, 0) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(s.source, LMK_SERVE_BYTES);
	ck_assert_ptr_null(s.bpe);
	ck_assert_int_eq(s.ctx_len, 64);
	ck_assert_msg(lmk_serve_request_parse(&r, c->req, strlen(c->req)) == 0, "%s", lmk_errmsg());
	ck_assert_msg(lmk_serve_complete(&s, &r, on_piece, &p, &res) == 0, "%s: %s", c->req,
		      lmk_errmsg());
	ck_assert_msg(res.len == strlen(c->text) && !memcmp(res.text, c->text, res.len),
		      "%s: expected text '%s', found '%s'", c->req, c->text, res.text);
	ck_assert_str_eq(res.finish_reason, c->finish);
	ck_assert_int_eq(res.tokens, c->tokens);
	ck_assert_int_eq(res.prompt_tokens, c->prompt_tokens);
	ck_assert_str_eq(p.text, res.text);
	if (c->pieces)
		ck_assert_str_eq(p.joined, c->pieces);
	ck_assert(res.prompt_ms >= 0 && res.decode_ms >= 0 && res.tokens_per_s >= 0);
	ck_assert(c->tokens > 1 || res.tokens_per_s == 0);
	free(res.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
}
END_TEST

START_TEST(test_piece_ids_and_stop)
{
	lmk_serve s;
	lmk_serve_request r;
	lmk_serve_result res;
	struct pieces p = {.n = 0};
	const char *req = "{\"prompt\":\"a\",\"stop\":\"cd\"}";

	ck_assert_msg(lmk_serve_load(&s, tmpdir, 0, 1, 0) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(lmk_serve_request_parse(&r, req, strlen(req)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, on_piece, &p, &res), 0);
	/* "é" is released by its second byte; "c" is held and then cut */
	ck_assert_int_eq(p.n, 2);
	ck_assert_int_eq(p.id[0], 'b');
	ck_assert_int_eq(p.id[1], 0xa9);
	free(res.text);
	/* a callback that asks to stop ends the completion there */
	memset(&p, 0, sizeof p);
	p.stop_after = 1;
	lmk_serve_request_free(&r);
	req = "{\"prompt\":\"a\"}";
	ck_assert_int_eq(lmk_serve_request_parse(&r, req, strlen(req)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, on_piece, &p, &res), 0);
	ck_assert_str_eq(res.text, "b");
	ck_assert_str_eq(res.finish_reason, "stop");
	ck_assert_int_eq(res.tokens, 1);
	free(res.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
}
END_TEST

START_TEST(test_context)
{
	lmk_serve s;
	lmk_serve_request r;
	lmk_serve_result res;
	const char *big = "{\"prompt\":\"aaaaa\"}", *fits = "{\"prompt\":\"a\"}";

	ck_assert_msg(lmk_serve_load(&s, tmpdir, 4, 1, 0) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(s.ctx_len, 4);
	ck_assert_int_eq(lmk_serve_request_parse(&r, big, strlen(big)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &res), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "the prompt's 5 tokens do not fit the context of 4"));
	lmk_serve_request_free(&r);
	/* a full cache ends the completion: 1 prompt token, 3 fed back, 1 more */
	ck_assert_int_eq(lmk_serve_request_parse(&r, fits, strlen(fits)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &res), 0);
	ck_assert_str_eq(res.text, "b\xc3\xa9" "c");
	ck_assert_str_eq(res.finish_reason, "length");
	ck_assert_int_eq(res.tokens, 4);
	free(res.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
}
END_TEST

START_TEST(test_chat_needs_template)
{
	lmk_serve s;
	lmk_serve_request r;
	lmk_serve_result res;
	const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":2}";

	ck_assert_int_eq(lmk_serve_load(&s, tmpdir, 0, 1, 0), 0);
	ck_assert_int_eq(s.chat.kind, LMK_CHAT_NONE);
	ck_assert_ptr_nonnull(s.chat_err);
	ck_assert_int_eq(lmk_serve_request_parse(&r, req, strlen(req)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &res), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "cannot render messages: the model has no chat template"));
	lmk_serve_free(&s);
	/* plain prompting, when asked for */
	ck_assert_int_eq(lmk_serve_load(&s, tmpdir, 0, 1, LMK_SERVE_PLAIN), LMK_SERVE_FELL_BACK);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "no chat template"));
	ck_assert_int_eq(s.chat.kind, LMK_CHAT_PLAIN);
	int32_t *ids;
	int64_t n = lmk_serve_encode(&s, &r, &ids);
	ck_assert_int_eq(n, (int64_t)strlen("User: a\nAssistant:"));
	free(ids);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &res), 0);
	ck_assert_int_eq(res.tokens, 2);
	free(res.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
}
END_TEST

START_TEST(test_sampling)
{
	lmk_serve s;
	lmk_serve_request r;
	lmk_serve_result a, b, c;
	/* at temperature 100 the logits 40 and 0 are nearly alike: random bytes */
	const char *req1 = "{\"prompt\":\"a\",\"temperature\":100,\"max_tokens\":40,\"seed\":3}";
	const char *req2 = "{\"prompt\":\"a\",\"temperature\":100,\"max_tokens\":40,\"seed\":4}";

	ck_assert_int_eq(lmk_serve_load(&s, tmpdir, 0, 1, 0), 0);
	ck_assert_int_eq(lmk_serve_request_parse(&r, req1, strlen(req1)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &a), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &b), 0);
	lmk_serve_request_free(&r);
	ck_assert_int_eq(lmk_serve_request_parse(&r, req2, strlen(req2)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &c), 0);
	ck_assert(a.len == b.len && !memcmp(a.text, b.text, a.len));
	ck_assert(a.len != c.len || memcmp(a.text, c.text, a.len));
	/* whatever bytes came, the text is valid UTF-8 */
	json_t *j = json_stringn(a.text, a.len), *k = json_stringn(c.text, c.len);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(k);
	json_decref(j);
	json_decref(k);
	free(a.text);
	free(b.text);
	free(c.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
}
END_TEST

START_TEST(test_reuse)
{
	lmk_serve s, t;
	lmk_serve_request r;
	lmk_serve_result a, b, c;
	const char *req = "{\"prompt\":\"xyzabc\",\"temperature\":0}";

	ck_assert_int_eq(lmk_serve_load(&s, tmpdir, 0, 1, LMK_SERVE_REUSE), 0);
	ck_assert_int_eq(lmk_serve_load(&t, tmpdir, 0, 1, 0), 0);
	ck_assert_int_eq(lmk_serve_request_parse(&r, req, strlen(req)), 0);
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &a), 0);
	ck_assert_str_eq(a.text, "d");
	ck_assert_int_eq(s.kv.len, 7); /* the prompt and d; eos was not fed back */
	ck_assert_int_eq(lmk_serve_complete(&s, &r, NULL, NULL, &b), 0);
	ck_assert_int_eq(lmk_serve_complete(&t, &r, NULL, NULL, &c), 0);
	ck_assert_str_eq(a.text, b.text);
	ck_assert_str_eq(a.text, c.text);
	free(a.text);
	free(b.text);
	free(c.text);
	lmk_serve_request_free(&r);
	lmk_serve_free(&s);
	lmk_serve_free(&t);
}
END_TEST

START_TEST(test_load_errors)
{
	lmk_serve s;
	char dir[64], path[128];

	ck_assert_int_eq(lmk_serve_load(&s, "/nonexistent/model.gguf", 0, 1, 0), LMK_EIO);
	ck_assert_str_eq(lmk_errmsg(), "cannot open '/nonexistent/model.gguf': No such file or directory");
	/* a directory without a tokenizer that is not byte-level */
	snprintf(dir, sizeof dir, "/tmp/test_serve.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(lmk_serve_load(&s, dir, 0, 1, 0), LMK_EIO);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "no config.json"));
	make_tiny(dir, 1);
	ck_assert_int_eq(lmk_serve_load(&s, dir, 0, 1, 0), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "no tokenizer.json, and config.json is not that of a byte-level model"));
	rmdir_all(dir);
	/* neither GGUF nor a directory */
	snprintf(path, sizeof path, "%s/config.json", tmpdir);
	ck_assert_int_lt(lmk_serve_load(&s, path, 0, 1, 0), 0);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), path));
}
END_TEST

/* ----------------------------------------------------------------- SmolLM2 */

#define TOL 1e-3

/* Compares our logits (T,V) with the fixture's top-5 of prompt i, from
 * position t0 on. @return : the largest relative error seen */
static double check_top5(const lmk_frame *fx, int i, const float *lg, int T, int t0, int V)
{
	char name[64];
	snprintf(name, sizeof name, "p%d.top_ids", i);
	const lmk_ftensor *ti = lmk_frame_find(fx, name);
	snprintf(name, sizeof name, "p%d.top_logits", i);
	const lmk_ftensor *tl = lmk_frame_find(fx, name);
	ck_assert(ti && tl && ti->dtype == LMK_I32 && tl->dtype == LMK_F32);
	ck_assert_int_eq(ti->shape[0], T);
	ck_assert_int_eq(ti->shape[1], 5);
	double worst = 0;
	for (int t = t0; t < T; t++) {
		int32_t ids[5];
		float ref[5], mx = 0;
		memcpy(ids, (const char *)ti->data + 20 * t, 20);
		memcpy(ref, (const char *)tl->data + 20 * t, 20);
		const float *row = lg + (size_t)(t - t0) * V;
		for (int k = 0; k < 5; k++)
			mx = fmaxf(mx, fabsf(ref[k]));
		for (int k = 0; k < 5; k++) {
			double rel = fabs((double)row[ids[k]] - ref[k]) / mx;
			ck_assert_msg(rel < TOL, "prompt %d position %d: logit of %d is %g, transformers %g",
				      i, t, ids[k], row[ids[k]], ref[k]);
			worst = fmax(worst, rel);
		}
		/* our own top 5, in order; a swap is allowed only between logits
		 * that the tolerance cannot tell apart */
		int ours[5];
		for (int k = 0; k < 5; k++) {
			int best = -1;
			for (int v = 0; v < V; v++) {
				int taken = 0;
				for (int q = 0; q < k; q++)
					taken |= ours[q] == v;
				if (!taken && (best < 0 || row[v] > row[best]))
					best = v;
			}
			ours[k] = best;
			ck_assert_msg(best == ids[k] || fabs(row[best] - ref[k]) < TOL * mx,
				      "prompt %d position %d: top %d is %d (%g), transformers %d (%g)", i, t,
				      k, best, row[best], ids[k], ref[k]);
		}
	}
	return worst;
}

START_TEST(test_smollm2_logits)
{
	char model[1024], fixture[1024];
	snprintf(model, sizeof model, "%s/models/smollm2-135m-instruct.gguf", root());
	snprintf(fixture, sizeof fixture, "%s/tests/fixtures/smollm2-logits/expected.safetensors", root());
	if (access(model, R_OK) != 0) {
		printf("test_serve: skipped smollm2: %s not found (scripts/get-model.sh smollm2-135m-instruct)\n",
		       model);
		return;
	}
	lmk_frame fx;
	ck_assert_msg(lmk_frame_load(fixture, &fx) == 0, "%s", lmk_errmsg());
	ck_assert_str_eq(lmk_frame_meta(&fx, "kind"), "smollm2-logits");
	lmk_serve s;
	ck_assert_msg(lmk_serve_load(&s, model, 0, 1, 0) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(s.source, LMK_SERVE_GGUF);
	ck_assert_int_eq(s.chat.kind, LMK_CHAT_CHATML);
	const int V = s.m.cfg.vocab_size;
	double worst = 0, worst_dec = 0;
	int positions = 0, i;
	for (i = 0;; i++) {
		char name[64];
		snprintf(name, sizeof name, "p%d.ids", i);
		const lmk_ftensor *ti = lmk_frame_find(&fx, name);
		if (!ti)
			break;
		ck_assert_int_eq(ti->dtype, LMK_I32);
		int T = (int)ti->shape[0];
		int32_t *ids = malloc(sizeof *ids * (size_t)T);
		float *lg = malloc(sizeof *lg * (size_t)T * V);
		ck_assert(ids && lg);
		memcpy(ids, ti->data, sizeof *ids * (size_t)T);
		/* the whole forward pass */
		ck_assert_msg(lmk_serve_logits(&s, ids, T, lg) == 0, "%s", lmk_errmsg());
		worst = fmax(worst, check_top5(&fx, i, lg, T, 0, V));
		/* the decoder: the prompt but its last token at once, then that one */
		s.kv.len = 0;
		if (T > 1)
			ck_assert(lmk_llama_decode(&s.c, &s.m, &s.kv, ids, T - 1, lg) == 0);
		lmk_ctx_reset(&s.c);
		ck_assert(lmk_llama_decode(&s.c, &s.m, &s.kv, ids + T - 1, 1, lg) == 0);
		lmk_ctx_reset(&s.c);
		worst_dec = fmax(worst_dec, check_top5(&fx, i, lg, T, T - 1, V));
		positions += T;
		free(ids);
		free(lg);
	}
	ck_assert_int_ge(i, 3);
	printf("test_serve: smollm2: %d prompts, %d positions: top-5 ids as transformers', logits "
	       "within %.2g relative (forward), %.2g (decoder, last positions)\n", i, positions, worst,
	       worst_dec);
	fflush(stdout);
	lmk_serve_free(&s);
	lmk_frame_free(&fx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("serve");
	TCase *tc = tcase_create("requests");
	tcase_add_test(tc, test_parse_ok);
	tcase_add_loop_test(tc, test_parse_bad, 0, sizeof bad_cases / sizeof bad_cases[0]);
	tcase_add_test(tc, test_parse_bad_keeps_id);
	suite_add_tcase(s, tc);
	tc = tcase_create("generate");
	tcase_add_checked_fixture(tc, tiny_setup, tiny_teardown);
	tcase_add_loop_test(tc, test_generate, 0, sizeof gen_cases / sizeof gen_cases[0]);
	tcase_add_test(tc, test_piece_ids_and_stop);
	tcase_add_test(tc, test_context);
	tcase_add_test(tc, test_chat_needs_template);
	tcase_add_test(tc, test_sampling);
	tcase_add_test(tc, test_reuse);
	tcase_add_test(tc, test_load_errors);
	suite_add_tcase(s, tc);
	tc = tcase_create("smollm2");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_smollm2_logits);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
