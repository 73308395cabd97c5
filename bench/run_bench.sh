#!/usr/bin/env bash
# Speed benchmark: loqt's own trainer beside a PyTorch baseline of the same model, same shapes, same
# thread count, run one after the other, and the GEMM microbenchmark (bench/gemm_bench.c) first, in
# the same run, so every tokens/s figure also reads as a fraction of the measured GEMM peak.
# Run by `make bench` (env BUILD, PYTHON, GEMM_BENCH).
#
# The baseline is fair: PyTorch's fp32 matmuls run on the system OpenBLAS, so it gets the
# OPENBLAS_CORETYPE loqt's own choice makes (gemm_bench --openblas-coretype; src/kernels/
# openblas_kernels.h), and it runs both in fp32 and in bf16 autocast; loqt's full rows compare
# with the faster of the two.
#
# Environment (defaults in brackets):
#   BENCH_MODELS  model sizes                 [20m 60m]
#   BENCH_METHODS loqt methods per model      [full]   e.g. "full loqt"; non-full rows get --rank
#   BENCH_RANK    rank for non-full methods   [128]
#   BENCH_DTYPES  loqt's --dtype per row      [fp32 bf16]  (bf16 rows: program loqt_bf16)
#   BENCH_STEPS   timed steps per run         [10]     (2 cores: ~6 min in all for the defaults)
#   BENCH_WARMUP  untimed steps first         [2]
#   BENCH_THREADS threads for both programs   [2]
#   BENCH_BATCH, BENCH_SEQ                    [8, 256]
#   BENCH_TIMEOUT seconds per run             [1800]
#   BENCH_TORCH   0 to skip the PyTorch runs  [1]
#   BENCH_TORCH_DTYPES PyTorch configurations  [fp32 bf16]  (bf16: torch.autocast on the CPU)
#   BENCH_GEMM    0 to skip the GEMM microbenchmark  [1]
#   BENCH_GEMM_ARGS extra arguments for gemm_bench, e.g. "--min-time 1"
#   BENCH_LOQT_ARGS extra arguments for `loqt bench`
# Writes bench/results/bench-<date>.json (raw numbers, the GEMM records, machine) and the table between the
# <!-- bench:start --> and <!-- bench:end --> markers of docs/benchmarks.md.  Full rows compare
# with PyTorch; other methods compare with loqt's own full run of the same model.
# A failed run is reported and the others still run; the exit status is then 1.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
MODELS=${BENCH_MODELS:-20m 60m}
METHODS=${BENCH_METHODS:-full}
DTYPES=${BENCH_DTYPES:-fp32 bf16}
RANK=${BENCH_RANK:-128}
STEPS=${BENCH_STEPS:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-2}
BATCH=${BENCH_BATCH:-8}
SEQ=${BENCH_SEQ:-256}
TIMEOUT=${BENCH_TIMEOUT:-1800}
RUN_TORCH=${BENCH_TORCH:-1}
TORCH_DTYPES=${BENCH_TORCH_DTYPES:-fp32 bf16}
RUN_GEMM=${BENCH_GEMM:-1}
LOQT=$BUILD/loqt
GEMM_BENCH=${GEMM_BENCH:-$BUILD/bench/gemm_bench}

stamp=$(date -u +%Y%m%d-%H%M%S)
# Other work on the machine skews the numbers: record the load before and after.
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
logdir=$BUILD/bench-logs/$stamp
mkdir -p "$logdir" bench/results docs
records=$logdir/records.tsv
: >"$records"
failed=0

# Only pass the options `loqt bench` declares (its --help lists them).
loqt_help=$("$LOQT" bench --help 2>&1 || true)
loqt_opts=()
has_opt() { printf '%s\n' "$loqt_help" | grep -q -- "--$1\b"; }
has_opt warmup-steps && loqt_opts+=(--warmup-steps "$WARMUP")
has_opt threads && loqt_opts+=(--threads "$THREADS")

# run NAME MODEL METHOD CMD...: runs with a time limit, logs, appends one record line.
run() {
    local prog=$1 model=$2 method=$3; shift 3
    local log=$logdir/$prog-$model-$method.log
    echo "== $prog $model $method: $*"
    local t0=$SECONDS
    OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS timeout "$TIMEOUT" env ${RUN_ENV[@]+"${RUN_ENV[@]}"} "$@" >"$log" 2>&1
    local rc=$? wall=$((SECONDS - t0))
    local tps rss
    tps=$(sed -n 's/^tokens_per_s:[[:space:]]*\([0-9.eE+-]*\).*/\1/p' "$log" | tail -n 1)
    rss=$(sed -n 's/^peak_rss_mib:[[:space:]]*\([0-9.eE+-]*\).*/\1/p' "$log" | tail -n 1)
    local status=ok
    if [ $rc -ne 0 ] || [ -z "$tps" ] || [ -z "$rss" ]; then
        status=failed; failed=1
        echo "error: $prog $model $method failed (exit $rc, wall ${wall}s); last lines of $log:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
    else
        echo "   tokens_per_s $tps, peak_rss_mib $rss, wall ${wall}s"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$prog" "$model" "$method" "$status" \
        "${tps:-}" "${rss:-}" "$rc" "$wall" "$log" >>"$records"
}

