/* Token shard files: round trip, exact on-disk layout, and corrupt files that must fail with a
 * clear message (no crash, nothing allocated).  All comparisons are exact (integers). */
#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "data/shard.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void path_of(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void fill_tokens(uint16_t *t, size_t n, uint32_t vocab, uint64_t seed) {
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)(rng_u64(seed, 1, i) % vocab);
}

static void test_round_trip(void) {
    const size_t n = 100003; /* odd, and more than one 64 KiB write block */
    uint16_t *t = malloc(n * sizeof *t);
    fill_tokens(t, n, 32000, 7);
    t[0] = 0;
    t[1] = 31999; /* both ends of the id range */
    char p[300];
    path_of(p, sizeof p, "rt.bin");
    CHECK(shard_write(p, t, n, 32000) == 0, "shard_write: %s", loqt_last_error());
    shard s;
    CHECK(shard_read(&s, p) == 0, "shard_read: %s", loqt_last_error());
    CHECK(s.n_tokens == n, "n_tokens %llu, want %zu", (unsigned long long)s.n_tokens, n);
    CHECK(s.vocab_size == 32000, "vocab %u", s.vocab_size);
    CHECK(s.tokens && memcmp(s.tokens, t, n * 2) == 0,
          "tokens differ after the round trip (exact)");
    CHECK(mem_category(s.tokens) == MEM_DATA, "shard tokens are accounted as data");
    shard_free(&s);
    CHECK(s.tokens == NULL && s.n_tokens == 0, "shard_free clears the struct");
    free(t);

    /* an empty shard is valid */
    path_of(p, sizeof p, "empty.bin");
    CHECK(shard_write(p, NULL, 0, 259) == 0, "empty shard_write: %s", loqt_last_error());
    CHECK(shard_read(&s, p) == 0 && s.n_tokens == 0 && s.vocab_size == 259, "empty shard_read: %s",
          loqt_last_error());
    shard_free(&s);
}

/* The bytes on disk follow shard.h exactly: magic, u32 version, u32 vocab, u64 count, zeros,
 * then little-endian uint16 ids. */
static void test_layout(void) {
    const uint16_t t[3] = {0x0102, 7, 0xfffe};
    char p[300];
    path_of(p, sizeof p, "layout.bin");
    CHECK(shard_write(p, t, 3, 65536) == 0, "shard_write: %s", loqt_last_error());
    size_t n = 0;
    unsigned char *b = slurp(p, &n);
    CHECK(b && n == SHARD_HEADER_BYTES + 6, "file size %zu, want 70", n);
    if (!b || n != 70) return;
    CHECK(memcmp(b, "LOQTSHRD", 8) == 0, "magic");
    CHECK(b[8] == 1 && b[9] == 0 && b[10] == 0 && b[11] == 0, "version 1 little-endian");
    CHECK(b[12] == 0 && b[13] == 0 && b[14] == 1 && b[15] == 0, "vocab 65536 little-endian");
    CHECK(b[16] == 3 && b[17] == 0 && b[23] == 0, "count 3 little-endian");
    int zero = 1;
    for (int i = 24; i < 64; i++) zero &= b[i] == 0;
    CHECK(zero, "bytes 24..63 are zero");
    CHECK(b[64] == 0x02 && b[65] == 0x01 && b[66] == 7 && b[68] == 0xfe && b[69] == 0xff,
          "ids are little-endian uint16");
    free(b);
}

/* shard_read of a bad file: -1, an error containing `want`, and nothing left allocated. */
static void expect_bad(const char *name, const char *want) {
    char p[300];
    path_of(p, sizeof p, name);
    size_t before = mem_current(MEM_DATA);
    shard s;
    memset(&s, 0x5a, sizeof s);
    loqt_clear_error();
    int rc = shard_read(&s, p);
    CHECK(rc == -1, "%s: shard_read returned %d, want -1", name, rc);
    CHECK(strstr(loqt_last_error(), want) != NULL, "%s: error '%s' should mention '%s'", name,
          loqt_last_error(), want);
    CHECK(strstr(loqt_last_error(), name) != NULL, "%s: error '%s' should name the file", name,
          loqt_last_error());
    CHECK(s.tokens == NULL && s.n_tokens == 0, "%s: struct cleared on failure", name);
    CHECK(mem_current(MEM_DATA) == before, "%s: no data memory left allocated", name);
}

