/* ttt-arc.c: test-time training on ARC tasks ("The Surprising Effectiveness
 * of Test-Time Training for Few-Shot Learning", Akyürek et al. 2024), one
 * git-style command per step over lib/arc.h and lib/arctrain.h. The data
 * commands: check (validate task files), format (the text a language model
 * sees, plain, leave-one-out or augmented) and score (pass@2 of a Kaggle
 * submission). The model commands: pretrain (the paper's initial
 * fine-tuning on training tasks, from scratch or from a checkpoint, whole
 * or with LoRA), ttt (a fresh LoRA per task on its leave-one-out tasks,
 * saved or used at once) and predict (greedy answers under the symmetries,
 * mapped back and voted, into a Kaggle submission). Every model command
 * runs on the CPU or on CUDA (--device), and resumes (--resume): pretrain
 * from its state file, ttt and predict from the adapters or the
 * submission written task by task, so that a long run is a series of
 * calls, each ended by --time-limit.
 * A command is a function and one entry in the table `commands`, with the
 * options it accepts; its lines go into the usage text. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "arc.h"
#include "arctrain.h"
#include "bpe.h"
#include "bytetok.h"
#include "ckpt.h"
#include "err.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_llama.h"
#include "llama.h"
#include "lora.h"
#include "metrics.h"
#include "optim.h"
#include "progress.h"
#include "prog.h"
#include "rng.h"
#include "train.h"

static const char usage[] =
"usage: ttt-arc COMMAND [OPTION...] [ARG...]\n"
"ARC tasks for test-time training of language models (Akyurek et al. 2024).\n"
"TASKS is a folder of task files (ID.json), one task file, or Kaggle's\n"
"combined *_challenges.json or *_solutions.json ('-': standard input).\n"
"MODEL is a folder written by pretrain (a model, or a LoRA adapter over its\n"
"base), a Hugging Face checkpoint folder, or a GGUF file.\n"
"\n"
"Commands:\n"
"  check TASKS...      validate task files: one line per bad task on\n"
"                      stderr, a count per TASKS on stdout; exit 1 if any\n"
"                      is bad\n"
"  format TASKS        the text form of each test input (prompt, then\n"
"                      target when the output is known), or of each\n"
"                      held-out demonstration with --loo\n"
"  score SUBMISSION SOLUTIONS\n"
"                      pass@2 of a Kaggle submission.json against the test\n"
"                      outputs of SOLUTIONS (TASKS with outputs): a JSON\n"
"                      line per task on stdout, a summary on stderr\n"
"  pretrain TASKS --out=DIR\n"
"                      the initial fine-tuning: train on TASKS (with test\n"
"                      outputs), their leave-one-out tasks and augmented\n"
"                      copies, loss on outputs only; a new model (byte\n"
"                      tokens) or --init MODEL, whole or --adapter; DIR\n"
"                      gets the model or the adapter and a state file\n"
"  ttt TASKS --model=MODEL\n"
"                      test-time training: a fresh LoRA per task, trained\n"
"                      on its leave-one-out tasks, saved under\n"
"                      --adapter-out DIR/ID and/or used at once (--predict)\n"
"  predict TASKS --model=MODEL -o SUBMISSION\n"
"                      greedy answers under the symmetries of each test\n"
"                      input, mapped back and voted: the two best as a\n"
"                      Kaggle submission (with --adapters, each task's own)\n"
"  help                this text\n"
"\n"
"Options:\n"
"  -o, --output=FILE   write to FILE ('-', the default: standard output)\n"
"      --solutions=FILE  test outputs for TASKS or SOLUTIONS, from a\n"
"                      *_solutions.json (format, score, pretrain)\n"
"      --task=ID       only task ID; may be given again (format, pretrain,\n"
"                      ttt, predict)\n"
"      --loo           leave-one-out: each demonstration in turn is the\n"
"                      one to predict from the others (format)\n"
"      --augment=N     format: after each text, N more of the task\n"
"                      transformed by a random symmetry, colour permutation\n"
"                      and order of demonstrations (default 0); pretrain: N\n"
"                      transformed copies of each task per epoch (default 4)\n"
"      --keep-zero     colour permutations keep colour 0\n"
"      --seed=N        seed of the augmentations, weights and orders\n"
"                      (default 0)\n"
"      --json          format: one JSON object per text; score: the\n"
"                      summary as a last JSON line on stdout\n"
"Models (pretrain):\n"
"      --out=DIR       where pretrain writes the model and its state\n"
"      --init=MODEL    start from MODEL (else a new model, byte tokens)\n"
"      --hidden=C      a new model's hidden size (default 256)\n"
"      --layers=L      its layers (default 4)\n"
"      --heads=H       its attention heads (default 4)\n"
"      --intermediate=F  its MLP size (default 8/3 C, a multiple of 32)\n"
"      --adapter=SPEC  pretrain: a LoRA adapter over the frozen --init\n"
"                      model instead of the whole model; ttt: the adapter\n"
"                      of each task (default\n"
"                      lora:r=32,alpha=32,targets=q,k,v,o,gate,up,down)\n"
"Training (pretrain, ttt):\n"
"      --steps=N       pretrain: optimizer steps to reach (default 1000)\n"
"      --epochs=N      ttt: epochs over each task's examples (default 2)\n"
"      --cap=N         leave-one-out tasks per task, augmented after the\n"
"                      first ones (pretrain: per epoch, default 4; ttt:\n"
"                      default 250, the paper's)\n"
"      --batch=B       examples per step (pretrain 8, ttt 2)\n"
"      --group=N       pretrain: batches of similar lengths, sorted within\n"
"                      windows of N batches of the random order (default\n"
"                      32; 0: random batches, padded to their longest)\n"
"      --lr=LR         peak learning rate (pretrain: 1e-3 new, 5e-5\n"
"                      with --init; ttt: 1e-4)\n"
"      --min-lr=LR     final learning rate of the cosine (default 0)\n"
"      --warmup=N      steps of linear warm-up (pretrain: 100 new, else\n"
"                      0; ttt: 0)\n"
"      --weight-decay=W  AdamW weight decay of matrices (pretrain new\n"
"                      0.1, else 0)\n"
"      --grad-clip=G   clip the gradient's norm to G (default 1; 0: no)\n"
"      --loss=WHICH    target (the test output only), outputs (also every\n"
"                      demonstration output but the first: the paper's;\n"
"                      the default) or all\n"
"      --max-len=N     tokens of an example or of a prompt and its answer;\n"
"                      longer examples are left out, longer prompts lose\n"
"                      their largest demonstrations (default 8192)\n"
"      --resume        pretrain: continue the run in --out; ttt and\n"
"                      predict: keep the tasks already in --adapter-out or\n"
"                      in the submission, do the others\n"
"      --save-every=N  pretrain: save every N steps (default 200)\n"
"      --time-limit=S  stop after S seconds, between steps or tasks, with\n"
"                      everything saved: exit 75 (default 0: none)\n"
"      --metrics=FILE  append JSON lines of metrics to FILE ('-': stdout)\n"
"Prediction (ttt, predict):\n"
"      --model=MODEL   the model to adapt or to predict with\n"
"      --adapter-out=DIR  ttt: save each task's adapter in DIR/ID (PEFT)\n"
"      --predict       ttt: predict each task with its adapter at once\n"
"                      into the submission -o\n"
"      --adapters=DIR  predict: with the adapter DIR/ID of each task\n"
"      --per-class=N   predictions per symmetry of the square, the first\n"
"                      as is, the others with colours and order permuted\n"
"                      (default 1: 8 predictions per test input)\n"
"Device:\n"
"      --device=DEV    cpu, cuda or cuda:N (default cpu)\n"
"      --dtype=DT      f32, or bf16 on cuda (default bf16 on cuda)\n"
"      --threads=N     CPU threads (default: all processors)\n"
"  -q, --quiet         no warnings, progress, summary or counts\n"
"  -h, --help          this text\n"
"      --version       the program's version\n"
"\n"
"Exit status: 0 success, 1 failure or (check) a bad task, 2 usage error,\n"
"75 stopped by --time-limit (continue with --resume), 130 or 143 stopped\n"
"by SIGINT or SIGTERM (after saving).\n";

enum {
	OPT_SOLUTIONS = PROG_OPT_FIRST_FREE, OPT_TASK, OPT_LOO, OPT_AUGMENT, OPT_KEEP0, OPT_JSON,
	OPT_OUT, OPT_INIT, OPT_HIDDEN, OPT_LAYERS, OPT_HEADS, OPT_INTERMEDIATE, OPT_ADAPTER,
	OPT_STEPS, OPT_EPOCHS, OPT_CAP, OPT_BATCH, OPT_LR, OPT_MIN_LR, OPT_WARMUP, OPT_WD,
	OPT_CLIP, OPT_LOSS, OPT_MAX_LEN, OPT_RESUME, OPT_SAVE_EVERY, OPT_TIME_LIMIT, OPT_METRICS,
	OPT_MODEL, OPT_ADAPTER_OUT, OPT_PREDICT, OPT_ADAPTERS, OPT_PER_CLASS, OPT_DEVICE,
	OPT_DTYPE, OPT_THREADS, OPT_GROUP,
};

/* Bits of options given, to refuse those a command does not use; bit b
 * is option flagname[b]. */
#define F(b) ((uint64_t)1 << (b))
enum {
	B_OUTPUT, B_SOLUTIONS, B_TASK, B_LOO, B_AUGMENT, B_KEEP0, B_SEED, B_JSON, B_OUT, B_INIT,
	B_HIDDEN, B_LAYERS, B_HEADS, B_INTERMEDIATE, B_ADAPTER, B_STEPS, B_EPOCHS, B_CAP, B_BATCH,
	B_LR, B_MIN_LR, B_WARMUP, B_WD, B_CLIP, B_LOSS, B_MAX_LEN, B_RESUME, B_SAVE_EVERY,
	B_TIME_LIMIT, B_METRICS, B_MODEL, B_ADAPTER_OUT, B_PREDICT, B_ADAPTERS, B_PER_CLASS,
	B_DEVICE, B_DTYPE, B_THREADS, B_GROUP, B_COUNT,
};

