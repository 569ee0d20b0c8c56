/* ladder-serve.c: serves a language model on standard input and output: one
 * JSON request per line in, one JSON answer per line out (or one object per
 * piece of text with --stream, then the answer); an interactive chat when
 * standard input is a terminal; and, with --logits, the logits of token-id
 * frames, for checking the model against other implementations.
 * Loading, requests and generation are lib/serve.h; this file is options,
 * the three loops and output. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "frame.h"
#include "progress.h"
#include "prog.h"
#include "lora.h"
#include "serve.h"
#include "train.h"

static const char usage[] =
"usage: ladder-serve -m MODEL [OPTION...]\n"
"       ladder-serve -m MODEL --logits=FILE [-o OUT]\n"
"Serve a language model on standard input and output: each input line is a\n"
"JSON request ({\"prompt\": ...} or {\"messages\": [...]}, with max_tokens,\n"
"temperature, top_p, top_k, seed, stop), each output line a JSON answer\n"
"(text, tokens, prompt_tokens, finish_reason, prompt_ms, decode_ms,\n"
"tokens_per_s). On a terminal it chats instead (/reset clears the history).\n"
"MODEL is a GGUF file, a Hugging Face directory (config.json, safetensors,\n"
"tokenizer.json) or an lla-train checkpoint directory.\n"
"\n"
"Options:\n"
"  -m, --model=MODEL      the model to serve\n"
"      --adapter=DIR      apply the LoRA adapter in DIR (adapter_config.json and\n"
"                         adapter_model.safetensors, as PEFT and lla-train\n"
"                         --adapter write them)\n"
"      --stream           answer with one JSON object per piece of text as it\n"
"                         comes ({\"token\": ...}), then the whole answer\n"
"      --strict           exit 1 at the first bad request instead of answering\n"
"                         {\"error\": ...} and going on\n"
"      --plain            chat without a template when the model's is missing or\n"
"                         unknown (\"User: ...\"), with a warning\n"
"      --ctx=N            KV cache length in tokens (default: the model's\n"
"                         maximum, at most 4096)\n"
"      --max-tokens=N     tokens to generate when a request names none\n"
"                         (default 512)\n"
"      --temperature=X    sampling temperature when a request names none\n"
"                         (default: the model's, else 1; 0: greedy)\n"
"      --top-p=P          nucleus sampling mass (default: the model's, else 1)\n"
"      --top-k=K          sample among the K likeliest tokens (default: the\n"
"                         model's, else 0: all)\n"
"      --seed=N           seed of the requests that name none (default 1337)\n"
"      --threads=N        CPU threads (default: all processors)\n"
"      --logits=FILE      instead of serving, read frames of token ids (tensor\n"
"                         'ids', I32 or I64, (T) or (B,T)) from FILE ('-':\n"
"                         standard input) and write each with its logits\n"
"  -o, --output=OUT       where --logits writes (default '-': standard output)\n"
"      --force            write frames even to a terminal\n"
"  -q, --quiet            no model summary, timings or warnings on stderr\n"
"  -h, --help             this text\n"
"      --version          the program's version\n"
"\n"
"Exit status: 0 success, 1 failure, 2 usage error.\n";

enum {
	O_STREAM = PROG_OPT_FIRST_FREE, O_STRICT, O_PLAIN, O_CTX, O_MAX_TOKENS, O_TEMPERATURE,
	O_TOP_P, O_TOP_K, O_THREADS, O_LOGITS, O_ADAPTER,
};

static const struct option longopts[] = {
	{"model", required_argument, NULL, 'm'},
	{"stream", no_argument, NULL, O_STREAM},
	{"strict", no_argument, NULL, O_STRICT},
	{"plain", no_argument, NULL, O_PLAIN},
	{"ctx", required_argument, NULL, O_CTX},
	{"max-tokens", required_argument, NULL, O_MAX_TOKENS},
	{"temperature", required_argument, NULL, O_TEMPERATURE},
	{"top-p", required_argument, NULL, O_TOP_P},
	{"top-k", required_argument, NULL, O_TOP_K},
	{"seed", required_argument, NULL, PROG_OPT_SEED},
	{"threads", required_argument, NULL, O_THREADS},
	{"logits", required_argument, NULL, O_LOGITS},
	{"adapter", required_argument, NULL, O_ADAPTER},
	{"output", required_argument, NULL, 'o'},
	{"force", no_argument, NULL, PROG_OPT_FORCE},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, PROG_OPT_VERSION},
	{NULL, 0, NULL, 0},
};

struct opts {
	const char *model, *logits, *out;
	const char *adapter;
	int stream, strict, plain, ctx, max_tokens, top_k, threads, force, quiet;
	double temperature, top_p;   /* NAN: not given */
	uint64_t seed;
};


