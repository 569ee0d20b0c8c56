/* test_bytetok.c: the byte-level tokenizer: every byte round-trips, special
 * tokens encode only through flags and decode by name, ids outside the
 * vocabulary decode as U+FFFD, and decode truncates as snprintf does. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "err.h"

START_TEST(test_all_bytes_round_trip)
{
	unsigned char text[256];
	int32_t ids[258];
	char out[300];

	for (int i = 0; i < 256; i++)
		text[i] = (unsigned char)i;
	ck_assert_uint_eq(lmk_bytetok_encode(text, 256, ids, 0), 256);
	for (int i = 0; i < 256; i++)
		ck_assert_int_eq(ids[i], i);
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 256, out, sizeof out, 0), 256);
	ck_assert_mem_eq(out, text, 256);
	ck_assert_int_eq(out[256], 0);
}
END_TEST

/* Lengths that hit 0, 1, odd sizes, a size not a multiple of 8 or 32, and
 * a realistic one. */
static const size_t lens[] = { 0, 1, 3, 31, 33, 1000, 100003 };

START_TEST(test_lengths_and_flags)
{
	size_t len = lens[_i];
	unsigned char *text = malloc(len + 1);
	int32_t *ids = malloc((len + 2) * sizeof *ids);
	char *out = malloc(len + 20);

	for (size_t i = 0; i < len; i++)
		text[i] = (unsigned char)(i * 7 + 3);
	for (int flags = 0; flags < 4; flags++) {
		size_t n = lmk_bytetok_encode(text, len, ids, flags), off = flags & 1;
		ck_assert_uint_eq(n, len + (flags & 1) + ((flags >> 1) & 1));
		if (flags & LMK_BYTETOK_ADD_BOS)
			ck_assert_int_eq(ids[0], LMK_BYTETOK_BOS);
		if (flags & LMK_BYTETOK_ADD_EOS)
			ck_assert_int_eq(ids[n - 1], LMK_BYTETOK_EOS);
		for (size_t i = 0; i < len; i++)
			ck_assert_int_eq(ids[off + i], text[i]);
		/* skipping specials gives back exactly the text */
		ck_assert_uint_eq(lmk_bytetok_decode(ids, n, out, len + 20, LMK_BYTETOK_SKIP_SPECIAL), len);
		ck_assert(memcmp(out, text, len) == 0);
	}
	free(text);
	free(ids);
	free(out);
}
END_TEST

START_TEST(test_special_tokens)
{
	const int32_t ids[] = { LMK_BYTETOK_BOS, 'h', 'i', LMK_BYTETOK_EOS, LMK_BYTETOK_PAD };
	char out[64];

	ck_assert_int_eq(LMK_BYTETOK_VOCAB, 259);
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 5, out, sizeof out, 0), strlen("<|bos|>hi<|eos|><|pad|>"));
	ck_assert_str_eq(out, "<|bos|>hi<|eos|><|pad|>");
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 5, out, sizeof out, LMK_BYTETOK_SKIP_SPECIAL), 2);
	ck_assert_str_eq(out, "hi");
	ck_assert_str_eq(lmk_bytetok_special_name(256), "<|bos|>");
	ck_assert_str_eq(lmk_bytetok_special_name(258), "<|pad|>");
	ck_assert_ptr_null(lmk_bytetok_special_name(65));
	ck_assert_ptr_null(lmk_bytetok_special_name(259));
	ck_assert_int_eq(lmk_bytetok_special_id("<|eos|>"), LMK_BYTETOK_EOS);
	ck_assert_int_eq(lmk_bytetok_special_id("<|unk|>"), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "'<|unk|>' is not a special token"));
}
END_TEST

START_TEST(test_special_text_is_bytes)
{
	/* "<|eos|>" typed in a text is seven bytes, not the token */
	int32_t ids[16];
	ck_assert_uint_eq(lmk_bytetok_encode("<|eos|>", 7, ids, 0), 7);
	for (int i = 0; i < 7; i++)
		ck_assert_int_lt(ids[i], 256);
}
END_TEST

START_TEST(test_out_of_vocabulary)
{
	const int32_t ids[] = { 'a', 259, -1, 100000, 'b' };
	char out[32];
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 5, out, sizeof out, LMK_BYTETOK_SKIP_SPECIAL), 11);
	ck_assert_str_eq(out, "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b");
}
END_TEST

START_TEST(test_truncation)
{
	const int32_t ids[] = { 'a', 'b', LMK_BYTETOK_EOS, 'c' };
	char out[6];

	memset(out, 'x', sizeof out);
	/* needs 1 + 1 + 7 + 1 = 10 bytes; keeps 5 and the NUL */
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 4, out, sizeof out, 0), 10);
	ck_assert_str_eq(out, "ab<|e");
	/* cap 0 writes nothing, still counts */
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 4, NULL, 0, 0), 10);
	/* cap 1: only the NUL */
	ck_assert_uint_eq(lmk_bytetok_decode(ids, 4, out, 1, 0), 10);
	ck_assert_str_eq(out, "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bytetok");
	TCase *tc = tcase_create("bytetok");
	tcase_add_test(tc, test_all_bytes_round_trip);
	tcase_add_loop_test(tc, test_lengths_and_flags, 0, (int)(sizeof lens / sizeof lens[0]));
	tcase_add_test(tc, test_special_tokens);
	tcase_add_test(tc, test_special_text_is_bytes);
	tcase_add_test(tc, test_out_of_vocabulary);
	tcase_add_test(tc, test_truncation);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
