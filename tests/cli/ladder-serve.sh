#!/bin/sh
# ladder-serve.sh: the ladder-serve program from the shell: usage errors, a
# model path that does not open, then a tiny lla-train checkpoint trained
# here and served end to end (answers, malformed request lines with and
# without --strict, the request id, --stream, chats with --plain, seeds,
# --logits frames, the interactive chat through script(1)); and, when
# models/smollm2-135m-instruct.gguf is there, SmolLM2-135M-Instruct answering
# "What is the capital of France?" with Paris, also after tsr convert.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
SERVE=${LMK_BIN:-build/bin}/ladder-serve
TRAIN=${LMK_BIN:-build/bin}/lla-train
TSR=${LMK_BIN:-build/bin}/tsr
[ -x "$SERVE" ] || { echo "ladder-serve.sh: no program $SERVE" >&2; exit 77; }
for v in SERVE TRAIN TSR; do
	eval "p=\$$v"
	case $p in /*) ;; *) eval "$v=\$PWD/\$p" ;; esac
done
ROOT=${LMK_ROOT:-$PWD}
MODEL=$ROOT/models/smollm2-135m-instruct.gguf
T=$(mktemp -d "${TMPDIR:-/tmp}/ladder-serve-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
TAP=${LMK_ROOT:-$PWD}/tests/tap.sh   # the harness: run, check, skip, ...
cd "$T" || exit 1
# Spinning OpenMP threads starve OpenBLAS's on a shared 2-core machine.
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY

PROG=ladder-serve
. "$TAP"
# line N of out matches the extended regular expression RE
line_is() { sed -n "$1p" out | grep -qE -e "$2"; }
# FILE without the timings, which differ run to run
untimed() { sed 's/,"prompt_ms".*//' "$1"; }
# every line of out is a JSON object (python3 when there is one)
json_lines() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import json, sys
for l in open(sys.argv[1]): assert isinstance(json.loads(l), dict)' out 2>/dev/null
	else
		[ "$(grep -c '^{.*}$' out)" -eq "$(wc -l <out)" ]
	fi
}
ANSWER='"text":".*","tokens":[0-9]+,"prompt_tokens":[0-9]+,"finish_reason":"(stop|length)","prompt_ms":[0-9.e+-]+,"decode_ms":[0-9.e+-]+,"tokens_per_s":[0-9.e+-]+}$'

# --- usage ---
run "$SERVE" -h
check "-h: usage on stdout, exit 0" 'rc_is 0 && out_has "usage: ladder-serve -m MODEL" && out_has "--logits" && err_empty'
run "$SERVE" --version
check "--version" 'rc_is 0 && out_has "ladder-serve (lmk)"'
run "$SERVE"
check "no model: exit 2" 'rc_is 2 && err_has "no model (-m MODEL"'
run "$SERVE" -m x --bogus
check "unknown option: exit 2" 'rc_is 2 && err_has "unknown option '"'"'--bogus'"'"'"'
run "$SERVE" -m x --ctx 0
check "--ctx 0: exit 2" 'rc_is 2 && err_has "--ctx"'
run "$SERVE" -m x --top-p 2
check "--top-p 2: exit 2" 'rc_is 2 && err_has "--top-p"'
run "$SERVE" -m x extra
check "an operand: exit 2" 'rc_is 2 && err_has "unexpected argument '"'"'extra'"'"'"'
run "$SERVE" -m x -o y
check "-o without --logits: exit 2" 'rc_is 2 && err_has "applies only to --logits"'
run "$SERVE" -m x --logits - --stream
check "--stream with --logits: exit 2" 'rc_is 2 && err_has "does not apply to --logits"'

# --- models that do not open ---
runin '' "$SERVE" -m no-such-model.gguf
check "missing model: exit 1, one line naming it" 'rc_is 1 && out_empty && err_one_line "cannot open '"'"'no-such-model.gguf'"'"'"'
printf 'not a model at all' >junk.gguf
runin '' "$SERVE" -m junk.gguf
check "not a GGUF file: exit 1, one line naming it" 'rc_is 1 && out_empty && err_one_line "junk.gguf"'
mkdir empty
runin '' "$SERVE" -m empty
check "a directory without config.json: exit 1, one line" 'rc_is 1 && err_one_line "empty: no config.json"'

# --- a tiny lla-train checkpoint, served ---
if [ ! -x "$TRAIN" ]; then
	skip "tiny checkpoint" "no program $TRAIN"
