#!/usr/bin/env python3
"""ssd_torch.py: the shapes of bench/ssd_gpu.cu in PyTorch, the baselines of
our scalar-decay linear mixers (cuda/ssd.cu).

BF16 inputs on the GPU, (B,T,H,D) like ours, chunk 64, forward and
forward+backward (autograd; grads cleared outside the timed region), timed
with CUDA events: warm-up, then the median of --reps runs.
Shapes: B*T = 65536 tokens (--tokens), T in {2K..64K} (--quick: up to 8K; --t a list),
H*D = 2048 (H = 16 at D = 128, H = 32 at D = 64).
Columns (ms; '-' when a variant fails or is not importable):
  naive ssd / naive ll: a chunked PyTorch reference written here (intra-chunk
      masked matrix; inter-chunk states mixed by an N x N chunk matrix, one
      per Fenwick chunk level for log-linear), float32 compute;
  fla sgla: flash-linear-attention's chunk_simple_gla (Mamba-2 decay);
  fla ll: flash-linear-attention's chunk_log_linear_attn (T a multiple of 64
      there).
Prints one table. Exit 0, 1 without a GPU or torch, 2 on a usage error."""
import argparse
import math
import statistics
import sys

import mixer_rows


def fen_level(t, s):
    x = t ^ s
    return x.bit_length() if x else 0


def fen_levels(T):
    return 1 if T <= 1 else 1 + (T - 1).bit_length()


