/* test_cuda_attention.c: the CUDA attention kernels (cuda/attention.h)
 * against the CPU kernels of lib/ops_cpu.c, their specification.
 * For each shape of the table, in F32 and in BF16: random inputs (never
 * zeros; for BF16 the inputs are rounded to bf16 first and the CPU gets the
 * rounded values, so that only the kernels' arithmetic differs); outputs
 * and scratch poisoned with NaN bytes, and guard bytes after every device
 * buffer that must survive. Checked: the forward's out and lse; the
 * backward's dq, dk, dv (preloaded with random values, so that a backward
 * that assigns instead of adding fails; some cases ask for only some of
 * them) and delta, given the same out and lse on both sides; decoding
 * against the causal forward's last row; long caches (split decoding)
 * against a float64 reference. BF16 cases run twice: with the default
 * (deterministic) backward and with the nondeterministic one (float atomics
 * in dq); two default backward runs must give the same bits.
 * Error = ||gpu - cpu|| / ||cpu|| (of the
 * gradient, for the accumulated outputs): F32 under 1e-5, BF16 under 1e-2
 * (lse 1e-4: it never passes through bf16); NaN never passes; a row that
 * sees nothing must give exactly 0 and lse -inf.
 * Shape letters: B batch, T time, H query heads, K kv heads, D head dim.
 * LMK_TEST_SMALL=1 keeps a few small shapes (for compute-sanitizer).
 * Skips (exit 77) in a CPU-only build or without a device. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "ops_cpu.h"
#include "rng.h"

#if LMK_CUDA
#include "../cuda/attention.h"
#include "../cuda/cuda.h"

#define GUARD 256      /* bytes after each device buffer, filled with 0xA5 */
#define MAXFAIL 25     /* failures printed in full */

static void *be;
static int small;      /* LMK_TEST_SMALL */
static int nfail;

typedef struct {
	lmk_dtype dt;
	int64_t B, T, H, K, D;
	int causal;
	int segmode;   /* 0 none, 1 packed runs, 2 runs of ids in {-1,0,1,2} + padded tail */
	int grads;     /* 1 dq, 2 dk, 4 dv */
} acase;

/* Worst errors per dtype (0 F32, 1 BF16) and output. */
enum { W_OUT, W_LSE, W_DQ, W_DK, W_DV, W_DELTA, W_DEC, W_N };
static const char *wname[W_N] = {"out", "lse", "dq", "dk", "dv", "delta", "decode"};
static double worst[2][W_N];
static int ncase[2];

static const char *segname[3] = {"none", "packed", "padded"};

static void describe(char *s, size_t n, const acase *c)
{
	snprintf(s, n, "%s B=%lld T=%lld H=%lld K=%lld D=%lld causal=%d seg=%s grads=%s%s%s",
		 lmk_dtype_name(c->dt), (long long)c->B, (long long)c->T, (long long)c->H,
		 (long long)c->K, (long long)c->D, c->causal, segname[c->segmode],
		 c->grads & 1 ? "q" : "", c->grads & 2 ? "k" : "", c->grads & 4 ? "v" : "");
}

