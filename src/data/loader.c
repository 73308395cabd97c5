/* Batches from the concatenated token shards of one split (semantics in loader.h). */
#include "data/loader.h"

#include "core/error.h"
#include "core/mem.h"
#include "data/shard.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    unsigned long index;
    char *name;
} shard_entry;

static int by_index(const void *a, const void *b) {
    const shard_entry *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* index if name is "<split>_<digits>.bin", else -1 */
static long shard_index(const char *name, const char *split) {
    size_t k = strlen(split);
    if (strncmp(name, split, k) != 0 || name[k] != '_') return -1;
    const char *d = name + k + 1, *e = d;
    while (*e >= '0' && *e <= '9') e++;
    if (e == d || e - d > 9 || strcmp(e, ".bin") != 0) return -1;
    return strtol(d, NULL, 10);
}

static void free_entries(shard_entry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].name);
    free(e);
}

/* The sorted, gap-free list of the split's shard files. */
static int list_shards(const char *dir, const char *split, shard_entry **out, int *n_out) {
    DIR *d = opendir(dir);
    if (!d) return loqt_set_error("%s: cannot open data directory: %s", dir, strerror(errno));
    shard_entry *e = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long idx = shard_index(de->d_name, split);
        if (idx < 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            shard_entry *ne = realloc(e, (size_t)cap * sizeof *e);
            if (!ne) {
                closedir(d);
                free_entries(e, n);
                return loqt_set_error("out of memory listing %s", dir);
            }
            e = ne;
        }
        e[n].index = (unsigned long)idx;
        e[n].name = strdup(de->d_name);
        if (!e[n++].name) {
            closedir(d);
            free_entries(e, n - 1);
            return loqt_set_error("out of memory listing %s", dir);
        }
    }
    closedir(d);
    if (n == 0) {
        free(e);
        return loqt_set_error(
            "%s: no %s shards (%s_000.bin ...); make them with 'loqt data --out %s'", dir, split,
            split, dir);
    }
    qsort(e, (size_t)n, sizeof *e, by_index);
    for (int i = 0; i < n; i++)
        if (e[i].index != (unsigned long)i) {
            int dup = i > 0 && e[i].index == e[i - 1].index;
            loqt_set_error(dup ? "%s: two files for %s shard %d (%s and %s)"
                               : "%s: %s shard %d is missing (found %s after %s)",
                           dir, split, dup ? (int)e[i].index : i, e[i].name,
                           i > 0 ? e[i - 1].name : "nothing");
            free_entries(e, n);
            return -1;
        }
    *out = e;
    *n_out = n;
    return 0;
}

static int join(char *buf, size_t cap, const char *dir, const char *name) {
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap) return loqt_set_error("%s/%s: path too long", dir, name);
    return 0;
}

int loader_open(data_loader *L, const char *dir, const char *split) {
    memset(L, 0, sizeof *L);
    if (!split || !*split || strchr(split, '/'))
        return loqt_set_error("bad split name '%s'", split ? split : "");
    shard_entry *e = NULL;
    int n = 0;
    if (list_shards(dir, split, &e, &n) != 0) return -1;

    /* Size the stream from the file sizes first, so the shards can be copied in one at a time
     * (peak memory: the stream plus one shard, not twice the stream). */
    uint64_t cap = 0;
    char path[4096];
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (join(path, sizeof path, dir, e[i].name) != 0) goto fail;
        if (stat(path, &st) != 0) {
            loqt_set_error("%s: cannot stat shard: %s", path, strerror(errno));
            goto fail;
        }
        if (st.st_size > SHARD_HEADER_BYTES) cap += ((uint64_t)st.st_size - SHARD_HEADER_BYTES) / 2;
    }
    if (cap > SIZE_MAX / 2) {
        loqt_set_error("%s: %s split too large for this machine", dir, split);
        goto fail;
    }
    L->tokens = cap ? mem_try_alloc(MEM_DATA, (size_t)(2 * cap)) : NULL;
    if (cap && !L->tokens) goto fail;
    for (int i = 0; i < n; i++) {
        shard s;
        if (join(path, sizeof path, dir, e[i].name) != 0) goto fail;
        if (shard_read(&s, path) != 0) goto fail;
        if (i > 0 && s.vocab_size != L->vocab_size) {
            loqt_set_error("%s: vocab size %u differs from %u in %s", path, s.vocab_size,
                           L->vocab_size, e[0].name);
            shard_free(&s);
            goto fail;
        }
        if (s.n_tokens > cap - L->n_tokens) {
            loqt_set_error("%s: shard changed while loading", path);
            shard_free(&s);
            goto fail;
        }
        L->vocab_size = s.vocab_size;
        if (s.n_tokens) memcpy(L->tokens + L->n_tokens, s.tokens, (size_t)(2 * s.n_tokens));
        L->n_tokens += s.n_tokens;
        if (s.n_tokens > L->max_shard) L->max_shard = s.n_tokens;
        shard_free(&s);
    }
    if (L->n_tokens < 2) {
        loqt_set_error("%s: the %s split has %llu token(s); a batch needs at least 2", dir, split,
                       (unsigned long long)L->n_tokens);
        goto fail;
    }
    L->n_shards = n;
    free_entries(e, n);
    return 0;
