/* test_cuda.c: the CUDA backend's device layer. Skips (exit 77) in a
 * CPU-only build or on a machine without a CUDA device. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

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
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
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
