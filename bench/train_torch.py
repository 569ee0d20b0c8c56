#!/usr/bin/env python3
"""train_torch.py: PyTorch's training speed on the model of bench/train_gpu.sh,
the baseline for lla-train --device cuda.

The model is transformers' LlamaForCausalLM with attn_implementation="sdpa":
hidden 768, intermediate 2048, 12 layers, 12 heads (D = 64, no GQA), vocabulary
32768, tied embeddings, RMSNorm epsilon 1e-5, no biases; float32 parameters
(the master weights, as ours) on the GPU, the forward under
torch.autocast(bfloat16), the loss F.cross_entropy over float32 logits (what
LlamaForCausalLM's own loss does), torch.nn.utils.clip_grad_norm_(1.0) and
torch.optim.AdamW(fused=True) with betas (0.9, 0.95), eps 1e-8 and weight
decay 0.1 on matrices only: the step lla-train takes. Random token ids, made
on the GPU before timing.
--mode eager runs the model as it is; --mode compile wraps the forward and
the loss in torch.compile (default mode, dynamic=False), whose first steps
compile (their time is reported apart).
Each step is timed with torch.cuda.synchronize() before and after it (the
loss's .item() inside, as lla-train reads its loss); tokens/s is the median
over the steps after --warmup.
Prints one line:
    torch MODE tokens_per_s ms_per_step params first_loss last_loss warmup_s B T accum
Exit 0, 1 without torch, transformers or a GPU (or when the run fails),
2 on a usage error."""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description="transformers Llama training baseline for "
                                 "bench/train_gpu.sh")
    ap.add_argument("--mode", choices=("eager", "compile"), required=True)
    ap.add_argument("--batch", type=int, default=32, help="sequences per micro-batch")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per step")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    ap.add_argument("--steps", type=int, default=30, help="steps, warm-up included")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    a = ap.parse_args()
    if a.steps <= a.warmup:
        ap.error("--steps must be more than --warmup")
    try:
        import torch
        import torch.nn.functional as F
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"train_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("train_torch: no CUDA device", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    torch.manual_seed(1337)
    V, B, T, A = a.vocab, a.batch, a.seq, a.accum
    cfg = LlamaConfig(vocab_size=V, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.heads, max_position_embeddings=T,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
                      mlp_bias=False, hidden_act="silu", initializer_range=0.02,
                      use_cache=False)
    try:
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    except (TypeError, AttributeError, ValueError):
        cfg._attn_implementation = "sdpa"
        model = LlamaForCausalLM(cfg)
    model.to(dev, dtype=torch.float32).train()
    attn = getattr(model.config, "_attn_implementation", "?")
    nparams = sum(p.numel() for p in model.parameters())  # tied: counted once
    print(f"train_torch: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, attention {attn}, {nparams} parameters, "
          f"mode {a.mode}, B {B} T {T} accum {A}", file=sys.stderr)
    if attn != "sdpa":
        print(f"train_torch: attention implementation is {attn}, not sdpa", file=sys.stderr)
        return 1

    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)

    def loss_fn(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))

    if a.mode == "compile":
        loss_fn = torch.compile(loss_fn, dynamic=False)

    # a pool of batches on the GPU, cycled: no host work in the timed steps
    g = torch.Generator(device=dev).manual_seed(1234)
    pool = torch.randint(0, V, (8, B, T + 1), device=dev, generator=g, dtype=torch.long)

    def step(i):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(A):
            w = pool[(i * A + k) % pool.shape[0]]
            loss = loss_fn(w[:, :-1], w[:, 1:])
            (loss / A).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return total / A

    times, losses = [], []
    t_start = time.perf_counter()
    warm_s = 0.0
    for i in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(step(i))
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        times.append(dt)
        if i == a.warmup - 1:
            warm_s = time.perf_counter() - t_start
        print(f"train_torch: {a.mode} step {i + 1}: loss {losses[-1]:.4f}, {dt * 1e3:.1f} ms",
              file=sys.stderr)
    med = statistics.median(times[a.warmup:])
    tps = B * T * A / med
    print(f"torch {a.mode} {tps:.1f} {med * 1e3:.2f} {nparams} {losses[0]:.4f} {losses[-1]:.4f} "
          f"{warm_s:.1f} {B} {T} {A}")
    print(f"train_torch: peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # an OOM or a compile failure: say so, exit 1
        print(f"train_torch: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
