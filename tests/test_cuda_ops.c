/* test_cuda_ops.c: every op of ops.h on the GPU against its CPU kernel, the
 * fused AdamW and the gradient norm against lib/optim.c, and 20 training
 * steps of a tiny Llama on the GPU against the CPU.
 *
 * Ops: for each op, each shape of its table (1, odd sizes, sizes off every
 * multiple of 8 and 32, one realistic size) and each compute dtype (F32,
 * BF16): random inputs, fresh each run (the seed is printed; LMK_TEST_SEED
 * repeats a run), never zeros; weights are parameters on the device
 * (float32 master, float32 gradient, a bf16 copy in BF16). The GPU context
 * poisons every allocation with 0xFF bytes (NaN in f32 and bf16), so an
 * output element a kernel forgets to write reads as NaN, and allocates each
 * buffer separately (cudaMalloc), so that compute-sanitizer sees the end of
 * every buffer. Input gradients start from random values, so a backward
 * that assigns instead of adding fails. Each case runs twice more with the
 * op reading copies of its activation inputs made by an op (lmk_scale by
 * 1), whose gradients the tape leaves unwritten, so that the backward
 * assigns them (tensor.h) where it can. Outputs and gradients are compared
 * NaN and inf first, then by the normalised error ||gpu - cpu|| / ||cpu||:
 * 1e-5 in F32 (fp32 everywhere, no TF32), 1e-2 in BF16. In BF16 the CPU
 * gets the same bf16-rounded inputs, so the error measured is the GPU's.
 * lmk_linear_cat, whose weights must be adjacent parameters, has a table
 * of its own (run_linear_cat); it and swiglu_cat make the Check case
 * "fused"; cross-entropy is the case "cross_entropy", the other ops "ops".
 *
 * LMK_TEST_SMALL=1 (for compute-sanitizer runs) keeps the shapes under 100k
 * elements and trains a one-layer model for 2 steps (each check, 2 runs for
 * determinism), instead of two layers for 20 (and 3). Exits 77 without a
 * device or in a CPU-only build. Runs without fork: a child forked after
 * CUDA is initialised cannot use the device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "err.h"
#include "llama.h"
#include "ops.h"
#include "optim.h"
#include "rng.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/gemv_cuda.h"

#define MAXIN 4
#define MAXI 2
#define IGNORE (-100)
/* the scale of the gradients preloaded into the inputs (the backward adds) */
#define PRIOR_SCALE 0.01f

static uint64_t g_seed;
static int g_small;
static int g_chain; /* the case's op reads copies made by lmk_scale */

static double tol_of(lmk_dtype dt) { return dt == LMK_BF16 ? 1e-2 : 1e-5; }

/* ------------------------------------------------------------ the cases */

enum { IK_IDS, IK_POS, IK_SEG, IK_TARGETS };

typedef struct ocase ocase;
typedef lmk_tensor *(*op_fn)(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			     int64_t *count);

