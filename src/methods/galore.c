/* GaLore: full-rank weights, Adam in a low-rank projection of the gradient (Zhao et al. 2024).
 *
 * Shapes (out x in weight, r = min(rank, smaller side)):
 *   out >= in: P (r x in) = top-r right singular vectors of G, R = G P^T (out x r), back(U) = U P
 *   out <  in: P (out x r) = top-r left singular vectors of G,  R = P^T G (r x in), back(U) = P U
 * so P spans the smaller side, as in the reference.  One optimizer step:
 *   backward accumulates the dense gradient G = dY^T X (the weights are trained in full rank, so
 *     clipping sees ||G||, as the reference's clip_grad_norm_ does);
 *   on refresh steps (0, g, 2g, ...) end_step takes P from the SVD of the (accumulated) G;
 *   step: R = project(G); Adam's moments live on R; the Adam direction U (the update Adam would
 *     apply to a parameter of R's shape) is projected back and W <- (1 - lr wd) W + scale back(U).
 * The direction comes from loqt's own AdamW / 8-bit Adam applied to a zero buffer, so both
 * optimizers and their bias correction are exactly those of the other methods (eps after bias
 * correction, as torch.optim.AdamW; the reference's transformers-style AdamW adds eps before it).
 *
 * When P changes, the reference keeps the moments as they are although they were accumulated in
 * the old basis (a trap); --galore-state chooses: keep (the reference), project (m <- m C and
 * v <- v (C o C) with C the r x r change of basis, the elementwise-independent estimate of the
 * second moment), or reset (zero moments, bias correction restarted).
 *
 * Weights are fp32, or bf16 written back with stochastic rounding after each update (so updates
 * smaller than a bf16 step are not lost on average). */
#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/svd.h"
#include "methods/linear.h"
#include "quant/qmat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STATE_KEEP, STATE_PROJECT, STATE_RESET };
enum { WEIGHT_FP32, WEIGHT_BF16 };
enum { GSVD_RANDOMIZED, GSVD_EXACT };

typedef struct {
    int rank, update_proj_gap;
    double galore_scale;
    int galore_state, weight_dtype, svd;
} galore_config;

static const method_option galore_options[] = {
    MOPT_I(galore_config, rank, "rank", 128, 1, 1 << 20, "rank r of the gradient projection (at most the layer's smaller side)"),
    MOPT_I(galore_config, update_proj_gap, "update-proj-gap", 200, 1, 1 << 30, "steps between refreshes of the projection P (step 0 is one)"),
    MOPT_F(galore_config, galore_scale, "galore-scale", 0.25, 1e-6, 1e6, "scale of the back-projected update"),
    MOPT_C(galore_config, galore_state, "galore-state", STATE_RESET, "keep|project|reset", "Adam's moments when P changes: keep (the reference), project into the new basis, or reset (zero, bias correction restarted; best in docs/galore_state.md)"),
    MOPT_C(galore_config, weight_dtype, "weight-dtype", WEIGHT_FP32, "fp32|bf16", "storage of W (bf16 is updated with stochastic rounding)"),
    MOPT_C(galore_config, svd, "svd", GSVD_RANDOMIZED, "randomized|exact", "SVD of the gradient: randomized range finder, or exact one-sided Jacobi (slow; small layers, tests)"),
};
_Static_assert(sizeof(galore_config) <= METHOD_CONFIG_BYTES, "galore_config too large");

/* ---- shapes and sizes, shared by the code and its planning twin -------------------------- */

typedef struct {
    int r, left;        /* left: out >= in (P is r x in) */
    size_t n, nP, nR;   /* elements of W, P (r x smaller side), R (larger side x r) */
    qmat_kind wk;
} galore_geom;

static galore_geom geom_of(int out, int in, const galore_config *c) {
    galore_geom g;
    g.left = out >= in;
    const int small = g.left ? in : out, large = g.left ? out : in;
    g.r = c->rank < small ? c->rank : small;
    g.n = (size_t)out * in;
    g.nP = (size_t)g.r * small;
    g.nR = (size_t)g.r * large;
    g.wk = c->weight_dtype == WEIGHT_BF16 ? QMAT_BF16 : QMAT_F32;
    return g;
}

/* bf16 weights are read in chunks of rows: bounds the work buffer to ~16 MiB */
static int chunk_rows(int out, int in) {
    int rows = (1 << 22) / (in > 0 ? in : 1);
    if (rows < 1) rows = 1;
    return rows < out ? rows : out;
}

