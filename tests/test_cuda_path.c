/* test_cuda_path.c: PaTH attention (lib/path.h) on the GPU against the CPU's
 * blockwise kernels (the same algorithm, so the error measured is the GPU
 * kernels'), forward and the six gradients, and the GPU decoder against the
 * CPU's parallel rows.
 *
 * Shape table: T = 1, 7, 63, 64, 65, 130, 192, 256, 1000; D = 64 and 128
 * (and one D = 40); GQA and not; logf or none; blocks 64, 16 and 7; B*H
 * up to 256; F32, BF16 (the
 * forward's products on the tensor cores) and BF16 with every product in
 * float32 (LMK_PATH_BLOCKWISE_FP32), so a tensor-core fault shows apart.
 * Inputs random each run (the seed is printed; LMK_TEST_SEED repeats it),
 * w unit rows, beta in (0.05, 1.95), logf = log(f) with f in (0.5, 1). The
 * GPU context poisons every allocation (NaN where a kernel forgets to
 * write) and allocates each buffer separately (compute-sanitizer sees each
 * end). Input gradients start from random values, so a backward that
 * assigns instead of adding fails. In BF16 the CPU gets the same rounded
 * inputs. Errors are ||gpu - cpu|| / ||cpu||, NaN first: F32 forward 1e-5,
 * gradients 5e-5 (the backward's chains of products over many blocks add
 * rounding that the forward does not have); BF16 1e-2, but 2e-2 for dw,
 * dbeta and dlogf, which collect the whole walk's bf16 products (fla's own
 * test allows 0.015 and 0.02 there). Every case prints its worst errors on
 * one line, failures included, before the checks.
 * LMK_TEST_SMALL=1 (for compute-sanitizer) keeps six shapes (each kernel
 * family: see the table), decodes 9 tokens instead of 37 and skips the
 * determinism checks.
 * Exits 77 without a device or in a CPU-only build; runs without fork. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "err.h"
#include "path.h"
#include "rng.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

static uint64_t g_seed;
static const char *const names[7] = {"out", "dq", "dk", "dv", "dw", "dbeta", "dlogf"};

static int g_small; /* LMK_TEST_SMALL */

typedef struct pcase {
	int64_t B, T, H, K, D;
	int fox, block;
	int small; /* kept under LMK_TEST_SMALL */
} pcase;

/* Under LMK_TEST_SMALL: T 1 at D 128 (GQA), T 65 (a ragged second block)
 * at D 64 without logf and at D 128 with it (the mma kernels in BF16),
 * blocks 16 (wmma in BF16) and 7, and D 40 (the general kernels). */
