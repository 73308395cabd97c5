#!/usr/bin/env bash
# End-to-end tests of the loqt program: train, resume, accumulation, eval, export, generate, --help,
# and bad input (each must give one "loqt..." line on stderr and a non-zero exit, never a crash).
# Runs from the repository root on a tiny synthetic corpus it writes itself (no network) and ends
# with "N passed, N failed" like the C test programs, so tests/run_tests.sh can run it as is.
#   BUILD=build bash tests/test_cli.sh   (LOQT=path/to/loqt overrides $BUILD/loqt; relative paths
#   are taken from the repository root)
# A SANITIZE=1 build works too: any sanitizer report (leaks included) counts as a crash.
# KEEP=1 keeps the scratch directory for inspection.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh
TOK=data/llama.tok

# ---- helpers ---------------------------------------------------------------------------------
# run CMD...: stdout -> $T/out, stderr -> $T/err, exit status -> $RC
run() {
    "$@" >"$T/out" 2>"$T/err"
    RC=$?
}
# Empty if the last run did not crash, else why.
crash_reason() {
    if [ "$RC" -ge 128 ]; then echo "killed by a signal (exit $RC)"; return; fi
    if grep -qE 'Sanitizer|runtime error:|Segmentation|core dumped|Aborted|double free|malloc\(\)' "$T/err"; then
        echo "crash report on stderr: $(grep -m1 -E 'Sanitizer|runtime error:|Segmentation|core dumped|Aborted|double free|malloc\(\)' "$T/err")"
    fi
}
# expect_error NAME REGEX CMD...: non-zero exit below 128, exactly one stderr line that starts
# with "loqt" and matches REGEX (case-insensitive, extended), no crash.
expect_error() {
    local name=$1 re=$2
    shift 2
    run "$@"
    local why n first
    why=$(crash_reason)
    n=$(wc -l <"$T/err")
    first=$(head -n 1 "$T/err")
    if [ -n "$why" ]; then bad "$name" "$why"
    elif [ "$RC" -eq 0 ]; then bad "$name" "exit status 0, expected an error"
    elif [ "$n" -ne 1 ]; then bad "$name" "$n lines on stderr, expected 1: $(head -n 3 "$T/err" | tr '\n' '|')"
    elif [[ "$first" != loqt* ]]; then bad "$name" "stderr line does not start with 'loqt': $first"
    elif ! grep -qiE "$re" "$T/err"; then bad "$name" "message lacks /$re/: $first"
    else ok "$name"
    fi
}
# expect_ok NAME CMD...: exit 0 and no crash report
expect_ok() {
    local name=$1
    shift
    run "$@"
    local why
    why=$(crash_reason)
    if [ -n "$why" ]; then bad "$name" "$why"
    elif [ "$RC" -ne 0 ]; then bad "$name" "exit $RC: $(tail -n 2 "$T/err" | tr '\n' '|')"
    else ok "$name"
    fi
}

cat >"$T/check.py" <<'EOF'
# Helpers over metrics.jsonl files; each subcommand prints problems (empty output = fine).
import json, math, re, sys

def lines(path):
    with open(path) as f:
        return [l for l in f.read().split("\n") if l.strip()]

def raw(line, key):  # the number exactly as written
    m = re.search(r'"%s": ([^,}]+)' % key, line)
    return m.group(1) if m else None

cmd, path = sys.argv[1], sys.argv[2]
L = lines(path)
def strict(word):  # JSON has no NaN or Infinity; Python's reader would take them
    raise ValueError("%s is not JSON" % word)

if cmd == "strict":  # strict PATH: every line an object in strict JSON; prints the final line's eval_loss
    for i, l in enumerate(L):
        try:
            o = json.loads(l, parse_constant=strict)
        except Exception as e:
            print("line %d is not JSON (%s): %s" % (i + 1, e, l[:80])); sys.exit()
    print("final eval_loss %s" % json.dumps(o.get("eval_loss", "missing")) if o.get("final") else "no final line")
if cmd == "valid":  # every line a JSON object; steps 1..N in order; eval lines; a final line
    nsteps = int(sys.argv[3])
    objs = []
    for i, l in enumerate(L):
        try:
            o = json.loads(l, parse_constant=strict)
        except Exception as e:
            print("line %d is not JSON (%s): %s" % (i + 1, e, l[:80])); sys.exit()
        if not isinstance(o, dict):
            print("line %d is not an object" % (i + 1)); sys.exit()
        objs.append(o)
    steps = [o for o in objs if "loss" in o]
    if [o["step"] for o in steps] != list(range(1, nsteps + 1)):
        print("step lines are %s, expected 1..%d" % ([o["step"] for o in steps], nsteps))
    for o in steps:
        for k in ("step", "tokens", "loss", "lr", "grad_norm", "step_s", "tokens_per_s", "rss_mib"):
            if not isinstance(o.get(k), (int, float)):
                print("step %s: key %s missing or not a number" % (o.get("step"), k)); break
        if not math.isfinite(o["loss"]):
            print("step %s: loss is not finite" % o["step"])
    evals = [o for o in objs if "eval_loss" in o and not o.get("final")]
    if not evals or any(not isinstance(o.get("eval_ppl"), (int, float)) for o in evals):
        print("no eval line with eval_loss and eval_ppl")
    elif evals[-1]["step"] != nsteps:
        print("last eval line is at step %s, expected %d" % (evals[-1]["step"], nsteps))
    fin = objs[-1] if objs else {}
    if fin.get("final") is not True:
        print("the last line is not the final line")
    elif not isinstance(fin.get("memory"), dict) or not fin["memory"]:
        print("the final line has no memory breakdown")
    elif not any("rss" in k for k in fin["memory"]):
        print("the final memory breakdown has no measured RSS")
elif cmd == "get":  # get PATH STEP KEY: raw value of KEY on the step line STEP (or "first"/"last")
    step, key = sys.argv[3], sys.argv[4]
    rows = [l for l in L if '"loss"' in l]
    if step == "first": rows = rows[:1]
    elif step == "last": rows = rows[-1:]
    else: rows = [l for l in rows if raw(l, "step") == step]
    print(raw(rows[0], key) if rows else "none")
elif cmd == "evals":  # raw eval_loss of every eval line, one a line
    for l in L:
        if '"eval_loss"' in l and '"final"' not in l: print(raw(l, "step"), raw(l, "eval_loss"))
elif cmd == "keep":  # keep PATH MAXSTEP: rewrite PATH keeping step/eval lines with step <= MAXSTEP
    mx = int(sys.argv[3])
    keep = [l for l in L if '"final"' not in l and int(raw(l, "step")) <= mx]
    with open(path, "w") as f:
        f.write("".join(l + "\n" for l in keep))
elif cmd == "steps":  # "step key=value ..." for the step lines, raw values, for string comparison
    keys = sys.argv[3].split(",")
    for l in L:
        if '"loss"' in l:
            print(" ".join("%s=%s" % (k, raw(l, k)) for k in keys))
EOF
metrics() { "$PY" "$T/check.py" "$@"; }

# ---- fixtures: a learnable token stream in shards, a tiny config -----------------------------
"$PY" - "$T" <<'EOF' || { echo "FAIL setup: could not write the fixtures"; echo "0 passed, 1 failed"; exit 1; }
import os, struct, sys
T = sys.argv[1]

def shard(path, toks, vocab=64, count=None, cut=None):
    b = b"LOQTSHRD" + struct.pack("<IIQ", 1, vocab, len(toks) if count is None else count) + bytes(40)
    b += struct.pack("<%dH" % len(toks), *toks)
    with open(path, "wb") as f:
        f.write(b if cut is None else b[:cut])

# A period-15 pattern: a model learns it within a few steps.
pat = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 2, 7, 11]
stream = [pat[i % len(pat)] for i in range(4000)]
val = [pat[(i + 3) % len(pat)] for i in range(1000)]
for d in ("data", "corrupt", "bigvocab", "badtoken", "noval", "badmagic"):
    os.makedirs(os.path.join(T, d))
shard(T + "/data/train_000.bin", stream[:2000])
shard(T + "/data/train_001.bin", stream[2000:])
shard(T + "/data/val_000.bin", val)
for d in ("corrupt", "bigvocab", "badtoken", "badmagic"):
    shard(T + "/%s/val_000.bin" % d, val)