static size_t fwd_work_floats(const galore_geom *g, int out, int in) {
    return g->wk == QMAT_F32 ? 0 : (size_t)chunk_rows(out, in) * in;
}

/* the step's work buffer: R, the Adam direction U, and a chunk of W rows for bf16 */
static size_t step_work_floats(const galore_geom *g, int out, int in) {
    return 2 * g->nR + fwd_work_floats(g, out, in);
}

/* the buffers of a projecting refresh: old m, v, new m, v, and C */
static size_t project_floats(const galore_geom *g) { return 4 * g->nR + (size_t)g->r * g->r; }

static int is_refresh(const galore_config *c, long step) { return step % c->update_proj_gap == 0; }

static long galore_next_refresh(const method_opts *o, long after) {
    galore_config c;
    method_config_get(o, &c, sizeof c);
    return (after / c.update_proj_gap + 1) * c.update_proj_gap;
}

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    galore_config c;
    galore_geom g;
    uint64_t seed, stream;
    qmat W;          /* out x in, fp32 or bf16 (MEM_DENSE) */
    float *P;        /* MEM_FACTORS, from the first refresh */
    float *G;        /* dense gradient (MEM_GRADS), from the first backward */
    optim_state opt; /* Adam over R */
    long step;
    double refresh_s, cos_sum; /* refresh time; sum of |cos| of successive top vectors */
    long refreshes, changes;
} galore_state;

/* |cos| between the top singular vectors of two projections (row 0, or column 0) */
static double top_cos(const galore_geom *g, int out, int in, const float *A, const float *B) {
    const int len = g->left ? in : out, stride = g->left ? 1 : g->r;
    double d = 0;
    for (int i = 0; i < len; i++) d += (double)A[(size_t)i * stride] * B[(size_t)i * stride];
    return fabs(d);
}

static int galore_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    galore_state *st = calloc(1, sizeof *st);
    L->state = st;
    method_config_get(o, &st->c, sizeof st->c);
    st->g = geom_of(L->out, L->in, &st->c);
    st->seed = o->seed;
    st->stream = rng_stream_id(L->name);
    if (qmat_init(&st->W, st->g.wk, L->out, L->in, false, MEM_DENSE)) return -1;
    optim_state_init(&st->opt, st->g.nR, o->optimizer);
    const float *W0 = ini ? ini->W0 : NULL;
    float *W = W0 ? (float *)W0 : linear_random_init(L, o->seed, MEM_SCRATCH);
    int rc = qmat_set(&st->W, W);
    if (!W0) mem_free(W);
    return rc;
}

/* Y (+)= X W^T for fp32 or bf16 W (chunks of rows dequantized into the workspace) */
static void galore_forward(linear_layer *L, const float *X, float *Y, int N) {
    galore_state *st = L->state;
    const int out = L->out, in = L->in;
    if (st->W.kind == QMAT_F32) {
        gemm(false, true, N, out, in, 1.0f, X, in, st->W.f32, in, 0.0f, Y, out);
        return;
    }
    const int cr = chunk_rows(out, in);
    float *Wc = mem_workspace(sizeof(float) * fwd_work_floats(&st->g, out, in));
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        gemm(false, true, N, r1 - r0, in, 1.0f, X, in, Wc, in, 0.0f, Y + r0, out);
    }
}

static void galore_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                            int accumulate) {
    galore_state *st = L->state;
    const int out = L->out, in = L->in;
    if (dX) {
        if (st->W.kind == QMAT_F32) {
            gemm(false, false, N, in, out, 1.0f, dY, out, st->W.f32, in, accumulate ? 1.0f : 0.0f, dX, in);
        } else {
            const int cr = chunk_rows(out, in);
            float *Wc = mem_workspace(sizeof(float) * fwd_work_floats(&st->g, out, in));
            for (int r0 = 0; r0 < out; r0 += cr) {
                int r1 = r0 + cr < out ? r0 + cr : out;
                qmat_get_rows(&st->W, r0, r1, Wc);
                gemm(false, false, N, in, r1 - r0, 1.0f, dY + r0, out, Wc, in,
                     accumulate || r0 > 0 ? 1.0f : 0.0f, dX, in);
            }
        }
    }
    if (!st->G) st->G = mem_alloc(MEM_GRADS, st->g.n * sizeof(float));
    gemm(true, false, out, in, N, 1.0f, dY, out, X, in, 1.0f, st->G, in);
}

static void galore_begin_step(linear_layer *L, long step) { ((galore_state *)L->state)->step = step; }

