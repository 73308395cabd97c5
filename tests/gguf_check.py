"""Checks GGUF files that `loqt export --format gguf` wrote, from the format's definition alone
(numpy + struct; no llama.cpp or gguf-py code): tests/test_gguf.c runs it on one model exported
four times (f32, f16, q8_0, q4_0), beside the same model's dense safetensors export (Hugging Face
layout) and the logits loqt computes for a token sequence.

What it checks, each with its own tolerance (printed on failure):
  structure   magic, version 3, the key-values and their value types (every llama.* key against
              config.json), tensor names, shapes (ne[0] the row length), types (norms F32, the
              matrices in the file's type, a q4_0 file's output.weight in Q8_0), offsets aligned to
              general.alignment, in order, without overlaps, the file exactly covered;
  tensors     F32 bit-identical to the dense export, with q and k rows permuted as llama.cpp's
              converter permutes them (per head: view (2, hd/2) -> transpose); F16 bit-identical to
              numpy's round-to-nearest-even float16 of those values; Q8_0 and Q4_0 blocks
              bit-identical to this file's own quantizer (the block rules of src/io/gguf.h) and
              every dequantized value within half a quantization step (Q4_0: a whole step for the
              values the clamp at code 15 takes);
  logits      a LLaMA forward pass over each file's dequantized tensors with llama.cpp's RoPE
              pairing (adjacent dimensions 2i, 2i+1) matches loqt's logits within the type's
              relative error (||diff|| / ||logits||): f32 1e-5, f16 1e-3, q8_0 5e-2, q4_0 0.3, or three
              times the error that random noise of the rounding's size gives, if larger; the
              same pass with Hugging Face's pairing on the permuted weights must miss by 100 times
              f32's tolerance at least (the permutation matters, so the check can fail);
  tokenizer   (--cases) the embedded vocabulary: token types, BOS/EOS/UNK ids, and llama.cpp's
              SentencePiece merge by scores (llm_tokenizer_spm, re-implemented here) over the
              embedded tokens reproduces the reference encodings of llama-tokenizer-js exactly, for
              every case up to --max-case-bytes of text.

usage: gguf_check.py --dense DIR --logits FILE [--cases FILE] [--max-case-bytes N]
                     --f32 A.gguf --f16 B.gguf --q8_0 C.gguf --q4_0 D.gguf
Prints "ok NAME" or "FAIL NAME: why" per check and "gguf_check: N passed, N failed"; exit status 1
on a failure.
"""
import argparse
import heapq
import json
import struct
import sys

import numpy as np

# ---------------------------------------------------------------- the GGUF format

VTYPES = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STR, ARR = 8, 9
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0 = 0, 1, 2, 8
TYPE_NAMES = {GGML_F32: "F32", GGML_F16: "F16", GGML_Q4_0: "Q4_0", GGML_Q8_0: "Q8_0"}
BLOCK = 32
BLOCK_BYTES = {GGML_Q8_0: 2 + 32, GGML_Q4_0: 2 + 16}


class Reader:
    def __init__(self, buf):
        self.b, self.p = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.b[self.p:self.p + n]
        if len(s) != n:
            raise ValueError("string past the end of the file")
        self.p += n
        return s.decode("utf-8")

    def value(self, vtype):
        if vtype == STR:
            return self.string()
        if vtype == ARR:
            etype, n = self.take("<I"), self.take("<Q")
            return (etype, [self.value(etype) for _ in range(n)])
        return self.take(VTYPES[vtype])