if [ ! -x "$LOQT" ]; then
    echo "error: $LOQT not found; run make first" >&2
    failed=1
fi
RUN_ENV=()

# The GEMM microbenchmark first: the peaks every tokens/s figure is read against, measured in the
# same run (same load, same hour); and the OpenBLAS kernel set the PyTorch runs get.
gemm_log=$logdir/gemm.jsonl
: >"$gemm_log"
coretype=${OPENBLAS_CORETYPE:-}
if [ -x "$GEMM_BENCH" ]; then
    coretype=$("$GEMM_BENCH" --openblas-coretype 2>/dev/null) || coretype=${OPENBLAS_CORETYPE:-}
    if [ "$RUN_GEMM" = 1 ]; then
        echo "== gemm_bench: $GEMM_BENCH --threads $THREADS --models ${MODELS// /,} --batch $BATCH --seq $SEQ ${BENCH_GEMM_ARGS:-}"
        t0=$SECONDS
        # shellcheck disable=SC2086  # BENCH_GEMM_ARGS is a word list on purpose
        if ! OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS timeout "$TIMEOUT" "$GEMM_BENCH" \
            --threads "$THREADS" --models "${MODELS// /,}" --batch "$BATCH" --seq "$SEQ" \
            ${BENCH_GEMM_ARGS:-} >"$gemm_log" 2>"$logdir/gemm.stderr"; then
            echo "error: gemm_bench failed (wall $((SECONDS - t0))s); see $logdir/gemm.stderr" >&2
            failed=1
        else
            echo "   $(grep '"kind":"gemm_peak"' "$gemm_log"), wall $((SECONDS - t0))s"
        fi
    fi
else
    echo "warning: $GEMM_BENCH not found (make gemm-bench): no GEMM peaks, PyTorch keeps OPENBLAS_CORETYPE=${coretype:-(unset)}" >&2
fi
torch_env=()
[ -n "$coretype" ] && torch_env=(OPENBLAS_CORETYPE="$coretype")

for model in $MODELS; do
    for dtype in $DTYPES; do
        prog=loqt
        [ "$dtype" != fp32 ] && prog=loqt_$dtype
        for method in $METHODS; do
            extra=()
            [ "$method" != full ] && extra=(--rank "$RANK")
            [ "$dtype" != fp32 ] && extra+=(--dtype "$dtype")
            if [ -x "$LOQT" ]; then
                # shellcheck disable=SC2086  # BENCH_LOQT_ARGS is a word list on purpose
                run "$prog" "$model" "$method" "$LOQT" bench --model "$model" --method "$method" \
                    ${extra[@]+"${extra[@]}"} --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
                    ${loqt_opts[@]+"${loqt_opts[@]}"} ${BENCH_LOQT_ARGS:-}
            else
                printf '%s\t%s\t%s\tfailed\t\t\t127\t0\t\n' "$prog" "$model" "$method" >>"$records"
            fi
        done
    done
    if [ "$RUN_TORCH" = 1 ]; then
        RUN_ENV=(${torch_env[@]+"${torch_env[@]}"})
        for dtype in $TORCH_DTYPES; do
            prog=torch
            [ "$dtype" != fp32 ] && prog=torch_$dtype
            run "$prog" "$model" full "$PYTHON" bench/torch_baseline.py --model "$model" \
                --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS" --warmup-steps "$WARMUP" \
                --threads "$THREADS" --dtype "$dtype"
        done
        RUN_ENV=()
    fi
done

# Machine description.
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1)
[ -z "$cpu" ] && cpu=$(uname -m)
gemm=$(sed -n 's/^gemm\(_backend\)\{0,1\}:[[:space:]]*//p' "$logdir"/loqt-*.log 2>/dev/null | head -n 1)
# `loqt bench` names it in its first line ("..., gemm openblas").
[ -z "$gemm" ] && gemm=$(sed -n '1s/.*[ ,]gemm \([A-Za-z0-9_-]*\).*/\1/p' "$logdir"/loqt-*.log 2>/dev/null | head -n 1)
if [ -z "$gemm" ] && [ -x "$LOQT" ]; then
    case "$(ldd "$LOQT" 2>/dev/null)" in *libdnnl*) gemm=dnnl ;; *openblas*) gemm=openblas ;; *) gemm=portable ;; esac
