#!/usr/bin/env bash
# Tests of `loqt compare` (and `loqt train --dry-run`, which it relies on): a two-method comparison
# on a tiny model and corpus written here, its report (compare.md, a well-formed compare.svg, the
# planner's figures equal to the measured ones), rerun and exact resume, Ctrl-C, and bad input.
# Ends with "N passed, N failed" like the other test programs.
#   BUILD=build bash tests/test_compare.sh
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

# expect_error NAME REGEX ARGS...: exit 1 or 2, one stderr line "loqt: error: ..." matching REGEX
expect_error() {
    local name=$1 re=$2
    shift 2
    "$LOQT" "$@" >"$T/out" 2>"$T/err"
    local rc=$? n
    n=$(wc -l <"$T/err")
    if [ $rc -ne 1 ] && [ $rc -ne 2 ]; then bad "$name" "exit $rc, expected 1 or 2"
    elif [ "$n" -ne 1 ]; then bad "$name" "$n stderr lines: $(tr '\n' '|' <"$T/err")"
    elif ! grep -qiE "^loqt: error: .*($re)" "$T/err"; then bad "$name" "message: $(cat "$T/err")"
    else ok "$name"; fi
}

# a tiny corpus and model
"$PY" tests/tiny_fixture.py "$T" || { echo "FAIL setup"; echo "0 passed, 1 failed"; exit 1; }

COMMON=(--model "$T/tiny.json" --data "$T/data" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 256
        --lr 1e-2)
C=$T/cmp
# 20 steps of 64 tokens; eval and checkpoints every 2 steps
"$LOQT" compare --methods full,loqt:rank=4,lora-alpha=1 --tokens 1280 "${COMMON[@]}" --out "$C" >"$T/out" 2>"$T/err"
rc=$?
check compare_runs "exit $rc: $(tail -n 2 "$T/err" | tr '\n' '|')" test $rc -eq 0
check compare_table "compare.md lacks two finished rows" test "$(grep -c '| finished |' "$C/compare.md" 2>/dev/null)" = 2
check compare_steps "the runs did not train 20 steps" grep -q '"final": true, "step": 20,' "$C/runs/loqt/metrics.jsonl"
# the method's statistics at the end: in the final record, and listed under the table
check compare_stats_record "no method_stats in loqt's final record" grep -q '"final": true.*"method_stats": {"refresh_s": ' "$C/runs/loqt/metrics.jsonl"
check compare_stats_listed "compare.md does not list loqt's statistics" grep -q '^- loqt: refresh_s [0-9]' "$C/compare.md"
# --only trains the listed runs and reports every run; a label that names no run is refused
"$LOQT" compare --methods full,loqt:rank=4,lora-alpha=1 --only loqt --tokens 128 "${COMMON[@]}" --out "$T/only" >"$T/out" 2>"$T/err"
rc=$?
check compare_only_trains_listed "exit $rc, runs with metrics: $(ls "$T"/only/runs/*/metrics.jsonl 2>/dev/null | tr '\n' ' ')" \
    bash -c "[ $rc -eq 0 ] && [ -f '$T/only/runs/loqt/metrics.jsonl' ] && [ ! -e '$T/only/runs/full/metrics.jsonl' ] && grep -q 'full: not in --only' '$T/out'"
check compare_only_reports_all "compare.md rows: $(grep -c '^| \(full\|loqt\) ' "$T/only/compare.md" 2>/dev/null)" \
    bash -c "grep -q '^| full .*| unfinished' '$T/only/compare.md' && grep -q '^| loqt .*| finished |' '$T/only/compare.md'"
expect_error compare_only_unknown "no run is labelled 'galore'" compare --methods full,loqt --only loqt,galore "${COMMON[@]}" --out "$T/b10"

# a run without held-out evaluation (--num-eval-tokens 0) that reached its last step is finished
"$LOQT" compare --methods full --tokens 128 "${COMMON[@]}" --num-eval-tokens 0 --out "$T/cmp0" >"$T/out" 2>"$T/err"
rc=$?
check compare_no_eval_finished "exit $rc, row: $(grep '^| full' "$T/cmp0/compare.md" 2>/dev/null)" \
    bash -c "[ $rc -eq 0 ] && grep -q '^| full .*| finished |' '$T/cmp0/compare.md'"

