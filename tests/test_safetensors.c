/* safetensors: writer/reader round trips, F16/BF16 conversion (all 65536 codes of each), a file
 * written by an independent Python writer (tests/gen_safetensors_ref.py), and rejection of
 * corrupt files: every truncation, header byte flips, and crafted bad headers.  All comparisons
 * are exact (bitwise): nothing here is approximate. */
#include "core/error.h"
#include "core/rng.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "core/crc32c.h"
#include "io/safetensors.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

/* dir/name in one of 4 rotating buffers, so a test can hold a few paths at once */
static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) {
        printf("cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len + 1);
    if (fread(buf, 1, *len, f) != *len) *len = 0;
    fclose(f);
    return buf;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

/* Re-checks what st_open promises, independently of its code. */
static int layout_ok(const st_file *f) {
    size_t pos = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        uint64_t n = st_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
        if (t->offset != pos || n != t->nbytes || t->offset + t->nbytes > f->data_size) return 0;
        pos += t->nbytes;
    }
    return pos == f->data_size;
}

static void test_roundtrip_all_dtypes(void) {
    const char *path = tmp_path("rt.safetensors");
    st_writer *w = st_writer_new();
    uint8_t *bufs[ST_NDTYPE];
    int64_t shape[3] = {3, 5, 2};
    for (int d = 0; d < ST_NDTYPE; d++) {
        size_t n = 30 * st_dtype_size((st_dtype)d);
        bufs[d] = malloc(n);
        for (size_t i = 0; i < n; i++) bufs[d][i] = (uint8_t)rng_u64(1, (uint64_t)d, i);
        char name[32];
        snprintf(name, sizeof name, "t.%s", st_dtype_name((st_dtype)d));
        st_writer_add(w, name, (st_dtype)d, 3, shape, bufs[d]);
    }
    float scalar = -3.5f;
    int64_t e1[2] = {0, 4}, e2[2] = {4, 0};
    st_writer_add(w, "scalar", ST_F32, 0, NULL, &scalar);
    st_writer_add(w, "empty1", ST_BF16, 2, e1, NULL);
    st_writer_add(w, "empty2", ST_I64, 2, e2, NULL);
    st_writer_meta(w, "format", "pt");
    st_writer_meta(w, "step", "1");
    st_writer_meta(w, "step", "12"); /* replaces */
    CHECK(st_writer_write(w, path) == 0, "write failed: %s", loqt_last_error());
    st_writer_free(w);

    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "temporary file left behind");

    size_t len = 0;
    uint8_t *raw = read_bytes(path, &len);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | raw[i];
    CHECK(hn % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hn);
    CHECK(raw[8] == '{', "header does not start with '{'");
    size_t k = 8 + (size_t)hn;
    while (raw[k - 1] == ' ') k--;
    CHECK(raw[k - 1] == '}' && 8 + hn - k < 8, "header padding is not < 8 spaces after '}'");
    free(raw);

    st_file f;
    CHECK(st_open(&f, path) == 0, "open failed: %s", loqt_last_error());
    if (f.n_tensors != ST_NDTYPE + 3) {
        CHECK(0, "n_tensors %d, expected %d", f.n_tensors, ST_NDTYPE + 3);
        st_close(&f);
        return;
    }
    CHECK(layout_ok(&f), "layout invariants violated");
    for (int d = 0; d < ST_NDTYPE; d++) {
        const st_tensor *t = &f.tensors[d]; /* insertion order is kept */
        char name[32];
        snprintf(name, sizeof name, "t.%s", st_dtype_name((st_dtype)d));
        CHECK(!strcmp(t->name, name) && t->dtype == (st_dtype)d && t->ndim == 3 && t->shape[0] == 3 &&
                  t->shape[1] == 5 && t->shape[2] == 2,
              "tensor %d: %s", d, t->name);
        CHECK(t->nbytes == 30 * st_dtype_size((st_dtype)d) && !memcmp(st_data(&f, t), bufs[d], t->nbytes),
              "tensor %s data differs (exact)", name);
        uint8_t out[240];
        CHECK(st_read_raw(&f, name, out, (st_dtype)d, 3, shape) == 0 && !memcmp(out, bufs[d], t->nbytes),
              "st_read_raw %s: %s", name, loqt_last_error());
    }
    float got = 0;
    CHECK(st_read_f32(&f, "scalar", &got, 0, NULL) == 0 && got == -3.5f, "scalar = %g, expected -3.5 (exact)", got);
    const st_tensor *t = st_find(&f, "empty1");
    CHECK(t && t->nbytes == 0 && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4, "empty1");
    CHECK(st_read_f32(&f, "empty1", &got, 2, e1) == 0, "reading an empty tensor: %s", loqt_last_error());
    t = st_find(&f, "empty2");
    CHECK(t && t->nbytes == 0 && t->dtype == ST_I64, "empty2");
    CHECK(f.n_meta == 3 && st_meta(&f, "crc32c"), "n_meta %d, expected 2 and the writer's crc32c", f.n_meta);
    CHECK(st_meta(&f, "format") && !strcmp(st_meta(&f, "format"), "pt"), "meta format");
    CHECK(st_meta(&f, "step") && !strcmp(st_meta(&f, "step"), "12"), "meta step (replaced value)");
    CHECK(st_meta(&f, "nope") == NULL, "absent meta");
    st_close(&f);

    /* overwriting an existing file replaces it whole */
    w = st_writer_new();
    st_writer_add(w, "only", ST_F32, 0, NULL, &scalar);
    CHECK(st_writer_write(w, path) == 0, "overwrite failed: %s", loqt_last_error());
    st_writer_free(w);
    CHECK(st_open(&f, path) == 0 && f.n_tensors == 1 && f.data_size == 4, "overwritten file: %s", loqt_last_error());
    st_close(&f);
    for (int d = 0; d < ST_NDTYPE; d++) free(bufs[d]);
    unlink(path);
}

