"""Writes a safetensors file from the format's definition alone (numpy + struct + json, no
safetensors or torch code), for tests/test_safetensors.c to read: interop with files that other
writers make.  It deliberately differs from loqt's own writer where the format allows it:
  - the JSON is written by Python's json module with ensure_ascii, so non-ASCII names arrive as
    \\uXXXX escapes (a surrogate pair for the emoji);
  - header keys are not in data order, and "__metadata__" is last;
  - the header is padded so the data buffer starts at an offset that is 3 mod 8 (unaligned).
F16 and BF16 values are rounded here by numpy (round to nearest even), independently of loqt.

usage: gen_safetensors_ref.py OUTDIR   -> OUTDIR/safetensors_ref.safetensors
"""
import json
import os
import struct
import sys

import numpy as np


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even; NaN stays a quiet NaN."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    rounded[nan] = 0x7FC0
    return rounded.astype(np.uint16)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    f32 = np.array([-1.0, -0.75, 3.4028234663852886e38, 1.401298464324817e-45, -0.0, 0.1],
                   dtype=np.float32).reshape(2, 3)
    bf = bf16_bits(np.array([1.0, np.pi, -(2.0 ** -130), np.inf, np.nan], dtype=np.float32))
    f16 = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 2.0 ** -24, 2.0 ** -14, 6.1e-5,
                    np.inf, -np.inf, np.nan, 0.1], dtype=np.float16).reshape(3, 4)
    ids = np.array([-1, 0, 2 ** 40], dtype="<i8")
    mask = np.array([[0, 1], [254, 255]], dtype=np.uint8)
    scalar = np.array(42.5, dtype=np.float32)
    empty = np.zeros((0, 3), dtype=np.float16)

    # (name, dtype, array) in data-buffer order
    tensors = [
        ("ids.i64", "I64", ids),
        ("layer.\u00fc.\u65e5\u672c.\U0001F600", "F16", f16),
        ("weight.f32", "F32", f32),
        ("mask.u8", "U8", mask),
        ("emb.bf16", "BF16", bf),
        ("empty", "F16", empty),
        ("scalar", "F32", scalar),
    ]
    header, blobs, off = {}, [], 0
    for name, dtype, arr in tensors:
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    # header order differs from data order
    order = ["weight.f32", "empty", "emb.bf16", "scalar", tensors[1][0], "mask.u8", "ids.i64"]
    ordered = {k: header[k] for k in order}
    ordered["__metadata__"] = {"format": "pt", "note": "ref \"quoted\" \u00fc"}
    text = json.dumps(ordered).encode("ascii")
    text += b" " * ((3 - 8 - len(text)) % 8)  # 8 + len(text) == 3 (mod 8)
    with open(os.path.join(out, "safetensors_ref.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    main()
