/* tsr.c: a small program for tensor frames (safetensors files and streams of
 * them): describe them (info), join them (cat), cut one tensor out (get),
 * summarise the numbers (stat), compare two streams (diff), and turn a GGUF
 * Llama model into a Hugging Face directory of frames (convert).
 * Every number is read through lib/frame.h and converted chunkwise to double,
 * so tensors of any size cost a fixed few kilobytes beyond their mapping. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ckpt.h"
#include "dtype.h"
#include "err.h"
#include "frame.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "prog.h"

static const char usage[] =
"usage: tsr COMMAND [OPTION...] [ARG...]\n"
"Inspect, join, cut and compare tensor frames: safetensors files and streams\n"
"of them, plain or gzip-compressed. FILE '-' or no FILE means standard input.\n"
"\n"
"Commands:\n"
"  info [FILE...]      each frame's metadata and tensors (name, dtype, shape,\n"
"                      bytes)\n"
"  cat [FILE...]       concatenate the streams into one\n"
"  get NAME [FILE]     the first tensor called NAME, as a frame of its own\n"
"  stat [FILE...]      per tensor: count, min, max, mean, std, NaN and inf\n"
"  diff A B            compare two streams tensor by tensor; exit 1 if they\n"
"                      differ\n"
"  convert MODEL.gguf -o DIR\n"
"                      a GGUF Llama model to a Hugging Face directory:\n"
"                      config.json, model.safetensors (dequantized),\n"
"                      generation_config.json and, for byte-level BPE of the\n"
"                      gpt2 and smollm kinds, tokenizer.json\n"
"  help                this text\n"
"\n"
"Options:\n"
"  -o, --output=FILE   write to FILE ('-', the default: standard output);\n"
"                      convert: the directory to write\n"
"  -z, --gzip          compress the frames written (cat, get)\n"
"      --force         write binary frames even to a terminal (cat, get)\n"
"      --json          one JSON object per frame per line (info, stat)\n"
"      --frame=I       take the tensor from frame I, counting from 0 (get)\n"
"      --rtol=R        relative tolerance (diff; default 1e-05, as numpy.allclose)\n"
"      --atol=A        absolute tolerance (diff; default 1e-08, as numpy.allclose)\n"
"      --dtype=T       weights written as f32 (the default), bf16 or f16 (convert)\n"
"  -q, --quiet         no warnings; diff prints nothing, only its exit status\n"
"  -h, --help          this text\n"
"      --version       the program's version\n"
"\n"
"Exit status: 0 success, 1 failure or (diff) a difference, 2 usage error.\n";

enum { OPT_FRAME = PROG_OPT_FIRST_FREE, OPT_RTOL, OPT_ATOL, OPT_JSON, OPT_DTYPE };

/* Bits of options given, to refuse those a command does not use. */
enum {
	F_OUTPUT = 1 << 0, F_GZIP = 1 << 1, F_FORCE = 1 << 2, F_JSON = 1 << 3,
	F_FRAME = 1 << 4, F_RTOL = 1 << 5, F_ATOL = 1 << 6, F_DTYPE = 1 << 7,
};

static const struct option longopts[] = {
	{"output", required_argument, NULL, 'o'},
	{"gzip", no_argument, NULL, 'z'},
	{"force", no_argument, NULL, PROG_OPT_FORCE},
	{"json", no_argument, NULL, OPT_JSON},
	{"frame", required_argument, NULL, OPT_FRAME},
	{"rtol", required_argument, NULL, OPT_RTOL},
	{"atol", required_argument, NULL, OPT_ATOL},
	{"dtype", required_argument, NULL, OPT_DTYPE},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, PROG_OPT_VERSION},
	{NULL, 0, NULL, 0},
};

static const char *const flagname[] = {
	"--output", "--gzip", "--force", "--json", "--frame", "--rtol", "--atol", "--dtype",
};

struct opts {
	const char *out;
	int gzip, force, json, quiet;
	long frame;
	double rtol, atol;
	lmk_dtype dtype;
	unsigned given;
};

/* ---- output, errors ---- */

/* A binary output being written; removed if the program dies. */
static lmk_writer *pending;

/* prog_die_lib, but the temporary file of a half-written output goes first
 * (abort may record messages of its own, so the message is kept aside). */
static noreturn void die_lib(void)
{
	char msg[1024];

	snprintf(msg, sizeof msg, "%s", lmk_errmsg());
	if (pending) {
		lmk_writer_abort(pending);
		pending = NULL;
	}
	prog_die("%s", msg[0] ? msg : "unknown error");
}

/* How a path is named in reports: as the library's messages name it. */
static const char *shown(const char *path)
{
	return strcmp(path, "-") == 0 ? "<stdin>" : path;
}

static FILE *text_open(const char *path)
{
	FILE *o;

	if (strcmp(path, "-") == 0)
		return stdout;
	o = fopen(path, "w");
	if (!o)
		prog_die("cannot open '%s': %s", path, strerror(errno));
	return o;
}

/* Standard output is checked at exit by prog.c; a file is checked here. */
static void text_close(FILE *o, const char *path)
{
	if (o == stdout)
		return;
	if (ferror(o) | (fclose(o) != 0))
		prog_die("cannot write '%s': %s", path, strerror(errno ? errno : EIO));
}

static lmk_writer *bin_open(const struct opts *o)
{
	lmk_writer *w;

	if (lmk_writer_open(&w, o->out, o->gzip ? LMK_WRITE_GZIP : 0) < 0)
		die_lib();
	pending = w;
	return w;
}

