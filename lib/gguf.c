/* gguf.c: the GGUF reader (versions 2 and 3) and ggml dequantization.
 *
 * A GGUF file, all little endian, strings as a u64 length and bytes:
 *   "GGUF" u32 version, u64 tensor count, u64 kv count
 *   kv count x { string key, u32 value type, value }
 *   tensor count x { string name, u32 ndim, ndim x u64 ne, u32 type, u64 offset }
 *   padding to general.alignment (default 32), then the data section;
 *   each tensor at data + offset, offset a multiple of the alignment.
 * Every count, length and offset is checked against the bytes that remain
 * before it is used, so that a hostile header fails with a message instead
 * of allocating or reading out of bounds.
 *
 * Dequantization follows ggml's block layouts (ggml-common.h, the
 * dequantize_row_* functions of ggml-quants.c) and performs the same float
 * operations in the same order, so the results are bit for bit those of
 * ggml and of gguf-py's gguf.quants.dequantize. Each float expression is a
 * single multiply or add per statement so that no compiler contracts it
 * into a fused multiply-add (which would round differently). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "err.h"
#include "gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files with native loads: port it first"
#endif

#define DEFAULT_ALIGNMENT 32
#define QK_K 256

static uint16_t ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static float ldh(const unsigned char *p) { return lmk_f16_to_f32(ld16(p)); }

/* ---- dequantization: one function per type, nb blocks from x to y ---- */

static void dq_f32(const unsigned char *x, float *y, int64_t nb)
{
	memcpy(y, x, (size_t)nb * 4);
}

static void dq_f16(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++)
		y[i] = ldh(x + 2 * i);
}

static void dq_bf16(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++)
		y[i] = lmk_bf16_to_f32(ld16(x + 2 * i));
}

/* Q4_0, 18 bytes: f16 d, 16 bytes of nibbles; element j is the low nibble
 * of byte j, element j+16 the high one; value (q - 8) * d. */
static void dq_q4_0(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 18, y += 32) {
		float d = ldh(x);
		const unsigned char *qs = x + 2;
		for (int j = 0; j < 16; j++) {
			y[j] = (float)((qs[j] & 0xf) - 8) * d;
			y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
		}
	}
}

/* Q4_1, 20 bytes: f16 d, f16 m, 16 bytes of nibbles; value q * d + m. */
static void dq_q4_1(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 20, y += 32) {
		float d = ldh(x), m = ldh(x + 2);
		const unsigned char *qs = x + 4;
		for (int j = 0; j < 16; j++) {
			float lo = (float)(qs[j] & 0xf) * d, hi = (float)(qs[j] >> 4) * d;
			y[j] = lo + m;
			y[j + 16] = hi + m;
		}
	}
}

/* Q5_0, 22 bytes: f16 d, u32 of fifth bits (bit j for element j), 16 bytes
 * of nibbles as in Q4_0; value (q - 16) * d. */
static void dq_q5_0(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 22, y += 32) {
		float d = ldh(x);
		uint32_t qh = ld32(x + 2);
		const unsigned char *qs = x + 6;
		for (int j = 0; j < 16; j++) {
			int lo = (qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
			int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
			y[j] = (float)(lo - 16) * d;
			y[j + 16] = (float)(hi - 16) * d;
		}
	}
}

/* Q5_1, 24 bytes: f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles;
 * value q * d + m. */
static void dq_q5_1(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 24, y += 32) {
		float d = ldh(x), m = ldh(x + 2);
		uint32_t qh = ld32(x + 4);
		const unsigned char *qs = x + 8;
		for (int j = 0; j < 16; j++) {
			int lo = (qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
			int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
			float a = (float)lo * d, c = (float)hi * d;
			y[j] = a + m;
			y[j + 16] = c + m;
		}
	}
}

/* Q8_0, 34 bytes: f16 d, 32 signed bytes; value q * d. */
static void dq_q8_0(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 34, y += 32) {
		float d = ldh(x);
		for (int j = 0; j < 32; j++)
			y[j] = (float)(int8_t)x[2 + j] * d;
	}
}

/* Q2_K, 84 bytes: 16 scale bytes (low nibble scale, high nibble min of each
 * group of 16), 64 bytes of 2-bit values, f16 d, f16 dmin. Each half of 128
 * elements takes 32 value bytes; shift s (0, 2, 4, 6) gives elements
 * 32 s/2 .. +31 of the half; value d*scale*q - dmin*min. */
static void dq_q2_k(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 84) {
		const unsigned char *sc = x, *q = x + 16;
		float d = ldh(x + 80), dmin = ldh(x + 82);
		int is = 0;
		for (int h = 0; h < 2; h++, q += 32)
			for (int shift = 0; shift < 8; shift += 2)
				for (int part = 0; part < 2; part++, is++) {
					float dl = d * (float)(sc[is] & 0xf), ml = dmin * (float)(sc[is] >> 4);
					for (int l = 0; l < 16; l++) {
						float v = dl * (float)((q[16 * part + l] >> shift) & 3);
						*y++ = v - ml;
					}
				}
	}
}

/* Q3_K, 110 bytes: 32 bytes of high-bit masks, 64 bytes of 2-bit values,
 * 12 bytes of sixteen 6-bit scales, f16 d. Element 32 k + l (k = 4 h + s for
 * half h and shift 2 s) takes bits 2 s of value byte 32 h + l, and bit k of
 * mask byte l; the value is q - 4 when that mask bit is clear. Scale i has
 * its low 4 bits in byte i (i < 8, low nibble) or i - 8 (high nibble) and
 * its high 2 bits at bit 2 (i / 4) of byte 8 + i % 4; it is stored + 32. */
