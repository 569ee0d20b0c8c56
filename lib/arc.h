/* arc.h: ARC tasks (the Abstraction and Reasoning Corpus, ARC-AGI-1 and -2)
 * for test-time training as in "The Surprising Effectiveness of Test-Time
 * Training for Few-Shot Learning" (Akyürek et al. 2024): loading and
 * validating tasks, their text form for a language model, invertible
 * augmentations, leave-one-out task sets, training examples (token ids and
 * a loss mask), prediction with hierarchical voting through a model
 * callback, Kaggle submissions and pass@2 scoring.
 * Owns: tasks, grids, submissions and the text form. Needs: err, rng,
 * jansson. Never: prints, exits, or knows what the model is (the tokenizer
 * and the model are callbacks).
 *
 * Places in messages count from 0: "train[2].output row 3". */
#ifndef LMK_ARC_H
#define LMK_ARC_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define LMK_ARC_MAXSIDE 30   /* rows and columns of a grid: 1..30 */
#define LMK_ARC_MAXPAIRS 64  /* train or test pairs of one task (ARC has <= 10) */
#define LMK_ARC_MAXID 128    /* bytes of a task id */
/* Largest JSON file read (Kaggle's combined files are tens of MB). */
#define LMK_ARC_MAXFILE ((size_t)256 << 20)

/* A grid of colours 0..9, row-major: cell (i, j) is c[i * w + j]. A grid
 * with h == 0 is "no grid" (an absent output, an unparsable prediction). */
typedef struct lmk_arc_grid {
	uint8_t h, w;
	uint8_t c[LMK_ARC_MAXSIDE * LMK_ARC_MAXSIDE];
} lmk_arc_grid;

typedef struct lmk_arc_pair {
	lmk_arc_grid in, out;    /* out.h == 0: output unknown (a test pair) */
} lmk_arc_pair;

/* ntrain >= 1 and ntest >= 1, except for tasks read from a solutions file
 * alone, which have ntrain == 0 and test pairs without inputs. */
typedef struct lmk_arc_task {
	char *id;
	int ntrain, ntest;
	lmk_arc_pair *train, *test;
} lmk_arc_task;

/* Tasks sorted by id, ids unique. */
typedef struct lmk_arc_set {
	int n;
	lmk_arc_task *t;
} lmk_arc_set;

/* ---- grids and tasks ---- */

/* @return : 1 if a and b are the same grid (both "no grid" counts), else 0 */
int lmk_arc_grid_eq(const lmk_arc_grid *a, const lmk_arc_grid *b);
/* Deep copy. @return : 0 or LMK_ENOMEM */
int lmk_arc_task_copy(lmk_arc_task *dst, const lmk_arc_task *src);
void lmk_arc_task_free(lmk_arc_task *t);
void lmk_arc_set_free(lmk_arc_set *s);
/* @return : the task with this id, or NULL */
const lmk_arc_task *lmk_arc_set_find(const lmk_arc_set *s, const char *id);

/* ---- loading ---- */

/* Called for each bad task (or bad file) that loading skips; msg is the
 * one-line message ("x.json: task 00d62c1b: train[2].output row 3: expected
 * 5 cells, found 4"). */
typedef void (*lmk_arc_bad_fn)(void *arg, const char *msg);

/* Loads path into *s (initialised here), which is:
 *  - a folder: every NAME.json in it is one task with id NAME
 *    ({"train": [{"input", "output"}...], "test": [{"input", "output"?}]});
 *  - a file with "train" at its top: one task, id its name without .json;
 *  - Kaggle's combined challenges ({id: task, ...}) or solutions
 *    ({id: [grid, ...]}: tasks with ntrain 0 and only test outputs).
 * Grids are 1..30 rows of 1..30 cells, rectangular, integers 0..9; keys
 * other than train, test, input and output are ignored.
 * With bad NULL the first bad task fails the load; otherwise each bad task
 * is passed to bad, left out, and counted.
 * @return : the number of bad tasks left out (0 with bad NULL), or
 * LMK_EIO (cannot open or read), LMK_EFORMAT (the message names the file,
 * the task and the place), LMK_ENOMEM. *s is empty on failure. */
