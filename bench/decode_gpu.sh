#!/bin/sh
# decode_gpu.sh: batch-1 greedy decoding speed on one GPU in bf16, ours
# (bench/decode_gpu.c: lmk_llama_decode, KV cache on the device) against
# transformers' generate with cache_implementation="static"
# (bench/decode_torch.py), at two shapes with random weights: SmolLM2-135M's
# and Llama-3.2-1B's. Prompt PROMPT tokens, GEN new tokens, greedy, best of
# REPS runs. One table: tokens/s of a whole generation (prompt included) for
# both, ours' ms per decoded token alone, and the share of the measured
# device-to-device copy bandwidth (read + written, 1 GiB cudaMemcpy) that
# ours' weight reads reach (bf16 weight bytes per token / decode time per
# token / copy bandwidth).
#
#   BUILD=build-dec bench/decode_gpu.sh
# It builds nothing: carry $BUILD/bench/decode_gpu and $BUILD/tests/lib
# (scripts/gpu-check.sh --bundle, with BUILD set, copies the shared libraries
# there). Environment (defaults): BUILD (build-dec), PROMPT (16), GEN (256),
# REPS (3), TORCH (1; 0 skips transformers), COMPILE (1; 0 passes
# disable_compile to generate), OURS_TIMEOUT (90), TORCH_TIMEOUT (100, per
# shape), OUT (if set, the logs go there). About 3 minutes on an H200, at
# most OURS_TIMEOUT + 2 TORCH_TIMEOUT seconds.
# Exit 0, or 1 when ours failed (a torch failure leaves its cells empty).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-dec}
PROMPT=${PROMPT:-16}
GEN=${GEN:-256}
REPS=${REPS:-3}
TORCH=${TORCH:-1}
COMPILE=${COMPILE:-1}
OURS_TIMEOUT=${OURS_TIMEOUT:-90}
TORCH_TIMEOUT=${TORCH_TIMEOUT:-100}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BIN=$BUILD/bench/decode_gpu
[ -x "$BIN" ] || { echo "decode_gpu: no $BIN: build with make BUILD=$BUILD CUDA=1 $BIN and carry it" >&2; exit 1; }
[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
LOG=${OUT:-$BUILD/decode-gpu}
mkdir -p "$LOG" || exit 1

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/decode_gpu: device: /'
echo "decode_gpu: ours (prompt $PROMPT, $GEN new tokens, best of $REPS)"
timeout "$OURS_TIMEOUT" "$BIN" --prompt "$PROMPT" --gen "$GEN" --reps "$REPS" >"$LOG/ours.txt" 2>"$LOG/ours.log"
orc=$?
cat "$LOG/ours.log" "$LOG/ours.txt"
: >"$LOG/torch.txt"
if [ "$TORCH" = 1 ]; then
	nc=""
	[ "$COMPILE" = 1 ] || nc=--no-compile
	for s in smollm llama1b; do
		echo "decode_gpu: transformers $s"
		timeout "$TORCH_TIMEOUT" python3 bench/decode_torch.py --shape "$s" --prompt "$PROMPT" \
			--gen "$GEN" --reps "$REPS" $nc >>"$LOG/torch.txt" 2>"$LOG/torch-$s.log" ||
			{ echo "decode_gpu: transformers $s failed or timed out (rc $?):"; tail -n 5 "$LOG/torch-$s.log"; }
		grep '^decode_torch' "$LOG/torch-$s.log" | head -n 1
	done
	cat "$LOG/torch.txt"
fi

awk -v prompt="$PROMPT" -v gen="$GEN" '
$1 == "copy_bw" { bw = $2 }
$1 == "ours" { o[$2] = 1; par[$2] = $3; wmb[$2] = $4; og[$2] = $5; ms[$2] = $6; odt[$2] = $7; sh[$2] = $8 }
$1 == "torch" { t[$2] = 1; tg[$2] = $4; tw[$2] = $5; tc[$2] = $6; if (!par[$2]) par[$2] = $3 }
END {
	printf "\nbatch-1 greedy decoding, bf16, prompt %d + %d new tokens; copy bandwidth %s GB/s (D2D, read+written)\n", prompt, gen, bw ? bw : "?"
	printf "%-8s %8s %9s | %12s %12s %12s | %12s %9s %8s | %7s\n", "shape", "params_M", "weight_MB", "ours_gen/s", "ours_ms/tok", "ours_dec/s", "torch_gen/s", "warmup_s", "compile", "bw_share"
	split("smollm llama1b", names, " ")
	for (i = 1; i <= 2; i++) {
		n = names[i]
		if (!o[n] && !t[n]) continue
		printf "%-8s %8s %9s | %12s %12s %12s | %12s %9s %8s | %7s\n", n, par[n], o[n] ? wmb[n] : "-", \
			o[n] ? og[n] : "-", o[n] ? ms[n] : "-", o[n] ? odt[n] : "-", \
			t[n] ? tg[n] : "-", t[n] ? tw[n] : "-", t[n] ? tc[n] : "-", \
			o[n] ? sprintf("%.1f%%", 100 * sh[n]) : "-"
	}
}' "$LOG/ours.txt" "$LOG/torch.txt" | tee "$LOG/table.txt"
[ "$orc" = 0 ] || { echo "decode_gpu: ours failed (rc $orc)"; exit 1; }
exit 0
