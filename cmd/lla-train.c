/* lla-train.c: trains a Llama-family language model on a text file (one token
 * per byte, lib/bytetok.h) or on token frames (lib/tokdata.h), from scratch or
 * from a Hugging Face checkpoint, on the CPU or on a CUDA GPU (--device; the
 * same model code, docs/cuda.md), and writes checkpoints that transformers
 * opens, with a training state beside them that lets --resume continue the
 * run bit for bit.
 * Data parallel over several GPUs (--gpus N here, or ranks started by
 * torchrun, srun and the like, meeting at --rendezvous): one process per
 * GPU, lib/dist.h for the ranks and the rendezvous, lib/train.h for the
 * all-reduce; rank 0 alone saves, reports and samples.
 * The loop itself (accumulation, clipping, schedule, AdamW, evaluation, the
 * state file) is lib/train.h; this file is options, wiring and output. The
 * token mixer is chosen by --mixer through the table `mixers`, so that later
 * mixers add a row there, not another loop. Shape letters: B batch, T seq. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytetok.h"
#include "ckpt.h"
#include "dist.h"
#include "err.h"
#include "galore.h"
#include "llama.h"
#include "lora.h"
#include "metrics.h"
#include "ops.h"
#include "optim.h"
#include "progress.h"
#include "synth.h"
#include "prog.h"
#include "tokdata.h"
#include "train.h"

static const char usage[] =
"usage: lla-train --data FILE [--out DIR] [OPTION...]\n"
"       lla-train --resume --out DIR [OPTION...]\n"
"Train a Llama-family language model on a text file (one token per byte) or\n"
"on token frames, from scratch (--hidden ... or --config) or from a checkpoint\n"
"(--init). --out DIR receives config.json and model.safetensors (as\n"
"transformers reads them) and training_state.safetensors, which --resume\n"
"continues from exactly.\n"
"\n"
"Data:\n"
"      --data=FILE          text file, or token frames (.safetensors, a frame\n"
"                           header, or gzip)\n"
"      --task=SPEC          instead of --data, a synthetic task generated from\n"
"                           the seed, of --seq tokens an example, scored by\n"
"                           accuracy at each evaluation: mqar:kv=8,vocab=8192,\n"
"                           power=0.01 (associative recall), flipflop:pw=0.1,\n"
"                           pr=0.1, s5 or a5 (word problems; s5:swaps=1, each\n"
"                           element a transposition); val=N held-out\n"
"                           examples (default 512)\n"
"      --val-frac=F         share of the tokens, at the end, kept for validation\n"
"                           (default 0.1; 0: no validation)\n"
"Model (from scratch; each overrides --config):\n"
"      --config=FILE        a Hugging Face config.json to start from\n"
"      --hidden=C           hidden size (default 128)\n"
"      --layers=L           layers (default 4)\n"
"      --heads=H            attention heads (default 4)\n"
"      --kv-heads=K         key/value heads (default: --heads)\n"
"      --intermediate=F     MLP size (default: 8/3 of --hidden, rounded up to\n"
"                           a multiple of 32)\n"
"      --vocab=V            vocabulary (default: the data's, 259 for text)\n"
"      --mixer=NAME         token mixer: attention (default; softmax with RoPE),\n"
"                           linear, mamba2, gdn, ll-mamba2, ll-gdn, path or\n"
"                           path-fox, with the papers' sizes at --hidden, or\n"
"                           NAME:heads=H,head_dim=D,head_dim_v=DV,state=N,\n"
"                           groups=G,conv=W,levels=L,w_rank=R,chunk=C,\n"
"                           decay=0|1 (linear),neg_eig=0|1 (gdn)\n"
"      --init=DIR           start from the checkpoint in DIR instead\n"
"      --adapter=SPEC       train a low-rank adapter over the frozen --init\n"
"                           model instead of the whole model:\n"
"                           lora:r=8,alpha=16,dropout=0,targets=q,v (the\n"
"                           defaults), or onesided:r=8,proj=gaussian|rademacher\n"
"                           (one factor a frozen random sketch); --out DIR\n"
"                           then receives adapter_model.safetensors and\n"
"                           adapter_config.json as PEFT writes them\n"
"Optimisation:\n"
"      --steps=N            optimizer steps to reach (default 1000)\n"
"      --batch=B            sequences per micro-batch (default 16)\n"
"      --seq=T              tokens per sequence (default 128)\n"
"      --accum=A            micro-batches per step (default 1)\n"
"      --lr=LR              peak learning rate (default 0.001)\n"
"      --min-lr=LR          final learning rate (default: --lr / 10)\n"
"      --warmup=N           steps of linear warm-up (default 100)\n"
"      --schedule=KIND      cosine, linear or constant (default cosine)\n"
"      --decay-steps=N      steps the schedule decays over (default: --steps)\n"
"      --weight-decay=W     AdamW weight decay of matrices (default 0.1)\n"
"      --beta1=B1           AdamW beta1 (default 0.9)\n"
"      --beta2=B2           AdamW beta2 (default 0.95)\n"
"      --eps=E              AdamW epsilon (default 1e-08)\n"
"      --optim=SPEC         adamw (default), or GaLore:\n"
"                           galore:r=128,every=200,proj=svd,scale=0.25,\n"
"                           targets=q,k,v,o,gate,up,down (the defaults;\n"
"                           proj svd, rsvd, random or rademacher)\n"
"      --grad-clip=G        clip the gradient's global norm to G (default 1;\n"
"                           0: no clipping)\n"
"      --seed=N             seed of the weights, the batches and the samples\n"
"                           (default 1337)\n"
"      --threads=N          CPU threads (default: all processors)\n"
"Device:\n"
"      --device=DEV         cpu, cuda or cuda:N (default cpu)\n"
"      --dtype=DT           compute dtype: f32, or bf16 on cuda (default bf16\n"
"                           on cuda, f32 on the cpu)\n"
"      --nondeterministic   on cuda, a faster attention backward that sums with\n"
"                           float atomics: runs are no longer the same bits\n"
"                           from run to run (default: they are)\n"
"      --no-cuda-graph      on one GPU, queue every step's kernels anew instead of\n"
"                           replaying the second step's as a CUDA graph (the\n"
"                           same results, slower)\n"
"Data parallel (one process per GPU; --batch is each GPU's):\n"
"      --gpus=N             train on the first N GPUs of this machine, one\n"
"                           process each\n"
"      --rendezvous=ADDR    where ranks started by another launcher meet\n"
"                           (file:PATH or tcp:HOST:PORT; default from\n"
"                           MASTER_ADDR and MASTER_PORT); the rank from RANK,\n"
"                           WORLD_SIZE, LOCAL_RANK or SLURM_PROCID, ...\n"
"Evaluation and output:\n"
"      --eval-every=N       evaluate every N steps (default 100; 0: at the end)\n"
"      --eval-batches=N     batches per evaluation (default 20)\n"
"      --sample=N           at each evaluation, sample N tokens to stderr\n"
"                           (default 0)\n"
"      --temperature=X      sampling temperature (default 1; 0: greedy)\n"
"      --out=DIR            checkpoint directory\n"
"      --save-every=N       save every N steps (default 500; 0: at the end)\n"
"      --resume             continue the run saved in --out DIR\n"
"      --metrics=FILE       append JSON lines of metrics to FILE ('-': stdout)\n"
"  -q, --quiet              no progress, evaluation lines, summary or warnings\n"
"  -h, --help               this text\n"
"      --version            the program's version\n"
"\n"
"Exit status: 0 success, 1 failure, 2 usage error, 130 or 143 stopped by\n"
"SIGINT or SIGTERM (after saving).\n";

enum {
	O_DATA = PROG_OPT_FIRST_FREE, O_VAL_FRAC, O_CONFIG, O_HIDDEN, O_LAYERS, O_HEADS,
	O_KV_HEADS, O_INTERMEDIATE, O_VOCAB, O_MIXER, O_INIT, O_STEPS, O_BATCH, O_SEQ,
	O_ACCUM, O_LR, O_MIN_LR, O_WARMUP, O_SCHEDULE, O_DECAY_STEPS, O_WD, O_BETA1,
	O_BETA2, O_EPS, O_CLIP, O_THREADS, O_EVAL_EVERY, O_EVAL_BATCHES, O_SAMPLE,
	O_TEMPERATURE, O_OUT, O_SAVE_EVERY, O_RESUME, O_METRICS, O_DEVICE, O_DTYPE, O_NONDET, O_NO_GRAPH, O_GPUS,
	O_RENDEZVOUS, O_ADAPTER, O_OPTIM, O_TASK,
};

static const struct option longopts[] = {
	{"data", required_argument, NULL, O_DATA},
	{"task", required_argument, NULL, O_TASK},
	{"val-frac", required_argument, NULL, O_VAL_FRAC},
	{"config", required_argument, NULL, O_CONFIG},
	{"hidden", required_argument, NULL, O_HIDDEN},
	{"layers", required_argument, NULL, O_LAYERS},
	{"heads", required_argument, NULL, O_HEADS},
	{"kv-heads", required_argument, NULL, O_KV_HEADS},
	{"intermediate", required_argument, NULL, O_INTERMEDIATE},
	{"vocab", required_argument, NULL, O_VOCAB},
	{"mixer", required_argument, NULL, O_MIXER},
	{"init", required_argument, NULL, O_INIT},
	{"adapter", required_argument, NULL, O_ADAPTER},
	{"optim", required_argument, NULL, O_OPTIM},
	{"steps", required_argument, NULL, O_STEPS},
	{"batch", required_argument, NULL, O_BATCH},
	{"seq", required_argument, NULL, O_SEQ},
	{"accum", required_argument, NULL, O_ACCUM},
	{"lr", required_argument, NULL, O_LR},
	{"min-lr", required_argument, NULL, O_MIN_LR},
	{"warmup", required_argument, NULL, O_WARMUP},
	{"schedule", required_argument, NULL, O_SCHEDULE},
	{"decay-steps", required_argument, NULL, O_DECAY_STEPS},
	{"weight-decay", required_argument, NULL, O_WD},
	{"beta1", required_argument, NULL, O_BETA1},
	{"beta2", required_argument, NULL, O_BETA2},
	{"eps", required_argument, NULL, O_EPS},
	{"grad-clip", required_argument, NULL, O_CLIP},
	{"seed", required_argument, NULL, PROG_OPT_SEED},
	{"threads", required_argument, NULL, O_THREADS},
	{"device", required_argument, NULL, O_DEVICE},
	{"dtype", required_argument, NULL, O_DTYPE},
	{"nondeterministic", no_argument, NULL, O_NONDET},
	{"no-cuda-graph", no_argument, NULL, O_NO_GRAPH},
	{"gpus", required_argument, NULL, O_GPUS},
	{"rendezvous", required_argument, NULL, O_RENDEZVOUS},
	{"eval-every", required_argument, NULL, O_EVAL_EVERY},
	{"eval-batches", required_argument, NULL, O_EVAL_BATCHES},
	{"sample", required_argument, NULL, O_SAMPLE},
	{"temperature", required_argument, NULL, O_TEMPERATURE},
	{"out", required_argument, NULL, O_OUT},
	{"save-every", required_argument, NULL, O_SAVE_EVERY},
	{"resume", no_argument, NULL, O_RESUME},
	{"metrics", required_argument, NULL, O_METRICS},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, PROG_OPT_VERSION},
	{NULL, 0, NULL, 0},
};

/* --mixer NAME[:KEY=VALUE,...] onto mc (whose hidden size is set): the
 * kind's defaults (lib/mixer.h), then the settings given. */
