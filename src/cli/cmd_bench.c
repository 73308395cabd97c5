/* loqt bench: training steps on random tokens, for speed and memory measurements.  The last
 * lines are machine-readable: "step0_s: X", each statistic the method reports ("refresh_s: X",
 * "refreshes: N", ..., also after step 0 alone as "refresh_s_step0: X"), "tokens_per_s: X" and
 * "peak_rss_mib: Y". */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "model/plan.h"
#include "model/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The method's statistics (refresh seconds and count, ...), one machine-readable line each. */
static void print_stats(const llama_model *m, const char *when) {
    method_stats st;
    llama_method_stats(m, &st);
    for (int i = 0; i < st.n; i++) printf("%s%s: %.6g\n", st.s[i].name, when, method_stats_value(&st, i));
}

int cmd_bench(int argc, char **argv) {
    cli_run r;
    cli_run_defaults(&r);
    int steps = 5, warmup = 1;
    long seed = 0;
    const opt_spec specs[] = {
        {"steps", OPT_INT, &steps, "timed steps", NULL},
        {"warmup-steps", OPT_INT, &warmup, "untimed steps first (step 0, a refresh step for the low-rank methods, is among them)", NULL},
        {"seed", OPT_LONG, &seed, "seed for weights and tokens", NULL},
    };
    cli_parse_run(&r, specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "bench",
                  "Times full training steps (forward, backward, optimizer) on random tokens.");
    if (steps <= 0 || warmup < 0) loqt_usage_die("bench: --steps must be positive and --warmup-steps >= 0");
    cli_set_threads(r.threads);
    llama_config cfg;
    if (config_load(&cfg, r.model)) loqt_die_last("--model");
    if (r.seq_len > cfg.max_position_embeddings) loqt_usage_die("--seq-len exceeds max_position_embeddings %d", cfg.max_position_embeddings);
    plan_input pin;
    cli_run_plan_input(&r, &cfg, warmup + steps, &pin);
    cli_check_memory(&pin, r.max_memory, NULL);
    llama_model m;
    if (llama_create(&m, &cfg, r.m, &r.mo, (uint64_t)seed)) loqt_die_last("model");
    m.per_layer_updates = r.per_layer_updates;
    m.checkpoint_activations = r.activation_checkpointing;
    m.dtype = (gemm_dtype)r.dtype;
    llama_set_batch(&m, r.batch_size, r.seq_len);
    const int N = r.batch_size * r.seq_len, accum = r.accum;
    int32_t *in = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    int32_t *tg = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    const int32_t **ins = malloc(sizeof *ins * accum), **tgs = malloc(sizeof *tgs * accum);
    for (int i = 0; i < accum; i++) {
        ins[i] = in + (size_t)i * N;
        tgs[i] = tg + (size_t)i * N;
    }
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.kind = SCHED_CONSTANT;
    h.optimizer = r.mo.optimizer;
    char bf16[256] = "";
    if (m.dtype == GEMM_BF16) {
        gemm_bf16_describe(bf16 + 13, sizeof bf16 - 13);
        memcpy(bf16, ", bf16 GEMM: ", 13);
    }
    printf("bench: model %s (%.1fM params), method %s, optimizer %s, batch %d x %d x %d, %d threads, gemm %s (%s)%s\n",
           cfg.name, config_params_total(&cfg) / 1e6, r.m->name, r.optimizer, accum, r.batch_size, r.seq_len,
           cli_threads(), gemm_backend(), gemm_kernels(), bf16);
    double timed = 0, step0 = 0;
    for (int s = 0; s < warmup + steps; s++) {
        for (int i = 0; i < N * accum; i++) {
            in[i] = (int32_t)(rng_u64((uint64_t)seed, 7, (uint64_t)s * N * accum + i) % (uint64_t)cfg.vocab_size);
            tg[i] = (int32_t)(rng_u64((uint64_t)seed, 8, (uint64_t)s * N * accum + i) % (uint64_t)cfg.vocab_size);
        }
        double t0 = cli_now();
        step_result res;
        if (train_step(&m, s, ins, tgs, accum, &h, &res)) loqt_die_last(NULL);
        double dt = cli_now() - t0;
        if (s >= warmup) timed += dt;
        if (s == 0) {
            step0 = dt;
            /* step 0 is a refresh step for the low-rank methods (P from the first gradient):
             * what the method measured of it, on its own lines */
            print_stats(&m, "_step0");
        }
        printf("step %d%s: loss %.4f, %.3f s, %.0f tokens/s\n", s + 1, s < warmup ? " (warmup)" : "",
               res.loss, dt, (double)N * accum / dt);
        fflush(stdout);
    }
    mem_report(stdout);
    printf("step0_s: %.3f\n", step0);
    print_stats(&m, "");
    printf("tokens_per_s: %.1f\n", (double)N * accum * steps / timed);
    printf("peak_rss_mib: %.1f\n", mem_peak_rss() / 1048576.0);
    mem_free(in);
    mem_free(tg);
    free(ins);
    free(tgs);
    llama_free(&m);
    return 0;
}
