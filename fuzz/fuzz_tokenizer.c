/* libFuzzer target for the tokenizer file (scripts/fetch_tokenizer.sh's compact format).  The
 * file's CRC-32 (header bytes 24..27, of everything after the 32-byte header) is recomputed here
 * before loading, so mutations get past the checksum and reach the parser of pieces and merges.
 * The input is written to a file in /dev/shm (or TMPDIR), as tokenizer_load reads a path.  An
 * accepted tokenizer must encode and decode a short text, with every id in range. */
#include "core/error.h"
#include "data/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* CRC-32 (IEEE 802.3, zlib's), as the tokenizer file records it */
static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    while (n--) c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static char path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%s/loqt_fuzz_tok_%d.tok", dir, (int)getpid());
    }
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    if (size >= 32) {
        uint32_t c = crc32_ieee(buf + 32, size - 32);
        for (int i = 0; i < 4; i++) buf[24 + i] = (uint8_t)(c >> (8 * i));
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(buf, 1, size, f) != size) abort();
    fclose(f);
    free(buf);
    loqt_clear_error();
    tokenizer *t = tokenizer_load(path);
    if (!t) {
        if (strchr(loqt_last_error(), '\n') || !loqt_last_error()[0]) abort();
        return 0;
    }
    static const char text[] = "ab a\xc3\xa9\x01 b";
    int32_t *ids = NULL;
    long n = tokenizer_encode(t, text, sizeof text - 1, 1, &ids);
    if (n < 0) abort();
    for (long i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(t)) abort();
    size_t len = 0;
    char *back = tokenizer_decode_len(t, ids, (size_t)n, &len);
    if (!back || len != sizeof text - 1 || memcmp(back, text, len)) abort();
    free(back);
    free(ids);
    tokenizer_free(t);
    return 0;
}
