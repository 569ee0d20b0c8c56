/* test_path.c: PaTH attention (lib/path.h) on the CPU.
 * - Finite differences: a float64 reference written here with the D x D
 *   products H_i ... H_{j+1} formed explicitly (independent of both kernels)
 *   gives the forward and, by central differences, every input's gradient;
 *   the op's naive and blockwise gradients (through the tape, into
 *   gradients preloaded with random values so that assigning fails) must
 *   match within 1e-4 (norm-relative), the forward within 1e-5.
 * - Naive against blockwise, forward and all six gradients, at T = 1, 2, 7,
 *   63, 64, 65, 130 and 1000, blocks 16, 64 and odd ones, GQA, logf NULL and
 *   not: within 3e-5 (1e-4 at T = 1000).
 * - Any subset of the inputs wanting gradients gets the full run's.
 * - beta = 0 without logf is lmk_attention; decoding token by token equals
 *   the parallel op's rows; results do not depend on the thread count;
 *   bad shapes fail with a message.
 * Shape letters as in path.h. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ops.h"
#include "path.h"
#include "rng.h"

typedef struct pcase {
	int64_t B, T, H, K, D;
	int fox;
} pcase;

/* Random inputs: q, k, v in +-1, w unit rows, beta in (0.05, 1.95), logf
 * = log(f) with f in (0.5, 1). x[0..5] = q, k, v, w, beta, logf. */
static void make_inputs(const pcase *p, uint64_t seed, float **x, int64_t *n)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	int64_t B = p->B, T = p->T, H = p->H, K = p->K, D = p->D;
	n[0] = B * T * H * D;
	n[1] = n[2] = n[3] = B * T * K * D;
	n[4] = B * T * K;
	n[5] = B * T * H;
	for (int i = 0; i < 6; i++) {
		x[i] = malloc(sizeof(float) * (size_t)(n[i] ? n[i] : 1));
		for (int64_t e = 0; e < n[i]; e++)
			x[i][e] = 2 * lmk_rng_uniform(&r) - 1;
	}
	for (int64_t e = 0; e < n[3]; e += D) {
		double s = 0;
		for (int64_t d = 0; d < D; d++)
			s += (double)x[3][e + d] * x[3][e + d];
		for (int64_t d = 0; d < D; d++)
			x[3][e + d] = (float)(x[3][e + d] / sqrt(s));
	}
	for (int64_t e = 0; e < n[4]; e++)
		x[4][e] = 0.05f + 1.9f * lmk_rng_uniform(&r);
	for (int64_t e = 0; e < n[5]; e++)
		x[5][e] = logf(0.5f + 0.5f * lmk_rng_uniform(&r));
}

static void free_inputs(float **x)
{
	for (int i = 0; i < 6; i++)
		free(x[i]);
}

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

typedef struct run {
	float *out;
	float *grad[6]; /* the gradient minus its preloaded value */
	int64_t nout;
} run;

static void free_run(run *r)
{
	free(r->out);
	for (int i = 0; i < 6; i++)
		free(r->grad[i]);
}

/* The op on the CPU: forward, then backward from dout into gradients
 * preloaded with prior (when given). */
static unsigned g_mask = 0x3f; /* which inputs require grad (bit i: x[i]) */

