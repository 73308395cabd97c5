/* LoRA (Hu et al. 2021) on a frozen, optionally quantized base (QLoRA, Dettmers et al. 2023), with
 * PEFT's initialization or LoftQ's (Li et al. 2023).  Also the engine of ReLoRA (methods/relora.c).
 *
 * A layer (out x in, r = min(rank, smaller side)):
 *   y = x W^T + s * x_d A^T B^T,   A: r x in, B: out x r, s = alpha / rank (alpha / sqrt(rank))
 * W is frozen: NF4 (block 64, optional double quantization: QLoRA's storage), int8 (asymmetric,
 * group 256, quant/qint.h qasym), bf16 or fp32, dequantized by row tiles into the shared work
 * buffer, never as a whole.  A and B are fp32 and trained by the optimizer (one state over [A | B]).
 *   forward   Y = X deq(W)^T + s (X_d A^T) B^T
 *   backward  dB += s dY^T (X_d A^T);  dA += s (dY B)^T X_d;
 *             dX = dY deq(W) + s M o ((dY B) A) / (1 - p)
 * x_d = dropout(x) = M o x / (1 - p) during a training step (between begin_step and end_step), as
 * PEFT applies nn.Dropout to the adapters' input; x itself elsewhere (evaluation).  The mask M is a
 * pure function of (seed, layer, step, the bits of X, element), so forward, the recomputed forward
 * of activation checkpointing and backward see the same mask without storing it, and a run is
 * reproducible and resumes exactly.
 *
 * Initialization: zero (PEFT's default): A kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in),
 * 1/sqrt(in)), B = 0, base = Q(W0).  loftq: T = W0; k rounds of Q = quant(T), R = W0 - deq Q,
 * L R' = the rank-r truncated SVD of R with sqrt(S) on each side, T = W0 - L R'; the adapters
 * are B = L / sqrt(s), A = R' / sqrt(s), so that s B A = L R' (PEFT's LoftQ leaves s out, which
 * is right only for alpha = r).  The round with the smallest ||W0 - deq Q - s B A||_F is kept. */
#include "methods/lora.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/dense.h"
#include "linalg/svd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qmat_kind base_kind(int base_bits) {
    static const qmat_kind k[] = {QMAT_NF4, QMAT_INT8, QMAT_BF16, QMAT_F32};
    return k[base_bits];
}

lora_spec lora_spec_of(const lora_config *c) {
    const double r = c->rank;
    return (lora_spec){.rank = c->rank, .scale = c->rslora ? c->lora_alpha / sqrt(r) : c->lora_alpha / r,
                       .dropout = c->lora_dropout, .base = base_kind(c->base_bits),
                       .double_quant = c->use_double_quant, .init = c->init,
                       .loftq_iters = c->loftq_iterations, .svd = c->svd,
                       .calib_seqs = c->calibration_sequences, .quailora_iters = c->quailora_iterations,
                       .ridge = c->quailora_ridge, .targets = (unsigned)c->target_modules};
}

static int is_quailora(int init) { return init == LORA_INIT_QUAILORA || init == LORA_INIT_QUAILORA_CLOSED; }

int lora_spec_calibration(const lora_spec *sp) { return is_quailora(sp->init) ? sp->calib_seqs : 0; }

/* ---- shapes and sizes, shared by the code and its planning twin -------------------------- */

lora_geom lora_geom_of(int out, int in, int proj, const lora_spec *sp) {
    lora_geom g;
    const int small = out < in ? out : in;
    g.r = !(sp->targets >> proj & 1u) ? 0 : sp->rank < small ? sp->rank : small;
    g.n = (size_t)out * in;
    g.nA = (size_t)g.r * in;
    g.nB = (size_t)out * g.r;
    return g;
}

/* Rows of W dequantized at once: ~4M values (a ~16 MiB work buffer) whatever the layer size. */
static int tile_rows(int out, int in) {
    int rows = (1 << 22) / (in > 0 ? in : 1);
    if (rows < 1) rows = 1;
    return rows < out ? rows : out;
}

/* the adapters' input is dropped out (a layer without adapters has no use for the mask) */
static int has_dropout(const lora_spec *sp, const lora_geom *g) { return sp->dropout > 0 && g->r > 0; }

/* The work buffer of one forward or backward call: a tile of dequantized W (unless W is fp32),
 * the dropped-out input (or, in backward, the masked dX term), and two [N, r] intermediates. */
static size_t work_floats(const lora_spec *sp, const lora_geom *g, int out, int in, int N) {
    return (sp->base == QMAT_F32 ? 0 : (size_t)tile_rows(out, in) * in) +
           (has_dropout(sp, g) ? (size_t)N * in : 0) + 2 * (size_t)N * g->r;
}

/* LoftQ's scratch besides the two n-sized buffers: the round's B, A and singular values */
static size_t loftq_cur_floats(const lora_geom *g) { return g->nA + g->nB + (size_t)g->r; }

static svd_opts loftq_svd_opts(uint64_t seed, uint64_t stream) {
    svd_opts so = svd_default_opts();
    so.power_iters = 4; /* a quantization residual has a flat spectrum: more power iterations */
    so.seed = seed;
    so.stream = stream;
    return so;
}

/* ReLoRA merges the updates of steps (k-1) R .. k R - 1 at the start of step k R (k >= 1): in
 * begin_step, which every rank runs with the same broadcast A and B, not in step, which under
 * --zero 1 only the layer's owner runs (see merge_restart) */
static int merge_due(const lora_spec *sp, long step) {
    return sp->merge_every > 0 && step > 0 && step % sp->merge_every == 0;
}

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    lora_spec sp;
    lora_geom g;
    uint64_t seed, stream;
    float s;          /* the scale, as the products use it */
    qmat W;           /* the frozen base */
    float *AB;        /* [A (r x in) | B (out x r)], fp32, MEM_FACTORS */
    float *dAB;       /* their gradient (MEM_GRADS), from the first backward */
    optim_state opt;  /* over [A | B] */
    long step;
    int in_step;      /* between begin_step and end_step: dropout is on */
    long merges;      /* ReLoRA merges done by this process */
    long merged_at;   /* the step whose begin_step merged last (0: none), so a repeated
                       * begin_step of the same step does not merge twice */
    double merge_s;
    char merge_err[256]; /* a failed merge's error, reported by end_step (begin_step returns
                          * nothing); non-empty: the layer stays unmerged */
    int n_err;        /* LoftQ, QuAILoRA: init_err[0..n_err) */
    double init_err[LORA_QUAILORA_MAX + 2], w0_norm; /* (LORA_QUAILORA_MAX >= LORA_LOFTQ_MAX) */
} lora_state;

_Static_assert((int)LORA_QUAILORA_MAX >= (int)LORA_LOFTQ_MAX, "init_err holds LoftQ's rounds too");

static float *A_of(const lora_state *st) { return st->AB; }
static float *B_of(const lora_state *st) { return st->AB ? st->AB + st->g.nA : NULL; }

