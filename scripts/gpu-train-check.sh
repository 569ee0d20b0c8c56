#!/bin/sh
# gpu-train-check.sh: lla-train on the GPU against lla-train on the CPU. The
# same tiny model (hidden 128, 2 layers, 2 heads of 64, one kv head, so GQA
# and the bf16 attention kernels' D = 64 path), the same text and seed, 20
# steps of 2 micro-batches with an evaluation every 10, with --metrics, on
# the CPU (f32), on cuda --dtype f32 and on cuda --dtype bf16. Prints the
# losses side by side and checks:
#   cuda f32:  every loss and val loss within 1e-4 (relative) of the CPU's;
#   cuda bf16: within 1e-2 of the CPU's, and the loss falls by 0.1 or more;
#   resume on the GPU (bf16): 10 steps, --resume to 20, the losses bit for
#     bit those of the run of 20 in one go;
#   a GPU state continued on the CPU: 10 steps on cuda f32, --resume
#     --device cpu to 20, within 1e-4 of the CPU run;
#   the GPU's checkpoint has the CPU's tensors (model.safetensors headers
#     equal), and --sample decodes on a GPU run.
# It builds nothing: build here with `make BUILD=build-gpu CUDA=1` and carry
# $BUILD/bin/lla-train (and $BUILD/tests/lib, see --bundle).
#
#   scripts/gpu-train-check.sh            from the repository root
#   scripts/gpu-train-check.sh --bundle   here, before carrying: copies the
#       shared libraries lla-train needs beyond glibc, libstdc++ and CUDA's
#       own (jansson, OpenBLAS, gfortran, ...) into $BUILD/tests/lib (the
#       folder scripts/gpu-check.sh --bundle fills), which the check puts on
#       LD_LIBRARY_PATH when it exists
#
# Environment: BUILD (default build-gpu), STEPS (default 20), THREADS (CPU
# threads, default 4), OUT (if set, the table of losses and the summary go
# there, else to $BUILD/gpu-train-check), KEEP_RUNS=1 (each run's metrics
# and stderr too, in runs/ beside them; a failed run's stderr is printed
# anyway).
# Exit 0 PASS, 1 FAIL, 2 no build or no device.
set -u
BUILD=${BUILD:-build-gpu}
STEPS=${STEPS:-20}
THREADS=${THREADS:-4}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
TRAIN=$BUILD/bin/lla-train

if [ "${1:-}" = --bundle ]; then
	[ -x "$TRAIN" ] || { echo "gpu-train-check: no $TRAIN to bundle for" >&2; exit 2; }
	mkdir -p "$BUILD/tests/lib" || exit 2
	ldd "$TRAIN" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
		case $(basename "$lib") in
		libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | \
			libstdc++.so* | libgcc_s.so* | libcublas* | libcudart* | libnccl*) ;;
		*) cp -L "$lib" "$BUILD/tests/lib/" && echo "gpu-train-check: bundled $lib" ;;
		esac
	done
	du -sh "$BUILD/tests/lib"
	exit 0
fi

