#include "cli/commands.h"

#include "core/error.h"
#include "core/progress.h"
#include "kernels/gemm.h"
#include "core/mem.h"
#include "model/checkpoint.h"
#include "model/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int n_threads = 1;

void cli_set_threads(int threads) {
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (int)c : 1;
    }
    n_threads = threads;
    gemm_set_threads(threads);
}

int cli_threads(void) { return n_threads; }

double cli_now(void) { return loqt_now(); }

void cli_format_duration(double s, char *buf, int cap) {
    if (s < 0 || s != s) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, (size_t)cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, (size_t)cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, (size_t)cap, "%lds", t);
}

uint64_t cli_evaluate(llama_model *m, data_loader *L, uint64_t max_tokens, double *mean_loss) {
    const int B = m->B, T = m->T;
    const uint64_t per = (uint64_t)B * T;
    uint64_t avail = loader_tokens(L) > 0 ? (loader_tokens(L) - 1) / per : 0;
    uint64_t batches = (max_tokens + per - 1) / per;
    if (batches > avail) batches = avail;
    int32_t *in = malloc(sizeof(int32_t) * per), *tg = malloc(sizeof(int32_t) * per);
    uint64_t saved = loader_position(L);
    loader_seek(L, 0);
    double sum = 0;
    for (uint64_t i = 0; i < batches; i++) {
        loader_next_batch(L, B, T, in, tg);
        sum += llama_forward(m, in, tg, 0.0f, NULL) * (double)per;
    }
    loader_seek(L, saved);
    free(in);
    free(tg);
    *mean_loss = batches ? sum / (double)(batches * per) : 0.0;
    return batches * per;
}

void cli_load_checkpoint(llama_model *m, const char *dir, int weights_only) {
    llama_config cfg;
    trainer_meta tm;
    if (checkpoint_read_config(dir, &cfg)) loqt_die_last(NULL);
    char state[4096];
    snprintf(state, sizeof state, "%s/trainer_state.safetensors", dir);
    if (access(state, F_OK) != 0) {
        /* a plain dense LLaMA (from `loqt export` or elsewhere): weights only */
        if (!weights_only) loqt_die("%s: no trainer state in this checkpoint; it cannot be resumed", dir);
        memset(&tm, 0, sizeof tm);
        snprintf(tm.method, sizeof tm.method, "full");
        method_opts_defaults(&tm.mopts);
    } else if (checkpoint_read_meta(dir, &tm)) {
        loqt_die_last(NULL);
    }
    const linear_method *meth = method_find(tm.method);
    if (!meth) loqt_die("%s: checkpoint uses method '%s', which this build does not know", dir, tm.method);
    method_opts mo = tm.mopts;
    if (!tm.method[0] || !strcmp(tm.method, "full")) method_opts_defaults(&mo);
    int ok;
    mo.optimizer = optim_kind_parse(tm.optimizer, &ok);
    if (llama_create(m, &cfg, meth, &mo, tm.seed)) loqt_die_last(dir);
    if (checkpoint_load(m, dir, weights_only)) loqt_die_last(NULL);
}

void cli_method_defaults(cli_method_args *a) {
    method_opts d;
    method_opts_defaults(&d);
    a->rank = d.rank;
    a->lora_alpha = d.lora_alpha;
    a->update_proj_gap = d.update_proj_gap;
    a->proj_gap_progression = gap_progression_name(d.proj_gap_progression);
    a->increment_size = d.increment_size;
    a->max_proj_gap = d.max_proj_gap;
    a->compensate_quant_error_iterations = d.compensate_quant_error_iterations;
    a->quantize_w = "4bit";
    a->quantize_projection_matrix = "4bit";
    a->use_double_quant = 0;
    a->merge_optimizer_state = "reset";
    a->lowrank_dtype = "bf16";
}

