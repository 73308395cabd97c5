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
#include <stddef.h>

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

/* ---- bf16 compute (mixed precision, --dtype bf16) -------------------------------------------
 * With the compute type set to GEMM_BF16, gemm() rounds both operands to bfloat16 (round to
 * nearest even, as torch does) and multiplies them with fp32 accumulation into the fp32 C, alpha
 * and beta applied in fp32: the numerics of torch.autocast's matmuls, except that C is not rounded
 * to bf16 afterwards.  The operands are rounded tile by tile (at most GEMM_BF16_TILE on each side)
 * into a caller-provided scratch buffer, one slot per OpenMP thread (gemm() is also called inside
 * parallel regions: attention), so no call allocates.  The tiles go to oneDNN's bf16 matmul
 * primitive where the CPU has bf16 instructions (AVX512_BF16 or AMX; primitives created once per
 * tile shape and kept in a bounded cache), otherwise back to the fp32 GEMM: the same results up
 * to fp32 summation order, but no speed gain (emulated).
 *
 * The setting is process-wide, so that the threads of a parallel region see it: change it only
 * outside parallel regions, and restore the previous one (the model sets bf16 around its forward
 * and backward only, and fp32 again around the updates and refreshes that per-layer updates run
 * inside backward). */
typedef enum { GEMM_FP32, GEMM_BF16 } gemm_dtype;
typedef struct {
    gemm_dtype dtype;
    void *scratch; /* GEMM_BF16: gemm_bf16_scratch_bytes(slots) bytes, 64-byte aligned */
    int slots;     /* OpenMP threads that may call gemm() at once */
} gemm_compute;
enum { GEMM_BF16_TILE = 512 };

/* Sets the compute type of later gemm() calls and returns the previous one. */
gemm_compute gemm_set_compute(gemm_compute c);
gemm_compute gemm_get_compute(void);
/* The scratch for `slots` threads (planned: model/plan.c allocates it from this size too). */
size_t gemm_bf16_scratch_bytes(int slots);
/* x rounded to bfloat16 (round to nearest even; NaN stays NaN), as a float. */
float gemm_bf16_round(float x);
/* 1 when bf16 GEMMs run on oneDNN's bf16 matmul, 0 when emulated (also when LOQT_BF16_GEMM=emulated
 * in the environment, or after gemm_bf16_force_emulation(1)). */
int gemm_bf16_native(void);
/* "native (brg:avx512_core_bf16)" or "emulated (no bf16 matmul in oneDNN on this CPU, avx2)". */
void gemm_bf16_describe(char *buf, size_t cap);
/* Tests: 1 makes bf16 GEMMs take the emulation even where native ones exist. */
void gemm_bf16_force_emulation(int on);

#endif
