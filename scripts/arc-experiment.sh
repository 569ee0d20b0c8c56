#!/bin/sh
# arc-experiment.sh: test-time training on ARC end to end (issue 7; Akyurek
# et al. 2024): pretrain a small model on the ARC-AGI-1 training tasks
# (their leave-one-out tasks and augmented copies, loss on outputs), then on
# the first N evaluation tasks predict without test-time training and with
# it (a fresh LoRA per task on its leave-one-out tasks), score both (pass@2,
# ttt-arc score, and the loss of the known test outputs, which moves long
# before a small model solves a task) and print one table.
#
#   scripts/arc-experiment.sh             run or continue every stage
#   ARC_TIME=540 scripts/arc-experiment.sh
#       stop after about 540 seconds with everything saved: exit 75 means
#       "call again" (each stage resumes: pretrain from its state file,
#       predict and ttt task by task from their submissions)
#
# Every size comes from the environment (defaults: a CPU toy):
#   ARC_WORK      the working folder (build-arc/experiment; build* is
#                 ignored by git, so a warm GPU machine keeps it)
#   ARC_BIN       ttt-arc (build/bin/ttt-arc)
#   ARC_DATA      ARC-AGI-1 with training/ and evaluation/ (../shared/data/arc,
#                 else build-arcdata/arc: copy it there to carry it)
#   ARC_DEVICE    cpu or cuda (cpu); ARC_DTYPE f32 or bf16 (the device's)
#   ARC_THREADS   CPU threads (all)
#   ARC_BASE      scratch (a new model, byte tokens) or a GGUF/HF model to
#                 pretrain a LoRA over (e.g. models/smollm2-135m-instruct.gguf,
#                 scripts/get-model.sh) (scratch)
#   ARC_HIDDEN ARC_LAYERS ARC_HEADS   the new model (64, 2, 2)
#   ARC_ADAPTER   pretraining LoRA over ARC_BASE (lora:r=64,alpha=64,
#                 targets=q,k,v,o,gate,up,down)
#   ARC_TRAIN_TASKS  training tasks used, the first ones (0: all 400) (8)
#   ARC_STEPS ARC_BATCH ARC_LR ARC_CAP ARC_AUGMENT   pretraining (200, 8,
#                 ttt-arc's default lr, 4 leave-one-out tasks and 4 copies
#                 per task and epoch); ARC_STEPS=auto:S times 30 steps
#                 first (in ARC_WORK/probe) and takes as many steps as
#                 fit in S seconds (kept in ARC_WORK/steps)
#   ARC_MAX_LEN   tokens of an example, or of a prompt and its answer (2048)
#   ARC_N         evaluation tasks, the first ones in order of id (2)
#   ARC_TTT_CAP ARC_TTT_EPOCHS ARC_TTT_LR ARC_TTT_BATCH ARC_TTT_ADAPTER
#                 test-time training (8, 2, 1e-4, 2, ttt-arc's default LoRA)
#   ARC_PER_CLASS predictions per symmetry (1: 8 per test input)
#   ARC_SEED      (0)
#   ARC_MARGIN    seconds kept back from ARC_TIME for the last step or task
#                 a stage starts before its limit (60)
# Prints the table on stdout and keeps it in ARC_WORK/table.md; the
# submissions and metrics stay in ARC_WORK.
#
# On a machine that keeps nothing once given back: after each call, bring
# back ARC_WORK without model/ttt-arc-state.safetensors (the state of an
# unfinished pretraining: three float32 copies of the weights); once
# pretraining is done (ARC_WORK/model.done) the rest is small, and a fresh
# machine continues from that copy. An unfinished pretraining needs its
# state, so size it to finish within one call or keep the machine warm.
set -eu
WORK=${ARC_WORK:-build-arc/experiment}
BIN=${ARC_BIN:-build/bin/ttt-arc}
if [ -z "${ARC_DATA:-}" ]; then
	ARC_DATA=../shared/data/arc
	[ -d "$ARC_DATA/evaluation" ] || ARC_DATA=build-arcdata/arc
fi
DEVICE=${ARC_DEVICE:-cpu}
BASE=${ARC_BASE:-scratch}
HIDDEN=${ARC_HIDDEN:-64} LAYERS=${ARC_LAYERS:-2} HEADS=${ARC_HEADS:-2}
ADAPTER=${ARC_ADAPTER:-lora:r=64,alpha=64,targets=q,k,v,o,gate,up,down}
TRAIN_TASKS=${ARC_TRAIN_TASKS:-8}
STEPS=${ARC_STEPS:-200} BATCH=${ARC_BATCH:-8} CAP=${ARC_CAP:-4} AUGMENT=${ARC_AUGMENT:-4}
MAX_LEN=${ARC_MAX_LEN:-2048}
N=${ARC_N:-2}
TTT_CAP=${ARC_TTT_CAP:-8} TTT_EPOCHS=${ARC_TTT_EPOCHS:-2} TTT_LR=${ARC_TTT_LR:-1e-4}
TTT_BATCH=${ARC_TTT_BATCH:-2}
PER_CLASS=${ARC_PER_CLASS:-1}
SEED=${ARC_SEED:-0}
TIME=${ARC_TIME:-0} MARGIN=${ARC_MARGIN:-60}

