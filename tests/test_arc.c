/* test_arc.c: ARC tasks (lib/arc): the 8 symmetries against hand-worked
 * grids, each inverse and every composition on random grids of shapes from
 * 1x1 to 30x30; colour permutations and demonstration orders; leave-one-out
 * sets; the text form exactly, its round trip for random grids (also through
 * the byte tokenizer and, when models/smollm2-135m-instruct.gguf is there,
 * SmolLM2's BPE), and parsing of malformed model output; training examples
 * and their loss masks; voting on crafted predictions and through fake
 * predictors; submissions written and read back, and pass@2 scores of a
 * hand-made submission; every class of bad task file and its message; and
 * all 400 training and 200 evaluation tasks of ARC-AGI-1 under $LMK_DATA
 * (default $LMK_ROOT/../shared/data), skipped when absent.
 * Fixtures are under $LMK_ROOT (default ".")/tests/fixtures/arc. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arc.h"
#include "bpe.h"
#include "bytetok.h"
#include "err.h"
#include "rng.h"

static const char *root(void)
{
	const char *r = getenv("LMK_ROOT");
	return r ? r : ".";
}

/* One of four rotating buffers: "ROOT/tests/fixtures/arc/NAME". */
static const char *fx(const char *name)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ & 3];
	snprintf(b, sizeof buf[0], "%s/tests/fixtures/arc/%s", root(), name);
	return b;
}

static void random_grid(lmk_arc_grid *g, lmk_rng *r, int h, int w, int colours)
{
	memset(g, 0, sizeof *g);
	g->h = (uint8_t)h;
	g->w = (uint8_t)w;
	for (int i = 0; i < h * w; i++)
		g->c[i] = (uint8_t)lmk_rng_below(r, (uint64_t)colours);
}

static lmk_arc_grid grid_of(int h, int w, const int *cells)
{
	lmk_arc_grid g;
	memset(&g, 0, sizeof g);
	g.h = (uint8_t)h;
	g.w = (uint8_t)w;
	for (int i = 0; i < h * w; i++)
		g.c[i] = (uint8_t)cells[i];
	return g;
}

/* Shapes that hit 1, odd sizes, non-squares both ways and the largest. */
static const int shapes[][2] = {
	{1, 1}, {1, 30}, {30, 1}, {2, 3}, {3, 2}, {7, 5}, {13, 17}, {29, 30}, {30, 30},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* ---- symmetries ---- */

START_TEST(test_dihedral_known)
{
	/* 0 1 2
	 * 3 4 5 */
	const int src[] = {0, 1, 2, 3, 4, 5};
	static const struct { int d, h, w, c[6]; } want[] = {
		{LMK_ARC_ID, 2, 3, {0, 1, 2, 3, 4, 5}},
		{LMK_ARC_FLIPH, 2, 3, {2, 1, 0, 5, 4, 3}},
		{LMK_ARC_FLIPV, 2, 3, {3, 4, 5, 0, 1, 2}},
		{LMK_ARC_ROT180, 2, 3, {5, 4, 3, 2, 1, 0}},
		{LMK_ARC_TRANSPOSE, 3, 2, {0, 3, 1, 4, 2, 5}},
		{LMK_ARC_ROT90, 3, 2, {3, 0, 4, 1, 5, 2}},
		{LMK_ARC_ROT270, 3, 2, {2, 5, 1, 4, 0, 3}},
		{LMK_ARC_ANTITRANSPOSE, 3, 2, {5, 2, 4, 1, 3, 0}},
	};
	lmk_arc_grid g = grid_of(2, 3, src), out;

	for (int i = 0; i < 8; i++) {
		lmk_arc_grid e = grid_of(want[i].h, want[i].w, want[i].c);
		lmk_arc_grid_dihedral(&out, &g, want[i].d);
		ck_assert_msg(lmk_arc_grid_eq(&out, &e), "%s", lmk_arc_dihedral_name(want[i].d));
	}
	ck_assert_str_eq(lmk_arc_dihedral_name(LMK_ARC_ROT90), "rot90");
	ck_assert_ptr_null(lmk_arc_dihedral_name(8));
	ck_assert_ptr_null(lmk_arc_dihedral_name(-1));
}
END_TEST

START_TEST(test_dihedral_inverse_and_compose)
{
	lmk_rng r;
	lmk_arc_grid g, a, b, c;
	int h = shapes[_i][0], w = shapes[_i][1];

	lmk_rng_init(&r, 100 + (uint64_t)_i);
	random_grid(&g, &r, h, w, 10);
	for (int d = 0; d < 8; d++) {
		lmk_arc_grid_dihedral(&a, &g, d);
		ck_assert_int_eq(a.h, d & 4 ? w : h);
		ck_assert_int_eq(a.w, d & 4 ? h : w);
		lmk_arc_grid_dihedral(&b, &a, lmk_arc_dihedral_inverse(d));
		ck_assert_msg(lmk_arc_grid_eq(&b, &g), "inverse of %s", lmk_arc_dihedral_name(d));
		for (int e = 0; e < 8; e++) {
			lmk_arc_grid_dihedral(&b, &a, e);
			lmk_arc_grid_dihedral(&c, &g, lmk_arc_dihedral_compose(d, e));
			ck_assert_msg(lmk_arc_grid_eq(&b, &c), "%s then %s", lmk_arc_dihedral_name(d),
				      lmk_arc_dihedral_name(e));
		}
	}
}
END_TEST

START_TEST(test_dihedral_group)
{
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_ROT90, LMK_ARC_ROT90), LMK_ARC_ROT180);
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_ROT180, LMK_ARC_ROT90), LMK_ARC_ROT270);
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_ROT270, LMK_ARC_ROT90), LMK_ARC_ID);
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_FLIPH, LMK_ARC_FLIPV), LMK_ARC_ROT180);
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_TRANSPOSE, LMK_ARC_FLIPH), LMK_ARC_ROT90);
	ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_TRANSPOSE, LMK_ARC_ROT180),
			 LMK_ARC_ANTITRANSPOSE);
	for (int d = 0; d < 8; d++) {
		ck_assert_int_eq(lmk_arc_dihedral_compose(d, lmk_arc_dihedral_inverse(d)), LMK_ARC_ID);
		ck_assert_int_eq(lmk_arc_dihedral_compose(LMK_ARC_ID, d), d);
		/* associativity over all triples */
		for (int e = 0; e < 8; e++)
			for (int f = 0; f < 8; f++)
				ck_assert_int_eq(lmk_arc_dihedral_compose(lmk_arc_dihedral_compose(d, e), f),
						 lmk_arc_dihedral_compose(d, lmk_arc_dihedral_compose(e, f)));
	}
}
END_TEST

