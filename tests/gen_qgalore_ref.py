#!/usr/bin/env python3
"""Independent reference for tests/test_qgalore.c: a few Q-GaLore steps on one layer.

Written from the Q-GaLore paper's algorithm and docs/methods.md, in torch, not from loqt's C
code.  The weight lives only as int8 codes: asymmetric per group of 256 elements of the flattened
matrix, with 0 inside each group's range (lo = min(min, 0), hi = max(max, 0), scale =
max(hi - lo, 1e-5) / 255, zero = clamp(-round(lo / scale), 0, 255), code = clamp(round(x / scale)
+ zero, 0, 255), value = (code - zero) * scale, all in float32, round half to even), re-quantized
by rounding to nearest after each update (loqt's --stochastic-round 0; its random draws cannot be
reproduced here).  P is stored as int4 codes of the same kind (scale over 15) and used
dequantized.  For each step: G = dY^T X of two micro-batches; a refresh when the step is at
least the layer's gap after the last one (step 0 is one): P from the exact SVD of G (sign
convention of loqt's SVD: the entry of largest magnitude of each left singular vector is
positive), |cos| of the old and new top singular vectors (unquantized) into a queue of QUEUE;
a full queue with mean >= 0.4 doubles the gap (the queue is kept); Adam's moments reset at a
change of P (bias correction restarted).  R = G P^T (out >= in) or P^T G, Adam (eps after the
bias correction) gives U = -lr m_hat / (sqrt(v_hat) + eps), and W <- (1 - lr wd) W +
scale back(U), computed in float64 from the dequantized W and rounded to float32 before it is
quantized again.

Writes qgalore_<name>.bin into argv[1]: int32 header [out, in, N, steps, rank, queue], float32 W0,
then for each step X [N, in], dY [N, out], the dequantized W after the step and the gap after the
step (one float32).
"""
import os
import sys

import numpy as np
import torch

from ref_linalg import svd_signed

LR, B1, B2, EPS, WD, SCALE = 0.01, 0.9, 0.95, 1e-6, 0.01, 0.25
THRESHOLD, GAMMA, GROUP = 0.4, 2, 256


def quantize(x, qmax):
    """x (float32, any shape) -> its dequantized value on the asymmetric per-group grid."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    out = torch.empty_like(flat)
    for g0 in range(0, n, GROUP):
        v = flat[g0:g0 + GROUP]
        lo = torch.clamp(v.min(), max=0.0)
        hi = torch.clamp(v.max(), min=0.0)
        rng = hi - lo
        s = torch.where(rng > 1e-5, rng, torch.tensor(1e-5, dtype=torch.float32)) / qmax
        z = torch.clamp(-torch.round(lo / s), 0, qmax)
        q = torch.clamp(torch.round(v / s) + z, 0, qmax)
        out[g0:g0 + GROUP] = (q - z) * s
    return out.reshape(x.shape)



def run(out, inn, N, steps, rank, queue_size, drift, seed):
    g = torch.Generator().manual_seed(seed)
    W0 = (0.02 * torch.randn(out, inn, generator=g)).float()
    X0 = torch.randn(N, inn, generator=g).float()
    dY0 = torch.randn(N, out, generator=g).float()
    left = out >= inn
    r = min(rank, inn if left else out)
    record = [W0.clone()]
    W = quantize(W0, 255)
    P = top = m = v = None
    gap, last, queue, t_offset = 1, None, [], 0
    for s in range(steps):
        # drift: the data moves a little from step to step (the subspace stays); 1: independent
        X = (X0 + drift * torch.randn(N, inn, generator=g)).float()
        dY = (dY0 + drift * torch.randn(N, out, generator=g)).float()
        record += [X, dY]
        G = dY.double().T @ X.double()
        if last is None or s - last >= gap:
            U, _, Vh = svd_signed(G)
            Pn = Vh[:r, :] if left else U[:, :r]
            new_top = Pn[0, :] if left else Pn[:, 0]
            if top is not None:
                c = abs(float(top @ new_top) / float(top.norm() * new_top.norm()))
                if len(queue) == queue_size:
                    queue.pop(0)
                queue.append(c)
                if len(queue) == queue_size and sum(queue) / queue_size >= THRESHOLD:
                    gap = int(gap * GAMMA)
                m = torch.zeros_like(m)
                v = torch.zeros_like(v)
                t_offset = s
            top = new_top.float().double()
            P = quantize(Pn.float(), 15).double()
            last = s
        R = G @ P.T if left else P.T @ G
        if m is None:
            m = torch.zeros_like(R)
            v = torch.zeros_like(R)
        t = s + 1 - t_offset
        m = B1 * m + (1 - B1) * R
        v = B2 * v + (1 - B2) * R * R
        Ud = -(LR / (1 - B1 ** t)) * m / (v.sqrt() / np.sqrt(1 - B2 ** t) + EPS)
        back = Ud @ P if left else P @ Ud
        W = quantize((W.double() * (1 - LR * WD) + SCALE * back).float(), 255)
        record += [W.clone(), torch.tensor([float(gap)])]
    return record


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    cases = [  # name, out, in, N, steps, rank, queue, drift
        ("left_stay", 48, 32, 12, 9, 4, 2, 0.05),
        ("right_stay", 24, 40, 12, 9, 4, 2, 0.05),
        ("left_moving", 48, 32, 12, 9, 4, 2, 1e3),
    ]
    for k, (name, out, inn, N, steps, rank, queue, drift) in enumerate(cases):
        rec = run(out, inn, N, steps, rank, queue, drift, 4321 + k)
        with open(os.path.join(outdir, f"qgalore_{name}.bin"), "wb") as f:
            f.write(np.array([out, inn, N, steps, rank, queue], dtype="<i4").tobytes())
            for a in rec:
                f.write(a.numpy().astype("<f4").tobytes())
    print(f"wrote {len(cases)} Q-GaLore reference cases to {outdir}")


if __name__ == "__main__":
    main()
