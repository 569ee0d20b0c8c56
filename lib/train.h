/* train.h: the parts of a language-model training loop that training programs
 * share: hyperparameters, one optimizer step (gradient accumulation over
 * micro-batches, clipping by global norm, the learning-rate schedule, AdamW),
 * evaluation on the validation windows, the training state file that makes a
 * resumed run continue bit for bit, and the stop flag of SIGINT/SIGTERM.
 * The model enters only through a loss callback over a parameter buffer, so
 * other token mixers, adapters (a smaller trainable lmk_params) and devices
 * (the context's) reuse the same loop.
 * On CUDA (cfg.device) the trainer's context is a device context: the
 * parameters move to the device at lmk_trainer_init (fp32 master weights,
 * and a bf16 copy in BF16), the optimizer's moments live there, batches are
 * uploaded, and the state file goes through host copies, so that it holds
 * the same tensors whichever device wrote it and either device resumes it.
 * The state file is one frame (kind lmk-training-state, schema 1): tensors
 * "param/NAME", "adamw.m/NAME", "adamw.v/NAME" (F32, each parameter's shape),
 * (with GaLore, instead of adamw.m and adamw.v, the tensors of
 * lmk_galore_to_frame), "step", "adamw.t", "tokens" (I64, 0-d), "elapsed"
 * (F64, 0-d), "rng.data"
 * (I64 (3): seed, words drawn, windows drawn), "rng.ctx" (I64 (2): the
 * context's seed and counter), "rng.sample" (I64 (2): seed, words drawn);
 * metadata: every field of lmk_train_config under its name (device as
 * "cpu" or "cuda", dtype as "f32" or "bf16"; device_index is not saved),
 * the data's "data_tokens", "data_train_tokens", "data_vocab" and
 * "data_hash" (16 hex digits), "world_size" (the ranks that trained it),
 * and any entries the program adds.
 * Data parallel (lmk_trainer_init_dist, one process per GPU, NCCL):
 * every rank holds the same weights and optimizer (same seed, same
 * updates); in each micro-batch the ranks draw together the world * B
 * windows that one process with batch world * B would draw, in the same
 * order, and rank r trains on rows r*B .. r*B+B-1 of them, so that N ranks
 * of batch B follow one process of batch N*B (to the rounding of sums in
 * another order; bit for bit with one rank). The last micro-batch of a step
 * all-reduces (averages) the gradients in buckets while its backward runs;
 * clipping and AdamW see the mean. The reported loss is the mean over the
 * ranks, an evaluation shares its windows among them, and only rank 0
 * writes the state file.
 * Owns: the optimizer, the batch buffers, the execution context, and in data
 * parallel the communicator.
 * Needs: tensor, ops, optim, tokdata, frame, rng, dist, err, OpenMP, OpenBLAS,
 * and in a CUDA build cuda/cuda.h (to count devices) and cuda/nccl_dp.h.
 * Never: prints or exits. */
#ifndef LMK_TRAIN_H
#define LMK_TRAIN_H

#include <stdint.h>

#include "dist.h"
#include "frame.h"
#include "optim.h"
#include "rng.h"
#include "tensor.h"
#include "tokdata.h"

#define LMK_TRAIN_STATE_KIND "lmk-training-state"
#define LMK_TRAIN_STATE_SCHEMA "1"
#define LMK_TRAIN_STATE_FILE "training_state.safetensors"