static void mixer_config(const char *spec, lmk_llama_config *mc)
{
	char kind[32], key[32], val[32];
	const char *rest;
	int k;
	if (lmk_spec_begin(spec, kind, sizeof kind, &rest) < 0)
		prog_usage_error("option '--mixer': %s", lmk_errmsg());
	if (!strcmp(kind, "attention")) {
		if (*rest)
			prog_usage_error("option '--mixer': attention takes no settings (use --heads ...)");
		mc->mixer = 0;
		return;
	}
	if ((k = lmk_mixer_kind_parse(kind)) < 0)
		prog_usage_error("option '--mixer': '%s' is not a mixer (attention, linear, mamba2, gdn, "
				 "ll-mamba2, ll-gdn, path, path-fox)", kind);
	lmk_mixer_defaults(&mc->mix, k, mc->hidden_size);
	mc->mixer = 1 + k;
	int rc;
	while ((rc = lmk_spec_next(&rest, key, sizeof key, val, sizeof val)) > 0)
		if (lmk_mixer_config_set(&mc->mix, key, prog_parse_long("--mixer", val, 0, 1 << 20)) < 0)
			prog_usage_error("option '--mixer': %s", lmk_errmsg());
	if (rc < 0)
		prog_usage_error("option '--mixer': %s", lmk_errmsg());
}

struct opts {
	lmk_train_config cfg;
	const char *data, *config, *init, *out, *metrics, *mixer;
	const char *adapter;    /* --adapter as given, or NULL */
	const char *task;       /* --task as given, or NULL */
	lmk_lora_config lora;
	int hidden, layers, heads, kv_heads, intermediate, vocab; /* 0: not given */
	int min_lr_given, threads_given, dtype_given, mixer_given;
	const char *device_arg; /* --device as given, or NULL */
	int resume, sample, quiet;
	float temperature;
	int gpus;               /* --gpus, 0: not given */
	const char *rendezvous;
	int gpus_at[16], gpus_len[16], ngpus_at; /* where --gpus was in argv,
						  * left out of the ranks' */
};

/* Copies of strings out of a state file, which is freed before they are
 * last used; released at exit. */
static char *kept[8];
static int nkept;

static void release_kept(void)
{
	while (nkept > 0)
		free(kept[--nkept]);
}

static const char *keep(const char *s)
{
	if (nkept == (int)(sizeof kept / sizeof *kept) || !(kept[nkept] = strdup(s)))
		prog_die("out of memory");
	if (nkept == 0)
		atexit(release_kept);
	return kept[nkept++];
}

/* The ranks' failures end the whole program; a rank other than 0 says
 * which it is. */
static int rank_prefix = -1;

static noreturn void die_lib(void)
{
	if (rank_prefix > 0)
		lmk_err_wrap(lmk_errcode() ? lmk_errcode() : LMK_EINVAL, "rank %d", rank_prefix);
	prog_die_lib();
}

/* Parses argv onto o, whose cfg holds the defaults (or a resumed run's
 * saved values). Called once, and again on the saved values with --resume. */
