/* test_cuda_decode.c: batch-1 decoding with the KV cache on the GPU
 * (lmk_llama_decode on a CUDA context, lmk_kvcache_init_ctx) against the CPU
 * decode of the same tiny random Llama (grouped-query attention).
 *
 * Teacher forcing: the CPU decodes 40 tokens greedily after a 70-token
 * prompt (which goes through as two multi-token calls, 67 tokens into the
 * empty cache, then 3 more after them), and the GPU is fed the
 * same prompt and the CPU's tokens, so every step's logits can be compared:
 * by ||gpu - cpu|| / ||cpu||, at most 1e-4 in F32 (fp32 everywhere) and 1e-2
 * in BF16, where the CPU model gets the bf16-rounded weights the GPU reads so
 * that the error measured is that of the bf16 activations and cache. In F32
 * the GPU's argmax must be the CPU's token except at a near tie (top two
 * logits closer than 1e-3 of the largest magnitude), and lmk_llama_generate
 * on the GPU must give the CPU's greedy tokens (up to such a tie) and hold
 * the same arena after a second run (nothing grows per token).
 *
 * One-token steps run as a recorded CUDA graph (lmk_llama_decode's
 * default on a device), so the above checks that path; the graph is also
 * checked against the same steps op by op (LMK_DECODE_GRAPH=0) with a
 * cache long enough for attention to split, up to a full cache, replayed
 * twice (the same bits), and greedy lmk_llama_generate (the argmax on the
 * device) against the op-by-op tokens.
 *
 * Also: several sequences decoded together (lmk_llama_decode_batch), and
 * models with each token mixer decoding through their layers' states.
 *
 * LMK_TEST_SMALL=1 (for compute-sanitizer) keeps every path and mixer with
 * fewer steps: 8 tokens instead of 40, 10 graph steps after a 1016-token
 * prompt (the cache still split) instead of 60 after 1000, for one model
 * in each dtype (the prompts' attention is most of the time), 4 batched
 * steps instead of 12.
 *
 * Exits 77 without a device or in a CPU-only build. Runs without fork: a
 * child forked after CUDA is initialised cannot use the device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "llama.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

#define NP 70
#define NP1 67 /* the first call of the prompt */
#define NGEN 40 /* LMK_TEST_SMALL: 8 (g_ngen) */

static int g_ngen = NGEN;

typedef struct dcase {
	const char *name;
	int C, F, L, H, K, D, V, bias, tied;
} dcase;

static const dcase cases[] = {
	{"tiny-bias-d12", 48, 104, 2, 4, 2, 12, 259, 1, 1},
	{"gqa4-d64", 128, 352, 3, 8, 2, 64, 517, 0, 0},
	{"mha-d32", 96, 200, 2, 3, 3, 32, 1000, 0, 1},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static void config_of(const dcase *d, lmk_llama_config *cfg)
{
	lmk_llama_config_default(cfg);
	cfg->hidden_size = d->C;
	cfg->intermediate_size = d->F;
	cfg->num_hidden_layers = d->L;
	cfg->num_attention_heads = d->H;
	cfg->num_key_value_heads = d->K;
	cfg->head_dim = d->D;
	cfg->vocab_size = d->V;
	cfg->attention_bias = d->bias;
	cfg->tie_word_embeddings = d->tied;
	/* transformers' default: larger weights make the network chaotic
	 * enough that bf16 rounding of the weights alone moves the logits
	 * by 1e-2 (0.2), here by 2e-3 to 4e-3 */
	cfg->initializer_range = 0.02f;
	cfg->neos = 0;
	cfg->bos_token_id = -1;
}

/* The weights of m rounded to bf16 (those the GPU reads in BF16), so that
 * the CPU's error against it is that of the bf16 activations alone. */
static void round_to_bf16(lmk_llama *m)
{
	uint16_t *b = malloc(m->params.n * sizeof *b);
	ck_assert_ptr_nonnull(b);
	lmk_dtype_from_f32(LMK_BF16, m->params.data, b, m->params.n);
	lmk_dtype_to_f32(LMK_BF16, b, m->params.data, m->params.n);
	free(b);
}

/* A model with the test's weights, rounded to bf16 when round_bf16. */
static void make_model(lmk_llama *m, const dcase *d, int round_bf16)
{
	lmk_llama_config cfg;
	config_of(d, &cfg);
	ck_assert_msg(lmk_llama_init(m, &cfg, 0) == 0, "%s: %s", d->name, lmk_errmsg());
	lmk_llama_init_weights(m, 4321);
	if (round_bf16)
		round_to_bf16(m);
}

/* A CUDA context of dtype dt with a poisoned arena, m's weights moved to it. */
static void gpu_setup(lmk_ctx *gc, lmk_llama *m, lmk_dtype dt, const char *what)
{
	ck_assert_int_eq(lmk_ctx_init_ex(gc, LMK_DEV_CUDA, 0, dt), 0);
	gc->arena.poison = 1;
	ck_assert_msg(lmk_params_to_device(&m->params, gc) == 0, "%s: %s", what, lmk_errmsg());
}

static int argmax(const float *x, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[b])
			b = i;
	return b;
}

