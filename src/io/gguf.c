#include "io/gguf.h"

#include "core/error.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* GGUF value types */
enum { V_U32 = 4, V_I32 = 5, V_F32 = 6, V_BOOL = 7, V_STR = 8, V_ARR = 9 };

/* ---- encodings ---------------------------------------------------------------------------- */

const char *gguf_type_name(gguf_type t) {
    switch (t) {
    case GGUF_F32: return "F32";
    case GGUF_F16: return "F16";
    case GGUF_Q4_0: return "Q4_0";
    case GGUF_Q8_0: return "Q8_0";
    }
    return "?";
}

size_t gguf_row_bytes(gguf_type t, int64_t ne0) {
    const size_t n = (size_t)ne0;
    switch (t) {
    case GGUF_F32: return 4 * n;
    case GGUF_F16: return 2 * n;
    case GGUF_Q8_0: return n / GGUF_BLOCK * (2 + GGUF_BLOCK);
    case GGUF_Q4_0: return n / GGUF_BLOCK * (2 + GGUF_BLOCK / 2);
    }
    return 0;
}

int gguf_type_fits(gguf_type t, int64_t ne0) {
    if (ne0 <= 0) return 0;
    return t == GGUF_F32 || t == GGUF_F16 || ne0 % GGUF_BLOCK == 0;
}

uint16_t gguf_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint16_t sign = (uint16_t)(u >> 16 & 0x8000);
    const uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) return sign | 0x7E00; /* NaN */
    /* 65520 (0x477FF000) is halfway between 65504 and 2^16: the tie goes to the even one, 2^16,
     * which is out of range */
    if (a >= 0x477FF000) return sign | 0x7C00;
    if (a < 0x38800000) {
        /* below the smallest normal half 2^-14: a multiple of 2^-24.  |x| * 2^24 is exact and
         * rintf rounds it to nearest even; 1024 is the smallest normal's encoding too */
        float s = fabsf(x) * 16777216.0f;
        return sign | (uint16_t)rintf(s);
    }
    uint32_t h = ((a >> 23) - 112) << 10 | (a >> 13 & 0x3FF); /* rebias 127 -> 15 */
    const uint32_t rest = a & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* a carry moves into the exponent */
    return sign | (uint16_t)h;
}

static void put16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* the fp16 scale of a block, or -1 when it does not fit */
static int block_scale(float d, uint16_t *h, float *stored) {
    *h = gguf_f32_to_f16(d);
    *stored = st_f16_to_f32(*h);
    if (!isfinite(*stored)) return loqt_set_error("a block scale of %g does not fit in fp16", (double)d);
    return 0;
}

