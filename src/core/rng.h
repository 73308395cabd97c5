/* Counter-based random numbers.
 *
 * Every random value in loqt is a pure function of (seed, stream, counter), so results do not
 * depend on the number of threads or on the order in which work is done: element i of a tensor
 * initialised from stream s is the same whether one thread or sixteen fill it.  The mixing
 * function is the SplitMix64 finaliser applied twice over a combination of the three words, which
 * passes BigCrush-style tests for this use (independent draws per counter). */
#ifndef LOQT_RNG_H
#define LOQT_RNG_H

#include <stdint.h>

uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t counter);
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
float rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter);
/* Standard normal via Box-Muller on two independent uniforms of the same counter. */
float rng_normal(uint64_t seed, uint64_t stream, uint64_t counter);

/* Fills x[0..n) with normal(0, std) drawn from (seed, stream, i).  OpenMP-parallel. */
void rng_fill_normal(float *x, uint64_t n, float std, uint64_t seed, uint64_t stream);

/* A stream id from a name (FNV-1a), so that e.g. "model.layers.3.mlp.up_proj" always draws the
 * same numbers regardless of the order in which layers are created. */
uint64_t rng_stream_id(const char *name);

/* A small sequential generator for host-side choices (sampling in generate, shuffles). */
typedef struct {
    uint64_t seed, stream, counter;
} rng_state;
static inline uint64_t rng_next(rng_state *r) { return rng_u64(r->seed, r->stream, r->counter++); }
static inline float rng_next_uniform(rng_state *r) {
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

#endif
