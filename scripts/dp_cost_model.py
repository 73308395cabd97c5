#!/usr/bin/env python3
"""The cost model of loqt's data-parallel training (docs/data_parallel.md), written from the
algorithms' description and the methods' papers, independently of the C code.

  dp_cost_model.py table                     the docs' tables (bytes per optimizer step per rank)
  dp_cost_model.py step CONFIG.json METHOD RANK N ZERO STEPKIND
                                             the bytes each rank sends in one optimizer step, as
                                             JSON: [{"grads": .., "params": .., "control": ..}, ..]
      METHOD: full | loqt | galore | relora; RANK: the methods' --rank; ZERO: 0 | 1;
      STEPKIND: ordinary | refresh (LoQT: the dense G is reduced instead of B's gradient; GaLore:
      the dense gradient goes to every rank) | plu (per-layer updates, an ordinary step) |
      plu-refresh.

What travels (fp32, 4 bytes an element):
  - every method: the gradients of the dense parameters (embedding, lm_head, 2L + 1 norms);
  - full: dW of every projection (out x in);
  - LoQT: dB (larger side x r) on ordinary steps; on refresh steps (and step 0) the dense G
    (out x in) instead, from which every rank computes the same SVD and dB;
  - GaLore: the dense gradient (out x in) on every step (the projection happens after the sum);
  - ReLoRA: the adapters' gradients dA (r x in) and dB (out x r), on every step (the merge of
    W + s B A needs no traffic: every rank merges the same broadcast A and B).
Algorithms, N ranks, chunk c of n elements = [floor(c n / N), floor((c + 1) n / N)):
  - all-reduce (ring): rank r sends 2 n - |c_r| - |c_(r+1) mod N| elements; n when N = 2;
  - --zero 1: a gradient that only the optimizer step reads goes to its unit's owner over a chain
    (every rank but the owner sends it once); a refresh's dense gradient is all-reduced; after the
    update each unit's trainable values go from the owner down a chain (every rank but owner - 1
    sends them once);
  - control: per step a sum of 2 doubles (loss, non-finite flag) and, under --zero 1, 1 (squared
    norm); with per-layer updates 1 (the loss) instead; then 1 (the stop flag) in the training loop.
Buckets (each reduced as one vector): [lm_head, final norm], each block (7 projections, 2 norms),
[embedding].  Owners (--zero 1): units (dense parameters, then projections block by block) by
decreasing optimizer-state bytes, ties to the lower unit, each to the rank with the least so far,
ties to the lower rank.
"""
import json
import sys

F32 = 4
CONFIGS = {  # hidden, intermediate, layers, vocab (the papers' LLaMA sizes)
    "1b": (2048, 5461, 24, 32000),
    "7b": (4096, 11008, 32, 32000),
    "13b": (5120, 13824, 40, 32000),
}
RANKS = {"1b": 512, "7b": 1024, "13b": 1024}  # the papers' ranks at these sizes


def shapes(d, f):
    """out x in of q, k, v, o, gate, up, down"""
    return [(d, d)] * 4 + [(f, d), (f, d), (d, f)]


def lowrank(out, inn, r):
    small, large = min(out, inn), max(out, inn)
    r = min(r, small)
    return r * large  # LoQT's B and GaLore's projected moments: larger side x r


def units(cfg, method, r):
    """per unit: (gradient elements on an ordinary step, on a refresh step, trainable elements,
    optimizer-state elements / 2 under AdamW), in llama_unit_count order"""
    d, f, L, V = cfg
    out = []
    for i in range(2 * L + 3):
        n = V * d if i in (0, 2 * L + 2) else d
        out.append(dict(g=n, g_ref=n, p=n, opt=n, dense=True))
    for _ in range(L):
        for (o, i) in shapes(d, f):
            n, nb = o * i, lowrank(o, i, r)
            if method == "full":
                out.append(dict(g=n, g_ref=n, p=n, opt=n, dense=False))
            elif method == "loqt":
                out.append(dict(g=nb, g_ref=n, p=nb, opt=nb, dense=False))
            elif method in ("galore", "qgalore"):
                out.append(dict(g=n, g_ref=n, p=n, opt=nb, dense=False))
            elif method == "relora":
                na = min(r, o, i) * (o + i)  # A and B, trained by the optimizer
                out.append(dict(g=na, g_ref=na, p=na, opt=na, dense=False))
            else:
                raise SystemExit("unknown method " + method)
    return out


