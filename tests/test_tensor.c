/* test_tensor.c: the arena, the context, tensors and views, the tape and its
 * replay, parameter sets. Ops appear only as the simplest users of the tape;
 * their own checks are in test_ops.c. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ops.h"
#include "tensor.h"

START_TEST(test_arena_alignment)
{
	lmk_arena a = {0};
	static const size_t sizes[] = {1, 3, 64, 100, 0, 4096, 65, 7};
	char *prev = NULL;
	size_t prev_size = 0;
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		char *p = lmk_arena_alloc(&a, sizes[i]);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % 64, 0);
		memset(p, 0xab, sizes[i]);
		if (prev) /* bump order, no overlap */
			ck_assert(p >= prev + prev_size);
		prev = p;
		prev_size = sizes[i];
	}
	ck_assert_int_eq(lmk_arena_nchunks(&a), 1);
	ck_assert_uint_eq(a.reserved, (size_t)64 << 20);
	ck_assert_uint_ge(a.used, 4096 + 100 + 65);
	ck_assert_uint_eq(a.peak, a.used);
	lmk_arena_free(&a);
	ck_assert_ptr_null(a.chunks);
	ck_assert_uint_eq(a.reserved, 0);
}
END_TEST

/* Chunks of 4 KiB so that a step spills over several; the reset after it
 * merges them into one of the peak size, and from then on the same step
 * reuses that chunk, address for address. */
START_TEST(test_arena_reset_reuse)
{
	lmk_arena a = {.chunk = 4096};
	void *first[40];
	for (int step = 0; step < 4; step++) {
		for (int i = 0; i < 40; i++) {
			void *p = lmk_arena_alloc(&a, 100 + 37 * (size_t)i);
			ck_assert_ptr_nonnull(p);
			ck_assert_uint_eq((uintptr_t)p % 64, 0);
			if (step >= 2)
				ck_assert_ptr_eq(p, first[i]);
			else if (step == 1)
				first[i] = p;
		}
		if (step == 0)
			ck_assert_int_gt(lmk_arena_nchunks(&a), 1);
		else
			ck_assert_int_eq(lmk_arena_nchunks(&a), 1);
		size_t reserved = a.reserved, peak = a.peak;
		lmk_arena_reset(&a);
		ck_assert_uint_eq(a.used, 0);
		ck_assert_int_eq(lmk_arena_nchunks(&a), 1);
		ck_assert_uint_eq(a.peak, peak);
		if (step >= 1)
			ck_assert_uint_eq(a.reserved, reserved);
	}
	/* a request larger than a chunk gets its own */
	void *big = lmk_arena_alloc(&a, 1 << 20);
	ck_assert_ptr_nonnull(big);
	memset(big, 1, 1 << 20);
	ck_assert_int_eq(lmk_arena_nchunks(&a), 2);
	lmk_arena_reset(&a);
	ck_assert_int_eq(lmk_arena_nchunks(&a), 1);
	ck_assert_uint_ge(a.reserved, (size_t)1 << 20);
	lmk_arena_free(&a);
}
END_TEST

START_TEST(test_ctx)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	ck_assert_int_eq(c.grad_enabled, 1);
	ck_assert_uint_eq(c.seed, 0);
	ck_assert_uint_eq(c.counter, 0);
	lmk_ctx_free(&c);
#if !LMK_CUDA
	lmk_ctx d;
	ck_assert_int_eq(lmk_ctx_init(&d, LMK_DEV_CUDA), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "cpu-only build"));
	lmk_ctx_free(&d); /* harmless after a failed init */
#endif
}
END_TEST