static const pcase cases[] = {
	{1, 1, 1, 1, 64, 0, 64, 0},    {1, 1, 4, 2, 128, 1, 64, 1},
	{2, 7, 4, 2, 64, 1, 64, 0},    {1, 7, 2, 2, 128, 0, 64, 0},
	{1, 63, 4, 1, 64, 1, 64, 0},   {2, 64, 2, 2, 128, 1, 64, 0},
	{1, 65, 4, 2, 64, 0, 64, 1},   {1, 65, 2, 1, 128, 1, 64, 1},
	{1, 130, 2, 1, 64, 1, 16, 1},  {1, 130, 2, 2, 64, 0, 7, 1},
	{2, 33, 3, 1, 40, 1, 64, 1},   {1, 1000, 2, 1, 64, 1, 64, 0},
	{1, 1000, 2, 2, 128, 0, 64, 0},
	/* many heads, T a multiple of the block (every block full, walks
	 * over several blocks): lla-train's path-fox layer at hidden 256,
	 * batch 32, seq 256, and path_gpu's first shape (B16 H16) at
	 * T 192; both stopped with an illegal address on an H200 from a
	 * stale cuda/path.o, these cases run them in the suite */
	{32, 256, 4, 4, 64, 1, 64, 0}, {16, 192, 16, 16, 64, 0, 64, 0},
	{2, 192, 4, 2, 64, 1, 64, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static void round_bf16(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lmk_bf16_to_f32(lmk_f32_to_bf16(x[i]));
}

/* x[0..5] = q, k, v, w, beta, logf. */
static void make_inputs(const pcase *p, lmk_rng *r, float **x, int64_t *n, int bf)
{
	int64_t B = p->B, T = p->T, H = p->H, K = p->K, D = p->D;
	n[0] = B * T * H * D;
	n[1] = n[2] = n[3] = B * T * K * D;
	n[4] = B * T * K;
	n[5] = B * T * H;
	for (int i = 0; i < 6; i++) {
		x[i] = malloc(sizeof(float) * (size_t)n[i]);
		for (int64_t e = 0; e < n[i]; e++)
			x[i][e] = 2 * lmk_rng_uniform(r) - 1;
	}
	for (int64_t e = 0; e < n[3]; e += D) {
		double s = 0;
		for (int64_t d = 0; d < D; d++)
			s += (double)x[3][e + d] * x[3][e + d];
		for (int64_t d = 0; d < D; d++)
			x[3][e + d] = (float)(x[3][e + d] / sqrt(s));
	}
	for (int64_t e = 0; e < n[4]; e++)
		x[4][e] = 0.05f + 1.9f * lmk_rng_uniform(r);
	for (int64_t e = 0; e < n[5]; e++)
		x[5][e] = logf(0.5f + 0.5f * lmk_rng_uniform(r));
	if (bf)
		for (int i = 0; i < 6; i++)
			round_bf16(x[i], n[i]);
}

/* NaN or inf anywhere: inf; else ||a - b|| / ||b||. */
static double compare(const float *gpu, const float *cpu, int64_t n)
{
	double e2 = 0, r2 = 0;
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(gpu[i]) || !isfinite(cpu[i]))
			return INFINITY;
		double d = (double)gpu[i] - cpu[i];
		e2 += d * d;
		r2 += (double)cpu[i] * cpu[i];
	}
	return r2 > 1e-30 ? sqrt(e2 / r2) : sqrt(e2);
}

/* Forward and backward of one device; res[0] the output, res[1..6] the
 * gradients (including the priors). */
static int run_dev(lmk_device dev, lmk_dtype dt, int algo, const pcase *p, float **x,
		   const int64_t *n, float **prior, const float *dout, float **res)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init_ex(&c, dev, 0, dt), 0);
	if (dev == LMK_DEV_CUDA) {
		c.arena.chunk = 1;
		c.arena.poison = 1;
	}
	int64_t sq[4] = {p->B, p->T, p->H, p->D}, sk[4] = {p->B, p->T, p->K, p->D};
	int64_t sb[3] = {p->B, p->T, p->K}, sf[3] = {p->B, p->T, p->H};
	const int64_t *shp[6] = {sq, sk, sk, sk, sb, sf};
	int nd[6] = {4, 4, 4, 4, 3, 3};
	lmk_tensor *t[6] = {0};
	for (int i = 0; i < 6; i++) {
		if (i == 5 && !p->fox)
			continue;
		t[i] = lmk_tensor_new(&c, dt, nd[i], shp[i], 1);
		ck_assert_ptr_nonnull(t[i]);
		ck_assert_int_eq(lmk_tensor_write_f32(&c, t[i], 0, x[i]), 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&c, t[i], 1, prior[i]), 0);
	}
	lmk_path_opts o = {p->block, algo};
	lmk_tensor *y = lmk_path_attention(&c, t[0], t[1], t[2], t[3], t[4], t[5],
					   1.0f / sqrtf((float)p->D), &o);
	if (!y) {
		printf("test_cuda_path: the op failed: %s\n", lmk_errmsg());
		lmk_ctx_free(&c);
		return -1;
	}
	ck_assert_int_eq(lmk_tensor_read_f32(&c, y, 0, res[0]), 0);
	const float *dg = dout;
	lmk_tensor *dgt = NULL;
	if (dev == LMK_DEV_CUDA) {
		dgt = lmk_tensor_upload(&c, LMK_F32, 1, (int64_t[]){y->n}, dout);
		ck_assert_ptr_nonnull(dgt);
		dg = dgt->data;
	}
	if (lmk_backward_from(&c, y, dg) < 0 || lmk_ctx_sync(&c) < 0) {
		printf("test_cuda_path: the backward failed: %s\n", lmk_errmsg());
		lmk_ctx_free(&c);
		return -1;
	}
	for (int i = 0; i < 6; i++)
		if (t[i])
			ck_assert_int_eq(lmk_tensor_read_f32(&c, t[i], 1, res[i + 1]), 0);
	lmk_ctx_free(&c);
	return 0;
}

