/* synth.c: the synthetic tasks of synth.h. Each example draws from its own
 * stretch of the seed's Philox stream, so a batch is the same whoever
 * makes it and in whatever order. Shape letters: B examples, T positions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rng.h"
#include "synth.h"

/* Words of the stream each example may use; no task comes close. */
#define EXAMPLE_WORDS ((uint64_t)1 << 32)

void lmk_synth_defaults(lmk_synth *s, int task)
{
	memset(s, 0, sizeof *s);
	s->task = task;
	switch (task) {
	case LMK_SYNTH_MQAR:
		s->T = 256;
		s->vocab = 8192;
		s->num_kv = 16;
		s->power_a = 0.01;
		s->random_non_queries = 1;
		break;
	case LMK_SYNTH_FLIPFLOP:
		s->T = 512;
		s->vocab = 5;
		s->p_write = 0.1;
		s->p_read = 0.1;
		break;
	default:
		s->T = 128;
		s->vocab = 120;
		s->group = LMK_SYNTH_S5;
		break;
	}
}

int lmk_synth_parse(lmk_synth *s, const char *name)
{
	static const struct {
		const char *name;
		int task, group;
	} names[] = {{"mqar", LMK_SYNTH_MQAR, 0},
		     {"flipflop", LMK_SYNTH_FLIPFLOP, 0},
		     {"s5", LMK_SYNTH_WORD, LMK_SYNTH_S5},
		     {"a5", LMK_SYNTH_WORD, LMK_SYNTH_A5}};
	for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(name, names[i].name)) {
			lmk_synth_defaults(s, names[i].task);
			s->group = names[i].group;
			return 0;
		}
	return lmk_err(LMK_EINVAL, "synth: unknown task '%s' (mqar, flipflop, s5, a5)",
		       name ? name : "(null)");
}

const char *lmk_synth_name(const lmk_synth *s)
{
	switch (s->task) {
	case LMK_SYNTH_MQAR:
		return "mqar";
	case LMK_SYNTH_FLIPFLOP:
		return "flipflop";
	case LMK_SYNTH_WORD:
		return s->group == LMK_SYNTH_A5 ? "a5" : "s5";
	default:
		return "?";
	}
}

int lmk_synth_check(const lmk_synth *s)
{
	if (s->T < 1)
		return lmk_err(LMK_EINVAL, "synth: expected T >= 1, found %lld", (long long)s->T);
	switch (s->task) {
	case LMK_SYNTH_MQAR: {
		int64_t V = s->vocab, K = s->num_kv;
		if (s->T % 2 || K < 1 || 4 * K > s->T)
			return lmk_err(LMK_EINVAL, "synth: mqar: T %lld, num_kv %lld: expected T even, "
						   "num_kv >= 1 and 4*num_kv <= T",
				       (long long)s->T, (long long)K);
		if (V > INT32_MAX || K > V / 2 - 1 || K > V - V / 2)
			return lmk_err(LMK_EINVAL, "synth: mqar: vocab %lld: expected num_kv %lld "
						   "distinct keys in [1,vocab/2) and values in "
						   "[vocab/2,vocab), vocab < 2^31",
				       (long long)V, (long long)K);
		if (!(s->power_a > 0) || !isfinite(s->power_a))
			return lmk_err(LMK_EINVAL, "synth: mqar: expected power_a > 0, found %g",
				       s->power_a);
		return 0;
	}
	case LMK_SYNTH_FLIPFLOP:
		if (s->vocab != 5)
			return lmk_err(LMK_EINVAL, "synth: flipflop: expected vocab 5, found %lld",
				       (long long)s->vocab);
		if (s->T % 2 || s->T < 4)
			return lmk_err(LMK_EINVAL, "synth: flipflop: expected T even and >= 4, found "
						   "%lld",
				       (long long)s->T);
		if (!(s->p_write >= 0 && s->p_read >= 0 && s->p_write + s->p_read <= 1))
			return lmk_err(LMK_EINVAL, "synth: flipflop: p_write %g, p_read %g: expected "
						   "probabilities with a sum <= 1",
				       s->p_write, s->p_read);
		return 0;
	case LMK_SYNTH_WORD:
		if (s->vocab != 120)
			return lmk_err(LMK_EINVAL, "synth: word: expected vocab 120, found %lld",
				       (long long)s->vocab);
		if (s->group != LMK_SYNTH_S5 && s->group != LMK_SYNTH_A5)
			return lmk_err(LMK_EINVAL, "synth: word: unknown group %d", s->group);
		if (s->swaps && s->group != LMK_SYNTH_S5)
			return lmk_err(LMK_EINVAL, "synth: word: swaps are odd permutations: S5 only, "
				       "not A5");
		return 0;
	default:
		return lmk_err(LMK_EINVAL, "synth: unknown task %d", s->task);
	}
}

