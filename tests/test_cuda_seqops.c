/* test_cuda_seqops.c: the ops of seqops.h on the GPU against their CPU
 * kernels, in both compute dtypes (F32, BF16).
 *
 * For each op, each shape of its table (1, odd sizes, sizes off every
 * multiple of 8 and 32, one realistic size) and each dtype: random inputs,
 * fresh each run (the seed is printed; LMK_TEST_SEED repeats a run), never
 * zeros; weights as parameters on the device (float32 master and gradient,
 * a bf16 copy in BF16). The GPU context poisons every allocation with 0xFF
 * bytes (NaN in f32 and bf16), so an element a kernel forgets to write
 * reads as NaN, and allocates each buffer separately so compute-sanitizer
 * sees the end of each. Input gradients start from random values, so a
 * backward that assigns instead of adding fails. Comparison: NaN and inf
 * first, then ||gpu - cpu|| / ||cpu||: 1e-5 in F32, 1e-2 in BF16, where
 * the CPU gets the same bf16-rounded inputs. One line per case gives its
 * worst forward and gradient errors.
 *
 * Then every token-mixer layer of mixer.h (a small layer, odd T) forward
 * and backward on the GPU against the CPU, output and every gradient
 * (parameters and input): 1e-4 in F32, 5e-2 in BF16 (a whole layer of
 * bf16 roundings) over all of them, and each tensor alone within 1e-4 in
 * F32, 0.2 in BF16 (sums that cancel); a kind whose core op has no CUDA kernel yet is reported
 * as skipped, not failed.
 *
 * LMK_TEST_SMALL=1 (for compute-sanitizer) keeps the shapes under 100k
 * elements and runs the mixers at batch 1 instead of 2 (T still 67).
 * Exits 77 without a device or in a CPU-only build. Runs without fork: a
 * child forked after CUDA is initialised cannot use the device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "err.h"
#include "mixer.h"
#include "rng.h"
#include "seqops.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

#define MAXIN 8

static uint64_t g_seed;
static int g_small;

static double tol_of(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-5; }

typedef struct ocase ocase;
typedef lmk_tensor *(*op_fn)(lmk_ctx *c, lmk_tensor **x, const ocase *o);

struct ocase {
	const char *op;
	op_fn fn;
	int nin;
	int ndim[MAXIN];
	int64_t shape[MAXIN][LMK_MAXDIM];
	int param[MAXIN];
	int frozen[MAXIN];
	float amp;
	int64_t p[4];
	float f[2];
};

static ocase *cases;
static int ncases, capcases;

static ocase *add_case(const char *op, op_fn fn)
{
	if (ncases == capcases) {
		capcases = capcases ? 2 * capcases : 64;
		cases = realloc(cases, (size_t)capcases * sizeof *cases);
	}
	ocase *o = &cases[ncases++];
	memset(o, 0, sizeof *o);
	o->op = op;
	o->fn = fn;
	o->amp = 1.0f;
	return o;
}

static void set_in(ocase *o, int k, int ndim, const int64_t *shape, int param, int frozen)
{
	o->ndim[k] = ndim;
	memcpy(o->shape[k], shape, sizeof(int64_t) * (size_t)ndim);
	o->param[k] = param;
	o->frozen[k] = frozen;
	if (k + 1 > o->nin)
		o->nin = k + 1;
}

static int64_t numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

/* ---- the ops as the cases call them */

static lmk_tensor *op_conv(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	return lmk_conv1d_causal(c, x[0], x[1], o->nin > 2 ? x[2] : NULL, (int)o->p[0]);
}

static lmk_tensor *op_l2norm(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	return lmk_l2norm(c, x[0], o->f[0]);
}

static lmk_tensor *op_unary(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	switch (o->p[0]) {
	case LMK_UNARY_SIGMOID:
		return lmk_sigmoid(c, x[0]);
	case LMK_UNARY_SOFTPLUS:
		return lmk_softplus(c, x[0]);
	case LMK_UNARY_LOGSIGMOID:
		return lmk_logsigmoid(c, x[0]);
	case LMK_UNARY_EXP:
		return lmk_exp(c, x[0]);
	default:
		return lmk_affine(c, x[0], o->f[0], o->f[1]);
	}
}

