/* Dot products with 8 independent partial sums: the compiler can keep them in vector registers
 * without reassociating anything (a single running sum is one dependent chain of adds, which
 * cannot be vectorized without -ffast-math), so the summation order, and the result, is fixed by
 * this code whatever the compiler or the number of threads. */
#ifndef LOQT_LINALG_DOT_H
#define LOQT_LINALG_DOT_H

static inline double dot_dd(const double *a, const double *b, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++) acc[u] += a[i + u] * b[i + u];
    double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* fp32 inputs, accumulated in double */
static inline double dot_ff(const float *a, const float *b, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++) acc[u] += (double)a[i + u] * (double)b[i + u];
    double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

#endif
