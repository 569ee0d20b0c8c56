/* test_frame.c: tensor frames: round trips of every dtype and shape class,
 * metadata, streams through a pipe and through stdin/stdout, gzip both ways,
 * mapped files and frames that outlive their reader, every class of corrupt
 * input and its message, atomic writes, and EPIPE. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "err.h"
#include "frame.h"

/* ---- helpers ---- */

static char dir[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void setup(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/lmk-frame-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	chmod(dir, 0700);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *path(const char *name)
{
	static char buf[4][512];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, 512, "%s/%s", dir, name);
	return p;
}

/* Entries in the test directory other than . and .. */
static int dir_count(const char *d)
{
	DIR *dp = opendir(d);
	struct dirent *e;
	int n = 0;
	ck_assert_ptr_nonnull(dp);
	while ((e = readdir(dp)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(dp);
	return n;
}

static void fill(void *p, size_t n, unsigned seed)
{
	unsigned char *c = p;
	uint32_t x = seed * 2654435761u + 12345;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		c[i] = (unsigned char)x;
	}
}

typedef struct { unsigned char *p; size_t n, cap; } buf_t;

static void buf_add(buf_t *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

/* Appends a raw frame: declared header length (strlen(h) when ~0), the
 * header text, then dlen bytes of data. */
static void raw_frame(buf_t *b, const char *h, uint64_t declared, size_t dlen)
{
	unsigned char lb[8];
	uint64_t n = declared == ~0ull ? strlen(h) : declared;
	for (int i = 0; i < 8; i++)
		lb[i] = (unsigned char)(n >> (8 * i));
	buf_add(b, lb, 8);
	buf_add(b, h, strlen(h));
	unsigned char *d = calloc(1, dlen + 1);
	fill(d, dlen, (unsigned)dlen);
	buf_add(b, d, dlen);
	free(d);
}

static void write_file(const char *p, const void *data, size_t n)
{
	FILE *f = fopen(p, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_file(const char *p, size_t *n)
{
	FILE *f = fopen(p, "rb");
	ck_assert_ptr_nonnull(f);
	buf_t b = {0};
	unsigned char tmp[65536];
	size_t k;
	while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
		buf_add(&b, tmp, k);
	fclose(f);
	*n = b.n;
	return b.p ? b.p : calloc(1, 1);
}

/* gzip of n bytes as one member, as `gzip` would write it */
static void gz_member(buf_t *out, const void *p, size_t n)
{
	z_stream z = {0};
	ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t cap = deflateBound(&z, n) + 64;
	unsigned char *o = malloc(cap);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = o;
	z.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	buf_add(out, o, cap - z.avail_out);
	deflateEnd(&z);
	free(o);
}

static void frames_equal(const lmk_frame *a, const lmk_frame *b)
{
	ck_assert_int_eq(a->ntensors, b->ntensors);
	for (int i = 0; i < a->ntensors; i++) {
		const lmk_ftensor *x = &a->t[i], *y = &b->t[i];
		ck_assert_str_eq(x->name, y->name);
		ck_assert_int_eq(x->dtype, y->dtype);
		ck_assert_int_eq(x->ndim, y->ndim);
		for (int d = 0; d < x->ndim; d++)
			ck_assert_int_eq(x->shape[d], y->shape[d]);
		ck_assert_uint_eq(x->nbytes, y->nbytes);
		ck_assert_ptr_nonnull(y->data);
		ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0, "data of '%s' differs", x->name);
	}
	ck_assert_int_eq(a->nmeta, b->nmeta);
	for (int i = 0; i < a->nmeta; i++) {
		const char *v = lmk_frame_meta(b, a->key[i]);
		ck_assert_ptr_nonnull(v);
		ck_assert_str_eq(v, a->val[i]);
	}
}

/* A frame with one tensor "x" of n float32 values and metadata i=seed. */
static void make_frame(lmk_frame *f, int64_t n, unsigned seed)
{
	char s[32];
	lmk_frame_init(f);
	float *d = malloc((size_t)(n ? n : 1) * 4);
	fill(d, (size_t)n * 4, seed);
	ck_assert_int_eq(lmk_frame_add_copy(f, "x", LMK_F32, 1, &n, d), 0);
	free(d);
	snprintf(s, sizeof s, "%u", seed);
	ck_assert_int_eq(lmk_frame_set_meta(f, "i", s), 0);
}

/* ---- round trips ---- */

static const struct { int ndim; int64_t shape[8]; } shapes[] = {
	{0, {0}},                       /* 0-d: one element */
	{1, {1}},
	{1, {7}},                       /* odd */
	{1, {0}},                       /* empty */
	{2, {3, 0}},                    /* empty, 2-d */
	{2, {2, 3}},
	{3, {5, 1, 33}},                /* not a multiple of 8 or 32 */
	{8, {2, 1, 3, 1, 2, 1, 1, 2}},  /* the most dimensions */
	{2, {64, 129}},                 /* a realistic one */
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

static void build_all(lmk_frame *f, void **keep)
{
	int k = 0;
	lmk_frame_init(f);
	for (int t = 0; t < LMK_NDTYPE; t++) {
		for (int s = 0; s < NSHAPES; s++, k++) {
			char name[64];
			int64_t n = 1;
			for (int d = 0; d < shapes[s].ndim; d++)
				n *= shapes[s].shape[d];
			size_t nb = (size_t)n * lmk_dtype_size(t);
			keep[k] = malloc(nb + 1);
			fill(keep[k], nb, (unsigned)k);
			if (t == LMK_BOOL)
				for (size_t i = 0; i < nb; i++)
					((unsigned char *)keep[k])[i] &= 1;
			snprintf(name, sizeof name, "%s.s%d", lmk_dtype_name(t), s);
			/* every other one copied, the rest borrowed */
			int rc = (k & 1) ? lmk_frame_add_copy(f, name, t, shapes[s].ndim, shapes[s].shape, keep[k])
					 : lmk_frame_add(f, name, t, shapes[s].ndim, shapes[s].shape, keep[k]);
			ck_assert_msg(rc == 0, "%s", lmk_errmsg());
		}
	}
}

START_TEST(test_roundtrip_dtypes)
{
	lmk_frame f, g, h;
	void *keep[LMK_NDTYPE * NSHAPES];
	size_t n;

	build_all(&f, keep);
	ck_assert_int_eq(f.ntensors, LMK_NDTYPE * NSHAPES);
	ck_assert_int_eq(lmk_frame_save(path("all.st"), &f, 0), 0);
	ck_assert_msg(lmk_frame_load(path("all.st"), &g) == 0, "%s", lmk_errmsg());
	frames_equal(&f, &g); /* also: read back in the order added */

	/* layout: 8 + N a multiple of 8, compact JSON, no __metadata__ */
	unsigned char *raw = read_file(path("all.st"), &n);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | raw[i];
	ck_assert_uint_eq((8 + hl) % 8, 0);
	char *hdr = strndup((char *)raw + 8, hl);
	ck_assert_ptr_null(strstr(hdr, "__metadata__"));
	ck_assert_ptr_null(strstr(hdr, "\": "));
	ck_assert_ptr_nonnull(strstr(hdr, "\"F32.s0\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":["));
	ck_assert_ptr_nonnull(strstr(hdr, "\"shape\":[2,1,3,1,2,1,1,2]"));

	/* the same bytes parse from memory, too */
	ck_assert_msg(lmk_frame_parse(raw, n, "mem", &h) == 0, "%s", lmk_errmsg());
	frames_equal(&f, &h);
	for (int i = 0; i < h.ntensors; i++)
		ck_assert_int_eq(lmk_ftensor_numel(&h.t[i]) * (int64_t)lmk_dtype_size(h.t[i].dtype),
				 (int64_t)h.t[i].nbytes);
	ck_assert_int_eq(lmk_ftensor_numel(lmk_frame_find(&h, "U8.s0")), 1);
	ck_assert_int_eq(lmk_ftensor_numel(lmk_frame_find(&h, "U8.s4")), 0);

	free(hdr);
	free(raw);
	lmk_frame_free(&f);
	lmk_frame_free(&g);
	lmk_frame_free(&h);
	for (int i = 0; i < LMK_NDTYPE * NSHAPES; i++)
		free(keep[i]);
}
END_TEST

/* The bytes Python's safetensors writes for {"a": float32 [1, 2]}. */
START_TEST(test_exact_bytes)
{
	lmk_frame f;
	float v[2] = {1, 2};
	int64_t sh = 2;
	size_t n;
	const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 1, &sh, v), 0);
	ck_assert_int_eq(lmk_frame_save(path("a.st"), &f, 0), 0);
	unsigned char *raw = read_file(path("a.st"), &n);
	size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
	ck_assert_uint_eq(n, 8 + hl + pad + 8);
	ck_assert_uint_eq(raw[0], hl + pad);
	for (int i = 1; i < 8; i++)
		ck_assert_uint_eq(raw[i], 0);
	ck_assert_int_eq(memcmp(raw + 8, h, hl), 0);
	for (size_t i = 0; i < pad; i++)
		ck_assert_uint_eq(raw[8 + hl + i], ' ');
	ck_assert_int_eq(memcmp(raw + 8 + hl + pad, v, 8), 0);
	free(raw);

	/* with metadata, it comes first */
	ck_assert_int_eq(lmk_frame_set_meta(&f, "kind", "test"), 0);
	ck_assert_int_eq(lmk_frame_save(path("a.st"), &f, 0), 0);
	raw = read_file(path("a.st"), &n);
	ck_assert_int_eq(memcmp(raw + 8, "{\"__metadata__\":{\"kind\":\"test\"},\"a\":{", 37), 0);
	free(raw);
	lmk_frame_free(&f);
}
END_TEST

START_TEST(test_metadata)
{
	lmk_frame f, g;
	lmk_frame_init(&f);

	ck_assert_int_eq(lmk_frame_set_meta(&f, "kind", "checkpoint"), 0);
	ck_assert_int_eq(lmk_frame_set_meta(&f, "schema", "1"), 0);
	ck_assert_int_eq(lmk_frame_set_meta(&f, "empty", ""), 0);
	ck_assert_int_eq(lmk_frame_set_meta(&f, "uni", "\xc3\xbcn\xc3\xaf \"q\" \\ \n\t"), 0);
	ck_assert_int_eq(lmk_frame_set_meta(&f, "schema", "2"), 0); /* replaces */
	ck_assert_int_eq(f.nmeta, 4);
	ck_assert_str_eq(lmk_frame_meta(&f, "schema"), "2");
	ck_assert_ptr_null(lmk_frame_meta(&f, "nope"));
	ck_assert_int_eq(lmk_frame_set_meta(&f, "bad", "\xff\xfe"), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_set_meta(&f, NULL, "x"), LMK_EINVAL);

	/* a frame of metadata only, then with a tensor */
	ck_assert_int_eq(lmk_frame_save(path("m.st"), &f, 0), 0);
	ck_assert_msg(lmk_frame_load(path("m.st"), &g) == 0, "%s", lmk_errmsg());
	frames_equal(&f, &g);
	for (int i = 0; i < f.nmeta; i++) /* in header order */
		ck_assert_str_eq(f.key[i], g.key[i]);
	lmk_frame_free(&g);

	uint8_t b = 1;
	ck_assert_int_eq(lmk_frame_add(&f, "flag", LMK_BOOL, 0, NULL, &b), 0);
	ck_assert_int_eq(lmk_frame_save(path("m.st"), &f, LMK_WRITE_GZIP), 0);
	ck_assert_msg(lmk_frame_load(path("m.st"), &g) == 0, "%s", lmk_errmsg());
	frames_equal(&f, &g);
	lmk_frame_free(&g);
	lmk_frame_free(&f);

	/* an empty frame: header "{}" */
	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_save(path("e.st"), &f, 0), 0);
	ck_assert_int_eq(lmk_frame_load(path("e.st"), &g), 0);
	ck_assert_int_eq(g.ntensors, 0);
	ck_assert_int_eq(g.nmeta, 0);
	lmk_frame_free(&g);
}
END_TEST

START_TEST(test_add_errors)
{
	lmk_frame f, g;
	float v[4] = {1, 2, 3, 4};
	int64_t s2[2] = {2, 2}, neg[1] = {-1}, big[2] = {INT64_MAX / 2, 4}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};

	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_add(&f, "", LMK_F32, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, NULL, LMK_F32, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "__metadata__", LMK_F32, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a\xff", LMK_F32, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", (lmk_dtype)LMK_NDTYPE, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", (lmk_dtype)-1, 2, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 9, nine, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, -1, s2, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 1, neg, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 2, big, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 2, NULL, v), LMK_EINVAL);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 2, s2, NULL), LMK_EINVAL);
	ck_assert_int_eq(f.ntensors, 0);
	ck_assert_int_eq(lmk_frame_add(&f, "a", LMK_F32, 2, s2, v), 0);
	ck_assert_int_eq(lmk_frame_add_copy(&f, "a", LMK_F32, 2, s2, v), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "duplicate"));
	int64_t z = 0;
	ck_assert_int_eq(lmk_frame_add(&f, "empty", LMK_F32, 1, &z, NULL), 0);
	ck_assert_ptr_nonnull(lmk_frame_find(&f, "empty")->data);
	ck_assert_int_eq(lmk_frame_add_copy(&f, "scalar", LMK_F64, 0, NULL, &(double){2.5}), 0);
	ck_assert_int_eq(f.ntensors, 3);
	ck_assert_ptr_eq(lmk_frame_find(&f, "a")->data, v);
	ck_assert_ptr_null(lmk_frame_find(&f, "b"));
	ck_assert_int_eq(lmk_ftensor_numel(lmk_frame_find(&f, "scalar")), 1);

	/* keep: a frame borrowing from another outlives it */
	lmk_frame_init(&g);
	const lmk_ftensor *sc = lmk_frame_find(&f, "scalar");
	ck_assert_int_eq(lmk_frame_add(&g, "s", sc->dtype, sc->ndim, sc->shape, sc->data), 0);
	ck_assert_int_eq(lmk_frame_keep(&g, &f), 0);
	lmk_frame_free(&f);
	double d;
	memcpy(&d, lmk_frame_find(&g, "s")->data, 8);
	ck_assert(d == 2.5);
	lmk_frame_free(&g);
	lmk_frame_free(&g); /* freeing twice is harmless */
}
END_TEST

/* ---- streams ---- */

static void write_stream(int fd, int nframes, int flags)
{
	lmk_writer *w;
	if (lmk_writer_fdopen(&w, fd, "pipe", flags))
		_exit(3);
	for (int k = 0; k < nframes; k++) {
		lmk_frame f;
		make_frame(&f, (int64_t)k * 50001, (unsigned)k);
		if (lmk_writer_put(w, &f))
			_exit(4);
		lmk_frame_free(&f);
	}
	if (lmk_writer_close(w))
		_exit(5);
}

static void read_stream(lmk_reader *r, int nframes)
{
	lmk_frame f, e;
	int k = 0, rc;
	while ((rc = lmk_reader_next(r, &f)) == 1) {
		make_frame(&e, (int64_t)k * 50001, (unsigned)k);
		frames_equal(&e, &f);
		lmk_frame_free(&e);
		lmk_frame_free(&f);
		k++;
	}
	ck_assert_msg(rc == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(k, nframes);
	ck_assert_int_eq(lmk_reader_next(r, &f), 0); /* stays at the end */
}

static void pipe_case(int flags)
{
	int p[2];
	lmk_reader *r;
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		write_stream(p[1], 6, flags);
		_exit(0);
	}
	close(p[1]);
	ck_assert_int_eq(lmk_reader_fdopen(&r, p[0], "pipe"), 0);
	read_stream(r, 6);
	lmk_reader_close(r);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(test_stream_pipe)
{
	pipe_case(0);
}
END_TEST

START_TEST(test_stream_pipe_gzip)
{
	pipe_case(LMK_WRITE_GZIP);
}
END_TEST

/* "-" is standard input and output. */
START_TEST(test_stdin_stdout)
{
	int p[2];
	lmk_reader *r;
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		lmk_writer *w;
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		if (lmk_writer_open(&w, "-", 0))
			_exit(3);
		for (int k = 0; k < 3; k++) {
			lmk_frame f;
			make_frame(&f, (int64_t)k * 50001, (unsigned)k);
			if (lmk_writer_put(w, &f))
				_exit(4);
			lmk_frame_free(&f);
		}
		if (lmk_writer_close(w) || fcntl(1, F_GETFD) < 0) /* stdout stays open */
			_exit(5);
		_exit(0);
	}
	close(p[1]);
	dup2(p[0], 0);
	close(p[0]);
	ck_assert_int_eq(lmk_reader_open(&r, "-"), 0);
	read_stream(r, 3);
	lmk_reader_close(r);
	ck_assert_int_ge(fcntl(0, F_GETFD), 0); /* stdin stays open */
	int st;
	waitpid(pid, &st, 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* Several frames in one file, and a clean end exactly between frames. */
START_TEST(test_stream_file)
{
	lmk_writer *w;
	lmk_reader *r;
	ck_assert_int_eq(lmk_writer_open(&w, path("s.st"), 0), 0);
	for (int k = 0; k < 4; k++) {
		lmk_frame f;
		make_frame(&f, (int64_t)k * 50001, (unsigned)k);
		ck_assert_int_eq(lmk_writer_put(w, &f), 0);
		lmk_frame_free(&f);
	}
	ck_assert_int_eq(lmk_writer_close(w), 0);
	ck_assert_int_eq(lmk_reader_open(&r, path("s.st")), 0);
	read_stream(r, 4);
	lmk_reader_close(r);

	/* load refuses a stream of several frames */
	lmk_frame f;
	ck_assert_int_eq(lmk_frame_load(path("s.st"), &f), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "garbage after the frame"));
	ck_assert_int_eq(f.ntensors, 0);
}
END_TEST

/* ---- gzip ---- */

START_TEST(test_gzip_write)
{
	lmk_writer *w;
	lmk_reader *r;
	size_t n;
	ck_assert_int_eq(lmk_writer_open(&w, path("g.st.gz"), LMK_WRITE_GZIP), 0);
	for (int k = 0; k < 5; k++) {
		lmk_frame f;
		make_frame(&f, (int64_t)k * 50001, (unsigned)k);
		ck_assert_int_eq(lmk_writer_put(w, &f), 0);
		lmk_frame_free(&f);
	}
	ck_assert_int_eq(lmk_writer_close(w), 0);
	unsigned char *raw = read_file(path("g.st.gz"), &n);
	ck_assert(raw[0] == 0x1f && raw[1] == 0x8b && raw[2] == 8);

	/* what we wrote inflates with plain zlib to plain frames */
	z_stream z = {0};
	ck_assert_int_eq(inflateInit2(&z, 15 + 16), Z_OK);
	size_t cap = 8 << 20;
	unsigned char *out = malloc(cap);
	z.next_in = raw;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	ck_assert_int_eq(inflate(&z, Z_FINISH), Z_STREAM_END);
	size_t m = cap - z.avail_out;
	inflateEnd(&z);
	write_file(path("plain.st"), out, m);
	ck_assert_int_eq(lmk_reader_open(&r, path("plain.st")), 0);
	read_stream(r, 5);
	lmk_reader_close(r);

	ck_assert_int_eq(lmk_reader_open(&r, path("g.st.gz")), 0);
	read_stream(r, 5);
	lmk_reader_close(r);
	free(out);
	free(raw);
}
END_TEST

/* Input made by zlib as gzip does it, and as `cat a.gz b.gz` gives it,
 * including a member boundary in the middle of a frame. */
START_TEST(test_gzip_read)
{
	buf_t plain = {0}, gz = {0};
	lmk_reader *r;
	size_t n;
	for (int k = 0; k < 4; k++) {
		lmk_frame f;
		make_frame(&f, (int64_t)k * 50001, (unsigned)k);
		ck_assert_int_eq(lmk_frame_save(path("one.st"), &f, 0), 0);
		lmk_frame_free(&f);
		unsigned char *raw = read_file(path("one.st"), &n);
		buf_add(&plain, raw, n);
		free(raw);
	}
	/* members: [0, 100), [100, half), [half, end): boundaries inside frames */
	size_t half = plain.n / 2;
	gz_member(&gz, plain.p, 100);
	gz_member(&gz, plain.p + 100, half - 100);
	gz_member(&gz, plain.p + half, plain.n - half);
	gz_member(&gz, "", 0); /* an empty member too */
	write_file(path("cat.gz"), gz.p, gz.n);
	ck_assert_int_eq(lmk_reader_open(&r, path("cat.gz")), 0);
	read_stream(r, 4);
	lmk_reader_close(r);

	/* through a pipe, one byte at a time */
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		for (size_t i = 0; i < gz.n; i++)
			if (write(p[1], gz.p + i, 1) != 1)
				_exit(1);
		_exit(0);
	}
	close(p[1]);
	ck_assert_int_eq(lmk_reader_fdopen(&r, p[0], "pipe"), 0);
	read_stream(r, 4);
	lmk_reader_close(r);
	waitpid(pid, NULL, 0);

	/* zlib's own gzip file writer */
	gzFile g = gzopen(path("z.gz"), "wb");
	ck_assert_ptr_nonnull(g);
	ck_assert_int_eq(gzwrite(g, plain.p, (unsigned)plain.n), (int)plain.n);
	ck_assert_int_eq(gzclose(g), Z_OK);
	ck_assert_int_eq(lmk_reader_open(&r, path("z.gz")), 0);
	read_stream(r, 4);
	lmk_reader_close(r);

	/* a large gzip file is inflated, not mapped */
	lmk_frame f, h;
	make_frame(&f, 600000, 9);
	ck_assert_int_eq(lmk_frame_save(path("big.gz"), &f, LMK_WRITE_GZIP), 0);
	ck_assert_msg(lmk_frame_load(path("big.gz"), &h) == 0, "%s", lmk_errmsg());
	frames_equal(&f, &h);
	lmk_frame_free(&f);
	lmk_frame_free(&h);

	/* an empty gzip stream is an empty stream */
	buf_t e = {0};
	gz_member(&e, "", 0);
	write_file(path("e.gz"), e.p, e.n);
	ck_assert_int_eq(lmk_reader_open(&r, path("e.gz")), 0);
	ck_assert_int_eq(lmk_reader_next(r, &f), 0);
	lmk_reader_close(r);
	free(e.p);
	free(plain.p);
	free(gz.p);
}
END_TEST

START_TEST(test_gzip_truncated)
{
	lmk_frame f, g;
	buf_t gz = {0};
	size_t n;
	make_frame(&f, 1000, 3);
	ck_assert_int_eq(lmk_frame_save(path("a.st"), &f, 0), 0);
	unsigned char *raw = read_file(path("a.st"), &n);
	gz_member(&gz, raw, n);
	/* every cut inside the member, the trailer included, is an error */
	for (size_t cut = 3; cut < gz.n; cut++) {
		write_file(path("t.gz"), gz.p, cut);
		int rc = lmk_frame_load(path("t.gz"), &g);
		ck_assert_msg(rc == LMK_EFORMAT, "cut %zu: rc %d", cut, rc);
		ck_assert_msg(strstr(lmk_errmsg(), "truncated gzip data"), "cut %zu: %s", cut, lmk_errmsg());
		ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "t.gz"));
	}
	/* garbage after a member is corrupt gzip, not ignored */
	buf_add(&gz, "xxxxxxxxxxxx", 12);
	write_file(path("t.gz"), gz.p, gz.n);
	ck_assert_int_eq(lmk_frame_load(path("t.gz"), &g), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "gzip data is corrupt"), "%s", lmk_errmsg());
	/* a flipped bit in the data: the CRC or the inflater notices */
	gz.n -= 12;
	gz.p[gz.n / 2] ^= 0x10;
	write_file(path("t.gz"), gz.p, gz.n);
	ck_assert_int_eq(lmk_frame_load(path("t.gz"), &g), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "gzip"), "%s", lmk_errmsg());
	free(gz.p);
	free(raw);
	lmk_frame_free(&f);
}
END_TEST