static run run_op(const pcase *p, float **x, const int64_t *n, const float *dout,
		  float **prior, int algo, int block, int grad)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	c.grad_enabled = grad;
	int64_t sq[4] = {p->B, p->T, p->H, p->D}, sk[4] = {p->B, p->T, p->K, p->D};
	int64_t sb[3] = {p->B, p->T, p->K}, sf[3] = {p->B, p->T, p->H};
	lmk_tensor *t[6];
	t[0] = lmk_tensor_new(&c, LMK_F32, 4, sq, g_mask & 1);
	t[1] = lmk_tensor_new(&c, LMK_F32, 4, sk, (g_mask >> 1) & 1);
	t[2] = lmk_tensor_new(&c, LMK_F32, 4, sk, (g_mask >> 2) & 1);
	t[3] = lmk_tensor_new(&c, LMK_F32, 4, sk, (g_mask >> 3) & 1);
	t[4] = lmk_tensor_new(&c, LMK_F32, 3, sb, (g_mask >> 4) & 1);
	t[5] = p->fox ? lmk_tensor_new(&c, LMK_F32, 3, sf, (g_mask >> 5) & 1) : NULL;
	for (int i = 0; i < 6; i++) {
		if (i == 5 && !p->fox)
			continue;
		ck_assert_ptr_nonnull(t[i]);
		memcpy(t[i]->data, x[i], sizeof(float) * (size_t)n[i]);
		if (grad && prior && t[i]->grad)
			memcpy(t[i]->grad, prior[i], sizeof(float) * (size_t)n[i]);
	}
	lmk_path_opts o = {block, algo};
	lmk_tensor *y = lmk_path_attention(&c, t[0], t[1], t[2], t[3], t[4], t[5], 0.37f, &o);
	ck_assert_msg(y != NULL, "path_attention failed: %s", lmk_errmsg());
	run r = {0};
	r.nout = y->n;
	r.out = malloc(sizeof(float) * (size_t)(y->n ? y->n : 1));
	memcpy(r.out, y->data, sizeof(float) * (size_t)y->n);
	if (grad) {
		ck_assert_msg(lmk_backward_from(&c, y, dout) == 0, "backward: %s", lmk_errmsg());
		for (int i = 0; i < 6; i++) {
			if (!t[i] || !t[i]->grad)
				continue;
			r.grad[i] = malloc(sizeof(float) * (size_t)(n[i] ? n[i] : 1));
			const float *g = t[i]->grad;
			for (int64_t e = 0; e < n[i]; e++)
				r.grad[i][e] = g[e] - (prior ? prior[i][e] : 0);
		}
	}
	lmk_ctx_free(&c);
	return r;
}

static const char *const names[6] = {"q", "k", "v", "w", "beta", "logf"};

/* ------------------------------------------------ float64 reference */

/* out (B,T,H,D) with the products as explicit D x D matrices. */
static void ref_forward(const pcase *p, double *const *x, double *out)
{
	int64_t B = p->B, T = p->T, H = p->H, K = p->K, D = p->D;
	double *P = malloc(sizeof(double) * (size_t)(D * D)), *P2 = malloc(sizeof(double) * (size_t)(D * D));
	double *s = malloc(sizeof(double) * (size_t)T);
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t g = h / (H / K);
			for (int64_t i = 0; i < T; i++) {
				/* P = H_i ... H_{j+1}, built from j = i down */
				for (int64_t e = 0; e < D * D; e++)
					P[e] = e % (D + 1) == 0;
				const double *qi = x[0] + ((b * T + i) * H + h) * D;
				double m = -INFINITY, fsum = 0;
				for (int64_t j = i; j >= 0; j--) {
					if (j < i) {
						/* P <- P H_{j+1} */
						const double *wv = x[3] + ((b * T + j + 1) * K + g) * D;
						double be = x[4][(b * T + j + 1) * K + g];
						for (int64_t r = 0; r < D; r++)
							for (int64_t cc = 0; cc < D; cc++) {
								double a = 0;
								for (int64_t t = 0; t < D; t++)
									a += P[r * D + t] *
									     ((t == cc) - be * wv[t] * wv[cc]);
								P2[r * D + cc] = a;
							}
						memcpy(P, P2, sizeof(double) * (size_t)(D * D));
						if (p->fox)
							fsum += x[5][(b * T + j + 1) * H + h];
					}
					const double *kj = x[1] + ((b * T + j) * K + g) * D;
					double a = 0;
					for (int64_t r = 0; r < D; r++)
						for (int64_t cc = 0; cc < D; cc++)
							a += qi[r] * P[r * D + cc] * kj[cc];
					s[j] = 0.37 * a + fsum;
					m = s[j] > m ? s[j] : m;
				}
				double l = 0;
				for (int64_t j = 0; j <= i; j++)
					l += exp(s[j] - m);
				double *o = out + ((b * T + i) * H + h) * D;
				for (int64_t d = 0; d < D; d++)
					o[d] = 0;
				for (int64_t j = 0; j <= i; j++) {
					const double *vj = x[2] + ((b * T + j) * K + g) * D;
					for (int64_t d = 0; d < D; d++)
						o[d] += exp(s[j] - m) / l * vj[d];
				}
			}
		}
	free(P);
	free(P2);
	free(s);
}

static double *to_d(const float *a, int64_t n)
{
	double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++)
		d[i] = a[i];
	return d;
}

