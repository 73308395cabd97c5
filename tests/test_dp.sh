#!/usr/bin/env bash
# Data-parallel training with `mpirun -np 2` on this machine (shared memory and loopback only):
#   - the losses of 2 ranks equal those of one process with the same global batch, for full, LoQT
#     and GaLore, with and without --zero 1 and --per-layer-updates, and ReLoRA under --zero 1
#     across merges (tolerance below);
#   - the bytes each rank sends in every step equal the cost model of scripts/dp_cost_model.py
#     (written independently of the C code) exactly;
#   - under --zero 1 each rank's accounted peak memory equals `loqt memory --ranks 2 --zero 1`;
#   - resume with the same number of ranks repeats the uninterrupted losses exactly, and a sharded
#     checkpoint is refused with another number of ranks;
#   - a rank killed (SIGKILL) or hanging (SIGSTOP) stops the job within a bounded time with an
#     error line, and the last checkpoint resumes.
# MPI_LOQT: the MPI build (make MPI=1); BUILD/loqt: the default build (the single-process runs).
# Without mpirun or the MPI build it fails, unless DEPS=0 (no package installs), where it skips.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
LOQT=${LOQT:-$BUILD/loqt}
MPI_LOQT=${MPI_LOQT:-$BUILD-mpi/loqt}
PY=${PYTHON:-python3}
passed=0
failed=0
ok() { echo "ok $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

if ! command -v mpirun >/dev/null 2>&1 || [ ! -x "$MPI_LOQT" ]; then
    if [ "${DEPS:-1}" = 0 ]; then
        echo "skip: no mpirun or no MPI build ($MPI_LOQT) and DEPS=0: the data-parallel tests need Open MPI (make deps installs it)"
        echo "0 passed, 0 failed"
        exit 0
    fi
    echo "FAIL setup: mpirun or $MPI_LOQT missing (make deps installs Open MPI; make test builds $MPI_LOQT)"
    echo "0 passed, 1 failed"
    exit 1
fi
T=$(mktemp -d) || exit 1
if [ "${KEEP:-0}" = 1 ]; then echo "# scratch directory: $T"; else trap 'rm -rf "$T"' EXIT; fi

# shared memory between the ranks, the runtime's own traffic on loopback; root needs its flag.
# A sanitized build (make test-asan) keeps its address and undefined-behaviour checks under
# mpirun, but not LeakSanitizer's: Open MPI's plugins leak small buffers and are unloaded at
# MPI_Finalize, so their reports cannot even be named (loqt's own leaks are checked by the runs
# without mpirun, here and in the other tests).
MPIRUN=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" mpirun --oversubscribe --mca btl self,vader
        --mca oob_tcp_if_include lo -x ASAN_OPTIONS -np 2)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)

"$PY" - "$T" <<'EOF' || { echo "FAIL setup: fixtures"; echo "0 passed, 1 failed"; exit 1; }
import os, struct, sys, random
T = sys.argv[1]
def shard(path, toks, vocab=64):
    b = b"LOQTSHRD" + struct.pack("<IIQ", 1, vocab, len(toks)) + bytes(40) + struct.pack("<%dH" % len(toks), *toks)
    open(path, "wb").write(b)
random.seed(1)
pat = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 2, 7, 11]
os.makedirs(T + "/data")
shard(T + "/data/train_000.bin", [pat[i % 15] if random.random() < 0.8 else random.randrange(64) for i in range(6000)])
shard(T + "/data/val_000.bin", [pat[(i + 3) % 15] for i in range(1000)])
open(T + "/tiny.json", "w").write('{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, '
                                  '"num_attention_heads": 4, "vocab_size": 64, "max_position_embeddings": 64}\n')
EOF

# a constant learning rate: a resumed run may say another --num-training-steps without changing it
BASE=(--model "$T/tiny.json" --data "$T/data" --batch-size 2 --max-length 32 --threads 1)
COMMON=("${BASE[@]}" --lr 1e-2 --num-eval-tokens 256 --save-every 3 --scheduler constant --warmup-steps 0)
GAP=2 # refresh steps 0, 2, 4 (LoQT static schedule, GaLore)

