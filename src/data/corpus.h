/* From extracted text to token shards (what `loqt data` does after scripts/fetch_corpus.sh).
 *
 * Text files hold UTF-8 documents, each followed by a line holding a single form feed ("\f\n");
 * leading and trailing white space of a document is dropped and blank documents are skipped.
 *
 * The validation split is a pure function of each document's bytes, never a random draw:
 *   h = corpus_hash(document)                      (FNV-1a 64 + a 64-bit finalizer)
 *   --val-fraction f: the document is in val iff (h >> 11) / 2^53 < f
 *   --val-tokens n:   documents in increasing h (ties: corpus order) go to val until they hold
 *                     at least n tokens
 * so it never changes between runs, does not depend on the tokenizer, the shard size, or on which
 * other sources are included, and identical documents always land on the same side.  A non-zero
 * fraction that selects nothing still puts the document with the smallest h in val; a split that
 * would leave nothing to train on is an error.
 *
 * Within each split the documents are ordered by a second hash of their content (a fixed
 * shuffle, so that a run that sees part of an epoch sees every source, not just the first one),
 * each document is encoded with BOS prepended, and the token stream is cut into shards of
 * shard_tokens tokens (a document may continue into the next shard; the loader concatenates
 * them). */
#ifndef LOQT_CORPUS_H
#define LOQT_CORPUS_H

#include <stddef.h>
#include <stdint.h>

/* Iterates the documents of one text file (read whole into memory). */
typedef struct {
    char *text;
    size_t len, pos;
} corpus_reader;

int corpus_reader_open(corpus_reader *r, const char *path); /* 0, or -1 with error */
/* 1 with the next document in *doc and *len (pointing into the reader's buffer), 0 at the end. */
int corpus_reader_next(corpus_reader *r, const char **doc, size_t *len);
void corpus_reader_close(corpus_reader *r);

uint64_t corpus_hash(const void *data, size_t len);

/* The split rule above: is_val[i] for n documents with content hashes h[i] and token counts
 * ntok[i].  val_tokens > 0 selects by token count, else val_fraction (0 <= f < 1).  Returns the
 * number of val documents, or -1 with an error (everything would be val). */
long corpus_split(const uint64_t *h, const uint64_t *ntok, size_t n, double val_fraction,
                  uint64_t val_tokens, unsigned char *is_val);

/* Encoder: text[0..len) -> malloc'd ids with BOS first; returns the count or -1 with error.
 * Must be safe to call from several threads at once (documents are encoded in parallel). */
typedef long (*corpus_encode_fn)(void *ctx, const char *text, size_t len, int32_t **out);

typedef struct {
    const char *name; /* e.g. "sotu" */
    const char *path; /* its text file */
} corpus_source;

typedef struct {
    double val_fraction;
    uint64_t val_tokens;   /* > 0 overrides val_fraction */
    uint64_t shard_tokens; /* tokens per shard file, > 0 */
    uint32_t vocab_size;   /* <= 65536 (uint16 ids) */
    corpus_encode_fn encode;
    void *encode_ctx;
    const char *tokenizer_path; /* recorded in the manifest */
    uint64_t tokenizer_hash;    /* recorded in the manifest (corpus_hash of the file) */
    int verbose;                /* progress lines on stderr */
} corpus_options;

typedef struct {
    uint64_t docs[2], tokens[2]; /* [0] train, [1] val */
    int shards[2];
    uint64_t checksum; /* manifest "checksum": FNV-1a 64 of all shard token bytes, train then val */
} corpus_result;

/* Encodes the sources and writes out_dir/train_NNN.bin, out_dir/val_NNN.bin and
 * out_dir/manifest.json, after removing shards of an earlier run from out_dir.  0 or -1. */
int corpus_build(const char *out_dir, const corpus_source *src, int n_src,
                 const corpus_options *opt, corpus_result *res);

#endif
