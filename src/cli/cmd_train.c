/* loqt train: the training loop with progress display, JSONL metrics, evaluation and atomic
 * checkpoints that a later run can resume bit for bit. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/dist.h"
#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "kernels/gemm.h"
#include "model/checkpoint.h"
#include "model/dp.h"
#include "model/peft.h"
#include "model/plan.h"
#include "methods/lora.h"
#include "model/train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The options of train beyond the shared run description (cli_run). */
typedef struct {
    cli_run run;
    const char *data, *scheduler, *output_dir, *resume, *init_from, *adapter;
    int eval_every, save_every, log_every, save_original_model, overwrite, max_bad_steps, allow_changes, dry_run;
    int zero;            /* --zero 1: optimizer state sharded across the data-parallel ranks */
    double dist_timeout; /* seconds a rank waits for another */
    long num_training_steps, warmup_steps, warmup_given, num_eval_tokens, seed;
    char tokenizer_hash[32]; /* of the data (its manifest), "" when unknown */
    double lr, min_lr_ratio, grad_clipping, weight_decay, beta1, beta2, adam_eps;
    double progress_every; /* seconds between progress lines in a log (not a terminal) */
} train_args;

/* Everything a run holds while it trains. */
typedef struct {
    llama_config cfg;
    char resume_dir[4096], default_out[512];
    data_loader train, val;
    train_hparams h;
    llama_model m;
    plan plan; /* the run's memory plan, written to OUTPUT_DIR/plan.json */
    long start_step;
    uint64_t tokens;
    double last_print; /* when the last progress line was printed */
    FILE *metrics;
    int32_t *inputs, *targets;
    const int32_t **ins, **tgs;
    /* data parallelism: this rank's place, its micro-batches per step (of run.accum in all) */
    int rank, ranks, accum;
    llama_dp dp;
} train_run;

static const char *SUMMARY =
    "Trains a LLaMA model on token shards made by 'loqt data'. Prints one progress line per step\n"
    "(step, loss, lr, tokens/s, ETA, memory), appends metrics to OUTPUT_DIR/metrics.jsonl, evaluates\n"
    "held-out perplexity every --eval-every steps, and writes checkpoints to\n"
    "OUTPUT_DIR/checkpoints/step-N every --save-every steps and at the end.";

/* A metrics line that cannot be written (a full disk) stops the run with the reason, rather than
 * leaving a log cut mid-line; the checkpoints written so far stay. */
static void check_metrics_written(FILE *f) {
    if (fflush(f) != 0 || ferror(f))
        loqt_die("cannot write metrics.jsonl: %s (the last complete line and the checkpoints so far are kept)",
                 strerror(errno));
}

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

/* The options that make up the run's meaning (compared on resume), as a JSON object.  The
 * number of steps is among them but may change (a run continued for longer). */
static void run_options_json(const train_args *a, char *buf, size_t cap) {
    snprintf(buf, cap,
             "{\"lr\": %.17g, \"scheduler\": \"%s\", \"warmup_steps\": %ld, \"min_lr_ratio\": %.17g, "
             "\"grad_clipping\": %.17g, \"weight_decay\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, "
             "\"adam_eps\": %.17g, \"batch_size\": %d, \"total_batch_size\": %d, \"max_length\": %d, "
             "\"num_training_steps\": %ld, \"tokenizer_hash\": \"%s\", \"dtype\": \"%s\"}",
             a->lr, a->scheduler, a->warmup_given, a->min_lr_ratio, a->grad_clipping, a->weight_decay,
             a->beta1, a->beta2, a->adam_eps, a->run.batch_size, a->run.total_batch_size, a->run.seq_len,
             a->num_training_steps, a->tokenizer_hash, a->run.dtype == GEMM_BF16 ? "bf16" : "fp32");
}

/* Resume compares the checkpoint's run options with this run's: a changed step count is noted,
 * any other change refused unless --allow-changes. */
static void compare_run_options(const train_args *a, const trainer_meta *tm, const char *dir) {
    if (!tm->run_options[0]) return; /* written before the options were stored */
    char now[1024];
    run_options_json(a, now, sizeof now);
    json_value *was = json_parse(tm->run_options, strlen(tm->run_options)), *cur = json_parse(now, strlen(now));
    if (!was || !cur || was->type != JSON_OBJECT) loqt_die("%s: malformed run_options in the trainer state", dir);
    char changed[1024] = "", noted[256] = "";
    for (size_t i = 0; i < was->len; i++) {
        const json_value *x = &was->items[i], *y = json_get(cur, was->keys[i]);
        int same = y && x->type == y->type &&
                   (x->type == JSON_NUMBER ? x->number == y->number
                                           : x->type == JSON_STRING && !strcmp(x->string, y->string));
        if (same || !y) continue;
        char d[160];
        if (x->type == JSON_NUMBER) snprintf(d, sizeof d, "--%s %g -> %g", was->keys[i], x->number, y->number);
        else snprintf(d, sizeof d, "--%s %s -> %s", was->keys[i], x->type == JSON_STRING ? x->string : "?",
                      y->type == JSON_STRING ? y->string : "?");
        for (char *p = d + 2; *p && *p != ' '; p++)
            if (*p == '_') *p = '-';
        char *dst = strcmp(was->keys[i], "num_training_steps") ? changed : noted;
        size_t cap = dst == changed ? sizeof changed : sizeof noted, k = strlen(dst);
        snprintf(dst + k, cap - k, "%s%s", k ? ", " : "", d);
    }
    json_free(was);
    json_free(cur);
    if (noted[0]) printf("resume: %s\n", noted);
    if (changed[0] && !a->allow_changes)
        loqt_usage_die("--resume %s with changed options (%s): that is another run; pass --allow-changes to continue with them", dir, changed);
    if (changed[0]) printf("resume with changed options (--allow-changes): %s\n", changed);
}

/* Data parallel: rank 0 writes the checkpoint; under --zero 1 every other rank first writes its
 * optimizer state into the checkpoint's temporary directory, and rank 0 renames it into place
 * only when every rank has succeeded (a rank that dies meanwhile leaves the last checkpoint as it
 * was). */
