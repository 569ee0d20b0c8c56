/* test_ops.c: every op of ops.h on the CPU.
 * Gradients: for each op and each shape of its table, random inputs, a
 * random projection r of the output and L = sum(out * r); the analytic
 * gradient comes from the tape (lmk_backward_from with dout = r, into input
 * gradients preloaded with random values, so that a backward that assigns
 * instead of adding fails), the numerical one from central differences of a
 * float64 reference forward written here, independently of the kernels.
 * Each case runs twice: on the inputs themselves, and on copies made by an
 * op (lmk_scale by 1), whose gradients the tape leaves unwritten, so that
 * the backward assigns them (tensor.h) where it can; the arena is filled
 * with NaN, so an element it forgets to write shows. linear_cat's weights
 * are consecutive parameters (its op cannot read copies): its second and
 * third runs leave some and then all of their gradients unwritten, holding
 * NaN, which the backward must assign. Relative error of each
 * input's gradient vector (||g_a - g_n|| / ||g_n||) must stay under 1e-4;
 * the float forward must match the reference within 1e-5.
 * Then forward values checked by hand, equivalences (GQA and MHA, packed
 * and separate sequences), thread-count independence and error paths. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ops.h"
#include "rng.h"

#define MAXIN 4
/* Coordinates of one input checked by finite differences (all of a small
 * input, a random sample of a large one). */
#define MAXCHECK 96
#define GRAD_TOL 1e-4
#define FWD_TOL 1e-5

typedef struct gcase gcase;
typedef lmk_tensor *(*op_fn)(lmk_ctx *c, lmk_tensor **x, const gcase *g);
typedef void (*ref_fn)(const gcase *g, double **x, double *out);

struct gcase {
	const char *name;
	op_fn op;
	ref_fn ref;
	int nin;                         /* float inputs */
	int ndim[MAXIN];
	int64_t shape[MAXIN][LMK_MAXDIM];
	int frozen[MAXIN];               /* inputs without a gradient */
	float amp;                       /* inputs uniform in +-amp (default 1) */
	const int32_t *ia;               /* integer input (ids, pos, seg, targets) */
	int ia_ndim;
	int64_t ia_shape[LMK_MAXDIM];
	int64_t p[8];                    /* op parameters */
	float f[4];
	const lmk_rope *rope;
	int adjacent;                    /* inputs 1.. are consecutive parameters
					  * of one lmk_params (linear_cat) */
};

static double worst_grad, worst_fwd;  /* over the shapes of one op */
static int ncases;

/* One line per op: how close the worst shape came to the tolerances. */
static void report(const char *op)
{
	printf("test_ops: %-14s %2d shapes, worst gradient error %.1e, forward %.1e\n", op, ncases,
	       worst_grad, worst_fwd);
	worst_grad = worst_fwd = 0;
	ncases = 0;
}

static float nonzero_uniform(lmk_rng *r, float amp)
{
	float x;
	do
		x = 2.0f * lmk_rng_uniform(r) - 1.0f;
	while (fabsf(x) < 1e-3f);
	return amp * x;
}

static const char *shape_of(const lmk_tensor *t)
{
	static char buf[96];
	int o = snprintf(buf, sizeof buf, "(");
	for (int i = 0; i < t->ndim; i++)
		o += snprintf(buf + o, sizeof buf - (size_t)o, "%s%lld", i ? "," : "",
			      (long long)t->shape[i]);
	snprintf(buf + o, sizeof buf - (size_t)o, ")");
	return buf;
}

static double ref_loss(const gcase *g, double **xd, double *outd, const double *rd, int64_t n)
{
	g->ref(g, xd, outd);
	double L = 0;
	for (int64_t i = 0; i < n; i++)
		L += outd[i] * rd[i];
	return L;
}

/* Whether chain leaves input k's gradient unwritten: for adjacent
 * parameters, which cannot be copies made by an op, chain 1 marks the odd
 * ones (some of the weights of one product: mixed), chain 2 all. */
static int param_unwritten(const gcase *g, int chain, int k)
{
	return g->adjacent && k && !g->frozen[k] && (chain == 2 || (chain == 1 && k % 2));
}

/* The gradient check of one case, the op reading the inputs (chain 0) or
 * copies of them made by an op (chain 1, 2: see param_unwritten); see the
 * top of the file. */
static void check_grad_via(const gcase *g, uint64_t seed, int chain)
{
	lmk_ctx c;
	lmk_rng rng;
	lmk_params ps;
	lmk_tensor *x[MAXIN];
	double *xd[MAXIN];
	float amp = g->amp ? g->amp : 1.0f;

	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	c.arena.poison = 1; /* NaN wherever a backward forgets to write */
	lmk_rng_init(&rng, seed);
	if (g->adjacent) {
		lmk_params_init(&ps, !g->frozen[1]);
		for (int k = 1; k < g->nin; k++) {
			char name[16];
			snprintf(name, sizeof name, "w%d", k);
			ck_assert_int_eq(lmk_params_add(&ps, name, g->ndim[k], g->shape[k]), k - 1);
		}
		ck_assert_int_eq(lmk_params_alloc(&ps), 0);
	}
	for (int k = 0; k < g->nin; k++) {
		x[k] = g->adjacent && k ? &ps.t[k - 1]
					: lmk_tensor_new(&c, LMK_F32, g->ndim[k], g->shape[k],
							 !g->frozen[k]);
		ck_assert_ptr_nonnull(x[k]);
		xd[k] = malloc(sizeof(double) * (size_t)(x[k]->n ? x[k]->n : 1));
		float *xf = x[k]->data;
		for (int64_t i = 0; i < x[k]->n; i++) {
			xf[i] = nonzero_uniform(&rng, amp);
			xd[k][i] = xf[i];
		}
	}
	lmk_tensor *in[MAXIN];
	for (int k = 0; k < g->nin; k++) {
		in[k] = chain && !g->frozen[k] && !(g->adjacent && k) ? lmk_scale(&c, x[k], 1.0f)
								      : x[k];
		ck_assert_ptr_nonnull(in[k]);
	}
	lmk_tensor *out = g->op(&c, in, g);
	ck_assert_msg(out != NULL, "%s: op failed: %s", g->name, lmk_errmsg());
	int64_t n = out->n;
	double *outd = malloc(sizeof(double) * (size_t)(n ? n : 1));
	double *rd = malloc(sizeof(double) * (size_t)(n ? n : 1));
	float *rf = malloc(sizeof(float) * (size_t)(n ? n : 1));

	/* forward against the reference */
	g->ref(g, xd, outd);
	double e2 = 0, r2 = 0;
	const float *of = out->data;
	for (int64_t i = 0; i < n; i++) {
		ck_assert_msg(isfinite(of[i]), "%s: output %lld is %g", g->name, (long long)i,
			      (double)of[i]);
		e2 += (of[i] - outd[i]) * (of[i] - outd[i]);
		r2 += outd[i] * outd[i];
	}
	double fe = r2 > 1e-24 ? sqrt(e2 / r2) : sqrt(e2);
	if (fe > worst_fwd)
		worst_fwd = fe;
	ck_assert_msg(fe < FWD_TOL, "%s: forward differs from the reference by %g", g->name, fe);

	for (int64_t i = 0; i < n; i++) {
		rf[i] = nonzero_uniform(&rng, 1.0f);
		rd[i] = rf[i];
	}
	/* gradients already holding something, to check that backwards add */
	float *prior[MAXIN] = {0};
	for (int k = 0; k < g->nin; k++) {
		if (g->frozen[k])
			continue;
		prior[k] = malloc(sizeof(float) * (size_t)(x[k]->n ? x[k]->n : 1));
		for (int64_t i = 0; i < x[k]->n; i++)
			((float *)x[k]->grad)[i] = prior[k][i] = nonzero_uniform(&rng, 0.01f);
		if (param_unwritten(g, chain, k)) { /* NaN unless assigned */
			x[k]->gunwritten = 1;
			for (int64_t i = 0; i < x[k]->n; i++) {
				((float *)x[k]->grad)[i] = NAN;
				prior[k][i] = 0;
			}
		}
	}
	ck_assert_msg(lmk_backward_from(&c, out, rf) == 0, "%s: backward: %s", g->name,
		      lmk_errmsg());

	for (int k = 0; k < g->nin; k++) {
		if (g->frozen[k]) {
			ck_assert_ptr_null(x[k]->grad);
			continue;
		}
		float *ga = x[k]->grad;
		int64_t m = x[k]->n, nc = m <= MAXCHECK ? m : MAXCHECK;
		for (int64_t i = 0; i < m; i++)
			ga[i] -= prior[k][i];
		free(prior[k]);
		double d2 = 0, n2 = 0, a2 = 0;
		for (int64_t t = 0; t < nc; t++) {
			int64_t j = m <= MAXCHECK ? t : (int64_t)lmk_rng_below(&rng, (uint64_t)m);
			double v = xd[k][j], h = 1e-5 * (fabs(v) > 1 ? fabs(v) : 1);
			xd[k][j] = v + h;
			double lp = ref_loss(g, xd, outd, rd, n);
			xd[k][j] = v - h;
			double lm = ref_loss(g, xd, outd, rd, n);
			xd[k][j] = v;
			double gn = (lp - lm) / (2 * h);
			d2 += (ga[j] - gn) * (ga[j] - gn);
			n2 += gn * gn;
			a2 += (double)ga[j] * ga[j];
		}
		if (n2 < 1e-20) {
			ck_assert_msg(a2 < 1e-12, "%s: input %d: gradient should be 0, norm %g",
				      g->name, k, sqrt(a2));
		} else {
			double err = sqrt(d2 / n2);
			if (err > worst_grad)
				worst_grad = err;
			ck_assert_msg(err < GRAD_TOL, "%s: input %d %s: gradient relative error %g",
				      g->name, k, shape_of(x[k]), err);
		}
	}
	for (int k = 0; k < g->nin; k++)
		free(xd[k]);
	free(outd);
	free(rd);
	free(rf);
	if (g->adjacent)
		lmk_params_free(&ps);
	lmk_ctx_free(&c);
}