/* R = G P^T (left, out x r) or P^T G (right, r x in) */
static void project(const galore_state *st, int out, int in, const float *P, float *R) {
    const int r = st->g.r;
    if (st->g.left) gemm(false, true, out, r, in, 1.0f, st->G, in, P, in, 0.0f, R, r);
    else gemm(true, false, r, in, out, 1.0f, P, r, st->G, in, 0.0f, R, in);
}

/* The moments from the basis of P to that of Pn: left (m is out x r, P r x in) m <- m C with
 * C = P Pn^T; right (m is r x in, P out x r) m <- C^T m with C = P^T Pn; v likewise with C o C. */
static void project_moments(galore_state *st, int out, int in, const float *Pn) {
    const galore_geom *g = &st->g;
    const int r = g->r, rows = g->left ? out : r, cols = g->left ? r : in;
    float *buf = mem_alloc(MEM_SCRATCH, project_floats(g) * sizeof(float));
    float *m = buf, *v = m + g->nR, *mn = v + g->nR, *vn = mn + g->nR, *C = vn + g->nR;
    if (optim_state_get_moments(&st->opt, m, v)) {
        if (g->left) gemm(false, true, r, r, in, 1.0f, st->P, in, Pn, in, 0.0f, C, r);
        else gemm(true, false, r, r, out, 1.0f, st->P, r, Pn, r, 0.0f, C, r);
        if (g->left) gemm(false, false, rows, cols, r, 1.0f, m, r, C, r, 0.0f, mn, r);
        else gemm(true, false, rows, cols, r, 1.0f, C, r, m, in, 0.0f, mn, in);
        for (int i = 0; i < r * r; i++) C[i] *= C[i];
        if (g->left) gemm(false, false, rows, cols, r, 1.0f, v, r, C, r, 0.0f, vn, r);
        else gemm(true, false, rows, cols, r, 1.0f, C, r, v, in, 0.0f, vn, in);
        for (size_t i = 0; i < g->nR; i++) vn[i] = vn[i] > 0.0f ? vn[i] : 0.0f;
        optim_state_set_moments(&st->opt, mn, vn);
    }
    mem_free(buf);
}

static int refresh(linear_layer *L) {
    galore_state *st = L->state;
    const int out = L->out, in = L->in, r = st->g.r;
    const double t0 = loqt_now();
    for (size_t i = 0; i < st->g.n; i++)
        if (!isfinite(st->G[i]))
            return loqt_set_error("%s: the gradient has a non-finite value at step %ld (training "
                                  "diverged; try a lower --lr)", L->name, st->step);
    float *Pn = mem_alloc(MEM_SCRATCH, st->g.nP * sizeof(float));
    svd_opts so = svd_default_opts();
    so.seed = st->seed;
    so.stream = st->stream ^ (uint64_t)st->step;
    float *U = st->g.left ? NULL : Pn, *Vt = st->g.left ? Pn : NULL;
    int rc = st->c.svd == GSVD_EXACT ? svd_exact(st->G, out, in, r, U, NULL, Vt)
                                     : svd_randomized(st->G, out, in, r, &so, U, NULL, Vt);
    if (rc) {
        mem_free(Pn);
        return loqt_set_error("%s: SVD of the gradient failed: %s", L->name, loqt_last_error());
    }
    if (st->P) {
        st->cos_sum += top_cos(&st->g, out, in, st->P, Pn);
        st->changes++;
        if (st->c.galore_state == STATE_PROJECT) project_moments(st, out, in, Pn);
        else if (st->c.galore_state == STATE_RESET) optim_state_restart(&st->opt, st->step);
    } else {
        st->P = mem_alloc(MEM_FACTORS, st->g.nP * sizeof(float));
    }
    memcpy(st->P, Pn, st->g.nP * sizeof(float));
    mem_free(Pn);
    const double dt = loqt_now() - t0;
    st->refresh_s += dt;
    st->refreshes++;
    if (dt >= 1.0)
        loqt_progress("step %ld: refreshed %s (%d x %d, rank %d) in %.1f s", st->step, L->name, out, in, r, dt);
    return 0;
}

static int galore_end_step(linear_layer *L, long step) {
    galore_state *st = L->state;
    /* a P is also made at the first step that has a gradient (step 0, unless that was skipped) */
    if (!st->G || (!is_refresh(&st->c, step) && st->P)) return 0;
    return refresh(L);
}

static double galore_grad_sqnorm(const linear_layer *L) {
    const galore_state *st = L->state;
    return st->G ? optim_sqnorm(st->G, st->g.n) : 0.0;
}