/* @return : 1 when the case failed (after printing its line) */
static int run_case(int ci, lmk_dtype dt, int algo, double *worst)
{
	const pcase *p = &cases[ci];
	const int bf = dt == LMK_BF16;
	lmk_rng r;
	lmk_rng_init(&r, g_seed * 1000003u + (uint64_t)ci * 2 + (uint64_t)bf);
	float *x[6], *prior[6], *cpu[7], *gpu[7];
	int64_t n[6], no = p->B * p->T * p->H * p->D;
	make_inputs(p, &r, x, n, bf);
	for (int i = 0; i < 6; i++) {
		prior[i] = malloc(sizeof(float) * (size_t)n[i]);
		for (int64_t e = 0; e < n[i]; e++)
			prior[i][e] = 0.02f * lmk_rng_uniform(&r) - 0.01f;
		if (bf)
			round_bf16(prior[i], n[i]);
	}
	float *dout = malloc(sizeof(float) * (size_t)no);
	for (int64_t e = 0; e < no; e++)
		dout[e] = 2 * lmk_rng_uniform(&r) - 1;
	if (bf)
		round_bf16(dout, no);
	for (int i = 0; i < 7; i++) {
		int64_t m = i == 0 ? no : n[i - 1];
		cpu[i] = calloc((size_t)m, sizeof(float));
		gpu[i] = calloc((size_t)m, sizeof(float));
	}
	ck_assert_int_eq(run_dev(LMK_DEV_CPU, LMK_F32, LMK_PATH_BLOCKWISE, p, x, n, prior, dout, cpu),
			 0);
	int ok = run_dev(LMK_DEV_CUDA, dt, algo, p, x, n, prior, dout, gpu) == 0;
	double e[7] = {0};
	char line[512];
	int k = snprintf(line, sizeof line, "test_cuda_path: %s%s B%lld T%lld H%lld K%lld D%lld fox%d "
			 "block%d:", lmk_dtype_name(dt), algo == LMK_PATH_BLOCKWISE_FP32 ? "/fp32" : "",
			 (long long)p->B, (long long)p->T,
			 (long long)p->H, (long long)p->K, (long long)p->D, p->fox, p->block);
	int bad = !ok;
	for (int i = 0; ok && i < 7; i++) {
		if (i == 6 && !p->fox)
			continue;
		int64_t m = i == 0 ? no : n[i - 1];
		e[i] = compare(gpu[i], cpu[i], m);
		double tol = bf ? (i >= 4 ? 2e-2 : 1e-2) : i == 0 ? 1e-5 : 5e-5;
		if (!(e[i] <= tol))
			bad = 1;
		if (e[i] > worst[i])
			worst[i] = e[i];
		k += snprintf(line + k, sizeof line - (size_t)k, " %s %.1e%s", names[i], e[i],
			      e[i] <= tol ? "" : " (FAIL)");
	}
	printf("%s%s\n", line, ok ? "" : " failed to run");
	fflush(stdout);
	for (int i = 0; i < 7; i++) {
		free(cpu[i]);
		free(gpu[i]);
	}
	for (int i = 0; i < 6; i++) {
		free(x[i]);
		free(prior[i]);
	}
	free(dout);
	return bad;
}

/* _i: 0 F32, 1 BF16 (tensor cores in the forward where D % 16 == 0),
 * 2 BF16 with every product in float32 (BLOCKWISE_FP32) */
START_TEST(test_op)
{
	lmk_dtype dt = _i ? LMK_BF16 : LMK_F32;
	int algo = _i == 2 ? LMK_PATH_BLOCKWISE_FP32 : LMK_PATH_BLOCKWISE;
	double worst[7] = {0};
	int bad = 0;
	for (int ci = 0; ci < NCASES; ci++)
		if (!g_small || cases[ci].small)
			bad += run_case(ci, dt, algo, worst);
	printf("test_cuda_path: %s%s worst:", lmk_dtype_name(dt), _i == 2 ? "/fp32" : "");
	for (int i = 0; i < 7; i++)
		printf(" %s %.1e", names[i], worst[i]);
	printf("\n");
	fflush(stdout);
	ck_assert_msg(!bad, "%s%s: %d of %d cases failed (their lines above; seed %llu)",
		      lmk_dtype_name(dt), _i == 2 ? "/fp32" : "", bad, NCASES,
		      (unsigned long long)g_seed);
}
END_TEST

