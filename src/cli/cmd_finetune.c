/* loqt finetune: LoRA / QLoRA fine-tuning of a pretrained model.  A thin command over train: its
 * options are mapped onto train's (--checkpoint onto --init-from, --lora-r onto --rank, --method
 * lora and --freeze-dense added, the base in NF4 unless --base-bits says otherwise), so the
 * training loop, checkpoints, resume and memory plan are train's own. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "model/peft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *SUMMARY =
    "Fine-tunes a pretrained LLaMA (a Hugging Face directory, an export or a full-rank checkpoint) with\n"
    "LoRA adapters on its projections (--target-modules) while the base stays frozen (NF4 by default: QLoRA) and the\n"
    "embedding, norms and lm_head stay frozen too. It runs 'loqt train --init-from DIR --method lora\n"
    "--freeze-dense' with the options below; every other option of 'loqt train' (--data, --lr,\n"
    "--num-training-steps, --output-dir, --resume, ...) and of --method lora (--lora-alpha, --rslora,\n"
    "--lora-dropout, --target-modules, --init zero|loftq|quailora|quailora-closed, --loftq-iterations,\n"
    "--calibration-sequences, --quailora-iterations, ...) is passed on. --init quailora calibrates the\n"
    "adapters on --calibration-sequences sequences of the training data run through the dense model.\n"
    "Write the adapters for PEFT with 'loqt export --format peft'.";

static void usage(void) {
    printf("usage: loqt finetune --checkpoint DIR --data DIR [options]\n\n%s\n\noptions of finetune:\n", SUMMARY);
    printf("  --checkpoint DIR        the pretrained model (train's --init-from)\n"
           "  --base-bits 4|8|16|32   storage of the frozen base: NF4 (QLoRA), int8, bf16 or fp32 [default: 4]\n"
           "  --lora-r R              rank of the adapters (train's --rank) [default: 8]\n"
           "  --target-modules LIST   the projections with adapters, of q_proj,k_proj,v_proj,o_proj,gate_proj,\n"
           "                          up_proj,down_proj (e.g. q_proj,v_proj); the others stay frozen [default: all]\n"
           "  --adapter DIR           start from a PEFT adapter (continue a fine-tune) instead of --init\n"
           "\nSee 'loqt train --help' for the rest.\n");
    exit(0);
}

/* the value of option `name` in argv (NULL if absent), "--name v" or "--name=v" */
static const char *value_of(int argc, char **argv, const char *name, int *index) {
    for (int i = 0; i < argc; i++) {
        char n[64];
        opts_name_of(argv[i], n, sizeof n);
        if (strcmp(n, name)) continue;
        const char *eq = strchr(argv[i], '=');
        if (index) *index = i;
        return eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : "";
    }
    return NULL;
}

int cmd_finetune(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) usage();
    static const char *refused[][2] = {
        {"method", "finetune trains LoRA adapters (--method lora); use 'loqt train --init-from DIR' for other methods"},
        {"init-from", "finetune takes the pretrained model as --checkpoint DIR"},
        {"model", "the model is the one in --checkpoint DIR/config.json"},
    };
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++)
        if (value_of(argc, argv, refused[k][0], NULL)) loqt_usage_die("finetune: --%s: %s", refused[k][0], refused[k][1]);
    if (value_of(argc, argv, "lora-r", NULL) && value_of(argc, argv, "rank", NULL))
        loqt_usage_die("finetune: give the rank once, as --lora-r (or train's --rank)");
    const char *ckpt = value_of(argc, argv, "checkpoint", NULL);
    if (!ckpt || !*ckpt) loqt_usage_die("finetune: --checkpoint DIR (the pretrained model) is required");
    /* train's argv: the mapped options first, then everything else as given */
    char **t = calloc((size_t)argc + 10, sizeof *t);
    int n = 0;
    t[n++] = "--method";
    t[n++] = "lora";
    t[n++] = "--freeze-dense";
    /* finetune's defaults; a resumed run takes its options from the checkpoint */
    const int resume = value_of(argc, argv, "resume", NULL) != NULL;
    if (!resume && !value_of(argc, argv, "base-bits", NULL)) {
        t[n++] = "--base-bits";
        t[n++] = "4";
    }
    if (!resume && !value_of(argc, argv, "lora-r", NULL) && !value_of(argc, argv, "rank", NULL)) {
        t[n++] = "--rank";
        t[n++] = "8";
    }
    for (int i = 0; i < argc; i++) {
        char name[64];
        opts_name_of(argv[i], name, sizeof name);
        const int has_value = name[0] && !strchr(argv[i], '=') && i + 1 < argc;
        if (!strcmp(name, "checkpoint") || !strcmp(name, "lora-r")) {
            static char buf[2][4200];
            const int k = !strcmp(name, "lora-r");
            snprintf(buf[k], sizeof buf[k], "--%s=%s", k ? "rank" : "init-from", value_of(argc - i, argv + i, name, NULL));
            t[n++] = buf[k];
            i += has_value;
        } else {
            t[n++] = argv[i];
        }
    }
    const int rc = cmd_train_as("finetune", n, t);
    free(t);
    return rc;
}