def naive_chunked(torch, q, k, v, g, lam, scale, C=64):
    """o_t = scale sum_{s<=t} exp(g_{s+1}+..+g_t) lam_t[level(t,s)] (q_t.k_s) v_s."""
    B, T, H, D = q.shape
    N = T // C
    f = lambda x: x.float().reshape(B, N, C, H, -1).permute(0, 3, 1, 2, 4)  # B,H,N,C,*
    q, k, v = f(q), f(k), f(v)
    gl = g.float().reshape(B, N, C, H).permute(0, 3, 1, 2)  # B,H,N,C
    acs = gl.cumsum(-1)
    E = acs[..., -1].cumsum(-1)  # B,H,N: log decay up to each chunk's end
    dev = q.device
    i = torch.arange(C, device=dev)
    causal = i[:, None] >= i[None, :]
    W = torch.exp((acs[..., :, None] - acs[..., None, :]).masked_fill(~causal, -math.inf))
    if lam is not None:
        L = lam.float().reshape(B, N, C, H, -1).permute(0, 3, 1, 2, 4)  # B,H,N,C,NL
        lev = torch.tensor([[fen_level(a, b) for b in range(C)] for a in range(C)], device=dev)
        W = W * torch.gather(L, -1, lev.expand(B, H, N, C, C))
    o = (W * (q @ k.transpose(-1, -2))) @ v * scale
    U = (k * torch.exp(acs[..., -1:] - acs)[..., None]).transpose(-1, -2) @ v  # B,H,N,D,D
    Uf = U.reshape(B, H, N, -1)
    n = torch.arange(N, device=dev)
    Em1 = torch.cat([torch.zeros_like(E[..., :1]), E[..., :-1]], -1)
    dec = torch.exp((Em1[..., :, None] - E[..., None, :]).masked_fill(
        ~(n[:, None] > n[None, :]), -math.inf))  # B,H,N,N: end of m to end of n-1
    qa = q * torch.exp(acs)[..., None] * scale
    if lam is None:
        Hn = (dec @ Uf).reshape(B, H, N, D, -1)
        o = o + qa @ Hn
    else:
        cl = torch.tensor([[fen_level(a, b) for b in range(N)] for a in range(N)], device=dev)
        c = int(math.log2(C))
        for j in range(1, fen_levels(N)):
            Hj = ((dec * (cl == j)) @ Uf).reshape(B, H, N, D, -1)
            o = o + (qa * L[..., c + j: c + j + 1]) @ Hj
    return o.permute(0, 2, 3, 1, 4).reshape(B, T, H, -1).to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser(description="torch baselines for bench/ssd_gpu.cu")
    mixer_rows.add_options(ap)
    ap.add_argument("--reps", type=int, default=10, help="timed runs per shape (median)")
    ap.add_argument("--tokens", type=int, default=65536, help="B*T")
    ap.add_argument("--no-naive", action="store_true",
                    help="skip the PyTorch reference (slow): fla's kernels only")
    a = ap.parse_args()
    shape = mixer_rows.rows(a, "ssd_torch")
    if shape is None:
        return 2
    Ds, Ts = shape
    try:
        import torch
    except ImportError as e:
        print(f"ssd_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("ssd_torch: no CUDA device", file=sys.stderr)
        return 1
    sgla = ll = None
    try:
        from fla.ops.simple_gla import chunk_simple_gla as sgla
    except Exception as e:  # noqa: BLE001 (any import failure leaves the column empty)
        print(f"ssd_torch: no fla chunk_simple_gla: {e}", file=sys.stderr)
    try:
        from fla.ops.log_linear_attn import chunk_log_linear_attn as ll
    except Exception as e:  # noqa: BLE001
        print(f"ssd_torch: no fla chunk_log_linear_attn: {e}", file=sys.stderr)
    dev = torch.device("cuda")
    print(f"ssd_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"median of {a.reps}", file=sys.stderr)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(fn, ins):
        def once(bwd):
            for x in ins:
                x.grad = None
            e0.record()
            out = fn()
            if isinstance(out, tuple):
                out = out[0]
            if bwd:
                out.backward(dout_of(out))
            e1.record()
            torch.cuda.synchronize()
            return e0.elapsed_time(e1)
        res = []
        for bwd in (False, True):
            try:
                for _ in range(2):
                    once(bwd)
                res.append(statistics.median(once(bwd) for _ in range(a.reps)))
            except Exception as e:  # noqa: BLE001 (out of memory, unsupported shape)
                print(f"ssd_torch: {getattr(fn, '__name__', 'variant')}: {e}", file=sys.stderr)
                res.append(None)
        return res

    douts = {}

    def dout_of(out):
        key = tuple(out.shape)
        if key not in douts:
            douts[key] = torch.randn_like(out)
        return douts[key]

    tokens, width = a.tokens, 2048
    fmt = "{:>4} {:>6} {:>4} {:>3} | " + " | ".join(["{:>9} {:>9}"] * 4)
    print(fmt.format("D", "T", "B", "H", "naive ssd", "f+b", "naive ll", "f+b", "fla sgla", "f+b",
                     "fla ll", "f+b") + "   (ms)")
    for D in Ds:
        H = width // D
        for T in (t for t in Ts if t <= tokens):
            B = tokens // T
            NL = fen_levels(T)
            torch.manual_seed(0)
            mk = lambda *s: torch.randn(*s, device=dev, dtype=torch.bfloat16).requires_grad_()
            q, k, v = mk(B, T, H, D), mk(B, T, H, D), mk(B, T, H, D)
            g = (-torch.rand(B, T, H, device=dev) * 0.1 - 0.001).to(torch.bfloat16).requires_grad_()
            lam = (torch.rand(B, T, H, NL, device=dev) + 0.2).to(torch.bfloat16).requires_grad_()
            scale = D ** -0.5
            cols = []
            if a.no_naive:
                cols += [None] * 4
            else:
                cols += timed(lambda: naive_chunked(torch, q, k, v, g, None, scale), [q, k, v, g])
                cols += timed(lambda: naive_chunked(torch, q, k, v, g, lam, scale), [q, k, v, g, lam])
            if sgla is not None:
                cols += timed(lambda: sgla(q, k, v, g=g, scale=scale), [q, k, v, g])
            else:
                cols += [None, None]
            if ll is not None:
                cols += timed(lambda: ll(q, k, v, g, lam), [q, k, v, g, lam])
            else:
                cols += [None, None]
            print(fmt.format(D, T, B, H, *("-" if c is None else f"{c:.3f}" for c in cols)),
                  flush=True)
            del q, k, v, g, lam
            douts.clear()
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
