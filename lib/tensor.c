/* tensor.c: the activation arena, the execution context, tensors of a step,
 * the tape and its replay, and parameter sets in one allocation.
 * Memory of a step comes from two arenas: `arena` (data, gradients, saved
 * buffers; device memory on CUDA) and `meta` (descriptors, always host).
 * On CUDA every fill and copy is queued on the context's stream, so that it
 * is ordered with the kernels; only the copies to the host wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "tensor.h"
#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/ops_cuda.h"
#include "../cuda/attention.h"
#endif

#define ALIGN 64
/* Under AddressSanitizer every allocation is followed by a poisoned red
 * zone and everything not handed out is poisoned, so that a kernel writing
 * past its tensor is caught although the arena is one big malloc. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define REDZONE ALIGN
#define POISON(dev, p, n) ((dev) == LMK_DEV_CPU ? ASAN_POISON_MEMORY_REGION(p, n) : (void)0)
#define UNPOISON(dev, p, n) ((dev) == LMK_DEV_CPU ? ASAN_UNPOISON_MEMORY_REGION(p, n) : (void)0)
#else
#define REDZONE 0
#define POISON(dev, p, n) ((void)0)
#define UNPOISON(dev, p, n) ((void)0)
#endif
#define CHUNK_DEFAULT ((size_t)64 << 20)
#define META_CHUNK ((size_t)1 << 20)

/* The header lives on the host even when mem is device memory. */
struct lmk_chunk {
	struct lmk_chunk *next;
	char *mem;
	size_t size, used;
};

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static void *dev_alloc(lmk_device dev, size_t bytes)
{
#if LMK_CUDA
	if (dev == LMK_DEV_CUDA) {
		void *p; /* cudaMalloc aligns to 256 bytes */
		return lmk_cuda_mem_alloc(&p, round_up(bytes, ALIGN)) < 0 ? NULL : p;
	}
#endif
	(void)dev;
	return aligned_alloc(ALIGN, round_up(bytes, ALIGN));
}

static void dev_free(lmk_device dev, void *p)
{
#if LMK_CUDA
	if (dev == LMK_DEV_CUDA) {
		lmk_cuda_mem_free(p); /* waits for the device first */
		return;
	}
#endif
	(void)dev;
	free(p);
}

/* memset, queued on the stream of backend for device memory. */
static int dev_memset(lmk_device dev, void *backend, void *p, int byte, size_t bytes)
{
#if LMK_CUDA
	if (dev == LMK_DEV_CUDA)
		return lmk_cuda_memset(backend, p, byte, bytes);
#endif
	(void)dev;
	(void)backend;
	if (bytes)
		memset(p, byte, bytes);
	return 0;
}

/* Host to memory of dev; host may be reused on return. */
static int dev_upload(lmk_device dev, void *backend, void *dst, const void *host, size_t bytes)
{
#if LMK_CUDA
	if (dev == LMK_DEV_CUDA)
		return lmk_cuda_upload(backend, dst, host, bytes);
#endif
	(void)dev;
	(void)backend;
	if (bytes)
		memcpy(dst, host, bytes);
	return 0;
}

/* Memory of dev to host, waiting for it. */
static int dev_download(lmk_device dev, void *backend, void *host, const void *src, size_t bytes)
{
#if LMK_CUDA
	if (dev == LMK_DEV_CUDA)
		return lmk_cuda_download(backend, host, src, bytes);
#endif
	(void)dev;
	(void)backend;
	if (bytes)
		memcpy(host, src, bytes);
	return 0;
}

static struct lmk_chunk *chunk_new(lmk_arena *a, size_t size)
{
	struct lmk_chunk *ch = malloc(sizeof *ch);
	if (!ch)
		return NULL;
	ch->mem = dev_alloc(a->dev, size);
	if (!ch->mem) {
		free(ch);
		return NULL;
	}
	POISON(a->dev, ch->mem, size);
	ch->next = NULL;
	ch->size = size;
	ch->used = 0;
	a->reserved += size;
	return ch;
}

static void chunks_free(lmk_arena *a, struct lmk_chunk *ch)
{
	while (ch) {
		struct lmk_chunk *next = ch->next;
		a->reserved -= ch->size;
		UNPOISON(a->dev, ch->mem, ch->size);
		dev_free(a->dev, ch->mem);
		free(ch);
		ch = next;
	}
}

