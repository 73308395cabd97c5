/* LoQT: W and P stored quantized (NF4), only B trained, P from an SVD of the gradient, periodic
 * merges W <- Q(W + s B P) on a growing schedule, with optional error compensation.
 *
 * Shapes (out x in weight, rank r <= min(out, in)):
 *   left  (in <= out): P is r x in,  B is out x r,  W_eff = W + s B P
 *   right (in >  out): P is out x r, B is r x in,   W_eff = W + s P B
 * so P spans the smaller dimension and B is (larger dim) x r.  s = lora_alpha, a plain multiplier.
 *
 * One optimizer step:
 *   ordinary step: forward/backward through deq(W) and the rank-r path; dB without the dense
 *     gradient (left dB = s dY^T (X P^T), right dB = s (dY P)^T X); Adam on B.
 *   update step (0, g, ...): the backward also accumulates the dense gradient G = dY^T X of
 *     W_eff; end_step merges W_fp = deq(W) + s BP, takes P from the top-r singular vectors of G,
 *     re-quantizes W (with k rounds of error compensation, paper Algorithm 2, else B = 0), and
 *     sets dB to the gradient of B in the new basis (left s G P^T, right s P^T G), so the update of
 *     this step already moves the new B.  B's Adam moments are reset (default) or kept.
 * B is stored in bf16 (or fp32) and written back with stochastic rounding after each update.
 * With W in 16 bits (LoQT-nq) a merge loses nothing, so error compensation is skipped there, as
 * the reference skips it. */
#include "methods/loqt.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/lstsq.h"
#include "linalg/svd.h"
#include "quant/qmat.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const method_option loqt_options[] = {
    MOPT_I(loqt_config, rank, "rank", 128, 1, 1 << 20, "rank r of the trainable factor B (at most the layer's smaller side)"),
    MOPT_F(loqt_config, lora_alpha, "lora-alpha", 0.5, 1e-6, 1e6, "scale s of the low-rank term W + s*B*P (a plain multiplier, not alpha/r)"),
    MOPT_I(loqt_config, update_proj_gap, "update-proj-gap", 50, 1, 1 << 30, "steps between the first merges/refreshes of P (step 0 is one)"),
    MOPT_C(loqt_config, proj_gap_progression, "proj-gap-progression", GAP_STATIC, "static|linear|exponential", "how the gap grows: static, linear (+increment*i), exponential (+int(increment^i))"),
    MOPT_F(loqt_config, increment_size, "increment-size", 1.2, 0, 1e3, "growth of the gap (psi of the exponential schedule)"),
    MOPT_I(loqt_config, max_proj_gap, "max-proj-gap", 0, 0, 1 << 30, "largest gap; 0 = unbounded"),
    MOPT_I(loqt_config, compensate_quant_error_iterations, "compensate-quant-error-iterations", 0, 0, 100, "rounds of quantization-error compensation at each merge (0 = B starts at 0; skipped when W is 16-bit)"),
    MOPT_C(loqt_config, quantize_w, "quantize-w", LOQT_4BIT, "4bit|none", "storage of W: NF4, or 16-bit (none: LoQT-nq)"),
    MOPT_C(loqt_config, quantize_projection, "quantize-projection-matrix", LOQT_4BIT, "4bit|none", "storage of P: NF4 or 16-bit"),
    MOPT_B(loqt_config, use_double_quant, "use-double-quant", 0, "NF4 absmax values stored in 8 bits"),
    MOPT_C(loqt_config, merge_optimizer_state, "merge-optimizer-state", MERGE_RESET, "reset|keep", "B's Adam moments at a merge: reset (restarts bias correction) or keep (as the reference code, whose B update on a merge step is pure stale momentum)"),
    MOPT_C(loqt_config, lowrank_dtype, "lowrank-dtype", FACTOR_BF16, "bf16|fp32", "storage of B (bf16 is updated with stochastic rounding)"),
    MOPT_C(loqt_config, svd, "svd", SVD_RANDOMIZED, "randomized|exact", "SVD of the gradient: randomized range finder, or exact one-sided Jacobi (slow; small layers, tests)"),
};
_Static_assert(sizeof(loqt_config) <= METHOD_CONFIG_BYTES, "loqt_config too large");

typedef struct {
    loqt_config c;
    uint64_t seed;
    int r, left;     /* rank; 1 if in <= out */
    float s;         /* lora_alpha */
    qmat W;          /* out x in: NF4 or bf16 */
    qmat P;          /* left r x in, right out x r */
    qmat B;          /* left out x r, right r x in: bf16 or fp32 */
    int have_P;      /* P set by a first refresh */
    float *dB;       /* gradient of B (fp32, MEM_GRADS), allocated by the first backward after P */
    float *G;        /* dense gradient during update steps (MEM_GRADS), else NULL */
    int want_G;      /* this step is an update step: the first backward allocates G */
    optim_state opt; /* of B */
    long step;       /* current optimizer step (for stochastic rounding keys) */
    uint64_t stream; /* rng stream of this layer */
    double refresh_s; /* seconds spent in this layer's refreshes */
    double cos_sum;   /* sum over refreshes of |cos| between the old and new top vector of P */
    long refreshes, changes;
} loqt_state;