/* W[r0:r1) <- decay W[r0:r1) + scale back(U)[r0:r1) */
static void apply_rows(const galore_state *st, int in, int r0, int r1, const float *U, float decay,
                       float *Wr) {
    const int r = st->g.r;
    const float sc = (float)st->c.galore_scale;
    if (st->g.left) gemm(false, false, r1 - r0, in, r, sc, U + (size_t)r0 * r, r, st->P, in, decay, Wr, in);
    else gemm(false, false, r1 - r0, in, r, sc, st->P + (size_t)r0 * r, r, U, in, decay, Wr, in);
}

static int galore_step(linear_layer *L, const optim_hparams *h) {
    galore_state *st = L->state;
    if (!st->G || !st->P) return 0;
    const int out = L->out, in = L->in;
    float *R = mem_workspace(sizeof(float) * step_work_floats(&st->g, out, in));
    float *U = R + st->g.nR, *Wc = U + st->g.nR;
    project(st, out, in, st->P, R);
    /* Adam on R: applied to U = 0 without weight decay, U becomes the Adam direction */
    optim_hparams hp = *h;
    hp.weight_decay = 0.0f;
    memset(U, 0, st->g.nR * sizeof(float));
    optim_update(&st->opt, U, R, &hp);
    const float decay = 1.0f - h->lr * h->weight_decay;
    if (st->W.kind == QMAT_F32) {
        apply_rows(st, in, 0, out, U, decay, st->W.f32);
        return 0;
    }
    const int cr = chunk_rows(out, in);
    const uint64_t seed = st->seed ^ 0x6a1011eull, stream = st->stream + (uint64_t)h->t * 0x9e37ull;
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        apply_rows(st, in, r0, r1, U, decay, Wc);
        qmat_set_rows_stochastic(&st->W, r0, r1, Wc, seed, stream);
    }
    return 0;
}

static void galore_zero_grad(linear_layer *L) {
    galore_state *st = L->state;
    if (st->G) memset(st->G, 0, st->g.n * sizeof(float));
}

static void galore_release_grads(linear_layer *L) {
    galore_state *st = L->state;
    mem_free(st->G);
    st->G = NULL;
}

static void galore_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const galore_state *st = L->state;
    qmat_mem_bytes(&st->W, bytes);
    bytes[MEM_FACTORS] += mem_size(st->P);
    bytes[MEM_GRADS] += mem_size(st->G);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

static void galore_export(const linear_layer *L, float *W) { qmat_get(&((const galore_state *)L->state)->W, W); }

static void galore_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const galore_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name); /* a plain LLaMA weight (F32 or BF16) */
    qmat_save(&st->W, model, nm);
    if (st->P) {
        int64_t shape[2] = {st->g.left ? st->g.r : L->out, st->g.left ? L->in : st->g.r};
        snprintf(nm, sizeof nm, "galore.%s.P", L->name);
        st_writer_add(state, nm, ST_F32, 2, shape, st->P);
    }
    snprintf(nm, sizeof nm, "optimizer.%s.galore", L->name);
    optim_state_save(&st->opt, state, nm);
}

static int galore_load(linear_layer *L, const st_file *model, const st_file *state) {
    galore_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if (qmat_load(&st->W, model, nm)) return -1;
    if (!state) return 0;
    snprintf(nm, sizeof nm, "galore.%s.P", L->name);
    if (st_find(state, nm)) {
        int64_t shape[2] = {st->g.left ? st->g.r : L->out, st->g.left ? L->in : st->g.r};
        if (!st->P) st->P = mem_alloc(MEM_FACTORS, st->g.nP * sizeof(float));
        if (st_read_f32(state, nm, st->P, 2, shape)) return -1;
    }
    snprintf(nm, sizeof nm, "optimizer.%s.galore", L->name);
    return optim_state_load(&st->opt, state, nm);
}

