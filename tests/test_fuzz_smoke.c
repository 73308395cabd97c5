/* A deterministic in-process mutation fuzzer for the parsers, small enough for `make test`.
 *
 * For each target it starts from valid seed inputs and applies random mutations (bit flips,
 * interesting bytes, truncations, insertions, range duplication/deletion/copies, dictionary
 * tokens) drawn from the counter-based RNG, so every run tries exactly the same inputs.  A target
 * passes when no input crashes it (run this binary under ASan/UBSan to catch memory errors:
 * `make BUILD=build-asan SANITIZE=1 build-asan/tests/test_fuzz_smoke`), every rejection leaves a
 * one-line error message, and both outcomes occur (a sanity check on the mutator).
 * Inputs that parse are added to the corpus, so later mutations go deeper.
 *
 * Adding a parser = one entry in `targets` below: a seed generator (fills up to `max` buffers
 * with valid inputs, returns how many) and a parse-and-free function (returns 0 if the input was
 * accepted, -1 if rejected, and frees whatever it built).  File-based parsers write the input
 * with fz_temp_file() first.  The long-running coverage-guided version is fuzz/ (libFuzzer). */
#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"
#include "data/shard.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "test.h"

#include <stdint.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#define FZ_MAX_LEN 8192
#define FZ_CORPUS 64

typedef struct {
    uint8_t *data;
    size_t len;
} fz_buf;

typedef struct {
    const char *name;
    int (*seeds)(fz_buf *out, int max);
    int (*parse)(const uint8_t *data, size_t len);
    int iterations;
} fz_target;

static char fz_dir[256];
static char fz_names[16][64]; /* temporary files made, removed at exit */
static int fz_n_names;

/* Writes data to the temporary file `name` and returns its path (reused between calls). */
static const char *fz_temp_file(const char *name, const uint8_t *data, size_t len) {
    static char path[400];
    snprintf(path, sizeof path, "%s/%s", fz_dir, name);
    int known = 0;
    for (int i = 0; i < fz_n_names; i++) known |= !strcmp(fz_names[i], name);
    if (!known && fz_n_names < 16) snprintf(fz_names[fz_n_names++], sizeof fz_names[0], "%s", name);
    /* rewrite in place and cut to length: much cheaper than O_TRUNC on a journaling filesystem */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || (len && pwrite(fd, data, len, 0) != (ssize_t)len) || ftruncate(fd, (off_t)len) != 0) {
        printf("cannot write %s\n", path);
        exit(1);
    }
    close(fd);
    return path;
}

static int fz_add(fz_buf *out, int n, int max, const void *data, size_t len) {
    if (n >= max) return n;
    out[n].data = malloc(len ? len : 1);
    memcpy(out[n].data, data, len);
    out[n].len = len;
    return n + 1;
}

/* ---- JSON ---- */

static int json_seeds(fz_buf *out, int max) {
    const char *s[] = {
        ("{\"hidden_size\": 768, \"intermediate_size\": 2048, \"num_hidden_layers\": 12, \"rms_norm_eps\": 1e-06, "
         "\"rope_theta\": 10000.0, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"x\": null}"),
        "[1, -2.5, 3e10, 0.001, -0, 1E-7, [], {}, [[[[1]]]], \"\"]",
        "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\ud83d\\ude00 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "{\"a\": {\"b\": {\"c\": [true, false, null]}}, \"a\": 2}",
        "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}",
    };
    int n = 0;
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) n = fz_add(out, n, max, s[i], strlen(s[i]));
    return n;
}

static int json_parse_free(const uint8_t *data, size_t len) {
    json_value *v = json_parse((const char *)data, len);
    if (!v) return -1;
    /* touch the tree through the public getters */
    if (v->type == JSON_OBJECT)
        for (size_t i = 0; i < v->len; i++) {
            double d;
            long long ll;
            const char *s;
            (void)json_get(v, v->keys[i]);
            (void)json_get_number(v, v->keys[i], &d);
            (void)json_get_int(v, v->keys[i], &ll);
            (void)json_get_string(v, v->keys[i], &s);
        }
    json_free(v);
    return 0;
}

/* ---- safetensors ---- */

static int st_seeds(fz_buf *out, int max) {
    int n = 0;
    float a[6] = {1, -2, 3.5f, 0, 1e-40f, 6};
    uint16_t h[4] = {0x3c00, 0x8001, 0x7c00, 0x7e00};
    int64_t i64[2] = {-1, 1};
    int64_t s23[2] = {2, 3}, s4 = 4, s2 = 2, s0[2] = {0, 5};
    for (int variant = 0; variant < 4; variant++) {
        st_writer *w = st_writer_new();
        if (variant == 0) {
            st_writer_add(w, "model.layers.0.self_attn.q_proj.weight", ST_F32, 2, s23, a);
            st_writer_add(w, "h", ST_F16, 1, &s4, h);
            st_writer_add(w, "b", ST_BF16, 1, &s4, h);
            st_writer_add(w, "i", ST_I64, 1, &s2, i64);
            st_writer_meta(w, "format", "pt");
        } else if (variant == 1) {
            st_writer_add(w, "\xc3\xbc\xf0\x9f\x98\x80", ST_U8, 1, &s4, h);
            st_writer_add(w, "empty", ST_F32, 2, s0, NULL);
            st_writer_add(w, "scalar", ST_F32, 0, NULL, a);
        } else if (variant == 2) {
            st_writer_meta(w, "only", "meta");
        }
        const char *path = fz_temp_file("seed.safetensors", NULL, 0);
        if (st_writer_write(w, path) == 0) {
            FILE *f = fopen(path, "rb");
            uint8_t buf[FZ_MAX_LEN];
            size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
            if (f) fclose(f);
            n = fz_add(out, n, max, buf, len);
        }
        st_writer_free(w);
    }
    return n;
}

