/* fuzz_tokenizer.c: libFuzzer target for byte-level BPE (lib/bpe).
 * An input is loaded as a tokenizer.json; whatever loads encodes a fixed
 * text (special tokens matched and not, with bos and eos when it has them)
 * and decodes it. An input that starts with "#TEXT\n" is instead text for
 * two built-in tokenizers that have a token for every byte: one without a
 * normalizer, whose round trip must give the text back, and one with NFC,
 * added tokens (lstrip, rstrip, single_word) and every Split behaviour. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static const char TEXT[] = "Hello, world!  It's 2024:\t1234567\r\n<|im_end|> caf\xc3\xa9 "
			   "cafe\xcc\x81 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd "
			   "\xff\xc3 <m> [R] word\n\n";

static void exercise(lmk_bpe *t, const char *s, size_t n, int roundtrip)
{
	int32_t *ids = NULL;
	size_t cap = 0;
	for (int flags = 0; flags < 8; flags++) {
		int64_t m = lmk_bpe_encode(t, s, n, flags, &ids, &cap);
		if (m < 0)
			continue; /* bos or eos asked for and absent */
		size_t need = lmk_bpe_decode(t, ids, (size_t)m, NULL, 0, 0);
		char *o = malloc(need + 1);
		CHECK(o);
		CHECK(lmk_bpe_decode(t, ids, (size_t)m, o, need + 1, flags & 1) <= need);
		CHECK(lmk_bpe_decode(t, ids, (size_t)m, o, need + 1, 0) == need);
		if (roundtrip && flags == 0)
			CHECK(need == n && !memcmp(o, s, n));
		for (int64_t i = 0; i < m; i++) {
			size_t l;
			CHECK(lmk_bpe_token(t, ids[i], &l) != NULL);
		}
		free(o);
	}
	free(ids);
}

/* GPT-2's spelling of byte b in UTF-8. */
static int spell(int b, char *o)
{
	unsigned cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? (unsigned)b
		      : b <= 32 ? 256u + (unsigned)b : b <= 160 ? 289u + (unsigned)b - 127u : 323u;
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	o[0] = (char)(0xC0 | cp >> 6);
	o[1] = (char)(0x80 | (cp & 0x3F));
	return 2;
}

static lmk_bpe *builtin(int fancy)
{
	static char json[16384];
	size_t k = 0;
	k += (size_t)snprintf(json + k, sizeof json - k, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
	for (int b = 0; b < 256; b++) {
		char s[4];
		int l = spell(b, s);
		/* '"' and '\\' need escapes in JSON */
		k += (size_t)snprintf(json + k, sizeof json - k, "%s\"%s%.*s\":%d", b ? "," : "",
				      b == '"' || b == '\\' ? "\\" : "", l, s, b);
	}
	k += (size_t)snprintf(json + k, sizeof json - k,
		",\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258,\"\\u0120\\u0120\":259,\"in\":260},"
		"\"merges\":[\"\\u0120 t\",\"h e\",\"\\u0120t he\",\"\\u0120 \\u0120\",[\"i\",\"n\"]]},"
		"\"added_tokens\":[{\"id\":261,\"content\":\"<|im_end|>\",\"special\":true}%s],"
		"\"normalizer\":%s,\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"}}",
		fancy ? ",{\"id\":262,\"content\":\"<m>\",\"special\":true,\"lstrip\":true},"
			"{\"id\":263,\"content\":\"[R]\",\"special\":true,\"rstrip\":true},"
			"{\"id\":264,\"content\":\"word\",\"special\":false,\"single_word\":true},"
			"{\"id\":265,\"content\":\"cafe\\u0301\",\"special\":false,\"normalized\":true}" : "",
		fancy ? "{\"type\":\"NFC\"}" : "null",
		fancy ? "{\"type\":\"Sequence\",\"pretokenizers\":["
			"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s\"},\"behavior\":\"MergedWithNext\"},"
			"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{P}\"},\"behavior\":\"MergedWithPrevious\"},"
			"{\"type\":\"Split\",\"pattern\":{\"String\":\"x\"},\"behavior\":\"Removed\"},"
			"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}\"},\"behavior\":\"Contiguous\",\"invert\":true},"
			"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?=(\\\\d{3})+(?!\\\\d))\"},\"behavior\":\"Isolated\"},"
			"{\"type\":\"Digits\",\"individual_digits\":true},"
			"{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}]}"
		      : "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
			"\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?"
			"[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
			"\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
	lmk_bpe *t = NULL;
	CHECK(lmk_bpe_load_json_mem(&t, json, k, NULL, 0, "builtin") == 0);
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static lmk_bpe *plain, *fancy;
	if (size >= 6 && !memcmp(data, "#TEXT\n", 6)) {
		if (!plain) {
			plain = builtin(0);
			fancy = builtin(1);
		}
		exercise(plain, (const char *)data + 6, size - 6, 1);
		exercise(fancy, (const char *)data + 6, size - 6, 0);
		return 0;
	}
	lmk_bpe *t = NULL;
	if (lmk_bpe_load_json_mem(&t, data, size, NULL, 0, "fuzz") == 0) {
		CHECK(t != NULL);
		exercise(t, TEXT, sizeof TEXT - 1, 0);
		lmk_bpe_free(t);
	} else {
		CHECK(t == NULL);
	}
	return 0;
}