START_TEST(test_finite_differences)
{
	static const pcase tab[] = {
		{1, 1, 1, 1, 3, 0}, {1, 2, 1, 1, 4, 1}, {1, 5, 2, 1, 4, 1},
		{2, 4, 2, 2, 3, 0}, {1, 9, 2, 1, 5, 1}, {1, 7, 4, 2, 2, 1},
	};
	double worst = 0, worstf = 0;
	for (size_t ci = 0; ci < sizeof tab / sizeof tab[0]; ci++) {
		const pcase *p = &tab[ci];
		float *x[6], *prior[6];
		int64_t n[6];
		make_inputs(p, 100 + ci, x, n);
		make_inputs(p, 200 + ci, prior, n);
		int64_t no = p->B * p->T * p->H * p->D;
		float *dout = malloc(sizeof(float) * (size_t)no);
		lmk_rng rr;
		lmk_rng_init(&rr, 300 + ci);
		for (int64_t e = 0; e < no; e++)
			dout[e] = 2 * lmk_rng_uniform(&rr) - 1;
		double *xd[6], *od = malloc(sizeof(double) * (size_t)no);
		for (int i = 0; i < 6; i++)
			xd[i] = to_d(x[i], n[i]);
		ref_forward(p, xd, od);
		double *num[6];
		for (int i = 0; i < 6; i++) {
			num[i] = malloc(sizeof(double) * (size_t)(n[i] ? n[i] : 1));
			if (i == 5 && !p->fox)
				continue;
			for (int64_t e = 0; e < n[i]; e++) {
				double keep = xd[i][e], h = 1e-4, lp = 0, lm = 0;
				xd[i][e] = keep + h;
				ref_forward(p, xd, od);
				for (int64_t a = 0; a < no; a++)
					lp += od[a] * dout[a];
				xd[i][e] = keep - h;
				ref_forward(p, xd, od);
				for (int64_t a = 0; a < no; a++)
					lm += od[a] * dout[a];
				xd[i][e] = keep;
				num[i][e] = (lp - lm) / (2 * h);
			}
		}
		ref_forward(p, xd, od);
		for (int algo = LMK_PATH_NAIVE; algo <= LMK_PATH_BLOCKWISE; algo++)
			for (int block = 1; block <= 4; block += 3) {
				run r = run_op(p, x, n, dout, prior, algo, block, 1);
				double ef = 0, rf = 0;
				for (int64_t a = 0; a < no; a++) {
					ef += (r.out[a] - od[a]) * (r.out[a] - od[a]);
					rf += od[a] * od[a];
				}
				ef = sqrt(ef / rf);
				ck_assert_msg(ef < 1e-5, "case %zu algo %d block %d: forward off by %g",
					      ci, algo, block, ef);
				worstf = fmax(worstf, ef);
				for (int i = 0; i < 6; i++) {
					if (i == 5 && !p->fox)
						continue;
					double e2 = 0, r2 = 0;
					for (int64_t e = 0; e < n[i]; e++) {
						double d = r.grad[i][e] - num[i][e];
						e2 += d * d;
						r2 += num[i][e] * num[i][e];
					}
					double e = r2 > 1e-20 ? sqrt(e2 / r2) : sqrt(e2);
					worst = fmax(worst, e);
					ck_assert_msg(e < 1e-4,
						      "case %zu (B %lld T %lld H %lld K %lld D %lld fox %d) "
						      "algo %d block %d: gradient of %s off by %g",
						      ci, (long long)p->B, (long long)p->T, (long long)p->H,
						      (long long)p->K, (long long)p->D, p->fox, algo, block,
						      names[i], e);
				}
				free_run(&r);
			}
		for (int i = 0; i < 6; i++) {
			free(xd[i]);
			free(num[i]);
		}
		free(od);
		free(dout);
		free_inputs(x);
		free_inputs(prior);
	}
	printf("test_path: finite differences: worst gradient error %.1e, forward %.1e\n", worst,
	       worstf);
}
END_TEST

/* ------------------------------------------ naive against blockwise */

