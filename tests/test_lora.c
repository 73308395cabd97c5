/* LoRA and ReLoRA (methods/lora.c, methods/relora.c) beyond the test over every method:
 *   - a few LoRA and ReLoRA steps against an independent PyTorch reference (tests/gen_lora_ref.py:
 *     autograd, torch.optim.AdamW, the merge, magnitude pruning with torch.quantile, the restarted
 *     warmup), two micro-batches per step, weight decay on;
 *   - LoftQ: its objective ||W0 - deq Q - s B A||_F does not increase from round to round and ends
 *     below zero init's ||W0 - deq Q(W0)||, with NF4 and int8 bases; the kept round is what the
 *     layer holds; the scale s is accounted for (the same error whatever alpha);
 *   - dropout: forward and dX against the explicit formula with the layer's mask, the keep rate,
 *     the mask fixed for a step and input and changing with the step, off outside a step;
 *   - ReLoRA: up to the begin_step after a merge step the layer is LoRA's bit for bit; that
 *     begin_step's merge leaves W_eff as it was (fp32 base) or re-quantizes it (NF4), B = 0 and a
 *     new kaiming A after it, once; a non-finite merge fails the step and changes nothing; the
 *     learning-rate factor; the trainer applies it;
 *   - checkpoint names: the base under the HF name, the adapters under PEFT's suffixes and shapes;
 *   - --target-modules: a projection outside it is its base alone (forward, dX, export, save and
 *     load, no trained state); the option's JSON form. */
#include "test.h"

#include "core/error.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "methods/lora.h"
#include "model/train.h"

#include <stdlib.h>
#include <unistd.h>

static const float B1 = 0.9f, B2 = 0.999f, EPS = 1e-6f;

static void set_opt(method_opts *o, const linear_method *m, const char *name, double v) {
    const method_option *opt = method_option_find(m, name);
    CHECK(opt != NULL, "%s has option --%s", m->name, name);
    if (opt) method_option_set(o, opt, v);
}

static void make(linear_layer *L, const linear_method *m, const method_opts *o, int out, int in, const float *W0,
                 const char *name) {
    memset(L, 0, sizeof *L);
    L->m = m;
    L->out = out;
    L->in = in;
    snprintf(L->name, sizeof L->name, "model.layers.0.%s", name);
    linear_init ini = {.W0 = W0};
    CHECK(m->init(L, o, &ini) == 0, "%s init: %s", m->name, loqt_last_error());
}