static void parse(int argc, char **argv, struct opts *o)
{
	int c;

	opterr = 0;
	for (;;) {
		int cur = optind;
		if ((c = getopt_long(argc, argv, ":m:o:qh", longopts, NULL)) == -1)
			break;
		switch (c) {
		case 'm': o->model = optarg; break;
		case O_STREAM: o->stream = 1; break;
		case O_STRICT: o->strict = 1; break;
		case O_PLAIN: o->plain = 1; break;
		case O_CTX: o->ctx = (int)prog_parse_long("--ctx", optarg, 1, 1 << 20); break;
		case O_MAX_TOKENS:
			o->max_tokens = (int)prog_parse_long("--max-tokens", optarg, 0, 1 << 30);
			break;
		case O_TEMPERATURE:
			o->temperature = prog_parse_double("--temperature", optarg, 0, 1e6);
			break;
		case O_TOP_P: o->top_p = prog_parse_double("--top-p", optarg, 0, 1); break;
		case O_TOP_K: o->top_k = (int)prog_parse_long("--top-k", optarg, 0, INT_MAX); break;
		case PROG_OPT_SEED: o->seed = prog_parse_seed(optarg); break;
		case O_THREADS: o->threads = (int)prog_parse_long("--threads", optarg, 1, 4096); break;
		case O_LOGITS: o->logits = optarg; break;
		case O_ADAPTER: o->adapter = optarg; break;
		case 'o': o->out = optarg; break;
		case PROG_OPT_FORCE: o->force = 1; break;
		case 'q': o->quiet = 1; break;
		case 'h': prog_help();
		case PROG_OPT_VERSION: prog_version();
		default: prog_bad_option(longopts, c, argv[cur < argc ? cur : argc - 1]);
		}
	}
	if (optind < argc)
		prog_usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->model)
		prog_usage_error("no model (-m MODEL: a GGUF file or a model directory)");
	if (!o->logits && o->out)
		prog_usage_error("option '--output' applies only to --logits");
	if (!o->logits && o->force)
		prog_usage_error("option '--force' applies only to --logits");
	if (o->logits && (o->stream || o->strict))
		prog_usage_error("option '%s' does not apply to --logits", o->stream ? "--stream" : "--strict");
}

/* ---- output ----------------------------------------------------------- */

static void put_json(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));

	if (!s)
		prog_die("out of memory");
	fputs(s, stdout);
	putchar('\n');
	fflush(stdout);
	free(s);
	json_decref(j);
}

/* Milliseconds to the microsecond, rates to the hundredth: enough, and
 * short. */
static json_t *jnum(double v, double unit)
{
	return json_real(round(v / unit) * unit);
}

/* An object that starts with the request's id, when it had one. */
static json_t *answer_head(const lmk_serve_request *r)
{
	json_t *j = json_object();

	if (!j)
		prog_die("out of memory");
	if (r && r->id)
		json_object_set(j, "id", (json_t *)r->id);
	return j;
}

static void put_error(const lmk_serve_request *r, long line, const char *msg)
{
	json_t *j = answer_head(r);

	json_object_set_new(j, "error", json_string(msg));
	json_object_set_new(j, "line", json_integer(line));
	put_json(j);
}

static void put_result(const lmk_serve_request *r, const lmk_serve_result *res)
{
	json_t *j = answer_head(r);

	json_object_set_new(j, "text", json_stringn(res->text, res->len));
	json_object_set_new(j, "tokens", json_integer(res->tokens));
	json_object_set_new(j, "prompt_tokens", json_integer(res->prompt_tokens));
	json_object_set_new(j, "finish_reason", json_string(res->finish_reason));
	json_object_set_new(j, "prompt_ms", jnum(res->prompt_ms, 1e-3));
	json_object_set_new(j, "decode_ms", jnum(res->decode_ms, 1e-3));
	json_object_set_new(j, "tokens_per_s", jnum(res->tokens_per_s, 1e-2));
	put_json(j);
}