START_TEST(test_tensor_new)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	int64_t s[3] = {2, 3, 5};
	lmk_tensor *t = lmk_tensor_new(&c, LMK_F32, 3, s, 1);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->n, 30);
	ck_assert_int_eq(t->ndim, 3);
	ck_assert_int_eq(t->dev, LMK_DEV_CPU);
	ck_assert_int_eq(t->requires_grad, 1);
	ck_assert_ptr_null(t->name);
	ck_assert_uint_eq((uintptr_t)t->data % 64, 0);
	ck_assert_uint_eq((uintptr_t)t->grad % 64, 0);
	for (int i = 0; i < 30; i++)
		ck_assert(((float *)t->grad)[i] == 0);
	/* no gradient without requires_grad or with grad disabled */
	lmk_tensor *u = lmk_tensor_new(&c, LMK_F32, 3, s, 0);
	ck_assert_ptr_null(u->grad);
	ck_assert_int_eq(u->requires_grad, 0);
	c.grad_enabled = 0;
	u = lmk_tensor_new(&c, LMK_F32, 3, s, 1);
	ck_assert_ptr_null(u->grad);
	ck_assert_int_eq(u->requires_grad, 0);
	c.grad_enabled = 1;
	/* a 0-d tensor has one element */
	lmk_tensor *z = lmk_tensor_new(&c, LMK_F32, 0, NULL, 1);
	ck_assert_int_eq(z->n, 1);
	/* bad requests */
	ck_assert_ptr_null(lmk_tensor_new(&c, LMK_I32, 1, s, 1));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_null(lmk_tensor_new(&c, LMK_F32, 5, (int64_t[]){1, 1, 1, 1, 1}, 0));
	ck_assert_ptr_null(lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){3, -1}, 0));
	/* wrap: the caller's memory, no gradient */
	int32_t ids[6] = {1, 2, 3, 4, 5, 6};
	lmk_tensor *w = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){2, 3}, ids);
	ck_assert_ptr_eq(w->data, ids);
	ck_assert_ptr_null(w->grad);
	ck_assert_int_eq(w->n, 6);
	/* reset forgets the tape and reuses the memory */
	lmk_tensor *y = lmk_scale(&c, t, 2);
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(c.ntape, 1);
	lmk_ctx_reset(&c);
	ck_assert_int_eq(c.ntape, 0);
	ck_assert_uint_eq(c.arena.used, 0);
	ck_assert_uint_eq(c.meta.used, 0);
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_reshape)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 2, (int64_t[]){4, 6}, 1);
	for (int i = 0; i < 24; i++)
		((float *)x->data)[i] = (float)i;
	lmk_tensor *v = lmk_reshape(&c, x, 3, (int64_t[]){2, -1, 3});
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(v->shape[1], 4);
	ck_assert_int_eq(v->n, 24);
	ck_assert_ptr_eq(v->data, x->data);
	ck_assert_ptr_eq(v->grad, x->grad);
	ck_assert_int_eq(v->requires_grad, 1);
	ck_assert_int_eq(x->ndim, 2); /* x itself unchanged */
	/* a gradient reaching the view reaches x */
	lmk_tensor *y = lmk_scale(&c, v, 3);
	float dout[24];
	for (int i = 0; i < 24; i++)
		dout[i] = 1;
	ck_assert_int_eq(lmk_backward_from(&c, y, dout), 0);
	for (int i = 0; i < 24; i++)
		ck_assert(((float *)x->grad)[i] == 3);
	/* sizes that do not match */
	ck_assert_ptr_null(lmk_reshape(&c, x, 2, (int64_t[]){5, 5}));
	ck_assert_int_eq(lmk_errcode(), LMK_EINVAL);
	ck_assert_ptr_null(lmk_reshape(&c, x, 2, (int64_t[]){-1, 5}));
	ck_assert_ptr_null(lmk_reshape(&c, x, 2, (int64_t[]){-1, -1}));
	ck_assert_ptr_null(lmk_reshape(&c, NULL, 1, (int64_t[]){24}));
	lmk_ctx_free(&c);
}
END_TEST