static int st_parse_free(const uint8_t *data, size_t len) {
    const char *path = fz_temp_file("fuzz.safetensors", data, len);
    st_file f;
    if (st_open(&f, path) != 0) return -1;
    /* read every float tensor: the data pointers and sizes must be usable as promised */
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) continue;
        float *dst = malloc(t->nbytes / st_dtype_size(t->dtype) * sizeof(float) + 1);
        if (st_read_f32(&f, t->name, dst, t->ndim, t->shape) != 0) {
            printf("    st_read_f32 failed on an accepted file: %s\n", loqt_last_error());
            abort();
        }
        free(dst);
    }
    st_close(&f);
    return 0;
}

/* ---- model.safetensors.index.json ---- */

static int index_seeds(fz_buf *out, int max) {
    const char *s[] = {
        "{\"metadata\": {\"total_size\": 1024}, \"weight_map\": {\"model.embed_tokens.weight\": "
        "\"model-00001-of-00002.safetensors\", \"model.norm.weight\": \"model-00002-of-00002.safetensors\", "
        "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}",
        "{\"weight_map\": {\"a\": \"x.safetensors\"}, \"other\": [1, 2]}",
    };
    int n = 0;
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) n = fz_add(out, n, max, s[i], strlen(s[i]));
    return n;
}

static int index_parse_free(const uint8_t *data, size_t len) {
    st_index ix;
    if (st_index_parse(&ix, (const char *)data, len, "fuzz index") != 0) return -1;
    for (int i = 0; i < ix.n; i++) /* what st_open_dir relies on */
        if (ix.shard[i] < 0 || ix.shard[i] >= ix.n_shards || strchr(ix.shards[ix.shard[i]], '/')) abort();
    st_index_free(&ix);
    return 0;
}

/* ---- model configs (config.json) ---- */

static int config_seeds(fz_buf *out, int max) {
    int n = 0;
    for (int i = 0; i < config_builtin_count() && i < 3; i++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        config_write_json(config_builtin(i), f);
        fclose(f);
        n = fz_add(out, n, max, buf, len);
        free(buf);
    }
    return n;
}

static int config_parse_free(const uint8_t *data, size_t len) {
    llama_config c;
    return config_parse(&c, (const char *)data, len, "fuzz config");
}

/* ---- token shards ---- */

static int shard_seeds(fz_buf *out, int max) {
    int n = 0;
    uint16_t toks[40];
    for (int i = 0; i < 40; i++) toks[i] = (uint16_t)(i * 7 % 100);
    for (int k = 0; k < 3; k++) {
        const char *path = fz_temp_file("seed.bin", NULL, 0);
        if (shard_write(path, toks, (uint64_t)(k * 20), 100) != 0) continue;
        FILE *f = fopen(path, "rb");
        uint8_t buf[FZ_MAX_LEN];
        size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) fclose(f);
        n = fz_add(out, n, max, buf, len);
    }
    return n;
}

static int shard_parse_free(const uint8_t *data, size_t len) {
    const char *path = fz_temp_file("fuzz.bin", data, len);
    shard s;
    if (shard_read(&s, path) != 0) return -1;
    shard_free(&s);
    return 0;
}

static const fz_target targets[] = {
    {"config_parse", config_seeds, config_parse_free, 10000},
    {"shard_read", shard_seeds, shard_parse_free, 5000},
    {"json_parse", json_seeds, json_parse_free, 20000},
    {"st_open", st_seeds, st_parse_free, 20000},
    {"st_index_parse", index_seeds, index_parse_free, 10000},
};

/* ---- mutator ---- */

static const char *dict[] = {
    "\"", "\\", "\\u", "\\ud800", "\\udc00", "{", "}", "[", "]", ",", ":", "-", "0", "-1", "1e999", "1e-999",
    "9007199254740993", "18446744073709551616", "null", "true", "\"dtype\"", "\"shape\"", "\"data_offsets\"",
    "\"__metadata__\"", "\"F32\"", "\"BF16\"", "\"I64\"", "[0,0]", "[]", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80",
};

static const uint8_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '\\', '{', '}', '[', ']', ',', ':', '-', '.',
                                      'e', '0', '9', ' ', '\n', 'u'};

static size_t pick(rng_state *r, size_t n) { return n ? (size_t)(rng_next(r) % n) : 0; }