struct stream_arg {
	const lmk_serve_request *r;
};

static int on_stream_piece(void *arg, const char *text, size_t len, int32_t id)
{
	const struct stream_arg *a = arg;
	json_t *j = answer_head(a->r);

	json_object_set_new(j, "token", json_stringn(text, len));
	json_object_set_new(j, "token_id", json_integer(id));
	put_json(j);
	return 0;
}

/* ---- loading ---------------------------------------------------------- */

static void load(lmk_serve *s, const struct opts *o, int reuse)
{
	double t0 = lmk_now();
	int rc = lmk_serve_load(s, o->model, o->ctx, o->seed,
				(o->plain ? LMK_SERVE_PLAIN : 0) | (reuse ? LMK_SERVE_REUSE : 0));

	if (rc < 0)
		prog_die_lib();
	if (rc == LMK_SERVE_FELL_BACK)
		prog_warn("%s: %s; chats are prompted as plain text (User: ...)", o->model, lmk_errmsg());
	if (o->max_tokens >= 0)
		s->max_tokens = o->max_tokens;
	if (!isnan(o->temperature))
		s->temperature = (float)o->temperature;
	if (!isnan(o->top_p))
		s->top_p = (float)o->top_p;
	if (o->top_k >= 0)
		s->top_k = o->top_k;
	if (s->ctx_len > s->m.cfg.max_position_embeddings)
		prog_warn("--ctx %d is longer than the model's %d positions", s->ctx_len,
			  s->m.cfg.max_position_embeddings);
	if (!o->quiet)
		fprintf(stderr, "%s: %s: %s model, %d layers, %.1fM parameters, %s chat template, "
			"context %d, temperature %g, top_p %g, top_k %d (%s%s), loaded in %.1f s\n",
			prog_name(), o->model, lmk_serve_source_name(s->source), s->m.cfg.num_hidden_layers,
			(double)s->m.params.n / 1e6, lmk_chat_kind_name(s->chat.kind), s->ctx_len,
			s->temperature, s->top_p, s->top_k,
			isnan(o->temperature) && isnan(o->top_p) && o->top_k < 0 ? "" : "options, else ",
			s->defaults_from, lmk_now() - t0);
}

/* Request errors become answers; anything else (memory) ends the program. */
static int request_error(int rc)
{
	return rc == LMK_EINVAL || rc == LMK_EUNSUP || rc == LMK_EFORMAT;
}

/* ---- serving JSON lines ----------------------------------------------- */

static int blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
			return 0;
	return 1;
}

static void serve_lines(lmk_serve *s, const struct opts *o)
{
	char *line = NULL, msg[1200];
	size_t cap = 0;
	ssize_t len;
	long no = 0;

	while ((len = getline(&line, &cap, stdin)) != -1) {
		lmk_serve_request r;
		lmk_serve_result res;
		struct stream_arg sa;
		int rc, stream;

		no++;
		if (blank(line))
			continue;
		rc = lmk_serve_request_parse(&r, line, (size_t)len);
		if (rc == 0) {
			stream = r.stream >= 0 ? r.stream : o->stream;
			sa.r = &r;
			rc = lmk_serve_complete(s, &r, stream ? on_stream_piece : NULL, &sa, &res);
			if (rc < 0 && !request_error(rc))
				prog_die("line %ld: %s", no, lmk_errmsg());
		}
		if (rc < 0) {
			snprintf(msg, sizeof msg, "%s%s", lmk_errmsg(),
				 rc == LMK_EUNSUP ? " (--plain prompts chats without a template)" : "");
			put_error(&r, no, msg);
			lmk_serve_request_free(&r);
			if (o->strict)
				prog_die("line %ld: %s", no, msg);
			continue;
		}
		put_result(&r, &res);
		free(res.text);
		lmk_serve_request_free(&r);
	}
	if (ferror(stdin))
		prog_die("cannot read standard input: %s", strerror(errno));
	free(line);
}