/* A <- kaiming-uniform (a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)), keyed by the optimizer step t
 * at which it is drawn (0 at init, the merge steps of ReLoRA) */
static void kaiming_A(lora_state *st, int in, long t) {
    const float bound = 1.0f / sqrtf((float)in);
    float *A = A_of(st);
    const uint64_t stream = st->stream + (uint64_t)t * 0x9e3779b97f4a7c15ull;
    const long n = (long)st->g.nA;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) A[i] = (2.0f * rng_uniform(st->seed ^ 0xa11a5eedull, stream, (uint64_t)i) - 1.0f) * bound;
}

static double sqnorm_d(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* One LoftQ round's adapters from the SVD of the residual R: B = U sqrt(S / s), A = sqrt(S / s) Vt */
static int residual_svd(const lora_state *st, const float *R, int out, int in, float *B, float *A, float *S) {
    const int r = st->g.r;
    const svd_opts so = loftq_svd_opts(st->seed, st->stream);
    int rc = st->sp.svd == LORA_SVD_EXACT ? svd_exact(R, out, in, r, B, S, A) : svd_randomized(R, out, in, r, &so, B, S, A);
    if (rc) return -1;
    for (int k = 0; k < r; k++) S[k] = sqrtf(S[k] / st->s);
    for (int i = 0; i < out; i++)
        for (int k = 0; k < r; k++) B[(size_t)i * r + k] *= S[k];
    for (int k = 0; k < r; k++)
        for (int j = 0; j < in; j++) A[(size_t)k * in + j] *= S[k];
    return 0;
}

/* LoftQ (see the top of the file): base and adapters of the best round; the objective of every
 * round in st->init_err (round 0: zero init, ||W0 - deq Q(W0)||). */
static int loftq_init(linear_layer *L, lora_state *st, const float *W0) {
    const int out = L->out, in = L->in, r = st->g.r;
    const size_t n = st->g.n, f = sizeof(float);
    float *T = mem_alloc(MEM_SCRATCH, f * n), *Q = mem_alloc(MEM_SCRATCH, f * n);
    float *cur = mem_alloc(MEM_SCRATCH, f * loftq_cur_floats(&st->g));
    float *cA = cur, *cB = cur + st->g.nA, *S = cB + st->g.nB;
    /* the round's quantized base; swapped with st->W when the round is the best so far (both are
     * MEM_DENSE allocations, so the layer's base keeps its category whichever survives) */
    qmat cand;
    int rc = qmat_init(&cand, st->sp.base, out, in, st->sp.double_quant, MEM_DENSE);
    memcpy(T, W0, f * n);
    st->w0_norm = sqrt(sqnorm_d(W0, n));
    double best = INFINITY;
    for (int t = 1; t <= st->sp.loftq_iters && !rc; t++) {
        if (qmat_set(&cand, T)) {
            rc = loqt_set_error("%s: LoftQ: cannot quantize: %s", L->name, loqt_last_error());
            break;
        }
        qmat_get(&cand, Q);
        for (size_t i = 0; i < n; i++) T[i] = W0[i] - Q[i]; /* the residual */
        if (t == 1) st->init_err[st->n_err++] = sqrt(sqnorm_d(T, n));
        if (residual_svd(st, T, out, in, cB, cA, S)) {
            rc = loqt_set_error("%s: LoftQ: SVD of the residual failed: %s", L->name, loqt_last_error());
            break;
        }
        gemm(false, false, out, in, r, st->s, cB, r, cA, in, 0.0f, Q, in); /* s B A */
        double err = 0;
        for (size_t i = 0; i < n; i++) {
            const double d = (double)T[i] - Q[i];
            err += d * d;
        }
        st->init_err[st->n_err++] = sqrt(err);
        if (err < best) {
            best = err;
            const qmat tmp = st->W;
            st->W = cand;
            cand = tmp;
            memcpy(st->AB, cur, f * (st->g.nA + st->g.nB));
        }
        for (size_t i = 0; i < n; i++) T[i] = W0[i] - Q[i]; /* the next round quantizes W0 - s B A */
    }
    qmat_free(&cand);
    mem_free(cur);
    mem_free(Q);
    mem_free(T);
    return rc;
}

/* ---- QuAILoRA ------------------------------------------------------------------------------
 * "QuAILoRA: Quantization-Aware Initialization for LoRA" (Lawton et al. 2024).  The base is Q(W0),
 * as with zero init (QuAILoRA changes only the adapters, so fine-tuning costs no extra memory);
 * with E = W0 - deq Q(W0) and X the layer's calibration inputs (rows: tokens), the adapters
 * minimize the error of the layer's output on the calibration data,
 *   f(B, A) = ||X (E - s B A)^T||_F^2 = tr((E - s B A) H (E - s B A)^T),   H = X^T X + lambda I,
 * lambda = --quailora-ridge x trace(X^T X) / in (GPTQ's relative dampening): it keeps the solves
 * well posed when X does not span every input direction (few tokens, dead features) and pulls the
 * solution slightly towards the uncalibrated one there.  Without a Gram (no calibration data) H
 * is the identity and f is LoftQ's first-round objective.
 *
 * --init quailora: from the uncalibrated optimum (the truncated SVD of E, LoftQ's first round),
 * alternating least squares.  f is quadratic in each factor:
 *   df/dB = -2 s (E - s B A) H A^T = 0  =>  s B (A H A^T) = E H A^T
 *           =>  B = (1/s) (E (A H)^T) (A H A^T)^-1      (an r x r system; H symmetric)
 *   df/dA = -2 s B^T (E - s B A) H = 0  <=  s (B^T B) A = B^T E
 *           =>  A = (1/s) (B^T B)^-1 (B^T E)            (r x r; H drops out: any A with
 *               B^T (E - s B A) = 0 zeroes the gradient, and f is convex in A)
 * Each half step minimizes f exactly over one factor, so f never increases (but for rounding;
 * the round with the smallest f is kept).  f itself needs no out x in x in product:
 *   f = c0 - 2 s <B^T E, A H> + s^2 <B^T B, A H A^T>,   c0 = tr(E H E^T) = f(0, A) (zero init),
 * from the r x in products the solves use anyway (<X, Y> = sum of X o Y).  The r x r systems
 * are solved by Cholesky in double with a ridge of 1e-12 of their largest diagonal entry growing
 * 100x until it factors (a factor of rank below r, e.g. E of small rank: its extra directions get
 * ~0 weight, as with a pseudo-inverse).
 *
 * --init quailora-closed (CLoQ, arXiv 2501.18475; QERA, arXiv 2410.06040): H = L L^T, so
 * f = ||(E - s B A) L||_F^2 and, L being invertible, s B A L is the best rank-r approximation of
 * E L (Eckart-Young): s B A = trunc_r(E L) L^-1.  With E L ~ U S V^T: B = U sqrt(S / s) and
 * A = sqrt(S / s) V^T L^-1, the square root of the singular values on each side as loqt's LoftQ
 * splits them (PEFT's LoftQ too, for s = 1).  ALS converges to it (tested).
 *
 * A base that holds W0 exactly (32 bits) leaves nothing to compensate: the adapters are zero
 * init's then (A kaiming, B = 0), and so whenever E is exactly 0 (a bf16 checkpoint on a 16-bit
 * base), since A = B = 0 would give neither factor a gradient. */

/* the r x r products in double: AHA = (A H) A^T, BtB = B^T B */
static void r_grams(const float *AH, const float *A, const float *B, int r, int in, int out, double *AHA, double *BtB) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < in; k++) a += (double)AH[(size_t)i * in + k] * A[(size_t)j * in + k];
            for (int o = 0; o < out; o++) b += (double)B[(size_t)o * r + i] * B[(size_t)o * r + j];
            AHA[(size_t)i * r + j] = a;
            BtB[(size_t)i * r + j] = b;
        }
}

