/* LoQT: the layer equals a dense layer holding W_eff (forward and backward), dB matches finite
 * differences, a merge keeps W_eff within quantization error, error compensation does not hurt,
 * the refresh schedule, and a resumed LoQT run repeats the same losses.  (Per-layer updates and
 * activation checkpointing are checked for every method in tests/test_methods.c.) */
#include "test.h"

#include "core/error.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "methods/loqt.h"
#include "model/checkpoint.h"
#include "model/train.h"
#include "quant/nf4.h"

#include <stdlib.h>

static void fill(float *x, size_t n, uint64_t stream, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(21, stream, i);
}

static loqt_config config(int rank, int k, int fp32) {
    method_opts o;
    method_opts_defaults(&o, &method_loqt);
    loqt_config c;
    method_config_get(&o, &c, sizeof c);
    c.rank = rank;
    c.lora_alpha = 0.5;
    c.compensate_quant_error_iterations = k;
    c.lowrank_dtype = fp32 ? FACTOR_FP32 : FACTOR_BF16;
    return c;
}

static method_opts opts_of(const loqt_config *c) {
    method_opts o;
    method_opts_defaults(&o, &method_loqt);
    method_config_set(&o, c, sizeof *c);
    o.seed = 9;
    return o;
}

static method_opts opts(int rank, int k, int fp32) {
    loqt_config c = config(rank, k, fp32);
    return opts_of(&c);
}

/* A layer of shape out x in after one refresh (P from the SVD of dY^T X) and a random B. */
static void make_layer(linear_layer *L, int out, int in, const method_opts *o, int N) {
    memset(L, 0, sizeof *L);
    L->m = &method_loqt;
    L->out = out;
    L->in = in;
    snprintf(L->name, sizeof L->name, "test.%dx%d", out, in);
    if (method_loqt.init(L, o, &(linear_init){0})) {
        printf("init: %s\n", loqt_last_error());
        exit(1);
    }
    float *X = malloc(sizeof(float) * N * in), *dY = malloc(sizeof(float) * N * out);
    float *Y = malloc(sizeof(float) * N * out);
    fill(X, (size_t)N * in, 1, 1);
    fill(dY, (size_t)N * out, 2, 1);
    method_loqt.zero_grad(L);
    method_loqt.begin_step(L, 0);
    method_loqt.forward(L, X, Y, N);
    method_loqt.backward(L, X, dY, NULL, N, 0);
    CHECK(method_loqt.end_step(L, 0) == 0, "end_step: %s", loqt_last_error());
    int r, left, have;
    loqt_layer_info(L, &r, &left, &have);
    float *B = malloc(sizeof(float) * (size_t)(left ? out : in) * r);
    fill(B, (size_t)(left ? out : in) * r, 3, 0.05f);
    loqt_set_B(L, B);
    free(B);
    free(X);
    free(dY);
    free(Y);
}

static void check_equals_dense(int out, int in) {
    enum { N = 24 };
    method_opts o = opts(8, 0, 0);
    linear_layer L;
    make_layer(&L, out, in, &o, N);
    float *W = malloc(sizeof(float) * out * in), *X = malloc(sizeof(float) * N * in);
    float *Y = malloc(sizeof(float) * N * out), *Yd = malloc(sizeof(float) * N * out);
    float *dY = malloc(sizeof(float) * N * out), *dX = malloc(sizeof(float) * N * in);
    float *dXd = malloc(sizeof(float) * N * in);
    method_loqt.export_dense(&L, W);
    fill(X, (size_t)N * in, 4, 1);
    fill(dY, (size_t)N * out, 5, 1);
    method_loqt.forward(&L, X, Y, N);
    gemm_portable(false, true, N, out, in, 1.0f, X, in, W, in, 0.0f, Yd, out);
    size_t where = 0;
    CHECK(test_max_violation(Y, Yd, (size_t)N * out, 1e-5, 1e-4, &where) <= 1,
          "%dx%d forward: %g vs dense %g at %zu", out, in, Y[where], Yd[where], where);
    method_loqt.backward(&L, X, dY, dX, N, 0);
    gemm_portable(false, false, N, in, out, 1.0f, dY, out, W, in, 0.0f, dXd, in);
    CHECK(test_max_violation(dX, dXd, (size_t)N * in, 1e-5, 1e-4, &where) <= 1,
          "%dx%d backward dX: %g vs dense %g at %zu", out, in, dX[where], dXd[where], where);
    method_loqt.free(&L);
    free(W), free(X), free(Y), free(Yd), free(dY), free(dX), free(dXd);
}

