/* test_cuda_ssd.c: lmk_ssd (lib/ssd.h) on the GPU against the CPU kernels,
 * then decoding on the GPU against the op, run-to-run determinism and the
 * unsupported shapes.
 *
 * Each case of the shape table (T = 1, odd T, ragged last chunks, chunks
 * 16/17/32/48/64, Dk and Dv 16..128 and unequal, G < H, loga and lam each
 * present or not, one long case) runs in F32 and in BF16: random inputs
 * (bf16-rounded in BF16, so that the CPU sees what the GPU sees), a poisoned
 * GPU arena (0xFF, NaN in both dtypes, one cudaMalloc per buffer) so that an
 * element a kernel forgets to write shows as NaN, input gradients preloaded
 * with random priors so that a backward that assigns instead of adding
 * fails. The output and every gradient are compared NaN and inf first, then
 * by ||gpu - cpu|| / ||cpu||: 1e-5 in F32 (1e-4 for dloga: see tol_dloga),
 * 1e-2 in BF16 (BF16 twice: on the
 * tensor cores, where the shape allows, and with them switched off, so that
 * a failure tells which kernel family it is in). Every case prints
 * one line with its worst errors (and where the worst element is), and the
 * suite fails at the end if any was over, so one run shows everything.
 * LMK_TEST_SMALL=1 (for compute-sanitizer) keeps 16 shapes, one for each
 * kernel family and layout (see the table; the long and many-head ones on
 * the tensor cores only), and skips the determinism check.
 * Exits 77 without a device or in a CPU-only build; runs without fork. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "err.h"
#include "fenwick.h"
#include "rng.h"
#include "ssd.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/ssd_cuda.h"

static uint64_t g_seed;

static double tol_of(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-5; }

/* The decay's gradient is a suffix sum of row sums minus column sums of
 * S * dS, computed as q.dq - k.dk on the GPU and dO.o - v.dv on the CPU:
 * large terms that cancel, so in F32 the two agree to a few 1e-6 at T in
 * the thousands (6.7e-6 at T 4100, Dk = Dv = 128, in a CPU emulation of the
 * kernels), not with the 1e-5 margin of everything else. */
static double tol_dloga(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-4; }

static int g_small; /* LMK_TEST_SMALL */

typedef struct scase {
	int64_t B, T, H, G, Dk, Dv;
	int decay, loglin, chunk;
	int small; /* the runs kept under LMK_TEST_SMALL (bits below), 0: none */
} scase;

/* A case's runs: F32, BF16 on the tensor cores, BF16 on the CUDA cores. */
enum { S_F32 = 1, S_TC = 2, S_SIMPLE = 4, S_ALL = 7 };

/* Under LMK_TEST_SMALL: the log-linear form at T 1, 7, 65 (G < H), 130
 * at 128, chunks 32 and 48; the simple kernels (chunk 17); the plain form
 * on the tensor cores: one chunk (Dk 64 and 32), tc_fused_kernel's column
 * blocks of 64, 32 and 16 and Dv 128 (Dk 64), tc_scan_kernel at 128 and at
 * chunk 16 without decay, and each walk in segments (T 1000, few heads).
 * The many-head shapes select the same kernels as few heads below eight
 * chunks (cuda/ssd.cu: segments need N / 4 > 1), so two are enough. The
 * long and many-head shapes run only on the tensor cores, the kernels they
 * are there for. */
