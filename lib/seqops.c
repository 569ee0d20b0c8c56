/* seqops.c: the ops of seqops.h and their CPU kernels. Each op checks its
 * inputs (op.h), makes its output from the arena, runs the CPU kernel below
 * or on CUDA the launcher of cuda/seqops_cuda.h with the same arguments,
 * and records a tape node when its output requires grad. Shape letters as
 * in seqops.h. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "op.h"
#include "seqops.h"

#if LMK_CUDA
#include "../cuda/seqops_cuda.h"
#define CUDA(call) (call)
#define X lmk_op_x
#define GB lmk_op_gb
#else
#define CUDA(call) lmk_err(LMK_EUNSUP, "cuda in a cpu-only build")
#endif

#define SHP LMK_SHP
#define G lmk_op_g
#define F lmk_op_f

/* Below this many multiply-adds a loop stays on one thread: the OpenMP
 * fork costs more than the work. */
#define PAR_MIN 16384
/* Widest convolution: the taps of a channel are summed in a stack array.
 * Short convolutions are 2 to 4 wide. */
#define CONV_MAXW 64
/* Channels whose tap sums one pass over the rows accumulates at once. */
#define CONV_CB 32

static int on_cuda(const lmk_ctx *c) { return c->dev == LMK_DEV_CUDA; }

