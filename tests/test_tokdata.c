/* test_tokdata.c: token data sets: text and token frames (I32, U16, I64,
 * gzip, several frames), the train/validation split, training windows that
 * stay in the training part and are reproducible from the seed, saving and
 * restoring the window position, the evaluation set, and clear errors for
 * bad files. Token frames whose ids are their positions make every window
 * checkable: window s holds s, s+1, ..., s+T. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytetok.h"
#include "err.h"
#include "frame.h"
#include "tokdata.h"

static char dir[] = "/tmp/test_tokdata.XXXXXX";

static const char *path_of(const char *name)
{
	static char buf[4][256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* A frame stream of nf frames holding the ids 0..n-1 (split evenly) as dt. */
static void write_positions(const char *path, int64_t n, lmk_dtype dt, int nf, int flags,
			    const char *kind, const char *vocab)
{
	lmk_writer *w;
	ck_assert_int_eq(lmk_writer_open(&w, path, flags), 0);
	for (int k = 0; k < nf; k++) {
		int64_t lo = n * k / nf, hi = n * (k + 1) / nf, m = hi - lo;
		void *buf = malloc((size_t)(m ? m : 1) * 8);
		lmk_frame f;
		for (int64_t i = 0; i < m; i++) {
			if (dt == LMK_I32)
				((int32_t *)buf)[i] = (int32_t)(lo + i);
			else if (dt == LMK_U16)
				((uint16_t *)buf)[i] = (uint16_t)(lo + i);
			else if (dt == LMK_I64)
				((int64_t *)buf)[i] = lo + i;
			else
				((float *)buf)[i] = (float)(lo + i);
		}
		lmk_frame_init(&f);
		ck_assert_int_eq(lmk_frame_add(&f, "tokens", dt, 1, &m, buf), 0);
		if (kind)
			ck_assert_int_eq(lmk_frame_set_meta(&f, "kind", kind), 0);
		if (vocab)
			ck_assert_int_eq(lmk_frame_set_meta(&f, "vocab_size", vocab), 0);
		ck_assert_int_eq(lmk_writer_put(w, &f), 0);
		lmk_frame_free(&f);
		free(buf);
	}
	ck_assert_int_eq(lmk_writer_close(w), 0);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir, "/tmp/test_tokdata.XXXXXX");
}

START_TEST(test_text_memory)
{
	lmk_tokdata d, e;
	const char *s = "To be, or not to be";

	ck_assert_int_eq(lmk_tokdata_load_text(&d, "mem", s, strlen(s)), 0);
	ck_assert_int_eq(d.n, (int64_t)strlen(s));
	ck_assert_int_eq(d.ntrain, d.n);
	ck_assert_int_eq(d.vocab, LMK_BYTETOK_VOCAB);
	ck_assert_int_eq(d.text, 1);
	for (int64_t i = 0; i < d.n; i++)
		ck_assert_int_eq(d.tok[i], (unsigned char)s[i]);
	/* same tokens, same hash; one byte more, another */
	ck_assert_int_eq(lmk_tokdata_load_text(&e, "mem2", s, strlen(s)), 0);
	ck_assert(d.hash == e.hash);
	lmk_tokdata_free(&e);
	ck_assert_int_eq(lmk_tokdata_load_text(&e, "mem3", s, strlen(s) - 1), 0);
	ck_assert(d.hash != e.hash);
	lmk_tokdata_free(&e);
	lmk_tokdata_free(&d);
}
END_TEST

START_TEST(test_text_file)
{
	lmk_tokdata d;
	/* bytes that are not UTF-8, and a NUL, stay bytes */
	const unsigned char text[] = { 'a', 0, 0xff, 0x80, '\n', 'z' };
	const char *p = path_of("t.txt");

	write_file(p, text, sizeof text);
	ck_assert_int_eq(lmk_tokdata_load(&d, p), 0);
	ck_assert_int_eq(d.n, 6);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(d.tok[i], text[i]);
	ck_assert_str_eq(d.name, p);
	lmk_tokdata_free(&d);
}
END_TEST

