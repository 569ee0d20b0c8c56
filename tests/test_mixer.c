/* test_mixer.c: the token-mixer layers of mixer.h on the CPU.
 * - Parameters: names and shapes registered under a prefix, their sizes
 *   summing to lmk_mixer_param_count, and that count against numbers worked
 *   out by hand for the papers' layers (Mamba-2 at 768, GDN at 2048 as fla
 *   documents it, PaTH at 768).
 * - Forward: against a float64 reference written here from the
 *   definitions (the materialised sums and products, not the core ops'
 *   algorithms) for every kind, on odd tiny sizes, within 1e-4.
 * - Backward: for every parameter tensor and the input, directional
 *   derivatives of L = sum(out * r) along random directions: the tape's
 *   (float32) against central differences of the float64 reference
 *   (steps of 1e-4), within 1e-3 of a typical directional derivative.
 * - Initialisation reproducible from the seed; errors.
 * - Training: a one-layer model of each kind on flip-flop (lib/synth.h),
 *   50 AdamW steps: the loss falls, and below ln 2 for the kinds that can
 *   forget.
 * PaTH kinds are skipped when the build has no lib/path.h. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "mixer.h"
#include "ops.h"
#include "optim.h"
#include "rng.h"
#include "synth.h"

#define GRAD_TOL 1e-3
static double HSTEP = 1e-4;

typedef struct layer {
	lmk_mixer_config cfg;
	lmk_params p;
	lmk_mixer m;
} layer;

/* Registered, allocated, bound, initialised; then every value nudged so
 * that no gradient path is degenerate (ones, zeros). */
static int make_layer(layer *L, const lmk_mixer_config *cfg, uint64_t seed)
{
	L->cfg = *cfg;
	lmk_params_init(&L->p, 1);
	int rc = lmk_mixer_register(&L->m, cfg, &L->p, "mixer.");
	if (rc < 0)
		return rc;
	ck_assert_int_eq(lmk_params_alloc(&L->p), 0);
	ck_assert_int_eq(lmk_mixer_bind(&L->m, &L->p), 0);
	ck_assert_int_eq(lmk_mixer_init_weights(&L->m, seed), 0);
	lmk_rng r;
	lmk_rng_init(&r, seed + 1);
	for (int i = 0; i < L->m.np; i++) {
		float *d = L->m.w[i]->data;
		/* dt near 0.5 rather than 0.001..0.1: its gradients then rise
		 * above the rounding of the loss */
		int dtb = strstr(L->m.w[i]->name, "dt_bias") != NULL;
		for (int64_t j = 0; j < L->m.w[i]->n; j++)
			d[j] = dtb ? 2 * lmk_rng_uniform(&r) - 1.5f
				   : d[j] + 0.1f * (2 * lmk_rng_uniform(&r) - 1);
	}
	return 0;
}

static lmk_tensor *param(layer *L, const char *name)
{
	char full[128];
	snprintf(full, sizeof full, "mixer.%s", name);
	lmk_tensor *t = lmk_params_find(&L->p, full);
	ck_assert_msg(t != NULL, "no parameter %s", full);
	return t;
}

static const float *pf(layer *L, const char *name) { return param(L, name)->data; }

/* sum(out * r) of a forward without the tape, in float64. */
static double loss_of(layer *L, const float *x, int64_t B, int64_t T, const float *r, float *out)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	c.grad_enabled = 0;
	lmk_tensor *xt = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){B, T, L->cfg.hidden}, 0);
	memcpy(xt->data, x, sizeof(float) * (size_t)xt->n);
	lmk_tensor *y = lmk_mixer_forward(&c, &L->m, xt);
	ck_assert_msg(y != NULL, "%s", lmk_errmsg());
	ck_assert_int_eq(y->n, xt->n);
	double s = 0;
	const float *yd = y->data;
	for (int64_t i = 0; i < y->n; i++) {
		ck_assert(isfinite(yd[i]));
		s += (double)yd[i] * (r ? r[i] : 0);
	}
	if (out)
		memcpy(out, yd, sizeof(float) * (size_t)y->n);
	lmk_ctx_free(&c);
	return s;
}

/* ------------------------------------------------------- float64 references */

static double sig(double v) { return 1 / (1 + exp(-v)); }
static double softplus(double v) { return v > 20 ? v : log1p(exp(v)); }

/* y (N,O) = x (N,I) Wᵀ (+ b) */
static void lin(double *y, const double *x, const float *W, const float *b, int64_t N, int64_t I,
		int64_t O)
{
	for (int64_t n = 0; n < N; n++)
		for (int64_t o = 0; o < O; o++) {
			double s = b ? b[o] : 0;
			for (int64_t i = 0; i < I; i++)
				s += x[n * I + i] * W[o * I + i];
			y[n * O + o] = s;
		}
}

/* causal depthwise conv + SiLU over (B,T,Ch) in place of y */
static void conv_silu(double *y, const double *x, const float *w, const float *b, int64_t B,
		      int64_t T, int64_t Ch, int64_t W)
{
	for (int64_t bb = 0; bb < B; bb++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t ch = 0; ch < Ch; ch++) {
				double a = b ? b[ch] : 0;
				for (int64_t i = 0; i < W; i++) {
					int64_t s = t - W + 1 + i;
					if (s >= 0)
						a += w[ch * W + i] * x[(bb * T + s) * Ch + ch];
				}
				y[(bb * T + t) * Ch + ch] = a * sig(a);
			}
}

/* RMSNorm of rows of D, times w (D). */
static void rmsnorm(double *y, int64_t N, int64_t D, const float *w, double eps)
{
	for (int64_t n = 0; n < N; n++) {
		double ss = 0;
		for (int64_t d = 0; d < D; d++)
			ss += y[n * D + d] * y[n * D + d];
		double s = 1 / sqrt(ss / D + eps);
		for (int64_t d = 0; d < D; d++)
			y[n * D + d] *= s * w[d];
	}
}

