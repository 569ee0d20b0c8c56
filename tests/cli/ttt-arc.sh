#!/bin/sh
# ttt-arc.sh: the ttt-arc program from the shell: check, format and score on
# the hand-made tasks of tests/fixtures/arc (a folder of two tasks, the same
# as Kaggle's challenges and solutions, a submission solving one task and one
# of the other's two test inputs, and a folder of bad files); pretrain, ttt
# and predict with a tiny new model on the CPU (resumes, files, the
# submission that score reads, errors); then the ARC-AGI-1 evaluation set
# under $LMK_DATA when it is there.
# Prints TAP-like "ok N - ..." lines; exit 0 pass, 1 fail, 77 skip.
set -u
ROOT=${LMK_ROOT:-$PWD}
BIN=${LMK_BIN:-$ROOT/build/bin}/ttt-arc
[ -x "$BIN" ] || { echo "ttt-arc.sh: no program $BIN" >&2; exit 77; }
FX=$ROOT/tests/fixtures/arc
DATA=${LMK_DATA:-$ROOT/../shared/data}/arc
T=$(mktemp -d "${TMPDIR:-/tmp}/ttt-arc-test.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
cd "$T" || exit 1

PROG=ttt-arc
. "$ROOT/tests/tap.sh"

# ---- usage ----
run "$BIN" -h
check "-h: the usage on stdout" 'rc_is 0 && err_empty && out_has "usage: ttt-arc COMMAND" && out_has "  score SUBMISSION SOLUTIONS"'
run "$BIN" help
check "help: the same" 'rc_is 0 && out_has "usage: ttt-arc COMMAND"'
run "$BIN" --version
check "--version" 'rc_is 0 && out_has "ttt-arc (lmk) "'
run "$BIN"
check "no command: usage error" 'rc_is 2 && out_empty && err_has "ttt-arc: missing command"'
run "$BIN" frobnicate
check "unknown command: usage error" 'rc_is 2 && err_has "unknown command '\''frobnicate'\''"'
run "$BIN" check
check "check without TASKS: usage error" 'rc_is 2 && err_has "'\''check'\'' needs TASKS"'
run "$BIN" score "$FX/submission.json"
check "score with one operand: usage error" 'rc_is 2 && err_has "needs SUBMISSION and SOLUTIONS"'
run "$BIN" format "$FX/tasks" "$FX/tasks"
check "format with two operands: usage error" 'rc_is 2 && err_has "too many arguments for '\''format'\''"'
run "$BIN" check --loo "$FX/tasks"
check "an option the command does not take: usage error" 'rc_is 2 && err_has "option '\''--loo'\'' does not apply to '\''check'\''"'
run "$BIN" format --augment=x "$FX/tasks"
check "a bad number: usage error" 'rc_is 2 && err_has "option '\''--augment'\'' needs a whole number"'
run "$BIN" format --bogus "$FX/tasks"
check "an unknown option: usage error" 'rc_is 2 && err_has "unknown option '\''--bogus'\''"'

# ---- check ----
run "$BIN" check "$FX/tasks" "$FX/challenges.json" "$FX/solutions.json"
check "check: good tasks in the three layouts" 'rc_is 0 && err_empty && out_is "$FX/tasks: 2 tasks, 0 bad
$FX/challenges.json: 2 tasks, 0 bad
$FX/solutions.json: 2 tasks, 0 bad"'
run "$BIN" check -q "$FX/tasks"
check "check -q: nothing to say" 'rc_is 0 && out_empty && err_empty'
run "$BIN" check "$FX/bad/ragged.json"
check "check: a ragged grid, one line naming file, task and place" \
	'rc_is 1 && err_one_line "bad/ragged.json: task ragged: train[0].input row 1: expected 2 cells, found 1" && out_has "1 tasks, 1 bad"'
run "$BIN" check "$FX/bad/colour.json"
check "check: a colour out of range" 'rc_is 1 && err_one_line "cell 1: expected a colour 0..9, found 10"'
run "$BIN" check "$FX/bad/syntax.json"
check "check: not JSON" 'rc_is 1 && err_one_line "bad/syntax.json: line 2 column 26:"'
run "$BIN" check "$FX/bad/top.json"
check "check: not an object" 'rc_is 1 && err_one_line "bad/top.json: expected an object, found an array"'
run "$BIN" check "$FX/bad"
check "check: a folder of bad files, one line each" \
	'rc_is 1 && [ "$(wc -l <err)" -eq "$(ls "$FX/bad" | wc -l)" ] && [ "$(grep -c "^ttt-arc: $FX/bad/" err)" -eq "$(wc -l <err)" ] && out_has "20 tasks, 20 bad"'
run "$BIN" check nonexistent.json
check "check: a missing file" 'rc_is 1 && err_one_line "cannot open '\''nonexistent.json'\''"'
printf '{"good": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}, "bad": {"train": [], "test": []}}' >mixed.json
run "$BIN" check mixed.json "$FX/tasks"
check "check: a combined file with one bad task, and a good folder" \
	'rc_is 1 && err_one_line "mixed.json: task bad: '\''train'\'': expected 1 to 64 pairs, found 0" && out_is "mixed.json: 2 tasks, 1 bad
$FX/tasks: 2 tasks, 0 bad"'
runin '{"x": [[[1, 2]]]}' "$BIN" check -
check "check: standard input" 'rc_is 0 && out_is "<stdin>: 1 tasks, 0 bad"'

# ---- format ----
run "$BIN" format --task=aa000001 "$FX/tasks"
printf '# aa000001 test 0\nI\n10\n00\nO\n01\n00\nE\nI\n00\n20\nO\n00\n02\nE\nI\n30\n00\nO\n03\n00\nE\n' >want
check "format: one task, exactly: header, prompt, target" 'rc_is 0 && err_empty && cmp -s want out'
run "$BIN" format --task=aa000001 "$FX/challenges.json"
check "format: challenges have no target" 'rc_is 0 && [ "$(tail -n 1 out)" = "O" ]'
run "$BIN" format --task=aa000001 --solutions="$FX/solutions.json" "$FX/challenges.json"
check "format --solutions: the target again" 'rc_is 0 && cmp -s want out'
run "$BIN" format "$FX/tasks"
check "format: every test input" 'rc_is 0 && [ "$(grep -c "^#" out)" -eq 3 ] && out_has "# bb000002 test 1"'
run "$BIN" format --loo "$FX/tasks"
check "format --loo: one text per demonstration" \
	'rc_is 0 && [ "$(grep -c "^#" out)" -eq 5 ] && out_has "# aa000001/1 test 0" && out_has "# bb000002/2 test 0"'
run "$BIN" format --loo --augment=4 --seed=7 -o a.txt "$FX/tasks"
check "format --augment: 5 texts per leave-one-out task, to a file" \
	'rc_is 0 && out_empty && [ "$(grep -c "^#" a.txt)" -eq 25 ] && grep -q "^# bb000002/0 test 0 [a-z0-9-]* colours [0-9]\{10\} order [0-9],[0-9]$" a.txt'
run "$BIN" format --loo --augment=4 --seed=7 "$FX/tasks"
check "format --augment: the same seed, the same text" 'rc_is 0 && cmp -s a.txt out'
run "$BIN" format --loo --augment=4 --seed=8 "$FX/tasks"
check "format --augment: another seed, another text" 'rc_is 0 && ! cmp -s a.txt out'
run "$BIN" format --augment=20 --keep-zero --task=aa000001 "$FX/tasks"
check "format --keep-zero: colour 0 stays" \
	'rc_is 0 && [ "$(grep -c " colours 0" out)" -eq 20 ]'
run "$BIN" format --json --task=bb000002 "$FX/tasks"
if command -v jq >/dev/null 2>&1; then
	check "format --json: one object per text" 'rc_is 0 && [ "$(wc -l <out)" -eq 2 ] &&
		[ "$(jq -r ".target" out | head -5 | tr "\n" ,)" = "7,8,E,,9," ] && [ "$(jq -c ".transform" out | head -1)" = null ]'
else
	check "format --json: one object per text" 'rc_is 0 && [ "$(wc -l <out)" -eq 2 ] && out_has "\"target\":\"7\\n8\\nE\\n\""'
fi
printf '{"one": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}' >one.json
run "$BIN" format --loo one.json
check "format --loo: one demonstration is left out with a warning" \
	'rc_is 0 && out_empty && err_one_line "task one: leave-one-out needs 2 demonstrations"'
run "$BIN" format --task=nope "$FX/tasks"
check "format: an unknown --task" 'rc_is 1 && err_one_line "no task '\''nope'\''"'
run "$BIN" format "$FX/bad/real.json"
check "format: a bad task file" 'rc_is 1 && err_one_line "task real: test[0].input row 0 cell 0: expected a colour 0..9, found 1.5"'
run "$BIN" format "$FX/solutions.json"
check "format: solutions alone are no tasks to show" 'rc_is 1 && err_one_line "has no demonstrations"'
printf '{"aa000001": [[[1]]]}' >short.json
run "$BIN" format --solutions=short.json "$FX/challenges.json"
check "format: solutions that do not cover the tasks" 'rc_is 1 && err_one_line "short.json: task bb000002: no solution"'

# ---- score ----
run "$BIN" score "$FX/submission.json" "$FX/tasks"
check "score: a JSON line per task, the summary on stderr" 'rc_is 0 && out_is "{\"task\":\"aa000001\",\"tests\":1,\"tests_solved\":1,\"solved\":true,\"missing\":false,\"tests_sized\":1,\"cells\":1.0}
{\"task\":\"bb000002\",\"tests\":2,\"tests_solved\":1,\"solved\":false,\"missing\":false,\"tests_sized\":1,\"cells\":0.5}" &&
	err_is "ttt-arc: 2 tasks, 1 solved (50.00%); 3 test inputs, 2 solved (66.67%); score 0.7500; 0 tasks missing; 2 test inputs of the right size, 66.67% of cells right"'
cp out dir.out
run "$BIN" score "$FX/submission.json" "$FX/solutions.json"
check "score: against the solutions file, the same" 'rc_is 0 && cmp -s dir.out out'
run "$BIN" score --solutions="$FX/solutions.json" "$FX/submission.json" "$FX/challenges.json"
check "score: against challenges with --solutions, the same" 'rc_is 0 && cmp -s dir.out out'
run "$BIN" score --json -o s.json "$FX/submission.json" "$FX/tasks"
check "score --json: the summary as a last line" 'rc_is 0 && err_empty && out_empty &&
	[ "$(tail -n 1 s.json)" = "{\"tasks\":2,\"tasks_solved\":1,\"tests\":3,\"tests_solved\":2,\"score\":0.75,\"missing\":0,\"extra\":0,\"tests_sized\":2,\"cells\":0.66666666666666663}" ]'
run "$BIN" score -q "$FX/submission.json" "$FX/tasks"
check "score -q: no summary" 'rc_is 0 && err_empty && out_lines 2'
cat "$FX/submission.json" | { "$BIN" score - "$FX/tasks" >out 2>err; echo $? >status; }
rc=$(cat status)
check "score: the submission from standard input" 'rc_is 0 && cmp -s dir.out out'
printf '{"bb000002": [{"attempt_1": [[7],[8]]}], "zz": [{"attempt_1": [[1]]}]}' >partial.json
run "$BIN" score partial.json "$FX/tasks"
check "score: missing tasks and inputs are wrong, unknown ones warned about" \
	'rc_is 0 && out_has "{\"task\":\"aa000001\",\"tests\":1,\"tests_solved\":0,\"solved\":false,\"missing\":true,\"tests_sized\":0,\"cells\":0.0}" &&
	err_has "ttt-arc: warning: partial.json: 1 tasks that" && err_has "score 0.2500; 1 tasks missing"'
run "$BIN" score "$FX/submission.json" "$FX/challenges.json"
check "score: challenges without outputs" 'rc_is 1 && err_one_line "task aa000001: test[0]: no output to score against (give the outputs with --solutions)"'
printf '{"aa000001": [{"attempt_1": [[1, 2], [3]]}]}' >badsub.json
run "$BIN" score badsub.json "$FX/tasks"
check "score: a bad submission" 'rc_is 1 && err_one_line "badsub.json: task aa000001: test[0].attempt_1 row 1: expected 2 cells, found 1"'
printf '{"aa000001": [' >cut.json
run "$BIN" score cut.json "$FX/tasks"
check "score: a cut-off submission" 'rc_is 1 && err_one_line "cut.json: line 1 column"'
run "$BIN" score "$FX/submission.json" "$FX/bad"
check "score: bad SOLUTIONS" 'rc_is 1 && err_one_line "colour.json: task colour"'
run "$BIN" score - -
check "score: both from standard input is a usage error" 'rc_is 2'

# ---- pretrain, ttt, predict: a tiny new model on the fixtures ----
# Two threads and short examples keep each case to a few seconds.
TINY="--hidden=32 --layers=2 --heads=2 --max-len=512 --threads=2"
export OMP_WAIT_POLICY=passive
run "$BIN" pretrain --out=m "$FX/tasks" $TINY --steps=6 --batch=4 --save-every=3 --metrics=m.jsonl
check "pretrain: a few steps write the model, its tokenizer and the state" 'rc_is 0 && out_empty &&
	[ -s m/config.json ] && [ -s m/model.safetensors ] && [ -s m/ttt-arc-state.safetensors ] &&
	grep -q "\"tokenizer\": \"byte\"" m/ttt-arc.json && [ "$(wc -l <m.jsonl)" -eq 6 ] &&
	grep -q "^{\"step\":6,\"epoch\":0,\"loss\":[0-9.]*," m.jsonl && err_has "step 6/6: loss"'
run "$BIN" pretrain --out=half "$FX/tasks" $TINY --steps=6 --batch=4 --time-limit=0.000001
check "pretrain --time-limit: one step, saved, exit 75" 'rc_is 75 && err_has "stopped by --time-limit after step 1; continue with --resume" && [ -s half/model.safetensors ]'
run "$BIN" pretrain --resume --out=half --threads=2
check "pretrain --resume: continues to the saved --steps" 'rc_is 0 && err_has "step 1 of 6" && err_has "step 6/6"'
check "pretrain --resume: the same model as a run in one go" 'cmp -s m/model.safetensors half/model.safetensors'
run "$BIN" pretrain --resume --out=half
check "pretrain --resume of a finished run: nothing to do" 'rc_is 0 && err_one_line "half is at step 6 of 6; nothing to do"'
run "$BIN" pretrain --out=m "$FX/tasks" $TINY
check "pretrain: an --out that holds a run" 'rc_is 1 && err_one_line "'\''m'\'' already holds a run"'
run "$BIN" pretrain --out=x "$FX/bad/ragged.json" $TINY
check "pretrain: bad TASKS" 'rc_is 1 && err_one_line "expected 2 cells, found 1"'
run "$BIN" pretrain --out=x "$FX/tasks" --hidden=32 --heads=2 --max-len=16
check "pretrain: every example too long" 'rc_is 1 && err_one_line "no example of 16 tokens or fewer"'
run "$BIN" pretrain --out=x --init=nothing "$FX/tasks"
check "pretrain --init: a missing model" 'rc_is 1 && err_one_line "'\''nothing'\'' is neither a folder nor a GGUF file"'
run "$BIN" pretrain "$FX/tasks"
check "pretrain without --out: usage error" 'rc_is 2 && err_has "'\''pretrain'\'' needs --out DIR"'
run "$BIN" pretrain --out=x
check "pretrain without TASKS: usage error" 'rc_is 2 && err_has "'\''pretrain'\'' needs TASKS"'
run "$BIN" pretrain --out=m --resume "$FX/tasks"
check "pretrain --resume with TASKS: usage error" 'rc_is 2 && err_has "takes no TASKS"'
run "$BIN" pretrain --out=m --resume --hidden=64
check "pretrain --resume with a shape: usage error" 'rc_is 2 && err_has "option '\''--hidden'\'' cannot be used with --resume"'
run "$BIN" pretrain --out=x --adapter=lora:r=4 "$FX/tasks"
check "pretrain --adapter without --init: usage error" 'rc_is 2 && err_has "--adapter needs --init MODEL"'
run "$BIN" pretrain --out=x --loss=most "$FX/tasks"
check "pretrain --loss: a bad value is a usage error" 'rc_is 2 && err_has "option '\''--loss'\'' needs target, outputs or all, not '\''most'\''"'
run "$BIN" pretrain --out=x --dtype=bf16 "$FX/tasks"
check "pretrain --dtype=bf16 on the cpu: usage error" 'rc_is 2 && err_has "--dtype bf16 needs --device cuda"'
run "$BIN" pretrain --out=x --adapters=a "$FX/tasks"
check "pretrain --adapters: usage error" 'rc_is 2 && err_has "option '\''--adapters'\'' does not apply to '\''pretrain'\''"'

run "$BIN" ttt "$FX/tasks" --model=m --adapter-out=ad --cap=4 --adapter=lora:r=4,alpha=8,targets=q,v --max-len=512 --threads=2 --metrics=t.jsonl
check "ttt --adapter-out: one PEFT adapter per task" 'rc_is 0 && out_empty &&
	[ -s ad/aa000001/adapter_model.safetensors ] && [ -s ad/bb000002/adapter_config.json ] &&
	grep -q "\"r\": 4" ad/aa000001/adapter_config.json && [ "$(wc -l <t.jsonl)" -eq 2 ] &&
	err_has "task bb000002: 4 examples, 4 steps, loss" && err_has "trained 2 of 2 tasks"'
run "$BIN" ttt "$FX/tasks" --model=m --adapter-out=ad --cap=4 --adapter=lora:r=4,alpha=8,targets=q,v --max-len=512 --threads=2 --resume
check "ttt --resume: the tasks with adapters are kept" 'rc_is 0 && err_one_line "trained 0 of 2 tasks"'
run "$BIN" predict "$FX/tasks" --model=m --adapters=ad -o sub.json --max-len=512 --threads=2 --metrics=p.jsonl
check "predict --adapters: a submission, the loss of the known outputs" 'rc_is 0 && out_empty &&
	err_has "predicted 2 of 2 tasks" && err_has "; loss of the known outputs " &&
	grep -q "^{\"task\":\"aa000001\",\"tokens\":[0-9]*,\"seconds\":[0-9.e-]*,\"target_nll\":[0-9.]*,\"target_tokens\":9}\$" p.jsonl'
run "$BIN" score sub.json "$FX/tasks"
check "predict: score reads the submission" 'rc_is 0 && out_lines 2 && out_has "{\"task\":\"bb000002\",\"tests\":2," && err_has "0 tasks missing"'
run "$BIN" ttt "$FX/tasks" --model=m --predict -o ttt.json --cap=4 --adapter=lora:r=4,alpha=8,targets=q,v --max-len=512 --threads=2 -q
check "ttt --predict: the same submission as ttt, then predict --adapters" 'rc_is 0 && err_empty && cmp -s sub.json ttt.json'
run "$BIN" predict "$FX/tasks" --model=m -o - --max-len=512 --threads=2 --task=aa000001 --per-class=2
check "predict -o -: standard output, one task" 'rc_is 0 && out_lines 1 && out_has "{\"aa000001\":[{\"attempt_1\":"'
run "$BIN" predict "$FX/tasks" --model=m -o part.json --max-len=512 --threads=2 --time-limit=0.000001
check "predict --time-limit: one task done, exit 75" 'rc_is 75 && err_has "predicted 1 of 2 tasks" && out_empty && grep -q aa000001 part.json && ! grep -q bb000002 part.json'
run "$BIN" predict "$FX/tasks" --model=m -o part.json --max-len=512 --threads=2 --resume
check "predict --resume: the rest" 'rc_is 0 && grep -q aa000001 part.json && grep -q bb000002 part.json'
run "$BIN" predict "$FX/tasks" --model=nothing -o s.json
check "predict: a missing model" 'rc_is 1 && err_one_line "'\''nothing'\'' is neither a folder nor a GGUF file"'
run "$BIN" predict "$FX/tasks" --model=nothing -o s.json --device=cuda:7
check "predict --device=cuda:7: refused first, with one line, where there is none" 'rc_is 1 && err_one_line "cuda"'
run "$BIN" predict "$FX/tasks" --model=m -o - --resume
check "predict --resume to standard output: usage error" 'rc_is 2 && err_has "--resume needs -o FILE"'
run "$BIN" predict "$FX/tasks" --model=m
check "predict without -o: usage error" 'rc_is 2 && err_has "'\''predict'\'' needs -o SUBMISSION"'
run "$BIN" predict "$FX/tasks" -o s.json
check "predict without --model: usage error" 'rc_is 2 && err_has "'\''predict'\'' needs --model MODEL"'
run "$BIN" ttt "$FX/tasks" --model=m
check "ttt keeping nothing: usage error" 'rc_is 2 && err_has "needs --adapter-out DIR or --predict"'
run "$BIN" ttt "$FX/tasks" --model=m --predict --epochs=0
check "ttt --epochs=0: usage error" 'rc_is 2 && err_has "option '\''--epochs'\''"'
run "$BIN" pretrain "$FX/tasks" --out=g --group=-1
check "pretrain --group=-1: usage error naming the option" 'rc_is 2 && err_has "option '\''--group'\'' must be between 0 and"'
run "$BIN" ttt "$FX/tasks" --model=m --predict -o g.json --group=4
check "ttt --group: usage error (pretrain only)" 'rc_is 2 && err_has "option '\''--group'\'' does not apply to '\''ttt'\''"'
run "$BIN" predict "$FX/tasks" --model=m -o s.json --epochs=2
check "predict --epochs: usage error" 'rc_is 2 && err_has "option '\''--epochs'\'' does not apply to '\''predict'\''"'

# ---- the real data ----
if [ -d "$DATA/evaluation" ]; then
	run "$BIN" check "$DATA/training" "$DATA/evaluation"
	check "check: ARC-AGI-1 training and evaluation" 'rc_is 0 && err_empty && out_is "$DATA/training: 400 tasks, 0 bad
$DATA/evaluation: 200 tasks, 0 bad"'
	run "$BIN" format --loo --augment=2 "$DATA/evaluation"
	check "format --loo --augment=2 of the evaluation set" 'rc_is 0 && err_empty && [ "$(grep -c "^#" out)" -eq $((676 * 3)) ]'
else
	skip "check: ARC-AGI-1 training and evaluation" "no $DATA"
	skip "format --loo --augment=2 of the evaluation set" "no $DATA"
fi
exit $failed
