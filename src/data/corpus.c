/* Text documents -> tokenized, split, shuffled token shards + manifest (rules in corpus.h). */
#include "data/corpus.h"

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "data/shard.h"
#include "io/fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TEXT_BYTES ((size_t)1 << 31) /* per source text file */

/* ---- reading documents ---- */

int corpus_reader_open(corpus_reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->text = file_read_all(path, MAX_TEXT_BYTES, &r->len);
    return r->text ? 0 : -1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v'; }

int corpus_reader_next(corpus_reader *r, const char **doc, size_t *len) {
    while (r->pos < r->len) {
        /* the document runs to the next line that is exactly "\f" (or to the end of the file) */
        size_t start = r->pos, end = r->len, next = r->len;
        for (size_t i = start; i < r->len; i++) {
            if (r->text[i] == '\f' && (i == 0 || r->text[i - 1] == '\n') &&
                (i + 1 == r->len || r->text[i + 1] == '\n')) {
                end = i;
                next = i + 1 < r->len ? i + 2 : i + 1;
                break;
            }
        }
        r->pos = next;
        while (start < end && is_space(r->text[start])) start++;
        while (end > start && is_space(r->text[end - 1])) end--;
        if (end > start) {
            *doc = r->text + start;
            *len = end - start;
            return 1;
        }
    }
    return 0;
}

void corpus_reader_close(corpus_reader *r) {
    if (r->text) mem_free(r->text);
    memset(r, 0, sizeof *r);
}

/* ---- hashing and the split rule ---- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_update(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* splitmix64's finalizer: FNV-1a's high bits alone are not uniform enough for a threshold */
static uint64_t fmix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t corpus_hash(const void *data, size_t len) {
    return fmix(fnv_update(FNV_OFFSET, data, len));
}

typedef struct {
    uint64_t key;
    size_t index;
} keyed;

static int by_key(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static keyed *sorted_keys(const uint64_t *key, size_t n) {
    keyed *k = malloc((n ? n : 1) * sizeof *k);
    if (!k) return NULL;
    for (size_t i = 0; i < n; i++) k[i] = (keyed){key[i], i};
    qsort(k, n, sizeof *k, by_key);
    return k;
}

long corpus_split(const uint64_t *h, const uint64_t *ntok, size_t n, double val_fraction,
                  uint64_t val_tokens, unsigned char *is_val) {
    if (n == 0) return loqt_set_error("no documents to split");
    if (!(val_fraction >= 0 && val_fraction < 1))
        return loqt_set_error("validation fraction %g is not in [0, 1)", val_fraction);
    keyed *k = sorted_keys(h, n);
    if (!k) return loqt_set_error("out of memory splitting %zu documents", n);
    memset(is_val, 0, n);
    size_t nval = 0;
    if (val_tokens > 0) {
        for (uint64_t got = 0; nval < n && got < val_tokens; nval++) {
            is_val[k[nval].index] = 1;
            got += ntok[k[nval].index];
        }
    } else if (val_fraction > 0) {
        for (size_t i = 0; i < n; i++)
            if ((double)(h[i] >> 11) * 0x1p-53 < val_fraction) is_val[i] = 1, nval++;
        if (nval == 0) is_val[k[0].index] = 1, nval = 1;
    }
    free(k);
    if (nval == n)
        return loqt_set_error("the validation split would take all %zu documents, leaving none to "
                              "train on; ask for a smaller one",
                              n);
    return (long)nval;
}

/* ---- encoding all documents ---- */

typedef struct {
    uint64_t off, n, h; /* tokens store[off .. off+n), content hash */
    int src;
} doc_rec;

typedef struct {
    uint16_t *t; /* MEM_DATA */
    uint64_t n, cap;
    doc_rec *doc; /* malloc */
    size_t ndoc, doccap;
} corpus_store;

static int store_grow(corpus_store *s, uint64_t more) {
    if (s->n + more <= s->cap) return 0;
    uint64_t cap = s->cap ? s->cap : 1 << 20;
    while (cap < s->n + more) cap *= 2;
    uint16_t *t = mem_try_alloc(MEM_DATA, (size_t)(2 * cap));
    if (!t) return -1;
    if (s->n) memcpy(t, s->t, (size_t)(2 * s->n));
    if (s->t) mem_free(s->t);
    s->t = t;
    s->cap = cap;
    return 0;
}

static int store_add(corpus_store *s, const int32_t *ids, long n, uint64_t h, int src,
                     uint32_t vocab, const char *where) {
    if (store_grow(s, (uint64_t)n) != 0) return -1;
    if (s->ndoc == s->doccap) {
        size_t cap = s->doccap ? 2 * s->doccap : 1024;
        doc_rec *d = realloc(s->doc, cap * sizeof *d);
        if (!d) return loqt_set_error("out of memory for the document list");
        s->doc = d;
        s->doccap = cap;
    }
    for (long i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
            return loqt_set_error("%s: the tokenizer returned id %d, outside the vocabulary of %u",
                                  where, ids[i], vocab);
        s->t[s->n + (uint64_t)i] = (uint16_t)ids[i];
    }
    s->doc[s->ndoc++] = (doc_rec){s->n, (uint64_t)n, h, src};
    s->n += (uint64_t)n;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    uint64_t bytes, docs[2], tokens[2];
} source_stats;

#define ENCODE_BATCH 64

/* Encodes every document of one source into the store, ENCODE_BATCH documents in parallel. */
static int encode_source(corpus_store *st, const corpus_source *src, int si,
                         const corpus_options *opt, source_stats *ss) {
    corpus_reader r;
    if (corpus_reader_open(&r, src->path) != 0) return -1;
    ss->bytes = r.len;
    const char *doc[ENCODE_BATCH];
    size_t len[ENCODE_BATCH];
    int32_t *ids[ENCODE_BATCH];
    long nids[ENCODE_BATCH];
    uint64_t hs[ENCODE_BATCH];
    size_t ndocs = 0;
    uint64_t ntok = 0;
    double t0 = now_s(), last = t0;
    int rc = 0, more = 1;
    while (rc == 0 && more) {
        int nb = 0;
        while (nb < ENCODE_BATCH && (more = corpus_reader_next(&r, &doc[nb], &len[nb]))) nb++;
        char err[512] = "";
        int err_i = nb;
        /* The error message is thread-local: a worker copies its own out (the first failing
         * document's, whatever the thread timing). */
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < nb; i++) {
            hs[i] = corpus_hash(doc[i], len[i]);
            ids[i] = NULL;
            nids[i] = opt->encode(opt->encode_ctx, doc[i], len[i], &ids[i]);
            if (nids[i] < 0) {
#pragma omp critical(corpus_err)
                if (i < err_i) {
                    err_i = i;
                    snprintf(err, sizeof err, "%s", loqt_last_error());
                }
            }
        }
        for (int i = 0; i < nb; i++) {
            char where[128];
            snprintf(where, sizeof where, "%s document %zu", src->name, ndocs + (size_t)i + 1);
            if (rc == 0 && nids[i] < 0) rc = loqt_set_error("%s: cannot encode: %s", where, err);
            if (rc == 0) rc = store_add(st, ids[i], nids[i], hs[i], si, opt->vocab_size, where);
            if (rc == 0) ntok += (uint64_t)nids[i];
            free(ids[i]);
        }
        ndocs += (size_t)nb;
        double t = now_s();
        if (opt->verbose && rc == 0 && (t - last > 2 || !more)) {
            double pct = more && r.len ? 100.0 * (double)r.pos / (double)r.len : 100.0;
            fprintf(stderr,
                    "  %-10s %7zu documents %11llu tokens  %5.1f%% of %.1f MB  %.0f tokens/s\n",
                    src->name, ndocs, (unsigned long long)ntok, pct, (double)r.len / 1e6,
                    (double)ntok / (t - t0 + 1e-9));
            last = t;
        }
    }
    corpus_reader_close(&r);
    if (rc == 0 && ndocs == 0) rc = loqt_set_error("%s: no documents in %s", src->name, src->path);
    return rc;
}

/* ---- writing shards and the manifest ---- */

static int is_shard_name(const char *name) {
    for (int s = 0; s < 2; s++) {
        const char *p = s ? "val_" : "train_";
        size_t k = strlen(p);
        if (strncmp(name, p, k) != 0) continue;
        const char *e = name + k;
        while (*e >= '0' && *e <= '9') e++;
        if (e > name + k && (!strcmp(e, ".bin") || !strcmp(e, ".bin.tmp"))) return 1;
    }
    return 0;
}

/* Removes train_*.bin / val_*.bin of an earlier run (the loader reads every shard it finds) and
 * its manifest, which is written last: a directory without one is a build that did not finish. */
static int remove_old_shards(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return loqt_set_error("%s: cannot open: %s", dir, strerror(errno));
    struct dirent *de;
    char path[4096];
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (!is_shard_name(de->d_name) && strcmp(de->d_name, "manifest.json") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0)
            rc = loqt_set_error("%s: cannot remove old shard: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

typedef struct {
    char name[32];
    uint64_t tokens, fnv;
} shard_info;

typedef struct {
    shard_info *sh;
    int n, cap;
} shard_list;

static int flush_shard(const char *dir, const char *split, shard_list *L, const uint16_t *buf,
                       uint64_t n, uint32_t vocab, uint64_t *checksum, int verbose) {
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 8;
        shard_info *s = realloc(L->sh, (size_t)cap * sizeof *s);
        if (!s) return loqt_set_error("out of memory");
        L->sh = s;
        L->cap = cap;
    }
    shard_info *si = &L->sh[L->n];
    snprintf(si->name, sizeof si->name, "%s_%03d.bin", split, L->n);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, si->name);
    /* checksums over the on-disk (little-endian) bytes */
    uint64_t f = FNV_OFFSET;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char b[2] = {(unsigned char)(buf[i] & 0xff), (unsigned char)(buf[i] >> 8)};
        f = fnv_update(f, b, 2);
        *checksum = fnv_update(*checksum, b, 2);
    }
    si->tokens = n;
    si->fnv = f;
    if (shard_write(path, buf, n, vocab) != 0) return -1;
    if (verbose) fprintf(stderr, "  wrote %s (%llu tokens)\n", path, (unsigned long long)n);
    L->n++;
    return 0;
}