static void save_checkpoint(train_run *t, const train_args *a, long step, double loss) {
    const llama_model *m = &t->m;
    trainer_meta tm = {.step = step, .tokens_seen = t->tokens, .data_position = loader_position(&t->train),
                       .seed = (uint64_t)a->seed, .loss = loss, .zero_ranks = t->dp.zero ? t->ranks : 0};
    snprintf(tm.method, sizeof tm.method, "%s", m->method->name);
    run_options_json(a, tm.run_options, sizeof tm.run_options);
    snprintf(tm.optimizer, sizeof tm.optimizer, "%s", optim_kind_name(m->mopts.optimizer));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints/step-%08ld", a->output_dir, step);
    double t0 = cli_now();
    if (!tm.zero_ranks) {
        if (t->rank == 0 && checkpoint_save(m, &tm, dir)) loqt_die_last("saving checkpoint");
    } else {
        double failed = t->rank == 0 && checkpoint_prepare(dir) ? 1 : 0;
        if (dp_sum(&t->dp, &failed, 1)) loqt_die_last("saving checkpoint");
        if (failed) loqt_die("saving checkpoint %s: rank 0 could not create its temporary directory", dir);
        failed = t->rank > 0 && checkpoint_save_shard(m, dir, t->rank, t->ranks) ? 1 : 0;
        if (failed) fprintf(stderr, "loqt: error: rank %d: saving its optimizer state: %s\n", t->rank, loqt_last_error());
        if (dp_sum(&t->dp, &failed, 1)) loqt_die_last("saving checkpoint");
        if (failed) {
            if (t->rank == 0) checkpoint_abandon(dir);
            loqt_die("saving checkpoint %s: %g rank(s) could not write their optimizer state (the previous checkpoint is kept)", dir, failed);
        }
        failed = t->rank == 0 && checkpoint_commit(m, &tm, dir) ? 1 : 0;
        if (failed) fprintf(stderr, "loqt: error: saving checkpoint: %s\n", loqt_last_error());
        if (dp_sum(&t->dp, &failed, 1)) loqt_die_last("saving checkpoint");
        if (failed) loqt_die("saving checkpoint %s failed on rank 0", dir);
    }
    printf("saved checkpoint %s (%.1f s)\n", dir, cli_now() - t0);
}

/* Held-out loss; data-parallel ranks evaluate every ranks-th batch each and add up. */
static double do_eval(train_run *t, long max_tokens, long step) {
    if (max_tokens <= 0) return NAN; /* --num-eval-tokens 0: no held-out evaluation */
    double t0 = cli_now(), part[2];
    part[1] = (double)cli_evaluate_part(&t->m, &t->val, (uint64_t)max_tokens, t->rank, t->ranks, &part[0]);
    if (dp_sum(&t->dp, part, 2)) loqt_die_last("evaluation");
    const uint64_t n = (uint64_t)part[1], tokens = t->tokens;
    const double loss = n ? part[0] / part[1] : 0.0;
    FILE *metrics = t->metrics;
    if (!n) {
        printf("eval: the validation split is too small for one batch; skipped\n");
        return NAN;
    }
    printf("eval step %ld: loss %.4f, perplexity %.3f over %llu tokens (%.1f s)\n", step, loss,
           exp(loss), (unsigned long long)n, cli_now() - t0);
    if (!metrics) return loss; /* not rank 0 */
    fprintf(metrics, "{\"step\": %ld, \"tokens\": %llu, \"eval_loss\": ", step, (unsigned long long)tokens);
    json_write_number(metrics, "%.6f", loss);
    fprintf(metrics, ", \"eval_ppl\": ");
    json_write_number(metrics, "%.4f", exp(loss));
    fprintf(metrics, ", \"eval_tokens\": %llu}\n", (unsigned long long)n);
    check_metrics_written(metrics);
    return loss;
}

/* the command whose options are parsed: "train", or "finetune" (which runs train), for messages */
static const char *command_name = "train";