START_TEST(test_tf_random_and_invert)
{
	lmk_rng r, r2;
	lmk_arc_grid g, a, b;
	lmk_arc_tf t, t2;
	int h = shapes[_i][0], w = shapes[_i][1];
	static const unsigned flagsets[] = {
		0, LMK_ARC_AUG_DIHEDRAL, LMK_ARC_AUG_COLOURS,
		LMK_ARC_AUG_COLOURS | LMK_ARC_AUG_KEEP0, LMK_ARC_AUG_ALL,
		LMK_ARC_AUG_ALL | LMK_ARC_AUG_KEEP0,
	};

	lmk_rng_init(&r, 7 + (uint64_t)_i);
	random_grid(&g, &r, h, w, 10);
	r2 = r;
	for (int f = 0; f < (int)(sizeof flagsets / sizeof *flagsets); f++)
		for (int rep = 0; rep < 40; rep++) {
			unsigned flags = flagsets[f];
			int seen[10] = {0}, fixed0 = 1;
			lmk_arc_tf_random(&t, &r, 5, flags);
			lmk_arc_tf_random(&t2, &r2, 5, flags);
			ck_assert_mem_eq(&t, &t2, sizeof t);  /* seeded: the same draws */
			for (int c = 0; c < 10; c++)
				seen[t.perm[c]]++;
			for (int c = 0; c < 10; c++) {
				ck_assert_int_eq(seen[c], 1);
				if (!(flags & LMK_ARC_AUG_COLOURS))
					ck_assert_int_eq(t.perm[c], c);
			}
			fixed0 = t.perm[0] == 0;
			if (flags & LMK_ARC_AUG_KEEP0)
				ck_assert(fixed0);
			if (!(flags & LMK_ARC_AUG_DIHEDRAL))
				ck_assert_int_eq(t.dihedral, 0);
			ck_assert_int_eq(t.norder, flags & LMK_ARC_AUG_ORDER ? 5 : 0);
			lmk_arc_grid_apply(&a, &g, &t);
			lmk_arc_grid_invert(&b, &a, &t);
			ck_assert(lmk_arc_grid_eq(&b, &g));
			/* apply is the symmetry of the recoloured grid */
			lmk_arc_grid_dihedral(&b, &g, t.dihedral);
			for (int i = 0; i < b.h * b.w; i++)
				ck_assert_int_eq(a.c[i], t.perm[b.c[i]]);
		}
	/* with colours drawn, 0 moves sometimes unless kept */
	int moved = 0;
	for (int rep = 0; rep < 100; rep++) {
		lmk_arc_tf_random(&t, &r, 1, LMK_ARC_AUG_COLOURS);
		moved += t.perm[0] != 0;
		ck_assert_int_eq(t.norder, 0);  /* one pair has no order to change */
	}
	ck_assert_int_gt(moved, 50);
}
END_TEST

/* A task of n demonstrations and two test pairs, shapes varying. */
static void make_task(lmk_arc_task *t, lmk_rng *r, const char *id, int n)
{
	memset(t, 0, sizeof *t);
	t->id = strdup(id);
	t->ntrain = n;
	t->ntest = 2;
	t->train = calloc((size_t)n, sizeof *t->train);
	t->test = calloc(2, sizeof *t->test);
	for (int k = 0; k < n + 2; k++) {
		lmk_arc_pair *p = k < n ? &t->train[k] : &t->test[k - n];
		int h = 1 + (int)lmk_rng_below(r, 30), w = 1 + (int)lmk_rng_below(r, 30);
		random_grid(&p->in, r, h, w, 10);
		random_grid(&p->out, r, w, h, 10);
	}
	t->test[1].out.h = t->test[1].out.w = 0;  /* an unknown output */
}

START_TEST(test_task_apply)
{
	lmk_rng r;
	lmk_arc_task t, a;
	lmk_arc_tf tf;
	lmk_arc_grid g;

	lmk_rng_init(&r, 3);
	make_task(&t, &r, "cafe0001", 4);
	for (int rep = 0; rep < 20; rep++) {
		lmk_arc_tf_random(&tf, &r, 4, LMK_ARC_AUG_ALL);
		ck_assert_int_eq(lmk_arc_task_apply(&a, &t, &tf), 0);
		ck_assert_str_eq(a.id, t.id);
		ck_assert_int_eq(a.ntrain, 4);
		ck_assert_int_eq(a.ntest, 2);
		for (int k = 0; k < 4; k++) {
			lmk_arc_grid_invert(&g, &a.train[k].in, &tf);
			ck_assert(lmk_arc_grid_eq(&g, &t.train[tf.order[k]].in));
			lmk_arc_grid_invert(&g, &a.train[k].out, &tf);
			ck_assert(lmk_arc_grid_eq(&g, &t.train[tf.order[k]].out));
		}
		for (int k = 0; k < 2; k++) {
			lmk_arc_grid_invert(&g, &a.test[k].in, &tf);
			ck_assert(lmk_arc_grid_eq(&g, &t.test[k].in));
		}
		ck_assert_int_eq(a.test[1].out.h, 0);
		lmk_arc_task_free(&a);
	}
	/* a deep copy is equal and apart */
	ck_assert_int_eq(lmk_arc_task_copy(&a, &t), 0);
	ck_assert_str_eq(a.id, t.id);
	ck_assert(a.id != t.id && a.train != t.train);
	ck_assert_mem_eq(a.train, t.train, 4 * sizeof *t.train);
	ck_assert_mem_eq(a.test, t.test, 2 * sizeof *t.test);
	lmk_arc_task_free(&a);
	/* an order that is not a permutation of the pairs */
	lmk_arc_tf_identity(&tf);
	tf.norder = 4;
	tf.order[0] = 0, tf.order[1] = 1, tf.order[2] = 1, tf.order[3] = 3;
	ck_assert_int_eq(lmk_arc_task_apply(&a, &t, &tf), LMK_EINVAL);
	tf.norder = 3;
	ck_assert_int_eq(lmk_arc_task_apply(&a, &t, &tf), LMK_EINVAL);
	lmk_arc_tf_identity(&tf);
	tf.perm[1] = 2;
	ck_assert_int_eq(lmk_arc_task_apply(&a, &t, &tf), LMK_EINVAL);
	char buf[128];
	lmk_arc_tf_identity(&tf);
	tf.dihedral = LMK_ARC_ROT90;
	tf.norder = 3;
	tf.order[0] = 2, tf.order[1] = 0, tf.order[2] = 1;
	tf.perm[2] = 3, tf.perm[3] = 2;
	lmk_arc_tf_describe(&tf, buf, sizeof buf);
	ck_assert_str_eq(buf, "rot90 colours 0132456789 order 2,0,1");
	lmk_arc_task_free(&t);
}
END_TEST

START_TEST(test_tf_plan)
{
	lmk_rng r;
	lmk_arc_tf tfs[64];
	int n;

	lmk_rng_init(&r, 1);
	n = lmk_arc_tf_plan(tfs, 64, 3, 4, LMK_ARC_AUG_ALL, &r);
	ck_assert_int_eq(n, 32);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(tfs[i].dihedral, i / 4);
		if (i % 4 == 0) {
			for (int c = 0; c < 10; c++)
				ck_assert_int_eq(tfs[i].perm[c], c);
			ck_assert_int_eq(tfs[i].norder, 0);
		} else {
			ck_assert_int_eq(tfs[i].norder, 3);
		}
	}
	ck_assert_int_eq(lmk_arc_tf_plan(tfs, 10, 3, 4, LMK_ARC_AUG_ALL, &r), 10);
	n = lmk_arc_tf_plan(tfs, 64, 3, 5, LMK_ARC_AUG_COLOURS, &r);
	ck_assert_int_eq(n, 5);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(tfs[i].dihedral, 0);
}
END_TEST

/* ---- leave-one-out ---- */

