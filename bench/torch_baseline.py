"""PyTorch baseline for the speed benchmark: full training of the same LLaMA with AdamW.

usage: torch_baseline.py --model 20m --batch-size 8 --seq-len 256 --steps 10 [--warmup-steps 2]
                         [--threads 2] [--dtype fp32|bf16] [--lr 1e-3] [--seed 0]

--dtype bf16 runs the forward pass and the loss under torch.autocast("cpu", dtype=torch.bfloat16)
(mixed precision as the papers train: bf16 matmuls, fp32 weights, gradients and AdamW state);
fp32 is plain fp32.  PyTorch's fp32 matmuls run on the system OpenBLAS, whose kernel set follows
OPENBLAS_CORETYPE: bench/run_bench.sh sets the one loqt's choice makes (the first output line
names it).

Each step = forward + backward + AdamW step + zero_grad on random tokens.  The first
--warmup-steps steps are not timed (allocator and thread-pool warm-up).  Ends with
    tokens_per_s: X
    peak_rss_mib: Y
(Y = ru_maxrss of this process, in MiB) which bench/run_bench.sh parses.
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch_llama as tl  # noqa: E402


def blas_libraries():
    """BLAS libraries mapped into this process (what torch's matmuls really run on)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                base = os.path.basename(p)
                if any(s in base for s in ("blas", "mkl", "dnnl", "lapack")):
                    libs.add(os.path.basename(os.path.realpath(p)))
    except OSError:
        pass
    return ",".join(sorted(libs)) or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="20m", help="size: " + " ".join(tl.SIZES))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: forward and loss under CPU bf16 autocast")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.model not in tl.SIZES:
        ap.error("unknown --model %r (known: %s)" % (a.model, " ".join(tl.SIZES)))
    if a.batch_size < 1 or a.seq_len < 1 or a.steps < 1 or a.warmup_steps < 0 or a.threads < 1:
        ap.error("--batch-size, --seq-len, --steps and --threads must be >= 1, --warmup-steps >= 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = tl.size_config(a.model)
    if a.seq_len > cfg.max_position_embeddings:
        ap.error("--seq-len %d > max_position_embeddings %d" % (a.seq_len, cfg.max_position_embeddings))
    model = tl.LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.0)
    V, B, T = cfg.vocab_size, a.batch_size, a.seq_len
    print("model %s: %.2fM params, batch %d x %d, torch %s, %s, %d threads, blas %s, "
          "OPENBLAS_CORETYPE %s" % (
              a.model, tl.param_count(model) / 1e6, B, T, torch.__version__,
              "bf16 autocast" if a.dtype == "bf16" else "fp32", torch.get_num_threads(),
              blas_libraries(), os.environ.get("OPENBLAS_CORETYPE") or "(unset)"), flush=True)

    def step():
        stream = torch.randint(0, V, (B, T + 1))
        # autocast covers the forward and the loss; backward runs outside it, as recommended
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            _, loss = model(stream[:, :-1], stream[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for i in range(a.warmup_steps):
        t0 = time.perf_counter()
        loss = step()
        print("warmup %d/%d: loss %.4f, %.2f s" % (i + 1, a.warmup_steps, loss,
                                                  time.perf_counter() - t0), flush=True)
    start = time.perf_counter()
    step_times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        step_times.append(dt)
        print("step %d/%d: loss %.4f, %.2f s, %.0f tokens/s" % (i + 1, a.steps, loss, dt,
                                                                B * T / dt), flush=True)
    elapsed = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    # The median step is less sensitive to other load on a shared machine than the mean.
    median = sorted(step_times)[len(step_times) // 2]
    print("median_step_tokens_per_s: %.1f" % (B * T / median))
    print("tokens_per_s: %.1f" % (B * T * a.steps / elapsed))
    print("peak_rss_mib: %.1f" % rss_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
