"""Mean Frobenius norms of the LoRA factors A and B in checkpoints: how an init splits s B A
between its factors (docs/finetune_experiment.md).  A checkpoint taken after step 1 holds the
init itself, since the warmup's learning rate is 0 at step 1:
    loqt train --init-from BASE ... --init quailora-closed --num-training-steps 1 --save-every 1 --output-dir D
    python3 experiments/adapter_norms.py D/checkpoints/step-00000001 [more checkpoints...]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from peft_check import read_st  # noqa: E402  (the repository's own safetensors reader)


def main():
    for ckpt in sys.argv[1:]:
        tensors, _ = read_st(os.path.join(ckpt, "lora_model.safetensors"))
        norms = {"A": [], "B": []}
        for name, (_, arr) in tensors.items():
            for f in norms:
                if arr is not None and name.endswith(".lora_%s.weight" % f):
                    norms[f].append(float(np.linalg.norm(arr)))
        if not norms["A"]:
            sys.exit("%s: no lora_A tensors in lora_model.safetensors" % ckpt)
        print("%s: %d layers, mean ||A||_F %.3f, mean ||B||_F %.3f" % (
            ckpt, len(norms["A"]), np.mean(norms["A"]), np.mean(norms["B"])))


if __name__ == "__main__":
    main()
