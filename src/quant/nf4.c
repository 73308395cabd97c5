#include "quant/nf4.h"

#include "core/error.h"
#include "core/mem.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NF4_X86 1
#include <immintrin.h>
#endif
/* absmax reconstruction q*scale + offset must round twice (as the reference script does), never
 * fuse into one FMA; gcc does not contract in ISO C mode, clang needs to be told */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* The code book as bitsandbytes lists it (fp32 values printed to 17 significant digits). */
const float nf4_codebook[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* bitsandbytes' dQuantizeNF4 decision-tree constants, in ascending order: the float64 midpoint
 * of two neighbouring fp32 codes, printed shortest and compiled as an fp32 literal.  Seven
 * midpoints lie exactly halfway between two fp32 values; there the printed digits decided the
 * side (for thresholds 0, 8, 12 and 14 against round-half-even), so the literals are kept as
 * bitsandbytes wrote them and the tests check they are nearest-fp32 midpoints. */
const float nf4_thresholds[15] = {
    -0.8480964004993439f,  -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,  0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,  0.8614784181118011f,
};

size_t nf4_packed_bytes(size_t n) { return n / 2 + (n & 1); }
size_t nf4_num_blocks(size_t n) { return (n + NF4_BLOCK - 1) / NF4_BLOCK; }

static size_t dq_groups(size_t nblocks) { return (nblocks + NF4_DQ_GROUP - 1) / NF4_DQ_GROUP; }

size_t nf4_state_bytes(size_t n, bool double_quant) {
    size_t nb = nf4_num_blocks(n);
    return double_quant ? nb * sizeof(int8_t) + dq_groups(nb) * sizeof(float) : nb * sizeof(float);
}

/* The decision tree is a binary search over sorted thresholds, so its answer is the number of
 * thresholds strictly below v; counting compiles to branch-free vector compares.  NaN compares
 * false everywhere and gets code 0, as in the tree. */
uint8_t nf4_code(float v) {
    unsigned c = 0;
    for (int k = 0; k < 15; k++) c += v > nf4_thresholds[k];
    return (uint8_t)c;
}

/* the sizes nf4_init and nf4_quantize allocate, shared with their planning twins */
static size_t dq_scale_bytes(size_t nblocks) { return dq_groups(nblocks) * sizeof(float); }
static size_t dq_absmax_scratch_bytes(size_t nblocks) { return nblocks * sizeof(float); }

void nf4_plan_init(mem_sim *s, size_t n, bool double_quant) {
    const size_t nb = nf4_num_blocks(n);
    mem_sim_alloc(s, MEM_QWEIGHTS, nf4_packed_bytes(n));
    if (double_quant) {
        mem_sim_alloc(s, MEM_QSTATE, nb);
        mem_sim_alloc(s, MEM_QSTATE, dq_scale_bytes(nb));
    } else {
        mem_sim_alloc(s, MEM_QSTATE, nb * sizeof(float));
    }
}

void nf4_plan_quantize(mem_sim *s, size_t n, bool double_quant) {
    if (double_quant) mem_sim_temp(s, MEM_SCRATCH, dq_absmax_scratch_bytes(nf4_num_blocks(n)));
}

int nf4_init(nf4_tensor *t, size_t n, bool double_quant) {
    memset(t, 0, sizeof *t);
    if (n == 0) return loqt_set_error("nf4: empty tensor");
    t->n = n;
    t->nblocks = nf4_num_blocks(n);
    t->dq = double_quant;
    t->codes = mem_try_alloc(MEM_QWEIGHTS, nf4_packed_bytes(n));
    if (!t->codes) return -1;
    if (double_quant) {
        t->qabsmax = mem_try_alloc(MEM_QSTATE, t->nblocks);
        t->dq_scale = mem_try_alloc(MEM_QSTATE, dq_scale_bytes(t->nblocks));
        if (!t->qabsmax || !t->dq_scale) {
            nf4_free(t);
            return -1;
        }
    } else {
        t->absmax = mem_try_alloc(MEM_QSTATE, t->nblocks * sizeof(float));
        if (!t->absmax) {
            nf4_free(t);
            return -1;
        }
    }
    return 0;
}

void nf4_free(nf4_tensor *t) {
    mem_free(t->codes);
    mem_free(t->absmax);
    mem_free(t->qabsmax);
    mem_free(t->dq_scale);
    memset(t, 0, sizeof *t);
}

float nf4_block_absmax(const nf4_tensor *t, size_t b) {
    if (!t->dq) return t->absmax[b];
    float q = (float)t->qabsmax[b];
    float s = q * t->dq_scale[b / NF4_DQ_GROUP];
    return s + t->dq_offset;
}

#ifdef _OPENMP
/* threads pay from 64K elements on; nested calls stay on the calling thread */
#define par_ok(work) ((work) >= ((size_t)1 << 16) && !omp_in_parallel())
#endif

/* Max |x| over [x, x+len); sets *bad when a value is not finite. */
static float block_absmax(const float *x, size_t len, int *bad) {
    float m = 0.0f;
    int nonfinite = 0;
    for (size_t i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        nonfinite |= !(a <= 3.40282347e38f);
        m = a > m ? a : m;
    }
    if (nonfinite) *bad = 1;
    return m;
}

/* Codes of one block against scale a (bitsandbytes: multiply by the fp32 reciprocal).  A zero
 * scale means an all-zero block: code 7 (0.0) instead of bitsandbytes' NaN -> code 0 (-1.0 * 0);
 * both dequantize to zero. */
static void encode_block(const float *x, size_t len, float a, uint8_t *out) {
    uint8_t c[NF4_BLOCK];
    if (a == 0.0f) {
        memset(c, 7, sizeof c);
    } else {
        float inv = 1.0f / a;
        for (size_t i = 0; i < len; i++) c[i] = nf4_code(x[i] * inv);
        for (size_t i = len; i < NF4_BLOCK; i++) c[i] = 0;
    }
    for (size_t j = 0; j < (len + 1) / 2; j++) out[j] = (uint8_t)(c[2 * j] << 4 | c[2 * j + 1]);
}

int nf4_quantize(nf4_tensor *t, const float *x) {
    if (!t || !t->codes || !x) return loqt_set_error("nf4_quantize: tensor not initialized");
    const size_t n = t->n, nb = t->nblocks;
    int bad = 0;
    if (!t->dq) {
#pragma omp parallel for schedule(static) reduction(| : bad) if (par_ok(n))
        for (size_t b = 0; b < nb; b++) {
            size_t len = n - b * NF4_BLOCK < NF4_BLOCK ? n - b * NF4_BLOCK : NF4_BLOCK;
            float a = block_absmax(x + b * NF4_BLOCK, len, &bad);
            t->absmax[b] = a;
            encode_block(x + b * NF4_BLOCK, len, a, t->codes + b * (NF4_BLOCK / 2));
        }
        if (bad) return loqt_set_error("nf4_quantize: input has a non-finite value");
        return 0;
    }
    /* double quantization: all absmax first, then their mean, then int8 groups, then codes */
    float *am = mem_try_alloc(MEM_SCRATCH, dq_absmax_scratch_bytes(nb));
    if (!am) return -1;
#pragma omp parallel for schedule(static) reduction(| : bad) if (par_ok(n))
    for (size_t b = 0; b < nb; b++) {
        size_t len = n - b * NF4_BLOCK < NF4_BLOCK ? n - b * NF4_BLOCK : NF4_BLOCK;
        am[b] = block_absmax(x + b * NF4_BLOCK, len, &bad);
    }
    if (bad) {
        mem_free(am);
        return loqt_set_error("nf4_quantize: input has a non-finite value");
    }
    /* sequential double sum: the offset must not depend on the thread count */
    double sum = 0.0;
    for (size_t b = 0; b < nb; b++) sum += am[b];
    t->dq_offset = (float)(sum / (double)nb);
    const size_t ng = dq_groups(nb);
    for (size_t g = 0; g < ng; g++) {
        size_t b0 = g * NF4_DQ_GROUP, b1 = b0 + NF4_DQ_GROUP < nb ? b0 + NF4_DQ_GROUP : nb;
        float m = 0.0f;
        for (size_t b = b0; b < b1; b++) {
            float d = fabsf(am[b] - t->dq_offset);
            m = d > m ? d : m;
        }
        float s = m / 127.0f;
        t->dq_scale[g] = s;
        for (size_t b = b0; b < b1; b++) {
            float q = s > 0.0f ? rintf((am[b] - t->dq_offset) / s) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            t->qabsmax[b] = (int8_t)q;
        }
    }
#pragma omp parallel for schedule(static) if (par_ok(n))
    for (size_t b = 0; b < nb; b++) {
        size_t len = n - b * NF4_BLOCK < NF4_BLOCK ? n - b * NF4_BLOCK : NF4_BLOCK;
        /* an all-zero block keeps zero codes whatever its reconstructed scale */
        float a = am[b] == 0.0f ? 0.0f : nf4_block_absmax(t, b);
        encode_block(x + b * NF4_BLOCK, len, a, t->codes + b * (NF4_BLOCK / 2));
    }
    mem_free(am);
    return 0;
}

/* ---- dequantization ---------------------------------------------------------------------- */

static inline float code_at(const uint8_t *codes, size_t i) {
    uint8_t byte = codes[i >> 1];
    return nf4_codebook[(i & 1) ? (byte & 15) : (byte >> 4)];
}

/* Elements [e0, e1) lying inside one block with scale a. */
static void deq_portable_span(const uint8_t *codes, size_t e0, size_t e1, float a, float *y) {
    size_t i = e0;
    if (i & 1) {
        *y++ = code_at(codes, i) * a;
        i++;
    }
    for (; i + 1 < e1; i += 2) { /* one byte: high nibble first */
        const uint8_t b = codes[i >> 1];
        y[0] = nf4_codebook[b >> 4] * a;
        y[1] = nf4_codebook[b & 15] * a;
        y += 2;
    }
    if (i < e1) *y = code_at(codes, i) * a;
}

#ifdef NF4_X86
/* Whole blocks [b0, b1): 16 outputs per step from 8 code bytes.  Each byte is duplicated
 * (pshufb), widened to 32 bits, shifted right by 4 for even elements and 0 for odd ones; vpermps
 * looks the code value up using only the low 4 bits of each index, so no mask is needed. */
__attribute__((target("avx512f"))) static void deq_blocks_avx512(const nf4_tensor *t, size_t b0,
                                                                 size_t b1, float *y) {
    const __m512 lut = _mm512_loadu_ps(nf4_codebook);
    const __m512i shift = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (size_t b = b0; b < b1; b++) {
        const __m512 va = _mm512_set1_ps(nf4_block_absmax(t, b));
        const uint8_t *c = t->codes + b * (NF4_BLOCK / 2);
        float *o = y + (b - b0) * NF4_BLOCK;
        for (int q = 0; q < 4; q++) {
            __m128i bytes = _mm_loadl_epi64((const __m128i *)(const void *)(c + 8 * q));
            __m512i idx = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(bytes, dup)), shift);
            _mm512_storeu_ps(o + 16 * q, _mm512_mul_ps(_mm512_permutexvar_ps(idx, lut), va));
        }
    }
}
#endif