void *lmk_arena_alloc(lmk_arena *a, size_t bytes)
{
	/* A zero-byte request still gets its own address. */
	if (bytes > SIZE_MAX - 2 * ALIGN) {
		lmk_err(LMK_ENOMEM, "arena: cannot allocate %zu bytes", bytes);
		return NULL;
	}
	size_t need = round_up(bytes ? bytes : 1, ALIGN) + REDZONE;
	struct lmk_chunk *ch, **tail = &a->chunks;

	/* First fit: chunks are few (one in the steady state). */
	for (ch = a->chunks; ch; ch = ch->next) {
		if (ch->size - ch->used >= need)
			break;
		tail = &ch->next;
	}
	if (!ch) {
		size_t min = a->chunk ? a->chunk : CHUNK_DEFAULT;
		ch = chunk_new(a, need > min ? need : min);
		if (!ch) {
			lmk_err(LMK_ENOMEM, "arena: cannot allocate a chunk of %zu bytes",
				need > min ? need : min);
			return NULL;
		}
		*tail = ch;
	}
	void *p = ch->mem + ch->used;
	UNPOISON(a->dev, p, bytes);
	ch->used += need;
	a->used += need;
	if (a->used > a->peak)
		a->peak = a->used;
	if (a->poison && dev_memset(a->dev, a->backend, p, 0xFF, bytes) < 0)
		return NULL;
	return p;
}

void lmk_arena_reset(lmk_arena *a)
{
	for (struct lmk_chunk *ch = a->chunks; ch; ch = ch->next) {
		POISON(a->dev, ch->mem, ch->size);
		ch->used = 0;
	}
	a->used = 0;
	if (a->chunks && a->chunks->next) {
		/* The peak is known now: one chunk of that size serves the same
		 * sequence of requests, back to back. If it cannot be had, the
		 * old chunks still do. */
		size_t min = a->chunk ? a->chunk : CHUNK_DEFAULT;
		struct lmk_chunk *one = chunk_new(a, a->peak > min ? a->peak : min);
		if (one) {
			chunks_free(a, a->chunks);
			a->chunks = one;
		}
	}
}

void lmk_arena_free(lmk_arena *a)
{
	chunks_free(a, a->chunks);
	a->chunks = NULL;
	a->used = a->peak = a->reserved = 0;
}

int lmk_arena_nchunks(const lmk_arena *a)
{
	int n = 0;
	for (const struct lmk_chunk *ch = a->chunks; ch; ch = ch->next)
		n++;
	return n;
}

const void *lmk_arena_base(const lmk_arena *a)
{
	return a->chunks ? a->chunks->mem : NULL;
}

/* A table the context keeps on its device (lmk_tensor_upload_const). */
struct lmk_ctx_const {
	void *host, *dev;
	size_t bytes;
};

int lmk_ctx_init(lmk_ctx *c, lmk_device dev)
{
	return lmk_ctx_init_ex(c, dev, 0, LMK_F32);
}

int lmk_ctx_init_ex(lmk_ctx *c, lmk_device dev, int index, lmk_dtype dtype)
{
	memset(c, 0, sizeof *c);
	if (dev != LMK_DEV_CPU && dev != LMK_DEV_CUDA)
		return lmk_err(LMK_EINVAL, "ctx: unknown device %d", (int)dev);
	if ((int)dtype < 0 || dtype >= LMK_NDTYPE)
		return lmk_err(LMK_EINVAL, "ctx: unknown dtype %d", (int)dtype);
	if (dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		if (dtype != LMK_F32 && dtype != LMK_BF16)
			return lmk_err(LMK_EINVAL, "ctx: cuda computes in F32 or BF16, not %s",
				       lmk_dtype_name(dtype));
		int rc = lmk_cuda_init(&c->backend, index);
		if (rc < 0)
			return rc;
#else
		(void)index;
		return lmk_err(LMK_EUNSUP, "ctx: cuda requested in a cpu-only build");
#endif
	} else if (dtype != LMK_F32) {
		return lmk_err(LMK_EUNSUP, "ctx: the cpu computes in F32 only, not %s",
			       lmk_dtype_name(dtype));
	}
	c->dev = dev;
	c->dtype = dtype;
	c->grad_enabled = 1;
	c->arena.dev = dev;
	c->arena.backend = c->backend;
	c->meta.dev = LMK_DEV_CPU;
	c->meta.chunk = META_CHUNK;
	return 0;
}

