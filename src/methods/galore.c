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
 * smaller than a bf16 step are not lost on average).
 *
 * This file is also the engine of Q-GaLore (methods/qgalore.c, methods/galore.h): the same
 * layer with W in int8 and P in int4 (quant/qmat.h), W updated by tiles of whole quantization
 * groups (no fp32 copy of W), and a per-layer adaptive refresh gap. */
#include "methods/galore.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/svd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WEIGHT_FP32, WEIGHT_BF16 };

typedef struct {
    int rank, update_proj_gap;
    double galore_scale;
    int galore_state, weight_dtype, svd;
} galore_config;

static const method_option galore_options[] = {
    MOPT_I(galore_config, rank, "rank", 128, 1, 1 << 20, "rank r of the gradient projection (at most the layer's smaller side)"),
    MOPT_I(galore_config, update_proj_gap, "update-proj-gap", 200, 1, 1 << 30, "steps between refreshes of the projection P (step 0 is one)"),
    MOPT_F(galore_config, galore_scale, "galore-scale", 0.25, 1e-6, 1e6, "scale of the back-projected update"),
    MOPT_C(galore_config, galore_state, "galore-state", GALORE_STATE_RESET, "keep|project|reset", "Adam's moments when P changes: keep (the reference), project into the new basis, or reset (zero, bias correction restarted; best in docs/galore_state.md)"),
    MOPT_C(galore_config, weight_dtype, "weight-dtype", WEIGHT_FP32, "fp32|bf16", "storage of W (bf16 is updated with stochastic rounding)"),
    MOPT_C(galore_config, svd, "svd", GALORE_SVD_RANDOMIZED, "randomized|exact", "SVD of the gradient: randomized range finder, or exact one-sided Jacobi (slow; small layers, tests)"),
};
_Static_assert(sizeof(galore_config) <= METHOD_CONFIG_BYTES, "galore_config too large");

static galore_spec galore_spec_of(const method_opts *o) {
    galore_config c;
    method_config_get(o, &c, sizeof c);
    return (galore_spec){.rank = c.rank, .gap = c.update_proj_gap, .scale = c.galore_scale, .moments = c.galore_state,
                         .svd = c.svd, .wk = c.weight_dtype == WEIGHT_BF16 ? QMAT_BF16 : QMAT_F32, .pk = QMAT_F32,
                         .stochastic = 1};
}

/* ---- shapes and sizes, shared by the code and its planning twin -------------------------- */

galore_geom galore_geom_of(int out, int in, const galore_spec *sp) {
    galore_geom g;
    g.left = out >= in;
    const int small = g.left ? in : out, large = g.left ? out : in;
    g.r = sp->rank < small ? sp->rank : small;
    g.small = small;
    g.n = (size_t)out * in;
    g.nP = (size_t)g.r * small;
    g.nR = (size_t)g.r * large;
    return g;
}

/* Rows of W handled at a time when W is not fp32: ~4M values (a ~16 MiB work buffer), a whole
 * number of the storage's groups (int8: a tile holds whole groups of 256, so each is re-quantized
 * once with its own fresh scale; at most 256 rows of an odd width). */
static int tile_rows(qmat_kind wk, int out, int in) {
    int rows = (1 << 22) / (in > 0 ? in : 1);
    if (rows < 1) rows = 1;
    const int unit = qmat_row_unit(wk, in);
    rows = rows < unit ? unit : rows / unit * unit;
    return rows < out ? rows : out;
}

static size_t fwd_work_floats(const galore_spec *sp, int out, int in) {
    return sp->wk == QMAT_F32 ? 0 : (size_t)tile_rows(sp->wk, out, in) * in;
}

/* the step's work buffer: R, the Adam direction U, P in fp32 when it is stored quantized, and a
 * tile of W rows when W is not fp32 */
static size_t step_work_floats(const galore_spec *sp, const galore_geom *g, int out, int in) {
    return 2 * g->nR + (sp->pk == QMAT_F32 ? 0 : g->nP) + fwd_work_floats(sp, out, in);
}