START_TEST(test_params)
{
	lmk_params p;
	lmk_params_init(&p, 1);
	static const struct { const char *name; int nd; int64_t s[2]; } reg[] = {
		{"a", 2, {3, 5}}, {"b", 1, {1}}, {"c", 2, {16, 4}}, {"d", 1, {33}}, {"e", 2, {7, 7}},
	};
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(lmk_params_add(&p, reg[i].name, reg[i].nd, reg[i].s), i);
	ck_assert_int_eq(lmk_params_add(&p, "c", 1, (int64_t[]){2}), LMK_EINVAL);
	ck_assert_int_eq(lmk_params_add(&p, "f", 1, (int64_t[]){-2}), LMK_EINVAL);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	ck_assert_int_eq(p.nt, 5);
	ck_assert_uint_eq((uintptr_t)p.data % 64, 0);
	ck_assert_uint_eq((uintptr_t)p.grad % 64, 0);
	/* in order, each 64-byte aligned, padding under 16 floats */
	size_t end = 0;
	for (int i = 0; i < 5; i++) {
		lmk_tensor *t = &p.t[i];
		ck_assert_uint_eq(p.offset[i] % 16, 0);
		ck_assert_uint_ge(p.offset[i], end);
		ck_assert_uint_lt(p.offset[i] - end, 16);
		ck_assert_ptr_eq(t->data, p.data + p.offset[i]);
		ck_assert_ptr_eq(t->grad, p.grad + p.offset[i]);
		ck_assert_int_eq(t->requires_grad, 1);
		ck_assert_int_eq(t->dtype, LMK_F32);
		ck_assert_str_eq(t->name, reg[i].name);
		end = p.offset[i] + (size_t)t->n;
	}
	ck_assert_uint_ge(p.n, end);
	ck_assert_uint_lt(p.n - end, 16);
	for (size_t i = 0; i < p.n; i++)
		ck_assert(p.data[i] == 0 && p.grad[i] == 0);
	ck_assert_ptr_eq(lmk_params_find(&p, "d"), &p.t[3]);
	ck_assert_ptr_null(lmk_params_find(&p, "zz"));
	p.grad[3] = 1;
	lmk_params_zero_grad(&p);
	ck_assert(p.grad[3] == 0);
	ck_assert_int_eq(lmk_params_add(&p, "late", 1, (int64_t[]){2}), LMK_EINVAL);
	lmk_params_free(&p);

	/* a frozen set: no gradients at all */
	lmk_params_init(&p, 0);
	for (int i = 0; i < 100; i++) { /* grows past the first capacity */
		char name[16];
		snprintf(name, sizeof name, "w%d", i);
		ck_assert_int_eq(lmk_params_add(&p, name, 1, (int64_t[]){i + 1}), i);
	}
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	ck_assert_ptr_null(p.grad);
	for (int i = 0; i < 100; i++) {
		ck_assert_int_eq(p.t[i].requires_grad, 0);
		ck_assert_ptr_null(p.t[i].grad);
	}
	ck_assert_int_eq(lmk_params_find(&p, "w99")->n, 100);
	lmk_params_zero_grad(&p);
	lmk_params_free(&p);
}
END_TEST

/* y = x*x + x and z = lmk_add(y, y): x is used three times and y twice,
 * so dz/dx = 2 (2x + 1) only if every use adds into the gradient. */
START_TEST(test_backward_dag)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){5}, 1);
	for (int i = 0; i < 5; i++)
		((float *)x->data)[i] = (float)i - 1.5f;
	lmk_tensor *y = lmk_add(&c, lmk_mul(&c, x, x), x);
	lmk_tensor *z = lmk_add(&c, y, y);
	ck_assert_ptr_nonnull(z);
	ck_assert_int_eq(c.ntape, 3);
	float ones[5] = {1, 1, 1, 1, 1};
	ck_assert_int_eq(lmk_backward_from(&c, z, ones), 0);
	for (int i = 0; i < 5; i++) {
		float xv = (float)i - 1.5f;
		ck_assert_float_eq(((float *)x->grad)[i], 2 * (2 * xv + 1));
	}
	lmk_ctx_free(&c);
}
END_TEST

/* An op's output starts with an unwritten gradient (zero, NaN in this
 * poisoned arena), which a view shares: the first backward reaching it
 * writes it, a node whose output gradient nobody wrote is skipped, and
 * after the backward every gradient reads as its value. */
START_TEST(test_unwritten_grad)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	c.arena.poison = 1;
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){4}, 1);
	for (int i = 0; i < 4; i++)
		((float *)x->data)[i] = (float)i + 1;
	ck_assert_int_eq(x->gunwritten, 0); /* an input: zeroed */
	lmk_tensor *y = lmk_scale(&c, x, 2);
	ck_assert_int_eq(y->gunwritten, 1);
	float g[4];
	ck_assert_int_eq(lmk_tensor_read_f32(&c, y, 1, g), 0);
	for (int i = 0; i < 4; i++)
		ck_assert(g[i] == 0);
	lmk_tensor *v = lmk_reshape(&c, y, 2, (int64_t[]){2, 2});
	ck_assert_ptr_eq(v->base, y);
	lmk_tensor *a = lmk_scale(&c, v, 3);
	lmk_tensor *b = lmk_scale(&c, y, 5); /* no gradient reaches it */
	ck_assert_ptr_nonnull(b);
	float ones[4] = {1, 1, 1, 1};
	ck_assert_int_eq(lmk_backward_from(&c, a, ones), 0);
	ck_assert_int_eq(y->gunwritten, 0);
	for (int i = 0; i < 4; i++) {
		ck_assert(((float *)x->grad)[i] == 6);
		ck_assert(((float *)y->grad)[i] == 3);
		ck_assert(((float *)b->grad)[i] == 0);
	}
	lmk_ctx_free(&c);
}
END_TEST

