/* test_ssd.c: the scalar-decay linear mixer op (lib/ssd.h) on the CPU.
 * A float64 reference written here from the definition (the double sum over
 * s <= t of exp(sum of loga) lam_t[level] q.k v) checks the forward of the
 * three forms (recurrent, materialised, chunked) at T = 1, 2, 7, 63, 64, 65,
 * 130, 257 and chunks 1, 3, 16, 17, 64, with and without loga and lam, G < H.
 * Gradients of every input, for every form, against central differences of
 * that reference (L = sum(out * r), priors in the gradients so that a
 * backward that assigns fails). Then decoding token by token against the
 * op, thread-count independence and error paths. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "rng.h"
#include "ssd.h"
#include "tensor.h"

#define FWD_TOL 2e-5
#define GRAD_TOL 2e-4
#define MAXCHECK 40

typedef struct shp {
	int64_t B, T, H, G, Dk, Dv, NL;
	int decay, loglin;
} shp;

/* Host inputs in double and float. */
typedef struct inputs {
	shp s;
	double *x[5];        /* q, k, v, loga, lam (NULL when absent) */
	int64_t n[5];
} inputs;

static float uni(lmk_rng *r, float lo, float hi) { return lo + (hi - lo) * lmk_rng_uniform(r); }

static void inputs_make(inputs *in, shp s, uint64_t seed)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	memset(in, 0, sizeof *in);
	in->s = s;
	in->n[0] = in->n[1] = s.B * s.T * s.G * s.Dk;
	in->n[2] = s.B * s.T * s.H * s.Dv;
	in->n[3] = s.decay ? s.B * s.T * s.H : 0;
	in->n[4] = s.loglin ? s.B * s.T * s.H * s.NL : 0;
	for (int i = 0; i < 5; i++) {
		if (!in->n[i])
			continue;
		in->x[i] = malloc(sizeof(double) * (size_t)in->n[i]);
		for (int64_t j = 0; j < in->n[i]; j++) {
			float f = i < 3 ? uni(&r, -1, 1) : i == 3 ? uni(&r, -0.6f, -0.01f)
								  : uni(&r, 0.2f, 1.2f);
			in->x[i][j] = f; /* exactly representable in float */
		}
	}
}

static void inputs_free(inputs *in)
{
	for (int i = 0; i < 5; i++)
		free(in->x[i]);
}

/* The definition, in double. */
static void ref_forward(const shp *s, double *const *x, double scale, double *out)
{
	const double *q = x[0], *k = x[1], *v = x[2], *la = x[3], *lam = x[4];
	int64_t T = s->T, H = s->H, G = s->G, Dk = s->Dk, Dv = s->Dv, NL = s->NL;
	double *A = malloc(sizeof(double) * (size_t)(T ? T : 1));
	for (int64_t b = 0; b < s->B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t g = h / (H / G);
			double a = 0;
			for (int64_t t = 0; t < T; t++) {
				a += la ? la[(b * T + t) * H + h] : 0;
				A[t] = a;
			}
			for (int64_t t = 0; t < T; t++) {
				double *o = out + ((b * T + t) * H + h) * Dv;
				for (int64_t y = 0; y < Dv; y++)
					o[y] = 0;
				const double *qt = q + ((b * T + t) * G + g) * Dk;
				for (int64_t u = 0; u <= t; u++) {
					const double *ku = k + ((b * T + u) * G + g) * Dk;
					double p = 0;
					for (int64_t x2 = 0; x2 < Dk; x2++)
						p += qt[x2] * ku[x2];
					double w = scale * exp(A[t] - A[u]);
					if (lam)
						w *= lam[((b * T + t) * H + h) * NL + lmk_fenwick_level(t, u)];
					const double *vu = v + ((b * T + u) * H + h) * Dv;
					for (int64_t y = 0; y < Dv; y++)
						o[y] += w * p * vu[y];
				}
			}
		}
	free(A);
}