shard(T + "/corrupt/train_000.bin", stream[:2000], cut=1001)       # truncated mid-token
shard(T + "/bigvocab/train_000.bin", stream, vocab=100)             # header vocab > model's 64
shard(T + "/badtoken/train_000.bin", stream[:100] + [70] + stream)  # id 70 >= vocab 64
shard(T + "/noval/train_000.bin", stream)
with open(T + "/badmagic/train_000.bin", "wb") as f:
    f.write(b"NOTSHARD" + bytes(56) + bytes(200))

cfg = '"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, ' \
      '"vocab_size": 64, "max_position_embeddings": 64'
open(T + "/tiny.json", "w").write('{"hidden_size": 32, %s}\n' % cfg)
open(T + "/heads.json", "w").write('{"hidden_size": 30, %s}\n' % cfg)
open(T + "/malformed.json", "w").write('{"hidden_size": 32,\n')
open(T + "/v32k.json", "w").write(
    '{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, '
    '"vocab_size": 32000, "max_position_embeddings": 64}\n')
open(T + "/garbage.tok", "w").write("this is not a tokenizer\n")
EOF

D=$T/data
COMMON=(--model "$T/tiny.json" --data "$D" --batch-size 2 --max-length 32 --lr 1e-2 --threads 1
        --num-eval-tokens 256)
TRAIN12=("${COMMON[@]}" --num-training-steps 12 --save-every 6)

# ---- 1. a training run and what it writes ----------------------------------------------------
A=$T/runA
run "$LOQT" train "${TRAIN12[@]}" --output-dir "$A"
why=$(crash_reason)
if [ -z "$why" ] && [ "$RC" -eq 0 ]; then ok train_runs; else bad train_runs "exit $RC $why: $(tail -n 2 "$T/err" | tr '\n' '|')"; fi
if [ -f "$A/metrics.jsonl" ]; then
    probs=$(metrics valid "$A/metrics.jsonl" 12)
    check train_metrics_jsonl "$probs" test -z "$probs"
else
    bad train_metrics_jsonl "no $A/metrics.jsonl"
fi
missing=""
for s in 00000006 00000012; do
    for f in config.json model.safetensors trainer_state.safetensors trainer_state.json; do
        [ -s "$A/checkpoints/step-$s/$f" ] || missing="$missing step-$s/$f"
    done
done
check train_checkpoint_files "missing or empty:$missing" test -z "$missing"
tmps=$(find "$A" -name '*.tmp*' | head -n 3)
check train_no_tmp_left "left behind: $tmps" test -z "$tmps"
check train_progress_lines "stdout lacks 'step 12/12' or 'saved checkpoint'" \
    bash -c "grep -q 'step 12/12' '$T/out' && grep -q 'saved checkpoint' '$T/out'"
# --num-eval-tokens 0: no evaluation, and a metrics.jsonl that is still strict JSON (its final
# line's eval_loss is null, never NaN)
run "$LOQT" train "${COMMON[@]}" --num-eval-tokens 0 --num-training-steps 2 --output-dir "$T/noeval"
probs=$(metrics strict "$T/noeval/metrics.jsonl")
check train_no_eval_metrics_json "exit $RC, $probs, stdout: $(grep -c '^eval' "$T/out") eval lines" \
    bash -c "[ $RC -eq 0 ] && [ '$probs' = 'final eval_loss null' ] && ! grep -q '^eval' '$T/out' && grep -q 'no held-out evaluation' '$T/out'"

# ---- 2. the loss falls on the learnable pattern ----------------------------------------------
first=$(metrics get "$A/metrics.jsonl" first loss 2>/dev/null)
last=$(metrics get "$A/metrics.jsonl" last loss 2>/dev/null)
# ln 64 = 4.16 at the start; 12 steps at lr 1e-2 reach about 2.2 (margin: 1.0 nats)
check loss_decreases "first step loss $first, last $last: expected a drop of more than 1.0" \
    "$PY" -c "import sys; sys.exit(not (float('$last') < float('$first') - 1.0))"
ev=$(metrics evals "$A/metrics.jsonl" 2>/dev/null | tr '\n' ' ')
check eval_loss_decreases "eval lines (step loss): $ev; expected step 0 and 12, a drop of more than 1.0" \
    "$PY" -c "
e = '$ev'.split(); import sys
sys.exit(not (len(e) == 4 and e[0] == '0' and e[2] == '12' and float(e[3]) < float(e[1]) - 1.0))"

# ---- 3. resume repeats the uninterrupted run exactly -----------------------------------------
B=$T/runB
run "$LOQT" train "${TRAIN12[@]}" --output-dir "$B"
if [ "$RC" -ne 0 ] || [ ! -d "$B/checkpoints/step-00000006" ]; then
    bad resume_latest "the second run failed (exit $RC)"
else
    rm -rf "$B/checkpoints/step-00000012"
    metrics keep "$B/metrics.jsonl" 6
    # a half-written checkpoint of a crashed run must be ignored by --resume latest
    mkdir -p "$B/checkpoints/step-00000099.tmp" && cp "$B/checkpoints/step-00000006/"* "$B/checkpoints/step-00000099.tmp/"
    run "$LOQT" train "${TRAIN12[@]}" --output-dir "$B" --resume latest
    if [ "$RC" -ne 0 ]; then
        bad resume_latest "exit $RC: $(tail -n 1 "$T/err")"
    else
        check resume_latest "stdout does not say it resumed from step-00000006 at step 6" \
            grep -q 'resumed from .*step-00000006 at step 6' "$T/out"
    fi
    keys=step,tokens,loss,lr,grad_norm
    metrics steps "$A/metrics.jsonl" $keys >"$T/a.steps"
    metrics steps "$B/metrics.jsonl" $keys >"$T/b.steps"
    check resume_same_losses "steps 1..12 differ from the uninterrupted run: $(diff "$T/a.steps" "$T/b.steps" | head -n 4 | tr '\n' '|')" \
        cmp -s "$T/a.steps" "$T/b.steps"
    check resume_same_weights "model.safetensors or trainer_state.safetensors of step 12 differ" \
        bash -c "cmp -s '$A/checkpoints/step-00000012/model.safetensors' '$B/checkpoints/step-00000012/model.safetensors' &&
                 cmp -s '$A/checkpoints/step-00000012/trainer_state.safetensors' '$B/checkpoints/step-00000012/trainer_state.safetensors'"
    # an explicit checkpoint path, into a fresh output directory
    C=$T/runC
    run "$LOQT" train "${TRAIN12[@]}" --output-dir "$C" --resume "$A/checkpoints/step-00000006"
    metrics steps "$C/metrics.jsonl" $keys >"$T/c.steps" 2>/dev/null
    check resume_explicit_path "exit $RC, or steps 7..12 differ: $(diff <(tail -n 6 "$T/a.steps") "$T/c.steps" | head -n 4 | tr '\n' '|')" \
        bash -c "[ $RC -eq 0 ] && [ \$(wc -l <'$T/c.steps') -eq 6 ] && tail -n 6 '$T/a.steps' | cmp -s - '$T/c.steps'"
fi

# ---- 3a. resume with other options: a changed step count is noted, other changes refused ----
expect_error resume_changed_lr 'allow-changes' "$LOQT" train "${TRAIN12[@]}" --lr 5e-3 --output-dir "$T/chg" --resume "$A/checkpoints/step-00000006"
expect_error resume_changed_seed 'seed' "$LOQT" train "${TRAIN12[@]}" --seed 5 --output-dir "$T/chg" --resume "$A/checkpoints/step-00000006"
run "$LOQT" train "${TRAIN12[@]}" --lr 5e-3 --allow-changes --output-dir "$T/chg2" --resume "$A/checkpoints/step-00000006"
check resume_allow_changes "exit $RC or the change is not reported: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 0 ] && grep -q 'changed options (--allow-changes): --lr 0.01 -> 0.005' '$T/out'"
run "$LOQT" train "${COMMON[@]}" --num-training-steps 14 --save-every 6 --output-dir "$T/chg3" --resume "$A/checkpoints/step-00000006"
check resume_more_steps "exit $RC or the new step count is not noted: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 0 ] && grep -q 'resume: --num-training-steps 12 -> 14' '$T/out'"

