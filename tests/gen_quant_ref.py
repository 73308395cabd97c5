#!/usr/bin/env python3
"""Independent reference for tests/test_quant.c.

Implements NF4 (bitsandbytes conventions: block 64, absmax, multiply by the fp32 reciprocal,
nearest code by the midpoints with ties to the lower code, high nibble first), loqt's double
quantization of the absmax values, symmetric int8 / int4 and Q-GaLore's asymmetric per-group
quantization in numpy / torch, straight from the definitions in docs/quantization.md, and writes
inputs and expected outputs as raw little-endian files quant_*.bin into the directory argv[1].
The C test compares them bit for bit.
"""
import os
import sys
from decimal import Decimal

import numpy as np
import torch

# The code book as bitsandbytes prints it; everything else is derived from it here.
CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def f32_of_decimal(text):
    """the fp32 nearest to a decimal string (what a C compiler makes of the literal text + 'f');
    numpy's float32(str) would round twice, through float64"""
    d = Decimal(text)
    f = np.float32(float(text))
    cands = [f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))]
    return min(cands, key=lambda c: abs(Decimal(float(c)) - d))


# bitsandbytes' thresholds: the float64 midpoint of neighbouring fp32 codes (exact), printed
# shortest (repr) and compiled as an fp32 literal.  Seven of the fifteen midpoints are exactly
# halfway between two fp32 values; the printed digits pick the side, and for four of them
# (thresholds 0, 8, 12, 14) that is not the side round-half-even would pick.
MIDS = np.array([f32_of_decimal(repr((float(CODE[k]) + float(CODE[k + 1])) / 2.0))
                 for k in range(15)], dtype=np.float32)

BLOCK = 64
DQ_GROUP = 256
F32 = np.float32


def make_input(n, seed=1234):
    rs = np.random.RandomState(seed)
    nb = (n + BLOCK - 1) // BLOCK
    scales = (10.0 ** rs.uniform(-3, 1, size=nb)).astype(F32)
    x = (rs.randn(nb * BLOCK).astype(F32) * np.repeat(scales, BLOCK)).astype(F32)
    # block 3: all zeros
    x[3 * BLOCK:4 * BLOCK] = 0
    # block 5: absmax 1, every midpoint exactly and one ulp either side, plus the codes
    ties = []
    for t in MIDS:
        ties += [t, np.nextafter(t, F32(np.inf)), np.nextafter(t, F32(-np.inf))]
    ties += list(CODE) + [F32(0.5), F32(-0.5), F32(0.25)]
    assert len(ties) == BLOCK
    x[5 * BLOCK:6 * BLOCK] = np.array(ties, dtype=F32)
    # block 7: the same scaled by 2 (exact), so the ties go through the reciprocal
    x[7 * BLOCK:8 * BLOCK] = x[5 * BLOCK:6 * BLOCK] * F32(2)
    # block 9: midpoints times an absmax that is not a power of two
    a = F32(0.3)
    blk = (np.array(ties, dtype=F32) * a).astype(F32)
    blk[list(ties).index(F32(1.0))] = a
    x[9 * BLOCK:10 * BLOCK] = blk
    # block 11: a single non-zero value
    x[11 * BLOCK:12 * BLOCK] = 0
    x[11 * BLOCK + 17] = F32(-3.5)
    return x[:n].copy()


def nf4_codes(x, absmax):
    """codes for x (float32, n) against per-block scales absmax (float32, nb)"""
    n = x.size
    nb = absmax.size
    pad = np.zeros(nb * BLOCK, dtype=F32)
    pad[:n] = x
    blocks = pad.reshape(nb, BLOCK)
    safe = np.where(absmax == 0, F32(1), absmax).astype(F32)
    inv = (F32(1) / safe).astype(F32)
    v = (blocks * inv[:, None]).astype(F32)
    codes = np.searchsorted(MIDS, v, side='left').astype(np.uint8)  # number of midpoints < v
    codes[absmax == 0, :] = 7
    return codes.reshape(-1)[:n]


def pack_nibbles(c):
    c = c.astype(np.uint8)
    if c.size % 2:
        c = np.concatenate([c, np.zeros(1, np.uint8)])
    return ((c[0::2] << 4) | c[1::2]).astype(np.uint8)


def block_absmax(x):
    n = x.size
    nb = (n + BLOCK - 1) // BLOCK
    pad = np.zeros(nb * BLOCK, dtype=F32)
    pad[:n] = np.abs(x)
    return pad.reshape(nb, BLOCK).max(axis=1).astype(F32)


