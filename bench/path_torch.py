#!/usr/bin/env python3
"""path_torch.py: fla's PaTH attention (flash-linear-attention,
fla.ops.path_attn.parallel_path_attention, Triton) on the shapes of
bench/path_gpu.cu, the baseline for cuda/path.cu, with PyTorch's causal
scaled_dot_product_attention beside it.

BF16 on the GPU; q, k, v, w (B,T,H,D) with w L2-normalised, beta in
(0.1, 1.9), with --fox a forget gate g = log(f), f in (0.9, 1) (fla scales
g's sums by `scale` too, lib/path.h says so: the timing does not care).
Forward, and forward+backward (grads cleared outside the timed region),
timed with CUDA events: warm-up, then the median of --reps runs. Shapes:
B*T = 16384 tokens, T in {1K..16K} (--quick: up to 4K), H*D = 1024 (H = 8
at D = 128, 16 at D = 64), K = H. fla's kernel asserts D in {16, 32, 64} in
some versions: a shape it refuses prints "-" with the reason on stderr.
Prints one table, a line per shape:
    D T B H fla_fwd_ms fla_fwdbwd_ms sdpa_fwd_ms sdpa_fwdbwd_ms
Exit 0, 1 without a GPU or torch, 2 on a usage error; without fla the fla
columns are "-"."""
import argparse
import statistics
import sys


def timed(torch, fn, reps, backward, params):
    """Median milliseconds of fn() (and .backward of its first output)."""
    e0 = torch.cuda.Event(enable_timing=True)
    e1 = torch.cuda.Event(enable_timing=True)
    out = []
    do = None
    for r in range(reps + 2):
        for p in params:
            p.grad = None
        torch.cuda.synchronize()
        e0.record()
        y = fn()
        if backward:
            if do is None:  # the first warm-up run only
                do = torch.ones_like(y)
            y.backward(do)
        e1.record()
        torch.cuda.synchronize()
        if r >= 2:
            out.append(e0.elapsed_time(e1))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description="fla PaTH attention baseline for bench/path_gpu.cu")
    ap.add_argument("--quick", action="store_true", help="T up to 4K only")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per shape (median)")
    ap.add_argument("--fox", action="store_true", help="PaTH-FoX (a forget gate)")
    ap.add_argument("--max-t", type=int, default=16384, help="largest T")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"path_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("path_torch: no CUDA device", file=sys.stderr)
        return 1
    try:
        from fla.ops.path_attn.parallel import parallel_path_attention
    except Exception as e:  # ImportError, or Triton failing at import
        print(f"path_torch: fla's path_attn is not importable ({e}); sdpa only", file=sys.stderr)
        parallel_path_attention = None
    dev = torch.device("cuda")
    print(f"path_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{'PaTH-FoX' if a.fox else 'PaTH'}, median of {a.reps}", file=sys.stderr)
    tokens, width = 16384, 1024
    maxt = min(a.max_t, 4096) if a.quick else a.max_t
    print(f"{'D':>4} {'T':>6} {'B':>3} {'H':>3}  {'fla_fwd_ms':>11} {'fla_fwdbwd_ms':>14}  "
          f"{'sdpa_fwd_ms':>11} {'sdpa_fwdbwd_ms':>14}")
    for D in (64, 128):
        H = width // D
        T = 1024
        while T <= maxt:
            B = tokens // T
            scale = D ** -0.5
            g = torch.Generator(device=dev).manual_seed(T + D)
            mk = lambda *s: torch.rand(*s, generator=g, device=dev, dtype=torch.bfloat16) * 2 - 1
            q = mk(B, T, H, D).requires_grad_()
            k = mk(B, T, H, D).requires_grad_()
            v = mk(B, T, H, D).requires_grad_()
            # fla wants w and beta in float32 ("to preserve precision")
            w = F.normalize(mk(B, T, H, D).float(), dim=-1).requires_grad_()
            beta = (0.1 + 1.8 * torch.rand(B, T, H, generator=g, device=dev)).requires_grad_()
            gate = None
            if a.fox:
                gate = (0.9 + 0.1 * torch.rand(B, T, H, generator=g, device=dev)).log().requires_grad_()
            cols = []
            if parallel_path_attention is not None:
                params = [q, k, v, w, beta] + ([gate] if gate is not None else [])
                fn = lambda: parallel_path_attention(q=q, k=k, v=v, w=w, beta=beta, g=gate,
                                                     scale=scale)[0]
                try:
                    cols += [timed(torch, fn, a.reps, False, params),
                             timed(torch, fn, a.reps, True, params)]
                except Exception as e:  # an assertion on D, or a Triton failure
                    print(f"path_torch: fla D={D} T={T}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                          file=sys.stderr)
                    cols += [None, None]
            else:
                cols += [None, None]
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            sd = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale)
            cols += [timed(torch, sd, a.reps, False, [q, k, v]),
                     timed(torch, sd, a.reps, True, [q, k, v])]
            f = lambda x, wd: f"{x:>{wd}.3f}" if x is not None else f"{'-':>{wd}}"
            print(f"{D:>4} {T:>6} {B:>3} {H:>3}  {f(cols[0], 11)} {f(cols[1], 14)}  "
                  f"{f(cols[2], 11)} {f(cols[3], 14)}", flush=True)
            del q, k, v, w, beta, gate
            torch.cuda.empty_cache()
            T *= 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