START_TEST(test_loo)
{
	lmk_rng r;
	lmk_arc_task t, *o, *o2;
	int n;

	lmk_rng_init(&r, 11);
	make_task(&t, &r, "0a1b2c3d", 3);
	n = lmk_arc_loo(&t, &o);
	ck_assert_int_eq(n, 3);
	for (int k = 0; k < 3; k++) {
		char id[32];
		snprintf(id, sizeof id, "0a1b2c3d/%d", k);
		ck_assert_str_eq(o[k].id, id);
		ck_assert_int_eq(o[k].ntrain, 2);
		ck_assert_int_eq(o[k].ntest, 1);
		ck_assert(lmk_arc_grid_eq(&o[k].test[0].in, &t.train[k].in));
		ck_assert(lmk_arc_grid_eq(&o[k].test[0].out, &t.train[k].out));
		/* the others, in their order */
		for (int i = 0, j = 0; i < 3; i++)
			if (i != k)
				ck_assert(lmk_arc_grid_eq(&o[k].train[j++].in, &t.train[i].in));
	}
	lmk_arc_tasks_free(o, n);

	/* the paper's 250, seeded */
	n = lmk_arc_ttt_tasks(&t, 250, LMK_ARC_AUG_ALL, 42, &o);
	ck_assert_int_eq(n, 250);
	ck_assert_int_eq(lmk_arc_ttt_tasks(&t, 250, LMK_ARC_AUG_ALL, 42, &o2), 250);
	int differ = 0;
	for (int j = 0; j < 250; j++) {
		const lmk_arc_pair *held = &t.train[j % 3];
		const lmk_arc_grid *in = &o[j].test[0].in;
		ck_assert_int_eq(o[j].ntrain, 2);
		ck_assert_int_eq(o[j].ntest, 1);
		/* the held-out pair, turned by a symmetry or not */
		ck_assert((in->h == held->in.h && in->w == held->in.w) ||
			  (in->h == held->in.w && in->w == held->in.h));
		if (j < 3)
			ck_assert(lmk_arc_grid_eq(in, &held->in));
		ck_assert(lmk_arc_grid_eq(in, &o2[j].test[0].in));
		ck_assert(lmk_arc_grid_eq(&o[j].train[0].out, &o2[j].train[0].out));
		differ += !lmk_arc_grid_eq(in, &held->in);
	}
	ck_assert_int_gt(differ, 200);
	lmk_arc_tasks_free(o2, n);
	ck_assert_int_eq(lmk_arc_ttt_tasks(&t, 250, LMK_ARC_AUG_ALL, 43, &o2), 250);
	differ = 0;
	for (int j = 3; j < 250; j++)
		differ += !lmk_arc_grid_eq(&o[j].test[0].in, &o2[j].test[0].in);
	ck_assert_int_gt(differ, 100);
	lmk_arc_tasks_free(o, n);
	lmk_arc_tasks_free(o2, n);

	/* one demonstration has nothing to leave out */
	t.ntrain = 1;
	ck_assert_int_eq(lmk_arc_loo(&t, &o), LMK_EINVAL);
	ck_assert_ptr_null(o);
	ck_assert(strstr(lmk_errmsg(), "0a1b2c3d") != NULL);
	t.ntrain = 3;
	ck_assert_int_eq(lmk_arc_ttt_tasks(&t, 0, 0, 1, &o), LMK_EINVAL);
	lmk_arc_task_free(&t);
}
END_TEST

/* ---- text form ---- */

START_TEST(test_format_exact)
{
	lmk_arc_set s;
	char *p, *q;

	ck_assert_int_eq(lmk_arc_load(&s, fx("tasks"), NULL, NULL), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_str_eq(s.t[0].id, "aa000001");
	ck_assert_int_eq(lmk_arc_format(&s.t[1], 1, &p, &q), 0);
	ck_assert_str_eq(p, "I\n123\nO\n1\n2\n3\nE\nI\n45\nO\n4\n5\nE\nI\n6\nO\n6\nE\nI\n9090\nO\n");
	ck_assert_str_eq(q, "9\n0\n9\n0\nE\n");
	free(p);
	free(q);
	ck_assert_int_eq(lmk_arc_format(&s.t[1], 2, &p, &q), LMK_EINVAL);
	ck_assert_ptr_null(p);
	lmk_arc_set_free(&s);
	/* challenges without solutions: no target */
	ck_assert_int_eq(lmk_arc_load(&s, fx("challenges.json"), NULL, NULL), 0);
	ck_assert_int_eq(lmk_arc_format(&s.t[0], 0, &p, &q), 0);
	ck_assert_ptr_null(q);
	ck_assert_str_eq(p, "I\n10\n00\nO\n01\n00\nE\nI\n00\n20\nO\n00\n02\nE\nI\n30\n00\nO\n");
	free(p);
	lmk_arc_set_free(&s);
}
END_TEST

START_TEST(test_text_round_trip)
{
	lmk_rng r;
	lmk_arc_grid g, back;
	char buf[LMK_ARC_MAXSIDE * (LMK_ARC_MAXSIDE + 1) + 4];
	int32_t ids[sizeof buf + 2];
	char dec[sizeof buf + 20];

	lmk_rng_init(&r, 5);
	for (int rep = 0; rep < 300; rep++) {
		int h = rep < NSHAPES ? shapes[rep][0] : 1 + (int)lmk_rng_below(&r, 30);
		int w = rep < NSHAPES ? shapes[rep][1] : 1 + (int)lmk_rng_below(&r, 30);
		random_grid(&g, &r, h, w, 10);
		size_t n = lmk_arc_grid_text(&g, buf);
		ck_assert_uint_eq(n, (size_t)h * (w + 1));
		ck_assert_int_eq(lmk_arc_parse_grid(buf, n, &back), 1);
		ck_assert(lmk_arc_grid_eq(&back, &g));
		/* the target as a model would produce it: rows, end marker, eos */
		strcpy(buf + n, LMK_ARC_END);
		size_t m = lmk_bytetok_encode(buf, n + 2, ids, LMK_BYTETOK_ADD_EOS);
		ck_assert_uint_eq(m, n + 3);
		size_t d = lmk_bytetok_decode(ids, m, dec, sizeof dec, LMK_BYTETOK_SKIP_SPECIAL);
		ck_assert_int_eq(lmk_arc_parse_grid(dec, d, &back), 1);
		ck_assert(lmk_arc_grid_eq(&back, &g));
		/* without the final newline */
		ck_assert_int_eq(lmk_arc_parse_grid(buf, n - 1, &back), 1);
		ck_assert(lmk_arc_grid_eq(&back, &g));
	}
}
END_TEST

START_TEST(test_parse_malformed)
{
	static const struct { const char *text; int h, w; } cases[] = {
		{"", 0, 0},
		{"E\n", 0, 0},
		{"abc", 0, 0},
		{"\n\n  \n", 0, 0},
		{"12\n3\n", 0, 0},          /* ragged */
		{"12\n345\nE\n", 0, 0},
		{"12\n34\nE\n", 2, 2},
		{"12\n34\nE\nI\n99\n", 2, 2}, /* what follows the end is ignored */
		{"12\n34", 2, 2},           /* a last row without newline */
		{"12\n3", 0, 0},            /* a cut-off last row */
		{"12\r\n34\r\nE\r\n", 2, 2},
		{"  \n12\n34\n", 2, 2},     /* leading whitespace */
		{"1 2\n3 4\n", 0, 0},       /* not our form */
		{"12\n34\nx", 2, 2},
		{"12x\n34\n", 0, 0},
		{"12\n34x\n", 0, 0},         /* a line of digits then more */
		{"12\n345E\n", 0, 0},
		{"12\n3E\n", 0, 0},
		{"5\n", 1, 1},
		{"0000000000000000000000000000000\n", 0, 0}, /* 31 cells */
		{"000000000000000000000000000000\n", 1, 30},
	};
	lmk_arc_grid g;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int ok = lmk_arc_parse_grid(cases[i].text, strlen(cases[i].text), &g);
		ck_assert_msg(ok == (cases[i].h > 0), "case %zu", i);
		ck_assert_int_eq(g.h, cases[i].h);
		ck_assert_int_eq(g.w, cases[i].w);
	}
	/* 30 rows fit, 31 do not */
	char rows[31 * 2 + 1];
	for (int i = 0; i < 31; i++)
		rows[2 * i] = '7', rows[2 * i + 1] = '\n';
	ck_assert_int_eq(lmk_arc_parse_grid(rows, 60, &g), 1);
	ck_assert_int_eq(g.h, 30);
	ck_assert_int_eq(lmk_arc_parse_grid(rows, 62, &g), 0);
	/* random bytes never crash and give a valid grid or none */
	lmk_rng r;
	lmk_rng_init(&r, 9);
	char junk[2000];
	for (int rep = 0; rep < 2000; rep++) {
		size_t n = lmk_rng_below(&r, sizeof junk);
		for (size_t i = 0; i < n; i++) {
			uint32_t x = lmk_rng_u32(&r) % 16;
			junk[i] = x < 10 ? (char)('0' + x) : x < 13 ? '\n' : (char)lmk_rng_u32(&r);
		}
		if (lmk_arc_parse_grid(junk, n, &g)) {
			ck_assert(g.h >= 1 && g.h <= 30 && g.w >= 1 && g.w <= 30);
			for (int i = 0; i < g.h * g.w; i++)
				ck_assert_int_le(g.c[i], 9);
		} else {
			ck_assert_int_eq(g.h, 0);
		}
	}
}
END_TEST

/* Scanning an answer byte by byte: wherever the scan says the grid is
 * decided, the text up to there parses as the whole text does. */
