#!/bin/sh
# demo.sh: what `make demo` runs. Trains a byte-level Llama of about 1M
# parameters on Tiny Shakespeare for 300 steps on the CPU (about 2-3 minutes
# on 2 cores), printing the validation loss and a sample of the model's
# Shakespeare every 100 steps; the checkpoint lands in out/demo (a Hugging
# Face directory: transformers opens it). scripts/train-shakespeare.sh is the
# longer run (val loss < 1.8 in about 5 minutes).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/${BUILD:-build}/bin/lla-train
data=${LMK_DATA:-$root/../shared/data}/text/tinyshakespeare.txt
out=$root/out/demo
[ -r "$data" ] || { echo "demo: cannot read '$data' (set LMK_DATA to the data folder)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
OMP_WAIT_POLICY=passive "$bin" --data "$data" \
	--hidden 160 --layers 3 --heads 2 --seq 64 --batch 32 \
	--steps 300 --lr 2e-3 --min-lr 2e-4 --warmup 100 \
	--eval-every 100 --eval-batches 10 --save-every 0 --sample 200 --temperature 0.8 \
	--threads 1 --seed 1337 --out "$out" --metrics "$out/metrics.jsonl"
echo "demo: validation loss by step (nats per byte):"
sed -n 's/^{"step":\([0-9]*\),.*"val_loss":\([0-9.]*\).*/\1 \2/p' "$out/metrics.jsonl" |
	awk '{ printf "  step %4d  %.3f\n", $1, $2 }'
echo "demo: the checkpoint served by ladder-serve (a JSON request on stdin, one answer line):"
echo '{"prompt":"ROMEO:","max_tokens":60,"temperature":0.8,"seed":1}' |
	"$root/${BUILD:-build}/bin/ladder-serve" -q -m "$out"
echo "demo: checkpoint in $out (config.json, model.safetensors: transformers opens it)"
