/* bytetok.c: the byte-level tokenizer (see bytetok.h). */
#include <string.h>

#include "bytetok.h"
#include "err.h"

static const char *const special[] = { "<|bos|>", "<|eos|>", "<|pad|>" };
static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

size_t lmk_bytetok_encode(const void *text, size_t len, int32_t *ids, int flags)
{
	const unsigned char *s = text;
	size_t k = 0;

	if (flags & LMK_BYTETOK_ADD_BOS)
		ids[k++] = LMK_BYTETOK_BOS;
	for (size_t i = 0; i < len; i++)
		ids[k++] = s[i];
	if (flags & LMK_BYTETOK_ADD_EOS)
		ids[k++] = LMK_BYTETOK_EOS;
	return k;
}

const char *lmk_bytetok_special_name(int32_t id)
{
	if (id >= LMK_BYTETOK_BOS && id < LMK_BYTETOK_VOCAB)
		return special[id - LMK_BYTETOK_BOS];
	return NULL;
}

int lmk_bytetok_special_id(const char *name)
{
	for (int i = 0; i < LMK_BYTETOK_VOCAB - LMK_BYTETOK_BOS; i++)
		if (strcmp(name, special[i]) == 0)
			return LMK_BYTETOK_BOS + i;
	return lmk_err(LMK_EINVAL, "'%s' is not a special token of the byte tokenizer", name);
}

/* Appends len bytes at *k, keeping what does not fit out of out but still
 * counting it, as snprintf does. */
static void put(char *out, size_t cap, size_t *k, const char *s, size_t len)
{
	if (cap > 0 && *k < cap - 1) {
		size_t room = cap - 1 - *k;
		memcpy(out + *k, s, len < room ? len : room);
	}
	*k += len;
}

size_t lmk_bytetok_decode(const int32_t *ids, size_t n, char *out, size_t cap, int flags)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		if (id >= 0 && id < 256) {
			char b = (char)(unsigned char)id;
			put(out, cap, &k, &b, 1);
		} else if (id >= LMK_BYTETOK_BOS && id < LMK_BYTETOK_VOCAB) {
			if (!(flags & LMK_BYTETOK_SKIP_SPECIAL)) {
				const char *s = special[id - LMK_BYTETOK_BOS];
				put(out, cap, &k, s, strlen(s));
			}
		} else {
			put(out, cap, &k, replacement, sizeof replacement - 1);
		}
	}
	if (cap > 0)
		out[k < cap - 1 ? k : cap - 1] = '\0';
	return k;
}