/* The top two logits are closer than 1e-3 of the largest magnitude. */
static int near_tie(const float *x, int n)
{
	int b = argmax(x, n);
	float second = -INFINITY, amax = 0;
	for (int i = 0; i < n; i++) {
		if (i != b && x[i] > second)
			second = x[i];
		amax = fmaxf(amax, fabsf(x[i]));
	}
	return x[b] - second < 1e-3f * amax;
}

static void prompt_of(int32_t *p, int V)
{
	for (int i = 0; i < NP; i++)
		p[i] = (int32_t)((i * 97 + 11) % V);
}

/* Greedy decoding on ctx c: the prompt, then g_ngen tokens. With forced,
 * those tokens are fed instead of the argmax. logits (g_ngen, V), toks
 * (g_ngen). */
static void run_decode(lmk_ctx *c, lmk_llama *m, const int32_t *forced, float *logits,
		       int32_t *toks, const char *what)
{
	const int V = m->cfg.vocab_size;
	int32_t prompt[NP];
	prompt_of(prompt, V);
	lmk_kvcache kv;
	ck_assert_msg(lmk_kvcache_init_ctx(&kv, m, NP + g_ngen, c) == 0, "%s: %s", what, lmk_errmsg());
	lmk_ctx_reset(c);
	int rc = lmk_llama_decode(c, m, &kv, prompt, NP1, logits);
	ck_assert_msg(rc == 0, "%s: prompt: %s", what, lmk_errmsg());
	lmk_ctx_reset(c);
	rc = lmk_llama_decode(c, m, &kv, prompt + NP1, NP - NP1, logits);
	ck_assert_msg(rc == 0, "%s: prompt, the rest: %s", what, lmk_errmsg());
	for (int s = 0; s < g_ngen; s++) {
		toks[s] = argmax(logits + (size_t)s * V, V);
		if (s == g_ngen - 1)
			break;
		int32_t t = forced ? forced[s] : toks[s];
		lmk_ctx_reset(c);
		rc = lmk_llama_decode(c, m, &kv, &t, 1, logits + (size_t)(s + 1) * V);
		ck_assert_msg(rc == 0, "%s: step %d: %s", what, s, lmk_errmsg());
	}
	ck_assert_int_eq(kv.len, NP + g_ngen - 1);
	lmk_ctx_reset(c);
	lmk_kvcache_free(&kv);
}

static double rel_err(const float *a, const float *b, int n)
{
	double num = 0, den = 0;
	for (int i = 0; i < n; i++) {
		if (!isfinite(a[i]))
			return INFINITY;
		num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		den += (double)b[i] * b[i];
	}
	return sqrt(num / (den > 0 ? den : 1));
}

/* Each of the rows (V logits) of lg against lc's within tol. @return : the
 * largest error */
static double check_rows(const float *lg, const float *lc, int rows, int V, double tol,
			 const char *what)
{
	double worst = 0;
	for (int r = 0; r < rows; r++) {
		double e = rel_err(lg + (size_t)r * V, lc + (size_t)r * V, V);
		ck_assert_msg(e <= tol, "%s: row %d: logits differ from the CPU's by %.3g (%.0e "
			      "allowed)", what, r, e, tol);
		worst = fmax(worst, e);
	}
	return worst;
}

/* The end of a CPU-GPU comparison: the GPU's queue drained without an
 * error, then both models, contexts and logits freed. */