static const char *const flagname[B_COUNT] = {
	"--output", "--solutions", "--task", "--loo", "--augment", "--keep-zero", "--seed", "--json",
	"--out", "--init", "--hidden", "--layers", "--heads", "--intermediate", "--adapter",
	"--steps", "--epochs", "--cap", "--batch", "--lr", "--min-lr", "--warmup",
	"--weight-decay", "--grad-clip", "--loss", "--max-len", "--resume", "--save-every",
	"--time-limit", "--metrics", "--model", "--adapter-out", "--predict", "--adapters",
	"--per-class", "--device", "--dtype", "--threads", "--group",
};

static const struct option longopts[] = {
	{"output", required_argument, NULL, 'o'},
	{"solutions", required_argument, NULL, OPT_SOLUTIONS},
	{"task", required_argument, NULL, OPT_TASK},
	{"loo", no_argument, NULL, OPT_LOO},
	{"augment", required_argument, NULL, OPT_AUGMENT},
	{"keep-zero", no_argument, NULL, OPT_KEEP0},
	{"seed", required_argument, NULL, PROG_OPT_SEED},
	{"json", no_argument, NULL, OPT_JSON},
	{"out", required_argument, NULL, OPT_OUT},
	{"init", required_argument, NULL, OPT_INIT},
	{"hidden", required_argument, NULL, OPT_HIDDEN},
	{"layers", required_argument, NULL, OPT_LAYERS},
	{"heads", required_argument, NULL, OPT_HEADS},
	{"intermediate", required_argument, NULL, OPT_INTERMEDIATE},
	{"adapter", required_argument, NULL, OPT_ADAPTER},
	{"steps", required_argument, NULL, OPT_STEPS},
	{"epochs", required_argument, NULL, OPT_EPOCHS},
	{"cap", required_argument, NULL, OPT_CAP},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"lr", required_argument, NULL, OPT_LR},
	{"min-lr", required_argument, NULL, OPT_MIN_LR},
	{"warmup", required_argument, NULL, OPT_WARMUP},
	{"weight-decay", required_argument, NULL, OPT_WD},
	{"grad-clip", required_argument, NULL, OPT_CLIP},
	{"loss", required_argument, NULL, OPT_LOSS},
	{"max-len", required_argument, NULL, OPT_MAX_LEN},
	{"resume", no_argument, NULL, OPT_RESUME},
	{"save-every", required_argument, NULL, OPT_SAVE_EVERY},
	{"time-limit", required_argument, NULL, OPT_TIME_LIMIT},
	{"metrics", required_argument, NULL, OPT_METRICS},
	{"model", required_argument, NULL, OPT_MODEL},
	{"adapter-out", required_argument, NULL, OPT_ADAPTER_OUT},
	{"predict", no_argument, NULL, OPT_PREDICT},
	{"adapters", required_argument, NULL, OPT_ADAPTERS},
	{"per-class", required_argument, NULL, OPT_PER_CLASS},
	{"device", required_argument, NULL, OPT_DEVICE},
	{"dtype", required_argument, NULL, OPT_DTYPE},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"group", required_argument, NULL, OPT_GROUP},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, PROG_OPT_VERSION},
	{NULL, 0, NULL, 0},
};

/* Exit status of a run stopped by --time-limit (sysexits' EX_TEMPFAIL:
 * try again), which scripts loop on. */
#define EXIT_AGAIN 75

enum { LOSS_TARGET, LOSS_OUTPUTS, LOSS_ALL };
static const char *const lossname[] = {"target", "outputs", "all"};

struct opts {
	const char *out, *solutions;
	const char **task;
	int ntask;
	int loo, keep0, json, quiet;
	long augment;
	uint64_t seed;
	uint64_t given;
	/* models and training */
	const char *dir, *init, *adapter, *model, *adapter_out, *adapters, *metrics;
	const char *device_arg;
	int hidden, layers, heads, intermediate;
	int64_t steps, warmup, save_every;
	int epochs, cap, batch, group, loss, max_len, per_class, threads, resume, predict;
	double lr, min_lr, wd, clip, time_limit;
	lmk_device device;
	int device_index;
	lmk_dtype dtype;
};
/* ---- output ---- */

static FILE *text_open(const char *path)
{
	FILE *o;

	if (strcmp(path, "-") == 0)
		return stdout;
	if (!(o = fopen(path, "w")))
		prog_die("cannot open '%s': %s", path, strerror(errno));
	return o;
}

/* Standard output is checked at exit by prog.c; a file is checked here. */
static void text_close(FILE *o, const char *path)
{
	if (o == stdout)
		return;
	if (ferror(o) | (fclose(o) != 0))
		prog_die("cannot write '%s': %s", path, strerror(errno ? errno : EIO));
}

static void put_json(FILE *o, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	if (!s)
		prog_die("out of memory");
	fputs(s, o);
	putc('\n', o);
	free(s);
	json_decref(j);
}

/* ---- loading ---- */

/* TASKS, with the test outputs of --solutions filled in. */
static void load_tasks(lmk_arc_set *s, const char *path, const struct opts *o)
{
	if (lmk_arc_load_solved(s, path, o->solutions) < 0)
		prog_die_lib();
}

/* ---- check ---- */

static void report_bad(void *arg, const char *msg)
{
	fprintf(stderr, "%s: %s\n", prog_name(), msg);
}

static int cmd_check(int argc, char **argv, struct opts *o)
{
	int status = 0;

	for (int i = 0; i < argc; i++) {
		lmk_arc_set s;
		int nbad = lmk_arc_load(&s, argv[i], report_bad, NULL);
		if (nbad < 0) {
			/* the whole file: unreadable, not JSON, not tasks */
			report_bad(NULL, lmk_errmsg());
			status = 1;
			continue;
		}
		if (nbad > 0)
			status = 1;
		if (!o->quiet)
			printf("%s: %d tasks, %d bad\n", strcmp(argv[i], "-") ? argv[i] : "<stdin>",
			       s.n + nbad, nbad);
		lmk_arc_set_free(&s);
	}
	return status;
}

/* ---- format ---- */

static int wanted(const struct opts *o, const char *id)
{
	if (!o->ntask)
		return 1;
	for (int i = 0; i < o->ntask; i++)
		if (strcmp(o->task[i], id) == 0)
			return 1;
	return 0;
}

/* One text: a header line ("# ID test K" and the transformation), then the
 * prompt and the target; the text form holds no '#', so headers cannot be
 * mistaken for it. */
static void put_text(FILE *out, const struct opts *o, const lmk_arc_task *t, int k,
		     const lmk_arc_tf *tf)
{
	char *p, *q, desc[256] = "";

	if (lmk_arc_format(t, k, &p, &q) < 0)
		prog_die_lib();
	if (tf)
		lmk_arc_tf_describe(tf, desc, sizeof desc);
	if (o->json) {
		json_t *j = json_object();
		json_object_set_new(j, "task", json_string(t->id));
		json_object_set_new(j, "test", json_integer(k));
		json_object_set_new(j, "transform", tf ? json_string(desc) : json_null());
		json_object_set_new(j, "prompt", json_string(p));
		json_object_set_new(j, "target", q ? json_string(q) : json_null());
		put_json(out, j);
	} else {
		fprintf(out, "# %s test %d%s%s\n%s%s", t->id, k, tf ? " " : "", desc, p, q ? q : "");
	}
	free(p);
	free(q);
}

/* The task as it is, then --augment transformed copies of it. */
static void put_augmented(FILE *out, const struct opts *o, const lmk_arc_task *t, lmk_rng *r)
{
	unsigned flags = LMK_ARC_AUG_ALL | (o->keep0 ? LMK_ARC_AUG_KEEP0 : 0);

	for (int k = 0; k < t->ntest; k++)
		put_text(out, o, t, k, NULL);
	for (long j = 0; j < o->augment; j++) {
		lmk_arc_tf tf;
		lmk_arc_task a;
		lmk_arc_tf_random(&tf, r, t->ntrain, flags);
		if (lmk_arc_task_apply(&a, t, &tf) < 0)
			prog_die_lib();
		for (int k = 0; k < a.ntest; k++)
			put_text(out, o, &a, k, &tf);
		lmk_arc_task_free(&a);
	}
}

static int cmd_format(int argc, char **argv, struct opts *o)
{
	lmk_arc_set s;
	lmk_rng r;
	FILE *out;

	load_tasks(&s, argv[0], o);
	for (int i = 0; i < o->ntask; i++)
		if (!lmk_arc_set_find(&s, o->task[i]))
			prog_die("%s: no task '%s'", argv[0], o->task[i]);
	for (int i = 0; i < s.n; i++)
		if (s.t[i].ntrain == 0)
			prog_die("%s: task %s has no demonstrations (a solutions file?)", argv[0],
				 s.t[i].id);
	lmk_rng_init(&r, o->seed);
	out = text_open(o->out);
	for (int i = 0; i < s.n; i++) {
		const lmk_arc_task *t = &s.t[i];
		if (!wanted(o, t->id))
			continue;
		if (!o->loo) {
			put_augmented(out, o, t, &r);
			continue;
		}
		lmk_arc_task *loo;
		int n = lmk_arc_loo(t, &loo);
		if (n < 0) {
			/* one demonstration leaves nothing to learn from */
			prog_warn("%s", lmk_errmsg());
			continue;
		}
		for (int j = 0; j < n; j++)
			put_augmented(out, o, &loo[j], &r);
		lmk_arc_tasks_free(loo, n);
	}
	text_close(out, o->out);
	lmk_arc_set_free(&s);
	return 0;
}

/* ---- score ---- */

