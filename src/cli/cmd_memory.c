/* loqt memory: the memory a training run will need, from its options alone (model/plan.h), and
 * a refusal (exit 1) when it exceeds --max-memory. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "data/shard.h"
#include "model/plan.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *SUMMARY =
    "Prints the memory a training run will need, by category (as 'loqt train' and 'loqt bench'\n"
    "report it), without allocating anything: the peak of each category, the accounted peak, an\n"
    "estimate of the memory outside the accounting (program, libraries, thread buffers) and the\n"
    "total. Exits 1 with one error line when the total exceeds --max-memory.";

/* tokens in the shards "<split>_<digits>.bin" of dir, and in the largest one */
static int scan_split(const char *dir, const char *split, plan_split *out) {
    DIR *d = opendir(dir);
    if (!d) return loqt_set_error("%s: cannot open data directory", dir);
    memset(out, 0, sizeof *out);
    const size_t k = strlen(split);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name, *p = nm + k + 1, *e = p;
        if (strncmp(nm, split, k) != 0 || nm[k] != '_') continue;
        while (*e >= '0' && *e <= '9') e++;
        if (e == p || strcmp(e, ".bin") != 0) continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        if (stat(path, &st) != 0 || st.st_size <= SHARD_HEADER_BYTES) continue;
        uint64_t n = ((uint64_t)st.st_size - SHARD_HEADER_BYTES) / 2;
        out->tokens += n;
        if (n > out->max_shard) out->max_shard = n;
    }
    closedir(d);
    if (!out->tokens) return loqt_set_error("%s: no %s_NNN.bin shards", dir, split);
    return 0;
}

int cmd_memory(int argc, char **argv) {
    const char *model = "20m", *method = "full", *optimizer = "adamw", *max_memory = NULL;
    const char *data = NULL;
    int batch = 8, seq = 256, max_length = 256, total_batch = 0, threads = 0;
    int per_layer = 0, ckpt = 0, save_original = 0;
    long steps = 1000;
    const opt_spec specs[] = {
        {"model", OPT_STRING, &model, "built-in size (9m 20m 35m 60m 130m 350m 1b 3b 7b 13b) or a JSON config", NULL},
        {"method", OPT_STRING, &method, "how linear layers are stored and trained", "full|loqt"},
        {"optimizer", OPT_STRING, &optimizer, "optimizer", "adamw|adam8bit"},
        {"batch-size", OPT_INT, &batch, "sequences per micro-batch", NULL},
        {"seq-len", OPT_INT, &seq, "tokens per sequence", NULL},
        {"max-length", OPT_INT, &max_length, "tokens per sequence (as 'loqt train' names it)", NULL},
        {"total-batch-size", OPT_INT, &total_batch, "sequences per optimizer step (a multiple of --batch-size); 0 = --batch-size", NULL},
        {"num-training-steps", OPT_LONG, &steps, "optimizer steps of the run (LoQT: whether a refresh comes after the optimizer state exists)", NULL},
        {"per-layer-updates", OPT_FLAG, &per_layer, "update each layer inside backward (gradients freed per layer without accumulation)", NULL},
        {"activation-checkpointing", OPT_FLAG, &ckpt, "keep only each block's input; recompute the block in backward", NULL},
        {"save-original-model", OPT_FLAG, &save_original, "include the dense export at the end of training", NULL},
        {"data", OPT_STRING, &data, "directory of token shards: include the loader's copy of the train and val splits (default: not counted)", NULL},
        {"threads", OPT_INT, &threads, "CPU threads; 0 = all cores", NULL},
        {"max-memory", OPT_STRING, &max_memory, "limit, e.g. 20GiB or 24000MiB; default: the machine's physical memory", NULL},
    };
    cli_method_args ma;
    cli_parse_with_method(specs, (int)(sizeof specs / sizeof specs[0]), &ma, argc, argv, "memory", SUMMARY);

    if (opts_given("max-length")) {
        if (opts_given("seq-len") && seq != max_length) loqt_die("--seq-len %d and --max-length %d disagree", seq, max_length);
        seq = max_length;
    }
    if (batch <= 0 || seq <= 1) loqt_die("--batch-size must be >= 1 and --seq-len >= 2");
    if (total_batch == 0) total_batch = batch;
    if (total_batch < batch || total_batch % batch)
        loqt_die("--total-batch-size %d must be a positive multiple of --batch-size %d", total_batch, batch);
    if (steps <= 0) loqt_die("--num-training-steps must be positive");
    if (threads < 0) loqt_die("--threads must be >= 0");

    llama_config cfg;
    if (config_load(&cfg, model)) loqt_die_last("--model");
    if (!method_find(method)) loqt_die("unknown --method '%s' (available: %s)", method, method_names());
    plan_input in;
    plan_input_defaults(&in, &cfg, method);
    cli_method_apply(&ma, &in.mo);
    int ok;
    in.mo.optimizer = optim_kind_parse(optimizer, &ok);
    if (!ok) loqt_die("unknown --optimizer '%s' (adamw, adam8bit)", optimizer);
    in.batch = batch;
    in.seq = seq;
    in.accum = total_batch / batch;
    in.steps = steps;
    in.threads = threads;
    in.per_layer_updates = per_layer;
    in.activation_checkpointing = ckpt;
    in.save_original_model = save_original;
    if (data && (scan_split(data, "train", &in.train) || scan_split(data, "val", &in.val)))
        loqt_die_last("--data");

    size_t limit = mem_physical();
    if (max_memory && plan_parse_bytes(max_memory, &limit)) loqt_die_last("--max-memory");

    plan p;
    if (plan_make(&p, &in)) loqt_die_last(NULL);
    plan_print(&p, stdout);
    if (limit && plan_check_fits(&p, limit)) loqt_die_last(NULL);
    return 0;
}
