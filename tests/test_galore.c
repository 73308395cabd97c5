/* GaLore against an independent PyTorch reference (tests/gen_galore_ref.py): a few steps of one
 * layer, both shapes (out >= in and out < in), each --galore-state, two micro-batches per step,
 * weight decay on, the exact SVD (so P is the reference's to rounding).  Plus bf16 weights with
 * stochastic rounding staying within a bf16 step of the fp32 result and keeping updates far below
 * a bf16 step on average (round-to-nearest fails that check), and 8-bit Adam (moments projected
 * through their 8-bit codes) close to fp32 Adam. */
#include "test.h"

#include "core/error.h"
#include "methods/linear.h"

#include <stdlib.h>

/* the reference's hyperparameters */
static const float LR = 0.01f, B1 = 0.9f, B2 = 0.999f, EPS = 1e-6f, WD = 0.01f;


static void set_opt(method_opts *o, const linear_method *m, const char *name, double v) {
    const method_option *opt = method_option_find(m, name);
    if (opt) method_option_set(o, opt, v);
    CHECK(opt != NULL, "galore has option --%s", name);
}

/* Runs one reference case; returns the largest error of W over the steps, relative to max|W|. */
static double run_case(const char *name, int bf16) {
    size_t bytes = 0;
    unsigned char *buf = test_read_ref(&bytes, "galore_%s.bin", name);
    CHECK(buf != NULL, "missing reference galore_%s.bin: run tests/gen_galore_ref.py (make test does)", name);
    if (!buf) return INFINITY;
    int32_t hd[7];
    CHECK(bytes >= sizeof hd, "galore_%s.bin: %zu bytes, shorter than its header", name, bytes);
    if (bytes < sizeof hd) {
        free(buf);
        return INFINITY;
    }
    memcpy(hd, buf, sizeof hd);
    const int out = hd[0], in = hd[1], N = hd[2], steps = hd[3], rank = hd[4], gap = hd[5], state = hd[6];
    const size_t want = sizeof hd + sizeof(float) * ((size_t)out * in + (size_t)steps * ((size_t)N * (in + out) + (size_t)out * in));
    CHECK(bytes == want, "galore_%s.bin: %zu bytes, the header implies %zu (regenerate it)", name, bytes, want);
    if (bytes != want) {
        free(buf);
        return INFINITY;
    }
    const float *W0 = (const float *)(buf + sizeof hd), *p = W0 + (size_t)out * in;
    const linear_method *m = method_find("galore");
    method_opts o;
    method_opts_defaults(&o, m);
    set_opt(&o, m, "rank", rank);
    set_opt(&o, m, "update-proj-gap", gap);
    set_opt(&o, m, "galore-state", state);
    set_opt(&o, m, "svd", 1); /* exact */
    set_opt(&o, m, "weight-dtype", bf16);
    linear_layer L = {.m = m, .out = out, .in = in};
    snprintf(L.name, sizeof L.name, "test.galore.%s", name);
    linear_init ini = {.W0 = W0};
    CHECK(m->init(&L, &o, &ini) == 0, "init: %s", loqt_last_error());
    float *W = malloc(sizeof(float) * out * in);
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        const float *X = p, *dY = X + (size_t)N * in, *want = dY + (size_t)N * out;
        p = want + (size_t)out * in;
        optim_hparams h = {.kind = OPTIM_ADAMW, .lr = LR, .beta1 = B1, .beta2 = B2, .eps = EPS,
                           .weight_decay = WD, .grad_scale = 1.0f, .t = s + 1};
        m->zero_grad(&L);
        m->begin_step(&L, s);
        const int h1 = N / 2; /* two micro-batches: the gradient accumulates */
        m->backward(&L, X, dY, NULL, h1, 0);
        m->backward(&L, X + (size_t)h1 * in, dY + (size_t)h1 * out, NULL, N - h1, 0);
        CHECK(m->end_step(&L, s) == 0, "end_step: %s", loqt_last_error());
        CHECK(m->step(&L, &h) == 0, "step: %s", loqt_last_error());
        m->export_dense(&L, W);
        double scale = 0, err = 0;
        for (size_t i = 0; i < (size_t)out * in; i++) {
            scale = fmax(scale, fabs(want[i]));
            err = fmax(err, fabs((double)W[i] - want[i]));
        }
        worst = fmax(worst, err / scale);
    }
    m->free(&L);
    free(W);
    free(buf);
    return worst;
}

