/* frame.c: tensor frames (safetensors files), their readers and writers.
 * Reading: an 8-byte length, a JSON header checked field by field as hostile
 * input, then the data, either read into a heap blob or, for a large plain
 * regular file, pointed into a mapping of it. Frames hold references to the
 * blobs their tensors point into, so they outlive the reader. gzip input is
 * recognised by its magic bytes and inflated on the fly.
 * Writing: the compact JSON header padded with spaces so that 8 + N is a
 * multiple of 8 (as Python's safetensors does), then the data in the order
 * the tensors were added; paths are written to a temporary file beside the
 * final name and renamed into place. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "err.h"
#include "frame.h"

#define MAP_MIN ((size_t)1 << 20) /* smallest regular file worth mapping */
#define IOBUF ((size_t)1 << 16)   /* reader input and writer output buffers */
#define GROW0 ((size_t)1 << 16)   /* first allocation for a header or data */
#define IOMAX ((size_t)1 << 30)   /* most bytes asked of one read or write */

/* Storage that tensors point into: a heap block or a file mapping. */
struct lmk_blob {
	atomic_int refs;
	int mapped;
	void *p;
	size_t len;
};

/* Tensors with no data point here rather than at NULL, so that callers may
 * pass t->data to memcpy with a length of 0. */
static const unsigned char no_data[8];

static struct lmk_blob *blob_new(void *p, size_t len, int mapped)
{
	struct lmk_blob *b = malloc(sizeof *b);
	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->mapped = mapped;
	b->p = p;
	b->len = len;
	return b;
}

static void blob_unref(struct lmk_blob *b)
{
	if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	if (b->mapped)
		munmap(b->p, b->len);
	else
		free(b->p);
	free(b);
}

static int grow(void **p, int *cap, int need, size_t elt)
{
	if (need <= *cap)
		return 0;
	int n = *cap ? *cap : 4;
	while (n < need) {
		if (n > (1 << 29))
			return lmk_err(LMK_ENOMEM, "frame: too many entries");
		n *= 2;
	}
	void *q = realloc(*p, (size_t)n * elt);
	if (!q)
		return lmk_err(LMK_ENOMEM, "frame: out of memory");
	*p = q;
	*cap = n;
	return 0;
}

/* Adds a reference to b to f. */
static int frame_hold(lmk_frame *f, struct lmk_blob *b)
{
	for (int i = 0; i < f->nblobs; i++)
		if (f->blobs[i] == b)
			return 0;
	if (grow((void **)&f->blobs, &f->blobcap, f->nblobs + 1, sizeof *f->blobs))
		return LMK_ENOMEM;
	atomic_fetch_add(&b->refs, 1);
	f->blobs[f->nblobs++] = b;
	return 0;
}

/* ---- messages ---- */

/* Copies at most max bytes of s for a message, control characters as '?',
 * cut at a UTF-8 character boundary with "..." when too long. */
static const char *quote(char *out, size_t outsz, const char *s)
{
	size_t max = outsz - 4, n = 0;
	for (; s[n] && n < max; n++)
		out[n] = ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) ? '?' : s[n];
	if (s[n]) {
		while (n > 0 && ((unsigned char)out[n] & 0xc0) == 0x80)
			n--;
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = 0;
	return out;
}

/* "FILE: frame I: [tensor 'T': ]message" */
static int ferr(int code, const char *file, int idx, const char *tensor, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int ferr(int code, const char *file, int idx, const char *tensor, const char *fmt, ...)
{
	char msg[512], q[72];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (tensor)
		return lmk_err(code, "%s: frame %d: tensor '%s': %s", file, idx,
			       quote(q, sizeof q, tensor), msg);
	return lmk_err(code, "%s: frame %d: %s", file, idx, msg);
}

static const char *shape_str(char *buf, size_t sz, int ndim, const int64_t *shape)
{
	size_t n = 0;
	n += snprintf(buf + n, sz - n, "[");
	for (int i = 0; i < ndim && n < sz; i++)
		n += snprintf(buf + n, sz - n, "%s%lld", i ? "," : "", (long long)shape[i]);
	if (n < sz)
		snprintf(buf + n, sz - n, "]");
	return buf;
}

static const char *json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (unsigned char)v;
}

/* ---- building frames ---- */

void lmk_frame_init(lmk_frame *f)
{
	memset(f, 0, sizeof *f);
}

void lmk_frame_free(lmk_frame *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->ntensors; i++)
		free(f->t[i].name);
	free(f->t);
	for (int i = 0; i < f->nmeta; i++) {
		free(f->key[i]);
		free(f->val[i]);
	}
	free(f->key);
	free(f->val);
	for (int i = 0; i < f->nblobs; i++)
		blob_unref(f->blobs[i]);
	free(f->blobs);
	lmk_frame_init(f);
}

/* Bytes of a tensor of this dtype and shape.
 * @return : 0, or -1 if a dimension is negative or the size overflows */
static int shape_nbytes(lmk_dtype dt, int ndim, const int64_t *shape, uint64_t *nbytes)
{
	uint64_t n = lmk_dtype_size(dt);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[i], &n))
			return -1;
	}
	/* offsets are JSON integers (int64), and the data must fit in memory */
	if (n > INT64_MAX)
		return -1;
#if SIZE_MAX < UINT64_MAX
	if (n > SIZE_MAX)
		return -1;
#endif
	*nbytes = n;
	return 0;
}

/* jansson is the judge of what it can write: valid UTF-8 without NUL. */
static int utf8_ok(const char *s)
{
	json_t *j = json_string(s);
	json_decref(j);
	return j != NULL;
}