void lmk_ctx_set_nondeterministic(lmk_ctx *c, int on)
{
#if LMK_CUDA
	if (c->dev == LMK_DEV_CUDA)
		lmk_cuda_attention_set_nondeterministic(c->backend, on);
#endif
	(void)c;
	(void)on;
}

void lmk_ctx_free(lmk_ctx *c)
{
	for (int i = 0; i < c->nconsts; i++) {
		dev_free(c->dev, c->consts[i].dev);
		free(c->consts[i].host);
	}
	free(c->consts);
	c->consts = NULL;
	c->nconsts = 0;
	lmk_arena_free(&c->arena);
	lmk_arena_free(&c->meta);
	free(c->tape);
	c->tape = NULL;
	c->ntape = c->tapecap = 0;
#if LMK_CUDA
	if (c->backend)
		lmk_cuda_free(c->backend);
#endif
	c->backend = NULL;
	c->arena.backend = NULL;
}

int lmk_ctx_sync(lmk_ctx *c)
{
#if LMK_CUDA
	if (c->dev == LMK_DEV_CUDA)
		return lmk_cuda_sync(c->backend);
#endif
	(void)c;
	return 0;
}

void lmk_ctx_reset(lmk_ctx *c)
{
	lmk_arena_reset(&c->arena);
	lmk_arena_reset(&c->meta);
	c->ntape = 0;
	c->rope_host = NULL;
	c->rope_dev = NULL;
	c->rope_n = 0;
}

/* The context's device copy of the bytes at host, made at the first call
 * with those bytes. @return : NULL on failure (message recorded) */
static const void *ctx_const(lmk_ctx *c, const void *host, size_t bytes)
{
	struct lmk_ctx_const *k;
	for (int i = 0; i < c->nconsts; i++)
		if (c->consts[i].bytes == bytes && !memcmp(c->consts[i].host, host, bytes))
			return c->consts[i].dev;
	if (!(k = realloc(c->consts, (size_t)(c->nconsts + 1) * sizeof *k))) {
		lmk_err(LMK_ENOMEM, "ctx: cannot keep %d tables", c->nconsts + 1);
		return NULL;
	}
	c->consts = k;
	k += c->nconsts;
	k->bytes = bytes;
	k->host = malloc(bytes ? bytes : 1);
	k->dev = k->host ? dev_alloc(c->dev, bytes ? bytes : 1) : NULL;
	if (!k->dev || dev_upload(c->dev, c->backend, k->dev, host, bytes) < 0) {
		if (k->dev)
			dev_free(c->dev, k->dev);
		free(k->host);
		lmk_err(LMK_ENOMEM, "ctx: cannot copy a table of %zu bytes to the device", bytes);
		return NULL;
	}
	memcpy(k->host, host, bytes);
	c->nconsts++;
	return k->dev;
}

/* The tensor that holds t's gradient state: t, or the base of a view. */
static lmk_tensor *owner(const lmk_tensor *t) { return t->base ? t->base : (lmk_tensor *)t; }

void lmk_tensor_setshape(lmk_tensor *t, int ndim, const int64_t *shape)
{
	t->ndim = ndim;
	t->n = 1;
	for (int i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		t->n *= shape[i];
	}
	for (int i = ndim; i < LMK_MAXDIM; i++)
		t->shape[i] = 0;
}

/* @return : 0, or LMK_EINVAL with a message naming who */
static int check_shape(const char *who, int ndim, const int64_t *shape)
{
	if (ndim < 0 || ndim > LMK_MAXDIM)
		return lmk_err(LMK_EINVAL, "%s: expected 0 to %d dimensions, found %d", who,
			       LMK_MAXDIM, ndim);
	int64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return lmk_err(LMK_EINVAL, "%s: dimension %d is negative (%lld)", who, i,
				       (long long)shape[i]);
		if (shape[i] && n > INT64_MAX / 16 / shape[i])
			return lmk_err(LMK_EINVAL, "%s: shape too large", who);
		n *= shape[i];
	}
	return 0;
}

static lmk_tensor *desc_new(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape)
{
	if (check_shape("tensor", ndim, shape) < 0)
		return NULL;
	if ((int)dt < 0 || dt >= LMK_NDTYPE) {
		lmk_err(LMK_EINVAL, "tensor: unknown dtype %d", (int)dt);
		return NULL;
	}
	lmk_tensor *t = lmk_arena_alloc(&c->meta, sizeof *t);
	if (!t)
		return NULL;
	memset(t, 0, sizeof *t);
	t->dtype = dt;
	t->gdtype = LMK_F32;
	t->dev = c->dev;
	lmk_tensor_setshape(t, ndim, shape);
	return t;
}

