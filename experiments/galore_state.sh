#!/usr/bin/env bash
# GaLore's optimizer state when the projection changes (docs/methods.md, "GaLore"): keep (the
# reference), project into the new basis, or reset; the same model, tokens, seed and schedule for
# each, refreshes every 25 steps so the choice is exercised five times.  Then a table in
# docs/galore_state.md.
#
#   bash experiments/galore_state.sh           # run (or resume) the three, then report
#   bash experiments/galore_state.sh report    # only the report
# Settings (environment): MODEL (20m), STEPS (150), BATCH (8), SEQ (256), GAP (25), RANK (64),
# THREADS (0 = all cores), RUNS ("keep project reset").
set -euo pipefail
cd "$(dirname "$0")/.."
. experiments/lib.sh
MODEL=${MODEL:-20m}
STEPS=${STEPS:-150}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
GAP=${GAP:-25}
RANK=${RANK:-64}
THREADS=${THREADS:-0}
ROOT=experiments/results/galore_state
read -r -a RUN_LIST <<<"${RUNS:-keep project reset}"
# shellcheck source=experiments/run_or_resume.sh
. experiments/run_or_resume.sh
if [ "${1:-}" != report ]; then
    ensure_loqt_and_corpus
    for state in "${RUN_LIST[@]}"; do
        run_or_resume "$state" "$ROOT/$state" "$STEPS" "$LOQT" --model "$MODEL" --data data/corpus \
            --batch-size "$BATCH" --max-length "$SEQ" --warmup-steps $((STEPS / 10)) --min-lr-ratio 0.1 \
            --eval-every 50 --num-eval-tokens 51200 --save-every 50 --seed 0 --threads "$THREADS" \
            --method galore --lr 0.01 --rank "$RANK" --update-proj-gap "$GAP" --galore-scale 0.25 \
            --galore-state "$state"
    done
fi
/usr/bin/python3 - "$ROOT" "$MODEL" "$STEPS" "$BATCH" "$SEQ" "$GAP" "$RANK" <<'PY'
import json, math, os, sys
root, model, steps, batch, seq, gap, rank = sys.argv[1:]
rows = []
for state in ("keep", "project", "reset"):
    path = os.path.join(root, state, "metrics.jsonl")
    if not os.path.exists(path):
        continue
    evals, final = [], None
    for line in open(path):
        d = json.loads(line)
        if d.get("final"):
            final = d
        elif "eval_loss" in d:
            evals.append((d["step"], d["eval_loss"]))
    if final is None:
        continue
    rows.append((state, evals, final["eval_loss"]))
out = ["# GaLore: the optimizer state when the projection changes", "",
       f"Made by `experiments/galore_state.sh`: model {model}, {steps} steps of {batch} x {seq} tokens "
       f"({int(steps) * int(batch) * int(seq) / 1e6:.2f}M tokens) of the default corpus, lr 0.01 "
       f"(warmup 10%, cosine to 10%), rank {rank}, scale 0.25, P refreshed every {gap} steps, seed 0, "
       "no clipping; held-out loss over 51,200 validation tokens.", "",
       "| --galore-state | " + " | ".join(f"loss at step {s}" for s, _ in rows[0][1]) + " | final held-out loss | perplexity |",
       "|---|" + "---|" * (len(rows[0][1]) + 2) if rows else ""]
for state, evals, final in rows:
    out.append(f"| {state} | " + " | ".join(f"{l:.4f}" for _, l in evals) + f" | {final:.4f} | {math.exp(final):.2f} |")
if rows:
    best = min(rows, key=lambda r: r[2])
    out += ["", f"Lowest held-out loss: `{best[0]}` ({best[2]:.4f}); the default of `--galore-state` is the "
            "state this experiment finds best (src/methods/galore.c, docs/methods.md)."]
open("docs/galore_state.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
