#!/usr/bin/env bash
# Mixed precision on real data: full-rank training of the same model, tokens, seed and schedule
# in fp32 and with --dtype bf16, 300 steps each (one `loqt compare`), then the bf16 loss curve
# against fp32's: the difference of their training losses averaged over windows of 25 steps, and
# the held-out losses.  Output: docs/bf16_curve.md (and .svg, compare's plot).
#
#   bash experiments/bf16_curve.sh      # run (or resume), then report
#
# Settings (environment): MODEL (20m), STEPS (300), BATCH (8), SEQ (256), THREADS (0 = all
# cores), METHOD (full).  On 2 idle AVX2 cores (bf16 emulated: rounded operands into fp32 GEMMs)
# the two 20m runs take about 20 minutes together.
# The band stated in the report: every 25-step window's mean loss within 0.05 of fp32's, and
# the held-out losses within 0.02 (bf16 keeps about 3 significant digits of each operand; with
# fp32 accumulation and fp32 master weights the runs should differ by noise only).
set -euo pipefail
cd "$(dirname "$0")/.."
. experiments/lib.sh
MODEL=${MODEL:-20m}
STEPS=${STEPS:-300}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
METHOD=${METHOD:-full}
OUT=experiments/results/bf16_curve
ensure_loqt_and_corpus

"$LOQT" compare --methods "$METHOD@fp32:dtype=fp32,$METHOD@bf16:dtype=bf16" --model "$MODEL" \
    --data data/corpus --tokens $((STEPS * BATCH * SEQ)) --batch-size "$BATCH" --max-length "$SEQ" \
    --warmup-steps $((STEPS / 10)) --min-lr-ratio 0.1 --grad-clipping 1.0 --lr 1e-3 \
    --eval-every $((STEPS / 3)) --num-eval-tokens 51200 --seed 0 --threads "${THREADS:-0}" --out "$OUT"

/usr/bin/python3 - "$OUT" "$MODEL" "$METHOD" <<'EOF'
import json, sys
out, model, method = sys.argv[1:4]
WINDOW, BAND, EVAL_BAND = 25, 0.05, 0.02

def load(label):
    train, evals = {}, {}
    with open(f"{out}/runs/{label}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if "eval_loss" in r:
                evals[r["step"]] = r["eval_loss"]
            elif "loss" in r:
                train[r["step"]] = r["loss"]
    return train, evals

(t32, e32), (t16, e16) = load("fp32"), load("bf16")
steps = sorted(set(t32) & set(t16))
rows, worst = [], 0.0
for w0 in range(0, len(steps), WINDOW):
    ws = steps[w0:w0 + WINDOW]
    a = sum(t32[s] for s in ws) / len(ws)
    b = sum(t16[s] for s in ws) / len(ws)
    worst = max(worst, abs(b - a))
    rows.append((ws[0], ws[-1], a, b, b - a))
ev = sorted(set(e32) & set(e16))
eworst = max((abs(e16[s] - e32[s]) for s in ev), default=float("nan"))
ok = worst <= BAND and eworst <= EVAL_BAND
with open("docs/bf16_curve.md", "w") as f:
    f.write("# bf16 against fp32 on real data\n\n")
    f.write(f"Made by `experiments/bf16_curve.sh`: {method} training of the {model} model on the "
            f"default corpus, {len(steps)} steps, the same tokens, seed and schedule, once with "
            "`--dtype fp32` and once with `--dtype bf16` (see docs/benchmarks.md, \"Mixed "
            "precision\"). Plot: [bf16_curve.svg](bf16_curve.svg).\n\n")
    f.write(f"Band: every {WINDOW}-step window's mean training loss within {BAND} of fp32's, and "
            f"every held-out loss within {EVAL_BAND}. Result: largest window difference "
            f"{worst:.4f}, largest held-out difference {eworst:.4f}: "
            f"{'within the band' if ok else 'OUTSIDE the band'}.\n\n")
    f.write("| steps | fp32 mean loss | bf16 mean loss | bf16 - fp32 |\n|---|---:|---:|---:|\n")
    for s0, s1, a, b, d in rows:
        f.write(f"| {s0}-{s1} | {a:.4f} | {b:.4f} | {d:+.4f} |\n")
    f.write("\n| step | fp32 held-out loss | bf16 held-out loss | bf16 - fp32 |\n|---|---:|---:|---:|\n")
    for s in ev:
        f.write(f"| {s} | {e32[s]:.4f} | {e16[s]:.4f} | {e16[s] - e32[s]:+.4f} |\n")
print(f"bf16 vs fp32: window max |diff| {worst:.4f} (band {BAND}), held-out max |diff| {eworst:.4f} (band {EVAL_BAND})")
EOF
cp "$OUT/compare.svg" docs/bf16_curve.svg
echo "wrote docs/bf16_curve.md and docs/bf16_curve.svg"
