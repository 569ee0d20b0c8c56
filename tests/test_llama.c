/* test_llama.c: the Llama model, its checkpoints and its sampler.
 * Against transformers (tests/fixtures, made by scripts/make-fixture.py):
 * logits, loss, every parameter's gradient and ten AdamW steps, each within
 * a relative error ||a - b|| / ||b|| of 1e-4. Then: KV-cache decoding equals
 * the full forward, checkpoints round-trip (F32 exactly, F16/BF16 closely,
 * sharded), bad checkpoints and configs are refused with clear messages, and
 * the sampler's modes do what they say.
 * Fixtures are found under $LMK_ROOT (the repository, set by
 * scripts/run-tests.sh), else the current directory. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "err.h"
#include "frame.h"
#include "llama.h"
#include "optim.h"

#define TOL 1e-4

static char *fixture(const char *name, const char *file)
{
	static char buf[4][1024];
	static int k;
	const char *root = getenv("LMK_ROOT");
	char *b = buf[k++ % 4];
	snprintf(b, sizeof buf[0], "%s/tests/fixtures/%s%s%s", root && *root ? root : ".", name,
		 file ? "/" : "", file ? file : "");
	return b;
}

static double relerr(const float *a, const float *b, int64_t n)
{
	double num = 0, den = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = (double)a[i] - b[i];
		if (isnan(a[i]) || isnan(b[i]))
			return INFINITY;
		num += d * d;
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A tensor of the frame as float32 (tensors may be unaligned). */
static float *get_f32(const lmk_frame *f, const char *name, int64_t *n)
{
	const lmk_ftensor *t = lmk_frame_find(f, name);
	ck_assert_msg(t != NULL, "expected.safetensors: no tensor '%s'", name);
	int64_t k = lmk_ftensor_numel(t);
	float *d = malloc((size_t)k * sizeof(float) + 1);
	lmk_dtype_to_f32(t->dtype, t->data, d, (size_t)k);
	if (n)
		*n = k;
	return d;
}

static int32_t *get_i32(const lmk_frame *f, const char *name, int64_t shape[2])
{
	const lmk_ftensor *t = lmk_frame_find(f, name);
	ck_assert_msg(t && t->dtype == LMK_I32 && t->ndim == 2, "no I32 (B,T) '%s'", name);
	int32_t *d = malloc(t->nbytes);
	memcpy(d, t->data, t->nbytes);
	shape[0] = t->shape[0];
	shape[1] = t->shape[1];
	return d;
}

static void load(const char *dir, lmk_llama *m, int trainable)
{
	int rc = lmk_ckpt_load(dir, m, trainable);
	ck_assert_msg(rc == 0, "%s", lmk_errmsg());
}

static void load_expected(const char *name, lmk_frame *ex)
{
	lmk_frame_init(ex);
	int rc = lmk_frame_load(fixture(name, "expected.safetensors"), ex);
	ck_assert_msg(rc == 0, "%s", lmk_errmsg());
}

/* ---- against transformers --------------------------------------------- */

static const char *variants[] = {"tiny", "tiny-tied"};

START_TEST(test_fixture)
{
	const char *name = variants[_i];
	lmk_llama m;
	lmk_frame ex;
	lmk_ctx c;
	int64_t is[2], ls[2], n, cnt;
	char gname[256];

	load(fixture(name, NULL), &m, 1);
	load_expected(name, &ex);
	int32_t *ids = get_i32(&ex, "ids", is), *lab = get_i32(&ex, "labels", ls);
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);

	lmk_tensor *idt = lmk_tensor_wrap(&c, LMK_I32, 2, is, ids);
	lmk_tensor *lt = lmk_tensor_wrap(&c, LMK_I32, 2, ls, lab);
	lmk_tensor *logits = lmk_llama_forward(&c, &m, idt, NULL, NULL);
	ck_assert_msg(logits != NULL, "%s", lmk_errmsg());
	lmk_tensor *loss = lmk_cross_entropy(&c, logits, lt, -100, &cnt);
	ck_assert_msg(loss != NULL, "%s", lmk_errmsg());
	ck_assert_int_eq(logits->ndim, 3);
	ck_assert_int_eq(logits->shape[2], m.cfg.vocab_size);

	float *want = get_f32(&ex, "logits", &n);
	ck_assert_int_eq(n, logits->n);
	double e_logits = relerr(logits->data, want, n);
	free(want);
	want = get_f32(&ex, "loss", NULL);
	double e_loss = relerr(loss->data, want, 1);
	free(want);

	lmk_params_zero_grad(&m.params);
	ck_assert_msg(lmk_backward(&c, loss, 1.0f) == 0, "%s", lmk_errmsg());
	double e_grad = 0;
	const char *worst = "";
	int ngrad = 0;
	for (int i = 0; i < ex.ntensors; i++)
		ngrad += strncmp(ex.t[i].name, "grad.", 5) == 0;
	ck_assert_int_eq(ngrad, m.params.nt);
	for (int i = 0; i < m.params.nt; i++) {
		lmk_tensor *t = &m.params.t[i];
		snprintf(gname, sizeof gname, "grad.%s", t->name);
		want = get_f32(&ex, gname, &n);
		ck_assert_int_eq(n, t->n);
		double e = relerr(t->grad, want, n);
		ck_assert_msg(e < TOL, "%s: gradient of %s: relative error %.3g", name, t->name, e);
		if (e > e_grad) {
			e_grad = e;
			worst = t->name;
		}
		free(want);
	}
	want = get_f32(&ex, "grad_norm", NULL);
	double gn = lmk_clip_grad_norm(&m.params, 0);
	double e_norm = fabs(gn - want[0]) / want[0];
	free(want);
	ck_assert_msg(e_logits < TOL, "%s: logits: relative error %.3g", name, e_logits);
	ck_assert_msg(e_loss < TOL, "%s: loss: relative error %.3g", name, e_loss);
	ck_assert_msg(e_norm < TOL, "%s: gradient norm: relative error %.3g", name, e_norm);

	/* ten AdamW steps as the script takes them */
	lmk_adamw o;
	lmk_adamw_config oc = {0.9f, 0.95f, 1e-8f, 0.1f};
	ck_assert_int_eq(lmk_adamw_init(&o, &m.params, &oc), 0);
	float losses[10];
	for (int s = 0; s < 10; s++) {
		lmk_ctx_reset(&c);
		lmk_params_zero_grad(&m.params);
		idt = lmk_tensor_wrap(&c, LMK_I32, 2, is, ids);
		lt = lmk_tensor_wrap(&c, LMK_I32, 2, ls, lab);
		loss = lmk_cross_entropy(&c, lmk_llama_forward(&c, &m, idt, NULL, NULL), lt, -100,
					 NULL);
		ck_assert_msg(loss != NULL, "%s", lmk_errmsg());
		losses[s] = *(float *)loss->data;
		ck_assert_int_eq(lmk_backward(&c, loss, 1.0f), 0);
		lmk_clip_grad_norm(&m.params, 1.0);
		lmk_adamw_step(&o, 1e-3f);
	}
	want = get_f32(&ex, "adamw_losses", &n);
	ck_assert_int_eq(n, 10);
	double e_adamw = 0;
	for (int s = 0; s < 10; s++) {
		double e = fabs(losses[s] - want[s]) / fabs(want[s]);
		ck_assert_msg(e < TOL, "%s: AdamW step %d: loss %.7g, torch %.7g", name, s,
			      losses[s], want[s]);
		if (e > e_adamw)
			e_adamw = e;
	}
	free(want);
	printf("test_llama: %s: relative errors: logits %.2e, loss %.2e, gradients %.2e "
	       "(worst %s), gradient norm %.2e, adamw losses %.2e (max over 10 steps)\n",
	       name, e_logits, e_loss, e_grad, worst, e_norm, e_adamw);
	lmk_adamw_free(&o);
	lmk_ctx_free(&c);
	free(ids);
	free(lab);
	lmk_frame_free(&ex);
	lmk_llama_free(&m);
}
END_TEST

