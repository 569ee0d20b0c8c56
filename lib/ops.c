/* ops.c: the tensor-level ops of ops.h. Each checks its inputs, makes its
 * output from the arena, runs the kernel of its context's device (the CPU
 * kernel of ops_cpu.h, or on CUDA the launcher of cuda/ops_cuda.h with the
 * same arguments) and, when the output requires grad, records a tape node
 * whose backward hands the kernel's backward the gradients of the inputs
 * that require grad (NULL for the others). Checks, outputs and nodes are
 * shared by both devices; only the kernel call differs.
 * On CUDA a float input is read in the context's compute dtype: its own
 * data, or for a parameter in a BF16 context its bf16 copy (X below); its
 * gradient carries its own dtype (GB below). A node's `writes` names the
 * inputs whose gradients its kernel can assign rather than add into; the
 * replay then passes the kernel n->assign (tensor.h). Shape letters as in
 * ops.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ops.h"
#include "op.h"
#include "ops_cpu.h"

/* CUDA(call) is the launcher's return code in a CUDA build; in a CPU-only
 * build the call is not even compiled (a CUDA context cannot exist there). */
#if LMK_CUDA
#include "../cuda/ops_cuda.h"
#define CUDA(call) (call)
#if defined(__has_include)
#if __has_include("../cuda/attention.h")
#include "../cuda/attention.h"
#define HAVE_CUDA_ATTENTION 1
#endif
#endif
#else
#define CUDA(call) lmk_err(LMK_EUNSUP, "cuda in a cpu-only build")
#endif

static int on_cuda(const lmk_ctx *c) { return c->dev == LMK_DEV_CUDA; }
#if LMK_CUDA
#define X lmk_op_x
#define GB lmk_op_gb
#endif
#define SHP LMK_SHP
#define G lmk_op_g
#define F lmk_op_f
#define I32 lmk_op_i32
#define check_inputs lmk_op_check_inputs
#define wants_grad lmk_op_wants_grad
#define lead lmk_op_lead
#define same_shape lmk_op_same_shape
#define record lmk_op_record

/* n's input j, or NULL when its gradient took over out's memory and holds
 * its value already (tensor.h: passes): the backward leaves it alone. */
static lmk_tensor *unpassed(const lmk_node *n, int j)
{
	return n->passed >> j & 1 ? NULL : n->in[j];
}

/* ------------------------------------------------------------ embedding */

static int embedding_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_embedding_backward(c->backend, c->dtype, GB(n->in[1]),
							 n->out->grad, I32(n->in[0]), n->i[0],
							 n->i[1], n->i[2]));
	lmk_cpu_embedding_backward(G(n->in[1]), n->out->grad, I32(n->in[0]), n->i[0], n->i[1]);
	return 0;
}

lmk_tensor *lmk_embedding(lmk_ctx *c, lmk_tensor *ids, lmk_tensor *w)
{
	if (!ids || !w)
		return NULL;
	lmk_tensor *in[2] = {ids, w};
	if (check_inputs(c, "embedding", 2, in, (const char *[]){"ids", "w"},
			 (lmk_dtype[]){LMK_I32, LMK_F32}) < 0)
		return NULL;
	if (w->ndim != 2 || ids->ndim >= LMK_MAXDIM) {
		lmk_err(LMK_EINVAL, "embedding: ids %s and w %s: expected w (V,C) and ids of at most %d dims",
			SHP(ids), SHP(w), LMK_MAXDIM - 1);
		return NULL;
	}
	int64_t V = w->shape[0], C = w->shape[1], N = ids->n;
	const int32_t *id = ids->data;
	/* device ids are checked by the kernel, reported at the next sync */
	for (int64_t i = 0; !on_cuda(c) && i < N; i++)
		if (id[i] < 0 || id[i] >= V) {
			lmk_err(LMK_EINVAL, "embedding: id %d at position %lld is outside [0,%lld)",
				id[i], (long long)i, (long long)V);
			return NULL;
		}
	int64_t shape[LMK_MAXDIM];
	memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
	shape[ids->ndim] = C;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, ids->ndim + 1, shape, wants_grad(c, 2, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_embedding_forward(c->backend, c->dtype, out->data, id, X(c, w), N,
						    C, V)) < 0)
			return NULL;
	} else {
		lmk_cpu_embedding_forward(out->data, id, w->data, N, C);
	}
	int fail;
	lmk_node *n = record(c, "embedding", out, embedding_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = ids;
		n->in[1] = w;
		n->i[0] = N;
		n->i[1] = C;
		n->i[2] = V;
	}
	return out;
}

/* --------------------------------------------------------------- linear */

/* The linear op's checks; sets *N, *IC, *OC. @return : 0 or < 0 */
static int check_linear(const char *op, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, int64_t *N,
			int64_t *IC, int64_t *OC)
{
	if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
		return lmk_err(LMK_EINVAL, "%s: x %s and w %s: expected x (...,IC) and w (OC,IC)", op,
			       SHP(x), SHP(w));
	*IC = w->shape[1];
	*OC = w->shape[0];
	*N = lead(x, x->ndim - 1);
	if (b && (b->ndim != 1 || b->shape[0] != *OC))
		return lmk_err(LMK_EINVAL, "%s: w %s and b %s: expected b (%lld)", op, SHP(w), SHP(b),
			       (long long)*OC);
	if (*N > INT32_MAX || *IC > INT32_MAX || *OC > INT32_MAX)
		return lmk_err(LMK_EINVAL, "%s: x %s and w %s: dimensions beyond BLAS's int", op,
			       SHP(x), SHP(w));
	return 0;
}

static int linear_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_linear_backward(c->backend, c->dtype, GB(n->in[0]), GB(n->in[1]),
						      GB(n->in[2]), n->out->grad, X(c, n->in[0]),
						      X(c, n->in[1]), n->i[0], n->i[1], n->i[2],
						      n->assign));
	lmk_cpu_linear_backward(G(n->in[0]), G(n->in[1]), G(n->in[2]), n->out->grad, F(n->in[0]),
				F(n->in[1]), n->i[0], n->i[1], n->i[2], n->assign);
	return 0;
}

