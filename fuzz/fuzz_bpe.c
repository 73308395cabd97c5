/* libFuzzer target for BPE encoding of arbitrary bytes with the real LLaMA tokenizer
 * (LOQT_TOKENIZER, default data/llama.tok).  Every id is in range and decoding gives back the
 * input bytes exactly (invalid UTF-8 goes through byte tokens; a literal U+2581 decodes as the
 * space it stands for, so texts with one are exempt); both merge algorithms (per
 * segment and the reference single queue) give the same ids. */
#include "core/error.h"
#include "data/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tokenizer *tk;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *p = getenv("LOQT_TOKENIZER");
    tk = tokenizer_load(p ? p : "data/llama.tok");
    if (!tk) {
        fprintf(stderr, "fuzz_bpe: %s (set LOQT_TOKENIZER)\n", loqt_last_error());
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *ids = NULL, *ref = NULL;
    long n = tokenizer_encode(tk, (const char *)data, size, 0, &ids);
    if (n < 0) abort();
    for (long i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(tk)) abort();
    size_t len = 0;
    char *back = tokenizer_decode_len(tk, ids, (size_t)n, &len);
    /* "\u2581" is SentencePiece's own mark for a space: in the input it decodes as a space, so
     * texts holding it do not round trip (in llama-tokenizer-js and SentencePiece either) */
    const int has_mark = size >= 3 && memmem(data, size, "\xe2\x96\x81", 3) != NULL;
    if (!back || (!has_mark && (len != size || memcmp(back, data, size)))) {
        fprintf(stderr, "decode(encode(x)) != x (%zu bytes in, %zu out)\n", size, len);
        abort();
    }
    tokenizer_set_segmented(tk, 0);
    long m = tokenizer_encode(tk, (const char *)data, size, 0, &ref);
    tokenizer_set_segmented(tk, 1);
    if (m != n || (n && memcmp(ids, ref, sizeof *ids * (size_t)n))) abort();
    free(back);
    free(ids);
    free(ref);
    return 0;
}
