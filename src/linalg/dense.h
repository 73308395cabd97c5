/* Dense building blocks for the SVD and least-squares code.
 *
 * All of them are deterministic: OpenMP threads split independent outputs, and every sum is
 * accumulated by one thread in a fixed order, so results do not depend on the thread count. */
#ifndef LOQT_DENSE_H
#define LOQT_DENSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* gemm() with a result that does not depend on the number of threads.  OpenBLAS's threaded
 * sgemm does not have that property (1 and 2 threads differ in the last bits), so the output is
 * cut into fixed 256-row or 256-column slabs (along the longer side of C) and each slab is one
 * single-threaded gemm call inside an OpenMP loop: the slabs, and so the arithmetic, are the same
 * whatever the thread count.  Same arguments as gemm(). */
void linalg_gemm_det(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);

/* Gram matrix in double of fp32 data.  of_rows: H (rows x rows) = A A^T; else H (cols x cols) =
 * A^T A.  A is rows x cols, row-major with leading dimension lda.  H is full (both triangles).
 * Products of floats are exact in double, so H is accurate to double rounding of the sums. */
int linalg_gram_d(const float *A, int rows, int cols, int lda, bool of_rows, double *H);

/* In-place inverse of a symmetric positive (semi)definite n x n matrix H via Cholesky.  When the
 * factorization fails or a pivot falls below 1e-12 of the largest diagonal entry (H singular to
 * double precision), a ridge lambda * I is added, starting at 1e-10 * max diagonal and growing
 * 100x per retry; the lambda used (0 if none) goes to *ridge when not NULL.  H is overwritten
 * with (H + lambda I)^{-1} (full, symmetric).  Fails on non-finite input or an all-zero H. */
int linalg_spd_inverse_d(int n, double *H, double *ridge);

/* In-place lower Cholesky factor L (A = L L^T) of a symmetric positive definite n x n matrix
 * (only the lower triangle is read; the upper one is set to 0).  No ridge: -1 with an error when
 * a pivot is not positive. */
int linalg_cholesky_d(int n, double *A);
/* Orthonormalizes the k rows (each of length m, leading dimension m) of Q in place, in order
 * (row i ends up in the span of rows 0..i as far as they are independent): block Gram-Schmidt in
 * panels of 64 rows with two projection passes ("twice is enough") through gemm.  Inside a panel
 * each pass is a Cholesky QR through gemm where the panel is well enough conditioned for it, and
 * modified Gram-Schmidt row by row where it is not.  A row that is numerically dependent on
 * the ones before it is replaced by a random Gaussian row drawn from (seed, stream, row index),
 * orthogonalized, so the result always has k orthonormal rows.  Requires k <= m. */
int linalg_orthonormalize_rows(float *Q, int k, int m, uint64_t seed, uint64_t stream);

/* Bytes of accounted scratch each of the functions above allocates (and frees before returning),
 * for the memory planner. */
size_t linalg_gram_d_scratch(int rows, int cols, bool of_rows);
size_t linalg_spd_inverse_scratch(int n);
size_t linalg_orthonormalize_scratch(int k, int m);
/* Panel passes that took the Cholesky QR path so far (for tests) */
size_t linalg_orthonormalize_fast_panels(void);

#endif
