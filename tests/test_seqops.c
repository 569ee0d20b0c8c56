/* test_seqops.c: the ops of seqops.h on the CPU.
 * Gradients: for each op and each shape of its table, random inputs, a
 * random projection r of the output and L = sum(out * r); the tape's
 * gradient (lmk_backward_from with dout = r, into gradients preloaded with
 * random values so that a backward that assigns instead of adding fails)
 * against central differences of a float64 reference written here from
 * the definitions (the convolution as PyTorch's padded cross-correlation).
 * Tolerances: forward 1e-5 and gradients 1e-4, relative norms.
 * Then values by hand, extreme inputs of the gates, thread-count
 * independence and error paths. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ops.h"
#include "rng.h"
#include "seqops.h"

#define MAXIN 8
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
	int nin;
	int ndim[MAXIN];
	int64_t shape[MAXIN][LMK_MAXDIM];
	int frozen[MAXIN];
	float amp;
	int64_t p[4];
	float f[2];
};

static double worst_grad, worst_fwd;
static int ncases;

static void report(const char *op)
{
	printf("test_seqops: %-14s %2d shapes, worst gradient error %.1e, forward %.1e\n", op,
	       ncases, worst_grad, worst_fwd);
	fflush(stdout);
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

static int64_t numel(const gcase *g, int k)
{
	int64_t n = 1;
	for (int d = 0; d < g->ndim[k]; d++)
		n *= g->shape[k][d];
	return n;
}

static double ref_loss(const gcase *g, double **xd, double *outd, const double *rd, int64_t n)
{
	g->ref(g, xd, outd);
	double L = 0;
	for (int64_t i = 0; i < n; i++)
		L += outd[i] * rd[i];
	return L;
}

static void check_grad(const gcase *g, uint64_t seed)
{
	lmk_ctx c;
	lmk_rng rng;
	lmk_tensor *x[MAXIN];
	double *xd[MAXIN];
	float amp = g->amp ? g->amp : 1.0f;

	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&rng, seed);
	for (int k = 0; k < g->nin; k++) {
		x[k] = lmk_tensor_new(&c, LMK_F32, g->ndim[k], g->shape[k], !g->frozen[k]);
		ck_assert_ptr_nonnull(x[k]);
		xd[k] = malloc(sizeof(double) * (size_t)x[k]->n);
		float *xf = x[k]->data;
		for (int64_t i = 0; i < x[k]->n; i++)
			xd[k][i] = xf[i] = nonzero_uniform(&rng, amp);
	}
	lmk_tensor *out = g->op(&c, x, g);
	ck_assert_msg(out != NULL, "%s: op failed: %s", g->name, lmk_errmsg());
	int64_t n = out->n;
	double *outd = malloc(sizeof(double) * (size_t)n), *rd = malloc(sizeof(double) * (size_t)n);
	float *rf = malloc(sizeof(float) * (size_t)n);

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

	for (int64_t i = 0; i < n; i++)
		rd[i] = rf[i] = nonzero_uniform(&rng, 1.0f);
	float *prior[MAXIN] = {0};
	for (int k = 0; k < g->nin; k++) {
		if (g->frozen[k])
			continue;
		prior[k] = malloc(sizeof(float) * (size_t)x[k]->n);
		for (int64_t i = 0; i < x[k]->n; i++)
			((float *)x[k]->grad)[i] = prior[k][i] = nonzero_uniform(&rng, 0.01f);
	}
	if (out->requires_grad)
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
			ck_assert_msg(err < GRAD_TOL, "%s: input %d: gradient relative error %g",
				      g->name, k, err);
		}
	}
	ncases++;
	for (int k = 0; k < g->nin; k++)
		free(xd[k]);
	free(outd);
	free(rd);
	free(rf);
	lmk_ctx_free(&c);
}

static void in_shape(gcase *g, int k, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
	int64_t s[4] = {a, b, c, d};
	g->ndim[k] = ndim;
	memcpy(g->shape[k], s, sizeof s);
	if (k + 1 > g->nin)
		g->nin = k + 1;
}

/* ---------------------------------------------------------------- conv1d */

static lmk_tensor *op_conv(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_conv1d_causal(c, x[0], x[1], g->nin > 2 ? x[2] : NULL, (int)g->p[0]);
}