/* 1/(1+e^-x) through e^-|x|, which never overflows. */
static inline float sigm(float x)
{
	float e = expf(-fabsf(x));
	return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

/* ================================================================ kernels */

/* Pre-activation of (t, c) of one batch row xb (T,C): bias, then the taps
 * in order (the CUDA kernels sum in the same order). */
static inline float conv_pre(const float *xb, const float *w, const float *b, int64_t t,
			     int64_t c, int64_t C, int64_t W)
{
	float a = b ? b[c] : 0.0f;
	for (int64_t i = 0; i < W; i++) {
		int64_t s = t - W + 1 + i;
		if (s >= 0)
			a += w[c * W + i] * xb[s * C + c];
	}
	return a;
}

/* d act / d pre at pre-activation a. */
static inline float conv_dact(float a, int silu)
{
	if (!silu)
		return 1.0f;
	float s = sigm(a);
	return s * (1.0f + a * (1.0f - s));
}

void lmk_cpu_conv1d_causal_forward(float *out, const float *x, const float *w, const float *b,
				   int64_t B, int64_t T, int64_t C, int64_t W, int silu)
{
#pragma omp parallel for schedule(static) if (B * T * C * W > PAR_MIN)
	for (int64_t r = 0; r < B * T; r++) {
		int64_t t = r % T;
		const float *xb = x + (r - t) * C;
		for (int64_t c = 0; c < C; c++) {
			float a = conv_pre(xb, w, b, t, c, C, W);
			out[r * C + c] = silu ? a * sigm(a) : a;
		}
	}
}

void lmk_cpu_conv1d_causal_backward(float *dx, float *dw, float *db, const float *dout,
				    const float *x, const float *w, const float *b, int64_t B,
				    int64_t T, int64_t C, int64_t W, int silu)
{
	if (!dx && !dw && !db)
		return;
	/* One pass over the rows, each thread owning a block of channels: the
	 * gradient of the pre-activation d at (t, c), computed once, goes to
	 * x[t - W+1+i] through tap i (dx, in the order of t) and to the taps
	 * and the bias (summed in the order of the rows). */
	int64_t nblk = (C + CONV_CB - 1) / CONV_CB;
#pragma omp parallel for schedule(static) if (B * T * C * W > PAR_MIN)
	for (int64_t blk = 0; blk < nblk; blk++) {
		int64_t c0 = blk * CONV_CB, c1 = c0 + CONV_CB < C ? c0 + CONV_CB : C;
		float acc[CONV_CB][CONV_MAXW + 1];
		memset(acc, 0, sizeof acc);
		for (int64_t r = 0; r < B * T; r++) {
			int64_t t = r % T;
			const float *xb = x + (r - t) * C;
			float *dxb = dx ? dx + (r - t) * C : NULL;
			for (int64_t c = c0; c < c1; c++) {
				float d = dout[r * C + c];
				if (silu)
					d *= conv_dact(conv_pre(xb, w, b, t, c, C, W), 1);
				float *a = acc[c - c0];
				for (int64_t i = 0; i < W; i++) {
					int64_t s = t - W + 1 + i;
					if (s < 0)
						continue;
					a[i] += d * xb[s * C + c];
					if (dxb)
						dxb[s * C + c] += w[c * W + i] * d;
				}
				a[W] += d;
			}
		}
		for (int64_t c = c0; c < c1; c++) {
			if (dw)
				for (int64_t i = 0; i < W; i++)
					dw[c * W + i] += acc[c - c0][i];
			if (db)
				db[c] += acc[c - c0][W];
		}
	}
}

void lmk_cpu_l2norm_forward(float *out, float *rstd, const float *x, int64_t N, int64_t D,
			    float eps)
{
#pragma omp parallel for schedule(static) if (N * D > PAR_MIN)
	for (int64_t r = 0; r < N; r++) {
		const float *xr = x + r * D;
		float ss = 0.0f;
		for (int64_t d = 0; d < D; d++)
			ss += xr[d] * xr[d];
		float s = 1.0f / sqrtf(ss + eps);
		rstd[r] = s;
		for (int64_t d = 0; d < D; d++)
			out[r * D + d] = xr[d] * s;
	}
}

/* y = x s with s = (|x|² + eps)^-1/2: dx = s dy - s³ x (dy·x). */
void lmk_cpu_l2norm_backward(float *dx, const float *dout, const float *x, const float *rstd,
			     int64_t N, int64_t D)
{
	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (N * D > PAR_MIN)
	for (int64_t r = 0; r < N; r++) {
		const float *xr = x + r * D, *gr = dout + r * D;
		float dot = 0.0f, s = rstd[r];
		for (int64_t d = 0; d < D; d++)
			dot += gr[d] * xr[d];
		float k = s * s * s * dot;
		for (int64_t d = 0; d < D; d++)
			dx[r * D + d] += s * gr[d] - k * xr[d];
	}
}

static inline float unary_f(int kind, float x, float alpha, float beta)
{
	switch (kind) {
	case LMK_UNARY_SIGMOID:
		return sigm(x);
	case LMK_UNARY_SOFTPLUS:
		return x > 20.0f ? x : log1pf(expf(x));
	case LMK_UNARY_LOGSIGMOID:
		return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
	case LMK_UNARY_EXP:
		return expf(x);
	default:
		return alpha * x + beta;
	}
}

/* The derivatives, from the input: sigmoid s(1-s); softplus s(x) (1 above
 * the threshold, as PyTorch); logsigmoid s(-x); exp e^x; affine alpha. */
static inline float unary_d(int kind, float x, float alpha)
{
	switch (kind) {
	case LMK_UNARY_SIGMOID: {
		float s = sigm(x);
		return s * (1.0f - s);
	}
	case LMK_UNARY_SOFTPLUS:
		return x > 20.0f ? 1.0f : sigm(x);
	case LMK_UNARY_LOGSIGMOID:
		return sigm(-x);
	case LMK_UNARY_EXP:
		return expf(x);
	default:
		return alpha;
	}
}

void lmk_cpu_unary_forward(float *out, const float *x, int64_t n, int kind, float alpha,
			   float beta)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = unary_f(kind, x[i], alpha, beta);
}

void lmk_cpu_unary_backward(float *dx, const float *dout, const float *x, int64_t n, int kind,
			    float alpha)
{
	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		dx[i] += dout[i] * unary_d(kind, x[i], alpha);
}

void lmk_cpu_mul_rows_forward(float *out, const float *x, const float *s, int64_t N, int64_t D,
			      int64_t M)
{
#pragma omp parallel for schedule(static) if (N * D > PAR_MIN)
	for (int64_t r = 0; r < N; r++) {
		float k = s[r % M];
		for (int64_t d = 0; d < D; d++)
			out[r * D + d] = x[r * D + d] * k;
	}
}