[ -x "$BIN" ] || { echo "arc-experiment: no $BIN (make $BIN)" >&2; exit 1; }
[ -d "$ARC_DATA/training" ] && [ -d "$ARC_DATA/evaluation" ] ||
	{ echo "arc-experiment: no ARC data in $ARC_DATA (set ARC_DATA)" >&2; exit 1; }
mkdir -p "$WORK"
export OMP_WAIT_POLICY=passive
T0=$(date +%s)

# The settings that make the results: a run continues only with the same.
cfg="base=$BASE hidden=$HIDDEN layers=$LAYERS heads=$HEADS adapter=$ADAPTER"
cfg="$cfg train_tasks=$TRAIN_TASKS steps=$STEPS batch=$BATCH lr=${ARC_LR:-} cap=$CAP"
cfg="$cfg augment=$AUGMENT max_len=$MAX_LEN n=$N ttt_cap=$TTT_CAP ttt_epochs=$TTT_EPOCHS"
cfg="$cfg ttt_lr=$TTT_LR ttt_batch=$TTT_BATCH ttt_adapter=${ARC_TTT_ADAPTER:-}"
cfg="$cfg per_class=$PER_CLASS seed=$SEED"
if [ -f "$WORK/settings" ] && [ "$(cat "$WORK/settings")" != "$cfg" ]; then
	echo "arc-experiment: $WORK holds a run with other settings:" >&2
	echo "  $(cat "$WORK/settings")" >&2
	echo "use another ARC_WORK, or remove it" >&2
	exit 1
fi
echo "$cfg" >"$WORK/settings"

dev="--device=$DEVICE --max-len=$MAX_LEN --seed=$SEED"
[ -n "${ARC_DTYPE:-}" ] && dev="$dev --dtype=$ARC_DTYPE"
[ -n "${ARC_THREADS:-}" ] && dev="$dev --threads=$ARC_THREADS"

# LIM, the --time-limit of the next stage; exits 75 when the budget is spent.
limit() {
	LIM=--time-limit=0
	[ "$TIME" -gt 0 ] || return 0
	left=$((TIME - MARGIN - ($(date +%s) - T0)))
	if [ "$left" -le 0 ]; then
		echo "arc-experiment: out of time; call again to continue" >&2
		exit 75
	fi
	LIM=--time-limit=$left
}

# A stage's exit: 75 (stopped by its limit) ends this call with 75.
stage() {
	set +e
	"$@"
	rc=$?
	set -e
	if [ $rc -eq 75 ]; then
		echo "arc-experiment: stopped by the time limit; call again to continue" >&2
		exit 75
	fi
	[ $rc -eq 0 ] || { echo "arc-experiment: failed ($rc): $*" >&2; exit $rc; }
}

