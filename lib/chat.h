/* chat.h: chat templates in wide use, recognised from the Jinja template a
 * GGUF (tokenizer.chat_template) or a tokenizer_config.json carries, and
 * rendered by hand to the same text as transformers' apply_chat_template:
 *   ChatML   <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen2), with the
 *            default system prompt when the template injects one;
 *   Llama 3  bos, then <|start_header_id|>role<|end_header_id|>\n\n
 *            content (trimmed)<|eot_id|>.
 * A template recognised as neither is an error, or, when the caller allows
 * it, plain prompting ("User: ...") with a return code that asks the program
 * to warn.
 * Owns: the recognised form and its strings. Needs: err.
 * Never: prints, exits or evaluates Jinja. */
#ifndef LMK_CHAT_H
#define LMK_CHAT_H

#include <stddef.h>
#include <stdint.h>

typedef enum lmk_chat_kind {
	LMK_CHAT_NONE = 0,
	LMK_CHAT_CHATML,
	LMK_CHAT_LLAMA3,
	LMK_CHAT_PLAIN,   /* "System: ...\nUser: ...\nAssistant:" */
} lmk_chat_kind;

typedef struct lmk_chat_msg {
	const char *role;    /* "system", "user", "assistant", or any other */
	const char *content;
} lmk_chat_msg;

typedef struct lmk_chat {
	lmk_chat_kind kind;
	char *system;        /* ChatML: the system prompt the template puts
			      * first when messages[0] is not a system
			      * message; NULL when it puts none */
	char *bos;           /* Llama 3: the bos token's text */
	int trim;            /* Llama 3: content | trim */
	const char *stop;    /* the text that ends a turn ("<|im_end|>",
			      * "<|eot_id|>"); NULL for plain prompting */
} lmk_chat;

/* Flags of lmk_chat_init. */
enum { LMK_CHAT_ALLOW_PLAIN = 1 };
/* Positive return of lmk_chat_init: the template was not recognised and
 * plain prompting was chosen; lmk_errmsg() says why, for a warning. */
enum { LMK_CHAT_FELL_BACK = 1 };

/* Recognises tmpl (NULL or "" when the model carries none). bos is the text
 * of the tokenizer's bos token (NULL: "<|begin_of_text|>").
 * @return : 0; LMK_CHAT_FELL_BACK when flags has LMK_CHAT_ALLOW_PLAIN and
 * the template is unknown; LMK_EUNSUP (the message quotes the start of the
 * template) or LMK_ENOMEM */
int lmk_chat_init(lmk_chat *c, const char *tmpl, const char *bos, int flags);
void lmk_chat_free(lmk_chat *c);

/* Renders n messages, then the assistant's header when
 * add_generation_prompt, into *out (malloc'ed, NUL-terminated).
 * @return : its length, or LMK_EINVAL (a NULL role or content), LMK_ENOMEM */
int64_t lmk_chat_render(const lmk_chat *c, const lmk_chat_msg *m, size_t n,
			int add_generation_prompt, char **out);

/* @return : "chatml", "llama3", "plain" or "none" */
const char *lmk_chat_kind_name(lmk_chat_kind k);

#endif