static int check_tensor(const char *name, lmk_dtype dt, int ndim, const int64_t *shape,
			const void *data, uint64_t *nbytes)
{
	char q[72], sh[256];

	if (!name || !*name)
		return lmk_err(LMK_EINVAL, "frame: empty tensor name");
	quote(q, sizeof q, name);
	if (strcmp(name, "__metadata__") == 0)
		return lmk_err(LMK_EINVAL, "frame: tensor name '__metadata__' is reserved");
	if (!utf8_ok(name))
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': name is not valid UTF-8", q);
	if ((unsigned)dt >= LMK_NDTYPE)
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': invalid dtype %d", q, (int)dt);
	if (ndim < 0 || ndim > LMK_FRAME_MAXDIM)
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': %d dimensions, expected 0 to %d",
			       q, ndim, LMK_FRAME_MAXDIM);
	if (ndim > 0 && !shape)
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': no shape for %d dimensions", q, ndim);
	if (shape_nbytes(dt, ndim, shape, nbytes))
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': bad shape %s %s", q,
			       shape_str(sh, sizeof sh, ndim, shape), lmk_dtype_name(dt));
	if (*nbytes && !data)
		return lmk_err(LMK_EINVAL, "frame: tensor '%s': no data for %llu bytes", q,
			       (unsigned long long)*nbytes);
	return 0;
}

static int add_tensor(lmk_frame *f, const char *name, lmk_dtype dt, int ndim,
		      const int64_t *shape, const void *data, int copy)
{
	uint64_t nbytes;
	char q[72];
	int rc = check_tensor(name, dt, ndim, shape, data, &nbytes);

	if (rc)
		return rc;
	if (lmk_frame_find(f, name))
		return lmk_err(LMK_EINVAL, "frame: duplicate tensor name '%s'", quote(q, sizeof q, name));
	if (grow((void **)&f->t, &f->cap, f->ntensors + 1, sizeof *f->t))
		return LMK_ENOMEM;
	char *nm = strdup(name);
	if (!nm)
		return lmk_err(LMK_ENOMEM, "frame: out of memory");
	if (nbytes == 0) {
		data = no_data;
	} else if (copy) {
		void *p = malloc(nbytes);
		struct lmk_blob *b = p ? blob_new(p, nbytes, 0) : NULL;
		if (!b || frame_hold(f, b)) {
			free(nm);
			if (b)
				blob_unref(b);
			else
				free(p);
			return lmk_err(LMK_ENOMEM, "frame: out of memory for %llu bytes",
				       (unsigned long long)nbytes);
		}
		blob_unref(b); /* the frame holds the only reference now */
		memcpy(p, data, nbytes);
		data = p;
	}
	lmk_ftensor *t = &f->t[f->ntensors++];
	memset(t, 0, sizeof *t);
	t->name = nm;
	t->dtype = dt;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->nbytes = nbytes;
	t->data = data;
	return 0;
}

int lmk_frame_add(lmk_frame *f, const char *name, lmk_dtype dt, int ndim,
		  const int64_t *shape, const void *data)
{
	return add_tensor(f, name, dt, ndim, shape, data, 0);
}

int lmk_frame_add_copy(lmk_frame *f, const char *name, lmk_dtype dt, int ndim,
		       const int64_t *shape, const void *data)
{
	return add_tensor(f, name, dt, ndim, shape, data, 1);
}

static int meta_append(lmk_frame *f, const char *key, const char *val)
{
	int cap = f->metacap;
	if (grow((void **)&f->key, &cap, f->nmeta + 1, sizeof *f->key))
		return LMK_ENOMEM;
	cap = f->metacap;
	if (grow((void **)&f->val, &cap, f->nmeta + 1, sizeof *f->val))
		return LMK_ENOMEM;
	f->metacap = cap;
	char *k = strdup(key), *v = strdup(val);
	if (!k || !v) {
		free(k);
		free(v);
		return lmk_err(LMK_ENOMEM, "frame: out of memory");
	}
	f->key[f->nmeta] = k;
	f->val[f->nmeta++] = v;
	return 0;
}

int lmk_frame_set_meta(lmk_frame *f, const char *key, const char *val)
{
	if (!key || !val)
		return lmk_err(LMK_EINVAL, "frame: metadata key and value must not be NULL");
	if (!utf8_ok(key) || !utf8_ok(val))
		return lmk_err(LMK_EINVAL, "frame: metadata is not valid UTF-8");
	for (int i = 0; i < f->nmeta; i++) {
		if (strcmp(f->key[i], key) == 0) {
			char *v = strdup(val);
			if (!v)
				return lmk_err(LMK_ENOMEM, "frame: out of memory");
			free(f->val[i]);
			f->val[i] = v;
			return 0;
		}
	}
	return meta_append(f, key, val);
}

const char *lmk_frame_meta(const lmk_frame *f, const char *key)
{
	for (int i = 0; i < f->nmeta; i++)
		if (strcmp(f->key[i], key) == 0)
			return f->val[i];
	return NULL;
}

const lmk_ftensor *lmk_frame_find(const lmk_frame *f, const char *name)
{
	for (int i = 0; i < f->ntensors; i++)
		if (strcmp(f->t[i].name, name) == 0)
			return &f->t[i];
	return NULL;
}

int64_t lmk_ftensor_numel(const lmk_ftensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

int lmk_frame_keep(lmk_frame *dst, const lmk_frame *src)
{
	for (int i = 0; i < src->nblobs; i++)
		if (frame_hold(dst, src->blobs[i]))
			return LMK_ENOMEM;
	return 0;
}

/* ---- parsing a header ---- */

struct span { uint64_t begin, end; int idx; };

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

static int check_hlen(const char *file, int idx, uint64_t n)
{
	if (n < 2)
		return ferr(LMK_EFORMAT, file, idx, NULL,
			    "header length %llu is too small, expected at least 2",
			    (unsigned long long)n);
	if (n > LMK_FRAME_MAXHEADER)
		return ferr(LMK_EFORMAT, file, idx, NULL,
			    "header length %llu is too large, expected at most %u",
			    (unsigned long long)n, LMK_FRAME_MAXHEADER);
	return 0;
}

static int parse_meta(const char *file, int idx, json_t *m, lmk_frame *f)
{
	const char *k;
	json_t *v;
	char q[72];

	if (json_is_null(m))
		return 0; /* what Rust's Option<HashMap> accepts, so do we */
	if (!json_is_object(m))
		return ferr(LMK_EFORMAT, file, idx, NULL,
			    "bad __metadata__: expected an object of strings, found %s", json_kind(m));
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return ferr(LMK_EFORMAT, file, idx, NULL,
				    "bad __metadata__: value of '%s' must be a string, found %s",
				    quote(q, sizeof q, k), json_kind(v));
		if (meta_append(f, k, json_string_value(v)))
			return LMK_ENOMEM;
	}
	return 0;
}