/* ---- shapes and sizes, shared by the code and its planning twin -------------------------- */

typedef struct {
    int r, left;
    size_t n, nP, nB; /* elements of W, P (r x smaller side), B (larger side x r) */
    qmat_kind wk, pk, bk;
    int dq, k;        /* double quantization; compensation rounds that actually run */
} loqt_geom;

static loqt_geom geom_of(int out, int in, const loqt_config *c) {
    loqt_geom g;
    g.left = in <= out;
    const int small = g.left ? in : out, large = g.left ? out : in;
    g.r = c->rank < small ? c->rank : small;
    g.n = (size_t)out * in;
    g.nP = (size_t)g.r * small;
    g.nB = (size_t)g.r * large;
    g.wk = c->quantize_w == LOQT_4BIT ? QMAT_NF4 : QMAT_BF16;
    g.pk = c->quantize_projection == LOQT_4BIT ? QMAT_NF4 : QMAT_BF16;
    g.bk = c->lowrank_dtype == FACTOR_FP32 ? QMAT_F32 : QMAT_BF16;
    g.dq = c->use_double_quant;
    g.k = g.wk == QMAT_NF4 ? c->compensate_quant_error_iterations : 0;
    return g;
}

/* Rows of W dequantized at once: bounds the work buffer to ~16 MiB whatever the layer size. */
static int w_chunk_rows(int out, int in) {
    int rows = (1 << 22) / (in > 0 ? in : 1);
    if (rows < 1) rows = 1;
    return rows < out ? rows : out;
}

/* Floats of the work buffer of one forward/backward call: a chunk of dequantized W rows, fp32 P
 * and B, and the [N, r] intermediate of the rank-r path. */
static size_t work_floats(int out, int in, const loqt_geom *g, int N) {
    return (size_t)w_chunk_rows(out, in) * in + g->nP + g->nB + (size_t)N * g->r;
}

static svd_opts svd_settings(const loqt_state *st) {
    svd_opts so = svd_default_opts();
    so.seed = st->seed;
    so.stream = st->stream ^ (uint64_t)st->step;
    return so;
}

long loqt_update_step(const loqt_config *c, long k) {
    if (k <= 0) return 0;
    long step = c->update_proj_gap;
    for (long i = 1; i < k; i++) {
        double extra = 0;
        if (c->proj_gap_progression == GAP_EXPONENTIAL) extra = floor(pow(c->increment_size, (double)i));
        else if (c->proj_gap_progression == GAP_LINEAR) extra = floor(c->increment_size * (double)i);
        /* a gap beyond any run's length ends the schedule (and keeps the sum from overflowing) */
        if (extra > 1e15) return LONG_MAX;
        long gap = c->update_proj_gap + (long)extra;
        if (c->max_proj_gap > 0 && gap > c->max_proj_gap) gap = c->max_proj_gap;
        if (step > LONG_MAX - gap) return LONG_MAX;
        step += gap;
    }
    return step;
}

int loqt_is_update_step(const loqt_config *c, long step) {
    for (long k = 0;; k++) {
        long s = loqt_update_step(c, k);
        if (s == step) return 1;
        if (s > step) return 0;
    }
}

static long loqt_next_refresh(const method_opts *o, long after) {
    loqt_config c;
    method_config_get(o, &c, sizeof c);
    for (long k = 0;; k++) {
        long s = loqt_update_step(&c, k);
        if (s == LONG_MAX) return -1;
        if (s > after) return s;
    }
}

/* ---- the layer --------------------------------------------------------------------------- */

static int loqt_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    loqt_state *st = calloc(1, sizeof *st);
    method_config_get(o, &st->c, sizeof st->c);
    const loqt_geom g = geom_of(L->out, L->in, &st->c);
    st->seed = o->seed;
    st->left = g.left;
    st->r = g.r;
    st->s = (float)st->c.lora_alpha;
    st->stream = rng_stream_id(L->name);
    L->state = st;
    if (qmat_init(&st->W, g.wk, L->out, L->in, g.dq, MEM_DENSE)) return -1;
    int pr = st->left ? st->r : L->out, pc = st->left ? L->in : st->r;
    int br = st->left ? L->out : st->r, bc = st->left ? st->r : L->in;
    if (qmat_init(&st->P, g.pk, pr, pc, g.dq, MEM_FACTORS) ||
        qmat_init(&st->B, g.bk, br, bc, false, MEM_FACTORS))
        return -1;
    optim_state_init(&st->opt, g.nB, o->optimizer);
    /* W starts as the initial weight quantized; B = 0 until the step-0 refresh */
    const float *W0 = ini ? ini->W0 : NULL;
    float *W = W0 ? (float *)W0 : linear_random_init(L, o->seed, MEM_SCRATCH);
    int rc = qmat_set(&st->W, W);
    if (!W0) mem_free(W);
    return rc;
}