static void dq_q3_k(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 110) {
		const unsigned char *hm = x, *q = x + 32, *s = x + 96;
		float d = ldh(x + 108);
		int scale[16];
		for (int i = 0; i < 16; i++) {
			int lo = i < 8 ? s[i] & 0xf : s[i - 8] >> 4;
			int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
			scale[i] = (lo | hi << 4) - 32;
		}
		for (int k = 0; k < 8; k++) {
			const unsigned char *qq = q + 32 * (k / 4);
			int shift = 2 * (k % 4);
			for (int part = 0; part < 2; part++) {
				float dl = d * (float)scale[2 * k + part];
				for (int l = 16 * part; l < 16 * part + 16; l++) {
					int v = ((qq[l] >> shift) & 3) - ((hm[l] >> k) & 1 ? 0 : 4);
					*y++ = dl * (float)v;
				}
			}
		}
	}
}

/* The eight 6-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes:
 * j < 4: scale in bits 0-5 of byte j, min in bits 0-5 of byte j + 4;
 * j >= 4: low 4 bits in byte j + 4 (scale low nibble, min high nibble),
 * high 2 bits in bits 6-7 of byte j - 4 (scale) and byte j (min). */
static void scale_min_k4(int j, const unsigned char *q, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

/* Q4_K, 144 bytes: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles;
 * 64 elements per 32 bytes: the low nibbles (sub-block 2c), then the high
 * ones (2c + 1); value d*scale*q - dmin*min. */
static void dq_q4_k(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 144) {
		float d = ldh(x), dmin = ldh(x + 2);
		const unsigned char *s = x + 4, *q = x + 16;
		for (int c = 0; c < 4; c++, q += 32)
			for (int half = 0; half < 2; half++) {
				int sc, m;
				scale_min_k4(2 * c + half, s, &sc, &m);
				float d1 = d * (float)sc, m1 = dmin * (float)m;
				for (int l = 0; l < 32; l++) {
					float v = d1 * (float)((q[l] >> (4 * half)) & 0xf);
					*y++ = v - m1;
				}
			}
	}
}

/* Q5_K, 176 bytes: as Q4_K with 32 bytes of fifth bits (bit j of byte l
 * for element 32 j + l) between the scales and the nibbles. */
static void dq_q5_k(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 176) {
		float d = ldh(x), dmin = ldh(x + 2);
		const unsigned char *s = x + 4, *qh = x + 16, *q = x + 48;
		for (int c = 0; c < 4; c++, q += 32)
			for (int half = 0; half < 2; half++) {
				int j = 2 * c + half, sc, m;
				scale_min_k4(j, s, &sc, &m);
				float d1 = d * (float)sc, m1 = dmin * (float)m;
				for (int l = 0; l < 32; l++) {
					int v = ((q[l] >> (4 * half)) & 0xf) | (((qh[l] >> j) & 1) << 4);
					float t = d1 * (float)v;
					*y++ = t - m1;
				}
			}
	}
}

/* Q6_K, 210 bytes: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
 * 16 signed scales, f16 d. In each half of 128 elements, quarter t (32
 * elements) takes nibble t / 2 of low byte 32 (t % 2) + l and bits 2 t of
 * high byte l; value d * scale * (q - 32). */
static void dq_q6_k(const unsigned char *x, float *y, int64_t nb)
{
	for (int64_t b = 0; b < nb; b++, x += 210) {
		const unsigned char *ql = x, *qh = x + 128;
		const int8_t *sc = (const int8_t *)(x + 192);
		float d = ldh(x + 208);
		for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8)
			for (int t = 0; t < 4; t++)
				for (int l = 0; l < 32; l++) {
					int lo = (ql[32 * (t % 2) + l] >> (4 * (t / 2))) & 0xf;
					int q = (lo | ((qh[l] >> (2 * t)) & 3) << 4) - 32;
					float ds = d * (float)sc[2 * t + l / 16];
					*y++ = ds * (float)q;
				}
	}
}

typedef void (*dq_fn)(const unsigned char *x, float *y, int64_t nb);

/* Block sizes of every type gguf-py knows (GGML_QUANT_SIZES), so that files
 * holding other quantizations still parse; fn is NULL where we cannot
 * dequantize. */