/* A tensor whose gradient (if any) is zeroed (zero) or left unwritten. */
static lmk_tensor *tensor_new(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			      int requires_grad, int zero)
{
	lmk_tensor *t = desc_new(c, dt, ndim, shape);
	if (!t)
		return NULL;
	size_t bytes = (size_t)t->n * lmk_dtype_size(dt);
	t->data = lmk_arena_alloc(&c->arena, bytes);
	if (!t->data)
		return NULL;
	if (requires_grad && c->grad_enabled) {
		if (dt != LMK_F32 && dt != LMK_BF16 && dt != LMK_F16) {
			lmk_err(LMK_EINVAL, "tensor: a %s tensor cannot have a gradient",
				lmk_dtype_name(dt));
			return NULL;
		}
		/* float32 gradients whatever the storage type on the CPU; on
		 * CUDA the activation's own dtype (bf16 in a BF16 context) */
		lmk_dtype gdt = c->dev == LMK_DEV_CUDA ? dt : LMK_F32;
		size_t gbytes = (size_t)t->n * lmk_dtype_size(gdt);
		t->grad = lmk_arena_alloc(&c->arena, gbytes);
		if (!t->grad || (zero && dev_memset(c->dev, c->backend, t->grad, 0, gbytes) < 0))
			return NULL;
		t->gdtype = gdt;
		t->requires_grad = 1;
		t->gunwritten = !zero;
	}
	return t;
}

lmk_tensor *lmk_tensor_new(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			   int requires_grad)
{
	return tensor_new(c, dt, ndim, shape, requires_grad, 1);
}

lmk_tensor *lmk_tensor_new_out(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			       int requires_grad)
{
	return tensor_new(c, dt, ndim, shape, requires_grad, 0);
}

lmk_tensor *lmk_tensor_wrap(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			    void *data)
{
	lmk_tensor *t = desc_new(c, dt, ndim, shape);
	if (t)
		t->data = data;
	return t;
}

lmk_tensor *lmk_tensor_upload(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			      const void *host)
{
	lmk_tensor *t = desc_new(c, dt, ndim, shape);
	if (!t)
		return NULL;
	size_t bytes = (size_t)t->n * lmk_dtype_size(dt);
	t->data = lmk_arena_alloc(&c->arena, bytes);
	if (!t->data || dev_upload(t->dev, c->backend, t->data, host, bytes) < 0)
		return NULL;
	return t;
}

lmk_tensor *lmk_tensor_upload_const(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
				    const void *host)
{
	if (c->dev == LMK_DEV_CPU)
		return lmk_tensor_upload(c, dt, ndim, shape, host);
	lmk_tensor *t = desc_new(c, dt, ndim, shape);
	if (!t)
		return NULL;
	size_t bytes = (size_t)t->n * lmk_dtype_size(dt);
	const void *src = ctx_const(c, host, bytes);
	t->data = src ? lmk_arena_alloc(&c->arena, bytes) : NULL;
	if (!t->data)
		return NULL;
#if LMK_CUDA
	if (lmk_cuda_copy(c->backend, t->data, src, bytes) < 0)
		return NULL;
#endif
	return t;
}

int lmk_tensor_copy_to_host(lmk_ctx *c, const lmk_tensor *t, void *host)
{
	return dev_download(t->dev, c->backend, host, t->data,
			    (size_t)t->n * lmk_dtype_size(t->dtype));
}

int lmk_tensor_copy_from_host(lmk_ctx *c, lmk_tensor *t, const void *host)
{
	return dev_upload(t->dev, c->backend, t->data, host,
			  (size_t)t->n * lmk_dtype_size(t->dtype));
}

int lmk_tensor_read_f32(lmk_ctx *c, const lmk_tensor *t, int grad, float *host)
{
	const void *src = grad ? t->grad : t->data;
	lmk_dtype dt = grad ? t->gdtype : t->dtype;
	size_t bytes = (size_t)t->n * lmk_dtype_size(dt);
	if (!src)
		return lmk_err(LMK_EINVAL, "tensor read: the tensor has no %s",
			       grad ? "gradient" : "data");
	if (grad && owner(t)->gunwritten) {
		memset(host, 0, (size_t)t->n * sizeof(float));
		return 0;
	}
	if (t->dev == LMK_DEV_CPU || dt == LMK_F32) {
		if (t->dev != LMK_DEV_CPU)
			return dev_download(t->dev, c->backend, host, src, bytes);
		lmk_dtype_to_f32(dt, src, host, (size_t)t->n);
		return 0;
	}
	void *tmp = malloc(bytes ? bytes : 1);
	if (!tmp)
		return lmk_err(LMK_ENOMEM, "tensor read: cannot allocate %zu bytes", bytes);
	int rc = dev_download(t->dev, c->backend, tmp, src, bytes);
	if (rc == 0)
		lmk_dtype_to_f32(dt, tmp, host, (size_t)t->n);
	free(tmp);
	return rc;
}