static size_t factor_floats(const loqt_state *st) {
    return (size_t)st->P.rows * st->P.cols + (size_t)st->B.rows * st->B.cols;
}

typedef struct {
    float *Wc, *Pf, *Bf, *T;
} work;

static work layer_work(const loqt_state *st, int out, int in, int N) {
    const loqt_geom g = geom_of(out, in, &st->c);
    work w;
    w.Wc = mem_workspace(sizeof(float) * work_floats(out, in, &g, N));
    w.Pf = w.Wc + (size_t)w_chunk_rows(out, in) * in;
    w.Bf = w.Pf + (size_t)st->P.rows * st->P.cols;
    w.T = w.Bf + (size_t)st->B.rows * st->B.cols;
    return w;
}

/* Forward and input gradient either run the rank-r path beside deq(W) (two thin GEMMs of
 * N r (in + out) multiply-adds) or fold it into each chunk of dequantized rows first, W_eff =
 * deq(W) + s B P (r in out multiply-adds per call, then one GEMM by W_eff), whichever costs less
 * for this call's N tokens: in out < N (in + out).  60m at 8 x 256 tokens folds (a quarter to an
 * eighth of the thin GEMMs' work); 7b at 1 x 256 does not.  Only in fp32: in bf16 the rounding of
 * W_eff to 8 significant bits would swamp s B P, orders of magnitude smaller than W, so bf16
 * keeps the papers' separate products. */
static int fold_lowrank(const loqt_state *st, int out, int in, int N) {
    return st->have_P && gemm_get_compute().dtype == GEMM_FP32 && (double)out * in < (double)N * (out + in);
}

/* Rows r0..r1 of deq(W) into Wc, plus s (B P)[r0..r1) when fold (Pf, Bf fetched). */
static void weight_rows(const loqt_state *st, int r0, int r1, int in, int fold, const work *w) {
    qmat_get_rows(&st->W, r0, r1, w->Wc);
    if (!fold) return;
    const int r = st->r;
    if (st->left) /* B out x r, P r x in */
        gemm(false, false, r1 - r0, in, r, st->s, w->Bf + (size_t)r0 * r, r, w->Pf, in, 1.0f, w->Wc, in);
    else /* P out x r, B r x in */
        gemm(false, false, r1 - r0, in, r, st->s, w->Pf + (size_t)r0 * r, r, w->Bf, in, 1.0f, w->Wc, in);
}

static void get_factors(const loqt_state *st, const work *w) {
    qmat_get(&st->P, w->Pf);
    qmat_get(&st->B, w->Bf);
}

static void loqt_forward(linear_layer *L, const float *X, float *Y, int N) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in, r = st->r, cr = w_chunk_rows(out, in);
    const int fold = fold_lowrank(st, out, in, N);
    work w = layer_work(st, out, in, N);
    if (fold) get_factors(st, &w);
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        weight_rows(st, r0, r1, in, fold, &w);
        gemm(false, true, N, r1 - r0, in, 1.0f, X, in, w.Wc, in, 0.0f, Y + r0, out);
    }
    if (!st->have_P || fold) return; /* B = 0 before the first refresh */
    get_factors(st, &w);
    if (st->left) { /* Y += s (X P^T) B^T */
        gemm(false, true, N, r, in, 1.0f, X, in, w.Pf, in, 0.0f, w.T, r);
        gemm(false, true, N, out, r, st->s, w.T, r, w.Bf, r, 1.0f, Y, out);
    } else { /* Y += s (X B^T) P^T */
        gemm(false, true, N, r, in, 1.0f, X, in, w.Bf, in, 0.0f, w.T, r);
        gemm(false, true, N, out, r, st->s, w.T, r, w.Pf, r, 1.0f, Y, out);
    }
}

