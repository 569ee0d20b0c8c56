/* test_gguf.c: the GGUF reader, dequantization against gguf-py, hostile
 * files, and Llama models from GGUF (tests/fixtures/gguf, written by
 * scripts/make-gguf-fixtures.py; models/smollm2-135m-instruct.gguf when
 * scripts/get-model.sh has fetched it). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "err.h"
#include "frame.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "llama.h"

static char *fixture(const char *name)
{
	static char path[4][512];
	static int k;
	const char *root = getenv("LMK_ROOT");
	k = (k + 1) % 4;
	snprintf(path[k], sizeof path[k], "%s/tests/fixtures/gguf/%s", root ? root : ".", name);
	return path[k];
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *p = malloc(n > 0 ? (size_t)n : 1);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* Parses exactly len bytes of p from a buffer of exactly that size, so that
 * AddressSanitizer sees any read past the end. */
static int parse_exact(const unsigned char *p, size_t len, lmk_gguf *g, unsigned char **keep)
{
	unsigned char *b = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(b);
	if (len)
		memcpy(b, p, len);
	int rc = lmk_gguf_parse(g, b, len, "x.gguf");
	if (rc) {
		free(b);
		*keep = NULL;
	} else {
		*keep = b;
	}
	return rc;
}

static int32_t ulp_key(float f)
{
	int32_t i;
	memcpy(&i, &f, 4);
	return i < 0 ? INT32_MIN - i : i;
}

/* ---- dequantization of every type against gguf.quants.dequantize ---- */

static const struct { const char *name; int type; int64_t ne0; } types[] = {
	{"f32", LMK_GGML_F32, 33},   {"f16", LMK_GGML_F16, 33},   {"bf16", LMK_GGML_BF16, 33},
	{"q8_0", LMK_GGML_Q8_0, 512}, {"q4_0", LMK_GGML_Q4_0, 512}, {"q4_1", LMK_GGML_Q4_1, 512},
	{"q5_0", LMK_GGML_Q5_0, 512}, {"q5_1", LMK_GGML_Q5_1, 512}, {"q2_k", LMK_GGML_Q2_K, 512},
	{"q3_k", LMK_GGML_Q3_K, 512}, {"q4_k", LMK_GGML_Q4_K, 512}, {"q5_k", LMK_GGML_Q5_K, 512},
	{"q6_k", LMK_GGML_Q6_K, 512},
};
#define NTYPES (int)(sizeof types / sizeof types[0])

START_TEST(test_dequantize_type)
{
	char name[64];
	lmk_gguf g;
	size_t explen;

	snprintf(name, sizeof name, "%s.gguf", types[_i].name);
	ck_assert_msg(lmk_gguf_open(&g, fixture(name)) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(g.ntensors, 1);
	const lmk_gguf_tensor *t = lmk_gguf_find_tensor(&g, "w");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->type, types[_i].type);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->ne[0], types[_i].ne0);
	ck_assert_int_eq(t->ne[1], 3);
	ck_assert(lmk_ggml_can_dequantize(t->type));
	int64_t n = lmk_gguf_tensor_numel(t);
	ck_assert_uint_eq(t->nbytes, (size_t)(n / lmk_ggml_block_elems(t->type)) * lmk_ggml_block_bytes(t->type));

	snprintf(name, sizeof name, "%s.f32", types[_i].name);
	float *want = (float *)slurp(fixture(name), &explen);
	ck_assert_uint_eq(explen, (size_t)n * 4);
	float *got = malloc((size_t)n * 4);
	ck_assert_int_eq(lmk_gguf_tensor_f32(t, got), 0);
	int64_t diff = 0, maxulp = 0, first = -1;
	for (int64_t i = 0; i < n; i++)
		if (memcmp(&got[i], &want[i], 4) != 0) {
			int64_t u = llabs((int64_t)ulp_key(got[i]) - ulp_key(want[i]));
			diff++;
			if (first < 0)
				first = i;
			if (u > maxulp)
				maxulp = u;
		}
	ck_assert_msg(diff == 0, "%s: %lld of %lld values differ from gguf-py (max %lld ulp), first at %lld: %a vs %a",
		      types[_i].name, (long long)diff, (long long)n, (long long)maxulp, (long long)first,
		      first >= 0 ? (double)got[first] : 0.0, first >= 0 ? (double)want[first] : 0.0);

	/* bfloat16 output is the float32 output rounded */
	uint16_t *h = malloc((size_t)n * 2);
	ck_assert_int_eq(lmk_gguf_tensor_bf16(t, h), 0);
	int64_t hdiff = 0;
	for (int64_t i = 0; i < n; i++)
		hdiff += h[i] != lmk_f32_to_bf16(want[i]);
	ck_assert_msg(hdiff == 0, "%s: %lld bf16 values differ", types[_i].name, (long long)hdiff);
	free(h);

	/* the row function on an unaligned copy, one block at a time */
	int be = lmk_ggml_block_elems(t->type);
	size_t bb = lmk_ggml_block_bytes(t->type);
	unsigned char *odd = malloc(t->nbytes + 1);
	memcpy(odd + 1, t->data, t->nbytes);
	memset(got, 0xff, (size_t)n * 4);
	int rcs = 0;
	for (int64_t b = 0; b < n / be; b++)
		rcs |= lmk_ggml_dequantize(t->type, odd + 1 + b * bb, got + b * be, be);
	ck_assert_int_eq(rcs, 0);
	ck_assert_int_eq(memcmp(got, want, (size_t)n * 4), 0);
	if (be > 1)
		ck_assert_int_eq(lmk_ggml_dequantize(t->type, odd + 1, got, be + 1), LMK_EINVAL);
	free(odd);
	free(got);
	free(want);
	lmk_gguf_close(&g);
}
END_TEST

