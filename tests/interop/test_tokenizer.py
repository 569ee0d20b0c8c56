#!/usr/bin/env python3
"""test_tokenizer.py: our byte-level BPE gives Hugging Face's token ids.

SmolLM2-135M-Instruct's tokenizer (models/smollm2-135m-instruct.gguf, from
scripts/get-model.sh) against Hugging Face `tokenizers`, on the whole of
$LMK_DATA/text/tinyshakespeare.txt, every context of
$LMK_DATA/squad/squad_val.json, and a list of hard cases (spaces, newlines,
tabs, CR LF, digit runs, contractions, emoji with ZWJ, CJK, combining marks,
RTL, special tokens in the text, the empty string), with special tokens
matched and not. Three pairs are compared:
  - our GGUF loader (tokenizer.ggml.pre "smollm": digits split one by one,
    then GPT-2's pattern) against SmolLM2's own tokenizer.json form
    (pre_tokenizer Sequence[Digits(individual_digits), ByteLevel]);
  - our tokenizer.json loader on that same file;
  - our tokenizer.json loader on the file transformers makes from the GGUF
    (AutoTokenizer.from_pretrained(..., gguf_file=...)), whose conversion
    keeps only ByteLevel and so splits "a  1" differently from SmolLM2.
plus 3000 random strings (fixed seed) of characters the patterns treat
differently. Then Llama 3's (ignore_merges), Qwen2's (NFC), GPT-4o's
pre-tokenizers and ByteLevel's add_prefix_space, each put in a
tokenizer.json with SmolLM2's vocabulary, on the SQuAD contexts, the hard
cases and the random strings. Decoding our ids gives back every text byte
for byte, including text with bytes that are not UTF-8 (which HF cannot
take, so only the round trip is checked there), except the 21 bytes that
SmolLM2's vocabulary has no token for, which HF and we drop.

Our side runs through $BUILD/tests/test_bpe (tests/test_bpe.c):
  test_bpe --encode FILE --records [--special] < NUL-separated texts
  test_bpe --decode FILE < lines of ids
Exit 0 pass, 1 fail, 77 skip (no tokenizers, transformers or gguf package,
no model file, or test_bpe not built).
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time


def skip(why):
    print(f"test_tokenizer: skipped: {why}")
    sys.exit(77)


def fail(why):
    print(f"test_tokenizer: FAIL: {why}")
    sys.exit(1)


try:
    import gguf  # noqa: F401  (transformers' GGUF loading needs it)
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
except Exception as e:  # ImportError, or a broken installation
    skip(f"tokenizers, transformers and gguf are needed ({e})")

root = os.environ.get("LMK_ROOT", os.getcwd())
build = os.environ.get("BUILD", "build")
data = os.environ.get("LMK_DATA", os.path.join(root, "..", "shared", "data"))
model = os.path.join(root, "models", "smollm2-135m-instruct.gguf")
test_bpe = os.path.join(root, build, "tests", "test_bpe")
if not os.path.exists(model):
    skip(f"{model} is missing (scripts/get-model.sh fetches it)")
if not os.access(test_bpe, os.X_OK):
    skip(f"{test_bpe} is not built")

HARD = [
    "", " ", "  ", "   ", "\n", "\n\n", " \n", "\t", "\t\t x", "\r\n", "a\r\nb\r\n\r\n",
    "Hello world", " Hello world", "  Hello  world  ", "Hello\nworld\n", "\n\n\nHello",
    "trailing spaces   ", "   leading spaces", "mixed \t \n \r\n whitespace",
    "0", "12", "123", "1234567890", "3.14159", "1,000,000", "a1b2c3", "x 1", "x  1", "x   12",
    "x \n 1", "2024-01-02T03:04:05Z", "$100.00", "\u0661\u0662\u0663 \u00bd \u2167 \u2460",
    "It's", "it's can't won't", "I'm you're we've he'll they'd", "IT'S I'M WE'VE THEY'LL",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "rock'n'roll", "O'Brien's",
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308 flag", "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002", "\u4e2d\u6587\u5b57\u7b26",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u1112\u1161\u11ab\u1100\u116e\u11a8",
    "caf\u00e9", "cafe\u0301", "e\u0301\u0301\u0301", "\u1e69\u0323", "\u212b", "Z\u0351\u036b\u0343",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "mixed \u05e2\u05d1\u05e8\u05d9\u05ea and English",
    "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\u03a9\u03bc\u03ad\u03b3\u03b1 \u0416\u0438\u0437\u043d\u044c", "\ufb01 \ufb02 \u2122 \u00b5",
    "a\u00a0b", "a\u2009b", "a\u3000b", "a\u180eb", "a \u0085b", "  \u0085", "a\u2028b\u2029c",
    "a\u200bb", "\ufeffbom", "\x01\x1f\x7f", "a\x04b\x06c\x1d", "\U00050000 \U00090000", "\u00ad soft", "tab\u000bvt\u000cff",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
    "a<|im_end|>b", "<|im_start|><|im_start|>", "< |im_start| >", "<|im_start", "<repo_name>x",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x**2  # square\n", "if (a && b) { c[i] = d->e; }",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
    "ALLCAPS WORDS HERE", "camelCaseWordsHere", "snake_case_words_here", "----====****",
    "...!!!???", "\u201cquoted\u201d \u2018single\u2019 \u00abguillemets\u00bb", "\u2014 \u2013 \u2026",
    "a" * 1000, " " * 1000, "ab" * 500, "\n" * 300, "1" * 300, "\U0001f600" * 100,
]
INVALID = [b"\xff", b"\xc3", b"a\xe2\x82b", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
           b"ok \xff\xfe text", b"\xe6\x97", b"caf\xc3", b"\x80\x80\x80 x", b"<|im_end|>\xc3(",
           b"\xf0\x9f\x98 \xe2\x28\xa1", bytes(range(1, 256))]


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


BYTELEVEL_NO_RE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                   "use_regex": False}
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
         r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
         r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# name, pre_tokenizer, other changes: Llama 3's, Qwen2's (with NFC) and
# GPT-4o's tokenizer.json forms
OTHER_PRE = [
    ("llama3", {"type": "Sequence", "pretokenizers": [split(LLAMA3), BYTELEVEL_NO_RE]},
     {"model": {"ignore_merges": True}}),
    ("qwen2", {"type": "Sequence", "pretokenizers": [split(QWEN2), BYTELEVEL_NO_RE]},
     {"top": {"normalizer": {"type": "NFC"}}}),
    ("gpt-4o", {"type": "Sequence", "pretokenizers": [split(GPT4O), BYTELEVEL_NO_RE]}, {}),
    ("prefix-space", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                      "use_regex": True}, {}),
]


def bytes_to_unicode():
    """GPT-2's map from bytes to the characters that spell them in vocabularies"""
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return {b: chr(c) for b, c in zip(bs, cs)}