static const struct { const char *name; int elems, bytes; dq_fn fn; } types[] = {
	[0] = {"F32", 1, 4, dq_f32},         [1] = {"F16", 1, 2, dq_f16},
	[2] = {"Q4_0", 32, 18, dq_q4_0},     [3] = {"Q4_1", 32, 20, dq_q4_1},
	[6] = {"Q5_0", 32, 22, dq_q5_0},     [7] = {"Q5_1", 32, 24, dq_q5_1},
	[8] = {"Q8_0", 32, 34, dq_q8_0},     [9] = {"Q8_1", 32, 40, NULL},
	[10] = {"Q2_K", 256, 84, dq_q2_k},   [11] = {"Q3_K", 256, 110, dq_q3_k},
	[12] = {"Q4_K", 256, 144, dq_q4_k},  [13] = {"Q5_K", 256, 176, dq_q5_k},
	[14] = {"Q6_K", 256, 210, dq_q6_k},  [15] = {"Q8_K", 256, 292, NULL},
	[16] = {"IQ2_XXS", 256, 66, NULL},   [17] = {"IQ2_XS", 256, 74, NULL},
	[18] = {"IQ3_XXS", 256, 98, NULL},   [19] = {"IQ1_S", 256, 50, NULL},
	[20] = {"IQ4_NL", 32, 18, NULL},     [21] = {"IQ3_S", 256, 110, NULL},
	[22] = {"IQ2_S", 256, 82, NULL},     [23] = {"IQ4_XS", 256, 136, NULL},
	[24] = {"I8", 1, 1, NULL},           [25] = {"I16", 1, 2, NULL},
	[26] = {"I32", 1, 4, NULL},          [27] = {"I64", 1, 8, NULL},
	[28] = {"F64", 1, 8, NULL},          [29] = {"IQ1_M", 256, 56, NULL},
	[30] = {"BF16", 1, 2, dq_bf16},      [34] = {"TQ1_0", 256, 54, NULL},
	[35] = {"TQ2_0", 256, 66, NULL},     [39] = {"MXFP4", 32, 17, NULL},
	[40] = {"NVFP4", 64, 36, NULL},      [41] = {"Q1_0", 128, 18, NULL},
};
#define NTYPES ((int)(sizeof types / sizeof types[0]))

int lmk_ggml_block_elems(int type)
{
	return type >= 0 && type < NTYPES ? types[type].elems : 0;
}

size_t lmk_ggml_block_bytes(int type)
{
	return type >= 0 && type < NTYPES ? (size_t)types[type].bytes : 0;
}

const char *lmk_ggml_type_name(int type)
{
	return type >= 0 && type < NTYPES && types[type].name ? types[type].name : "?";
}

int lmk_ggml_can_dequantize(int type)
{
	return type >= 0 && type < NTYPES && types[type].fn != NULL;
}

int lmk_ggml_dequantize(int type, const void *src, float *dst, int64_t n)
{
	if (!lmk_ggml_can_dequantize(type))
		return lmk_err(LMK_EUNSUP, "cannot dequantize ggml type %s (%d)",
			       lmk_ggml_type_name(type), type);
	int be = types[type].elems;
	if (n < 0 || n % be != 0)
		return lmk_err(LMK_EINVAL, "dequantize %s: expected a multiple of %d elements, found %lld",
			       types[type].name, be, (long long)n);
	types[type].fn(src, dst, n / be);
	return 0;
}

int64_t lmk_gguf_tensor_numel(const lmk_gguf_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->ne[i];
	return n;
}

int lmk_gguf_tensor_f32(const lmk_gguf_tensor *t, float *dst)
{
	if (!lmk_ggml_can_dequantize(t->type))
		return lmk_err(LMK_EUNSUP, "tensor '%s': cannot dequantize ggml type %s (%d)",
			       t->name, lmk_ggml_type_name(t->type), t->type);
	int64_t numel = lmk_gguf_tensor_numel(t), row = t->ndim > 0 ? t->ne[0] : 1;
	if (numel == 0)
		return 0;
	int64_t nrows = numel / row, be = types[t->type].elems;
	size_t rowbytes = (size_t)(row / be) * (size_t)types[t->type].bytes;
	const unsigned char *src = t->data;
	dq_fn fn = types[t->type].fn;
	/* rows are independent; threads only pay off on large tensors */
	#pragma omp parallel for schedule(static) if (numel > (1 << 18))
	for (int64_t r = 0; r < nrows; r++)
		fn(src + (size_t)r * rowbytes, dst + r * row, row / be);
	return 0;
}

int lmk_gguf_tensor_bf16(const lmk_gguf_tensor *t, uint16_t *dst)
{
	if (!lmk_ggml_can_dequantize(t->type))
		return lmk_err(LMK_EUNSUP, "tensor '%s': cannot dequantize ggml type %s (%d)",
			       t->name, lmk_ggml_type_name(t->type), t->type);
	int64_t numel = lmk_gguf_tensor_numel(t), row = t->ne[0];
	if (numel == 0)
		return 0;
	if (t->type == LMK_GGML_BF16) {
		memcpy(dst, t->data, t->nbytes);
		return 0;
	}
	int64_t nrows = numel / row, be = types[t->type].elems;
	size_t rowbytes = (size_t)(row / be) * (size_t)types[t->type].bytes;
	const unsigned char *src = t->data;
	dq_fn fn = types[t->type].fn;
	int failed = 0;
	/* one row of float32 at a time per thread, not the whole tensor */
	#pragma omp parallel if (numel > (1 << 18)) reduction(|| : failed)
	{
		float *tmp = malloc((size_t)row * sizeof *tmp);
		if (!tmp)
			failed = 1;
		#pragma omp for schedule(static)
		for (int64_t r = 0; r < nrows; r++) {
			if (!tmp)
				continue;
			fn(src + (size_t)r * rowbytes, tmp, row / be);
			for (int64_t i = 0; i < row; i++)
				dst[r * row + i] = lmk_f32_to_bf16(tmp[i]);
		}
		free(tmp);
	}
	if (failed)
		return lmk_err(LMK_ENOMEM, "tensor '%s': out of memory for a row of %lld floats", t->name,
			       (long long)row);
	return 0;
}

/* ---- metadata value types ---- */

