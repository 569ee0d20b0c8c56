/* test_cuda_gdn.c: Gated DeltaNet and log-linear Gated DeltaNet on the GPU
 * (cuda/gdn.cu through lmk_gdn and lmk_gdn_step) against the CPU recurrent
 * kernel of lib/gdn.c, the specification.
 *
 * For each shape of the table (T = 1, odd T, T around 64, a ragged last
 * chunk, odd head dims, 64 and 128, Dk != Dv, one realistic size; loga
 * and lam given or NULL) and each compute dtype (F32, BF16): random inputs
 * (q, k unit norm, loga in (-1.5,0), beta in (0.05,1.95), lam in
 * (0,1.2); fresh each run, the seed is printed, LMK_TEST_SEED repeats a
 * run), the output and the gradients of all six inputs, preloaded with
 * random values so that a backward that assigns instead of adding fails. The GPU context poisons
 * every allocation (NaN), so an output element never written shows. In
 * BF16 the CPU gets the same bf16-rounded inputs.
 * Every case runs twice: the recurrent kernels (algo LMK_GDN_RECURRENT)
 * and the chunked ones (LMK_GDN_CHUNKED). Compared NaN first, then
 * by ||gpu - cpu|| / ||cpu||: F32 1e-5 for the output and 1e-4 for the
 * gradients (sums over T of long products in another order), BF16 1e-2.
 * One line per case gives every error, so one run tells what is wrong.
 * A second table (tcase ll_tc) runs log-linear shapes of the BF16
 * tensor-core kernels, chunked only. Then decoding: lmk_gdn_step on the
 * GPU token by token against the CPU parallel output.
 * LMK_TEST_SMALL=1 (for compute-sanitizer) keeps one shape for each kernel
 * family and layout (the shapes' small field: see the table) and the
 * smallest decoding in each dtype, and skips the two determinism checks. Exits 77
 * without a device or in a CPU-only build; runs without fork (a forked
 * child cannot use CUDA). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "err.h"
#include "fenwick.h"
#include "gdn.h"
#include "rng.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

static uint64_t g_seed;

typedef struct gshape {
	int64_t B, T, H, Dk, Dv;
	int la, lam;
	int small; /* the runs kept under LMK_TEST_SMALL (bits below), 0: none */
} gshape;

/* Runs of a shape: F32 or BF16, recurrent or chunked kernels (decode
 * shapes: F32 or BF16; log-linear shapes: any bit). */
enum { S_F32REC = 1, S_F32CH = 2, S_BFREC = 4, S_BFCH = 8, S_F32 = 3 };
static int g_small; /* LMK_TEST_SMALL */

/* Under LMK_TEST_SMALL: F32 recurrent and chunked at T 7 (one chunk, log-
 * linear) and T 100 at Dk 33, Dv 67 (plain, a ragged second chunk), F32
 * chunked at T 77, Dk 100, Dv 9 (log-linear, a ragged second chunk); BF16
 * recurrent once (racecheck's cost grows with T Dk Dv and the levels: the
 * recurrent kernels keep the states in shared memory); BF16 chunked on
 * the general kernels (odd dims) and on the tensor cores at each (Dk, Dv)
 * of {64, 128}, T 1, la absent, and the three many-head shapes (near the
 * fewest heads that select the fused walk with 64- and 32-column value
 * blocks, cuda/gdn.cu: B*H 256 and 133 at Dv 64, 128 for 64 at Dv 128). */
