/* 8-bit Adam: both moments as blockwise-absmax codes of a dynamic exponent + fraction map, after
 * Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (bitsandbytes).  The per-element
 * arithmetic is the AdamW update of adamw.c; only where m and v live between steps differs.  Each
 * block of 256 is dequantized, updated and requantized by one thread, so the result does not
 * depend on the number of threads. */
#include "optim/adam8bit.h"

#include "core/error.h"
#include "core/mem.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the dynamic maps ------------------------------------------------------------------- */

/* A map with a search table: lo[b] for each bucket b of floats sharing their top 16 bits (sign,
 * exponent, 7 mantissa bits) is the last map index at or below the bucket's smallest value.  A
 * bucket spans 1/128 of its octave, less than the gap between neighbouring values of either map,
 * so from lo[b] at most one step up reaches the last index at or below any x of the bucket (the
 * test sweeps this against the binary search).  Branch-free, this is about 5x faster than the
 * binary search's eight dependent, mispredicted branches. */
typedef struct {
    float map[257]; /* map[256] = NaN: compares false, so the steps never move past 255 */
    uint8_t lo[65536];
} qtable;

static qtable tab_signed, tab_unsigned;
static pthread_once_t tabs_once = PTHREAD_ONCE_INIT;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Exponent level i (0..6) covers magnitudes [0.1, 1) * 10^(i-6) with the midpoints of `items`
 * equal intervals of [0.1, 1].  Higher levels get more fraction items (2^i signed, 2^(i+1)
 * unsigned: the unsigned map spends the sign bit on precision), so the map is dense near 1 and
 * sparse but wide near 0, keeping the relative error bounded over seven decades.  The midpoints
 * are computed in double and rounded once; bitsandbytes rounds torch.linspace's float32
 * boundaries instead, so a few of its values differ from these by one float ulp. */
