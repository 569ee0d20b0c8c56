#!/usr/bin/env python3
"""decode_torch.py: transformers' batch-1 greedy decoding speed on one GPU,
the baseline of bench/decode_gpu.c at the same shapes (bench/decode_gpu.sh).

LlamaForCausalLM built on the GPU in bfloat16 with random weights (its own
initialisation), attn_implementation "sdpa"; model.generate(prompt of
--prompt random ids, max_new_tokens = min_new_tokens = --gen, do_sample
False, cache_implementation "static"). transformers may compile the decoding
step by itself with a static cache (its auto-compile; --no-compile turns it
off with disable_compile=True): the first (warm-up) call pays for that and
is reported apart. Each timed call is wrapped in torch.cuda.synchronize();
tokens/s = --gen / the best of --reps calls, the prompt's pass included (as
decode_gpu's generate column).
Prints one line per shape:
    torch SHAPE params_M gen_tok_s warmup_s compile
Exit 0, 1 without torch, transformers or a GPU (or when a run fails)."""
import argparse
import sys
import time

SHAPES = {
    "smollm": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                   vocab_size=49152, rope_theta=100000.0),
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                    vocab_size=128256, rope_theta=500000.0),
}


def main():
    ap = argparse.ArgumentParser(description="transformers decoding baseline")
    ap.add_argument("--shape", choices=("smollm", "llama1b", "all"), default="all")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"decode_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("decode_torch: no CUDA device", file=sys.stderr)
        return 1
    print(f"decode_torch: torch {torch.__version__}, transformers {transformers.__version__}",
          file=sys.stderr)
    names = ("smollm", "llama1b") if a.shape == "all" else (a.shape,)
    for name in names:
        cfg = LlamaConfig(**SHAPES[name], tie_word_embeddings=True, rms_norm_eps=1e-5,
                          max_position_embeddings=8192, bos_token_id=None, eos_token_id=None,
                          pad_token_id=0, attention_bias=False, mlp_bias=False)
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = LlamaForCausalLM._from_config(cfg, torch_dtype=torch.bfloat16)
        model.eval()
        nparam = sum(p.numel() for p in model.parameters())
        ids = torch.randint(0, cfg.vocab_size, (1, a.prompt), device="cuda")
        kw = dict(max_new_tokens=a.gen, min_new_tokens=a.gen, do_sample=False,
                  cache_implementation="static", pad_token_id=0)
        if a.no_compile:
            kw["disable_compile"] = True
        with torch.inference_mode():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(ids, **kw)
            torch.cuda.synchronize()
            warm = time.perf_counter() - t0
            if out.shape[1] != a.prompt + a.gen:
                print(f"decode_torch: {name}: {out.shape[1] - a.prompt} new tokens, expected "
                      f"{a.gen}", file=sys.stderr)
                return 1
            best = 1e30
            for _ in range(a.reps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.generate(ids, **kw)
                torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
        print(f"torch {name} {nparam / 1e6:.1f} {a.gen / best:.1f} {warm:.1f} "
              f"{'off' if a.no_compile else 'auto'}", flush=True)
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