int lmk_tensor_write_f32(lmk_ctx *c, lmk_tensor *t, int grad, const float *host)
{
	void *dst = grad ? t->grad : t->data;
	lmk_dtype dt = grad ? t->gdtype : t->dtype;
	size_t bytes = (size_t)t->n * lmk_dtype_size(dt);
	if (!dst)
		return lmk_err(LMK_EINVAL, "tensor write: the tensor has no %s",
			       grad ? "gradient" : "data");
	if (dt != LMK_F32 && dt != LMK_BF16 && dt != LMK_F16 && dt != LMK_F64)
		return lmk_err(LMK_EINVAL, "tensor write: cannot write floats into %s",
			       lmk_dtype_name(dt));
	if (grad)
		owner(t)->gunwritten = 0;
	if (t->dev == LMK_DEV_CPU)
		return lmk_dtype_from_f32(dt, host, dst, (size_t)t->n);
	if (dt == LMK_F32)
		return dev_upload(t->dev, c->backend, dst, host, bytes);
	void *tmp = malloc(bytes ? bytes : 1);
	if (!tmp)
		return lmk_err(LMK_ENOMEM, "tensor write: cannot allocate %zu bytes", bytes);
	int rc = lmk_dtype_from_f32(dt, host, tmp, (size_t)t->n);
	if (rc == 0)
		rc = dev_upload(t->dev, c->backend, dst, tmp, bytes);
	free(tmp);
	return rc;
}

lmk_tensor *lmk_reshape(lmk_ctx *c, lmk_tensor *x, int ndim, const int64_t *shape)
{
	if (!x)
		return NULL;
	if (ndim < 0 || ndim > LMK_MAXDIM) {
		lmk_err(LMK_EINVAL, "reshape: expected 0 to %d dimensions, found %d", LMK_MAXDIM,
			ndim);
		return NULL;
	}
	int64_t s[LMK_MAXDIM], known = 1;
	int infer = -1;
	for (int i = 0; i < ndim; i++) {
		s[i] = shape[i];
		if (s[i] == -1 && infer < 0)
			infer = i;
		else if (s[i] < 0) {
			lmk_err(LMK_EINVAL, "reshape: bad dimension %d (%lld)", i, (long long)s[i]);
			return NULL;
		} else
			known *= s[i];
	}
	if (infer >= 0) {
		if (known == 0 || x->n % known) {
			lmk_err(LMK_EINVAL, "reshape: cannot infer dimension %d of %lld elements",
				infer, (long long)x->n);
			return NULL;
		}
		s[infer] = x->n / known;
		known *= s[infer];
	}
	if (known != x->n) {
		lmk_err(LMK_EINVAL, "reshape: %lld elements cannot take a shape of %lld",
			(long long)x->n, (long long)known);
		return NULL;
	}
	lmk_tensor *t = lmk_arena_alloc(&c->meta, sizeof *t);
	if (!t)
		return NULL;
	*t = *x;
	lmk_tensor_setshape(t, ndim, s);
	t->base = owner(x);
	t->gunwritten = 0;
	t->viewed = 0;
	t->base->viewed = 1;
	return t;
}

lmk_node *lmk_tape_push(lmk_ctx *c, const char *op, lmk_tensor *out)
{
	if (c->ntape == c->tapecap) {
		int cap = c->tapecap ? 2 * c->tapecap : 256;
		lmk_node *t = realloc(c->tape, (size_t)cap * sizeof *t);
		if (!t) {
			lmk_err(LMK_ENOMEM, "tape: cannot grow to %d nodes", cap);
			return NULL;
		}
		c->tape = t;
		c->tapecap = cap;
	}
	lmk_node *n = &c->tape[c->ntape++];
	memset(n, 0, sizeof *n);
	n->op = op;
	n->out = out;
	return n;
}

