/* test_chat.c: chat templates (lib/chat).
 *
 * Against transformers' apply_chat_template (tests/fixtures/tokenizer/
 * chat_cases.json, made by scripts/tokenizer-check.py fixtures): the
 * templates of SmolLM2-135M-Instruct, Qwen2-Instruct, plain ChatML and
 * Llama 3 on conversations with and without a system message, a first
 * message from the assistant, white space that Llama 3 trims, non-ASCII
 * text, and with and without the generation prompt. Then what transformers
 * refuses (no messages), unknown templates (an error, or plain prompting
 * when allowed) and the template that SmolLM2's GGUF carries, when
 * models/smollm2-135m-instruct.gguf is there.
 * Fixtures are found under $LMK_ROOT (default "."). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "chat.h"
#include "err.h"

static const char *root(void)
{
	const char *r = getenv("LMK_ROOT");
	return r && *r ? r : ".";
}

static json_t *load_cases(void)
{
	char path[1024];
	json_error_t e;
	snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/chat_cases.json", root());
	json_t *j = json_load_file(path, 0, &e);
	ck_assert_msg(j != NULL, "%s: %s (line %d)", path, e.text, e.line);
	return j;
}

START_TEST(test_transformers_cases)
{
	json_t *j = load_cases();
	const char *bos = json_string_value(json_object_get(j, "bos_token"));
	json_t *tmpls = json_object_get(j, "templates"), *c;
	size_t i;
	int n = 0;
	json_array_foreach(json_object_get(j, "cases"), i, c) {
		const char *name = json_string_value(json_object_get(c, "template"));
		lmk_chat chat;
		ck_assert_msg(lmk_chat_init(&chat, json_string_value(json_object_get(tmpls, name)), bos,
					    0) == 0, "%s: %s", name, lmk_errmsg());
		ck_assert_int_eq(chat.kind, !strcmp(name, "llama3") ? LMK_CHAT_LLAMA3 : LMK_CHAT_CHATML);
		json_t *msgs = json_object_get(c, "messages"), *m;
		size_t nm = json_array_size(msgs), k;
		lmk_chat_msg *mv = calloc(nm + 1, sizeof *mv);
		json_array_foreach(msgs, k, m) {
			mv[k].role = json_string_value(json_object_get(m, "role"));
			mv[k].content = json_string_value(json_object_get(m, "content"));
		}
		char *out;
		int gen = json_is_true(json_object_get(c, "add_generation_prompt"));
		int64_t len = lmk_chat_render(&chat, mv, nm, gen, &out);
		const char *want = json_string_value(json_object_get(c, "expected"));
		ck_assert_msg(len >= 0 && !strcmp(out, want) && (size_t)len == strlen(want),
			      "case %zu (%s, %zu messages, generation prompt %d):\nours: '%s'\nHF:   '%s'",
			      i, name, nm, gen, len >= 0 ? out : lmk_errmsg(), want);
		free(out);
		free(mv);
		lmk_chat_free(&chat);
		n++;
	}
	printf("test_chat: %d renderings equal to transformers' apply_chat_template\n", n);
	ck_assert_int_ge(n, 40);
	json_decref(j);
}
END_TEST

START_TEST(test_recognised_parts)
{
	json_t *j = load_cases();
	json_t *tmpls = json_object_get(j, "templates");
	lmk_chat c;
	ck_assert_int_eq(lmk_chat_init(&c, json_string_value(json_object_get(tmpls, "smollm2")), NULL, 0), 0);
	ck_assert_str_eq(c.system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
	ck_assert_str_eq(c.stop, "<|im_end|>");
	ck_assert_str_eq(lmk_chat_kind_name(c.kind), "chatml");
	lmk_chat_free(&c);
	ck_assert_int_eq(lmk_chat_init(&c, json_string_value(json_object_get(tmpls, "qwen2")), NULL, 0), 0);
	ck_assert_str_eq(c.system, "You are a helpful assistant.");
	lmk_chat_free(&c);
	ck_assert_int_eq(lmk_chat_init(&c, json_string_value(json_object_get(tmpls, "chatml")), NULL, 0), 0);
	ck_assert_ptr_null(c.system);
	lmk_chat_free(&c);
	ck_assert_int_eq(lmk_chat_init(&c, json_string_value(json_object_get(tmpls, "llama3")), NULL, 0), 0);
	ck_assert_str_eq(c.bos, "<|begin_of_text|>");
	ck_assert_str_eq(c.stop, "<|eot_id|>");
	ck_assert_int_eq(c.trim, 1);
	/* no messages (transformers refuses them): only the prompt */
	char *out;
	ck_assert_int_eq(lmk_chat_render(&c, NULL, 0, 1, &out), 47);
	ck_assert_str_eq(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
	free(out);
	lmk_chat_msg bad = {"user", NULL};
	ck_assert_int_eq(lmk_chat_render(&c, &bad, 1, 1, &out), LMK_EINVAL);
	ck_assert_ptr_null(out);
	lmk_chat_free(&c);
	json_decref(j);
}
END_TEST