int lmk_arc_load(lmk_arc_set *s, const char *path, lmk_arc_bad_fn bad, void *arg);
/* The same for a JSON text in memory, as if read from a file called name
 * (a task file, a challenges or a solutions file; used by fuzzing). */
int lmk_arc_load_mem(lmk_arc_set *s, const char *name, const void *buf, size_t len,
		     lmk_arc_bad_fn bad, void *arg);
/* Fills the test outputs of s from sol (a solutions set or any set with
 * test outputs): every task of s must be in sol with as many test pairs;
 * tasks of sol not in s are ignored. name (sol's file) is used in messages.
 * @return : 0, or LMK_EFORMAT naming the task (s is then unchanged) */
int lmk_arc_set_solve(lmk_arc_set *s, const lmk_arc_set *sol, const char *name);

/* lmk_arc_load of path (no bad callback), then, when solutions is not
 * NULL, lmk_arc_set_solve with the tasks of that file: Kaggle's
 * challenges with their solutions in one call. @return : 0 or as those */
int lmk_arc_load_solved(lmk_arc_set *s, const char *path, const char *solutions);

/* ---- text form ----
 * One character per cell, the digit of its colour; each row ends in "\n".
 * A pair is "I\n" input rows "O\n" output rows "E\n"; a prompt is the
 * demonstration pairs then "I\n" test input rows "O\n", and the target is
 * the output rows then "E\n", so that the target ends as the
 * demonstrations do. Every piece ends in a newline and the markers
 * are single capital letters, so a byte-level tokenizer and BPE tokenizers
 * that split digits (SmolLM2, Llama 3) cut the text at the same places
 * whether it is encoded whole or piece by piece. The 3x2 grid [[1,2],[3,4],
 * [5,6]] is "12\n34\n56\n". */
#define LMK_ARC_IN "I\n"
#define LMK_ARC_OUT "O\n"
#define LMK_ARC_END "E\n"

/* Appends the text of grid g to buf (room for 31 * 30 bytes and a NUL).
 * @return : the number of bytes written, NUL not counted */
size_t lmk_arc_grid_text(const lmk_arc_grid *g, char *buf);
/* Prompt and target of test pair k of task t, as malloc'ed NUL-terminated
 * strings (the caller frees them); *target is NULL when the pair has no
 * output. target may be NULL when not wanted.
 * @return : 0, LMK_EINVAL (k out of range, or a pair without input),
 * LMK_ENOMEM */
int lmk_arc_format(const lmk_arc_task *t, int k, char **prompt, char **target);
/* Reads a grid from a model's output text (len bytes, any content): leading
 * whitespace is skipped, then rows of digits each ended by "\n" (or "\r\n")
 * are read up to the first line that does not begin with a digit (the end
 * marker), or the end of the text, where a last row without newline counts.
 * The rows must be 1..30 of the same width 1..30, and a line that begins
 * with a digit must be a whole row ("34E" is no row and no end marker).
 * @return : 1 and the grid in *g, or 0 and "no grid" (g->h == 0) */
int lmk_arc_parse_grid(const char *text, size_t len, lmk_arc_grid *g);
/* Reads a model's answer as it is generated, byte by byte, to stop as soon
 * as the rest cannot change what lmk_arc_parse_grid reads from it: at the
 * end marker, or once it can no longer be a grid (a row wider than the
 * first or than 30 cells, a shorter one, a 31st row, digits then some other
 * byte). Starts zeroed. */
typedef struct lmk_arc_scan {
	int col, width, rows;   /* cells of the row being read, of the first */
	int cr;                 /* a '\r' ended the row: '\n' must follow */
	int decided;
} lmk_arc_scan;
/* @return : 1 when the bytes so far decide the grid (or its absence) of
 * every text that begins with them, else 0 */
int lmk_arc_scan_byte(lmk_arc_scan *s, char ch);

/* ---- augmentations ----
 * The 8 symmetries of the square. Output cell (i, j) of a grid h x w comes
 * from the input at (a, b) = (j, i) if the transform swaps axes, else (i, j),
 * then row h-1-a if it flips rows, column w-1-b if it flips columns; the
 * numbering is bit 2 swap, bit 1 flip rows, bit 0 flip columns. */
