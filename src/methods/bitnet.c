/* BitNet b1.58 (Ma et al. 2024), the baseline DQT compares itself against: fp32 latent weights,
 * a forward pass with their ternary absmean quantization and 8-bit activations, and
 * straight-through gradients onto the latent weights.
 *   after init and every update: delta = max(mean|W|, 1e-5), codes = clamp(round(W / delta), -1, 1)
 *     in a ternary qgrid (2 bits per weight, one scale per tensor), the grid DQT uses;
 *   forward / backward: DQT's kernels (kernels/lowbit.h) on those codes, so Y = actq(X) Wq^T,
 *     dX = dY Wq and dW = dY^T actq(X): the derivative with respect to the quantized weights,
 *     applied to the latent ones (the straight-through estimator);
 *   step: the optimizer updates the latent fp32 W, then the codes are made again. */
#include "core/error.h"
#include "kernels/lowbit.h"
#include "methods/linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_INT8, ACT_NONE };

typedef struct {
    int act_quant;
} bitnet_config;

static const method_option bitnet_options[] = {
    MOPT_C(bitnet_config, act_quant, "act-quant", ACT_INT8, "int8|none", "activations fake-quantized to 8 bits per token (absmax, straight-through; BitNet b1.58's), or left in fp32"),
};
_Static_assert(sizeof(bitnet_config) <= METHOD_CONFIG_BYTES, "bitnet_config too large");

typedef struct {
    bitnet_config c;
    size_t n;
    float *W;        /* latent weights (MEM_DENSE) */
    qgrid_tensor Wq; /* their ternary codes and scale (MEM_QWEIGHTS, MEM_QSTATE) */
    float *G;        /* gradient (MEM_GRADS), from the first backward */
    optim_state opt;
} bitnet_state;

/* the ternary codes of the latent weights (BitNet b1.58's absmean quantizer) */
static int requantize(bitnet_state *st) {
    const float mean = qgrid_absmean_delta(st->W, st->n, 2, true);
    if (qgrid_set_delta(&st->Wq, mean > 1e-5f ? mean : 1e-5f)) return -1;
    return qgrid_quantize(&st->Wq, st->W);
}

static int bitnet_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    bitnet_state *st = calloc(1, sizeof *st);
    L->state = st;
    method_config_get(o, &st->c, sizeof st->c);
    st->n = (size_t)L->out * L->in;
    if (ini && ini->W0) {
        st->W = mem_alloc(MEM_DENSE, st->n * sizeof(float));
        memcpy(st->W, ini->W0, st->n * sizeof(float));
    } else {
        st->W = linear_random_init(L, o->seed, MEM_DENSE);
    }
    if (qgrid_init(&st->Wq, st->n, 2, true)) return -1;
    optim_state_init(&st->opt, st->n, o->optimizer);
    return requantize(st);
}

static int act_quant(const bitnet_state *st) { return st->c.act_quant == ACT_INT8; }

static void bitnet_forward(linear_layer *L, const float *X, float *Y, int N) {
    bitnet_state *st = L->state;
    float *work = mem_workspace(sizeof(float) * lowbit_work_floats(L->out, L->in, N, act_quant(st)));
    lowbit_forward(&st->Wq, L->out, L->in, X, Y, N, act_quant(st), lowbit_tile_rows(L->out, L->in), work);
}

static void bitnet_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate) {
    bitnet_state *st = L->state;
    float *work = mem_workspace(sizeof(float) * lowbit_work_floats(L->out, L->in, N, act_quant(st)));
    if (!st->G) st->G = mem_alloc(MEM_GRADS, st->n * sizeof(float));
    lowbit_backward(&st->Wq, L->out, L->in, X, dY, dX, st->G, N, accumulate, act_quant(st),
                    lowbit_tile_rows(L->out, L->in), work);
}

static double bitnet_grad_sqnorm(const linear_layer *L) {
    const bitnet_state *st = L->state;
    return st->G ? optim_sqnorm(st->G, st->n) : 0.0;
}

static int bitnet_step(linear_layer *L, const optim_hparams *h) {
    bitnet_state *st = L->state;
    if (!st->G) return 0;
    optim_update(&st->opt, st->W, st->G, h);
    if (requantize(st)) return loqt_set_error("%s: %s", L->name, loqt_last_error());
    return 0;
}

static void bitnet_zero_grad(linear_layer *L) {
    bitnet_state *st = L->state;
    if (st->G) memset(st->G, 0, st->n * sizeof(float));
}

static void bitnet_release_grads(linear_layer *L) {
    bitnet_state *st = L->state;
    mem_free(st->G);
    st->G = NULL;
}

static void bitnet_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const bitnet_state *st = L->state;
    bytes[MEM_DENSE] += mem_size(st->W);
    bytes[MEM_QWEIGHTS] += mem_size(st->Wq.data);
    bytes[MEM_QSTATE] += mem_size(st->Wq.scale);
    bytes[MEM_GRADS] += mem_size(st->G);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

