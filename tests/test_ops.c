/* Kernels: gemm() (the built backend) and the portable GEMM against a double-precision loop, its
 * threads inside and outside parallel regions, and each op's
 * backward against central finite differences of its forward (float32, step 1e-2 on inputs of
 * order 1, so the truncation error is ~1e-4 and float rounding ~1e-5: tolerance 2e-3 relative). */
#include "test.h"

#include "core/rng.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

static void fill(float *x, int n, uint64_t stream, float scale) {
    for (int i = 0; i < n; i++) x[i] = scale * rng_normal(11, stream, (uint64_t)i);
}

#ifdef _OPENMP
/* Threads of this process, from /proc/self/status (-1 where that cannot be read). */
static int os_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    fclose(f);
    return n;
}
#endif

static float *filled(size_t n, uint64_t stream) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    fill(x, (int)n, stream, 1);
    return x;
}

/* One product through gemm() and gemm_portable(), each against a double-precision loop.
 * Operands have padded leading dimensions (lda, ldb, ldc larger than the rows they hold), and
 * C's padding must come back untouched.  With beta = 0, C starts as NaN: BLAS semantics say C is
 * not read then.  Tolerance: |got - exact| <= (K + 3) u (|alpha| sum_k |a_ik b_kj| + |beta c_ij|),
 * u = 2^-24, the worst-case rounding bound of a K-term dot product in any summation order (FMA
 * or not, any blocking) plus the alpha and beta products and the final addition. */
static void check_gemm(bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad) {
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int arows = ta ? K : M, brows = tb ? N : K;
    float *A = filled((size_t)arows * lda, 1), *B = filled((size_t)brows * ldb, 2);
    float *C0 = filled((size_t)M * ldc, 3);
    float *C[2] = {malloc(sizeof(float) * M * ldc), malloc(sizeof(float) * M * ldc)};
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < M * ldc; i++) {
            int in_c = i % ldc < N;
            C[v][i] = !in_c ? 12345.0f : beta == 0.0f ? NAN : C0[i];
        }
        (v ? gemm_portable : gemm)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C[v], ldc);
    }
    const double u = ldexp(1.0, -24);
    double worst[2] = {0, 0};
    int pad_ok = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
                mag += fabs(a * b);
            }
            double c0 = beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j];
            double want = alpha * s + beta * c0;
            double bound = (K + 3) * u * (fabs(alpha) * mag + fabs(beta * c0)) + 1e-30;
            for (int v = 0; v < 2; v++) {
                double e = fabs(C[v][(size_t)i * ldc + j] - want) / bound;
                if (!(e <= worst[v])) worst[v] = e; /* NaN sticks */
            }
        }
        for (int j = N; j < ldc; j++)
            pad_ok &= C[0][(size_t)i * ldc + j] == 12345.0f && C[1][(size_t)i * ldc + j] == 12345.0f;
    }
    CHECK(worst[0] <= 1 && worst[1] <= 1,
          "%s: ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: error / bound %.3g (gemm), %.3g "
          "(portable); bound (K+3) u sum|alpha a b| + |beta c|",
          gemm_backend(), ta, tb, M, N, K, alpha, beta, worst[0], worst[1]);
    CHECK(pad_ok, "ta=%d tb=%d M=%d N=%d K=%d: C's padding (ldc %d > N) was written", ta, tb, M, N,
          K, ldc);
    free(A), free(B), free(C0), free(C[0]), free(C[1]);
}

/* gemm() (whatever backend is built: oneDNN, OpenBLAS or the portable kernel) and the portable
 * kernel on every transpose, shapes that are not multiples of any blocking (1, odd, primes,
 * just over the portable kernel's 64 x 256 x 256 tiles), K = 1 and K = 0, padded leading
 * dimensions, and alpha/beta values 0, 1 and others. */
