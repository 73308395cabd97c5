/* The model as a llama.cpp GGUF file (docs/export.md): architecture "llama", every llama.*
 * hyperparameter, the tokenizer embedded as a SentencePiece vocabulary whose scores make
 * llama.cpp's tokenizer merge as loqt's does, and the merged weights of any method (each linear
 * layer's export_dense), q and k rows permuted for llama.cpp's RoPE pairing. */
#ifndef LOQT_GGUF_EXPORT_H
#define LOQT_GGUF_EXPORT_H

#include "data/tokenizer.h"
#include "io/gguf.h"
#include "model/llama.h"

#include <stddef.h>

/* The storage type of one tensor under the file type `type`, as llama.cpp's converter and
 * llama-quantize choose: 1-D tensors (the norms) F32; F32 and F16 files store every matrix so;
 * Q8_0 and Q4_0 files quantize the matrices, except that a Q4_0 file keeps `output.weight` in
 * Q8_0 (llama-quantize's choice when it cannot use Q6_K, which loqt does not write); a matrix
 * whose rows are not whole blocks of 32 falls back to F16. */
gguf_type llama_gguf_tensor_type(gguf_type type, const char *name, int n_dims, int64_t ne0);

/* 0 if the model can be exported with this tokenizer, else -1 with an error naming why (a
 * vocabulary smaller than the tokenizer's, grouped-query attention, an odd head size). */
int llama_gguf_check(const llama_model *m, const tokenizer *tk);

/* Writes the model to `path` (through "<path>.tmp", renamed when complete; an existing file is
 * replaced, so the caller decides whether that is wanted).  The tokenizer must not have more
 * pieces than the model's vocabulary; ids past its pieces are written as unused "[PADi]" tokens.
 * Tensors are streamed one at a time: the peak above the loaded model is
 * llama_gguf_scratch_bytes (plus what a method's export_dense of one layer allocates).
 * -1 with an error. */
int llama_export_gguf(const llama_model *m, const tokenizer *tk, const char *path, gguf_type type);

/* MEM_SCRATCH bytes llama_export_gguf allocates for a model of config c: one dense [out, in]
 * buffer of the largest projection, one head of rows for the q/k permutation, and the writer's
 * encoding buffer. */
size_t llama_gguf_scratch_bytes(const llama_config *c, gguf_type type);

/* The row order llama.cpp expects for q and k: within each head of hd rows, row j*hd/2 + i
 * moves to 2i + j (llama.cpp rotates adjacent pairs, Hugging Face rotates (i, i + hd/2)).
 * In place on W[rows, cols], rows = n_heads * hd; tmp holds hd * cols floats. */
void llama_gguf_permute_rope(float *W, int n_heads, int hd, int cols, float *tmp);

#endif