static void ref_mamba2(layer *L, const float *xf, int64_t B, int64_t T, double *out)
{
	const lmk_mixer_config *g = &L->cfg;
	int64_t C = g->hidden, H = g->heads, P = g->head_dim, di = H * P, G = g->groups;
	int64_t N = g->state, GN = G * N, cd = di + 2 * GN, NL = g->levels, W = g->conv;
	int ll = g->kind == LMK_MIXER_LL_MAMBA2;
	int64_t rows = 2 * di + 2 * GN + H + (ll ? H * NL : 0), BT = B * T;
	double *x = malloc(sizeof(double) * (size_t)(BT * C));
	double *zx = malloc(sizeof(double) * (size_t)(BT * rows));
	double *pre = malloc(sizeof(double) * (size_t)(BT * cd));
	double *xbc = malloc(sizeof(double) * (size_t)(BT * cd));
	double *dt = malloc(sizeof(double) * (size_t)(BT * H));
	double *la = malloc(sizeof(double) * (size_t)(BT * H));
	double *y = malloc(sizeof(double) * (size_t)(BT * di));
	for (int64_t i = 0; i < BT * C; i++)
		x[i] = xf[i];
	lin(zx, x, pf(L, "in_proj.weight"), NULL, BT, C, rows);
	for (int64_t n = 0; n < BT; n++)
		for (int64_t j = 0; j < cd; j++)
			pre[n * cd + j] = zx[n * rows + di + j];
	conv_silu(xbc, pre, pf(L, "conv1d.weight"), pf(L, "conv1d.bias"), B, T, cd, W);
	const float *dtb = pf(L, "dt_bias"), *alog = pf(L, "A_log"), *Dp = pf(L, "D");
	for (int64_t n = 0; n < BT; n++)
		for (int64_t h = 0; h < H; h++) {
			dt[n * H + h] = softplus(zx[n * rows + di + cd + h] + dtb[h]);
			la[n * H + h] = -exp(alog[h]) * dt[n * H + h];
		}
	const float *Lw = ll ? pf(L, "L") : NULL;
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t h = 0; h < H; h++) {
				int64_t gi = h / (H / G), nt = b * T + t;
				for (int64_t p = 0; p < P; p++) {
					double acc = 0;
					for (int64_t s = 0; s <= t; s++) {
						int64_t ns = b * T + s;
						double dec = 0;
						for (int64_t r = s + 1; r <= t; r++)
							dec += la[(b * T + r) * H + h];
						double w = exp(dec);
						if (ll) {
							int l = lmk_fenwick_level(t, s);
							double dl = zx[nt * rows + di + cd + H + h * NL + l];
							w *= softplus(Lw[h * NL + l] * dl);
						}
						double qk = 0;
						for (int64_t k = 0; k < N; k++)
							qk += xbc[nt * cd + di + GN + gi * N + k] *
							      xbc[ns * cd + di + gi * N + k];
						acc += w * qk * xbc[ns * cd + h * P + p] * dt[ns * H + h];
					}
					acc += Dp[h] * xbc[nt * cd + h * P + p];
					double z = zx[nt * rows + h * P + p];
					y[nt * di + h * P + p] = acc * z * sig(z);
				}
			}
	rmsnorm(y, BT, di, pf(L, "norm.weight"), g->norm_eps);
	lin(out, y, pf(L, "out_proj.weight"), NULL, BT, di, C);
	free(x);
	free(zx);
	free(pre);
	free(xbc);
	free(dt);
	free(la);
	free(y);
}

/* (B,T,H,D) rows L2-normalised with eps inside the root. */
static void l2n(double *v, int64_t n, int64_t D)
{
	for (int64_t r = 0; r < n; r++) {
		double ss = 0;
		for (int64_t d = 0; d < D; d++)
			ss += v[r * D + d] * v[r * D + d];
		for (int64_t d = 0; d < D; d++)
			v[r * D + d] /= sqrt(ss + 1e-6);
	}
}

static void ref_gdn(layer *L, const float *xf, int64_t B, int64_t T, double *out)
{
	const lmk_mixer_config *g = &L->cfg;
	int64_t C = g->hidden, H = g->heads, Dk = g->head_dim, Dv = g->head_dim_v, W = g->conv;
	int64_t kd = H * Dk, vd = H * Dv, NL = g->levels, BT = B * T;
	int ll = g->kind == LMK_MIXER_LL_GDN;
	double *x = malloc(sizeof(double) * (size_t)(BT * C));
	double *tmp = malloc(sizeof(double) * (size_t)(BT * vd));
	double *q = malloc(sizeof(double) * (size_t)(BT * kd));
	double *k = malloc(sizeof(double) * (size_t)(BT * kd));
	double *v = malloc(sizeof(double) * (size_t)(BT * vd));
	double *gt = malloc(sizeof(double) * (size_t)(BT * vd));
	double *a = malloc(sizeof(double) * (size_t)(BT * H));
	double *bt = malloc(sizeof(double) * (size_t)(BT * H));
	double *dl = malloc(sizeof(double) * (size_t)(BT * H * NL));
	double *o = malloc(sizeof(double) * (size_t)(BT * vd));
	double *u = malloc(sizeof(double) * (size_t)Dk);
	for (int64_t i = 0; i < BT * C; i++)
		x[i] = xf[i];
	lin(tmp, x, pf(L, "q_proj.weight"), NULL, BT, C, kd);
	conv_silu(q, tmp, pf(L, "q_conv1d.weight"), NULL, B, T, kd, W);
	lin(tmp, x, pf(L, "k_proj.weight"), NULL, BT, C, kd);
	conv_silu(k, tmp, pf(L, "k_conv1d.weight"), NULL, B, T, kd, W);
	lin(tmp, x, pf(L, "v_proj.weight"), NULL, BT, C, vd);
	conv_silu(v, tmp, pf(L, "v_conv1d.weight"), NULL, B, T, vd, W);
	l2n(q, BT * H, Dk);
	l2n(k, BT * H, Dk);
	lin(a, x, pf(L, "a_proj.weight"), NULL, BT, C, H);
	lin(bt, x, pf(L, "b_proj.weight"), NULL, BT, C, H);
	lin(gt, x, pf(L, "g_proj.weight"), NULL, BT, C, vd);
	if (ll)
		lin(dl, x, pf(L, "dl_proj.weight"), NULL, BT, C, H * NL);
	const float *alog = pf(L, "A_log"), *dtb = pf(L, "dt_bias"), *Lw = ll ? pf(L, "L") : NULL;
	for (int64_t n = 0; n < BT; n++)
		for (int64_t h = 0; h < H; h++) {
			a[n * H + h] = exp(-exp(alog[h]) * softplus(a[n * H + h] + dtb[h]));
			bt[n * H + h] = (g->neg_eig ? 2 : 1) * sig(bt[n * H + h]);
		}
	double scale = 1 / sqrt((double)Dk);
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t t = 0; t < T; t++) {
				int64_t nt = b * T + t;
				double *ot = o + nt * vd + h * Dv;
				for (int64_t e = 0; e < Dv; e++)
					ot[e] = 0;
				for (int64_t s = 0; s <= t; s++) {
					int64_t ns = b * T + s;
					for (int64_t d = 0; d < Dk; d++)
						u[d] = k[ns * kd + h * Dk + d];
					/* u = A_t ... A_{s+1} k_s */
					for (int64_t r = s + 1; r <= t; r++) {
						int64_t nr = b * T + r;
						const double *kr = k + nr * kd + h * Dk;
						double dot = 0;
						for (int64_t d = 0; d < Dk; d++)
							dot += kr[d] * u[d];
						for (int64_t d = 0; d < Dk; d++)
							u[d] = a[nr * H + h] *
							       (u[d] - bt[nr * H + h] * kr[d] * dot);
					}
					double qu = 0;
					for (int64_t d = 0; d < Dk; d++)
						qu += q[nt * kd + h * Dk + d] * u[d];
					double w = scale * qu * bt[ns * H + h];
					if (ll) {
						int l = lmk_fenwick_level(t, s);
						w *= softplus(Lw[h * NL + l] * dl[nt * H * NL + h * NL + l]);
					}
					for (int64_t e = 0; e < Dv; e++)
						ot[e] += w * v[ns * vd + h * Dv + e];
				}
			}
	rmsnorm(o, BT * H, Dv, pf(L, "o_norm.weight"), g->norm_eps);
	for (int64_t i = 0; i < BT * vd; i++)
		o[i] *= gt[i] * sig(gt[i]);
	lin(out, o, pf(L, "o_proj.weight"), NULL, BT, vd, C);
	free(x);
	free(tmp);
	free(q);
	free(k);
	free(v);
	free(gt);
	free(a);
	free(bt);
	free(dl);
	free(o);
	free(u);
}