static void bin_close(lmk_writer *w)
{
	pending = NULL;
	if (lmk_writer_close(w) < 0)
		die_lib();
}

/* ---- input ---- */

static lmk_reader *in_open(const char *path)
{
	lmk_reader *r;

	/* Waiting for frames typed at a terminal helps nobody. */
	if (strcmp(path, "-") == 0 && isatty(STDIN_FILENO))
		prog_die("refusing to read binary frames from a terminal (name a FILE or use a pipe)");
	if (lmk_reader_open(&r, path) < 0)
		die_lib();
	return r;
}

/* @return : 1 and a frame in *f (free it), or 0 at the end of the stream */
static int in_next(lmk_reader *r, lmk_frame *f)
{
	int rc;

	lmk_frame_init(f);
	rc = lmk_reader_next(r, f);
	if (rc < 0)
		die_lib();
	return rc;
}

/* ---- formatting ---- */

/* Names and metadata come from the file: control characters are shown as
 * \xNN so that a hostile header cannot drive the terminal. */
static void put_text(FILE *o, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			fprintf(o, "\\x%02x", c);
		else
			putc(c, o);
	}
}

/* Columns the text takes, counting a UTF-8 sequence as one. */
static int text_width(const char *s)
{
	int n = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			n += 4;
		else if ((c & 0xc0) != 0x80)
			n++;
	}
	return n;
}

static void put_padded(FILE *o, const char *s, int width)
{
	put_text(o, s);
	for (int n = text_width(s); n < width; n++)
		putc(' ', o);
}

/* "[2,3]", "[]" for a scalar. */
static const char *shape_str(const lmk_ftensor *t, char *buf, size_t cap)
{
	size_t n = 0;

	n += snprintf(buf + n, cap - n, "[");
	for (int i = 0; i < t->ndim && n < cap; i++)
		n += snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]");
	return buf;
}

#define SHAPE_MAX (LMK_FRAME_MAXDIM * 21 + 3)

static json_t *jstr(const char *s)
{
	/* the library parsed the header with jansson, so names are UTF-8 */
	json_t *j = json_string(s);
	if (!j)
		prog_die("a name or value is not valid UTF-8");
	return j;
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void put_json(FILE *o, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

	if (!s)
		prog_die("out of memory");
	fputs(s, o);
	putc('\n', o);
	free(s);
	json_decref(j);
}

static json_t *json_frame_head(const char *file, long idx, const lmk_frame *f)
{
	json_t *j = json_object(), *meta = json_object();

	json_object_set_new(j, "file", jstr(shown(file)));
	json_object_set_new(j, "frame", json_integer(idx));
	for (int i = 0; i < f->nmeta; i++)
		json_object_set_new(meta, f->key[i], jstr(f->val[i]));
	json_object_set_new(j, "metadata", meta);
	return j;
}

/* ---- numbers ---- */

#define CHUNK 4096

/* Converts n (<= CHUNK) elements at p to double. Half and single floats go
 * through lmk_dtype_to_f32; F64 and the integers are read by value, since
 * float32 would round large integers and overflow large doubles. */
static void to_double(lmk_dtype t, const unsigned char *p, size_t n, double *dst)
{
	float tmp[CHUNK];

#define BYVALUE(type) do { \
		for (size_t i = 0; i < n; i++) { \
			type v; \
			memcpy(&v, p + i * sizeof v, sizeof v); \
			dst[i] = (double)v; \
		} \
	} while (0)
	switch (t) {
	case LMK_F64: BYVALUE(double); break;
	case LMK_I64: BYVALUE(int64_t); break;
	case LMK_I32: BYVALUE(int32_t); break;
	case LMK_I16: BYVALUE(int16_t); break;
	case LMK_I8: BYVALUE(int8_t); break;
	case LMK_U8: case LMK_BOOL: BYVALUE(uint8_t); break;
	case LMK_U16: BYVALUE(uint16_t); break;
	case LMK_U32: BYVALUE(uint32_t); break;
	default:
		lmk_dtype_to_f32(t, p, tmp, n);
		for (size_t i = 0; i < n; i++)
			dst[i] = tmp[i];
		break;
	}
#undef BYVALUE
}

static int is_int(lmk_dtype t)
{
	return t != LMK_F64 && t != LMK_F32 && t != LMK_F16 && t != LMK_BF16;
}

/* min, max, mean and std are over the finite elements (Welford, in double);
 * NaN and inf are counted instead. */
struct stats {
	int64_t n, fin, nan, inf;
	double min, max, mean, m2;
	int64_t imin, imax;   /* integer dtypes: min and max exactly */
};

static void stats_of(const lmk_ftensor *t, struct stats *s)
{
	const unsigned char *p = t->data;
	size_t sz = lmk_dtype_size(t->dtype);
	double buf[CHUNK];

	memset(s, 0, sizeof *s);
	s->n = lmk_ftensor_numel(t);
	s->min = INFINITY;
	s->max = -INFINITY;
	for (int64_t done = 0; done < s->n;) {
		size_t n = s->n - done < CHUNK ? (size_t)(s->n - done) : CHUNK;
		to_double(t->dtype, p + done * sz, n, buf);
		for (size_t i = 0; i < n; i++) {
			double x = buf[i], d;
			if (isnan(x)) {
				s->nan++;
				continue;
			}
			if (isinf(x)) {
				s->inf++;
				continue;
			}
			s->fin++;
			if (x < s->min)
				s->min = x;
			if (x > s->max)
				s->max = x;
			d = x - s->mean;
			s->mean += d / (double)s->fin;
			s->m2 += d * (x - s->mean);
		}
		done += n;
	}
	/* a double holds integers exactly only up to 2^53 */
	if (t->dtype == LMK_I64 && s->fin > 0) {
		s->imin = INT64_MAX;
		s->imax = INT64_MIN;
		for (int64_t i = 0; i < s->n; i++) {
			int64_t v;
			memcpy(&v, p + i * 8, 8);
			s->imin = v < s->imin ? v : s->imin;
			s->imax = v > s->imax ? v : s->imax;
		}
	} else if (is_int(t->dtype) && s->fin > 0) {
		s->imin = (int64_t)s->min;   /* exact: at most 32 bits */
		s->imax = (int64_t)s->max;
	}
}

