/* Kernels: the portable GEMM against a double-precision loop (and the BLAS path), and each op's
 * backward against central finite differences of its forward (float32, step 1e-2 on inputs of
 * order 1, so the truncation error is ~1e-4 and float rounding ~1e-5: tolerance 2e-3 relative). */
#include "test.h"

#include "core/rng.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

static void fill(float *x, int n, uint64_t stream, float scale) {
    for (int i = 0; i < n; i++) x[i] = scale * rng_normal(11, stream, (uint64_t)i);
}

static void test_gemm_all_transposes(void) {
    enum { M = 37, N = 53, K = 71 };
    static float A[K * M + M * K], B[K * N], C[M * N], C2[M * N];
    fill(A, M * K, 1, 1);
    fill(B, K * N, 2, 1);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = ta ? M : K, ldb = tb ? K : N;
            fill(C, M * N, 3, 1);
            memcpy(C2, C, sizeof C);
            gemm_portable(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, C, N);
            gemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, C2, N);
            double worst = 0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++)
                        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    /* C was overwritten: recompute the expected value from the original C */
                    double c0 = 1 * rng_normal(11, 3, (uint64_t)(i * N + j));
                    double want = 0.5 * s + 0.25 * c0;
                    double e1 = fabs(C[i * N + j] - want), e2 = fabs(C2[i * N + j] - want);
                    worst = fmax(worst, fmax(e1, e2));
                }
            CHECK(worst < 1e-4, "ta=%d tb=%d: max error %g (tolerance 1e-4 for K=71)", ta, tb, worst);
        }
}

/* sum(w * f(x)) with a fixed random w: a scalar whose gradient is the backward of dy = w */
typedef double (*scalar_fn)(const float *x, void *ctx);

static void check_fd(const char *what, float *x, int n, const float *analytic, scalar_fn f, void *ctx) {
    const float h = 1e-2f;
    double worst = 0;
    int at = 0;
    for (int i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double fp = f(x, ctx);
        x[i] = keep - h;
        double fm = f(x, ctx);
        x[i] = keep;
        double num = (fp - fm) / (2 * h);
        double err = fabs(num - analytic[i]) / (1e-3 + fabs(num));
        if (err > worst) {
            worst = err;
            at = i;
        }
    }
    CHECK(worst < 2e-2, "%s: element %d analytic %.6g, relative error %.3g (tolerance 2e-2)", what, at,
          analytic[at], worst);
}

enum { N_ = 6, D_ = 16 };
static float Wn[D_], DY[64 * 64];

static double rms_scalar(const float *x, void *ctx) {
    (void)ctx;
    float y[N_ * D_], r[N_];
    rmsnorm_forward(y, r, x, Wn, N_, D_, 1e-6f);
    double s = 0;
    for (int i = 0; i < N_ * D_; i++) s += (double)DY[i] * y[i];
    return s;
}

static void test_rmsnorm_backward(void) {
    float x[N_ * D_], y[N_ * D_], r[N_], dx[N_ * D_], dw[D_] = {0};
    fill(x, N_ * D_, 4, 1);
    fill(Wn, D_, 5, 0.5f);
    for (int j = 0; j < D_; j++) Wn[j] += 1;
    fill(DY, N_ * D_, 6, 1);
    rmsnorm_forward(y, r, x, Wn, N_, D_, 1e-6f);
    rmsnorm_backward(dx, dw, DY, x, Wn, r, N_, D_, 0);
    check_fd("rmsnorm dx", x, N_ * D_, dx, rms_scalar, NULL);
    /* dw by finite differences on w */
    float dw_num[D_];
    for (int j = 0; j < D_; j++) {
        float keep = Wn[j];
        Wn[j] = keep + 1e-2f;
        double fp = rms_scalar(x, NULL);
        Wn[j] = keep - 1e-2f;
        double fm = rms_scalar(x, NULL);
        Wn[j] = keep;
        dw_num[j] = (float)((fp - fm) / 2e-2);
    }
    size_t where = 0;
    CHECK(test_max_violation(dw, dw_num, D_, 1e-3, 2e-2, &where) <= 1, "rmsnorm dw at %zu", where);
}

static double swiglu_scalar(const float *gu, void *ctx) {
    (void)ctx;
    float h[32];
    swiglu_forward(h, gu, gu + 32, 32);
    double s = 0;
    for (int i = 0; i < 32; i++) s += (double)DY[i] * h[i];
    return s;
}