static lmk_tensor *op_mul_rows(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	return lmk_mul_rows(c, x[0], x[1]);
}

static lmk_tensor *op_slice(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	return lmk_slice(c, x[0], o->p[0], o->p[1]);
}

static lmk_tensor *op_concat(lmk_ctx *c, lmk_tensor **x, const ocase *o)
{
	return lmk_concat(c, o->nin, x);
}

static const char *const unary_names[] = {"sigmoid", "softplus", "logsigmoid", "exp", "affine"};

/* ---- the shape tables */

static void make_cases(void)
{
	/* conv1d: (B, T, C, W); the last is Mamba-2's at 768 hidden (conv
	 * over x, B, C: 1536 + 2*128) */
	static const int64_t cv[][4] = {{1, 1, 1, 1},   {1, 5, 3, 4},    {2, 7, 33, 4},
					{3, 67, 7, 3},  {2, 257, 65, 4}, {1, 33, 129, 2},
					{2, 512, 1792, 4}};
	for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++)
		for (int v = 0; v < 4; v++) {
			ocase *o = add_case("conv1d_causal", op_conv);
			o->p[0] = v & 1;
			o->amp = 1.5f;
			set_in(o, 0, 3, cv[i], 0, i == 2 && v == 3);
			set_in(o, 1, 2, (int64_t[]){cv[i][2], cv[i][3]}, 1, 0);
			if (v & 2)
				set_in(o, 2, 1, (int64_t[]){cv[i][2]}, 1, 0);
		}
	/* w an activation (a generated filter), no bias */
	{
		ocase *o = add_case("conv1d_causal", op_conv);
		o->p[0] = 1;
		set_in(o, 0, 3, (int64_t[]){2, 33, 67}, 0, 0);
		set_in(o, 1, 2, (int64_t[]){67, 4}, 0, 0);
	}
	/* l2norm: (N, D) */
	static const int64_t ln[][2] = {{1, 1},    {3, 7},     {33, 64},   {67, 129},
					{7, 1000}, {1024, 128}, {4099, 256}};
	for (size_t i = 0; i < sizeof ln / sizeof ln[0]; i++) {
		ocase *o = add_case("l2norm", op_l2norm);
		o->f[0] = ln[i][1] == 1 ? 0.5f : 1e-6f;
		o->amp = 2.0f;
		set_in(o, 0, 2, ln[i], 0, 0);
	}
	/* elementwise: (rows, M), inputs over the gates' working range */
	static const int64_t ne[][2] = {{1, 1}, {1, 3}, {3, 7}, {33, 67}, {67, 257}, {257, 2048}};
	for (int kind = 0; kind < 5; kind++)
		for (size_t i = 0; i < sizeof ne / sizeof ne[0]; i++) {
			ocase *o = add_case(unary_names[kind], op_unary);
			o->p[0] = kind;
			o->f[0] = 2.0f;
			o->f[1] = -0.5f;
			o->amp = kind == LMK_UNARY_EXP ? 4.0f : 8.0f;
			set_in(o, 0, 2, ne[i], 0, 0);
		}
	/* softplus across its threshold */
	{
		ocase *o = add_case("softplus", op_unary);
		o->p[0] = LMK_UNARY_SOFTPLUS;
		o->amp = 30.0f;
		set_in(o, 0, 2, (int64_t[]){33, 67}, 0, 0);
	}
	/* mul_rows: x (B,T,H,P) times s (B,T,H) (x * dt), or a parameter (H)
	 * (D * x) */
	static const int64_t mr[][4] = {{1, 1, 1, 1},  {1, 3, 5, 7},    {2, 7, 3, 33},
					{3, 67, 8, 64}, {2, 257, 24, 64}, {4, 512, 24, 64}};
	for (size_t i = 0; i < sizeof mr / sizeof mr[0]; i++)
		for (int v = 0; v < 2; v++) {
			ocase *o = add_case("mul_rows", op_mul_rows);
			set_in(o, 0, 4, mr[i], 0, i == 2 && v == 1);
			if (v)
				set_in(o, 1, 1, (int64_t[]){mr[i][2]}, 1, 0);
			else
				set_in(o, 1, 3, mr[i], 0, 0);
		}
	/* slice: (N, D, start, len) */
	static const int64_t sl[][4] = {{1, 1, 0, 1},     {3, 7, 2, 4},       {33, 67, 0, 67},
					{67, 257, 256, 1}, {257, 2048, 1000, 33}, {1024, 3328, 1536, 1536}};
	for (size_t i = 0; i < sizeof sl / sizeof sl[0]; i++) {
		ocase *o = add_case("slice", op_slice);
		o->p[0] = sl[i][2];
		o->p[1] = sl[i][3];
		set_in(o, 0, 2, sl[i], 0, 0);
	}
	/* concat: (N, n, widths...); with n > 3 the third input is frozen */
	static const int64_t cc[][MAXIN + 2] = {{1, 1, 1},           {3, 2, 1, 4},
						{33, 3, 7, 1, 33},   {67, 8, 1, 2, 3, 5, 8, 13, 21, 34},
						{257, 2, 1536, 257}, {1024, 3, 768, 128, 128}};
	for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) {
		ocase *o = add_case("concat", op_concat);
		int n = (int)cc[i][1];
		for (int k = 0; k < n; k++)
			set_in(o, k, 2, (int64_t[]){cc[i][0], cc[i][k + 2]}, 0, n > 3 && k == 2);
	}
	{
		/* parameters concatenated: (1, D) rows of weights */
		ocase *o = add_case("concat", op_concat);
		set_in(o, 0, 2, (int64_t[]){1, 7}, 1, 0);
		set_in(o, 1, 2, (int64_t[]){1, 33}, 0, 0);
		set_in(o, 2, 2, (int64_t[]){1, 5}, 1, 1);
	}
}