static const struct { const char *name; size_t size; } vtypes[] = {
	[LMK_GGUF_U8] = {"UINT8", 1},    [LMK_GGUF_I8] = {"INT8", 1},
	[LMK_GGUF_U16] = {"UINT16", 2},  [LMK_GGUF_I16] = {"INT16", 2},
	[LMK_GGUF_U32] = {"UINT32", 4},  [LMK_GGUF_I32] = {"INT32", 4},
	[LMK_GGUF_F32] = {"FLOAT32", 4}, [LMK_GGUF_BOOL] = {"BOOL", 1},
	[LMK_GGUF_STRING] = {"STRING", 0}, [LMK_GGUF_ARRAY] = {"ARRAY", 0},
	[LMK_GGUF_U64] = {"UINT64", 8},  [LMK_GGUF_I64] = {"INT64", 8},
	[LMK_GGUF_F64] = {"FLOAT64", 8},
};
#define NVTYPES ((int)(sizeof vtypes / sizeof vtypes[0]))

size_t lmk_gguf_vtype_size(int t) { return t >= 0 && t < NVTYPES ? vtypes[t].size : 0; }
const char *lmk_gguf_vtype_name(int t) { return t >= 0 && t < NVTYPES ? vtypes[t].name : "?"; }

static int is_int_type(int t)
{
	return t == LMK_GGUF_U8 || t == LMK_GGUF_I8 || t == LMK_GGUF_U16 || t == LMK_GGUF_I16 ||
	       t == LMK_GGUF_U32 || t == LMK_GGUF_I32 || t == LMK_GGUF_U64 || t == LMK_GGUF_I64 ||
	       t == LMK_GGUF_BOOL;
}

/* One integer of type t at p. @return : 0, or -1 when a UINT64 does not fit */
static int load_int(int t, const unsigned char *p, int64_t *v)
{
	switch (t) {
	case LMK_GGUF_U8: *v = p[0]; return 0;
	case LMK_GGUF_I8: *v = (int8_t)p[0]; return 0;
	case LMK_GGUF_BOOL: *v = p[0] != 0; return 0;
	case LMK_GGUF_U16: *v = ld16(p); return 0;
	case LMK_GGUF_I16: *v = (int16_t)ld16(p); return 0;
	case LMK_GGUF_U32: *v = ld32(p); return 0;
	case LMK_GGUF_I32: *v = (int32_t)ld32(p); return 0;
	case LMK_GGUF_I64: *v = (int64_t)ld64(p); return 0;
	case LMK_GGUF_U64: {
		uint64_t u = ld64(p);
		if (u > INT64_MAX)
			return -1;
		*v = (int64_t)u;
		return 0;
	}
	default: return -1;
	}
}

static int load_f32(int t, const unsigned char *p, float *v)
{
	int64_t i;
	if (t == LMK_GGUF_F32) {
		memcpy(v, p, 4);
		return 0;
	}
	if (t == LMK_GGUF_F64) {
		double d;
		memcpy(&d, p, 8);
		*v = (float)d;
		return 0;
	}
	if (is_int_type(t) && load_int(t, p, &i) == 0) {
		*v = (float)i;
		return 0;
	}
	return -1;
}

/* ---- the parser ---- */

typedef struct {
	const unsigned char *p;
	size_t pos, size;
	const char *file;
	char what[128];      /* the item being read, for messages */
} rd;

static int need(rd *r, uint64_t n, const char *field)
{
	if (n > r->size - r->pos)
		return lmk_err(LMK_EFORMAT, "%s: %s: truncated: expected %llu bytes for the %s at byte %zu, found %zu",
			       r->file, r->what, (unsigned long long)n, field, r->pos, r->size - r->pos);
	return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *field)
{
	int rc = need(r, 4, field);
	if (rc)
		return rc;
	*v = ld32(r->p + r->pos);
	r->pos += 4;
	return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *field)
{
	int rc = need(r, 8, field);
	if (rc)
		return rc;
	*v = ld64(r->p + r->pos);
	r->pos += 8;
	return 0;
}

static int rd_str(rd *r, lmk_gguf_str *s, const char *field)
{
	uint64_t len;
	int rc = rd_u64(r, &len, field);
	if (rc)
		return rc;
	if (len > r->size - r->pos)
		return lmk_err(LMK_EFORMAT, "%s: %s: %s of %llu bytes at byte %zu runs past the end of the file (%zu bytes left)",
			       r->file, r->what, field, (unsigned long long)len, r->pos - 8, r->size - r->pos);
	s->len = len;
	s->s = (const char *)r->p + r->pos;
	r->pos += len;
	return 0;
}

/* A name (key or tensor): non-empty, no NUL bytes; returns a C copy. */
static int rd_name(rd *r, char **out, const char *field)
{
	lmk_gguf_str s = { 0 };
	int rc = rd_str(r, &s, field);
	if (rc)
		return rc;
	if (s.len == 0)
		return lmk_err(LMK_EFORMAT, "%s: %s: expected a non-empty %s, found an empty one",
			       r->file, r->what, field);
	if (memchr(s.s, 0, s.len))
		return lmk_err(LMK_EFORMAT, "%s: %s: %s contains a NUL byte", r->file, r->what, field);
	*out = malloc(s.len + 1);
	if (!*out)
		return lmk_err(LMK_ENOMEM, "%s: %s: out of memory", r->file, r->what);
	memcpy(*out, s.s, s.len);
	(*out)[s.len] = 0;
	return 0;
}

/* Array header: element type and count, with the count checked against the
 * bytes left (each element needs at least min bytes). */