/* Writes the documents of one split (in the fixed shuffled order) as shards. */
static int write_split(const char *dir, int split, const corpus_store *st,
                       const unsigned char *is_val, const corpus_options *opt, shard_list *L,
                       uint64_t *checksum) {
    const char *name = split ? "val" : "train";
    size_t n = 0;
    uint64_t total = 0;
    uint64_t *key = malloc((st->ndoc ? st->ndoc : 1) * sizeof *key);
    if (!key) return loqt_set_error("out of memory");
    for (size_t i = 0; i < st->ndoc; i++) {
        /* documents of the other split sort last and are skipped */
        key[i] = is_val[i] == split ? fmix(st->doc[i].h ^ 0x9e3779b97f4a7c15ull) >> 1 : UINT64_MAX;
        if (is_val[i] == split) n++, total += st->doc[i].n;
    }
    keyed *k = sorted_keys(key, st->ndoc);
    free(key);
    if (!k) return loqt_set_error("out of memory");
    if (total == 0) {
        free(k);
        return 0;
    }
    uint64_t cap = total < opt->shard_tokens ? total : opt->shard_tokens;
    uint16_t *buf = mem_try_alloc(MEM_DATA, (size_t)(2 * cap));
    int rc = buf ? 0 : -1;
    uint64_t fill = 0;
    for (size_t j = 0; rc == 0 && j < n; j++) {
        const doc_rec *d = &st->doc[k[j].index];
        for (uint64_t done = 0; rc == 0 && done < d->n;) {
            uint64_t m = d->n - done < cap - fill ? d->n - done : cap - fill;
            memcpy(buf + fill, st->t + d->off + done, (size_t)(2 * m));
            fill += m;
            done += m;
            if (fill == cap) {
                rc = flush_shard(dir, name, L, buf, fill, opt->vocab_size, checksum, opt->verbose);
                fill = 0;
            }
        }
    }
    if (rc == 0 && fill)
        rc = flush_shard(dir, name, L, buf, fill, opt->vocab_size, checksum, opt->verbose);
    if (buf) mem_free(buf);
    free(k);
    return rc;
}