/* ------------------------------------------------------------ one case */

static float nonzero_uniform(lmk_rng *r, float amp)
{
	float x;
	do
		x = 2.0f * lmk_rng_uniform(r) - 1.0f;
	while (fabsf(x) < 1e-3f);
	return amp * x;
}

static void round_bf16(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lmk_bf16_to_f32(lmk_f32_to_bf16(x[i]));
}

static const char *case_str(const ocase *o, lmk_dtype dt)
{
	static char buf[320];
	int k = snprintf(buf, sizeof buf, "%s %s", o->op, lmk_dtype_name(dt));
	for (int i = 0; i < o->nin && k < (int)sizeof buf - 40; i++) {
		k += snprintf(buf + k, sizeof buf - (size_t)k, " %s(", o->param[i] ? "p" : "x");
		for (int d = 0; d < o->ndim[i]; d++)
			k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", d ? "," : "",
				      (long long)o->shape[i][d]);
		k += snprintf(buf + k, sizeof buf - (size_t)k, ")%s", o->frozen[i] ? "frozen" : "");
	}
	if (o->fn == op_conv)
		snprintf(buf + k, sizeof buf - (size_t)k, " silu %d", (int)o->p[0]);
	else if (o->fn == op_slice)
		snprintf(buf + k, sizeof buf - (size_t)k, " [%lld:+%lld]", (long long)o->p[0],
			 (long long)o->p[1]);
	return buf;
}