/* AH = A (G + lambda I), G the caller's Gram (symmetric) or NULL for the identity */
static void times_h(const float *G, double lambda, const float *A, int r, int in, float *AH) {
    const size_t n = (size_t)r * in;
    if (G) gemm(false, false, r, in, in, 1.0f, A, in, G, in, 0.0f, AH, in);
    for (size_t i = 0; i < n; i++) AH[i] = (G ? AH[i] : 0.0f) + (float)((G ? lambda : 1.0 + lambda) * A[i]);
}

/* c0 = tr(E (G + lambda I) E^T), E by row tiles of `tile` (rows x in floats) */
static double quailora_c0(const float *E, const float *G, double lambda, int out, int in, float *tile) {
    const double e2 = sqnorm_d(E, (size_t)out * in);
    if (!G) return (1.0 + lambda) * e2;
    double c = lambda * e2;
    const int tr = tile_rows(out, in);
    for (int r0 = 0; r0 < out; r0 += tr) {
        const int r1 = r0 + tr < out ? r0 + tr : out;
        gemm(false, false, r1 - r0, in, in, 1.0f, E + (size_t)r0 * in, in, G, in, 0.0f, tile, in);
        for (size_t i = 0; i < (size_t)(r1 - r0) * in; i++) c += (double)tile[i] * E[(size_t)r0 * in + i];
    }
    return c;
}

/* Lower Cholesky factor Lm of M + delta I (r x r), delta from 1e-12 of M's largest diagonal entry
 * up by 100x until it factors; 1 when M is 0 (the factor it came from is 0), -1 on failure. */
static int small_chol(int r, const double *M, double *Lm) {
    double maxd = 0;
    for (int i = 0; i < r; i++) maxd = fmax(maxd, M[(size_t)i * r + i]);
    if (!(maxd > 0)) return isfinite(maxd) ? 1 : -1;
    for (double delta = 1e-12 * maxd; delta <= maxd; delta *= 100) {
        memcpy(Lm, M, sizeof(double) * (size_t)r * r);
        for (int i = 0; i < r; i++) Lm[(size_t)i * r + i] += delta;
        if (linalg_cholesky_d(r, Lm) == 0) return 0;
    }
    return -1;
}

/* x <- (Lm Lm^T)^-1 x */
static void chol_solve(int r, const double *Lm, double *x) {
    for (int i = 0; i < r; i++) {
        double v = x[i];
        for (int k = 0; k < i; k++) v -= Lm[(size_t)i * r + k] * x[k];
        x[i] = v / Lm[(size_t)i * r + i];
    }
    for (int i = r - 1; i >= 0; i--) {
        double v = x[i];
        for (int k = i + 1; k < r; k++) v -= Lm[(size_t)k * r + i] * x[k];
        x[i] = v / Lm[(size_t)i * r + i];
    }
}

/* The double scratch of the solves: AHA, BtB, a Cholesky factor (r x r each), one r-vector */
static size_t quailora_doubles(const lora_geom *g) { return 3 * (size_t)g->r * g->r + (size_t)g->r; }
/* AH, B^T E (r x in each) and E (A H)^T (out x r) */
static size_t quailora_work_floats(const lora_geom *g, int out, int in) {
    return 2 * (size_t)g->r * in + (size_t)out * g->r;
}

typedef struct {
    const float *E, *G;
    double lambda, c0, s;
    int out, in, r;
    float *AH, *BtE, *EAH;
    double *AHA, *BtB, *Lm, *vec;
} als_ctx;

/* f(B, A) from the products it refreshes: AH = A H, BtE = B^T E, AHA, BtB */
static double als_objective(als_ctx *c, const float *A, const float *B) {
    times_h(c->G, c->lambda, A, c->r, c->in, c->AH);
    gemm(true, false, c->r, c->in, c->out, 1.0f, B, c->r, c->E, c->in, 0.0f, c->BtE, c->in);
    r_grams(c->AH, A, B, c->r, c->in, c->out, c->AHA, c->BtB);
    double cross = 0, quad = 0;
    for (size_t i = 0; i < (size_t)c->r * c->in; i++) cross += (double)c->BtE[i] * c->AH[i];
    for (size_t i = 0; i < (size_t)c->r * c->r; i++) quad += c->BtB[i] * c->AHA[i];
    return fmax(0.0, c->c0 - 2 * c->s * cross + c->s * c->s * quad);
}

/* One round: B given A (needs AH, AHA of A), then A given B. */
static int als_round(als_ctx *c, float *A, float *B) {
    const int r = c->r, in = c->in, out = c->out;
    gemm(false, true, out, r, in, 1.0f, c->E, in, c->AH, in, 0.0f, c->EAH, r); /* E (A H)^T */
    int rc = small_chol(r, c->AHA, c->Lm);
    if (rc < 0) return loqt_set_error("the r x r system of A H A^T does not factor");
    for (int o = 0; o < out; o++) { /* B (A H A^T) = E (A H)^T / s, row by row (AHA symmetric) */
        double *x = c->vec;
        for (int k = 0; k < r; k++) x[k] = rc ? 0.0 : c->EAH[(size_t)o * r + k] / c->s;
        if (!rc) chol_solve(r, c->Lm, x);
        for (int k = 0; k < r; k++) B[(size_t)o * r + k] = (float)x[k];
    }
    gemm(true, false, r, in, out, 1.0f, B, r, c->E, in, 0.0f, c->BtE, in); /* B^T E */
    r_grams(c->AH, A, B, r, in, out, c->AHA, c->BtB);
    rc = small_chol(r, c->BtB, c->Lm);
    if (rc < 0) return loqt_set_error("the r x r system of B^T B does not factor");
    for (int j = 0; j < in; j++) { /* (B^T B) A = B^T E / s, column by column */
        double *x = c->vec;
        for (int k = 0; k < r; k++) x[k] = rc ? 0.0 : c->BtE[(size_t)k * in + j] / c->s;
        if (!rc) chol_solve(r, c->Lm, x);
        for (int k = 0; k < r; k++) A[(size_t)k * in + j] = (float)x[k];
    }
    return 0;
}