static void test_gemm_against_exact(void) {
    static const int shapes[][3] = {{1, 1, 1},   {1, 17, 5},    {37, 53, 71},  {64, 256, 256},
                                    {65, 257, 300}, {130, 33, 513}, {3, 1000, 7}, {29, 31, 1},
                                    {7, 9, 0}};
    static const float ab[][2] = {{1, 0}, {1, 1}, {-0.75f, 0.5f}, {0.5f, 0}, {0, 0.25f}, {2, -1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (size_t v = 0; v < sizeof ab / sizeof ab[0]; v++)
                check_gemm(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], ab[v][0],
                           ab[v][1], (int)(s + v) % 3 ? 3 : 0);
}

/* ---- bf16 compute (kernels/gemm.h: --dtype bf16) ---- */

/* Round to nearest even, as torch's float -> bfloat16 conversion: exact values stay, halfway cases
 * go to the even neighbour, infinities stay, NaN stays NaN, the largest floats overflow to inf. */
static void test_bf16_round(void) {
    const float h = ldexpf(1.0f, -8); /* half a unit in the last place of bf16 at 1 */
    const float cases[][2] = {
        {1.0f, 1.0f}, {-2.5f, -2.5f}, {0.0f, 0.0f},
        {1.0f + h, 1.0f},                                   /* tie, even below */
        {1.0f + 3 * h, 1.0f + 4 * h},                       /* tie, odd below: up */
        {1.0f + h + ldexpf(1.0f, -20), 1.0f + 2 * h},       /* just above a tie: up */
        {-(1.0f + h + ldexpf(1.0f, -20)), -(1.0f + 2 * h)}, /* symmetric */
        {1.0f + h - ldexpf(1.0f, -20), 1.0f},               /* just below a tie: down */
        {INFINITY, INFINITY}, {-INFINITY, -INFINITY}, {3.4028235e38f, INFINITY},
        {1e-40f, ldexpf(1.0f, -133)}, /* subnormals round on the same grid: 71362 x 2^-149 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float got = gemm_bf16_round(cases[i][0]);
        CHECK(got == cases[i][1] || (got != got && cases[i][1] != cases[i][1]),
              "bf16 round of %.9g: %.9g, want %.9g", cases[i][0], got, cases[i][1]);
    }
    CHECK(isnan(gemm_bf16_round(NAN)), "bf16 round of NaN is not NaN");
}

static gemm_compute bf16_on(int slots) {
    gemm_compute c = {GEMM_BF16, malloc(gemm_bf16_scratch_bytes(slots)), slots};
    return gemm_set_compute(c);
}

static void bf16_off(gemm_compute prev) {
    free(gemm_set_compute(prev).scratch);
}

/* One bf16 product against double loops over (1) the bf16-rounded operands: the products of two
 * bf16 values are exact in fp32, so only the fp32 accumulation errs and the bound of the fp32 test
 * holds, (K + 3) u (|alpha| sum |a b| + |beta c|), u = 2^-24; and (2) the operands as given: each
 * rounding is at most 2^-9 relative, so |got - exact| <= (2^-8 + 2^-16 + (K + 3) u) times the same
 * magnitude.  Returns the largest error / magnitude against (2) (reported: what bf16 costs). */
static double check_gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad) {
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int arows = ta ? K : M, brows = tb ? N : K;
    float *A = filled((size_t)arows * lda, 4), *B = filled((size_t)brows * ldb, 5);
    float *C0 = filled((size_t)M * ldc, 6), *C = malloc(sizeof(float) * M * ldc);
    for (int i = 0; i < M * ldc; i++) C[i] = i % ldc >= N ? 12345.0f : beta == 0.0f ? NAN : C0[i];
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const double u = ldexp(1.0, -24);
    double worst_r = 0, worst_x = 0, rel = 0;
    int pad_ok = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double sr = 0, sx = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                sr += (double)gemm_bf16_round(a) * gemm_bf16_round(b);
                sx += (double)a * b;
                mag += fabs((double)a * b);
            }
            const double c0 = beta == 0.0f ? 0.0 : C0[(size_t)i * ldc + j], got = C[(size_t)i * ldc + j];
            const double m = fabs(alpha) * mag + fabs(beta * c0) + 1e-30;
            const double er = fabs(got - (alpha * sr + beta * c0)) / ((K + 3) * u * m);
            const double ex = fabs(got - (alpha * sx + beta * c0)) / ((ldexp(1, -7) + ldexp(1, -16) + (K + 3) * u) * m);
            if (!(er <= worst_r)) worst_r = er;
            if (!(ex <= worst_x)) worst_x = ex;
            const double r = fabs(got - (alpha * sx + beta * c0)) / m;
            if (!(r <= rel)) rel = r;
        }
        for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == 12345.0f;
    }
    CHECK(worst_r <= 1, "bf16 (%s): ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: error against the rounded "
          "operands / bound %.3g (bound (K+3) u sum|alpha a b| + |beta c|)", gemm_bf16_native() ? "native" : "emulated",
          ta, tb, M, N, K, alpha, beta, worst_r);
    CHECK(worst_x <= 1, "bf16: ta=%d tb=%d M=%d N=%d K=%d: error against fp32 operands / bound %.3g "
          "(bound (2^-7 + 2^-16 + (K+3) u) sum|alpha a b| + |beta c|)", ta, tb, M, N, K, worst_x);
    CHECK(pad_ok, "bf16: ta=%d tb=%d M=%d N=%d K=%d: C's padding was written", ta, tb, M, N, K);
    free(A), free(B), free(C0), free(C);
    return rel;
}