lmk_tensor *lmk_linear(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b)
{
	if (!x || !w)
		return NULL;
	lmk_tensor *in[3] = {x, w, b};
	int64_t N, IC, OC;
	if (check_inputs(c, "linear", 3, in, (const char *[]){"x", "w", "b"},
			 (lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32}) < 0 ||
	    check_linear("linear", x, w, b, &N, &IC, &OC) < 0)
		return NULL;
	int64_t shape[LMK_MAXDIM];
	memcpy(shape, x->shape, sizeof shape);
	shape[x->ndim - 1] = OC;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, shape, wants_grad(c, 3, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_linear_forward(c->backend, c->dtype, out->data, X(c, x), X(c, w),
						 X(c, b), N, IC, OC)) < 0)
			return NULL;
	} else {
		lmk_cpu_linear_forward(out->data, x->data, w->data, F(b), N, IC, OC);
	}
	int fail;
	lmk_node *n = record(c, "linear", out, linear_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = w;
		n->in[2] = b;
		n->i[0] = N;
		n->i[1] = IC;
		n->i[2] = OC;
		/* dx and dw by beta = 0 (nothing to write when N or OC is 0) */
		n->writes = N && OC ? 3 : 0;
	}
	return out;
}

/* in[0..3] = x, w, b, r. The residual's gradient is dout: passed on (no
 * copy) or, when the replay cannot, added or assigned. */
static int linear_add_bw(lmk_ctx *c, lmk_node *n)
{
	int rc = linear_bw(c, n);
	lmk_tensor *r = unpassed(n, 3);
	if (rc < 0 || !r || !r->requires_grad)
		return rc;
	int64_t m = n->i[0] * n->i[2];
	if (on_cuda(c))
		return CUDA(lmk_cuda_add_backward(c->backend, c->dtype, GB(r), GB(NULL), n->out->grad,
						   1, m, n->assign >> 3 & 1));
	lmk_cpu_add_backward(G(r), NULL, n->out->grad, 1, m, n->assign >> 3 & 1);
	return 0;
}

lmk_tensor *lmk_linear_add(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b,
			   lmk_tensor *r)
{
	if (!x || !w || !r)
		return NULL;
	lmk_tensor *in[4] = {x, w, b, r};
	int64_t N, IC, OC;
	if (check_inputs(c, "linear_add", 4, in, (const char *[]){"x", "w", "b", "r"},
			 (lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32}) < 0 ||
	    check_linear("linear_add", x, w, b, &N, &IC, &OC) < 0)
		return NULL;
	int ok = r->ndim == x->ndim && r->shape[r->ndim - 1] == OC;
	for (int i = 0; ok && i < x->ndim - 1; i++)
		ok = r->shape[i] == x->shape[i];
	if (!ok) {
		lmk_err(LMK_EINVAL, "linear_add: x %s, w %s and r %s: expected r (...,%lld) as x's "
			"product", SHP(x), SHP(w), SHP(r), (long long)OC);
		return NULL;
	}
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, r->ndim, r->shape, wants_grad(c, 4, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_linear_add_forward(c->backend, c->dtype, out->data, X(c, x),
						     X(c, w), X(c, b), X(c, r), N, IC, OC)) < 0)
			return NULL;
	} else {
		lmk_cpu_linear_add_forward(out->data, x->data, w->data, F(b), r->data, N, IC, OC);
	}
	int fail;
	lmk_node *n = record(c, "linear_add", out, linear_add_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = w;
		n->in[2] = b;
		n->in[3] = r;
		n->i[0] = N;
		n->i[1] = IC;
		n->i[2] = OC;
		/* dx and dw by beta = 0; dr = dout */
		n->writes = N && OC ? 3 | 8 : 0;
		n->passes = 8;
	}
	return out;
}

/* ----------------------------------------------------------- linear_cat */

int lmk_linear_cat_ok(int n, lmk_tensor *const *w)
{
	if (n < 1 || n > LMK_NODE_MAXIN - 1)
		return 0;
	for (int j = 0; j < n; j++) {
		const lmk_tensor *a = j ? w[j - 1] : NULL, *b = w[j];
		if (!b || b->ndim != 2 || b->base || b->shape[1] != w[0]->shape[1] ||
		    b->dtype != w[0]->dtype || b->gdtype != w[0]->gdtype || b->dev != w[0]->dev ||
		    b->requires_grad != w[0]->requires_grad || !b->grad != !w[0]->grad ||
		    !b->lp != !w[0]->lp)
			return 0;
		if (!a)
			continue;
		/* each block starts where the one before ends */
		if ((const char *)b->data !=
			    (const char *)a->data + (size_t)a->n * lmk_dtype_size(a->dtype) ||
		    (b->grad && (const char *)b->grad != (const char *)a->grad +
							       (size_t)a->n * lmk_dtype_size(a->gdtype)) ||
		    (b->lp && (const char *)b->lp != (const char *)a->lp + (size_t)a->n * 2))
			return 0;
	}
	return 1;
}

/* in[0] = x, in[1..nw] = the weights, read as one (OC,IC) matrix at in[1]. */
static int linear_cat_bw(lmk_ctx *c, lmk_node *n)
{
	int nw = (int)n->i[3], wbits = ((1 << nw) - 1) << 1, set = n->assign & wbits, rc;
	/* One product writes the weights' gradients, by beta 0 when the tape
	 * left all of them unwritten; when it left only some, those are
	 * zeroed first and the product adds into all. */
	if (set && set != wbits)
		for (int j = 1; j <= nw; j++)
			if (set >> j & 1) {
				n->in[j]->gunwritten = 1;
				if ((rc = lmk_grad_zero(c, n->in[j])) < 0)
					return rc;
			}
	int assign = (n->assign & 1) | (set && set == wbits ? 2 : 0);
	if (on_cuda(c))
		return CUDA(lmk_cuda_linear_backward(c->backend, c->dtype, GB(n->in[0]), GB(n->in[1]),
						      GB(NULL), n->out->grad, X(c, n->in[0]),
						      X(c, n->in[1]), n->i[0], n->i[1], n->i[2],
						      assign));
	lmk_cpu_linear_backward(G(n->in[0]), G(n->in[1]), NULL, n->out->grad, F(n->in[0]),
				F(n->in[1]), n->i[0], n->i[1], n->i[2], assign);
	return 0;
}