static void report_fail(const acase *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_fail(const acase *c, const char *fmt, ...)
{
	if (++nfail > MAXFAIL)
		return;
	char s[256] = "";
	if (c)
		describe(s, sizeof s, c);
	va_list ap;
	va_start(ap, fmt);
	printf("test_cuda_attention: FAIL %s: ", s);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

/* ------------------------------------------------------ host helpers */

static float round_to(lmk_dtype dt, float x)
{
	return dt == LMK_BF16 ? lmk_bf16_to_f32(lmk_f32_to_bf16(x)) : x;
}

/* n values uniform in +-amp, never 0, representable in dt. */
static float *rnd(lmk_rng *r, size_t n, float amp, lmk_dtype dt)
{
	float *x = malloc((n ? n : 1) * sizeof *x);
	for (size_t i = 0; i < n; i++) {
		float u = (2.0f * lmk_rng_uniform(r) - 1.0f) * amp;
		if (u == 0.0f)
			u = amp / 3;
		x[i] = round_to(dt, u);
		if (x[i] == 0.0f)
			x[i] = round_to(dt, amp / 3);
	}
	return x;
}

static int32_t *make_seg(lmk_rng *r, int64_t B, int64_t T, int mode)
{
	if (!mode)
		return NULL;
	int32_t *seg = malloc((size_t)(B * T) * sizeof *seg);
	for (int64_t b = 0; b < B; b++) {
		int32_t *s = seg + b * T;
		int64_t maxrun = T / (mode == 1 ? 3 : 4);
		if (maxrun < 1)
			maxrun = 1;
		int32_t id = mode == 1 ? 0 : (int32_t)lmk_rng_below(r, 4) - 1;
		int64_t run = 1 + (int64_t)lmk_rng_below(r, (uint64_t)maxrun);
		for (int64_t i = 0; i < T; i++) {
			s[i] = id;
			if (--run == 0) {
				id = mode == 1 ? id + 1 : (int32_t)lmk_rng_below(r, 4) - 1;
				run = 1 + (int64_t)lmk_rng_below(r, (uint64_t)maxrun);
			}
		}
		if (mode == 2)
			for (int64_t i = T - T / 8; i < T; i++)
				s[i] = -1;
	}
	return seg;
}

/* ---------------------------------------------------- device helpers */

/* bytes of device memory plus the guard; body filled with byte. */
static void *dev_new(size_t bytes, int byte)
{
	void *p = NULL;
	if (lmk_cuda_mem_alloc(&p, bytes + GUARD) < 0)
		return NULL;
	if (lmk_cuda_memset(be, p, byte, bytes) < 0 ||
	    lmk_cuda_memset(be, (char *)p + bytes, 0xA5, GUARD) < 0) {
		lmk_cuda_mem_free(p);
		return NULL;
	}
	return p;
}

/* x (n floats) converted to dt, on the device. */
static void *dev_up(lmk_dtype dt, const float *x, size_t n)
{
	size_t es = lmk_dtype_size(dt), bytes = n * es;
	void *p = dev_new(bytes, 0xFF);
	void *h = malloc(bytes ? bytes : 1);
	if (!p || !h || lmk_dtype_from_f32(dt, x, h, n) < 0 ||
	    lmk_cuda_upload(be, p, h, bytes) < 0) {
		free(h);
		lmk_cuda_mem_free(p);
		return NULL;
	}
	free(h);
	return p;
}

static int dev_down(lmk_dtype dt, float *x, const void *p, size_t n)
{
	size_t es = lmk_dtype_size(dt);
	void *h = malloc(n ? n * es : 1);
	int rc = h ? lmk_cuda_download(be, h, p, n * es) : LMK_ENOMEM;
	if (rc == 0)
		lmk_dtype_to_f32(dt, h, x, n);
	free(h);
	return rc;
}

static int guard_ok(const acase *c, const char *what, const void *p, size_t bytes)
{
	unsigned char g[GUARD];
	if (lmk_cuda_download(be, g, (const char *)p + bytes, GUARD) < 0) {
		report_fail(c, "%s: guard download: %s", what, lmk_errmsg());
		return 0;
	}
	for (int i = 0; i < GUARD; i++)
		if (g[i] != 0xA5) {
			report_fail(c, "%s: written past its end (guard byte %d is 0x%02x)", what, i, g[i]);
			return 0;
		}
	return 1;
}

/* ------------------------------------------------------- comparison */

/* ||got - (base + ref)|| / max(||ref||, floor) (base may be NULL; a zero
 * denominator compares absolutely). floor is the size of the terms a
 * gradient is summed from: where they cancel (dq and dk when a query sees
 * one key, T = 1 for one: dS = P (dP - delta) = 0 exactly), ||ref|| is
 * rounding noise and cannot be the yardstick. Non-finite got where the
 * expected value is finite fails. */
static int compare_floor(const acase *c, int w, const float *got, const float *ref,
			 const float *base, size_t n, double tol, double floor)
{
	double num = 0, den = 0, worst_d = -1;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		double want = (double)ref[i] + (base ? base[i] : 0.0);
		if (!isfinite(got[i])) {
			report_fail(c, "%s[%zu] = %g, expected %g (%zu elements)", wname[w], i, (double)got[i],
			     want, n);
			return 0;
		}
		double d = got[i] - want;
		num += d * d;
		den += (double)ref[i] * ref[i];
		if (fabs(d) > worst_d) {
			worst_d = fabs(d);
			at = i;
		}
	}
	if (den < floor * floor)
		den = floor * floor;
	double err = den > 0 ? sqrt(num / den) : sqrt(num);
	int di = c->dt == LMK_BF16;
	if (err > worst[di][w])
		worst[di][w] = err;
	if (!(err <= tol)) {
		double want = (double)ref[at] + (base ? base[at] : 0.0);
		report_fail(c, "%s: error %.3e over %.0e (largest difference at %zu: got %.6g, expected %.6g)",
		     wname[w], err, tol, at, (double)got[at], want);
		return 0;
	}
	return 1;
}

static int compare(const acase *c, int w, const float *got, const float *ref, const float *base,
		   size_t n, double tol)
{
	return compare_floor(c, w, got, ref, base, n, tol, 0);
}

/* sqrt(mean(x²)) */
static double rms(const float *x, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return n ? sqrt(s / (double)n) : 0;
}

/* lse: -inf exactly where the CPU has -inf, finite values compared. */
static int compare_lse(const acase *c, const float *got, const float *ref, size_t n, double tol)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (ref[i] == -INFINITY) {
			if (got[i] != -INFINITY) {
				report_fail(c, "lse[%zu] = %g, expected -inf (a row that sees nothing)", i,
				     (double)got[i]);
				return 0;
			}
			continue;
		}
		if (!isfinite(got[i])) {
			report_fail(c, "lse[%zu] = %g, expected %g", i, (double)got[i], (double)ref[i]);
			return 0;
		}
		num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
		den += (double)ref[i] * ref[i];
	}
	double err = den > 0 ? sqrt(num / den) : sqrt(num);
	int di = c->dt == LMK_BF16;
	if (err > worst[di][W_LSE])
		worst[di][W_LSE] = err;
	if (!(err <= tol)) {
		report_fail(c, "lse: error %.3e over %.0e", err, tol);
		return 0;
	}
	return 1;
}