/* ---- chatting on a terminal ------------------------------------------- */

static int on_chat_piece(void *arg, const char *text, size_t len, int32_t id)
{
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	return 0;
}

struct history {
	lmk_chat_msg *m;
	size_t n, cap;
};

static void history_add(struct history *h, const char *role, const char *content, size_t len)
{
	char *c;

	if (h->n == h->cap) {
		h->cap = h->cap ? 2 * h->cap : 16;
		if (!(h->m = realloc(h->m, h->cap * sizeof *h->m)))
			prog_die("out of memory");
	}
	if (!(c = strndup(content, len)))
		prog_die("out of memory");
	h->m[h->n].role = role;
	h->m[h->n++].content = c;
}

static void history_drop(struct history *h, size_t keep)
{
	while (h->n > keep)
		free((char *)h->m[--h->n].content);
}

static void chat(lmk_serve *s, const struct opts *o)
{
	struct history h = {0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	if (s->chat.kind == LMK_CHAT_NONE)
		prog_die("%s: %s (--plain chats without a template)", o->model,
			 s->chat_err ? s->chat_err : "no chat template");
	if (!o->quiet)
		fprintf(stderr, "%s: chatting; /reset clears the history, /quit or Ctrl-D ends\n",
			prog_name());
	for (;;) {
		lmk_serve_request r;
		lmk_serve_result res;
		int rc;

		fputs("> ", stdout);
		fflush(stdout);
		if ((len = getline(&line, &cap, stdin)) == -1) {
			putchar('\n');
			break;
		}
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (blank(line))
			continue;
		if (line[0] == '/') {
			if (!strcmp(line, "/reset")) {
				history_drop(&h, 0);
				if (!o->quiet)
					fprintf(stderr, "%s: history cleared\n", prog_name());
			} else if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) {
				break;
			} else {
				fprintf(stderr, "%s: unknown command '%s' (/reset, /quit)\n", prog_name(), line);
			}
			continue;
		}
		history_add(&h, "user", line, (size_t)len);
		memset(&r, 0, sizeof r);
		r.msgs = h.m;
		r.nmsgs = h.n;
		r.max_tokens = r.top_k = r.stream = -1;
		r.temperature = r.top_p = NAN;
		rc = lmk_serve_complete(s, &r, on_chat_piece, NULL, &res);
		if (rc < 0) {
			if (!request_error(rc))
				prog_die_lib();
			fprintf(stderr, "%s: %s%s\n", prog_name(), lmk_errmsg(),
				rc == LMK_EINVAL ? " (/reset starts over)" : "");
			history_drop(&h, h.n - 1);
			continue;
		}
		putchar('\n');
		fflush(stdout);
		history_add(&h, "assistant", res.text, res.len);
		if (!o->quiet)
			fprintf(stderr, "[%d tokens, %s, %.1f tokens/s]\n", res.tokens,
				res.finish_reason, res.tokens_per_s);
		free(res.text);
	}
	history_drop(&h, 0);
	free(h.m);
	free(line);
}

/* ---- logits of token-id frames ---------------------------------------- */

static lmk_writer *pending;

static noreturn void die_lib(void)
{
	char msg[1024];

	snprintf(msg, sizeof msg, "%s", lmk_errmsg());
	if (pending) {
		lmk_writer_abort(pending);
		pending = NULL;
	}
	prog_die("%s", msg[0] ? msg : "unknown error");
}