static void loqt_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                          int accumulate) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in, r = st->r, cr = w_chunk_rows(out, in);
    const int fold = dX && fold_lowrank(st, out, in, N);
    work w = layer_work(st, out, in, N);
    if (st->have_P) get_factors(st, &w);
    if (dX) { /* dX = dY deq(W) (+ the low-rank part, folded or below) */
        for (int r0 = 0; r0 < out; r0 += cr) {
            int r1 = r0 + cr < out ? r0 + cr : out;
            weight_rows(st, r0, r1, in, fold, &w);
            gemm(false, false, N, in, r1 - r0, 1.0f, dY + r0, out, w.Wc, in,
                 accumulate || r0 > 0 ? 1.0f : 0.0f, dX, in);
        }
    }
    if (st->want_G && !st->G) /* allocated at the layer's first backward, so that with
                                 per-layer updates only one layer's G exists at a time */
        st->G = mem_alloc(MEM_GRADS, st->W.rows * (size_t)st->W.cols * sizeof(float));
    if (st->G) /* update step: the dense gradient of W_eff, for the SVD */
        gemm(true, false, out, in, N, 1.0f, dY, out, X, in, 1.0f, st->G, in);
    if (!st->have_P) return; /* before the first refresh P is undefined and B's gradient unused */
    if (!st->dB) st->dB = mem_alloc(MEM_GRADS, (size_t)st->B.rows * st->B.cols * sizeof(float));
    const int lowrank_dX = dX && !fold;
    if (st->left) {
        /* dB += s dY^T (X P^T);  dX += s (dY B) P */
        gemm(false, true, N, r, in, 1.0f, X, in, w.Pf, in, 0.0f, w.T, r);
        gemm(true, false, out, r, N, st->s, dY, out, w.T, r, 1.0f, st->dB, r);
        if (lowrank_dX) {
            gemm(false, false, N, r, out, 1.0f, dY, out, w.Bf, r, 0.0f, w.T, r);
            gemm(false, false, N, in, r, st->s, w.T, r, w.Pf, in, 1.0f, dX, in);
        }
    } else {
        /* U = dY P;  dB += s U^T X;  dX += s U B */
        gemm(false, false, N, r, out, 1.0f, dY, out, w.Pf, r, 0.0f, w.T, r);
        gemm(true, false, r, in, N, st->s, w.T, r, X, in, 1.0f, st->dB, in);
        if (lowrank_dX) gemm(false, false, N, in, r, st->s, w.T, r, w.Bf, in, 1.0f, dX, in);
    }
}

static void loqt_begin_step(linear_layer *L, long step) {
    loqt_state *st = L->state;
    st->step = step;
    /* the first refresh also comes at the first step after a skipped step 0 */
    st->want_G = loqt_is_update_step(&st->c, step) || !st->have_P;
}

/* ||A - B||_F^2 in double */
static double sqdist(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return s;
}

/* Wlr = s * B P (left) or s * P B (right), out x in */
static void lowrank_product(const loqt_state *st, const float *Pf, const float *Bf, float *Wlr,
                            int out, int in) {
    if (st->left) gemm(false, false, out, in, st->r, st->s, Bf, st->r, Pf, in, 0.0f, Wlr, in);
    else gemm(false, false, out, in, st->r, st->s, Pf, st->r, Bf, in, 0.0f, Wlr, in);
}

/* ---- the refresh, as named steps --------------------------------------------------------- */

/* the refresh's work buffers (MEM_SCRATCH), in allocation order */
typedef struct {
    float *Wfp, *Wt, *Pf, *Bf;
} refresh_bufs;

/* 1. merge: W_fp = deq(W) + s BP */
static void merge_weight(loqt_state *st, int out, int in, refresh_bufs *b) {
    const size_t n = (size_t)out * in;
    qmat_get(&st->W, b->Wfp);
    if (!st->have_P) return;
    qmat_get(&st->P, b->Pf);
    qmat_get(&st->B, b->Bf);
    lowrank_product(st, b->Pf, b->Bf, b->Wt, out, in);
    for (size_t i = 0; i < n; i++) b->Wfp[i] += b->Wt[i];
}

/* 2. P from the top-r singular vectors of G (stored quantized; b->Pf receives the stored P) */
static int choose_projection(loqt_state *st, const linear_layer *L, refresh_bufs *b) {
    const int out = L->out, in = L->in, r = st->r;
    const size_t n = (size_t)out * in;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(st->G[i]))
            return loqt_set_error("%s: the gradient has a non-finite value at step %ld (training "
                                  "diverged; try a lower --lr)", L->name, st->step);
    const svd_opts so = svd_settings(st);
    /* the old top vector (row 0 of P, or column 0), to report how far the subspace moved */
    const int len = st->left ? in : out, stride = st->left ? 1 : r;
    float *top = st->have_P ? malloc(sizeof(float) * (size_t)len) : NULL;
    for (int i = 0; top && i < len; i++) top[i] = b->Pf[(size_t)i * stride];
    float *U = st->left ? NULL : b->Pf, *Vt = st->left ? b->Pf : NULL;
    int rc = st->c.svd == SVD_EXACT ? svd_exact(st->G, out, in, r, U, NULL, Vt)
                                    : svd_randomized(st->G, out, in, r, &so, U, NULL, Vt);
    if (rc) {
        free(top);
        return loqt_set_error("%s: SVD of the gradient failed: %s", L->name, loqt_last_error());
    }
    if (top) {
        double d = 0;
        for (int i = 0; i < len; i++) d += (double)top[i] * b->Pf[(size_t)i * stride];
        st->cos_sum += fabs(d);
        st->changes++;
        free(top);
    }
    if (qmat_set(&st->P, b->Pf)) return loqt_set_error("%s: cannot quantize P: %s", L->name, loqt_last_error());
    qmat_get(&st->P, b->Pf); /* from now on the quantized P is what the layer uses */
    st->have_P = 1;
    return 0;
}