static double max_abs(const float *x, size_t n) {
    double a = 0;
    for (size_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

/* ---- the PyTorch reference ------------------------------------------------------------------ */


/* the largest error over the steps of A, B and W, each relative to its max |value| */
static double run_reference(const char *name) {
    size_t bytes = 0;
    unsigned char *buf = test_read_ref(&bytes, "lora_%s.bin", name);
    CHECK(buf != NULL, "missing reference lora_%s.bin: run tests/gen_lora_ref.py (make test does)", name);
    int32_t hd[8];
    float hf[4];
    if (!buf || bytes < sizeof hd + sizeof hf) {
        CHECK(0, "lora_%s.bin: too short", name);
        free(buf);
        return INFINITY;
    }
    memcpy(hd, buf, sizeof hd);
    memcpy(hf, buf + sizeof hd, sizeof hf);
    const int out = hd[0], in = hd[1], N = hd[2], steps = hd[3], r = hd[4], R = hd[5], warm = hd[6], reset = hd[7];
    const size_t n = (size_t)out * in, nA = (size_t)r * in, nB = (size_t)out * r;
    const int merges = R > 0 ? steps / R : 0;
    const size_t want = sizeof hd + sizeof hf +
                        sizeof(float) * (n + nA + (size_t)steps * (2 * (size_t)N * (in + out) + nA + nB + n) + merges * nA);
    CHECK(bytes == want, "lora_%s.bin: %zu bytes, the header implies %zu (regenerate it)", name, bytes, want);
    if (bytes != want) {
        free(buf);
        return INFINITY;
    }
    const linear_method *m = method_find(R > 0 ? "relora" : "lora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", r);
    set_opt(&o, m, "lora-alpha", hf[0]);
    set_opt(&o, m, "lora-dropout", 0);
    set_opt(&o, m, "base-bits", LORA_BASE_32);
    if (R > 0) {
        set_opt(&o, m, "relora-steps", R);
        set_opt(&o, m, "restart-warmup-steps", warm);
        set_opt(&o, m, "optimizer-reset", reset ? LORA_RESET_ZERO : LORA_RESET_PRUNE);
        set_opt(&o, m, "prune-ratio", hf[3]);
    }
    CHECK(method_config_validate(m, &o) == 0, "options: %s", loqt_last_error());
    const float *p = (const float *)(buf + sizeof hd + sizeof hf);
    const float *W0 = p, *A0 = W0 + n;
    p = A0 + nA;
    linear_layer L;
    make(&L, m, &o, out, in, W0, name);
    float *AB = malloc(sizeof(float) * (nA + nB)), *W = malloc(sizeof(float) * n);
    m->params_get(&L, AB);
    memcpy(AB, A0, sizeof(float) * nA); /* the reference's own kaiming draw */
    m->params_set(&L, AB);
    double worst = 0;
    m->begin_step(&L, 0);
    for (int s = 0; s < steps; s++) {
        const double scale = m->lr_scale ? m->lr_scale(&o, s) : 1.0;
        optim_hparams h = {.kind = OPTIM_ADAMW, .lr = (float)(hf[1] * scale), .beta1 = B1, .beta2 = B2, .eps = EPS,
                           .weight_decay = hf[2], .grad_scale = 1.0f, .t = s + 1};
        m->zero_grad(&L);
        for (int mb = 0; mb < 2; mb++) {
            const float *X = p, *dY = X + (size_t)N * in;
            m->backward(&L, X, dY, NULL, N, 0);
            p = dY + (size_t)N * out;
        }
        CHECK(m->end_step(&L, s) == 0, "end_step: %s", loqt_last_error());
        CHECK(m->step(&L, &h) == 0, "step: %s", loqt_last_error());
        /* the reference merges right after the update of step s = k R - 1, loqt at the start of
         * step s + 1 (every rank runs begin_step): compared after the next begin_step */
        m->begin_step(&L, s + 1);
        const float *wA = p, *wB = wA + nA, *wW = wB + nB;
        p = wW + n;
        if (R > 0 && (s + 1) % R == 0) { /* the merge drew its own A: take the reference's */
            m->params_get(&L, AB);
            CHECK(max_abs(AB + nA, nB) == 0, "%s step %d: B = 0 after the merge", name, s);
            memcpy(AB, p, sizeof(float) * nA);
            m->params_set(&L, AB);
            p += nA;
        }
        m->params_get(&L, AB);
        lora_get_factors(&L, W, NULL, NULL);
        worst = fmax(worst, max_diff(AB, wA, nA) / max_abs(wA, nA));
        if (max_abs(wB, nB) > 0) worst = fmax(worst, max_diff(AB + nA, wB, nB) / max_abs(wB, nB));
        worst = fmax(worst, max_diff(W, wW, n) / max_abs(wW, n));
    }
    m->free(&L);
    free(AB);
    free(W);
    free(buf);
    return worst;
}

static void test_matches_pytorch_reference(void) {
    const char *cases[4] = {"lora_tall", "lora_wide", "relora_prune", "relora_reset"};
    for (int i = 0; i < 4; i++) {
        const double e = run_reference(cases[i]);
        printf("    %s: max error %.3g of max|value|\n", cases[i], e);
        /* fp32 arithmetic against a float64 reference over 5 to 8 Adam steps: 1e-4 of max |value|
         * (3e-7 for LoRA, 2e-6 for ReLoRA with pruning measured; without the pruning or the
         * restarted warmup the error is of order 1) */
        CHECK(e < 1e-4, "%s: max error %.3g of max|value| (tolerance 1e-4)", cases[i], e);
    }
}

/* ---- LoftQ ---------------------------------------------------------------------------------- */

/* a weight with the structure of a trained one: a decaying spectrum plus noise, and a few
 * outlier columns (what makes block quantization lossy) */
static float *structured_weight(int out, int in, uint64_t seed) {
    float *W = malloc(sizeof(float) * out * in);
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) {
            double v = 0.01 * rng_normal(seed, 1, (uint64_t)i * in + j);
            for (int k = 0; k < 6; k++)
                v += 0.05 / (1 + k) * rng_normal(seed, 2, (uint64_t)k * out + i) * rng_normal(seed, 3, (uint64_t)k * in + j);
            if (j % 17 == 3) v *= 4;
            W[(size_t)i * in + j] = (float)v;
        }
    return W;
}

static void loftq_case(int base_bits, int svd, double alpha, int out, int in, double *final_err) {
    const linear_method *m = method_find("lora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", 8);
    set_opt(&o, m, "lora-alpha", alpha);
    set_opt(&o, m, "base-bits", base_bits);
    set_opt(&o, m, "init", LORA_INIT_LOFTQ);
    set_opt(&o, m, "loftq-iterations", 6);
    set_opt(&o, m, "svd", svd);
    float *W0 = structured_weight(out, in, 77), *W = malloc(sizeof(float) * out * in);
    linear_layer L;
    make(&L, m, &o, out, in, W0, "self_attn.q_proj");
    double err[LORA_LOFTQ_MAX + 1];
    const int ne = lora_init_errors(&L, err, LORA_LOFTQ_MAX + 1);
    CHECK(ne == 7, "LoftQ: %d objective values (want zero init + 6 rounds)", ne);
    const char *what = base_bits == LORA_BASE_4 ? "NF4" : "int8";
    CHECK(err[1] < err[0], "LoftQ %s: round 1 %.6g not below zero init %.6g", what, err[1], err[0]);
    double best = err[1];
    for (int k = 2; k < ne; k++) {
        /* exact SVD: the iterate never gets worse (tolerance 1e-6 relative, float rounding) */
        if (svd == LORA_SVD_EXACT)
            CHECK(err[k] <= err[k - 1] * (1 + 1e-6), "LoftQ %s round %d: objective %.8g above round %d's %.8g", what, k,
                  err[k], k - 1, err[k - 1]);
        best = fmin(best, err[k]);
    }
    /* what the layer holds is the best round: ||W0 - export|| */
    m->export_dense(&L, W);
    double e2 = 0;
    for (size_t i = 0; i < (size_t)out * in; i++) e2 += ((double)W0[i] - W[i]) * ((double)W0[i] - W[i]);
    CHECK(fabs(sqrt(e2) - best) <= 1e-4 * best, "LoftQ %s: the layer's error %.8g, the best round's %.8g (1e-4 relative)",
          what, sqrt(e2), best);
    *final_err = sqrt(e2);
    printf("    LoftQ %s (%s SVD, alpha %g): zero init %.5f, rounds", what, svd == LORA_SVD_EXACT ? "exact" : "randomized",
           alpha, err[0]);
    for (int k = 1; k < ne; k++) printf(" %.5f", err[k]);
    printf("\n");
    m->free(&L);
    free(W0);
    free(W);
}

static void test_loftq_objective_decreases(void) {
    double e4, e8, e4a, e4r;
    loftq_case(LORA_BASE_4, LORA_SVD_EXACT, 16, 96, 64, &e4);
    loftq_case(LORA_BASE_8, LORA_SVD_EXACT, 16, 96, 64, &e8);
    loftq_case(LORA_BASE_4, LORA_SVD_RANDOMIZED, 16, 96, 64, &e4r);
    /* the scale is accounted for: alpha = 1 (s = 1/8) gives the same base and s B A as 16 (s = 2) */
    loftq_case(LORA_BASE_4, LORA_SVD_EXACT, 1, 96, 64, &e4a);
    CHECK(fabs(e4a - e4) <= 1e-4 * e4, "LoftQ: error %.8g with alpha 1, %.8g with alpha 16", e4a, e4);
    CHECK(e8 < e4, "LoftQ: int8 base's error %.6g below NF4's %.6g", e8, e4);
}

/* ---- QuAILoRA -------------------------------------------------------------------------------- */

/* Calibration inputs with strongly anisotropic statistics, as a trained model's activations have:
 * channel scales falling over two orders of magnitude, a few outlier channels 10x larger, and
 * correlated channels (a shared factor). */
static float *anisotropic_inputs(int N, int in, uint64_t seed) {
    float *X = malloc(sizeof(float) * (size_t)N * in);
    for (int t = 0; t < N; t++) {
        const double common = rng_normal(seed, 5, (uint64_t)t);
        for (int j = 0; j < in; j++) {
            const double sc = exp(-4.6 * j / in) * (j % 13 == 5 ? 10.0 : 1.0);
            X[(size_t)t * in + j] = (float)(sc * (rng_normal(seed, 6, (uint64_t)t * in + j) + 0.5 * common));
        }
    }
    return X;
}

/* H = X^T X in double, as floats */
static float *gram_of(const float *X, int N, int in) {
    float *H = malloc(sizeof(float) * (size_t)in * in);
    for (int a = 0; a < in; a++)
        for (int b = 0; b < in; b++) {
            double v = 0;
            for (int t = 0; t < N; t++) v += (double)X[(size_t)t * in + a] * X[(size_t)t * in + b];
            H[(size_t)a * in + b] = (float)v;
        }
    return H;
}

/* ||X (W0 - W_eff)^T||_F^2, in double from the exported W_eff (no ridge) */
static double calibrated_error(const linear_layer *L, const float *W0, const float *X, int N) {
    const int out = L->out, in = L->in;
    float *W = malloc(sizeof(float) * (size_t)out * in);
    L->m->export_dense(L, W);
    double e = 0;
    for (int t = 0; t < N; t++)
        for (int i = 0; i < out; i++) {
            double v = 0;
            for (int j = 0; j < in; j++) v += (double)X[(size_t)t * in + j] * ((double)W0[(size_t)i * in + j] - W[(size_t)i * in + j]);
            e += v * v;
        }
    free(W);
    return e;
}

static void quailora_opts(method_opts *o, const linear_method *m, int init, int iters, double ridge) {
    method_opts_defaults(o, m);
    set_opt(o, m, "rank", 8);
    set_opt(o, m, "lora-alpha", 16);
    set_opt(o, m, "base-bits", LORA_BASE_4);
    set_opt(o, m, "init", init);
    set_opt(o, m, "loftq-iterations", 5);
    set_opt(o, m, "quailora-iterations", iters);
    set_opt(o, m, "quailora-ridge", ridge);
    set_opt(o, m, "svd", LORA_SVD_EXACT);
}

static void make_calibrated(linear_layer *L, const linear_method *m, const method_opts *o, int out, int in,
                            const float *W0, const float *H, long rows) {
    memset(L, 0, sizeof *L);
    L->m = m;
    L->out = out;
    L->in = in;
    snprintf(L->name, sizeof L->name, "model.layers.0.mlp.up_proj");
    linear_init ini = {.W0 = W0, .gram = H, .gram_rows = rows};
    CHECK(m->init(L, o, &ini) == 0, "%s init: %s", m->name, loqt_last_error());
}

/* (a) both QuAILoRA inits lower the calibrated error below zero init's and LoftQ's on a layer
 * with anisotropic inputs; (b) the ALS objective never increases; (c) ALS converges to the
 * closed form, which is the optimum. */
static void test_quailora_objective(void) {
    const linear_method *m = method_find("lora");
    const int out = 96, in = 64, N = 512;
    float *W0 = structured_weight(out, in, 77), *X = anisotropic_inputs(N, in, 5), *H = gram_of(X, N, in);
    const int inits[4] = {LORA_INIT_ZERO, LORA_INIT_LOFTQ, LORA_INIT_QUAILORA, LORA_INIT_QUAILORA_CLOSED};
    double f[4];
    for (int k = 0; k < 4; k++) {
        method_opts o;
        quailora_opts(&o, m, inits[k], 10, 1e-4);
        linear_layer L;
        make_calibrated(&L, m, &o, out, in, W0, H, N);
        f[k] = calibrated_error(&L, W0, X, N);
        m->free(&L);
    }
    printf("    ||X (W0 - W_eff)^T||^2 on anisotropic inputs (NF4, r 8, ridge 1e-4): zero %.5g, loftq %.5g, "
           "quailora (10 rounds) %.5g, quailora-closed %.5g\n", f[0], f[1], f[2], f[3]);
    /* margins: measured ratios are printed above; asserted with room */
    CHECK(f[2] < 0.8 * f[1] && f[3] < 0.8 * f[1], "QuAILoRA %.5g / closed %.5g not 20%% below LoftQ's %.5g", f[2], f[3], f[1]);
    CHECK(f[1] < f[0] && f[2] < 0.5 * f[0], "LoftQ %.5g, QuAILoRA %.5g against zero init %.5g", f[1], f[2], f[0]);
    CHECK(f[3] <= f[2] * (1 + 1e-4), "the closed form %.8g above ALS's %.8g", f[3], f[2]);

    /* (b) and (c): many rounds; the layer's own objective values (with the ridge) */
    method_opts o;
    quailora_opts(&o, m, LORA_INIT_QUAILORA, 300, 1e-4);
    linear_layer L;
    make_calibrated(&L, m, &o, out, in, W0, H, N);
    static double err[LORA_QUAILORA_MAX + 2];
    const int ne = lora_init_errors(&L, err, LORA_QUAILORA_MAX + 2);
    CHECK(ne == 302, "QuAILoRA: %d objective values (zero init, the SVD start, 300 rounds)", ne);
    /* f = c0 - 2 s <B^T E, A H> + s^2 <B^T B, A H A^T> from fp32 products: near convergence its
     * rounding is of the order of 1e-7 of the cancelling terms' size c0 = err[0]^2 (measured
     * 1.8e-7), so the check allows 1e-6 c0 */
    int up = 0;
    const double tol = 1e-6 * err[0] * err[0];
    for (int k = 2; k < ne; k++)
        if (!(err[k] * err[k] <= err[k - 1] * err[k - 1] + tol)) {
            if (!up++) CHECK(0, "ALS round %d: objective %.10g above the previous %.10g", k - 1, err[k], err[k - 1]);
        }
    CHECK(up == 0, "ALS objective increased in %d rounds", up);
    method_opts oc;
    quailora_opts(&oc, m, LORA_INIT_QUAILORA_CLOSED, 0, 1e-4);
    linear_layer C;
    make_calibrated(&C, m, &oc, out, in, W0, H, N);
    double ec[4];
    CHECK(lora_init_errors(&C, ec, 4) == 2, "closed form: zero init and one value");
    printf("    calibrated objective with the ridge: zero %.6g, SVD start %.6g, ALS 1/10/300 rounds %.6g %.6g %.6g, "
           "closed form %.6g\n", err[0], err[1], err[2], err[11], err[ne - 1], ec[1]);
    CHECK(fabs(err[ne - 1] - ec[1]) <= 1e-4 * ec[1], "ALS after 300 rounds %.8g, closed form %.8g (1e-4 relative)",
          err[ne - 1], ec[1]);
    CHECK(ec[1] <= err[ne - 1] * (1 + 1e-5), "the closed form %.8g is not below ALS's %.8g", ec[1], err[ne - 1]);
    /* the layer's objective is the one computed from its export (plus the ridge term) */
    const double fl = calibrated_error(&C, W0, X, N);
    CHECK(fl <= ec[1] * ec[1] * (1 + 1e-4), "the closed form's exported error %.8g above its objective %.8g", fl,
          ec[1] * ec[1]);
    m->free(&L);
    m->free(&C);
    free(W0);
    free(X);
    free(H);
}

/* s B A of a layer: its export minus its base */
static void lowrank_of(const linear_layer *L, float *M) {
    const size_t n = (size_t)L->out * L->in;
    float *W = malloc(sizeof(float) * n);
    L->m->export_dense(L, M);
    lora_base_export(L, W);
    for (size_t i = 0; i < n; i++) M[i] -= W[i];
    free(W);
}

/* (c) the closed form against an independent float64 PyTorch computation (tests/gen_quailora_ref.py:
 * Cholesky, SVD and inverse of torch.linalg), and ALS converging to that optimum */
static void test_quailora_matches_pytorch(void) {
    size_t bytes = 0;
    unsigned char *buf = test_read_ref(&bytes, "quailora_ref.bin");
    CHECK(buf != NULL, "missing reference quailora_ref.bin: run tests/gen_quailora_ref.py (make test does)");
    if (!buf) return;
    int32_t hd[3];
    float hf[2];
    memcpy(hd, buf, sizeof hd);
    memcpy(hf, buf + sizeof hd, sizeof hf);
    const int out = hd[0], in = hd[1], r = hd[2];
    const size_t n = (size_t)out * in;
    const size_t want = sizeof hd + sizeof hf + sizeof(float) * (2 * n + (size_t)in * in) + 2 * sizeof(double);
    CHECK(bytes == want, "quailora_ref.bin: %zu bytes, the header implies %zu (regenerate it)", bytes, want);
    if (bytes != want) {
        free(buf);
        return;
    }
    const float *W0 = (const float *)(buf + sizeof hd + sizeof hf), *G = W0 + n, *Mref = G + (size_t)in * in;
    double fref[2];
    memcpy(fref, Mref + n, sizeof fref);
    const linear_method *m = method_find("lora");
    float *M = malloc(sizeof(float) * n);
    const int inits[2] = {LORA_INIT_QUAILORA_CLOSED, LORA_INIT_QUAILORA};
    for (int k = 0; k < 2; k++) {
        method_opts o;
        quailora_opts(&o, m, inits[k], 300, hf[1]);
        set_opt(&o, m, "rank", r);
        set_opt(&o, m, "lora-alpha", hf[0]);
        linear_layer L;
        make_calibrated(&L, m, &o, out, in, W0, G, 400);
        lowrank_of(&L, M);
        static double err[LORA_QUAILORA_MAX + 2];
        const int ne = lora_init_errors(&L, err, LORA_QUAILORA_MAX + 2);
        double fbest = INFINITY;
        for (int i = 1; i < ne; i++) fbest = fmin(fbest, err[i] * err[i]);
        const double dm = max_diff(M, Mref, n) / max_abs(Mref, n);
        const char *what = k ? "ALS (300 rounds)" : "closed form";
        printf("    %s against PyTorch: s B A within %.2g of max |s B A|; objective %.10g (PyTorch %.10g), zero init %.10g "
               "(%.10g)\n", what, dm, fbest, fref[0], err[0] * err[0], fref[1]);
        /* fp32 factors and products (E L, L^-1 by back substitution in double on fp32 L):
         * measured 7e-7 (closed) and 5e-6 (ALS after 300 rounds, which converges towards it) */
        CHECK(dm <= (k ? 1e-4 : 2e-5), "%s: s B A differs from PyTorch's by %.3g of max |value|", what, dm);
        CHECK(fabs(fbest - fref[0]) <= 1e-4 * fref[0], "%s: objective %.10g, PyTorch's optimum %.10g (1e-4 relative)", what,
              fbest, fref[0]);
        CHECK(fabs(err[0] * err[0] - fref[1]) <= 1e-5 * fref[1], "zero init's objective %.10g, PyTorch's %.10g", err[0] * err[0],
              fref[1]);
        m->free(&L);
    }
    free(M);
    free(buf);
}

/* ---- dropout -------------------------------------------------------------------------------- */

static void test_dropout(void) {
    const int out = 20, in = 24, N = 64;
    const double p = 0.3;
    const linear_method *m = method_find("lora");
    method_opts o;
    method_opts_defaults(&o, m);
    o.seed = 9;
    set_opt(&o, m, "rank", 4);
    set_opt(&o, m, "lora-dropout", p);
    set_opt(&o, m, "base-bits", LORA_BASE_32);
    float *W0 = structured_weight(out, in, 5);
    linear_layer L;
    make(&L, m, &o, out, in, W0, "mlp.up_proj");
    const int r = lora_rank(&L);
    const size_t nA = (size_t)r * in, nB = (size_t)out * r;
    float *AB = malloc(sizeof(float) * (nA + nB));
    for (size_t i = 0; i < nA + nB; i++) AB[i] = 0.3f * rng_normal(4, 4, i);
    m->params_set(&L, AB);
    float *X = malloc(sizeof(float) * N * in), *dY = malloc(sizeof(float) * N * out);
    for (int i = 0; i < N * in; i++) X[i] = rng_normal(6, 1, (uint64_t)i);
    for (int i = 0; i < N * out; i++) dY[i] = rng_normal(6, 2, (uint64_t)i);
    float *Y = malloc(sizeof(float) * N * out), *Yr = malloc(sizeof(float) * N * out);
    float *dX = malloc(sizeof(float) * N * in), *dXr = malloc(sizeof(float) * N * in);
    float *Xd = malloc(sizeof(float) * N * in), *T = malloc(sizeof(float) * N * r), *U = malloc(sizeof(float) * N * in);
    unsigned char *keep = malloc((size_t)N * in), *keep2 = malloc((size_t)N * in);
    const float s = (float)(32.0 / 4), inv = (float)(1.0 / (1.0 - p));
    m->begin_step(&L, 3);
    lora_dropout_mask(&L, X, N, keep);
    long kept = 0;
    for (int i = 0; i < N * in; i++) kept += keep[i];
    /* keep rate 1 - p within 5 sigma of a binomial */
    const double nn = (double)N * in, sigma = sqrt(nn * p * (1 - p));
    CHECK(fabs(kept - nn * (1 - p)) <= 5 * sigma, "dropout keeps %ld of %.0f (expected %.0f +- %.0f)", kept, nn, nn * (1 - p), 5 * sigma);
    /* explicit formula: Y = X W^T + s (M o X / (1 - p)) A^T B^T, dX = dY W + s M o (dY B A) / (1 - p) */
    for (int i = 0; i < N * in; i++) Xd[i] = keep[i] ? X[i] * inv : 0.0f;
    gemm(false, true, N, out, in, 1.0f, X, in, W0, in, 0.0f, Yr, out);
    gemm(false, true, N, r, in, 1.0f, Xd, in, AB, in, 0.0f, T, r);
    gemm(false, true, N, out, r, s, T, r, AB + nA, r, 1.0f, Yr, out);
    gemm(false, false, N, in, out, 1.0f, dY, out, W0, in, 0.0f, dXr, in);
    gemm(false, false, N, r, out, 1.0f, dY, out, AB + nA, r, 0.0f, T, r);
    gemm(false, false, N, in, r, 1.0f, T, r, AB, in, 0.0f, U, in);
    for (int i = 0; i < N * in; i++) dXr[i] += keep[i] ? s * inv * U[i] : 0.0f;
    m->forward(&L, X, Y, N);
    m->backward(&L, X, dY, dX, N, 0);
    CHECK(max_diff(Y, Yr, (size_t)N * out) <= 1e-5 * max_abs(Yr, (size_t)N * out), "dropout forward off by %.3g",
          max_diff(Y, Yr, (size_t)N * out));
    CHECK(max_diff(dX, dXr, (size_t)N * in) <= 1e-5 * max_abs(dXr, (size_t)N * in), "dropout dX off by %.3g",
          max_diff(dX, dXr, (size_t)N * in));
    /* the same step and input: the same mask; another step: another */
    lora_dropout_mask(&L, X, N, keep2);
    CHECK(!memcmp(keep, keep2, (size_t)N * in), "the mask changed within a step");
    m->begin_step(&L, 4);
    lora_dropout_mask(&L, X, N, keep2);
    long same = 0;
    for (int i = 0; i < N * in; i++) same += keep[i] == keep2[i];
    CHECK(same < N * in * 0.7, "step 4's mask agrees with step 3's on %ld of %d (independent: ~%.0f)", same, N * in,
          nn * (p * p + (1 - p) * (1 - p)));
    /* outside a step (evaluation) the adapters see x itself */
    CHECK(m->end_step(&L, 4) == 0, "end_step");
    gemm(false, true, N, out, in, 1.0f, X, in, W0, in, 0.0f, Yr, out);
    gemm(false, true, N, r, in, 1.0f, X, in, AB, in, 0.0f, T, r);
    gemm(false, true, N, out, r, s, T, r, AB + nA, r, 1.0f, Yr, out);
    m->forward(&L, X, Y, N);
    CHECK(max_diff(Y, Yr, (size_t)N * out) <= 1e-5 * max_abs(Yr, (size_t)N * out), "forward outside a step: off by %.3g",
          max_diff(Y, Yr, (size_t)N * out));
    m->free(&L);
    free(W0), free(AB), free(X), free(dY), free(Y), free(Yr), free(dX), free(dXr), free(Xd), free(T), free(U);
    free(keep), free(keep2);
}

/* ---- ReLoRA ----------------------------------------------------------------------------------- */

static void test_magnitude_prune(void) {
    /* |x| sorted: 0.1 .. 1.0; the 0.5 quantile interpolates between 0.5 and 0.6 (0.55) */
    float x[10] = {-0.3f, 0.9f, 0.1f, -1.0f, 0.5f, 0.6f, -0.7f, 0.2f, 0.8f, -0.4f}, sorted[10];
    lora_magnitude_prune(x, 10, 0.5, sorted);
    const float want[10] = {0, 0.9f, 0, -1.0f, 0, 0.6f, -0.7f, 0, 0.8f, 0};
    CHECK(!memcmp(x, want, sizeof x), "prune 0.5: kept the wrong entries");
    float y[4] = {2, -2, 2, 1};
    lora_magnitude_prune(y, 4, 0.99, sorted); /* threshold 2: ties at the threshold are pruned too */
    CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0 && y[3] == 0, "prune 0.99 of {2,-2,2,1}: all zero");
}