/* Float tensors of the inputs in c; req: which require grad. */
static void make_tensors(lmk_ctx *c, const inputs *in, const int *req, lmk_tensor **t)
{
	const shp *s = &in->s;
	int64_t sh[5][4] = {{s->B, s->T, s->G, s->Dk}, {s->B, s->T, s->G, s->Dk},
			    {s->B, s->T, s->H, s->Dv}, {s->B, s->T, s->H, 0},
			    {s->B, s->T, s->H, s->NL}};
	int nd[5] = {4, 4, 4, 3, 4};
	for (int i = 0; i < 5; i++) {
		t[i] = NULL;
		if (!in->x[i])
			continue;
		t[i] = lmk_tensor_new(c, LMK_F32, nd[i], sh[i], req ? req[i] : 0);
		ck_assert_ptr_nonnull(t[i]);
		float *f = t[i]->data;
		for (int64_t j = 0; j < in->n[i]; j++)
			f[j] = (float)in->x[i][j];
	}
}

static double rel_err_fd(const float *a, const double *r, int64_t n)
{
	double e2 = 0, r2 = 0;
	for (int64_t i = 0; i < n; i++) {
		ck_assert_msg(isfinite(a[i]), "element %lld is %g", (long long)i, (double)a[i]);
		e2 += (a[i] - r[i]) * (a[i] - r[i]);
		r2 += r[i] * r[i];
	}
	return r2 > 1e-24 ? sqrt(e2 / r2) : sqrt(e2);
}

static const char *algo_name(int a)
{
	return (const char *[]){"auto", "recurrent", "materialized", "chunked"}[a];
}

/* ---------------------------------------------------------------- forward */

START_TEST(test_forward_forms)
{
	static const int64_t Ts[] = {1, 2, 7, 63, 64, 65, 130, 257};
	static const int chunks[] = {1, 3, 16, 17, 64};
	double worst = 0;
	int ncase = 0;
	for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++)
		for (int combo = 0; combo < 4; combo++) {
			int64_t T = Ts[ti];
			shp s = {2, T, 4, 2, 5, 3, lmk_fenwick_levels(T) + (combo == 3), combo & 1,
				 combo >= 2};
			if (T > 100)
				s.B = 1;
			inputs in;
			inputs_make(&in, s, 1000 + ti * 10 + (uint64_t)combo);
			int64_t no = s.B * T * s.H * s.Dv;
			double *ref = malloc(sizeof(double) * (size_t)no);
			ref_forward(&s, in.x, 0.7, ref);
			lmk_ctx c;
			ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
			c.grad_enabled = 0;
			lmk_tensor *t[5];
			make_tensors(&c, &in, NULL, t);
			for (int algo = LMK_SSD_RECURRENT; algo <= LMK_SSD_CHUNKED; algo++)
				for (size_t ci = 0; ci < sizeof chunks / sizeof *chunks; ci++) {
					if (algo != LMK_SSD_CHUNKED && ci)
						continue;
					lmk_ssd_opts o = {chunks[ci], algo, 0.7f};
					lmk_tensor *out = lmk_ssd(&c, t[0], t[1], t[2], t[3], t[4], &o);
					ck_assert_msg(out != NULL, "%s", lmk_errmsg());
					double e = rel_err_fd(out->data, ref, no);
					if (e > worst)
						worst = e;
					ncase++;
					ck_assert_msg(e < FWD_TOL,
						      "T %lld decay %d loglin %d %s chunk %d: forward "
						      "error %g",
						      (long long)T, s.decay, s.loglin, algo_name(algo),
						      chunks[ci], e);
				}
			lmk_ctx_free(&c);
			free(ref);
			inputs_free(&in);
		}
	printf("test_ssd: forward of %d (shape, form, chunk) cases, worst error %.1e\n", ncase,
	       worst);
}
END_TEST

/* -------------------------------------------------------------- gradients */

static double ref_loss(const shp *s, double *const *x, double scale, const double *r,
		       double *out, int64_t no)
{
	ref_forward(s, x, scale, out);
	double L = 0;
	for (int64_t i = 0; i < no; i++)
		L += out[i] * r[i];
	return L;
}

static double worst_grad;