/* quailora-closed's factors into B (out x r) and A (r x in), given E */
static int quailora_closed(linear_layer *L, lora_state *st, als_ctx *c, float *B, float *A, float *S) {
    const int out = L->out, in = L->in;
    const size_t ii = (size_t)in * in;
    double *Hd = mem_alloc(MEM_SCRATCH, sizeof(double) * ii);
    for (size_t i = 0; i < ii; i++) Hd[i] = c->G ? c->G[i] : 0.0;
    for (int i = 0; i < in; i++) Hd[(size_t)i * in + i] += (c->G ? 0.0 : 1.0) + c->lambda;
    if (linalg_cholesky_d(in, Hd)) {
        mem_free(Hd);
        return loqt_set_error("the calibration Gram X^T X + lambda I is not positive definite (raise --quailora-ridge)");
    }
    float *Lt = mem_alloc(MEM_SCRATCH, sizeof(float) * ii); /* L^T: row j holds column j of L */
    for (int i = 0; i < in; i++)
        for (int j = 0; j < in; j++) Lt[(size_t)j * in + i] = (float)Hd[(size_t)i * in + j];
    mem_free(Hd);
    float *M = mem_alloc(MEM_SCRATCH, sizeof(float) * st->g.n);
    gemm(false, true, out, in, in, 1.0f, c->E, in, Lt, in, 0.0f, M, in); /* E L */
    int rc = residual_svd(st, M, out, in, B, A, S); /* B = U sqrt(S/s), A = sqrt(S/s) V^T */
    mem_free(M);
    if (rc) {
        mem_free(Lt);
        return loqt_set_error("SVD of E L failed: %s", loqt_last_error());
    }
    /* A <- A L^-1: each row a solves a L = y, i.e. L^T a^T = y^T, by back substitution */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < c->r; k++) {
        float *a = A + (size_t)k * in;
        for (int j = in - 1; j >= 0; j--) {
            const float *lj = Lt + (size_t)j * in;
            double v = a[j];
            for (int q = j + 1; q < in; q++) v -= (double)a[q] * lj[q];
            a[j] = (float)(v / lj[j]);
        }
    }
    mem_free(Lt);
    return 0;
}

static int quailora_init(linear_layer *L, lora_state *st, const float *W0, const linear_init *ini) {
    const int out = L->out, in = L->in, r = st->g.r;
    const size_t n = st->g.n, f = sizeof(float);
    if (qmat_set(&st->W, W0)) return loqt_set_error("%s: cannot store the base weight: %s", L->name, loqt_last_error());
    if (st->sp.base == QMAT_F32) { /* nothing to compensate */
        kaiming_A(st, in, 0);
        return 0;
    }
    const float *G = ini ? ini->gram : NULL;
    float *E = mem_alloc(MEM_SCRATCH, f * n);
    qmat_get(&st->W, E);
    for (size_t i = 0; i < n; i++) E[i] = W0[i] - E[i];
    double trace = 0;
    for (int i = 0; i < in; i++) trace += G ? G[(size_t)i * in + i] : 1.0;
    als_ctx c = {.E = E, .G = G, .lambda = st->sp.ridge * trace / in, .s = st->s, .out = out, .in = in, .r = r};
    float *tile = mem_alloc(MEM_SCRATCH, f * (size_t)tile_rows(out, in) * in);
    c.c0 = quailora_c0(E, G, c.lambda, out, in, tile);
    mem_free(tile);
    float *cur = mem_alloc(MEM_SCRATCH, f * loftq_cur_floats(&st->g));
    float *cA = cur, *cB = cur + st->g.nA, *S = cB + st->g.nB;
    float *work = mem_alloc(MEM_SCRATCH, f * quailora_work_floats(&st->g, out, in));
    c.AH = work;
    c.BtE = work + (size_t)r * in;
    c.EAH = c.BtE + (size_t)r * in;
    double *small = mem_alloc(MEM_SCRATCH, sizeof(double) * quailora_doubles(&st->g));
    c.AHA = small;
    c.BtB = small + (size_t)r * r;
    c.Lm = c.BtB + (size_t)r * r;
    c.vec = c.Lm + (size_t)r * r;
    st->init_err[st->n_err++] = sqrt(c.c0);
    int rc = 0;
    if (st->sp.init == LORA_INIT_QUAILORA_CLOSED) {
        rc = quailora_closed(L, st, &c, cB, cA, S);
    } else if (residual_svd(st, E, out, in, cB, cA, S)) {
        rc = loqt_set_error("SVD of the residual failed: %s", loqt_last_error());
    }
    double best = INFINITY;
    for (int t = 0; !rc; t++) {
        const double fv = als_objective(&c, cA, cB);
        st->init_err[st->n_err++] = sqrt(fv);
        if (fv < best) {
            best = fv;
            memcpy(st->AB, cur, f * (st->g.nA + st->g.nB));
        }
        if (st->sp.init == LORA_INIT_QUAILORA_CLOSED || t == st->sp.quailora_iters) break;
        rc = als_round(&c, cA, cB);
    }
    if (!rc && !(c.c0 > 0)) { /* E = 0: zero init (see above) */
        kaiming_A(st, in, 0);
        memset(B_of(st), 0, f * st->g.nB);
    }
    mem_free(small);
    mem_free(work);
    mem_free(cur);
    mem_free(E);
    return rc ? loqt_set_error("QuAILoRA: %s", loqt_last_error()) : 0; /* the caller names the layer */
}

int lora_engine_init(linear_layer *L, const method_opts *o, const linear_init *ini, const lora_spec *sp) {
    lora_state *st = calloc(1, sizeof *st);
    L->state = st;
    st->sp = *sp;
    st->g = lora_geom_of(L->out, L->in, L->proj, sp);
    st->seed = o->seed;
    st->stream = rng_stream_id(L->name);
    st->s = (float)sp->scale;
    if (qmat_init(&st->W, sp->base, L->out, L->in, sp->double_quant, MEM_DENSE)) return -1;
    const size_t np = st->g.nA + st->g.nB;
    if (np) st->AB = mem_alloc(MEM_FACTORS, sizeof(float) * np);
    optim_state_init(&st->opt, np, o->optimizer);
    const float *W0 = ini ? ini->W0 : NULL;
    float *Wr = W0 ? NULL : linear_random_init(L, o->seed, MEM_SCRATCH);
    if (!W0) W0 = Wr;
    int rc;
    if (!np) { /* outside --target-modules: the base alone */
        rc = qmat_set(&st->W, W0);
        if (rc) loqt_set_error("%s: cannot store the base weight: %s", L->name, loqt_last_error());
    } else if (sp->init == LORA_INIT_LOFTQ) {
        rc = loftq_init(L, st, W0);
    } else if (is_quailora(sp->init)) {
        rc = quailora_init(L, st, W0, ini);
    } else {
        kaiming_A(st, L->in, 0);
        rc = qmat_set(&st->W, W0);
        if (rc) loqt_set_error("%s: cannot store the base weight: %s", L->name, loqt_last_error());
    }
    mem_free(Wr);
    return rc;
}

