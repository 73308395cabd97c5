"""Writes the PyTorch LLaMA reference files the C tests compare against.

usage: gen_llama_ref.py OUTDIR

OUTDIR/llama_ref.safetensors (tiny config, B=2, T=16, accum=2, 10 AdamW steps):
  inputs, targets   I32 [accum, B, T]  (targets = next tokens of a random stream)
  <HF name>         F32  every initial parameter
  logits [B,T,V], loss [1]             micro-batch 0, initial parameters
  grad.<HF name>                       gradient of micro-batch 0's mean loss
  losses [steps]    full-batch loss (mean over micro-batches of their mean losses) before each step
  losses64 [steps]  the same from a float64 run from the same initial parameters (stored as F32)
  lrs [steps], grad_norms [steps]      learning rate used by each step; total gradient norm
                                       before clipping
  final.<HF name>                      every parameter after the steps
OUTDIR/llama_ref_long.safetensors (same config, B=1, T=64, no training):
  inputs, targets [1, 1, 64], parameters, logits, loss, grad.<HF name>
OUTDIR/llama_ref_gqa_tied.safetensors: as llama_ref.safetensors for CONFIG_GQA_TIED (4 query heads
  over 2 key/value heads, the embedding tied to the output layer: no lm_head.weight, and the
  embedding's gradient holds both uses)
OUTDIR/llama_ref_bf16.safetensors (CONFIG, HP's seed, B=2, T=16; mixed precision): the same model
  and inputs as llama_ref.safetensors' micro-batch 0 under torch.autocast("cpu", dtype=torch.bfloat16)
  (fp32 parameters; linear layers, lm_head and the attention matmuls in bf16): logits, loss,
  grad.<HF name> (fp32 gradients of the fp32 parameters), and the fp32 pass's as fp32.logits,
  fp32.loss, fp32.grad.<HF name>, so the test can state how far bf16 itself moves them; and
  ops.logits, ops.loss, ops.grad.<HF name>: loqt's bf16 semantics in fp32 torch, every product of a
  linear layer, lm_head and attention (forward and both backward products) on bf16-rounded
  operands with fp32 accumulation and fp32 results (autocast also rounds the results)
Every hyperparameter and the config (JSON under "config") are in the __metadata__ as strings.

Training: each micro-batch loss is divided by accum before backward; clip_grad_norm_(1.0) over all
parameters (torch multiplies every gradient by min(1, 1 / (norm + 1e-6))); AdamW; LambdaLR with the
warmup + cosine schedule, scheduler.step() after every optimizer step (so step 0 runs with lr 0, as
in the reference scripts: Adam's moments still advance).
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 128,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
}
CONFIG_GQA_TIED = dict(CONFIG, num_key_value_heads=2, tie_word_embeddings=True)
HP = {
    "seed": 1234, "B": 2, "T": 16, "accum": 2, "steps": 10,
    "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.1,
    "grad_clip": 1.0, "warmup_steps": 2, "total_steps": 10, "min_lr_ratio": 0.1,
    "init_std": 0.02,
}
LONG = {"seed": 4321, "B": 1, "T": 64, "accum": 1}


def random_batches(accum, B, T, V):
    # One random stream of T+1 tokens per sequence: inputs are its first T, targets its last T.
    stream = torch.randint(0, V, (accum, B, T + 1))
    return stream[..., :-1].contiguous(), stream[..., 1:].contiguous()


def fresh_model(hp, config):
    """the seeded model, its batches and a copy of its initial parameters"""
    torch.manual_seed(hp["seed"])
    model = tl.LlamaForCausalLM(config)
    inputs, targets = random_batches(hp["accum"], hp["B"], hp["T"], config["vocab_size"])
    return model, inputs, targets, {n: p.detach().clone() for n, p in model.named_parameters()}


def init_pass(model, inputs, targets):
    """logits, loss and gradients of micro-batch 0 (mean loss, not divided by accum)."""
    model.zero_grad(set_to_none=True)
    logits, loss = model(inputs[0], targets[0])
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return logits.detach(), loss.detach(), grads


def train(model, inputs, targets, hp):
    """The reference training loop; returns per-step full-batch losses, lrs and grad norms."""
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: tl.lr_lambda(s, hp["warmup_steps"], hp["total_steps"], hp["min_lr_ratio"]))
    accum = hp["accum"]
    losses, lrs, norms = [], [], []
    for _ in range(hp["steps"]):
        total = 0.0
        for m in range(accum):
            _, loss = model(inputs[m], targets[m])
            total += loss.item()
            (loss / accum).backward()
        losses.append(total / accum)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, hp["grad_clip"])))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return losses, lrs, norms


def meta_for(cfg, hp, extra=None):
    meta = {k: repr(v) if isinstance(v, float) else str(v) for k, v in hp.items()}
    meta["config"] = json.dumps(cfg)
    meta["loss_definition"] = "mean token cross-entropy over B*T; targets given explicitly (no shift)"
    meta["init"] = "torch.manual_seed(seed); normal(0, init_std) for linears/embeddings in " \
                   "named_parameters order, ones for norms"
    meta["rope"] = "rotate-half pairing (i, i + head_dim/2), inv_freq = theta^(-2i/head_dim), " \
                   "positions 0..T-1, angles in float64"
    meta.update(extra or {})
    return meta


def gen_main(outdir, config=CONFIG, fname="llama_ref.safetensors"):
    hp = HP
    model, inputs, targets, init = fresh_model(hp, config)

    logits, loss, grads = init_pass(model, inputs, targets)
    losses, lrs, norms = train(model, inputs, targets, hp)
    final = {n: p.detach().clone() for n, p in model.named_parameters()}

    # float64 run from the same starting point: how much of a C-vs-torch difference is fp32 noise.
    m64 = tl.LlamaForCausalLM(config).double()
    with torch.no_grad():
        for n, p in m64.named_parameters():
            p.copy_(init[n].double())
    losses64, _, _ = train(m64, inputs, targets, hp)
    final_diff = max((p.detach() - final[n].double()).abs().max().item()
                     for n, p in m64.named_parameters())
    loss_diff = max(abs(a - b) for a, b in zip(losses, losses64))

    t = {"inputs": inputs.int(), "targets": targets.int()}
    t.update(init)
    t["logits"] = logits
    t["loss"] = loss.reshape(1)
    t.update({"grad." + n: g for n, g in grads.items()})
    t["losses"] = torch.tensor(losses, dtype=torch.float32)
    t["losses64"] = torch.tensor(losses64, dtype=torch.float32)
    t["lrs"] = torch.tensor(lrs, dtype=torch.float32)
    t["grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    t.update({"final." + n: p for n, p in final.items()})
    meta = meta_for(config, hp, {
        "schedule": "LambdaLR(warmup+cosine), scheduler.step() after each optimizer step",
        "grad_accum": "each micro-batch loss / accum before backward",
        "clip": "torch.nn.utils.clip_grad_norm_(all params, grad_clip): g *= min(1, c/(norm+1e-6))",
        "fp32_vs_fp64_losses_max_abs_diff": repr(loss_diff),
        "fp32_vs_fp64_final_params_max_abs_diff": repr(final_diff),
    })
    path = os.path.join(outdir, fname)
    tl.write_safetensors(path, t, meta)
    return path, loss.item(), losses, losses64, loss_diff, final_diff


def gen_long(outdir):
    hp = LONG
    model, inputs, targets, init = fresh_model(hp, CONFIG)
    logits, loss, grads = init_pass(model, inputs, targets)
    t = {"inputs": inputs.int(), "targets": targets.int()}
    t.update(init)
    t["logits"] = logits
    t["loss"] = loss.reshape(1)
    t.update({"grad." + n: g for n, g in grads.items()})
    path = os.path.join(outdir, "llama_ref_long.safetensors")
    tl.write_safetensors(path, t, meta_for(CONFIG, dict(hp, init_std=0.02)))
    return path, loss.item()


def bf16_round(x):
    return x.to(torch.bfloat16).to(x.dtype)


class Bf16OperandsMatmul(torch.autograd.Function):
    """a @ b on bf16-rounded operands with an fp32 result; its backward's two products likewise."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return bf16_round(a) @ bf16_round(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g = bf16_round(g)
        return g @ bf16_round(b).transpose(-1, -2), bf16_round(a).transpose(-1, -2) @ g