static int same_parse(const char *a, size_t na, const char *b, size_t nb)
{
	lmk_arc_grid ga, gb;
	int oa = lmk_arc_parse_grid(a, na, &ga), ob = lmk_arc_parse_grid(b, nb, &gb);
	return oa == ob && (!oa || lmk_arc_grid_eq(&ga, &gb));
}

START_TEST(test_scan)
{
	lmk_rng r;
	lmk_rng_init(&r, 11);
	char text[1200];
	int decided = 0, grids = 0;

	for (int rep = 0; rep < 20000; rep++) {
		size_t n = 0;
		int kind = rep % 4;
		if (kind < 2) {         /* a grid, sometimes spoiled, then the end */
			lmk_arc_grid g;
			random_grid(&g, &r, 1 + (int)lmk_rng_below(&r, 30),
				    1 + (int)lmk_rng_below(&r, 30), 10);
			n = lmk_arc_grid_text(&g, text);
			if (kind == 1 && n > 1) /* one byte changed */
				text[lmk_rng_below(&r, n)] = "0\n\rE x"[lmk_rng_below(&r, 6)];
			memcpy(text + n, "E\n99\n", 6);
			n += 6;
		} else {                /* junk of digits, newlines and more */
			n = lmk_rng_below(&r, 200);
			for (size_t i = 0; i < n; i++) {
				uint32_t x = lmk_rng_u32(&r) % 24;
				text[i] = x < 16 ? (char)('0' + x % 3) : x < 20 ? '\n'
					: "\r E\t"[x - 20];
			}
		}
		lmk_arc_scan s = {0};
		for (size_t i = 0; i < n; i++)
			if (lmk_arc_scan_byte(&s, text[i])) {
				ck_assert_msg(same_parse(text, i + 1, text, n), "rep %d, at %zu", rep, i);
				/* and every text that goes on from there */
				char more[1300];
				memcpy(more, text, i + 1);
				memcpy(more + i + 1, "12\n34\n", 6);
				ck_assert(same_parse(text, i + 1, more, i + 7));
				decided++;
				break;
			}
		lmk_arc_grid g;
		grids += kind == 0 && lmk_arc_parse_grid(text, n, &g);
	}
	ck_assert_int_gt(decided, 10000);
	ck_assert_int_eq(grids, 5000);
}
END_TEST

/* ---- training examples ---- */

static int byte_encode(void *arg, const char *text, size_t len, int32_t *out, int cap)
{
	int *calls = arg;
	if (calls)
		(*calls)++;
	if ((size_t)cap < len)
		return (int)len;
	return (int)lmk_bytetok_encode(text, len, out, 0);
}

static int failing_encode(void *arg, const char *text, size_t len, int32_t *out, int cap)
{
	return lmk_err(LMK_EINVAL, "no");
}

START_TEST(test_examples)
{
	lmk_arc_set s;
	lmk_arc_examples e = {0}, e2 = {0};
	int calls = 0;
	lmk_arc_example_opts o = {byte_encode, &calls, LMK_BYTETOK_BOS, LMK_BYTETOK_EOS, 0, 0};
	char *p, *q;

	ck_assert_int_eq(lmk_arc_load(&s, fx("tasks"), NULL, NULL), 0);
	ck_assert_int_eq(lmk_arc_examples_add(&e, s.t, s.n, &o), 3);
	ck_assert_int_eq(e.n, 3);
	ck_assert_int_eq(e.dropped, 0);
	ck_assert_int_eq(e.ex[2].task, 1);
	ck_assert_int_eq(e.ex[2].test, 1);
	ck_assert_int_eq(lmk_arc_format(&s.t[1], 1, &p, &q), 0);
	{
		const lmk_arc_example *x = &e.ex[2];
		size_t lp = strlen(p), lq = strlen(q);
		ck_assert_int_eq(x->n, (int)(1 + lp + lq + 1));
		ck_assert_int_eq(x->ids[0], LMK_BYTETOK_BOS);
		ck_assert_int_eq(x->ids[x->n - 1], LMK_BYTETOK_EOS);
		for (int i = 0; i < x->n; i++) {
			ck_assert_int_eq(x->mask[i], i > (int)lp);
			if (i >= 1 && i <= (int)lp)
				ck_assert_int_eq(x->ids[i], (unsigned char)p[i - 1]);
			else if (i > (int)lp && i < x->n - 1)
				ck_assert_int_eq(x->ids[i], (unsigned char)q[i - 1 - lp]);
		}
	}
	/* loss on all outputs: the same ids, the demonstrations' outputs too */
	o.all_outputs = 1;
	ck_assert_int_eq(lmk_arc_examples_add(&e2, s.t, s.n, &o), 3);
	for (int j = 0; j < 3; j++) {
		ck_assert_int_eq(e2.ex[j].n, e.ex[j].n);
		ck_assert_mem_eq(e2.ex[j].ids, e.ex[j].ids, (size_t)e.ex[j].n * sizeof(int32_t));
	}
	{
		/* I\n123\nO\n | 1\n2\n3\nE\n | I\n45\nO\n | 4\n5\nE\n | ... */
		const lmk_arc_example *x = &e2.ex[2];
		int masked = 0;
		for (int i = 0; i < x->n; i++)
			masked += x->mask[i];
		ck_assert_int_eq(masked, 6 + 4 + (int)strlen(q) + 1);
		ck_assert_int_eq(x->mask[1 + 8], 0);   /* the first output's "1" */
		ck_assert_int_eq(x->mask[1 + 16 + 7], 1);   /* the second's "4" */
		ck_assert_int_eq(x->mask[1 + 16 + 6], 0);   /* the "\n" of "O\n" before it */
	}
	lmk_arc_examples_free(&e2);
	o.all_outputs = 2;   /* the first output too */
	ck_assert_int_eq(lmk_arc_examples_add(&e2, s.t, s.n, &o), 3);
	{
		const lmk_arc_example *x = &e2.ex[2];
		int masked = 0;
		for (int i = 0; i < x->n; i++)
			masked += x->mask[i];
		ck_assert_int_eq(masked, 8 + 6 + 4 + (int)strlen(q) + 1);
		ck_assert_int_eq(x->mask[1 + 8], 1);
		ck_assert_int_eq(x->mask[1 + 7], 0);
	}
	free(p);
	free(q);
	lmk_arc_examples_free(&e2);
	/* too long: dropped and counted; appended to what is there */
	o.all_outputs = 0;
	o.max_len = e.ex[0].n;
	ck_assert_int_eq(lmk_arc_examples_add(&e, s.t, s.n, &o), 2);
	ck_assert_int_eq(e.n, 5);
	ck_assert_int_eq(e.dropped, 1);  /* 60 tokens; the others have 54 */
	lmk_arc_examples_free(&e);
	/* the encoder's error comes back */
	o.encode = failing_encode;
	ck_assert_int_eq(lmk_arc_examples_add(&e, s.t, s.n, &o), LMK_EINVAL);
	lmk_arc_examples_free(&e);
	/* an encoder that writes nothing until given room */
	calls = 0;
	o.encode = byte_encode;
	o.max_len = 0;
	o.bos = o.eos = -1;
	ck_assert_int_eq(lmk_arc_examples_add(&e, s.t, 1, &o), 1);
	ck_assert_int_eq(e.ex[0].n, 2 * 18 + 10 + 8);  /* demonstrations, test input, target */
	lmk_arc_examples_free(&e);
	lmk_arc_set_free(&s);
}
END_TEST

static int bpe_encode(void *arg, const char *text, size_t len, int32_t *out, int cap)
{
	int32_t *ids = NULL;
	size_t c = 0;
	int64_t n = lmk_bpe_encode(arg, text, len, 0, &ids, &c);
	if (n >= 0 && n <= cap)
		memcpy(out, ids, (size_t)n * sizeof *ids);
	free(ids);
	return (int)n;
}

/* SmolLM2's tokenizer, when the model is there: one token per digit, the
 * prompt and target cut at the same place whether encoded apart or
 * together, and examples with the loss on all outputs (encoded piece by
 * piece) have the same ids as those encoded whole. */