/* ---- KV cache --------------------------------------------------------- */

START_TEST(test_decode)
{
	const char *name = variants[_i];
	lmk_llama m;
	lmk_frame ex;
	lmk_ctx c;
	lmk_kvcache kv;
	int64_t is[2];

	load(fixture(name, NULL), &m, 0);
	load_expected(name, &ex);
	int32_t *ids = get_i32(&ex, "ids", is);
	const int T = (int)is[1], V = m.cfg.vocab_size;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	int64_t one[2] = {1, T};
	/* row 1 of the batch, so that a stride bug cannot hide behind row 0 */
	lmk_tensor *full = lmk_llama_forward(&c, &m, lmk_tensor_wrap(&c, LMK_I32, 2, one, ids + T),
					     NULL, NULL);
	ck_assert_msg(full != NULL, "%s", lmk_errmsg());
	float *want = malloc(sizeof(float) * (size_t)T * V), *got = malloc(sizeof(float) * V);
	memcpy(want, full->data, sizeof(float) * (size_t)T * V);
	lmk_ctx_reset(&c);

	/* a prompt of 4, then one token at a time */
	ck_assert_int_eq(lmk_kvcache_init(&kv, &m, T), 0);
	double worst = 0;
	int chunks[] = {4, 1, 1, 2, 1};
	for (int at = 0, k = 0; at < T; at += chunks[k++]) {
		int rc = lmk_llama_decode(&c, &m, &kv, ids + T + at, chunks[k], got);
		ck_assert_msg(rc == 0, "%s", lmk_errmsg());
		lmk_ctx_reset(&c);
		int last = at + chunks[k] - 1;
		ck_assert_int_eq(kv.len, last + 1);
		double e = relerr(got, want + (size_t)last * V, V);
		ck_assert_msg(e < 1e-5, "%s: position %d: relative error %.3g", name, last, e);
		if (e > worst)
			worst = e;
	}
	/* full: one more token overflows */
	ck_assert_int_eq(lmk_llama_decode(&c, &m, &kv, ids, 1, got), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "overflow"));
	lmk_kvcache_free(&kv);

	/* the whole sequence at once, with grad enabled in the context */
	ck_assert_int_eq(lmk_kvcache_init(&kv, &m, T + 3), 0);
	ck_assert_int_eq(lmk_llama_decode(&c, &m, &kv, ids + T, T, got), 0);
	ck_assert_int_eq(c.grad_enabled, 1);
	ck_assert_int_eq(c.ntape, 0);
	ck_assert(relerr(got, want + (size_t)(T - 1) * V, V) < 1e-5);
	/* a token outside the vocabulary fails and leaves the cache as it was */
	lmk_ctx_reset(&c);
	int32_t bad[2] = {1, V};
	ck_assert_int_lt(lmk_llama_decode(&c, &m, &kv, bad, 2, got), 0);
	ck_assert_ptr_null(strstr(lmk_errmsg(), "overflow"));
	ck_assert_int_eq(kv.len, T);
	lmk_kvcache_free(&kv);
	printf("test_llama: %s: kv-cache decode vs full forward: max relative error %.2e\n",
	       name, worst);

	free(want);
	free(got);
	free(ids);
	lmk_ctx_free(&c);
	lmk_frame_free(&ex);
	lmk_llama_free(&m);
}
END_TEST

/* Decoding the rows of a batch together, each at its own position (their
 * prompts of different lengths), gives each row's logits of the full
 * forward; shared or full caches are refused. */
START_TEST(test_decode_batch)
{
	const char *name = variants[_i];
	lmk_llama m;
	lmk_frame ex;
	lmk_ctx c;
	int64_t is[2];

	load(fixture(name, NULL), &m, 0);
	load_expected(name, &ex);
	int32_t *ids = get_i32(&ex, "ids", is);
	const int B = (int)is[0], T = (int)is[1], V = m.cfg.vocab_size;
	ck_assert_int_ge(B, 2);
	ck_assert_int_ge(T, B + 2);
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *full = lmk_llama_forward(&c, &m, lmk_tensor_wrap(&c, LMK_I32, 2, is, ids),
					     NULL, NULL);
	ck_assert_msg(full != NULL, "%s", lmk_errmsg());
	float *want = malloc(sizeof(float) * (size_t)B * T * V);
	float *got = malloc(sizeof(float) * (size_t)B * V);
	lmk_kvcache *kv = calloc((size_t)B, sizeof *kv), **kvp = calloc((size_t)B, sizeof *kvp);
	int32_t *tok = malloc(sizeof(int32_t) * (size_t)B);
	ck_assert(want && got && kv && kvp && tok);
	memcpy(want, full->data, sizeof(float) * (size_t)B * T * V);
	lmk_ctx_reset(&c);

	/* row b: a prompt of b + 1 tokens */
	for (int b = 0; b < B; b++) {
		ck_assert_int_eq(lmk_kvcache_init(&kv[b], &m, T), 0);
		ck_assert_int_eq(lmk_llama_decode(&c, &m, &kv[b], ids + (size_t)b * T, b + 1, got), 0);
		lmk_ctx_reset(&c);
	}
	double worst = 0;
	for (int step = 0;; step++) {
		int n = 0;
		int row[64];
		for (int b = 0; b < B && n < 64; b++)
			if (kv[b].len < T) {
				row[n] = b;
				kvp[n] = &kv[b];
				tok[n++] = ids[(size_t)b * T + kv[b].len];
			}
		if (n == 0)
			break;
		int rc = lmk_llama_decode_batch(&c, &m, kvp, tok, n, got);
		ck_assert_msg(rc == 0, "%s: step %d: %s", name, step, lmk_errmsg());
		lmk_ctx_reset(&c);
		for (int j = 0; j < n; j++) {
			int b = row[j], at = kv[b].len - 1;
			double e = relerr(got + (size_t)j * V, want + ((size_t)b * T + at) * V, V);
			ck_assert_msg(e < 1e-5, "%s: row %d, position %d: relative error %.3g", name, b,
				      at, e);
			if (e > worst)
				worst = e;
		}
	}
	/* full caches, and one cache twice */
	kvp[0] = &kv[0];
	ck_assert_int_eq(lmk_llama_decode_batch(&c, &m, kvp, tok, 1, got), LMK_EINVAL);
	kv[0].len = 0;
	kvp[1] = &kv[0];
	ck_assert_int_eq(lmk_llama_decode_batch(&c, &m, kvp, tok, 2, got), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "share a cache"));
	ck_assert_int_eq(lmk_llama_decode_batch(&c, &m, kvp, tok, 0, got), LMK_EINVAL);
	printf("test_llama: %s: %d rows decoded together: max relative error %.2e\n", name, B,
	       worst);
	for (int b = 0; b < B; b++)
		lmk_kvcache_free(&kv[b]);
	free(kv);
	free(kvp);
	free(tok);
	free(want);
	free(got);
	free(ids);
	lmk_ctx_free(&c);
	lmk_frame_free(&ex);
	lmk_llama_free(&m);
}
END_TEST

