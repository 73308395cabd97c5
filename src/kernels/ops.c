#include "kernels/ops.h"

#include "kernels/gemm.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* exp(x) for the softmax and sigmoid loops, written without branches or calls so the compiler
 * vectorises the loops around it (libm's expf is a call per element).  Range reduction
 * x = n ln2 + r with |r| <= ln2/2, then a degree-6 Taylor polynomial: relative error below 3e-7
 * over the clamped range [-87, 88], i.e. within ~2 ulp of expf. */
static inline float exp_approx(float x) {
    /* comparisons, not fmaxf/fminf: without -ffinite-math-only those stay calls into libm (their
     * NaN rules differ from the max/min instructions), and the loops around would not vectorise.
     * A NaN fails the first test and becomes -87: no undefined conversion below. */
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void embedding_forward(float *out, const int32_t *tok, const float *E, int N, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * d, E + (size_t)tok[n] * d, sizeof(float) * d);
}

void embedding_backward(float *dE, const int32_t *tok, const float *dout, int N, int d) {
    /* Rows of the same token would race; parallelise over columns instead. */
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < d; j0 += 64) {
        int j1 = j0 + 64 < d ? j0 + 64 : d;
        for (int n = 0; n < N; n++) {
            float *e = dE + (size_t)tok[n] * d;
            const float *g = dout + (size_t)n * d;
            for (int j = j0; j < j1; j++) e[j] += g[j];
        }
    }
}

void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int d,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * d;
        float *yr = y + (size_t)n * d;
        float ss = 0;
        for (int j = 0; j < d; j++) ss += xr[j] * xr[j];
        float r = 1.0f / sqrtf(ss / d + eps);
        rstd[n] = r;
        for (int j = 0; j < d; j++) yr[j] = xr[j] * r * w[j];
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int N, int d, int accumulate) {
    /* dw is summed over rows in fixed blocks and the block sums are added in order, so the result
     * does not depend on thread scheduling (a resumed run must repeat the same numbers). */
    enum { ROWS = 64 };
    int nblk = (N + ROWS - 1) / ROWS;
    float *part = malloc(sizeof(float) * (size_t)nblk * d);
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        float *pw = part + (size_t)blk * d;
        memset(pw, 0, sizeof(float) * d);
        int n1 = (blk + 1) * ROWS < N ? (blk + 1) * ROWS : N;
        for (int n = blk * ROWS; n < n1; n++) {
            const float *xr = x + (size_t)n * d, *g = dy + (size_t)n * d;
            float *o = dx + (size_t)n * d;
            float r = rstd[n], dot = 0;
            for (int j = 0; j < d; j++) {
                dot += g[j] * w[j] * xr[j];
                pw[j] += g[j] * xr[j] * r;
            }
            float c = dot * r * r * r / d;
            if (accumulate)
                for (int j = 0; j < d; j++) o[j] += g[j] * w[j] * r - xr[j] * c;
            else
                for (int j = 0; j < d; j++) o[j] = g[j] * w[j] * r - xr[j] * c;
        }
    }
    for (int blk = 0; blk < nblk && dw; blk++) /* dw NULL: a frozen norm */
        for (int j = 0; j < d; j++) dw[j] += part[(size_t)blk * d + j];
    free(part);
}

void rope_tables(float *cos_t, float *sin_t, int max_pos, int hd, double theta) {
    int half = hd / 2;
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            /* as Hugging Face computes it, in float32: inv_freq = 1 / theta^(2i/hd), angle = p * inv_freq */
            float inv = 1.0f / powf((float)theta, (float)(2 * i) / (float)hd);
            float a = (float)p * inv;
            cos_t[(size_t)p * half + i] = (float)cos(a);
            sin_t[(size_t)p * half + i] = (float)sin(a);
        }
}

static void rope_apply(float *x, const float *cos_t, const float *sin_t, int B, int T, int H,
                       int hd, float sign) {
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < H; h++) {
            float *v = x + (size_t)n * H * hd + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], sn = sign * s[i];
                v[i] = a * c[i] - b * sn;
                v[i + half] = b * c[i] + a * sn;
            }
        }
    }
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int H, int hd) {
    rope_apply(x, cos_t, sin_t, B, T, H, hd, 1.0f);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int H, int hd) {
    rope_apply(dx, cos_t, sin_t, B, T, H, hd, -1.0f);
}

