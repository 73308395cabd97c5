#!/usr/bin/env bash
# loqt finetune and PEFT adapters, end to end on a tiny model: a QLoRA fine-tune (NF4 base, frozen
# dense parameters) resumes exactly; its adapter has the names, shapes and config PEFT expects
# (tests/peft_check.py, written from PEFT's convention); the adapter on its exported base gives
# the fine-tuned model's per-token losses, and so does the base with W + s B A merged by numpy;
# a fine-tune continued from the adapter starts at the same loss; the same with adapters on a
# subset of the projections (--target-modules q_proj,v_proj).  Ends with "N passed, N failed".
#   BUILD=build bash tests/test_peft.sh   (KEEP=1 keeps the scratch directory)
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

# ---- fixtures: two token streams (pretraining, fine-tuning), a tiny config --------------------
"$PY" - "$T" <<'EOF' || { echo "FAIL setup: fixtures"; echo "0 passed, 1 failed"; exit 1; }
import os, struct, sys
T = sys.argv[1]
def shard(path, toks, vocab=64):
    with open(path, "wb") as f:
        f.write(b"LOQTSHRD" + struct.pack("<IIQ", 1, vocab, len(toks)) + bytes(40) + struct.pack("<%dH" % len(toks), *toks))
for name, pat in (("pre", [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 2, 7, 11]),
                  ("ft", [3, 6, 10, 14, 20, 22, 30, 31, 40, 44, 50, 60])):
    os.makedirs(os.path.join(T, name))
    s = [pat[i % len(pat)] for i in range(4000)]
    shard(os.path.join(T, name, "train_000.bin"), s)
    shard(os.path.join(T, name, "val_000.bin"), s[5:1005])
open(os.path.join(T, "tiny.json"), "w").write(
    '{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, '
    '"num_key_value_heads": 2, "vocab_size": 64, "max_position_embeddings": 64}\n')
EOF
C=(--batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 256)
EV=(--data "$T/ft" --batch-size 2 --max-length 32 --threads 1 --num-eval-tokens 256)
"$LOQT" train --model "$T/tiny.json" --data "$T/pre" "${C[@]}" --lr 1e-2 --num-training-steps 10 \
    --output-dir "$T/pre_run" >/dev/null 2>&1 &&
    "$LOQT" export --checkpoint "$T/pre_run/checkpoints/step-00000010" --out "$T/base0" >/dev/null ||
    { echo "FAIL setup: pretraining the base"; echo "0 passed, 1 failed"; exit 1; }

# ---- a QLoRA fine-tune, and the same resumed from its step-2 checkpoint -------------------------
FT=(--checkpoint "$T/base0" --data "$T/ft" "${C[@]}" --lr 1e-2 --num-training-steps 4 --save-every 2
    --lora-r 4 --lora-alpha 8 --lora-dropout 0.1)
"$LOQT" finetune "${FT[@]}" --output-dir "$T/ft_run" >"$T/ft.out" 2>&1
check finetune_runs "exit status $?: $(tail -n 2 "$T/ft.out" | tr '\n' '|')" test -d "$T/ft_run/checkpoints/step-00000004"
CK=$T/ft_run/checkpoints/step-00000004
check finetune_is_qlora "the trainer state does not say lora, NF4 base, rank 4, frozen dense" \
    "$PY" -c "
import json, sys; s = json.load(open('$CK/trainer_state.json')); o = s['method_opts']
sys.exit(not (s['method'] == 'lora' and o['base_bits'] == '4' and o['rank'] == 4 and s.get('freeze_dense') == 1))"
"$LOQT" finetune "${FT[@]}" --output-dir "$T/ft_resumed" --resume "$T/ft_run/checkpoints/step-00000002" >"$T/res.out" 2>&1
# resumed_exactly RUN RESUMED: the resumed run's steps 3-4 (loss, grad_norm) and step-4 weights
# are the uninterrupted run's (tolerance: none)
resumed_exactly() {
    "$PY" -c "
import json, sys
def steps(p): return [(d['step'], d['loss'], d['grad_norm']) for d in map(json.loads, open(p)) if 'loss' in d and d['step'] > 2]
a, b = steps('$1/metrics.jsonl'), steps('$2/metrics.jsonl')
sys.exit(not (len(a) == 2 and a == b))" &&
        cmp -s "$1/checkpoints/step-00000004/lora_model.safetensors" "$2/checkpoints/step-00000004/lora_model.safetensors"
}
check finetune_resumes_exactly "the resumed run's steps 3-4 (loss, grad_norm) or its step-4 weights differ from the uninterrupted run's (tolerance: none)" \
    resumed_exactly "$T/ft_run" "$T/ft_resumed"