static const scase cases[] = {
	{1, 1, 1, 1, 64, 64, 1, 1, 0, S_ALL},     {2, 7, 2, 1, 64, 64, 1, 1, 0, S_ALL},
	{1, 63, 2, 2, 64, 64, 1, 1, 0, 0},        {1, 64, 2, 1, 64, 64, 1, 1, 0, 0},
	{1, 65, 4, 2, 64, 64, 1, 1, 0, S_ALL},    {2, 130, 3, 3, 128, 128, 1, 1, 0, S_ALL},
	{1, 257, 2, 1, 64, 32, 1, 0, 0, S_ALL},   {1, 200, 2, 2, 48, 80, 0, 0, 16, S_ALL},
	{1, 333, 2, 1, 16, 16, 1, 1, 32, S_ALL},  {2, 97, 4, 1, 96, 64, 1, 0, 17, S_ALL},
	{1, 129, 2, 1, 32, 32, 0, 1, 48, S_ALL},  {1, 1000, 2, 1, 64, 64, 1, 1, 0, 0},
	{1, 300, 2, 1, 128, 64, 0, 1, 16, 0},     {1, 777, 1, 1, 80, 128, 1, 0, 0, 0},
	{1, 4100, 2, 1, 128, 128, 1, 1, 64, 0},
	/* the plain form on the tensor cores: short, one past a chunk, long
	 * (few heads: the states by tc_scan_kernel, in segments when long);
	 * many heads (Dk 64: the forward in one pass, tc_fused_kernel, with
	 * column blocks of 64, 32 and 16 on 132 SMs; else tc_scan_kernel's
	 * wider column blocks) */
	{2, 50, 2, 1, 64, 64, 1, 0, 0, S_ALL},    {1, 65, 2, 2, 128, 128, 1, 0, 0, S_ALL},
	{1, 1000, 2, 1, 64, 64, 1, 0, 0, S_TC},   {1, 1000, 2, 2, 128, 128, 1, 0, 0, S_TC},
	{2, 130, 136, 8, 64, 64, 1, 0, 0, 0},     {2, 100, 70, 70, 64, 64, 1, 0, 0, 0},
	{1, 130, 140, 70, 64, 32, 1, 0, 0, 0},    {1, 100, 140, 140, 64, 48, 1, 0, 0, S_TC},
	{1, 70, 140, 140, 64, 128, 1, 0, 0, S_TC},{1, 200, 140, 4, 128, 128, 1, 0, 0, 0},
	{1, 150, 140, 140, 32, 48, 1, 0, 16, 0},
	/* one chunk (no states); long with few heads (segments of the scans) */
	{2, 64, 3, 3, 64, 64, 1, 0, 0, 0},        {1, 32, 2, 1, 32, 64, 1, 0, 0, S_ALL},
	{1, 8192, 4, 2, 64, 64, 1, 0, 0, 0},      {1, 4200, 4, 4, 128, 128, 1, 0, 0, 0},
	/* few heads at Dk 64: tc_fused_kernel in segments (a ragged last
	 * chunk, column blocks of 32, no decay) */
	{1, 4100, 3, 3, 64, 64, 1, 0, 0, 0},      {1, 2000, 2, 1, 64, 32, 1, 0, 0, 0},
	{1, 1500, 2, 1, 64, 64, 0, 0, 0, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static float nonzero_uniform(lmk_rng *r, float lo, float hi)
{
	float x;
	do
		x = lo + (hi - lo) * lmk_rng_uniform(r);
	while (fabsf(x) < 1e-3f);
	return x;
}

static void round_bf16(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lmk_bf16_to_f32(lmk_f32_to_bf16(x[i]));
}

/* NaN and inf first (returns inf, *where the index), then the normalised
 * error; *worst the index of the largest absolute difference. */
static double compare(const float *gpu, const float *cpu, int64_t n, int64_t *where,
		      int64_t *worst)
{
	double e2 = 0, r2 = 0, wd = -1;
	*where = -1;
	*worst = 0;
	for (int64_t i = 0; i < n; i++) {
		if (isfinite(gpu[i]) != isfinite(cpu[i])) {
			*where = i;
			return INFINITY;
		}
		double d = (double)gpu[i] - cpu[i];
		if (!(fabs(d) <= wd)) {
			wd = fabs(d);
			*worst = i;
		}
		e2 += d * d;
		r2 += (double)cpu[i] * cpu[i];
	}
	return r2 > 1e-30 ? sqrt(e2 / r2) : sqrt(e2);
}

static int nfail;
static double worst_all[3]; /* F32, BF16 on the tensor cores, BF16 on CUDA cores */

/* One case in one dtype: returns the worst error over the output and the
 * gradients; prints one line. */
static void run_case(int ci, lmk_dtype dt, int tc)
{
	lmk_cuda_ssd_tensor_cores(tc);
	const scase *s = &cases[ci];
	const int bf = dt == LMK_BF16;
	int64_t NL = lmk_fenwick_levels(s->T) + 1; /* one level more than needed */
	int64_t sh[5][4] = {{s->B, s->T, s->G, s->Dk}, {s->B, s->T, s->G, s->Dk},
			    {s->B, s->T, s->H, s->Dv}, {s->B, s->T, s->H, 0},
			    {s->B, s->T, s->H, NL}};
	int nd[5] = {4, 4, 4, 3, 4};
	int present[5] = {1, 1, 1, s->decay, s->loglin};
	static const char *names[6] = {"out", "dq", "dk", "dv", "dloga", "dlam"};
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 1000003u + (uint64_t)ci * 2 + (uint64_t)bf);
	float *xh[5] = {0}, *prior[5] = {0};
	int64_t nx[5] = {0};
	for (int i = 0; i < 5; i++) {
		if (!present[i])
			continue;
		nx[i] = 1;
		for (int d = 0; d < nd[i]; d++)
			nx[i] *= sh[i][d];
		xh[i] = malloc(sizeof(float) * (size_t)nx[i]);
		prior[i] = malloc(sizeof(float) * (size_t)nx[i]);
		for (int64_t j = 0; j < nx[i]; j++) {
			xh[i][j] = i < 3 ? nonzero_uniform(&rng, -1, 1)
				   : i == 3 ? nonzero_uniform(&rng, -0.2f, -0.001f)
					    : nonzero_uniform(&rng, 0.2f, 1.2f);
			prior[i][j] = nonzero_uniform(&rng, -0.01f, 0.01f);
		}
		if (bf) {
			round_bf16(xh[i], nx[i]);
			round_bf16(prior[i], nx[i]);
		}
	}
	int64_t no = s->B * s->T * s->H * s->Dv;
	float *dout = malloc(sizeof(float) * (size_t)no);
	for (int64_t j = 0; j < no; j++)
		dout[j] = nonzero_uniform(&rng, -1, 1);
	if (bf)
		round_bf16(dout, no);
	lmk_ssd_opts o = {s->chunk, LMK_SSD_CHUNKED, 1.0f / sqrtf((float)s->Dk)};

	/* ---- the CPU */
	lmk_ctx cc;
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	lmk_tensor *xc[5] = {0};
	for (int i = 0; i < 5; i++) {
		if (!present[i])
			continue;
		xc[i] = lmk_tensor_new(&cc, LMK_F32, nd[i], sh[i], 1);
		ck_assert_ptr_nonnull(xc[i]);
		memcpy(xc[i]->data, xh[i], sizeof(float) * (size_t)nx[i]);
		memcpy(xc[i]->grad, prior[i], sizeof(float) * (size_t)nx[i]);
	}
	lmk_tensor *oc = lmk_ssd(&cc, xc[0], xc[1], xc[2], xc[3], xc[4], &o);
	ck_assert_msg(oc != NULL, "cpu: %s", lmk_errmsg());
	ck_assert_int_eq(lmk_backward_from(&cc, oc, dout), 0);

	/* ---- the GPU */
	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
	gc.arena.chunk = 1;
	gc.arena.poison = 1;
	lmk_tensor *xg[5] = {0};
	for (int i = 0; i < 5; i++) {
		if (!present[i])
			continue;
		xg[i] = lmk_tensor_new(&gc, dt, nd[i], sh[i], 1);
		ck_assert_ptr_nonnull(xg[i]);
		ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[i], 0, xh[i]), 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[i], 1, prior[i]), 0);
	}
	double err[6] = {0};
	int64_t wh[6] = {0};
	int64_t maxn = no;
	for (int i = 0; i < 5; i++)
		maxn = nx[i] > maxn ? nx[i] : maxn;
	float *ga = malloc(sizeof(float) * (size_t)maxn), *gb = malloc(sizeof(float) * (size_t)maxn);
	char msg[512] = "";
	lmk_tensor *og = lmk_ssd(&gc, xg[0], xg[1], xg[2], xg[3], xg[4], &o);
	if (!og) {
		snprintf(msg, sizeof msg, "forward failed: %s", lmk_errmsg());
	} else {
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, og, 0, ga), 0);
		int64_t where;
		err[0] = compare(ga, oc->data, no, &where, &wh[0]);
		lmk_tensor *dg = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){no}, dout);
		ck_assert_ptr_nonnull(dg);
		if (lmk_backward_from(&gc, og, dg->data) < 0 || lmk_ctx_sync(&gc) < 0) {
			snprintf(msg, sizeof msg, "backward failed: %s", lmk_errmsg());
		} else {
			for (int i = 0; i < 5; i++) {
				if (!present[i])
					continue;
				ck_assert_int_eq(lmk_tensor_read_f32(&gc, xg[i], 1, ga), 0);
				memcpy(gb, xc[i]->grad, sizeof(float) * (size_t)nx[i]);
				err[i + 1] = compare(ga, gb, nx[i], &where, &wh[i + 1]);
			}
		}
	}
	double worst = 0;
	int bad = msg[0] != 0;
	for (int i = 0; i < 6; i++) {
		worst = fmax(worst, isnan(err[i]) ? INFINITY : err[i]);
		bad |= !(err[i] <= (i == 4 ? tol_dloga(dt) : tol_of(dt)));
	}
	if (msg[0])
		worst = INFINITY;
	int slot = bf ? (tc ? 1 : 2) : 0;
	if (worst > worst_all[slot] || isinf(worst))
		worst_all[slot] = worst;
	char line[512];
	int k = snprintf(line, sizeof line,
			 "test_cuda_ssd: %s%s B %lld T %lld H %lld G %lld Dk %lld Dv %lld decay %d "
			 "lam %d chunk %d:",
			 lmk_dtype_name(dt), bf ? (tc ? " tc" : " simple") : "", (long long)s->B, (long long)s->T, (long long)s->H,
			 (long long)s->G, (long long)s->Dk, (long long)s->Dv, s->decay, s->loglin,
			 s->chunk);
	for (int i = 0; i < 6 && !msg[0]; i++)
		if (i == 0 || present[i - 1])
			k += snprintf(line + k, sizeof line - (size_t)k, " %s %.1e", names[i], err[i]);
	printf("%s%s%s%s\n", line, msg[0] ? " " : "", msg, bad ? "  <-- FAIL" : "");
	if (bad && !msg[0])
		for (int i = 0; i < 6; i++)
			if (!(err[i] <= (i == 4 ? tol_dloga(dt) : tol_of(dt))))
				printf("test_cuda_ssd:   %s: worst element %lld (seed %llu)\n", names[i],
				       (long long)wh[i], (unsigned long long)g_seed);
	fflush(stdout);
	nfail += bad;
	lmk_ctx_free(&gc);
	lmk_ctx_free(&cc);
	for (int i = 0; i < 5; i++) {
		free(xh[i]);
		free(prior[i]);
	}
	free(ga);
	free(gb);
	free(dout);
}