/* PyTorch's Conv1d(groups=C, padding=W-1) over x (B,C,T), truncated to T:
 * y[t] = b + sum_k w[k] xp[t+k], xp = x with W-1 zeros in front. */
static void ref_conv(const gcase *g, double **x, double *out)
{
	int64_t B = g->shape[0][0], T = g->shape[0][1], C = g->shape[0][2], W = g->shape[1][1];
	for (int64_t b = 0; b < B; b++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t t = 0; t < T; t++) {
				double a = g->nin > 2 ? x[2][c] : 0;
				for (int64_t k = 0; k < W; k++) {
					int64_t p = t + k; /* index into the padded input */
					if (p >= W - 1)
						a += x[1][c * W + k] * x[0][(b * T + p - (W - 1)) * C + c];
				}
				out[(b * T + t) * C + c] = g->p[0] ? a / (1 + exp(-a)) : a;
			}
}

START_TEST(test_grad_conv)
{
	/* (B, T, C, W) */
	static const int64_t sh[][4] = {{1, 1, 1, 1}, {1, 5, 3, 4},  {2, 7, 5, 4}, {3, 9, 33, 3},
					{2, 3, 7, 5}, {1, 17, 7, 2}, {2, 40, 67, 4}};
	for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++)
		for (int v = 0; v < 4; v++) {
			gcase g = {.name = "conv1d_causal", .op = op_conv, .ref = ref_conv, .amp = 1.5f};
			g.p[0] = v & 1;
			in_shape(&g, 0, 3, sh[i][0], sh[i][1], sh[i][2], 0);
			in_shape(&g, 1, 2, sh[i][2], sh[i][3], 0, 0);
			if (v & 2)
				in_shape(&g, 2, 1, sh[i][2], 0, 0, 0);
			g.frozen[0] = i == 3 && v == 3; /* no dx: dw alone */
			check_grad(&g, 100 + i * 4 + (size_t)v);
		}
	report("conv1d_causal");
}
END_TEST

/* A case by hand: W = 3, one channel, taps (1, 2, 3): y[t] = x[t-2] + 2x[t-1] + 3x[t] + 0.5. */
START_TEST(test_conv_by_hand)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	float xs[4] = {1, 10, 100, 1000}, ws[3] = {1, 2, 3}, bs[1] = {0.5f};
	lmk_tensor *x = lmk_tensor_wrap(&c, LMK_F32, 3, (int64_t[]){1, 4, 1}, xs);
	lmk_tensor *w = lmk_tensor_wrap(&c, LMK_F32, 2, (int64_t[]){1, 3}, ws);
	lmk_tensor *b = lmk_tensor_wrap(&c, LMK_F32, 1, (int64_t[]){1}, bs);
	lmk_tensor *y = lmk_conv1d_causal(&c, x, w, b, 0);
	ck_assert_ptr_nonnull(y);
	const float want[4] = {3.5f, 32.5f, 321.5f, 3210.5f};
	for (int t = 0; t < 4; t++)
		ck_assert_float_eq(((float *)y->data)[t], want[t]);
	lmk_ctx_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- l2norm */

static lmk_tensor *op_l2norm(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_l2norm(c, x[0], g->f[0]);
}

static void ref_l2norm(const gcase *g, double **x, double *out)
{
	int64_t D = g->shape[0][g->ndim[0] - 1], N = numel(g, 0) / D;
	for (int64_t r = 0; r < N; r++) {
		double ss = 0;
		for (int64_t d = 0; d < D; d++)
			ss += x[0][r * D + d] * x[0][r * D + d];
		for (int64_t d = 0; d < D; d++)
			out[r * D + d] = x[0][r * D + d] / sqrt(ss + g->f[0]);
	}
}