static void parse(int argc, char **argv, struct opts *o)
{
	lmk_train_config *c = &o->cfg;
	int ch;

	optind = 0; /* GNU: start over, for the second pass */
	opterr = 0;
	for (;;) {
		int cur = optind ? optind : 1;
		const char *a;
		if ((ch = getopt_long(argc, argv, ":qh", longopts, NULL)) == -1)
			break;
		a = optarg;
		switch (ch) {
		case O_DATA: o->data = a; break;
		case O_TASK: o->task = a; break;
		case O_VAL_FRAC:
			c->val_frac = prog_parse_double("--val-frac", a, 0, 0.999999);
			break;
		case O_CONFIG: o->config = a; break;
		case O_HIDDEN: o->hidden = (int)prog_parse_long("--hidden", a, 1, 1 << 16); break;
		case O_LAYERS: o->layers = (int)prog_parse_long("--layers", a, 1, 1024); break;
		case O_HEADS: o->heads = (int)prog_parse_long("--heads", a, 1, 1024); break;
		case O_KV_HEADS: o->kv_heads = (int)prog_parse_long("--kv-heads", a, 1, 1024); break;
		case O_INTERMEDIATE:
			o->intermediate = (int)prog_parse_long("--intermediate", a, 1, 1 << 20);
			break;
		case O_VOCAB: o->vocab = (int)prog_parse_long("--vocab", a, 1, 1 << 24); break;
		case O_MIXER: o->mixer = a; o->mixer_given = 1; break;
		case O_INIT: o->init = a; break;
		case O_ADAPTER:
			lmk_lora_config_default(&o->lora);
			if (lmk_lora_config_parse(&o->lora, a) < 0)
				prog_usage_error("option '--adapter': %s", lmk_errmsg());
			o->adapter = a;
			break;
		case O_OPTIM: {
			lmk_galore_config gc;
			lmk_galore_config_default(&gc);
			if (strlen(a) >= sizeof c->optim || lmk_galore_config_parse(&gc, a) < 0)
				prog_usage_error("option '--optim': %s", lmk_errmsg());
			/* kept in the defaults' spelling, which resume compares */
			lmk_galore_config_str(&gc, c->optim, sizeof c->optim);
			break;
		}
		case O_STEPS: c->steps = prog_parse_long("--steps", a, 0, 1L << 40); break;
		case O_BATCH: c->batch = (int)prog_parse_long("--batch", a, 1, 1 << 16); break;
		case O_SEQ: c->seq = (int)prog_parse_long("--seq", a, 1, 1 << 20); break;
		case O_ACCUM: c->accum = (int)prog_parse_long("--accum", a, 1, 1 << 16); break;
		case O_LR: c->lr = (float)prog_parse_double("--lr", a, 0, 10); break;
		case O_MIN_LR:
			c->min_lr = (float)prog_parse_double("--min-lr", a, 0, 10);
			o->min_lr_given = 1;
			break;
		case O_WARMUP: c->warmup = prog_parse_long("--warmup", a, 0, 1L << 40); break;
		case O_SCHEDULE:
			if (lmk_schedule_parse(a, &c->schedule) < 0)
				prog_usage_error("option '--schedule' needs cosine, linear or constant, not '%s'", a);
			break;
		case O_DECAY_STEPS: c->decay_steps = prog_parse_long("--decay-steps", a, 1, 1L << 40); break;
		case O_WD: c->weight_decay = (float)prog_parse_double("--weight-decay", a, 0, 100); break;
		case O_BETA1: c->beta1 = (float)prog_parse_double("--beta1", a, 0, 0.999999); break;
		case O_BETA2: c->beta2 = (float)prog_parse_double("--beta2", a, 0, 0.999999999); break;
		case O_EPS: c->eps = (float)prog_parse_double("--eps", a, 0, 1); break;
		case O_CLIP: c->grad_clip = (float)prog_parse_double("--grad-clip", a, 0, 1e9); break;
		case PROG_OPT_SEED: c->seed = prog_parse_seed(a); break;
		case O_THREADS:
			c->threads = (int)prog_parse_long("--threads", a, 1, 4096);
			o->threads_given = 1;
			break;
		case O_DEVICE:
			if (lmk_train_parse_device(a, &c->device, &c->device_index) < 0)
				prog_usage_error("option '--device' needs cpu, cuda or cuda:N, not '%s'", a);
			o->device_arg = a;
			break;
		case O_GPUS:
			o->gpus = (int)prog_parse_long("--gpus", a, 1, 1024);
			if (o->ngpus_at == 16)
				prog_usage_error("option '--gpus' given too often");
			/* "--gpus=N" is one word of argv, "--gpus N" two */
			o->gpus_at[o->ngpus_at] = cur;
			o->gpus_len[o->ngpus_at++] = a >= argv[cur] && a <= argv[cur] + strlen(argv[cur]) ? 1 : 2;
			break;
		case O_RENDEZVOUS: {
			lmk_dist d;
			lmk_dist_init(&d);
			if (lmk_dist_parse_rendezvous(&d, a) < 0)
				prog_usage_error("option '--rendezvous' needs file:PATH or tcp:HOST:PORT, not '%s'", a);
			o->rendezvous = a;
			break;
		}
		case O_DTYPE:
			if (lmk_train_parse_dtype(a, &c->dtype) < 0)
				prog_usage_error("option '--dtype' needs f32 or bf16, not '%s'", a);
			o->dtype_given = 1;
			break;
		case O_NONDET:
			c->nondeterministic = 1;
			break;
		case O_NO_GRAPH:
			c->cuda_graph = 0;
			break;
		case O_EVAL_EVERY: c->eval_every = prog_parse_long("--eval-every", a, 0, 1L << 40); break;
		case O_EVAL_BATCHES:
			c->eval_batches = (int)prog_parse_long("--eval-batches", a, 1, 1 << 20);
			break;
		case O_SAMPLE: o->sample = (int)prog_parse_long("--sample", a, 0, 1 << 20); break;
		case O_TEMPERATURE:
			o->temperature = (float)prog_parse_double("--temperature", a, 0, 100);
			break;
		case O_OUT: o->out = a; break;
		case O_SAVE_EVERY: c->save_every = prog_parse_long("--save-every", a, 0, 1L << 40); break;
		case O_RESUME: o->resume = 1; break;
		case O_METRICS: o->metrics = a; break;
		case 'q': o->quiet = 1; break;
		case 'h': prog_help();
		case PROG_OPT_VERSION: prog_version();
		default: prog_bad_option(longopts, ch, argv[cur < argc ? cur : argc - 1]);
		}
	}
	if (optind < argc)
		prog_usage_error("unexpected argument '%s'", argv[optind]);
}

/* Usage errors that do not depend on any file. */
static void check_usage(const struct opts *o)
{
	const char *shape = o->hidden ? "--hidden" : o->layers ? "--layers" : o->heads ? "--heads"
			    : o->kv_heads ? "--kv-heads" : o->intermediate ? "--intermediate"
			    : o->vocab ? "--vocab" : o->config ? "--config" : NULL;
	if (o->mixer_given && (o->init || o->resume))
		prog_usage_error("option '--mixer' cannot be used with %s (the model's mixer is the "
				 "one in its config.json)", o->init ? "--init" : "--resume");
	if (o->resume) {
		if (!o->out)
			prog_usage_error("--resume needs --out DIR, the run to continue");
		if (shape)
			prog_usage_error("option '%s' cannot be used with --resume (the model is the one "
					 "saved in %s)", shape, o->out);
		if (o->init)
			prog_usage_error("option '--init' cannot be used with --resume");
	} else {
		if (o->data && o->task)
			prog_usage_error("--data and --task cannot be used together");
		if (!o->data && !o->task)
			prog_usage_error("no training data (--data FILE or --task SPEC)");
		if (o->init && shape)
			prog_usage_error("option '%s' cannot be used with --init (the model is the one "
					 "in %s)", shape, o->init);
	}
	if (o->adapter && !o->init && !o->resume)
		prog_usage_error("--adapter needs --init DIR, the model to adapt");
	if (o->adapter && strcmp(o->cfg.optim, "adamw") != 0)
		prog_usage_error("--adapter trains with AdamW; GaLore (--optim) is for the whole model");
	if (o->adapter && o->lora.onesided && lmk_proj_needs_grad(o->lora.proj))
		prog_usage_error("--adapter onesided:proj=%s needs the gradients of the frozen model; "
				 "lla-train makes sketches (proj=gaussian or rademacher), and --optim "
				 "galore:proj=%s is the same training with SVD projectors",
				 lmk_proj_name(o->lora.proj), lmk_proj_name(o->lora.proj));
	if (o->adapter && o->sample && o->cfg.device != LMK_DEV_CPU)
		prog_usage_error("--sample with --adapter is only on the cpu for now");
	if (o->heads && o->kv_heads && o->heads % o->kv_heads)
		prog_usage_error("--heads %d is not a multiple of --kv-heads %d", o->heads, o->kv_heads);
	if (o->hidden && o->heads && o->hidden % o->heads)
		prog_usage_error("--hidden %d is not a multiple of --heads %d", o->hidden, o->heads);
	if (o->cfg.decay_steps && o->cfg.decay_steps < o->cfg.warmup)
		prog_usage_error("--decay-steps %" PRId64 " is shorter than --warmup %" PRId64,
				 o->cfg.decay_steps, o->cfg.warmup);
	if (o->gpus && o->rendezvous)
		prog_usage_error("--gpus starts its ranks and their rendezvous itself; --rendezvous is "
				 "for ranks that another launcher starts");
	if ((o->gpus || o->rendezvous) && o->device_arg && o->cfg.device == LMK_DEV_CPU)
		prog_usage_error("--device cpu cannot be used with %s (data parallel trains on GPUs)",
				 o->gpus ? "--gpus" : "--rendezvous");
	if ((o->gpus || o->rendezvous) && o->device_arg && strchr(o->device_arg, ':'))
		prog_usage_error("--device %s cannot be used with %s (each rank takes the GPU of its "
				 "LOCAL_RANK)", o->device_arg, o->gpus ? "--gpus" : "--rendezvous");
}

