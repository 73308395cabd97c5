#!/usr/bin/env bash
# `make bench-7b`: the LoQT paper's headline on this machine.  A LLaMA-7B-shaped model trained with
# LoQT (NF4 W and P, rank 1024, bf16 B, 8-bit Adam, per-layer updates, activation checkpointing)
# for two optimizer steps, the first of which is the step-0 refresh (a randomized SVD of every
# layer's gradient); then the 13B shape the same way.  Prints seconds per step, seconds of the
# refresh step and the peak RSS, and appends them to bench/results/bench-7b-<date>.txt.
# A benchmark, not a test: it needs ~16 GiB of memory and, on 2 cores, well over half an hour.
#   BENCH_7B_MODELS ("7b 13b"), BENCH_7B_RANK (1024), BENCH_7B_SEQ (256), BENCH_7B_THREADS (0 = all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODELS=${BENCH_7B_MODELS:-7b 13b}
RANK=${BENCH_7B_RANK:-1024}
SEQ=${BENCH_7B_SEQ:-256}
THREADS=${BENCH_7B_THREADS:-0}
out=bench/results/bench-7b-$(date -u +%Y%m%d-%H%M%S).txt
mkdir -p bench/results
for model in $MODELS; do
    args=(bench --model "$model" --method loqt --rank "$RANK" --optimizer adam8bit
          --per-layer-updates --activation-checkpointing --batch-size 1 --seq-len "$SEQ"
          --warmup-steps 1 --steps 1 --threads "$THREADS")
    echo "== loqt ${args[*]}" | tee -a "$out"
    # the planner first: it refuses (non-zero exit) if the run cannot fit
    "$BUILD/loqt" memory --model "$model" --method loqt --rank "$RANK" --optimizer adam8bit \
        --per-layer-updates --activation-checkpointing --batch-size 1 --seq-len "$SEQ" | tee -a "$out"
    /usr/bin/time -v "$BUILD/loqt" "${args[@]}" 2>&1 | tee -a "$out" |
        grep -E "^(bench|step|step0_s|tokens_per_s|peak_rss_mib)|Maximum resident|Elapsed"
done
echo "results in $out"