# ---- 3b. --dtype bf16: resume repeats the uninterrupted run exactly; the dtype is part of the run
E=$T/runE
run "$LOQT" train "${TRAIN12[@]}" --dtype bf16 --output-dir "$E"
if [ "$RC" -ne 0 ] || [ ! -d "$E/checkpoints/step-00000006" ]; then
    bad bf16_train "exit $RC: $(tail -n 2 "$T/err" | tr '\n' '|')"
else
    check bf16_header "the train header does not say how bf16 GEMMs run" grep -q 'bf16 GEMM: \(native\|emulated\)' "$T/out"
    metrics steps "$E/metrics.jsonl" step,tokens,loss,lr,grad_norm >"$T/e.steps"
    # bf16 changes the numbers (the GEMMs really round), but stays close to fp32 (band 2e-2 of the loss)
    check bf16_near_fp32 "bf16 losses equal fp32's, or are not within 2e-2 relative: $(paste "$T/a.steps" "$T/e.steps" | head -n 3 | tr '\n' '|')" \
        "$PY" -c "
import json, sys
a = [json.loads(l) for l in open('$A/metrics.jsonl') if '\"loss\"' in l and 'final' not in l]
e = [json.loads(l) for l in open('$E/metrics.jsonl') if '\"loss\"' in l and 'final' not in l]
sys.exit(not (len(a) == len(e) == 12 and a != e and all(abs(x['loss'] - y['loss']) <= 2e-2 * x['loss'] for x, y in zip(a, e))))"
    F=$T/runF
    run "$LOQT" train "${TRAIN12[@]}" --dtype bf16 --output-dir "$F" --resume "$E/checkpoints/step-00000006"
    metrics steps "$F/metrics.jsonl" step,tokens,loss,lr,grad_norm >"$T/f.steps" 2>/dev/null
    check bf16_resume_same_losses "exit $RC, or steps 7..12 differ: $(diff <(tail -n 6 "$T/e.steps") "$T/f.steps" | head -n 4 | tr '\n' '|')" \
        bash -c "[ $RC -eq 0 ] && [ \$(wc -l <'$T/f.steps') -eq 6 ] && tail -n 6 '$T/e.steps' | cmp -s - '$T/f.steps'"
    check bf16_resume_same_weights "model.safetensors of step 12 differs from the uninterrupted bf16 run" \
        cmp -s "$E/checkpoints/step-00000012/model.safetensors" "$F/checkpoints/step-00000012/model.safetensors"
    expect_error bf16_resume_as_fp32 'dtype bf16 -> fp32' "$LOQT" train "${TRAIN12[@]}" --output-dir "$T/chg4" --resume "$E/checkpoints/step-00000006"
fi
expect_error bf16_bad_dtype 'dtype must be one of fp32.bf16, got .fp16.' "$LOQT" train "${TRAIN12[@]}" --dtype fp16 --output-dir "$T/chg5"

