/* mixer.c: the token-mixer layers of mixer.h: their parameter tables, their
 * initialisation and their forward as a composition of ops (the tape gives
 * the backward). Shape letters as in mixer.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "gdn.h"
#include "mixer.h"
#include "op.h"
#include "ops.h"
#include "rng.h"
#include "seqops.h"
#include "ssd.h"

#if defined(__has_include)
#if __has_include("path.h")
#include "path.h"
#define HAVE_PATH 1
#endif
#endif

#if LMK_CUDA
#include "../cuda/cuda.h"
#endif

/* What a parameter is: how it is initialised and where the forward uses it. */
enum {
	R_IN_PROJ, R_CONV_W, R_CONV_B, R_DT_BIAS, R_A_LOG, R_L, R_D, R_NORM, R_OUT_PROJ,
	R_Q, R_K, R_V, R_A_PROJ, R_B_PROJ, R_QCONV, R_KCONV, R_VCONV, R_DL, R_G_PROJ,
	R_W0, R_W1, R_W, R_WCONV, R_BT_W, R_BT_B, R_F_W, R_F_B, R_GK_W, R_GK_B,
};

enum { I_LINEAR, I_CONV, I_ZERO, I_ONES, I_ALOG_MAMBA, I_ALOG_GDN, I_DT_BIAS };

static const char *const kind_names[LMK_MIXER_NKINDS] = {
	"linear", "mamba2", "gdn", "ll-mamba2", "ll-gdn", "path", "path-fox"};

static int is_ll(int kind) { return kind == LMK_MIXER_LL_MAMBA2 || kind == LMK_MIXER_LL_GDN; }
static int is_mamba(int kind) { return kind == LMK_MIXER_MAMBA2 || kind == LMK_MIXER_LL_MAMBA2; }
static int is_gdn(int kind) { return kind == LMK_MIXER_GDN || kind == LMK_MIXER_LL_GDN; }
static int is_path(int kind) { return kind == LMK_MIXER_PATH || kind == LMK_MIXER_PATH_FOX; }

void lmk_mixer_defaults(lmk_mixer_config *cfg, int kind, int64_t hidden)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->kind = kind;
	cfg->hidden = hidden;
	cfg->norm_eps = 1e-5f;
	cfg->init_std = 0.02f;
	cfg->levels = 15;
	cfg->conv = 4;
	int64_t h64 = hidden / 64 > 0 ? hidden / 64 : 1;
	if (is_mamba(kind)) {
		cfg->head_dim = 64;
		cfg->heads = 2 * h64;
		cfg->state = 128;
		cfg->groups = 1;
	} else if (is_gdn(kind)) {
		cfg->head_dim = hidden >= 2048 ? 256 : 128;
		cfg->heads = 3 * hidden / 4 / cfg->head_dim;
		if (cfg->heads < 1)
			cfg->heads = 1;
		cfg->head_dim_v = 2 * cfg->head_dim;
	} else if (is_path(kind)) {
		cfg->heads = h64;
		cfg->head_dim = 64;
		cfg->groups = h64;
		cfg->w_rank = 32;
		cfg->conv = 3;
	} else {
		cfg->heads = h64;
		cfg->head_dim = 64;
		cfg->head_dim_v = 64;
	}
}

int lmk_mixer_kind_parse(const char *name)
{
	for (int k = 0; k < LMK_MIXER_NKINDS; k++)
		if (name && !strcmp(name, kind_names[k]))
			return k;
	return lmk_err(LMK_EINVAL, "mixer: unknown kind '%s' (linear, mamba2, gdn, ll-mamba2, "
				   "ll-gdn, path, path-fox)",
		       name ? name : "(null)");
}

const char *lmk_mixer_kind_name(int kind)
{
	return kind >= 0 && kind < LMK_MIXER_NKINDS ? kind_names[kind] : "?";
}

int lmk_mixer_config_set(lmk_mixer_config *cfg, const char *key, int64_t v)
{
	static const char *const keys[] = {"heads", "head_dim", "head_dim_v", "state", "groups",
					   "conv", "levels", "w_rank", "chunk", "decay", "neg_eig"};
	int64_t *dst[] = {&cfg->heads, &cfg->head_dim, &cfg->head_dim_v, &cfg->state,
			  &cfg->groups, &cfg->conv, &cfg->levels, &cfg->w_rank};
	size_t i = 0;
	while (i < sizeof keys / sizeof *keys && strcmp(keys[i], key))
		i++;
	if (i == sizeof keys / sizeof *keys)
		return lmk_err(LMK_EINVAL, "mixer: no setting '%s' (heads, head_dim, head_dim_v, state, "
			       "groups, conv, levels, w_rank, chunk, decay, neg_eig)", key);
	if (v < 0 || v > (1 << 24))
		return lmk_err(LMK_EINVAL, "mixer: %s=%lld: expected 0 to %d", key, (long long)v,
			       1 << 24);
	if (i < sizeof dst / sizeof *dst)
		*dst[i] = v;
	else if (!strcmp(key, "chunk"))
		cfg->chunk = (int)v;
	else if (!strcmp(key, "decay"))
		cfg->decay = v != 0;
	else
		cfg->neg_eig = v != 0;
	return 0;
}

