#!/usr/bin/env python3
"""Independent reference for tests/test_galore.c: a few GaLore steps on one layer.

Written from the GaLore paper's algorithm (and docs/methods.md), in float64 torch, not from
loqt's C code: for each step the dense gradient G = dY^T X of two micro-batches, on refresh steps
(every GAP steps from step 0) P from the exact SVD of G (sign convention of loqt's SVD: the entry
of largest magnitude of each left singular vector is positive), R = G P^T (out >= in) or P^T G,
Adam (bias-corrected, eps after the correction, as torch.optim.AdamW) on R giving the direction
U = -lr * m_hat / (sqrt(v_hat) + eps), and W <- (1 - lr wd) W + scale * back(U).  At a change of
P the moments are kept, projected (m C, v (C o C)) or reset (bias correction restarted).

Writes galore_<name>.bin into argv[1]: int32 header [out, in, N, steps, rank, gap, state], then
float32 W0, then for each step X [N, in], dY [N, out] and W after the step.
"""
import os
import sys

import numpy as np
import torch

from ref_linalg import svd_signed

LR, B1, B2, EPS, WD, SCALE = 0.01, 0.9, 0.999, 1e-6, 0.01, 0.25
STATES = {"keep": 0, "project": 1, "reset": 2}



def run(out, inn, N, steps, rank, gap, state, seed):
    g = torch.Generator().manual_seed(seed)
    W = (0.02 * torch.randn(out, inn, generator=g)).float()
    left = out >= inn
    r = min(rank, inn if left else out)
    record = [W.clone()]
    W = W.double()
    P = m = v = None
    t_offset = 0
    for s in range(steps):
        X = torch.randn(N, inn, generator=g).float()
        dY = torch.randn(N, out, generator=g).float()
        record += [X, dY]
        G = dY.double().T @ X.double()
        if s % gap == 0:
            U, _, Vh = svd_signed(G)
            Pn = Vh[:r, :] if left else U[:, :r]
            if P is not None and m is not None:
                if state == "project":
                    C = P @ Pn.T if left else P.T @ Pn
                    m = m @ C if left else C.T @ m
                    v = v @ (C * C) if left else (C * C).T @ v
                elif state == "reset":
                    m = torch.zeros_like(m)
                    v = torch.zeros_like(v)
                    t_offset = s
            P = Pn
        R = G @ P.T if left else P.T @ G
        if m is None:
            m = torch.zeros_like(R)
            v = torch.zeros_like(R)
        t = s + 1 - t_offset
        m = B1 * m + (1 - B1) * R
        v = B2 * v + (1 - B2) * R * R
        Ud = -(LR / (1 - B1 ** t)) * m / (v.sqrt() / np.sqrt(1 - B2 ** t) + EPS)
        back = Ud @ P if left else P @ Ud
        W = W * (1 - LR * WD) + SCALE * back
        record.append(W.float())
    return record


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    cases = []
    for state in STATES:
        cases.append((f"left_{state}", 24, 16, 10, 7, 4, 3, state))
        cases.append((f"right_{state}", 12, 20, 10, 7, 4, 3, state))
    for k, (name, out, inn, N, steps, rank, gap, state) in enumerate(cases):
        rec = run(out, inn, N, steps, rank, gap, state, 1234 + k)
        with open(os.path.join(outdir, f"galore_{name}.bin"), "wb") as f:
            f.write(np.array([out, inn, N, steps, rank, gap, STATES[state]], dtype="<i4").tobytes())
            for a in rec:
                f.write(a.numpy().astype("<f4").tobytes())
    print(f"wrote {len(cases)} GaLore reference cases to {outdir}")


if __name__ == "__main__":
    main()
