/* arctrain.h: training a Llama-family model on ARC's masked examples
 * (lib/arc.h: token ids and a loss mask) and predicting with it greedily,
 * for ttt-arc's pretraining and test-time training ("The Surprising
 * Effectiveness of Test-Time Training for Few-Shot Learning", Akyürek et
 * al. 2024). Batches of examples of different lengths are padded to the
 * longest: a padded or unmasked position gets the target -1, which the
 * cross-entropy ignores, and since attention is causal the padding at the
 * end of a row changes nothing before it (packing would save the padding's
 * compute, but batches of 2 examples of one task, the paper's, waste
 * little). One step: AdamW at the schedule's rate after clipping.
 * Shape letters: B examples in a batch, T their longest length minus one.
 * Owns: the optimizer, the batch buffers, the tokenizer's scratch.
 * Needs: arc, llama, lora, optim, ops, tensor, frame, bytetok, bpe.
 * Never: prints or exits. */
#ifndef LMK_ARCTRAIN_H
#define LMK_ARCTRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "arc.h"
#include "bpe.h"
#include "frame.h"
#include "llama.h"
#include "lora.h"
#include "optim.h"
#include "tensor.h"

/* ---- tokenizers ---- */

/* Bytes (bpe NULL: lib/bytetok.h) or a BPE tokenizer (not owned). */
typedef struct lmk_arctok {
	lmk_bpe *bpe;
	int32_t bos, eos;    /* prepended and stopping ids, -1 for none */
	int32_t *scratch;    /* BPE's output buffer */
	size_t scap;
} lmk_arctok;

/* The byte tokenizer with <|bos|> and <|eos|>, or bpe with its own bos
 * (only when the file asks encoders to add it) and eos. */
void lmk_arctok_init(lmk_arctok *t, lmk_bpe *bpe);
void lmk_arctok_free(lmk_arctok *t);
/* An lmk_arc_encode_fn (arg is the lmk_arctok). */
int lmk_arctok_encode(void *arg, const char *text, size_t len, int32_t *out, int cap);
/* The bytes of token id, at most cap - 1 of them, NUL-terminated; special
 * tokens and ids outside the vocabulary give nothing.
 * @return : the number of bytes written */
size_t lmk_arctok_piece(const lmk_arctok *t, int32_t id, char *buf, size_t cap);

/* ---- batches and the loss ---- */

/* Fills ids and tgt (B, T) from the n examples ex[0..n-1], T the longest
 * example's length minus 1: ids[b][i] is token i of example b (0 past its
 * end), tgt[b][i] token i + 1 when that token has a loss (mask), else -1.
 * *ids and *tgt are grown as needed (*cap elements each; NULL and 0 at
 * first). @return : T (>= 1), LMK_EINVAL (an example shorter than 2),
 * LMK_ENOMEM */
int lmk_arctrain_batch(const lmk_arc_example *const *ex, int n, int32_t **ids, int32_t **tgt,
		       size_t *cap);
/* The mean cross-entropy of tgt (B,T) given ids (B,T) (host memory) over
 * the targets that are not -1, on c's device; *logits (may be NULL) gets
 * the logits (B,T,V), *count (may be NULL; on CUDA it waits) the number of
 * targets counted. @return : the 0-d loss, or NULL (message recorded) */
lmk_tensor *lmk_arctrain_loss(lmk_ctx *c, lmk_llama *m, const int32_t *ids, const int32_t *tgt,
			      int B, int T, lmk_tensor **logits, int64_t *count);

/* ---- training ---- */

typedef struct lmk_arctrain_config {
	int batch;           /* examples per step */
	float lr, min_lr;    /* peak and final learning rate */
	int64_t warmup;      /* steps of linear warm-up */
	int64_t total;       /* steps the schedule runs over */
	lmk_sched_kind schedule;
	float weight_decay, beta1, beta2, eps;
	float grad_clip;     /* max global norm; 0: no clipping */
} lmk_arctrain_config;

/* The paper's test-time training: batch 2, lr 5e-5 to 0 (cosine), no
 * warm-up, total 0 (set it), weight decay 0, betas (0.9, 0.999), eps 1e-8,
 * clipping at 1. */
void lmk_arctrain_config_default(lmk_arctrain_config *cfg);

typedef struct lmk_arctrain {
	lmk_arctrain_config cfg;
	lmk_ctx *c;          /* not owned; p is on its device */
	lmk_llama *m;        /* its m->lora applies, if any */
	lmk_params *p;       /* what is trained: m's parameters or an adapter's */
	lmk_adamw opt;
	lmk_schedule sched;
	int64_t step;        /* optimizer steps done */
	int32_t *ids, *tgt;
	size_t cap;
} lmk_arctrain;

typedef struct lmk_arctrain_stats {
	double loss;         /* mean over the step's counted targets */
	double grad_norm;    /* before clipping */
	float lr;
	int64_t targets;     /* targets counted */
	int64_t tokens;      /* B * T, the padding included */
	int64_t real;        /* the examples' own tokens (no padding) */
} lmk_arctrain_stats;

