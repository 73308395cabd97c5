/* LoRA adapters in the layout of Hugging Face PEFT (docs/finetune.md, "Adapters"):
 *
 *   DIR/adapter_config.json        a LoraConfig: peft_type "LORA", r, lora_alpha, use_rslora,
 *                                  lora_dropout, target_modules, bias "none", task_type "CAUSAL_LM",
 *                                  base_model_name_or_path, fan_in_fan_out false, ...
 *   DIR/adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r x in) and
 *                                  base_model.model.<module>.lora_B.weight (out x r), fp32, for
 *                                  <module> = model.layers.N.self_attn.q_proj ... mlp.down_proj
 *
 * y = x W^T + s x A^T B^T with s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), as PEFT
 * computes it.  W is the base the adapter was trained on: the original model for 16/32-bit bases,
 * the dequantized NF4 / int8 base otherwise (written by peft_export_base). */
#ifndef LOQT_PEFT_H
#define LOQT_PEFT_H

#include "model/llama.h"

typedef struct {
    int r;
    double lora_alpha, lora_dropout;
    int use_rslora;
    unsigned targets; /* bit j: projection j (LINEAR_PROJECTIONS, LIN_Q ...) is in target_modules */
} peft_config;

/* Reads DIR/adapter_config.json; -1 with a one-line error (missing file, not LORA, a feature
 * loqt does not have: DoRA, biases, rank or alpha patterns, fan_in_fan_out, a subset of layers,
 * target_modules as a regular expression). */
int peft_read_config(const char *dir, peft_config *pc);

/* Writes the adapters of a LoRA-engine model (--method lora or relora) to DIR; base_model (may be
 * NULL: null) goes to base_model_name_or_path. */
int peft_write_adapter(const llama_model *m, const char *dir, const char *base_model);
/* The model's frozen base (the dequantized W of every projection, the dense parameters) as a
 * plain LLaMA directory: the base the adapter applies to. */
int peft_export_base(const llama_model *m, const char *dir);

/* Loads DIR's adapter onto a LoRA-engine model: r, the scale and the target modules must be the
 * model's, every tensor must have its projection's shape, and no other tensor may be there. */
int peft_load_adapter(llama_model *m, const char *dir);
/* A LoRA model (fp32 base, rank and scale from the adapter's config) from the pretrained
 * directory base_dir with the adapter of adapter_dir on it (eval, generate). */
int peft_create_model(llama_model *m, const char *base_dir, const char *adapter_dir);
/* The method options of such a model: the lora method's defaults with r, alpha, use_rslora,
 * dropout and the target modules from pc; base_bits as a value of --base-bits ("4", "8", "16", "32"). */
int peft_method_opts(const peft_config *pc, const char *base_bits, method_opts *mo);

#endif