/* ---- forward and backward ---------------------------------------------------------------- */

typedef struct {
    float *Wc, *D, *T, *U; /* W tile, dropped-out input (or masked dX term), X_d A^T, dY B */
} work;

static work layer_work(const lora_state *st, int out, int in, int N) {
    work w;
    w.Wc = mem_workspace(sizeof(float) * work_floats(&st->sp, &st->g, out, in, N));
    w.D = w.Wc + (st->sp.base == QMAT_F32 ? 0 : (size_t)tile_rows(out, in) * in);
    w.T = w.D + (has_dropout(&st->sp, &st->g) ? (size_t)N * in : 0);
    w.U = w.T + (size_t)N * st->g.r;
    return w;
}

static int dropout_on(const lora_state *st) { return has_dropout(&st->sp, &st->g) && st->in_step; }

enum { HASH_CHUNK = 1 << 16 };

/* FNV-1a over the bits of chunk c of x[0..n) */
static uint64_t fnv_chunk(const float *x, size_t n, long c) {
    const size_t e = (size_t)(c + 1) * HASH_CHUNK < n ? (size_t)(c + 1) * HASH_CHUNK : n;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = (size_t)c * HASH_CHUNK; i < e; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        h = (h ^ u) * 1099511628211ull;
    }
    return h;
}

/* The chunks' hashes combined in order: the same value whatever the thread count (and on one
 * thread when there is no room for the chunk hashes). */
static uint64_t hash_floats(const float *x, size_t n) {
    const long nc = (long)((n + HASH_CHUNK - 1) / HASH_CHUNK);
    uint64_t h = 1469598103934665603ull;
    uint64_t *part = nc > 1 ? malloc(sizeof(uint64_t) * (size_t)nc) : NULL;
    if (part) {
#pragma omp parallel for schedule(static)
        for (long c = 0; c < nc; c++) part[c] = fnv_chunk(x, n, c);
    }
    for (long c = 0; c < nc; c++) h = (h ^ (part ? part[c] : fnv_chunk(x, n, c))) * 1099511628211ull;
    free(part);
    return h;
}

/* the stream of this call's mask: the layer, the step and the input it sees */
static uint64_t mask_stream(const lora_state *st, const float *X, int N, int in) {
    return st->stream ^ hash_floats(X, (size_t)N * in) ^ ((uint64_t)st->step * 0xd1b54a32d192ed03ull);
}

static int kept(const lora_state *st, uint64_t stream, size_t i) {
    return rng_uniform(st->seed ^ 0xd40f0a7ull, stream, (uint64_t)i) >= (float)st->sp.dropout;
}

void lora_dropout_mask(const linear_layer *L, const float *X, int N, unsigned char *keep) {
    const lora_state *st = L->state;
    const uint64_t stream = mask_stream(st, X, N, L->in);
    for (size_t i = 0; i < (size_t)N * L->in; i++) keep[i] = (unsigned char)kept(st, stream, i);
}

/* D = M o X / (1 - p) */
static void drop_into(const lora_state *st, const float *X, int N, int in, float *D) {
    const uint64_t stream = mask_stream(st, X, N, in);
    const float keep_scale = (float)(1.0 / (1.0 - st->sp.dropout));
    const long n = (long)N * in;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) D[i] = kept(st, stream, (size_t)i) ? X[i] * keep_scale : 0.0f;
}

/* Y = X deq(W)^T, by row tiles unless W is fp32 */
static void base_forward(const lora_state *st, const float *X, float *Y, int N, int out, int in, float *Wc) {
    if (st->W.kind == QMAT_F32) {
        gemm(false, true, N, out, in, 1.0f, X, in, st->W.f32, in, 0.0f, Y, out);
        return;
    }
    const int tr = tile_rows(out, in);
    for (int r0 = 0; r0 < out; r0 += tr) {
        const int r1 = r0 + tr < out ? r0 + tr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        gemm(false, true, N, r1 - r0, in, 1.0f, X, in, Wc, in, 0.0f, Y + r0, out);
    }
}

/* dX (= or +=) dY deq(W) */
static void base_backward(const lora_state *st, const float *dY, float *dX, int N, int out, int in, int accumulate,
                          float *Wc) {
    if (st->W.kind == QMAT_F32) {
        gemm(false, false, N, in, out, 1.0f, dY, out, st->W.f32, in, accumulate ? 1.0f : 0.0f, dX, in);
        return;
    }
    const int tr = tile_rows(out, in);
    for (int r0 = 0; r0 < out; r0 += tr) {
        const int r1 = r0 + tr < out ? r0 + tr : out;
        qmat_get_rows(&st->W, r0, r1, Wc);
        gemm(false, false, N, in, r1 - r0, 1.0f, dY + r0, out, Wc, in, accumulate || r0 > 0 ? 1.0f : 0.0f, dX, in);
    }
}

void lora_forward(linear_layer *L, const float *X, float *Y, int N) {
    lora_state *st = L->state;
    const int out = L->out, in = L->in, r = st->g.r;
    work w = layer_work(st, out, in, N);
    base_forward(st, X, Y, N, out, in, w.Wc);
    if (!r) return;
    const float *Xa = X;
    if (dropout_on(st)) {
        drop_into(st, X, N, in, w.D);
        Xa = w.D;
    }
    gemm(false, true, N, r, in, 1.0f, Xa, in, A_of(st), in, 0.0f, w.T, r);  /* T = X_d A^T */
    gemm(false, true, N, out, r, st->s, w.T, r, B_of(st), r, 1.0f, Y, out); /* Y += s T B^T */
}

void lora_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate) {
    lora_state *st = L->state;
    const int out = L->out, in = L->in, r = st->g.r;
    work w = layer_work(st, out, in, N);
    if (dX) base_backward(st, dY, dX, N, out, in, accumulate, w.Wc);
    if (!r) return;
    if (!st->dAB) st->dAB = mem_alloc(MEM_GRADS, sizeof(float) * (st->g.nA + st->g.nB));
    float *dA = st->dAB, *dB = st->dAB + st->g.nA;
    const int drop = dropout_on(st);
    const float *Xa = X;
    if (drop) {
        drop_into(st, X, N, in, w.D);
        Xa = w.D;
    }
    gemm(false, true, N, r, in, 1.0f, Xa, in, A_of(st), in, 0.0f, w.T, r);    /* T = X_d A^T */
    gemm(true, false, out, r, N, st->s, dY, out, w.T, r, 1.0f, dB, r);       /* dB += s dY^T T */
    gemm(false, false, N, r, out, 1.0f, dY, out, B_of(st), r, 0.0f, w.U, r); /* U = dY B */
    gemm(true, false, r, in, N, st->s, w.U, r, Xa, in, 1.0f, dA, in);        /* dA += s U^T X_d */
    if (!dX) return;
    if (!drop) {
        gemm(false, false, N, in, r, st->s, w.U, r, A_of(st), in, 1.0f, dX, in); /* dX += s U A */
        return;
    }
    /* dX += s M o (U A) / (1 - p): the same mask as X_d (the stream depends on X, not on D) */
    gemm(false, false, N, in, r, 1.0f, w.U, r, A_of(st), in, 0.0f, w.D, in);
    const uint64_t stream = mask_stream(st, X, N, in);
    const float sk = (float)(st->s / (1.0 - st->sp.dropout));
    const long n = (long)N * in;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++)
        if (kept(st, stream, (size_t)i)) dX[i] += sk * w.D[i];
}