static void parse_args(train_args *a, int argc, char **argv) {
    *a = (train_args){
        .data = "data/corpus", .scheduler = "cosine", .log_every = 1, .num_training_steps = 1000, .max_bad_steps = 5,
        .warmup_steps = -1, .num_eval_tokens = 100000, .lr = 1e-3, .min_lr_ratio = 0.1,
        .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-6, .progress_every = 10, .dist_timeout = 300,
    };
    cli_run_defaults(&a->run);
    const opt_spec specs[] = {
        {"data", OPT_STRING, &a->data, "directory of token shards (train_*.bin, val_*.bin) from 'loqt data'", NULL},
        {"num-training-steps", OPT_LONG, &a->num_training_steps, "optimizer steps to train (total, including resumed ones)", NULL},
        {"lr", OPT_FLOAT, &a->lr, "peak learning rate", NULL},
        {"scheduler", OPT_STRING, &a->scheduler, "learning-rate schedule after the linear warmup", "cosine|linear|constant"},
        {"warmup-steps", OPT_LONG, &a->warmup_steps, "linear warmup steps; -1 = 10% of --num-training-steps", NULL},
        {"min-lr-ratio", OPT_FLOAT, &a->min_lr_ratio, "final learning rate as a fraction of the peak", NULL},
        {"grad-clipping", OPT_FLOAT, &a->grad_clipping, "clip the global gradient norm to this value; 0 = off", NULL},
        {"weight-decay", OPT_FLOAT, &a->weight_decay, "decoupled weight decay (AdamW)", NULL},
        {"beta1", OPT_FLOAT, &a->beta1, "Adam beta1", NULL},
        {"beta2", OPT_FLOAT, &a->beta2, "Adam beta2", NULL},
        {"adam-eps", OPT_FLOAT, &a->adam_eps, "Adam epsilon", NULL},
        {"eval-every", OPT_INT, &a->eval_every, "evaluate held-out perplexity every N steps (and at the end); 0 = only at the end", NULL},
        {"num-eval-tokens", OPT_LONG, &a->num_eval_tokens, "validation tokens per evaluation (0: no held-out evaluation)", NULL},
        {"save-every", OPT_INT, &a->save_every, "write a checkpoint every N steps (and at the end); 0 = only at the end", NULL},
        {"log-every", OPT_INT, &a->log_every, "write a metrics line every N steps", NULL},
        {"progress-every", OPT_FLOAT, &a->progress_every, "when stdout is not a terminal (a log file), a progress line at most every this many seconds, and at the first and last step; 0 = every step (on a terminal one line updates in place)", NULL},
        {"output-dir", OPT_STRING, &a->output_dir, "run directory for metrics.jsonl and checkpoints/; default runs/MODEL-METHOD", NULL},
        {"resume", OPT_STRING, &a->resume, "continue from a checkpoint directory, or 'latest' in --output-dir (the method's options come from the checkpoint)", NULL},
        {"seed", OPT_LONG, &a->seed, "seed of the initialization (the data order is fixed)", NULL},
        {"init-from", OPT_STRING, &a->init_from, "start from pretrained weights: a LLaMA directory in Hugging Face layout (config.json with model.safetensors, or shards with model.safetensors.index.json; F32, F16 or BF16), a dense export or a full-rank checkpoint. The model is DIR/config.json (no --model); the embedding, norms and lm_head are read as they are, and every linear layer's method starts from its pretrained weight. The data's vocabulary must be the model's", NULL},
        {"adapter", OPT_STRING, &a->adapter, "with --init-from and --method lora: start the adapters from a LoRA adapter in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors; its r, lora_alpha and use_rslora must be the run's --rank, --lora-alpha, --rslora); the base still comes from --init-from", NULL},
        {"save-original-model", OPT_FLAG, &a->save_original_model, "at the end also write a plain dense LLaMA (W_eff merged) to OUTPUT_DIR/original_model", NULL},
        {"max-bad-steps", OPT_INT, &a->max_bad_steps, "a step with a non-finite loss or gradient is skipped with a warning; this many in a row stop the run", NULL},
        {"allow-changes", OPT_FLAG, &a->allow_changes, "--resume with options that change the run's meaning (lr, schedule, batch, length, Adam, clipping, dtype) differing from the checkpoint's", NULL},
        {"dry-run", OPT_FLAG, &a->dry_run, "check the options, the data, the checkpoint to resume and the memory plan, print the plan and exit (0) without training or writing anything", NULL},
        {"overwrite", OPT_FLAG, &a->overwrite, "start a new run in an --output-dir that holds one (its metrics.jsonl, checkpoints/ and original_model/ are deleted)", NULL},
        {"zero", OPT_INT, &a->zero, "under mpirun: 1 shards the optimizer state across the ranks (each keeps and updates the state of the layers it owns, ZeRO stage 1); 0 keeps a copy on every rank", NULL},
        {"dist-timeout", OPT_FLOAT, &a->dist_timeout, "under mpirun: seconds a rank waits for another before it stops with an error (a rank died or hangs)", NULL},
    };
    cli_parse_run(&a->run, specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, command_name, SUMMARY);
    if (a->num_training_steps <= 0) loqt_usage_die("--num-training-steps must be positive");
    if (!(a->lr > 0)) loqt_usage_die("--lr must be positive");
    if (a->min_lr_ratio < 0 || a->min_lr_ratio > 1) loqt_usage_die("--min-lr-ratio must be in [0, 1]");
    if (a->grad_clipping < 0 || a->weight_decay < 0) loqt_usage_die("--grad-clipping and --weight-decay must be >= 0");
    /* checked as the optimizer uses them, in single precision: 1e-50 is 0 there, and
     * 0.99999999999 is 1 */
    const float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->adam_eps;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
        loqt_usage_die("Adam betas must be in [0, 1) in single precision (--beta1 %.17g, --beta2 %.17g give %.9g, %.9g)",
                 a->beta1, a->beta2, b1, b2);
    if (!(eps >= 1e-30f) || !isfinite(eps))
        loqt_usage_die("--adam-eps %g is not a usable single-precision epsilon (1e-30 .. 3e38)", a->adam_eps);
    a->warmup_given = a->warmup_steps; /* -1: 10% of the steps, whatever their number */
    if (a->warmup_steps < 0) a->warmup_steps = a->num_training_steps / 10;
    if (a->run.per_layer_updates && a->grad_clipping > 0)
        loqt_usage_die("--grad-clipping needs the global gradient norm before any update, which --per-layer-updates does not have; use one or the other");
    if (a->log_every <= 0) a->log_every = 1;
    if (a->max_bad_steps < 1) loqt_usage_die("--max-bad-steps must be >= 1");
    if (!(a->progress_every >= 0) || !isfinite(a->progress_every)) loqt_usage_die("--progress-every must be a number of seconds >= 0");
    if (a->zero != 0 && a->zero != 1) loqt_usage_die("--zero must be 0 or 1 (ZeRO stage 1: the optimizer state sharded)");
    if (!(a->dist_timeout > 0) || !isfinite(a->dist_timeout)) loqt_usage_die("--dist-timeout must be a positive number of seconds");
    const int ranks = dist_size();
    if (ranks > 1 && a->run.accum % ranks)
        loqt_usage_die("with %d ranks, --total-batch-size %d must be a multiple of --batch-size %d x %d ranks (each rank "
                       "takes the same number of micro-batches of every global batch)", ranks, a->run.total_batch_size,
                       a->run.batch_size, ranks);
    if (a->init_from && opts_given("model"))
        loqt_usage_die("--init-from %s: the model is the one in %s/config.json; do not give --model", a->init_from, a->init_from);
    /* a calibrated init (QuAILoRA) runs the pretrained model over the data; a run resumed from
     * a checkpoint keeps the adapters it trained */
    if (llama_calibrates(a->run.m, &a->run.mo) > 0 && !a->init_from && !a->resume)
        loqt_usage_die("--init quailora and quailora-closed calibrate a pretrained model's activations: give the model "
                       "with --init-from DIR (loqt finetune --checkpoint DIR)");
    if (a->adapter && (!a->init_from || !lora_is_engine(a->run.m)))
        loqt_usage_die("--adapter %s needs --init-from (the base it applies to) and --method lora or relora", a->adapter);
    a->run.mo.seed = (uint64_t)a->seed;
}

