#!/usr/bin/env bash
# Checkpoint files tell the truth, for every registered method: a file named model.safetensors is
# a LLaMA that a Hugging Face loader can load (exactly the HF tensor names of the config, float
# dtypes, [out, in] shapes), and config.json's "loqt_checkpoint" says which file holds the weights
# and whether it is a plain LLaMA; a method's own tensors live in <method>_model.safetensors.
# Every checkpoint loads back (eval) and exports to a plain LLaMA.
# Ends with "N passed, N failed".   BUILD=build bash tests/test_checkpoint_files.sh
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

"$PY" tests/tiny_fixture.py "$T" || { echo "FAIL setup"; echo "0 passed, 1 failed"; exit 1; }
COMMON=(--model "$T/tiny.json" --data "$T/data" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 128
        --num-training-steps 2)

# the registered methods, from --help ("--method full|loqt|...")
methods=$("$LOQT" train --help | sed -n 's/^ *--method \([a-z0-9|]*\) .*/\1/p' | tr '|' ' ')
[ -n "$methods" ] || { echo "FAIL setup: no methods in train --help"; echo "0 passed, 1 failed"; exit 1; }

for m in $methods; do
    extra=()  # a rank the tiny model allows, for the methods that have one
    "$LOQT" memory --model "$T/tiny.json" --max-length 32 --method "$m" --rank 4 >/dev/null 2>&1 && extra=(--rank 4)
    d=$T/run-$m
    if ! "$LOQT" train "${COMMON[@]}" --method "$m" "${extra[@]}" --output-dir "$d" >"$T/out" 2>"$T/err"; then
        bad "train_$m" "$(tail -n 1 "$T/err")"
        continue
    fi
    ck=$d/checkpoints/step-00000002
    # the files against the config's word
    if "$PY" - "$ck" "$m" >"$T/check" 2>&1 <<'EOF'; then ok "files_$m"; else bad "files_$m" "$(tail -n 1 "$T/check")"; fi
import json, os, struct, sys
ck, method = sys.argv[1], sys.argv[2]
cfg = json.load(open(ck + "/config.json"))
note = cfg.get("loqt_checkpoint")
assert note and note["method"] == method, "config.json lacks loqt_checkpoint for %s" % method
weights = note["weights"]
assert os.path.exists(ck + "/" + weights), "config names %s, which is missing" % weights
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h
d, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
kv = d // cfg["num_attention_heads"] * cfg.get("num_key_value_heads", cfg["num_attention_heads"])
want = {"model.embed_tokens.weight": [V, d], "model.norm.weight": [d], "lm_head.weight": [V, d]}
for i in range(L):
    p = "model.layers.%d." % i
    want.update({p + "input_layernorm.weight": [d], p + "post_attention_layernorm.weight": [d],
                 p + "self_attn.q_proj.weight": [d, d], p + "self_attn.k_proj.weight": [kv, d],
                 p + "self_attn.v_proj.weight": [kv, d], p + "self_attn.o_proj.weight": [d, d],
                 p + "mlp.gate_proj.weight": [F, d], p + "mlp.up_proj.weight": [F, d],
                 p + "mlp.down_proj.weight": [d, F]})
if note["plain_llama"]:
    assert weights == "model.safetensors", "a plain LLaMA under %s" % weights
    t = tensors(ck + "/model.safetensors")
    assert set(t) == set(want), "names differ from a LLaMA's: %s" % sorted(set(t) ^ set(want))[:4]
    for k, v in t.items():
        assert v["shape"] == want[k], "%s has shape %s" % (k, v["shape"])
        assert v["dtype"] in ("F32", "F16", "BF16"), "%s is %s" % (k, v["dtype"])
else:
    assert not os.path.exists(ck + "/model.safetensors"), "model.safetensors holds %s's own tensors" % method
    assert weights == method + "_model.safetensors", weights
print("ok")
EOF
    if "$LOQT" eval --checkpoint "$ck" --data "$T/data" --max-length 32 --num-eval-tokens 128 >"$T/out" 2>"$T/err"; then
        ok "eval_$m"
    else
        bad "eval_$m" "$(tail -n 1 "$T/err")"
    fi
    # the export is always a plain LLaMA
    if "$LOQT" export --checkpoint "$ck" --out "$T/dense-$m" >"$T/out" 2>"$T/err" && [ -s "$T/dense-$m/model.safetensors" ] &&
        "$LOQT" eval --checkpoint "$T/dense-$m" --data "$T/data" --max-length 32 --num-eval-tokens 128 >/dev/null 2>&1; then
        ok "export_$m"
    else
        bad "export_$m" "$(tail -n 1 "$T/err")"
    fi
done

finish
