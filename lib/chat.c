/* chat.c: chat templates recognised by distinctive substrings and rendered
 * by hand. The forms follow the templates as transformers renders them
 * (tests/fixtures/tokenizer/chat_cases.json holds its output). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "err.h"

const char *lmk_chat_kind_name(lmk_chat_kind k)
{
	switch (k) {
	case LMK_CHAT_CHATML: return "chatml";
	case LMK_CHAT_LLAMA3: return "llama3";
	case LMK_CHAT_PLAIN: return "plain";
	default: return "none";
	}
}

void lmk_chat_free(lmk_chat *c)
{
	if (!c)
		return;
	free(c->system);
	free(c->bos);
	memset(c, 0, sizeof *c);
}

/* The default system prompt of a ChatML template: a string literal
 * '<|im_start|>system\n...<|im_end|>' whose text is constant, which the
 * template writes when the first message is not a system message (SmolLM2
 * writes a real newline in the literal, Qwen2 the escape \n).
 * @return : 0 (*out NULL when there is none), or LMK_ENOMEM */
static int chatml_system(const char *tmpl, char **out)
{
	static const char head[] = "<|im_start|>system";
	*out = NULL;
	for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
		if (p == tmpl || (p[-1] != '\'' && p[-1] != '"'))
			continue;
		char quote = p[-1];
		const char *s = p + sizeof head - 1;
		if (*s == '\n')
			s++;
		else if (s[0] == '\\' && s[1] == 'n')
			s += 2;
		else
			continue;
		const char *e = strstr(s, "<|im_end|>");
		if (!e)
			continue;
		/* the literal must run to <|im_end|> without closing */
		bool closed = false;
		for (const char *q = s; q < e; q++) {
			if (*q == '\\' && q + 1 < e) {
				q++;
			} else if (*q == quote) {
				closed = true;
				break;
			}
		}
		if (closed)
			continue;
		char *o = malloc((size_t)(e - s) + 1);
		if (!o)
			return lmk_err(LMK_ENOMEM, "chat: out of memory");
		size_t k = 0;
		for (const char *q = s; q < e; q++) {
			if (*q == '\\' && q + 1 < e) {
				q++;
				o[k++] = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
			} else {
				o[k++] = *q;
			}
		}
		o[k] = 0;
		*out = o;
		return 0;
	}
	return 0;
}

int lmk_chat_init(lmk_chat *c, const char *tmpl, const char *bos, int flags)
{
	memset(c, 0, sizeof *c);
	const char *why = NULL;
	if (!tmpl || !*tmpl) {
		why = "the model has no chat template";
	} else if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|end_header_id|>") &&
		   strstr(tmpl, "<|eot_id|>")) {
		if (strstr(tmpl, "Cutting Knowledge Date") || strstr(tmpl, "tools")) {
			why = "a Llama 3.1 or later template (dates, tools) is not supported";
		} else {
			c->kind = LMK_CHAT_LLAMA3;
			c->stop = "<|eot_id|>";
			c->trim = strstr(tmpl, "| trim") || strstr(tmpl, "|trim");
			if (!(c->bos = strdup(bos ? bos : "<|begin_of_text|>")))
				return lmk_err(LMK_ENOMEM, "chat: out of memory");
			return 0;
		}
	} else if (strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>")) {
		c->kind = LMK_CHAT_CHATML;
		c->stop = "<|im_end|>";
		return chatml_system(tmpl, &c->system);
	}
	if (!why)
		why = "unknown chat template";
	/* quote the start of the template, on one line */
	char head[61];
	size_t k = 0;
	for (const char *p = tmpl ? tmpl : ""; *p && k < sizeof head - 1; p++)
		head[k++] = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
	head[k] = 0;
	if (k)
		lmk_err(LMK_EUNSUP, "%s: '%s%s'", why, head, tmpl[k] ? "..." : "");
	else
		lmk_err(LMK_EUNSUP, "%s", why);
	if (!(flags & LMK_CHAT_ALLOW_PLAIN))
		return LMK_EUNSUP;
	c->kind = LMK_CHAT_PLAIN;
	return LMK_CHAT_FELL_BACK;
}