struct ocase {
	const char *op;
	op_fn fn;
	int nin;
	int ndim[MAXIN];
	int64_t shape[MAXIN][LMK_MAXDIM];
	int param[MAXIN];                /* a parameter on the device */
	int frozen[MAXIN];               /* no gradient */
	float amp;                       /* inputs uniform in +-amp */
	int nint;
	int ikind[MAXI];
	int indim[MAXI];
	int64_t ishape[MAXI][LMK_MAXDIM];
	int64_t irange[MAXI];            /* integer values in [0, irange) */
	int f32_out;                     /* the output is float32 in any dtype (a loss) */
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

static void set_int(ocase *o, int j, int kind, int ndim, const int64_t *shape, int64_t range)
{
	o->ikind[j] = kind;
	o->indim[j] = ndim;
	memcpy(o->ishape[j], shape, sizeof(int64_t) * (size_t)ndim);
	o->irange[j] = range;
	if (j + 1 > o->nint)
		o->nint = j + 1;
}

static int64_t numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

/* ---- the ops as the cases call them */

static lmk_tensor *op_embedding(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				int64_t *cnt)
{
	return lmk_embedding(c, ix[0], x[0]);
}

static lmk_tensor *op_linear(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			     int64_t *cnt)
{
	return lmk_linear(c, x[0], x[1], o->nin > 2 ? x[2] : NULL);
}

static lmk_tensor *op_linear_add(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				 int64_t *cnt)
{
	return lmk_linear_add(c, x[0], x[1], o->nin > 3 ? x[3] : NULL, x[2]);
}

static lmk_tensor *op_rmsnorm(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			      int64_t *cnt)
{
	return lmk_rmsnorm(c, x[0], o->nin > 1 ? x[1] : NULL, o->f[0]);
}

static lmk_tensor *op_layernorm(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				int64_t *cnt)
{
	return lmk_layernorm(c, x[0], o->nin > 1 ? x[1] : NULL, o->nin > 2 ? x[2] : NULL, o->f[0]);
}

static lmk_tensor *op_rope(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			   int64_t *cnt)
{
	lmk_rope r;
	lmk_rope_scaling s = {LMK_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 64};
	if (lmk_rope_init(&r, (int)x[0]->shape[3], 10000.0f, o->p[0] ? &s : NULL) < 0)
		return NULL;
	lmk_tensor *y = lmk_rope_apply(c, x[0], &r, ix[0]);
	lmk_rope_free(&r); /* the op keeps its own copy of the table */
	return y;
}

static lmk_tensor *op_attention(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				int64_t *cnt)
{
	float scale = 1.0f / sqrtf((float)x[0]->shape[3]);
	return lmk_attention_ex(c, x[0], x[1], x[2], o->nint ? ix[0] : NULL, scale, (int)o->p[0]);
}

static lmk_tensor *op_silu(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			   int64_t *cnt)
{
	return lmk_silu(c, x[0]);
}

static lmk_tensor *op_gelu(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			   int64_t *cnt)
{
	return lmk_gelu(c, x[0], (int)o->p[0]);
}

static lmk_tensor *op_swiglu(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			     int64_t *cnt)
{
	return lmk_swiglu(c, x[0], x[1]);
}

static lmk_tensor *op_swiglu_cat(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				 int64_t *cnt)
{
	return lmk_swiglu_cat(c, x[0]);
}

static lmk_tensor *op_add(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			  int64_t *cnt)
{
	return lmk_add(c, x[0], x[1]);
}

static lmk_tensor *op_mul(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			  int64_t *cnt)
{
	return lmk_mul(c, x[0], x[1]);
}

static lmk_tensor *op_scale(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			    int64_t *cnt)
{
	return lmk_scale(c, x[0], o->f[0]);
}

static lmk_tensor *op_dropout(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
			      int64_t *cnt)
{
	c->seed = (uint64_t)o->p[0];
	c->counter = (uint64_t)o->p[1];
	return lmk_dropout(c, x[0], o->f[0]);
}

static lmk_tensor *op_cross_entropy(lmk_ctx *c, lmk_tensor **x, lmk_tensor **ix, const ocase *o,
				    int64_t *cnt)
{
	return lmk_cross_entropy(c, x[0], ix[0], IGNORE, cnt);
}

/* ---- the shape tables */

static void make_cases(void)
{
	/* embedding: (N ids, V rows, C), w a parameter or an activation */
	static const int64_t emb[][3] = {{1, 1, 1},     {3, 7, 3},     {33, 67, 7},
					 {67, 257, 33}, {257, 33, 768}, {1024, 8192, 768},
					 {4096, 259, 2048}};
	for (size_t i = 0; i < sizeof emb / sizeof emb[0]; i++)
		for (int param = 1; param >= 0; param--) {
			ocase *o = add_case("embedding", op_embedding);
			set_in(o, 0, 2, (int64_t[]){emb[i][1], emb[i][2]}, param, 0);
			set_int(o, 0, IK_IDS, 2, (int64_t[]){1, emb[i][0]}, emb[i][1]);
		}
	/* linear: (N, IC, OC), with and without bias, dinp or not */
	static const int64_t lin[][3] = {{1, 1, 1},     {3, 7, 5},       {7, 33, 3},
					 {33, 67, 257}, {67, 257, 33},   {257, 768, 67},
					 {1, 2048, 768}, {2048, 768, 2048}};
	for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
		for (int v = 0; v < 3; v++) {
			ocase *o = add_case("linear", op_linear);
			set_in(o, 0, 2, (int64_t[]){lin[i][0], lin[i][1]}, 0, v == 2);
			set_in(o, 1, 2, (int64_t[]){lin[i][2], lin[i][1]}, 1, 0);
			if (v >= 1)
				set_in(o, 2, 1, (int64_t[]){lin[i][2]}, 1, 0);
		}
	/* a 3-d input, as models call it */
	{
		ocase *o = add_case("linear", op_linear);
		set_in(o, 0, 3, (int64_t[]){2, 33, 67}, 0, 0);
		set_in(o, 1, 2, (int64_t[]){35, 67}, 1, 0);
		set_in(o, 2, 1, (int64_t[]){35}, 1, 0);
	}
	/* linear_add: the linear shapes (up to 8 rows: gemv.cu's fused
	 * residual; more: cuBLASLt onto r), r (N,OC), with and without bias;
	 * in the chained runs r's gradient takes over the output's */
	for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
		for (int v = 0; v < 2; v++) {
			ocase *o = add_case("linear_add", op_linear_add);
			set_in(o, 0, 2, (int64_t[]){lin[i][0], lin[i][1]}, 0, 0);
			set_in(o, 1, 2, (int64_t[]){lin[i][2], lin[i][1]}, 1, 0);
			set_in(o, 2, 2, (int64_t[]){lin[i][0], lin[i][2]}, 0, 0);
			if (v)
				set_in(o, 3, 1, (int64_t[]){lin[i][2]}, 1, 0);
		}
	{
		ocase *o = add_case("linear_add", op_linear_add);
		set_in(o, 0, 3, (int64_t[]){2, 33, 64}, 0, 0);
		set_in(o, 1, 2, (int64_t[]){40, 64}, 1, 0);
		set_in(o, 2, 3, (int64_t[]){2, 33, 40}, 0, 0);
		set_in(o, 3, 1, (int64_t[]){40}, 1, 0);
	}
	/* norms: (N, C), weights or none (rmsnorm's rows in registers: C up
	 * to 1536 a multiple of 8, 1 to 6 groups of 256 channels, the last
	 * one full or not) */
	static const int64_t nrm[][2] = {{1, 1},     {3, 7},      {7, 33},      {33, 67},
					 {67, 257},  {257, 768},  {1024, 2048}, {3, 4099},
					 {1, 8},     {67, 64},    {100, 1536},  {33, 1544},
					 {45, 520},  {70, 1032}};
	for (size_t i = 0; i < sizeof nrm / sizeof nrm[0]; i++)
		for (int v = 0; v < 2; v++) {
			ocase *o = add_case("rmsnorm", op_rmsnorm);
			o->f[0] = nrm[i][1] == 1 ? 0.25f : 1e-5f;
			o->amp = 2.0f;
			set_in(o, 0, 2, nrm[i], 0, 0);
			if (v == 0)
				set_in(o, 1, 1, (int64_t[]){nrm[i][1]}, 1, 0);
			o = add_case("layernorm", op_layernorm);
			/* with C = 1 the input gradient is pure cancellation,
			 * amplified by rstd = 1/sqrt(eps): a large eps keeps it a
			 * test of the kernel rather than of float32 (as test_ops) */
			o->f[0] = nrm[i][1] == 1 ? 0.25f : 1e-5f;
			o->amp = 2.0f;
			set_in(o, 0, 2, nrm[i], 0, 0);
			if (v == 0) {
				set_in(o, 1, 1, (int64_t[]){nrm[i][1]}, 1, 0);
				set_in(o, 2, 1, (int64_t[]){nrm[i][1]}, 1, 0);
			}
		}
	/* rope: (B, T, H, D), positions up to 8191, llama3 scaling or none */
	static const int64_t rp[][4] = {{1, 1, 1, 2},   {1, 3, 3, 4},    {2, 7, 3, 6},
					{3, 33, 7, 64}, {2, 67, 12, 64}, {1, 257, 8, 128}};
	for (size_t i = 0; i < sizeof rp / sizeof rp[0]; i++)
		for (int sc = 0; sc < 2; sc++) {
			ocase *o = add_case("rope", op_rope);
			o->p[0] = sc;
			set_in(o, 0, 4, rp[i], 0, 0);
			set_int(o, 0, IK_POS, 2, (int64_t[]){rp[i][0], rp[i][1]}, 8192);
		}
	/* attention: (B, T, H, K, D, causal, seg) */
	static const int64_t at[][7] = {{1, 1, 1, 1, 8, 1, 0},   {2, 7, 4, 2, 16, 1, 0},
					{1, 33, 4, 4, 64, 0, 0}, {2, 67, 6, 2, 64, 1, 1},
					{1, 67, 3, 1, 32, 0, 1}, {1, 257, 8, 8, 128, 1, 0},
					{2, 33, 2, 2, 256, 1, 0}};
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		ocase *o = add_case("attention", op_attention);
		o->p[0] = at[i][5];
		set_in(o, 0, 4, (int64_t[]){at[i][0], at[i][1], at[i][2], at[i][4]}, 0, 0);
		set_in(o, 1, 4, (int64_t[]){at[i][0], at[i][1], at[i][3], at[i][4]}, 0, 0);
		set_in(o, 2, 4, (int64_t[]){at[i][0], at[i][1], at[i][3], at[i][4]}, 0, 0);
		if (at[i][6])
			set_int(o, 0, IK_SEG, 2, (int64_t[]){at[i][0], at[i][1]}, 0);
	}
	/* elementwise: (rows, M) */
	static const int64_t ne[][2] = {{1, 1},   {1, 3},    {3, 7},   {7, 33},
					{33, 67}, {67, 257}, {7, 768}, {257, 2048}};
	for (size_t i = 0; i < sizeof ne / sizeof ne[0]; i++) {
		const int64_t *sh = ne[i];
		ocase *o = add_case("silu", op_silu);
		o->amp = 4.0f;
		set_in(o, 0, 2, sh, 0, 0);
		for (int ap = 0; ap < 2; ap++) {
			o = add_case("gelu", op_gelu);
			o->amp = 4.0f;
			o->p[0] = ap;
			set_in(o, 0, 2, sh, 0, 0);
		}
		o = add_case("swiglu", op_swiglu);
		o->amp = 4.0f;
		set_in(o, 0, 2, sh, 0, 0);
		set_in(o, 1, 2, sh, 0, 0);
		o = add_case("swiglu_cat", op_swiglu_cat);
		o->amp = 4.0f;
		set_in(o, 0, 2, (int64_t[]){sh[0], 2 * sh[1]}, 0, 0);
		o = add_case("scale", op_scale);
		o->f[0] = -1.75f;
		set_in(o, 0, 2, sh, 0, 0);
		o = add_case("dropout", op_dropout);
		o->f[0] = i % 2 ? 0.1f : 0.5f;
		o->p[0] = 0x243F6A8885A308D3LL + (int64_t)i;
		o->p[1] = i % 2 ? (int64_t)0xFFFFFFFFLL - 5 : 12345; /* carries into the high word */
		set_in(o, 0, 2, sh, 0, 0);
		/* add and mul: same shapes, b (M) a parameter, b (T,M) an activation */
		for (int v = 0; v < 3; v++) {
			const char *nm[2] = {"add", "mul"};
			for (int m = 0; m < 2; m++) {
				o = add_case(nm[m], m ? op_mul : op_add);
				if (v == 0) {
					set_in(o, 0, 2, sh, 0, 0);
					set_in(o, 1, 2, sh, 0, 0);
				} else if (v == 1) {
					set_in(o, 0, 2, sh, 0, 0);
					set_in(o, 1, 1, (int64_t[]){sh[1]}, 1, 0);
				} else {
					set_in(o, 0, 3, (int64_t[]){3, sh[0], sh[1]}, 0, 0);
					set_in(o, 1, 2, sh, 0, 0);
				}
			}
		}
	}
	/* cross-entropy: (N, V), a fifth of the targets ignored; the loss's
	 * gradient random, or 1 (p[0]: a training step's, whose logits'
	 * gradient the chained runs' forward writes: 16384 logits a row fit
	 * in shared memory in F32, 32768 in BF16, 50264 in neither; 4104: 513
	 * groups of eight, one thread two; 600 rows: blocks of several rows) */
	static const int64_t ce[][3] = {{1, 1, 0},      {3, 7, 0},       {7, 33, 0},
					{33, 67, 0},    {67, 257, 0},    {257, 2048, 0},
					{64, 32000, 0}, {33, 50257, 0},  {3, 8, 1},
					{33, 64, 1},    {257, 2048, 1},  {40, 16384, 1},
					{40, 32768, 1}, {17, 50264, 1},  {5, 7, 1},
					{9, 4104, 1},   {600, 2056, 1}};
	for (size_t i = 0; i < sizeof ce / sizeof ce[0]; i++) {
		ocase *o = add_case("cross_entropy", op_cross_entropy);
		o->amp = 4.0f;
		o->f32_out = 1;
		o->p[0] = ce[i][2];
		set_in(o, 0, 2, ce[i], 0, 0);
		set_int(o, 0, IK_TARGETS, 1, (int64_t[]){ce[i][0]}, ce[i][1]);
	}
}