static void check_grad(const gcase *g, uint64_t seed)
{
	check_grad_via(g, seed, 0);
	check_grad_via(g, seed, 1);
	if (g->adjacent)
		check_grad_via(g, seed, 2);
	ncases++;
}

/* Sets input k's shape. */
static void in_shape(gcase *g, int k, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
	int64_t s[4] = {a, b, c, d};
	g->ndim[k] = ndim;
	memcpy(g->shape[k], s, sizeof s);
	if (k >= g->nin)
		g->nin = k + 1;
}

static lmk_tensor *wrap_ia(lmk_ctx *c, const gcase *g)
{
	return g->ia ? lmk_tensor_wrap(c, LMK_I32, g->ia_ndim, g->ia_shape, (void *)g->ia) : NULL;
}

/* -------------------------------------------------------------- embedding */

static lmk_tensor *op_embedding(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_embedding(c, wrap_ia(c, g), x[0]);
}

static void ref_embedding(const gcase *g, double **x, double *out)
{
	int64_t N = g->p[0], C = g->shape[0][1];
	for (int64_t n = 0; n < N; n++)
		for (int64_t j = 0; j < C; j++)
			out[n * C + j] = x[0][g->ia[n] * C + j];
}

START_TEST(test_grad_embedding)
{
	static const struct { int64_t B, T, V, C; } tab[] = {
		{1, 1, 1, 1}, {1, 5, 3, 7}, {2, 3, 2, 5}, {1, 13, 7, 33}, {2, 32, 50, 256},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		int64_t N = tab[t].B * tab[t].T;
		int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
		for (int64_t i = 0; i < N; i++) /* repeats whenever N > V */
			ids[i] = (int32_t)((i * 5 + 1) % tab[t].V);
		gcase g = {.name = "embedding", .op = op_embedding, .ref = ref_embedding,
			   .ia = ids, .ia_ndim = 2, .ia_shape = {tab[t].B, tab[t].T}, .p = {N}};
		in_shape(&g, 0, 2, tab[t].V, tab[t].C, 0, 0);
		check_grad(&g, 100 + t);
		free(ids);
	}
	report("embedding");
}
END_TEST

/* ----------------------------------------------------------------- linear */

static lmk_tensor *op_linear(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_linear(c, x[0], x[1], g->nin > 2 ? x[2] : NULL);
}

static void ref_linear(const gcase *g, double **x, double *out)
{
	int64_t IC = g->shape[1][1], OC = g->shape[1][0], N = g->p[0];
	for (int64_t n = 0; n < N; n++)
		for (int64_t o = 0; o < OC; o++) {
			double s = g->nin > 2 ? x[2][o] : 0;
			for (int64_t i = 0; i < IC; i++)
				s += x[0][n * IC + i] * x[1][o * IC + i];
			out[n * OC + o] = s;
		}
}

START_TEST(test_grad_linear)
{
	static const struct { int64_t B, T, IC, OC; int bias, frozen_x, frozen_w; } tab[] = {
		{1, 1, 1, 1, 1, 0, 0}, {1, 3, 5, 7, 1, 0, 0}, {1, 13, 33, 67, 0, 0, 0},
		{2, 7, 67, 33, 1, 0, 1}, /* frozen base weight, as under LoRA */
		{3, 5, 8, 3, 1, 1, 0},   /* x without grad (first layer) */
		{2, 8, 256, 96, 1, 0, 0},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		gcase g = {.name = "linear", .op = op_linear, .ref = ref_linear,
			   .p = {tab[t].B * tab[t].T}};
		in_shape(&g, 0, 3, tab[t].B, tab[t].T, tab[t].IC, 0);
		in_shape(&g, 1, 2, tab[t].OC, tab[t].IC, 0, 0);
		if (tab[t].bias)
			in_shape(&g, 2, 1, tab[t].OC, 0, 0, 0);
		g.frozen[0] = tab[t].frozen_x;
		g.frozen[1] = g.frozen[2] = tab[t].frozen_w;
		check_grad(&g, 200 + t);
	}
	report("linear");
}
END_TEST

/* linear_add: x, w, r and the bias (when given) as inputs 0 to 3 */
static lmk_tensor *op_linear_add(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_linear_add(c, x[0], x[1], g->nin > 3 ? x[3] : NULL, x[2]);
}

static void ref_linear_add(const gcase *g, double **x, double *out)
{
	int64_t IC = g->shape[1][1], OC = g->shape[1][0], N = g->p[0];
	for (int64_t n = 0; n < N; n++)
		for (int64_t o = 0; o < OC; o++) {
			double s = g->nin > 3 ? x[3][o] : 0;
			for (int64_t i = 0; i < IC; i++)
				s += x[0][n * IC + i] * x[1][o * IC + i];
			out[n * OC + o] = x[2][n * OC + o] + s;
		}
}

START_TEST(test_grad_linear_add)
{
	static const struct { int64_t B, T, IC, OC; int bias, frozen_r; } tab[] = {
		{1, 1, 1, 1, 1, 0}, {1, 3, 5, 7, 0, 0}, {2, 7, 67, 33, 1, 0},
		{3, 5, 8, 3, 1, 1}, /* r without grad */
		{2, 8, 96, 256, 0, 0},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		gcase g = {.name = "linear_add", .op = op_linear_add, .ref = ref_linear_add,
			   .p = {tab[t].B * tab[t].T}};
		in_shape(&g, 0, 3, tab[t].B, tab[t].T, tab[t].IC, 0);
		in_shape(&g, 1, 2, tab[t].OC, tab[t].IC, 0, 0);
		in_shape(&g, 2, 3, tab[t].B, tab[t].T, tab[t].OC, 0);
		if (tab[t].bias)
			in_shape(&g, 3, 1, tab[t].OC, 0, 0, 0);
		g.frozen[2] = tab[t].frozen_r;
		check_grad(&g, 250 + t);
	}
	report("linear_add");
}
END_TEST

/* linear_cat: x, then the weights, adjacent parameters */
static lmk_tensor *op_linear_cat(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_linear_cat(c, x[0], g->nin - 1, x + 1);
}

static void ref_linear_cat(const gcase *g, double **x, double *out)
{
	int64_t IC = g->shape[1][1], N = g->p[0], OC = 0;
	for (int k = 1; k < g->nin; k++)
		OC += g->shape[k][0];
	for (int64_t n = 0; n < N; n++)
		for (int k = 1, o0 = 0; k < g->nin; o0 += (int)g->shape[k][0], k++)
			for (int64_t o = 0; o < g->shape[k][0]; o++) {
				double s = 0;
				for (int64_t i = 0; i < IC; i++)
					s += x[0][n * IC + i] * x[k][o * IC + i];
				out[n * OC + o0 + o] = s;
			}
}

