#include "linalg/dense.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/dot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ==== deterministic gemm ====================================================================== */

enum { SLAB = 256 };

#ifdef LOQT_OPENBLAS
/* OpenBLAS extensions (declared here so this file needs no particular cblas.h) */
int openblas_get_parallel(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
#endif

void linalg_gemm_det(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int saved = 0;
#ifdef LOQT_OPENBLAS
    /* A pthreads OpenBLAS (linked by mistake instead of the OpenMP one) would start its own
     * threads inside our loop, and without OpenMP there is no loop to run the slabs in: pin
     * OpenBLAS to one thread for the duration. */
#ifdef _OPENMP
    const bool pin = openblas_get_parallel() == 1;
#else
    const bool pin = true;
#endif
    if (pin) {
        saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
    }
#endif
    const bool by_rows = M >= N;
    const int len = by_rows ? M : N, ns = (len + SLAB - 1) / SLAB;
/* always inside a parallel region, even for one slab: OpenBLAS then runs single-threaded */
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < ns; s++) {
        const int o = s * SLAB, w = o + SLAB < len ? SLAB : len - o;
        if (by_rows) /* rows o.. of op(A) and C */
            gemm(ta, tb, w, N, K, alpha, ta ? A + o : A + (size_t)o * lda, lda, B, ldb, beta,
                 C + (size_t)o * ldc, ldc);
        else /* columns o.. of op(B) and C */
            gemm(ta, tb, M, w, K, alpha, A, lda, tb ? B + (size_t)o * ldb : B + o, ldb, beta, C + o,
                 ldc);
    }
#ifdef LOQT_OPENBLAS
    if (saved > 0) openblas_set_num_threads(saved);
#endif
    (void)saved;
}

/* ==== Gram matrix ============================================================================= */

enum { GCH = 256 };

/* H (lower triangle) += D D^T for D p x L (row-major, ld L).  Four rows of H at a time share the
 * loads of row j. */
static void gram_add(const double *D, int p, int L, double *H) {
    const int nib = (p + 3) / 4;
#pragma omp parallel for schedule(dynamic, 4) if ((double)p * p * L >= 4e6)
    for (int ib = 0; ib < nib; ib++) {
        int i0 = ib * 4, i1 = i0 + 4 < p ? i0 + 4 : p;
        for (int i = i0; i < i1; i++) {
            const double *di = D + (size_t)i * L;
            double *h = H + (size_t)i * p;
            for (int j = 0; j <= i; j++) h[j] += dot_dd(di, D + (size_t)j * L, L);
        }
    }
}

size_t linalg_gram_d_scratch(int rows, int cols, bool of_rows) {
    return sizeof(double) * (size_t)(of_rows ? rows : cols) * GCH;
}

int linalg_gram_d(const float *A, int rows, int cols, int lda, bool of_rows, double *H) {
    if (!A || !H || rows <= 0 || cols <= 0 || lda < cols)
        return loqt_set_error("gram: bad arguments (%d x %d, lda %d)", rows, cols, lda);
    const int p = of_rows ? rows : cols, len = of_rows ? cols : rows;
    double *D = mem_try_alloc(MEM_SCRATCH, linalg_gram_d_scratch(rows, cols, of_rows));
    if (!D) return -1;
    memset(H, 0, sizeof(double) * (size_t)p * p);
    for (int c0 = 0; c0 < len; c0 += GCH) {
        const int L = c0 + GCH < len ? GCH : len - c0;
        /* D = the chunk [c0, c0+L) of the summed-over dimension, one row per output index */
        if (of_rows) {
            for (int i = 0; i < p; i++)
                for (int t = 0; t < L; t++)
                    D[(size_t)i * L + t] = A[(size_t)i * lda + c0 + t];
        } else {
            for (int t = 0; t < L; t++)
                for (int i = 0; i < p; i++)
                    D[(size_t)i * L + t] = A[(size_t)(c0 + t) * lda + i];
        }
        gram_add(D, p, L, H);
    }
    for (int i = 0; i < p; i++)
        for (int j = i + 1; j < p; j++) H[(size_t)i * p + j] = H[(size_t)j * p + i];
    mem_free(D);
    return 0;
}