/* ---------------------------------------------------------- one case */

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

static void fill_ints(lmk_rng *r, int32_t *v, const ocase *o, int j)
{
	int64_t n = numel(o->indim[j], o->ishape[j]);
	if (o->ikind[j] == IK_SEG) {
		/* packed sequences: segment ids rising along each row, the row's
		 * tail padding (-1) now and then */
		int64_t B = o->ishape[j][0], T = o->ishape[j][1];
		for (int64_t b = 0; b < B; b++) {
			int32_t s = 0;
			int64_t pad = lmk_rng_below(r, 3) == 0 ? (int64_t)lmk_rng_below(r, (uint64_t)T / 4 + 1) : 0;
			for (int64_t t = 0; t < T; t++) {
				if (t > 0 && lmk_rng_below(r, 9) == 0)
					s++;
				v[b * T + t] = t >= T - pad ? -1 : s;
			}
		}
		return;
	}
	for (int64_t i = 0; i < n; i++) {
		v[i] = (int32_t)lmk_rng_below(r, (uint64_t)o->irange[j]);
		if (o->ikind[j] == IK_TARGETS && lmk_rng_below(r, 5) == 0)
			v[i] = IGNORE;
	}
}

static const char *case_str(const ocase *o, lmk_dtype dt)
{
	static char buf[256];
	int k = snprintf(buf, sizeof buf, "%s %s", o->op, lmk_dtype_name(dt));
	for (int i = 0; i < o->nin; i++) {
		k += snprintf(buf + k, sizeof buf - (size_t)k, " %s(", o->param[i] ? "p" : "x");
		for (int d = 0; d < o->ndim[i]; d++)
			k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", d ? "," : "",
				      (long long)o->shape[i][d]);
		k += snprintf(buf + k, sizeof buf - (size_t)k, ")%s", o->frozen[i] ? "frozen" : "");
	}
	if (o->nint)
		k += snprintf(buf + k, sizeof buf - (size_t)k, " ints(%lld)",
			      (long long)numel(o->indim[0], o->ishape[0]));
	if (g_chain)
		snprintf(buf + k, sizeof buf - (size_t)k, " on op outputs");
	return buf;
}

/* NaN and inf first, then ||a - b|| / max(||b||, sqrt(n) noise). *where
 * gets the first bad index, or -1. noise is the scale below which an
 * element is rounding noise of larger terms that cancel: 0 for outputs, the
 * priors' scale for input gradients (attention's dq over a single key is
 * dout.v - dout.out = 0 added to the prior, each side's rounding of the
 * O(1) dot products left over). */
static double compare(const float *gpu, const float *cpu, int64_t n, double noise, int64_t *where)
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
	if (r2 < (double)n * noise * noise)
		r2 = (double)n * noise * noise;
	return r2 > 1e-30 ? sqrt(e2 / r2) : sqrt(e2);
}

/* The element where gpu and cpu differ most, for messages. */
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