static void test_zero_tensors(void) {
    const char *path = tmp_path("zero.safetensors");
    st_writer *w = st_writer_new();
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    st_file f;
    CHECK(st_open(&f, path) == 0 && f.n_tensors == 0 && f.data_size == 0 && f.n_meta == 1, "empty file: %s",
          loqt_last_error());
    CHECK(st_meta(&f, "crc32c") && !strcmp(st_meta(&f, "crc32c"), "00000000"), "the CRC of no data");
    CHECK(st_find(&f, "x") == NULL, "find in empty file");
    st_close(&f);

    w = st_writer_new();
    st_writer_meta(w, "only", "metadata");
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    CHECK(st_open(&f, path) == 0 && f.n_tensors == 0 && f.n_meta == 2, "metadata-only file: %s", loqt_last_error());
    st_close(&f);
    unlink(path);
}

/* CRC-32C: the standard check value, the instruction path against the table, and a file whose
 * data changed after writing refused with the reason (the header itself is unchanged). */
static void test_checksum(void) {
    CHECK(crc32c(0, "123456789", 9) == 0xE3069283u && crc32c_portable(0, "123456789", 9) == 0xE3069283u,
          "crc32c('123456789') = %08x / %08x, expected e3069283", crc32c(0, "123456789", 9), crc32c_portable(0, "123456789", 9));
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)(i * 37 + 11);
    for (int n = 0; n < 1000; n += 97)
        CHECK(crc32c(crc32c(0, buf, (size_t)n), buf + n, (size_t)(1000 - n)) == crc32c_portable(0, buf, 1000),
              "split at %d: running CRC differs", n);
    const char *path = tmp_path("crc.safetensors");
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    int64_t shape[1] = {64};
    st_writer *w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 1, shape, x);
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    size_t len = 0;
    unsigned char *bytes = (unsigned char *)file_read_all(path, 1 << 20, &len);
    CHECK(bytes && len > 64 * 4, "read back");
    if (!bytes) return;
    bytes[len - 5] ^= 0x10; /* one bit of the last tensor value */
    st_file f;
    CHECK(st_open_memory(&f, "flipped", bytes, len) == -1 && strstr(loqt_last_error(), "checksum mismatch"),
          "a flipped data bit was accepted: %s", loqt_last_error());
    bytes[len - 5] ^= 0x10;
    CHECK(st_open_memory(&f, "restored", bytes, len) == 0, "the restored file: %s", loqt_last_error());
    st_close(&f);
    mem_free(bytes);
    unlink(path);
}