static int merge_restart(linear_layer *L, long t);

void lora_begin_step(linear_layer *L, long step) {
    lora_state *st = L->state;
    st->step = step;
    st->in_step = 1;
    if (!st->g.r || !merge_due(&st->sp, step) || st->merged_at == step || st->merge_err[0]) return;
    if (merge_restart(L, step)) snprintf(st->merge_err, sizeof st->merge_err, "%s", loqt_last_error());
    else st->merged_at = step;
}

int lora_end_step(linear_layer *L, long step) {
    lora_state *st = L->state;
    (void)step;
    st->in_step = 0;
    return st->merge_err[0] ? loqt_set_error("%s", st->merge_err) : 0;
}

double lora_grad_sqnorm(const linear_layer *L) {
    const lora_state *st = L->state;
    return st->dAB ? optim_sqnorm(st->dAB, st->g.nA + st->g.nB) : 0.0;
}

/* ---- ReLoRA's merge and restart ---------------------------------------------------------- */

/* |x| <= the ratio-quantile of |x| becomes 0 (torch.quantile's linear interpolation) */
static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void lora_magnitude_prune(float *x, size_t n, double ratio, float *sorted) {
    if (n == 0) return;
    for (size_t i = 0; i < n; i++) sorted[i] = fabsf(x[i]);
    qsort(sorted, n, sizeof(float), cmp_float);
    const double pos = ratio * (double)(n - 1);
    const size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    const float thr = (float)((double)sorted[lo] + (pos - (double)lo) * ((double)sorted[hi] - sorted[lo]));
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) > thr)) x[i] = 0.0f;
}

static void reset_optimizer(lora_state *st) {
    if (st->sp.opt_reset == LORA_RESET_ZERO) {
        optim_state_reset(&st->opt); /* the bias correction goes on, as in the reference */
        return;
    }
    const size_t nA = st->g.nA, nB = st->g.nB, np = nA + nB;
    float *m = mem_alloc(MEM_SCRATCH, sizeof(float) * np), *v = mem_alloc(MEM_SCRATCH, sizeof(float) * np);
    if (optim_state_get_moments(&st->opt, m, v)) {
        /* each moment of each factor on its own, as the reference prunes per parameter tensor */
        float *sorted = mem_alloc(MEM_SCRATCH, sizeof(float) * (nA > nB ? nA : nB));
        lora_magnitude_prune(m, nA, st->sp.prune_ratio, sorted);
        lora_magnitude_prune(m + nA, nB, st->sp.prune_ratio, sorted);
        lora_magnitude_prune(v, nA, st->sp.prune_ratio, sorted);
        lora_magnitude_prune(v + nA, nB, st->sp.prune_ratio, sorted);
        optim_state_set_moments(&st->opt, m, v);
        mem_free(sorted);
    }
    mem_free(m);
    mem_free(v);
}

/* W <- Q(deq W + s B A); A kaiming-uniform again, B = 0; the factors' optimizer state pruned or
 * reset (a rank that does not own the layer under --zero 1 has none: nothing to prune).  A
 * quantized base is re-quantized from the merged fp32 matrix with fresh block scales.
 *
 * Run by begin_step of step t = k R, not by step of step t - 1: the merge writes W, which the
 * parameter broadcast of --zero 1 does not carry, so it must run on every rank from the same
 * (broadcast) A and B.  Merging before the next forward is the same computation as merging after
 * the update; between the two (a checkpoint, an evaluation, the export after the last step) the
 * layer holds W and s B A apart, the same effective weight up to the re-quantization.  A
 * non-finite merged matrix leaves the layer untouched (unmerged) and fails the step. */
static int merge_restart(linear_layer *L, long t) {
    lora_state *st = L->state;
    const int out = L->out, in = L->in, r = st->g.r;
    const double t0 = loqt_now();
    float *Wf = mem_alloc(MEM_SCRATCH, sizeof(float) * st->g.n);
    qmat_get(&st->W, Wf);
    gemm(false, false, out, in, r, st->s, B_of(st), r, A_of(st), in, 1.0f, Wf, in);
    /* the sum of squares in double is finite exactly when every value is */
    int rc = optim_sqnorm(Wf, st->g.n) < INFINITY ? qmat_set(&st->W, Wf)
                                                   : loqt_set_error("W + s B A is not finite");
    mem_free(Wf);
    if (rc) return loqt_set_error("%s: ReLoRA merge after step %ld: %s", L->name, t - 1, loqt_last_error());
    kaiming_A(st, in, t);
    memset(B_of(st), 0, sizeof(float) * st->g.nB);
    reset_optimizer(st);
    st->merges++;
    st->merge_s += loqt_now() - t0;
    return 0;
}

int lora_step(linear_layer *L, const optim_hparams *h) {
    lora_state *st = L->state;
    if (st->dAB) optim_update(&st->opt, st->AB, st->dAB, h);
    return 0;
}

void lora_zero_grad(linear_layer *L) {
    lora_state *st = L->state;
    if (st->dAB) memset(st->dAB, 0, sizeof(float) * (st->g.nA + st->g.nB));
}

/* A merge done by this step's begin_step stays: it concludes the previous step's update and
 * leaves the effective weight as it was (up to a quantized base's re-quantization). */
void lora_skip_step(linear_layer *L) {
    ((lora_state *)L->state)->in_step = 0;
    lora_zero_grad(L);
}

void lora_release_grads(linear_layer *L) {
    lora_state *st = L->state;
    mem_free(st->dAB);
    st->dAB = NULL;
}

void lora_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]) {
    const lora_state *st = L->state;
    qmat_mem_bytes(&st->W, bytes);
    bytes[MEM_FACTORS] += mem_size(st->AB);
    bytes[MEM_GRADS] += mem_size(st->dAB);
    bytes[MEM_OPTIM] += optim_state_bytes(&st->opt);
}

void lora_export(const linear_layer *L, float *W) {
    const lora_state *st = L->state;
    qmat_get(&st->W, W);
    if (st->g.r) gemm(false, false, L->out, L->in, st->g.r, st->s, B_of(st), st->g.r, A_of(st), L->in, 1.0f, W, L->in);
}

