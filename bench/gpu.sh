#!/bin/sh
# gpu.sh: every GPU benchmark of the CUDA backend in one call of the device
# tool, ours against PyTorch on the same GPU, ending with one report of three
# tables: training of the 110M Llama (bench/train_gpu.sh), causal attention
# (bench/attention.sh) and batch-1 decoding (bench/decode_gpu.sh). It builds
# nothing: build here with
#   make BUILD=build-gpu CUDA=1 build-gpu/bin/lla-train \
#        build-gpu/bench/attention_gpu build-gpu/bench/decode_gpu
#   BUILD=build-gpu scripts/gpu-train-check.sh --bundle
# and carry build-gpu/bin/lla-train, build-gpu/bench/attention_gpu,
# build-gpu/bench/decode_gpu and build-gpu/tests/lib (about 50 MB). Each part
# keeps its own time limits; the whole takes about 5 minutes on an H200.
#   BUILD=build-gpu bench/gpu.sh
# Exit 0, or 1 when any part failed (the others still run and print).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
export BUILD NCCL_NVLS_ENABLE=0
LOG=${OUT:-$BUILD/bench-gpu}
mkdir -p "$LOG" || exit 1
rc=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "bench/gpu.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
OUT=$LOG/train bench/train_gpu.sh >"$LOG/train.txt" 2>&1 || rc=1
bench/attention.sh >"$LOG/attention.txt" 2>&1 || rc=1
OUT=$LOG/decode bench/decode_gpu.sh >"$LOG/decode.txt" 2>&1 || rc=1
echo
echo "== training, Llama 110M, bf16 (bench/train_gpu.sh)"
sed -n '/^model:/,$p' "$LOG/train.txt"
echo
echo "== attention, causal bf16, TFLOP/s (bench/attention.sh)"
sed -n '/forward TFLOP/,$p' "$LOG/attention.txt" | sed '/^$/,$d'
echo
echo "== decoding, batch 1, bf16 (bench/decode_gpu.sh)"
sed -n '/^batch-1 greedy/,$p' "$LOG/decode.txt"
[ $rc -eq 0 ] || echo "bench/gpu.sh: a part failed; its log is in $LOG"
exit $rc