static void test_forward_backward_equal_dense_left(void) { check_equals_dense(96, 64); }
static void test_forward_backward_equal_dense_right(void) { check_equals_dense(64, 96); }

/* loss = sum(Y * R): dB from backward against central differences on B (fp32 B, so the
 * perturbation is not rounded away) */
static void check_dB(int out, int in) {
    enum { N = 16 };
    method_opts o = opts(4, 0, 1);
    linear_layer L;
    make_layer(&L, out, in, &o, N);
    int r, left, have;
    loqt_layer_info(&L, &r, &left, &have);
    size_t nB = (size_t)(left ? out : in) * r;
    float *X = malloc(sizeof(float) * N * in), *R = malloc(sizeof(float) * N * out);
    float *Y = malloc(sizeof(float) * N * out), *B = malloc(sizeof(float) * nB);
    fill(X, (size_t)N * in, 6, 1);
    fill(R, (size_t)N * out, 7, 1);
    method_loqt.zero_grad(&L);
    method_loqt.begin_step(&L, 1);
    method_loqt.backward(&L, X, R, NULL, N, 0);
    const float *dB = loqt_grad_B(&L);
    loqt_get_factors(&L, NULL, NULL, B);
    double worst = 0;
    for (size_t i = 0; i < nB; i += 7) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float keep = B[i];
            B[i] = keep + (sgn ? -1e-2f : 1e-2f);
            loqt_set_B(&L, B);
            method_loqt.forward(&L, X, Y, N);
            double s = 0;
            for (int j = 0; j < N * out; j++) s += (double)Y[j] * R[j];
            f[sgn] = s;
            B[i] = keep;
        }
        loqt_set_B(&L, B);
        double num = (f[0] - f[1]) / 2e-2, err = fabs(num - dB[i]) / (1e-3 + fabs(num));
        worst = err > worst ? err : worst;
    }
    /* Y is linear in B, so central differences are exact up to float rounding of Y (~1e-6 * |Y|
     * sums over N*out terms): 1e-2 relative */
    CHECK(worst < 1e-2, "%dx%d: dB relative error %g (tolerance 1e-2)", out, in, worst);
    method_loqt.free(&L);
    free(X), free(R), free(Y), free(B);
}

static void test_dB_matches_finite_differences(void) {
    check_dB(48, 32);
    check_dB(32, 48);
}

/* After a merge, W_eff changes by at most the NF4 rounding of each block: |dW| <= absmax * 0.1519
 * (half the widest gap of the code book, (-0.6961928 - -1) / 2). */
static void test_merge_within_quantization_error(void) {
    enum { OUT = 128, IN = 64, N = 32 };
    for (int k = 0; k <= 3; k += 3) {
        method_opts o = opts(8, k, 0);
        linear_layer L;
        make_layer(&L, OUT, IN, &o, N);
        float *before = malloc(sizeof(float) * OUT * IN), *after = malloc(sizeof(float) * OUT * IN);
        float *X = malloc(sizeof(float) * N * IN), *dY = malloc(sizeof(float) * N * OUT);
        method_loqt.export_dense(&L, before);
        fill(X, N * IN, 8, 1);
        fill(dY, N * OUT, 9, 1);
        method_loqt.zero_grad(&L);
        method_loqt.begin_step(&L, 50); /* 50 is an update step with gap 50 */
        method_loqt.backward(&L, X, dY, NULL, N, 0);
        CHECK(method_loqt.end_step(&L, 50) == 0, "end_step: %s", loqt_last_error());
        method_loqt.export_dense(&L, after);
        double worst = 0, err2 = 0;
        for (int b = 0; b < OUT * IN / 64; b++) {
            float amax = 0;
            for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(before[b * 64 + i]));
            for (int i = 0; i < 64; i++) {
                double d = fabs((double)after[b * 64 + i] - before[b * 64 + i]);
                err2 += d * d;
                /* bf16 rounding of B adds ~2^-9 relative of the low-rank term */
                worst = fmax(worst, d / (amax * 0.15191 + 1e-4));
            }
        }
        CHECK(worst <= 1.0, "k=%d: merge moved W_eff by %.3g of the quantization bound", k, worst);
        static double err_k0;
        if (k == 0) err_k0 = err2;
        else CHECK(err2 <= err_k0 * 1.0001, "compensation made the merge worse: %g > %g", err2, err_k0);
        if (k) printf("    merge error ||dW||^2: k=0 %.4g, k=3 %.4g\n", err_k0, err2);
        method_loqt.free(&L);
        free(before), free(after), free(X), free(dY);
    }
}

