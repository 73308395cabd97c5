/* Kernels of the low-bit methods (DQT, BitNet b1.58): 8-bit activation fake-quantization and the
 * linear layer over weights held as packed integer codes (quant/qint.h qgrid).
 *
 * Activations (BitNet b1.58's quantizer, applied per token, i.e. per row of X):
 *   s = 127 / max(max_j |x_j|, 1e-5);  x'_j = clamp(round(x_j * s), -128, 127) / s
 * with round-half-even (torch.round), in fp32 in this order of operations, and 127 / a computed
 * as 127 * (1 / a), which is what torch does for a number divided by a tensor: the reference's
 * PyTorch code gives the same bits.  In backward the quantizer is passed
 * straight through: dX = dY W, while dW = dY^T X' uses the quantized activations the forward used.
 *
 * The weights are read from their codes: W is dequantized a tile of rows at a time into the
 * caller's work buffer, and each tile is one GEMM; no full-size float copy of W exists.  The work
 * buffer's size comes from lowbit_*_work_floats, which the methods' planning twins use too. */
#ifndef LOQT_LOWBIT_H
#define LOQT_LOWBIT_H

#include "quant/qint.h"

#include <stddef.h>

/* Elements of W dequantized at a time (4 MiB of floats): a multiple of 8-bit Adam's block and
 * of the 8-element chunks of the packed grid, so element tiles start on whole bytes and blocks. */
#define LOWBIT_TILE_ELEMS ((size_t)1 << 20)

/* Absmax fake-quantization of each row of X [N, cols] into Xq (may alias X). */
void actq_rows(const float *X, float *Xq, int N, int cols);

/* Rows of W in one tile of a layer [out, in]: LOWBIT_TILE_ELEMS / in, at least 1, at most out. */
int lowbit_tile_rows(int out, int in);

/* Work floats of lowbit_forward / lowbit_backward for N rows: the quantized activations (when
 * act_quant) and one tile of W. */
size_t lowbit_work_floats(int out, int in, int N, int act_quant);

/* Y[N, out] = Xq W^T, Xq = actq(X) when act_quant, else X.  tile_rows: lowbit_tile_rows (tests
 * pass smaller ones).  work: lowbit_work_floats floats. */
void lowbit_forward(const qgrid_tensor *W, int out, int in, const float *X, float *Y, int N,
                    int act_quant, int tile_rows, float *work);

/* dX[N, in] (= or += when accumulate; NULL: skipped) = dY W (straight through the activation
 * quantizer), and G[out, in] += dY^T Xq (NULL: skipped). */
void lowbit_backward(const qgrid_tensor *W, int out, int in, const float *X, const float *dY,
                     float *dX, float *G, int N, int accumulate, int act_quant, int tile_rows,
                     float *work);

#endif
