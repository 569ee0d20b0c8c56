#!/usr/bin/env python3
"""test_hf_roundtrip.py: a checkpoint written by lla-train (lmk_ckpt_save)
opens in transformers as is.

Trains a tiny model for 3 steps with $LMK_BIN/lla-train --out DIR, then
  - loads DIR with transformers.LlamaForCausalLM.from_pretrained and requires
    no missing, unexpected or mismatched keys, and finite logits on fixed ids;
  - reads DIR/model.safetensors with the safetensors package: metadata
    {"format": "pt"}, the names and shapes transformers expects (no
    lm_head.weight when tied), and every tensor equal to the one transformers
    loaded.
  - computes the logits of fixed ids with transformers and with our own
    forward (ladder-serve --logits on the same directory), and requires them
    equal within 1e-4 relative (float32 on both sides).
Exit 0 pass, 1 fail, 77 skip (no torch/transformers, or no lla-train).
"""
import json
import os
import subprocess
import sys
import tempfile


def skip(why):
    print(f"test_hf_roundtrip: skipped: {why}")
    sys.exit(77)


def fail(why):
    print(f"test_hf_roundtrip: FAIL: {why}")
    sys.exit(1)


try:
    import torch
    import transformers
    from safetensors import safe_open
except Exception as e:  # ImportError, or a broken installation
    skip(f"torch, transformers and safetensors are needed ({e})")

root = os.environ.get("LMK_ROOT", os.getcwd())
bindir = os.environ.get("LMK_BIN", os.path.join(root, "build", "bin"))
train = os.path.join(bindir, "lla-train")
if not os.access(train, os.X_OK):
    skip(f"{train} is not built")

TEXT = ("The quick brown fox jumps over the lazy dog. " * 8 +
        "Pack my box with five dozen liquor jugs. " * 8 +
        "How vexingly quick daft zebras jump! " * 8) * 4


def main():
    with tempfile.TemporaryDirectory(prefix="lmk-hf-") as tmp:
        data = os.path.join(tmp, "tiny.txt")
        out = os.path.join(tmp, "ckpt")
        with open(data, "w") as f:
            f.write(TEXT)
        cmd = [train, "--data", data, "--steps", "3", "--batch", "2", "--seq", "16",
               "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
               "--out", out, "--seed", "1", "--quiet"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            fail(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        for name in ("config.json", "model.safetensors"):
            if not os.path.exists(os.path.join(out, name)):
                fail(f"{out}/{name} was not written")
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        tied = bool(cfg.get("tie_word_embeddings", False))

        kw = {"output_loading_info": True}
        try:
            model, info = transformers.LlamaForCausalLM.from_pretrained(
                out, dtype=torch.float32, **kw)
        except TypeError:  # transformers 4 spells it torch_dtype
            model, info = transformers.LlamaForCausalLM.from_pretrained(
                out, torch_dtype=torch.float32, **kw)
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            if info.get(k):
                fail(f"transformers: {k}: {sorted(info[k])}")
        c = model.config
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "vocab_size"):
            if getattr(c, key) != cfg[key]:
                fail(f"config {key}: transformers has {getattr(c, key)}, file {cfg[key]}")
        if (c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                c.num_key_value_heads) != (64, 2, 4, 2):
            fail(f"shape is not the one asked for: {c}")

        state = model.state_dict()
        expected = {k for k in state if "rotary_emb" not in k}
        if tied:
            expected.discard("lm_head.weight")
        st = os.path.join(out, "model.safetensors")
        with safe_open(st, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "pt":
                fail(f"{st}: metadata {meta}, expected format pt")
            names = set(f.keys())
            if names != expected:
                fail(f"{st}: extra {sorted(names - expected)}, "
                     f"missing {sorted(expected - names)}")
            for k in sorted(names):
                t = f.get_tensor(k)
                if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                    fail(f"{st}: {k}: dtype {t.dtype}")
                if tuple(t.shape) != tuple(state[k].shape):
                    fail(f"{st}: {k}: shape {tuple(t.shape)}, transformers "
                         f"{tuple(state[k].shape)}")
                if not torch.equal(t.float(), state[k].float()):
                    d = (t.float() - state[k].float()).abs().max().item()
                    fail(f"{st}: {k}: differs from what transformers loaded (max {d})")
        if tied and not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight):
            fail("tied model: lm_head differs from the embedding")

        ids = (torch.arange(12) * 7 % c.vocab_size).view(1, -1)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        if logits.shape != (1, 12, c.vocab_size) or not torch.isfinite(logits).all():
            fail(f"logits: shape {tuple(logits.shape)}, finite "
                 f"{bool(torch.isfinite(logits).all())}")
        serve = os.path.join(bindir, "ladder-serve")
        if not os.access(serve, os.X_OK):
            fail(f"{serve} is not built")
        from safetensors.torch import save_file, load_file
        ids_file = os.path.join(tmp, "ids.safetensors")
        ours_file = os.path.join(tmp, "ours.safetensors")
        save_file({"ids": ids.to(torch.int32)}, ids_file)
        cmd = [serve, "-q", "-m", out, "--logits", ids_file, "-o", ours_file]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            fail(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        ours = load_file(ours_file)["logits"].float().reshape(logits.shape)
        rel = ((ours - logits).norm() / logits.norm()).item()
        if not rel < 1e-4:
            fail(f"logits: ours differ from transformers' by {rel:.2e} relative")
        print(f"test_hf_roundtrip: logits of {ids.shape[1]} tokens: ours against "
              f"transformers {rel:.1e} relative")
        print(f"test_hf_roundtrip: ok: {len(names)} tensors, transformers "
              f"{transformers.__version__}, tied {tied}")


if __name__ == "__main__":
    main()