/* Checks one header entry and appends its tensor (without data) to f. */
static int parse_entry(const char *file, int idx, const char *name, json_t *e,
		       lmk_frame *f, struct span *sp)
{
	json_t *j;
	int64_t shape[LMK_FRAME_MAXDIM];
	uint64_t nbytes;
	char sh[256];

	if (!*name)
		return ferr(LMK_EFORMAT, file, idx, NULL, "empty tensor name");
	if (!json_is_object(e))
		return ferr(LMK_EFORMAT, file, idx, name, "expected an object, found %s", json_kind(e));

	j = json_object_get(e, "dtype");
	if (!j)
		return ferr(LMK_EFORMAT, file, idx, name, "missing dtype");
	if (!json_is_string(j))
		return ferr(LMK_EFORMAT, file, idx, name, "dtype must be a string, found %s", json_kind(j));
	int dt = lmk_dtype_parse(json_string_value(j));
	if (dt < 0) {
		char q[72];
		return ferr(LMK_EFORMAT, file, idx, name, "unknown dtype '%s'",
			    quote(q, sizeof q, json_string_value(j)));
	}

	j = json_object_get(e, "shape");
	if (!j)
		return ferr(LMK_EFORMAT, file, idx, name, "missing shape");
	if (!json_is_array(j))
		return ferr(LMK_EFORMAT, file, idx, name,
			    "bad shape: expected an array of integers, found %s", json_kind(j));
	size_t ndim = json_array_size(j);
	if (ndim > LMK_FRAME_MAXDIM)
		return ferr(LMK_EFORMAT, file, idx, name,
			    "bad shape: too many dimensions: %zu, expected at most %d",
			    ndim, LMK_FRAME_MAXDIM);
	for (size_t i = 0; i < ndim; i++) {
		json_t *d = json_array_get(j, i);
		if (!json_is_integer(d))
			return ferr(LMK_EFORMAT, file, idx, name,
				    "bad shape: dimension %zu is %s, expected an integer", i, json_kind(d));
		shape[i] = json_integer_value(d);
		if (shape[i] < 0)
			return ferr(LMK_EFORMAT, file, idx, name,
				    "bad shape: negative dimension %lld", (long long)shape[i]);
	}
	if (shape_nbytes(dt, (int)ndim, shape, &nbytes))
		return ferr(LMK_EFORMAT, file, idx, name,
			    "bad shape: %s %s overflows: more than 2^63 bytes",
			    shape_str(sh, sizeof sh, (int)ndim, shape), lmk_dtype_name(dt));

	j = json_object_get(e, "data_offsets");
	if (!j)
		return ferr(LMK_EFORMAT, file, idx, name, "missing data_offsets");
	json_t *b = json_array_get(j, 0), *en = json_array_get(j, 1);
	if (!json_is_array(j) || json_array_size(j) != 2 || !json_is_integer(b) || !json_is_integer(en))
		return ferr(LMK_EFORMAT, file, idx, name,
			    "bad data_offsets: expected [begin,end] integers, found %s", json_kind(j));
	json_int_t bv = json_integer_value(b), ev = json_integer_value(en);
	if (bv < 0 || ev < 0)
		return ferr(LMK_EFORMAT, file, idx, name, "bad data_offsets [%lld,%lld]: negative",
			    (long long)bv, (long long)ev);
	if (bv > ev)
		return ferr(LMK_EFORMAT, file, idx, name,
			    "bad data_offsets [%lld,%lld]: begin after end", (long long)bv, (long long)ev);
	if ((uint64_t)(ev - bv) != nbytes)
		return ferr(LMK_EFORMAT, file, idx, name,
			    "shape %s %s needs %llu bytes, data_offsets give %llu",
			    shape_str(sh, sizeof sh, (int)ndim, shape), lmk_dtype_name(dt),
			    (unsigned long long)nbytes, (unsigned long long)(ev - bv));

	char *nm = strdup(name);
	if (!nm)
		return lmk_err(LMK_ENOMEM, "%s: frame %d: out of memory", file, idx);
	lmk_ftensor *t = &f->t[f->ntensors];
	memset(t, 0, sizeof *t);
	t->name = nm;
	t->dtype = dt;
	t->ndim = (int)ndim;
	memcpy(t->shape, shape, ndim * sizeof *shape);
	t->nbytes = nbytes;
	t->data = no_data;
	sp->begin = (uint64_t)bv;
	sp->end = (uint64_t)ev;
	sp->idx = f->ntensors++;
	return 0;
}

/* Parses the n header bytes at buf into f (tensors in order of data offset,
 * data not yet attached). *sp gets the tensors' offsets, in the same order;
 * *datalen the size of the frame's data. */