def owners(us, N):
    load = [0] * N
    own = [0] * len(us)
    order = sorted(range(len(us)), key=lambda u: (-us[u]["opt"], u))
    for u in order:
        to = min(range(N), key=lambda q: (load[q], q))
        own[u] = to
        load[to] += us[u]["opt"]
    return own


def buckets(cfg):
    d, f, L, V = cfg
    D = 2 * L + 3
    out = [[D - 1, D - 2]]
    for l in range(L - 1, -1, -1):
        out.append([D + 7 * l + j for j in range(7)] + [1 + 2 * l, 2 + 2 * l])
    out.append([0])
    return out


def ring_sent(n, N, r):
    if N < 2 or n == 0:
        return 0
    c = lambda k: n * k // N
    size = lambda k: c(k + 1) - c(k)
    return 2 * n - size(r) - size((r + 1) % N)


def step_bytes(cfg, method, r, N, zero, kind):
    us = units(cfg, method, r)
    refresh = kind in ("refresh", "plu-refresh")
    own = owners(us, N) if zero else None
    sent = [dict(grads=0, params=0, control=0) for _ in range(N)]
    for b in buckets(cfg):
        shared, to_owner = 0, {}
        for u in b:
            n = us[u]["g_ref"] if refresh else us[u]["g"]
            # views every rank needs: LoQT's G and GaLore's dense gradient on refresh steps
            replicated = refresh and not us[u]["dense"] and method in ("loqt", "galore", "qgalore")
            if not zero or replicated:
                shared += n
            else:
                to_owner[own[u]] = to_owner.get(own[u], 0) + n
        for q in range(N):
            sent[q]["grads"] += F32 * ring_sent(shared, N, q)
            for o, n in to_owner.items():
                if q != o:
                    sent[q]["grads"] += F32 * n
    if zero:
        for u, x in enumerate(us):
            for q in range(N):
                if q != (own[u] - 1) % N:
                    sent[q]["params"] += F32 * x["p"]
    per_layer = kind.startswith("plu")
    doubles = [1] if per_layer else ([2, 1] if zero else [2])
    doubles.append(1)  # the stop flag
    for q in range(N):
        sent[q]["control"] = sum(8 * ring_sent(k, N, q) for k in doubles)
    return sent


def config_of(path):
    c = json.load(open(path))
    return (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"])


def gib(b):
    return b / 2**30


def table():
    """bytes sent per rank in one optimizer step (the mean over ranks), and the implied time of
    that traffic on a 100 Gbit/s link per rank (12.5e9 bytes/s, sending and receiving at once)"""
    print("| model | method | N | all-reduce, ordinary step | at 100 Gbit/s | refresh step | --zero 1, ordinary step (gradients + parameters) | at 100 Gbit/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in CONFIGS.items():
        r = RANKS[name]
        for method in ("full", "loqt", "galore", "qgalore"):
            for N in (2, 8, 64):
                def mean(zero, kind):
                    s = step_bytes(cfg, "galore" if method == "qgalore" else method, r, N, zero, kind)
                    g = sum(x["grads"] for x in s) / N
                    p = sum(x["params"] for x in s) / N
                    if method == "qgalore":
                        p /= 4  # INT8 weights travel as their codes (on paper; group scales left out)
                    return g + p
                ar, zr = mean(0, "ordinary"), mean(1, "ordinary")
                ref = "" if method == "full" else "%.2f GiB" % gib(mean(0, "refresh"))
                print("| %s | %s | %d | %.2f GiB | %.2f s | %s | %.2f GiB | %.2f s |" % (
                    name, method + ("" if method == "full" else " r%d" % r), N, gib(ar), ar / 12.5e9, ref, gib(zr), zr / 12.5e9))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "table":
        table()
    elif len(sys.argv) == 8 and sys.argv[1] == "step":
        cfg = config_of(sys.argv[2])
        print(json.dumps(step_bytes(cfg, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
