#!/usr/bin/env bash
# The choice of the demo's settings (docs/demo.md): scripts/demo.sh run with each variant below for
# the same number of steps, from the same data and seed, printing each run's held-out loss at the
# end of training (16k tokens), the merged model's perplexity (all 51k validation tokens), the
# training speed and the sample.  The losses do not depend on the thread count, so the variants
# may run on one thread beside other work; the wall time of the chosen one is measured by
# `make demo` itself on idle cores.
#   usage: [VARIANTS="r128 r64"] [DEMO_THREADS=1] [DEMO_STEPS=100] bash experiments/demo_settings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEMO_STEPS=${DEMO_STEPS:-100} DEMO_THREADS=${DEMO_THREADS:-1}
ROOT=experiments/results/demo_settings
mkdir -p "$ROOT"
declare -A V=(
    [r128]="DEMO_RANK=128 DEMO_LR=0.01 DEMO_GAP=40"        # the paper's rank for 60m
    [r64]="DEMO_RANK=64 DEMO_LR=0.01 DEMO_GAP=40"          # rank / hidden = 1/4, as r128 at 60m
    [r64-lr02]="DEMO_RANK=64 DEMO_LR=0.02 DEMO_GAP=40"
    [r64-gap100]="DEMO_RANK=64 DEMO_LR=0.01 DEMO_GAP=100"  # one merge only (or none), late
)
for name in ${VARIANTS:-r128 r64 r64-lr02}; do
    [ -n "${V[$name]:-}" ] || { echo "demo_settings: no variant $name (${!V[*]})" >&2; exit 1; }
    log="$ROOT/$name.log"
    if [ -f "$log" ] && grep -q "^== the point" "$log"; then echo "== $name: done"; else
        echo "== $name: ${V[$name]}, $DEMO_STEPS steps, $DEMO_THREADS thread(s)"
        start=$(date +%s)
        env ${V[$name]} DEMO_OUT="runs/demo_settings/$name" bash scripts/demo.sh >"$log" 2>&1
        echo "wall seconds: $(($(date +%s) - start))" >>"$log"
    fi
done
for name in ${VARIANTS:-r128 r64 r64-lr02}; do
    log="$ROOT/$name.log"
    printf '%s | %s | final eval %s | merged %s | %s | %s\n' "$name" "${V[$name]}" \
        "$(grep -o 'eval step [0-9]*: loss [0-9.]*' "$log" | tail -1)" \
        "$(grep -o 'perplexity[: ]*[0-9.]*' "$log" | tail -1)" \
        "$(grep -o '[0-9]* tok/s' "$log" | tail -1)" "$(grep 'wall seconds' "$log")"
    sed -n '/^== a sample/,/^== the point/p' "$log" | sed '1d;$d'
done
