#!/bin/sh
# gpu-dp-check.sh: lla-train's data parallel (NCCL) on the GPU machine.
# With one GPU, data parallel with ONE rank must give the losses of a run
# without it BIT FOR BIT, not merely to a tolerance: the rank draws the
# same windows (the group's draw of 1 x B), replays the same backward
# kernels in the same order (the all-reduce hooks only queue NCCL work on a
# second stream between them), NCCL's average over one rank leaves every
# gradient as it is (x * 1, or no copy at all), the mean loss over one rank
# is the loss (x / 1), and clipping and AdamW then see the same bits. So
# the metrics (loss, val loss, grad norm) must be the same text and the
# checkpoints (model.safetensors, the fp32 master weights) the same bytes.
# The same tiny model as gpu-train-check.sh (hidden 128, 2 layers, 2 heads,
# one kv head), 20 steps of 2 micro-batches, evaluations every 10:
#   cuda bf16 without data parallel, the reference;
#   --gpus 1, with 4 KiB gradient buckets (LMK_BUCKET_BYTES: one bucket per
#     tensor, so many all-reduces launched while the backward runs);
#   RANK=0 WORLD_SIZE=1 --rendezvous file:PATH, default buckets (one);
#   RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=P (tcp), 64 KiB;
#   cuda f32 without, and --gpus 1 in f32;
#   --gpus 1 for 10 steps, then --gpus 1 --resume to 20: as --gpus 1 in one
#     go; and a --gpus 1 state resumed without data parallel: the same;
#   --gpus 1 prints its step-0 line once, writes the metrics and the
#     checkpoint (rank 0), and leaves no rendezvous directory behind.
# With 2 GPUs or more (else SKIP rows): --gpus 2 --batch 2 against one
# process of --batch 4, in f32 (every loss within 1e-4, relative) and bf16
# (1e-2, and the loss falls), as N ranks of batch B follow one of N*B; and
# the same two ranks as two processes of an outside launcher (RANK=0 and 1,
# WORLD_SIZE=2, MASTER_ADDR/MASTER_PORT): --gpus 2's metrics bit for bit.
# PERF=1 (the default) adds a 110M-parameter Llama (bench/train_gpu.sh's:
# C 768, L 12, V 32768, T 1024, B 32) for 20 steps with and without
# --gpus 1: median tokens/s after step 5 of each (INFO, not judged) and
# the losses bit for bit (PASS/FAIL).
# It builds nothing: build here with `make BUILD=build-dp CUDA=1`, run
# `BUILD=build-dp scripts/gpu-train-check.sh --bundle`, and carry
# $BUILD/bin/lla-train and $BUILD/tests/lib.
#
#   BUILD=build-dp scripts/gpu-dp-check.sh
#
# Every command runs with NCCL_NVLS_ENABLE=0 (NVLink multicast stays off on
# these machines), TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and
# NVSHMEM_DISABLE_NVLS=1. Environment: BUILD (default build-dp), STEPS
# (default 20), THREADS (default 4), PERF (1; 0 skips the 110M rows), OUT
# (if set, the table and the summary go there, else to $BUILD/gpu-dp-check),
# KEEP_RUNS=1 (each run's metrics and stderr too, in runs/ beside them).
# Exit 0 PASS, 1 FAIL, 2 no build or no device.
set -u
BUILD=${BUILD:-build-dp}
STEPS=${STEPS:-20}
THREADS=${THREADS:-4}
PERF=${PERF:-1}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
TRAIN=$BUILD/bin/lla-train