static void test_swiglu_backward(void) {
    float gu[64], dgu[64];
    fill(gu, 64, 7, 2);
    fill(DY, 32, 8, 1);
    swiglu_backward(dgu, dgu + 32, DY, gu, gu + 32, 32);
    check_fd("swiglu", gu, 64, dgu, swiglu_scalar, NULL);
}

enum { RB = 2, RT = 5, RH = 2, RHD = 8 };
static float cos_t[RT * RHD / 2], sin_t[RT * RHD / 2];

static double rope_scalar(const float *x, void *ctx) {
    (void)ctx;
    float y[RB * RT * RH * RHD];
    memcpy(y, x, sizeof y);
    rope_forward(y, cos_t, sin_t, RB, RT, RH, RHD);
    double s = 0;
    for (int i = 0; i < RB * RT * RH * RHD; i++) s += (double)DY[i] * y[i];
    return s;
}

static void test_rope(void) {
    enum { n = RB * RT * RH * RHD };
    float x[n], dx[n];
    rope_tables(cos_t, sin_t, RT, RHD, 10000.0);
    /* position 1, pair 0: angle 1 radian exactly (inv_freq 1) */
    CHECK_CLOSE(cos_t[RHD / 2], cos(1.0), 1e-7, 0);
    fill(x, n, 9, 1);
    fill(DY, n, 10, 1);
    memcpy(dx, DY, sizeof dx);
    rope_backward(dx, cos_t, sin_t, RB, RT, RH, RHD);
    check_fd("rope", x, n, dx, rope_scalar, NULL);
    /* rotate-half pairing: element i pairs with i + hd/2 */
    float v[RHD] = {1, 0, 0, 0, 0, 0, 0, 0};
    float c1[2 * RHD / 2], s1[2 * RHD / 2];
    rope_tables(c1, s1, 2, RHD, 10000.0);
    float two[2 * RHD] = {0};
    memcpy(two + RHD, v, sizeof v);
    rope_forward(two, c1, s1, 1, 2, 1, RHD);
    CHECK_CLOSE(two[RHD + 0], cos(1.0), 1e-6, 0);
    CHECK_CLOSE(two[RHD + RHD / 2], sin(1.0), 1e-6, 0);
}

/* Attention with AH query heads over akv key/value heads (akv = AH: multi-head; 2: grouped-query
 * attention, two query heads per key/value head). */
enum { AB = 2, AT = 7, AH = 4, AHD = 4, AD = AH * AHD };
static float AQ[AB * AT * AD], AK[AB * AT * AD], AV[AB * AT * AD];
static float scratch[64 * AT * AT];
static int akv = AH;

static double attn_scalar(const float *x, void *ctx) {
    (void)x;
    (void)ctx;
    float o[AB * AT * AD], lse[AB * AH * AT];
    attention_forward(o, lse, AQ, AK, AV, AB, AT, AH, akv, AHD, scratch);
    double s = 0;
    for (int i = 0; i < AB * AT * AD; i++) s += (double)DY[i] * o[i];
    return s;
}

static void check_attention(int kv_heads) {
    akv = kv_heads;
    const int n = AB * AT * AD, nkv = AB * AT * kv_heads * AHD, dkv = kv_heads * AHD;
    float o[AB * AT * AD], lse[AB * AH * AT], dq[AB * AT * AD], dk[AB * AT * AD], dv[AB * AT * AD];
    fill(AQ, n, 12, 1);
    fill(AK, nkv, 13, 1);
    fill(AV, nkv, 14, 1);
    fill(DY, n, 15, 1);
    attention_forward(o, lse, AQ, AK, AV, AB, AT, AH, akv, AHD, scratch);
    attention_backward(dq, dk, dv, DY, o, lse, AQ, AK, AV, AB, AT, AH, akv, AHD, scratch);
    check_fd("attention dq", AQ, n, dq, attn_scalar, NULL);
    check_fd("attention dk", AK, nkv, dk, attn_scalar, NULL);
    check_fd("attention dv", AV, nkv, dv, attn_scalar, NULL);
    /* the first position attends only to itself: each head's output is its key/value head's v */
    for (int h = 0; h < AH; h++)
        for (int j = 0; j < AHD; j++)
            CHECK_CLOSE(o[h * AHD + j], AV[(h / (AH / akv)) * AHD + j], 1e-6, 0);
    /* changing the last token's k and v leaves every earlier output unchanged */
    float o2[AB * AT * AD];
    for (int j = 0; j < dkv; j++) AK[(AT - 1) * dkv + j] += 1, AV[(AT - 1) * dkv + j] += 1;
    attention_forward(o2, lse, AQ, AK, AV, AB, AT, AH, akv, AHD, scratch);
    for (int i = 0; i < (AT - 1) * AD; i++) CHECK(o[i] == o2[i], "future token leaked into position %d", i / AD);
}