static int parse_header(const char *file, int idx, const char *buf, size_t n,
			lmk_frame *f, struct span **spp, uint64_t *datalen)
{
	json_error_t e;
	json_t *root, *val;
	const char *key;
	char q[256];
	int rc = 0;

	*spp = NULL;
	root = json_loadb(buf, n, JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &e);
	if (!root) {
		if (strncmp(e.text, "duplicate object key", 20) == 0)
			return ferr(LMK_EFORMAT, file, idx, NULL, "duplicate name in header: %s",
				    quote(q, sizeof q, e.text));
		return ferr(LMK_EFORMAT, file, idx, NULL, "header is not JSON: %s (at byte %d)",
			    quote(q, sizeof q, e.text), e.position);
	}
	if (!json_is_object(root)) {
		rc = ferr(LMK_EFORMAT, file, idx, NULL,
			  "header is not a JSON object, found %s", json_kind(root));
		goto out;
	}
	/* with JSON_DISABLE_EOF_CHECK, position is the number of bytes used */
	for (size_t i = (size_t)e.position; i < n; i++) {
		if (buf[i] != ' ') {
			rc = ferr(LMK_EFORMAT, file, idx, NULL,
				  "trailing garbage in header at byte %zu of %zu: expected spaces after the JSON",
				  i, n);
			goto out;
		}
	}

	size_t cnt = json_object_size(root);
	struct span *sp = calloc(cnt ? cnt : 1, sizeof *sp);
	f->t = calloc(cnt ? cnt : 1, sizeof *f->t);
	*spp = sp;
	if (!sp || !f->t) {
		rc = lmk_err(LMK_ENOMEM, "%s: frame %d: out of memory", file, idx);
		goto out;
	}
	f->cap = (int)(cnt ? cnt : 1);
	json_object_foreach(root, key, val) {
		if (strcmp(key, "__metadata__") == 0)
			rc = parse_meta(file, idx, val, f);
		else
			rc = parse_entry(file, idx, key, val, f, &sp[f->ntensors]);
		if (rc)
			goto out;
	}

	/* The data must be covered exactly: sorted by offset, each tensor
	 * begins where the previous one ended, the first at 0. */
	int nt = f->ntensors;
	qsort(sp, (size_t)nt, sizeof *sp, span_cmp);
	uint64_t expect = 0;
	for (int i = 0; i < nt; i++) {
		const lmk_ftensor *t = &f->t[sp[i].idx];
		if (sp[i].begin < expect) {
			const struct span *p = &sp[i - 1];
			rc = ferr(LMK_EFORMAT, file, idx, t->name,
				  "data_offsets [%llu,%llu] overlap tensor '%s' at [%llu,%llu]",
				  (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
				  quote(q, 72, f->t[p->idx].name),
				  (unsigned long long)p->begin, (unsigned long long)p->end);
			goto out;
		}
		if (sp[i].begin > expect) {
			rc = ferr(LMK_EFORMAT, file, idx, t->name,
				  "gap in data: data_offsets begin at %llu, expected %llu",
				  (unsigned long long)sp[i].begin, (unsigned long long)expect);
			goto out;
		}
		expect = sp[i].end;
	}
	*datalen = expect;

	/* tensors in order of data offset */
	lmk_ftensor *ts = malloc((nt > 0 ? (size_t)nt : 1) * sizeof *ts);
	if (!ts) {
		rc = lmk_err(LMK_ENOMEM, "%s: frame %d: out of memory", file, idx);
		goto out;
	}
	for (int i = 0; i < nt; i++) {
		ts[i] = f->t[sp[i].idx];
		sp[i].idx = i;
	}
	free(f->t);
	f->t = ts;
	f->cap = nt > 0 ? nt : 1;
out:
	json_decref(root);
	return rc;
}

/* Points f's tensors into base, which b keeps alive. */
static int attach(lmk_frame *f, struct lmk_blob *b, const unsigned char *base, const struct span *sp)
{
	if (b && frame_hold(f, b))
		return LMK_ENOMEM;
	for (int i = 0; i < f->ntensors; i++)
		f->t[i].data = f->t[i].nbytes ? base + sp[i].begin : (const void *)no_data;
	return 0;
}

static int data_short(const char *file, int idx, const lmk_frame *f, const struct span *sp,
		      uint64_t datalen, uint64_t got)
{
	for (int i = 0; i < f->ntensors; i++)
		if (sp[i].end > got)
			return ferr(LMK_EFORMAT, file, idx, f->t[i].name,
				    "data truncated: expected %llu bytes of data, found %llu",
				    (unsigned long long)datalen, (unsigned long long)got);
	return ferr(LMK_EFORMAT, file, idx, NULL, "data truncated");
}

/* One frame from the avail bytes at p. The data is copied into a new heap
 * blob when b is NULL, else pointed into p, which b keeps alive.
 * @return : 0 with *used set, or a negative code */
static int parse_mem(const char *file, int idx, const unsigned char *p, size_t avail,
		     struct lmk_blob *b, lmk_frame *f, size_t *used)
{
	struct span *sp = NULL;
	uint64_t n, datalen = 0;
	int rc;

	if (avail < 8)
		return ferr(LMK_EFORMAT, file, idx, NULL,
			    "truncated header length: expected 8 bytes, found %zu", avail);
	n = get_le64(p);
	if ((rc = check_hlen(file, idx, n)))
		return rc;
	if (avail - 8 < n)
		return ferr(LMK_EFORMAT, file, idx, NULL,
			    "truncated header: expected %llu bytes, found %zu",
			    (unsigned long long)n, avail - 8);
	rc = parse_header(file, idx, (const char *)p + 8, n, f, &sp, &datalen);
	if (rc)
		goto out;
	size_t left = avail - 8 - n;
	if (left < datalen) {
		rc = data_short(file, idx, f, sp, datalen, left);
		goto out;
	}
	const unsigned char *base = p + 8 + n;
	if (!b && datalen) {
		void *q = malloc(datalen);
		b = q ? blob_new(q, datalen, 0) : NULL;
		if (!b) {
			free(q);
			rc = lmk_err(LMK_ENOMEM, "%s: frame %d: out of memory for %llu bytes",
				     file, idx, (unsigned long long)datalen);
			goto out;
		}
		memcpy(q, base, datalen);
		base = q;
		rc = attach(f, b, base, sp);
		blob_unref(b);
	} else {
		rc = attach(f, datalen ? b : NULL, base, sp);
	}
	*used = 8 + n + datalen;
out:
	free(sp);
	return rc;
}

int lmk_frame_parse(const void *buf, size_t len, const char *name, lmk_frame *f)
{
	size_t used = 0;
	const char *file = name ? name : "<memory>";
	int rc;

	lmk_frame_init(f);
	if (!buf && len)
		return lmk_err(LMK_EINVAL, "%s: no buffer", file);
	rc = parse_mem(file, 0, buf ? buf : no_data, len, NULL, f, &used);
	if (!rc && used != len)
		rc = ferr(LMK_EFORMAT, file, 0, NULL,
			  "garbage after the frame: %zu bytes follow its %zu bytes", len - used, used);
	if (rc)
		lmk_frame_free(f);
	return rc;
}

/* ---- reading ---- */

enum { SRC_RAW, SRC_GZIP, SRC_MAP };

struct lmk_reader {
	char *name;
	int fd, ownfd;
	int mode;
	unsigned char *ib;     /* input buffer (SRC_RAW, SRC_GZIP) */
	size_t ipos, ilen;
	int ieof;
	z_stream z;            /* SRC_GZIP */
	int zinit, zend;       /* zend: the current gzip member has ended */
	int members;
	struct lmk_blob *map;  /* SRC_MAP */
	size_t mpos;
	int index;             /* of the next frame */
	int err;               /* sticky error code */
};

/* Appends what one read() gives to the input buffer.
 * @return : bytes read, 0 at end of file, or LMK_EIO */
static long in_fill(lmk_reader *r)
{
	if (r->ipos == r->ilen)
		r->ipos = r->ilen = 0;
	if (r->ieof || r->ilen == IOBUF)
		return 0;
	for (;;) {
		ssize_t k = read(r->fd, r->ib + r->ilen, IOBUF - r->ilen);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return lmk_err(LMK_EIO, "%s: frame %d: read failed: %s", r->name, r->index, strerror(errno));
		if (k == 0)
			r->ieof = 1;
		r->ilen += (size_t)k;
		return k;
	}
}

/* @return : bytes read (fewer than n only at end of input) or < 0 */
static long long raw_read(lmk_reader *r, unsigned char *dst, size_t n)
{
	size_t got = 0;

	while (got < n) {
		if (r->ipos < r->ilen) {
			size_t k = r->ilen - r->ipos;
			if (k > n - got)
				k = n - got;
			memcpy(dst + got, r->ib + r->ipos, k);
			r->ipos += k;
			got += k;
			continue;
		}
		if (r->ieof)
			break;
		if (n - got >= IOBUF) {
			/* large reads go straight to the destination */
			size_t want = n - got > IOMAX ? IOMAX : n - got;
			ssize_t k = read(r->fd, dst + got, want);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return lmk_err(LMK_EIO, "%s: frame %d: read failed: %s", r->name, r->index, strerror(errno));
			if (k == 0)
				r->ieof = 1;
			got += (size_t)k;
			continue;
		}
		long k = in_fill(r);
		if (k < 0)
			return k;
	}
	return (long long)got;
}

/* Makes the gzip stream's input non-empty. @return : 1, 0 at end, or < 0 */
static long gz_input(lmk_reader *r)
{
	if (r->z.avail_in > 0)
		return 1;
	r->ipos = r->ilen = 0;
	long k = in_fill(r);
	if (k <= 0)
		return k;
	r->z.next_in = r->ib;
	r->z.avail_in = (uInt)r->ilen;
	r->ipos = r->ilen;
	return 1;
}

static long long gz_read(lmk_reader *r, unsigned char *dst, size_t n)
{
	size_t got = 0;
	long k;

	while (got < n) {
		if (r->zend) {
			/* `cat a.gz b.gz` is one stream: a new member may follow */
			if ((k = gz_input(r)) < 0)
				return k;
			if (k == 0)
				break;
			inflateReset(&r->z);
			r->zend = 0;
			r->members++;
		}
		if ((k = gz_input(r)) < 0)
			return k;
		if (k == 0)
			return lmk_err(LMK_EFORMAT, "%s: frame %d: truncated gzip data: the input ends inside gzip member %d",
				       r->name, r->index, r->members + 1);
		size_t want = n - got > IOMAX ? IOMAX : n - got;
		r->z.next_out = dst + got;
		r->z.avail_out = (uInt)want;
		int zr = inflate(&r->z, Z_NO_FLUSH);
		got += want - r->z.avail_out;
		if (zr == Z_STREAM_END)
			r->zend = 1;
		else if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR)
			return lmk_err(LMK_EFORMAT, "%s: frame %d: gzip data is corrupt in member %d: %s",
				       r->name, r->index, r->members + 1, r->z.msg ? r->z.msg : "bad data");
		else if (zr == Z_MEM_ERROR)
			return lmk_err(LMK_ENOMEM, "%s: out of memory inflating gzip data", r->name);
		/* Z_OK, or Z_BUF_ERROR when no progress was possible: go on */
	}
	return (long long)got;
}