/* ------------------------------------------------------------ a case */

static int run_case(const acase *c, uint64_t seed)
{
	const lmk_dtype dt = c->dt;
	const int64_t B = c->B, T = c->T, H = c->H, K = c->K, D = c->D;
	const size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * K * D),
		     nl = (size_t)(B * H * T), es = lmk_dtype_size(dt);
	const float scale = 1.0f / sqrtf((float)D);
	const double tol = dt == LMK_BF16 ? 1e-2 : 1e-5, ltol = dt == LMK_BF16 ? 1e-4 : 1e-5;
	lmk_rng r;
	lmk_rng_init(&r, seed);
	int ok = 1;

	/* q wider than k so that the softmax is far from flat */
	float *q = rnd(&r, nq, 2.0f, dt), *k = rnd(&r, nk, 1.0f, dt), *v = rnd(&r, nk, 1.0f, dt);
	float *dout = rnd(&r, nq, 1.0f, dt);
	int32_t *seg = make_seg(&r, B, T, c->segmode);
	float *out = malloc(nq * sizeof *out), *lse = malloc(nl * sizeof *lse);
	float *got = malloc((nq > nk ? nq : nk) * sizeof *got), *glse = malloc(nl * sizeof *glse);
	float *gq = calloc(nq, sizeof *gq), *gk = calloc(nk, sizeof *gk), *gv = calloc(nk, sizeof *gv);
	float *delta = malloc(nl * sizeof *delta);
	float *iq = NULL, *ik = NULL, *iv = NULL;
	void *d_q = NULL, *d_k = NULL, *d_v = NULL, *d_o = NULL, *d_do = NULL, *d_dq = NULL,
	     *d_dk = NULL, *d_dv = NULL, *d_seg = NULL, *d_dec = NULL;
	float *d_lse = NULL, *d_delta = NULL;

	lmk_cpu_attention_forward(out, lse, q, k, v, seg, B, T, H, K, D, scale, c->causal);

	d_q = dev_up(dt, q, nq);
	d_k = dev_up(dt, k, nk);
	d_v = dev_up(dt, v, nk);
	d_o = dev_new(nq * es, 0xFF);
	d_lse = dev_new(nl * sizeof(float), 0xFF);
	if (seg) {
		d_seg = dev_new((size_t)(B * T) * sizeof(int32_t), 0xFF);
		if (d_seg && lmk_cuda_upload(be, d_seg, seg, (size_t)(B * T) * sizeof(int32_t)) < 0)
			goto device_error;
	}
	if (!d_q || !d_k || !d_v || !d_o || !d_lse || (seg && !d_seg))
		goto device_error;

	/* forward */
	if (lmk_cuda_attention_forward(be, dt, d_o, d_lse, d_q, d_k, d_v, d_seg, B, T, H, K, D,
				       scale, c->causal) < 0 ||
	    lmk_cuda_sync(be) < 0) {
		report_fail(c, "forward: %s", lmk_errmsg());
		ok = 0;
		goto done;
	}
	if (dev_down(dt, got, d_o, nq) < 0 || dev_down(LMK_F32, glse, d_lse, nl) < 0)
		goto device_error;
	ok &= guard_ok(c, "out", d_o, nq * es) & guard_ok(c, "lse", d_lse, nl * sizeof(float));
	ok &= compare(c, W_OUT, got, out, NULL, nq, tol);
	ok &= compare_lse(c, glse, lse, nl, ltol);
	for (size_t row = 0; ok && row < nl; row++) {
		if (lse[row] != -INFINITY)
			continue;
		/* lse row (b,h,i) -> out row (b,i,h) */
		size_t b = row / (size_t)(H * T), h = row / (size_t)T % (size_t)H, i = row % (size_t)T;
		const float *o = got + ((b * (size_t)T + i) * (size_t)H + h) * (size_t)D;
		for (int64_t d = 0; d < D; d++)
			if (o[d] != 0.0f) {
				report_fail(c, "out of row b=%zu h=%zu i=%zu, which sees nothing, is %g at d=%lld",
				     b, h, i, (double)o[d], (long long)d);
				ok = 0;
				break;
			}
	}

	/* decode: the causal forward's last row, for each batch row */
	if (c->causal && !seg) {
		d_dec = dev_new((size_t)(H * D) * es, 0xFF);
		if (!d_dec)
			goto device_error;
		for (int64_t b = 0; b < B; b++) {
			size_t qoff = (size_t)((b * T + T - 1) * H * D), koff = (size_t)(b * T * K * D);
			if (lmk_cuda_attention_decode(be, dt, d_dec, (char *)d_q + qoff * es,
						      (char *)d_k + koff * es, (char *)d_v + koff * es,
						      T, H, K, D, scale) < 0 ||
			    lmk_cuda_sync(be) < 0) {
				report_fail(c, "decode: %s", lmk_errmsg());
				ok = 0;
				goto done;
			}
			if (dev_down(dt, got, d_dec, (size_t)(H * D)) < 0)
				goto device_error;
			ok &= guard_ok(c, "decode out", d_dec, (size_t)(H * D) * es);
			ok &= compare(c, W_DEC, got, out + qoff, NULL, (size_t)(H * D), tol);
		}
	}

	/* backward, both sides from the CPU's out (in dt) and lse */
	for (size_t i = 0; i < nq; i++)
		out[i] = round_to(dt, out[i]);
	lmk_cpu_attention_backward(c->grads & 1 ? gq : NULL, c->grads & 2 ? gk : NULL,
				   c->grads & 4 ? gv : NULL, delta, dout, q, k, v, out, lse, seg, B,
				   T, H, K, D, scale, c->causal);
	/* preloads of about a quarter of each gradient's size */
	double rq = 0, rk = 0, rv = 0;
	for (size_t i = 0; i < nq; i++)
		rq += (double)gq[i] * gq[i];
	for (size_t i = 0; i < nk; i++) {
		rk += (double)gk[i] * gk[i];
		rv += (double)gv[i] * gv[i];
	}
	iq = rnd(&r, nq, (float)(0.25 * sqrt(rq / (double)nq) + 1e-3), dt);
	ik = rnd(&r, nk, (float)(0.25 * sqrt(rk / (double)nk) + 1e-3), dt);
	iv = rnd(&r, nk, (float)(0.25 * sqrt(rv / (double)nk) + 1e-3), dt);
	d_do = dev_up(dt, dout, nq);
	d_dq = c->grads & 1 ? dev_up(dt, iq, nq) : NULL;
	d_dk = c->grads & 2 ? dev_up(dt, ik, nk) : NULL;
	d_dv = c->grads & 4 ? dev_up(dt, iv, nk) : NULL;
	d_delta = dev_new(nl * sizeof(float), 0xFF);
	if (!d_do || !d_delta || (c->grads & 1 && !d_dq) || (c->grads & 2 && !d_dk) ||
	    (c->grads & 4 && !d_dv))
		goto device_error;
	/* the GPU's out and lse replaced by the CPU's */
	lmk_cuda_mem_free(d_o);
	d_o = dev_up(dt, out, nq);
	if (!d_o || lmk_cuda_upload(be, d_lse, lse, nl * sizeof(float)) < 0)
		goto device_error;
	if (lmk_cuda_attention_backward(be, dt, d_dq, d_dk, d_dv, d_delta, d_do, d_q, d_k, d_v, d_o,
					d_lse, d_seg, B, T, H, K, D, scale, c->causal, 0) < 0 ||
	    lmk_cuda_sync(be) < 0) {
		report_fail(c, "backward: %s", lmk_errmsg());
		ok = 0;
		goto done;
	}
	if (dev_down(LMK_F32, glse, d_delta, nl) < 0)
		goto device_error;
	ok &= guard_ok(c, "delta", d_delta, nl * sizeof(float));
	/* delta is a dot product of bf16 vectors in bf16 mode: same tolerance */
	ok &= compare(c, W_DELTA, glse, delta, NULL, nl, tol);
	struct {
		int bit, w;
		void *d;
		const float *init, *ref;
		size_t n;
	} gr[3] = {{1, W_DQ, d_dq, iq, gq, nq}, {2, W_DK, d_dk, ik, gk, nk}, {4, W_DV, d_dv, iv, gv, nk}};
	for (int x = 0; x < 3; x++) {
		if (!(c->grads & gr[x].bit))
			continue;
		if (dev_down(dt, got, gr[x].d, gr[x].n) < 0)
			goto device_error;
		ok &= guard_ok(c, wname[gr[x].w], gr[x].d, gr[x].n * es);
		/* dq sums scale dS k over T keys, dk scale dS q, with dS = P (dP -
		 * delta) of size |dout| |v| / T: the expected norm for random
		 * inputs, as the denominator's floor (it only binds where the
		 * terms cancel) */
		double floor = 0;
		if (gr[x].w != W_DV)
			floor = sqrt((double)gr[x].n) * fabs(scale) * sqrt((double)D) / sqrt((double)T) *
				rms(dout, nq) * rms(v, nk) * (gr[x].w == W_DQ ? rms(k, nk) : rms(q, nq));
		ok &= compare_floor(c, gr[x].w, got, gr[x].ref, gr[x].init, gr[x].n, tol, floor);
	}
	goto done;