static void compare_algos(const pcase *p, int block, double tol, double *wf, double *wg)
{
	float *x[6], *prior[6];
	int64_t n[6];
	make_inputs(p, 7 * p->T + block, x, n);
	make_inputs(p, 11 * p->T + block, prior, n);
	int64_t no = p->B * p->T * p->H * p->D;
	float *dout = malloc(sizeof(float) * (size_t)(no ? no : 1));
	lmk_rng rr;
	lmk_rng_init(&rr, 5);
	for (int64_t e = 0; e < no; e++)
		dout[e] = 2 * lmk_rng_uniform(&rr) - 1;
	run a = run_op(p, x, n, dout, prior, LMK_PATH_NAIVE, 0, 1);
	run b = run_op(p, x, n, dout, prior, LMK_PATH_BLOCKWISE, block, 1);
	double e = rel_err(b.out, a.out, no);
	*wf = fmax(*wf, e);
	ck_assert_msg(e <= tol, "T %lld block %d fox %d: forward differs by %g", (long long)p->T,
		      block, p->fox, e);
	for (int i = 0; i < 6; i++) {
		if (!a.grad[i])
			continue;
		e = rel_err(b.grad[i], a.grad[i], n[i]);
		*wg = fmax(*wg, e);
		ck_assert_msg(e <= tol, "B %lld T %lld H %lld K %lld D %lld block %d fox %d: "
			      "gradient of %s differs by %g", (long long)p->B, (long long)p->T,
			      (long long)p->H, (long long)p->K, (long long)p->D, block, p->fox,
			      names[i], e);
	}
	free_run(&a);
	free_run(&b);
	free(dout);
	free_inputs(x);
	free_inputs(prior);
}

START_TEST(test_naive_equals_blockwise)
{
	static const int64_t Ts[] = {1, 2, 7, 63, 64, 65, 130};
	static const int blocks[] = {16, 64, 7, 1};
	double wf = 0, wg = 0;
	int count = 0;
	for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++)
		for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++)
			for (int fox = 0; fox < 2; fox++) {
				if (blocks[bi] == 1 && Ts[t] > 65)
					continue;
				pcase p = {2, Ts[t], 4, 2, 8, fox};
				if (t % 2)
					p = (pcase){1, Ts[t], 3, 1, 13, fox};
				compare_algos(&p, blocks[bi], 3e-5, &wf, &wg);
				count++;
			}
	printf("test_path: naive vs blockwise, %d cases: worst forward %.1e, gradients %.1e\n",
	       count, wf, wg);
}
END_TEST

START_TEST(test_long)
{
	double wf = 0, wg = 0;
	pcase p = {1, 1000, 2, 1, 16, 1};
	compare_algos(&p, 64, 1e-4, &wf, &wg);
	p.fox = 0;
	p.D = 32;
	compare_algos(&p, 0, 1e-4, &wf, &wg);
	printf("test_path: T 1000: worst forward %.1e, gradients %.1e\n", wf, wg);
}
END_TEST

/* beta = 0: every H_t is I, and PaTH is softmax attention. */
START_TEST(test_beta0_is_attention)
{
	static const int64_t Ts[] = {1, 7, 65, 130};
	for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++)
		for (int algo = LMK_PATH_NAIVE; algo <= LMK_PATH_BLOCKWISE; algo++) {
			pcase p = {2, Ts[t], 4, 2, 16, 0};
			float *x[6];
			int64_t n[6];
			make_inputs(&p, 17 + t, x, n);
			memset(x[4], 0, sizeof(float) * (size_t)n[4]);
			run r = run_op(&p, x, n, NULL, NULL, algo, 16, 0);
			lmk_ctx c;
			ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
			int64_t sq[4] = {p.B, p.T, p.H, p.D}, sk[4] = {p.B, p.T, p.K, p.D};
			lmk_tensor *q = lmk_tensor_wrap(&c, LMK_F32, 4, sq, x[0]);
			lmk_tensor *k = lmk_tensor_wrap(&c, LMK_F32, 4, sk, x[1]);
			lmk_tensor *v = lmk_tensor_wrap(&c, LMK_F32, 4, sk, x[2]);
			lmk_tensor *y = lmk_attention(&c, q, k, v, NULL, 0.37f);
			ck_assert_ptr_nonnull(y);
			double e = rel_err(r.out, y->data, y->n);
			ck_assert_msg(e < 1e-5, "T %lld algo %d: beta 0 differs from attention by %g",
				      (long long)p.T, algo, e);
			lmk_ctx_free(&c);
			free_run(&r);
			free_inputs(x);
		}
}
END_TEST