def ours(path, texts, special):
    """ids for each text (bytes) from test_bpe --encode --records, and the time"""
    assert all(b"\0" not in t for t in texts)
    args = [test_bpe, "--encode", path, "--records"] + (["--special"] if special else [])
    p = subprocess.run(args, input=b"".join(t + b"\0" for t in texts), capture_output=True)
    if p.returncode != 0:
        fail(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    lines = p.stdout.decode().split("\n")
    if len(lines) != len(texts) + 1 or lines[-1] != "":
        fail(f"test_bpe --encode: expected {len(texts)} lines, found {len(lines) - 1}")
    m = re.search(r"in ([0-9.]+) s", p.stderr.decode())
    return [[int(x) for x in ln.split()] for ln in lines[:-1]], float(m.group(1)) if m else -1.0


def decoded(path, idss):
    p = subprocess.run([test_bpe, "--decode", path], capture_output=True,
                       input="".join(" ".join(map(str, ids)) + "\n" for ids in idss).encode())
    if p.returncode != 0:
        fail(f"test_bpe --decode: exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    out = p.stdout.split(b"\0")
    if len(out) != len(idss) + 1:
        fail(f"test_bpe --decode: expected {len(idss)} texts, found {len(out) - 1}")
    return out[:-1]


def hf_ids(tok, texts, special):
    tok.encode_special_tokens = not special
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def compare(label, texts, want, got):
    """@return : (tokens compared, mismatching texts)"""
    n = bad = 0
    for text, w, g in zip(texts, want, got):
        n += len(w)
        if w != g:
            bad += 1
            if bad <= 5:
                k = next((i for i, (a, b) in enumerate(zip(w, g)) if a != b), min(len(w), len(g)))
                print(f"test_tokenizer: {label}: mismatch in {text[:60]!r}... at token {k}: "
                      f"HF {w[max(0, k - 3):k + 3]} ours {g[max(0, k - 3):k + 3]}")
    return n, bad


def main():
    tmp = tempfile.mkdtemp(prefix="lmk-tok-")
    conv_dir = os.path.join(tmp, "converted")
    t0 = time.time()
    hf = AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))
    hf.save_pretrained(conv_dir)
    conv_path = os.path.join(conv_dir, "tokenizer.json")
    d = json.load(open(conv_path, encoding="utf-8"))
    if d["pre_tokenizer"].get("type") != "ByteLevel":
        fail(f"transformers' conversion changed: pre_tokenizer {d['pre_tokenizer']}")
    # SmolLM2's own tokenizer.json: the digits split one by one, then ByteLevel
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, d["pre_tokenizer"]]}
    smol_dir = os.path.join(tmp, "smollm2")
    os.makedirs(smol_dir)
    smol_path = os.path.join(smol_dir, "tokenizer.json")
    json.dump(d, open(smol_path, "w", encoding="utf-8"), ensure_ascii=False)
    conv = Tokenizer.from_file(conv_path)
    smol = Tokenizer.from_file(smol_path)
    print(f"test_tokenizer: reference tokenizers ready in {time.time() - t0:.1f} s")
    # SmolLM2's vocabulary has no token for 21 bytes (0xC0, 0xC1, 0xF5..0xFF,
    # a few controls, and the lead bytes 0xF1 and 0xF2): HF drops them, so we
    # do, and decoding gives the text back without them
    byte_level = bytes_to_unicode()
    missing = {b for b in range(256) if smol.token_to_id(byte_level[b]) is None}

    shakespeare = open(os.path.join(data, "text", "tinyshakespeare.txt"), encoding="utf-8").read()
    squad = [p["context"] for p in json.load(open(os.path.join(data, "squad", "squad_val.json"),
                                                  encoding="utf-8"))]
    # random strings (fixed seed) drawn from characters that the patterns
    # treat differently, and for NFC combining marks, jamo and singletons
    rnd = random.Random(1234)
    pool = (" " * 8 + "\n" * 3 + "\t\r\u00a0\u3000\u2028\u0085\u180e" + "'" * 4 + "sStTdDmMlLvVreE"
            + "abcxyzABC" + "0123456789" + "\u0661\u00bd" + ".,;!?-_/()[]{}<>|\"" + "\u00e9\u00c5\u212b"
            + "\u0301\u0316\u0327\u0308\u05b0\u0e31\u1100\u1161\u11a8\uac00\u0958\uf900"
            + "\u65e5\u672c\u0645\u05e9\U0001f44d\U0001f3fd\u200d\u017f")
    randoms = ["".join(rnd.choice(pool) for _ in range(rnd.randrange(1, 40))) for _ in range(3000)]
    sets = [("tinyshakespeare", [shakespeare], (False,)), ("squad contexts", squad, (False,)),
            ("hard cases", HARD, (True, False)), ("random strings", randoms, (True,))]
    total = bad_total = differ = 0
    for name, texts, specials in sets:
        enc = [t.encode("utf-8") for t in texts]
        for special in specials:
            for label, path, ref in (("gguf", model, smol), ("smollm2 json", smol_path, smol),
                                     ("converted json", conv_path, conv)):
                want = hf_ids(ref, texts, special)
                if label == "converted json":
                    differ += sum(a != b for a, b in zip(want, hf_ids(smol, texts, special)))
                got, secs = ours(path, enc, special)
                n, bad = compare(f"{name} ({label}, special {int(special)})", texts, want, got)
                total += n
                bad_total += bad
                if name == "tinyshakespeare" and label == "gguf":
                    print(f"test_tokenizer: tinyshakespeare: {len(enc[0])} bytes, {n} tokens "
                          f"encoded in {secs:.3f} s ({len(enc[0]) / max(secs, 1e-9) / 1e6:.1f} MB/s)")
                    if secs > 5:
                        fail(f"tinyshakespeare took {secs:.1f} s to encode")
                if label == "gguf":
                    back = decoded(model, got)
                    lost = sum(b != bytes(c for c in e if c not in missing) for b, e in zip(back, enc))
                    if lost:
                        fail(f"{name}: {lost} of {len(enc)} texts do not decode to themselves")
            print(f"test_tokenizer: {name}, special tokens {'matched' if special else 'as text'}: "
                  f"{len(texts)} texts compared")
    # the other pre-tokenizers on SmolLM2's vocabulary, against HF on the
    # SQuAD contexts, the hard cases and the random strings
    for name, pre, extra in OTHER_PRE:
        e = json.loads(json.dumps(d))
        e["pre_tokenizer"] = pre
        e.update(extra.get("top", {}))
        e["model"].update(extra.get("model", {}))
        odir = os.path.join(tmp, name)
        os.makedirs(odir)
        opath = os.path.join(odir, "tokenizer.json")
        json.dump(e, open(opath, "w", encoding="utf-8"), ensure_ascii=False)
        ref = Tokenizer.from_file(opath)
        for set_name, texts in (("squad", squad), ("hard cases", HARD), ("random", randoms)):
            want = hf_ids(ref, texts, True)
            got, _ = ours(opath, [t.encode("utf-8") for t in texts], True)
            n, bad = compare(f"{name} on {set_name}", texts, want, got)
            total += n
            bad_total += bad
        print(f"test_tokenizer: pre-tokenizer {name} on SmolLM2's vocabulary: "
              f"{len(squad) + len(HARD) + len(randoms)} texts compared")

    # bytes that are not UTF-8: only our round trip
    for path in (model, smol_path):
        got, _ = ours(path, INVALID, True)
        back = decoded(path, got)
        lost = [t for t, b in zip(INVALID, back) if bytes(c for c in t if c not in missing) != b]
        if lost:
            fail(f"{path}: invalid UTF-8 does not round-trip: {lost[:3]}")
    print(f"test_tokenizer: {total} tokens compared with Hugging Face, {bad_total} texts differ; "
          f"{len(INVALID)} invalid UTF-8 texts round-trip ({len(missing)} bytes have no token)")
    print(f"test_tokenizer: (transformers' GGUF conversion and SmolLM2's own tokenizer differ on "
          f"{differ} texts: the conversion drops the digit split)")
    if bad_total:
        fail(f"{bad_total} texts tokenize differently")
    print("test_tokenizer: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
