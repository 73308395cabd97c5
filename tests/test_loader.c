/* The data loader (batches are exact slices of the shard stream, wrap-around, seek/position),
 * the document reader, the deterministic validation split, and the text -> shards pipeline with
 * a fake byte-level encoder.  Token comparisons are exact; the only statistical check (the size
 * of a hash-chosen split) states its tolerance. */
#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "core/rng.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/shard.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void mkpath(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", root, rel);
}

static uint16_t stream_tok(uint64_t i, uint32_t vocab) {
    return (uint16_t)(rng_u64(11, 2, i) % vocab);
}

/* Writes shards of the given sizes holding stream_tok(0..) into root/sub; returns the total. */
static uint64_t make_split(const char *sub, const char *split, const uint64_t *sizes, int n,
                           uint32_t vocab) {
    char d[400], p[500];
    mkpath(d, sizeof d, sub);
    mkdir(d, 0755);
    uint64_t off = 0;
    for (int s = 0; s < n; s++) {
        uint16_t *t = malloc((sizes[s] + 1) * sizeof *t);
        for (uint64_t i = 0; i < sizes[s]; i++) t[i] = stream_tok(off + i, vocab);
        snprintf(p, sizeof p, "%s/%s_%03d.bin", d, split, s);
        if (shard_write(p, t, sizes[s], vocab) != 0)
            printf("    shard_write: %s\n", loqt_last_error());
        free(t);
        off += sizes[s];
    }
    return off;
}

/* Checks one batch against the stream slice starting at pos; returns 1 if equal. */
static int batch_is_slice(const int32_t *in, const int32_t *tg, int B, int T, uint64_t pos,
                          uint64_t N, uint32_t vocab) {
    for (uint64_t i = 0; i < (uint64_t)B * (uint64_t)T; i++)
        if (in[i] != stream_tok((pos + i) % N, vocab) ||
            tg[i] != stream_tok((pos + i + 1) % N, vocab))
            return 0;
    return 1;
}

static void test_batches_are_slices(void) {
    const uint64_t sizes[4] = {1000, 1, 0, 537}; /* uneven, one token, one empty shard */
    uint64_t N = make_split("a", "train", sizes, 4, 32000);
    char d[400];
    mkpath(d, sizeof d, "a");
    data_loader L;
    CHECK(loader_open(&L, d, "train") == 0, "loader_open: %s", loqt_last_error());
    CHECK(loader_tokens(&L) == N && N == 1538, "tokens %llu, want 1538",
          (unsigned long long)loader_tokens(&L));
    CHECK(loader_vocab_size(&L) == 32000 && L.n_shards == 4, "vocab %u, shards %d",
          loader_vocab_size(&L), L.n_shards);
    CHECK(loader_check_batch(&L, 3, 16) == 0, "3x16 fits: %s", loqt_last_error());
    const int B = 3, T = 16;
    int32_t in[48], tg[48];
    uint64_t pos = 0, wraps = 0, first_wrap = 0, bad = 0;
    for (int k = 0; k < 200; k++) {
        if (pos + 49 > N) pos = 0, wraps++, first_wrap = first_wrap ? first_wrap : (uint64_t)k;
        loader_next_batch(&L, B, T, in, tg);
        if (!batch_is_slice(in, tg, B, T, pos, N, 32000)) bad++;
        pos += 48;
        if (loader_position(&L) != pos) bad++;
    }
    CHECK(bad == 0, "%llu batches were not the stream slice at the expected position (exact)",
          (unsigned long long)bad);
    CHECK(wraps == 6, "wrapped %llu times in 200 batches of 32 per epoch, want 6",
          (unsigned long long)wraps);
    CHECK(first_wrap == (N - 1) / 48, "an epoch is floor((N-1)/(B*T)) = %llu batches, got %llu",
          (unsigned long long)((N - 1) / 48), (unsigned long long)first_wrap);
    /* B or T <= 0 is a no-op */
    uint64_t p0 = loader_position(&L);
    loader_next_batch(&L, 0, 16, in, tg);
    CHECK(loader_position(&L) == p0, "B = 0 leaves the position");
    loader_close(&L);
    CHECK(L.tokens == NULL, "loader_close releases the stream");
}

