/* The GaLore engine (methods/galore.c), shared by --method galore and --method qgalore.
 *
 * Both methods train W in full rank with Adam on a rank-r projection of the gradient (see
 * galore.c); they differ in how W and P are stored and in when P is refreshed.  A method file
 * turns its options into a galore_spec and fills its linear_method with the hooks below; the
 * hooks that need the options (init, plan, the schedule, the papers' estimate) take the spec. */
#ifndef LOQT_METHOD_GALORE_H
#define LOQT_METHOD_GALORE_H

#include "methods/linear.h"
#include "quant/qmat.h"

enum { GALORE_STATE_KEEP, GALORE_STATE_PROJECT, GALORE_STATE_RESET }; /* --galore-state */
enum { GALORE_SVD_RANDOMIZED, GALORE_SVD_EXACT };                     /* --svd */
enum { GALORE_QUEUE_MAX = 64 };                                        /* --queue-size's limit */

typedef struct {
    int rank, gap;    /* rank r; steps between refreshes (the initial gap when adaptive) */
    double scale;     /* of the back-projected update */
    int moments;      /* GALORE_STATE_*: Adam's moments when P changes */
    int svd;          /* GALORE_SVD_* */
    qmat_kind wk, pk; /* storage of W (F32, BF16, INT8) and of P (F32, INT8, INT4) */
    int stochastic;   /* W is written back with stochastic rounding (BF16, INT8) */
    /* Q-GaLore's layer-adaptive schedule: 0 = a fixed gap (refresh at multiples of it); else at
     * each refresh |cos| of the old and new top singular vectors enters a queue of this length,
     * and when it is full with mean >= cos_threshold the layer's gap becomes int(gap * gamma). */
    int queue_size;
    double cos_threshold, gamma;
} galore_spec;

/* Shapes and sizes, shared by the code and its planning twin. */
typedef struct {
    int r, left;      /* left: out >= in (P is r x in) */
    size_t n, nP, nR; /* elements of W, P (r x smaller side), R (larger side x r) */
    int small;        /* the smaller side: the length of a singular vector in P */
} galore_geom;
galore_geom galore_geom_of(int out, int in, const galore_spec *sp);

int galore_engine_init(linear_layer *L, const method_opts *o, const linear_init *ini, const galore_spec *sp);
void galore_engine_plan(linear_plan *p, linear_phase phase, mem_sim *s, const galore_spec *sp);
/* The first refresh step > after of the fixed-gap schedule (adaptive layers may refresh later). */
long galore_engine_next_refresh(const galore_spec *sp, long after);

/* The hooks that take only the layer. */
void galore_forward(linear_layer *L, const float *X, float *Y, int N);
void galore_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate);
void galore_begin_step(linear_layer *L, long step);
int galore_end_step(linear_layer *L, long step);
double galore_grad_sqnorm(const linear_layer *L);
int galore_step(linear_layer *L, const optim_hparams *h);
void galore_zero_grad(linear_layer *L);
void galore_release_grads(linear_layer *L);
void galore_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]);
void galore_export(const linear_layer *L, float *W);
void galore_save(const linear_layer *L, st_writer *model, st_writer *state);
int galore_load(linear_layer *L, const st_file *model, const st_file *state);
void galore_free(linear_layer *L);
int galore_grad_views(linear_layer *L, grad_view *v, int cap);
size_t galore_params_get(const linear_layer *L, float *x);
void galore_params_set(linear_layer *L, const float *x);
void galore_stats(const linear_layer *L, method_stats *acc);

/* For tests: the layer's current gap, refreshes done, and those a fixed gap would have done. */
void galore_schedule_info(const linear_layer *L, long *gap, long *svds, long *svds_fixed);

/* The hooks every method built on this engine shares, for its linear_method table (the method
 * adds its name, options, init, plan and whatever else is its own). */
#define GALORE_ENGINE_HOOKS \
    .forward = galore_forward, \
    .backward = galore_backward, \
    .begin_step = galore_begin_step, \
    .end_step = galore_end_step, \
    .grad_sqnorm = galore_grad_sqnorm, \
    .step = galore_step, \
    .zero_grad = galore_zero_grad, \
    .release_grads = galore_release_grads, \
    .mem_bytes = galore_mem_bytes, \
    .export_dense = galore_export, \
    .save = galore_save, \
    .load = galore_load, \
    .free = galore_free, \
    .grad_views = galore_grad_views, \
    .params_get = galore_params_get, \
    .params_set = galore_params_set, \
    .stats = galore_stats

#endif