static int cmd_score(int argc, char **argv, struct opts *o)
{
	lmk_arc_sub sub;
	lmk_arc_set truth;
	lmk_arc_task_score *per;
	lmk_arc_score tot;
	FILE *out;

	if (strcmp(argv[0], "-") == 0 && strcmp(argv[1], "-") == 0)
		prog_usage_error("SUBMISSION and SOLUTIONS cannot both be standard input");
	if (lmk_arc_sub_read(&sub, argv[0]) < 0)
		prog_die_lib();
	load_tasks(&truth, argv[1], o);
	if (!(per = calloc((size_t)(truth.n ? truth.n : 1), sizeof *per)))
		prog_die("out of memory");
	for (int i = 0; i < truth.n; i++)
		for (int k = 0; k < truth.t[i].ntest; k++)
			if (!truth.t[i].test[k].out.h)
				prog_die("%s: task %s: test[%d]: no output to score against%s", argv[1],
					 truth.t[i].id, k,
					 o->solutions ? "" : " (give the outputs with --solutions)");
	if (lmk_arc_score_sub(&truth, &sub, per, &tot) < 0)
		prog_die_lib();
	out = text_open(o->out);
	for (int i = 0; i < truth.n; i++) {
		json_t *j = json_object();
		json_object_set_new(j, "task", json_string(truth.t[i].id));
		json_object_set_new(j, "tests", json_integer(per[i].ntest));
		json_object_set_new(j, "tests_solved", json_integer(per[i].nsolved));
		json_object_set_new(j, "solved", json_boolean(per[i].solved));
		json_object_set_new(j, "missing", json_boolean(per[i].missing));
		json_object_set_new(j, "tests_sized", json_integer(per[i].nsized));
		json_object_set_new(j, "cells", json_real(per[i].cells));
		put_json(out, j);
	}
	if (tot.extra)
		prog_warn("%s: %d tasks that %s does not have", argv[0], tot.extra, argv[1]);
	if (o->json) {
		json_t *j = json_object();
		json_object_set_new(j, "tasks", json_integer(tot.tasks));
		json_object_set_new(j, "tasks_solved", json_integer(tot.tasks_solved));
		json_object_set_new(j, "tests", json_integer(tot.tests));
		json_object_set_new(j, "tests_solved", json_integer(tot.tests_solved));
		json_object_set_new(j, "score", json_real(tot.kaggle));
		json_object_set_new(j, "missing", json_integer(tot.missing));
		json_object_set_new(j, "extra", json_integer(tot.extra));
		json_object_set_new(j, "tests_sized", json_integer(tot.tests_sized));
		json_object_set_new(j, "cells", json_real(tot.cells));
		put_json(out, j);
	} else if (!o->quiet) {
		fprintf(stderr, "%s: %d tasks, %d solved (%.2f%%); %d test inputs, %d solved "
			"(%.2f%%); score %.4f; %d tasks missing; %d test inputs of the right size, "
			"%.2f%% of cells right\n", prog_name(), tot.tasks,
			tot.tasks_solved, tot.tasks ? 100.0 * tot.tasks_solved / tot.tasks : 0.0,
			tot.tests, tot.tests_solved,
			tot.tests ? 100.0 * tot.tests_solved / tot.tests : 0.0, tot.kaggle, tot.missing,
			tot.tests_sized, 100.0 * tot.cells);
	}
	text_close(out, o->out);
	free(per);
	lmk_arc_set_free(&truth);
	lmk_arc_sub_free(&sub);
	return 0;
}

/* ---- models ---- */

/* A model, its tokenizer, and where it computes. */
struct model {
	lmk_llama m;
	lmk_bpe *bpe;
	lmk_arctok tok;
	char *tokenizer;        /* "byte", or the file the BPE came from */
};

#define STATE_FILE "ttt-arc-state.safetensors"
#define INFO_FILE "ttt-arc.json"

static char *join(const char *dir, const char *name)
{
	char *p = lmk_path_join(dir, name);
	if (!p)
		prog_die("out of memory");
	return p;
}