/* 3. re-quantize W with k rounds of error compensation (Algorithm 2): W_hat = W_fp; repeat:
 *    Q = quant(W_hat), R = W_fp - deq Q, B = argmin ||s B P - R||, W_hat = W_fp - s B P;
 *    keep the (Q, B) pair with the smallest ||W_fp - deq Q - s B P||.  k = 0: Q(W_fp), B = 0.
 *    b->Bf receives the chosen B. */
static int compensate_requantize(loqt_state *st, const linear_layer *L, int k, refresh_bufs *b) {
    const int out = L->out, in = L->in, r = st->r;
    const size_t n = (size_t)out * in, nB = (size_t)st->B.rows * st->B.cols;
    memset(b->Bf, 0, nB * sizeof(float));
    if (k == 0) {
        if (qmat_set(&st->W, b->Wfp)) return loqt_set_error("%s: cannot quantize W: %s", L->name, loqt_last_error());
        return 0;
    }
    float *What = b->Wt, *R = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    float *LR = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    float *best_What = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    float *best_B = mem_alloc(MEM_SCRATCH, nB * sizeof(float));
    memcpy(What, b->Wfp, n * sizeof(float));
    memcpy(best_What, b->Wfp, n * sizeof(float));
    double best = INFINITY;
    int rc = 0;
    for (int it = 0; it < k && !rc; it++) {
        if (qmat_set(&st->W, What)) {
            rc = loqt_set_error("%s: cannot quantize W: %s", L->name, loqt_last_error());
            break;
        }
        qmat_get(&st->W, R);
        for (size_t i = 0; i < n; i++) R[i] = b->Wfp[i] - R[i];
        double ridge = 0;
        rc = st->left ? lstsq_xp(R, out, in, b->Pf, r, b->Bf, &ridge)
                      : lstsq_px(b->Pf, out, r, R, in, b->Bf, &ridge);
        if (rc) {
            rc = loqt_set_error("%s: error compensation: %s", L->name, loqt_last_error());
            break;
        }
        for (size_t i = 0; i < nB; i++) b->Bf[i] /= st->s;
        qmat_set(&st->B, b->Bf); /* the stored (rounded) B is what the layer will use */
        qmat_get(&st->B, b->Bf);
        lowrank_product(st, b->Pf, b->Bf, LR, out, in);
        double err = sqdist(R, LR, n);
        if (it == 0) {
            /* the k = 0 answer (B = 0) is a candidate too */
            double err0 = 0;
            for (size_t i = 0; i < n; i++) err0 += (double)R[i] * R[i];
            best = err0;
            memset(best_B, 0, nB * sizeof(float));
        }
        if (err < best) {
            best = err;
            memcpy(best_What, What, n * sizeof(float));
            memcpy(best_B, b->Bf, nB * sizeof(float));
        }
        for (size_t i = 0; i < n; i++) What[i] = b->Wfp[i] - LR[i];
    }
    if (!rc && qmat_set(&st->W, best_What)) rc = loqt_set_error("%s: cannot quantize W: %s", L->name, loqt_last_error());
    memcpy(b->Bf, best_B, nB * sizeof(float));
    mem_free(R);
    mem_free(LR);
    mem_free(best_What);
    mem_free(best_B);
    return rc;
}

/* 4. the gradient of B in the new basis, from the dense gradient of this step */
static void gradient_in_new_basis(loqt_state *st, int out, int in, const float *Pf) {
    const int r = st->r;
    if (!st->dB) st->dB = mem_alloc(MEM_GRADS, (size_t)st->B.rows * st->B.cols * sizeof(float));
    if (st->left) gemm(false, true, out, r, in, st->s, st->G, in, Pf, in, 0.0f, st->dB, r);
    else gemm(true, false, r, in, out, st->s, Pf, r, st->G, in, 0.0f, st->dB, in);
}

