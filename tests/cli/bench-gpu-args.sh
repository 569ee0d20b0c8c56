#!/bin/sh
# bench-gpu-args.sh: the device benchmarks' option checks, which come before
# the device is touched and so need no GPU: bench/bw_gpu and bench/gemm_gpu
# (built in a CUDA build) refuse a bad count, an --only that names nothing
# and an unknown option, each with one line on stderr and exit 2.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
ROOT=${LMK_ROOT:-$PWD}
BW=$ROOT/${BUILD:-build}/bench/bw_gpu
GEMM=$ROOT/${BUILD:-build}/bench/gemm_gpu
[ -x "$BW" ] && [ -x "$GEMM" ] || {
	echo "bench-gpu-args.sh: skipped: no $BW or $GEMM (a CUDA build makes them)"
	exit 77
}
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-gpu-args.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=$ROOT/tests/tap.sh
cd "$T" || exit 1
. "$TAP"

PROG=bw_gpu
for r in 0 5x 100001; do
	run "$BW" --reps $r
	check "bw_gpu --reps $r: one line, exit 2" \
		'rc_is 2 && out_empty && err_one_line "expected a count from 1 to 100000"'
done
run "$BW" --only nothing
check "bw_gpu --only nothing: one line naming the kernels, exit 2" \
	'rc_is 2 && out_empty && err_one_line "names none of cross_entropy"'
run "$BW" --bogus
check "bw_gpu --bogus: the usage line, exit 2" \
	'rc_is 2 && out_empty && err_is "usage: bw_gpu [--reps R] [--only NAME]"'

PROG=gemm_gpu
for r in x 0 10001; do
	run "$GEMM" --reps $r
	check "gemm_gpu --reps $r: one line, exit 2" \
		'rc_is 2 && out_empty && err_one_line "expected a count from 1 to 10000"'
done
run "$GEMM" --algos 99
check "gemm_gpu --algos 99: one line, exit 2" \
	'rc_is 2 && out_empty && err_one_line "--algos '"'"'99'"'"': expected a count from 1 to 64"'
run "$GEMM" --only nothing
check "gemm_gpu --only nothing: one line naming the products, exit 2" \
	'rc_is 2 && out_empty && err_one_line "names no product"'
run "$GEMM" --reps
check "gemm_gpu --reps without a value: the usage line, exit 2" \
	'rc_is 2 && out_empty && err_is "usage: gemm_gpu [--reps R] [--algos K] [--only NAME]"'
exit $failed
