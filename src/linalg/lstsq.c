#include "linalg/lstsq.h"

#include "core/error.h"
#include "core/mem.h"
#include "linalg/dense.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

/* Bytes of the buffers: the inverse Gram (double), its fp32 copy Hf, and C (R P^T or P^T R:
 * `rows` x r elements). */
static size_t hinv_bytes(int r) { return sizeof(double) * (size_t)r * r; }
static size_t hf_bytes(int r) { return sizeof(float) * (size_t)r * r; }
static size_t c_bytes(int rows, int r) { return sizeof(float) * (size_t)rows * r; }

static int finite_all(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

/* (Gram of P + ridge)^-1 in double, r x r; Gram over rows (P r x n) or columns (P m x r). */
static double *gram_inverse(const float *P, int rows, int cols, bool of_rows, double *ridge) {
    const int r = of_rows ? rows : cols;
    double *H = mem_try_alloc(MEM_SCRATCH, hinv_bytes(r));
    if (!H || linalg_gram_d(P, rows, cols, cols, of_rows, H) || linalg_spd_inverse_d(r, H, ridge)) {
        mem_free(H);
        return NULL;
    }
    return H;
}

/* The pseudo-inverse factor in fp32, formed in double: of_rows: Z (n x r) = P^T Hinv for P r x n;
 * else Z (r x m) = Hinv P^T for P m x r.  Used when a ridge was needed: Hinv then has entries of
 * order 1/ridge along P's null space, and only a product taken in double cancels them exactly
 * (P has no component there); an fp32 product would turn rounding noise into large errors. */
static float *pinv_factor(const float *P, int rows, int cols, bool of_rows, const double *Hi) {
    const int r = of_rows ? rows : cols, len = of_rows ? cols : rows;
    float *Z = mem_try_alloc(MEM_SCRATCH, sizeof(float) * (size_t)len * r);
    if (!Z) return NULL;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < len; t++) {
        for (int i = 0; i < r; i++) {
            double acc = 0.0;
            for (int j = 0; j < r; j++) {
                double p = of_rows ? P[(size_t)j * cols + t] : P[(size_t)t * cols + j];
                acc += p * Hi[(size_t)j * r + i];
            }
            if (of_rows) Z[(size_t)t * r + i] = (float)acc;
            else Z[(size_t)i * len + t] = (float)acc;
        }
    }
    return Z;
}

static float *to_float(const double *H, size_t n) {
    float *F = mem_try_alloc(MEM_SCRATCH, sizeof(float) * n);
    if (F)
        for (size_t i = 0; i < n; i++) F[i] = (float)H[i];
    return F;
}


static void plan_common(mem_sim *s, int r, int gram_rows, int gram_cols, bool of_rows, int c_rows) {
    mem_sim_alloc(s, MEM_SCRATCH, hinv_bytes(r));
    mem_sim_temp(s, MEM_SCRATCH, linalg_gram_d_scratch(gram_rows, gram_cols, of_rows));
    mem_sim_temp(s, MEM_SCRATCH, linalg_spd_inverse_scratch(r));
    mem_sim_alloc(s, MEM_SCRATCH, hf_bytes(r));
    mem_sim_alloc(s, MEM_SCRATCH, c_bytes(c_rows, r));
    mem_sim_free(s, MEM_SCRATCH, hf_bytes(r));
    mem_sim_free(s, MEM_SCRATCH, c_bytes(c_rows, r));
    mem_sim_free(s, MEM_SCRATCH, hinv_bytes(r));
}

void lstsq_xp_plan(mem_sim *s, int m, int n, int r) { plan_common(s, r, r, n, true, m); }
void lstsq_px_plan(mem_sim *s, int m, int r, int n) { plan_common(s, r, m, r, false, n); }

int lstsq_xp(const float *R, int m, int n, const float *P, int r, float *X, double *ridge) {
    if (!R || !P || !X || m <= 0 || n <= 0 || r <= 0)
        return loqt_set_error("lstsq_xp: bad arguments (m %d, n %d, r %d)", m, n, r);
    if (!finite_all(P, (size_t)r * n) || !finite_all(R, (size_t)m * n))
        return loqt_set_error("lstsq_xp: non-finite input");
    double lambda = 0.0;
    double *Hi = gram_inverse(P, r, n, true, &lambda);
    if (!Hi) return -1;
    int rc = -1;
    if (lambda == 0.0) {
        float *Hf = to_float(Hi, (size_t)r * r);
        float *C = mem_try_alloc(MEM_SCRATCH, c_bytes(m, r));
        if (Hf && C) {
            linalg_gemm_det(false, true, m, r, n, 1.0f, R, n, P, n, 0.0f, C, r);   /* R P^T */
            linalg_gemm_det(false, false, m, r, r, 1.0f, C, r, Hf, r, 0.0f, X, r); /* (P P^T)^-1 */
            rc = 0;
        }
        mem_free(Hf);
        mem_free(C);
    } else {
        float *Z = pinv_factor(P, r, n, true, Hi);
        if (Z) {
            linalg_gemm_det(false, false, m, r, n, 1.0f, R, n, Z, r, 0.0f, X, r);
            rc = 0;
        }
        mem_free(Z);
    }
    mem_free(Hi);
    if (ridge) *ridge = lambda;
    return rc;
}

int lstsq_px(const float *P, int m, int r, const float *R, int n, float *X, double *ridge) {
    if (!R || !P || !X || m <= 0 || n <= 0 || r <= 0)
        return loqt_set_error("lstsq_px: bad arguments (m %d, n %d, r %d)", m, n, r);
    if (!finite_all(P, (size_t)m * r) || !finite_all(R, (size_t)m * n))
        return loqt_set_error("lstsq_px: non-finite input");
    double lambda = 0.0;
    double *Hi = gram_inverse(P, m, r, false, &lambda);
    if (!Hi) return -1;
    int rc = -1;
    if (lambda == 0.0) {
        float *Hf = to_float(Hi, (size_t)r * r);
        float *C = mem_try_alloc(MEM_SCRATCH, c_bytes(n, r));
        if (Hf && C) {
            linalg_gemm_det(true, false, r, n, m, 1.0f, P, r, R, n, 0.0f, C, n);   /* P^T R */
            linalg_gemm_det(false, false, r, n, r, 1.0f, Hf, r, C, n, 0.0f, X, n); /* (P^T P)^-1 */
            rc = 0;
        }
        mem_free(Hf);
        mem_free(C);
    } else {
        float *Z = pinv_factor(P, m, r, false, Hi);
        if (Z) {
            linalg_gemm_det(false, false, r, n, m, 1.0f, Z, m, R, n, 0.0f, X, n);
            rc = 0;
        }
        mem_free(Z);
    }
    mem_free(Hi);
    if (ridge) *ridge = lambda;
    return rc;
}
