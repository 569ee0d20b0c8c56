/* serve.h: a language model served for text completion. Loads a Llama-family
 * model with its tokenizer and chat template from a GGUF file, a Hugging Face
 * directory (config.json, safetensors, tokenizer.json) or an lla-train
 * checkpoint (the byte-level tokenizer when there is no tokenizer.json);
 * parses completion requests written in JSON; generates with sampling, stop
 * tokens and stop strings, handing out the text in valid UTF-8 pieces as it
 * comes, with timings; and computes plain logits for checks.
 * Owns: the model, the tokenizer, the chat template, the KV cache and a
 * compute context. Needs: gguf, gguf_llama, ckpt, llama, bpe, bytetok,
 * chat, rng, progress (the clock), jansson. Never: prints or exits; one
 * lmk_serve serves one request at a time. */
#ifndef LMK_SERVE_H
#define LMK_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"
#include "chat.h"
#include "llama.h"
#include "rng.h"
#include "tensor.h"

/* Where the model came from. */
typedef enum lmk_serve_source {
	LMK_SERVE_GGUF = 1,   /* a GGUF file */
	LMK_SERVE_HF,         /* a directory with tokenizer.json */
	LMK_SERVE_BYTES,      /* a directory without one: lla-train on text */
} lmk_serve_source;

#define LMK_SERVE_MAX_STOP_IDS 16
#define LMK_SERVE_MAX_STOP 16      /* stop strings in one request */
#define LMK_SERVE_DEFAULT_CTX 4096

/* Flags of lmk_serve_load. */
enum {
	LMK_SERVE_PLAIN = 1,  /* a missing or unknown chat template falls back to
			       * plain prompting (lmk_chat's "User: ..."); the
			       * load then returns LMK_SERVE_FELL_BACK */
	LMK_SERVE_REUSE = 2,  /* keep the KV cache between requests and run only
			       * the part of a prompt after the prefix it shares
			       * with the previous sequence (a chat's history).
			       * Without it every request starts afresh, so its
			       * result depends on nothing before it */
};
/* Positive return of lmk_serve_load: plain prompting was chosen; lmk_errmsg()
 * says why, for a warning. */
enum { LMK_SERVE_FELL_BACK = 1 };

typedef struct lmk_serve {
	lmk_llama m;
	lmk_serve_source source;
	lmk_bpe *bpe;              /* NULL for the byte-level tokenizer */
	lmk_chat chat;             /* kind LMK_CHAT_NONE when there is none */
	char *chat_err;            /* why there is no chat template, or NULL */
	int add_bos;               /* prompts (not chats) start with bos */
	/* Sampling defaults: the model's (generation_config.json, or a GGUF's
	 * general.sampling.*) where it names them, else temperature 1, top_p 1,
	 * top_k 0 (off); defaults_from says where they came from ("model" or
	 * "builtin"). Callers may change them after loading. */
	float temperature, top_p;
	int top_k;
	int max_tokens;            /* when a request names none (default 512) */
	const char *defaults_from;
	int32_t stop_ids[LMK_SERVE_MAX_STOP_IDS]; /* eos tokens and the chat's turn end */
	int nstop_ids;
	int ctx_len;               /* KV cache length in tokens */
	int flags;
	lmk_kvcache kv;
	int32_t *seq;              /* (ctx_len) the ids whose K, V the cache holds */
	lmk_ctx c;
	float *logits;             /* (V) */
	lmk_rng rng;               /* for requests that name no seed */
} lmk_serve;

/* Loads path: a GGUF file (by its magic), a directory with config.json
 * (with tokenizer.json: a Hugging Face model and tokenizer, its
 * tokenizer_config.json and generation_config.json when present; without:
 * an lla-train checkpoint on text, which config.json must show by bos 256
 * and eos 257). ctx_len is the KV cache length (0: the model's
 * max_position_embeddings, at most LMK_SERVE_DEFAULT_CTX); seed seeds the
 * generator of requests without a seed. A chat template that is missing or
 * not recognised is not an error here: chats are then refused (chat_err
 * says why) unless flags has LMK_SERVE_PLAIN.
 * @return : 0, LMK_SERVE_FELL_BACK, or a negative code with a message naming
 * the path (s is then empty) */