static void check_close(const char *what, const ocase *o, lmk_dtype dt, const float *gpu,
			const float *cpu, int64_t n, double noise, double *worst)
{
	int64_t where;
	double e = compare(gpu, cpu, n, noise, &where);
	if (e > *worst)
		*worst = e;
	if (where >= 0)
		ck_abort_msg("%s: %s: element %lld of %lld is %g on the GPU, %g on the CPU "
			     "(seed %llu)", case_str(o, dt), what, (long long)where, (long long)n,
			     (double)gpu[where], (double)cpu[where], (unsigned long long)g_seed);
	if (!(e <= tol_of(dt))) {
		int64_t w = worst_at(gpu, cpu, n);
		ck_abort_msg("%s: %s differs by %.3g (tolerance %g); worst element %lld of %lld: "
			     "%.9g on the GPU, %.9g on the CPU (seed %llu)", case_str(o, dt), what,
			     e, tol_of(dt), (long long)w, (long long)n, (double)gpu[w],
			     (double)cpu[w], (unsigned long long)g_seed);
	}
}

/* The op's inputs: x, or with g_chain copies of the activations among them
 * made by an op. */
static void op_inputs(lmk_ctx *c, const ocase *o, lmk_tensor **x, lmk_tensor **in)
{
	for (int k = 0; k < o->nin; k++) {
		in[k] = g_chain && !o->param[k] && !o->frozen[k] ? lmk_scale(c, x[k], 1.0f) : x[k];
		ck_assert_ptr_nonnull(in[k]);
	}
}

static void run_case(int ci, lmk_dtype dt, int chain)
{
	const ocase *o = &cases[ci];
	g_chain = chain;
	const int bf = dt == LMK_BF16;
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 1000003u + (uint64_t)ci * 2 + (uint64_t)bf);

	float *xh[MAXIN] = {0}, *prior[MAXIN] = {0}, *gcpu[MAXIN] = {0}, *ggpu[MAXIN] = {0};
	int32_t *ih[MAXI] = {0};
	int64_t nx[MAXIN];
	for (int k = 0; k < o->nin; k++) {
		nx[k] = numel(o->ndim[k], o->shape[k]);
		xh[k] = malloc(sizeof(float) * (size_t)(nx[k] ? nx[k] : 1));
		for (int64_t i = 0; i < nx[k]; i++)
			xh[k][i] = nonzero_uniform(&rng, o->amp);
		if (bf)
			round_bf16(xh[k], nx[k]);
		if (o->frozen[k])
			continue;
		prior[k] = malloc(sizeof(float) * (size_t)(nx[k] ? nx[k] : 1));
		gcpu[k] = malloc(sizeof(float) * (size_t)(nx[k] ? nx[k] : 1));
		ggpu[k] = malloc(sizeof(float) * (size_t)(nx[k] ? nx[k] : 1));
		for (int64_t i = 0; i < nx[k]; i++)
			prior[k][i] = nonzero_uniform(&rng, PRIOR_SCALE);
		if (bf && !o->param[k]) /* an activation's gradient is bf16 */
			round_bf16(prior[k], nx[k]);
	}
	for (int j = 0; j < o->nint; j++) {
		int64_t n = numel(o->indim[j], o->ishape[j]);
		ih[j] = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
		fill_ints(&rng, ih[j], o, j);
	}

	/* ---- the CPU */
	lmk_ctx cc;
	lmk_tensor *xc[MAXIN] = {0}, *ixc[MAXI] = {0}, *in[MAXIN] = {0};
	ck_assert_int_eq(lmk_ctx_init(&cc, LMK_DEV_CPU), 0);
	for (int k = 0; k < o->nin; k++) {
		xc[k] = lmk_tensor_new(&cc, LMK_F32, o->ndim[k], o->shape[k], !o->frozen[k]);
		ck_assert_ptr_nonnull(xc[k]);
		memcpy(xc[k]->data, xh[k], sizeof(float) * (size_t)nx[k]);
	}
	for (int j = 0; j < o->nint; j++)
		ixc[j] = lmk_tensor_wrap(&cc, LMK_I32, o->indim[j], o->ishape[j], ih[j]);
	int64_t cnt_cpu = -1, cnt_gpu = -2;
	op_inputs(&cc, o, xc, in);
	lmk_tensor *oc = o->fn(&cc, in, ixc, o, &cnt_cpu);
	ck_assert_msg(oc != NULL, "%s: the CPU op failed: %s", case_str(o, dt), lmk_errmsg());
	int64_t nout = oc->n;
	float *dout = malloc(sizeof(float) * (size_t)(nout ? nout : 1));
	float *ocpu = malloc(sizeof(float) * (size_t)(nout ? nout : 1));
	float *ogpu = malloc(sizeof(float) * (size_t)(nout ? nout : 1));
	memcpy(ocpu, oc->data, sizeof(float) * (size_t)nout);
	/* linear_add of at most LMK_GEMV_MAX_ROWS rows rounds the product to the
	 * compute dtype before adding r (gemv.cu's fused residual: the bits of
	 * lmk_linear then lmk_add); in BF16 the reference rounds it too, or a
	 * sum that cancels (one element) shows that rounding as an error */
	if (o->fn == op_linear_add && bf &&
	    nx[0] / o->shape[0][o->ndim[0] - 1] <= LMK_GEMV_MAX_ROWS) {
		cc.grad_enabled = 0;
		lmk_tensor *y = lmk_linear(&cc, in[0], in[1], o->nin > 3 ? in[3] : NULL);
		cc.grad_enabled = 1;
		ck_assert_ptr_nonnull(y);
		const float *yv = y->data;
		for (int64_t i = 0; i < nout; i++)
			ocpu[i] = lmk_bf16_to_f32(lmk_f32_to_bf16(yv[i])) + xh[2][i];
	}
	for (int64_t i = 0; i < nout; i++)
		dout[i] = o->fn == op_cross_entropy && o->p[0] ? 1.0f : nonzero_uniform(&rng, 1.0f);
	if (bf && !o->f32_out)
		round_bf16(dout, nout);
	for (int k = 0; k < o->nin; k++)
		if (prior[k])
			memcpy(xc[k]->grad, prior[k], sizeof(float) * (size_t)nx[k]);
	ck_assert_msg(lmk_backward_from(&cc, oc, dout) == 0, "%s: CPU backward: %s", case_str(o, dt),
		      lmk_errmsg());
	for (int k = 0; k < o->nin; k++)
		if (gcpu[k])
			memcpy(gcpu[k], xc[k]->grad, sizeof(float) * (size_t)nx[k]);

	/* ---- the GPU */
	lmk_ctx gc;
	lmk_params pp[MAXIN];
	lmk_tensor *xg[MAXIN] = {0}, *ixg[MAXI] = {0};
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
	for (int j = 0; j < o->nint; j++) {
		ixg[j] = lmk_tensor_upload(&gc, LMK_I32, o->indim[j], o->ishape[j], ih[j]);
		ck_assert_ptr_nonnull(ixg[j]);
	}
	op_inputs(&gc, o, xg, in);
	lmk_tensor *og = o->fn(&gc, in, ixg, o, &cnt_gpu);
	ck_assert_msg(og != NULL, "%s: the GPU op failed: %s", case_str(o, dt), lmk_errmsg());
	ck_assert_int_eq(og->dtype, o->f32_out ? LMK_F32 : dt);
	ck_assert_int_eq(og->n, nout);
	ck_assert_msg(lmk_tensor_read_f32(&gc, og, 0, ogpu) == 0, "%s: %s", case_str(o, dt),
		      lmk_errmsg());
	check_close("forward", o, dt, ogpu, ocpu, nout, 0, &worst_fwd[bf]);
	if (o->fn == op_cross_entropy)
		ck_assert_msg(cnt_gpu == cnt_cpu, "%s: %lld rows counted on the GPU, %lld on the CPU",
			      case_str(o, dt), (long long)cnt_gpu, (long long)cnt_cpu);
	if (o->fn == op_dropout && !bf)
		for (int64_t i = 0; i < nout; i++)
			ck_assert_msg((ogpu[i] == 0) == (ocpu[i] == 0),
				      "%s: element %lld dropped on one device only (seed %llu)",
				      case_str(o, dt), (long long)i, (unsigned long long)g_seed);

	/* backward: priors in the input gradients, dout added into og's */
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
		check_close(what, o, dt, ggpu[k], gcpu[k], nx[k], PRIOR_SCALE, &worst_grad[bf]);
	}
	nrun[bf] += !chain; /* shapes, not runs */

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
	for (int j = 0; j < o->nint; j++)
		free(ih[j]);
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