int lmk_grad_zero(lmk_ctx *c, lmk_tensor *t)
{
	lmk_tensor *o = t ? owner(t) : NULL;
	if (!o || !o->grad || !o->gunwritten)
		return 0;
	o->gunwritten = 0;
	return dev_memset(o->dev, c->backend, o->grad, 0, (size_t)o->n * lmk_dtype_size(o->gdtype));
}

/* Whether in[j] of n has a gradient a backward writes. */
static int wants(const lmk_node *n, int j)
{
	return n->in[j] && n->in[j]->requires_grad && n->in[j]->grad;
}

/* Whether in[j] of n may take over out's gradient memory: its gradient
 * is out's (passes), only the two descriptors hold the pointers, and it is
 * an activation (a parameter's gradient lives in its set's buffer). */
static int can_pass(const lmk_node *n, int j)
{
	const lmk_tensor *t = n->in[j], *o = n->out;
	return (n->passes >> j & 1) && !n->passed && o && !o->base && o->grad && !t->base &&
	       !t->viewed && !t->name && t->n == o->n && t->gdtype == o->gdtype &&
	       t->dev == o->dev;
}

int lmk_node_backward(lmk_ctx *c, lmk_node *n)
{
	int rc;
	if (!n->backward || (n->out && owner(n->out)->gunwritten))
		return 0;
	n->assign = 0;
	n->passed = 0;
	for (int j = 0; j < LMK_NODE_MAXIN; j++) {
		if (!wants(n, j) || !owner(n->in[j])->gunwritten)
			continue;
		/* two inputs sharing a gradient (x * x) both add into it */
		int shared = 0;
		for (int k = 0; k < LMK_NODE_MAXIN; k++)
			shared |= k != j && wants(n, k) && owner(n->in[k]) == owner(n->in[j]);
		if (!shared && can_pass(n, j)) {
			/* its gradient is out's, which no one reads after this
			 * backward: the same memory, no copy */
			n->in[j]->grad = n->out->grad;
			n->in[j]->gunwritten = 0;
			n->passed |= 1 << j;
		} else if ((n->writes >> j & 1) && !shared) {
			n->assign |= 1 << j;
			owner(n->in[j])->gunwritten = 0;
		} else if ((rc = lmk_grad_zero(c, n->in[j])) < 0) {
			return rc;
		}
	}
	return n->backward(c, n);
}

/* The tape in reverse, then zeros into the gradients it left unwritten, so
 * that every gradient of the tape can be read afterwards. */
static int replay(lmk_ctx *c)
{
	int rc;
	for (int i = c->ntape - 1; i >= 0; i--) {
		lmk_node *n = &c->tape[i];
		if ((rc = lmk_node_backward(c, n)) < 0)
			return lmk_err_wrap(rc, "backward of %s (node %d)", n->op, i);
	}
	for (int i = 0; i < c->ntape; i++) {
		lmk_node *n = &c->tape[i];
		if ((rc = lmk_grad_zero(c, n->out)) < 0)
			return rc;
		for (int j = 0; j < LMK_NODE_MAXIN; j++)
			if ((rc = lmk_grad_zero(c, n->in[j])) < 0)
				return rc;
	}
	return 0;
}

static int check_grad_target(const char *who, const lmk_tensor *t)
{
	if (!t)
		return lmk_err(LMK_EINVAL, "%s: no tensor (an op before failed)", who);
	if (!t->requires_grad || !t->grad)
		return lmk_err(LMK_EINVAL,
			       "%s: the tensor has no gradient (grad disabled, or no input "
			       "requires grad)", who);
	return 0;
}

/* What lmk_backward and lmk_backward_dev ask of the loss. */
static int check_loss(const lmk_tensor *loss)
{
	int rc = check_grad_target("backward", loss);
	if (rc < 0)
		return rc;
	if (loss->n != 1)
		return lmk_err(LMK_EINVAL, "backward: expected a loss of 1 element, found %lld",
			       (long long)loss->n);
	return 0;
}

int lmk_backward(lmk_ctx *c, lmk_tensor *loss, float scale)
{
	int rc = check_loss(loss);
	if (rc < 0 || (rc = lmk_tensor_write_f32(c, loss, 1, &scale)) < 0)
		return rc;
	return replay(c);
}