static int encode_q8_0(const float *x, unsigned char *out) {
    float amax = 0;
    for (int j = 0; j < GGUF_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
    uint16_t h;
    float d;
    if (block_scale(amax / 127.0f, &h, &d)) return -1;
    put16(out, h);
    signed char *q = (signed char *)(out + 2);
    for (int j = 0; j < GGUF_BLOCK; j++) {
        float v = d != 0 ? rintf(x[j] / d) : 0;
        q[j] = (signed char)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return 0;
}

static int encode_q4_0(const float *x, unsigned char *out) {
    float m = 0; /* the value of largest magnitude, sign kept: it maps to code 0 exactly */
    for (int j = 0; j < GGUF_BLOCK; j++)
        if (fabsf(x[j]) > fabsf(m)) m = x[j];
    uint16_t h;
    float d;
    if (block_scale(m / -8.0f, &h, &d)) return -1;
    put16(out, h);
    unsigned char q[GGUF_BLOCK];
    for (int j = 0; j < GGUF_BLOCK; j++) {
        float v = d != 0 ? rintf(x[j] / d) + 8 : 8;
        q[j] = (unsigned char)(v > 15 ? 15 : v < 0 ? 0 : v);
    }
    for (int j = 0; j < GGUF_BLOCK / 2; j++) out[2 + j] = (unsigned char)(q[j] | q[j + GGUF_BLOCK / 2] << 4);
    return 0;
}

int gguf_encode(gguf_type t, const float *src, size_t n, void *dst) {
    unsigned char *out = dst;
    if ((t == GGUF_Q8_0 || t == GGUF_Q4_0) && n % GGUF_BLOCK)
        return loqt_set_error("%s needs whole blocks of %d values, got %zu", gguf_type_name(t), GGUF_BLOCK, n);
    switch (t) {
    case GGUF_F32:
        memcpy(dst, src, 4 * n);
        return 0;
    case GGUF_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = gguf_f32_to_f16(src[i]);
            if ((h & 0x7C00) == 0x7C00 && isfinite(src[i]))
                return loqt_set_error("value %g does not fit in fp16 (largest 65504)", (double)src[i]);
            put16(out + 2 * i, h);
        }
        return 0;
    case GGUF_Q8_0:
    case GGUF_Q4_0: {
        const size_t bytes = gguf_row_bytes(t, GGUF_BLOCK);
        for (size_t b = 0; b < n / GGUF_BLOCK; b++) {
            const float *x = src + b * GGUF_BLOCK;
            if (t == GGUF_Q8_0 ? encode_q8_0(x, out + b * bytes) : encode_q4_0(x, out + b * bytes))
                return -1;
        }
        return 0;
    }
    }
    return loqt_set_error("unknown GGUF type %d", (int)t);
}

/* ---- the writer --------------------------------------------------------------------------- */

/* A growable byte buffer for the header (accounted as I/O data). */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void bytes_put(bytes *b, const void *data, size_t len) {
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len) cap *= 2;
        unsigned char *q = mem_alloc(MEM_DATA, cap);
        if (b->n) memcpy(q, b->p, b->n);
        mem_free(b->p);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void put_u32(bytes *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    bytes_put(b, c, 4);
}

static void put_u64(bytes *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_f32(bytes *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(b, u);
}

static void put_str(bytes *b, const char *s) {
    size_t n = strlen(s);
    put_u64(b, n);
    bytes_put(b, s, n);
}

typedef struct {
    char name[GGUF_MAX_NAME + 1];
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    gguf_type type;
    uint64_t offset, nbytes;
} tensor_info;

struct gguf_writer {
    bytes kv;           /* the key-values, serialized */
    uint64_t n_kv;
    tensor_info *t;
    int n_t, cap_t;
    uint64_t data_bytes; /* data section so far (aligned) */
    atomic_file f;
    int open, next;      /* the next tensor to write */
    void *scratch;       /* encoding buffer */
};

static uint64_t align_up(uint64_t x) { return (x + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        loqt_set_error("gguf: out of memory");
        return NULL;
    }
    w->f.fd = -1;
    return w;
}

static void kv_key(gguf_writer *w, const char *key, uint32_t vtype) {
    put_str(&w->kv, key);
    put_u32(&w->kv, vtype);
    w->n_kv++;
}

void gguf_kv_str(gguf_writer *w, const char *key, const char *value) {
    kv_key(w, key, V_STR);
    put_str(&w->kv, value);
}

void gguf_kv_u32(gguf_writer *w, const char *key, uint32_t value) {
    kv_key(w, key, V_U32);
    put_u32(&w->kv, value);
}

void gguf_kv_f32(gguf_writer *w, const char *key, float value) {
    kv_key(w, key, V_F32);
    put_f32(&w->kv, value);
}

void gguf_kv_bool(gguf_writer *w, const char *key, int value) {
    kv_key(w, key, V_BOOL);
    unsigned char c = value ? 1 : 0;
    bytes_put(&w->kv, &c, 1);
}

static void arr_head(gguf_writer *w, const char *key, uint32_t elem, size_t n) {
    kv_key(w, key, V_ARR);
    put_u32(&w->kv, elem);
    put_u64(&w->kv, n);
}

void gguf_kv_arr_str(gguf_writer *w, const char *key, const char *const *values, size_t n) {
    arr_head(w, key, V_STR, n);
    for (size_t i = 0; i < n; i++) put_str(&w->kv, values[i]);
}

void gguf_kv_arr_f32(gguf_writer *w, const char *key, const float *values, size_t n) {
    arr_head(w, key, V_F32, n);
    for (size_t i = 0; i < n; i++) put_f32(&w->kv, values[i]);
}

void gguf_kv_arr_i32(gguf_writer *w, const char *key, const int32_t *values, size_t n) {
    arr_head(w, key, V_I32, n);
    for (size_t i = 0; i < n; i++) put_u32(&w->kv, (uint32_t)values[i]);
}

int gguf_add_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, gguf_type type) {
    if (w->open) return loqt_set_error("gguf: tensor %s declared after the data began", name);
    if (strlen(name) > GGUF_MAX_NAME)
        return loqt_set_error("gguf: tensor name %s is longer than %d bytes", name, GGUF_MAX_NAME);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return loqt_set_error("gguf: tensor %s has %d dimensions (1 to %d)", name, n_dims, GGUF_MAX_DIMS);
    uint64_t rows = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] <= 0) return loqt_set_error("gguf: tensor %s has an empty dimension", name);
        if (i) rows *= (uint64_t)ne[i];
    }
    if (!gguf_type_fits(type, ne[0]))
        return loqt_set_error("gguf: tensor %s: rows of %lld values cannot be stored as %s (blocks of %d)",
                              name, (long long)ne[0], gguf_type_name(type), GGUF_BLOCK);
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 64;
        tensor_info *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return loqt_set_error("gguf: out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    tensor_info *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    memcpy(t->ne, ne, (size_t)n_dims * sizeof *ne);
    t->type = type;
    t->offset = w->data_bytes;
    t->nbytes = gguf_row_bytes(type, ne[0]) * rows;
    w->data_bytes = align_up(w->data_bytes + t->nbytes);
    return 0;
}

