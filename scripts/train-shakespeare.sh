#!/bin/sh
# train-shakespeare.sh: the learning demo. Trains a byte-level Llama of about
# 1M parameters (hidden 160, 3 layers, 2 heads of 80, MLP 448, tied
# embeddings: 994,880 weights) on tinyshakespeare, 1.43M training tokens in
# 700 steps of 32 windows of 64 bytes, and prints the validation loss every
# 100 steps. On the project's 2-core machine, shared with other jobs (load
# about 10), one thread: val 2.21 at step 100 (53 s), 2.02 (1m40s), 1.91,
# 1.86, 1.78 at step 500 (4m06s), 1.73, 1.71 at step 700 (5m27s).
#   scripts/train-shakespeare.sh [OUTDIR [EXTRA lla-train OPTIONS...]]
# OUTDIR (default out/shakespeare) receives the checkpoint, the training
# state and metrics.jsonl; a run there already is resumed (a finished one
# only reports). Environment:
# BUILD (default build), LMK_DATA (default ../shared/data), THREADS (1).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/${BUILD:-build}/bin/lla-train
data=${LMK_DATA:-$root/../shared/data}/text/tinyshakespeare.txt
out=${1:-$root/out/shakespeare}
[ $# -gt 0 ] && shift
[ -x "$bin" ] || { echo "train-shakespeare: no $bin (run make first)" >&2; exit 1; }
[ -r "$data" ] || { echo "train-shakespeare: cannot read '$data'" >&2; exit 1; }

# One thread: on 2 shared cores the OpenMP and OpenBLAS thread pools only
# get in each other's way; passive waiting keeps spinning threads off the
# processor when more are asked for.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMP_WAIT_POLICY
mkdir -p "$out"
start=$(date +%s)
if [ -f "$out/training_state.safetensors" ]; then
	# everything else comes from the saved run
	"$bin" --resume --out "$out" --metrics "$out/metrics.jsonl" "$@"
else
	"$bin" --data "$data" --val-frac 0.1 \
		--hidden 160 --layers 3 --heads 2 --seq 64 \
		--batch 32 --steps 700 --lr 2e-3 --min-lr 2e-4 --warmup 100 --schedule cosine \
		--weight-decay 0.1 --beta1 0.9 --beta2 0.95 --grad-clip 1 \
		--eval-every 100 --eval-batches 10 --save-every 100 --sample 200 --temperature 0.8 \
		--threads "${THREADS:-1}" --seed 1337 \
		--out "$out" --metrics "$out/metrics.jsonl" "$@"
fi
end=$(date +%s)
echo "train-shakespeare: $((end - start)) s; validation loss by step:" >&2
sed -n 's/^{"step":\([0-9]*\),.*"val_loss":\([0-9.]*\).*"elapsed":\([0-9.]*\).*/\1 \2 \3/p' "$out/metrics.jsonl" |
	awk '{ printf "  step %5d  val %.4f  %6.0f s\n", $1, $2, $3 }' >&2
