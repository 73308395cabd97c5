/* A matrix stored in one of loqt's storage formats, with the few operations the low-rank methods
 * need: set from fp32 (quantize / round), read rows back as fp32, account, save and load.
 *   QMAT_F32   plain fp32
 *   QMAT_BF16  bfloat16 (round to nearest even, or stochastic rounding for trained factors)
 *   QMAT_NF4   NF4, block 64, per-block absmax (optionally double-quantized), see quant/nf4.h
 *   QMAT_INT8  asymmetric int8, per group of 256 elements of the flattened matrix a scale and a
 *   QMAT_INT4  zero point (int4: two codes per byte), see quant/qint.h qasym (Q-GaLore) */
#ifndef LOQT_QMAT_H
#define LOQT_QMAT_H

#include "core/mem.h"
#include "io/safetensors.h"
#include "quant/nf4.h"
#include "quant/qint.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { QMAT_F32, QMAT_BF16, QMAT_NF4, QMAT_INT8, QMAT_INT4 } qmat_kind;

typedef struct {
    qmat_kind kind;
    int rows, cols;
    mem_cat cat; /* category of F32/BF16 values; NF4 and INT codes are MEM_QWEIGHTS, their
                  * absmax, scales and zero points MEM_QSTATE */
    float *f32;
    uint16_t *bf16;
    nf4_tensor nf4;
    qasym_tensor qa; /* INT8, INT4 */
} qmat;

int qmat_init(qmat *m, qmat_kind kind, int rows, int cols, bool double_quant, mem_cat cat);
void qmat_free(qmat *m);
/* m <- x (rows*cols fp32), quantized or rounded to nearest.  -1 on non-finite input (NF4). */
int qmat_set(qmat *m, const float *x);
/* m <- x with stochastic rounding for BF16 (unbiased; uniform from (seed, stream, element));
 * other kinds round as qmat_set does. */
int qmat_set_stochastic(qmat *m, const float *x, uint64_t seed, uint64_t stream);
/* Rows [r0, r1) <- x with stochastic rounding (BF16, INT8, INT4: keyed by the element's index in
 * the whole matrix, so a row range rounds as the whole matrix would) or copied (F32); -1 for
 * NF4.  INT8 / INT4 requantize whole groups: r0 and r1 must be multiples of qmat_row_unit (or
 * r1 the last row). */
int qmat_set_rows_stochastic(qmat *m, int r0, int r1, const float *x, uint64_t seed, uint64_t stream);
/* Rows [r0, r1) <- x rounded to nearest (the same row rule; -1 for NF4). */
int qmat_set_rows(qmat *m, int r0, int r1, const float *x);
/* The smallest number of rows of `cols` elements that holds whole quantization groups of kind
 * (1 for F32 and BF16): rows written by the functions above start at multiples of it. */
int qmat_row_unit(qmat_kind kind, int cols);
void qmat_get_rows(const qmat *m, int r0, int r1, float *y);
void qmat_get(const qmat *m, float *y);
void qmat_mem_bytes(const qmat *m, size_t bytes[MEM_NCAT]);
size_t qmat_bytes(const qmat *m);
/* Tensors "<name>" (F32 / BF16) or "<name>.nf4_codes" + "<name>.nf4_absmax" (or the
 * double-quantized state "<name>.nf4_qabsmax", "<name>.nf4_dq_scale", "<name>.nf4_dq_offset"),
 * or "<name>.qasym_codes" (U8, packed), "<name>.qasym_scale" (F32), "<name>.qasym_zero" (U8). */
void qmat_save(const qmat *m, st_writer *w, const char *name);
int qmat_load(qmat *m, const st_file *f, const char *name);
/* Whether f holds the matrix `name` saved with kind. */
bool qmat_in_file(const st_file *f, qmat_kind kind, const char *name);

const char *qmat_kind_name(qmat_kind k);

/* Planning twins (core/mem.h mem_sim): the allocations of qmat_init and of one qmat_set /
 * qmat_set_stochastic, from the same size functions. */
void qmat_plan_init(mem_sim *s, qmat_kind kind, size_t n, bool double_quant, mem_cat cat);
void qmat_plan_set(mem_sim *s, qmat_kind kind, size_t n, bool double_quant);
void qmat_plan_free(mem_sim *s, qmat_kind kind, size_t n, bool double_quant, mem_cat cat);

static inline uint16_t f32_to_bf16(float x) {
    uint32_t u;
    __builtin_memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    __builtin_memcpy(&x, &u, 4);
    return x;
}

#endif