void lmk_cpu_mul_rows_backward(float *dx, float *ds, const float *dout, const float *x,
			       const float *s, int64_t N, int64_t D, int64_t M)
{
	if (dx) {
#pragma omp parallel for schedule(static) if (N * D > PAR_MIN)
		for (int64_t r = 0; r < N; r++) {
			float k = s[r % M];
			for (int64_t d = 0; d < D; d++)
				dx[r * D + d] += dout[r * D + d] * k;
		}
	}
	if (!ds)
		return;
	/* each m owns its sum, over its rows in order */
#pragma omp parallel for schedule(static) if (N * D > PAR_MIN && M > 1)
	for (int64_t m = 0; m < M; m++) {
		float acc = 0.0f;
		for (int64_t r = m; r < N; r += M) {
			float dot = 0.0f;
			for (int64_t d = 0; d < D; d++)
				dot += dout[r * D + d] * x[r * D + d];
			acc += dot;
		}
		ds[m] += acc;
	}
}

void lmk_cpu_cols_copy(float *out, int64_t ldo, int64_t oo, const float *inp, int64_t ldi,
		       int64_t io, int64_t N, int64_t M)
{
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t r = 0; r < N; r++)
		memcpy(out + r * ldo + oo, inp + r * ldi + io, sizeof(float) * (size_t)M);
}

void lmk_cpu_cols_add(float *out, int64_t ldo, int64_t oo, const float *inp, int64_t ldi,
		      int64_t io, int64_t N, int64_t M)
{
	if (!out)
		return;
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t r = 0; r < N; r++)
		for (int64_t j = 0; j < M; j++)
			out[r * ldo + oo + j] += inp[r * ldi + io + j];
}

/* ==================================================================== ops */

/* -------------------------------------------------------------- conv1d */

static int conv_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
	int64_t B = n->i[0], T = n->i[1], C = n->i[2], W = n->i[3];
	int silu = (int)n->i[4];
	if (on_cuda(c))
		return CUDA(lmk_cuda_conv1d_causal_backward(c->backend, c->dtype, GB(x), GB(w), GB(b),
							    n->out->grad, X(c, x), X(c, w), X(c, b),
							    B, T, C, W, silu));
	lmk_cpu_conv1d_causal_backward(G(x), G(w), G(b), n->out->grad, F(x), F(w), F(b), B, T, C,
				       W, silu);
	return 0;
}

lmk_tensor *lmk_conv1d_causal(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, int silu)
{
	if (!x || !w)
		return NULL;
	lmk_tensor *in[3] = {x, w, b};
	if (lmk_op_check_inputs(c, "conv1d_causal", 3, in, (const char *[]){"x", "w", "b"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32}) < 0)
		return NULL;
	if (x->ndim != 3 || w->ndim != 2 || w->shape[0] != x->shape[2] || w->shape[1] < 1 ||
	    w->shape[1] > CONV_MAXW || (b && (b->ndim != 1 || b->shape[0] != x->shape[2]))) {
		lmk_err(LMK_EINVAL,
			"conv1d_causal: x %s, w %s, b %s: expected x (B,T,C), w (C,W) with 1 <= W "
			"<= %d, b (C) or none",
			SHP(x), SHP(w), b ? SHP(b) : "none", CONV_MAXW);
		return NULL;
	}
	int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2], W = w->shape[1];
	silu = silu != 0;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 3, x->shape, lmk_op_wants_grad(c, 3, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_conv1d_causal_forward(c->backend, c->dtype, out->data, X(c, x),
							X(c, w), X(c, b), B, T, C, W, silu)) < 0)
			return NULL;
	} else {
		lmk_cpu_conv1d_causal_forward(out->data, x->data, w->data, F(b), B, T, C, W, silu);
	}
	int fail;
	lmk_node *n = lmk_op_record(c, "conv1d_causal", out, conv_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = w;
		n->in[2] = b;
		n->i[0] = B;
		n->i[1] = T;
		n->i[2] = C;
		n->i[3] = W;
		n->i[4] = silu;
	}
	return out;
}

/* -------------------------------------------------------------- l2norm */

static int l2norm_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_l2norm_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						      X(c, n->in[0]), n->saved, n->i[0], n->i[1]));
	lmk_cpu_l2norm_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->saved, n->i[0],
				n->i[1]);
	return 0;
}