def bf16_operands_pass(model, inputs, targets):
    """init_pass with every linear layer's and attention matmul's operands rounded to bf16."""
    linear, matmul = torch.nn.functional.linear, tl.matmul
    torch.nn.functional.linear = lambda x, w, b=None: Bf16OperandsMatmul.apply(x, w.t())
    tl.matmul = Bf16OperandsMatmul.apply
    try:
        return init_pass(model, inputs, targets)
    finally:
        torch.nn.functional.linear, tl.matmul = linear, matmul


def gen_bf16(outdir):
    hp = HP
    model, inputs, targets, init = fresh_model(hp, CONFIG)
    logits32, loss32, grads32 = init_pass(model, inputs, targets)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(inputs[0], targets[0])
    loss.float().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}
    t = {"inputs": inputs.int(), "targets": targets.int()}
    t.update(init)
    t["logits"] = logits.detach().float()
    t["loss"] = loss.detach().float().reshape(1)
    t.update({"grad." + n: g for n, g in grads.items()})
    t["fp32.logits"] = logits32
    t["fp32.loss"] = loss32.reshape(1)
    t.update({"fp32.grad." + n: g for n, g in grads32.items()})
    logits_o, loss_o, grads_o = bf16_operands_pass(model, inputs, targets)
    t["ops.logits"] = logits_o
    t["ops.loss"] = loss_o.reshape(1)
    t.update({"ops.grad." + n: g for n, g in grads_o.items()})
    meta = meta_for(CONFIG, dict(hp, steps=0), {
        "autocast": 'torch.autocast("cpu", dtype=torch.bfloat16) around the forward; backward outside',
        "logits_dtype": str(logits.dtype), "loss_dtype": str(loss.dtype),
    })
    path = os.path.join(outdir, "llama_ref_bf16.safetensors")
    tl.write_safetensors(path, t, meta)
    return path, loss.item(), loss32.item(), str(logits.dtype)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: gen_llama_ref.py OUTDIR\n")
        return 2
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    # One thread: bit-for-bit the same files on every machine configuration, and fast at this size.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    path, loss0, losses, losses64, ldiff, pdiff = gen_main(outdir)
    print("%s: init loss %.5f (ln V = 4.85203), losses %s" % (
        path, loss0, " ".join("%.4f" % x for x in losses)))
    print("  fp32 vs fp64: losses max |diff| %.2e, final params max |diff| %.2e" % (ldiff, pdiff))
    path, lossl = gen_long(outdir)
    print("%s: init loss %.5f" % (path, lossl))
    path, loss0, losses, _, ldiff, _ = gen_main(outdir, CONFIG_GQA_TIED, "llama_ref_gqa_tied.safetensors")
    print("%s: init loss %.5f, losses %s (fp32 vs fp64 %.2e)" % (
        path, loss0, " ".join("%.4f" % x for x in losses), ldiff))
    path, lb, l32, ldt = gen_bf16(outdir)
    print("%s: bf16 autocast loss %.5f (fp32 %.5f), logits %s" % (path, lb, l32, ldt))
    print("  %.1f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