static int is_dir(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int has_file(const char *dir, const char *name)
{
	struct stat sb;
	char *p = join(dir, name);
	int r = stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
	free(p);
	return r;
}

static int is_gguf(const char *path)
{
	char magic[4] = {0};
	FILE *f = fopen(path, "rb");
	int r = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
	if (f)
		fclose(f);
	return r;
}

/* A string member of the JSON file dir/name, malloc'ed, or NULL when the
 * file or the member is absent. */
static char *json_member(const char *dir, const char *name, const char *key)
{
	char *p = join(dir, name), *v = NULL;
	json_error_t je;
	json_t *o;
	struct stat sb;

	if (stat(p, &sb) != 0) {
		free(p);
		return NULL;
	}
	if (!(o = json_load_file(p, 0, &je)))
		prog_die("%s: line %d: %s", p, je.line, je.text);
	json_t *s = json_object_get(o, key);
	if (json_is_string(s) && !(v = strdup(json_string_value(s))))
		prog_die("out of memory");
	json_decref(o);
	free(p);
	return v;
}

static void set_tokenizer(struct model *md, const char *spec, const char *what)
{
	if (!(md->tokenizer = strdup(spec)))
		prog_die("out of memory");
	if (strcmp(spec, "byte") == 0) {
		if (md->m.cfg.vocab_size < LMK_BYTETOK_VOCAB)
			prog_die("%s: a vocabulary of %d cannot hold the byte tokens (%d)", what,
				 md->m.cfg.vocab_size, LMK_BYTETOK_VOCAB);
		lmk_arctok_init(&md->tok, NULL);
		return;
	}
	if (lmk_bpe_load(&md->bpe, spec) < 0)
		prog_die_lib();
	if (lmk_bpe_get_info(md->bpe)->n_vocab > md->m.cfg.vocab_size)
		prog_die("%s: the tokenizer %s has %d ids, the model %d", what, spec,
			 lmk_bpe_get_info(md->bpe)->n_vocab, md->m.cfg.vocab_size);
	lmk_arctok_init(&md->tok, md->bpe);
}

/* A GGUF file or a Hugging Face folder, with its tokenizer: the GGUF's, the
 * one ttt-arc.json names, the folder's tokenizer.json, or bytes. */
static void load_base(struct model *md, const char *path, int trainable)
{
	if (!is_dir(path)) {
		lmk_gguf g;
		if (!is_gguf(path))
			prog_die("'%s' is neither a folder nor a GGUF file", path);
		if (lmk_gguf_open(&g, path) < 0 || lmk_gguf_llama_load(&g, &md->m, trainable) < 0)
			prog_die_lib();
		lmk_gguf_close(&g);
		set_tokenizer(md, path, path);
		return;
	}
	if (!has_file(path, "config.json"))
		prog_die("%s: no config.json (not a model folder)", path);
	if (lmk_ckpt_load(path, &md->m, trainable) < 0)
		prog_die_lib();
	char *t = json_member(path, INFO_FILE, "tokenizer");
	if (!t && has_file(path, "tokenizer.json"))
		t = join(path, "tokenizer.json");
	set_tokenizer(md, t ? t : "byte", path);
	free(t);
}

/* MODEL: a base as load_base, or a folder of a LoRA adapter (pretrain's
 * --adapter), merged into its base (base_model_name_or_path), so that a
 * task's adapter trains over the pretrained model. On the host. */
static void load_model(struct model *md, const char *path, int trainable)
{
	memset(md, 0, sizeof *md);
	if (is_dir(path) && has_file(path, "adapter_config.json")) {
		char *base = json_member(path, "adapter_config.json", "base_model_name_or_path");
		lmk_lora pre;
		if (!base)
			prog_die("%s/adapter_config.json: no base_model_name_or_path, the model to adapt",
				 path);
		load_base(md, base, trainable);
		if (lmk_lora_load(&pre, path, &md->m.params) < 0 || lmk_lora_merge(&pre, 0, 0) < 0)
			prog_die_lib();
		lmk_lora_free(&pre);
		free(base);
		return;
	}
	load_base(md, path, trainable);
}

static void free_model(struct model *md)
{
	lmk_llama_free(&md->m);
	lmk_arctok_free(&md->tok);
	lmk_bpe_free(md->bpe);
	free(md->tokenizer);
	memset(md, 0, sizeof *md);
}

/* The context where the model computes; the device is checked first, so
 * that a missing GPU is the first thing said. */
static void device_check(const struct opts *o)
{
	if (lmk_train_device_check(o->device, o->device_index) < 0)
		prog_die_lib();
}

static void device_setup(const struct opts *o, lmk_ctx *c)
{
	device_check(o);
	lmk_train_set_threads(o->threads);
	if (lmk_ctx_init_ex(c, o->device, o->device_index, o->dtype) < 0)
		prog_die_lib();
}

static lmk_arc_example_opts example_opts(struct model *md, const struct opts *o)
{
	lmk_arc_example_opts eo = {
		.encode = lmk_arctok_encode, .arg = &md->tok, .bos = md->tok.bos, .eos = md->tok.eos,
		.max_len = o->max_len, .all_outputs = o->loss,
	};
	return eo;
}

/* A seed of task id's own (FNV-1a of the id, mixed with seed): the same
 * whichever tasks a run holds. */
static uint64_t task_seed(uint64_t seed, const char *id, uint64_t salt)
{
	uint64_t h = 1469598103934665603ull;
	uint32_t w[4];
	for (const char *p = id; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	lmk_philox(seed, h ^ salt, w);
	return (uint64_t)w[0] | (uint64_t)w[1] << 32;
}

static unsigned aug_flags(const struct opts *o)
{
	return LMK_ARC_AUG_ALL | (o->keep0 ? LMK_ARC_AUG_KEEP0 : 0);
}

static const char *hms(char *buf, size_t n, double s)
{
	long t = (long)(s + 0.5);
	if (t >= 3600)
		snprintf(buf, n, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
	return buf;
}

/* Tasks of TASKS that the run works on: --task, and (ttt, predict) with
 * demonstrations. */
static void load_work(lmk_arc_set *s, const char *path, const struct opts *o)
{
	load_tasks(s, path, o);
	for (int i = 0; i < o->ntask; i++)
		if (!lmk_arc_set_find(s, o->task[i]))
			prog_die("%s: no task '%s'", path, o->task[i]);
	for (int i = 0; i < s->n; i++)
		if (s->t[i].ntrain == 0)
			prog_die("%s: task %s has no demonstrations (a solutions file?)", path, s->t[i].id);
}
/* ---- pretrain ---- */

/* Options a pretrain run saves in its state, as their long names, so that
 * --resume continues with them unless given again. */
static const int saved_opts[] = {
	OPT_STEPS, OPT_CAP, OPT_AUGMENT, OPT_BATCH, OPT_LR, OPT_MIN_LR, OPT_WARMUP, OPT_WD,
	OPT_CLIP, OPT_LOSS, OPT_MAX_LEN, OPT_SAVE_EVERY, PROG_OPT_SEED, OPT_KEEP0, OPT_SOLUTIONS,
	OPT_GROUP,
};

static void set_option(struct opts *o, int c, const char *a);

static const struct option *option_of(int code)
{
	for (const struct option *p = longopts; p->name; p++)
		if (p->val == code)
			return p;
	return NULL;
}

static int option_bit(int code)
{
	const struct option *p = option_of(code);
	char name[64];
	snprintf(name, sizeof name, "--%s", p ? p->name : "");
	for (int b = 0; b < B_COUNT; b++)
		if (strcmp(flagname[b], name) == 0)
			return b;
	return -1;
}

/* The value of option code in o, as text, for the state's metadata. */
static void option_text(const struct opts *o, int code, char *buf, size_t n)
{
	switch (code) {
	case OPT_STEPS: snprintf(buf, n, "%" PRId64, o->steps); break;
	case OPT_CAP: snprintf(buf, n, "%d", o->cap); break;
	case OPT_AUGMENT: snprintf(buf, n, "%ld", o->augment); break;
	case OPT_BATCH: snprintf(buf, n, "%d", o->batch); break;
	case OPT_GROUP: snprintf(buf, n, "%d", o->group); break;
	case OPT_LR: snprintf(buf, n, "%.9g", o->lr); break;
	case OPT_MIN_LR: snprintf(buf, n, "%.9g", o->min_lr); break;
	case OPT_WARMUP: snprintf(buf, n, "%" PRId64, o->warmup); break;
	case OPT_WD: snprintf(buf, n, "%.9g", o->wd); break;
	case OPT_CLIP: snprintf(buf, n, "%.9g", o->clip); break;
	case OPT_LOSS: snprintf(buf, n, "%s", lossname[o->loss]); break;
	case OPT_MAX_LEN: snprintf(buf, n, "%d", o->max_len); break;
	case OPT_SAVE_EVERY: snprintf(buf, n, "%" PRId64, o->save_every); break;
	case PROG_OPT_SEED: snprintf(buf, n, "%" PRIu64, o->seed); break;
	case OPT_KEEP0: snprintf(buf, n, "%d", o->keep0); break;
	case OPT_SOLUTIONS: snprintf(buf, n, "%s", o->solutions ? o->solutions : ""); break;
	default: buf[0] = 0;
	}
}

struct pretrain {
	struct opts *o;
	struct model md;
	lmk_lora ad;            /* --adapter: trained over md.m */
	lmk_ctx c;
	lmk_arctrain tr;
	char adapter_str[512];
	const char *tasks;      /* TASKS as saved */
	int64_t epoch, pos;     /* where the data is: example pos of epoch */
	lmk_frame saved;        /* --resume: the state, whose metadata the
				 * options point into until the end */
	double elapsed, t0;     /* seconds of earlier calls; this call's start */
};

/* A new model's configuration: byte tokens, the shape options. */
static void fresh_config(const struct opts *o, lmk_llama_config *mc)
{
	lmk_llama_config_default(mc);
	mc->hidden_size = o->hidden;
	mc->num_hidden_layers = o->layers;
	mc->num_attention_heads = o->heads;
	mc->num_key_value_heads = o->heads;
	mc->head_dim = o->hidden / o->heads;
	mc->intermediate_size = o->intermediate ? o->intermediate : (8 * o->hidden / 3 + 31) / 32 * 32;
	mc->vocab_size = LMK_BYTETOK_VOCAB;
	mc->max_position_embeddings = o->max_len;
	mc->bos_token_id = LMK_BYTETOK_BOS;
	mc->eos_token_id[0] = LMK_BYTETOK_EOS;
	mc->neos = 1;
	if (lmk_llama_config_check(mc, "model") < 0)
		prog_die_lib();
}

/* The model (or adapter) files, ttt-arc.json, then the state: a state
 * always has complete model files beside it. Weights go through the host
 * when they train on a device. */
static void pretrain_save(struct pretrain *r)
{
	struct opts *o = r->o;
	char *st = join(o->dir, STATE_FILE), *info = join(o->dir, INFO_FILE), vals[16][512];
	char ep[32], pos[32], el[64];
	const char *extra[2 * 24 + 1];
	int k = 0;
	json_t *j = json_object();

	if (o->adapter) {
		if (lmk_lora_save(&r->ad, o->dir, o->init) < 0)
			prog_die_lib();
	} else {
		lmk_llama tmp, *hm = &r->md.m;
		if (hm->params.dev != LMK_DEV_CPU) {
			if (lmk_llama_init(&tmp, &hm->cfg, 0) < 0 ||
			    lmk_params_copy_to_host(&hm->params, 0, tmp.params.data) < 0)
				prog_die_lib();
			hm = &tmp;
		}
		if (lmk_ckpt_save(o->dir, hm, LMK_F32) < 0)
			prog_die_lib();
		if (hm != &r->md.m)
			lmk_llama_free(hm);
	}
	json_object_set_new(j, "program", json_string("ttt-arc"));
	json_object_set_new(j, "tokenizer", json_string(r->md.tokenizer));
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!s || lmk_write_file_atomic(info, s, strlen(s)) < 0)
		prog_die_lib();
	free(s);
	for (size_t i = 0; i < sizeof saved_opts / sizeof saved_opts[0]; i++) {
		option_text(o, saved_opts[i], vals[i], sizeof vals[i]);
		extra[k++] = option_of(saved_opts[i])->name;
		extra[k++] = vals[i];
	}
	snprintf(ep, sizeof ep, "%" PRId64, r->epoch);
	snprintf(pos, sizeof pos, "%" PRId64, r->pos);
	snprintf(el, sizeof el, "%.3f", r->elapsed + lmk_now() - r->t0);
	const char *more[] = {"program", "ttt-arc pretrain", "tasks", r->tasks, "epoch", ep,
			      "pos", pos, "elapsed", el, "init", o->init,
			      "adapter", o->adapter ? r->adapter_str : NULL};
	for (size_t i = 0; i < sizeof more / sizeof more[0]; i += 2)
		if (more[i + 1]) {
			extra[k++] = more[i];
			extra[k++] = more[i + 1];
		}
	extra[k] = NULL;
	if (lmk_arctrain_save(&r->tr, st, extra) < 0)
		prog_die_lib();
	free(st);
	free(info);
}

/* --resume: the saved options become the values of those not given. */
static void pretrain_resume_opts(struct pretrain *r, const char *path)
{
	struct opts *o = r->o;
	lmk_frame *f = &r->saved;
	const char *v;

	if (lmk_frame_load(path, f) < 0)
		prog_die_lib();
	for (size_t i = 0; i < sizeof saved_opts / sizeof saved_opts[0]; i++) {
		int b = option_bit(saved_opts[i]);
		if (b >= 0 && (o->given & F(b)))
			continue;
		v = lmk_frame_meta(f, option_of(saved_opts[i])->name);
		if (!v && saved_opts[i] == OPT_GROUP)
			v = "0"; /* saved before --group: random batches */
		if (!v)
			prog_die("%s: no saved '%s'", path, option_of(saved_opts[i])->name);
		if (saved_opts[i] == OPT_KEEP0)
			o->keep0 = strcmp(v, "1") == 0;
		else if (saved_opts[i] == OPT_SOLUTIONS)
			o->solutions = *v ? v : NULL;
		else
			set_option(o, saved_opts[i], v);
	}
	if (!(r->tasks = lmk_frame_meta(f, "tasks")))
		prog_die("%s: no saved 'tasks'", path);
	o->init = lmk_frame_meta(f, "init");
	if ((o->adapter = lmk_frame_meta(f, "adapter")) && !o->init)
		prog_die("%s: an adapter without 'init', its base", path);
	r->epoch = strtoll(lmk_frame_meta(f, "epoch") ? lmk_frame_meta(f, "epoch") : "0", NULL, 10);
	r->pos = strtoll(lmk_frame_meta(f, "pos") ? lmk_frame_meta(f, "pos") : "0", NULL, 10);
	r->elapsed = strtod(lmk_frame_meta(f, "elapsed") ? lmk_frame_meta(f, "elapsed") : "0", NULL);
}

/* The examples of epoch e in their order. */
static void make_epoch(struct pretrain *r, const lmk_arc_set *s, int64_t e, lmk_arc_examples *ex,
		       int **perm)
{
	const struct opts *o = r->o;
	lmk_arctrain_data d = {.loo = o->cap, .aug = (int)o->augment, .flags = aug_flags(o),
			       .seed = o->seed};
	lmk_arc_example_opts eo = example_opts(&r->md, o);
	lmk_arc_task *keep = malloc((size_t)(s->n ? s->n : 1) * sizeof *keep);
	int n = 0;

	if (!keep)
		prog_die("out of memory");
	for (int i = 0; i < s->n; i++)
		if (wanted(o, s->t[i].id))
			keep[n++] = s->t[i];
	lmk_arc_examples_free(ex);
	if (lmk_arctrain_epoch(ex, keep, n, &d, e, &eo) < 0)
		prog_die_lib();
	free(keep);
	if (ex->n == 0)
		prog_die("%s: no example of %d tokens or fewer (%d longer; see --max-len)", r->tasks,
			 o->max_len, ex->dropped);
	free(*perm);
	if (!(*perm = malloc((size_t)ex->n * sizeof **perm)))
		prog_die("out of memory");
	if (lmk_arctrain_order_grouped(*perm, ex, o->batch, o->group, o->seed, e) < 0)
		prog_die_lib();
}

static int cmd_pretrain(int argc, char **argv, struct opts *o)
{
	struct pretrain r = {.o = o};
	lmk_arc_set s;
	lmk_arc_examples ex = {0};
	lmk_arctrain_config cfg;
	lmk_metrics mt;
	lmk_progress pg;
	lmk_frame st;
	int *perm = NULL, sig = 0, stop = 0;
	char *state, b1[32];
	double sum = 0;
	int64_t nsum = 0;

	if (!(o->given & F(B_OUT)))
		prog_usage_error("'pretrain' needs --out DIR, where the model goes");
	state = join(o->dir, STATE_FILE);
	if (o->resume) {
		if (argc > 0)
			prog_usage_error("'pretrain --resume' takes no TASKS (the run's are saved in %s)",
					 state);
		for (int b = B_INIT; b <= B_ADAPTER; b++)
			if (o->given & F(b))
				prog_usage_error("option '%s' cannot be used with --resume (the model is the "
						 "one saved in %s)", flagname[b], o->dir);
		pretrain_resume_opts(&r, state);
	} else {
		struct stat sb;
		if (argc < 1)
			prog_usage_error("'pretrain' needs TASKS");
		if (stat(state, &sb) == 0)
			prog_die("'%s' already holds a run (%s); continue it with --resume or choose "
				 "another --out", o->dir, state);
		r.tasks = argv[0];
		/* the defaults that depend on starting anew or from a model */
		if (!(o->given & F(B_LR)))
			o->lr = o->init ? 5e-5 : 1e-3;
		if (!(o->given & F(B_WARMUP)))
			o->warmup = o->init ? 0 : o->steps / 10 < 100 ? o->steps / 10 : 100;
		if (!(o->given & F(B_WD)))
			o->wd = o->init ? 0 : 0.1;
	}
	device_check(o);
	load_work(&s, r.tasks, o);

	/* the model, on the host */
	if (o->adapter) {
		lmk_lora_config lc;
		lmk_lora_config_default(&lc);
		if (lmk_lora_config_parse(&lc, o->adapter) < 0)
			prog_usage_error("option '--adapter': %s", lmk_errmsg());
		if (lc.onesided)
			prog_usage_error("option '--adapter': ttt-arc trains two-sided LoRA only");
		load_model(&r.md, o->init, 0);
		if (lmk_lora_init(&r.ad, &lc, &r.md.m.params, task_seed(o->seed, "adapter", 0)) < 0)
			prog_die_lib();
		r.md.m.lora = &r.ad;
		lmk_lora_config_str(&lc, r.adapter_str, sizeof r.adapter_str);
	} else if (o->resume) {
		load_model(&r.md, o->dir, 1);
	} else if (o->init) {
		load_model(&r.md, o->init, 1);
	} else {
		lmk_llama_config mc;
		fresh_config(o, &mc);
		if (lmk_llama_init(&r.md.m, &mc, 1) < 0)
			prog_die_lib();
		lmk_llama_init_weights(&r.md.m, task_seed(o->seed, "weights", 0));
		set_tokenizer(&r.md, "byte", "model");
	}
	if (lmk_mkdirs(o->dir) < 0)
		prog_die_lib();

	device_setup(o, &r.c);
	if (lmk_params_to_device(&r.md.m.params, &r.c) < 0 ||
	    (o->adapter && lmk_params_to_device(&r.ad.params, &r.c) < 0))
		prog_die_lib();
	lmk_arctrain_config_default(&cfg);
	cfg.batch = o->batch;
	cfg.lr = (float)o->lr;
	cfg.min_lr = (float)o->min_lr;
	cfg.warmup = o->warmup;
	cfg.total = o->steps;
	cfg.weight_decay = (float)o->wd;
	cfg.beta2 = o->init ? 0.999f : 0.95f;
	cfg.grad_clip = (float)o->clip;
	if (lmk_arctrain_init(&r.tr, &cfg, &r.c, &r.md.m, o->adapter ? &r.ad.params : &r.md.m.params) < 0)
		prog_die_lib();
	if (o->resume) {
		if (lmk_arctrain_restore(&r.tr, state, &st) < 0)
			prog_die_lib();
		lmk_frame_free(&st);
	}
	if (r.tr.step >= o->steps) {
		if (!o->quiet)
			fprintf(stderr, "%s: %s is at step %" PRId64 " of %" PRId64 "; nothing to do\n",
				prog_name(), o->dir, r.tr.step, o->steps);
		goto done;
	}
	if (lmk_metrics_open(&mt, o->metrics) < 0 || lmk_train_catch_signals() < 0)
		prog_die_lib();
	r.t0 = lmk_now();
	make_epoch(&r, &s, r.epoch, &ex, &perm);
	if (!o->quiet)
		fprintf(stderr, "%s: %d tasks, %d examples an epoch (%d longer than %d left out), "
			"%.3gM parameters trained%s%s, step %" PRId64 " of %" PRId64 "\n", prog_name(),
			s.n, ex.n, ex.dropped, o->max_len,
			(double)(o->adapter ? r.ad.params.n : r.md.m.params.n) / 1e6,
			o->device == LMK_DEV_CPU ? "" : ", on cuda in ",
			o->device == LMK_DEV_CPU ? "" : (o->dtype == LMK_BF16 ? "bf16" : "f32"),
			r.tr.step, o->steps);
	lmk_progress_init(&pg, "ttt-arc", "step", r.tr.step, o->steps, o->quiet ? 0 : -1);
	while (r.tr.step < o->steps) {
		const lmk_arc_example *b[1024];
		lmk_arctrain_stats ts;
		int n = 0;
		char extra[64];
		double t1 = lmk_now();

		if (r.pos >= ex.n) {
			r.epoch++;
			r.pos = 0;
			make_epoch(&r, &s, r.epoch, &ex, &perm);
		}
		/* a batch does not cross epochs: the last of one may be short */
		while (n < o->batch && r.pos < ex.n)
			b[n++] = &ex.ex[perm[r.pos++]];
		if (lmk_arctrain_step(&r.tr, b, n, &ts) < 0) {
			lmk_progress_end(&pg);
			prog_die_lib();
		}
		sum += ts.loss;
		nsum++;
		lmk_metrics_begin(&mt);
		lmk_metrics_int(&mt, "step", r.tr.step);
		lmk_metrics_int(&mt, "epoch", r.epoch);
		lmk_metrics_num(&mt, "loss", ts.loss);
		lmk_metrics_num(&mt, "lr", ts.lr);
		lmk_metrics_num(&mt, "grad_norm", ts.grad_norm);
		lmk_metrics_int(&mt, "targets", ts.targets);
		lmk_metrics_num(&mt, "tokens_per_s", (double)ts.tokens / (lmk_now() - t1));
		lmk_metrics_num(&mt, "real_tokens_per_s", (double)ts.real / (lmk_now() - t1));
		lmk_metrics_num(&mt, "elapsed", r.elapsed + lmk_now() - r.t0);
		if (lmk_metrics_end(&mt) < 0)
			prog_die_lib();
		snprintf(extra, sizeof extra, "loss %.4f", ts.loss);
		lmk_progress_update(&pg, r.tr.step, extra);
		sig = lmk_train_signal();
		stop = o->time_limit > 0 && lmk_now() - r.t0 >= o->time_limit;
		if (r.tr.step == o->steps || sig || stop ||
		    (o->save_every && r.tr.step % o->save_every == 0)) {
			pretrain_save(&r);
			lmk_progress_end(&pg);
			if (!o->quiet)
				fprintf(stderr, "%s: step %" PRId64 "/%" PRId64 ": loss %.4f, lr %.3g, %s; "
					"saved in %s\n", prog_name(), r.tr.step, o->steps, sum / (double)nsum,
					ts.lr, hms(b1, sizeof b1, r.elapsed + lmk_now() - r.t0), o->dir);
			sum = 0;
			nsum = 0;
		}
		if (sig || stop)
			break;
	}
	lmk_progress_end(&pg);
	if (lmk_metrics_close(&mt) < 0)
		prog_die_lib();
	if (sig || stop) {
		if (!o->quiet)
			fprintf(stderr, "%s: stopped by %s after step %" PRId64 "; continue with --resume\n",
				prog_name(), sig ? "a signal" : "--time-limit", r.tr.step);
		exit(sig ? 128 + sig : EXIT_AGAIN);
	}
done:
	lmk_arc_examples_free(&ex);
	free(perm);
	lmk_arctrain_free(&r.tr);
	lmk_lora_free(&r.ad); /* parameters before the context */
	free_model(&r.md);
	lmk_ctx_free(&r.c);
	lmk_arc_set_free(&s);
	lmk_frame_free(&r.saved);
	free(state);
	return 0;
}
/* ---- ttt and predict ---- */

/* Room for the byte length of grid g's text under any symmetry. */
static int grid_bound(const lmk_arc_grid *g)
{
	int a = g->h * (g->w + 1), b = g->w * (g->h + 1);
	return a > b ? a : b;
}

/* *out = t with its largest demonstrations left out until the prompt of
 * test input k and an answer as large as the largest grid it has seen fit
 * in max_len tokens (counted as bytes: no token is shorter), keeping one.
 * @return : the number left out */
static int fit_task(const lmk_arc_task *t, int k, int max_len, lmk_arc_task *out)
{
	int dropped = 0;

	if (lmk_arc_task_copy(out, t) < 0)
		prog_die_lib();
	for (;;) {
		int answer = grid_bound(&t->test[k].in), need, big = 0;
		for (int i = 0; i < out->ntrain; i++)
			if (grid_bound(&out->train[i].out) > answer)
				answer = grid_bound(&out->train[i].out);
		need = 1 + 2 + grid_bound(&t->test[k].in) + 2 + answer + 3;
		for (int i = 0; i < out->ntrain; i++) {
			const lmk_arc_pair *p = &out->train[i];
			need += 2 + grid_bound(&p->in) + 2 + grid_bound(&p->out) + 2;
			if (grid_bound(&p->in) + grid_bound(&p->out) >
			    grid_bound(&out->train[big].in) + grid_bound(&out->train[big].out))
				big = i;
		}
		if (need <= max_len || out->ntrain <= 1)
			return dropped;
		memmove(&out->train[big], &out->train[big + 1],
			(size_t)(out->ntrain - big - 1) * sizeof out->train[0]);
		out->ntrain--;
		dropped++;
	}
}

struct session {
	struct opts *o;
	struct model md;
	lmk_lora ad;            /* the adapter each task trains or reads */
	int has_adapter;
	lmk_ctx c;
	lmk_arctrain_predictor pred;
	lmk_arc_sub sub;        /* tasks done, in order */
	lmk_metrics mt;
	int64_t shortened;      /* prompts that lost demonstrations */
	double nll;             /* -log p of the known test outputs (nats) */
	int64_t ntok;           /* ... over this many tokens */
	float *base;            /* the base's weights, to undo a merge */
};

/* The loss of test output k of ft, when known, given its prompt (teacher
 * forcing): added to *nll (nats) over *ntok tokens (the output, its end
 * marker and eos). A measure that moves long before a small model solves
 * a task, so that with and without test-time training can be told apart. */
static void target_nll(struct session *r, const lmk_arc_task *ft, int k, double *nll,
		       int64_t *ntok)
{
	lmk_arc_example_opts eo = example_opts(&r->md, r->o);
	lmk_arc_examples ex = {0};
	lmk_ctx *c = &r->c;
	int32_t *ids = NULL, *tgt = NULL;
	size_t cap = 0;
	int64_t count;
	float v;

	if (!ft->test[k].out.h)
		return;
	eo.all_outputs = 0;
	eo.max_len = 0;
	if (lmk_arc_examples_add(&ex, ft, 1, &eo) < 0)
		prog_die_lib();
	for (int i = 0; i < ex.n; i++) {
		if (ex.ex[i].test != k)
			continue;
		const lmk_arc_example *e = &ex.ex[i];
		int T = lmk_arctrain_batch(&e, 1, &ids, &tgt, &cap);
		if (T < 0)
			prog_die_lib();
		lmk_ctx_reset(c);
		c->grad_enabled = 0;
		lmk_tensor *l = lmk_arctrain_loss(c, &r->md.m, ids, tgt, 1, T, NULL, &count);
		if (!l || lmk_tensor_read_f32(c, l, 0, &v) < 0)
			prog_die("task %s: %s", ft->id, lmk_errmsg());
		lmk_ctx_reset(c);
		c->grad_enabled = 1;
		*nll += (double)v * (double)count;
		*ntok += count;
	}
	free(ids);
	free(tgt);
	lmk_arc_examples_free(&ex);
}

/* Predictions for each test input of t into a new entry of r->sub, and the
 * loss of its known outputs. */
static void predict_task(struct session *r, const lmk_arc_task *t, double *nll, int64_t *ntok)
{
	const struct opts *o = r->o;
	int idx = lmk_arc_sub_add(&r->sub, t->id, t->ntest);
	lmk_arc_tf *tfs = malloc((size_t)8 * o->per_class * sizeof *tfs);

	if (idx < 0)
		prog_die_lib();
	if (!tfs)
		prog_die("out of memory");
	for (int k = 0; k < t->ntest; k++) {
		lmk_arc_task ft;
		lmk_arc_grid best[2];
		lmk_rng rng;
		if (fit_task(t, k, o->max_len, &ft))
			r->shortened++;
		lmk_rng_init(&rng, task_seed(o->seed, t->id, 0x9000 + (uint64_t)k));
		int ntf = lmk_arc_tf_plan(tfs, 8 * o->per_class, ft.ntrain, o->per_class,
					  aug_flags(o), &rng);
		if (lmk_arc_predict_batch(&ft, k, tfs, ntf, lmk_arctrain_predict, &r->pred, best) < 0)
			prog_die("task %s: %s", t->id, lmk_errmsg());
		r->sub.t[idx].att[2 * k] = best[0];
		r->sub.t[idx].att[2 * k + 1] = best[1];
		target_nll(r, &ft, k, nll, ntok);
		lmk_arc_task_free(&ft);
	}
	r->nll += *nll;
	r->ntok += *ntok;
	free(tfs);
}

/* predict_task with adapter a (NULL: the model as it is). The adapter is
 * merged into the weights first (W += s B A) and the base's weights put
 * back after: the same model, without two more matrix products per
 * adapted layer for each generated token. */
static void predict_adapted(struct session *r, const lmk_arc_task *t, lmk_lora *a, double *nll,
			    int64_t *ntok)
{
	lmk_params *p = &r->md.m.params;

	r->md.m.lora = NULL;
	if (!a) {
		predict_task(r, t, nll, ntok);
		return;
	}
	if (!r->base) {
		if (!(r->base = malloc(p->n * sizeof *r->base)))
			prog_die("out of memory (a copy of the weights)");
		if (lmk_params_copy_to_host(p, 0, r->base) < 0)
			prog_die_lib();
	}
	if (lmk_lora_merge(a, 0, 0) < 0)
		prog_die_lib();
	predict_task(r, t, nll, ntok);
	if (lmk_params_copy_from_host(p, r->base) < 0)
		prog_die_lib();
}

/* The loss of the known outputs in a task's metrics line. */
static void metrics_nll(lmk_metrics *mt, double nll, int64_t ntok)
{
	if (!ntok)
		return;
	lmk_metrics_num(mt, "target_nll", nll);
	lmk_metrics_int(mt, "target_tokens", ntok);
}

/* The submission so far: with --resume the entries of an earlier call
 * (marked done), else nothing. */
static void sub_start(struct session *r, const lmk_arc_set *s, uint8_t *done)
{
	const struct opts *o = r->o;
	lmk_arc_sub old;
	struct stat sb;

	memset(&r->sub, 0, sizeof r->sub);
	if (!o->resume || strcmp(o->out, "-") == 0 || stat(o->out, &sb) != 0)
		return;
	if (lmk_arc_sub_read(&old, o->out) < 0)
		prog_die_lib();
	for (int i = 0; i < old.n; i++) {
		const lmk_arc_task *t = lmk_arc_set_find(s, old.t[i].id);
		int idx;
		if (!t || old.t[i].ntest != t->ntest)
			prog_die("%s: task %s is not one of TASKS, or has other test inputs (--resume "
				 "continues a run over the same TASKS)", o->out, old.t[i].id);
		if ((idx = lmk_arc_sub_add(&r->sub, old.t[i].id, old.t[i].ntest)) < 0)
			prog_die_lib();
		memcpy(r->sub.t[idx].att, old.t[i].att, 2 * (size_t)t->ntest * sizeof *old.t[i].att);
		done[t - s->t] = 1;
	}
	lmk_arc_sub_free(&old);
}

/* The session's model on its device, and the adapter: for ttt a fresh
 * LoRA of --adapter, for predict --adapters the first task's, whose
 * settings all the others must share. */
static void session_start(struct session *r, const lmk_arc_set *s, int train)
{
	struct opts *o = r->o;

	load_model(&r->md, o->model, 0);
	if (train) {
		lmk_lora_config lc;
		lmk_lora_config_default(&lc);
		lc.r = 32;
		lc.alpha = 32;
		snprintf(lc.targets, sizeof lc.targets, "q,k,v,o,gate,up,down");
		if (o->adapter && lmk_lora_config_parse(&lc, o->adapter) < 0)
			prog_usage_error("option '--adapter': %s", lmk_errmsg());
		if (lc.onesided)
			prog_usage_error("option '--adapter': ttt-arc trains two-sided LoRA only");
		if (lmk_lora_init(&r->ad, &lc, &r->md.m.params, 0) < 0)
			prog_die_lib();
		r->has_adapter = 1;
	} else if (o->adapters) {
		for (int i = 0; i < s->n && !r->has_adapter; i++) {
			char *d = join(o->adapters, s->t[i].id);
			if (wanted(o, s->t[i].id) && has_file(d, "adapter_config.json")) {
				if (lmk_lora_load(&r->ad, d, &r->md.m.params) < 0)
					prog_die_lib();
				r->has_adapter = 1;
			}
			free(d);
		}
		if (!r->has_adapter)
			prog_die("%s: no adapter for any of the tasks (expected %s/ID/adapter_config.json)",
				 o->adapters, o->adapters);
	}
	device_setup(o, &r->c);
	if (lmk_params_to_device(&r->md.m.params, &r->c) < 0 ||
	    (r->has_adapter && lmk_params_to_device(&r->ad.params, &r->c) < 0))
		prog_die_lib();
	r->pred = (lmk_arctrain_predictor){.c = &r->c, .m = &r->md.m, .tok = &r->md.tok,
					   .max_len = o->max_len};
	if (lmk_metrics_open(&r->mt, o->metrics) < 0 || lmk_train_catch_signals() < 0)
		prog_die_lib();
}

static void session_end(struct session *r)
{
	if (lmk_metrics_close(&r->mt) < 0)
		prog_die_lib();
	lmk_arc_sub_free(&r->sub);
	free(r->base);
	if (r->has_adapter)
		lmk_lora_free(&r->ad); /* parameters before the context */
	free_model(&r->md);
	lmk_ctx_free(&r->c);
}

/* Test-time training of task t: a fresh adapter trained for --epochs on
 * its leave-one-out tasks. @return : the number of examples (0: nothing
 * to train on, the adapter is the model unchanged) */
static int ttt_task(struct session *r, const lmk_arc_task *t, lmk_arctrain_stats *first,
		    lmk_arctrain_stats *last, int64_t *steps, int *dropped)
{
	const struct opts *o = r->o;
	uint64_t seed = task_seed(o->seed, t->id, 0);
	lmk_arctrain_data d = {.loo = o->cap, .aug = -1, .flags = aug_flags(o), .seed = seed};
	lmk_arc_example_opts eo = example_opts(&r->md, o);
	lmk_arc_examples ex = {0};
	lmk_arctrain_config cfg;
	lmk_arctrain tr;
	int *perm;

	if (lmk_arctrain_lora_reset(&r->ad, seed) < 0)
		prog_die_lib();
	*steps = 0;
	*dropped = 0;
	if (t->ntrain < 2)
		return 0; /* no demonstration to hold out */
	if (lmk_arctrain_epoch(&ex, t, 1, &d, 0, &eo) < 0)
		prog_die_lib();
	*dropped = ex.dropped;
	if (ex.n == 0) {
		lmk_arc_examples_free(&ex);
		return 0;
	}
	lmk_arctrain_config_default(&cfg);
	cfg.batch = o->batch;
	cfg.lr = (float)o->lr;
	cfg.min_lr = (float)o->min_lr;
	cfg.warmup = o->warmup;
	cfg.total = (int64_t)o->epochs * ((ex.n + o->batch - 1) / o->batch);
	cfg.weight_decay = (float)o->wd;
	cfg.grad_clip = (float)o->clip;
	r->md.m.lora = &r->ad;
	if (!(perm = malloc((size_t)ex.n * sizeof *perm)))
		prog_die("out of memory");
	if (lmk_arctrain_init(&tr, &cfg, &r->c, &r->md.m, &r->ad.params) < 0)
		prog_die_lib();
	for (int e = 0; e < o->epochs; e++) {
		lmk_arctrain_order(perm, ex.n, seed, e);
		for (int i = 0; i < ex.n; i += o->batch) {
			const lmk_arc_example *b[1024];
			int n = 0;
			while (n < o->batch && i + n < ex.n) {
				b[n] = &ex.ex[perm[i + n]];
				n++;
			}
			if (lmk_arctrain_step(&tr, b, n, last) < 0)
				prog_die("task %s: %s", t->id, lmk_errmsg());
			if (tr.step == 1)
				*first = *last;
		}
	}
	*steps = tr.step;
	lmk_arctrain_free(&tr);
	free(perm);
	int n = ex.n;
	lmk_arc_examples_free(&ex);
	return n;
}

static void write_sub(struct session *r)
{
	if (strcmp(r->o->out, "-") != 0 && lmk_arc_sub_write(&r->sub, r->o->out) < 0)
		prog_die_lib();
}

/* The end of ttt and predict: the submission, and the word on stderr. */
static int finish(struct session *r, int has_sub, int done, int todo, int sig, int stop,
		  double t0, const char *what)
{
	char b[32];

	/* a file was written after each task; standard output only now */
	if (has_sub && strcmp(r->o->out, "-") == 0 && lmk_arc_sub_write(&r->sub, "-") < 0)
		prog_die_lib();
	if (!r->o->quiet) {
		fprintf(stderr, "%s: %s %d of %d tasks in %s, %" PRId64 " tokens generated", prog_name(),
			what, done, todo, hms(b, sizeof b, lmk_now() - t0), r->pred.tokens);
		if (r->shortened)
			fprintf(stderr, ", %" PRId64 " prompts without some demonstrations", r->shortened);
		if (r->pred.nlong)
			fprintf(stderr, ", %d prompts too long for --max-len", r->pred.nlong);
		if (r->ntok)
			fprintf(stderr, "; loss of the known outputs %.4f per token", r->nll / (double)r->ntok);
		fputc('\n', stderr);
		if (sig || stop)
			fprintf(stderr, "%s: stopped by %s; continue with --resume\n", prog_name(),
				sig ? "a signal" : "--time-limit");
	}
	return sig ? 128 + sig : stop ? EXIT_AGAIN : 0;
}

static int cmd_ttt(int argc, char **argv, struct opts *o)
{
	struct session r = {.o = o};
	lmk_arc_set s;
	uint8_t *done;
	int ndone = 0, ntodo = 0, sig = 0, stop = 0, rc;
	double t0 = lmk_now();

	if (!o->model)
		prog_usage_error("'ttt' needs --model MODEL, the model to adapt");
	if (!o->adapter_out && !o->predict)
		prog_usage_error("'ttt' needs --adapter-out DIR or --predict (else nothing is kept)");
	if ((o->given & F(B_OUTPUT)) && !o->predict)
		prog_usage_error("option '-o' is for the submission of 'ttt --predict'");
	device_check(o);
	load_work(&s, argv[0], o);
	if (!(done = calloc((size_t)s.n + 1, 1)))
		prog_die("out of memory");
	if (o->predict)
		sub_start(&r, &s, done);
	for (int i = 0; i < s.n; i++)
		ntodo += wanted(o, s.t[i].id);
	session_start(&r, &s, 1);
	for (int i = 0; i < s.n; i++) {
		const lmk_arc_task *t = &s.t[i];
		char *dir = o->adapter_out ? join(o->adapter_out, t->id) : NULL;
		if (!wanted(o, t->id)) {
			free(dir);
			continue;
		}
		if (o->resume && !o->predict && has_file(dir, "adapter_model.safetensors"))
			done[i] = 1;
		if (done[i]) {
			free(dir);
			continue;
		}
		/* one task at least, so that every call makes progress */
		if ((sig = lmk_train_signal()) ||
		    (stop = ndone && o->time_limit > 0 && lmk_now() - t0 >= o->time_limit)) {
			free(dir);
			break;
		}
		lmk_arctrain_stats first = {0}, last = {0};
		int64_t steps;
		int dropped;
		double t1 = lmk_now();
		int n = ttt_task(&r, t, &first, &last, &steps, &dropped);
		if (dir && n > 0 && lmk_lora_save(&r.ad, dir, o->model) < 0)
			prog_die_lib();
		double nll = 0, t2 = lmk_now();
		int64_t ntok = 0, tok0 = r.pred.tokens;
		if (o->predict) {
			predict_adapted(&r, t, n > 0 ? &r.ad : NULL, &nll, &ntok);
			write_sub(&r);
		}
		r.md.m.lora = NULL;
		ndone++;
		lmk_metrics_begin(&r.mt);
		lmk_metrics_str(&r.mt, "task", t->id);
		lmk_metrics_int(&r.mt, "examples", n);
		lmk_metrics_int(&r.mt, "dropped", dropped);
		lmk_metrics_int(&r.mt, "steps", steps);
		lmk_metrics_num(&r.mt, "first_loss", n ? first.loss : NAN);
		lmk_metrics_num(&r.mt, "last_loss", n ? last.loss : NAN);
		lmk_metrics_num(&r.mt, "train_seconds", t2 - t1);
		if (o->predict)
			lmk_metrics_int(&r.mt, "tokens", r.pred.tokens - tok0);
		lmk_metrics_num(&r.mt, "seconds", lmk_now() - t1);
		metrics_nll(&r.mt, nll, ntok);
		if (lmk_metrics_end(&r.mt) < 0)
			prog_die_lib();
		if (!o->quiet && n > 0)
			fprintf(stderr, "%s: task %s: %d examples, %" PRId64 " steps, loss %.4f -> %.4f, "
				"%.1f s\n", prog_name(), t->id, n, steps, first.loss, last.loss,
				lmk_now() - t1);
		else if (!o->quiet)
			fprintf(stderr, "%s: task %s: nothing to train on (%s); the model as it is\n",
				prog_name(), t->id, t->ntrain < 2 ? "one demonstration" :
				"every example longer than --max-len");
		free(dir);
	}
	rc = finish(&r, o->predict, ndone, ntodo, sig, stop, t0, "trained");
	session_end(&r);
	free(done);
	lmk_arc_set_free(&s);
	return rc;
}

static int cmd_predict(int argc, char **argv, struct opts *o)
{
	struct session r = {.o = o};
	lmk_arc_set s;
	uint8_t *done;
	int ndone = 0, ntodo = 0, sig = 0, stop = 0, rc;
	double t0 = lmk_now();

	if (!o->model)
		prog_usage_error("'predict' needs --model MODEL");
	if (!(o->given & F(B_OUTPUT)))
		prog_usage_error("'predict' needs -o SUBMISSION ('-': standard output)");
	device_check(o);
	load_work(&s, argv[0], o);
	if (!(done = calloc((size_t)s.n + 1, 1)))
		prog_die("out of memory");
	sub_start(&r, &s, done);
	for (int i = 0; i < s.n; i++)
		ntodo += wanted(o, s.t[i].id);
	session_start(&r, &s, 0);
	for (int i = 0; i < s.n; i++) {
		const lmk_arc_task *t = &s.t[i];
		if (!wanted(o, t->id))
			continue;
		if (done[i])
			continue;
		if ((sig = lmk_train_signal()) ||
		    (stop = ndone && o->time_limit > 0 && lmk_now() - t0 >= o->time_limit))
			break;
		lmk_lora *ad = NULL;
		if (o->adapters) {
			char *d = join(o->adapters, t->id);
			if (has_file(d, "adapter_model.safetensors")) {
				if (lmk_arctrain_lora_read(&r.ad, d) < 0)
					prog_die_lib();
				ad = &r.ad;
			} else {
				prog_warn("task %s: no adapter in %s: the model as it is", t->id, d);
			}
			free(d);
		}
		double t1 = lmk_now();
		int64_t tok0 = r.pred.tokens;
		double nll = 0;
		int64_t ntok = 0;
		predict_adapted(&r, t, ad, &nll, &ntok);
		write_sub(&r);
		ndone++;
		lmk_metrics_begin(&r.mt);
		lmk_metrics_str(&r.mt, "task", t->id);
		lmk_metrics_int(&r.mt, "tokens", r.pred.tokens - tok0);
		lmk_metrics_num(&r.mt, "seconds", lmk_now() - t1);
		metrics_nll(&r.mt, nll, ntok);
		if (lmk_metrics_end(&r.mt) < 0)
			prog_die_lib();
	}
	rc = finish(&r, 1, ndone, ntodo, sig, stop, t0, "predicted");
	session_end(&r);
	free(done);
	lmk_arc_set_free(&s);
	return rc;
}

static int cmd_help(int argc, char **argv, struct opts *o)
{
	prog_help();
}

/* Options of the model commands. */
#define F_DEVICE (F(B_DEVICE) | F(B_DTYPE) | F(B_THREADS))
#define F_TRAIN (F(B_BATCH) | F(B_LR) | F(B_MIN_LR) | F(B_WARMUP) | F(B_WD) | F(B_CLIP) | \
		 F(B_LOSS) | F(B_CAP) | F(B_ADAPTER) | F(B_KEEP0) | F(B_SEED))
#define F_RUN (F(B_MAX_LEN) | F(B_RESUME) | F(B_TIME_LIMIT) | F(B_METRICS) | F(B_TASK) | \
	       F(B_SOLUTIONS) | F_DEVICE)