/* Comparison of two tensors of the same dtype and shape, as numpy.isclose:
 * |a - b| <= atol + rtol * |b|, NaN equal to NaN, inf equal to the same inf. */
struct cmp {
	int64_t n, bad, nanmis;
	double maxabs, maxrel;
};

static void compare(const lmk_ftensor *ta, const lmk_ftensor *tb, double rtol, double atol,
		    struct cmp *c)
{
	const unsigned char *pa = ta->data, *pb = tb->data;
	size_t sz = lmk_dtype_size(ta->dtype);
	double a[CHUNK], b[CHUNK];

	memset(c, 0, sizeof *c);
	c->n = lmk_ftensor_numel(ta);
	/* identical bytes are equal, and exactly so for integers past 2^53 */
	if (ta->nbytes == tb->nbytes && memcmp(pa, pb, ta->nbytes) == 0)
		return;
	for (int64_t done = 0; done < c->n;) {
		size_t n = c->n - done < CHUNK ? (size_t)(c->n - done) : CHUNK;
		to_double(ta->dtype, pa + done * sz, n, a);
		to_double(tb->dtype, pb + done * sz, n, b);
		for (size_t i = 0; i < n; i++) {
			double x = a[i], y = b[i], d, r;
			if (isnan(x) || isnan(y)) {
				if (!(isnan(x) && isnan(y))) {
					c->nanmis++;
					c->bad++;
				}
				continue;
			}
			if (x == y)
				continue;
			d = fabs(x - y);
			r = (isinf(y) || y == 0) ? INFINITY : d / fabs(y);
			if (d > c->maxabs)
				c->maxabs = d;
			if (r > c->maxrel)
				c->maxrel = r;
			if (isinf(x) || isinf(y) || d > atol + rtol * fabs(y))
				c->bad++;
		}
		done += n;
	}
}

/* ---- commands ---- */

static void info_frame(FILE *o, const char *file, long idx, const lmk_frame *f)
{
	char shp[SHAPE_MAX], num[32];
	int wn = 4, wd = 5, ws = 5, wb = 5;
	size_t total = 0;

	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		int n;
		total += t->nbytes;
		if ((n = text_width(t->name)) > wn)
			wn = n;
		if ((n = (int)strlen(lmk_dtype_name(t->dtype))) > wd)
			wd = n;
		if ((n = (int)strlen(shape_str(t, shp, sizeof shp))) > ws)
			ws = n;
		if ((n = snprintf(num, sizeof num, "%zu", t->nbytes)) > wb)
			wb = n;
	}
	put_text(o, shown(file));
	fprintf(o, ": frame %ld: %d tensor%s, %zu bytes\n", idx, f->ntensors,
		f->ntensors == 1 ? "" : "s", total);
	for (int i = 0; i < f->nmeta; i++) {
		fputs("  ", o);
		put_text(o, f->key[i]);
		putc('=', o);
		put_text(o, f->val[i]);
		putc('\n', o);
	}
	if (f->ntensors == 0)
		return;
	fprintf(o, "  %-*s  %-*s  %-*s  %*s\n", wn, "NAME", wd, "DTYPE", ws, "SHAPE", wb, "BYTES");
	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		fputs("  ", o);
		put_padded(o, t->name, wn);
		fprintf(o, "  %-*s  %-*s  %*zu\n", wd, lmk_dtype_name(t->dtype), ws,
			shape_str(t, shp, sizeof shp), wb, t->nbytes);
	}
}

static void info_frame_json(FILE *o, const char *file, long idx, const lmk_frame *f)
{
	json_t *j = json_frame_head(file, idx, f), *ts = json_array();

	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		json_t *jt = json_object(), *sh = json_array();
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(sh, json_integer(t->shape[d]));
		json_object_set_new(jt, "name", jstr(t->name));
		json_object_set_new(jt, "dtype", json_string(lmk_dtype_name(t->dtype)));
		json_object_set_new(jt, "shape", sh);
		json_object_set_new(jt, "bytes", json_integer((json_int_t)t->nbytes));
		json_array_append_new(ts, jt);
	}
	json_object_set_new(j, "tensors", ts);
	put_json(o, j);
}

static void fmt_stat(char *buf, size_t cap, double v, int fin)
{
	if (!fin)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.6g", v);
}

static void fmt_int(char *buf, size_t cap, int64_t v, int fin)
{
	if (!fin)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%lld", (long long)v);
}

#define NSTATCOL 9