enum {
	LMK_ARC_ID = 0, LMK_ARC_FLIPH = 1 /* mirror left-right */, LMK_ARC_FLIPV = 2,
	LMK_ARC_ROT180 = 3, LMK_ARC_TRANSPOSE = 4, LMK_ARC_ROT270 = 5 /* counterclockwise */,
	LMK_ARC_ROT90 = 6 /* clockwise */, LMK_ARC_ANTITRANSPOSE = 7,
};
/* @return : "id", "flip-h", "flip-v", "rot180", "transpose", "rot270",
 * "rot90", "anti-transpose"; NULL for a bad d */
const char *lmk_arc_dihedral_name(int d);
/* @return : the transform undoing d */
int lmk_arc_dihedral_inverse(int d);
/* @return : the transform equal to a, then b */
int lmk_arc_dihedral_compose(int a, int b);
/* dst = d(src); dst may not be src. */
void lmk_arc_grid_dihedral(lmk_arc_grid *dst, const lmk_arc_grid *src, int d);

/* An invertible transformation of a task: a symmetry of every grid, a
 * colour permutation of every grid (colour c becomes perm[c]), and an order
 * of the demonstration pairs (pair k of the result is pair order[k] of the
 * original; norder 0 keeps the order). Test pairs keep their order. */
typedef struct lmk_arc_tf {
	int dihedral;
	uint8_t perm[10];
	int norder;
	uint8_t order[LMK_ARC_MAXPAIRS];
} lmk_arc_tf;

/* What lmk_arc_tf_random may change. */
enum {
	LMK_ARC_AUG_DIHEDRAL = 1, /* any of the 8 symmetries */
	LMK_ARC_AUG_COLOURS = 2,  /* a colour permutation */
	LMK_ARC_AUG_KEEP0 = 4,    /* ... that keeps 0 (the usual background) */
	LMK_ARC_AUG_ORDER = 8,    /* an order of the demonstrations */
	LMK_ARC_AUG_ALL = 1 | 2 | 8,
};

void lmk_arc_tf_identity(lmk_arc_tf *t);
/* A transformation drawn from r, for tasks with ntrain demonstrations. */
void lmk_arc_tf_random(lmk_arc_tf *t, lmk_rng *r, int ntrain, unsigned flags);
/* The transformations prediction votes over, written to out (room for cap):
 * per_class of each symmetry (only the identity without
 * LMK_ARC_AUG_DIHEDRAL), the first of each with colours and order kept and
 * the others with colours and order drawn from r as flags say; the very
 * first is the identity. @return : the number written */
int lmk_arc_tf_plan(lmk_arc_tf *out, int cap, int ntrain, int per_class, unsigned flags,
		    lmk_rng *r);
/* dst = t(src) and its inverse; dst may not be src. */
void lmk_arc_grid_apply(lmk_arc_grid *dst, const lmk_arc_grid *src, const lmk_arc_tf *t);
void lmk_arc_grid_invert(lmk_arc_grid *dst, const lmk_arc_grid *src, const lmk_arc_tf *t);
/* *dst = t(src), a new task (free it). t's order must have src->ntrain
 * entries, or none. @return : 0, LMK_EINVAL (bad order), LMK_ENOMEM */
int lmk_arc_task_apply(lmk_arc_task *dst, const lmk_arc_task *src, const lmk_arc_tf *t);
/* Writes t in words ("rot90 colours 0132456789 order 2,0,1") to buf, as
 * snprintf. @return : the length of the whole text */
int lmk_arc_tf_describe(const lmk_arc_tf *t, char *buf, size_t cap);

/* ---- leave-one-out ---- */

/* The ntrain tasks that hold out demonstration k: the other ntrain - 1 as
 * demonstrations (in order), pair k as the only test pair; ids "ID/k".
 * *out is a malloc'ed array (free each task and the array).
 * @return : the number of tasks (ntrain), LMK_EINVAL when ntrain < 2,
 * LMK_ENOMEM */
