/* test_cuda_train.c: lmk_trainer's step on one GPU (lib/train.c
 * step_device), which queues everything and waits once, and the same step
 * replayed as a CUDA graph.
 *  - A tiny Llama on text, 7 steps eagerly (cfg.cuda_graph 0) and 7 steps
 *    (5 and 5 under LMK_TEST_SMALL) with the graph (recorded at step 2, an evaluation between steps 4 and
 *    5): the same losses, norms and learning rates, and the same weights
 *    and moments, bit for bit; in BF16 and F32, with 1 and 2 micro-batches.
 *  - Losses that cannot be replayed (dropout's random numbers; a count read
 *    on the host, which waits): the graph is given up with a note, and the
 *    steps run eagerly with the same bits.
 *  - Ids beyond the model's vocabulary in step 4: the step fails with the
 *    message of the device's error word, the weights and the moments stay
 *    those of step 3 and the step count does not move, with the graph as
 *    without.
 * Exits 77 without a device or in a CPU-only build. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "llama.h"
#include "ops.h"
#include "train.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

#define STEPS 7
/* LMK_TEST_SMALL (for compute-sanitizer): 5 steps, still the graph
 * recorded at step 2 and replayed after the evaluation */
static int g_steps = STEPS;

static lmk_tensor *loss_fn(void *model, lmk_ctx *c, lmk_tensor *ids, lmk_tensor *tg, int64_t *count)
{
	return lmk_cross_entropy(c, lmk_llama_forward(c, model, ids, NULL, NULL), tg, -1, count);
}

/* Two losses a step cannot be replayed with: one drawing random numbers
 * (dropout advances the context's counter, which a replay would not), one
 * reading the device on the host (the count, which waits: the recording
 * fails). */
static lmk_tensor *loss_dropout(void *model, lmk_ctx *c, lmk_tensor *ids, lmk_tensor *tg,
				int64_t *count)
{
	lmk_tensor *h = lmk_dropout(c, lmk_llama_forward(c, model, ids, NULL, NULL), 0.1f);
	return lmk_cross_entropy(c, h, tg, -1, count);
}

static lmk_tensor *loss_count(void *model, lmk_ctx *c, lmk_tensor *ids, lmk_tensor *tg,
			      int64_t *count)
{
	int64_t n;
	return lmk_cross_entropy(c, lmk_llama_forward(c, model, ids, NULL, NULL), tg, -1,
				 count ? count : &n);
}

static void text(lmk_tokdata *d)
{
	char buf[20000];
	size_t n = 0;
	for (int i = 0; n + 80 < sizeof buf; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "line %d: the quick brown fox, %d\n",
				      i * 7 % 101, i % 13);
	ck_assert_int_eq(lmk_tokdata_load_text(d, "text", buf, n), 0);
	ck_assert_int_eq(lmk_tokdata_split(d, 0.1), 0);
}

static void tiny(lmk_llama *m, int vocab)
{
	lmk_llama_config cfg;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 64;
	cfg.intermediate_size = 96;
	cfg.num_hidden_layers = 2;
	cfg.num_attention_heads = 2;
	cfg.num_key_value_heads = 1;
	cfg.head_dim = 32;
	cfg.vocab_size = vocab;
	cfg.max_position_embeddings = 64;
	cfg.tie_word_embeddings = 1;
	ck_assert_msg(lmk_llama_init(m, &cfg, 1) == 0, "%s", lmk_errmsg());
	lmk_llama_init_weights(m, 3);
}

static void config(lmk_train_config *c, lmk_dtype dt, int accum, int graph)
{
	lmk_train_config_default(c);
	c->batch = 3;
	c->seq = 32;
	c->accum = accum;
	c->steps = g_steps;
	c->warmup = 2;
	c->eval_batches = 2;
	c->device = LMK_DEV_CUDA;
	c->dtype = dt;
	c->seed = 17;
	c->cuda_graph = graph;
}

/* What a run leaves: every step's numbers, the weights and the moments. */
struct run {
	lmk_train_stats st[STEPS];
	double val;
	float *w, *m, *v;
	size_t n;
	int64_t t;
};

/* g_steps steps (an evaluation after the 4th) with loss fn; the graph, if
 * asked for, is used unless fallback (then it must have given up). */
