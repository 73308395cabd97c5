/* loqt export: a plain dense LLaMA checkpoint (config.json + model.safetensors, HF names) from a
 * checkpoint of any method, with every linear layer's effective weight materialised. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "model/checkpoint.h"

#include <stdio.h>
#include <unistd.h>

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    const opt_spec specs[] = {
        {"checkpoint", OPT_STRING, &ckpt, "checkpoint directory to read", NULL},
        {"out", OPT_STRING, &out, "directory to write the dense model to", NULL},
    };
    opts_parse(specs, 2, argc, argv, "export",
               "Writes a dense fp32 LLaMA (HF tensor names) that other tools can load.");
    if (!ckpt || !out) loqt_usage_die("export: --checkpoint and --out are required");
    /* a checkpoint directory holds a trainer state: writing a dense model.safetensors there
     * would destroy it (a LoQT checkpoint's model.safetensors holds its NF4 codes) */
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/trainer_state.safetensors", out);
    if (access(probe, F_OK) == 0)
        loqt_usage_die("export: --out %s is a training checkpoint (it has trainer_state.safetensors); write the dense model to another directory", out);
    llama_model m;
    cli_load_checkpoint(&m, ckpt, 1);
    if (llama_export_dense(&m, out)) loqt_die_last("export");
    printf("wrote %s/config.json and %s/model.safetensors\n", out, out);
    llama_free(&m);
    return 0;
}