static void test_corrupt(void) {
    const size_t n = 1000;
    uint16_t t[1000];
    fill_tokens(t, n, 500, 3);
    char good[300];
    path_of(good, sizeof good, "good.bin");
    CHECK(shard_write(good, t, n, 500) == 0, "shard_write: %s", loqt_last_error());
    size_t len = 0;
    unsigned char *b = slurp(good, &len);
    if (!b) return;
    char p[300];

    path_of(p, sizeof p, "trunc_header.bin");
    write_bytes(p, b, 40);
    expect_bad("trunc_header.bin", "truncated");

    path_of(p, sizeof p, "trunc_tokens.bin");
    write_bytes(p, b, len - 3); /* cut in the middle of a token */
    expect_bad("trunc_tokens.bin", "truncated");

    path_of(p, sizeof p, "extra.bin");
    unsigned char *x = malloc(len + 2);
    memcpy(x, b, len);
    x[len] = x[len + 1] = 0;
    write_bytes(p, x, len + 2); /* one token more than the header says */
    expect_bad("extra.bin", "bytes");

    memcpy(x, b, len);
    x[0] = 'X';
    path_of(p, sizeof p, "magic.bin");
    write_bytes(p, x, len);
    expect_bad("magic.bin", "magic");

    memcpy(x, b, len);
    x[8] = 2;
    path_of(p, sizeof p, "version.bin");
    write_bytes(p, x, len);
    expect_bad("version.bin", "version");

    memcpy(x, b, len);
    x[12] = x[13] = 0; /* vocab 0 */
    path_of(p, sizeof p, "vocab0.bin");
    write_bytes(p, x, len);
    expect_bad("vocab0.bin", "vocab");

    memcpy(x, b, len);
    for (int i = 16; i < 24; i++) x[i] = 0xff; /* absurd count: must not overflow the size check */
    path_of(p, sizeof p, "count.bin");
    write_bytes(p, x, len);
    expect_bad("count.bin", "corrupt");

    memcpy(x, b, len);
    x[64 + 2 * 777] = 0xf4; /* token 777 := 500 = the vocab size */
    x[64 + 2 * 777 + 1] = 0x01;
    path_of(p, sizeof p, "id.bin");
    write_bytes(p, x, len);
    expect_bad("id.bin", "token 777 has id 500");

    expect_bad("no_such_file.bin", "cannot open");
    free(x);
    free(b);

    /* a directory is not a shard */
    path_of(p, sizeof p, "adir.bin");
    mkdir(p, 0755);
    expect_bad("adir.bin", "regular");
    rmdir(p);
}

static void test_write_checks(void) {
    const uint16_t t[2] = {1, 300};
    char p[300];
    path_of(p, sizeof p, "bad_write.bin");
    CHECK(shard_write(p, t, 2, 300) == -1, "id 300 >= vocab 300 is refused");
    CHECK(strstr(loqt_last_error(), "300") != NULL, "error names the id: %s", loqt_last_error());
    CHECK(access(p, F_OK) != 0, "nothing written on refusal");
    CHECK(shard_write(p, t, 2, 70000) == -1, "vocab 70000 does not fit uint16");
    CHECK(shard_write(p, t, 2, 0) == -1, "vocab 0 is refused");
}

int main(void) {
    if (test_make_tmpdir(dir, sizeof dir, "shard")) return 1;
    RUN(test_round_trip);
    RUN(test_layout);
    RUN(test_corrupt);
    RUN(test_write_checks);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
    TEST_END();
}