/* The decoder, token by token, against the parallel op's rows. */
START_TEST(test_decode)
{
	for (int fox = 0; fox < 2; fox++) {
		pcase p = {2, 37, 4, 2, 8, fox};
		float *x[6];
		int64_t n[6];
		make_inputs(&p, 99 + fox, x, n);
		run r = run_op(&p, x, n, NULL, NULL, LMK_PATH_NAIVE, 0, 0);
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		c.grad_enabled = 0;
		lmk_path_cache pc;
		ck_assert_int_eq(lmk_path_cache_init(&pc, &c, p.B, p.T, p.H, p.K, p.D, fox), 0);
		int64_t B = p.B, T = p.T, H = p.H, K = p.K, D = p.D;
		float *qs = malloc(sizeof(float) * (size_t)(B * H * D)), *ks[3];
		for (int i = 0; i < 3; i++)
			ks[i] = malloc(sizeof(float) * (size_t)(B * K * D));
		float *bs = malloc(sizeof(float) * (size_t)(B * K)), *fs = malloc(sizeof(float) * (size_t)(B * H));
		double worst = 0;
		for (int64_t t = 0; t < T; t++) {
			for (int64_t b = 0; b < B; b++) {
				memcpy(qs + b * H * D, x[0] + (b * T + t) * H * D, sizeof(float) * (size_t)(H * D));
				for (int i = 0; i < 3; i++)
					memcpy(ks[i] + b * K * D, x[i + 1] + (b * T + t) * K * D,
					       sizeof(float) * (size_t)(K * D));
				memcpy(bs + b * K, x[4] + (b * T + t) * K, sizeof(float) * (size_t)K);
				memcpy(fs + b * H, x[5] + (b * T + t) * H, sizeof(float) * (size_t)H);
			}
			lmk_tensor *q = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){B, 1, H, D}, qs);
			lmk_tensor *tk[3];
			for (int i = 0; i < 3; i++)
				tk[i] = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){B, 1, K, D}, ks[i]);
			lmk_tensor *tb = lmk_tensor_wrap(&c, LMK_F32, 3, (int64_t[]){B, 1, K}, bs);
			lmk_tensor *tf = fox ? lmk_tensor_wrap(&c, LMK_F32, 3, (int64_t[]){B, 1, H}, fs) : NULL;
			lmk_tensor *y = lmk_path_decode(&c, &pc, q, tk[0], tk[1], tk[2], tb, tf, 0.37f);
			ck_assert_msg(y != NULL, "decode at %lld: %s", (long long)t, lmk_errmsg());
			for (int64_t b = 0; b < B; b++) {
				double e = rel_err((float *)y->data + b * H * D,
						   r.out + (b * T + t) * H * D, H * D);
				worst = fmax(worst, e);
				ck_assert_msg(e < 1e-5, "fox %d: token %lld of row %lld differs by %g",
					      fox, (long long)t, (long long)b, e);
			}
			lmk_ctx_reset(&c);
		}
		/* full */
		lmk_tensor *q = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){B, 1, H, D}, qs);
		lmk_tensor *tk = lmk_tensor_wrap(&c, LMK_F32, 4, (int64_t[]){B, 1, K, D}, ks[0]);
		lmk_tensor *tb = lmk_tensor_wrap(&c, LMK_F32, 3, (int64_t[]){B, 1, K}, bs);
		lmk_tensor *tf = fox ? lmk_tensor_wrap(&c, LMK_F32, 3, (int64_t[]){B, 1, H}, fs) : NULL;
		ck_assert_ptr_null(lmk_path_decode(&c, &pc, q, tk, tk, tk, tb, tf, 0.37f));
		ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "full"));
		printf("test_path: decode fox %d: worst row error %.1e\n", fox, worst);
		lmk_path_cache_free(&pc);
		lmk_ctx_free(&c);
		free(qs);
		for (int i = 0; i < 3; i++)
			free(ks[i]);
		free(bs);
		free(fs);
		free_run(&r);
		free_inputs(x);
	}
}
END_TEST

START_TEST(test_threads)
{
	pcase p = {2, 100, 4, 2, 16, 1};
	float *x[6];
	int64_t n[6];
	make_inputs(&p, 3, x, n);
	int64_t no = p.B * p.T * p.H * p.D;
	float *dout = malloc(sizeof(float) * (size_t)no);
	for (int64_t e = 0; e < no; e++)
		dout[e] = (float)sin((double)e);
	int keep = omp_get_max_threads();
	omp_set_num_threads(1);
	run a = run_op(&p, x, n, dout, NULL, LMK_PATH_BLOCKWISE, 16, 1);
	omp_set_num_threads(3);
	run b = run_op(&p, x, n, dout, NULL, LMK_PATH_BLOCKWISE, 16, 1);
	omp_set_num_threads(keep);
	ck_assert_int_eq(memcmp(a.out, b.out, sizeof(float) * (size_t)no), 0);
	for (int i = 0; i < 6; i++)
		ck_assert_msg(memcmp(a.grad[i], b.grad[i], sizeof(float) * (size_t)n[i]) == 0,
			      "gradient of %s depends on the thread count", names[i]);
	free_run(&a);
	free_run(&b);
	free(dout);
	free_inputs(x);
}
END_TEST