static void ref_linear(layer *L, const float *xf, int64_t B, int64_t T, double *out)
{
	const lmk_mixer_config *g = &L->cfg;
	int64_t C = g->hidden, H = g->heads, Dk = g->head_dim, Dv = g->head_dim_v;
	int64_t kd = H * Dk, vd = H * Dv, BT = B * T;
	double *x = malloc(sizeof(double) * (size_t)(BT * C));
	double *q = malloc(sizeof(double) * (size_t)(BT * kd));
	double *k = malloc(sizeof(double) * (size_t)(BT * kd));
	double *v = malloc(sizeof(double) * (size_t)(BT * vd));
	double *o = malloc(sizeof(double) * (size_t)(BT * vd));
	for (int64_t i = 0; i < BT * C; i++)
		x[i] = xf[i];
	double *gk = malloc(sizeof(double) * (size_t)(BT * H));
	lin(q, x, pf(L, "q_proj.weight"), NULL, BT, C, kd);
	lin(k, x, pf(L, "k_proj.weight"), NULL, BT, C, kd);
	lin(v, x, pf(L, "v_proj.weight"), NULL, BT, C, vd);
	if (g->decay) {
		lin(gk, x, pf(L, "gk_proj.weight"), pf(L, "gk_proj.bias"), BT, C, H);
		for (int64_t i = 0; i < BT * H; i++)
			gk[i] = -log1p(exp(-gk[i])) / 16;
	}
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t h = 0; h < H; h++)
				for (int64_t e = 0; e < Dv; e++) {
					double acc = 0;
					for (int64_t s = 0; s <= t; s++) {
						double qk = 0, dec = 0;
						for (int64_t d = 0; d < Dk; d++)
							qk += q[(b * T + t) * kd + h * Dk + d] *
							      k[(b * T + s) * kd + h * Dk + d];
						for (int64_t r = s + 1; g->decay && r <= t; r++)
							dec += gk[(b * T + r) * H + h];
						acc += exp(dec) * qk * v[(b * T + s) * vd + h * Dv + e];
					}
					o[(b * T + t) * vd + h * Dv + e] = acc / sqrt((double)Dk);
				}
	rmsnorm(o, BT * H, Dv, pf(L, "norm.weight"), g->norm_eps);
	lin(out, o, pf(L, "o_proj.weight"), NULL, BT, vd, C);
	free(gk);
	free(x);
	free(q);
	free(k);
	free(v);
	free(o);
}

