/* test_cuda_gemv.c: the linear op's forward for few rows on the GPU
 * (cuda/gemv.cu, through lmk_cuda_linear_forward, which sends products of
 * at most LMK_GEMV_MAX_ROWS rows there) against a double-precision
 * reference of the same inputs.
 *
 * Rows 1..8 (and 9 and 16, cuBLASLt's side of the switch), input and output
 * widths off every multiple of 8 and 32 as well as the decoders' own (576,
 * 2048), with and without a bias, pointers 16-byte aligned and off by one
 * element (the one-element path). Random inputs (fixed seed), in BF16 the
 * reference gets the bf16-rounded values the GPU reads; the output is
 * poisoned (0xFF: NaN) before the call and followed by sentinel bytes that
 * must survive (the buffers are pieces of one allocation). Error ||gpu - ref|| / ||ref|| at most 1e-5 in F32 and 1e-2
 * in BF16 (the output's rounding), NaN never passes; two runs give the
 * same bits. The fused forms of a recorded decoding step: three products
 * of one input in a launch, two of them with a residual added
 * (lmk_cuda_gemv_multi), and the gate and up products with SwiGLU applied
 * (lmk_cuda_gemv_swiglu), each with and without the rmsnorm of its input
 * in front, against the same reference with the roundings of the separate
 * ops (the normalised input, each product before its residual or SwiGLU).
 *
 * Exits 77 without a device or in a CPU-only build. Runs without fork: a
 * child forked after CUDA is initialised cannot use the device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "rng.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/gemv_cuda.h"
#include "../cuda/ops_cuda.h"

#define GUARD 64 /* sentinel bytes after the output */

static const int rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16};
#define NROWS ((int)(sizeof rows / sizeof rows[0]))

static const struct { int ic, oc; } dims[] = {
	{1, 1}, {7, 5}, {8, 3}, {33, 17}, {64, 31}, {100, 257}, {576, 576},
	{576, 192}, {1536, 576}, {2048, 1000}, {260, 2049},
};
#define NDIMS ((int)(sizeof dims / sizeof dims[0]))

static void *g_be;

/* Device memory of a check: one buffer handed out in 256-byte aligned
 * pieces, emptied at the start of each check (a cudaMalloc and cudaFree
 * per buffer made the suite slow) */
#define POOL_BYTES ((size_t)256 << 20)
static char *g_pool;
static size_t g_pool_used;

static void *pool_alloc(size_t bytes)
{
	size_t at = (g_pool_used + 255) & ~(size_t)255;
	ck_assert_msg(at + bytes <= POOL_BYTES, "test pool: %zu bytes more than it holds", bytes);
	g_pool_used = at + bytes;
	return g_pool + at;
}

/* n values of dtype dt at dev + off elements from host floats, which are
 * rounded in place to what the device holds */
static void put(void *dev, lmk_dtype dt, float *host, size_t n)
{
	const size_t es = lmk_dtype_size(dt);
	void *tmp = malloc(n * es);
	ck_assert_ptr_nonnull(tmp);
	ck_assert_int_eq(lmk_dtype_from_f32(dt, host, tmp, n), 0);
	lmk_dtype_to_f32(dt, tmp, host, n);
	ck_assert_int_eq(lmk_cuda_upload(g_be, dev, tmp, n * es), 0);
	free(tmp);
}

/* One product; off (0 or 1) shifts every pointer by that many elements.
 * out_bits, if given, receives the raw output (for the determinism check). */