static void pair_free(lmk_llama *mc, lmk_ctx *cc, lmk_llama *mg, lmk_ctx *gc, float *lc,
		      float *lg, const char *what)
{
	ck_assert_msg(lmk_ctx_sync(gc) == 0, "%s: %s", what, lmk_errmsg());
	lmk_llama_free(mg);
	lmk_ctx_free(gc);
	lmk_llama_free(mc);
	lmk_ctx_free(cc);
	free(lc);
	free(lg);
}

static void check_dtype(const dcase *d, lmk_dtype dt)
{
	char what[96];
	snprintf(what, sizeof what, "%s %s", d->name, lmk_dtype_name(dt));
	const int V = d->V;
	float *lc = malloc(sizeof(float) * (size_t)g_ngen * V);
	float *lg = malloc(sizeof(float) * (size_t)g_ngen * V);
	int32_t tc[NGEN], tg[NGEN];
	ck_assert_ptr_nonnull(lc);
	ck_assert_ptr_nonnull(lg);

	lmk_llama mc, mg;
	lmk_ctx cc, gc;
	make_model(&mc, d, dt == LMK_BF16);
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	run_decode(&cc, &mc, NULL, lc, tc, what);

	make_model(&mg, d, 0);
	gpu_setup(&gc, &mg, dt, what);
	run_decode(&gc, &mg, tc, lg, tg, what);

	const double tol = dt == LMK_BF16 ? 1e-2 : 1e-4;
	double worst = 0;
	int wrong = 0, ties = 0;
	for (int s = 0; s < g_ngen; s++) {
		double e = rel_err(lg + (size_t)s * V, lc + (size_t)s * V, V);
		worst = fmax(worst, e);
		ck_assert_msg(e <= tol, "%s: step %d: logits differ from the CPU's by %.3g (%.0e "
			      "allowed)", what, s, e, tol);
		if (tg[s] != tc[s]) {
			if (near_tie(lc + (size_t)s * V, V))
				ties++;
			else
				wrong++;
		}
	}
	printf("test_cuda_decode: %-14s %s: %d steps, worst logits error %.2e, %d tokens differ "
	       "(%d at near ties)\n", d->name, lmk_dtype_name(dt), g_ngen, worst, wrong + ties, ties);
	fflush(stdout);
	if (dt == LMK_F32)
		ck_assert_msg(wrong == 0, "%s: %d greedy tokens differ from the CPU's away from a tie",
			      what, wrong);

	if (dt == LMK_F32) {
		/* lmk_llama_generate, unchanged, on the GPU */
		int32_t prompt[NP], out[NGEN], out2[NGEN];
		prompt_of(prompt, V);
		lmk_sampler sm;
		memset(&sm, 0, sizeof sm);
		int n = lmk_llama_generate(&gc, &mg, prompt, NP, g_ngen, &sm, NULL, 0, NULL, NULL, out);
		ck_assert_msg(n == g_ngen, "%s: generate: %d: %s", what, n, lmk_errmsg());
		size_t reserved = gc.arena.reserved;
		int nchunks = lmk_arena_nchunks(&gc.arena);
		n = lmk_llama_generate(&gc, &mg, prompt, NP, g_ngen, &sm, NULL, 0, NULL, NULL, out2);
		ck_assert_msg(n == g_ngen, "%s: generate again: %d: %s", what, n, lmk_errmsg());
		ck_assert_msg(gc.arena.reserved == reserved && lmk_arena_nchunks(&gc.arena) == nchunks,
			      "%s: the arena grew from %zu bytes in %d chunks to %zu in %d", what,
			      reserved, nchunks, gc.arena.reserved, lmk_arena_nchunks(&gc.arena));
		ck_assert_msg(memcmp(out, out2, sizeof(int32_t) * (size_t)g_ngen) == 0,
			      "%s: two generations differ", what);
		for (int s = 0; s < g_ngen; s++) {
			if (out[s] == tc[s])
				continue;
			ck_assert_msg(near_tie(lc + (size_t)s * V, V),
				      "%s: generate: token %d is %d, the CPU's %d (no tie)", what, s,
				      out[s], tc[s]);
			break; /* after a tie the sequences may part */
		}
	}
	pair_free(&mc, &cc, &mg, &gc, lc, lg, what);
}

START_TEST(test_decode_f32) { check_dtype(&cases[_i], LMK_F32); }
END_TEST

START_TEST(test_decode_bf16) { check_dtype(&cases[_i], LMK_BF16); }
END_TEST