# data made with another tokenizer than the one the model was trained on: refused by eval and
# by --resume (the manifest's tokenizer hash is recorded in the checkpoint)
mkdir -p "$T/dtokA" "$T/dtokB"
cp "$D"/*.bin "$T/dtokA"/ && cp "$D"/*.bin "$T/dtokB"/
echo '{"format": "loqt-token-shards", "tokenizer_hash": "1111111111111111"}' >"$T/dtokA/manifest.json"
echo '{"format": "loqt-token-shards", "tokenizer_hash": "2222222222222222"}' >"$T/dtokB/manifest.json"
run "$LOQT" train "${COMMON[@]}" --data "$T/dtokA" --num-training-steps 2 --output-dir "$T/tokrun"
check tokenizer_hash_recorded "exit $RC: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 0 ] && grep -q 1111111111111111 '$T/tokrun/checkpoints/step-00000002/trainer_state.json'"
expect_error eval_other_tokenizer 'another tokenizer' "$LOQT" eval --checkpoint "$T/tokrun/checkpoints/step-00000002" --data "$T/dtokB" --max-length 32 --threads 1
expect_error resume_other_tokenizer 'tokenizer-hash' "$LOQT" train "${COMMON[@]}" --data "$T/dtokB" --num-training-steps 4 --output-dir "$T/tokrun2" --resume "$T/tokrun/checkpoints/step-00000002"

# ---- 3b. an existing run directory is never reused by accident --------------------------------
sum_before=$(cat "$A/metrics.jsonl" "$A/checkpoints/step-00000012/model.safetensors" | md5sum)
expect_error output_dir_holds_a_run 'holds a run' "$LOQT" train "${COMMON[@]}" --num-training-steps 3 --output-dir "$A"
check output_dir_untouched "the refused run changed $A" \
    bash -c "[ \"\$(cat '$A/metrics.jsonl' '$A/checkpoints/step-00000012/model.safetensors' | md5sum)\" = '$sum_before' ]"
cp -r "$A" "$T/runO"
run "$LOQT" train "${COMMON[@]}" --num-training-steps 3 --output-dir "$T/runO" --overwrite
check output_dir_overwrite "exit $RC, or the old run's checkpoints survived: $(ls "$T/runO/checkpoints" 2>/dev/null | tr '\n' ' ')" \
    bash -c "[ $RC -eq 0 ] && [ ! -d '$T/runO/checkpoints/step-00000012' ] && [ -d '$T/runO/checkpoints/step-00000003' ] && [ \$(grep -c '\"loss\"' '$T/runO/metrics.jsonl') -eq 3 ]"

# --overwrite deletes nothing when the run is refused for another reason (a missing --data)
run "$LOQT" train "${COMMON[@]}" --num-training-steps 3 --output-dir "$A" --overwrite --data "$T/no_such_data"
check overwrite_refused_keeps_run "exit $RC, or $A lost files" \
    bash -c "[ $RC -ne 0 ] && [ -s '$A/metrics.jsonl' ] && [ -d '$A/checkpoints/step-00000012' ]"
# a checkpoint of one run continued into a directory that holds another run: refused
expect_error resume_into_other_run 'holds a run already' "$LOQT" train "${TRAIN12[@]}" --output-dir "$A" --resume "$T/runB/checkpoints/step-00000006"
# method options on the command line that differ from the checkpoint's: refused
run "$LOQT" train "${COMMON[@]}" --method loqt --rank 4 --update-proj-gap 2 --num-training-steps 2 --output-dir "$T/mo"
expect_error resume_other_method_options 'come from the checkpoint' "$LOQT" train "${COMMON[@]}" --method loqt --rank 8 --num-training-steps 4 --output-dir "$T/mo" --resume latest

# ---- 3c. divergence and signals -------------------------------------------------------------
# a learning rate that overflows the weights: the NaN steps are skipped with a warning each, and
# --max-bad-steps of them in a row stop the run; no checkpoint holds the NaN weights
run "$LOQT" train "${COMMON[@]}" --num-training-steps 20 --lr 1e30 --warmup-steps 0 --max-bad-steps 3 --output-dir "$T/nan"
check diverged_stops "exit $RC; stderr: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 1 ] && tail -n 1 '$T/err' | grep -q '^loqt: error: 3 steps in a row' && [ \$(grep -c 'warning: step' '$T/err') -eq 3 ]"
# a learning rate so large that the activations overflow: RMSNorm's output becomes 0, the loss
# sits at ln(V) with a zero gradient; reported as a dead model, not trained on with exit 0.  The
# way there is chaotic (a change in the last bit of the loss moves the step it dies at): with 200
# steps the learning rate stays near 300 long enough that it died at steps 11-16 over 4 seeds and
# two summation orders of the softmax; a shorter schedule (30) decays it first on some of them
run "$LOQT" train "${COMMON[@]}" --num-training-steps 200 --lr 300 --warmup-steps 0 --output-dir "$T/dead"
check dead_model_reported "exit $RC; stderr: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 1 ] && tail -n 1 '$T/err' | grep -q 'model is dead'"
# SIGTERM (as a scheduler sends it) and SIGINT (Ctrl-C): the step finishes, a checkpoint is
# written, the exit status is 128 + the signal, and --resume latest continues from it
for sig in TERM INT; do
    want=$([ $sig = TERM ] && echo 143 || echo 130)
    "$LOQT" train "${COMMON[@]}" --num-training-steps 1000000 --output-dir "$T/sig$sig" >"$T/sig.out" 2>"$T/sig.err" &
    pid=$!
    for _ in $(seq 1 600); do
        [ "$(cat "$T/sig$sig/metrics.jsonl" 2>/dev/null | grep -c '"loss"')" -ge 3 ] && break
        sleep 0.05
    done
    kill -$sig $pid
    wait $pid
    rc=$?
    last=$(ls -d "$T/sig$sig/checkpoints"/step-* 2>/dev/null | tail -n 1)
    check "signal_${sig}_checkpoint" "exit $rc (expected $want), checkpoint '$last': $(tail -n 1 "$T/sig.err")" \
        bash -c "[ $rc -eq $want ] && [ -s '$last/model.safetensors' ] && grep -q 'stopped by signal' '$T/sig.out'"
    n=${last##*step-}
    n=$((10#$n))
    run "$LOQT" train "${COMMON[@]}" --num-training-steps $((n + 2)) --output-dir "$T/sig$sig" --resume latest
    check "signal_${sig}_resumes" "exit $RC: $(tail -n 1 "$T/err")" \
        bash -c "[ $RC -eq 0 ] && grep -q 'resumed from .*step-' '$T/out'"
done
# a full disk (a file size limit, with SIGXFSZ ignored so writes fail with EFBIG): a checkpoint
# that cannot be written leaves no .tmp directory, and metrics.jsonl that cannot be written stops
# the run with the reason
run bash -c "trap '' XFSZ; ulimit -f 64; exec '$LOQT' train ${COMMON[*]} --num-training-steps 4 --save-every 1 --output-dir '$T/full1'"
tmps=$(find "$T/full1" -name '*.tmp*' 2>/dev/null | head -n 3)
check full_disk_checkpoint "exit $RC, stderr '$(tail -n 1 "$T/err")', left behind: $tmps" \
    bash -c "[ $RC -eq 1 ] && tail -n 1 '$T/err' | grep -q 'checkpoint' && [ -z '$tmps' ]"
run bash -c "trap '' XFSZ; ulimit -f 1; exec '$LOQT' train ${COMMON[*]} --num-training-steps 40 --output-dir '$T/full2'"
check full_disk_metrics "exit $RC, stderr '$(tail -n 1 "$T/err")'" \
    bash -c "[ $RC -eq 1 ] && tail -n 1 '$T/err' | grep -q 'cannot write metrics.jsonl'"
# a second Ctrl-C exits at once, without waiting for the step or writing a checkpoint: a model
# whose steps take a second or more, two SIGINTs 0.1 s apart inside one step
"$PY" -c "
import json, sys; c = json.load(open(sys.argv[1])); c.update(hidden_size=512, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
json.dump(c, open(sys.argv[2], 'w'))" "$T/tiny.json" "$T/slow.json"
"$LOQT" train --model "$T/slow.json" --data "$D" --batch-size 4 --max-length 256 --threads 1 --num-eval-tokens 64 \
    --num-training-steps 1000 --output-dir "$T/sig2" >"$T/sig.out" 2>"$T/sig.err" &
pid=$!
for _ in $(seq 1 1200); do
    [ "$(cat "$T/sig2/metrics.jsonl" 2>/dev/null | grep -c '"loss"')" -ge 1 ] && break
    sleep 0.05
done
kill -INT $pid
sleep 0.1
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
check signal_second_int_exits_at_once "exit $rc (expected 130), checkpoints: $(ls "$T/sig2/checkpoints" 2>/dev/null | tr '\n' ' ')" \
    bash -c "[ $rc -eq 130 ] && ! grep -q 'stopped by signal' '$T/sig.out' && ! ls -d '$T/sig2/checkpoints'/step-* >/dev/null 2>&1"
# undefined behaviour once found by fuzzing: a schedule increment past any step count, and a rank
# of 1e20 in a checkpoint's method options, are refused instead of overflowing
expect_error increment_size_huge 'increment-size' "$LOQT" memory --method loqt --increment-size 1e300
cp -r "$A/checkpoints/step-00000012" "$T/rank20"
"$PY" - "$T/rank20/trainer_state.safetensors" <<'PYRANK'
import json, struct, sys, zlib
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
hdr["__metadata__"]["method"] = "loqt"
hdr["__metadata__"]["method_opts"] = '{"rank": 1e20}'
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(h)) + h + b[8 + n:])
PYRANK
expect_error rank_1e20_in_checkpoint 'rank' "$LOQT" eval --checkpoint "$T/rank20" --data "$D" --max-length 32 --threads 1
# weights that are not finite are refused by eval and generate, not evaluated
cp -r "$A/checkpoints/step-00000012" "$T/nanckpt"
"$PY" - "$T/nanckpt/model.safetensors" <<'PYNAN'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
name = next(k for k, v in hdr.items() if k != "__metadata__" and v["dtype"] == "F32")
off = 8 + n + hdr[name]["data_offsets"][0]
b[off:off + 4] = struct.pack("<f", float("nan"))
# recompute the file's CRC-32C (in __metadata__, same length), so the NaN itself is what is refused
sys.path.insert(0, "tests")
import st_crc
st_crc.fix_crc(b)
open(p, "wb").write(bytes(b))
PYNAN
# a flipped bit in the weights (the header intact): the checksum refuses the file
cp -r "$A/checkpoints/step-00000012" "$T/flipckpt"
"$PY" -c "
import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-3] ^= 0x04; open(p, 'wb').write(bytes(b))" "$T/flipckpt/model.safetensors"
expect_error eval_refuses_flipped_bit 'checksum mismatch' "$LOQT" eval --checkpoint "$T/flipckpt" --data "$D" --max-length 32 --threads 1
expect_error resume_refuses_flipped_state 'checksum mismatch' bash -c "cp -r '$A/checkpoints/step-00000012' '$T/flipstate' && $PY -c \"
import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-9] ^= 0x01; open(p, 'wb').write(bytes(b))\" '$T/flipstate/trainer_state.safetensors' && exec '$LOQT' train ${COMMON[*]} --num-training-steps 14 --output-dir '$T/flipres' --resume '$T/flipstate'"
expect_error eval_refuses_nan 'non-finite' "$LOQT" eval --checkpoint "$T/nanckpt" --data "$D" --max-length 32 --threads 1
expect_error generate_refuses_nan 'non-finite' "$LOQT" generate --checkpoint "$T/nanckpt" --tokenizer "$TOK" --threads 1

# ---- 4. gradient accumulation ----------------------------------------------------------------
ACC=(--model "$T/tiny.json" --data "$D" --max-length 32 --threads 1 --num-eval-tokens 64 --num-training-steps 3)
run "$LOQT" train "${ACC[@]}" --batch-size 2 --total-batch-size 4 --output-dir "$T/acc"
acc_rc=$RC
check accumulation_runs "exit $acc_rc or stdout lacks '2 micro-batches per step': $(tail -n 1 "$T/err")" \
    bash -c "[ $acc_rc -eq 0 ] && grep -q '2 micro-batches per step' '$T/out'"
run "$LOQT" train "${ACC[@]}" --batch-size 4 --output-dir "$T/big"
if [ $acc_rc -eq 0 ] && [ $RC -eq 0 ]; then
    # two micro-batches of 2 are the same 4 sequences as one batch of 4 (contiguous loader), so the
    # mean loss and the gradient are the same up to float summation order
    r=$("$PY" - "$T/acc/metrics.jsonl" "$T/big/metrics.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:3])
if len(a) != 3 or len(b) != 3: print("expected 3 step lines, got %d and %d" % (len(a), len(b)))
for x, y in zip(a, b):
    if x["tokens"] != y["tokens"] or x["tokens"] != 128 * x["step"]:
        print("step %d: tokens %d vs %d, expected %d" % (x["step"], x["tokens"], y["tokens"], 128 * x["step"]))
    if abs(x["loss"] - y["loss"]) > 1e-4 or abs(x["grad_norm"] - y["grad_norm"]) > 1e-3 * y["grad_norm"]:
        print("step %d: loss %g vs %g, grad_norm %g vs %g" % (x["step"], x["loss"], y["loss"], x["grad_norm"], y["grad_norm"]))
EOF
)
    check accumulation_matches_big_batch "$r (tolerance: loss 1e-4 abs, grad_norm 1e-3 rel)" test -z "$r"
else
    bad accumulation_matches_big_batch "a run failed (exit $acc_rc / $RC)"
fi

# ---- 5. eval and export ----------------------------------------------------------------------
CK=$A/checkpoints/step-00000012
EVAL=(--data "$D" --batch-size 2 --max-length 32 --num-eval-tokens 256 --threads 1)
expect_ok eval_runs "$LOQT" eval --checkpoint "$CK" "${EVAL[@]}"
ppl=$(grep '^perplexity: ' "$T/out")
eloss=$(sed -n 's/^loss: //p' "$T/out")
trained=$(metrics evals "$A/metrics.jsonl" 2>/dev/null | tail -n 1 | cut -d' ' -f2)
check eval_prints_perplexity "no 'perplexity: X' line, or loss '$eloss' differs from the run's last eval_loss '$trained'" \
    bash -c "[ -n '$ppl' ] && [ -n '$eloss' ] && [ '$eloss' = '$trained' ]"
expect_ok export_runs "$LOQT" export --checkpoint "$CK" --out "$T/dense"
check export_files "dense model lacks config.json/model.safetensors or has a trainer state" \
    bash -c "[ -s '$T/dense/config.json' ] && [ -s '$T/dense/model.safetensors' ] && [ ! -e '$T/dense/trainer_state.safetensors' ]"
run "$LOQT" eval --checkpoint "$T/dense" "${EVAL[@]}"
ppl2=$(grep '^perplexity: ' "$T/out")
check export_same_perplexity "exit $RC; exported model gives '$ppl2', checkpoint '$ppl'" \
    bash -c "[ $RC -eq 0 ] && [ -n '$ppl' ] && [ '$ppl' = '$ppl2' ]"

# ---- 6. generate -----------------------------------------------------------------------------
expect_error generate_missing_tokenizer 'tokenizer' "$LOQT" generate --checkpoint "$CK" --tokenizer "$T/none.tok" --threads 1
expect_error generate_corrupt_tokenizer 'tokenizer' "$LOQT" generate --checkpoint "$CK" --tokenizer "$T/garbage.tok" --threads 1
if [ -f "$TOK" ]; then
    head -c 100000 "$TOK" >"$T/trunc.tok"
    expect_error generate_truncated_tokenizer 'tokenizer' "$LOQT" generate --checkpoint "$CK" --tokenizer "$T/trunc.tok" --threads 1
    "$PY" -c "
import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0x40
open(sys.argv[2], 'wb').write(b)" "$TOK" "$T/flip.tok"
    expect_error generate_bitflip_tokenizer 'tokenizer' "$LOQT" generate --checkpoint "$CK" --tokenizer "$T/flip.tok" --threads 1
    expect_error generate_vocab_mismatch 'vocab' "$LOQT" generate --checkpoint "$CK" --tokenizer "$TOK" --threads 1
    # a 32000-piece model (one layer, hidden 32) trained one step is enough to sample from
    run "$LOQT" train --model "$T/v32k.json" --data "$D" --num-training-steps 1 --batch-size 1 \
        --max-length 16 --threads 1 --num-eval-tokens 16 --output-dir "$T/g"
    GK=$T/g/checkpoints/step-00000001
    GEN=(generate --checkpoint "$GK" --tokenizer "$TOK" --threads 1 --max-new-tokens 6)
    expect_ok generate_greedy "$LOQT" "${GEN[@]}" --prompt "The ship" --temperature 0
    cp "$T/out" "$T/g1"
    run "$LOQT" "${GEN[@]}" --prompt "The ship" --temperature 0
    check generate_greedy_deterministic "output does not start with the prompt or differs between runs" \
        bash -c "grep -q '^The ship' '$T/g1' && cmp -s '$T/g1' '$T/out'"
    run "$LOQT" "${GEN[@]}" --prompt "The ship" --seed 7
    cp "$T/out" "$T/g2"
    run "$LOQT" "${GEN[@]}" --prompt "The ship" --seed 7
    check generate_seeded_deterministic "exit $RC, or the same --seed gave different text" \
        bash -c "[ $RC -eq 0 ] && grep -q '^The ship' '$T/g2' && cmp -s '$T/g2' '$T/out'"
    # an empty prompt: either generate from <s> alone or refuse with one line; never read outside
    # the logits (run a SANITIZE=1 build to see it)
    run "$LOQT" "${GEN[@]}" --prompt ""
    why=$(crash_reason)
    if [ -n "$why" ]; then bad generate_empty_prompt "$why"
    elif [ "$RC" -ne 0 ] && { [ "$(wc -l <"$T/err")" -ne 1 ] || ! grep -q '^loqt' "$T/err"; }; then
        bad generate_empty_prompt "exit $RC without one 'loqt' error line"
    else ok generate_empty_prompt
    fi
    # a model vocabulary padded beyond the tokenizer's (32008 ids): make two padding rows of lm_head
    # so large that greedy decoding would pick one; generate must sample only ids the tokenizer
    # can decode and go on, not stop at the first undecodable id
    "$PY" -c "
import json, sys; c = json.load(open(sys.argv[1])); c['vocab_size'] = 32008; json.dump(c, open(sys.argv[2], 'w'))" "$T/v32k.json" "$T/v32k8.json"
    run "$LOQT" train --model "$T/v32k8.json" --data "$D" --num-training-steps 1 --batch-size 1 \
        --max-length 16 --threads 1 --num-eval-tokens 16 --output-dir "$T/g8"
    "$PY" - "$T/g8/checkpoints/step-00000001" <<'PYPAD'
import json, struct, sys
d = sys.argv[1]
p = d + "/model.safetensors"
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
t = hdr["lm_head.weight"]
rows, cols = t["shape"]
base = 8 + n + t["data_offsets"][0]
for r, sign in ((32000, 1.0), (32001, -1.0)):
    for c in range(cols):
        struct.pack_into("<f", b, base + 4 * (r * cols + c), sign * 1000.0)
sys.path.insert(0, "tests")
import st_crc
st_crc.fix_crc(b)
open(p, "wb").write(bytes(b))
PYPAD
    run "$LOQT" generate --checkpoint "$T/g8/checkpoints/step-00000001" --tokenizer "$TOK" --threads 1 \
        --max-new-tokens 8 --prompt "The ship" --temperature 0
    check generate_padded_vocab "exit $RC, output '$(head -c 80 "$T/out")': $(tail -n 1 "$T/err")" \
        bash -c "[ $RC -eq 0 ] && [ \$(head -n 1 '$T/out' | wc -c) -gt 10 ]"
    # GGUF export of the 32000-piece model (the numerics are tests/test_gguf.c's): a file that an
    # independent reader parses, never replaced without --overwrite; the padded vocabulary too
    expect_ok gguf_export "$LOQT" export --checkpoint "$GK" --format gguf --type q4_0 --out "$T/gg/m.gguf"
    check gguf_export_prints "no 'wrote ... (GGUF, Q4_0, 12 tensors)' line: $(cat "$T/out")" \
        grep -q "^wrote $T/gg/m.gguf (GGUF, Q4_0, 12 tensors)" "$T/out"
    cp "$T/gg/m.gguf" "$T/gg/first.gguf"
    expect_error gguf_export_exists 'pass --overwrite' "$LOQT" export --checkpoint "$GK" --format gguf --out "$T/gg/m.gguf"
    check gguf_export_exists_untouched "a refused export changed the file" cmp -s "$T/gg/m.gguf" "$T/gg/first.gguf"
    expect_ok gguf_export_overwrite "$LOQT" export --checkpoint "$GK" --format gguf --type f16 --out "$T/gg/m.gguf" --overwrite
    expect_ok gguf_export_padded "$LOQT" export --checkpoint "$T/g8/checkpoints/step-00000001" --format gguf --type q8_0 --out "$T/gg/p.gguf"
    run "$PY" - "$T/gg/m.gguf" "$T/gg/p.gguf" <<'PYGGUF'
import sys
sys.path.insert(0, "tests")
import gguf_check as g
m, p = g.read_gguf(sys.argv[1]), g.read_gguf(sys.argv[2])
assert m["kv"]["general.file_type"] == 1 and m["tensors"]["blk.0.attn_q.weight"]["type"] == g.GGML_F16, "not the f16 file"
assert m["kv"]["general.name"] == "v32k", m["kv"]["general.name"]
tokens, types = p["kv"]["tokenizer.ggml.tokens"][1], p["kv"]["tokenizer.ggml.token_type"][1]
assert len(tokens) == 32008 and p["tensors"]["token_embd.weight"]["ne"] == [32, 32008], len(tokens)
assert tokens[32000:] == ["[PAD%d]" % i for i in range(32000, 32008)] and set(types[32000:]) == {5}, tokens[32000:]
assert tokens[:32000] == m["kv"]["tokenizer.ggml.tokens"][1], "the pieces differ"
PYGGUF
    check gguf_export_readable "exit $RC: $(tail -n 2 "$T/err" | tr '\n' '|')" test "$RC" -eq 0
    # a huge --max-new-tokens under a memory limit: one line, not a crash (not under ASan, whose
    # shadow memory needs more address space than any such limit allows)
    ldd "$LOQT" 2>/dev/null | grep -q libasan ||
    expect_error generate_out_of_memory 'memory' bash -c "ulimit -v 3000000; exec '$LOQT' generate --checkpoint '$GK' --tokenizer '$TOK' --threads 1 --max-new-tokens 2000000000"
else
    echo "# $TOK not found: generate is tested only for tokenizer errors"
fi

# ---- 7. bad input: one "loqt..." line on stderr, non-zero exit, no crash ---------------------
S=(--data "$D" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 64 --num-training-steps 2 --output-dir "$T/bad")
expect_error bad_unknown_option 'unknown option' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --bogus 1
expect_error bad_option_not_number 'number' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --lr abc
expect_error bad_option_not_integer 'integer' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --batch-size 2x
expect_error bad_option_missing_value 'value' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --lr
expect_error bad_option_choice 'one of' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --scheduler wavy
expect_error bad_positional_argument 'argument' "$LOQT" eval stray
expect_error bad_unknown_model 'unknown model' "$LOQT" train --model 77m "${S[@]}"
expect_error bad_missing_config_file 'nonexistent.json' "$LOQT" train --model "$T/nonexistent.json" "${S[@]}"
# the JSON parser's message ("expected a string key, found end of input") must come through intact
expect_error bad_malformed_json 'malformed\.json.*expected' "$LOQT" train --model "$T/malformed.json" "${S[@]}"
expect_error bad_heads_not_dividing 'divisible' "$LOQT" train --model "$T/heads.json" "${S[@]}"
expect_error bad_missing_data_dir 'data' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/nodata"
expect_error bad_truncated_shard 'truncated|corrupt' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/corrupt"
expect_error bad_shard_magic 'magic|shard' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/badmagic"
expect_error bad_shard_token_id 'vocab' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/badtoken"
expect_error bad_data_vocab_too_big 'vocab' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/bigvocab"
expect_error bad_missing_val_split 'val' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --data "$T/noval"
expect_error bad_batch_too_big_for_data 'tokens' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --batch-size 200
expect_error bad_total_batch_not_multiple 'multiple' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --total-batch-size 3
expect_error bad_max_length_too_long 'max_position_embeddings' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --max-length 65
expect_error bad_eval_max_length_too_long 'max_position_embeddings' "$LOQT" eval --checkpoint "$CK" "${EVAL[@]}" --max-length 65
expect_error bad_nonpositive_steps 'steps' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --num-training-steps 0

mkck() { rm -rf "${T:?}/$1" && cp -r "$CK" "$T/$1"; }
mkck trunc && truncate -s 5000 "$T/trunc/model.safetensors"
expect_error bad_eval_truncated_model 'model\.safetensors' "$LOQT" eval --checkpoint "$T/trunc" "${EVAL[@]}"
expect_error bad_resume_truncated_model 'model\.safetensors' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume "$T/trunc"
mkck empty && : >"$T/empty/model.safetensors"
expect_error bad_eval_empty_model 'model\.safetensors' "$LOQT" eval --checkpoint "$T/empty" "${EVAL[@]}"
mkck nocfg && rm "$T/nocfg/config.json"
expect_error bad_eval_missing_config 'config\.json' "$LOQT" eval --checkpoint "$T/nocfg" "${EVAL[@]}"
expect_error bad_resume_missing_config 'config\.json' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume "$T/nocfg"
# (a dense export: a checkpoint's edited config.json is refused by its checksum first)
cp -r "$T/dense" "$T/shape" && sed -i 's/"hidden_size": 32/"hidden_size": 64/' "$T/shape/config.json"
# the message must name the file and the mismatch (not a mangled path)
expect_error bad_eval_shape_mismatch 'model\.safetensors.*shape' "$LOQT" eval --checkpoint "$T/shape" "${EVAL[@]}"
mkck trstate && truncate -s 3000 "$T/trstate/trainer_state.safetensors"
expect_error bad_resume_truncated_state 'trainer_state' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume "$T/trstate"
expect_error bad_resume_dense_export 'trainer' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume "$T/dense"
expect_error bad_resume_latest_none 'checkpoint' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume latest --output-dir "$T/norun"
expect_error bad_eval_no_checkpoint_option 'checkpoint' "$LOQT" eval "${EVAL[@]}"
expect_error bad_export_no_out 'out' "$LOQT" export --checkpoint "$CK"
# a config.json with fewer layers than the weights: refused, not loaded with layers dropped (a
# dense export has no trainer state; a checkpoint's config.json is also covered by a checksum)
cp -r "$T/dense" "$T/fewer"
cp -r "$CK" "$T/fewerck"
for f in "$T/fewer/config.json" "$T/fewerck/config.json"; do
    "$PY" -c "
import json, sys; p = sys.argv[1]; c = json.load(open(p)); c['num_hidden_layers'] = c['num_hidden_layers'] - 1
json.dump(c, open(p, 'w'))" "$f"
done
expect_error bad_config_fewer_layers 'do not belong together' "$LOQT" eval --checkpoint "$T/fewer" --data "$D" --max-length 32 --threads 1
expect_error bad_resume_edited_config 'config.json was edited' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --resume "$T/fewerck"
# a misspelt config key, and a key with a value loqt does not implement
"$PY" -c "
import json, sys; c = json.load(open(sys.argv[1])); c['max_position_embedding'] = c.pop('max_position_embeddings', 64)
json.dump(c, open(sys.argv[2], 'w'))" "$T/tiny.json" "$T/typo.json"
expect_error bad_config_misspelt_key "max_position_embedding" "$LOQT" train --model "$T/typo.json" "${S[@]}"
"$PY" -c "
import json, sys; c = json.load(open(sys.argv[1])); c['hidden_act'] = 'gelu'
json.dump(c, open(sys.argv[2], 'w'))" "$T/tiny.json" "$T/gelu.json"
expect_error bad_config_gelu "hidden_act" "$LOQT" train --model "$T/gelu.json" "${S[@]}"
expect_error bad_rank_too_large 'exceeds the smaller side' "$LOQT" memory --model 9m --method loqt --rank 200
expect_error bad_max_memory_zero 'not positive' "$LOQT" memory --model 20m --max-memory 0
expect_error bad_export_into_checkpoint 'checkpoint' "$LOQT" export --checkpoint "$CK" --out "$CK"
expect_error bad_adam_eps_underflows 'adam-eps' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --adam-eps 1e-50
expect_error bad_beta2_rounds_to_one 'beta' "$LOQT" train --model "$T/tiny.json" "${S[@]}" --beta2 0.99999999999
expect_error bad_unknown_command 'unknown command' "$LOQT" frobnicate

# ---- 8. --help of every command, underscore spellings ----------------------------------------
help_has() { # help_has CMD OPTION...: `loqt CMD --help` exits 0 and lists every OPTION
    local c=$1
    shift
    run "$LOQT" "$c" --help
    if [ "$RC" -ne 0 ] || [ -n "$(crash_reason)" ]; then bad "help_$c" "exit $RC"; return; fi
    grep -q "^usage: loqt $c" "$T/out" || { bad "help_$c" "no 'usage: loqt $c' line"; return; }
    for o in "$@" --help; do
        grep -qe "^  $o " "$T/out" || { bad "help_$c" "$o is not listed"; return; }
    done
    ok "help_$c"
}
help_has train --model --data --method --num-training-steps --batch-size --total-batch-size --max-length \
    --lr --warmup-steps --min-lr-ratio --grad-clipping --weight-decay --eval-every --num-eval-tokens \
    --save-every --output-dir --resume --seed --threads
help_has eval --checkpoint --data --split --num-eval-tokens --batch-size --max-length --threads
help_has export --checkpoint --out --format --type --tokenizer --overwrite
help_has generate --checkpoint --tokenizer --prompt --max-new-tokens --temperature --top-p --seed --threads
help_has bench --model --method --batch-size --seq-len --steps --threads
help_has data --out --tokenizer
run "$LOQT" --help
check help_top_level "exit $RC or a command is not listed" \
    bash -c "[ $RC -eq 0 ] && for c in train eval generate bench data export version; do grep -q \"^  \$c \" '$T/out' || exit 1; done"
run "$LOQT" bench --model "$T/tiny.json" --method loqt --rank 4 --batch-size 2 --seq-len 16 --steps 2 --threads 1
check bench_loqt_lines "exit $RC or a machine-readable line is missing: $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 0 ] && for k in step0_s refresh_s tokens_per_s peak_rss_mib; do grep -qE \"^\$k: [0-9.]+\$\" '$T/out' || exit 1; done"
run "$LOQT" version
check version "exit $RC or no 'loqt VERSION' line" bash -c "[ $RC -eq 0 ] && grep -q '^loqt [0-9]' '$T/out'"
run "$LOQT" train --model "$T/tiny.json" --data "$D" --num_training_steps 3 --batch_size=2 --max_length 32 \
    --threads 1 --num_eval_tokens 64 --output_dir "$T/underscore"
n=$(grep -c '"loss"' "$T/underscore/metrics.jsonl" 2>/dev/null)
check underscore_spelling "exit $RC, $n step lines (expected 3): $(tail -n 1 "$T/err")" \
    bash -c "[ $RC -eq 0 ] && [ '$n' = 3 ] && [ -d '$T/underscore/checkpoints/step-00000003' ]"

# ---- the method platform: every registered method trains and resumes; options per method ----
methods=$("$LOQT" train --help | sed -n 's/^  --method \([^ ]*\) .*/\1/p' | tr '|' ' ')
check methods_listed "train --help lists no --method choices" test -n "$methods"
for meth in $methods; do
    M=(--model "$T/tiny.json" --data "$D" --num-training-steps 4 --batch-size 2 --max-length 16
       --threads 1 --num-eval-tokens 32 --save-every 2 --lr 3e-3 --method "$meth")
    # a small rank and a refresh every 2 steps, for the methods that have them (their --help section)
    sect=$("$LOQT" train --help | awk -v h="  $meth: " 'index($0, h) == 1 { on = 1; next } on && !NF { exit } on')
    grep -q -- '--rank ' <<<"$sect" && M+=(--rank 4)
    grep -q -- '--update-proj-gap ' <<<"$sect" && M+=(--update-proj-gap 2)
    grep -q -- '--relora-steps ' <<<"$sect" && M+=(--relora-steps 2)
    run "$LOQT" train "${M[@]}" --output-dir "$T/m_$meth"
    if [ "$RC" -ne 0 ]; then bad "method_${meth}_trains" "exit $RC: $(tail -n 1 "$T/err")"; continue; fi
    ok "method_${meth}_trains"
    grep -q "^  $meth: " <("$LOQT" train --help) && ok "method_${meth}_help" || bad "method_${meth}_help" "no '  $meth:' section in train --help"
    rm -rf "$T/m_$meth/checkpoints/step-00000004"
    run "$LOQT" train "${M[@]}" --output-dir "$T/m_${meth}_r" --resume "$T/m_$meth/checkpoints/step-00000002"
    metrics steps "$T/m_$meth/metrics.jsonl" step,loss,lr,grad_norm | tail -n 2 >"$T/m1.steps"
    metrics steps "$T/m_${meth}_r/metrics.jsonl" step,loss,lr,grad_norm >"$T/m2.steps" 2>/dev/null
    check "method_${meth}_resumes" "exit $RC, or steps 3..4 differ: $(diff "$T/m1.steps" "$T/m2.steps" | head -n 4 | tr '\n' '|')" \
        bash -c "[ $RC -eq 0 ] && [ -s '$T/m2.steps' ] && cmp -s '$T/m1.steps' '$T/m2.steps'"
    run "$LOQT" memory --model 60m --method "$meth"
    check "method_${meth}_memory" "exit $RC or no plan line naming $meth: $(tail -n 1 "$T/err")" \
        bash -c "[ $RC -eq 0 ] && grep -q 'method $meth' '$T/out' && grep -q '^total: ' '$T/out'"
