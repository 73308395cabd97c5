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
 * B is stored in bf16 (or fp32) and written back with stochastic rounding after each update. */
#include "methods/loqt.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/lstsq.h"
#include "linalg/svd.h"
#include "quant/qmat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    method_opts o;
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
} loqt_state;

/* Seconds spent in refreshes, for benchmarks (refreshes run one layer at a time). */
static double refresh_seconds;

/* Work buffers shared by all layers (layers run one at a time). */
static float *scratch;
static size_t scratch_floats;

static float *get_scratch(size_t n) {
    if (n > scratch_floats) {
        mem_free(scratch);
        scratch = mem_alloc(MEM_SCRATCH, n * sizeof(float));
        scratch_floats = n;
    }
    return scratch;
}

/* Rows of W dequantized at once: bounds the scratch to ~16 MiB whatever the layer size. */
static int w_chunk_rows(int in) {
    int rows = (1 << 22) / (in > 0 ? in : 1);
    return rows < 1 ? 1 : rows;
}

long loqt_update_step(const method_opts *o, long k) {
    if (k <= 0) return 0;
    long step = o->update_proj_gap;
    for (long i = 1; i < k; i++) {
        double extra = 0;
        if (o->proj_gap_progression == GAP_EXPONENTIAL) extra = floor(pow(o->increment_size, (double)i));
        else if (o->proj_gap_progression == GAP_LINEAR) extra = floor(o->increment_size * (double)i);
        long gap = o->update_proj_gap + (long)extra;
        if (o->max_proj_gap > 0 && gap > o->max_proj_gap) gap = o->max_proj_gap;
        step += gap;
    }
    return step;
}

int loqt_is_update_step(const method_opts *o, long step) {
    for (long k = 0;; k++) {
        long s = loqt_update_step(o, k);
        if (s == step) return 1;
        if (s > step) return 0;
    }
}

static int loqt_init(linear_layer *L, const method_opts *o, const float *W0) {
    if (o->rank <= 0) return loqt_set_error("--rank must be positive");
    if (o->update_proj_gap <= 0) return loqt_set_error("--update-proj-gap must be positive");
    loqt_state *st = calloc(1, sizeof *st);
    st->o = *o;
    st->left = L->in <= L->out;
    int small = st->left ? L->in : L->out;
    st->r = o->rank < small ? o->rank : small;
    st->s = (float)o->lora_alpha;
    st->stream = rng_stream_id(L->name);
    L->state = st;
    if (qmat_init(&st->W, o->quantize_w ? QMAT_NF4 : QMAT_BF16, L->out, L->in, o->use_double_quant,
                  MEM_DENSE))
        return -1;
    int pr = st->left ? st->r : L->out, pc = st->left ? L->in : st->r;
    int br = st->left ? L->out : st->r, bc = st->left ? st->r : L->in;
    if (qmat_init(&st->P, o->quantize_projection ? QMAT_NF4 : QMAT_BF16, pr, pc,
                  o->use_double_quant, MEM_FACTORS) ||
        qmat_init(&st->B, o->lowrank_fp32 ? QMAT_F32 : QMAT_BF16, br, bc, false, MEM_FACTORS))
        return -1;
    optim_state_init(&st->opt, (size_t)br * bc, o->optimizer);
    /* W starts as the random initialization quantized; B = 0 until the step-0 refresh */
    float *W = W0 ? (float *)W0 : linear_random_init(L, o->seed, MEM_SCRATCH);
    int rc = qmat_set(&st->W, W);
    if (!W0) mem_free(W);
    return rc;
}

/* Dequantized P and B into fp32 buffers taken from the scratch after `offset` floats. */
static void factors_f32(const loqt_state *st, float *Pf, float *Bf) {
    qmat_get(&st->P, Pf);
    qmat_get(&st->B, Bf);
}

static size_t factor_floats(const loqt_state *st) {
    return (size_t)st->P.rows * st->P.cols + (size_t)st->B.rows * st->B.cols;
}

/* Scratch of one forward/backward call: a chunk of dequantized W rows, fp32 P and B, and the
 * [N, r] intermediate of the rank-r path. */
typedef struct {
    float *Wc, *Pf, *Bf, *T;
} work;

