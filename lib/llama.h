/* llama.h: the Llama-family decoder (Llama 2/3, SmolLM2, Qwen2), configured by
 * the keys of a Hugging Face config.json, written as forward code over the ops
 * of ops.h (the tape gives its backward), with a KV cache for generation.
 * All weights live in one lmk_params buffer, under their Hugging Face names
 * ("model.layers.0.self_attn.q_proj.weight", ...).
 * Shape letters: B batch, T time, C hidden, H heads, K kv heads, D head dim,
 * F intermediate, V vocabulary, L layers.
 * Owns: the model's weights and its KV caches. Needs: ops, tensor, jansson.
 * Never: prints, exits, or reads files other than the config it is given. */
#ifndef LMK_LLAMA_H
#define LMK_LLAMA_H

#include <stdint.h>

#include "mixer.h"
#include "ops.h"
#include "rng.h"
#include "tensor.h"

#define LMK_MAX_EOS 8

typedef struct lmk_llama_config {
	char model_type[32];         /* "llama", "qwen2", "smollm" are all "llama"-shaped */
	int hidden_size;             /* C */
	int intermediate_size;       /* F */
	int num_hidden_layers;       /* L */
	int num_attention_heads;     /* H */
	int num_key_value_heads;     /* K */
	int head_dim;                /* D (default C / H) */
	int vocab_size;              /* V */
	int max_position_embeddings;
	float rms_norm_eps;
	float rope_theta;
	lmk_rope_scaling rope_scaling;
	int tie_word_embeddings;
	int attention_bias;          /* q, k, v (and o for llama) biases; qwen2: q, k, v only */
	int mlp_bias;
	float initializer_range;     /* std of the normal initialisation */
	int mixer;                   /* the blocks' token mixer: 0 softmax
				      * attention with RoPE (the Llama); else
				      * 1 + an lmk_mixer_kind (lib/mixer.h),
				      * whose layer replaces self_attn */
	lmk_mixer_config mix;        /* its settings when mixer != 0 */
	int bos_token_id;            /* -1 if none */
	int eos_token_id[LMK_MAX_EOS];
	int neos;
} lmk_llama_config;

/* A small default (used by lla-train when no shape is given). */
void lmk_llama_config_default(lmk_llama_config *cfg);
/* A model with a token mixer other than attention (lib/mixer.h) is this
 * decoder with each block's self_attn replaced by the mixer's layer, its
 * parameters "model.layers.L.mixer.NAME"; config.json then has model_type
 * "lmk_mixer" and the mixer's settings under "lmk_mixer" (kind, heads,
 * head_dim, head_dim_v, state, groups, conv, levels, w_rank, chunk,
 * norm_eps), so transformers refuses it rather than misreading it.
 * Decoding (lmk_llama_decode) is only built for attention.
 * Parses config.json text; name is used in messages. Missing optional keys
 * take Hugging Face's defaults; unknown hidden_act or rope_scaling types
 * are refused. Both spellings of rotary settings are read: transformers 4's
 * rope_theta and rope_scaling ("rope_type" or "type": default, linear,
 * llama3) and transformers 5's rope_parameters (which wins when both are
 * present). Ends with lmk_llama_config_check. @return : 0 or LMK_EFORMAT */
int lmk_llama_config_parse(lmk_llama_config *cfg, const char *json, size_t len, const char *name);
int lmk_llama_config_load(lmk_llama_config *cfg, const char *path);
/* Checks sizes are positive and consistent (H % K == 0, ...). */
int lmk_llama_config_check(const lmk_llama_config *cfg, const char *name);
/* Writes config.json as transformers writes it for LlamaForCausalLM
 * (architectures, model_type "llama", torch_dtype), atomically. */
int lmk_llama_config_save(const lmk_llama_config *cfg, const char *path, const char *torch_dtype);