/* ---- mapping ---- */

/* @return : 1 if p lies in a mapping of a file whose path contains name */
static int mapped_from(const void *p, const char *name)
{
	FILE *m = fopen("/proc/self/maps", "r");
	char line[4096];
	int found = 0;
	ck_assert_ptr_nonnull(m);
	while (fgets(line, sizeof line, m)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
			found = strstr(line, name) != NULL;
			break;
		}
	}
	fclose(m);
	return found;
}

START_TEST(test_mmap)
{
	lmk_frame f[3], g[3];
	lmk_writer *w;
	lmk_reader *r;

	ck_assert_int_eq(lmk_writer_open(&w, path("big.st"), 0), 0);
	for (int k = 0; k < 3; k++) {
		make_frame(&f[k], 300001 + k, (unsigned)k); /* 1.2 MB each */
		ck_assert_int_eq(lmk_writer_put(w, &f[k]), 0);
	}
	ck_assert_int_eq(lmk_writer_close(w), 0);
	ck_assert_int_eq(lmk_reader_open(&r, path("big.st")), 0);
	for (int k = 0; k < 3; k++) {
		ck_assert_int_eq(lmk_reader_next(r, &g[k]), 1);
		ck_assert(mapped_from(g[k].t[0].data, "/big.st"));
	}
	lmk_frame e;
	ck_assert_int_eq(lmk_reader_next(r, &e), 0);
	lmk_reader_close(r);
	/* the frames outlive the reader and the file's name */
	ck_assert_int_eq(unlink(path("big.st")), 0);
	for (int k = 0; k < 3; k++) {
		frames_equal(&f[k], &g[k]);
		lmk_frame_free(&f[k]);
		lmk_frame_free(&g[k]);
	}

	/* small files are read into the heap, and outlive the reader too */
	make_frame(&f[0], 1000, 7);
	ck_assert_int_eq(lmk_frame_save(path("small.st"), &f[0], 0), 0);
	ck_assert_int_eq(lmk_reader_open(&r, path("small.st")), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g[0]), 1);
	ck_assert(!mapped_from(g[0].t[0].data, "/small.st"));
	lmk_reader_close(r);
	frames_equal(&f[0], &g[0]);
	lmk_frame_free(&g[0]);
	lmk_frame_free(&f[0]);
}
END_TEST