static const char *const op_names[] = {"embedding", "linear",  "linear_add", "rmsnorm",
				       "layernorm", "rope",    "attention",  "silu",
				       "gelu",      "swiglu",  "add",        "mul",
				       "scale",     "dropout", "cross_entropy",
				       "swiglu_cat"}; /* the last: case "fused" */
#define NOPS ((int)(sizeof op_names / sizeof op_names[0]))

START_TEST(test_op)
{
	const char *name = op_names[_i];
	worst_fwd[0] = worst_fwd[1] = worst_grad[0] = worst_grad[1] = 0;
	nrun[0] = nrun[1] = 0;
	for (int ci = 0; ci < ncases; ci++) {
		if (strcmp(cases[ci].op, name) || (g_small && !case_small(&cases[ci])))
			continue;
		for (int chain = 0; chain < 2; chain++) {
			run_case(ci, LMK_F32, chain);
			run_case(ci, LMK_BF16, chain);
		}
	}
	printf("test_cuda_ops: %-13s F32 %2d shapes: forward %.1e, gradients %.1e | BF16 %2d shapes: "
	       "forward %.1e, gradients %.1e\n",
	       name, nrun[0], worst_fwd[0], worst_grad[0], nrun[1], worst_fwd[1], worst_grad[1]);
	fflush(stdout);
}
END_TEST

/* ------------------------------------------------------------ linear_cat */

/* lmk_linear_cat needs its weights adjacent: each case's weights are the
 * consecutive parameters of one set on each device. Variants: the weights'
 * gradients hold priors (the product adds), all unwritten (it assigns), or
 * the first only unwritten (zeroed, then it adds). x's gradient holds a
 * prior. Shapes (N, IC, O_j) with IC a multiple of 16 (adjacent layouts):
 * odd sizes, a gemv.cu forward (N <= LMK_GEMV_MAX_ROWS), q k v of a
 * grouped-query model and the 110M model's gate and up. */
static void run_linear_cat(int64_t N, int64_t IC, const int64_t *O, int nw, lmk_dtype dt,
			   int variant)
{
	const int bf = dt == LMK_BF16;
	lmk_rng rng;
	lmk_rng_init(&rng, g_seed * 7919u + (uint64_t)(N * 31 + IC * 7 + nw) * 6 +
				   (uint64_t)variant * 2 + (uint64_t)bf);
	ocase o = {.op = "linear_cat", .nin = 1 + nw};
	o.ndim[0] = 2;
	o.shape[0][0] = N;
	o.shape[0][1] = IC;
	int64_t OC = 0, nwt = 0;
	for (int j = 0; j < nw; j++) {
		o.param[1 + j] = 1;
		o.ndim[1 + j] = 2;
		o.shape[1 + j][0] = O[j];
		o.shape[1 + j][1] = IC;
		OC += O[j];
	}
	nwt = OC * IC;
	float *xh = malloc(sizeof(float) * (size_t)(N * IC));
	float *wh = malloc(sizeof(float) * (size_t)nwt);
	float *xprior = malloc(sizeof(float) * (size_t)(N * IC));
	float *wprior = malloc(sizeof(float) * (size_t)nwt);
	float *dout = malloc(sizeof(float) * (size_t)(N * OC));
	for (int64_t i = 0; i < N * IC; i++) {
		xh[i] = nonzero_uniform(&rng, 1.0f);
		xprior[i] = nonzero_uniform(&rng, PRIOR_SCALE);
	}
	for (int64_t i = 0; i < nwt; i++) {
		wh[i] = nonzero_uniform(&rng, 1.0f);
		wprior[i] = nonzero_uniform(&rng, PRIOR_SCALE);
	}
	for (int64_t i = 0; i < N * OC; i++)
		dout[i] = nonzero_uniform(&rng, 1.0f);
	if (bf) {
		round_bf16(xh, N * IC);
		round_bf16(wh, nwt);
		round_bf16(xprior, N * IC);
		round_bf16(dout, N * OC);
	}
	float *res[2][3]; /* device: output, x's gradient, the weights' */
	for (int d = 0; d < 2; d++) {
		lmk_ctx c;
		lmk_params ps;
		if (d)
			ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, dt), 0);
		else
			ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		c.arena.poison = 1;
		lmk_params_init(&ps, 1);
		for (int j = 0; j < nw; j++) {
			char name[8];
			snprintf(name, sizeof name, "w%d", j);
			ck_assert_int_eq(lmk_params_add(&ps, name, 2, o.shape[1 + j]), j);
		}
		ck_assert_int_eq(lmk_params_alloc(&ps), 0);
		ck_assert_uint_eq(ps.n, (size_t)nwt);
		memcpy(ps.data, wh, sizeof(float) * (size_t)nwt);
		memcpy(ps.grad, wprior, sizeof(float) * (size_t)nwt);
		if (d)
			ck_assert_int_eq(lmk_params_to_device(&ps, &c), 0);
		for (int j = 0; j < nw && variant; j++)
			ps.t[j].gunwritten = variant == 1 || j == 0;
		if (d) { /* lmk_params_to_device zeroed the gradients: the priors,
			  * NaN in those unwritten (a product that adds shows) */
			float *gp = malloc(sizeof(float) * (size_t)nwt);
			memcpy(gp, wprior, sizeof(float) * (size_t)nwt);
			for (int j = 0; j < nw; j++)
				for (int64_t i = 0; ps.t[j].gunwritten && i < ps.t[j].n; i++)
					gp[ps.offset[j] + (size_t)i] = NAN;
			ck_assert_int_eq(lmk_cuda_upload(c.backend, ps.grad, gp,
							 sizeof(float) * (size_t)nwt), 0);
			ck_assert_int_eq(lmk_cuda_sync(c.backend), 0);
			free(gp);
		}
		lmk_tensor *w[4], *x = lmk_tensor_new(&c, d ? dt : LMK_F32, 2, o.shape[0], 1);
		ck_assert_ptr_nonnull(x);
		for (int j = 0; j < nw; j++)
			w[j] = &ps.t[j];
		ck_assert(lmk_linear_cat_ok(nw, w));
		ck_assert_int_eq(lmk_tensor_write_f32(&c, x, 0, xh), 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&c, x, 1, xprior), 0);
		lmk_tensor *y = lmk_linear_cat(&c, x, nw, w);
		ck_assert_msg(y != NULL, "%s: %s", case_str(&o, dt), lmk_errmsg());
		ck_assert_int_eq(y->n, N * OC);
		lmk_tensor *dg = lmk_tensor_upload(&c, LMK_F32, 1, (int64_t[]){N * OC}, dout);
		ck_assert_ptr_nonnull(dg);
		res[d][0] = malloc(sizeof(float) * (size_t)(N * OC));
		res[d][1] = malloc(sizeof(float) * (size_t)(N * IC));
		res[d][2] = malloc(sizeof(float) * (size_t)nwt);
		ck_assert_int_eq(lmk_tensor_read_f32(&c, y, 0, res[d][0]), 0);
		ck_assert_msg(lmk_backward_from(&c, y, dg->data) == 0, "%s: backward: %s",
			      case_str(&o, dt), lmk_errmsg());
		ck_assert_int_eq(lmk_ctx_sync(&c), 0);
		ck_assert_int_eq(lmk_tensor_read_f32(&c, x, 1, res[d][1]), 0);
		ck_assert_int_eq(lmk_params_copy_to_host(&ps, 1, res[d][2]), 0);
		for (int j = 0; j < nw; j++)
			ck_assert_int_eq(ps.t[j].gunwritten, 0);
		lmk_params_free(&ps);
		lmk_ctx_free(&c);
	}
	check_close("forward", &o, dt, res[1][0], res[0][0], N * OC, 0, &worst_fwd[bf]);
	check_close("gradient of x", &o, dt, res[1][1], res[0][1], N * IC, PRIOR_SCALE,
		    &worst_grad[bf]);
	check_close("gradient of the weights", &o, dt, res[1][2], res[0][2], nwt, PRIOR_SCALE,
		    &worst_grad[bf]);
	for (int d = 0; d < 2; d++)
		for (int k = 0; k < 3; k++)
			free(res[d][k]);
	free(xh);
	free(wh);
	free(xprior);
	free(wprior);
	free(dout);
}

