#include "linalg/eigh.h"

#include "core/error.h"
#include "core/mem.h"
#include "linalg/dot.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of work per O(n^2) step below which threads do not pay. */
#define PAR_MIN 192

/* Householder reduction A = Q T Q^T.  Step k maps row k right of the diagonal onto alpha * e1 with
 * H_k = I - beta_k v_k v_k^T (v_k kept in A[k][k+1..n)), and applies H_k from both sides to the
 * trailing block as one symmetric rank-2 update.  d: diagonal, e[k] = T(k, k+1). */
static void tridiagonalize(int n, double *A, double *d, double *e, double *beta, double *p) {
    for (int k = 0; k + 2 < n; k++) {
        double *v = A + (size_t)k * n + k + 1; /* x, becomes v */
        const int L = n - k - 1;
        double nrm2 = 0.0;
        for (int i = 0; i < L; i++) nrm2 += v[i] * v[i];
        d[k] = A[(size_t)k * n + k];
        if (nrm2 == 0.0) {
            e[k] = 0.0;
            beta[k] = 0.0;
            continue;
        }
        double nrm = sqrt(nrm2);
        double alpha = v[0] > 0 ? -nrm : nrm; /* sign chosen so v[0] - alpha does not cancel */
        double vtv = 2.0 * nrm * (nrm + fabs(v[0]));
        v[0] -= alpha;
        const double bk = 2.0 / vtv;
        beta[k] = bk;
        e[k] = alpha;
        double *S = A + (size_t)(k + 1) * n + (k + 1); /* trailing block, leading dimension n */
#pragma omp parallel for schedule(static) if (L >= PAR_MIN)
        for (int i = 0; i < L; i++) {
            const double *s = S + (size_t)i * n;
            p[i] = bk * dot_dd(s, v, L);
        }
        double vp = 0.0;
        for (int i = 0; i < L; i++) vp += v[i] * p[i];
        const double K = 0.5 * bk * vp;
        for (int i = 0; i < L; i++) p[i] -= K * v[i]; /* p becomes w */
#pragma omp parallel for schedule(static) if (L >= PAR_MIN)
        for (int i = 0; i < L; i++) {
            double *s = S + (size_t)i * n;
            const double vi = v[i], wi = p[i];
            for (int j = 0; j < L; j++) s[j] -= vi * p[j] + wi * v[j];
        }
    }
    if (n >= 2) {
        d[n - 2] = A[(size_t)(n - 2) * n + n - 2];
        e[n - 2] = A[(size_t)(n - 2) * n + n - 1];
        beta[n - 2] = 0.0;
    }
    d[n - 1] = A[(size_t)(n - 1) * n + n - 1];
    e[n - 1] = 0.0;
    beta[n - 1] = 0.0;
}

/* Applies the plane rotations of one QL sweep, in order, to rows i, i+1 of Zt.  Columns are
 * independent, so threads take column ranges and each element sees the same operation order. */
static void apply_rotations(int n, double *Zt, const int *ri, const double *rc, const double *rs,
                            int nrot) {
    if (nrot == 0) return;
    const int CH = 128, nch = (n + CH - 1) / CH;
#pragma omp parallel for schedule(static) if ((double)nrot * n >= 1e6)
    for (int ch = 0; ch < nch; ch++) {
        int c0 = ch * CH, c1 = c0 + CH < n ? c0 + CH : n;
        for (int t = 0; t < nrot; t++) {
            double *a = Zt + (size_t)ri[t] * n, *b = a + n;
            const double c = rc[t], s = rs[t];
            for (int j = c0; j < c1; j++) {
                double f = b[j];
                b[j] = s * a[j] + c * f;
                a[j] = c * a[j] - s * f;
            }
        }
    }
}

/* Implicit QL with shifts on the tridiagonal (d, e); accumulates the rotations into Zt (rows =
 * eigenvectors of T) when Zt is given. */
