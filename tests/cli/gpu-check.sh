#!/bin/sh
# gpu-check.sh: scripts/gpu-check.sh's own logic, which needs no GPU, on a
# build folder of stand-in test binaries (shell scripts: two pass, one
# skips with exit 77, one fails): the run phase one binary at a time and
# JOBS at once (the same verdicts, the logs joined in order and no part
# left behind), NAME:CASE (one Check case: CK_RUN_CASE), REQUIRE_GPU (a skip fails the check unless it is 0), an
# unknown phase failing the check, and a JOBS that is not a count.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
ROOT=${LMK_ROOT:-$PWD}
G=$ROOT/scripts/gpu-check.sh
[ -f "$G" ] || { echo "gpu-check.sh: no $G" >&2; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=$ROOT/tests/tap.sh
cd "$T" || exit 1
. "$TAP"

mkdir -p b/tests
printf '#!/bin/sh\necho "100%%: Checks: 1, Failures: 0, Errors: 0"\n' >b/tests/test_cuda_a
printf '#!/bin/sh\necho "test_cuda_b: skipped: no CUDA device on this machine"\nexit 77\n' >b/tests/test_cuda_b
printf '#!/bin/sh\necho "0%%: Checks: 1, Failures: 1, Errors: 0"\nexit 1\n' >b/tests/test_cuda_c
printf '#!/bin/sh\necho "test_cuda_d: case ${CK_RUN_CASE:-all}"\n' >b/tests/test_cuda_d
chmod +x b/tests/test_cuda_a b/tests/test_cuda_b b/tests/test_cuda_c b/tests/test_cuda_d
# the binaries a log ran, in its order
order() { sed -n 's/^==== run \(test_cuda_[a-z]*\) .*/\1/p' "$1" | tr '\n' ' '; }

PROG=gpu-check
run env BUILD=b REQUIRE_GPU=0 PHASES=run TESTS="test_cuda_a test_cuda_b" OUT=o1 sh "$G"
check "a pass and a skip (REQUIRE_GPU=0) pass the check" \
	'rc_is 0 && out_has "gpu-check: all passed (or skipped)" &&
	 grep -q "^run  *test_cuda_a  *PASS" o1/summary.txt && grep -q "^run  *test_cuda_b  *SKIP" o1/summary.txt'
run env BUILD=b REQUIRE_GPU=1 PHASES=run TESTS=test_cuda_b OUT=o2 sh "$G"
check "REQUIRE_GPU=1: a skip fails the check" 'rc_is 1 && out_has "gpu-check: FAILED"'
run env BUILD=b REQUIRE_GPU=0 PHASES=run OUT=o3 sh "$G"
check "one at a time: the failing binary fails the check" \
	'rc_is 1 && grep -q "^run  *test_cuda_c  *FAIL" o3/summary.txt'
run env BUILD=b REQUIRE_GPU=0 PHASES=run JOBS=3 OUT=o4 sh "$G"
check "JOBS=3: the same verdicts" \
	'rc_is 1 && [ "$(sort o3/summary.txt | sed "s/ *[0-9]*s$//")" = "$(sort o4/summary.txt | sed "s/ *[0-9]*s$//")" ]'
check "JOBS=3: the logs joined in their order, no part left" \
	'[ "$(order o4/run.log)" = "$(order o3/run.log)" ] && [ "$(order o4/run.log)" = "test_cuda_a test_cuda_b test_cuda_c test_cuda_d " ] &&
	 [ "$(ls o4)" = "$(printf "run.log\nsummary.txt")" ]'
run env BUILD=b REQUIRE_GPU=0 PHASES="run bogus" TESTS=test_cuda_a OUT=o5 sh "$G"
check "an unknown phase fails the check" 'rc_is 1 && grep -q "^bogus .*FAIL" o5/summary.txt'
run env BUILD=b REQUIRE_GPU=0 PHASES=run TESTS="test_cuda_d:x test_cuda_d" OUT=o8 sh "$G"
check "NAME:CASE runs that case alone, NAME all of them" \
	'rc_is 0 && grep -q "^test_cuda_d: case x" o8/run.log && grep -q "^test_cuda_d: case all" o8/run.log &&
	 grep -q "^run  *test_cuda_d:x  *PASS" o8/summary.txt'
run env BUILD=nowhere PHASES=run OUT=o6 sh "$G"
check "no build folder: exit 2" 'rc_is 2'
for j in 0 x 2x; do
	run env BUILD=b JOBS=$j OUT=o7 sh "$G"
	check "JOBS=$j: one line, exit 2" 'rc_is 2 && out_empty && err_one_line "expected a count of at least 1"'
done
exit $failed
