/* test_gdn.c: Gated DeltaNet and its log-linear version on the CPU (gdn.h).
 * A float64 reference written here from the definition (each key's
 * contribution k_s beta_s carried through A_{s+1} .. A_t explicitly, weighted
 * by lam_t at the key's Fenwick level: no states, no binary counter) checks
 * the recurrent kernel; the chunked (chunks 1, 3, 16, 64 and odd ones,
 * ragged last chunk) and materialised forms are checked against the
 * recurrent one for T = 1, 2, 7, 63, 64, 65, 130, 257 with and without loga
 * and lam. Gradients of every input against central differences of the
 * reference, through the tape, with the backward's window (the chunk
 * option) 1, 3 and 64, into gradients preloaded with random values. Then the
 * decoding state against the parallel op, thread-count independence and
 * error paths. Shape letters as in gdn.h. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "gdn.h"
#include "rng.h"

#define GRAD_TOL 1e-4
#define FWD_TOL 2e-5
#define FORM_TOL 1e-4

typedef struct gcfg {
	int64_t B, T, H, Dk, Dv, NL;
	int has_la, has_lam;
} gcfg;

/* Inputs of one case, float32, with the ranges the op is meant for: q, k
 * of norm about 1, loga in (-1.5, 0), beta in (0.05, 1.95), lam in (0, 1.2). */
typedef struct ginputs {
	float *q, *k, *v, *la, *be, *lam;
	int64_t nq, nv, ns, nl;
} ginputs;

static float unif(lmk_rng *r, float lo, float hi) { return lo + (hi - lo) * lmk_rng_uniform(r); }

static void make_inputs(ginputs *x, const gcfg *g, uint64_t seed)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	x->nq = g->B * g->T * g->H * g->Dk;
	x->nv = g->B * g->T * g->H * g->Dv;
	x->ns = g->B * g->T * g->H;
	x->nl = x->ns * (g->NL ? g->NL : 1);
	x->q = malloc(sizeof(float) * (size_t)x->nq);
	x->k = malloc(sizeof(float) * (size_t)x->nq);
	x->v = malloc(sizeof(float) * (size_t)x->nv);
	x->la = malloc(sizeof(float) * (size_t)x->ns);
	x->be = malloc(sizeof(float) * (size_t)x->ns);
	x->lam = malloc(sizeof(float) * (size_t)x->nl);
	for (int64_t i = 0; i < x->nq; i += g->Dk) {
		double nq = 0, nk = 0;
		for (int64_t d = 0; d < g->Dk; d++) {
			x->q[i + d] = unif(&r, -1, 1);
			x->k[i + d] = unif(&r, -1, 1);
			nq += (double)x->q[i + d] * x->q[i + d];
			nk += (double)x->k[i + d] * x->k[i + d];
		}
		for (int64_t d = 0; d < g->Dk; d++) {
			x->q[i + d] = (float)(x->q[i + d] / sqrt(nq));
			x->k[i + d] = (float)(x->k[i + d] / sqrt(nk));
		}
	}
	for (int64_t i = 0; i < x->nv; i++)
		x->v[i] = unif(&r, -1, 1);
	for (int64_t i = 0; i < x->ns; i++) {
		x->la[i] = unif(&r, -1.5f, -0.001f);
		x->be[i] = unif(&r, 0.05f, 1.95f);
	}
	for (int64_t i = 0; i < x->nl; i++)
		x->lam[i] = unif(&r, 0.01f, 1.2f);
}

static void free_inputs(ginputs *x)
{
	free(x->q);
	free(x->k);
	free(x->v);
	free(x->la);
	free(x->be);
	free(x->lam);
}

/* ---- the float64 reference: o_t = scale sum_s w(t,s) q_tᵀ P(t,s) k_s beta_s v_s */

