/* bpe.h: byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM2), loaded
 * from a Hugging Face tokenizer.json or from a GGUF file's tokenizer.ggml.*
 * metadata, with Hugging Face's semantics: added and special tokens are
 * matched first (leftmost, then longest), the rest is normalized (none or
 * NFC), split by the pre-tokenizer's regular expressions (PCRE2, in UTF mode
 * with Unicode properties) and merged by rank.
 * Owns: the vocabulary, the merges, the compiled patterns and a cache of
 * encoded words. Needs: err, gguf, jansson, pcre2-8.
 * Never: prints or exits; one lmk_bpe is not safe to share between threads
 * while encoding (the word cache is not locked). */
#ifndef LMK_BPE_H
#define LMK_BPE_H

#include <stddef.h>
#include <stdint.h>

struct lmk_gguf;

typedef struct lmk_bpe lmk_bpe;

/* What a tokenizer says about itself. Ids are -1 when the file names none. */
typedef struct lmk_bpe_info {
	int32_t n_vocab;         /* largest id + 1 (ids may have holes) */
	int32_t bos, eos, eot, unk, pad;
	int add_bos, add_eos;    /* what the file asks encoders to add */
	const char *pre;         /* pre-tokenizer: a tokenizer.ggml.pre name,
				  * or "tokenizer.json" */
	const char *normalizer;  /* "none" or "nfc" */
	const char *chat_template; /* NULL when the file carries none */
} lmk_bpe_info;

/* Flags of lmk_bpe_encode. */
enum {
	LMK_BPE_SPECIAL = 1, /* match special tokens written in the text
			      * ("<|im_end|>" becomes its id); without it they
			      * are ordinary text. Added tokens that are not
			      * special are always matched, as in HF */
	LMK_BPE_BOS = 2,     /* prepend info.bos (LMK_EINVAL if there is none) */
	LMK_BPE_EOS = 4,     /* append info.eos (LMK_EINVAL if there is none) */
};
/* Flags of lmk_bpe_decode. */
enum { LMK_BPE_SKIP_SPECIAL = 1 };

/* Loads a tokenizer.json held in memory; name is used in messages. When
 * config is not NULL it is a tokenizer_config.json (bos_token, eos_token,
 * add_bos_token, add_eos_token, chat_template).
 * @return : 0, or LMK_EFORMAT (malformed), LMK_EUNSUP (a model, normalizer,
 * pre-tokenizer or decoder other than byte-level BPE's: the message names
 * it), LMK_ENOMEM; *out is NULL on failure */
int lmk_bpe_load_json_mem(lmk_bpe **out, const void *json, size_t len,
			  const void *config, size_t config_len, const char *name);
/* Loads path (a tokenizer.json) and, when it exists, tokenizer_config.json
 * in the same folder. @return : as lmk_bpe_load_json_mem, or LMK_EIO */
int lmk_bpe_load_json(lmk_bpe **out, const char *path);
/* Loads from a GGUF file's metadata: tokenizer.ggml.model "gpt2" with
 * tokens, merges, token_type (control is special, user-defined is an added
 * token) and pre (the name of the pre-tokenizer, mapped to its patterns as
 * llama.cpp does). @return : 0, or LMK_EUNSUP for a "llama" (SentencePiece)
 * or other tokenizer model and for an unknown pre name, LMK_EFORMAT */
int lmk_bpe_load_gguf(lmk_bpe **out, const struct lmk_gguf *g);
/* Loads path as GGUF when it starts with the GGUF magic, as a
 * tokenizer.json otherwise, and path/tokenizer.json when path is a folder.
 * @return : as the loaders above */
int lmk_bpe_load(lmk_bpe **out, const char *path);
void lmk_bpe_free(lmk_bpe *t);

const lmk_bpe_info *lmk_bpe_get_info(const lmk_bpe *t);

/* Encodes len bytes of text into token ids written from (*ids)[0] on; *ids
 * is a malloc'ed buffer of *cap ids, grown as needed (NULL and 0 at first).
 * Text is UTF-8; each run of bytes that is not valid UTF-8 is split off and
 * encoded as bytes, so that decoding gives it back. A byte the vocabulary
 * has no token for is dropped, as HF drops it (SmolLM2 has none for 21
 * bytes that UTF-8 text hardly holds: 0xC0, 0xC1, 0xF5..0xFF, 0xF1, 0xF2
 * and six control characters). flags: LMK_BPE_*.
 * @return : the number of ids, or a negative code (LMK_ENOMEM, LMK_EINVAL) */
int64_t lmk_bpe_encode(lmk_bpe *t, const void *text, size_t len, int flags,
		       int32_t **ids, size_t *cap);

/* Decodes n ids into out, writing at most cap bytes and a terminating NUL
 * when cap > 0 (snprintf-like). Tokens become their bytes, so an encoded
 * text comes back unchanged (unless the normalizer changed it, a prefix
 * space was added, or a byte had no token); special tokens become their text
 * unless flags has LMK_BPE_SKIP_SPECIAL; an id outside the vocabulary, or a
 * hole in it, becomes U+FFFD.
 * @return : the number of bytes the whole text needs, NUL not counted */
size_t lmk_bpe_decode(const lmk_bpe *t, const int32_t *ids, size_t n,
		      char *out, size_t cap, int flags);

/* @return : the bytes of token id (not NUL-terminated) and their number in
 * *len, for decoding a stream one token at a time; NULL for an id outside
 * the vocabulary or a hole */
const char *lmk_bpe_token(const lmk_bpe *t, int32_t id, size_t *len);
/* @return : 1 if id is a special token (control), else 0 */
int lmk_bpe_is_special(const lmk_bpe *t, int32_t id);
/* @return : the id of the token whose text is exactly s (an added token or
 * a vocabulary entry), or -1 */
int32_t lmk_bpe_find(const lmk_bpe *t, const char *s, size_t len);

#endif
