/* fuzz_serve.c: libFuzzer target for serving requests (lib/serve).
 * An input is one request line. Whatever parses is checked for the parser's
 * promises (exactly one of prompt and messages, stop strings non-empty) and
 * then served, at most 24 tokens, by a tiny byte-level model with random
 * weights (written once to a temporary directory and loaded as an lla-train
 * checkpoint, plain prompting allowed): sampled bytes are arbitrary, so the
 * text held back for stop strings and UTF-8, the pieces and U+FFFD all get
 * exercised. Checked: the pieces are valid UTF-8 and make the text, the text
 * is valid UTF-8, holds no stop string (one without U+FFFD in it), and the
 * counts and finish reason agree. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "bytetok.h"
#include "ckpt.h"
#include "err.h"
#include "serve.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define MAX_NEW 24

static lmk_serve server;
static char dir[64];

static void cleanup(void)
{
	char p[128];
	lmk_serve_free(&server);
	snprintf(p, sizeof p, "%s/config.json", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	unlink(p);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lmk_llama_config cfg;
	lmk_llama m;

	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 16;
	cfg.num_hidden_layers = 1;
	cfg.num_attention_heads = 2;
	cfg.num_key_value_heads = 1;
	cfg.head_dim = 8;
	cfg.intermediate_size = 32;
	cfg.vocab_size = LMK_BYTETOK_VOCAB;
	cfg.max_position_embeddings = 256;
	cfg.bos_token_id = LMK_BYTETOK_BOS;
	cfg.eos_token_id[0] = LMK_BYTETOK_EOS;
	cfg.neos = 1;
	cfg.initializer_range = 1.0f; /* far from uniform, yet every byte comes */
	snprintf(dir, sizeof dir, "/tmp/fuzz_serve.XXXXXX");
	CHECK(mkdtemp(dir));
	CHECK(lmk_llama_init(&m, &cfg, 0) == 0);
	lmk_llama_init_weights(&m, 1);
	CHECK(lmk_ckpt_save(dir, &m, LMK_F32) == 0);
	lmk_llama_free(&m);
	CHECK(lmk_serve_load(&server, dir, 0, 1, LMK_SERVE_PLAIN) == LMK_SERVE_FELL_BACK);
	atexit(cleanup);
	return 0;
}

struct pieces {
	char *s;
	size_t n;
};

static int on_piece(void *arg, const char *text, size_t len, int32_t id)
{
	struct pieces *p = arg;
	json_t *j = json_stringn(text, len);
	CHECK(len > 0 && j);
	json_decref(j);
	p->s = realloc(p->s, p->n + len + 1);
	CHECK(p->s);
	memcpy(p->s + p->n, text, len);
	p->n += len;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lmk_serve_request r;
	lmk_serve_result res;
	struct pieces p = {NULL, 0};

	if (lmk_serve_request_parse(&r, (const char *)data, size) < 0) {
		CHECK(lmk_errmsg()[0]);
		lmk_serve_request_free(&r);
		return 0;
	}
	CHECK(!r.prompt != !r.msgs);
	CHECK(r.nstop >= 0 && r.nstop <= LMK_SERVE_MAX_STOP);
	for (int i = 0; i < r.nstop; i++)
		CHECK(r.stop[i][0]);
	if (r.max_tokens < 0 || r.max_tokens > MAX_NEW)
		r.max_tokens = MAX_NEW;
	int rc = lmk_serve_complete(&server, &r, on_piece, &p, &res);
	if (rc < 0) {
		CHECK(rc == LMK_EINVAL); /* a prompt longer than the cache */
		free(p.s);
		lmk_serve_request_free(&r);
		return 0;
	}
	json_t *j = json_stringn(res.text, res.len);
	CHECK(j);
	json_decref(j);
	CHECK(p.n == res.len && (res.len == 0 || !memcmp(p.s, res.text, res.len)));
	for (int i = 0; i < r.nstop; i++)
		if (!strstr(r.stop[i], "\xef\xbf\xbd"))
			CHECK(!memmem(res.text, res.len, r.stop[i], strlen(r.stop[i])));
	CHECK(res.tokens <= r.max_tokens);
	CHECK(!strcmp(res.finish_reason, "stop") || !strcmp(res.finish_reason, "length"));
	CHECK(res.prompt_tokens >= 1);
	free(res.text);
	free(p.s);
	lmk_serve_request_free(&r);
	return 0;
}