static int rd_array_head(rd *r, int depth, uint32_t *atype, uint64_t *n)
{
	int rc;
	if (depth > LMK_GGUF_MAX_DEPTH)
		return lmk_err(LMK_EFORMAT, "%s: %s: arrays nested deeper than %d", r->file, r->what,
			       LMK_GGUF_MAX_DEPTH);
	if ((rc = rd_u32(r, atype, "array type")) || (rc = rd_u64(r, n, "array length")))
		return rc;
	uint64_t min;
	if (*atype >= (uint32_t)NVTYPES)
		return lmk_err(LMK_EFORMAT, "%s: %s: unknown array element type %u", r->file, r->what, *atype);
	min = *atype == LMK_GGUF_STRING ? 8 : *atype == LMK_GGUF_ARRAY ? 12 : vtypes[*atype].size;
	if (*n > (r->size - r->pos) / min)
		return lmk_err(LMK_EFORMAT, "%s: %s: array of %llu %s needs at least %llu bytes at byte %zu, found %zu",
			       r->file, r->what, (unsigned long long)*n, vtypes[*atype].name,
			       *n > UINT64_MAX / min ? (unsigned long long)UINT64_MAX : (unsigned long long)(*n * min),
			       r->pos, r->size - r->pos);
	return 0;
}

/* Skips an array (header included) without keeping it: nested arrays. */
static int skip_array(rd *r, int depth)
{
	uint32_t atype = 0;
	uint64_t n = 0;
	int rc = rd_array_head(r, depth, &atype, &n);
	if (rc)
		return rc;
	if (atype == LMK_GGUF_STRING) {
		lmk_gguf_str s;
		for (uint64_t i = 0; i < n; i++)
			if ((rc = rd_str(r, &s, "string")))
				return rc;
	} else if (atype == LMK_GGUF_ARRAY) {
		for (uint64_t i = 0; i < n; i++)
			if ((rc = skip_array(r, depth + 1)))
				return rc;
	} else {
		r->pos += n * vtypes[atype].size; /* checked by rd_array_head */
	}
	return 0;
}