static void ref_forward(const gcfg *g, const double *q, const double *k, const double *v,
			const double *la, const double *be, const double *lam, double scale,
			double *out)
{
	int64_t T = g->T, H = g->H, Dk = g->Dk, Dv = g->Dv, NL = g->NL;
	double *x = malloc(sizeof(double) * (size_t)Dk);
	memset(out, 0, sizeof(double) * (size_t)(g->B * T * H * Dv));
	for (int64_t b = 0; b < g->B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t s = 0; s < T; s++) {
				int64_t is = (b * T + s) * H + h;
				for (int64_t d = 0; d < Dk; d++)
					x[d] = be[is] * k[is * Dk + d];
				for (int64_t t = s; t < T; t++) {
					int64_t it = (b * T + t) * H + h;
					if (t > s) { /* x = A_t x */
						double a = la ? exp(la[it]) : 1.0, kx = 0;
						for (int64_t d = 0; d < Dk; d++)
							kx += k[it * Dk + d] * x[d];
						for (int64_t d = 0; d < Dk; d++)
							x[d] = a * (x[d] - be[it] * k[it * Dk + d] * kx);
					}
					double w = scale * (lam ? lam[it * NL + lmk_fenwick_level(t, s)] : 1.0);
					double qx = 0;
					for (int64_t d = 0; d < Dk; d++)
						qx += q[it * Dk + d] * x[d];
					for (int64_t e = 0; e < Dv; e++)
						out[it * Dv + e] += w * qx * v[is * Dv + e];
				}
			}
	free(x);
}

static double *to_d(const float *f, int64_t n)
{
	double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++)
		d[i] = f[i];
	return d;
}

/* ||a - b|| / ||b|| (||a - b|| when b is 0); NaN gives inf. */
static double rel_err(const float *a, const float *b, int64_t n)
{
	double e = 0, r = 0;
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(a[i]) || !isfinite(b[i]))
			return INFINITY;
		double d = (double)a[i] - b[i];
		e += d * d;
		r += (double)b[i] * b[i];
	}
	return r > 1e-30 ? sqrt(e / r) : sqrt(e);
}

static const char *cfg_str(const gcfg *g)
{
	static char buf[160];
	snprintf(buf, sizeof buf, "B%lld T%lld H%lld Dk%lld Dv%lld NL%lld%s%s", (long long)g->B,
		 (long long)g->T, (long long)g->H, (long long)g->Dk, (long long)g->Dv,
		 (long long)g->NL, g->has_la ? " loga" : "", g->has_lam ? " lam" : "");
	return buf;
}

/* ---------------------------------------------------------- the forms */

static double worst_form, worst_ref;

static void forward_cpu(const gcfg *g, const ginputs *x, float scale, int algo, int chunk,
			float *out)
{
	int r = lmk_cpu_gdn_forward(out, x->q, x->k, x->v, g->has_la ? x->la : NULL, x->be,
				    g->has_lam ? x->lam : NULL, g->B, g->T, g->H, g->Dk, g->Dv,
				    g->has_lam ? g->NL : 0, scale, algo, chunk);
	ck_assert_msg(r == 0, "%s: forward: %s", cfg_str(g), lmk_errmsg());
}

static const int64_t form_T[] = {1, 2, 7, 63, 64, 65, 130, 257};

