#!/usr/bin/env bash
# `make bench-7b`: the LoQT paper's headline on this machine.  A LLaMA-7B-shaped model trained with
# LoQT (NF4 W and P, rank 1024, bf16 B, 8-bit Adam, per-layer updates, activation checkpointing)
# for two optimizer steps, the first of which is the step-0 refresh (a randomized SVD of every
# layer's gradient); then the 13B shape the same way.  For each: the planner's total for exactly
# this run and for a long run (whose later refreshes hold more), seconds of the refresh step, of
# the refresh alone and of an ordinary step, and the measured peak RSS against the plan.  Output
# goes to the terminal and to bench/results/bench-7b-<date>.txt.
# A benchmark, not a test: it needs ~22 GiB of memory for 13b and, on 2 cores, about an hour.
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
summary=()
for model in $MODELS; do
    common=(--model "$model" --method loqt --rank "$RANK" --optimizer adam8bit --per-layer-updates
            --activation-checkpointing --batch-size 1 --seq-len "$SEQ")
    echo "== plan of this run (2 steps): loqt memory ${common[*]} --num-training-steps 2" | tee -a "$out"
    # the planner first: it refuses (non-zero exit) if the run cannot fit
    "$BUILD/loqt" memory "${common[@]}" --num-training-steps 2 | tee -a "$out"
    plan=$(sed -n 's/^total: \([0-9.]*\) GiB/\1/p' "$out" | tail -n 1)
    long=$("$BUILD/loqt" memory "${common[@]}" | sed -n 's/^total: \([0-9.]*\) GiB/\1/p')
    echo "plan of a long run (its later refreshes hold more): $long GiB" | tee -a "$out"
    echo "== loqt bench ${common[*]} --warmup-steps 1 --steps 1 --threads $THREADS" | tee -a "$out"
    log=$(mktemp)
    # the per-layer refresh lines go to the results file only
    /usr/bin/time -v "$BUILD/loqt" bench "${common[@]}" --warmup-steps 1 --steps 1 --threads "$THREADS" \
        >"$log" 2>&1 || { cat "$log" >>"$out"; tail -n 5 "$log"; rm -f "$log"; exit 1; }
    cat "$log" >>"$out"
    grep -E "^(bench|step |step0_s|refresh_s|tokens_per_s|peak_rss_mib)|Elapsed" "$log"
    rss=$(sed -n 's/^peak_rss_mib: \([0-9.]*\)/\1/p' "$log")
    step0=$(sed -n 's/^step0_s: \([0-9.]*\)/\1/p' "$log")
    refresh=$(sed -n 's/^refresh_s: \([0-9.]*\)/\1/p' "$log")
    step=$(sed -n 's/^step 2: .*, \([0-9.]*\) s, .*/\1/p' "$log")
    rm -f "$log"
    line=$(awk -v m="$model" -v p="$plan" -v l="$long" -v r="$rss" -v s0="$step0" -v rf="$refresh" -v s="$step" \
        'BEGIN { printf "%s: peak RSS %.2f GiB, plan %.2f GiB (%+.1f%%), long-run plan %.2f GiB; step 0 %.0f s (refresh %.0f s), step 1 %.0f s", m, r / 1024, p, 100 * (p * 1024 - r) / r, l, s0, rf, s }')
    summary+=("$line")
done
echo "== summary" | tee -a "$out"
printf '%s\n' "${summary[@]}" | tee -a "$out"
echo "results in $out"
