/* fuzz_gguf.c: libFuzzer target for GGUF files. The input is parsed from
 * memory (lmk_gguf_parse); when it parses, every metadata value is read
 * through the getters, every byte a value or tensor points at is touched
 * (ASan checks it lies inside the input), every tensor of a type we can
 * dequantize is dequantized (float32 and bf16), and a Llama config is read from it; when that
 * config describes a small model, the model is loaded too. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "llama.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static unsigned touch(const void *p, size_t n)
{
	const unsigned char *c = p;
	unsigned h = 0;
	for (size_t i = 0; i < n; i++)
		h = h * 31 + c[i];
	return h;
}

static int inside(const lmk_gguf *g, const void *p, size_t n)
{
	const unsigned char *c = p;
	return c >= g->map && c <= g->map + g->size && n <= (size_t)(g->map + g->size - c);
}

static unsigned check_kv(const lmk_gguf *g, const lmk_gguf_kv *kv)
{
	unsigned h = touch(kv->key, strlen(kv->key));
	int64_t i;
	float f;
	char *s;

	CHECK(lmk_gguf_find(g, kv->key) == kv);
	if (kv->type == LMK_GGUF_STRING) {
		CHECK(inside(g, kv->strs->s, kv->strs->len));
		h += touch(kv->strs->s, kv->strs->len);
		CHECK(lmk_gguf_get_str(g, kv->key, &s) == 0);
		free(s);
	} else if (kv->type != LMK_GGUF_ARRAY) {
		size_t sz = lmk_gguf_vtype_size(kv->type);
		CHECK(sz > 0 && inside(g, kv->data, sz));
		h += touch(kv->data, sz);
		if (lmk_gguf_get_i64(g, kv->key, &i) == 0)
			h += (unsigned)i;
		if (lmk_gguf_get_f32(g, kv->key, &f) == 0)
			h += (unsigned)isnan(f);
		CHECK(lmk_gguf_get_str(g, kv->key, &s) == LMK_EFORMAT);
	} else if (kv->atype == LMK_GGUF_STRING) {
		for (uint64_t k = 0; k < kv->n; k++) {
			const lmk_gguf_str *gs = lmk_gguf_arr_str(kv, k);
			CHECK(gs != NULL && inside(g, gs->s, gs->len));
			h += touch(gs->s, gs->len);
		}
		CHECK(lmk_gguf_arr_str(kv, kv->n) == NULL);
	} else if (kv->atype != LMK_GGUF_ARRAY) {
		size_t sz = lmk_gguf_vtype_size(kv->atype);
		CHECK(sz > 0 && kv->n <= g->size / sz && inside(g, kv->data, kv->n * sz));
		h += touch(kv->data, kv->n * sz);
		if (kv->n) {
			if (lmk_gguf_arr_i64(kv, kv->n - 1, &i) == 0)
				h += (unsigned)i;
			if (lmk_gguf_arr_f32(kv, 0, &f) == 0)
				h += (unsigned)isnan(f);
		}
		CHECK(lmk_gguf_arr_i64(kv, kv->n, &i) == LMK_EFORMAT);
	}
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lmk_gguf g;
	volatile unsigned sink = 0;

	if (lmk_gguf_parse(&g, data, size, "fuzz") != 0) {
		CHECK(lmk_errmsg()[0] != 0);
		CHECK(g.kv == NULL && g.t == NULL && g.path == NULL);
		return 0;
	}
	CHECK(g.alignment > 0 && (g.alignment & (g.alignment - 1)) == 0);
	for (int i = 0; i < g.nkv; i++)
		sink += check_kv(&g, &g.kv[i]);
	for (int i = 0; i < g.ntensors; i++) {
		const lmk_gguf_tensor *t = &g.t[i];
		CHECK(lmk_gguf_find_tensor(&g, t->name) == t);
		CHECK(t->offset % g.alignment == 0);
		CHECK(inside(&g, t->data, t->nbytes));
		int64_t n = lmk_gguf_tensor_numel(t);
		CHECK(n >= 0);
		int be = lmk_ggml_block_elems(t->type);
		CHECK(be > 0 && n % be == 0);
		CHECK((uint64_t)(n / be) * lmk_ggml_block_bytes(t->type) == t->nbytes);
		sink += touch(t->data, t->nbytes);
		if (!lmk_ggml_can_dequantize(t->type)) {
			float y;
			CHECK(lmk_gguf_tensor_f32(t, &y) == LMK_EUNSUP);
			continue;
		}
		if (n > (1 << 24))
			continue;
		/* sentinels after the output catch writes past numel */
		float *y = malloc((size_t)(n + 4) * sizeof *y);
		CHECK(y != NULL);
		for (int k = 0; k < 4; k++)
			y[n + k] = 12345.0f;
		CHECK(lmk_gguf_tensor_f32(t, y) == 0);
		for (int k = 0; k < 4; k++)
			CHECK(y[n + k] == 12345.0f);
		sink += touch(y, (size_t)n * sizeof *y);
		uint16_t *h = malloc((size_t)(n + 1) * sizeof *h);
		CHECK(h != NULL);
		CHECK(lmk_gguf_tensor_bf16(t, h) == 0);
		for (int64_t k = 0; k < n; k++)
			CHECK(h[k] == lmk_f32_to_bf16(y[k]) || (isnan(y[k]) && t->type == LMK_GGML_BF16));
		free(h);
		free(y);
	}

	lmk_llama_config cfg;
	if (lmk_gguf_llama_config(&g, &cfg) == 0) {
		int64_t C = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size;
		int64_t L = cfg.num_hidden_layers, D = cfg.head_dim;
		int64_t H = cfg.num_attention_heads, K = cfg.num_key_value_heads;
		/* only small models: a hostile config may ask for terabytes */
		if (C < 4096 && F < 4096 && V < 65536 && L < 64 && D * H < 4096 && D * K < 4096 &&
		    V * C + L * (C * D * (H + K) * 2 + 3 * C * F) < (1 << 22)) {
			lmk_llama m;
			if (lmk_gguf_llama_load(&g, &m, 0) == 0) {
				sink += touch(m.params.data, m.params.n * sizeof(float));
				lmk_llama_free(&m);
			}
		}
	}
	lmk_gguf_close(&g);
	(void)sink;
	return 0;
}
