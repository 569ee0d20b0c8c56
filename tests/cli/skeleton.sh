#!/bin/sh
# skeleton.sh: the conventions of cmd/prog.h, checked for every program in
# $LMK_BIN: -h and --help print the usage ("usage: NAME ...") on stdout and
# exit 0; --version prints "NAME (lmk) VERSION" on stdout and exits 0; an
# unknown option exits 2 with "NAME: ..." and the usage line on stderr and
# nothing on stdout. Exit 0 pass, 1 fail, 77 skip (no programs).
set -u
BIN=${LMK_BIN:-build/bin}
T=$(mktemp -d "${TMPDIR:-/tmp}/skeleton-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM

n=0 failed=0 progs=0 rc=0
run() { "$@" >"$T/out" 2>"$T/err" </dev/null; rc=$?; }
check() {
	n=$((n + 1))
	if eval "$2"; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		failed=1
		echo "#   condition: $2"
		echo "#   exit status: $rc"
		sed -n '1,5s/^/#   stdout: /p' "$T/out"
		sed -n '1,5s/^/#   stderr: /p' "$T/err"
	fi
}

for p in "$BIN"/*; do
	[ -f "$p" ] && [ -x "$p" ] || continue
	name=${p##*/}
	progs=$((progs + 1))
	for h in -h --help; do
		run "$p" $h
		check "$name $h: usage on stdout, exit 0" '[ $rc -eq 0 ] && [ ! -s "$T/err" ] &&
			head -n 1 "$T/out" | grep -q "^usage: $name\( \|$\)"'
	done
	run "$p" --version
	check "$name --version: exit 0" '[ $rc -eq 0 ] && [ ! -s "$T/err" ] &&
		[ "$(wc -l <"$T/out")" -eq 1 ] && grep -q "^$name (lmk) [0-9]" "$T/out"'
	run "$p" --no-such-option
	check "$name --no-such-option: exit 2, stderr only" '[ $rc -eq 2 ] && [ ! -s "$T/out" ] &&
		head -n 1 "$T/err" | grep -q "^$name: " && grep -q "^usage: $name" "$T/err"'
done

if [ $progs -eq 0 ]; then
	echo "skeleton.sh: no programs in $BIN" >&2
	exit 77
fi
echo "1..$n"
exit $failed
