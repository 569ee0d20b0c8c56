#!/bin/sh
# mixer-experiments.sh: the token-mixer experiments of issues 8 and 9, each
# printing one markdown table (docs/results.md keeps them).
#
#   scripts/mixer-experiments.sh mqar  [OUT]   multi-query associative recall:
#       accuracy of every mixer against key-value pairs and sequence length
#   scripts/mixer-experiments.sh lm    [OUT]   validation loss of every mixer
#       on tinyshakespeare at equal layers, width and tokens
#   scripts/mixer-experiments.sh state [OUT]   state tracking: word problems
#       over S5 and A5, and flip-flop language, for RoPE attention, PaTH and
#       PaTH-FoX (and the others, with MIXERS)
#
# Every run is lla-train with --metrics; a run already finished in OUT
# (default build/mixer-experiments) is not repeated, so a sweep can be split
# over calls of bounded length. Environment: BUILD (default build), DEVICE
# (default cuda when this build has it and a GPU is there, else cpu),
# MIXERS (names, or specs with settings: path:heads=4,head_dim=16),
# HIDDEN, LAYERS, HEADS (state: attention's, default 2), STEPS, BATCH, LR,
# THREADS (lla-train --threads; default all), SEED (--seed, default 1; any
# other seed names the MQAR runs and columns with a -sSEED suffix, so runs
# of several seeds share OUT), and per experiment: MQAR_T
# ("256 512"), MQAR_KV ("16 32 64"), MQAR_VOCAB (8192), LM_T (256),
# STATE_T (64), STATE_TASKS ("s5 a5 flipflop"; also s5:swaps=1, S5 by
# its transpositions).
set -eu
what=${1:?usage: mixer-experiments.sh mqar|lm|state [OUT]}
OUT=${2:-${BUILD:-build}/mixer-experiments}
BIN=${BUILD:-build}/bin/lla-train
DATA=${LMK_DATA:-../shared/data}
[ -x "$BIN" ] || { echo "mixer-experiments: build first (make)" >&2; exit 1; }
if [ -z "${DEVICE:-}" ]; then
	DEVICE=cpu
	command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && DEVICE=cuda
fi
ALL="attention linear mamba2 gdn ll-mamba2 ll-gdn path path-fox"
LINEARS="attention linear mamba2 gdn ll-mamba2 ll-gdn"
HIDDEN=${HIDDEN:-128} LAYERS=${LAYERS:-2} BATCH=${BATCH:-64} SEED=${SEED:-1}
mkdir -p "$OUT/$what"
export OMP_WAIT_POLICY=passive

# The --mixer of a name: GDN's key and value heads of 64 and 128 (the
# paper's Dv = 2 Dk, within the CUDA kernels' 128) at these small widths.
spec() {
	case $1 in
	gdn | ll-gdn) echo "$1:heads=2,head_dim=64,head_dim_v=128" ;;
	*) echo "$1" ;;
	esac
}

# run NAME OPTIONS...: one lla-train run into $OUT/$what/NAME.jsonl
run() {
	name=$1
	shift
	m=$OUT/$what/$name.jsonl
	if [ -s "$m.done" ] || [ -n "${REPORT_ONLY:-}" ]; then return 0; fi
	rm -rf "$m" "$OUT/$what/$name"
	echo "mixer-experiments: $what $name" >&2
	if "$BIN" --device "$DEVICE" --metrics "$m" --quiet --seed "$SEED" ${THREADS:+--threads "$THREADS"} "$@" \
		2>"$OUT/$what/$name.err"; then
		echo ok >"$m.done"
	else
		echo "mixer-experiments: $name failed: $(tail -1 "$OUT/$what/$name.err")" >&2
		echo "failed: $(tail -1 "$OUT/$what/$name.err")" >"$m.done"
	fi
}

