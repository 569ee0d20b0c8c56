/* test_synth.c: the synthetic tasks of synth.h. For each task: the
 * configuration checks, reproducibility (one batch equals its pieces made
 * separately; the seed changes everything), the task's invariants, and
 * every target recovered from the input alone by a brute-force solver
 * written here (MQAR: look the key up in the context; flip-flop: the
 * latest write; word problems: compose permutations with a table of the
 * lexicographic order built here). Then the accuracy helpers. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "synth.h"

static void make(const lmk_synth *s, uint64_t first, int64_t B, int32_t **x, int32_t **y)
{
	*x = malloc(sizeof(int32_t) * (size_t)(B * s->T));
	*y = malloc(sizeof(int32_t) * (size_t)(B * s->T));
	ck_assert_msg(lmk_synth_batch(s, first, B, *x, *y) == 0, "%s", lmk_errmsg());
}

/* Batch [0,B) equals [0,3) + [3,B); the same call twice gives the same;
 * another seed differs. */
static void check_reproducible(lmk_synth s, int64_t B)
{
	int32_t *x, *y, *x1, *y1, *x2, *y2;
	int64_t T = s.T;
	make(&s, 0, B, &x, &y);
	make(&s, 0, 3, &x1, &y1);
	make(&s, 3, B - 3, &x2, &y2);
	ck_assert(memcmp(x, x1, sizeof(int32_t) * (size_t)(3 * T)) == 0);
	ck_assert(memcmp(y, y1, sizeof(int32_t) * (size_t)(3 * T)) == 0);
	ck_assert(memcmp(x + 3 * T, x2, sizeof(int32_t) * (size_t)((B - 3) * T)) == 0);
	ck_assert(memcmp(y + 3 * T, y2, sizeof(int32_t) * (size_t)((B - 3) * T)) == 0);
	free(x1);
	free(y1);
	make(&s, 0, B, &x1, &y1);
	ck_assert(memcmp(x, x1, sizeof(int32_t) * (size_t)(B * T)) == 0);
	ck_assert(memcmp(y, y1, sizeof(int32_t) * (size_t)(B * T)) == 0);
	s.seed ^= 0x9E3779B97F4A7C15ull;
	free(x2);
	free(y2);
	make(&s, 0, B, &x2, &y2);
	ck_assert(memcmp(x, x2, sizeof(int32_t) * (size_t)(B * T)) != 0);
	/* examples differ from one another */
	ck_assert(memcmp(x, x + T, sizeof(int32_t) * (size_t)T) != 0);
	free(x);
	free(y);
	free(x1);
	free(y1);
	free(x2);
	free(y2);
}

/* ------------------------------------------------------------------ MQAR */

/* The answer at position t: the token after key x[t] in the context. */
static int32_t mqar_solve(const int32_t *x, int64_t K, int64_t t)
{
	for (int64_t j = 0; j < K; j++)
		if (x[2 * j] == x[t])
			return x[2 * j + 1];
	return -2;
}

START_TEST(test_mqar)
{
	/* (V, T, K, random_non_queries) */
	static const int64_t cfg[][4] = {{12, 16, 2, 0},    {8192, 256, 16, 1}, {8192, 64, 16, 1},
					 {101, 98, 7, 1},    {6, 8, 2, 0},       {8192, 512, 64, 1}};
	for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
		lmk_synth s;
		lmk_synth_defaults(&s, LMK_SYNTH_MQAR);
		s.vocab = cfg[ci][0];
		s.T = cfg[ci][1];
		s.num_kv = cfg[ci][2];
		s.random_non_queries = (int)cfg[ci][3];
		s.seed = 11 + ci;
		int64_t B = 40, T = s.T, K = s.num_kv, V = s.vocab;
		int32_t *x, *y;
		make(&s, 5, B, &x, &y);
		for (int64_t b = 0; b < B; b++) {
			const int32_t *xb = x + b * T, *yb = y + b * T;
			for (int64_t t = 0; t < T; t++)
				ck_assert(xb[t] >= 0 && xb[t] < V);
			for (int64_t j = 0; j < K; j++) {
				ck_assert(xb[2 * j] >= 1 && xb[2 * j] < V / 2);
				ck_assert(xb[2 * j + 1] >= V / 2 && xb[2 * j + 1] < V);
				for (int64_t i = 0; i < j; i++) {
					ck_assert_int_ne(xb[2 * i], xb[2 * j]);
					ck_assert_int_ne(xb[2 * i + 1], xb[2 * j + 1]);
				}
			}
			int64_t nq = 0;
			int seen[64] = {0};
			for (int64_t t = 0; t < T; t++) {
				if (yb[t] < 0) {
					ck_assert_int_eq(yb[t], -1);
					/* without noise the free slots are 0 */
					if (!s.random_non_queries && t >= 2 * K)
						ck_assert_int_eq(xb[t], 0);
					continue;
				}
				nq++;
				ck_assert(t >= 2 * K && (t - 2 * K) % 2 == 0);
				ck_assert_int_eq(yb[t], mqar_solve(xb, K, t));
				for (int64_t j = 0; j < K; j++)
					if (xb[2 * j] == xb[t])
						seen[j]++;
			}
			/* each key queried exactly once */
			ck_assert_int_eq(nq, K);
			for (int64_t j = 0; j < K; j++)
				ck_assert_int_eq(seen[j], 1);
		}
		free(x);
		free(y);
		if (B > 3)
			check_reproducible(s, 9);
	}
}
END_TEST