# run NAME RANKS ARGS...: a training run into $T/NAME (its output in $T/NAME.log)
run() {
    local name=$1 np=$2
    shift 2
    if [ "$np" = 1 ]; then "$LOQT" train "${COMMON[@]}" --num-training-steps 6 "$@" --output-dir "$T/$name" >"$T/$name.log" 2>&1
    else "${MPIRUN[@]}" "$MPI_LOQT" train "${COMMON[@]}" --num-training-steps 6 "$@" --output-dir "$T/$name" >"$T/$name.log" 2>&1 </dev/null; fi
}

# same_losses NAME REF: the step losses and the final held-out loss of two runs agree within
# 1e-5 relative + 2e-6 absolute (float summation order differs: one process accumulates the
# micro-batches in its GEMMs, two ranks add two partial gradients)
same_losses() {
    "$PY" - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" <<'EOF'
import json, sys
def load(p):
    rows = [json.loads(l) for l in open(p)]
    return [r["loss"] for r in rows if "loss" in r], [r["eval_loss"] for r in rows if "eval_loss" in r]
(a, ea), (b, eb) = load(sys.argv[1]), load(sys.argv[2])
if len(a) != len(b) or len(a) == 0: sys.exit("%d and %d steps" % (len(a), len(b)))
for i, (x, y) in enumerate(zip(a + ea, b + eb)):
    if abs(x - y) > 1e-5 * abs(y) + 2e-6: sys.exit("value %d: %.6f (2 ranks) vs %.6f (1 process)" % (i, x, y))
EOF
}

# bytes_match NAME METHOD RANK ZERO PLU: every step's bytes of rank 0 (metrics.jsonl) and the run's
# totals of both ranks (gradients, parameters) equal the cost model exactly
bytes_match() {
    "$PY" - "$T/$1/metrics.jsonl" "$T/tiny.json" "$2" "$3" "$4" "$5" "$GAP" <<'EOF'
import json, subprocess, sys
path, cfg, method, rank, zero, plu, gap = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
steps = [r for r in rows if "dp_bytes" in r]
final = [r for r in rows if r.get("final")][-1]["dp"]
model = {}
def expect(kind):
    if kind not in model:
        out = subprocess.run([sys.executable, "scripts/dp_cost_model.py", "step", cfg, method, rank, "2", zero, kind],
                             check=True, capture_output=True, text=True).stdout
        model[kind] = json.loads(out)
    return model[kind]
tot = [{"grads": 0, "params": 0}, {"grads": 0, "params": 0}]
if len(steps) != 6: sys.exit("%d steps with dp_bytes" % len(steps))
for r in steps:
    s = r["step"] - 1
    refresh = method in ("loqt", "galore") and s % int(gap) == 0
    kind = ("plu-" if plu == "1" else "") + ("refresh" if refresh else "ordinary")
    kind = "plu" if kind == "plu-ordinary" else kind
    e = expect(kind)
    if r["dp_bytes"] != e[0]: sys.exit("step %d (%s): rank 0 sent %s, the model says %s" % (s, kind, r["dp_bytes"], e[0]))
    for q in range(2):
        for c in tot[q]: tot[q][c] += e[q][c]
for q in range(2):
    got = {c: final["bytes_sent"][q][c] for c in ("grads", "params")}
    if got != tot[q]: sys.exit("rank %d sent %s in all, the model says %s" % (q, got, tot[q]))
EOF
}

# plan_matches NAME ARGS...: each rank's accounted peak equals `loqt memory --ranks 2` (min and max)
plan_matches() {
    local name=$1
    shift
    "$LOQT" memory "${BASE[@]}" --num-training-steps 6 "$@" --ranks 2 >"$T/$name.plan" 2>&1 || { cat "$T/$name.plan"; return 1; }
    "$PY" - "$T/$name/metrics.jsonl" "$T/$name.plan" <<'EOF'
import json, re, sys
peaks = [json.loads(l) for l in open(sys.argv[1])][-1]["dp"]["accounted_peak"]
m = re.search(r"\((\d+) to (\d+) bytes\)", open(sys.argv[2]).read())
if not m: sys.exit("no per-rank line in the plan")
if [min(peaks), max(peaks)] != [int(m.group(1)), int(m.group(2))]:
    sys.exit("ranks' accounted peaks %s, planned %s to %s" % (peaks, m.group(1), m.group(2)))
EOF
}

