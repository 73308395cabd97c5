/* safetensors reader and writer.
 *
 * The reader maps the file and accepts it only when every tensor entry is consistent: a known
 * dtype, a shape whose byte size equals its data_offsets range (computed without overflow), the
 * range inside the data buffer, and all ranges together tiling the buffer exactly (sorted by
 * offset: no gap, no overlap, nothing left over).  After st_open succeeds every st_data pointer
 * and nbytes can be trusted.  Tensors are listed in offset order, which for files from
 * st_writer is the order in which they were added.
 *
 * The data buffer starts at 8 + header length, which other writers need not align: all reads go
 * through memcpy or byte loads, never through a cast pointer. */
#include "io/safetensors.h"

#include "core/crc32c.h"
#include "core/error.h"
#include "core/json.h"
#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (F32/I* tensors are copied byte for byte)"
#endif

#define ST_MAX_HEADER 100000000ull      /* the reference implementation's limit */
#define ST_MAX_INT 9007199254740992.0   /* 2^53: integers above are not exact in a JSON double */

static const char *dtype_names[ST_NDTYPE] = {"F32", "F16", "BF16", "I8", "U8", "I16", "U16", "I32", "I64"};
static const size_t dtype_sizes[ST_NDTYPE] = {4, 2, 2, 1, 1, 2, 2, 4, 8};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_NDTYPE ? dtype_names[t] : "?"; }
size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_NDTYPE ? dtype_sizes[t] : 0; }

/* The file name for messages lives in a hidden sentinel entry tensors[n_tensors], so that st_read_*
 * can name the file without a field in st_file. */
static const char *fname(const st_file *f) {
    return f->tensors && f->tensors[f->n_tensors].name ? f->tensors[f->n_tensors].name : "safetensors";
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? "," : "", shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* A non-negative integer JSON number that a double holds exactly. */
static int get_uint(const json_value *v, uint64_t *out) {
    if (v->type != JSON_NUMBER || v->number < 0 || v->number > ST_MAX_INT || v->number != (double)(uint64_t)v->number)
        return -1;
    *out = (uint64_t)v->number;
    return 0;
}

/* Validates one tensor entry; fills t except name.  data_size bounds the offsets. */
static int parse_entry(const char *path, const char *name, const json_value *v, size_t data_size,
                       st_tensor *t) {
    if (v->type != JSON_OBJECT) return loqt_set_error("%s: tensor '%s': entry is not a JSON object", path, name);
    const json_value *dt = NULL, *sh = NULL, *off = NULL;
    for (size_t i = 0; i < v->len; i++) {
        const json_value **slot = !strcmp(v->keys[i], "dtype")          ? &dt
                                  : !strcmp(v->keys[i], "shape")        ? &sh
                                  : !strcmp(v->keys[i], "data_offsets") ? &off
                                                                        : NULL;
        if (!slot) return loqt_set_error("%s: tensor '%s': unknown field '%s'", path, name, v->keys[i]);
        if (*slot) return loqt_set_error("%s: tensor '%s': duplicate field '%s'", path, name, v->keys[i]);
        *slot = &v->items[i];
    }
    if (!dt || !sh || !off)
        return loqt_set_error("%s: tensor '%s': missing field '%s'", path, name,
                              !dt ? "dtype" : !sh ? "shape" : "data_offsets");

    if (dt->type != JSON_STRING) return loqt_set_error("%s: tensor '%s': dtype is not a string", path, name);
    int d = 0;
    while (d < ST_NDTYPE && strcmp(dt->string, dtype_names[d]) != 0) d++;
    if (d == ST_NDTYPE) return loqt_set_error("%s: tensor '%s' has unsupported dtype '%s'", path, name, dt->string);
    t->dtype = (st_dtype)d;

    if (sh->type != JSON_ARRAY) return loqt_set_error("%s: tensor '%s': shape is not an array", path, name);
    if (sh->len > ST_MAX_DIMS)
        return loqt_set_error("%s: tensor '%s' has %zu dimensions (at most %d supported)", path, name, sh->len, ST_MAX_DIMS);
    t->ndim = (int)sh->len;
    int has_zero = 0;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t dim;
        if (get_uint(&sh->items[i], &dim)) {
            if (sh->items[i].type == JSON_NUMBER && sh->items[i].number < 0)
                return loqt_set_error("%s: tensor '%s' has a negative dimension %.17g", path, name, sh->items[i].number);
            return loqt_set_error("%s: tensor '%s': shape entry %d is not an integer in [0, 2^53]", path, name, i);
        }
        t->shape[i] = (int64_t)dim;
        has_zero |= dim == 0;
    }
    char shp[256];
    format_shape(shp, sizeof shp, t->ndim, t->shape);

    if (off->type != JSON_ARRAY || off->len != 2)
        return loqt_set_error("%s: tensor '%s': data_offsets is not an array [begin, end]", path, name);
    uint64_t b, e;
    if (get_uint(&off->items[0], &b) || get_uint(&off->items[1], &e))
        return loqt_set_error("%s: tensor '%s': data_offsets are not integers in [0, 2^53]", path, name);
    if (b > e) return loqt_set_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] with begin > end", path, name, b, e);
    if (e > data_size)
        return loqt_set_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] beyond the %zu-byte data buffer",
                              path, name, b, e, data_size);

    /* element count * dtype size, refusing overflow (a zero dimension makes it 0 regardless) */
    uint64_t bytes = has_zero ? 0 : dtype_sizes[d];
    for (int i = 0; i < t->ndim && bytes; i++) {
        uint64_t dim = (uint64_t)t->shape[i];
        if (bytes > UINT64_MAX / dim)
            return loqt_set_error("%s: tensor '%s' has shape %s whose byte size overflows", path, name, shp);
        bytes *= dim;
    }
    if (bytes != e - b)
        return loqt_set_error("%s: tensor '%s' has shape %s but %" PRIu64 " bytes (%s needs %" PRIu64 ")", path,
                              name, shp, e - b, dtype_names[d], bytes);
    t->offset = (size_t)b;
    t->nbytes = (size_t)(e - b);
    return 0;
}

