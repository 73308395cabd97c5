/* Token shard files (format in shard.h).  All integers are little-endian on disk whatever the
 * host; writes are atomic (a crash leaves the old file or the complete new one). */
#include "data/shard.h"

#include "core/error.h"
#include "core/mem.h"
#include "io/fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char shard_magic[8] = {'L', 'O', 'Q', 'T', 'S', 'H', 'R', 'D'};

static int host_is_le(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int shard_write(const char *path, const uint16_t *tokens, uint64_t n, uint32_t vocab_size) {
    if (vocab_size == 0 || vocab_size > 65536)
        return loqt_set_error("%s: vocab size %u does not fit uint16 token ids", path, vocab_size);
    if (n && !tokens) return loqt_set_error("%s: no tokens given", path);
    for (uint64_t i = 0; i < n; i++)
        if (tokens[i] >= vocab_size)
            return loqt_set_error("%s: token %llu has id %u >= vocab size %u", path,
                                  (unsigned long long)i, tokens[i], vocab_size);
    unsigned char h[SHARD_HEADER_BYTES] = {0};
    memcpy(h, shard_magic, 8);
    put_u32(h + 8, SHARD_VERSION);
    put_u32(h + 12, vocab_size);
    put_u64(h + 16, n);

    atomic_file f;
    if (atomic_file_open(&f, path) != 0) return -1;
    if (atomic_file_write(&f, h, sizeof h) != 0) goto fail;
    /* Write in blocks so a big-endian host can byte-swap through a small buffer. */
    unsigned char buf[1 << 16];
    const uint64_t per = sizeof buf / 2;
    for (uint64_t i = 0; i < n; i += per) {
        uint64_t m = n - i < per ? n - i : per;
        const void *src = tokens + i;
        if (!host_is_le()) {
            for (uint64_t j = 0; j < m; j++) {
                buf[2 * j] = (unsigned char)(tokens[i + j] & 0xff);
                buf[2 * j + 1] = (unsigned char)(tokens[i + j] >> 8);
            }
            src = buf;
        }
        if (atomic_file_write(&f, src, (size_t)(2 * m)) != 0) goto fail;
    }
    return atomic_file_commit(&f);
fail:
    atomic_file_abort(&f);
    return -1;
}

/* Reads and checks the header; *n gets the token count.  Leaves fp after the header. */
static int read_header(FILE *fp, const char *path, uint64_t *n, uint32_t *vocab) {
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) return loqt_set_error("%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return loqt_set_error("%s: not a regular file", path);
    uint64_t size = (uint64_t)st.st_size;
    unsigned char h[SHARD_HEADER_BYTES];
    if (size < SHARD_HEADER_BYTES || fread(h, 1, sizeof h, fp) != sizeof h)
        return loqt_set_error("%s: truncated shard (%llu bytes, the header alone is %d)", path,
                              (unsigned long long)size, SHARD_HEADER_BYTES);
    if (memcmp(h, shard_magic, 8) != 0)
        return loqt_set_error("%s: not a loqt token shard (bad magic)", path);
    uint32_t version = get_u32(h + 8);
    if (version != SHARD_VERSION)
        return loqt_set_error("%s: shard version %u, this build reads version %d", path, version,
                              SHARD_VERSION);
    *vocab = get_u32(h + 12);
    if (*vocab == 0 || *vocab > 65536)
        return loqt_set_error("%s: vocab size %u in the header is not in 1..65536", path, *vocab);
    *n = get_u64(h + 16);
    if (*n > (UINT64_MAX - SHARD_HEADER_BYTES) / 2)
        return loqt_set_error("%s: header token count %llu is impossible (corrupt shard)", path,
                              (unsigned long long)*n);
    if (size != SHARD_HEADER_BYTES + 2 * *n)
        return loqt_set_error("%s: header says %llu tokens, so %llu bytes, but the file has %llu "
                              "bytes (truncated or corrupt shard)",
                              path, (unsigned long long)*n,
                              (unsigned long long)(SHARD_HEADER_BYTES + 2 * *n),
                              (unsigned long long)size);
    if (*n > SIZE_MAX / 2) return loqt_set_error("%s: shard too large for this machine", path);
    return 0;
}

int shard_read(shard *s, const char *path) {
    memset(s, 0, sizeof *s);
    FILE *fp = fopen(path, "rb");
    if (!fp) return loqt_set_error("%s: cannot open shard: %s", path, strerror(errno));
    uint64_t n = 0;
    uint32_t vocab = 0;
    if (read_header(fp, path, &n, &vocab) != 0) {
        fclose(fp);
        return -1;
    }
    uint16_t *t = NULL;
    if (n) {
        t = mem_try_alloc(MEM_DATA, (size_t)(2 * n));
        if (!t) {
            fclose(fp);
            return loqt_set_error("%s: %s", path, loqt_last_error());
        }
        if (fread(t, 2, (size_t)n, fp) != (size_t)n) {
            mem_free(t);
            fclose(fp);
            return loqt_set_error("%s: read failed (file changed while reading?)", path);
        }
    }
    fclose(fp);
    if (!host_is_le())
        for (uint64_t i = 0; i < n; i++) t[i] = (uint16_t)(t[i] >> 8 | t[i] << 8);
    for (uint64_t i = 0; i < n; i++)
        if (t[i] >= vocab) {
            loqt_set_error("%s: token %llu has id %u >= vocab size %u (corrupt shard)", path,
                           (unsigned long long)i, t[i], vocab);
            mem_free(t);
            return -1;
        }
    s->tokens = t;
    s->n_tokens = n;
    s->vocab_size = vocab;
    return 0;
}

void shard_free(shard *s) {
    if (!s) return;
    if (s->tokens) mem_free(s->tokens);
    memset(s, 0, sizeof *s);
}