/* The output directory (default runs/MODEL-METHOD, a model given as a path named after its file),
 * the checkpoint to resume and the model's config. */
static void locate_run(train_args *a, train_run *t) {
    const char *model = a->init_from ? a->init_from : a->run.model;
    snprintf(t->default_out, sizeof t->default_out, "runs/%s-%s", model, a->run.m->name);
    if (!a->output_dir) {
        const char *base = strrchr(model, '/');
        if (base) {
            snprintf(t->default_out, sizeof t->default_out, "runs/%s-%s", base + 1, a->run.m->name);
            char *dot = strrchr(t->default_out, '.');
            if (dot && !strcmp(dot, ".json")) *dot = 0;
        }
        a->output_dir = t->default_out;
    }
    if (a->resume) {
        if (!strcmp(a->resume, "latest")) {
            char root[4096];
            snprintf(root, sizeof root, "%s/checkpoints", a->output_dir);
            if (checkpoint_find_latest(root, t->resume_dir, sizeof t->resume_dir)) loqt_die_last("--resume latest");
        } else {
            snprintf(t->resume_dir, sizeof t->resume_dir, "%s", a->resume);
        }
        if (checkpoint_read_config(t->resume_dir, &t->cfg)) loqt_die_last("--resume");
        if (a->init_from) printf("resume: the weights come from %s; --init-from is not read\n", t->resume_dir);
    } else if (a->init_from) {
        if (checkpoint_read_config(a->init_from, &t->cfg)) loqt_die_last("--init-from");
        peft_config pc; /* the adapter's config now too */
        if (a->adapter && peft_read_config(a->adapter, &pc)) loqt_die_last(NULL);
        st_file w; /* the weights' headers and shards now, before anything is written */
        if (st_open_dir(&w, a->init_from)) loqt_die_last("--init-from");
        st_close(&w);
    } else if (config_load(&t->cfg, a->run.model)) {
        loqt_die_last("--model");
    }
    if (a->run.seq_len > t->cfg.max_position_embeddings)
        loqt_usage_die("--max-length %d exceeds the model's max_position_embeddings %d", a->run.seq_len, t->cfg.max_position_embeddings);
}

/* A new run in a directory that holds one would truncate its metrics, replace its checkpoints of
 * the same step numbers and leave the later ones, which a --resume latest would then continue:
 * refused unless --overwrite says to start over. */
static void claim_output_dir(const train_args *a, const train_run *t) {
    char metrics[4200], ckpts[4200], orig[4200];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", a->output_dir);
    snprintf(ckpts, sizeof ckpts, "%s/checkpoints", a->output_dir);
    snprintf(orig, sizeof orig, "%s/original_model", a->output_dir);
    struct stat sb;
    int held = stat(metrics, &sb) == 0 || stat(ckpts, &sb) == 0 || stat(orig, &sb) == 0;
    /* resuming this directory's own run is what --resume is for; a checkpoint from elsewhere
     * continued into a directory that holds another run would mix the two */
    char rc_real[PATH_MAX], rd_real[PATH_MAX];
    const int own = *t->resume_dir && realpath(ckpts, rc_real) && realpath(t->resume_dir, rd_real) &&
                    !strncmp(rd_real, rc_real, strlen(rc_real)) && rd_real[strlen(rc_real)] == '/';
    if (held && !own && !a->overwrite)
        loqt_usage_die("--output-dir %s holds a run already (metrics.jsonl, checkpoints/ or original_model/): "
                 "continue it with --resume latest, use another --output-dir, or pass --overwrite to delete it and start over",
                 a->output_dir);
    /* every rank has looked before rank 0 changes anything there */
    if (dist_barrier()) loqt_die_last(NULL);
    if (!held || own || t->rank != 0) return;
    unlink(metrics);
    file_remove_tree(ckpts);
    file_remove_tree(orig);
    printf("--overwrite: deleted the previous run in %s\n", a->output_dir);
}

static void open_data(train_args *a, train_run *t) {
    cli_data_tokenizer_hash(a->data, a->tokenizer_hash, sizeof a->tokenizer_hash);
    if (loader_open(&t->train, a->data, "train")) {
        struct stat sb;
        char first[4096];
        snprintf(first, sizeof first, "%s/train_000.bin", a->data);
        if (stat(first, &sb) != 0) loqt_die("%s (run 'make data' or 'loqt data' first)", loqt_last_error());
        loqt_die_last("--data");
    }
    if (loader_open(&t->val, a->data, "val")) loqt_die_last("--data");
    if (loader_vocab_size(&t->train) > (uint32_t)t->cfg.vocab_size)
        loqt_die("the data's vocabulary (%u) is larger than the model's vocab_size %d", loader_vocab_size(&t->train), t->cfg.vocab_size);
    if (loader_check_batch(&t->train, a->run.batch_size, a->run.seq_len)) loqt_die_last("--data");
    /* the calibration sequences must fit in the training split (refused before anything large) */
    const int n_cal = a->init_from && !a->resume ? llama_calibrates(a->run.m, &a->run.mo) : 0;
    if (n_cal > 0 && (uint64_t)n_cal * (uint64_t)a->run.seq_len > loader_tokens(&t->train))
        loqt_usage_die("--calibration-sequences %d: %d sequences of %d tokens (--max-length) need %llu tokens, the "
                       "training split holds %llu", n_cal, n_cal, a->run.seq_len,
                       (unsigned long long)n_cal * (unsigned long long)a->run.seq_len,
                       (unsigned long long)loader_tokens(&t->train));
    if (a->init_from && !a->resume) {
        char model_tok[32];
        cli_checkpoint_tokenizer_hash(a->init_from, model_tok, sizeof model_tok);
        cli_check_same_tokenizer(model_tok, a->tokenizer_hash, "--data");
        cli_check_pretrained_vocab(t->cfg.vocab_size, loader_vocab_size(&t->train), a->init_from);
    }
}