static void test_utf8_names(void) {
    const char *path = tmp_path("names.safetensors");
    const char *names[] = {"", "q\"uo\\te", "new\nline\ttab\x01", "\xc3\xbc\xe6\x97\xa5\xf0\x9f\x98\x80", "a/b.c:d"};
    int n = (int)(sizeof names / sizeof *names);
    uint8_t v[5] = {1, 2, 3, 4, 5};
    int64_t one = 1;
    st_writer *w = st_writer_new();
    for (int i = 0; i < n; i++) st_writer_add(w, names[i], ST_U8, 1, &one, &v[i]);
    st_writer_meta(w, "k\"\xc3\xa9", "v\n\xf0\x9f\x98\x80");
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    st_file f;
    CHECK(st_open(&f, path) == 0, "open: %s", loqt_last_error());
    for (int i = 0; i < n && i < f.n_tensors; i++) {
        const st_tensor *t = st_find(&f, names[i]);
        CHECK(t && *(const uint8_t *)st_data(&f, t) == v[i], "name %d not found or wrong data", i);
        CHECK(!strcmp(f.tensors[i].name, names[i]), "order: %d", i);
    }
    CHECK(st_meta(&f, "k\"\xc3\xa9") && !strcmp(st_meta(&f, "k\"\xc3\xa9"), "v\n\xf0\x9f\x98\x80"), "UTF-8 metadata");
    st_close(&f);
    unlink(path);
}

static void test_writer_errors(void) {
    const char *path = tmp_path("werr.safetensors");
    float x[4] = {0};
    int64_t s2[2] = {2, 2}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 4};
    struct {
        const char *name;
        st_dtype dt;
        int ndim;
        const int64_t *shape;
        const void *data;
        const char *want;
    } cases[] = {
        {"a", ST_F32, 1, neg, x, "negative dimension"},
        {"a", ST_F32, 9, s9, x, "9 dimensions"},
        {"a", (st_dtype)99, 2, s2, x, "invalid dtype"},
        {"__metadata__", ST_F32, 2, s2, x, "__metadata__"},
        {"a", ST_F32, 2, s2, NULL, "data is NULL"},
        {"\xff", ST_F32, 2, s2, x, "not valid UTF-8"},
        {"a", ST_F32, 3, huge, x, "overflows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        st_writer *w = st_writer_new();
        st_writer_add(w, cases[i].name, cases[i].dt, cases[i].ndim, cases[i].shape, cases[i].data);
        CHECK(st_writer_write(w, path) == -1 && strstr(loqt_last_error(), cases[i].want) &&
                  strstr(loqt_last_error(), path),
              "case %zu: error '%s', expected '%s'", i, loqt_last_error(), cases[i].want);
        st_writer_free(w);
    }
    st_writer *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 2, s2, x);
    st_writer_add(w, "a", ST_F32, 2, s2, x);
    CHECK(st_writer_write(w, path) == -1 && strstr(loqt_last_error(), "duplicate tensor name 'a'"), "duplicate: %s",
          loqt_last_error());
    st_writer_free(w);
    CHECK(access(path, F_OK) != 0, "a failed write created the file");

    w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 2, s2, x);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", dir);
    CHECK(st_writer_write(w, bad) == -1 && strstr(loqt_last_error(), "No such file"), "missing dir: %s",
          loqt_last_error());
    st_writer_free(w);
}

/* value of an F16 code from its definition */
static float f16_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)(s ? -v : v);
}

static float bf16_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return (float)(s ? -v : v);
}

