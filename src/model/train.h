/* One optimizer step of a model: gradient accumulation over micro-batches, global-norm clipping,
 * the learning-rate schedule, and the optimizer update.  Shared by `loqt train`, `loqt bench` and
 * the tests, so all three run the same code. */
#ifndef LOQT_TRAIN_H
#define LOQT_TRAIN_H

#include "model/llama.h"
#include "optim/schedule.h"

typedef struct {
    lr_schedule sched;
    float beta1, beta2, eps, weight_decay;
    float grad_clipping; /* max global norm; 0 = off (as the reference scripts) */
    optim_kind optimizer;
} train_hparams;

void train_hparams_defaults(train_hparams *h);

typedef struct {
    double loss;      /* mean token loss over the whole batch (before the update) */
    double grad_norm; /* global norm before clipping */
    double lr;        /* learning rate used by the update */
    int skipped;      /* the loss or the gradient was not finite: no update was made */
} step_result;

/* Runs optimizer step `step` (0-based) on `accum` micro-batches; inputs[i], targets[i] hold B*T
 * tokens each (the model's batch shape).  A non-finite loss (or, without per-layer updates, a
 * non-finite gradient norm) skips the update: out->skipped is set and the step's gradients are
 * discarded.  Under per-layer updates only the loss can be checked before the updates (they run
 * inside backward).  0, or -1 with an error when a method's refresh or update fails (the model
 * is then not usable for further steps). */
int train_step(llama_model *m, long step, const int32_t *const *inputs,
               const int32_t *const *targets, int accum, const train_hparams *h, step_result *out);

#endif