int lmk_arc_loo(const lmk_arc_task *t, lmk_arc_task **out);
/* The test-time training set of task t: cap tasks, task j being the
 * leave-one-out task j % ntrain, as it is for j < ntrain and transformed by
 * lmk_arc_tf_random(flags) from a generator seeded with seed afterwards
 * (paper: 250). ids "ID/k". *out as for lmk_arc_loo.
 * @return : the number of tasks (cap), LMK_EINVAL (ntrain < 2 or cap < 1),
 * LMK_ENOMEM */
int lmk_arc_ttt_tasks(const lmk_arc_task *t, int cap, unsigned flags, uint64_t seed,
		      lmk_arc_task **out);
void lmk_arc_tasks_free(lmk_arc_task *t, int n);

/* ---- training examples ---- */

/* Encodes len bytes of text into at most cap ids at out.
 * @return : the number of ids the whole text takes (more than cap: nothing
 * past cap written, call again with more room), or a negative code */
typedef int (*lmk_arc_encode_fn)(void *arg, const char *text, size_t len, int32_t *out, int cap);

typedef struct lmk_arc_example_opts {
	lmk_arc_encode_fn encode;
	void *arg;
	int32_t bos, eos;   /* prepended / appended ids, -1 for none */
	int max_len;        /* longer examples are dropped and counted */
	int all_outputs;    /* 0: loss on the target only; 1: also on the
			     * outputs of the demonstrations but the first
			     * (the paper's loss on demonstrations: the first
			     * has nothing before it to learn from); 2: on
			     * every output */
} lmk_arc_example_opts;

/* ids (n) and mask (n): mask[i] 1 when id i is predicted with a loss (the
 * target, its end marker and eos). */
typedef struct lmk_arc_example {
	int n;
	int32_t *ids;
	uint8_t *mask;
	int task, test;   /* where it came from */
} lmk_arc_example;

typedef struct lmk_arc_examples {
	int n, cap;
	lmk_arc_example *ex;
	int dropped;      /* longer than max_len */
} lmk_arc_examples;

/* Appends to *e (zeroed before the first call) one example per test pair
 * with an output of each of the ntasks tasks. Without all_outputs the
 * prompt is encoded whole, as prediction encodes it; with it the text is
 * encoded piece by piece, cut before and after each output (the same ids
 * for the byte tokenizer and for BPE that splits digits).
 * @return : the number appended, or a negative code (the encoder's, or
 * LMK_ENOMEM, LMK_EINVAL); e keeps what was appended before */
int lmk_arc_examples_add(lmk_arc_examples *e, const lmk_arc_task *tasks, int ntasks,
			 const lmk_arc_example_opts *o);
void lmk_arc_examples_free(lmk_arc_examples *e);

/* ---- prediction and voting ---- */

/* The model's continuation of prompt, written NUL-terminated to out (cap
 * bytes). @return : >= 0, or a negative code that stops the prediction */
typedef int (*lmk_arc_predict_fn)(void *arg, const char *prompt, char *out, size_t cap);
/* n prompts at once: outs[i] has cap bytes. @return : as above */
typedef int (*lmk_arc_predict_batch_fn)(void *arg, int n, const char *const *prompts,
					char *const *outs, size_t cap);
/* Room for a model's answer: a 30x30 grid, its end marker, slack. */
#define LMK_ARC_ANSWER_CAP 1024

/* Prompts for test pair k of t under each of the ntf transformations
 * (prompts[i] is lmk_arc_format of tfs[i](t)), malloc'ed (free each).
 * @return : 0, LMK_EINVAL, LMK_ENOMEM (prompts then all NULL) */
int lmk_arc_prompts(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf, char **prompts);
/* Hierarchical voting (paper): each answer texts[i] is parsed and mapped
 * back through tfs[i]; within each symmetry class the distinct grids are
 * counted and the 3 most frequent kept; across classes a grid scores the
 * number of classes that kept it, then its count over all answers; ties
 * go to the grid first seen (the paper favours the identity: put it
 * first, as lmk_arc_tf_plan does). Unparsable answers do not vote. The
 * paper's row- and column-majority grids, added to classes with fewer than
 * 3 distinct answers, are not made.
 * best[0] and best[1] get the two best distinct grids ("no grid" where
 * there are fewer). @return : the number of distinct grids found (0..) */
