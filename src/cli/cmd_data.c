/* `loqt data`: fetch the text corpus (scripts/fetch_corpus.sh), tokenize it, write token shards.
 * Everything about the split and the formats is in src/data/corpus.h and docs/data.md. */
#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/mem.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "io/fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_SOURCES "sotu,mobydick,brown,nlpcorpus"
#define DEBIAN_SOURCES "kjv,fortunes"
#define FETCH_SCRIPT "scripts/fetch_corpus.sh"
#define MAX_SOURCES 32

static long encode_doc(void *ctx, const char *text, size_t len, int32_t **out) {
    return tokenizer_encode((const tokenizer *)ctx, text, len, 1, out);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* scripts/fetch_corpus.sh under the current directory, else next to the executable's build
 * directory (build/loqt -> scripts/ one level up), so `loqt data` also works from elsewhere. */
static int find_script(char *buf, size_t cap) {
    if (is_file(FETCH_SCRIPT)) {
        snprintf(buf, cap, "%s", FETCH_SCRIPT);
        return 0;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            int k = snprintf(buf, cap, "%s/../%s", exe, FETCH_SCRIPT);
            if (k > 0 && (size_t)k < cap && is_file(buf)) return 0;
        }
    }
    return -1;
}

static void run_fetch(const char *script, int debian, const char *out, char **names, int n) {
    char *args[MAX_SOURCES + 6];
    int k = 0;
    args[k++] = "bash";
    args[k++] = (char *)script;
    if (debian) args[k++] = "--debian";
    args[k++] = (char *)out;
    for (int i = 0; i < n; i++) args[k++] = names[i];
    args[k] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) loqt_die("cannot start %s: %s", script, strerror(errno));
    if (pid == 0) {
        execvp("bash", args);
        fprintf(stderr, "loqt: error: cannot run bash for %s: %s\n", script, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) loqt_die("waiting for %s: %s", script, strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        loqt_die("%s failed (%s %d); see its message above", script,
                 WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Splits "a,b,c" in place; names must be [a-z0-9_-]+ and distinct. */
static int split_sources(char *list, char **names) {
    int n = 0;
    for (char *p = strtok(list, ", "); p; p = strtok(NULL, ", ")) {
        if (n == MAX_SOURCES) loqt_usage_die("data: --sources: more than %d sources", MAX_SOURCES);
        if (strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(p))
            loqt_usage_die("data: --sources: bad source name '%s'", p);
        for (int i = 0; i < n; i++)
            if (!strcmp(names[i], p)) loqt_usage_die("data: --sources: '%s' given twice", p);
        names[n++] = p;
    }
    if (n == 0) loqt_usage_die("data: --sources: no source names given");
    return n;
}

int cmd_data(int argc, char **argv) {
    const char *out = NULL, *tok_path = "data/llama.tok", *sources = NULL;
    double val_fraction = 0.01;
    long val_tokens = 0, shard_tokens = 1L << 22;
    int debian = 0, no_fetch = 0, quiet = 0;
    const opt_spec specs[] = {
        {"out", OPT_STRING, &out, "output directory (text/ and the shards go here)", NULL},
        {"tokenizer", OPT_STRING, &tok_path, "tokenizer file (scripts/fetch_tokenizer.sh makes it)",
         NULL},
        {"val-fraction", OPT_FLOAT, &val_fraction,
         "fraction of documents in the validation split, chosen by content hash", NULL},
        {"val-tokens", OPT_LONG, &val_tokens,
         "instead of --val-fraction: validation documents until this many tokens", NULL},
        {"shard-tokens", OPT_LONG, &shard_tokens, "tokens per shard file", NULL},
        {"sources", OPT_STRING, &sources,
         "comma-separated: sotu,mobydick,brown,nlpcorpus (default), kjv,fortunes (Debian)", NULL},
        {"debian", OPT_FLAG, &debian, "add the Debian sources kjv,fortunes to the default list",
         NULL},
        {"no-fetch", OPT_FLAG, &no_fetch,
         "do not run " FETCH_SCRIPT "; use OUT/text/NAME.txt as is", NULL},
        {"quiet", OPT_FLAG, &quiet, "no progress lines", NULL},
    };
    opts_parse(specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "data",
               "Downloads English text (" FETCH_SCRIPT "), tokenizes each document with BOS\n"
               "prepended and writes OUT/train_NNN.bin, OUT/val_NNN.bin and OUT/manifest.json.\n"
               "The validation split is fixed by a hash of each document's text (docs/data.md).");
    if (!out || !*out) loqt_usage_die("data: --out DIR is required");
    if (!(val_fraction >= 0 && val_fraction < 1))
        loqt_usage_die("data: --val-fraction must be in [0, 1)");
    if (val_tokens < 0) loqt_usage_die("data: --val-tokens must be >= 0");
    if (opts_given("val-tokens") && opts_given("val-fraction"))
        loqt_die("data: give --val-fraction or --val-tokens, not both");
    if (shard_tokens < 1) loqt_usage_die("data: --shard-tokens must be >= 1");

    char list[1024];
    snprintf(list, sizeof list, "%s",
             sources  ? sources
             : debian ? DEFAULT_SOURCES "," DEBIAN_SOURCES
                      : DEFAULT_SOURCES);
    char *names[MAX_SOURCES];
    int n_src = split_sources(list, names);

    /* The tokenizer first: a missing one should not cost a download. */
    tokenizer *tok = tokenizer_load(tok_path);
    if (!tok)
        loqt_die("data: %s (make it with: bash scripts/fetch_tokenizer.sh data)",
                 loqt_last_error());
    int vocab = tokenizer_vocab_size(tok);
    if (vocab <= 0 || vocab > 65536)
        loqt_die("data: tokenizer %s has %d pieces; shards hold uint16 ids (at most 65536)",
                 tok_path, vocab);
    size_t tok_len = 0;
    char *tok_bytes = file_read_all(tok_path, (size_t)1 << 30, &tok_len);
    if (!tok_bytes) loqt_die_last("data");
    uint64_t tok_hash = corpus_hash(tok_bytes, tok_len);
    mem_free(tok_bytes);

    if (file_mkdir_p(out) != 0) loqt_die_last("data");
    if (!no_fetch) {
        char script[4200];
        if (find_script(script, sizeof script) != 0)
            loqt_die(
                "data: %s not found; run loqt from the repository root, or use --no-fetch with "
                "%s/text/NAME.txt already in place",
                FETCH_SCRIPT, out);
        run_fetch(script, debian && !sources, out, names, n_src);
    }

    corpus_source src[MAX_SOURCES];
    char paths[MAX_SOURCES][4200];
    for (int i = 0; i < n_src; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/text/%s.txt", out, names[i]);
        if (!is_file(paths[i]))
            loqt_die("data: %s is missing%s", paths[i],
                     no_fetch ? " (run without --no-fetch to download it)" : "");
        src[i] = (corpus_source){names[i], paths[i]};
    }

    corpus_options opt = {
        .val_fraction = val_fraction,
        .val_tokens = (uint64_t)val_tokens,
        .shard_tokens = (uint64_t)shard_tokens,
        .vocab_size = (uint32_t)vocab,
        .encode = encode_doc,
        .encode_ctx = tok,
        .tokenizer_path = tok_path,
        .tokenizer_hash = tok_hash,
        .verbose = !quiet,
    };
    if (!quiet) fprintf(stderr, "loqt data: tokenizing %d source(s) with %s\n", n_src, tok_path);
    corpus_result res;
    if (corpus_build(out, src, n_src, &opt, &res) != 0) loqt_die_last("data");
    tokenizer_free(tok);

    printf("train: %llu documents, %llu tokens in %d shard(s)\n", (unsigned long long)res.docs[0],
           (unsigned long long)res.tokens[0], res.shards[0]);
    printf("val:   %llu documents, %llu tokens in %d shard(s)\n", (unsigned long long)res.docs[1],
           (unsigned long long)res.tokens[1], res.shards[1]);
    printf("wrote %s/manifest.json (checksum %016llx)\n", out, (unsigned long long)res.checksum);
    return 0;
}