[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$TRAIN" ] || { echo "gpu-train-check: no $TRAIN: build with make BUILD=$BUILD CUDA=1 and carry it" >&2; exit 2; }
if ldd "$TRAIN" 2>/dev/null | grep -q "not found"; then
	echo "gpu-train-check: $TRAIN misses shared libraries (run --bundle where it was built):" >&2
	ldd "$TRAIN" | grep "not found" >&2
	exit 2
fi
LOGDIR=${OUT:-$BUILD/gpu-train-check}
mkdir -p "$LOGDIR" || exit 2
case $LOGDIR in /*) ;; *) LOGDIR=$PWD/$LOGDIR ;; esac
T=$(mktemp -d "${TMPDIR:-/tmp}/gpu-train-check.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
cd "$T" || exit 2
# fp32 means fp32: no TF32 behind the comparison's back
export NVIDIA_TF32_OVERRIDE=0 OMP_WAIT_POLICY=passive

say() { echo "gpu-train-check: $*"; }
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

awk 'BEGIN { for (i = 0; i < 3000; i++)
	printf "line %d: the quick brown fox jumps over the lazy dog, %d times\n", i * 7 % 101, i % 13 }' >text.txt
HALF=$((STEPS / 2))
MODEL="--data text.txt --hidden 128 --layers 2 --heads 2 --kv-heads 1 --batch 4 --seq 64 --accum 2"
OPTS="$MODEL --warmup 5 --eval-every $HALF --eval-batches 2 --threads $THREADS --seed 11 --quiet"

fail=0
# train NAME ARGS...: one run, its metrics in NAME.jsonl, its stderr in NAME.err
train() {
	name=$1
	shift
	"$TRAIN" "$@" --metrics "$name.jsonl" 2>"$name.err"
	rc=$?
	if [ "${KEEP_RUNS:-0}" = 1 ]; then
		mkdir -p "$LOGDIR/runs" && cp "$name.err" "$name.jsonl" "$LOGDIR/runs/" 2>/dev/null
	fi
	if [ $rc -ne 0 ]; then
		say "$name: lla-train exited $rc:"
		sed 's/^/    /' "$name.err"
		if grep -q "no CUDA device\|no CUDA support" "$name.err"; then
			exit 2
		fi
		fail=1
	fi
	return $rc
}
# "step loss" a line, each step once; and "step val_loss"
losses() { sed -n 's/^{"step":\([0-9]*\),"loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }
vals() { sed -n 's/^{"step":\([0-9]*\),.*"val_loss":\([^,}]*\).*/\1 \2/p' "$1" | sort -n -u; }
# result NAME PASS|FAIL DETAIL
result() {
	printf '%-44s %-4s %s\n' "$1" "$2" "$3" >>"$LOGDIR/summary.txt"
	[ "$2" = PASS ] || fail=1
}
: >"$LOGDIR/summary.txt"

t0=$(date +%s)
train cpu $OPTS --steps "$STEPS" --device cpu --out cpu
train f32 $OPTS --steps "$STEPS" --device cuda --dtype f32 --out f32
train bf16 $OPTS --steps "$STEPS" --device cuda --dtype bf16 --sample 16
say "three runs of $STEPS steps in $(($(date +%s) - t0)) s"

# The table: step, cpu, cuda f32 and its relative difference, cuda bf16 and
# its; val losses marked with a v. Then the largest differences.
losses cpu.jsonl | sed 's/$/ l/' >cl; vals cpu.jsonl | sed 's/$/ v/' >>cl
losses f32.jsonl | sed 's/$/ l/' >fl; vals f32.jsonl | sed 's/$/ v/' >>fl
losses bf16.jsonl | sed 's/$/ l/' >bl; vals bf16.jsonl | sed 's/$/ v/' >>bl
awk '
	FILENAME == ARGV[1] { c[$3 " " $1] = $2; next }
	FILENAME == ARGV[2] { f[$3 " " $1] = $2; next }
	{ b[$3 " " $1] = $2 }
	function rel(x, y) { d = x - y; if (d < 0) d = -d; if (y < 0) y = -y; return y > 0 ? d / y : d }
	END {
		printf "%-7s %12s %12s %9s %12s %9s\n", "step", "cpu", "cuda f32", "rel", "cuda bf16", "rel"
		mf = 0; mb = 0; missing = 0
		for (k in c) keys[++n] = k
		for (i = 1; i <= n; i++)            # sort by kind, then step
			for (j = i + 1; j <= n; j++) {
				split(keys[i], a, " "); split(keys[j], bb, " ")
				if (a[1] > bb[1] || (a[1] == bb[1] && a[2] + 0 > bb[2] + 0)) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
			}
		for (i = 1; i <= n; i++) {
			k = keys[i]; split(k, a, " ")
			if (!(k in f) || !(k in b)) { missing++; continue }
			rf = rel(f[k], c[k]); rb = rel(b[k], c[k])
			if (rf > mf || rf != rf) mf = rf
			if (rb > mb || rb != rb) mb = rb
			printf "%-7s %12.7f %12.7f %9.1e %12.7f %9.1e\n", (a[1] == "v" ? "val " : "") a[2], c[k], f[k], rf, b[k], rb
		}
		printf "max %.3g %.3g missing %d\n", mf, mb, missing > "maxes"
	}' cl fl bl | tee "$LOGDIR/losses.txt"
read -r _ mf mb _ missing <maxes
nsteps=$(losses cpu.jsonl | wc -l)
[ "$nsteps" -eq "$STEPS" ] && [ "$missing" -eq 0 ] && ok=PASS || ok=FAIL
result "all three runs: $STEPS steps each" $ok "$nsteps steps on the cpu, $missing missing on cuda"
awk -v m="$mf" 'BEGIN { exit !(m <= 1e-4) }' && ok=PASS || ok=FAIL
result "cuda f32 against the cpu (1e-4)" $ok "largest relative difference $mf"
awk -v m="$mb" 'BEGIN { exit !(m <= 1e-2) }' && ok=PASS || ok=FAIL
result "cuda bf16 against the cpu (1e-2)" $ok "largest relative difference $mb"
first=$(losses bf16.jsonl | head -1 | cut -d' ' -f2) last=$(losses bf16.jsonl | tail -1 | cut -d' ' -f2)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.1) }' && ok=PASS || ok=FAIL
result "cuda bf16: the loss falls" $ok "from $first to $last"
grep -q "sample at step $STEPS:" bf16.err && ok=PASS || ok=FAIL
result "cuda bf16: --sample decodes (on the cpu)" $ok "$(grep -c 'sample at step' bf16.err) samples"

