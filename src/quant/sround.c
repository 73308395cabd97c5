#include "quant/sround.h"

#include "core/rng.h"

float sround_uniform(const sround_key *k, uint64_t i) {
    return rng_uniform(k->seed, k->stream, k->offset + i);
}

void sround_array(const float *x, float *y, size_t n, float mul, const sround_key *k) {
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 16))
    for (size_t i = 0; i < n; i++) y[i] = sround_apply(x[i] * mul, sround_uniform(k, i));
}