START_TEST(test_linear_cat)
{
	static const struct { int64_t N, IC, O[3]; int nw; } tab[] = {
		{1, 16, {1}, 1},          {3, 16, {5, 3}, 2},           {7, 64, {32, 16}, 2},
		{33, 32, {7, 1, 9}, 3},   {67, 48, {33, 67}, 2},        {257, 768, {768, 256, 256}, 3},
		{2048, 768, {2048, 2048}, 2},
	};
	worst_fwd[0] = worst_fwd[1] = worst_grad[0] = worst_grad[1] = 0;
	int n = 0;
	for (size_t t = 0; t < sizeof tab / sizeof tab[0]; t++) {
		if (g_small && tab[t].N * tab[t].IC > 100000)
			continue;
		n++;
		for (int variant = 0; variant < 3; variant++) {
			run_linear_cat(tab[t].N, tab[t].IC, tab[t].O, tab[t].nw, LMK_F32, variant);
			run_linear_cat(tab[t].N, tab[t].IC, tab[t].O, tab[t].nw, LMK_BF16, variant);
		}
	}
	printf("test_cuda_ops: %-13s F32 %2d shapes: forward %.1e, gradients %.1e | BF16 %2d shapes: "
	       "forward %.1e, gradients %.1e\n",
	       "linear_cat", n, worst_fwd[0], worst_grad[0], n, worst_fwd[1], worst_grad[1]);
	fflush(stdout);
}
END_TEST

/* ------------------------------------------------------ AdamW, grad norm */

static const struct { int ndim; int64_t shape[2]; } pshapes[] = {
	{1, {1, 0}}, {2, {1, 1}}, {2, {3, 5}}, {1, {17, 0}}, {2, {33, 31}}, {1, {7, 0}},
	{2, {300, 257}}, {2, {1000, 701}},
};
#define NPSHAPES ((int)(sizeof pshapes / sizeof pshapes[0]))

static void make_params(lmk_params *p, lmk_rng *r)
{
	char name[32];
	lmk_params_init(p, 1);
	for (int i = 0; i < NPSHAPES; i++) {
		snprintf(name, sizeof name, "t%d", i);
		ck_assert_int_eq(lmk_params_add(p, name, pshapes[i].ndim, pshapes[i].shape), i);
	}
	ck_assert_int_eq(lmk_params_alloc(p), 0);
	lmk_rng rr = *r;
	for (int i = 0; i < p->nt; i++) {
		float *d = p->t[i].data;
		for (int64_t j = 0; j < p->t[i].n; j++)
			d[j] = nonzero_uniform(&rr, 1.0f);
	}
}

static void fill_grads(lmk_params *p, lmk_rng *r, float amp)
{
	for (int i = 0; i < p->nt; i++) {
		float *g = p->t[i].grad;
		for (int64_t j = 0; j < p->t[i].n; j++)
			g[j] = nonzero_uniform(r, amp);
	}
}

/* Max over i of |a - b| / max(|b|, 1e-30), and how many differ in any bit. */
static double max_rel(const float *a, const float *b, size_t n, size_t *ndiff)
{
	double w = 0;
	*ndiff = 0;
	for (size_t i = 0; i < n; i++) {
		if (memcmp(&a[i], &b[i], sizeof(float)))
			(*ndiff)++;
		double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-30);
		if (!(d <= w))
			w = d;
	}
	return w;
}