lmk_tensor *lmk_linear_cat(lmk_ctx *c, lmk_tensor *x, int nw, lmk_tensor *const *w)
{
	if (!x || nw < 1 || nw > LMK_NODE_MAXIN - 1) {
		if (x)
			lmk_err(LMK_EINVAL, "linear_cat: %d weights: expected 1 to %d", nw,
				LMK_NODE_MAXIN - 1);
		return NULL;
	}
	lmk_tensor *in[LMK_NODE_MAXIN] = {x};
	const char *names[LMK_NODE_MAXIN] = {"x"};
	lmk_dtype dts[LMK_NODE_MAXIN] = {LMK_F32};
	for (int j = 0; j < nw; j++) {
		if (!w[j])
			return NULL;
		in[1 + j] = w[j];
		names[1 + j] = "w";
		dts[1 + j] = LMK_F32;
	}
	if (check_inputs(c, "linear_cat", 1 + nw, in, names, dts) < 0)
		return NULL;
	if (!lmk_linear_cat_ok(nw, w)) {
		lmk_err(LMK_EINVAL, "linear_cat: w %s and %d more: expected 2-d weights of the same "
			"columns and dtype, one after another in memory", SHP(w[0]), nw - 1);
		return NULL;
	}
	int64_t N, IC, OC = 0;
	for (int j = 0; j < nw; j++)
		OC += w[j]->shape[0];
	/* the stacked weights as one (OC,IC) matrix, for check_linear */
	lmk_tensor ws = *w[0];
	ws.shape[0] = OC;
	ws.n = OC * ws.shape[1];
	if (check_linear("linear_cat", x, &ws, NULL, &N, &IC, &OC) < 0)
		return NULL;
	int64_t shape[LMK_MAXDIM];
	memcpy(shape, x->shape, sizeof shape);
	shape[x->ndim - 1] = OC;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, shape,
					     wants_grad(c, 1 + nw, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_linear_forward(c->backend, c->dtype, out->data, X(c, x),
						 X(c, w[0]), NULL, N, IC, OC)) < 0)
			return NULL;
	} else {
		lmk_cpu_linear_forward(out->data, x->data, w[0]->data, NULL, N, IC, OC);
	}
	int fail;
	lmk_node *n = record(c, "linear_cat", out, linear_cat_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		for (int j = 0; j <= nw; j++)
			n->in[j] = in[j];
		n->i[0] = N;
		n->i[1] = IC;
		n->i[2] = OC;
		n->i[3] = nw;
		/* dx and the weights' gradients by beta = 0 */
		n->writes = N && OC ? (1 << (1 + nw)) - 1 : 0;
	}
	return out;
}

/* ---------------------------------------------------------------- norms */

/* x (...,C) with w and b (C) or NULL. */
static int check_norm(const char *op, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, float eps)
{
	if (x->ndim < 1)
		return lmk_err(LMK_EINVAL, "%s: x %s: expected at least 1 dimension", op, SHP(x));
	int64_t C = x->shape[x->ndim - 1];
	if (w && (w->ndim != 1 || w->shape[0] != C))
		return lmk_err(LMK_EINVAL, "%s: x %s and w %s: expected w (%lld)", op, SHP(x),
			       SHP(w), (long long)C);
	if (b && (b->ndim != 1 || b->shape[0] != C))
		return lmk_err(LMK_EINVAL, "%s: x %s and b %s: expected b (%lld)", op, SHP(x),
			       SHP(b), (long long)C);
	if (!(eps >= 0) || isinf(eps))
		return lmk_err(LMK_EINVAL, "%s: expected eps >= 0, found %g", op, (double)eps);
	return 0;
}

static int rmsnorm_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_rmsnorm_backward(c->backend, c->dtype, GB(n->in[0]), GB(n->in[1]),
						       n->out->grad, X(c, n->in[0]), X(c, n->in[1]),
						       n->saved, n->i[0], n->i[1], n->assign));
	lmk_cpu_rmsnorm_backward(G(n->in[0]), G(n->in[1]), n->out->grad, F(n->in[0]),
				 F(n->in[1]), n->saved, n->i[0], n->i[1], n->assign);
	return 0;
}

lmk_tensor *lmk_rmsnorm(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, float eps)
{
	if (!x)
		return NULL;
	lmk_tensor *in[2] = {x, w};
	if (check_inputs(c, "rmsnorm", 2, in, (const char *[]){"x", "w"},
			 (lmk_dtype[]){LMK_F32, LMK_F32}) < 0 ||
	    check_norm("rmsnorm", x, w, NULL, eps) < 0)
		return NULL;
	int64_t C = x->shape[x->ndim - 1], N = lead(x, x->ndim - 1);
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, wants_grad(c, 2, in));
	float *rstd = lmk_arena_alloc(&c->arena, (size_t)N * sizeof(float));
	if (!out || !rstd)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_rmsnorm_forward(c->backend, c->dtype, out->data, rstd, X(c, x),
						  X(c, w), N, C, eps)) < 0)
			return NULL;
	} else {
		lmk_cpu_rmsnorm_forward(out->data, rstd, x->data, F(w), N, C, eps);
	}
	int fail;
	lmk_node *n = record(c, "rmsnorm", out, rmsnorm_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = w;
		n->saved = rstd;
		n->i[0] = N;
		n->i[1] = C;
		n->f[0] = eps;
		/* dx, and dw (nothing to write in it when N is 0) */
		n->writes = N ? 3 : 1;
	}
	return out;
}

