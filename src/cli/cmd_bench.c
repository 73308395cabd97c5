/* loqt bench: training steps on random tokens, for speed and memory measurements.  The last
 * lines are machine-readable: "step0_s: X", for LoQT "refresh_s: X" (the step-0 refresh alone),
 * "tokens_per_s: X" and "peak_rss_mib: Y". */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "methods/loqt.h"
#include "model/plan.h"
#include "model/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_bench(int argc, char **argv) {
    const char *model = "20m", *method = "full", *optimizer = "adamw", *max_memory = NULL;
    int batch = 8, T = 256, steps = 5, warmup = 1, threads = 0, per_layer = 0, ckpt = 0;
    long seed = 0;
    const opt_spec specs[] = {
        {"model", OPT_STRING, &model, "built-in size or JSON config", NULL},
        {"method", OPT_STRING, &method, "training method", "full|loqt"},
        {"optimizer", OPT_STRING, &optimizer, "optimizer", "adamw|adam8bit"},
        {"batch-size", OPT_INT, &batch, "sequences per step", NULL},
        {"seq-len", OPT_INT, &T, "tokens per sequence", NULL},
        {"steps", OPT_INT, &steps, "timed steps", NULL},
        {"warmup-steps", OPT_INT, &warmup, "untimed steps first", NULL},
        {"threads", OPT_INT, &threads, "CPU threads; 0 = all cores", NULL},
        {"seed", OPT_LONG, &seed, "seed for weights and tokens", NULL},
        {"per-layer-updates", OPT_FLAG, &per_layer, "update each layer inside backward", NULL},
        {"activation-checkpointing", OPT_FLAG, &ckpt, "recompute block activations in backward", NULL},
        {"max-memory", OPT_STRING, &max_memory, "refuse to start when the planned peak exceeds this (e.g. 20GiB); default: physical memory", NULL},
    };
    cli_method_args ma;
    cli_parse_with_method(specs, (int)(sizeof specs / sizeof specs[0]), &ma, argc, argv, "bench",
               "Times full training steps (forward, backward, optimizer) on random tokens.");
    if (batch <= 0 || T <= 1 || steps <= 0 || warmup < 0) loqt_die("bench: sizes and steps must be positive");
    cli_set_threads(threads);
    llama_config cfg;
    if (config_load(&cfg, model)) loqt_die_last("--model");
    if (T > cfg.max_position_embeddings) loqt_die("--seq-len exceeds max_position_embeddings %d", cfg.max_position_embeddings);
    const linear_method *meth = method_find(method);
    if (!meth) loqt_die("unknown --method '%s'", method);
    method_opts mo;
    method_opts_defaults(&mo);
    cli_method_apply(&ma, &mo);
    int ok;
    mo.optimizer = optim_kind_parse(optimizer, &ok);
    plan_input pin;
    plan_input_defaults(&pin, &cfg, meth->name);
    pin.mo = mo;
    pin.batch = batch;
    pin.seq = T;
    pin.steps = warmup + steps;
    pin.threads = cli_threads();
    pin.per_layer_updates = per_layer;
    pin.activation_checkpointing = ckpt;
    cli_check_memory(&pin, max_memory);
    llama_model m;
    if (llama_create(&m, &cfg, meth, &mo, (uint64_t)seed)) loqt_die_last("model");
    m.per_layer_updates = per_layer;
    m.checkpoint_activations = ckpt;
    llama_set_batch(&m, batch, T);
    const int N = batch * T;
    int32_t *in = mem_alloc(MEM_DATA, sizeof(int32_t) * N), *tg = mem_alloc(MEM_DATA, sizeof(int32_t) * N);
    const int32_t *ins[1] = {in}, *tgs[1] = {tg};
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.kind = SCHED_CONSTANT;
    h.optimizer = mo.optimizer;
    printf("bench: model %s (%.1fM params), method %s, optimizer %s, batch %d x %d, %d threads, gemm %s (%s)\n",
           cfg.name, config_params_total(&cfg) / 1e6, meth->name, optimizer, batch, T, cli_threads(), gemm_backend(), loqt_blas_kernels());
    double timed = 0, step0 = 0, refresh0 = 0;
    const int is_loqt = !strcmp(meth->name, "loqt");
    for (int s = 0; s < warmup + steps; s++) {
        for (int i = 0; i < N; i++) {
            in[i] = (int32_t)(rng_u64((uint64_t)seed, 7, (uint64_t)s * N + i) % (uint64_t)cfg.vocab_size);
            tg[i] = (int32_t)(rng_u64((uint64_t)seed, 8, (uint64_t)s * N + i) % (uint64_t)cfg.vocab_size);
        }
        double t0 = cli_now();
        /* step 0 is a refresh step for the low-rank methods (P from the first gradient): it runs
         * among the warmup steps, and its time is reported on its own line */
        step_result r = train_step(&m, s, ins, tgs, 1, &h);
        double dt = cli_now() - t0;
        if (s >= warmup) timed += dt;
        if (s == 0) {
            step0 = dt;
            if (is_loqt) refresh0 = loqt_refresh_seconds();
        }
        printf("step %d%s: loss %.4f, %.3f s, %.0f tokens/s\n", s + 1, s < warmup ? " (warmup)" : "",
               r.loss, dt, N / dt);
        fflush(stdout);
    }
    mem_report(stdout);
    printf("step0_s: %.3f\n", step0);
    /* the step-0 refresh (merge, SVD of every layer's gradient, re-quantization) alone */
    if (is_loqt) printf("refresh_s: %.3f\n", refresh0);
    printf("tokens_per_s: %.1f\n", (double)N * steps / timed);
    printf("peak_rss_mib: %.1f\n", mem_peak_rss() / 1048576.0);
    mem_free(in);
    mem_free(tg);
    llama_free(&m);
    return 0;
}