/* the buffers of a projecting refresh: old m, v, new m, v, C, and the old P in fp32 when it is
 * stored quantized */
static size_t project_floats(const galore_spec *sp, const galore_geom *g) {
    return 4 * g->nR + (size_t)g->r * g->r + (sp->pk == QMAT_F32 ? 0 : g->nP);
}

/* the random initial W by tiles when W is stored in groups (no fp32 copy of the whole W) */
static int tiled_init(const galore_spec *sp) { return sp->wk == QMAT_INT8 || sp->wk == QMAT_INT4; }

static int is_refresh(const galore_spec *sp, long step) { return step % sp->gap == 0; }

long galore_engine_next_refresh(const galore_spec *sp, long after) { return (after / sp->gap + 1) * sp->gap; }

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    galore_spec sp;
    galore_geom g;
    uint64_t seed, stream;
    qmat W;          /* out x in, fp32 or bf16 (MEM_DENSE), or int8 (MEM_QWEIGHTS + MEM_QSTATE) */
    qmat P;          /* the projection, from the first refresh (has_P) */
    int has_P;
    float *top;      /* the last top singular vector in fp32, when P is stored quantized */
    float *G;        /* dense gradient (MEM_GRADS), from the first backward */
    optim_state opt; /* Adam over R */
    long step;
    double refresh_s, cos_sum; /* refresh time; sum of |cos| of successive top vectors */
    long refreshes, changes;
    /* the adaptive schedule: current gap, step of the last refresh, the |cos| queue; the SVDs
     * done and those the fixed gap would have done (its last step), gap changes */
    long gap, last, fixed_last, svds, svds_fixed, doublings;
    int qlen;
    float queue[GALORE_QUEUE_MAX];
    int64_t sched_buf[8]; /* the schedule as the checkpoint stores it (galore_save) */
} galore_state;

static int adaptive(const galore_state *st) { return st->sp.queue_size > 0; }

/* P as fp32: P itself, or dequantized into buf (nP floats) */
static const float *p_f32(const galore_state *st, float *buf) {
    if (st->P.kind == QMAT_F32) return st->P.f32;
    qmat_get(&st->P, buf);
    return buf;
}

/* the top singular vector in P (row 0 when left, column 0 otherwise): element i at i * stride */
static int top_stride(const galore_geom *g) { return g->left ? 1 : g->r; }

/* |cos| between the last top singular vector and that of the new projection Pn */
static double top_cos(const galore_state *st, const float *Pn) {
    const galore_geom *g = &st->g;
    const int stride = top_stride(g);
    const float *A = st->top ? st->top : st->P.f32;
    const int sa = st->top ? 1 : stride;
    double d = 0, na = 0, nb = 0;
    for (int i = 0; i < g->small; i++) {
        const double a = A[(size_t)i * sa], b = Pn[(size_t)i * stride];
        d += a * b, na += a * a, nb += b * b;
    }
    return na > 0 && nb > 0 ? fabs(d) / sqrt(na * nb) : 0.0;
}

/* W[r0:r1) <- N(0, 0.02) from (seed, stream, element), as linear_random_init draws them */
static void random_rows(const galore_state *st, int in, int r0, int r1, float *Wr) {
    const size_t e0 = (size_t)r0 * in, e1 = (size_t)r1 * in;
#pragma omp parallel for schedule(static) if (e1 - e0 >= ((size_t)1 << 16))
    for (size_t i = e0; i < e1; i++) Wr[i - e0] = 0.02f * rng_normal(st->seed, st->stream, (uint64_t)i);
}

static int init_tiled(linear_layer *L, galore_state *st) {
    const int out = L->out, in = L->in, tr = tile_rows(st->sp.wk, out, in);
    float *Wc = mem_alloc(MEM_SCRATCH, sizeof(float) * fwd_work_floats(&st->sp, out, in));
    int rc = 0;
    for (int r0 = 0; r0 < out && !rc; r0 += tr) {
        const int r1 = r0 + tr < out ? r0 + tr : out;
        random_rows(st, in, r0, r1, Wc);
        rc = qmat_set_rows(&st->W, r0, r1, Wc);
    }
    mem_free(Wc);
    return rc;
}

