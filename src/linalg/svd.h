/* Truncated SVD of an m x n fp32 matrix: G ~= U diag(S) Vt with the top r singular triplets.
 *
 * Outputs (each may be NULL when not wanted):
 *   U  m x r, row-major; column i is the i-th left singular vector
 *   S  r singular values, descending
 *   Vt r x n, row-major; row i is the i-th right singular vector
 * Sign convention (singular vectors are defined up to sign): the entry of largest magnitude in
 * each left singular vector is positive (the first such entry on ties), and the right vector
 * follows.  Both methods are deterministic for a given input (and seed) and do not depend on the
 * number of threads.  Inputs must be finite; 1 <= r <= min(m, n).
 * A singular value that is exactly 0 gets a zero vector on the side that is divided by it (the
 * right vector in svd_randomized, the larger-dimension side in svd_exact). */
#ifndef LOQT_SVD_H
#define LOQT_SVD_H

#include <stdint.h>

/* Where svd_randomized's time goes (bench/refresh_bench): the Gaussian sample, the products with
 * A, the orthonormalizations, the Gram matrix B B^T, its eigendecomposition, and the singular
 * vectors from it. */
typedef enum {
    SVD_PHASE_SAMPLE,
    SVD_PHASE_PRODUCTS,
    SVD_PHASE_ORTHONORMALIZE,
    SVD_PHASE_GRAM,
    SVD_PHASE_EIGH,
    SVD_PHASE_VECTORS,
    SVD_PHASES
} svd_phase;
extern const char *const svd_phase_names[SVD_PHASES];
typedef struct {
    double seconds[SVD_PHASES]; /* added to by each call */
} svd_times;

typedef struct {
    int oversample;   /* extra sample vectors p (default 10) */
    int power_iters;  /* q power iterations, each with re-orthonormalization (default 2) */
    uint64_t seed, stream;
    svd_times *times; /* NULL, or where svd_randomized adds each phase's seconds */
} svd_opts;

svd_opts svd_default_opts(void);

/* Randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) on the smaller side:
 * with A = G (m <= n) or G^T, Y = A Omega (k = min(r + p, min(m, n)) Gaussian columns from
 * (seed, stream)), q rounds of Y <- A (A^T Y) with orthonormalization after each product, then
 * B = Q^T A and the SVD of the small B from the eigendecomposition of B B^T in double. */
int svd_randomized(const float *G, int m, int n, int r, const svd_opts *opts, float *U, float *S,
                   float *Vt);

/* Exact truncated SVD for validation and small matrices: one-sided Jacobi (Hestenes) in double on
 * the min(m, n) rows of G or G^T, cyclic sweeps until every pair is orthogonal to
 * max(1e-15, max(m, n) * DBL_EPSILON) relative.
 * O(min(m,n)^2 max(m,n)) per sweep; single-threaded. */
int svd_exact(const float *G, int m, int n, int r, float *U, float *S, float *Vt);

/* Planning twins (core/mem.h mem_sim): the accounted scratch of one call, from the same size
 * tables the calls allocate with. */
#include "core/mem.h"
void svd_randomized_plan(mem_sim *s, int m, int n, int r, const svd_opts *opts);
void svd_exact_plan(mem_sim *s, int m, int n, int r);

#endif
