#include "linalg/svd.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/progress.h"
#include "core/rng.h"
#include "linalg/dense.h"
#include "linalg/eigh.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

svd_opts svd_default_opts(void) { return (svd_opts){.oversample = 10, .power_iters = 2}; }

const char *const svd_phase_names[SVD_PHASES] = {"sample", "products", "orthonormalize",
                                                 "gram", "eigh", "vectors"};

/* Ends the phase that started at *t0 (when timing) and starts the next one. */
static void phase_end(svd_times *t, svd_phase ph, double *t0) {
    if (!t) return;
    const double t1 = loqt_now();
    t->seconds[ph] += t1 - *t0;
    *t0 = t1;
}

static int check_args(const char *who, const float *G, int m, int n, int r) {
    if (!G || m <= 0 || n <= 0) return loqt_set_error("%s: bad matrix (%d x %d)", who, m, n);
    int p = m < n ? m : n;
    if (r < 1 || r > p) return loqt_set_error("%s: rank %d not in [1, %d]", who, r, p);
    for (size_t i = 0; i < (size_t)m * n; i++)
        if (!isfinite(G[i])) return loqt_set_error("%s: matrix has a non-finite entry", who);
    return 0;
}

/* Flips pairs so the largest-magnitude entry of each left vector (row of Ut) is positive, then
 * writes the outputs: U = Ut^T (m x r), S, Vt (r x n). */
static void emit(const float *Ut, const float *VtIn, const double *sv, int m, int n, int r,
                 float *U, float *S, float *Vt) {
    for (int i = 0; i < r; i++) {
        const float *u = Ut + (size_t)i * m;
        int best = 0;
        for (int a = 1; a < m; a++)
            if (fabsf(u[a]) > fabsf(u[best])) best = a;
        const float sg = u[best] < 0 ? -1.0f : 1.0f;
        if (U)
            for (int a = 0; a < m; a++) U[(size_t)a * r + i] = sg * u[a];
        if (Vt)
            for (int b = 0; b < n; b++) Vt[(size_t)i * n + b] = sg * VtIn[(size_t)i * n + b];
        if (S) S[i] = (float)sv[i];
    }
}

/* ---- randomized --------------------------------------------------------------------------- */

/* A is G (tr = false, G m x n) or G^T (tr = true, G n x m); all products keep vectors as rows.
 * Yt (k x m) = Xt (k x n) A^T */
static void mul_at(const float *G, bool tr, int m, int n, int k, const float *Xt, float *Yt) {
    if (!tr) linalg_gemm_det(false, true, k, m, n, 1.0f, Xt, n, G, n, 0.0f, Yt, m);
    else linalg_gemm_det(false, false, k, m, n, 1.0f, Xt, n, G, m, 0.0f, Yt, m);
}

/* Zt (k x n) = Yt (k x m) A */
static void mul_a(const float *G, bool tr, int m, int n, int k, const float *Yt, float *Zt) {
    if (!tr) linalg_gemm_det(false, false, k, n, m, 1.0f, Yt, m, G, n, 0.0f, Zt, n);
    else linalg_gemm_det(false, true, k, n, m, 1.0f, Yt, m, G, m, 0.0f, Zt, n);
}

/* The work buffers of svd_randomized, in allocation order: Yt, Wt, H, E, Er, UAt, VAt. */
enum { RAND_BUFS = 7 };
static void rand_sizes(int M, int N, int r, const svd_opts *o, size_t b[RAND_BUFS], int *kk) {
    const int m = M > N ? N : M, n = M > N ? M : N;
    const int k = r + o->oversample < m ? r + o->oversample : m;
    const size_t f = sizeof(float), d = sizeof(double);
    const size_t sizes[RAND_BUFS] = {f * k * m, f * k * n, d * k * k, d * k * k, f * r * k, f * r * m, f * r * n};
    memcpy(b, sizes, sizeof sizes);
    *kk = k;
}

void svd_randomized_plan(mem_sim *s, int M, int N, int r, const svd_opts *opts) {
    svd_opts o = opts ? *opts : svd_default_opts();
    size_t b[RAND_BUFS];
    int k;
    rand_sizes(M, N, r, &o, b, &k);
    for (int i = 0; i < RAND_BUFS; i++) mem_sim_alloc(s, MEM_SCRATCH, b[i]);
    mem_sim_temp(s, MEM_SCRATCH, linalg_orthonormalize_scratch(k, M > N ? M : N));
    mem_sim_temp(s, MEM_SCRATCH, linalg_gram_d_scratch(k, M > N ? M : N, true));
    mem_sim_temp(s, MEM_SCRATCH, linalg_eigh_scratch(k));
    for (int i = 0; i < RAND_BUFS; i++) mem_sim_free(s, MEM_SCRATCH, b[i]);
}

