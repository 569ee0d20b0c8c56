/* arc.c: ARC tasks for test-time training (see arc.h). Every file is
 * hostile: sizes are checked before anything is allocated, JSON is parsed
 * with duplicate keys refused, and each grid is checked cell by cell with a
 * message naming the file, the task and the place. Grids are fixed-size
 * structs (30 x 30 bytes), so that transforming and voting never allocate. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "arc.h"
#include "err.h"

/* ---- grids and tasks ---- */

int lmk_arc_grid_eq(const lmk_arc_grid *a, const lmk_arc_grid *b)
{
	return a->h == b->h && a->w == b->w && memcmp(a->c, b->c, (size_t)a->h * a->w) == 0;
}

static void pair_free(lmk_arc_pair *p)
{
	free(p);
}

void lmk_arc_task_free(lmk_arc_task *t)
{
	if (!t)
		return;
	free(t->id);
	pair_free(t->train);
	pair_free(t->test);
	memset(t, 0, sizeof *t);
}

void lmk_arc_tasks_free(lmk_arc_task *t, int n)
{
	if (!t)
		return;
	for (int i = 0; i < n; i++)
		lmk_arc_task_free(&t[i]);
	free(t);
}

void lmk_arc_set_free(lmk_arc_set *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->n; i++)
		lmk_arc_task_free(&s->t[i]);
	free(s->t);
	s->t = NULL;
	s->n = 0;
}

/* A task with room for its pairs; id copied. */
static int task_alloc(lmk_arc_task *t, const char *id, int ntrain, int ntest)
{
	memset(t, 0, sizeof *t);
	t->id = strdup(id);
	t->train = calloc((size_t)(ntrain ? ntrain : 1), sizeof *t->train);
	t->test = calloc((size_t)(ntest ? ntest : 1), sizeof *t->test);
	if (!t->id || !t->train || !t->test) {
		lmk_arc_task_free(t);
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	}
	t->ntrain = ntrain;
	t->ntest = ntest;
	return 0;
}

int lmk_arc_task_copy(lmk_arc_task *dst, const lmk_arc_task *src)
{
	int rc = task_alloc(dst, src->id, src->ntrain, src->ntest);

	if (rc < 0)
		return rc;
	memcpy(dst->train, src->train, (size_t)src->ntrain * sizeof *src->train);
	memcpy(dst->test, src->test, (size_t)src->ntest * sizeof *src->test);
	return 0;
}

static int cmp_task(const void *a, const void *b)
{
	return strcmp(((const lmk_arc_task *)a)->id, ((const lmk_arc_task *)b)->id);
}

const lmk_arc_task *lmk_arc_set_find(const lmk_arc_set *s, const char *id)
{
	lmk_arc_task key = {.id = (char *)id};

	if (!s->n)
		return NULL;
	return bsearch(&key, s->t, (size_t)s->n, sizeof *s->t, cmp_task);
}

/* Ids end up in messages, file names and JSON keys: printable, no '/'
 * except as made by lmk_arc_loo. */
static int id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > LMK_ARC_MAXID)
		return 0;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\')
			return 0;
	return 1;
}

/* ---- reading files ---- */

static int slurp(const char *path, char **buf, size_t *len)
{
	int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 1 << 16, n = 0;
	char *b = NULL;
	const char *shown = fd == 0 ? "<stdin>" : path;

	*buf = NULL;
	if (fd < 0)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	for (;;) {
		if (n == cap || !b) {
			char *nb;
			if (b)
				cap *= 2;
			if (cap > LMK_ARC_MAXFILE + 1)
				cap = LMK_ARC_MAXFILE + 1;
			if (!(nb = realloc(b, cap + 1))) {
				free(b);
				if (fd)
					close(fd);
				return lmk_err(LMK_ENOMEM, "%s: out of memory", shown);
			}
			b = nb;
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(b);
			if (fd)
				close(fd);
			return lmk_err(LMK_EIO, "cannot read '%s': %s", shown, strerror(e));
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > LMK_ARC_MAXFILE) {
			free(b);
			if (fd)
				close(fd);
			return lmk_err(LMK_EFORMAT, "%s: larger than %zu MiB", shown,
				       LMK_ARC_MAXFILE >> 20);
		}
	}
	if (fd)
		close(fd);
	b[n] = 0;
	*buf = b;
	*len = n;
	return 0;
}

static json_t *parse_json(const char *name, const void *buf, size_t len, int *rc)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);

	if (!j)
		*rc = lmk_err(LMK_EFORMAT, "%s: line %d column %d: %s", name, je.line, je.column,
			      je.text);
	return j;
}

/* What a JSON value is, for "expected ..., found X". */
static const char *describe(const json_t *v, char *buf, size_t cap)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER:
		snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
		return buf;
	case JSON_REAL:
		snprintf(buf, cap, "%g", json_real_value(v));
		return buf;
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	default: return "null";
	}
}

/* Where a grid is: "x.json: task ID: train[2].output". */
struct where {
	const char *file, *id;
	const char *part;    /* "train", "test", or a submission's "" */
	int k;
	const char *field;   /* "input", "output", "attempt_1", ... */
};