static void test_attention_backward_and_causality(void) { check_attention(AH); }

/* grouped-query attention against ordinary attention with each key/value head repeated for its
 * group (how the reference implementations define it): the same outputs, and dk, dv the group
 * sums of the repeated heads' gradients */
static void test_grouped_query_attention(void) {
    check_attention(2);
    enum { n = AB * AT * AD, G = AH / 2 };
    float o[n], o_rep[n], lse[AB * AH * AT], dq[n], dk[n], dv[n], dq_r[n], dk_r[n], dv_r[n];
    static float K_rep[n], V_rep[n];
    for (int r = 0; r < AB * AT; r++)
        for (int h = 0; h < AH; h++)
            for (int j = 0; j < AHD; j++) {
                K_rep[r * AD + h * AHD + j] = AK[r * 2 * AHD + (h / G) * AHD + j];
                V_rep[r * AD + h * AHD + j] = AV[r * 2 * AHD + (h / G) * AHD + j];
            }
    attention_forward(o, lse, AQ, AK, AV, AB, AT, AH, 2, AHD, scratch);
    attention_backward(dq, dk, dv, DY, o, lse, AQ, AK, AV, AB, AT, AH, 2, AHD, scratch);
    attention_forward(o_rep, lse, AQ, K_rep, V_rep, AB, AT, AH, AH, AHD, scratch);
    attention_backward(dq_r, dk_r, dv_r, DY, o_rep, lse, AQ, K_rep, V_rep, AB, AT, AH, AH, AHD, scratch);
    double worst_o = 0, worst_q = 0, worst_kv = 0;
    for (int i = 0; i < n; i++) {
        worst_o = fmax(worst_o, fabs(o[i] - o_rep[i]));
        worst_q = fmax(worst_q, fabs(dq[i] - dq_r[i]));
    }
    for (int r = 0; r < AB * AT; r++)
        for (int g = 0; g < 2; g++)
            for (int j = 0; j < AHD; j++) {
                double sk = 0, sv = 0;
                for (int h = g * G; h < (g + 1) * G; h++) {
                    sk += dk_r[r * AD + h * AHD + j];
                    sv += dv_r[r * AD + h * AHD + j];
                }
                const int i = r * 2 * AHD + g * AHD + j;
                worst_kv = fmax(worst_kv, fmax(fabs(dk[i] - sk), fabs(dv[i] - sv)));
            }
    CHECK(worst_o <= 1e-6, "outputs differ from repeated-head attention by %g (tolerance 1e-6)", worst_o);
    CHECK(worst_q <= 1e-6, "dq differs by %g (tolerance 1e-6)", worst_q);
    CHECK(worst_kv <= 1e-5, "dk/dv differ from the group sums by %g (tolerance 1e-5)", worst_kv);
}

static void test_softmax_xent(void) {
    float logits[2 * 5] = {1, 2, 3, 4, 5, 0, 0, 0, 0, 0}, d[10];
    int32_t t[2] = {4, 1};
    double loss = softmax_xent(d, logits, t, 2, 5, 0.5f);
    double l0 = log(exp(1) + exp(2) + exp(3) + exp(4) + exp(5)) - 5, l1 = log(5.0);
    CHECK_CLOSE(loss, l0 + l1, 1e-6, 1e-6);
    CHECK_CLOSE(d[9 - 4 + 0], 0.5 * 0.2, 1e-7, 0); /* row 1, column 0: softmax 0.2 * scale */
    CHECK_CLOSE(d[5 + 1], 0.5 * (0.2 - 1), 1e-7, 0);
    double s = 0;
    for (int j = 0; j < 5; j++) s += d[j];
    CHECK_CLOSE(s, 0, 1e-7, 0);
}

int main(void) {
    RUN(test_gemm_all_transposes);
    RUN(test_rmsnorm_backward);
    RUN(test_swiglu_backward);
    RUN(test_rope);
    RUN(test_attention_backward_and_causality);
    RUN(test_grouped_query_attention);
    RUN(test_softmax_xent);
    TEST_END();
}