START_TEST(test_grad_l2norm)
{
	static const int64_t sh[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 3, 33}, {1, 5, 64}, {3, 2, 129}};
	for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++)
		for (int v = 0; v < 2; v++) {
			gcase g = {.name = "l2norm", .op = op_l2norm, .ref = ref_l2norm};
			/* with D = 1 the gradient eps/(x²+eps)^1.5 is pure
			 * cancellation at a small eps: a test of float32, not of
			 * the kernel (as test_ops does for rmsnorm) */
			g.f[0] = v || sh[i][2] == 1 ? 0.5f : 1e-6f;
			if (i % 2)
				in_shape(&g, 0, 3, sh[i][0], sh[i][1], sh[i][2], 0);
			else
				in_shape(&g, 0, 2, sh[i][0] * sh[i][1], sh[i][2], 0, 0);
			check_grad(&g, 200 + i * 2 + (size_t)v);
		}
	report("l2norm");
}
END_TEST

/* ---------------------------------------------------------- elementwise */

static lmk_tensor *op_unary(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	switch (g->p[0]) {
	case LMK_UNARY_SIGMOID:
		return lmk_sigmoid(c, x[0]);
	case LMK_UNARY_SOFTPLUS:
		return lmk_softplus(c, x[0]);
	case LMK_UNARY_LOGSIGMOID:
		return lmk_logsigmoid(c, x[0]);
	case LMK_UNARY_EXP:
		return lmk_exp(c, x[0]);
	default:
		return lmk_affine(c, x[0], g->f[0], g->f[1]);
	}
}

/* The textbook forms: fine in float64 over the tested range. */
static double unary_ref(int kind, double x, double a, double b)
{
	switch (kind) {
	case LMK_UNARY_SIGMOID:
		return 1 / (1 + exp(-x));
	case LMK_UNARY_SOFTPLUS:
		return x > 20 ? x : log(1 + exp(x));
	case LMK_UNARY_LOGSIGMOID:
		return -log(1 + exp(-x));
	case LMK_UNARY_EXP:
		return exp(x);
	default:
		return a * x + b;
	}
}

static void ref_unary(const gcase *g, double **x, double *out)
{
	for (int64_t i = 0; i < numel(g, 0); i++)
		out[i] = unary_ref((int)g->p[0], x[0][i], g->f[0], g->f[1]);
}

START_TEST(test_grad_unary)
{
	static const char *names[] = {"sigmoid", "softplus", "logsigmoid", "exp", "affine"};
	static const int64_t sh[][2] = {{1, 1}, {3, 7}, {33, 67}};
	for (int kind = 0; kind < 5; kind++) {
		for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
			gcase g = {.name = names[kind], .op = op_unary, .ref = ref_unary, .amp = 6.0f};
			g.p[0] = kind;
			g.f[0] = -1.5f;
			g.f[1] = 0.25f;
			in_shape(&g, 0, 2, sh[i][0], sh[i][1], 0, 0);
			check_grad(&g, 300 + (uint64_t)kind * 10 + i);
		}
		report(names[kind]);
	}
}
END_TEST

/* Far from 0, where the naive forms overflow or lose everything. */
START_TEST(test_unary_extremes)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	float xs[6] = {-200.0f, -30.0f, -1e-3f, 19.5f, 25.0f, 200.0f};
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){6}, 1);
	memcpy(x->data, xs, sizeof xs);
	lmk_tensor *ys[4] = {lmk_sigmoid(&c, x), lmk_softplus(&c, x), lmk_logsigmoid(&c, x),
			     lmk_affine(&c, lmk_sigmoid(&c, x), 2, 0)};
	for (int k = 0; k < 4; k++) {
		ck_assert_ptr_nonnull(ys[k]);
		for (int i = 0; i < 6; i++)
			ck_assert_msg(isfinite(((float *)ys[k]->data)[i]), "op %d at %g: %g", k,
				      (double)xs[i], (double)((float *)ys[k]->data)[i]);
	}
	const float *sg = ys[0]->data, *sp = ys[1]->data, *ls = ys[2]->data, *b2 = ys[3]->data;
	ck_assert(sg[0] >= 0 && sg[0] < 1e-30f);
	ck_assert_float_eq(sg[5], 1.0f);
	ck_assert_float_eq(sp[5], 200.0f);  /* above the threshold: x itself */
	ck_assert_float_eq(sp[4], 25.0f);
	ck_assert_double_eq_tol(sp[3], log1p(exp(19.5)), 1e-5);
	ck_assert_double_eq_tol(sp[1], exp(-30.0), 1e-18);
	ck_assert_float_eq(ls[0], -200.0f); /* logsigmoid(x) -> x for x -> -inf */
	ck_assert_double_eq_tol(ls[1], -30.0 - log1p(exp(-30.0)), 1e-5);
	ck_assert(ls[5] <= 0 && ls[5] > -1e-30f);
	ck_assert_double_eq_tol(b2[2], 2.0 / (1 + exp(1e-3)), 1e-7);
	/* the gradients stay finite, and d softplus + d logsigmoid =
	 * sigmoid(x) + sigmoid(-x) = 1 */
	lmk_tensor *sum = lmk_add(&c, ys[1], ys[2]);
	float r[6] = {1, 1, 1, 1, 1, 1};
	ck_assert_int_eq(lmk_backward_from(&c, sum, r), 0);
	for (int i = 0; i < 6; i++)
		ck_assert_double_eq_tol(((float *)x->grad)[i], 1.0, 1e-6);
	lmk_ctx_free(&c);
}
END_TEST