/* NaN and inf first, then ||a - b|| / ||b||. *where: the first bad index or -1. */
static double compare(const float *gpu, const float *cpu, int64_t n, int64_t *where)
{
	double e2 = 0, r2 = 0;
	*where = -1;
	for (int64_t i = 0; i < n; i++) {
		if (isfinite(cpu[i]) != isfinite(gpu[i]) ||
		    (!isfinite(cpu[i]) && (isnan(cpu[i]) != isnan(gpu[i]) ||
					  (!isnan(cpu[i]) && signbit(cpu[i]) != signbit(gpu[i]))))) {
			*where = i;
			return INFINITY;
		}
		if (!isfinite(cpu[i]))
			continue;
		double d = (double)gpu[i] - cpu[i];
		e2 += d * d;
		r2 += (double)cpu[i] * cpu[i];
	}
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

static double worst_fwd[2], worst_grad[2];
static int nrun[2];

static double check_close(const char *what, const ocase *o, lmk_dtype dt, const float *gpu,
			  const float *cpu, int64_t n)
{
	int64_t where;
	double e = compare(gpu, cpu, n, &where);
	if (where >= 0)
		ck_abort_msg("%s: %s: element %lld of %lld is %g on the GPU, %g on the CPU "
			     "(seed %llu)",
			     case_str(o, dt), what, (long long)where, (long long)n, (double)gpu[where],
			     (double)cpu[where], (unsigned long long)g_seed);
	if (!(e <= tol_of(dt))) {
		int64_t w = worst_at(gpu, cpu, n);
		ck_abort_msg("%s: %s differs by %.3g (tolerance %g); worst element %lld of %lld: "
			     "%.9g on the GPU, %.9g on the CPU (seed %llu)",
			     case_str(o, dt), what, e, tol_of(dt), (long long)w, (long long)n,
			     (double)gpu[w], (double)cpu[w], (unsigned long long)g_seed);
	}
	return e;
}

static void run_case(int ci, lmk_dtype dt)
{
	const ocase *o = &cases[ci];
	const int bf = dt == LMK_BF16;
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 1000003u + (uint64_t)ci * 2 + (uint64_t)bf);

	float *xh[MAXIN] = {0}, *prior[MAXIN] = {0}, *gcpu[MAXIN] = {0}, *ggpu[MAXIN] = {0};
	int64_t nx[MAXIN];
	for (int k = 0; k < o->nin; k++) {
		nx[k] = numel(o->ndim[k], o->shape[k]);
		xh[k] = malloc(sizeof(float) * (size_t)nx[k]);
		for (int64_t i = 0; i < nx[k]; i++)
			xh[k][i] = nonzero_uniform(&rng, o->amp);
		if (bf)
			round_bf16(xh[k], nx[k]);
		if (o->frozen[k])
			continue;
		prior[k] = malloc(sizeof(float) * (size_t)nx[k]);
		gcpu[k] = malloc(sizeof(float) * (size_t)nx[k]);
		ggpu[k] = malloc(sizeof(float) * (size_t)nx[k]);
		for (int64_t i = 0; i < nx[k]; i++)
			prior[k][i] = nonzero_uniform(&rng, 0.01f);
		if (bf && !o->param[k]) /* an activation's gradient is bf16 */
			round_bf16(prior[k], nx[k]);
	}

	/* ---- the CPU */
	lmk_ctx cc;
	lmk_tensor *xc[MAXIN] = {0};
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	for (int k = 0; k < o->nin; k++) {
		xc[k] = lmk_tensor_new(&cc, LMK_F32, o->ndim[k], o->shape[k], !o->frozen[k]);
		ck_assert_ptr_nonnull(xc[k]);
		memcpy(xc[k]->data, xh[k], sizeof(float) * (size_t)nx[k]);
	}
	lmk_tensor *oc = o->fn(&cc, xc, o);
	ck_assert_msg(oc != NULL, "%s: the CPU op failed: %s", case_str(o, dt), lmk_errmsg());
	int64_t nout = oc->n;
	float *dout = malloc(sizeof(float) * (size_t)nout);
	float *ocpu = malloc(sizeof(float) * (size_t)nout);
	float *ogpu = malloc(sizeof(float) * (size_t)nout);
	memcpy(ocpu, oc->data, sizeof(float) * (size_t)nout);
	for (int64_t i = 0; i < nout; i++)
		dout[i] = nonzero_uniform(&rng, 1.0f);
	if (bf)
		round_bf16(dout, nout);
	for (int k = 0; k < o->nin; k++)
		if (prior[k])
			memcpy(xc[k]->grad, prior[k], sizeof(float) * (size_t)nx[k]);
	ck_assert_msg(lmk_backward_from(&cc, oc, dout) == 0, "%s: CPU backward: %s",
		      case_str(o, dt), lmk_errmsg());
	for (int k = 0; k < o->nin; k++)
		if (gcpu[k])
			memcpy(gcpu[k], xc[k]->grad, sizeof(float) * (size_t)nx[k]);

	/* ---- the GPU */
	lmk_ctx gc;
	lmk_params pp[MAXIN];
	lmk_tensor *xg[MAXIN] = {0};
	ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, dt), 0);
	gc.arena.chunk = 1;  /* one cudaMalloc per buffer: sanitizer sees each end */
	gc.arena.poison = 1; /* NaN wherever a kernel forgets to write */
	for (int k = 0; k < o->nin; k++) {
		if (o->param[k]) {
			lmk_params_init(&pp[k], !o->frozen[k]);
			ck_assert_int_eq(lmk_params_add(&pp[k], "w", o->ndim[k], o->shape[k]), 0);
			ck_assert_int_eq(lmk_params_alloc(&pp[k]), 0);
			memcpy(pp[k].data, xh[k], sizeof(float) * (size_t)nx[k]);
			ck_assert_int_eq(lmk_params_to_device(&pp[k], &gc), 0);
			xg[k] = &pp[k].t[0];
		} else {
			xg[k] = lmk_tensor_new(&gc, dt, o->ndim[k], o->shape[k], !o->frozen[k]);
			ck_assert_ptr_nonnull(xg[k]);
			ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[k], 0, xh[k]), 0);
		}
	}
	lmk_tensor *og = o->fn(&gc, xg, o);
	ck_assert_msg(og != NULL, "%s: the GPU op failed: %s", case_str(o, dt), lmk_errmsg());
	ck_assert_int_eq(og->dtype, dt);
	ck_assert_int_eq(og->n, nout);
	ck_assert_msg(lmk_tensor_read_f32(&gc, og, 0, ogpu) == 0, "%s: %s", case_str(o, dt),
		      lmk_errmsg());
	double ef = check_close("forward", o, dt, ogpu, ocpu, nout), eg = 0;

	for (int k = 0; k < o->nin; k++)
		if (prior[k])
			ck_assert_int_eq(lmk_tensor_write_f32(&gc, xg[k], 1, prior[k]), 0);
	lmk_tensor *dg = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){nout}, dout);
	ck_assert_ptr_nonnull(dg);
	ck_assert_msg(lmk_backward_from(&gc, og, dg->data) == 0, "%s: GPU backward: %s",
		      case_str(o, dt), lmk_errmsg());
	ck_assert_msg(lmk_ctx_sync(&gc) == 0, "%s: after the backward: %s", case_str(o, dt),
		      lmk_errmsg());
	for (int k = 0; k < o->nin; k++) {
		if (!gcpu[k])
			continue;
		ck_assert_int_eq(xg[k]->gdtype, o->param[k] ? LMK_F32 : dt);
		ck_assert_int_eq(lmk_tensor_read_f32(&gc, xg[k], 1, ggpu[k]), 0);
		char what[48];
		snprintf(what, sizeof what, "gradient of input %d", k);
		double e = check_close(what, o, dt, ggpu[k], gcpu[k], nx[k]);
		if (e > eg)
			eg = e;
	}
	printf("test_cuda_seqops: %-60s forward %.1e, gradients %.1e\n", case_str(o, dt), ef, eg);
	if (ef > worst_fwd[bf])
		worst_fwd[bf] = ef;
	if (eg > worst_grad[bf])
		worst_grad[bf] = eg;
	nrun[bf]++;

	for (int k = 0; k < o->nin; k++)
		if (o->param[k])
			lmk_params_free(&pp[k]);
	lmk_ctx_free(&gc);
	lmk_ctx_free(&cc);
	for (int k = 0; k < o->nin; k++) {
		free(xh[k]);
		free(prior[k]);
		free(gcpu[k]);
		free(ggpu[k]);
	}
	free(dout);
	free(ocpu);
	free(ogpu);
}

