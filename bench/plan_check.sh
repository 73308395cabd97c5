#!/usr/bin/env bash
# `make bench-plan`: the memory planner against measured peak RSS.  For each run below, the plan of
# exactly that run (`loqt memory ... --num-training-steps 2`) and a 2-step `loqt bench` of it (step 0
# is LoQT's refresh); prints a markdown table of planned total, measured peak RSS and the error,
# also written to bench/results/plan-check-<date>.md.  The 7b point comes from `make bench-7b`.
# About 15 minutes on 2 cores; needs ~10 GiB.  PLAN_CHECK_THREADS (0 = all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${PLAN_CHECK_THREADS:-0}
RUNS=(
    "--model 60m --method full --batch-size 8 --seq-len 256"
    "--model 60m --method loqt --rank 128 --batch-size 8 --seq-len 256"
    "--model 350m --method full --batch-size 4 --seq-len 256"
    "--model 350m --method loqt --rank 256 --batch-size 4 --seq-len 256"
    "--model 350m --method loqt --rank 256 --optimizer adam8bit --per-layer-updates --batch-size 4 --seq-len 256"
    "--model 1b --method full --optimizer adam8bit --per-layer-updates --activation-checkpointing --batch-size 4 --seq-len 256"
    "--model 1b --method loqt --rank 512 --batch-size 4 --seq-len 256"
)
out=bench/results/plan-check-$(date -u +%Y%m%d-%H%M%S).md
mkdir -p bench/results
{
    echo "| run | planned total, MiB | measured peak RSS, MiB | plan vs RSS |"
    echo "|---|---|---|---|"
} >"$out"
for run in "${RUNS[@]}"; do
    read -r -a args <<<"$run"
    echo "== $run" >&2
    # accounted peak + unaccounted estimate, in MiB (the "total:" line rounds to 0.01 GiB)
    plan=$("$BUILD/loqt" memory "${args[@]}" --threads "$THREADS" --num-training-steps 2 |
        awk '/^  accounted peak/ { a = $3 } /^  unaccounted/ { u = $3 } END { print a + u }')
    rss=$(LOQT_QUIET=1 "$BUILD/loqt" bench "${args[@]}" --threads "$THREADS" --warmup-steps 1 --steps 1 |
        sed -n 's/^peak_rss_mib: \([0-9.]*\)/\1/p')
    awk -v run="$run" -v p="$plan" -v r="$rss" \
        'BEGIN { printf "| `%s` | %.0f | %.0f | %+.1f%% |\n", run, p, r, 100 * (p - r) / r }' |
        tee -a "$out"
done
echo "results in $out" >&2
