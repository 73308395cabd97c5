/* The refresh's cost: one randomized SVD (linalg/svd.c, what LoQT, GaLore and Q-GaLore run when
 * they refresh P) of a gradient-shaped matrix, timed by phase, beside the plain GEMM it is built
 * from, and its accuracy for each number of power iterations.
 *
 * Each shape is "MxN:r" (a layer's gradient, out x in, and the rank).  The matrix has a known SVD:
 * G = Q1 diag(s) Q2^T with orthonormal random Q1 (m x T), Q2 (n x T), T = min(m, n, 4 r) and a
 * power-law spectrum s_j = (1 + j)^-decay, so the best rank-r approximation's residual is known.
 * For each power-iteration count q the bench prints one JSON object per line:
 *   seconds          the whole call (median of --repeats)
 *   phase_seconds    the same call by phase (svd_times: sample, products, orthonormalize, gram,
 *                    eigh, vectors)
 *   gemm_seconds     one plain product of the range finder's size (k x m x n, k = r + 10) through
 *                    the same deterministic GEMM the SVD uses; products = 2 q + 2 such GEMMs
 *   vs_gemm          seconds / gemm_seconds: how many plain GEMMs the refresh costs
 *   gflops_products  the rate of the products phase
 *   cholqr_panel_passes  panel passes of the orthonormalizations that took the Cholesky QR path
 *                    (of 2 per 64-row panel per orthonormalization; the others go row by row)
 *   energy_deficit   1 - ||U^T G||_F^2 / sum_{j<r} s_j^2: the share of the top-r energy missed
 *   residual_ratio   ||G - U U^T G||_F / (the optimal rank-r residual): 1 is exact
 *
 *   build/bench/refresh_bench [--shapes 4096x4096:1024,11008x4096:1024] [--power-iters 0,1,2]
 *                             [--repeats 3] [--threads 0] [--decay 0.5]
 * `make refresh-bench` builds it; bench/results/refresh-*.jsonl and docs/benchmarks.md hold runs. */
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/dense.h"
#include "linalg/svd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAX_SHAPES = 16, MAX_Q = 8 };

typedef struct {
    int m, n, r;
} shape;

typedef struct {
    shape shapes[MAX_SHAPES];
    int n_shapes, qs[MAX_Q], n_q, repeats, threads;
    double decay;
} bench_args;

static void usage(void) {
    fprintf(stderr, "usage: refresh_bench [--shapes MxN:r,...] [--power-iters q,...] [--repeats N] "
                    "[--threads N] [--decay D]\n");
}

static int parse_args(int argc, char **argv, bench_args *a) {
    *a = (bench_args){.shapes = {{4096, 4096, 1024}, {11008, 4096, 1024}},
                      .n_shapes = 2, .qs = {0, 1, 2}, .n_q = 3, .repeats = 3, .decay = 0.5};
    for (int i = 1; i < argc; i += 2) { /* options and their values, in pairs */
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--help")) return usage(), 1;
        if (!v) return fprintf(stderr, "refresh_bench: %s needs a value\n", argv[i]), -1;
        if (!strcmp(argv[i], "--shapes")) {
            a->n_shapes = 0;
            for (const char *p = v; *p && a->n_shapes < MAX_SHAPES;) {
                shape s;
                int used = 0;
                if (sscanf(p, "%dx%d:%d%n", &s.m, &s.n, &s.r, &used) != 3 || s.m < 1 || s.n < 1 ||
                    s.r < 1 || s.r + 10 > (s.m < s.n ? s.m : s.n))
                    return fprintf(stderr, "refresh_bench: bad shape at '%s' (MxN:r, r + 10 <= min)\n", p), -1;
                a->shapes[a->n_shapes++] = s;
                p += used;
                if (*p == ',') p++;
            }
        } else if (!strcmp(argv[i], "--power-iters")) {
            a->n_q = 0;
            for (char *p = (char *)v; *p && a->n_q < MAX_Q;) {
                long q = strtol(p, &p, 10);
                if (q < 0 || q > 20) return fprintf(stderr, "refresh_bench: power iterations in 0..20\n"), -1;
                a->qs[a->n_q++] = (int)q;
                if (*p == ',') p++;
                else if (*p) return fprintf(stderr, "refresh_bench: bad --power-iters '%s'\n", v), -1;
            }
        } else if (!strcmp(argv[i], "--repeats")) {
            a->repeats = atoi(v);
        } else if (!strcmp(argv[i], "--threads")) {
            a->threads = atoi(v);
        } else if (!strcmp(argv[i], "--decay")) {
            a->decay = atof(v);
        } else {
            return fprintf(stderr, "refresh_bench: unknown option %s\n", argv[i]), usage(), -1;
        }
    }
    if (a->repeats < 1) return fprintf(stderr, "refresh_bench: --repeats must be >= 1\n"), -1;
    return 0;
}

