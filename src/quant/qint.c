#include "quant/qint.h"

#include "core/error.h"
#include "core/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef _OPENMP
/* threads pay from 64K elements on; nested calls stay on the calling thread */
#define par_ok(work) ((work) >= ((size_t)1 << 16) && !omp_in_parallel())
#endif

/* round-half-even, or stochastic with the uniform of global element i */
static inline float qround(float v, const sround_key *key, size_t i) {
    return key ? sround_apply(v, sround_uniform(key, i)) : rintf(v);
}

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

static int nonfinite(float a) { return !(fabsf(a) <= 3.40282347e38f); }

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

static int check_range(const char *what, size_t e0, size_t e1, size_t n) {
    if (e0 > e1 || e1 > n)
        return loqt_set_error("%s: range [%zu, %zu) outside tensor of %zu elements", what, e0, e1,
                              n);
    return 0;
}

/* nibble i of a high-nibble-first packed array */
static inline unsigned nib_get(const uint8_t *d, size_t i) {
    return (i & 1) ? (d[i >> 1] & 15u) : (d[i >> 1] >> 4);
}

/* ==== symmetric blockwise ===================================================================== */

size_t qsym_data_bytes(size_t n, int bits) { return bits == 4 ? n / 2 + (n & 1) : n; }

int qsym_init(qsym_tensor *t, size_t n, int bits, size_t block) {
    memset(t, 0, sizeof *t);
    if (n == 0 || block == 0) return loqt_set_error("qsym: empty tensor or block");
    if (bits != 8 && bits != 4) return loqt_set_error("qsym: bits must be 8 or 4, got %d", bits);
    if (bits == 4 && (block & 1))
        return loqt_set_error("qsym: int4 needs an even block size, got %zu", block);
    t->n = n;
    t->block = block;
    t->bits = bits;
    t->data = mem_try_alloc(MEM_QWEIGHTS, qsym_data_bytes(n, bits));
    t->scale = mem_try_alloc(MEM_QSTATE, ceil_div(n, block) * sizeof(float));
    if (!t->data || !t->scale) {
        qsym_free(t);
        return -1;
    }
    return 0;
}

void qsym_free(qsym_tensor *t) {
    mem_free(t->data);
    mem_free(t->scale);
    memset(t, 0, sizeof *t);
}

static int qsym_quant(qsym_tensor *t, const float *x, const sround_key *key) {
    if (!t || !t->data || !x) return loqt_set_error("qsym_quantize: tensor not initialized");
    const size_t n = t->n, B = t->block, nb = ceil_div(n, B);
    const float qmax = t->bits == 8 ? 127.0f : 7.0f;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (par_ok(n))
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * B, i1 = i0 + B < n ? i0 + B : n;
        float m = 0.0f;
        int bb = 0;
        for (size_t i = i0; i < i1; i++) {
            float a = fabsf(x[i]);
            bb |= nonfinite(a);
            m = a > m ? a : m;
        }
        if (bb) { /* the call fails; never convert a NaN to int */
            bad = 1;
            continue;
        }
        float s = m / qmax;
        t->scale[b] = s;
        for (size_t i = i0; i < i1; i++) {
            float q = s > 0.0f ? clampf(qround(x[i] / s, key, i), -qmax, qmax) : 0.0f;
            int qi = (int)q;
            if (t->bits == 8) {
                t->data[i] = (uint8_t)(int8_t)qi;
            } else {
                uint8_t nib = (uint8_t)(qi & 15);
                uint8_t *p = &t->data[i >> 1];
                *p = (i & 1) ? (uint8_t)((*p & 0xf0) | nib) : (uint8_t)((*p & 0x0f) | nib << 4);
            }
        }
    }
    if (bad) return loqt_set_error("qsym_quantize: input has a non-finite value");
    return 0;
}

int qsym_quantize(qsym_tensor *t, const float *x) { return qsym_quant(t, x, NULL); }
int qsym_quantize_sr(qsym_tensor *t, const float *x, const sround_key *key) {
    if (!key) return loqt_set_error("qsym_quantize_sr: no random key");
    return qsym_quant(t, x, key);
}

int qsym_value(const qsym_tensor *t, size_t i) {
    if (t->bits == 8) return (int8_t)t->data[i];
    unsigned v = nib_get(t->data, i);
    return v >= 8 ? (int)v - 16 : (int)v;
}