START_TEST(test_vs_cpu)
{
	nfail = 0;
	int nrun = 0;
	for (int ci = 0; ci < NCASES; ci++) {
		const int keep = g_small ? cases[ci].small : S_ALL;
		if (!keep)
			continue;
		nrun++;
		if (keep & S_F32)
			run_case(ci, LMK_F32, 1);
		if (keep & S_TC)
			run_case(ci, LMK_BF16, 1);
		if (keep & S_SIMPLE)
			run_case(ci, LMK_BF16, 0);
	}
	lmk_cuda_ssd_tensor_cores(1);
	printf("test_cuda_ssd: %d cases: worst F32 %.1e (tolerance 1e-5, dloga 1e-4), BF16 tensor "
	       "cores %.1e, BF16 CUDA cores %.1e (1e-2); %d over\n",
	       nrun, worst_all[0], worst_all[1], worst_all[2], nfail);
	fflush(stdout);
	ck_assert_msg(nfail == 0, "%d cases over tolerance (seed %llu): see the lines above", nfail,
		      (unsigned long long)g_seed);
}
END_TEST

/* Token by token on the GPU (and 5 tokens at a time) against the op. */
START_TEST(test_decode)
{
	static const scase dc[] = {
		{2, 70, 4, 2, 64, 64, 1, 1, 0, S_ALL}, {1, 33, 2, 1, 128, 96, 1, 0, 0, S_ALL},
		{2, 40, 2, 2, 32, 48, 0, 0, 0, S_ALL},
	};
	int bad = 0;
	for (size_t ci = 0; ci < sizeof dc / sizeof *dc; ci++)
		for (int d = 0; d < 2; d++) {
			lmk_dtype dt = d ? LMK_BF16 : LMK_F32;
			const scase *s = &dc[ci];
			int64_t NL = s->loglin ? lmk_fenwick_levels(s->T) : 0;
			lmk_ctx gc;
			ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
			gc.grad_enabled = 0;
			gc.arena.poison = 1;
			int64_t sh[5][4] = {{s->B, s->T, s->G, s->Dk}, {s->B, s->T, s->G, s->Dk},
					    {s->B, s->T, s->H, s->Dv}, {s->B, s->T, s->H, 0},
					    {s->B, s->T, s->H, NL}};
			int nd[5] = {4, 4, 4, 3, 4}, present[5] = {1, 1, 1, s->decay, s->loglin};
			int64_t w[5] = {s->G * s->Dk, s->G * s->Dk, s->H * s->Dv, s->H, s->H * NL};
			lmk_rng rng;
			lmk_rng_init(&rng, g_seed + 31 * ci + (uint64_t)d);
			float *xh[5] = {0};
			lmk_tensor *xg[5] = {0};
			for (int i = 0; i < 5; i++) {
				if (!present[i])
					continue;
				int64_t n = s->B * s->T * w[i];
				xh[i] = malloc(sizeof(float) * (size_t)n);
				for (int64_t j = 0; j < n; j++)
					xh[i][j] = i < 3 ? nonzero_uniform(&rng, -1, 1)
						   : i == 3 ? nonzero_uniform(&rng, -0.3f, -0.001f)
							    : nonzero_uniform(&rng, 0.2f, 1.2f);
				xg[i] = lmk_tensor_new(&gc, dt, nd[i], sh[i], 0);
				ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[i], 0, xh[i]), 0);
			}
			lmk_ssd_opts o = {0, 0, 0.5f};
			lmk_tensor *full = lmk_ssd(&gc, xg[0], xg[1], xg[2], xg[3], xg[4], &o);
			ck_assert_msg(full != NULL, "%s", lmk_errmsg());
			int64_t no = s->B * s->T * s->H * s->Dv, row = s->H * s->Dv;
			float *ref = malloc(sizeof(float) * (size_t)no), *got = malloc(sizeof(float) * (size_t)no);
			ck_assert_int_eq(lmk_tensor_read_f32(&gc, full, 0, ref), 0);
			lmk_ssd_state st;
			ck_assert_int_eq(lmk_ssd_state_init(&st, &gc, s->B, s->H, s->Dk, s->Dv, NL), 0);
			double e = 0;
			for (int pass = 0; pass < 2; pass++) {
				ck_assert_int_eq(lmk_ssd_state_reset(&gc, &st), 0);
				for (int64_t t0 = 0; t0 < s->T;) {
					int64_t n = pass ? (s->T - t0 < 5 ? s->T - t0 : 5) : 1;
					lmk_tensor *p[5] = {0};
					for (int i = 0; i < 5; i++) {
						if (!present[i])
							continue;
						int64_t ps[4] = {s->B, n, sh[i][2], sh[i][3]};
						float *tmp = malloc(sizeof(float) * (size_t)(s->B * n * w[i]));
						for (int64_t b = 0; b < s->B; b++)
							memcpy(tmp + b * n * w[i], xh[i] + (b * s->T + t0) * w[i],
							       sizeof(float) * (size_t)(n * w[i]));
						p[i] = lmk_tensor_new(&gc, dt, nd[i], ps, 0);
						ck_assert_int_eq(lmk_tensor_write_f32(&gc, p[i], 0, tmp), 0);
						free(tmp);
					}
					lmk_tensor *o1 = lmk_ssd_step(&gc, &st, p[0], p[1], p[2], p[3], p[4], &o);
					ck_assert_msg(o1 != NULL, "%s", lmk_errmsg());
					float *tmp = malloc(sizeof(float) * (size_t)(s->B * n * row));
					ck_assert_int_eq(lmk_tensor_read_f32(&gc, o1, 0, tmp), 0);
					for (int64_t b = 0; b < s->B; b++)
						memcpy(got + (b * s->T + t0) * row, tmp + b * n * row,
						       sizeof(float) * (size_t)(n * row));
					free(tmp);
					t0 += n;
				}
				int64_t where, wi;
				e = fmax(e, compare(got, ref, no, &where, &wi));
			}
			int over = !(e <= tol_of(dt));
			printf("test_cuda_ssd: decode %s B %lld T %lld lam %d: difference from the op %.1e%s\n",
			       lmk_dtype_name(dt), (long long)s->B, (long long)s->T, s->loglin, e,
			       over ? "  <-- FAIL" : "");
			fflush(stdout);
			bad += over;
			lmk_ssd_state_free(&st);
			lmk_ctx_free(&gc);
			for (int i = 0; i < 5; i++)
				free(xh[i]);
			free(ref);
			free(got);
		}
	ck_assert_msg(bad == 0, "%d decode cases over tolerance (seed %llu)", bad,
		      (unsigned long long)g_seed);
}
END_TEST