static const char *device_name(lmk_device d) { return d == LMK_DEV_CUDA ? "cuda" : "cpu"; }
static const char *dtype_name(lmk_dtype t) { return t == LMK_BF16 ? "bf16" : "f32"; }

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (!p)
		prog_die("out of memory");
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A new model's configuration: --config or the library's defaults, then the
 * shape options, then what the data says. */
static void fresh_config(const struct opts *o, const lmk_tokdata *d, lmk_llama_config *mc)
{
	int from_file = o->config != NULL;

	if (from_file) {
		if (lmk_llama_config_load(mc, o->config) < 0)
			die_lib();
	} else {
		lmk_llama_config_default(mc);
		mc->hidden_size = 128;
		mc->num_hidden_layers = 4;
		mc->num_attention_heads = 4;
		mc->num_key_value_heads = 4;
		mc->vocab_size = 0;
		mc->bos_token_id = -1;
		mc->neos = 0;
		mc->max_position_embeddings = o->cfg.seq;
	}
	if (o->hidden)
		mc->hidden_size = o->hidden;
	if (o->layers)
		mc->num_hidden_layers = o->layers;
	if (o->heads) {
		mc->num_attention_heads = o->heads;
		if (!o->kv_heads)
			mc->num_key_value_heads = o->heads;
	}
	if (o->kv_heads)
		mc->num_key_value_heads = o->kv_heads;
	if (!from_file || o->hidden || o->heads)
		mc->head_dim = mc->hidden_size / mc->num_attention_heads;
	if (o->intermediate)
		mc->intermediate_size = o->intermediate;
	else if (!from_file || o->hidden)
		mc->intermediate_size = (8 * mc->hidden_size / 3 + 31) / 32 * 32;
	if (o->vocab)
		mc->vocab_size = o->vocab;
	else if (!from_file)
		mc->vocab_size = d->vocab;
	if (mc->max_position_embeddings < o->cfg.seq)
		mc->max_position_embeddings = o->cfg.seq;
	if (!from_file && d->text) {
		mc->bos_token_id = LMK_BYTETOK_BOS;
		mc->eos_token_id[0] = LMK_BYTETOK_EOS;
		mc->neos = 1;
	}
	if (o->mixer_given) {
		/* the mixer's sizes follow the hidden size unless given */
		mixer_config(o->mixer, mc);
		if (mc->mixer && mc->max_position_embeddings > 1 &&
		    (mc->mixer - 1 == LMK_MIXER_LL_MAMBA2 || mc->mixer - 1 == LMK_MIXER_LL_GDN)) {
			int64_t need = 1;
			while ((1LL << (need - 1)) < o->cfg.seq)
				need++;
			if (mc->mix.levels < need)
				mc->mix.levels = need;
		}
	}
	if (lmk_llama_config_check(mc, o->config ? o->config : "model") < 0)
		die_lib();
}

static lmk_tensor *llama_loss(void *model, lmk_ctx *c, lmk_tensor *ids, lmk_tensor *targets,
			      int64_t *count)
{
	lmk_tensor *logits = lmk_llama_forward(c, model, ids, NULL, NULL);
	return lmk_cross_entropy(c, logits, targets, -1, count);
}