/* The recorded step against the op-by-op one: a g_gp-token prompt, then
 * g_gstep one-token steps into a cache of exactly g_gp + g_gstep rows
 * (filled by the last), twice over the same cache from position 0. The
 * recorded attention splits a cache of more than 1024 rows
 * (lmk_cuda_decode_splits), hence 1016 + 10 under LMK_TEST_SMALL. */
#define GSTEP 60

static int g_gp = 1000, g_gstep = GSTEP;
static int g_graph_all = 1; /* LMK_TEST_SMALL: one model a dtype */

static const dcase gcases[] = {
	{"gqa4-d64", 128, 352, 3, 8, 2, 64, 517, 0, 0},
	{"mha-d32", 96, 200, 2, 3, 3, 32, 1000, 0, 1},
	{"h5k1-bias-d16", 80, 144, 2, 5, 1, 16, 333, 1, 0},
};
#define NGCASES ((int)(sizeof gcases / sizeof gcases[0]))

static void gprompt_of(int32_t *p, int V)
{
	for (int i = 0; i < g_gp; i++)
		p[i] = (int32_t)((i * 53 + 7) % V);
}

/* logits (g_gstep + 1, V): the prompt's, then each step's; toks (g_gstep):
 * the argmax of each row before the last; forced: the tokens fed instead. */
static void graph_run(lmk_ctx *c, lmk_llama *m, int graph, const int32_t *forced, float *logits,
		      int32_t *toks, const char *what)
{
	const int V = m->cfg.vocab_size;
	const size_t n = (size_t)(g_gstep + 1) * V;
	int32_t *prompt = malloc(sizeof(int32_t) * (size_t)g_gp);
	float *again = malloc(sizeof(float) * n);
	ck_assert(prompt && again);
	gprompt_of(prompt, V);
	if (graph)
		unsetenv("LMK_DECODE_GRAPH");
	else
		setenv("LMK_DECODE_GRAPH", "0", 1);
	lmk_kvcache kv;
	ck_assert_msg(lmk_kvcache_init_ctx(&kv, m, g_gp + g_gstep, c) == 0, "%s: %s", what, lmk_errmsg());
	for (int rep = 0; rep < 2; rep++) {
		float *lg = rep ? again : logits;
		kv.len = 0;
		lmk_ctx_reset(c);
		ck_assert_msg(lmk_llama_decode(c, m, &kv, prompt, g_gp, lg) == 0, "%s: prompt: %s",
			      what, lmk_errmsg());
		for (int s = 0; s < g_gstep; s++) {
			toks[s] = argmax(lg + (size_t)s * V, V);
			int32_t t = forced ? forced[s] : toks[s];
			lmk_ctx_reset(c);
			ck_assert_msg(lmk_llama_decode(c, m, &kv, &t, 1, lg + (size_t)(s + 1) * V) == 0,
				      "%s: step %d: %s", what, s, lmk_errmsg());
		}
		ck_assert_int_eq(kv.len, kv.max_t);
	}
	ck_assert_msg(memcmp(logits, again, sizeof(float) * n) == 0,
		      "%s: a second pass over the cache gave other logits", what);
	lmk_ctx_reset(c);
	lmk_kvcache_free(&kv);
	unsetenv("LMK_DECODE_GRAPH");
	free(prompt);
	free(again);
}

