/* test_cuda.c: the CUDA backend's device layer: device query, contexts on
 * the device in F32 and BF16, the device arena (chunks, reset, merge,
 * poison), tensors and their copies between host and device, parameters on
 * the device (bf16 copy, zeroed gradients), lmk_backward on a device loss,
 * and the error word through which kernels report bad ids and targets.
 * Skips (exit 77) in a CPU-only build or on a machine without a CUDA device.
 * Runs without fork (CK_NOFORK): a child forked after CUDA is initialised
 * cannot use the device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "ops.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

START_TEST(test_info_and_init)
{
	lmk_cuda_info info;
	void *be = NULL;

	ck_assert_int_eq(lmk_cuda_device_info(0, &info), 0);
	ck_assert_int_gt(info.sm_count, 0);
	ck_assert_int_gt(info.major, 0);
	ck_assert_int_eq(lmk_cuda_init(&be, 0), 0);
	ck_assert_ptr_nonnull(be);
	ck_assert_int_eq(lmk_cuda_sync(be), 0);
	lmk_cuda_free(be);
	printf("test_cuda: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", info.name,
	       info.major, info.minor, info.sm_count, (double)info.global_mem / (1u << 30));
}
END_TEST

START_TEST(test_bad_device)
{
	void *be = NULL;
	ck_assert_int_eq(lmk_cuda_init(&be, 9999), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "does not exist"));
}
END_TEST

START_TEST(test_ctx_dtypes)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CUDA), 0);
	ck_assert_int_eq(c.dtype, LMK_F32);
	ck_assert_ptr_nonnull(c.backend);
	ck_assert_int_eq(lmk_ctx_sync(&c), 0);
	lmk_ctx_free(&c);
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_BF16), 0);
	ck_assert_int_eq(c.dtype, LMK_BF16);
	lmk_ctx_free(&c);
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_F16), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "F32 or BF16"));
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CPU, 0, LMK_BF16), LMK_EUNSUP);
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 9999, LMK_F32), LMK_EINVAL);
}
END_TEST

/* Chunks of device memory, first fit, the merge into one chunk at reset,
 * and data surviving a round trip through each. */
START_TEST(test_arena_device)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CUDA), 0);
	c.arena.chunk = 4096;
	unsigned char host[3000], back[3000];
	for (int i = 0; i < 3000; i++)
		host[i] = (unsigned char)(i * 7 + 1);
	void *p[5];
	for (int i = 0; i < 5; i++) {
		p[i] = lmk_arena_alloc(&c.arena, 3000);
		ck_assert_ptr_nonnull(p[i]);
		ck_assert_int_eq((int)((uintptr_t)p[i] % 64), 0);
	}
	ck_assert_int_ge(lmk_arena_nchunks(&c.arena), 4);
	lmk_tensor *t = lmk_tensor_wrap(&c, LMK_U8, 1, (int64_t[]){3000}, p[4]);
	ck_assert_int_eq(lmk_tensor_copy_from_host(&c, t, host), 0);
	ck_assert_int_eq(lmk_tensor_copy_to_host(&c, t, back), 0);
	ck_assert_int_eq(memcmp(host, back, sizeof host), 0);
	lmk_ctx_reset(&c);
	ck_assert_int_eq(lmk_arena_nchunks(&c.arena), 1);
	for (int i = 0; i < 5; i++)
		ck_assert_ptr_nonnull(lmk_arena_alloc(&c.arena, 3000));
	ck_assert_int_eq(lmk_arena_nchunks(&c.arena), 1);
	/* poison: every allocation reads as NaN until written */
	c.arena.poison = 1;
	lmk_tensor *x = lmk_tensor_new(&c, LMK_F32, 1, (int64_t[]){37}, 1);
	float f[37];
	ck_assert_int_eq(lmk_tensor_read_f32(&c, x, 0, f), 0);
	for (int i = 0; i < 37; i++)
		ck_assert_msg(isnan(f[i]), "element %d of a poisoned tensor is %g", i, f[i]);
	ck_assert_int_eq(lmk_tensor_read_f32(&c, x, 1, f), 0); /* gradients start at 0 */
	for (int i = 0; i < 37; i++)
		ck_assert_msg(f[i] == 0.0f, "gradient %d is %g, not 0", i, f[i]);
	lmk_ctx_free(&c);
}
END_TEST

