/* loqt train: the training loop with progress display, JSONL metrics, evaluation and atomic
 * checkpoints that a later run can resume bit for bit. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "kernels/gemm.h"
#include "model/checkpoint.h"
#include "model/plan.h"
#include "model/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *model, *data, *method, *optimizer, *scheduler, *output_dir, *resume, *max_memory;
    int batch_size, total_batch_size, max_length, threads, eval_every, save_every, log_every;
    int save_original_model, per_layer_updates, activation_checkpointing;
    long num_training_steps, warmup_steps, num_eval_tokens, seed;
    double lr, min_lr_ratio, grad_clipping, weight_decay, beta1, beta2, adam_eps;
} train_args;

static const char *SUMMARY =
    "Trains a LLaMA model on token shards made by 'loqt data'. Prints one progress line per step\n"
    "(step, loss, lr, tokens/s, ETA, memory), appends metrics to OUTPUT_DIR/metrics.jsonl, evaluates\n"
    "held-out perplexity every --eval-every steps, and writes checkpoints to\n"
    "OUTPUT_DIR/checkpoints/step-N every --save-every steps and at the end.";

static FILE *open_metrics(const char *dir, int append) {
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) loqt_die("cannot open %s for writing", path);
    return f;
}

/* On resume, drop the metrics lines written after the checkpoint (by the interrupted run), so the
 * log holds each step once. */
static void trim_metrics(const char *dir, long step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    size_t len = 0;
    char *text = file_read_all(path, (size_t)1 << 30, &len);
    if (!text) return; /* no log yet */
    char *out = malloc(len + 1);
    size_t o = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        json_value *v = json_parse(line, n);
        long long st = 0;
        int keep = v && v->type == JSON_OBJECT && !json_get(v, "final") &&
                   json_get_int(v, "step", &st) == 0 && st <= step;
        json_free(v);
        if (keep) {
            memcpy(out + o, line, n);
            out[o + n] = '\n';
            o += n + 1;
        }
        line += n + 1;
    }
    if (file_write_atomic(path, out, o)) loqt_die_last("metrics log");
    free(out);
    mem_free(text);
}

static void save_checkpoint(const llama_model *m, const char *out, long step, uint64_t tokens,
                            uint64_t pos, const train_args *a, double loss) {
    trainer_meta tm = {.step = step, .tokens_seen = tokens, .data_position = pos,
                       .seed = (uint64_t)a->seed, .loss = loss};
    snprintf(tm.method, sizeof tm.method, "%s", m->method->name);
    snprintf(tm.optimizer, sizeof tm.optimizer, "%s", a->optimizer);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints/step-%08ld", out, step);
    double t0 = cli_now();
    if (checkpoint_save(m, &tm, dir)) loqt_die_last("saving checkpoint");
    printf("saved checkpoint %s (%.1f s)\n", dir, cli_now() - t0);
}

static double do_eval(llama_model *m, data_loader *val, long max_tokens, FILE *metrics, long step,
                      uint64_t tokens) {
    double loss = 0, t0 = cli_now();
    uint64_t n = cli_evaluate(m, val, (uint64_t)max_tokens, &loss);
    if (!n) {
        printf("eval: the validation split is too small for one batch; skipped\n");
        return NAN;
    }
    printf("eval step %ld: loss %.4f, perplexity %.3f over %llu tokens (%.1f s)\n", step, loss,
           exp(loss), (unsigned long long)n, cli_now() - t0);
    fprintf(metrics,
            "{\"step\": %ld, \"tokens\": %llu, \"eval_loss\": %.6f, \"eval_ppl\": %.4f, "
            "\"eval_tokens\": %llu}\n",
            step, (unsigned long long)tokens, loss, exp(loss), (unsigned long long)n);
    fflush(metrics);
    return loss;
}