int galore_engine_init(linear_layer *L, const method_opts *o, const linear_init *ini, const galore_spec *sp) {
    galore_state *st = calloc(1, sizeof *st);
    L->state = st;
    st->sp = *sp;
    st->g = galore_geom_of(L->out, L->in, sp);
    st->seed = o->seed;
    st->stream = rng_stream_id(L->name);
    st->gap = sp->gap;
    st->last = st->fixed_last = -1;
    if (qmat_init(&st->W, sp->wk, L->out, L->in, false, MEM_DENSE)) return -1;
    optim_state_init(&st->opt, st->g.nR, o->optimizer);
    const float *W0 = ini ? ini->W0 : NULL;
    if (!W0 && tiled_init(sp)) return init_tiled(L, st);
    float *W = W0 ? (float *)W0 : linear_random_init(L, o->seed, MEM_SCRATCH);
    int rc = qmat_set(&st->W, W);
    if (!W0) mem_free(W);
    return rc;
}

/* Y = X W^T for fp32 W, or by tiles of rows dequantized into the workspace */
void galore_forward(linear_layer *L, const float *X, float *Y, int N) {
    galore_state *st = L->state;
    const int out = L->out, in = L->in;
    if (st->W.kind == QMAT_F32) {
        gemm(false, true, N, out, in, 1.0f, X, in, st->W.f32, in, 0.0f, Y, out);
        return;
    }
    const int cr = tile_rows(st->sp.wk, out, in);
    float *Wc = mem_workspace(sizeof(float) * fwd_work_floats(&st->sp, out, in));
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        gemm(false, true, N, r1 - r0, in, 1.0f, X, in, Wc, in, 0.0f, Y + r0, out);
    }
}