START_TEST(test_type_table)
{
	ck_assert_int_eq(lmk_ggml_block_elems(LMK_GGML_Q4_K), 256);
	ck_assert_uint_eq(lmk_ggml_block_bytes(LMK_GGML_Q4_K), 144);
	ck_assert_str_eq(lmk_ggml_type_name(LMK_GGML_Q6_K), "Q6_K");
	ck_assert_int_eq(lmk_ggml_block_elems(99), 0);
	ck_assert_int_eq(lmk_ggml_block_elems(-1), 0);
	ck_assert_str_eq(lmk_ggml_type_name(4), "?"); /* a removed type */
	/* known but not dequantizable: IQ2_XXS */
	ck_assert_int_eq(lmk_ggml_block_elems(16), 256);
	ck_assert(!lmk_ggml_can_dequantize(16));
	float y[256];
	unsigned char x[66] = {0};
	ck_assert_int_eq(lmk_ggml_dequantize(16, x, y, 256), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "IQ2_XXS"));
}
END_TEST

/* ---- metadata ---- */

static void check_meta(const lmk_gguf *g)
{
	int64_t i;
	float f;
	char *s;
	const lmk_gguf_kv *kv;

	ck_assert_uint_eq(g->alignment, 64);
	ck_assert_int_eq(g->nkv, 25);
	ck_assert_int_eq(g->ntensors, 2);
	static const struct { const char *key; int type; int64_t v; } ints[] = {
		{"t.u8", LMK_GGUF_U8, 200}, {"t.i8", LMK_GGUF_I8, -100},
		{"t.u16", LMK_GGUF_U16, 60000}, {"t.i16", LMK_GGUF_I16, -30000},
		{"t.u32", LMK_GGUF_U32, 4000000000LL}, {"t.i32", LMK_GGUF_I32, -2000000000LL},
		{"t.bool", LMK_GGUF_BOOL, 1}, {"t.u64small", LMK_GGUF_U64, 12345678901LL},
		{"t.i64", LMK_GGUF_I64, -(1LL << 62)}, {"general.alignment", LMK_GGUF_U32, 64},
	};
	for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
		kv = lmk_gguf_find(g, ints[k].key);
		ck_assert_msg(kv != NULL, "%s", ints[k].key);
		ck_assert_int_eq(kv->type, ints[k].type);
		ck_assert_uint_eq(kv->n, 1);
		ck_assert_msg(lmk_gguf_get_i64(g, ints[k].key, &i) == 0, "%s", lmk_errmsg());
		ck_assert_int_eq(i, ints[k].v);
	}
	/* 2^63 + 5 does not fit an int64 */
	ck_assert_int_eq(lmk_gguf_get_i64(g, "t.u64", &i), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "t.u64"));
	kv = lmk_gguf_find(g, "t.u64");
	uint64_t u;
	memcpy(&u, kv->data, 8);
	ck_assert(u == (1ULL << 63) + 5);
	ck_assert_int_eq(lmk_gguf_get_f32(g, "t.f32", &f), 0);
	ck_assert(f == 3.25f);
	ck_assert_int_eq(lmk_gguf_get_f32(g, "t.f64", &f), 0);
	ck_assert(f == 2.5f);
	ck_assert_int_eq(lmk_gguf_get_f32(g, "t.i16", &f), 0);
	ck_assert(f == -30000.0f);
	ck_assert_int_eq(lmk_gguf_get_f32(g, "t.str", &f), LMK_EFORMAT);
	ck_assert_int_eq(lmk_gguf_get_i64(g, "t.f32", &i), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected an integer, found FLOAT32"));
	ck_assert_int_eq(lmk_gguf_get_i64(g, "t.absent", &i), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "t.absent"));
	ck_assert_int_eq(lmk_gguf_get_str(g, "t.str", &s), 0);
	ck_assert_str_eq(s, "h\xc3\xa9llo, world");
	free(s);
	ck_assert_int_eq(lmk_gguf_get_str(g, "general.architecture", &s), 0);
	ck_assert_str_eq(s, "fixture");
	free(s);
	ck_assert_int_eq(lmk_gguf_get_str(g, "t.u8", &s), LMK_EFORMAT);
	ck_assert_int_eq(lmk_gguf_get_i64(g, "t.arr_u8", &i), LMK_EFORMAT);

	kv = lmk_gguf_find(g, "t.arr_u8");
	ck_assert_int_eq(kv->type, LMK_GGUF_ARRAY);
	ck_assert_int_eq(kv->atype, LMK_GGUF_U8);
	ck_assert_uint_eq(kv->n, 3);
	ck_assert_int_eq(lmk_gguf_arr_i64(kv, 2, &i), 0);
	ck_assert_int_eq(i, 255);
	ck_assert_int_eq(lmk_gguf_arr_i64(kv, 3, &i), LMK_EFORMAT);
	kv = lmk_gguf_find(g, "t.arr_i32");
	ck_assert_int_eq(kv->atype, LMK_GGUF_I32);
	ck_assert_uint_eq(kv->n, 4);
	static const int64_t want_i32[] = {-1, 0, 7, 2147483647};
	for (int k = 0; k < 4; k++) {
		ck_assert_int_eq(lmk_gguf_arr_i64(kv, (uint64_t)k, &i), 0);
		ck_assert_int_eq(i, want_i32[k]);
	}
	kv = lmk_gguf_find(g, "t.arr_f32");
	ck_assert_int_eq(kv->atype, LMK_GGUF_F32);
	ck_assert_int_eq(lmk_gguf_arr_f32(kv, 1, &f), 0);
	ck_assert(f == -1.5f);
	ck_assert_int_eq(lmk_gguf_arr_i64(kv, 0, &i), LMK_EFORMAT);
	kv = lmk_gguf_find(g, "t.arr_f64");
	ck_assert_int_eq(kv->atype, LMK_GGUF_F64);
	ck_assert_int_eq(lmk_gguf_arr_f32(kv, 0, &f), 0);
	ck_assert(f == 1.25f);
	kv = lmk_gguf_find(g, "t.arr_bool");
	ck_assert_int_eq(kv->atype, LMK_GGUF_BOOL);
	ck_assert_int_eq(lmk_gguf_arr_i64(kv, 0, &i), 0);
	ck_assert_int_eq(i, 1);
	ck_assert_int_eq(lmk_gguf_arr_i64(kv, 1, &i), 0);
	ck_assert_int_eq(i, 0);
	kv = lmk_gguf_find(g, "t.arr_str");
	ck_assert_int_eq(kv->atype, LMK_GGUF_STRING);
	ck_assert_uint_eq(kv->n, 3);
	const lmk_gguf_str *gs = lmk_gguf_arr_str(kv, 0);
	ck_assert(gs->len == 1 && memcmp(gs->s, "a", 1) == 0);
	ck_assert_uint_eq(lmk_gguf_arr_str(kv, 1)->len, 0);
	gs = lmk_gguf_arr_str(kv, 2);
	ck_assert(gs->len == 3 && memcmp(gs->s, "ccc", 3) == 0);
	ck_assert_ptr_null(lmk_gguf_arr_str(kv, 3));
	ck_assert_ptr_null(lmk_gguf_arr_str(lmk_gguf_find(g, "t.arr_u8"), 0));
	static const char *nested[] = {"t.nested", "t.nested_str", "t.nested3"};
	for (int k = 0; k < 3; k++) {
		kv = lmk_gguf_find(g, nested[k]);
		ck_assert_ptr_nonnull(kv);
		ck_assert_int_eq(kv->type, LMK_GGUF_ARRAY);
		ck_assert_int_eq(kv->atype, LMK_GGUF_ARRAY);
		ck_assert_uint_eq(kv->n, 2);
		ck_assert_int_eq(lmk_gguf_arr_i64(kv, 0, &i), LMK_EFORMAT);
	}
	/* the key after the nested arrays proves they were skipped exactly */
	ck_assert_int_eq(lmk_gguf_get_str(g, "t.after", &s), 0);
	ck_assert_str_eq(s, "end");
	free(s);

	const lmk_gguf_tensor *a = lmk_gguf_find_tensor(g, "a"), *b = lmk_gguf_find_tensor(g, "b");
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_null(lmk_gguf_find_tensor(g, "c"));
	ck_assert_int_eq(a->type, LMK_GGML_F32);
	ck_assert_int_eq(a->ndim, 1);
	ck_assert_int_eq(a->ne[0], 5);
	ck_assert_int_eq(b->type, LMK_GGML_F16);
	ck_assert_int_eq(b->ne[0], 3);
	ck_assert_int_eq(b->ne[1], 2);
	ck_assert_uint_eq(g->data_offset % 64, 0);
	ck_assert_uint_eq(((const unsigned char *)a->data - g->map) % 64, 0);
	ck_assert_uint_eq(b->offset % 64, 0);
	float av[5], bv[6];
	ck_assert_int_eq(lmk_gguf_tensor_f32(a, av), 0);
	ck_assert_int_eq(lmk_gguf_tensor_f32(b, bv), 0);
	for (int k = 0; k < 5; k++)
		ck_assert(av[k] == (float)k);
	static const float want_b[] = {1, 2, 3, -4, 0.5f, 65504};
	for (int k = 0; k < 6; k++)
		ck_assert(bv[k] == want_b[k]);
}