static const gshape shapes[] = {
	{1, 1, 1, 64, 64, 1, 1, 0},
	{2, 7, 3, 64, 64, 1, 1, S_F32 | S_BFREC},
	{1, 63, 2, 128, 128, 1, 0, 0},
	{1, 64, 1, 64, 64, 0, 1, 0},
	{1, 65, 2, 128, 128, 1, 1, 0},
	{2, 130, 2, 64, 64, 1, 0, S_BFCH},
	{2, 130, 2, 64, 64, 1, 1, 0},
	{1, 257, 1, 128, 128, 0, 0, S_BFCH},
	{2, 33, 3, 5, 7, 1, 1, S_BFCH},
	{1, 100, 2, 33, 67, 1, 0, S_F32},
	{3, 77, 1, 100, 9, 1, 1, S_F32CH},
	{1, 1000, 2, 64, 64, 1, 1, 0},
	{1, 1025, 1, 128, 128, 1, 0, 0},
	{2, 2048, 4, 128, 128, 1, 0, 0},
	{1, 2048, 2, 128, 128, 1, 1, 0},
	/* the BF16 tensor-core kernels: T < 64, Dk != Dv, and enough heads for
	 * their 32- and 64-column value blocks (16 otherwise) */
	{3, 20, 2, 64, 64, 1, 0, 0},
	{1, 1, 1, 128, 64, 0, 0, S_BFCH},
	{2, 100, 3, 64, 128, 1, 0, S_BFCH},
	{1, 200, 2, 128, 64, 1, 0, S_BFCH},
	{8, 70, 36, 64, 64, 1, 0, S_BFCH},
	{4, 130, 34, 128, 128, 1, 0, S_BFCH},
	{4, 70, 36, 64, 64, 1, 0, S_BFCH},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* Log-linear on the BF16 tensor-core kernels, chunked only (tcase ll_tc,
 * so that CK_RUN_CASE=ll_tc runs them alone): one chunk (T = 1, 7, 64),
 * two, Dk != Dv, 32- and 64-column value blocks, up to eight chunk levels
 * with a ragged last chunk. Under LMK_TEST_SMALL: one chunk, two, four
 * without la, five, and the 64- and 32-column value blocks. */
static const gshape llshapes[] = {
	{1, 1, 1, 64, 128, 1, 1, 1},   {2, 7, 3, 128, 64, 1, 1, 0},
	{1, 64, 1, 128, 64, 1, 1, 0},  {1, 65, 2, 64, 128, 1, 1, 1},
	{1, 1000, 1, 128, 128, 1, 1, 0},
	{3, 20, 2, 128, 128, 1, 1, 0}, {2, 100, 3, 64, 128, 1, 1, 0},
	{1, 200, 2, 128, 64, 0, 1, 1}, {8, 70, 36, 64, 64, 1, 1, 1},
	{4, 130, 34, 128, 128, 1, 1, 0}, {1, 4100, 1, 64, 128, 1, 1, 0},
	{1, 300, 2, 64, 64, 1, 1, 1},  {2, 513, 1, 128, 128, 1, 1, 0},
	{2, 200, 70, 64, 64, 1, 1, 0}, {4, 100, 34, 128, 128, 1, 1, 1},
};
#define NLLSHAPES ((int)(sizeof llshapes / sizeof llshapes[0]))

static const char *const in_names[6] = {"q", "k", "v", "loga", "beta", "lam"};

static float unif(lmk_rng *r, float lo, float hi) { return lo + (hi - lo) * lmk_rng_uniform(r); }

static void round_bf16(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lmk_bf16_to_f32(lmk_f32_to_bf16(x[i]));
}

/* NaN and inf first (returned as inf, *where the index), then the relative
 * error of gpu against cpu (its norm over cpu's). For a gradient, prior is
 * what both added into (else NULL): the scale is then the larger of the
 * result and the added part at each element, and at least the prior's, so
 * that a sum whose parts nearly cancel (a single element, say) is not
 * judged against its small remainder. */
static double compare(const float *gpu, const float *cpu, const float *prior, int64_t n,
		      int64_t *where)
{
	double e2 = 0, r2 = 0;
	*where = -1;
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(gpu[i]) || !isfinite(cpu[i])) {
			*where = i;
			return INFINITY;
		}
		double d = (double)gpu[i] - cpu[i];
		double a = (double)cpu[i] - (prior ? prior[i] : 0.0);
		e2 += d * d;
		r2 += fmax((double)cpu[i] * cpu[i], a * a);
	}
	/* a gradient whose terms cancel below the prior's scale (0.01 an
	 * element) is measured at that scale: what is left of such a sum is
	 * each side's rounding of the larger terms (BF16, T 1: one dbeta of
	 * -0.00227 from O(0.1) terms came out 1.4% off, 8e-5 absolute) */
	if (prior && r2 < (double)n * 1e-4)
		r2 = (double)n * 1e-4;
	return r2 > 1e-30 ? sqrt(e2 / r2) : sqrt(e2);
}

