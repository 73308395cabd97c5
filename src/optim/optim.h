/* Optimizers over flat float32 parameter buffers.
 *
 * A method (or the model, for its dense parameters) owns one optim_state per trainable buffer and
 * calls optim_update() with the gradient.  The gradient is multiplied by h->grad_scale first
 * (global-norm clipping), so callers never rescale gradients in place. */
#ifndef LOQT_OPTIM_H
#define LOQT_OPTIM_H

#include "core/mem.h"
#include "io/safetensors.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { OPTIM_ADAMW, OPTIM_ADAM8BIT } optim_kind;

typedef struct {
    optim_kind kind;
    float lr;           /* learning rate of this step (after the schedule) */
    float beta1, beta2, eps;
    float weight_decay; /* decoupled: w -= lr * wd * w */
    float grad_scale;   /* multiplies the gradient (clipping coefficient), 1 if none */
    long t;             /* 1-based step count for bias correction */
} optim_hparams;

typedef struct {
    optim_kind kind;
    size_t n;
    float *m, *v; /* AdamW: fp32 moments (MEM_OPTIM), allocated on first update */
    void *q;      /* 8-bit Adam: one MEM_OPTIM blob, layout in optim/adam8bit.h (first update) */
    int64_t t_offset; /* updates before the last restart: bias correction uses t - t_offset */
} optim_state;

optim_kind optim_kind_parse(const char *name, int *ok);
const char *optim_kind_name(optim_kind k);

void optim_state_init(optim_state *s, size_t n, optim_kind kind);
void optim_state_free(optim_state *s);
/* Forgets the moments (used by methods that re-initialise their factors). */
void optim_state_reset(optim_state *s);
/* Forgets the moments and restarts bias correction: the update with hparams t = t_done + 1 is
 * treated as the first one. */
void optim_state_restart(optim_state *s, long t_done);
size_t optim_state_bytes(const optim_state *s);

void optim_update(optim_state *s, float *w, const float *g, const optim_hparams *h);
/* The same update on elements [e0, e1) only: w and g point at element e0 (a tile of the parameter
 * and its gradient), the moments are the state's own [e0, e1).  Calling it over consecutive
 * ranges that cover [0, n) gives exactly the numbers of one optim_update (methods that hold
 * their weights only in a packed form update them tile by tile).  8-bit Adam quantizes its
 * moments per block of ADAM8BIT_BLOCK elements, so there e0 must be a multiple of the block and
 * e1 too unless it is n.  0, or -1 with an error for a range outside [0, n) or not aligned. */
int optim_update_range(optim_state *s, float *w, const float *g, size_t e0, size_t e1,
                       const optim_hparams *h);
/* The fp32 AdamW update, whatever s->kind says: optim_update's AdamW path, and 8-bit Adam's path
 * for tensors too small to quantize. */
void adamw_update(optim_state *s, float *w, const float *g, const optim_hparams *h);

/* Adam's moments as fp32 (8-bit state dequantized), for methods that change the basis their
 * moments live in (GaLore's projection).  get returns 0 when no update has allocated them yet
 * (m and v untouched), 1 after copying; set writes them back (re-quantized for 8-bit). */
int optim_state_get_moments(const optim_state *s, float *m, float *v);
void optim_state_set_moments(optim_state *s, const float *m, const float *v);

/* Planning twin (core/mem.h mem_sim) of the state a first optim_update allocates for n elements;
 * `ready`: the state exists already (nothing is allocated). */
void optim_plan_update(mem_sim *s, optim_kind kind, size_t n, int ready);

/* Sum of squares of g (double accumulation), for global-norm clipping. */
double optim_sqnorm(const float *g, size_t n);

/* Checkpointing: tensors "<prefix>.exp_avg" / "<prefix>.exp_avg_sq" (or the 8-bit state,
 * "<prefix>.exp_avg.{absmax,code}" / "<prefix>.exp_avg_sq.{absmax,code}"). */
void optim_state_save(const optim_state *s, st_writer *w, const char *prefix);
int optim_state_load(optim_state *s, const st_file *f, const char *prefix);

#endif