START_TEST(test_forms)
{
	int64_t T = form_T[_i];
	const int chunks[] = {1, 3, 16, 64, 13, 100};
	for (int var = 0; var < 4; var++) {
		gcfg g = {2, T, 2, 5, 7, 0, var & 1, var >> 1};
		if (T == 64)
			g.Dk = 8, g.Dv = 3;
		g.NL = g.has_lam ? lmk_fenwick_levels(T) + (var == 3) : 0;
		ginputs x;
		make_inputs(&x, &g, 1000 + (uint64_t)T * 4 + (uint64_t)var);
		float scale = 1.0f / sqrtf((float)g.Dk);
		float *rec = malloc(sizeof(float) * (size_t)x.nv);
		float *oth = malloc(sizeof(float) * (size_t)x.nv);
		forward_cpu(&g, &x, scale, LMK_GDN_RECURRENT, 0, rec);
		if (T <= 65) { /* the recurrent kernel against the definition */
			double *qd = to_d(x.q, x.nq), *kd = to_d(x.k, x.nq), *vd = to_d(x.v, x.nv),
			       *lad = to_d(x.la, x.ns), *bed = to_d(x.be, x.ns),
			       *lamd = to_d(x.lam, x.nl), *od = malloc(sizeof(double) * (size_t)x.nv);
			ref_forward(&g, qd, kd, vd, g.has_la ? lad : NULL, bed,
				    g.has_lam ? lamd : NULL, scale, od);
			float *of = malloc(sizeof(float) * (size_t)x.nv);
			for (int64_t i = 0; i < x.nv; i++)
				of[i] = (float)od[i];
			double e = rel_err(rec, of, x.nv);
			if (e > worst_ref)
				worst_ref = e;
			ck_assert_msg(e < FWD_TOL, "%s: recurrent vs float64 definition: %.3g",
				      cfg_str(&g), e);
			free(qd), free(kd), free(vd), free(lad), free(bed), free(lamd), free(od),
				free(of);
		}
		for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
			memset(oth, 0xFF, sizeof(float) * (size_t)x.nv);
			forward_cpu(&g, &x, scale, LMK_GDN_CHUNKED, chunks[ci], oth);
			double e = rel_err(oth, rec, x.nv);
			if (e > worst_form)
				worst_form = e;
			ck_assert_msg(e < FORM_TOL, "%s: chunked (chunk %d) vs recurrent: %.3g",
				      cfg_str(&g), chunks[ci], e);
		}
		memset(oth, 0xFF, sizeof(float) * (size_t)x.nv);
		forward_cpu(&g, &x, scale, LMK_GDN_AUTO, 0, oth);
		ck_assert_msg(rel_err(oth, rec, x.nv) < FORM_TOL, "%s: auto vs recurrent", cfg_str(&g));
		if (T <= 130) {
			memset(oth, 0xFF, sizeof(float) * (size_t)x.nv);
			forward_cpu(&g, &x, scale, LMK_GDN_MATERIALIZED, 0, oth);
			double e = rel_err(oth, rec, x.nv);
			if (e > worst_form)
				worst_form = e;
			ck_assert_msg(e < FORM_TOL, "%s: materialised vs recurrent: %.3g", cfg_str(&g),
				      e);
		}
		free(rec);
		free(oth);
		free_inputs(&x);
	}
	if (_i == (int)(sizeof form_T / sizeof form_T[0]) - 1)
		printf("test_gdn: forms: recurrent vs float64 definition %.1e, chunked and "
		       "materialised vs recurrent %.1e\n", worst_ref, worst_form);
}
END_TEST

/* A longer sequence at a realistic head size: the chunked form against the
 * recurrent one where the states have many levels. */
START_TEST(test_forms_large)
{
	for (int ll = 0; ll < 2; ll++) {
		gcfg g = {1, 1000, 2, 64, 64, 0, 1, ll};
		g.NL = ll ? lmk_fenwick_levels(g.T) : 0;
		ginputs x;
		make_inputs(&x, &g, 77 + (uint64_t)ll);
		float *rec = malloc(sizeof(float) * (size_t)x.nv);
		float *chk = malloc(sizeof(float) * (size_t)x.nv);
		forward_cpu(&g, &x, 0.125f, LMK_GDN_RECURRENT, 0, rec);
		forward_cpu(&g, &x, 0.125f, LMK_GDN_CHUNKED, 64, chk);
		double e = rel_err(chk, rec, x.nv);
		printf("test_gdn: %s T 1000 D 64: chunked vs recurrent %.1e\n",
		       ll ? "log-linear" : "plain", e);
		ck_assert_msg(e < FORM_TOL, "%s: chunked vs recurrent: %.3g", cfg_str(&g), e);
		free(rec);
		free(chk);
		free_inputs(&x);
	}
}
END_TEST

/* -------------------------------------------------------- gradients */

typedef struct gradcase {
	gcfg g;
	int chunk;
	int frozen; /* bit i: input i (q k v loga beta lam) without gradient */
} gradcase;

static const gradcase grad_cases[] = {
	{{1, 1, 1, 3, 2, 1, 1, 1}, 64, 0},   {{1, 2, 1, 3, 2, 2, 1, 1}, 1, 0},
	{{1, 7, 2, 4, 3, 3, 1, 0}, 3, 0},    {{2, 9, 1, 3, 5, 5, 1, 1}, 3, 0},
	{{1, 13, 1, 5, 4, 0, 0, 0}, 4, 0},   {{1, 13, 2, 4, 4, 6, 0, 1}, 5, 0},
	{{1, 17, 1, 4, 3, 6, 1, 1}, 64, 0},  {{2, 19, 1, 3, 3, 6, 1, 1}, 1, 0x9},
	{{1, 33, 1, 6, 5, 7, 1, 1}, 8, 0x22}, {{1, 24, 3, 4, 2, 0, 1, 0}, 7, 0x4},
};