# The task subsets: the first ones in order of id.
subset() { # from to count
	[ -d "$2" ] && return
	rm -rf "$2.tmp"
	mkdir -p "$2.tmp"
	if [ "$3" -gt 0 ]; then
		ls "$1" | grep '\.json$' | sort | head -n "$3" | while read -r f; do cp "$1/$f" "$2.tmp/"; done
	else
		cp "$1"/*.json "$2.tmp/"
	fi
	mv "$2.tmp" "$2"
}
subset "$ARC_DATA/training" "$WORK/train" "$TRAIN_TASKS"
subset "$ARC_DATA/evaluation" "$WORK/eval" "$N"

# 1. pretraining
lr=${ARC_LR:+--lr=$ARC_LR}
model_opts="--hidden=$HIDDEN --layers=$LAYERS --heads=$HEADS"
[ "$BASE" = scratch ] || model_opts="--init=$BASE --adapter=$ADAPTER"
case $STEPS in
auto:*)
	if [ ! -f "$WORK/steps" ]; then
		# the seconds of steps 10 to 30 of a trial run, warm-up excluded
		rm -rf "$WORK/probe"
		stage "$BIN" pretrain "$WORK/train" --out="$WORK/probe" $dev $model_opts --steps=30 \
			--batch="$BATCH" --cap="$CAP" --augment="$AUGMENT" $lr -q \
			--metrics="$WORK/probe.jsonl"
		per=$(awk -F'"elapsed":' '/"step":10,/{split($2, a, /[,}]/); t0 = a[1]}
			/"step":30,/{split($2, a, /[,}]/); t1 = a[1]}
			END {if (t1 > t0) printf "%.6f", (t1 - t0) / 20}' "$WORK/probe.jsonl")
		[ -n "$per" ] || { echo "arc-experiment: the probe measured nothing" >&2; exit 1; }
		n=$(awk -v s="${STEPS#auto:}" -v p="$per" 'BEGIN {printf "%d", s / p}')
		[ "$n" -ge 30 ] || n=30
		echo "arc-experiment: $per s per step: $n steps in ${STEPS#auto:} s" >&2
		echo "$n" >"$WORK/steps.tmp" && mv "$WORK/steps.tmp" "$WORK/steps"
		rm -rf "$WORK/probe"
	fi
	STEPS=$(cat "$WORK/steps")
	;;
esac
limit
if [ -f "$WORK/model.done" ]; then
	: # pretrained: the model files alone are enough from here on
elif [ -f "$WORK/model/ttt-arc-state.safetensors" ]; then
	stage "$BIN" pretrain --resume --out="$WORK/model" $dev $LIM --metrics="$WORK/pretrain.jsonl"
else
	stage "$BIN" pretrain "$WORK/train" --out="$WORK/model" $dev $LIM $model_opts \
		--steps="$STEPS" --batch="$BATCH" --cap="$CAP" --augment="$AUGMENT" $lr \
		--metrics="$WORK/pretrain.jsonl"
fi

touch "$WORK/model.done"

# 2. without test-time training; 3. with it (adapters used at once, not kept)
pred="--per-class=$PER_CLASS --resume"
limit
stage "$BIN" predict "$WORK/eval" --model="$WORK/model" -o "$WORK/base.json" $pred $dev $LIM \
	--metrics="$WORK/predict.jsonl"
tad=${ARC_TTT_ADAPTER:+--adapter=$ARC_TTT_ADAPTER}
limit
stage "$BIN" ttt "$WORK/eval" --model="$WORK/model" --predict -o "$WORK/ttt.json" $pred $dev $LIM \
	--cap="$TTT_CAP" --epochs="$TTT_EPOCHS" --lr="$TTT_LR" --batch="$TTT_BATCH" $tad \
	--metrics="$WORK/ttt.jsonl"

# 4. the table
# the loss of the known test outputs per token, over each task's last line
nll() {
	awk '{
		t = $0; sub(/.*"task":"/, "", t); sub(/".*/, "", t)
		if ($0 !~ /"target_tokens"/) next
		v = $0; sub(/.*"target_nll":/, "", v); sub(/[,}].*/, "", v)
		n = $0; sub(/.*"target_tokens":/, "", n); sub(/[,}].*/, "", n)
		nll[t] = v; tok[t] = n
	} END {
		for (t in nll) { s += nll[t]; c += tok[t] }
		if (c) printf "%.4f", s / c; else printf "-"
	}' "$1"
}
# seconds per task: mean of a field over each task's last line
per_task() { # metrics field
	awk -v f="\"$2\":" '{
		t = $0; sub(/.*"task":"/, "", t); sub(/".*/, "", t)
		i = index($0, f); if (!i) next
		v = substr($0, i + length(f)); sub(/[,}].*/, "", v)
		s[t] = v
	} END {
		for (t in s) { sum += s[t]; n++ }
		if (n) printf "%.2f", sum / n; else printf "-"
	}' "$1"
}
row() { # name submission metrics
	j=$("$BIN" score --json -q "$WORK/$2" "$WORK/eval" | tail -n 1)
	num() { printf '%s' "$j" | sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p"; }
	tr=$(per_task "$WORK/$3" train_seconds)
	printf '| %s | %s | %s/%s | %s/%s | %s | %s | %s | %s |\n' "$1" "$N" "$(num tasks_solved)" \
		"$(num tasks)" "$(num tests_solved)" "$(num tests)" "$(num score)" "$(nll "$WORK/$3")" \
		"$tr" "$(per_task "$WORK/$3" seconds)"
}
loss=$(grep '"loss"' "$WORK/pretrain.jsonl" 2>/dev/null | tail -n 1 |
	sed -n 's/.*"loss":\([-0-9.e]*\).*/\1/p')
model=$BASE
[ "$BASE" = scratch ] && model="a new model, hidden $HIDDEN, $LAYERS layers"
{
	echo "ARC-AGI-1 evaluation, the first $N tasks; $model, pretrained $STEPS steps on" \
		"$TRAIN_TASKS training tasks (0: all), last loss ${loss:-?}; on $DEVICE"
	echo
	echo "| | tasks | tasks solved | test inputs solved | score (pass@2) | loss of the outputs |" \
		"TTT s/task | all s/task |"
	echo "|---|---|---|---|---|---|---|---|"
	row "no TTT" base.json predict.jsonl
	row "TTT (cap $TTT_CAP, $TTT_EPOCHS epochs, lr $TTT_LR)" ttt.json ttt.jsonl
	echo
	echo "The loss is that of the known test outputs given their prompts (nats per token," \
		"the output, its end marker and eos), over every test input. Seconds per task:" \
		"test-time training, and in all (training and prediction), means over the tasks."

} >"$WORK/table.md"
cat "$WORK/table.md"
