#!/usr/bin/env bash
# A small real `loqt compare` of three methods (full rank, LoQT, GaLore) on the default 20m model
# and corpus, the example of docs/compare.md: its table and plot are copied into
# docs/compare_example.md and docs/compare_example.svg.
#
#   bash experiments/compare_example.sh      # run (or resume) the three runs, then copy
#
# Settings (environment): TOKENS (400K per run: minutes, not hours, so the point is the tool, not
# the methods' final quality - see docs/loqt_quality.md for that), THREADS (0 = all cores).
# The shape is the demo's (16 x 128 tokens per step); the methods at their papers' learning
# rates, LoQT and GaLore at rank 64 (a quarter of the hidden size, as rank 128 at 60m).
set -euo pipefail
cd "$(dirname "$0")/.."
. experiments/lib.sh
OUT=experiments/results/compare_example
ensure_loqt_and_corpus

METHODS="full:lr=1e-3"
METHODS+=",loqt:lr=0.01,rank=64,lora-alpha=0.4,update-proj-gap=40,proj-gap-progression=exponential,increment-size=1.2,compensate-quant-error-iterations=5"
METHODS+=",galore:lr=0.01,rank=64,galore-scale=0.25,update-proj-gap=200"

"$LOQT" compare --methods "$METHODS" --model 20m --data data/corpus --tokens "${TOKENS:-400K}" \
    --batch-size 8 --total-batch-size 16 --max-length 128 --warmup-steps 20 --min-lr-ratio 0.1 \
    --grad-clipping 1.0 --eval-every 39 --num-eval-tokens 16384 --seed 0 --threads "${THREADS:-0}" --out "$OUT"

cp "$OUT/compare.md" docs/compare_example.md
cp "$OUT/compare.svg" docs/compare_example.svg
sed -i 's/(compare.svg)/(compare_example.svg)/' docs/compare_example.md
echo "wrote docs/compare_example.md and docs/compare_example.svg"