void swiglu_forward(float *h, const float *g, const float *u, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + exp_approx(-g[i]));
        h[i] = g[i] * sg * u[i];
    }
}

void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + exp_approx(-g[i]));
        float silu = g[i] * sg;
        float gu = dh[i] * u[i];
        du[i] = dh[i] * silu;
        dg[i] = gu * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

long attention_scratch_floats(int T) { return 2L * T * T; }

/* Causal attention works on blocks of query rows: rows [i0, i1) only see keys [0, i1), so the
 * score blocks above the diagonal are never computed (half the work of a full T x T product). */
enum { ATT_BLOCK = 64 };

/* S[i0:i1, 0:i1] = scale * Q[i0:i1] K[0:i1]^T into rows i0..i1 of the T x T scratch, then
 * P = exp(S - lse) with zeros above the diagonal.  With `lse_out` the log-sum-exp is computed and
 * stored (forward); otherwise the saved one is used (backward). */
static void causal_probs(float *S, const float *q, int ld, const float *k, int ldkv, int T, int hd,
                         float scale, int i0, int i1, float *lse_out, const float *lse_in) {
    gemm(false, true, i1 - i0, i1, hd, scale, q + (size_t)i0 * ld, ld, k, ldkv, 0.0f,
         S + (size_t)i0 * T, T);
    for (int i = i0; i < i1; i++) {
        float *row = S + (size_t)i * T;
        if (lse_out) {
            float mx = -FLT_MAX, sum = 0;
            for (int j = 0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            for (int j = 0; j <= i; j++) {
                row[j] = exp_approx(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j <= i; j++) row[j] *= inv;
            lse_out[i] = mx + logf(sum);
        } else {
            float l = lse_in[i];
            for (int j = 0; j <= i; j++) row[j] = exp_approx(row[j] - l);
        }
        for (int j = i + 1; j < i1; j++) row[j] = 0.0f;
    }
}

void attention_forward(float *o, float *lse, const float *q, const float *k, const float *v, int B,
                       int T, int H, int Hkv, int hd, float *scratch) {
    const int ld = H * hd, ldkv = Hkv * hd, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *S = scratch + (size_t)thread_id() * attention_scratch_floats(T);
        size_t off = (size_t)b * T * ld + (size_t)h * hd;
        size_t okv = (size_t)b * T * ldkv + (size_t)(h / group) * hd; /* the head's key/value head */
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T;
            causal_probs(S, q + off, ld, k + okv, ldkv, T, hd, scale, i0, i1, lse + (size_t)bh * T, NULL);
            gemm(false, false, i1 - i0, hd, i1, 1.0f, S + (size_t)i0 * T, T, v + okv, ldkv, 0.0f,
                 o + off + (size_t)i0 * ld, ld);
        }
    }
}

/* One query head's share of the backward: dq of head h, and its contribution to dk, dv of its
 * key/value head (accumulated: the heads of a group add into the same rows). */