# Checkpoints: the same tensors, names, shapes and offsets (the header),
# whichever device wrote them.
hdr() { n=$(od -An -tu8 -N8 "$1" | tr -d ' '); head -c $((8 + n)) "$1"; }
if [ -s cpu/model.safetensors ] && [ -s f32/model.safetensors ] &&
	[ "$(hdr cpu/model.safetensors | cksum)" = "$(hdr f32/model.safetensors | cksum)" ]; then
	ok=PASS
else
	ok=FAIL
fi
result "checkpoint: the gpu's header is the cpu's" $ok "$(wc -c <f32/model.safetensors 2>/dev/null) bytes"

# Resume on the GPU, bit for bit.
train r1 $OPTS --steps "$HALF" --decay-steps "$STEPS" --device cuda --out rb
train r1b --resume --out rb --steps "$STEPS" --quiet
cat r1.jsonl r1b.jsonl >rb.jsonl
losses bf16.jsonl >x1; losses rb.jsonl >x2; vals bf16.jsonl >y1; vals rb.jsonl >y2
if [ -s x1 ] && cmp -s x1 x2 && cmp -s y1 y2; then ok=PASS; else ok=FAIL; fi
result "resume on cuda bf16: bit for bit" $ok "$(wc -l <x2) steps"

# A GPU state continued on the CPU.
train r2 $OPTS --steps "$HALF" --decay-steps "$STEPS" --device cuda --dtype f32 --out rc
train r2b --resume --out rc --steps "$STEPS" --device cpu
grep -q "continues on cpu in f32" r2b.err && warned=1 || warned=0
cat r2.jsonl r2b.jsonl >rc.jsonl
losses cpu.jsonl >x1; losses rc.jsonl >x2
m=$(join x1 x2 | awk '{ d = $3 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r } END { print m + 0 }')
[ "$(wc -l <x2)" -eq "$STEPS" ] && awk -v m="$m" 'BEGIN { exit !(m <= 1e-4) }' && [ $warned -eq 1 ] && ok=PASS || ok=FAIL
result "cuda f32 state resumed on the cpu (1e-4)" $ok "largest relative difference $m, warned $warned"

echo
cat "$LOGDIR/summary.txt"
if [ $fail -eq 0 ]; then
	say "PASS"
	exit 0
fi
say "FAIL"
exit 1