static int loqt_refresh(linear_layer *L) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in;
    const loqt_geom g = geom_of(out, in, &st->c);
    const double t_start = loqt_now();
    refresh_bufs b = {
        mem_alloc(MEM_SCRATCH, g.n * sizeof(float)), mem_alloc(MEM_SCRATCH, g.n * sizeof(float)),
        mem_alloc(MEM_SCRATCH, g.nP * sizeof(float)), mem_alloc(MEM_SCRATCH, g.nB * sizeof(float)),
    };
    merge_weight(st, out, in, &b);
    int rc = choose_projection(st, L, &b);
    if (!rc) rc = compensate_requantize(st, L, g.k, &b);
    if (!rc) {
        qmat_set(&st->B, b.Bf);
        gradient_in_new_basis(st, out, in, b.Pf);
        if (st->c.merge_optimizer_state == MERGE_RESET) optim_state_restart(&st->opt, st->step);
    }
    mem_free(b.Wfp);
    mem_free(b.Wt);
    mem_free(b.Pf);
    mem_free(b.Bf);
    /* big layers take seconds each: say what is happening, so a long refresh step is not silent */
    const double dt = loqt_now() - t_start;
    st->refresh_s += dt;
    st->refreshes++;
    if (dt >= 1.0 && !rc)
        loqt_progress("step %ld: refreshed %s (%d x %d, rank %d) in %.1f s", st->step, L->name, out, in, st->r, dt);
    return rc;
}

static int loqt_end_step(linear_layer *L, long step) {
    loqt_state *st = L->state;
    (void)step;
    st->want_G = 0;
    if (!st->G) return 0;
    int rc = loqt_refresh(L);
    mem_free(st->G);
    st->G = NULL;
    return rc;
}

static double loqt_grad_sqnorm(const linear_layer *L) {
    const loqt_state *st = L->state;
    if (!st->have_P || !st->dB) return 0.0;
    return optim_sqnorm(st->dB, (size_t)st->B.rows * st->B.cols);
}

static int loqt_step(linear_layer *L, const optim_hparams *h) {
    loqt_state *st = L->state;
    if (!st->have_P || !st->dB) return 0;
    size_t nB = (size_t)st->B.rows * st->B.cols;
    if (st->B.kind == QMAT_F32) {
        optim_update(&st->opt, st->B.f32, st->dB, h);
        return 0;
    }
    float *Bf = mem_workspace(nB * sizeof(float));
    qmat_get(&st->B, Bf);
    optim_update(&st->opt, Bf, st->dB, h);
    /* bf16 storage: stochastic rounding keeps small updates from vanishing on average */
    qmat_set_stochastic(&st->B, Bf, st->seed ^ 0xb5b5b5b5ull, st->stream + (uint64_t)h->t * 0x9e37ull);
    return 0;
}

static void loqt_zero_grad(linear_layer *L) {
    loqt_state *st = L->state;
    if (st->dB) memset(st->dB, 0, (size_t)st->B.rows * st->B.cols * sizeof(float));
}

static void loqt_skip_step(linear_layer *L) {
    loqt_state *st = L->state;
    st->want_G = 0;
    mem_free(st->G);
    st->G = NULL;
    loqt_zero_grad(L);
}

static void loqt_release_grads(linear_layer *L) {
    loqt_state *st = L->state;
    mem_free(st->dB);
    st->dB = NULL;
}

static void loqt_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const loqt_state *st = L->state;
    qmat_mem_bytes(&st->W, bytes);
    qmat_mem_bytes(&st->P, bytes);
    qmat_mem_bytes(&st->B, bytes);
    bytes[MEM_GRADS] += mem_size(st->dB) + (st->G ? mem_size(st->G) : 0);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

static void loqt_export(const linear_layer *L, float *W) {
    const loqt_state *st = L->state;
    const size_t n = (size_t)L->out * L->in;
    qmat_get(&st->W, W);
    if (!st->have_P) return;
    float *Pf = mem_alloc(MEM_SCRATCH, factor_floats(st) * sizeof(float));
    float *Bf = Pf + (size_t)st->P.rows * st->P.cols;
    float *Wlr = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    qmat_get(&st->P, Pf);
    qmat_get(&st->B, Bf);
    lowrank_product(st, Pf, Bf, Wlr, L->out, L->in);
    for (size_t i = 0; i < n; i++) W[i] += Wlr[i];
    mem_free(Wlr);
    mem_free(Pf);
}

static void loqt_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const loqt_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.loqt_W", L->name);
    qmat_save(&st->W, model, nm);
    if (st->have_P) {
        snprintf(nm, sizeof nm, "%s.loqt_P", L->name);
        qmat_save(&st->P, model, nm);
        snprintf(nm, sizeof nm, "%s.loqt_B", L->name);
        qmat_save(&st->B, model, nm);
    }
    snprintf(nm, sizeof nm, "optimizer.%s.loqt_B", L->name);
    optim_state_save(&st->opt, state, nm);
}