static void test_matches_pytorch_reference(void) {
    const char *cases[6] = {"left_keep", "left_project", "left_reset", "right_keep", "right_project", "right_reset"};
    for (int i = 0; i < 6; i++) {
        double e = run_case(cases[i], 0);
        /* fp32 arithmetic against a float64 reference over 7 steps: 1e-4 of max |W| */
        CHECK(e < 1e-4, "%s: max error %.3g of max|W| (tolerance 1e-4)", cases[i], e);
    }
}

static void test_bf16_weights_within_rounding(void) {
    for (int i = 0; i < 2; i++) {
        const char *c = i ? "right_project" : "left_project";
        double e = run_case(c, 1);
        /* bf16 storage: each element within a few bf16 ulps (2^-8 relative) of the reference */
        CHECK(e < 0.02, "%s with bf16 weights: max error %.3g of max|W| (tolerance 0.02)", c, e);
    }
}

/* One optimizer step of the layer on one micro-batch, without weight decay. */
static void one_step(linear_layer *L, const float *X, const float *dY, int N, long s, optim_kind k, float lr) {
    const linear_method *m = L->m;
    optim_hparams h = {.kind = k, .lr = lr, .beta1 = B1, .beta2 = B2, .eps = EPS, .grad_scale = 1.0f, .t = s + 1};
    m->zero_grad(L);
    m->begin_step(L, s);
    m->backward(L, X, dY, NULL, N, 0);
    CHECK(m->end_step(L, s) == 0 && m->step(L, &h) == 0, "step: %s", loqt_last_error());
}

/* 8-bit Adam on the projected gradient, with the moments carried into each new basis through
 * their 8-bit codes: the weight updates stay within a few percent of fp32 Adam's. */
static void test_adam8bit_with_projection(void) {
    enum { OUT = 720, IN = 96, N = 24, STEPS = 6 };
    const linear_method *m = method_find("galore");
    float *W[2], *W0 = malloc(sizeof(float) * OUT * IN);
    float *X = malloc(sizeof(float) * N * IN), *dY = malloc(sizeof(float) * N * OUT);
    for (int i = 0; i < OUT * IN; i++) W0[i] = 0.02f * (float)test_randn();
    for (int v = 0; v < 2; v++) {
        method_opts o;
        method_opts_defaults(&o, m);
        o.optimizer = v ? OPTIM_ADAM8BIT : OPTIM_ADAMW;
        set_opt(&o, m, "rank", 8);
        set_opt(&o, m, "update-proj-gap", 2);
        set_opt(&o, m, "galore-state", 1); /* project */
        linear_layer L = {.m = m, .out = OUT, .in = IN};
        snprintf(L.name, sizeof L.name, "test.galore.8bit");
        linear_init ini = {.W0 = W0};
        CHECK(m->init(&L, &o, &ini) == 0, "init: %s", loqt_last_error());
        test_seed(77);
        for (int s = 0; s < STEPS; s++) {
            test_fill_randn(X, (size_t)N * IN, 1.0f);
            test_fill_randn(dY, (size_t)N * OUT, 1.0f);
            one_step(&L, X, dY, N, s, o.optimizer, LR);
        }
        W[v] = malloc(sizeof(float) * OUT * IN);
        m->export_dense(&L, W[v]);
        size_t b[MEM_NCAT] = {0};
        m->mem_bytes(&L, b);
        if (v) CHECK(b[MEM_OPTIM] < 3 * 8 * OUT, "8-bit state: %zu bytes for %d moments", b[MEM_OPTIM], 2 * 8 * OUT);
        m->free(&L);
    }
    double num = 0, den = 0;
    for (int i = 0; i < OUT * IN; i++) {
        num += ((double)W[1][i] - W[0][i]) * ((double)W[1][i] - W[0][i]);
        den += ((double)W[0][i] - W0[i]) * ((double)W[0][i] - W0[i]);
    }
    /* 8-bit moments: the accumulated update within 5% (in norm) of the fp32 one */
    CHECK(sqrt(num / den) < 0.05, "8-bit vs fp32 Adam: update differs by %.3g of its norm (tolerance 0.05)", sqrt(num / den));
    free(W[0]), free(W[1]), free(W0), free(X), free(dY);
}