static work layer_work(const loqt_state *st, int out, int in, int N) {
    int cr = w_chunk_rows(in);
    size_t wfl = (size_t)(cr < out ? cr : out) * in;
    work w;
    w.Wc = get_scratch(wfl + factor_floats(st) + (size_t)N * st->r);
    w.Pf = w.Wc + wfl;
    w.Bf = w.Pf + (size_t)st->P.rows * st->P.cols;
    w.T = w.Bf + (size_t)st->B.rows * st->B.cols;
    return w;
}

static void loqt_forward(linear_layer *L, const float *X, float *Y, int N) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in, r = st->r, cr = w_chunk_rows(in);
    work w = layer_work(st, out, in, N);
    float *Wc = w.Wc, *Pf = w.Pf, *Bf = w.Bf, *T = w.T;
    for (int r0 = 0; r0 < out; r0 += cr) {
        int r1 = r0 + cr < out ? r0 + cr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        gemm(false, true, N, r1 - r0, in, 1.0f, X, in, Wc, in, 0.0f, Y + r0, out);
    }
    if (!st->have_P) return; /* B = 0 before the first refresh */
    factors_f32(st, Pf, Bf);
    if (st->left) { /* Y += s (X P^T) B^T */
        gemm(false, true, N, r, in, 1.0f, X, in, Pf, in, 0.0f, T, r);
        gemm(false, true, N, out, r, st->s, T, r, Bf, r, 1.0f, Y, out);
    } else { /* Y += s (X B^T) P^T */
        gemm(false, true, N, r, in, 1.0f, X, in, Bf, in, 0.0f, T, r);
        gemm(false, true, N, out, r, st->s, T, r, Pf, r, 1.0f, Y, out);
    }
}

static void loqt_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                          int accumulate) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in, r = st->r, cr = w_chunk_rows(in);
    work w = layer_work(st, out, in, N);
    float *Wc = w.Wc, *Pf = w.Pf, *Bf = w.Bf, *T = w.T;
    if (dX) { /* dX = dY deq(W) (+ the low-rank part below) */
        for (int r0 = 0; r0 < out; r0 += cr) {
            int r1 = r0 + cr < out ? r0 + cr : out;
            qmat_get_rows(&st->W, r0, r1, Wc);
            gemm(false, false, N, in, r1 - r0, 1.0f, dY + r0, out, Wc, in,
                 accumulate || r0 > 0 ? 1.0f : 0.0f, dX, in);
        }
    }
    if (st->want_G && !st->G) /* allocated at the layer's first backward, so that with
                                 per-layer updates only one layer's G exists at a time */
        st->G = mem_alloc(MEM_GRADS, (size_t)out * in * sizeof(float));
    if (st->G) /* update step: the dense gradient of W_eff, for the SVD */
        gemm(true, false, out, in, N, 1.0f, dY, out, X, in, 1.0f, st->G, in);
    if (!st->have_P) return; /* before the first refresh P is undefined and B's gradient unused */
    if (!st->dB) st->dB = mem_alloc(MEM_GRADS, (size_t)st->B.rows * st->B.cols * sizeof(float));
    factors_f32(st, Pf, Bf);
    if (st->left) {
        /* dB += s dY^T (X P^T);  dX += s (dY B) P */
        gemm(false, true, N, r, in, 1.0f, X, in, Pf, in, 0.0f, T, r);
        gemm(true, false, out, r, N, st->s, dY, out, T, r, 1.0f, st->dB, r);
        if (dX) {
            gemm(false, false, N, r, out, 1.0f, dY, out, Bf, r, 0.0f, T, r);
            gemm(false, false, N, in, r, st->s, T, r, Pf, in, 1.0f, dX, in);
        }
    } else {
        /* U = dY P;  dB += s U^T X;  dX += s U B */
        gemm(false, false, N, r, out, 1.0f, dY, out, Pf, r, 0.0f, T, r);
        gemm(true, false, r, in, N, st->s, T, r, X, in, 1.0f, st->dB, in);
        if (dX) gemm(false, false, N, in, r, st->s, T, r, Bf, in, 1.0f, dX, in);
    }
}