static int loqt_load(linear_layer *L, const st_file *model, const st_file *state) {
    loqt_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.loqt_W", L->name);
    if (qmat_load(&st->W, model, nm)) return -1;
    snprintf(nm, sizeof nm, "%s.loqt_B", L->name);
    st->have_P = st_find(model, nm) != NULL; /* absent before the first refresh */
    if (st->have_P) {
        snprintf(nm, sizeof nm, "%s.loqt_P", L->name);
        if (qmat_load(&st->P, model, nm)) return -1;
        snprintf(nm, sizeof nm, "%s.loqt_B", L->name);
        if (qmat_load(&st->B, model, nm)) return -1;
    }
    if (!state) return 0;
    snprintf(nm, sizeof nm, "optimizer.%s.loqt_B", L->name);
    return optim_state_load(&st->opt, state, nm);
}

static void loqt_free(linear_layer *L) {
    loqt_state *st = L->state;
    if (!st) return;
    qmat_free(&st->W);
    qmat_free(&st->P);
    qmat_free(&st->B);
    mem_free(st->dB);
    mem_free(st->G);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

/* planning state: P exists, dB exists, G exists, this step wants G, optimizer state exists */
enum { PS_HAVE_P, PS_DB, PS_G, PS_WANT_G, PS_OPT };

/* loqt_refresh; `alloc_dB`: dB does not exist yet (gradient_in_new_basis creates it) */
static void plan_refresh(const linear_plan *p, const loqt_geom *g, const loqt_config *c,
                         int alloc_dB, mem_sim *s) {
    const size_t f = sizeof(float), n = g->n;
    const size_t bufs[4] = {f * n, f * n, f * g->nP, f * g->nB}; /* Wfp, Wt, Pf, Bf */
    for (int i = 0; i < 4; i++) mem_sim_alloc(s, MEM_SCRATCH, bufs[i]);
    if (c->svd == SVD_EXACT) svd_exact_plan(s, p->out, p->in, g->r);
    else svd_randomized_plan(s, p->out, p->in, g->r, NULL);
    qmat_plan_set(s, g->pk, g->nP, g->dq);
    if (g->k > 0) {
        const size_t comp[4] = {f * n, f * n, f * n, f * g->nB}; /* R, LR, best W_hat, best B */
        for (int i = 0; i < 4; i++) mem_sim_alloc(s, MEM_SCRATCH, comp[i]);
        for (int it = 0; it < g->k; it++) {
            qmat_plan_set(s, g->wk, n, g->dq);
            if (g->left) lstsq_xp_plan(s, p->out, p->in, g->r);
            else lstsq_px_plan(s, p->out, g->r, p->in);
        }
        qmat_plan_set(s, g->wk, n, g->dq);
        for (int i = 0; i < 4; i++) mem_sim_free(s, MEM_SCRATCH, comp[i]);
    } else {
        qmat_plan_set(s, g->wk, n, g->dq);
    }
    if (alloc_dB) mem_sim_alloc(s, MEM_GRADS, f * g->nB);
    for (int i = 0; i < 4; i++) mem_sim_free(s, MEM_SCRATCH, bufs[i]);
}

static void loqt_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    loqt_config c;
    method_config_get(p->o, &c, sizeof c);
    const loqt_geom g = geom_of(p->out, p->in, &c);
    const size_t f = sizeof(float);
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT:
        qmat_plan_init(s, g.wk, g.n, g.dq, MEM_DENSE);
        qmat_plan_init(s, g.pk, g.nP, g.dq, MEM_FACTORS);
        qmat_plan_init(s, g.bk, g.nB, false, MEM_FACTORS);
        if (!p->init_W0) mem_sim_alloc(s, MEM_SCRATCH, f * g.n); /* the random initial W, quantized, freed */
        qmat_plan_set(s, g.wk, g.n, g.dq);
        if (!p->init_W0) mem_sim_free(s, MEM_SCRATCH, f * g.n);
        break;
    case LPHASE_BEGIN_STEP: sl[PS_WANT_G] = loqt_is_update_step(&c, p->step) || !sl[PS_HAVE_P]; break;
    case LPHASE_FORWARD: mem_sim_workspace(s, f * work_floats(p->out, p->in, &g, p->N)); break;
    case LPHASE_BACKWARD:
        mem_sim_workspace(s, f * work_floats(p->out, p->in, &g, p->N));
        if (sl[PS_WANT_G] && !sl[PS_G]) mem_sim_alloc(s, MEM_GRADS, f * g.n);
        if (sl[PS_WANT_G]) sl[PS_G] = 1;
        if (sl[PS_HAVE_P] && !sl[PS_DB]) mem_sim_alloc(s, MEM_GRADS, f * g.nB);
        if (sl[PS_HAVE_P]) sl[PS_DB] = 1;
        break;
    case LPHASE_END_STEP:
        sl[PS_WANT_G] = 0;
        if (!sl[PS_G]) break;
        plan_refresh(p, &g, &c, !sl[PS_DB], s);
        sl[PS_DB] = sl[PS_HAVE_P] = 1;
        mem_sim_free(s, MEM_GRADS, f * g.n);
        sl[PS_G] = 0;
        break;
    case LPHASE_STEP:
        if (!sl[PS_HAVE_P] || !sl[PS_DB]) break;
        if (g.bk != QMAT_F32) mem_sim_workspace(s, f * g.nB);
        optim_plan_update(s, p->o->optimizer, g.nB, (int)sl[PS_OPT]);
        sl[PS_OPT] = 1;
        break;
    case LPHASE_RELEASE_GRADS:
        if (sl[PS_DB]) mem_sim_free(s, MEM_GRADS, f * g.nB);
        sl[PS_DB] = 0;
        break;
    case LPHASE_EXPORT:
        if (!sl[PS_HAVE_P]) break;
        mem_sim_alloc(s, MEM_SCRATCH, f * (g.nP + g.nB));
        mem_sim_temp(s, MEM_SCRATCH, f * g.n);
        mem_sim_free(s, MEM_SCRATCH, f * (g.nP + g.nB));
        break;
    }
}