int lmk_backward_dev(lmk_ctx *c, lmk_tensor *loss, const float *scale)
{
	int rc = check_loss(loss);
	if (rc < 0)
		return rc;
	if (c->dev == LMK_DEV_CPU)
		return lmk_backward(c, loss, *scale);
	if (loss->gdtype != LMK_F32)
		return lmk_err(LMK_EINVAL, "backward: a %s loss, expected f32",
			       lmk_dtype_name(loss->gdtype));
	owner(loss)->gunwritten = 0;
#if LMK_CUDA
	if ((rc = lmk_cuda_copy(c->backend, loss->grad, scale, sizeof(float))) < 0)
		return rc;
#endif
	return replay(c);
}

int lmk_backward_from(lmk_ctx *c, lmk_tensor *t, const float *dout)
{
	int rc = check_grad_target("backward", t);
	if (rc < 0 || (rc = lmk_grad_zero(c, t)) < 0)
		return rc;
#if LMK_CUDA
	if (t->dev == LMK_DEV_CUDA) {
		lmk_gbuf g = {t->grad, t->gdtype};
		if ((rc = lmk_cuda_accumulate(c->backend, g, dout, t->n)) < 0)
			return rc;
		return replay(c);
	}
#endif
	float *g = t->grad;
	for (int64_t i = 0; i < t->n; i++)
		g[i] += dout[i];
	return replay(c);
}

void lmk_params_init(lmk_params *p, int trainable)
{
	memset(p, 0, sizeof *p);
	p->trainable = trainable;
}