fi

out=bench/results/bench-$stamp.json
RECORDS=$records GEMM_LOG=$gemm_log CORETYPE=$coretype OUT=$out STAMP=$stamp NPROC=$(nproc) CPU=$cpu GEMM=${gemm:-unknown} \
MEM_KIB=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo) \
LOAD_BEFORE=${load_before:-} LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) \
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo none) \
STEPS=$STEPS WARMUP=$WARMUP THREADS=$THREADS BATCH=$BATCH SEQ=$SEQ RANK=$RANK \
"$PYTHON" - <<'EOF' || failed=1
import json, os, platform, re, time

e = os.environ
runs = []
for line in open(e["RECORDS"]):
    prog, model, method, status, tps, rss, rc, wall, log = line.rstrip("\n").split("\t")
    r = {"program": prog, "model": model, "method": method, "status": status,
         "tokens_per_s": float(tps) if tps else None, "peak_rss_mib": float(rss) if rss else None,
         "exit_code": int(rc), "wall_s": int(wall)}
    if log and os.path.exists(log):
        lines = open(log, errors="replace").read().splitlines()
        if lines:  # the first line names the model, threads and GEMM library
            r["info"] = lines[0]
        if status != "ok":
            r["output_tail"] = lines[-20:]
    runs.append(r)

settings = {k.lower(): int(e[k]) for k in ("STEPS", "WARMUP", "THREADS", "BATCH", "SEQ", "RANK")}
machine = {"nproc": int(e["NPROC"]), "cpu": e["CPU"], "gemm_backend": e["GEMM"],
           "mem_total_mib": int(e["MEM_KIB"] or 0) // 1024, "os": platform.platform(),
           "python": platform.python_version(),
           "loadavg_before": e["LOAD_BEFORE"], "loadavg_after": e["LOAD_AFTER"]}

# The GEMM microbenchmark's records (bench/gemm_bench.c): peaks, per-model FLOPs per token.
gemm = []
if os.path.exists(e["GEMM_LOG"]):
    for line in open(e["GEMM_LOG"]):
        line = line.strip()
        if line.startswith("{"):
            try:
                gemm.append(json.loads(line))
            except ValueError:
                pass
info = next((g for g in gemm if g["kind"] == "gemm_info"), {})
peak = next((g for g in gemm if g["kind"] == "gemm_peak"), {})
flop_per_token = {g["model"]: g["flop_per_token"] for g in gemm if g["kind"] == "gemm_model"}
# the step's linear and lm_head GEMMs at the microbenchmark's rates, by loqt program: fp32 through
# loqt's backend, bf16 through oneDNN's bf16 matmul
gemm_impl = {"loqt": info.get("loqt_backend"), "loqt_bf16": "dnnl_matmul_bf16"}
gemm_only = {(prog, g["model"]): g["tokens_per_s_gemm_only"] for g in gemm for prog, impl in gemm_impl.items()
             if g["kind"] == "gemm_model" and g["impl"] == impl}
fp32_peak, bf16_peak = peak.get("fp32_gflops"), peak.get("bf16_gflops")

doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": e["COMMIT"],
       "settings": settings, "machine": machine, "openblas_coretype_for_torch": e["CORETYPE"],
       "gemm_peak": peak, "runs": runs, "gemm": gemm}