/* T orthonormal random rows of length len */
static float *orthonormal_rows(int T, int len, uint64_t stream) {
    float *Q = malloc(sizeof(float) * (size_t)T * len);
    if (!Q) return NULL;
    for (size_t i = 0; i < (size_t)T * len; i++) Q[i] = rng_normal(7, stream, i);
    if (linalg_orthonormalize_rows(Q, T, len, 7, stream + 100)) {
        free(Q);
        return NULL;
    }
    return Q;
}

/* G (m x n) = Q1^T diag(s) Q2 with Q1 (T x m), Q2 (T x n) of orthonormal rows */
static float *known_matrix(int m, int n, int T, const double *s) {
    float *Q1 = orthonormal_rows(T, m, 1), *Q2 = orthonormal_rows(T, n, 2);
    float *G = malloc(sizeof(float) * (size_t)m * n);
    if (!Q1 || !Q2 || !G) {
        free(Q1), free(Q2), free(G);
        return NULL;
    }
    for (int j = 0; j < T; j++)
        for (int c = 0; c < m; c++) Q1[(size_t)j * m + c] *= (float)s[j];
    linalg_gemm_det(true, false, m, n, T, 1.0f, Q1, m, Q2, n, 0.0f, G, n);
    free(Q1), free(Q2);
    return G;
}

/* ||U^T G||_F^2 and ||G - U U^T G||_F^2, U m x r with orthonormal columns */
static void captured(const float *G, const float *U, int m, int n, int r, double *energy,
                     double *resid) {
    float *UG = malloc(sizeof(float) * (size_t)r * n), *R = malloc(sizeof(float) * (size_t)m * n);
    linalg_gemm_det(true, false, r, n, m, 1.0f, U, r, G, n, 0.0f, UG, n);
    memcpy(R, G, sizeof(float) * (size_t)m * n);
    linalg_gemm_det(false, false, m, n, r, -1.0f, U, r, UG, n, 1.0f, R, n);
    double e = 0.0, q = 0.0;
    for (size_t i = 0; i < (size_t)r * n; i++) e += (double)UG[i] * UG[i];
    for (size_t i = 0; i < (size_t)m * n; i++) q += (double)R[i] * R[i];
    free(UG), free(R);
    *energy = e, *resid = q;
}