static long long src_read(lmk_reader *r, void *dst, size_t n)
{
	return r->mode == SRC_GZIP ? gz_read(r, dst, n) : raw_read(r, dst, n);
}

/* Reads up to want bytes into a buffer that grows as data arrives, so that
 * a hostile length costs memory only in proportion to the input. */
static int read_grow(lmk_reader *r, uint64_t want, unsigned char **bufp, size_t *got)
{
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0;

	*bufp = NULL;
	*got = 0;
	while (n < want) {
		if (n == cap) {
			size_t nc = cap ? cap * 2 : GROW0;
			if (nc > want)
				nc = want;
			unsigned char *q = realloc(buf, nc);
			if (!q) {
				free(buf);
				return lmk_err(LMK_ENOMEM, "%s: frame %d: out of memory for %llu bytes",
					       r->name, r->index, (unsigned long long)want);
			}
			buf = q;
			cap = nc;
		}
		size_t ask = cap - n;
		long long k = src_read(r, buf + n, ask);
		if (k < 0) {
			free(buf);
			return (int)k;
		}
		n += (size_t)k;
		if ((size_t)k < ask)
			break; /* end of input */
	}
	*bufp = buf;
	*got = n;
	return 0;
}

static int next_stream(lmk_reader *r, lmk_frame *f)
{
	unsigned char lb[8], *hb = NULL, *data = NULL;
	struct span *sp = NULL;
	uint64_t n, datalen = 0;
	size_t got;
	int rc;
	long long k = src_read(r, lb, 8);

	if (k <= 0)
		return (int)k; /* 0: a clean end between frames */
	if (k < 8)
		return ferr(LMK_EFORMAT, r->name, r->index, NULL,
			    "truncated header length: expected 8 bytes, found %lld", k);
	n = get_le64(lb);
	if ((rc = check_hlen(r->name, r->index, n)))
		return rc;
	if ((rc = read_grow(r, n, &hb, &got)))
		return rc;
	if (got < n) {
		rc = ferr(LMK_EFORMAT, r->name, r->index, NULL,
			  "truncated header: expected %llu bytes, found %zu", (unsigned long long)n, got);
		goto out;
	}
	if ((rc = parse_header(r->name, r->index, (char *)hb, n, f, &sp, &datalen)))
		goto out;
	free(hb);
	hb = NULL;
	if ((rc = read_grow(r, datalen, &data, &got)))
		goto out;
	if (got < datalen) {
		rc = data_short(r->name, r->index, f, sp, datalen, got);
		goto out;
	}
	if (datalen) {
		struct lmk_blob *b = blob_new(data, datalen, 0);
		if (!b) {
			rc = lmk_err(LMK_ENOMEM, "%s: out of memory", r->name);
			goto out;
		}
		data = NULL;
		rc = attach(f, b, b->p, sp);
		blob_unref(b);
	} else {
		rc = attach(f, NULL, NULL, sp);
	}
	rc = rc ? rc : 1;
out:
	free(hb);
	free(data);
	free(sp);
	return rc;
}