bool nf4_have_avx512(void) {
#ifdef NF4_X86
    __builtin_cpu_init(); /* idempotent; reads the CPUID bits cached by the runtime */
    return __builtin_cpu_supports("avx512f") != 0;
#else
    return false;
#endif
}

int nf4_dequantize_range_path(const nf4_tensor *t, size_t e0, size_t e1, float *y, nf4_path path) {
    if (!t || !t->codes || !y) return loqt_set_error("nf4_dequantize: tensor not initialized");
    if (e0 > e1 || e1 > t->n)
        return loqt_set_error("nf4_dequantize: range [%zu, %zu) outside tensor of %zu elements", e0,
                              e1, t->n);
    bool simd = false;
    if (path == NF4_PATH_AVX512 && !nf4_have_avx512())
        return loqt_set_error("nf4_dequantize: AVX-512 kernel requested but not available");
    if (path != NF4_PATH_PORTABLE) simd = nf4_have_avx512();
    if (e0 == e1) return 0;
    const size_t bfirst = e0 / NF4_BLOCK, blast = (e1 - 1) / NF4_BLOCK;
    const size_t nb = blast - bfirst + 1;
    /* blocks are independent; chunks of 16 blocks keep the SIMD calls long enough */
    const size_t CH = 16, nch = (nb + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (par_ok(e1 - e0))
    for (size_t ch = 0; ch < nch; ch++) {
        size_t b = bfirst + ch * CH, bend = b + CH < blast + 1 ? b + CH : blast + 1;
        while (b < bend) {
            size_t s = b * NF4_BLOCK > e0 ? b * NF4_BLOCK : e0;
            size_t e = (b + 1) * NF4_BLOCK < e1 ? (b + 1) * NF4_BLOCK : e1;
#ifdef NF4_X86
            if (simd && s == b * NF4_BLOCK && e == (b + 1) * NF4_BLOCK) {
                /* run of full blocks */
                size_t bb = b + 1;
                while (bb < bend && (bb + 1) * NF4_BLOCK <= e1) bb++;
                deq_blocks_avx512(t, b, bb, y + (s - e0));
                b = bb;
                continue;
            }
#endif
            deq_portable_span(t->codes, s, e, nf4_block_absmax(t, b), y + (s - e0));
            b++;
        }
    }
    (void)simd;
    return 0;
}

int nf4_dequantize_range(const nf4_tensor *t, size_t e0, size_t e1, float *y) {
    return nf4_dequantize_range_path(t, e0, e1, y, NF4_PATH_AUTO);
}

int nf4_dequantize(const nf4_tensor *t, float *y) {
    if (!t) return loqt_set_error("nf4_dequantize: tensor not initialized");
    return nf4_dequantize_range(t, 0, t->n, y);
}

int nf4_dequantize_rows(const nf4_tensor *t, size_t cols, size_t r0, size_t r1, float *y) {
    if (!t) return loqt_set_error("nf4_dequantize_rows: tensor not initialized");
    if (cols == 0 || t->n % cols != 0)
        return loqt_set_error("nf4_dequantize_rows: %zu columns do not divide %zu elements", cols,
                              t->n);
    if (r0 > r1 || r1 > t->n / cols)
        return loqt_set_error("nf4_dequantize_rows: rows [%zu, %zu) outside %zu rows", r0, r1,
                              t->n / cols);
    return nf4_dequantize_range(t, r0 * cols, r1 * cols, y);
}