static void loqt_begin_step(linear_layer *L, long step) {
    loqt_state *st = L->state;
    st->step = step;
    st->want_G = loqt_is_update_step(&st->o, step);
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

static void loqt_refresh(linear_layer *L) {
    loqt_state *st = L->state;
    const int out = L->out, in = L->in, r = st->r;
    const double t_start = loqt_now();
    const size_t n = (size_t)out * in, nP = (size_t)st->P.rows * st->P.cols;
    const size_t nB = (size_t)st->B.rows * st->B.cols;
    float *Wfp = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    float *Wt = mem_alloc(MEM_SCRATCH, n * sizeof(float));
    float *Pf = mem_alloc(MEM_SCRATCH, nP * sizeof(float));
    float *Bf = mem_alloc(MEM_SCRATCH, nB * sizeof(float));

    /* 1. merge: W_fp = deq(W) + s BP */
    qmat_get(&st->W, Wfp);
    if (st->have_P) {
        factors_f32(st, Pf, Bf);
        lowrank_product(st, Pf, Bf, Wt, out, in);
        for (size_t i = 0; i < n; i++) Wfp[i] += Wt[i];
    }
    /* 2. P from the top-r singular vectors of G */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(st->G[i]))
            loqt_die("%s: the gradient has a non-finite value at step %ld (training diverged; try a "
                     "lower --lr)", L->name, st->step);
    svd_opts so = svd_default_opts();
    so.seed = st->o.seed;
    so.stream = st->stream ^ (uint64_t)st->step;
    int rc = st->left ? svd_randomized(st->G, out, in, r, &so, NULL, NULL, Pf)
                      : svd_randomized(st->G, out, in, r, &so, Pf, NULL, NULL);
    if (rc) loqt_die("%s: SVD of the gradient failed: %s", L->name, loqt_last_error());
    if (qmat_set(&st->P, Pf)) loqt_die("%s: cannot quantize P: %s", L->name, loqt_last_error());
    qmat_get(&st->P, Pf); /* from now on the quantized P is what the layer uses */
    st->have_P = 1;

    /* 3. re-quantize W, with k rounds of error compensation (Algorithm 2): W_hat = W_fp; repeat:
     *    Q = quant(W_hat), R = W_fp - deq Q, B = argmin ||s B P - R||, W_hat = W_fp - s B P;
     *    keep the (Q, B) pair with the smallest ||W_fp - deq Q - s B P||.  k = 0: Q(W_fp), B = 0. */
    int k = st->o.compensate_quant_error_iterations;
    memset(Bf, 0, nB * sizeof(float));
    if (k > 0) {
        float *What = Wt, *R = mem_alloc(MEM_SCRATCH, n * sizeof(float));
        float *LR = mem_alloc(MEM_SCRATCH, n * sizeof(float));
        float *best_What = mem_alloc(MEM_SCRATCH, n * sizeof(float));
        float *best_B = mem_alloc(MEM_SCRATCH, nB * sizeof(float));
        memcpy(What, Wfp, n * sizeof(float));
        memcpy(best_What, Wfp, n * sizeof(float));
        double best = INFINITY;
        for (int it = 0; it < k; it++) {
            if (qmat_set(&st->W, What)) loqt_die("%s: cannot quantize W: %s", L->name, loqt_last_error());
            qmat_get(&st->W, R);
            for (size_t i = 0; i < n; i++) R[i] = Wfp[i] - R[i];
            double ridge = 0;
            if (st->left) lstsq_xp(R, out, in, Pf, r, Bf, &ridge);
            else lstsq_px(Pf, out, r, R, in, Bf, &ridge);
            for (size_t i = 0; i < nB; i++) Bf[i] /= st->s;
            qmat_set(&st->B, Bf); /* the stored (rounded) B is what the layer will use */
            qmat_get(&st->B, Bf);
            lowrank_product(st, Pf, Bf, LR, out, in);
            double err = sqdist(R, LR, n), err0 = 0;
            if (it == 0) {
                /* the k = 0 answer (B = 0) is a candidate too */
                for (size_t i = 0; i < n; i++) err0 += (double)R[i] * R[i];
                best = err0;
                memset(best_B, 0, nB * sizeof(float));
            }
            if (err < best) {
                best = err;
                memcpy(best_What, What, n * sizeof(float));
                memcpy(best_B, Bf, nB * sizeof(float));
            }
            for (size_t i = 0; i < n; i++) What[i] = Wfp[i] - LR[i];
        }
        if (qmat_set(&st->W, best_What)) loqt_die("%s: cannot quantize W: %s", L->name, loqt_last_error());
        memcpy(Bf, best_B, nB * sizeof(float));
        mem_free(R);
        mem_free(LR);
        mem_free(best_What);
        mem_free(best_B);
    } else if (qmat_set(&st->W, Wfp)) {
        loqt_die("%s: cannot quantize W: %s", L->name, loqt_last_error());
    }
    qmat_set(&st->B, Bf);
    /* 4. the gradient of B in the new basis, from the dense gradient of this step */
    if (!st->dB) st->dB = mem_alloc(MEM_GRADS, nB * sizeof(float));
    if (st->left) gemm(false, true, out, r, in, st->s, st->G, in, Pf, in, 0.0f, st->dB, r);
    else gemm(true, false, r, in, out, st->s, Pf, r, st->G, in, 0.0f, st->dB, in);
    if (st->o.merge_reset_optimizer) optim_state_restart(&st->opt, st->step);
    mem_free(Wfp);
    mem_free(Wt);
    mem_free(Pf);
    mem_free(Bf);
    /* big layers take seconds each: say what is happening, so a long refresh step is not silent */
    const double dt = loqt_now() - t_start;
    refresh_seconds += dt;
    if (dt >= 1.0)
        loqt_progress("step %ld: refreshed %s (%d x %d, rank %d) in %.1f s", st->step, L->name, out, in, r, dt);
}