/* ==== SPD inverse with ridge fallback ========================================================= */

/* Lower Cholesky factor of W in place; returns 0, or 1 when a pivot is <= tol or not finite. */
static int cholesky(int n, double *W, double tol) {
    for (int j = 0; j < n; j++) {
        double *wj = W + (size_t)j * n;
        double d = wj[j] - dot_dd(wj, wj, j);
        if (!(d > tol) || !isfinite(d)) return 1;
        const double ljj = sqrt(d);
        wj[j] = ljj;
#pragma omp parallel for schedule(static) if ((double)(n - j) * j >= 1e5)
        for (int i = j + 1; i < n; i++) {
            double *wi = W + (size_t)i * n;
            wi[j] = (wi[j] - dot_dd(wi, wj, j)) / ljj;
        }
    }
    return 0;
}

size_t linalg_spd_inverse_scratch(int n) { return (size_t)n * n * sizeof(double); }

int linalg_cholesky_d(int n, double *A) {
    if (n <= 0 || !A) return loqt_set_error("cholesky: bad arguments (n = %d)", n);
    if (cholesky(n, A, 0.0)) return loqt_set_error("cholesky: the %d x %d matrix is not positive definite", n, n);
    for (int i = 0; i < n; i++) memset(A + (size_t)i * n + i + 1, 0, sizeof(double) * (size_t)(n - 1 - i));
    return 0;
}

int linalg_spd_inverse_d(int n, double *H, double *ridge) {
    if (n <= 0 || !H) return loqt_set_error("spd_inverse: bad arguments (n = %d)", n);
    const size_t nn = (size_t)n * n;
    double maxdiag = 0.0;
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(H[i])) return loqt_set_error("spd_inverse: matrix has a non-finite entry");
    for (int i = 0; i < n; i++) maxdiag = fmax(maxdiag, H[(size_t)i * n + i]);
    if (!(maxdiag > 0.0)) return loqt_set_error("spd_inverse: matrix is zero (or not PSD)");
    double *W = mem_try_alloc(MEM_SCRATCH, linalg_spd_inverse_scratch(n));
    if (!W) return -1;
    double lambda = 0.0;
    int ok = 0;
    for (int attempt = 0; attempt < 8 && !ok; attempt++) {
        memcpy(W, H, nn * sizeof(double));
        for (int i = 0; i < n; i++) W[(size_t)i * n + i] += lambda;
        if (cholesky(n, W, 1e-12 * maxdiag) == 0) ok = 1;
        else lambda = lambda == 0.0 ? 1e-10 * maxdiag : lambda * 100.0;
    }
    if (!ok) {
        mem_free(W);
        return loqt_set_error("spd_inverse: Cholesky failed even with ridge %g", lambda);
    }
    /* X = L^{-1}, built row by row (row i combines rows k < i), stored transposed in H as
     * Y = X^T (upper triangular), so that H^{-1} = X^T X has entries dot(Y_a, Y_b). */
    double *X = H;
    memset(X, 0, nn * sizeof(double));
    for (int i = 0; i < n; i++) {
        const double *li = W + (size_t)i * n;
        double *xi = X + (size_t)i * n;
        for (int k = 0; k < i; k++) {
            const double l = li[k];
            const double *xk = X + (size_t)k * n;
            for (int c = 0; c <= k; c++) xi[c] -= l * xk[c];
        }
        xi[i] += 1.0;
        const double inv = 1.0 / li[i];
        for (int c = 0; c <= i; c++) xi[c] *= inv;
    }
    double *Y = W; /* the factor is no longer needed */
    for (int a = 0; a < n; a++)
        for (int k = 0; k < n; k++) Y[(size_t)a * n + k] = X[(size_t)k * n + a];
#pragma omp parallel for schedule(dynamic, 8) if (n >= 128)
    for (int a = 0; a < n; a++) {
        const double *ya = Y + (size_t)a * n;
        for (int b = 0; b <= a; b++) {
            /* Y rows are zero left of the diagonal: start at max(a, b) = a */
            double v = dot_dd(ya + a, Y + (size_t)b * n + a, n - a);
            H[(size_t)a * n + b] = v;
        }
    }
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++) H[(size_t)a * n + b] = H[(size_t)b * n + a];
    mem_free(W);
    if (ridge) *ridge = lambda;
    return 0;
}