static void set_hparams(const train_args *a, train_hparams *h) {
    train_hparams_defaults(h);
    if (sched_parse(a->scheduler, &h->sched.kind)) loqt_die("unknown --scheduler '%s'", a->scheduler);
    h->sched.lr = a->lr;
    h->sched.warmup_steps = a->warmup_steps;
    h->sched.total_steps = a->num_training_steps;
    h->sched.min_lr_ratio = a->min_lr_ratio;
    h->beta1 = (float)a->beta1;
    h->beta2 = (float)a->beta2;
    h->eps = (float)a->adam_eps;
    h->weight_decay = (float)a->weight_decay;
    h->grad_clipping = (float)a->grad_clipping;
    h->optimizer = a->run.mo.optimizer;
}

/* On resume the method's shapes and schedule come from the checkpoint (the optimizer and
 * method must be the ones it was trained with). */
static void resume_options(train_args *a, const train_run *t, trainer_meta *tm) {
    if (checkpoint_read_meta(t->resume_dir, tm)) loqt_die_last("--resume");
    if (strcmp(tm->method, a->run.m->name))
        loqt_usage_die("%s was trained with --method %s, not %s", t->resume_dir, tm->method, a->run.m->name);
    if (tm->mopts.optimizer != a->run.mo.optimizer)
        loqt_usage_die("%s was trained with --optimizer %s, not %s", t->resume_dir, tm->optimizer, a->run.optimizer);
    if (opts_given("seed") && a->seed != (long)tm->seed && !a->allow_changes)
        loqt_usage_die("--resume %s: the checkpoint was trained with --seed %llu, not %ld; pass --allow-changes to continue", t->resume_dir,
                 (unsigned long long)tm->seed, a->seed);
    for (int i = 0; i < a->run.m->n_options; i++) {
        const method_option *o = &a->run.m->options[i];
        if (opts_given(o->name) && method_option_get(&a->run.mo, o) != method_option_get(&tm->mopts, o))
            loqt_usage_die("--resume %s: the method's options come from the checkpoint (--%s %g there, %g given): "
                           "they fix the shapes and the schedule of the saved state", t->resume_dir, o->name,
                           method_option_get(&tm->mopts, o), method_option_get(&a->run.mo, o));
    }
    if (opts_given("freeze-dense") && a->run.mo.freeze_dense != tm->mopts.freeze_dense)
        loqt_usage_die("--resume %s: the checkpoint was trained %s --freeze-dense; its optimizer state is that run's",
                       t->resume_dir, tm->mopts.freeze_dense ? "with" : "without");
    a->run.mo = tm->mopts;
    a->seed = (long)tm->seed;
    /* a sharded optimizer state is one file per rank: only the same ranks can continue it */
    if (tm->zero_ranks && (!a->zero || tm->zero_ranks != t->ranks))
        loqt_usage_die("--resume %s: the checkpoint was written by %d ranks with --zero 1 (each rank's optimizer state is "
                       "its own file); continue it with mpirun -np %d ... --zero 1", t->resume_dir, tm->zero_ranks,
                       tm->zero_ranks);
    if (!tm->zero_ranks && a->zero && t->ranks > 1)
        loqt_usage_die("--resume %s: the checkpoint holds the whole optimizer state (trained without --zero 1); continue "
                       "it without --zero", t->resume_dir);
}

/* The memory plan first: a run that cannot fit is refused before anything large exists. */
static void check_memory(const train_args *a, train_run *t) {
    plan_input pin;
    cli_run_plan_input(&a->run, &t->cfg, a->num_training_steps, &pin);
    pin.threads = cli_threads();
    pin.save_original_model = a->save_original_model;
    pin.init_from = a->init_from && !*t->resume_dir;
    pin.train.tokens = loader_tokens(&t->train);
    pin.train.max_shard = loader_max_shard(&t->train);
    pin.val.tokens = loader_tokens(&t->val);
    pin.val.max_shard = loader_max_shard(&t->val);
    pin.ranks = t->ranks;
    pin.zero = a->zero;
    cli_check_memory(&pin, a->run.max_memory, &t->plan);
}

/* The plan beside the run's metrics, so that planned and measured memory can be compared (the
 * final record of metrics.jsonl has the measured peaks under the same keys). */
static void write_plan(const train_args *a, const train_run *t) {
    char path[4200];
    snprintf(path, sizeof path, "%s/plan.json", a->output_dir);
    FILE *f = fopen(path, "w");
    if (!f) loqt_die("cannot write %s: %s", path, strerror(errno));
    plan_write_json(&t->plan, f);
    fprintf(f, "\n");
    if (fclose(f)) loqt_die("cannot write %s: %s", path, strerror(errno));
}

/* What the linear method reports of its layers (WHEN: "after init", "at the end"). Right after
 * their init from a checkpoint, e.g. LoftQ's or QuAILoRA's remaining error relative to zero
 * init's: the user's evidence that the init did its work before a step is taken. */
static void print_stats(const llama_model *m, const char *when) {
    method_stats st;
    llama_method_stats(m, &st);
    if (st.n == 0) return;
    printf("method statistics %s:", when);
    for (int i = 0; i < st.n; i++) printf("%s %s %.4g", i ? "," : "", st.s[i].name, method_stats_value(&st, i));
    printf("\n");
}

/* The same statistics at the end of a run, in its final metrics record ("method_stats": {...}),
 * e.g. Q-GaLore's SVDs saved by its adaptive refresh: `loqt compare` lists them under its table. */
