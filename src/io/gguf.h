/* GGUF version 3, the model file of llama.cpp: a streaming writer and the tensor encodings
 * (F32, F16, Q8_0, Q4_0).
 *
 * File layout (all little-endian): "GGUF", u32 version 3, u64 tensor count, u64 key-value
 * count; the key-values (key as u64 length + bytes, u32 value type, value); the tensor infos
 * (name, u32 n_dims, u64 ne[n_dims] with ne[0] the contiguous dimension, u32 type, u64 offset
 * into the data section); zero padding to the alignment; the data section, every tensor at an
 * offset that is a multiple of the alignment (general.alignment, which the writer records).
 *
 * The writer keeps the key-values and tensor infos in memory (they are small), writes them when
 * the first tensor's data comes, then each tensor as it is handed over, so a model is never held
 * twice.  Tensor data goes to "<path>.tmp", renamed to <path> only when every declared tensor has
 * been written (io/fileutil.h): a failed export never leaves a half-written file under its name. */
#ifndef LOQT_GGUF_H
#define LOQT_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* ggml's type ids */
typedef enum { GGUF_F32 = 0, GGUF_F16 = 1, GGUF_Q4_0 = 2, GGUF_Q8_0 = 8 } gguf_type;

#define GGUF_VERSION 3
#define GGUF_ALIGNMENT 32
#define GGUF_BLOCK 32        /* elements per Q8_0 and Q4_0 block */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 63     /* ggml keeps tensor names in 64 bytes with the NUL */

const char *gguf_type_name(gguf_type t); /* "F32", "F16", "Q4_0", "Q8_0" */
/* Bytes of one row of ne0 elements (a multiple of GGUF_BLOCK for the block types):
 * F32 4 per element, F16 2, Q8_0 34 per block (fp16 scale + 32 int8), Q4_0 18 (fp16 + 16). */
size_t gguf_row_bytes(gguf_type t, int64_t ne0);
/* 1 if rows of ne0 elements can be stored in type t (block types need whole blocks). */
int gguf_type_fits(gguf_type t, int64_t ne0);

/* IEEE binary16 of x, rounded to nearest even (subnormals included); beyond the largest finite
 * half (65504, with rounding) gives infinity; NaN stays a (quiet) NaN. */
uint16_t gguf_f32_to_f16(float x);

/* Encodes n values (a multiple of GGUF_BLOCK for the block types) into dst, gguf_row_bytes(t, n)
 * bytes.  Q8_0 block: d = max|x| / 127 stored as fp16, q = round(x / d) in [-127, 127].  Q4_0
 * block: m = the value of largest magnitude, d = m / -8 stored as fp16, q = round(x / d) + 8
 * clamped to [0, 15], element j in the low nibble of byte j and element j + 16 in its high
 * nibble.  Both divide by the stored (rounded) scale, so the error is at most half a step of it;
 * in Q4_0 the clamp at 15 takes values near -m, up to 8 / (1 - 2^-11) - 7 (about 1.004) steps
 * off.  These are llama.cpp's block formats; its reference quantizer multiplies by the inverse of
 * the unrounded scale and rounds ties away from zero instead (codes can differ by one at such
 * values, within the same bounds).  -1 with an error when a value or a scale does not fit in fp16. */
int gguf_encode(gguf_type t, const float *src, size_t n, void *dst);

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
/* Key-values, in the order they are added (a key must not repeat; the caller's duty). */
void gguf_kv_str(gguf_writer *w, const char *key, const char *value);
void gguf_kv_u32(gguf_writer *w, const char *key, uint32_t value);
void gguf_kv_f32(gguf_writer *w, const char *key, float value);
void gguf_kv_bool(gguf_writer *w, const char *key, int value);
void gguf_kv_arr_str(gguf_writer *w, const char *key, const char *const *values, size_t n);
void gguf_kv_arr_f32(gguf_writer *w, const char *key, const float *values, size_t n);
void gguf_kv_arr_i32(gguf_writer *w, const char *key, const int32_t *values, size_t n);

/* Declares the next tensor (data comes in declaration order): ne[0] is the row length.  -1 with
 * an error for a name too long, a bad shape, or rows that do not fit the type. */
int gguf_add_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, gguf_type type);
/* The bytes gguf_write_tensor will allocate (one encoding buffer, MEM_SCRATCH, for the largest
 * declared tensor that is not F32; F32 data is written as it comes). */
size_t gguf_writer_scratch_bytes(const gguf_writer *w);

/* Opens "<path>.tmp" and writes the header, key-values and tensor infos. */
int gguf_writer_begin(gguf_writer *w, const char *path);
/* The next declared tensor, given as fp32 values in row-major order (ne[0] fastest), encoded to
 * its type.  -1 with an error naming the tensor (a value that does not fit, a write error). */
int gguf_write_tensor(gguf_writer *w, const float *values);
/* After the last tensor: fsync and rename into place.  -1 when tensors are missing. */
int gguf_writer_finish(gguf_writer *w);
/* Frees the writer; an unfinished file's temporary is removed, <path> is untouched. */
void gguf_writer_free(gguf_writer *w);

#endif
