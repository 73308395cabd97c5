#!/usr/bin/env bash
# `make profile`: where a training step's time goes, by kernel.  Runs `loqt bench` under
# `perf record` (sampling, no call graphs) for each model and method, and sorts the samples of
# the timed steps' process into
#   gemm            the GEMM library (oneDNN, OpenBLAS) and loqt's portable kernel: every matrix
#                   product, attention's score products included
#   attention       causal softmax and the attention's own loops (not its GEMMs)
#   loss            the fused lm_head softmax / cross-entropy
#   elementwise     RMSNorm, RoPE, SwiGLU, embedding, bf16 rounding
#   dequantization  NF4 / integer grids to fp32 tiles
#   optimizer       AdamW, 8-bit Adam, stochastic rounding
#   refresh         SVD, orthonormalization, eigensolver (LoQT's merges and refreshes)
#   threads         the OpenMP runtime: threads waiting at barriers
#   kernel          the operating system (page faults, scheduling)
#   other           everything else
# Only the timed steps are counted: start-up and the warm-up step (the first touch of every
# buffer, and the step-0 refresh of the low-rank methods) are cut off by time.  Output: a Markdown table per run on stdout and in
# bench/results/profile-<date>.md.
#   PROFILE_MODELS ("20m 60m"), PROFILE_METHODS ("full loqt"), PROFILE_STEPS (5),
#   PROFILE_THREADS (0 = all cores), PROFILE_BATCH (8), PROFILE_SEQ (256)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODELS=${PROFILE_MODELS:-20m 60m}
METHODS=${PROFILE_METHODS:-full loqt}
STEPS=${PROFILE_STEPS:-5}
THREADS=${PROFILE_THREADS:-0}
BATCH=${PROFILE_BATCH:-8}
SEQ=${PROFILE_SEQ:-256}
command -v perf >/dev/null || { echo "profile: perf is not installed (Debian: linux-perf)" >&2; exit 1; }
out=bench/results/profile-$(date -u +%Y%m%d-%H%M%S).md
mkdir -p bench/results
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# dso<TAB>symbol<TAB>percent -> category<TAB>percent
classify() {
    awk -F'\t' '
    function cat(dso, sym) {
        # oneDNN generates its GEMM kernels at run time: perf names their code "[JIT] tid N"
        if (dso ~ /dnnl|openblas|blas|JIT/ || sym ~ /^(gemm|sgemm|gemm_portable|pack_|micro_kernel)/) return "gemm"
        if (dso ~ /gomp|omp/) return "threads"
        if (dso ~ /kernel/) return "kernel"
        if (sym ~ /svd|orthonormal|eigh|tridiag|rotation|back_transform|gram|jacobi|fix_row|panel_|lstsq|rng_normal/) return "refresh"
        if (sym ~ /attention|causal_probs/) return "attention"
        if (sym ~ /softmax_xent|exp_approx|lm_head/) return "loss"
        if (sym ~ /nf4_|deq_|dequant/) return "dequantization"
        if (sym ~ /adam|sround|update_blocks|optim/) return "optimizer"
        if (sym ~ /rmsnorm|rope|swiglu|embedding|bf16|round_/) return "elementwise"
        return "other"
    }
    { s[cat($1, $2)] += $3 }
    END { for (c in s) printf "%s\t%.2f\n", c, s[c] }'
}

echo "# Step profile ($(date -u +%Y-%m-%d), $(nproc) cores, $("$BUILD/loqt" version | head -n 1))" | tee "$out"
for model in $MODELS; do
    for method in $METHODS; do
        args=(bench --model "$model" --method "$method" --batch-size "$BATCH" --seq-len "$SEQ"
              --warmup-steps 1 --steps "$STEPS" --threads "$THREADS")
        echo "== loqt ${args[*]}" >&2
        # samples carry CLOCK_MONOTONIC times, and each output line is stamped on the same clock
        # as it arrives, so the report can start where the last warm-up step ended
        perf record -q -k CLOCK_MONOTONIC -F 499 -o "$work/perf.data" -- "$BUILD/loqt" "${args[@]}" 2>&1 |
            /usr/bin/python3 -u -c 'import sys, time
for line in sys.stdin: print("%.6f %s" % (time.clock_gettime(time.CLOCK_MONOTONIC), line.rstrip()))' \
            >"$work/bench.log"
        start=$(awk '/\(warmup\)/ { t = $1 } END { print t }' "$work/bench.log")
        [ -n "$start" ] || { echo "profile: no warm-up step in the output of loqt ${args[*]}" >&2; cat "$work/bench.log" >&2; exit 1; }
        tps=$(sed -n 's/^[0-9.]* tokens_per_s: \([0-9.]*\)/\1/p' "$work/bench.log")
        perf report -i "$work/perf.data" --time "$start," --no-children --sort dso,symbol -F overhead,dso,sym \
            --percent-limit 0 --stdio --field-separator=@ 2>/dev/null |
            awk -F@ '/%/ { p = $1; gsub(/[ %]/, "", p); dso = $2; sym = $3;
                           gsub(/^ +| +$/, "", dso); sub(/^\[[.k]\] /, "", sym); sub(/ +$/, "", sym);
                           printf "%s\t%s\t%s\n", dso, sym, p }' |
            classify | sort -t$'\t' -k2,2 -gr >"$work/cats"
        {
            echo
            echo "## $model $method: $tps tokens/s (loqt ${args[*]})"
            echo
            echo "| part | share of samples |"
            echo "|---|---:|"
            awk -F'\t' '{ printf "| %s | %.1f%% |\n", $1, $2 }' "$work/cats"
        } | tee -a "$out"
    done
done
echo "profile: written to $out" >&2
