/* op.h: what a file of ops needs beyond ops.h: the input checks, the
 * recording of tape nodes and the small accessors that lib/ops.c uses, so
 * that a module adding ops of its own (token mixers, adapters) follows the
 * same rules (see ops.h): NULL in, NULL out; inputs on the context's
 * device in its compute dtype; a node only when an input requires grad.
 * Owns: nothing. Needs: tensor, err, and in a CUDA build cuda/ops_cuda.h.
 * Never: prints or exits. */
#ifndef LMK_OP_H
#define LMK_OP_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"
#if LMK_CUDA
#include "../cuda/ops_cuda.h"
#endif

/* "(2,3,4)" into buf, for messages. */
const char *lmk_op_shape_str(const lmk_tensor *t, char *buf, size_t size);
#define LMK_SHP(t) lmk_op_shape_str((t), (char[80]){0}, 80)

/* Device and dtype of every input. names[i] names ts[i] in messages; NULL
 * entries of ts are optional inputs left out. An entry LMK_F32 of dts means
 * a float input: one in the context's compute dtype (F32 on the CPU), or a
 * float32 parameter with a bf16 copy in a BF16 context.
 * @return : 0, LMK_EINVAL or LMK_EUNSUP (a CUDA context without backend) */
int lmk_op_check_inputs(lmk_ctx *c, const char *op, int n, lmk_tensor *const *ts,
			const char *const *names, const lmk_dtype *dts);
/* Whether grad is enabled and one of the n inputs (NULLs allowed) requires it. */
int lmk_op_wants_grad(lmk_ctx *c, int n, lmk_tensor *const *ts);
/* The output's node, or NULL: nothing to record (out needs no grad), or an
 * error recorded, which *fail tells. */
lmk_node *lmk_op_record(lmk_ctx *c, const char *op, lmk_tensor *out,
			int (*bw)(lmk_ctx *, lmk_node *), int *fail);
/* The tensor that holds t's gradient state (gunwritten): t, or a view's base. */
static inline lmk_tensor *lmk_op_owner(const lmk_tensor *t)
{
	return t->base ? t->base : (lmk_tensor *)t;
}
/* Product of the first nd dims. */
int64_t lmk_op_lead(const lmk_tensor *t, int nd);
int lmk_op_same_shape(const lmk_tensor *a, const lmk_tensor *b);

/* CPU accessors: the gradient to add into (NULL unless t requires grad),
 * the data as float32 or int32 (NULL for a NULL t). */
static inline float *lmk_op_g(const lmk_tensor *t) { return t && t->requires_grad ? (float *)t->grad : NULL; }
static inline float *lmk_op_f(const lmk_tensor *t) { return t ? (float *)t->data : NULL; }
static inline const int32_t *lmk_op_i32(const lmk_tensor *t) { return t ? (const int32_t *)t->data : NULL; }

#if LMK_CUDA
/* What a CUDA kernel reads of float input t: t's data, or the bf16 copy of
 * a float32 parameter in a BF16 context. */
static inline const void *lmk_op_x(const lmk_ctx *c, const lmk_tensor *t)
{
	if (!t)
		return NULL;
	return t->dtype != c->dtype && t->lp ? t->lp : t->data;
}

/* t's gradient for a CUDA backward: none unless t requires grad. */
static inline lmk_gbuf lmk_op_gb(const lmk_tensor *t)
{
	lmk_gbuf g = {NULL, LMK_F32};
	if (t && t->requires_grad) {
		g.p = t->grad;
		g.dt = t->gdtype;
	}
	return g;
}
#endif

#endif