static void check_grad(shp s, int algo, int chunk, const int *req, uint64_t seed)
{
	const float scale = 0.8f;
	inputs in;
	inputs_make(&in, s, seed);
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *t[5];
	make_tensors(&c, &in, req, t);
	lmk_ssd_opts o = {chunk, algo, scale};
	lmk_tensor *out = lmk_ssd(&c, t[0], t[1], t[2], t[3], t[4], &o);
	ck_assert_msg(out != NULL, "%s", lmk_errmsg());
	int64_t no = out->n;
	lmk_rng r;
	lmk_rng_init(&r, seed * 7 + 1);
	double *rd = malloc(sizeof(double) * (size_t)no), *od = malloc(sizeof(double) * (size_t)no);
	float *rf = malloc(sizeof(float) * (size_t)no);
	for (int64_t i = 0; i < no; i++)
		rd[i] = rf[i] = uni(&r, -1, 1);
	float *prior[5] = {0};
	for (int i = 0; i < 5; i++) {
		if (!t[i] || !t[i]->requires_grad)
			continue;
		prior[i] = malloc(sizeof(float) * (size_t)t[i]->n);
		for (int64_t j = 0; j < t[i]->n; j++)
			((float *)t[i]->grad)[j] = prior[i][j] = uni(&r, -0.01f, 0.01f);
	}
	ck_assert_msg(lmk_backward_from(&c, out, rf) == 0, "%s", lmk_errmsg());
	static const char *names[5] = {"q", "k", "v", "loga", "lam"};
	for (int i = 0; i < 5; i++) {
		if (!t[i])
			continue;
		if (!t[i]->requires_grad) {
			ck_assert_ptr_null(t[i]->grad);
			continue;
		}
		float *ga = t[i]->grad;
		int64_t m = t[i]->n, nc = m <= MAXCHECK ? m : MAXCHECK;
		double d2 = 0, n2 = 0;
		for (int64_t u = 0; u < nc; u++) {
			int64_t j = m <= MAXCHECK ? u : (int64_t)lmk_rng_below(&r, (uint64_t)m);
			double v = in.x[i][j], h = 1e-5;
			in.x[i][j] = v + h;
			double lp = ref_loss(&s, in.x, scale, rd, od, no);
			in.x[i][j] = v - h;
			double lm = ref_loss(&s, in.x, scale, rd, od, no);
			in.x[i][j] = v;
			double gn = (lp - lm) / (2 * h), gaj = ga[j] - prior[i][j];
			d2 += (gaj - gn) * (gaj - gn);
			n2 += gn * gn;
		}
		/* loga at t = 0 never matters: a zero gradient there is right */
		double e = n2 > 1e-16 ? sqrt(d2 / n2) : sqrt(d2);
		if (e > worst_grad)
			worst_grad = e;
		ck_assert_msg(e < GRAD_TOL,
			      "B %lld T %lld H %lld G %lld Dk %lld Dv %lld decay %d loglin %d %s "
			      "chunk %d: gradient of %s: error %g",
			      (long long)s.B, (long long)s.T, (long long)s.H, (long long)s.G,
			      (long long)s.Dk, (long long)s.Dv, s.decay, s.loglin, algo_name(algo),
			      chunk, names[i], e);
		free(prior[i]);
	}
	lmk_ctx_free(&c);
	free(rd);
	free(od);
	free(rf);
	inputs_free(&in);
}

START_TEST(test_grad)
{
	static const shp tab[] = {
		{1, 1, 1, 1, 1, 1, 1, 1, 1},  {1, 2, 2, 1, 3, 2, 2, 1, 1},
		{2, 7, 3, 1, 4, 5, 4, 1, 1},  {1, 13, 2, 2, 3, 4, 5, 1, 1},
		{1, 21, 4, 2, 5, 3, 6, 1, 1}, {2, 18, 2, 1, 4, 4, 6, 0, 1},
		{1, 19, 2, 2, 3, 3, 0, 1, 0}, {2, 11, 2, 1, 5, 2, 0, 0, 0},
		{1, 130, 2, 1, 3, 2, 9, 1, 1},
	};
	static const struct { int algo, chunk; } forms[] = {
		{LMK_SSD_RECURRENT, 0}, {LMK_SSD_MATERIALIZED, 0}, {LMK_SSD_CHUNKED, 1},
		{LMK_SSD_CHUNKED, 4},   {LMK_SSD_CHUNKED, 5},      {LMK_SSD_CHUNKED, 16},
		{LMK_SSD_AUTO, 0},
	};
	int n = 0;
	for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
		for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
			int all[5] = {1, 1, 1, 1, 1};
			check_grad(tab[i], forms[f].algo, forms[f].chunk, all, 50 + i * 10 + f);
			n++;
		}
	/* subsets of the inputs requiring grad */
	static const int subsets[][5] = {{0, 0, 0, 1, 0}, {0, 0, 0, 0, 1}, {1, 0, 0, 0, 0},
					 {0, 1, 1, 0, 0}, {0, 0, 1, 1, 1}};
	for (size_t j = 0; j < sizeof subsets / sizeof *subsets; j++) {
		check_grad(tab[4], LMK_SSD_CHUNKED, 4, subsets[j], 900 + j);
		n++;
	}
	printf("test_ssd: gradients of %d (shape, form) cases, worst error %.1e\n", n, worst_grad);
}
END_TEST