START_TEST(test_smollm2_tokens)
{
	char path[1024];
	lmk_bpe *t;
	lmk_arc_set s;
	int32_t *a = NULL, *b = NULL;
	size_t ca = 0, cb = 0;

	snprintf(path, sizeof path, "%s/models/smollm2-135m-instruct.gguf", root());
	if (access(path, R_OK) != 0) {
		printf("test_arc: no %s, SmolLM2 tokens not checked\n", path);
		return;
	}
	ck_assert_int_eq(lmk_bpe_load(&t, path), 0);
	ck_assert_int_eq(lmk_arc_load(&s, fx("tasks"), NULL, NULL), 0);
	for (int i = 0; i < s.n; i++)
		for (int k = 0; k < s.t[i].ntest; k++) {
			char *p, *q, *pq;
			ck_assert_int_eq(lmk_arc_format(&s.t[i], k, &p, &q), 0);
			size_t lp = strlen(p), lq = strlen(q);
			pq = malloc(lp + lq + 1);
			memcpy(pq, p, lp);
			memcpy(pq + lp, q, lq + 1);
			int64_t np = lmk_bpe_encode(t, p, lp, 0, &a, &ca);
			int64_t nq = lmk_bpe_encode(t, q, lq, 0, &b, &cb);
			ck_assert(np > 0 && nq > 0);
			/* every byte of the target is one token */
			ck_assert_int_eq(nq, (int64_t)lq);
			int32_t *both = malloc((size_t)(np + nq) * sizeof *both);
			memcpy(both, a, (size_t)np * sizeof *a);
			memcpy(both + np, b, (size_t)nq * sizeof *b);
			int64_t n = lmk_bpe_encode(t, pq, lp + lq, 0, &a, &ca);
			ck_assert_int_eq(n, np + nq);
			ck_assert_mem_eq(a, both, (size_t)n * sizeof *a);
			/* and back to the grid */
			char dec[2048];
			size_t d = lmk_bpe_decode(t, both + np, (size_t)nq, dec, sizeof dec, 0);
			lmk_arc_grid g;
			ck_assert_int_eq(lmk_arc_parse_grid(dec, d, &g), 1);
			ck_assert(lmk_arc_grid_eq(&g, &s.t[i].test[k].out));
			free(both);
			free(pq);
			free(p);
			free(q);
		}
	lmk_arc_examples e1 = {0}, e2 = {0};
	lmk_arc_example_opts o = {bpe_encode, t, -1, -1, 0, 0};
	ck_assert_int_eq(lmk_arc_examples_add(&e1, s.t, s.n, &o), 3);
	o.all_outputs = 2;
	ck_assert_int_eq(lmk_arc_examples_add(&e2, s.t, s.n, &o), 3);
	for (int j = 0; j < 3; j++) {
		ck_assert_int_eq(e1.ex[j].n, e2.ex[j].n);
		ck_assert_mem_eq(e1.ex[j].ids, e2.ex[j].ids, (size_t)e1.ex[j].n * sizeof(int32_t));
	}
	lmk_arc_examples_free(&e1);
	lmk_arc_examples_free(&e2);
	free(a);
	free(b);
	lmk_arc_set_free(&s);
	lmk_bpe_free(t);
}
END_TEST

/* ---- voting ---- */

START_TEST(test_vote_grids)
{
	lmk_arc_grid A = grid_of(1, 1, (int[]){1}), B = grid_of(1, 1, (int[]){2});
	lmk_arc_grid C = grid_of(1, 2, (int[]){1, 2}), D = grid_of(2, 1, (int[]){1, 2});
	lmk_arc_grid best[2];
	lmk_arc_grid g[16] = {0};
	int cls[16] = {0};

	/* nothing */
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, 0, best), 0);
	ck_assert_int_eq(best[0].h, 0);
	ck_assert_int_eq(best[1].h, 0);
	/* one distinct grid: the second attempt is none */
	g[0] = A, g[1] = A, g[2] = A;
	cls[0] = 0, cls[1] = 1, cls[2] = 2;
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, 3, best), 1);
	ck_assert(lmk_arc_grid_eq(&best[0], &A));
	ck_assert_int_eq(best[1].h, 0);
	/* all different, one class: the first two seen */
	g[0] = C, g[1] = B, g[2] = A, g[3] = D;
	for (int i = 0; i < 4; i++)
		cls[i] = 0;
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, 4, best), 4);
	ck_assert(lmk_arc_grid_eq(&best[0], &C));
	ck_assert(lmk_arc_grid_eq(&best[1], &B));
	/* a tie in votes and counts: the grid seen first */
	g[0] = B, g[1] = A, g[2] = A, g[3] = B;
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, 4, best), 2);
	ck_assert(lmk_arc_grid_eq(&best[0], &B));
	ck_assert(lmk_arc_grid_eq(&best[1], &A));
	/* most frequent first */
	g[0] = B, g[1] = A, g[2] = A, g[3] = C;
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, 4, best), 3);
	ck_assert(lmk_arc_grid_eq(&best[0], &A));
	ck_assert(lmk_arc_grid_eq(&best[1], &B));
	/* hierarchical: A wins 5 times in class 0 alone; B and C are in the
	 * top 3 of classes 1, 2 and 3 once or twice each, so they are kept by
	 * more classes and beat A, although A has the most answers */
	int n = 0;
	for (int i = 0; i < 5; i++)
		g[n] = A, cls[n++] = 0;
	for (int c = 1; c <= 3; c++) {
		g[n] = B, cls[n++] = c;
		g[n] = C, cls[n++] = c;
	}
	g[n] = C, cls[n++] = 3;
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, n, best), 3);
	ck_assert(lmk_arc_grid_eq(&best[0], &C));  /* 3 classes, 4 answers */
	ck_assert(lmk_arc_grid_eq(&best[1], &B));  /* 3 classes, 3 answers */
	/* only the top 3 of a class vote: D is fourth in class 0 */
	n = 0;
	g[n] = A, cls[n++] = 0;
	g[n] = A, cls[n++] = 0;
	g[n] = B, cls[n++] = 0;
	g[n] = B, cls[n++] = 0;
	g[n] = C, cls[n++] = 0;
	g[n] = C, cls[n++] = 0;
	g[n] = D, cls[n++] = 0;
	g[n] = D, cls[n++] = 0;
	g[n] = D, cls[n++] = 0;
	g[n] = A, cls[n++] = 1;
	g[n] = B, cls[n++] = 2;
	/* class 0 keeps D (3), A (2), B (2); C is out. A and B: 2 classes,
	 * 3 answers each, A seen first */
	ck_assert_int_eq(lmk_arc_vote_grids(g, cls, n, best), 4);
	ck_assert(lmk_arc_grid_eq(&best[0], &A));
	ck_assert(lmk_arc_grid_eq(&best[1], &B));
}
END_TEST

/* A fake model: it knows the answer of the original task and answers each
 * prompt with the answer under the prompt's transformation, found by
 * matching the prompt against every planned one. For the classes in
 * `wrong` it answers the same wrong grid (one cell changed in the original
 * frame), for those in `junk` text that is no grid. */
struct fake {
	const lmk_arc_task *t;
	const lmk_arc_tf *tfs;
	int ntf;
	unsigned wrong, junk;
	int calls, batches;
	int fail;
};

static int fake_answer(struct fake *f, const char *prompt, char *out, size_t cap)
{
	f->calls++;
	if (f->fail)
		return lmk_err(LMK_EIO, "the model is gone");
	for (int i = 0; i < f->ntf; i++) {
		lmk_arc_task a;
		char *p;
		ck_assert_int_eq(lmk_arc_task_apply(&a, f->t, &f->tfs[i]), 0);
		ck_assert_int_eq(lmk_arc_format(&a, 0, &p, NULL), 0);
		int same = strcmp(p, prompt) == 0;
		free(p);
		lmk_arc_task_free(&a);
		if (!same)
			continue;
		lmk_arc_grid g = f->t->test[0].out, ans;
		char buf[1024];
		int d = f->tfs[i].dihedral;
		if (f->junk >> d & 1) {
			snprintf(out, cap, "I think it is blue");
			return 0;
		}
		if (f->wrong >> d & 1)
			g.c[0] = (uint8_t)((g.c[0] + 1) % 10);
		lmk_arc_grid_apply(&ans, &g, &f->tfs[i]);
		lmk_arc_grid_text(&ans, buf);
		snprintf(out, cap, "%sE\n", buf);
		return 0;
	}
	ck_abort_msg("a prompt that was not planned");
	return -1;
}