static void stat_frame(FILE *o, const char *file, long idx, const lmk_frame *f)
{
	static const char *const head[NSTATCOL] = {
		"NAME", "DTYPE", "N", "MIN", "MAX", "MEAN", "STD", "NAN", "INF",
	};
	int w[NSTATCOL];
	char (*cell)[NSTATCOL][32] = NULL;

	if (f->ntensors > 0 && !(cell = calloc((size_t)f->ntensors, sizeof *cell)))
		prog_die("out of memory");
	for (int c = 0; c < NSTATCOL; c++)
		w[c] = (int)strlen(head[c]);
	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		struct stats s;
		int in = is_int(t->dtype), fin;
		stats_of(t, &s);
		fin = s.fin > 0;
		snprintf(cell[i][1], 32, "%s", lmk_dtype_name(t->dtype));
		snprintf(cell[i][2], 32, "%lld", (long long)s.n);
		if (in) {
			fmt_int(cell[i][3], 32, s.imin, fin);
			fmt_int(cell[i][4], 32, s.imax, fin);
		} else {
			fmt_stat(cell[i][3], 32, s.min, fin);
			fmt_stat(cell[i][4], 32, s.max, fin);
		}
		fmt_stat(cell[i][5], 32, s.mean, fin);
		fmt_stat(cell[i][6], 32, sqrt(s.m2 / (double)s.fin), fin);
		snprintf(cell[i][7], 32, "%lld", (long long)s.nan);
		snprintf(cell[i][8], 32, "%lld", (long long)s.inf);
		if (text_width(t->name) > w[0])
			w[0] = text_width(t->name);
		for (int c = 1; c < NSTATCOL; c++)
			if ((int)strlen(cell[i][c]) > w[c])
				w[c] = (int)strlen(cell[i][c]);
	}
	put_text(o, shown(file));
	fprintf(o, ": frame %ld: %d tensor%s\n", idx, f->ntensors, f->ntensors == 1 ? "" : "s");
	if (f->ntensors > 0) {
		fprintf(o, "  %-*s  %-*s", w[0], head[0], w[1], head[1]);
		for (int c = 2; c < NSTATCOL; c++)
			fprintf(o, "  %*s", w[c], head[c]);
		putc('\n', o);
	}
	for (int i = 0; i < f->ntensors; i++) {
		fputs("  ", o);
		put_padded(o, f->t[i].name, w[0]);
		fprintf(o, "  %-*s", w[1], cell[i][1]);
		for (int c = 2; c < NSTATCOL; c++)
			fprintf(o, "  %*s", w[c], cell[i][c]);
		putc('\n', o);
	}
	free(cell);
}

static void stat_frame_json(FILE *o, const char *file, long idx, const lmk_frame *f)
{
	json_t *j = json_frame_head(file, idx, f), *ts = json_array();

	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		json_t *jt = json_object();
		struct stats s;
		int fin;
		stats_of(t, &s);
		fin = s.fin > 0;
		json_object_set_new(jt, "name", jstr(t->name));
		json_object_set_new(jt, "dtype", json_string(lmk_dtype_name(t->dtype)));
		json_object_set_new(jt, "n", json_integer(s.n));
		if (!fin) {
			json_object_set_new(jt, "min", json_null());
			json_object_set_new(jt, "max", json_null());
		} else if (is_int(t->dtype)) {
			json_object_set_new(jt, "min", json_integer(s.imin));
			json_object_set_new(jt, "max", json_integer(s.imax));
		} else {
			json_object_set_new(jt, "min", jnum(s.min));
			json_object_set_new(jt, "max", jnum(s.max));
		}
		json_object_set_new(jt, "mean", fin ? jnum(s.mean) : json_null());
		json_object_set_new(jt, "std", fin ? jnum(sqrt(s.m2 / (double)s.fin)) : json_null());
		json_object_set_new(jt, "nan", json_integer(s.nan));
		json_object_set_new(jt, "inf", json_integer(s.inf));
		json_array_append_new(ts, jt);
	}
	json_object_set_new(j, "tensors", ts);
	put_json(o, j);
}

typedef void (*frame_fn)(FILE *, const char *, long, const lmk_frame *);

/* info and stat: the same walk over every frame of every file. */
static int walk(int argc, char **argv, const struct opts *o, frame_fn human, frame_fn json)
{
	FILE *out = text_open(o->out);

	for (int a = 0; a < argc; a++) {
		lmk_reader *r = in_open(argv[a]);
		lmk_frame f;
		long idx = 0;
		while (in_next(r, &f)) {
			(o->json ? json : human)(out, argv[a], idx++, &f);
			lmk_frame_free(&f);
		}
		lmk_frame_free(&f);
		lmk_reader_close(r);
		if (idx == 0)
			prog_warn("%s: no frames", shown(argv[a]));
	}
	text_close(out, o->out);
	return 0;
}

static int cmd_info(int argc, char **argv, const struct opts *o)
{
	return walk(argc, argv, o, info_frame, info_frame_json);
}

static int cmd_stat(int argc, char **argv, const struct opts *o)
{
	return walk(argc, argv, o, stat_frame, stat_frame_json);
}

static int cmd_cat(int argc, char **argv, const struct opts *o)
{
	lmk_writer *w;

	prog_check_binary_out(o->out, o->force);
	w = bin_open(o);
	for (int a = 0; a < argc; a++) {
		lmk_reader *r = in_open(argv[a]);
		lmk_frame f;
		while (in_next(r, &f)) {
			if (lmk_writer_put(w, &f) < 0)
				die_lib();
			lmk_frame_free(&f);
		}
		lmk_frame_free(&f);
		lmk_reader_close(r);
	}
	bin_close(w);
	return 0;
}