static void attention_backward_head(float *dq, float *dk, float *dv, const float *dout, const float *o,
                                    const float *lse, const float *q, const float *k, const float *v,
                                    int T, int ld, int ldkv, int hd, float scale, float *P) {
    float *dP = P + (size_t)T * T;
    for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
        int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, m = i1 - i0;
        const float *dob = dout + (size_t)i0 * ld;
        float *Pb = P + (size_t)i0 * T, *dPb = dP + (size_t)i0 * T;
        causal_probs(P, q, ld, k, ldkv, T, hd, scale, i0, i1, NULL, lse);
        /* dV[0:i1] += P^T dO;  dP = dO V[0:i1]^T */
        gemm(true, false, i1, hd, m, 1.0f, Pb, T, dob, ld, 1.0f, dv, ldkv);
        gemm(false, true, m, i1, hd, 1.0f, dob, ld, v, ldkv, 0.0f, dPb, T);
        /* dS = P * (dP - rowsum(dO * O)), times the 1/sqrt(hd) inside S */
        for (int i = i0; i < i1; i++) {
            const float *dor = dout + (size_t)i * ld, *orow = o + (size_t)i * ld;
            float D = 0;
            for (int j = 0; j < hd; j++) D += dor[j] * orow[j];
            float *pr = P + (size_t)i * T, *dpr = dP + (size_t)i * T;
            for (int j = 0; j <= i; j++) dpr[j] = pr[j] * (dpr[j] - D) * scale;
            for (int j = i + 1; j < i1; j++) dpr[j] = 0.0f;
        }
        /* dQ[i0:i1] = dS K[0:i1];  dK[0:i1] += dS^T Q[i0:i1] */
        gemm(false, false, m, hd, i1, 1.0f, dPb, T, k, ldkv, 0.0f, dq + (size_t)i0 * ld, ld);
        gemm(true, false, i1, hd, m, 1.0f, dPb, T, q + (size_t)i0 * ld, ld, 1.0f, dk, ldkv);
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *o,
                        const float *lse, const float *q, const float *k, const float *v, int B,
                        int T, int H, int Hkv, int hd, float *scratch) {
    const int ld = H * hd, ldkv = Hkv * hd, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hd);
    /* one task per key/value head: the query heads of its group run one after another, so their
     * sums into dk and dv neither race nor depend on the thread count */
#pragma omp parallel for schedule(dynamic, 1)
    for (int bg = 0; bg < B * Hkv; bg++) {
        int b = bg / Hkv, g = bg % Hkv;
        float *P = scratch + (size_t)thread_id() * attention_scratch_floats(T);
        size_t okv = (size_t)b * T * ldkv + (size_t)g * hd;
        for (int i = 0; i < T; i++) {
            memset(dk + okv + (size_t)i * ldkv, 0, sizeof(float) * hd);
            memset(dv + okv + (size_t)i * ldkv, 0, sizeof(float) * hd);
        }
        for (int h = g * group; h < (g + 1) * group; h++) {
            size_t off = (size_t)b * T * ld + (size_t)h * hd;
            attention_backward_head(dq + off, dk + okv, dv + okv, dout + off, o + off, lse + ((size_t)b * H + h) * T,
                                    q + off, k + okv, v + okv, T, ld, ldkv, hd, scale, P);
        }
    }
}

/* The largest of x[0..V) and the sum of exp(x[j] - mx) (written to dst when given), each with 8
 * partial results: one running max or sum is a chain of dependent instructions that the compiler
 * may not reorder (it would change the rounding), so it could not vectorise. */
static float row_max(const float *x, int V) {
    float m[8] = {-FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX};
    int j = 0;
    for (; j + 8 <= V; j += 8)
        for (int u = 0; u < 8; u++) m[u] = x[j + u] > m[u] ? x[j + u] : m[u];
    float mx = m[0];
    for (int u = 1; u < 8; u++) mx = m[u] > mx ? m[u] : mx;
    for (; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

static float row_exp_sum(float *dst, const float *x, float mx, int V) {
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= V; j += 8)
        for (int u = 0; u < 8; u++) {
            const float e = exp_approx(x[j + u] - mx);
            if (dst) dst[j + u] = e;
            acc[u] += e;
        }
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; j < V; j++) {
        const float e = exp_approx(x[j] - mx);
        if (dst) dst[j] = e;
        sum += e;
    }
    return sum;
}

double softmax_xent(float *dlogits, const float *logits, const int32_t *targets, int n, int V,
                    float scale) {
    double *row_loss = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * V;
        const float mx = row_max(row, V), target_logit = row[targets[i]];
        /* exponentials go straight into the gradient buffer (may alias the logits) */
        float *dr = dlogits ? dlogits + (size_t)i * V : NULL;
        const float sum = row_exp_sum(dr, row, mx, V);
        if (dr) {
            const float k = scale / sum;
            for (int j = 0; j < V; j++) dr[j] *= k;
            dr[targets[i]] -= scale;
        }
        row_loss[i] = (double)mx + log((double)sum) - target_logit;
    }
    double loss = 0; /* summed in row order: deterministic */
    for (int i = 0; i < n; i++) loss += row_loss[i];
    free(row_loss);
    return loss;
}