/* (n, val_frac, ntrain) */
static const struct { int64_t n; double frac; int64_t ntrain; } splits[] = {
	{ 1, 0.1, 1 }, { 10, 0.1, 9 }, { 1000, 0.1, 900 }, { 1001, 0.1, 901 },
	{ 33, 0.5, 17 }, { 100, 0, 100 }, { 100, 0.999, 1 },
};

START_TEST(test_split)
{
	lmk_tokdata d;
	char *text = calloc((size_t)splits[_i].n, 1);

	ck_assert_int_eq(lmk_tokdata_load_text(&d, "mem", text, (size_t)splits[_i].n), 0);
	ck_assert_int_eq(lmk_tokdata_split(&d, splits[_i].frac), 0);
	ck_assert_int_eq(d.ntrain, splits[_i].ntrain);
	ck_assert_int_eq(lmk_tokdata_split(&d, 1.0), LMK_EINVAL);
	ck_assert_int_eq(lmk_tokdata_split(&d, -0.1), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "mem: validation fraction"));
	lmk_tokdata_free(&d);
	free(text);
}
END_TEST

/* (B, T) for window tests: 1, odd, not a multiple of 8 or 32, realistic. */
static const struct { int B, T; } shapes[] = { { 1, 1 }, { 5, 3 }, { 3, 33 }, { 16, 128 } };

START_TEST(test_windows)
{
	const int B = shapes[_i].B, T = shapes[_i].T;
	const char *p = path_of("pos.safetensors");
	int32_t *x = malloc((size_t)B * T * 4), *y = malloc((size_t)B * T * 4);
	int32_t *x2 = malloc((size_t)B * T * 4), *y2 = malloc((size_t)B * T * 4);
	lmk_tokdata d, e;
	int differs = 0;

	write_positions(p, 5000, LMK_I32, 1, 0, "tokens", NULL);
	ck_assert_int_eq(lmk_tokdata_load(&d, p), 0);
	ck_assert_int_eq(lmk_tokdata_load(&e, p), 0);
	ck_assert_int_eq(lmk_tokdata_split(&d, 0.1), 0);
	ck_assert_int_eq(lmk_tokdata_split(&e, 0.1), 0);
	ck_assert_int_eq(d.ntrain, 4500);
	lmk_tokdata_seed(&d, 42);
	lmk_tokdata_seed(&e, 42);
	for (int it = 0; it < 50; it++) {
		ck_assert_int_eq(lmk_tokdata_train_batch(&d, B, T, x, y), 0);
		ck_assert_int_eq(lmk_tokdata_train_batch(&e, B, T, x2, y2), 0);
		/* the same seed draws the same windows */
		ck_assert(memcmp(x, x2, (size_t)B * T * 4) == 0);
		ck_assert(memcmp(y, y2, (size_t)B * T * 4) == 0);
		for (int b = 0; b < B; b++) {
			int32_t s = x[b * T];
			ck_assert_int_ge(s, 0);
			/* the last target is still a training token */
			ck_assert_int_lt(s + T, d.ntrain);
			for (int t = 0; t < T; t++) {
				ck_assert_int_eq(x[b * T + t], s + t);
				ck_assert_int_eq(y[b * T + t], s + t + 1);
			}
		}
	}
	ck_assert_int_eq(d.windows, 50 * B);
	/* another seed draws other windows */
	lmk_tokdata_seed(&e, 43);
	lmk_tokdata_seed(&d, 42);
	for (int it = 0; it < 5; it++) {
		lmk_tokdata_train_batch(&d, B, T, x, y);
		lmk_tokdata_train_batch(&e, B, T, x2, y2);
		differs |= memcmp(x, x2, (size_t)B * T * 4) != 0;
	}
	ck_assert(differs);
	lmk_tokdata_free(&d);
	lmk_tokdata_free(&e);
	free(x); free(y); free(x2); free(y2);
}
END_TEST