static int parse_meta(const char *path, const json_value *v, st_file *f) {
    if (v->type != JSON_OBJECT) return loqt_set_error("%s: __metadata__ is not a JSON object", path);
    f->meta_keys = calloc(v->len + 1, sizeof(char *));
    f->meta_values = calloc(v->len + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values) return loqt_set_error("%s: out of memory", path);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i].type != JSON_STRING)
            return loqt_set_error("%s: __metadata__ value of '%s' is not a string", path, v->keys[i]);
        f->meta_keys[i] = strdup(v->keys[i]);
        f->meta_values[i] = strdup(v->items[i].string);
        f->n_meta = (int)i + 1;
        if (!f->meta_keys[i] || !f->meta_values[i]) return loqt_set_error("%s: out of memory", path);
    }
    return 0;
}

typedef struct {
    size_t begin, end, index;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* Checks names unique and ranges tiling [0, data_size); reorders f->tensors by offset. */
static int check_layout(const char *path, st_file *f) {
    int n = f->n_tensors;
    if (n == 0) {
        if (f->data_size) return loqt_set_error("%s: no tensors but a %zu-byte data buffer", path, f->data_size);
        return 0;
    }
    const st_tensor **byname = malloc((size_t)n * sizeof *byname);
    span *s = malloc((size_t)n * sizeof *s);
    st_tensor *sorted = malloc((size_t)(n + 1) * sizeof *sorted);
    int rc = -1;
    if (!byname || !s || !sorted) {
        loqt_set_error("%s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < n; i++) byname[i] = &f->tensors[i];
    qsort(byname, (size_t)n, sizeof *byname, name_cmp);
    for (int i = 1; i < n; i++)
        if (!strcmp(byname[i]->name, byname[i - 1]->name)) {
            loqt_set_error("%s: duplicate tensor name '%s'", path, byname[i]->name);
            goto out;
        }
    for (int i = 0; i < n; i++) s[i] = (span){f->tensors[i].offset, f->tensors[i].offset + f->tensors[i].nbytes, (size_t)i};
    qsort(s, (size_t)n, sizeof *s, span_cmp);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor *t = &f->tensors[s[i].index];
        if (s[i].begin > pos) {
            loqt_set_error("%s: bytes [%zu, %zu) of the data buffer belong to no tensor (gap before '%s')", path,
                           pos, s[i].begin, t->name);
            goto out;
        }
        if (s[i].begin < pos) {
            loqt_set_error("%s: tensor '%s' at bytes [%zu, %zu) overlaps tensor '%s' ending at byte %zu", path,
                           t->name, s[i].begin, s[i].end, f->tensors[s[i - 1].index].name, pos);
            goto out;
        }
        pos = s[i].end;
    }
    if (pos != f->data_size) {
        loqt_set_error("%s: tensors cover %zu bytes but the data buffer has %zu", path, pos, f->data_size);
        goto out;
    }
    for (int i = 0; i < n; i++) sorted[i] = f->tensors[s[i].index];
    sorted[n] = f->tensors[n]; /* the sentinel */
    free(f->tensors);
    f->tensors = sorted;
    sorted = NULL;
    rc = 0;
out:
    free(byname);
    free(s);
    free(sorted);
    return rc;
}

/* Tensors from this size up give their pages back once read. */
#define ST_RELEASE_MIN ((size_t)1 << 20)

/* Hands the whole pages of a mapped tensor back to the kernel: a checkpoint read tensor by
 * tensor into the model would otherwise stay resident a second time (as file pages of this
 * process) until it is closed.  The mapping is private and never written, so a later access
 * reads the same bytes from the file again; memory that is not a file mapping is left alone. */
static void release_range(const st_file *f, const uint8_t *p, size_t n) {
    if (!f->mapped || n < ST_RELEASE_MIN) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t b = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + n) & ~(page - 1);
    if (e > b) (void)madvise((void *)b, e - b, MADV_DONTNEED);
}

static void release_pages(const st_file *f, const st_tensor *t) { release_range(f, t->bytes, t->nbytes); }

/* Parses buf[0..size) (the whole file); on failure the caller runs st_close. */
/* loqt's writer records the CRC-32C of the data buffer as __metadata__ "crc32c" (8 hex digits);
 * a file that has one must match it.  Files from elsewhere have none and are not checked. */
static int check_crc(const char *path, const st_file *f) {
    const char *want = st_meta(f, "crc32c");
    if (!want) return 0;
    char *end = NULL;
    unsigned long w = strtoul(want, &end, 16);
    if (strlen(want) != 8 || *end) return loqt_set_error("%s: malformed crc32c '%s' in __metadata__", path, want);
    uint32_t have = crc32c(0, f->data, f->data_size);
    release_range(f, f->data, f->data_size); /* read once, whole: not kept resident */
    if (have != (uint32_t)w)
        return loqt_set_error("%s: checksum mismatch (the data's crc32c is %08x, the file records %s): the file is "
                              "corrupt", path, have, want);
    return 0;
}

static int parse_file(st_file *f, const char *path, const uint8_t *buf, size_t size) {
    if (size < 8) return loqt_set_error("%s: file is %zu bytes, too short for a safetensors header", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > ST_MAX_HEADER)
        return loqt_set_error("%s: header length %" PRIu64 " exceeds the 100 MB limit (not a safetensors file?)", path, n);
    if (n > size - 8)
        return loqt_set_error("%s: header length %" PRIu64 " but only %zu bytes follow (truncated file?)", path, n, size - 8);
    f->data = buf + 8 + n;
    f->data_size = size - 8 - (size_t)n;

    json_value *h = json_parse((const char *)buf + 8, (size_t)n);
    if (!h) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", loqt_last_error());
        return loqt_set_error("%s: header (starting at file byte 8): %s", path, msg);
    }
    int rc = -1;
    if (h->type != JSON_OBJECT) {
        loqt_set_error("%s: header is not a JSON object", path);
        goto out;
    }
    size_t nt = 0;
    for (size_t i = 0; i < h->len; i++) nt += strcmp(h->keys[i], "__metadata__") != 0;
    if (nt > (size_t)INT32_MAX - 1) {
        loqt_set_error("%s: too many tensors", path);
        goto out;
    }
    f->tensors = calloc(nt + 1, sizeof *f->tensors);
    if (!f->tensors || !(f->tensors[0].name = strdup(path))) {
        loqt_set_error("%s: out of memory", path);
        goto out;
    }
    int seen_meta = 0;
    for (size_t i = 0; i < h->len; i++) {
        if (!strcmp(h->keys[i], "__metadata__")) {
            if (seen_meta++) {
                loqt_set_error("%s: duplicate __metadata__", path);
                goto out;
            }
            if (parse_meta(path, &h->items[i], f)) goto out;
            continue;
        }
        /* grow the table one entry at a time so st_close always sees a consistent prefix + sentinel */
        st_tensor *t = &f->tensors[f->n_tensors];
        char *sentinel = t->name;
        memset(t, 0, sizeof *t);
        if (parse_entry(path, h->keys[i], &h->items[i], f->data_size, t)) {
            t->name = sentinel;
            goto out;
        }
        t->name = strdup(h->keys[i]);
        f->tensors[f->n_tensors + 1].name = sentinel;
        f->n_tensors++;
        if (!t->name) {
            loqt_set_error("%s: out of memory", path);
            goto out;
        }
    }
    rc = check_layout(path, f);
    if (!rc) rc = check_crc(path, f);
    for (int i = 0; !rc && i < f->n_tensors; i++) f->tensors[i].bytes = f->data + f->tensors[i].offset;
out:
    json_free(h);
    return rc;
}