static int64_t worst_at(const float *gpu, const float *cpu, int64_t n)
{
	int64_t w = 0;
	double wd = -1;
	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)gpu[i] - cpu[i]);
		if (!(d <= wd)) {
			wd = d;
			w = i;
		}
	}
	return w;
}

static int g_algo = LMK_GDN_RECURRENT; /* of the case running */

static const char *shape_str(const gshape *s, lmk_dtype dt)
{
	static char buf[128];
	snprintf(buf, sizeof buf, "%s B%lld T%lld H%lld Dk%lld Dv%lld%s%s %s",
		 g_algo == LMK_GDN_RECURRENT ? "rec" : "chunk", (long long)s->B, (long long)s->T,
		 (long long)s->H, (long long)s->Dk, (long long)s->Dv, s->la ? " loga" : "",
		 s->lam ? " lam" : "", lmk_dtype_name(dt));
	return buf;
}

/* Host inputs of a case: q, k, v, loga, beta, lam. */
typedef struct hin {
	float *x[6];
	int64_t n[6];
	int ndim[6];
	int64_t shape[6][4];
	int present[6];
} hin;

static void make_host(hin *h, const gshape *s, lmk_rng *r, int bf)
{
	int64_t NL = lmk_fenwick_levels(s->T) + 1; /* one level more than needed */
	int64_t sh[6][4] = {{s->B, s->T, s->H, s->Dk}, {s->B, s->T, s->H, s->Dk},
			    {s->B, s->T, s->H, s->Dv}, {s->B, s->T, s->H, 0},
			    {s->B, s->T, s->H, 0},     {s->B, s->T, s->H, NL}};
	for (int i = 0; i < 6; i++) {
		h->ndim[i] = i == 3 || i == 4 ? 3 : 4;
		memcpy(h->shape[i], sh[i], sizeof sh[i]);
		h->n[i] = 1;
		for (int d = 0; d < h->ndim[i]; d++)
			h->n[i] *= sh[i][d];
		h->present[i] = i == 3 ? s->la : i == 5 ? s->lam : 1;
		h->x[i] = malloc(sizeof(float) * (size_t)h->n[i]);
	}
	for (int64_t i = 0; i < h->n[0]; i += s->Dk) {
		double nq = 0, nk = 0;
		for (int64_t d = 0; d < s->Dk; d++) {
			h->x[0][i + d] = unif(r, -1, 1);
			h->x[1][i + d] = unif(r, -1, 1);
			nq += (double)h->x[0][i + d] * h->x[0][i + d];
			nk += (double)h->x[1][i + d] * h->x[1][i + d];
		}
		for (int64_t d = 0; d < s->Dk; d++) {
			h->x[0][i + d] = (float)(h->x[0][i + d] / sqrt(nq));
			h->x[1][i + d] = (float)(h->x[1][i + d] / sqrt(nk));
		}
	}
	for (int64_t i = 0; i < h->n[2]; i++)
		h->x[2][i] = unif(r, -1, 1);
	for (int64_t i = 0; i < h->n[3]; i++) {
		h->x[3][i] = unif(r, -1.5f, -0.001f);
		h->x[4][i] = unif(r, 0.05f, 1.95f);
	}
	for (int64_t i = 0; i < h->n[5]; i++)
		h->x[5][i] = unif(r, 0.01f, 1.2f);
	if (bf)
		for (int i = 0; i < 6; i++)
			round_bf16(h->x[i], h->n[i]);
}

