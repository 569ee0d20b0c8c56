#!/bin/sh
# lla-train.sh: the lla-train program from the shell: usage errors, a missing
# data file, a tiny run from scratch on text (the first 20 KB of
# tinyshakespeare, or a text made here), its checkpoint and metrics, the
# same losses run to run (OpenBLAS and OpenMP deterministic at a fixed thread
# count), and resuming bit for bit: after a planned stop (--decay-steps), a
# SIGINT and a SIGKILL, the losses equal those of an uninterrupted run.
# --device cuda: in a CPU-only build or without a GPU, one line and exit 1;
# with a GPU, a short run (scripts/gpu-train-check.sh compares it with the
# CPU's losses).
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
TRAIN=${LMK_BIN:-build/bin}/lla-train
[ -x "$TRAIN" ] || { echo "lla-train.sh: no program $TRAIN" >&2; exit 77; }
case $TRAIN in /*) ;; *) TRAIN=$PWD/$TRAIN ;; esac
SHAKESPEARE=${LMK_DATA:-../shared/data}/text/tinyshakespeare.txt
case $SHAKESPEARE in /*) ;; *) SHAKESPEARE=$PWD/$SHAKESPEARE ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/lla-train-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=${LMK_ROOT:-$PWD}/tests/tap.sh   # the harness: run, check, skip, ...
cd "$T" || exit 1
# Spinning OpenMP threads starve OpenBLAS's on a shared 2-core machine.
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY

PROG=lla-train
. "$TAP"
# "step loss" of each training line of a metrics file, each step once (a
# step done twice with the same loss, as after a SIGKILL, counts once)
losses() { sed -n 's/^{"step":\([0-9]*\),"loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }
vals() { sed -n 's/^{"step":\([0-9]*\),.*"val_loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }
# same_run A B: every step's loss and val loss in B equal those in A
same_run() {
	losses "$1" >l1; losses "$2" >l2; vals "$1" >v1; vals "$2" >v2
	[ -s l1 ] && cmp -s l1 l2 && cmp -s v1 v2
}
# wait_lines FILE N PID: until FILE has N lines or PID is gone
wait_lines() {
	while kill -0 "$3" 2>/dev/null; do
		[ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
		sleep 0.05
	done
	return 1
}
json_ok() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import json, sys
for l in open(sys.argv[1]): json.loads(l)' "$1"
	else
		[ "$(grep -c '^{"step":[0-9]*,.*}$' "$1")" -eq "$(wc -l <"$1")" ]
	fi
}

if [ -r "$SHAKESPEARE" ]; then
	head -c 20000 "$SHAKESPEARE" >text.txt
else
	awk 'BEGIN { for (i = 0; i < 600; i++) printf "line %d: the quick brown fox jumps over the lazy dog\n", i * 7 % 101 }' >text.txt
fi
TINY="--data text.txt --hidden 32 --layers 2 --heads 2 --batch 4 --seq 32 --warmup 5 --eval-every 10 --eval-batches 4 --threads 2 --seed 7"

# --- usage ---
run "$TRAIN" -h
check "-h: usage on stdout, exit 0" 'rc_is 0 && out_has "usage: lla-train" && out_has "--resume" && err_empty'
run "$TRAIN" --version
check "--version" 'rc_is 0 && out_has "lla-train (lmk)"'
run "$TRAIN" --data text.txt --steps x
check "bad number: exit 2" 'rc_is 2 && err_has "option '"'"'--steps'"'"' needs a whole number"'
run "$TRAIN" --data text.txt --bogus
check "unknown option: exit 2" 'rc_is 2 && err_has "unknown option '"'"'--bogus'"'"'"'
run "$TRAIN" --data text.txt --steps
check "missing argument: exit 2" 'rc_is 2 && err_has "needs an argument"'
run "$TRAIN" --data text.txt --mixer mamba
check "--mixer that is not one: exit 2" 'rc_is 2 && err_has "'"'"'mamba'"'"' is not a mixer"'
run "$TRAIN" --data text.txt --mixer gdn:heads=2,depth=3
check "--mixer with an unknown setting: exit 2" 'rc_is 2 && err_has "no setting '"'"'depth'"'"'"'
run "$TRAIN" --task mqar:kv=4 --data text.txt
check "--task and --data: exit 2" 'rc_is 2 && err_has "cannot be used together"'
run "$TRAIN" --task sorting
check "--task that is not one: exit 2" 'rc_is 2 && err_has "mqar, flipflop, s5 or a5"'
run "$TRAIN" --data text.txt --schedule sawtooth
check "bad schedule: exit 2" 'rc_is 2 && err_has "cosine, linear or constant"'
run "$TRAIN" --steps 3
check "no --data: exit 2" 'rc_is 2 && err_has "no training data"'
run "$TRAIN" --resume
check "--resume without --out: exit 2" 'rc_is 2 && err_has "--resume needs --out"'
run "$TRAIN" --data text.txt --heads 3 --hidden 32
check "hidden not a multiple of heads: exit 2" 'rc_is 2 && err_has "not a multiple of --heads"'
run "$TRAIN" --data no-such-file.txt --steps 3
check "missing data file: exit 1, one line naming it" 'rc_is 1 && err_one_line "no-such-file.txt"'
printf 'too short' >short.txt
run "$TRAIN" --data short.txt --steps 3 --seq 32
check "data shorter than a window: exit 1, one line" 'rc_is 1 && err_one_line "short.txt: 9 training tokens"'
run "$TRAIN" $TINY --vocab 100 --steps 1
check "--vocab below the data's: exit 1" 'rc_is 1 && err_one_line "beyond the model'"'"'s vocabulary of 100"'
run "$TRAIN" --data text.txt --device gpu
check "--device other than cpu or cuda: exit 2" 'rc_is 2 && err_has "option '"'"'--device'"'"' needs cpu, cuda or cuda:N, not '"'"'gpu'"'"'"'
run "$TRAIN" --data text.txt --dtype f16
check "--dtype other than f32 or bf16: exit 2" 'rc_is 2 && err_has "option '"'"'--dtype'"'"' needs f32 or bf16"'
run "$TRAIN" --data text.txt --dtype bf16
check "--dtype bf16 on the cpu: exit 2" 'rc_is 2 && err_has "--dtype bf16 needs --device cuda"'
run "$TRAIN" $TINY --device cuda --steps 2 --eval-every 0 --quiet --metrics g.jsonl
if [ "$rc" -eq 0 ]; then
	check "--device cuda with a GPU: 2 steps" '[ "$(losses g.jsonl | wc -l)" -eq 2 ]'
else
	check "--device cuda without CUDA or a GPU: exit 1, one line" 'rc_is 1 && { err_one_line "cuda: this build has no CUDA support" || err_one_line "cuda: no CUDA device on this machine"; }'
fi

run "$TRAIN" $TINY --steps 3 --eval-every 0 --quiet --metrics d1.jsonl
run "$TRAIN" $TINY --steps 3 --eval-every 0 --quiet --metrics d2.jsonl --nondeterministic
check "--nondeterministic on the cpu: the same losses (the cpu is deterministic)" 'rc_is 0 && [ "$(losses d1.jsonl)" = "$(losses d2.jsonl)" ] && [ "$(losses d2.jsonl | wc -l)" -eq 3 ]'

# --- a tiny run from scratch ---
run "$TRAIN" $TINY --steps 40 --out a --metrics a.jsonl --sample 16
check "tiny run: exit 0" 'rc_is 0'
check "tiny run: summary and evaluation lines on stderr" 'err_has "lla-train: done: step 40" && err_has "step 20/40: train loss" && err_has "val loss"'
check "tiny run: samples on stderr" 'err_has "sample at step 40:"'
check "tiny run: checkpoint and training state written" '[ -s a/config.json ] && [ -s a/model.safetensors ] && [ -s a/training_state.safetensors ] && ! ls a/.*tmp* >/dev/null 2>&1'
check "tiny run: config has the shape asked for" 'grep -q "\"hidden_size\": 32" a/config.json && grep -q "\"vocab_size\": 259" a/config.json'
check "tiny run: the state says cpu, f32" 'head -c 4000 a/training_state.safetensors | grep -a -q "\"device\": *\"cpu\"" && head -c 4000 a/training_state.safetensors | grep -a -q "\"dtype\": *\"f32\""'
check "metrics: 42 lines of JSON (step 0, the memory line, 40 steps)" '[ "$(wc -l <a.jsonl)" -eq 42 ] && json_ok a.jsonl && grep -q "\"memory\":\"adamw\"" a.jsonl'
check "metrics: loss, val_loss, lr, grad_norm, tokens_per_s, elapsed" 'grep -q "^{\"step\":40,\"loss\":[0-9.e-]*,\"val_loss\":[0-9.e-]*,\"lr\":[0-9.e-]*,\"grad_norm\":[0-9.e-]*,\"tokens_per_s\":[0-9.e+-]*,\"elapsed\":[0-9.e-]*}$" a.jsonl'
first=$(vals a.jsonl | head -1 | cut -d" " -f2) last=$(vals a.jsonl | tail -1 | cut -d" " -f2)
check "the validation loss falls (ln 259 = 5.56 at first)" 'awk -v a="$first" -v b="$last" "BEGIN { exit !(a > 5.4 && a < 5.7 && b < a - 0.3) }"'
run "$TRAIN" $TINY --steps 40 --out a
check "a new run into a directory with a run: exit 1" 'rc_is 1 && err_one_line "already holds a training run"'
run "$TRAIN" --resume --out a --steps 40
check "resume at --steps: nothing to do, exit 0" 'rc_is 0 && err_has "already at step 40"'
run "$TRAIN" $TINY --steps 40 --quiet --metrics q.jsonl
check "--quiet: nothing on stderr, same losses run to run" 'rc_is 0 && err_empty && same_run a.jsonl q.jsonl'

# --- resume: the uninterrupted reference, then three ways of stopping ---
run "$TRAIN" $TINY --steps 120 --quiet --out ref --metrics ref.jsonl
check "reference run of 120 steps" 'rc_is 0 && [ "$(losses ref.jsonl | wc -l)" -eq 120 ]'

run "$TRAIN" $TINY --steps 60 --decay-steps 120 --quiet --out p --metrics p.jsonl
check "planned stop at 60 of 120: exit 0" 'rc_is 0 && [ "$(losses p.jsonl | wc -l)" -eq 60 ]'
run "$TRAIN" --resume --out p --steps 120 --quiet --metrics p.jsonl
check "resumed to 120: every loss equals the reference's" 'rc_is 0 && same_run ref.jsonl p.jsonl'
run "$TRAIN" --resume --out p --steps 130 --batch 8
check "resume with another --batch: exit 1 naming it" 'rc_is 1 && err_one_line "saved with batch 4, this run has 8"'
run "$TRAIN" --resume --out p --steps 130 --hidden 64
check "resume with a model option: exit 2" 'rc_is 2 && err_has "cannot be used with --resume"'

"$TRAIN" $TINY --steps 120 --quiet --out s --metrics s.jsonl --save-every 1000 >out 2>err &
pid=$!
if wait_lines s.jsonl 30 "$pid"; then
	kill -INT "$pid"
	wait "$pid"
	rc=$?
	check "SIGINT: saved and stopped, exit 130" 'rc_is 130 && err_has "stopped by signal 2" && err_has "saved in s" && [ -s s/training_state.safetensors ]'
	run "$TRAIN" --resume --out s --quiet --metrics s.jsonl
	check "resumed after SIGINT: every loss equals the reference's" 'rc_is 0 && same_run ref.jsonl s.jsonl'
else
	wait "$pid"
	skip "SIGINT" "the run ended before the signal"
fi

"$TRAIN" $TINY --steps 120 --quiet --out k --metrics k.jsonl --save-every 10 >out 2>err &
pid=$!
if wait_lines k.jsonl 35 "$pid"; then
	kill -KILL "$pid"
	{ wait "$pid"; } 2>/dev/null
	rc=$?
	check "SIGKILL: killed, a training state in place" 'rc_is 137 && [ -s k/training_state.safetensors ]'
	run "$TRAIN" --resume --out k --quiet --metrics k.jsonl
	check "resumed after SIGKILL: every loss equals the reference's" 'rc_is 0 && same_run ref.jsonl k.jsonl'
else
	wait "$pid"
	skip "SIGKILL" "the run ended before the signal"
fi


# --- adapters and GaLore ---
RUN="--data text.txt --batch 4 --seq 32 --warmup 5 --eval-every 10 --eval-batches 4 --threads 2 --seed 7"
run "$TRAIN" $TINY --steps 4 --out base --quiet
check "a base model for the adapters" 'rc_is 0 && [ -f base/model.safetensors ]'
run "$TRAIN" $RUN --steps 3 --adapter lora:r=2
check "--adapter without --init: exit 2" 'rc_is 2 && err_has "--adapter needs --init"'
run "$TRAIN" $RUN --init base --steps 3 --adapter lora:r=2,rank=3
check "--adapter with an unknown setting: exit 2" 'rc_is 2 && err_has "unknown setting '"'"'rank'"'"'"'
run "$TRAIN" $RUN --init base --steps 3 --adapter lora:r=2 --optim galore:r=4
check "--adapter with --optim galore: exit 2" 'rc_is 2 && err_has "GaLore (--optim) is for the whole model"'
run "$TRAIN" $RUN --init base --steps 3 --adapter onesided:r=2,proj=svd
check "one-sided svd adapter: exit 2, points to galore" 'rc_is 2 && err_has "--optim galore:proj=svd"'
run "$TRAIN" $RUN --steps 3 --optim galore:r=4,every=x
check "bad --optim: exit 2" 'rc_is 2 && err_has "every=x"'
run "$TRAIN" $RUN --init base --steps 12 --adapter lora:r=4,alpha=8,targets=q,k,v,o,gate,up,down --out ad --metrics ad.jsonl
check "LoRA adapter: PEFT files, memory line" 'rc_is 0 && [ -f ad/adapter_model.safetensors ] && grep -q "\"peft_type\": \"LORA\"" ad/adapter_config.json && err_has "memory (lora:r=4" && grep -q "\"optimizer_bytes\"" ad.jsonl && [ ! -f ad/model.safetensors ]'
run "$TRAIN" $RUN --init base --steps 10 --decay-steps 12 --adapter lora:r=4,alpha=8,targets=q,k,v,o,gate,up,down --out ad2 --quiet --metrics ad2.jsonl
run "$TRAIN" --resume --out ad2 --steps 12 --quiet --metrics ad2.jsonl
check "LoRA adapter resumed: the same losses and adapter as one run" 'rc_is 0 && same_run ad.jsonl ad2.jsonl && cmp -s ad/adapter_model.safetensors ad2/adapter_model.safetensors'
run "$TRAIN" --resume --out ad2 --steps 14 --adapter lora:r=8
check "--adapter with --resume: exit 2" 'rc_is 2 && err_has "cannot be used with --resume"'
run "$TRAIN" $RUN --init base --steps 6 --adapter onesided:r=4,proj=rademacher,targets=all --out os --quiet
check "one-sided adapter: PEFT files" 'rc_is 0 && [ -f os/adapter_model.safetensors ]'
run "$TRAIN" $RUN --init base --steps 12 --optim galore:r=4,every=5 --out g --metrics g.jsonl
check "GaLore: trains, memory line smaller than AdamW's two copies" 'rc_is 0 && err_has "memory (galore:r=4,every=5,proj=svd" && [ -f g/model.safetensors ]'
run "$TRAIN" $RUN --init base --steps 10 --decay-steps 12 --optim galore:r=4,every=5 --out g2 --quiet --metrics g2.jsonl
run "$TRAIN" --resume --out g2 --steps 12 --quiet --metrics g2.jsonl
check "GaLore resumed across a refresh: the same losses and weights" 'rc_is 0 && same_run g.jsonl g2.jsonl && cmp -s g/model.safetensors g2/model.safetensors'
run "$TRAIN" --resume --out g2 --steps 14 --optim adamw
check "another optimizer on --resume: exit 1" 'rc_is 1 && err_has "saved with optimizer galore"'

# --- mixers and synthetic tasks ---
for mx in linear ll-mamba2 ll-gdn path-fox; do
	run "$TRAIN" --task mqar:kv=2,vocab=32,val=8 --seq 32 --hidden 32 --layers 1 --batch 4 --steps 3 --eval-every 3 --threads 2 --seed 7 --mixer $mx --out m-$mx --metrics m-$mx.jsonl --quiet
	check "--mixer $mx on --task mqar: trains, accuracy in the metrics, config says lmk_mixer" 'rc_is 0 && grep -q "\"val_acc\"" m-'$mx'.jsonl && grep -q "\"model_type\": \"lmk_mixer\"" m-'$mx'/config.json'
done
run "$TRAIN" --task s5 --seq 16 --hidden 32 --layers 1 --batch 2 --steps 2 --threads 2 --mixer linear:decay=1 --out m-decay --quiet
check "--mixer linear:decay=1: written to config.json" 'rc_is 0 && grep -q "\"decay\": 1" m-decay/config.json'
for mx in ll-mamba2 path-fox; do
	run "$TRAIN" $TINY --steps 10 --mixer $mx --sample 8 --quiet
	check "--sample with the $mx mixer: decoded with the layers' states" 'rc_is 0 && err_has "sample at step 10:"'
done
run "$TRAIN" --task s5:swaps=1,val=8 --seq 16 --hidden 32 --layers 1 --batch 2 --steps 2 --eval-every 2 --threads 2 --metrics sw.jsonl --quiet
check "--task s5:swaps=1: trains, val_prefix in the metrics" 'rc_is 0 && grep -q "\"val_prefix\"" sw.jsonl'
run "$TRAIN" --task a5:swaps=1 --seq 16 --steps 1
check "--task a5:swaps=1: usage error, swaps are S5's" 'rc_is 2 && err_has "swaps are odd permutations: S5 only"'
run "$TRAIN" --task s5:swaps=2 --seq 16 --steps 1
check "--task s5:swaps=2: usage error" 'rc_is 2 && err_has "option '\''--task swaps'\'' must be between 0 and 1"'
run "$TRAIN" --resume --out m-ll-gdn --steps 5 --quiet --metrics m-ll-gdn.jsonl
check "a mixer's run resumes" 'rc_is 0 && grep -q "^{\"step\":5," m-ll-gdn.jsonl'

# --- token frames ---
if command -v python3 >/dev/null 2>&1; then
	python3 - <<'PY'
import json, struct
data = open("text.txt", "rb").read()
def frame(ids, meta):
    h = {"__metadata__": meta, "tokens": {"dtype": "U16", "shape": [len(ids)], "data_offsets": [0, 2 * len(ids)]}}
    j = json.dumps(h).encode()
    j += b" " * (-len(j) % 8)
    return struct.pack("<Q", len(j)) + j + struct.pack("<%dH" % len(ids), *ids)
half = len(data) // 2
with open("tok.bin", "wb") as f:
    f.write(frame(list(data[:half]), {"kind": "tokens", "vocab_size": "300"}))
    f.write(frame(list(data[half:]), {"kind": "tokens", "vocab_size": "300"}))
with open("img.safetensors", "wb") as f:
    f.write(frame([1, 2, 3], {"kind": "image"}))
PY
	run "$TRAIN" $TINY --data tok.bin --steps 10 --out f --quiet --metrics f.jsonl
	check "token frames (U16, two frames): trains, vocabulary from vocab_size" 'rc_is 0 && grep -q "\"vocab_size\": 300" f/config.json && [ "$(losses f.jsonl | wc -l)" -eq 10 ]'
	run "$TRAIN" $TINY --data img.safetensors --steps 3
	check "a frame of another kind: exit 1, one line" 'rc_is 1 && err_one_line "img.safetensors: frame 0: kind '"'"'image'"'"', expected '"'"'tokens'"'"'"'
else
	skip "token frames" "no python3 to write them"
fi

[ $failed -eq 0 ] || exit 1
exit 0