START_TEST(test_grad_linear_cat)
{
	/* IC a multiple of 16 keeps every weight lmk_params-aligned, so adjacent */
	static const struct { int64_t B, T, IC, O[3]; int frozen_x, frozen_w; } tab[] = {
		{1, 1, 16, {1, 0, 0}, 0, 0},  {1, 3, 16, {5, 3, 0}, 0, 0},
		{2, 7, 32, {7, 1, 9}, 0, 0},  {3, 5, 16, {2, 4, 0}, 1, 0}, /* x without grad */
		{2, 3, 48, {5, 6, 0}, 0, 1},  /* frozen weights, as under LoRA */
		{2, 8, 256, {96, 96, 0}, 0, 0},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		gcase g = {.name = "linear_cat", .op = op_linear_cat, .ref = ref_linear_cat,
			   .p = {tab[t].B * tab[t].T}, .adjacent = 1};
		in_shape(&g, 0, 3, tab[t].B, tab[t].T, tab[t].IC, 0);
		for (int k = 0; k < 3 && tab[t].O[k]; k++) {
			in_shape(&g, 1 + k, 2, tab[t].O[k], tab[t].IC, 0, 0);
			g.frozen[1 + k] = tab[t].frozen_w;
		}
		g.frozen[0] = tab[t].frozen_x;
		check_grad(&g, 270 + t);
	}
	report("linear_cat");
}
END_TEST

/* ------------------------------------------------------------------ norms */

static lmk_tensor *op_rmsnorm(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_rmsnorm(c, x[0], g->nin > 1 ? x[1] : NULL, g->f[0]);
}

static void ref_rmsnorm(const gcase *g, double **x, double *out)
{
	int64_t N = g->p[0], C = g->p[1];
	for (int64_t n = 0; n < N; n++) {
		double ss = 0;
		for (int64_t j = 0; j < C; j++)
			ss += x[0][n * C + j] * x[0][n * C + j];
		double r = 1 / sqrt(ss / C + g->f[0]);
		for (int64_t j = 0; j < C; j++)
			out[n * C + j] = x[0][n * C + j] * r * (g->nin > 1 ? x[1][j] : 1);
	}
}

static lmk_tensor *op_layernorm(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	lmk_tensor *w = g->p[2] ? x[1] : NULL, *b = g->p[3] ? x[1 + (g->p[2] != 0)] : NULL;
	return lmk_layernorm(c, x[0], w, b, g->f[0]);
}

static void ref_layernorm(const gcase *g, double **x, double *out)
{
	int64_t N = g->p[0], C = g->p[1];
	const double *w = g->p[2] ? x[1] : NULL, *b = g->p[3] ? x[1 + (g->p[2] != 0)] : NULL;
	for (int64_t n = 0; n < N; n++) {
		const double *xr = x[0] + n * C;
		double mu = 0, var = 0;
		for (int64_t j = 0; j < C; j++)
			mu += xr[j];
		mu /= C;
		for (int64_t j = 0; j < C; j++)
			var += (xr[j] - mu) * (xr[j] - mu);
		double r = 1 / sqrt(var / C + g->f[0]);
		for (int64_t j = 0; j < C; j++)
			out[n * C + j] = (xr[j] - mu) * r * (w ? w[j] : 1) + (b ? b[j] : 0);
	}
}

START_TEST(test_grad_rmsnorm)
{
	/* C = 1 needs a large eps: its gradient, eps/(x²+eps)^(3/2), is all
	 * cancellation in float32 otherwise */
	static const struct { int64_t N, C; int w; float eps; } tab[] = {
		{1, 1, 1, 0.25f}, {3, 7, 1, 1e-6f}, {5, 33, 1, 1e-5f}, {4, 67, 0, 1e-5f},
		{13, 5, 1, 1e-2f}, {8, 256, 1, 1e-5f},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		gcase g = {.name = "rmsnorm", .op = op_rmsnorm, .ref = ref_rmsnorm,
			   .p = {tab[t].N, tab[t].C}, .f = {tab[t].eps}};
		in_shape(&g, 0, 2, tab[t].N, tab[t].C, 0, 0);
		if (tab[t].w)
			in_shape(&g, 1, 1, tab[t].C, 0, 0, 0);
		check_grad(&g, 300 + t);
	}
	report("rmsnorm");
}
END_TEST

START_TEST(test_grad_layernorm)
{
	static const struct { int64_t N, C; int w, b; } tab[] = {
		{1, 1, 1, 1}, {3, 7, 1, 1}, {5, 33, 0, 0}, {4, 67, 1, 0}, {2, 13, 0, 1},
		{8, 256, 1, 1},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		gcase g = {.name = "layernorm", .op = op_layernorm, .ref = ref_layernorm,
			   .p = {tab[t].N, tab[t].C, tab[t].w, tab[t].b}, .f = {1e-5f}};
		in_shape(&g, 0, 2, tab[t].N, tab[t].C, 0, 0);
		int k = 1;
		if (tab[t].w)
			in_shape(&g, k++, 1, tab[t].C, 0, 0, 0);
		if (tab[t].b)
			in_shape(&g, k++, 1, tab[t].C, 0, 0, 0);
		check_grad(&g, 400 + t);
	}
	report("layernorm");
}
END_TEST

/* ------------------------------------------------------------------- rope */

static lmk_tensor *op_rope(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_rope_apply(c, x[0], g->rope, wrap_ia(c, g));
}

static void ref_rope(const gcase *g, double **x, double *out)
{
	int64_t N = g->shape[0][0] * g->shape[0][1], H = g->shape[0][2], D = g->shape[0][3];
	const lmk_rope *r = g->rope;
	for (int64_t n = 0; n < N; n++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < D / 2; i++) {
				/* the angle rounded to float32 as transformers computes it */
				float a = (float)g->ia[n] * r->inv_freq[i];
				double cs = cos((double)a) * r->attn_factor;
				double sn = sin((double)a) * r->attn_factor;
				const double *xr = x[0] + (n * H + h) * D;
				double *o = out + (n * H + h) * D;
				o[i] = xr[i] * cs - xr[i + D / 2] * sn;
				o[i + D / 2] = xr[i + D / 2] * cs + xr[i] * sn;
			}
}

START_TEST(test_grad_rope)
{
	static const struct { int64_t B, T, H, D; int type; float theta; int pos0; } tab[] = {
		{1, 1, 1, 2, LMK_ROPE_NONE, 10000, 0},
		{2, 3, 3, 6, LMK_ROPE_NONE, 10000, 0},
		{1, 5, 2, 10, LMK_ROPE_LINEAR, 10000, 3},
		{2, 7, 3, 16, LMK_ROPE_LLAMA3, 10000, 100},
		{1, 13, 1, 34, LMK_ROPE_LLAMA3, 500000, 5000},
		{2, 16, 4, 128, LMK_ROPE_LLAMA3, 500000, 0},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		/* original_max_pos 1024 puts the frequencies of D = 16 in all
		 * three bands of the llama3 rule */
		lmk_rope_scaling s = {tab[t].type, 4.0f, 1.0f, 4.0f, 1024};
		lmk_rope r;
		ck_assert_int_eq(lmk_rope_init(&r, (int)tab[t].D, tab[t].theta, &s), 0);
		int64_t N = tab[t].B * tab[t].T;
		int32_t *pos = malloc(sizeof(int32_t) * (size_t)N);
		for (int64_t i = 0; i < N; i++)
			pos[i] = tab[t].pos0 + (int32_t)(i % tab[t].T) * 3;
		gcase g = {.name = "rope", .op = op_rope, .ref = ref_rope, .rope = &r, .ia = pos,
			   .ia_ndim = 2, .ia_shape = {tab[t].B, tab[t].T}};
		in_shape(&g, 0, 4, tab[t].B, tab[t].T, tab[t].H, tab[t].D);
		check_grad(&g, 500 + t);
		free(pos);
		lmk_rope_free(&r);
	}
	report("rope");
}
END_TEST

/* -------------------------------------------------------------- attention */

static lmk_tensor *op_attention(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_attention_ex(c, x[0], x[1], x[2], wrap_ia(c, g), g->f[0], (int)g->p[5]);
}