static void free_host(hin *h)
{
	for (int i = 0; i < 6; i++)
		free(h->x[i]);
}

static double tol_out(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-5; }
static double tol_grad(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-4; }

/* One case: shape s, whose index si seeds its inputs, in dtype dt. */
static void run_case(const gshape *s, int si, lmk_dtype dt)
{
	const int bf = dt == LMK_BF16;
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 1000003u + (uint64_t)si * 2 + (uint64_t)bf);
	hin h;
	make_host(&h, s, &rng, bf);
	float *prior[6] = {0}, *gcpu[6] = {0}, *ggpu[6] = {0};
	for (int i = 0; i < 6; i++) {
		if (!h.present[i])
			continue;
		prior[i] = malloc(sizeof(float) * (size_t)h.n[i]);
		gcpu[i] = malloc(sizeof(float) * (size_t)h.n[i]);
		ggpu[i] = malloc(sizeof(float) * (size_t)h.n[i]);
		for (int64_t j = 0; j < h.n[i]; j++)
			prior[i][j] = unif(&rng, -0.01f, 0.01f);
		if (bf)
			round_bf16(prior[i], h.n[i]);
	}
	int64_t nout = s->B * s->T * s->H * s->Dv;
	float *dout = malloc(sizeof(float) * (size_t)nout);
	float *ocpu = malloc(sizeof(float) * (size_t)nout);
	float *ogpu = malloc(sizeof(float) * (size_t)nout);
	for (int64_t i = 0; i < nout; i++)
		dout[i] = unif(&rng, -1, 1);
	if (bf)
		round_bf16(dout, nout);
	lmk_gdn_opts opts = {0, LMK_GDN_RECURRENT, 0};
	lmk_gdn_opts gopts = {0, g_algo, 0};

	/* the CPU */
	lmk_ctx cc;
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	lmk_tensor *xc[6] = {0};
	for (int i = 0; i < 6; i++) {
		if (!h.present[i])
			continue;
		xc[i] = lmk_tensor_new(&cc, LMK_F32, h.ndim[i], h.shape[i], 1);
		ck_assert_ptr_nonnull(xc[i]);
		memcpy(xc[i]->data, h.x[i], sizeof(float) * (size_t)h.n[i]);
		memcpy(xc[i]->grad, prior[i], sizeof(float) * (size_t)h.n[i]);
	}
	lmk_tensor *oc = lmk_gdn(&cc, xc[0], xc[1], xc[2], xc[3], xc[4], xc[5], &opts);
	ck_assert_msg(oc != NULL, "%s: the CPU op failed: %s", shape_str(s, dt), lmk_errmsg());
	memcpy(ocpu, oc->data, sizeof(float) * (size_t)nout);
	ck_assert_msg(lmk_backward_from(&cc, oc, dout) == 0, "%s: CPU backward: %s",
		      shape_str(s, dt), lmk_errmsg());
	for (int i = 0; i < 6; i++)
		if (xc[i])
			memcpy(gcpu[i], xc[i]->grad, sizeof(float) * (size_t)h.n[i]);

	/* the GPU */
	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
	gc.arena.chunk = 1;
	gc.arena.poison = 1;
	lmk_tensor *xg[6] = {0};
	for (int i = 0; i < 6; i++) {
		if (!h.present[i])
			continue;
		xg[i] = lmk_tensor_new(&gc, dt, h.ndim[i], h.shape[i], 1);
		ck_assert_ptr_nonnull(xg[i]);
		ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[i], 0, h.x[i]), 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[i], 1, prior[i]), 0);
	}
	lmk_tensor *og = lmk_gdn(&gc, xg[0], xg[1], xg[2], xg[3], xg[4], xg[5], &gopts);
	ck_assert_msg(og != NULL, "%s: the GPU op failed: %s", shape_str(s, dt), lmk_errmsg());
	ck_assert_int_eq(og->dtype, dt);
	ck_assert_msg(lmk_tensor_read_f32(&gc, og, 0, ogpu) == 0, "%s: %s", shape_str(s, dt),
		      lmk_errmsg());
	lmk_tensor *dg = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){nout}, dout);
	ck_assert_ptr_nonnull(dg);
	int brc = lmk_backward_from(&gc, og, dg->data);
	ck_assert_msg(brc == 0, "%s: GPU backward: %s", shape_str(s, dt), lmk_errmsg());
	ck_assert_msg(lmk_ctx_sync(&gc) == 0, "%s: after the backward: %s", shape_str(s, dt),
		      lmk_errmsg());

	/* every error on one line, then the verdicts */
	int64_t where;
	double eo = compare(ogpu, ocpu, NULL, nout, &where), eg[6] = {0};
	int64_t wg[6] = {-1, -1, -1, -1, -1, -1};
	char line[512];
	int k = snprintf(line, sizeof line, "test_cuda_gdn: %-46s out %.1e", shape_str(s, dt), eo);
	for (int i = 0; i < 6; i++) {
		if (!xg[i])
			continue;
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, xg[i], 1, ggpu[i]), 0);
		eg[i] = compare(ggpu[i], gcpu[i], prior[i], h.n[i], &wg[i]);
		k += snprintf(line + k, sizeof line - (size_t)k, " d%s %.1e", in_names[i], eg[i]);
	}
	printf("%s\n", line);
	fflush(stdout);
	if (!(eo <= tol_out(dt))) {
		int64_t w = where >= 0 ? where : worst_at(ogpu, ocpu, nout);
		ck_abort_msg("%s: output differs by %.3g (tolerance %g); element %lld of %lld: "
			     "%.9g on the GPU, %.9g on the CPU (seed %llu)", shape_str(s, dt), eo,
			     tol_out(dt), (long long)w, (long long)nout, (double)ogpu[w],
			     (double)ocpu[w], (unsigned long long)g_seed);
	}
	for (int i = 0; i < 6; i++) {
		if (!xg[i] || eg[i] <= tol_grad(dt))
			continue;
		int64_t w = wg[i] >= 0 ? wg[i] : worst_at(ggpu[i], gcpu[i], h.n[i]);
		ck_abort_msg("%s: gradient of %s differs by %.3g (tolerance %g); element %lld of "
			     "%lld: %.9g on the GPU, %.9g on the CPU (seed %llu)",
			     shape_str(s, dt), in_names[i], eg[i], tol_grad(dt), (long long)w,
			     (long long)h.n[i], (double)ggpu[i][w], (double)gcpu[i][w],
			     (unsigned long long)g_seed);
	}
	lmk_ctx_free(&gc);
	lmk_ctx_free(&cc);
	for (int i = 0; i < 6; i++) {
		free(prior[i]);
		free(gcpu[i]);
		free(ggpu[i]);
	}
	free(dout);
	free(ocpu);
	free(ogpu);
	free_host(&h);
}