static int layernorm_bw(lmk_ctx *c, lmk_node *n)
{
	const float *mean = n->saved, *rstd = mean + n->i[0];
	if (on_cuda(c))
		return CUDA(lmk_cuda_layernorm_backward(c->backend, c->dtype, GB(n->in[0]),
							 GB(n->in[1]), GB(n->in[2]), n->out->grad,
							 X(c, n->in[0]), X(c, n->in[1]), mean, rstd,
							 n->i[0], n->i[1], n->assign));
	lmk_cpu_layernorm_backward(G(n->in[0]), G(n->in[1]), G(n->in[2]), n->out->grad,
				   F(n->in[0]), F(n->in[1]), mean, rstd, n->i[0], n->i[1],
				   n->assign);
	return 0;
}

lmk_tensor *lmk_layernorm(lmk_ctx *c, lmk_tensor *x, lmk_tensor *w, lmk_tensor *b, float eps)
{
	if (!x)
		return NULL;
	lmk_tensor *in[3] = {x, w, b};
	if (check_inputs(c, "layernorm", 3, in, (const char *[]){"x", "w", "b"},
			 (lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32}) < 0 ||
	    check_norm("layernorm", x, w, b, eps) < 0)
		return NULL;
	int64_t C = x->shape[x->ndim - 1], N = lead(x, x->ndim - 1);
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, wants_grad(c, 3, in));
	float *stats = lmk_arena_alloc(&c->arena, 2 * (size_t)N * sizeof(float));
	if (!out || !stats)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_layernorm_forward(c->backend, c->dtype, out->data, stats, stats + N,
						    X(c, x), X(c, w), X(c, b), N, C, eps)) < 0)
			return NULL;
	} else {
		lmk_cpu_layernorm_forward(out->data, stats, stats + N, x->data, F(w), F(b), N, C, eps);
	}
	int fail;
	lmk_node *n = record(c, "layernorm", out, layernorm_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = x;
		n->in[1] = w;
		n->in[2] = b;
		n->saved = stats;
		n->i[0] = N;
		n->i[1] = C;
		n->f[0] = eps;
		n->writes = 1;
	}
	return out;
}

/* ----------------------------------------------------------------- rope */

int lmk_rope_init(lmk_rope *r, int head_dim, float theta, const lmk_rope_scaling *s)
{
	memset(r, 0, sizeof *r);
	if (head_dim <= 0 || head_dim % 2)
		return lmk_err(LMK_EINVAL, "rope: expected a positive even head_dim, found %d",
			       head_dim);
	if (!(theta > 0) || isinf(theta))
		return lmk_err(LMK_EINVAL, "rope: expected theta > 0, found %g", (double)theta);
	int type = s ? s->type : LMK_ROPE_NONE;
	if (type != LMK_ROPE_NONE && type != LMK_ROPE_LINEAR && type != LMK_ROPE_LLAMA3)
		return lmk_err(LMK_EINVAL, "rope: unknown scaling type %d", type);
	if (type != LMK_ROPE_NONE && !(s->factor > 0))
		return lmk_err(LMK_EINVAL, "rope: expected a scaling factor > 0, found %g",
			       (double)s->factor);
	if (type == LMK_ROPE_LLAMA3 &&
	    (!(s->low_freq_factor > 0) || !(s->high_freq_factor > s->low_freq_factor) ||
	     s->original_max_pos <= 0))
		return lmk_err(LMK_EINVAL,
			       "rope: llama3 scaling: expected 0 < low_freq_factor (%g) < "
			       "high_freq_factor (%g) and original_max_pos (%d) > 0",
			       (double)s->low_freq_factor, (double)s->high_freq_factor,
			       s->original_max_pos);
	int half = head_dim / 2;
	r->inv_freq = malloc((size_t)half * sizeof(float));
	if (!r->inv_freq)
		return lmk_err(LMK_ENOMEM, "rope: cannot allocate %d frequencies", half);
	r->head_dim = head_dim;
	r->attn_factor = 1.0f;
	for (int i = 0; i < half; i++) {
		/* as transformers' _compute_default_rope_parameters, in float32 */
		float e = (float)(2 * i) / (float)head_dim;
		float f = 1.0f / powf(theta, e);
		if (type == LMK_ROPE_LINEAR) {
			f /= s->factor;
		} else if (type == LMK_ROPE_LLAMA3) {
			/* _compute_llama3_parameters: long wavelengths are slowed by
			 * factor, short ones kept, the band between interpolated */
			float low_wl = (float)s->original_max_pos / s->low_freq_factor;
			float high_wl = (float)s->original_max_pos / s->high_freq_factor;
			float wl = 2.0f * (float)M_PI / f;
			if (wl > low_wl) {
				f = f / s->factor;
			} else if (!(wl < high_wl)) {
				float smooth = ((float)s->original_max_pos / wl - s->low_freq_factor) /
					       (s->high_freq_factor - s->low_freq_factor);
				f = (1.0f - smooth) * f / s->factor + smooth * f;
			}
		}
		r->inv_freq[i] = f;
	}
	return 0;
}

void lmk_rope_free(lmk_rope *r)
{
	free(r->inv_freq);
	memset(r, 0, sizeof *r);
}

static int rope_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_rope_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						    I32(n->in[1]), n->saved, n->f[0], n->i[0],
						    n->i[1], n->i[2], n->assign));
	lmk_cpu_rope_backward(G(n->in[0]), n->out->grad, I32(n->in[1]), n->saved, n->f[0],
			      n->i[0], n->i[1], n->i[2], n->assign);
	return 0;
}