static void check_one(lmk_dtype dt, int N, int IC, int OC, int bias, int off, void *out_bits)
{
	const size_t es = lmk_dtype_size(dt), ni = (size_t)N * IC, nw = (size_t)OC * IC,
		     no = (size_t)N * OC;
	float *x = malloc(ni * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(OC * sizeof *b);
	float *got = malloc(no * sizeof *got);
	unsigned char *raw = malloc(no * es + GUARD);
	ck_assert(x && w && b && got && raw);
	lmk_rng r;
	lmk_rng_init(&r, 1000u * (unsigned)N + 7u * (unsigned)IC + (unsigned)OC);
	for (size_t i = 0; i < ni; i++)
		x[i] = 2.0f * lmk_rng_uniform(&r) - 1.0f;
	for (size_t i = 0; i < nw; i++)
		w[i] = (2.0f * lmk_rng_uniform(&r) - 1.0f) / sqrtf((float)IC);
	for (int i = 0; i < OC; i++)
		b[i] = 2.0f * lmk_rng_uniform(&r) - 1.0f;

	g_pool_used = 0;
	char *dx = pool_alloc((ni + 1) * es), *dw = pool_alloc((nw + 1) * es);
	char *db = pool_alloc((OC + 1) * es), *dout = pool_alloc((no + 1) * es + GUARD);
	put(dx + off * es, dt, x, ni);
	put(dw + off * es, dt, w, nw);
	put(db + off * es, dt, b, (size_t)OC);
	ck_assert_int_eq(lmk_cuda_memset(g_be, dout, 0xFF, (no + 1) * es + GUARD), 0);
	int rc = lmk_cuda_linear_forward(g_be, dt, dout + off * es, dx + off * es, dw + off * es,
					 bias ? db + off * es : NULL, N, IC, OC);
	ck_assert_msg(rc == 0, "N %d IC %d OC %d: %s", N, IC, OC, lmk_errmsg());
	ck_assert_int_eq(lmk_cuda_download(g_be, raw, dout + off * es, no * es + GUARD), 0);
	for (int i = 0; i < GUARD; i++)
		ck_assert_msg(raw[no * es + i] == 0xFF, "%s N %d IC %d OC %d: wrote past the output",
			      lmk_dtype_name(dt), N, IC, OC);
	lmk_dtype_to_f32(dt, raw, got, no);

	double num = 0, den = 0;
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double s = bias ? b[o] : 0.0;
			for (int i = 0; i < IC; i++)
				s += (double)x[(size_t)n * IC + i] * w[(size_t)o * IC + i];
			double g = got[(size_t)n * OC + o];
			ck_assert_msg(isfinite(g), "%s N %d IC %d OC %d: out[%d,%d] is %g",
				      lmk_dtype_name(dt), N, IC, OC, n, o, g);
			num += (g - s) * (g - s);
			den += s * s;
		}
	double err = sqrt(num / (den > 0 ? den : 1)), tol = dt == LMK_BF16 ? 1e-2 : 1e-5;
	ck_assert_msg(err <= tol, "%s N %d IC %d OC %d bias %d off %d: error %.3g (%.0e allowed)",
		      lmk_dtype_name(dt), N, IC, OC, bias, off, err, tol);
	if (out_bits)
		memcpy(out_bits, raw, no * es);
	free(x);
	free(w);
	free(b);
	free(got);
	free(raw);
}

static void check_dims(lmk_dtype dt, int d)
{
	for (int i = 0; i < NROWS; i++)
		for (int bias = 0; bias < 2; bias++)
			for (int off = 0; off < 2; off++)
				check_one(dt, rows[i], dims[d].ic, dims[d].oc, bias, off, NULL);
}

START_TEST(test_gemv_f32) { check_dims(LMK_F32, _i); }
END_TEST

START_TEST(test_gemv_bf16) { check_dims(LMK_BF16, _i); }
END_TEST

/* n random values in [-scale, scale) on the device (rounded to dt, the
 * rounded values in *host, malloc'd), at off elements into the buffer */
static void *rand_dev(lmk_dtype dt, size_t n, float scale, lmk_rng *r, int off, float **host)
{
	float *h = malloc((n + 1) * sizeof *h);
	ck_assert_ptr_nonnull(h);
	for (size_t i = 0; i < n; i++)
		h[i] = scale * (2.0f * lmk_rng_uniform(r) - 1.0f);
	char *d = pool_alloc((n + 1) * lmk_dtype_size(dt));
	put(d + off * lmk_dtype_size(dt), dt, h, n);
	*host = h;
	return d + off * lmk_dtype_size(dt);
}

