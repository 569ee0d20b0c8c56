#!/bin/sh
# mixers_gpu.sh: the token-mixer benchmarks of issues 8 and 9 in one call on
# a GPU machine: our kernels (bench/ssd_gpu, gdn_gpu, path_gpu of a CUDA
# build) and, in the same call, the PyTorch baselines and the Triton kernels
# of flash-linear-attention (bench/ssd_torch.py, gdn_torch.py,
# path_torch.py), installed from the wheels of scripts/get-fla.sh.
#
#   BUILD=build-gpu bench/mixers_gpu.sh [--quick]
#
# Triton compiles (and autotunes) each kernel at its first shape, which
# takes tens of seconds: each script gets TIMEOUT seconds (default 240), and
# a warm-up run of each shape precedes the timed ones inside the scripts.
# Environment: BUILD (build-gpu), WHL (.whl), TIMEOUT (240), OUT (where the
# tables go as files too; default $BUILD/mixers-bench), ONLY (a space-
# separated subset of: ssd gdn path path-fox).
# Prints each table; exits 0 when every part ran, 1 otherwise.
set -u
BUILD=${BUILD:-build-gpu}
WHL=${WHL:-.whl}
TIMEOUT=${TIMEOUT:-240}
OUT=${OUT:-$BUILD/mixers-bench}
ONLY=${ONLY:-ssd gdn path path-fox}
QUICK=
[ "${1:-}" = --quick ] && QUICK=--quick
mkdir -p "$OUT" || exit 1
[ -d "$BUILD/tests/lib" ] && export LD_LIBRARY_PATH="$PWD/$BUILD/tests/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0
if ls "$WHL"/*.whl >/dev/null 2>&1; then
	python3 -m pip install -q --no-deps --target /tmp/fla "$WHL"/*.whl >"$OUT/pip.log" 2>&1 ||
		echo "mixers_gpu: pip install of $WHL failed (see $OUT/pip.log)" >&2
	export PYTHONPATH=/tmp/fla${PYTHONPATH:+:$PYTHONPATH}
else
	echo "mixers_gpu: no wheels in $WHL (scripts/get-fla.sh): fla columns will be empty" >&2
fi
fail=0
part() { # name command...
	name=$1
	shift
	echo "== $name: $*"
	timeout "$TIMEOUT" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
	rc=$?
	cat "$OUT/$name.txt"
	[ $rc -eq 0 ] || { echo "mixers_gpu: $name: exit $rc (last lines of stderr:)"; tail -n 3 "$OUT/$name.err"; fail=1; }
}
for p in $ONLY; do
	case $p in
	ssd)
		part ours-ssd "$BUILD/bench/ssd_gpu" $QUICK
		part fla-ssd python3 bench/ssd_torch.py --no-naive $QUICK ;;
	gdn)
		part ours-gdn "$BUILD/bench/gdn_gpu" $QUICK
		part fla-gdn python3 bench/gdn_torch.py $QUICK ;;
	path)
		part ours-path "$BUILD/bench/path_gpu" $QUICK
		part fla-path python3 bench/path_torch.py $QUICK ;;
	path-fox)
		part ours-path-fox "$BUILD/bench/path_gpu" --fox $QUICK
		part fla-path-fox python3 bench/path_torch.py --fox $QUICK ;;
	*) echo "mixers_gpu: unknown part '$p'" >&2; fail=1 ;;
	esac
done
exit $fail