static void test_relora_lr_scale(void) {
    const linear_method *m = method_find("relora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "relora-steps", 10);
    set_opt(&o, m, "restart-warmup-steps", 4);
    const double want[25] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1, 0.25, 0.5, 0.75, 1, 1};
    for (int s = 0; s < 25; s++) CHECK(m->lr_scale(&o, s) == want[s], "lr_scale(%d) = %g, want %g", s, m->lr_scale(&o, s), want[s]);
    /* the merges after steps 9 and 19 happen in begin_step of steps 10 and 20 */
    CHECK(m->next_refresh(&o, 0) == 10 && m->next_refresh(&o, 9) == 10 && m->next_refresh(&o, 10) == 20,
          "merges at steps 10, 10, 20 (got %ld, %ld, %ld)", m->next_refresh(&o, 0), m->next_refresh(&o, 9),
          m->next_refresh(&o, 10));
    /* the trainer multiplies its schedule by the factor */
    llama_config c = {"tiny", 32, 64, 2, 4, 4, 96, 64, 1e-6, 10000.0, 0};
    set_opt(&o, m, "rank", 4);
    set_opt(&o, m, "relora-steps", 2);
    set_opt(&o, m, "restart-warmup-steps", 2);
    llama_model md;
    CHECK(llama_create(&md, &c, m, &o, 3) == 0, "create: %s", loqt_last_error());
    llama_set_batch(&md, 1, 8);
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = 0.01;
    h.sched.total_steps = 5;
    int32_t in[8], tg[8];
    for (int i = 0; i < 8; i++) in[i] = i * 7 % 96, tg[i] = (i * 7 + 1) % 96;
    const int32_t *ins[1] = {in}, *tgs[1] = {tg};
    for (long s = 0; s < 5; s++) {
        step_result r;
        CHECK(train_step(&md, s, ins, tgs, 1, &h, &r) == 0, "step: %s", loqt_last_error());
        const double w = sched_lr(&h.sched, s) * m->lr_scale(&o, s);
        CHECK(fabs(r.lr - w) <= 1e-7 * w, "step %ld: lr %.9g, schedule x factor %.9g", s, r.lr, w);
    }
    llama_free(&md);
}

