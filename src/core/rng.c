#include "core/rng.h"

#include <math.h>

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t a = mix64(seed + 0x9e3779b97f4a7c15ull);
    uint64_t b = mix64(a ^ (stream * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull));
    return mix64(b ^ (counter * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull));
}

float rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (float)(rng_u64(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

float rng_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t r = rng_u64(seed, stream, counter);
    /* two 32-bit uniforms; u1 in (0, 1] so log is finite */
    double u1 = ((double)(r >> 32) + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)(r & 0xffffffffu) * (1.0 / 4294967296.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void rng_fill_normal(float *x, uint64_t n, float std, uint64_t seed, uint64_t stream) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)n; i++) x[i] = std * rng_normal(seed, stream, (uint64_t)i);
}

uint64_t rng_stream_id(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}