int qsym_dequantize_range(const qsym_tensor *t, size_t e0, size_t e1, float *y) {
    if (!t || !t->data || !y) return loqt_set_error("qsym_dequantize: tensor not initialized");
    if (check_range("qsym_dequantize", e0, e1, t->n)) return -1;
#pragma omp parallel for schedule(static) if (par_ok(e1 - e0))
    for (size_t i = e0; i < e1; i++) y[i - e0] = (float)qsym_value(t, i) * t->scale[i / t->block];
    return 0;
}

int qsym_dequantize(const qsym_tensor *t, float *y) {
    if (!t) return loqt_set_error("qsym_dequantize: tensor not initialized");
    return qsym_dequantize_range(t, 0, t->n, y);
}

/* ==== asymmetric per-group (Q-GaLore) ========================================================= */

size_t qasym_data_bytes(size_t n, int bits) { return qsym_data_bytes(n, bits); }

int qasym_init(qasym_tensor *t, size_t n, int bits, size_t group) {
    memset(t, 0, sizeof *t);
    if (n == 0 || group == 0) return loqt_set_error("qasym: empty tensor or group");
    if (bits != 8 && bits != 4) return loqt_set_error("qasym: bits must be 8 or 4, got %d", bits);
    if (bits == 4 && (group & 1))
        return loqt_set_error("qasym: int4 needs an even group size, got %zu", group);
    t->n = n;
    t->group = group;
    t->bits = bits;
    size_t ng = qasym_groups(n, group);
    t->data = mem_try_alloc(MEM_QWEIGHTS, qasym_data_bytes(n, bits));
    t->scale = mem_try_alloc(MEM_QSTATE, ng * sizeof(float));
    t->zero = mem_try_alloc(MEM_QSTATE, ng);
    if (!t->data || !t->scale || !t->zero) {
        qasym_free(t);
        return -1;
    }
    return 0;
}

void qasym_free(qasym_tensor *t) {
    mem_free(t->data);
    mem_free(t->scale);
    mem_free(t->zero);
    memset(t, 0, sizeof *t);
}

size_t qasym_groups(size_t n, size_t group) { return ceil_div(n, group); }