/* Every transpose, shapes across the 512-wide rounding tiles (remainders in M, N and K), padded
 * leading dimensions, alpha and beta values: in the path this CPU takes (native or emulated) and,
 * where native exists, in the emulation too. */
static void test_gemm_bf16_against_exact(void) {
    static const int shapes[][3] = {{1, 1, 1},    {37, 53, 71},  {3, 1000, 7},   {29, 31, 1},
                                    {1030, 7, 9}, {5, 1100, 9}, {6, 7, 1500}, {520, 530, 515}};
    static const float ab[][2] = {{1, 0}, {1, 1}, {-0.75f, 0.5f}, {2, -1}};
    const gemm_compute prev = bf16_on(1);
    for (int pass = 0; pass < (gemm_bf16_native() ? 2 : 1); pass++) {
        gemm_bf16_force_emulation(pass);
        double rel = 0;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (size_t v = 0; v < sizeof ab / sizeof ab[0]; v++) {
                    /* the shape across tiles on all three sides: two cases of the sixteen (time) */
                    if (s == 7 && !((t == 0 && v == 1) || (t == 3 && v == 2))) continue;
                    double r = check_gemm_bf16(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], ab[v][0],
                                               ab[v][1], (int)(s + v) % 3 ? 3 : 0);
                    if (r > rel) rel = r;
                }
        char d[200];
        gemm_bf16_describe(d, sizeof d);
        printf("    bf16 GEMM %s: largest |error| against the fp32 operands' exact product: %.2e of sum |a b| "
               "(bound 2^-7 = 7.8e-3)\n", d, rel);
    }
    gemm_bf16_force_emulation(0);
    bf16_off(prev);
    /* restored: fp32 again, to the last bit of the fp32 path */
    CHECK(gemm_get_compute().dtype == GEMM_FP32, "gemm_set_compute did not restore fp32");
}

/* bf16 gemm() from the threads of a parallel region, each with its own scratch slot, gives what
 * one call outside gives (the same tiles and rounding; fp32 summation may differ by thread count,
 * tolerance 1e-5 relative to sum |a b|, about 100 u). */