static const char *const in_names[6] = {"q", "k", "v", "loga", "beta", "lam"};
static double worst_grad_err;

static const int grad_algos[3] = {LMK_GDN_RECURRENT, LMK_GDN_CHUNKED, LMK_GDN_MATERIALIZED};
#define NGRAD ((int)(sizeof grad_cases / sizeof grad_cases[0]))

/* _i: case _i / 3 with the algorithm _i % 3 (its backward follows it) */
START_TEST(test_grad)
{
	const gradcase *gc = &grad_cases[_i / 3];
	const int algo = grad_algos[_i % 3];
	const gcfg *g = &gc->g;
	ginputs x;
	make_inputs(&x, g, 5000 + (uint64_t)_i);
	float scale = 0.7f;
	int64_t nin[6] = {x.nq, x.nq, x.nv, x.ns, x.ns, x.nl};
	float *xf[6] = {x.q, x.k, x.v, x.la, x.be, x.lam};
	int present[6] = {1, 1, 1, g->has_la, 1, g->has_lam};
	lmk_rng r;
	lmk_rng_init(&r, 99 + (uint64_t)_i);

	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *t[6] = {0};
	float *prior[6] = {0};
	int64_t shp[6][4] = {{g->B, g->T, g->H, g->Dk}, {g->B, g->T, g->H, g->Dk},
			     {g->B, g->T, g->H, g->Dv}, {g->B, g->T, g->H, 0},
			     {g->B, g->T, g->H, 0},     {g->B, g->T, g->H, g->NL}};
	for (int i = 0; i < 6; i++) {
		if (!present[i])
			continue;
		int want = !((gc->frozen >> i) & 1);
		t[i] = lmk_tensor_new(&c, LMK_F32, i == 3 || i == 4 ? 3 : 4, shp[i], want);
		ck_assert_ptr_nonnull(t[i]);
		memcpy(t[i]->data, xf[i], sizeof(float) * (size_t)nin[i]);
		if (want) {
			prior[i] = malloc(sizeof(float) * (size_t)nin[i]);
			for (int64_t j = 0; j < nin[i]; j++)
				prior[i][j] = unif(&r, -0.5f, 0.5f);
			memcpy(t[i]->grad, prior[i], sizeof(float) * (size_t)nin[i]);
		}
	}
	lmk_gdn_opts o = {gc->chunk, algo, scale};
	lmk_tensor *out = lmk_gdn(&c, t[0], t[1], t[2], t[3], t[4], t[5], &o);
	ck_assert_msg(out != NULL, "%s: %s", cfg_str(g), lmk_errmsg());
	float *proj = malloc(sizeof(float) * (size_t)x.nv);
	for (int64_t j = 0; j < x.nv; j++)
		proj[j] = unif(&r, -1, 1);
	ck_assert_msg(lmk_backward_from(&c, out, proj) == 0, "%s: backward: %s", cfg_str(g),
		      lmk_errmsg());

	/* numerical gradients of L = sum(out proj) from the float64 reference */
	double *xd[6];
	for (int i = 0; i < 6; i++)
		xd[i] = to_d(xf[i], nin[i]);
	double *od = malloc(sizeof(double) * (size_t)x.nv);
	for (int i = 0; i < 6; i++) {
		if (!present[i] || !prior[i])
			continue;
		float *ga = malloc(sizeof(float) * (size_t)nin[i]);
		float *gn = malloc(sizeof(float) * (size_t)nin[i]);
		for (int64_t j = 0; j < nin[i]; j++) {
			ga[j] = ((float *)t[i]->grad)[j] - prior[i][j];
			double keep = xd[i][j], h = 1e-5, L[2];
			for (int sgn = 0; sgn < 2; sgn++) {
				xd[i][j] = keep + (sgn ? -h : h);
				ref_forward(g, xd[0], xd[1], xd[2], g->has_la ? xd[3] : NULL, xd[4],
					    g->has_lam ? xd[5] : NULL, scale, od);
				double s = 0;
				for (int64_t e = 0; e < x.nv; e++)
					s += od[e] * proj[e];
				L[sgn] = s;
			}
			xd[i][j] = keep;
			gn[j] = (float)((L[0] - L[1]) / (2 * h));
		}
		double e = rel_err(ga, gn, nin[i]);
		if (e > worst_grad_err)
			worst_grad_err = e;
		ck_assert_msg(e < GRAD_TOL, "%s algo %d chunk %d: gradient of %s: error %.3g",
			      cfg_str(g), algo, gc->chunk, in_names[i], e);
		free(ga);
		free(gn);
	}
	if (_i == 3 * NGRAD - 1)
		printf("test_gdn: gradients (recurrent, chunked, materialised) vs finite "
		       "differences: %d cases, worst error %.1e\n", 3 * NGRAD, worst_grad_err);
	for (int i = 0; i < 6; i++) {
		free(xd[i]);
		free(prior[i]);
	}
	free(od);
	free(proj);
	lmk_ctx_free(&c);
	free_inputs(&x);
}
END_TEST