static void build_map(int is_signed, float *out) {
    int n = 0;
    double scale = 1e-6;
    for (int i = 0; i < 7; i++, scale *= 10.0) {
        const int items = is_signed ? 1 << i : 1 << (i + 1);
        for (int j = 0; j < items; j++) {
            const double mean = 0.1 + 0.9 * (j + 0.5) / items;
            out[n++] = (float)(scale * mean);
            if (is_signed) out[n++] = (float)(-scale * mean);
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    qsort(out, (size_t)n, sizeof(float), cmp_float); /* n == 256 for both maps */
}

/* the last index with map[lo] <= x, 0 if none (also for NaN): eight halving steps */
static int last_at_or_below(const float *map, float x) {
    int lo = 0;
    for (int step = 128; step; step >>= 1)
        if (map[lo + step] <= x) lo += step;
    return lo;
}

/* of map[lo] and map[lo + 1], the nearer to x (a tie goes to the lower) */
static inline uint8_t pick_nearer(const float *map, int lo, float x) {
    if (lo < 255 && map[lo + 1] - x < x - map[lo]) lo++;
    return (uint8_t)lo;
}

static void build_table(int is_signed, qtable *t) {
    build_map(is_signed, t->map);
    t->map[256] = NAN;
    for (uint32_t b = 0; b < 65536; b++) {
        /* a bucket's smallest value: its lowest bit pattern if positive, its highest if negative */
        uint32_t bits = b & 0x8000 ? b << 16 | 0xFFFF : b << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        t->lo[b] = (uint8_t)(isnan(v) ? 0 : last_at_or_below(t->map, v));
    }
}

static void build_tables(void) {
    build_table(1, &tab_signed);
    build_table(0, &tab_unsigned);
}

static const qtable *table_of(const float *map) {
    pthread_once(&tabs_once, build_tables);
    return map == tab_signed.map ? &tab_signed : map == tab_unsigned.map ? &tab_unsigned : NULL;
}

const float *adam8bit_map(int is_signed) {
    pthread_once(&tabs_once, build_tables);
    return is_signed ? tab_signed.map : tab_unsigned.map;
}

uint8_t adam8bit_nearest(const float *map, float x) {
    return pick_nearer(map, last_at_or_below(map, x), x);
}

/* the same result as adam8bit_nearest, through the bucket table */
static inline uint8_t nearest_tab(const qtable *t, float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int lo = t->lo[bits >> 16];
    lo += t->map[lo + 1] <= x;
    lo += t->map[lo + 1] - x < x - t->map[lo]; /* pick_nearer, without its branch */
    return isnan(x) ? 0 : (uint8_t)lo;
}

/* ---- blockwise quantization ------------------------------------------------------------- */

/* zero_code: the index of 0.0 in the map, used for an all-zero block (absmax 0).  t is the
 * map's search table, or NULL for a map not built here (the binary search; only tests do that). */
static void quantize_block(const float *map, const qtable *t, uint8_t zero_code, const float *x,
                           size_t len, uint8_t *codes, float *absmax) {
    float amax = 0.0f;
    for (size_t k = 0; k < len; k++) {
        const float a = fabsf(x[k]);
        amax = a > amax ? a : amax; /* fmaxf (NaN ignored), in a form that vectorizes */
    }
    *absmax = amax;
    if (!(amax > 0.0f)) {
        memset(codes, zero_code, len);
        return;
    }
    float y[ADAM8BIT_BLOCK]; /* len <= ADAM8BIT_BLOCK; the division vectorizes on its own */
    for (size_t k = 0; k < len; k++) y[k] = x[k] / amax;
    if (t)
        for (size_t k = 0; k < len; k++) codes[k] = nearest_tab(t, y[k]);
    else
        for (size_t k = 0; k < len; k++) codes[k] = adam8bit_nearest(map, y[k]);
}

static uint8_t zero_code(const float *map) { return adam8bit_nearest(map, 0.0f); }

void adam8bit_quantize(const float *map, const float *x, size_t n, uint8_t *codes, float *absmax) {
    const long nb = (long)((n + ADAM8BIT_BLOCK - 1) / ADAM8BIT_BLOCK);
    const qtable *t = table_of(map);
    const uint8_t z = zero_code(map);
#pragma omp parallel for schedule(static) if (n > 32768)
    for (long b = 0; b < nb; b++) {
        size_t i0 = (size_t)b * ADAM8BIT_BLOCK, len = n - i0 < ADAM8BIT_BLOCK ? n - i0 : ADAM8BIT_BLOCK;
        quantize_block(map, t, z, x + i0, len, codes + i0, absmax + b);
    }
}

void adam8bit_dequantize(const float *map, const uint8_t *codes, const float *absmax, size_t n,
                         float *x) {
    const long nn = (long)n;
#pragma omp parallel for schedule(static) if (nn > 32768)
    for (long i = 0; i < nn; i++) x[i] = map[codes[i]] * absmax[i / ADAM8BIT_BLOCK];
}

/* ---- optimizer state -------------------------------------------------------------------- */

size_t adam8bit_state_bytes(size_t n) {
    if (n < ADAM8BIT_MIN_N) return 0;
    return 2 * n + 2 * sizeof(float) * ((n + ADAM8BIT_BLOCK - 1) / ADAM8BIT_BLOCK);
}

int adam8bit_is_quantized(const optim_state *s) {
    return s->kind == OPTIM_ADAM8BIT && s->n >= ADAM8BIT_MIN_N;
}

typedef struct {
    float *absm, *absv;
    uint8_t *cm, *cv;
    size_t nb;
} q8_view;

static q8_view q8_of(const optim_state *s) {
    q8_view q;
    q.nb = (s->n + ADAM8BIT_BLOCK - 1) / ADAM8BIT_BLOCK;
    q.absm = (float *)s->q;
    q.absv = q.absm + q.nb;
    q.cm = (uint8_t *)(q.absv + q.nb);
    q.cv = q.cm + s->n;
    return q;
}

int adam8bit_get_moments(const optim_state *s, float *m, float *v) {
    if (!s->q) return 0;
    q8_view q = q8_of(s);
    adam8bit_dequantize(adam8bit_map(1), q.cm, q.absm, s->n, m);
    adam8bit_dequantize(adam8bit_map(0), q.cv, q.absv, s->n, v);
    return 1;
}

void adam8bit_set_moments(optim_state *s, const float *m, const float *v) {
    if (!s->q) return;
    q8_view q = q8_of(s);
    adam8bit_quantize(adam8bit_map(1), m, s->n, q.cm, q.absm);
    adam8bit_quantize(adam8bit_map(0), v, s->n, q.cv, q.absv);
}

/* blocks [b0, b1) of a quantized state; w and g point at the first element of block b0 */
static void update_blocks(optim_state *s, float *w, const float *g, long b0, long b1,
                          const optim_hparams *h) {
    if (!s->q) s->q = mem_alloc(MEM_OPTIM, adam8bit_state_bytes(s->n));
    const qtable *ts = table_of(adam8bit_map(1)), *tu = table_of(adam8bit_map(0));
    const float *smap = ts->map, *umap = tu->map;
    const uint8_t zm = zero_code(smap), zv = zero_code(umap);
    /* the same constants, in the same precision, as adamw_update */
    const float b1c = h->beta1, b2c = h->beta2, eps = h->eps, gs = h->grad_scale;
    const double t = (double)(h->t - s->t_offset > 0 ? h->t - s->t_offset : 1);
    const double bc1 = 1.0 - pow(h->beta1, t), bc2 = 1.0 - pow(h->beta2, t);
    const float step = (float)(h->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - h->lr * h->weight_decay;
    const q8_view q = q8_of(s);
    const size_t n = s->n, base = (size_t)b0 * ADAM8BIT_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)(b1 - b0) * ADAM8BIT_BLOCK > 32768)
    for (long b = b0; b < b1; b++) {
        const size_t i0 = (size_t)b * ADAM8BIT_BLOCK;
        const size_t len = n - i0 < ADAM8BIT_BLOCK ? n - i0 : ADAM8BIT_BLOCK;
        const float am = q.absm[b], av = q.absv[b];
        float mb[ADAM8BIT_BLOCK], vb[ADAM8BIT_BLOCK];
        for (size_t k = 0; k < len; k++) {
            const size_t i = i0 + k;
            const float gi = g[i - base] * gs;
            const float mi = b1c * (smap[q.cm[i]] * am) + (1.0f - b1c) * gi;
            const float vi = b2c * (umap[q.cv[i]] * av) + (1.0f - b2c) * gi * gi;
            /* the parameter sees the fp32 moments of this step; only their storage is 8-bit */
            w[i - base] = w[i - base] * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
            mb[k] = mi;
            vb[k] = vi;
        }
        quantize_block(smap, ts, zm, mb, len, q.cm + i0, &q.absm[b]);
        quantize_block(umap, tu, zv, vb, len, q.cv + i0, &q.absv[b]);
    }
}

void adam8bit_update(optim_state *s, float *w, const float *g, const optim_hparams *h) {
    if (!adam8bit_is_quantized(s)) {
        /* small tensors: the 8-bit state would save little and cost the most accuracy there */
        adamw_update(s, w, g, h);
        return;
    }
    update_blocks(s, w, g, 0, (long)((s->n + ADAM8BIT_BLOCK - 1) / ADAM8BIT_BLOCK), h);
}

int adam8bit_update_range(optim_state *s, float *w, const float *g, size_t e0, size_t e1,
                          const optim_hparams *h) {
    if (e0 % ADAM8BIT_BLOCK || (e1 % ADAM8BIT_BLOCK && e1 != s->n))
        return loqt_set_error("8-bit Adam: range [%zu, %zu) does not start and end on blocks of %d elements",
                              e0, e1, ADAM8BIT_BLOCK);
    if (e0 > e1 || e1 > s->n)
        return loqt_set_error("8-bit Adam: range [%zu, %zu) outside a state of %zu elements", e0, e1, s->n);
    update_blocks(s, w, g, (long)(e0 / ADAM8BIT_BLOCK), (long)((e1 + ADAM8BIT_BLOCK - 1) / ADAM8BIT_BLOCK), h);
    return 0;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

void adam8bit_state_save(const optim_state *s, st_writer *w, const char *prefix) {
    if (!s->q) return;
    const q8_view q = q8_of(s);
    const int64_t nshape[1] = {(int64_t)s->n}, bshape[1] = {(int64_t)q.nb};
    char name[256];
    snprintf(name, sizeof name, "%s.exp_avg.absmax", prefix);
    st_writer_add(w, name, ST_F32, 1, bshape, q.absm);
    snprintf(name, sizeof name, "%s.exp_avg.code", prefix);
    st_writer_add(w, name, ST_U8, 1, nshape, q.cm);
    snprintf(name, sizeof name, "%s.exp_avg_sq.absmax", prefix);
    st_writer_add(w, name, ST_F32, 1, bshape, q.absv);
    snprintf(name, sizeof name, "%s.exp_avg_sq.code", prefix);
    st_writer_add(w, name, ST_U8, 1, nshape, q.cv);
}

int adam8bit_state_load(optim_state *s, const st_file *f, const char *prefix) {
    char name[256];
    snprintf(name, sizeof name, "%s.exp_avg.code", prefix);
    if (!st_find(f, name)) return 0;
    if (!adam8bit_is_quantized(s))
        return loqt_set_error("optimizer state '%s' is 8-bit Adam state, but this run uses %s for it", name,
                              s->kind == OPTIM_ADAM8BIT ? "fp32 moments (small tensor)" : "adamw");
    const int alloc = !s->q;
    if (alloc) s->q = mem_alloc(MEM_OPTIM, adam8bit_state_bytes(s->n));
    const q8_view q = q8_of(s);
    const int64_t nshape[1] = {(int64_t)s->n}, bshape[1] = {(int64_t)q.nb};
    static const char *const moment[2] = {"exp_avg", "exp_avg_sq"};
    for (int j = 0; j < 2; j++) {
        snprintf(name, sizeof name, "%s.%s.absmax", prefix, moment[j]);
        if (st_read_raw(f, name, j ? q.absv : q.absm, ST_F32, 1, bshape)) goto fail;
        /* codes index a 256-entry map, so any byte is safe; an absmax must be a finite scale */
        const float *a = j ? q.absv : q.absm;
        for (size_t b = 0; b < q.nb; b++)
            if (!(a[b] >= 0.0f && a[b] <= FLT_MAX)) {
                loqt_set_error("optimizer state '%s' holds a negative or non-finite absmax", name);
                goto fail;
            }
        snprintf(name, sizeof name, "%s.%s.code", prefix, moment[j]);
        if (st_read_raw(f, name, j ? q.cv : q.cm, ST_U8, 1, nshape)) goto fail;
    }
    return 0;
fail:
    /* never leave a half-read state behind: a fresh one is all zeros, i.e. m = v = 0 */
    if (alloc) {
        mem_free(s->q);
        s->q = NULL;
    } else {
        memset(s->q, 0, mem_size(s->q));
    }
    return -1;
}