START_TEST(test_every_start_reachable)
{
	/* ntrain 12, T 3: starts 0..8, each drawn at some point */
	lmk_tokdata d;
	int32_t x[3], y[3];
	int seen[16] = { 0 };
	char text[12] = { 0 };

	ck_assert_int_eq(lmk_tokdata_load_text(&d, "mem", text, 12), 0);
	for (int i = 0; i < 12; i++)
		d.tok[i] = i;
	lmk_tokdata_seed(&d, 7);
	for (int it = 0; it < 500; it++) {
		ck_assert_int_eq(lmk_tokdata_train_batch(&d, 1, 3, x, y), 0);
		ck_assert_int_le(x[0], 8);
		seen[x[0]] = 1;
	}
	for (int s = 0; s <= 8; s++)
		ck_assert(seen[s]);
	lmk_tokdata_free(&d);
}
END_TEST

START_TEST(test_save_restore)
{
	const int B = 4, T = 7;
	lmk_tokdata d, e;
	lmk_tokdata_pos pos;
	int32_t x[2][10][28], y[28], x2[28];
	char text[3000];

	for (int i = 0; i < 3000; i++)
		text[i] = (char)(i * 31 % 251);
	ck_assert_int_eq(lmk_tokdata_load_text(&d, "mem", text, sizeof text), 0);
	ck_assert_int_eq(lmk_tokdata_load_text(&e, "mem", text, sizeof text), 0);
	lmk_tokdata_split(&d, 0.1);
	lmk_tokdata_split(&e, 0.1);
	/* odd draws so that the position is not at a Philox block boundary */
	for (int r = 0; r < 3; r++) {
		lmk_tokdata_seed(&d, 99);
		for (int it = 0; it < r + 2; it++)
			lmk_tokdata_train_batch(&d, B - (r == 1), T, x[0][0], y);
		lmk_tokdata_tell(&d, &pos);
		ck_assert(pos.seed == 99);
		for (int it = 0; it < 10; it++)
			lmk_tokdata_train_batch(&d, B, T, x[0][it], y);
		/* e starts elsewhere and is moved to the saved position */
		lmk_tokdata_seed(&e, 5);
		lmk_tokdata_train_batch(&e, 3, T, x2, y);
		lmk_tokdata_seek(&e, &pos);
		ck_assert_int_eq(e.windows, pos.windows);
		for (int it = 0; it < 10; it++) {
			lmk_tokdata_train_batch(&e, B, T, x2, y);
			ck_assert(memcmp(x2, x[0][it], sizeof x2) == 0);
		}
	}
	lmk_tokdata_free(&d);
	lmk_tokdata_free(&e);
}
END_TEST