device_error:
	report_fail(c, "device: %s", lmk_errmsg());
	ok = 0;
done:
	lmk_cuda_mem_free(d_q);
	lmk_cuda_mem_free(d_k);
	lmk_cuda_mem_free(d_v);
	lmk_cuda_mem_free(d_o);
	lmk_cuda_mem_free(d_do);
	lmk_cuda_mem_free(d_dq);
	lmk_cuda_mem_free(d_dk);
	lmk_cuda_mem_free(d_dv);
	lmk_cuda_mem_free(d_seg);
	lmk_cuda_mem_free(d_dec);
	lmk_cuda_mem_free(d_lse);
	lmk_cuda_mem_free(d_delta);
	free(q), free(k), free(v), free(dout), free(seg), free(out), free(lse), free(got);
	free(glse), free(gq), free(gk), free(gv), free(delta), free(iq), free(ik), free(iv);
	ncase[dt == LMK_BF16]++;
	return ok;
}

/* ------------------------------------------------------------- suites */

static void summary(void)
{
	for (int di = 0; di < 2; di++) {
		if (!ncase[di])
			continue;
		printf("test_cuda_attention: %-4s %3d cases, worst error:", di ? "BF16" : "F32",
		       ncase[di]);
		for (int w = 0; w < W_N; w++)
			printf(" %s %.1e", wname[w], worst[di][w]);
		printf("\n");
	}
}

