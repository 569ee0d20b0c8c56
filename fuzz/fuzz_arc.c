/* fuzz_arc.c: libFuzzer target for ARC task files and submissions
 * (lib/arc). The input is loaded as a task file, Kaggle challenges or
 * solutions (bad tasks skipped through the callback), and read as a
 * submission; it is also parsed as a model's answer. Every task that loads
 * must satisfy the grid invariants, format, give its target back through
 * lmk_arc_parse_grid, survive a transformation and its inverse, give its
 * leave-one-out tasks and training examples, and be scored. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arc.h"
#include "bytetok.h"
#include "err.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int nbad;

static void bad(void *arg, const char *msg)
{
	CHECK(msg && msg[0] && !strchr(msg, '\n'));
	nbad++;
}

static void grid_ok(const lmk_arc_grid *g, int may_be_none)
{
	if (g->h == 0) {
		CHECK(may_be_none && g->w == 0);
		return;
	}
	CHECK(g->h <= LMK_ARC_MAXSIDE && g->w >= 1 && g->w <= LMK_ARC_MAXSIDE);
	for (int i = 0; i < g->h * g->w; i++)
		CHECK(g->c[i] <= 9);
}

static int encode(void *arg, const char *text, size_t len, int32_t *out, int cap)
{
	if ((size_t)cap < len)
		return (int)len;
	return (int)lmk_bytetok_encode(text, len, out, 0);
}

static void exercise(const lmk_arc_task *t, uint64_t seed)
{
	lmk_rng r;
	lmk_arc_tf tf;
	lmk_arc_task a, *loo;
	lmk_arc_grid g, back;

	CHECK(t->id && t->id[0]);
	CHECK(t->ntest >= 1 && t->ntest <= LMK_ARC_MAXPAIRS && t->ntrain <= LMK_ARC_MAXPAIRS);
	for (int k = 0; k < t->ntrain; k++) {
		grid_ok(&t->train[k].in, 0);
		grid_ok(&t->train[k].out, 0);
	}
	for (int k = 0; k < t->ntest; k++) {
		grid_ok(&t->test[k].in, t->ntrain == 0);
		grid_ok(&t->test[k].out, 1);
	}
	if (t->ntrain == 0)
		return;
	for (int k = 0; k < t->ntest; k++) {
		char *p, *q;
		CHECK(lmk_arc_format(t, k, &p, &q) == 0);
		if (q) {
			CHECK(lmk_arc_parse_grid(q, strlen(q), &g) == 1);
			CHECK(lmk_arc_grid_eq(&g, &t->test[k].out));
		}
		free(p);
		free(q);
	}
	lmk_rng_init(&r, seed);
	lmk_arc_tf_random(&tf, &r, t->ntrain, LMK_ARC_AUG_ALL);
	CHECK(lmk_arc_task_apply(&a, t, &tf) == 0);
	for (int k = 0; k < t->ntrain; k++) {
		lmk_arc_grid_invert(&back, &a.train[k].out, &tf);
		CHECK(lmk_arc_grid_eq(&back, &t->train[tf.norder ? tf.order[k] : k].out));
	}
	lmk_arc_task_free(&a);
	int n = lmk_arc_ttt_tasks(t, 2 * t->ntrain + 1, LMK_ARC_AUG_ALL, seed, &loo);
	if (t->ntrain < 2) {
		CHECK(n == LMK_EINVAL && !loo);
		return;
	}
	CHECK(n == 2 * t->ntrain + 1);
	lmk_arc_example_opts o = {encode, NULL, LMK_BYTETOK_BOS, LMK_BYTETOK_EOS, 4096, (int)(seed & 1)};
	lmk_arc_examples e = {0};
	CHECK(lmk_arc_examples_add(&e, loo, n, &o) >= 0);
	CHECK(e.n + e.dropped == n);
	for (int i = 0; i < e.n; i++)
		CHECK(e.ex[i].n <= 4096 && e.ex[i].mask[e.ex[i].n - 1] == 1);
	lmk_arc_examples_free(&e);
	lmk_arc_tasks_free(loo, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lmk_arc_set s;
	lmk_arc_sub sub;
	lmk_arc_grid g;
	int rc;

	/* as a model's answer */
	if (lmk_arc_parse_grid((const char *)data, size, &g))
		grid_ok(&g, 0);
	else
		CHECK(g.h == 0);

	nbad = 0;
	rc = lmk_arc_load_mem(&s, "fuzz.json", data, size, bad, NULL);
	if (rc >= 0) {
		CHECK(rc == nbad);
		for (int i = 0; i < s.n; i++) {
			if (i)
				CHECK(strcmp(s.t[i - 1].id, s.t[i].id) < 0);
			CHECK(lmk_arc_set_find(&s, s.t[i].id) == &s.t[i]);
			exercise(&s.t[i], (uint64_t)size + (uint64_t)i);
		}
	} else {
		CHECK(s.n == 0 && s.t == NULL && lmk_errmsg()[0]);
	}

	if (lmk_arc_sub_read_mem(&sub, "fuzz.json", data, size) == 0) {
		lmk_arc_score tot;
		for (int i = 0; i < sub.n; i++)
			for (int a = 0; a < 2 * sub.t[i].ntest; a++)
				grid_ok(&sub.t[i].att[a], 1);
		/* scored against itself when the tasks have outputs everywhere */
		if (rc >= 0 && lmk_arc_score_sub(&s, &sub, NULL, &tot) == 0)
			CHECK(tot.tasks == s.n && tot.tests_solved <= tot.tests);
		lmk_arc_sub_free(&sub);
	} else {
		CHECK(sub.n == 0);
	}
	if (rc >= 0)
		lmk_arc_set_free(&s);
	return 0;
}
