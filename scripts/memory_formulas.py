#!/usr/bin/python3
"""The LoQT paper's Table 3 memory formulas, evaluated for the model sizes of configs/.

    /usr/bin/python3 scripts/memory_formulas.py > table.md

Per projection (m <= n the smaller and larger dimension, rank r), in elements:
    full:   weights mn,           optimizer 2mn,      gradients mn
    LoRA:   weights mn + mr + nr, optimizer 2mr + 2nr, gradients mr + nr
    GaLore: weights mn,           optimizer mr + 2nr,  gradients mn
    LoQT:   weights mn (4-bit) + mr + nr, optimizer 2nr, gradients nr
Embeddings, norms and lm_head are trained densely by every method (weights p, optimizer 2p,
gradients p).  Every element is 16 bits except LoQT's 4-bit W, as in the papers' estimates.
Independent of the C planner on purpose: docs/memory.md puts the two side by side.
"""
import json
import os

SIZES = [("60m", 128), ("130m", 256), ("350m", 256), ("1b", 512), ("3b", 512), ("7b", 1024),
         ("13b", 1024)]
GIB = 1024.0 ** 3


def shapes(c):
    d, f = c["hidden_size"], c["intermediate_size"]
    return [(d, d)] * 4 + [(f, d), (f, d), (d, f)]


def table3(c, method, rank):
    """(weights, optimizer, gradients) in bytes for the whole model"""
    d, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    dense = 2 * V * d + (2 * L + 1) * d
    w, o, g = 2.0 * dense, 4.0 * dense, 2.0 * dense  # 16-bit weights, Adam m and v, gradients
    for out, inp in shapes(c):
        m, n = min(out, inp), max(out, inp)
        r = min(rank, m)
        if method == "full":
            bw, bo, bg = 2 * m * n, 4 * m * n, 2 * m * n
        elif method == "lora":
            bw, bo, bg = 2 * (m * n + m * r + n * r), 4 * (m * r + n * r), 2 * (m * r + n * r)
        elif method == "galore":
            bw, bo, bg = 2 * m * n, 2 * (m * r + 2 * n * r), 2 * m * n
        else:  # loqt
            bw, bo, bg = 0.5 * m * n + 2 * (m * r + n * r), 4 * n * r, 2 * n * r
        w, o, g = w + L * bw, o + L * bo, g + L * bg
    return w, o, g


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    print("| model | rank | method | weights | optimizer | gradients | total | / full |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rank in SIZES:
        with open(os.path.join(root, f"llama_{name}.json")) as fh:
            c = json.load(fh)
        full = None
        for method in ("full", "lora", "galore", "loqt"):
            w, o, g = table3(c, method, rank)
            t = w + o + g
            full = full or t
            print(f"| {name} | {rank} | {method} | {w / GIB:.2f} | {o / GIB:.2f} | {g / GIB:.2f} | "
                  f"{t / GIB:.2f} | {t / full:.2f} |")


if __name__ == "__main__":
    main()