/* the weights the forward uses: ternary times the scale */
static void bitnet_export(const linear_layer *L, float *W) { qgrid_dequantize(&((const bitnet_state *)L->state)->Wq, W); }

static void bitnet_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const bitnet_state *st = L->state;
    char nm[200];
    int64_t shape[2] = {L->out, L->in};
    snprintf(nm, sizeof nm, "%s.bitnet.latent", L->name); /* the codes are made from it on load */
    st_writer_add(model, nm, ST_F32, 2, shape, st->W);
    snprintf(nm, sizeof nm, "optimizer.%s.bitnet", L->name);
    optim_state_save(&st->opt, state, nm);
}

static int bitnet_load(linear_layer *L, const st_file *model, const st_file *state) {
    bitnet_state *st = L->state;
    char nm[200];
    int64_t shape[2] = {L->out, L->in};
    snprintf(nm, sizeof nm, "%s.bitnet.latent", L->name);
    if (st_read_f32(model, nm, st->W, 2, shape)) return -1;
    if (requantize(st)) return loqt_set_error("%s: %s", nm, loqt_last_error());
    if (!state) return 0;
    snprintf(nm, sizeof nm, "optimizer.%s.bitnet", L->name);
    return optim_state_load(&st->opt, state, nm);
}

static void bitnet_free(linear_layer *L) {
    bitnet_state *st = L->state;
    if (!st) return;
    mem_free(st->W);
    qgrid_free(&st->Wq);
    mem_free(st->G);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

enum { PS_G, PS_OPT };

static void bitnet_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    bitnet_config c;
    method_config_get(p->o, &c, sizeof c);
    const size_t n = (size_t)p->out * p->in, f = sizeof(float);
    const int aq = c.act_quant == ACT_INT8;
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT:
        mem_sim_alloc(s, MEM_DENSE, f * n);
        mem_sim_alloc(s, MEM_QWEIGHTS, qgrid_data_bytes(n, 2));
        mem_sim_alloc(s, MEM_QSTATE, qgrid_scale_bytes(1));
        break;
    case LPHASE_FORWARD: mem_sim_workspace(s, f * lowbit_work_floats(p->out, p->in, p->N, aq)); break;
    case LPHASE_BACKWARD:
        mem_sim_workspace(s, f * lowbit_work_floats(p->out, p->in, p->N, aq));
        if (!sl[PS_G]) mem_sim_alloc(s, MEM_GRADS, f * n);
        sl[PS_G] = 1;
        break;
    case LPHASE_STEP:
        if (!sl[PS_G]) break;
        optim_plan_update(s, p->o->optimizer, n, (int)sl[PS_OPT]);
        sl[PS_OPT] = 1;
        break;
    case LPHASE_RELEASE_GRADS:
        if (sl[PS_G]) mem_sim_free(s, MEM_GRADS, f * n);
        sl[PS_G] = 0;
        break;
    default: break;
    }
}

/* ---- views and the papers' estimate -------------------------------------------------------- */

static int bitnet_grad_views(linear_layer *L, grad_view *v, int cap) {
    bitnet_state *st = L->state;
    if (!st->G || cap < 1) return 0;
    v[0] = (grad_view){st->G, st->n, "dW", 1}; /* only step reads dW */
    return 1;
}

/* the latent weights (the codes follow them) */
static size_t bitnet_params_get(const linear_layer *L, float *x) {
    const bitnet_state *st = L->state;
    if (x) memcpy(x, st->W, st->n * sizeof(float));
    return st->n;
}

static void bitnet_params_set(linear_layer *L, const float *x) {
    bitnet_state *st = L->state;
    memcpy(st->W, x, st->n * sizeof(float));
    requantize(st);
}

/* latent weights and Adam's two moments in 16 bits (the reference trains in bf16), the codes */
static double bitnet_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    (void)o;
    const size_t n = (size_t)out * in;
    return 6.0 * (double)n + (double)qgrid_data_bytes(n, 2) + (double)qgrid_scale_bytes(1);
}

const linear_method method_bitnet = {
    .name = "bitnet",
    .summary = "BitNet b1.58: fp32 latent weights, ternary absmean weights and 8-bit activations in the forward pass, straight-through gradients",
    .options = bitnet_options,
    .n_options = sizeof bitnet_options / sizeof bitnet_options[0],
    .config_size = sizeof(bitnet_config),
    .straight_through = 1,
    .init = bitnet_init,
    .forward = bitnet_forward,
    .backward = bitnet_backward,
    .grad_sqnorm = bitnet_grad_sqnorm,
    .step = bitnet_step,
    .zero_grad = bitnet_zero_grad,
    .release_grads = bitnet_release_grads,
    .mem_bytes = bitnet_mem_bytes,
    .export_dense = bitnet_export,
    .save = bitnet_save,
    .load = bitnet_load,
    .free = bitnet_free,
    .plan = bitnet_plan,
    .grad_views = bitnet_grad_views,
    .params_get = bitnet_params_get,
    .params_set = bitnet_params_set,
    .paper_bytes = bitnet_paper_bytes,
};