START_TEST(test_meta)
{
	lmk_gguf g;
	ck_assert_msg(lmk_gguf_open(&g, fixture("meta.gguf")) == 0, "%s", lmk_errmsg());
	ck_assert(g.mapped);
	ck_assert_uint_eq(g.version, 3);
	check_meta(&g);
	lmk_gguf_close(&g);
	lmk_gguf_close(&g); /* closing twice is harmless */
}
END_TEST

START_TEST(test_versions)
{
	size_t len;
	unsigned char *p = slurp(fixture("meta.gguf"), &len), *keep;
	lmk_gguf g;

	/* version 2 has the layout of version 3 */
	p[4] = 2;
	ck_assert_msg(parse_exact(p, len, &g, &keep) == 0, "%s", lmk_errmsg());
	ck_assert_uint_eq(g.version, 2);
	check_meta(&g);
	lmk_gguf_close(&g);
	free(keep);
	p[4] = 1;
	ck_assert_int_eq(parse_exact(p, len, &g, &keep), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "x.gguf: GGUF version 1 is not supported"));
	p[4] = 4;
	ck_assert_int_eq(parse_exact(p, len, &g, &keep), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected GGUF version 2 or 3, found 4"));
	p[4] = 0;
	p[7] = 3;
	ck_assert_int_eq(parse_exact(p, len, &g, &keep), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "big-endian"));
	p[4] = 3;
	p[7] = 0;
	p[3] = 'G';
	ck_assert_int_eq(parse_exact(p, len, &g, &keep), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "x.gguf: not a GGUF file"));
	free(p);
}
END_TEST