# frozen: the embedding, norms and lm_head are the base's, and have no optimizer state
check finetune_freezes_dense "a dense parameter changed, or has optimizer state" "$PY" -c "
import sys; sys.path.insert(0, 'tests'); import numpy as np, peft_check as p
base, _ = p.read_st('$T/base0/model.safetensors'); ft, _ = p.read_st('$CK/lora_model.safetensors')
st, _ = p.read_st('$CK/trainer_state.safetensors')
dense = [n for n in base if not n.endswith('_proj.weight')]
same = all(np.array_equal(base[n][1], ft[n][1]) for n in dense)
sys.exit(not (len(dense) == 2 * 2 + 3 and same and not any(k.startswith('optimizer.' + n) for n in dense for k in st)))"

# ---- adapters out: PEFT's names, shapes and config --------------------------------------------
AD=$T/adapter
"$LOQT" export --checkpoint "$CK" --format peft --with-base --base-model tiny-base --out "$AD" >"$T/ex.out" 2>&1
why=$("$PY" tests/peft_check.py check "$AD" "$T/base0/config.json" tiny-base 2>&1)
check peft_layout "${why:-export failed: $(tail -n 1 "$T/ex.out")}" test -z "$why" -a -f "$AD/base/model.safetensors"
check peft_config_values "r, lora_alpha, lora_dropout, use_rslora or target_modules are not the run's" "$PY" -c "
import json, sys; c = json.load(open('$AD/adapter_config.json'))
sys.exit(not (c['r'] == 4 and c['lora_alpha'] == 8 and abs(c['lora_dropout'] - 0.1) < 1e-12 and c['use_rslora'] is False
              and c['target_modules'] == ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']))"

# ---- adapters in: the same per-token losses three ways -----------------------------------------
"$LOQT" eval --checkpoint "$CK" "${EV[@]}" --per-token "$T/tok_ft.tsv" >/dev/null 2>&1
"$LOQT" eval --checkpoint "$AD/base" --adapter "$AD" "${EV[@]}" --per-token "$T/tok_ad.tsv" >/dev/null 2>"$T/ad.err"
"$PY" tests/peft_check.py merge "$AD" "$AD/base" "$T/merged"
"$LOQT" eval --checkpoint "$T/merged" "${EV[@]}" --per-token "$T/tok_merged.tsv" >/dev/null 2>&1
cat >"$T/cmp.py" <<'EOF'
import sys
def rows(p):
    try: return [float(l.split("\t")[2]) for l in open(p).read().split("\n")[1:] if l]
    except OSError: return []
a, b, tol = rows(sys.argv[1]), rows(sys.argv[2]), float(sys.argv[3])
worst = max((abs(x - y) for x, y in zip(a, b)), default=1)
print("worst difference %.3g over %d tokens" % (worst, len(a)))
sys.exit(not (len(a) == len(b) == 256 and worst <= tol))
EOF
# the adapter on the dequantized base is the fine-tuned model: the same sums in another order
check adapter_round_trip "$("$PY" "$T/cmp.py" "$T/tok_ft.tsv" "$T/tok_ad.tsv" 2e-5; head -n 1 "$T/ad.err") (tolerance 2e-5 per token)" \
    "$PY" "$T/cmp.py" "$T/tok_ft.tsv" "$T/tok_ad.tsv" 2e-5
# PEFT's semantics, computed by numpy: W + (lora_alpha / r) B A
check adapter_is_peft_merge "$("$PY" "$T/cmp.py" "$T/tok_ad.tsv" "$T/tok_merged.tsv" 1e-4) (tolerance 1e-4 per token)" \
    "$PY" "$T/cmp.py" "$T/tok_ad.tsv" "$T/tok_merged.tsv" 1e-4
# continuing from the adapter: step 0 evaluates the fine-tuned model
"$LOQT" finetune --checkpoint "$AD/base" --adapter "$AD" --base-bits 32 --data "$T/ft" "${C[@]}" --lr 1e-2 \
    --num-training-steps 1 --lora-r 4 --lora-alpha 8 --output-dir "$T/ft_cont" >"$T/cont.out" 2>&1
l_ft=$(sed -n 's/.*"step": 4, "tokens": [0-9]*, "eval_loss": \([0-9.]*\).*/\1/p' "$T/ft_run/metrics.jsonl" | head -n 1)
l_c=$(sed -n 's/.*"step": 0, "tokens": 0, "eval_loss": \([0-9.]*\).*/\1/p' "$T/ft_cont/metrics.jsonl" 2>/dev/null | head -n 1)
check finetune_continues_from_adapter "step-0 loss ${l_c:-none} ($(tail -n 1 "$T/cont.out")), the fine-tune ended at $l_ft (tolerance 2e-5)" \
    "$PY" -c "import sys; sys.exit(not abs(float('${l_c:-nan}') - float('${l_ft:-0}')) <= 2e-5)"

# ---- --target-modules q_proj,v_proj: adapters on two projections, the rest frozen base ---------
TM=(--checkpoint "$T/base0" --data "$T/ft" "${C[@]}" --lr 1e-2 --num-training-steps 4 --save-every 2
    --lora-r 4 --lora-alpha 8 --lora-dropout 0.1 --target-modules q_proj,v_proj)
"$LOQT" finetune "${TM[@]}" --output-dir "$T/tm_run" >"$T/tm.out" 2>&1
TK=$T/tm_run/checkpoints/step-00000004
check target_modules_runs "exit status $?: $(tail -n 2 "$T/tm.out" | tr '\n' '|')" test -d "$TK"
# the checkpoint holds factors and optimizer state for q and v only, the option as names
check target_modules_checkpoint "the checkpoint has factors or optimizer state outside q_proj, v_proj, or misses some" "$PY" -c "
import json, sys; sys.path.insert(0, 'tests'); import peft_check as p
m, _ = p.read_st('$TK/lora_model.safetensors'); st, _ = p.read_st('$TK/trainer_state.safetensors')
o = json.load(open('$TK/trainer_state.json'))['method_opts']
fac = sorted(n for n in m if '.lora_' in n)
want = sorted('model.layers.%d.self_attn.%s.lora_%s.weight' % (l, x, ab) for l in range(2) for x in ('q_proj', 'v_proj') for ab in 'AB')
opt = [k for k in st if k.startswith('optimizer.model.layers.')]
sys.exit(not (fac == want and o['target_modules'] == 'q_proj,v_proj' and opt and
              all('.q_proj.' in k or '.v_proj.' in k for k in opt)))"
"$LOQT" finetune "${TM[@]}" --output-dir "$T/tm_resumed" --resume "$T/tm_run/checkpoints/step-00000002" >/dev/null 2>&1
check target_modules_resume_exactly "the resumed run's steps 3-4 or its step-4 weights differ from the uninterrupted run's (tolerance: none)" \
    resumed_exactly "$T/tm_run" "$T/tm_resumed"
TAD=$T/tm_adapter
"$LOQT" export --checkpoint "$TK" --format peft --with-base --base-model tiny-base --out "$TAD" >/dev/null 2>&1
why=$("$PY" tests/peft_check.py check "$TAD" "$T/base0/config.json" tiny-base 2>&1)
check target_modules_peft_layout "${why:-export failed}" test -z "$why"
check target_modules_peft_config "target_modules is not [q_proj, v_proj], or the adapter has other tensors than their 8" "$PY" -c "
import json, sys; sys.path.insert(0, 'tests'); import peft_check as p
c = json.load(open('$TAD/adapter_config.json')); t, _ = p.read_st('$TAD/adapter_model.safetensors')
sys.exit(not (c['target_modules'] == ['q_proj', 'v_proj'] and len(t) == 8))"
"$LOQT" eval --checkpoint "$TK" "${EV[@]}" --per-token "$T/tok_tm.tsv" >/dev/null 2>&1
"$LOQT" eval --checkpoint "$TAD/base" --adapter "$TAD" "${EV[@]}" --per-token "$T/tok_tm_ad.tsv" >/dev/null 2>"$T/tm_ad.err"
check target_modules_adapter_round_trip "$("$PY" "$T/cmp.py" "$T/tok_tm.tsv" "$T/tok_tm_ad.tsv" 2e-5; head -n 1 "$T/tm_ad.err") (tolerance 2e-5 per token)" \
    "$PY" "$T/cmp.py" "$T/tok_tm.tsv" "$T/tok_tm_ad.tsv" 2e-5
"$PY" tests/peft_check.py merge "$TAD" "$TAD/base" "$T/tm_merged"
"$LOQT" eval --checkpoint "$T/tm_merged" "${EV[@]}" --per-token "$T/tok_tm_merged.tsv" >/dev/null 2>&1
check target_modules_is_peft_merge "$("$PY" "$T/cmp.py" "$T/tok_tm_ad.tsv" "$T/tok_tm_merged.tsv" 1e-4) (tolerance 1e-4 per token)" \
    "$PY" "$T/cmp.py" "$T/tok_tm_ad.tsv" "$T/tok_tm_merged.tsv" 1e-4
# an adapter onto a model with other target modules: refused, naming both
out=$("$LOQT" finetune --checkpoint "$TAD/base" --adapter "$TAD" --base-bits 32 --data "$T/ft" "${C[@]}" \
    --num-training-steps 1 --lora-r 4 --lora-alpha 8 --output-dir "$T/tm_bad" 2>&1)
check target_modules_adapter_mismatch "exit 0 or no message naming both lists: $out" \
    test $? -ne 0 -a -n "$(echo "$out" | grep 'target_modules q_proj,v_proj, but the model has --target-modules q_proj,k_proj')"

# ---- QuAILoRA: calibrated init from the fine-tuning data, resumed exactly, exported -----------
QA=(--checkpoint "$T/base0" --data "$T/ft" "${C[@]}" --lr 1e-2 --num-training-steps 4 --save-every 2
    --lora-r 4 --lora-alpha 8 --calibration-sequences 8)
"$LOQT" finetune "${QA[@]}" --init quailora --output-dir "$T/qa_run" >"$T/qa.out" 2>"$T/qa.err"
QK=$T/qa_run/checkpoints/step-00000004
check quailora_finetune_runs "exit status $?: $(tail -n 2 "$T/qa.err" | tr '\n' '|')" test -d "$QK"
check quailora_calibration_progress "no calibration progress lines on stderr" grep -q "calibration and init: block 2 of 2" "$T/qa.err"
"$LOQT" finetune "${QA[@]}" --init quailora --output-dir "$T/qa_resumed" --resume "$T/qa_run/checkpoints/step-00000002" >/dev/null 2>&1
check quailora_resumes_exactly "the resumed run's steps 3-4 or its step-4 weights differ from the uninterrupted run's (tolerance: none)" \
    resumed_exactly "$T/qa_run" "$T/qa_resumed"
"$LOQT" export --checkpoint "$QK" --format peft --with-base --base-model tiny-base --out "$T/qa_adapter" >/dev/null 2>&1
why=$("$PY" tests/peft_check.py check "$T/qa_adapter" "$T/base0/config.json" tiny-base 2>&1)
check quailora_peft_layout "${why:-export failed}" test -z "$why"
# the calibrated inits start nearer the dense model than zero init: per-token losses of the
# initial model (one step at lr 1e-30, which moves no weight measurably) against the dense base's, on the fine-tuning data's val split
for init in zero quailora quailora-closed; do
    "$LOQT" finetune "${QA[@]}" --init $init --lr 1e-30 --num-training-steps 1 --save-every 1 --output-dir "$T/i_$init" >/dev/null 2>&1
    "$LOQT" eval --checkpoint "$T/i_$init/checkpoints/step-00000001" "${EV[@]}" --per-token "$T/tok_$init.tsv" >/dev/null 2>&1
done
"$LOQT" eval --checkpoint "$T/base0" "${EV[@]}" --per-token "$T/tok_dense.tsv" >/dev/null 2>&1
cat >"$T/dist.py" <<'EOF'
import sys
def rows(p):
    try: return [float(l.split("\t")[2]) for l in open(p).read().split("\n")[1:] if l]
    except OSError: return []
d = rows(sys.argv[1])
dist = [sum(abs(x - y) for x, y in zip(d, rows(p))) / max(len(d), 1) if len(rows(p)) == len(d) == 256 else float("nan") for p in sys.argv[2:]]
print("mean |per-token loss - the dense base's|: zero init %.3g, quailora %.3g, quailora-closed %.3g" % tuple(dist))
sys.exit(not (dist[1] < 0.9 * dist[0] and dist[2] < 0.9 * dist[0]))
EOF
msg=$("$PY" "$T/dist.py" "$T/tok_dense.tsv" "$T/tok_zero.tsv" "$T/tok_quailora.tsv" "$T/tok_quailora-closed.tsv")
echo "    $msg"
check quailora_starts_nearer_dense "$msg (want both 10% below zero init)" \
    "$PY" "$T/dist.py" "$T/tok_dense.tsv" "$T/tok_zero.tsv" "$T/tok_quailora.tsv" "$T/tok_quailora-closed.tsv"
# bad input: no calibration sequences, more than the data holds, no pretrained model
out=$("$LOQT" finetune "${QA[@]}" --init quailora --calibration-sequences 0 --output-dir "$T/qa_bad" 2>&1)
check quailora_zero_sequences "exit 0 or no message: $out" test $? -ne 0 -a -n "$(echo "$out" | grep -- '--calibration-sequences')"
out=$("$LOQT" finetune "${QA[@]}" --init quailora --calibration-sequences 1000 --output-dir "$T/qa_bad" 2>&1)
check quailora_too_many_sequences "exit 0 or no message: $out" test $? -ne 0 -a -n "$(echo "$out" | grep 'training split holds 4000')"
out=$("$LOQT" train --model "$T/tiny.json" --data "$T/ft" "${C[@]}" --method lora --init quailora --num-training-steps 1 \
    --output-dir "$T/qa_bad" 2>&1)
check quailora_needs_init_from "exit 0 or no message: $out" test $? -ne 0 -a -n "$(echo "$out" | grep -- '--init-from')"

finish