lmk_tensor *lmk_l2norm(lmk_ctx *c, lmk_tensor *x, float eps)
{
	if (!x)
		return NULL;
	if (lmk_op_check_inputs(c, "l2norm", 1, &x, (const char *[]){"x"},
				(lmk_dtype[]){LMK_F32}) < 0)
		return NULL;
	if (x->ndim < 1) {
		lmk_err(LMK_EINVAL, "l2norm: x %s: expected at least 1 dimension", SHP(x));
		return NULL;
	}
	if (!(eps >= 0) || isinf(eps)) {
		lmk_err(LMK_EINVAL, "l2norm: expected eps >= 0, found %g", (double)eps);
		return NULL;
	}
	int64_t D = x->shape[x->ndim - 1], N = lmk_op_lead(x, x->ndim - 1);
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, lmk_op_wants_grad(c, 1, &x));
	float *rstd = lmk_arena_alloc(&c->arena, (size_t)(N ? N : 1) * sizeof(float));
	if (!out || !rstd)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_l2norm_forward(c->backend, c->dtype, out->data, rstd, X(c, x), N, D,
						 eps)) < 0)
			return NULL;
	} else {
		lmk_cpu_l2norm_forward(out->data, rstd, x->data, N, D, eps);
	}
	int fail;
	lmk_node *n = lmk_op_record(c, "l2norm", out, l2norm_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->saved = rstd;
		n->i[0] = N;
		n->i[1] = D;
	}
	return out;
}

/* --------------------------------------------------------- elementwise */

static int unary_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_unary_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						     X(c, n->in[0]), n->i[0], (int)n->i[1],
						     n->f[0]));
	lmk_cpu_unary_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->i[0], (int)n->i[1],
			       n->f[0]);
	return 0;
}

static lmk_tensor *unary(lmk_ctx *c, const char *op, lmk_tensor *x, int kind, float alpha,
			 float beta)
{
	if (!x)
		return NULL;
	if (lmk_op_check_inputs(c, op, 1, &x, (const char *[]){"x"}, (lmk_dtype[]){LMK_F32}) < 0)
		return NULL;
	if (kind == LMK_UNARY_AFFINE && (!isfinite(alpha) || !isfinite(beta))) {
		lmk_err(LMK_ENUM, "%s: expected finite alpha and beta, found %g and %g", op,
			(double)alpha, (double)beta);
		return NULL;
	}
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, lmk_op_wants_grad(c, 1, &x));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_unary_forward(c->backend, c->dtype, out->data, X(c, x), x->n, kind,
						alpha, beta)) < 0)
			return NULL;
	} else {
		lmk_cpu_unary_forward(out->data, x->data, x->n, kind, alpha, beta);
	}
	int fail;
	lmk_node *n = lmk_op_record(c, op, out, unary_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->i[0] = x->n;
		n->i[1] = kind;
		n->f[0] = alpha;
	}
	return out;
}

lmk_tensor *lmk_sigmoid(lmk_ctx *c, lmk_tensor *x)
{
	return unary(c, "sigmoid", x, LMK_UNARY_SIGMOID, 0, 0);
}

lmk_tensor *lmk_softplus(lmk_ctx *c, lmk_tensor *x)
{
	return unary(c, "softplus", x, LMK_UNARY_SOFTPLUS, 0, 0);
}

lmk_tensor *lmk_logsigmoid(lmk_ctx *c, lmk_tensor *x)
{
	return unary(c, "logsigmoid", x, LMK_UNARY_LOGSIGMOID, 0, 0);
}

lmk_tensor *lmk_exp(lmk_ctx *c, lmk_tensor *x)
{
	return unary(c, "exp", x, LMK_UNARY_EXP, 0, 0);
}

lmk_tensor *lmk_affine(lmk_ctx *c, lmk_tensor *x, float alpha, float beta)
{
	return unary(c, "affine", x, LMK_UNARY_AFFINE, alpha, beta);
}

/* ------------------------------------------------------------ mul_rows */