START_TEST(test_adamw)
{
	lmk_dtype dts[2] = {LMK_F32, LMK_BF16};
	for (int d = 0; d < 2; d++) {
		lmk_rng r, rg1;
		lmk_rng_init(&r, g_seed + 17);
		lmk_params pc, pg;
		make_params(&pc, &r);
		make_params(&pg, &r);
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, dts[d]), 0);
		ck_assert_int_eq(lmk_params_to_device(&pg, &c), 0);
		lmk_adamw oc, og;
		lmk_adamw_config cfg = {0.9f, 0.95f, 1e-8f, 0.1f};
		if (d == 1)
			cfg = (lmk_adamw_config){0.3f, 0.999f, 1e-6f, 0.0f}; /* torch's other lerp form */
		ck_assert_int_eq(lmk_adamw_init(&oc, &pc, &cfg), 0);
		ck_assert_int_eq(lmk_adamw_init(&og, &pg, &cfg), 0);
		ck_assert_int_eq(og.dev, LMK_DEV_CUDA);
		size_t n = pc.n;
		float *g = malloc(n * sizeof(float)), *data = malloc(n * sizeof(float));
		float *m = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
		lmk_rng_init(&rg1, g_seed + 99);
		for (int s = 0; s < 5; s++) {
			fill_grads(&pc, &rg1, 0.5f);
			memcpy(g, pc.grad, n * sizeof(float));
			ck_assert_int_eq(lmk_cuda_upload(c.backend, pg.grad, g, n * sizeof(float)), 0);
			/* every other step on a clipped gradient: the factor
			 * applied by the GPU's step, by a pass on the CPU */
			float lr = 0.01f * (float)(s + 1), gs = s % 2 ? 0.37f : 1.0f;
			lmk_adamw_step_scaled(&oc, lr, gs);
			lmk_adamw_step_scaled(&og, lr, gs);
		}
		ck_assert_int_eq(lmk_params_copy_to_host(&pg, 0, data), 0);
		ck_assert_int_eq(lmk_adamw_moments_to_host(&og, m, v), 0);
		size_t nd, nm, nv;
		double ed = max_rel(data, pc.data, n, &nd), em = max_rel(m, oc.m, n, &nm),
		       ev = max_rel(v, oc.v, n, &nv);
		printf("test_cuda_ops: adamw %s: 5 steps over %zu parameters: max relative "
		       "difference data %.1e (%zu differ in a bit), m %.1e (%zu), v %.1e (%zu)\n",
		       lmk_dtype_name(dts[d]), n, ed, nd, em, nm, ev, nv);
		/* the same float32 operations in the same order: equal to rounding */
		ck_assert_msg(ed < 1e-6 && em < 1e-6 && ev < 1e-6,
			      "adamw %s: data %g, m %g, v %g (seed %llu)", lmk_dtype_name(dts[d]), ed,
			      em, ev, (unsigned long long)g_seed);
		if (pg.lp) {
			uint16_t *lp = malloc(n * sizeof(uint16_t));
			ck_assert_int_eq(lmk_cuda_download(c.backend, lp, pg.lp, n * sizeof(uint16_t)), 0);
			for (size_t i = 0; i < n; i++)
				ck_assert_msg(lp[i] == lmk_f32_to_bf16(data[i]),
					      "adamw: bf16 copy of element %zu is %04x, not bf16(%g)", i,
					      lp[i], (double)data[i]);
			free(lp);
		}
		/* moments back in, as a resume does */
		ck_assert_int_eq(lmk_adamw_moments_from_host(&og, oc.m, oc.v), 0);
		ck_assert_int_eq(lmk_adamw_moments_to_host(&og, m, v), 0);
		ck_assert_int_eq(memcmp(m, oc.m, n * sizeof(float)), 0);
		lmk_adamw_free(&og);
		lmk_adamw_free(&oc);
		lmk_params_free(&pg);
		lmk_params_free(&pc);
		lmk_ctx_free(&c);
		free(g);
		free(data);
		free(m);
		free(v);
	}
}
END_TEST

START_TEST(test_grad_norm)
{
	const double maxes[3] = {0.0, 1e9, 0.5};
	for (int t = 0; t < 3; t++) {
		lmk_rng r;
		lmk_rng_init(&r, g_seed + 5 + (uint64_t)t);
		lmk_params pc, pg;
		make_params(&pc, &r);
		make_params(&pg, &r);
		fill_grads(&pc, &r, 0.3f);
		size_t n = pc.n;
		float *g = malloc(n * sizeof(float));
		memcpy(g, pc.grad, n * sizeof(float));
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CUDA), 0);
		ck_assert_int_eq(lmk_params_to_device(&pg, &c), 0);
		ck_assert_int_eq(lmk_cuda_upload(c.backend, pg.grad, g, n * sizeof(float)), 0);
		double nc = lmk_clip_grad_norm(&pc, maxes[t]);
		double ng = lmk_clip_grad_norm(&pg, maxes[t]);
		double ng2 = lmk_clip_grad_norm(&pg, 0.0);
		ck_assert_msg(fabs(ng - nc) <= 1e-12 * nc, "grad norm: %.17g on the GPU, %.17g on the CPU",
			      ng, nc);
		ck_assert_int_eq(lmk_params_copy_to_host(&pg, 1, g), 0);
		size_t nd;
		double e = max_rel(g, pc.grad, n, &nd);
		ck_assert_msg(e < 1e-6, "clipped gradients differ by %g", e);
		if (maxes[t] > 0 && maxes[t] < nc)
			ck_assert_msg(fabs(ng2 - maxes[t]) < 1e-4 * maxes[t], "norm after clipping %g, not %g",
				      ng2, maxes[t]);
		/* a second run gives the same bits */
		double ng3 = lmk_clip_grad_norm(&pg, 0.0);
		ck_assert(memcmp(&ng2, &ng3, sizeof ng2) == 0);
		printf("test_cuda_ops: grad norm (max_norm %g): %.12g on the GPU, %.12g on the CPU, "
		       "gradients after clipping within %.1e\n", maxes[t], ng, nc, e);
		lmk_params_free(&pg);
		lmk_params_free(&pc);
		lmk_ctx_free(&c);
		free(g);
	}
}
END_TEST

/* ------------------------------------------------- training, end to end */

static void tiny_config(lmk_llama_config *cfg)
{
	lmk_llama_config_default(cfg);
	cfg->hidden_size = 48;
	cfg->intermediate_size = 104;
	cfg->num_hidden_layers = g_small ? 1 : 2; /* a layer's launches: slow under racecheck */
	cfg->num_attention_heads = 4;
	cfg->num_key_value_heads = 2;
	cfg->head_dim = 12;
	cfg->vocab_size = 259;
	cfg->attention_bias = 1;
	cfg->tie_word_embeddings = 1;
	cfg->initializer_range = 0.05f;
}

#define EB 2
#define ET 33

/* A batch that can be learnt: each token determines the next. */
static void tiny_batch(int32_t *x, int32_t *y, int V)
{
	for (int b = 0; b < EB; b++) {
		int32_t t = (int32_t)(b * 37 + 5) % V;
		for (int i = 0; i <= ET; i++) {
			int32_t nx = (t * 7 + 3) % V;
			if (i < ET)
				x[b * ET + i] = t;
			if (i > 0)
				y[b * ET + i - 1] = t;
			t = nx;
		}
	}
}

/* steps of training on dev/dt; losses[s] the loss before step s. The final
 * weights go to final (p->n floats) when not NULL. */
