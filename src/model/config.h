/* LLaMA model configuration, with Hugging Face LlamaConfig key names in its JSON form. */
#ifndef LOQT_CONFIG_H
#define LOQT_CONFIG_H

#include <stdio.h>

typedef struct {
    char name[64];           /* "60m", or the file name of a user config */
    int hidden_size;         /* d */
    int intermediate_size;   /* F */
    int num_hidden_layers;   /* L */
    int num_attention_heads; /* H */
    int num_key_value_heads; /* Hkv: H, or a divisor of H (grouped-query attention) */
    int vocab_size;          /* V */
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    int tie_word_embeddings; /* 1: the embedding is the output layer too (no lm_head); the
                              * paper models are untied */
} llama_config;

/* The ten sizes of the GaLore/LoQT papers: "9m" ... "13b". */
int config_builtin_count(void);
const llama_config *config_builtin(int i);

/* `spec` is a built-in name ("60m", also "llama_60m") or a path to a JSON file.  -1 with an error
 * naming the problem (unknown name, unreadable file, missing/mistyped key, impossible value). */
int config_load(llama_config *c, const char *spec);
/* Parses a JSON text (config.json of a checkpoint, or a user config). */
int config_parse(llama_config *c, const char *json, size_t len, const char *what);
/* Validates ranges and divisibility; -1 with an error. */
int config_validate(const llama_config *c);
/* Writes the HF-style config.json (architectures, model_type, keys above, torch_dtype). */
void config_write_json(const llama_config *c, FILE *f);

/* The head dimension d / H, and the width of k and v, Hkv * head dimension. */
int config_head_dim(const llama_config *c);
int config_kv_dim(const llama_config *c);

/* Parameter counts. */
long long config_params_total(const llama_config *c);
long long config_params_linear(const llama_config *c); /* q,k,v,o,gate,up,down of all layers */

#endif