int st_open_memory(st_file *f, const char *name, const void *buf, size_t size) {
    memset(f, 0, sizeof *f);
    if (parse_file(f, name, buf, size)) {
        st_close(f);
        return -1;
    }
    return 0;
}

int st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return loqt_set_error("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return loqt_set_error("%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return loqt_set_error("%s: file is %zu bytes, too short for a safetensors header", path, size);
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (m == MAP_FAILED) return loqt_set_error("%s: mmap failed: %s", path, strerror(e));
    f->mapped = 1;
    if (parse_file(f, path, m, size)) {
        st_close(f);
        munmap(m, size);
        return -1;
    }
    f->map = m;
    f->map_size = size;
    f->mapped = 1;
    return 0;
}

void st_close(st_file *f) {
    for (int i = 0; i < f->n_shards; i++) st_close(&f->shards[i]);
    free(f->shards);
    if (f->tensors)
        for (int i = 0; i <= f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) {
            f->tensors[i].used = 1; /* the array is the reader's own (calloc), not const */
            return &f->tensors[i];
        }
    return NULL;
}

const char *st_first_unused(const st_file *f) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!f->tensors[i].used) return f->tensors[i].name;
    return NULL;
}

const void *st_data(const st_file *f, const st_tensor *t) {
    (void)f;
    return t->bytes;
}


