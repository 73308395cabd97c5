/* Integer quantization formats.
 *
 * qsym  — symmetric blockwise int8 / int4: per block of `block` elements scale = absmax / 127
 *         (int8) or absmax / 7 (int4); q = clamp(round(x / scale), -qmax, qmax); x' = q * scale.
 *         int8: one two's-complement byte per element.  int4: two's-complement nibbles, two per
 *         byte, element 2j in the high nibble (the NF4 order).
 * qasym — asymmetric per-group int8 / int4 with a zero point, as Q-GaLore stores weights (int8)
 *         and projections (int4), group 256: with lo = min(min, 0), hi = max(max, 0),
 *         scale = max(hi - lo, 1e-5) / qmax, zero = clamp(-round(lo / scale), 0, qmax),
 *         q = clamp(round(x / scale) + zero, 0, qmax), x' = (q - zero) * scale, qmax = 255 or 15.
 *         Including 0 in the range equals the reference whenever a group has values of both signs
 *         (always, for weights); the reference's plain min/max would saturate a one-signed group.
 *         int4 is packed two per byte (high nibble first); the reference keeps one per byte.
 * qgrid — DQT's n-bit (2..8) or ternary grid: x' = q * delta, q in [-2^(n-1), 2^(n-1) - 1]
 *         (ternary: [-1, 1]), with one fp32 delta per tensor, or one per row of a [rows, cols]
 *         matrix (element i uses scale[i / group], group = n or cols).  Values are stored
 *         bit-packed, n bits each (ternary: 2), LSB-first: element i occupies bits [i*n, i*n + n)
 *         of the byte stream, as q - qmin (unsigned).
 *
 * Rounding: "round" is round-half-to-even (rintf, like torch.round).  Every format has a
 * stochastic-rounding variant (_sr) that replaces round(v) by SR(v) (quant/sround.h); the uniform
 * for element i is drawn at counter key->offset + i.
 *
 * Quantize functions reuse the tensor's buffers and fail (-1) on non-finite input.  Payload
 * bytes are in MEM_QWEIGHTS, scales and zero points in MEM_QSTATE. */
#ifndef LOQT_QINT_H
#define LOQT_QINT_H

#include "quant/sround.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- symmetric blockwise int8 / int4 ---- */
typedef struct {
    size_t n, block;
    int bits;       /* 8 or 4 */
    uint8_t *data;  /* qsym_data_bytes(n, bits) */
    float *scale;   /* ceil(n / block) */
} qsym_tensor;

size_t qsym_data_bytes(size_t n, int bits);
int qsym_init(qsym_tensor *t, size_t n, int bits, size_t block);
void qsym_free(qsym_tensor *t);
int qsym_quantize(qsym_tensor *t, const float *x);
int qsym_quantize_sr(qsym_tensor *t, const float *x, const sround_key *key);
int qsym_dequantize_range(const qsym_tensor *t, size_t e0, size_t e1, float *y);
int qsym_dequantize(const qsym_tensor *t, float *y);
/* Integer value of element i (no bounds check). */
int qsym_value(const qsym_tensor *t, size_t i);

/* ---- asymmetric per-group int8 / int4 with zero point (Q-GaLore) ---- */
#define QASYM_GROUP 256

typedef struct {
    size_t n, group;
    int bits;       /* 8 or 4 */
    uint8_t *data;  /* qasym_data_bytes(n, bits) */
    float *scale;   /* ceil(n / group) */
    uint8_t *zero;  /* ceil(n / group), integer zero points in [0, qmax] */
} qasym_tensor;

size_t qasym_data_bytes(size_t n, int bits);
size_t qasym_groups(size_t n, size_t group); /* scales (fp32) and zero points (one byte) */
int qasym_init(qasym_tensor *t, size_t n, int bits, size_t group);
void qasym_free(qasym_tensor *t);
int qasym_quantize(qasym_tensor *t, const float *x);
int qasym_quantize_sr(qasym_tensor *t, const float *x, const sround_key *key);
/* Elements [e0, e1) from x[0 .. e1 - e0), a range of whole groups (e0 a multiple of the group,
 * e1 too or the end): each group gets a fresh scale and zero point.  key NULL: round to nearest;
 * else stochastic rounding with the uniform of the element's index in the whole tensor, so a
 * range rounds as the whole tensor would. */