static int case_small(const ocase *o)
{
	int64_t total = 0;
	for (int k = 0; k < o->nin; k++)
		total += numel(o->ndim[k], o->shape[k]);
	return total <= 100000;
}

static const char *const op_names[] = {"conv1d_causal", "l2norm", "sigmoid", "softplus",
				       "logsigmoid",    "exp",    "affine",  "mul_rows",
				       "slice",         "concat"};
#define NOPS ((int)(sizeof op_names / sizeof op_names[0]))

START_TEST(test_op)
{
	const char *name = op_names[_i];
	worst_fwd[0] = worst_fwd[1] = worst_grad[0] = worst_grad[1] = 0;
	nrun[0] = nrun[1] = 0;
	for (int ci = 0; ci < ncases; ci++) {
		if (strcmp(cases[ci].op, name) || (g_small && !case_small(&cases[ci])))
			continue;
		run_case(ci, LMK_F32);
		run_case(ci, LMK_BF16);
	}
	printf("test_cuda_seqops: %-13s F32 %2d shapes: forward %.1e, gradients %.1e | BF16 %2d "
	       "shapes: forward %.1e, gradients %.1e\n",
	       name, nrun[0], worst_fwd[0], worst_grad[0], nrun[1], worst_fwd[1], worst_grad[1]);
	fflush(stdout);
}
END_TEST