const char *st_meta(const st_file *f, const char *key) {
    for (int i = f->n_meta; i-- > 0;)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

/* Finds `name` and checks its shape against the caller's expectation. */
static const st_tensor *find_shaped(const st_file *f, const char *name, int ndim, const int64_t *shape) {
    const st_tensor *t = st_find(f, name);
    if (!t) {
        loqt_set_error("%s: tensor '%s' not found", fname(f), name);
        return NULL;
    }
    int same = ndim == t->ndim;
    for (int i = 0; same && i < ndim; i++) same = shape[i] == t->shape[i];
    if (!same) {
        char have[256], want[256];
        format_shape(have, sizeof have, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim >= 0 && ndim <= ST_MAX_DIMS ? ndim : 0, shape);
        loqt_set_error("%s: tensor '%s' has shape %s, expected %s", t->file ? t->file : fname(f), name, have, want);
        return NULL;
    }
    return t;
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13; /* inf, or nan keeping its payload */
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | mant << 13; /* rebias 15 -> 127 */
    } else if (mant) {
        /* subnormal: value mant * 2^-24; normalise so the leading 1 becomes implicit */
        int e = -14;
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        bits = sign | (uint32_t)(e + 127) << 23 | (mant & 0x3ff) << 13;
    } else {
        bits = sign; /* signed zero */
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

float st_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; /* bf16 is the top half of an f32 */
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

int st_read_f32(const st_file *f, const char *name, float *dst, int ndim, const int64_t *shape) {
    const st_tensor *t = find_shaped(f, name, ndim, shape);
    if (!t) return -1;
    const uint8_t *src = t->bytes;
    size_t n = t->nbytes / dtype_sizes[t->dtype];
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, src, t->nbytes);
        break;
    case ST_F16:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) dst[i] = st_f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case ST_BF16:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) dst[i] = st_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    default:
        return loqt_set_error("%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", t->file ? t->file : fname(f),
                              name, dtype_names[t->dtype]);
    }
    release_pages(f, t);
    return 0;
}

