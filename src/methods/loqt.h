/* LoQT (see methods/loqt.c): its options, exposed for tests and tools. */
#ifndef LOQT_METHOD_LOQT_H
#define LOQT_METHOD_LOQT_H

#include "methods/linear.h"

extern const linear_method method_loqt;

enum { GAP_STATIC, GAP_LINEAR, GAP_EXPONENTIAL };  /* proj_gap_progression */
enum { LOQT_4BIT, LOQT_16BIT };                    /* quantize_w, quantize_projection */
enum { MERGE_RESET, MERGE_KEEP };                  /* merge_optimizer_state */
enum { FACTOR_BF16, FACTOR_FP32 };                 /* lowrank_dtype */
enum { SVD_RANDOMIZED, SVD_EXACT };                /* svd */

/* The options of --method loqt (the table in loqt.c says what each means). */
typedef struct {
    int rank;
    double lora_alpha;
    int update_proj_gap, proj_gap_progression;
    double increment_size;
    int max_proj_gap;
    int compensate_quant_error_iterations;
    int quantize_w, quantize_projection, use_double_quant;
    int merge_optimizer_state, lowrank_dtype, svd;
} loqt_config;

/* The k-th update (refresh/merge) step of the schedule: 0, g, then gaps g + int(psi^i) for
 * exponential, g + int(increment * i) for linear, g for static (each gap capped by max_proj_gap). */
long loqt_update_step(const loqt_config *c, long k);
int loqt_is_update_step(const loqt_config *c, long step);

int loqt_layer_info(const linear_layer *L, int *rank, int *left, int *have_P);
const float *loqt_grad_B(const linear_layer *L);
/* Dequantized W (out x in), P and B (fp32); any may be NULL. */
void loqt_get_factors(const linear_layer *L, float *W, float *P, float *B);
void loqt_set_B(linear_layer *L, const float *B);

#endif