/* _i: shape _i / 2, the recurrent (even) or chunked (odd) kernels */
START_TEST(test_op_f32)
{
	if (g_small && !(shapes[_i / 2].small & (_i % 2 ? S_F32CH : S_F32REC)))
		return;
	g_algo = _i % 2 ? LMK_GDN_CHUNKED : LMK_GDN_RECURRENT;
	run_case(&shapes[_i / 2], _i / 2, LMK_F32);
}
END_TEST

START_TEST(test_op_bf16)
{
	if (g_small && !(shapes[_i / 2].small & (_i % 2 ? S_BFCH : S_BFREC)))
		return;
	g_algo = _i % 2 ? LMK_GDN_CHUNKED : LMK_GDN_RECURRENT;
	run_case(&shapes[_i / 2], _i / 2, LMK_BF16);
}
END_TEST

START_TEST(test_ll_tc)
{
	if (g_small && !llshapes[_i].small)
		return;
	g_algo = LMK_GDN_CHUNKED;
	run_case(&llshapes[_i], NSHAPES + _i, LMK_BF16);
}
END_TEST

/* Decoding on the GPU, token by token, against the CPU parallel op. */
static const gshape dshapes[] = {
	{2, 37, 2, 64, 64, 1, 0, 0},      {2, 37, 2, 64, 64, 1, 1, 0},
	{1, 70, 3, 128, 128, 0, 1, 0},    {3, 20, 1, 5, 7, 1, 1, S_F32REC | S_BFREC},
	{1, 45, 2, 128, 128, 1, 0, 0},
};
#define NDSHAPES ((int)(sizeof dshapes / sizeof dshapes[0]))