static void test_gemm_bf16_in_parallel(void) {
    enum { S = 96, P = 4 };
    float *A = filled(S * S, 7), *B = filled(S * S, 8), *want = malloc(sizeof(float) * S * S);
    float *C = malloc(sizeof(float) * P * S * S);
    const gemm_compute prev = bf16_on(P);
    gemm(false, true, S, S, S, 0.5f, A, S, B, S, 0.0f, want, S);
#pragma omp parallel for num_threads(P) schedule(static, 1)
    for (int p = 0; p < P; p++) gemm(false, true, S, S, S, 0.5f, A, S, B, S, 0.0f, C + (size_t)p * S * S, S);
    bf16_off(prev);
    double worst = 0;
    for (int p = 0; p < P; p++)
        for (int i = 0; i < S * S; i++) {
            double e = fabs(C[(size_t)p * S * S + i] - want[i]) / (0.5 * S * 4.0);
            if (!(e <= worst)) worst = e;
        }
    CHECK(worst <= 1e-5, "bf16 gemm in a parallel region of %d threads: worst difference %.3g (tolerance 1e-5 of "
          "sum |a b| ~ 0.5 S 4)", P, worst);
    free(A), free(B), free(want), free(C);
}

/* gemm_set_threads reaches the backend's threads (oneDNN and OpenBLAS take theirs from OpenMP):
 * with 1 thread a large product starts no thread, with 2 it starts at least one.  Runs first,
 * before anything has started OpenMP's threads. */
static void test_gemm_threads(void) {
#ifdef _OPENMP
    int before = os_threads();
    if (before < 0) return; /* no /proc: nothing to count */
    enum { S = 384 };
    float *A = filled(S * S, 1), *B = filled(S * S, 2), *C = filled(S * S, 3);
    gemm_set_threads(1);
    gemm(false, false, S, S, S, 1.0f, A, S, B, S, 0.0f, C, S);
    int one = os_threads();
    gemm_set_threads(2);
    gemm(false, false, S, S, S, 1.0f, A, S, B, S, 0.0f, C, S);
    int two = os_threads();
    CHECK(one == before, "%s: %d threads before, %d after a product with gemm_set_threads(1)",
          gemm_backend(), before, one);
    CHECK(two > before, "%s: %d threads before, %d after a product with gemm_set_threads(2)",
          gemm_backend(), before, two);
    free(A), free(B), free(C);
#endif
}

/* Called inside an OpenMP parallel region, gemm() runs on the calling thread only: the region's
 * two threads each multiply their own matrices, correctly, and no thread beyond the region's
 * own (two in all) is started. */
static void test_gemm_in_parallel(void) {
#ifdef _OPENMP
    enum { S = 256 };
    gemm_set_threads(2);
    float *A = filled(S * S, 1), *B = filled(S * S, 2), *want = malloc(sizeof(float) * S * S);
    gemm_portable(false, true, S, S, S, 1.0f, A, S, B, S, 0.0f, want, S);
    int before = os_threads();
    double worst = 0;
#pragma omp parallel num_threads(2) reduction(max : worst)
    {
        float *C = malloc(sizeof(float) * S * S);
        for (int r = 0; r < 4; r++) {
            gemm(false, true, S, S, S, 1.0f, A, S, B, S, 0.0f, C, S);
            for (int i = 0; i < S * S; i++) worst = fmax(worst, fabs(C[i] - want[i]));
        }
        free(C);
    }
    int after = os_threads();
    /* entries are sums of 256 products of N(0,1) values (size ~16): 2 (K+3) u |.| ~ 1e-3 */
    CHECK(worst < 1e-3, "%s inside a parallel region: max difference %g from the portable kernel "
          "(tolerance 1e-3)", gemm_backend(), worst);
    CHECK(before < 0 || after <= (before > 2 ? before : 2),
          "%s inside a parallel region of 2 threads: %d threads before, %d after", gemm_backend(),
          before, after);
    free(A), free(B), free(want);
#endif
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
    RUN(test_gemm_threads); /* first: counts the threads OpenMP starts */
    RUN(test_gemm_in_parallel);
    RUN(test_gemm_against_exact);
    RUN(test_bf16_round);
    RUN(test_gemm_bf16_against_exact);
    RUN(test_gemm_bf16_in_parallel);
    RUN(test_rmsnorm_backward);
    RUN(test_swiglu_backward);
    RUN(test_rope);
    RUN(test_attention_backward_and_causality);
    RUN(test_grouped_query_attention);
    RUN(test_softmax_xent);
    TEST_END();
}