static int next_map(lmk_reader *r, lmk_frame *f)
{
	size_t used = 0;

	if (r->mpos == r->map->len)
		return 0;
	int rc = parse_mem(r->name, r->index, (unsigned char *)r->map->p + r->mpos,
			   r->map->len - r->mpos, r->map, f, &used);
	if (rc)
		return rc;
	r->mpos += used;
	return 1;
}

/* Maps fd when it is a large regular file that is not gzip.
 * @return : 1 if mapped, 0 if not, < 0 on error */
static int try_map(lmk_reader *r)
{
	struct stat st;
	off_t off;

	if (fstat(r->fd, &st) || !S_ISREG(st.st_mode))
		return 0;
	off = lseek(r->fd, 0, SEEK_CUR); /* asks where we are; moves nothing */
	if (off < 0 || off > st.st_size || (size_t)(st.st_size - off) < MAP_MIN)
		return 0;
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, r->fd, 0);
	if (p == MAP_FAILED)
		return 0; /* reading still works */
	const unsigned char *c = (const unsigned char *)p + off;
	if (c[0] == 0x1f && c[1] == 0x8b && c[2] == 8) {
		munmap(p, (size_t)st.st_size);
		return 0;
	}
	r->map = blob_new(p, (size_t)st.st_size, 1);
	if (!r->map) {
		munmap(p, (size_t)st.st_size);
		return lmk_err(LMK_ENOMEM, "%s: out of memory", r->name);
	}
	r->mpos = (size_t)off;
	return 1;
}

int lmk_reader_fdopen(lmk_reader **rp, int fd, const char *name)
{
	lmk_reader *r = calloc(1, sizeof *r);
	int rc;

	*rp = NULL;
	if (!r || !(r->name = strdup(name ? name : "<fd>"))) {
		free(r);
		if (fd > 2)
			close(fd);
		return lmk_err(LMK_ENOMEM, "out of memory");
	}
	r->fd = fd;
	r->ownfd = fd > 2;
	if ((rc = try_map(r)) < 0)
		goto fail;
	if (rc == 1) {
		r->mode = SRC_MAP;
		if (r->ownfd)
			close(fd); /* the mapping stays valid */
		r->fd = -1;
		*rp = r;
		return 0;
	}
	r->mode = SRC_RAW;
	if (!(r->ib = malloc(IOBUF))) {
		rc = lmk_err(LMK_ENOMEM, "%s: out of memory", r->name);
		goto fail;
	}
	/* gzip begins 1f 8b 08 (deflate). A raw frame could only begin so if
	 * its header length were 0x088b1f modulo 2^24, an odd number, which
	 * writers that pad to 8 bytes never produce. */
	while (r->ilen < 3 && !r->ieof) {
		long k = in_fill(r);
		if (k < 0) {
			rc = (int)k;
			goto fail;
		}
	}
	if (r->ilen >= 3 && r->ib[0] == 0x1f && r->ib[1] == 0x8b && r->ib[2] == 8) {
		if (inflateInit2(&r->z, 15 + 16) != Z_OK) {
			rc = lmk_err(LMK_ENOMEM, "%s: cannot start gzip decompression", r->name);
			goto fail;
		}
		r->zinit = 1;
		r->mode = SRC_GZIP;
		r->z.next_in = r->ib;
		r->z.avail_in = (uInt)r->ilen;
		r->ipos = r->ilen;
	}
	*rp = r;
	return 0;
fail:
	lmk_reader_close(r);
	return rc;
}

int lmk_reader_open(lmk_reader **rp, const char *path)
{
	*rp = NULL;
	if (strcmp(path, "-") == 0)
		return lmk_reader_fdopen(rp, 0, "<stdin>");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (fd <= 2) {
		/* a caller without standard streams: keep fds 0-2 free */
		int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		close(fd);
		if (d < 0)
			return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
		fd = d;
	}
	return lmk_reader_fdopen(rp, fd, path);
}

int lmk_reader_next(lmk_reader *r, lmk_frame *f)
{
	int rc;

	lmk_frame_init(f);
	if (r->err)
		return ferr(r->err, r->name, r->index, NULL, "reading stopped at an earlier error");
	rc = r->mode == SRC_MAP ? next_map(r, f) : next_stream(r, f);
	if (rc < 0) {
		lmk_frame_free(f);
		r->err = rc;
	} else if (rc == 1) {
		r->index++;
	}
	return rc;
}

/* @return : 1 if input remains, 0 at its end, or < 0 */
static int reader_more(lmk_reader *r)
{
	unsigned char c;

	if (r->mode == SRC_MAP)
		return r->mpos < r->map->len;
	long long k = src_read(r, &c, 1);
	return k < 0 ? (int)k : k > 0;
}

void lmk_reader_close(lmk_reader *r)
{
	if (!r)
		return;
	if (r->zinit)
		inflateEnd(&r->z);
	if (r->ownfd && r->fd >= 0)
		close(r->fd);
	blob_unref(r->map);
	free(r->ib);
	free(r->name);
	free(r);
}

/* ---- writing ---- */

struct lmk_writer {
	char *name;            /* for messages */
	char *path, *tmp;      /* set when writing a path through a temporary */
	int fd, ownfd;
	int flags;
	unsigned char *ob;     /* output buffer */
	size_t olen;
	z_stream z;
	int zinit;
	int err;               /* sticky: after a failed write nothing more is written */
	char msg[512];         /* the message of that failure, repeated by close */
};

