/* tensor.h: tensors, the activation arena, the execution context and the tape.
 * Models are written as forward code over lmk_tensor values. In a context with
 * grad enabled every op appends a node to the tape; lmk_backward replays the
 * nodes in reverse. Activations and their gradients come from an arena that
 * lmk_ctx_reset empties, so after the first step a training step mallocs
 * nothing. Shapes are row-major, last dimension fastest.
 * Owns: tensors of a step, the arena, the tape. Needs: dtype, err.
 * Never: prints, exits, or knows about any particular model. */
#ifndef LMK_TENSOR_H
#define LMK_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define LMK_MAXDIM 4
#define LMK_NODE_MAXIN 6

typedef enum { LMK_DEV_CPU = 0, LMK_DEV_CUDA = 1 } lmk_device;

typedef struct lmk_tensor {
	void *data;
	void *grad;          /* same shape and device; float32 on the CPU */
	lmk_dtype dtype;     /* CPU activations and parameters: F32; ids: I32 */
	lmk_device dev;
	int ndim;
	int64_t shape[LMK_MAXDIM];
	int64_t n;           /* number of elements */
	int requires_grad;   /* a trainable parameter, or computed from one */
	const char *name;    /* parameters only; NULL for activations */
} lmk_tensor;

/* Bump allocator in chunks of max(request, chunk) bytes; reset keeps the
 * chunks for the next step and, when a step needed more than one, merges
 * them into one chunk of the peak size, so that from then on a step of the
 * same shape allocates nothing. A zeroed struct is a valid empty CPU arena. */
typedef struct lmk_arena {
	struct lmk_chunk *chunks;
	size_t used, peak, reserved; /* bytes handed out now, at most, and held */
	lmk_device dev;
	size_t chunk;        /* smallest chunk in bytes; 0 means 64 MiB */
} lmk_arena;

struct lmk_ctx;
typedef struct lmk_node {
	/* Adds this op's input gradients given out->grad. @return : 0 or < 0 */
	int (*backward)(struct lmk_ctx *c, struct lmk_node *n);
	const char *op;
	lmk_tensor *out;
	lmk_tensor *in[LMK_NODE_MAXIN];
	void *saved;         /* arena memory kept by the forward for the backward */
	int64_t i[6];
	float f[4];
} lmk_node;

typedef struct lmk_ctx {
	lmk_device dev;
	int grad_enabled;    /* record ops and give activations gradients */
	lmk_arena arena;
	lmk_node *tape;
	int ntape, tapecap;
	uint64_t seed;       /* for ops that draw random numbers (dropout) */
	uint64_t counter;    /* advanced by each such op; reset never touches it */
	void *backend;       /* device handles (cuBLAS, streams) when dev is CUDA */
	lmk_arena meta;      /* host memory for tensor descriptors and saved
			      * scalars: `arena` holds device memory on CUDA */
} lmk_ctx;

/* Grad starts enabled; seed and counter start at 0.
 * @return : 0, or LMK_EUNSUP when dev is CUDA in a CPU-only build */
int lmk_ctx_init(lmk_ctx *c, lmk_device dev);
void lmk_ctx_free(lmk_ctx *c);
/* Forgets the tape and every tensor made since the last reset. */
void lmk_ctx_reset(lmk_ctx *c);

/* Arena memory, 64-byte aligned. @return : NULL with LMK_ENOMEM recorded */
void *lmk_arena_alloc(lmk_arena *a, size_t bytes);
void lmk_arena_reset(lmk_arena *a);
void lmk_arena_free(lmk_arena *a);
/* @return : the number of chunks held (1 in the steady state) */
int lmk_arena_nchunks(const lmk_arena *a);

/* A new activation from the arena, contents undefined. When grad is
 * enabled and requires_grad is set, a zeroed gradient is allocated with it
 * (so every backward can accumulate with +=).
 * @return : NULL on failure (message recorded) */
lmk_tensor *lmk_tensor_new(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			   int requires_grad);
/* A tensor wrapping memory the caller owns (token ids, a batch). No grad. */
lmk_tensor *lmk_tensor_wrap(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			    void *data);
/* A view of x with another shape of the same size, sharing data and grad.
 * One dimension may be -1: it is inferred from the others.
 * @return : NULL if x is NULL or the sizes differ */
lmk_tensor *lmk_reshape(lmk_ctx *c, lmk_tensor *x, int ndim, const int64_t *shape);
/* Fills *shape-less* descriptors: sets n from ndim/shape. */
void lmk_tensor_setshape(lmk_tensor *t, int ndim, const int64_t *shape);

/* Appends a node; the op fills it. @return : NULL on failure */
lmk_node *lmk_tape_push(lmk_ctx *c, const char *op, lmk_tensor *out);

/* Sets loss->grad to scale (loss must be a 0-d or 1-element tensor) and
 * replays the tape in reverse, accumulating into every gradient. Call it
 * once per step (between resets): activation gradients are not re-zeroed.
 * @return : 0 or the first failing op's code */
int lmk_backward(lmk_ctx *c, lmk_tensor *loss, float scale);
/* The same from any tensor t of the tape: adds dout (t->n floats, on t's
 * device) into t->grad, then replays. For a gradient computed elsewhere
 * (another program, a loss outside the tape) and for gradient checks.
 * @return : 0 or the first failing op's code */
int lmk_backward_from(lmk_ctx *c, lmk_tensor *t, const float *dout);

/* Trainable (or frozen) parameters, all in one float32 allocation so that
 * gradients and optimizer states share its layout and a checkpoint is one
 * write. Tensors are registered first, then lmk_params_alloc lays them out
 * in the order of registration, each starting at a multiple of 16 floats
 * (64 bytes) with zeroed padding between them; n counts the padding, so an
 * optimizer may run over all n elements. Pointers to p->t[i] are stable only
 * after lmk_params_alloc (lmk_params_add may move the array). */
typedef struct lmk_params {
	float *data, *grad;  /* grad is NULL for frozen sets */
	size_t n;            /* total float32 elements */
	lmk_tensor *t;       /* one descriptor per tensor, pointing into data */
	size_t *offset;      /* element offset of each tensor */
	int nt, cap;
	int trainable;
} lmk_params;

void lmk_params_init(lmk_params *p, int trainable);
/* Registers a tensor; name is copied. Duplicate names and adding after
 * lmk_params_alloc fail with LMK_EINVAL. @return : its index, or < 0 */
int lmk_params_add(lmk_params *p, const char *name, int ndim, const int64_t *shape);
/* Allocates data (and grad when trainable), zeroed, 64-byte aligned, and
 * points every tensor into them. @return : 0 or LMK_ENOMEM */
int lmk_params_alloc(lmk_params *p);
void lmk_params_zero_grad(lmk_params *p);
/* @return : the tensor called name, or NULL */
lmk_tensor *lmk_params_find(lmk_params *p, const char *name);
void lmk_params_free(lmk_params *p);

#endif