START_TEST(test_table)
{
	static const int64_t Ts[] = {1, 7, 63, 64, 65, 127, 200}, Ds[] = {64, 128, 32, 80};
	static const int64_t HK[3][2] = {{4, 4}, {4, 2}, {6, 1}};
	static const int64_t Ts_small[] = {1, 65}, Ds_small[] = {64, 128, 80};
	const int64_t *ts = small ? Ts_small : Ts, *ds = small ? Ds_small : Ds;
	int nt = small ? 2 : 7, nd = small ? 3 : 4, idx = 0, bad = 0;
	memset(worst, 0, sizeof worst);
	memset(ncase, 0, sizeof ncase);
	nfail = 0;
	for (int di = 0; di < 2; di++)
		for (int a = 0; a < nd; a++)
			for (int b = 0; b < nt; b++)
				for (int causal = 0; causal < 2; causal++)
					for (int sm = 0; sm < 3; sm++, idx++) {
						if (small && sm == 1)
							continue;
						acase c = {di ? LMK_BF16 : LMK_F32, 1 + (idx / 3) % 2,
							   ts[b], HK[idx % 3][0], HK[idx % 3][1], ds[a],
							   causal, sm, 7};
						/* every fifth case wants only some gradients */
						if (idx % 5 == 4)
							c.grads = idx % 2 ? 1 : 6;
						for (int nd = 0; nd <= di; nd++) {
							lmk_cuda_attention_set_nondeterministic(be, nd);
							bad += !run_case(&c, 1000 + (uint64_t)idx);
						}
						lmk_cuda_attention_set_nondeterministic(be, 0);
					}
	/* a realistic length, fewer combinations (the CPU reference is slow),
	 * and the widest head dims of the simple kernels */
	if (!small) {
		static const struct { int64_t T, D; int causal, seg; } more[] = {
			{1000, 64, 1, 0}, {1000, 64, 0, 2}, {1000, 128, 1, 0}, {1000, 128, 0, 2},
			{1000, 128, 1, 1}, {1000, 80, 1, 1}, {127, 256, 1, 1}, {65, 200, 0, 2}};
		for (int di = 0; di < 2; di++)
			for (size_t x = 0; x < sizeof more / sizeof more[0]; x++, idx++) {
				acase c = {di ? LMK_BF16 : LMK_F32, 1, more[x].T, 4, 2, more[x].D,
					   more[x].causal, more[x].seg, 7};
				for (int nd = 0; nd <= di; nd++) {
					lmk_cuda_attention_set_nondeterministic(be, nd);
					bad += !run_case(&c, 5000 + (uint64_t)idx);
				}
				lmk_cuda_attention_set_nondeterministic(be, 0);
			}
	}
	summary();
	ck_assert_msg(bad == 0, "%d of %d cases failed (the first %d are printed above)", bad,
		      ncase[0] + ncase[1], MAXFAIL);
}
END_TEST

