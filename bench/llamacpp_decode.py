#!/usr/bin/env python3
"""llamacpp_decode.py: greedy CPU decoding speed of a GGUF model in llama.cpp
(through the llama-cpp-python package), measured as ladder-serve measures
its own, for scripts/bench-decode-cpu.sh.

    bench/llamacpp_decode.py --model M.gguf --prompt TEXT --tokens N
                             [--threads 2] [--reps 1] [--ctx 512]

The prompt is tokenized by llama.cpp (special tokens parsed, no bos added:
SmolLM2 adds none, and ladder-serve does as the GGUF says), then N tokens are
generated greedily (top_k 1, temperature 0), the end token ignored so that
every run decodes exactly N. Per repetition one JSON line on stdout:
    {"impl": "llama.cpp", "version": ..., "prompt_tokens": P, "tokens": N,
     "prompt_ms": ..., "decode_ms": ..., "tokens_per_s": ..., "text": ...}
where prompt_ms is the time to the first token (the prompt's evaluation and
the first sampling), decode_ms the time after it, and tokens_per_s
(N - 1) / decode_ms: decoding steps per second, ladder-serve's definition.
The model is loaded once; each repetition starts from an empty cache.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=512)
    a = ap.parse_args()
    try:
        import llama_cpp
        from llama_cpp import Llama
    except Exception as e:
        sys.exit(f"llamacpp_decode: llama-cpp-python is needed (pip install llama-cpp-python): {e}")
    llm = Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=a.ctx,
                n_batch=a.ctx, seed=1, verbose=False)
    prompt = llm.tokenize(a.prompt.encode(), add_bos=False, special=True)
    for _ in range(a.reps):
        llm.reset()
        out = []
        t0 = time.perf_counter()
        t1 = None
        for tok in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                reset=True):
            if t1 is None:
                t1 = time.perf_counter()
            out.append(tok)
            if len(out) == a.tokens:
                break
        t2 = time.perf_counter()
        dec = (t2 - t1) * 1e3
        print(json.dumps({
            "impl": "llama.cpp", "version": llama_cpp.__version__, "prompt_tokens": len(prompt),
            "tokens": len(out), "prompt_ms": round((t1 - t0) * 1e3, 3), "decode_ms": round(dec, 3),
            "tokens_per_s": round((len(out) - 1) / (dec / 1e3), 2) if len(out) > 1 else 0,
            "text": llm.detokenize(out).decode("utf-8", errors="replace"),
        }), flush=True)


if __name__ == "__main__":
    main()