int st_read_raw(const st_file *f, const char *name, void *dst, st_dtype dtype, int ndim, const int64_t *shape) {
    const st_tensor *t = find_shaped(f, name, ndim, shape);
    if (!t) return -1;
    if (t->dtype != dtype)
        return loqt_set_error("%s: tensor '%s' has dtype %s, expected %s", t->file ? t->file : fname(f), name,
                              dtype_names[t->dtype], st_dtype_name(dtype));
    memcpy(dst, t->bytes, t->nbytes);
    release_pages(f, t);
    return 0;
}

/* ---- finiteness ---- */

size_t st_count_nonfinite(st_dtype t, const void *data, size_t nbytes) {
    /* tensors are packed back to back, so their data need not be aligned: bytes, not casts */
    const uint8_t *b = data;
    size_t bad = 0;
    if (t == ST_F32)
        for (size_t i = 0; i + 4 <= nbytes; i += 4) bad += (b[i + 3] & 0x7f) == 0x7f && (b[i + 2] & 0x80);
    else if (t == ST_BF16)
        for (size_t i = 0; i + 2 <= nbytes; i += 2) bad += (b[i + 1] & 0x7f) == 0x7f && (b[i] & 0x80);
    else if (t == ST_F16)
        for (size_t i = 0; i + 2 <= nbytes; i += 2) bad += (b[i + 1] & 0x7c) == 0x7c;
    return bad;
}

int st_check_finite(const st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        size_t bad = st_count_nonfinite(t->dtype, t->bytes, t->nbytes);
        release_pages(f, t);
        if (bad)
            return loqt_set_error("tensor '%s' holds %zu non-finite values (NaN or infinity): the weights are "
                                  "unusable (the run that wrote them diverged)", t->name, bad);
    }
    return 0;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_entry;

struct st_writer {
    st_entry *t;
    int n, cap;
    char **mk, **mv;
    int nm, capm;
    char err[400]; /* first error from add/meta, reported by st_writer_write */
};

static int werr(st_writer *w, const char *fmt, ...) LOQT_PRINTF(2, 3);
static int werr(st_writer *w, const char *fmt, ...) {
    if (w->err[0]) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return -1;
}

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

static int add_meta(st_writer *w, const char *key, const char *value) {
    if (!key || !value) return werr(w, "metadata key or value is NULL");
    if (!json_utf8_valid(key, strlen(key)) || !json_utf8_valid(value, strlen(value)))
        return werr(w, "metadata '%s' is not valid UTF-8", key);
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mk[i], key)) { /* setting a key again replaces its value */
            char *v = strdup(value);
            if (!v) return werr(w, "out of memory");
            free(w->mv[i]);
            w->mv[i] = v;
            return 0;
        }
    if (w->nm == w->capm) {
        int nc = w->capm ? 2 * w->capm : 8;
        char **mk = realloc(w->mk, (size_t)nc * sizeof *mk);
        if (mk) w->mk = mk;
        char **mv = realloc(w->mv, (size_t)nc * sizeof *mv);
        if (mv) w->mv = mv;
        if (!mk || !mv) return werr(w, "out of memory");
        w->capm = nc;
    }
    w->mk[w->nm] = strdup(key);
    w->mv[w->nm] = strdup(value);
    w->nm++;
    return !w->mk[w->nm - 1] || !w->mv[w->nm - 1] ? werr(w, "out of memory") : 0;
}

void st_writer_meta(st_writer *w, const char *key, const char *value) {
    if (w) (void)add_meta(w, key, value);
}