static void test_seek_reproduces(void) {
    char d[400];
    mkpath(d, sizeof d, "a");
    data_loader L, M;
    if (loader_open(&L, d, "train") != 0 || loader_open(&M, d, "train") != 0) {
        CHECK(0, "loader_open: %s", loqt_last_error());
        return;
    }
    const int B = 2, T = 37, n = B * T;
    int32_t in[10][74], tg[10][74], in2[74], tg2[74];
    uint64_t saved = 0;
    for (int k = 0; k < 10; k++) {
        if (k == 4) saved = loader_position(&L);
        loader_next_batch(&L, B, T, in[k], tg[k]);
    }
    int same = 1;
    loader_seek(&L, saved);
    loader_seek(&M, saved + 3 * loader_tokens(&M)); /* a fresh loader; positions are taken mod N */
    CHECK(loader_position(&M) == saved, "seek is modulo the token count");
    for (int k = 4; k < 10; k++) {
        loader_next_batch(&L, B, T, in2, tg2);
        same &= !memcmp(in2, in[k], n * 4) && !memcmp(tg2, tg[k], n * 4);
        loader_next_batch(&M, B, T, in2, tg2);
        same &= !memcmp(in2, in[k], n * 4) && !memcmp(tg2, tg[k], n * 4);
    }
    CHECK(same, "batches after seek(position) equal the original ones (exact)");
    loader_close(&L);
    loader_close(&M);
}

/* loader_skip_batch moves exactly as loader_next_batch does (data-parallel ranks skip the other
 * ranks' micro-batches), across wrap-arounds and in a split smaller than a batch */
static void test_skip_batch(void) {
    const uint64_t sizes[2] = {700, 333}, tiny[1] = {20};
    make_split("skip", "train", sizes, 2, 50);
    make_split("skip", "val", tiny, 1, 50);
    char d[400];
    mkpath(d, sizeof d, "skip");
    const char *splits[2] = {"train", "val"};
    for (int k = 0; k < 2; k++) {
        data_loader L, M;
        if (loader_open(&L, d, splits[k]) || loader_open(&M, d, splits[k])) {
            CHECK(0, "loader_open: %s", loqt_last_error());
            return;
        }
        int32_t in[2 * 16], tg[2 * 16];
        int same = 1;
        for (int i = 0; i < 200; i++) {
            loader_next_batch(&L, 2, 16, in, tg);
            loader_skip_batch(&M, 2, 16);
            same &= loader_position(&L) == loader_position(&M);
        }
        CHECK(same, "%s: skipping moves as reading does", splits[k]);
        loader_close(&L);
        loader_close(&M);
    }
}

static void test_small_split(void) {
    const uint64_t sizes[1] = {20};
    make_split("small", "val", sizes, 1, 100);
    char d[400];
    mkpath(d, sizeof d, "small");
    data_loader L;
    CHECK(loader_open(&L, d, "val") == 0, "loader_open: %s", loqt_last_error());
    CHECK(loader_check_batch(&L, 2, 16) == -1, "33 tokens needed, 20 present: refused");
    CHECK(strstr(loqt_last_error(), "only 20") != NULL, "error says how many: %s",
          loqt_last_error());
    CHECK(loader_check_batch(&L, 1, 19) == 0, "1x19 needs exactly 20 tokens: fits");
    int32_t in[32], tg[32];
    int ok = 1;
    uint64_t pos = 0;
    for (int k = 0; k < 3; k++) { /* documented fallback: read circularly */
        loader_next_batch(&L, 2, 16, in, tg);
        ok &= batch_is_slice(in, tg, 2, 16, pos, 20, 100);
        pos = (pos + 32) % 20;
        ok &= loader_position(&L) == pos;
    }
    CHECK(ok, "a split smaller than one batch is read circularly (exact)");
    loader_close(&L);

    /* 41 tokens, 1 x 20: batches at 0 and 20 (the second ends exactly at the last token), then 0 */
    const uint64_t exact[1] = {41};
    make_split("exact", "train", exact, 1, 100);
    mkpath(d, sizeof d, "exact");
    CHECK(loader_open(&L, d, "train") == 0, "loader_open: %s", loqt_last_error());
    ok = 1;
    const uint64_t at[4] = {0, 20, 0, 20};
    for (int k = 0; k < 4; k++) {
        loader_next_batch(&L, 1, 20, in, tg);
        ok &= batch_is_slice(in, tg, 1, 20, at[k], 41, 100);
    }
    CHECK(ok, "a batch that ends on the last token is used before wrapping (exact)");
    loader_close(&L);

    const uint64_t one[1] = {1};
    make_split("one", "train", one, 1, 100);
    mkpath(d, sizeof d, "one");
    CHECK(loader_open(&L, d, "train") == -1 && strstr(loqt_last_error(), "at least 2"),
          "a 1-token split is refused at open: %s", loqt_last_error());
}