static int cmd_get(int argc, char **argv, const struct opts *o)
{
	const char *name = argv[0], *file = argc > 1 ? argv[1] : "-";
	const lmk_ftensor *t = NULL;
	lmk_reader *r;
	lmk_writer *w;
	lmk_frame f, one;
	long idx = 0;

	prog_check_binary_out(o->out, o->force);
	r = in_open(file);
	for (;; idx++) {
		if (!in_next(r, &f)) {
			lmk_frame_free(&f);
			if (o->given & F_FRAME)
				prog_die("%s: no frame %ld (the stream has %ld frame%s)", shown(file),
					 o->frame, idx, idx == 1 ? "" : "s");
			prog_die("%s: no tensor '%s' in %ld frame%s", shown(file), name, idx,
				 idx == 1 ? "" : "s");
		}
		if (!(o->given & F_FRAME) || idx == o->frame) {
			t = lmk_frame_find(&f, name);
			if (t)
				break;
			if (o->given & F_FRAME)
				prog_die("%s: frame %ld: no tensor '%s'", shown(file), idx, name);
		}
		lmk_frame_free(&f);
	}
	/* The source frame's metadata says what the whole record was, which one
	 * tensor cut out of it no longer is, so it is not copied. */
	lmk_frame_init(&one);
	if (lmk_frame_add(&one, t->name, t->dtype, t->ndim, t->shape, t->data) < 0)
		die_lib();
	w = bin_open(o);
	if (lmk_writer_put(w, &one) < 0)
		die_lib();
	bin_close(w);
	lmk_frame_free(&one);
	lmk_frame_free(&f);
	lmk_reader_close(r);
	return 0;
}

struct diffsum {
	long tensors, differ, frames_alone;
};

static void diff_line_start(FILE *o, long idx, const char *name)
{
	fprintf(o, "frame %ld '", idx);
	put_text(o, name);
	fputs("': ", o);
}

static void diff_frames(FILE *o, const char *fa, const char *fb, long idx, const lmk_frame *a,
			const lmk_frame *b, const struct opts *op, struct diffsum *s)
{
	char sa[SHAPE_MAX], sb[SHAPE_MAX];
	int quiet = op->quiet;

	for (int i = 0; i < a->ntensors; i++) {
		const lmk_ftensor *ta = &a->t[i], *tb = lmk_frame_find(b, ta->name);
		struct cmp c;
		int same_shape;

		s->tensors++;
		if (!tb) {
			s->differ++;
			if (!quiet) {
				diff_line_start(o, idx, ta->name);
				fputs("only in ", o);
				put_text(o, shown(fa));
				putc('\n', o);
			}
			continue;
		}
		same_shape = ta->ndim == tb->ndim &&
			memcmp(ta->shape, tb->shape, ta->ndim * sizeof ta->shape[0]) == 0;
		if (ta->dtype != tb->dtype || !same_shape) {
			s->differ++;
			if (!quiet) {
				diff_line_start(o, idx, ta->name);
				if (ta->dtype != tb->dtype)
					fprintf(o, "dtype %s vs %s%s", lmk_dtype_name(ta->dtype),
						lmk_dtype_name(tb->dtype), same_shape ? "" : ", ");
				if (!same_shape)
					fprintf(o, "shape %s vs %s", shape_str(ta, sa, sizeof sa),
						shape_str(tb, sb, sizeof sb));
				putc('\n', o);
			}
			continue;
		}
		compare(ta, tb, op->rtol, op->atol, &c);
		if (c.bad)
			s->differ++;
		if (quiet)
			continue;
		diff_line_start(o, idx, ta->name);
		fprintf(o, "max_abs %.6g, max_rel %.6g: ", c.maxabs, c.maxrel);
		if (!c.bad) {
			fputs("match\n", o);
			continue;
		}
		fprintf(o, "%lld of %lld elements differ", (long long)c.bad, (long long)c.n);
		if (c.nanmis)
			fprintf(o, " (%lld NaN mismatch%s)", (long long)c.nanmis,
				c.nanmis == 1 ? "" : "es");
		putc('\n', o);
	}
	for (int i = 0; i < b->ntensors; i++) {
		if (lmk_frame_find(a, b->t[i].name))
			continue;
		s->tensors++;
		s->differ++;
		if (!quiet) {
			diff_line_start(o, idx, b->t[i].name);
			fputs("only in ", o);
			put_text(o, shown(fb));
			putc('\n', o);
		}
	}
}

static int cmd_diff(int argc, char **argv, const struct opts *o)
{
	const char *fa = argv[0], *fb = argv[1];
	struct diffsum s = {0, 0, 0};
	lmk_reader *ra, *rb;
	int enda = 0, endb = 0;
	FILE *out;

	if (strcmp(fa, "-") == 0 && strcmp(fb, "-") == 0)
		prog_usage_error("diff reads at most one of A and B from standard input");
	out = text_open(o->out);
	ra = in_open(fa);
	rb = in_open(fb);
	for (long idx = 0;; idx++) {
		lmk_frame a, b;
		int ha = !enda && in_next(ra, &a), hb = !endb && in_next(rb, &b);
		if (!ha && !enda)
			lmk_frame_free(&a);
		if (!hb && !endb)
			lmk_frame_free(&b);
		enda |= !ha;
		endb |= !hb;
		if (enda && endb)
			break;
		if (ha && hb) {
			diff_frames(out, fa, fb, idx, &a, &b, o, &s);
		} else {
			const lmk_frame *f = ha ? &a : &b;
			s.frames_alone++;
			s.tensors += f->ntensors;
			s.differ += f->ntensors;
			if (!o->quiet) {
				fprintf(out, "frame %ld: only in ", idx);
				put_text(out, shown(ha ? fa : fb));
				fprintf(out, " (%d tensor%s)\n", f->ntensors,
					f->ntensors == 1 ? "" : "s");
			}
		}
		if (ha)
			lmk_frame_free(&a);
		if (hb)
			lmk_frame_free(&b);
	}
	lmk_reader_close(ra);
	lmk_reader_close(rb);
	if (!o->quiet) {
		put_text(out, shown(fa));
		fputs(" and ", out);
		put_text(out, shown(fb));
		if (s.differ || s.frames_alone) {
			fprintf(out, " differ: %ld of %ld tensors", s.differ, s.tensors);
			if (s.frames_alone)
				fprintf(out, ", %ld frame%s only in one", s.frames_alone,
					s.frames_alone == 1 ? "" : "s");
		} else {
			fprintf(out, " match: %ld tensor%s", s.tensors, s.tensors == 1 ? "" : "s");
		}
		fprintf(out, " (rtol %g, atol %g)\n", o->rtol, o->atol);
	}
	text_close(out, o->out);
	return s.differ || s.frames_alone ? 1 : 0;
}

