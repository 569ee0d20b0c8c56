#!/bin/sh
# tsr.sh: the tsr program from the shell: stdout, stderr and exit status of
# each command, on frames written here with printf (8-byte little-endian
# header length, JSON header, raw data), so no Python is needed.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
TSR=${LMK_BIN:-build/bin}/tsr
[ -x "$TSR" ] || { echo "tsr.sh: no program $TSR" >&2; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/tsr-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=${LMK_ROOT:-$PWD}/tests/tap.sh   # the harness: run, check, skip, ...
cd "$T" || exit 1

PROG=tsr
. "$TAP"
# run CMD...: stdout to out, stderr to err, the exit status in $rc
# check DESC CONDITION: CONDITION is shell code over $rc, out and err
# one line on stderr, "tsr: ...", naming $1
# the fields after the name in stat's row for tensor $1
row() { awk -v t="$1" '$1 == t { $1 = ""; sub(/^ /, ""); print }' out; }

# frame JSON DATA: one frame on stdout. The header is padded with spaces to a
# multiple of 8 bytes, as safetensors writers do; DATA is a printf format of
# octal escapes, little-endian.
frame() {
	h=$1
	while [ $((${#h} % 8)) -ne 0 ]; do h="$h "; done
	printf "\\$(printf %03o $((${#h} % 256)))\\$(printf %03o $((${#h} / 256)))\\000\\000\\000\\000\\000\\000"
	printf '%s' "$h"
	printf "$2"
}
F1='\000\000\200\077' F2='\000\000\000\100' F3='\000\000\100\100' F4='\000\000\200\100'
F45='\000\000\220\100' F25='\000\000\040\100' FNAN='\000\000\300\177' FINF='\000\000\200\177'
I32='\377\377\377\377\000\000\000\000\007\000\000\000'   # -1 0 7

# a.st: metadata and two tensors; c.st: the same but w[3] = 4.5;
# b.st: NaN and inf, an empty tensor and a scalar; d.st: w of another shape.
frame '{"__metadata__":{"kind":"test","schema":"1"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"i":{"dtype":"I32","shape":[3],"data_offsets":[16,28]}}' \
	"$F1$F2$F3$F4$I32" >a.st
frame '{"__metadata__":{"kind":"test","schema":"1"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"i":{"dtype":"I32","shape":[3],"data_offsets":[16,28]}}' \
	"$F1$F2$F3$F45$I32" >c.st
frame '{"n":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"e":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},"s":{"dtype":"F32","shape":[],"data_offsets":[16,20]}}' \
	"$F1$FNAN$FINF$F3$F25" >b.st
frame '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"i":{"dtype":"I32","shape":[3],"data_offsets":[16,28]}}' \
	"$F1$F2$F3$F4$I32" >d.st
printf '\010\000\000\000\000\000\000\000notjson!' >bad.st
head -c 40 a.st >trunc.st

# ---- info ----
run "$TSR" info a.st
check "info: the table of one frame" 'rc_is 0 && err_empty && out_is "a.st: frame 0: 2 tensors, 28 bytes
  kind=test
  schema=1
  NAME  DTYPE  SHAPE  BYTES
  w     F32    [2,2]     16
  i     I32    [3]       12"'

cat a.st b.st | { "$TSR" info - >out 2>err; echo $? >status; }
rc=$(cat status)
check "info: cat a b | tsr info - shows two frames" \
	'rc_is 0 && err_empty && [ "$(grep -c "^<stdin>: frame [01]: " out)" -eq 2 ] && out_has "<stdin>: frame 1: 3 tensors, 20 bytes"'

cat a.st | { "$TSR" info >out 2>err; echo $? >status; }
rc=$(cat status)
check "info: no FILE reads standard input" 'rc_is 0 && err_empty && out_has "<stdin>: frame 0: 2 tensors"'

run "$TSR" info a.st b.st
check "info: several files, frames counted per file" 'rc_is 0 && out_has "a.st: frame 0:" && out_has "b.st: frame 0: 3 tensors"'

run "$TSR" info --json a.st b.st
if command -v jq >/dev/null 2>&1; then
	check "info --json: one object per frame per line" 'rc_is 0 && err_empty && [ "$(wc -l <out)" -eq 2 ] &&
		[ "$(jq -c "[.file, .frame, .metadata.kind, .tensors[0].name, .tensors[0].shape, .tensors[1].bytes]" out | head -1)" = "[\"a.st\",0,\"test\",\"w\",[2,2],12]" ] &&
		[ "$(jq -c ".tensors[2].shape" out | tail -1)" = "[]" ]'
else
	check "info --json: one object per frame per line" 'rc_is 0 && err_empty && [ "$(wc -l <out)" -eq 2 ] &&
		out_has "\"name\":\"w\",\"dtype\":\"F32\",\"shape\":[2,2],\"bytes\":16"'
fi

gzip -c a.st | { "$TSR" info - >out 2>err; echo $? >status; }
rc=$(cat status)
check "info: gzip input is read transparently" 'rc_is 0 && err_empty && out_has "<stdin>: frame 0: 2 tensors, 28 bytes"'

: >empty.st
run "$TSR" info empty.st
check "info: an empty stream warns on stderr" 'rc_is 0 && out_empty && err_has "empty.st"'
run "$TSR" info -q empty.st
check "info -q: no warning" 'rc_is 0 && out_empty && err_empty'

# ---- stat ----
gzip -c a.st | { "$TSR" stat - >out 2>err; echo $? >status; }
rc=$(cat status)
check "stat: gzip -c a | tsr stat -" 'rc_is 0 && err_empty && out_has "<stdin>: frame 0: 2 tensors" &&
	[ "$(row w)" = "F32 4 1 4 2.5 1.11803 0 0" ] && [ "$(row i)" = "I32 3 -1 7 2 3.55903 0 0" ]'
run "$TSR" stat b.st
check "stat: NaN and inf counted, stats over the finite, empty and 0-d tensors" 'rc_is 0 && err_empty &&
	[ "$(row n)" = "F32 4 1 3 2 1 1 1" ] && [ "$(row e)" = "F32 0 - - - - 0 0" ] &&
	[ "$(row s)" = "F32 1 2.5 2.5 2.5 0 0 0" ] && out_has "  NAME  DTYPE  N  MIN  MAX  MEAN  STD  NAN  INF"'
# more than one chunk of 4096 elements; integers past 2^53 exactly
{
	frame '{"u":{"dtype":"U8","shape":[5000],"data_offsets":[0,5000]},"l":{"dtype":"I64","shape":[2],"data_offsets":[5000,5016]}}' ''
	awk 'BEGIN { for (i = 0; i < 5000; i++) printf "%c", i % 7 + 1 }'
	printf '\000\000\000\000\000\000\000\200\377\377\377\377\377\377\377\177'
} >u.st
run "$TSR" stat u.st
check "stat: a tensor of several chunks, and I64 extremes" 'rc_is 0 && err_empty &&
	[ "$(row u)" = "U8 5000 1 7 3.999 2.00025 0 0" ] &&
	[ "$(row l)" = "I64 2 -9223372036854775808 9223372036854775807 0 9.22337e+18 0 0" ]'
if command -v jq >/dev/null 2>&1; then
	run "$TSR" stat --json b.st
	check "stat --json: numbers, and null where there are none" 'rc_is 0 && err_empty &&
		jq -e ".tensors[0].nan == 1 and .tensors[0].inf == 1 and .tensors[0].mean == 2 and .tensors[1].n == 0 and .tensors[1].min == null" out >/dev/null'
else
	skip "stat --json" "no jq"
fi

# ---- cat ----
run "$TSR" cat a.st b.st -o ab.st
check "cat: -o FILE, nothing on stdout" 'rc_is 0 && out_empty && err_empty && [ -s ab.st ]'
run "$TSR" info ab.st
check "cat: the result has both frames" 'rc_is 0 && out_has "ab.st: frame 0: 2 tensors" && out_has "ab.st: frame 1: 3 tensors"'
"$TSR" cat a.st b.st | "$TSR" diff - ab.st >out 2>err
rc=$?
check "cat: to a pipe, the same frames" 'rc_is 0 && err_empty && out_has "match: 5 tensors"'
run "$TSR" cat -z a.st -o az.st
check "cat -z: gzip output" 'rc_is 0 && [ "$(od -An -tx1 -N2 az.st | tr -d " ")" = "1f8b" ]'
run "$TSR" diff az.st a.st
check "cat -z: reads back equal" 'rc_is 0 && out_has "match"'
run "$TSR" cat a.st bad.st -o partial.st
check "cat: a failure leaves no output file behind" 'rc_is 1 && err_one_line bad.st && [ -z "$(ls -A | grep partial)" ]'
run "$TSR" cat a.st -o nodir/x.st
check "cat: an output that cannot be created is named" 'rc_is 1 && err_one_line nodir/x.st'

# ---- get ----
run "$TSR" get w a.st -o w.st
check "get: -o FILE" 'rc_is 0 && out_empty && err_empty'
run "$TSR" info w.st
check "get: the tensor as a frame of its own" 'rc_is 0 && out_is "w.st: frame 0: 1 tensor, 16 bytes
  NAME  DTYPE  SHAPE  BYTES
  w     F32    [2,2]     16"'
"$TSR" cat a.st c.st | "$TSR" get --frame 1 w | "$TSR" stat >out 2>err
rc=$?
check "get --frame: from the frame asked for" 'rc_is 0 && err_empty && [ "$(row w)" = "F32 4 1 4.5 2.625 1.29301 0 0" ]'
run "$TSR" get zz a.st
check "get: an absent tensor is an error" 'rc_is 1 && out_empty && err_is "tsr: a.st: no tensor '"'zz'"' in 1 frame"'
run "$TSR" get --frame 3 w a.st
check "get --frame: past the end is an error" 'rc_is 1 && out_empty && err_one_line "no frame 3"'

# ---- diff ----
run "$TSR" diff a.st a.st
check "diff: equal streams exit 0" 'rc_is 0 && err_empty && out_has "frame 0 '"'w'"': max_abs 0, max_rel 0: match" &&
	out_has "a.st and a.st match: 2 tensors (rtol 1e-05, atol 1e-08)"'
run "$TSR" diff a.st c.st
check "diff: a difference exits 1 with the numbers" 'rc_is 1 && err_empty &&
	out_has "frame 0 '"'w'"': max_abs 0.5, max_rel 0.111111: 1 of 4 elements differ" &&
	out_has "frame 0 '"'i'"': max_abs 0, max_rel 0: match" && out_has "a.st and c.st differ: 1 of 2 tensors"'
run "$TSR" diff --atol 0.5 a.st c.st
check "diff --atol: within the tolerance exits 0" 'rc_is 0 && out_has "match: 2 tensors (rtol 1e-05, atol 0.5)"'
run "$TSR" diff --rtol 0.2 a.st c.st
check "diff --rtol: relative to B" 'rc_is 0'
run "$TSR" diff -q a.st c.st
check "diff -q: only the exit status" 'rc_is 1 && out_empty && err_empty'
run "$TSR" diff b.st b.st
check "diff: NaN at the same place is equal" 'rc_is 0 && out_has "match: 3 tensors"'
run "$TSR" diff a.st d.st
check "diff: shape mismatch" 'rc_is 1 && out_has "frame 0 '"'w'"': shape [2,2] vs [4]"'
run "$TSR" diff a.st b.st
check "diff: tensors only in one side" 'rc_is 1 && out_has "frame 0 '"'w'"': only in a.st" && out_has "frame 0 '"'n'"': only in b.st"'
run "$TSR" diff a.st ab.st
check "diff: frames only in one side" 'rc_is 1 && out_has "frame 1: only in ab.st (3 tensors)"'
frame '{"n":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"e":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},"s":{"dtype":"F32","shape":[],"data_offsets":[16,20]}}' \
	"$F1$F2$FINF$F3$F25" >b2.st
run "$TSR" diff b.st b2.st
check "diff: NaN against a number differs" 'rc_is 1 && out_has "1 of 4 elements differ (1 NaN mismatch)"'

# ---- usage errors: exit 2, a message on stderr, nothing on stdout ----
run "$TSR"
check "usage: no command" 'rc_is 2 && out_empty && err_has "tsr: missing command" && err_has "usage: tsr"'
run "$TSR" frob
check "usage: unknown command" 'rc_is 2 && out_empty && err_has "tsr: unknown command '"'frob'"'"'
run "$TSR" info --bogus a.st
check "usage: unknown option" 'rc_is 2 && out_empty && err_has "tsr: unknown option '"'--bogus'"'"'
run "$TSR" diff a.st
check "usage: diff needs two files" 'rc_is 2 && out_empty && err_has "tsr: "'
run "$TSR" diff --rtol x a.st c.st
check "usage: a tolerance that is not a number" 'rc_is 2 && out_empty && err_has "--rtol"'
run "$TSR" info --rtol 1 a.st
check "usage: an option of another command" 'rc_is 2 && out_empty && err_has "does not apply to '"'info'"'"'
run "$TSR" cat -o
check "usage: a missing option argument" 'rc_is 2 && out_empty && err_has "needs an argument"'

# ---- runtime errors: exit 1, one line naming the file ----
run "$TSR" info nope.st
check "error: a missing file" 'rc_is 1 && out_empty && err_one_line nope.st'
run "$TSR" info bad.st
check "error: a corrupt header" 'rc_is 1 && out_empty && err_one_line bad.st'
run "$TSR" stat trunc.st
check "error: a truncated frame" 'rc_is 1 && out_empty && err_one_line trunc.st'

# ---- a closed pipe ends quietly (8192 frames, 1.5 MB: the reader maps it) ----
cp a.st big.st
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13; do cat big.st big.st >big2.st && mv big2.st big.st; done
"$TSR" info big.st 2>err | head -1 >out
rc=0
check "tsr info big | head -1 ends quietly" 'err_empty && out_is "big.st: frame 0: 2 tensors, 28 bytes"'

# ---- terminals ----
if command -v script >/dev/null 2>&1 && script -qec true /dev/null >/dev/null 2>&1 </dev/null; then
	script -qec "'$TSR' cat a.st" /dev/null >out 2>err </dev/null
	rc=$?
	check "cat to a terminal is refused" 'rc_is 1 && out_has "refusing to write binary frames to a terminal"'
	script -qec "'$TSR' cat --force a.st" /dev/null >out 2>err </dev/null
	rc=$?
	check "cat --force writes to a terminal" 'rc_is 0 && ! out_has "refusing"'
	script -qec "'$TSR' info" /dev/null >out 2>err </dev/null
	rc=$?
	check "reading frames from a terminal is refused" 'rc_is 1 && out_has "refusing to read binary frames from a terminal"'
else
	skip "cat to a terminal is refused" "no script(1) or no pseudo-terminal"
fi

# ---- convert: a GGUF model to a Hugging Face directory ----
run "$TSR" convert x.gguf
check "convert: -o DIR is needed" 'rc_is 2 && out_empty && err_has "'"'convert'"' needs -o DIR"'
run "$TSR" convert -o d
check "convert: a GGUF file is needed" 'rc_is 2 && out_empty && err_has "'"'convert'"' needs a GGUF file"'
run "$TSR" convert --dtype f8 x.gguf -o d
check "convert: an unknown --dtype" 'rc_is 2 && out_empty && err_has "f32, bf16 or f16, not '"'f8'"'"'
run "$TSR" convert --json x.gguf -o d
check "convert: an option of another command" 'rc_is 2 && err_has "does not apply to '"'convert'"'"'
run "$TSR" info --dtype bf16 a.st
check "--dtype belongs to convert" 'rc_is 2 && err_has "'"'--dtype'"' does not apply to '"'info'"'"'
run "$TSR" convert nope.gguf -o d
check "convert: a missing file, one line" 'rc_is 1 && out_empty && err_one_line nope.gguf && [ ! -e d ]'
run "$TSR" convert a.st -o d
check "convert: not a GGUF file, one line" 'rc_is 1 && out_empty && err_one_line a.st'
FIX=${LMK_ROOT:-.}/tests/fixtures/gguf
case $FIX in /*) ;; *) FIX=$OLDPWD/$FIX ;; esac
if [ -r "$FIX/tiny-llama.gguf" ]; then
	run "$TSR" convert "$FIX/tiny-llama.gguf" -o hf
	check "convert: config, generation config and weights; a warning: no tokenizer" 'rc_is 0 && out_empty && [ -s hf/config.json ] && [ -s hf/generation_config.json ] && [ -s hf/model.safetensors ] && [ ! -e hf/tokenizer.json ] && err_has "warning: " && err_has "no tokenizer.json written: tokenizer.ggml.model is absent" && err_has "wrote hf: a llama of 2 layers"'
	check "convert: the config says what the GGUF does" 'grep -q "\"hidden_size\": 32" hf/config.json && grep -q "\"num_key_value_heads\": 2" hf/config.json && grep -q "\"attention_bias\": true" hf/config.json && grep -q "\"tie_word_embeddings\": false" hf/config.json'
	run "$TSR" diff hf/model.safetensors "$FIX/tiny-llama.safetensors"
	check "convert: every tensor as transformers names and lays it out" 'rc_is 0 && out_has "match: " && ! out_has "only in"'
	run "$TSR" convert -q --dtype f16 "$FIX/tiny-llama.gguf" -o hf16
	check "convert --dtype f16 -q: quiet, F16 weights" 'rc_is 0 && err_empty && "$TSR" info hf16/model.safetensors | grep -q " F16 " && grep -q "\"torch_dtype\": \"float16\"" hf16/config.json'
	# stat's rows of the matrices without the dtype, by name: the same numbers
	# (the GGUF holds them in f16; its vectors are f32, rounded here)
	stat_rows() { "$TSR" stat "$1" | awk 'NR > 2 && $1 ~ /_proj[.]weight|embed_tokens|lm_head/ { $2 = ""; print }' | sort; }
	check "convert --dtype f16: the same matrices" '[ "$(stat_rows hf16/model.safetensors)" = "$(stat_rows "$FIX/tiny-llama.safetensors")" ] && [ -n "$(stat_rows hf16/model.safetensors)" ]'
	run "$TSR" convert -q "$FIX/tiny-llama-tied.gguf" -o tied
	check "convert: a tied model has no lm_head.weight" 'rc_is 0 && ! "$TSR" info tied/model.safetensors | grep -q lm_head && grep -q "\"tie_word_embeddings\": true" tied/config.json'
else
	skip "convert the tiny GGUF fixture" "$FIX/tiny-llama.gguf not found"
fi

# ---- help and version ----
run "$TSR" --version
check "--version" 'rc_is 0 && err_empty && grep -q "^tsr (lmk) [0-9]" out'
run "$TSR" -h
check "-h: usage on stdout, exit 0" 'rc_is 0 && err_empty && head -1 out | grep -q "^usage: tsr "'
cp out help.txt
run "$TSR" help
check "help: the same text" 'rc_is 0 && err_empty && cmp -s out help.txt'
run "$TSR" diff --help
check "COMMAND --help: the same text" 'rc_is 0 && err_empty && cmp -s out help.txt'

echo "1..$n"
exit $failed