/* ---- views, statistics, the papers' estimate ---------------------------------------------- */

static int loqt_grad_views(linear_layer *L, grad_view *v, int cap) {
    loqt_state *st = L->state;
    if (cap < 1) return 0;
    /* on a refresh step the SVD needs the averaged dense gradient; dB is then recomputed from it */
    if (st->G) {
        v[0] = (grad_view){st->G, (size_t)L->out * L->in, "G", 0}; /* every rank refreshes */
        return 1;
    }
    if (!st->dB) return 0;
    v[0] = (grad_view){st->dB, (size_t)st->B.rows * st->B.cols, "dB", 1};
    return 1;
}

static size_t loqt_params_get(const linear_layer *L, float *x) {
    const loqt_state *st = L->state;
    if (x) qmat_get(&st->B, x);
    return (size_t)st->B.rows * st->B.cols;
}

static void loqt_params_set(linear_layer *L, const float *x) { qmat_set(&((loqt_state *)L->state)->B, x); }

static void loqt_stats(const linear_layer *L, method_stats *acc) {
    const loqt_state *st = L->state;
    method_stats_add(acc, "refresh_s", STAT_SUM, st->refresh_s);
    method_stats_add(acc, "refreshes", STAT_SUM, (double)st->refreshes);
    if (st->changes) method_stats_add(acc, "subspace_cos", STAT_MEAN, st->cos_sum / st->changes);
}

/* W in 4 bits, P and B in 16 bits, Adam's two moments of B in 16 bits */
static double loqt_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    loqt_config c;
    method_config_get(o, &c, sizeof c);
    const loqt_geom g = geom_of(out, in, &c);
    return 0.5 * (double)g.n + 2.0 * (double)g.nP + 2.0 * (double)g.nB + 4.0 * (double)g.nB;
}

const linear_method method_loqt = {
    .name = "loqt",
    .summary = "LoQT: W and P quantized (NF4), only B trained; P from the gradient's SVD, merges W <- Q(W + s*B*P) on a growing schedule",
    .options = loqt_options,
    .n_options = sizeof loqt_options / sizeof loqt_options[0],
    .config_size = sizeof(loqt_config),
    .heap_churn = 1,
    .init = loqt_init,
    .forward = loqt_forward,
    .backward = loqt_backward,
    .begin_step = loqt_begin_step,
    .end_step = loqt_end_step,
    .grad_sqnorm = loqt_grad_sqnorm,
    .step = loqt_step,
    .zero_grad = loqt_zero_grad,
    .skip_step = loqt_skip_step,
    .release_grads = loqt_release_grads,
    .mem_bytes = loqt_mem_bytes,
    .export_dense = loqt_export,
    .save = loqt_save,
    .load = loqt_load,
    .free = loqt_free,
    .plan = loqt_plan,
    .next_refresh = loqt_next_refresh,
    .grad_views = loqt_grad_views,
    .params_get = loqt_params_get,
    .params_set = loqt_params_set,
    .stats = loqt_stats,
    .paper_bytes = loqt_paper_bytes,
};

int loqt_layer_info(const linear_layer *L, int *rank, int *left, int *have_P) {
    const loqt_state *st = L->state;
    *rank = st->r;
    *left = st->left;
    *have_P = st->have_P;
    return 0;
}

const float *loqt_grad_B(const linear_layer *L) { return ((const loqt_state *)L->state)->dB; }

void loqt_get_factors(const linear_layer *L, float *W, float *P, float *B) {
    const loqt_state *st = L->state;
    if (W) qmat_get(&st->W, W);
    if (P) qmat_get(&st->P, P);
    if (B) qmat_get(&st->B, B);
}

void loqt_set_B(linear_layer *L, const float *B) { qmat_set(&((loqt_state *)L->state)->B, B); }