/* Plain softmax attention in double; a row that sees nothing is 0. */
static void ref_attention(const gcase *g, double **x, double *out)
{
	int64_t B = g->p[0], T = g->p[1], H = g->p[2], K = g->p[3], D = g->p[4];
	int causal = (int)g->p[5];
	const int32_t *seg = g->ia;
	double *s = malloc(sizeof(double) * (size_t)T);
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < T; i++) {
				int64_t kh = h / (H / K);
				const double *q = x[0] + ((b * T + i) * H + h) * D;
				double *o = out + ((b * T + i) * H + h) * D, m = -INFINITY, l = 0;
				for (int64_t j = 0; j < T; j++) {
					int ok = !(causal && j > i);
					if (seg)
						ok = ok && seg[b * T + i] >= 0 &&
						     seg[b * T + j] == seg[b * T + i];
					s[j] = -INFINITY;
					if (!ok)
						continue;
					const double *k = x[1] + ((b * T + j) * K + kh) * D;
					double d = 0;
					for (int64_t e = 0; e < D; e++)
						d += q[e] * k[e];
					s[j] = d * g->f[0];
					m = s[j] > m ? s[j] : m;
				}
				for (int64_t e = 0; e < D; e++)
					o[e] = 0;
				if (m == -INFINITY)
					continue;
				for (int64_t j = 0; j < T; j++)
					l += s[j] == -INFINITY ? 0 : exp(s[j] - m);
				for (int64_t j = 0; j < T; j++) {
					if (s[j] == -INFINITY)
						continue;
					double p = exp(s[j] - m) / l;
					const double *v = x[2] + ((b * T + j) * K + kh) * D;
					for (int64_t e = 0; e < D; e++)
						o[e] += p * v[e];
				}
			}
	free(s);
}

enum { SEG_NONE, SEG_PACKED, SEG_PACKED_PAD };

START_TEST(test_grad_attention)
{
	static const struct { int64_t B, T, H, K, D; int seg, causal; float amp; } tab[] = {
		{1, 1, 1, 1, 1, SEG_NONE, 1, 1},
		{1, 1, 4, 2, 8, SEG_NONE, 1, 1},        /* T = 1 with GQA */
		{2, 3, 2, 2, 3, SEG_NONE, 1, 1},        /* H = K */
		{1, 5, 4, 2, 7, SEG_NONE, 1, 1},        /* GQA */
		{2, 7, 3, 1, 5, SEG_NONE, 1, 2},        /* K = 1 (multi-query) */
		{2, 13, 4, 2, 8, SEG_PACKED, 1, 1},     /* packed sequences */
		{2, 11, 2, 1, 6, SEG_PACKED_PAD, 1, 1}, /* packed, padding -1 */
		{1, 9, 2, 1, 4, SEG_NONE, 0, 1},        /* bidirectional */
		{2, 10, 4, 2, 5, SEG_PACKED_PAD, 0, 1}, /* bidirectional, packed */
		{1, 32, 4, 2, 64, SEG_NONE, 1, 2},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		int64_t B = tab[t].B, T = tab[t].T;
		int32_t *seg = NULL;
		if (tab[t].seg != SEG_NONE) {
			seg = malloc(sizeof(int32_t) * (size_t)(B * T));
			for (int64_t b = 0; b < B; b++)
				for (int64_t i = 0; i < T; i++) {
					/* segments of 2+b, 3+b, ... tokens; the last 3
					 * positions padding when asked */
					int64_t len = 2 + b, s = 0, at = i;
					while (at >= len) {
						at -= len++;
						s++;
					}
					seg[b * T + i] = (int32_t)s;
					if (tab[t].seg == SEG_PACKED_PAD && i >= T - 3)
						seg[b * T + i] = -1;
				}
		}
		gcase g = {.name = "attention", .op = op_attention, .ref = ref_attention,
			   .amp = tab[t].amp, .ia = seg, .ia_ndim = 2, .ia_shape = {B, T},
			   .p = {B, T, tab[t].H, tab[t].K, tab[t].D, tab[t].causal},
			   .f = {1.0f / sqrtf((float)tab[t].D)}};
		in_shape(&g, 0, 4, B, T, tab[t].H, tab[t].D);
		in_shape(&g, 1, 4, B, T, tab[t].K, tab[t].D);
		in_shape(&g, 2, 4, B, T, tab[t].K, tab[t].D);
		check_grad(&g, 600 + t);
		free(seg);
	}
	report("attention");
}
END_TEST

/* ------------------------------------------------------------ elementwise */

static lmk_tensor *op_silu(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_silu(c, x[0]);
}

static double silu_d(double x) { return x / (1 + exp(-x)); }

static void ref_silu(const gcase *g, double **x, double *out)
{
	for (int64_t i = 0; i < g->p[0]; i++)
		out[i] = silu_d(x[0][i]);
}

static lmk_tensor *op_gelu(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_gelu(c, x[0], (int)g->p[1]);
}

