/* Dense single-precision matrix multiply, row-major.
 *
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
 *
 * op(A) = A (M x K, leading dimension lda) or A^T when ta (A stored K x M).  Same for B.
 * Built on oneDNN's dnnl_sgemm when compiled with BLAS=dnnl (the default), on OpenBLAS's
 * cblas_sgemm with BLAS=openblas, otherwise (BLAS=none) on a blocked, OpenMP-parallel C kernel.
 * Called inside an OpenMP parallel region it runs on the calling thread only (oneDNN and
 * OpenBLAS's OpenMP build do the same; tests/test_ops.c checks it). */
#ifndef LOQT_GEMM_H
#define LOQT_GEMM_H

#include <stdbool.h>

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* The portable kernel, exposed so tests can compare it with the BLAS path. */
void gemm_portable(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);

/* Name of the backend in use ("dnnl", "openblas" or "portable"). */
const char *gemm_backend(void);
/* The kernels the backend runs: OpenBLAS's core name ("SkylakeX", "Haswell", ...), oneDNN's
 * instruction set ("avx2", "avx512_core_bf16", ...), or "c" for the portable kernel. */
const char *gemm_kernels(void);
/* Sets the threads used by the backend (OpenMP's, which oneDNN follows; OpenBLAS's too).  In a
 * build without OpenMP (OMP=0) it does nothing: oneDNN still runs on its own OpenMP runtime
 * then, with OMP_NUM_THREADS threads. */
void gemm_set_threads(int n);

#endif