/* ---- checkpoints: the base under the HF name (a plain tensor when 16 or 32 bits), the adapters
 * under PEFT's suffixes, in model.safetensors (evaluation needs both); Adam's state in the state */

void lora_save(const linear_layer *L, st_writer *model, st_writer *state) {
    const lora_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    qmat_save(&st->W, model, nm);
    if (!st->g.r) return; /* outside --target-modules */
    const int64_t sa[2] = {st->g.r, L->in}, sb[2] = {L->out, st->g.r};
    snprintf(nm, sizeof nm, "%s.lora_A.weight", L->name);
    st_writer_add(model, nm, ST_F32, 2, sa, A_of(st));
    snprintf(nm, sizeof nm, "%s.lora_B.weight", L->name);
    st_writer_add(model, nm, ST_F32, 2, sb, B_of(st));
    snprintf(nm, sizeof nm, "optimizer.%s.lora", L->name);
    optim_state_save(&st->opt, state, nm);
}

int lora_load(linear_layer *L, const st_file *model, const st_file *state) {
    lora_state *st = L->state;
    char nm[200];
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if (qmat_load(&st->W, model, nm)) return -1;
    if (!st->g.r) return 0;
    const int64_t sa[2] = {st->g.r, L->in}, sb[2] = {L->out, st->g.r};
    snprintf(nm, sizeof nm, "%s.lora_A.weight", L->name);
    if (st_read_f32(model, nm, A_of(st), 2, sa)) return -1;
    snprintf(nm, sizeof nm, "%s.lora_B.weight", L->name);
    if (st_read_f32(model, nm, B_of(st), 2, sb)) return -1;
    if (!state) return 0;
    snprintf(nm, sizeof nm, "optimizer.%s.lora", L->name);
    return optim_state_load(&st->opt, state, nm);
}

void lora_free(linear_layer *L) {
    lora_state *st = L->state;
    if (!st) return;
    qmat_free(&st->W);
    mem_free(st->AB);
    mem_free(st->dAB);
    optim_state_free(&st->opt);
    free(st);
    L->state = NULL;
}

/* ---- planning twin ------------------------------------------------------------------------- */

/* planning state: the gradient exists, the optimizer state exists */
enum { PS_DAB, PS_OPT };

/* quailora_init's allocations (the caller's Gram is not the layer's) */
static void plan_quailora(const linear_plan *p, const lora_spec *sp, const lora_geom *g, mem_sim *s) {
    const size_t f = sizeof(float), n = g->n, ii = (size_t)p->in * p->in;
    qmat_plan_set(s, sp->base, n, sp->double_quant);
    if (sp->base == QMAT_F32) return;
    const size_t held[] = {f * n, f * loftq_cur_floats(g), f * quailora_work_floats(g, p->out, p->in),
                           sizeof(double) * quailora_doubles(g)}; /* E, cur, work, small */
    mem_sim_alloc(s, MEM_SCRATCH, held[0]);
    mem_sim_temp(s, MEM_SCRATCH, f * (size_t)tile_rows(p->out, p->in) * p->in);
    for (int i = 1; i < 4; i++) mem_sim_alloc(s, MEM_SCRATCH, held[i]);
    const svd_opts so = loftq_svd_opts(0, 0);
    if (sp->init == LORA_INIT_QUAILORA_CLOSED) {
        mem_sim_alloc(s, MEM_SCRATCH, sizeof(double) * ii); /* H, then L, in double */
        mem_sim_alloc(s, MEM_SCRATCH, f * ii);              /* L^T in fp32 */
        mem_sim_free(s, MEM_SCRATCH, sizeof(double) * ii);
        mem_sim_alloc(s, MEM_SCRATCH, f * n);               /* E L */
    }
    if (sp->svd == LORA_SVD_EXACT) svd_exact_plan(s, p->out, p->in, g->r);
    else svd_randomized_plan(s, p->out, p->in, g->r, &so);
    if (sp->init == LORA_INIT_QUAILORA_CLOSED) {
        mem_sim_free(s, MEM_SCRATCH, f * n);
        mem_sim_free(s, MEM_SCRATCH, f * ii);
    }
    for (int i = 3; i >= 0; i--) mem_sim_free(s, MEM_SCRATCH, held[i]);
}

static void plan_init(const linear_plan *p, const lora_spec *sp, const lora_geom *g, mem_sim *s) {
    const size_t f = sizeof(float), n = g->n;
    qmat_plan_init(s, sp->base, n, sp->double_quant, MEM_DENSE);
    if (g->r) mem_sim_alloc(s, MEM_FACTORS, f * (g->nA + g->nB));
    if (!p->init_W0) mem_sim_alloc(s, MEM_SCRATCH, f * n); /* the random initial W (a pretraining run) */
    if (!g->r) {
        qmat_plan_set(s, sp->base, n, sp->double_quant);
    } else if (sp->init == LORA_INIT_LOFTQ) {
        mem_sim_alloc(s, MEM_SCRATCH, f * n); /* T */
        mem_sim_alloc(s, MEM_SCRATCH, f * n); /* Q */
        mem_sim_alloc(s, MEM_SCRATCH, f * loftq_cur_floats(g));
        qmat_plan_init(s, sp->base, n, sp->double_quant, MEM_DENSE); /* the candidate base */
        const svd_opts so = loftq_svd_opts(0, 0);
        for (int t = 0; t < sp->loftq_iters; t++) {
            qmat_plan_set(s, sp->base, n, sp->double_quant);
            if (sp->svd == LORA_SVD_EXACT) svd_exact_plan(s, p->out, p->in, g->r);
            else svd_randomized_plan(s, p->out, p->in, g->r, &so);
        }
        qmat_plan_free(s, sp->base, n, sp->double_quant, MEM_DENSE);
        mem_sim_free(s, MEM_SCRATCH, f * loftq_cur_floats(g));
        mem_sim_free(s, MEM_SCRATCH, 2 * f * n);
    } else if (is_quailora(sp->init)) {
        plan_quailora(p, sp, g, s);
    } else {
        qmat_plan_set(s, sp->base, n, sp->double_quant);
    }
    if (!p->init_W0) mem_sim_free(s, MEM_SCRATCH, f * n);
}

static void plan_merge(const linear_plan *p, const lora_spec *sp, const lora_geom *g, mem_sim *s) {
    const size_t f = sizeof(float), np = g->nA + g->nB;
    mem_sim_alloc(s, MEM_SCRATCH, f * g->n);
    qmat_plan_set(s, sp->base, g->n, sp->double_quant);
    mem_sim_free(s, MEM_SCRATCH, f * g->n);
    if (sp->opt_reset != LORA_RESET_PRUNE) return;
    mem_sim_alloc(s, MEM_SCRATCH, 2 * f * np);
    if (p->slot[PS_OPT]) mem_sim_temp(s, MEM_SCRATCH, f * (g->nA > g->nB ? g->nA : g->nB));
    mem_sim_free(s, MEM_SCRATCH, 2 * f * np);
}