done
# a method's defaults for the trainer's options (run_defaults): Q-GaLore's 8-bit Adam, beta2 and lr,
# overridden by what is given; other methods keep the trainer's
run "$LOQT" memory --model 20m --method qgalore
check run_defaults_optimizer "exit $RC or qgalore does not plan 8-bit Adam: $(grep '^plan' "$T/out")" \
    bash -c "[ $RC -eq 0 ] && grep -q 'optimizer adam8bit' '$T/out'"
run "$LOQT" memory --model 20m --method qgalore --optimizer adamw
check run_defaults_overridden "exit $RC or --optimizer adamw was not kept: $(grep '^plan' "$T/out")" \
    bash -c "[ $RC -eq 0 ] && grep -q 'optimizer adamw,' '$T/out'"
run "$LOQT" train --method qgalore --help
check run_defaults_help "exit $RC or train --method qgalore --help lacks the method's lr / beta2 defaults" \
    bash -c "[ $RC -eq 0 ] && grep -qE '^  --lr .*\[default: 0.015\]' '$T/out' && grep -qE '^  --beta2 .*\[default: 0.95\]' '$T/out'"
run "$LOQT" train --method galore --help
check run_defaults_other_method "exit $RC or --method galore does not keep the trainer's lr 0.001 and adamw" \
    bash -c "[ $RC -eq 0 ] && grep -qE '^  --lr .*\[default: 0.001\]' '$T/out' && grep -qE '^  --optimizer .*\[default: adamw\]' '$T/out'"
