/* loqt tokenize: text to token ids with loqt's tokenizer, or ids back to text (--decode), for
 * checking loqt against other tools.  Input from --text, --file or standard input. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "data/tokenizer.h"
#include "io/fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the whole of stdin, malloc'd */
static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    if (!buf) loqt_die("tokenize: out of memory reading standard input");
    *len = n;
    return buf;
}

/* "1 15043 3186" -> ids; dies naming the first word that is not an id of the tokenizer */
static size_t parse_ids(const char *text, size_t len, int vocab, int32_t **out) {
    size_t cap = 256, n = 0;
    int32_t *ids = malloc(sizeof *ids * cap);
    char *copy = malloc(len + 1);
    if (!ids || !copy) loqt_die("tokenize: out of memory");
    memcpy(copy, text, len);
    copy[len] = 0;
    for (char *tok = strtok(copy, " \t\r\n,"); tok; tok = strtok(NULL, " \t\r\n,")) {
        char *end = NULL;
        errno = 0;
        long v = strtol(tok, &end, 10);
        if (*end || errno || v < 0 || v >= vocab)
            loqt_usage_die("tokenize --decode: '%.40s' is not a token id of this tokenizer (0 .. %d)", tok, vocab - 1);
        if (n == cap) {
            int32_t *b = realloc(ids, sizeof *ids * (cap *= 2));
            if (!b) loqt_die("tokenize: out of memory");
            ids = b;
        }
        ids[n++] = (int32_t)v;
    }
    free(copy);
    *out = ids;
    return n;
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = "data/llama.tok", *text = NULL, *file = NULL;
    int decode = 0, bos = 0;
    const opt_spec specs[] = {
        {"tokenizer", OPT_STRING, &tok_path, "tokenizer file (from 'make tokenizer')", NULL},
        {"text", OPT_STRING, &text, "the input (text, or ids with --decode); default: --file or standard input", NULL},
        {"file", OPT_STRING, &file, "read the input from this file", NULL},
        {"decode", OPT_FLAG, &decode, "ids (separated by spaces, commas or newlines) to text", NULL},
        {"bos", OPT_FLAG, &bos, "prepend the BOS id (1), as the training shards do", NULL},
    };
    opts_parse(specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "tokenize",
               "Prints the token ids of a text on one line (loqt's LLaMA tokenizer; encodings match\n"
               "llama-tokenizer-js), or with --decode the text of a list of ids.");
    if (text && file) loqt_usage_die("tokenize: give --text or --file, not both");
    tokenizer *tk = tokenizer_load(tok_path);
    if (!tk) loqt_die_last("--tokenizer");
    size_t len = 0;
    char *owned = NULL;
    if (text) {
        len = strlen(text);
    } else if (file) {
        owned = file_read_all(file, (size_t)1 << 30, &len);
        if (!owned) loqt_die_last("--file");
        text = owned;
    } else {
        owned = read_stdin(&len);
        text = owned;
    }
    if (decode) {
        int32_t *ids = NULL;
        size_t n = parse_ids(text, len, tokenizer_vocab_size(tk), &ids);
        size_t out_len = 0;
        char *s = tokenizer_decode_len(tk, ids, n, &out_len);
        if (!s) loqt_die_last("tokenize --decode");
        fwrite(s, 1, out_len, stdout);
        printf("\n");
        free(s);
        free(ids);
    } else {
        int32_t *ids = NULL;
        long n = tokenizer_encode(tk, text, len, bos, &ids);
        if (n < 0) loqt_die_last("tokenize");
        for (long i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        free(ids);
    }
    if (file) mem_free(owned);
    else free(owned);
    tokenizer_free(tk);
    return 0;
}