size_t gguf_writer_scratch_bytes(const gguf_writer *w) {
    size_t most = 0;
    for (int i = 0; i < w->n_t; i++)
        if (w->t[i].type != GGUF_F32 && w->t[i].nbytes > most) most = (size_t)w->t[i].nbytes;
    return most;
}

static const unsigned char zeros[GGUF_ALIGNMENT];

int gguf_writer_begin(gguf_writer *w, const char *path) {
    if (w->open) return loqt_set_error("gguf: %s: already begun", path);
    bytes h = {0};
    bytes_put(&h, "GGUF", 4);
    put_u32(&h, GGUF_VERSION);
    put_u64(&h, (uint64_t)w->n_t);
    put_u64(&h, w->n_kv);
    if (w->kv.n) bytes_put(&h, w->kv.p, w->kv.n);
    for (int i = 0; i < w->n_t; i++) {
        const tensor_info *t = &w->t[i];
        put_str(&h, t->name);
        put_u32(&h, (uint32_t)t->n_dims);
        for (int k = 0; k < t->n_dims; k++) put_u64(&h, (uint64_t)t->ne[k]);
        put_u32(&h, (uint32_t)t->type);
        put_u64(&h, t->offset);
    }
    bytes_put(&h, zeros, align_up(h.n) - h.n);
    int rc = atomic_file_open(&w->f, path);
    if (!rc) {
        w->open = 1;
        rc = atomic_file_write(&w->f, h.p, h.n);
    }
    mem_free(h.p);
    if (!rc && gguf_writer_scratch_bytes(w)) w->scratch = mem_alloc(MEM_SCRATCH, gguf_writer_scratch_bytes(w));
    return rc;
}

int gguf_write_tensor(gguf_writer *w, const float *values) {
    if (!w->open || w->next >= w->n_t) return loqt_set_error("gguf: no tensor left to write");
    const tensor_info *t = &w->t[w->next++];
    const size_t n = t->type == GGUF_F32 ? (size_t)t->nbytes / 4
                                        : (size_t)(t->nbytes / gguf_row_bytes(t->type, t->ne[0]) * t->ne[0]);
    const void *data = values;
    if (t->type != GGUF_F32) {
        if (gguf_encode(t->type, values, n, w->scratch))
            return loqt_set_error("gguf: tensor %s: %s", t->name, loqt_last_error());
        data = w->scratch;
    }
    if (atomic_file_write(&w->f, data, (size_t)t->nbytes)) return -1;
    return atomic_file_write(&w->f, zeros, (size_t)(align_up(t->nbytes) - t->nbytes));
}

int gguf_writer_finish(gguf_writer *w) {
    if (!w->open) return loqt_set_error("gguf: nothing to finish");
    if (w->next != w->n_t)
        return loqt_set_error("gguf: %s: %d of %d tensors written", w->f.path, w->next, w->n_t);
    w->open = 0;
    return atomic_file_commit(&w->f);
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->open) atomic_file_abort(&w->f);
    mem_free(w->kv.p);
    mem_free(w->scratch);
    free(w->t);
    free(w);
}