static void run_decode(int si, lmk_dtype dt)
{
	g_algo = LMK_GDN_RECURRENT;
	const gshape *s = &dshapes[si];
	const int bf = dt == LMK_BF16;
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 7919u + (uint64_t)si * 2 + (uint64_t)bf);
	hin h;
	make_host(&h, s, &rng, bf);
	int64_t NL = h.shape[5][3], B = s->B, H = s->H, T = s->T;
	int64_t nout = B * T * H * s->Dv;
	float *par = malloc(sizeof(float) * (size_t)nout);
	ck_assert_int_eq(lmk_cpu_gdn_forward(par, h.x[0], h.x[1], h.x[2], s->la ? h.x[3] : NULL,
					     h.x[4], s->lam ? h.x[5] : NULL, B, T, H, s->Dk,
					     s->Dv, s->lam ? NL : 0, 0.25f, LMK_GDN_RECURRENT, 0),
			 0);
	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
	gc.arena.poison = 1;
	lmk_gdn_state st;
	ck_assert_int_eq(lmk_gdn_state_init(&st, &gc, B, H, s->Dk, s->Dv, s->lam, T), 0);
	int64_t per[6] = {H * s->Dk, H * s->Dk, H * s->Dv, H, H, H * NL};
	float *buf[6], *o = malloc(sizeof(float) * (size_t)(B * H * s->Dv));
	for (int i = 0; i < 6; i++)
		buf[i] = malloc(sizeof(float) * (size_t)(B * per[i]));
	double e2 = 0, r2 = 0;
	for (int64_t t = 0; t < T; t++) {
		lmk_tensor *x[6] = {0};
		for (int i = 0; i < 6; i++) {
			for (int64_t b = 0; b < B; b++)
				memcpy(buf[i] + b * per[i], h.x[i] + (b * T + t) * per[i],
				       sizeof(float) * (size_t)per[i]);
			int64_t shp[4] = {B, 1, H, i == 0 || i == 1 ? s->Dk : i == 2 ? s->Dv : NL};
			x[i] = lmk_tensor_new(&gc, dt, i == 3 || i == 4 ? 3 : 4, shp, 0);
			ck_assert_ptr_nonnull(x[i]);
			ck_assert_int_eq(lmk_tensor_write_f32(&gc, x[i], 0, buf[i]), 0);
		}
		lmk_tensor *y = lmk_gdn_step(&gc, &st, x[0], x[1], x[2], s->la ? x[3] : NULL, x[4],
					     s->lam ? x[5] : NULL, 0.25f);
		ck_assert_msg(y != NULL, "%s: step %lld: %s", shape_str(s, dt), (long long)t,
			      lmk_errmsg());
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, y, 0, o), 0);
		for (int64_t b = 0; b < B; b++)
			for (int64_t j = 0; j < H * s->Dv; j++) {
				float want = par[(b * T + t) * H * s->Dv + j], got = o[b * H * s->Dv + j];
				ck_assert_msg(isfinite(got), "%s: step %lld: element %lld is %g",
					      shape_str(s, dt), (long long)t, (long long)j, (double)got);
				e2 += ((double)got - want) * ((double)got - want);
				r2 += (double)want * want;
			}
		lmk_ctx_reset(&gc);
	}
	double e = sqrt(e2 / (r2 > 1e-30 ? r2 : 1));
	printf("test_cuda_gdn: decode %-33s %.1e\n", shape_str(s, dt), e);
	fflush(stdout);
	ck_assert_msg(e <= tol_out(dt), "%s: decoding differs from the parallel op by %.3g (seed %llu)",
		      shape_str(s, dt), e, (unsigned long long)g_seed);
	lmk_gdn_state_free(&st);
	lmk_ctx_free(&gc);
	for (int i = 0; i < 6; i++)
		free(buf[i]);
	free(o);
	free(par);
	free_host(&h);
}

