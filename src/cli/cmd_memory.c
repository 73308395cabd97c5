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
    cli_run r;
    cli_run_defaults(&r);
    const char *data = NULL;
    int save_original = 0;
    long steps = 1000;
    int ranks = 1, zero = 0;
    const opt_spec specs[] = {
        {"ranks", OPT_INT, &ranks, "data-parallel ranks (mpirun -np N): the plan of one rank, whose share of --total-batch-size is 1/N", NULL},
        {"zero", OPT_INT, &zero, "1: the optimizer state sharded across the ranks (train --zero 1); the plan shows the rank that needs the most", NULL},
        {"num-training-steps", OPT_LONG, &steps, "optimizer steps of the run (whether a refresh comes after the optimizer state exists)", NULL},
        {"save-original-model", OPT_FLAG, &save_original, "include the dense export at the end of training", NULL},
        {"data", OPT_STRING, &data, "directory of token shards: include the loader's copy of the train and val splits (default: not counted)", NULL},
    };
    cli_parse_run(&r, specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "memory", SUMMARY);
    if (steps <= 0) loqt_usage_die("--num-training-steps must be positive");
    if (ranks < 1 || ranks > 65536) loqt_usage_die("--ranks must be in [1, 65536]");
    if (zero != 0 && zero != 1) loqt_usage_die("--zero must be 0 or 1");
    if (r.accum % ranks)
        loqt_usage_die("with %d ranks, --total-batch-size %d must be a multiple of --batch-size %d x %d ranks", ranks,
                       r.total_batch_size, r.batch_size, ranks);

    llama_config cfg;
    if (config_load(&cfg, r.model)) loqt_die_last("--model");
    plan_input in;
    cli_run_plan_input(&r, &cfg, steps, &in);
    in.save_original_model = save_original;
    in.ranks = ranks;
    in.zero = zero;
    if (data && (scan_split(data, "train", &in.train) || scan_split(data, "val", &in.val)))
        loqt_die_last("--data");

    size_t limit = mem_physical();
    if (r.max_memory && plan_parse_bytes(r.max_memory, &limit)) loqt_usage_die("--max-memory: %s", loqt_last_error());

    plan p;
    if (plan_make(&p, &in)) loqt_die_last(NULL);
    plan_print(&p, stdout);
    if (limit && plan_check_fits(&p, limit)) loqt_die_last(NULL);
    return 0;
}
