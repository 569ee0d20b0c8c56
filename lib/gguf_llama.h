/* gguf_llama.h: Llama models from GGUF files (general.architecture "llama",
 * as llama.cpp's convert_hf_to_gguf.py writes them): the config from the
 * llama.* and tokenizer.ggml.* keys, the weights dequantized to float32 into
 * an lmk_llama under their Hugging Face names, with the rotary permutation
 * of attn_q and attn_k undone, so that the model equals the one loaded
 * from the Hugging Face checkpoint the GGUF was converted from.
 * Owns: nothing after it returns. Needs: gguf, llama. Never: prints. */
#ifndef LMK_GGUF_LLAMA_H
#define LMK_GGUF_LLAMA_H

#include "gguf.h"
#include "llama.h"

/* Fills cfg from g's metadata: llama.block_count, embedding_length,
 * feed_forward_length, attention.head_count (and head_count_kv, default the
 * same), attention.layer_norm_rms_epsilon, rope.freq_base (default 10000),
 * context_length (default 2048), attention.key_length (default C / H),
 * rope.dimension_count (must equal the head dim), rope.scaling.type "none"
 * or "linear" with rope.scaling.factor; vocab_size from llama.vocab_size,
 * else the length of tokenizer.ggml.tokens, else token_embd; tied when there
 * is no output.weight; attention_bias / mlp_bias when blk.0.attn_q.bias /
 * blk.0.ffn_gate.bias exist; bos from tokenizer.ggml.bos_token_id (else -1),
 * eos from tokenizer.ggml.eos_token_id plus eot_token_id and eom_token_id
 * when they differ. Llama 3 rope scaling, which llama.cpp stores as the
 * tensor rope_freqs.weight, becomes rope_scaling llama3 when its factors
 * match that scheme with low_freq_factor 1 and high_freq_factor 4 (every
 * Llama 3 release), else LMK_EUNSUP.
 * @return : 0, LMK_EUNSUP (another architecture or an unsupported feature)
 * or LMK_EFORMAT, with a message naming the file and the key */
int lmk_gguf_llama_config(const lmk_gguf *g, lmk_llama_config *cfg);

/* lmk_llama_init(m, config, trainable), then every weight: each GGUF tensor
 * of shape ne = [in, out] fills the Hugging Face (out, in) weight, after
 * dequantization. Every tensor the model needs must be there with its
 * shape; tensors the model does not know are refused.
 * @return : 0 or a negative code naming the file and the tensor (m is
 * freed on failure) */
int lmk_gguf_llama_load(const lmk_gguf *g, lmk_llama *m, int trainable);

#endif