def nf4_dequant(codes, scale, n):
    s = np.repeat(scale, BLOCK)[:n]
    return (CODE[codes[:n]] * s).astype(F32)


def double_quant(absmax):
    nb = absmax.size
    total = 0.0
    for a in absmax:  # sequential float64 sum, the order the C code uses
        total += float(a)
    offset = F32(total / nb)
    q = np.zeros(nb, dtype=np.int8)
    scales = []
    rec = np.zeros(nb, dtype=F32)
    for g0 in range(0, nb, DQ_GROUP):
        dev = (absmax[g0:g0 + DQ_GROUP] - offset).astype(F32)
        m = np.abs(dev).max()
        s = F32(m / F32(127))
        scales.append(s)
        qq = np.clip(np.rint(dev / s), -127, 127) if s > 0 else np.zeros_like(dev)
        q[g0:g0 + DQ_GROUP] = qq.astype(np.int8)
        rec[g0:g0 + DQ_GROUP] = ((qq.astype(F32) * s).astype(F32) + offset).astype(F32)
    return offset, q, np.array(scales, dtype=F32), rec


def sym_quant(x, bits, block):
    qmax = F32(127 if bits == 8 else 7)
    n = x.size
    nb = (n + block - 1) // block
    q = np.zeros(n, dtype=np.int32)
    scales = np.zeros(nb, dtype=F32)
    for b in range(nb):
        xb = x[b * block:(b + 1) * block]
        s = F32(np.abs(xb).max() / qmax)
        scales[b] = s
        if s > 0:
            q[b * block:(b + 1) * block] = np.clip(np.rint(xb / s), -qmax, qmax)
    if bits == 8:
        data = q.astype(np.int8).view(np.uint8)
    else:
        data = pack_nibbles((q & 15).astype(np.uint8))
    return data, scales


def qgalore_quant(x, group, nbit):
    """Q-GaLore's _quantize_tensor, re-stated (valid when every group has both signs)."""
    w = torch.from_numpy(x.copy()).reshape(-1, group)
    mx = w.amax(dim=1, keepdim=True)
    mn = w.amin(dim=1, keepdim=True)
    assert bool((mn <= 0).all()) and bool((mx >= 0).all())
    max_int = 2 ** nbit - 1
    scales = (mx - mn).clamp(min=1e-5) / max_int
    zeros = (-torch.round(mn / scales)).clamp_(0, max_int)
    q = torch.clamp(torch.round(w / scales) + zeros, 0, max_int).to(torch.uint8).reshape(-1)
    q = q.numpy()
    data = q if nbit == 8 else pack_nibbles(q)
    return data, scales.reshape(-1).numpy().astype(F32), zeros.reshape(-1).numpy().astype(np.uint8)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "ref")
    os.makedirs(out, exist_ok=True)

    def w(name, arr):
        np.ascontiguousarray(arr).tofile(os.path.join(out, "quant_" + name + ".bin"))

    n = 300 * BLOCK + 5  # 301 blocks (two double-quant groups), partial last block, odd n
    x = make_input(n)
    w("x", x)

    am = block_absmax(x)
    codes = nf4_codes(x, am)
    w("nf4_absmax", am)
    w("nf4_codes", pack_nibbles(codes))
    w("nf4_deq", nf4_dequant(codes, am, n))

    off, qam, dqs, rec = double_quant(am)
    dcodes = nf4_codes(x, np.where(am == 0, F32(0), rec).astype(F32))
    w("nf4dq_offset", np.array([off], dtype=F32))
    w("nf4dq_qabsmax", qam)
    w("nf4dq_scale", dqs)
    w("nf4dq_codes", pack_nibbles(dcodes))
    w("nf4dq_deq", nf4_dequant(dcodes, rec, n))

    for bits in (8, 4):
        data, sc = sym_quant(x, bits, BLOCK)
        w("sym%d_data" % bits, data)
        w("sym%d_scale" % bits, sc)

    na = 75 * 256
    for bits in (8, 4):
        data, sc, zp = qgalore_quant(x[:na], 256, bits)
        w("asym%d_data" % bits, data)
        w("asym%d_scale" % bits, sc)
        w("asym%d_zero" % bits, zp)
    print("wrote quant reference files to", out)


if __name__ == "__main__":
    main()
