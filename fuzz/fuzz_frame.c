/* fuzz_frame.c: libFuzzer target for tensor frames. The input is parsed
 * from memory (lmk_frame_parse) and read as a stream through a pipe (or a
 * memfd when it is more than a pipe holds), which also reaches the gzip
 * path when the input starts with the gzip magic. Every frame that parses is
 * written out (plain or gzip) and read back, and must come back the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>

#include "err.h"
#include "frame.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int same(const lmk_frame *a, const lmk_frame *b)
{
	if (a->ntensors != b->ntensors || a->nmeta != b->nmeta)
		return 0;
	for (int i = 0; i < a->ntensors; i++) {
		const lmk_ftensor *x = &a->t[i], *y = &b->t[i];
		if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim ||
		    x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes))
			return 0;
		for (int d = 0; d < x->ndim; d++)
			if (x->shape[d] != y->shape[d])
				return 0;
	}
	for (int i = 0; i < a->nmeta; i++)
		if (strcmp(a->key[i], b->key[i]) || strcmp(a->val[i], b->val[i]))
			return 0;
	return 1;
}

/* Every byte a frame points at must be readable (ASan checks). */
static unsigned touch(const lmk_frame *f)
{
	unsigned h = 0;
	for (int i = 0; i < f->ntensors; i++) {
		const unsigned char *p = f->t[i].data;
		CHECK(p != NULL);
		CHECK(lmk_ftensor_numel(&f->t[i]) * (int64_t)lmk_dtype_size(f->t[i].dtype) ==
		      (int64_t)f->t[i].nbytes);
		for (size_t k = 0; k < f->t[i].nbytes; k++)
			h = h * 31 + p[k];
	}
	return h;
}

static void roundtrip(const lmk_frame *f, int flags)
{
	lmk_writer *w;
	lmk_reader *r;
	lmk_frame g, e;
	int fd = memfd_create("fuzz_frame_out", 0);
	CHECK(fd >= 0);
	CHECK(lmk_writer_fdopen(&w, dup(fd), "out", flags) == 0);
	CHECK(lmk_writer_put(w, f) == 0);
	CHECK(lmk_writer_close(w) == 0);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	CHECK(lmk_reader_fdopen(&r, fd, "out") == 0);
	CHECK(lmk_reader_next(r, &g) == 1);
	CHECK(same(f, &g));
	CHECK(lmk_reader_next(r, &e) == 0);
	lmk_reader_close(r);
	lmk_frame_free(&g);
}

static int input_fd(const uint8_t *data, size_t size)
{
	int p[2];
	if (size <= 32768 && pipe(p) == 0) {
		/* small enough for the pipe's buffer: written whole, then read */
		size_t n = 0;
		while (n < size) {
			ssize_t k = write(p[1], data + n, size - n);
			CHECK(k > 0);
			n += (size_t)k;
		}
		close(p[1]);
		return p[0];
	}
	int fd = memfd_create("fuzz_frame_in", 0);
	CHECK(fd >= 0);
	CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lmk_frame f;
	lmk_reader *r;
	volatile unsigned sink = 0;

	if (lmk_frame_parse(data, size, "fuzz", &f) == 0) {
		sink += touch(&f);
		roundtrip(&f, 0);
		/* a read frame grows like a built one */
		int64_t shape[2] = {1, (int64_t)(size < 12 ? size : 12)};
		int rc = lmk_frame_add_copy(&f, "fuzz.extra", LMK_U8, 2, shape, data);
		CHECK(rc == 0 || (rc == LMK_EINVAL && lmk_frame_find(&f, "fuzz.extra")));
		CHECK(lmk_frame_set_meta(&f, "fuzz.key", "v") == 0);
		roundtrip(&f, 0);
		lmk_frame_free(&f);
	} else {
		CHECK(f.ntensors == 0 && f.nmeta == 0 && f.nblobs == 0);
	}

	CHECK(lmk_reader_fdopen(&r, input_fd(data, size), "fuzz") == 0);
	int rc, n = 0;
	while ((rc = lmk_reader_next(r, &f)) == 1) {
		sink += touch(&f);
		if (n++ < 4)
			roundtrip(&f, n == 1 ? LMK_WRITE_GZIP : 0);
		lmk_frame_free(&f);
	}
	CHECK(f.ntensors == 0 && f.nblobs == 0);
	lmk_reader_close(r);
	(void)sink;
	return 0;
}