static void check_graph(const dcase *d, lmk_dtype dt)
{
	char what[96];
	snprintf(what, sizeof what, "%s %s graph", d->name, lmk_dtype_name(dt));
	const int V = d->V;
	const size_t n = (size_t)(g_gstep + 1) * V;
	float *lo = malloc(sizeof(float) * n), *lg = malloc(sizeof(float) * n);
	int32_t to[GSTEP], tg[GSTEP];
	ck_assert(lo && lg);
	lmk_llama m;
	lmk_ctx gc;
	make_model(&m, d, 0);
	gpu_setup(&gc, &m, dt, what);
	graph_run(&gc, &m, 0, NULL, lo, to, what);
	graph_run(&gc, &m, 1, to, lg, tg, what);
	/* the two differ only in how attention splits the cache; in BF16 that
	 * moves a logit by a rounding of the attention output, so a token may
	 * change away from the near ties of F32 too (counted, as above) */
	double worst = check_rows(lg, lo, g_gstep + 1, V, dt == LMK_BF16 ? 1e-2 : 1e-5, what);
	int ties = 0;
	for (int s = 0; s < g_gstep; s++)
		if (tg[s] != to[s]) {
			ck_assert_msg(dt == LMK_BF16 || near_tie(lo + (size_t)s * V, V),
				      "%s: step %d: token %d, op by op %d (no tie)", what, s, tg[s],
				      to[s]);
			ties++;
		}

	/* greedy generation with the device's argmax: the op-by-op tokens up
	 * to the first near tie */
	int32_t *prompt = malloc(sizeof(int32_t) * (size_t)g_gp), out[GSTEP + 1];
	ck_assert_ptr_nonnull(prompt);
	gprompt_of(prompt, V);
	lmk_sampler sm;
	memset(&sm, 0, sizeof sm);
	int got = lmk_llama_generate(&gc, &m, prompt, g_gp, g_gstep + 1, &sm, NULL, 0, NULL, NULL,
				     out);
	ck_assert_msg(got == g_gstep + 1, "%s: generate: %d: %s", what, got, lmk_errmsg());
	free(prompt);
	int same = 0;
	while (same < g_gstep && out[same] == to[same])
		same++;
	if (same < g_gstep)
		ck_assert_msg(dt == LMK_BF16 || near_tie(lo + (size_t)same * V, V),
			      "%s: generate: token %d is %d, op by op %d (no tie)", what, same,
			      out[same], to[same]);
	printf("test_cuda_decode: %-14s %s: graph against op by op, %d steps, worst logits "
	       "error %.2e, %d tokens differ; generate agrees for %d tokens\n",
	       d->name, lmk_dtype_name(dt), g_gstep, worst, ties, same);
	fflush(stdout);
	ck_assert_msg(lmk_ctx_sync(&gc) == 0, "%s: %s", what, lmk_errmsg());
	lmk_llama_free(&m);
	lmk_ctx_free(&gc);
	free(lo);
	free(lg);
}

START_TEST(test_graph_f32)
{
	if (g_graph_all || _i == 0)
		check_graph(&gcases[_i], LMK_F32);
}
END_TEST

START_TEST(test_graph_bf16)
{
	if (g_graph_all || _i == 2)
		check_graph(&gcases[_i], LMK_BF16);
}
END_TEST

/* Three sequences with prompts of 1, 9 and 66 tokens decoded together
 * (lmk_llama_decode_batch), each at its own position, 12 teacher-forced
 * steps: the GPU's logits of every row and step against the CPU's, within
 * the same tolerances. */
#define NB 3
static int g_nbstep = 12; /* LMK_TEST_SMALL: 4 */
static void decode_rows(lmk_ctx *c, lmk_llama *m, float *logits /*(g_nbstep, NB, V)*/,
			const char *what)
{
	static const int plen[NB] = {1, 9, 66};
	const int V = m->cfg.vocab_size;
	lmk_kvcache kv[NB], *kvp[NB];
	int32_t p[66], tok[NB];
	float *scratch = malloc(sizeof(float) * (size_t)V);
	ck_assert_ptr_nonnull(scratch);
	for (int b = 0; b < NB; b++) {
		for (int i = 0; i < plen[b]; i++)
			p[i] = (int32_t)((i * 31 + b * 7 + 3) % V);
		ck_assert_msg(lmk_kvcache_init_ctx(&kv[b], m, plen[b] + g_nbstep, c) == 0, "%s: %s",
			      what, lmk_errmsg());
		lmk_ctx_reset(c);
		ck_assert_msg(lmk_llama_decode(c, m, &kv[b], p, plen[b], scratch) == 0,
			      "%s: prompt %d: %s", what, b, lmk_errmsg());
		kvp[b] = &kv[b];
	}
	for (int s = 0; s < g_nbstep; s++) {
		for (int b = 0; b < NB; b++)
			tok[b] = (int32_t)((s * 13 + b * 5 + 1) % V);
		lmk_ctx_reset(c);
		ck_assert_msg(lmk_llama_decode_batch(c, m, kvp, tok, NB,
						     logits + (size_t)s * NB * V) == 0,
			      "%s: step %d: %s", what, s, lmk_errmsg());
	}
	for (int b = 0; b < NB; b++) {
		ck_assert_int_eq(kv[b].len, plen[b] + g_nbstep);
		lmk_kvcache_free(&kv[b]);
	}
	lmk_ctx_reset(c);
	free(scratch);
}