/* A ReLoRA layer beside a LoRA layer with the same seed, name and options: up to the merge they
 * are the same layer; the merge keeps W_eff (fp32 base) or re-quantizes it (NF4), B = 0 and A is
 * a new kaiming draw after it. */
static void relora_merge_case(int base_bits) {
    const int out = 32, in = 24, N = 8;
    const linear_method *ml = method_find("lora"), *mr = method_find("relora");
    method_opts ol, orr;
    method_opts_defaults(&ol, ml);
    method_opts_defaults(&orr, mr);
    ol.seed = orr.seed = 2;
    set_opt(&ol, ml, "rank", 4), set_opt(&orr, mr, "rank", 4);
    set_opt(&ol, ml, "base-bits", base_bits), set_opt(&orr, mr, "base-bits", base_bits);
    set_opt(&ol, ml, "lora-dropout", 0), set_opt(&orr, mr, "lora-dropout", 0);
    set_opt(&orr, mr, "relora-steps", 2);
    linear_layer La, Lb;
    make(&La, ml, &ol, out, in, NULL, "mlp.gate_proj");
    make(&Lb, mr, &orr, out, in, NULL, "mlp.gate_proj");
    float *X = malloc(sizeof(float) * N * in), *dY = malloc(sizeof(float) * N * out);
    float *Wa = malloc(sizeof(float) * out * in), *Wb = malloc(sizeof(float) * out * in);
    const size_t np = ml->params_get(&La, NULL), nA = (size_t)4 * in;
    float *ABa = malloc(sizeof(float) * np), *ABb = malloc(sizeof(float) * np);
    for (long s = 0; s < 2; s++) {
        for (int i = 0; i < N * in; i++) X[i] = rng_normal(8, (uint64_t)s, (uint64_t)i);
        for (int i = 0; i < N * out; i++) dY[i] = rng_normal(9, (uint64_t)s, (uint64_t)i);
        optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 0.01f, .beta1 = B1, .beta2 = B2, .eps = EPS, .grad_scale = 1.0f, .t = s + 1};
        linear_layer *Ls[2] = {&La, &Lb};
        for (int k = 0; k < 2; k++) {
            Ls[k]->m->zero_grad(Ls[k]);
            Ls[k]->m->begin_step(Ls[k], s);
            Ls[k]->m->backward(Ls[k], X, dY, NULL, N, 0);
            Ls[k]->m->end_step(Ls[k], s);
            CHECK(Ls[k]->m->step(Ls[k], &h) == 0, "step: %s", loqt_last_error());
        }
    }
    /* after the update of the merge step (s = 1) and before the next begin_step, which merges:
     * still the LoRA layer, bit for bit (what a checkpoint holds, and an export at the end) */
    ml->export_dense(&La, Wa);
    mr->export_dense(&Lb, Wb);
    CHECK(max_diff(Wa, Wb, (size_t)out * in) == 0, "base %d: W_eff before the merge equals LoRA's (off by %.3g)",
          base_bits, max_diff(Wa, Wb, (size_t)out * in));
    method_stats st = {0};
    mr->stats(&Lb, &st);
    CHECK(st.n >= 1 && !strcmp(st.s[0].name, "merges") && method_stats_value(&st, 0) == 0, "no merge before step 2's begin_step");
    ml->begin_step(&La, 2);
    mr->begin_step(&Lb, 2);
    mr->begin_step(&Lb, 2); /* a repeated begin_step does not merge again */
    ml->export_dense(&La, Wa);
    mr->export_dense(&Lb, Wb);
    ml->params_get(&La, ABa);
    mr->params_get(&Lb, ABb);
    const double scale = max_abs(Wa, (size_t)out * in), e = max_diff(Wa, Wb, (size_t)out * in) / scale;
    /* fp32: the merge only moves s B A into W (rounding); NF4: W_eff re-quantized, within half the
     * widest gap of the code book (0.139 of a block's absmax <= max|W|) */
    const double tol = base_bits == LORA_BASE_32 ? 1e-6 : 0.139;
    CHECK(e <= tol, "base %d: W_eff after the merge off by %.3g of max|W| (tolerance %g)", base_bits, e, tol);
    CHECK(max_abs(ABb + nA, np - nA) == 0, "B = 0 after the merge");
    double bound = 1.0 / sqrt((double)in), differs = 0;
    for (size_t i = 0; i < nA; i++) differs += ABa[i] != ABb[i];
    CHECK(max_abs(ABb, nA) <= bound && max_abs(ABb, nA) > 0.5 * bound, "new A within the kaiming bound %g (max %g)",
          bound, max_abs(ABb, nA));
    CHECK(differs == (double)nA, "new A: %.0f of %zu values differ from the trained A", differs, nA);
    memset(&st, 0, sizeof st);
    mr->stats(&Lb, &st);
    CHECK(st.n >= 1 && !strcmp(st.s[0].name, "merges") && method_stats_value(&st, 0) == 1, "one merge in the statistics");
    ml->free(&La);
    mr->free(&Lb);
    free(X), free(dY), free(Wa), free(Wb), free(ABa), free(ABb);
}