/* The convolution's weight gradient twice: the same bits (no atomics). */
START_TEST(test_deterministic)
{
	int ci = -1;
	for (int i = 0; i < ncases; i++)
		if (cases[i].fn == op_conv && cases[i].shape[0][1] == 257 && cases[i].nin == 3 &&
		    cases[i].p[0])
			ci = i;
	ck_assert_int_ge(ci, 0);
	const ocase *o = &cases[ci];
	float *g[2];
	size_t n = 0;
	for (int run = 0; run < 2; run++) {
		lmk_rng rng;
		lmk_rng_init(&rng, g_seed);
		lmk_ctx gc;
		lmk_params pp;
		ck_assert_int_eq(lmk_ctx_init_ex(&gc, LMK_DEV_CUDA, 0, LMK_BF16), 0);
		lmk_params_init(&pp, 1);
		ck_assert_int_eq(lmk_params_add(&pp, "w", 2, o->shape[1]), 0);
		ck_assert_int_eq(lmk_params_add(&pp, "b", 1, o->shape[2]), 1);
		ck_assert_int_eq(lmk_params_alloc(&pp), 0);
		for (size_t i = 0; i < pp.n; i++)
			pp.data[i] = nonzero_uniform(&rng, 1.0f);
		ck_assert_int_eq(lmk_params_to_device(&pp, &gc), 0);
		int64_t nx = numel(3, o->shape[0]);
		float *xh = malloc(sizeof(float) * (size_t)nx), *dh = malloc(sizeof(float) * (size_t)nx);
		for (int64_t i = 0; i < nx; i++) {
			xh[i] = nonzero_uniform(&rng, 1.0f);
			dh[i] = nonzero_uniform(&rng, 1.0f);
		}
		lmk_tensor *x = lmk_tensor_new(&gc, LMK_BF16, 3, o->shape[0], 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&gc, x, 0, xh), 0);
		lmk_tensor *y = lmk_conv1d_causal(&gc, x, &pp.t[0], &pp.t[1], 1);
		ck_assert_ptr_nonnull(y);
		lmk_tensor *d = lmk_tensor_upload(&gc, LMK_F32, 1, (int64_t[]){nx}, dh);
		ck_assert_int_eq(lmk_backward_from(&gc, y, d->data), 0);
		n = pp.n;
		g[run] = malloc(sizeof(float) * n);
		ck_assert_int_eq(lmk_params_copy_to_host(&pp, 1, g[run]), 0);
		lmk_params_free(&pp);
		lmk_ctx_free(&gc);
		free(xh);
		free(dh);
	}
	ck_assert_msg(memcmp(g[0], g[1], sizeof(float) * n) == 0,
		      "conv1d_causal: dw and db differ between two identical runs");
	free(g[0]);
	free(g[1]);
}
END_TEST

/* ------------------------------------------------------------ the mixers */