/* --------------------------------------------------------------- decoding */

START_TEST(test_decode)
{
	static const shp tab[] = {
		{2, 37, 4, 2, 5, 3, 7, 1, 1}, {1, 33, 2, 1, 4, 6, 0, 1, 0},
		{2, 9, 3, 3, 2, 2, 0, 0, 0},  {1, 64, 2, 1, 3, 3, 7, 0, 1},
	};
	for (size_t i = 0; i < sizeof tab / sizeof *tab; i++) {
		shp s = tab[i];
		inputs in;
		inputs_make(&in, s, 300 + i);
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		c.grad_enabled = 0;
		lmk_tensor *t[5];
		make_tensors(&c, &in, NULL, t);
		lmk_ssd_opts o = {0, 0, 0.5f};
		lmk_tensor *full = lmk_ssd(&c, t[0], t[1], t[2], t[3], t[4], &o);
		ck_assert_ptr_nonnull(full);
		lmk_ssd_state st;
		ck_assert_int_eq(lmk_ssd_state_init(&st, &c, s.B, s.H, s.Dk, s.Dv, s.NL), 0);
		double worst = 0;
		/* token by token, then once more with a 3-token step after a reset */
		for (int pass = 0; pass < 2; pass++) {
			ck_assert_int_eq(lmk_ssd_state_reset(&c, &st), 0);
			for (int64_t t0 = 0; t0 < s.T;) {
				int64_t n = pass == 0 ? 1 : (s.T - t0 < 3 ? s.T - t0 : 3);
				lmk_tensor *p[5];
				int64_t w[5] = {s.G * s.Dk, s.G * s.Dk, s.H * s.Dv, s.H, s.H * s.NL};
				for (int j = 0; j < 5; j++) {
					p[j] = NULL;
					if (!t[j])
						continue;
					int64_t sh[4] = {s.B, n, t[j]->shape[2], t[j]->shape[3]};
					p[j] = lmk_tensor_new(&c, LMK_F32, t[j]->ndim, sh, 0);
					for (int64_t b = 0; b < s.B; b++)
						memcpy((float *)p[j]->data + b * n * w[j],
						       (float *)t[j]->data + (b * s.T + t0) * w[j],
						       sizeof(float) * (size_t)(n * w[j]));
				}
				lmk_tensor *o1 = lmk_ssd_step(&c, &st, p[0], p[1], p[2], p[3], p[4], &o);
				ck_assert_msg(o1 != NULL, "%s", lmk_errmsg());
				int64_t row = s.H * s.Dv;
				for (int64_t b = 0; b < s.B; b++)
					for (int64_t j = 0; j < n * row; j++) {
						float a = ((float *)o1->data)[b * n * row + j];
						float r = ((float *)full->data)[(b * s.T + t0) * row + j];
						double e = fabs(a - r) / (1e-3 + fabs(r));
						if (e > worst)
							worst = e;
					}
				t0 += n;
			}
		}
		ck_assert_msg(worst < 1e-4, "decode case %zu: worst relative difference %g", i, worst);
		printf("test_ssd: decode B %lld T %lld loglin %d: worst difference %.1e\n",
		       (long long)s.B, (long long)s.T, s.loglin, worst);
		/* a log-linear state is full after 2^(NL-1) tokens */
		if (s.loglin && st.t == (1ll << (s.NL - 1))) {
			lmk_tensor *p[5];
			for (int j = 0; j < 5; j++) {
				p[j] = NULL;
				if (!t[j])
					continue;
				int64_t sh[4] = {s.B, 1, t[j]->shape[2], t[j]->shape[3]};
				p[j] = lmk_tensor_new(&c, LMK_F32, t[j]->ndim, sh, 0);
			}
			ck_assert_ptr_null(lmk_ssd_step(&c, &st, p[0], p[1], p[2], p[3], p[4], &o));
			ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "levels hold"));
		}
		lmk_ssd_state_free(&st);
		lmk_ctx_free(&c);
		inputs_free(&in);
	}
}
END_TEST