int qasym_quantize_range(qasym_tensor *t, size_t e0, size_t e1, const float *x,
                         const sround_key *key);
int qasym_dequantize_range(const qasym_tensor *t, size_t e0, size_t e1, float *y);
int qasym_dequantize(const qasym_tensor *t, float *y);
int qasym_value(const qasym_tensor *t, size_t i); /* unsigned code of element i */

/* ---- DQT n-bit / ternary grid, one scale per tensor or per row ---- */
typedef struct {
    size_t n;
    int bits;       /* 2..8 (ternary: 2) */
    bool ternary;
    int qmin, qmax;
    size_t group;   /* elements per scale: n (per tensor) or the row length (per row) */
    size_t nscale;  /* ceil(n / group) */
    float *scale;   /* nscale deltas, x' = q * scale[i / group] (MEM_QSTATE) */
    uint8_t *data;  /* qgrid_data_bytes(n, bits) (MEM_QWEIGHTS) */
} qgrid_tensor;

size_t qgrid_data_bytes(size_t n, int bits);
/* Bytes of the scales: 4 per tensor, or 4 per row. */
size_t qgrid_scale_bytes(size_t nscale);
/* bits in 2..8; ternary forces the range [-1, 1] (stored in 2 bits).  One scale for the tensor;
 * it starts at 0: set it with qgrid_set_delta (e.g. from qgrid_absmean_delta) before quantizing. */
int qgrid_init(qgrid_tensor *t, size_t n, int bits, bool ternary);
/* The same for a [rows, cols] matrix with one scale per row. */
int qgrid_init_rows(qgrid_tensor *t, size_t rows, size_t cols, int bits, bool ternary);
void qgrid_free(qgrid_tensor *t);
/* DQT / BitNet absmean scale: delta = mean|x| / Qp, Qp = 2^(n-1) - 1 (ternary: 1).  Note that it
 * clips |x| > Qp * delta, i.e. everything beyond the mean magnitude for any bit width.  0 when x
 * is all zero.  Mean accumulated sequentially in double (thread-count independent). */
float qgrid_absmean_delta(const float *x, size_t n, int bits, bool ternary);
/* absmax alternative: delta = max|x| / Qp (no clipping). */
float qgrid_absmax_delta(const float *x, size_t n, int bits, bool ternary);
/* Sets every scale to delta. */
int qgrid_set_delta(qgrid_tensor *t, float delta);
/* Largest code magnitude of the grid: max(|qmin|, qmax), 2^(n-1) for n bits, 1 for ternary. */
int qgrid_qabs(const qgrid_tensor *t);
/* Largest |q| stored in scale group g. */
int qgrid_group_maxabs(const qgrid_tensor *t, size_t g);
int qgrid_quantize(qgrid_tensor *t, const float *x);
int qgrid_quantize_sr(qgrid_tensor *t, const float *x, const sround_key *key);
/* Elements [e0, e1) from x[0 .. e1 - e0): q = clamp(round(x / s), qmin, qmax) with s the
 * element's entry of `scale` (t->scale when NULL), round-half-even, or stochastic when key is
 * given (the uniform of global element i, so a range gets what the whole would).  Any range:
 * bytes shared with elements outside it keep those elements' bits. */
int qgrid_quantize_range(qgrid_tensor *t, size_t e0, size_t e1, const float *x, const float *scale,
                         const sround_key *key);
int qgrid_dequantize_range(const qgrid_tensor *t, size_t e0, size_t e1, float *y);
int qgrid_dequantize(const qgrid_tensor *t, float *y);
int qgrid_value(const qgrid_tensor *t, size_t i); /* signed integer q of element i */

#endif