void galore_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate) {
    galore_state *st = L->state;
    const int out = L->out, in = L->in;
    if (dX) {
        if (st->W.kind == QMAT_F32) {
            gemm(false, false, N, in, out, 1.0f, dY, out, st->W.f32, in, accumulate ? 1.0f : 0.0f, dX, in);
        } else {
            const int cr = tile_rows(st->sp.wk, out, in);
            float *Wc = mem_workspace(sizeof(float) * fwd_work_floats(&st->sp, out, in));
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

void galore_begin_step(linear_layer *L, long step) { ((galore_state *)L->state)->step = step; }

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
    float *buf = mem_alloc(MEM_SCRATCH, project_floats(&st->sp, g) * sizeof(float));
    float *m = buf, *v = m + g->nR, *mn = v + g->nR, *vn = mn + g->nR, *C = vn + g->nR;
    if (optim_state_get_moments(&st->opt, m, v)) {
        const float *P = p_f32(st, C + (size_t)r * r);
        if (g->left) gemm(false, true, r, r, in, 1.0f, P, in, Pn, in, 0.0f, C, r);
        else gemm(true, false, r, r, out, 1.0f, P, r, Pn, r, 0.0f, C, r);
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

/* Q-GaLore's rule: |cos| into the queue (the oldest leaves when it is full); a full queue whose
 * mean reaches the threshold multiplies the gap.  The queue is kept after a change, as the
 * reference keeps it: while the subspace stays put, every later refresh grows the gap again. */
static void adapt_gap(galore_state *st, double cos) {
    const int Q = st->sp.queue_size;
    if (st->qlen == Q) {
        memmove(st->queue, st->queue + 1, sizeof(float) * (size_t)(Q - 1));
        st->qlen--;
    }
    st->queue[st->qlen++] = (float)cos;
    if (st->qlen < Q) return;
    double mean = 0;
    for (int i = 0; i < Q; i++) mean += st->queue[i];
    if (mean / Q < st->sp.cos_threshold) return;
    const double ng = floor((double)st->gap * st->sp.gamma);
    const long gap = ng > (double)(1L << 30) ? 1L << 30 : (long)ng;
    if (gap > st->gap) st->doublings++;
    st->gap = gap > 1 ? gap : 1;
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
    int rc = st->sp.svd == GALORE_SVD_EXACT ? svd_exact(st->G, out, in, r, U, NULL, Vt)
                                            : svd_randomized(st->G, out, in, r, &so, U, NULL, Vt);
    if (rc) {
        mem_free(Pn);
        return loqt_set_error("%s: SVD of the gradient failed: %s", L->name, loqt_last_error());
    }
    if (st->has_P) {
        const double c = top_cos(st, Pn);
        st->cos_sum += c;
        st->changes++;
        if (adaptive(st)) adapt_gap(st, c);
        if (st->sp.moments == GALORE_STATE_PROJECT) project_moments(st, out, in, Pn);
        else if (st->sp.moments == GALORE_STATE_RESET) optim_state_restart(&st->opt, st->step);
    } else {
        if (qmat_init(&st->P, st->sp.pk, st->g.left ? r : out, st->g.left ? in : r, false, MEM_FACTORS)) {
            mem_free(Pn);
            return -1;
        }
        if (st->sp.pk != QMAT_F32) st->top = mem_alloc(MEM_FACTORS, sizeof(float) * (size_t)st->g.small);
        st->has_P = 1;
    }
    rc = qmat_set(&st->P, Pn);
    if (st->top)
        for (int i = 0; i < st->g.small; i++) st->top[i] = Pn[(size_t)i * top_stride(&st->g)];
    mem_free(Pn);
    if (rc) return loqt_set_error("%s: %s", L->name, loqt_last_error());
    const double dt = loqt_now() - t0;
    st->refresh_s += dt;
    st->refreshes++;
    st->svds++;
    st->last = st->step;
    if (dt >= 1.0)
        loqt_progress("step %ld: refreshed %s (%d x %d, rank %d) in %.1f s", st->step, L->name, out, in, r, dt);
    return 0;
}

/* A refresh is due at the first step that has a gradient (step 0, unless that was skipped),
 * then at multiples of the gap (fixed), or the gap after the last refresh (adaptive). */
static int refresh_due(const galore_state *st, long step) {
    if (!st->has_P) return 1;
    return adaptive(st) ? step - st->last >= st->gap : is_refresh(&st->sp, step);
}

int galore_end_step(linear_layer *L, long step) {
    galore_state *st = L->state;
    if (!st->G) return 0;
    if (adaptive(st) && (st->fixed_last < 0 || step - st->fixed_last >= st->sp.gap)) {
        /* the refreshes the fixed gap would have made, by the same rule (for svd_saved) */
        st->svds_fixed++;
        st->fixed_last = step;
    }
    return refresh_due(st, step) ? refresh(L) : 0;
}

double galore_grad_sqnorm(const linear_layer *L) {
    const galore_state *st = L->state;
    return st->G ? optim_sqnorm(st->G, st->g.n) : 0.0;
}

/* W[r0:r1) <- decay W[r0:r1) + scale back(U)[r0:r1) */
static void apply_rows(const galore_state *st, const float *P, int in, int r0, int r1, const float *U, float decay,
                       float *Wr) {
    const int r = st->g.r;
    const float sc = (float)st->sp.scale;
    if (st->g.left) gemm(false, false, r1 - r0, in, r, sc, U + (size_t)r0 * r, r, P, in, decay, Wr, in);
    else gemm(false, false, r1 - r0, in, r, sc, P + (size_t)r0 * r, r, U, in, decay, Wr, in);
}

int galore_step(linear_layer *L, const optim_hparams *h) {
    galore_state *st = L->state;
    if (!st->G || !st->has_P) return 0;
    const int out = L->out, in = L->in;
    float *R = mem_workspace(sizeof(float) * step_work_floats(&st->sp, &st->g, out, in));
    float *U = R + st->g.nR, *Pf = U + st->g.nR, *Wc = Pf + (st->P.kind == QMAT_F32 ? 0 : st->g.nP);
    const float *P = p_f32(st, Pf);
    project(st, out, in, P, R);
    /* Adam on R: applied to U = 0 without weight decay, U becomes the Adam direction */
    optim_hparams hp = *h;
    hp.weight_decay = 0.0f;
    memset(U, 0, st->g.nR * sizeof(float));
    optim_update(&st->opt, U, R, &hp);
    const float decay = 1.0f - h->lr * h->weight_decay;
    if (st->W.kind == QMAT_F32) {
        apply_rows(st, P, in, 0, out, U, decay, st->W.f32);
        return 0;
    }
    /* by tiles: dequantize, update, round back (whole groups; no fp32 copy of W) */
    const int cr = tile_rows(st->sp.wk, out, in);
    const uint64_t seed = st->seed ^ 0x6a1011eull, stream = st->stream + (uint64_t)h->t * 0x9e37ull;
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        apply_rows(st, P, in, r0, r1, U, decay, Wc);
        int rc = st->sp.stochastic ? qmat_set_rows_stochastic(&st->W, r0, r1, Wc, seed, stream)
                                   : qmat_set_rows(&st->W, r0, r1, Wc);
        if (rc) return loqt_set_error("%s: %s", L->name, loqt_last_error());
    }
    return 0;
}

void galore_zero_grad(linear_layer *L) {
    galore_state *st = L->state;
    if (st->G) memset(st->G, 0, st->g.n * sizeof(float));
}

void galore_release_grads(linear_layer *L) {
    galore_state *st = L->state;
    mem_free(st->G);
    st->G = NULL;
}

void galore_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const galore_state *st = L->state;
    qmat_mem_bytes(&st->W, bytes);
    if (st->has_P) qmat_mem_bytes(&st->P, bytes);
    bytes[MEM_FACTORS] += mem_size(st->top);
    bytes[MEM_GRADS] += mem_size(st->G);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

void galore_export(const linear_layer *L, float *W) { qmat_get(&((const galore_state *)L->state)->W, W); }

/* the adaptive schedule in a checkpoint: one I64 tensor in this order, and the queue (F32) */
enum { SCHED_GAP, SCHED_LAST, SCHED_FIXED_LAST, SCHED_SVDS, SCHED_SVDS_FIXED, SCHED_DOUBLINGS, SCHED_QLEN, SCHED_N };
_Static_assert(SCHED_N <= 8, "sched_buf too small");

void galore_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const galore_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name); /* a plain LLaMA weight (F32 or BF16), or int8 codes */
    qmat_save(&st->W, model, nm);
    if (st->has_P) {
        snprintf(nm, sizeof nm, "galore.%s.P", L->name);
        qmat_save(&st->P, state, nm);
    }
    if (st->top) {
        int64_t len = st->g.small;
        snprintf(nm, sizeof nm, "galore.%s.top", L->name);
        st_writer_add(state, nm, ST_F32, 1, &len, st->top);
    }
    if (adaptive(st)) {
        /* the writer keeps the data pointers until it writes, so the buffer lives in the state */
        galore_state *w = L->state;
        const int64_t v[SCHED_N] = {st->gap, st->last, st->fixed_last, st->svds, st->svds_fixed, st->doublings, st->qlen};
        memcpy(w->sched_buf, v, sizeof v);
        int64_t ns = SCHED_N, nq = st->sp.queue_size;
        snprintf(nm, sizeof nm, "galore.%s.schedule", L->name);
        st_writer_add(state, nm, ST_I64, 1, &ns, w->sched_buf);
        snprintf(nm, sizeof nm, "galore.%s.queue", L->name);
        st_writer_add(state, nm, ST_F32, 1, &nq, w->queue);
    }
    snprintf(nm, sizeof nm, "optimizer.%s.galore", L->name);
    optim_state_save(&st->opt, state, nm);
}

static int load_schedule(linear_layer *L, galore_state *st, const st_file *state) {
    char nm[200];
    int64_t v[SCHED_N], ns = SCHED_N, nq = st->sp.queue_size;
    snprintf(nm, sizeof nm, "galore.%s.schedule", L->name);
    if (st_read_raw(state, nm, v, ST_I64, 1, &ns)) return -1;
    snprintf(nm, sizeof nm, "galore.%s.queue", L->name);
    if (st_read_f32(state, nm, st->queue, 1, &nq)) return -1;
    if (v[SCHED_GAP] < 1 || v[SCHED_GAP] > (1L << 30) || v[SCHED_QLEN] < 0 || v[SCHED_QLEN] > nq || v[SCHED_SVDS] < 0 ||
        v[SCHED_SVDS_FIXED] < 0)
        return loqt_set_error("%s: %s holds an impossible schedule (gap %lld, queue %lld of %lld)", L->name, nm,
                              (long long)v[SCHED_GAP], (long long)v[SCHED_QLEN], (long long)nq);
    st->gap = (long)v[SCHED_GAP];
    st->last = (long)v[SCHED_LAST];
    st->fixed_last = (long)v[SCHED_FIXED_LAST];
    st->svds = (long)v[SCHED_SVDS];
    st->svds_fixed = (long)v[SCHED_SVDS_FIXED];
    st->doublings = (long)v[SCHED_DOUBLINGS];
    st->qlen = (int)v[SCHED_QLEN];
    return 0;
}

int galore_load(linear_layer *L, const st_file *model, const st_file *state) {
    galore_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if (qmat_load(&st->W, model, nm)) return -1;
    if (!state) return 0;
    snprintf(nm, sizeof nm, "galore.%s.P", L->name);
    if (qmat_in_file(state, st->sp.pk, nm)) {
        if (!st->has_P) {
            if (qmat_init(&st->P, st->sp.pk, st->g.left ? st->g.r : L->out, st->g.left ? L->in : st->g.r, false,
                          MEM_FACTORS))
                return -1;
            if (st->sp.pk != QMAT_F32) st->top = mem_alloc(MEM_FACTORS, sizeof(float) * (size_t)st->g.small);
            st->has_P = 1;
        }
        if (qmat_load(&st->P, state, nm)) return -1;
        if (st->top) {
            int64_t len = st->g.small;
            snprintf(nm, sizeof nm, "galore.%s.top", L->name);
            if (st_read_f32(state, nm, st->top, 1, &len)) return -1;
        }
    }
    if (adaptive(st) && load_schedule(L, st, state)) return -1;
    snprintf(nm, sizeof nm, "optimizer.%s.galore", L->name);
    return optim_state_load(&st->opt, state, nm);
}

void galore_free(linear_layer *L) {
    galore_state *st = L->state;
    if (!st) return;
    qmat_free(&st->W);
    if (st->has_P) qmat_free(&st->P);
    mem_free(st->top);
    mem_free(st->G);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

/* planning state: G exists, P exists, optimizer state exists, this step */
enum { PS_G, PS_P, PS_OPT, PS_STEP };

/* The plan follows the fixed gap's refresh steps: an adaptive layer refreshes at those steps
 * until its gap first grows and at fewer later, and every refresh allocates the same transient
 * buffers, so the planned peak is the real one, or above it once refreshes are saved. */
void galore_engine_plan(linear_plan *p, linear_phase phase, mem_sim *s, const galore_spec *sp) {
    const galore_geom g = galore_geom_of(p->out, p->in, sp);
    const size_t f = sizeof(float);
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT:
        qmat_plan_init(s, sp->wk, g.n, false, MEM_DENSE);
        if (p->init_W0) break; /* quantized straight from the caller's W0 */
        if (tiled_init(sp)) mem_sim_temp(s, MEM_SCRATCH, f * fwd_work_floats(sp, p->out, p->in));
        else mem_sim_temp(s, MEM_SCRATCH, f * g.n); /* the random initial W */
        break;
    case LPHASE_BEGIN_STEP: sl[PS_STEP] = p->step; break;
    case LPHASE_FORWARD:
        if (sp->wk != QMAT_F32) mem_sim_workspace(s, f * fwd_work_floats(sp, p->out, p->in));
        break;
    case LPHASE_BACKWARD:
        if (sp->wk != QMAT_F32) mem_sim_workspace(s, f * fwd_work_floats(sp, p->out, p->in));
        if (!sl[PS_G]) mem_sim_alloc(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 1;
        break;
    case LPHASE_END_STEP:
        if (!sl[PS_G] || (!is_refresh(sp, p->step) && sl[PS_P])) break;
        mem_sim_alloc(s, MEM_SCRATCH, f * g.nP); /* the new P */
        if (sp->svd == GALORE_SVD_EXACT) svd_exact_plan(s, p->out, p->in, g.r);
        else svd_randomized_plan(s, p->out, p->in, g.r, NULL);
        if (sl[PS_P] && sp->moments == GALORE_STATE_PROJECT) mem_sim_temp(s, MEM_SCRATCH, f * project_floats(sp, &g));
        if (!sl[PS_P]) {
            qmat_plan_init(s, sp->pk, g.nP, false, MEM_FACTORS);
            if (sp->pk != QMAT_F32) mem_sim_alloc(s, MEM_FACTORS, f * (size_t)g.small);
        }
        sl[PS_P] = 1;
        qmat_plan_set(s, sp->pk, g.nP, false);
        mem_sim_free(s, MEM_SCRATCH, f * g.nP);
        break;
    case LPHASE_STEP:
        if (!sl[PS_G] || !sl[PS_P]) break;
        mem_sim_workspace(s, f * step_work_floats(sp, &g, p->out, p->in));
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

/* ---- views, statistics ------------------------------------------------------------------- */

int galore_grad_views(linear_layer *L, grad_view *v, int cap) {
    galore_state *st = L->state;
    if (!st->G || cap < 1) return 0;
    /* a refresh step's SVD (on every rank) needs the summed G; otherwise only the update does */
    v[0] = (grad_view){st->G, st->g.n, "dW", !refresh_due(st, st->step)};
    return 1;
}

size_t galore_params_get(const linear_layer *L, float *x) {
    const galore_state *st = L->state;
    if (x) qmat_get(&st->W, x);
    return st->g.n;
}

void galore_params_set(linear_layer *L, const float *x) { qmat_set(&((galore_state *)L->state)->W, x); }

void galore_stats(const linear_layer *L, method_stats *acc) {
    const galore_state *st = L->state;
    method_stats_add(acc, "refresh_s", STAT_SUM, st->refresh_s);
    method_stats_add(acc, "refreshes", STAT_SUM, (double)st->refreshes);
    /* how far the subspace moves: 1 = the top direction stayed */
    if (st->changes) method_stats_add(acc, "subspace_cos", STAT_MEAN, st->cos_sum / st->changes);
    if (!adaptive(st)) return;
    /* SVDs the fixed gap would have made and the adaptive one did not (over the whole run, a
     * resumed one included), the layers' mean gap now, and how often a gap grew */
    method_stats_add(acc, "svd_saved", STAT_SUM, (double)(st->svds_fixed - st->svds));
    method_stats_add(acc, "proj_gap", STAT_MEAN, (double)st->gap);
    method_stats_add(acc, "gap_increases", STAT_SUM, (double)st->doublings);
}

void galore_schedule_info(const linear_layer *L, long *gap, long *svds, long *svds_fixed) {
    const galore_state *st = L->state;
    if (gap) *gap = adaptive(st) ? st->gap : st->sp.gap;
    if (svds) *svds = st->svds;
    if (svds_fixed) *svds_fixed = adaptive(st) ? st->svds_fixed : st->svds;
}

/* ---- --method galore ------------------------------------------------------------------------ */

static int galore_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    const galore_spec sp = galore_spec_of(o);
    return galore_engine_init(L, o, ini, &sp);
}

static void galore_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    const galore_spec sp = galore_spec_of(p->o);
    galore_engine_plan(p, phase, s, &sp);
}

static long galore_next_refresh(const method_opts *o, long after) {
    const galore_spec sp = galore_spec_of(o);
    return galore_engine_next_refresh(&sp, after);
}

/* W, P and Adam's two moments of R in 16 bits */
static double galore_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    const galore_spec sp = galore_spec_of(o);
    const galore_geom g = galore_geom_of(out, in, &sp);
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
    GALORE_ENGINE_HOOKS,
    .plan = galore_plan,
    .next_refresh = galore_next_refresh,
    .paper_bytes = galore_paper_bytes,
};