/* fdopen maps from the fd's current offset */
START_TEST(test_mmap_offset)
{
	lmk_frame f, g;
	lmk_reader *r;
	size_t n;
	make_frame(&f, 400000, 5);
	ck_assert_int_eq(lmk_frame_save(path("b.st"), &f, 0), 0);
	unsigned char *raw = read_file(path("b.st"), &n);
	buf_t b = {0};
	buf_add(&b, "prefix", 6);
	buf_add(&b, raw, n);
	write_file(path("p.st"), b.p, b.n);
	int fd = open(path("p.st"), O_RDONLY);
	ck_assert_int_eq(lseek(fd, 6, SEEK_SET), 6);
	ck_assert_int_eq(lmk_reader_fdopen(&r, fd, "p.st"), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g), 1);
	ck_assert(mapped_from(g.t[0].data, "/p.st"));
	frames_equal(&f, &g);
	lmk_frame_free(&g);
	ck_assert_int_eq(lmk_reader_next(r, &g), 0);
	lmk_reader_close(r);

	/* a mapped file cut short inside the data */
	write_file(path("cut.st"), raw, n - 4000);
	ck_assert_int_eq(lmk_frame_load(path("cut.st"), &g), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "cut.st: frame 0: tensor 'x': data truncated: expected 1600000 bytes of data, found 1596000"),
		      "%s", lmk_errmsg());
	free(raw);
	free(b.p);
	lmk_frame_free(&f);
}
END_TEST

