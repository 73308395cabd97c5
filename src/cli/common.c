#include "cli/commands.h"

#include "core/error.h"
#include "core/json.h"
#include "core/progress.h"
#include "io/fileutil.h"
#include "kernels/gemm.h"
#include "core/mem.h"
#include "model/checkpoint.h"
#include "model/peft.h"
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
    double sum = 0;
    const uint64_t n = cli_evaluate_part(m, L, max_tokens, 0, 1, &sum);
    *mean_loss = n ? sum / (double)n : 0.0;
    return n;
}

uint64_t cli_evaluate_part(llama_model *m, data_loader *L, uint64_t max_tokens, int part, int parts,
                           double *loss_sum) {
    const int B = m->B, T = m->T;
    const uint64_t per = (uint64_t)B * T;
    uint64_t avail = loader_tokens(L) > 0 ? (loader_tokens(L) - 1) / per : 0;
    uint64_t batches = (max_tokens + per - 1) / per;
    if (batches > avail) batches = avail;
    int32_t *in = malloc(sizeof(int32_t) * per), *tg = malloc(sizeof(int32_t) * per);
    uint64_t saved = loader_position(L);
    loader_seek(L, 0);
    double sum = 0;
    uint64_t mine = 0;
    for (uint64_t i = 0; i < batches; i++) {
        if ((int)(i % (uint64_t)parts) != part) {
            loader_skip_batch(L, B, T);
            continue;
        }
        loader_next_batch(L, B, T, in, tg);
        sum += llama_forward(m, in, tg, 0.0f, NULL) * (double)per;
        mine++;
    }
    loader_seek(L, saved);
    free(in);
    free(tg);
    *loss_sum = sum;
    return mine * per;
}

void cli_load_checkpoint(llama_model *m, const char *dir, int weights_only) {
    llama_config cfg;
    trainer_meta tm;
    if (checkpoint_read_config(dir, &cfg)) loqt_die_last(NULL);
    char state[4096];
    snprintf(state, sizeof state, "%s/trainer_state.safetensors", dir);
    if (access(state, F_OK) != 0) {
        /* a plain dense LLaMA (from `loqt export`, or a Hugging Face directory, sharded or not):
         * weights only, read tensor by tensor into a full-rank model */
        if (!weights_only) loqt_die("%s: no trainer state in this checkpoint; it cannot be resumed", dir);
        method_opts mo;
        method_opts_defaults(&mo, method_find("full"));
        if (llama_load_pretrained(m, &cfg, method_find("full"), &mo, 0, dir)) loqt_die_last(NULL);
        return;
    }
    if (checkpoint_read_meta(dir, &tm)) {
        loqt_die_last(NULL);
    }
    const linear_method *meth = method_find(tm.method);
    if (!meth) loqt_die("%s: checkpoint uses method '%s', which this build does not know", dir, tm.method);
    if (llama_create(m, &cfg, meth, &tm.mopts, tm.seed)) loqt_die_last(dir);
    if (checkpoint_load(m, dir, weights_only)) loqt_die_last(NULL);
}

void cli_load_model(llama_model *m, const char *dir, const char *adapter) {
    if (!adapter) {
        cli_load_checkpoint(m, dir, 1);
        return;
    }
    if (!cli_is_pretrained_dir(dir))
        loqt_usage_die("--adapter %s: --checkpoint %s is a training checkpoint; an adapter applies to a base model (a "
                       "Hugging Face directory or an export, e.g. the OUT/base of 'loqt export --format peft --with-base')",
                       adapter, dir);
    if (peft_create_model(m, dir, adapter)) loqt_die_last(NULL);
}

void cli_check_memory(const plan_input *pin, const char *max_memory, plan *out) {
    size_t limit = mem_physical();
    if (max_memory && plan_parse_bytes(max_memory, &limit)) loqt_usage_die("--max-memory: %s", loqt_last_error());
    plan p;
    if (plan_make(&p, pin)) loqt_die_last("memory plan");
    if (out) *out = p;
    if (limit && plan_check_fits(&p, limit)) loqt_die_last(NULL); /* limit 0: physical memory unknown, none given */
}

void cli_data_tokenizer_hash(const char *data_dir, char *out, size_t cap) {
    char path[4096];
    out[0] = 0;
    snprintf(path, sizeof path, "%s/manifest.json", data_dir);
    size_t len = 0;
    char *text = file_read_all(path, (size_t)16 << 20, &len);
    if (!text) return;
    json_value *v = json_parse(text, len);
    const json_value *h = v && v->type == JSON_OBJECT ? json_get(v, "tokenizer_hash") : NULL;
    if (h && h->type == JSON_STRING) snprintf(out, cap, "%s", h->string);
    json_free(v);
    mem_free(text);
}

void cli_checkpoint_tokenizer_hash(const char *ckpt_dir, char *out, size_t cap) {
    trainer_meta tm;
    out[0] = 0;
    char state[4200];
    snprintf(state, sizeof state, "%s/trainer_state.safetensors", ckpt_dir);
    if (access(state, F_OK) != 0 || checkpoint_read_meta(ckpt_dir, &tm) || !tm.run_options[0]) return;
    json_value *v = json_parse(tm.run_options, strlen(tm.run_options));
    const json_value *h = v && v->type == JSON_OBJECT ? json_get(v, "tokenizer_hash") : NULL;
    if (h && h->type == JSON_STRING) snprintf(out, cap, "%s", h->string);
    json_free(v);
}

void cli_check_same_tokenizer(const char *model_hash, const char *other_hash, const char *what) {
    if (model_hash[0] && other_hash[0] && strcmp(model_hash, other_hash))
        loqt_die("%s was made with another tokenizer (hash %s) than the model was trained on (%s): its token ids "
                 "mean other text", what, other_hash, model_hash);
}

int cli_is_pretrained_dir(const char *dir) {
    char state[4200];
    snprintf(state, sizeof state, "%s/trainer_state.safetensors", dir);
    return access(state, F_OK) != 0;
}

void cli_check_pretrained_vocab(int model_vocab, uint32_t data_vocab, const char *dir) {
    if ((uint32_t)model_vocab != data_vocab)
        loqt_die("%s: the model's vocab_size %d differs from the data's vocabulary %u: the data was tokenized "
                 "with another tokenizer than the model's, so its token ids would mean other text", dir,
                 model_vocab, data_vocab);
}