/* The backwards agree whatever the form and window (chunk): recurrent with
 * windows 64, 1, 7, T and more than T; chunked with chunks 1, 16, 64, odd
 * (rounded down to a power of two for log-linear) and more than T. */
START_TEST(test_grad_forms)
{
	static const struct { int algo, chunk; } forms[] = {
		{LMK_GDN_RECURRENT, 64}, {LMK_GDN_RECURRENT, 1},   {LMK_GDN_RECURRENT, 7},
		{LMK_GDN_RECURRENT, 150}, {LMK_GDN_RECURRENT, 1000}, {LMK_GDN_CHUNKED, 1},
		{LMK_GDN_CHUNKED, 16},    {LMK_GDN_CHUNKED, 64},     {LMK_GDN_CHUNKED, 13},
		{LMK_GDN_CHUNKED, 200},   {LMK_GDN_MATERIALIZED, 0},
	};
	double worst = 0;
	for (int var = 0; var < 4; var++) {
		gcfg g = {1, 150, 2, 16, 8, 9, var & 1, var >> 1};
		if (var == 2)
			g.T = 129, g.Dk = 5, g.Dv = 11;
		ginputs x;
		make_inputs(&x, &g, 4242 + (uint64_t)var);
		float *dout = malloc(sizeof(float) * (size_t)x.nv);
		lmk_rng r;
		lmk_rng_init(&r, 3);
		for (int64_t i = 0; i < x.nv; i++)
			dout[i] = unif(&r, -1, 1);
		float *ref[6] = {0};
		int64_t nin[6] = {x.nq, x.nq, x.nv, x.ns, x.ns, x.nl};
		for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
			float *gr[6];
			for (int i = 0; i < 6; i++)
				gr[i] = calloc((size_t)nin[i], sizeof(float));
			ck_assert_int_eq(lmk_cpu_gdn_backward(gr[0], gr[1], gr[2], gr[3], gr[4], gr[5],
							      dout, x.q, x.k, x.v,
							      g.has_la ? x.la : NULL, x.be,
							      g.has_lam ? x.lam : NULL, g.B, g.T, g.H,
							      g.Dk, g.Dv, g.has_lam ? g.NL : 0, 0.25f,
							      forms[f].algo, forms[f].chunk),
					 0);
			for (int i = 0; i < 6; i++) {
				if (!ref[i]) {
					ref[i] = gr[i];
					continue;
				}
				double e = rel_err(gr[i], ref[i], nin[i]);
				if ((i != 3 || g.has_la) && (i != 5 || g.has_lam) && e > worst)
					worst = e;
				ck_assert_msg(e < FORM_TOL, "%s: algo %d chunk %d: gradient of %s "
					      "differs from the recurrent one by %.3g", cfg_str(&g),
					      forms[f].algo, forms[f].chunk, in_names[i], e);
				free(gr[i]);
			}
		}
		for (int i = 0; i < 6; i++)
			free(ref[i]);
		free(dout);
		free_inputs(&x);
	}
	printf("test_gdn: backwards of every form and window vs the recurrent one: %.1e\n", worst);
}
END_TEST

