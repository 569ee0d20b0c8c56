/* op.c: the shared checks and recording of op implementations (op.h). */
#include <stdio.h>

#include "err.h"
#include "op.h"

/* "(2,3,4)" into buf, for messages. */
const char *lmk_op_shape_str(const lmk_tensor *t, char *buf, size_t size)
{
	size_t o = 0;
	o += (size_t)snprintf(buf + o, size - o, "(");
	for (int i = 0; i < t->ndim && o < size; i++)
		o += (size_t)snprintf(buf + o, size - o, "%s%lld", i ? "," : "",
				      (long long)t->shape[i]);
	if (o < size)
		snprintf(buf + o, size - o, ")");
	return buf;
}


/* Device and dtype of every input. names[i] names ts[i] in messages;
 * NULL entries of ts are optional inputs left out. An entry LMK_F32 of dts
 * means a float input: one in the context's compute dtype (F32 on the
 * CPU), or a float32 parameter with a bf16 copy in a BF16 context. */
int lmk_op_check_inputs(lmk_ctx *c, const char *op, int n, lmk_tensor *const *ts,
			const char *const *names, const lmk_dtype *dts)
{
	/* A CUDA context that lmk_ctx_init_ex did not make (no backend: the
	 * only kind a CPU-only build can have). The words are what
	 * tests/test_ops.c expects. */
	if (c->dev != LMK_DEV_CPU && !c->backend)
		return lmk_err(LMK_EUNSUP, "%s: no cuda kernel yet", op);
	for (int i = 0; i < n; i++) {
		if (!ts[i])
			continue;
		if (ts[i]->dev != c->dev)
			return lmk_err(LMK_EINVAL, "%s: %s is on another device than the context", op,
				       names[i]);
		lmk_dtype want = dts[i] == LMK_F32 ? c->dtype : dts[i];
		if (ts[i]->dtype == want || (dts[i] == LMK_F32 && ts[i]->lp))
			continue;
		return lmk_err(LMK_EINVAL, "%s: %s %s: expected %s, found %s%s", op, names[i],
			       LMK_SHP(ts[i]), lmk_dtype_name(want), lmk_dtype_name(ts[i]->dtype),
			       ts[i]->dtype == LMK_F32 && want == LMK_BF16
				       ? " (a parameter needs lmk_params_to_device with this context)"
				       : "");
	}
	return 0;
}

int lmk_op_wants_grad(lmk_ctx *c, int n, lmk_tensor *const *ts)
{
	if (!c->grad_enabled)
		return 0;
	for (int i = 0; i < n; i++)
		if (ts[i] && ts[i]->requires_grad)
			return 1;
	return 0;
}

/* Product of the first nd dims. */
int64_t lmk_op_lead(const lmk_tensor *t, int nd)
{
	int64_t n = 1;
	for (int i = 0; i < nd; i++)
		n *= t->shape[i];
	return n;
}

int lmk_op_same_shape(const lmk_tensor *a, const lmk_tensor *b)
{
	if (a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return 1;
}

/* The output's node, or NULL (nothing to record, or an error recorded:
 * *fail tells which). */
lmk_node *lmk_op_record(lmk_ctx *c, const char *op, lmk_tensor *out,
			int (*bw)(lmk_ctx *, lmk_node *), int *fail)
{
	*fail = 0;
	if (!out->requires_grad)
		return NULL;
	lmk_node *n = lmk_tape_push(c, op, out);
	if (!n) {
		*fail = 1;
		return NULL;
	}
	n->backward = bw;
	return n;
}