int svd_randomized(const float *G, int M, int N, int r, const svd_opts *opts, float *U, float *S,
                   float *Vt) {
    if (check_args("svd_randomized", G, M, N, r)) return -1;
    svd_opts o = opts ? *opts : svd_default_opts();
    if (o.oversample < 0 || o.power_iters < 0)
        return loqt_set_error("svd_randomized: negative oversampling or power iterations");
    const bool tr = M > N;
    const int m = tr ? N : M, n = tr ? M : N; /* A is m x n with m <= n */
    size_t b[RAND_BUFS];
    int k;
    rand_sizes(M, N, r, &o, b, &k);
    float *Yt = mem_try_alloc(MEM_SCRATCH, b[0]);
    float *Wt = mem_try_alloc(MEM_SCRATCH, b[1]);
    double *H = mem_try_alloc(MEM_SCRATCH, b[2]);
    double *E = mem_try_alloc(MEM_SCRATCH, b[3]);
    double *lam = malloc(sizeof(double) * k);
    float *Er = mem_try_alloc(MEM_SCRATCH, b[4]);
    float *UAt = mem_try_alloc(MEM_SCRATCH, b[5]);
    float *VAt = mem_try_alloc(MEM_SCRATCH, b[6]);
    int rc = -1;
    if (!Yt || !Wt || !H || !E || !lam || !Er || !UAt || !VAt) {
        loqt_set_error("svd_randomized: out of memory (%d x %d, k = %d)", M, N, k);
        goto done;
    }
    svd_times *tm = o.times;
    double t0 = tm ? loqt_now() : 0.0;
    /* Omega^T: element (i, j) from counter i * n + j */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n; j++)
            Wt[(size_t)i * n + j] = rng_normal(o.seed, o.stream, (uint64_t)i * n + j);
    phase_end(tm, SVD_PHASE_SAMPLE, &t0);
    uint64_t ostream = o.stream * 0x9e3779b97f4a7c15ull + 1; /* for rare basis completions */
    mul_at(G, tr, m, n, k, Wt, Yt);
    phase_end(tm, SVD_PHASE_PRODUCTS, &t0);
    if (linalg_orthonormalize_rows(Yt, k, m, o.seed, ostream++)) goto done;
    phase_end(tm, SVD_PHASE_ORTHONORMALIZE, &t0);
    for (int it = 0; it < o.power_iters; it++) {
        mul_a(G, tr, m, n, k, Yt, Wt);
        phase_end(tm, SVD_PHASE_PRODUCTS, &t0);
        if (linalg_orthonormalize_rows(Wt, k, n, o.seed, ostream++)) goto done;
        phase_end(tm, SVD_PHASE_ORTHONORMALIZE, &t0);
        mul_at(G, tr, m, n, k, Wt, Yt);
        phase_end(tm, SVD_PHASE_PRODUCTS, &t0);
        if (linalg_orthonormalize_rows(Yt, k, m, o.seed, ostream++)) goto done;
        phase_end(tm, SVD_PHASE_ORTHONORMALIZE, &t0);
    }
    mul_a(G, tr, m, n, k, Yt, Wt); /* B = Q^T A, k x n */
    phase_end(tm, SVD_PHASE_PRODUCTS, &t0);
    if (linalg_gram_d(Wt, k, n, n, true, H)) goto done;
    phase_end(tm, SVD_PHASE_GRAM, &t0);
    if (linalg_eigh_d(k, H, lam, E)) goto done;
    phase_end(tm, SVD_PHASE_EIGH, &t0);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < k; j++) Er[(size_t)i * k + j] = (float)E[(size_t)i * k + j];
    /* B = W diag(lam) W^T-factorization: left vectors of A = Q W, right = B^T W / s */
    linalg_gemm_det(false, false, r, m, k, 1.0f, Er, k, Yt, m, 0.0f, UAt, m);
    linalg_gemm_det(false, false, r, n, k, 1.0f, Er, k, Wt, n, 0.0f, VAt, n);
    for (int i = 0; i < r; i++) {
        lam[i] = lam[i] > 0.0 ? sqrt(lam[i]) : 0.0;
        const float inv = lam[i] > 0.0 ? (float)(1.0 / lam[i]) : 0.0f;
        for (int j = 0; j < n; j++) VAt[(size_t)i * n + j] *= inv;
    }
    if (!tr) emit(UAt, VAt, lam, M, N, r, U, S, Vt);
    else emit(VAt, UAt, lam, M, N, r, U, S, Vt); /* G = A^T = V S U^T */
    phase_end(tm, SVD_PHASE_VECTORS, &t0);
    rc = 0;
done:
    mem_free(Yt);
    mem_free(Wt);
    mem_free(H);
    mem_free(E);
    free(lam);
    mem_free(Er);
    mem_free(UAt);
    mem_free(VAt);
    return rc;
}

/* ---- exact (one-sided Jacobi) -------------------------------------------------------------- */