static void write_stats_json(const llama_model *m, FILE *f) {
    method_stats st;
    llama_method_stats(m, &st);
    if (st.n == 0) return;
    fprintf(f, ", \"method_stats\": {");
    for (int i = 0; i < st.n; i++) {
        fprintf(f, "%s\"%s\": ", i ? ", " : "", st.s[i].name);
        json_write_number(f, "%.6g", method_stats_value(&st, i));
    }
    fprintf(f, "}");
}

static void create_model(const train_args *a, train_run *t, const trainer_meta *tm) {
    if (a->init_from && !*t->resume_dir) {
        double t0 = cli_now();
        /* a calibrated init's sequences: spread over the training split, the batch position untouched */
        const int n_cal = llama_calibrates(a->run.m, &a->run.mo);
        llama_calib cal = {NULL, n_cal, a->run.seq_len, a->run.batch_size};
        int32_t *tok = n_cal > 0 ? mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)n_cal * a->run.seq_len) : NULL;
        if (tok && loader_sample_sequences(&t->train, n_cal, a->run.seq_len, tok)) loqt_die_last(NULL);
        cal.tokens = tok;
        if (llama_load_pretrained_calib(&t->m, &t->cfg, a->run.m, &a->run.mo, (uint64_t)a->seed, a->init_from,
                                        tok ? &cal : NULL))
            loqt_die_last("--init-from");
        mem_free(tok);
        printf("initialized from %s (%.1f s)\n", a->init_from, cli_now() - t0);
        print_stats(&t->m, "after init");
        if (a->adapter && peft_load_adapter(&t->m, a->adapter)) loqt_die_last(NULL);
        if (a->adapter) printf("adapters from %s\n", a->adapter);
    } else if (llama_create(&t->m, &t->cfg, a->run.m, &a->run.mo, (uint64_t)a->seed)) {
        loqt_die_last("model");
    }
    if (*t->resume_dir) {
        const int shard = tm->zero_ranks ? t->rank : 0;
        if (checkpoint_load_shard(&t->m, t->resume_dir, shard, tm->zero_ranks)) loqt_die_last("--resume");
        compare_run_options(a, tm, t->resume_dir);
        t->start_step = tm->step;
        t->tokens = tm->tokens_seen;
        loader_seek(&t->train, tm->data_position);
        printf("resumed from %s at step %ld\n", t->resume_dir, t->start_step);
    }
    t->m.per_layer_updates = a->run.per_layer_updates;
    t->m.checkpoint_activations = a->run.activation_checkpointing;
    t->m.dtype = (gemm_dtype)a->run.dtype;
    llama_set_batch(&t->m, a->run.batch_size, a->run.seq_len);
    if (t->ranks > 1 && dp_init(&t->dp, &t->m, a->zero)) loqt_die_last("data parallel");
}

static void print_header(const train_args *a, const train_run *t) {
    const linear_method *meth = a->run.m;
    printf("model %s: %.1fM parameters (%d layers, hidden %d), method %s, optimizer %s\n", t->cfg.name,
           config_params_total(&t->cfg) / 1e6, t->cfg.num_hidden_layers, t->cfg.hidden_size, meth->name,
           optim_kind_name(t->m.mopts.optimizer));
    if (meth->n_options) {
        printf("method options: ");
        method_config_write_json(meth, &t->m.mopts, stdout);
        printf("\n");
    }
    printf("data: %.2fM training tokens, %.2fM validation tokens; %d x %d tokens per micro-batch, "
           "%d micro-batches per step; %d threads, gemm %s (%s)\n",
           loader_tokens(&t->train) / 1e6, loader_tokens(&t->val) / 1e6, a->run.batch_size, a->run.seq_len,
           a->run.accum, cli_threads(), gemm_backend(), gemm_kernels());
    if (t->m.dtype == GEMM_BF16) {
        char bf16[200];
        gemm_bf16_describe(bf16, sizeof bf16);
        printf("dtype bf16: forward and backward GEMMs on bf16 operands, fp32 accumulation; bf16 GEMM: %s\n", bf16);
    }
    if (t->ranks > 1)
        printf("data parallel: %d ranks, %d micro-batch%s of every step each; optimizer state %s\n", t->ranks,
               t->accum, t->accum == 1 ? "" : "es", t->dp.zero ? "sharded across the ranks (--zero 1)" : "on every rank");
    printf("output: %s\n", a->output_dir);
}

static void alloc_batches(const train_args *a, train_run *t) {
    const int N = a->run.batch_size * a->run.seq_len, accum = t->accum;
    t->inputs = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    t->targets = mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)N * accum);
    t->ins = malloc(sizeof *t->ins * accum);
    t->tgs = malloc(sizeof *t->tgs * accum);
    for (int i = 0; i < accum; i++) {
        t->ins[i] = t->inputs + (size_t)i * N;
        t->tgs[i] = t->targets + (size_t)i * N;
    }
}

/* The progress line (one updating line on a terminal) and the metrics line of a step. */
static void report_step(const train_args *a, train_run *t, long step, const step_result *r,
                        double dt, double t_start, int tty, const uint64_t sent[DIST_NCHAN], double comm_s) {
    const int N = a->run.batch_size * a->run.seq_len;
    double elapsed = cli_now() - t_start;
    long done = step + 1 - t->start_step, left = a->num_training_steps - step - 1;
    double tps = (double)N * a->run.accum * done / elapsed;
    char eta[32];
    cli_format_duration(elapsed / done * left, eta, sizeof eta);
    const double now = cli_now();
    if (tty || a->progress_every <= 0 || step == t->start_step || step + 1 == a->num_training_steps ||
        now - t->last_print >= a->progress_every) {
        printf("%sstep %ld/%ld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s | mem %.2f GiB%s",
               tty ? "\r" : "", step + 1, a->num_training_steps, r->loss, r->lr, tps, eta,
               mem_current_rss() / 1073741824.0, tty ? "   " : "\n");
        fflush(stdout);
        t->last_print = now;
    }
    if (t->metrics && ((step + 1) % a->log_every == 0 || step + 1 == a->num_training_steps)) {
        char gn[32] = "null", loss[32] = "null", dp[160] = ""; /* no global norm with per-layer updates */
        if (t->ranks > 1) /* what this rank sent during the step, and its seconds in transfers (docs/data_parallel.md) */
            snprintf(dp, sizeof dp, ", \"dp_bytes\": {\"grads\": %llu, \"params\": %llu, \"control\": %llu}, \"comm_s\": %.4f",
                     (unsigned long long)sent[DIST_GRADS], (unsigned long long)sent[DIST_PARAMS],
                     (unsigned long long)sent[DIST_CONTROL], comm_s);
        if (isfinite(r->grad_norm)) snprintf(gn, sizeof gn, "%.6g", r->grad_norm);
        if (isfinite(r->loss)) snprintf(loss, sizeof loss, "%.6f", r->loss);
        fprintf(t->metrics,
                "{\"step\": %ld, \"tokens\": %llu, \"loss\": %s, \"lr\": %.6g, "
                "\"grad_norm\": %s, \"step_s\": %.4f, \"tokens_per_s\": %.1f, \"rss_mib\": %.1f%s%s}\n",
                step + 1, (unsigned long long)t->tokens, loss, r->lr, gn, dt, tps,
                mem_current_rss() / 1048576.0, r->skipped ? ", \"skipped\": true" : "", dp);
        check_metrics_written(t->metrics);
    }
}

