#!/usr/bin/env python3
"""gdn_torch.py: the baselines for bench/gdn_gpu.cu, on the same shapes.

fla's Triton chunk_gated_delta_rule (flash-linear-attention), when it can be
imported, and a PyTorch chunked reference written here (chunks of 64: the
UT transform by a unit lower triangular solve, then the state through the
chunks in a Python loop; autograd for the backward), both BF16 on the GPU,
q, k, v (B,T,H,D), g = log decay (B,T,H), beta (B,T,H). Timed with CUDA
events: warm-up, then the median of --reps runs; forward, and
forward+backward (grads cleared outside the timed region).
Shapes: B*T = 65536 tokens, T in {2K..64K} (--quick: up to 8K; --t a list), H*D = 2048
(H = 16 at D = 128, H = 32 at D = 64). The PyTorch reference is skipped
above --ref-max-t (default 16K: its Python loop over chunks is slow).
Prints one line per shape and implementation:
    torch D T B H impl fwd_ms fwdbwd_ms fwd_Mtok/s fwdbwd_Mtok/s
Exit 0, 1 without a GPU or torch, 2 on a usage error."""
import argparse
import statistics
import sys

import mixer_rows


def gdn_chunked_ref(q, k, v, g, beta, scale, C=64):
    """o_t = scale S_tᵀ q_t, S_t = a_t (I - b_t k_t k_tᵀ) S_{t-1} + b_t k_t v_tᵀ,
    in float32, chunks of C (T padded to a multiple of C with b = 0)."""
    import torch
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    pad = (-T) % C
    f = lambda x: x.float()
    q, k, v, g, beta = f(q), f(k), f(v), f(g), f(beta)
    if pad:
        q = torch.nn.functional.pad(q, (0, 0, 0, 0, 0, pad))
        k = torch.nn.functional.pad(k, (0, 0, 0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, 0, 0, pad))
        g = torch.nn.functional.pad(g, (0, 0, 0, pad))
        beta = torch.nn.functional.pad(beta, (0, 0, 0, pad))
    n = (T + pad) // C
    # (B,H,n,C,D)
    r = lambda x: x.reshape(B, n, C, H, -1).permute(0, 3, 1, 2, 4)
    q, k, v = r(q), r(k), r(v)
    g = g.reshape(B, n, C, H).permute(0, 3, 1, 2).cumsum(-1)
    beta = beta.reshape(B, n, C, H).permute(0, 3, 1, 2)
    lower = torch.tril(torch.ones(C, C, device=q.device, dtype=torch.bool))
    strict = torch.tril(torch.ones(C, C, device=q.device, dtype=torch.bool), -1)
    decay = (g[..., :, None] - g[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    M = (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).masked_fill(~strict, 0)
    eye = torch.eye(C, device=q.device)
    Tm = torch.linalg.solve_triangular(eye + M, eye.expand_as(M), upper=False,
                                       unitriangular=True)
    gam = g.exp()
    Wk = Tm @ ((beta * gam)[..., None] * k)
    Wv = Tm @ (beta[..., None] * v)
    P = decay * (q @ k.transpose(-1, -2))
    Qe = gam[..., None] * q - P @ Wk
    Kd = (g[..., -1:] - g).exp()[..., None] * k
    S = q.new_zeros(B, H, D, Dv)
    outs = []
    for c in range(n):
        U = Wv[:, :, c] - Wk[:, :, c] @ S
        outs.append(scale * (Qe[:, :, c] @ S + P[:, :, c] @ Wv[:, :, c]))
        S = gam[:, :, c, -1, None, None] * S + Kd[:, :, c].transpose(-1, -2) @ U
    o = torch.stack(outs, 2).permute(0, 2, 3, 1, 4).reshape(B, n * C, H, Dv)
    return o[:, :T]


def main():
    ap = argparse.ArgumentParser(description="fla and PyTorch baselines for bench/gdn_gpu.cu")
    mixer_rows.add_options(ap)
    ap.add_argument("--reps", type=int, default=10, help="timed runs per shape (median)")
    ap.add_argument("--ref-max-t", type=int, default=16384,
                    help="longest T for the PyTorch reference")
    a = ap.parse_args()
    shape = mixer_rows.rows(a, "gdn_torch")
    if shape is None:
        return 2
    Ds, Ts = shape
    if a.reps < 1:
        print("gdn_torch: --reps: expected a count >= 1", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError as e:
        print(f"gdn_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("gdn_torch: no CUDA device", file=sys.stderr)
        return 1
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except Exception as e:  # noqa: BLE001 (any import failure means: no fla)
        print(f"gdn_torch: fla not importable ({e}); PyTorch reference only", file=sys.stderr)
        chunk_gated_delta_rule = None
    dev = torch.device("cuda")
    print(f"gdn_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"median of {a.reps}", file=sys.stderr)

    def fla_fn(q, k, v, g, b, scale):
        # (B,T,H,D): fla 0.6 refuses head_first (raising, not a TypeError);
        # older versions take it and default to head first
        try:
            o = chunk_gated_delta_rule(q, k, v, g, b, scale=scale)
        except Exception:
            o = chunk_gated_delta_rule(q, k, v, g, b, scale=scale, head_first=False)
        return o[0] if isinstance(o, tuple) else o

    impls = [("torch-chunked", lambda q, k, v, g, b, s: gdn_chunked_ref(q, k, v, g, b, s))]
    if chunk_gated_delta_rule is not None:
        impls.insert(0, ("fla-chunked", fla_fn))
    tokens, width = 65536, 2048
    no_bwd = set()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for D in Ds:
        H = width // D
        for T in Ts:
            B = tokens // T
            gen = torch.Generator(device=dev).manual_seed(T + D)
            mk = lambda *s: torch.rand(*s, device=dev, generator=gen)
            q = torch.nn.functional.normalize(mk(B, T, H, D) * 2 - 1, dim=-1).bfloat16()
            k = torch.nn.functional.normalize(mk(B, T, H, D) * 2 - 1, dim=-1).bfloat16()
            v = (mk(B, T, H, D) * 2 - 1).bfloat16()
            g = (-0.1 * mk(B, T, H)).bfloat16()
            b = mk(B, T, H).bfloat16()
            do = (mk(B, T, H, D) * 2 - 1).bfloat16()
            for name, fn in impls:
                if name == "torch-chunked" and T > a.ref_max_t:
                    continue
                xs = [x.clone().requires_grad_() for x in (q, k, v, g, b)]
                tf, tb = [], []
                for r in range(-2, a.reps):
                    with torch.no_grad():
                        e0.record()
                        o = fn(*xs, D ** -0.5)
                        e1.record()
                    torch.cuda.synchronize()
                    if r >= 0:
                        tf.append(e0.elapsed_time(e1))
                    if name in no_bwd:
                        continue
                    for x in xs:
                        x.grad = None
                    try:
                        e0.record()
                        o = fn(*xs, D ** -0.5)
                        o.backward(do)
                        e1.record()
                    except RuntimeError as e:
                        # fla refuses its backward on some Triton versions
                        # (wrong results on Hopper): keep the forward
                        no_bwd.add(name)
                        print(f"gdn_torch: {name} backward: {str(e).splitlines()[0]}",
                              file=sys.stderr)
                        continue
                    torch.cuda.synchronize()
                    if r >= 0:
                        tb.append(e0.elapsed_time(e1))
                f = statistics.median(tf)
                if tb:
                    fb = statistics.median(tb)
                    print(f"torch {D} {T} {B} {H} {name} {f:.3f} {fb:.3f} "
                          f"{tokens / (f * 1e3):.1f} {tokens / (fb * 1e3):.1f}", flush=True)
                else:
                    print(f"torch {D} {T} {B} {H} {name} {f:.3f} - "
                          f"{tokens / (f * 1e3):.1f} -", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
