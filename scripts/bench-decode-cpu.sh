#!/bin/sh
# bench-decode-cpu.sh: greedy CPU decoding speed of SmolLM2-135M-Instruct,
# ours (ladder-serve, its own timings) against llama.cpp (the PyPI package
# llama-cpp-python, bench/llamacpp_decode.py) on the same GGUF file, the same
# prompt, the same number of generated tokens and threads; one table with
# the ratio.
#
#   scripts/bench-decode-cpu.sh [--threads N] [--tokens N] [--reps N]
#                               [--model FILE] [--prompt TEXT]
#
# Defaults: 2 threads, 128 tokens, 3 repetitions, models/smollm2-135m-
# instruct.gguf, the prompt "Once upon a time". The programs come from
# $BUILD/bin (BUILD defaults to build). Each repetition runs ladder-serve,
# then llama.cpp, each in a process of its own after loading the model, so
# that a busy machine slows both alike; the table shows the medians.
# tokens/s is decoding steps per second, (tokens - 1) / decode time, for
# both. Our CPU path dequantizes the weights to float32 (4 bytes a weight,
# about 8 times Q4_1's 0.5625), while llama.cpp multiplies the Q4_1 blocks
# as they are stored: the table says so.
# Needs python3 with llama-cpp-python (pip install llama-cpp-python builds
# llama.cpp from source). Exit 0 done, 1 failure, 2 usage.
set -eu

prog=bench-decode-cpu
root=$(cd "$(dirname "$0")/.." && pwd)
threads=2 tokens=128 reps=3 model=$root/models/smollm2-135m-instruct.gguf
prompt="Once upon a time"
usage() { sed -n '7,8s/^# */usage: /p' "$0" | head -1; }
while [ $# -gt 0 ]; do
	case $1 in
	--threads) threads=$2; shift 2 ;;
	--tokens) tokens=$2; shift 2 ;;
	--reps) reps=$2; shift 2 ;;
	--model) model=$2; shift 2 ;;
	--prompt) prompt=$2; shift 2 ;;
	-h | --help) sed -n '2,24s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "$prog: unknown option '$1'" >&2; exit 2 ;;
	esac
done
for v in "$threads" "$tokens" "$reps"; do
	case $v in '' | *[!0-9]*) echo "$prog: expected a number, found '$v'" >&2; exit 2 ;; esac
done
serve=$root/${BUILD:-build}/bin/ladder-serve
[ -x "$serve" ] || { echo "$prog: $serve is not built (make BUILD=${BUILD:-build} CUDA=0)" >&2; exit 1; }
[ -r "$model" ] || { echo "$prog: $model not found (scripts/get-model.sh smollm2-135m-instruct)" >&2; exit 1; }
python3 -c 'import llama_cpp' 2>/dev/null ||
	{ echo "$prog: llama-cpp-python is not installed (pip install llama-cpp-python)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
request=$(python3 -c 'import json, sys
print(json.dumps({"prompt": sys.argv[1], "max_tokens": int(sys.argv[2]), "temperature": 0}))' \
	"$prompt" "$tokens")
i=1
while [ $i -le "$reps" ]; do
	echo "$prog: run $i of $reps: ladder-serve" >&2
	printf '%s\n' "$request" | "$serve" -q --threads "$threads" -m "$model" >>"$tmp/ours"
	echo "$prog: run $i of $reps: llama.cpp" >&2
	python3 "$root/bench/llamacpp_decode.py" --model "$model" --prompt "$prompt" \
		--tokens "$tokens" --threads "$threads" >>"$tmp/llamacpp"
	i=$((i + 1))
done

python3 - "$tmp/ours" "$tmp/llamacpp" "$model" "$threads" "$tokens" "$load" "$prompt" <<'EOF'
import json, os, platform, statistics, sys
ours_f, lc_f, model, threads, tokens, load, prompt = sys.argv[1:]
ours = [json.loads(l) for l in open(ours_f)]
lc = [json.loads(l) for l in open(lc_f)]
for r in ours:
    if "error" in r:
        sys.exit(f"bench-decode-cpu: ladder-serve: {r['error']}")
med = lambda rs, k: statistics.median(r[k] for r in rs)
cpu = "?"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
except OSError:
    pass
n_ours, n_lc = ours[0]["tokens"], lc[0]["tokens"]
print(f"CPU decoding, {os.path.basename(model)}, {threads} threads, greedy, prompt {prompt!r} "
      f"({ours[0]['prompt_tokens']} tokens), {tokens} tokens generated; median of {len(ours)} runs")
print(f"machine: {cpu}, {os.cpu_count()} CPUs, load average {load} at the start")
print()
rows = [("ladder-serve (lmk)", "f32, dequantized", ours), (f"llama.cpp ({lc[0]['version']})", "Q4_1 as stored", lc)]
lc_tps = med(lc, "tokens_per_s")
print(f"{'implementation':<24} {'weights':<17} {'tokens':>6} {'prompt ms':>10} {'decode ms':>10} "
      f"{'tokens/s':>9} {'vs llama.cpp':>12}")
for name, w, rs in rows:
    tps = med(rs, "tokens_per_s")
    print(f"{name:<24} {w:<17} {rs[0]['tokens']:>6} {med(rs, 'prompt_ms'):>10.1f} "
          f"{med(rs, 'decode_ms'):>10.1f} {tps:>9.2f} {tps / lc_tps:>11.2f}x")
a, b = ours[0]["text"], lc[0]["text"]
k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print()
print(f"tokens/s = (tokens - 1) / decode time; all runs: ours "
      f"{[r['tokens_per_s'] for r in ours]}, llama.cpp {[r['tokens_per_s'] for r in lc]}")
print(f"the greedy texts agree on their first {k} characters (ours {len(a)}, llama.cpp {len(b)}); "
      f"llama.cpp multiplies with 8-bit activations, so near-ties may go the other way")
if n_ours != n_lc:
    print(f"note: ladder-serve stopped after {n_ours} tokens (an end token), llama.cpp ran {n_lc}")
EOF
