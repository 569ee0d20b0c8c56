/* dtype.c: element types and float conversions. */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "err.h"

static const struct { const char *name; size_t size; } info[LMK_NDTYPE] = {
	[LMK_F64] = {"F64", 8},  [LMK_F32] = {"F32", 4},
	[LMK_F16] = {"F16", 2},  [LMK_BF16] = {"BF16", 2},
	[LMK_I64] = {"I64", 8},  [LMK_I32] = {"I32", 4},
	[LMK_I16] = {"I16", 2},  [LMK_I8] = {"I8", 1},
	[LMK_U8] = {"U8", 1},    [LMK_U16] = {"U16", 2},
	[LMK_U32] = {"U32", 4},  [LMK_BOOL] = {"BOOL", 1},
};

size_t lmk_dtype_size(lmk_dtype t) { return (unsigned)t < LMK_NDTYPE ? info[t].size : 0; }
const char *lmk_dtype_name(lmk_dtype t) { return (unsigned)t < LMK_NDTYPE ? info[t].name : "?"; }

int lmk_dtype_parse(const char *name)
{
	for (int i = 0; i < LMK_NDTYPE; i++)
		if (strcmp(name, info[i].name) == 0)
			return i;
	return -1;
}

float lmk_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
	float f;

	if (e == 0) {
		/* zero or subnormal: m * 2^-24 */
		f = ldexpf((float)m, -24);
		memcpy(&u, &f, 4);
		u |= sign;
	} else if (e == 31) {
		u = sign | 0x7f800000u | (m << 13);
	} else {
		u = sign | ((e + 112) << 23) | (m << 13);
	}
	memcpy(&f, &u, 4);
	return f;
}

uint16_t lmk_f32_to_f16(float f)
{
	uint32_t u, sign, mant;
	int e;

	memcpy(&u, &f, 4);
	sign = (u >> 16) & 0x8000;
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00);
	e = (int)((u >> 23) & 0xff) - 127 + 15;
	mant = u & 0x7fffff;
	if (e >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (e <= 0) {
		/* subnormal half: shift the full mantissa, round to nearest even */
		if (e < -10)
			return (uint16_t)sign;
		mant |= 0x800000;
		int shift = 14 - e;
		uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return (uint16_t)(sign | half);
	}
	uint32_t h = sign | ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++; /* may carry into the exponent, which is right */
	return (uint16_t)h;
}

float lmk_bf16_to_f32(uint16_t b)
{
	uint32_t u = (uint32_t)b << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t lmk_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

void lmk_dtype_to_f32(lmk_dtype t, const void *src, float *dst, size_t n)
{
	const unsigned char *p = src;
	size_t sz = lmk_dtype_size(t);

	if (t == LMK_F32) {
		memcpy(dst, src, n * 4);
		return;
	}
	for (size_t i = 0; i < n; i++, p += sz) {
		union { double f64; int64_t i64; int32_t i32; uint32_t u32; int16_t i16;
			uint16_t u16; int8_t i8; uint8_t u8; } v;
		memcpy(&v, p, sz);
		switch (t) {
		case LMK_F64: dst[i] = (float)v.f64; break;
		case LMK_F16: dst[i] = lmk_f16_to_f32(v.u16); break;
		case LMK_BF16: dst[i] = lmk_bf16_to_f32(v.u16); break;
		case LMK_I64: dst[i] = (float)v.i64; break;
		case LMK_I32: dst[i] = (float)v.i32; break;
		case LMK_I16: dst[i] = v.i16; break;
		case LMK_I8: dst[i] = v.i8; break;
		case LMK_U8: case LMK_BOOL: dst[i] = v.u8; break;
		case LMK_U16: dst[i] = v.u16; break;
		case LMK_U32: dst[i] = (float)v.u32; break;
		default: dst[i] = NAN; break;
		}
	}
}

int lmk_dtype_from_f32(lmk_dtype t, const float *src, void *dst, size_t n)
{
	unsigned char *p = dst;

	switch (t) {
	case LMK_F32: memcpy(dst, src, n * 4); return 0;
	case LMK_F64:
		for (size_t i = 0; i < n; i++) { double d = src[i]; memcpy(p + 8 * i, &d, 8); }
		return 0;
	case LMK_F16: case LMK_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h = t == LMK_F16 ? lmk_f32_to_f16(src[i]) : lmk_f32_to_bf16(src[i]);
			memcpy(p + 2 * i, &h, 2);
		}
		return 0;
	default:
		return lmk_err(LMK_EINVAL, "cannot convert float32 to %s", lmk_dtype_name(t));
	}
}