static int fake_one(void *arg, const char *prompt, char *out, size_t cap)
{
	return fake_answer(arg, prompt, out, cap);
}

static int fake_batch(void *arg, int n, const char *const *prompts, char *const *outs, size_t cap)
{
	struct fake *f = arg;
	f->batches++;
	for (int i = 0; i < n; i++) {
		int rc = fake_answer(f, prompts[i], outs[i], cap);
		if (rc < 0)
			return rc;
	}
	return 0;
}

START_TEST(test_predict)
{
	lmk_arc_set s;
	lmk_arc_tf tfs[16];
	lmk_arc_grid best[2], wrongA;
	lmk_rng r;
	int n;

	ck_assert_int_eq(lmk_arc_load(&s, fx("tasks"), NULL, NULL), 0);
	const lmk_arc_task *t = &s.t[0];
	lmk_rng_init(&r, 2);
	n = lmk_arc_tf_plan(tfs, 16, t->ntrain, 2, LMK_ARC_AUG_ALL, &r);
	ck_assert_int_eq(n, 16);
	struct fake f = {t, tfs, n, 0, 0, 0, 0, 0};
	/* right everywhere */
	ck_assert_int_eq(lmk_arc_predict(t, 0, tfs, n, fake_one, &f, best), 1);
	ck_assert_int_eq(f.calls, 16);
	ck_assert(lmk_arc_grid_eq(&best[0], &t->test[0].out));
	ck_assert_int_eq(best[1].h, 0);
	/* the same wrong grid in 5 classes beats the right one in 3 */
	f.wrong = 0x1f;
	f.calls = 0;
	ck_assert_int_eq(lmk_arc_predict_batch(t, 0, tfs, n, fake_batch, &f, best), 2);
	ck_assert_int_eq(f.batches, 1);
	ck_assert_int_eq(f.calls, 16);
	ck_assert(!lmk_arc_grid_eq(&best[0], &t->test[0].out));
	ck_assert(lmk_arc_grid_eq(&best[1], &t->test[0].out));
	wrongA = best[0];
	/* right in 3 classes, wrong in 1, junk (no vote) in 4 */
	f.wrong = 0x01;
	f.junk = 0xf0;
	ck_assert_int_eq(lmk_arc_predict_batch(t, 0, tfs, n, fake_batch, &f, best), 2);
	ck_assert(lmk_arc_grid_eq(&best[0], &t->test[0].out));
	ck_assert(lmk_arc_grid_eq(&best[1], &wrongA));
	/* a tie of 2 classes and 4 answers each: the grid seen first (class 0) */
	f.wrong = 0x03;
	ck_assert_int_eq(lmk_arc_predict_batch(t, 0, tfs, n, fake_batch, &f, best), 2);
	ck_assert(lmk_arc_grid_eq(&best[0], &wrongA));
	/* nothing parsable */
	f.junk = 0xff;
	ck_assert_int_eq(lmk_arc_predict(t, 0, tfs, n, fake_one, &f, best), 0);
	ck_assert_int_eq(best[0].h, 0);
	/* the callback's error stops it */
	f.fail = 1;
	ck_assert_int_eq(lmk_arc_predict(t, 0, tfs, n, fake_one, &f, best), LMK_EIO);
	ck_assert_str_eq(lmk_errmsg(), "the model is gone");
	ck_assert_int_eq(lmk_arc_predict(t, 1, tfs, n, fake_one, &f, best), LMK_EINVAL);
	ck_assert_int_eq(lmk_arc_predict(t, 0, tfs, 0, fake_one, &f, best), LMK_EINVAL);
	lmk_arc_set_free(&s);
}
END_TEST

/* ---- submissions and scores ---- */

static void score_against(const lmk_arc_set *truth, const lmk_arc_sub *sub)
{
	lmk_arc_task_score per[2];
	lmk_arc_score tot;

	ck_assert_int_eq(truth->n, 2);
	ck_assert_int_eq(lmk_arc_score_sub(truth, sub, per, &tot), 0);
	ck_assert_int_eq(tot.tasks, 2);
	ck_assert_int_eq(tot.tasks_solved, 1);
	ck_assert_int_eq(tot.tests, 3);
	ck_assert_int_eq(tot.tests_solved, 2);
	ck_assert_double_eq_tol(tot.kaggle, 0.75, 1e-12);
	ck_assert_int_eq(tot.missing, 0);
	ck_assert_int_eq(tot.extra, 0);
	ck_assert(per[0].solved && per[0].nsolved == 1 && per[0].ntest == 1);
	ck_assert(!per[1].solved && per[1].nsolved == 1 && per[1].ntest == 2);
	/* partial credit: bb000002's second attempt list has no grid of the
	 * output's size */
	ck_assert(per[0].nsized == 1 && per[1].nsized == 1 && tot.tests_sized == 2);
	ck_assert_double_eq_tol(per[0].cells, 1.0, 1e-12);
	ck_assert_double_eq_tol(per[1].cells, 0.5, 1e-12);
	ck_assert_double_eq_tol(tot.cells, 2.0 / 3, 1e-12);

	/* the best of two right-sized attempts: 3 of 4 cells, not 2 of 4 */
	lmk_arc_sub part = {0};
	ck_assert_int_eq(lmk_arc_sub_add(&part, truth->t[0].id, 1), 0);
	lmk_arc_grid *a = part.t[0].att;
	a[0] = a[1] = truth->t[0].test[0].out;
	a[0].c[0] = (uint8_t)((a[0].c[0] + 1) % 10);
	a[1].c[2] = (uint8_t)((a[1].c[2] + 1) % 10);
	a[1].c[3] = (uint8_t)((a[1].c[3] + 1) % 10);
	ck_assert_int_eq(lmk_arc_score_sub(truth, &part, per, &tot), 0);
	ck_assert(per[0].nsolved == 0 && per[0].nsized == 1 && per[1].missing);
	ck_assert_double_eq_tol(per[0].cells, 0.75, 1e-12);
	ck_assert_double_eq_tol(tot.cells, 0.75 / 3, 1e-12);
	lmk_arc_sub_free(&part);
}

