#!/usr/bin/env python3
"""test_gguf_logits.py: SmolLM2-135M-Instruct from its GGUF file gives the
same logits in lmk as in transformers, and tsr convert makes of it a
directory that transformers and ladder-serve load to the same model.

  - transformers: AutoModelForCausalLM.from_pretrained(models/,
    gguf_file=smollm2-135m-instruct.gguf, dtype=float32), which dequantizes
    with gguf-py;
  - ours: $LMK_BIN/ladder-serve -m the GGUF --logits -, fed one frame of ids
    per prompt (the prompts of tests/fixtures/smollm2-logits/expected.
    safetensors, whose ids came from transformers' tokenizer), giving the
    logits of every position;
  - the relative error over each whole logits tensor (T,V),
    ||ours - theirs||_2 / ||theirs||_2, and max|ours - theirs| / max|theirs|,
    must be below 1e-3; both are printed;
  - $LMK_BIN/tsr convert the GGUF -o DIR: transformers loads DIR (model and
    tokenizer), its logits equal those from the GGUF, its tokenizer gives the
    fixture's ids (the chat through DIR's chat template), and ladder-serve on
    DIR gives the same logits as on the GGUF.
Exit 0 pass, 1 fail, 77 skip (no torch, transformers, accelerate, gguf or
safetensors; no model; programs not built).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

TOL = 1e-3


def skip(why):
    print(f"test_gguf_logits: skipped: {why}")
    sys.exit(77)


def fail(why):
    print(f"test_gguf_logits: FAIL: {why}")
    sys.exit(1)


try:
    import numpy as np
    import torch
    import transformers  # noqa: F401
    import accelerate  # noqa: F401  (transformers needs it for GGUF files)
    import gguf  # noqa: F401
    from safetensors.numpy import load as st_load, save as st_save, load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
except Exception as e:  # ImportError, or a broken installation
    skip(f"torch, transformers, accelerate, gguf and safetensors are needed ({e})")

root = os.environ.get("LMK_ROOT", os.getcwd())
bindir = os.environ.get("LMK_BIN", os.path.join(root, "build", "bin"))
serve = os.path.join(bindir, "ladder-serve")
tsr = os.path.join(bindir, "tsr")
model = os.path.join(root, "models", "smollm2-135m-instruct.gguf")
fixture = os.path.join(root, "tests", "fixtures", "smollm2-logits", "expected.safetensors")
for p in (serve, tsr):
    if not os.access(p, os.X_OK):
        skip(f"{p} is not built")
if not os.path.exists(model):
    skip(f"{model} not found (scripts/get-model.sh smollm2-135m-instruct)")
THREADS = "2"


def frames(data):
    """The frames of a stream, each as its bytes."""
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at:at + 8])
        head = json.loads(data[at + 8:at + 8 + n])
        end = max([v["data_offsets"][1] for k, v in head.items() if k != "__metadata__"] + [0])
        out.append(data[at:at + 8 + n + end])
        at += 8 + n + end
    return out


def our_logits(path, idss):
    """ladder-serve --logits: one frame per prompt in, one out."""
    stream = b"".join(st_save({"ids": np.array(ids, dtype=np.int32)}) for ids in idss)
    r = subprocess.run([serve, "-q", "--threads", THREADS, "-m", path, "--logits", "-"],
                       input=stream, capture_output=True, timeout=600)
    if r.returncode != 0:
        fail(f"ladder-serve --logits: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    fs = [st_load(f) for f in frames(r.stdout)]
    if len(fs) != len(idss):
        fail(f"ladder-serve --logits: expected {len(idss)} frames, found {len(fs)}")
    for f, ids in zip(fs, idss):
        if f["ids"].tolist() != list(ids):
            fail("ladder-serve --logits: the ids written back differ from those read")
    return [f["logits"] for f in fs]


def hf_logits(m, ids):
    with torch.no_grad():
        return m(torch.tensor([list(ids)])).logits[0].float().numpy()


def rel_errors(ours, theirs):
    d = ours.astype(np.float64) - theirs.astype(np.float64)
    return (float(np.linalg.norm(d) / np.linalg.norm(theirs.astype(np.float64))),
            float(np.abs(d).max() / np.abs(theirs).max()))


def main():
    torch.set_num_threads(int(THREADS))
    fx = load_file(fixture)
    idss, i = [], 0
    while f"p{i}.ids" in fx:
        idss.append(fx[f"p{i}.ids"].tolist())
        i += 1
    if len(idss) < 3:
        fail(f"{fixture}: expected 3 prompts, found {len(idss)}")

    t0 = time.time()
    d, f = os.path.split(model)
    ref = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    ref.eval()
    theirs = [hf_logits(ref, ids) for ids in idss]
    print(f"test_gguf_logits: transformers: {len(idss)} prompts in {time.time() - t0:.1f} s")
    t0 = time.time()
    ours = our_logits(model, idss)
    print(f"test_gguf_logits: ladder-serve --logits: {time.time() - t0:.1f} s")
    worst = (0.0, 0.0)
    for k, (o, t) in enumerate(zip(ours, theirs)):
        if o.shape != t.shape:
            fail(f"prompt {k}: our logits are {o.shape}, transformers' {t.shape}")
        if not np.isfinite(o).all():
            fail(f"prompt {k}: our logits are not all finite")
        l2, mx = rel_errors(o, t)
        print(f"test_gguf_logits: prompt {k} ({len(idss[k])} tokens): relative error "
              f"{l2:.3g} (L2), {mx:.3g} (max); argmax equal at "
              f"{int((o.argmax(-1) == t.argmax(-1)).sum())}/{len(idss[k])} positions")
        if not (l2 < TOL and mx < TOL):
            fail(f"prompt {k}: relative error {l2:.3g} (L2), {mx:.3g} (max): expected < {TOL}")
        worst = (max(worst[0], l2), max(worst[1], mx))
    print(f"test_gguf_logits: GGUF: our logits match transformers' within {worst[0]:.3g} (L2) "
          f"and {worst[1]:.3g} (max) relative")

    # tsr convert, then the same model three ways
    with tempfile.TemporaryDirectory(prefix="lmk-gguf-") as tmp:
        out = os.path.join(tmp, "smollm2")
        r = subprocess.run([tsr, "convert", "-q", model, "-o", out], capture_output=True, timeout=600)
        if r.returncode != 0:
            fail(f"tsr convert: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        conv = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        conv.eval()
        tok = AutoTokenizer.from_pretrained(out)
        for k, ids in enumerate(idss):
            c = hf_logits(conv, ids)
            if not np.array_equal(c, theirs[k]):
                fail(f"prompt {k}: transformers on the converted directory differs from the GGUF by "
                     f"{np.abs(c - theirs[k]).max():.3g}")
        prompts = json.loads(load_meta(fixture)["prompts"])
        for k, p in enumerate(prompts):
            if isinstance(p, list):
                ids = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
            else:
                ids = tok(p).input_ids
            if list(ids) != idss[k]:
                fail(f"prompt {k}: the converted tokenizer gives {list(ids)[:12]}..., transformers' "
                     f"GGUF tokenizer gave {idss[k][:12]}...")
        again = our_logits(out, idss)
        for k in range(len(idss)):
            if not np.array_equal(again[k], ours[k]):
                fail(f"prompt {k}: ladder-serve on the converted directory differs from the GGUF by "
                     f"{np.abs(again[k] - ours[k]).max():.3g}")
    print("test_gguf_logits: tsr convert: transformers loads the directory to the same logits and "
          "token ids, and so does ladder-serve")


def load_meta(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


if __name__ == "__main__":
    main()