int lmk_mixer_check(const lmk_mixer_config *cfg)
{
	int k = cfg->kind;
	if (k < 0 || k >= LMK_MIXER_NKINDS)
		return lmk_err(LMK_EINVAL, "mixer: unknown kind %d", k);
	const char *nm = kind_names[k];
	if (cfg->hidden < 1 || cfg->heads < 1 || cfg->head_dim < 1)
		return lmk_err(LMK_EINVAL, "mixer: %s: hidden %lld, heads %lld, head_dim %lld: "
					   "expected all >= 1",
			       nm, (long long)cfg->hidden, (long long)cfg->heads,
			       (long long)cfg->head_dim);
	if (!(cfg->norm_eps >= 0) || !(cfg->init_std >= 0) || cfg->chunk < 0)
		return lmk_err(LMK_EINVAL, "mixer: %s: expected norm_eps, init_std, chunk >= 0", nm);
	if (cfg->conv < 1 || cfg->conv > 64)
		return lmk_err(LMK_EINVAL, "mixer: %s: expected 1 <= conv <= 64, found %lld", nm,
			       (long long)cfg->conv);
	if (is_ll(k) && (cfg->levels < 1 || cfg->levels > 62))
		return lmk_err(LMK_EINVAL, "mixer: %s: expected 1 <= levels <= 62, found %lld", nm,
			       (long long)cfg->levels);
	if (is_mamba(k) && (cfg->state < 1 || cfg->groups < 1 || cfg->heads % cfg->groups))
		return lmk_err(LMK_EINVAL, "mixer: %s: state %lld, groups %lld, heads %lld: expected "
					   "state >= 1 and heads a multiple of groups",
			       nm, (long long)cfg->state, (long long)cfg->groups,
			       (long long)cfg->heads);
	if ((is_gdn(k) || k == LMK_MIXER_LINEAR) && cfg->head_dim_v < 1)
		return lmk_err(LMK_EINVAL, "mixer: %s: expected head_dim_v >= 1, found %lld", nm,
			       (long long)cfg->head_dim_v);
	if (is_path(k)) {
		if (cfg->groups < 1 || cfg->heads % cfg->groups)
			return lmk_err(LMK_EINVAL, "mixer: %s: heads %lld, groups %lld: expected heads "
						   "a multiple of the key/value heads",
				       nm, (long long)cfg->heads, (long long)cfg->groups);
		if (cfg->groups == cfg->heads && cfg->w_rank < 1)
			return lmk_err(LMK_EINVAL, "mixer: %s: expected w_rank >= 1, found %lld", nm,
				       (long long)cfg->w_rank);
#ifndef HAVE_PATH
		return lmk_err(LMK_EUNSUP, "mixer: %s: this build has no PaTH attention (lib/path.h)",
			       nm);
#endif
	}
	return 0;
}

/* ------------------------------------------------------------ the tables */

typedef struct pdesc {
	const char *name;
	int role, init, ndim;
	int64_t shape[2];
} pdesc;

