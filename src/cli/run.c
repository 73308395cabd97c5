/* The run description shared by train, bench and memory (cli/commands.h): the shared options,
 * the chosen method's own options from its table, and the command's options, in one parse. */
#include "cli/commands.h"

#include "core/choices.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_METHOD_OPTIONS = 64 };

void cli_run_defaults(cli_run *r) {
    memset(r, 0, sizeof *r);
    r->model = "20m";
    r->method = "full";
    r->optimizer = "adamw";
    r->batch_size = 8;
    r->seq_len = 256;
}

/* --method's value, looked for before parsing: it decides which method options exist */
static const char *method_arg(int argc, char **argv, const char *def) {
    const char *v = def;
    for (int i = 0; i < argc; i++) {
        char name[64];
        opts_name_of(argv[i], name, sizeof name);
        if (strcmp(name, "method")) continue;
        const char *eq = strchr(argv[i], '=');
        if (eq) v = eq + 1;
        else if (i + 1 < argc) v = argv[++i];
    }
    return v;
}

static void usage_error(const char *command, const char *msg) {
    fprintf(stderr, "loqt %s: error: %s (see 'loqt %s --help')\n", command, msg, command);
    exit(2);
}

/* An option that belongs to another method is named as such, not as unknown. */
static void check_foreign(const cli_run *r, const opt_spec *specs, int n, int argc, char **argv,
                          const char *command) {
    for (int i = 0; i < argc; i++) {
        char name[64];
        opts_name_of(argv[i], name, sizeof name);
        if (!name[0]) continue;
        int known = !strcmp(name, "help");
        for (int k = 0; k < n && !known; k++) known = !strcmp(specs[k].name, name);
        if (known) continue;
        for (int k = 0; k < method_count(); k++) {
            const linear_method *o = method_at(k);
            if (o == r->m || !method_option_find(o, name)) continue;
            char msg[256];
            snprintf(msg, sizeof msg, "--%s is an option of --method %s, not of --method %s", name,
                     o->name, r->m->name);
            usage_error(command, msg);
        }
    }
}

/* --help: every method's options, grouped by method */
static void print_method_help(void) {
    printf("\nmethods (--method NAME) and their own options:\n");
    for (int k = 0; k < method_count(); k++) {
        const linear_method *m = method_at(k);
        printf("\n  %s: %s\n", m->name, m->summary);
        if (m->run_defaults && m->run_defaults->option) {
            printf("    defaults of this method (given options override them):");
            for (const method_run_default *d = m->run_defaults; d->option; d++) printf(" --%s %s", d->option, d->value);
            printf("\n");
        }
        for (int i = 0; i < m->n_options; i++) {
            const method_option *o = &m->options[i];
            char left[128], def[64], range[128] = "";
            const char *arg = o->type == MOPT_FLAG ? "" : o->type == MOPT_CHOICE ? o->choices : o->type == MOPT_SET ? "LIST" : "VALUE";
            snprintf(left, sizeof left, "--%s %s", o->name, arg);
            if (o->type == MOPT_CHOICE) choice_at(o->choices, (int)o->def, def, sizeof def);
            else if (o->type == MOPT_SET && (unsigned)o->def == choice_all(o->choices)) snprintf(def, sizeof def, "all");
            else if (o->type == MOPT_SET) choice_set_format(o->choices, (unsigned)o->def, def, sizeof def);
            else if (o->type == MOPT_FLAG) snprintf(def, sizeof def, "%s", o->def ? "on" : "off");
            else snprintf(def, sizeof def, "%g", o->def);
            if (o->type == MOPT_INT) snprintf(range, sizeof range, ", range %.0f..%.0f", o->lo, o->hi);
            else if (o->type == MOPT_FLOAT) snprintf(range, sizeof range, ", range %g..%g", o->lo, o->hi);
            else if (o->type == MOPT_SET) snprintf(range, sizeof range, "; LIST: comma-separated names of %s, or all", o->choices);
            printf("    %-40s %s [default: %s%s]\n", left, o->help, def, range);
        }
    }
}

/* The method's defaults for the trainer's options (methods/linear.h run_defaults), before the
 * command line is parsed: what the user gives still wins, and --help shows them. */
static void apply_run_defaults(const linear_method *m, const opt_spec *specs, int n) {
    for (const method_run_default *d = m->run_defaults; d && d->option; d++)
        for (int k = 0; k < n; k++) {
            if (strcmp(specs[k].name, d->option)) continue;
            char err[256];
            if (opts_set_value(&specs[k], d->value, err, sizeof err))
                loqt_die("method %s: bad default for --%s: %s", m->name, d->option, err);
        }
}

static opt_spec method_spec(const method_option *o, int *iv, double *dv) {
    opt_type t = o->type == MOPT_FLOAT ? OPT_FLOAT : o->type == MOPT_FLAG ? OPT_FLAG
               : o->type == MOPT_CHOICE ? OPT_CHOICE : o->type == MOPT_SET ? OPT_SET : OPT_INT;
    return (opt_spec){o->name, t, o->type == MOPT_FLOAT ? (void *)dv : (void *)iv, o->help,
                      o->type == MOPT_CHOICE || o->type == MOPT_SET ? o->choices : NULL};
}

