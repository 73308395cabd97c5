/* loqt: train LLaMA-style models in little memory. */
#include "cli/commands.h"
#include "kernels/gemm.h"
#include "kernels/openblas_kernels.h"

#include <stdio.h>
#include <string.h>

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
#ifdef LOQT_OPENBLAS
    /* only OpenBLAS needs its kernel set chosen for it (and only before it loads): oneDNN
     * dispatches on the CPU by itself */
    openblas_choose_kernels(argv);
#endif
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
        char bf16[200];
        gemm_bf16_describe(bf16, sizeof bf16);
        printf("loqt 0.1.0 (gemm: %s, kernels: %s; bf16 GEMM: %s)\n", gemm_backend(), gemm_kernels(), bf16);
        return 0;
    }
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "loqt: error: unknown command '%s' (see 'loqt --help')\n", c);
    return 2;
}