static int rd_kv(rd *r, lmk_gguf_kv *kv, int index)
{
	uint32_t type;
	int rc;

	snprintf(r->what, sizeof r->what, "key %d", index);
	if ((rc = rd_name(r, &kv->key, "key")))
		return rc;
	snprintf(r->what, sizeof r->what, "key '%.100s'", kv->key);
	if ((rc = rd_u32(r, &type, "value type")))
		return rc;
	if (type >= (uint32_t)NVTYPES)
		return lmk_err(LMK_EFORMAT, "%s: %s: unknown value type %u", r->file, r->what, type);
	kv->type = (lmk_gguf_vtype)type;
	kv->n = 1;
	if (type == LMK_GGUF_STRING) {
		if (!(kv->strs = malloc(sizeof *kv->strs)))
			return lmk_err(LMK_ENOMEM, "%s: %s: out of memory", r->file, r->what);
		if ((rc = rd_str(r, kv->strs, "string")))
			return rc;
		kv->data = kv->strs->s;
		return 0;
	}
	if (type != LMK_GGUF_ARRAY) {
		if ((rc = need(r, vtypes[type].size, "value")))
			return rc;
		kv->data = r->p + r->pos;
		r->pos += vtypes[type].size;
		return 0;
	}
	uint32_t atype;
	if ((rc = rd_array_head(r, 1, &atype, &kv->n)))
		return rc;
	kv->atype = (lmk_gguf_vtype)atype;
	kv->data = r->p + r->pos;
	if (atype == LMK_GGUF_STRING) {
		/* n <= bytes left / 8 (rd_array_head), so this is bounded by the file */
		if (kv->n && !(kv->strs = calloc(kv->n, sizeof *kv->strs)))
			return lmk_err(LMK_ENOMEM, "%s: %s: out of memory for %llu strings", r->file,
				       r->what, (unsigned long long)kv->n);
		for (uint64_t i = 0; i < kv->n; i++)
			if ((rc = rd_str(r, &kv->strs[i], "string")))
				return rc;
	} else if (atype == LMK_GGUF_ARRAY) {
		for (uint64_t i = 0; i < kv->n; i++)
			if ((rc = skip_array(r, 2)))
				return rc;
	} else {
		r->pos += kv->n * vtypes[atype].size;
	}
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* @return : a name that occurs twice among n, or NULL (sorting a copy keeps
 * this O(n log n) for files with many names) */
static const char *find_duplicate(char **names, size_t n, int *err)
{
	*err = 0;
	if (n < 2)
		return NULL;
	char **s = malloc(n * sizeof *s);
	if (!s) {
		*err = 1;
		return NULL;
	}
	memcpy(s, names, n * sizeof *s);
	qsort(s, n, sizeof *s, cmp_name);
	const char *dup = NULL;
	for (size_t i = 1; i < n && !dup; i++)
		if (strcmp(s[i - 1], s[i]) == 0)
			dup = s[i];
	free(s);
	return dup;
}

/* Parses the image g->map / g->size; g->path is set. On failure the caller
 * closes g. */
static int parse(lmk_gguf *g)
{
	rd r = {.p = g->map, .pos = 0, .size = g->size, .file = g->path};
	uint64_t ntensors, nkv;
	uint32_t version;
	int rc, dup_err;

	snprintf(r.what, sizeof r.what, "header");
	if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0) {
		unsigned char m[4] = {0};
		if (g->size)
			memcpy(m, g->map, g->size < 4 ? g->size : 4);
		return lmk_err(LMK_EFORMAT, "%s: not a GGUF file: expected magic 'GGUF', found %02x %02x %02x %02x (%zu bytes)",
			       g->path, m[0], m[1], m[2], m[3], g->size);
	}
	r.pos = 4;
	if ((rc = rd_u32(&r, &version, "version")))
		return rc;
	if (version == 1)
		return lmk_err(LMK_EUNSUP, "%s: GGUF version 1 is not supported (expected 2 or 3)", g->path);
	if (version != 2 && version != 3) {
		if ((version & 0xffff) == 0 && (version >> 16) != 0)
			return lmk_err(LMK_EUNSUP, "%s: big-endian GGUF files are not supported (version field %08x)",
				       g->path, version);
		return lmk_err(LMK_EFORMAT, "%s: expected GGUF version 2 or 3, found %u", g->path, version);
	}
	g->version = version;
	if ((rc = rd_u64(&r, &ntensors, "tensor count")) || (rc = rd_u64(&r, &nkv, "key count")))
		return rc;
	/* Smallest possible entries: a key is 8 (length) + 1 + 4 (type) + 1
	 * (a u8 value); a tensor info is 8 + 1 + 4 (ndim) + 4 (type) + 8. */
	size_t left = g->size - r.pos;
	if (nkv > left / 14 || nkv > INT_MAX)
		return lmk_err(LMK_EFORMAT, "%s: header: key count %llu is impossible in %zu bytes",
			       g->path, (unsigned long long)nkv, left);
	left -= nkv * 14;
	if (ntensors > left / 25 || ntensors > INT_MAX)
		return lmk_err(LMK_EFORMAT, "%s: header: tensor count %llu is impossible in %zu bytes",
			       g->path, (unsigned long long)ntensors, g->size - r.pos);

	if (nkv && !(g->kv = calloc(nkv, sizeof *g->kv)))
		return lmk_err(LMK_ENOMEM, "%s: out of memory for %llu keys", g->path, (unsigned long long)nkv);
	for (uint64_t i = 0; i < nkv; i++) {
		rc = rd_kv(&r, &g->kv[i], (int)i);
		g->nkv = (int)i + 1; /* so that close frees what was read */
		if (rc)
			return rc;
	}
	{
		char **keys = malloc((nkv ? nkv : 1) * sizeof *keys);
		if (!keys)
			return lmk_err(LMK_ENOMEM, "%s: out of memory", g->path);
		for (int i = 0; i < g->nkv; i++)
			keys[i] = g->kv[i].key;
		const char *dup = find_duplicate(keys, (size_t)g->nkv, &dup_err);
		if (dup)
			rc = lmk_err(LMK_EFORMAT, "%s: key '%.100s' appears more than once", g->path, dup);
		else if (dup_err)
			rc = lmk_err(LMK_ENOMEM, "%s: out of memory", g->path);
		free(keys);
		if (rc)
			return rc;
	}

	g->alignment = DEFAULT_ALIGNMENT;
	const lmk_gguf_kv *al = lmk_gguf_find(g, "general.alignment");
	if (al) {
		int64_t a;
		if (al->type == LMK_GGUF_ARRAY || !is_int_type(al->type) || al->type == LMK_GGUF_BOOL ||
		    load_int(al->type, al->data, &a) != 0)
			return lmk_err(LMK_EFORMAT, "%s: key 'general.alignment': expected an unsigned integer, found %s",
				       g->path, lmk_gguf_vtype_name(al->type));
		if (a <= 0 || (a & (a - 1)) != 0 || a > (1 << 30))
			return lmk_err(LMK_EFORMAT, "%s: key 'general.alignment': expected a power of two up to 2^30, found %lld",
				       g->path, (long long)a);
		g->alignment = (uint64_t)a;
	}

	if (ntensors && !(g->t = calloc(ntensors, sizeof *g->t)))
		return lmk_err(LMK_ENOMEM, "%s: out of memory for %llu tensors", g->path,
			       (unsigned long long)ntensors);
	for (uint64_t i = 0; i < ntensors; i++) {
		lmk_gguf_tensor *t = &g->t[i];
		uint32_t ndim, type;
		g->ntensors = (int)i + 1;
		snprintf(r.what, sizeof r.what, "tensor %llu", (unsigned long long)i);
		if ((rc = rd_name(&r, &t->name, "tensor name")))
			return rc;
		snprintf(r.what, sizeof r.what, "tensor '%.100s'", t->name);
		if ((rc = rd_u32(&r, &ndim, "number of dimensions")))
			return rc;
		if (ndim > 4)
			return lmk_err(LMK_EFORMAT, "%s: %s: expected at most 4 dimensions, found %u", g->path, r.what, ndim);
		t->ndim = (int)ndim;
		for (int j = 0; j < 4; j++)
			t->ne[j] = 1;
		for (uint32_t j = 0; j < ndim; j++) {
			uint64_t ne;
			if ((rc = rd_u64(&r, &ne, "dimension")))
				return rc;
			if (ne > INT64_MAX)
				return lmk_err(LMK_EFORMAT, "%s: %s: dimension %u is %llu, beyond 2^63", g->path, r.what,
					       j, (unsigned long long)ne);
			t->ne[j] = (int64_t)ne;
		}
		if ((rc = rd_u32(&r, &type, "type")) || (rc = rd_u64(&r, &t->offset, "offset")))
			return rc;
		if (lmk_ggml_block_elems((int)type) == 0)
			return lmk_err(LMK_EFORMAT, "%s: %s: unknown ggml type %u", g->path, r.what, type);
		t->type = (int)type;
		/* numel and the row count must fit in int64 */
		int64_t numel = 1, nrows = 1;
		for (int j = 0; j < 4; j++) {
			int64_t ne = t->ne[j];
			if ((ne != 0 && numel > INT64_MAX / ne) || (j > 0 && ne != 0 && nrows > INT64_MAX / ne))
				return lmk_err(LMK_EFORMAT, "%s: %s: shape [%lld, %lld, %lld, %lld] has more than 2^63 elements",
					       g->path, r.what, (long long)t->ne[0], (long long)t->ne[1],
					       (long long)t->ne[2], (long long)t->ne[3]);
			numel *= ne;
			if (j > 0)
				nrows *= ne;
		}
		int be = types[type].elems;
		if (t->ne[0] % be != 0)
			return lmk_err(LMK_EFORMAT, "%s: %s: row length %lld is not a multiple of the %s block size %d",
				       g->path, r.what, (long long)t->ne[0], types[type].name, be);
		uint64_t nblocks = (uint64_t)(t->ne[0] / be), bb = (uint64_t)types[type].bytes;
		if (nblocks > SIZE_MAX / bb || (nrows && nblocks * bb > SIZE_MAX / (uint64_t)nrows))
			return lmk_err(LMK_EFORMAT, "%s: %s: shape [%lld, %lld, %lld, %lld] of %s needs more than 2^64 bytes",
				       g->path, r.what, (long long)t->ne[0], (long long)t->ne[1],
				       (long long)t->ne[2], (long long)t->ne[3], types[type].name);
		uint64_t rowbytes = nblocks * bb;
		t->nbytes = (size_t)(rowbytes * (uint64_t)nrows);
		if (t->offset % g->alignment != 0)
			return lmk_err(LMK_EFORMAT, "%s: %s: offset %llu is not a multiple of the alignment %llu",
				       g->path, r.what, (unsigned long long)t->offset,
				       (unsigned long long)g->alignment);
	}
	{
		char **names = malloc((ntensors ? ntensors : 1) * sizeof *names);
		if (!names)
			return lmk_err(LMK_ENOMEM, "%s: out of memory", g->path);
		for (int i = 0; i < g->ntensors; i++)
			names[i] = g->t[i].name;
		const char *dup = find_duplicate(names, (size_t)g->ntensors, &dup_err);
		if (dup)
			rc = lmk_err(LMK_EFORMAT, "%s: tensor '%.100s' appears more than once", g->path, dup);
		else if (dup_err)
			rc = lmk_err(LMK_ENOMEM, "%s: out of memory", g->path);
		free(names);
		if (rc)
			return rc;
	}

	/* the data section: the aligned position after the infos */
	uint64_t data = r.pos, pad = data % g->alignment;
	if (pad)
		data += g->alignment - pad; /* alignment <= 2^30: no overflow */
	g->data_offset = data;
	if (ntensors && data > g->size)
		return lmk_err(LMK_EFORMAT, "%s: data section: expected it at byte %llu, found the end of the file at %zu",
			       g->path, (unsigned long long)data, g->size);
	for (int i = 0; i < g->ntensors; i++) {
		lmk_gguf_tensor *t = &g->t[i];
		uint64_t room = g->size - data;
		if (t->offset > room || t->nbytes > room - t->offset)
			return lmk_err(LMK_EFORMAT, "%s: tensor '%.100s': expected %zu bytes at data offset %llu, found %llu (file of %zu bytes)",
				       g->path, t->name, t->nbytes, (unsigned long long)t->offset,
				       (unsigned long long)(t->offset > room ? 0 : room - t->offset), g->size);
		t->data = g->map + data + t->offset;
	}
	return 0;
}

