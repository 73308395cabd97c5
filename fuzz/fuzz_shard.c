/* libFuzzer target for token shard files (header, size, ids below the vocabulary).  The input is
 * written to a file in /dev/shm (or TMPDIR) and read with shard_read, as the loader reads it. */
#include "core/error.h"
#include "data/shard.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%s/loqt_fuzz_shard_%d.bin", dir, (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    shard s;
    loqt_clear_error();
    if (shard_read(&s, path)) {
        if (strchr(loqt_last_error(), '\n') || !loqt_last_error()[0]) abort();
        return 0;
    }
    if (SHARD_HEADER_BYTES + 2 * s.n_tokens != size) abort();
    for (uint64_t i = 0; i < s.n_tokens; i++)
        if (s.tokens[i] >= s.vocab_size) abort();
    shard_free(&s);
    return 0;
}