lmk_tensor *lmk_rope_apply(lmk_ctx *c, lmk_tensor *x, const lmk_rope *r, lmk_tensor *pos)
{
	if (!x || !r || !pos)
		return NULL;
	lmk_tensor *in[2] = {x, pos};
	if (check_inputs(c, "rope", 2, in, (const char *[]){"x", "pos"},
			 (lmk_dtype[]){LMK_F32, LMK_I32}) < 0)
		return NULL;
	if (!r->inv_freq) {
		lmk_err(LMK_EINVAL, "rope: the table is not initialised");
		return NULL;
	}
	if (x->ndim != 4 || x->shape[3] != r->head_dim || pos->ndim != 2 ||
	    pos->shape[0] != x->shape[0] || pos->shape[1] != x->shape[1]) {
		lmk_err(LMK_EINVAL, "rope: x %s and pos %s: expected x (B,T,H,%d) and pos (B,T)",
			SHP(x), SHP(pos), r->head_dim);
		return NULL;
	}
	int64_t N = x->shape[0] * x->shape[1], H = x->shape[2], D = x->shape[3];
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 4, x->shape, wants_grad(c, 1, in));
	if (!out)
		return NULL;
	/* On CUDA the kernels read a device copy of the table (the host one is
	 * the caller's); it also serves the backward, and the next layers of
	 * the step (the tables do not change once made). It is copied from the
	 * one the context keeps, not uploaded, so that a step recorded as a
	 * CUDA graph can replay it. */
	float *dev_freq = NULL;
	if (on_cuda(c)) {
		size_t bytes = (size_t)(D / 2) * sizeof(float);
		if (!c->rope_host || c->rope_n != D / 2 ||
		    memcmp(c->rope_host, r->inv_freq, bytes)) {
			lmk_tensor *ft = lmk_tensor_upload_const(c, LMK_F32, 1, (int64_t[]){D / 2},
								 r->inv_freq);
			float *h = lmk_arena_alloc(&c->meta, bytes);
			if (!ft || !h)
				return NULL;
			memcpy(h, r->inv_freq, bytes);
			c->rope_host = h;
			c->rope_dev = ft->data;
			c->rope_n = D / 2;
		}
		dev_freq = c->rope_dev;
		if (CUDA(lmk_cuda_rope_forward(c->backend, c->dtype, out->data, X(c, x), pos->data,
					       dev_freq, r->attn_factor, N, H, D)) < 0)
			return NULL;
	} else {
		lmk_cpu_rope_forward(out->data, x->data, pos->data, r->inv_freq, r->attn_factor, N, H,
				     D);
	}
	int fail;
	lmk_node *n = record(c, "rope", out, rope_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		/* the caller's table may be gone by the backward */
		float *f = dev_freq;
		if (!f) {
			f = lmk_arena_alloc(&c->arena, (size_t)(D / 2) * sizeof(float));
			if (!f)
				return NULL;
			memcpy(f, r->inv_freq, (size_t)(D / 2) * sizeof(float));
		}
		n->in[0] = x;
		n->in[1] = pos;
		n->saved = f;
		n->i[0] = N;
		n->i[1] = H;
		n->i[2] = D;
		n->f[0] = r->attn_factor;
		n->writes = 1;
	}
	return out;
}

/* ------------------------------------------------------------ attention */

static int attention_bw(lmk_ctx *c, lmk_node *n)
{
	int64_t B = n->i[0], T = n->i[1], H = n->i[2], K = n->i[3], D = n->i[4];
	float *delta = lmk_arena_alloc(&c->arena, (size_t)(B * H * T) * sizeof(float));
	if (!delta)
		return lmk_errcode();
	if (on_cuda(c)) {
#if HAVE_CUDA_ATTENTION
		return lmk_cuda_attention_backward(
			c->backend, c->dtype, GB(n->in[0]).p, GB(n->in[1]).p, GB(n->in[2]).p, delta,
			n->out->grad, X(c, n->in[0]), X(c, n->in[1]), X(c, n->in[2]), n->out->data,
			n->saved, I32(n->in[3]), B, T, H, K, D, n->f[0], (int)n->i[5], n->assign);
#else
		return lmk_err(LMK_EUNSUP, "attention: no cuda kernel in this build");
#endif
	}
	lmk_cpu_attention_backward(G(n->in[0]), G(n->in[1]), G(n->in[2]), delta, n->out->grad,
				   F(n->in[0]), F(n->in[1]), F(n->in[2]), n->out->data, n->saved,
				   I32(n->in[3]), B, T, H, K, D, n->f[0], (int)n->i[5]);
	return 0;
}

lmk_tensor *lmk_attention_ex(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			     lmk_tensor *seg, float scale, int causal)
{
	if (!q || !k || !v)
		return NULL;
	lmk_tensor *in[4] = {q, k, v, seg};
	if (check_inputs(c, "attention", 4, in, (const char *[]){"q", "k", "v", "seg"},
			 (lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_I32}) < 0)
		return NULL;
	if (q->ndim != 4 || k->ndim != 4 || !same_shape(k, v) || k->shape[0] != q->shape[0] ||
	    k->shape[1] != q->shape[1] || k->shape[3] != q->shape[3] || k->shape[2] < 1 ||
	    q->shape[2] % k->shape[2]) {
		lmk_err(LMK_EINVAL,
			"attention: q %s, k %s, v %s: expected q (B,T,H,D), k and v (B,T,K,D), "
			"H a multiple of K",
			SHP(q), SHP(k), SHP(v));
		return NULL;
	}
	int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], K = k->shape[2],
		D = q->shape[3];
	if (seg && (seg->ndim != 2 || seg->shape[0] != B || seg->shape[1] != T)) {
		lmk_err(LMK_EINVAL, "attention: q %s and seg %s: expected seg (%lld,%lld)", SHP(q),
			SHP(seg), (long long)B, (long long)T);
		return NULL;
	}
	if (!isfinite(scale)) {
		lmk_err(LMK_EINVAL, "attention: expected a finite scale, found %g", (double)scale);
		return NULL;
	}
	/* the CUDA kernels take gradients in the compute dtype only */
	for (int i = 0; on_cuda(c) && i < 3; i++)
		if (in[i]->requires_grad && in[i]->gdtype != c->dtype) {
			lmk_err(LMK_EUNSUP, "attention: %s has a %s gradient in a %s context",
				(const char *[]){"q", "k", "v"}[i], lmk_dtype_name(in[i]->gdtype),
				lmk_dtype_name(c->dtype));
			return NULL;
		}
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 4, q->shape, wants_grad(c, 3, in));
	float *lse = lmk_arena_alloc(&c->arena, (size_t)(B * H * T) * sizeof(float));
	if (!out || !lse)
		return NULL;
	if (on_cuda(c)) {
#if HAVE_CUDA_ATTENTION
		if (lmk_cuda_attention_forward(c->backend, c->dtype, out->data, lse, X(c, q), X(c, k),
					       X(c, v), I32(seg), B, T, H, K, D, scale,
					       causal != 0) < 0)
			return NULL;
#else
		lmk_err(LMK_EUNSUP, "attention: no cuda kernel in this build");
		return NULL;
#endif
	} else {
		lmk_cpu_attention_forward(out->data, lse, q->data, k->data, v->data, I32(seg), B, T, H,
					  K, D, scale, causal != 0);
	}
	int fail;
	lmk_node *n = record(c, "attention", out, attention_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = q;
		n->in[1] = k;
		n->in[2] = v;
		n->in[3] = seg;
		n->saved = lse;
		n->i[0] = B;
		n->i[1] = T;
		n->i[2] = H;
		n->i[3] = K;
		n->i[4] = D;
		n->i[5] = causal != 0;
		n->f[0] = scale;
		/* the CUDA backward can assign dq, dk, dv (the CPU one adds) */
		n->writes = on_cuda(c) ? 7 : 0;
	}
	return out;
}

