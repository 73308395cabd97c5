#!/usr/bin/env bash
# The speedup of data parallelism on one machine: 2 ranks of 1 thread each against 1 process of
# 1 thread, with the same global batch (4 x 256 tokens, 2 micro-batches of 2: both in the one
# process, one on each rank). 20m model, random tokens, 6 steps; the time per step is the mean of
# steps 2-5 (step 0 holds the first SVD and the warm-up of the caches). Full-rank and LoQT r64.
# Run it on an otherwise idle machine with at least 2 cores: the second rank needs a core of its
# own, or this measures the machine's load, not the method.
#   usage: scripts/dp_speedup.sh            (after make and make MPI=1 BUILD=build-mpi)
# Prints one line per run and the two ratios, and the seconds rank 0 spent in transfers per step.
set -eu
cd "$(dirname "$0")/.."
LOQT=${LOQT:-build/loqt}
MPI_LOQT=${MPI_LOQT:-build-mpi/loqt}
PY=${PYTHON:-python3}
for b in "$LOQT" "$MPI_LOQT"; do
    [ -x "$b" ] || { echo "dp_speedup: $b missing (make; make MPI=1 BUILD=build-mpi)" >&2; exit 1; }
done
command -v mpirun >/dev/null || { echo "dp_speedup: mpirun missing (make deps)" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

"$PY" - "$T" <<'EOF'
import os, struct, sys, random
T = sys.argv[1]
random.seed(0)
os.makedirs(T + "/data")
for name, n in (("train_000.bin", 200000), ("val_000.bin", 20000)):
    toks = [random.randrange(32000) for _ in range(n)]
    open(T + "/data/" + name, "wb").write(b"LOQTSHRD" + struct.pack("<IIQ", 1, 32000, n) + bytes(40)
                                          + struct.pack("<%dH" % n, *toks))
EOF

MPIRUN=(mpirun --oversubscribe --mca btl self,vader --mca oob_tcp_if_include lo -np 2)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
COMMON=(--model configs/llama_20m.json --data "$T/data" --batch-size 2 --total-batch-size 4
        --max-length 256 --num-training-steps 6 --warmup-steps 0 --threads 1 --eval-every 0)
LOQT_O=(--method loqt --rank 64 --update-proj-gap 3)

mean_step_s() {  # mean of a key (step_s) over steps 2..5 in a metrics file
    "$PY" -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
s=[x[sys.argv[2]] for x in r if sys.argv[2] in x and 2<=x["step"]<=5]
print("%.3f" % (sum(s)/len(s)))' "$1" "${2:-step_s}"
}
steps_s() {  # step_s of steps 0..5, for the log
    "$PY" -c 'import json,sys
print(" ".join("%.2f" % json.loads(l)["step_s"] for l in open(sys.argv[1]) if l.strip() and "step_s" in l))' "$1"
}

declare -A secs
for method in full loqt; do
    opts=(--method full); [ $method = loqt ] && opts=("${LOQT_O[@]}")
    "$LOQT" train "${COMMON[@]}" "${opts[@]}" --output-dir "$T/$method-1" >"$T/$method-1.log" 2>&1 \
        || { tail -3 "$T/$method-1.log" >&2; exit 1; }
    "${MPIRUN[@]}" "$MPI_LOQT" train "${COMMON[@]}" "${opts[@]}" --output-dir "$T/$method-2" \
        >"$T/$method-2.log" 2>&1 || { tail -3 "$T/$method-2.log" >&2; exit 1; }
    secs[$method-1]=$(mean_step_s "$T/$method-1/metrics.jsonl")
    secs[$method-2]=$(mean_step_s "$T/$method-2/metrics.jsonl")
    echo "$method: 1 process x 1 thread ${secs[$method-1]} s/step, 2 ranks x 1 thread ${secs[$method-2]} s/step," \
         "speedup $("$PY" -c "print('%.2fx' % (${secs[$method-1]} / ${secs[$method-2]}))")"
    echo "  of which in transfers (rank 0, waiting for the other rank included): $(mean_step_s "$T/$method-2/metrics.jsonl" comm_s) s/step"
    echo "  steps 0-5, s: 1 process $(steps_s "$T/$method-1/metrics.jsonl"); 2 ranks $(steps_s "$T/$method-2/metrics.jsonl")"
done
echo "load average during the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