/* Two default (deterministic) BF16 backward runs give the same bits, at
 * lengths of several key and query blocks (ragged ones among them), with
 * and without grouped-query heads, causal or not, and grids of more blocks
 * than the device holds at once (the ordered dq sums wait across blocks);
 * and they agree (bf16 tolerance) with the nondeterministic backward, the
 * check of the lengths too long for the CPU reference (T 17000: more key
 * blocks than half the device's SMs, where the walk of a non-causal
 * deterministic backward does not rotate) and of the 110M model's
 * training shape (B 32, T 1024, 12 heads of 64: thousands of blocks).
 * The second and third runs assign their gradients (the assign bits of
 * lmk_cuda_attention_backward) over NaN bytes, the first adds into zeros;
 * the first two give the same bits. */
START_TEST(test_deterministic)
{
	static const struct { int64_t B, T, H, K, D; int causal; } sh[] = {
		{2, 333, 4, 2, 64, 1},   {2, 333, 4, 2, 128, 1}, {1, 1000, 6, 1, 64, 1},
		{1, 777, 4, 4, 128, 0},  {3, 130, 8, 2, 64, 0},  {2, 200, 2, 1, 128, 1},
		{4, 1024, 16, 8, 64, 1}, {2, 2000, 8, 8, 128, 0}, {1, 17000, 2, 1, 64, 0},
		{1, 17000, 2, 2, 128, 0}, {32, 1024, 12, 12, 64, 1}};
	lmk_cuda_attention_set_nondeterministic(be, 0);
	for (size_t x = 0; x < (small ? 2 : sizeof sh / sizeof sh[0]); x++) {
		const int64_t B = sh[x].B, T = sh[x].T, H = sh[x].H, K = sh[x].K, D = sh[x].D;
		const int causal = sh[x].causal;
		const size_t nq = (size_t)(B * T * H * D), nk = (size_t)(B * T * K * D),
			     nl = (size_t)(B * H * T);
		const float scale = 1.0f / sqrtf((float)D);
		lmk_rng r;
		lmk_rng_init(&r, 99 + (uint64_t)x);
		float *q = rnd(&r, nq, 2.0f, LMK_BF16), *k = rnd(&r, nk, 1.0f, LMK_BF16);
		float *v = rnd(&r, nk, 1.0f, LMK_BF16), *dout = rnd(&r, nq, 1.0f, LMK_BF16);
		void *d_q = dev_up(LMK_BF16, q, nq), *d_k = dev_up(LMK_BF16, k, nk);
		void *d_v = dev_up(LMK_BF16, v, nk), *d_do = dev_up(LMK_BF16, dout, nq);
		void *d_o = dev_new(nq * 2, 0), *d_lse = dev_new(nl * 4, 0), *d_delta = dev_new(nl * 4, 0);
		void *g[3][3];
		const size_t gb[3] = {nq * 2, nk * 2, nk * 2};
		for (int run = 0; run < 3; run++)
			for (int w = 0; w < 3; w++)
				g[run][w] = dev_new(gb[w], run ? 0xFF : 0);
		ck_assert(d_q && d_k && d_v && d_do && d_o && d_lse && d_delta);
		ck_assert_int_eq(lmk_cuda_attention_forward(be, LMK_BF16, d_o, d_lse, d_q, d_k, d_v,
							    NULL, B, T, H, K, D, scale, causal),
				 0);
		for (int run = 0; run < 3; run++) {
			ck_assert(g[run][0] && g[run][1] && g[run][2]);
			lmk_cuda_attention_set_nondeterministic(be, run == 2);
			ck_assert_int_eq(lmk_cuda_attention_backward(be, LMK_BF16, g[run][0], g[run][1],
								     g[run][2], d_delta, d_do, d_q,
								     d_k, d_v, d_o, d_lse, NULL, B, T,
								     H, K, D, scale, causal, run ? 7 : 0),
					 0);
		}
		lmk_cuda_attention_set_nondeterministic(be, 0);
		ck_assert_int_eq(lmk_cuda_sync(be), 0);
		for (int w = 0; w < 3; w++) {
			unsigned char *a = malloc(gb[w]), *c = malloc(gb[w]);
			ck_assert(a && c);
			ck_assert_int_eq(lmk_cuda_download(be, a, g[0][w], gb[w]), 0);
			ck_assert_int_eq(lmk_cuda_download(be, c, g[1][w], gb[w]), 0);
			ck_assert_msg(memcmp(a, c, gb[w]) == 0,
				      "B=%lld T=%lld H=%lld K=%lld D=%lld causal=%d: %s differs "
				      "between two default backward runs",
				      (long long)B, (long long)T, (long long)H, (long long)K,
				      (long long)D, causal, w == 0 ? "dq" : w == 1 ? "dk" : "dv");
			free(a);
			free(c);
			/* ||det - nondet|| / ||nondet|| */
			const size_t n = gb[w] / 2;
			float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
			ck_assert(x && y);
			ck_assert_int_eq(dev_down(LMK_BF16, x, g[0][w], n), 0);
			ck_assert_int_eq(dev_down(LMK_BF16, y, g[2][w], n), 0);
			double num = 0, den = 0;
			for (size_t i = 0; i < n; i++) {
				num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
				den += (double)y[i] * y[i];
			}
			ck_assert_msg(sqrt(num) <= 1e-2 * sqrt(den) && den > 0,
				      "B=%lld T=%lld H=%lld K=%lld D=%lld causal=%d: %s of the "
				      "deterministic and nondeterministic backward differ by %.2e",
				      (long long)B, (long long)T, (long long)H, (long long)K,
				      (long long)D, causal, w == 0 ? "dq" : w == 1 ? "dk" : "dv",
				      den > 0 ? sqrt(num / den) : INFINITY);
			free(x);
			free(y);
		}
		for (int run = 0; run < 3; run++)
			for (int w = 0; w < 3; w++)
				lmk_cuda_mem_free(g[run][w]);
		lmk_cuda_mem_free(d_q), lmk_cuda_mem_free(d_k), lmk_cuda_mem_free(d_v);
		lmk_cuda_mem_free(d_do), lmk_cuda_mem_free(d_o), lmk_cuda_mem_free(d_lse);
		lmk_cuda_mem_free(d_delta);
		free(q), free(k), free(v), free(dout);
	}
}
END_TEST