# bench reports the SVDs the adaptive gap saved: gap 1, queue 1, threshold 0, so each layer's gap
# doubles at every refresh after the first: steps 0, 1, 3 of 0..3, one saved per layer
run "$LOQT" bench --model "$T/tiny.json" --method qgalore --rank 4 --update-proj-gap 1 --queue-size 1 --cos-threshold 0 \
    --batch-size 2 --seq-len 16 --warmup-steps 1 --steps 3 --threads 1
saved=$(sed -n 's/^svd_saved: //p' "$T/out"); refreshes=$(sed -n 's/^refreshes: //p' "$T/out")
check bench_svd_saved "exit $RC, svd_saved '$saved', refreshes '$refreshes' (expected 3 refreshes and 1 saved per layer)" \
    bash -c "[ $RC -eq 0 ] && [ -n '$saved' ] && [ '$saved' -gt 0 ] && [ \$(( $saved * 3 )) -eq '$refreshes' ]"
MS=(--model "$T/tiny.json" --data "$D" --num-training-steps 2 --batch-size 2 --max-length 16 --threads 1)
expect_error option_of_other_method 'option of --method loqt' "$LOQT" train "${MS[@]}" --method full --compensate-quant-error-iterations 2
expect_error option_of_other_method_bench 'option of --method loqt' "$LOQT" bench --model "$T/tiny.json" --method full --lora-alpha 0.5
expect_error method_option_range 'lora-alpha' "$LOQT" train "${MS[@]}" --method loqt --lora-alpha 0
expect_error method_option_choice 'merge-optimizer-state' "$LOQT" memory --model 20m --method loqt --merge-optimizer-state sometimes
expect_error unknown_method 'unknown --method' "$LOQT" memory --model 20m --method nope
expect_error option_of_relora 'option of --method relora' "$LOQT" memory --model 20m --method lora --relora-steps 5
expect_error lora_base_bits 'base-bits' "$LOQT" memory --model 20m --method lora --base-bits 3