START_TEST(test_decode_f32)
{
	if (g_small && !(dshapes[_i].small & S_F32REC))
		return;
	run_decode(_i, LMK_F32);
}
END_TEST

START_TEST(test_decode_bf16)
{
	if (g_small && !(dshapes[_i].small & S_BFREC))
		return;
	run_decode(_i, LMK_BF16);
}
END_TEST

/* Two runs of shape s give the same bits (no atomics, fixed summation
 * orders), for the variants var0 .. var1 - 1 (var % 2: chunked, var / 2:
 * log-linear). */
static void check_deterministic(gshape s, int var0, int var1)
{
	for (int var = var0; var < var1; var++) {
		lmk_gdn_opts o = {0, var % 2 ? LMK_GDN_CHUNKED : LMK_GDN_RECURRENT, 0};
		int ll = var / 2;
		lmk_rng rng;
		lmk_rng_init(&rng, 99);
		hin h;
		make_host(&h, &s, &rng, 1);
		int64_t nout = s.B * s.T * s.H * s.Dv;
		float *dout = malloc(sizeof(float) * (size_t)nout);
		for (int64_t i = 0; i < nout; i++)
			dout[i] = unif(&rng, -1, 1);
		float *res[2][7];
		for (int run = 0; run < 2; run++) {
			lmk_ctx gc;
			ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_BF16), 0);
			lmk_tensor *x[6] = {0};
			for (int i = 0; i < 6; i++) {
				if (i == 5 && !ll)
					continue;
				x[i] = lmk_tensor_new(&gc, LMK_BF16, h.ndim[i], h.shape[i], 1);
				ck_assert_ptr_nonnull(x[i]);
				ck_assert_int_eq(lmk_tensor_write_f32(&gc, x[i], 0, h.x[i]), 0);
			}
			lmk_tensor *y = lmk_gdn(&gc, x[0], x[1], x[2], x[3], x[4], x[5], &o);
			ck_assert_msg(y != NULL, "%s", lmk_errmsg());
			lmk_tensor *dg = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){nout}, dout);
			ck_assert_int_eq(lmk_backward_from(&gc, y, dg->data), 0);
			res[run][6] = malloc(sizeof(float) * (size_t)nout);
			ck_assert_int_eq(lmk_tensor_read_f32(&gc, y, 0, res[run][6]), 0);
			for (int i = 0; i < 6; i++) {
				res[run][i] = NULL;
				if (!x[i])
					continue;
				res[run][i] = malloc(sizeof(float) * (size_t)h.n[i]);
				ck_assert_int_eq(lmk_tensor_read_f32(&gc, x[i], 1, res[run][i]), 0);
			}
			lmk_ctx_free(&gc);
		}
		ck_assert_msg(!memcmp(res[0][6], res[1][6], sizeof(float) * (size_t)nout),
			      "algo %d ll %d: two forwards differ", o.algo, ll);
		for (int i = 0; i < 6; i++)
			if (res[0][i])
				ck_assert_msg(!memcmp(res[0][i], res[1][i], sizeof(float) * (size_t)h.n[i]),
					      "algo %d ll %d: two gradients of %s differ", o.algo, ll,
					      in_names[i]);
		for (int run = 0; run < 2; run++)
			for (int i = 0; i < 7; i++)
				free(res[run][i]);
		free(dout);
		free_host(&h);
	}
}