/* Long caches: split decoding and its merge, against float64. */
START_TEST(test_decode_long)
{
	static const struct { int64_t Tk, H, K, D; } sh[] = {
		{3000, 8, 2, 128}, {20000, 32, 8, 128}, {5000, 4, 1, 64}, {777, 6, 3, 80},
		{4097, 2, 2, 36}, {600, 4, 4, 256}};
	int n = small ? 1 : (int)(sizeof sh / sizeof sh[0]), bad = 0;
	for (int di = 0; di < 2; di++)
		for (int x = 0; x < n; x++) {
			lmk_dtype dt = di ? LMK_BF16 : LMK_F32;
			int64_t Tk = sh[x].Tk, H = sh[x].H, K = sh[x].K, D = sh[x].D;
			acase c = {dt, 1, Tk, H, K, D, 1, 0, 0};
			size_t es = lmk_dtype_size(dt), nc = (size_t)(Tk * K * D);
			float scale = 1.0f / sqrtf((float)D);
			lmk_rng r;
			lmk_rng_init(&r, 77 + (uint64_t)x);
			float *q = rnd(&r, (size_t)(H * D), 2.0f, dt), *k = rnd(&r, nc, 1.0f, dt);
			float *v = rnd(&r, nc, 1.0f, dt), *ref = malloc((size_t)(H * D) * sizeof *ref);
			float *got = malloc((size_t)(H * D) * sizeof *got);
			double *p = malloc((size_t)Tk * sizeof *p);
			for (int64_t h = 0; h < H; h++) {
				int64_t g = h / (H / K);
				double m = -INFINITY, l = 0;
				for (int64_t j = 0; j < Tk; j++) {
					double s = 0;
					for (int64_t d = 0; d < D; d++)
						s += (double)q[h * D + d] * k[(j * K + g) * D + d];
					p[j] = s * scale;
					if (p[j] > m)
						m = p[j];
				}
				for (int64_t j = 0; j < Tk; j++)
					l += (p[j] = exp(p[j] - m));
				for (int64_t d = 0; d < D; d++) {
					double o = 0;
					for (int64_t j = 0; j < Tk; j++)
						o += p[j] * v[(j * K + g) * D + d];
					ref[h * D + d] = (float)(o / l);
				}
			}
			void *dq = dev_up(dt, q, (size_t)(H * D)), *dk = dev_up(dt, k, nc),
			     *dv = dev_up(dt, v, nc), *dout = dev_new((size_t)(H * D) * es, 0xFF);
			if (!dq || !dk || !dv || !dout) {
				report_fail(&c, "device: %s", lmk_errmsg());
				bad++;
			} else if (lmk_cuda_attention_decode(be, dt, dout, dq, dk, dv, Tk, H, K, D,
							     scale) < 0 ||
				   lmk_cuda_sync(be) < 0 ||
				   dev_down(dt, got, dout, (size_t)(H * D)) < 0) {
				report_fail(&c, "decode: %s", lmk_errmsg());
				bad++;
			} else {
				int ok = guard_ok(&c, "decode out", dout, (size_t)(H * D) * es);
				ok &= compare(&c, W_DEC, got, ref, NULL, (size_t)(H * D),
					      dt == LMK_BF16 ? 1e-2 : 1e-5);
				bad += !ok;
			}
			lmk_cuda_mem_free(dq);
			lmk_cuda_mem_free(dk);
			lmk_cuda_mem_free(dv);
			lmk_cuda_mem_free(dout);
			free(q), free(k), free(v), free(ref), free(got), free(p);
		}
	printf("test_cuda_attention: decode of long caches: worst error F32 %.1e, BF16 %.1e\n",
	       worst[0][W_DEC], worst[1][W_DEC]);
	ck_assert_msg(bad == 0, "%d long-cache decodes failed", bad);
}
END_TEST