/* A model whose blocks mix with each token mixer decodes with the layers'
 * states: a 3-token prompt, then one token at a time, every position's
 * logits those of the full forward; generate gives the full forward's
 * greedy tokens; a cache made for attention is refused. */
START_TEST(test_decode_mixer)
{
	const int kind = _i, T = 12, V = 61;
	lmk_llama_config cfg;
	lmk_llama m;
	lmk_ctx c;
	lmk_kvcache kv;

	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 64;
	cfg.intermediate_size = 96;
	cfg.num_hidden_layers = 2;
	cfg.num_attention_heads = 2;
	cfg.num_key_value_heads = 2;
	cfg.head_dim = 32;
	cfg.vocab_size = V;
	cfg.neos = 0;
	cfg.bos_token_id = -1;
	cfg.tie_word_embeddings = 1;
	cfg.mixer = 1 + kind;
	lmk_mixer_defaults(&cfg.mix, kind, cfg.hidden_size);
	cfg.mix.chunk = 4; /* several chunks in the forward, a ragged last one */
	cfg.mix.init_std = 0.2f;
	ck_assert_msg(lmk_llama_init(&m, &cfg, 0) == 0, "%s", lmk_errmsg());
	lmk_llama_init_weights(&m, 77 + (uint64_t)kind);
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	int32_t ids[12];
	for (int i = 0; i < T; i++)
		ids[i] = (int32_t)((i * 37 + 5) % V);
	int64_t one[2] = {1, T};
	lmk_tensor *full = lmk_llama_forward(&c, &m, lmk_tensor_wrap(&c, LMK_I32, 2, one, ids), NULL,
					     NULL);
	ck_assert_msg(full != NULL, "%s", lmk_errmsg());
	float *want = malloc(sizeof(float) * (size_t)T * V), *got = malloc(sizeof(float) * V);
	memcpy(want, full->data, sizeof(float) * (size_t)T * V);
	lmk_ctx_reset(&c);
	ck_assert_int_eq(lmk_kvcache_init(&kv, &m, T), 0);
	ck_assert_int_eq(kv.nmix, 2);
	double worst = 0;
	for (int at = 0; at < T;) {
		int n = at == 0 ? 3 : 1;
		lmk_ctx_reset(&c);
		ck_assert_msg(lmk_llama_decode(&c, &m, &kv, ids + at, n, got) == 0, "%s: %s",
			      lmk_mixer_kind_name(kind), lmk_errmsg());
		at += n;
		double e = relerr(got, want + (size_t)(at - 1) * V, V);
		worst = e > worst ? e : worst;
		ck_assert_msg(e < 1e-5, "%s: position %d: relative error %.3g",
			      lmk_mixer_kind_name(kind), at - 1, e);
	}
	ck_assert_int_eq(lmk_llama_decode(&c, &m, &kv, ids, 1, got), LMK_EINVAL); /* full */
	lmk_kvcache_free(&kv);
	/* greedy generation: each token the argmax of the full forward over
	 * the sequence so far */
	int32_t out[6], seq[12];
	memcpy(seq, ids, 4 * sizeof *seq);
	lmk_sampler sm = {.temperature = 0, .top_k = 0, .top_p = 1};
	ck_assert_int_eq(lmk_llama_generate(&c, &m, ids, 4, 6, &sm, NULL, 0, NULL, NULL, out), 6);
	for (int s = 0; s < 6; s++) {
		int64_t sh[2] = {1, 4 + s};
		lmk_ctx_reset(&c);
		lmk_tensor *f = lmk_llama_forward(&c, &m, lmk_tensor_wrap(&c, LMK_I32, 2, sh, seq),
						  NULL, NULL);
		ck_assert_ptr_nonnull(f);
		const float *row = (const float *)f->data + (size_t)(3 + s) * V;
		int best = 0;
		for (int v = 1; v < V; v++)
			if (row[v] > row[best])
				best = v;
		ck_assert_msg(out[s] == best, "%s: token %d: %d, the forward's argmax %d",
			      lmk_mixer_kind_name(kind), s, out[s], best);
		seq[4 + s] = out[s];
	}
	/* a cache for another model */
	lmk_llama a;
	cfg.mixer = 0;
	ck_assert_int_eq(lmk_llama_init(&a, &cfg, 0), 0);
	ck_assert_int_eq(lmk_kvcache_init(&kv, &a, 4), 0);
	lmk_ctx_reset(&c);
	ck_assert_int_eq(lmk_llama_decode(&c, &m, &kv, ids, 1, got), LMK_EINVAL);
	lmk_kvcache_free(&kv);
	lmk_llama_free(&a);
	printf("test_llama: %s blocks: decoding with the layers' states against the forward: "
	       "max relative error %.2e\n", lmk_mixer_kind_name(kind), worst);
	free(want);
	free(got);
	lmk_ctx_free(&c);
	lmk_llama_free(&m);
}
END_TEST

/* Greedy generation equals the argmax of a full forward over the growing
 * sequence; eos and the callback stop it. */
static int stop_after_two(void *arg, int32_t tok)
{
	int *n = arg;
	(void)tok;
	return ++*n == 2;
}

