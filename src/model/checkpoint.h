/* Checkpoints and exports.
 *
 * A checkpoint is a directory:
 *   config.json                HF LlamaConfig keys
 *   model.safetensors          HF LLaMA tensor names, [out, in] row-major (for full-rank training a
 *                              plain LLaMA checkpoint; other methods store their own tensors here)
 *   trainer_state.safetensors  optimizer state and method state; trainer metadata in __metadata__
 *   trainer_state.json         the same metadata, for people
 * It is written under "<dir>.tmp" and renamed to <dir> only when complete, so a crash never leaves
 * a half-written checkpoint under a checkpoint's name. */
#ifndef LOQT_CHECKPOINT_H
#define LOQT_CHECKPOINT_H

#include "model/llama.h"

#include <stdint.h>

typedef struct {
    long step;               /* optimizer steps completed */
    uint64_t tokens_seen;
    uint64_t data_position;  /* training loader position */
    uint64_t seed;
    double loss;             /* loss of the last step */
    char method[32];
    char optimizer[16];
    method_opts mopts;       /* read back by checkpoint_read_meta; saving takes the model's own */
    char run_options[1024];  /* the trainer's options as a JSON object (compared on resume); "" */
} trainer_meta;

/* Tensors of the model: dense parameters + each linear layer's method tensors.  `state` (may be
 * NULL) receives optimizer and method state. */
void llama_save_tensors(const llama_model *m, st_writer *model, st_writer *state);
int llama_load_tensors(llama_model *m, const st_file *model, const st_file *state);

int checkpoint_save(const llama_model *m, const trainer_meta *tm, const char *dir);
/* Reads config.json of a checkpoint (to create the model before loading it). */
int checkpoint_read_config(const char *dir, llama_config *c);
/* Reads trainer metadata (method, optimizer, step, ...) without loading tensors. */
int checkpoint_read_meta(const char *dir, trainer_meta *tm);
/* Loads tensors into a model created with the checkpoint's config and method; state is loaded too
 * unless weights_only. */
int checkpoint_load(llama_model *m, const char *dir, int weights_only);
/* Newest complete checkpoint "step-NNNNNNNN" under `root`; -1 if none. */
int checkpoint_find_latest(const char *root, char *out, size_t cap);

/* Creates a model of `method` from the dense weights of a directory in Hugging Face layout
 * (config.json's model as cfg; model.safetensors or sharded with model.safetensors.index.json;
 * F32, F16 or BF16; a dense export or a full-rank loqt checkpoint qualify too): every tensor is
 * checked finite, then read one at a time (llama_create_from), and a tensor the model does not
 * have is an error.  -1 with a one-line error naming the directory; nothing stays allocated. */
int llama_load_pretrained(llama_model *m, const llama_config *cfg, const linear_method *method,
                          const method_opts *mo, uint64_t seed, const char *dir);

/* Writes a plain dense LLaMA (config.json + model.safetensors with W_eff of every linear layer),
 * whatever the training method. */
int llama_export_dense(const llama_model *m, const char *dir);

#endif