START_TEST(test_errors)
{
	float x = 0;
	ck_assert_int_eq(lmk_cuda_attention_forward(be, LMK_F32, &x, &x, &x, &x, &x, NULL, 1, 4, 4,
						    2, 300, 1.0f, 1),
			 LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "head dim 300"));
	ck_assert_int_eq(lmk_cuda_attention_forward(be, LMK_F32, &x, &x, &x, &x, &x, NULL, 1, 4, 4,
						    3, 64, 1.0f, 1),
			 LMK_EINVAL);
	ck_assert_int_eq(lmk_cuda_attention_backward(be, LMK_F16, &x, &x, &x, &x, &x, &x, &x, &x,
						     &x, &x, NULL, 1, 4, 4, 2, 64, 1.0f, 1, 0),
			 LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "F16"));
	ck_assert_int_eq(lmk_cuda_attention_decode(be, LMK_I32, &x, &x, &x, &x, 4, 4, 2, 64, 1.0f),
			 LMK_EINVAL);
	/* nothing to do: no launch, no error */
	ck_assert_int_eq(lmk_cuda_attention_forward(be, LMK_BF16, &x, &x, &x, &x, &x, NULL, 0, 4, 4,
						    2, 64, 1.0f, 1),
			 0);
	ck_assert_int_eq(lmk_cuda_attention_forward(be, LMK_BF16, &x, &x, &x, &x, &x, NULL, 2, 0, 4,
						    2, 64, 1.0f, 1),
			 0);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_attention: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *s = getenv("LMK_TEST_SMALL");
	small = s && *s && strcmp(s, "0") != 0;
	if (lmk_cuda_init(&be, 0) < 0) {
		printf("test_cuda_attention: cannot start the device: %s\n", lmk_errmsg());
		return EXIT_FAILURE;
	}
	Suite *su = suite_create("cuda_attention");
	TCase *tc = tcase_create("attention");
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_table);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_decode_long);
	tcase_set_timeout(tc, 600);
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	/* one process: the device context is made once, above */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	lmk_cuda_free(be);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda_attention: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