/* Both kernel sets, plain and log-linear. */
START_TEST(test_deterministic)
{
	if (g_small) {
		printf("test_cuda_gdn: deterministic: skipped under LMK_TEST_SMALL\n");
		return;
	}
	check_deterministic((gshape){2, 300, 2, 64, 64, 1, 1, 0}, 0, 4);
	printf("test_cuda_gdn: deterministic: both kernel sets, plain and log-linear\n");
}
END_TEST

/* Log-linear on the tensor cores with six chunk levels at head dims 128. */
START_TEST(test_ll_deterministic)
{
	if (g_small) {
		printf("test_cuda_gdn: deterministic log-linear: skipped under LMK_TEST_SMALL\n");
		return;
	}
	check_deterministic((gshape){2, 2100, 2, 128, 128, 1, 1, 0}, 3, 4);
	printf("test_cuda_gdn: deterministic: log-linear, tensor cores\n");
}
END_TEST

/* Head dims over the kernels' limit fail cleanly. */
START_TEST(test_unsupported)
{
	lmk_ctx gc;
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_F32), 0);
	lmk_tensor *q = lmk_tensor_new(&gc, LMK_F32, 4, (int64_t[]){1, 3, 1, 256}, 0);
	lmk_tensor *v = lmk_tensor_new(&gc, LMK_F32, 4, (int64_t[]){1, 3, 1, 8}, 0);
	lmk_tensor *b = lmk_tensor_new(&gc, LMK_F32, 3, (int64_t[]){1, 3, 1}, 0);
	ck_assert_ptr_null(lmk_gdn(&gc, q, q, v, NULL, b, NULL, NULL));
	ck_assert_int_eq(lmk_errcode(), LMK_EUNSUP);
	lmk_ctx_free(&gc);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_gdn: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SEED");
	g_seed = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	printf("test_cuda_gdn: seed %llu (LMK_TEST_SEED=%llu repeats this run)\n",
	       (unsigned long long)g_seed, (unsigned long long)g_seed);
	s = getenv("LMK_TEST_SMALL");
	g_small = s && *s && strcmp(s, "0") != 0;
	if (g_small) {
		int n[3] = {0, 0, 0};
		for (int i = 0; i < NSHAPES; i++)
			for (int b = 0; b < 4; b++)
				n[0] += shapes[i].small >> b & 1;
		for (int i = 0; i < NLLSHAPES; i++)
			n[1] += llshapes[i].small != 0;
		for (int i = 0; i < NDSHAPES; i++)
			for (int b = 0; b < 4; b++)
				n[2] += dshapes[i].small >> b & 1;
		printf("test_cuda_gdn: LMK_TEST_SMALL: %d of %d runs, %d of %d log-linear shapes, "
		       "%d of %d decodings, the others skipped\n", n[0], 4 * NSHAPES, n[1],
		       NLLSHAPES, n[2], 2 * NDSHAPES);
	}
	fflush(stdout);
	Suite *su = suite_create("cuda_gdn");
	TCase *tc = tcase_create("gdn");
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_op_f32, 0, 2 * NSHAPES);
	tcase_add_loop_test(tc, test_op_bf16, 0, 2 * NSHAPES);
	tcase_add_loop_test(tc, test_decode_f32, 0, NDSHAPES);
	tcase_add_loop_test(tc, test_decode_bf16, 0, NDSHAPES);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_unsupported);
	suite_add_tcase(su, tc);
	TCase *tl = tcase_create("ll_tc");
	tcase_set_timeout(tl, 600);
	tcase_add_loop_test(tl, test_ll_tc, 0, NLLSHAPES);
	tcase_add_test(tl, test_ll_deterministic);
	suite_add_tcase(su, tl);
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
	printf("test_cuda_gdn: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
