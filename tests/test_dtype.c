/* test_dtype.c: dtype names and sizes, and the f16/bf16 conversions: every
 * half and bfloat16 value, every rounding boundary between neighbours (ties
 * to even), subnormals, overflow to inf, NaN, and the array conversions. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"

static float fbits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bitsf(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static int f16_isnan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

START_TEST(test_names)
{
	static const struct { lmk_dtype t; const char *name; size_t size; } want[] = {
		{LMK_F64, "F64", 8}, {LMK_F32, "F32", 4}, {LMK_F16, "F16", 2},
		{LMK_BF16, "BF16", 2}, {LMK_I64, "I64", 8}, {LMK_I32, "I32", 4},
		{LMK_I16, "I16", 2}, {LMK_I8, "I8", 1}, {LMK_U8, "U8", 1},
		{LMK_U16, "U16", 2}, {LMK_U32, "U32", 4}, {LMK_BOOL, "BOOL", 1},
	};
	ck_assert_int_eq(sizeof want / sizeof want[0], LMK_NDTYPE);
	for (int i = 0; i < LMK_NDTYPE; i++) {
		ck_assert_str_eq(lmk_dtype_name(want[i].t), want[i].name);
		ck_assert_uint_eq(lmk_dtype_size(want[i].t), want[i].size);
		ck_assert_int_eq(lmk_dtype_parse(want[i].name), want[i].t);
	}
	/* safetensors spellings we do not know, and near misses */
	const char *unknown[] = {"", "f32", "F8_E4M3", "F8_E5M2", "U64", "F32 ", "BOOL\n", "B"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
		ck_assert_int_eq(lmk_dtype_parse(unknown[i]), -1);
	ck_assert_str_eq(lmk_dtype_name(LMK_NDTYPE), "?");
	ck_assert_str_eq(lmk_dtype_name((lmk_dtype)-1), "?");
	ck_assert_uint_eq(lmk_dtype_size(LMK_NDTYPE), 0);
	ck_assert_uint_eq(lmk_dtype_size((lmk_dtype)-1), 0);
}
END_TEST

/* Every half, against its value computed from the definition. */
START_TEST(test_f16_to_f32_all)
{
	for (uint32_t h = 0; h < 65536; h++) {
		int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
		float got = lmk_f16_to_f32((uint16_t)h), want;
		if (e == 31 && m) {
			ck_assert_msg(isnan(got), "0x%04x", h);
			ck_assert_int_eq(!!signbit(got), s);
			continue;
		}
		if (e == 31)
			want = INFINITY;
		else if (e == 0)
			want = (float)ldexp(m, -24);            /* subnormal */
		else
			want = (float)ldexp(1024 + m, e - 25);
		if (s)
			want = -want;
		ck_assert_msg(bitsf(got) == bitsf(want), "0x%04x: %a, want %a", h, got, want);
	}
	ck_assert(lmk_f16_to_f32(0x3c00) == 1.0f);
	ck_assert(lmk_f16_to_f32(0x7bff) == 65504.0f);
	ck_assert(lmk_f16_to_f32(0x0001) == 0x1p-24f);
	ck_assert(lmk_f16_to_f32(0x0400) == 0x1p-14f);
	ck_assert(bitsf(lmk_f16_to_f32(0x8000)) == 0x80000000u);
}
END_TEST

START_TEST(test_f16_roundtrip_all)
{
	for (uint32_t h = 0; h < 65536; h++) {
		uint16_t back = lmk_f32_to_f16(lmk_f16_to_f32((uint16_t)h));
		if (f16_isnan((uint16_t)h)) {
			ck_assert_msg(f16_isnan(back), "0x%04x -> 0x%04x", h, back);
			ck_assert_int_eq(back & 0x8000, h & 0x8000);
		} else {
			ck_assert_msg(back == h, "0x%04x -> 0x%04x", h, back);
		}
	}
}
END_TEST

/* Between every pair of neighbouring halves: the midpoint goes to the even
 * one, the float just below to the lower, just above to the upper. The
 * neighbour above 65504 is 65536 as if the exponent went on; past its
 * midpoint (65520) is inf. */