static void galore_free(linear_layer *L) {
    galore_state *st = L->state;
    if (!st) return;
    qmat_free(&st->W);
    mem_free(st->P);
    mem_free(st->G);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

/* planning state: G exists, P exists, optimizer state exists, this step */
enum { PS_G, PS_P, PS_OPT, PS_STEP };

static void galore_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    galore_config c;
    method_config_get(p->o, &c, sizeof c);
    const galore_geom g = geom_of(p->out, p->in, &c);
    const size_t f = sizeof(float);
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT:
        qmat_plan_init(s, g.wk, g.n, false, MEM_DENSE);
        mem_sim_temp(s, MEM_SCRATCH, f * g.n); /* the random initial W */
        break;
    case LPHASE_BEGIN_STEP: sl[PS_STEP] = p->step; break;
    case LPHASE_FORWARD:
        if (g.wk != QMAT_F32) mem_sim_workspace(s, f * fwd_work_floats(&g, p->out, p->in));
        break;
    case LPHASE_BACKWARD:
        if (g.wk != QMAT_F32) mem_sim_workspace(s, f * fwd_work_floats(&g, p->out, p->in));
        if (!sl[PS_G]) mem_sim_alloc(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 1;
        break;
    case LPHASE_END_STEP:
        if (!sl[PS_G] || (!is_refresh(&c, p->step) && sl[PS_P])) break;
        mem_sim_alloc(s, MEM_SCRATCH, f * g.nP); /* the new P */
        if (c.svd == GSVD_EXACT) svd_exact_plan(s, p->out, p->in, g.r);
        else svd_randomized_plan(s, p->out, p->in, g.r, NULL);
        if (sl[PS_P] && c.galore_state == STATE_PROJECT) mem_sim_temp(s, MEM_SCRATCH, f * project_floats(&g));
        if (!sl[PS_P]) mem_sim_alloc(s, MEM_FACTORS, f * g.nP);
        sl[PS_P] = 1;
        mem_sim_free(s, MEM_SCRATCH, f * g.nP);
        break;
    case LPHASE_STEP:
        if (!sl[PS_G] || !sl[PS_P]) break;
        mem_sim_workspace(s, f * step_work_floats(&g, p->out, p->in));
        optim_plan_update(s, p->o->optimizer, g.nR, (int)sl[PS_OPT]);
        sl[PS_OPT] = 1;
        break;
    case LPHASE_RELEASE_GRADS:
        if (sl[PS_G]) mem_sim_free(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 0;
        break;
    case LPHASE_EXPORT: break;
    }
}

/* ---- views, statistics, the papers' estimate ---------------------------------------------- */

static int galore_grad_views(linear_layer *L, grad_view *v, int cap) {
    galore_state *st = L->state;
    if (!st->G || cap < 1) return 0;
    /* a refresh step's SVD (on every rank) needs the summed G; otherwise only the update does */
    const int refresh_now = !st->P || is_refresh(&st->c, st->step);
    v[0] = (grad_view){st->G, st->g.n, "dW", !refresh_now};
    return 1;
}

static size_t galore_params_get(const linear_layer *L, float *x) {
    const galore_state *st = L->state;
    if (x) qmat_get(&st->W, x);
    return st->g.n;
}

static void galore_params_set(linear_layer *L, const float *x) { qmat_set(&((galore_state *)L->state)->W, x); }

static void galore_stats(const linear_layer *L, method_stats *acc) {
    const galore_state *st = L->state;
    method_stats_add(acc, "refresh_s", STAT_SUM, st->refresh_s);
    method_stats_add(acc, "refreshes", STAT_SUM, (double)st->refreshes);
    /* how far the subspace moves: 1 = the top direction stayed */
    if (st->changes) method_stats_add(acc, "subspace_cos", STAT_MEAN, st->cos_sum / st->changes);
}

/* W, P and Adam's two moments of R in 16 bits */
static double galore_paper_bytes(int out, int in, const method_opts *o) {
    galore_config c;
    method_config_get(o, &c, sizeof c);
    const galore_geom g = geom_of(out, in, &c);
    return 2.0 * (double)g.n + 2.0 * (double)g.nP + 4.0 * (double)g.nR;
}

const linear_method method_galore = {
    .name = "galore",
    .summary = "GaLore: full-rank weights, Adam in a rank-r projection of the gradient refreshed from its SVD every --update-proj-gap steps",
    .options = galore_options,
    .n_options = sizeof galore_options / sizeof galore_options[0],
    .config_size = sizeof(galore_config),
    .heap_churn = 1, /* the refresh frees and allocates the SVD's buffers (docs/memory.md) */
    .init = galore_init,
    .forward = galore_forward,
    .backward = galore_backward,
    .begin_step = galore_begin_step,
    .end_step = galore_end_step,
    .grad_sqnorm = galore_grad_sqnorm,
    .step = galore_step,
    .zero_grad = galore_zero_grad,
    .release_grads = galore_release_grads,
    .mem_bytes = galore_mem_bytes,
    .export_dense = galore_export,
    .save = galore_save,
    .load = galore_load,
    .free = galore_free,
    .plan = galore_plan,
    .next_refresh = galore_next_refresh,
    .grad_views = galore_grad_views,
    .params_get = galore_params_get,
    .params_set = galore_params_set,
    .stats = galore_stats,
    .paper_bytes = galore_paper_bytes,
};