typedef struct lmk_train_config {
	int batch;           /* B: windows per micro-batch */
	int seq;             /* T: tokens a window predicts */
	int accum;           /* micro-batches per optimizer step */
	int64_t steps;       /* optimizer steps to reach */
	int64_t decay_steps; /* the schedule's total (0: steps) */
	float lr, min_lr;    /* peak and final learning rate */
	int64_t warmup;      /* steps of linear warm-up */
	lmk_sched_kind schedule;
	float weight_decay, beta1, beta2, eps;
	float grad_clip;     /* max global norm; 0: no clipping */
	int64_t eval_every;  /* steps between evaluations (0: only the last) */
	int eval_batches;    /* batches of B validation windows per evaluation */
	int64_t save_every;  /* steps between saves (0: only the last) */
	uint64_t seed;
	double val_frac;
	int threads;         /* OpenMP and OpenBLAS threads */
	lmk_device device;   /* where the model trains */
	int device_index;    /* which CUDA device (0: the first) */
	lmk_dtype dtype;     /* compute dtype: F32; or BF16 on CUDA */
	int nondeterministic; /* lmk_ctx_set_nondeterministic: faster, not
			       * reproducible bit for bit (default 0) */
	char optim[256];     /* "adamw", or GaLore's settings
			      * ("galore:r=128,...", lib/galore.h) */
	int cuda_graph;      /* on one GPU with AdamW: replay the step as a
			      * CUDA graph from the second step on (default 1;
			      * the same bits as without) */
} lmk_train_config;

/* The defaults lla-train documents: batch 16, seq 128, accum 1, steps 1000,
 * lr 1e-3 and min_lr 1e-4 (lr/10, as nanoGPT), warmup 100, cosine,
 * weight_decay 0.1, betas (0.9, 0.95), eps 1e-8, grad_clip 1, eval_every
 * 100, eval_batches 20, save_every 500, seed 1337, val_frac 0.1, threads 0
 * (the number of processors), the CPU in F32, optim "adamw", cuda_graph 1. */
void lmk_train_config_default(lmk_train_config *cfg);
/* Checks ranges. @return : 0 or LMK_EINVAL naming the field */
int lmk_train_config_check(const lmk_train_config *cfg);

/* Parses "cpu", "cuda" or "cuda:N" (index N, else 0).
 * @return : 0 or LMK_EINVAL */
int lmk_train_parse_device(const char *s, lmk_device *dev, int *index);
/* Parses "f32" or "bf16". @return : 0 or LMK_EINVAL */
int lmk_train_parse_dtype(const char *s, lmk_dtype *dt);
/* The dtype a device trains in unless told: BF16 on CUDA, F32 on the CPU. */
lmk_dtype lmk_train_default_dtype(lmk_device dev);
/* The number of CUDA devices of this machine: 0 in a CPU-only build. */
int lmk_train_device_count(void);
/* Whether this build and this machine can train on dev, without starting
 * anything: a CPU-only build or a machine without the CUDA device index is
 * refused with a message that says which.
 * @return : 0, LMK_EUNSUP (a CPU-only build) or LMK_EDEVICE (no device) */
int lmk_train_device_check(lmk_device dev, int index);

/* The model as the loop sees it: the mean cross-entropy of predicting
 * targets (B,T) I32 from ids (B,T) I32, both on c's device, ignoring
 * targets equal to -1; *count receives the number of targets counted (as
 * lmk_cross_entropy). count is NULL in training steps (on CUDA a count
 * makes the step wait for the device) and given at evaluations. */
typedef lmk_tensor *(*lmk_train_loss_fn)(void *model, lmk_ctx *c, lmk_tensor *ids,
					 lmk_tensor *targets, int64_t *count);

typedef struct lmk_trainer {
	lmk_train_config cfg;
	lmk_params *params;  /* trainable, with gradients */
	void *model;
	lmk_train_loss_fn loss;
	lmk_tokdata *data;
	lmk_adamw opt;       /* AdamW, unless galore */
	struct lmk_galore *galore; /* cfg.optim is GaLore: it, and opt unused */
	lmk_schedule sched;
	lmk_ctx ctx;
	int32_t *x, *y;      /* (B,T) the current micro-batch (of this rank) */
	struct lmk_train_dp *dp; /* data parallel: ranks, communicator, buckets;
				  * NULL in a process on its own */
	lmk_rng sample_rng;  /* for programs that sample at evaluations */
	int64_t step;        /* optimizer steps done */
	int64_t tokens;      /* training tokens seen */
	double elapsed;      /* seconds spent in earlier runs (a resumed run) */
	lmk_params *attached[8]; /* lmk_trainer_attach */
	int nattached;
	struct lmk_train_dev *dev; /* one GPU with AdamW: the step that waits
				    * once (pinned batches, the step's numbers
				    * on the device, the graph); else NULL */
	char graph_note[256]; /* why the step could not be replayed as a CUDA
			       * graph (cfg.cuda_graph then 0), or "" */
} lmk_trainer;