static void ref_path(layer *L, const float *xf, int64_t B, int64_t T, double *out)
{
	const lmk_mixer_config *g = &L->cfg;
	int64_t C = g->hidden, H = g->heads, K = g->groups, D = g->head_dim, W = g->conv;
	int64_t kv = K * D, BT = B * T, r = g->w_rank;
	int fox = g->kind == LMK_MIXER_PATH_FOX;
	double *x = malloc(sizeof(double) * (size_t)(BT * C));
	double *q = malloc(sizeof(double) * (size_t)(BT * H * D));
	double *k = malloc(sizeof(double) * (size_t)(BT * kv));
	double *v = malloc(sizeof(double) * (size_t)(BT * kv));
	double *wr = malloc(sizeof(double) * (size_t)(BT * (r > kv ? r : kv)));
	double *wp = malloc(sizeof(double) * (size_t)(BT * kv));
	double *w = malloc(sizeof(double) * (size_t)(BT * kv));
	double *bt = malloc(sizeof(double) * (size_t)(BT * K));
	double *lf = malloc(sizeof(double) * (size_t)(BT * H));
	double *o = malloc(sizeof(double) * (size_t)(BT * H * D));
	double *sc = malloc(sizeof(double) * (size_t)T), *u = malloc(sizeof(double) * (size_t)D);
	for (int64_t i = 0; i < BT * C; i++)
		x[i] = xf[i];
	lin(q, x, pf(L, "q_proj.weight"), NULL, BT, C, H * D);
	lin(k, x, pf(L, "k_proj.weight"), NULL, BT, C, kv);
	lin(v, x, pf(L, "v_proj.weight"), NULL, BT, C, kv);
	if (K == H) {
		lin(wr, x, pf(L, "w_proj.0.weight"), NULL, BT, C, r);
		lin(wp, wr, pf(L, "w_proj.1.weight"), NULL, BT, r, kv);
	} else {
		lin(wp, x, pf(L, "w_proj.weight"), NULL, BT, C, kv);
	}
	conv_silu(w, wp, pf(L, "w_conv1d.weight"), NULL, B, T, kv, W);
	l2n(w, BT * K, D);
	lin(bt, x, pf(L, "bt_proj.weight"), pf(L, "bt_proj.bias"), BT, C, K);
	for (int64_t i = 0; i < BT * K; i++)
		bt[i] = 2 * sig(bt[i]);
	if (fox) {
		lin(lf, x, pf(L, "g_proj.weight"), pf(L, "g_proj.bias"), BT, C, H);
		for (int64_t i = 0; i < BT * H; i++)
			lf[i] = -log1p(exp(-lf[i]));
	}
	double scale = 1 / sqrt((double)D);
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t kh = h / (H / K);
			for (int64_t i = 0; i < T; i++) {
				const double *qi = q + ((b * T + i) * H + h) * D;
				double mx = -INFINITY, z = 0;
				for (int64_t j = 0; j <= i; j++) {
					/* u = H_i ... H_{j+1} k_j, H_r = I - beta_r w_r w_rᵀ */
					for (int64_t d = 0; d < D; d++)
						u[d] = k[((b * T + j) * K + kh) * D + d];
					double gsum = 0;
					for (int64_t rr = j + 1; rr <= i; rr++) {
						const double *wv = w + ((b * T + rr) * K + kh) * D;
						double dot = 0;
						for (int64_t d = 0; d < D; d++)
							dot += wv[d] * u[d];
						for (int64_t d = 0; d < D; d++)
							u[d] -= bt[(b * T + rr) * K + kh] * dot * wv[d];
						if (fox)
							gsum += lf[(b * T + rr) * H + h];
					}
					double qu = 0;
					for (int64_t d = 0; d < D; d++)
						qu += qi[d] * u[d];
					sc[j] = scale * qu + gsum;
					mx = fmax(mx, sc[j]);
				}
				double *oi = o + ((b * T + i) * H + h) * D;
				for (int64_t d = 0; d < D; d++)
					oi[d] = 0;
				for (int64_t j = 0; j <= i; j++)
					z += exp(sc[j] - mx);
				for (int64_t j = 0; j <= i; j++) {
					double p = exp(sc[j] - mx) / z;
					for (int64_t d = 0; d < D; d++)
						oi[d] += p * v[((b * T + j) * K + kh) * D + d];
				}
			}
		}
	lin(out, o, pf(L, "o_proj.weight"), NULL, BT, H * D, C);
	free(x);
	free(q);
	free(k);
	free(v);
	free(wr);
	free(wp);
	free(w);
	free(bt);
	free(lf);
	free(o);
	free(sc);
	free(u);
}

static void ref_forward(layer *L, const float *x, int64_t B, int64_t T, double *out)
{
	switch (L->cfg.kind) {
	case LMK_MIXER_LINEAR:
		ref_linear(L, x, B, T, out);
		break;
	case LMK_MIXER_MAMBA2:
	case LMK_MIXER_LL_MAMBA2:
		ref_mamba2(L, x, B, T, out);
		break;
	case LMK_MIXER_GDN:
	case LMK_MIXER_LL_GDN:
		ref_gdn(L, x, B, T, out);
		break;
	default:
		ref_path(L, x, B, T, out);
		break;
	}
}

/* sum(ref * r) */
static double ref_loss(layer *L, const float *x, int64_t B, int64_t T, const float *r, double *buf)
{
	ref_forward(L, x, B, T, buf);
	double s = 0;
	for (int64_t i = 0; i < B * T * L->cfg.hidden; i++)
		s += buf[i] * r[i];
	return s;
}

/* ------------------------------------------------------------ the configs */

static void tiny(lmk_mixer_config *cfg, int kind, int variant)
{
	lmk_mixer_defaults(cfg, kind, 12);
	cfg->init_std = 0.3f;
	cfg->levels = 4; /* T <= 8 */
	switch (kind) {
	case LMK_MIXER_MAMBA2:
	case LMK_MIXER_LL_MAMBA2:
		cfg->heads = variant ? 4 : 2;
		cfg->head_dim = 3;
		cfg->state = variant ? 5 : 4;
		cfg->groups = variant ? 2 : 1;
		cfg->conv = variant ? 3 : 4;
		break;
	case LMK_MIXER_GDN:
	case LMK_MIXER_LL_GDN:
		cfg->heads = 2;
		cfg->head_dim = variant ? 4 : 3;
		cfg->head_dim_v = 5;
		cfg->conv = variant ? 4 : 3;
		cfg->neg_eig = variant;
		break;
	case LMK_MIXER_PATH:
	case LMK_MIXER_PATH_FOX:
		cfg->heads = 2;
		cfg->groups = variant ? 1 : 2;
		cfg->head_dim = 4;
		cfg->w_rank = 3;
		break;
	default:
		cfg->heads = 2;
		cfg->head_dim = 3;
		cfg->head_dim_v = variant ? 5 : 4;
		cfg->decay = variant; /* SimpleGLA's scalar decay */
		break;
	}
	cfg->chunk = variant ? 2 : 0; /* several chunks, a ragged last one */
}

