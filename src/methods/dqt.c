/* DQT: direct quantized training with stochastic rounding (Zhao et al. 2024, arXiv 2412.04787).
 *
 * The weights exist only as packed n-bit integer codes (2..8 bits, or ternary in 2 bits) with one
 * fp32 scale per tensor or per row (quant/qint.h qgrid): there is no fp32 master copy and no
 * full-size float copy of W at any time.
 *   init: W0 (or the normal(0, 0.02) init, generated a tile of rows at a time) quantized with the
 *     absmean scale delta = max(mean|W|, 1e-5) / Qp, round-half-even, clamp to [qmin, qmax];
 *   forward / backward (kernels/lowbit.h): 8-bit per-token absmax fake-quantized activations,
 *     W dequantized a tile of rows at a time into the shared workspace; dW = dY^T Xq into a dense
 *     fp32 gradient, dX = dY W passed straight through the activation quantizer;
 *   step: a tile of W (LOWBIT_TILE_ELEMS elements) is dequantized, Adam's update is applied to it
 *     (optim_update_range: the same numbers as one whole-array update) and the tile is written
 *     back onto the grid with stochastic rounding (counter-based, reproducible).
 * The rounding scale of a step is recomputed from the weights before it, as in the reference, but
 * from their absolute maximum: delta' = delta * max|q| / max(|qmin|, qmax), which is delta itself
 * while the grid's largest code is in use (the reference divides the signed max by Qp, which
 * breaks when the positive side is not at Qp; see docs/methods.md). */
#include "core/error.h"
#include "core/rng.h"
#include "kernels/lowbit.h"
#include "methods/linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SCALE_TENSOR, SCALE_ROW };
enum { ACT_INT8, ACT_NONE };
#define BITS_CHOICES "2|3|4|5|6|7|8|ternary"
enum { BITS_TERNARY = 7 }; /* index k < 7 of BITS_CHOICES is k + 2 bits */

typedef struct {
    int bits, scale, act_quant;
} dqt_config;

static const method_option dqt_options[] = {
    MOPT_C(dqt_config, bits, "bits", 6, BITS_CHOICES, "width of the weight codes: 2..8 bits, or ternary {-1, 0, 1} packed in 2 bits (default 8: the paper's best, near BitNet b1.58; weights are the smallest part of the training memory, docs/methods.md)"),
    MOPT_C(dqt_config, scale, "scale", SCALE_TENSOR, "per-tensor|per-row", "one fp32 scale for the layer (the paper's), or one per output row"),
    MOPT_C(dqt_config, act_quant, "act-quant", ACT_INT8, "int8|none", "activations fake-quantized to 8 bits per token (absmax, straight-through), or left in fp32"),
};
_Static_assert(sizeof(dqt_config) <= METHOD_CONFIG_BYTES, "dqt_config too large");

/* ---- sizes, shared by the code and its planning twin --------------------------------------- */

typedef struct {
    size_t n, nscale, tile; /* elements, scales, elements of an update tile */
    int bits, ternary, per_row, act_quant;
} dqt_geom;

static dqt_geom geom_of(int out, int in, const dqt_config *c) {
    dqt_geom g;
    g.n = (size_t)out * in;
    g.ternary = c->bits == BITS_TERNARY;
    g.bits = g.ternary ? 2 : c->bits + 2;
    g.per_row = c->scale == SCALE_ROW;
    g.nscale = g.per_row ? (size_t)out : 1;
    g.tile = g.n < LOWBIT_TILE_ELEMS ? g.n : LOWBIT_TILE_ELEMS;
    g.act_quant = c->act_quant == ACT_INT8;
    return g;
}

/* init: one tile of rows of the random initial W */
static size_t init_work_floats(int out, int in) { return (size_t)lowbit_tile_rows(out, in) * in; }

/* step: one tile of W and the new scales */
static size_t step_work_floats(const dqt_geom *g) { return g->tile + g->nscale; }

/* ---- the layer ------------------------------------------------------------------------------ */

typedef struct {
    dqt_config c;
    dqt_geom g;
    uint64_t seed, stream;
    qgrid_tensor W; /* codes MEM_QWEIGHTS, scales MEM_QSTATE */
    float *G;       /* dense gradient (MEM_GRADS), from the first backward */
    optim_state opt;
} dqt_state;

