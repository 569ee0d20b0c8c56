#!/usr/bin/env python3
"""tokenizer-check.py: makes the tokenizer fixtures and the NFC tables.

  scripts/tokenizer-check.py fixtures [DIR]
      Trains a small byte-level BPE with Hugging Face `tokenizers` and writes
      into DIR (default tests/fixtures/tokenizer):
        tiny.json        the tokenizer.json (700 tokens, 5 special ones)
        tiny_cases.json  variants of it (pre-tokenizers, normalizers, added
                         token options) and, for each variant and each text,
                         the ids `tokenizers` gives, with and without special
                         tokens matched
        chat_cases.json  chat templates (SmolLM2, Qwen2, ChatML, Llama 3) and
                         what transformers' apply_chat_template renders for a
                         list of conversations
      tests/test_bpe.c and tests/test_chat.c check our library against them.
  scripts/tokenizer-check.py nfc-tables [lib/bpe.c]
      Rewrites the NFC tables between the BEGIN/END NFC TABLES markers of
      lib/bpe.c from Python's unicodedata.

Needs: tokenizers, transformers (fixtures only).
"""
import json
import os
import sys
import unicodedata

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
         r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
         r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>"]


def bl(use_regex=True, prefix=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
            "use_regex": use_regex}


def split(pattern, behavior="Isolated", invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern},
            "behavior": behavior, "invert": invert}


def seq(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


# name -> overrides of tiny.json (see apply_variant; tests/test_bpe.c does the same)
VARIANTS = {
    "gpt2": {},
    "gpt2-strings": {"merges_as_strings": True},
    "prefix-space": {"pre_tokenizer": bl(True, True)},
    "smollm": {"pre_tokenizer": seq({"type": "Digits", "individual_digits": True}, bl())},
    "digits": {"pre_tokenizer": seq({"type": "Digits", "individual_digits": False}, bl())},
    "llama3": {"pre_tokenizer": seq(split(LLAMA3), bl(False)), "ignore_merges": True},
    "qwen2": {"normalizer": {"type": "NFC"}, "pre_tokenizer": seq(split(QWEN2), bl(False))},
    "gpt4o": {"pre_tokenizer": seq(split(GPT4O), bl(False))},
    "removed": {"pre_tokenizer": seq(split(r"\s+", "Removed"), bl(False))},
    "merged-prev": {"pre_tokenizer": seq(split(r"[\p{P}\s]", "MergedWithPrevious"), bl(False))},
    "merged-next": {"pre_tokenizer": seq(split(" ", "MergedWithNext", literal=True), bl(False))},
    "contiguous": {"pre_tokenizer": seq(split(r"\p{L}", "Contiguous"), bl(False))},
    "invert": {"pre_tokenizer": seq(split(r"\p{L}+", "Isolated", invert=True), bl(False))},
    "zero-width": {"pre_tokenizer": seq(split(r"(?=(\d{3})+(?!\d))"), bl())},
    "added-opts": {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
        "added_tokens": [
            {"content": "<mask>", "special": True, "lstrip": True},
            {"content": "[R]", "special": True, "rstrip": True},
            {"content": "word", "special": False, "single_word": True, "normalized": False},
            {"content": "Cafe\u0301", "special": False, "normalized": True},
            {"content": " hello", "special": False, "normalized": False},
        ],
    },
}

TEXTS = [
    "", " ", "  ", "\n", "hello", " hello", "  hello  world  ", "Hello, World!",
    "a  1", "x \n 1", "line1\nline2\n\n\nline3", "tab\tsep\t\tx", "crlf\r\nnext\r\n\r\n",
    "1234567 12 3.14159 1,000,000 2024-01-02", "It's I'm you're we've he'll they'd don't",
    "IT'S I'M YOU'RE 'll 'LL 'ſ", "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "cafe\u0301 nai\u0308ve",
    "\u212b \u00c5 A\u030a", "\u1112\u1161\u11ab\u1100\u116e\u11a8 \ud55c\uad6d",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u4e2d\u6587\u3002",
    "emoji \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308",
    "\u0645\u0631\u062d\u0628\u0627 \u05e2\u05d1\u05e8\u05d9\u05ea \u03a9\u03bc\u03ad\u03b3\u03b1 \ufb01",
    "a\u00a0b\u2009c\u3000d\u180ee\u0085f \u2028g", "<|im_start|>user\nhi<|im_end|>\n",
    "a<|im_end|>b<|endoftext|>", "<|im_start|><|im_end|> <|eot_id|>",
    "x=1;y=2\n\tif(x){return}", "ABCdefGHI jklMNO", "1st 2nd 3rd 10000th",
    "a <mask> b", "x  <mask>", "[R]   y", "word words sword word.", "Caf\u00e9 Cafe\u0301 cafe",
    " hello hello", "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
]

CHAT_TEMPLATES = {
    # SmolLM2-135M-Instruct, as its GGUF carries it
    "smollm2": ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
                "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # Qwen2-Instruct: the same form with \n escapes in the literals
    "qwen2": ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    # plain ChatML, no system prompt of its own
    "chatml": ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
               "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    # Meta-Llama-3-8B-Instruct
    "llama3": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
               "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
               "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
               "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What's 2+2?"}],
    [{"role": "user", "content": "  spaced out \n\t"}, {"role": "assistant", "content": "\u3000ok\u00a0\n"}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "caf\u00e9 \U0001f44d"}],
    [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"},
     {"role": "tool", "content": "{\"x\": 1}"}],
    [{"role": "user", "content": "line one\nline two\n\n"}],
]