static void test_half_conversions_exhaustive(void) {
    const char *path = tmp_path("half.safetensors");
    uint16_t *codes = malloc(65536 * 2);
    for (int i = 0; i < 65536; i++) codes[i] = (uint16_t)i;
    int64_t n = 65536;
    st_writer *w = st_writer_new();
    st_writer_add(w, "f16", ST_F16, 1, &n, codes);
    st_writer_add(w, "bf16", ST_BF16, 1, &n, codes);
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    st_file f;
    float *a = malloc(65536 * 4), *b = malloc(65536 * 4);
    CHECK(st_open(&f, path) == 0, "open: %s", loqt_last_error());
    CHECK(st_read_f32(&f, "f16", a, 1, &n) == 0 && st_read_f32(&f, "bf16", b, 1, &n) == 0, "read: %s",
          loqt_last_error());
    int bad16 = 0, badbf = 0;
    for (int i = 0; i < 65536; i++) {
        float r16 = f16_ref((uint16_t)i), rbf = bf16_ref((uint16_t)i);
        /* NaN: any NaN with the same sign; everything else bit-exact (so -0 != +0) */
        if (isnan(r16) ? !(isnan(a[i]) && signbit(a[i]) == signbit(r16)) : !same_bits(a[i], r16)) bad16++;
        if (isnan(rbf) ? !(isnan(b[i]) && signbit(b[i]) == signbit(rbf)) : !same_bits(b[i], rbf)) badbf++;
        uint32_t bits;
        memcpy(&bits, &b[i], 4);
        if (bits != (uint32_t)i << 16) badbf++; /* bf16 -> f32 keeps NaN payloads too */
    }
    CHECK(bad16 == 0, "%d of 65536 F16 codes convert wrongly (exact)", bad16);
    CHECK(badbf == 0, "%d BF16 mismatches (exact)", badbf);
    CHECK(same_bits(st_f16_to_f32(0x0001), 5.9604644775390625e-8f), "smallest F16 subnormal");
    CHECK(same_bits(st_f16_to_f32(0x03ff), 6.097555160522461e-05f), "largest F16 subnormal");
    CHECK(same_bits(st_f16_to_f32(0x7bff), 65504.0f), "F16 max");
    CHECK(same_bits(st_f16_to_f32(0x8000), -0.0f), "F16 -0");
    st_close(&f);
    free(a);
    free(b);
    free(codes);
    unlink(path);
}