/* One layer's output and gradients (parameters, then x), flattened. */
static int mixer_run(lmk_device dev, lmk_dtype dt, const lmk_mixer_config *cfg, const float *x,
		     const float *dout, int64_t B, int64_t T, float *out, float *grads,
		     size_t *ng)
{
	lmk_ctx c;
	lmk_params p;
	lmk_mixer m;
	ck_assert_int_eq(lmk_ctx_init_ex(&c, dev, 0, dt), 0);
	lmk_params_init(&p, 1);
	ck_assert_int_eq(lmk_mixer_register(&m, cfg, &p, "mixer."), 0);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	ck_assert_int_eq(lmk_mixer_bind(&m, &p), 0);
	ck_assert_int_eq(lmk_mixer_init_weights(&m, 2024), 0);
	/* nudge every value: D, norms and L are ones, biases zeros */
	lmk_rng r;
	lmk_rng_init(&r, 77);
	for (size_t i = 0; i < p.n; i++)
		p.data[i] += 0.05f * (2 * lmk_rng_uniform(&r) - 1);
	ck_assert_int_eq(lmk_params_to_device(&p, &c), 0);
	lmk_params_zero_grad(&p);
	int64_t n = B * T * cfg->hidden;
	lmk_tensor *xt = lmk_tensor_new(&c, dt, 3, (int64_t[]){B, T, cfg->hidden}, 1);
	ck_assert_ptr_nonnull(xt);
	ck_assert_int_eq(lmk_tensor_write_f32(&c, xt, 0, x), 0);
	lmk_tensor *y = lmk_mixer_forward(&c, &m, xt);
	if (!y) {
		int code = lmk_errcode();
		ck_assert_msg(code == LMK_EUNSUP, "%s on %s: %s", lmk_mixer_kind_name(cfg->kind),
			      dev == LMK_DEV_CPU ? "the CPU" : "the GPU", lmk_errmsg());
		lmk_params_free(&p);
		lmk_ctx_free(&c);
		return code;
	}
	ck_assert_int_eq(lmk_tensor_read_f32(&c, y, 0, out), 0);
	const float *dsrc = dout;
	lmk_tensor *dg = NULL;
	if (dev == LMK_DEV_CUDA) {
		dg = lmk_tensor_upload(&c, LMK_F32, 1, (int64_t[]){n}, dout);
		ck_assert_ptr_nonnull(dg);
		dsrc = dg->data;
	}
	ck_assert_msg(lmk_backward_from(&c, y, dsrc) == 0, "%s backward: %s",
		      lmk_mixer_kind_name(cfg->kind), lmk_errmsg());
	ck_assert_int_eq(lmk_ctx_sync(&c), 0);
	ck_assert_int_eq(lmk_params_copy_to_host(&p, 1, grads), 0);
	ck_assert_int_eq(lmk_tensor_read_f32(&c, xt, 1, grads + p.n), 0);
	*ng = p.n + (size_t)n;
	lmk_params_free(&p);
	lmk_ctx_free(&c);
	return 0;
}