/* Two identical runs of one case give the same bits, forward and
 * backward. */
static void deterministic_case(const scase *sc)
{
	scase s = *sc;
	int64_t NL = lmk_fenwick_levels(s.T);
	int64_t sh[5][4] = {{s.B, s.T, s.G, s.Dk}, {s.B, s.T, s.G, s.Dk}, {s.B, s.T, s.H, s.Dv},
			    {s.B, s.T, s.H, 0}, {s.B, s.T, s.H, NL}};
	int nd[5] = {4, 4, 4, 3, 4};
	float *res[2][6]; /* the inputs' gradients (lam's when present), the output */
	int64_t nx[6];
	int nin = s.loglin ? 5 : 4;
	for (int run = 0; run < 2; run++) {
		lmk_rng rng;
		lmk_rng_init(&rng, g_seed + 5);
		lmk_ctx gc;
		ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_BF16), 0);
		lmk_tensor *x[5] = {0};
		for (int i = 0; i < nin; i++) {
			nx[i] = 1;
			for (int d = 0; d < nd[i]; d++)
				nx[i] *= sh[i][d];
			float *h = malloc(sizeof(float) * (size_t)nx[i]);
			for (int64_t j = 0; j < nx[i]; j++)
				h[j] = i < 3 ? nonzero_uniform(&rng, -1, 1)
				       : i == 3 ? nonzero_uniform(&rng, -0.2f, -0.001f)
						: nonzero_uniform(&rng, 0.2f, 1.2f);
			x[i] = lmk_tensor_new(&gc, LMK_BF16, nd[i], sh[i], 1);
			ck_assert_int_eq(lmk_tensor_write_f32(&gc, x[i], 0, h), 0);
			free(h);
		}
		lmk_tensor *o = lmk_ssd(&gc, x[0], x[1], x[2], x[3], x[4], NULL);
		ck_assert_msg(o != NULL, "%s", lmk_errmsg());
		nx[5] = o->n;
		res[run][5] = malloc(sizeof(float) * (size_t)o->n);
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, o, 0, res[run][5]), 0);
		float *d = malloc(sizeof(float) * (size_t)o->n);
		for (int64_t j = 0; j < o->n; j++)
			d[j] = (float)sin((double)j);
		lmk_tensor *dg = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){o->n}, d);
		ck_assert_int_eq(lmk_backward_from(&gc, o, dg->data), 0);
		free(d);
		for (int i = 0; i < nin; i++) {
			res[run][i] = malloc(sizeof(float) * (size_t)nx[i]);
			ck_assert_int_eq(lmk_tensor_read_f32(&gc, x[i], 1, res[run][i]), 0);
		}
		lmk_ctx_free(&gc);
	}
	for (int i = 0; i < 6; i++) {
		if (i >= nin && i < 5)
			continue;
		ck_assert_msg(memcmp(res[0][i], res[1][i], sizeof(float) * (size_t)nx[i]) == 0,
			      "T %lld lam %d: %s %d differs between two identical runs", (long long)s.T,
			      s.loglin, i == 5 ? "the output" : "gradient", i);
		free(res[0][i]);
		free(res[1][i]);
	}
	printf("test_cuda_ssd: deterministic: T %lld Dk %lld lam %d: the same bits\n", (long long)s.T,
	       (long long)s.Dk, s.loglin);
	fflush(stdout);
}

