"""Checks a LoRA adapter directory against Hugging Face PEFT's documented layout, written from PEFT's
convention (peft 0.18: PeftModel.save_pretrained writes adapter_config.json, a LoraConfig, and
adapter_model.safetensors with the state dict of get_peft_model_state_dict: the "lora_" tensors
under the PeftModel's names, base_model.model.<the transformers module name>, adapter name
removed; lora_A is an nn.Linear(in, r) and lora_B an nn.Linear(r, out), so their weights are
[r, in] and [out, r]), not from loqt's code.

  peft_check.py check ADAPTER BASE_CONFIG [BASE_MODEL_NAME]
      names, shapes, dtypes and config keys; exits 1 with the reason
  peft_check.py merge ADAPTER BASE_DIR OUT_DIR
      OUT_DIR/model.safetensors = BASE_DIR's weights with W + s B A for every adapted module,
      s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), as PEFT's LoraLayer scales
      (the safetensors format read and written by hand: 8-byte header length, JSON header, data)
"""
import json
import math
import os
import re
import shutil
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        if t["dtype"] not in DTYPES and t["dtype"] != "BF16":  # codes, counters: not read
            out[name] = (t["dtype"], None)
            continue
        if t["dtype"] == "BF16":
            u = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=DTYPES[t["dtype"]]).astype(np.float32)
        out[name] = (t["dtype"], arr.reshape(t["shape"]))
    return out, meta


def write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def shapes(cfg):
    d, F = cfg["hidden_size"], cfg["intermediate_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    return {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d),
            "gate_proj": (F, d), "up_proj": (F, d), "down_proj": (d, F)}  # (out, in)


def check(adapter, base_config, base_name=None):
    c = json.load(open(os.path.join(adapter, "adapter_config.json")))
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False}
    for k, v in want.items():
        if c.get(k) != v:
            return "adapter_config.json: %s is %r, PEFT's LoRA for causal LMs needs %r" % (k, c.get(k), v)
    for k, types in (("r", (int,)), ("lora_alpha", (int, float)), ("lora_dropout", (int, float)),
                     ("use_rslora", (bool,)), ("target_modules", (list,))):
        if not isinstance(c.get(k), types) or (k == "r" and isinstance(c[k], bool)):
            return "adapter_config.json: %s missing or of the wrong type (%r)" % (k, c.get(k))
    if "base_model_name_or_path" not in c:
        return "adapter_config.json: no base_model_name_or_path"
    if base_name is not None and c["base_model_name_or_path"] != base_name:
        return "base_model_name_or_path is %r, expected %r" % (c["base_model_name_or_path"], base_name)
    bad = [m for m in c["target_modules"] if m not in ATTN + MLP]
    if bad:
        return "target_modules names %s, not LLaMA projections" % bad
    cfg = json.load(open(base_config))
    shp, r, L = shapes(cfg), c["r"], cfg["num_hidden_layers"]
    tensors, meta = read_st(os.path.join(adapter, "adapter_model.safetensors"))
    if meta.get("format") != "pt":
        return "adapter_model.safetensors: __metadata__ format is %r, PEFT writes 'pt'" % meta.get("format")
    expected = set()
    for l in range(L):
        for m in c["target_modules"]:
            for ab in "AB":
                expected.add("base_model.model.model.layers.%d.%s.%s.lora_%s.weight" % (l, "self_attn" if m in ATTN else "mlp", m, ab))
    for name, (dtype, arr) in tensors.items():
        k = KEY.match(name)
        if not k or name not in expected:
            return "tensor %s is not one PEFT names for this config" % name
        l, group, m, ab = int(k.group(1)), k.group(2), k.group(3), k.group(4)
        if (group == "self_attn") != (m in ATTN):
            return "%s: %s is not under %s in LLaMA" % (name, m, group)
        out, inp = shp[m]
        want_shape = (r, inp) if ab == "A" else (out, r)
        if tuple(arr.shape) != want_shape:
            return "%s has shape %s, PEFT's lora_%s is %s" % (name, tuple(arr.shape), ab, want_shape)
        if not np.all(np.isfinite(arr)):
            return "%s has non-finite values" % name
    missing = expected - set(tensors)
    if missing:
        return "missing tensors, e.g. %s" % sorted(missing)[0]
    return None


def merge(adapter, base_dir, out_dir):
    c = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r = c["r"]
    s = c["lora_alpha"] / (math.sqrt(r) if c.get("use_rslora") else r)
    ad, _ = read_st(os.path.join(adapter, "adapter_model.safetensors"))
    base, _ = read_st(os.path.join(base_dir, "model.safetensors"))
    merged = {}
    for name, (_, W) in base.items():
        W = W.astype(np.float64)
        stem = "base_model.model." + name[: -len(".weight")]
        if stem + ".lora_A.weight" in ad:
            A = ad[stem + ".lora_A.weight"][1].astype(np.float64)
            B = ad[stem + ".lora_B.weight"][1].astype(np.float64)
            W = W + s * (B @ A)
        merged[name] = W.astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(base_dir, "config.json"), os.path.join(out_dir, "config.json"))
    write_st(os.path.join(out_dir, "model.safetensors"), merged)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        why = check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        if why:
            print(why)
            sys.exit(1)
    else:
        merge(sys.argv[2], sys.argv[3], sys.argv[4])