static void ref_gelu(const gcase *g, double **x, double *out)
{
	for (int64_t i = 0; i < g->p[0]; i++) {
		double v = x[0][i];
		if (g->p[1])
			out[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
		else
			out[i] = 0.5 * v * (1 + erf(v / sqrt(2)));
	}
}

static lmk_tensor *op_swiglu(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_swiglu(c, x[0], x[1]);
}

static void ref_swiglu(const gcase *g, double **x, double *out)
{
	for (int64_t i = 0; i < g->p[0]; i++)
		out[i] = silu_d(x[0][i]) * x[1][i];
}

/* swiglu_cat: one input (...,2F), p[0] = output elements, p[1] = F */
static lmk_tensor *op_swiglu_cat(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_swiglu_cat(c, x[0]);
}

static void ref_swiglu_cat(const gcase *g, double **x, double *out)
{
	int64_t F = g->p[1];
	for (int64_t i = 0; i < g->p[0]; i++) {
		int64_t r = i / F, j = i % F;
		out[i] = silu_d(x[0][r * 2 * F + j]) * x[0][r * 2 * F + F + j];
	}
}

static lmk_tensor *op_scale(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_scale(c, x[0], g->f[0]);
}

static void ref_scale(const gcase *g, double **x, double *out)
{
	for (int64_t i = 0; i < g->p[0]; i++)
		out[i] = (double)g->f[0] * x[0][i];
}

static lmk_tensor *op_dropout(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	c->seed = (uint64_t)g->p[1];
	c->counter = (uint64_t)g->p[2];
	return lmk_dropout(c, x[0], g->f[0]);
}

static void ref_dropout(const gcase *g, double **x, double *out)
{
	double p = g->f[0];
	for (int64_t i = 0; i < g->p[0]; i++) {
		float u = lmk_philox_uniform((uint64_t)g->p[1], (uint64_t)g->p[2], (uint64_t)i);
		out[i] = u < g->f[0] ? 0 : x[0][i] / (1 - p);
	}
}

/* Elementwise shapes: 1, odd, not a multiple of 8 or 32, realistic. */
static const struct { int nd; int64_t s[3]; } ew_tab[] = {
	{1, {1}}, {1, {7}}, {2, {3, 11}}, {1, {33}}, {3, {2, 3, 67}}, {2, {4, 256}},
};
#define NEW (sizeof ew_tab / sizeof *ew_tab)

static void ew_case(gcase *g, size_t t, int nin)
{
	for (int k = 0; k < nin; k++)
		in_shape(g, k, ew_tab[t].nd, ew_tab[t].s[0], ew_tab[t].s[1], ew_tab[t].s[2], 0);
	g->p[0] = 1;
	for (int d = 0; d < ew_tab[t].nd; d++)
		g->p[0] *= ew_tab[t].s[d];
}

START_TEST(test_grad_elementwise)
{
	for (size_t t = 0; t < NEW; t++) {
		gcase g = {.name = "silu", .op = op_silu, .ref = ref_silu, .amp = 4};
		ew_case(&g, t, 1);
		check_grad(&g, 700 + t);
		for (int approx = 0; approx < 2; approx++) {
			gcase ge = {.name = approx ? "gelu tanh" : "gelu erf", .op = op_gelu,
				    .ref = ref_gelu, .amp = 4};
			ew_case(&ge, t, 1);
			ge.p[1] = approx;
			check_grad(&ge, 710 + t);
		}
		gcase gs = {.name = "swiglu", .op = op_swiglu, .ref = ref_swiglu, .amp = 3};
		ew_case(&gs, t, 2);
		check_grad(&gs, 720 + t);
		gs.frozen[1] = 1;
		check_grad(&gs, 725 + t);
		/* swiglu_cat: the shape's last dim is F, the input's 2F */
		gcase gt = {.name = "swiglu_cat", .op = op_swiglu_cat, .ref = ref_swiglu_cat,
			    .amp = 3};
		ew_case(&gt, t, 1);
		gt.p[1] = gt.shape[0][gt.ndim[0] - 1];
		gt.shape[0][gt.ndim[0] - 1] *= 2;
		check_grad(&gt, 740 + t);
		gcase gc = {.name = "scale", .op = op_scale, .ref = ref_scale, .f = {-0.7f}};
		ew_case(&gc, t, 1);
		check_grad(&gc, 730 + t);
	}
	report("elementwise");
}
END_TEST

START_TEST(test_grad_dropout)
{
	static const float ps[] = {0.5f, 0.1f, 0.3f, 0.9f, 1.0f, 0.25f};
	for (size_t t = 0; t < NEW; t++) {
		gcase g = {.name = "dropout", .op = op_dropout, .ref = ref_dropout,
			   .f = {ps[t % 6]}};
		ew_case(&g, t, 1);
		g.p[1] = 42 + (int64_t)t;
		g.p[2] = 1000 * (int64_t)t;
		check_grad(&g, 740 + t);
	}
	report("dropout");
}
END_TEST

static lmk_tensor *op_add(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_add(c, x[0], x[1]);
}

static lmk_tensor *op_mul(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_mul(c, x[0], x[1]);
}

static void ref_addmul(const gcase *g, double **x, double *out, int mul)
{
	int64_t n = 1, M = 1;
	for (int d = 0; d < g->ndim[0]; d++)
		n *= g->shape[0][d];
	for (int d = 0; d < g->ndim[1]; d++)
		M *= g->shape[1][d];
	for (int64_t i = 0; i < n; i++)
		out[i] = mul ? x[0][i] * x[1][i % M] : x[0][i] + x[1][i % M];
}

static void ref_add(const gcase *g, double **x, double *out) { ref_addmul(g, x, out, 0); }
static void ref_mul(const gcase *g, double **x, double *out) { ref_addmul(g, x, out, 1); }

START_TEST(test_grad_add_mul)
{
	/* a's shape, b's shape (a suffix of it when broadcast), frozen b */
	static const struct { int nda; int64_t a[3]; int ndb; int64_t b[3]; int fb; } tab[] = {
		{1, {1}, 1, {1}, 0},
		{2, {3, 7}, 2, {3, 7}, 0},
		{3, {2, 5, 33}, 3, {2, 5, 33}, 1},
		{3, {2, 5, 13}, 2, {5, 13}, 0},   /* (B,T,C) + (T,C) */
		{3, {3, 4, 67}, 1, {67}, 0},      /* (B,T,C) + (C) */
		{2, {7, 1}, 1, {1}, 0},
		{3, {2, 16, 256}, 1, {256}, 0},
		{2, {8, 256}, 2, {8, 256}, 0},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++)
		for (int mul = 0; mul < 2; mul++) {
			gcase g = {.name = mul ? "mul" : "add", .op = mul ? op_mul : op_add,
				   .ref = mul ? ref_mul : ref_add};
			in_shape(&g, 0, tab[t].nda, tab[t].a[0], tab[t].a[1], tab[t].a[2], 0);
			in_shape(&g, 1, tab[t].ndb, tab[t].b[0], tab[t].b[1], tab[t].b[2], 0);
			g.frozen[1] = tab[t].fb;
			check_grad(&g, 800 + t);
		}
	report("add, mul");
}
END_TEST

/* ---------------------------------------------------------- cross-entropy */

static lmk_tensor *op_ce(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	int64_t count = -1;
	lmk_tensor *l = lmk_cross_entropy(c, x[0], wrap_ia(c, g), (int)g->p[2], &count);
	ck_assert_int_eq(count, g->p[3]);
	return l;
}

static void ref_ce(const gcase *g, double **x, double *out)
{
	int64_t N = g->p[0], V = g->p[1], cnt = 0;
	double sum = 0;
	for (int64_t n = 0; n < N; n++) {
		if (g->ia[n] == g->p[2])
			continue;
		const double *r = x[0] + n * V;
		double m = -INFINITY, s = 0;
		for (int64_t j = 0; j < V; j++)
			m = r[j] > m ? r[j] : m;
		for (int64_t j = 0; j < V; j++)
			s += exp(r[j] - m);
		sum += m + log(s) - r[g->ia[n]];
		cnt++;
	}
	out[0] = cnt ? sum / cnt : 0;
}

START_TEST(test_grad_cross_entropy)
{
	/* every ign-th row ignored (0: none; 1: all) */
	static const struct { int64_t B, T, V; int ign; float amp; } tab[] = {
		{0, 1, 1, 0, 1}, {0, 1, 2, 0, 1}, {0, 5, 7, 0, 2}, {0, 13, 33, 3, 3},
		{0, 4, 5, 1, 1}, {2, 3, 67, 2, 2}, {0, 16, 1000, 4, 4},
	};
	for (size_t t = 0; t < sizeof tab / sizeof *tab; t++) {
		int64_t N = (tab[t].B ? tab[t].B : 1) * tab[t].T, V = tab[t].V, cnt = 0;
		int32_t *tg = malloc(sizeof(int32_t) * (size_t)N);
		for (int64_t i = 0; i < N; i++) {
			tg[i] = (int32_t)((i * 7 + 3) % V);
			if (tab[t].ign && i % tab[t].ign == 0)
				tg[i] = -100;
			else
				cnt++;
		}
		gcase g = {.name = "cross_entropy", .op = op_ce, .ref = ref_ce, .amp = tab[t].amp,
			   .ia = tg, .p = {N, V, -100, cnt}};
		if (tab[t].B) {
			in_shape(&g, 0, 3, tab[t].B, tab[t].T, V, 0);
			g.ia_ndim = 2;
			g.ia_shape[0] = tab[t].B;
			g.ia_shape[1] = tab[t].T;
		} else {
			in_shape(&g, 0, 2, N, V, 0, 0);
			g.ia_ndim = 1;
			g.ia_shape[0] = N;
		}
		check_grad(&g, 900 + t);
		free(tg);
	}
	report("cross_entropy");
}
END_TEST

/* ------------------------------------------------ forward values by hand */

static lmk_tensor *vec(lmk_ctx *c, int ndim, const int64_t *shape, const float *v, int rg)
{
	lmk_tensor *t = lmk_tensor_new(c, LMK_F32, ndim, shape, rg);
	ck_assert_ptr_nonnull(t);
	memcpy(t->data, v, sizeof(float) * (size_t)t->n);
	return t;
}

#define CLOSE(a, b, tol) ck_assert_msg(fabs((double)(a) - (double)(b)) <= (tol), \
	"%s = %.9g, expected %.9g", #a, (double)(a), (double)(b))

START_TEST(test_fwd_norms)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	/* rms of [3,4] is sqrt(12.5) */
	lmk_tensor *x = vec(&c, 2, (int64_t[]){1, 2}, (float[]){3, 4}, 0);
	lmk_tensor *w = vec(&c, 1, (int64_t[]){2}, (float[]){2, 0.5f}, 0);
	float *y = lmk_rmsnorm(&c, x, NULL, 0)->data;
	CLOSE(y[0], 0.848528137, 1e-6);
	CLOSE(y[1], 1.131370850, 1e-6);
	y = lmk_rmsnorm(&c, x, w, 0)->data;
	CLOSE(y[0], 1.697056275, 1e-6);
	CLOSE(y[1], 0.565685425, 1e-6);
	/* [1,2,3]: mean 2, variance 2/3 */
	lmk_tensor *x3 = vec(&c, 1, (int64_t[]){3}, (float[]){1, 2, 3}, 0);
	lmk_tensor *b3 = vec(&c, 1, (int64_t[]){3}, (float[]){0, 1, 0}, 0);
	y = lmk_layernorm(&c, x3, NULL, b3, 0)->data;
	CLOSE(y[0], -1.224744871, 1e-6);
	CLOSE(y[1], 1, 1e-6);
	CLOSE(y[2], 1.224744871, 1e-6);
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_fwd_linear_embedding)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = vec(&c, 2, (int64_t[]){1, 2}, (float[]){1, 2}, 0);
	lmk_tensor *w = vec(&c, 2, (int64_t[]){3, 2}, (float[]){1, 0, 0, 1, 1, 1}, 0);
	lmk_tensor *b = vec(&c, 1, (int64_t[]){3}, (float[]){0, 0, 1}, 0);
	lmk_tensor *y = lmk_linear(&c, x, w, b);
	ck_assert_int_eq(y->ndim, 2);
	ck_assert_int_eq(y->shape[1], 3);
	float *o = y->data;
	CLOSE(o[0], 1, 0);
	CLOSE(o[1], 2, 0);
	CLOSE(o[2], 4, 0);
	int32_t ids[3] = {2, 0, 2};
	lmk_tensor *it = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){1, 3}, ids);
	lmk_tensor *e = lmk_embedding(&c, it, w);
	ck_assert_int_eq(e->ndim, 3);
	ck_assert_int_eq(e->shape[2], 2);
	o = e->data;
	CLOSE(o[0], 1, 0);
	CLOSE(o[2], 1, 0);
	CLOSE(o[3], 0, 0);
	CLOSE(o[5], 1, 0);
	ids[1] = 3;
	ck_assert_ptr_null(lmk_embedding(&c, it, w));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "embedding: id 3 at position 1"));
	ids[1] = -1;
	ck_assert_ptr_null(lmk_embedding(&c, it, w));
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_fwd_activations)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = vec(&c, 1, (int64_t[]){3}, (float[]){1, -1, 0}, 0);
	float *y = lmk_silu(&c, x)->data;
	CLOSE(y[0], 0.731058579, 1e-6);
	CLOSE(y[1], -0.268941421, 1e-6);
	CLOSE(y[2], 0, 0);
	/* torch.nn.functional.gelu(torch.tensor([1., -1.])) and approximate='tanh' */
	y = lmk_gelu(&c, x, 0)->data;
	CLOSE(y[0], 0.841344746, 1e-6);
	CLOSE(y[1], -0.158655254, 1e-6);
	y = lmk_gelu(&c, x, 1)->data;
	CLOSE(y[0], 0.841191990, 1e-6);
	CLOSE(y[1], -0.158808010, 1e-6);
	lmk_tensor *u = vec(&c, 1, (int64_t[]){3}, (float[]){2, 3, 4}, 0);
	y = lmk_swiglu(&c, x, u)->data;
	CLOSE(y[0], 2 * 0.731058579, 1e-6);
	CLOSE(y[1], 3 * -0.268941421, 1e-6);
	y = lmk_add(&c, x, u)->data;
	CLOSE(y[1], 2, 0);
	y = lmk_mul(&c, x, u)->data;
	CLOSE(y[1], -3, 0);
	y = lmk_scale(&c, u, 0.5f)->data;
	CLOSE(y[2], 2, 0);
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_fwd_cross_entropy)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	float z[3 * 8] = {0};
	z[8 + 5] = 100; /* row 1 sure of 5: loss about 0 */
	lmk_tensor *lg = vec(&c, 2, (int64_t[]){3, 8}, z, 1);
	int32_t tg[3] = {1, 5, -100};
	lmk_tensor *tt = lmk_tensor_wrap(&c, LMK_I32, 1, (int64_t[]){3}, tg);
	int64_t cnt;
	lmk_tensor *l = lmk_cross_entropy(&c, lg, tt, -100, &cnt);
	ck_assert_int_eq(cnt, 2);
	ck_assert_int_eq(l->ndim, 0);
	ck_assert_int_eq(l->n, 1);
	CLOSE(*(float *)l->data, log(8.0) / 2, 1e-6);
	ck_assert_int_eq(lmk_backward(&c, l, 1.0f), 0);
	const float *g = lg->grad;
	/* softmax rows minus one-hot, over 2; the ignored row untouched */
	CLOSE(g[0], 1.0 / 8 / 2, 1e-7);
	CLOSE(g[1], (1.0 / 8 - 1) / 2, 1e-7);
	for (int j = 0; j < 8; j++)
		CLOSE(g[16 + j], 0, 0);
	/* all ignored */
	tg[0] = tg[1] = -100;
	l = lmk_cross_entropy(&c, lg, tt, -100, &cnt);
	ck_assert_int_eq(cnt, 0);
	CLOSE(*(float *)l->data, 0, 0);
	/* a bad target fails, naming it */
	tg[0] = 8;
	ck_assert_ptr_null(lmk_cross_entropy(&c, lg, tt, -100, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "target 8 at row 0"));
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_fwd_rope)
{
	/* Llama 3.1 8B: theta 500000, D 128, factor 8, low 1, high 4, original
	 * 8192; expected values from transformers' _compute_llama3_parameters
	 * in float32 (numpy). Indices 0, 20, 28 keep their frequency, 29 and 31
	 * are interpolated, 40 and 63 divided by 8. */
	static const struct { int i; float v; } want[] = {
		{0, 1.0f}, {20, 0.016560440883040428f}, {28, 0.0032114461064338684f},
		{29, 0.0021665706299245358f}, {31, 0.0008567514596506953f},
		{40, 3.428102354519069e-05f}, {63, 3.068925877869333e-07f},
	};
	lmk_rope_scaling s = {LMK_ROPE_LLAMA3, 8, 1, 4, 8192};
	lmk_rope r;
	ck_assert_int_eq(lmk_rope_init(&r, 128, 500000, &s), 0);
	for (size_t k = 0; k < sizeof want / sizeof *want; k++)
		ck_assert_msg(fabsf(r.inv_freq[want[k].i] - want[k].v) <= 2e-6f * want[k].v,
			      "inv_freq[%d] = %.9g, expected %.9g", want[k].i,
			      (double)r.inv_freq[want[k].i], (double)want[k].v);
	CLOSE(r.attn_factor, 1, 0);
	lmk_rope_free(&r);

	/* D = 4, theta 100: inv_freq = [1, 0.1]; x = e0 at position 1 turns by 1 rad */
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	ck_assert_int_eq(lmk_rope_init(&r, 4, 100, NULL), 0);
	CLOSE(r.inv_freq[1], 0.1, 1e-7);
	lmk_tensor *x = vec(&c, 4, (int64_t[]){1, 2, 1, 4}, (float[]){1, 0, 0, 0, 0, 1, 0, 0}, 0);
	int32_t pos[2] = {1, 0};
	lmk_tensor *p = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){1, 2}, pos);
	float *y = lmk_rope_apply(&c, x, &r, p)->data;
	CLOSE(y[0], cos(1.0), 1e-6);
	CLOSE(y[2], sin(1.0), 1e-6);
	CLOSE(y[1], 0, 0);
	CLOSE(y[3], 0, 0);
	for (int i = 0; i < 4; i++) /* position 0 is the identity */
		CLOSE(y[4 + i], i == 1, 0);
	/* linear scaling divides positions by the factor */
	lmk_rope rl;
	lmk_rope_scaling sl = {LMK_ROPE_LINEAR, 4, 0, 0, 0};
	ck_assert_int_eq(lmk_rope_init(&rl, 4, 100, &sl), 0);
	CLOSE(rl.inv_freq[0], 0.25, 0);
	lmk_rope_free(&rl);
	/* bad tables */
	ck_assert_int_eq(lmk_rope_init(&rl, 5, 100, NULL), LMK_EINVAL);
	sl.factor = 0;
	ck_assert_int_eq(lmk_rope_init(&rl, 4, 100, &sl), LMK_EINVAL);
	lmk_rope_free(&r);
	lmk_ctx_free(&c);
}
END_TEST

