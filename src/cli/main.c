/* loqt: train LLaMA-style models in little memory. */
#include "cli/commands.h"
#include "kernels/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Debian's OpenBLAS 0.3.21 does not recognise recent AMD cores and falls back to its AVX2
 * ("Haswell") kernels, and some machine images pin OPENBLAS_CORETYPE=Haswell; on a CPU with
 * AVX-512 its "SkylakeX" kernels are about twice as fast for our shapes.  The kernel set is chosen
 * when the library loads, so when the CPU has AVX-512 and the variable is unset or names an AVX2
 * or older set, we set it and re-execute ourselves once.  LOQT_BLAS_CORETYPE=keep leaves
 * OPENBLAS_CORETYPE alone; LOQT_BLAS_CORETYPE=NAME forces NAME. */
static const char *blas_kernel_note = "";

static void choose_blas_kernels(char **argv) {
#if defined(LOQT_OPENBLAS) && (defined(__x86_64__) || defined(__i386__))
    if (getenv("LOQT_REEXECED")) {
        blas_kernel_note = getenv("OPENBLAS_CORETYPE");
        return;
    }
    const char *want = getenv("LOQT_BLAS_CORETYPE"), *have = getenv("OPENBLAS_CORETYPE");
    blas_kernel_note = have ? have : "";
    if (want && !strcmp(want, "keep")) return;
    if (!want) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
            !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
            return;
        static const char *older[] = {"Haswell", "Zen", "Sandybridge", "Nehalem", "Core2",
                                      "Prescott", "Barcelona", "Bulldozer", "Piledriver",
                                      "Steamroller", "Excavator", "Atom"};
        int replace = !have || !*have;
        for (size_t i = 0; have && i < sizeof older / sizeof older[0]; i++)
            if (!strcasecmp(have, older[i])) replace = 1;
        if (!replace) return;
        want = "SkylakeX";
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("LOQT_REEXECED", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("LOQT_REEXECED"); /* exec failed: carry on with the kernels already loaded */
#else
    (void)argv;
#endif
}

const char *loqt_blas_kernels(void) { return blas_kernel_note && *blas_kernel_note ? blas_kernel_note : "default"; }

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
            "  finetune   LoRA / QLoRA fine-tuning of a pretrained model (Hugging Face layout), PEFT adapters\n"
            "  compare    train several methods on the same tokens and report them side by side\n"
            "  memory     plan a training run's memory without allocating (peak by category, total)\n"
            "  tokenize   text to token ids, or ids to text (--decode)\n"
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
    if (!strcmp(c, "compare")) return cmd_compare(n, a);
    if (!strcmp(c, "finetune")) return cmd_finetune(n, a);
    if (!strcmp(c, "data")) return cmd_data(n, a);
    if (!strcmp(c, "export")) return cmd_export(n, a);
    if (!strcmp(c, "memory")) return cmd_memory(n, a);
    if (!strcmp(c, "tokenize")) return cmd_tokenize(n, a);
    if (!strcmp(c, "version") || !strcmp(c, "--version")) {
        printf("loqt 0.1.0 (gemm: %s, kernels: %s)\n", gemm_backend(), loqt_blas_kernels());
        return 0;
    }
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "loqt: error: unknown command '%s' (see 'loqt --help')\n", c);
    return 2;
}