static void logits_frames(lmk_serve *s, const struct opts *o)
{
	const char *in = o->logits, *shown = strcmp(in, "-") ? in : "<stdin>";
	const int64_t V = s->m.cfg.vocab_size;
	lmk_reader *rd;
	lmk_frame f;
	long idx = 0;

	if (strcmp(in, "-") == 0 && isatty(STDIN_FILENO))
		prog_die("refusing to read binary frames from a terminal (name a FILE or use a pipe)");
	prog_check_binary_out(o->out, o->force);
	if (lmk_reader_open(&rd, in) < 0)
		die_lib();
	if (lmk_writer_open(&pending, o->out, 0) < 0)
		die_lib();
	for (;; idx++) {
		lmk_frame out;
		int rc = lmk_reader_next(rd, &f);
		if (rc < 0)
			die_lib();
		if (rc == 0)
			break;
		const lmk_ftensor *t = lmk_frame_find(&f, "ids");
		if (!t)
			prog_die("%s: frame %ld: no tensor 'ids'", shown, idx);
		if ((t->dtype != LMK_I32 && t->dtype != LMK_I64) || t->ndim < 1 || t->ndim > 2)
			prog_die("%s: frame %ld: tensor 'ids': expected I32 or I64 of shape (T) or (B,T), "
				 "found %s of %d dimensions", shown, idx, lmk_dtype_name(t->dtype), t->ndim);
		int64_t T = t->shape[t->ndim - 1], B = t->ndim == 2 ? t->shape[0] : 1;
		if (T < 1 || T > INT_MAX / V)
			prog_die("%s: frame %ld: tensor 'ids': %lld tokens per row, expected 1 to %lld",
				 shown, idx, (long long)T, (long long)(INT_MAX / V));
		int32_t *ids = malloc(sizeof *ids * (size_t)(B * T));
		float *lg = malloc(sizeof *lg * (size_t)(B * T * V));
		if (!ids || !lg)
			prog_die("out of memory");
		for (int64_t i = 0; i < B * T; i++) {
			int64_t v;
			if (t->dtype == LMK_I32) {
				int32_t w;
				memcpy(&w, (const char *)t->data + 4 * i, 4);
				v = w;
			} else {
				memcpy(&v, (const char *)t->data + 8 * i, 8);
			}
			if (v < 0 || v >= V)
				prog_die("%s: frame %ld: tensor 'ids': element %lld is %lld, outside the "
					 "vocabulary of %lld", shown, idx, (long long)i, (long long)v,
					 (long long)V);
			ids[i] = (int32_t)v;
		}
		for (int64_t b = 0; b < B; b++)
			if (lmk_serve_logits(s, ids + b * T, (int)T, lg + b * T * V) < 0)
				die_lib();
		int64_t ls[3] = {B, T, V}, *lshape = t->ndim == 2 ? ls : ls + 1;
		lmk_frame_init(&out);
		if (lmk_frame_set_meta(&out, "kind", "logits") < 0 ||
		    lmk_frame_set_meta(&out, "schema", "1") < 0 ||
		    lmk_frame_set_meta(&out, "model", o->model) < 0 ||
		    lmk_frame_add(&out, "ids", LMK_I32, t->ndim, t->shape, ids) < 0 ||
		    lmk_frame_add(&out, "logits", LMK_F32, t->ndim + 1, lshape, lg) < 0 ||
		    lmk_writer_put(pending, &out) < 0)
			die_lib();
		lmk_frame_free(&out);
		lmk_frame_free(&f);
		free(ids);
		free(lg);
	}
	lmk_frame_free(&f);
	lmk_reader_close(rd);
	lmk_writer *w = pending;
	pending = NULL;
	if (lmk_writer_close(w) < 0)
		die_lib();
	if (idx == 0)
		prog_warn("%s: no frames", shown);
}

int main(int argc, char **argv)
{
	struct opts o = {.max_tokens = -1, .top_k = -1, .temperature = NAN, .top_p = NAN,
			 .seed = 1337};
	lmk_serve s;
	int interactive;

	prog_init("ladder-serve", usage);
	parse(argc, argv, &o);
	prog_set_quiet(o.quiet);
	if (o.logits && !o.out)
		o.out = "-";
	lmk_train_set_threads(o.threads);
	interactive = !o.logits && isatty(STDIN_FILENO);
	load(&s, &o, interactive);
	lmk_lora ad = {0};
	if (o.adapter) {
		if (lmk_lora_load(&ad, o.adapter, &s.m.params) < 0)
			prog_die_lib();
		s.m.lora = &ad;
		if (!o.quiet)
			fprintf(stderr, "%s: adapter %s: rank %d over %d layers\n", prog_name(), o.adapter,
				ad.cfg.r, ad.n);
	}
	if (o.logits)
		logits_frames(&s, &o);
	else if (interactive)
		chat(&s, &o);
	else
		serve_lines(&s, &o);
	lmk_serve_free(&s);
	lmk_lora_free(&ad);
	return 0;
}