/* ---- convert ---- */

/* Writes text to path through a temporary file beside it, renamed into
 * place, as the library writes checkpoints. */
static void write_text(const char *path, const char *text)
{
	size_t n = strlen(path) + 32;
	char *tmp = malloc(n);
	FILE *f;

	if (!tmp)
		prog_die("out of memory");
	snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
	if (!(f = fopen(tmp, "w")))
		prog_die("cannot open '%s': %s", tmp, strerror(errno));
	fputs(text, f);
	if ((ferror(f) | (fclose(f) != 0)) || rename(tmp, path) != 0) {
		int e = errno ? errno : EIO;
		unlink(tmp);
		prog_die("cannot write '%s': %s", path, strerror(e));
	}
	free(tmp);
}

static void write_json(const char *dir, const char *name, json_t *j)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *path = malloc(n), *s;

	if (!path || !(s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))))
		prog_die("out of memory");
	snprintf(path, n, "%s/%s", dir, name);
	char *text = realloc(s, strlen(s) + 2);
	if (!text)
		prog_die("out of memory");
	strcat(text, "\n");
	write_text(path, text);
	free(text);
	free(path);
	json_decref(j);
}

/* A string value, or NULL when absent. */
static char *gguf_string(const lmk_gguf *g, const char *key)
{
	char *v = NULL;

	if (lmk_gguf_get_str(g, key, &v) < 0) {
		lmk_err_clear();
		return NULL;
	}
	return v;
}

/* The i-th string of an array as JSON (GGUF strings are not NUL-terminated). */
static json_t *gguf_jstr(const lmk_gguf *g, const lmk_gguf_kv *kv, uint64_t i)
{
	const lmk_gguf_str *s = lmk_gguf_arr_str(kv, i);
	json_t *j = s ? json_stringn(s->s, s->len) : NULL;

	if (!j)
		prog_die("%s: %s[%llu]: expected a UTF-8 string", g->path, kv->key, (unsigned long long)i);
	return j;
}

static const lmk_gguf_kv *gguf_strings(const lmk_gguf *g, const char *key)
{
	const lmk_gguf_kv *kv = lmk_gguf_find(g, key);

	return kv && kv->type == LMK_GGUF_ARRAY && kv->atype == LMK_GGUF_STRING && kv->strs ? kv : NULL;
}

/* The spelling of token id, or JSON null. */
static json_t *token_or_null(const lmk_gguf *g, const lmk_gguf_kv *toks, const char *key)
{
	int64_t id;

	if (lmk_gguf_get_i64(g, key, &id) < 0 || id < 0 || (uint64_t)id >= toks->n) {
		lmk_err_clear();
		return json_null();
	}
	return gguf_jstr(g, toks, (uint64_t)id);
}

/* tokenizer.json and tokenizer_config.json from the tokenizer.ggml.* keys,
 * for the byte-level BPE kinds whose pre-tokenizer the tokenizers library
 * has as built-in steps: gpt2 (ByteLevel's own regex) and smollm (digits one
 * by one, then the same); the others would need their regular expressions
 * spelled out, which lib/bpe.c keeps to itself.
 * @return : NULL when written, else why not (for a warning) */
