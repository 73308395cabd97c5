/* Stochastic rounding.
 *
 * SR(v) = floor(v) + 1 with probability frac(v) = v - floor(v), else floor(v); so E[SR(v)] = v
 * (up to 2^-24 of a unit, the resolution of the uniform).  The uniform for element i comes from
 * the counter-based RNG at (seed, stream, offset + i): a quantized tensor is the same whether one
 * thread or many produce it, and a caller that quantizes a slice passes the slice's first global
 * element index as the offset so the slice gets the same numbers as the whole would. */
#ifndef LOQT_SROUND_H
#define LOQT_SROUND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t seed, stream, offset;
} sround_key;

/* SR of v given a uniform u in [0, 1): rounds up iff u < frac(v).  frac is exact in fp32. */
static inline float sround_apply(float v, float u) {
    float f = floorf(v);
    return f + (u < v - f ? 1.0f : 0.0f);
}

/* The uniform used for element i under key k. */
float sround_uniform(const sround_key *k, uint64_t i);

/* y[i] = SR(x[i] * mul) for i in [0, n) (y may alias x).  OpenMP-parallel. */
void sround_array(const float *x, float *y, size_t n, float mul, const sround_key *k);

#endif