START_TEST(test_score)
{
	lmk_arc_set dir, ch, sol;
	lmk_arc_sub sub, back;
	char tmpl[] = "/tmp/test_arc.XXXXXX", path[256];

	ck_assert_int_eq(lmk_arc_sub_read(&sub, fx("submission.json")), 0);
	ck_assert_int_eq(sub.n, 2);
	ck_assert_str_eq(sub.t[0].id, "aa000001");
	ck_assert_int_eq(lmk_arc_load(&dir, fx("tasks"), NULL, NULL), 0);
	score_against(&dir, &sub);
	/* challenges solved by the solutions file, and the solutions alone */
	ck_assert_int_eq(lmk_arc_load(&ch, fx("challenges.json"), NULL, NULL), 0);
	ck_assert_int_eq(lmk_arc_load(&sol, fx("solutions.json"), NULL, NULL), 0);
	ck_assert_int_eq(sol.t[1].ntrain, 0);
	ck_assert_int_eq(sol.t[1].ntest, 2);
	lmk_arc_score tot;
	ck_assert_int_eq(lmk_arc_score_sub(&ch, &sub, NULL, &tot), LMK_EINVAL);
	score_against(&sol, &sub);
	ck_assert_int_eq(lmk_arc_set_solve(&ch, &sol, "solutions.json"), 0);
	score_against(&ch, &sub);
	lmk_arc_set both;
	ck_assert_int_eq(lmk_arc_load_solved(&both, fx("challenges.json"), fx("solutions.json")), 0);
	score_against(&both, &sub);
	lmk_arc_set_free(&both);
	ck_assert_int_eq(lmk_arc_load_solved(&both, fx("challenges.json"), fx("nope.json")), LMK_EIO);
	ck_assert_int_eq(both.n, 0);
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < ch.t[i].ntest; k++)
			ck_assert(lmk_arc_grid_eq(&ch.t[i].test[k].out, &dir.t[i].test[k].out));

	/* written and read back the same, through a temporary file */
	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(path, sizeof path, "%s/sub.json", tmpl);
	ck_assert_int_eq(lmk_arc_sub_write(&sub, path), 0);
	ck_assert_int_eq(lmk_arc_sub_read(&back, path), 0);
	ck_assert_int_eq(back.n, sub.n);
	for (int i = 0; i < sub.n; i++) {
		ck_assert_str_eq(back.t[i].id, sub.t[i].id);
		ck_assert_int_eq(back.t[i].ntest, sub.t[i].ntest);
		for (int a = 0; a < 2 * sub.t[i].ntest; a++)
			ck_assert(lmk_arc_grid_eq(&back.t[i].att[a], &sub.t[i].att[a]));
	}
	lmk_arc_sub_free(&back);

	/* built by hand: a missing attempt is written as [[0]]; a task left
	 * out scores 0 and is counted missing; an unknown one is extra */
	lmk_arc_sub mine = {0};
	ck_assert_int_eq(lmk_arc_sub_add(&mine, "bb000002", 2), 0);
	ck_assert_int_eq(lmk_arc_sub_add(&mine, "zz", 1), 1);
	ck_assert_int_eq(lmk_arc_sub_add(&mine, "zz", 1), LMK_EINVAL);
	ck_assert_int_eq(lmk_arc_sub_add(&mine, "a\nb", 1), LMK_EINVAL);
	ck_assert_int_eq(lmk_arc_sub_add(&mine, "q", 0), LMK_EINVAL);
	mine.t[0].att[3] = dir.t[1].test[1].out;
	ck_assert_int_eq(lmk_arc_sub_write(&mine, path), 0);
	FILE *fp = fopen(path, "r");
	char text[512] = "";
	ck_assert_ptr_nonnull(fgets(text, sizeof text, fp));
	fclose(fp);
	ck_assert_str_eq(text, "{\"bb000002\":[{\"attempt_1\":[[0]],\"attempt_2\":[[0]]},"
			 "{\"attempt_1\":[[0]],\"attempt_2\":[[9],[0],[9],[0]]}],"
			 "\"zz\":[{\"attempt_1\":[[0]],\"attempt_2\":[[0]]}]}\n");
	lmk_arc_task_score per[2];
	ck_assert_int_eq(lmk_arc_score_sub(&dir, &mine, per, &tot), 0);
	ck_assert_int_eq(tot.tasks_solved, 0);
	ck_assert_int_eq(tot.tests_solved, 1);
	ck_assert_int_eq(tot.missing, 1);
	ck_assert_int_eq(tot.extra, 1);
	ck_assert(per[0].missing && !per[1].missing);
	ck_assert_double_eq_tol(tot.kaggle, 0.25, 1e-12);
	/* no temporary is left beside it */
	unlink(path);
	ck_assert_int_eq(rmdir(tmpl), 0);
	lmk_arc_sub_free(&mine);

	/* bad submissions */
	static const struct { const char *json, *msg; } bad[] = {
		{"[]", "s.json: expected an object, found an array"},
		{"{\"a\": {}}", "s.json: task a: expected an array of attempts, found an object"},
		{"{\"a\": []}", "s.json: task a: expected 1 to 64 test inputs, found 0"},
		{"{\"a\": [3]}", "s.json: task a: [0]: expected an object, found 3"},
		{"{\"a\": [{\"attempt_1\": [[1, 2], [3]]}]}",
		 "s.json: task a: test[0].attempt_1 row 1: expected 2 cells, found 1"},
		{"{\"a\": [{\"attempt_2\": [[11]]}]}",
		 "s.json: task a: test[0].attempt_2 row 0 cell 0: expected a colour 0..9, found 11"},
		{"{\"a\": [{\"attempt_1\": [[1]]}", "s.json: line 1 column"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		ck_assert_int_eq(lmk_arc_sub_read_mem(&back, "s.json", bad[i].json, strlen(bad[i].json)),
				 LMK_EFORMAT);
		ck_assert_msg(strncmp(lmk_errmsg(), bad[i].msg, strlen(bad[i].msg)) == 0, "%s", lmk_errmsg());
		ck_assert_int_eq(back.n, 0);
	}
	/* empty and missing attempts are wrong answers, not errors */
	const char *lenient = "{\"a\": [{\"attempt_1\": [], \"attempt_2\": [[]]}, {\"attempt_1\": null}]}";
	ck_assert_int_eq(lmk_arc_sub_read_mem(&back, "s.json", lenient, strlen(lenient)), 0);
	ck_assert_int_eq(back.t[0].ntest, 2);
	for (int a = 0; a < 4; a++)
		ck_assert_int_eq(back.t[0].att[a].h, 0);
	lmk_arc_sub_free(&back);
	ck_assert_int_eq(lmk_arc_sub_read(&back, "/nonexistent/s.json"), LMK_EIO);

	/* solutions that do not fit the challenges */
	lmk_arc_set_free(&sol);
	const char *short_sol = "{\"aa000001\": [[[1]]], \"bb000002\": [[[1]]]}";
	ck_assert_int_eq(lmk_arc_load_mem(&sol, "sol.json", short_sol, strlen(short_sol), NULL, NULL), 0);
	ck_assert_int_eq(lmk_arc_set_solve(&ch, &sol, "sol.json"), LMK_EFORMAT);
	ck_assert_str_eq(lmk_errmsg(), "sol.json: task bb000002: expected 2 test outputs, found 1");
	lmk_arc_set_free(&sol);
	const char *other = "{\"aa000001\": [[[1]]]}";
	ck_assert_int_eq(lmk_arc_load_mem(&sol, "sol.json", other, strlen(other), NULL, NULL), 0);
	ck_assert_int_eq(lmk_arc_set_solve(&ch, &sol, "sol.json"), LMK_EFORMAT);
	ck_assert_str_eq(lmk_errmsg(), "sol.json: task bb000002: no solution");

	lmk_arc_set_free(&sol);
	lmk_arc_set_free(&ch);
	lmk_arc_set_free(&dir);
	lmk_arc_sub_free(&sub);
}
END_TEST

/* ---- bad task files ---- */

static const struct { const char *file, *msg; } bad_files[] = {
	{"colour.json", "colour.json: task colour: train[0].input row 0 cell 1: expected a colour 0..9, found 10"},
	{"dup.json", "dup.json: line 1 column"},
	{"emptyrow.json", "emptyrow.json: task emptyrow: train[0].input row 0: expected 1 to 30 cells, found 0"},
	{"emptytrain.json", "emptytrain.json: task emptytrain: 'train': expected 1 to 64 pairs, found 0"},
	{"gridtype.json", "gridtype.json: task gridtype: train[0].input: expected an array of rows, found an object"},
	{"negative.json", "negative.json: task negative: train[0].output row 0 cell 0: expected a colour 0..9, found -1"},
	{"noinput.json", "noinput.json: task noinput: test[0]: no 'input'"},
	{"nooutput.json", "nooutput.json: task nooutput: train[0]: no 'output'"},
	{"norows.json", "norows.json: task norows: train[0].input: expected 1 to 30 rows, found 0"},
	{"notest.json", "notest.json: task notest: no 'test'"},
	{"notrain.json", "notrain.json: task notrain: no 'train'"},
	{"pair.json", "pair.json: task pair: train[0]: expected an object, found an array"},
	{"ragged.json", "ragged.json: task ragged: train[0].input row 1: expected 2 cells, found 1"},
	{"real.json", "real.json: task real: test[0].input row 0 cell 0: expected a colour 0..9, found 1.5"},
	{"rowtype.json", "rowtype.json: task rowtype: train[0].input row 1: expected an array of cells, found 2"},
	{"string.json", "string.json: task string: train[0].input row 0 cell 0: expected a colour 0..9, found a string"},
	{"syntax.json", "syntax.json: line 2 column"},
	{"tall.json", "tall.json: task tall: train[0].input: expected 1 to 30 rows, found 31"},
	{"top.json", "top.json: expected an object, found an array"},
	{"wide.json", "wide.json: task wide: train[0].input row 0: expected 1 to 30 cells, found 31"},
};
#define NBAD ((int)(sizeof bad_files / sizeof bad_files[0]))

