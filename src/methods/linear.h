/* The linear-method interface.
 *
 * Every training method in loqt (full-rank, LoQT, GaLore, LoRA, ...) differs only in how a linear
 * layer y = x W^T (W: [out, in]) is stored, differentiated and updated.  The LLaMA model code calls
 * the seven projections of each block through this table of functions and knows nothing else about
 * the method.  Adding a method means writing one file that fills a linear_method and registering it
 * in methods/registry.c.
 *
 * Life of a layer in one optimizer step:
 *   begin_step(step)           -> the method may ask for the dense gradient this step (LoQT/GaLore
 *                                 refresh steps)
 *   forward / backward  x k    (k micro-batches; backward accumulates the method's gradients)
 *   end_step(step)             -> refresh / merge with the accumulated dense gradient, if asked
 *   grad_sqnorm                -> for global-norm clipping
 *   step(hparams)              -> optimizer update of the trainable parameters
 *   zero_grad
 */
#ifndef LOQT_LINEAR_H
#define LOQT_LINEAR_H

#include "core/mem.h"
#include "io/safetensors.h"
#include "optim/optim.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Options shared by the methods (each reads the ones it uses; the CLI fills them, and checkpoints
 * store them so a saved model is rebuilt with the same shapes). */
typedef enum { GAP_STATIC, GAP_LINEAR, GAP_EXPONENTIAL } gap_progression;

typedef struct {
    int rank;                    /* low-rank methods: r */
    double lora_alpha;           /* LoQT: plain multiplier s; LoRA: s = alpha / r */
    int update_proj_gap;         /* steps between refreshes (first gap) */
    gap_progression proj_gap_progression;
    double increment_size;       /* psi of the exponential schedule / increment of linear */
    int max_proj_gap;            /* 0 = unbounded */
    int compensate_quant_error_iterations;
    int quantize_w;              /* 1 = NF4, 0 = 16-bit (LoQT-nq) */
    int quantize_projection;     /* 1 = NF4, 0 = 16-bit */
    int use_double_quant;
    int merge_reset_optimizer;   /* at a merge: 1 = reset B's Adam moments, 0 = keep (reference) */
    int lowrank_fp32;            /* trainable factors in fp32 instead of bf16 */
    double galore_scale;
    optim_kind optimizer;
    uint64_t seed;
} method_opts;

void method_opts_defaults(method_opts *o);
/* The options as a one-line JSON object, and back (unknown keys are errors). */
void method_opts_write_json(const method_opts *o, FILE *f);
int method_opts_parse_json(method_opts *o, const char *text);
const char *gap_progression_name(gap_progression g);
int gap_progression_parse(const char *s, gap_progression *out);

typedef struct linear_method linear_method;

typedef struct {
    const linear_method *m;
    int out, in;
    char name[96];   /* HF module name, e.g. "model.layers.3.mlp.up_proj" */
    void *state;     /* the method's own */
} linear_layer;

struct linear_method {
    const char *name;
    /* Allocates the layer's state.  W0 ([out, in], row-major) is a dense initial weight, or NULL for
     * normal(0, 0.02) drawn from (o->seed, rng_stream_id(L->name)).  0, or -1 with an error. */
    int (*init)(linear_layer *L, const method_opts *o, const float *W0);
    /* Y[N, out] = X[N, in] W_eff^T */
    void (*forward)(linear_layer *L, const float *X, float *Y, int N);
    /* dX[N, in] (= or += if accumulate) dY[N, out] W_eff, and accumulate the method's gradients from
     * (X, dY). */
    void (*backward)(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                     int accumulate);
    /* Optional.  Called before the first micro-batch of optimizer step `step` (0-based). */
    void (*begin_step)(linear_layer *L, long step);
    /* Optional.  Called after the last backward of the step, before clipping and the update. */
    void (*end_step)(linear_layer *L, long step);
    double (*grad_sqnorm)(const linear_layer *L);
    void (*step)(linear_layer *L, const optim_hparams *h);
    void (*zero_grad)(linear_layer *L);
    /* Optional.  Frees the gradient buffers; the next backward allocates them again.  Used with
     * per-layer updates and no accumulation, so only one layer's gradient exists at a time. */
    void (*release_grads)(linear_layer *L);
    /* Adds the layer's bytes per memory category into bytes[]. */
    void (*mem_bytes)(const linear_layer *L, size_t bytes[MEM_NCAT]);
    /* Writes W_eff ([out, in] fp32) into W. */
    void (*export_dense)(const linear_layer *L, float *W);
    /* Checkpoint state: model tensors go to `model` (HF names where the method has a dense weight),
     * everything needed to resume (optimizer state, factors, codes) to `state`. */
    void (*save)(const linear_layer *L, st_writer *model, st_writer *state);
    int (*load)(linear_layer *L, const st_file *model, const st_file *state);
    void (*free)(linear_layer *L);
};

/* methods/registry.c */
const linear_method *method_find(const char *name);
const char *method_names(void); /* "full|loqt|..." for option help */

/* Shared helpers for implementations. */
float *linear_random_init(const linear_layer *L, uint64_t seed, mem_cat cat); /* N(0, 0.02) */

#endif
