/* Full-rank training: W is a dense fp32 matrix updated by the optimizer. */
#include "methods/dense.h"

#include "core/error.h"
#include "kernels/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *W, *dW; /* [out, in]; dW is allocated by the first backward */
    optim_state opt;
} dense_state;

static size_t weight_bytes(int out, int in) { return (size_t)out * in * sizeof(float); }

static int dense_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    dense_state *s = calloc(1, sizeof *s);
    size_t n = (size_t)L->out * L->in;
    if (ini && ini->W0) {
        s->W = mem_alloc(MEM_DENSE, weight_bytes(L->out, L->in));
        memcpy(s->W, ini->W0, n * sizeof(float));
    } else {
        s->W = linear_random_init(L, o->seed, MEM_DENSE);
    }
    optim_state_init(&s->opt, n, o->optimizer);
    L->state = s;
    return 0;
}

static void dense_forward(linear_layer *L, const float *X, float *Y, int N) {
    dense_state *s = L->state;
    gemm(false, true, N, L->out, L->in, 1.0f, X, L->in, s->W, L->in, 0.0f, Y, L->out);
}

static void dense_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                           int accumulate) {
    dense_state *s = L->state;
    if (dX)
        gemm(false, false, N, L->in, L->out, 1.0f, dY, L->out, s->W, L->in,
             accumulate ? 1.0f : 0.0f, dX, L->in);
    if (!s->dW) s->dW = mem_alloc(MEM_GRADS, weight_bytes(L->out, L->in));
    gemm(true, false, L->out, L->in, N, 1.0f, dY, L->out, X, L->in, 1.0f, s->dW, L->in);
}

static double dense_grad_sqnorm(const linear_layer *L) {
    const dense_state *s = L->state;
    return s->dW ? optim_sqnorm(s->dW, (size_t)L->out * L->in) : 0.0;
}

static int dense_step(linear_layer *L, const optim_hparams *h) {
    dense_state *s = L->state;
    if (s->dW) optim_update(&s->opt, s->W, s->dW, h);
    return 0;
}

static void dense_zero_grad(linear_layer *L) {
    dense_state *s = L->state;
    if (s->dW) memset(s->dW, 0, (size_t)L->out * L->in * sizeof(float));
}

static void dense_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const dense_state *s = L->state;
    bytes[MEM_DENSE] += mem_size(s->W);
    bytes[MEM_GRADS] += mem_size(s->dW);
    bytes[MEM_OPTIM] += optim_state_bytes(&s->opt);
}

static void dense_export(const linear_layer *L, float *W) {
    const dense_state *s = L->state;
    memcpy(W, s->W, (size_t)L->out * L->in * sizeof(float));
}

static void dense_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const dense_state *s = L->state;
    char name[160];
    int64_t shape[2] = {L->out, L->in};
    snprintf(name, sizeof name, "%s.weight", L->name);
    st_writer_add(model, name, ST_F32, 2, shape, s->W);
    snprintf(name, sizeof name, "optimizer.%s.weight", L->name);
    optim_state_save(&s->opt, state, name);
}

static int dense_load(linear_layer *L, const st_file *model, const st_file *state) {
    dense_state *s = L->state;
    char name[160];
    int64_t shape[2] = {L->out, L->in};
    snprintf(name, sizeof name, "%s.weight", L->name);
    if (st_read_f32(model, name, s->W, 2, shape)) return -1;
    if (!state) return 0;
    snprintf(name, sizeof name, "optimizer.%s.weight", L->name);
    return optim_state_load(&s->opt, state, name);
}

static void dense_release_grads(linear_layer *L) {
    dense_state *s = L->state;
    mem_free(s->dW);
    s->dW = NULL;
}

/* planning state: whether dW and the optimizer state exist */
enum { PS_DW, PS_OPT };

static void dense_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    const size_t n = (size_t)p->out * p->in;
    switch (phase) {
    case LPHASE_INIT: mem_sim_alloc(s, MEM_DENSE, weight_bytes(p->out, p->in)); break;
    case LPHASE_BACKWARD:
        if (!p->slot[PS_DW]) mem_sim_alloc(s, MEM_GRADS, weight_bytes(p->out, p->in));
        p->slot[PS_DW] = 1;
        break;
    case LPHASE_STEP:
        if (!p->slot[PS_DW]) break;
        optim_plan_update(s, p->o->optimizer, n, (int)p->slot[PS_OPT]);
        p->slot[PS_OPT] = 1;
        break;
    case LPHASE_RELEASE_GRADS:
        if (p->slot[PS_DW]) mem_sim_free(s, MEM_GRADS, weight_bytes(p->out, p->in));
        p->slot[PS_DW] = 0;
        break;
    default: break;
    }
}

static int dense_grad_views(linear_layer *L, grad_view *v, int cap) {
    dense_state *s = L->state;
    if (!s->dW || cap < 1) return 0;
    v[0] = (grad_view){s->dW, (size_t)L->out * L->in, "dW", 1};
    return 1;
}

static size_t dense_params_get(const linear_layer *L, float *x) {
    const dense_state *s = L->state;
    const size_t n = (size_t)L->out * L->in;
    if (x) memcpy(x, s->W, n * sizeof(float));
    return n;
}

static void dense_params_set(linear_layer *L, const float *x) {
    dense_state *s = L->state;
    memcpy(s->W, x, (size_t)L->out * L->in * sizeof(float));
}

/* weights, Adam's m and v, gradient: 16 bits each */
static double dense_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    (void)o;
    return 2.0 * 3.0 * out * in;
}

const float *dense_grad(const linear_layer *L) { return ((const dense_state *)L->state)->dW; }

static void dense_free(linear_layer *L) {
    dense_state *s = L->state;
    if (!s) return;
    mem_free(s->W);
    mem_free(s->dW);
    optim_state_free(&s->opt);
    free(s);
    L->state = NULL;
}

const linear_method method_dense = {
    .name = "full",
    .summary = "full-rank training: dense fp32 weights, every element trained (AdamW or 8-bit Adam)",
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
    .grad_sqnorm = dense_grad_sqnorm,
    .step = dense_step,
    .zero_grad = dense_zero_grad,
    .release_grads = dense_release_grads,
    .mem_bytes = dense_mem_bytes,
    .export_dense = dense_export,
    .save = dense_save,
    .load = dense_load,
    .free = dense_free,
    .plan = dense_plan,
    .grad_views = dense_grad_views,
    .params_get = dense_params_get,
    .params_set = dense_params_set,
    .paper_bytes = dense_paper_bytes,
};