/* Two runs give the same bits: _i 0 the general kernels (block 16), 1 the
 * mma kernels (BF16, block 64, D 64, FoX). */
START_TEST(test_deterministic)
{
	if (g_small) {
		printf("test_cuda_path: deterministic %d: skipped under LMK_TEST_SMALL\n", _i);
		return;
	}
	const pcase *p = &cases[_i ? 11 : 8];
	lmk_rng r;
	lmk_rng_init(&r, g_seed);
	float *x[6], *prior[6], *a[7], *b[7];
	int64_t n[6], no = p->B * p->T * p->H * p->D;
	make_inputs(p, &r, x, n, 1);
	for (int i = 0; i < 6; i++)
		prior[i] = calloc((size_t)n[i], sizeof(float));
	float *dout = malloc(sizeof(float) * (size_t)no);
	for (int64_t e = 0; e < no; e++)
		dout[e] = lmk_bf16_to_f32(lmk_f32_to_bf16(sinf((float)e)));
	for (int i = 0; i < 7; i++) {
		a[i] = calloc((size_t)(i ? n[i - 1] : no), sizeof(float));
		b[i] = calloc((size_t)(i ? n[i - 1] : no), sizeof(float));
	}
	ck_assert_int_eq(run_dev(LMK_DEV_CUDA, LMK_BF16, LMK_PATH_BLOCKWISE, p, x, n, prior, dout, a), 0);
	ck_assert_int_eq(run_dev(LMK_DEV_CUDA, LMK_BF16, LMK_PATH_BLOCKWISE, p, x, n, prior, dout, b), 0);
	for (int i = 0; i < 7; i++)
		ck_assert_msg(memcmp(a[i], b[i], sizeof(float) * (size_t)(i ? n[i - 1] : no)) == 0,
			      "%s differs between two identical runs", names[i]);
	for (int i = 0; i < 7; i++) {
		free(a[i]);
		free(b[i]);
	}
	for (int i = 0; i < 6; i++) {
		free(x[i]);
		free(prior[i]);
	}
	free(dout);
}
END_TEST