/* power_a 0.01 puts queries close to the context, 1 spreads them evenly. */
START_TEST(test_mqar_power_law)
{
	double mean[2];
	for (int v = 0; v < 2; v++) {
		lmk_synth s;
		lmk_synth_defaults(&s, LMK_SYNTH_MQAR);
		s.T = 256;
		s.num_kv = 4;
		s.power_a = v ? 1.0 : 0.01;
		int64_t B = 500, T = s.T, n = 0;
		int32_t *x, *y;
		make(&s, 0, B, &x, &y);
		double sum = 0;
		for (int64_t i = 0; i < B * T; i++)
			if (y[i] >= 0) {
				sum += (double)((i % T) - 2 * s.num_kv) / 2;
				n++;
			}
		mean[v] = sum / (double)n;
		free(x);
		free(y);
	}
	/* space 124: uniform without replacement has mean 61.5 */
	printf("test_synth: mqar mean query gap: power_a 0.01 %.1f, power_a 1 %.1f\n", mean[0],
	       mean[1]);
	ck_assert(fabs(mean[1] - 61.5) < 4);
	ck_assert(mean[0] < 0.6 * mean[1]);
}
END_TEST

/* ------------------------------------------------------------- flip-flop */

START_TEST(test_flipflop)
{
	lmk_synth s;
	lmk_synth_defaults(&s, LMK_SYNTH_FLIPFLOP);
	int64_t Ts[3] = {4, 10, 512};
	for (int ti = 0; ti < 3; ti++) {
		s.T = Ts[ti];
		s.seed = 3 + (uint64_t)ti;
		int64_t B = 200, T = s.T, ops[5] = {0};
		int32_t *x, *y;
		make(&s, 0, B, &x, &y);
		for (int64_t b = 0; b < B; b++) {
			const int32_t *xb = x + b * T, *yb = y + b * T;
			ck_assert_int_eq(xb[0], LMK_FF_W);
			ck_assert_int_eq(xb[T - 2], LMK_FF_R);
			int32_t last = -1;
			for (int64_t t = 0; t < T; t += 2) {
				ck_assert(xb[t] == LMK_FF_W || xb[t] == LMK_FF_R || xb[t] == LMK_FF_I);
				ck_assert(xb[t + 1] == LMK_FF_0 || xb[t + 1] == LMK_FF_1);
				ck_assert_int_eq(yb[t + 1], -1);
				if (t > 0 && t < T - 2)
					ops[xb[t]]++;
				if (xb[t] == LMK_FF_R) {
					/* the brute-force answer: the latest write */
					ck_assert_int_eq(yb[t], last);
					ck_assert_int_eq(xb[t + 1], last);
				} else {
					ck_assert_int_eq(yb[t], -1);
				}
				if (xb[t] == LMK_FF_W)
					last = xb[t + 1];
			}
		}
		if (T == 512) {
			double n = (double)(ops[LMK_FF_W] + ops[LMK_FF_R] + ops[LMK_FF_I]);
			ck_assert(fabs(ops[LMK_FF_W] / n - 0.1) < 0.01);
			ck_assert(fabs(ops[LMK_FF_R] / n - 0.1) < 0.01);
			ck_assert(fabs(ops[LMK_FF_I] / n - 0.8) < 0.01);
			check_reproducible(s, 9);
		}
		free(x);
		free(y);
	}
}
END_TEST