/* "1.23M" */
static const char *human(char *buf, size_t n, double v)
{
	if (v >= 1e9)
		snprintf(buf, n, "%.3gG", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, n, "%.3gM", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, n, "%.3gk", v / 1e3);
	else
		snprintf(buf, n, "%.3g", v);
	return buf;
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

/* The model with its weights in host memory, which lmk_ckpt_save and
 * decoding read: m itself on the CPU; when m trains on a device, tmp made a
 * copy of it for the moment (free it with lmk_llama_free), so the files and
 * samples are those of the fp32 master weights, whatever the compute dtype. */
static lmk_llama *on_host(lmk_llama *m, lmk_llama *tmp)
{
	if (m->params.dev == LMK_DEV_CPU)
		return m;
	if (lmk_llama_init(tmp, &m->cfg, 0) < 0 ||
	    lmk_params_copy_to_host(&m->params, 0, tmp->params.data) < 0)
		die_lib();
	return tmp;
}

/* Samples o->sample tokens after the first validation token and prints them
 * decoded on stderr. The trainer's sampling generator advances, so the
 * samples of a resumed run are those of an uninterrupted one. Decoding runs
 * on the CPU, from the float32 master weights whatever the training dtype:
 * a model on a device is copied to the host for it, and decoded in a CPU
 * context of its own. */
static void print_sample(lmk_trainer *tr, lmk_llama *m, const struct opts *o)
{
	const lmk_tokdata *d = tr->data;
	int32_t prompt = d->tok[d->ntrain < d->n ? d->ntrain : 0], *out;
	lmk_sampler s = { .temperature = o->temperature, .top_k = 0, .top_p = 1, .rng = tr->sample_rng };
	lmk_llama tmp, *hm = on_host(m, &tmp);
	lmk_ctx cpu, *c = &tr->ctx;
	int n;

	out = malloc((size_t)o->sample * sizeof *out);
	if (!out)
		prog_die("out of memory");
	if (c->dev != LMK_DEV_CPU) {
		if (lmk_ctx_init(&cpu, LMK_DEV_CPU) < 0)
			die_lib();
		c = &cpu;
	}
	c->grad_enabled = 0;
	n = lmk_llama_generate(c, hm, &prompt, 1, o->sample, &s, NULL, 0, NULL, NULL, out);
	lmk_ctx_reset(c);
	c->grad_enabled = 1;
	if (c == &cpu)
		lmk_ctx_free(&cpu);
	if (hm != m)
		lmk_llama_free(hm);
	if (n < 0)
		die_lib();
	tr->sample_rng = s.rng;
	fprintf(stderr, "%s: sample at step %" PRId64 ":\n", prog_name(), tr->step);
	if (d->text) {
		size_t len = lmk_bytetok_decode(&prompt, 1, NULL, 0, 0) +
			     lmk_bytetok_decode(out, (size_t)n, NULL, 0, 0) + 1;
		char *text = malloc(len);
		if (!text)
			prog_die("out of memory");
		size_t k = lmk_bytetok_decode(&prompt, 1, text, len, 0);
		lmk_bytetok_decode(out, (size_t)n, text + k, len - k, 0);
		fprintf(stderr, "%s\n", text);
		free(text);
	} else {
		fprintf(stderr, "%d", prompt);
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %d", out[i]);
		fputc('\n', stderr);
	}
	free(out);
}

/* Removes dir and the files in it (the rendezvous's). */
static void remove_dir(const char *dir)
{
	DIR *dp = opendir(dir);
	struct dirent *e;
	if (dp) {
		while ((e = readdir(dp)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
				char *f = join(dir, e->d_name);
				unlink(f);
				free(f);
			}
		closedir(dp);
	}
	rmdir(dir);
}

/* --gpus N: runs this program N times, as ranks 0..N-1 of one group on
 * GPUs 0..N-1, with the same options but --gpus, meeting at a rendezvous
 * file in a private directory; exits as lmk_dist_launch says. */
static noreturn void launch(int argc, char **argv, const struct opts *o)
{
	const char *tmp = getenv("TMPDIR");
	char exe[4096], dir[4200], *rdzv, **av;
	lmk_dist_exit ex;
	ssize_t k;
	int n = 0, ndev;

#if !LMK_CUDA
	prog_die("--gpus: this build has no CUDA support (data-parallel training needs CUDA and "
		 "NCCL; build with make CUDA=1)");
#endif
	if (getenv("WORLD_SIZE") && *getenv("WORLD_SIZE"))
		prog_die("--gpus starts its own ranks, but this process is one already (WORLD_SIZE is "
			 "set): leave --gpus to the launcher, or unset WORLD_SIZE");
	ndev = lmk_train_device_count();
	if (ndev < o->gpus)
		prog_die("--gpus %d: this machine has %s%d CUDA device%s", o->gpus, ndev ? "only " : "", ndev,
			 ndev == 1 ? "" : "s");
	if (!o->resume && o->out) {
		struct stat sb;
		char *sp = join(o->out, LMK_TRAIN_STATE_FILE);
		if (stat(sp, &sb) == 0)
			prog_die("'%s' already holds a training run (%s); continue it with --resume or "
				 "choose another --out", o->out, sp);
		free(sp);
	}
	if ((k = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0)
		exe[k] = 0;
	else
		snprintf(exe, sizeof exe, "%s", argv[0]);
	snprintf(dir, sizeof dir, "%s/lla-train.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		prog_die("cannot make a directory for the rendezvous (%s): %s", dir, strerror(errno));
	rdzv = malloc(strlen(dir) + 64);
	av = calloc((size_t)argc + 2, sizeof *av);
	if (!rdzv || !av)
		prog_die("out of memory");
	sprintf(rdzv, "--rendezvous=file:%s/rendezvous", dir);
	for (int i = 0; i < argc; i++) {
		int skip = 0;
		for (int j = 0; j < o->ngpus_at; j++)
			if (i >= o->gpus_at[j] && i < o->gpus_at[j] + o->gpus_len[j])
				skip = 1;
		if (!skip)
			av[n++] = argv[i];
	}
	av[n++] = rdzv;
	av[n] = NULL;
	fflush(NULL);
	if (lmk_dist_launch(exe, av, o->gpus, 10.0, &ex) < 0) {
		remove_dir(dir);
		die_lib();
	}
	remove_dir(dir);
	/* a rank that exited said why; one killed could not */
	if (ex.rank >= 0 && ex.signal)
		fprintf(stderr, "%s: rank %d was killed by signal %d (%s)\n", prog_name(), ex.rank, ex.signal,
			strsignal(ex.signal));
	free(rdzv);
	free(av);
	exit(ex.status);
}

/* Whether this process is a rank of a data-parallel group (--rendezvous,
 * or the environment of a launcher), and which: d filled. */
static int dist_setup(const struct opts *o, lmk_dist *d)
{
	int rc;

	lmk_dist_init(d);
	if (o->rendezvous) {
#if !LMK_CUDA
		prog_die("--rendezvous: this build has no CUDA support (data-parallel training needs CUDA "
			 "and NCCL; build with make CUDA=1)");
#endif
		if (lmk_dist_parse_rendezvous(d, o->rendezvous) < 0)
			die_lib();
	}
	if ((rc = lmk_dist_from_env(d)) < 0)
		die_lib();
	if (rc == 0 && o->rendezvous)
		prog_die("--rendezvous: no rank in the environment (set RANK and WORLD_SIZE, or run under "
			 "srun; --gpus starts ranks on this machine)");
	if (rc == 0)
		return 0;
#if !LMK_CUDA
	prog_die("the environment makes this process rank %d of %d, but this build has no CUDA support "
		 "(data-parallel training needs CUDA and NCCL; build with make CUDA=1)", d->rank, d->world);
#endif
	if (o->device_arg && o->cfg.device == LMK_DEV_CPU)
		prog_die("the environment makes this process rank %d of %d (data parallel, on GPUs): "
			 "--device cpu cannot be used", d->rank, d->world);
	if (o->device_arg && strchr(o->device_arg, ':'))
		prog_die("the environment makes this process rank %d of %d: --device %s cannot be used "
			 "(each rank takes the GPU of its LOCAL_RANK)", d->rank, d->world, o->device_arg);
	return 1;
}

/* A data-parallel rank trains on a GPU unless told (and is refused on the
 * cpu by dist_setup). */
static void dp_device(struct opts *o)
{
	if (!o->device_arg)
		o->cfg.device = LMK_DEV_CUDA;
}

struct run {
	struct opts *o;
	lmk_trainer tr;
	lmk_llama m;
	lmk_lora ad;            /* --adapter: trained over m (m.lora) */
	char adapter_str[512];  /* its settings as saved in the state */
	const char *data_path;  /* as saved in the state */
	char *state_path;
	double t0;              /* when this process started training */
};

/* Writes the checkpoint, then the state: a state always has a complete
 * model beside it, and holds its own copy of the weights, so a kill between
 * the two leaves the previous state whole and consistent. */
static void save(struct run *r)
{
	const char *extra[] = {
		"program", "lla-train", "mixer",
		r->m.cfg.mixer ? lmk_mixer_kind_name(r->m.cfg.mixer - 1) : "attention", "data", r->data_path,
		r->o->task ? "task" : "data", r->data_path,
		r->o->adapter ? "adapter" : NULL, r->adapter_str, "init", r->o->init, NULL,
	};
	lmk_llama tmp, *hm;
	if (!r->o->out || lmk_trainer_rank(&r->tr) != 0)
		return;
	if (r->o->adapter) {
		if (lmk_lora_save(&r->ad, r->o->out, r->o->init) < 0 ||
		    lmk_trainer_save(&r->tr, r->state_path, lmk_now() - r->t0, extra) < 0)
			die_lib();
		return;
	}
	hm = on_host(&r->m, &tmp);
	if (lmk_ckpt_save(r->o->out, hm, LMK_F32) < 0)
		die_lib();
	if (hm != &r->m)
		lmk_llama_free(hm);
	if (lmk_trainer_save(&r->tr, r->state_path, lmk_now() - r->t0, extra) < 0)
		die_lib();
}

/* --task: the generators of the training stream and the held-out set. */
struct task {
	lmk_synth train, val;
	int64_t nval;
};

static int task_gen(void *arg, int val, int64_t first, int B, int T, int32_t *x, int32_t *y)
{
	struct task *tk = arg;
	(void)T;
	return lmk_synth_batch(val ? &tk->val : &tk->train, (uint64_t)first, B, x, y);
}

/* Parses --task SPEC into tk for sequences of T tokens; the held-out set
 * draws from another seed than the training stream. */
static void task_setup(struct task *tk, const char *spec, int T, uint64_t seed)
{
	char kind[32], key[32], val[64];
	const char *rest;
	int rc = lmk_spec_begin(spec, kind, sizeof kind, &rest);
	int t = !strcmp(kind, "mqar") ? LMK_SYNTH_MQAR : !strcmp(kind, "flipflop") ? LMK_SYNTH_FLIPFLOP
		: !strcmp(kind, "s5") || !strcmp(kind, "a5") ? LMK_SYNTH_WORD : -1;
	if (rc < 0 || t < 0)
		prog_usage_error("option '--task' needs mqar, flipflop, s5 or a5[:KEY=VALUE,...], not '%s'",
				 spec);
	lmk_synth_defaults(&tk->train, t);
	tk->nval = 512;
	if (!strcmp(kind, "a5"))
		tk->train.group = LMK_SYNTH_A5;
	while ((rc = lmk_spec_next(&rest, key, sizeof key, val, sizeof val)) > 0) {
		if (!strcmp(key, "val"))
			tk->nval = prog_parse_long("--task val", val, 1, 1 << 24);
		else if (t == LMK_SYNTH_MQAR && !strcmp(key, "kv"))
			tk->train.num_kv = prog_parse_long("--task kv", val, 1, 1 << 20);
		else if (t == LMK_SYNTH_MQAR && !strcmp(key, "vocab"))
			tk->train.vocab = prog_parse_long("--task vocab", val, 4, 1 << 24);
		else if (t == LMK_SYNTH_MQAR && !strcmp(key, "power"))
			tk->train.power_a = prog_parse_double("--task power", val, 1e-6, 1);
		else if (t == LMK_SYNTH_FLIPFLOP && !strcmp(key, "pw"))
			tk->train.p_write = prog_parse_double("--task pw", val, 0, 1);
		else if (t == LMK_SYNTH_FLIPFLOP && !strcmp(key, "pr"))
			tk->train.p_read = prog_parse_double("--task pr", val, 0, 1);
		else if (t == LMK_SYNTH_WORD && !strcmp(key, "swaps"))
			tk->train.swaps = (int)prog_parse_long("--task swaps", val, 0, 1);
		else
			prog_usage_error("option '--task': %s has no setting '%s'", kind, key);
	}
	if (rc < 0)
		prog_usage_error("option '--task': %s", lmk_errmsg());
	tk->train.T = T;
	tk->train.seed = seed;
	tk->val = tk->train;
	tk->val.seed = seed ^ 0x5eed0a11ull;
	if (lmk_synth_check(&tk->train) < 0)
		prog_usage_error("option '--task %s' with --seq %d: %s", spec, T, lmk_errmsg());
}

/* Accuracy of the model's argmax on the held-out examples. */
static void task_accuracy(lmk_trainer *tr, lmk_llama *m, const struct task *tk, lmk_synth_acc *acc)
{
	const int B = 4, T = tr->cfg.seq, V = m->cfg.vocab_size;
	int64_t sh[2] = {B, T};
	int32_t *x = malloc(sizeof *x * (size_t)B * T), *y = malloc(sizeof *y * (size_t)B * T);
	int32_t *pred = malloc(sizeof *pred * (size_t)B * T);
	float *lg = malloc(sizeof *lg * (size_t)B * T * V);
	lmk_ctx *c = &tr->ctx;
	if (!x || !y || !pred || !lg)
		prog_die("out of memory");
	memset(acc, 0, sizeof *acc);
	for (int64_t k = 0; k < tk->nval; k += B) {
		int n = tk->nval - k < B ? (int)(tk->nval - k) : B;
		if (lmk_synth_batch(&tk->val, (uint64_t)k, n, x, y) < 0)
			die_lib();
		for (int i = n * T; i < B * T; i++) {
			x[i] = 0;
			y[i] = -1;
		}
		lmk_ctx_reset(c);
		c->grad_enabled = 0;
		lmk_tensor *ids = c->dev == LMK_DEV_CPU ? lmk_tensor_wrap(c, LMK_I32, 2, sh, x)
							: lmk_tensor_upload(c, LMK_I32, 2, sh, x);
		lmk_tensor *l = lmk_llama_forward(c, m, ids, NULL, NULL);
		if (!l || lmk_tensor_read_f32(c, l, 0, lg) < 0)
			die_lib();
		lmk_synth_argmax(pred, lg, (int64_t)B * T, V);
		lmk_synth_score(acc, pred, y, n, T);
	}
	lmk_ctx_reset(c);
	c->grad_enabled = 1;
	free(x);
	free(y);
	free(pred);
	free(lg);
}

/* What training holds, once the first step has shown the activations'
 * peak: on stderr and as one metrics line. */
static void report_memory(struct run *r, lmk_metrics *mt)
{
	lmk_train_memory mm;
	char b[4][32];
	const char *what = r->o->adapter ? r->adapter_str : r->o->cfg.optim;
	lmk_trainer_memory(&r->tr, &mm);
	lmk_metrics_begin(mt);
	lmk_metrics_int(mt, "step", r->tr.step);
	lmk_metrics_str(mt, "memory", what);
	lmk_metrics_int(mt, "weights_bytes", (int64_t)mm.weights);
	lmk_metrics_int(mt, "grads_bytes", (int64_t)mm.grads);
	lmk_metrics_int(mt, "optimizer_bytes", (int64_t)mm.optimizer);
	lmk_metrics_int(mt, "activations_bytes", (int64_t)mm.activations);
	if (lmk_metrics_end(mt) < 0)
		die_lib();
	if (!r->o->quiet)
		fprintf(stderr, "%s: memory (%s): weights %sB, gradients %sB, optimizer %sB, "
			"activations %sB (peak of a step)\n", prog_name(), what,
			human(b[0], sizeof b[0], (double)mm.weights), human(b[1], sizeof b[1], (double)mm.grads),
			human(b[2], sizeof b[2], (double)mm.optimizer),
			human(b[3], sizeof b[3], (double)mm.activations));
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct run r = {0};
	lmk_tokdata data;
	struct task tk;
	lmk_synth_acc acc;
	lmk_frame st;
	lmk_metrics mt;
	lmk_progress pg;
	lmk_train_stats ts;
	char *abs_data = NULL, b1[32], b2[32], b3[32];
	double sum_loss = 0, last_val = NAN, last_loss = NAN, window_loss = NAN;
	int64_t nsum = 0, nparams;
	int has_val, sig, dp, world = 1, rank0 = 1, reported = 0, graph_noted = 0;
	lmk_dist d;

	prog_init("lla-train", usage);
	lmk_train_config_default(&o.cfg);
	o.mixer = "attention";
	o.temperature = 1.0f;
	parse(argc, argv, &o);
	check_usage(&o);
	if (o.gpus)
		launch(argc, argv, &o);
	if (!o.min_lr_given)
		o.cfg.min_lr = o.cfg.lr / 10;
	/* rank 0 of a group speaks for it: the others are quiet, write no
	 * metrics, samples or checkpoints, and name themselves in errors */
	if ((dp = dist_setup(&o, &d))) {
		world = d.world;
		rank0 = d.rank == 0;
		if (world > 1 && !rank0)
			rank_prefix = d.rank;
	}
	prog_set_quiet(o.quiet || !rank0);
	r.o = &o;
	if (o.out)
		r.state_path = join(o.out, LMK_TRAIN_STATE_FILE);

	if (o.resume) {
		/* The saved values become the defaults; options given override. */
		struct opts again = {0};
		const char *mx;
		lmk_device saved_dev;
		lmk_dtype saved_dt;
		if (lmk_train_state_read(r.state_path, &st) < 0)
			die_lib();
		again.mixer = o.mixer;
		again.temperature = 1.0f;
		if (lmk_train_state_config(&st, r.state_path, &again.cfg) < 0)
			die_lib();
		saved_dev = again.cfg.device;
		saved_dt = again.cfg.dtype;
		parse(argc, argv, &again);
		if (dp)
			dp_device(&again);
		/* another device without --dtype: that device's default */
		if (again.cfg.device != saved_dev && !again.dtype_given)
			again.cfg.dtype = lmk_train_default_dtype(again.cfg.device);
		mx = lmk_frame_meta(&st, "mixer");
		if (mx) /* --mixer is refused with --resume */
			again.mixer = keep(mx);
		if (!again.data && !again.task && lmk_frame_meta(&st, "task"))
			again.task = keep(lmk_frame_meta(&st, "task")); /* st is freed before the saves */
		if (!again.data && !again.task)
			again.data = lmk_frame_meta(&st, "data");
		const char *sa = lmk_frame_meta(&st, "adapter");
		if (sa) {
			/* the adapter and its base are the saved run's */
			const char *ad = keep(sa);
			const char *ini = lmk_frame_meta(&st, "init") ? keep(lmk_frame_meta(&st, "init")) : NULL;
			if (again.adapter)
				prog_usage_error("option '--adapter' cannot be used with --resume (the run's "
						 "adapter is %s)", sa);
			lmk_lora_config_default(&again.lora);
			if (lmk_lora_config_parse(&again.lora, ad) < 0 || !ini)
				prog_die("%s: metadata 'adapter' or 'init' is missing or bad", r.state_path);
			again.adapter = ad;
			again.init = ini;
		} else if (again.adapter) {
			prog_usage_error("option '--adapter' cannot be used with --resume (%s trained the "
					 "whole model)", r.state_path);
		}
		if (!again.data && !again.task)
			prog_die("%s: no data path saved; give --data", r.state_path);
		o = again;
		if (o.threads_given && o.cfg.threads != (int)strtol(lmk_frame_meta(&st, "threads") ?
								      lmk_frame_meta(&st, "threads") : "0", NULL, 10))
			prog_warn("--threads %d differs from the saved run's: the losses may differ in "
				  "the last bits from an uninterrupted run", o.cfg.threads);
		if (o.cfg.dtype == LMK_BF16 && o.cfg.device != LMK_DEV_CUDA)
			prog_usage_error("--dtype bf16 needs --device cuda (the cpu trains in f32)");
		if (o.cfg.device != saved_dev || o.cfg.dtype != saved_dt)
			prog_warn("the run was saved on %s in %s and continues on %s in %s: the losses "
				  "will differ from an uninterrupted run's", device_name(saved_dev),
				  dtype_name(saved_dt), device_name(o.cfg.device), dtype_name(o.cfg.dtype));
	} else {
		if (dp)
			dp_device(&o);
		if (!o.dtype_given)
			o.cfg.dtype = lmk_train_default_dtype(o.cfg.device);
		if (o.cfg.dtype == LMK_BF16 && o.cfg.device != LMK_DEV_CUDA)
			prog_usage_error("--dtype bf16 needs --device cuda (the cpu trains in f32)");
		if (o.out) {
			struct stat sb;
			if (stat(r.state_path, &sb) == 0)
				prog_die("'%s' already holds a training run (%s); continue it with "
					 "--resume or choose another --out", o.out, r.state_path);
		}
	}
	if (!rank0) {
		o.quiet = 1;
		o.metrics = NULL;
		o.sample = 0;
	}
	if (dp) {
		/* the GPU of LOCAL_RANK; modulo the GPUs seen, for launchers
		 * that show each rank only its own */
		int nd = lmk_train_device_count();
		const char *lw = getenv("LOCAL_WORLD_SIZE");
		int local = lw && atoi(lw) > 0 ? atoi(lw) : world;
		o.cfg.device_index = nd > 0 ? d.local_rank % nd : d.local_rank;
		/* the processors shared among this machine's ranks */
		if (!o.threads_given && local > 1) {
			long np = sysconf(_SC_NPROCESSORS_ONLN);
			o.cfg.threads = np > local ? (int)(np / local) : 1;
		}
	}
	/* before reading any data: a missing GPU is the first thing to say */
	if (lmk_train_device_check(o.cfg.device, o.cfg.device_index) < 0)
		die_lib();
	o.cfg.threads = lmk_train_set_threads(o.cfg.threads);

	/* Data. */
	if (o.task) {
		char key[96];
		task_setup(&tk, o.task, o.cfg.seq, lmk_train_subseed(o.cfg.seed, LMK_TRAIN_SEED_DATA));
		snprintf(key, sizeof key, "%d %lld", o.cfg.seq, (long long)tk.nval);
		uint64_t h = lmk_dist_hash(lmk_dist_hash(LMK_DIST_HASH_INIT, o.task, strlen(o.task)), key,
					   strlen(key));
		if (lmk_tokdata_init_gen(&data, o.task, task_gen, &tk, o.cfg.seq, (int)tk.train.vocab,
					 tk.nval, h) < 0)
			die_lib();
		has_val = 1;
		r.data_path = o.task;
	} else {
		if (lmk_tokdata_load(&data, o.data) < 0)
			die_lib();
		if (lmk_tokdata_split(&data, o.cfg.val_frac) < 0)
			die_lib();
		has_val = o.cfg.val_frac > 0;
		abs_data = realpath(o.data, NULL);
		r.data_path = abs_data ? abs_data : o.data;
	}
	if (lmk_tokdata_check(&data, o.cfg.seq, has_val) < 0)
		die_lib();

	/* Model. */
	if (o.adapter) {
		if (lmk_ckpt_load(o.init, &r.m, 0) < 0)
			die_lib();
		if (lmk_lora_init(&r.ad, &o.lora, &r.m.params,
				  lmk_train_subseed(o.cfg.seed, LMK_TRAIN_SEED_WEIGHTS)) < 0)
			die_lib();
		r.m.lora = &r.ad;
		lmk_lora_config_str(&o.lora, r.adapter_str, sizeof r.adapter_str);
	} else if (o.resume) {
		lmk_llama_config mc;
		char *cpath = join(o.out, "config.json");
		if (lmk_llama_config_load(&mc, cpath) < 0 || lmk_llama_init(&r.m, &mc, 1) < 0)
			die_lib();
		free(cpath);
	} else if (o.init) {
		if (lmk_ckpt_load(o.init, &r.m, 1) < 0)
			die_lib();
	} else {
		lmk_llama_config mc;
		fresh_config(&o, &data, &mc);
		if (lmk_llama_init(&r.m, &mc, 1) < 0)
			die_lib();
		lmk_llama_init_weights(&r.m, lmk_train_subseed(o.cfg.seed, LMK_TRAIN_SEED_WEIGHTS));
	}
	if (data.vocab > r.m.cfg.vocab_size)
		prog_die("%s: token ids go up to %d, beyond the model's vocabulary of %d%s", data.name,
			 data.vocab - 1, r.m.cfg.vocab_size, o.resume || o.init ? "" : " (see --vocab)");
	nparams = (int64_t)(o.adapter ? r.ad.params.n : r.m.params.n);

	if (lmk_trainer_init_dist(&r.tr, &o.cfg, dp ? &d : NULL, o.adapter ? &r.ad.params : &r.m.params,
				  &r.m, llama_loss, &data) < 0)
		die_lib();
	/* an adapter's frozen base (and projectors) go where it trains */
	if (o.adapter && (lmk_trainer_attach(&r.tr, &r.m.params) < 0 ||
			  (r.ad.frozen.nt && lmk_trainer_attach(&r.tr, &r.ad.frozen) < 0)))
		die_lib();
	if (o.resume) {
		if (lmk_trainer_restore(&r.tr, &st, r.state_path) < 0)
			die_lib();
		lmk_frame_free(&st);
		if (r.tr.step >= o.cfg.steps) {
			if (!o.quiet)
				fprintf(stderr, "%s: %s is already at step %" PRId64 " of %" PRId64 "; nothing to do\n",
					prog_name(), o.out, r.tr.step, o.cfg.steps);
			lmk_lora_free(&r.ad); /* parameters before the context */
			lmk_llama_free(&r.m);
			lmk_trainer_free(&r.tr);
			lmk_tokdata_free(&data);
			free(abs_data);
			free(r.state_path);
			return 0;
		}
	}
	if (lmk_metrics_open(&mt, o.metrics) < 0)
		die_lib();
	if (lmk_train_catch_signals() < 0)
		die_lib();

	r.t0 = lmk_now();
	if (has_val && r.tr.step == 0) {
		if (lmk_trainer_eval(&r.tr, &last_val) < 0)
			die_lib();
		if (o.task)
			task_accuracy(&r.tr, &r.m, &tk, &acc);
		lmk_metrics_begin(&mt);
		lmk_metrics_int(&mt, "step", 0);
		lmk_metrics_num(&mt, "val_loss", last_val);
		if (o.task) {
			lmk_metrics_num(&mt, "val_acc", acc.count ? (double)acc.correct / acc.count : 0);
			lmk_metrics_num(&mt, "val_seq_acc", acc.seqs ? (double)acc.seq_correct / acc.seqs : 0);
			lmk_metrics_num(&mt, "val_prefix", acc.seqs ? (double)acc.prefix / acc.seqs : 0);
		}
		lmk_metrics_num(&mt, "elapsed", r.tr.elapsed + lmk_now() - r.t0);
		if (lmk_metrics_end(&mt) < 0)
			die_lib();
		if (!o.quiet && dp)
			fprintf(stderr, "%s: step 0/%" PRId64 ": val loss %.4f, %s parameters, data parallel "
				"on %d GPU%s in %s\n", prog_name(), o.cfg.steps, last_val,
				human(b1, sizeof b1, (double)nparams), world, world == 1 ? "" : "s",
				dtype_name(o.cfg.dtype));
		else if (!o.quiet)
			fprintf(stderr, "%s: step 0/%" PRId64 ": val loss %.4f, %s parameters%s%s\n",
				prog_name(), o.cfg.steps, last_val, human(b1, sizeof b1, (double)nparams),
				o.cfg.device == LMK_DEV_CPU ? "" : ", on cuda in ",
				o.cfg.device == LMK_DEV_CPU ? "" : dtype_name(o.cfg.dtype));
		if (o.sample)
			print_sample(&r.tr, &r.m, &o);
	}

	lmk_progress_init(&pg, "lla-train", "step", r.tr.step, o.cfg.steps, o.quiet ? 0 : -1);
	while (r.tr.step < o.cfg.steps) {
		double ts0 = lmk_now(), rate;
		int eval, last;
		char extra[64];

		if (lmk_trainer_step(&r.tr, &ts) < 0) {
			lmk_progress_end(&pg);
			die_lib();
		}
		if (!reported) {
			report_memory(&r, &mt);
			reported = 1;
		}
		if (r.tr.graph_note[0] && !graph_noted && !o.quiet) {
			lmk_progress_end(&pg);
			fprintf(stderr, "%s: %s\n", prog_name(), r.tr.graph_note);
			graph_noted = 1;
		}
		/* of the whole group */
		rate = (double)world * o.cfg.batch * o.cfg.seq * o.cfg.accum / (lmk_now() - ts0);
		last_loss = ts.loss;
		sum_loss += ts.loss;
		nsum++;
		last = r.tr.step == o.cfg.steps;
		eval = has_val && (last || (o.cfg.eval_every && r.tr.step % o.cfg.eval_every == 0));
		if (eval && lmk_trainer_eval(&r.tr, &last_val) < 0)
			die_lib();
		if (eval && o.task)
			task_accuracy(&r.tr, &r.m, &tk, &acc);

		lmk_metrics_begin(&mt);
		lmk_metrics_int(&mt, "step", r.tr.step);
		lmk_metrics_num(&mt, "loss", ts.loss);
		if (eval)
			lmk_metrics_num(&mt, "val_loss", last_val);
		if (eval && o.task) {
			lmk_metrics_num(&mt, "val_acc", acc.count ? (double)acc.correct / acc.count : 0);
			lmk_metrics_num(&mt, "val_seq_acc", acc.seqs ? (double)acc.seq_correct / acc.seqs : 0);
			lmk_metrics_num(&mt, "val_prefix", acc.seqs ? (double)acc.prefix / acc.seqs : 0);
		}
		lmk_metrics_num(&mt, "lr", ts.lr);
		lmk_metrics_num(&mt, "grad_norm", ts.grad_norm);
		lmk_metrics_num(&mt, "tokens_per_s", rate);
		lmk_metrics_num(&mt, "elapsed", r.tr.elapsed + lmk_now() - r.t0);
		if (lmk_metrics_end(&mt) < 0)
			die_lib();

		snprintf(extra, sizeof extra, "loss %.4f", ts.loss);
		lmk_progress_update(&pg, r.tr.step, extra);
		if (eval || (!has_val && o.cfg.eval_every && r.tr.step % o.cfg.eval_every == 0)) {
			lmk_progress_end(&pg);
			if (!o.quiet) {
				fprintf(stderr, "%s: step %" PRId64 "/%" PRId64 ": train loss %.4f", prog_name(),
					r.tr.step, o.cfg.steps, sum_loss / (double)nsum);
				if (eval)
					fprintf(stderr, ", val loss %.4f", last_val);
				if (eval && o.task)
					fprintf(stderr, ", val acc %.4f (sequences %.4f)",
						acc.count ? (double)acc.correct / acc.count : 0,
						acc.seqs ? (double)acc.seq_correct / acc.seqs : 0);
				fprintf(stderr, ", lr %.3g, %s tokens/s, %s\n", ts.lr,
					human(b1, sizeof b1, rate),
					hms(b2, sizeof b2, r.tr.elapsed + lmk_now() - r.t0));
			}
			window_loss = sum_loss / (double)nsum;
			sum_loss = 0;
			nsum = 0;
			if (o.sample && eval)
				print_sample(&r.tr, &r.m, &o);
		}
		/* in data parallel the ranks' agreement, so that all stop here */
		sig = lmk_trainer_signal(&r.tr);
		if (last || sig || (o.cfg.save_every && r.tr.step % o.cfg.save_every == 0))
			save(&r);
		if (sig) {
			lmk_progress_end(&pg);
			if (!rank0)
				;
			else if (o.out)
				fprintf(stderr, "%s: stopped by signal %d after step %" PRId64 "; saved in %s "
					"(continue with --resume)\n", prog_name(), sig, r.tr.step, o.out);
			else
				fprintf(stderr, "%s: stopped by signal %d after step %" PRId64 "; nothing saved "
					"(no --out)\n", prog_name(), sig, r.tr.step);
			lmk_metrics_close(&mt);
			exit(128 + sig);
		}
	}
	lmk_progress_end(&pg);
	if (lmk_metrics_close(&mt) < 0)
		die_lib();
	if (!o.quiet) {
		double el = r.tr.elapsed + lmk_now() - r.t0;
		/* the mean since the last report, steadier than one step's */
		if (nsum)
			window_loss = sum_loss / (double)nsum;
		fprintf(stderr, "%s: done: step %" PRId64 ", train loss %.4f", prog_name(), r.tr.step,
			isnan(window_loss) ? last_loss : window_loss);
		if (has_val)
			fprintf(stderr, ", val loss %.4f", last_val);
		fprintf(stderr, ", %s parameters, %s tokens in %s", human(b1, sizeof b1, (double)nparams),
			human(b2, sizeof b2, (double)r.tr.tokens), hms(b3, sizeof b3, el));
		if (o.out)
			fprintf(stderr, ", saved in %s", o.out);
		fputc('\n', stderr);
	}
	lmk_lora_free(&r.ad); /* parameters before the context */
	lmk_llama_free(&r.m);
	lmk_trainer_free(&r.tr);
	lmk_tokdata_free(&data);
	free(abs_data);
	free(r.state_path);
	return 0;
}