static void train(struct run *r, lmk_dtype dt, int accum, int graph, lmk_train_loss_fn fn,
		  int fallback)
{
	lmk_tokdata d;
	lmk_llama m;
	lmk_trainer tr;
	lmk_train_config c;

	text(&d);
	tiny(&m, 256);
	config(&c, dt, accum, graph);
	ck_assert_msg(lmk_trainer_init(&tr, &c, &m.params, &m, fn, &d) == 0, "%s", lmk_errmsg());
	for (int s = 0; s < g_steps; s++) {
		ck_assert_msg(lmk_trainer_step(&tr, &r->st[s]) == 0, "step %d: %s", s + 1, lmk_errmsg());
		if (s == 3)
			ck_assert_int_eq(lmk_trainer_eval(&tr, &r->val), 0);
	}
	if (graph && fallback) {
		ck_assert_ptr_nonnull(strstr(tr.graph_note, "cuda graph: "));
		ck_assert_int_eq(tr.cfg.cuda_graph, 0);
	} else {
		ck_assert_msg(tr.graph_note[0] == 0, "%s", tr.graph_note);
		ck_assert_int_eq(tr.cfg.cuda_graph, graph);
	}
	r->n = m.params.n;
	r->w = malloc(r->n * sizeof(float));
	r->m = malloc(r->n * sizeof(float));
	r->v = malloc(r->n * sizeof(float));
	ck_assert_int_eq(lmk_params_copy_to_host(&m.params, 0, r->w), 0);
	ck_assert_int_eq(lmk_adamw_moments_to_host(&tr.opt, r->m, r->v), 0);
	r->t = tr.opt.t;
	ck_assert_int_eq(tr.step, g_steps);
	lmk_llama_free(&m);
	lmk_trainer_free(&tr);
	lmk_tokdata_free(&d);
}

static void run_free(struct run *r)
{
	free(r->w);
	free(r->m);
	free(r->v);
}

static void same_runs(lmk_dtype dt, int accum, lmk_train_loss_fn fn, int fallback)
{
	struct run e, g;
	train(&e, dt, accum, 0, fn, 0);
	train(&g, dt, accum, 1, fn, fallback);
	for (int s = 0; s < g_steps; s++) {
		ck_assert_msg(memcmp(&e.st[s].loss, &g.st[s].loss, sizeof(double)) == 0,
			      "step %d: loss %.17g eager, %.17g graph", s + 1, e.st[s].loss, g.st[s].loss);
		ck_assert_msg(memcmp(&e.st[s].grad_norm, &g.st[s].grad_norm, sizeof(double)) == 0,
			      "step %d: norm %.17g eager, %.17g graph", s + 1, e.st[s].grad_norm,
			      g.st[s].grad_norm);
		ck_assert(e.st[s].lr == g.st[s].lr);
		ck_assert(isfinite(e.st[s].loss) && e.st[s].grad_norm > 0);
	}
	ck_assert(e.st[g_steps - 1].loss < e.st[0].loss);
	ck_assert(memcmp(&e.val, &g.val, sizeof e.val) == 0);
	ck_assert_int_eq(e.t, g_steps);
	ck_assert_int_eq(g.t, g_steps);
	ck_assert(e.n == g.n);
	ck_assert_msg(memcmp(e.w, g.w, e.n * sizeof(float)) == 0, "the weights differ");
	ck_assert_msg(memcmp(e.m, g.m, e.n * sizeof(float)) == 0, "the first moments differ");
	ck_assert_msg(memcmp(e.v, g.v, e.n * sizeof(float)) == 0, "the second moments differ");
	run_free(&e);
	run_free(&g);
}

START_TEST(test_graph_bf16) { same_runs(LMK_BF16, 1, loss_fn, 0); }
END_TEST
START_TEST(test_graph_bf16_accum) { same_runs(LMK_BF16, 2, loss_fn, 0); }
END_TEST
START_TEST(test_graph_f32) { same_runs(LMK_F32, 1, loss_fn, 0); }
END_TEST
START_TEST(test_graph_f32_accum) { same_runs(LMK_F32, 2, loss_fn, 0); }
END_TEST
/* the step runs eagerly instead, with the same bits */
START_TEST(test_graph_fallback_dropout) { same_runs(LMK_BF16, 2, loss_dropout, 1); }
END_TEST
START_TEST(test_graph_fallback_wait) { same_runs(LMK_BF16, 1, loss_count, 1); }
END_TEST

/* A stream of examples of ids below 90, but from example 9 on (the 4th
 * step's batch of 3) one id of 150 in each. */
