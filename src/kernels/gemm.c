#include "kernels/gemm.h"

#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef LOQT_OPENBLAS
#include <cblas.h>
#endif
#ifdef LOQT_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "core/error.h"
/* gemm_set_threads and the single-thread behaviour inside our parallel regions rely on oneDNN
 * taking its threads from the same OpenMP runtime as ours: with its OpenMP runtime it asks
 * omp_get_max_threads() for the team size and runs on one thread when omp_in_parallel(). */
#if DNNL_CPU_THREADING_RUNTIME != DNNL_RUNTIME_OMP
#error "BLAS=dnnl needs a oneDNN built with its OpenMP threading runtime (Debian's libdnnl-dev is)"
#endif
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
#elif defined(LOQT_DNNL)
    /* dnnl_sgemm, not a cached matmul primitive: it is row-major like us, takes any leading
     * dimensions and alpha/beta per call, keeps no state between calls (so it is safe from many
     * threads at once), and picks its kernels for the CPU it runs on (AVX2, AVX-512, ...) by
     * itself.  K = 0 is left to the portable path, which only scales C. */
    if (K <= 0) {
        gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                  beta, C, ldc);
    /* It refuses only what BLAS would (our callers never pass that) or fails to allocate its
     * packing buffers, possibly with part of C written: like any other allocation failure
     * (mem_alloc), that ends the program rather than leaving a wrong product behind. */
    if (st != dnnl_success)
        loqt_die("gemm: oneDNN's sgemm failed (%s) for M %d N %d K %d, lda %d ldb %d ldc %d",
                 dnnl_status2str(st), M, N, K, lda, ldb, ldc);
#else
    gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

const char *gemm_backend(void) {
#if defined(LOQT_OPENBLAS)
    return "openblas";
#elif defined(LOQT_DNNL)
    return "dnnl";
#else
    return "portable";
#endif
}

const char *gemm_kernels(void) {
#if defined(LOQT_OPENBLAS)
    const char *name = openblas_get_corename(); /* what it loaded, after OPENBLAS_CORETYPE */
    return name && *name ? name : "unknown";
#elif defined(LOQT_DNNL)
    /* the widest instruction set oneDNN's kernels use on this CPU ("avx2", ...) */
    const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    return strncmp(isa, "cpu_isa_", 8) ? isa : isa + 8;
#else
    return "c";
#endif
}

void gemm_set_threads(int n) {
    if (n <= 0) return;
#ifdef _OPENMP
    /* also oneDNN's team size (BLAS=dnnl): it asks the OpenMP runtime */
    omp_set_num_threads(n);
#endif
#ifdef LOQT_OPENBLAS
    openblas_set_num_threads(n);
#endif
}