# ---- tokenize and per-token losses: for checking loqt against other tools ---------------------
run "$LOQT" tokenize --tokenizer "$TOK" --text "Hello world" --bos
check tokenize_known_ids "exit $RC, ids '$(cat "$T/out")' (llama-tokenizer-js: 1 15043 3186)" \
    bash -c "[ $RC -eq 0 ] && [ \"\$(cat '$T/out')\" = '1 15043 3186' ]"
line=$(head -c 300 data/corpus/text/mobydick.txt | tr '\n' ' ')
"$LOQT" tokenize --tokenizer "$TOK" --text "$line" >"$T/ids" 2>/dev/null
"$LOQT" tokenize --tokenizer "$TOK" --decode --file "$T/ids" >"$T/back" 2>/dev/null
printf '%s\n' "$line" >"$T/line"
check tokenize_round_trip "decode(encode(a corpus line)) differs" cmp -s "$T/line" "$T/back"
expect_error tokenize_bad_id 'not a token id' "$LOQT" tokenize --tokenizer "$TOK" --decode --text "1 99999"
run "$LOQT" eval --checkpoint "$CK" --data "$D" --max-length 32 --batch-size 2 --num-eval-tokens 128 --threads 1 --per-token "$T/pt.tsv"
check eval_per_token "exit $RC, or the per-token losses do not average to the reported loss" \
    "$PY" -c "