/* Reading through a pipe takes the read() path instead of mmap. */
START_TEST(test_open_pipe)
{
	size_t len;
	unsigned char *p = slurp(fixture("meta.gguf"), &len);
	int fd[2];
	char path[64];
	lmk_gguf g;

	ck_assert_int_eq(pipe(fd), 0);
	ck_assert_int_eq(write(fd[1], p, len), (ssize_t)len);
	close(fd[1]);
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd[0]);
	ck_assert_msg(lmk_gguf_open(&g, path) == 0, "%s", lmk_errmsg());
	ck_assert(!g.mapped);
	check_meta(&g);
	lmk_gguf_close(&g);
	close(fd[0]);
	free(p);

	ck_assert_int_eq(lmk_gguf_open(&g, "/nonexistent/x.gguf"), LMK_EIO);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "cannot open '/nonexistent/x.gguf'"));
	ck_assert_int_eq(lmk_gguf_open(&g, "/dev/null"), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "/dev/null: not a GGUF file"));
}
END_TEST

/* Every cut of a valid file fails cleanly until all tensor data is there. */
static void check_truncations(const char *name, size_t stride_after)
{
	size_t len;
	unsigned char *p = slurp(fixture(name), &len), *keep;
	lmk_gguf g;

	ck_assert_msg(parse_exact(p, len, &g, &keep) == 0, "%s", lmk_errmsg());
	size_t need = 0, header = (size_t)g.data_offset;
	for (int i = 0; i < g.ntensors; i++) {
		size_t end = (size_t)g.data_offset + g.t[i].offset + g.t[i].nbytes;
		if (end > need)
			need = end;
	}
	lmk_gguf_close(&g);
	free(keep);
	for (size_t n = 0; n < len; n += n < header ? 1 : stride_after) {
		lmk_err_clear();
		int rc = parse_exact(p, n, &g, &keep);
		if (n < need) {
			if (rc != LMK_EFORMAT || strncmp(lmk_errmsg(), "x.gguf: ", 8) != 0)
				ck_abort_msg("%s cut at %zu: rc %d: %s", name, n, rc, lmk_errmsg());
		} else {
			/* only alignment padding after the last tensor is missing */
			if (rc != 0)
				ck_abort_msg("%s cut at %zu: %s", name, n, lmk_errmsg());
			lmk_gguf_close(&g);
			free(keep);
		}
	}
	free(p);
}

START_TEST(test_truncated)
{
	check_truncations("meta.gguf", 1);
	check_truncations("q6_k.gguf", 1);
	check_truncations("q4_0.gguf", 1);
	check_truncations("tiny-llama.gguf", 7);
}
END_TEST

/* ---- hand-built hostile files ---- */

typedef struct { unsigned char p[4096]; size_t n; } bld;

static void put(bld *b, const void *x, size_t n)
{
	ck_assert(b->n + n <= sizeof b->p);
	memcpy(b->p + b->n, x, n);
	b->n += n;
}
static void u32(bld *b, uint32_t v) { put(b, &v, 4); }
static void u64(bld *b, uint64_t v) { put(b, &v, 8); }
static void str(bld *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void head(bld *b, uint64_t nt, uint64_t nkv)
{
	b->n = 0;
	put(b, "GGUF", 4);
	u32(b, 3);
	u64(b, nt);
	u64(b, nkv);
}
static void kv_u32(bld *b, const char *k, uint32_t v) { str(b, k); u32(b, LMK_GGUF_U32); u32(b, v); }
static void tinfo(bld *b, const char *name, uint32_t ndim, const uint64_t *ne, uint32_t type, uint64_t off)
{
	str(b, name);
	u32(b, ndim);
	for (uint32_t i = 0; i < ndim; i++)
		u64(b, ne[i]);
	u32(b, type);
	u64(b, off);
}
static void pad(bld *b, size_t align, size_t extra)
{
	while (b->n % align)
		b->p[b->n++] = 0;
	memset(b->p + b->n, 0x3c, extra); /* finite f16/f32 bytes */
	b->n += extra;
}

/* Parses b and requires failure with code and a message containing what. */
static void refuse(const bld *b, int code, const char *what)
{
	lmk_gguf g;
	unsigned char *keep;
	lmk_err_clear();
	int rc = parse_exact(b->p, b->n, &g, &keep);
	if (rc == 0) {
		lmk_gguf_close(&g);
		free(keep);
	}
	ck_assert_msg(rc == code, "expected %d for '%s', found %d (%s)", code, what, rc, lmk_errmsg());
	ck_assert_msg(strstr(lmk_errmsg(), what) != NULL, "expected '%s' in '%s'", what, lmk_errmsg());
}

static void accept(const bld *b)
{
	lmk_gguf g;
	unsigned char *keep;
	ck_assert_msg(parse_exact(b->p, b->n, &g, &keep) == 0, "%s", lmk_errmsg());
	lmk_gguf_close(&g);
	free(keep);
}

START_TEST(test_hostile_counts)
{
	bld b;

	/* 2^60 tensors or keys in 100 bytes: refused before allocating */
	head(&b, 1ULL << 60, 0);
	pad(&b, 1, 76);
	refuse(&b, LMK_EFORMAT, "tensor count 1152921504606846976 is impossible");
	head(&b, 0, 1ULL << 60);
	pad(&b, 1, 76);
	refuse(&b, LMK_EFORMAT, "key count 1152921504606846976 is impossible");
	head(&b, UINT64_MAX, UINT64_MAX);
	refuse(&b, LMK_EFORMAT, "impossible");
	/* array and string lengths beyond the file */
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_U8);
	u64(&b, 1ULL << 60);
	refuse(&b, LMK_EFORMAT, "key 'k': array of 1152921504606846976 UINT8");
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_STRING);
	u64(&b, 1ULL << 59);
	pad(&b, 1, 64);
	refuse(&b, LMK_EFORMAT, "array of 576460752303423488 STRING");
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_U64);
	u64(&b, UINT64_MAX / 4);
	refuse(&b, LMK_EFORMAT, "array of");
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_STRING);
	u64(&b, 1ULL << 60);
	pad(&b, 1, 20);
	refuse(&b, LMK_EFORMAT, "key 'k': string of 1152921504606846976 bytes");
	head(&b, 0, 1);
	u64(&b, UINT64_MAX);
	pad(&b, 1, 20);
	refuse(&b, LMK_EFORMAT, "key 0: key of 18446744073709551615 bytes");
	head(&b, 1, 0);
	u64(&b, 1ULL << 62);
	pad(&b, 1, 40);
	refuse(&b, LMK_EFORMAT, "tensor 0: tensor name of 4611686018427387904 bytes");
	/* a nested array of many empty arrays is bounded by the file too */
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_ARRAY);
	u64(&b, 1ULL << 40);
	refuse(&b, LMK_EFORMAT, "array of 1099511627776 ARRAY");
}
END_TEST