static int gen(void *arg, int val, int64_t first, int B, int T, int32_t *x, int32_t *y)
{
	(void)arg;
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			int32_t v = (int32_t)(((first + b) * 7 + t * 3 + val) % 90);
			x[b * T + t] = v;
			y[b * T + t] = (v * 3 + 1) % 90;
		}
	for (int b = 0; b < B; b++)
		if (first + b >= 9)
			x[b * T + 5] = 150;
	return 0;
}

/* Ids beyond a vocabulary of 100 in step 4: it fails with the error word's
 * message, and its update is skipped on the device (replayed from a graph,
 * or not): the weights and moments of step 3, the step count 3. */
static void bad_ids(int graph)
{
	lmk_tokdata d;
	lmk_llama m;
	lmk_trainer tr;
	lmk_train_config c;
	lmk_train_stats st;
	float *w0, *w1, *m0, *m1, *v0, *v1;
	int rc = 0, s;

	ck_assert_int_eq(lmk_tokdata_init_gen(&d, "gen", gen, NULL, 32, 100, 4, 1), 0);
	tiny(&m, 100);
	config(&c, LMK_BF16, 1, graph);
	ck_assert_msg(lmk_trainer_init(&tr, &c, &m.params, &m, loss_fn, &d) == 0, "%s", lmk_errmsg());
	const size_t n = m.params.n;
	w0 = malloc(n * sizeof(float));
	w1 = malloc(n * sizeof(float));
	m0 = malloc(n * sizeof(float));
	m1 = malloc(n * sizeof(float));
	v0 = malloc(n * sizeof(float));
	v1 = malloc(n * sizeof(float));
	for (s = 0; s < 3; s++)
		ck_assert_msg(lmk_trainer_step(&tr, &st) == 0, "step %d: %s", s + 1, lmk_errmsg());
	ck_assert_int_eq(lmk_params_copy_to_host(&m.params, 0, w0), 0);
	ck_assert_int_eq(lmk_adamw_moments_to_host(&tr.opt, m0, v0), 0);
	rc = lmk_trainer_step(&tr, &st);
	ck_assert_int_eq(rc, LMK_EINVAL);
	ck_assert_msg(strstr(lmk_errmsg(), "an id was outside [0,V)") != NULL, "%s", lmk_errmsg());
	ck_assert_int_eq(tr.step, 3);
	ck_assert_int_eq(tr.opt.t, 3);
	ck_assert_int_eq(tr.cfg.cuda_graph, graph);
	ck_assert_int_eq(lmk_params_copy_to_host(&m.params, 0, w1), 0);
	ck_assert_int_eq(lmk_adamw_moments_to_host(&tr.opt, m1, v1), 0);
	ck_assert(memcmp(w0, w1, n * sizeof(float)) == 0);
	ck_assert(memcmp(m0, m1, n * sizeof(float)) == 0);
	ck_assert(memcmp(v0, v1, n * sizeof(float)) == 0);
	free(w0), free(w1), free(m0), free(m1), free(v0), free(v1);
	lmk_llama_free(&m);
	lmk_trainer_free(&tr);
	lmk_tokdata_free(&d);
}

START_TEST(test_bad_ids_eager) { bad_ids(0); }
END_TEST
START_TEST(test_bad_ids_graph) { bad_ids(1); }
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_train: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *small = getenv("LMK_TEST_SMALL");
	if (small && *small && strcmp(small, "0") != 0) {
		g_steps = 5;
		printf("test_cuda_train: LMK_TEST_SMALL: %d steps a run\n", g_steps);
		fflush(stdout);
	}
	Suite *s = suite_create("cuda_train");
	/* a case of its own for each pair of runs, so that compute-sanitizer
	 * can run them side by side (CK_RUN_CASE=bf16 ...) */
	const struct {
		const char *name;
		const TTest *test;
	} cases[] = {
		{"bf16", test_graph_bf16},
		{"bf16_accum", test_graph_bf16_accum},
		{"f32", test_graph_f32},
		{"f32_accum", test_graph_f32_accum},
		{"fallback_dropout", test_graph_fallback_dropout},
		{"fallback_wait", test_graph_fallback_wait},
		{"bad_ids_eager", test_bad_ids_eager},
		{"bad_ids_graph", test_bad_ids_graph},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_set_timeout(tc, 120);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	SRunner *sr = srunner_create(s);
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
	printf("test_cuda_train: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