/* ------------------------------------------------------------ mul_rows */

static lmk_tensor *op_mul_rows(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_mul_rows(c, x[0], x[1]);
}

static void ref_mul_rows(const gcase *g, double **x, double *out)
{
	int64_t D = g->shape[0][g->ndim[0] - 1], N = numel(g, 0) / D, M = numel(g, 1);
	for (int64_t r = 0; r < N; r++)
		for (int64_t d = 0; d < D; d++)
			out[r * D + d] = x[0][r * D + d] * x[1][r % M];
}

START_TEST(test_grad_mul_rows)
{
	gcase g = {.name = "mul_rows", .op = op_mul_rows, .ref = ref_mul_rows};
	in_shape(&g, 0, 2, 1, 1, 0, 0);
	in_shape(&g, 1, 1, 1, 0, 0, 0);
	check_grad(&g, 600);
	in_shape(&g, 0, 2, 3, 7, 0, 0);
	in_shape(&g, 1, 1, 3, 0, 0, 0);
	check_grad(&g, 601);
	/* Mamba-2's x * dt and D * x, and a middle broadcast */
	int64_t sd[3][3] = {{2, 5, 3}, {3, 0, 0}, {5, 3, 0}};
	int nd[3] = {3, 1, 2};
	for (int v = 0; v < 3; v++) {
		in_shape(&g, 0, 4, 2, 5, 3, 4);
		in_shape(&g, 1, nd[v], sd[v][0], sd[v][1], sd[v][2], 0);
		g.frozen[0] = v == 2;
		check_grad(&g, 602 + (uint64_t)v);
	}
	g.frozen[0] = 0;
	in_shape(&g, 0, 4, 4, 33, 8, 16);
	in_shape(&g, 1, 1, 8, 0, 0, 0);
	check_grad(&g, 605);
	report("mul_rows");
}
END_TEST

/* ------------------------------------------------------- slice, concat */

static lmk_tensor *op_slice(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	return lmk_slice(c, x[0], g->p[0], g->p[1]);
}

static void ref_slice(const gcase *g, double **x, double *out)
{
	int64_t D = g->shape[0][g->ndim[0] - 1], N = numel(g, 0) / D, s = g->p[0], L = g->p[1];
	for (int64_t r = 0; r < N; r++)
		for (int64_t j = 0; j < L; j++)
			out[r * L + j] = x[0][r * D + s + j];
}

START_TEST(test_grad_slice)
{
	/* (N, D, start, len) */
	static const int64_t sh[][4] = {{1, 1, 0, 1}, {3, 7, 2, 4}, {6, 5, 0, 5}, {4, 33, 32, 1},
					{5, 67, 10, 33}};
	for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
		gcase g = {.name = "slice", .op = op_slice, .ref = ref_slice};
		g.p[0] = sh[i][2];
		g.p[1] = sh[i][3];
		if (i == 2)
			in_shape(&g, 0, 3, 2, 3, sh[i][1], 0);
		else
			in_shape(&g, 0, 2, sh[i][0], sh[i][1], 0, 0);
		check_grad(&g, 400 + i);
	}
	report("slice");
}
END_TEST

static lmk_tensor *op_concat(lmk_ctx *c, lmk_tensor **x, const gcase *g)
{
	lmk_tensor *xs[MAXIN];
	memcpy(xs, x, sizeof xs);
	lmk_tensor *y = lmk_concat(c, g->nin, xs);
	memset(xs, 0, sizeof xs); /* the op must not keep the caller's array */
	return y;
}