/* A residual chain r1 = x1 + y, r2 = r1 + y: the adds' first inputs take
 * over their outputs' gradient memory (one buffer, as llm.c's residual
 * gradient), unless viewed, and every gradient is right. */
START_TEST(test_passed_grad)
{
	for (int viewed = 0; viewed < 2; viewed++) {
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		c.arena.poison = 1;
		lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){4}, 1);
		for (int i = 0; i < 4; i++)
			((float *)x->data)[i] = (float)i + 1;
		lmk_tensor *x1 = lmk_scale(&c, x, 2), *y = lmk_scale(&c, x, 3);
		if (viewed)
			ck_assert_ptr_nonnull(lmk_reshape(&c, x1, 2, (int64_t[]){2, 2}));
		void *x1g = x1->grad;
		lmk_tensor *r1 = lmk_add(&c, x1, y), *r2 = lmk_add(&c, r1, y);
		lmk_tensor *out = lmk_scale(&c, r2, 0.5f);
		float ones[4] = {1, 1, 1, 1};
		ck_assert_int_eq(lmk_backward_from(&c, out, ones), 0);
		ck_assert_ptr_eq(r1->grad, r2->grad); /* r1's memory is r2's */
		ck_assert_ptr_eq(x1->grad, viewed ? x1g : r2->grad);
		for (int i = 0; i < 4; i++) {
			ck_assert(((float *)x1->grad)[i] == 0.5f);
			ck_assert(((float *)y->grad)[i] == 1.0f);
			ck_assert(((float *)x->grad)[i] == 4.0f); /* 2 * 0.5 + 3 * 1 */
		}
		lmk_ctx_free(&c);
	}
}
END_TEST

/* A parameter used twice (tied embedding and output weights) through
 * lmk_backward from a loss: the gradient is the sum of both uses; scale
 * multiplies everything. */
START_TEST(test_backward_params)
{
	lmk_params p;
	lmk_params_init(&p, 1);
	lmk_params_add(&p, "wte", 2, (int64_t[]){5, 3});
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	lmk_tensor *w = lmk_params_find(&p, "wte");
	for (int i = 0; i < 15; i++)
		p.data[i] = 0.1f * (float)(i % 7) - 0.3f;
	float g1[15];
	for (int pass = 0; pass < 2; pass++) {
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
		int32_t ids[4] = {0, 3, 3, 1}, tg[4] = {3, 3, 1, 4};
		lmk_tensor *it = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){1, 4}, ids);
		lmk_tensor *tt = lmk_tensor_wrap(&c, LMK_I32, 2, (int64_t[]){1, 4}, tg);
		lmk_tensor *h = lmk_embedding(&c, it, w);
		lmk_tensor *loss = lmk_cross_entropy(&c, lmk_linear(&c, h, w, NULL), tt, -1, NULL);
		ck_assert_ptr_nonnull(loss);
		ck_assert_int_eq(lmk_backward(&c, loss, pass ? 0.5f : 1.0f), 0);
		ck_assert_float_eq(*(float *)loss->grad, pass ? 0.5f : 1.0f);
		if (pass == 0) {
			memcpy(g1, p.grad, sizeof g1);
		} else {
			for (int i = 0; i < 15; i++) /* accumulated: 1 + 0.5 */
				ck_assert_float_eq_tol(p.grad[i], 1.5f * g1[i], 1e-6f);
		}
		lmk_ctx_free(&c);
	}
	/* the embedding rows never looked up (2) still get the output-layer
	 * gradient, so the tied weight's gradient is not just one use */
	float s = 0;
	for (int j = 0; j < 3; j++)
		s += fabsf(g1[2 * 3 + j]);
	ck_assert(s > 0);
	lmk_params_free(&p);
}
END_TEST