static int threads_used(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* one plain range-finder product (Yt = Omega^T A^T, k x m x n), median of repeats */
static double gemm_seconds(const float *G, int m, int n, int k, int repeats) {
    const int p = m < n ? m : n, q = m < n ? n : m;
    float *X = malloc(sizeof(float) * (size_t)k * q), *Y = malloc(sizeof(float) * (size_t)k * p);
    for (size_t i = 0; i < (size_t)k * q; i++) X[i] = rng_normal(3, 0, i);
    double t[64];
    for (int i = 0; i < repeats && i < 64; i++) {
        const double t0 = loqt_now();
        if (m <= n) linalg_gemm_det(false, true, k, m, n, 1.0f, X, n, G, n, 0.0f, Y, m);
        else linalg_gemm_det(false, false, k, n, m, 1.0f, X, m, G, n, 0.0f, Y, n);
        t[i] = loqt_now() - t0;
    }
    free(X), free(Y);
    return median(t, repeats < 64 ? repeats : 64);
}

static int bench_shape(const bench_args *a, shape sh) {
    const int m = sh.m, n = sh.n, r = sh.r, p = m < n ? m : n;
    const int T = p < 4 * r ? p : 4 * r, k = r + 10;
    double *s = malloc(sizeof(double) * T), top = 0.0, tail = 0.0;
    for (int j = 0; j < T; j++) {
        s[j] = pow(1.0 + j, -a->decay);
        if (j < r) top += s[j] * s[j];
        else tail += s[j] * s[j];
    }
    float *G = known_matrix(m, n, T, s);
    float *U = malloc(sizeof(float) * (size_t)m * r), *Vt = malloc(sizeof(float) * (size_t)r * n);
    if (!G || !U || !Vt) return fprintf(stderr, "refresh_bench: out of memory at %dx%d\n", m, n), -1;
    const double gs = gemm_seconds(G, m, n, k, a->repeats);
    for (int qi = 0; qi < a->n_q; qi++) {
        const int q = a->qs[qi];
        double tot[64], ph[SVD_PHASES][64];
        const size_t fast0 = linalg_orthonormalize_fast_panels();
        const int reps = a->repeats < 64 ? a->repeats : 64;
        for (int i = 0; i < reps; i++) {
            svd_times tm = {0};
            svd_opts o = svd_default_opts();
            o.power_iters = q, o.seed = 11, o.stream = (uint64_t)i, o.times = &tm;
            const double t0 = loqt_now();
            if (svd_randomized(G, m, n, r, &o, U, NULL, Vt)) return fprintf(stderr, "refresh_bench: SVD failed\n"), -1;
            tot[i] = loqt_now() - t0;
            for (int f = 0; f < SVD_PHASES; f++) ph[f][i] = tm.seconds[f];
        }
        const double fast = (double)(linalg_orthonormalize_fast_panels() - fast0) / reps;
        double energy, resid;
        captured(G, U, m, n, r, &energy, &resid);
        const double sec = median(tot, reps), prod = median(ph[SVD_PHASE_PRODUCTS], reps);
        printf("{\"kind\":\"refresh\",\"m\":%d,\"n\":%d,\"rank\":%d,\"k\":%d,\"power_iters\":%d,"
               "\"threads\":%d,\"decay\":%g,\"seconds\":%.4f,\"phase_seconds\":{",
               m, n, r, k, q, threads_used(), a->decay, sec);
        for (int f = 0; f < SVD_PHASES; f++)
            printf("%s\"%s\":%.4f", f ? "," : "", svd_phase_names[f], median(ph[f], reps));
        printf("},\"gemm_seconds\":%.4f,\"gemm_gflops\":%.1f,\"vs_gemm\":%.2f,"
               "\"gflops_products\":%.1f,\"cholqr_panel_passes\":%.0f,\"energy_deficit\":%.3e,"
               "\"residual_ratio\":%.5f}\n",
               gs, 2e-9 * k * m * n / gs, sec / gs, (2.0 * q + 2) * 2e-9 * k * m * n / prod,
               fast, 1.0 - energy / top, sqrt(resid / tail));
        fflush(stdout);
    }
    free(s), free(G), free(U), free(Vt);
    return 0;
}

int main(int argc, char **argv) {
    bench_args a;
    const int rc = parse_args(argc, argv, &a);
    if (rc) return rc > 0 ? 0 : 2;
    if (a.threads > 0) gemm_set_threads(a.threads);
    for (int i = 0; i < a.n_shapes; i++)
        if (bench_shape(&a, a.shapes[i])) return 1;
    return 0;
}