check() { # check NAME COMMAND...: ok when it succeeds (its output is the reason otherwise)
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$(echo "$out" | tail -n 3 | tr '\n' '|')"; fi
}
ran() { # ran NAME: the run succeeded
    if [ -f "$T/$1/metrics.jsonl" ] && grep -q '"final": true' "$T/$1/metrics.jsonl"; then return 0; fi
    echo "run $1 failed: $(grep -m2 -i error "$T/$1.log" | tr '\n' '|')"
    return 1
}

# ---- 1. equivalence and bytes ----------------------------------------------------------------
LOQT_O=(--method loqt --rank 8 --update-proj-gap $GAP)
GALORE_O=(--method galore --rank 8 --update-proj-gap $GAP)
# ReLoRA: a merge at the start of step 3 (after 3 updates; the one after 6 is never run), so
# the checkpoint after 3 updates holds the unmerged base and the resumed run merges.  The
# equivalence with one process allows for the ranks' other summation order (1e-7 relative), so
# nothing in the run may be a step function of the values: an fp32 base (re-quantizing bf16 or
# NF4 rounds W + s B A), the moments zeroed at the merge (magnitude pruning keeps the entries
# above a quantile, which that rounding can reorder), no dropout (its mask is keyed by the bits
# of the layer's input).  With one rank count (resume) every merge is bit for bit anyway.
RELORA_O=(--method relora --rank 8 --relora-steps 3 --restart-warmup-steps 2 --base-bits 32 --lora-dropout 0
          --optimizer-reset reset)
run s_full 1 --method full --total-batch-size 4
run s_loqt 1 "${LOQT_O[@]}" --total-batch-size 4
run s_galore 1 "${GALORE_O[@]}" --total-batch-size 4
run s_loqt_plu 1 "${LOQT_O[@]}" --total-batch-size 8 --per-layer-updates
run s_full_plu 1 --method full --total-batch-size 4 --per-layer-updates
run s_galore_plu 1 "${GALORE_O[@]}" --total-batch-size 4 --per-layer-updates
run s_relora 1 "${RELORA_O[@]}" --total-batch-size 4
# name  reference  method rank zero plu  options
while read -r name ref method rank zero plu opts; do
    # shellcheck disable=SC2086
    case $method in loqt) o=("${LOQT_O[@]}") ;; galore) o=("${GALORE_O[@]}") ;; relora) o=("${RELORA_O[@]}") ;;
        *) o=(--method full) ;; esac
    # shellcheck disable=SC2086
    run "$name" 2 "${o[@]}" --zero "$zero" $opts
    if ran "$name" >/dev/null; then
        check "${name}_losses_equal_one_process" same_losses "$name" "$ref"
        check "${name}_bytes_equal_cost_model" bytes_match "$name" "$method" "$rank" "$zero" "$plu"
    else
        bad "${name}_runs" "$(ran "$name")"
    fi
done <<'EOF'
d_full s_full full 0 0 0 --total-batch-size 4
d_full_zero s_full full 0 1 0 --total-batch-size 4
d_full_zero_plu s_full_plu full 0 1 1 --total-batch-size 4 --per-layer-updates
d_loqt s_loqt loqt 8 0 0 --total-batch-size 4
d_loqt_zero s_loqt loqt 8 1 0 --total-batch-size 4
d_loqt_zero_plu_accum s_loqt_plu loqt 8 1 1 --total-batch-size 8 --per-layer-updates
d_galore s_galore galore 8 0 0 --total-batch-size 4
d_galore_zero s_galore galore 8 1 0 --total-batch-size 4
d_galore_plu s_galore_plu galore 8 0 1 --total-batch-size 4 --per-layer-updates
d_relora_zero s_relora relora 8 1 0 --total-batch-size 4
EOF