START_TEST(test_hostile_keys)
{
	bld b;

	head(&b, 0, 2);
	kv_u32(&b, "a.b", 1);
	kv_u32(&b, "a.b", 2);
	refuse(&b, LMK_EFORMAT, "x.gguf: key 'a.b' appears more than once");
	head(&b, 0, 3);
	kv_u32(&b, "z", 1);
	kv_u32(&b, "y", 1);
	kv_u32(&b, "z", 2);
	refuse(&b, LMK_EFORMAT, "key 'z' appears more than once");
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, 13);
	u32(&b, 0);
	refuse(&b, LMK_EFORMAT, "key 'k': unknown value type 13");
	head(&b, 0, 1);
	str(&b, "k");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, 77);
	u64(&b, 0);
	refuse(&b, LMK_EFORMAT, "key 'k': unknown array element type 77");
	head(&b, 0, 1);
	str(&b, "");
	u32(&b, LMK_GGUF_U8);
	u32(&b, 0);
	refuse(&b, LMK_EFORMAT, "expected a non-empty key");
	head(&b, 0, 1);
	u64(&b, 3);
	put(&b, "a\0b", 3);
	u32(&b, LMK_GGUF_U8);
	u32(&b, 0);
	refuse(&b, LMK_EFORMAT, "key contains a NUL byte");
	/* nesting beyond the bound */
	head(&b, 0, 1);
	str(&b, "deep");
	u32(&b, LMK_GGUF_ARRAY);
	for (int d = 0; d < LMK_GGUF_MAX_DEPTH + 2; d++) {
		u32(&b, LMK_GGUF_ARRAY);
		u64(&b, 1);
	}
	u32(&b, LMK_GGUF_U8);
	u64(&b, 0);
	refuse(&b, LMK_EFORMAT, "key 'deep': arrays nested deeper than 8");
	/* nesting within the bound, and empty arrays, are fine */
	head(&b, 0, 3);
	str(&b, "deep");
	u32(&b, LMK_GGUF_ARRAY);
	for (int d = 0; d < LMK_GGUF_MAX_DEPTH - 1; d++) {
		u32(&b, LMK_GGUF_ARRAY);
		u64(&b, 1);
	}
	u32(&b, LMK_GGUF_U8);
	u64(&b, 2);
	put(&b, "\1\2", 2);
	str(&b, "empty");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_STRING);
	u64(&b, 0);
	str(&b, "empty2");
	u32(&b, LMK_GGUF_ARRAY);
	u32(&b, LMK_GGUF_F64);
	u64(&b, 0);
	accept(&b);
	/* bad alignments */
	static const uint32_t bad[] = {0, 3, 48, 0x80000000u};
	for (int i = 0; i < 4; i++) {
		head(&b, 0, 1);
		kv_u32(&b, "general.alignment", bad[i]);
		refuse(&b, LMK_EFORMAT, "key 'general.alignment': expected a power of two");
	}
	head(&b, 0, 1);
	str(&b, "general.alignment");
	u32(&b, LMK_GGUF_STRING);
	str(&b, "32");
	refuse(&b, LMK_EFORMAT, "key 'general.alignment': expected an unsigned integer, found STRING");
	head(&b, 0, 1);
	kv_u32(&b, "general.alignment", 1);
	accept(&b);
}
END_TEST