void cli_method_specs(cli_method_args *a, opt_spec *o) {
    const opt_spec specs[CLI_METHOD_SPECS] = {
        {"rank", OPT_INT, &a->rank, "low-rank methods: rank r of the trainable factors", NULL},
        {"lora-alpha", OPT_FLOAT, &a->lora_alpha, "LoQT: scale s of the low-rank term W + s*B*P (a plain multiplier, not alpha/r)", NULL},
        {"update-proj-gap", OPT_INT, &a->update_proj_gap, "LoQT: steps between the first merges/refreshes of P", NULL},
        {"proj-gap-progression", OPT_STRING, &a->proj_gap_progression, "LoQT: how the gap grows: static, linear (+increment*i), exponential (+int(increment^i))", "static|linear|exponential"},
        {"increment-size", OPT_FLOAT, &a->increment_size, "LoQT: growth of the gap (psi of the exponential schedule)", NULL},
        {"max-proj-gap", OPT_INT, &a->max_proj_gap, "LoQT: largest gap; 0 = unbounded", NULL},
        {"compensate-quant-error-iterations", OPT_INT, &a->compensate_quant_error_iterations, "LoQT: rounds of quantization-error compensation at each merge (0 = B starts at 0)", NULL},
        {"quantize-w", OPT_STRING, &a->quantize_w, "LoQT: storage of W (none = 16-bit, LoQT-nq)", "4bit|none"},
        {"quantize-projection-matrix", OPT_STRING, &a->quantize_projection_matrix, "LoQT: storage of P", "4bit|none"},
        {"use-double-quant", OPT_FLAG, &a->use_double_quant, "NF4 absmax values stored in 8 bits", NULL},
        {"merge-optimizer-state", OPT_STRING, &a->merge_optimizer_state, "LoQT: B's Adam moments at a merge: reset (default; restarts bias correction) or keep (the reference code)", "reset|keep"},
        {"lowrank-dtype", OPT_STRING, &a->lowrank_dtype, "storage of the trainable factors (bf16 is updated with stochastic rounding)", "bf16|fp32"},
    };
    memcpy(o, specs, sizeof specs);
}

void cli_method_apply(const cli_method_args *a, method_opts *o) {
    if (a->rank <= 0) loqt_die("--rank must be positive");
    if (a->update_proj_gap <= 0) loqt_die("--update-proj-gap must be positive");
    if (a->increment_size < 0 || a->max_proj_gap < 0 || a->compensate_quant_error_iterations < 0)
        loqt_die("--increment-size, --max-proj-gap and --compensate-quant-error-iterations must be >= 0");
    if (a->compensate_quant_error_iterations > 100) loqt_die("--compensate-quant-error-iterations above 100 makes no sense");
    o->rank = a->rank;
    o->lora_alpha = a->lora_alpha;
    o->update_proj_gap = a->update_proj_gap;
    if (gap_progression_parse(a->proj_gap_progression, &o->proj_gap_progression)) loqt_die_last("--proj-gap-progression");
    o->increment_size = a->increment_size;
    o->max_proj_gap = a->max_proj_gap;
    o->compensate_quant_error_iterations = a->compensate_quant_error_iterations;
    o->quantize_w = !strcmp(a->quantize_w, "4bit");
    o->quantize_projection = !strcmp(a->quantize_projection_matrix, "4bit");
    o->use_double_quant = a->use_double_quant;
    o->merge_reset_optimizer = !strcmp(a->merge_optimizer_state, "reset");
    o->lowrank_fp32 = !strcmp(a->lowrank_dtype, "fp32");
}

void cli_check_memory(const plan_input *pin, const char *max_memory) {
    size_t limit = mem_physical();
    if (max_memory && plan_parse_bytes(max_memory, &limit)) loqt_die_last("--max-memory");
    if (!limit) return; /* unknown physical memory and no limit given */
    plan p;
    if (plan_make(&p, pin)) loqt_die_last("memory plan");
    if (plan_check_fits(&p, limit)) loqt_die_last(NULL);
}

void cli_parse_with_method(const opt_spec *specs, int n, cli_method_args *ma, int argc, char **argv,
                           const char *command, const char *summary) {
    opt_spec *all = malloc(sizeof *all * (size_t)(n + CLI_METHOD_SPECS));
    memcpy(all, specs, sizeof *all * (size_t)n);
    cli_method_defaults(ma);
    cli_method_specs(ma, all + n);
    opts_parse(all, n + CLI_METHOD_SPECS, argc, argv, command, summary);
    free(all);
}