static void fill(lmk_tensor *t, lmk_rng *r, float amp)
{
	float *p = t->data;
	for (int64_t i = 0; i < t->n; i++)
		p[i] = nonzero_uniform(r, amp);
}

START_TEST(test_fwd_attention)
{
	lmk_ctx c;
	lmk_rng rng;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, 7);
	int64_t B = 2, T = 6, H = 4, K = 2, D = 5;
	int64_t qs[4] = {B, T, H, D}, ks[4] = {B, T, K, D};
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, qs, 0);
	lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, ks, 0);
	lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, ks, 0);
	fill(q, &rng, 2);
	fill(k, &rng, 2);
	/* probabilities sum to 1: with v all ones every row that sees a key
	 * outputs ones; a padding row outputs zeros */
	for (int64_t i = 0; i < v->n; i++)
		((float *)v->data)[i] = 1;
	int32_t seg[12] = {0, 0, 1, 1, 1, -1, 0, 0, 0, 0, 0, 0};
	lmk_tensor *st = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){B, T}, seg);
	const float *o = lmk_attention(&c, q, k, v, st, 0.5f)->data;
	for (int64_t b = 0; b < B; b++)
		for (int64_t i = 0; i < T; i++)
			for (int64_t j = 0; j < H * D; j++)
				CLOSE(o[(b * T + i) * H * D + j], seg[b * T + i] < 0 ? 0 : 1, 1e-6);

	/* T = 1: the only key is the query's own, so out = v of its group */
	fill(v, &rng, 1);
	lmk_tensor *q1 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 1, H, D}, 0);
	lmk_tensor *k1 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 1, K, D}, 0);
	lmk_tensor *v1 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 1, K, D}, 0);
	fill(q1, &rng, 1);
	fill(k1, &rng, 1);
	fill(v1, &rng, 1);
	o = lmk_attention(&c, q1, k1, v1, NULL, 1)->data;
	for (int64_t h = 0; h < H; h++)
		for (int64_t d = 0; d < D; d++)
			CLOSE(o[h * D + d], ((float *)v1->data)[h / (H / K) * D + d], 1e-6);

	/* the first query of a causal row sees only key 0: out = v_0 */
	o = lmk_attention(&c, q, k, v, NULL, 1)->data;
	for (int64_t h = 0; h < H; h++)
		CLOSE(o[h * D], ((float *)v->data)[h / (H / K) * D], 1e-6);
	lmk_ctx_free(&c);
}
END_TEST