static void check_batch(const dcase *d, lmk_dtype dt)
{
	char what[96];
	snprintf(what, sizeof what, "%s %s batch", d->name, lmk_dtype_name(dt));
	const size_t n = (size_t)g_nbstep * NB * d->V;
	float *lc = malloc(sizeof(float) * n), *lg = malloc(sizeof(float) * n);
	ck_assert(lc && lg);
	lmk_llama mc, mg;
	lmk_ctx cc, gc;
	make_model(&mc, d, dt == LMK_BF16);
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	decode_rows(&cc, &mc, lc, what);
	make_model(&mg, d, 0);
	gpu_setup(&gc, &mg, dt, what);
	decode_rows(&gc, &mg, lg, what);
	/* row r: step r / NB, sequence r % NB */
	double worst = check_rows(lg, lc, g_nbstep * NB, d->V, dt == LMK_BF16 ? 1e-2 : 1e-4, what);
	printf("test_cuda_decode: %-14s %s: %d rows x %d steps together, worst logits error "
	       "%.2e\n", d->name, lmk_dtype_name(dt), NB, g_nbstep, worst);
	fflush(stdout);
	pair_free(&mc, &cc, &mg, &gc, lc, lg, what);
}

START_TEST(test_batch_f32) { check_batch(&cases[_i], LMK_F32); }
END_TEST

START_TEST(test_batch_bf16) { check_batch(&cases[_i], LMK_BF16); }
END_TEST

/* A model with each token mixer decodes on the GPU through the layers'
 * states (lmk_mixer_step: the short convolutions' kept inputs, the core
 * ops' steps) as on the CPU: a 5-token prompt, then 6 tokens one at a
 * time, every step's logits within the tolerances above. */
static void mixer_run(lmk_ctx *c, lmk_llama *m, float *logits /*(7,V)*/, const char *what)
{
	const int V = m->cfg.vocab_size;
	int32_t ids[11];
	lmk_kvcache kv;
	for (int i = 0; i < 11; i++)
		ids[i] = (int32_t)((i * 29 + 3) % V);
	ck_assert_msg(lmk_kvcache_init_ctx(&kv, m, 11, c) == 0, "%s: %s", what, lmk_errmsg());
	for (int s = 0, at = 0; s < 7; s++) {
		int n = s == 0 ? 5 : 1;
		lmk_ctx_reset(c);
		ck_assert_msg(lmk_llama_decode(c, m, &kv, ids + at, n, logits + (size_t)s * V) == 0,
			      "%s: step %d: %s", what, s, lmk_errmsg());
		at += n;
	}
	lmk_ctx_reset(c);
	lmk_kvcache_free(&kv);
}

static void check_mixer(int kind, lmk_dtype dt)
{
	char what[96];
	snprintf(what, sizeof what, "%s blocks %s", lmk_mixer_kind_name(kind), lmk_dtype_name(dt));
	lmk_llama_config cfg;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 128;
	cfg.intermediate_size = 160;
	cfg.num_hidden_layers = 2;
	cfg.num_attention_heads = 2;
	cfg.num_key_value_heads = 2;
	cfg.head_dim = 64;
	cfg.vocab_size = 301;
	cfg.neos = 0;
	cfg.bos_token_id = -1;
	cfg.mixer = 1 + kind;
	lmk_mixer_defaults(&cfg.mix, kind, cfg.hidden_size);
	cfg.mix.init_std = 0.05f;
	if (kind == LMK_MIXER_GDN || kind == LMK_MIXER_LL_GDN) {
		/* the shapes of the mixer experiments' GDN (docs/results.md) */
		cfg.mix.heads = 2;
		cfg.mix.head_dim = 64;
		cfg.mix.head_dim_v = 128;
	}
	const int V = cfg.vocab_size;
	float *lc = malloc(sizeof(float) * 7 * (size_t)V), *lg = malloc(sizeof(float) * 7 * (size_t)V);
	ck_assert(lc && lg);
	lmk_llama mc, mg;
	lmk_ctx cc, gc;
	ck_assert_int_eq(lmk_llama_init(&mc, &cfg, 0), 0);
	lmk_llama_init_weights(&mc, 99);
	if (dt == LMK_BF16)
		round_to_bf16(&mc);
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	mixer_run(&cc, &mc, lc, what);
	ck_assert_int_eq(lmk_llama_init(&mg, &cfg, 0), 0);
	lmk_llama_init_weights(&mg, 99);
	gpu_setup(&gc, &mg, dt, what);
	mixer_run(&gc, &mg, lg, what);
	/* bf16: the activations, the conv windows and the core's inputs are
	 * rounded at every step */
	double worst = check_rows(lg, lc, 7, V, dt == LMK_BF16 ? 3e-2 : 1e-4, what);
	printf("test_cuda_decode: %-22s: 7 steps, worst logits error %.2e\n", what, worst);
	fflush(stdout);
	pair_free(&mc, &cc, &mg, &gc, lc, lg, what);
}