static const char *write_tokenizer(const lmk_gguf *g, const char *dir, int max_len)
{
	static char why[160];
	char *model = gguf_string(g, "tokenizer.ggml.model"), *pre, *tmpl;
	const lmk_gguf_kv *toks, *merges, *types;
	json_t *vocab, *added, *mj, *bl, *pt, *root, *tc;
	int digits;
	int64_t v;

	if (!model || strcmp(model, "gpt2")) {
		snprintf(why, sizeof why, "tokenizer.ggml.model is %s%s%s, not byte-level BPE (gpt2)",
			 model ? "'" : "", model ? model : "absent", model ? "'" : "");
		free(model);
		return why;
	}
	free(model);
	pre = gguf_string(g, "tokenizer.ggml.pre");
	if (!pre || !strcmp(pre, "default") || !strcmp(pre, "gpt2")) {
		digits = 0;
	} else if (!strcmp(pre, "smollm") || !strcmp(pre, "starcoder")) {
		digits = 1;
	} else {
		snprintf(why, sizeof why, "the pre-tokenizer '%.60s' is not converted (gpt2 and smollm are)",
			 pre);
		free(pre);
		return why;
	}
	free(pre);
	if (lmk_gguf_get_i64(g, "tokenizer.ggml.add_bos_token", &v) == 0 && v)
		return "add_bos_token (a post-processor adding bos) is not converted";
	lmk_err_clear();
	toks = gguf_strings(g, "tokenizer.ggml.tokens");
	merges = gguf_strings(g, "tokenizer.ggml.merges");
	types = lmk_gguf_find(g, "tokenizer.ggml.token_type");
	if (!toks || !merges)
		return "tokenizer.ggml.tokens or tokenizer.ggml.merges is missing";
	if (types && (types->type != LMK_GGUF_ARRAY || types->n != toks->n))
		return "tokenizer.ggml.token_type does not match tokenizer.ggml.tokens";

	vocab = json_object();
	added = json_array();
	mj = json_array();
	for (uint64_t i = 0; i < toks->n; i++) {
		json_t *spell = gguf_jstr(g, toks, i);
		int64_t type = 1;
		if (types && lmk_gguf_arr_i64(types, i, &type) < 0)
			prog_die_lib();
		/* control tokens (3) are special; user-defined ones (4) are
		 * added tokens matched in the text, normalized as HF's are */
		if (type == 3 || type == 4)
			json_array_append_new(added, json_pack("{s:I, s:O, s:b, s:b, s:b, s:b, s:b}",
				"id", (json_int_t)i, "content", spell, "single_word", 0, "lstrip", 0,
				"rstrip", 0, "normalized", type == 4, "special", type == 3));
		json_object_set_new(vocab, json_string_value(spell), json_integer((json_int_t)i));
		json_decref(spell);
	}
	for (uint64_t i = 0; i < merges->n; i++)
		json_array_append_new(mj, gguf_jstr(g, merges, i));
	bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
		       "trim_offsets", 1, "use_regex", 1);
	pt = digits ? json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers",
				"type", "Digits", "individual_digits", 1, bl)
		    : bl;
	root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o}", "version", "1.0", "truncation",
			 "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pt);
	json_object_set_new(root, "post_processor",
			    json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
				      "trim_offsets", 0, "use_regex", 1));
	json_object_set_new(root, "decoder",
			    json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
				      "trim_offsets", 1, "use_regex", 1));
	json_object_set_new(root, "model",
			    json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
				      "dropout", "unk_token", "continuing_subword_prefix",
				      "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
				      "ignore_merges", 0, "vocab", vocab, "merges", mj));
	if (!root || !json_object_get(root, "model"))
		prog_die("out of memory");
	write_json(dir, "tokenizer.json", root);

	tc = json_pack("{s:b, s:b, s:o, s:o, s:o, s:o}", "add_bos_token", 0, "add_eos_token", 0,
		       "bos_token", token_or_null(g, toks, "tokenizer.ggml.bos_token_id"),
		       "eos_token", token_or_null(g, toks, "tokenizer.ggml.eos_token_id"),
		       "unk_token", token_or_null(g, toks, "tokenizer.ggml.unknown_token_id"),
		       "pad_token", token_or_null(g, toks, "tokenizer.ggml.padding_token_id"));
	if (!tc)
		prog_die("out of memory");
	if ((tmpl = gguf_string(g, "tokenizer.chat_template"))) {
		json_t *t = json_string(tmpl);
		if (!t)
			prog_die("%s: tokenizer.chat_template: expected a UTF-8 string", g->path);
		json_object_set_new(tc, "chat_template", t);
		free(tmpl);
	}
	json_object_set_new(tc, "clean_up_tokenization_spaces", json_false());
	json_object_set_new(tc, "model_max_length", json_integer(max_len));
	json_object_set_new(tc, "tokenizer_class", json_string("GPT2Tokenizer"));
	write_json(dir, "tokenizer_config.json", tc);
	return NULL;
}

/* generation_config.json: the special tokens, and sampling settings when
 * the GGUF carries llama.cpp's general.sampling.* keys. */
static void write_generation_config(const lmk_gguf *g, const lmk_llama_config *cfg, const char *dir)
{
	json_t *j = json_object();
	int64_t v;
	float f;
	int sampling = 0;

	json_object_set_new(j, "bos_token_id", cfg->bos_token_id >= 0 ? json_integer(cfg->bos_token_id)
								       : json_null());
	if (cfg->neos == 1) {
		json_object_set_new(j, "eos_token_id", json_integer(cfg->eos_token_id[0]));
	} else if (cfg->neos > 1) {
		json_t *a = json_array();
		for (int i = 0; i < cfg->neos; i++)
			json_array_append_new(a, json_integer(cfg->eos_token_id[i]));
		json_object_set_new(j, "eos_token_id", a);
	}
	if (lmk_gguf_get_i64(g, "tokenizer.ggml.padding_token_id", &v) == 0)
		json_object_set_new(j, "pad_token_id", json_integer(v));
	if (lmk_gguf_get_f32(g, "general.sampling.temp", &f) == 0 && isfinite(f)) {
		json_object_set_new(j, "temperature", json_real(f));
		sampling = 1;
	}
	if (lmk_gguf_get_f32(g, "general.sampling.top_p", &f) == 0 && isfinite(f)) {
		json_object_set_new(j, "top_p", json_real(f));
		sampling = 1;
	}
	if (lmk_gguf_get_i64(g, "general.sampling.top_k", &v) == 0) {
		json_object_set_new(j, "top_k", json_integer(v));
		sampling = 1;
	}
	lmk_err_clear();
	if (sampling)
		json_object_set_new(j, "do_sample", json_true());
	write_json(dir, "generation_config.json", j);
}

