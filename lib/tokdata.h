/* tokdata.h: a token data set for language-model training: all tokens of a
 * text file (bytes, through bytetok) or of token frames, held in memory as
 * int32, split into a training part (the first tokens) and a validation part
 * (the last val_frac of them). Training windows of T+1 tokens start at
 * positions drawn from the set's own lmk_rng, so a run is reproducible from
 * its seed and its position (seed, words drawn) can be saved and restored;
 * validation windows are a fixed, evenly spread set of consecutive windows,
 * the same at every evaluation.
 * Token frames: each frame holds a tensor "tokens" (I32, U16 or I64, any
 * shape, read flattened) and may say kind=tokens (another kind is refused)
 * and vocab_size=N in its metadata; the frames of a stream are concatenated.
 * Owns: the tokens and the window generator. Needs: bytetok, frame, rng, err.
 * Never: prints or exits. */
#ifndef LMK_TOKDATA_H
#define LMK_TOKDATA_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* The default share of the tokens kept for validation (nanoGPT's 90/10). */
#define LMK_TOKDATA_VAL_FRAC 0.1

typedef struct lmk_tokdata {
	char *name;          /* the path, for messages */
	int32_t *tok;        /* (n) */
	int64_t n;           /* tokens in all */
	int64_t ntrain;      /* [0, ntrain) trains, [ntrain, n) validates */
	int vocab;           /* every id is below it: 259 for text, else the
			      * frames' vocab_size, else the largest id + 1 */
	int text;            /* read as a text file */
	uint64_t hash;       /* FNV-1a of the tokens, to recognise the same data */
	lmk_rng rng;         /* draws training windows */
	int64_t windows;     /* training windows drawn so far */
	/* A generated set (lmk_tokdata_init_gen): examples of gen_T tokens
	 * made on demand, no tok. */
	int (*gen)(void *arg, int val, int64_t first, int B, int T, int32_t *x, int32_t *y);
	void *gen_arg;
	int gen_T;
} lmk_tokdata;

/* Where the training windows stand: enough to continue the same sequence. */
typedef struct lmk_tokdata_pos {
	uint64_t seed;       /* the generator's seed */
	uint64_t words;      /* lmk_rng_tell of the generator */
	int64_t windows;     /* windows drawn */
} lmk_tokdata_pos;

/* Reads path: token frames when the name ends in .safetensors, the file
 * starts with a frame header (8-byte length, then '{') or is gzip, else text
 * (one token per byte). All tokens train (val_frac 0) and the generator has
 * seed 0 until split and seed say otherwise.
 * @return : 0, LMK_EIO ("cannot open 'x': reason"), LMK_EFORMAT (a message
 * naming the file, the frame and what was wrong), LMK_ENOMEM */
int lmk_tokdata_load(lmk_tokdata *d, const char *path);
/* The same from len bytes of text in memory; name is used in messages. */
int lmk_tokdata_load_text(lmk_tokdata *d, const char *name, const void *text, size_t len);
void lmk_tokdata_free(lmk_tokdata *d);

/* A generated data set (the synthetic tasks of lib/synth.h): training
 * batch k (B examples, the next ones of an endless stream: training
 * example i is drawn once, as the i-th) and validation examples (a fixed
 * set of nval) come from gen(arg, val, first, B, T, x, y), which fills x
 * and y (B,T) with examples first..first+B-1 of its stream (val 0) or of
 * its validation set (val 1), y -1 where no loss is taken, and returns 0
 * or a negative code. Every example has T tokens: the trainer's sequence
 * length must be T. hash identifies the task's settings (in state files);
 * n and ntrain count tokens as if the sets were stored (training: 2^40
 * tokens). No split: the sets are separate already. @return : 0 or
 * LMK_ENOMEM */
int lmk_tokdata_init_gen(lmk_tokdata *d, const char *name,
			 int (*gen)(void *, int, int64_t, int, int, int32_t *, int32_t *),
			 void *arg, int T, int vocab, int64_t nval, uint64_t hash);

/* Keeps the last floor(n * val_frac) tokens for validation.
 * @return : 0, or LMK_EINVAL when val_frac is not in [0, 1) */
int lmk_tokdata_split(lmk_tokdata *d, double val_frac);
/* Restarts the training windows from the start of stream seed. */
void lmk_tokdata_seed(lmk_tokdata *d, uint64_t seed);
/* Checks there is room for windows of T+1 tokens in the training part and,
 * when need_val, in the validation part.
 * @return : 0, or LMK_EINVAL with a message naming the file and the counts */
int lmk_tokdata_check(const lmk_tokdata *d, int T, int need_val);

/* Draws B training windows of T+1 tokens, each starting uniformly in
 * [0, ntrain - T - 1]: x gets tokens 0..T-1 of each window, y tokens 1..T.
 * x and y are (B,T). @return : 0, or LMK_EINVAL if the part is too short */
int lmk_tokdata_train_batch(lmk_tokdata *d, int B, int T, int32_t *x, int32_t *y);

/* The number of validation windows: window w is the T+1 tokens starting at
 * ntrain + w*T (consecutive, sharing one token). */
int64_t lmk_tokdata_val_windows(const lmk_tokdata *d, int T);
/* An evaluation set of nsel windows (1 <= nsel <= val_windows) spread evenly
 * over the validation part: its window j is window j*W/nsel. Fills rows
 * 0..B-1 of x and y (B,T) with windows first..first+B-1 of that set; rows
 * past its end get token 0 in x and ignore in y.
 * @return : the number of rows filled from the set */
int lmk_tokdata_val_batch(const lmk_tokdata *d, int B, int T, int64_t nsel, int64_t first,
			  int32_t ignore, int32_t *x, int32_t *y);

/* Saving and restoring the training window position. */
void lmk_tokdata_tell(const lmk_tokdata *d, lmk_tokdata_pos *pos);
void lmk_tokdata_seek(lmk_tokdata *d, const lmk_tokdata_pos *pos);

#endif
