#!/bin/sh
# lla-train-dist.sh: the parts of lla-train's data parallel that a machine
# without a GPU can check: option errors (--gpus, --rendezvous, --device
# with them), --gpus and --rendezvous in a build without CUDA or on a
# machine without enough GPUs (one clear line, exit 1), errors in the
# environment that launchers set (WORLD_SIZE without RANK or without a
# rendezvous, RANK out of range), a Slurm job's single task training as a
# process on its own, and the state file's world_size: saved, and checked
# on --resume as windows per micro-batch (ranks times batch).
# scripts/gpu-dp-check.sh checks the training itself on a GPU.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
TRAIN=${LMK_BIN:-build/bin}/lla-train
[ -x "$TRAIN" ] || { echo "lla-train-dist.sh: no program $TRAIN" >&2; exit 77; }
case $TRAIN in /*) ;; *) TRAIN=$PWD/$TRAIN ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/lla-train-dist-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=${LMK_ROOT:-$PWD}/tests/tap.sh   # the harness: run, check, skip, ...
cd "$T" || exit 1
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
# whatever launched the tests must not make these runs ranks (and a
# variable is given to one run with env: before a function, a POSIX shell
# may keep it)
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT SLURM_PROCID SLURM_NTASKS \
	SLURM_LOCALID TORCHELASTIC_USE_AGENT_STORE LMK_RENDEZVOUS_TIMEOUT

PROG=lla-train
. "$TAP"
losses() { sed -n 's/^{"step":\([0-9]*\),"loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }

awk 'BEGIN { for (i = 0; i < 600; i++) printf "line %d: the quick brown fox jumps over the lazy dog\n", i * 7 % 101 }' >text.txt
TINY="--data text.txt --hidden 32 --layers 2 --heads 2 --batch 4 --seq 32 --warmup 2 --eval-every 0 --eval-batches 2 --threads 2 --seed 7"

# What this build and machine have: no CUDA, CUDA without a GPU, or GPUs.
run "$TRAIN" $TINY --device cuda --steps 1 --quiet
if err_has "no CUDA support"; then
	kind=cpu
elif err_has "no CUDA device"; then
	kind=nogpu
else
	kind=gpu
fi
echo "# build and machine: $kind"

# --- options ---
run "$TRAIN" -h
check "-h: --gpus and --rendezvous" 'rc_is 0 && out_has "--gpus=N" && out_has "--rendezvous=ADDR"'
run "$TRAIN" $TINY --gpus 0
check "--gpus 0: exit 2" 'rc_is 2 && err_has "option '"'"'--gpus'"'"' must be between 1 and 1024, not 0"'
run "$TRAIN" $TINY --gpus two
check "--gpus two: exit 2" 'rc_is 2 && err_has "option '"'"'--gpus'"'"'"'
run "$TRAIN" $TINY --gpus
check "--gpus without a number: exit 2" 'rc_is 2 && err_has "needs an argument"'
run "$TRAIN" $TINY --rendezvous nowhere
check "--rendezvous of no kind: exit 2" 'rc_is 2 && err_has "option '"'"'--rendezvous'"'"' needs file:PATH or tcp:HOST:PORT, not '"'"'nowhere'"'"'"'
run "$TRAIN" $TINY --rendezvous tcp:host:99999
check "--rendezvous with a bad port: exit 2" 'rc_is 2 && err_has "needs file:PATH or tcp:HOST:PORT"'
run "$TRAIN" $TINY --gpus 2 --rendezvous file:r
check "--gpus with --rendezvous: exit 2" 'rc_is 2 && err_has "--gpus starts its ranks and their rendezvous itself"'
run "$TRAIN" $TINY --gpus 2 --device cpu
check "--gpus with --device cpu: exit 2" 'rc_is 2 && err_has "--device cpu cannot be used with --gpus"'
run "$TRAIN" $TINY --gpus=2 --device=cuda:1
check "--gpus with --device cuda:N: exit 2" 'rc_is 2 && err_has "--device cuda:1 cannot be used with --gpus"'
run "$TRAIN" $TINY --rendezvous file:r --device cpu
check "--rendezvous with --device cpu: exit 2" 'rc_is 2 && err_has "--device cpu cannot be used with --rendezvous"'

# --- --gpus and --rendezvous where they cannot run ---
run "$TRAIN" $TINY --gpus 2 --steps 1
case $kind in
cpu) check "--gpus 2 without CUDA: exit 1, one line" \
	'rc_is 1 && err_one_line "--gpus: this build has no CUDA support (data-parallel training needs CUDA and NCCL; build with make CUDA=1)"' ;;
nogpu) check "--gpus 2 without a GPU: exit 1, one line" 'rc_is 1 && err_one_line "--gpus 2: this machine has 0 CUDA devices"' ;;
*) if [ "$rc" -eq 1 ] && err_has "this machine has only 1 CUDA device"; then
	check "--gpus 2 on one GPU: exit 1, one line" 'err_one_line "--gpus 2: this machine has only 1 CUDA device"'
   else
	check "--gpus 2 on two GPUs or more: exit 0" 'rc_is 0'
   fi ;;
esac
run "$TRAIN" $TINY --rendezvous file:r --steps 1
if [ $kind = cpu ]; then
	check "--rendezvous without CUDA: exit 1, one line" 'rc_is 1 && err_one_line "--rendezvous: this build has no CUDA support"'
else
	check "--rendezvous without a rank in the environment: exit 1, one line" \
		'rc_is 1 && err_one_line "--rendezvous: no rank in the environment (set RANK and WORLD_SIZE"'
fi
run env RANK=0 WORLD_SIZE=1 "$TRAIN" $TINY --rendezvous "file:$T/r" --steps 1
case $kind in
cpu) check "RANK=0 WORLD_SIZE=1 --rendezvous without CUDA: exit 1, one line" 'rc_is 1 && err_one_line "this build has no CUDA support"' ;;
nogpu) check "RANK=0 WORLD_SIZE=1 --rendezvous without a GPU: exit 1, one line" 'rc_is 1 && err_one_line "no CUDA device"' ;;
*) check "RANK=0 WORLD_SIZE=1 --rendezvous on a GPU: exit 0" 'rc_is 0' ;;
esac

# --- the environment ---
run env WORLD_SIZE=2 "$TRAIN" $TINY --steps 1
check "WORLD_SIZE without RANK: exit 1, one line" 'rc_is 1 && err_one_line "environment: WORLD_SIZE is set but RANK is not"'
run env RANK=0 WORLD_SIZE=2 "$TRAIN" $TINY --steps 1
check "WORLD_SIZE without a rendezvous: exit 1, one line" 'rc_is 1 && err_one_line "there is no rendezvous (set MASTER_ADDR and MASTER_PORT, or give one)"'
run env RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 "$TRAIN" $TINY --steps 1
check "RANK beyond WORLD_SIZE: exit 1, one line" 'rc_is 1 && err_one_line "environment: RANK is '"'"'2'"'"', expected a whole number from 0 to 1"'
run env RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "$TRAIN" $TINY --steps 1
check "MASTER_ADDR without MASTER_PORT: exit 1, one line" 'rc_is 1 && err_one_line "MASTER_ADDR is set but MASTER_PORT is not"'
if [ $kind != cpu ]; then
	run env RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 "$TRAIN" $TINY --steps 1 --device cpu
	check "a rank from the environment with --device cpu: exit 1, one line" 'rc_is 1 && err_one_line "--device cpu cannot be used"'
else
	run env RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 "$TRAIN" $TINY --steps 1
	check "a rank from the environment without CUDA: exit 1, one line" 'rc_is 1 && err_one_line "rank 0 of 1, but this build has no CUDA support"'
fi
run env SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 "$TRAIN" $TINY --steps 2 --quiet --metrics s.jsonl
check "a Slurm task without a rendezvous trains on its own" 'rc_is 0 && [ "$(losses s.jsonl | wc -l)" -eq 2 ]'

# --- the state's world_size ---
run "$TRAIN" $TINY --steps 2 --decay-steps 4 --out a --quiet --metrics a.jsonl
check "a run of one process: exit 0" 'rc_is 0'
if command -v python3 >/dev/null 2>&1; then
	# meta KEY [VALUE]: prints KEY of the state's metadata, or sets it
	meta() {
		python3 - "$@" <<'PY'
import json, struct, sys
p = "a/training_state.safetensors"
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
if len(sys.argv) == 2:
    print(h["__metadata__"].get(sys.argv[1], "(none)"))
    sys.exit(0)
body = b[8 + n:]
h["__metadata__"][sys.argv[1]] = sys.argv[2]
j = json.dumps(h, separators=(",", ":")).encode()
j += b" " * (-len(j) % 8)
open(p, "wb").write(struct.pack("<Q", len(j)) + j + body)
PY
	}
	ws=$(meta world_size)
	check "the state says world_size 1" '[ "$ws" = 1 ]'
	meta world_size 2
	run "$TRAIN" --resume --out a --steps 3 --quiet
	check "resume of 2 ranks of batch 4 by one process of batch 4: exit 1, one line" \
		'rc_is 1 && err_one_line "saved with 2 ranks of batch 4 (8 windows a micro-batch), this run has 1 of batch 4 (4)"'
	run "$TRAIN" --resume --out a --steps 3 --batch 8 --quiet --metrics a.jsonl
	check "resume of 2 ranks of batch 4 by one process of batch 8: exit 0" 'rc_is 0 && [ "$(losses a.jsonl | wc -l)" -eq 3 ]'
	ws=$(meta world_size)
	check "the state says world_size 1 again" '[ "$ws" = 1 ]'
else
	skip "the state's world_size" "no python3"
fi

[ $failed -eq 0 ] || exit 1
exit 0
