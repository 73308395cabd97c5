/* A matrix stored in one of loqt's storage formats, with the few operations the low-rank methods
 * need: set from fp32 (quantize / round), read rows back as fp32, account, save and load.
 *   QMAT_F32   plain fp32
 *   QMAT_BF16  bfloat16 (round to nearest even, or stochastic rounding for trained factors)
 *   QMAT_NF4   NF4, block 64, per-block absmax (optionally double-quantized), see quant/nf4.h */
#ifndef LOQT_QMAT_H
#define LOQT_QMAT_H

#include "core/mem.h"
#include "io/safetensors.h"
#include "quant/nf4.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { QMAT_F32, QMAT_BF16, QMAT_NF4 } qmat_kind;

typedef struct {
    qmat_kind kind;
    int rows, cols;
    mem_cat cat; /* category of F32/BF16 values; NF4 codes are MEM_QWEIGHTS, absmax MEM_QSTATE */
    float *f32;
    uint16_t *bf16;
    nf4_tensor nf4;
} qmat;

int qmat_init(qmat *m, qmat_kind kind, int rows, int cols, bool double_quant, mem_cat cat);
void qmat_free(qmat *m);
/* m <- x (rows*cols fp32), quantized or rounded to nearest.  -1 on non-finite input (NF4). */
int qmat_set(qmat *m, const float *x);
/* m <- x with stochastic rounding for BF16 (unbiased; uniform from (seed, stream, element));
 * other kinds round as qmat_set does. */
int qmat_set_stochastic(qmat *m, const float *x, uint64_t seed, uint64_t stream);
/* Rows [r0, r1) <- x with stochastic rounding (BF16, keyed by the element's index in the whole
 * matrix) or copied (F32); -1 for NF4. */
int qmat_set_rows_stochastic(qmat *m, int r0, int r1, const float *x, uint64_t seed, uint64_t stream);
void qmat_get_rows(const qmat *m, int r0, int r1, float *y);
void qmat_get(const qmat *m, float *y);
void qmat_mem_bytes(const qmat *m, size_t bytes[MEM_NCAT]);
size_t qmat_bytes(const qmat *m);
/* Tensors "<name>" (F32 / BF16) or "<name>.nf4_codes" + "<name>.nf4_absmax" (or the
 * double-quantized state "<name>.nf4_qabsmax", "<name>.nf4_dq_scale", "<name>.nf4_dq_offset"). */
void qmat_save(const qmat *m, st_writer *w, const char *name);
int qmat_load(qmat *m, const st_file *f, const char *name);

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