static int mul_rows_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor *x = n->in[0], *s = n->in[1];
	if (on_cuda(c))
		return CUDA(lmk_cuda_mul_rows_backward(c->backend, c->dtype, GB(x), GB(s),
							n->out->grad, X(c, x), X(c, s), n->i[0],
							n->i[1], n->i[2]));
	lmk_cpu_mul_rows_backward(G(x), G(s), n->out->grad, F(x), F(s), n->i[0], n->i[1], n->i[2]);
	return 0;
}

lmk_tensor *lmk_mul_rows(lmk_ctx *c, lmk_tensor *x, lmk_tensor *s)
{
	if (!x || !s)
		return NULL;
	lmk_tensor *in[2] = {x, s};
	if (lmk_op_check_inputs(c, "mul_rows", 2, in, (const char *[]){"x", "s"},
				(lmk_dtype[]){LMK_F32, LMK_F32}) < 0)
		return NULL;
	int ok = x->ndim >= 1 && s->ndim <= x->ndim - 1;
	for (int i = 0; ok && i < s->ndim; i++)
		ok = s->shape[i] == x->shape[x->ndim - 1 - s->ndim + i];
	if (!ok) {
		lmk_err(LMK_EINVAL, "mul_rows: x %s and s %s: expected s's shape the trailing dims "
				    "of x's without its last",
			SHP(x), SHP(s));
		return NULL;
	}
	int64_t D = x->shape[x->ndim - 1], N = lmk_op_lead(x, x->ndim - 1), M = s->n;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, lmk_op_wants_grad(c, 2, in));
	if (!out)
		return NULL;
	if (M == 0 || N == 0) {
		/* nothing to compute, and r mod 0 must not be taken */
	} else if (on_cuda(c)) {
		if (CUDA(lmk_cuda_mul_rows_forward(c->backend, c->dtype, out->data, X(c, x), X(c, s),
						   N, D, M)) < 0)
			return NULL;
	} else {
		lmk_cpu_mul_rows_forward(out->data, x->data, s->data, N, D, M);
	}
	int fail;
	lmk_node *n = lmk_op_record(c, "mul_rows", out, mul_rows_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = s;
		n->i[0] = N;
		n->i[1] = D;
		n->i[2] = M ? M : 1;
	}
	return out;
}

/* ------------------------------------------------------ slice, concat */

/* dst (N,ldo) columns [oo, oo+M) += src (N,ldi) columns [io, io+M). dst
 * may be an input beyond the node's in[] (concat keeps them in saved). */
static int cols_add(lmk_ctx *c, lmk_tensor *dst, int64_t ldo, int64_t oo, const void *src,
		    int64_t ldi, int64_t io, int64_t N, int64_t M)
{
	if (!dst->requires_grad)
		return 0;
	int rc = lmk_grad_zero(c, dst);
	if (rc < 0)
		return rc;
	if (on_cuda(c))
		return CUDA(lmk_cuda_cols_add(c->backend, c->dtype, GB(dst), ldo, oo, src, ldi, io, N,
					      M));
	lmk_cpu_cols_add(dst->grad, ldo, oo, src, ldi, io, N, M);
	return 0;
}

/* The copy of a forward, dst in the compute dtype. */
static int cols_copy(lmk_ctx *c, void *dst, int64_t ldo, int64_t oo, lmk_tensor *src,
		     int64_t ldi, int64_t io, int64_t N, int64_t M)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_cols_copy(c->backend, c->dtype, dst, ldo, oo, X(c, src), ldi, io,
					       N, M));
	lmk_cpu_cols_copy(dst, ldo, oo, src->data, ldi, io, N, M);
	return 0;
}

static int slice_bw(lmk_ctx *c, lmk_node *n)
{
	/* i: N, D, start, len */
	return cols_add(c, n->in[0], n->i[1], n->i[2], n->out->grad, n->i[3], 0, n->i[0],
			n->i[3]);
}