/* GPU decoding token by token against the CPU's parallel op (naive). */
START_TEST(test_decode)
{
	lmk_dtype dt = _i / 2 ? LMK_BF16 : LMK_F32;
	int fox = _i % 2;
	pcase p = {2, g_small ? 9 : 37, 4, 2, 64, fox, 64, 1}; /* T only a length */
	int64_t B = p.B, T = p.T, H = p.H, K = p.K, D = p.D;
	lmk_rng r;
	lmk_rng_init(&r, g_seed + 77 + (uint64_t)_i);
	float *x[6];
	int64_t n[6];
	make_inputs(&p, &r, x, n, dt == LMK_BF16);
	lmk_ctx cc;
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	cc.grad_enabled = 0;
	int64_t sq[4] = {B, T, H, D}, sk[4] = {B, T, K, D};
	lmk_tensor *ref = lmk_path_attention(
		&cc, lmk_tensor_wrap(&cc, LMK_F32, 4, sq, x[0]), lmk_tensor_wrap(&cc, LMK_F32, 4, sk, x[1]),
		lmk_tensor_wrap(&cc, LMK_F32, 4, sk, x[2]), lmk_tensor_wrap(&cc, LMK_F32, 4, sk, x[3]),
		lmk_tensor_wrap(&cc, LMK_F32, 3, (int64_t[]){B, T, K}, x[4]),
		fox ? lmk_tensor_wrap(&cc, LMK_F32, 3, (int64_t[]){B, T, H}, x[5]) : NULL, 0.125f,
		&(lmk_path_opts){0, LMK_PATH_NAIVE});
	ck_assert_ptr_nonnull(ref);
	const float *ro = ref->data;

	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
	gc.grad_enabled = 0;
	gc.arena.poison = 1;
	lmk_path_cache pc;
	ck_assert_int_eq(lmk_path_cache_init(&pc, &gc, B, T, H, K, D, fox), 0);
	float *buf = malloc(sizeof(float) * (size_t)(B * H * D)), *got = malloc(sizeof(float) * (size_t)(B * H * D));
	double worst = 0;
	for (int64_t t = 0; t < T; t++) {
		lmk_tensor *in[6];
		int64_t per[6] = {H * D, K * D, K * D, K * D, K, H};
		for (int i = 0; i < 6; i++) {
			for (int64_t b = 0; b < B; b++)
				memcpy(buf + b * per[i], x[i] + (b * T + t) * per[i],
				       sizeof(float) * (size_t)per[i]);
			int64_t s4[4] = {B, 1, i == 0 ? H : K, D}, s3[3] = {B, 1, i == 5 ? H : K};
			in[i] = i < 4 ? lmk_tensor_new(&gc, dt, 4, s4, 0) : lmk_tensor_new(&gc, dt, 3, s3, 0);
			ck_assert_ptr_nonnull(in[i]);
			ck_assert_int_eq(lmk_tensor_write_f32(&gc, in[i], 0, buf), 0);
		}
		lmk_tensor *y = lmk_path_decode(&gc, &pc, in[0], in[1], in[2], in[3], in[4],
						fox ? in[5] : NULL, 0.125f);
		ck_assert_msg(y != NULL, "decode at %lld: %s", (long long)t, lmk_errmsg());
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, y, 0, got), 0);
		for (int64_t b = 0; b < B; b++) {
			double e = compare(got + b * H * D, ro + (b * T + t) * H * D, H * D);
			worst = e > worst || isnan(e) ? e : worst;
		}
		lmk_ctx_reset(&gc);
	}
	double tol = dt == LMK_BF16 ? 1e-2 : 1e-5;
	printf("test_cuda_path: decode %s fox %d: worst row error %.1e%s\n", lmk_dtype_name(dt), fox,
	       worst, worst <= tol ? "" : " (FAIL)");
	fflush(stdout);
	ck_assert_msg(worst <= tol, "decode %s fox %d: rows differ by %g (seed %llu)",
		      lmk_dtype_name(dt), fox, worst, (unsigned long long)g_seed);
	lmk_path_cache_free(&pc);
	lmk_ctx_free(&gc);
	lmk_ctx_free(&cc);
	free(buf);
	free(got);
	for (int i = 0; i < 6; i++)
		free(x[i]);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_path: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SEED");
	g_seed = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	printf("test_cuda_path: seed %llu (LMK_TEST_SEED=%llu repeats this run)\n",
	       (unsigned long long)g_seed, (unsigned long long)g_seed);
	s = getenv("LMK_TEST_SMALL");
	g_small = s && *s && strcmp(s, "0") != 0;
	if (g_small) {
		int n = 0;
		for (int i = 0; i < NCASES; i++)
			n += cases[i].small;
		printf("test_cuda_path: LMK_TEST_SMALL: %d of %d shapes, decoding 9 tokens, the "
		       "others skipped\n", n, NCASES);
	}
	fflush(stdout);
	Suite *su = suite_create("cuda_path");
	/* cases of their own, so that compute-sanitizer can run them side by
	 * side (CK_RUN_CASE=op_bf16 ...) */
	TCase *to = tcase_create("op_f32");
	tcase_add_loop_test(to, test_op, 0, 1);
	TCase *tob = tcase_create("op_bf16");
	tcase_add_loop_test(tob, test_op, 1, 2);
	TCase *tof = tcase_create("op_bf16_fp32");
	tcase_add_loop_test(tof, test_op, 2, 3);
	TCase *tdt = tcase_create("deterministic");
	tcase_add_loop_test(tdt, test_deterministic, 0, 2);
	TCase *tdc = tcase_create("decode");
	tcase_add_loop_test(tdc, test_decode, 0, 4);
	TCase *all[] = {to, tob, tof, tdt, tdc};
	for (int i = 0; i < 5; i++) {
		tcase_set_timeout(all[i], 600);
		suite_add_tcase(su, all[i]);
	}
	SRunner *sr = srunner_create(su);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda_path: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