START_TEST(test_generate)
{
	lmk_llama m;
	lmk_ctx c;
	lmk_sampler s = {0};
	int32_t seq[32] = {5, 17, 99, 3}, out[16];
	const int np = 4, nn = 6;

	load(fixture("tiny", NULL), &m, 0);
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	m.cfg.neos = 0; /* no stop token: the random model may pick 2 */
	int n = lmk_llama_generate(&c, &m, seq, np, nn, &s, NULL, 0, NULL, NULL, out);
	ck_assert_msg(n == nn, "%d: %s", n, lmk_errmsg());
	for (int t = np; t < np + nn; t++) {
		int64_t shape[2] = {1, t};
		lmk_ctx_reset(&c);
		lmk_tensor *y = lmk_llama_forward(&c, &m, lmk_tensor_wrap(&c, LMK_I32, 2, shape, seq),
						  NULL, NULL);
		ck_assert_ptr_nonnull(y);
		const float *row = (const float *)y->data + (size_t)(t - 1) * m.cfg.vocab_size;
		int best = 0;
		for (int v = 1; v < m.cfg.vocab_size; v++)
			if (row[v] > row[best])
				best = v;
		ck_assert_int_eq(out[t - np], best);
		seq[t] = best;
	}
	/* eos of the caller, and of the config */
	int32_t eos = out[2];
	int32_t out2[16];
	n = lmk_llama_generate(&c, &m, seq, np, nn, &s, &eos, 1, NULL, NULL, out2);
	ck_assert_int_ge(n, 1);
	ck_assert_int_le(n, 3);
	ck_assert_int_eq(out2[n - 1], eos);
	m.cfg.neos = 1;
	m.cfg.eos_token_id[0] = out[1];
	n = lmk_llama_generate(&c, &m, seq, np, nn, &s, NULL, 0, NULL, NULL, out2);
	ck_assert_int_le(n, 2);
	ck_assert_int_eq(out2[n - 1], out[1]);
	m.cfg.neos = 0;
	int calls = 0;
	n = lmk_llama_generate(&c, &m, seq, np, nn, &s, NULL, 0, stop_after_two, &calls, out2);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(calls, 2);
	ck_assert_int_eq(lmk_llama_generate(&c, &m, seq, np, 0, &s, NULL, 0, NULL, NULL, out2), 0);
	ck_assert_int_eq(lmk_llama_generate(&c, &m, seq, 0, 3, &s, NULL, 0, NULL, NULL, out2),
			 LMK_EINVAL);
	lmk_ctx_free(&c);
	lmk_llama_free(&m);
}
END_TEST

/* ---- checkpoints ------------------------------------------------------ */

static char tmpdir[256];

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[1024];
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			rm_rf(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void setup_tmp(void)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/test_llama.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown_tmp(void) { rm_rf(tmpdir); }

static char *tpath(const char *a, const char *b)
{
	static char buf[4][1024];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, sizeof buf[0], "%s/%s%s%s", tmpdir, a, b ? "/" : "", b ? b : "");
	return p;
}

static void same_config(const lmk_llama_config *a, const lmk_llama_config *b)
{
	ck_assert_str_eq(a->model_type, b->model_type);
	ck_assert_int_eq(a->hidden_size, b->hidden_size);
	ck_assert_int_eq(a->intermediate_size, b->intermediate_size);
	ck_assert_int_eq(a->num_hidden_layers, b->num_hidden_layers);
	ck_assert_int_eq(a->num_attention_heads, b->num_attention_heads);
	ck_assert_int_eq(a->num_key_value_heads, b->num_key_value_heads);
	ck_assert_int_eq(a->head_dim, b->head_dim);
	ck_assert_int_eq(a->vocab_size, b->vocab_size);
	ck_assert_int_eq(a->max_position_embeddings, b->max_position_embeddings);
	ck_assert_float_eq(a->rms_norm_eps, b->rms_norm_eps);
	ck_assert_float_eq(a->rope_theta, b->rope_theta);
	ck_assert_int_eq(a->rope_scaling.type, b->rope_scaling.type);
	ck_assert_float_eq(a->rope_scaling.factor, b->rope_scaling.factor);
	ck_assert_float_eq(a->rope_scaling.low_freq_factor, b->rope_scaling.low_freq_factor);
	ck_assert_float_eq(a->rope_scaling.high_freq_factor, b->rope_scaling.high_freq_factor);
	ck_assert_int_eq(a->rope_scaling.original_max_pos, b->rope_scaling.original_max_pos);
	ck_assert_int_eq(a->tie_word_embeddings, b->tie_word_embeddings);
	ck_assert_int_eq(a->attention_bias, b->attention_bias);
	ck_assert_int_eq(a->mlp_bias, b->mlp_bias);
	ck_assert_float_eq(a->initializer_range, b->initializer_range);
	ck_assert_int_eq(a->bos_token_id, b->bos_token_id);
	ck_assert_int_eq(a->neos, b->neos);
	for (int i = 0; i < a->neos; i++)
		ck_assert_int_eq(a->eos_token_id[i], b->eos_token_id[i]);
}

START_TEST(test_roundtrip)
{
	const char *name = variants[_i];
	lmk_llama a, b;
	static const struct { lmk_dtype dt; double tol; const char *torch; } dts[] = {
		{LMK_F32, 0, "float32"}, {LMK_BF16, 1.0 / 256, "bfloat16"},
		{LMK_F16, 1.0 / 2048, "float16"},
	};
	load(fixture(name, NULL), &a, 1);
	ck_assert(a.cfg.tie_word_embeddings ? a.lm_head == a.wte : a.lm_head != a.wte);
	for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
		char *dir = tpath(lmk_dtype_name(dts[k].dt), "sub/dir");
		int rc = lmk_ckpt_save(dir, &a, dts[k].dt);
		ck_assert_msg(rc == 0, "%s", lmk_errmsg());
		load(dir, &b, 0);
		same_config(&a.cfg, &b.cfg);
		ck_assert_int_eq(a.params.nt, b.params.nt);
		double worst = 0;
		for (int i = 0; i < a.params.nt; i++) {
			const lmk_tensor *x = &a.params.t[i], *y = &b.params.t[i];
			ck_assert_str_eq(x->name, y->name);
			ck_assert_int_eq(x->n, y->n);
			double e = relerr(y->data, x->data, x->n);
			if (dts[k].dt == LMK_F32)
				ck_assert_int_eq(memcmp(x->data, y->data, sizeof(float) * x->n), 0);
			else
				ck_assert_msg(e < dts[k].tol, "%s: %s: %.3g", lmk_dtype_name(dts[k].dt),
					      x->name, e);
			if (e > worst)
				worst = e;
		}
		if (dts[k].dt != LMK_F32)
			ck_assert(worst > 0); /* really rounded */
		ck_assert(b.cfg.tie_word_embeddings ? b.lm_head == b.wte : b.lm_head != b.wte);
		lmk_llama_free(&b);

		/* the file as transformers writes it */
		lmk_frame f;
		lmk_frame_init(&f);
		ck_assert_int_eq(lmk_frame_load(tpath(lmk_dtype_name(dts[k].dt),
						      "sub/dir/model.safetensors"), &f), 0);
		ck_assert_str_eq(lmk_frame_meta(&f, "format"), "pt");
		ck_assert_int_eq(f.ntensors, a.params.nt);
		ck_assert_int_eq(lmk_frame_find(&f, "lm_head.weight") != NULL,
				 !a.cfg.tie_word_embeddings);
		for (int i = 0; i < f.ntensors; i++)
			ck_assert_int_eq(f.t[i].dtype, dts[k].dt);
		lmk_frame_free(&f);
		lmk_llama_config cfg;
		ck_assert_int_eq(lmk_llama_config_load(&cfg, tpath(lmk_dtype_name(dts[k].dt),
								   "sub/dir/config.json")), 0);
		FILE *cf = fopen(tpath(lmk_dtype_name(dts[k].dt), "sub/dir/config.json"), "r");
		char text[4096] = {0}, key[64];
		ck_assert_uint_gt(fread(text, 1, sizeof text - 1, cf), 0);
		fclose(cf);
		snprintf(key, sizeof key, "\"torch_dtype\": \"%s\"", dts[k].torch);
		ck_assert_ptr_nonnull(strstr(text, key));
		ck_assert_ptr_nonnull(strstr(text, "\"LlamaForCausalLM\""));
	}
	lmk_llama_free(&a);
}
END_TEST

