#!/bin/sh
# bench-scripts.sh: the benchmark scripts' own input handling, which needs
# no GPU: bench/ncu_step.py on a small per-launch profile in ncu's CSV form
# (one step's kernels summed and grouped; a missing file, a file that is not
# such a profile and one without a whole step each a one-line error), and
# the --t/--d rows of bench/ssd_torch.py and bench/gdn_torch.py (bad values
# a one-line usage error, exit 2, before torch is imported).
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
ROOT=${LMK_ROOT:-$PWD}
command -v python3 >/dev/null 2>&1 || { echo "bench-scripts.sh: no python3" >&2; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-scripts-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=$ROOT/tests/tap.sh
cd "$T" || exit 1
. "$TAP"

# launches NAME:TIME... as ncu --csv rows, after ncu's own chatter
profile() {
	echo '==PROF== Connected to process 1 (lla-train)'
	echo '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
	i=0
	for k in "$@"; do
		echo "\"$i\",\"1\",\"lla-train\",\"h\",\"void ${k%%:*}(float *, long)\",\"1\",\"13\",\"(256, 1, 1)\",\"(8, 1, 1)\",\"0\",\"9.0\",\"Command line profiler metrics\",\"gpu__time_duration.sum\",\"us\",\"${k#*:}\""
		i=$((i + 1))
	done
}
profile mm:5 adamw_k:1 mm:10 ce:1,000.5 mm:20 adamw_k:2 mm:7 >p.csv

PROG=ncu_step
run python3 "$ROOT/bench/ncu_step.py" p.csv --step-ms 2
check "ncu_step: one step between two AdamW launches, with its gap" \
	'rc_is 0 && line1=$(sed -n 1p out) && [ "$line1" = "kernels 4, kernel time 1.03 ms of a 2.00 ms step (0.97 ms outside kernels)" ]'
check "ncu_step: grouped by kernel, longest first" \
	'sed -n 2p out | grep -q "1.000 ms .* 1 x .*ce$" && sed -n 3p out | grep -q "0.030 ms .* 2 x  *15.0 us  mm$"'
run python3 "$ROOT/bench/ncu_step.py" p.csv --marker zzz
check "ncu_step: no whole step: one line, exit 1" 'rc_is 1 && out_empty && err_one_line "no whole step"'
run python3 "$ROOT/bench/ncu_step.py" missing.csv
check "ncu_step: a missing file: one line naming it" 'rc_is 1 && err_one_line "missing.csv: No such file"'
echo '"a","b"' >bad.csv
echo '"1","2"' >>bad.csv
run python3 "$ROOT/bench/ncu_step.py" bad.csv
check "ncu_step: not an ncu profile: one line" 'rc_is 1 && err_one_line "bad.csv: not an ncu --csv"'
run python3 "$ROOT/bench/ncu_step.py" p.csv --marker '('
check "ncu_step: a bad --marker: usage error" 'rc_is 2 && err_one_line "--marker"'

for s in ssd_torch gdn_torch; do
	PROG=$s
	run python3 "$ROOT/bench/$s.py" --t 2048,x
	check "$s --t 2048,x: one-line usage error" 'rc_is 2 && out_empty && err_one_line "comma-separated integers"'
	run python3 "$ROOT/bench/$s.py" --d 96
	check "$s --d 96: one-line usage error" 'rc_is 2 && out_empty && err_one_line "--d takes 64 and 128"'
done
exit $failed