START_TEST(test_f16_rounding)
{
	for (uint32_t h = 0; h < 0x7c00; h++) {
		double lo = lmk_f16_to_f32((uint16_t)h);
		double hi = h == 0x7bff ? 65536.0 : lmk_f16_to_f32((uint16_t)(h + 1));
		float mid = (float)((lo + hi) / 2); /* exact: one bit more than a half */
		ck_assert((double)mid == (lo + hi) / 2);
		uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
		for (int s = 0; s < 2; s++) {
			float sg = s ? -1.0f : 1.0f;
			uint16_t sb = s ? 0x8000 : 0;
			ck_assert_uint_eq(lmk_f32_to_f16(sg * (float)lo), h | sb);
			ck_assert_msg(lmk_f32_to_f16(sg * mid) == (even | sb), "mid of 0x%04x", h);
			ck_assert_uint_eq(lmk_f32_to_f16(sg * nextafterf(mid, 0)), h | sb);
			ck_assert_uint_eq(lmk_f32_to_f16(sg * nextafterf(mid, INFINITY)), (h + 1) | sb);
		}
	}
	/* overflow, tiny values, f32 subnormals, inf and NaN */
	ck_assert_uint_eq(lmk_f32_to_f16(65519.99f), 0x7bff);
	ck_assert_uint_eq(lmk_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(lmk_f32_to_f16(1e10f), 0x7c00);
	ck_assert_uint_eq(lmk_f32_to_f16(FLT_MAX), 0x7c00);
	ck_assert_uint_eq(lmk_f32_to_f16(-FLT_MAX), 0xfc00);
	ck_assert_uint_eq(lmk_f32_to_f16(INFINITY), 0x7c00);
	ck_assert_uint_eq(lmk_f32_to_f16(-INFINITY), 0xfc00);
	ck_assert_uint_eq(lmk_f32_to_f16(0x1p-25f), 0x0000);           /* tie to even: 0 */
	ck_assert_uint_eq(lmk_f32_to_f16(0x1.000002p-25f), 0x0001);
	ck_assert_uint_eq(lmk_f32_to_f16(0x1.8p-24f), 0x0002);         /* tie: 1.5 -> 2 */
	ck_assert_uint_eq(lmk_f32_to_f16(0x1p-26f), 0x0000);
	ck_assert_uint_eq(lmk_f32_to_f16(-0x1p-26f), 0x8000);
	ck_assert_uint_eq(lmk_f32_to_f16(1e-40f), 0x0000);             /* f32 subnormal */
	ck_assert_uint_eq(lmk_f32_to_f16(-1e-40f), 0x8000);
	ck_assert_uint_eq(lmk_f32_to_f16(0x1.ff8p-15f), 0x03ff);       /* largest subnormal */
	ck_assert_uint_eq(lmk_f32_to_f16(0x1.ffcp-15f), 0x0400);       /* tie: up into the normals */
	ck_assert_uint_eq(lmk_f32_to_f16(0x1.ffbfep-15f), 0x03ff);
	ck_assert_uint_eq(lmk_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);    /* tie to even */
	ck_assert_uint_eq(lmk_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	ck_assert_uint_eq(lmk_f32_to_f16(0.0f), 0x0000);
	ck_assert_uint_eq(lmk_f32_to_f16(-0.0f), 0x8000);
	uint32_t nans[] = {0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0xff800001u, 0xffc00000u, 0x7f802000u};
	for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
		uint16_t h = lmk_f32_to_f16(fbits(nans[i]));
		ck_assert_msg(f16_isnan(h), "NaN 0x%08x -> 0x%04x", nans[i], h);
		ck_assert_uint_eq(h & 0x8000, (nans[i] >> 16) & 0x8000);
	}
}
END_TEST

#ifdef __FLT16_MAX__
/* Against the compiler's own conversion over a spread of all floats. */
START_TEST(test_f16_vs_compiler)
{
	for (uint64_t u = 0; u <= 0xffffffffu; u += 4093) {
		float f = fbits((uint32_t)u);
		_Float16 r = (_Float16)f;
		uint16_t want, got = lmk_f32_to_f16(f);
		memcpy(&want, &r, 2);
		if (isnan(f))
			ck_assert(f16_isnan(got));
		else
			ck_assert_msg(got == want, "%a: 0x%04x, want 0x%04x", f, got, want);
	}
}
END_TEST
#endif

START_TEST(test_bf16_all)
{
	for (uint32_t b = 0; b < 65536; b++) {
		float f = lmk_bf16_to_f32((uint16_t)b);
		ck_assert_uint_eq(bitsf(f), b << 16);
		uint16_t back = lmk_f32_to_bf16(f);
		if (isnan(f)) {
			ck_assert(isnan(lmk_bf16_to_f32(back)));
			ck_assert_uint_eq(back & 0x8000, b & 0x8000);
		} else {
			ck_assert_msg(back == b, "0x%04x -> 0x%04x", b, back);
		}
	}
}
END_TEST

/* Rounding between neighbours, subnormals included; the midpoint above the
 * largest bfloat16 goes to inf (0x7f7f is odd). */
START_TEST(test_bf16_rounding)
{
	for (uint32_t b = 0; b < 0x7f80; b++) {
		uint32_t mid = b << 16 | 0x8000;
		uint16_t even = (b & 1) ? (uint16_t)(b + 1) : (uint16_t)b;
		for (uint32_t s = 0; s < 2; s++) {
			uint32_t sb = s << 31;
			ck_assert_uint_eq(lmk_f32_to_bf16(fbits((mid - 1) | sb)), b | sb >> 16);
			ck_assert_uint_eq(lmk_f32_to_bf16(fbits(mid | sb)), even | sb >> 16);
			ck_assert_uint_eq(lmk_f32_to_bf16(fbits((mid + 1) | sb)), (b + 1) | sb >> 16);
			ck_assert_uint_eq(lmk_f32_to_bf16(fbits((b << 16 | 0x7fff) | sb)), b | sb >> 16);
		}
	}
	ck_assert_uint_eq(lmk_f32_to_bf16(FLT_MAX), 0x7f80);
	ck_assert_uint_eq(lmk_f32_to_bf16(INFINITY), 0x7f80);
	ck_assert_uint_eq(lmk_f32_to_bf16(-INFINITY), 0xff80);
	ck_assert_uint_eq(lmk_f32_to_bf16(1.0f), 0x3f80);
	ck_assert_uint_eq(lmk_f32_to_bf16(-0.0f), 0x8000);
	ck_assert_uint_eq(lmk_f32_to_bf16(fbits(0x00000001u)), 0x0000); /* smallest subnormal */
	ck_assert_uint_eq(lmk_f32_to_bf16(fbits(0x00008001u)), 0x0001);
	/* a NaN whose payload is all in the low half must not become inf */
	uint32_t nans[] = {0x7f800001u, 0xff800001u, 0x7fc00000u, 0x7fffffffu, 0xffffffffu};
	for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
		uint16_t b = lmk_f32_to_bf16(fbits(nans[i]));
		ck_assert_msg(isnan(lmk_bf16_to_f32(b)), "NaN 0x%08x -> 0x%04x", nans[i], b);
		ck_assert_uint_eq(b & 0x8000, (nans[i] >> 16) & 0x8000);
	}
}
END_TEST