static void loqt_end_step(linear_layer *L, long step) {
    loqt_state *st = L->state;
    (void)step;
    st->want_G = 0;
    if (!st->G) return;
    loqt_refresh(L);
    mem_free(st->G);
    st->G = NULL;
}

static double loqt_grad_sqnorm(const linear_layer *L) {
    const loqt_state *st = L->state;
    if (!st->have_P || !st->dB) return 0.0;
    return optim_sqnorm(st->dB, (size_t)st->B.rows * st->B.cols);
}

static void loqt_step(linear_layer *L, const optim_hparams *h) {
    loqt_state *st = L->state;
    if (!st->have_P || !st->dB) return;
    size_t nB = (size_t)st->B.rows * st->B.cols;
    if (st->B.kind == QMAT_F32) {
        optim_update(&st->opt, st->B.f32, st->dB, h);
        return;
    }
    float *Bf = get_scratch(nB);
    qmat_get(&st->B, Bf);
    optim_update(&st->opt, Bf, st->dB, h);
    /* bf16 storage: stochastic rounding keeps small updates from vanishing on average */
    qmat_set_stochastic(&st->B, Bf, st->o.seed ^ 0xb5b5b5b5ull, st->stream + (uint64_t)h->t * 0x9e37ull);
}

static void loqt_zero_grad(linear_layer *L) {
    loqt_state *st = L->state;
    if (st->dB) memset(st->dB, 0, (size_t)st->B.rows * st->B.cols * sizeof(float));
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
    factors_f32(st, Pf, Bf);
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

const linear_method method_loqt = {
    .name = "loqt",
    .init = loqt_init,
    .forward = loqt_forward,
    .backward = loqt_backward,
    .begin_step = loqt_begin_step,
    .end_step = loqt_end_step,
    .grad_sqnorm = loqt_grad_sqnorm,
    .step = loqt_step,
    .zero_grad = loqt_zero_grad,
    .release_grads = loqt_release_grads,
    .mem_bytes = loqt_mem_bytes,
    .export_dense = loqt_export,
    .save = loqt_save,
    .load = loqt_load,
    .free = loqt_free,
};

int loqt_layer_info(const linear_layer *L, int *rank, int *left, int *have_P) {
    const loqt_state *st = L->state;
    *rank = st->r;
    *left = st->left;
    *have_P = st->have_P;
    return 0;
}

double loqt_refresh_seconds(void) { return refresh_seconds; }

const float *loqt_grad_B(const linear_layer *L) { return ((const loqt_state *)L->state)->dB; }

void loqt_get_factors(const linear_layer *L, float *W, float *P, float *B) {
    const loqt_state *st = L->state;
    if (W) qmat_get(&st->W, W);
    if (P) qmat_get(&st->P, P);
    if (B) qmat_get(&st->B, B);
}

void loqt_set_B(linear_layer *L, const float *B) { qmat_set(&((loqt_state *)L->state)->B, B); }