static void ref_concat(const gcase *g, double **x, double *out)
{
	int nd = g->ndim[0];
	int64_t N = numel(g, 0) / g->shape[0][nd - 1], Dout = 0;
	for (int k = 0; k < g->nin; k++)
		Dout += g->shape[k][nd - 1];
	int64_t off = 0;
	for (int k = 0; k < g->nin; k++) {
		int64_t Dk = g->shape[k][nd - 1];
		for (int64_t r = 0; r < N; r++)
			for (int64_t j = 0; j < Dk; j++)
				out[r * Dout + off + j] = x[k][r * Dk + j];
		off += Dk;
	}
}

START_TEST(test_grad_concat)
{
	static const int64_t widths[][MAXIN + 1] = {
		{1, 1}, {3, 1, 4, 2}, {2, 5, 5}, {8, 1, 2, 3, 4, 5, 6, 7, 33}, {7, 3, 1, 1, 1, 1, 1, 1}};
	for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
		gcase g = {.name = "concat", .op = op_concat, .ref = ref_concat};
		for (int k = 0; k < widths[i][0]; k++) {
			if (i % 2)
				in_shape(&g, k, 3, 2, 3, widths[i][k + 1], 0);
			else
				in_shape(&g, k, 2, 5, widths[i][k + 1], 0, 0);
			g.frozen[k] = i == 3 && k % 3 == 1;
		}
		check_grad(&g, 500 + i);
	}
	report("concat");
}
END_TEST

/* ------------------------------------------------------------ threads */

/* conv (dx, dw, db) and l2norm gradients at 1, 2 and 3 threads: the same bits. */
static void run_graph(int threads, float *out, int64_t *n)
{
	omp_set_num_threads(threads);
	lmk_ctx c;
	lmk_rng r;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_rng_init(&r, 7);
	int64_t B = 3, T = 97, C = 131, W = 4;
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){B, T, C}, 1);
	lmk_tensor *w = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){C, W}, 1);
	lmk_tensor *b = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){C}, 1);
	lmk_tensor *ts[3] = {x, w, b};
	for (int k = 0; k < 3; k++)
		for (int64_t i = 0; i < ts[k]->n; i++)
			((float *)ts[k]->data)[i] = nonzero_uniform(&r, 1.0f);
	lmk_tensor *y = lmk_l2norm(&c, lmk_conv1d_causal(&c, x, w, b, 1), 1e-6f);
	ck_assert_ptr_nonnull(y);
	float *d = malloc(sizeof(float) * (size_t)y->n);
	for (int64_t i = 0; i < y->n; i++)
		d[i] = nonzero_uniform(&r, 1.0f);
	ck_assert_int_eq(lmk_backward_from(&c, y, d), 0);
	*n = 0;
	for (int k = 0; k < 3; k++) {
		memcpy(out + *n, ts[k]->grad, sizeof(float) * (size_t)ts[k]->n);
		*n += ts[k]->n;
	}
	memcpy(out + *n, y->data, sizeof(float) * (size_t)y->n);
	*n += y->n;
	free(d);
	lmk_ctx_free(&c);
}

START_TEST(test_threads_deterministic)
{
	size_t cap = 2 * 3 * 97 * 131 + 131 * 4 + 131;
	float *g1 = malloc(sizeof(float) * cap), *g2 = malloc(sizeof(float) * cap);
	int64_t n1, n2;
	run_graph(1, g1, &n1);
	for (int th = 2; th <= 3; th++) {
		run_graph(th, g2, &n2);
		ck_assert_int_eq(n1, n2);
		ck_assert_msg(memcmp(g1, g2, sizeof(float) * (size_t)n1) == 0,
			      "results differ between 1 and %d threads", th);
	}
	free(g1);
	free(g2);
}
END_TEST

/* -------------------------------------------------------------- errors */