[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$TRAIN" ] || { echo "gpu-dp-check: no $TRAIN: build with make BUILD=$BUILD CUDA=1 and carry it" >&2; exit 2; }
if ldd "$TRAIN" 2>/dev/null | grep -q "not found"; then
	echo "gpu-dp-check: $TRAIN misses shared libraries (scripts/gpu-train-check.sh --bundle where it was built):" >&2
	ldd "$TRAIN" | grep "not found" >&2
	exit 2
fi
LOGDIR=${OUT:-$BUILD/gpu-dp-check}
mkdir -p "$LOGDIR" || exit 2
case $LOGDIR in /*) ;; *) LOGDIR=$PWD/$LOGDIR ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/gpu-dp-check.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
cd "$T" || exit 2
# a private TMPDIR: --gpus makes its rendezvous directory there
mkdir tmp && export TMPDIR="$T/tmp"
# never NVLink multicast; fp32 means fp32
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NVIDIA_TF32_OVERRIDE=0 OMP_WAIT_POLICY=passive
# this script decides which runs are ranks
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT SLURM_PROCID SLURM_NTASKS \
	SLURM_LOCALID TORCHELASTIC_USE_AGENT_STORE LMK_BUCKET_BYTES LMK_RENDEZVOUS_TIMEOUT

say() { echo "gpu-dp-check: $*"; }
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
	NGPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
fi
say "$NGPU GPU(s)"

awk 'BEGIN { for (i = 0; i < 3000; i++)
	printf "line %d: the quick brown fox jumps over the lazy dog, %d times\n", i * 7 % 101, i % 13 }' >text.txt
HALF=$((STEPS / 2))
MODEL="--data text.txt --hidden 128 --layers 2 --heads 2 --kv-heads 1 --seq 64 --accum 2"
OPTS="$MODEL --warmup 5 --eval-every $HALF --eval-batches 2 --threads $THREADS --seed 11 --quiet"

fail=0
# train NAME [VAR=VALUE...] -- ARGS...: one run, in the environment given
# (and NCCL_NVLS_ENABLE=0 whatever happens), its metrics in NAME.jsonl, its
# stderr in NAME.err
train() {
	name=$1
	shift
	vars=""
	while [ "$1" != -- ]; do
		vars="$vars $1"
		shift
	done
	shift
	# shellcheck disable=SC2086
	env NCCL_NVLS_ENABLE=0 $vars "$TRAIN" "$@" --metrics "$name.jsonl" 2>"$name.err"
	rc=$?
	if [ "${KEEP_RUNS:-0}" = 1 ]; then
		mkdir -p "$LOGDIR/runs" && cp "$name.err" "$name.jsonl" "$LOGDIR/runs/" 2>/dev/null
	fi
	if [ $rc -ne 0 ]; then
		say "$name: lla-train exited $rc:"
		sed 's/^/    /' "$name.err" | tail -n 20
		if grep -q "no CUDA device\|no CUDA support" "$name.err"; then
			exit 2
		fi
		fail=1
	fi
	return $rc
}
# "step loss grad_norm" a line, each step once; "step val_loss"
losses() { sed -n 's/^{"step":\([0-9]*\),"loss":\([^,}]*\).*"grad_norm":\([^,}]*\).*/\1 \2 \3/p' "$1" | sort -n -u; }
vals() { sed -n 's/^{"step":\([0-9]*\),.*"val_loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }
# result NAME PASS|FAIL|SKIP|INFO DETAIL
result() {
	printf '%-58s %-4s %s\n' "$1" "$2" "$3" >>"$LOGDIR/summary.txt"
	case $2 in PASS | SKIP | INFO) ;; *) fail=1 ;; esac
}
# same A B: A's and B's metrics the same text (loss, grad norm, val loss)
same() {
	losses "$1.jsonl" >s1; losses "$2.jsonl" >s2; vals "$1.jsonl" >v1; vals "$2.jsonl" >v2
	[ -s s1 ] && [ "$(wc -l <s1)" -eq "$STEPS" ] && cmp -s s1 s2 && cmp -s v1 v2
}
# bits NAME A B: PASS when A and B train alike bit for bit (metrics, and
# checkpoints when both wrote one)
bits() {
	if same "$2" "$3"; then
		ok=PASS d="metrics the same"
	else
		ok=FAIL d="metrics: $(diff s1 s2 | grep -c '^>') of $STEPS steps differ"
	fi
	if [ -s "$2/model.safetensors" ] && [ -s "$3/model.safetensors" ]; then
		if cmp -s "$2/model.safetensors" "$3/model.safetensors"; then
			d="$d, checkpoints the same bytes"
		else
			ok=FAIL d="$d, checkpoints differ"
		fi
	fi
	result "$1" $ok "$d"
}
# "lSTEP loss" and "vSTEP val_loss" lines, sorted for join
keyed() { { losses "$1" | awk '{ print "l" $1, $2 }'; vals "$1" | awk '{ print "v" $1, $2 }'; } | sort; }
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + $$ % 30000))
}
: >"$LOGDIR/summary.txt"

