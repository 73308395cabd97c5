#!/usr/bin/env python3
"""Independent reference for tests/test_lora.c: a few LoRA and ReLoRA steps on one layer.

Written from the LoRA and ReLoRA papers and their public code's conventions (docs/methods.md), in
float64 torch with autograd and torch.optim.AdamW, not from loqt's C code:
  y = x W^T + s (x A^T) B^T, s = alpha / r, W frozen (fp32 here), A and B trained;
  the loss of a micro-batch is sum(y * dY) (so dY is its gradient), two micro-batches per step;
  ReLoRA: after every R-th update W += s B A, A is drawn again (the draws are written to the file,
  since they come from loqt's own generator on the C side), B = 0, and each of exp_avg and
  exp_avg_sq of A and of B is magnitude-pruned (entries with |x| <= torch.quantile(|x|, ratio)
  become 0) or zeroed; the step counts (bias correction) go on, as in the reference; the learning
  rate of the j-th step after a merge is lr * min(1, (j + 1) / warmup).

Writes lora_<name>.bin into argv[1]: int32 header [out, in, N, steps, rank, relora_steps, warmup,
reset (0 prune, 1 zero)], float32 [alpha, lr, weight decay, prune ratio], then float32 W0, A0,
then per step: X, dY of micro-batch 0 and 1, A, B, W after the step, and after a merge step the
new A (which the C test loads into the layer).
"""
import os
import sys

import numpy as np
import torch

LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-6, 0.01


def prune_(t, ratio):
    thr = torch.quantile(t.abs().flatten(), ratio)
    t.mul_((t.abs() > thr).to(t.dtype))


def lr_scale(step, R, warm):
    if R == 0 or warm == 0 or step < R:
        return 1.0
    j = step % R
    return (j + 1) / warm if j < warm else 1.0


def run(out, inn, N, steps, rank, alpha, R, warm, reset, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    W = 0.02 * torch.randn(out, inn, generator=g, dtype=torch.float64)
    bound = 1.0 / np.sqrt(inn)
    A0 = (torch.rand(rank, inn, generator=g, dtype=torch.float64) * 2 - 1) * bound
    A = A0.clone().requires_grad_(True)
    B = torch.zeros(out, rank, dtype=torch.float64, requires_grad=True)
    s = alpha / rank
    opt = torch.optim.AdamW([A, B], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD)
    rec = [W.clone(), A0.clone()]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = LR * lr_scale(step, R, warm)
        opt.zero_grad()
        for _ in range(2):
            X = torch.randn(N, inn, generator=g, dtype=torch.float64)
            dY = torch.randn(N, out, generator=g, dtype=torch.float64)
            rec += [X, dY]
            Y = X @ W.T + s * (X @ A.T) @ B.T
            (Y * dY).sum().backward()
        opt.step()
        merged = R > 0 and (step + 1) % R == 0
        new_A = None
        if merged:
            with torch.no_grad():
                W = W + s * B @ A
                new_A = (torch.rand(rank, inn, generator=g, dtype=torch.float64) * 2 - 1) * bound
                A.copy_(new_A)
                B.zero_()
                for p in (A, B):
                    st = opt.state[p]
                    for key in ("exp_avg", "exp_avg_sq"):
                        if reset:
                            st[key].zero_()
                        else:
                            prune_(st[key], ratio)
        rec += [A.detach().clone(), B.detach().clone(), W.clone()]
        if merged:
            rec.append(new_A)
    return rec


def write(path, header, floats, rec):
    with open(path, "wb") as f:
        np.asarray(header, dtype=np.int32).tofile(f)
        np.asarray(floats, dtype=np.float32).tofile(f)
        for t in rec:
            t.detach().numpy().astype(np.float32).tofile(f)


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    # name: out, in, N, steps, rank, alpha, R, warmup, reset, prune ratio
    cases = {
        "lora_tall": (24, 16, 6, 5, 4, 8.0, 0, 0, 0, 0.0),
        "lora_wide": (12, 40, 6, 5, 4, 8.0, 0, 0, 0, 0.0),
        "relora_prune": (24, 16, 6, 8, 4, 8.0, 3, 2, 0, 0.9),
        "relora_reset": (12, 40, 6, 7, 4, 8.0, 3, 2, 1, 0.0),
    }
    for k, (name, c) in enumerate(cases.items()):
        out, inn, N, steps, rank, alpha, R, warm, reset, ratio = c
        rec = run(out, inn, N, steps, rank, alpha, R, warm, reset, ratio, 1000 + k)
        write(os.path.join(outdir, f"lora_{name}.bin"), [out, inn, N, steps, rank, R, warm, reset],
              [alpha, LR, WD, ratio], rec)


if __name__ == "__main__":
    main()