/* A merge whose W + s B A is not finite (B overflowed): the step fails with an error naming the
 * layer, and the layer keeps its base and adapters (nothing half-merged). */
static void test_relora_merge_not_finite(void) {
    const int out = 16, in = 8;
    const linear_method *m = method_find("relora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", 2);
    set_opt(&o, m, "relora-steps", 1);
    set_opt(&o, m, "base-bits", LORA_BASE_4);
    linear_layer L;
    make(&L, m, &o, out, in, NULL, "self_attn.q_proj");
    const size_t np = m->params_get(&L, NULL);
    float *AB = malloc(sizeof(float) * np), *AB1 = malloc(sizeof(float) * np);
    float *W0 = malloc(sizeof(float) * out * in), *W1 = malloc(sizeof(float) * out * in);
    m->params_get(&L, AB);
    for (size_t i = (size_t)2 * in; i < np; i++) AB[i] = 3e38f; /* B: s B A overflows */
    m->params_set(&L, AB);
    lora_get_factors(&L, W0, NULL, NULL);
    m->begin_step(&L, 1);
    CHECK(m->end_step(&L, 1) != 0 && strstr(loqt_last_error(), "self_attn.q_proj") &&
              strstr(loqt_last_error(), "not finite"),
          "a non-finite merge fails the step with the layer's name (got: %s)", loqt_last_error());
    lora_get_factors(&L, W1, NULL, NULL);
    m->params_get(&L, AB1);
    CHECK(!memcmp(W0, W1, sizeof(float) * out * in) && !memcmp(AB, AB1, sizeof(float) * np),
          "the failed merge left the base and the adapters as they were");
    m->free(&L);
    free(AB), free(AB1), free(W0), free(W1);
}