typedef struct lmk_llama_layer {
	lmk_tensor *ln1;                   /* input_layernorm (C) */
	lmk_tensor *wq, *wk, *wv, *wo;     /* (H*D,C) (K*D,C) (K*D,C) (C,H*D) */
	lmk_tensor *bq, *bk, *bv, *bo;     /* NULL unless attention_bias */
	lmk_tensor *ln2;                   /* post_attention_layernorm (C) */
	lmk_tensor *wg, *wu, *wd;          /* gate (F,C), up (F,C), down (C,F) */
	lmk_tensor *bg, *bu, *bd;          /* NULL unless mlp_bias */
	lmk_mixer mix;                     /* cfg.mixer != 0: the layer in place of
					    * self_attn (wq..bo NULL) */
} lmk_llama_layer;

typedef struct lmk_llama {
	lmk_llama_config cfg;
	lmk_params params;                 /* every weight, Hugging Face names */
	lmk_tensor *wte;                   /* model.embed_tokens.weight (V,C) */
	lmk_tensor *norm;                  /* model.norm.weight (C) */
	lmk_tensor *lm_head;               /* lm_head.weight (V,C), == wte when tied */
	lmk_llama_layer *layers;           /* (L) */
	lmk_rope rope;
	const struct lmk_lora *lora;       /* the adapter the forward applies
					    * (lib/lora.h), or NULL; any number
					    * of adapters may exist over one
					    * model: set the one to use */
} lmk_llama;

/* Lays out the parameters for cfg (zeroed). trainable: allocate gradients.
 * @return : 0 or a negative code */
int lmk_llama_init(lmk_llama *m, const lmk_llama_config *cfg, int trainable);
/* Initialisation as in common practice: every matrix normal(0, std) with
 * std = initializer_range; the residual projections (o_proj, down_proj)
 * scaled by 1/sqrt(2 L) (GPT-2); norms 1; biases 0. */
void lmk_llama_init_weights(lmk_llama *m, uint64_t seed);
void lmk_llama_free(lmk_llama *m);

/* ids (B,T) I32; pos (B,T) I32 or NULL for 0..T-1; seg (B,T) I32 or NULL
 * (see lmk_attention) -> final hidden states (B,T,C) after the last norm. */
lmk_tensor *lmk_llama_hidden(lmk_ctx *c, lmk_llama *m, lmk_tensor *ids, lmk_tensor *pos,
			     lmk_tensor *seg);
/* The same -> logits (B,T,V). With pos NULL the positions 0..T-1 are made
 * on the host and uploaded when the context is on a device. */
lmk_tensor *lmk_llama_forward(lmk_ctx *c, lmk_llama *m, lmk_tensor *ids, lmk_tensor *pos,
			      lmk_tensor *seg);

/* Incremental decoding. The cache holds K and V of every layer for one
 * sequence (batch 1) up to max_t positions; for a model with a token mixer
 * (cfg.mixer), each layer's decoding state instead (lmk_mixer_state: O(1)
 * or O(log T) in the tokens, PaTH's key cache O(T)). */
typedef struct lmk_kvcache {
	float *k, *v;                      /* CPU: (L, max_t, K, D) each */
	void *dk, *dv;                     /* CUDA: (L, max_t, K, D) of dtype */
	lmk_mixer_state *mix;              /* a mixer model: each layer's state
					    * instead of keys and values */
	int nmix;
	lmk_device dev;
	lmk_dtype dtype;                   /* CUDA: the context's compute dtype */
	int max_t, len;
	struct lmk_decode_graph *graph;    /* CUDA: the recorded one-token step
					    * (lmk_llama_decode), made on first
					    * use, freed with the cache */
} lmk_kvcache;
/* A host cache (float32). @return : 0, LMK_EINVAL or LMK_ENOMEM */
int lmk_kvcache_init(lmk_kvcache *kv, const lmk_llama *m, int max_t);
/* A cache where c computes: on the CPU as lmk_kvcache_init; on CUDA device
 * memory in c's compute dtype, to be used only with contexts on the same
 * device and dtype. */