#define F_PRED (F(B_MODEL) | F(B_PER_CLASS) | F(B_OUTPUT) | F(B_KEEP0) | F(B_SEED))

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv, struct opts *o);
	int minargs, maxargs;   /* operands; -1: any number */
	uint64_t allowed;
	const char *need;       /* what too few operands lack */
} commands[] = {
	{"check", cmd_check, 1, -1, 0, "TASKS"},
	{"format", cmd_format, 1, 1,
	 F(B_OUTPUT) | F(B_SOLUTIONS) | F(B_TASK) | F(B_LOO) | F(B_AUGMENT) | F(B_KEEP0) |
	 F(B_SEED) | F(B_JSON), "TASKS"},
	{"score", cmd_score, 2, 2, F(B_OUTPUT) | F(B_SOLUTIONS) | F(B_JSON),
	 "SUBMISSION and SOLUTIONS"},
	{"pretrain", cmd_pretrain, 0, 1,
	 F_RUN | F_TRAIN | F(B_OUT) | F(B_INIT) | F(B_HIDDEN) | F(B_LAYERS) | F(B_HEADS) |
	 F(B_INTERMEDIATE) | F(B_STEPS) | F(B_AUGMENT) | F(B_SAVE_EVERY) | F(B_GROUP), "TASKS"},
	{"ttt", cmd_ttt, 1, 1, F_RUN | F_TRAIN | F_PRED | F(B_EPOCHS) | F(B_ADAPTER_OUT) |
	 F(B_PREDICT), "TASKS"},
	{"predict", cmd_predict, 1, 1, F_RUN | F_PRED | F(B_ADAPTERS), "TASKS"},
	{"help", cmd_help, 0, -1, 0, NULL},
};