else
	awk 'BEGIN { for (i = 0; i < 300; i++) printf "line %d: the quick brown fox jumps over the lazy dog\n", i * 7 % 101 }' >text.txt
	run "$TRAIN" --data text.txt --hidden 32 --layers 2 --heads 2 --batch 4 --seq 32 --steps 30 \
		--warmup 5 --eval-every 0 --threads 2 --seed 7 --out ck -q
	check "lla-train makes a tiny checkpoint" 'rc_is 0 && [ -s ck/model.safetensors ]'
	S="$SERVE -m ck --threads 2"

	run $S -q --adapter nowhere
	check "--adapter that is not there: exit 1, one line naming the file" 'rc_is 1 && err_one_line "nowhere/adapter_config.json"'
	mkdir -p badad && echo '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true}' >badad/adapter_config.json
	run $S -q --adapter badad
	check "--adapter asking for DoRA: exit 1, one line" 'rc_is 1 && err_one_line "\"use_dora\" is set: not supported"'

	runin '{"prompt":"the quick","max_tokens":8,"temperature":0}
' $S
	check "a prompt: one answer line, exit 0" 'rc_is 0 && out_lines 1 && line_is 1 "^{$ANSWER" && json_lines'
	check "the answer counts the prompt's bytes" 'out_has "\"prompt_tokens\":9,"'
	check "stderr: a summary of the model" 'err_has "ck: lla-train model, 2 layers" && err_has "none chat template, context 32"'
	check "builtin sampling defaults" 'err_has "temperature 1, top_p 1, top_k 0 (builtin)"'
	cp out greedy1
	runin '{"prompt":"the quick","max_tokens":8,"temperature":0}
' $S -q
	check "-q: nothing on stderr; greedy twice is the same" 'rc_is 0 && err_empty && [ "$(untimed out)" = "$(untimed greedy1)" ]'

	runin 'garbage
{"prompt":"a","max_tokens":2,"id":"r2"}

{"prompt":"a","max_tokens":-3,"id":5}
{"prompt":"a","max_tokens":1}
' $S -q
	check "malformed lines: error objects, the server goes on, exit 0" 'rc_is 0 && out_lines 4 && json_lines'
	check "malformed JSON: the error names the line" 'line_is 1 "^\{\"error\":\"invalid JSON at column [0-9]+: .*\",\"line\":1\}$"'
	check "the request id comes back first" 'line_is 2 "^\{\"id\":\"r2\",$ANSWER"'
	check "blank lines are skipped; a bad field is named" 'line_is 3 "^\{\"id\":5,\"error\":\"'"'"'max_tokens'"'"': expected an integer >= 0, found -3\",\"line\":4\}$"'
	check "max_tokens 1: one token" 'line_is 4 "\"tokens\":1,"'

	runin '{"prompt":"a","max_tokens":2}
{"oops":1}
{"prompt":"a","max_tokens":2}
' $S -q --strict
	check "--strict: exit 1 at the first bad line" 'rc_is 1 && out_lines 2 && line_is 2 "^\{\"error\":\"unknown key" && err_one_line "line 2: unknown key '"'"'oops'"'"'"'

	runin '' $S -q
	check "empty input: no output, exit 0" 'rc_is 0 && out_empty && err_empty'

	run "$TRAIN" --data text.txt --hidden 32 --layers 2 --batch 4 --seq 32 --steps 10 \
		--warmup 5 --eval-every 0 --threads 2 --seed 7 --mixer mamba2 --out ckm -q
	runin '{"prompt":"the quick","max_tokens":8,"temperature":0}
' $SERVE -m ckm --threads 2 -q
	check "a Mamba-2 checkpoint: served through its layers' states" 'rc_is 0 && out_lines 1 && line_is 1 "^{$ANSWER" && out_has "\"tokens\":8,"'

	runin '{"prompt":"the ","max_tokens":6,"temperature":0}
' $S -q --stream
	check "--stream: pieces, then the answer" 'rc_is 0 && json_lines && [ "$(wc -l <out)" -ge 2 ] && grep -qE "^\{\"token\":\".*\",\"token_id\":[0-9]+\}$" out && line_is \$ "^{$ANSWER"'
	runin '{"prompt":"the ","max_tokens":6,"temperature":0,"stream":false}