/* LoQT-nq (16-bit W): a merge loses nothing, so compensation rounds are skipped (as the
 * reference skips them): k = 3 gives the same layer as k = 0, bit for bit. */
static void test_no_compensation_with_16bit_w(void) {
    float *W[2], *B[2];
    for (int v = 0; v < 2; v++) {
        loqt_config c = config(8, v ? 3 : 0, 1);
        c.quantize_w = LOQT_16BIT;
        method_opts o = opts_of(&c);
        linear_layer L;
        make_layer(&L, 48, 32, &o, 20);
        /* a second refresh merges the random B of make_layer */
        float *X = malloc(sizeof(float) * 20 * 32), *dY = malloc(sizeof(float) * 20 * 48);
        fill(X, 20 * 32, 4, 1);
        fill(dY, 20 * 48, 5, 1);
        method_loqt.zero_grad(&L);
        method_loqt.begin_step(&L, 50);
        method_loqt.backward(&L, X, dY, NULL, 20, 0);
        CHECK(method_loqt.end_step(&L, 50) == 0, "end_step: %s", loqt_last_error());
        W[v] = malloc(sizeof(float) * 48 * 32);
        B[v] = malloc(sizeof(float) * 48 * 8);
        loqt_get_factors(&L, W[v], NULL, B[v]);
        method_loqt.free(&L);
        free(X), free(dY);
    }
    CHECK(!memcmp(W[0], W[1], sizeof(float) * 48 * 32) && !memcmp(B[0], B[1], sizeof(float) * 48 * 8),
          "16-bit W: compensation changed the merge");
    for (int v = 0; v < 2; v++) free(W[v]), free(B[v]);
}

static void test_exponential_schedule(void) {
    loqt_config o = config(8, 0, 0);
    o.update_proj_gap = 100;
    o.proj_gap_progression = GAP_EXPONENTIAL;
    o.increment_size = 1.2;
    long want[] = {0, 100, 201, 302, 403, 505};
    for (int k = 0; k < 6; k++) CHECK(loqt_update_step(&o, k) == want[k], "k=%d: %ld != %ld", k, loqt_update_step(&o, k), want[k]);
    CHECK(loqt_is_update_step(&o, 201) && !loqt_is_update_step(&o, 200) && !loqt_is_update_step(&o, 1), "membership");
    o.proj_gap_progression = GAP_STATIC;
    CHECK(loqt_update_step(&o, 3) == 300, "static");
    o.proj_gap_progression = GAP_EXPONENTIAL;
    o.max_proj_gap = 101;
    CHECK(loqt_update_step(&o, 5) == 100 + 101 * 4, "capped: %ld", loqt_update_step(&o, 5));
}

static void make_model(llama_model *m, uint64_t seed) {
    llama_config c = {"tiny", 32, 64, 2, 4, 4, 96, 64, 1e-6, 10000.0, 0};
    loqt_config lc = config(8, 2, 0);
    lc.update_proj_gap = 3;
    method_opts o = opts_of(&lc);
    if (llama_create(m, &c, &method_loqt, &o, seed)) {
        printf("%s\n", loqt_last_error());
        exit(1);
    }
    llama_set_batch(m, 2, 8);
}

