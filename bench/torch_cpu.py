#!/usr/bin/env python3
"""torch_cpu.py: the PyTorch baseline for bench/cpu.sh.

Times, on the CPU in float32 with a fixed number of threads, for the same
Llama shape as bench_cpu: (1) a training step (forward, backward, AdamW) on
a (B,T) batch, (2) greedy decoding at batch 1 with the KV cache
(transformers' generate). Prints one JSON object per measurement, with
wall seconds and the process's CPU seconds over the same span (see
bench_cpu.c for why both).
"""
import argparse, json, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=259)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
                      max_position_embeddings=max(a.seq, a.prompt + a.new),
                      tie_word_embeddings=True, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, a.vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    times, cpus = [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    times.sort()
    cpus.sort()
    med, cmed = times[len(times) // 2], cpus[len(cpus) // 2]
    print(json.dumps({"impl": "pytorch", "what": "train_step", "seconds": med,
                      "tokens_per_s": a.batch * a.seq / med, "cpu_seconds": cmed,
                      "tokens_per_cpu_s": a.batch * a.seq / cmed}))

    model.eval()
    prompt = torch.randint(0, a.vocab, (1, a.prompt))
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.generate(prompt, max_new_tokens=a.new, min_new_tokens=a.new,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    n = out.shape[1] - a.prompt
    print(json.dumps({"impl": "pytorch", "what": "decode", "seconds": dt, "tokens": n,
                      "tokens_per_s": n / dt, "cpu_seconds": dc, "tokens_per_cpu_s": n / dc}))


if __name__ == "__main__":
    main()
