/* tokdata.c: token data sets (see tokdata.h). Shape letters: B windows in a
 * batch, T tokens a window predicts (a window holds T+1). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "dtype.h"
#include "err.h"
#include "frame.h"
#include "tokdata.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static void reset(lmk_tokdata *d)
{
	memset(d, 0, sizeof *d);
	lmk_rng_init(&d->rng, 0);
}

void lmk_tokdata_free(lmk_tokdata *d)
{
	free(d->name);
	free(d->tok);
	reset(d);
}

/* FNV-1a over the ids as little-endian 32-bit words. */
static uint64_t hash_tokens(const int32_t *t, int64_t n)
{
	uint64_t h = FNV_OFFSET;
	for (int64_t i = 0; i < n; i++) {
		uint32_t v = (uint32_t)t[i];
		for (int b = 0; b < 4; b++) {
			h ^= (v >> (8 * b)) & 0xff;
			h *= FNV_PRIME;
		}
	}
	return h;
}

static int set_name(lmk_tokdata *d, const char *name)
{
	d->name = strdup(name);
	if (!d->name)
		return lmk_err(LMK_ENOMEM, "%s: out of memory", name);
	return 0;
}

static int finish(lmk_tokdata *d)
{
	if (d->n == 0) {
		int rc = lmk_err(LMK_EFORMAT, "%s: no tokens (the file is empty)", d->name);
		lmk_tokdata_free(d);
		return rc;
	}
	d->ntrain = d->n;
	d->hash = hash_tokens(d->tok, d->n);
	lmk_rng_init(&d->rng, 0);
	d->windows = 0;
	return 0;
}

int lmk_tokdata_load_text(lmk_tokdata *d, const char *name, const void *text, size_t len)
{
	int rc;

	reset(d);
	if ((rc = set_name(d, name)) < 0)
		return rc;
	d->tok = malloc((len ? len : 1) * sizeof *d->tok);
	if (!d->tok) {
		lmk_tokdata_free(d);
		return lmk_err(LMK_ENOMEM, "%s: out of memory for %zu tokens", name, len);
	}
	d->n = (int64_t)lmk_bytetok_encode(text, len, d->tok, 0);
	d->vocab = LMK_BYTETOK_VOCAB;
	d->text = 1;
	return finish(d);
}