/* the absmean scale of n values whose |.| sum to abs_sum (the reference floors the mean at 1e-5) */
static float absmean_delta(double abs_sum, size_t n, const qgrid_tensor *W) {
    float mean = (float)(abs_sum / (double)n);
    return (mean > 1e-5f ? mean : 1e-5f) / (float)W->qmax;
}

static double abs_sum(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)x[i]);
    return s;
}

/* rows [r0, r1) of the normal(0, 0.02) init, the values linear_random_init would give */
static void random_rows(const dqt_state *st, int in, int r0, int r1, float *x) {
    const size_t e0 = (size_t)r0 * in, len = (size_t)(r1 - r0) * in;
#pragma omp parallel for schedule(static) if (len >= ((size_t)1 << 16))
    for (size_t i = 0; i < len; i++) x[i] = 0.02f * rng_normal(st->seed, st->stream, e0 + i);
}

/* Quantizes W0 (or the random init when NULL, a tile of rows at a time) with absmean scales. */
static int quantize_init(dqt_state *st, int out, int in, const float *W0) {
    qgrid_tensor *W = &st->W;
    const int tr = lowbit_tile_rows(out, in);
    float *buf = W0 ? NULL : mem_workspace(sizeof(float) * init_work_floats(out, in));
    if (!st->g.per_row) { /* pass 1: the tensor's absmean */
        double s = 0;
        for (int r0 = 0; r0 < out && !W0; r0 += tr) {
            const int r1 = r0 + tr < out ? r0 + tr : out;
            random_rows(st, in, r0, r1, buf);
            s += abs_sum(buf, (size_t)(r1 - r0) * in);
        }
        if (W0) s = abs_sum(W0, st->g.n);
        if (qgrid_set_delta(W, absmean_delta(s, st->g.n, W))) return -1;
    }
    for (int r0 = 0; r0 < out; r0 += tr) {
        const int r1 = r0 + tr < out ? r0 + tr : out;
        const float *x = W0 ? W0 + (size_t)r0 * in : buf;
        if (!W0) random_rows(st, in, r0, r1, buf);
        for (int r = r0; r < r1 && st->g.per_row; r++)
            W->scale[r] = absmean_delta(abs_sum(x + (size_t)(r - r0) * in, (size_t)in), (size_t)in, W);
        if (qgrid_quantize_range(W, (size_t)r0 * in, (size_t)r1 * in, x, NULL, NULL)) return -1;
    }
    return 0;
}

static int dqt_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    dqt_state *st = calloc(1, sizeof *st);
    L->state = st;
    method_config_get(o, &st->c, sizeof st->c);
    st->g = geom_of(L->out, L->in, &st->c);
    st->seed = o->seed;
    st->stream = rng_stream_id(L->name);
    const int rc = st->g.per_row ? qgrid_init_rows(&st->W, L->out, L->in, st->g.bits, st->g.ternary)
                                 : qgrid_init(&st->W, st->g.n, st->g.bits, st->g.ternary);
    if (rc) return -1;
    optim_state_init(&st->opt, st->g.n, o->optimizer);
    return quantize_init(st, L->out, L->in, ini ? ini->W0 : NULL);
}

static void dqt_forward(linear_layer *L, const float *X, float *Y, int N) {
    dqt_state *st = L->state;
    float *work = mem_workspace(sizeof(float) * lowbit_work_floats(L->out, L->in, N, st->g.act_quant));
    lowbit_forward(&st->W, L->out, L->in, X, Y, N, st->g.act_quant, lowbit_tile_rows(L->out, L->in), work);
}

static void dqt_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate) {
    dqt_state *st = L->state;
    float *work = mem_workspace(sizeof(float) * lowbit_work_floats(L->out, L->in, N, st->g.act_quant));
    if (!st->G) st->G = mem_alloc(MEM_GRADS, st->g.n * sizeof(float));
    lowbit_backward(&st->W, L->out, L->in, X, dY, dX, st->G, N, accumulate, st->g.act_quant,
                    lowbit_tile_rows(L->out, L->in), work);
}

static double dqt_grad_sqnorm(const linear_layer *L) {
    const dqt_state *st = L->state;
    return st->G ? optim_sqnorm(st->G, st->g.n) : 0.0;
}