# ---- 2. per-rank memory under --zero 1 against the planner -----------------------------------
check full_zero_plan_per_rank plan_matches d_full_zero --method full --zero 1 --total-batch-size 4
check loqt_zero_plu_plan_per_rank plan_matches d_loqt_zero_plu_accum "${LOQT_O[@]}" --zero 1 --total-batch-size 8 --per-layer-updates
check galore_zero_plan_per_rank plan_matches d_galore_zero "${GALORE_O[@]}" --zero 1 --total-batch-size 4
check relora_zero_plan_per_rank plan_matches d_relora_zero "${RELORA_O[@]}" --zero 1 --total-batch-size 4

# ---- 3. resume with the same ranks -----------------------------------------------------------
# steps 4..6 resumed from the step-3 checkpoint repeat the uninterrupted steps exactly
resumed_equal() {
    "$PY" - "$T/$1/metrics.jsonl" "$T/$2/metrics.jsonl" <<'EOF'
import json, sys
get = lambda p: {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
a, b = get(sys.argv[1]), get(sys.argv[2])
if sorted(b) != [4, 5, 6]: sys.exit("resumed steps %s" % sorted(b))
for s in b:
    if a[s] != b[s]: sys.exit("step %d: resumed %.6f, uninterrupted %.6f" % (s, b[s], a[s]))
EOF
}
for name in d_loqt_zero d_full d_galore_zero d_relora_zero; do
    zero=0; case $name in *zero*) zero=1 ;; esac
    case $name in *relora*) o=(--method relora) ;; *loqt*) o=(--method loqt) ;; *galore*) o=(--method galore) ;;
        *) o=(--method full) ;; esac
    run "r_$name" 2 "${o[@]}" --zero "$zero" --total-batch-size 4 --resume "$T/$name/checkpoints/step-00000003"
    if ran "r_$name" >/dev/null; then check "${name}_resume_same_ranks" resumed_equal "$name" "r_$name"
    else bad "${name}_resume_same_ranks" "$(ran "r_$name")"; fi
done
[ -f "$T/d_loqt_zero/checkpoints/step-00000003/trainer_state.rank-00001.safetensors" ] &&
    ok zero_checkpoint_has_rank_1_state || bad zero_checkpoint_has_rank_1_state "no trainer_state.rank-00001.safetensors"
# a sharded checkpoint needs the same ranks; a replicated one resumes in one process too
run r1_zero 1 --method loqt --zero 1 --total-batch-size 4 --resume "$T/d_loqt_zero/checkpoints/step-00000003"
[ $? = 2 ] && grep -q "written by 2 ranks with --zero 1" "$T/r1_zero.log" && ok zero_resume_other_ranks_refused ||
    bad zero_resume_other_ranks_refused "$(tail -n 2 "$T/r1_zero.log" | tr '\n' '|')"
run r1_full 1 --total-batch-size 4 --resume "$T/d_full/checkpoints/step-00000003"
if ran r1_full >/dev/null; then check replicated_resume_in_one_process resumed_equal d_full r1_full
else bad replicated_resume_in_one_process "$(ran r1_full)"; fi

# ---- 4. bad input ----------------------------------------------------------------------------
"${MPIRUN[@]}" "$LOQT" train "${COMMON[@]}" --num-training-steps 6 --output-dir "$T/nompi" >"$T/nompi.log" 2>&1
grep -q "built without MPI" "$T/nompi.log" && ok non_mpi_build_under_mpirun_refused ||
    bad non_mpi_build_under_mpirun_refused "$(grep -m1 -i error "$T/nompi.log")"
run badbatch 2 --total-batch-size 2
grep -q "must be a multiple of --batch-size 2 x 2 ranks" "$T/badbatch.log" && ok batch_not_divisible_refused ||
    bad batch_not_divisible_refused "$(grep -m1 -i error "$T/badbatch.log")"