typedef struct lmk_train_stats {
	double loss;         /* mean over the step's micro-batches */
	double grad_norm;    /* before clipping */
	float lr;
} lmk_train_stats;

/* Derived seeds, so that each random stream of a run (weights, data,
 * sampling) is independent yet fixed by the one --seed: words 0 and 1 of
 * Philox block 2^63 + stream of stream seed. Streams: 0 weights, 1 data,
 * 2 sampling, 3 the context (dropout), 4 the optimizer (GaLore's sketches). */
enum { LMK_TRAIN_SEED_WEIGHTS, LMK_TRAIN_SEED_DATA, LMK_TRAIN_SEED_SAMPLE, LMK_TRAIN_SEED_CTX,
       LMK_TRAIN_SEED_OPTIM };
uint64_t lmk_train_subseed(uint64_t seed, int stream);

/* Sets the threads of OpenMP and of OpenBLAS (n <= 0: the number of
 * processors). @return : the number set */
int lmk_train_set_threads(int n);

/* What the trainer holds, in bytes: weights (the trainable parameters and
 * those attached, float32, plus their bf16 copies), gradients, optimizer
 * state (moments, GaLore's projectors) and activations (the largest arena
 * a step has used so far: call it after a step). */
typedef struct lmk_train_memory {
	size_t weights, grads, optimizer, activations;
} lmk_train_memory;
void lmk_trainer_memory(const lmk_trainer *tr, lmk_train_memory *m);
/* Moves frozen parameters the model also reads (the base under an
 * adapter, an adapter's projectors) to the trainer's device, and counts
 * them in lmk_trainer_memory; at most 8. Free them before the trainer.
 * @return : 0 or a negative code */
int lmk_trainer_attach(lmk_trainer *tr, lmk_params *p);

/* Sets up a run at step 0: a context on cfg->device computing in
 * cfg->dtype, p moved there (lmk_params_to_device: give p on the host, its
 * weights initialised or loaded), the optimizer over p, the schedule, the
 * batch buffers, data's window generator and the sampling generator seeded
 * from cfg->seed. data must already be split. On a device p then uses the
 * trainer's context: free p (the model) before lmk_trainer_free.
 * @return : 0 or a negative code */
int lmk_trainer_init(lmk_trainer *tr, const lmk_train_config *cfg, lmk_params *p, void *model,
		     lmk_train_loss_fn loss, lmk_tokdata *data);
/* The same as rank dist->rank of a data-parallel group of dist->world
 * processes (dist NULL: on its own), each on its own GPU (cfg->device CUDA,
 * cfg->device_index its GPU). p's weights must be the same on every rank
 * (the same seed or checkpoint): before anything goes to the device the
 * ranks meet at dist's rendezvous, which fails unless every rank's
 * fingerprint (the options of lmk_train_config but the device index and the
 * threads, the data, the weights) is rank 0's; then rank 0's NCCL id makes
 * the communicator. The gradient buckets are dist->bucket_bytes.
 * @return : 0, LMK_EUNSUP (a CPU-only build), LMK_EINVAL (not on cuda),
 * or what the rendezvous or NCCL returned */
int lmk_trainer_init_dist(lmk_trainer *tr, const lmk_train_config *cfg, const lmk_dist *dist,
			  lmk_params *p, void *model, lmk_train_loss_fn loss, lmk_tokdata *data);
void lmk_trainer_free(lmk_trainer *tr);
/* This process's rank and the number of ranks (0 and 1 on its own). */
int lmk_trainer_rank(const lmk_trainer *tr);
int lmk_trainer_world(const lmk_trainer *tr);