' $S -q --stream
	check "\"stream\": false overrides --stream" 'rc_is 0 && out_lines 1 && line_is 1 "^{$ANSWER"'

	runin '{"prompt":"the ","max_tokens":12,"seed":42}
{"prompt":"the ","max_tokens":12,"seed":42}
' $S -q
	check "the same seed, the same text" '[ "$(sed -n 1p out | untimed -)" = "$(sed -n 2p out | untimed -)" ]'
	runin '{"prompt":"the ","max_tokens":12}
{"prompt":"the ","max_tokens":12}
' $S -q --seed 9
	cp out seed9
	runin '{"prompt":"the ","max_tokens":12}
{"prompt":"the ","max_tokens":12}
' $S -q --seed 9
	check "--seed: a session is reproducible" '[ "$(untimed out)" = "$(untimed seed9)" ] && [ "$(sed -n 1p out | untimed -)" != "$(sed -n 2p out | untimed -)" ]'

	runin '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}
' $S -q
	check "a chat without a template: an error naming --plain" 'rc_is 0 && out_has "\"error\":\"cannot render messages: the model has no chat template (--plain prompts chats without a template)\""'
	runin '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}
' $S --plain
	check "--plain: a warning, and the chat as plain text" 'rc_is 0 && line_is 1 "^{$ANSWER" && err_has "warning:" && err_has "plain text" && out_has "\"prompt_tokens\":19,"'

	# a frame of ids (8-byte header length, JSON header, data): "abc", I32
	h='{"ids":{"dtype":"I32","shape":[3],"data_offsets":[0,12]}}     '
	printf "\\$(printf %03o ${#h})\\000\\000\\000\\000\\000\\000\\000%s" "$h" >ids.st
	printf 'a\000\000\000b\000\000\000c\000\000\000' >>ids.st
	run "$SERVE" -m ck -q --logits ids.st -o logits.st
	check "--logits: a frame of ids and logits" 'rc_is 0 && err_empty && [ -s logits.st ]'
	if [ -x "$TSR" ]; then
		run "$TSR" info logits.st
		check "--logits: ids [3] I32, logits [3,259] F32, kind logits" 'rc_is 0 && out_has "kind=logits" && grep -qE "ids +I32 +\[3\]" out && grep -qE "logits +F32 +\[3,259\]" out'
	fi
	run "$SERVE" -m ck -q --logits ids.st
	check "--logits: the same frame on standard output" 'rc_is 0 && cmp -s out logits.st'
	runin '' "$SERVE" -m ck -q --logits junk.gguf
	check "--logits: input that is not frames: exit 1, one line" 'rc_is 1 && err_one_line "junk.gguf"'

	if command -v script >/dev/null 2>&1; then
		printf 'hello\n/reset\n/what\nthe\n' | script -qec "$S --plain --max-tokens 3 --temperature 0" /dev/null >out 2>&1
		rc=$?
		check "a terminal: a chat with prompts, /reset, unknown commands" 'rc_is 0 && grep -q "> " out && grep -q "history cleared" out && grep -q "unknown command '"'"'/what'"'"'" out && [ "$(grep -c "\[3 tokens" out)" -eq 2 ]'
	else
		skip "interactive chat" "no script(1)"
	fi
fi

# --- SmolLM2-135M-Instruct ---
if [ ! -r "$MODEL" ]; then
	skip "SmolLM2 answers Paris" "$MODEL not found (scripts/get-model.sh smollm2-135m-instruct)"
else
	echo '{"messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0}' |
		"$SERVE" -m "$MODEL" >out 2>err
	rc=$?
	check "SmolLM2: the capital of France is Paris" 'rc_is 0 && out_lines 1 && line_is 1 "^{$ANSWER" && out_has "Paris" && out_has "\"finish_reason\":\"stop\""'
	echo "# $(cat out)"
	cp out paris
	if [ -x "$TSR" ]; then
		run "$TSR" convert "$MODEL" -o hf --dtype bf16 -q
		check "tsr convert: a Hugging Face directory" 'rc_is 0 && [ -s hf/model.safetensors ] && [ -s hf/tokenizer.json ]'
		echo '{"messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":12}' |
			"$SERVE" -m hf >out 2>err
		rc=$?
		check "SmolLM2 converted (bf16) answers Paris too" 'rc_is 0 && out_has "Paris" && err_has "hf model, 30 layers"'
	fi
fi

echo "1..$n"
exit $failed