# ---- 5. a rank that dies or hangs ------------------------------------------------------------
# fail SIGNAL: start a long run, wait for its first checkpoint, send SIGNAL to rank 1; prints the
# seconds until mpirun returned and its exit status
fail() {
    local sig=$1 mp r1="" p t0 rc i
    rm -rf "$T/f_$sig"
    "${MPIRUN[@]}" "$MPI_LOQT" train "${COMMON[@]}" --num-training-steps 100000 --method loqt --rank 8 --zero 1 --total-batch-size 4 \
        --dist-timeout 5 --output-dir "$T/f_$sig" >"$T/f_$sig.log" 2>&1 </dev/null &
    mp=$!
    for i in $(seq 600); do [ -d "$T/f_$sig/checkpoints/step-00000006" ] && break; sleep 0.1; done
    for p in $(pgrep -P "$mp"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && r1=$p
    done
    [ -n "$r1" ] || { kill "$mp"; echo "0 no-rank-1"; return; }
    t0=$(date +%s)
    kill "-$sig" "$r1"
    wait "$mp"
    rc=$?
    [ "$sig" = STOP ] && kill -KILL "$r1" 2>/dev/null
    echo "$(($(date +%s) - t0)) $rc"
}
read -r secs rc <<<"$(fail KILL)"
[ "$rc" != 0 ] && [ "$secs" -le 30 ] && grep -q "rank 1 .*exited on signal 9" "$T/f_KILL.log" && ok killed_rank_stops_job ||
    bad killed_rank_stops_job "exit $rc after $secs s: $(grep -m1 -iE 'error|signal' "$T/f_KILL.log")"
read -r secs rc <<<"$(fail STOP)"
[ "$rc" != 0 ] && [ "$secs" -le 30 ] && grep -qE "loqt: error: (.*: )?rank 0: rank 1 did not answer for 5 s" "$T/f_STOP.log" && ok hung_rank_stops_job_with_error ||
    bad hung_rank_stops_job_with_error "exit $rc after $secs s: $(grep -m1 'loqt: error' "$T/f_STOP.log")"
# the newest checkpoint of the killed run resumes: its next steps equal those of an uninterrupted
# run (a constant learning rate: the step count does not change the schedule)
resume_after_kill() {
    local latest step
    latest=$(ls -d "$T/f_KILL/checkpoints/step-"???????? | tail -n 1)
    step=$((10#${latest##*step-}))
    local o=(--method loqt --rank 8 --zero 1 --total-batch-size 4 --num-training-steps $((step + 3)))
    "${MPIRUN[@]}" "$MPI_LOQT" train "${COMMON[@]}" "${o[@]}" --resume latest --output-dir "$T/f_KILL" \
        >"$T/f_resume.log" 2>&1 </dev/null || { tail -n 3 "$T/f_resume.log"; return 1; }
    "${MPIRUN[@]}" "$MPI_LOQT" train "${COMMON[@]}" "${o[@]}" --output-dir "$T/f_ref" >"$T/f_ref.log" 2>&1 </dev/null ||
        { tail -n 3 "$T/f_ref.log"; return 1; }
    "$PY" - "$T/f_ref/metrics.jsonl" "$T/f_KILL/metrics.jsonl" "$step" <<'EOF'
import json, sys
rows = lambda p: [json.loads(l) for l in open(p) if l.strip()]
ref = {r["step"]: r["loss"] for r in rows(sys.argv[1]) if "loss" in r}
step = int(sys.argv[3])
new = {r["step"]: r["loss"] for r in rows(sys.argv[2]) if "loss" in r and r["step"] > step}
if sorted(new) != [step + 1, step + 2, step + 3]: sys.exit("resumed steps %s after %d" % (sorted(new), step))
for s in new:
    if new[s] != ref[s]: sys.exit("step %d: resumed %.6f, uninterrupted %.6f" % (s, new[s], ref[s]))
EOF
}
check checkpoint_after_kill_resumes resume_after_kill

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