static void run(llama_model *m, long from, long to, float *losses) {
    int32_t in[16], tg[16];
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = 0.01;
    h.sched.warmup_steps = 1;
    h.sched.total_steps = 10;
    for (long s = from; s < to; s++) {
        for (int i = 0; i < 16; i++) {
            in[i] = (int32_t)(rng_u64(5, (uint64_t)s, (uint64_t)i) % 96);
            tg[i] = (in[i] + 1) % 96; /* learnable */
        }
        const int32_t *ins[1] = {in}, *tgs[1] = {tg};
        {
            step_result sr_;
            CHECK(train_step(m, s, ins, tgs, 1, &h, &sr_) == 0, "train_step: %s", loqt_last_error());
            losses[s] = (float)sr_.loss;
        }
    }
}

static void test_resume_repeats_losses(void) {
    float a[10], b[10];
    llama_model m1, m2, m3;
    make_model(&m1, 4);
    run(&m1, 0, 10, a);
    CHECK(a[9] < a[0] - 0.1, "LoQT does not learn: %g -> %g", a[0], a[9]);
    make_model(&m2, 4);
    run(&m2, 0, 5, b); /* update steps 0 and 3 inside, 6 and 9 after the resume */
    char dir[] = "/tmp/loqt_test_loqt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char ck[300];
    snprintf(ck, sizeof ck, "%s/step-00000005", dir);
    trainer_meta tm = {.step = 5, .seed = 4};
    snprintf(tm.method, sizeof tm.method, "loqt");
    snprintf(tm.optimizer, sizeof tm.optimizer, "adamw");
    CHECK(checkpoint_save(&m2, &tm, ck) == 0, "save: %s", loqt_last_error());
    trainer_meta back;
    loqt_config bc = {0};
    CHECK(checkpoint_read_meta(ck, &back) == 0, "read meta: %s", loqt_last_error());
    method_config_get(&back.mopts, &bc, sizeof bc);
    CHECK(bc.rank == 8 && bc.update_proj_gap == 3 && bc.compensate_quant_error_iterations == 2,
          "method options round trip");
    /* the run's seed also keys the randomized SVD of later refreshes: a resumed run takes it from
     * the checkpoint, as loqt train does */
    make_model(&m3, 4);
    float *e = m3.embed.w;
    for (size_t i = 0; i < m3.embed.n; i++) e[i] = 0; /* must be overwritten by the load */
    CHECK(checkpoint_load(&m3, ck, 0) == 0, "load: %s", loqt_last_error());
    run(&m3, 5, 10, b);
    for (int s = 0; s < 10; s++) CHECK(a[s] == b[s], "step %d: %.9g != %.9g", s, a[s], b[s]);
    llama_free(&m1);
    llama_free(&m2);
    llama_free(&m3);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static void test_memory_is_smaller_than_dense(void) {
    method_opts o = opts(16, 0, 0);
    linear_layer L = {.m = &method_loqt, .out = 512, .in = 512};
    snprintf(L.name, sizeof L.name, "mem");
    CHECK(method_loqt.init(&L, &o, &(linear_init){0}) == 0, "init");
    size_t b[MEM_NCAT] = {0};
    method_loqt.mem_bytes(&L, b);
    /* NF4 W: 512*512/2 codes + 4096 absmax floats; P: 16x512 NF4; B: 512x16 bf16; dB fp32 */
    CHECK(b[MEM_QWEIGHTS] == 512 * 512 / 2 + 16 * 512 / 2, "codes %zu", b[MEM_QWEIGHTS]);
    CHECK(b[MEM_QSTATE] == (512 * 512 / 64 + 16 * 512 / 64) * 4, "absmax %zu", b[MEM_QSTATE]);
    CHECK(b[MEM_FACTORS] == 512 * 16 * 2, "B %zu", b[MEM_FACTORS]);
    /* dB is allocated by the first backward after P exists (and freed after each update with
     * per-layer updates), so a fresh layer holds no gradient */
    CHECK(b[MEM_GRADS] == 0, "dB %zu", b[MEM_GRADS]);
    method_loqt.free(&L);
}

int main(void) {
    RUN(test_forward_backward_equal_dense_left);
    RUN(test_forward_backward_equal_dense_right);
    RUN(test_dB_matches_finite_differences);
    RUN(test_merge_within_quantization_error);
    RUN(test_no_compensation_with_16bit_w);
    RUN(test_exponential_schedule);
    RUN(test_resume_repeats_losses);
    RUN(test_memory_is_smaller_than_dense);
    TEST_END();
}