static void write_manifest_split(FILE *f, const char *name, const corpus_result *res, int s,
                                 const shard_list *L) {
    fprintf(f, "  \"%s\": {\"documents\": %llu, \"tokens\": %llu, \"shards\": [", name,
            (unsigned long long)res->docs[s], (unsigned long long)res->tokens[s]);
    for (int i = 0; i < L->n; i++)
        fprintf(f, "%s\n    {\"file\": \"%s\", \"tokens\": %llu, \"fnv1a64\": \"%016llx\"}",
                i ? "," : "", L->sh[i].name, (unsigned long long)L->sh[i].tokens,
                (unsigned long long)L->sh[i].fnv);
    fprintf(f, "%s]}", L->n ? "\n  " : "");
}

static int write_manifest(const char *dir, const corpus_source *src, int n_src,
                          const source_stats *ss, const corpus_options *opt,
                          const corpus_result *res, const shard_list *L) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return loqt_set_error("out of memory writing the manifest");
    fprintf(f, "{\n  \"format\": \"loqt-token-shards\",\n  \"shard_version\": %d,\n",
            SHARD_VERSION);
    fprintf(f, "  \"tokenizer\": ");
    json_write_string(f, opt->tokenizer_path ? opt->tokenizer_path : "");
    fprintf(f, ",\n  \"tokenizer_hash\": \"%016llx\",\n  \"vocab_size\": %u,\n",
            (unsigned long long)opt->tokenizer_hash, opt->vocab_size);
    fprintf(f, "  \"bos_prepended\": true,\n  \"shard_tokens\": %llu,\n",
            (unsigned long long)opt->shard_tokens);
    if (opt->val_tokens)
        fprintf(f,
                "  \"split_rule\": \"val = documents in increasing corpus_hash until >= %llu "
                "tokens\",\n",
                (unsigned long long)opt->val_tokens);
    else
        fprintf(f,
                "  \"split_rule\": \"val = documents with (corpus_hash >> 11) / 2^53 < %.17g\",\n",
                opt->val_fraction);
    fprintf(f, "  \"sources\": [");
    for (int i = 0; i < n_src; i++) {
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        json_write_string(f, src[i].name);
        /* relative to the manifest's directory when inside it, so the directory can move */
        const char *file = src[i].path;
        size_t k = strlen(dir);
        if (strncmp(file, dir, k) == 0 && file[k] == '/') file += k + 1;
        fprintf(f, ", \"file\": ");
        json_write_string(f, file);
        fprintf(f,
                ", \"bytes\": %llu, \"documents\": %llu, \"train_documents\": %llu, "
                "\"val_documents\": %llu, \"train_tokens\": %llu, \"val_tokens\": %llu}",
                (unsigned long long)ss[i].bytes,
                (unsigned long long)(ss[i].docs[0] + ss[i].docs[1]),
                (unsigned long long)ss[i].docs[0], (unsigned long long)ss[i].docs[1],
                (unsigned long long)ss[i].tokens[0], (unsigned long long)ss[i].tokens[1]);
    }
    fprintf(f, "\n  ],\n");
    write_manifest_split(f, "train", res, 0, &L[0]);
    fprintf(f, ",\n");
    write_manifest_split(f, "val", res, 1, &L[1]);
    fprintf(f, ",\n  \"checksum\": \"%016llx\"\n}\n", (unsigned long long)res->checksum);
    if (fclose(f) != 0) {
        free(text);
        return loqt_set_error("out of memory writing the manifest");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    int rc = file_write_atomic(path, text, len);
    free(text);
    return rc;
}