int lmk_serve_load(lmk_serve *s, const char *path, int ctx_len, uint64_t seed, int flags);
void lmk_serve_free(lmk_serve *s);

/* @return : "gguf", "hf" or "lla-train" */
const char *lmk_serve_source_name(lmk_serve_source src);

/* A completion request. Fields a request leaves out are "unset" (-1, NAN or
 * has_* 0) and take the server's defaults. */
typedef struct lmk_serve_request {
	const char *prompt;        /* NULL when msgs */
	lmk_chat_msg *msgs;        /* NULL when prompt */
	size_t nmsgs;
	int max_tokens;            /* -1: unset */
	float temperature, top_p;  /* NAN: unset */
	int top_k;                 /* -1: unset */
	int has_seed;
	uint64_t seed;
	const char *stop[LMK_SERVE_MAX_STOP];
	int nstop;
	int stream;                /* -1 unset, 0, 1 */
	void *id;                  /* the request's "id" (a json_t *), NULL if none */
	void *root;                /* the parsed JSON, which the strings point into */
} lmk_serve_request;

/* Parses one request, a JSON object:
 *   "prompt": string, or "messages": [{"role": string, "content": string}...]
 *   (exactly one of them); "max_tokens": integer >= 0; "temperature":
 *   number >= 0; "top_p": number in [0, 1]; "top_k": integer >= 0; "seed":
 *   integer >= 0; "stop": a string or a list of at most LMK_SERVE_MAX_STOP
 *   non-empty strings; "stream": boolean; "id": any value, given back with
 *   the answer; "model": ignored. Any other key is an error, so that a typo
 *   is not silently ignored.
 * @return : 0, or LMK_EFORMAT with a message ("invalid JSON at column 7:
 *   ...", "'top_p': expected a number in [0, 1], found 2"); r->id is set
 *   whenever the line was an object with an "id", even on error. Free with
 *   lmk_serve_request_free in both cases. */
int lmk_serve_request_parse(lmk_serve_request *r, const char *line, size_t len);
void lmk_serve_request_free(lmk_serve_request *r);

/* What a completion gave. */
typedef struct lmk_serve_result {
	char *text;                /* malloc'ed valid UTF-8 (invalid bytes
				    * become U+FFFD), stop string excluded */
	size_t len;
	int tokens;                /* tokens generated, the one that ended the
				    * completion (an end token) included */
	int prompt_tokens;
	const char *finish_reason; /* "stop": an end token or a stop string;
				    * "length": max_tokens or the cache is full */
	double prompt_ms;          /* running the prompt through the model */
	double decode_ms;          /* everything after: sampling every token,
				    * running each but the last one */
	double tokens_per_s;       /* (tokens - 1) / decode time: decoding
				    * steps per second; 0 when tokens < 2 */
} lmk_serve_result;

/* Called with each piece of text as it becomes final: pieces are valid
 * UTF-8, never empty, and together make the result's text. Text is held
 * back while it may still be the start of a stop string or of a UTF-8
 * character. id is the token that released the piece. Returns non-zero to
 * stop generating (finish_reason "stop"). */
typedef int (*lmk_serve_piece_fn)(void *arg, const char *text, size_t len, int32_t id);

/* Completes r: renders its messages with the chat template (or takes its
 * prompt), encodes, generates. on_piece may be NULL.
 * @return : 0 (res filled; free res->text); for a request that cannot be
 * served, LMK_EUNSUP (a chat, and the model has no chat template that is
 * known) or LMK_EINVAL (a prompt longer than the cache, an empty prompt
 * and no bos token); or another negative code (LMK_ENOMEM) */
int lmk_serve_complete(lmk_serve *s, const lmk_serve_request *r, lmk_serve_piece_fn on_piece,
		       void *arg, lmk_serve_result *res);

/* Encodes r's prompt or chat as lmk_serve_complete does into *ids (malloc'ed).
 * @return : the number of ids, or a negative code */
int64_t lmk_serve_encode(lmk_serve *s, const lmk_serve_request *r, int32_t **ids);

/* The logits (n,V) of n ids (a whole forward pass, positions 0..n-1),
 * into out. @return : 0 or a negative code (LMK_EINVAL for an id outside
 * the vocabulary) */
int lmk_serve_logits(lmk_serve *s, const int32_t *ids, int n, float *out);

#endif