void lora_engine_plan(linear_plan *p, linear_phase phase, mem_sim *s, const lora_spec *sp) {
    const lora_geom g = lora_geom_of(p->out, p->in, p->proj, sp);
    const size_t f = sizeof(float);
    long *sl = p->slot;
    switch (phase) {
    case LPHASE_INIT: plan_init(p, sp, &g, s); break;
    case LPHASE_FORWARD: mem_sim_workspace(s, f * work_floats(sp, &g, p->out, p->in, p->N)); break;
    case LPHASE_BACKWARD:
        mem_sim_workspace(s, f * work_floats(sp, &g, p->out, p->in, p->N));
        if (!g.r) break;
        if (!sl[PS_DAB]) mem_sim_alloc(s, MEM_GRADS, f * (g.nA + g.nB));
        sl[PS_DAB] = 1;
        break;
    case LPHASE_BEGIN_STEP:
        if (g.r && merge_due(sp, p->step)) plan_merge(p, sp, &g, s);
        break;
    case LPHASE_STEP:
        if (sl[PS_DAB]) {
            optim_plan_update(s, p->o->optimizer, g.nA + g.nB, (int)sl[PS_OPT]);
            sl[PS_OPT] = 1;
        }
        break;
    case LPHASE_RELEASE_GRADS:
        if (sl[PS_DAB]) mem_sim_free(s, MEM_GRADS, f * (g.nA + g.nB));
        sl[PS_DAB] = 0;
        break;
    case LPHASE_END_STEP:
    case LPHASE_EXPORT: break;
    }
}

/* The papers' estimate: the base in its bits, A and B in 16 bits and Adam's two moments of both
 * in 16 bits (LoQT's table: "LoRA: optimizer 2mr + 2nr") */
double lora_engine_paper_bytes(int out, int in, int proj, const lora_spec *sp) {
    const lora_geom g = lora_geom_of(out, in, proj, sp);
    static const double base_bytes[] = {[QMAT_F32] = 4, [QMAT_BF16] = 2, [QMAT_NF4] = 0.5, [QMAT_INT8] = 1, [QMAT_INT4] = 0.5};
    const double np = (double)(g.nA + g.nB);
    return base_bytes[sp->base] * (double)g.n + 2.0 * np + 4.0 * np;
}

/* ---- views, statistics, tools ------------------------------------------------------------ */

int lora_grad_views(linear_layer *L, grad_view *v, int cap) {
    lora_state *st = L->state;
    if (!st->dAB || cap < 1) return 0;
    v[0] = (grad_view){st->dAB, st->g.nA + st->g.nB, "dAB", 1}; /* only step reads it */
    return 1;
}

size_t lora_params_get(const linear_layer *L, float *x) {
    const lora_state *st = L->state;
    if (x && st->AB) memcpy(x, st->AB, sizeof(float) * (st->g.nA + st->g.nB));
    return st->g.nA + st->g.nB;
}

void lora_params_set(linear_layer *L, const float *x) {
    lora_state *st = L->state;
    if (st->AB) memcpy(st->AB, x, sizeof(float) * (st->g.nA + st->g.nB));
}

void lora_stats(const linear_layer *L, method_stats *acc) {
    const lora_state *st = L->state;
    if (st->sp.merge_every > 0) {
        method_stats_add(acc, "merges", STAT_SUM, (double)st->merges);
        method_stats_add(acc, "merge_s", STAT_SUM, st->merge_s);
    }
    if (st->n_err > 1) {
        /* LoftQ: the kept round's ||W0 - deq Q - s B A|| relative to ||W0||, and to zero init's;
         * QuAILoRA: its calibrated error relative to zero init's (no w0_norm) */
        double best = st->init_err[1];
        for (int i = 2; i < st->n_err; i++) best = fmin(best, st->init_err[i]);
        if (st->w0_norm > 0) method_stats_add(acc, "init_rel_error", STAT_MEAN, best / st->w0_norm);
        if (st->init_err[0] > 0) method_stats_add(acc, "init_error_vs_zero", STAT_MEAN, best / st->init_err[0]);
    }
}

int lora_init_errors(const linear_layer *L, double *err, int cap) {
    const lora_state *st = L->state;
    for (int i = 0; i < st->n_err && i < cap; i++) err[i] = st->init_err[i];
    return st->n_err;
}

void lora_get_factors(const linear_layer *L, float *W, float *A, float *B) {
    const lora_state *st = L->state;
    if (W) qmat_get(&st->W, W);
    if (A && st->g.r) memcpy(A, A_of(st), sizeof(float) * st->g.nA);
    if (B && st->g.r) memcpy(B, B_of(st), sizeof(float) * st->g.nB);
}

void lora_factors(linear_layer *L, float **A, float **B) {
    lora_state *st = L->state;
    *A = A_of(st);
    *B = B_of(st);
}

int lora_is_engine(const linear_method *m) { return m && m->forward == lora_forward; }

void lora_base_export(const linear_layer *L, float *W) { lora_get_factors(L, W, NULL, NULL); }

int lora_rank(const linear_layer *L) { return ((const lora_state *)L->state)->g.r; }

/* ---- --method lora ------------------------------------------------------------------------- */

static const method_option lora_options[] = {LORA_OPTIONS(lora_config, , 0)};
_Static_assert(sizeof(lora_config) <= METHOD_CONFIG_BYTES, "lora_config too large");

static lora_spec method_spec(const method_opts *o) {
    lora_config c;
    method_config_get(o, &c, sizeof c);
    return lora_spec_of(&c);
}

static int lora_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    const lora_spec sp = method_spec(o);
    return lora_engine_init(L, o, ini, &sp);
}

static void lora_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    const lora_spec sp = method_spec(p->o);
    lora_engine_plan(p, phase, s, &sp);
}

static double lora_paper_bytes(int out, int in, int proj, const method_opts *o) {
    const lora_spec sp = method_spec(o);
    return lora_engine_paper_bytes(out, in, proj, &sp);
}

static int lora_calibration(const method_opts *o) {
    const lora_spec sp = method_spec(o);
    return lora_spec_calibration(&sp);
}

const linear_method method_lora = {
    .name = "lora",
    .calibration = lora_calibration,
    .summary = "LoRA / QLoRA: frozen base W (NF4, int8, bf16 or fp32) plus s*B*A, A and B trained; zero (PEFT), LoftQ or QuAILoRA (calibrated) initialization",
    .options = lora_options,
    .n_options = sizeof lora_options / sizeof lora_options[0],
    .config_size = sizeof(lora_config),
    .init = lora_init,
    LORA_ENGINE_HOOKS,
    .plan = lora_plan,
    .paper_bytes = lora_paper_bytes,
};