t0=$(date +%s)
# --- one rank against none ---
train base -- $OPTS --batch 4 --steps "$STEPS" --device cuda --dtype bf16 --out base
train g1 LMK_BUCKET_BYTES=4096 -- $OPTS --batch 4 --steps "$STEPS" --gpus 1 --dtype bf16 --out g1
bits "--gpus 1 (4 KiB buckets), bf16: bit for bit" base g1
train e1 RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 -- $OPTS --batch 4 --steps "$STEPS" --dtype bf16 \
	--rendezvous "file:$T/rdzv" --out e1
bits "RANK=0 WORLD_SIZE=1 file rendezvous, bf16: bit for bit" base e1
[ -e "$T/rdzv" ] && ok=FAIL || ok=PASS
result "file rendezvous removed" $ok "$T/rdzv"
port=$(free_port)
train t1 RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" LMK_BUCKET_BYTES=65536 -- \
	$OPTS --batch 4 --steps "$STEPS" --dtype bf16 --out t1
bits "RANK=0 WORLD_SIZE=1 MASTER_ADDR (tcp), bf16: bit for bit" base t1
train basef -- $OPTS --batch 4 --steps "$STEPS" --device cuda --dtype f32 --out basef
train g1f -- $OPTS --batch 4 --steps "$STEPS" --gpus 1 --dtype f32 --out g1f
bits "--gpus 1, f32: bit for bit" basef g1f
say "one rank against none: $(($(date +%s) - t0)) s"

# --- resume ---
train r1 LMK_BUCKET_BYTES=4096 -- $OPTS --batch 4 --steps "$HALF" --decay-steps "$STEPS" --gpus 1 --dtype bf16 --out rg
train r1b LMK_BUCKET_BYTES=4096 -- --resume --out rg --steps "$STEPS" --gpus 1 --quiet
cat r1.jsonl r1b.jsonl >rg.jsonl
bits "--gpus 1: $HALF steps, --resume to $STEPS: bit for bit" g1 rg
train r2 -- $OPTS --batch 4 --steps "$HALF" --decay-steps "$STEPS" --gpus 1 --dtype bf16 --out rn
train r2b -- --resume --out rn --steps "$STEPS" --quiet
cat r2.jsonl r2b.jsonl >rn.jsonl
bits "--gpus 1 state resumed without data parallel" base rn
ws=$(python3 -c 'import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
print(json.loads(b[8:8 + n])["__metadata__"].get("world_size"))' rg/training_state.safetensors 2>/dev/null)
[ "$ws" = 1 ] && ok=PASS || ok=FAIL
result "state's world_size" $ok "$ws"

# --- what rank 0 says ---
train q1 -- $MODEL --batch 4 --steps 2 --eval-every 0 --threads "$THREADS" --gpus 1 --out q1
n0=$(grep -c "step 0/2: val loss .*data parallel on 1 GPU in bf16" q1.err)
nd=$(grep -c "done: step 2" q1.err)
[ "$n0" -eq 1 ] && [ "$nd" -eq 1 ] && [ "$(losses q1.jsonl | wc -l)" -eq 2 ] && [ -s q1/model.safetensors ] &&
	[ -z "$(ls "$TMPDIR")" ] && ok=PASS || ok=FAIL
result "--gpus 1: one report, metrics, checkpoint, no leftovers" $ok "step-0 lines $n0, summaries $nd"

# --- N ranks of B against one of N*B ---
if [ "$NGPU" -ge 2 ]; then
	for dt in f32 bf16; do
		train n1$dt -- $OPTS --batch 4 --steps "$STEPS" --device cuda --dtype $dt
		train n2$dt -- $OPTS --batch 2 --steps "$STEPS" --gpus 2 --dtype $dt
		keyed n1$dt.jsonl >x1; keyed n2$dt.jsonl >x2
		m=$(join x1 x2 | awk '{ d = $3 - $2; if (d < 0) d = -d; a = $2 < 0 ? -$2 : $2;
			r = a > 0 ? d / a : d; if (r > m || r != r) m = r } END { print m + 0 }')
		tol=1e-4; [ $dt = bf16 ] && tol=1e-2
		[ "$(losses n2$dt.jsonl | wc -l)" -eq "$STEPS" ] && awk -v m="$m" -v t=$tol 'BEGIN { exit !(m <= t) }' &&
			ok=PASS || ok=FAIL
		result "--gpus 2 --batch 2 vs --batch 4, $dt ($tol)" $ok "largest relative difference $m"
	done
	# the same two ranks started by an outside launcher (one process
	# each, torchrun's variables, a TCP rendezvous): --gpus 2's bits
	port=$(free_port)
	train x0 RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" -- \
		$OPTS --batch 2 --steps "$STEPS" --dtype bf16 &
	p0=$!
	train x1 RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" -- \
		$OPTS --batch 2 --steps "$STEPS" --dtype bf16
	wait $p0 || fail=1
	bits "RANK=0,1 WORLD_SIZE=2 (tcp), bf16: as --gpus 2, bit for bit" n2bf16 x0
	first=$(losses n2bf16.jsonl | head -1 | cut -d' ' -f2) last=$(losses n2bf16.jsonl | tail -1 | cut -d' ' -f2)
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.1) }' && ok=PASS || ok=FAIL
	result "--gpus 2 bf16: the loss falls" $ok "from $first to $last"