static void expect_open_error(const char *sub, const char *split, const char *want) {
    char d[400];
    mkpath(d, sizeof d, sub);
    data_loader L;
    size_t before = mem_current(MEM_DATA);
    int rc = loader_open(&L, d, split);
    CHECK(rc == -1, "%s/%s: loader_open should fail", sub, split);
    CHECK(strstr(loqt_last_error(), want) != NULL, "%s: error '%s' should mention '%s'", sub,
          loqt_last_error(), want);
    CHECK(mem_current(MEM_DATA) == before && L.tokens == NULL, "%s: nothing left allocated", sub);
}

static void test_open_errors(void) {
    char d[400], p[500];
    mkpath(d, sizeof d, "empty");
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/train_abc.bin", d); /* names that are not shards are ignored */
    fclose(fopen(p, "wb"));
    snprintf(p, sizeof p, "%s/trainx_000.bin", d);
    fclose(fopen(p, "wb"));
    expect_open_error("empty", "train", "no train shards");
    expect_open_error("does_not_exist", "train", "cannot open");

    const uint64_t sizes[3] = {10, 10, 10};
    make_split("gap", "train", sizes, 3, 50);
    mkpath(d, sizeof d, "gap/train_001.bin");
    unlink(d);
    expect_open_error("gap", "train", "shard 1 is missing");

    make_split("dup", "train", sizes, 2, 50);
    mkpath(d, sizeof d, "dup/train_000.bin");
    mkpath(p, sizeof p, "dup/train_1.bin");
    CHECK(link(d, p) == 0, "link");
    expect_open_error("dup", "train", "two files");

    make_split("vocab", "train", sizes, 1, 50);
    uint16_t t[10] = {0};
    mkpath(d, sizeof d, "vocab/train_001.bin");
    shard_write(d, t, 10, 60);
    expect_open_error("vocab", "train", "vocab size 60 differs");

    make_split("corrupt", "train", sizes, 2, 50);
    mkpath(d, sizeof d, "corrupt/train_001.bin");
    CHECK(truncate(d, 70) == 0, "truncate");
    expect_open_error("corrupt", "train", "train_001.bin");
    expect_open_error("corrupt", "../x", "bad split");
}

static void test_reader(void) {
    char p[400];
    mkpath(p, sizeof p, "docs.txt");
    const char *text =
        "\f\n  doc one  \n\f\ndoc two\nline 2 \f inside\n\f\n\n \t\n\f\n\f\nlast, no separator\n";
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
    corpus_reader r;
    CHECK(corpus_reader_open(&r, p) == 0, "open: %s", loqt_last_error());
    const char *want[3] = {"doc one", "doc two\nline 2 \f inside", "last, no separator"};
    const char *doc;
    size_t len;
    int n = 0;
    while (corpus_reader_next(&r, &doc, &len)) {
        CHECK(n < 3 && len == strlen(want[n]) && !memcmp(doc, want[n], len),
              "document %d is '%.*s'", n, (int)len, doc);
        n++;
    }
    CHECK(n == 3, "%d documents, want 3 (blank ones skipped)", n);
    corpus_reader_close(&r);
    CHECK(corpus_reader_open(&r, "no/such/file.txt") == -1, "a missing text file is an error");
}

