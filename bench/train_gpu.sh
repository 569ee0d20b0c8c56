#!/bin/sh
# train_gpu.sh: training speed on one GPU, ours against PyTorch, in one table.
# The model is a Llama of 110.1M parameters: hidden C 768, intermediate 2048,
# L 12 layers, H 12 heads of D 64 (no GQA), vocabulary 32768, tied
# embeddings; batches of B 32 sequences of T 1024 tokens (32768 tokens a
# step), random token ids. Three runs on the same GPU, one after the other:
#   ours           lla-train --device cuda --dtype bf16 (fp32 master weights,
#                  fused AdamW, clipping at 1), on token frames of random ids
#                  written here (vocab_size 32768 in their metadata);
#   torch eager    transformers LlamaForCausalLM, attn_implementation sdpa,
#                  bf16 autocast, AdamW(fused=True) (bench/train_torch.py);
#   torch compile  the same with the forward and loss under torch.compile.
# Tokens/s is the median of the steps after the first WARMUP (ours: the
# tokens_per_s of --metrics, each step timed from its start until the
# device has finished it; torch: torch.cuda.synchronize() around each step).
# MFU counts model FLOPs as PaLM does (Chowdhery et al. 2022, appendix B;
# nanoGPT's estimate_mfu): 6N + 12 L H D T per token, N every parameter
# (the tied embedding once: it is the lm_head's matrix product), the
# attention term as if not causal; MFU = FLOPs/token x tokens/s / PEAK,
# PEAK 989e12, the H100/H200 SXM's dense bf16 rate.
#
#   BUILD=build-gpu bench/train_gpu.sh
# It builds nothing: carry $BUILD/bin/lla-train (and $BUILD/tests/lib when
# the shared libraries are bundled there: scripts/gpu-train-check.sh
# --bundle). Environment (defaults): BUILD (build-gpu), STEPS (30, ours and
# eager), COMPILE_STEPS (20), WARMUP (5), BATCH (32), ACCUM (1), SEQ (1024),
# PEAK (989e12), OURS_FLAGS (more lla-train options, e.g.
# --nondeterministic), TORCH (1; 0 skips both torch runs), COMPILE (1; 0 skips
# torch.compile), PROFILE (0; 1 adds ncu's per-launch times of one of ours's
# steps, summed by bench/ncu_step.py, against the measured step: the time
# outside kernels; about a minute more), OUT (if set, the metrics and logs
# go there). If ours fails
# at BATCH it is run again at BATCH/2 with ACCUM*2 (the same tokens a step),
# and the table says so; torch runs the batch ours ran.
# Time: ours about a minute, eager about a minute, compile a few minutes;
# each has a time limit (OURS_TIMEOUT 120, EAGER_TIMEOUT 150,
# COMPILE_TIMEOUT 270 s) so that the whole fits in 9 minutes.
# Exit 0, or 1 when ours failed (a torch failure leaves its row empty).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
STEPS=${STEPS:-30}
COMPILE_STEPS=${COMPILE_STEPS:-20}
WARMUP=${WARMUP:-5}
BATCH=${BATCH:-32}
ACCUM=${ACCUM:-1}
SEQ=${SEQ:-1024}
PEAK=${PEAK:-989e12}
TORCH=${TORCH:-1}
PROFILE=${PROFILE:-0}
COMPILE=${COMPILE:-1}
OURS_TIMEOUT=${OURS_TIMEOUT:-120}
OURS_FLAGS=${OURS_FLAGS:-}
EAGER_TIMEOUT=${EAGER_TIMEOUT:-150}
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-270}
C=768 F=2048 L=12 H=12 V=32768
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
TRAIN=$BUILD/bin/lla-train