else
	result "--gpus 2 --batch 2 vs --batch 4, f32 (1e-4)" SKIP "one GPU"
	result "--gpus 2 --batch 2 vs --batch 4, bf16 (1e-2)" SKIP "one GPU"
	result "RANK=0,1 WORLD_SIZE=2 (tcp), bf16: as --gpus 2, bit for bit" SKIP "one GPU"
fi

# --- 110M: speed with one rank, and the same losses ---
if [ "$PERF" = 1 ]; then
	V=32768
	if python3 - tokens.safetensors $V <<'PY'; then
import json, random, struct, sys
path, V = sys.argv[1], int(sys.argv[2])
n = 4 << 20
try:
    import numpy as np
    data = np.random.default_rng(1234).integers(0, V, size=n, dtype=np.uint16).tobytes()
except ImportError:
    b = bytearray(random.Random(1234).randbytes(2 * n))
    b[1::2] = b[1::2].translate(bytes(i & (V // 256 - 1) for i in range(256)))
    data = bytes(b)
h = {"__metadata__": {"kind": "tokens", "vocab_size": str(V)},
     "tokens": {"dtype": "U16", "shape": [n], "data_offsets": [0, 2 * n]}}
j = json.dumps(h).encode()
j += b" " * (-len(j) % 8)
open(path, "wb").write(struct.pack("<Q", len(j)) + j + data)
PY
		BIG="--data tokens.safetensors --hidden 768 --intermediate 2048 --layers 12 --heads 12 --vocab $V
			--seq 1024 --batch 32 --steps 20 --warmup 10 --lr 6e-4 --val-frac 0 --threads $THREADS --quiet"
		# shellcheck disable=SC2086
		train big -- $BIG --device cuda --dtype bf16
		# shellcheck disable=SC2086
		train bigdp -- $BIG --gpus 1 --dtype bf16
		tps() { sed -n 's/^{"step":\([0-9]*\),"loss".*"tokens_per_s":\([^,}]*\).*/\1 \2/p' "$1" |
			awk '$1 > 5 { print $2 }' | sort -g |
			awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
		a=$(tps big.jsonl) b=$(tps bigdp.jsonl)
		result "110M, tokens/s: cuda / --gpus 1" INFO "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f / %.0f (%.3f)", a, b, (a > 0 ? b / a : 0) }')"
		losses big.jsonl >s1; losses bigdp.jsonl >s2
		[ "$(wc -l <s1)" -eq 20 ] && cmp -s s1 s2 && ok=PASS || ok=FAIL
		result "110M, --gpus 1 (25 MiB buckets): losses bit for bit" $ok "$(diff s1 s2 | grep -c '^>') of 20 steps differ"
	else
		result "110M rows" SKIP "cannot write the token frame (python3)"
	fi
fi

echo
cat "$LOGDIR/summary.txt"
if [ $fail -eq 0 ]; then
	say "PASS"
	exit 0
fi
say "FAIL"
exit 1