static int w_fail(lmk_writer *w, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int w_fail(lmk_writer *w, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lmk_verr(code, fmt, ap);
	va_end(ap);
	w->err = code;
	snprintf(w->msg, sizeof w->msg, "%s", lmk_errmsg());
	return code;
}

static int write_all(lmk_writer *w, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(w->fd, p, n > IOMAX ? IOMAX : n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return w_fail(w, LMK_EIO, "%s: write failed: %s", w->name, strerror(errno));
		if (k == 0)
			return w_fail(w, LMK_EIO, "%s: write failed: no progress", w->name);
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int ob_flush(lmk_writer *w)
{
	int rc = write_all(w, w->ob, w->olen);
	w->olen = 0;
	return rc;
}

/* Runs deflate over the input already set in w->z until it is all taken
 * and, for a flush, everything it gives out is in the buffer or written. */
static int w_deflate(lmk_writer *w, int flush)
{
	for (;;) {
		w->z.next_out = w->ob + w->olen;
		w->z.avail_out = (uInt)(IOBUF - w->olen);
		int zr = deflate(&w->z, flush);
		w->olen = IOBUF - w->z.avail_out;
		if (zr == Z_STREAM_ERROR)
			return w_fail(w, LMK_EIO, "%s: gzip compression failed", w->name);
		if (w->olen == IOBUF) {
			/* the buffer is full: deflate may have more to give */
			if (ob_flush(w))
				return w->err;
			continue;
		}
		/* room was left, so the input is used up and the flush done
		 * (Z_BUF_ERROR only says there was nothing to do) */
		if (flush != Z_FINISH || zr == Z_STREAM_END)
			return 0;
	}
}

static int w_out(lmk_writer *w, const void *p, size_t n)
{
	const unsigned char *c = p;

	if (w->flags & LMK_WRITE_GZIP) {
		while (n > 0) {
			size_t k = n > IOMAX ? IOMAX : n;
			w->z.next_in = (unsigned char *)c;
			w->z.avail_in = (uInt)k;
			if (w_deflate(w, Z_NO_FLUSH))
				return w->err;
			c += k;
			n -= k;
		}
		return 0;
	}
	if (w->olen + n > IOBUF && w->olen && ob_flush(w))
		return w->err;
	if (n >= IOBUF)
		return write_all(w, c, n);
	memcpy(w->ob + w->olen, c, n);
	w->olen += n;
	return 0;
}

/* Pushes everything so far out to the fd: a reader on the other end of a
 * pipe sees each frame as soon as it is put. */
static int w_flush(lmk_writer *w, int finish)
{
	if (w->flags & LMK_WRITE_GZIP) {
		w->z.next_in = NULL;
		w->z.avail_in = 0;
		if (w_deflate(w, finish ? Z_FINISH : Z_SYNC_FLUSH))
			return w->err;
	}
	return w->olen ? ob_flush(w) : 0;
}

static int writer_new(lmk_writer **wp, const char *name, int flags)
{
	lmk_writer *w = calloc(1, sizeof *w);

	*wp = NULL;
	if (!w || !(w->name = strdup(name)) || !(w->ob = malloc(IOBUF))) {
		if (w)
			free(w->name);
		free(w);
		return lmk_err(LMK_ENOMEM, "%s: out of memory", name);
	}
	w->fd = -1;
	w->flags = flags;
	if (flags & LMK_WRITE_GZIP) {
		if (deflateInit2(&w->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
				 Z_DEFAULT_STRATEGY) != Z_OK) {
			free(w->ob);
			free(w->name);
			free(w);
			return lmk_err(LMK_ENOMEM, "%s: cannot start gzip compression", name);
		}
		w->zinit = 1;
	}
	*wp = w;
	return 0;
}

static void writer_free(lmk_writer *w)
{
	if (w->zinit)
		deflateEnd(&w->z);
	free(w->ob);
	free(w->name);
	free(w->path);
	free(w->tmp);
	free(w);
}

int lmk_writer_fdopen(lmk_writer **wp, int fd, const char *name, int flags)
{
	int rc = writer_new(wp, name ? name : "<fd>", flags);
	if (rc) {
		if (fd > 2)
			close(fd);
		return rc;
	}
	(*wp)->fd = fd;
	(*wp)->ownfd = fd > 2;
	return 0;
}

/* A fresh name beside path: "DIR/.BASE.tmpXXXXXXXX". */
static char *tmp_name(const char *path, unsigned salt)
{
	const char *slash = strrchr(path, '/');
	int dlen = slash ? (int)(slash - path + 1) : 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned x = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec ^ salt * 40503u;
	size_t sz = strlen(path) + 32;
	char *s = malloc(sz);
	if (s)
		snprintf(s, sz, "%.*s.%s.tmp%08x", dlen, path, path + dlen, x);
	return s;
}

int lmk_writer_open(lmk_writer **wp, const char *path, int flags)
{
	int rc;

	*wp = NULL;
	if (strcmp(path, "-") == 0)
		return lmk_writer_fdopen(wp, 1, "<stdout>", flags);
	if (!*path || path[strlen(path) - 1] == '/')
		return lmk_err(LMK_EIO, "cannot write '%s': not a file name", path);
	if ((rc = writer_new(wp, path, flags)))
		return rc;
	lmk_writer *w = *wp;
	if (!(w->path = strdup(path)))
		goto nomem;
	for (unsigned i = 0; i < 100; i++) {
		free(w->tmp);
		if (!(w->tmp = tmp_name(path, i)))
			goto nomem;
		w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (w->fd >= 0 || errno != EEXIST)
			break;
	}
	if (w->fd < 0) {
		rc = lmk_err(LMK_EIO, "cannot create a temporary file for '%s': %s", path, strerror(errno));
		writer_free(w);
		*wp = NULL;
		return rc;
	}
	w->ownfd = 1;
	return 0;
nomem:
	writer_free(w);
	*wp = NULL;
	return lmk_err(LMK_ENOMEM, "%s: out of memory", path);
}

int lmk_writer_put(lmk_writer *w, const lmk_frame *f)
{
	json_t *root = NULL, *meta = NULL;
	char *hdr = NULL;
	uint64_t off = 0, nbytes;
	char q[72], sh[256];
	int rc = 0;

	if (w->err)
		return lmk_err(w->err, "%s", w->msg);
	/* Everything is checked before a byte is written, so that a bad
	 * frame leaves the writer usable. */
	if (f->ntensors < 0 || f->nmeta < 0 || (f->ntensors && !f->t) || (f->nmeta && (!f->key || !f->val)))
		return lmk_err(LMK_EINVAL, "%s: bad frame", w->name);
	if (!(root = json_object()))
		goto nomem;
	if (f->nmeta) {
		if (!(meta = json_object()) || json_object_set_new(root, "__metadata__", meta))
			goto nomem;
		for (int i = 0; i < f->nmeta; i++) {
			json_t *v = f->key[i] && f->val[i] ? json_string(f->val[i]) : NULL;
			if (!v || !utf8_ok(f->key[i]) || json_object_set_new(meta, f->key[i], v)) {
				rc = lmk_err(LMK_EINVAL, "%s: metadata entry %d is not valid UTF-8", w->name, i);
				goto out;
			}
		}
	}
	for (int i = 0; i < f->ntensors; i++) {
		const lmk_ftensor *t = &f->t[i];
		if ((rc = check_tensor(t->name, t->dtype, t->ndim, t->shape, t->data, &nbytes))) {
			rc = lmk_err_wrap(rc, "%s", w->name);
			goto out;
		}
		if (nbytes != t->nbytes) {
			rc = lmk_err(LMK_EINVAL, "%s: tensor '%s': shape %s %s needs %llu bytes, nbytes is %zu",
				     w->name, quote(q, sizeof q, t->name),
				     shape_str(sh, sizeof sh, t->ndim, t->shape),
				     lmk_dtype_name(t->dtype), (unsigned long long)nbytes, t->nbytes);
			goto out;
		}
		if (json_object_get(root, t->name)) {
			rc = lmk_err(LMK_EINVAL, "%s: duplicate tensor name '%s'", w->name,
				     quote(q, sizeof q, t->name));
			goto out;
		}
		if (off + nbytes > INT64_MAX) {
			rc = lmk_err(LMK_EINVAL, "%s: frame data exceeds 2^63 bytes", w->name);
			goto out;
		}
		json_t *shp = json_array();
		if (!shp)
			goto nomem;
		for (int d = 0; d < t->ndim; d++)
			if (json_array_append_new(shp, json_integer(t->shape[d]))) {
				json_decref(shp);
				goto nomem;
			}
		json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", lmk_dtype_name(t->dtype),
				      "shape", shp, "data_offsets", (json_int_t)off,
				      (json_int_t)(off + nbytes));
		if (!e || json_object_set_new(root, t->name, e))
			goto nomem;
		off += nbytes;
	}
	if (!(hdr = json_dumps(root, JSON_COMPACT)))
		goto nomem;

	/* spaces after the JSON so that the data starts 8-byte aligned */
	size_t n = strlen(hdr), pad = (8 - n % 8) % 8;
	unsigned char lb[8];
	static const char spaces[] = "        ";
	put_le64(lb, n + pad);
	if ((rc = w_out(w, lb, 8)) || (rc = w_out(w, hdr, n)) || (rc = w_out(w, spaces, pad)))
		goto out;
	for (int i = 0; i < f->ntensors; i++)
		if (f->t[i].nbytes && (rc = w_out(w, f->t[i].data, f->t[i].nbytes)))
			goto out;
	if (!w->path)
		rc = w_flush(w, 0);
	goto out;
nomem:
	rc = lmk_err(LMK_ENOMEM, "%s: out of memory", w->name);
out:
	json_decref(root);
	free(hdr);
	return rc;
}

static void sync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
	if (!dir)
		return;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd); /* best effort: the rename is already visible */
		close(fd);
	}
	free(dir);
}