static void test_reference_file(void) {
    const char *refdir = getenv("LOQT_REF_DIR");
    char path[600];
    snprintf(path, sizeof path, "%s/safetensors_ref.safetensors", refdir ? refdir : "build/ref");
    st_file f;
    if (st_open(&f, path) != 0) {
        CHECK(0, "cannot open the reference file (make test generates it with tests/gen_safetensors_ref.py): %s",
              loqt_last_error());
        return;
    }
    CHECK(f.n_tensors == 7 && layout_ok(&f), "n_tensors %d, expected 7, and a valid layout", f.n_tensors);
    CHECK(((uintptr_t)f.data - (uintptr_t)f.map) % 8 == 3, "the reference data buffer should be unaligned");
    /* data order, not header order */
    const char *order[] = {"ids.i64", "layer.\xc3\xbc.\xe6\x97\xa5\xe6\x9c\xac.\xf0\x9f\x98\x80", "weight.f32",
                           "mask.u8", "emb.bf16", "empty", "scalar"};
    for (int i = 0; i < 7 && i < f.n_tensors; i++)
        CHECK(!strcmp(f.tensors[i].name, order[i]), "tensor %d is '%s', expected '%s'", i, f.tensors[i].name, order[i]);

    float w[6];
    int64_t s23[2] = {2, 3};
    const float w_want[6] = {-1.0f, -0.75f, 3.4028234663852886e38f, 1.401298464324817e-45f, -0.0f, 0.1f};
    CHECK(st_read_f32(&f, "weight.f32", w, 2, s23) == 0, "weight: %s", loqt_last_error());
    for (int i = 0; i < 6; i++) CHECK(same_bits(w[i], w_want[i]), "weight[%d] = %.9g, expected %.9g (exact)", i, w[i], w_want[i]);

    float e[5];
    int64_t s5 = 5;
    CHECK(st_read_f32(&f, "emb.bf16", e, 1, &s5) == 0, "emb: %s", loqt_last_error());
    CHECK(e[0] == 1.0f && e[1] == 3.140625f && same_bits(e[2], -0x1p-130f) && isinf(e[3]) && e[3] > 0 && isnan(e[4]),
          "bf16 values %g %g %g %g %g (exact; pi rounds to 3.140625)", e[0], e[1], e[2], e[3], e[4]);

    float h[12];
    int64_t s34[2] = {3, 4};
    const float h_want[12] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0x1p-24f, 0x1p-14f, 0x1.ff8p-15f,
                              INFINITY, -INFINITY, NAN, 0.0999755859375f};
    const char *hname = order[1];
    CHECK(st_read_f32(&f, hname, h, 2, s34) == 0, "f16: %s", loqt_last_error());
    for (int i = 0; i < 12; i++)
        CHECK(i == 10 ? isnan(h[i]) : same_bits(h[i], h_want[i]), "f16[%d] = %.9g, expected %.9g (exact)", i, h[i], h_want[i]);

    int64_t ids[3], s3 = 3;
    CHECK(st_read_raw(&f, "ids.i64", ids, ST_I64, 1, &s3) == 0 && ids[0] == -1 && ids[1] == 0 &&
              ids[2] == ((int64_t)1 << 40),
          "ids: %s", loqt_last_error());
    uint8_t mask[4];
    int64_t s22[2] = {2, 2};
    CHECK(st_read_raw(&f, "mask.u8", mask, ST_U8, 2, s22) == 0 && mask[0] == 0 && mask[1] == 1 && mask[2] == 254 &&
              mask[3] == 255,
          "mask");
    float sc = 0;
    CHECK(st_read_f32(&f, "scalar", &sc, 0, NULL) == 0 && sc == 42.5f, "scalar %g, expected 42.5 (exact)", sc);
    int64_t s03[2] = {0, 3};
    CHECK(st_read_f32(&f, "empty", w, 2, s03) == 0, "empty: %s", loqt_last_error());
    CHECK(st_meta(&f, "format") && !strcmp(st_meta(&f, "format"), "pt"), "meta format");
    CHECK(st_meta(&f, "note") && !strcmp(st_meta(&f, "note"), "ref \"quoted\" \xc3\xbc"), "meta note");
    st_close(&f);
}

static void test_read_errors(void) {
    const char *path = tmp_path("rerr.safetensors");
    int64_t ids[2] = {1, 2}, s2 = 2, s3 = 3;
    st_writer *w = st_writer_new();
    st_writer_add(w, "ids", ST_I64, 1, &s2, ids);
    CHECK(st_writer_write(w, path) == 0, "write: %s", loqt_last_error());
    st_writer_free(w);
    st_file f;
    CHECK(st_open(&f, path) == 0, "open: %s", loqt_last_error());
    float out[3];
    CHECK(st_read_f32(&f, "nope", out, 1, &s2) == -1 && strstr(loqt_last_error(), "tensor 'nope' not found") &&
              strstr(loqt_last_error(), path),
          "missing: %s", loqt_last_error());
    CHECK(st_read_f32(&f, "ids", out, 1, &s3) == -1 && strstr(loqt_last_error(), "has shape [2], expected [3]"),
          "shape: %s", loqt_last_error());
    CHECK(st_read_f32(&f, "ids", out, 1, &s2) == -1 && strstr(loqt_last_error(), "dtype I64, expected F32, F16 or BF16"),
          "dtype: %s", loqt_last_error());
    CHECK(st_read_raw(&f, "ids", out, ST_I32, 1, &s2) == -1 && strstr(loqt_last_error(), "expected I32"), "raw dtype: %s",
          loqt_last_error());
    st_close(&f);
    CHECK(st_open(&f, tmp_path("does-not-exist")) == -1 && strstr(loqt_last_error(), "cannot open"), "missing file");
    CHECK(st_open(&f, dir) == -1 && strstr(loqt_last_error(), "not a regular file"), "directory");
    unlink(path);
}

/* A file with header length `hlen`, header text h and `dlen` data bytes. */
static void make_file(const char *path, uint64_t hlen, const char *h, size_t dlen) {
    size_t n = strlen(h);
    uint8_t *buf = calloc(1, 8 + n + dlen + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, h, n);
    write_bytes(path, buf, 8 + n + dlen);
    free(buf);
}