/* With lam, and without: the plain form's scans at D 64 and 128, its
 * one-pass forward (many heads; few long ones: in segments). */
START_TEST(test_deterministic)
{
	static const scase dc[] = {
		{2, 300, 4, 2, 64, 64, 1, 1, 0, 0},    {2, 300, 4, 2, 64, 64, 1, 0, 0, 0},
		{1, 1000, 8, 8, 128, 128, 1, 0, 0, 0}, {1, 300, 140, 140, 64, 64, 1, 0, 0, 0},
		{1, 2000, 2, 2, 64, 64, 1, 0, 0, 0}};
	if (g_small) {
		printf("test_cuda_ssd: deterministic: skipped under LMK_TEST_SMALL\n");
		return;
	}
	for (size_t ci = 0; ci < sizeof dc / sizeof *dc; ci++)
		deterministic_case(&dc[ci]);
}
END_TEST

START_TEST(test_unsupported)
{
	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_F32), 0);
	lmk_tensor *q = lmk_tensor_new(&gc, LMK_F32, 4, (int64_t[]){1, 5, 1, 160}, 0);
	lmk_tensor *v = lmk_tensor_new(&gc, LMK_F32, 4, (int64_t[]){1, 5, 1, 64}, 0);
	ck_assert_ptr_null(lmk_ssd(&gc, q, q, v, NULL, NULL, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EUNSUP);
	printf("test_cuda_ssd: Dk 160: %s\n", lmk_errmsg());
	lmk_ctx_free(&gc);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_ssd: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SEED");
	g_seed = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	printf("test_cuda_ssd: seed %llu (LMK_TEST_SEED=%llu repeats this run)\n",
	       (unsigned long long)g_seed, (unsigned long long)g_seed);
	s = getenv("LMK_TEST_SMALL");
	g_small = s && *s && strcmp(s, "0") != 0;
	if (g_small) {
		int n = 0;
		for (int i = 0; i < NCASES; i++)
			n += cases[i].small != 0;
		printf("test_cuda_ssd: LMK_TEST_SMALL: %d of %d shapes, the others skipped\n", n,
		       NCASES);
	}
	fflush(stdout);
	Suite *su = suite_create("cuda_ssd");
	TCase *tc = tcase_create("ssd");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_vs_cpu);
	tcase_add_test(tc, test_decode);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_unsupported);
	suite_add_tcase(su, tc);
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
	printf("test_cuda_ssd: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