static int add_tensor(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
    if (!name) return werr(w, "tensor name is NULL");
    if (!json_utf8_valid(name, strlen(name))) return werr(w, "tensor name '%s' is not valid UTF-8", name);
    if (!strcmp(name, "__metadata__")) return werr(w, "'__metadata__' cannot name a tensor");
    if ((unsigned)dtype >= ST_NDTYPE) return werr(w, "tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim && !shape))
        return werr(w, "tensor '%s': %d dimensions (0 to %d supported)", name, ndim, ST_MAX_DIMS);
    uint64_t bytes = dtype_sizes[dtype];
    int has_zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return werr(w, "tensor '%s': negative dimension %" PRId64, name, shape[i]);
        has_zero |= shape[i] == 0;
    }
    for (int i = 0; i < ndim && !has_zero; i++) {
        if ((uint64_t)shape[i] > (uint64_t)ST_MAX_INT / bytes) return werr(w, "tensor '%s': size overflows", name);
        bytes *= (uint64_t)shape[i];
    }
    if (has_zero) bytes = 0;
    if (bytes && !data) return werr(w, "tensor '%s': data is NULL", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return werr(w, "duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 16;
        st_entry *t = realloc(w->t, (size_t)nc * sizeof *t);
        if (!t) return werr(w, "out of memory");
        w->t = t;
        w->cap = nc;
    }
    st_entry *e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return werr(w, "out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = (size_t)bytes;
    w->n++;
    return 0;
}

void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    if (w) (void)add_tensor(w, name, dtype, ndim, shape, data);
}

/* The JSON header, unpadded, in a malloc'd buffer. */
static char *build_header(const st_writer *w, size_t *len) {
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    if (!m) return NULL;
    putc('{', m);
    if (w->nm) {
        fputs("\"__metadata__\":{", m);
        for (int i = 0; i < w->nm; i++) {
            if (i) putc(',', m);
            json_write_string(m, w->mk[i]);
            putc(':', m);
            json_write_string(m, w->mv[i]);
        }
        putc('}', m);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->t[i];
        if (i || w->nm) putc(',', m);
        json_write_string(m, e->name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[e->dtype]);
        for (int d = 0; d < e->ndim; d++) fprintf(m, "%s%" PRId64, d ? "," : "", e->shape[d]);
        fprintf(m, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    putc('}', m);
    int bad = ferror(m);
    if (fclose(m) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

int st_writer_find(const st_writer *w, const char *name, st_dtype *dtype, int *ndim, int64_t *shape) {
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->t[i].name, name)) continue;
        if (dtype) *dtype = w->t[i].dtype;
        if (ndim) *ndim = w->t[i].ndim;
        if (shape) memcpy(shape, w->t[i].shape, sizeof(int64_t) * (size_t)w->t[i].ndim);
        return 0;
    }
    return -1;
}

int st_writer_count(const st_writer *w) { return w->n; }

int st_writer_check_finite(const st_writer *w) {
    for (int i = 0; i < w->n; i++) {
        size_t bad = st_count_nonfinite(w->t[i].dtype, w->t[i].data, w->t[i].nbytes);
        if (bad)
            return loqt_set_error("tensor '%s' holds %zu non-finite values (NaN or infinity)", w->t[i].name, bad);
    }
    return 0;
}

int st_writer_write(st_writer *w, const char *path) {
    if (!w) return loqt_set_error("%s: no writer", path);
    if (w->err[0]) return loqt_set_error("%s: %s", path, w->err);
    uint64_t total = 0;
    for (int i = 0; i < w->n; i++) {
        total += w->t[i].nbytes;
        if (total > (uint64_t)ST_MAX_INT) return loqt_set_error("%s: total tensor size overflows", path);
    }
    /* the data's checksum in __metadata__, verified by st_open (tensors are written in order) */
    uint32_t crc = 0;
    for (int i = 0; i < w->n; i++) crc = crc32c(crc, w->t[i].data, w->t[i].nbytes);
    char crc_hex[16];
    snprintf(crc_hex, sizeof crc_hex, "%08x", crc);
    st_writer_meta(w, "crc32c", crc_hex);
    size_t hlen;
    char *header = build_header(w, &hlen);
    if (!header) return loqt_set_error("%s: out of memory building the header", path);
    /* Pad with spaces so the data buffer starts 8-byte aligned (8 + N is a multiple of 8). */
    size_t pad = (8 - hlen % 8) % 8;
    if (hlen + pad > ST_MAX_HEADER) {
        free(header);
        return loqt_set_error("%s: header of %zu bytes exceeds the 100 MB limit", path, hlen);
    }
    uint8_t lenbuf[8];
    uint64_t n = hlen + pad;
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(n >> (8 * i));
    atomic_file a;
    int rc = atomic_file_open(&a, path);
    if (!rc) rc = atomic_file_write(&a, lenbuf, 8);
    if (!rc) rc = atomic_file_write(&a, header, hlen);
    if (!rc) rc = atomic_file_write(&a, "       ", pad);
    for (int i = 0; !rc && i < w->n; i++) rc = atomic_file_write(&a, w->t[i].data, w->t[i].nbytes);
    free(header);
    if (rc) {
        if (a.tmp) atomic_file_abort(&a);
        return -1;
    }
    return atomic_file_commit(&a);
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->t);
    free(w->mk);
    free(w->mv);
    free(w);
}