/* Writes the parameters of m, tensors [lo, hi), to path. */
static void write_part(const lmk_llama *m, int lo, int hi, const char *path, const char *skip,
		       const char *extra)
{
	lmk_frame f;
	lmk_frame_init(&f);
	lmk_frame_set_meta(&f, "format", "pt");
	for (int i = lo; i < hi; i++) {
		const lmk_tensor *t = &m->params.t[i];
		if (skip && !strcmp(skip, t->name))
			continue;
		ck_assert_int_eq(lmk_frame_add(&f, t->name, LMK_F32, t->ndim, t->shape, t->data), 0);
	}
	if (extra) {
		int64_t shape[1] = {3};
		float z[3] = {0};
		ck_assert_int_eq(lmk_frame_add_copy(&f, extra, LMK_F32, 1, shape, z), 0);
	}
	ck_assert_int_eq(lmk_frame_save(path, &f, 0), 0);
	lmk_frame_free(&f);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_sharded)
{
	lmk_llama a, b;
	char *idx = NULL;
	size_t cap = 1 << 16, len = 0;
	load(fixture("tiny", NULL), &a, 0);
	int nt = a.params.nt, half = nt / 2;
	char *dir = strdup(tpath("shards", NULL));
	ck_assert_int_eq(lmk_ckpt_save(dir, &a, LMK_F32), 0);
	unlink(tpath("shards", "model.safetensors"));
	write_part(&a, 0, half, tpath("shards", "model-00001-of-00002.safetensors"), NULL, NULL);
	write_part(&a, half, nt, tpath("shards", "model-00002-of-00002.safetensors"), NULL, NULL);
	idx = malloc(cap);
	len += snprintf(idx + len, cap - len, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {");
	for (int i = 0; i < nt; i++)
		len += snprintf(idx + len, cap - len, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
				i ? ", " : "", a.params.t[i].name, i < half ? 1 : 2);
	snprintf(idx + len, cap - len, "}}\n");
	write_text(tpath("shards", "model.safetensors.index.json"), idx);
	load(dir, &b, 0);
	ck_assert_int_eq(memcmp(a.params.data, b.params.data, sizeof(float) * a.params.n), 0);
	lmk_llama_free(&b);

	/* a tensor missing from its shard */
	write_part(&a, half, nt, tpath("shards", "model-00002-of-00002.safetensors"),
		   "model.norm.weight", NULL);
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 0), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "model.safetensors.index.json"));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "missing tensor 'model.norm.weight'"));
	ck_assert_ptr_null(b.params.data);
	/* a shard that does not exist */
	unlink(tpath("shards", "model-00002-of-00002.safetensors"));
	ck_assert_int_lt(lmk_ckpt_load(dir, &b, 0), 0);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "model-00002-of-00002.safetensors"));
	/* a shard name that leaves the directory */
	write_text(tpath("shards", "model.safetensors.index.json"),
		   "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}");
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 0), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "not a file name"));
	free(idx);
	free(dir);
	lmk_llama_free(&a);
}
END_TEST

START_TEST(test_bad_checkpoint)
{
	lmk_llama a, b;
	load(fixture("tiny", NULL), &a, 0);
	char *dir = strdup(tpath("bad", NULL)), *w = strdup(tpath("bad", "model.safetensors"));
	ck_assert_int_eq(lmk_ckpt_save(dir, &a, LMK_F32), 0);
	int nt = a.params.nt;

	write_part(&a, 0, nt, w, "model.layers.1.mlp.up_proj.weight", NULL);
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 1), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), w));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "missing tensor 'model.layers.1.mlp.up_proj.weight'"));

	write_part(&a, 0, nt, w, NULL, "model.layers.0.self_attn.q_proj.bias");
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 1), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"));

	/* rotary tables of old transformers are ignored */
	write_part(&a, 0, nt, w, NULL, "model.layers.0.self_attn.rotary_emb.inv_freq");
	load(dir, &b, 0);
	lmk_llama_free(&b);

	/* wrong shape: k_proj stored with q_proj's shape */
	lmk_frame f;
	lmk_frame_init(&f);
	for (int i = 0; i < nt; i++) {
		const lmk_tensor *t = &a.params.t[i];
		const lmk_tensor *s = strstr(t->name, "layers.0.self_attn.k_proj.weight")
					      ? a.layers[0].wq : t;
		lmk_frame_add(&f, t->name, LMK_F32, s->ndim, s->shape, s->data);
	}
	ck_assert_int_eq(lmk_frame_save(w, &f, 0), 0);
	lmk_frame_free(&f);
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 1), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), w));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(),
				     "tensor 'model.layers.0.self_attn.k_proj.weight': expected "
				     "shape [32, 64], found [64, 64]"));

	/* a dtype that is not a float */
	lmk_frame_init(&f);
	for (int i = 0; i < nt; i++) {
		const lmk_tensor *t = &a.params.t[i];
		lmk_frame_add(&f, t->name, i == 3 ? LMK_I32 : LMK_F32, t->ndim, t->shape, t->data);
	}
	ck_assert_int_eq(lmk_frame_save(w, &f, 0), 0);
	lmk_frame_free(&f);
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 1), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected F32, F16 or BF16, found I32"));

	/* no weights at all, no config */
	unlink(w);
	ck_assert_int_lt(lmk_ckpt_load(dir, &b, 1), 0);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "neither model.safetensors"));
	ck_assert_int_lt(lmk_ckpt_load(tpath("nothing", NULL), &b, 1), 0);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "config.json"));
	ck_assert_int_eq(lmk_ckpt_save(dir, &a, LMK_I8), LMK_EINVAL);
	lmk_llama_free(&a);

	/* tied: an lm_head equal to the embedding is accepted, another refused */
	load(fixture("tiny-tied", NULL), &a, 0);
	ck_assert_int_eq(lmk_ckpt_save(dir, &a, LMK_F32), 0);
	nt = a.params.nt;
	lmk_frame_init(&f);
	for (int i = 0; i < nt; i++) {
		const lmk_tensor *t = &a.params.t[i];
		lmk_frame_add(&f, t->name, LMK_F32, t->ndim, t->shape, t->data);
	}
	lmk_frame_add(&f, "lm_head.weight", LMK_F32, 2, a.wte->shape, a.wte->data);
	ck_assert_int_eq(lmk_frame_save(w, &f, 0), 0);
	load(dir, &b, 0);
	ck_assert_ptr_eq(b.lm_head, b.wte);
	lmk_llama_free(&b);
	float *other = malloc(sizeof(float) * a.wte->n);
	memcpy(other, a.wte->data, sizeof(float) * a.wte->n);
	other[5] += 1.0f;
	lmk_frame_free(&f);
	lmk_frame_init(&f);
	for (int i = 0; i < nt; i++) {
		const lmk_tensor *t = &a.params.t[i];
		lmk_frame_add(&f, t->name, LMK_F32, t->ndim, t->shape, t->data);
	}
	lmk_frame_add(&f, "lm_head.weight", LMK_F32, 2, a.wte->shape, other);
	ck_assert_int_eq(lmk_frame_save(w, &f, 0), 0);
	lmk_frame_free(&f);
	free(other);
	ck_assert_int_eq(lmk_ckpt_load(dir, &b, 0), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "differs from 'model.embed_tokens.weight'"));
	free(dir);
	free(w);
	lmk_llama_free(&a);
}
END_TEST