lmk_tensor *lmk_attention(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			  lmk_tensor *seg, float scale)
{
	return lmk_attention_ex(c, q, k, v, seg, scale, 1);
}

/* ---------------------------------------------------------- elementwise */

/* One float input, output of its shape. */
static lmk_tensor *unary(lmk_ctx *c, const char *op, lmk_tensor *x,
			 int (*bw)(lmk_ctx *, lmk_node *), lmk_node **node)
{
	*node = NULL;
	if (!x)
		return NULL;
	if (check_inputs(c, op, 1, &x, (const char *[]){"x"}, (lmk_dtype[]){LMK_F32}) < 0)
		return NULL;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, x->ndim, x->shape, wants_grad(c, 1, &x));
	if (!out)
		return NULL;
	int fail;
	*node = record(c, op, out, bw, &fail);
	if (fail)
		return NULL;
	if (*node) {
		(*node)->in[0] = x;
		(*node)->i[0] = x->n;
		(*node)->writes = 1; /* every unary backward can assign dx */
	}
	return out;
}

static int silu_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_silu_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						    X(c, n->in[0]), n->i[0], n->assign));
	lmk_cpu_silu_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->i[0], n->assign);
	return 0;
}

lmk_tensor *lmk_silu(lmk_ctx *c, lmk_tensor *x)
{
	lmk_node *n;
	lmk_tensor *out = unary(c, "silu", x, silu_bw, &n);
	if (!out)
		return NULL;
	if (on_cuda(c))
		return CUDA(lmk_cuda_silu_forward(c->backend, c->dtype, out->data, X(c, x), x->n)) < 0
			       ? NULL
			       : out;
	lmk_cpu_silu_forward(out->data, x->data, x->n);
	return out;
}

static int gelu_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_gelu_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						    X(c, n->in[0]), n->i[0], (int)n->i[1],
						    n->assign));
	lmk_cpu_gelu_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->i[0], (int)n->i[1],
			      n->assign);
	return 0;
}

lmk_tensor *lmk_gelu(lmk_ctx *c, lmk_tensor *x, int approx)
{
	lmk_node *n;
	lmk_tensor *out = unary(c, "gelu", x, gelu_bw, &n);
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_gelu_forward(c->backend, c->dtype, out->data, X(c, x), x->n,
					       approx != 0)) < 0)
			return NULL;
	} else {
		lmk_cpu_gelu_forward(out->data, x->data, x->n, approx != 0);
	}
	if (n)
		n->i[1] = approx != 0;
	return out;
}

static int scale_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_scale_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						     n->f[0], n->i[0], n->assign));
	lmk_cpu_scale_backward(G(n->in[0]), n->out->grad, n->f[0], n->i[0], n->assign);
	return 0;
}

lmk_tensor *lmk_scale(lmk_ctx *c, lmk_tensor *x, float s)
{
	lmk_node *n;
	lmk_tensor *out = unary(c, "scale", x, scale_bw, &n);
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_scale_forward(c->backend, c->dtype, out->data, X(c, x), s, x->n)) <
		    0)
			return NULL;
	} else {
		lmk_cpu_scale_forward(out->data, x->data, s, x->n);
	}
	if (n)
		n->f[0] = s;
	return out;
}

static int dropout_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_dropout_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						       n->i[0], n->f[0], (uint64_t)n->i[1],
						       (uint64_t)n->i[2], n->assign));
	lmk_cpu_dropout_backward(G(n->in[0]), n->out->grad, n->i[0], n->f[0], (uint64_t)n->i[1],
				 (uint64_t)n->i[2], n->assign);
	return 0;
}

lmk_tensor *lmk_dropout(lmk_ctx *c, lmk_tensor *x, float p)
{
	if (!x)
		return NULL;
	if (!(p >= 0 && p <= 1)) {
		lmk_err(LMK_EINVAL, "dropout: expected 0 <= p <= 1, found %g", (double)p);
		return NULL;
	}
	if (p == 0 || !c->grad_enabled)
		return x;
	lmk_node *n;
	lmk_tensor *out = unary(c, "dropout", x, dropout_bw, &n);
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_dropout_forward(c->backend, c->dtype, out->data, X(c, x), x->n, p,
						  c->seed, c->counter)) < 0)
			return NULL;
	} else {
		lmk_cpu_dropout_forward(out->data, x->data, x->n, p, c->seed, c->counter);
	}
	if (n) {
		n->i[1] = (int64_t)c->seed;
		n->i[2] = (int64_t)c->counter;
		n->f[0] = p;
	}
	c->counter += (uint64_t)x->n;
	return out;
}