# the SVG is well-formed, has a polyline per run and curve, a legend and bars
"$PY" - "$C/compare.svg" >"$T/svg" 2>&1 <<'EOF'
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == ns + "svg", root.tag
texts = [t.text for t in root.iter(ns + "text")]
for want in ("full training", "full held-out", "loqt training", "loqt held-out", "peak RSS"):
    assert want in texts, "legend lacks %r" % want
lines = root.findall(ns + "polyline")
assert len(lines) >= 4, "%d polylines" % len(lines)
for pl in lines:
    pts = [tuple(map(float, p.split(","))) for p in pl.get("points").split()]
    assert len(pts) >= 2 and all(0 <= x <= 1280 and 0 <= y <= 520 for x, y in pts), "points outside the image"
assert len(root.findall(ns + "rect")) >= 10, "no bars"
print("svg ok")
EOF
check compare_svg "$(tail -n 1 "$T/svg")" grep -q "svg ok" "$T/svg"

# the planner's accounted peak (plan.json) is the measured one (the final metrics record)
plan_vs_measured() {
    "$PY" - "$1" <<'EOF'
import json, sys
d = sys.argv[1]
plan = json.load(open(d + "/plan.json"))
final = [json.loads(l) for l in open(d + "/metrics.jsonl") if '"final"' in l][-1]["memory"]
sys.exit(0 if abs(plan["accounted_peak_mib"] - final["accounted_peak_mib"]) <= 0.01 else 1)
EOF
}
check compare_plan_full "plan.json differs from the measured peak" plan_vs_measured "$C/runs/full"
check compare_plan_loqt "plan.json differs from the measured peak" plan_vs_measured "$C/runs/loqt"

# every category's planned peak is the measured one, the data's too: on a split of two shards of
# 150,000 tokens the loader holds the stream plus one shard while it reads (0.29 MiB more than
# the stream; the figures are printed to 0.01 MiB, so the tolerance is two roundings)
category_peaks() {
    "$PY" - "$1" <<'EOF'
import json, sys
d = sys.argv[1]
plan = json.load(open(d + "/plan.json"))
final = [json.loads(l) for l in open(d + "/metrics.jsonl") if '"final"' in l][-1]["memory"]
bad = [k for k in plan if k.endswith("_mib") and k in final and k != "peak_rss_mib"
       and abs(plan[k] - final[k]) > 0.0101]
if bad: print("categories that differ: %s" % ", ".join("%s planned %.2f, measured %.2f" % (k, plan[k], final[k]) for k in bad))
sys.exit(1 if bad else 0)
EOF
}
"$PY" - "$T" <<'EOF'
import os, struct, sys
d = sys.argv[1] + "/data2"
os.makedirs(d, exist_ok=True)
for name, n in (("train_000.bin", 150000), ("train_001.bin", 150000), ("val_000.bin", 2000)):
    toks = [(7 * i) % 64 for i in range(n)]
    open(d + "/" + name, "wb").write(b"LOQTSHRD" + struct.pack("<IIQ", 1, 64, n) + bytes(40) + struct.pack("<%dH" % n, *toks))
EOF
"$LOQT" train --model "$T/tiny.json" --data "$T/data2" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 256 \
    --num-training-steps 2 --output-dir "$T/peaks" >"$T/peaks.out" 2>&1
check plan_category_peaks "$(category_peaks "$T/peaks" 2>&1 | tail -n 1)" category_peaks "$T/peaks"

# a rerun trains nothing
cp "$C/compare.md" "$T/md1"
"$LOQT" compare --methods full,loqt:rank=4,lora-alpha=1 --tokens 1280 "${COMMON[@]}" --out "$C" >"$T/out" 2>"$T/err"
check compare_rerun_skips "rerun: $(grep -c 'finished$' "$T/out") runs reported finished" test "$(grep -c ': finished$' "$T/out")" = 2
check compare_rerun_same "the report changed on a rerun" cmp -s <(grep '^| ' "$T/md1") <(grep '^| ' "$C/compare.md")