int corpus_build(const char *out_dir, const corpus_source *src, int n_src,
                 const corpus_options *opt, corpus_result *res) {
    memset(res, 0, sizeof *res);
    if (n_src <= 0) return loqt_set_error("no sources given");
    if (!opt->encode) return loqt_set_error("no encoder given");
    if (opt->shard_tokens == 0) return loqt_set_error("shard size must be at least 1 token");
    if (opt->vocab_size == 0 || opt->vocab_size > 65536)
        return loqt_set_error("vocab size %u does not fit the uint16 shards", opt->vocab_size);
    if (strlen(out_dir) > 3000) return loqt_set_error("output path too long");
    if (file_mkdir_p(out_dir) != 0) return -1;

    corpus_store st = {0};
    source_stats *ss = calloc((size_t)n_src, sizeof *ss);
    unsigned char *is_val = NULL;
    uint64_t *h = NULL, *nt = NULL;
    shard_list L[2] = {{0}, {0}};
    int rc = ss ? 0 : loqt_set_error("out of memory");
    for (int i = 0; rc == 0 && i < n_src; i++) rc = encode_source(&st, &src[i], i, opt, &ss[i]);
    if (rc == 0) {
        is_val = calloc(st.ndoc + 1, 1);
        h = calloc(st.ndoc + 1, sizeof *h);
        nt = calloc(st.ndoc + 1, sizeof *nt);
        if (!is_val || !h || !nt) rc = loqt_set_error("out of memory");
    }
    if (rc == 0) {
        for (size_t i = 0; i < st.ndoc; i++) h[i] = st.doc[i].h, nt[i] = st.doc[i].n;
        if (corpus_split(h, nt, st.ndoc, opt->val_fraction, opt->val_tokens, is_val) < 0) rc = -1;
    }
    if (rc == 0) {
        for (size_t i = 0; i < st.ndoc; i++) {
            int s = is_val[i];
            res->docs[s]++;
            res->tokens[s] += st.doc[i].n;
            ss[st.doc[i].src].docs[s]++;
            ss[st.doc[i].src].tokens[s] += st.doc[i].n;
        }
        res->checksum = FNV_OFFSET;
        rc = remove_old_shards(out_dir);
    }
    for (int s = 0; rc == 0 && s < 2; s++) {
        rc = write_split(out_dir, s, &st, is_val, opt, &L[s], &res->checksum);
        res->shards[s] = L[s].n;
    }
    if (rc == 0) rc = write_manifest(out_dir, src, n_src, ss, opt, res, L);
    if (rc == 0) rc = file_fsync_dir(out_dir);
    free(L[0].sh);
    free(L[1].sh);
    free(is_val);
    free(h);
    free(nt);
    free(ss);
    free(st.doc);
    if (st.t) mem_free(st.t);
    return rc;
}
