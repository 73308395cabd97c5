"""Report of the fine-tuning experiment (experiments/finetune.sh): docs/finetune_experiment.md.

Reads ROOT/seed0 and ROOT/seed1 (two `loqt compare` directories) and writes the table of held-out
perplexity on the fine-tuning domain, the model state of each run at its peak, and the fraction of
the 4-bit to 8-bit gap each 4-bit run recovers: (ppl(q4-zero) - ppl(run)) / (ppl(q4-zero) -
ppl(q8-zero)), per seed (seed 1 repeats only the 4-bit runs; its gap uses seed 0's q8-zero).
    usage: report_finetune.py ROOT OUT.md
Text of OUT.md from the line READING (below) on is kept: the reading of the numbers, by hand.
"""
import json
import math
import os
import sys

STATE = ["quantized_weights_mib", "quantization_state_mib", "trainable_factors_mib", "dense_parameters_mib",
         "gradients_mib", "optimizer_state_mib"]

READING = "<!-- reading: kept when the report is regenerated -->"


def read_run(run_dir):
    """the run's final line (held-out loss and memory) with "start" (its evaluation before the first
    step: the quantized base with its initial adapters) and "tokens_per_s" (tokens over the seconds
    of its steps) added; None while it has not finished"""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    last = start = None
    tokens = seconds = 0
    for line in open(path):
        r = json.loads(line)
        if r.get("final"):
            last = r
        elif "eval_loss" in r and start is None:
            start = r
        elif "step_s" in r:
            tokens, seconds = r["tokens"], seconds + r["step_s"]
    if last:
        last["start"] = start
        last["tokens_per_s"] = "%.0f" % (tokens / seconds) if seconds else ""
    return last


def runs(compare_dir):
    """label -> read_run, in the compare's order (its runs/ directory)"""
    d = os.path.join(compare_dir, "runs")
    out = {}
    for label in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        f = read_run(os.path.join(d, label))
        if f:
            out[label] = f
    return out


def main():
    root, out_md = sys.argv[1], sys.argv[2]
    s0, s1 = runs(os.path.join(root, "seed0")), runs(os.path.join(root, "seed1"))
    order = ["q4-zero", "q4-loftq", "q4-quailora", "q4-quailora-closed", "q8-zero", "lora16", "full-ft"]
    ppl = lambda f: math.exp(f["eval_loss"])
    q8 = ppl(s0["q8-zero"]) if "q8-zero" in s0 else None

    # a gap is measured only when it exceeds twice what the seed alone moves zero init's result
    # (at step 0 zero init does not depend on the seed: B = 0)
    spread = abs(ppl(s0["q4-zero"]) - ppl(s1["q4-zero"])) if "q4-zero" in s0 and "q4-zero" in s1 else 0.0

    def recovered(seed_runs, label, at=lambda f: f, ref=q8, noise=spread):
        if ref is None or "q4-zero" not in seed_runs or label not in seed_runs or not label.startswith("q4"):
            return ""
        zero, run = ppl(at(seed_runs["q4-zero"])), ppl(at(seed_runs[label]))
        gap = zero - ref
        if gap <= 2 * noise:
            return "none: gap %.2f" % gap
        return "%.0f%%" % (100 * (zero - run) / gap)

    start = lambda f: f["start"]
    q8_start = ppl(start(s0["q8-zero"])) if "q8-zero" in s0 else None

    lines = ["# Fine-tuning experiment", "",
             "Made by `experiments/finetune.sh` (settings at its top) and `experiments/report_finetune.py`: a dense "
             "35m base pretrained on the default corpus, fine-tuned on the King James Bible at the same budget for "
             "every run. Held-out perplexity on the fine-tuning domain; model state (weights, quantization state, "
             "adapters, gradients, optimizer state) at its peak; the share of the 4-bit to 8-bit gap of zero-init "
             "QLoRA that each 4-bit init recovers, after fine-tuning and before it (step 0: the quantized base "
             "with its initial adapters, the initialization's own effect).", "",
             "| run | perplexity, seed 0 | seed 1 | gap recovered, seed 0 | seed 1 | at step 0: perplexity | "
             "gap recovered | tokens/s (mean) | model state MiB | accounted peak MiB | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in order:
        if label not in s0:
            lines.append("| %s | not finished |%s" % (label, " |" * 10))
            continue
        f, m = s0[label], s0[label]["memory"]
        p1 = "%.2f" % ppl(s1[label]) if label in s1 else ""
        lines.append("| %s | %.2f | %s | %s | %s | %.2f | %s | %s | %.1f | %.1f | %.1f |" % (
            label, ppl(f), p1, recovered(s0, label), recovered(s1, label), ppl(start(f)),
            recovered(s0, label, start, q8_start, 0.0), f["tokens_per_s"],
            sum(m.get(k, 0) for k in STATE), m["accounted_peak_mib"], m["peak_rss_mib"]))
    if q8 is not None and "q4-zero" in s0:
        lines += ["", "The 4-bit to 8-bit gap of zero init: %.3f perplexity after fine-tuning (seed 0; zero init's two "
                  "seeds differ by %.3f), %.3f at step 0." % (ppl(s0["q4-zero"]) - q8, spread,
                                                           ppl(start(s0["q4-zero"])) - q8_start)]
    base = read_run(os.path.join(root, "base"))
    if base:
        lines += ["", "The base: perplexity %.2f on the default corpus's held-out text after %d steps%s." % (
            ppl(base), base["step"], "; on the fine-tuning domain, unquantized, before fine-tuning: %.2f" %
            ppl(start(s0["full-ft"])) if "full-ft" in s0 else "")]
    lines += ["", "Loss curves and memory: ![seed 0](finetune_experiment.svg)", "",
              "The table of `loqt compare` for seed 0 (planned and measured memory by category, tokens/s): "
              "[finetune_experiment_runs.md](finetune_experiment_runs.md).", ""]
    # the hand-written reading below the marker survives a regeneration of the table
    reading = ""
    if os.path.exists(out_md):
        old = open(out_md).read()
        if READING in old:
            reading = old[old.index(READING):]
    open(out_md, "w").write("\n".join(lines) + ("\n" + reading if reading else ""))


if __name__ == "__main__":
    main()
