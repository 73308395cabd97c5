/* NF4: 4-bit NormalFloat quantization, bitsandbytes conventions (QLoRA).
 *
 * A tensor of n fp32 values is cut into blocks of 64 consecutive elements (flat, row-major order,
 * so a block may span two rows of a matrix; the last block is partial when 64 does not divide n).
 * Each block keeps its absmax; each value v = x * (1/absmax) is mapped to the nearest entry of the
 * 16-value code book nf4_codebook[].  Nearest is decided by comparing v with the 15 midpoints
 * between neighbouring codes, exactly as bitsandbytes' decision tree does: v > midpoint selects the
 * upper code, so a value exactly on a midpoint gets the LOWER code, and NaN gets code 0.
 * Codes are packed two per byte, element 2j in the high nibble and element 2j+1 in the low nibble
 * (bitsandbytes' kQuantizeBlockwise order); an odd n leaves the low nibble of the last byte 0.
 *
 * Double quantization (optional) stores the per-block absmax values as int8 instead of fp32:
 * offset = mean(absmax); (absmax - offset) is quantized symmetric-linear to int8 in groups of 256
 * blocks (one fp32 scale per group).  The NF4 codes are then chosen against the reconstructed
 * absmax (the scale dequantization actually uses).  See docs/quantization.md for why this differs
 * from bitsandbytes' dynamic-map double quantization.
 *
 * Memory: codes in MEM_QWEIGHTS, absmax / double-quant state in MEM_QSTATE. */
#ifndef LOQT_NF4_H
#define LOQT_NF4_H

#include "core/mem.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NF4_BLOCK 64
#define NF4_DQ_GROUP 256

extern const float nf4_codebook[16];
/* bitsandbytes' thresholds: the midpoints (c[i] + c[i+1]) / 2, to the nearest fp32 (ties between
 * two fp32 values resolved as bitsandbytes' printed constants resolve them) */
extern const float nf4_thresholds[15];

typedef struct {
    size_t n;          /* number of elements */
    size_t nblocks;    /* ceil(n / 64) */
    bool dq;           /* double-quantized absmax */
    uint8_t *codes;    /* nf4_packed_bytes(n) bytes */
    float *absmax;     /* nblocks fp32, NULL when dq */
    int8_t *qabsmax;   /* dq: nblocks int8 */
    float *dq_scale;   /* dq: ceil(nblocks / 256) fp32 */
    float dq_offset;   /* dq: mean of the absmax values */
} nf4_tensor;

/* Which dequantization kernel to use. */
typedef enum { NF4_PATH_AUTO, NF4_PATH_PORTABLE, NF4_PATH_AVX512 } nf4_path;

/* Bytes of packed codes for n elements: ceil(n / 2). */
size_t nf4_packed_bytes(size_t n);
size_t nf4_num_blocks(size_t n);
/* Bytes of quantization state (absmax or its double-quantized form) for n elements. */
size_t nf4_state_bytes(size_t n, bool double_quant);

/* Code of one normalized value (the decision rule above). */
uint8_t nf4_code(float v);

/* Allocates buffers for n elements (n >= 1).  Returns 0, or -1 with loqt_set_error. */
int nf4_init(nf4_tensor *t, size_t n, bool double_quant);
/* Planning twins of nf4_init and nf4_quantize (core/mem.h mem_sim). */
void nf4_plan_init(mem_sim *s, size_t n, bool double_quant);
void nf4_plan_quantize(mem_sim *s, size_t n, bool double_quant);
void nf4_free(nf4_tensor *t);

/* Quantizes x[0..n) into t (buffers are reused, so re-quantizing at a merge allocates nothing).
 * Fails (-1) on a non-finite input value.  OpenMP-parallel; the result does not depend on the
 * number of threads. */
int nf4_quantize(nf4_tensor *t, const float *x);

/* Absmax of block b as dequantization uses it (reconstructed when double-quantized). */
float nf4_block_absmax(const nf4_tensor *t, size_t b);

/* y[0..e1-e0) = dequantized elements [e0, e1).  Any range; the AVX-512 kernel handles whole
 * blocks and the edges go through the portable code, which gives bit-identical values. */
int nf4_dequantize_range(const nf4_tensor *t, size_t e0, size_t e1, float *y);
int nf4_dequantize(const nf4_tensor *t, float *y);
/* Rows [r0, r1) of a row-major [rows x cols] matrix stored in t, written densely into
 * y[(r1-r0) x cols]: what a layer needs to dequantize a row block of W on the fly. */
int nf4_dequantize_rows(const nf4_tensor *t, size_t cols, size_t r0, size_t r1, float *y);
/* The same with an explicit kernel choice (tests, benchmarks).  NF4_PATH_AVX512 fails when the
 * CPU or the build lacks it. */
int nf4_dequantize_range_path(const nf4_tensor *t, size_t e0, size_t e1, float *y, nf4_path path);

/* Whether the AVX-512 kernel is compiled in and the CPU supports it. */
bool nf4_have_avx512(void);

#endif