def nfc_tables():
    out = ["/* BEGIN NFC TABLES: made by scripts/tokenizer-check.py nfc-tables from",
           " * Python's unicodedata (Unicode %s); do not edit by hand. */" % unicodedata.unidata_version]

    def emit(items):
        line = ""
        for item in items:
            if len(line) + len(item) > 78:
                out.append("\t" + line.rstrip())
                line = ""
            line += item
        if line:
            out.append("\t" + line.rstrip())

    runs = []
    for c in range(0x110000):
        k = unicodedata.combining(chr(c))
        if not k:
            continue
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == k:
            runs[-1][1] = c
        else:
            runs.append([c, c, k])
    out.append("/* canonical combining class: {first, last, class}, sorted */")
    out.append("static const uint32_t nfc_ccc_tab[][3] = {")
    emit("{0x%X,0x%X,%d}," % (a, b, k) for a, b, k in runs)
    out.append("};")
    out.append("/* canonical decomposition, one level: {cp, first, second}, sorted; second")
    out.append(" * is 0 for a singleton and has C (NFC_COMPOSES) when NFC recomposes the pair */")
    out.append("static const uint32_t nfc_dec_tab[][3] = {")
    items = []
    for c in range(0x110000):
        if 0xAC00 <= c <= 0xD7A3:  # Hangul syllables: by arithmetic
            continue
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        p = [int(x, 16) for x in d.split()]
        if len(p) == 1:
            items.append("{0x%X,0x%X,0}," % (c, p[0]))
        else:
            comp = unicodedata.normalize("NFC", chr(p[0]) + chr(p[1])) == chr(c)
            items.append("{0x%X,0x%X,0x%X%s}," % (c, p[0], p[1], "|C" if comp else ""))
    emit(items)
    out.append("};")
    out.append("/* END NFC TABLES */")
    return "\n".join(out)


def cmd_nfc_tables(path):
    src = open(path, encoding="utf-8").read()
    a = src.index("/* BEGIN NFC TABLES")
    b = src.index("/* END NFC TABLES */") + len("/* END NFC TABLES */")
    open(path, "w", encoding="utf-8").write(src[:a] + nfc_tables() + src[b:])
    print(f"tokenizer-check: wrote the NFC tables into {path}")


def apply_variant(base, v):
    """tiny.json with the overrides of one variant (as tests/test_bpe.c applies them)"""
    d = json.loads(json.dumps(base))
    if "normalizer" in v:
        d["normalizer"] = v["normalizer"]
    if "pre_tokenizer" in v:
        d["pre_tokenizer"] = v["pre_tokenizer"]
    if v.get("ignore_merges"):
        d["model"]["ignore_merges"] = True
    if v.get("merges_as_strings"):
        d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    n = max(d["model"]["vocab"].values()) + 1
    for i, a in enumerate(v.get("added_tokens", [])):
        tok = {"id": n + i, "content": a["content"], "single_word": a.get("single_word", False),
               "lstrip": a.get("lstrip", False), "rstrip": a.get("rstrip", False),
               "normalized": a.get("normalized", not a["special"]), "special": a["special"]}
        d["added_tokens"].append(tok)
    return d


def cmd_fixtures(outdir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = os.environ.get("LMK_ROOT", os.getcwd())
    data = os.environ.get("LMK_DATA", os.path.join(root, "..", "shared", "data"))
    shakespeare = open(os.path.join(data, "text", "tinyshakespeare.txt"), encoding="utf-8").read()
    corpus = [shakespeare[i:i + 2000] for i in range(0, 200000, 2000)] + TEXTS * 20

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    base = json.loads(tok.to_str())
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "tiny.json"), "w", encoding="utf-8") as f:
        json.dump(base, f, ensure_ascii=False, separators=(",", ":"))

    cases = []
    for name, v in VARIANTS.items():
        t = Tokenizer.from_str(json.dumps(apply_variant(base, v)))
        for text in TEXTS:
            # special=False only differs where the text has an added token
            for special in (True, False) if "<" in text or "[" in text else (True,):
                t.encode_special_tokens = not special
                ids = t.encode(text, add_special_tokens=False).ids
                cases.append({"variant": name, "special": special, "text": text, "ids": ids})
    with open(os.path.join(outdir, "tiny_cases.json"), "w", encoding="utf-8") as f:
        f.write('{"variants": %s,\n"cases": [\n' % json.dumps(VARIANTS, ensure_ascii=False))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")

    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(base)),
                                 bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    chats = []
    for name, tmpl in CHAT_TEMPLATES.items():
        for msgs in CONVERSATIONS:
            for gen in (True, False):
                text = hf.apply_chat_template(msgs, chat_template=tmpl, tokenize=False,
                                              add_generation_prompt=gen)
                chats.append({"template": name, "add_generation_prompt": gen, "messages": msgs,
                              "expected": text})
    with open(os.path.join(outdir, "chat_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "templates": CHAT_TEMPLATES, "cases": chats},
                  f, ensure_ascii=False, indent=0)
    print(f"tokenizer-check: wrote tiny.json ({len(base['model']['vocab'])} tokens), "
          f"tiny_cases.json ({len(cases)} cases) and chat_cases.json ({len(chats)} cases) in {outdir}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) >= 2 else 2
    if sys.argv[1] == "fixtures":
        cmd_fixtures(sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/tokenizer")
    elif sys.argv[1] == "nfc-tables":
        cmd_nfc_tables(sys.argv[2] if len(sys.argv) > 2 else "lib/bpe.c")
    else:
        print(f"tokenizer-check: unknown command '{sys.argv[1]}'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