/* The layer's parameters in the reference modules' order. @return : count */
static int describe(const lmk_mixer_config *cfg, pdesc *d)
{
	int64_t C = cfg->hidden, H = cfg->heads, W = cfg->conv, NL = cfg->levels, n = 0;
#define ADD1(nm, rl, in, a) d[n++] = (pdesc){nm, rl, in, 1, {a, 0}}
#define ADD2(nm, rl, in, a, b) d[n++] = (pdesc){nm, rl, in, 2, {a, b}}
	if (is_mamba(cfg->kind)) {
		int64_t di = H * cfg->head_dim, GN = cfg->groups * cfg->state, cd = di + 2 * GN;
		int64_t rows = 2 * di + 2 * GN + H + (is_ll(cfg->kind) ? H * NL : 0);
		ADD2("in_proj.weight", R_IN_PROJ, I_LINEAR, rows, C);
		ADD2("conv1d.weight", R_CONV_W, I_CONV, cd, W);
		ADD1("conv1d.bias", R_CONV_B, I_CONV, cd);
		ADD1("dt_bias", R_DT_BIAS, I_DT_BIAS, H);
		ADD1("A_log", R_A_LOG, I_ALOG_MAMBA, H);
		if (is_ll(cfg->kind))
			ADD2("L", R_L, I_ONES, H, NL);
		ADD1("D", R_D, I_ONES, H);
		ADD1("norm.weight", R_NORM, I_ONES, di);
		ADD2("out_proj.weight", R_OUT_PROJ, I_LINEAR, C, di);
	} else if (is_gdn(cfg->kind)) {
		int64_t kd = H * cfg->head_dim, vd = H * cfg->head_dim_v;
		ADD2("q_proj.weight", R_Q, I_LINEAR, kd, C);
		ADD2("k_proj.weight", R_K, I_LINEAR, kd, C);
		ADD2("v_proj.weight", R_V, I_LINEAR, vd, C);
		ADD2("a_proj.weight", R_A_PROJ, I_LINEAR, H, C);
		ADD2("b_proj.weight", R_B_PROJ, I_LINEAR, H, C);
		ADD1("A_log", R_A_LOG, I_ALOG_GDN, H);
		ADD1("dt_bias", R_DT_BIAS, I_DT_BIAS, H);
		ADD2("q_conv1d.weight", R_QCONV, I_CONV, kd, W);
		ADD2("k_conv1d.weight", R_KCONV, I_CONV, kd, W);
		ADD2("v_conv1d.weight", R_VCONV, I_CONV, vd, W);
		if (is_ll(cfg->kind)) {
			ADD2("dl_proj.weight", R_DL, I_LINEAR, H * NL, C);
			ADD2("L", R_L, I_ONES, H, NL);
		}
		ADD2("g_proj.weight", R_G_PROJ, I_LINEAR, vd, C);
		ADD1("o_norm.weight", R_NORM, I_ONES, cfg->head_dim_v);
		ADD2("o_proj.weight", R_OUT_PROJ, I_LINEAR, C, vd);
	} else if (is_path(cfg->kind)) {
		int64_t K = cfg->groups, D = cfg->head_dim, kv = K * D, r = cfg->w_rank;
		ADD2("q_proj.weight", R_Q, I_LINEAR, H * D, C);
		ADD2("k_proj.weight", R_K, I_LINEAR, kv, C);
		ADD2("v_proj.weight", R_V, I_LINEAR, kv, C);
		if (K == H) {
			ADD2("w_proj.0.weight", R_W0, I_LINEAR, r, C);
			ADD2("w_proj.1.weight", R_W1, I_LINEAR, kv, r);
		} else {
			ADD2("w_proj.weight", R_W, I_LINEAR, kv, C);
		}
		ADD2("w_conv1d.weight", R_WCONV, I_CONV, kv, W);
		ADD2("bt_proj.weight", R_BT_W, I_LINEAR, K, C);
		ADD1("bt_proj.bias", R_BT_B, I_ZERO, K);
		if (cfg->kind == LMK_MIXER_PATH_FOX) {
			ADD2("g_proj.weight", R_F_W, I_LINEAR, H, C);
			ADD1("g_proj.bias", R_F_B, I_ZERO, H);
		}
		ADD2("o_proj.weight", R_OUT_PROJ, I_LINEAR, C, H * D);
	} else {
		int64_t kd = H * cfg->head_dim, vd = H * cfg->head_dim_v;
		ADD2("q_proj.weight", R_Q, I_LINEAR, kd, C);
		ADD2("k_proj.weight", R_K, I_LINEAR, kd, C);
		ADD2("v_proj.weight", R_V, I_LINEAR, vd, C);
		if (cfg->decay) {
			ADD2("gk_proj.weight", R_GK_W, I_LINEAR, H, C);
			ADD1("gk_proj.bias", R_GK_B, I_ZERO, H);
		}
		ADD1("norm.weight", R_NORM, I_ONES, cfg->head_dim_v);
		ADD2("o_proj.weight", R_OUT_PROJ, I_LINEAR, C, vd);
	}
#undef ADD1
#undef ADD2
	return (int)n;
}

int64_t lmk_mixer_param_count(const lmk_mixer_config *cfg)
{
	int rc = lmk_mixer_check(cfg);
	if (rc < 0 && rc != LMK_EUNSUP)
		return rc;
	int64_t C = cfg->hidden, H = cfg->heads, W = cfg->conv, NL = cfg->levels;
	int64_t ll = is_ll(cfg->kind) ? H * NL * C + H * NL : 0;
	if (is_mamba(cfg->kind)) {
		int64_t d = H * cfg->head_dim, GN = cfg->groups * cfg->state, cd = d + 2 * GN;
		return (2 * d + 2 * GN + H) * C + cd * (W + 1) + 3 * H + d + C * d + ll;
	}
	if (is_gdn(cfg->kind)) {
		int64_t kd = H * cfg->head_dim, vd = H * cfg->head_dim_v;
		return (2 * kd + 2 * vd + 2 * H) * C + 2 * H + (2 * kd + vd) * W + cfg->head_dim_v +
		       C * vd + ll;
	}
	if (is_path(cfg->kind)) {
		int64_t K = cfg->groups, D = cfg->head_dim, kv = K * D, r = cfg->w_rank;
		int64_t wp = K == H ? r * C + kv * r : kv * C;
		int64_t fox = cfg->kind == LMK_MIXER_PATH_FOX ? H * C + H : 0;
		return H * D * C + 2 * kv * C + wp + kv * W + K * C + K + C * H * D + fox;
	}
	int64_t kd = H * cfg->head_dim, vd = H * cfg->head_dim_v;
	return (2 * kd + vd) * C + cfg->head_dim_v + C * vd + (cfg->decay ? H * C + H : 0);
}

