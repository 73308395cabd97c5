#include "kernels/lowbit.h"

#include "kernels/gemm.h"

#include <math.h>

void actq_rows(const float *X, float *Xq, int N, int cols) {
#pragma omp parallel for schedule(static) if ((size_t)N * cols >= ((size_t)1 << 16))
    for (int r = 0; r < N; r++) {
        const float *x = X + (size_t)r * cols;
        float *y = Xq + (size_t)r * cols;
        float amax = 0.0f;
        for (int j = 0; j < cols; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        /* the floor keeps an all-zero token finite (it stays zero); 127 * (1 / amax) is how
         * torch evaluates the reference's 127 / amax */
        const float s = 127.0f * (1.0f / (amax > 1e-5f ? amax : 1e-5f));
        for (int j = 0; j < cols; j++) {
            float q = rintf(x[j] * s);
            q = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
            y[j] = q / s;
        }
    }
}

int lowbit_tile_rows(int out, int in) {
    size_t rows = LOWBIT_TILE_ELEMS / (size_t)(in > 0 ? in : 1);
    if (rows < 1) rows = 1;
    return rows < (size_t)out ? (int)rows : out;
}

size_t lowbit_work_floats(int out, int in, int N, int act_quant) {
    return (act_quant ? (size_t)N * in : 0) + (size_t)lowbit_tile_rows(out, in) * in;
}

/* the activations the layer multiplies: X itself, or its quantized copy in work */
static const float *layer_input(const float *X, int N, int in, int act_quant, float *work) {
    if (!act_quant) return X;
    actq_rows(X, work, N, in);
    return work;
}

void lowbit_forward(const qgrid_tensor *W, int out, int in, const float *X, float *Y, int N,
                    int act_quant, int tile_rows, float *work) {
    const float *Xq = layer_input(X, N, in, act_quant, work);
    float *Wt = work + (act_quant ? (size_t)N * in : 0);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        const int r1 = r0 + tile_rows < out ? r0 + tile_rows : out;
        qgrid_dequantize_range(W, (size_t)r0 * in, (size_t)r1 * in, Wt);
        gemm(false, true, N, r1 - r0, in, 1.0f, Xq, in, Wt, in, 0.0f, Y + r0, out);
    }
}

void lowbit_backward(const qgrid_tensor *W, int out, int in, const float *X, const float *dY,
                     float *dX, float *G, int N, int accumulate, int act_quant, int tile_rows,
                     float *work) {
    if (G) {
        const float *Xq = layer_input(X, N, in, act_quant, work);
        gemm(true, false, out, in, N, 1.0f, dY, out, Xq, in, 1.0f, G, in);
    }
    if (!dX) return;
    float *Wt = work + (act_quant ? (size_t)N * in : 0);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        const int r1 = r0 + tile_rows < out ? r0 + tile_rows : out;
        qgrid_dequantize_range(W, (size_t)r0 * in, (size_t)r1 * in, Wt);
        gemm(false, false, N, in, r1 - r0, 1.0f, dY + r0, out, Wt, in, accumulate || r0 > 0 ? 1.0f : 0.0f, dX, in);
    }
}