START_TEST(test_validation)
{
	const int T = 10, B = 4;
	const char *p = path_of("pos.st");
	lmk_tokdata d;
	int32_t x[40], y[40], x2[40], y2[40];

	write_positions(p, 1000, LMK_I64, 3, 0, NULL, NULL);
	ck_assert_int_eq(lmk_tokdata_load(&d, p), 0);
	ck_assert_int_eq(lmk_tokdata_split(&d, 0.1), 0);
	/* 100 validation tokens from 900: windows of 11 at 900, 910, ..., 980 */
	ck_assert_int_eq(lmk_tokdata_val_windows(&d, T), 9);
	ck_assert_int_eq(lmk_tokdata_val_windows(&d, 99), 1);
	ck_assert_int_eq(lmk_tokdata_val_windows(&d, 100), 0);
	/* all 9: three batches, the last with one row */
	ck_assert_int_eq(lmk_tokdata_val_batch(&d, B, T, 9, 0, -1, x, y), 4);
	for (int b = 0; b < 4; b++)
		for (int t = 0; t < T; t++) {
			ck_assert_int_eq(x[b * T + t], 900 + 10 * b + t);
			ck_assert_int_eq(y[b * T + t], 901 + 10 * b + t);
		}
	ck_assert_int_eq(lmk_tokdata_val_batch(&d, B, T, 9, 8, -1, x, y), 1);
	ck_assert_int_eq(x[0], 980);
	ck_assert_int_eq(y[T - 1], 990);
	for (int i = T; i < B * T; i++) {
		ck_assert_int_eq(x[i], 0);
		ck_assert_int_eq(y[i], -1);
	}
	/* 3 of 9, spread evenly: windows 0, 3, 6 */
	ck_assert_int_eq(lmk_tokdata_val_batch(&d, B, T, 3, 0, -7, x, y), 3);
	ck_assert_int_eq(x[0], 900);
	ck_assert_int_eq(x[T], 930);
	ck_assert_int_eq(x[2 * T], 960);
	ck_assert_int_eq(y[3 * T], -7);
	/* the same every time, and training draws do not move it */
	lmk_tokdata_seed(&d, 1);
	lmk_tokdata_train_batch(&d, B, T, x2, y2);
	ck_assert_int_eq(lmk_tokdata_val_batch(&d, B, T, 3, 0, -7, x2, y2), 3);
	ck_assert(memcmp(x, x2, sizeof x) == 0 && memcmp(y, y2, sizeof y) == 0);
	/* three frames were concatenated into one stream */
	ck_assert_int_eq(d.n, 1000);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(d.tok[i], i);
	ck_assert_int_eq(d.vocab, 1000);
	ck_assert_int_eq(d.text, 0);
	lmk_tokdata_free(&d);
}
END_TEST

static const struct { lmk_dtype dt; int gzip; const char *name; } kinds[] = {
	{ LMK_I32, 0, "a.safetensors" }, { LMK_U16, 0, "b.bin" }, { LMK_I64, 1, "c.gz" },
	{ LMK_U16, 1, "d.safetensors" },
};

START_TEST(test_frame_dtypes)
{
	lmk_tokdata d;
	const char *p = path_of(kinds[_i].name);

	write_positions(p, 777, kinds[_i].dt, 2, kinds[_i].gzip ? LMK_WRITE_GZIP : 0, "tokens", "1000");
	ck_assert_int_eq(lmk_tokdata_load(&d, p), 0);
	ck_assert_int_eq(d.n, 777);
	ck_assert_int_eq(d.vocab, 1000);
	for (int i = 0; i < 777; i++)
		ck_assert_int_eq(d.tok[i], i);
	lmk_tokdata_free(&d);
}
END_TEST

static void expect_error(const char *p, int code, const char *msg)
{
	lmk_tokdata d;
	int rc = lmk_tokdata_load(&d, p);
	ck_assert_msg(rc == code, "%s: code %d, expected %d (%s)", p, rc, code, lmk_errmsg());
	ck_assert_msg(strstr(lmk_errmsg(), msg) != NULL, "message '%s' lacks '%s'", lmk_errmsg(), msg);
	ck_assert_ptr_null(d.tok);
}