/* ---- corrupt input ---- */

#define T(j) "{\"w\":" j "}"
static const struct {
	const char *h;     /* header text */
	uint64_t declared; /* header length, or ~0 for strlen(h) */
	size_t dlen;       /* bytes of data that follow */
	const char *want;  /* in the message */
} bad[] = {
	{"{}", 1, 0, "header length 1 is too small"},
	{"{}", 0, 0, "header length 0 is too small"},
	{"{}", 200u << 20, 0, "header length 209715200 is too large"},
	{"{}", 100, 0, "truncated header: expected 100 bytes, found 2"},
	{"{\"w\":", ~0ull, 0, "header is not JSON"},
	{"\xff\xfe", ~0ull, 0, "header is not JSON"},
	{"[1,2]", ~0ull, 0, "header is not a JSON object, found an array"},
	{"\"w\"", ~0ull, 0, "header is not a JSON object, found a string"},
	{"{}  x", ~0ull, 0, "trailing garbage in header at byte 4"},
	{"{}\n", ~0ull, 0, "trailing garbage in header"},
	{"{}{}", ~0ull, 0, "trailing garbage in header"},
	{T("{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}"), ~0ull, 1,
	 "tensor 'w': unknown dtype 'F8_E4M3'"},
	{T("{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}"), ~0ull, 4, "unknown dtype 'f32'"},
	{T("{\"shape\":[1],\"data_offsets\":[0,4]}"), ~0ull, 4, "tensor 'w': missing dtype"},
	{T("{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}"), ~0ull, 4, "dtype must be a string"},
	{T("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}"), ~0ull, 4, "tensor 'w': missing shape"},
	{T("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "tensor 'w': bad shape: expected an array of integers, found an integer"},
	{T("{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,8]}"), ~0ull, 8,
	 "bad shape: dimension 1 is a string, expected an integer"},
	{T("{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "bad shape: dimension 0 is a real number"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "tensor 'w': bad shape: negative dimension -3"},
	{T("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "tensor 'w': bad shape: too many dimensions: 9, expected at most 8"},
	{T("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "tensor 'w': bad shape: [4294967296,4294967296,4] F32 overflows"},
	{T("{\"dtype\":\"U8\",\"shape\":[9223372036854775807,2],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "overflows"},
	{T("{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}"), ~0ull, 4,
	 "header is not JSON: too big integer"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}"), ~0ull, 20,
	 "x.st: frame 0: tensor 'w': shape [2,3] F32 needs 24 bytes, data_offsets give 20"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3]}"), ~0ull, 24, "tensor 'w': missing data_offsets"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0]}"), ~0ull, 24,
	 "bad data_offsets: expected [begin,end] integers"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":{}}"), ~0ull, 24, "bad data_offsets"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24,48]}"), ~0ull, 24, "bad data_offsets"},
	{T("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}"), ~0ull, 4, "negative"},
	{T("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}"), ~0ull, 8, "[8,4]: begin after end"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", ~0ull, 12,
	 "tensor 'b': data_offsets [4,12] overlap tensor 'a' at [0,8]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", ~0ull, 8, "overlap"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", ~0ull, 20,
	 "tensor 'b': gap in data: data_offsets begin at 12, expected 8"},
	{T("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}"), ~0ull, 12,
	 "tensor 'w': gap in data: data_offsets begin at 4, expected 0"},
	{T("{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"), ~0ull, 20,
	 "x.st: frame 0: tensor 'w': data truncated: expected 24 bytes of data, found 20"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", ~0ull, 10,
	 "tensor 'b': data truncated: expected 16 bytes of data, found 10"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", ~0ull, 8,
	 "duplicate name in header"},
	{"{\"__metadata__\":{\"k\":1}}", ~0ull, 0,
	 "bad __metadata__: value of 'k' must be a string, found an integer"},
	{"{\"__metadata__\":[\"k\"]}", ~0ull, 0,
	 "bad __metadata__: expected an object of strings, found an array"},
	{"{\"__metadata__\":{\"k\":\"v\"},\"__metadata__\":{}}", ~0ull, 0, "duplicate name in header"},
	{T("3"), ~0ull, 0, "tensor 'w': expected an object, found an integer"},
	{"{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", ~0ull, 4, "empty tensor name"},
	{"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", ~0ull, 4,
	 "header is not JSON"},
	{"{\"w\\u0001\\n\":3}", ~0ull, 0, "tensor 'w?" "?': expected an object"},
};
#define NBAD (int)(sizeof bad / sizeof bad[0])

START_TEST(test_corrupt)
{
	lmk_frame f, g;
	lmk_reader *r;
	buf_t b = {0};
	int i = _i;

	raw_frame(&b, bad[i].h, bad[i].declared, bad[i].dlen);

	/* from memory */
	int rc = lmk_frame_parse(b.p, b.n, "x.st", &f);
	ck_assert_msg(rc == LMK_EFORMAT, "case %d: rc %d", i, rc);
	ck_assert_msg(strstr(lmk_errmsg(), bad[i].want), "case %d: got \"%s\", want \"%s\"", i,
		      lmk_errmsg(), bad[i].want);
	ck_assert_msg(strncmp(lmk_errmsg(), "x.st: frame 0: ", 15) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(f.ntensors, 0);

	/* from a file, as frame 1 after a good frame */
	buf_t s = {0};
	raw_frame(&s, "{\"ok\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", ~0ull, 3);
	buf_add(&s, b.p, b.n);
	write_file(path("x.st"), s.p, s.n);
	ck_assert_int_eq(lmk_reader_open(&r, path("x.st")), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g), 1);
	lmk_frame_free(&g);
	rc = lmk_reader_next(r, &g);
	ck_assert_msg(rc == LMK_EFORMAT, "case %d: rc %d", i, rc);
	char want[512];
	snprintf(want, sizeof want, "x.st: frame 1: ");
	ck_assert_msg(strstr(lmk_errmsg(), want), "%s", lmk_errmsg());
	const char *w = strncmp(bad[i].want, "x.st: frame 0: ", 15) == 0 ? bad[i].want + 15 : bad[i].want;
	ck_assert_msg(strstr(lmk_errmsg(), w), "case %d: got \"%s\"", i, lmk_errmsg());
	ck_assert_int_eq(g.ntensors, 0);
	/* a reader that failed keeps failing */
	ck_assert_int_eq(lmk_reader_next(r, &g), LMK_EFORMAT);
	lmk_reader_close(r);
	free(s.p);
	free(b.p);
}
END_TEST

START_TEST(test_truncated_length)
{
	lmk_frame f, g;
	lmk_reader *r;
	buf_t b = {0};
	raw_frame(&b, "{}", ~0ull, 0);

	for (size_t cut = 1; cut < 8; cut++) {
		ck_assert_int_eq(lmk_frame_parse(b.p, cut, "x.st", &f), LMK_EFORMAT);
		ck_assert_msg(strstr(lmk_errmsg(), "truncated header length: expected 8 bytes, found"),
			      "%s", lmk_errmsg());
	}
	/* after a good frame, 3 stray bytes */
	buf_add(&b, "abc", 3);
	write_file(path("t.st"), b.p, b.n);
	ck_assert_int_eq(lmk_reader_open(&r, path("t.st")), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g), 1);
	lmk_frame_free(&g);
	ck_assert_int_eq(lmk_reader_next(r, &g), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "t.st: frame 1: truncated header length: expected 8 bytes, found 3"),
		      "%s", lmk_errmsg());
	lmk_reader_close(r);
	/* load: bytes after the frame */
	ck_assert_int_eq(lmk_frame_load(path("t.st"), &g), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "t.st: garbage after the frame"), "%s", lmk_errmsg());
	/* parse: the same */
	ck_assert_int_eq(lmk_frame_parse(b.p, b.n, "x.st", &f), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "garbage after the frame: 3 bytes follow"), "%s", lmk_errmsg());
	/* an empty input is an empty stream, but no frame for load */
	write_file(path("e.st"), "", 0);
	ck_assert_int_eq(lmk_reader_open(&r, path("e.st")), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g), 0);
	lmk_reader_close(r);
	ck_assert_int_eq(lmk_frame_load(path("e.st"), &g), LMK_EFORMAT);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "no frame"));
	ck_assert_int_eq(lmk_frame_parse(NULL, 0, "x.st", &f), LMK_EFORMAT);
	/* a directory: open works, read does not */
	ck_assert_int_eq(lmk_frame_load(dir, &g), LMK_EIO);
	ck_assert_msg(strstr(lmk_errmsg(), ": frame 0: read failed: Is a directory"), "%s", lmk_errmsg());
	/* missing file */
	ck_assert_int_eq(lmk_frame_load(path("none.st"), &g), LMK_EIO);
	ck_assert_msg(strstr(lmk_errmsg(), "cannot open '") && strstr(lmk_errmsg(), "none.st': No such file"),
		      "%s", lmk_errmsg());
	free(b.p);
}
END_TEST