/* Two float inputs: same shapes, or (when bcast) b's shape the trailing dims
 * of a's. Sets *N rows of *M = b->n elements. */
static lmk_tensor *binary(lmk_ctx *c, const char *op, lmk_tensor *a, lmk_tensor *b, int bcast,
			  int (*bw)(lmk_ctx *, lmk_node *), lmk_node **node, int64_t *N,
			  int64_t *M)
{
	*node = NULL;
	if (!a || !b)
		return NULL;
	lmk_tensor *in[2] = {a, b};
	if (check_inputs(c, op, 2, in, (const char *[]){"a", "b"},
			 (lmk_dtype[]){LMK_F32, LMK_F32}) < 0)
		return NULL;
	int ok = same_shape(a, b);
	if (!ok && bcast && b->ndim <= a->ndim) {
		ok = 1;
		for (int i = 0; i < b->ndim; i++)
			ok &= b->shape[i] == a->shape[a->ndim - b->ndim + i];
	}
	if (!ok) {
		lmk_err(LMK_EINVAL, "%s: a %s and b %s: expected the same shapes%s", op, SHP(a),
			SHP(b), bcast ? " or b's the trailing dims of a's" : "");
		return NULL;
	}
	*M = b->n;
	*N = b->n ? a->n / b->n : 0;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, a->ndim, a->shape, wants_grad(c, 2, in));
	if (!out)
		return NULL;
	int fail;
	*node = record(c, op, out, bw, &fail);
	if (fail)
		return NULL;
	if (*node) {
		(*node)->in[0] = a;
		(*node)->in[1] = b;
		(*node)->i[0] = *N;
		(*node)->i[1] = *M;
	}
	return out;
}

static int swiglu_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_swiglu_backward(c->backend, c->dtype, GB(n->in[0]), GB(n->in[1]),
						      n->out->grad, X(c, n->in[0]), X(c, n->in[1]),
						      n->i[1], n->assign));
	lmk_cpu_swiglu_backward(G(n->in[0]), G(n->in[1]), n->out->grad, F(n->in[0]), F(n->in[1]),
				n->i[1], n->assign);
	return 0;
}

lmk_tensor *lmk_swiglu(lmk_ctx *c, lmk_tensor *gate, lmk_tensor *up)
{
	lmk_node *n;
	int64_t N, M;
	lmk_tensor *out = binary(c, "swiglu", gate, up, 0, swiglu_bw, &n, &N, &M);
	if (!out)
		return NULL;
	if (n)
		n->writes = 3;
	if (on_cuda(c))
		return CUDA(lmk_cuda_swiglu_forward(c->backend, c->dtype, out->data, X(c, gate),
						    X(c, up), M)) < 0
			       ? NULL
			       : out;
	lmk_cpu_swiglu_forward(out->data, gate->data, up->data, M);
	return out;
}

static int swiglu_cat_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_swiglu_cat_backward(c->backend, c->dtype, GB(n->in[0]),
							  n->out->grad, X(c, n->in[0]), n->i[0],
							  n->i[1], n->assign));
	lmk_cpu_swiglu_cat_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->i[0], n->i[1],
				    n->assign);
	return 0;
}

lmk_tensor *lmk_swiglu_cat(lmk_ctx *c, lmk_tensor *gu)
{
	if (!gu)
		return NULL;
	if (check_inputs(c, "swiglu_cat", 1, &gu, (const char *[]){"gu"},
			 (lmk_dtype[]){LMK_F32}) < 0)
		return NULL;
	if (gu->ndim < 1 || gu->shape[gu->ndim - 1] % 2) {
		lmk_err(LMK_EINVAL, "swiglu_cat: gu %s: expected (...,2F)", SHP(gu));
		return NULL;
	}
	int64_t shape[LMK_MAXDIM];
	memcpy(shape, gu->shape, sizeof shape);
	int64_t half = shape[gu->ndim - 1] / 2, N = lead(gu, gu->ndim - 1);
	shape[gu->ndim - 1] = half;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, gu->ndim, shape, wants_grad(c, 1, &gu));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
		if (CUDA(lmk_cuda_swiglu_cat_forward(c->backend, c->dtype, out->data, X(c, gu), N,
						     half)) < 0)
			return NULL;
	} else {
		lmk_cpu_swiglu_cat_forward(out->data, gu->data, N, half);
	}
	int fail;
	lmk_node *n = record(c, "swiglu_cat", out, swiglu_cat_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = gu;
		n->i[0] = N;
		n->i[1] = half;
		n->writes = 1; /* both halves of dgu */
	}
	return out;
}

static int add_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor *a = unpassed(n, 0), *b = unpassed(n, 1);
	if (on_cuda(c))
		return CUDA(lmk_cuda_add_backward(c->backend, c->dtype, GB(a), GB(b), n->out->grad,
						   n->i[0], n->i[1], n->assign));
	lmk_cpu_add_backward(G(a), G(b), n->out->grad, n->i[0], n->i[1], n->assign);
	return 0;
}

lmk_tensor *lmk_add(lmk_ctx *c, lmk_tensor *a, lmk_tensor *b)
{
	lmk_node *n;
	int64_t N, M;
	lmk_tensor *out = binary(c, "add", a, b, 1, add_bw, &n, &N, &M);
	if (!out)
		return NULL;
	if (n) { /* a broadcast b's gradient is a sum over rows, added */
		n->writes = N == 1 ? 3 : 1;
		n->passes = n->writes; /* da = dout, and db = dout when N is 1 */
	}
	if (on_cuda(c))
		return CUDA(lmk_cuda_add_forward(c->backend, c->dtype, out->data, X(c, a), X(c, b), N,
						 M)) < 0
			       ? NULL
			       : out;
	lmk_cpu_add_forward(out->data, a->data, b->data, N, M);
	return out;
}