/* ------------------------------------------------------------ decoding */

START_TEST(test_decode)
{
	for (int var = 0; var < 4; var++) {
		gcfg g = {3, 37, 2, 6, 5, 0, var & 1, var >> 1};
		g.NL = g.has_lam ? lmk_fenwick_levels(g.T) : 0;
		ginputs x;
		make_inputs(&x, &g, 31 + (uint64_t)var);
		float *par = malloc(sizeof(float) * (size_t)x.nv);
		forward_cpu(&g, &x, 0.5f, LMK_GDN_CHUNKED, 8, par);

		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		lmk_gdn_state st;
		ck_assert_int_eq(lmk_gdn_state_init(&st, &c, g.B, g.H, g.Dk, g.Dv, g.has_lam, g.T), 0);
		for (int pass = 0; pass < 2; pass++) {
			double worst = 0;
			for (int64_t t = 0; t < g.T; t++) {
				int64_t B = g.B, H = g.H;
				lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, 1, H, g.Dk}, 0);
				lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, 1, H, g.Dk}, 0);
				lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, 1, H, g.Dv}, 0);
				lmk_tensor *la = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){B, 1, H}, 0);
				lmk_tensor *be = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){B, 1, H}, 0);
				lmk_tensor *lam = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){B, 1, H, g.NL ? g.NL : 1}, 0);
				for (int64_t b = 0; b < B; b++)
					for (int64_t h = 0; h < H; h++) {
						int64_t src = (b * g.T + t) * H + h, dst = b * H + h;
						memcpy((float *)q->data + dst * g.Dk, x.q + src * g.Dk, sizeof(float) * (size_t)g.Dk);
						memcpy((float *)k->data + dst * g.Dk, x.k + src * g.Dk, sizeof(float) * (size_t)g.Dk);
						memcpy((float *)v->data + dst * g.Dv, x.v + src * g.Dv, sizeof(float) * (size_t)g.Dv);
						((float *)la->data)[dst] = x.la[src];
						((float *)be->data)[dst] = x.be[src];
						if (g.NL)
							memcpy((float *)lam->data + dst * g.NL, x.lam + src * g.NL, sizeof(float) * (size_t)g.NL);
					}
				lmk_tensor *o = lmk_gdn_step(&c, &st, q, k, v, g.has_la ? la : NULL, be,
							     g.has_lam ? lam : NULL, 0.5f);
				ck_assert_msg(o != NULL, "%s: step %lld: %s", cfg_str(&g), (long long)t, lmk_errmsg());
				for (int64_t b = 0; b < B; b++)
					for (int64_t h = 0; h < H; h++)
						for (int64_t e = 0; e < g.Dv; e++) {
							double d = fabs((double)((float *)o->data)[(b * H + h) * g.Dv + e] -
									par[((b * g.T + t) * H + h) * g.Dv + e]);
							if (!(d <= worst))
								worst = d;
						}
				lmk_ctx_reset(&c);
			}
			ck_assert_msg(worst < 1e-5, "%s: pass %d: decoding differs from the parallel op by %.3g",
				      cfg_str(&g), pass, worst);
			ck_assert_int_eq(lmk_gdn_state_reset(&st), 0);
		}
		if (g.has_lam) { /* past max_t */
			st.t = st.max_t;
			lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){g.B, 1, g.H, g.Dk}, 0);
			lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){g.B, 1, g.H, g.Dv}, 0);
			lmk_tensor *be = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){g.B, 1, g.H}, 0);
			lmk_tensor *lam = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){g.B, 1, g.H, 20}, 0);
			ck_assert_ptr_null(lmk_gdn_step(&c, &st, q, q, v, NULL, be, lam, 0));
			ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
		}
		lmk_gdn_state_free(&st);
		lmk_ctx_free(&c);
		free(par);
		free_inputs(&x);
	}
}
END_TEST

/* -------------------------------------------- threads and error paths */

