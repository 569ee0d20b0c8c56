#!/usr/bin/env python3
"""make-fixture.py: writes the reference fixtures that tests/test_llama.c checks
lib/llama.c, lib/ckpt.c and lib/optim.c against (PyTorch is the truth).

    scripts/make-fixture.py [OUTDIR]        (default tests/fixtures)

For each variant it writes OUTDIR/<name>/ with
  config.json, model.safetensors   transformers' save_pretrained (float32)
  expected.safetensors             one frame:
    ids      (B,T) I32   random token ids
    labels   (B,T) I32   OUR targets: labels[b,t] is the token that position t
                         predicts (ids[b,t+1]), -100 where ignored (always the
                         last column, plus a few random positions)
    logits   (B,T,V) F32
    loss     () F32      mean cross entropy over the labels that are not -100
    grad_norm () F32     global L2 norm of the gradient of `loss`
    grad.<hf name>       the gradient of loss for every parameter (a tied
                         lm_head has none: its gradient is in the embedding's)
    adamw_losses (10) F32  the loss before each of 10 steps of AdamW on the
                         same batch: zero grad, forward, backward,
                         clip_grad_norm_(1.0), step (lr 1e-3, betas (0.9,
                         0.95), eps 1e-8, weight decay 0.1 on tensors of two
                         or more dimensions, none on 1-d ones)
  __metadata__: {"kind": "llama-fixture", "version": "1", "variant": name}

Transformers shifts labels itself (position t is scored against
hf_labels[t+1]), so the labels handed to it are hf_labels = [anything,
labels[:, :-1]]: shifting them gives back our targets, whose last column is
-100. The script checks that transformers' loss equals the cross entropy
computed directly from our targets.

Variants (all float32, eager attention, seeds fixed):
  tiny       hidden 64, intermediate 176, 2 layers, 4 heads, 2 kv heads (GQA),
             vocab 101, untied, no biases, rope_theta 10000, rms eps 1e-5
  tiny-tied  hidden 32, head_dim 16 (not hidden/heads), intermediate 72,
             2 layers, 4 heads, 1 kv head, vocab 101, tied embeddings,
             attention_bias and mlp_bias, llama3 rope scaling
Weights are random with larger spread than transformers' initialisation
(and norm weights and biases not 1 and 0) so that every path matters.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

B, T = 2, 9
STEPS = 10


def variants():
    base = dict(vocab_size=101, num_hidden_layers=2, rms_norm_eps=1e-5,
                rope_theta=10000.0, max_position_embeddings=64,
                bos_token_id=1, eos_token_id=2, hidden_act="silu",
                attn_implementation="eager")
    yield "tiny", dict(base, hidden_size=64, intermediate_size=176,
                       num_attention_heads=4, num_key_value_heads=2,
                       tie_word_embeddings=False)
    yield "tiny-tied", dict(base, hidden_size=32, head_dim=16,
                            intermediate_size=72, num_attention_heads=4,
                            num_key_value_heads=1, tie_word_embeddings=True,
                            attention_bias=True, mlp_bias=True,
                            rope_scaling={"rope_type": "llama3", "factor": 4.0,
                                          "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 16})


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def xent(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100)


def make(outdir, name, kw, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = LlamaConfig(**kw)
    model = LlamaForCausalLM(cfg).float()
    randomize(model, gen)
    model.train()  # no dropout in Llama, but say so

    V = cfg.vocab_size
    ids = torch.randint(0, V, (B, T), generator=gen)
    labels = torch.full((B, T), -100, dtype=torch.long)
    labels[:, :-1] = ids[:, 1:]
    drop = torch.rand((B, T - 1), generator=gen) < 0.2
    labels[:, :-1][drop] = -100
    hf_labels = torch.cat([ids[:, :1], labels[:, :-1]], dim=1)

    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    gc = os.path.join(d, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)

    out = model(input_ids=ids, labels=hf_labels)
    loss = xent(out.logits, labels)
    assert torch.allclose(loss, out.loss, rtol=1e-6, atol=0), (loss, out.loss)
    loss.backward()
    params = dict(model.named_parameters())
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    gnorm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).float()

    t = {
        "ids": ids.to(torch.int32),
        "labels": labels.to(torch.int32),
        "logits": out.logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(()),
        "grad_norm": gnorm.reshape(()),
    }
    for n, g in grads.items():
        t["grad." + n] = g.contiguous()

    decay = [p for p in model.parameters() if p.ndim >= 2]
    nodecay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        l = xent(model(input_ids=ids).logits, labels)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(l.item())
    t["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    save_file(t, os.path.join(d, "expected.safetensors"),
              metadata={"kind": "llama-fixture", "version": "1", "variant": name})
    print(f"{d}: loss {loss.item():.6f}, grad norm {gnorm.item():.6f}, "
          f"last adamw loss {losses[-1]:.6f}", file=sys.stderr)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # so that reruns give the same bytes
    for i, (name, kw) in enumerate(variants()):
        make(outdir, name, kw, 1234 + i)


if __name__ == "__main__":
    main()
