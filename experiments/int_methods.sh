#!/usr/bin/env bash
# The integer-weight methods' experiment (Q-GaLore, DQT, BitNet b1.58 beside full rank and GaLore):
# one `loqt compare` of eight runs on the same 20m model, corpus, tokens, seed and schedule, then
# its table and plot copied into docs/int_methods.md and docs/int_methods.svg.
#
#   bash experiments/int_methods.sh                 # run (or resume) every run, then report
#   nohup bash experiments/int_methods.sh > int_methods.log 2>&1 &
#
# Rerunning resumes unfinished runs from their newest checkpoint and skips finished ones
# (`loqt compare`, docs/compare.md). Settings (environment): MODEL (20m), TOKENS (5M), THREADS
# (0 = all cores). At about 700 tokens/s on 2 idle cores a run of 5M tokens takes about 2 hours.
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

METHODS="full:lr=1e-3"
METHODS+=",galore:lr=0.01,rank=128,galore-scale=0.25,update-proj-gap=200"
METHODS+=",qgalore:rank=128,update-proj-gap=200"
METHODS+=",qgalore@qgalore-nosr:rank=128,update-proj-gap=200,stochastic-round=0"
METHODS+=",dqt@dqt-8bit:bits=8,lr=1e-3"
METHODS+=",dqt@dqt-4bit:bits=4,lr=1e-3"
METHODS+=",dqt@dqt-ternary:bits=ternary,lr=1e-3"
METHODS+=",bitnet:lr=1e-3"

"$LOQT" compare --methods "$METHODS" --model "$MODEL" --data data/corpus --tokens "$TOKENS" \
    --batch-size 8 --total-batch-size 16 --max-length 256 --warmup-steps 100 --min-lr-ratio 0.1 \
    --grad-clipping 1.0 --num-eval-tokens 51200 --seed 0 --threads "${THREADS:-0}" --out "$OUT"

# the committed copies (the runs' checkpoints stay out of the repository)
cp "$OUT/compare.md" docs/int_methods.md
cp "$OUT/compare.svg" docs/int_methods.svg
sed -i 's/(compare.svg)/(int_methods.svg)/' docs/int_methods.md
echo "wrote docs/int_methods.md and docs/int_methods.svg"