/* n outputs of dtype dt from the device, each finite, against ref */
static void compare(lmk_dtype dt, const void *dout, const double *ref, size_t n, const char *what)
{
	const size_t es = lmk_dtype_size(dt);
	void *raw = malloc(n * es);
	float *got = malloc(n * sizeof *got);
	ck_assert(raw && got);
	ck_assert_int_eq(lmk_cuda_download(g_be, raw, dout, n * es), 0);
	lmk_dtype_to_f32(dt, raw, got, n);
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(isfinite(got[i]), "%s: out[%zu] is %g", what, i, got[i]);
		num += (got[i] - ref[i]) * (got[i] - ref[i]);
		den += ref[i] * ref[i];
	}
	double err = sqrt(num / (den > 0 ? den : 1)), tol = dt == LMK_BF16 ? 1e-2 : 1e-5;
	ck_assert_msg(err <= tol, "%s: error %.3g (%.0e allowed)", what, err, tol);
	free(raw);
	free(got);
}

/* v rounded to dt, as the device rounds an op's output (the fused forms
 * round where the separate ops would: the normalised input, each product
 * before a residual or the activation) */
static double rnd(lmk_dtype dt, double v)
{
	float f = (float)v, r;
	uint16_t b;
	if (dt != LMK_BF16)
		return v;
	ck_assert_int_eq(lmk_dtype_from_f32(dt, &f, &b, 1), 0);
	lmk_dtype_to_f32(dt, &b, &r, 1);
	return r;
}

/* x (N,IC) after rmsnorm with weight nw (NULL: x itself), in double, each
 * normalised element rounded to dt */
static double *normed(lmk_dtype dt, const float *x, const float *nw, int N, int IC, float eps)
{
	double *h = malloc(sizeof(double) * (size_t)N * IC);
	ck_assert_ptr_nonnull(h);
	for (int n = 0; n < N; n++) {
		double ss = 0;
		for (int i = 0; i < IC; i++)
			ss += (double)x[(size_t)n * IC + i] * x[(size_t)n * IC + i];
		double r = nw ? 1.0 / sqrt(ss / IC + eps) : 1.0;
		for (int i = 0; i < IC; i++)
			h[(size_t)n * IC + i] =
				nw ? rnd(dt, x[(size_t)n * IC + i] * r * nw[i]) : x[(size_t)n * IC + i];
	}
	return h;
}

/* h (N,IC) . w row o (OC,IC) in double */
static double dotd(const double *h, const float *w, int n, int o, int IC)
{
	double s = 0;
	for (int i = 0; i < IC; i++)
		s += h[(size_t)n * IC + i] * w[(size_t)o * IC + i];
	return s;
}

static void check_fused(lmk_dtype dt, int d)
{
	const int IC = dims[d].ic, OC = dims[d].oc;
	const int oc[3] = {OC, OC + 3, 1};
	const float eps = 1e-5f;
	for (int N = 1; N <= LMK_GEMV_MAX_ROWS; N++) {
		for (int v = 0; v < 4; v++) {
			const int off = v & 1, norm = v >> 1;
			char what[96];
			snprintf(what, sizeof what, "%s N %d IC %d OC %d off %d norm %d",
				 lmk_dtype_name(dt), N, IC, OC, off, norm);
			lmk_rng r;
			lmk_rng_init(&r, 77u * (unsigned)N + (unsigned)IC + 13u * (unsigned)OC);
			g_pool_used = 0;
			float *x, *w[3], *b0, *res[3] = {NULL, NULL, NULL}, *ign, *nw = NULL;
			void *dx = rand_dev(dt, (size_t)N * IC, 1.0f, &r, off, &x);
			void *dn = norm ? rand_dev(dt, (size_t)IC, 1.0f, &r, off, &nw) : NULL;
			double *h = normed(dt, x, nw, N, IC, eps);
			lmk_gemv_out o[3];
			for (int i = 0; i < 3; i++) {
				o[i].w = rand_dev(dt, (size_t)oc[i] * IC, 1.0f / sqrtf((float)IC), &r,
						  off, &w[i]);
				o[i].b = i == 0 ? rand_dev(dt, (size_t)oc[i], 1.0f, &r, off, &b0) : NULL;
				o[i].res = i > 0 ? rand_dev(dt, (size_t)N * oc[i], 1.0f, &r, off, &res[i])
						 : NULL;
				o[i].out = rand_dev(dt, (size_t)N * oc[i], 1.0f, &r, off, &ign);
				free(ign);
				o[i].oc = oc[i];
			}
			ck_assert_msg(lmk_cuda_gemv_multi(g_be, dt, dx, dn, eps, N, IC, o, 3) == 0,
				      "%s: %s", what, lmk_errmsg());
			for (int i = 0; i < 3; i++) {
				double *ref = malloc(sizeof(double) * (size_t)N * oc[i]);
				ck_assert_ptr_nonnull(ref);
				for (int n = 0; n < N; n++)
					for (int c = 0; c < oc[i]; c++)
						ref[(size_t)n * oc[i] + c] =
							i == 0 ? dotd(h, w[i], n, c, IC) + b0[c]
							       : rnd(dt, dotd(h, w[i], n, c, IC)) +
									 res[i][(size_t)n * oc[i] + c];
				char wi[128];
				snprintf(wi, sizeof wi, "%s: multi, product %d", what, i);
				compare(dt, o[i].out, ref, (size_t)N * oc[i], wi);
				free(ref);
			}
			/* swiglu of products 0 (with its bias) and 1 over the first OC */
			ck_assert_msg(lmk_cuda_gemv_swiglu(g_be, dt, o[1].out, dx, dn, eps, o[0].w,
							   o[0].b, o[1].w, NULL, N, IC, OC) == 0,
				      "%s: %s", what, lmk_errmsg());
			double *ref = malloc(sizeof(double) * (size_t)N * OC);
			ck_assert_ptr_nonnull(ref);
			for (int n = 0; n < N; n++)
				for (int c = 0; c < OC; c++) {
					double g = rnd(dt, dotd(h, w[0], n, c, IC) + b0[c]);
					double u = rnd(dt, dotd(h, w[1], n, c, IC));
					ref[(size_t)n * OC + c] = g / (1.0 + exp(-g)) * u;
				}
			char ws[128];
			snprintf(ws, sizeof ws, "%s: swiglu", what);
			/* its output has OC columns: o[1].out read as (N,OC) */
			compare(dt, o[1].out, ref, (size_t)N * OC, ws);
			free(ref);
			free(x);
			free(nw);
			free(h);
			for (int i = 0; i < 3; i++) {
				free(w[i]);
				free(res[i]);
			}
			free(b0);
		}
	}
}