/* bf16 weights with updates far below a bf16 step (about 1.5e-4 at |W| ~ 0.02; each update here
 * is about 2.5e-6): round-to-nearest would leave W where it is, stochastic rounding moves it by
 * the same amount on average as fp32 weights move.  Both runs start from the same bf16 values. */
static void test_bf16_small_updates_kept_on_average(void) {
    enum { OUT = 720, IN = 96, N = 16, STEPS = 40 };
    const linear_method *m = method_find("galore");
    float *W0 = malloc(sizeof(float) * OUT * IN), *W[2];
    float *X = malloc(sizeof(float) * N * IN), *dY = malloc(sizeof(float) * N * OUT);
    test_seed(5);
    for (int i = 0; i < OUT * IN; i++) { /* bf16 values, so both runs start at the same point */
        float w = 0.02f * (float)test_randn();
        uint32_t u;
        memcpy(&u, &w, 4);
        u &= 0xffff0000u;
        memcpy(&W0[i], &u, 4);
    }
    test_fill_randn(X, (size_t)N * IN, 1.0f);
    test_fill_randn(dY, (size_t)N * OUT, 1.0f);
    for (int v = 0; v < 2; v++) {
        method_opts o;
        method_opts_defaults(&o, m);
        set_opt(&o, m, "rank", 8);
        set_opt(&o, m, "update-proj-gap", 1000);
        set_opt(&o, m, "weight-dtype", v); /* 0 fp32, 1 bf16 */
        linear_layer L = {.m = m, .out = OUT, .in = IN};
        snprintf(L.name, sizeof L.name, "test.galore.sr");
        linear_init ini = {.W0 = W0};
        CHECK(m->init(&L, &o, &ini) == 0, "init: %s", loqt_last_error());
        for (int s = 0; s < STEPS; s++) { /* the same gradient each step: a steady drift */
            one_step(&L, X, dY, N, s, OPTIM_ADAMW, 1e-5f);
        }
        W[v] = malloc(sizeof(float) * OUT * IN);
        m->export_dense(&L, W[v]);
        m->free(&L);
    }
    /* the bf16 run's drift against the fp32 run's: same direction, about the same size */
    double dot = 0, nf = 0;
    long moved = 0;
    for (int i = 0; i < OUT * IN; i++) {
        double df = (double)W[0][i] - W0[i], db = (double)W[1][i] - W0[i];
        dot += df * db;
        nf += df * df;
        moved += db != 0;
    }
    const double ratio = dot / nf; /* the bf16 drift projected on the fp32 one, relative */
    CHECK(moved > OUT * IN / 20, "only %ld of %d bf16 weights moved: updates were rounded away", moved, OUT * IN);
    CHECK(ratio > 0.8 && ratio < 1.2, "bf16 drift / fp32 drift along it = %.3f (tolerance 0.8 .. 1.2)", ratio);
    free(W[0]), free(W[1]), free(W0), free(X), free(dY);
}

int main(void) {
    RUN(test_matches_pytorch_reference);
    RUN(test_bf16_weights_within_rounding);
    RUN(test_adam8bit_with_projection);
    RUN(test_bf16_small_updates_kept_on_average);
    TEST_END();
}