static void random_x(float *x, int64_t n, uint64_t seed)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	for (int64_t i = 0; i < n; i++)
		x[i] = lmk_rng_normal(&r);
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_forward_reference)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++)
		for (int v = 0; v < 2; v++) {
			lmk_mixer_config cfg;
			tiny(&cfg, kind, v);
			if (lmk_mixer_check(&cfg) == LMK_EUNSUP) {
				printf("test_mixer: %s skipped: %s\n", lmk_mixer_kind_name(kind),
				       lmk_errmsg());
				break;
			}
			layer L;
			ck_assert_int_eq(make_layer(&L, &cfg, 40 + (uint64_t)kind), 0);
			int64_t B = 2, T = v ? 7 : 5, n = B * T * cfg.hidden;
			float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
			double *ref = malloc(sizeof(double) * (size_t)n);
			random_x(x, n, 7 + (uint64_t)v);
			loss_of(&L, x, B, T, NULL, y);
			ref_forward(&L, x, B, T, ref);
			double e2 = 0, r2 = 0;
			for (int64_t i = 0; i < n; i++) {
				e2 += (y[i] - ref[i]) * (y[i] - ref[i]);
				r2 += ref[i] * ref[i];
			}
			double e = sqrt(e2 / r2);
			printf("test_mixer: %-9s variant %d: forward against float64 %.1e\n",
			       lmk_mixer_kind_name(kind), v, e);
			ck_assert_msg(r2 > 1e-6, "%s: a zero output tests nothing",
				      lmk_mixer_kind_name(kind));
			ck_assert_msg(e < 1e-4, "%s variant %d: forward differs from the reference by %g",
				      lmk_mixer_kind_name(kind), v, e);
			free(x);
			free(y);
			free(ref);
			lmk_params_free(&L.p);
		}
}
END_TEST

/* Decoding: the layer stepped one token at a time (lmk_mixer_step, its
 * conv and core states) gives every position of the parallel forward, for
 * every kind, both variants (several chunks in the forward), B 2, T 8 (the
 * most 4 Fenwick levels hold); a second state, reset by freeing and making
 * it again, gives the same again; a wrong batch or a (B,2,C) input is
 * refused. */
START_TEST(test_step)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++)
		for (int v = 0; v < 2; v++) {
			lmk_mixer_config cfg;
			tiny(&cfg, kind, v);
			layer L;
			ck_assert_int_eq(make_layer(&L, &cfg, 60 + (uint64_t)kind), 0);
			const int64_t B = 2, T = 8, C = cfg.hidden, n = B * T * C;
			float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
			float *z = malloc(sizeof(float) * (size_t)n);
			random_x(x, n, 17 + (uint64_t)v);
			loss_of(&L, x, B, T, NULL, y);
			lmk_ctx c;
			ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
			lmk_mixer_state st;
			for (int pass = 0; pass < 2; pass++) {
				ck_assert_msg(lmk_mixer_state_init(&st, &L.m, &c, B, T) == 0, "%s",
					      lmk_errmsg());
				for (int64_t t = 0; t < T; t++) {
					lmk_ctx_reset(&c);
					lmk_tensor *xt = lmk_tensor_new(&c, LMK_F32, 3,
									(int64_t[]){B, 1, C}, 0);
					for (int64_t b = 0; b < B; b++)
						memcpy((float *)xt->data + b * C, x + (b * T + t) * C,
						       sizeof(float) * (size_t)C);
					lmk_tensor *o = lmk_mixer_step(&c, &L.m, &st, xt);
					ck_assert_msg(o != NULL, "%s t %lld: %s", lmk_mixer_kind_name(kind),
						      (long long)t, lmk_errmsg());
					ck_assert_int_eq(c.ntape, 0);
					for (int64_t b = 0; b < B; b++)
						memcpy(z + (b * T + t) * C, (float *)o->data + b * C,
						       sizeof(float) * (size_t)C);
				}
				ck_assert_int_eq(st.t, T);
				double e2 = 0, r2 = 0;
				for (int64_t i = 0; i < n; i++) {
					e2 += ((double)z[i] - y[i]) * ((double)z[i] - y[i]);
					r2 += (double)y[i] * y[i];
				}
				double e = sqrt(e2 / r2);
				if (pass == 0)
					printf("test_mixer: %-9s variant %d: steps against the forward "
					       "%.1e\n", lmk_mixer_kind_name(kind), v, e);
				ck_assert_msg(e < 1e-5, "%s variant %d: steps differ from the forward by %g",
					      lmk_mixer_kind_name(kind), v, e);
				if (pass == 1) {
					/* another batch, two tokens at once */
					lmk_ctx_reset(&c);
					lmk_tensor *x1 = lmk_tensor_new(&c, LMK_F32, 3,
									(int64_t[]){1, 1, C}, 0);
					lmk_tensor *x2 = lmk_tensor_new(&c, LMK_F32, 3,
									(int64_t[]){B, 2, C}, 0);
					memset(x1->data, 0, sizeof(float) * (size_t)C);
					memset(x2->data, 0, sizeof(float) * (size_t)(2 * B * C));
					ck_assert_ptr_null(lmk_mixer_step(&c, &L.m, &st, x1));
					ck_assert_ptr_null(lmk_mixer_step(&c, &L.m, &st, x2));
					ck_assert_int_eq(st.t, T);
				}
				lmk_mixer_state_free(&st);
			}
			/* log-linear: more tokens than the levels hold */
			if (kind == LMK_MIXER_LL_MAMBA2 || kind == LMK_MIXER_LL_GDN)
				ck_assert_int_eq(lmk_mixer_state_init(&st, &L.m, &c, B, 9), LMK_EINVAL);
			lmk_ctx_free(&c);
			free(x);
			free(y);
			free(z);
			lmk_params_free(&L.p);
		}
}
END_TEST

