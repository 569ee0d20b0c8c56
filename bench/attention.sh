#!/bin/sh
# attention.sh: our CUDA attention (bench/attention_gpu.cu) against PyTorch's
# scaled_dot_product_attention (bench/attention_torch.py) on the same shapes
# (BF16, causal, B*T = 16384, H*D = 2048; see either file for the FLOP
# convention), printed as one table: TFLOP/s of each and ours/torch, forward
# and forward+backward.
#   BUILD=dir bench/attention.sh [--quick] [--reps N]
# BUILD defaults to build; when $BUILD/bench/attention_gpu exists nothing is
# built, else it is made with CUDA=1. Exit 0, or 1 when ours fails (a torch
# failure leaves its columns empty).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=$BUILD/bench/attention_gpu
if [ ! -x "$bin" ]; then
	make BUILD="$BUILD" CUDA=1 "$bin" >&2
fi
ours=$(mktemp)
theirs=$(mktemp)
trap 'rm -f "$ours" "$theirs"' EXIT
"$bin" "$@" >"$ours" || { cat "$ours"; echo "attention.sh: $bin failed" >&2; exit 1; }
PYTHONUNBUFFERED=1 python3 bench/attention_torch.py "$@" >"$theirs" ||
	echo "attention.sh: the torch benchmark failed; its columns stay empty" >&2
awk '
	FNR == NR { if ($1 == "torch") { k = $2 " " $3; tms[k] = $6; tf[k] = $7; tmsb[k] = $8;
					 tfb[k] = $9 } next }
	$1 == "ours" {
		k = $2 " " $3
		if (!hdr++) {
			printf "%4s %6s %3s %3s | %-28s | %-28s | %s\n", "", "", "", "",
			       "forward TFLOP/s", "forward+backward TFLOP/s", "ms, ours / torch"
			printf "%4s %6s %3s %3s | %8s %8s %10s | %8s %8s %10s | %s\n", "D", "T", "B",
			       "H", "ours", "torch", "ours/torch", "ours", "torch", "ours/torch",
			       "fwd; fwd+bwd"
		}
		t1 = (k in tf) ? tf[k] : "-"
		t2 = (k in tfb) ? tfb[k] : "-"
		r1 = (k in tf && tf[k] > 0) ? sprintf("%.2f", $7 / tf[k]) : "-"
		r2 = (k in tfb && tfb[k] > 0) ? sprintf("%.2f", $9 / tfb[k]) : "-"
		printf "%4s %6s %3s %3s | %8.1f %8s %10s | %8.1f %8s %10s | %s / %s; %s / %s\n",
		       $2, $3, $4, $5, $7, t1, r1, $9, t2, r2, $6, (k in tms) ? tms[k] : "-",
		       $8, (k in tmsb) ? tmsb[k] : "-"
	}
' "$theirs" "$ours"