START_TEST(test_hostile_tensors)
{
	bld b;
	uint64_t ne[4] = {32, 2, 1, 1};

	/* a valid one first */
	head(&b, 2, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_Q4_0, 0);
	tinfo(&b, "v", 1, ne, LMK_GGML_F32, 64);
	pad(&b, 32, 64 + 128);
	accept(&b);

	head(&b, 2, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_Q4_0, 0);
	tinfo(&b, "w", 1, ne, LMK_GGML_F32, 64);
	pad(&b, 32, 64 + 128);
	refuse(&b, LMK_EFORMAT, "x.gguf: tensor 'w' appears more than once");

	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_F32, 16);
	pad(&b, 32, 512);
	refuse(&b, LMK_EFORMAT, "tensor 'w': offset 16 is not a multiple of the alignment 32");

	head(&b, 1, 1);
	kv_u32(&b, "general.alignment", 8);
	tinfo(&b, "w", 2, ne, LMK_GGML_F32, 16);
	pad(&b, 8, 512);
	accept(&b);

	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_F32, 1ULL << 40);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': expected 256 bytes at data offset 1099511627776");

	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_F32, 32);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': expected 256 bytes at data offset 32, found 224");

	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, LMK_GGML_F32, UINT64_MAX - 31);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': expected 256 bytes");

	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, 99, 0);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': unknown ggml type 99");
	head(&b, 1, 0);
	tinfo(&b, "w", 2, ne, 4, 0); /* Q4_2, removed from ggml */
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': unknown ggml type 4");

	uint64_t big[4] = {1ULL << 32, 1ULL << 32, 1ULL << 32, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 3, big, LMK_GGML_F32, 0);
	pad(&b, 32, 0);
	refuse(&b, LMK_EFORMAT, "tensor 'w': shape [4294967296, 4294967296, 4294967296, 1] has more than 2^63 elements");
	uint64_t huge[4] = {1ULL << 63, 1, 1, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 1, huge, LMK_GGML_F32, 0);
	refuse(&b, LMK_EFORMAT, "tensor 'w': dimension 0 is 9223372036854775808, beyond 2^63");
	uint64_t bytes[4] = {1ULL << 62, 1, 1, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 1, bytes, LMK_GGML_F32, 0);
	refuse(&b, LMK_EFORMAT, "needs more than 2^64 bytes");
	uint64_t zrow[4] = {0, 1ULL << 62, 1ULL << 62, 1ULL << 62};
	head(&b, 1, 0);
	tinfo(&b, "w", 4, zrow, LMK_GGML_F32, 0);
	refuse(&b, LMK_EFORMAT, "more than 2^63 elements");
	uint64_t zero[4] = {0, 5, 1, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 2, zero, LMK_GGML_Q4_K, 0);
	pad(&b, 32, 0);
	accept(&b); /* an empty tensor is legal */

	uint64_t odd[4] = {33, 2, 1, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 2, odd, LMK_GGML_Q4_0, 0);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 'w': row length 33 is not a multiple of the Q4_0 block size 32");

	uint64_t five[5] = {1, 1, 1, 1, 1};
	head(&b, 1, 0);
	tinfo(&b, "w", 5, five, LMK_GGML_F32, 0);
	refuse(&b, LMK_EFORMAT, "tensor 'w': expected at most 4 dimensions, found 5");

	head(&b, 1, 0);
	tinfo(&b, "", 2, ne, LMK_GGML_F32, 0);
	pad(&b, 32, 256);
	refuse(&b, LMK_EFORMAT, "tensor 0: expected a non-empty tensor name");

	/* the data section itself past the end */
	head(&b, 1, 0);
	tinfo(&b, "w", 2, zero, LMK_GGML_F32, 0);
	refuse(&b, LMK_EFORMAT, "data section: expected it at byte 96, found the end of the file at 65");
}
END_TEST

/* ---- Llama models from GGUF ---- */

static void compare_with_hf(lmk_llama *m, int tied)
{
	lmk_frame f;
	int checked = 0;

	ck_assert_msg(lmk_frame_load(fixture("tiny-llama.safetensors"), &f) == 0, "%s", lmk_errmsg());
	for (int i = 0; i < f.ntensors; i++) {
		const lmk_ftensor *ft = &f.t[i];
		if (tied && (strstr(ft->name, ".bias") || strcmp(ft->name, "lm_head.weight") == 0))
			continue;
		lmk_tensor *p = lmk_params_find(&m->params, ft->name);
		ck_assert_msg(p != NULL, "no parameter %s", ft->name);
		ck_assert_int_eq(p->n, lmk_ftensor_numel(ft));
		ck_assert_int_eq(ft->dtype, LMK_F32);
		ck_assert_msg(memcmp(p->data, ft->data, ft->nbytes) == 0, "%s differs", ft->name);
		checked++;
	}
	ck_assert_int_eq(checked, m->params.nt);
	if (tied)
		ck_assert_int_eq(memcmp(m->lm_head->data, lmk_frame_find(&f, "model.embed_tokens.weight")->data,
					37 * 32 * 4), 0);
	lmk_frame_free(&f);
}