/* --------------------------------------------------------- word problems */

/* Permutations of {0..4} in lexicographic order, by nested loops. */
static int perms[120][5];

static void build_perms(void)
{
	int n = 0;
	for (int a = 0; a < 5; a++)
		for (int b = 0; b < 5; b++)
			for (int c = 0; c < 5; c++)
				for (int d = 0; d < 5; d++)
					for (int e = 0; e < 5; e++) {
						int p[5] = {a, b, c, d, e}, used = 0;
						for (int i = 0; i < 5; i++)
							used |= 1 << p[i];
						if (used == 31)
							memcpy(perms[n++], p, sizeof p);
					}
	ck_assert_int_eq(n, 120);
}

static int find_perm(const int p[5])
{
	for (int i = 0; i < 120; i++)
		if (!memcmp(perms[i], p, sizeof perms[i]))
			return i;
	return -1;
}

START_TEST(test_perm_ids)
{
	build_perms();
	for (int id = 0; id < 120; id++) {
		int p[5];
		lmk_synth_perm(id, p);
		ck_assert_int_eq(find_perm(p), id);
		ck_assert_int_eq(lmk_synth_perm_id(p), id);
	}
}
END_TEST

START_TEST(test_word)
{
	build_perms();
	for (int grp = 0; grp < 2; grp++) {
		lmk_synth s;
		lmk_synth_defaults(&s, LMK_SYNTH_WORD);
		s.group = grp ? LMK_SYNTH_A5 : LMK_SYNTH_S5;
		s.T = 67;
		s.seed = 21;
		int64_t B = 60, T = s.T;
		int32_t *x, *y;
		int hits[120] = {0};
		make(&s, 0, B, &x, &y);
		for (int64_t b = 0; b < B; b++) {
			int st[5] = {0, 1, 2, 3, 4};
			for (int64_t t = 0; t < T; t++) {
				int32_t g = x[b * T + t];
				ck_assert(g >= 0 && g < 120);
				hits[g]++;
				int nx[5];
				/* apply the state, then the new element */
				for (int i = 0; i < 5; i++)
					nx[i] = perms[g][st[i]];
				memcpy(st, nx, sizeof st);
				ck_assert_int_eq(y[b * T + t], find_perm(st));
			}
		}
		for (int id = 0; id < 120; id++) {
			int inv = 0;
			for (int i = 0; i < 5; i++)
				for (int j = i + 1; j < 5; j++)
					inv += perms[id][j] < perms[id][i];
			/* S5: every element appears; A5: the even ones and only them */
			if (grp && inv % 2)
				ck_assert_int_eq(hits[id], 0);
			else
				ck_assert_msg(hits[id] > 0, "element %d never drawn", id);
		}
		check_reproducible(s, 7);
		free(x);
		free(y);
	}
}
END_TEST

/* Over S5's transpositions: every x a swap, each of the 10 drawn, the
 * targets the running product; refused for A5. */
START_TEST(test_word_swaps)
{
	build_perms();
	lmk_synth s;
	lmk_synth_defaults(&s, LMK_SYNTH_WORD);
	s.swaps = 1;
	s.T = 33;
	s.seed = 5;
	int64_t B = 40, T = s.T;
	int32_t *x, *y;
	int hits[120] = {0}, kinds = 0;
	make(&s, 0, B, &x, &y);
	for (int64_t b = 0; b < B; b++) {
		int st[5] = {0, 1, 2, 3, 4};
		for (int64_t t = 0; t < T; t++) {
			int32_t g = x[b * T + t];
			int moved = 0;
			for (int i = 0; i < 5; i++)
				moved += perms[g][i] != i;
			ck_assert_int_eq(moved, 2);
			kinds += hits[g]++ == 0;
			int nx[5];
			for (int i = 0; i < 5; i++)
				nx[i] = perms[g][st[i]];
			memcpy(st, nx, sizeof st);
			ck_assert_int_eq(y[b * T + t], find_perm(st));
		}
	}
	ck_assert_int_eq(kinds, 10);
	check_reproducible(s, 3);
	free(x);
	free(y);
	s.group = LMK_SYNTH_A5;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
}
END_TEST

