# tap.sh: the harness the CLI tests in tests/cli/ source (not a test itself).
# The calling script sets PROG (the program's name, for err_one_line) and
# runs in a scratch folder; each case runs a command into the files out and
# err, then check prints a TAP line "ok N - what" or "not ok N - what" with
# the condition, the exit status and the first lines of out and err. The
# script ends with `exit $failed`.
n=0 failed=0 rc=0
run() { "$@" >out 2>err; rc=$?; }
# runin INPUT CMD...: the same with INPUT (a string) on standard input
runin() { i=$1; shift; printf '%s' "$i" | "$@" >out 2>err; rc=$?; }
check() {
	n=$((n + 1))
	if eval "$2"; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		failed=1
		echo "#   condition: $2"
		echo "#   exit status: $rc"
		sed -n '1,15s/^/#   stdout: /p' out
		sed -n '1,15s/^/#   stderr: /p' err
	fi
}
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
rc_is() { [ "$rc" -eq "$1" ]; }
out_empty() { [ ! -s out ]; }
err_empty() { [ ! -s err ]; }
out_has() { grep -qF -e "$1" out; }
err_has() { grep -qF -e "$1" err; }
out_is() { printf '%s\n' "$1" | cmp -s - out; }
err_is() { printf '%s\n' "$1" | cmp -s - err; }
out_lines() { [ "$(wc -l <out)" -eq "$1" ]; }
# one line on stderr, "PROG: ...", containing $1
err_one_line() { [ "$(wc -l <err)" -eq 1 ] && grep -q "^$PROG: " err && grep -qF -e "$1" err; }