/* GQA (K=2) equals MHA over k and v with each head repeated H/K times, in
 * value and in gradient (the repeated heads' gradients summed). */
START_TEST(test_attention_gqa_equals_mha)
{
	lmk_ctx c;
	lmk_rng rng;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, 11);
	int64_t B = 2, T = 9, H = 6, K = 2, D = 7, R = H / K;
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, T, H, D}, 1);
	lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, T, K, D}, 1);
	lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, T, K, D}, 1);
	lmk_tensor *kr = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, T, H, D}, 1);
	lmk_tensor *vr = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, T, H, D}, 1);
	fill(q, &rng, 1);
	fill(k, &rng, 1);
	fill(v, &rng, 1);
	for (int64_t bt = 0; bt < B * T; bt++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t d = 0; d < D; d++) {
				((float *)kr->data)[(bt * H + h) * D + d] =
					((float *)k->data)[(bt * K + h / R) * D + d];
				((float *)vr->data)[(bt * H + h) * D + d] =
					((float *)v->data)[(bt * K + h / R) * D + d];
			}
	lmk_tensor *a = lmk_attention(&c, q, k, v, NULL, 0.3f);
	ck_assert_int_eq(c.ntape, 1);
	float *dout = malloc(sizeof(float) * (size_t)a->n);
	for (int64_t i = 0; i < a->n; i++)
		dout[i] = nonzero_uniform(&rng, 1);
	ck_assert_int_eq(lmk_backward_from(&c, a, dout), 0);
	float *dq1 = malloc(sizeof(float) * (size_t)q->n);
	memcpy(dq1, q->grad, sizeof(float) * (size_t)q->n);
	memset(q->grad, 0, sizeof(float) * (size_t)q->n);
	c.ntape = 0; /* a second graph over the same leaves */
	lmk_tensor *m = lmk_attention(&c, q, kr, vr, NULL, 0.3f);
	ck_assert_int_eq(lmk_backward_from(&c, m, dout), 0);
	for (int64_t i = 0; i < a->n; i++)
		CLOSE(((float *)a->data)[i], ((float *)m->data)[i], 1e-6);
	for (int64_t i = 0; i < q->n; i++)
		CLOSE(dq1[i], ((float *)q->grad)[i], 1e-6);
	for (int64_t bt = 0; bt < B * T; bt++)
		for (int64_t g = 0; g < K; g++)
			for (int64_t d = 0; d < D; d++) {
				double sk = 0, sv = 0;
				for (int64_t r = 0; r < R; r++) {
					sk += ((float *)kr->grad)[(bt * H + g * R + r) * D + d];
					sv += ((float *)vr->grad)[(bt * H + g * R + r) * D + d];
				}
				CLOSE(((float *)k->grad)[(bt * K + g) * D + d], sk, 1e-5);
				CLOSE(((float *)v->grad)[(bt * K + g) * D + d], sv, 1e-5);
			}
	free(dout);
	free(dq1);
	lmk_ctx_free(&c);
}
END_TEST

/* Two sequences packed in one row with seg give what each gives alone. */
START_TEST(test_attention_packed_equals_separate)
{
	lmk_ctx c;
	lmk_rng rng;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, 13);
	int64_t T1 = 3, T2 = 5, T = T1 + T2, H = 2, K = 1, D = 4;
	for (int causal = 0; causal < 2; causal++) {
		lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, T, H, D}, 0);
		lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, T, K, D}, 0);
		lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, T, K, D}, 0);
		fill(q, &rng, 1);
		fill(k, &rng, 1);
		fill(v, &rng, 1);
		int32_t seg[8] = {4, 4, 4, 9, 9, 9, 9, 9};
		lmk_tensor *st = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){1, T}, seg);
		const float *o = lmk_attention_ex(&c, q, k, v, st, 0.5f, causal)->data;
		for (int part = 0; part < 2; part++) {
			int64_t t0 = part ? T1 : 0, n = part ? T2 : T1;
			lmk_tensor *qs = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){1, n, H, D},
							 (float *)q->data + t0 * H * D);
			lmk_tensor *ks = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){1, n, K, D},
							 (float *)k->data + t0 * K * D);
			lmk_tensor *vs = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){1, n, K, D},
							 (float *)v->data + t0 * K * D);
			const float *os = lmk_attention_ex(&c, qs, ks, vs, NULL, 0.5f, causal)->data;
			for (int64_t i = 0; i < n * H * D; i++)
				CLOSE(o[t0 * H * D + i], os[i], 1e-6);
		}
	}
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_dropout)
{
	lmk_ctx c;
	lmk_rng rng;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, 17);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){100, 100}, 1);
	fill(x, &rng, 1);
	ck_assert_ptr_eq(lmk_dropout(&c, x, 0), x);
	c.seed = 5;
	c.counter = 10;
	lmk_tensor *y = lmk_dropout(&c, x, 0.25f);
	ck_assert_ptr_nonnull(y);
	ck_assert_uint_eq(c.counter, 10 + 10000);
	int64_t kept = 0;
	for (int64_t i = 0; i < x->n; i++) {
		float a = ((float *)x->data)[i], b = ((float *)y->data)[i];
		if (b != 0) {
			kept++;
			CLOSE(b, a / 0.75f, 1e-6);
		}
	}
	ck_assert_msg(kept > 7300 && kept < 7700, "kept %lld of 10000 at p = 0.25",
		      (long long)kept);
	/* the same (seed, counter) gives the same mask */
	c.counter = 10;
	lmk_tensor *y2 = lmk_dropout(&c, x, 0.25f);
	ck_assert_int_eq(memcmp(y->data, y2->data, sizeof(float) * (size_t)x->n), 0);
	/* evaluation: grad disabled, identity */
	c.grad_enabled = 0;
	ck_assert_ptr_eq(lmk_dropout(&c, x, 0.5f), x);
	ck_assert_uint_eq(c.counter, 10 + 10000);
	c.grad_enabled = 1;
	ck_assert_ptr_null(lmk_dropout(&c, x, 1.5f));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_null(lmk_dropout(&c, x, NAN));
	lmk_ctx_free(&c);
}
END_TEST

/* -------------------------------------------- threads and error paths */

/* Runs a small graph of the ops with every parallel path taken (N*C above
 * the one-thread limit of ops_cpu.c, several column blocks) and copies every
 * gradient and the loss into g. */
