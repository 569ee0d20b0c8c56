/* bytetok.h: the byte-level tokenizer. Ids 0..255 are the bytes of the text
 * (UTF-8 or anything else, passed through unchanged), then three special
 * tokens: 256 <|bos|>, 257 <|eos|>, 258 <|pad|>. The vocabulary is exactly
 * 259 ids (LMK_BYTETOK_VOCAB); a model may have more rows than that (a size
 * rounded up for speed), and ids it samples beyond the vocabulary decode as
 * U+FFFD. Encoding never fails and never sees special tokens in the text:
 * the string "<|eos|>" in a file is seven bytes.
 * Owns: nothing. Needs: err. Never: allocates, prints or exits. */
#ifndef LMK_BYTETOK_H
#define LMK_BYTETOK_H

#include <stddef.h>
#include <stdint.h>

enum {
	LMK_BYTETOK_BOS = 256,
	LMK_BYTETOK_EOS = 257,
	LMK_BYTETOK_PAD = 258,
	LMK_BYTETOK_VOCAB = 259,
};

/* Flags of lmk_bytetok_encode. */
enum { LMK_BYTETOK_ADD_BOS = 1, LMK_BYTETOK_ADD_EOS = 2 };
/* Flags of lmk_bytetok_decode. */
enum { LMK_BYTETOK_SKIP_SPECIAL = 1 };

/* Encodes len bytes of text into ids, one id per byte, preceded by <|bos|>
 * and followed by <|eos|> as flags ask. ids needs room for len + 2.
 * @return : the number of ids written */
size_t lmk_bytetok_encode(const void *text, size_t len, int32_t *ids, int flags);

/* Decodes n ids into out, writing at most cap bytes and a terminating NUL
 * when cap > 0 (snprintf-like): bytes as themselves, special tokens as their
 * names ("<|eos|>") unless flags has LMK_BYTETOK_SKIP_SPECIAL, and any other
 * id (negative, or 259 and above) as U+FFFD (3 bytes).
 * @return : the number of bytes the whole text needs, NUL not counted */
size_t lmk_bytetok_decode(const int32_t *ids, size_t n, char *out, size_t cap, int flags);

/* @return : the name of a special token ("<|bos|>"), or NULL for a byte
 * or an id outside the vocabulary */
const char *lmk_bytetok_special_name(int32_t id);
/* @return : the id of a special token named name, or LMK_EINVAL (message
 * recorded) when name is none of them */
int lmk_bytetok_special_id(const char *name);

#endif
