#!/bin/sh
# cpu.sh: training-step and decoding speed on the CPU, ours against PyTorch,
# same shapes, same threads, in one run. Prints a table; results go into
# docs/benchmarks.md by hand with the date and this command. Tokens per
# second of wall time, then per CPU second of the process (which other
# programs on a shared machine disturb less; see bench_cpu.c).
#   bench/cpu.sh [--threads N] [shape options of bench_cpu]
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
make -s BUILD="$BUILD" "$BUILD/bench/bench_cpu" >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BUILD/bench/bench_cpu" "$@" >"$out"
python3 bench/torch_cpu.py "$@" >>"$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["impl"], r["what"]): r for r in rows}
print(f"{'measurement':<12} {'lmk tok/s':>12} {'pytorch tok/s':>14} {'ratio':>7}"
      f" {'lmk tok/cpu-s':>14} {'pytorch tok/cpu-s':>18} {'ratio':>7}")
for w in ("train_step", "decode"):
    a, b = by[("lmk", w)]["tokens_per_s"], by[("pytorch", w)]["tokens_per_s"]
    ca, cb = by[("lmk", w)]["tokens_per_cpu_s"], by[("pytorch", w)]["tokens_per_cpu_s"]
    print(f"{w:<12} {a:>12.1f} {b:>14.1f} {a / b:>7.2f} {ca:>14.1f} {cb:>18.1f} {ca / cb:>7.2f}")
PY