static void run_graph(int threads, float *g, int64_t *ng)
{
	lmk_ctx c;
	lmk_rng rng;
	omp_set_num_threads(threads);
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, 23);
	int64_t B = 2, T = 64, C = 160, H = 4, K = 2, D = 40, V = 301;
	lmk_tensor *wte = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){V, C}, 1);
	lmk_tensor *wq = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){H * D, C}, 1);
	lmk_tensor *wk = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){K * D, C}, 1);
	lmk_tensor *ln = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){C}, 1);
	lmk_tensor *lb = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){C}, 1);
	lmk_tensor *ws[] = {wte, wq, wk, ln, lb};
	for (int i = 0; i < 5; i++)
		fill(ws[i], &rng, 0.5f);
	int32_t ids[128], tg[128];
	for (int i = 0; i < 128; i++) {
		ids[i] = (i * 37) % 50; /* repeats */
		tg[i] = (i * 11) % (int)V;
	}
	lmk_tensor *it = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){B, T}, ids);
	lmk_tensor *tt = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){B, T}, tg);
	lmk_tensor *x = lmk_embedding(&c, it, wte);
	lmk_tensor *h = lmk_layernorm(&c, lmk_rmsnorm(&c, x, ln, 1e-5f), ln, lb, 1e-5f);
	lmk_tensor *q = lmk_reshape(&c, lmk_linear(&c, h, wq, NULL), 4, (int64_t[]){B, T, H, D});
	lmk_tensor *k = lmk_reshape(&c, lmk_linear(&c, h, wk, NULL), 4, (int64_t[]){B, T, K, D});
	lmk_tensor *a = lmk_attention(&c, q, k, k, NULL, 0.2f);
	a = lmk_reshape(&c, a, 3, (int64_t[]){B, T, H * D});
	lmk_tensor *o = lmk_add(&c, x, lmk_linear(&c, lmk_gelu(&c, a, 1), wq, NULL));
	o = lmk_add(&c, lmk_mul(&c, o, ln), lb);
	lmk_tensor *loss = lmk_cross_entropy(&c, lmk_linear(&c, o, wte, NULL), tt, -1, NULL);
	ck_assert_msg(loss != NULL, "%s", lmk_errmsg());
	ck_assert_int_eq(lmk_backward(&c, loss, 1.0f), 0);
	*ng = 0;
	for (int i = 0; i < 5; i++) {
		memcpy(g + *ng, ws[i]->grad, sizeof(float) * (size_t)ws[i]->n);
		*ng += ws[i]->n;
	}
	g[(*ng)++] = *(float *)loss->data;
	lmk_ctx_free(&c);
}

START_TEST(test_threads_deterministic)
{
	size_t cap = 301 * 160 + 160 * 160 + 80 * 160 + 2 * 160 + 1;
	float *g1 = malloc(sizeof(float) * cap), *g2 = malloc(sizeof(float) * cap);
	int64_t n1, n2;
	run_graph(1, g1, &n1);
	for (int th = 2; th <= 3; th++) {
		run_graph(th, g2, &n2);
		ck_assert_int_eq(n1, n2);
		ck_assert_msg(memcmp(g1, g2, sizeof(float) * (size_t)n1) == 0,
			      "gradients differ between 1 and %d threads", th);
	}
	free(g1);
	free(g2);
}
END_TEST

START_TEST(test_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){4, 7}, 1);
	lmk_tensor *w = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){5, 6}, 1);
	lmk_tensor *ids = lmk_tensor_new(&c, LMK_I32, 1, (int64_t[]){4}, 0);
	memset(x->data, 0, sizeof(float) * 28);
	memset(ids->data, 0, sizeof(int32_t) * 4);

	ck_assert_ptr_null(lmk_linear(&c, x, w, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(),
			 "linear: x (4,7) and w (5,6): expected x (...,IC) and w (OC,IC)");
	/* NULL chains to NULL and keeps the first message */
	ck_assert_ptr_null(lmk_silu(&c, lmk_rmsnorm(&c, lmk_linear(&c, x, w, NULL), NULL, 1e-5f)));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "linear: x (4,7)"));
	ck_assert_ptr_null(lmk_add(&c, NULL, x));
	ck_assert_ptr_null(lmk_attention(&c, x, NULL, x, NULL, 1));
	ck_assert_ptr_null(lmk_cross_entropy(&c, NULL, ids, -1, NULL));
	ck_assert_ptr_null(lmk_dropout(&c, NULL, 0.1f));
	ck_assert_ptr_null(lmk_rope_apply(&c, NULL, NULL, NULL));

	/* linear_add: r must have the product's shape (4,5) */
	lmk_tensor *w57 = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){5, 7}, 1);
	ck_assert_ptr_null(lmk_linear_add(&c, x, w57, NULL, x));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(), "linear_add: x (4,7), w (5,7) and r (4,7): expected r "
				       "(...,5) as x's product");
	ck_assert_ptr_null(lmk_linear_add(&c, x, w, NULL, x));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "linear_add: x (4,7) and w (5,6)"));
	ck_assert_ptr_null(lmk_linear_add(&c, x, w57, NULL, NULL));

	ck_assert_ptr_null(lmk_add(&c, x, w));
	ck_assert_str_eq(lmk_errmsg(), "add: a (4,7) and b (5,6): expected the same shapes or "
				       "b's the trailing dims of a's");
	ck_assert_ptr_null(lmk_swiglu(&c, x, lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){7}, 0)));
	ck_assert_ptr_null(lmk_swiglu_cat(&c, x));
	ck_assert_str_eq(lmk_errmsg(), "swiglu_cat: gu (4,7): expected (...,2F)");
	/* linear_cat: weights that are not one block of memory */
	lmk_tensor *w2[2] = {w57, lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){5, 7}, 1)};
	ck_assert(!lmk_linear_cat_ok(2, w2));
	ck_assert(lmk_linear_cat_ok(1, w2));
	ck_assert_ptr_null(lmk_linear_cat(&c, x, 2, w2));
	ck_assert_str_eq(lmk_errmsg(), "linear_cat: w (5,7) and 1 more: expected 2-d weights of "
				       "the same columns and dtype, one after another in memory");
	ck_assert_ptr_null(lmk_linear_cat(&c, x, 0, w2));
	ck_assert_str_eq(lmk_errmsg(), "linear_cat: 0 weights: expected 1 to 5");
	ck_assert_ptr_nonnull(lmk_linear_cat(&c, x, 1, w2));
	ck_assert_ptr_null(lmk_rmsnorm(&c, x, w, 1e-5f));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "rmsnorm: x (4,7) and w (5,6)"));
	ck_assert_ptr_null(lmk_rmsnorm(&c, x, NULL, -1));
	ck_assert_ptr_null(lmk_silu(&c, ids));
	ck_assert_str_eq(lmk_errmsg(), "silu: x (4): expected F32, found I32");
	ck_assert_ptr_null(lmk_embedding(&c, x, w));
	ck_assert_ptr_null(lmk_cross_entropy(&c, x, x, -1, NULL));
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 2, 3, 4}, 0);
	lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 2, 2, 4}, 0);
	ck_assert_ptr_null(lmk_attention(&c, q, k, k, NULL, 1));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "H a multiple of K"));
	lmk_rope r;
	ck_assert_int_eq(lmk_rope_init(&r, 6, 10000, NULL), 0);
	ck_assert_ptr_null(lmk_rope_apply(&c, q, &r, lmk_tensor_new(&c, LMK_I32, 2,
					  (int64_t[]){1, 2}, 0)));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "rope: x (1,2,3,4)"));
	lmk_rope_free(&r);
	/* an op on a context whose device has no kernel yet */
	c.dev = LMK_DEV_CUDA;
	ck_assert_ptr_null(lmk_scale(&c, x, 2));
	ck_assert_int_eq(lmk_errcode(), LMK_EUNSUP);
	ck_assert_str_eq(lmk_errmsg(), "scale: no cuda kernel yet");
	c.dev = LMK_DEV_CPU;
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ops");
	TCase *tg = tcase_create("gradients");
	tcase_set_timeout(tg, 120);
	tcase_add_test(tg, test_grad_embedding);
	tcase_add_test(tg, test_grad_linear);
	tcase_add_test(tg, test_grad_linear_add);
	tcase_add_test(tg, test_grad_linear_cat);
	tcase_add_test(tg, test_grad_rmsnorm);
	tcase_add_test(tg, test_grad_layernorm);
	tcase_add_test(tg, test_grad_rope);
	tcase_add_test(tg, test_grad_attention);
	tcase_add_test(tg, test_grad_elementwise);
	tcase_add_test(tg, test_grad_dropout);
	tcase_add_test(tg, test_grad_add_mul);
	tcase_add_test(tg, test_grad_cross_entropy);
	suite_add_tcase(s, tg);
	TCase *tf = tcase_create("forward");
	tcase_set_timeout(tf, 60);
	tcase_add_test(tf, test_fwd_norms);
	tcase_add_test(tf, test_fwd_linear_embedding);
	tcase_add_test(tf, test_fwd_activations);
	tcase_add_test(tf, test_fwd_cross_entropy);
	tcase_add_test(tf, test_fwd_rope);
	tcase_add_test(tf, test_fwd_attention);
	tcase_add_test(tf, test_attention_gqa_equals_mha);
	tcase_add_test(tf, test_attention_packed_equals_separate);
	tcase_add_test(tf, test_dropout);
	tcase_add_test(tf, test_threads_deterministic);
	tcase_add_test(tf, test_errors);
	suite_add_tcase(s, tf);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