static void test_split_determinism(void) {
    enum { N = 5000 };
    static uint64_t h[N], nt[N], hr[N], ntr[N];
    static unsigned char v[N], v2[N], vr[N];
    char buf[64];
    for (int i = 0; i < N; i++) {
        int k = snprintf(buf, sizeof buf, "document number %d", i);
        h[i] = corpus_hash(buf, (size_t)k);
        nt[i] = 10 + (uint64_t)(i % 50);
        hr[N - 1 - i] = h[i], ntr[N - 1 - i] = nt[i]; /* the same documents in reverse order */
    }
    long a = corpus_split(h, nt, N, 0.1, 0, v);
    long b = corpus_split(h, nt, N, 0.1, 0, v2);
    long c = corpus_split(hr, ntr, N, 0.1, 0, vr);
    int same = a == b && a == c && !memcmp(v, v2, N);
    for (int i = 0; i < N; i++) same &= v[i] == vr[N - 1 - i];
    CHECK(same, "fraction split: same documents on every run and in any order");
    /* binomial(5000, 0.1): mean 500, sd 21.2; +-100 is 4.7 sd */
    CHECK(a >= 400 && a <= 600, "%ld val documents for fraction 0.1 of 5000 (tolerance 500 +- 100)",
          a);

    a = corpus_split(h, nt, N, 0, 20000, v);
    c = corpus_split(hr, ntr, N, 0, 20000, vr);
    same = a == c && a > 0;
    uint64_t got = 0, hmax = 0, last = 0;
    for (int i = 0; i < N; i++) {
        same &= v[i] == vr[N - 1 - i];
        if (v[i]) {
            got += nt[i];
            if (h[i] >= hmax) hmax = h[i], last = nt[i];
        }
    }
    CHECK(same, "token-count split: same documents in any order");
    CHECK(got >= 20000 && got - last < 20000,
          "val holds %llu tokens: the fewest documents reaching 20000", (unsigned long long)got);
    int smaller = 1;
    for (int i = 0; i < N; i++) smaller &= v[i] || h[i] > hmax;
    CHECK(smaller, "val documents are exactly those with the smallest hashes");

    CHECK(corpus_split(h, nt, N, 1e-12, 0, v) == 1, "a tiny fraction still gives one document");
    CHECK(corpus_split(h, nt, N, 0, 0, v) == 0, "fraction 0: no validation split");
    CHECK(corpus_split(h, nt, 1, 0.5, 0, v) == -1, "one document cannot be split");
    CHECK(corpus_split(h, nt, N, 0, 1u << 30, v) == -1 && strstr(loqt_last_error(), "all"),
          "everything in val is refused: %s", loqt_last_error());
    CHECK(corpus_split(h, nt, N, 1.0, 0, v) == -1, "fraction 1 is refused");
}

/* ---- the pipeline with a fake encoder: BOS, then byte b -> id 3 + b (vocab 259) ---- */

static long fake_encode(void *ctx, const char *text, size_t len, int32_t **out) {
    (void)ctx;
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    if (!ids) return loqt_set_error("out of memory");
    ids[0] = 1;
    for (size_t i = 0; i < len; i++) ids[i + 1] = 3 + (unsigned char)text[i];
    *out = ids;
    return (long)len + 1;
}

