#!/bin/sh
# install-deps.sh: installs what building and testing lmk needs, if missing.
# Debian packages through apt-get (as root, or through sudo), Python packages
# for the interoperability tests through pip. Quiet and quick when all is
# present; the Makefile runs it before every build.
#   scripts/install-deps.sh          install what is missing
#   scripts/install-deps.sh --check  only report; exit 1 if anything is missing
set -eu

DEBS="build-essential pkg-config check libsubunit-dev zlib1g-dev libjansson-dev
libopenblas-dev libpcre2-dev mandoc clang libclang-rt-14-dev python3 python3-pip"
PYMODS="numpy safetensors"

missing_debs=""
for p in $DEBS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing_debs="$missing_debs $p"
done
# A python3 that is not Debian's (pyenv, a venv) is the one tests use, so ask it.
PY=$(command -v python3 || true)
missing_py=""
for m in $PYMODS; do
	if [ -z "$PY" ] || ! "$PY" -c "import $m" 2>/dev/null; then
		missing_py="$missing_py $m"
	fi
done
# python3 from pyenv or elsewhere counts as present.
if [ -n "$PY" ]; then
	missing_debs=$(echo "$missing_debs" | tr ' ' '\n' | grep -v -x -e python3 -e python3-pip | tr '\n' ' ' || true)
fi
missing_debs=$(echo $missing_debs)
missing_py=$(echo $missing_py)

[ -z "$missing_debs$missing_py" ] && exit 0
if [ "${1:-}" = "--check" ]; then
	[ -n "$missing_debs" ] && echo "install-deps: missing Debian packages: $missing_debs" >&2
	[ -n "$missing_py" ] && echo "install-deps: missing Python packages: $missing_py" >&2
	exit 1
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ -n "$missing_debs" ]; then
	echo "install-deps: installing Debian packages: $missing_debs" >&2
	$SUDO apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		$missing_debs >/dev/null
	PY=$(command -v python3)
fi
if [ -n "$missing_py" ]; then
	echo "install-deps: installing Python packages: $missing_py" >&2
	"$PY" -m pip install -q --disable-pip-version-check $missing_py 2>/dev/null ||
		"$PY" -m pip install -q --disable-pip-version-check --break-system-packages $missing_py
fi