/* ==== row orthonormalization ================================================================== */

enum { NB = 64 };

static void scale_row(float *x, int m, double s) {
    const float f = (float)s;
    for (int i = 0; i < m; i++) x[i] *= f;
}

static void fill_random_row(float *x, int m, uint64_t seed, uint64_t stream, int row, int attempt) {
    const uint64_t base = ((uint64_t)attempt << 48) ^ ((uint64_t)row * (uint64_t)m);
    for (int i = 0; i < m; i++) x[i] = rng_normal(seed, stream ^ 0x6f7274686f6e6f72ull, base + i);
}

/* Slow path for a row that is still dependent after both passes: draw random rows until one
 * survives two full projections against every earlier row. */
static int fix_row(float *Q, int row, int m, uint64_t seed, uint64_t stream) {
    float *x = Q + (size_t)row * m;
    for (int attempt = 1; attempt < 8; attempt++) {
        fill_random_row(x, m, seed, stream, row, attempt);
        double n0 = sqrt(dot_ff(x, x, m)), nrm = 0.0;
        for (int pass = 0; pass < 2; pass++) {
            for (int t = 0; t < row; t++) {
                const float *q = Q + (size_t)t * m;
                const float c = (float)dot_ff(q, x, m);
                for (int i = 0; i < m; i++) x[i] -= c * q[i];
            }
            nrm = sqrt(dot_ff(x, x, m));
        }
        /* a random vector keeps on average sqrt((m - row) / m) of its norm after projecting out
         * `row` orthonormal directions: near a full basis that is small but still fine after two
         * Gram-Schmidt passes, so compare with that, not with a fixed fraction */
        if (nrm > 0.25 * n0 * sqrt((double)(m - row) / m) && n0 > 0.0) {
            scale_row(x, m, 1.0 / nrm);
            return 0;
        }
    }
    return loqt_set_error("orthonormalize: could not complete the basis at row %d", row);
}

/* Scratch of linalg_orthonormalize_rows: the panel coefficients C (k x NB), the panel's Gram
 * matrix and inverse factor in float (NB x NB each) and the rewritten panel (NB x m). */
size_t linalg_orthonormalize_scratch(int k, int m) {
    const size_t kk = (size_t)(k > 0 ? k : 1), mm = (size_t)(m > 0 ? m : 1);
    return sizeof(float) * (kk * NB + 2 * (size_t)NB * NB + (size_t)NB * mm);
}

enum { CHOLQR_MIN_LEN = 256 };
static size_t fast_panels;
size_t linalg_orthonormalize_fast_panels(void) { return fast_panels; }

/* One pass inside a panel by Cholesky QR, all through gemm: G = P P^T, G = L L^T (double),
 * P <- L^{-1} P.  It is taken only where it is as good as Gram-Schmidt: every row kept at least
 * `keep` of its norm `ref` from before this pass's projections (below that the row-by-row path
 * replaces it), and every Cholesky pivot keeps at least 1e-3 of its row's squared norm (the fp32
 * Gram is then accurate to a few ulps of nb relative to the pivot).  Returns 1, having changed
 * nothing, where either fails. */
static int panel_cholqr(float *P, int nb, int m, const double *ref, double keep, float *work) {
    float *Gf = work, *Lf = Gf + NB * NB, *T = Lf + NB * NB;
    double L[NB][NB];
    linalg_gemm_det(false, true, nb, nb, m, 1.0f, P, m, P, m, 0.0f, Gf, nb);
    for (int i = 0; i < nb; i++) {
        const double gii = Gf[(size_t)i * nb + i];
        if (!(gii > keep * keep * ref[i] * ref[i])) return 1;
        for (int j = 0; j <= i; j++) {
            double v = Gf[(size_t)i * nb + j];
            for (int t = 0; t < j; t++) v -= L[i][t] * L[j][t];
            if (j < i) {
                L[i][j] = v / L[j][j];
            } else {
                if (!(v > 1e-3 * gii)) return 1;
                L[i][i] = sqrt(v);
            }
        }
    }
    /* X = L^{-1} (lower triangular), row by row; into Lf as float */
    double X[NB][NB];
    for (int i = 0; i < nb; i++) {
        for (int c = 0; c < nb; c++) X[i][c] = 0.0;
        for (int t = 0; t < i; t++)
            for (int c = 0; c <= t; c++) X[i][c] -= L[i][t] * X[t][c];
        X[i][i] += 1.0;
        for (int c = 0; c <= i; c++) X[i][c] /= L[i][i];
        for (int c = 0; c < nb; c++) Lf[(size_t)i * nb + c] = (float)X[i][c];
    }
    linalg_gemm_det(false, false, nb, m, nb, 1.0f, Lf, nb, P, m, 0.0f, T, m);
    memcpy(P, T, sizeof(float) * (size_t)nb * m);
    return 0;
}