/* ------------------------------------------------------ threads and errors */

START_TEST(test_threads)
{
	shp s = {2, 70, 4, 2, 6, 5, 8, 1, 1};
	inputs in;
	inputs_make(&in, s, 77);
	float *res[2][6];
	int req[5] = {1, 1, 1, 1, 1};
	for (int r = 0; r < 2; r++) {
		omp_set_num_threads(r ? 2 : 1);
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		lmk_tensor *t[5];
		make_tensors(&c, &in, req, t);
		lmk_ssd_opts o = {16, LMK_SSD_CHUNKED, 0.3f};
		lmk_tensor *out = lmk_ssd(&c, t[0], t[1], t[2], t[3], t[4], &o);
		ck_assert_ptr_nonnull(out);
		float *dout = malloc(sizeof(float) * (size_t)out->n);
		for (int64_t i = 0; i < out->n; i++)
			dout[i] = (float)sin((double)i);
		ck_assert_int_eq(lmk_backward_from(&c, out, dout), 0);
		free(dout);
		res[r][5] = malloc(sizeof(float) * (size_t)out->n);
		memcpy(res[r][5], out->data, sizeof(float) * (size_t)out->n);
		for (int i = 0; i < 5; i++) {
			res[r][i] = malloc(sizeof(float) * (size_t)t[i]->n);
			memcpy(res[r][i], t[i]->grad, sizeof(float) * (size_t)t[i]->n);
		}
		lmk_ctx_free(&c);
	}
	omp_set_num_threads(omp_get_num_procs());
	for (int i = 0; i < 6; i++) {
		int64_t n = i == 5 ? in.n[2] / s.Dv * s.Dv : in.n[i];
		ck_assert_msg(memcmp(res[0][i], res[1][i], sizeof(float) * (size_t)n) == 0,
			      "result %d differs between 1 and 2 threads", i);
		free(res[0][i]);
		free(res[1][i]);
	}
	inputs_free(&in);
}
END_TEST

START_TEST(test_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 2, 4}, 0);
	lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 3, 4}, 0);
	lmk_tensor *v4 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 4, 4}, 0);
	lmk_tensor *la = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 5, 3}, 0);
	lmk_tensor *lam = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 4, 3}, 0);
	ck_assert_ptr_null(lmk_ssd(&c, q, q, v, NULL, NULL, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "H a multiple of G"));
	ck_assert_ptr_null(lmk_ssd(&c, q, q, v4, la, NULL, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected loga (1,5,4)"));
	ck_assert_ptr_null(lmk_ssd(&c, q, q, v4, NULL, lam, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "at least 4 levels"));
	ck_assert_ptr_null(lmk_ssd(&c, q, q, v4, NULL, NULL, &(lmk_ssd_opts){-1, 0, 0}));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "chunk"));
	ck_assert_ptr_null(lmk_ssd(&c, q, NULL, v4, NULL, NULL, NULL));
	ck_assert_ptr_nonnull(lmk_ssd(&c, q, q, v4, NULL, NULL, NULL));
	lmk_ssd_state st;
	ck_assert_int_eq(lmk_ssd_state_init(&st, &c, 1, 3, 4, 4, 0), 0);
	ck_assert_ptr_null(lmk_ssd_step(&c, &st, q, q, v4, NULL, NULL, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected a state"));
	lmk_ssd_state_free(&st);
	ck_assert_int_lt(lmk_ssd_state_init(&st, &c, 0, 3, 4, 4, 0), 0);
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ssd");
	TCase *tc = tcase_create("ssd");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_forward_forms);
	tcase_add_test(tc, test_grad);
	tcase_add_test(tc, test_decode);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_errors);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
