#!/bin/sh
# gpu-step-same.sh: the training step that waits once and its CUDA graph
# give the bits of the step that waited per micro-batch. lla-train on the
# GPU three ways on the same runs: BEFORE (a build of the step that waited
# for each loss and the norm, e.g. carried as $BUILD/bin/lla-train-before),
# this build with --no-cuda-graph, and this build as it is (the step
# replayed as a CUDA graph from step 2 on); each run in bf16 and f32, with
# 2 micro-batches a step and evaluations in between. Checks that the
# metrics (loss, val_loss, grad_norm, lr of every step) are the same text
# and the saved model.safetensors the same bytes.
#
#   BUILD=build-gpu [BEFORE=path] tests/gpu-step-same.sh
# Without BEFORE (or when it does not exist) only the two ways of this
# build are compared. Exit 0 PASS, 1 FAIL, 2 no build or no device.
set -u
BUILD=${BUILD:-build-gpu}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
TRAIN=$BUILD/bin/lla-train
BEFORE=${BEFORE:-$BUILD/bin/lla-train-before}
case $BEFORE in /*) ;; *) BEFORE=$PWD/$BEFORE ;; esac
[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$TRAIN" ] || { echo "gpu-step-same: no $TRAIN" >&2; exit 2; }
T=$(mktemp -d "${TMPDIR:-/tmp}/gpu-step-same.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
cd "$T" || exit 2
export OMP_WAIT_POLICY=passive

awk 'BEGIN { for (i = 0; i < 3000; i++)
	printf "line %d: the quick brown fox jumps over the lazy dog, %d times\n", i * 7 % 101, i % 13 }' >text.txt
fail=0
# the numbers of each step, without the clock's
numbers() {
	grep '"step"' "$1" | sed 's/,"tokens_per_s":[^,}]*//; s/,"elapsed":[^,}]*//'
}
# one NAME BIN ARGS...: a run into NAME/ and NAME.jsonl
one() {
	name=$1 bin=$2
	shift 2
	if ! "$bin" "$@" --out "$name" --metrics "$name.jsonl" 2>"$name.err"; then
		echo "gpu-step-same: $name: exit $?:"
		sed 's/^/    /' "$name.err"
		grep -q "no CUDA device" "$name.err" && exit 2
		fail=1
		return 1
	fi
	grep -q "cuda graph" "$name.err" && { echo "gpu-step-same: $name:"; sed 's/^/    /' "$name.err"; }
	return 0
}
# same A B: the numbers and the weights of runs A and B
same() {
	if ! numbers "$1.jsonl" >"$1.n" || ! numbers "$2.jsonl" >"$2.n" || ! cmp -s "$1.n" "$2.n"; then
		echo "gpu-step-same: FAIL $1 and $2: the metrics differ:"
		diff "$1.n" "$2.n" | head -10 | sed 's/^/    /'
		fail=1
	elif ! cmp -s "$1/model.safetensors" "$2/model.safetensors"; then
		echo "gpu-step-same: FAIL $1 and $2: the weights differ"
		fail=1
	else
		echo "gpu-step-same: PASS $1 = $2 ($(wc -l <"$1.n") steps, loss $(tail -1 "$1.n" | sed 's/.*"loss":\([^,]*\).*/\1/'))"
	fi
}

for dt in bf16 f32; do
	for shape in "--hidden 128 --layers 2 --heads 2 --kv-heads 1 --batch 4 --seq 64 --accum 2" \
		"--hidden 256 --layers 3 --heads 4 --batch 8 --seq 256 --accum 1"; do
		k=$(echo "$shape" | sed 's/--hidden \([0-9]*\).*/\1/')
		ARGS="--data text.txt $shape --steps 14 --warmup 3 --eval-every 5 --eval-batches 2 --seed 5 --device cuda --dtype $dt"
		one "graph-$dt-$k" "$TRAIN" $ARGS || continue
		one "eager-$dt-$k" "$TRAIN" $ARGS --no-cuda-graph && same "eager-$dt-$k" "graph-$dt-$k"
		if [ -x "$BEFORE" ]; then
			one "before-$dt-$k" "$BEFORE" $ARGS && same "before-$dt-$k" "graph-$dt-$k"
		fi
	done
done
[ $fail = 0 ] && echo "gpu-step-same: PASS" || echo "gpu-step-same: FAIL"
exit $fail
