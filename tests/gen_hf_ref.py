"""Writes LLaMA checkpoints in Hugging Face layout, and the logits a plain PyTorch LLaMA computes
from them, for loqt's loader to be checked against.

usage: gen_hf_ref.py OUTDIR
  OUTDIR/hf_gqa_tied/       config.json, three BF16 shards model-0000N-of-00003.safetensors and
                            model.safetensors.index.json; 4 query heads over 2 key/value heads,
                            tie_word_embeddings (no lm_head.weight)
  OUTDIR/hf_mqa_mixed/      config.json and one model.safetensors: one key/value head for all 4,
                            an untied lm_head, linears in F16, norms in F32, embedding and lm_head
                            in BF16
  OUTDIR/hf_ref.safetensors <name>.inputs I32 [B, T] and <name>.logits F32 [B, T, V] for both
usage: gen_hf_ref.py --fixture DIR --vocab V --shard VAL_SHARD --batch B --seq T
  writes a GQA + tied BF16 sharded directory of vocabulary V to DIR, and DIR.expected.tsv: the loss
  of every position of the first batch of B x T tokens of VAL_SHARD (a loqt token shard) as
  `loqt eval --per-token` lists them (index, target, loss)

Everything here is written from the formats' descriptions, not from loqt's code:
- safetensors: u64 little-endian header length N, N bytes of JSON (padded with spaces),
  then the data buffer; each entry {"dtype", "shape", "data_offsets": [begin, end)} relative to
  the buffer.  BF16 is the upper half of an IEEE float32 (rounded to nearest even here by torch).
- the index: {"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}.
- the model (HF LlamaForCausalLM): x = embed[ids]; per layer x += o(attn(rope(q(n1(x))),
  rope(k(n1(x))), v(n1(x)))), x += down(silu(gate(n2(x))) * up(n2(x))); logits = lm_head(norm(x)),
  with RMSNorm w * x / sqrt(mean(x^2) + eps), rotate-half RoPE (dims i and i + hd/2) with
  inv_freq = theta^(-2i/hd), causal softmax(q k^T / sqrt(hd)), and key/value head h // (H / Hkv)
  serving query head h.  Computed in float64 from the stored (rounded) weights.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)

DTYPE_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32"}
RAW_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.int32: torch.int32}


def tensor_bytes(t):
    """Little-endian bytes of a contiguous tensor (bfloat16 through an int16 view: numpy has none)."""
    raw = t.contiguous().view(RAW_VIEW[t.dtype]).numpy()
    return raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor), stored in that order."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors:
        b = tensor_bytes(t)
        header[name] = {"dtype": DTYPE_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def hf_config(c):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": c["hidden"], "intermediate_size": c["inter"], "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
        "head_dim": c["hidden"] // c["heads"], "vocab_size": c["vocab"],
        "max_position_embeddings": c["max_pos"], "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "tie_word_embeddings": c["tied"], "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "pretraining_tp": 1, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.44.0",
    }


def random_weights(c, seed):
    """HF tensor names -> float32 tensors (weights [out, in]); norms near 1 but not 1, so a norm
    that is not loaded shows."""
    g = torch.Generator().manual_seed(seed)
    d, F, V, hd = c["hidden"], c["inter"], c["vocab"], c["hidden"] // c["heads"]
    kv = c["kv_heads"] * hd

    def randn(*shape, std):
        return torch.randn(*shape, generator=g) * std

    w = {"model.embed_tokens.weight": randn(V, d, std=0.5)}
    for l in range(c["layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = 1 + randn(d, std=0.2)
        w[p + "self_attn.q_proj.weight"] = randn(d, d, std=d ** -0.5)
        w[p + "self_attn.k_proj.weight"] = randn(kv, d, std=d ** -0.5)
        w[p + "self_attn.v_proj.weight"] = randn(kv, d, std=d ** -0.5)
        w[p + "self_attn.o_proj.weight"] = randn(d, d, std=d ** -0.5)
        w[p + "post_attention_layernorm.weight"] = 1 + randn(d, std=0.2)
        w[p + "mlp.gate_proj.weight"] = randn(F, d, std=d ** -0.5)
        w[p + "mlp.up_proj.weight"] = randn(F, d, std=d ** -0.5)
        w[p + "mlp.down_proj.weight"] = randn(d, F, std=F ** -0.5)
    w["model.norm.weight"] = 1 + randn(d, std=0.2)
    if not c["tied"]:
        w["lm_head.weight"] = randn(V, d, std=d ** -0.5)
    return w


def rmsnorm(x, w, eps):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rope(x, T, hd, theta):
    """x [B, heads, T, hd], rotate-half pairing."""
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    a, b = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def llama_logits(c, w, ids):
    """ids [B, T] -> logits [B, T, V] in float64, from weights w (any float dtype)."""
    w = {k: v.double() for k, v in w.items()}
    B, T = ids.shape
    H, Hkv, d = c["heads"], c["kv_heads"], c["hidden"]
    hd, eps = d // H, 1e-5
    x = w["model.embed_tokens.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    for l in range(c["layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, Hkv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, Hkv, hd).transpose(1, 2)
        q, k = rope(q, T, hd, 10000.0), rope(k, T, hd, 10000.0)
        group = torch.arange(H) // (H // Hkv)  # the key/value head of each query head
        s = q @ k[:, group].transpose(-1, -2) / math.sqrt(hd)
        att = torch.softmax(s.masked_fill(causal, float("-inf")), dim=-1) @ v[:, group]
        x = x + att.transpose(1, 2).reshape(B, T, d) @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    head = w["model.embed_tokens.weight"] if c["tied"] else w["lm_head.weight"]
    return rmsnorm(x, w["model.norm.weight"], eps) @ head.T


def write_dir(out, c, w, dtype_of, n_shards):
    """Writes config.json and the weights (each converted by dtype_of(name)) in n_shards shards
    (1: a single model.safetensors).  Returns the stored weights, as read back they are."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(c), f, indent=2)
    stored = [(n, t.to(dtype_of(n))) for n, t in w.items()]
    if n_shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), stored)
    else:
        per = -(-len(stored) // n_shards)
        weight_map, total = {}, 0
        for s in range(n_shards):
            part = stored[s * per:(s + 1) * per]
            fname = "model-%05d-of-%05d.safetensors" % (s + 1, n_shards)
            write_safetensors(os.path.join(out, fname), part)
            for n, t in part:
                weight_map[n] = fname
                total += len(tensor_bytes(t))
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return dict(stored)


CASES = {
    "hf_gqa_tied": dict(hidden=64, inter=176, layers=2, heads=4, kv_heads=2, vocab=96, max_pos=64, tied=True),
    "hf_mqa_mixed": dict(hidden=64, inter=160, layers=2, heads=4, kv_heads=1, vocab=80, max_pos=64, tied=False),
}


def mixed_dtype(name):
    if name.endswith("norm.weight"):
        return torch.float32
    if "proj" in name:
        return torch.float16
    return torch.bfloat16


def gen_all(outdir):
    ref = []
    for i, (name, c) in enumerate(CASES.items()):
        w = random_weights(c, 100 + i)
        if name == "hf_gqa_tied":
            stored = write_dir(os.path.join(outdir, name), c, w, lambda n: torch.bfloat16, 3)
        else:
            stored = write_dir(os.path.join(outdir, name), c, w, mixed_dtype, 1)
        g = torch.Generator().manual_seed(7 + i)
        ids = torch.randint(0, c["vocab"], (2, 24), generator=g)
        logits = llama_logits(c, stored, ids)
        ref += [(name + ".inputs", ids.to(torch.int32)), (name + ".logits", logits.float())]
        print("%s: %d tensors, logits std %.3f" % (os.path.join(outdir, name), len(stored), logits.std().item()))
    write_safetensors(os.path.join(outdir, "hf_ref.safetensors"), ref)


def read_shard(path):
    """A loqt token shard: 64-byte header (magic, version, vocab, count), uint16 ids."""
    with open(path, "rb") as f:
        raw = f.read()
    magic, _version, vocab, n = struct.unpack("<8sIIQ", raw[:24])
    assert magic == b"LOQTSHRD", path
    return np.frombuffer(raw[64:64 + 2 * n], dtype="<u2").astype(np.int64), vocab


def gen_fixture(out, vocab, shard, B, T):
    c = dict(hidden=32, inter=64, layers=2, heads=4, kv_heads=2, vocab=vocab, max_pos=64, tied=True)
    stored = write_dir(out, c, random_weights(c, 5), lambda n: torch.bfloat16, 2)
    tokens, _ = read_shard(shard)
    stream = torch.from_numpy(tokens[:B * T + 1].copy())
    ids, targets = stream[:-1].view(B, T), stream[1:].view(B, T)
    logp = torch.log_softmax(llama_logits(c, stored, ids), dim=-1)
    loss = -logp.gather(-1, targets[..., None])[..., 0].reshape(-1)
    with open(out + ".expected.tsv", "w") as f:
        f.write("index\ttarget\tloss\n")
        for i in range(B * T):
            f.write("%d\t%d\t%.6f\n" % (i, int(targets.reshape(-1)[i]), float(loss[i])))


def main(argv):
    if len(argv) == 2:
        gen_all(argv[1])
        return 0
    if len(argv) == 11 and argv[1] == "--fixture":
        opts = dict(zip(argv[3::2], argv[4::2]))
        gen_fixture(argv[2], int(opts["--vocab"]), opts["--shard"], int(opts["--batch"]), int(opts["--seq"]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