import sys
rows = [l.split('\t') for l in open('$T/pt.tsv').read().split('\n')[1:] if l]
loss = [float(l.split()[1]) for l in open('$T/out') if l.startswith('loss:')][0]
mean = sum(float(r[2]) for r in rows) / len(rows)
sys.exit(not ($RC == 0 and len(rows) == 128 and abs(mean - loss) < 1e-4))"

# ---- Hugging Face checkpoints in ------------------------------------------------------------
# a LLaMA directory as Hugging Face writes one (two BF16 shards with an index, grouped-query
# attention, tied embeddings; tests/gen_hf_ref.py), with PyTorch's per-token losses on the first
# batch of the validation split
HF=$T/hf
"$PY" tests/gen_hf_ref.py --fixture "$HF" --vocab 64 --shard "$D/val_000.bin" --batch 2 --seq 32
HFEVAL=(--data "$D" --batch-size 2 --max-length 32 --num-eval-tokens 64 --threads 1)
run "$LOQT" eval --checkpoint "$HF" "${HFEVAL[@]}" --per-token "$T/hf_tok.tsv"
check hf_eval_matches_pytorch "exit $RC ($(head -n 1 "$T/err")), or the per-token losses differ from PyTorch's by more than 1e-4" \
    "$PY" -c "
import sys
def rows(p): return [l.split('\t') for l in open(p).read().split('\n')[1:] if l]
a, b = rows('$T/hf_tok.tsv'), rows('$HF.expected.tsv')
worst = max(abs(float(x[2]) - float(y[2])) for x, y in zip(a, b)) if a else 1
sys.exit(not ($RC == 0 and len(a) == len(b) == 64 and all(x[1] == y[1] for x, y in zip(a, b)) and worst < 1e-4))"
hf_loss=$(sed -n 's/^loss: //p' "$T/out")
# training from it: a full-rank run's step-0 evaluation is the directory's own loss, and a LoQT
# run (every layer quantized from its pretrained weight) trains
run "$LOQT" train --init-from "$HF" "${HFEVAL[@]}" --num-training-steps 2 --output-dir "$T/hf_full"
step0=$("$PY" -c "
import json
for l in open('$T/hf_full/metrics.jsonl'):
    o = json.loads(l)
    if o.get('step') == 0 and 'eval_loss' in o: print('%.6f' % o['eval_loss'])" 2>/dev/null)
check hf_init_from_full "exit $RC ($(tail -n 1 "$T/err")); step-0 eval loss '$step0', the directory's '$hf_loss'" \
    bash -c "[ $RC -eq 0 ] && [ -n '$hf_loss' ] && [ '$step0' = '$hf_loss' ]"
expect_ok hf_init_from_loqt "$LOQT" train --init-from "$HF" "${HFEVAL[@]}" --num-training-steps 2 --method loqt --rank 4 --output-dir "$T/hf_loqt"
expect_ok hf_export "$LOQT" export --checkpoint "$HF" --out "$T/hf_dense"
run "$LOQT" eval --checkpoint "$T/hf_dense" "${HFEVAL[@]}"
check hf_export_same_loss "exit $RC; the export's loss $(sed -n 's/^loss: //p' "$T/out"), the directory's $hf_loss" \
    bash -c "[ $RC -eq 0 ] && [ \"\$(sed -n 's/^loss: //p' '$T/out')\" = '$hf_loss' ]"
# fixtures of the bad-input rows below: a missing shard, an index naming a tensor its shard does
# not hold, a shape the config does not give, a dtype loqt does not read, another vocabulary
cp -r "$HF" "$T/hf_noshard" && rm "$T/hf_noshard/model-00002-of-00002.safetensors"
cp -r "$HF" "$T/hf_badmap" && "$PY" -c "
import json, sys; p = sys.argv[1] + '/model.safetensors.index.json'; ix = json.load(open(p))
ix['weight_map']['model.norm.weight'] = 'model-00001-of-00002.safetensors'; json.dump(ix, open(p, 'w'))" "$T/hf_badmap"
cp -r "$HF" "$T/hf_shape" && sed -i 's/"intermediate_size": 64/"intermediate_size": 48/' "$T/hf_shape/config.json"
cp -r "$HF" "$T/hf_f64" && "$PY" -c "
import sys; f = sys.argv[1] + '/model-00001-of-00002.safetensors'; b = open(f, 'rb').read()
i = b.index(b'\"BF16\"'); open(f, 'wb').write(b[:i] + b'\"F64\" ' + b[i + 6:])" "$T/hf_f64"
"$PY" tests/gen_hf_ref.py --fixture "$T/hf_v80" --vocab 80 --shard "$D/val_000.bin" --batch 2 --seq 32

# ---- the bad-input table of docs/bad_input.md: every row runs and is checked -----------------
# fixtures of the rows not made above
mkdir -p "$T/bi_nodata" "$T/bi_shard"
printf '{"hidden_size": 32, ' >"$T/bi_bad.json"
"$PY" -c "
import json, sys; c = json.load(open(sys.argv[1])); c['vocab_size'] = 32; json.dump(c, open(sys.argv[2], 'w'))" "$T/tiny.json" "$T/bi_v32.json"
cp "$D"/*.bin "$T/bi_shard"/ && truncate -s -3 "$T/bi_shard/train_000.bin"
cp -r "$CK" "$T/bi_nocfg" && rm "$T/bi_nocfg/config.json"
cp -r "$CK" "$T/bi_trunc" && truncate -s 100 "$T/bi_trunc/model.safetensors"
printf 'this is not a tokenizer file, only some text of 64 bytes......\n' >"$T/bi_notok.tok"
# a PEFT adapter (rank 8) fine-tuned on the dense export, and a copy without its adapter_config.json
"$LOQT" finetune --checkpoint "$T/dense" --data "$D" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 64 \
    --num-training-steps 1 --output-dir "$T/bi_ft" >/dev/null 2>&1 &&
    "$LOQT" export --checkpoint "$T/bi_ft/checkpoints/step-00000001" --format peft --out "$T/bi_peft" >/dev/null 2>&1
cp -r "$T/bi_peft" "$T/bi_peft_nocfg" && rm -f "$T/bi_peft_nocfg/adapter_config.json"
"$PY" - docs/bad_input.md >"$T/bi_rows.tsv" <<'PYROWS'
import re, sys
for line in open(sys.argv[1]):
    if not re.match(r"^\| \d+ \|", line):
        continue
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
    if len(cells) != 5:  # the exit-status table above the cases
        continue
    num, _case, cmd, code, msg = cells
    print("\t".join([num, cmd.strip("`"), code, msg.replace("\\|", "|")]))
PYROWS
rows=0
while IFS=$'\t' read -r num cmd code msg; do
    rows=$((rows + 1))
    run env LOQT="$LOQT" T="$T" D="$D" CK="$CK" TINY="$T/tiny.json" TOK="$TOK" bash -c "$cmd"
    why=$(crash_reason)
    n=$(wc -l <"$T/err")
    if [ -n "$why" ]; then bad "bad_input_$num" "$why"
    elif [ "$RC" != "$code" ]; then bad "bad_input_$num" "exit $RC, the table says $code: $(head -n 2 "$T/err" | tr '\n' '|')"
    elif [ "$n" -ne 1 ] || ! head -n 1 "$T/err" | grep -q '^loqt'; then bad "bad_input_$num" "$n lines on stderr, expected one 'loqt' line: $(head -n 3 "$T/err" | tr '\n' '|')"
    elif ! grep -qF -- "$msg" "$T/err"; then bad "bad_input_$num" "the message lacks '$msg': $(cat "$T/err")"
    else ok "bad_input_$num"
    fi
done <"$T/bi_rows.tsv"
check bad_input_table "docs/bad_input.md has $rows rows, expected at least 40" test "$rows" -ge 40

finish