static int mul_bw(lmk_ctx *c, lmk_node *n)
{
	if (on_cuda(c))
		return CUDA(lmk_cuda_mul_backward(c->backend, c->dtype, GB(n->in[0]), GB(n->in[1]),
						   n->out->grad, X(c, n->in[0]), X(c, n->in[1]),
						   n->i[0], n->i[1], n->assign));
	lmk_cpu_mul_backward(G(n->in[0]), G(n->in[1]), n->out->grad, F(n->in[0]), F(n->in[1]),
			     n->i[0], n->i[1], n->assign);
	return 0;
}

lmk_tensor *lmk_mul(lmk_ctx *c, lmk_tensor *a, lmk_tensor *b)
{
	lmk_node *n;
	int64_t N, M;
	lmk_tensor *out = binary(c, "mul", a, b, 1, mul_bw, &n, &N, &M);
	if (!out)
		return NULL;
	if (n) /* b's gradient is a sum over rows, added */
		n->writes = 1;
	if (on_cuda(c))
		return CUDA(lmk_cuda_mul_forward(c->backend, c->dtype, out->data, X(c, a), X(c, b), N,
						 M)) < 0
			       ? NULL
			       : out;
	lmk_cpu_mul_forward(out->data, a->data, b->data, N, M);
	return out;
}

/* -------------------------------------------------------- cross-entropy */

#if LMK_CUDA
/* On CUDA the forward saves lse (N), the rows' losses (N) and the count of
 * counted rows (an int64 on the device, since the host does not wait for
 * it) in one block. */
static size_t ce_saved_bytes(int64_t N)
{
	return ((size_t)(2 * N) * sizeof(float) + 7) / 8 * 8 + sizeof(int64_t);
}

static int64_t *ce_count(void *saved, int64_t N)
{
	return (int64_t *)((char *)saved + ((size_t)(2 * N) * sizeof(float) + 7) / 8 * 8);
}
#endif

static int cross_entropy_bw(lmk_ctx *c, lmk_node *n)
{
#if LMK_CUDA
	if (on_cuda(c))
		return lmk_cuda_cross_entropy_backward(c->backend, c->dtype, GB(n->in[0]), n->out->grad,
						       X(c, n->in[0]), n->saved, I32(n->in[1]),
						       n->i[0], n->i[1], (int)n->i[2],
						       ce_count(n->saved, n->i[0]), n->assign,
						       (int)n->i[4]);
#endif
	lmk_cpu_cross_entropy_backward(G(n->in[0]), n->out->grad, F(n->in[0]), n->saved,
				       I32(n->in[1]), n->i[0], n->i[1], (int)n->i[2], n->i[3],
				       n->assign);
	return 0;
}

lmk_tensor *lmk_cross_entropy(lmk_ctx *c, lmk_tensor *logits, lmk_tensor *targets,
			      int ignore, int64_t *count)
{
	if (!logits || !targets)
		return NULL;
	lmk_tensor *in[2] = {logits, targets};
	if (check_inputs(c, "cross_entropy", 2, in, (const char *[]){"logits", "targets"},
			 (lmk_dtype[]){LMK_F32, LMK_I32}) < 0)
		return NULL;
	int ok = logits->ndim >= 2 && targets->ndim == logits->ndim - 1;
	for (int i = 0; ok && i < targets->ndim; i++)
		ok = targets->shape[i] == logits->shape[i];
	if (!ok) {
		lmk_err(LMK_EINVAL,
			"cross_entropy: logits %s and targets %s: expected logits (...,V) and "
			"targets (...)",
			SHP(logits), SHP(targets));
		return NULL;
	}
	int64_t V = logits->shape[logits->ndim - 1], N = targets->n;
	const int32_t *t = targets->data;
	/* device targets are checked by the kernel, reported at the next sync */
	for (int64_t i = 0; !on_cuda(c) && i < N; i++)
		if (t[i] != ignore && (t[i] < 0 || t[i] >= V)) {
			lmk_err(LMK_EINVAL,
				"cross_entropy: target %d at row %lld is outside [0,%lld) and not "
				"the ignore index %d",
				t[i], (long long)i, (long long)V, ignore);
			return NULL;
		}
	/* the loss is float32 in every compute dtype */
	lmk_tensor *out = lmk_tensor_new_out(c, LMK_F32, 0, NULL, wants_grad(c, 1, in));
	float *lse;
	int64_t cnt = -1; /* on CUDA the count stays on the device */
	int pre = 0;      /* on CUDA: the forward wrote the logits' gradient */
#if LMK_CUDA
	if (on_cuda(c)) {
		lse = lmk_arena_alloc(&c->arena, ce_saved_bytes(N));
		if (!out || !lse)
			return NULL;
		int64_t *dcount = ce_count(lse, N);
		/* training: the gradient while the logits are read, into memory
		 * the tape holds unwritten (nothing else writes it until the
		 * replay, which tells the backward whether it still is) */
		void *dl = out->requires_grad && logits->grad && lmk_op_owner(logits)->gunwritten &&
					   logits->gdtype == c->dtype
				   ? logits->grad
				   : NULL;
		pre = lmk_cuda_cross_entropy_forward(c->backend, c->dtype, out->data, lse, dcount,
						     lse + N, X(c, logits), t, N, V, ignore, dl);
		if (pre < 0)
			return NULL;
		/* only a caller who asks for the count waits for it */
		if (count && lmk_tensor_copy_to_host(c, &(lmk_tensor){.data = dcount, .dtype = LMK_I64,
								      .dev = LMK_DEV_CUDA, .n = 1},
						     count) < 0)
			return NULL;
	} else
#endif
	{
		lse = lmk_arena_alloc(&c->arena, (size_t)N * sizeof(float));
		if (!out || !lse)
			return NULL;
		cnt = lmk_cpu_cross_entropy_forward(out->data, lse, logits->data, t, N, V, ignore);
		if (count)
			*count = cnt;
	}
	int fail;
	lmk_node *n = record(c, "cross_entropy", out, cross_entropy_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		n->in[0] = logits;
		n->in[1] = targets;
		n->saved = lse;
		n->i[0] = N;
		n->i[1] = V;
		n->i[2] = ignore;
		n->i[3] = cnt;
		n->i[4] = pre;
		n->writes = 1;
	}
	return out;
}