/* Hand-made frames that are valid: Python's spellings and layouts. */
START_TEST(test_valid_variants)
{
	lmk_frame f;
	buf_t b = {0};
	/* tensors listed out of offset order, unknown fields ignored, empty
	 * tensors at shared offsets, null metadata, leading whitespace */
	raw_frame(&b, " {\"__metadata__\":null,"
		  "\"b\":{\"data_offsets\":[8,12],\"shape\":[1],\"dtype\":\"I32\",\"x\":1},"
		  "\"e\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
		  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		  "\"z\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]}}      ", ~0ull, 14);
	ck_assert_msg(lmk_frame_parse(b.p, b.n, "v.st", &f) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(f.ntensors, 4);
	ck_assert_int_eq(f.nmeta, 0);
	/* in order of data offset */
	ck_assert_str_eq(f.t[0].name, "a");
	ck_assert_str_eq(f.t[3].name, "z");
	ck_assert_int_eq(lmk_frame_find(&f, "z")->ndim, 0);
	ck_assert_int_eq(lmk_frame_find(&f, "e")->nbytes, 0);
	ck_assert_int_eq(memcmp(lmk_frame_find(&f, "b")->data, b.p + b.n - 6, 4), 0);
	/* a read frame can be added to and written again */
	for (int i = 0; i < 9; i++) {
		char name[16];
		snprintf(name, sizeof name, "n%d", i);
		ck_assert_int_eq(lmk_frame_add_copy(&f, name, LMK_I32, 0, NULL, &i), 0);
		ck_assert_int_eq(lmk_frame_set_meta(&f, name, "v"), 0);
	}
	ck_assert_int_eq(lmk_frame_save(path("v.st"), &f, 0), 0);
	lmk_frame g;
	ck_assert_int_eq(lmk_frame_load(path("v.st"), &g), 0);
	frames_equal(&f, &g);
	lmk_frame_free(&g);
	lmk_frame_free(&f);
	free(b.p);
}
END_TEST

/* ---- writing ---- */

START_TEST(test_atomic)
{
	lmk_writer *w;
	lmk_frame f, g;
	float v[3] = {1, 2, 3};
	int64_t sh = 3;

	lmk_frame_init(&f);
	ck_assert_int_eq(lmk_frame_add(&f, "v", LMK_F32, 1, &sh, v), 0);

	/* a missing directory: nothing anywhere */
	ck_assert_int_eq(lmk_writer_open(&w, path("missing/x.st"), 0), LMK_EIO);
	ck_assert_ptr_null(w);
	ck_assert_msg(strstr(lmk_errmsg(), "missing/x.st") && strstr(lmk_errmsg(), "No such file"),
		      "%s", lmk_errmsg());
	ck_assert_int_eq(lmk_frame_save(path("missing/x.st"), &f, 0), LMK_EIO);
	ck_assert_int_eq(dir_count(dir), 0);

	/* an invalid frame is refused before anything is written; abort */
	ck_assert_int_eq(lmk_writer_open(&w, path("x.st"), 0), 0);
	ck_assert_int_eq(dir_count(dir), 1); /* the temporary */
	f.t[0].dtype = (lmk_dtype)99;
	ck_assert_int_eq(lmk_writer_put(w, &f), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "invalid dtype 99"));
	f.t[0].dtype = LMK_F32;
	f.t[0].nbytes = 8;
	ck_assert_int_eq(lmk_writer_put(w, &f), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "needs 12 bytes, nbytes is 8"));
	f.t[0].nbytes = 12;
	ck_assert_int_eq(lmk_writer_put(w, &f), 0); /* still usable */
	lmk_writer_abort(w);
	ck_assert_int_eq(dir_count(dir), 0);
	f.t[0].dtype = (lmk_dtype)99;
	ck_assert_int_eq(lmk_frame_save(path("x.st"), &f, LMK_WRITE_GZIP), LMK_EINVAL);
	ck_assert_int_eq(dir_count(dir), 0);
	f.t[0].dtype = LMK_F32;

	/* success leaves exactly the final file */
	ck_assert_int_eq(lmk_frame_save(path("x.st"), &f, 0), 0);
	ck_assert_int_eq(dir_count(dir), 1);
	ck_assert_int_eq(access(path("x.st"), F_OK), 0);
	/* replacing it is atomic too */
	v[0] = 42;
	ck_assert_int_eq(lmk_frame_save(path("x.st"), &f, 0), 0);
	ck_assert_int_eq(dir_count(dir), 1);
	ck_assert_int_eq(lmk_frame_load(path("x.st"), &g), 0);
	frames_equal(&f, &g);
	lmk_frame_free(&g);
	struct stat st;
	ck_assert_int_eq(stat(path("x.st"), &st), 0);
	mode_t um = umask(0);
	umask(um);
	ck_assert_int_eq(st.st_mode & 0777, 0666 & ~um);

	/* a rename that fails (onto a non-empty directory) leaves no temporary */
	ck_assert_int_eq(mkdir(path("d.st"), 0700), 0);
	write_file(path("d.st/keep"), "x", 1);
	ck_assert_int_eq(lmk_writer_open(&w, path("d.st"), 0), 0);
	ck_assert_int_eq(lmk_writer_put(w, &f), 0);
	ck_assert_int_eq(lmk_writer_close(w), LMK_EIO);
	ck_assert_msg(strstr(lmk_errmsg(), "cannot rename"), "%s", lmk_errmsg());
	ck_assert_int_eq(dir_count(dir), 2); /* x.st and d.st */
	ck_assert_int_eq(dir_count(path("d.st")), 1);

	/* not a file name */
	ck_assert_int_eq(lmk_writer_open(&w, path("sub/"), 0), LMK_EIO);
	ck_assert_int_eq(lmk_writer_open(&w, "", 0), LMK_EIO);
	lmk_frame_free(&f);
}
END_TEST