int lmk_mixer_register(lmk_mixer *m, const lmk_mixer_config *cfg, lmk_params *p,
		       const char *prefix)
{
	memset(m, 0, sizeof *m);
	int rc = lmk_mixer_check(cfg);
	if (rc < 0)
		return rc;
	m->cfg = *cfg;
	pdesc d[LMK_MIXER_MAXP];
	int n = describe(cfg, d);
	for (int i = 0; i < n; i++) {
		char name[256];
		int len = snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", d[i].name);
		if (len < 0 || (size_t)len >= sizeof name)
			return lmk_err(LMK_EINVAL, "mixer: the prefix '%.64s...' is too long",
				       prefix);
		int idx = lmk_params_add(p, name, d[i].ndim, d[i].shape);
		if (idx < 0)
			return idx;
		m->idx[i] = idx;
		m->role[i] = d[i].role;
	}
	m->np = n;
	return 0;
}

int lmk_mixer_bind(lmk_mixer *m, lmk_params *p)
{
	if (!p->data)
		return lmk_err(LMK_EINVAL, "mixer: bind before lmk_params_alloc");
	for (int i = 0; i < m->np; i++) {
		if (m->idx[i] >= p->nt)
			return lmk_err(LMK_EINVAL, "mixer: parameter %d not in this set", m->idx[i]);
		m->w[i] = &p->t[m->idx[i]];
	}
	return 0;
}

/* The layer's tensor of role r, or NULL. */
static lmk_tensor *P(const lmk_mixer *m, int r)
{
	for (int i = 0; i < m->np; i++)
		if (m->role[i] == r)
			return m->w[i];
	return NULL;
}