/* Uniform in [0,1) with 53 bits: the power law's small weights need them. */
static double uniform53(lmk_rng *r) { return (double)(lmk_rng_u64(r) >> 11) * 0x1p-53; }

/* K distinct values of [lo, lo+n) in uniformly random order: Floyd's
 * subset sampling, then a shuffle (Floyd's order is not uniform). */
static void sample_distinct(lmk_rng *r, int32_t *out, int64_t K, int64_t lo, int64_t n)
{
	for (int64_t j = n - K, k = 0; j < n; j++, k++) {
		int64_t t = (int64_t)lmk_rng_below(r, (uint64_t)j + 1);
		for (int64_t i = 0; i < k; i++)
			if (out[i] == lo + t) {
				t = j;
				break;
			}
		out[k] = (int32_t)(lo + t);
	}
	for (int64_t k = K - 1; k > 0; k--) {
		int64_t i = (int64_t)lmk_rng_below(r, (uint64_t)k + 1);
		int32_t tmp = out[k];
		out[k] = out[i];
		out[i] = tmp;
	}
}

/* One MQAR example; w holds the space's weights, used marks taken gaps. */
static void mqar_one(const lmk_synth *s, lmk_rng *r, int32_t *x, int32_t *y, int32_t *keys,
		     int32_t *vals, double *w, char *used)
{
	int64_t T = s->T, V = s->vocab, K = s->num_kv, ctx = 2 * K, space = (T - ctx) / 2;
	sample_distinct(r, keys, K, 1, V / 2 - 1);
	sample_distinct(r, vals, K, V / 2, V - V / 2);
	for (int64_t t = 0; t < T; t++) {
		x[t] = 0;
		y[t] = -1;
	}
	for (int64_t k = 0; k < K; k++) {
		x[2 * k] = keys[k];
		x[2 * k + 1] = vals[k];
	}
	/* gaps without replacement, each draw over the weights left, as
	 * numpy's choice(replace=False, p=...) draws */
	double total = 0;
	for (int64_t g = 0; g < space; g++) {
		w[g] = pow((double)(g + 1), s->power_a - 1);
		used[g] = 0;
		total += w[g];
	}
	for (int64_t k = 0; k < K; k++) {
		double u = uniform53(r) * total, acc = 0;
		int64_t pick = -1, last = -1;
		for (int64_t g = 0; g < space; g++) {
			if (used[g])
				continue;
			last = g;
			acc += w[g];
			if (u < acc) {
				pick = g;
				break;
			}
		}
		if (pick < 0) /* u fell past the sum's rounding: the last free gap */
			pick = last;
		used[pick] = 1;
		total -= w[pick];
		x[ctx + 2 * pick] = keys[k];
		y[ctx + 2 * pick] = vals[k];
	}
	if (s->random_non_queries)
		for (int64_t t = ctx; t < T; t++)
			if (x[t] == 0)
				x[t] = (int32_t)lmk_rng_below(r, (uint64_t)V);
}

static void flipflop_one(const lmk_synth *s, lmk_rng *r, int32_t *x, int32_t *y)
{
	int64_t P = s->T / 2;
	int32_t bit = 0;
	for (int64_t p = 0; p < P; p++) {
		int32_t op;
		if (p == 0) {
			op = LMK_FF_W;
		} else if (p == P - 1) {
			op = LMK_FF_R;
		} else {
			double u = uniform53(r);
			op = u < s->p_write ? LMK_FF_W : u < s->p_write + s->p_read ? LMK_FF_R : LMK_FF_I;
		}
		int32_t b;
		if (op == LMK_FF_R) {
			b = bit;
		} else {
			b = (int32_t)lmk_rng_below(r, 2);
			if (op == LMK_FF_W)
				bit = b;
		}
		x[2 * p] = op;
		x[2 * p + 1] = b;
		y[2 * p] = op == LMK_FF_R ? b : -1;
		y[2 * p + 1] = -1;
	}
}

void lmk_synth_perm(int id, int p[5])
{
	/* id in the factorial number system: digit i picks among those left */
	int left[5] = {0, 1, 2, 3, 4}, n = 5, f = 24;
	for (int i = 0; i < 5; i++) {
		int d = id / f;
		id %= f;
		p[i] = left[d];
		for (int j = d; j < n - 1; j++)
			left[j] = left[j + 1];
		n--;
		if (n > 0)
			f /= n;
	}
}