int cmd_train(int argc, char **argv) {
    train_args a = {
        .model = "20m", .data = "data/corpus", .method = "full", .optimizer = "adamw",
        .scheduler = "cosine", .output_dir = NULL, .resume = NULL,
        .batch_size = 8, .total_batch_size = 0, .max_length = 256, .threads = 0,
        .eval_every = 0, .save_every = 0, .log_every = 1,
        .num_training_steps = 1000, .warmup_steps = -1, .num_eval_tokens = 100000, .seed = 0,
        .lr = 1e-3, .min_lr_ratio = 0.1, .grad_clipping = 0.0, .weight_decay = 0.0,
        .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-6,
    };
    const opt_spec specs[] = {
        {"model", OPT_STRING, &a.model, "built-in size (9m 20m 35m 60m 130m 350m 1b 3b 7b 13b) or a JSON config (HF LlamaConfig keys)", NULL},
        {"data", OPT_STRING, &a.data, "directory of token shards (train_*.bin, val_*.bin) from 'loqt data'", NULL},
        {"method", OPT_STRING, &a.method, "how linear layers are stored and trained", "full|loqt"},
        {"optimizer", OPT_STRING, &a.optimizer, "optimizer", "adamw|adam8bit"},
        {"num-training-steps", OPT_LONG, &a.num_training_steps, "optimizer steps to train (total, including resumed ones)", NULL},
        {"batch-size", OPT_INT, &a.batch_size, "sequences per micro-batch", NULL},
        {"total-batch-size", OPT_INT, &a.total_batch_size, "sequences per optimizer step (a multiple of --batch-size; gradients are accumulated); 0 = --batch-size", NULL},
        {"max-length", OPT_INT, &a.max_length, "tokens per sequence", NULL},
        {"lr", OPT_FLOAT, &a.lr, "peak learning rate", NULL},
        {"scheduler", OPT_STRING, &a.scheduler, "learning-rate schedule after the linear warmup", "cosine|linear|constant"},
        {"warmup-steps", OPT_LONG, &a.warmup_steps, "linear warmup steps; -1 = 10% of --num-training-steps", NULL},
        {"min-lr-ratio", OPT_FLOAT, &a.min_lr_ratio, "final learning rate as a fraction of the peak", NULL},
        {"grad-clipping", OPT_FLOAT, &a.grad_clipping, "clip the global gradient norm to this value; 0 = off", NULL},
        {"weight-decay", OPT_FLOAT, &a.weight_decay, "decoupled weight decay (AdamW)", NULL},
        {"beta1", OPT_FLOAT, &a.beta1, "Adam beta1", NULL},
        {"beta2", OPT_FLOAT, &a.beta2, "Adam beta2", NULL},
        {"adam-eps", OPT_FLOAT, &a.adam_eps, "Adam epsilon", NULL},
        {"eval-every", OPT_INT, &a.eval_every, "evaluate held-out perplexity every N steps (and at the end); 0 = only at the end", NULL},
        {"num-eval-tokens", OPT_LONG, &a.num_eval_tokens, "validation tokens per evaluation", NULL},
        {"save-every", OPT_INT, &a.save_every, "write a checkpoint every N steps (and at the end); 0 = only at the end", NULL},
        {"log-every", OPT_INT, &a.log_every, "write a metrics line every N steps", NULL},
        {"output-dir", OPT_STRING, &a.output_dir, "run directory for metrics.jsonl and checkpoints/; default runs/MODEL-METHOD", NULL},
        {"resume", OPT_STRING, &a.resume, "continue from a checkpoint directory, or 'latest' in --output-dir", NULL},
        {"seed", OPT_LONG, &a.seed, "seed of the initialization (the data order is fixed)", NULL},
        {"threads", OPT_INT, &a.threads, "CPU threads; 0 = all cores", NULL},
        {"per-layer-updates", OPT_FLAG, &a.per_layer_updates, "update each layer inside backward as soon as its gradient is complete (accumulation stays exact; no global clipping)", NULL},
        {"activation-checkpointing", OPT_FLAG, &a.activation_checkpointing, "keep only each block's input and recompute the block in backward (less memory, ~1/3 more compute)", NULL},
        {"max-memory", OPT_STRING, &a.max_memory, "refuse to start when the planned peak memory exceeds this (e.g. 20GiB); default: the machine's physical memory", NULL},
        {"save-original-model", OPT_FLAG, &a.save_original_model, "at the end also write a plain dense LLaMA (W_eff merged) to OUTPUT_DIR/original_model", NULL},
    };
    cli_method_args ma;
    cli_parse_with_method(specs, (int)(sizeof specs / sizeof specs[0]), &ma, argc, argv, "train", SUMMARY);

    if (a.batch_size <= 0 || a.max_length <= 1) loqt_die("--batch-size must be >= 1 and --max-length >= 2");
    if (a.total_batch_size == 0) a.total_batch_size = a.batch_size;
    if (a.total_batch_size < a.batch_size || a.total_batch_size % a.batch_size)
        loqt_die("--total-batch-size %d must be a positive multiple of --batch-size %d", a.total_batch_size, a.batch_size);
    if (a.num_training_steps <= 0) loqt_die("--num-training-steps must be positive");
    if (!(a.lr > 0)) loqt_die("--lr must be positive");
    if (a.min_lr_ratio < 0 || a.min_lr_ratio > 1) loqt_die("--min-lr-ratio must be in [0, 1]");
    if (a.grad_clipping < 0 || a.weight_decay < 0) loqt_die("--grad-clipping and --weight-decay must be >= 0");
    if (!(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1 && a.adam_eps > 0))
        loqt_die("Adam betas must be in [0, 1) and --adam-eps positive");
    if (a.warmup_steps < 0) a.warmup_steps = a.num_training_steps / 10;
    if (a.per_layer_updates && a.grad_clipping > 0)
        loqt_die("--grad-clipping needs the global gradient norm before any update, which --per-layer-updates does not have; use one or the other");
    if (a.log_every <= 0) a.log_every = 1;
    const int accum = a.total_batch_size / a.batch_size;
    cli_set_threads(a.threads);

    llama_config cfg;
    char resume_dir[4096] = "";
    char default_out[512];
    snprintf(default_out, sizeof default_out, "runs/%s-%s", a.model, a.method);
    if (!a.output_dir) {
        /* a model given as a path: name the run after the file */
        const char *base = strrchr(a.model, '/');
        if (base) {
            snprintf(default_out, sizeof default_out, "runs/%s-%s", base + 1, a.method);
            char *dot = strrchr(default_out, '.');
            if (dot && !strcmp(dot, ".json")) *dot = 0;
        }
        a.output_dir = default_out;
    }
    if (a.resume) {
        if (!strcmp(a.resume, "latest")) {
            char root[4096];
            snprintf(root, sizeof root, "%s/checkpoints", a.output_dir);
            if (checkpoint_find_latest(root, resume_dir, sizeof resume_dir)) loqt_die_last("--resume latest");
        } else {
            snprintf(resume_dir, sizeof resume_dir, "%s", a.resume);
        }
        if (checkpoint_read_config(resume_dir, &cfg)) loqt_die_last("--resume");
    } else if (config_load(&cfg, a.model)) {
        loqt_die_last("--model");
    }
    if (a.max_length > cfg.max_position_embeddings)
        loqt_die("--max-length %d exceeds the model's max_position_embeddings %d", a.max_length, cfg.max_position_embeddings);

    data_loader train, val;
    if (loader_open(&train, a.data, "train")) {
        struct stat sb;
        char first[4096];
        snprintf(first, sizeof first, "%s/train_000.bin", a.data);
        if (stat(first, &sb) != 0) loqt_die("%s (run 'make data' or 'loqt data' first)", loqt_last_error());
        loqt_die_last("--data");
    }
    if (loader_open(&val, a.data, "val")) loqt_die_last("--data");
    if (loader_vocab_size(&train) > (uint32_t)cfg.vocab_size)
        loqt_die("the data's vocabulary (%u) is larger than the model's vocab_size %d", loader_vocab_size(&train), cfg.vocab_size);
    if (loader_check_batch(&train, a.batch_size, a.max_length)) loqt_die_last("--data");

    const linear_method *meth = method_find(a.method);
    if (!meth) loqt_die("unknown --method '%s' (available: %s)", a.method, method_names());
    method_opts mo;
    method_opts_defaults(&mo);
    cli_method_apply(&ma, &mo);
    int ok;
    mo.optimizer = optim_kind_parse(a.optimizer, &ok);

    train_hparams h;
    train_hparams_defaults(&h);
    if (sched_parse(a.scheduler, &h.sched.kind)) loqt_die("unknown --scheduler '%s'", a.scheduler);
    h.sched.lr = a.lr;
    h.sched.warmup_steps = a.warmup_steps;
    h.sched.total_steps = a.num_training_steps;
    h.sched.min_lr_ratio = a.min_lr_ratio;
    h.beta1 = (float)a.beta1;
    h.beta2 = (float)a.beta2;
    h.eps = (float)a.adam_eps;
    h.weight_decay = (float)a.weight_decay;
    h.grad_clipping = (float)a.grad_clipping;
    h.optimizer = mo.optimizer;

    /* the memory plan first: a run that cannot fit is refused before anything large exists */
    {
        method_opts pmo = mo;
        if (*resume_dir) {
            trainer_meta t0;
            if (checkpoint_read_meta(resume_dir, &t0) == 0) pmo = t0.mopts, pmo.optimizer = mo.optimizer;
        }
        plan_input pin;
        plan_input_defaults(&pin, &cfg, meth->name);
        pin.mo = pmo;
        pin.batch = a.batch_size;
        pin.seq = a.max_length;
        pin.accum = accum;
        pin.steps = a.num_training_steps;
        pin.threads = cli_threads();
        pin.per_layer_updates = a.per_layer_updates;
        pin.activation_checkpointing = a.activation_checkpointing;
        pin.save_original_model = a.save_original_model;
        pin.train.tokens = loader_tokens(&train);
        pin.val.tokens = loader_tokens(&val);
        cli_check_memory(&pin, a.max_memory);
    }
    llama_model m;
    long start_step = 0;
    uint64_t tokens = 0;
    trainer_meta tm;
    if (*resume_dir) {
        /* the method's shapes and schedule come from the checkpoint */
        if (checkpoint_read_meta(resume_dir, &tm)) loqt_die_last("--resume");
        tm.mopts.optimizer = mo.optimizer;
        tm.mopts.seed = mo.seed;
        mo = tm.mopts;
        a.seed = (long)tm.seed;
    }
    if (llama_create(&m, &cfg, meth, &mo, (uint64_t)a.seed)) loqt_die_last("model");
    if (*resume_dir) {
        if (strcmp(tm.method, meth->name))
            loqt_die("%s was trained with --method %s, not %s", resume_dir, tm.method, meth->name);
        if (strcmp(tm.optimizer, a.optimizer))
            loqt_die("%s was trained with --optimizer %s, not %s", resume_dir, tm.optimizer, a.optimizer);
        if (checkpoint_load(&m, resume_dir, 0)) loqt_die_last("--resume");
        start_step = tm.step;
        tokens = tm.tokens_seen;
        loader_seek(&train, tm.data_position);
        printf("resumed from %s at step %ld\n", resume_dir, start_step);
    }
    m.per_layer_updates = a.per_layer_updates;
    m.checkpoint_activations = a.activation_checkpointing;
    llama_set_batch(&m, a.batch_size, a.max_length);
    if (file_mkdir_p(a.output_dir)) loqt_die_last("--output-dir");
    if (*resume_dir) trim_metrics(a.output_dir, start_step);
    FILE *metrics = open_metrics(a.output_dir, *resume_dir != 0);

    const long long nparams = config_params_total(&cfg);
    printf("model %s: %.1fM parameters (%d layers, hidden %d), method %s, optimizer %s\n", cfg.name,
           nparams / 1e6, cfg.num_hidden_layers, cfg.hidden_size, meth->name, a.optimizer);
    if (strcmp(meth->name, "full")) {
        printf("method options: ");
        method_opts_write_json(&m.mopts, stdout);
        printf("\n");
    }
    printf("data: %.2fM training tokens, %.2fM validation tokens; %d x %d tokens per micro-batch, "
           "%d micro-batches per step; %d threads, gemm %s (%s)\n",
           loader_tokens(&train) / 1e6, loader_tokens(&val) / 1e6, a.batch_size, a.max_length,
           accum, cli_threads(), gemm_backend(), loqt_blas_kernels());
    printf("output: %s\n", a.output_dir);

    const int N = a.batch_size * a.max_length;
    int32_t *inputs = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    int32_t *targets = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    const int32_t **ins = malloc(sizeof *ins * accum), **tgs = malloc(sizeof *tgs * accum);
    for (int i = 0; i < accum; i++) {
        ins[i] = inputs + (size_t)i * N;
        tgs[i] = targets + (size_t)i * N;
    }
    if (start_step == 0) do_eval(&m, &val, a.num_eval_tokens, metrics, 0, 0);

    const int tty = isatty(fileno(stdout));
    double t_start = cli_now(), last_loss = NAN;
    long step = start_step;
    for (; step < a.num_training_steps; step++) {
        double t0 = cli_now();
        for (int i = 0; i < accum; i++)
            loader_next_batch(&train, a.batch_size, a.max_length, inputs + (size_t)i * N, targets + (size_t)i * N);
        step_result r = train_step(&m, step, ins, tgs, accum, &h);
        tokens += (uint64_t)N * accum;
        last_loss = r.loss;
        if (!isfinite(r.loss)) loqt_die("loss is %f at step %ld: training diverged (try a lower --lr or --grad-clipping 1)", r.loss, step);
        double now = cli_now(), dt = now - t0, elapsed = now - t_start;
        long done = step + 1 - start_step, left = a.num_training_steps - step - 1;
        double tps = (double)N * accum * done / elapsed;
        char eta[32];
        cli_format_duration(elapsed / done * left, eta, sizeof eta);
        printf("%sstep %ld/%ld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s | mem %.2f GiB%s",
               tty ? "\r" : "", step + 1, a.num_training_steps, r.loss, r.lr, tps, eta,
               mem_current_rss() / 1073741824.0, tty ? "   " : "\n");
        fflush(stdout);
        if ((step + 1) % a.log_every == 0 || step + 1 == a.num_training_steps) {
            char gn[32] = "null"; /* no global norm with per-layer updates */
            if (!isnan(r.grad_norm)) snprintf(gn, sizeof gn, "%.6g", r.grad_norm);
            fprintf(metrics,
                    "{\"step\": %ld, \"tokens\": %llu, \"loss\": %.6f, \"lr\": %.6g, "
                    "\"grad_norm\": %s, \"step_s\": %.4f, \"tokens_per_s\": %.1f, \"rss_mib\": %.1f}\n",
                    step + 1, (unsigned long long)tokens, r.loss, r.lr, gn, dt, tps,
                    mem_current_rss() / 1048576.0);
            fflush(metrics);
        }
        int last = step + 1 == a.num_training_steps;
        if (a.eval_every > 0 && (step + 1) % a.eval_every == 0 && !last) {
            if (tty) printf("\n");
            do_eval(&m, &val, a.num_eval_tokens, metrics, step + 1, tokens);
        }
        if (a.save_every > 0 && (step + 1) % a.save_every == 0 && !last) {
            if (tty) printf("\n");
            save_checkpoint(&m, a.output_dir, step + 1, tokens, loader_position(&train), &a, r.loss);
        }
    }
    if (tty) printf("\n");
    double final_loss = do_eval(&m, &val, a.num_eval_tokens, metrics, step, tokens);
    save_checkpoint(&m, a.output_dir, step, tokens, loader_position(&train), &a, last_loss);

    if (a.save_original_model) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/original_model", a.output_dir);
        if (llama_export_dense(&m, dir)) loqt_die_last("--save-original-model");
        printf("wrote the merged dense model to %s\n", dir);
    }
    size_t pb[MEM_NCAT] = {0};
    llama_param_bytes(&m, pb);
    printf("trained %ld steps, %.2fM tokens in %.1f s; final held-out perplexity %.3f\n",
           step - start_step, (double)(tokens) / 1e6, cli_now() - t_start, exp(final_loss));
    mem_report(stdout);
    fprintf(metrics, "{\"final\": true, \"step\": %ld, \"eval_loss\": %.6f, \"memory\": ", step, final_loss);
    mem_report_json(metrics);
    fprintf(metrics, "}\n");
    fclose(metrics);
    mem_free(inputs);
    mem_free(targets);
    free(ins);
    free(tgs);
    llama_free(&m);
    loader_close(&train);
    loader_close(&val);
    return 0;
}