/* Directional derivatives: tape against central differences. */
START_TEST(test_gradients)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++)
		for (int v = 0; v < 2; v++) {
			lmk_mixer_config cfg;
			tiny(&cfg, kind, v);
			if (lmk_mixer_check(&cfg) == LMK_EUNSUP) {
				printf("test_mixer: %s skipped: %s\n", lmk_mixer_kind_name(kind),
				       lmk_errmsg());
				break;
			}
			layer L;
			ck_assert_int_eq(make_layer(&L, &cfg, 90 + (uint64_t)kind), 0);
			int64_t B = 2, T = v ? 7 : 6, n = B * T * cfg.hidden;
			float *x = malloc(sizeof(float) * (size_t)n), *r = malloc(sizeof(float) * (size_t)n);
			random_x(x, n, 3 + (uint64_t)v);
			random_x(r, n, 5 + (uint64_t)v);

			/* the tape's gradients */
			lmk_ctx c;
			ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
			lmk_params_zero_grad(&L.p);
			lmk_tensor *xt = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){B, T, cfg.hidden}, 1);
			memcpy(xt->data, x, sizeof(float) * (size_t)n);
			lmk_tensor *y = lmk_mixer_forward(&c, &L.m, xt);
			ck_assert_msg(y != NULL, "%s: %s", lmk_mixer_kind_name(kind), lmk_errmsg());
			ck_assert_int_eq(lmk_backward_from(&c, y, r), 0);
			float *gx = malloc(sizeof(float) * (size_t)n);
			double *buf = malloc(sizeof(double) * (size_t)n);
			memcpy(gx, xt->grad, sizeof(float) * (size_t)n);
			lmk_ctx_free(&c);

			double worst = 0;
			lmk_rng rng;
			lmk_rng_init(&rng, 17);
			for (int ti = -1; ti < L.m.np; ti++) {
				float *val = ti < 0 ? x : L.m.w[ti]->data;
				const float *ga = ti < 0 ? gx : L.m.w[ti]->grad;
				int64_t m = ti < 0 ? n : L.m.w[ti]->n;
				const char *nm = ti < 0 ? "x" : L.m.w[ti]->name;
				float *u = malloc(sizeof(float) * (size_t)m);
				float *keep = malloc(sizeof(float) * (size_t)m);
				float *plus = malloc(sizeof(float) * (size_t)m);
				memcpy(keep, val, sizeof(float) * (size_t)m);
				for (int dir = 0; dir < 2; dir++) {
					for (int64_t j = 0; j < m; j++)
						u[j] = lmk_rng_normal(&rng);
					/* the float64 reference at the float32 points
					 * keep +- h u; the step taken is what rounding to
					 * float leaves, (plus - minus) / 2, exact in double */
					double an = 0, gn = 0, dn = 0;
					for (int64_t j = 0; j < m; j++)
						plus[j] = keep[j] + (float)(HSTEP * u[j]);
					for (int64_t j = 0; j < m; j++)
						val[j] = keep[j] - (float)(HSTEP * u[j]);
					double lm = ref_loss(&L, x, B, T, r, buf);
					memcpy(val, plus, sizeof(float) * (size_t)m);
					double lp = ref_loss(&L, x, B, T, r, buf);
					for (int64_t j = 0; j < m; j++) {
						double d = ((double)plus[j] -
							    (double)(keep[j] - (float)(HSTEP * u[j]))) / 2;
						an += (double)ga[j] * d;
						gn += (double)ga[j] * ga[j];
						dn += d * d;
					}
					memcpy(val, keep, sizeof(float) * (size_t)m);
					double num = (lp - lm) / 2;
					/* relative to a typical directional derivative,
					 * ||g|| rms(d), as g.d may cancel */
					double typ = sqrt(gn) * sqrt(dn / (double)m);
					double err = fabs(num - an) / fmax(fmax(fabs(an), typ), 1e-12);
					if (err > worst)
						worst = err;
					ck_assert_msg(err < GRAD_TOL,
						      "%s variant %d: %s: tape %.8g, differences %.8g "
						      "(typical %.3g)",
						      lmk_mixer_kind_name(kind), v, nm, an, num, typ);
				}
				free(u);
				free(keep);
				free(plus);
			}
			printf("test_mixer: %-9s variant %d: %2d parameters, worst directional "
			       "derivative error %.1e\n",
			       lmk_mixer_kind_name(kind), v, L.m.np, worst);
			fflush(stdout);
			free(x);
			free(r);
			free(gx);
			free(buf);
			lmk_params_free(&L.p);
		}
}
END_TEST

/* Registered sizes, the closed form, and counts by hand. */
START_TEST(test_param_counts)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++) {
		lmk_mixer_config cfg;
		for (int v = 0; v < 3; v++) {
			if (v < 2)
				tiny(&cfg, kind, v);
			else
				lmk_mixer_defaults(&cfg, kind, 768);
			lmk_params p;
			lmk_mixer m;
			lmk_params_init(&p, 1);
			int rc = lmk_mixer_register(&m, &cfg, &p, "layers.3.mixer.");
			if (rc == LMK_EUNSUP) {
				lmk_params_free(&p);
				break;
			}
			ck_assert_int_eq(rc, 0);
			int64_t sum = 0;
			for (int i = 0; i < p.nt; i++) {
				sum += p.t[i].n;
				ck_assert(!strncmp(p.t[i].name, "layers.3.mixer.", 15));
			}
			ck_assert_int_eq(p.nt, m.np);
			ck_assert_int_eq(sum, lmk_mixer_param_count(&cfg));
			lmk_params_free(&p);
		}
	}
	lmk_mixer_config cfg;
	/* mamba_ssm's Mamba2 at d_model 768: in_proj 3352 x 768, conv 1792 x
	 * (4 + 1), 3 x 24 per-head, norm 1536, out_proj 768 x 1536 */
	lmk_mixer_defaults(&cfg, LMK_MIXER_MAMBA2, 768);
	ck_assert_int_eq(cfg.heads, 24);
	ck_assert_int_eq(lmk_mixer_param_count(&cfg), 3764552);
	lmk_mixer_defaults(&cfg, LMK_MIXER_LL_MAMBA2, 768);
	ck_assert_int_eq(lmk_mixer_param_count(&cfg), 3764552 + 24 * 15 * 768 + 24 * 15);
	/* fla's GatedDeltaNet at 2048, 6 heads of 256: "around 6 C²" */
	lmk_mixer_defaults(&cfg, LMK_MIXER_GDN, 2048);
	ck_assert_int_eq(cfg.heads, 6);
	ck_assert_int_eq(lmk_mixer_param_count(&cfg), 25215500);
	/* fla's PaTHAttention at 768, 12 heads: q, k, v, o 768², w_proj
	 * 768x32 + 32x768, w_conv1d 768 x 3, bt_proj 12 x 768 + 12 */
	lmk_mixer_defaults(&cfg, LMK_MIXER_PATH, 768);
	ck_assert_int_eq(lmk_mixer_param_count(&cfg), 2419980);
	lmk_mixer_defaults(&cfg, LMK_MIXER_PATH_FOX, 768);
	ck_assert_int_eq(lmk_mixer_param_count(&cfg), 2419980 + 12 * 768 + 12);
	/* names as the reference modules have them */
	lmk_params p;
	lmk_mixer m;
	lmk_params_init(&p, 1);
	lmk_mixer_defaults(&cfg, LMK_MIXER_LL_GDN, 256);
	ck_assert_int_eq(lmk_mixer_register(&m, &cfg, &p, ""), 0);
	const char *names[] = {"q_proj.weight",   "k_proj.weight",   "v_proj.weight",
			       "a_proj.weight",   "b_proj.weight",   "A_log",
			       "dt_bias",         "q_conv1d.weight", "k_conv1d.weight",
			       "v_conv1d.weight", "dl_proj.weight",  "L",
			       "g_proj.weight",   "o_norm.weight",   "o_proj.weight"};
	ck_assert_int_eq(p.nt, 15);
	for (int i = 0; i < 15; i++)
		ck_assert_str_eq(p.t[i].name, names[i]);
	ck_assert_int_eq(p.t[7].shape[1], 4); /* conv weights (channels, W) */
	lmk_params_free(&p);
}
END_TEST