static uint64_t write_source(const char *rel, const char *tag, int ndocs) {
    char p[400];
    mkpath(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    uint64_t tokens = 0;
    for (int i = 0; i < ndocs; i++) {
        char doc[400];
        int k = snprintf(
            doc, sizeof doc, "%s document %d says %.*s.", tag, i, 5 + (i * 37) % 200,
            "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
            "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis "
            "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat");
        fprintf(f, "%s\n\f\n", doc);
        tokens += (uint64_t)k + 1;
    }
    fclose(f);
    return tokens;
}

static int build(const char *sub, int reverse, uint64_t shard_tokens, corpus_result *res) {
    char out[400], a[400], b[400];
    mkpath(out, sizeof out, sub);
    mkpath(a, sizeof a, "text/alpha.txt");
    mkpath(b, sizeof b, "text/beta.txt");
    corpus_source src[2] = {{"alpha", a}, {"beta", b}};
    if (reverse) src[0] = (corpus_source){"beta", b}, src[1] = (corpus_source){"alpha", a};
    corpus_options opt = {.val_fraction = 0.2,
                          .shard_tokens = shard_tokens,
                          .vocab_size = 259,
                          .encode = fake_encode,
                          .tokenizer_path = "fake",
                          .verbose = 0};
    int rc = corpus_build(out, src, 2, &opt, res);
    if (rc) printf("    corpus_build: %s\n", loqt_last_error());
    return rc;
}

static int load(const char *sub, const char *split, data_loader *L) {
    char d[400];
    mkpath(d, sizeof d, sub);
    int rc = loader_open(L, d, split);
    if (rc) printf("    loader_open %s: %s\n", sub, loqt_last_error());
    return rc;
}

static void test_pipeline(void) {
    char p[400];
    mkpath(p, sizeof p, "text");
    mkdir(p, 0755);
    uint64_t total =
        write_source("text/alpha.txt", "alpha", 60) + write_source("text/beta.txt", "beta", 40);
    corpus_result r1, r2;
    if (build("out1", 0, 700, &r1) || build("out2", 1, 1 << 20, &r2)) {
        CHECK(0, "corpus_build failed");
        return;
    }
    CHECK(r1.tokens[0] + r1.tokens[1] == total,
          "%llu + %llu tokens, want %llu (one BOS per document)", (unsigned long long)r1.tokens[0],
          (unsigned long long)r1.tokens[1], (unsigned long long)total);
    CHECK(r1.docs[0] + r1.docs[1] == 100 && r1.docs[1] > 0, "documents %llu train + %llu val",
          (unsigned long long)r1.docs[0], (unsigned long long)r1.docs[1]);
    CHECK(r1.shards[0] == (int)((r1.tokens[0] + 699) / 700) && r2.shards[0] == 1,
          "shard counts %d, %d", r1.shards[0], r2.shards[0]);
    CHECK(r1.checksum == r2.checksum, "checksum does not depend on source order or shard size");

    /* Same split and the same streams whatever the source order and shard size. */
    for (int s = 0; s < 2; s++) {
        const char *split = s ? "val" : "train";
        data_loader A, B;
        if (load("out1", split, &A) || load("out2", split, &B)) {
            CHECK(0, "cannot load %s", split);
            continue;
        }
        CHECK(A.n_tokens == r1.tokens[s] && B.n_tokens == A.n_tokens &&
                  !memcmp(A.tokens, B.tokens, 2 * A.n_tokens),
              "%s streams are identical (exact)", split);
        uint64_t bos = 0;
        for (uint64_t i = 0; i < A.n_tokens; i++) bos += A.tokens[i] == 1;
        CHECK(bos == r1.docs[s] && A.tokens[0] == 1, "%s: %llu BOS tokens for %llu documents",
              split, (unsigned long long)bos, (unsigned long long)r1.docs[s]);
        loader_close(&A);
        loader_close(&B);
    }

    /* manifest */
    mkpath(p, sizeof p, "out1/manifest.json");
    FILE *f = fopen(p, "rb");
    char text[1 << 14];
    size_t n = f ? fread(text, 1, sizeof text, f) : 0;
    if (f) fclose(f);
    json_value *m = json_parse(text, n);
    CHECK(m != NULL, "manifest parses: %s", loqt_last_error());
    if (m) {
        long long tok = -1, docs = -1, vocab = -1;
        const json_value *train = json_get(m, "train"), *srcs = json_get(m, "sources");
        json_get_int(train, "tokens", &tok);
        json_get_int(m, "vocab_size", &vocab);
        CHECK(tok == (long long)r1.tokens[0] && vocab == 259,
              "manifest train tokens %lld, vocab %lld", tok, vocab);
        CHECK(srcs && srcs->type == JSON_ARRAY && srcs->len == 2, "two sources in the manifest");
        if (srcs && srcs->len == 2) json_get_int(&srcs->items[0], "documents", &docs);
        CHECK(docs == 60, "alpha has %lld documents in the manifest", docs);
        const char *file = "";
        if (srcs && srcs->len == 2) json_get_string(&srcs->items[0], "file", &file);
        CHECK(strcmp(file, "../text/alpha.txt") != 0 && strstr(file, "alpha.txt"),
              "source file '%s'", file);
        json_free(m);
    }

    /* Rebuilding in place: old shards (even ones this build would not make) are removed and the
     * result is byte-identical. */
    mkpath(p, sizeof p, "out1/train_042.bin");
    fclose(fopen(p, "wb"));
    char m1[1 << 14], m2[1 << 14];
    mkpath(p, sizeof p, "out1/manifest.json");
    f = fopen(p, "rb");
    size_t n1 = fread(m1, 1, sizeof m1, f);
    fclose(f);
    corpus_result r3;
    CHECK(build("out1", 0, 700, &r3) == 0, "rebuild");
    f = fopen(p, "rb");
    size_t n2 = fread(m2, 1, sizeof m2, f);
    fclose(f);
    CHECK(n1 == n2 && !memcmp(m1, m2, n1), "the manifest of a rebuild is byte-identical");
    mkpath(p, sizeof p, "out1/train_042.bin");
    CHECK(access(p, F_OK) != 0, "a stale shard from an earlier run is removed");
    data_loader A;
    CHECK(load("out1", "train", &A) == 0, "the rebuilt directory loads");
    loader_close(&A);
}

/* encoder failures (reported from a worker thread), bad ids, missing and empty sources */
static long picky_encode(void *ctx, const char *text, size_t len, int32_t **out) {
    if (memmem(text, len, "poison", 6)) return loqt_set_error("poisoned text");
    long n = fake_encode(ctx, text, len, out);
    if (n > 1 && memmem(text, len, "huge", 4)) (*out)[1] = 5000;
    return n;
}

static int build_one(const char *text, const char *name, corpus_result *res) {
    char p[400], out[400];
    mkpath(p, sizeof p, "text/bad.txt");
    FILE *f = fopen(p, "wb");
    if (text) fputs(text, f);
    fclose(f);
    if (!text) unlink(p);
    mkpath(out, sizeof out, "out_bad");
    corpus_source src = {name, p};
    corpus_options opt = {.val_fraction = 0.5, .shard_tokens = 100, .vocab_size = 259,
                          .encode = picky_encode};
    return corpus_build(out, &src, 1, &opt, res);
}

static void test_build_errors(void) {
    corpus_result r;
    CHECK(build_one("a\n\f\nb\n\f\nc\n\f\nthe poison\n\f\n", "bad", &r) == -1 &&
              strstr(loqt_last_error(), "bad document 4") &&
              strstr(loqt_last_error(), "poisoned text"),
          "encoder failure names the document and the cause: %s", loqt_last_error());
    CHECK(build_one("a\n\f\nsomething huge\n\f\n", "bad", &r) == -1 &&
              strstr(loqt_last_error(), "id 5000"),
          "an id outside the vocabulary is refused: %s", loqt_last_error());
    CHECK(build_one(" \n\f\n\n", "bad", &r) == -1 && strstr(loqt_last_error(), "no documents"),
          "a source without documents is an error: %s", loqt_last_error());
    CHECK(build_one(NULL, "bad", &r) == -1 && strstr(loqt_last_error(), "bad.txt"),
          "a missing text file is named: %s", loqt_last_error());
    CHECK(build_one("only one\n", "bad", &r) == -1 && strstr(loqt_last_error(), "leaving none"),
          "one document cannot make both splits: %s", loqt_last_error());
    CHECK(build_one("one\n\f\ntwo\n\f\nthree\n", "ok", &r) == 0 && r.docs[0] + r.docs[1] == 3,
          "a good source after failures builds: %s", loqt_last_error());
}

int main(void) {
    if (test_make_tmpdir(root, sizeof root, "loader")) return 1;
    RUN(test_batches_are_slices);
    RUN(test_seek_reproduces);
    RUN(test_small_split);
    RUN(test_skip_batch);
    RUN(test_open_errors);
    RUN(test_reader);
    RUN(test_split_determinism);
    RUN(test_pipeline);
    RUN(test_build_errors);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", root);
    TEST_END();
}
