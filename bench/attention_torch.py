#!/usr/bin/env python3
"""attention_torch.py: PyTorch's scaled_dot_product_attention on the shapes of
bench/attention_gpu.cu, the baseline for our attention kernels.

BF16, is_causal=True, on the GPU; q, k, v made (B,T,H,D) like ours and
transposed to (B,H,T,D) views (the layout the flash backends read without a
copy); forward, and forward+backward (grads cleared outside the timed
region), timed with CUDA events: warm-up, then the median of --reps runs.
Shapes: B*T = 16384 tokens, T in {1K..16K} (--quick: up to 4K), H*D = 2048
(H = 16 at D = 128, H = 32 at D = 64), K = H. FLOPs as FlashAttention
counts them: forward 4*B*H*T*T*D / 2 (causal), forward+backward 3.5 times.
Prints one line per shape:
    torch D T B H fwd_ms fwd_TFLOPs fwdbwd_ms fwdbwd_TFLOPs
Exit 0, 1 without a GPU or torch, 2 on a usage error."""
import argparse
import statistics
import sys


def main():
    ap = argparse.ArgumentParser(description="torch SDPA baseline for bench/attention.sh")
    ap.add_argument("--quick", action="store_true", help="T up to 4K only")
    ap.add_argument("--reps", type=int, default=20, help="timed runs per shape (median)")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"attention_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("attention_torch: no CUDA device", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    print(f"attention_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"median of {a.reps}", file=sys.stderr)
    tokens, width = 16384, 2048
    for D in (64, 128):
        H = width // D
        T = 1024
        while T <= (4096 if a.quick else 16384):
            B = tokens // T
            g = torch.Generator(device=dev).manual_seed(T * D)

            def rnd():
                x = torch.rand(B, T, H, D, device=dev, generator=g, dtype=torch.float32)
                return (x * 2 - 1).to(torch.bfloat16)

            q, k, v, dout = rnd(), rnd(), rnd(), rnd()
            for x in (q, k, v):
                x.requires_grad_(True)
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            dot = dout.transpose(1, 2)

            def fwd():
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

            def fwdbwd():
                fwd().backward(dot)

            def clear():
                q.grad = k.grad = v.grad = None

            def timed(fn):
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                clear()
                torch.cuda.synchronize()
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                return e0.elapsed_time(e1)

            with torch.no_grad():
                for _ in range(3):
                    fwd()
            for _ in range(3):
                clear()
                fwdbwd()
            with torch.no_grad():
                tf = [timed(fwd) for _ in range(a.reps)]
            tfb = [timed(fwdbwd) for _ in range(a.reps)]
            flops = 4.0 * B * H * T * T * D / 2
            mf, mfb = statistics.median(tf), statistics.median(tfb)
            print(f"torch {D} {T} {B} {H} {mf:.3f} {flops / mf * 1e-9:.1f} {mfb:.3f} "
                  f"{3.5 * flops / mfb * 1e-9:.1f}", flush=True)
            del q, k, v, dout, qt, kt, vt, dot
            T *= 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