/* The step's rounding scales from the absmax of the weights before the update. */
static void rounding_scales(const qgrid_tensor *W, float *scale) {
    const float qabs = (float)qgrid_qabs(W);
    for (size_t g = 0; g < W->nscale; g++) {
        const int m = qgrid_group_maxabs(W, g);
        /* an all-zero group keeps its scale, so it can leave zero again */
        scale[g] = m ? W->scale[g] * ((float)m / qabs) : W->scale[g];
    }
}

static int dqt_step(linear_layer *L, const optim_hparams *h) {
    dqt_state *st = L->state;
    if (!st->G) return 0;
    const dqt_geom *g = &st->g;
    float *Wt = mem_workspace(sizeof(float) * step_work_floats(g)), *scale = Wt + g->tile;
    rounding_scales(&st->W, scale);
    const sround_key key = {st->seed ^ 0xd9700001ull, st->stream + (uint64_t)h->t * 0x9e3779b9ull, 0};
    for (size_t e0 = 0; e0 < g->n; e0 += g->tile) {
        const size_t e1 = e0 + g->tile < g->n ? e0 + g->tile : g->n;
        qgrid_dequantize_range(&st->W, e0, e1, Wt);
        if (optim_update_range(&st->opt, Wt, st->G + e0, e0, e1, h) ||
            qgrid_quantize_range(&st->W, e0, e1, Wt, scale, &key))
            return loqt_set_error("%s: update: %s", L->name, loqt_last_error());
    }
    memcpy(st->W.scale, scale, g->nscale * sizeof(float));
    return 0;
}

static void dqt_zero_grad(linear_layer *L) {
    dqt_state *st = L->state;
    if (st->G) memset(st->G, 0, st->g.n * sizeof(float));
}

static void dqt_release_grads(linear_layer *L) {
    dqt_state *st = L->state;
    mem_free(st->G);
    st->G = NULL;
}

static void dqt_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const dqt_state *st = L->state;
    bytes[MEM_QWEIGHTS] += mem_size(st->W.data);
    bytes[MEM_QSTATE] += mem_size(st->W.scale);
    bytes[MEM_GRADS] += mem_size(st->G);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

static void dqt_export(const linear_layer *L, float *W) { qgrid_dequantize(&((const dqt_state *)L->state)->W, W); }

static void dqt_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const dqt_state *st = L->state;
    char nm[200];
    const int64_t cshape[1] = {(int64_t)qgrid_data_bytes(st->g.n, st->g.bits)}, sshape[1] = {(int64_t)st->g.nscale};
    snprintf(nm, sizeof nm, "%s.dqt.codes", L->name);
    st_writer_add(model, nm, ST_U8, 1, cshape, st->W.data);
    snprintf(nm, sizeof nm, "%s.dqt.scale", L->name);
    st_writer_add(model, nm, ST_F32, 1, sshape, st->W.scale);
    snprintf(nm, sizeof nm, "optimizer.%s.dqt", L->name);
    optim_state_save(&st->opt, state, nm);
}

/* a checkpoint's codes and scales: scales finite and >= 0, ternary fields never the unused 3 */
static int check_loaded(const linear_layer *L, const qgrid_tensor *W) {
    for (size_t g = 0; g < W->nscale; g++)
        if (!(W->scale[g] >= 0.0f && W->scale[g] <= 3.4e38f))
            return loqt_set_error("%s.dqt.scale: scale %zu is negative or not finite", L->name, g);
    for (size_t i = 0; W->ternary && i < W->n; i++)
        if (qgrid_value(W, i) > 1)
            return loqt_set_error("%s.dqt.codes: element %zu holds code 3, not a ternary value", L->name, i);
    return 0;
}

static int dqt_load(linear_layer *L, const st_file *model, const st_file *state) {
    dqt_state *st = L->state;
    char nm[200];
    const int64_t cshape[1] = {(int64_t)qgrid_data_bytes(st->g.n, st->g.bits)}, sshape[1] = {(int64_t)st->g.nscale};
    snprintf(nm, sizeof nm, "%s.dqt.codes", L->name);
    if (st_read_raw(model, nm, st->W.data, ST_U8, 1, cshape)) return -1;
    snprintf(nm, sizeof nm, "%s.dqt.scale", L->name);
    if (st_read_raw(model, nm, st->W.scale, ST_F32, 1, sshape) || check_loaded(L, &st->W)) return -1;
    if (!state) return 0;
    snprintf(nm, sizeof nm, "optimizer.%s.dqt", L->name);
    return optim_state_load(&st->opt, state, nm);
}