static double ddot(const double *a, const double *b, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void rotate(double *a, double *b, int n, double c, double s) {
    for (int i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        a[i] = c * x - s * y;
        b[i] = s * x + c * y;
    }
}

typedef struct {
    double s;
    int i;
} sv_ord;

static int sv_desc(const void *a, const void *b) {
    const sv_ord *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i - y->i;
}

/* The work buffers of svd_exact, in allocation order: X, J, Lt, Rt. */
enum { EXACT_BUFS = 4 };
static void exact_sizes(int M, int N, int r, size_t b[EXACT_BUFS]) {
    const size_t p = (size_t)(M > N ? N : M), q = (size_t)(M > N ? M : N);
    b[0] = sizeof(double) * p * q;
    b[1] = sizeof(double) * p * p;
    b[2] = sizeof(float) * (size_t)r * M;
    b[3] = sizeof(float) * (size_t)r * N;
}

void svd_exact_plan(mem_sim *s, int M, int N, int r) {
    size_t b[EXACT_BUFS];
    exact_sizes(M, N, r, b);
    for (int i = 0; i < EXACT_BUFS; i++) mem_sim_alloc(s, MEM_SCRATCH, b[i]);
    for (int i = 0; i < EXACT_BUFS; i++) mem_sim_free(s, MEM_SCRATCH, b[i]);
}

int svd_exact(const float *G, int M, int N, int r, float *U, float *S, float *Vt) {
    if (check_args("svd_exact", G, M, N, r)) return -1;
    const bool tr = M > N;
    const int p = tr ? N : M, q = tr ? M : N; /* X: p rows of length q, rows of G or of G^T */
    size_t b[EXACT_BUFS];
    exact_sizes(M, N, r, b);
    double *X = mem_try_alloc(MEM_SCRATCH, b[0]);
    double *J = mem_try_alloc(MEM_SCRATCH, b[1]);
    sv_ord *ord = malloc(sizeof(sv_ord) * p);
    double *sv = malloc(sizeof(double) * r);
    float *Lt = mem_try_alloc(MEM_SCRATCH, b[2]); /* left, as rows */
    float *Rt = mem_try_alloc(MEM_SCRATCH, b[3]); /* right, as rows */
    int rc = -1;
    if (!X || !J || !ord || !sv || !Lt || !Rt) {
        loqt_set_error("svd_exact: out of memory (%d x %d)", M, N);
        goto done;
    }
    for (int i = 0; i < p; i++) {
        J[(size_t)i * p + i] = 1.0;
        for (int j = 0; j < q; j++)
            X[(size_t)i * q + j] = tr ? G[(size_t)j * N + i] : G[(size_t)i * N + j];
    }
    /* Hestenes: rotate row pairs of X (and J) until all rows are mutually orthogonal; then
     * X = J X0 with J orthogonal, so X0 = J^T X: rows of J are the left vectors of X0. */
    /* a computed dot of two orthogonal length-q vectors is only zero to about q ulps */
    const double tol = fmax(1e-15, q * 2.220446049250313e-16);
    int converged = 0;
    for (int sweep = 0; sweep < 100 && !converged; sweep++) {
        int rotated = 0;
        for (int a = 0; a < p; a++) {
            for (int b = a + 1; b < p; b++) {
                double *xa = X + (size_t)a * q, *xb = X + (size_t)b * q;
                double al = ddot(xa, xa, q), be = ddot(xb, xb, q), ga = ddot(xa, xb, q);
                if (ga == 0.0 || fabs(ga) <= tol * sqrt(al * be)) continue;
                rotated++;
                double zeta = (be - al) / (2.0 * ga);
                double t = copysign(1.0, zeta) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                rotate(xa, xb, q, c, s);
                rotate(J + (size_t)a * p, J + (size_t)b * p, p, c, s);
            }
        }
        converged = rotated == 0;
    }
    if (!converged) {
        loqt_set_error("svd_exact: Jacobi sweeps did not converge");
        goto done;
    }
    for (int i = 0; i < p; i++) ord[i] = (sv_ord){sqrt(ddot(X + (size_t)i * q, X + (size_t)i * q, q)), i};
    qsort(ord, (size_t)p, sizeof *ord, sv_desc);
    for (int i = 0; i < r; i++) {
        const int src = ord[i].i;
        const double s = ord[i].s, inv = s > 0.0 ? 1.0 / s : 0.0;
        sv[i] = s;
        const double *x = X + (size_t)src * q, *j = J + (size_t)src * p;
        /* X0 = G (left = J rows, right = X rows / s) or G^T (the two swap) */
        float *left = Lt + (size_t)i * M, *right = Rt + (size_t)i * N;
        for (int a = 0; a < M; a++) left[a] = (float)(tr ? x[a] * inv : j[a]);
        for (int b = 0; b < N; b++) right[b] = (float)(tr ? j[b] : x[b] * inv);
    }
    emit(Lt, Rt, sv, M, N, r, U, S, Vt);
    rc = 0;
done:
    mem_free(X);
    mem_free(J);
    free(ord);
    free(sv);
    mem_free(Lt);
    mem_free(Rt);
    return rc;
}
