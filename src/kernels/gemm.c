#include "kernels/gemm.h"

#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef LOQT_OPENBLAS
#include <cblas.h>
#endif

/* Portable kernel: C is split into 64 x 256 tiles processed in parallel; within a tile the K loop
 * is blocked so a panel of op(B) stays in cache, and the innermost loop runs over contiguous
 * columns of C so the compiler vectorises it.  Transposed operands are read through strides. */
enum { TM = 64, TN = 256, TK = 256 };

static void tile(bool ta, bool tb, int m0, int m1, int n0, int n1, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
    float bpanel[TK * TN];
    for (int k0 = 0; k0 < K; k0 += TK) {
        int k1 = k0 + TK < K ? k0 + TK : K;
        int nn = n1 - n0;
        for (int k = k0; k < k1; k++)
            for (int j = 0; j < nn; j++)
                bpanel[(k - k0) * TN + j] = tb ? B[(size_t)(n0 + j) * ldb + k]
                                               : B[(size_t)k * ldb + n0 + j];
        for (int i = m0; i < m1; i++) {
            float *c = C + (size_t)i * ldc + n0;
            for (int k = k0; k < k1; k++) {
                float a = alpha * (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                const float *b = bpanel + (k - k0) * TN;
                for (int j = 0; j < nn; j++) c[j] += a * b[j];
            }
        }
    }
}

void gemm_portable(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
    if (K <= 0 || alpha == 0.0f) return;
    int tiles_m = (M + TM - 1) / TM, tiles_n = (N + TN - 1) / TN;
    int ntiles = tiles_m * tiles_n;
#ifdef _OPENMP
    int par = !omp_in_parallel() && (double)M * N * K > 1e6;
#endif
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int t = 0; t < ntiles; t++) {
        int tm = t / tiles_n, tn = t % tiles_n;
        int m0 = tm * TM, n0 = tn * TN;
        int m1 = m0 + TM < M ? m0 + TM : M, n1 = n0 + TN < N ? n0 + TN : N;
        tile(ta, tb, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, C, ldc);
    }
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef LOQT_OPENBLAS
    if (K <= 0) {
        gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

const char *gemm_backend(void) {
#ifdef LOQT_OPENBLAS
    return "openblas";
#else
    return "portable";
#endif
}

void gemm_set_threads(int n) {
    if (n <= 0) return;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef LOQT_OPENBLAS
    openblas_set_num_threads(n);
#endif
}