/* Any subset of the inputs may want a gradient: each subset's gradients
 * are the full run's. */
START_TEST(test_subsets)
{
	static const unsigned masks[] = {1u << 0, 1u << 1, 1u << 2, 1u << 3, 1u << 4, 1u << 5,
					 (1u << 3) | (1u << 5), (1u << 0) | (1u << 2)};
	for (int algo = LMK_PATH_NAIVE; algo <= LMK_PATH_BLOCKWISE; algo++) {
		pcase p = {1, 70, 4, 2, 8, 1};
		float *x[6];
		int64_t n[6];
		make_inputs(&p, 21, x, n);
		int64_t no = p.B * p.T * p.H * p.D;
		float *dout = malloc(sizeof(float) * (size_t)no);
		for (int64_t e = 0; e < no; e++)
			dout[e] = (float)cos((double)e);
		g_mask = 0x3f;
		run full = run_op(&p, x, n, dout, NULL, algo, 16, 1);
		for (size_t mi = 0; mi < sizeof masks / sizeof masks[0]; mi++) {
			g_mask = masks[mi];
			run r = run_op(&p, x, n, dout, NULL, algo, 16, 1);
			for (int i = 0; i < 6; i++) {
				ck_assert_int_eq(r.grad[i] != NULL, (int)((masks[mi] >> i) & 1));
				if (r.grad[i])
					ck_assert_msg(rel_err(r.grad[i], full.grad[i], n[i]) == 0,
						      "algo %d: gradient of %s alone differs", algo,
						      names[i]);
			}
			free_run(&r);
		}
		g_mask = 0x3f;
		free_run(&full);
		free(dout);
		free_inputs(x);
	}
}
END_TEST

START_TEST(test_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *q = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 3, 4}, 0);
	lmk_tensor *k = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 2, 4}, 0);
	lmk_tensor *k1 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 5, 1, 4}, 0);
	lmk_tensor *b1 = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 5, 1}, 0);
	lmk_tensor *b2 = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 5, 2}, 0);
	ck_assert_ptr_null(lmk_path_attention(&c, q, k, k, k, b2, NULL, 1, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "H a multiple of K"));
	ck_assert_ptr_null(lmk_path_attention(&c, q, k1, k1, k1, b2, NULL, 1, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "beta (1,5,2)"));
	ck_assert_ptr_null(lmk_path_attention(&c, q, k1, k1, k1, b1, b1, 1, NULL));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "logf (1,5,1)"));
	ck_assert_ptr_null(lmk_path_attention(&c, q, k1, k1, k1, b1, NULL, NAN, NULL));
	ck_assert_ptr_null(lmk_path_attention(&c, q, k1, k1, k1, b1, NULL, 1,
					      &(lmk_path_opts){-1, 0}));
	ck_assert_ptr_null(lmk_path_attention(&c, q, NULL, k1, k1, b1, NULL, 1, NULL));
	/* T = 0 */
	lmk_tensor *q0 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 0, 3, 4}, 1);
	lmk_tensor *k0 = lmk_tensor_new(&c, LMK_F32, 4, (int64_t[]){1, 0, 1, 4}, 0);
	lmk_tensor *bb0 = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 0, 1}, 0);
	lmk_tensor *y = lmk_path_attention(&c, q0, k0, k0, k0, bb0, NULL, 1, NULL);
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(lmk_backward_from(&c, y, NULL), 0);
	lmk_path_cache pc;
	ck_assert_int_eq(lmk_path_cache_init(&pc, &c, 1, 4, 3, 2, 4, 0), LMK_EINVAL);
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("path");
	TCase *tc = tcase_create("path");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_finite_differences);
	tcase_add_test(tc, test_naive_equals_blockwise);
	tcase_add_test(tc, test_long);
	tcase_add_test(tc, test_beta0_is_attention);
	tcase_add_test(tc, test_decode);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_subsets);
	tcase_add_test(tc, test_errors);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