START_TEST(test_threads)
{
	gcfg g = {2, 70, 3, 8, 6, 8, 1, 1};
	ginputs x;
	make_inputs(&x, &g, 8);
	float *o1 = malloc(sizeof(float) * (size_t)x.nv), *o2 = malloc(sizeof(float) * (size_t)x.nv);
	float *g1 = calloc((size_t)x.nq, sizeof(float)), *g2 = calloc((size_t)x.nq, sizeof(float));
	int nt = omp_get_max_threads();
	for (int algo = LMK_GDN_RECURRENT; algo <= LMK_GDN_CHUNKED; algo++) {
		omp_set_num_threads(1);
		forward_cpu(&g, &x, 0.3f, algo, 16, o1);
		lmk_cpu_gdn_backward(NULL, g1, NULL, NULL, NULL, NULL, o1, x.q, x.k, x.v, x.la, x.be,
				     x.lam, g.B, g.T, g.H, g.Dk, g.Dv, g.NL, 0.3f, algo, 16);
		omp_set_num_threads(3);
		forward_cpu(&g, &x, 0.3f, algo, 16, o2);
		lmk_cpu_gdn_backward(NULL, g2, NULL, NULL, NULL, NULL, o2, x.q, x.k, x.v, x.la, x.be,
				     x.lam, g.B, g.T, g.H, g.Dk, g.Dv, g.NL, 0.3f, algo, 16);
		ck_assert_msg(memcmp(o1, o2, sizeof(float) * (size_t)x.nv) == 0, "algo %d: forward depends on the threads", algo);
		ck_assert_msg(memcmp(g1, g2, sizeof(float) * (size_t)x.nq) == 0, "algo %d: backward depends on the threads", algo);
	}
	omp_set_num_threads(nt);
	free(o1), free(o2), free(g1), free(g2);
	free_inputs(&x);
}
END_TEST

START_TEST(test_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 9, 2, 4}, 0);
	lmk_tensor *v = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 9, 2, 3}, 0);
	lmk_tensor *s = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 9, 2}, 0);
	lmk_tensor *s2 = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 8, 2}, 0);
	lmk_tensor *lam4 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 9, 2, 4}, 0);
	lmk_tensor *lam5 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 9, 2, 5}, 0);
	memset(q->data, 0, sizeof(float) * (size_t)q->n);
	memset(v->data, 0, sizeof(float) * (size_t)v->n);
	memset(s->data, 0, sizeof(float) * (size_t)s->n);
	memset(lam5->data, 0, sizeof(float) * (size_t)lam5->n);
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, NULL, NULL, NULL, NULL));
	ck_assert_ptr_null(lmk_gdn(&c, q, v, v, NULL, s, NULL, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s2, s, NULL, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s, s2, NULL, NULL));
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s, s, lam4, NULL)); /* 9 tokens need 5 levels */
	ck_assert_msg(strstr(lmk_errmsg(), "levels") != NULL, "%s", lmk_errmsg());
	lmk_gdn_opts bad = {-1, 0, 0};
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s, s, lam5, &bad));
	bad.chunk = 0;
	bad.algo = 9;
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s, s, lam5, &bad));
	bad.algo = 0;
	bad.scale = NAN;
	ck_assert_ptr_null(lmk_gdn(&c, q, q, v, s, s, lam5, &bad));
	lmk_tensor *o = lmk_gdn(&c, q, q, v, s, s, lam5, NULL);
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(o->ndim, 4);
	ck_assert_int_eq(o->shape[3], 3);
	lmk_gdn_state st;
	ck_assert_int_eq(lmk_gdn_state_init(&st, &c, 0, 1, 1, 1, 0, 0), LMK_EINVAL);
	ck_assert_int_eq(lmk_gdn_state_init(&st, &c, 1, 2, 4, 3, 0, 0), 0);
	ck_assert_ptr_null(lmk_gdn_step(&c, &st, q, q, v, NULL, s, NULL, 0)); /* T = 9 */
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	lmk_gdn_state_free(&st);
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gdn");
	TCase *tc = tcase_create("gdn");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_forms, 0, (int)(sizeof form_T / sizeof form_T[0]));
	tcase_add_test(tc, test_forms_large);
	tcase_add_loop_test(tc, test_grad, 0, 3 * NGRAD);
	tcase_add_test(tc, test_grad_forms);
	tcase_add_test(tc, test_decode);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_errors);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