# table ROWKEY COLKEYS...: rows are mixers, columns the runs' suffixes
report() {
	python3 - "$OUT/$what" "$@" <<'PY'
import json, os, sys
d, field, mixers, cols = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
def last(name, key):
    p = os.path.join(d, name + ".jsonl")
    done = open(p + ".done").read().strip() if os.path.exists(p + ".done") else "missing"
    if done != "ok":
        return "failed" if done.startswith("failed") else "-"
    v = [json.loads(l) for l in open(p)]
    v = [r[key] for r in v if key in r]
    return f"{v[-1]:.3f}" if v else "-"
def params(name):
    # the gradients are float32, one per parameter
    p = os.path.join(d, name + ".jsonl")
    if not os.path.exists(p):
        return "-"
    for l in open(p):
        r = json.loads(l)
        if "grads_bytes" in r:
            return f"{r['grads_bytes'] / 4 / 1e6:.2f}M"
    return "-"
print("| mixer | parameters | " + " | ".join(cols) + " |")
print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
for m in mixers:
    print(f"| {m} | {params(m + '.' + cols[0])} | " +
          " | ".join(last(f"{m}.{c}", field) for c in cols) + " |")
PY
}

case $what in
mqar)
	MIXERS=${MIXERS:-$LINEARS}
	STEPS=${STEPS:-2000} LR=${LR:-3e-3}
	MQAR_T=${MQAR_T:-256 512} MQAR_KV=${MQAR_KV:-16 32 64} V=${MQAR_VOCAB:-8192}
	cols=""
	for T in $MQAR_T; do
		for kv in $MQAR_KV; do
			[ $((4 * kv)) -le "$T" ] || continue
			col=T$T-kv$kv
			[ "$SEED" = 1 ] || col=$col-s$SEED
			cols="$cols $col"
			for mx in $MIXERS; do
				run "$mx.$col" --task "mqar:kv=$kv,vocab=$V,val=256" --seq "$T" \
					--hidden "$HIDDEN" --layers "$LAYERS" --heads 2 --mixer "$(spec "$mx")" \
					--batch "$BATCH" --steps "$STEPS" --lr "$LR" --warmup 100 \
					--weight-decay 0.1 --eval-every "$STEPS"
			done
		done
	done
	echo "MQAR accuracy (held-out queries; hidden $HIDDEN, $LAYERS layers, $STEPS steps of $BATCH, vocabulary $V, $DEVICE)"
	echo
	report val_acc "$MIXERS" "$cols"
	;;
lm)
	MIXERS=${MIXERS:-$ALL}
	STEPS=${STEPS:-1500} LR=${LR:-2e-3} T=${LM_T:-256}
	for mx in $MIXERS; do
		run "$mx.lm" --data "$DATA/text/tinyshakespeare.txt" --seq "$T" --hidden "$HIDDEN" \
			--layers "$LAYERS" --heads 4 --mixer "$(spec "$mx")" --batch "$BATCH" --steps "$STEPS" \
			--lr "$LR" --warmup 100 --eval-every "$STEPS" --eval-batches 40
	done
	echo "Validation loss on tinyshakespeare (nats per byte; hidden $HIDDEN, $LAYERS layers, $STEPS steps of $BATCH x $T bytes, $DEVICE)"
	echo
	report val_loss "$MIXERS" "lm"
	;;
state)
	MIXERS=${MIXERS:-attention path path-fox}
	STEPS=${STEPS:-2000} LR=${LR:-1e-3} T=${STATE_T:-64}
	TASKS=${STATE_TASKS:-s5 a5 flipflop}
	for task in $TASKS; do
		case $task in
		*:*) tspec="$task,val=256" ;;  # s5:swaps=1
		*) tspec="$task:val=256" ;;
		esac
		for mx in $MIXERS; do
			run "$mx.$task" --task "$tspec" --seq "$T" --hidden "$HIDDEN" \
				--layers "$LAYERS" --heads "${HEADS:-2}" --mixer "$(spec "$mx")" --batch "$BATCH" \
				--steps "$STEPS" \
				--lr "$LR" --warmup 100 --eval-every "$STEPS"
		done
	done
	echo "State tracking: accuracy at every position (word problems: the running product; flip-flop: the bits read; hidden $HIDDEN, $LAYERS layers, $STEPS steps of $BATCH x $T, $DEVICE)"
	echo
	report val_acc "$MIXERS" "$TASKS"
	echo
	echo "Whole sequences right:"
	echo
	report val_seq_acc "$MIXERS" "$TASKS"
	echo
	echo "Targets right before the first error, mean over sequences (of $T):"
	echo
	report val_prefix "$MIXERS" "$TASKS"
	;;
*)
	echo "usage: mixer-experiments.sh mqar|lm|state [OUT]" >&2
	exit 2
	;;
esac