#define T(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

static void test_crafted_headers(void) {
    const char *path = tmp_path("bad.safetensors");
    struct {
        const char *h;
        size_t dlen;
        const char *want; /* NULL: must be accepted */
    } cases[] = {
        {"{}      ", 0, NULL},
        {"{" T("a", "F32", "[0]", "0", "0") "," T("b", "F32", "[]", "0", "4") "," T("c", "U8", "[0,9]", "4", "4") "}", 4, NULL},
        {"[]", 0, "header is not a JSON object"},
        {"{", 0, "header (starting at file byte 8): json:"},
        {"{}\0\0", 0, "json:"},
        {"{\"a\":1}", 0, "entry is not a JSON object"},
        {"{" T("a", "F64", "[1]", "0", "8") "}", 8, "unsupported dtype 'F64'"},
        {"{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "dtype is not a string"},
        {"{" T("a", "F32", "[-1]", "0", "4") "}", 4, "negative dimension"},
        {"{" T("a", "F32", "[1.5]", "0", "4") "}", 4, "not an integer"},
        {"{" T("a", "F32", "[9007199254740994]", "0", "4") "}", 4, "not an integer"},
        {"{" T("a", "F32", "\"x\"", "0", "4") "}", 4, "shape is not an array"},
        {"{" T("a", "U8", "[1,1,1,1,1,1,1,1,1]", "0", "1") "}", 1, "9 dimensions"},
        {"{" T("a", "F32", "[4294967296,4294967296]", "0", "0") "}", 0, "overflows"},
        {"{" T("a", "U8", "[9007199254740992,9007199254740992]", "0", "0") "}", 0, "overflows"},
        {"{" T("x", "F32", "[3,4]", "0", "40") "}", 40, "tensor 'x' has shape [3,4] but 40 bytes"},
        {"{" T("a", "U8", "[4]", "8", "4") "}", 8, "begin > end"},
        {"{" T("a", "U8", "[16]", "0", "16") "}", 8, "beyond the 8-byte data buffer"},
        {"{" T("a", "U8", "[1]", "0", "1") "}", 0, "beyond the 0-byte data buffer"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1, "data_offsets is not an array"},
        {"{" T("a", "U8", "[1]", "0", "-1") "}", 1, "not integers"},
        {"{" T("a", "U8", "[1]", "0.5", "1") "}", 1, "not integers"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "missing field 'dtype'"},
        {"{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "missing field 'shape'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":0}}", 1, "unknown field 'x'"},
        {"{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "duplicate field"},
        {"{" T("a", "U8", "[8]", "0", "8") "," T("b", "U8", "[8]", "4", "12") "}", 12, "overlaps tensor 'a'"},
        {"{" T("a", "U8", "[8]", "0", "8") "," T("b", "U8", "[0]", "4", "4") "}", 8, "overlaps"},
        {"{" T("a", "U8", "[4]", "0", "4") "," T("b", "U8", "[4]", "8", "12") "}", 12, "gap before 'b'"},
        {"{" T("a", "U8", "[4]", "4", "8") "}", 8, "bytes [0, 4) of the data buffer belong to no tensor"},
        {"{" T("a", "U8", "[4]", "0", "4") "}", 8, "tensors cover 4 bytes but the data buffer has 8"},
        {"{}", 4, "no tensors but a 4-byte data buffer"},
        {"{" T("a", "U8", "[4]", "0", "4") "," T("a", "U8", "[4]", "4", "8") "}", 8, "duplicate tensor name 'a'"},
        {"{\"__metadata__\":[]}", 0, "__metadata__ is not a JSON object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t hl = i == 4 ? 4 : strlen(cases[i].h); /* case 4 has NULs in its padding */
        uint8_t *buf = calloc(1, 8 + hl + cases[i].dlen);
        for (int k = 0; k < 8; k++) buf[k] = (uint8_t)((uint64_t)hl >> (8 * k));
        memcpy(buf + 8, cases[i].h, hl);
        write_bytes(path, buf, 8 + hl + cases[i].dlen);
        free(buf);
        st_file f;
        loqt_clear_error();
        int rc = st_open(&f, path);
        if (!cases[i].want) {
            CHECK(rc == 0 && layout_ok(&f), "case %zu rejected: %s", i, loqt_last_error());
        } else {
            CHECK(rc == -1 && strstr(loqt_last_error(), cases[i].want) && strstr(loqt_last_error(), path),
                  "case %zu: rc %d, error '%s', expected '%s'", i, rc, loqt_last_error(), cases[i].want);
        }
        if (rc == 0) st_close(&f);
    }
    /* header lengths that do not fit */
    struct { uint64_t n; size_t extra; const char *want; } lens[] = {
        {UINT64_MAX, 0, "exceeds the 100 MB limit"},
        {100000001, 0, "exceeds the 100 MB limit"},
        {100000000, 0, "but only 2 bytes follow"},
        {1, 0, "json:"},
    };
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        make_file(path, lens[i].n, "{}", lens[i].extra);
        st_file f;
        CHECK(st_open(&f, path) == -1 && strstr(loqt_last_error(), lens[i].want), "length case %zu: %s", i,
              loqt_last_error());
    }
    write_bytes(path, "\x02\0\0", 3);
    st_file f;
    CHECK(st_open(&f, path) == -1 && strstr(loqt_last_error(), "too short"), "3-byte file: %s", loqt_last_error());
    unlink(path);
}

/* A small valid file used by the truncation and byte-flip tests. */
static uint8_t *small_file(size_t *len, size_t *hend) {
    const char *path = tmp_path("small.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[2] = {0x3c00, 0xc000};
    int64_t c[1] = {7}, sa[2] = {2, 3}, sb = 2, sc = 1;
    st_writer *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 2, sa, a);
    st_writer_add(w, "b", ST_F16, 1, &sb, b);
    st_writer_add(w, "c", ST_I64, 1, &sc, c);
    st_writer_meta(w, "format", "pt");
    if (st_writer_write(w, path) != 0) {
        printf("cannot write the small file: %s\n", loqt_last_error());
        exit(1);
    }
    st_writer_free(w);
    uint8_t *buf = read_bytes(path, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    *hend = 8 + (size_t)n;
    unlink(path);
    return buf;
}

static void test_every_truncation(void) {
    size_t len, hend;
    uint8_t *buf = small_file(&len, &hend);
    const char *path = tmp_path("trunc.safetensors");
    int accepted = 0, no_msg = 0;
    for (size_t l = 0; l < len; l++) {
        write_bytes(path, buf, l);
        st_file f;
        loqt_clear_error();
        if (st_open(&f, path) == 0) {
            accepted++;
            st_close(&f);
        } else if (!strstr(loqt_last_error(), path)) {
            no_msg++;
        }
    }
    CHECK(accepted == 0, "%d of %zu truncations accepted", accepted, len);
    CHECK(no_msg == 0, "%d truncations rejected without an error naming the file", no_msg);
    unlink(path);
    free(buf);
}

static void test_header_byte_flips(void) {
    size_t len, hend;
    uint8_t *buf = small_file(&len, &hend);
    const char *path = tmp_path("flip.safetensors");
    const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    int accepted = 0, bad_layout = 0, no_msg = 0, total = 0;
    for (size_t i = 0; i < hend; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            buf[i] ^= masks[m];
            write_bytes(path, buf, len);
            buf[i] ^= masks[m];
            st_file f;
            loqt_clear_error();
            total++;
            if (st_open(&f, path) == 0) {
                /* some flips stay valid (a letter in a name, a padding space to a tab) */
                accepted++;
                if (!layout_ok(&f)) bad_layout++;
                st_close(&f);
            } else if (!strstr(loqt_last_error(), path) || strchr(loqt_last_error(), '\n')) {
                no_msg++;
            }
        }
    }
    CHECK(bad_layout == 0, "%d accepted flips have an invalid layout", bad_layout);
    CHECK(no_msg == 0, "%d flips rejected without a one-line error naming the file", no_msg);
    CHECK(accepted < total / 4, "%d of %d flips accepted: the checks look too weak", accepted, total);
    printf("    %d header byte flips: %d still valid, %d rejected\n", total, accepted, total - accepted);
    unlink(path);
    free(buf);
}

/* io/fileutil: the helpers the writer is built on. */
static void test_fileutil(void) {
    char path[600], tmp[sizeof path + 8];
    snprintf(path, sizeof path, "%s", tmp_path("util.bin"));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(file_write_atomic(path, "hello", 5) == 0, "write: %s", loqt_last_error());
    size_t len = 0;
    char *buf = file_read_all(path, 100, &len);
    CHECK(buf && len == 5 && !strcmp(buf, "hello"), "read back (NUL-terminated, exact)");
    mem_free(buf);
    CHECK(file_read_all(path, 4, &len) == NULL && strstr(loqt_last_error(), "more than the limit"), "cap: %s",
          loqt_last_error());
    CHECK(file_read_all(tmp_path("missing"), 100, &len) == NULL && strstr(loqt_last_error(), "cannot open"), "missing");
    CHECK(file_read_all(dir, 100, &len) == NULL && strstr(loqt_last_error(), "not a regular file"), "directory");

    /* an aborted streaming write leaves the old contents and no temporary file */
    atomic_file a;
    CHECK(atomic_file_open(&a, path) == 0 && atomic_file_write(&a, "partial", 7) == 0, "open/write");
    CHECK(access(tmp, F_OK) == 0, "temporary file exists while writing");
    atomic_file_abort(&a);
    CHECK(access(tmp, F_OK) != 0, "temporary file left after abort");
    buf = file_read_all(path, 100, &len);
    CHECK(buf && len == 5 && !memcmp(buf, "hello", 5), "old contents kept after abort");
    mem_free(buf);
    CHECK(atomic_file_open(&a, path) == 0 && atomic_file_write(&a, "new", 3) == 0 && atomic_file_commit(&a) == 0,
          "commit: %s", loqt_last_error());
    buf = file_read_all(path, 100, &len);
    CHECK(buf && len == 3 && !memcmp(buf, "new", 3) && access(tmp, F_OK) != 0, "committed contents");
    mem_free(buf);

    /* mkdir -p: nested, repeated, trailing and doubled slashes; refused over a file */
    char d[600];
    snprintf(d, sizeof d, "%s/m1//m2/m3/", dir);
    CHECK(file_mkdir_p(d) == 0 && file_mkdir_p(d) == 0, "mkdir_p: %s", loqt_last_error());
    struct stat sb;
    snprintf(d, sizeof d, "%s/m1/m2/m3", dir);
    CHECK(stat(d, &sb) == 0 && S_ISDIR(sb.st_mode), "nested directory missing");
    CHECK(file_fsync_dir(d) == 0 && file_fsync_parent(path) == 0, "fsync dir: %s", loqt_last_error());
    snprintf(d, sizeof d, "%s/util.bin/sub", dir);
    CHECK(file_mkdir_p(d) == -1 && strstr(loqt_last_error(), "util.bin"), "mkdir_p through a file: %s", loqt_last_error());
    snprintf(d, sizeof d, "%s/m1/m2/m3", dir);
    rmdir(d);
    snprintf(d, sizeof d, "%s/m1/m2", dir);
    rmdir(d);
    snprintf(d, sizeof d, "%s/m1", dir);
    rmdir(d);
    unlink(path);
}

int main(void) {
    if (test_make_tmpdir(dir, sizeof dir, "st")) return 1;
    RUN(test_roundtrip_all_dtypes);
    RUN(test_zero_tensors);
    RUN(test_checksum);
    RUN(test_utf8_names);
    RUN(test_writer_errors);
    RUN(test_half_conversions_exhaustive);
    RUN(test_reference_file);
    RUN(test_read_errors);
    RUN(test_crafted_headers);
    RUN(test_every_truncation);
    RUN(test_header_byte_flips);
    RUN(test_fileutil);
    rmdir(dir);
    TEST_END();
}