START_TEST(test_epipe)
{
	int p[2];
	lmk_writer *w;
	lmk_frame f;
	signal(SIGPIPE, SIG_IGN);
	make_frame(&f, 1000, 1);
	for (int gz = 0; gz < 2; gz++) {
		ck_assert_int_eq(pipe(p), 0);
		close(p[0]);
		ck_assert_int_eq(lmk_writer_fdopen(&w, p[1], "out", gz ? LMK_WRITE_GZIP : 0), 0);
		ck_assert_int_eq(lmk_writer_put(w, &f), LMK_EIO);
		ck_assert_msg(strstr(lmk_errmsg(), "out: write failed: Broken pipe"), "%s", lmk_errmsg());
		lmk_err_clear();
		ck_assert_int_eq(lmk_writer_put(w, &f), LMK_EIO);  /* and stays failed */
		ck_assert_int_eq(lmk_writer_close(w), LMK_EIO);
		ck_assert_msg(strstr(lmk_errmsg(), "Broken pipe"), "%s", lmk_errmsg());
	}
	lmk_frame_free(&f);
}
END_TEST

/* A frame too large for a pipe's buffer, read as the writer writes. */
START_TEST(test_large_pipe)
{
	int p[2];
	lmk_reader *r;
	lmk_frame f, g;
	make_frame(&f, 3000000, 11); /* 12 MB */
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		lmk_writer *w;
		close(p[0]);
		if (lmk_writer_fdopen(&w, p[1], "pipe", 0) || lmk_writer_put(w, &f) || lmk_writer_close(w))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	ck_assert_int_eq(lmk_reader_fdopen(&r, p[0], "pipe"), 0);
	ck_assert_int_eq(lmk_reader_next(r, &g), 1);
	lmk_frame e;
	ck_assert_int_eq(lmk_reader_next(r, &e), 0);
	lmk_reader_close(r);
	frames_equal(&f, &g);
	lmk_frame_free(&f);
	lmk_frame_free(&g);
	int st;
	waitpid(pid, &st, 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

static Suite *frame_suite(void)
{
	Suite *s = suite_create("frame");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_roundtrip_dtypes);
	tcase_add_test(tc, test_exact_bytes);
	tcase_add_test(tc, test_metadata);
	tcase_add_test(tc, test_add_errors);
	tcase_add_test(tc, test_stream_pipe);
	tcase_add_test(tc, test_stream_pipe_gzip);
	tcase_add_test(tc, test_stdin_stdout);
	tcase_add_test(tc, test_stream_file);
	tcase_add_test(tc, test_gzip_write);
	tcase_add_test(tc, test_gzip_read);
	tcase_add_test(tc, test_gzip_truncated);
	tcase_add_test(tc, test_mmap);
	tcase_add_test(tc, test_mmap_offset);
	tcase_add_loop_test(tc, test_corrupt, 0, NBAD);
	tcase_add_test(tc, test_truncated_length);
	tcase_add_test(tc, test_valid_variants);
	tcase_add_test(tc, test_atomic);
	tcase_add_test(tc, test_epipe);
	tcase_add_test(tc, test_large_pipe);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(frame_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