START_TEST(test_unknown_templates)
{
	static const char *mistral =
		"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
		"{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}";
	static const char *llama31 =
		"{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}"
		"{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting "
		"Knowledge Date: December 2023\\n\" }}<|eot_id|>";
	lmk_chat c;
	ck_assert_int_eq(lmk_chat_init(&c, mistral, NULL, 0), LMK_EUNSUP);
	ck_assert_int_eq(c.kind, LMK_CHAT_NONE);
	ck_assert_msg(strstr(lmk_errmsg(), "unknown chat template: '{{ bos_token }}{% for"),
		      "%s", lmk_errmsg());
	char *out;
	ck_assert_int_eq(lmk_chat_render(&c, NULL, 0, 1, &out), LMK_EINVAL);
	ck_assert_int_eq(lmk_chat_init(&c, llama31, NULL, 0), LMK_EUNSUP);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "Llama 3.1"));
	ck_assert_int_eq(lmk_chat_init(&c, NULL, NULL, 0), LMK_EUNSUP);
	ck_assert_str_eq(lmk_errmsg(), "the model has no chat template");
	ck_assert_int_eq(lmk_chat_init(&c, "", NULL, 0), LMK_EUNSUP);

	/* plain prompting when the caller allows it, with a code to warn on */
	ck_assert_int_eq(lmk_chat_init(&c, mistral, NULL, LMK_CHAT_ALLOW_PLAIN), LMK_CHAT_FELL_BACK);
	ck_assert_int_eq(c.kind, LMK_CHAT_PLAIN);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "unknown chat template"));
	lmk_chat_msg m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
			    {"", "anonymous"}};
	int64_t n = lmk_chat_render(&c, m, 4, 1, &out);
	ck_assert_str_eq(out, "System: Be brief.\nUser: Hi\nAssistant: Hello.\n: anonymous\nAssistant:");
	ck_assert_int_eq(n, (int64_t)strlen(out));
	free(out);
	lmk_chat_free(&c);
	ck_assert_int_eq(lmk_chat_init(&c, NULL, NULL, LMK_CHAT_ALLOW_PLAIN), LMK_CHAT_FELL_BACK);
	lmk_chat_free(&c);
}
END_TEST

START_TEST(test_smollm2_gguf)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/models/smollm2-135m-instruct.gguf", root());
	lmk_bpe *t;
	if (lmk_bpe_load(&t, path) == LMK_EIO) {
		printf("test_chat: SmolLM2 skipped: %s\n", lmk_errmsg());
		return;
	}
	ck_assert_msg(t != NULL, "%s", lmk_errmsg());
	lmk_chat c;
	ck_assert_int_eq(lmk_chat_init(&c, lmk_bpe_get_info(t)->chat_template, NULL, 0), 0);
	ck_assert_int_eq(c.kind, LMK_CHAT_CHATML);
	lmk_chat_msg m = {"user", "What is 2+2?"};
	char *out;
	int64_t n = lmk_chat_render(&c, &m, 1, 1, &out);
	ck_assert_str_eq(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
			      "trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
			      "<|im_end|>\n<|im_start|>assistant\n");
	/* the stop text is one token */
	int32_t *ids = NULL;
	size_t cap = 0;
	ck_assert_int_eq(lmk_bpe_encode(t, c.stop, strlen(c.stop), LMK_BPE_SPECIAL, &ids, &cap), 1);
	ck_assert_int_eq(ids[0], lmk_bpe_get_info(t)->eot);
	int64_t k = lmk_bpe_encode(t, out, (size_t)n, LMK_BPE_SPECIAL, &ids, &cap);
	ck_assert_int_gt(k, 10);
	ck_assert_int_eq(ids[0], 1); /* <|im_start|> */
	free(ids);
	free(out);
	lmk_chat_free(&c);
	lmk_bpe_free(t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chat");
	TCase *tc = tcase_create("chat");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_transformers_cases);
	tcase_add_test(tc, test_recognised_parts);
	tcase_add_test(tc, test_unknown_templates);
	tcase_add_test(tc, test_smollm2_gguf);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