/* ---- configs ---------------------------------------------------------- */

#define KEYS(C, L, H, V) "\"hidden_size\": " C ", \"intermediate_size\": 176, " \
	"\"num_hidden_layers\": " L ", \"num_attention_heads\": " H ", \"vocab_size\": " V
#define BASE KEYS("64", "2", "4", "101")

static int parse(lmk_llama_config *cfg, const char *json)
{
	return lmk_llama_config_parse(cfg, json, strlen(json), "cfg.json");
}

static void parse_fails(const char *json, const char *msg)
{
	lmk_llama_config cfg;
	ck_assert_int_eq(parse(&cfg, json), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), msg) && strncmp(lmk_errmsg(), "cfg.json: ", 10) == 0,
		      "for %s: expected '%s' in '%s'", json, msg, lmk_errmsg());
}

START_TEST(test_config_errors)
{
	parse_fails("{", "cfg.json: line 1");
	parse_fails("[1]", "expected a JSON object");
	parse_fails("{\"hidden_size\": 64}", "missing key 'intermediate_size'");
	parse_fails("{" BASE ", \"num_key_value_heads\": 3}",
		    "num_attention_heads 4 is not a multiple of num_key_value_heads 3");
	parse_fails("{" BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
		    "rope type 'yarn' is not supported");
	parse_fails("{" BASE ", \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}",
		    "rope type 'dynamic' is not supported");
	parse_fails("{" BASE ", \"rope_scaling\": {\"factor\": 2.0}}", "no 'rope_type'");
	parse_fails("{" BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}",
		    "missing key 'low_freq_factor'");
	parse_fails("{" BASE ", \"hidden_act\": \"gelu\"}", "hidden_act 'gelu' is not supported");
	parse_fails("{" BASE ", \"model_type\": \"mistral\"}", "model_type 'mistral' is not supported");
	parse_fails("{" KEYS("\"64\"", "2", "4", "101") "}", "key 'hidden_size': expected an integer, "
		    "found a string");
	parse_fails("{" KEYS("64", "2", "4", "0") "}", "vocab_size: expected 1 to");
	parse_fails("{" BASE ", \"head_dim\": 15}", "head_dim: expected an even number");
	parse_fails("{" KEYS("64", "2", "5", "101") "}", "not a multiple of num_attention_heads");
	parse_fails("{" BASE ", \"tie_word_embeddings\": 1}", "expected true or false");
	parse_fails("{" BASE ", \"eos_token_id\": [1, \"x\"]}", "eos_token_id[1]");
	parse_fails("{" BASE ", \"rms_norm_eps\": -1}", "rms_norm_eps");
	parse_fails("{" BASE ", \"model_type\": \"qwen2\", \"use_sliding_window\": true}",
		    "use_sliding_window");
	parse_fails("{" BASE ", \"hidden_size\": 64}", "duplicate");
	parse_fails("{" BASE ", \"model_type\": \"lmk_mixer\"}", "needs an object 'lmk_mixer'");
	parse_fails("{" BASE ", \"model_type\": \"lmk_mixer\", \"lmk_mixer\": {\"kind\": \"rwkv\"}}",
		    "lmk_mixer.kind: expected a mixer's name");
	parse_fails("{" BASE ", \"model_type\": \"lmk_mixer\", \"lmk_mixer\": {\"kind\": \"gdn\", "
		    "\"depth\": 3}}", "lmk_mixer.depth: expected one of the mixer's sizes");
	parse_fails("{" BASE ", \"model_type\": \"lmk_mixer\", \"lmk_mixer\": {\"kind\": \"gdn\", "
		    "\"heads\": \"2\"}}", "lmk_mixer.heads: expected one of the mixer's sizes");

	lmk_llama_config cfg;
	ck_assert_int_eq(lmk_llama_config_load(&cfg, "/nonexistent/config.json"), LMK_EIO);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "/nonexistent/config.json"));
}
END_TEST