int lmk_kvcache_init_ctx(lmk_kvcache *kv, const lmk_llama *m, int max_t, const lmk_ctx *c);
void lmk_kvcache_free(lmk_kvcache *kv);
/* Runs n new tokens at positions kv->len .. kv->len+n-1 (n >= 1), appends
 * them to the cache, and writes the logits of the last one to logits (V).
 * Without grad (no tape, whatever c->grad_enabled says). Scratch comes from
 * c's arena: reset c between calls (lmk_llama_generate does). On CUDA the
 * parameters must be on c's device (lmk_params_to_device) and the cache made
 * by lmk_kvcache_init_ctx with a context of the same device and dtype; the
 * new tokens run through the ops together; attention is one causal flash
 * pass for a prompt into the empty cache, else reads the cache one query
 * row at a time (lmk_cuda_attention_decode); logits come back as float32
 * (the call waits for the stream). One token (n == 1) with attention on
 * CUDA runs as a recorded step instead: the first such call runs the step
 * once, the second records it as a CUDA graph, and from then on each call
 * uploads the token and position (8 bytes) and replays the graph, the
 * step's memory coming from an arena of the cache's own (c's is not used),
 * the same arithmetic as the ops (fused kernels, the position read from
 * the device). Not with an adapter set (m->lora): those steps run op by
 * op. The graph belongs to the cache and to (m, c's backend and dtype):
 * another of those makes a new one. Environment LMK_DECODE_GRAPH=0 turns
 * it off (every step then runs op by op, as a prompt does). With a mixer
 * the n tokens step through
 * the layers' states one at a time and c is reset between them (hold no
 * tensor of c's arena across the call); a failure then leaves the cache
 * unusable.
 * @return : 0, LMK_EINVAL when the cache would overflow or is not where c
 * computes, or < 0 */
int lmk_llama_decode(lmk_ctx *c, lmk_llama *m, lmk_kvcache *kv, const int32_t *ids, int n,
		     float *logits);
/* One new token for each of n sequences (ids[i] for the sequence of cache
 * kv[i], at its position kv[i]->len), run through the ops together as n
 * rows (one matrix product per layer and weight for all of them), and the
 * logits of each in row i of logits (n, V). The caches are as for
 * lmk_llama_decode, distinct, each with room for one more token; their
 * lengths may differ. Each row's logits are those lmk_llama_decode gives it
 * alone, up to the rounding of a product of n rows against one.
 * @return : as lmk_llama_decode */
int lmk_llama_decode_batch(lmk_ctx *c, lmk_llama *m, lmk_kvcache *const *kv, const int32_t *ids,
			   int n, float *logits);

/* Sampling: temperature 0 is greedy (argmax, lowest id on ties); else
 * softmax(logits / temperature) restricted to the top_k (0: all) most
 * likely tokens and then to the smallest set whose mass reaches top_p
 * (1: all), drawn with rng. */
typedef struct lmk_sampler {
	float temperature;
	int top_k;
	float top_p;
	lmk_rng rng;
} lmk_sampler;
/* Ties in top_k/top_p order go to the lower id; each sampled (not greedy)
 * token takes one uniform from rng.
 * @return : the token (logits are used as scratch), or LMK_EINVAL (V <= 0)
 * or LMK_ENOMEM */
int lmk_sample(lmk_sampler *s, float *logits, int V);

/* Generates up to max_new tokens after prompt (n_prompt >= 1 tokens),
 * stopping after an end-of-sequence token of the config or of eos (may be
 * NULL). on_token, if given, is called with each new token and may return
 * non-zero to stop. out receives the new tokens (max_new of room), the
 * stopping token included. c is reset before and after every step, so give
 * it a context that holds nothing the caller still needs. On CUDA with
 * attention, greedy decoding (temperature 0) takes the argmax on the device
 * and reads back only the token (4 bytes) per step, with the recorded step
 * of lmk_llama_decode.
 * @return : the number of new tokens, or a negative code */
int lmk_llama_generate(lmk_ctx *c, lmk_llama *m, const int32_t *prompt, int n_prompt,
		       int max_new, lmk_sampler *s, const int32_t *eos, int neos,
		       int (*on_token)(void *arg, int32_t tok), void *arg, int32_t *out);

#endif
