"""Independent PyTorch LLaMA used as the reference for the C trainer and as the speed baseline.

Written from the model description (HF transformers' LlamaForCausalLM semantics), not copied:
  token embedding; per layer: RMSNorm -> q, k, v (no bias, weight [out, in]) -> RoPE with the
  "rotate-half" pairing (dims i and i + d/2 of each head) -> causal softmax attention scaled by
  1/sqrt(head_dim) -> o_proj -> residual; RMSNorm -> down(silu(gate(x)) * up(x)) -> residual;
  final RMSNorm; lm_head (with tie_word_embeddings the embedding matrix itself, one parameter
  shared by both uses); mean cross-entropy over all B*T positions.  Grouped-query attention
  (num_key_value_heads < num_attention_heads) repeats each key/value head for its group of query
  heads.
Parameter names equal HF names, so a state_dict of this model is a HF LLaMA checkpoint.

Unlike HF, forward() takes explicit targets (already shifted by the caller); nothing is shifted here.
Works for float32 and float64 (the reference generator runs both to measure float32 noise).

Also here: the size table of the papers, the warmup + cosine learning-rate schedule of the
GaLore/LoQT reference code, and a tiny safetensors writer/reader (no safetensors package needed).
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# hidden, intermediate, layers, heads (vocab 32000, max seq 1024; 7b/13b 2048)
SIZES = {
    "9m": (128, 352, 4, 4),
    "20m": (256, 688, 4, 4),
    "35m": (384, 1024, 6, 8),
    "60m": (512, 1376, 8, 8),
    "130m": (768, 2048, 12, 12),
    "350m": (1024, 2736, 24, 16),
    "1b": (2048, 5461, 24, 32),
    "3b": (2560, 6848, 32, 32),
    "7b": (4096, 11008, 32, 32),
    "13b": (5120, 13824, 40, 40),
}

CONFIG_DEFAULTS = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None -> num_attention_heads (HF behaviour)
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


class LlamaConfig:
    """The subset of HF LlamaConfig keys this model uses; unknown keys are kept but ignored."""

    def __init__(self, **kw):
        for k, v in CONFIG_DEFAULTS.items():
            setattr(self, k, kw.get(k, v))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.extra = {k: v for k, v in kw.items() if k not in CONFIG_DEFAULTS}
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size %d not divisible by num_attention_heads %d"
                             % (self.hidden_size, self.num_attention_heads))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads not divisible by num_key_value_heads")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("head_dim must be even for RoPE")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    def to_dict(self):
        return {k: getattr(self, k) for k in CONFIG_DEFAULTS}


def load_config(src):
    """LlamaConfig from a dict with HF keys, a JSON string, or a path to a config.json."""
    if isinstance(src, LlamaConfig):
        return src
    if isinstance(src, str):
        if os.path.exists(src):
            with open(src) as f:
                src = json.load(f)
        else:
            src = json.loads(src)
    return LlamaConfig(**src)


def size_config(name, vocab_size=32000, max_position_embeddings=None):
    """Config of one of the papers' model sizes ("20m", "60m", ...)."""
    if name not in SIZES:
        raise ValueError("unknown model size %r (known: %s)" % (name, " ".join(SIZES)))
    h, i, l, a = SIZES[name]
    if max_position_embeddings is None:
        max_position_embeddings = 2048 if name in ("7b", "13b") else 1024
    return LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=l,
                       num_attention_heads=a, num_key_value_heads=a, vocab_size=vocab_size,
                       max_position_embeddings=max_position_embeddings)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        # At least float32 inside, as HF does for half-precision inputs; float64 stays float64.
        dt = x.dtype
        xf = x.float() if dt in (torch.float16, torch.bfloat16) else x
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dt)


def rope_cos_sin(T, head_dim, theta, dtype, device=None):
    """cos, sin [T, head_dim] for positions 0..T-1.  Angles are computed in float64 and rounded
    once to `dtype` (HF rounds inv_freq and the angles to float32 first; the difference is ~1e-6
    at these lengths and this is the more accurate of the two)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, d/2]
    ang = torch.cat([ang, ang], dim=-1)                               # dims i and i + d/2 share
    return ang.cos().to(dtype=dtype, device=device), ang.sin().to(dtype=dtype, device=device)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x [B, H, T, D]; out_i = x_i cos - x_{i+d/2} sin, out_{i+d/2} = x_{i+d/2} cos + x_i sin
    return x * cos + rotate_half(x) * sin


# The attention's two products; a test may replace it (tests/gen_llama_ref.py: bf16 operands).
matmul = torch.matmul


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.nkv != self.nh:  # grouped-query attention: each kv head serves nh/nkv q heads
            rep = self.nh // self.nkv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        s = s.masked_fill(mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        y = matmul(p, v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg = load_config(cfg)
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            # one parameter: named_parameters() lists it once, as model.embed_tokens.weight
            self.lm_head.weight = self.model.embed_tokens.weight
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std=0.02):
        """normal(0, std) for every linear and embedding, ones for the norms, in named_parameters
        order (the draws depend only on the seed set before construction)."""
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)

    def forward(self, input_ids, targets=None):
        """input_ids [B, T] int -> (logits [B, T, V], mean cross-entropy over B*T or None)."""
        cfg = self.config
        B, T = input_ids.shape
        if T > cfg.max_position_embeddings:
            raise ValueError("sequence length %d > max_position_embeddings %d"
                             % (T, cfg.max_position_embeddings))
        x = self.model.embed_tokens(input_ids.long())
        cos, sin = rope_cos_sin(T, cfg.head_dim, cfg.rope_theta, x.dtype, x.device)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True = masked (future)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        logits = self.lm_head(self.model.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T).long())
        return logits, loss


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def lr_lambda(step, warmup_steps, total_steps, min_lr_ratio):
    """Learning-rate multiplier of the GaLore/LoQT reference code ("cosine" scheduler): linear warmup
    from 0 (step 0 has multiplier 0), then cosine decay from 1 to min_lr_ratio at total_steps."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- safetensors, by hand -------------------------------------------------------------------

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
              np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.int8): "I8",
              np.dtype(np.uint8): "U8", np.dtype(np.int16): "I16", np.dtype(np.uint16): "U16"}
_ST_NP = {v: k for k, v in _ST_DTYPES.items()}


def _as_numpy(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(t)


def write_safetensors(path, tensors, metadata=None):
    """tensors: ordered dict name -> numpy array or torch tensor (stored in that order, little
    endian); metadata: dict of strings.  Header padded with spaces to a multiple of 8 bytes.
    Written to path.tmp and renamed, so a failed run never leaves a truncated file."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = _as_numpy(t)
        if a.dtype not in _ST_DTYPES:
            raise TypeError("%s: unsupported dtype %s" % (name, a.dtype))
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """-> (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, d in header.items():
        b, e = d["data_offsets"]
        dt = _ST_NP[d["dtype"]].newbyteorder("<")
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(d["shape"])
    return out, meta