static int grid_err(const struct where *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int grid_err(const struct where *w, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (w->part)
		return lmk_err(LMK_EFORMAT, "%s: task %s: %s[%d].%s%s%s", w->file, w->id, w->part,
			       w->k, w->field, msg[0] == ':' ? "" : " ", msg);
	return lmk_err(LMK_EFORMAT, "%s: task %s: [%d].%s%s%s", w->file, w->id, w->k, w->field,
		       msg[0] == ':' ? "" : " ", msg);
}

/* empty_ok: [] and [[]] are "no grid" (a submission's missing attempt). */
static int parse_grid(const json_t *v, lmk_arc_grid *g, const struct where *w, int empty_ok)
{
	char b[64];
	size_t h, width = 0;

	memset(g, 0, sizeof *g);
	if (!json_is_array(v))
		return grid_err(w, ": expected an array of rows, found %s", describe(v, b, sizeof b));
	h = json_array_size(v);
	if (empty_ok && (h == 0 || (h == 1 && json_is_array(json_array_get(v, 0)) &&
				    json_array_size(json_array_get(v, 0)) == 0)))
		return 0;
	if (h < 1 || h > LMK_ARC_MAXSIDE)
		return grid_err(w, ": expected 1 to %d rows, found %zu", LMK_ARC_MAXSIDE, h);
	for (size_t r = 0; r < h; r++) {
		const json_t *row = json_array_get(v, r);
		size_t n;
		if (!json_is_array(row))
			return grid_err(w, "row %zu: expected an array of cells, found %s", r,
					describe(row, b, sizeof b));
		n = json_array_size(row);
		if (r == 0) {
			if (n < 1 || n > LMK_ARC_MAXSIDE)
				return grid_err(w, "row 0: expected 1 to %d cells, found %zu",
						LMK_ARC_MAXSIDE, n);
			width = n;
		} else if (n != width) {
			return grid_err(w, "row %zu: expected %zu cells, found %zu", r, width, n);
		}
		for (size_t c = 0; c < n; c++) {
			const json_t *x = json_array_get(row, c);
			if (!json_is_integer(x) || json_integer_value(x) < 0 ||
			    json_integer_value(x) > 9)
				return grid_err(w, "row %zu cell %zu: expected a colour 0..9, found %s",
						r, c, describe(x, b, sizeof b));
			g->c[r * width + c] = (uint8_t)json_integer_value(x);
		}
	}
	g->h = (uint8_t)h;
	g->w = (uint8_t)width;
	return 0;
}

static int parse_pairs(const json_t *o, const char *part, lmk_arc_pair **pairs, int *npairs,
		       const char *file, const char *id)
{
	char b[64];
	const json_t *a = json_object_get(o, part);
	size_t n;
	struct where w = {file, id, part, 0, NULL};

	if (!a)
		return lmk_err(LMK_EFORMAT, "%s: task %s: no '%s'", file, id, part);
	if (!json_is_array(a))
		return lmk_err(LMK_EFORMAT, "%s: task %s: '%s': expected an array of pairs, found %s",
			       file, id, part, describe(a, b, sizeof b));
	n = json_array_size(a);
	if (n < 1 || n > LMK_ARC_MAXPAIRS)
		return lmk_err(LMK_EFORMAT, "%s: task %s: '%s': expected 1 to %d pairs, found %zu",
			       file, id, part, LMK_ARC_MAXPAIRS, n);
	if (!(*pairs = calloc(n, sizeof **pairs)))
		return lmk_err(LMK_ENOMEM, "%s: out of memory", file);
	*npairs = (int)n;
	for (size_t k = 0; k < n; k++) {
		const json_t *p = json_array_get(a, k), *in, *out;
		int rc;
		w.k = (int)k;
		if (!json_is_object(p))
			return lmk_err(LMK_EFORMAT, "%s: task %s: %s[%zu]: expected an object, found %s",
				       file, id, part, k, describe(p, b, sizeof b));
		in = json_object_get(p, "input");
		out = json_object_get(p, "output");
		if (!in)
			return lmk_err(LMK_EFORMAT, "%s: task %s: %s[%zu]: no 'input'", file, id, part, k);
		/* a test output may be absent, or null as some tools write it */
		if (!out && strcmp(part, "train") == 0)
			return lmk_err(LMK_EFORMAT, "%s: task %s: %s[%zu]: no 'output'", file, id, part,
				       k);
		w.field = "input";
		if ((rc = parse_grid(in, &(*pairs)[k].in, &w, 0)) < 0)
			return rc;
		w.field = "output";
		if (out && !(json_is_null(out) && strcmp(part, "test") == 0) &&
		    (rc = parse_grid(out, &(*pairs)[k].out, &w, 0)) < 0)
			return rc;
	}
	return 0;
}

static int parse_task(const json_t *o, lmk_arc_task *t, const char *file, const char *id)
{
	char b[64];
	int rc;

	memset(t, 0, sizeof *t);
	if (!json_is_object(o))
		return lmk_err(LMK_EFORMAT, "%s: task %s: expected an object, found %s", file, id,
			       describe(o, b, sizeof b));
	if (!(t->id = strdup(id)))
		return lmk_err(LMK_ENOMEM, "%s: out of memory", file);
	if ((rc = parse_pairs(o, "train", &t->train, &t->ntrain, file, id)) < 0 ||
	    (rc = parse_pairs(o, "test", &t->test, &t->ntest, file, id)) < 0) {
		lmk_arc_task_free(t);
		return rc;
	}
	return 0;
}

/* A solutions entry: [grid, ...], one per test input. */
static int parse_solution(const json_t *v, lmk_arc_task *t, const char *file, const char *id)
{
	char b[64];
	size_t n;
	int rc;
	struct where w = {file, id, "test", 0, "output"};

	memset(t, 0, sizeof *t);
	if (!json_is_array(v))
		return lmk_err(LMK_EFORMAT, "%s: task %s: expected an array of grids, found %s", file,
			       id, describe(v, b, sizeof b));
	n = json_array_size(v);
	if (n < 1 || n > LMK_ARC_MAXPAIRS)
		return lmk_err(LMK_EFORMAT, "%s: task %s: expected 1 to %d grids, found %zu", file, id,
			       LMK_ARC_MAXPAIRS, n);
	if ((rc = task_alloc(t, id, 0, (int)n)) < 0)
		return rc;
	for (size_t k = 0; k < n; k++) {
		w.k = (int)k;
		if ((rc = parse_grid(json_array_get(v, k), &t->test[k].out, &w, 0)) < 0) {
			lmk_arc_task_free(t);
			return rc;
		}
	}
	return 0;
}

/* A growing set, sorted and checked for duplicates at the end. */
struct loader {
	lmk_arc_set *s;
	int cap;
	lmk_arc_bad_fn bad;
	void *arg;
	int nbad;
};

static int loader_push(struct loader *L, lmk_arc_task *t)
{
	if (L->s->n == L->cap) {
		int nc = L->cap ? 2 * L->cap : 64;
		lmk_arc_task *nt = realloc(L->s->t, (size_t)nc * sizeof *nt);
		if (!nt) {
			lmk_arc_task_free(t);
			return lmk_err(LMK_ENOMEM, "arc: out of memory");
		}
		L->s->t = nt;
		L->cap = nc;
	}
	L->s->t[L->s->n++] = *t;
	return 0;
}

/* A bad task: fatal without a callback, else reported and counted. An
 * allocation failure is always fatal. */
static int loader_bad(struct loader *L, int rc)
{
	if (!L->bad || rc == LMK_ENOMEM)
		return rc;
	L->bad(L->arg, lmk_errmsg());
	L->nbad++;
	return 0;
}

/* The id a file gives its task: its name without folders and ".json". */
static char *file_id(const char *name)
{
	const char *base = strrchr(name, '/');
	size_t n;

	base = base ? base + 1 : name;
	n = strlen(base);
	if (n > 5 && strcmp(base + n - 5, ".json") == 0)
		n -= 5;
	return strndup(base, n);
}

static int load_json(struct loader *L, const char *name, const json_t *root)
{
	char b[64];
	const char *key;
	json_t *v;
	int rc = 0, kind = 0;   /* 1 challenges, 2 solutions */
	lmk_arc_task t;

	if (!json_is_object(root))
		return lmk_err(LMK_EFORMAT, "%s: expected an object, found %s", name,
			       describe(root, b, sizeof b));
	if (json_object_get(root, "train") || json_object_get(root, "test")) {
		char *id = file_id(name);
		if (!id)
			return lmk_err(LMK_ENOMEM, "arc: out of memory");
		if (!id_ok(id))
			rc = lmk_err(LMK_EFORMAT, "%s: the name is no task id (empty, longer than %d "
				     "bytes or with control characters)", name, LMK_ARC_MAXID);
		else
			rc = parse_task(root, &t, name, id);
		free(id);
		if (rc < 0)
			return loader_bad(L, rc);
		return loader_push(L, &t);
	}
	json_object_foreach((json_t *)root, key, v) {
		if (!kind)
			kind = json_is_array(v) ? 2 : 1;
		if (!id_ok(key))
			rc = lmk_err(LMK_EFORMAT, "%s: a key is no task id (empty, longer than %d "
				     "bytes, or with '/', '\\' or control characters)", name,
				     LMK_ARC_MAXID);
		else if (kind == 1)
			rc = parse_task(v, &t, name, key);
		else
			rc = parse_solution(v, &t, name, key);
		if (rc < 0 ? (rc = loader_bad(L, rc)) < 0 : (rc = loader_push(L, &t)) < 0)
			return rc;
	}
	return 0;
}

static int loader_mem(struct loader *L, const char *name, const void *buf, size_t len)
{
	int rc = 0;
	json_t *root = parse_json(name, buf, len, &rc);

	if (!root)
		return rc;
	rc = load_json(L, name, root);
	json_decref(root);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_dir(struct loader *L, const char *path, DIR *d)
{
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	errno = 0;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] == '.' || l <= 5 || strcmp(e->d_name + l - 5, ".json"))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 512) * sizeof *nn);
			if (!nn) {
				rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
				goto out;
			}
			names = nn;
		}
		if (!(names[n] = malloc(strlen(path) + l + 2))) {
			rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
			goto out;
		}
		sprintf(names[n++], "%s%s%s", path,
			path[strlen(path) - 1] == '/' ? "" : "/", e->d_name);
	}
	if (errno) {
		rc = lmk_err(LMK_EIO, "cannot read folder '%s': %s", path, strerror(errno));
		goto out;
	}
	if (n)
		qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 0; i < n && rc >= 0; i++) {
		char *buf;
		size_t len;
		int nbefore = L->s->n;
		rc = slurp(names[i], &buf, &len);
		if (rc == 0) {
			rc = loader_mem(L, names[i], buf, len);
			free(buf);
		}
		if (rc < 0) {
			rc = loader_bad(L, rc);
			continue;
		}
		/* in a folder each file is one task, not a combined file */
		if (L->s->n > nbefore + 1 || (L->s->n == nbefore + 1 && L->s->t[nbefore].ntrain == 0)) {
			while (L->s->n > nbefore)
				lmk_arc_task_free(&L->s->t[--L->s->n]);
			rc = loader_bad(L, lmk_err(LMK_EFORMAT, "%s: expected one task (with 'train' "
						   "and 'test'), found a combined file", names[i]));
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int loader_finish(struct loader *L, int rc)
{
	if (rc >= 0 && L->s->n > 1) {
		qsort(L->s->t, (size_t)L->s->n, sizeof *L->s->t, cmp_task);
		for (int i = 1; i < L->s->n; i++)
			if (strcmp(L->s->t[i - 1].id, L->s->t[i].id) == 0) {
				rc = lmk_err(LMK_EFORMAT, "arc: task %s: given twice", L->s->t[i].id);
				break;
			}
	}
	if (rc < 0) {
		lmk_arc_set_free(L->s);
		return rc;
	}
	return L->nbad;
}

int lmk_arc_load_mem(lmk_arc_set *s, const char *name, const void *buf, size_t len,
		     lmk_arc_bad_fn bad, void *arg)
{
	struct loader L = {s, 0, bad, arg, 0};

	memset(s, 0, sizeof *s);
	return loader_finish(&L, loader_mem(&L, name, buf, len));
}

int lmk_arc_load(lmk_arc_set *s, const char *path, lmk_arc_bad_fn bad, void *arg)
{
	struct loader L = {s, 0, bad, arg, 0};
	struct stat st;
	char *buf;
	size_t len;
	int rc;

	memset(s, 0, sizeof *s);
	if (strcmp(path, "-") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		if (!d)
			return lmk_err(LMK_EIO, "cannot open folder '%s': %s", path, strerror(errno));
		rc = load_dir(&L, path, d);
		closedir(d);
		return loader_finish(&L, rc);
	}
	if ((rc = slurp(path, &buf, &len)) < 0)
		return rc;
	rc = loader_mem(&L, strcmp(path, "-") == 0 ? "<stdin>" : path, buf, len);
	free(buf);
	return loader_finish(&L, rc);
}

int lmk_arc_set_solve(lmk_arc_set *s, const lmk_arc_set *sol, const char *name)
{
	for (int i = 0; i < s->n; i++) {
		const lmk_arc_task *a = lmk_arc_set_find(sol, s->t[i].id);
		if (!a)
			return lmk_err(LMK_EFORMAT, "%s: task %s: no solution", name, s->t[i].id);
		if (a->ntest != s->t[i].ntest)
			return lmk_err(LMK_EFORMAT, "%s: task %s: expected %d test outputs, found %d",
				       name, s->t[i].id, s->t[i].ntest, a->ntest);
		for (int k = 0; k < a->ntest; k++)
			if (!a->test[k].out.h)
				return lmk_err(LMK_EFORMAT, "%s: task %s: test[%d]: no output", name,
					       s->t[i].id, k);
	}
	for (int i = 0; i < s->n; i++) {
		const lmk_arc_task *a = lmk_arc_set_find(sol, s->t[i].id);
		for (int k = 0; k < a->ntest; k++)
			s->t[i].test[k].out = a->test[k].out;
	}
	return 0;
}

int lmk_arc_load_solved(lmk_arc_set *s, const char *path, const char *solutions)
{
	lmk_arc_set sol;
	int rc = lmk_arc_load(s, path, NULL, NULL);

	if (rc < 0 || !solutions)
		return rc;
	if ((rc = lmk_arc_load(&sol, solutions, NULL, NULL)) >= 0) {
		rc = lmk_arc_set_solve(s, &sol, strcmp(solutions, "-") ? solutions : "<stdin>");
		lmk_arc_set_free(&sol);
	}
	if (rc < 0)
		lmk_arc_set_free(s);
	return rc;
}

/* ---- text form ---- */

size_t lmk_arc_grid_text(const lmk_arc_grid *g, char *buf)
{
	size_t n = 0;

	for (int r = 0; r < g->h; r++) {
		for (int c = 0; c < g->w; c++)
			buf[n++] = (char)('0' + g->c[r * g->w + c]);
		buf[n++] = '\n';
	}
	buf[n] = 0;
	return n;
}

/* A growing string. */
struct sb {
	char *p;
	size_t n, cap;
	int fail;
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
	if (b->fail)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		char *np;
		while (nc < b->n + n + 1)
			nc *= 2;
		if (!(np = realloc(b->p, nc))) {
			b->fail = 1;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_str(struct sb *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_grid(struct sb *b, const lmk_arc_grid *g)
{
	char buf[LMK_ARC_MAXSIDE * (LMK_ARC_MAXSIDE + 1) + 1];

	sb_put(b, buf, lmk_arc_grid_text(g, buf));
}

int lmk_arc_format(const lmk_arc_task *t, int k, char **prompt, char **target)
{
	struct sb p = {0}, q = {0};

	*prompt = NULL;
	if (target)
		*target = NULL;
	if (k < 0 || k >= t->ntest || !t->test[k].in.h)
		return lmk_err(LMK_EINVAL, "arc: task %s: no test input %d", t->id, k);
	for (int i = 0; i < t->ntrain; i++) {
		sb_str(&p, LMK_ARC_IN);
		sb_grid(&p, &t->train[i].in);
		sb_str(&p, LMK_ARC_OUT);
		sb_grid(&p, &t->train[i].out);
		sb_str(&p, LMK_ARC_END);
	}
	sb_str(&p, LMK_ARC_IN);
	sb_grid(&p, &t->test[k].in);
	sb_str(&p, LMK_ARC_OUT);
	if (target && t->test[k].out.h) {
		sb_grid(&q, &t->test[k].out);
		sb_str(&q, LMK_ARC_END);
	}
	if (p.fail || q.fail) {
		free(p.p);
		free(q.p);
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	}
	*prompt = p.p;
	if (target)
		*target = q.p;
	return 0;
}

int lmk_arc_parse_grid(const char *text, size_t len, lmk_arc_grid *g)
{
	size_t i = 0;
	int h = 0, w = -1;

	memset(g, 0, sizeof *g);
	while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
		i++;
	while (i < len) {
		size_t j = i;
		int n;
		while (j < len && text[j] >= '0' && text[j] <= '9')
			j++;
		n = (int)(j - i);
		/* a row ends in "\n", "\r\n" or the end of the text */
		if (j < len && text[j] == '\r' && j + 1 < len && text[j + 1] == '\n')
			j++;
		if (n == 0)
			break;          /* the end marker, or any line of no digits */
		if (j < len && text[j] != '\n')
			goto none;      /* digits, then something else: no row */
		if (n > LMK_ARC_MAXSIDE || h == LMK_ARC_MAXSIDE || (w >= 0 && n != w))
			goto none;
		w = n;
		for (int c = 0; c < n; c++)
			g->c[h * w + c] = (uint8_t)(text[i + c] - '0');
		h++;
		i = j + 1;
	}
	if (h == 0)
		goto none;
	g->h = (uint8_t)h;
	g->w = (uint8_t)w;
	return 1;
none:
	memset(g, 0, sizeof *g);
	return 0;
}

int lmk_arc_scan_byte(lmk_arc_scan *s, char ch)
{
	int digit = ch >= '0' && ch <= '9';

	if (s->decided)
		return 1;
	if (s->cr) {                    /* "\r\n" ends the row, else none */
		s->cr = 0;
		if (ch != '\n')
			return s->decided = 1;
		goto newline;
	}
	if (s->col == 0) {              /* at a line's start */
		if (s->rows == 0 && (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t'))
			return 0;       /* leading whitespace */
		if (!digit || s->rows == LMK_ARC_MAXSIDE)
			return s->decided = 1; /* the end, or a 31st row */
		s->col = 1;
		return 0;
	}
	if (digit) {
		s->col++;
		if (s->col > LMK_ARC_MAXSIDE || (s->width > 0 && s->col > s->width))
			return s->decided = 1;
		return 0;
	}
	if (ch == '\r') {
		s->cr = 1;
		return 0;
	}
	if (ch != '\n')
		return s->decided = 1;  /* digits, then something else */
newline:
	if (s->width > 0 && s->col != s->width)
		return s->decided = 1;
	s->width = s->col;
	s->rows++;
	s->col = 0;
	return 0;
}

/* ---- augmentations ---- */

static const char *const dnames[8] = {
	"id", "flip-h", "flip-v", "rot180", "transpose", "rot270", "rot90", "anti-transpose",
};

const char *lmk_arc_dihedral_name(int d)
{
	return d >= 0 && d < 8 ? dnames[d] : NULL;
}

void lmk_arc_grid_dihedral(lmk_arc_grid *dst, const lmk_arc_grid *src, int d)
{
	int h = src->h, w = src->w, swap = d & 4, fr = d & 2, fc = d & 1;
	int H = swap ? w : h, W = swap ? h : w;

	memset(dst, 0, sizeof *dst);
	if (!h)
		return;
	for (int i = 0; i < H; i++)
		for (int j = 0; j < W; j++) {
			int a = swap ? j : i, b = swap ? i : j;
			if (fr)
				a = h - 1 - a;
			if (fc)
				b = w - 1 - b;
			dst->c[i * W + j] = src->c[a * w + b];
		}
	dst->h = (uint8_t)H;
	dst->w = (uint8_t)W;
}

/* The group's products, found once by applying both transforms to a grid
 * whose cells are all different (2 x 3, so that no symmetry fixes it). */
int lmk_arc_dihedral_compose(int a, int b)
{
	lmk_arc_grid g = {.h = 2, .w = 3, .c = {0, 1, 2, 3, 4, 5}}, x, y, z;

	lmk_arc_grid_dihedral(&x, &g, a & 7);
	lmk_arc_grid_dihedral(&y, &x, b & 7);
	for (int d = 0; d < 8; d++) {
		lmk_arc_grid_dihedral(&z, &g, d);
		if (lmk_arc_grid_eq(&z, &y))
			return d;
	}
	return 0; /* unreachable: the 8 transforms form a group */
}

int lmk_arc_dihedral_inverse(int d)
{
	/* the rotations by a quarter turn are each other's inverse; every
	 * other symmetry is its own */
	return d == LMK_ARC_ROT90 ? LMK_ARC_ROT270 : d == LMK_ARC_ROT270 ? LMK_ARC_ROT90 : d & 7;
}

void lmk_arc_tf_identity(lmk_arc_tf *t)
{
	memset(t, 0, sizeof *t);
	for (int c = 0; c < 10; c++)
		t->perm[c] = (uint8_t)c;
}

void lmk_arc_tf_random(lmk_arc_tf *t, lmk_rng *r, int ntrain, unsigned flags)
{
	int a[LMK_ARC_MAXPAIRS];

	lmk_arc_tf_identity(t);
	if (flags & LMK_ARC_AUG_DIHEDRAL)
		t->dihedral = (int)lmk_rng_below(r, 8);
	if (flags & LMK_ARC_AUG_COLOURS) {
		int first = flags & LMK_ARC_AUG_KEEP0 ? 1 : 0;
		for (int c = 0; c < 10; c++)
			a[c] = c;
		lmk_rng_shuffle(r, a + first, 10 - first);
		for (int c = 0; c < 10; c++)
			t->perm[c] = (uint8_t)a[c];
	}
	if ((flags & LMK_ARC_AUG_ORDER) && ntrain > 1 && ntrain <= LMK_ARC_MAXPAIRS) {
		for (int k = 0; k < ntrain; k++)
			a[k] = k;
		lmk_rng_shuffle(r, a, ntrain);
		t->norder = ntrain;
		for (int k = 0; k < ntrain; k++)
			t->order[k] = (uint8_t)a[k];
	}
}

int lmk_arc_tf_plan(lmk_arc_tf *out, int cap, int ntrain, int per_class, unsigned flags,
		    lmk_rng *r)
{
	int n = 0, classes = flags & LMK_ARC_AUG_DIHEDRAL ? 8 : 1;

	for (int d = 0; d < classes; d++)
		for (int j = 0; j < per_class && n < cap; j++) {
			if (j == 0)
				lmk_arc_tf_identity(&out[n]);
			else
				lmk_arc_tf_random(&out[n], r, ntrain, flags & ~(unsigned)LMK_ARC_AUG_DIHEDRAL);
			out[n++].dihedral = d;
		}
	return n;
}

void lmk_arc_grid_apply(lmk_arc_grid *dst, const lmk_arc_grid *src, const lmk_arc_tf *t)
{
	lmk_arc_grid_dihedral(dst, src, t->dihedral);
	for (int i = 0; i < dst->h * dst->w; i++)
		dst->c[i] = t->perm[dst->c[i] % 10];
}

void lmk_arc_grid_invert(lmk_arc_grid *dst, const lmk_arc_grid *src, const lmk_arc_tf *t)
{
	lmk_arc_grid tmp = *src;
	uint8_t inv[10];

	for (int c = 0; c < 10; c++)
		inv[t->perm[c] % 10] = (uint8_t)c;
	for (int i = 0; i < tmp.h * tmp.w; i++)
		tmp.c[i] = inv[tmp.c[i] % 10];
	lmk_arc_grid_dihedral(dst, &tmp, lmk_arc_dihedral_inverse(t->dihedral));
}

static int tf_ok(const lmk_arc_tf *t, int ntrain)
{
	unsigned seen = 0;

	if (t->dihedral < 0 || t->dihedral > 7)
		return 0;
	for (int c = 0; c < 10; c++)
		seen |= 1u << (t->perm[c] % 16);
	if (seen != 0x3ffu)
		return 0;
	if (t->norder == 0)
		return 1;
	if (t->norder != ntrain)
		return 0;
	uint64_t s = 0;
	for (int k = 0; k < ntrain; k++) {
		if (t->order[k] >= ntrain || (s >> t->order[k] & 1))
			return 0;
		s |= (uint64_t)1 << t->order[k];
	}
	return 1;
}

int lmk_arc_task_apply(lmk_arc_task *dst, const lmk_arc_task *src, const lmk_arc_tf *t)
{
	int rc;

	memset(dst, 0, sizeof *dst);
	if (!tf_ok(t, src->ntrain))
		return lmk_err(LMK_EINVAL, "arc: task %s: the transformation is not invertible or "
			       "its order is not of %d pairs", src->id, src->ntrain);
	if ((rc = task_alloc(dst, src->id, src->ntrain, src->ntest)) < 0)
		return rc;
	for (int k = 0; k < src->ntrain; k++) {
		const lmk_arc_pair *p = &src->train[t->norder ? t->order[k] : k];
		lmk_arc_grid_apply(&dst->train[k].in, &p->in, t);
		lmk_arc_grid_apply(&dst->train[k].out, &p->out, t);
	}
	for (int k = 0; k < src->ntest; k++) {
		lmk_arc_grid_apply(&dst->test[k].in, &src->test[k].in, t);
		lmk_arc_grid_apply(&dst->test[k].out, &src->test[k].out, t);
	}
	return 0;
}

int lmk_arc_tf_describe(const lmk_arc_tf *t, char *buf, size_t cap)
{
	char perm[11], order[LMK_ARC_MAXPAIRS * 3 + 8];
	size_t n = 0;

	for (int c = 0; c < 10; c++)
		perm[c] = (char)('0' + t->perm[c] % 10);
	perm[10] = 0;
	if (!t->norder)
		snprintf(order, sizeof order, "kept");
	for (int k = 0; k < t->norder && k < LMK_ARC_MAXPAIRS; k++)
		n += (size_t)snprintf(order + n, sizeof order - n, "%s%d", k ? "," : "", t->order[k]);
	return snprintf(buf, cap, "%s colours %s order %s",
			lmk_arc_dihedral_name(t->dihedral & 7), perm, order);
}

/* ---- leave-one-out ---- */

static int loo_one(lmk_arc_task *d, const lmk_arc_task *t, int k)
{
	char id[LMK_ARC_MAXID + 16];
	int rc, j = 0;

	snprintf(id, sizeof id, "%s/%d", t->id, k);
	if ((rc = task_alloc(d, id, t->ntrain - 1, 1)) < 0)
		return rc;
	for (int i = 0; i < t->ntrain; i++)
		if (i != k)
			d->train[j++] = t->train[i];
	d->test[0] = t->train[k];
	return 0;
}

int lmk_arc_loo(const lmk_arc_task *t, lmk_arc_task **out)
{
	return lmk_arc_ttt_tasks(t, t->ntrain, 0, 0, out);
}

int lmk_arc_ttt_tasks(const lmk_arc_task *t, int cap, unsigned flags, uint64_t seed,
		      lmk_arc_task **out)
{
	lmk_arc_task *o, base;
	lmk_rng r;
	int rc;

	*out = NULL;
	if (t->ntrain < 2)
		return lmk_err(LMK_EINVAL, "arc: task %s: leave-one-out needs 2 demonstrations, "
			       "found %d", t->id, t->ntrain);
	if (cap < 1)
		return lmk_err(LMK_EINVAL, "arc: task %s: no tasks asked for", t->id);
	if (!(o = calloc((size_t)cap, sizeof *o)))
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	lmk_rng_init(&r, seed);
	for (int j = 0; j < cap; j++) {
		if ((rc = loo_one(&base, t, j % t->ntrain)) < 0)
			goto fail;
		if (j < t->ntrain) {
			o[j] = base;
			continue;
		}
		lmk_arc_tf tf;
		lmk_arc_tf_random(&tf, &r, base.ntrain, flags);
		rc = lmk_arc_task_apply(&o[j], &base, &tf);
		lmk_arc_task_free(&base);
		if (rc < 0)
			goto fail;
	}
	*out = o;
	return cap;
fail:
	lmk_arc_tasks_free(o, cap);
	return rc;
}

/* ---- training examples ---- */

struct ids {
	int32_t *id;
	uint8_t *mask;
	int n, cap;
};

static int ids_room(struct ids *x, int need)
{
	if (need <= x->cap)
		return 0;
	int nc = x->cap ? x->cap : 1024;
	while (nc < need) {
		if (nc > (1 << 29))
			return lmk_err(LMK_ENOMEM, "arc: an example of more than 2^29 tokens");
		nc *= 2;
	}
	int32_t *ni = realloc(x->id, (size_t)nc * sizeof *ni);
	if (ni)
		x->id = ni;
	uint8_t *nm = realloc(x->mask, (size_t)nc);
	if (nm)
		x->mask = nm;
	if (!ni || !nm)
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	x->cap = nc;
	return 0;
}

static int ids_text(struct ids *x, const lmk_arc_example_opts *o, const char *s, size_t len,
		    int mask)
{
	int rc, m;

	if (!len)
		return 0;
	for (;;) {
		m = o->encode(o->arg, s, len, x->id + x->n, x->cap - x->n);
		if (m < 0)
			return m;
		if (m <= x->cap - x->n)
			break;
		if ((rc = ids_room(x, x->n + m)) < 0)
			return rc;
	}
	memset(x->mask + x->n, mask, (size_t)m);
	x->n += m;
	return 0;
}

static int ids_one(struct ids *x, int32_t id, int mask)
{
	int rc = ids_room(x, x->n + 1);

	if (rc < 0)
		return rc;
	x->id[x->n] = id;
	x->mask[x->n++] = (uint8_t)mask;
	return 0;
}

/* One example of test pair k of t into x. */
static int example(struct ids *x, const lmk_arc_task *t, int k, const lmk_arc_example_opts *o)
{
	char *prompt, *target;
	int rc;

	x->n = 0;
	if ((rc = ids_room(x, 64)) < 0)
		return rc;
	if (o->bos >= 0 && (rc = ids_one(x, o->bos, 0)) < 0)
		return rc;
	if (!o->all_outputs) {
		if ((rc = lmk_arc_format(t, k, &prompt, &target)) < 0)
			return rc;
		rc = ids_text(x, o, prompt, strlen(prompt), 0);
		if (rc >= 0)
			rc = ids_text(x, o, target, strlen(target), 1);
		free(prompt);
		free(target);
		if (rc < 0)
			return rc;
	} else {
		/* the pieces of lmk_arc_format, cut around each output */
		struct sb p = {0};
		for (int i = 0; i <= t->ntrain && rc >= 0; i++) {
			const lmk_arc_pair *pr = i < t->ntrain ? &t->train[i] : &t->test[k];
			p.n = 0;
			sb_str(&p, LMK_ARC_IN);
			sb_grid(&p, &pr->in);
			sb_str(&p, LMK_ARC_OUT);
			if (p.fail)
				break;
			if ((rc = ids_text(x, o, p.p, p.n, 0)) < 0)
				break;
			p.n = 0;
			sb_grid(&p, &pr->out);
			sb_str(&p, LMK_ARC_END);
			if (p.fail)
				break;
			rc = ids_text(x, o, p.p, p.n, i > 0 || o->all_outputs > 1);
		}
		free(p.p);
		if (p.fail)
			return lmk_err(LMK_ENOMEM, "arc: out of memory");
		if (rc < 0)
			return rc;
	}
	if (o->eos >= 0 && (rc = ids_one(x, o->eos, 1)) < 0)
		return rc;
	return 0;
}

int lmk_arc_examples_add(lmk_arc_examples *e, const lmk_arc_task *tasks, int ntasks,
			 const lmk_arc_example_opts *o)
{
	struct ids x = {0};
	int added = 0, rc = 0;

	if (!o->encode)
		return lmk_err(LMK_EINVAL, "arc: no encoder");
	for (int i = 0; i < ntasks && rc >= 0; i++)
		for (int k = 0; k < tasks[i].ntest && rc >= 0; k++) {
			const lmk_arc_pair *p = &tasks[i].test[k];
			if (!p->in.h || !p->out.h)
				continue;
			if ((rc = example(&x, &tasks[i], k, o)) < 0)
				break;
			if (o->max_len > 0 && x.n > o->max_len) {
				e->dropped++;
				continue;
			}
			if (e->n == e->cap) {
				int nc = e->cap ? 2 * e->cap : 64;
				lmk_arc_example *ne = realloc(e->ex, (size_t)nc * sizeof *ne);
				if (!ne) {
					rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
					break;
				}
				e->ex = ne;
				e->cap = nc;
			}
			lmk_arc_example *ex = &e->ex[e->n];
			ex->ids = malloc((size_t)x.n * sizeof *ex->ids);
			ex->mask = malloc((size_t)x.n);
			if (!ex->ids || !ex->mask) {
				free(ex->ids);
				free(ex->mask);
				rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
				break;
			}
			memcpy(ex->ids, x.id, (size_t)x.n * sizeof *ex->ids);
			memcpy(ex->mask, x.mask, (size_t)x.n);
			ex->n = x.n;
			ex->task = i;
			ex->test = k;
			e->n++;
			added++;
		}
	free(x.id);
	free(x.mask);
	return rc < 0 ? rc : added;
}

void lmk_arc_examples_free(lmk_arc_examples *e)
{
	for (int i = 0; i < e->n; i++) {
		free(e->ex[i].ids);
		free(e->ex[i].mask);
	}
	free(e->ex);
	memset(e, 0, sizeof *e);
}

/* ---- prediction and voting ---- */

int lmk_arc_prompts(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf, char **prompts)
{
	int rc = 0;

	for (int i = 0; i < ntf; i++)
		prompts[i] = NULL;
	for (int i = 0; i < ntf && rc >= 0; i++) {
		lmk_arc_task a;
		if ((rc = lmk_arc_task_apply(&a, t, &tfs[i])) < 0)
			break;
		rc = lmk_arc_format(&a, k, &prompts[i], NULL);
		lmk_arc_task_free(&a);
	}
	if (rc < 0)
		for (int i = 0; i < ntf; i++) {
			free(prompts[i]);
			prompts[i] = NULL;
		}
	return rc;
}

/* Higher rank first: a[0] is the primary key, then a[1]; ties keep the
 * lower index (the grid seen first). */
static int better(const int *ka, const int *kb, int ia, int ib)
{
	if (ka[0] != kb[0])
		return ka[0] > kb[0];
	if (ka[1] != kb[1])
		return ka[1] > kb[1];
	return ia < ib;
}

int lmk_arc_vote_grids(const lmk_arc_grid *g, const int *cls, int n, lmk_arc_grid best[2])
{
	int *u = NULL, *cl = NULL, *cnt = NULL, *total = NULL, *score = NULL, *rep = NULL;
	int nu = 0, nc = 0, rc;

	memset(&best[0], 0, sizeof best[0]);
	memset(&best[1], 0, sizeof best[1]);
	if (n <= 0)
		return 0;
	u = malloc((size_t)n * sizeof *u);      /* distinct grid of each vote */
	cl = malloc((size_t)n * sizeof *cl);    /* class index of each vote */
	rep = malloc((size_t)n * sizeof *rep);  /* first vote of each distinct grid */
	total = calloc((size_t)n, sizeof *total);
	score = calloc((size_t)n, sizeof *score);
	if (!u || !cl || !rep || !total || !score) {
		rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		int j;
		for (j = 0; j < nu; j++)
			if (lmk_arc_grid_eq(&g[rep[j]], &g[i]))
				break;
		if (j == nu)
			rep[nu++] = i;
		u[i] = j;
		total[j]++;
		for (j = 0; j < i; j++)
			if (cls[j] == cls[i])
				break;
		cl[i] = j < i ? cl[j] : nc++;
	}
	/* within each class its 3 most frequent grids get a vote each; one row
	 * of counts, reused, keeps memory linear in n */
	if (!(cnt = calloc((size_t)nu, sizeof *cnt))) {
		rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
		goto out;
	}
	for (int c = 0; c < nc; c++) {
		memset(cnt, 0, (size_t)nu * sizeof *cnt);
		for (int i = 0; i < n; i++)
			if (cl[i] == c)
				cnt[u[i]]++;
		for (int pick = 0; pick < 3; pick++) {
			int b = -1;
			for (int j = 0; j < nu; j++) {
				int kj[2] = {cnt[j], 0}, kb[2] = {b >= 0 ? cnt[b] : 0, 0};
				if (cnt[j] > 0 && (b < 0 || better(kj, kb, j, b)))
					b = j;
			}
			if (b < 0)
				break;
			score[b]++;
			cnt[b] = 0;
		}
	}
	for (int slot = 0; slot < 2 && slot < nu; slot++) {
		int b = -1;
		for (int j = 0; j < nu; j++) {
			int kj[2] = {score[j], total[j]}, kb[2] = {b >= 0 ? score[b] : 0,
								   b >= 0 ? total[b] : 0};
			if (score[j] >= 0 && (b < 0 || better(kj, kb, j, b)))
				b = j;
		}
		best[slot] = g[rep[b]];
		score[b] = -1;
	}
	rc = nu;
out:
	free(u);
	free(cl);
	free(rep);
	free(total);
	free(score);
	free(cnt);
	return rc;
}

int lmk_arc_vote(const char *const *texts, const lmk_arc_tf *tfs, int ntf, lmk_arc_grid best[2])
{
	lmk_arc_grid *g = ntf > 0 ? malloc((size_t)ntf * sizeof *g) : NULL;
	int *cls = ntf > 0 ? malloc((size_t)ntf * sizeof *cls) : NULL, n = 0, rc;

	if (ntf > 0 && (!g || !cls)) {
		free(g);
		free(cls);
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	}
	for (int i = 0; i < ntf; i++) {
		lmk_arc_grid p;
		if (!texts[i] || !lmk_arc_parse_grid(texts[i], strlen(texts[i]), &p))
			continue;
		lmk_arc_grid_invert(&g[n], &p, &tfs[i]);
		cls[n++] = tfs[i].dihedral;
	}
	rc = lmk_arc_vote_grids(g, cls, n, best);
	free(g);
	free(cls);
	return rc;
}

/* The one-at-a-time callback behind the batch interface. */
struct single {
	lmk_arc_predict_fn f;
	void *arg;
};

static int one_by_one(void *arg, int n, const char *const *prompts, char *const *outs, size_t cap)
{
	const struct single *s = arg;

	for (int i = 0; i < n; i++) {
		int rc = s->f(s->arg, prompts[i], outs[i], cap);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int lmk_arc_predict_batch(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf,
			  lmk_arc_predict_batch_fn predict, void *arg, lmk_arc_grid best[2])
{
	char **prompts, **outs, *space;
	int rc;

	memset(best, 0, 2 * sizeof *best);
	if (ntf < 1)
		return lmk_err(LMK_EINVAL, "arc: no transformations to predict under");
	prompts = calloc((size_t)ntf, sizeof *prompts);
	outs = calloc((size_t)ntf, sizeof *outs);
	space = calloc((size_t)ntf, LMK_ARC_ANSWER_CAP);
	if (!prompts || !outs || !space) {
		rc = lmk_err(LMK_ENOMEM, "arc: out of memory");
		goto out;
	}
	if ((rc = lmk_arc_prompts(t, k, tfs, ntf, prompts)) < 0)
		goto out;
	for (int i = 0; i < ntf; i++)
		outs[i] = space + (size_t)i * LMK_ARC_ANSWER_CAP;
	rc = predict(arg, ntf, (const char *const *)prompts, outs, LMK_ARC_ANSWER_CAP);
	if (rc >= 0) {
		/* a callback that forgot the NUL must not run off the end */
		for (int i = 0; i < ntf; i++)
			outs[i][LMK_ARC_ANSWER_CAP - 1] = 0;
		rc = lmk_arc_vote((const char *const *)outs, tfs, ntf, best);
	}
	for (int i = 0; i < ntf; i++)
		free(prompts[i]);
out:
	free(prompts);
	free(outs);
	free(space);
	return rc;
}

int lmk_arc_predict(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf,
		    lmk_arc_predict_fn predict, void *arg, lmk_arc_grid best[2])
{
	struct single s = {predict, arg};

	return lmk_arc_predict_batch(t, k, tfs, ntf, one_by_one, &s, best);
}

/* ---- submissions ---- */

int lmk_arc_sub_add(lmk_arc_sub *s, const char *id, int ntest)
{
	lmk_arc_sub_task *e;

	if (!id_ok(id))
		return lmk_err(LMK_EINVAL, "arc: submission: a task id is empty, too long or has "
			       "control characters");
	if (ntest < 1 || ntest > LMK_ARC_MAXPAIRS)
		return lmk_err(LMK_EINVAL, "arc: submission: task %s: %d test inputs", id, ntest);
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->t[i].id, id) == 0)
			return lmk_err(LMK_EINVAL, "arc: submission: task %s given twice", id);
	if (s->n == s->cap) {
		int nc = s->cap ? 2 * s->cap : 64;
		lmk_arc_sub_task *nt = realloc(s->t, (size_t)nc * sizeof *nt);
		if (!nt)
			return lmk_err(LMK_ENOMEM, "arc: out of memory");
		s->t = nt;
		s->cap = nc;
	}
	e = &s->t[s->n];
	e->id = strdup(id);
	e->att = calloc((size_t)ntest * 2, sizeof *e->att);
	if (!e->id || !e->att) {
		free(e->id);
		free(e->att);
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	}
	e->ntest = ntest;
	return s->n++;
}

void lmk_arc_sub_free(lmk_arc_sub *s)
{
	for (int i = 0; i < s->n; i++) {
		free(s->t[i].id);
		free(s->t[i].att);
	}
	free(s->t);
	memset(s, 0, sizeof *s);
}

static json_t *grid_json(const lmk_arc_grid *g)
{
	static const lmk_arc_grid zero = {.h = 1, .w = 1};
	json_t *a = json_array();

	if (!g->h)
		g = &zero;
	for (int r = 0; a && r < g->h; r++) {
		json_t *row = json_array();
		for (int c = 0; row && c < g->w; c++)
			if (json_array_append_new(row, json_integer(g->c[r * g->w + c])) < 0) {
				json_decref(row);
				row = NULL;
			}
		if (!row || json_array_append_new(a, row) < 0) {
			json_decref(a);
			a = NULL;
		}
	}
	return a;
}

static json_t *sub_json(const lmk_arc_sub *s)
{
	json_t *root = json_object();

	for (int i = 0; root && i < s->n; i++) {
		json_t *list = json_array();
		for (int k = 0; list && k < s->t[i].ntest; k++) {
			json_t *o = json_object();
			if (!o || json_object_set_new(o, "attempt_1", grid_json(&s->t[i].att[2 * k])) < 0 ||
			    json_object_set_new(o, "attempt_2", grid_json(&s->t[i].att[2 * k + 1])) < 0 ||
			    json_array_append_new(list, o) < 0) {
				json_decref(list);
				list = NULL;
			}
		}
		if (!list || json_object_set_new(root, s->t[i].id, list) < 0) {
			json_decref(root);
			root = NULL;
		}
	}
	return root;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int lmk_arc_sub_write(const lmk_arc_sub *s, const char *path)
{
	json_t *j = sub_json(s);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL, *tmp = NULL;
	size_t len;
	int fd = -1, rc = 0;

	json_decref(j);
	if (!text)
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	len = strlen(text);
	text[len++] = '\n';  /* json_dumps' NUL gives way to a final newline */
	if (strcmp(path, "-") == 0) {
		fflush(stdout);
		if (write_all(1, text, len) < 0)
			rc = lmk_err(LMK_EIO, "cannot write to standard output: %s", strerror(errno));
		free(text);
		return rc;
	}
	/* a temporary beside path, renamed over it once complete */
	const char *base = strrchr(path, '/');
	int dlen = base ? (int)(base - path + 1) : 0;
	if (!(tmp = malloc(strlen(path) + 16))) {
		free(text);
		return lmk_err(LMK_ENOMEM, "arc: out of memory");
	}
	sprintf(tmp, "%.*s.%s.tmpXXXXXX", dlen, path, path + dlen);
	if ((fd = mkstemp(tmp)) < 0) {
		rc = lmk_err(LMK_EIO, "cannot create '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (write_all(fd, text, len) < 0 || fsync(fd) < 0) {
		rc = lmk_err(LMK_EIO, "cannot write '%s': %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		goto out;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		rc = lmk_err(LMK_EIO, "cannot write '%s': %s", path, strerror(errno));
		unlink(tmp);
	}
out:
	free(tmp);
	free(text);
	return rc;
}

static int sub_parse(lmk_arc_sub *s, const char *name, const json_t *root)
{
	char b[64];
	const char *key;
	json_t *v;
	int rc;

	if (!json_is_object(root))
		return lmk_err(LMK_EFORMAT, "%s: expected an object, found %s", name,
			       describe(root, b, sizeof b));
	json_object_foreach((json_t *)root, key, v) {
		size_t n;
		int i;
		if (!id_ok(key))
			return lmk_err(LMK_EFORMAT, "%s: a key is no task id (empty, longer than %d "
				       "bytes, or with '/', '\\' or control characters)", name,
				       LMK_ARC_MAXID);
		if (!json_is_array(v))
			return lmk_err(LMK_EFORMAT, "%s: task %s: expected an array of attempts, found %s",
				       name, key, describe(v, b, sizeof b));
		n = json_array_size(v);
		if (n < 1 || n > LMK_ARC_MAXPAIRS)
			return lmk_err(LMK_EFORMAT, "%s: task %s: expected 1 to %d test inputs, found %zu",
				       name, key, LMK_ARC_MAXPAIRS, n);
		if ((i = lmk_arc_sub_add(s, key, (int)n)) < 0)
			return i;
		for (size_t k = 0; k < n; k++) {
			const json_t *o = json_array_get(v, k);
			struct where w = {name, key, "test", (int)k, NULL};
			if (!json_is_object(o))
				return lmk_err(LMK_EFORMAT, "%s: task %s: [%zu]: expected an object, found %s",
					       name, key, k, describe(o, b, sizeof b));
			for (int a = 0; a < 2; a++) {
				const json_t *g = json_object_get(o, a ? "attempt_2" : "attempt_1");
				w.field = a ? "attempt_2" : "attempt_1";
				/* a missing attempt is a wrong one, not a broken file */
				if (g && !json_is_null(g) &&
				    (rc = parse_grid(g, &s->t[i].att[2 * k + a], &w, 1)) < 0)
					return rc;
			}
		}
	}
	return 0;
}

int lmk_arc_sub_read_mem(lmk_arc_sub *s, const char *name, const void *buf, size_t len)
{
	int rc = 0;
	json_t *root = parse_json(name, buf, len, &rc);

	memset(s, 0, sizeof *s);
	if (!root)
		return rc;
	rc = sub_parse(s, name, root);
	json_decref(root);
	if (rc < 0) {
		/* the add's own message would lack the file name */
		if (rc == LMK_EINVAL)
			rc = lmk_err_wrap(LMK_EFORMAT, "%s", name);
		lmk_arc_sub_free(s);
	}
	return rc;
}

int lmk_arc_sub_read(lmk_arc_sub *s, const char *path)
{
	char *buf;
	size_t len;
	int rc;

	memset(s, 0, sizeof *s);
	if ((rc = slurp(path, &buf, &len)) < 0)
		return rc;
	rc = lmk_arc_sub_read_mem(s, strcmp(path, "-") == 0 ? "<stdin>" : path, buf, len);
	free(buf);
	return rc;
}

int lmk_arc_score_sub(const lmk_arc_set *truth, const lmk_arc_sub *sub, lmk_arc_task_score *per,
		      lmk_arc_score *total)
{
	memset(total, 0, sizeof *total);
	for (int i = 0; i < truth->n; i++)
		for (int k = 0; k < truth->t[i].ntest; k++)
			if (!truth->t[i].test[k].out.h)
				return lmk_err(LMK_EINVAL, "arc: task %s: test[%d]: no output to score "
					       "against", truth->t[i].id, k);
	for (int i = 0; i < truth->n; i++) {
		const lmk_arc_task *t = &truth->t[i];
		const lmk_arc_sub_task *e = NULL;
		lmk_arc_task_score ts = {.ntest = t->ntest};
		for (int j = 0; j < sub->n && !e; j++)
			if (strcmp(sub->t[j].id, t->id) == 0)
				e = &sub->t[j];
		ts.missing = !e;
		for (int k = 0; e && k < t->ntest && k < e->ntest; k++) {
			const lmk_arc_grid *o = &t->test[k].out;
			if (lmk_arc_grid_eq(&e->att[2 * k], o) ||
			    lmk_arc_grid_eq(&e->att[2 * k + 1], o))
				ts.nsolved++;
			double best = -1;
			for (int a = 0; a < 2; a++) {
				const lmk_arc_grid *g = &e->att[2 * k + a];
				if (g->h != o->h || g->w != o->w)
					continue;
				int right = 0;
				for (int c = 0; c < o->h * o->w; c++)
					right += g->c[c] == o->c[c];
				if ((double)right / (o->h * o->w) > best)
					best = (double)right / (o->h * o->w);
			}
			if (best >= 0) {
				ts.nsized++;
				ts.cells += best;
			}
		}
		total->tests_sized += ts.nsized;
		total->cells += ts.cells;
		ts.cells /= ts.ntest;
		ts.solved = ts.nsolved == ts.ntest;
		if (per)
			per[i] = ts;
		total->tasks++;
		total->tasks_solved += ts.solved;
		total->tests += ts.ntest;
		total->tests_solved += ts.nsolved;
		total->kaggle += (double)ts.nsolved / ts.ntest;
		total->missing += ts.missing;
	}
	if (total->tasks)
		total->kaggle /= total->tasks;
	if (total->tests)
		total->cells /= total->tests;
	for (int j = 0; j < sub->n; j++)
		total->extra += !lmk_arc_set_find(truth, sub->t[j].id);
	return 0;
}
