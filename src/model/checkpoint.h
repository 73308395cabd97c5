/* Checkpoints and exports.
 *
 * A checkpoint is a directory:
 *   config.json                HF LlamaConfig keys, and "loqt_checkpoint": {method, weights (the
 *                              model file's name), plain_llama, note}
 *   model.safetensors          when the model tensors form a plain LLaMA (HF names, float types,
 *                              [out, in] row-major: full-rank, GaLore), so HF loaders can load it;
 *   <method>_model.safetensors otherwise: the method's own tensors (NF4 codes, factors, ...) beside
 *                              the dense parameters under their HF names
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
    int zero_ranks;          /* --zero 1 under data parallelism: the number of ranks, each of which
                              * wrote its optimizer state to its own file; 0 otherwise */
} trainer_meta;

/* Tensors of the model: dense parameters + each linear layer's method tensors.  `state` (may be
 * NULL) receives optimizer and method state. */
void llama_save_tensors(const llama_model *m, st_writer *model, st_writer *state);
int llama_load_tensors(llama_model *m, const st_file *model, const st_file *state);

int checkpoint_save(const llama_model *m, const trainer_meta *tm, const char *dir);
/* A checkpoint written by several ranks (--zero 1: each holds the optimizer state of its own
 * units): rank 0 calls checkpoint_prepare (an empty "<dir>.tmp"), then every other rank k writes
 * "<dir>.tmp/trainer_state.rank-NNNNN.safetensors" with checkpoint_save_shard, then rank 0
 * completes and renames it with checkpoint_commit (tm->zero_ranks set).  checkpoint_save is
 * prepare + commit; checkpoint_abandon removes the temporary directory of a failed save. */
int checkpoint_prepare(const char *dir);
int checkpoint_save_shard(const llama_model *m, const char *dir, int rank, int ranks);
int checkpoint_commit(const llama_model *m, const trainer_meta *tm, const char *dir);
void checkpoint_abandon(const char *dir);
/* Reads config.json of a checkpoint (to create the model before loading it). */
int checkpoint_read_config(const char *dir, llama_config *c);
/* Reads trainer metadata (method, optimizer, step, ...) without loading tensors. */
int checkpoint_read_meta(const char *dir, trainer_meta *tm);
/* Loads tensors into a model created with the checkpoint's config and method; state is loaded too
 * unless weights_only. */
int checkpoint_load(llama_model *m, const char *dir, int weights_only);
/* The same with rank k's state file of a --zero 1 checkpoint (k = 0: trainer_state.safetensors). */
int checkpoint_load_shard(llama_model *m, const char *dir, int rank, int ranks);
/* Newest complete checkpoint "step-NNNNNNNN" under `root`; -1 if none. */
int checkpoint_find_latest(const char *root, char *out, size_t cap);

/* Creates a model of `method` from the dense weights of a directory in Hugging Face layout
 * (config.json's model as cfg; model.safetensors or sharded with model.safetensors.index.json;
 * F32, F16 or BF16; a dense export or a full-rank loqt checkpoint qualify too): every tensor is
 * checked finite, then read one at a time (llama_create_from), and a tensor the model does not
 * have is an error.  -1 with a one-line error naming the directory; nothing stays allocated. */
int llama_load_pretrained(llama_model *m, const llama_config *cfg, const linear_method *method,
                          const method_opts *mo, uint64_t seed, const char *dir);
/* The same with calibration data for a method whose init wants it (llama_create_calibrated). */
int llama_load_pretrained_calib(llama_model *m, const llama_config *cfg, const linear_method *method,
                                const method_opts *mo, uint64_t seed, const char *dir, const llama_calib *cal);

/* Writes a plain dense LLaMA (config.json + model.safetensors with W_eff of every linear layer),
 * whatever the training method. */
int llama_export_dense(const llama_model *m, const char *dir);
/* The same with each linear layer's weight from weight(L, W) ([out, in] fp32) instead of its
 * method's export_dense (the dequantized base of a LoRA model, model/peft.h). */
int llama_export_dense_with(const llama_model *m, const char *dir, void (*weight)(const linear_layer *L, float *W));

#endif