static void train(lmk_device dev, lmk_dtype dt, int steps, double *losses, float **final,
		  size_t *nfinal)
{
	lmk_llama_config cfg;
	lmk_llama m;
	lmk_ctx c;
	lmk_adamw o;
	lmk_adamw_config ac = {0.9f, 0.95f, 1e-8f, 0.1f};
	int32_t x[EB * ET], y[EB * ET], pos[EB * ET];
	int64_t shape[2] = {EB, ET};
	tiny_config(&cfg);
	tiny_batch(x, y, cfg.vocab_size);
	for (int i = 0; i < EB * ET; i++)
		pos[i] = i % ET;
	ck_assert_int_eq(lmk_llama_init(&m, &cfg, 1), 0);
	lmk_llama_init_weights(&m, 1234);
	ck_assert_int_eq(lmk_ctx_init_ex(&c, dev, 0, dt), 0);
	ck_assert_int_eq(lmk_params_to_device(&m.params, &c), 0);
	ck_assert_int_eq(lmk_adamw_init(&o, &m.params, &ac), 0);
	for (int s = 0; s < steps; s++) {
		lmk_ctx_reset(&c);
		lmk_params_zero_grad(&m.params);
		lmk_tensor *ids = lmk_tensor_upload(&c, LMK_I32, 2, shape, x);
		lmk_tensor *tg = lmk_tensor_upload(&c, LMK_I32, 2, shape, y);
		lmk_tensor *ps = lmk_tensor_upload(&c, LMK_I32, 2, shape, pos);
		lmk_tensor *logits = lmk_llama_forward(&c, &m, ids, ps, NULL);
		lmk_tensor *loss = lmk_cross_entropy(&c, logits, tg, IGNORE, NULL);
		ck_assert_msg(loss != NULL, "%s %s step %d: %s", dev ? "cuda" : "cpu",
			      lmk_dtype_name(dt), s, lmk_errmsg());
		ck_assert_msg(lmk_backward(&c, loss, 1.0f) == 0, "step %d: %s", s, lmk_errmsg());
		float lv;
		ck_assert_msg(lmk_tensor_read_f32(&c, loss, 0, &lv) == 0, "step %d: %s", s,
			      lmk_errmsg());
		losses[s] = lv;
		double norm = lmk_clip_grad_norm(&m.params, 1.0);
		ck_assert_msg(isfinite(norm), "step %d: gradient norm %g: %s", s, norm, lmk_errmsg());
		lmk_adamw_step(&o, 1e-3f);
	}
	ck_assert_msg(lmk_ctx_sync(&c) == 0, "after training: %s", lmk_errmsg());
	if (final) {
		*nfinal = m.params.n;
		*final = malloc(m.params.n * sizeof(float));
		ck_assert_int_eq(lmk_params_copy_to_host(&m.params, 0, *final), 0);
	}
	lmk_adamw_free(&o);
	lmk_llama_free(&m);
	lmk_ctx_free(&c);
}

#define STEPS 20

START_TEST(test_train_llama)
{
	int steps = g_small ? 2 : STEPS;
	double cpu[STEPS], f32[STEPS], b16[STEPS];
	train(LMK_DEV_CPU, LMK_F32, steps, cpu, NULL, NULL);
	train(LMK_DEV_CUDA, LMK_F32, steps, f32, NULL, NULL);
	train(LMK_DEV_CUDA, LMK_BF16, steps, b16, NULL, NULL);
	double wf = 0, wb = 0;
	for (int s = 0; s < steps; s++) {
		double ef = fabs(f32[s] - cpu[s]) / fabs(cpu[s]), eb = fabs(b16[s] - cpu[s]) / fabs(cpu[s]);
		printf("test_cuda_ops: llama step %2d: loss cpu %.7f  cuda f32 %.7f (%.1e)  cuda bf16 "
		       "%.7f (%.1e)\n", s, cpu[s], f32[s], ef, b16[s], eb);
		wf = fmax(wf, ef);
		wb = fmax(wb, eb);
	}
	fflush(stdout);
	ck_assert_msg(wf <= 1e-4, "llama F32: losses differ from the CPU's by up to %.3g (1e-4 "
		      "allowed)", wf);
	ck_assert_msg(wb <= 1e-2, "llama BF16: losses differ from the CPU's by up to %.3g (1e-2 "
		      "allowed)", wb);
	if (steps >= 10) {
		ck_assert_msg(b16[steps - 1] < b16[0] - 0.1, "llama BF16: the loss went from %g to %g",
			      b16[0], b16[steps - 1]);
		ck_assert_msg(cpu[steps - 1] < cpu[0] - 0.1, "llama CPU: the loss went from %g to %g",
			      cpu[0], cpu[steps - 1]);
	}
}
END_TEST

/* Two runs on the GPU give the same bits (no float atomics anywhere). */
START_TEST(test_deterministic)
{
	double l1[3], l2[3];
	float *w1, *w2;
	size_t n1, n2;
	int steps = g_small ? 2 : 3;
	train(LMK_DEV_CUDA, LMK_BF16, steps, l1, &w1, &n1);
	train(LMK_DEV_CUDA, LMK_BF16, steps, l2, &w2, &n2);
	ck_assert_int_eq(n1, n2);
	ck_assert_msg(memcmp(l1, l2, sizeof(double) * (size_t)steps) == 0,
		      "losses differ between runs");
	size_t nd = 0;
	for (size_t i = 0; i < n1; i++)
		nd += memcmp(&w1[i], &w2[i], sizeof(float)) != 0;
	ck_assert_msg(nd == 0, "%zu of %zu weights differ between two identical runs", nd, n1);
	free(w1);
	free(w2);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_ops: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SEED");
	g_seed = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
	s = getenv("LMK_TEST_SMALL");
	g_small = s && *s && strcmp(s, "0") != 0;
	printf("test_cuda_ops: seed %llu (LMK_TEST_SEED=%llu repeats this run)%s\n",
	       (unsigned long long)g_seed, (unsigned long long)g_seed,
	       g_small ? ", small shapes only (LMK_TEST_SMALL: the larger ones skipped, 2 training "
			 "steps of a one-layer model)" : "");
	fflush(stdout);
	make_cases();

	Suite *su = suite_create("cuda_ops");
	/* cross-entropy and swiglu_cat (the last two ops) cases of their own:
	 * CK_RUN_CASE=cross_entropy, and "fused" with linear_cat (the ops that
	 * fuse a Llama's gate and up products), so that a device run can name
	 * them alone */
	TCase *tc = tcase_create("ops");
	tcase_add_loop_test(tc, test_op, 0, NOPS - 2);
	suite_add_tcase(su, tc);
	TCase *tce = tcase_create("cross_entropy");
	tcase_add_loop_test(tce, test_op, NOPS - 2, NOPS - 1);
	suite_add_tcase(su, tce);
	TCase *tf = tcase_create("fused");
	tcase_add_loop_test(tf, test_op, NOPS - 1, NOPS);
	tcase_add_test(tf, test_linear_cat);
	suite_add_tcase(su, tf);
	TCase *to = tcase_create("optim");
	tcase_add_test(to, test_adamw);
	tcase_add_test(to, test_grad_norm);
	suite_add_tcase(su, to);
	TCase *tt = tcase_create("training");
	tcase_add_test(tt, test_train_llama);
	tcase_add_test(tt, test_deterministic);
	suite_add_tcase(su, tt);
	SRunner *sr = srunner_create(su);
	/* CUDA is initialised in this process: a forked child cannot use it */
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
	printf("test_cuda_ops: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