/* One option's value onto o (also the saved values of a resumed run). */
static void set_option(struct opts *o, int c, const char *a)
{
	switch (c) {
	case 'o': o->out = a; break;
	case OPT_SOLUTIONS: o->solutions = a; break;
	case OPT_TASK: o->task[o->ntask++] = a; break;
	case OPT_LOO: o->loo = 1; break;
	case OPT_AUGMENT: o->augment = prog_parse_long("--augment", a, 0, 1000000); break;
	case OPT_KEEP0: o->keep0 = 1; break;
	case PROG_OPT_SEED: o->seed = prog_parse_seed(a); break;
	case OPT_JSON: o->json = 1; break;
	case OPT_OUT: o->dir = a; break;
	case OPT_INIT: o->init = a; break;
	case OPT_HIDDEN: o->hidden = (int)prog_parse_long("--hidden", a, 1, 1 << 16); break;
	case OPT_LAYERS: o->layers = (int)prog_parse_long("--layers", a, 1, 1024); break;
	case OPT_HEADS: o->heads = (int)prog_parse_long("--heads", a, 1, 1024); break;
	case OPT_INTERMEDIATE:
		o->intermediate = (int)prog_parse_long("--intermediate", a, 1, 1 << 20);
		break;
	case OPT_ADAPTER: {
		lmk_lora_config lc;
		lmk_lora_config_default(&lc);
		if (lmk_lora_config_parse(&lc, a) < 0)
			prog_usage_error("option '--adapter': %s", lmk_errmsg());
		o->adapter = a;
		break;
	}
	case OPT_STEPS: o->steps = prog_parse_long("--steps", a, 0, 1L << 40); break;
	case OPT_EPOCHS: o->epochs = (int)prog_parse_long("--epochs", a, 1, 1000000); break;
	case OPT_CAP: o->cap = (int)prog_parse_long("--cap", a, 0, 1000000); break;
	case OPT_BATCH: o->batch = (int)prog_parse_long("--batch", a, 1, 1024); break;
	case OPT_GROUP: o->group = (int)prog_parse_long("--group", a, 0, 1 << 20); break;
	case OPT_LR: o->lr = prog_parse_double("--lr", a, 0, 10); break;
	case OPT_MIN_LR: o->min_lr = prog_parse_double("--min-lr", a, 0, 10); break;
	case OPT_WARMUP: o->warmup = prog_parse_long("--warmup", a, 0, 1L << 40); break;
	case OPT_WD: o->wd = prog_parse_double("--weight-decay", a, 0, 100); break;
	case OPT_CLIP: o->clip = prog_parse_double("--grad-clip", a, 0, 1e9); break;
	case OPT_LOSS:
		for (o->loss = 0; o->loss < 3 && strcmp(a, lossname[o->loss]); o->loss++)
			;
		if (o->loss == 3)
			prog_usage_error("option '--loss' needs target, outputs or all, not '%s'", a);
		break;
	case OPT_MAX_LEN: o->max_len = (int)prog_parse_long("--max-len", a, 16, 1 << 24); break;
	case OPT_RESUME: o->resume = 1; break;
	case OPT_SAVE_EVERY: o->save_every = prog_parse_long("--save-every", a, 0, 1L << 40); break;
	case OPT_TIME_LIMIT: o->time_limit = prog_parse_double("--time-limit", a, 0, 1e9); break;
	case OPT_METRICS: o->metrics = a; break;
	case OPT_MODEL: o->model = a; break;
	case OPT_ADAPTER_OUT: o->adapter_out = a; break;
	case OPT_PREDICT: o->predict = 1; break;
	case OPT_ADAPTERS: o->adapters = a; break;
	case OPT_PER_CLASS: o->per_class = (int)prog_parse_long("--per-class", a, 1, 1000); break;
	case OPT_DEVICE:
		if (lmk_train_parse_device(a, &o->device, &o->device_index) < 0)
			prog_usage_error("option '--device' needs cpu, cuda or cuda:N, not '%s'", a);
		o->device_arg = a;
		break;
	case OPT_DTYPE:
		if (lmk_train_parse_dtype(a, &o->dtype) < 0)
			prog_usage_error("option '--dtype' needs f32 or bf16, not '%s'", a);
		break;
	case OPT_THREADS: o->threads = (int)prog_parse_long("--threads", a, 1, 4096); break;
	}
}