int lmk_arc_vote(const char *const *texts, const lmk_arc_tf *tfs, int ntf, lmk_arc_grid best[2]);
/* The same from grids already mapped back; cls[i] is grid i's class. */
int lmk_arc_vote_grids(const lmk_arc_grid *g, const int *cls, int n, lmk_arc_grid best[2]);
/* Prompts, answers, vote for test pair k of t, one prompt at a time or all
 * in one batch call. @return : as lmk_arc_vote, or a negative code (the
 * callback's, LMK_EINVAL, LMK_ENOMEM) */
int lmk_arc_predict(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf,
		    lmk_arc_predict_fn predict, void *arg, lmk_arc_grid best[2]);
int lmk_arc_predict_batch(const lmk_arc_task *t, int k, const lmk_arc_tf *tfs, int ntf,
			  lmk_arc_predict_batch_fn predict, void *arg, lmk_arc_grid best[2]);

/* ---- submissions and scoring ---- */

/* Kaggle's submission: {id: [{"attempt_1": grid, "attempt_2": grid}, ...]},
 * one entry per test input. att[2*k + a] is attempt a of test input k;
 * "no grid" is written as [[0]], as in Kaggle's sample submission, and an
 * empty grid ([] or [[]]) read back as "no grid". */
typedef struct lmk_arc_sub_task {
	char *id;
	int ntest;
	lmk_arc_grid *att;
} lmk_arc_sub_task;

typedef struct lmk_arc_sub {
	int n, cap;
	lmk_arc_sub_task *t;   /* in order of add, or of the file */
} lmk_arc_sub;

/* Adds task id with ntest test inputs, all attempts "no grid".
 * @return : its index, LMK_EINVAL (duplicate or bad id, bad ntest),
 * LMK_ENOMEM */
int lmk_arc_sub_add(lmk_arc_sub *s, const char *id, int ntest);
void lmk_arc_sub_free(lmk_arc_sub *s);
/* Writes s to path atomically (temporary file beside it, fsync, rename), or
 * to standard output for "-". @return : 0 or LMK_EIO */
int lmk_arc_sub_write(const lmk_arc_sub *s, const char *path);
/* Reads a submission ("-": standard input) into *s (initialised here).
 * @return : 0, LMK_EIO, LMK_EFORMAT (naming the task and place), LMK_ENOMEM */
int lmk_arc_sub_read(lmk_arc_sub *s, const char *path);
int lmk_arc_sub_read_mem(lmk_arc_sub *s, const char *name, const void *buf, size_t len);

typedef struct lmk_arc_task_score {
	int ntest, nsolved;  /* test inputs, and those one attempt got right */
	int solved;          /* every test input solved */
	int missing;         /* the submission has no entry for the task */
	/* partial credit, for models that solve little: the test inputs with
	 * an attempt of the output's size, and the mean over test inputs of
	 * the best share of cells right in such an attempt (0 without one) */
	int nsized;
	double cells;
} lmk_arc_task_score;

typedef struct lmk_arc_score {
	int tasks, tasks_solved;
	int tests, tests_solved;
	double kaggle;       /* mean over tasks of the share of test inputs
			      * solved (the ARC Prize score) */
	int missing;         /* tasks without an entry */
	int extra;           /* submission entries for tasks not in truth */
	int tests_sized;     /* partial credit as lmk_arc_task_score's, */
	double cells;        /* the mean over every test input */
} lmk_arc_score;

/* pass@2 of sub against the test outputs of truth (tasks with outputs: a
 * folder of tasks, or challenges solved by lmk_arc_set_solve, or a
 * solutions file). per (truth->n entries) may be NULL. A test input is
 * solved when either attempt equals its output; entries beyond the task's
 * test inputs are ignored, missing ones are wrong.
 * @return : 0, or LMK_EINVAL when a truth task lacks a test output */
int lmk_arc_score_sub(const lmk_arc_set *truth, const lmk_arc_sub *sub, lmk_arc_task_score *per,
		      lmk_arc_score *total);

#endif