/* ------------------------------------------------------------- the rest */

START_TEST(test_checks)
{
	lmk_synth s;
	lmk_synth_defaults(&s, LMK_SYNTH_MQAR);
	ck_assert_int_eq(lmk_synth_check(&s), 0);
	s.T = 63;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	s.T = 60;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL); /* 4*16 > 60 */
	ck_assert_str_eq(lmk_errmsg(), "synth: mqar: T 60, num_kv 16: expected T even, num_kv >= "
				       "1 and 4*num_kv <= T");
	s.T = 64;
	ck_assert_int_eq(lmk_synth_check(&s), 0);
	s.vocab = 33; /* keys [1,16): 15 < 16 */
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	s.vocab = 34;
	ck_assert_int_eq(lmk_synth_check(&s), 0);
	s.power_a = 0;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	int32_t x[64], y[64];
	ck_assert_int_eq(lmk_synth_batch(&s, 0, 1, x, y), LMK_EINVAL);

	lmk_synth_defaults(&s, LMK_SYNTH_FLIPFLOP);
	ck_assert_int_eq(lmk_synth_check(&s), 0);
	s.p_read = 0.95;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	s.p_read = 0.1;
	s.T = 2;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);

	const char *names[4] = {"mqar", "flipflop", "s5", "a5"};
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(lmk_synth_parse(&s, names[i]), 0);
		ck_assert_int_eq(lmk_synth_check(&s), 0);
		ck_assert_str_eq(lmk_synth_name(&s), names[i]);
	}
	ck_assert_int_eq(s.group, LMK_SYNTH_A5);
	ck_assert_int_eq(lmk_synth_parse(&s, "s7"), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(), "synth: unknown task 's7' (mqar, flipflop, s5, a5)");

	lmk_synth_defaults(&s, LMK_SYNTH_WORD);
	ck_assert_int_eq(lmk_synth_check(&s), 0);
	s.group = 7;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	s.task = 9;
	ck_assert_int_eq(lmk_synth_check(&s), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(), "synth: unknown task 9");
}
END_TEST

START_TEST(test_score_argmax)
{
	const int32_t y[2 * 4] = {-1, 3, 2, -1, -1, -1, -1, -1};
	const int32_t p1[8] = {0, 3, 2, 9, 9, 9, 9, 9}, p2[8] = {0, 3, 1, 9, 9, 9, 9, 9};
	lmk_synth_acc a = {0};
	lmk_synth_score(&a, p1, y, 2, 4);
	ck_assert_int_eq(a.count, 2);
	ck_assert_int_eq(a.correct, 2);
	ck_assert_int_eq(a.seqs, 1); /* the second row has no target */
	ck_assert_int_eq(a.seq_correct, 1);
	lmk_synth_score(&a, p2, y, 2, 4);
	ck_assert_int_eq(a.count, 4);
	ck_assert_int_eq(a.correct, 3);
	ck_assert_int_eq(a.seqs, 2);
	ck_assert_int_eq(a.seq_correct, 1);
	ck_assert_int_eq(a.prefix, 2 + 1); /* p1: both targets; p2: the first */

	const float l[3 * 4] = {0, 2, 2, 1, NAN, -1, 5, NAN, -3, -2, -2, -5};
	int32_t pr[3];
	lmk_synth_argmax(pr, l, 3, 4);
	ck_assert_int_eq(pr[0], 1); /* ties: the first */
	ck_assert_int_eq(pr[1], 2); /* NaN never wins */
	ck_assert_int_eq(pr[2], 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("synth");
	TCase *tc = tcase_create("tasks");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_mqar);
	tcase_add_test(tc, test_mqar_power_law);
	tcase_add_test(tc, test_flipflop);
	tcase_add_test(tc, test_perm_ids);
	tcase_add_test(tc, test_word);
	tcase_add_test(tc, test_word_swaps);
	tcase_add_test(tc, test_checks);
	tcase_add_test(tc, test_score_argmax);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