with open(e["OUT"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def find(prog, model, method):
    for r in runs:
        if r["program"] == prog and r["model"] == model and r["method"] == method:
            return r
    return None

def num(x, fmt="%.0f"):
    return fmt % x if x is not None else "—"

def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "—"

def tps(r):
    return r["tokens_per_s"] if r and r["status"] == "ok" else None

def of_peak(t, model, gflops):
    """tokens/s as a fraction of a GEMM peak: t x model FLOPs per token / peak FLOP/s."""
    f = flop_per_token.get(model)
    if t is None or not f or not gflops:
        return "—"
    return "%.0f%%" % (100.0 * t * f / (gflops * 1e9))

TORCH_NAMES = {"torch": "PyTorch fp32", "torch_bf16": "PyTorch bf16"}

def torch_best(model):
    """The faster of the PyTorch configurations that ran."""
    best = None
    for prog in TORCH_NAMES:
        r = find(prog, model, "full")
        if tps(r) is not None and (best is None or tps(r) > tps(best)):
            best = r
    return best

LOQT_DTYPES = {"loqt": "fp32", "loqt_bf16": "bf16"}
rows = []
for r in runs:
    if r["program"] not in LOQT_DTYPES:
        continue
    if r["method"] == "full":
        base = torch_best(r["model"])
        base_name = TORCH_NAMES[base["program"]] if base else "PyTorch"
    else:  # the same dtype's full run
        base_name, base = "loqt full", find(r["program"], r["model"], "full")
    bt = tps(base)
    br = base["peak_rss_mib"] if base else None
    lt = tps(r)
    lr = r["peak_rss_mib"] if r["status"] == "ok" else None
    share = "—"
    key = (r["program"], r["model"])
    if lt is not None and gemm_only.get(key) and r["method"] == "full":
        share = "%.0f%%" % (100.0 * lt / gemm_only[key])
    rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["model"], r["method"], LOQT_DTYPES[r["program"]], num(lt) if r["status"] == "ok" else "failed",
        of_peak(lt, r["model"], fp32_peak), of_peak(lt, r["model"], bf16_peak), share, base_name,
        num(bt), ratio(lt, bt), num(lr), num(br), ratio(lr, br)))

torch_rows = []
for model in dict.fromkeys(r["model"] for r in runs):
    cells = []
    for prog in TORCH_NAMES:
        r = find(prog, model, "full")
        t = tps(r)
        cells += [num(t) if r is None or r["status"] == "ok" else "failed",
                  of_peak(t, model, fp32_peak), of_peak(t, model, bf16_peak),
                  num(r["peak_rss_mib"]) if r and r["status"] == "ok" else "—"]
    if any(find(p, model, "full") for p in TORCH_NAMES):
        torch_rows.append("| %s | %s |" % (model, " | ".join(cells)))

if fp32_peak:
    peak_text = "GEMM peak at 2048^3 on %d threads: fp32 %.0f GFLOP/s (%s)" % (
        peak.get("threads", settings["threads"]), fp32_peak, peak.get("fp32_impl", "?"))
    if bf16_peak:
        peak_text += ", bf16 %.0f GFLOP/s (%s%s)" % (
            bf16_peak, peak.get("bf16_impl", "?"),
            "" if peak.get("bf16_native") else "; the CPU has no bf16 instructions: emulated")
    else:
        peak_text += "; bf16: none (oneDNN %s has no bf16 matmul for this CPU, ISA %s)" % (
            info.get("dnnl_version", "?"), info.get("dnnl_isa", "?"))
    peak_text += ". Model FLOPs per token = 6 x matrix parameters + 12 x layers x seq x hidden."
else:
    peak_text = "No GEMM microbenchmark in this run (no peak fractions)."

s = settings
block = "\n".join([
    "<!-- bench:start -->",
    "Last run %s (commit %s): batch %d x %d tokens, %d timed steps after %d warm-up steps, "
    "%d threads each; %s, %d cores, loqt GEMM backend %s; PyTorch with OPENBLAS_CORETYPE=%s; "
    "load average %s before, %s after. Raw numbers: `bench/results/%s`."
    % (doc["date"], doc["commit"], s["batch"], s["seq"], s["steps"], s["warmup"], s["threads"],
       machine["cpu"], machine["nproc"], machine["gemm_backend"], e["CORETYPE"] or "(unset)",
       machine["loadavg_before"] or "?", machine["loadavg_after"] or "?",
       os.path.basename(e["OUT"])),
    "",
    peak_text,
    "",
    "| model | method | dtype | loqt tokens/s | of fp32 peak | of bf16 peak | GEMM share (est.) | baseline "
    "| baseline tokens/s | speed ratio | loqt peak RSS (MiB) | baseline peak RSS (MiB) | RSS ratio |",
    "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    *rows,
    "",
    "| model | PyTorch fp32 tokens/s | of fp32 peak | of bf16 peak | peak RSS (MiB) "
    "| PyTorch bf16 tokens/s | of fp32 peak | of bf16 peak | peak RSS (MiB) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    *torch_rows,
    "<!-- bench:end -->",
])

path = "docs/benchmarks.md"
if os.path.exists(path):
    text = open(path).read()
else:
    text = "# Benchmarks\n\nRun `make bench` to fill in the table.\n\n"
m = re.search(r"<!-- bench:start -->.*?<!-- bench:end -->", text, flags=re.S)
if m:
    text = text[:m.start()] + block + text[m.end():]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
with open(path, "w") as f:
    f.write(text)
print("wrote %s and %s" % (e["OUT"], path))
EOF

[ $failed -ne 0 ] && echo "bench: some runs failed (logs in $logdir)" >&2
exit $failed