int lmk_mixer_init_weights(lmk_mixer *m, uint64_t seed)
{
	pdesc d[LMK_MIXER_MAXP];
	int n = describe(&m->cfg, d);
	if (n != m->np)
		return lmk_err(LMK_EINVAL, "mixer: init of a layer that was not registered");
	for (int i = 0; i < n; i++) {
		if (!m->w[i])
			return lmk_err(LMK_EINVAL, "mixer: init before lmk_mixer_bind");
		if (m->w[i]->dev != LMK_DEV_CPU)
			return lmk_err(LMK_EINVAL, "mixer: init after lmk_params_to_device: initialise "
						   "in host memory first");
	}
	lmk_rng r;
	lmk_rng_init(&r, seed);
	for (int i = 0; i < n; i++) {
		float *x = m->w[i]->data;
		int64_t cnt = m->w[i]->n;
		float bound = 1.0f / sqrtf((float)m->cfg.conv);
		for (int64_t j = 0; j < cnt; j++) {
			switch (d[i].init) {
			case I_LINEAR:
				x[j] = m->cfg.init_std * lmk_rng_normal(&r);
				break;
			case I_CONV:
				x[j] = bound * (2.0f * lmk_rng_uniform(&r) - 1.0f);
				break;
			case I_ZERO:
				x[j] = 0.0f;
				break;
			case I_ONES:
				x[j] = 1.0f;
				break;
			case I_ALOG_MAMBA:
				x[j] = logf(1.0f + 15.0f * lmk_rng_uniform(&r));
				break;
			case I_ALOG_GDN: {
				/* log U(0,16]: 0 itself would give -inf */
				float u = 1.0f - lmk_rng_uniform(&r);
				x[j] = logf(16.0f * u);
				break;
			}
			default: {
				/* dt log-uniform in [0.001, 0.1], floored, then the
				 * inverse of softplus: dt + log(-expm1(-dt)) */
				double lo = log(0.001), hi = log(0.1);
				double dt = exp(lo + (hi - lo) * lmk_rng_uniform(&r));
				if (dt < 1e-4)
					dt = 1e-4;
				x[j] = (float)(dt + log(-expm1(-dt)));
				break;
			}
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------ forwards */

static lmk_tensor *shape3(lmk_ctx *c, lmk_tensor *x, int64_t a, int64_t b, int64_t d)
{
	return lmk_reshape(c, x, 3, (int64_t[]){a, b, d});
}

static lmk_tensor *shape4(lmk_ctx *c, lmk_tensor *x, int64_t a, int64_t b, int64_t d, int64_t e)
{
	return lmk_reshape(c, x, 4, (int64_t[]){a, b, d, e});
}

/* -exp(A_log): the per-head decay rates, negative. */
static lmk_tensor *neg_exp(lmk_ctx *c, lmk_tensor *a_log)
{
	return lmk_affine(c, lmk_exp(c, a_log), -1.0f, 0.0f);
}

/* softplus(L * dl): the per-level weights of the log-linear mixers. */
static lmk_tensor *lambda(lmk_ctx *c, lmk_tensor *dl /*(B,T,H,NL)*/, lmk_tensor *L /*(H,NL)*/)
{
	return lmk_softplus(c, lmk_mul(c, dl, L));
}

/* ------------------------------------------------------------ decoding */

/* Device-agnostic copies and buffers for the decoding state. */
static int dcopy(lmk_ctx *c, void *dst, const void *src, size_t bytes)
{
	if (c->dev == LMK_DEV_CPU) {
		memcpy(dst, src, bytes);
		return 0;
	}
#if LMK_CUDA
	return lmk_cuda_copy(c->backend, dst, src, bytes);
#else
	return lmk_err(LMK_EUNSUP, "mixer: cuda in a cpu-only build");
#endif
}

/* A short convolution's input for one new token: the last W-1 inputs of
 * each row are kept in conv[slot] (B, W-1, ch), zero at the start, so that
 * the window (B, W, ch) = (kept, u) through lmk_conv1d_causal gives, in
 * its last position, the parallel convolution's output at this token. */
static lmk_tensor *conv_step(lmk_ctx *c, lmk_mixer_state *st, int slot, lmk_tensor *u,
			     lmk_tensor *w, lmk_tensor *b)
{
	if (!u)
		return NULL;
	const int64_t B = u->shape[0], ch = u->shape[2], W = st->conv_w;
	if (u->ndim != 3 || u->shape[1] != 1 || ch != st->conv_ch[slot] || B != st->B) {
		lmk_err(LMK_EINVAL, "mixer step: conv input %s: expected (%lld,1,%lld)", LMK_SHP(u),
			(long long)st->B, (long long)st->conv_ch[slot]);
		return NULL;
	}
	const size_t es = lmk_dtype_size(u->dtype), row = (size_t)ch * es;
	lmk_tensor *win = lmk_tensor_new(c, u->dtype, 3, (int64_t[]){B, W, ch}, 0);
	lmk_tensor *out = lmk_tensor_new(c, u->dtype, 3, (int64_t[]){B, 1, ch}, 0);
	if (!win || !out)
		return NULL;
	char *keep = st->conv[slot];
	for (int64_t r = 0; r < B; r++) {
		char *wr = (char *)win->data + (size_t)(r * W) * row;
		if (dcopy(c, wr, keep + (size_t)(r * (W - 1)) * row, (size_t)(W - 1) * row) < 0 ||
		    dcopy(c, wr + (size_t)(W - 1) * row, (char *)u->data + (size_t)r * row, row) < 0)
			return NULL;
	}
	lmk_tensor *y = lmk_conv1d_causal(c, win, w, b, 1);
	if (!y)
		return NULL;
	for (int64_t r = 0; r < B; r++) {
		const char *wr = (const char *)win->data + (size_t)(r * W) * row;
		if (dcopy(c, (char *)out->data + (size_t)r * row,
			  (const char *)y->data + (size_t)(r * W + W - 1) * row, row) < 0 ||
		    dcopy(c, keep + (size_t)(r * (W - 1)) * row, wr + row, (size_t)(W - 1) * row) < 0)
			return NULL;
	}
	return out;
}

/* A conv of the forward: the whole sequence, or one token with a state. */
static lmk_tensor *conv(lmk_ctx *c, lmk_mixer_state *st, int slot, lmk_tensor *u, lmk_tensor *w,
			lmk_tensor *b)
{
	return st ? conv_step(c, st, slot, u, w, b) : lmk_conv1d_causal(c, u, w, b, 1);
}

static lmk_tensor *fwd_mamba2(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x,
			      int64_t B, int64_t T)
{
	const lmk_mixer_config *g = &m->cfg;
	int64_t H = g->heads, Pd = g->head_dim, di = H * Pd, G = g->groups, N = g->state;
	int64_t GN = G * N, cd = di + 2 * GN, NL = g->levels;
	lmk_tensor *zx = lmk_linear(c, x, P(m, R_IN_PROJ), NULL);
	lmk_tensor *z = lmk_slice(c, zx, 0, di);
	lmk_tensor *xbc = conv(c, st, 0, lmk_slice(c, zx, di, cd), P(m, R_CONV_W), P(m, R_CONV_B));
	lmk_tensor *dt = lmk_softplus(c, lmk_add(c, lmk_slice(c, zx, di + cd, H), P(m, R_DT_BIAS)));
	lmk_tensor *xs = shape4(c, lmk_slice(c, xbc, 0, di), B, T, H, Pd);
	lmk_tensor *kB = shape4(c, lmk_slice(c, xbc, di, GN), B, T, G, N);
	lmk_tensor *qC = shape4(c, lmk_slice(c, xbc, di + GN, GN), B, T, G, N);
	lmk_tensor *loga = lmk_mul(c, dt, neg_exp(c, P(m, R_A_LOG)));
	lmk_tensor *lam = NULL;
	if (is_ll(g->kind)) {
		lmk_tensor *dl = shape4(c, lmk_slice(c, zx, di + cd + H, H * NL), B, T, H, NL);
		if (!(lam = lambda(c, dl, P(m, R_L))))
			return NULL;
	}
	if (!zx || !z || !xs || !kB || !qC || !loga)
		return NULL;
	lmk_ssd_opts so = {.chunk = g->chunk, .algo = LMK_SSD_AUTO, .scale = 1.0f};
	lmk_tensor *xdt = lmk_mul_rows(c, xs, dt);
	lmk_tensor *y = st ? lmk_ssd_step(c, &st->ssd, qC, kB, xdt, loga, lam, &so)
			   : lmk_ssd(c, qC, kB, xdt, loga, lam, &so);
	y = shape3(c, lmk_add(c, y, lmk_mul_rows(c, xs, P(m, R_D))), B, T, di);
	y = lmk_rmsnorm(c, lmk_mul(c, y, lmk_silu(c, z)), P(m, R_NORM), g->norm_eps);
	return lmk_linear(c, y, P(m, R_OUT_PROJ), NULL);
}

/* q, k or v: projection, short conv, SiLU, as heads. */
static lmk_tensor *proj_conv(lmk_ctx *c, lmk_mixer_state *st, int slot, lmk_tensor *x,
			     lmk_tensor *w, lmk_tensor *cw, int64_t B, int64_t T, int64_t H,
			     int64_t D)
{
	return shape4(c, conv(c, st, slot, lmk_linear(c, x, w, NULL), cw, NULL), B, T, H, D);
}

static lmk_tensor *fwd_gdn(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x,
			   int64_t B, int64_t T)
{
	const lmk_mixer_config *g = &m->cfg;
	int64_t H = g->heads, Dk = g->head_dim, Dv = g->head_dim_v, NL = g->levels;
	lmk_tensor *q = lmk_l2norm(c, proj_conv(c, st, 0, x, P(m, R_Q), P(m, R_QCONV), B, T, H, Dk),
				   1e-6f);
	lmk_tensor *k = lmk_l2norm(c, proj_conv(c, st, 1, x, P(m, R_K), P(m, R_KCONV), B, T, H, Dk),
				   1e-6f);
	lmk_tensor *v = proj_conv(c, st, 2, x, P(m, R_V), P(m, R_VCONV), B, T, H, Dv);
	lmk_tensor *beta = lmk_sigmoid(c, lmk_linear(c, x, P(m, R_B_PROJ), NULL));
	if (g->neg_eig)
		beta = lmk_affine(c, beta, 2.0f, 0.0f);
	lmk_tensor *a = lmk_add(c, lmk_linear(c, x, P(m, R_A_PROJ), NULL), P(m, R_DT_BIAS));
	lmk_tensor *loga = lmk_mul(c, lmk_softplus(c, a), neg_exp(c, P(m, R_A_LOG)));
	lmk_tensor *lam = NULL;
	if (is_ll(g->kind)) {
		lmk_tensor *dl = shape4(c, lmk_linear(c, x, P(m, R_DL), NULL), B, T, H, NL);
		if (!(lam = lambda(c, dl, P(m, R_L))))
			return NULL;
	}
	if (!q || !k || !v || !beta || !loga)
		return NULL;
	lmk_gdn_opts go = {.chunk = g->chunk, .algo = LMK_GDN_AUTO, .scale = 0.0f};
	lmk_tensor *o = st ? lmk_gdn_step(c, &st->gdn, q, k, v, loga, beta, lam, go.scale)
			   : lmk_gdn(c, q, k, v, loga, beta, lam, &go);
	lmk_tensor *gate = shape4(c, lmk_linear(c, x, P(m, R_G_PROJ), NULL), B, T, H, Dv);
	o = lmk_mul(c, lmk_rmsnorm(c, o, P(m, R_NORM), g->norm_eps), lmk_silu(c, gate));
	return lmk_linear(c, shape3(c, o, B, T, H * Dv), P(m, R_OUT_PROJ), NULL);
}

static lmk_tensor *fwd_linear(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x,
			      int64_t B, int64_t T)
{
	const lmk_mixer_config *g = &m->cfg;
	int64_t H = g->heads, Dk = g->head_dim, Dv = g->head_dim_v;
	lmk_tensor *q = shape4(c, lmk_linear(c, x, P(m, R_Q), NULL), B, T, H, Dk);
	lmk_tensor *k = shape4(c, lmk_linear(c, x, P(m, R_K), NULL), B, T, H, Dk);
	lmk_tensor *v = shape4(c, lmk_linear(c, x, P(m, R_V), NULL), B, T, H, Dv);
	lmk_tensor *loga = NULL;
	if (g->decay) {
		/* SimpleGLA's gate_logit_normalizer: decays stay near 1 */
		lmk_tensor *gk = lmk_linear(c, x, P(m, R_GK_W), P(m, R_GK_B));
		if (!(loga = lmk_scale(c, lmk_logsigmoid(c, gk), 1.0f / 16)))
			return NULL;
	}
	if (!q || !k || !v)
		return NULL;
	lmk_ssd_opts so = {.chunk = g->chunk, .algo = LMK_SSD_AUTO,
			   .scale = 1.0f / sqrtf((float)Dk)};
	lmk_tensor *o = st ? lmk_ssd_step(c, &st->ssd, q, k, v, loga, NULL, &so)
			   : lmk_ssd(c, q, k, v, loga, NULL, &so);
	o = lmk_rmsnorm(c, o, P(m, R_NORM), g->norm_eps);
	return lmk_linear(c, shape3(c, o, B, T, H * Dv), P(m, R_OUT_PROJ), NULL);
}

#ifdef HAVE_PATH
static lmk_tensor *fwd_path(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x,
			    int64_t B, int64_t T)
{
	const lmk_mixer_config *g = &m->cfg;
	int64_t H = g->heads, K = g->groups, D = g->head_dim;
	lmk_tensor *q = shape4(c, lmk_linear(c, x, P(m, R_Q), NULL), B, T, H, D);
	lmk_tensor *k = shape4(c, lmk_linear(c, x, P(m, R_K), NULL), B, T, K, D);
	lmk_tensor *v = shape4(c, lmk_linear(c, x, P(m, R_V), NULL), B, T, K, D);
	lmk_tensor *wl = K == H ? lmk_linear(c, lmk_linear(c, x, P(m, R_W0), NULL), P(m, R_W1), NULL)
				: lmk_linear(c, x, P(m, R_W), NULL);
	lmk_tensor *w = lmk_l2norm(c, shape4(c, conv(c, st, 0, wl, P(m, R_WCONV), NULL), B, T, K, D),
				   1e-6f);
	lmk_tensor *beta = lmk_affine(c, lmk_sigmoid(c, lmk_linear(c, x, P(m, R_BT_W),
								   P(m, R_BT_B))),
				      2.0f, 0.0f);
	lmk_tensor *logf = NULL;
	if (g->kind == LMK_MIXER_PATH_FOX &&
	    !(logf = lmk_logsigmoid(c, lmk_linear(c, x, P(m, R_F_W), P(m, R_F_B)))))
		return NULL;
	if (!q || !k || !v || !w || !beta)
		return NULL;
	lmk_path_opts po = {.block = g->chunk, .algo = LMK_PATH_AUTO};
	const float scale = 1.0f / sqrtf((float)D);
	lmk_tensor *o = st ? lmk_path_decode(c, &st->path, q, k, v, w, beta, logf, scale)
			   : lmk_path_attention(c, q, k, v, w, beta, logf, scale, &po);
	return lmk_linear(c, shape3(c, o, B, T, H * D), P(m, R_OUT_PROJ), NULL);
}
#endif

/* The forward (st NULL) or one decoding step (st, T = 1). */
static lmk_tensor *run(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x)
{
	if (!x)
		return NULL;
	for (int i = 0; i < m->np; i++)
		if (!m->w[i]) {
			lmk_err(LMK_EINVAL, "mixer: forward before lmk_mixer_bind");
			return NULL;
		}
	if (m->np == 0) {
		lmk_err(LMK_EINVAL, "mixer: forward of a layer that was not registered");
		return NULL;
	}
	const lmk_mixer_config *g = &m->cfg;
	if (x->ndim != 3 || x->shape[2] != g->hidden || (st && x->shape[1] != 1)) {
		lmk_err(LMK_EINVAL, "mixer: %s: x %s: expected (B,%s,%lld)", kind_names[g->kind],
			LMK_SHP(x), st ? "1" : "T", (long long)g->hidden);
		return NULL;
	}
	int64_t B = x->shape[0], T = x->shape[1];
	if (st && (st->kind != g->kind || st->B != B || st->dev != c->dev)) {
		lmk_err(LMK_EINVAL, "mixer step: a state made for another layer, batch or device");
		return NULL;
	}
	if (!st && is_ll(g->kind) && lmk_fenwick_levels(T) > g->levels) {
		lmk_err(LMK_EINVAL, "mixer: %s: %lld tokens need %d levels, the layer has %lld",
			kind_names[g->kind], (long long)T, lmk_fenwick_levels(T),
			(long long)g->levels);
		return NULL;
	}
	if (is_mamba(g->kind))
		return fwd_mamba2(c, m, st, x, B, T);
	if (is_gdn(g->kind))
		return fwd_gdn(c, m, st, x, B, T);
#ifdef HAVE_PATH
	if (is_path(g->kind))
		return fwd_path(c, m, st, x, B, T);
#else
	if (is_path(g->kind)) {
		lmk_err(LMK_EUNSUP, "mixer: %s: this build has no PaTH attention", kind_names[g->kind]);
		return NULL;
	}
#endif
	return fwd_linear(c, m, st, x, B, T);
}

lmk_tensor *lmk_mixer_forward(lmk_ctx *c, const lmk_mixer *m, lmk_tensor *x)
{
	return run(c, m, NULL, x);
}

lmk_tensor *lmk_mixer_step(lmk_ctx *c, const lmk_mixer *m, lmk_mixer_state *st, lmk_tensor *x)
{
	int grad = c->grad_enabled;
	c->grad_enabled = 0;
	lmk_tensor *y = run(c, m, st, x);
	c->grad_enabled = grad;
	if (y)
		st->t++;
	return y;
}

int lmk_mixer_state_init(lmk_mixer_state *st, const lmk_mixer *m, lmk_ctx *c, int64_t B,
			 int64_t max_t)
{
	const lmk_mixer_config *g = &m->cfg;
	const lmk_dtype dt = c->dev == LMK_DEV_CPU ? LMK_F32 : c->dtype;
	int rc = 0;

	memset(st, 0, sizeof *st);
	if (B < 1 || max_t < 1)
		return lmk_err(LMK_EINVAL, "mixer state: B %lld, max_t %lld: expected positive",
			       (long long)B, (long long)max_t);
	if (is_ll(g->kind) && max_t > ((int64_t)1 << (g->levels - 1)))
		return lmk_err(LMK_EINVAL, "mixer state: %s: %lld tokens need %d levels, the layer "
			       "has %lld", kind_names[g->kind], (long long)max_t,
			       lmk_fenwick_levels(max_t), (long long)g->levels);
	st->kind = g->kind;
	st->B = B;
	st->dev = c->dev;
	st->conv_w = g->conv;
	if (is_mamba(g->kind)) {
		st->nconv = 1;
		st->conv_ch[0] = g->heads * g->head_dim + 2 * g->groups * g->state;
		rc = lmk_ssd_state_init(&st->ssd, c, B, g->heads, g->state, g->head_dim,
					is_ll(g->kind) ? g->levels : 0);
	} else if (is_gdn(g->kind)) {
		st->nconv = 3;
		st->conv_ch[0] = st->conv_ch[1] = g->heads * g->head_dim;
		st->conv_ch[2] = g->heads * g->head_dim_v;
		rc = lmk_gdn_state_init(&st->gdn, c, B, g->heads, g->head_dim, g->head_dim_v,
					is_ll(g->kind), max_t);
	} else if (is_path(g->kind)) {
#ifdef HAVE_PATH
		st->nconv = 1;
		st->conv_ch[0] = g->groups * g->head_dim;
		rc = lmk_path_cache_init(&st->path, c, B, max_t, g->heads, g->groups, g->head_dim,
					 g->kind == LMK_MIXER_PATH_FOX);
#else
		return lmk_err(LMK_EUNSUP, "mixer: %s: this build has no PaTH attention",
			       kind_names[g->kind]);
#endif
	} else {
		rc = lmk_ssd_state_init(&st->ssd, c, B, g->heads, g->head_dim, g->head_dim_v, 0);
	}
	st->core = rc == 0;
	for (int i = 0; rc == 0 && i < st->nconv; i++) {
		size_t bytes = (size_t)(B * (g->conv - 1) * st->conv_ch[i]) * lmk_dtype_size(dt);
		if (c->dev == LMK_DEV_CPU) {
			if (!(st->conv[i] = calloc(bytes ? bytes : 1, 1)))
				rc = lmk_err(LMK_ENOMEM, "mixer state: %zu bytes", bytes);
			continue;
		}
#if LMK_CUDA
		if ((rc = lmk_cuda_mem_alloc(&st->conv[i], bytes ? bytes : 1)) == 0)
			rc = lmk_cuda_memset(c->backend, st->conv[i], 0, bytes);
#endif
	}
	if (rc < 0)
		lmk_mixer_state_free(st);
	return rc;
}

void lmk_mixer_state_free(lmk_mixer_state *st)
{
	for (int i = 0; i < st->nconv; i++) {
		if (!st->conv[i])
			continue;
		if (st->dev == LMK_DEV_CPU)
			free(st->conv[i]);
#if LMK_CUDA
		else
			lmk_cuda_mem_free(st->conv[i]);
#endif
	}
	if (st->core) {
		if (is_gdn(st->kind))
			lmk_gdn_state_free(&st->gdn);
#ifdef HAVE_PATH
		else if (is_path(st->kind))
			lmk_path_cache_free(&st->path);
#endif
		else
			lmk_ssd_state_free(&st->ssd);
	}
	memset(st, 0, sizeof *st);
}
