/* libFuzzer target for model.safetensors.index.json (st_index_parse, io/safetensors.h; built
 * and run by scripts/fuzz.sh).
 *
 * For accepted inputs it checks, independently of the parser, what st_open_dir relies on: at
 * least one tensor; every tensor's shard index in range; shard names distinct, non-empty, without
 * '/' and not "." or ".."; tensor names distinct.  A rejection must leave a one-line message
 * naming the file. */
#include "core/error.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_index ix;
    loqt_clear_error();
    if (st_index_parse(&ix, (const char *)data, size, "fuzz.index.json") != 0) {
        const char *e = loqt_last_error();
        if (!strstr(e, "fuzz.index.json") || strchr(e, '\n')) {
            fprintf(stderr, "bad error message: %s\n", e);
            abort();
        }
        return 0;
    }
    if (ix.n < 1 || ix.n_shards < 1 || ix.n_shards > ix.n) abort();
    for (int i = 0; i < ix.n; i++) {
        if (ix.shard[i] < 0 || ix.shard[i] >= ix.n_shards) abort();
        for (int j = 0; j < i; j++)
            if (!strcmp(ix.names[i], ix.names[j])) abort();
    }
    for (int s = 0; s < ix.n_shards; s++) {
        const char *f = ix.shards[s];
        if (!f[0] || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) abort();
        for (int t = 0; t < s; t++)
            if (!strcmp(f, ix.shards[t])) abort();
    }
    st_index_free(&ix);
    return 0;
}