/* Inserts src[0..n) at pos of buf (len -> len + n, bounded by FZ_MAX_LEN). */
static size_t insert(uint8_t *buf, size_t len, size_t pos, const uint8_t *src, size_t n) {
    if (len + n > FZ_MAX_LEN) n = FZ_MAX_LEN - len;
    memmove(buf + pos + n, buf + pos, len - pos);
    memcpy(buf + pos, src, n);
    return len + n;
}

static size_t mutate(rng_state *r, uint8_t *buf, size_t len) {
    int steps = 1 + (int)pick(r, 4);
    for (int s = 0; s < steps; s++) {
        size_t pos = pick(r, len + 1); /* insertion point or byte index (when < len) */
        uint8_t tmp[64];
        switch (pick(r, 9)) {
        case 0: /* bit flip */
            if (len) buf[pos % len] ^= (uint8_t)(1u << pick(r, 8));
            break;
        case 1: /* interesting byte */
            if (len) buf[pos % len] = interesting[pick(r, sizeof interesting)];
            break;
        case 2: /* truncate */
            len = pick(r, len + 1);
            break;
        case 3: { /* insert random bytes */
            size_t n = 1 + pick(r, 8);
            for (size_t i = 0; i < n; i++) tmp[i] = (uint8_t)rng_next(r);
            len = insert(buf, len, pos, tmp, n);
            break;
        }
        case 4: { /* duplicate a range */
            if (!len) break;
            size_t a = pick(r, len), n = 1 + pick(r, len - a < 64 ? len - a : 64);
            memcpy(tmp, buf + a, n);
            len = insert(buf, len, pos, tmp, n);
            break;
        }
        case 5: { /* delete a range */
            if (pos >= len) break;
            size_t n = 1 + pick(r, len - pos < 32 ? len - pos : 32);
            memmove(buf + pos, buf + pos + n, len - pos - n);
            len -= n;
            break;
        }
        case 6: { /* overwrite with a copy of another range */
            if (!len) break;
            size_t a = pick(r, len), b = pick(r, len), n = 1 + pick(r, 32);
            if (a + n > len) n = len - a;
            if (b + n > len) n = len - b;
            memmove(buf + b, buf + a, n);
            break;
        }
        case 7: { /* dictionary token */
            const char *t = dict[pick(r, sizeof dict / sizeof *dict)];
            len = insert(buf, len, pos, (const uint8_t *)t, strlen(t));
            break;
        }
        case 8: /* random byte */
            if (len) buf[pos % len] = (uint8_t)rng_next(r);
            break;
        }
    }
    return len;
}

static void run_target(const fz_target *t, uint64_t stream) {
    fz_buf corpus[FZ_CORPUS];
    int n = t->seeds(corpus, FZ_CORPUS);
    CHECK(n > 0, "%s: no seeds", t->name);
    for (int i = 0; i < n; i++) {
        loqt_clear_error();
        CHECK(t->parse(corpus[i].data, corpus[i].len) == 0, "%s: seed %d rejected: %s", t->name, i, loqt_last_error());
    }
    rng_state r = {12345, stream, 0};
    static uint8_t buf[FZ_MAX_LEN];
    int accepted = 0, rejected = 0, bad_msg = 0;
    clock_t t0 = clock();
    for (int it = 0; it < t->iterations; it++) {
        const fz_buf *src = &corpus[pick(&r, (size_t)n)];
        memcpy(buf, src->data, src->len);
        size_t len = mutate(&r, buf, src->len);
        loqt_clear_error();
        if (t->parse(buf, len) == 0) {
            accepted++;
            /* keep new valid inputs: mutations of them reach deeper code */
            int slot;
            if (n < FZ_CORPUS) {
                slot = n++;
            } else {
                slot = (int)pick(&r, FZ_CORPUS);
                free(corpus[slot].data);
            }
            corpus[slot].data = malloc(len ? len : 1);
            memcpy(corpus[slot].data, buf, len);
            corpus[slot].len = len;
        } else {
            rejected++;
            const char *e = loqt_last_error();
            if (!e[0] || !strcmp(e, "unknown error") || strchr(e, '\n')) bad_msg++;
        }
    }
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    printf("    %s: %d mutated inputs, %d accepted, %d rejected, %.2f s CPU\n", t->name, t->iterations, accepted,
           rejected, secs);
    CHECK(bad_msg == 0, "%s: %d rejections without a one-line error message", t->name, bad_msg);
    CHECK(accepted > 0 && rejected > 0, "%s: the mutator produced only one outcome", t->name);
    for (int i = 0; i < n; i++) free(corpus[i].data);
}

static void test_fuzz_all(void) {
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) run_target(&targets[i], i + 1);
}

int main(void) {
    if (test_make_tmpdir(fz_dir, sizeof fz_dir, "fuzz")) return 1;
    RUN(test_fuzz_all);
    for (int i = 0; i < fz_n_names; i++) {
        char p[sizeof fz_dir + sizeof fz_names + 2];
        snprintf(p, sizeof p, "%s/%s", fz_dir, fz_names[i]);
        unlink(p);
    }
    rmdir(fz_dir);
    TEST_END();
}