START_TEST(test_init)
{
	lmk_mixer_config cfg;
	lmk_mixer_defaults(&cfg, LMK_MIXER_MAMBA2, 128);
	layer a, b;
	for (int k = 0; k < 2; k++) {
		layer *L = k ? &b : &a;
		lmk_params_init(&L->p, 1);
		ck_assert_int_eq(lmk_mixer_register(&L->m, &cfg, &L->p, ""), 0);
		ck_assert_int_eq(lmk_params_alloc(&L->p), 0);
		ck_assert_int_ne(lmk_mixer_init_weights(&L->m, 5), 0); /* not bound */
		ck_assert_int_eq(lmk_mixer_bind(&L->m, &L->p), 0);
		ck_assert_int_eq(lmk_mixer_init_weights(&L->m, 5), 0);
	}
	ck_assert(memcmp(a.p.data, b.p.data, sizeof(float) * a.p.n) == 0);
	const float *alog = lmk_params_find(&a.p, "A_log")->data;
	const float *dtb = lmk_params_find(&a.p, "dt_bias")->data;
	const float *D = lmk_params_find(&a.p, "D")->data;
	for (int64_t h = 0; h < cfg.heads; h++) {
		ck_assert(alog[h] >= 0 && alog[h] <= logf(16) + 1e-6f);
		double dt = log1p(exp(dtb[h]));
		ck_assert_msg(dt >= 0.999e-3 && dt <= 0.1001, "dt %g", dt);
		ck_assert_float_eq(D[h], 1.0f);
	}
	const lmk_tensor *w = lmk_params_find(&a.p, "in_proj.weight");
	double s2 = 0;
	for (int64_t i = 0; i < w->n; i++)
		s2 += (double)((float *)w->data)[i] * ((float *)w->data)[i];
	ck_assert(fabs(sqrt(s2 / (double)w->n) - 0.02) < 0.002);
	ck_assert_int_eq(lmk_mixer_init_weights(&b.m, 6), 0);
	ck_assert(memcmp(a.p.data, b.p.data, sizeof(float) * a.p.n) != 0);
	lmk_params_free(&a.p);
	lmk_params_free(&b.p);
}
END_TEST

/* A one-layer model (embedding, pre-norm mixer with a residual, norm,
 * head) learns flip-flop for 50 AdamW steps: the pieces train together.
 * @return : the mean loss of the first and of the last 10 steps */
static void train_flipflop(int kind, double *first, double *last)
{
	lmk_mixer_config cfg;
	lmk_mixer_defaults(&cfg, kind, 32);
	cfg.heads = 2;
	cfg.head_dim = 16;
	cfg.head_dim_v = 16;
	cfg.state = 16;
	cfg.groups = kind == LMK_MIXER_PATH || kind == LMK_MIXER_PATH_FOX ? 2 : 1;
	cfg.w_rank = 8;
	cfg.levels = 6;
	cfg.init_std = 0.1f;
	lmk_synth task;
	ck_assert_int_eq(lmk_synth_parse(&task, "flipflop"), 0);
	task.T = 32;
	task.p_write = task.p_read = 0.25;
	int64_t B = 8, T = task.T, V = task.vocab, C = cfg.hidden;
	lmk_params p;
	lmk_mixer m;
	lmk_params_init(&p, 1);
	ck_assert_int_eq(lmk_params_add(&p, "embed", 2, (int64_t[]){V, C}), 0);
	ck_assert_int_eq(lmk_params_add(&p, "norm1", 1, (int64_t[]){C}), 1);
	ck_assert_int_eq(lmk_mixer_register(&m, &cfg, &p, "mixer."), 0);
	int in2 = lmk_params_add(&p, "norm2", 1, (int64_t[]){C});
	int ih = lmk_params_add(&p, "head", 2, (int64_t[]){V, C});
	ck_assert_int_ge(ih, 0);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	ck_assert_int_eq(lmk_mixer_bind(&m, &p), 0);
	ck_assert_int_eq(lmk_mixer_init_weights(&m, 3), 0);
	lmk_rng r;
	lmk_rng_init(&r, 9);
	for (int64_t i = 0; i < p.t[0].n; i++)
		((float *)p.t[0].data)[i] = lmk_rng_normal(&r);
	for (int64_t i = 0; i < p.t[ih].n; i++)
		((float *)p.t[ih].data)[i] = 0.1f * lmk_rng_normal(&r);
	for (int64_t i = 0; i < C; i++)
		((float *)p.t[1].data)[i] = ((float *)p.t[in2].data)[i] = 1.0f;
	lmk_adamw opt;
	lmk_adamw_config oc;
	lmk_adamw_config_default(&oc);
	oc.weight_decay = 0;
	ck_assert_int_eq(lmk_adamw_init(&opt, &p, &oc), 0);
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	int32_t *x = malloc(sizeof(int32_t) * (size_t)(B * T)), *y = malloc(sizeof(int32_t) * (size_t)(B * T));
	const int steps = 50;
	*first = *last = 0;
	for (int st = 0; st < steps; st++) {
		ck_assert_int_eq(lmk_synth_batch(&task, (uint64_t)st * (uint64_t)B, B, x, y), 0);
		lmk_ctx_reset(&c);
		lmk_params_zero_grad(&p);
		lmk_tensor *ids = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){B, T}, x);
		lmk_tensor *tg = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){B, T}, y);
		lmk_tensor *h = lmk_embedding(&c, ids, &p.t[0]);
		h = lmk_add(&c, h, lmk_mixer_forward(&c, &m, lmk_rmsnorm(&c, h, &p.t[1], 1e-5f)));
		lmk_tensor *logits = lmk_linear(&c, lmk_rmsnorm(&c, h, &p.t[in2], 1e-5f), &p.t[ih], NULL);
		lmk_tensor *loss = lmk_cross_entropy(&c, logits, tg, -1, NULL);
		ck_assert_msg(loss != NULL, "%s: %s", lmk_mixer_kind_name(kind), lmk_errmsg());
		ck_assert_int_eq(lmk_backward(&c, loss, 1.0f), 0);
		lmk_clip_grad_norm(&p, 1.0);
		lmk_adamw_step(&opt, 1e-2f);
		double l = *(float *)loss->data;
		ck_assert(isfinite(l));
		if (st < 10)
			*first += l / 10;
		if (st >= steps - 10)
			*last += l / 10;
	}
	free(x);
	free(y);
	lmk_ctx_free(&c);
	lmk_adamw_free(&opt);
	lmk_params_free(&p);
}

