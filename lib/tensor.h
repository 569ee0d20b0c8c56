/* tensor.h: tensors, the activation arena, the execution context and the tape.
 * Models are written as forward code over lmk_tensor values. In a context with
 * grad enabled every op appends a node to the tape; lmk_backward replays the
 * nodes in reverse. Activations and their gradients come from an arena that
 * lmk_ctx_reset empties, so after the first step a training step mallocs
 * nothing. Shapes are row-major, last dimension fastest.
 * On CUDA (docs/cuda.md) the arena is device memory, everything runs on the
 * context's one stream, and a context computes in a dtype: F32, or BF16 with
 * activations and their gradients in bf16 while parameters keep float32
 * master weights and gradients plus a bf16 copy that ops read.
 * Owns: tensors of a step, the arena, the tape. Needs: dtype, err, and in a
 * CUDA build cuda/cuda.h.
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
	lmk_dtype gdtype;    /* of grad: F32, except on CUDA, where an
			      * activation's gradient has the activation's dtype */
	void *lp;            /* a parameter in a BF16 CUDA context: its bf16 copy
			      * (what ops read; the optimizer refreshes it); else NULL */
	int gunwritten;      /* an op's output (lmk_tensor_new_out) whose gradient
			      * no backward has written yet: logically zero, its
			      * memory undefined. Always 0 on a view (see base) */
	struct lmk_tensor *base; /* a view (lmk_reshape): the tensor whose data,
			      * gradient and gunwritten it shares; else NULL */
	int viewed;          /* views of it exist (they hold copies of its grad
			      * pointer), so its gradient memory stays put */
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
	void *backend;       /* CUDA: the context's backend, whose stream the
			      * fills are ordered on */
	int poison;          /* tests: fill every allocation with 0xFF bytes (NaN
			      * in every float dtype) so unwritten memory shows */
} lmk_arena;

struct lmk_ctx;
typedef struct lmk_node {
	/* Adds this op's input gradients given out->grad (or assigns those
	 * that assign names). @return : 0 or < 0 */
	int (*backward)(struct lmk_ctx *c, struct lmk_node *n);
	const char *op;
	lmk_tensor *out;
	lmk_tensor *in[LMK_NODE_MAXIN];
	void *saved;         /* arena memory kept by the forward for the backward */
	int64_t i[6];
	float f[4];
	int writes;          /* set by the op: bit j when its backward can assign
			      * (=) in[j]'s gradient instead of adding into it */
	int assign;          /* set by lmk_node_backward before the backward: bit j
			      * (of writes) when in[j]'s gradient was unwritten, so
			      * that the backward must assign every element of it */
	int passes;          /* set by the op: bit j when in[j]'s gradient is out's
			      * gradient itself (a residual add), so that an
			      * unwritten one may take over out's memory */
	int passed;          /* set by lmk_node_backward: bit j when in[j]'s
			      * gradient took over out's memory and already holds
			      * its value: the backward leaves in[j] alone */
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
	lmk_dtype dtype;     /* compute dtype: what ops make activations in
			      * (F32; or BF16 on CUDA) */
	float *rope_host;    /* CUDA: the rope table last uploaded in this step
			      * (lmk_rope_apply; a copy in meta) and the arena
			      * memory holding it, so that one upload serves
			      * every layer; reset forgets them */
	float *rope_dev;
	int64_t rope_n;
	struct lmk_ctx_const *consts; /* CUDA: device copies of host tables
			      * (lmk_tensor_upload_const), kept until
			      * lmk_ctx_free */
	int nconsts;
} lmk_ctx;

/* Grad starts enabled; seed and counter start at 0; F32, and on CUDA
 * device 0. @return : 0, or LMK_EUNSUP when dev is CUDA in a CPU-only
 * build, or LMK_EDEVICE when there is no device */
int lmk_ctx_init(lmk_ctx *c, lmk_device dev);
/* The same on CUDA device `index` (ignored on the CPU), computing in dtype:
 * LMK_F32 anywhere, LMK_BF16 on CUDA only.
 * @return : 0, LMK_EINVAL (index, dtype), LMK_EUNSUP or LMK_EDEVICE */
int lmk_ctx_init_ex(lmk_ctx *c, lmk_device dev, int index, lmk_dtype dtype);
/* Waits until the context's queued work is done and reports what the
 * device found on the way (embedding ids or cross-entropy targets out of
 * range, which ops on CUDA cannot check without waiting). Nothing on the
 * CPU. @return : 0, LMK_EINVAL or LMK_EDEVICE */