/* Floats in and out of F32 and BF16 tensors and their gradients. */
START_TEST(test_tensor_copies)
{
	lmk_dtype dts[2] = {LMK_F32, LMK_BF16};
	for (int d = 0; d < 2; d++) {
		lmk_ctx c;
		ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, dts[d]), 0);
		int64_t shape[2] = {33, 7};
		lmk_tensor *t = lmk_tensor_new(&c, dts[d], 2, shape, 1);
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(t->dev, LMK_DEV_CUDA);
		ck_assert_int_eq(t->gdtype, dts[d]);
		float in[231], out[231], g[231];
		for (int i = 0; i < 231; i++)
			in[i] = sinf(0.37f * (float)i) * 3.0f;
		ck_assert_int_eq(lmk_tensor_read_f32(&c, t, 1, g), 0);
		for (int i = 0; i < 231; i++)
			ck_assert(g[i] == 0.0f);
		ck_assert_int_eq(lmk_tensor_write_f32(&c, t, 0, in), 0);
		ck_assert_int_eq(lmk_tensor_write_f32(&c, t, 1, in), 0);
		ck_assert_int_eq(lmk_tensor_read_f32(&c, t, 0, out), 0);
		ck_assert_int_eq(lmk_tensor_read_f32(&c, t, 1, g), 0);
		for (int i = 0; i < 231; i++) {
			float want = dts[d] == LMK_BF16 ? lmk_bf16_to_f32(lmk_f32_to_bf16(in[i])) : in[i];
			ck_assert_msg(out[i] == want && g[i] == want, "%s element %d: %g and %g, not %g",
				      lmk_dtype_name(dts[d]), i, out[i], g[i], want);
		}
		int32_t ids[5] = {4, -1, 7, 2147483647, 0}, back[5];
		lmk_tensor *it = lmk_tensor_upload(&c, LMK_I32, 1, (int64_t[]){5}, ids);
		ck_assert_ptr_nonnull(it);
		ck_assert_int_eq(lmk_tensor_copy_to_host(&c, it, back), 0);
		ck_assert_int_eq(memcmp(ids, back, sizeof ids), 0);
		lmk_tensor *w = lmk_tensor_new(&c, dts[d], 1, (int64_t[]){3}, 0);
		ck_assert_int_eq(lmk_tensor_read_f32(&c, w, 1, g), LMK_EINVAL);
		lmk_ctx_free(&c);
	}
}
END_TEST

/* Parameters on the device: data, zeroed gradients, the bf16 copy, and
 * copies both ways. */
START_TEST(test_params_device)
{
	lmk_ctx c;
	lmk_params p;
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_BF16), 0);
	lmk_params_init(&p, 1);
	ck_assert_int_eq(lmk_params_add(&p, "a", 2, (int64_t[]){3, 5}), 0);
	ck_assert_int_eq(lmk_params_add(&p, "b", 1, (int64_t[]){17}), 1);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	for (size_t i = 0; i < p.n; i++)
		p.data[i] = 0.25f + 0.001f * (float)i;
	size_t n = p.n;
	float *host = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
	memcpy(host, p.data, n * sizeof(float));
	ck_assert_int_eq(lmk_params_to_device(&p, &c), 0);
	ck_assert_int_eq(p.dev, LMK_DEV_CUDA);
	ck_assert_ptr_nonnull(p.lp);
	ck_assert_int_eq(lmk_params_to_device(&p, &c), LMK_EINVAL);
	ck_assert_int_eq(p.t[1].dev, LMK_DEV_CUDA);
	ck_assert_ptr_eq(p.t[1].lp, (uint16_t *)p.lp + p.offset[1]);
	ck_assert_int_eq(lmk_params_copy_to_host(&p, 0, back), 0);
	ck_assert_int_eq(memcmp(host, back, n * sizeof(float)), 0);
	ck_assert_int_eq(lmk_params_copy_to_host(&p, 1, back), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert(back[i] == 0.0f);
	uint16_t *lp = malloc(n * sizeof(uint16_t));
	ck_assert_int_eq(lmk_cuda_download(c.backend, lp, p.lp, n * sizeof(uint16_t)), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(lp[i], lmk_f32_to_bf16(host[i]));
	for (size_t i = 0; i < n; i++)
		host[i] = -1.5f * (float)i;
	ck_assert_int_eq(lmk_params_copy_from_host(&p, host), 0);
	ck_assert_int_eq(lmk_cuda_download(c.backend, lp, p.lp, n * sizeof(uint16_t)), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(lp[i], lmk_f32_to_bf16(host[i]));
	/* a gradient written, then zeroed on the stream */
	ck_assert_int_eq(lmk_tensor_write_f32(&c, &p.t[1], 1, host), 0);
	lmk_params_zero_grad(&p);
	ck_assert_int_eq(lmk_params_copy_to_host(&p, 1, back), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert(back[i] == 0.0f);
	/* an op refuses a float32 parameter that has no bf16 copy */
	lmk_params q;
	lmk_params_init(&q, 1);
	ck_assert_int_eq(lmk_params_add(&q, "w", 1, (int64_t[]){5}), 0);
	ck_assert_int_eq(lmk_params_alloc(&q), 0);
	lmk_ctx cf;
	ck_assert_int_eq(lmk_ctx_init(&cf, LMK_DEV_CUDA), 0);
	ck_assert_int_eq(lmk_params_to_device(&q, &cf), 0);
	ck_assert_ptr_null(q.lp);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_BF16, 2, (int64_t[]){2, 5}, 0);
	ck_assert_ptr_null(lmk_mul(&c, x, &q.t[0]));
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected BF16, found F32"));
	ck_assert_ptr_null(lmk_mul(&c, x, &p.t[0])); /* (2,5) and (3,5) */
	ck_assert_ptr_nonnull(lmk_mul(&c, lmk_tensor_new(&c, LMK_BF16, 2, (int64_t[]){2, 17}, 0),
				      &p.t[1]));
	ck_assert_int_eq(lmk_ctx_sync(&c), 0);
	lmk_params_free(&q);
	lmk_ctx_free(&cf);
	lmk_params_free(&p);
	lmk_ctx_free(&c);
	free(host);
	free(back);
	free(lp);
}
END_TEST

/* lmk_backward writes the loss gradient on the device. */
START_TEST(test_backward_device)
{
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_BF16), 0);
	lmk_tensor *x = lmk_tensor_new(&c, LMK_BF16, 1, (int64_t[]){1}, 1);
	float one = 1.0f, g;
	ck_assert_int_eq(lmk_tensor_write_f32(&c, x, 0, &one), 0);
	lmk_tensor *y = lmk_scale(&c, x, 3.0f);
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(lmk_backward(&c, y, 0.5f), 0);
	ck_assert_int_eq(lmk_tensor_read_f32(&c, y, 1, &g), 0);
	ck_assert(g == 0.5f);
	ck_assert_int_eq(lmk_tensor_read_f32(&c, x, 1, &g), 0);
	ck_assert(g == 1.5f);
	lmk_ctx_free(&c);
}
END_TEST