/* A run at step 0 training p (trainable, already on c's device: moved by
 * lmk_params_to_device) of model m. @return : 0 or a negative code */
int lmk_arctrain_init(lmk_arctrain *tr, const lmk_arctrain_config *cfg, lmk_ctx *c,
		      lmk_llama *m, lmk_params *p);
void lmk_arctrain_free(lmk_arctrain *tr);
/* One step on the n examples ex[0..n-1] (n <= cfg.batch is not required):
 * zero the gradients, forward, backward, clip, AdamW.
 * @return : 0, LMK_ENUM (a loss that is not finite: nothing updated), or
 * another negative code */
int lmk_arctrain_step(lmk_arctrain *tr, const lmk_arc_example *const *ex, int n,
		      lmk_arctrain_stats *st);

/* The state file (one frame, kind "lmk-arctrain-state", schema 1): the
 * trained parameters and the AdamW moments as flat F32 tensors "params",
 * "adamw.m", "adamw.v" (p->n each), metadata "step" and "adamw_t" and the
 * caller's pairs extra (key, value, ..., NULL). Written atomically. */
int lmk_arctrain_save(const lmk_arctrain *tr, const char *path, const char *const *extra);
/* Reads path into *st (the caller frees it, and reads its metadata) and
 * continues tr (just initialised over parameters of the same layout) from
 * it. @return : 0 or a negative code naming path */
int lmk_arctrain_restore(lmk_arctrain *tr, const char *path, lmk_frame *st);

/* ---- data ---- */

/* What one epoch of a task set trains on. */
typedef struct lmk_arctrain_data {
	int loo;             /* leave-one-out tasks per task (lmk_arc_ttt_tasks'
			      * cap; the paper's test-time training: 250);
			      * 0: none */
	int aug;             /* the task itself with its test outputs, and aug
			      * transformed copies of it; -1: not the task */
	unsigned flags;      /* LMK_ARC_AUG_* of the transformations */
	uint64_t seed;
} lmk_arctrain_data;

/* Appends to *e the examples of epoch `epoch` of the n tasks: for each,
 * its leave-one-out tasks, then the task and its copies (test pairs
 * without outputs give none), each drawn from a generator of (seed, epoch,
 * task), so that an epoch is the same whenever it is made.
 * @return : the number appended, or a negative code */
int lmk_arctrain_epoch(lmk_arc_examples *e, const lmk_arc_task *t, int n,
		       const lmk_arctrain_data *d, int64_t epoch, const lmk_arc_example_opts *o);
/* perm (n) = a permutation of 0..n-1 drawn from (seed, epoch). */
void lmk_arctrain_order(int *perm, int n, uint64_t seed, int64_t epoch);
/* The same permutation with batches of similar lengths (less padding:
 * a batch is as long as its longest example): the random order is cut
 * into windows of group * batch examples, each window sorted by length and
 * cut into batches, whole batches shuffled within it (from seed and
 * epoch). group 0 (or batch 1) leaves the random order.
 * @return : 0 or LMK_ENOMEM */
int lmk_arctrain_order_grouped(int *perm, const lmk_arc_examples *ex, int batch, int group,
			       uint64_t seed, int64_t epoch);

/* ---- adapters on either device ---- */

/* A LoRA adapter afresh, as PEFT initialises one (B zero, A uniform in
 * +-1/sqrt(I)) from seed, wherever its parameters are: lmk_lora_init
 * needs the base on the host, so that a program keeping its base on a
 * device makes one adapter and resets it for each task. Two-sided only.
 * @return : 0 or a negative code */
int lmk_arctrain_lora_reset(lmk_lora *a, uint64_t seed);
/* Reads dir/adapter_model.safetensors (PEFT) into a, wherever a's
 * parameters are: the file must have exactly a's tensors with their shapes
 * (F32, BF16 or F16), and dir/adapter_config.json a's rank and alpha.
 * @return : 0 or a negative code naming the file and the tensor */
int lmk_arctrain_lora_read(lmk_lora *a, const char *dir);

/* ---- prediction ---- */

/* Greedy prediction with m (its m->lora applies) for lmk_arc_predict_batch:
 * each prompt is encoded (bos first) and continued greedily until eos, a
 * byte that cannot belong to a grid row (the end marker), the largest
 * grid's length, or max_len tokens in all. */
typedef struct lmk_arctrain_predictor {
	lmk_ctx *c;          /* reset by each call: it holds nothing else */
	lmk_llama *m;
	lmk_arctok *tok;
	int max_len;         /* prompt and answer, in tokens */
	int64_t tokens;      /* generated so far */
	int nlong;           /* prompts left unanswered: max_len too short */
} lmk_arctrain_predictor;
/* An lmk_arc_predict_batch_fn (arg is the lmk_arctrain_predictor). */
int lmk_arctrain_predict(void *arg, int n, const char *const *prompts, char *const *outs,
			 size_t cap);

#endif