static void test_relora_merge(void) {
    relora_merge_case(LORA_BASE_32);
    relora_merge_case(LORA_BASE_4);
}

/* ---- checkpoint names ----------------------------------------------------------------------- */

static void names_case(int base_bits) {
    const linear_method *m = method_find("lora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", 4);
    set_opt(&o, m, "base-bits", base_bits);
    linear_layer L;
    make(&L, m, &o, 40, 24, NULL, "self_attn.v_proj");
    char dir[256], path[300];
    CHECK(test_make_tmpdir(dir, sizeof dir, "lora") == 0, "tmpdir");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_writer *wm = st_writer_new(), *ws = st_writer_new();
    m->save(&L, wm, ws);
    CHECK(st_writer_write(wm, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(wm);
    st_writer_free(ws);
    st_file f;
    CHECK(st_open(&f, path) == 0, "open: %s", loqt_last_error());
    const st_tensor *a = st_find(&f, "model.layers.0.self_attn.v_proj.lora_A.weight");
    const st_tensor *b = st_find(&f, "model.layers.0.self_attn.v_proj.lora_B.weight");
    CHECK(a && a->ndim == 2 && a->shape[0] == 4 && a->shape[1] == 24, "lora_A.weight: r x in = 4 x 24");
    CHECK(b && b->ndim == 2 && b->shape[0] == 40 && b->shape[1] == 4, "lora_B.weight: out x r = 40 x 4");
    const st_tensor *w = st_find(&f, "model.layers.0.self_attn.v_proj.weight");
    if (base_bits == LORA_BASE_16)
        CHECK(w && w->dtype == ST_BF16 && w->shape[0] == 40 && w->shape[1] == 24, "16-bit base under the HF name, BF16 [40, 24]");
    else
        CHECK(!w && st_find(&f, "model.layers.0.self_attn.v_proj.weight.nf4_codes"), "NF4 base: codes under <name>.weight.nf4_codes");
    st_close(&f);
    m->free(&L);
    unlink(path);
    rmdir(dir);
}

static void test_checkpoint_names(void) {
    names_case(LORA_BASE_16);
    names_case(LORA_BASE_4);
}

/* ---- --target-modules ---------------------------------------------------------------------- */

/* The option as checkpoint JSON: written as the names, read back from names or "all"; an empty
 * list or name (a trailing comma), an unknown name or a number is an error. */
static void target_modules_json(const linear_method *m) {
    method_opts o;
    method_opts_defaults(&o, m);
    const method_option *opt = method_option_find(m, "target-modules");
    CHECK(opt && (int)method_option_get(&o, opt) == LORA_ALL_TARGETS, "%s: --target-modules defaults to all", m->name);
    if (!opt) return;
    method_option_set(&o, opt, 1 << 0 | 1 << 2);
    char *js = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&js, &len);
    method_config_write_json(m, &o, f);
    fclose(f);
    CHECK(strstr(js, "\"target_modules\": \"q_proj,v_proj\"") != NULL, "%s: JSON holds the names: %s", m->name, js);
    method_opts back;
    method_opts_defaults(&back, m);
    CHECK(method_config_parse_json(m, &back, js) == 0 && (int)method_option_get(&back, opt) == 5,
          "%s: q_proj,v_proj reads back", m->name);
    free(js);
    CHECK(method_config_parse_json(m, &back, "{\"target_modules\": \"all\"}") == 0 &&
          (int)method_option_get(&back, opt) == LORA_ALL_TARGETS, "%s: \"all\" is every projection", m->name);
    const char *bad[] = {"{\"target_modules\": \"\"}", "{\"target_modules\": \"q_proj,wq\"}",
                         "{\"target_modules\": 5}", "{\"target_modules\": \"q_proj,\"}"};
    for (int i = 0; i < 4; i++)
        CHECK(method_config_parse_json(m, &back, bad[i]) != 0 && strstr(loqt_last_error(), "target_modules"),
              "%s: %s refused, naming the key (%s)", m->name, bad[i], loqt_last_error());
}

/* A projection outside --target-modules (k_proj of q_proj,v_proj) is its frozen base alone:
 * forward, dX and the export are the base's bit for bit (fp32 base, the same GEMMs), nothing is
 * trained or saved beside the base, and q_proj of the same options keeps its adapters. */
static void test_target_modules(void) {
    target_modules_json(method_find("lora"));
    target_modules_json(method_find("relora"));
    const linear_method *m = method_find("lora");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", 4);
    set_opt(&o, m, "base-bits", LORA_BASE_32);
    set_opt(&o, m, "lora-dropout", 0.1);
    set_opt(&o, m, "target-modules", 1 << 0 | 1 << 2);
    const int out = 24, in = 16, N = 5;
    float *W0 = structured_weight(out, in, 3), X[5 * 16], dY[5 * 24], Y[5 * 24], dX[5 * 16], ref[5 * 24], W[24 * 16];
    for (int i = 0; i < N * in; i++) X[i] = rng_normal(8, 1, (uint64_t)i);
    for (int i = 0; i < N * out; i++) dY[i] = rng_normal(8, 2, (uint64_t)i);
    linear_layer K, Q;
    memset(&K, 0, sizeof K);
    K.m = m, K.out = out, K.in = in, K.proj = 1;
    snprintf(K.name, sizeof K.name, "model.layers.0.self_attn.k_proj");
    linear_init ini = {.W0 = W0};
    CHECK(m->init(&K, &o, &ini) == 0, "init: %s", loqt_last_error());
    make(&Q, m, &o, out, in, W0, "self_attn.q_proj");
    CHECK(lora_rank(&K) == 0 && lora_rank(&Q) == 4, "r: k_proj %d (want 0), q_proj %d (want 4)", lora_rank(&K), lora_rank(&Q));
    m->begin_step(&K, 0);
    m->forward(&K, X, Y, N);
    gemm(false, true, N, out, in, 1.0f, X, in, W0, in, 0.0f, ref, out);
    CHECK(max_diff(Y, ref, (size_t)N * out) == 0, "k_proj forward is X W0^T: off by %g", max_diff(Y, ref, (size_t)N * out));
    m->backward(&K, X, dY, dX, N, 0);
    float dref[5 * 16];
    gemm(false, false, N, in, out, 1.0f, dY, out, W0, in, 0.0f, dref, in);
    CHECK(max_diff(dX, dref, (size_t)N * in) == 0, "k_proj dX is dY W0: off by %g", max_diff(dX, dref, (size_t)N * in));
    grad_view v[4];
    CHECK(m->grad_views(&K, v, 4) == 0 && m->grad_sqnorm(&K) == 0 && m->params_get(&K, NULL) == 0,
          "k_proj has no gradient and no parameters");
    m->end_step(&K, 0);
    const optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 0.01f, .beta1 = B1, .beta2 = B2, .eps = EPS, .grad_scale = 1.0f, .t = 1};
    m->step(&K, &h);
    m->export_dense(&K, W);
    CHECK(max_diff(W, W0, (size_t)out * in) == 0, "k_proj exports W0 after a step");
    size_t bytes[MEM_NCAT] = {0};
    m->mem_bytes(&K, bytes);
    CHECK(bytes[MEM_FACTORS] == 0 && bytes[MEM_GRADS] == 0 && bytes[MEM_OPTIM] == 0 && bytes[MEM_DENSE] == 4 * (size_t)out * in,
          "k_proj holds its fp32 base alone: factors %zu, grads %zu, optimizer %zu, dense %zu bytes", bytes[MEM_FACTORS],
          bytes[MEM_GRADS], bytes[MEM_OPTIM], bytes[MEM_DENSE]);
    st_writer *wm = st_writer_new(), *ws = st_writer_new();
    m->save(&K, wm, ws);
    char dir[256], path[2][300];
    CHECK(test_make_tmpdir(dir, sizeof dir, "lora_targets") == 0, "tmpdir");
    snprintf(path[0], sizeof path[0], "%s/model.safetensors", dir);
    snprintf(path[1], sizeof path[1], "%s/state.safetensors", dir);
    CHECK(st_writer_write(wm, path[0]) == 0 && st_writer_write(ws, path[1]) == 0, "write: %s", loqt_last_error());
    st_writer_free(wm);
    st_writer_free(ws);
    st_file fm, fs;
    CHECK(st_open(&fm, path[0]) == 0 && st_open(&fs, path[1]) == 0, "open: %s", loqt_last_error());
    CHECK(fm.n_tensors == 1 && st_find(&fm, "model.layers.0.self_attn.k_proj.weight") && fs.n_tensors == 0,
          "k_proj saves its base alone (%d model tensors, %d state tensors)", fm.n_tensors, fs.n_tensors);
    linear_layer K2;
    memset(&K2, 0, sizeof K2);
    K2.m = m, K2.out = out, K2.in = in, K2.proj = 1;
    snprintf(K2.name, sizeof K2.name, "%s", K.name);
    CHECK(m->init(&K2, &o, NULL) == 0 && m->load(&K2, &fm, &fs) == 0, "load: %s", loqt_last_error());
    m->export_dense(&K2, W);
    CHECK(max_diff(W, W0, (size_t)out * in) == 0, "k_proj loads back as W0");
    st_close(&fm);
    st_close(&fs);
    unlink(path[0]);
    unlink(path[1]);
    rmdir(dir);
    m->free(&K2);
    m->free(&K);
    m->free(&Q);
    free(W0);
}

int main(void) {
    test_set_omp_threads(2);
    RUN(test_matches_pytorch_reference);
    RUN(test_loftq_objective_decreases);
    RUN(test_quailora_objective);
    RUN(test_quailora_matches_pytorch);
    RUN(test_dropout);
    RUN(test_magnitude_prune);
    RUN(test_relora_lr_scale);
    RUN(test_relora_merge);
    RUN(test_relora_merge_not_finite);
    RUN(test_checkpoint_names);
    RUN(test_target_modules);
    TEST_END();
}
