#!/usr/bin/env bash
# The integer-weight methods' experiment (Q-GaLore, DQT, BitNet b1.58 beside full rank and GaLore):
# one `loqt compare` of eight runs on the same 20m model, corpus, tokens, seed and schedule, then
# its table, plot and a throughput table (loqt bench) written into docs/int_methods.md (after its
# written part, which is kept) and docs/int_methods.svg.
#
#   bash experiments/int_methods.sh                 # run (or resume) every run, then report
#   nohup bash experiments/int_methods.sh > int_methods.log 2>&1 &
#
# Rerunning resumes unfinished runs from their newest checkpoint and skips finished ones
# (`loqt compare`, docs/compare.md). Settings (environment): MODEL (20m), TOKENS (5M), THREADS
# (0 = all cores), BENCH_REPS (3, benches per throughput figure), ONLY (labels of the runs to
# train now, e.g. ONLY="full galore"; default all).
# At about 700-1000 tokens/s on 2 cores a run of 5M tokens takes 1.5-2 hours, so the eight runs
# can be trained a few at a time: ONLY trains those (compare --only), and docs/ is written once
# every run has finished, by a run without ONLY (the run directories must still be there:
# compare skips finished runs by their metrics.jsonl). Two halves side by side, one thread each:
#   ONLY="full dqt-8bit" THREADS=1 bash experiments/int_methods.sh &
#   ONLY="galore dqt-4bit" THREADS=1 bash experiments/int_methods.sh &
#
# Learning rates: full rank and the DQT / BitNet runs at 1e-3 (the GaLore/LoQT baselines' AdamW
# rate); GaLore at its paper's 0.01 (rank 128, scale 0.25, P every 200 steps); Q-GaLore at its
# method defaults (the reference's lr 0.015, 8-bit Adam with betas 0.9/0.95), once with and once
# without stochastic rounding (the paper reports +7.86 perplexity at 60M without it).
set -euo pipefail
cd "$(dirname "$0")/.."
. experiments/lib.sh
MODEL=${MODEL:-20m}
TOKENS=${TOKENS:-5M}
OUT=experiments/results/int_methods
ensure_loqt_and_corpus

# one run an element: METHOD[@LABEL][:OPTION=VALUE,...]; --methods is their comma-joined list
RUNS=("full:lr=1e-3"
      "galore:lr=0.01,rank=128,galore-scale=0.25,update-proj-gap=200"
      "qgalore:rank=128,update-proj-gap=200"
      "qgalore@qgalore-nosr:rank=128,update-proj-gap=200,stochastic-round=0"
      "dqt@dqt-8bit:bits=8,lr=1e-3"
      "dqt@dqt-4bit:bits=4,lr=1e-3"
      "dqt@dqt-ternary:bits=ternary,lr=1e-3"
      "bitnet:lr=1e-3")
METHODS=$(IFS=,; echo "${RUNS[*]}")
label_of() { local l=${1%%:*}; echo "${l#*@}"; }

# ONLY: train only the listed runs now (compare --only); the report covers them all
ONLY_ARG=()
[ -z "${ONLY:-}" ] || ONLY_ARG=(--only "${ONLY// /,}")

"$LOQT" compare --methods "$METHODS" "${ONLY_ARG[@]}" --model "$MODEL" --data data/corpus --tokens "$TOKENS" \
    --batch-size 8 --total-batch-size 16 --max-length 256 --warmup-steps 100 --min-lr-ratio 0.1 \
    --grad-clipping 1.0 --num-eval-tokens 51200 --seed 0 --threads "${THREADS:-0}" --out "$OUT"

# the committed copies (the runs' checkpoints stay out of the repository), from all eight runs
if [ -n "${ONLY:-}" ]; then
    echo "int_methods.sh: trained $ONLY; run again without ONLY for the rest and docs/int_methods.md"
    exit 0
fi

# Throughput on one machine, one method after another (`loqt bench`, the runs' batch, length,
# accumulation and method options): the table's tokens/s come from runs trained side by side, a
# few at a time, in different sessions and on different machines, so they are not comparable.
# Each figure is the median of BENCH_REPS (3) benches: one bench of 5 steps on 2 cores varies by
# 10-30% from one try to the next, more than some of the differences measured.
BENCH_REPS=${BENCH_REPS:-3}
throughput() {
    local base="" entry method opts tps
    echo "| run | tokens/s | vs full |"
    echo "|---|---|---|"
    for entry in "${RUNS[@]}"; do
        method=${entry%%[:@]*}
        opts=${entry#*:}; [ "$opts" = "$entry" ] && opts=""
        args=()
        for kv in ${opts//,/ }; do [ "${kv%%=*}" = lr ] || args+=("--$kv"); done   # bench does not take --lr
        tps=$(for rep in $(seq "$BENCH_REPS"); do
                  "$LOQT" bench --model "$MODEL" --method "$method" "${args[@]}" --batch-size 8 --total-batch-size 16 \
                      --max-length 256 --steps 5 --warmup-steps 1 --seed 0 --threads "${THREADS:-0}" |
                      sed -n 's/^tokens_per_s: //p'
              done | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        [ -n "$base" ] || base=$tps
        echo "| $(label_of "$entry") | $tps | $(awk -v a="$tps" -v b="$base" 'BEGIN { printf "%.2fx", a / b }') |"
    done
}
throughput > "$OUT/throughput.md"
cat "$OUT/throughput.md"

# docs/int_methods.md: its written part (the reading of the results) is kept, everything after the
# marker line is replaced by the compare report and the throughput table
DOC=docs/int_methods.md
MARK='<!-- Everything below is written by experiments/int_methods.sh. -->'
{
    if grep -qxF "$MARK" "$DOC" 2>/dev/null; then awk -v m="$MARK" '{ print } $0 == m { exit }' "$DOC"
    else printf '# Integer-weight methods experiment\n\n%s\n' "$MARK"; fi
    echo
    sed 's/(compare.svg)/(int_methods.svg)/' "$OUT/compare.md"
    printf '\n## Throughput on one machine\n\n'
    echo "\`loqt bench\` of each run's method and options, one after another, ${THREADS:-0} threads (0: all cores), the runs' batch (8 x 256 tokens, 2 micro-batches a step), 5 timed steps; each figure the median of $BENCH_REPS benches:"
    echo
    cat "$OUT/throughput.md"
} > "$DOC.tmp"
mv "$DOC.tmp" "$DOC"
cp "$OUT/compare.svg" docs/int_methods.svg
echo "wrote docs/int_methods.md and docs/int_methods.svg"