[ -x "$TRAIN" ] || { echo "train_gpu: no $TRAIN: build with make BUILD=$BUILD CUDA=1 and carry it" >&2; exit 1; }
[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
LOG=${OUT:-$BUILD/train-gpu}
mkdir -p "$LOG" || exit 1
T=$(mktemp -d "${TMPDIR:-/tmp}/train-gpu.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
export OMP_WAIT_POLICY=passive
say() { echo "train_gpu: $*" >&2; }
command -v nvidia-smi >/dev/null 2>&1 &&
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader >&2

# 8M random ids in one token frame (U16, kind tokens, vocab_size 32768):
# numpy's generator, or without numpy, for a power-of-two V, random bytes
# with the high bits of each little-endian id cleared
python3 - "$T/tokens.safetensors" "$V" <<'PY' || { say "cannot write the token frame"; exit 1; }
import json, random, struct, sys
path, V = sys.argv[1], int(sys.argv[2])
n = 8 << 20
try:
    import numpy as np
    data = np.random.default_rng(1234).integers(0, V, size=n, dtype=np.uint16).tobytes()
except ImportError:
    assert V & (V - 1) == 0 and 256 <= V <= 65536, "without numpy V must be a power of two"
    b = bytearray(random.Random(1234).randbytes(2 * n))
    b[1::2] = b[1::2].translate(bytes(i & (V // 256 - 1) for i in range(256)))
    data = bytes(b)
h = {"__metadata__": {"kind": "tokens", "vocab_size": str(V)},
     "tokens": {"dtype": "U16", "shape": [n], "data_offsets": [0, 2 * n]}}
j = json.dumps(h).encode()
j += b" " * (-len(j) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(j)) + j + data)
PY

# ours B A: runs lla-train, metrics in ours.jsonl; 0 or its exit status
ours() {
	rm -f "$T/ours.jsonl"
	say "ours: B $1, accum $2, T $SEQ, $STEPS steps"
	timeout "$OURS_TIMEOUT" "$TRAIN" --data "$T/tokens.safetensors" --device cuda --dtype bf16 \
		--hidden $C --intermediate $F --layers $L --heads $H --vocab $V --seq "$SEQ" \
		--batch "$1" --accum "$2" --steps "$STEPS" --warmup 10 --lr 6e-4 --val-frac 0 \
		--metrics "$T/ours.jsonl" $OURS_FLAGS >"$LOG/ours.log" 2>&1
	rc=$?
	cp "$T/ours.jsonl" "$LOG/" 2>/dev/null
	[ $rc -eq 0 ] || { say "ours failed (exit $rc):"; tail -n 5 "$LOG/ours.log" >&2; }
	return $rc
}
B=$BATCH A=$ACCUM note=""
if ! ours "$B" "$A"; then
	if [ "$B" -ge 2 ]; then
		B=$((BATCH / 2)) A=$((ACCUM * 2))
		note="ours failed at B $BATCH accum $ACCUM (see $LOG/ours.log), ran B $B accum $A"
		ours "$B" "$A" || exit 1
	else
		exit 1
	fi
fi
# median tokens_per_s after WARMUP steps
ours_tps=$(sed -n 's/^{"step":\([0-9]*\),"loss".*"tokens_per_s":\([^,}]*\).*/\1 \2/p' "$T/ours.jsonl" |
	awk -v w="$WARMUP" '$1 > w { print $2 }' | sort -g |
	awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
ours_loss=$(sed -n 's/^{"step":\([0-9]*\),"loss":\([^,}]*\).*/\2/p' "$T/ours.jsonl" | sed -n '1p;$p' | tr '\n' ' ')
grep -q "parameters" "$LOG/ours.log" && say "ours: $(grep -o '[0-9.]*[kMG]* parameters' "$LOG/ours.log" | tail -1)"

# ncu, one launch at a time (at the clocks the GPU runs at: ncu locks them
# to the base clock by default, which made the kernels sum to more than the
# measured step), over steps 3-5 of ours (about 600 launches a
# step at the default shape), summed for the last whole step in them
if [ "$PROFILE" = 1 ]; then
	if command -v ncu >/dev/null 2>&1 && [ "$ours_tps" != "-" ]; then
		say "ours under ncu"
		timeout "$OURS_TIMEOUT" ncu --csv --clock-control none --metrics gpu__time_duration.sum --launch-skip 1500 \
			--launch-count 1600 "$TRAIN" --data "$T/tokens.safetensors" --device cuda --dtype bf16 \
			--hidden $C --intermediate $F --layers $L --heads $H --vocab $V --seq "$SEQ" \
			--batch "$B" --accum "$A" --steps 6 --warmup 10 --lr 6e-4 --val-frac 0 $OURS_FLAGS \
			>"$LOG/ncu.csv" 2>"$LOG/ncu.log" &&
			python3 bench/ncu_step.py "$LOG/ncu.csv" \
				--step-ms "$(awk -v t="$ours_tps" -v n=$((B * A * SEQ)) 'BEGIN { print n / t * 1000 }')" \
				>"$LOG/profile.txt" && head -n 25 "$LOG/profile.txt" ||
			say "the profile failed (see $LOG/ncu.log)"
	else
		say "PROFILE=1: no ncu here, or ours did not run"
	fi
fi

# torch MODE STEPS LIMIT: one line "torch MODE tps ms params first last warm_s B T A" or nothing
torch_run() {
	PYTHONUNBUFFERED=1 timeout "$3" python3 bench/train_torch.py --mode "$1" --batch "$B" \
		--accum "$A" --seq "$SEQ" --steps "$2" --warmup "$WARMUP" >"$T/torch-$1.out" \
		2>"$LOG/torch-$1.log"
	rc=$?
	[ $rc -eq 0 ] || { say "torch $1 failed (exit $rc; 124: over ${3} s):"; tail -n 5 "$LOG/torch-$1.log" >&2; }
	grep "^torch $1 " "$T/torch-$1.out"
}
eager="" compiled=""
if [ "$TORCH" = 1 ]; then
	eager=$(torch_run eager "$STEPS" "$EAGER_TIMEOUT")
	[ "$COMPILE" = 1 ] && compiled=$(torch_run compile "$COMPILE_STEPS" "$COMPILE_TIMEOUT")
fi

# The table.
awk -v C=$C -v F=$F -v L=$L -v H=$H -v V=$V -v T="$SEQ" -v peak="$PEAK" -v B="$B" -v A="$A" \
	-v ours="$ours_tps" -v oloss="$ours_loss" -v eager="$eager" -v comp="$compiled" -v note="$note" \
	-v warm="$WARMUP" '
function mfu(tps) { return tps * fpt / peak }
BEGIN {
	D = C / H
	N = V * C + L * (4 * C * C + 3 * C * F + 2 * C) + C
	fpt = 6 * N + 12 * L * H * D * T
	printf "model: %d parameters (C %d, F %d, L %d, H %d, D %d, V %d, tied), T %d, B %d x accum %d = %d tokens a step\n",
	       N, C, F, L, H, D, V, T, B, A, B * A * T
	printf "FLOPs/token = 6N + 12*L*H*D*T = %.4g + %.4g = %.4g (PaLM); MFU against %.4g FLOP/s\n",
	       6 * N, 12 * L * H * D * T, fpt, peak
	if (note != "") print "note: " note
	ne = split(eager, e, " "); nc = split(comp, k, " ")
	ct = nc ? k[3] : 0
	ratio = (ct > 0 && ours != "-") ? sprintf("%.2f", ours / ct) : "-"
	printf "\n%-34s %12s %10s %7s %14s\n", "run", "tokens/s", "ms/step", "MFU", "ours/compile"
	if (ours != "-" && ours > 0)
		printf "%-34s %12.0f %10.1f %6.1f%% %14s\n", "ours (lla-train, cuda bf16)", ours,
		       B * A * T / ours * 1000, 100 * mfu(ours), ratio
	else
		printf "%-34s %12s\n", "ours (lla-train, cuda bf16)", "-"
	if (ne) printf "%-34s %12.0f %10.1f %6.1f%% %14s\n", "torch eager (sdpa, autocast bf16)", e[3], e[4],
		       100 * mfu(e[3]), "-"
	else printf "%-34s %12s\n", "torch eager (sdpa, autocast bf16)", "-"
	if (nc) printf "%-34s %12.0f %10.1f %6.1f%% %14s\n", "torch compile", k[3], k[4], 100 * mfu(k[3]), "1.00"
	else printf "%-34s %12s\n", "torch compile", "-"
	printf "\nlosses (first, last): ours %s", oloss
	if (ne) printf "; eager %s %s", e[6], e[7]
	if (nc) printf "; compile %s %s (its first %d steps, compiling included: %s s)", k[6], k[7], warm, k[8]
	printf "\n"
	if (ne && e[5] != N) printf "warning: torch counts %d parameters, the formula %d\n", e[5], N
}' | tee "$LOG/table.txt"
exit 0