static int start(lmk_gguf *g, const char *name)
{
	memset(g, 0, sizeof *g);
	g->path = strdup(name ? name : "<memory>");
	if (!g->path)
		return lmk_err(LMK_ENOMEM, "out of memory");
	return 0;
}

int lmk_gguf_parse(lmk_gguf *g, const void *buf, size_t len, const char *name)
{
	int rc = start(g, name);
	if (rc)
		return rc;
	g->map = buf;
	g->size = len;
	if ((rc = parse(g)))
		lmk_gguf_close(g);
	return rc;
}

int lmk_gguf_open(lmk_gguf *g, const char *path)
{
	struct stat st;
	int rc = start(g, path), fd;

	if (rc)
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
		lmk_gguf_close(g);
		return rc;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= SIZE_MAX) {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m != MAP_FAILED) {
			g->map = m;
			g->size = (size_t)st.st_size;
			g->mapped = 1;
		}
	}
	if (!g->mapped) {
		/* a pipe, a device, or a file that would not map: read it all */
		size_t cap = 1 << 16, len = 0;
		unsigned char *buf = malloc(cap);
		for (;;) {
			if (!buf) {
				close(fd);
				lmk_gguf_close(g);
				return lmk_err(LMK_ENOMEM, "%s: out of memory after %zu bytes", path, len);
			}
			if (len == cap) {
				unsigned char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
				if (!nb) {
					free(buf);
					buf = NULL;
					continue;
				}
				buf = nb;
				cap *= 2;
			}
			ssize_t k = read(fd, buf + len, cap - len);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				rc = lmk_err(LMK_EIO, "%s: read failed after %zu bytes: %s", path, len, strerror(errno));
				free(buf);
				close(fd);
				lmk_gguf_close(g);
				return rc;
			}
			if (k == 0)
				break;
			len += (size_t)k;
		}
		g->heap = buf;
		g->map = buf;
		g->size = len;
	}
	close(fd);
	if ((rc = parse(g)))
		lmk_gguf_close(g);
	return rc;
}