int lmk_params_add(lmk_params *p, const char *name, int ndim, const int64_t *shape)
{
	if (!name)
		return lmk_err(LMK_EINVAL, "params: a tensor needs a name");
	if (p->data)
		return lmk_err(LMK_EINVAL, "params: '%s' added after the layout was made", name);
	char who[96];
	snprintf(who, sizeof who, "params: '%.80s'", name);
	int rc = check_shape(who, ndim, shape);
	if (rc < 0)
		return rc;
	if (lmk_params_find(p, name))
		return lmk_err(LMK_EINVAL, "params: '%s' registered twice", name);
	if (p->nt == p->cap) {
		int cap = p->cap ? 2 * p->cap : 64;
		lmk_tensor *t = realloc(p->t, (size_t)cap * sizeof *t);
		if (!t)
			return lmk_err(LMK_ENOMEM, "params: cannot grow to %d tensors", cap);
		p->t = t;
		size_t *o = realloc(p->offset, (size_t)cap * sizeof *o);
		if (!o)
			return lmk_err(LMK_ENOMEM, "params: cannot grow to %d tensors", cap);
		p->offset = o;
		p->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return lmk_err(LMK_ENOMEM, "params: cannot copy the name '%s'", name);
	lmk_tensor *t = &p->t[p->nt];
	memset(t, 0, sizeof *t);
	t->dtype = LMK_F32;
	t->gdtype = LMK_F32;
	t->dev = LMK_DEV_CPU;
	t->name = copy;
	t->requires_grad = p->trainable != 0;
	lmk_tensor_setshape(t, ndim, shape);
	p->offset[p->nt] = 0;
	return p->nt++;
}

int lmk_params_alloc(lmk_params *p)
{
	if (p->data)
		return lmk_err(LMK_EINVAL, "params: already laid out");
	const size_t lane = ALIGN / sizeof(float);
	size_t n = 0;
	for (int i = 0; i < p->nt; i++) {
		p->offset[i] = n;
		n += round_up((size_t)p->t[i].n, lane);
	}
	size_t bytes = (n ? n : lane) * sizeof(float);
	p->data = aligned_alloc(ALIGN, bytes);
	if (p->trainable)
		p->grad = aligned_alloc(ALIGN, bytes);
	if (!p->data || (p->trainable && !p->grad)) {
		free(p->data);
		free(p->grad);
		p->data = p->grad = NULL;
		return lmk_err(LMK_ENOMEM, "params: cannot allocate %zu bytes", bytes);
	}
	memset(p->data, 0, bytes);
	if (p->grad)
		memset(p->grad, 0, bytes);
	p->n = n;
	for (int i = 0; i < p->nt; i++) {
		p->t[i].data = p->data + p->offset[i];
		p->t[i].grad = p->grad ? p->grad + p->offset[i] : NULL;
	}
	return 0;
}

void lmk_params_zero_grad(lmk_params *p)
{
	if (p->grad)
		dev_memset(p->dev, p->backend, p->grad, 0, p->n * sizeof(float));
}

void lmk_params_grad_unwritten(lmk_params *p)
{
	for (int i = 0; p->grad && i < p->nt; i++)
		p->t[i].gunwritten = 1;
}

int lmk_params_grad_settle(lmk_params *p)
{
	int rc;
	for (int i = 0; p->grad && i < p->nt; i++) {
		lmk_tensor *t = &p->t[i];
		if (!t->gunwritten)
			continue;
		t->gunwritten = 0;
		if ((rc = dev_memset(p->dev, p->backend, t->grad, 0, (size_t)t->n * sizeof(float))) < 0)
			return rc;
	}
	return 0;
}

int lmk_params_to_device(lmk_params *p, lmk_ctx *c)
{
	if (c->dev == LMK_DEV_CPU)
		return p->dev == LMK_DEV_CPU
			       ? 0
			       : lmk_err(LMK_EINVAL, "params: on the device, the context on the cpu");
	if (!p->data)
		return lmk_err(LMK_EINVAL, "params: not laid out (lmk_params_alloc)");
	if (p->dev != LMK_DEV_CPU)
		return lmk_err(LMK_EINVAL, "params: already on the device");
#if LMK_CUDA
	const size_t lane = ALIGN / sizeof(float), n = p->n ? p->n : lane;
	float *d = NULL, *g = NULL;
	void *lp = NULL;
	int rc = lmk_cuda_mem_alloc((void **)&d, n * sizeof(float));
	if (rc == 0 && p->grad)
		rc = lmk_cuda_mem_alloc((void **)&g, n * sizeof(float));
	if (rc == 0 && c->dtype == LMK_BF16)
		rc = lmk_cuda_mem_alloc(&lp, n * sizeof(uint16_t));
	if (rc == 0)
		rc = lmk_cuda_upload(c->backend, d, p->data, n * sizeof(float));
	if (rc == 0 && g)
		rc = lmk_cuda_memset(c->backend, g, 0, n * sizeof(float));
	if (rc == 0 && lp)
		rc = lmk_cuda_convert(c->backend, lp, LMK_BF16, d, LMK_F32, (int64_t)n);
	if (rc == 0)
		rc = lmk_cuda_sync(c->backend);
	if (rc < 0) {
		lmk_cuda_mem_free(d);
		lmk_cuda_mem_free(g);
		lmk_cuda_mem_free(lp);
		return lmk_err_wrap(rc, "params: to the device");
	}
	free(p->data);
	free(p->grad);
	p->data = d;
	p->grad = g;
	p->lp = lp;
	p->dev = LMK_DEV_CUDA;
	p->backend = c->backend;
	for (int i = 0; i < p->nt; i++) {
		lmk_tensor *t = &p->t[i];
		t->data = d + p->offset[i];
		t->grad = g ? g + p->offset[i] : NULL;
		t->lp = lp ? (uint16_t *)lp + p->offset[i] : NULL;
		t->dev = LMK_DEV_CUDA;
	}
	return 0;
#else
	return lmk_err(LMK_EUNSUP, "params: cuda in a cpu-only build");
#endif
}

int lmk_params_copy_to_host(const lmk_params *p, int grad, float *host)
{
	const float *src = grad ? p->grad : p->data;
	if (!src)
		return lmk_err(LMK_EINVAL, "params: no %s to copy", grad ? "gradient" : "data");
	return dev_download(p->dev, p->backend, host, src, p->n * sizeof(float));
}

int lmk_params_copy_from_host(lmk_params *p, const float *host)
{
	if (!p->data)
		return lmk_err(LMK_EINVAL, "params: not laid out (lmk_params_alloc)");
	int rc = dev_upload(p->dev, p->backend, p->data, host, p->n * sizeof(float));
#if LMK_CUDA
	if (rc == 0 && p->lp)
		rc = lmk_cuda_convert(p->backend, p->lp, LMK_BF16, p->data, LMK_F32, (int64_t)p->n);
#endif
	return rc;
}

lmk_tensor *lmk_params_find(lmk_params *p, const char *name)
{
	for (int i = 0; i < p->nt; i++)
		if (!strcmp(p->t[i].name, name))
			return &p->t[i];
	return NULL;
}

void lmk_params_free(lmk_params *p)
{
	for (int i = 0; i < p->nt; i++)
		free((char *)p->t[i].name);
	free(p->t);
	free(p->offset);
	if (p->dev == LMK_DEV_CPU) {
		free(p->data);
		free(p->grad);
	} else {
		dev_free(p->dev, p->data);
		dev_free(p->dev, p->grad);
		dev_free(p->dev, p->lp);
	}
	memset(p, 0, sizeof *p);
}
