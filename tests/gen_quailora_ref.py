#!/usr/bin/env python3
"""Independent reference for QuAILoRA's closed-form initialization (tests/test_lora.c).

Written from the objective (docs/methods.md, QuAILoRA; CLoQ arXiv 2501.18475, QERA arXiv 2410.06040),
not from loqt's C code, in float64 torch:
  E = W0 - deq NF4(W0)                    (NF4 as tests/gen_quant_ref.py implements it: block 64, absmax)
  H = X^T X + lambda I, lambda = ridge * trace(X^T X) / in
  the rank-r minimizer of tr((E - M) H (E - M)^T) is M = trunc_r(E L) L^-1, with H = L L^T.
Writes quailora_ref.bin into argv[1]: int32 [out, in, r], float32 [alpha, ridge], float32 W0 (out x in),
float32 G = X^T X (in x in, the Gram loqt's layer is given), float32 M = s B A (out x in), float64
[f(M), f(0)] (the objective at the optimum and at zero init).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_quant_ref import block_absmax, nf4_codes, nf4_dequant  # noqa: E402

OUT, IN, N, R, ALPHA, RIDGE = 80, 48, 400, 6, 12.0, 1e-3


def main():
    rng = np.random.default_rng(2024)
    # a weight with a decaying spectrum, noise and outlier columns; inputs with channel scales
    # over two orders of magnitude, outlier channels and a shared factor (anisotropic)
    W = 0.01 * rng.standard_normal((OUT, IN))
    for k in range(6):
        W += 0.05 / (1 + k) * np.outer(rng.standard_normal(OUT), rng.standard_normal(IN))
    W[:, 3::17] *= 4
    W0 = W.astype(np.float32)
    sc = np.exp(-4.6 * np.arange(IN) / IN) * np.where(np.arange(IN) % 13 == 5, 10.0, 1.0)
    X = (rng.standard_normal((N, IN)) + 0.5 * rng.standard_normal((N, 1))) * sc
    G = (X.T @ X).astype(np.float32)

    flat = W0.reshape(-1)
    am = block_absmax(flat)
    deq = nf4_dequant(nf4_codes(flat, am), am, flat.size).reshape(OUT, IN)
    E = torch.from_numpy((W0 - deq).astype(np.float32)).double()  # the residual as fp32 holds it
    Gd = torch.from_numpy(G).double()
    lam = RIDGE * torch.trace(Gd) / IN
    H = Gd + lam * torch.eye(IN, dtype=torch.float64)
    L = torch.linalg.cholesky(H)
    U, S, Vh = torch.linalg.svd(E @ L, full_matrices=False)
    M = (U[:, :R] * S[:R]) @ Vh[:R, :] @ torch.linalg.inv(L)

    def f(Mx):
        D = E - Mx
        return float(torch.trace(D @ H @ D.T))

    # the optimum is no worse than the uncalibrated truncated SVD of E (a sanity check here)
    U2, S2, Vh2 = torch.linalg.svd(E, full_matrices=False)
    assert f(M) <= f((U2[:, :R] * S2[:R]) @ Vh2[:R, :]) + 1e-12
    path = os.path.join(sys.argv[1], "quailora_ref.bin")
    with open(path, "wb") as fh:
        fh.write(np.array([OUT, IN, R], dtype=np.int32).tobytes())
        fh.write(np.array([ALPHA, RIDGE], dtype=np.float32).tobytes())
        fh.write(W0.tobytes())
        fh.write(G.tobytes())
        fh.write(M.numpy().astype(np.float32).tobytes())
        fh.write(np.array([f(M), f(torch.zeros_like(M))], dtype=np.float64).tobytes())


if __name__ == "__main__":
    main()