# an interrupted run resumes where it stopped, with the same result as the uninterrupted one
final_loss() { grep '"final": true' "$1/metrics.jsonl" | sed 's/.*"eval_loss": \([0-9.]*\).*/\1/'; }
before=$(final_loss "$C/runs/loqt")
rm -rf "$C/runs/loqt/checkpoints/step-00000020" "$C/runs/loqt/checkpoints/step-00000018"
"$PY" - "$C/runs/loqt/metrics.jsonl" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if not json.loads(l).get("final") and json.loads(l).get("step", 0) <= 16]
open(sys.argv[1], "w").writelines(lines)
EOF
"$LOQT" compare --methods full,loqt:rank=4,lora-alpha=1 --tokens 1280 "${COMMON[@]}" --out "$C" >"$T/out" 2>"$T/err"
check compare_resumes "no resume: $(grep 'loqt' "$T/out" | head -n 2 | tr '\n' '|')" grep -q 'loqt: resuming' "$T/out"
after=$(final_loss "$C/runs/loqt")
check compare_resume_exact "final loss $before before, $after after the resume" test -n "$before" -a "$before" = "$after"

# Ctrl-C reaches the run once: it writes a checkpoint and compare exits 130
"$LOQT" compare --methods full --tokens 3M "${COMMON[@]}" --save-every 100000 --out "$T/sig" >"$T/sig.out" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    [ "$(cat "$T/sig/runs/full/metrics.jsonl" 2>/dev/null | wc -l)" -ge 5 ] && break
    sleep 0.1
done
kill -INT $pid
wait $pid
rc=$?
check compare_sigint_status "exit $rc, expected 130" test $rc -eq 130
check compare_sigint_checkpoint "no checkpoint after Ctrl-C" test -d "$T/sig/runs/full/checkpoints"
check compare_sigint_message "no 'rerun' hint" grep -q 'rerun the same command' "$T/sig.out"

# train --dry-run checks and writes nothing
"$LOQT" train "${COMMON[@]}" --method loqt --rank 4 --num-training-steps 5 --output-dir "$T/dry" --dry-run >"$T/out" 2>&1
rc=$?
check dry_run_ok "exit $rc" test $rc -eq 0
check dry_run_writes_nothing "the output directory was created" test ! -e "$T/dry"
check dry_run_prints_plan "no plan printed" grep -q '^total: ' "$T/out"

# in a log (stdout not a terminal) train prints a progress line at most every --progress-every
# seconds, and the first and last step's; 0 prints every step
"$LOQT" train "${COMMON[@]}" --num-training-steps 20 --progress-every 1000 --output-dir "$T/log1" >"$T/out" 2>&1
check progress_sparse "$(grep -c '^step ' "$T/out") step lines, expected the first and the last" \
    test "$(grep -c '^step ' "$T/out")" = 2 -a "$(grep -c '^step 20/20 ' "$T/out")" = 1
"$LOQT" train "${COMMON[@]}" --num-training-steps 20 --progress-every 0 --output-dir "$T/log2" >"$T/out" 2>&1
check progress_every_step "$(grep -c '^step ' "$T/out") step lines, expected 20" test "$(grep -c '^step ' "$T/out")" = 20
expect_error progress_negative 'progress-every' train "${COMMON[@]}" --progress-every -1 --output-dir "$T/log3"

# bad input: one line each, nothing trained
expect_error compare_no_methods 'methods is required' compare "${COMMON[@]}" --out "$T/b1"
expect_error compare_no_out 'out is required' compare --methods full "${COMMON[@]}"
expect_error compare_unknown_method "unknown method 'fulll'" compare --methods fulll "${COMMON[@]}" --out "$T/b2"
expect_error compare_shared_option 'same for every run' compare --methods full,loqt:model=9m "${COMMON[@]}" --out "$T/b3"
expect_error compare_reserved 'set by compare' compare --methods full "${COMMON[@]}" --output-dir x --out "$T/b4"
expect_error compare_duplicate_label "labelled 'loqt'" compare --methods loqt,loqt:rank=4 "${COMMON[@]}" --out "$T/b5"
expect_error compare_bad_label 'label' compare --methods 'loqt@a/b' "${COMMON[@]}" --out "$T/b6"
expect_error compare_tokens "less than one step" compare --methods full --tokens 10 "${COMMON[@]}" --out "$T/b7"
expect_error compare_tokens_junk 'tokens' compare --methods full --tokens lots "${COMMON[@]}" --out "$T/b8"
# an option of another method, found by the dry run before anything trains
expect_error compare_foreign_option "run 'full'.*--rank" compare --methods loqt:rank=4,full:rank=4 "${COMMON[@]}" --out "$T/b9"
check compare_refusal_trains_nothing "a refused comparison trained" test ! -e "$T/b9/runs/loqt/metrics.jsonl"

finish