START_TEST(test_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){2, 5, 7}, 1);
	lmk_tensor *w = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){6, 4}, 1);
	lmk_tensor *ids = lmk_tensor_new(&c, LMK_I32, 1, (int64_t[]){4}, 0);

	ck_assert_ptr_null(lmk_conv1d_causal(&c, x, w, NULL, 1));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(), "conv1d_causal: x (2,5,7), w (6,4), b none: expected x "
				       "(B,T,C), w (C,W) with 1 <= W <= 64, b (C) or none");
	ck_assert_ptr_null(lmk_conv1d_causal(&c, x, lmk_tensor_new(&c, LMK_F32, 2,
							(int64_t[]){7, 65}, 0), NULL, 0));
	ck_assert_ptr_null(lmk_conv1d_causal(&c, x, NULL, NULL, 0));
	ck_assert_ptr_null(lmk_slice(&c, x, 3, 5));
	ck_assert_str_eq(lmk_errmsg(), "slice: x (2,5,7), start 3, len 5: expected 0 <= start, 1 "
				       "<= len, start + len <= the last dim");
	ck_assert_ptr_null(lmk_slice(&c, x, -1, 2));
	ck_assert_ptr_null(lmk_slice(&c, x, 0, 0));
	ck_assert_ptr_null(lmk_concat(&c, 2, (lmk_tensor *[]){x, w}));
	ck_assert_str_eq(lmk_errmsg(), "concat: xs[0] (2,5,7) and xs[1] (6,4): expected the same "
				       "leading dims");
	ck_assert_ptr_null(lmk_concat(&c, 0, (lmk_tensor *[]){x}));
	ck_assert_ptr_null(lmk_concat(&c, 2, (lmk_tensor *[]){x, ids}));
	ck_assert_str_eq(lmk_errmsg(), "concat: xs[1] (4): expected F32, found I32");
	ck_assert_ptr_null(lmk_mul_rows(&c, x, lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){7}, 0)));
	ck_assert_str_eq(lmk_errmsg(), "mul_rows: x (2,5,7) and s (7): expected s's shape the "
				       "trailing dims of x's without its last");
	ck_assert_ptr_nonnull(lmk_mul_rows(&c, x, lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){5}, 0)));
	ck_assert_ptr_null(lmk_sigmoid(&c, ids));
	ck_assert_str_eq(lmk_errmsg(), "sigmoid: x (4): expected F32, found I32");
	ck_assert_ptr_null(lmk_l2norm(&c, x, -1));
	ck_assert_ptr_null(lmk_affine(&c, x, NAN, 0));
	ck_assert_int_eq(lmk_errcode(), LMK_ENUM);
	/* NULL chains to NULL and keeps the first message */
	ck_assert_ptr_null(lmk_exp(&c, lmk_softplus(&c, lmk_slice(&c, x, 9, 1))));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "slice: x (2,5,7), start 9"));
	ck_assert_ptr_null(lmk_logsigmoid(&c, NULL));
	ck_assert_ptr_null(lmk_concat(&c, 2, (lmk_tensor *[]){x, NULL}));
	/* a context whose device has no kernel */
	c.dev = LMK_DEV_CUDA;
	ck_assert_ptr_null(lmk_l2norm(&c, x, 1e-6f));
	ck_assert_int_eq(lmk_errcode(), LMK_EUNSUP);
	c.dev = LMK_DEV_CPU;
	/* grad disabled: no node */
	c.grad_enabled = 0;
	int nt = c.ntape;
	ck_assert_ptr_nonnull(lmk_concat(&c, 2, (lmk_tensor *[]){x, x}));
	ck_assert_int_eq(c.ntape, nt);
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("seqops");
	TCase *tg = tcase_create("gradients");
	tcase_set_timeout(tg, 60);
	tcase_add_test(tg, test_grad_conv);
	tcase_add_test(tg, test_grad_l2norm);
	tcase_add_test(tg, test_grad_unary);
	tcase_add_test(tg, test_grad_mul_rows);
	tcase_add_test(tg, test_grad_slice);
	tcase_add_test(tg, test_grad_concat);
	suite_add_tcase(s, tg);
	TCase *tf = tcase_create("forward");
	tcase_set_timeout(tf, 60);
	tcase_add_test(tf, test_conv_by_hand);
	tcase_add_test(tf, test_unary_extremes);
	tcase_add_test(tf, test_threads_deterministic);
	tcase_add_test(tf, test_errors);
	suite_add_tcase(s, tf);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
