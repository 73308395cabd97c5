/* LoQT (see methods/loqt.c): exposed for tests and tools. */
#ifndef LOQT_METHOD_LOQT_H
#define LOQT_METHOD_LOQT_H

#include "methods/linear.h"

extern const linear_method method_loqt;

/* The k-th update (refresh/merge) step of the schedule: 0, g, then gaps g + int(psi^i) for
 * exponential, g + int(increment * i) for linear, g for static (capped by max_proj_gap). */
long loqt_update_step(const method_opts *o, long k);
int loqt_is_update_step(const method_opts *o, long step);

int loqt_layer_info(const linear_layer *L, int *rank, int *left, int *have_P);
const float *loqt_grad_B(const linear_layer *L);
/* Dequantized W (out x in), P and B (fp32); any may be NULL. */
void loqt_get_factors(const linear_layer *L, float *W, float *P, float *B);
void loqt_set_B(linear_layer *L, const float *B);
/* Wall-clock seconds spent in refreshes (merge, SVD, re-quantization) by this process so far:
 * benchmarks report it beside the step time. */
double loqt_refresh_seconds(void);

#endif