void lmk_gguf_close(lmk_gguf *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->nkv; i++) {
		free(g->kv[i].key);
		free(g->kv[i].strs);
	}
	free(g->kv);
	for (int i = 0; i < g->ntensors; i++)
		free(g->t[i].name);
	free(g->t);
	if (g->mapped)
		munmap((void *)g->map, g->size);
	free(g->heap);
	free(g->path);
	memset(g, 0, sizeof *g);
}

/* ---- lookups ---- */

const lmk_gguf_kv *lmk_gguf_find(const lmk_gguf *g, const char *key)
{
	for (int i = 0; i < g->nkv; i++)
		if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0)
			return &g->kv[i];
	return NULL;
}

const lmk_gguf_tensor *lmk_gguf_find_tensor(const lmk_gguf *g, const char *name)
{
	for (int i = 0; i < g->ntensors; i++)
		if (g->t[i].name && strcmp(g->t[i].name, name) == 0)
			return &g->t[i];
	return NULL;
}

static const lmk_gguf_kv *find_scalar(const lmk_gguf *g, const char *key, const char *want)
{
	const lmk_gguf_kv *kv = lmk_gguf_find(g, key);
	if (!kv)
		lmk_err(LMK_EFORMAT, "%s: key '%s': expected %s, found no such key", g->path, key, want);
	return kv;
}

int lmk_gguf_get_i64(const lmk_gguf *g, const char *key, int64_t *v)
{
	const lmk_gguf_kv *kv = find_scalar(g, key, "an integer");
	if (!kv)
		return LMK_EFORMAT;
	if (kv->type == LMK_GGUF_ARRAY || !is_int_type(kv->type))
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected an integer, found %s", g->path, key,
			       lmk_gguf_vtype_name(kv->type));
	if (load_int(kv->type, kv->data, v) != 0)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': value %llu does not fit in int64", g->path, key,
			       (unsigned long long)ld64(kv->data));
	return 0;
}

int lmk_gguf_get_f32(const lmk_gguf *g, const char *key, float *v)
{
	const lmk_gguf_kv *kv = find_scalar(g, key, "a number");
	if (!kv)
		return LMK_EFORMAT;
	if (kv->type == LMK_GGUF_ARRAY || kv->type == LMK_GGUF_STRING || load_f32(kv->type, kv->data, v) != 0)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected a number, found %s", g->path, key,
			       lmk_gguf_vtype_name(kv->type));
	return 0;
}

int lmk_gguf_get_str(const lmk_gguf *g, const char *key, char **v)
{
	const lmk_gguf_kv *kv = find_scalar(g, key, "a string");
	if (!kv)
		return LMK_EFORMAT;
	if (kv->type != LMK_GGUF_STRING)
		return lmk_err(LMK_EFORMAT, "%s: key '%s': expected a string, found %s", g->path, key,
			       lmk_gguf_vtype_name(kv->type));
	if (!(*v = malloc(kv->strs->len + 1)))
		return lmk_err(LMK_ENOMEM, "%s: key '%s': out of memory", g->path, key);
	memcpy(*v, kv->strs->s, kv->strs->len);
	(*v)[kv->strs->len] = 0;
	return 0;
}

const lmk_gguf_str *lmk_gguf_arr_str(const lmk_gguf_kv *kv, uint64_t i)
{
	if (!kv || kv->type != LMK_GGUF_ARRAY || kv->atype != LMK_GGUF_STRING || i >= kv->n)
		return NULL;
	return &kv->strs[i];
}

int lmk_gguf_arr_i64(const lmk_gguf_kv *kv, uint64_t i, int64_t *v)
{
	if (!kv || kv->type != LMK_GGUF_ARRAY || !is_int_type(kv->atype))
		return lmk_err(LMK_EFORMAT, "key '%s': expected an array of integers, found %s",
			       kv ? kv->key : "?", kv ? lmk_gguf_vtype_name(kv->type) : "nothing");
	if (i >= kv->n)
		return lmk_err(LMK_EFORMAT, "key '%s': expected an index below %llu, found %llu", kv->key,
			       (unsigned long long)kv->n, (unsigned long long)i);
	if (load_int(kv->atype, (const unsigned char *)kv->data + i * vtypes[kv->atype].size, v) != 0)
		return lmk_err(LMK_EFORMAT, "key '%s': element %llu does not fit in int64", kv->key,
			       (unsigned long long)i);
	return 0;
}

int lmk_gguf_arr_f32(const lmk_gguf_kv *kv, uint64_t i, float *v)
{
	if (!kv || kv->type != LMK_GGUF_ARRAY || kv->atype == LMK_GGUF_STRING || kv->atype == LMK_GGUF_ARRAY)
		return lmk_err(LMK_EFORMAT, "key '%s': expected an array of numbers, found %s",
			       kv ? kv->key : "?", kv ? lmk_gguf_vtype_name(kv->type) : "nothing");
	if (i >= kv->n)
		return lmk_err(LMK_EFORMAT, "key '%s': expected an index below %llu, found %llu", kv->key,
			       (unsigned long long)kv->n, (unsigned long long)i);
	if (load_f32(kv->atype, (const unsigned char *)kv->data + i * vtypes[kv->atype].size, v) != 0)
		return lmk_err(LMK_EFORMAT, "key '%s': element %llu is not a number", kv->key,
			       (unsigned long long)i);
	return 0;
}