static int cmd_convert(int argc, char **argv, const struct opts *o)
{
	const char *in = argv[0], *dir = o->out, *why;
	lmk_gguf g;
	lmk_llama m;
	struct stat st;

	if (!(o->given & F_OUTPUT) || strcmp(dir, "-") == 0)
		prog_usage_error("'convert' needs -o DIR, the directory to write");
	if (stat(in, &st) == 0 && S_ISDIR(st.st_mode))
		prog_die("'%s' is a directory, not a GGUF file", in);
	if (lmk_gguf_open(&g, in) < 0)
		die_lib();
	if (lmk_gguf_llama_load(&g, &m, 0) < 0)
		die_lib();
	if (lmk_ckpt_save(dir, &m, o->dtype) < 0)
		die_lib();
	write_generation_config(&g, &m.cfg, dir);
	why = write_tokenizer(&g, dir, m.cfg.max_position_embeddings);
	if (why)
		prog_warn("%s: no tokenizer.json written: %s", in, why);
	if (!o->quiet)
		fprintf(stderr, "tsr: %s: wrote %s: a llama of %d layers, %.1fM parameters in %s%s\n", in,
			dir, m.cfg.num_hidden_layers, (double)m.params.n / 1e6, lmk_dtype_name(o->dtype),
			why ? "" : ", with its tokenizer");
	lmk_llama_free(&m);
	lmk_gguf_close(&g);
	return 0;
}

static int cmd_help(int argc, char **argv, const struct opts *o)
{
	prog_help();
}

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv, const struct opts *o);
	int minargs, maxargs;   /* operands; -1: any number */
	unsigned allowed;
	const char *need;       /* what too few operands lack */
} commands[] = {
	{"info", cmd_info, 0, -1, F_OUTPUT | F_JSON, NULL},
	{"cat", cmd_cat, 0, -1, F_OUTPUT | F_GZIP | F_FORCE, NULL},
	{"get", cmd_get, 1, 2, F_OUTPUT | F_GZIP | F_FORCE | F_FRAME, "a tensor NAME"},
	{"stat", cmd_stat, 0, -1, F_OUTPUT | F_JSON, NULL},
	{"diff", cmd_diff, 2, 2, F_OUTPUT | F_RTOL | F_ATOL, "two files, A and B"},
	{"convert", cmd_convert, 1, 1, F_OUTPUT | F_DTYPE, "a GGUF file"},
	{"help", cmd_help, 0, -1, 0, NULL},
};


int main(int argc, char **argv)
{
	struct opts o = {.out = "-", .rtol = 1e-5, .atol = 1e-8, .dtype = LMK_F32};
	/* static: still reachable when a usage error exits, so that the leak
	 * checker of sanitizer builds does not count it */
	static char **pos;
	char *dash[] = {"-"};
	int npos = 0, c, cur;
	const struct command *cmd = NULL;

	prog_init("tsr", usage);
	if (!(pos = calloc((size_t)argc + 1, sizeof *pos)))
		prog_die("out of memory");
	/* "-" first: operands come back in order as 1, so options may follow
	 * the command and its files whatever POSIXLY_CORRECT says. */
	for (;;) {
		cur = optind;
		c = getopt_long(argc, argv, "-:o:zqh", longopts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 1: pos[npos++] = optarg; break;
		case 'o': o.out = optarg; o.given |= F_OUTPUT; break;
		case 'z': o.gzip = 1; o.given |= F_GZIP; break;
		case PROG_OPT_FORCE: o.force = 1; o.given |= F_FORCE; break;
		case OPT_JSON: o.json = 1; o.given |= F_JSON; break;
		case OPT_FRAME:
			o.frame = prog_parse_long("--frame", optarg, 0, LONG_MAX);
			o.given |= F_FRAME;
			break;
		case OPT_RTOL:
			o.rtol = prog_parse_double("--rtol", optarg, 0, INFINITY);
			o.given |= F_RTOL;
			break;
		case OPT_ATOL:
			o.atol = prog_parse_double("--atol", optarg, 0, INFINITY);
			o.given |= F_ATOL;
			break;
		case OPT_DTYPE:
			if (!strcmp(optarg, "f32"))
				o.dtype = LMK_F32;
			else if (!strcmp(optarg, "bf16"))
				o.dtype = LMK_BF16;
			else if (!strcmp(optarg, "f16"))
				o.dtype = LMK_F16;
			else
				prog_usage_error("option '--dtype' needs f32, bf16 or f16, not '%s'", optarg);
			o.given |= F_DTYPE;
			break;
		case 'q': o.quiet = 1; prog_set_quiet(1); break;
		case 'h': prog_help();
		case PROG_OPT_VERSION: prog_version();
		default: prog_bad_option(longopts, c, argv[cur < argc ? cur : argc - 1]);
		}
	}
	while (optind < argc)
		pos[npos++] = argv[optind++];
	if (npos == 0)
		prog_usage_error("missing command");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(pos[0], commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd)
		prog_usage_error("unknown command '%s'", pos[0]);
	if (cmd->run == cmd_help)
		prog_help();
	for (int b = 0; b < (int)(sizeof flagname / sizeof flagname[0]); b++)
		if ((o.given & (1u << b)) && !(cmd->allowed & (1u << b)))
			prog_usage_error("option '%s' does not apply to '%s'", flagname[b], cmd->name);
	npos--;
	if (npos < cmd->minargs)
		prog_usage_error("'%s' needs %s", cmd->name, cmd->need);
	if (cmd->maxargs >= 0 && npos > cmd->maxargs)
		prog_usage_error("too many arguments for '%s'", cmd->name);
	c = npos ? cmd->run(npos, pos + 1, &o) : cmd->run(1, dash, &o);
	free(pos);
	return c;
}