/* Ids and targets out of range: the ops return, the next sync reports it
 * (once), and the rows are empty. */
START_TEST(test_bad_ids_on_device)
{
	lmk_ctx c;
	lmk_params p;
	ck_assert_int_eq(lmk_ctx_init(&c, LMK_DEV_CUDA), 0);
	lmk_params_init(&p, 1);
	ck_assert_int_eq(lmk_params_add(&p, "wte", 2, (int64_t[]){5, 3}), 0);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	for (size_t i = 0; i < p.n; i++)
		p.data[i] = 1.0f;
	ck_assert_int_eq(lmk_params_to_device(&p, &c), 0);
	int32_t ids[4] = {0, 4, 5, -2};
	lmk_tensor *it = lmk_tensor_upload(&c, LMK_I32, 1, (int64_t[]){4}, ids);
	lmk_tensor *e = lmk_embedding(&c, it, &p.t[0]);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(lmk_ctx_sync(&c), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "embedding: an id was outside [0,V)"));
	ck_assert_int_eq(lmk_ctx_sync(&c), 0);
	float out[12];
	ck_assert_int_eq(lmk_tensor_read_f32(&c, e, 0, out), 0);
	for (int i = 0; i < 12; i++)
		ck_assert_msg(out[i] == (i < 6 ? 1.0f : 0.0f), "element %d is %g", i, out[i]);
	int32_t tg[4] = {1, -100, 3, 9};
	lmk_tensor *tt = lmk_tensor_upload(&c, LMK_I32, 1, (int64_t[]){4}, tg);
	int64_t count = 0;
	lmk_tensor *l = lmk_cross_entropy(&c, e, tt, -100, &count);
	ck_assert_ptr_null(l); /* the count is read back, which reports the bad target */
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "cross_entropy: a target was outside"));
	ck_assert_ptr_nonnull(lmk_cross_entropy(&c, e, tt, -100, NULL));
	ck_assert_int_eq(lmk_ctx_sync(&c), LMK_EINVAL);
	ck_assert_int_eq(lmk_ctx_sync(&c), 0);
	lmk_params_free(&p);
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda: skipped: no CUDA device on this machine\n");
		return 77;
	}
	Suite *s = suite_create("cuda");
	TCase *tc = tcase_create("device");
	tcase_add_test(tc, test_info_and_init);
	tcase_add_test(tc, test_bad_device);
	tcase_add_test(tc, test_ctx_dtypes);
	tcase_add_test(tc, test_arena_device);
	tcase_add_test(tc, test_tensor_copies);
	tcase_add_test(tc, test_params_device);
	tcase_add_test(tc, test_backward_device);
	tcase_add_test(tc, test_bad_ids_on_device);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	/* CUDA is initialised in this process: a forked child cannot use it */
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#else
int main(void)
{
	printf("test_cuda: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