int lmk_ctx_sync(lmk_ctx *c);
void lmk_ctx_free(lmk_ctx *c);
/* on != 0 lets this context's kernels trade run-to-run reproducibility for
 * speed: on CUDA, attention's BF16 backward then sums dq with float atomics
 * (the low bits of its gradients vary between identical runs). 0, the
 * default, keeps every result the same bits on every run. Nothing changes
 * on the CPU, which is deterministic either way. */
void lmk_ctx_set_nondeterministic(lmk_ctx *c, int on);
/* Forgets the tape and every tensor made since the last reset. */
void lmk_ctx_reset(lmk_ctx *c);

/* Arena memory, 64-byte aligned. @return : NULL with LMK_ENOMEM recorded */
void *lmk_arena_alloc(lmk_arena *a, size_t bytes);
void lmk_arena_reset(lmk_arena *a);
void lmk_arena_free(lmk_arena *a);
/* @return : the number of chunks held (1 in the steady state) */
int lmk_arena_nchunks(const lmk_arena *a);
/* @return : the memory of the first chunk (the only one in the steady
 * state), or NULL: with reserved, what a recorded step's addresses hold */
const void *lmk_arena_base(const lmk_arena *a);

/* A new activation from the arena, contents undefined. When grad is
 * enabled and requires_grad is set, a zeroed gradient is allocated with it
 * (an input the caller may fill, and that backwards add into).
 * @return : NULL on failure (message recorded) */
lmk_tensor *lmk_tensor_new(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			   int requires_grad);
/* The same for an op's output: its gradient is allocated but not zeroed. It
 * starts unwritten (gunwritten), which means zero: the first backward that
 * reaches it writes every element (lmk_node_backward), and no memset is
 * paid for a gradient that is assigned anyway. For ops (op.h).
 * @return : NULL on failure (message recorded) */
lmk_tensor *lmk_tensor_new_out(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			       int requires_grad);
/* A tensor wrapping memory the caller owns (token ids, a batch), on the
 * context's device (device memory on CUDA: see lmk_tensor_upload). No grad. */
lmk_tensor *lmk_tensor_wrap(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			    void *data);
/* A view of x with another shape of the same size, sharing data and grad.
 * One dimension may be -1: it is inferred from the others.
 * @return : NULL if x is NULL or the sizes differ */
lmk_tensor *lmk_reshape(lmk_ctx *c, lmk_tensor *x, int ndim, const int64_t *shape);
/* A new tensor of the arena holding a copy of the shape's elements of type
 * dt at host (token ids, positions, a batch): on CUDA the copy is queued on
 * the stream and host may be reused on return. No grad.
 * @return : NULL on failure (message recorded) */
lmk_tensor *lmk_tensor_upload(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
			      const void *host);
/* The same for a table that stays the same from step to step (rope's
 * frequencies): the context keeps a device copy of each such table, made
 * at its first use, and the new tensor is filled from it on the stream
 * (device to device), so that a step uploads nothing it uploaded before,
 * which a step replayed as a CUDA graph could not do. On the CPU the same
 * as lmk_tensor_upload. @return : NULL on failure (message recorded) */
lmk_tensor *lmk_tensor_upload_const(lmk_ctx *c, lmk_dtype dt, int ndim, const int64_t *shape,
				    const void *host);
/* Raw copies of t's data (t->n elements of t->dtype) to and from host
 * memory; to_host waits for the stream. @return : 0 or < 0 */
int lmk_tensor_copy_to_host(lmk_ctx *c, const lmk_tensor *t, void *host);
int lmk_tensor_copy_from_host(lmk_ctx *c, lmk_tensor *t, const void *host);
/* t's data (grad 0) or gradient (grad 1) as t->n float32 values, converted
 * from its dtype (integers by value), on either device; read waits for the
 * stream (an unwritten gradient reads as zeros; writing one writes it).
 * write takes float dtypes only.
 * @return : 0, LMK_EINVAL (no gradient; write: an integer dtype) or < 0 */
int lmk_tensor_read_f32(lmk_ctx *c, const lmk_tensor *t, int grad, float *host);
int lmk_tensor_write_f32(lmk_ctx *c, lmk_tensor *t, int grad, const float *host);
/* Fills *shape-less* descriptors: sets n from ndim/shape. */
void lmk_tensor_setshape(lmk_tensor *t, int ndim, const int64_t *shape);

/* Appends a node; the op fills it. @return : NULL on failure */
lmk_node *lmk_tape_push(lmk_ctx *c, const char *op, lmk_tensor *out);