/* Array conversions by value, from unaligned sources. */
START_TEST(test_to_f32)
{
	unsigned char buf[1 + 8 * 4];
	float out[4];
#define CASE(T, ctype, ...) do { \
		ctype v[4] = {__VA_ARGS__}; \
		memcpy(buf + 1, v, sizeof v); \
		lmk_dtype_to_f32(T, buf + 1, out, 4); \
		for (int i = 0; i < 4; i++) \
			ck_assert_msg(out[i] == (float)v[i], "%s[%d]: %g", #T, i, out[i]); \
	} while (0)
	CASE(LMK_F64, double, 1.5, -2.25, 1e300 * 0, 3.0e38);
	CASE(LMK_F32, float, 1.5f, -2.25f, 0x1p-140f, 3.0e38f);
	CASE(LMK_I64, int64_t, INT64_MIN, -1, 0, (int64_t)1 << 40);
	CASE(LMK_I32, int32_t, INT32_MIN, -7, 0, INT32_MAX);
	CASE(LMK_I16, int16_t, INT16_MIN, -1, 2, INT16_MAX);
	CASE(LMK_I8, int8_t, -128, -1, 0, 127);
	CASE(LMK_U8, uint8_t, 0, 1, 128, 255);
	CASE(LMK_U16, uint16_t, 0, 1, 40000, 65535);
	CASE(LMK_U32, uint32_t, 0, 1, 3000000000u, UINT32_MAX);
	CASE(LMK_BOOL, uint8_t, 0, 1, 1, 0);
#undef CASE
	uint16_t h[3] = {0x3c00, 0xc000, 0x7c00}, b[3] = {0x3f80, 0xc040, 0xff80};
	memcpy(buf + 1, h, 6);
	lmk_dtype_to_f32(LMK_F16, buf + 1, out, 3);
	ck_assert(out[0] == 1.0f && out[1] == -2.0f && isinf(out[2]) && out[2] > 0);
	memcpy(buf + 1, b, 6);
	lmk_dtype_to_f32(LMK_BF16, buf + 1, out, 3);
	ck_assert(out[0] == 1.0f && out[1] == -3.0f && isinf(out[2]) && out[2] < 0);
	lmk_dtype_to_f32(LMK_I8, buf, out, 0); /* nothing */
}
END_TEST