START_TEST(test_config_parse)
{
	lmk_llama_config cfg;
	/* Hugging Face's defaults for what is absent */
	ck_assert_int_eq(parse(&cfg, "{" BASE "}"), 0);
	ck_assert_str_eq(cfg.model_type, "llama");
	ck_assert_int_eq(cfg.num_key_value_heads, 4);
	ck_assert_int_eq(cfg.head_dim, 16);
	ck_assert_float_eq(cfg.rope_theta, 10000.0f);
	ck_assert_float_eq(cfg.rms_norm_eps, 1e-6f);
	ck_assert_float_eq(cfg.initializer_range, 0.02f);
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_NONE);
	ck_assert_int_eq(cfg.tie_word_embeddings, 0);
	ck_assert_int_eq(cfg.attention_bias, 0);
	ck_assert_int_eq(cfg.bos_token_id, -1);
	ck_assert_int_eq(cfg.neos, 0);

	/* Llama 3.2 as transformers 4 writes it */
	ck_assert_int_eq(parse(&cfg, "{" BASE ", \"num_key_value_heads\": 2, \"head_dim\": 32, "
			       "\"rope_theta\": 500000.0, \"rope_scaling\": {\"factor\": 32.0, "
			       "\"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
			       "\"original_max_position_embeddings\": 8192, \"rope_type\": "
			       "\"llama3\"}, \"bos_token_id\": 128000, \"eos_token_id\": [128001, "
			       "128008, 128009], \"tie_word_embeddings\": true, \"torch_dtype\": "
			       "\"bfloat16\", \"max_position_embeddings\": 131072}"), 0);
	ck_assert_int_eq(cfg.head_dim, 32);
	ck_assert_float_eq(cfg.rope_theta, 500000.0f);
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_LLAMA3);
	ck_assert_float_eq(cfg.rope_scaling.factor, 32.0f);
	ck_assert_float_eq(cfg.rope_scaling.low_freq_factor, 1.0f);
	ck_assert_float_eq(cfg.rope_scaling.high_freq_factor, 4.0f);
	ck_assert_int_eq(cfg.rope_scaling.original_max_pos, 8192);
	ck_assert_int_eq(cfg.bos_token_id, 128000);
	ck_assert_int_eq(cfg.neos, 3);
	ck_assert_int_eq(cfg.eos_token_id[2], 128009);
	ck_assert_int_eq(cfg.tie_word_embeddings, 1);
	ck_assert_int_eq(cfg.max_position_embeddings, 131072);

	/* transformers 5: rope_parameters; the old "type" key; linear */
	ck_assert_int_eq(parse(&cfg, "{" BASE ", \"rope_parameters\": {\"rope_theta\": 1000.0, "
			       "\"rope_type\": \"default\"}}"), 0);
	ck_assert_float_eq(cfg.rope_theta, 1000.0f);
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_NONE);
	ck_assert_int_eq(parse(&cfg, "{" BASE ", \"rope_scaling\": {\"type\": \"linear\", "
			       "\"factor\": 2.0}, \"eos_token_id\": 7, \"head_dim\": null}"), 0);
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_LINEAR);
	ck_assert_float_eq(cfg.rope_scaling.factor, 2.0f);
	ck_assert_int_eq(cfg.neos, 1);
	ck_assert_int_eq(cfg.eos_token_id[0], 7);
	ck_assert_int_eq(cfg.head_dim, 16);

	/* Qwen2: q, k, v biases always, no o bias */
	ck_assert_int_eq(parse(&cfg, "{" BASE ", \"model_type\": \"qwen2\", \"num_key_value_heads\": "
			       "2, \"use_sliding_window\": false, \"sliding_window\": 4096}"), 0);
	ck_assert_str_eq(cfg.model_type, "qwen2");
	ck_assert_int_eq(cfg.attention_bias, 1);
	lmk_llama m;
	ck_assert_int_eq(lmk_llama_init(&m, &cfg, 0), 0);
	ck_assert_ptr_nonnull(m.layers[1].bq);
	ck_assert_ptr_nonnull(m.layers[1].bk);
	ck_assert_ptr_nonnull(m.layers[1].bv);
	ck_assert_ptr_null(m.layers[1].bo);
	ck_assert_ptr_null(m.layers[1].bg);
	ck_assert_ptr_nonnull(lmk_params_find(&m.params, "model.layers.1.self_attn.k_proj.bias"));
	ck_assert_int_eq(m.layers[0].bk->shape[0], 32);
	lmk_llama_free(&m);

	/* save and parse again: the same config (qwen2 and llama) */
	lmk_llama_config back;
	char *p = tpath("config.json", NULL);
	ck_assert_int_eq(lmk_llama_config_save(&cfg, p, "float32"), 0);
	ck_assert_int_eq(lmk_llama_config_load(&back, p), 0);
	same_config(&cfg, &back);
	lmk_llama_config_default(&cfg);
	cfg.rope_scaling = (lmk_rope_scaling){LMK_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 8192};
	cfg.neos = 2;
	cfg.eos_token_id[1] = 7;
	cfg.bos_token_id = -1;
	ck_assert_int_eq(lmk_llama_config_save(&cfg, p, "bfloat16"), 0);
	ck_assert_int_eq(lmk_llama_config_load(&back, p), 0);
	same_config(&cfg, &back);
	FILE *f = fopen(p, "r");
	char text[4096] = {0};
	ck_assert_uint_gt(fread(text, 1, sizeof text - 1, f), 0);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "\"rms_norm_eps\": 1e-5"));
	ck_assert_ptr_nonnull(strstr(text, "\"initializer_range\": 0.02"));
	ck_assert_ptr_nonnull(strstr(text, "\"bos_token_id\": null"));
	ck_assert_int_eq(lmk_llama_config_check(&cfg, "x"), 0);
	cfg.num_key_value_heads = 4;
	ck_assert_int_eq(lmk_llama_config_save(&cfg, p, "float32"), LMK_EFORMAT);
}
END_TEST

START_TEST(test_init_weights)
{
	lmk_llama_config cfg;
	lmk_llama a, b;
	ck_assert_int_eq(parse(&cfg, "{" KEYS("64", "8", "4", "101") ", "
			       "\"attention_bias\": true, \"tie_word_embeddings\": true}"), 0);
	ck_assert_int_eq(lmk_llama_init(&a, &cfg, 1), 0);
	ck_assert_int_eq(lmk_llama_init(&b, &cfg, 0), 0);
	ck_assert_ptr_nonnull(a.params.grad);
	ck_assert_ptr_null(b.params.grad);
	ck_assert_ptr_eq(a.lm_head, a.wte);
	ck_assert_ptr_null(lmk_params_find(&a.params, "lm_head.weight"));
	for (size_t i = 0; i < a.params.n; i++) /* laid out zeroed */
		ck_assert(a.params.data[i] == 0.0f && a.params.grad[i] == 0.0f);
	lmk_llama_init_weights(&a, 42);
	lmk_llama_init_weights(&b, 42);
	ck_assert_int_eq(memcmp(a.params.data, b.params.data, sizeof(float) * a.params.n), 0);
	struct { lmk_tensor *t; double std; } want[] = {
		{a.wte, 0.02}, {a.layers[3].wq, 0.02}, {a.layers[3].wd, 0.02 / 4},
		{a.layers[7].wo, 0.02 / 4},
	};
	for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
		double s = 0, s2 = 0;
		const float *d = want[k].t->data;
		for (int64_t i = 0; i < want[k].t->n; i++) {
			s += d[i];
			s2 += (double)d[i] * d[i];
		}
		double n = (double)want[k].t->n, mean = s / n, sd = sqrt(s2 / n - mean * mean);
		ck_assert_msg(fabs(sd / want[k].std - 1) < 0.05, "%s: std %g, expected %g",
			      want[k].t->name, sd, want[k].std);
		ck_assert(fabs(mean) < 4 * want[k].std / sqrt(n));
	}
	for (int64_t i = 0; i < a.layers[2].ln1->n; i++) {
		ck_assert_float_eq(((float *)a.layers[2].ln1->data)[i], 1.0f);
		ck_assert_float_eq(((float *)a.layers[2].bq->data)[i % a.layers[2].bq->n], 0.0f);
	}
	lmk_llama_init_weights(&b, 43);
	ck_assert_int_ne(memcmp(a.params.data, b.params.data, sizeof(float) * a.params.n), 0);
	lmk_llama_free(&a);
	lmk_llama_free(&b);
}
END_TEST