START_TEST(test_backward_errors)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){3}, 0);
	memset(x->data, 0, 12);
	lmk_tensor *y = lmk_scale(&c, x, 2);
	ck_assert_int_eq(c.ntape, 0); /* nothing requires grad: nothing recorded */
	ck_assert_int_eq(lmk_backward(&c, y, 1), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "has no gradient"));
	ck_assert_int_eq(lmk_backward(&c, NULL, 1), LMK_EINVAL);
	lmk_tensor *w = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){3}, 1);
	memset(w->data, 0, 12);
	ck_assert_int_eq(lmk_backward(&c, lmk_scale(&c, w, 2), 1), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "1 element"));
	/* grad disabled: ops record nothing and results have no gradient */
	c.grad_enabled = 0;
	int before = c.ntape;
	lmk_tensor *e = lmk_scale(&c, w, 2);
	ck_assert_int_eq(c.ntape, before);
	ck_assert_int_eq(e->requires_grad, 0);
	ck_assert_ptr_null(e->grad);
	lmk_ctx_free(&c);
}
END_TEST

/* The tape grows past its first capacity; 1000 scalings by 1.001. */
START_TEST(test_tape_growth)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 0, NULL, 1);
	*(float *)x->data = 1;
	lmk_tensor *y = x;
	for (int i = 0; i < 1000; i++)
		y = lmk_scale(&c, y, 1.001f);
	ck_assert_int_eq(c.ntape, 1000);
	ck_assert_int_eq(lmk_backward(&c, y, 1), 0);
	ck_assert_float_eq_tol(*(float *)x->grad, powf(1.001f, 1000), 1e-3f);
	lmk_ctx_free(&c);
}
END_TEST

/* A training step of a small model: after the first reset the arenas keep
 * one chunk each and the tape its storage, so later steps allocate nothing. */
START_TEST(test_steady_state)
{
	lmk_params p;
	lmk_params_init(&p, 1);
	lmk_params_add(&p, "w1", 2, (int64_t[]){64, 32});
	lmk_params_add(&p, "w2", 2, (int64_t[]){10, 64});
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	for (size_t i = 0; i < p.n; i++)
		p.data[i] = 0.01f * (float)(i % 13) - 0.06f;
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CPU), 0);
	c.arena.chunk = 16384; /* small, so the first step spills */
	c.meta.chunk = 1024;
	size_t reserved = 0, meta = 0;
	lmk_node *tape = NULL;
	float xs[8 * 32];
	int32_t tg[8];
	for (int i = 0; i < 8 * 32; i++)
		xs[i] = (float)(i % 5) - 2;
	for (int i = 0; i < 8; i++)
		tg[i] = i;
	for (int step = 0; step < 4; step++) {
		lmk_tensor *x = lmk_tensor_wrap(&c, LMK_F32, 2, (int64_t[]){8, 32}, xs);
		lmk_tensor *h = lmk_gelu(&c, lmk_linear(&c, x, &p.t[0], NULL), 0);
		h = lmk_dropout(&c, lmk_rmsnorm(&c, h, NULL, 1e-5f), 0.1f);
		lmk_tensor *tt = lmk_tensor_wrap(&c, LMK_I32, 1, (int64_t[]){8}, tg);
		lmk_tensor *loss = lmk_cross_entropy(&c, lmk_linear(&c, h, &p.t[1], NULL), tt, -1, NULL);
		ck_assert_ptr_nonnull(loss);
		ck_assert_int_eq(lmk_backward(&c, loss, 1), 0);
		if (step == 0)
			ck_assert_int_gt(lmk_arena_nchunks(&c.arena), 1);
		lmk_ctx_reset(&c);
		ck_assert_int_eq(lmk_arena_nchunks(&c.arena), 1);
		ck_assert_int_eq(lmk_arena_nchunks(&c.meta), 1);
		if (step >= 2) {
			ck_assert_uint_eq(c.arena.reserved, reserved);
			ck_assert_uint_eq(c.meta.reserved, meta);
			ck_assert_ptr_eq(c.tape, tape);
		}
		reserved = c.arena.reserved;
		meta = c.meta.reserved;
		tape = c.tape;
	}
	lmk_ctx_free(&c);
	lmk_params_free(&p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tensor");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_arena_alignment);
	tcase_add_test(tc, test_arena_reset_reuse);
	tcase_add_test(tc, test_ctx);
	tcase_add_test(tc, test_tensor_new);
	tcase_add_test(tc, test_reshape);
	tcase_add_test(tc, test_params);
	tcase_add_test(tc, test_backward_dag);
	tcase_add_test(tc, test_unwritten_grad);
	tcase_add_test(tc, test_passed_grad);
	tcase_add_test(tc, test_backward_params);
	tcase_add_test(tc, test_backward_errors);
	tcase_add_test(tc, test_tape_growth);
	tcase_add_test(tc, test_steady_state);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