def read_gguf(path):
    buf = open(path, "rb").read()
    r = Reader(buf)
    g = {"size": len(buf), "buf": buf}
    g["magic"] = buf[:4]
    r.p = 4
    g["version"], n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    g["kv"], g["vtype"] = {}, {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.take("<I")
        if key in g["kv"]:
            raise ValueError("key %s repeats" % key)
        g["vtype"][key] = vtype
        g["kv"][key] = r.value(vtype)
    g["tensors"] = {}
    order = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        g["tensors"][name] = {"ne": ne, "type": r.take("<I"), "offset": r.take("<Q")}
        order.append(name)
    g["order"] = order
    align = g["kv"].get("general.alignment", 32)
    g["align"] = align
    g["data_start"] = (r.p + align - 1) // align * align
    g["header_end"] = r.p
    return g


def nbytes(t):
    n = int(np.prod(t["ne"]))
    if t["type"] == GGML_F32:
        return 4 * n
    if t["type"] == GGML_F16:
        return 2 * n
    return n // BLOCK * BLOCK_BYTES[t["type"]]


def raw(g, name):
    t = g["tensors"][name]
    start = g["data_start"] + t["offset"]
    return g["buf"][start:start + nbytes(t)]


def blocks(g, name):
    """(scales as float32, codes) of a Q8_0 / Q4_0 tensor: codes int8 [nb, 32] or the 32 unpacked
    4-bit codes [nb, 32] (element j: low nibble of byte j, element j+16: its high nibble)."""
    t = g["tensors"][name]
    a = np.frombuffer(raw(g, name), dtype=np.uint8).reshape(-1, BLOCK_BYTES[t["type"]])
    d = a[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
    if t["type"] == GGML_Q8_0:
        return d, a[:, 2:].copy().view(np.int8).astype(np.int32)
    q = a[:, 2:]
    return d, np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.int32)


def dequant(g, name):
    """The tensor as float32, shaped [ne[n-1], ..., ne[0]] (row-major)."""
    t = g["tensors"][name]
    shape = list(reversed(t["ne"]))
    if t["type"] == GGML_F32:
        return np.frombuffer(raw(g, name), dtype="<f4").reshape(shape)
    if t["type"] == GGML_F16:
        return np.frombuffer(raw(g, name), dtype="<f2").astype(np.float32).reshape(shape)
    d, q = blocks(g, name)
    if t["type"] == GGML_Q4_0:
        q = q - 8
    return (q.astype(np.float32) * d[:, None]).reshape(shape)


# ---------------------------------------------------------------- the references

def read_safetensors(path):
    buf = open(path, "rb").read()
    n = struct.unpack_from("<Q", buf, 0)[0]
    head = json.loads(buf[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", k
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(buf[8 + n + b:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out


def permute(w, n_head):
    """llama.cpp's converter: rows of each head viewed as (2, hd/2), transposed."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(hf, cfg):
    """GGUF name -> float32 values as the file must hold them."""
    H = cfg["num_attention_heads"]
    e = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"],
         "output.weight": hf["lm_head.weight"]}
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for l in range(cfg["num_hidden_layers"]):
        for hf_name, gg in names.items():
            w = hf["model.layers.%d.%s.weight" % (l, hf_name)]
            if gg in ("attn_q", "attn_k"):
                w = permute(w, H)
            e["blk.%d.%s.weight" % (l, gg)] = w
    return e


def expected_type(file_type, name, ndim, ne0):
    if ndim < 2 or file_type == GGML_F32:
        return GGML_F32
    if file_type == GGML_Q4_0 and name == "output.weight":
        file_type = GGML_Q8_0
    if file_type in (GGML_Q8_0, GGML_Q4_0) and ne0 % BLOCK:
        return GGML_F16
    return file_type


def quantize(x, qtype):
    """This file's own quantizer for the block rules of src/io/gguf.h, in float32 throughout."""
    xb = x.astype(np.float32).reshape(-1, BLOCK)
    if qtype == GGML_Q8_0:
        d = (np.abs(xb).max(axis=1) / np.float32(127)).astype(np.float16).astype(np.float32)
        safe = np.where(d == 0, np.float32(1), d)
        q = np.where(d[:, None] == 0, 0, np.clip(np.rint(xb / safe[:, None]), -127, 127))
    else:
        m = xb[np.arange(len(xb)), np.abs(xb).argmax(axis=1)]
        d = (m / np.float32(-8)).astype(np.float16).astype(np.float32)
        safe = np.where(d == 0, np.float32(1), d)
        q = np.where(d[:, None] == 0, 8, np.clip(np.rint(xb / safe[:, None]) + 8, 0, 15))
    return d, q.astype(np.int32)


# ---------------------------------------------------------------- the forward pass

def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def rope(x, base, pairing):
    """x [T, H, hd]; llama.cpp rotates (2i, 2i+1), Hugging Face (i, i + hd/2), by pos * base^(-2i/hd)."""
    T, H, hd = x.shape
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if pairing == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., :hd // 2], x[..., hd // 2:]
    ra, rb = a * c - b * s, a * s + b * c
    out = np.empty_like(x)
    if pairing == "adjacent":
        out[..., 0::2], out[..., 1::2] = ra, rb
    else:
        out[..., :hd // 2], out[..., hd // 2:] = ra, rb
    return out


def forward(W, kv, ids, pairing="adjacent"):
    d = kv["llama.embedding_length"]
    H = kv["llama.attention.head_count"]
    hd = d // H
    eps, base = kv["llama.attention.layer_norm_rms_epsilon"], kv["llama.rope.freq_base"]
    T = len(ids)
    f = {k: v.astype(np.float64) for k, v in W.items()}
    x = f["token_embd.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(kv["llama.block_count"]):
        p = "blk.%d." % l
        h = rmsnorm(x, f[p + "attn_norm.weight"], eps)
        q = rope((h @ f[p + "attn_q.weight"].T).reshape(T, H, hd), base, pairing)
        k = rope((h @ f[p + "attn_k.weight"].T).reshape(T, H, hd), base, pairing)
        v = (h @ f[p + "attn_v.weight"].T).reshape(T, H, hd)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, d)
        x = x + o @ f[p + "attn_output.weight"].T
        h = rmsnorm(x, f[p + "ffn_norm.weight"], eps)
        g, u = h @ f[p + "ffn_gate.weight"].T, h @ f[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ f[p + "ffn_down.weight"].T
    return rmsnorm(x, f["output_norm.weight"], eps) @ f["output.weight"].T


# ---------------------------------------------------------------- llama.cpp's SPM tokenizer

def utf8_len(byte):
    return 1 if byte < 0x80 else 2 if byte >> 5 == 6 else 3 if byte >> 4 == 14 else 4 if byte >> 3 == 30 else 1


def spm_encode(text, vocab, scores, add_bos, bos):
    """llm_tokenizer_spm: space prefix, spaces escaped to U+2581, UTF-8 characters as symbols;
    repeatedly merge the adjacent pair whose concatenation is a token of highest score (leftmost
    first among equal scores); a final symbol that is no token becomes its bytes' <0xXX> tokens."""
    out = [bos] if add_bos else []
    b = ("\u2581" + text.replace(" ", "\u2581")).encode("utf-8")
    start, size = [], []
    o = 0
    while o < len(b):
        n = min(utf8_len(b[o]), len(b) - o)
        start.append(o)
        size.append(n)
        o += n
    N = len(start)
    prev, nxt = list(range(-1, N - 1)), list(range(1, N + 1))
    nxt[-1] = -1
    queue = []

    def try_pair(left, right):
        if left < 0 or right < 0:
            return
        tid = vocab.get(b[start[left]:start[left] + size[left] + size[right]])
        if tid is not None:
            heapq.heappush(queue, (-scores[tid], left, right, size[left] + size[right]))

    for i in range(1, N):
        try_pair(i - 1, i)
    while queue:
        _, left, right, n = heapq.heappop(queue)
        if size[left] == 0 or size[right] == 0 or size[left] + size[right] != n:
            continue
        size[left] += size[right]
        size[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        try_pair(prev[left], left)
        try_pair(left, nxt[left])
    i = 0
    while i != -1:
        piece = b[start[i]:start[i] + size[i]]
        tid = vocab.get(piece)
        if tid is not None:
            out.append(tid)
        else:
            out.extend(vocab[("<0x%02X>" % c).encode()] for c in piece)
        i = nxt[i]
    return out


# ---------------------------------------------------------------- the checks

class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, cond, why):
        if cond:
            self.passed += 1
            print("ok " + name)
        else:
            self.failed += 1
            print("FAIL %s: %s" % (name, why))
        sys.stdout.flush()
        return cond


def check_structure(c, tag, g, cfg, file_type):
    c.check(tag + "_header", g["magic"] == b"GGUF" and g["version"] == 3,
            "magic %r version %r" % (g["magic"], g["version"]))
    kv, vt = g["kv"], g["vtype"]
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    ftypes = {GGML_F32: 0, GGML_F16: 1, GGML_Q4_0: 2, GGML_Q8_0: 7}
    want = {  # key: (GGUF value type, value)
        "general.architecture": (STR, "llama"), "general.alignment": (4, 32),
        "general.file_type": (4, ftypes[file_type]),
        "llama.context_length": (4, cfg["max_position_embeddings"]), "llama.embedding_length": (4, d),
        "llama.block_count": (4, cfg["num_hidden_layers"]),
        "llama.feed_forward_length": (4, cfg["intermediate_size"]), "llama.rope.dimension_count": (4, d // H),
        "llama.attention.head_count": (4, H), "llama.attention.head_count_kv": (4, cfg["num_key_value_heads"]),
        "llama.attention.layer_norm_rms_epsilon": (6, float(np.float32(cfg["rms_norm_eps"]))),
        "llama.rope.freq_base": (6, float(np.float32(cfg["rope_theta"]))),
        "llama.vocab_size": (4, cfg["vocab_size"]),
        "tokenizer.ggml.model": (STR, "llama"), "tokenizer.ggml.bos_token_id": (4, 1),
        "tokenizer.ggml.eos_token_id": (4, 2), "tokenizer.ggml.unknown_token_id": (4, 0),
        "tokenizer.ggml.add_bos_token": (7, True), "tokenizer.ggml.add_eos_token": (7, False),
    }
    bad = ["%s: %r (type %r), want %r (type %d)" % (k, kv.get(k), vt.get(k), v, t)
           for k, (t, v) in want.items() if vt.get(k) != t or kv.get(k) != v]
    c.check(tag + "_metadata", not bad, "; ".join(bad))
    V = cfg["vocab_size"]
    arrays = {"tokenizer.ggml.tokens": STR, "tokenizer.ggml.scores": 6, "tokenizer.ggml.token_type": 5}
    bad = ["%s: %r" % (k, vt.get(k)) for k, et in arrays.items()
           if vt.get(k) != ARR or kv[k][0] != et or len(kv[k][1]) != V]
    c.check(tag + "_vocab_arrays", not bad, "not arrays of %d of the right type: %s" % (V, bad))

    names = ["token_embd.weight", "output_norm.weight", "output.weight"]
    for l in range(cfg["num_hidden_layers"]):
        names += ["blk.%d.%s.weight" % (l, n) for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                      "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    c.check(tag + "_tensor_names", sorted(names) == sorted(g["tensors"]),
            "missing %s, unexpected %s" % (sorted(set(names) - set(g["tensors"])),
                                            sorted(set(g["tensors"]) - set(names))))
    F, V = cfg["intermediate_size"], cfg["vocab_size"]
    shapes = {"token_embd.weight": [d, V], "output.weight": [d, V], "output_norm.weight": [d]}
    for l in range(cfg["num_hidden_layers"]):
        p = "blk.%d." % l
        shapes.update({p + "attn_norm.weight": [d], p + "ffn_norm.weight": [d], p + "ffn_gate.weight": [d, F],
                       p + "ffn_up.weight": [d, F], p + "ffn_down.weight": [F, d]})
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            shapes[p + n + ".weight"] = [d, d]
    bad = ["%s ne %s type %s" % (n, t["ne"], t["type"]) for n, t in g["tensors"].items()
           if n in shapes and (t["ne"] != shapes[n] or t["type"] != expected_type(file_type, n, len(t["ne"]), t["ne"][0]))]
    c.check(tag + "_tensor_shapes_types", not bad, "; ".join(bad))
    spans = sorted((t["offset"], t["offset"] + nbytes(t), n) for n, t in g["tensors"].items())
    bad = [n for o, e, n in spans if o % g["align"]]
    bad += ["%s overlaps %s" % (a[2], b[2]) for a, b in zip(spans, spans[1:]) if a[1] > b[0]]
    end = g["data_start"] + (spans[-1][1] + g["align"] - 1) // g["align"] * g["align"]
    pad = g["buf"][g["header_end"]:g["data_start"]]
    c.check(tag + "_layout", not bad and g["data_start"] % g["align"] == 0 and g["size"] == end and not any(pad),
            "%s; data at %d, file %d bytes, expected %d" % (bad, g["data_start"], g["size"], end))


def check_tensors(c, tag, g, expect, file_type):
    bad = []
    worst = 0.0
    for name, x in expect.items():
        t = g["tensors"].get(name)
        if t is None:
            continue
        x = np.ascontiguousarray(x, dtype=np.float32)
        if t["type"] == GGML_F32:
            if np.frombuffer(raw(g, name), dtype="<f4").tobytes() != x.tobytes():
                bad.append(name + " (F32 values differ)")
        elif t["type"] == GGML_F16:
            if np.frombuffer(raw(g, name), dtype="<u2").tobytes() != x.astype(np.float16).view(np.uint16).tobytes():
                bad.append(name + " (F16 bits differ from numpy's rounding)")
        else:
            d, q = blocks(g, name)
            dw, qw = quantize(x, t["type"])
            if not (np.array_equal(d, dw) and np.array_equal(q, qw)):
                bad.append("%s (%s blocks differ from the reference quantizer in %d of %d scales, %d codes)" % (
                    name, TYPE_NAMES[t["type"]], int((d != dw).sum()), len(d), int((q != qw).sum())))
            err = np.abs(dequant(g, name).reshape(-1, BLOCK) - x.reshape(-1, BLOCK)) / np.maximum(np.abs(d), 1e-30)[:, None]
            step = np.full(err.shape, 0.5)
            if t["type"] == GGML_Q4_0:
                safe = np.where(d == 0, 1, d)[:, None]
                # the clamp at code 15 takes values near -m: a whole step, plus the scale's fp16
                # rounding (|m / d| <= 8 / (1 - 2^-11))
                step[x.reshape(-1, BLOCK) / safe + 8 > 15.5] = 8 / (1 - 2.0 ** -11) - 7
            zero = d == 0
            worst = max(worst, float((err[~zero] / step[~zero]).max(initial=0)))
            if (err[~zero] > step[~zero] * (1 + 1e-4)).any() or (zero[:, None] & (x.reshape(-1, BLOCK) != 0)).any():
                bad.append("%s (an error above the step bound: worst %.4g of the bound)" % (name, worst))
    what = {GGML_F32: "bit-identical to the dense export (q, k permuted)", GGML_F16: "numpy float16 of the dense export",
            GGML_Q8_0: "blocks as the reference quantizer, errors within half a step",
            GGML_Q4_0: "blocks as the reference quantizer, errors within half a step (a step where clamped)"}[file_type]
    c.check(tag + "_tensor_values", not bad, "expected %s: %s" % (what, "; ".join(bad[:6])))


# ||logits - loqt's|| / ||loqt's|| at most: f32 only the forward pass's rounding; the others bound
# How much the type's rounding may move the test model's logits (hidden 64, 2 layers, trained 30
# steps).  Whether the blocks are right is checked exactly above (bit-identical to the reference
# quantizer, every value within half a step), so this only catches gross errors (a wrong layout or
# scale moves logits by order 1).  The bound is the larger of a fixed tolerance per type and three
# times the model's own sensitivity: the logits' relative change when every weight moves by random
# noise of the same RMS, tensor by tensor, as the type's rounding moved it.  The sensitivity differs
# by method and by the last bits of training (relora's model, still at grad norm 3 after 30 steps,
# measured f16 1.1e-3 and q4_0 0.18-0.39 on two CPUs whose GEMMs round differently, where the
# others measured f16 at most 6e-4, q8_0 0.0007-0.024 and q4_0 0.005-0.17).  Over the methods the
# error measured 0.3x to 6x the noise's (dqt's q4_0, whose weights sit on an integer grid, the
# most), so the fixed tolerances stay the bound for the well-conditioned models.
TOL = {GGML_F32: 1e-5, GGML_F16: 1e-3, GGML_Q8_0: 5e-2, GGML_Q4_0: 0.3}
NOISE_FACTOR = 3.0


def rel_error(got, ref):
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def noise_sensitivity(W, expect, kv, ids, ref):
    """The logits' relative error with each f32 weight moved by Gaussian noise of the RMS by which
    the file's rounding moved that tensor (0 when nothing was rounded)."""
    rng = np.random.default_rng(0)
    noisy = {}
    for n, w in W.items():
        x = expect[n].astype(np.float32).reshape(w.shape)
        rms = float(np.sqrt(np.mean((w.astype(np.float64) - x) ** 2)))
        noisy[n] = x + rng.normal(0.0, rms, x.shape).astype(np.float32) if rms > 0 else x
    return rel_error(forward(noisy, kv, ids), ref)


def check_logits(c, tag, g, file_type, ids, ref, expect):
    W = {n: dequant(g, n) for n in g["tensors"]}
    kv = g["kv"]
    got = forward(W, kv, ids)
    rel = rel_error(got, ref)
    sens = noise_sensitivity(W, expect, kv, ids, ref) if file_type != GGML_F32 else 0.0
    bound = max(TOL[file_type], NOISE_FACTOR * sens)
    print("# %s: logits relative error %.3g (bound %.3g: tolerance %g, noise of the rounding's size %.3g), "
          "max |diff| %.3g, max |logit| %.3g" % (tag, rel, bound, TOL[file_type], sens,
                                                  float(np.abs(got - ref).max()), float(np.abs(ref).max())))
    c.check(tag + "_logits", rel <= bound, "relative error %.4g > %.4g" % (rel, bound))
    if file_type == GGML_F32:
        wrong = rel_error(forward(W, kv, ids, pairing="half"), ref)
        print("# %s: with Hugging Face's RoPE pairing on the permuted weights: relative error %.3g" % (tag, wrong))
        # ten times the f32 tolerance: the wrong pairing is then caught with a margin (measured
        # 0.6e-3 to 0.37 relative over the methods, against at most 2.3e-6 for the right one)
        c.check(tag + "_rope_pairing_matters", wrong > 10 * TOL[GGML_F32],
                "the wrong pairing gives relative error %.3g, not above %g: the test cannot tell" % (wrong, 10 * TOL[GGML_F32]))


def check_tokenizer(c, g, cases_path, max_bytes):
    kv = g["kv"]
    tokens, scores, types = kv["tokenizer.ggml.tokens"][1], kv["tokenizer.ggml.scores"][1], kv["tokenizer.ggml.token_type"][1]
    n_pieces = sum(1 for t in types if t != 5)
    want_types = [2, 3, 3] + [6] * 256
    bad = [i for i in range(259) if types[i] != want_types[i]]
    bad += [i for i in range(259) if i >= 3 and tokens[i] != "<0x%02X>" % (i - 3)]
    bad += [i for i in range(259, n_pieces) if types[i] != 1]
    c.check("tokenizer_types", not bad and tokens[:3] == ["<unk>", "<s>", "</s>"],
            "token types / special pieces wrong at ids %s" % bad[:10])
    vocab = {t.encode("utf-8"): i for i, t in enumerate(tokens)}
    n = skipped = 0
    fails = []
    for line in open(cases_path, encoding="utf-8"):
        if not line.startswith("E "):
            continue
        parts = line.split()
        bos, hexed, ids = parts[1] == "1", parts[2], [int(x) for x in parts[4:]]
        text = bytes.fromhex(hexed).decode("utf-8") if hexed != "-" else ""
        if len(text.encode("utf-8")) > max_bytes or not text:
            skipped += 1  # empty: llama.cpp gives [BOS], llama-tokenizer-js nothing (docs/export.md)
            continue
        n += 1
        got = spm_encode(text, vocab, scores, bos, 1)
        if got != ids:
            fails.append("%r: got %s, want %s" % (text[:60], got[:12], ids[:12]))
    print("# tokenizer: %d reference encodings compared, %d skipped (empty or over %d bytes)" % (n, skipped, max_bytes))
    c.check("tokenizer_spm_reproduces_reference", n > 0 and not fails,
            "%d of %d differ: %s" % (len(fails), n, "; ".join(fails[:3])))
    # the scores decide: merging by the opposite order must break some of the reference cases
    flipped = [-x for x in scores]
    differ = sum(spm_encode(t, vocab, flipped, True, 1) != spm_encode(t, vocab, scores, True, 1)
                 for t in ("grabbed", "The President said that", "tokenization of merges", "  indentation"))
    c.check("tokenizer_scores_matter", differ > 0, "reversed scores encode the same: the check cannot tell")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dense", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--cases")
    ap.add_argument("--max-case-bytes", type=int, default=16384)
    for t in ("f32", "f16", "q8_0", "q4_0"):
        ap.add_argument("--" + t, required=True)
    a = ap.parse_args()
    cfg = json.load(open(a.dense + "/config.json"))
    expect = expected_tensors(read_safetensors(a.dense + "/model.safetensors"), cfg)
    lb = open(a.logits, "rb").read()
    T, V = struct.unpack_from("<ii", lb, 0)
    ids = np.frombuffer(lb, dtype="<i4", count=T, offset=8)
    ref = np.frombuffer(lb, dtype="<f4", count=T * V, offset=8 + 4 * T).reshape(T, V).astype(np.float64)
    c = Checks()
    files = {"f32": (a.f32, GGML_F32), "f16": (a.f16, GGML_F16), "q8_0": (a.q8_0, GGML_Q8_0), "q4_0": (a.q4_0, GGML_Q4_0)}
    for tag, (path, ft) in files.items():
        try:
            g = read_gguf(path)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError) as e:
            c.check(tag + "_parse", False, "%s: %s" % (path, e))
            continue
        check_structure(c, tag, g, cfg, ft)
        check_tensors(c, tag, g, expect, ft)
        check_logits(c, tag, g, ft, ids, ref, expect)
        if tag == "f32" and a.cases:
            check_tokenizer(c, g, a.cases, a.max_case_bytes)
    print("gguf_check: %d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
