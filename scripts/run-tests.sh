#!/bin/sh
# run-tests.sh KIND FILE...: runs one group of tests and prints a summary.
#   unit     Check binaries (each prints its own Check summary)
#   cli      shell scripts in tests/cli (exit 0 pass, 77 skip)
#   interop  Python scripts in tests/interop (exit 0 pass, 77 skip)
#   man      man pages: mandoc -T lint, and -h agrees with the SYNOPSIS/OPTIONS
# Exits 1 if any test failed. BUILD names the build folder (default build).
set -u
kind=$1; shift
BUILD=${BUILD:-build}
export BUILD LMK_BIN="$PWD/$BUILD/bin" LMK_ROOT="$PWD"
export LMK_DATA="${LMK_DATA:-$PWD/../shared/data}"
pass=0 fail=0 skip=0 failed=""
for t in "$@"; do
	case $kind in
	unit) "$t"; rc=$? ;;
	cli) sh "$t"; rc=$? ;;
	interop) python3 "$t"; rc=$? ;;
	man) sh tests/man-check.sh "$t"; rc=$? ;;
	esac
	case $rc in
	0) pass=$((pass + 1)) ;;
	77) skip=$((skip + 1)); echo "$kind: skipped $t" ;;
	*) fail=$((fail + 1)); failed="$failed $t" ;;
	esac
done
echo "$kind: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || { echo "$kind: failed:$failed"; exit 1; }
