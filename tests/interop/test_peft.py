#!/usr/bin/env python3
"""test_peft.py: LoRA adapters move between lmk and Hugging Face PEFT.

Trains a tiny model for 3 steps with $LMK_BIN/lla-train, then a LoRA
adapter over it (lla-train --adapter, all seven projections), and
  - loads the adapter with peft.PeftModel.from_pretrained on the
    transformers model and requires the same logits as ours (ladder-serve
    --adapter --logits) within 1e-4 relative, and different from the base's
    (so that the adapter is not a no-op);
  - makes an adapter with PEFT (random B, rank 3, alpha 5, rslora off,
    targets q_proj, v_proj, down_proj), saves it with save_pretrained, and
    requires our logits with it to equal PEFT's within 1e-4.
Exit 0 pass, 1 fail, 77 skip (no torch/transformers/peft, or no binaries).
"""
import os
import subprocess
import sys
import tempfile


def skip(why):
    print(f"test_peft: skipped: {why}")
    sys.exit(77)


def fail(why):
    print(f"test_peft: FAIL: {why}")
    sys.exit(1)


try:
    import torch
    import transformers
    import peft
    from safetensors.torch import save_file, load_file
except Exception as e:  # ImportError, or a broken installation
    skip(f"torch, transformers, peft and safetensors are needed ({e})")

root = os.environ.get("LMK_ROOT", os.getcwd())
bindir = os.environ.get("LMK_BIN", os.path.join(root, "build", "bin"))
train = os.path.join(bindir, "lla-train")
serve = os.path.join(bindir, "ladder-serve")
for b in (train, serve):
    if not os.access(b, os.X_OK):
        skip(f"{b} is not built")

TEXT = ("The quick brown fox jumps over the lazy dog. " * 8 +
        "Pack my box with five dozen liquor jugs. " * 8) * 6


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")


def load_base(path):
    try:
        return transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    except TypeError:  # transformers 4 spells it torch_dtype
        return transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32)


def ours(tmp, base, adapter, ids):
    ids_file = os.path.join(tmp, "ids.safetensors")
    out_file = os.path.join(tmp, "ours.safetensors")
    save_file({"ids": ids.to(torch.int32)}, ids_file)
    run([serve, "-q", "-m", base, "--adapter", adapter, "--logits", ids_file, "-o", out_file])
    return load_file(out_file)["logits"].float()


def rel(a, b):
    return ((a.reshape(b.shape) - b).norm() / b.norm()).item()


def main():
    with tempfile.TemporaryDirectory(prefix="lmk-peft-") as tmp:
        data = os.path.join(tmp, "tiny.txt")
        with open(data, "w") as f:
            f.write(TEXT)
        base = os.path.join(tmp, "base")
        run([train, "--data", data, "--steps", "3", "--batch", "2", "--seq", "16",
             "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
             "--out", base, "--seed", "1", "--quiet"])
        ad = os.path.join(tmp, "adapter")
        run([train, "--data", data, "--init", base, "--steps", "5", "--batch", "2",
             "--seq", "16", "--lr", "0.05", "--warmup", "0",
             "--adapter", "lora:r=4,alpha=8,targets=q,k,v,o,gate,up,down",
             "--out", ad, "--seed", "2", "--quiet"])
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not os.path.exists(os.path.join(ad, name)):
                fail(f"{ad}/{name} was not written")

        ids = (torch.arange(12) * 7 % 259).view(1, -1)
        model = load_base(base)
        with torch.no_grad():
            plain = model(input_ids=ids).logits
        pm = peft.PeftModel.from_pretrained(model, ad)
        pm.eval()
        with torch.no_grad():
            theirs = pm(input_ids=ids).logits
        moved = rel(plain, theirs)
        if not moved > 1e-4:
            fail(f"the trained adapter changes PEFT's logits by only {moved:.1e}")
        e = rel(ours(tmp, base, ad, ids), theirs)
        if not e < 1e-4:
            fail(f"our adapter under PEFT: logits differ from ours by {e:.2e}")
        print(f"test_peft: lla-train adapter loaded by PEFT {peft.__version__}: logits equal "
              f"to ours to {e:.1e} (the adapter moves them {moved:.1e})")

        # and the other way: an adapter PEFT makes
        torch.manual_seed(3)
        model = load_base(base)
        cfg = peft.LoraConfig(r=3, lora_alpha=5, target_modules=["q_proj", "v_proj", "down_proj"],
                              lora_dropout=0.0, init_lora_weights=True)
        pm = peft.get_peft_model(model, cfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
        pm.eval()
        with torch.no_grad():
            theirs = pm(input_ids=ids).logits
        pdir = os.path.join(tmp, "peft-adapter")
        pm.save_pretrained(pdir)
        e = rel(ours(tmp, base, pdir, ids), theirs)
        if not e < 1e-4:
            fail(f"PEFT's adapter under ladder-serve: logits differ by {e:.2e}")
        print(f"test_peft: PEFT's adapter loaded by ladder-serve: logits equal to PEFT's to {e:.1e}")


main()