START_TEST(test_bad_files)
{
	const char *p;
	lmk_frame f;
	int64_t two = 2;
	int64_t neg[2] = { 5, -3 };
	int32_t big[2] = { 1, 1000 };

	expect_error(path_of("missing.txt"), LMK_EIO, "cannot open '");
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "missing.txt': No such file or directory"));

	write_file(p = path_of("empty.txt"), "", 0);
	expect_error(p, LMK_EFORMAT, "empty.txt: no tokens");

	write_positions(p = path_of("kind.safetensors"), 10, LMK_I32, 1, 0, "image", NULL);
	expect_error(p, LMK_EFORMAT, "frame 0: kind 'image', expected 'tokens'");

	write_positions(p = path_of("f32.safetensors"), 10, LMK_F32, 1, 0, "tokens", NULL);
	expect_error(p, LMK_EFORMAT, "tensor 'tokens': dtype F32, expected I32, U16 or I64");

	write_positions(p = path_of("vocab.safetensors"), 10, LMK_I32, 1, 0, "tokens", "5");
	expect_error(p, LMK_EFORMAT, "element 5 is 5, not below vocab_size 5");

	write_positions(p = path_of("badvocab.safetensors"), 10, LMK_I32, 1, 0, "tokens", "many");
	expect_error(p, LMK_EFORMAT, "vocab_size 'many'");

	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_add(&f, "ids", LMK_I64, 1, &two, neg), 0);
	ck_assert_int_eq(lmk_frame_save(p = path_of("noname.safetensors"), &f, 0), 0);
	lmk_frame_free(&f);
	expect_error(p, LMK_EFORMAT, "frame 0: no tensor 'tokens'");

	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_add(&f, "tokens", LMK_I64, 1, &two, neg), 0);
	ck_assert_int_eq(lmk_frame_save(p = path_of("neg.safetensors"), &f, 0), 0);
	lmk_frame_free(&f);
	expect_error(p, LMK_EFORMAT, "element 1 is -3, expected a token id");

	/* a second frame that disagrees on vocab_size */
	{
		lmk_writer *w;
		lmk_frame_init(&f);
		lmk_frame_add(&f, "tokens", LMK_I32, 1, &two, big);
		lmk_frame_set_meta(&f, "vocab_size", "2000");
		ck_assert_int_eq(lmk_writer_open(&w, p = path_of("two.safetensors"), 0), 0);
		ck_assert_int_eq(lmk_writer_put(w, &f), 0);
		lmk_frame_set_meta(&f, "vocab_size", "3000");
		ck_assert_int_eq(lmk_writer_put(w, &f), 0);
		ck_assert_int_eq(lmk_writer_close(w), 0);
		lmk_frame_free(&f);
		expect_error(p, LMK_EFORMAT, "frame 1: vocab_size 3000, but an earlier frame said 2000");
	}

	/* a frame header cut short is the frame reader's error, naming the file */
	write_file(p = path_of("cut.safetensors"), "\x40\0\0\0\0\0\0\0{\"tok", 13);
	expect_error(p, LMK_EFORMAT, "cut.safetensors");
}
END_TEST

START_TEST(test_check)
{
	lmk_tokdata d;
	char text[100] = { 0 };

	ck_assert_int_eq(lmk_tokdata_load_text(&d, "small.txt", text, 100), 0);
	lmk_tokdata_split(&d, 0.1);
	ck_assert_int_eq(lmk_tokdata_check(&d, 89, 0), 0);
	ck_assert_int_eq(lmk_tokdata_check(&d, 90, 0), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "small.txt: 90 training tokens, fewer than the 91"));
	ck_assert_int_eq(lmk_tokdata_check(&d, 9, 1), 0);
	ck_assert_int_eq(lmk_tokdata_check(&d, 10, 1), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "small.txt: 10 validation tokens"));
	int32_t x[100], y[100];
	ck_assert_int_eq(lmk_tokdata_train_batch(&d, 1, 90, x, y), LMK_EINVAL);
	lmk_tokdata_free(&d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tokdata");
	TCase *tc = tcase_create("tokdata");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_text_memory);
	tcase_add_test(tc, test_text_file);
	tcase_add_loop_test(tc, test_split, 0, (int)(sizeof splits / sizeof splits[0]));
	tcase_add_loop_test(tc, test_windows, 0, (int)(sizeof shapes / sizeof shapes[0]));
	tcase_add_test(tc, test_every_start_reachable);
	tcase_add_test(tc, test_save_restore);
	tcase_add_test(tc, test_validation);
	tcase_add_loop_test(tc, test_frame_dtypes, 0, (int)(sizeof kinds / sizeof kinds[0]));
	tcase_add_test(tc, test_bad_files);
	tcase_add_test(tc, test_check);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