START_TEST(test_mixer_f32) { check_mixer(_i, LMK_F32); }
END_TEST

START_TEST(test_mixer_bf16) { check_mixer(_i, LMK_BF16); }
END_TEST

/* A cache that is not where the context computes is refused. */
START_TEST(test_wrong_cache)
{
	lmk_llama m;
	lmk_ctx gc;
	lmk_kvcache kv;
	float *logits = malloc(sizeof(float) * (size_t)cases[0].V);
	int32_t t = 1;
	make_model(&m, &cases[0], 0);
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_F32), 0);
	ck_assert_int_eq(lmk_params_to_device(&m.params, &gc), 0);
	ck_assert_int_eq(lmk_kvcache_init(&kv, &m, 8), 0);
	ck_assert_int_eq(lmk_llama_decode(&gc, &m, &kv, &t, 1, logits), LMK_EINVAL);
	lmk_kvcache_free(&kv);
	lmk_ctx bc;
	ck_assert_int_eq(lmk_ctx_init_ex(&bc, LMK_DEV_CUDA, 0, LMK_BF16), 0);
	ck_assert_int_eq(lmk_kvcache_init_ctx(&kv, &m, 8, &bc), 0);
	ck_assert_int_eq(lmk_llama_decode(&gc, &m, &kv, &t, 1, logits), LMK_EINVAL);
	lmk_kvcache_free(&kv);
	lmk_ctx_free(&bc);
	/* overflow */
	ck_assert_int_eq(lmk_kvcache_init_ctx(&kv, &m, 1, &gc), 0);
	int32_t two[2] = {1, 2};
	ck_assert_int_eq(lmk_llama_decode(&gc, &m, &kv, two, 2, logits), LMK_EINVAL);
	lmk_kvcache_free(&kv);
	lmk_llama_free(&m);
	lmk_ctx_free(&gc);
	free(logits);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_decode: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SMALL");
	if (s && *s && strcmp(s, "0") != 0) {
		g_ngen = 8;
		g_gp = 1016;
		g_gstep = 10;
		g_graph_all = 0;
		g_nbstep = 4;
		printf("test_cuda_decode: LMK_TEST_SMALL: %d tokens generated, %d + %d for the "
		       "graph (%s F32, %s BF16, the others skipped), %d batched steps\n", g_ngen,
		       g_gp, g_gstep, gcases[0].name, gcases[2].name, g_nbstep);
		fflush(stdout);
	}
	Suite *su = suite_create("cuda_decode");
	/* cases of their own, so that compute-sanitizer can run them side by
	 * side (CK_RUN_CASE=graph ...) */
	TCase *tc = tcase_create("decode");
	tcase_add_loop_test(tc, test_decode_f32, 0, NCASES);
	tcase_add_loop_test(tc, test_decode_bf16, 0, NCASES);
	TCase *tg = tcase_create("graph");
	tcase_add_loop_test(tg, test_graph_f32, 0, NGCASES);
	tcase_add_loop_test(tg, test_graph_bf16, 0, NGCASES);
	TCase *tb = tcase_create("batch");
	tcase_add_loop_test(tb, test_batch_f32, 0, NCASES);
	tcase_add_loop_test(tb, test_batch_bf16, 0, NCASES);
	TCase *tm = tcase_create("mixer");
	tcase_add_loop_test(tm, test_mixer_f32, 0, LMK_MIXER_NKINDS);
	tcase_add_loop_test(tm, test_mixer_bf16, 0, LMK_MIXER_NKINDS);
	tcase_add_test(tm, test_wrong_cache);
	TCase *all[] = {tc, tg, tb, tm};
	for (int i = 0; i < 4; i++) {
		tcase_set_timeout(all[i], 240);
		suite_add_tcase(su, all[i]);
	}
	SRunner *sr = srunner_create(su);
	/* CUDA is initialised in this process: a forked child cannot use it */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda_decode: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