START_TEST(test_mixers)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++) {
		lmk_mixer_config cfg;
		lmk_mixer_defaults(&cfg, kind, 96);
		cfg.init_std = 0.1f;
		if (lmk_mixer_check(&cfg) == LMK_EUNSUP) {
			printf("test_cuda_seqops: mixer %-9s skipped: %s\n", lmk_mixer_kind_name(kind),
			       lmk_errmsg());
			continue;
		}
		if (kind == LMK_MIXER_MAMBA2 || kind == LMK_MIXER_LL_MAMBA2) {
			cfg.heads = 6;
			cfg.head_dim = 32;
			cfg.state = 16;
			cfg.groups = 2;
		} else if (kind == LMK_MIXER_GDN || kind == LMK_MIXER_LL_GDN) {
			cfg.heads = 3;
			cfg.head_dim = 32;
			cfg.head_dim_v = 48;
		} else {
			cfg.heads = 3;
			cfg.head_dim = 32;
			cfg.head_dim_v = 32;
			cfg.groups = kind == LMK_MIXER_PATH_FOX ? 1 : 3;
		}
		int64_t B = g_small ? 1 : 2, T = 67, n = B * T * cfg.hidden;
		int64_t np = lmk_mixer_param_count(&cfg) + 16 * LMK_MIXER_MAXP; /* with padding */
		float *x = malloc(sizeof(float) * (size_t)n), *d = malloc(sizeof(float) * (size_t)n);
		float *oc = malloc(sizeof(float) * (size_t)n), *og = malloc(sizeof(float) * (size_t)n);
		float *gc = malloc(sizeof(float) * (size_t)(np + n));
		float *gg = malloc(sizeof(float) * (size_t)(np + n));
		for (int bf = 0; bf < 2; bf++) {
			lmk_dtype dt = bf ? LMK_BF16 : LMK_F32;
			lmk_rng r;
			lmk_rng_init(&r, g_seed + (uint64_t)kind);
			for (int64_t i = 0; i < n; i++) {
				x[i] = nonzero_uniform(&r, 1.0f);
				d[i] = nonzero_uniform(&r, 1.0f);
			}
			if (bf) {
				round_bf16(x, n);
				round_bf16(d, n);
			}
			size_t nc, ngp;
			ck_assert_int_eq(mixer_run(LMK_DEV_CPU, LMK_F32, &cfg, x, d, B, T, oc, gc, &nc),
					 0);
			int rc = mixer_run(LMK_DEV_CUDA, dt, &cfg, x, d, B, T, og, gg, &ngp);
			if (rc == LMK_EUNSUP) {
				printf("test_cuda_seqops: mixer %-9s %s skipped: %s\n",
				       lmk_mixer_kind_name(kind), lmk_dtype_name(dt), lmk_errmsg());
				break;
			}
			ck_assert_int_eq(nc, ngp);
			double tol = bf ? 5e-2 : 1e-4;
			int64_t where;
			double ef = compare(og, oc, n, &where), eg = compare(gg, gc, (int64_t)nc, &where);
			/* each tensor on its own too: a small gradient (dt_bias)
			 * would hide in the sum; sums over B*T terms that cancel
			 * make bf16 looser there (0.2, still far from a wrong sign) */
			lmk_params lay;
			lmk_mixer lm;
			lmk_params_init(&lay, 0);
			ck_assert_int_eq(lmk_mixer_register(&lm, &cfg, &lay, "mixer."), 0);
			ck_assert_int_eq(lmk_params_alloc(&lay), 0);
			ck_assert_int_eq((int64_t)lay.n + n, (int64_t)nc);
			double worst_t = 0;
			const char *worst_name = "none";
			for (int i = 0; i <= lay.nt; i++) {
				size_t off = i < lay.nt ? lay.offset[i] : lay.n;
				int64_t cnt = i < lay.nt ? lay.t[i].n : n;
				double e = compare(gg + off, gc + off, cnt, &where);
				if (!(e <= worst_t)) {
					worst_t = e;
					worst_name = i < lay.nt ? lay.t[i].name : "x";
				}
				ck_assert_msg(e <= (bf ? 0.2 : tol),
					      "mixer %s %s: gradient of %s differs by %.3g (seed %llu)",
					      lmk_mixer_kind_name(kind), lmk_dtype_name(dt),
					      i < lay.nt ? lay.t[i].name : "x", e,
					      (unsigned long long)g_seed);
			}
			printf("test_cuda_seqops: mixer %-9s %s: forward %.1e, gradients %.1e, worst "
			       "tensor %s %.1e (tolerance %g)\n",
			       lmk_mixer_kind_name(kind), lmk_dtype_name(dt), ef, eg, worst_name,
			       worst_t, tol);
			fflush(stdout);
			lmk_params_free(&lay);
			ck_assert_msg(ef <= tol && eg <= tol,
				      "mixer %s %s: forward %.3g, gradients %.3g (tolerance %g, seed "
				      "%llu)",
				      lmk_mixer_kind_name(kind), lmk_dtype_name(dt), ef, eg, tol,
				      (unsigned long long)g_seed);
		}
		free(x);
		free(d);
		free(oc);
		free(og);
		free(gc);
		free(gg);
	}
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_seqops: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SEED");
	g_seed = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	s = getenv("LMK_TEST_SMALL");
	g_small = s && *s && strcmp(s, "0") != 0;
	printf("test_cuda_seqops: seed %llu (LMK_TEST_SEED=%llu repeats this run)%s\n",
	       (unsigned long long)g_seed, (unsigned long long)g_seed,
	       g_small ? ", small shapes only (LMK_TEST_SMALL: the larger ones skipped, the "
			 "mixers at batch 1)" : "");
	fflush(stdout);
	make_cases();

	Suite *su = suite_create("cuda_seqops");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_op, 0, NOPS);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_mixers);
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	free(cases);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda_seqops: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
