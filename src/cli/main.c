/* loqt: train LLaMA-style models in little memory. */
#include "cli/commands.h"
#include "kernels/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Debian's OpenBLAS 0.3.21 does not recognise recent AMD cores and falls back to its AVX2
 * (Haswell) kernels, about half the speed of its AVX-512 ones on a CPU that has AVX-512.  The
 * kernel set is chosen when the library loads, from OPENBLAS_CORETYPE, so when the variable is
 * unset and the CPU has AVX-512 we set it and re-execute ourselves once.  A user's own setting is
 * always respected. */
static void choose_blas_kernels(char **argv) {
#if defined(LOQT_OPENBLAS) && (defined(__x86_64__) || defined(__i386__))
    if (getenv("OPENBLAS_CORETYPE") || getenv("LOQT_NO_REEXEC")) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    setenv("LOQT_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default kernels */
#else
    (void)argv;
#endif
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: loqt COMMAND [options]   (loqt COMMAND --help for a command's options)\n\n"
            "commands:\n"
            "  train      train a model (full-rank or a low-memory method) on a token corpus\n"
            "  eval       held-out perplexity of a checkpoint\n"
            "  generate   sample text from a checkpoint\n"
            "  bench      time training steps on random tokens (tokens/s, peak memory)\n"
            "  data       fetch real English text and tokenize it into shards\n"
            "  export     write a plain dense LLaMA checkpoint from any checkpoint\n"
            "  version    print version and build information\n");
}

int main(int argc, char **argv) {
    choose_blas_kernels(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    int n = argc - 2;
    char **a = argv + 2;
    if (!strcmp(c, "train")) return cmd_train(n, a);
    if (!strcmp(c, "eval")) return cmd_eval(n, a);
    if (!strcmp(c, "generate")) return cmd_generate(n, a);
    if (!strcmp(c, "bench")) return cmd_bench(n, a);
    if (!strcmp(c, "data")) return cmd_data(n, a);
    if (!strcmp(c, "export")) return cmd_export(n, a);
    if (!strcmp(c, "version") || !strcmp(c, "--version")) {
        printf("loqt 0.1.0 (gemm: %s)\n", gemm_backend());
        return 0;
    }
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "loqt: error: unknown command '%s'\n", c);
    usage(stderr);
    return 2;
}