fail:
    free_entries(e, n);
    loader_close(L);
    return -1;
}

void loader_close(data_loader *L) {
    if (!L) return;
    if (L->tokens) mem_free(L->tokens);
    memset(L, 0, sizeof *L);
}

uint64_t loader_tokens(const data_loader *L) { return L->n_tokens; }
uint64_t loader_max_shard(const data_loader *L) { return L->max_shard; }
uint32_t loader_vocab_size(const data_loader *L) { return L->vocab_size; }
uint64_t loader_position(const data_loader *L) { return L->pos; }

void loader_seek(data_loader *L, uint64_t pos) { L->pos = L->n_tokens ? pos % L->n_tokens : 0; }

int loader_check_batch(const data_loader *L, int B, int T) {
    if (B <= 0 || T <= 0)
        return loqt_set_error("batch size %d and sequence length %d must be positive", B, T);
    uint64_t need = (uint64_t)B * (uint64_t)T + 1;
    if (need > L->n_tokens)
        return loqt_set_error("one batch of %d x %d needs %llu tokens but the split has only %llu",
                              B, T, (unsigned long long)need, (unsigned long long)L->n_tokens);
    return 0;
}

void loader_skip_batch(data_loader *L, int B, int T) {
    if (B <= 0 || T <= 0 || L->n_tokens == 0) return;
    const uint64_t N = L->n_tokens, step = (uint64_t)B * (uint64_t)T;
    if (step + 1 <= N) { /* as loader_next_batch moves */
        if (L->pos + step + 1 > N) L->pos = 0;
        L->pos += step;
    } else {
        L->pos = (L->pos + step % N) % N;
    }
}

void loader_next_batch(data_loader *L, int B, int T, int32_t *inputs, int32_t *targets) {
    if (B <= 0 || T <= 0 || L->n_tokens == 0) return;
    const uint64_t N = L->n_tokens, step = (uint64_t)B * (uint64_t)T;
    if (step + 1 <= N) {
        if (L->pos + step + 1 > N) L->pos = 0;
        const uint16_t *src = L->tokens + L->pos;
        for (uint64_t i = 0; i < step; i++) {
            inputs[i] = src[i];
            targets[i] = src[i + 1];
        }
        L->pos += step;
    } else {
        /* Fewer tokens than one batch: read circularly (documented in loader.h). */
        uint64_t p = L->pos;
        for (uint64_t i = 0; i < step; i++) {
            inputs[i] = L->tokens[p];
            p = p + 1 == N ? 0 : p + 1;
            targets[i] = L->tokens[p];
        }
        L->pos = (L->pos + step % N) % N;
    }
}

int loader_sample_sequences(const data_loader *L, int n, int T, int32_t *out) {
    const uint64_t N = L->n_tokens, need = (uint64_t)n * (uint64_t)T;
    if (n <= 0 || T <= 0) return loqt_set_error("calibration: %d sequences of %d tokens", n, T);
    if (need > N)
        return loqt_set_error("--calibration-sequences %d: %d sequences of %d tokens need %llu tokens, the training split "
                              "holds %llu (at most %llu sequences)", n, n, T, (unsigned long long)need,
                              (unsigned long long)N, (unsigned long long)(N / (uint64_t)T));
    /* sequence i starts at floor(i (N - T) / (n - 1)): they spread over the whole split, and as
     * N >= n T the starts are at least T apart, so no two overlap */
    const uint64_t span = N - (uint64_t)T;
    for (int i = 0; i < n; i++) {
        const long double at = n > 1 ? (long double)span * i / (n - 1) : 0.0L;
        uint64_t start = (uint64_t)at;
        if (start + T > N) start = N - T;
        for (int t = 0; t < T; t++) out[(size_t)i * T + t] = L->tokens[start + t];
    }
    return 0;
}