START_TEST(test_train_flipflop)
{
	for (int kind = 0; kind < LMK_MIXER_NKINDS; kind++) {
		lmk_mixer_config cfg;
		lmk_mixer_defaults(&cfg, kind, 32);
		if (lmk_mixer_check(&cfg) == LMK_EUNSUP)
			continue;
		double a, b;
		train_flipflop(kind, &a, &b);
		printf("test_mixer: %-9s flip-flop loss %.3f -> %.3f in 50 steps\n",
		       lmk_mixer_kind_name(kind), a, b);
		fflush(stdout);
		/* every kind learns; those that can forget (all but plain
		 * linear attention) recall the latest write, far below the
		 * ln 2 of guessing the bit */
		ck_assert_msg(b < 0.75 * a, "%s: the loss went from %g to %g",
			      lmk_mixer_kind_name(kind), a, b);
		if (kind != LMK_MIXER_LINEAR)
			ck_assert_msg(b < 0.25, "%s: the loss went from %g to %g only",
				      lmk_mixer_kind_name(kind), a, b);
	}
}
END_TEST

START_TEST(test_errors)
{
	lmk_mixer_config cfg;
	lmk_params p;
	lmk_mixer m;
	ck_assert_int_eq(lmk_mixer_kind_parse("ll-gdn"), LMK_MIXER_LL_GDN);
	ck_assert_int_eq(lmk_mixer_kind_parse("path-fox"), LMK_MIXER_PATH_FOX);
	ck_assert_int_eq(lmk_mixer_kind_parse("mamba3"), LMK_EINVAL);
	ck_assert_str_eq(lmk_errmsg(), "mixer: unknown kind 'mamba3' (linear, mamba2, gdn, "
				       "ll-mamba2, ll-gdn, path, path-fox)");
	ck_assert_str_eq(lmk_mixer_kind_name(LMK_MIXER_LL_MAMBA2), "ll-mamba2");
	lmk_mixer_defaults(&cfg, LMK_MIXER_MAMBA2, 64);
	cfg.groups = 3; /* 2 heads */
	ck_assert_int_eq(lmk_mixer_check(&cfg), LMK_EINVAL);
	lmk_params_init(&p, 1);
	ck_assert_int_eq(lmk_mixer_register(&m, &cfg, &p, ""), LMK_EINVAL);
	ck_assert_int_eq(p.nt, 0);
	/* a layer registered twice under one prefix */
	lmk_mixer_defaults(&cfg, LMK_MIXER_GDN, 64);
	ck_assert_int_eq(lmk_mixer_register(&m, &cfg, &p, "a."), 0);
	ck_assert_int_eq(lmk_mixer_register(&m, &cfg, &p, "a."), LMK_EINVAL);
	ck_assert_int_eq(lmk_mixer_bind(&m, &p), LMK_EINVAL); /* not allocated */
	lmk_params_free(&p);

	/* the wrong input, too many tokens for the levels */
	tiny(&cfg, LMK_MIXER_LL_MAMBA2, 0);
	layer L;
	ck_assert_int_eq(make_layer(&L, &cfg, 1), 0);
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 9, 12}, 0);
	memset(x->data, 0, sizeof(float) * (size_t)x->n);
	ck_assert_ptr_null(lmk_mixer_forward(&c, &L.m, x));
	ck_assert_str_eq(lmk_errmsg(), "mixer: ll-mamba2: 9 tokens need 5 levels, the layer has 4");
	x = lmk_tensor_new(&c, LMK_F32, 3, (int64_t[]){1, 8, 11}, 0);
	ck_assert_ptr_null(lmk_mixer_forward(&c, &L.m, x));
	ck_assert_str_eq(lmk_errmsg(), "mixer: ll-mamba2: x (1,8,11): expected (B,T,12)");
	ck_assert_ptr_null(lmk_mixer_forward(&c, &L.m, NULL));
	lmk_ctx_free(&c);
	lmk_params_free(&L.p);
}
END_TEST

int main(void)
{
	if (getenv("HSTEP"))
		HSTEP = atof(getenv("HSTEP"));
	Suite *s = suite_create("mixer");
	TCase *tc = tcase_create("layers");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_param_counts);
	tcase_add_test(tc, test_init);
	tcase_add_test(tc, test_forward_reference);
	tcase_add_test(tc, test_step);
	tcase_add_test(tc, test_gradients);
	tcase_add_test(tc, test_errors);
	tcase_add_test(tc, test_train_flipflop);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
