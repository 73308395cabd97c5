#!/usr/bin/env python3
"""Independent reference for tests/test_dqt.c: the 8-bit activation quantizer, a BitNet b1.58
layer and a linear layer over n-bit integer weights, in float32 torch with autograd.

Written from the BitNet b1.58 formulas (and docs/methods.md), not from loqt's C code:
  activations, per token (row): s = 127 / max(max|x|, 1e-5), x' = clamp(round(x s), -128, 127) / s;
  BitNet weights, per tensor: d = max(mean|W|, 1e-5), W' = clamp(round(W / d), -1, 1) * d;
  straight-through estimators: x + (x' - x).detach() and W + (W' - W).detach(), so autograd gives
  dX = dY W' and dW = dY^T x'.
The mean is taken in float64 and rounded to float32 once (loqt sums in double); round is
half-to-even, as torch.round.

Writes into argv[1]:
  lowbit_actq.bin:   int32 [N, cols], float32 X, Xq
  lowbit_bitnet.bin: int32 [out, in, N], float32 W, X, dY, Y, dX, dW, Wq
  lowbit_dqt.bin:    int32 [out, in, N, bits], int32 codes [out*in], float32 scale [out],
                     X, dY, Y, dX, dW   (W = codes * scale per row, activations quantized)
"""
import os
import sys

import numpy as np
import torch


def actq(x):
    # as BitNet's code writes it: 127 / max|x| (torch evaluates a number over a tensor as
    # number * reciprocal(tensor))
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


def ste(x, q):
    return x + (q - x).detach()


def bitnet_weights(W):
    d = W.double().abs().mean().float().clamp(min=1e-5)
    return (W / d).round().clamp(-1, 1) * d


def write(path, ints, *arrays):
    with open(path, "wb") as f:
        f.write(np.asarray(ints, dtype=np.int32).tobytes())
        for a in arrays:
            f.write(a.detach().contiguous().numpy().tobytes())


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1234)

    # activations: rows of different scales, an all-zero row, a row below the 1e-5 floor, ties
    N, cols = 7, 37
    X = torch.randn(N, cols, generator=g)
    X[1] *= 100.0
    X[2] *= 1e-3
    X[3] = 0.0
    X[4] *= 1e-7
    X[5] = torch.arange(cols, dtype=torch.float32) - 18.0  # 127 / 18 * integers: exact halves occur
    write(os.path.join(out_dir, "lowbit_actq.bin"), [N, cols], X, actq(X))

    # BitNet b1.58 layer
    out, inn, N = 24, 40, 9
    W = (0.02 * torch.randn(out, inn, generator=g)).requires_grad_(True)
    X = torch.randn(N, inn, generator=g).requires_grad_(True)
    dY = torch.randn(N, out, generator=g)
    Wq = bitnet_weights(W.detach())
    Y = ste(X, actq(X.detach())) @ ste(W, Wq).T
    Y.backward(dY)
    write(os.path.join(out_dir, "lowbit_bitnet.bin"), [out, inn, N], W, X, dY, Y, X.grad, W.grad, Wq)

    # a linear layer over 3-bit codes with one scale per row
    out, inn, N, bits = 13, 50, 6, 3
    codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (out, inn), generator=g, dtype=torch.int32)
    scale = 0.01 * (1.0 + torch.rand(out, generator=g))
    W = (codes.float() * scale[:, None]).requires_grad_(True)
    X = torch.randn(N, inn, generator=g).requires_grad_(True)
    dY = torch.randn(N, out, generator=g)
    Y = ste(X, actq(X.detach())) @ W.T
    Y.backward(dY)
    write(os.path.join(out_dir, "lowbit_dqt.bin"), [out, inn, N, bits], codes.reshape(-1), scale, X, dY, Y,
          X.grad, W.grad)


if __name__ == "__main__":
    main()