/* SIGINT, SIGTERM and SIGHUP finish the current step, write a checkpoint and exit with 128 + the
 * signal's number (130, 143, 129); a second SIGINT exits at once. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) {
    if (stop_signal && sig == SIGINT) _exit(128 + SIGINT);
    stop_signal = sig;
}

/* The handler runs on a stack of its own: a signal can land inside oneDNN's JIT kernels, whose
 * stack pointer the sanitizers (and any code that checks the stack) do not expect a handler's
 * frame below (a second Ctrl-C was once reported as a heap overflow there). */
static char stop_signal_stack[1 << 16];

static void install_signal_handlers(void) {
    stack_t ss = {.ss_sp = stop_signal_stack, .ss_size = sizeof stop_signal_stack, .ss_flags = 0};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = sigaltstack(&ss, NULL) == 0 ? SA_ONSTACK : 0;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* After a step: a skipped step counts towards --max-bad-steps; a model whose loss sits at
 * ln(vocabulary) with a zero gradient has died (its activations overflowed). */
static void check_step_health(const train_args *a, const train_run *t, long step, const step_result *r, int *bad) {
    if (r->skipped) {
        ++*bad;
        fprintf(stderr, "loqt: warning: step %ld: the %s is not finite; the step was skipped (%d in a row, "
                "--max-bad-steps %d)\n", step + 1, isfinite(r->loss) ? "gradient" : "loss", *bad, a->max_bad_steps);
        if (*bad >= a->max_bad_steps)
            loqt_die("%d steps in a row with a non-finite loss or gradient (last: step %ld): training diverged "
                     "(try a lower --lr or --grad-clipping 1)", *bad, step + 1);
        return;
    }
    *bad = 0;
    if (r->grad_norm == 0 && fabs(r->loss - log((double)t->cfg.vocab_size)) < 1e-3)
        loqt_die("the model is dead at step %ld: the loss is ln(vocab_size) = %.4f and the gradient is zero "
                 "(the activations overflowed; try a lower --lr)", step + 1, r->loss);
}

/* The steps from start_step to the end, with evaluations and checkpoints on their schedule;
 * returns the loss of the last step. */
/* The micro-batches of this rank: of the global batch's run.accum micro-batches, in the order one
 * process reads them, the rank's consecutive share (the others are skipped, not read). */
static void read_batches(const train_args *a, train_run *t) {
    const int N = a->run.batch_size * a->run.seq_len, B = a->run.batch_size, T = a->run.seq_len;
    for (int i = 0; i < a->run.accum; i++) {
        const int k = i - t->rank * t->accum;
        if (k >= 0 && k < t->accum) loader_next_batch(&t->train, B, T, t->inputs + (size_t)k * N, t->targets + (size_t)k * N);
        else loader_skip_batch(&t->train, B, T);
    }
}

/* The ranks stop together: a signal that reached any of them stops all after this step. */
static int stop_agreed(train_run *t) {
    double x = stop_signal ? 1 : 0;
    if (dp_sum(&t->dp, &x, 1)) loqt_die_last(NULL);
    if (x > 0 && !stop_signal) stop_signal = SIGTERM;
    return stop_signal != 0;
}

static double train_loop(const train_args *a, train_run *t) {
    const int N = a->run.batch_size * a->run.seq_len, accum = t->accum;
    const int tty = isatty(fileno(stdout));
    double t_start = cli_now(), last_loss = NAN;
    int bad = 0;
    for (long step = t->start_step; step < a->num_training_steps; step++) {
        double t0 = cli_now();
        uint64_t sent[DIST_NCHAN];
        for (int c = 0; c < DIST_NCHAN; c++) sent[c] = dist_bytes_sent((dist_channel)c);
        const double comm0 = dist_comm_seconds();
        read_batches(a, t);
        step_result r;
        if (train_step(&t->m, step, t->ins, t->tgs, accum, &t->h, &r)) loqt_die_last(NULL);
        t->tokens += (uint64_t)N * a->run.accum;
        const int stop = stop_agreed(t);
        for (int c = 0; c < DIST_NCHAN; c++) sent[c] = dist_bytes_sent((dist_channel)c) - sent[c];
        report_step(a, t, step, &r, cli_now() - t0, t_start, tty, sent, dist_comm_seconds() - comm0);
        check_step_health(a, t, step, &r, &bad);
        if (!r.skipped) last_loss = r.loss;
        int last = step + 1 == a->num_training_steps;
        if (a->eval_every > 0 && (step + 1) % a->eval_every == 0 && !last) {
            if (tty) printf("\n");
            do_eval(t, a->num_eval_tokens, step + 1);
        }
        const int saved_now = a->save_every > 0 && (step + 1) % a->save_every == 0 && !last;
        if (saved_now) {
            if (tty) printf("\n");
            save_checkpoint(t, a, step + 1, r.loss);
        }
        if (stop) {
            if (tty) printf("\n");
            if (!saved_now && !last) save_checkpoint(t, a, step + 1, r.loss);
            if (!last) {
                printf("stopped by signal %d after step %ld; continue with --resume latest\n", (int)stop_signal, step + 1);
                fflush(stdout);
                if (t->metrics) fclose(t->metrics);
                dist_finalize();
                exit(128 + stop_signal);
            }
        }
    }
    if (tty) printf("\n");
    return last_loss;
}

/* The final evaluation and checkpoint, the optional dense export, the memory report. */
/* Data parallel: every rank's bytes sent per channel and accounted peak, for the final metrics
 * line (gathered by a sum of vectors in which each rank fills its own row). */
static void dp_summary(train_run *t, FILE *f) {
    const int R = t->ranks, W = DIST_NCHAN + 1;
    double *v = calloc((size_t)R * W, sizeof *v);
    for (int c = 0; c < DIST_NCHAN; c++) v[t->rank * W + c] = (double)dist_bytes_sent((dist_channel)c);
    v[t->rank * W + DIST_NCHAN] = (double)mem_peak_total();
    if (dp_sum(&t->dp, v, R * W)) loqt_die_last(NULL);
    if (f) {
        fprintf(f, ", \"dp\": {\"ranks\": %d, \"zero\": %d, \"bytes_sent\": [", R, t->dp.zero);
        for (int r = 0; r < R; r++)
            fprintf(f, "%s{\"grads\": %.0f, \"params\": %.0f, \"control\": %.0f}", r ? ", " : "", v[r * W + DIST_GRADS],
                    v[r * W + DIST_PARAMS], v[r * W + DIST_CONTROL]);
        fprintf(f, "], \"accounted_peak\": [");
        for (int r = 0; r < R; r++) fprintf(f, "%s%.0f", r ? ", " : "", v[r * W + DIST_NCHAN]);
        fprintf(f, "]}");
    }
    free(v);
}

static void finish(const train_args *a, train_run *t, double last_loss, double t_start) {
    const long step = a->num_training_steps;
    double final_loss = do_eval(t, a->num_eval_tokens, step);
    save_checkpoint(t, a, step, last_loss);
    if (a->save_original_model && t->rank == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/original_model", a->output_dir);
        if (llama_export_dense(&t->m, dir)) loqt_die_last("--save-original-model");
        printf("wrote the merged dense model to %s\n", dir);
    }
    printf("trained %ld steps, %.2fM tokens in %.1f s; ", step - t->start_step, (double)(t->tokens) / 1e6,
           cli_now() - t_start);
    if (isfinite(final_loss)) printf("final held-out perplexity %.3f\n", exp(final_loss));
    else printf("no held-out evaluation (--num-eval-tokens 0, or a validation split too small)\n");
    print_stats(&t->m, "at the end");
    mem_report(stdout);
    if (t->metrics) {
        fprintf(t->metrics, "{\"final\": true, \"step\": %ld, \"eval_loss\": ", step);
        json_write_number(t->metrics, "%.6f", final_loss); /* null: no held-out evaluation */
        fprintf(t->metrics, ", \"memory\": ");
        mem_report_json(t->metrics);
        write_stats_json(&t->m, t->metrics);
    }
    if (t->ranks > 1) dp_summary(t, t->metrics);
    if (t->metrics) {
        fprintf(t->metrics, "}\n");
        check_metrics_written(t->metrics);
    }
}

static void release(train_run *t) {
    if (t->metrics) fclose(t->metrics);
    dp_free(&t->dp, &t->m);
    mem_free(t->inputs);
    mem_free(t->targets);
    free(t->ins);
    free(t->tgs);
    llama_free(&t->m);
    loader_close(&t->train);
    loader_close(&t->val);
}

int cmd_train_as(const char *command, int argc, char **argv) {
    command_name = command;
    return cmd_train(argc, argv);
}

int cmd_train(int argc, char **argv) {
    static train_args a;
    static train_run t;
    trainer_meta tm;
    if (dist_init(NULL, NULL)) loqt_die_last("mpirun");
    t.rank = dist_rank();
    t.ranks = dist_size();
    if (t.rank > 0) { /* rank 0 speaks for all: progress lines, metrics, checkpoints */
        if (!freopen("/dev/null", "w", stdout)) loqt_die("rank %d: cannot silence stdout", t.rank);
        setenv("LOQT_QUIET", "1", 1);
    }
    parse_args(&a, argc, argv);
    t.accum = a.run.accum / t.ranks;
    dist_set_timeout(a.dist_timeout);
    cli_set_threads(a.run.threads);
    locate_run(&a, &t);
    open_data(&a, &t);
    if (*t.resume_dir) resume_options(&a, &t, &tm);
    set_hparams(&a, &t.h);
    check_memory(&a, &t);
    if (a.dry_run) {
        plan_print(&t.plan, stdout);
        printf("dry run: the options, data%s and memory plan are fine; nothing was written\n",
               *t.resume_dir ? ", checkpoint" : "");
        dist_finalize();
        return 0;
    }
    claim_output_dir(&a, &t); /* after every check, so a refused run deletes nothing */
    create_model(&a, &t, &tm);
    if (t.rank == 0) {
        if (file_mkdir_p(a.output_dir)) loqt_die_last("--output-dir");
        if (*t.resume_dir) trim_metrics(a.output_dir, t.start_step);
        t.metrics = open_metrics(a.output_dir, *t.resume_dir != 0);
        write_plan(&a, &t);
    }
    print_header(&a, &t);
    alloc_batches(&a, &t);
    if (t.start_step == 0) do_eval(&t, a.num_eval_tokens, 0);
    install_signal_handlers();
    const double t_start = cli_now();
    double last_loss = train_loop(&a, &t);
    finish(&a, &t, last_loss, t_start);
    release(&t);
    dist_finalize();
    return 0;
}