START_TEST(test_llama_tiny)
{
	lmk_gguf g;
	lmk_llama_config cfg;
	lmk_llama m;

	ck_assert_msg(lmk_gguf_open(&g, fixture("tiny-llama.gguf")) == 0, "%s", lmk_errmsg());
	ck_assert_msg(lmk_gguf_llama_config(&g, &cfg) == 0, "%s", lmk_errmsg());
	ck_assert_str_eq(cfg.model_type, "llama");
	ck_assert_int_eq(cfg.hidden_size, 32);
	ck_assert_int_eq(cfg.intermediate_size, 40);
	ck_assert_int_eq(cfg.num_hidden_layers, 2);
	ck_assert_int_eq(cfg.num_attention_heads, 4);
	ck_assert_int_eq(cfg.num_key_value_heads, 2);
	ck_assert_int_eq(cfg.head_dim, 8);
	ck_assert_int_eq(cfg.vocab_size, 37);
	ck_assert_int_eq(cfg.max_position_embeddings, 64);
	ck_assert(cfg.rms_norm_eps == 1e-5f);
	ck_assert(cfg.rope_theta == 10000.0f);
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_NONE);
	ck_assert_int_eq(cfg.tie_word_embeddings, 0);
	ck_assert_int_eq(cfg.attention_bias, 1);
	ck_assert_int_eq(cfg.mlp_bias, 0);
	ck_assert_int_eq(cfg.bos_token_id, 1);
	ck_assert_int_eq(cfg.neos, 1);
	ck_assert_int_eq(cfg.eos_token_id[0], 2);
	ck_assert_msg(lmk_gguf_llama_load(&g, &m, 0) == 0, "%s", lmk_errmsg());
	compare_with_hf(&m, 0);
	lmk_llama_free(&m);
	lmk_gguf_close(&g);

	ck_assert_msg(lmk_gguf_open(&g, fixture("tiny-llama-tied.gguf")) == 0, "%s", lmk_errmsg());
	ck_assert_msg(lmk_gguf_llama_load(&g, &m, 1) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(m.cfg.tie_word_embeddings, 1);
	ck_assert_int_eq(m.cfg.attention_bias, 0);
	ck_assert_ptr_nonnull(m.params.grad);
	compare_with_hf(&m, 1);
	lmk_llama_free(&m);
	lmk_gguf_close(&g);
}
END_TEST

/* Renames one tensor in the file image (same length) and loads. */
static void load_renamed(const char *from, const char *to, int code, const char *what)
{
	size_t len;
	unsigned char *p = slurp(fixture("tiny-llama.gguf"), &len), *keep;
	lmk_gguf g;
	lmk_llama m;

	ck_assert_uint_eq(strlen(from), strlen(to));
	unsigned char *hit = memmem(p, len, from, strlen(from));
	ck_assert_ptr_nonnull(hit);
	memcpy(hit, to, strlen(to));
	ck_assert_msg(parse_exact(p, len, &g, &keep) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(lmk_gguf_llama_load(&g, &m, 0), code);
	ck_assert_msg(strstr(lmk_errmsg(), what) != NULL, "expected '%s' in '%s'", what, lmk_errmsg());
	if (code == 0)
		lmk_llama_free(&m);
	lmk_gguf_close(&g);
	free(keep);
	free(p);
}

START_TEST(test_llama_refused)
{
	lmk_gguf g;
	lmk_llama_config cfg;

	load_renamed("blk.1.ffn_up.weight", "blk.1.ffn_xx.weight", LMK_EFORMAT,
		     "x.gguf: tensor 'blk.1.ffn_up.weight': expected for model.layers.1.mlp.up_proj.weight, found no such tensor");
	load_renamed("llama.block_count", "llama.block_cnnnt", LMK_EFORMAT,
		     "key 'llama.block_count': expected an integer, found no such key");
	load_renamed("general.architecture", "general.architecturf", LMK_EFORMAT,
		     "key 'general.architecture': expected a string, found no such key");
	load_renamed("tiny-llama", "tiny-llama", 0, ""); /* sanity: the unchanged file loads */

	ck_assert_int_eq(lmk_gguf_open(&g, fixture("meta.gguf")), 0);
	ck_assert_int_eq(lmk_gguf_llama_config(&g, &cfg), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "expected 'llama', found 'fixture'"));
	lmk_gguf_close(&g);
}
END_TEST

START_TEST(test_llama3_rope)
{
	size_t len;
	unsigned char *p = slurp(fixture("llama3-rope.gguf"), &len), *keep;
	lmk_gguf g;
	lmk_llama_config cfg;

	ck_assert_msg(parse_exact(p, len, &g, &keep) == 0, "%s", lmk_errmsg());
	ck_assert_msg(lmk_gguf_llama_config(&g, &cfg) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(cfg.rope_scaling.type, LMK_ROPE_LLAMA3);
	ck_assert(cfg.rope_scaling.factor == 8.0f);
	ck_assert(cfg.rope_scaling.low_freq_factor == 1.0f);
	ck_assert(cfg.rope_scaling.high_freq_factor == 4.0f);
	ck_assert_int_eq(cfg.rope_scaling.original_max_pos, 64);
	ck_assert_int_eq(cfg.max_position_embeddings, 512);
	const lmk_gguf_tensor *t = lmk_gguf_find_tensor(&g, "rope_freqs.weight");
	size_t at = (size_t)((const unsigned char *)t->data - g.map);
	/* our llama3 rope gives the frequencies llama.cpp divides by the factors */
	float rf[4];
	lmk_rope r;
	ck_assert_int_eq(lmk_gguf_tensor_f32(t, rf), 0);
	ck_assert_int_eq(lmk_rope_init(&r, 8, 10000.0f, &cfg.rope_scaling), 0);
	for (int i = 0; i < 4; i++) {
		double want = pow(10000.0, -2.0 * i / 8) / rf[i];
		ck_assert_msg(fabs(r.inv_freq[i] - want) <= 1e-6 * want, "inv_freq[%d] %g vs %g", i,
			      (double)r.inv_freq[i], want);
	}
	lmk_rope_free(&r);
	lmk_gguf_close(&g);
	free(keep);

	/* a factor off the llama 3 curve is refused, not approximated */
	float f;
	memcpy(&f, p + at + 4, 4);
	f *= 1.01f;
	memcpy(p + at + 4, &f, 4);
	ck_assert_int_eq(parse_exact(p, len, &g, &keep), 0);
	ck_assert_int_eq(lmk_gguf_llama_config(&g, &cfg), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "x.gguf: tensor 'rope_freqs.weight': factor 1 is"));
	lmk_gguf_close(&g);
	free(keep);
	free(p);
}
END_TEST