lmk_tensor *lmk_slice(lmk_ctx *c, lmk_tensor *x, int64_t start, int64_t len)
{
	if (!x)
		return NULL;
	if (lmk_op_check_inputs(c, "slice", 1, &x, (const char *[]){"x"},
				(lmk_dtype[]){LMK_F32}) < 0)
		return NULL;
	int64_t D = x->ndim ? x->shape[x->ndim - 1] : 0;
	if (x->ndim < 1 || start < 0 || len < 1 || start > D - len) {
		lmk_err(LMK_EINVAL, "slice: x %s, start %lld, len %lld: expected 0 <= start, 1 <= "
				    "len, start + len <= the last dim",
			SHP(x), (long long)start, (long long)len);
		return NULL;
	}
	int64_t N = lmk_op_lead(x, x->ndim - 1), shape[LMK_MAXDIM];
	memcpy(shape, x->shape, sizeof shape);
	shape[x->ndim - 1] = len;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, shape, lmk_op_wants_grad(c, 1, &x));
	if (!out || cols_copy(c, out->data, len, 0, x, D, start, N, len) < 0)
		return NULL;
	int fail;
	lmk_node *n = lmk_op_record(c, "slice", out, slice_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->i[0] = N;
		n->i[1] = D;
		n->i[2] = start;
		n->i[3] = len;
	}
	return out;
}

static int concat_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor **xs = n->saved;
	int64_t N = n->i[1], Dout = n->i[2], off = 0;
	for (int k = 0; k < (int)n->i[0]; k++) {
		int64_t Dk = xs[k]->shape[xs[k]->ndim - 1];
		int rc = cols_add(c, xs[k], Dk, 0, n->out->grad, Dout, off, N, Dk);
		if (rc < 0)
			return rc;
		off += Dk;
	}
	return 0;
}

lmk_tensor *lmk_concat(lmk_ctx *c, int n, lmk_tensor **xs)
{
	if (n < 1 || !xs) {
		lmk_err(LMK_EINVAL, "concat: expected at least 1 input, found %d", n);
		return NULL;
	}
	for (int k = 0; k < n; k++)
		if (!xs[k])
			return NULL;
	int64_t Dout = 0;
	for (int k = 0; k < n; k++) {
		char name[24];
		snprintf(name, sizeof name, "xs[%d]", k);
		if (lmk_op_check_inputs(c, "concat", 1, &xs[k], (const char *[]){name},
					(lmk_dtype[]){LMK_F32}) < 0)
			return NULL;
		int ok = xs[k]->ndim >= 1 && xs[k]->ndim == xs[0]->ndim;
		for (int d = 0; ok && d < xs[0]->ndim - 1; d++)
			ok = xs[k]->shape[d] == xs[0]->shape[d];
		if (!ok) {
			lmk_err(LMK_EINVAL, "concat: xs[0] %s and xs[%d] %s: expected the same "
					    "leading dims",
				SHP(xs[0]), k, SHP(xs[k]));
			return NULL;
		}
		Dout += xs[k]->shape[xs[k]->ndim - 1];
	}
	int nd = xs[0]->ndim;
	int64_t N = lmk_op_lead(xs[0], nd - 1), shape[LMK_MAXDIM];
	memcpy(shape, xs[0]->shape, sizeof shape);
	shape[nd - 1] = Dout;
	int want = 0;
	for (int k = 0; k < n; k++)
		want |= lmk_op_wants_grad(c, 1, &xs[k]);
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, nd, shape, want);
	if (!out)
		return NULL;
	int64_t off = 0;
	for (int k = 0; k < n; k++) {
		int64_t Dk = xs[k]->shape[nd - 1];
		if (cols_copy(c, out->data, Dout, off, xs[k], Dk, 0, N, Dk) < 0)
			return NULL;
		off += Dk;
	}
	/* the caller's array may not outlive the call; host memory on any
	 * device, taken before the node so that no node lacks it */
	lmk_tensor **keep = NULL;
	if (out->requires_grad) {
		if (!(keep = lmk_arena_alloc(&c->meta, sizeof *keep * (size_t)n)))
			return NULL;
		memcpy(keep, xs, sizeof *keep * (size_t)n);
	}
	int fail;
	lmk_node *node = lmk_op_record(c, "concat", out, concat_bw, &fail);
	if (fail)
		return NULL;
	if (node) {
		for (int k = 0; k < n && k < LMK_NODE_MAXIN; k++)
			node->in[k] = xs[k];
		node->saved = keep;
		node->i[0] = n;
		node->i[1] = N;
		node->i[2] = Dout;
	}
	return out;
}