/* ---- sampler ---------------------------------------------------------- */

START_TEST(test_sample_greedy)
{
	lmk_sampler s = {.temperature = 0};
	float l[7] = {0.1f, 3.0f, -2.0f, 3.0f, 2.9f, 0, 1};
	ck_assert_int_eq(lmk_sample(&s, l, 7), 1); /* the lower id of a tie */
	float one[1] = {-5};
	ck_assert_int_eq(lmk_sample(&s, one, 1), 0);
	/* top_k = 1 is greedy at any temperature */
	lmk_rng_init(&s.rng, 9);
	s.temperature = 5.0f;
	s.top_k = 1;
	s.top_p = 1.0f;
	for (int r = 0; r < 50; r++) {
		float x[33], y[33];
		for (int i = 0; i < 33; i++)
			x[i] = y[i] = sinf((float)(r * 33 + i) * 1.7f) * 3;
		lmk_sampler g = {.temperature = 0};
		ck_assert_int_eq(lmk_sample(&s, x, 33), lmk_sample(&g, y, 33));
	}
	ck_assert_int_eq(lmk_sample(&s, l, 0), LMK_EINVAL);
}
END_TEST

/* Frequencies of n draws from logits log(p). */
static void draw(lmk_sampler *s, const float *p, int V, int n, double *freq)
{
	float l[16];
	for (int i = 0; i < V; i++)
		freq[i] = 0;
	for (int k = 0; k < n; k++) {
		for (int i = 0; i < V; i++)
			l[i] = logf(p[i]);
		int t = lmk_sample(s, l, V);
		ck_assert(t >= 0 && t < V);
		freq[t] += 1.0 / n;
	}
}

START_TEST(test_sample_dist)
{
	const float p[5] = {0.05f, 0.5f, 0.15f, 0.3f, 1e-9f};
	double f[5];
	const int n = 20000;
	const double tol = 0.015;
	lmk_sampler s = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
	lmk_rng_init(&s.rng, 1);
	draw(&s, p, 5, n, f);
	for (int i = 0; i < 5; i++)
		ck_assert_msg(fabs(f[i] - p[i]) < tol, "token %d: %g, expected %g", i, f[i], p[i]);

	/* top_p 0.75: the smallest set reaching 0.75 is {1, 3} (0.8) */
	s.top_p = 0.75f;
	draw(&s, p, 5, n, f);
	ck_assert(f[0] == 0 && f[2] == 0 && f[4] == 0);
	ck_assert(fabs(f[1] - 0.5 / 0.8) < tol && fabs(f[3] - 0.3 / 0.8) < tol);
	/* top_p below the largest probability keeps only the argmax */
	s.top_p = 0.4f;
	draw(&s, p, 5, 200, f);
	ck_assert(f[0] == 0 && f[2] == 0 && f[3] == 0 && f[4] == 0);
	/* top_k 3, then top_p within those */
	s.top_p = 1.0f;
	s.top_k = 3;
	draw(&s, p, 5, n, f);
	ck_assert(f[0] == 0 && f[4] == 0);
	ck_assert(fabs(f[2] - 0.15 / 0.95) < tol);
	s.top_p = 0.9f; /* of 0.95: 0.5, 0.8, then 0.95 >= 0.855 */
	draw(&s, p, 5, 2000, f);
	ck_assert(f[2] > 0);
	s.top_p = 0.8f; /* 0.8 of 0.95 = 0.76: {1, 3} */
	draw(&s, p, 5, 2000, f);
	ck_assert(f[2] == 0);
	/* temperature: 2 flattens, 0.5 sharpens */
	s.top_k = 0;
	s.top_p = 1.0f;
	s.temperature = 0.5f;
	draw(&s, p, 5, n, f);
	ck_assert(fabs(f[1] - 0.25 / (0.0025 + 0.25 + 0.0225 + 0.09)) < tol);
}
END_TEST

START_TEST(test_sample_seeded)
{
	lmk_sampler a = {.temperature = 0.8f, .top_k = 10, .top_p = 0.95f}, b = a, c = a;
	lmk_rng_init(&a.rng, 7);
	lmk_rng_init(&b.rng, 7);
	lmk_rng_init(&c.rng, 8);
	int differ = 0;
	for (int k = 0; k < 200; k++) {
		float x[50], y[50], z[50];
		for (int i = 0; i < 50; i++)
			x[i] = y[i] = z[i] = cosf((float)i * 0.3f) + 0.01f * (float)i;
		int ta = lmk_sample(&a, x, 50), tb = lmk_sample(&b, y, 50), tc = lmk_sample(&c, z, 50);
		ck_assert_int_eq(ta, tb);
		differ += ta != tc;
	}
	ck_assert_int_gt(differ, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("llama");
	TCase *tc = tcase_create("transformers");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_fixture, 0, 2);
	tcase_add_loop_test(tc, test_decode, 0, 2);
	tcase_add_loop_test(tc, test_decode_batch, 0, 2);
	tcase_add_loop_test(tc, test_decode_mixer, 0, LMK_MIXER_NKINDS);
	tcase_add_test(tc, test_generate);
	suite_add_tcase(s, tc);

	tc = tcase_create("checkpoints");
	tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
	tcase_add_loop_test(tc, test_roundtrip, 0, 2);
	tcase_add_test(tc, test_sharded);
	tcase_add_test(tc, test_bad_checkpoint);
	tcase_add_test(tc, test_config_parse);
	suite_add_tcase(s, tc);

	tc = tcase_create("config");
	tcase_add_test(tc, test_config_errors);
	tcase_add_test(tc, test_init_weights);
	suite_add_tcase(s, tc);

	tc = tcase_create("sampler");
	tcase_add_test(tc, test_sample_greedy);
	tcase_add_test(tc, test_sample_dist);
	tcase_add_test(tc, test_sample_seeded);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