#define SMOL "models/smollm2-135m-instruct.gguf"

START_TEST(test_smollm2)
{
	char path[512];
	const char *root = getenv("LMK_ROOT");
	lmk_gguf g;
	lmk_llama_config cfg;
	lmk_llama m;

	snprintf(path, sizeof path, "%s/%s", root ? root : ".", SMOL);
	if (access(path, R_OK) != 0) {
		printf("test_gguf: skipped smollm2: %s not found (scripts/get-model.sh smollm2-135m-instruct)\n", SMOL);
		return;
	}
	ck_assert_msg(lmk_gguf_open(&g, path) == 0, "%s", lmk_errmsg());
	ck_assert_uint_eq(g.version, 3);
	ck_assert_int_eq(g.ntensors, 272);
	ck_assert_msg(lmk_gguf_llama_config(&g, &cfg) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(cfg.hidden_size, 576);
	ck_assert_int_eq(cfg.num_hidden_layers, 30);
	ck_assert_int_eq(cfg.num_attention_heads, 9);
	ck_assert_int_eq(cfg.num_key_value_heads, 3);
	ck_assert_int_eq(cfg.head_dim, 64);
	ck_assert_int_eq(cfg.intermediate_size, 1536);
	ck_assert_int_eq(cfg.vocab_size, 49152);
	ck_assert_int_eq(cfg.max_position_embeddings, 8192);
	ck_assert(cfg.rope_theta == 100000.0f);
	ck_assert(cfg.rms_norm_eps == 1e-5f);
	ck_assert_int_eq(cfg.tie_word_embeddings, 1);
	ck_assert_int_eq(cfg.attention_bias, 0);
	ck_assert_int_eq(cfg.bos_token_id, 1);
	ck_assert_int_eq(cfg.eos_token_id[0], 2);
	ck_assert_uint_eq(lmk_gguf_find(&g, "tokenizer.ggml.tokens")->n, 49152);

	int ntype[64] = {0};
	float *buf = malloc((size_t)49152 * 576 * sizeof *buf);
	ck_assert_ptr_nonnull(buf);
	for (int i = 0; i < g.ntensors; i++) {
		const lmk_gguf_tensor *t = &g.t[i];
		int64_t n = lmk_gguf_tensor_numel(t);
		ck_assert_int_le(n, (int64_t)49152 * 576);
		ck_assert_msg(lmk_gguf_tensor_f32(t, buf) == 0, "%s", lmk_errmsg());
		/* no ck_assert per element: each one is a write to Check's pipe */
		int64_t bad = -1;
		for (int64_t k = 0; k < n && bad < 0; k++)
			if (!isfinite(buf[k]))
				bad = k;
		ck_assert_msg(bad < 0, "%s[%lld] = %g", t->name, (long long)bad, bad < 0 ? 0.0 : (double)buf[bad]);
		ntype[t->type & 63]++;
	}
	free(buf);
	ck_assert_int_eq(ntype[LMK_GGML_Q4_1], 210);
	ck_assert_int_eq(ntype[LMK_GGML_F32], 61);
	ck_assert_int_eq(ntype[LMK_GGML_Q8_0], 1);

	ck_assert_msg(lmk_gguf_llama_load(&g, &m, 0) == 0, "%s", lmk_errmsg());
	ck_assert_ptr_eq(m.lm_head, m.wte);
	ck_assert_int_eq(m.wte->shape[0], 49152);
	ck_assert_int_eq(m.wte->shape[1], 576);
	printf("test_gguf: smollm2: %d tensors (%d Q4_1, %d Q8_0, %d F32) finite, loaded as a llama of %zu floats\n",
	       g.ntensors, ntype[LMK_GGML_Q4_1], ntype[LMK_GGML_Q8_0], ntype[LMK_GGML_F32], m.params.n);
	fflush(stdout);
	lmk_llama_free(&m);
	lmk_gguf_close(&g);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("dequantize");
	tcase_add_loop_test(tc, test_dequantize_type, 0, NTYPES);
	tcase_add_test(tc, test_type_table);
	suite_add_tcase(s, tc);
	tc = tcase_create("metadata");
	tcase_add_test(tc, test_meta);
	tcase_add_test(tc, test_versions);
	tcase_add_test(tc, test_open_pipe);
	suite_add_tcase(s, tc);
	tc = tcase_create("hostile");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_hostile_counts);
	tcase_add_test(tc, test_hostile_keys);
	tcase_add_test(tc, test_hostile_tensors);
	suite_add_tcase(s, tc);
	tc = tcase_create("llama");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_llama_tiny);
	tcase_add_test(tc, test_llama_refused);
	tcase_add_test(tc, test_llama3_rope);
	tcase_add_test(tc, test_smollm2);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