static int tridiag_ql(int n, double *d, double *e, double *Zt, int *ri, double *rc, double *rs) {
    /* An off-diagonal element is negligible relative to its neighbours or to the whole matrix:
     * without the second test a cluster of (near-)zero eigenvalues (a rank-deficient Gram
     * matrix, e.g. the gradient of fewer tokens than the rank) never deflates.  Dropping
     * |e| <= eps * ||T|| moves eigenvalues by at most that much. */
    double anorm = 0;
    for (int i = 0; i < n; i++) anorm = fmax(anorm, fabs(d[i]) + fabs(e[i]));
    const double tiny = DBL_EPSILON * anorm;
    for (int l = 0; l < n; l++) {
        for (int iter = 0;; iter++) {
            int m = l;
            for (; m < n - 1; m++) {
                double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= DBL_EPSILON * dd || fabs(e[m]) <= tiny) break;
            }
            if (m == l) break;
            if (iter == 60) return loqt_set_error("eigh: QL iteration did not converge");
            /* shift: the eigenvalue of the leading 2x2 block nearer to d[l] */
            double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            double r = hypot(g, 1.0);
            g = d[m] - d[l] + e[l] / (g + copysign(r, g));
            double s = 1.0, c = 1.0, p = 0.0;
            int nrot = 0, deflated = 0;
            for (int i = m - 1; i >= l; i--) {
                double f = s * e[i], b = c * e[i];
                r = hypot(f, g);
                e[i + 1] = r;
                if (r == 0.0) { /* underflow: the matrix split; restart on the smaller block */
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = 1;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                ri[nrot] = i;
                rc[nrot] = c;
                rs[nrot] = s;
                nrot++;
            }
            if (Zt) apply_rotations(n, Zt, ri, rc, rs, nrot);
            if (deflated) continue;
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    return 0;
}

/* Eigenvectors of A from those of T: z <- Q z = H_0 H_1 ... H_{n-3} z for each row z of Zt.  Rows
 * go in groups of ZB so each Householder vector is read once per group instead of once per row
 * (the vectors fill the n x n matrix: per row they would stream from memory); each row still
 * sees the same operations in the same order. */
enum { ZB = 8 };
static void back_transform(int n, const double *A, const double *beta, double *Zt) {
    const int ngroups = (n + ZB - 1) / ZB;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int g = 0; g < ngroups; g++) {
        const int j0 = g * ZB, nz = j0 + ZB < n ? ZB : n - j0;
        for (int k = n - 3; k >= 0; k--) {
            if (beta[k] == 0.0) continue;
            const double *v = A + (size_t)k * n + k + 1;
            const int L = n - k - 1;
            for (int j = 0; j < nz; j++) {
                double *zz = Zt + (size_t)(j0 + j) * n + k + 1;
                const double t = beta[k] * dot_dd(v, zz, L);
                for (int i = 0; i < L; i++) zz[i] -= t * v[i];
            }
        }
    }
}

typedef struct {
    double w;
    int i;
} eig_ord;

static int by_desc(const void *a, const void *b) {
    const eig_ord *x = a, *y = b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return x->i - y->i;
}

size_t linalg_eigh_scratch(int n) { return (size_t)n * n * sizeof(double); }

int linalg_eigh_d(int n, double *A, double *w, double *V) {
    if (n <= 0 || !A || !w) return loqt_set_error("eigh: bad arguments (n = %d)", n);
    const size_t nn = (size_t)n * n;
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(A[i])) return loqt_set_error("eigh: matrix has a non-finite entry");
    double *e = malloc(sizeof(double) * n), *beta = malloc(sizeof(double) * n);
    double *p = malloc(sizeof(double) * n), *rc = malloc(sizeof(double) * n);
    double *rs = malloc(sizeof(double) * n);
    int *ri = malloc(sizeof(int) * n);
    eig_ord *ord = malloc(sizeof(eig_ord) * n);
    double *Zt = V ? mem_try_alloc(MEM_SCRATCH, linalg_eigh_scratch(n)) : NULL;
    int rc_ = -1;
    if (!e || !beta || !p || !rc || !rs || !ri || !ord || (V && !Zt)) {
        loqt_set_error("eigh: out of memory (n = %d)", n);
        goto done;
    }
    tridiagonalize(n, A, w, e, beta, p);
    if (Zt)
        for (int i = 0; i < n; i++) Zt[(size_t)i * n + i] = 1.0;
    if (tridiag_ql(n, w, e, Zt, ri, rc, rs)) goto done;
    if (Zt) back_transform(n, A, beta, Zt);
    for (int i = 0; i < n; i++) ord[i] = (eig_ord){w[i], i};
    qsort(ord, (size_t)n, sizeof *ord, by_desc);
    for (int i = 0; i < n; i++) w[i] = ord[i].w;
    if (V)
        for (int i = 0; i < n; i++)
            memcpy(V + (size_t)i * n, Zt + (size_t)ord[i].i * n, sizeof(double) * n);
    rc_ = 0;
done:
    free(e);
    free(beta);
    free(p);
    free(rc);
    free(rs);
    free(ri);
    free(ord);
    mem_free(Zt);
    return rc_;
}