int lmk_synth_perm_id(const int p[5])
{
	int id = 0;
	for (int i = 0; i < 5; i++) {
		int smaller = 0;
		for (int j = i + 1; j < 5; j++)
			smaller += p[j] < p[i];
		id = id * (5 - i) + smaller;
	}
	return id;
}

static int perm_even(const int p[5])
{
	int inv = 0;
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			inv += p[j] < p[i];
	return inv % 2 == 0;
}

static void word_one(const lmk_synth *s, lmk_rng *r, int32_t *x, int32_t *y)
{
	int state[5] = {0, 1, 2, 3, 4}, g[5], next[5];
	for (int64_t t = 0; t < s->T; t++) {
		int id;
		if (s->swaps) {
			/* the k-th of the pairs i < j in lexicographic order */
			int k = (int)lmk_rng_below(r, 10), i = 0;
			while (k >= 4 - i) {
				k -= 4 - i;
				i++;
			}
			for (int e = 0; e < 5; e++)
				g[e] = e;
			g[i] = i + 1 + k;
			g[i + 1 + k] = i;
			id = lmk_synth_perm_id(g);
		} else {
			do {
				id = (int)lmk_rng_below(r, 120);
				lmk_synth_perm(id, g);
			} while (s->group == LMK_SYNTH_A5 && !perm_even(g));
		}
		/* the earlier product first: (state·g)(i) = g(state(i)) */
		for (int i = 0; i < 5; i++)
			next[i] = g[state[i]];
		memcpy(state, next, sizeof state);
		x[t] = id;
		y[t] = lmk_synth_perm_id(state);
	}
}

int lmk_synth_batch(const lmk_synth *s, uint64_t first, int64_t B, int32_t *x, int32_t *y)
{
	int rc = lmk_synth_check(s);
	if (rc < 0)
		return rc;
	if (B < 0)
		return lmk_err(LMK_EINVAL, "synth: expected B >= 0, found %lld", (long long)B);
	int64_t T = s->T, K = s->task == LMK_SYNTH_MQAR ? s->num_kv : 0;
	int64_t space = s->task == LMK_SYNTH_MQAR ? (T - 2 * K) / 2 : 0;
	int32_t *kv = NULL;
	double *w = NULL;
	char *used = NULL;
	if (s->task == LMK_SYNTH_MQAR) {
		kv = malloc(sizeof *kv * (size_t)(2 * K));
		w = malloc(sizeof *w * (size_t)space);
		used = malloc((size_t)space);
		if (!kv || !w || !used) {
			free(kv);
			free(w);
			free(used);
			return lmk_err(LMK_ENOMEM, "synth: no memory for a batch");
		}
	}
	for (int64_t b = 0; b < B; b++) {
		lmk_rng r;
		lmk_rng_init(&r, s->seed);
		lmk_rng_seek(&r, (first + (uint64_t)b) * EXAMPLE_WORDS);
		int32_t *xb = x + b * T, *yb = y + b * T;
		if (s->task == LMK_SYNTH_MQAR)
			mqar_one(s, &r, xb, yb, kv, kv + K, w, used);
		else if (s->task == LMK_SYNTH_FLIPFLOP)
			flipflop_one(s, &r, xb, yb);
		else
			word_one(s, &r, xb, yb);
	}
	free(kv);
	free(w);
	free(used);
	return 0;
}

void lmk_synth_score(lmk_synth_acc *a, const int32_t *pred, const int32_t *y, int64_t B, int64_t T)
{
	for (int64_t b = 0; b < B; b++) {
		int64_t n = 0, ok = 0, wrong = 0;
		for (int64_t t = 0; t < T; t++) {
			if (y[b * T + t] < 0)
				continue;
			n++;
			int right = pred[b * T + t] == y[b * T + t];
			ok += right;
			wrong |= !right;
			a->prefix += !wrong;
		}
		a->count += n;
		a->correct += ok;
		if (n) {
			a->seqs++;
			a->seq_correct += ok == n;
		}
	}
}

void lmk_synth_argmax(int32_t *pred, const float *logits, int64_t N, int64_t V)
{
	for (int64_t n = 0; n < N; n++) {
		const float *l = logits + n * V;
		int64_t best = 0;
		for (int64_t v = 1; v < V; v++)
			if (l[v] > l[best] || (isnan(l[best]) && !isnan(l[v])))
				best = v;
		pred[n] = (int32_t)best;
	}
}