/* One optimizer step: zero the gradients, accum micro-batches of forward
 * and backward (each loss scaled by 1/accum), clip, AdamW at the schedule's
 * learning rate for this step. After the first step it allocates nothing.
 * On a device it returns once the step is done there (so that timing it
 * measures the step). On one GPU with AdamW the step queues everything
 * (the micro-batches drawn first into pinned memory; the losses, the
 * gradient norm, the clipping factor and the update's scalars kept in
 * device memory) and waits once, at its end, for one small download of
 * the losses and the norm; from the second step on, with cfg.cuda_graph,
 * it is recorded once as a CUDA graph and replayed (recorded again when an
 * evaluation moved the arena or the scratch), the same bits as eagerly.
 * Elsewhere (the CPU, data parallel, GaLore) it waits once per micro-batch
 * for its loss and once for the gradient norm. In data parallel every rank must call it:
 * the gradients are averaged over the ranks before clipping, st->loss is
 * the mean over the ranks, and the ranks agree on the signal caught
 * (lmk_trainer_signal).
 * @return : 0, LMK_ENUM when the loss or the gradient norm is not finite
 * (the weights are then left untouched; on every rank alike), or another
 * negative code */
int lmk_trainer_step(lmk_trainer *tr, lmk_train_stats *st);

/* The mean loss over the evaluation set (eval_batches * batch windows, or
 * all validation windows if fewer), without gradients. In data parallel
 * (every rank calls it) the set is that of one process of batch world *
 * batch, its batches shared as the training windows are, and each rank
 * gets the mean over the whole set.
 * @return : 0, or LMK_EINVAL when there is no validation window */
int lmk_trainer_eval(lmk_trainer *tr, double *loss);

/* Writes the state file at path atomically. extra: NULL or pairs of
 * metadata key and value, ending with NULL. now_elapsed: seconds of this
 * run, added to tr->elapsed. On a device the weights and moments are
 * copied to host memory first (3 float32 per parameter, freed on return).
 * A data-parallel rank other than 0 writes nothing (every rank holds the
 * same state).
 * @return : 0 or a negative code naming path */
int lmk_trainer_save(const lmk_trainer *tr, const char *path, double now_elapsed,
		     const char *const *extra);

/* Reads a state file: checks its kind and schema.
 * @return : 0 or a negative code naming path */
int lmk_train_state_read(const char *path, lmk_frame *st);
/* The configuration saved in a state file (a state without "device" or
 * "dtype", from before they were saved, was made on the CPU in F32).
 * @return : 0 or LMK_EFORMAT */
int lmk_train_state_config(const lmk_frame *st, const char *path, lmk_train_config *cfg);
/* Continues tr (just initialised) from a state: weights, moments, step,
 * every generator, on tr's device whichever device saved it; in data
 * parallel each rank reads the same state. Refuses a state whose windows
 * per micro-batch (batch times its world_size, 1 if not saved), seq, accum,
 * seed or val_frac differ from tr's, whose data differ from tr->data, or
 * whose parameters differ in name or shape, each with a message saying
 * which: a run may continue on another number of ranks with the batch
 * that keeps the windows per micro-batch (the losses then differ in the
 * last bits).
 * @return : 0 or a negative code naming path */
int lmk_trainer_restore(lmk_trainer *tr, const lmk_frame *st, const char *path);

/* SIGINT and SIGTERM set a flag instead of ending the process; a second
 * one ends it as usual. @return : 0 or LMK_EIO */
int lmk_train_catch_signals(void);
/* @return : the number of the signal caught, or 0 */
int lmk_train_signal(void);
/* The signal tr should stop for: lmk_train_signal on its own; in data
 * parallel the largest caught by any rank before the last step's
 * all-reduce, the same on every rank, so that all of them stop after the
 * same step. */
int lmk_trainer_signal(const lmk_trainer *tr);

#endif