/* One pass inside a panel, row by row (modified Gram-Schmidt): the path for panels that are
 * ill-conditioned or hold rows inside the span of the earlier ones. */
static int panel_rows(float *Q, int j0, int nb, int m, int pass, const double *ref, uint64_t seed,
                      uint64_t stream) {
    float *P = Q + (size_t)j0 * m;
    for (int i = 0; i < nb; i++) {
        float *x = P + (size_t)i * m;
        for (int t = 0; t < i; t++) {
            const float *q = P + (size_t)t * m;
            const float c = (float)dot_ff(q, x, m);
            for (int u = 0; u < m; u++) x[u] -= c * q[u];
        }
        double nrm = sqrt(dot_ff(x, x, m));
        if (pass == 0 && !(nrm > 1e-5 * ref[i] && ref[i] > 0.0)) {
            /* numerically inside the span so far: a random row, nearly orthogonal to
             * everything; the second pass makes it exactly so */
            fill_random_row(x, m, seed, stream, j0 + i, 0);
            nrm = sqrt(dot_ff(x, x, m));
        } else if (pass == 1 && !(nrm > 0.5)) {
            if (fix_row(Q, j0 + i, m, seed, stream)) return -1;
            continue;
        }
        scale_row(x, m, 1.0 / nrm);
    }
    return 0;
}

int linalg_orthonormalize_rows(float *Q, int k, int m, uint64_t seed, uint64_t stream) {
    if (!Q || k < 0 || m <= 0) return loqt_set_error("orthonormalize: bad arguments");
    if (k > m) return loqt_set_error("orthonormalize: %d rows cannot be orthonormal in %d dims", k, m);
    for (size_t i = 0; i < (size_t)k * m; i++)
        if (!isfinite(Q[i])) return loqt_set_error("orthonormalize: non-finite entry");
    float *C = mem_try_alloc(MEM_SCRATCH, linalg_orthonormalize_scratch(k, m));
    if (!C) return -1;
    float *work = C + (size_t)k * NB;
    double ref[NB];
    int rc = 0;
    for (int j0 = 0; j0 < k && rc == 0; j0 += NB) {
        const int nb = j0 + NB < k ? NB : k - j0;
        float *P = Q + (size_t)j0 * m;
        for (int pass = 0; pass < 2 && rc == 0; pass++) {
            /* pass 0 measures dependence against the raw rows; pass 1's rows have norm 1 */
            for (int i = 0; i < nb; i++) ref[i] = pass ? 1.0 : sqrt(dot_ff(P + (size_t)i * m, P + (size_t)i * m, m));
            if (j0 > 0) {
                /* P -= (Qprev P^T)^T Qprev */
                linalg_gemm_det(false, true, j0, nb, m, 1.0f, Q, m, P, m, 0.0f, C, nb);
                linalg_gemm_det(true, false, nb, m, j0, -1.0f, C, nb, Q, m, 1.0f, P, m);
            }
            /* short rows: the row-by-row pass is cheaper than the gemm calls */
            if (m >= CHOLQR_MIN_LEN && panel_cholqr(P, nb, m, ref, pass ? 0.5 : 1e-5, work) == 0) fast_panels++;
            else rc = panel_rows(Q, j0, nb, m, pass, ref, seed, stream);
        }
    }
    mem_free(C);
    return rc;
}