START_TEST(test_from_f32)
{
	float src[5] = {1.0f, -2.5f, 65520.0f, 1e-30f, NAN};
	unsigned char dst[1 + 5 * 8];
	double d;
	uint16_t h;

	ck_assert_int_eq(lmk_dtype_from_f32(LMK_F64, src, dst + 1, 5), 0);
	memcpy(&d, dst + 1 + 8, 8);
	ck_assert(d == -2.5);
	memcpy(&d, dst + 1 + 32, 8);
	ck_assert(isnan(d));
	ck_assert_int_eq(lmk_dtype_from_f32(LMK_F32, src, dst + 1, 5), 0);
	ck_assert_int_eq(memcmp(dst + 1, src, 20), 0);
	ck_assert_int_eq(lmk_dtype_from_f32(LMK_F16, src, dst + 1, 5), 0);
	uint16_t want16[5] = {0x3c00, 0xc100, 0x7c00, 0x0000, 0};
	for (int i = 0; i < 4; i++) {
		memcpy(&h, dst + 1 + 2 * i, 2);
		ck_assert_uint_eq(h, want16[i]);
	}
	memcpy(&h, dst + 1 + 8, 2);
	ck_assert(f16_isnan(h));
	ck_assert_int_eq(lmk_dtype_from_f32(LMK_BF16, src, dst + 1, 5), 0);
	memcpy(&h, dst + 1 + 2, 2);
	ck_assert_uint_eq(h, 0xc020);
	for (int t = LMK_I64; t < LMK_NDTYPE; t++) {
		lmk_err_clear();
		ck_assert_int_eq(lmk_dtype_from_f32(t, src, dst, 1), LMK_EINVAL);
		ck_assert_ptr_nonnull(strstr(lmk_errmsg(), lmk_dtype_name(t)));
	}
}
END_TEST

static Suite *dtype_suite(void)
{
	Suite *s = suite_create("dtype");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_f16_to_f32_all);
	tcase_add_test(tc, test_f16_roundtrip_all);
	tcase_add_test(tc, test_f16_rounding);
#ifdef __FLT16_MAX__
	tcase_add_test(tc, test_f16_vs_compiler);
#endif
	tcase_add_test(tc, test_bf16_all);
	tcase_add_test(tc, test_bf16_rounding);
	tcase_add_test(tc, test_to_f32);
	tcase_add_test(tc, test_from_f32);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dtype_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
