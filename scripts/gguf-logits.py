#!/usr/bin/env python3
"""gguf-logits.py: transformers' logits of SmolLM2-135M-Instruct loaded from
its GGUF, for a few fixed prompts, as the fixture that tests/test_serve.c
checks our logits against.

    scripts/gguf-logits.py [--model models/smollm2-135m-instruct.gguf]
                           [-o tests/fixtures/smollm2-logits/expected.safetensors]

The model is loaded with AutoModelForCausalLM.from_pretrained(dir,
gguf_file=..., dtype=float32), which dequantizes every tensor with gguf-py
(as lib/gguf.c does, bit for bit), and the token ids of each prompt come from
transformers' tokenizer of the same GGUF (the chat prompt through
apply_chat_template). For prompt i the fixture holds
    p<i>.ids          (T)   I32  the token ids fed
    p<i>.top_ids      (T,5) I32  the 5 largest logits' ids at each position,
                                 largest first
    p<i>.top_logits   (T,5) F32  those logits
and metadata: kind "smollm2-logits", schema "1", prompts (a JSON list of
the texts), model_sha256, transformers and torch versions. A few kilobytes.
Needs torch, transformers, accelerate, gguf and safetensors.
"""
import argparse
import hashlib
import json
import os
import sys

PROMPTS = [
    # plain text
    "The capital of France is",
    # a chat, through the model's template
    [{"role": "user", "content": "What is the capital of France?"}],
    # longer, with digits, punctuation and a newline
    "In 1969, Neil Armstrong became the first person to walk on the Moon. "
    "The mission, Apollo 11, launched from Florida on July 16 and landed four days later.\n"
    "def add(a, b):\n    return a + b",
]
TOPK = 5


def load(model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    m.eval()
    return tok, m


def prompt_ids(tok, p):
    if isinstance(p, list):
        ids = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tok(p).input_ids]


def logits_of(m, ids):
    """(T,V) float32 logits of one sequence."""
    import torch
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(root, "models", "smollm2-135m-instruct.gguf"))
    ap.add_argument("-o", "--output", default=os.path.join(
        root, "tests", "fixtures", "smollm2-logits", "expected.safetensors"))
    a = ap.parse_args()
    if not os.path.exists(a.model):
        sys.exit(f"gguf-logits: {a.model}: no such file (scripts/get-model.sh smollm2-135m-instruct)")
    import numpy as np
    import torch
    import transformers
    from safetensors.numpy import save_file

    tok, m = load(a.model)
    out = {}
    for i, p in enumerate(PROMPTS):
        ids = prompt_ids(tok, p)
        lg = logits_of(m, ids)
        v, k = torch.topk(lg, TOPK, dim=-1)
        out[f"p{i}.ids"] = np.array(ids, dtype=np.int32)
        out[f"p{i}.top_ids"] = k.numpy().astype(np.int32)
        out[f"p{i}.top_logits"] = v.numpy().astype(np.float32)
        print(f"gguf-logits: prompt {i}: {len(ids)} tokens, last top-5 {k[-1].tolist()}",
              file=sys.stderr)
    meta = {
        "kind": "smollm2-logits", "schema": "1",
        "prompts": json.dumps(PROMPTS),
        "model_sha256": sha256(a.model),
        "transformers": transformers.__version__, "torch": torch.__version__,
    }
    tmp = a.output + ".tmp"
    save_file(out, tmp, metadata=meta)
    os.replace(tmp, a.output)
    print(f"gguf-logits: wrote {a.output} ({os.path.getsize(a.output)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