/* Groups [g0, g1) from x, which holds the elements of those groups (x[0] is element g0 * G). */
static int qasym_quant_groups(qasym_tensor *t, size_t g0, size_t g1, const float *x,
                              const sround_key *key) {
    const size_t n = t->n, G = t->group, e0 = g0 * G;
    const float qmax = t->bits == 8 ? 255.0f : 15.0f;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (par_ok((g1 - g0) * G))
    for (size_t g = g0; g < g1; g++) {
        size_t i0 = g * G, i1 = i0 + G < n ? i0 + G : n;
        float lo = 0.0f, hi = 0.0f;
        int bb = 0;
        for (size_t i = i0; i < i1; i++) {
            const float v = x[i - e0];
            bb |= nonfinite(v);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (bb) {
            bad = 1;
            continue;
        }
        float range = hi - lo;
        float s = (range > 1e-5f ? range : 1e-5f) / qmax;
        float z = clampf(-rintf(lo / s), 0.0f, qmax);
        t->scale[g] = s;
        t->zero[g] = (uint8_t)z;
        for (size_t i = i0; i < i1; i++) {
            unsigned q = (unsigned)clampf(qround(x[i - e0] / s, key, i) + z, 0.0f, qmax);
            if (t->bits == 8) {
                t->data[i] = (uint8_t)q;
            } else {
                uint8_t *p = &t->data[i >> 1];
                *p = (i & 1) ? (uint8_t)((*p & 0xf0) | q) : (uint8_t)((*p & 0x0f) | q << 4);
            }
        }
    }
    if (bad) return loqt_set_error("qasym_quantize: input has a non-finite value");
    return 0;
}

static int qasym_quant(qasym_tensor *t, const float *x, const sround_key *key) {
    if (!t || !t->data || !x) return loqt_set_error("qasym_quantize: tensor not initialized");
    return qasym_quant_groups(t, 0, ceil_div(t->n, t->group), x, key);
}

int qasym_quantize_range(qasym_tensor *t, size_t e0, size_t e1, const float *x,
                         const sround_key *key) {
    if (!t || !t->data || !x) return loqt_set_error("qasym_quantize: tensor not initialized");
    if (check_range("qasym_quantize_range", e0, e1, t->n)) return -1;
    if (e0 % t->group || (e1 % t->group && e1 != t->n))
        return loqt_set_error("qasym_quantize_range: [%zu, %zu) is not a range of whole groups of %zu", e0, e1,
                              t->group);
    /* an odd int4 start would share a byte with the previous group; groups are even, so it cannot */
    return qasym_quant_groups(t, e0 / t->group, ceil_div(e1, t->group), x, key);
}

int qasym_quantize(qasym_tensor *t, const float *x) { return qasym_quant(t, x, NULL); }
int qasym_quantize_sr(qasym_tensor *t, const float *x, const sround_key *key) {
    if (!key) return loqt_set_error("qasym_quantize_sr: no random key");
    return qasym_quant(t, x, key);
}

int qasym_value(const qasym_tensor *t, size_t i) {
    return t->bits == 8 ? (int)t->data[i] : (int)nib_get(t->data, i);
}

int qasym_dequantize_range(const qasym_tensor *t, size_t e0, size_t e1, float *y) {
    if (!t || !t->data || !y) return loqt_set_error("qasym_dequantize: tensor not initialized");
    if (check_range("qasym_dequantize", e0, e1, t->n)) return -1;
#pragma omp parallel for schedule(static) if (par_ok(e1 - e0))
    for (size_t i = e0; i < e1; i++) {
        size_t g = i / t->group;
        y[i - e0] = ((float)qasym_value(t, i) - (float)t->zero[g]) * t->scale[g];
    }
    return 0;
}

int qasym_dequantize(const qasym_tensor *t, float *y) {
    if (!t) return loqt_set_error("qasym_dequantize: tensor not initialized");
    return qasym_dequantize_range(t, 0, t->n, y);
}

/* ==== DQT grid (per tensor or per row) ======================================================= */

size_t qgrid_data_bytes(size_t n, int bits) { return (n * (size_t)bits + 7) / 8; }
size_t qgrid_scale_bytes(size_t nscale) { return nscale * sizeof(float); }

static int qgrid_alloc(qgrid_tensor *t, size_t n, size_t group, int bits, bool ternary) {
    memset(t, 0, sizeof *t);
    if (ternary) bits = 2;
    if (n == 0 || group == 0) return loqt_set_error("qgrid: empty tensor");
    if (bits < 2 || bits > 8) return loqt_set_error("qgrid: bits must be in 2..8, got %d", bits);
    t->n = n;
    t->bits = bits;
    t->ternary = ternary;
    t->qmin = ternary ? -1 : -(1 << (bits - 1));
    t->qmax = ternary ? 1 : (1 << (bits - 1)) - 1;
    t->group = group;
    t->nscale = ceil_div(n, group);
    t->data = mem_try_alloc(MEM_QWEIGHTS, qgrid_data_bytes(n, bits));
    t->scale = mem_try_alloc(MEM_QSTATE, qgrid_scale_bytes(t->nscale));
    if (!t->data || !t->scale) {
        qgrid_free(t);
        return -1;
    }
    return 0;
}

int qgrid_init(qgrid_tensor *t, size_t n, int bits, bool ternary) { return qgrid_alloc(t, n, n, bits, ternary); }

int qgrid_init_rows(qgrid_tensor *t, size_t rows, size_t cols, int bits, bool ternary) {
    return qgrid_alloc(t, rows * cols, cols, bits, ternary);
}

void qgrid_free(qgrid_tensor *t) {
    mem_free(t->data);
    mem_free(t->scale);
    memset(t, 0, sizeof *t);
}

static float grid_qp(int bits, bool ternary) {
    return ternary ? 1.0f : (float)((1 << (bits - 1)) - 1);
}

float qgrid_absmean_delta(const float *x, size_t n, int bits, bool ternary) {
    if (!x || n == 0 || (!ternary && (bits < 2 || bits > 8))) return 0.0f;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabs((double)x[i]);
    return (float)(s / (double)n) / grid_qp(bits, ternary);
}

float qgrid_absmax_delta(const float *x, size_t n, int bits, bool ternary) {
    if (!x || n == 0 || (!ternary && (bits < 2 || bits > 8))) return 0.0f;
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m / grid_qp(bits, ternary);
}

int qgrid_set_delta(qgrid_tensor *t, float delta) {
    if (!(delta >= 0.0f) || nonfinite(delta))
        return loqt_set_error("qgrid: scale must be finite and >= 0, got %g", (double)delta);
    for (size_t g = 0; g < t->nscale; g++) t->scale[g] = delta;
    return 0;
}

int qgrid_qabs(const qgrid_tensor *t) { return -t->qmin > t->qmax ? -t->qmin : t->qmax; }

int qgrid_group_maxabs(const qgrid_tensor *t, size_t g) {
    const size_t i0 = g * t->group, i1 = i0 + t->group < t->n ? i0 + t->group : t->n;
    int m = 0;
#pragma omp parallel for schedule(static) reduction(max : m) if (par_ok(i1 - i0))
    for (size_t i = i0; i < i1; i++) {
        int q = abs(qgrid_value(t, i));
        m = q > m ? q : m;
    }
    return m;
}

/* Bit-packed stream, LSB first.  Chunks of 8 elements occupy exactly `bits` whole bytes, so
 * chunks can be written in parallel without sharing a byte; a chunk only partly inside the range
 * is read, and the fields outside the range are kept. */
int qgrid_quantize_range(qgrid_tensor *t, size_t e0, size_t e1, const float *x, const float *scale,
                         const sround_key *key) {
    if (!t || !t->data || !x) return loqt_set_error("qgrid_quantize: tensor not initialized");
    if (check_range("qgrid_quantize", e0, e1, t->n)) return -1;
    if (e0 == e1) return 0;
    const float *sc = scale ? scale : t->scale;
    const size_t bits = (size_t)t->bits, c0 = e0 / 8, c1 = ceil_div(e1, 8);
    const uint64_t field = (1u << bits) - 1;
    const float lo = (float)t->qmin, hi = (float)t->qmax;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (par_ok(e1 - e0))
    for (size_t c = c0; c < c1; c++) {
        const size_t i0 = c * 8, iend = i0 + 8 < t->n ? i0 + 8 : t->n;
        const size_t nbytes = ((iend - i0) * bits + 7) / 8;
        uint8_t *p = t->data + c * bits;
        uint64_t acc = 0;
        for (size_t k = 0; k < nbytes; k++) acc |= (uint64_t)p[k] << (8 * k);
        const size_t a = i0 > e0 ? i0 : e0, b = iend < e1 ? iend : e1;
        for (size_t i = a; i < b; i++) {
            const float v = x[i - e0], d = sc[i / t->group];
            if (nonfinite(v)) {
                bad = 1;
                continue;
            }
            float q = d > 0.0f ? clampf(qround(v / d, key, i), lo, hi) : 0.0f;
            const size_t sh = (i - i0) * bits;
            acc = (acc & ~(field << sh)) | (uint64_t)((int)q - t->qmin) << sh;
        }
        for (size_t k = 0; k < nbytes; k++) p[k] = (uint8_t)(acc >> (8 * k));
    }
    if (bad) return loqt_set_error("qgrid_quantize: input has a non-finite value");
    return 0;
}

int qgrid_quantize(qgrid_tensor *t, const float *x) {
    if (!t) return loqt_set_error("qgrid_quantize: tensor not initialized");
    return qgrid_quantize_range(t, 0, t->n, x, NULL, NULL);
}

int qgrid_quantize_sr(qgrid_tensor *t, const float *x, const sround_key *key) {
    if (!key) return loqt_set_error("qgrid_quantize_sr: no random key");
    if (!t) return loqt_set_error("qgrid_quantize: tensor not initialized");
    return qgrid_quantize_range(t, 0, t->n, x, NULL, key);
}

int qgrid_value(const qgrid_tensor *t, size_t i) {
    size_t bit = i * (size_t)t->bits, byte = bit >> 3;
    unsigned w = t->data[byte];
    if ((bit & 7) + (size_t)t->bits > 8) w |= (unsigned)t->data[byte + 1] << 8;
    return (int)((w >> (bit & 7)) & ((1u << t->bits) - 1)) + t->qmin;
}

int qgrid_dequantize_range(const qgrid_tensor *t, size_t e0, size_t e1, float *y) {
    if (!t || !t->data || !y) return loqt_set_error("qgrid_dequantize: tensor not initialized");
    if (check_range("qgrid_dequantize", e0, e1, t->n)) return -1;
#pragma omp parallel for schedule(static) if (par_ok(e1 - e0))
    for (size_t i = e0; i < e1; i++) y[i - e0] = (float)qgrid_value(t, i) * t->scale[i / t->group];
    return 0;
}

int qgrid_dequantize(const qgrid_tensor *t, float *y) {
    if (!t) return loqt_set_error("qgrid_dequantize: tensor not initialized");
    return qgrid_dequantize_range(t, 0, t->n, y);
}