int lmk_writer_close(lmk_writer *w)
{
	int rc = 0;

	if (!w)
		return 0;
	if (w->err)
		rc = lmk_err(w->err, "%s", w->msg);
	else
		rc = w_flush(w, 1);
	if (w->path) {
		if (!rc && fsync(w->fd))
			rc = lmk_err(LMK_EIO, "%s: fsync failed: %s", w->path, strerror(errno));
		if (close(w->fd) && !rc)
			rc = lmk_err(LMK_EIO, "%s: close failed: %s", w->path, strerror(errno));
		if (!rc && rename(w->tmp, w->path))
			rc = lmk_err(LMK_EIO, "cannot rename '%s' to '%s': %s", w->tmp, w->path,
				     strerror(errno));
		if (rc)
			unlink(w->tmp);
		else
			sync_dir(w->path);
	} else if (w->ownfd && close(w->fd) && !rc) {
		rc = lmk_err(LMK_EIO, "%s: close failed: %s", w->name, strerror(errno));
	}
	writer_free(w);
	return rc;
}

void lmk_writer_abort(lmk_writer *w)
{
	if (!w)
		return;
	if (w->ownfd)
		close(w->fd);
	if (w->path)
		unlink(w->tmp);
	writer_free(w);
}

/* ---- whole files ---- */

int lmk_frame_save(const char *path, const lmk_frame *f, int flags)
{
	lmk_writer *w;
	int rc = lmk_writer_open(&w, path, flags);

	if (rc)
		return rc;
	if ((rc = lmk_writer_put(w, f))) {
		lmk_writer_abort(w);
		return rc;
	}
	return lmk_writer_close(w);
}

int lmk_frame_load(const char *path, lmk_frame *f)
{
	lmk_reader *r;
	int rc;

	lmk_frame_init(f);
	if ((rc = lmk_reader_open(&r, path)))
		return rc;
	rc = lmk_reader_next(r, f);
	if (rc == 0)
		rc = lmk_err(LMK_EFORMAT, "%s: no frame: the input is empty", r->name);
	else if (rc == 1 && (rc = reader_more(r)) != 0) {
		if (rc > 0)
			rc = lmk_err(LMK_EFORMAT, "%s: garbage after the frame: expected one frame",
				     r->name);
		lmk_frame_free(f);
	}
	lmk_reader_close(r);
	return rc;
}