typedef struct buf {
	char *s;
	size_t n, cap;
	bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->s, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = 0;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* Python's str.isspace, which Jinja's trim strips: ASCII white space, the
 * separators U+001C..U+001F, and Unicode's white space. @return : the length
 * of the white character at s, or 0 */
static int py_space(const unsigned char *s)
{
	if ((*s >= 9 && *s <= 13) || (*s >= 0x1C && *s <= 0x20))
		return 1;
	if (s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0))
		return 2;
	if (s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80)
		return 3;
	if (s[0] == 0xE2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 ||
					     s[2] == 0xA9 || s[2] == 0xAF))
		return 3;
	if (s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F)
		return 3;
	if (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80)
		return 3;
	return 0;
}

static void put_trimmed(buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + strlen(s);
	int l;
	while (p < e && (l = py_space(p)))
		p += l;
	/* the end: step back over whole characters */
	const unsigned char *end = p;
	for (const unsigned char *q = p; q < e;) {
		l = py_space(q);
		if (l) {
			q += l;
		} else {
			q++;
			while (q < e && (*q & 0xC0) == 0x80)
				q++;
			end = q;
		}
	}
	put(b, (const char *)p, (size_t)(end - p));
}

int64_t lmk_chat_render(const lmk_chat *c, const lmk_chat_msg *m, size_t n,
			int add_generation_prompt, char **out)
{
	*out = NULL;
	for (size_t i = 0; i < n; i++)
		if (!m[i].role || !m[i].content)
			return lmk_err(LMK_EINVAL, "chat: message %zu: null role or content", i);
	buf b = {0};
	puts_(&b, "");
	switch (c->kind) {
	case LMK_CHAT_CHATML:
		if (n && c->system && strcmp(m[0].role, "system")) {
			puts_(&b, "<|im_start|>system\n");
			puts_(&b, c->system);
			puts_(&b, "<|im_end|>\n");
		}
		for (size_t i = 0; i < n; i++) {
			puts_(&b, "<|im_start|>");
			puts_(&b, m[i].role);
			puts_(&b, "\n");
			puts_(&b, m[i].content);
			puts_(&b, "<|im_end|>\n");
		}
		if (add_generation_prompt)
			puts_(&b, "<|im_start|>assistant\n");
		break;
	case LMK_CHAT_LLAMA3:
		if (n)
			puts_(&b, c->bos);
		for (size_t i = 0; i < n; i++) {
			puts_(&b, "<|start_header_id|>");
			puts_(&b, m[i].role);
			puts_(&b, "<|end_header_id|>\n\n");
			if (c->trim)
				put_trimmed(&b, m[i].content);
			else
				puts_(&b, m[i].content);
			puts_(&b, "<|eot_id|>");
		}
		if (add_generation_prompt)
			puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
		break;
	case LMK_CHAT_PLAIN:
		for (size_t i = 0; i < n; i++) {
			const char *r = m[i].role;
			char first = *r >= 'a' && *r <= 'z' ? (char)(*r - 'a' + 'A') : *r;
			if (*r) {
				put(&b, &first, 1);
				puts_(&b, r + 1);
			}
			puts_(&b, ": ");
			puts_(&b, m[i].content);
			puts_(&b, "\n");
		}
		if (add_generation_prompt)
			puts_(&b, "Assistant:");
		break;
	default:
		free(b.s);
		return lmk_err(LMK_EINVAL, "chat: render: no template recognised (lmk_chat_init failed)");
	}
	if (b.oom) {
		free(b.s);
		return lmk_err(LMK_ENOMEM, "chat: out of memory");
	}
	*out = b.s;
	return (int64_t)b.n;
}
