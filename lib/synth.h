/* synth.h: the synthetic tasks of the token-mixer experiments as batches of
 * token ids: multi-query associative recall (MQAR), flip-flop language
 * modelling, and word problems over the symmetric group S5 (or A5); and the
 * accuracy of predictions on them.
 * Owns: nothing beyond the caller's buffers. Needs: rng, err.
 * Never: prints, exits, or reads files.
 *
 * Every batch is a pair x, y of (B,T) int32: x the input tokens, y the
 * target at each position (the next token a model should emit there), -1
 * where no loss or accuracy is taken. Example i of a task is a pure
 * function of (seed, i): it draws from the Philox stream `seed` starting
 * at word i * 2^32, so any batch can be made again, on any thread, in any
 * order. Use another seed for held-out examples. */
#ifndef LMK_SYNTH_H
#define LMK_SYNTH_H

#include <stdint.h>

enum { LMK_SYNTH_MQAR, LMK_SYNTH_FLIPFLOP, LMK_SYNTH_WORD };
enum { LMK_SYNTH_S5, LMK_SYNTH_A5 };

/* Flip-flop tokens (vocabulary 5). */
enum { LMK_FF_0 = 0, LMK_FF_1 = 1, LMK_FF_W = 2, LMK_FF_R = 3, LMK_FF_I = 4 };

typedef struct lmk_synth {
	int task;              /* LMK_SYNTH_* */
	int64_t T;             /* sequence length */
	int64_t vocab;         /* MQAR: chosen (keys [1,V/2), values [V/2,V));
				* set by defaults: flip-flop 5, word problems 120 */
	uint64_t seed;

	/* MQAR, as Zoology's multiquery_ar (HazyResearch/zoology,
	 * zoology/data/multiquery_ar.py, one pass): num_kv distinct keys
	 * from [1, V/2) and values from [V/2, V) as key, value pairs at
	 * positions 0..2K-1; then the query region, where key k is repeated
	 * at position 2K + 2*g_k, its target there its value, with the gaps
	 * g_k distinct in [0, (T-2K)/2) drawn without replacement with
	 * probability proportional to (g+1)^(power_a - 1) (power_a 0.01: a
	 * power law favouring short gaps; 1: uniform). Every other
	 * position of the query region holds a token uniform in [0, V)
	 * (random_non_queries, Zoology's default) or 0. T even, 4K <= T. */
	int64_t num_kv;
	double power_a;
	int random_non_queries;

	/* Flip-flop language (Liu et al. 2023, "Exposing attention glitches
	 * with flip-flop language modeling"): T/2 instructions, each an
	 * instruction token then a bit: write w b, read r b (b the bit of
	 * the latest write), ignore i b (b random). The first is a write and
	 * the last a read; the others are w, r, i with probabilities
	 * p_write, p_read and 1 - p_write - p_read (FFL(0.8): 0.1, 0.1).
	 * The targets are the bits after each r (y at the r's position); T
	 * even, T >= 4. */
	double p_write, p_read;

	/* Word problems (Merrill et al. 2024, "The illusion of state in
	 * state-space models"): x[t] a group element uniform over the group
	 * (S5, or A5: the even permutations), y[t] the product of x[0..t]
	 * (every position has a target). Element ids are the ranks of the
	 * permutations p = (p(0),..,p(4)) of {0..4} in lexicographic order,
	 * 0 the identity, so the vocabulary is 120 for both groups; the
	 * product applies the earlier element first: (a·b)(i) = b(a(i)). */
	int group;             /* LMK_SYNTH_S5 or LMK_SYNTH_A5 */
	/* S5 only: x[t] a transposition (i j), uniform over the 10 of them,
	 * instead of any element: the word problem over S5's generators, as
	 * hard in theory (NC1-complete), and each step a single reflection,
	 * which one Householder-like transform per token (PaTH, DeltaNet
	 * with negative eigenvalues) can apply exactly. */
	int swaps;
} lmk_synth;

/* The papers' settings for task: MQAR vocab 8192, T 256, 16 pairs, power_a
 * 0.01, random non-queries; flip-flop T 512, p_write = p_read = 0.1; word
 * problems over S5, T 128. seed 0. */
void lmk_synth_defaults(lmk_synth *s, int task);

/* By name, for command lines: "mqar", "flipflop", "s5" or "a5" (word
 * problems over that group), with the defaults above.
 * @return : 0, or LMK_EINVAL naming the choices */
int lmk_synth_parse(lmk_synth *s, const char *name);
/* The name lmk_synth_parse takes for s's task (and group). */
const char *lmk_synth_name(const lmk_synth *s);

/* @return : 0, or LMK_EINVAL with a message naming the bad field */
int lmk_synth_check(const lmk_synth *s);

/* Examples first .. first+B-1 into x and y, each (B,T) int32.
 * @return : 0, LMK_EINVAL (lmk_synth_check) or LMK_ENOMEM */
int lmk_synth_batch(const lmk_synth *s, uint64_t first, int64_t B, int32_t *x /*(B,T)*/,
		    int32_t *y /*(B,T)*/);

/* Counts added up over calls. */
typedef struct lmk_synth_acc {
	int64_t correct, count;     /* positions with a target, and right */
	int64_t seq_correct, seqs;  /* sequences with a target, and all right */
	int64_t prefix;             /* targets right before a sequence's first
				     * error, summed over sequences: how far
				     * a state is tracked */
} lmk_synth_acc;

/* Adds the positions of (B,T) where y >= 0 to a. */
void lmk_synth_score(lmk_synth_acc *a, const int32_t *pred /*(B,T)*/, const int32_t *y /*(B,T)*/,
		     int64_t B, int64_t T);
/* pred[n] = the first index of the largest of logits[n,:] (NaN never wins). */
void lmk_synth_argmax(int32_t *pred /*(N)*/, const float *logits /*(N,V)*/, int64_t N, int64_t V);

/* The word problems' group: permutation p (5) of element id, and back. */
void lmk_synth_perm(int id, int p[5]);
int lmk_synth_perm_id(const int p[5]);

#endif
