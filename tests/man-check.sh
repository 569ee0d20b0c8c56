#!/bin/sh
# man-check.sh MANPAGE: checks one man page.
#  - every page: `mandoc -T lint -W warning` is silent (warnings fail);
#  - a section-1 page whose program is in $LMK_BIN (scripts/run-tests.sh sets
#    it): every long option in `PROG -h` appears in the page as an option
#    (Fl), and every option (Fl) in the page's OPTIONS section appears in
#    `PROG -h`.
# Section-5 pages, and section-1 pages without a built program, get the lint
# only. Exit 0 pass, 1 fail (each reason on stderr), 2 usage error.
set -u
[ $# -eq 1 ] || { echo "usage: man-check.sh MANPAGE" >&2; exit 2; }
page=$1
[ -r "$page" ] || { echo "man-check: cannot read '$page'" >&2; exit 1; }
command -v mandoc >/dev/null 2>&1 || { echo "man-check: no mandoc" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/man-check.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
fail=0

mandoc -T lint -W warning "$page" >"$T/lint" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ -s "$T/lint" ]; then
	echo "man-check: $page: mandoc -T lint -W warning (exit $rc):" >&2
	sed 's/^/  /' "$T/lint" >&2
	fail=1
fi

base=${page##*/}
sec=${base##*.}
prog=${base%.*}
bin=${LMK_BIN:-}/$prog
if [ "$sec" != 1 ] || [ -z "${LMK_BIN:-}" ] || [ ! -x "$bin" ]; then
	[ "$sec" = 1 ] && echo "man-check: $page: no program $bin, lint only" >&2
	[ $fail -eq 0 ] && echo "man-check: $page: ok"
	exit $fail
fi

# The options of the page, "SECTION<TAB>-flag" a line, from mandoc's parse
# tree: the text children of each Fl, with "-" put back in front
# (".Fl \-output" is "--output").
if ! mandoc -T tree "$page" >"$T/tree" 2>/dev/null; then
	echo "man-check: $page: mandoc -T tree failed" >&2
	exit 1
fi
awk '
function indent(s) { match(s, /^ */); return RLENGTH }
function text(s) { sub(/^ */, "", s); sub(/ \(text\) [0-9]+:[0-9]+.*$/, "", s); gsub(/\\-/, "-", s); return s }
/ Sh \(head\)|^Sh \(head\)/ { want_sec = 1; infl = 0; next }
want_sec && / \(text\) / { sec = text($0); want_sec = 0; next }
infl && indent($0) <= flind { infl = 0 }
/^ *Fl \(elem\)/ { infl = 1; flind = indent($0); next }
infl && / \(text\) / { print sec "\t-" text($0) }
' "$T/tree" | sort -u >"$T/man-flags"
cut -f2 "$T/man-flags" | sort -u >"$T/man-all"
awk -F '\t' '$1 == "OPTIONS" { print $2 }' "$T/man-flags" >"$T/man-options"
if [ ! -s "$T/man-options" ]; then
	echo "man-check: $page: no options (Fl) in an OPTIONS section" >&2
	fail=1
fi

if ! "$bin" -h >"$T/help" 2>"$T/help-err"; then
	echo "man-check: $page: '$prog -h' failed" >&2
	fail=1
fi
# Words of -h made of letters, digits and dashes: "-o," gives -o,
# "--output=FILE" gives --output.
tr -c 'A-Za-z0-9-' '\n' <"$T/help" | grep -v '^$' | sort -u >"$T/help-words"
grep -E '^--[A-Za-z0-9]' "$T/help-words" >"$T/help-long"

while read -r opt; do
	grep -qxF -e "$opt" "$T/man-all" ||
		{ echo "man-check: $page: '$prog -h' has $opt, the page does not" >&2; fail=1; }
done <"$T/help-long"
while read -r opt; do
	grep -qxF -e "$opt" "$T/help-words" ||
		{ echo "man-check: $page: OPTIONS has $opt, '$prog -h' does not" >&2; fail=1; }
done <"$T/man-options"

[ $fail -eq 0 ] && echo "man-check: $page: ok ($(wc -l <"$T/help-long") long options of -h, $(wc -l <"$T/man-options") options in OPTIONS)"
exit $fail