/* Zeroes t's gradient if it is unwritten (then it is written): for code
 * that adds into a gradient outside a node's own inputs.
 * @return : 0 or < 0 (nothing to do for NULL, or a tensor without one) */
int lmk_grad_zero(lmk_ctx *c, lmk_tensor *t);
/* Runs n's backward as the replay does. A node whose output's gradient was
 * never written is skipped: a backward is linear in that gradient, so it
 * would add zeros. Otherwise every unwritten gradient of its inputs is
 * zeroed first, except those the backward can assign (n->writes; not when
 * two inputs share a gradient), which it is told to assign (n->assign);
 * all of them are written afterwards. One input whose gradient is out's
 * (n->passes), unwritten, an activation neither a view nor viewed, of out's
 * size and dtype, takes over out's gradient memory instead (n->passed; no copy): the
 * residual stream's gradient is then one buffer, as in llm.c. From then on
 * out's gradient memory is that input's, so after the step it reads as the
 * input's gradient (a tape's op outputs are intermediate values).
 * @return : 0 or the backward's code */
int lmk_node_backward(lmk_ctx *c, lmk_node *n);

/* Sets loss->grad to scale (loss must be a 0-d or 1-element tensor) and
 * replays the tape in reverse (lmk_node_backward), adding into the
 * gradients of parameters and inputs (lmk_tensor_new) and writing those of
 * the ops' outputs. Afterwards every gradient of the tape holds its value
 * (the ones no backward reached are zeroed), except an output whose memory
 * an input took over (lmk_node_backward). Call it once per step (between
 * resets): gradients are not re-zeroed.
 * @return : 0 or the first failing op's code */
int lmk_backward(lmk_ctx *c, lmk_tensor *loss, float scale);
/* The same with the scale read from memory of the context's device (one
 * float32, copied on the stream), so that queueing the backward involves no
 * host value: a step recorded as a CUDA graph replays it. The bits of
 * lmk_backward with that scale. */
int lmk_backward_dev(lmk_ctx *c, lmk_tensor *loss, const float *scale);
/* The same from any tensor t of the tape: adds dout (t->n float32, on t's
 * device) into t->grad (whatever its dtype), then replays. For a gradient
 * computed elsewhere (another program, a loss outside the tape) and for
 * gradient checks.
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
	lmk_device dev;      /* where data, grad and lp live */
	void *lp;            /* CUDA in a BF16 context: bf16 copy of data (n) */
	void *backend;       /* CUDA: the backend whose stream orders the
			      * parameters' fills and the optimizer */
} lmk_params;

void lmk_params_init(lmk_params *p, int trainable);
/* Registers a tensor; name is copied. Duplicate names and adding after
 * lmk_params_alloc fail with LMK_EINVAL. @return : its index, or < 0 */
int lmk_params_add(lmk_params *p, const char *name, int ndim, const int64_t *shape);
/* Allocates data (and grad when trainable), zeroed, 64-byte aligned, and
 * points every tensor into them. @return : 0 or LMK_ENOMEM */
int lmk_params_alloc(lmk_params *p);
/* On CUDA, queued on the stream of the context given to _to_device. */
void lmk_params_zero_grad(lmk_params *p);
/* Instead of zeroing: marks every gradient unwritten (gunwritten), so that
 * the first backward reaching it assigns it (a product's dw with beta 0)
 * and no pass over the whole buffer is paid; the padding between tensors,
 * which nothing writes, stays zero. After the backwards, _settle zeroes
 * those still unwritten (parameters no node read), so that the whole
 * buffer holds the gradient again. @return (settle) : 0 or < 0 */
void lmk_params_grad_unwritten(lmk_params *p);
int lmk_params_grad_settle(lmk_params *p);
/* Moves the parameters to c's device (no-op on a CPU context): data and
 * grad become device buffers (the host ones are freed) and, when c
 * computes in BF16, a bf16 copy lp is made that ops read. Initialise or
 * load the weights before, or afterwards through lmk_params_copy_from_host.
 * The parameters then use c's stream: free them before c.
 * @return : 0, LMK_EINVAL (not allocated, already moved) or < 0 */
int lmk_params_to_device(lmk_params *p, lmk_ctx *c);
/* All n float32 of data (grad 0) or grad (grad 1) to host; waits. */
int lmk_params_copy_to_host(const lmk_params *p, int grad, float *host);
/* All n float32 of data from host (refreshing the bf16 copy). */
int lmk_params_copy_from_host(lmk_params *p, const float *host);
/* @return : the tensor called name, or NULL */
lmk_tensor *lmk_params_find(lmk_params *p, const char *name);
void lmk_params_free(lmk_params *p);

#endif