void cli_parse_run(cli_run *r, const opt_spec *extra, int n_extra, int argc, char **argv,
                   const char *command, const char *summary) {
    r->method = method_arg(argc, argv, r->method);
    r->m = method_find(r->method);
    if (!r->m) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown --method '%s' (available: %s)", r->method, method_names());
        usage_error(command, msg);
    }
    method_opts_defaults(&r->mo, r->m);
    const opt_spec shared[] = {
        {"model", OPT_STRING, &r->model, "built-in size (9m 20m 35m 60m 130m 350m 1b 3b 7b 13b) or a JSON config (HF LlamaConfig keys)", NULL},
        {"method", OPT_STRING, &r->method, "how linear layers are stored and trained (each method's own options are listed below)", method_names()},
        {"optimizer", OPT_STRING, &r->optimizer, "optimizer", "adamw|adam8bit"},
        {"batch-size", OPT_INT, &r->batch_size, "sequences per micro-batch", NULL},
        {"total-batch-size", OPT_INT, &r->total_batch_size, "sequences per optimizer step (a multiple of --batch-size; gradients are accumulated); 0 = --batch-size", NULL},
        {"max-length", OPT_INT, &r->seq_len, "tokens per sequence", NULL},
        {"seq-len", OPT_INT, &r->seq_len, "tokens per sequence (the same as --max-length)", NULL},
        {"threads", OPT_INT, &r->threads, "CPU threads; 0 = all cores", NULL},
        {"per-layer-updates", OPT_FLAG, &r->per_layer_updates, "update each layer inside backward as soon as its gradient is complete (accumulation stays exact; no global clipping)", NULL},
        {"activation-checkpointing", OPT_FLAG, &r->activation_checkpointing, "keep only each block's input and recompute the block in backward (less memory, ~1/3 more compute)", NULL},
        {"freeze-dense", OPT_FLAG, &r->freeze_dense, "do not train the embedding, the norms and lm_head (fine-tuning, as QLoRA does): they get no gradient and no optimizer state; only the linear layers' method trains", NULL},
        {"dtype", OPT_CHOICE, &r->dtype, "GEMM precision of forward and backward: fp32, or bf16 (mixed precision as torch.autocast: "
                                          "bf16-rounded operands, fp32 accumulation and output; weights, norms, loss, softmax and optimizer stay fp32)", "fp32|bf16"},
        {"max-memory", OPT_STRING, &r->max_memory, "refuse to start when the planned peak memory exceeds this (e.g. 20GiB); default: the machine's physical memory", NULL},
    };
    const int ns = (int)(sizeof shared / sizeof shared[0]), nm = r->m->n_options;
    if (nm > MAX_METHOD_OPTIONS) loqt_die("method %s declares too many options", r->m->name);
    int iv[MAX_METHOD_OPTIONS];
    double dv[MAX_METHOD_OPTIONS];
    opt_spec *all = malloc(sizeof *all * (size_t)(ns + n_extra + nm));
    memcpy(all, shared, sizeof shared);
    memcpy(all + ns, extra, sizeof *all * (size_t)n_extra);
    for (int i = 0; i < nm; i++) {
        const method_option *o = &r->m->options[i];
        iv[i] = (int)method_option_get(&r->mo, o);
        dv[i] = method_option_get(&r->mo, o);
        all[ns + n_extra + i] = method_spec(o, &iv[i], &dv[i]);
    }
    apply_run_defaults(r->m, all, ns + n_extra + nm);
    check_foreign(r, all, ns + n_extra + nm, argc, argv, command);
    opts_set_help_extra(print_method_help);
    opts_parse(all, ns + n_extra + nm, argc, argv, command, summary);
    free(all);
    for (int i = 0; i < nm; i++) {
        const method_option *o = &r->m->options[i];
        method_option_set(&r->mo, o, o->type == MOPT_FLOAT ? dv[i] : iv[i]);
    }
    if (method_config_validate(r->m, &r->mo)) usage_error(command, loqt_last_error());
    int ok;
    r->mo.optimizer = optim_kind_parse(r->optimizer, &ok);
    r->mo.freeze_dense = r->freeze_dense;
    if (r->batch_size <= 0 || r->seq_len <= 1) usage_error(command, "--batch-size must be >= 1 and --max-length >= 2");
    if (r->threads < 0) usage_error(command, "--threads must be >= 0");
    if (r->total_batch_size == 0) r->total_batch_size = r->batch_size;
    if (r->total_batch_size < r->batch_size || r->total_batch_size % r->batch_size) {
        char msg[160];
        snprintf(msg, sizeof msg, "--total-batch-size %d must be a positive multiple of --batch-size %d",
                 r->total_batch_size, r->batch_size);
        usage_error(command, msg);
    }
    r->accum = r->total_batch_size / r->batch_size;
}

/* A rank beyond a projection's smaller side would be clamped layer by layer while the option,
 * as printed and saved, says otherwise: refused. */
static void check_rank(const cli_run *r, const llama_config *cfg) {
    const method_option *o = method_option_find(r->m, "rank");
    if (!o) return;
    const int rank = (int)method_option_get(&r->mo, o);
    const int d = cfg->hidden_size, F = cfg->intermediate_size, small = d < F ? d : F;
    if (rank > small)
        loqt_usage_die("--rank %d exceeds the smaller side (%d) of the model's projections; the largest rank is %d", rank,
                 small, small);
}

void cli_run_plan_input(const cli_run *r, const llama_config *cfg, long steps, plan_input *pin) {
    check_rank(r, cfg);
    plan_input_defaults(pin, cfg, r->m->name);
    pin->mo = r->mo;
    pin->batch = r->batch_size;
    pin->seq = r->seq_len;
    pin->accum = r->accum;
    pin->steps = steps;
    pin->threads = r->threads;
    pin->per_layer_updates = r->per_layer_updates;
    pin->activation_checkpointing = r->activation_checkpointing;
    pin->dtype = (gemm_dtype)r->dtype;
}