START_TEST(test_fused_f32) { check_fused(LMK_F32, _i); }
END_TEST

START_TEST(test_fused_bf16) { check_fused(LMK_BF16, _i); }
END_TEST

/* The same product twice: the same bits. */
START_TEST(test_deterministic)
{
	const int N = 3, IC = 2048, OC = 1000;
	uint16_t *a = malloc((size_t)N * OC * 2), *b = malloc((size_t)N * OC * 2);
	ck_assert(a && b);
	check_one(LMK_BF16, N, IC, OC, 1, 0, a);
	check_one(LMK_BF16, N, IC, OC, 1, 0, b);
	ck_assert(memcmp(a, b, (size_t)N * OC * 2) == 0);
	free(a);
	free(b);
}
END_TEST

/* Row counts outside 1..LMK_GEMV_MAX_ROWS are refused by the kernel's entry. */
START_TEST(test_refuses)
{
	ck_assert_int_eq(lmk_cuda_gemv(g_be, LMK_BF16, NULL, NULL, NULL, NULL, 0, 8, 8), LMK_EINVAL);
	ck_assert_int_eq(lmk_cuda_gemv(g_be, LMK_BF16, NULL, NULL, NULL, NULL,
				       LMK_GEMV_MAX_ROWS + 1, 8, 8), LMK_EINVAL);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_gemv: skipped: no CUDA device on this machine\n");
		return 77;
	}
	if (lmk_cuda_init(&g_be, 0) < 0 || lmk_cuda_mem_alloc((void **)&g_pool, POOL_BYTES) < 0) {
		printf("test_cuda_gemv: %s\n", lmk_errmsg());
		return 1;
	}
	Suite *su = suite_create("cuda_gemv");
	TCase *tc = tcase_create("gemv");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_gemv_f32, 0, NDIMS);
	tcase_add_loop_test(tc, test_gemv_bf16, 0, NDIMS);
	tcase_add_loop_test(tc, test_fused_f32, 0, NDIMS);
	tcase_add_loop_test(tc, test_fused_bf16, 0, NDIMS);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_refuses);
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	/* CUDA is initialised in this process: a forked child cannot use it */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	lmk_cuda_mem_free(g_pool);
	lmk_cuda_free(g_be);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda_gemv: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