/* The whole of f into a new buffer; *len its size. */
static int slurp(FILE *f, const char *path, unsigned char **buf, size_t *len)
{
	size_t cap = 1 << 16, n = 0, got;
	unsigned char *b = malloc(cap), *nb;

	if (!b)
		return lmk_err(LMK_ENOMEM, "%s: out of memory", path);
	while ((got = fread(b + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			if (cap > SIZE_MAX / 2 || !(nb = realloc(b, cap * 2))) {
				free(b);
				return lmk_err(LMK_ENOMEM, "%s: out of memory after %zu bytes", path, n);
			}
			b = nb;
			cap *= 2;
		}
	}
	if (ferror(f)) {
		int e = errno;
		free(b);
		return lmk_err(LMK_EIO, "cannot read '%s': %s", path, strerror(e));
	}
	*buf = b;
	*len = n;
	return 0;
}

/* Whether the first bytes h (hn of them) of a file named path start a
 * frame stream: safetensors' 8-byte header length (at most the largest
 * header a reader accepts) followed by '{', or gzip's magic. */
static int looks_like_frames(const char *path, const unsigned char *h, size_t hn)
{
	size_t pl = strlen(path);
	uint64_t len = 0;

	if (pl >= 12 && strcmp(path + pl - 12, ".safetensors") == 0)
		return 1;
	if (hn >= 2 && h[0] == 0x1f && h[1] == 0x8b)
		return 1;
	if (hn < 9)
		return 0;
	for (int i = 7; i >= 0; i--)
		len = len << 8 | h[i];
	return len >= 2 && len <= LMK_FRAME_MAXHEADER && h[8] == '{';
}

/* Appends the ids of frame k's "tokens" tensor to d. */
static int add_frame(lmk_tokdata *d, const lmk_frame *f, int64_t k, int64_t *cap, int *vocab_meta)
{
	const char *kind = lmk_frame_meta(f, "kind"), *vs = lmk_frame_meta(f, "vocab_size");
	const lmk_ftensor *t = lmk_frame_find(f, "tokens");
	int64_t cnt;
	size_t es;
	const unsigned char *p;

	if (kind && strcmp(kind, "tokens") != 0)
		return lmk_err(LMK_EFORMAT, "%s: frame %lld: kind '%s', expected 'tokens'", d->name,
			       (long long)k, kind);
	if (!t)
		return lmk_err(LMK_EFORMAT, "%s: frame %lld: no tensor 'tokens'", d->name, (long long)k);
	if (t->dtype != LMK_I32 && t->dtype != LMK_U16 && t->dtype != LMK_I64)
		return lmk_err(LMK_EFORMAT,
			       "%s: frame %lld: tensor 'tokens': dtype %s, expected I32, U16 or I64",
			       d->name, (long long)k, lmk_dtype_name(t->dtype));
	if (vs) {
		char *end;
		long v;
		errno = 0;
		v = strtol(vs, &end, 10);
		if (errno || end == vs || *end || v < 1 || v > INT32_MAX)
			return lmk_err(LMK_EFORMAT,
				       "%s: frame %lld: vocab_size '%s', expected a whole number from 1 to %d",
				       d->name, (long long)k, vs, INT32_MAX);
		if (*vocab_meta && *vocab_meta != v)
			return lmk_err(LMK_EFORMAT,
				       "%s: frame %lld: vocab_size %ld, but an earlier frame said %d",
				       d->name, (long long)k, v, *vocab_meta);
		*vocab_meta = (int)v;
	}
	cnt = lmk_ftensor_numel(t);
	es = lmk_dtype_size(t->dtype);
	if (cnt < 0 || (uint64_t)cnt * es != t->nbytes)
		return lmk_err(LMK_EFORMAT, "%s: frame %lld: tensor 'tokens': expected %llu bytes, found %zu",
			       d->name, (long long)k, (unsigned long long)cnt * es, t->nbytes);
	if (d->n + cnt > *cap) {
		int64_t nc = *cap ? *cap : 1 << 16;
		int32_t *nt;
		while (nc < d->n + cnt)
			nc *= 2;
		if ((uint64_t)nc > SIZE_MAX / sizeof *nt || !(nt = realloc(d->tok, (size_t)nc * sizeof *nt)))
			return lmk_err(LMK_ENOMEM, "%s: out of memory for %lld tokens", d->name,
				       (long long)(d->n + cnt));
		d->tok = nt;
		*cap = nc;
	}
	p = t->data;
	for (int64_t i = 0; i < cnt; i++) {
		int64_t v;
		if (t->dtype == LMK_U16) {
			uint16_t u;
			memcpy(&u, p + 2 * i, 2);
			v = u;
		} else if (t->dtype == LMK_I32) {
			int32_t u;
			memcpy(&u, p + 4 * i, 4);
			v = u;
		} else {
			memcpy(&v, p + 8 * i, 8);
		}
		if (v < 0 || v >= INT32_MAX)
			return lmk_err(LMK_EFORMAT,
				       "%s: frame %lld: tensor 'tokens': element %lld is %lld, expected a token id from 0 to %d",
				       d->name, (long long)k, (long long)i, (long long)v, INT32_MAX - 1);
		if (*vocab_meta && v >= *vocab_meta)
			return lmk_err(LMK_EFORMAT,
				       "%s: frame %lld: tensor 'tokens': element %lld is %lld, not below vocab_size %d",
				       d->name, (long long)k, (long long)i, (long long)v, *vocab_meta);
		if (v >= d->vocab)
			d->vocab = (int)v + 1;
		d->tok[d->n + i] = (int32_t)v;
	}
	d->n += cnt;
	return 0;
}

static int load_frames(lmk_tokdata *d, const char *path)
{
	lmk_reader *r;
	lmk_frame f;
	int64_t cap = 0, k = 0;
	int rc, vocab_meta = 0;

	if ((rc = lmk_reader_open(&r, path)) < 0)
		return rc;
	for (;;) {
		lmk_frame_init(&f);
		rc = lmk_reader_next(r, &f);
		if (rc <= 0)
			break;
		rc = add_frame(d, &f, k++, &cap, &vocab_meta);
		lmk_frame_free(&f);
		if (rc < 0)
			break;
	}
	lmk_reader_close(r);
	if (rc < 0)
		return rc;
	if (k == 0)
		return lmk_err(LMK_EFORMAT, "%s: no frames", path);
	if (vocab_meta)
		d->vocab = vocab_meta;
	return 0;
}

int lmk_tokdata_load(lmk_tokdata *d, const char *path)
{
	unsigned char head[16];
	size_t hn;
	FILE *f;
	int rc;

	reset(d);
	f = fopen(path, "rb");
	if (!f)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	hn = fread(head, 1, sizeof head, f);
	if (ferror(f)) {
		rc = lmk_err(LMK_EIO, "cannot read '%s': %s", path, strerror(errno));
		fclose(f);
		return rc;
	}
	if (looks_like_frames(path, head, hn)) {
		fclose(f);
		if ((rc = set_name(d, path)) < 0)
			return rc;
		if ((rc = load_frames(d, path)) < 0) {
			lmk_tokdata_free(d);
			return rc;
		}
		return finish(d);
	} else {
		unsigned char *buf = NULL, *all;
		size_t len = 0;
		rc = slurp(f, path, &buf, &len);
		fclose(f);
		if (rc < 0)
			return rc;
		/* the head was read apart: put it back in front */
		all = malloc(hn + len + 1);
		if (!all) {
			free(buf);
			return lmk_err(LMK_ENOMEM, "%s: out of memory", path);
		}
		memcpy(all, head, hn);
		memcpy(all + hn, buf, len);
		free(buf);
		rc = lmk_tokdata_load_text(d, path, all, hn + len);
		free(all);
		return rc;
	}
}

int lmk_tokdata_init_gen(lmk_tokdata *d, const char *name,
			 int (*gen)(void *, int, int64_t, int, int, int32_t *, int32_t *),
			 void *arg, int T, int vocab, int64_t nval, uint64_t hash)
{
	memset(d, 0, sizeof *d);
	if (set_name(d, name) < 0)
		return LMK_ENOMEM;
	d->gen = gen;
	d->gen_arg = arg;
	d->gen_T = T;
	d->vocab = vocab;
	d->hash = hash;
	d->ntrain = (int64_t)1 << 40;
	d->n = d->ntrain + nval * (int64_t)T;
	return 0;
}

int lmk_tokdata_split(lmk_tokdata *d, double val_frac)
{
	if (!(val_frac >= 0 && val_frac < 1))
		return lmk_err(LMK_EINVAL, "%s: validation fraction %g, expected a number in [0, 1)",
			       d->name, val_frac);
	if (d->gen)
		return 0; /* its validation set is its own */
	d->ntrain = d->n - (int64_t)((double)d->n * val_frac);
	return 0;
}

void lmk_tokdata_seed(lmk_tokdata *d, uint64_t seed)
{
	lmk_rng_init(&d->rng, seed);
	d->windows = 0;
}

int lmk_tokdata_check(const lmk_tokdata *d, int T, int need_val)
{
	int64_t nval = d->n - d->ntrain;

	if (T < 1)
		return lmk_err(LMK_EINVAL, "%s: window length %d, expected at least 1", d->name, T);
	if (d->gen) {
		if (T != d->gen_T)
			return lmk_err(LMK_EINVAL, "%s: examples of %d tokens, the run's sequences have %d",
				       d->name, d->gen_T, T);
		if (need_val && d->n == d->ntrain)
			return lmk_err(LMK_EINVAL, "%s: no validation examples", d->name);
		return 0;
	}
	if (d->ntrain < (int64_t)T + 1)
		return lmk_err(LMK_EINVAL,
			       "%s: %lld training tokens, fewer than the %lld of one window (sequence length + 1)",
			       d->name, (long long)d->ntrain, (long long)T + 1);
	if (need_val && nval < (int64_t)T + 1)
		return lmk_err(LMK_EINVAL,
			       "%s: %lld validation tokens, fewer than the %lld of one window (sequence length + 1)",
			       d->name, (long long)nval, (long long)T + 1);
	return 0;
}

int lmk_tokdata_train_batch(lmk_tokdata *d, int B, int T, int32_t *x, int32_t *y)
{
	int rc;

	if ((rc = lmk_tokdata_check(d, T, 0)) < 0)
		return rc;
	if (d->gen) {
		if ((rc = d->gen(d->gen_arg, 0, d->windows, B, T, x, y)) < 0)
			return rc;
		d->windows += B;
		return 0;
	}
	for (int b = 0; b < B; b++) {
		int64_t s = (int64_t)lmk_rng_below(&d->rng, (uint64_t)(d->ntrain - T));
		memcpy(x + (size_t)b * T, d->tok + s, (size_t)T * sizeof *x);
		memcpy(y + (size_t)b * T, d->tok + s + 1, (size_t)T * sizeof *y);
	}
	d->windows += B;
	return 0;
}

int64_t lmk_tokdata_val_windows(const lmk_tokdata *d, int T)
{
	int64_t nval = d->n - d->ntrain;
	if (d->gen)
		return T == d->gen_T ? nval / T : 0;
	return T >= 1 && nval >= (int64_t)T + 1 ? (nval - 1) / T : 0;
}

int lmk_tokdata_val_batch(const lmk_tokdata *d, int B, int T, int64_t nsel, int64_t first,
			  int32_t ignore, int32_t *x, int32_t *y)
{
	int64_t W = lmk_tokdata_val_windows(d, T);
	int rows = 0;

	if (nsel > W)
		nsel = W;
	for (int b = 0; b < B; b++) {
		int64_t j = first + b;
		int32_t *xb = x + (size_t)b * T, *yb = y + (size_t)b * T;
		if (j < 0 || j >= nsel) {
			for (int t = 0; t < T; t++) {
				xb[t] = 0;
				yb[t] = ignore;
			}
			continue;
		}
		/* j*W/nsel without overflow for any realistic W */
		int64_t w = (int64_t)((__int128)j * W / nsel), s = d->ntrain + w * T;
		if (d->gen) {
			/* a generator that fails leaves the row without targets */
			if (d->gen(d->gen_arg, 1, w, 1, T, xb, yb) < 0)
				for (int t = 0; t < T; t++)
					yb[t] = ignore;
			else
				for (int t = 0; t < T; t++)
					if (yb[t] < 0)
						yb[t] = ignore;
			rows++;
			continue;
		}
		memcpy(xb, d->tok + s, (size_t)T * sizeof *xb);
		memcpy(yb, d->tok + s + 1, (size_t)T * sizeof *yb);
		rows++;
	}
	return rows;
}

void lmk_tokdata_tell(const lmk_tokdata *d, lmk_tokdata_pos *pos)
{
	pos->seed = d->rng.seed;
	pos->words = lmk_rng_tell(&d->rng);
	pos->windows = d->windows;
}

void lmk_tokdata_seek(lmk_tokdata *d, const lmk_tokdata_pos *pos)
{
	lmk_rng_init(&d->rng, pos->seed);
	lmk_rng_seek(&d->rng, pos->words);
	d->windows = pos->windows;
}