static void dqt_free(linear_layer *L) {
    dqt_state *st = L->state;
    if (!st) return;
    qgrid_free(&st->W);
    mem_free(st->G);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

enum { PS_G, PS_OPT }; /* planning state: the gradient, the optimizer state exist */

static void dqt_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    dqt_config c;
    method_config_get(p->o, &c, sizeof c);
    const dqt_geom g = geom_of(p->out, p->in, &c);
    const size_t f = sizeof(float);
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT:
        mem_sim_alloc(s, MEM_QWEIGHTS, qgrid_data_bytes(g.n, g.bits));
        mem_sim_alloc(s, MEM_QSTATE, qgrid_scale_bytes(g.nscale));
        if (!p->init_W0) mem_sim_workspace(s, f * init_work_floats(p->out, p->in)); /* the random init's tiles */
        break;
    case LPHASE_FORWARD: mem_sim_workspace(s, f * lowbit_work_floats(p->out, p->in, p->N, g.act_quant)); break;
    case LPHASE_BACKWARD:
        mem_sim_workspace(s, f * lowbit_work_floats(p->out, p->in, p->N, g.act_quant));
        if (!sl[PS_G]) mem_sim_alloc(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 1;
        break;
    case LPHASE_STEP:
        if (!sl[PS_G]) break;
        mem_sim_workspace(s, f * step_work_floats(&g));
        optim_plan_update(s, p->o->optimizer, g.n, (int)sl[PS_OPT]);
        sl[PS_OPT] = 1;
        break;
    case LPHASE_RELEASE_GRADS:
        if (sl[PS_G]) mem_sim_free(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 0;
        break;
    default: break;
    }
}

/* ---- views and the papers' estimate -------------------------------------------------------- */

static int dqt_grad_views(linear_layer *L, grad_view *v, int cap) {
    dqt_state *st = L->state;
    if (!st->G || cap < 1) return 0;
    v[0] = (grad_view){st->G, st->g.n, "dW", 1}; /* only step reads dW */
    return 1;
}

/* The parameters are the dequantized weights; setting them rounds to the nearest grid value at
 * the current scales (exact for values on the grid, so get then set changes nothing). */
static size_t dqt_params_get(const linear_layer *L, float *x) {
    const dqt_state *st = L->state;
    if (x) qgrid_dequantize(&st->W, x);
    return st->g.n;
}

static void dqt_params_set(linear_layer *L, const float *x) {
    dqt_state *st = L->state;
    qgrid_quantize_range(&st->W, 0, st->g.n, x, NULL, NULL);
}

/* the codes at their width, the scales, Adam's two moments in 16 bits */
static double dqt_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    dqt_config c;
    method_config_get(o, &c, sizeof c);
    const dqt_geom g = geom_of(out, in, &c);
    return (double)qgrid_data_bytes(g.n, g.bits) + (double)qgrid_scale_bytes(g.nscale) + 4.0 * (double)g.n;
}

const linear_method method_dqt = {
    .name = "dqt",
    .summary = "DQT: weights only as packed n-bit or ternary integers, Adam's update written back with stochastic rounding, 8-bit activations",
    .options = dqt_options,
    .n_options = sizeof dqt_options / sizeof dqt_options[0],
    .config_size = sizeof(dqt_config),
    .init = dqt_init,
    .forward = dqt_forward,
    .backward = dqt_backward,
    .grad_sqnorm = dqt_grad_sqnorm,
    .step = dqt_step,
    .zero_grad = dqt_zero_grad,
    .release_grads = dqt_release_grads,
    .mem_bytes = dqt_mem_bytes,
    .export_dense = dqt_export,
    .save = dqt_save,
    .load = dqt_load,
    .free = dqt_free,
    .plan = dqt_plan,
    .grad_views = dqt_grad_views,
    .params_get = dqt_params_get,
    .params_set = dqt_params_set,
    .paper_bytes = dqt_paper_bytes,
};
