/* loqt eval: held-out perplexity of a checkpoint. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"

#include <math.h>
#include <stdio.h>

/* --per-token: every evaluated position's loss, -log p(target), as "index target loss" lines
 * (index counts the evaluated tokens from 0, in the order of the windows); returns the mean. */
static double per_token_losses(llama_model *m, data_loader *L, uint64_t max_tokens, const char *path,
                               uint64_t *count) {
    const int B = m->B, T = m->T, V = m->cfg.vocab_size;
    const uint64_t per = (uint64_t)B * T;
    uint64_t avail = loader_tokens(L) > 0 ? (loader_tokens(L) - 1) / per : 0;
    uint64_t batches = (max_tokens + per - 1) / per;
    if (batches > avail) batches = avail;
    FILE *f = fopen(path, "w");
    if (!f) loqt_die("--per-token %s: cannot open for writing", path);
    fprintf(f, "index\ttarget\tloss\n");
    int32_t *in = mem_alloc(MEM_DATA, sizeof(int32_t) * per), *tg = mem_alloc(MEM_DATA, sizeof(int32_t) * per);
    float *logits = mem_alloc(MEM_SCRATCH, sizeof(float) * per * (size_t)V);
    loader_seek(L, 0);
    double sum = 0;
    for (uint64_t b = 0; b < batches; b++) {
        loader_next_batch(L, B, T, in, tg);
        llama_forward(m, in, NULL, 0.0f, logits);
        for (uint64_t i = 0; i < per; i++) {
            const float *z = logits + i * (size_t)V;
            double mx = z[0], s = 0;
            for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
            const double loss = mx + log(s) - z[tg[i]];
            sum += loss;
            fprintf(f, "%llu\t%d\t%.6f\n", (unsigned long long)(b * per + i), tg[i], loss);
        }
    }
    if (fflush(f) != 0 || ferror(f)) loqt_die("--per-token %s: cannot write", path);
    fclose(f);
    mem_free(in);
    mem_free(tg);
    mem_free(logits);
    *count = batches * per;
    return *count ? sum / (double)*count : 0.0;
}

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *data = "data/corpus", *split = "val", *per_token = NULL, *adapter = NULL;
    int batch = 8, T = 256, threads = 0;
    long ntok = 1000000;
    const opt_spec specs[] = {
        {"adapter", OPT_STRING, &adapter, "a LoRA adapter in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors, e.g. from 'loqt export --format peft') to apply to the base model --checkpoint (fp32 base; all seven projections)", NULL},
        {"checkpoint", OPT_STRING, &ckpt, "checkpoint directory (from 'loqt train' or 'loqt export'), or a LLaMA in Hugging Face layout (config.json with model.safetensors or shards and model.safetensors.index.json; F32, F16 or BF16)", NULL},
        {"data", OPT_STRING, &data, "directory of token shards", NULL},
        {"split", OPT_STRING, &split, "which split to evaluate", "val|train"},
        {"num-eval-tokens", OPT_LONG, &ntok, "tokens to evaluate (from the start of the split)", NULL},
        {"batch-size", OPT_INT, &batch, "sequences per batch", NULL},
        {"max-length", OPT_INT, &T, "tokens per sequence", NULL},
        {"threads", OPT_INT, &threads, "CPU threads; 0 = all cores", NULL},
        {"per-token", OPT_STRING, &per_token, "also write each position's loss to this file (index, target id, loss; the logits of one batch are held at once)", NULL},
    };
    opts_parse(specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "eval",
               "Prints the mean token cross-entropy and perplexity exp(loss) of a checkpoint on\n"
               "held-out text, in non-overlapping windows of --max-length tokens.");
    if (!ckpt) loqt_usage_die("eval: --checkpoint is required");
    if (batch <= 0 || T <= 1 || ntok <= 0) loqt_usage_die("eval: --batch-size, --max-length and --num-eval-tokens must be positive");
    cli_set_threads(threads);
    llama_model m;
    cli_load_model(&m, ckpt, adapter);
    if (T > m.cfg.max_position_embeddings)
        loqt_usage_die("--max-length %d exceeds the model's max_position_embeddings %d", T, m.cfg.max_position_embeddings);
    char model_tok[32], data_tok[32];
    cli_checkpoint_tokenizer_hash(ckpt, model_tok, sizeof model_tok);
    cli_data_tokenizer_hash(data, data_tok, sizeof data_tok);
    cli_check_same_tokenizer(model_tok, data_tok, "--data");
    data_loader L;
    if (loader_open(&L, data, split)) loqt_die_last("--data");
    if (cli_is_pretrained_dir(ckpt)) cli_check_pretrained_vocab(m.cfg.vocab_size, loader_vocab_size(&L), ckpt);
    if (loader_vocab_size(&L) > (uint32_t)m.cfg.vocab_size)
        loqt_die("the data's vocabulary (%u) is larger than the model's (%d)", loader_vocab_size(&L), m.cfg.vocab_size);
    if (loader_check_batch(&L, batch, T)) loqt_die_last("--data");
    llama_set_batch(&m, batch, T);
    double loss = 0, t0 = cli_now();
    uint64_t n = 0;
    if (per_token) loss = per_token_losses(&m, &L, (uint64_t)ntok, per_token, &n);
    else n = cli_evaluate(&m, &L, (uint64_t)ntok, &loss);
    if (!n) loqt_die("the %s split has fewer than %d tokens: nothing to evaluate", split, batch * T + 1);
    printf("checkpoint: %s\nsplit: %s, %llu tokens in windows of %d\nloss: %.6f\nperplexity: %.4f\n"
           "time: %.1f s\n", ckpt, split, (unsigned long long)n, T, loss, exp(loss), cli_now() - t0);
    llama_free(&m);
    loader_close(&L);
    return 0;
}