/* The defaults of the commands that differ: ttt's are the paper's test-
 * time training scaled to small models (see the man page). */
static void defaults(struct opts *o, const char *cmd)
{
	int ttt = strcmp(cmd, "pretrain") != 0;
	if (!(o->given & F(B_AUGMENT)) && !ttt && strcmp(cmd, "format"))
		o->augment = 4;
	if (!(o->given & F(B_CAP)))
		o->cap = ttt ? 250 : 4;
	if (!(o->given & F(B_BATCH)))
		o->batch = ttt ? 2 : 8;
	if (!(o->given & F(B_LR)))
		o->lr = 1e-4;
	if (!(o->given & F(B_DTYPE)))
		o->dtype = lmk_train_default_dtype(o->device);
}

int main(int argc, char **argv)
{
	struct opts o = {
		.out = "-", .steps = 1000, .epochs = 2, .clip = 1, .loss = LOSS_OUTPUTS,
		.max_len = 8192, .save_every = 200, .per_class = 1, .hidden = 256, .layers = 4,
		.group = 32,
		.heads = 4, .device = LMK_DEV_CPU, .dtype = LMK_F32,
	};
	/* static: still reachable when a usage error exits, so that the leak
	 * checker of sanitizer builds does not count them */
	static char **pos;
	static const char **task;
	int npos = 0, c, cur;
	const struct command *cmd = NULL;

	prog_init("ttt-arc", usage);
	if (!(pos = calloc((size_t)argc + 1, sizeof *pos)) ||
	    !(task = calloc((size_t)argc + 1, sizeof *task)))
		prog_die("out of memory");
	o.task = task;
	/* "-" first: operands come back in order as 1, so options may follow
	 * the command and its files whatever POSIXLY_CORRECT says. */
	for (;;) {
		cur = optind;
		c = getopt_long(argc, argv, "-:o:qh", longopts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 1: pos[npos++] = optarg; continue;
		case 'q': o.quiet = 1; prog_set_quiet(1); continue;
		case 'h': prog_help();
		case PROG_OPT_VERSION: prog_version();
		case ':': case '?': prog_bad_option(longopts, c, argv[cur < argc ? cur : argc - 1]);
		}
		int b = c == 'o' ? B_OUTPUT : option_bit(c);
		if (b < 0)
			prog_bad_option(longopts, '?', argv[cur < argc ? cur : argc - 1]);
		set_option(&o, c, optarg);
		o.given |= F(b);
	}
	while (optind < argc)
		pos[npos++] = argv[optind++];
	if (npos == 0)
		prog_usage_error("missing command");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(pos[0], commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd)
		prog_usage_error("unknown command '%s'", pos[0]);
	if (cmd->run == cmd_help)
		prog_help();
	for (int b = 0; b < B_COUNT; b++)
		if ((o.given & F(b)) && !(cmd->allowed & F(b)))
			prog_usage_error("option '%s' does not apply to '%s'", flagname[b], cmd->name);
	npos--;
	if (npos < cmd->minargs)
		prog_usage_error("'%s' needs %s", cmd->name, cmd->need);
	if (cmd->maxargs >= 0 && npos > cmd->maxargs)
		prog_usage_error("too many arguments for '%s'", cmd->name);
	defaults(&o, cmd->name);
	if (o.dtype == LMK_BF16 && o.device != LMK_DEV_CUDA)
		prog_usage_error("--dtype bf16 needs --device cuda (the cpu computes in f32)");
	if (o.hidden % o.heads)
		prog_usage_error("--hidden %d is not a multiple of --heads %d", o.hidden, o.heads);
	if (o.init && (o.given & (F(B_HIDDEN) | F(B_LAYERS) | F(B_HEADS) | F(B_INTERMEDIATE))))
		prog_usage_error("the shape options make a new model; --init starts from %s", o.init);
	if ((o.given & F(B_ADAPTER)) && !o.init && strcmp(cmd->name, "pretrain") == 0 && !o.resume)
		prog_usage_error("--adapter needs --init MODEL, the model to adapt");
	if (o.resume && strcmp(o.out, "-") == 0 &&
	    (strcmp(cmd->name, "predict") == 0 || (o.predict && strcmp(cmd->name, "ttt") == 0)))
		prog_usage_error("--resume needs -o FILE, the submission to continue");
	c = cmd->run(npos, pos + 1, &o);
	free(pos);
	free(task);
	return c;
}
