/* ttt-arc.c: test-time training on ARC tasks ("The Surprising Effectiveness
 * of Test-Time Training for Few-Shot Learning", Akyürek et al. 2024), one
 * git-style command per step over lib/arc.h. The data commands: check
 * (validate task files), format (the text a language model sees, plain,
 * leave-one-out or augmented) and score (pass@2 of a Kaggle submission).
 * A command is a function and one entry in the table `commands`, with the
 * options it accepts; its lines go into the usage text. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "arc.h"
#include "err.h"
#include "prog.h"
#include "rng.h"

static const char usage[] =
"usage: ttt-arc COMMAND [OPTION...] [ARG...]\n"
"ARC tasks for test-time training of language models (Akyurek et al. 2024).\n"
"TASKS is a folder of task files (ID.json), one task file, or Kaggle's\n"
"combined *_challenges.json or *_solutions.json ('-': standard input).\n"
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
"  help                this text\n"
"\n"
"Options:\n"
"  -o, --output=FILE   write to FILE ('-', the default: standard output)\n"
"      --solutions=FILE  test outputs for TASKS or SOLUTIONS, from a\n"
"                      *_solutions.json (format, score)\n"
"      --task=ID       only task ID; may be given again (format)\n"
"      --loo           leave-one-out: each demonstration in turn is the\n"
"                      one to predict from the others (format)\n"
"      --augment=N     after each text, N more of the task transformed by\n"
"                      a random symmetry, colour permutation and order of\n"
"                      demonstrations (format; default 0)\n"
"      --keep-zero     colour permutations keep colour 0 (format)\n"
"      --seed=N        seed of the augmentations (format; default 0)\n"
"      --json          format: one JSON object per text; score: the\n"
"                      summary as a last JSON line on stdout\n"
"  -q, --quiet         no warnings, no summary or counts\n"
"  -h, --help          this text\n"
"      --version       the program's version\n"
"\n"
"Exit status: 0 success, 1 failure or (check) a bad task, 2 usage error.\n";

enum {
	OPT_SOLUTIONS = PROG_OPT_FIRST_FREE, OPT_TASK, OPT_LOO, OPT_AUGMENT, OPT_KEEP0, OPT_JSON,
};

/* Bits of options given, to refuse those a command does not use. */
enum {
	F_OUTPUT = 1 << 0, F_SOLUTIONS = 1 << 1, F_TASK = 1 << 2, F_LOO = 1 << 3,
	F_AUGMENT = 1 << 4, F_KEEP0 = 1 << 5, F_SEED = 1 << 6, F_JSON = 1 << 7,
};

static const char *const flagname[] = {
	"--output", "--solutions", "--task", "--loo", "--augment", "--keep-zero", "--seed", "--json",
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
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, PROG_OPT_VERSION},
	{NULL, 0, NULL, 0},
};

struct opts {
	const char *out, *solutions;
	const char **task;
	int ntask;
	int loo, keep0, json, quiet;
	long augment;
	uint64_t seed;
	unsigned given;
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

static int cmd_check(int argc, char **argv, const struct opts *o)
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

static int cmd_format(int argc, char **argv, const struct opts *o)
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

static int cmd_score(int argc, char **argv, const struct opts *o)
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
		put_json(out, j);
	} else if (!o->quiet) {
		fprintf(stderr, "%s: %d tasks, %d solved (%.2f%%); %d test inputs, %d solved "
			"(%.2f%%); score %.4f; %d tasks missing\n", prog_name(), tot.tasks,
			tot.tasks_solved, tot.tasks ? 100.0 * tot.tasks_solved / tot.tasks : 0.0,
			tot.tests, tot.tests_solved,
			tot.tests ? 100.0 * tot.tests_solved / tot.tests : 0.0, tot.kaggle, tot.missing);
	}
	text_close(out, o->out);
	free(per);
	lmk_arc_set_free(&truth);
	lmk_arc_sub_free(&sub);
	return 0;
}

static int cmd_help(int argc, char **argv, const struct opts *o)
{
	prog_help();
}

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv, const struct opts *o);
	int minargs, maxargs;   /* operands; -1: any number */
	unsigned allowed;
	const char *need;       /* what too few operands lack */
} commands[] = {
	{"check", cmd_check, 1, -1, 0, "TASKS"},
	{"format", cmd_format, 1, 1,
	 F_OUTPUT | F_SOLUTIONS | F_TASK | F_LOO | F_AUGMENT | F_KEEP0 | F_SEED | F_JSON, "TASKS"},
	{"score", cmd_score, 2, 2, F_OUTPUT | F_SOLUTIONS | F_JSON, "SUBMISSION and SOLUTIONS"},
	{"help", cmd_help, 0, -1, 0, NULL},
};

int main(int argc, char **argv)
{
	struct opts o = {.out = "-"};
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
		case 1: pos[npos++] = optarg; break;
		case 'o': o.out = optarg; o.given |= F_OUTPUT; break;
		case OPT_SOLUTIONS: o.solutions = optarg; o.given |= F_SOLUTIONS; break;
		case OPT_TASK: task[o.ntask++] = optarg; o.given |= F_TASK; break;
		case OPT_LOO: o.loo = 1; o.given |= F_LOO; break;
		case OPT_AUGMENT:
			o.augment = prog_parse_long("--augment", optarg, 0, 1000000);
			o.given |= F_AUGMENT;
			break;
		case OPT_KEEP0: o.keep0 = 1; o.given |= F_KEEP0; break;
		case PROG_OPT_SEED: o.seed = prog_parse_seed(optarg); o.given |= F_SEED; break;
		case OPT_JSON: o.json = 1; o.given |= F_JSON; break;
		case 'q': o.quiet = 1; prog_set_quiet(1); break;
		case 'h': prog_help();
		case PROG_OPT_VERSION: prog_version();
		default: prog_bad_option(longopts, c, argv[cur < argc ? cur : argc - 1]);
		}
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
	for (int b = 0; b < (int)(sizeof flagname / sizeof flagname[0]); b++)
		if ((o.given & (1u << b)) && !(cmd->allowed & (1u << b)))
			prog_usage_error("option '%s' does not apply to '%s'", flagname[b], cmd->name);
	npos--;
	if (npos < cmd->minargs)
		prog_usage_error("'%s' needs %s", cmd->name, cmd->need);
	if (cmd->maxargs >= 0 && npos > cmd->maxargs)
		prog_usage_error("too many arguments for '%s'", cmd->name);
	c = cmd->run(npos, pos + 1, &o);
	free(pos);
	free(task);
	return c;
}
