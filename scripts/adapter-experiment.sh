#!/bin/sh
# adapter-experiment.sh: continued training of a small model on new text
# with full AdamW, LoRA, GaLore with SVD projectors and GaLore with random
# projectors, at equal steps; prints one markdown table of final validation
# loss and optimizer memory (issue 6, docs/results.md).
#
# A base model is first trained on tinyshakespeare; each method then
# continues it on the passages of ../shared/data/squad (encyclopedic prose:
# a shift of domain), from the same base, seed and batches.
#
#   scripts/adapter-experiment.sh [OUT]     (default build/adapter-experiment)
# Environment: BUILD (default build), DEVICE (cpu or cuda; default cpu),
# HIDDEN, LAYERS, HEADS, SEQ, BATCH, BASE_STEPS, STEPS, RANK_LORA,
# RANK_GALORE, EVERY, LR_FULL, LR_LORA, LR_GALORE, SCALE_GALORE.
# Needs python3 (to pull the passages out of the SQuAD JSON).
set -eu
OUT=${1:-${BUILD:-build}/adapter-experiment}
BIN=${BUILD:-build}/bin
DATA=${LMK_DATA:-../shared/data}
DEVICE=${DEVICE:-cpu}
HIDDEN=${HIDDEN:-128} LAYERS=${LAYERS:-4} HEADS=${HEADS:-4}
SEQ=${SEQ:-128} BATCH=${BATCH:-16}
BASE_STEPS=${BASE_STEPS:-600} STEPS=${STEPS:-300}
RANK_LORA=${RANK_LORA:-16} RANK_GALORE=${RANK_GALORE:-32} EVERY=${EVERY:-100}
LR_FULL=${LR_FULL:-1e-3} LR_LORA=${LR_LORA:-3e-3} LR_GALORE=${LR_GALORE:-1e-2}
SCALE_GALORE=${SCALE_GALORE:-0.25}

[ -x "$BIN/lla-train" ] || { echo "adapter-experiment: build first (make)" >&2; exit 1; }
mkdir -p "$OUT"
export OMP_WAIT_POLICY=passive

if [ ! -s "$OUT/squad.txt" ]; then
	python3 - "$DATA/squad/squad_val.json" "$OUT/squad.txt.tmp" <<'PY'
import json, sys
docs = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for d in docs:
        f.write(d["context"].strip() + "\n\n")
PY
	mv "$OUT/squad.txt.tmp" "$OUT/squad.txt"
fi

common="--device $DEVICE --seq $SEQ --batch $BATCH --eval-every 50 --eval-batches 20 --seed 1"
if [ ! -f "$OUT/base/model.safetensors" ]; then
	rm -rf "$OUT/base"
	"$BIN/lla-train" --data "$DATA/text/tinyshakespeare.txt" --hidden "$HIDDEN" --layers "$LAYERS" \
		--heads "$HEADS" --steps "$BASE_STEPS" --lr 2e-3 --warmup 50 --out "$OUT/base" \
		--metrics "$OUT/base.jsonl" $common -q
fi

run() { # name, options...
	name=$1
	shift
	rm -rf "$OUT/$name" "$OUT/$name.jsonl"
	t0=$(date +%s)
	"$BIN/lla-train" --data "$OUT/squad.txt" --init "$OUT/base" --steps "$STEPS" --warmup 30 \
		--out "$OUT/$name" --metrics "$OUT/$name.jsonl" $common -q "$@"
	t1=$(date +%s)
	echo "$name $((t1 - t0))" >>"$OUT/times"
}
: >"$OUT/times"
run full --lr "$LR_FULL"
run lora --lr "$LR_LORA" --weight-decay 0 \
	--adapter "lora:r=$RANK_LORA,alpha=$((2 * RANK_LORA)),targets=q,k,v,o,gate,up,down"
run galore-svd --lr "$LR_GALORE" \
	--optim "galore:r=$RANK_GALORE,every=$EVERY,proj=svd,scale=$SCALE_GALORE"
run galore-random --lr "$LR_GALORE" \
	--optim "galore:r=$RANK_GALORE,every=$EVERY,proj=random,scale=$SCALE_GALORE"

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
times = dict(l.split() for l in open(os.path.join(out, "times")))
def rows(name):
    return [json.loads(l) for l in open(os.path.join(out, name + ".jsonl"))]
base = [r for r in rows("full") if r["step"] == 0 and "val_loss" in r][0]["val_loss"]
print(f"base model's validation loss on the new text: {base:.4f}\n")
print("| method | settings | final val loss | optimizer state | gradients | wall s |")
print("| --- | --- | --- | --- | --- | --- |")
for name in ("full", "lora", "galore-svd", "galore-random"):
    rs = rows(name)
    mem = [r for r in rs if "memory" in r][0]
    val = [r["val_loss"] for r in rs if "val_loss" in r][-1]
    mb = lambda b: f"{b / 2**20:.2f} MiB"
    print(f"| {name} | {mem['memory']} | {val:.4f} | {mb(mem['optimizer_bytes'])} | "
          f"{mb(mem['grads_bytes'])} | {float(times[name]):.0f} |")
PY