/* The message ends with want, after the folder part of the path. */
static void assert_msg(const char *got, const char *want)
{
	const char *p = strstr(got, "bad/");
	ck_assert_msg(p && strncmp(p + 4, want, strlen(want)) == 0, "got '%s', want '%s'", got, want);
	ck_assert(!strchr(got, '\n'));
}

START_TEST(test_bad_file)
{
	lmk_arc_set s;
	char name[64];

	snprintf(name, sizeof name, "bad/%s", bad_files[_i].file);
	ck_assert_int_eq(lmk_arc_load(&s, fx(name), NULL, NULL), LMK_EFORMAT);
	ck_assert_int_eq(s.n, 0);
	ck_assert_ptr_null(s.t);
	assert_msg(lmk_errmsg(), bad_files[_i].msg);
}
END_TEST

struct bads {
	int n;
	char msg[32][256];
};

static void collect(void *arg, const char *msg)
{
	struct bads *b = arg;
	if (b->n < 32)
		snprintf(b->msg[b->n], sizeof b->msg[0], "%s", msg);
	b->n++;
}

START_TEST(test_bad_folder)
{
	lmk_arc_set s;
	struct bads b = {0};

	/* without a callback the first bad file fails the load */
	ck_assert_int_eq(lmk_arc_load(&s, fx("bad"), NULL, NULL), LMK_EFORMAT);
	assert_msg(lmk_errmsg(), bad_files[0].msg);
	/* with one, every file is reported in order of name */
	ck_assert_int_eq(lmk_arc_load(&s, fx("bad"), collect, &b), NBAD);
	ck_assert_int_eq(s.n, 0);
	ck_assert_int_eq(b.n, NBAD);
	for (int i = 0; i < NBAD; i++)
		assert_msg(b.msg[i], bad_files[i].msg);
	/* a combined file with one bad task keeps the good one */
	const char *mixed = "{\"good\": {\"train\": [{\"input\": [[1]], \"output\": [[2]]}], "
			    "\"test\": [{\"input\": [[3]]}]}, \"bad\": {\"train\": []}}";
	b.n = 0;
	ck_assert_int_eq(lmk_arc_load_mem(&s, "m.json", mixed, strlen(mixed), collect, &b), 1);
	ck_assert_int_eq(s.n, 1);
	ck_assert_str_eq(s.t[0].id, "good");
	ck_assert_str_eq(b.msg[0], "m.json: task bad: 'train': expected 1 to 64 pairs, found 0");
	ck_assert_ptr_nonnull(lmk_arc_set_find(&s, "good"));
	ck_assert_ptr_null(lmk_arc_set_find(&s, "bad"));
	lmk_arc_set_free(&s);
	ck_assert_int_eq(lmk_arc_load_mem(&s, "m.json", mixed, strlen(mixed), NULL, NULL), LMK_EFORMAT);
	/* odd ids and shapes of a combined file */
	static const struct { const char *json, *msg; } odd[] = {
		{"{\"a\\nb\": {\"train\": 1}}", "m.json: a key is no task id"},
		{"{\"\": [[[1]]]}", "m.json: a key is no task id"},
		{"{\"x\": 1}", "m.json: task x: expected an object, found 1"},
		{"{\"x\": [[[1]]], \"y\": {}}", "m.json: task y: expected an array of grids, found an object"},
		{"{\"x\": [[[1]], [[1, 2], [3]]]}", "m.json: task x: test[1].output row 1: expected 2 cells, found 1"},
		{"3", "m.json: line 1 column 1"},
		{"", "m.json: line"},
	};
	for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
		ck_assert_int_eq(lmk_arc_load_mem(&s, "m.json", odd[i].json, strlen(odd[i].json), NULL, NULL),
				 LMK_EFORMAT);
		ck_assert_msg(strncmp(lmk_errmsg(), odd[i].msg, strlen(odd[i].msg)) == 0, "%s", lmk_errmsg());
	}
	ck_assert_int_eq(lmk_arc_load(&s, "/nonexistent/x.json", NULL, NULL), LMK_EIO);
	ck_assert_str_eq(lmk_errmsg(), "cannot open '/nonexistent/x.json': No such file or directory");
}
END_TEST

/* ---- the real data ---- */

START_TEST(test_real_data)
{
	static const struct { const char *dir; int n; } sets[] = {
		{"training", 400}, {"evaluation", 200},
	};
	const char *data = getenv("LMK_DATA");
	char path[1024];
	lmk_arc_set s;

	for (int i = 0; i < 2; i++) {
		if (data)
			snprintf(path, sizeof path, "%s/arc/%s", data, sets[i].dir);
		else
			snprintf(path, sizeof path, "%s/../shared/data/arc/%s", root(), sets[i].dir);
		struct stat st;
		if (stat(path, &st) != 0) {
			printf("test_arc: no %s, skipped\n", path);
			continue;
		}
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ck_assert_msg(lmk_arc_load(&s, path, NULL, NULL) == 0, "%s", lmk_errmsg());
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ck_assert_int_eq(s.n, sets[i].n);
		int tests = 0, maxside = 0, pairs = 0;
		for (int j = 0; j < s.n; j++) {
			const lmk_arc_task *t = &s.t[j];
			ck_assert_int_eq((int)strlen(t->id), 8);
			ck_assert_int_ge(t->ntrain, 2);
			pairs += t->ntrain;
			for (int k = 0; k < t->ntest; k++) {
				ck_assert_int_gt(t->test[k].out.h, 0);
				if (t->test[k].out.h > maxside)
					maxside = t->test[k].out.h;
				tests++;
			}
			/* every task formats, and its target parses back */
			char *p, *q;
			lmk_arc_grid g;
			ck_assert_int_eq(lmk_arc_format(t, 0, &p, &q), 0);
			ck_assert_int_eq(lmk_arc_parse_grid(q, strlen(q), &g), 1);
			ck_assert(lmk_arc_grid_eq(&g, &t->test[0].out));
			free(p);
			free(q);
		}
		printf("test_arc: %s: %d tasks, %d demonstrations, %d test inputs, loaded in %.3f s\n",
		       sets[i].dir, s.n, pairs, tests,
		       (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
		ck_assert_int_eq(maxside, 30);
		if (i == 0)
			ck_assert_ptr_nonnull(lmk_arc_set_find(&s, "007bbfb7"));
		lmk_arc_set_free(&s);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("arc");
	TCase *tc = tcase_create("arc");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dihedral_known);
	tcase_add_loop_test(tc, test_dihedral_inverse_and_compose, 0, NSHAPES);
	tcase_add_test(tc, test_dihedral_group);
	tcase_add_loop_test(tc, test_tf_random_and_invert, 0, NSHAPES);
	tcase_add_test(tc, test_task_apply);
	tcase_add_test(tc, test_tf_plan);
	tcase_add_test(tc, test_loo);
	tcase_add_test(tc, test_format_exact);
	tcase_add_test(tc, test_text_round_trip);
	tcase_add_test(tc, test_parse_malformed);
	tcase_add_test(tc, test_scan);
	tcase_add_test(tc, test_examples);
	tcase_add_test(tc, test_smollm2_tokens);
	tcase_add_test(tc, test_vote_grids);
	tcase_add_test(tc, test_predict);
	tcase_add_test(tc, test_score);
	tcase_add_loop_test(tc, test_bad_file, 0, NBAD);
	tcase_add_test(tc, test_bad_folder);
	tcase_add_test(tc, test_real_data);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
