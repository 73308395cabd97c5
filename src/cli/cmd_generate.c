/* loqt generate: sample text from a checkpoint with temperature and nucleus (top-p) sampling. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "data/corpus.h"
#include "io/fileutil.h"
#include "core/rng.h"
#include "data/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float p;
    int id;
} prob_id;

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const prob_id *)a)->p, y = ((const prob_id *)b)->p;
    return x < y ? 1 : x > y ? -1 : ((const prob_id *)a)->id - ((const prob_id *)b)->id;
}

/* Samples from softmax(logits / temperature) restricted to the smallest set of tokens whose
 * probability reaches top_p.  temperature 0 = greedy. */
static int sample(const float *logits, int V, float temperature, float top_p, rng_state *r,
                  prob_id *buf) {
    if (temperature <= 0) {
        int best = 0;
        for (int i = 1; i < V; i++) best = logits[i] > logits[best] ? i : best;
        return best;
    }
    float mx = logits[0];
    for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        buf[i].p = expf((logits[i] - mx) / temperature);
        buf[i].id = i;
        sum += buf[i].p;
    }
    qsort(buf, (size_t)V, sizeof *buf, by_prob_desc);
    double cut = top_p * sum, acc = 0;
    int k = 0;
    while (k < V && (acc < cut || k == 0)) acc += buf[k++].p;
    double u = rng_next_uniform(r) * acc, c = 0;
    for (int i = 0; i < k; i++) {
        c += buf[i].p;
        if (u < c) return buf[i].id;
    }
    return buf[k - 1].id;
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *tok_path = "data/llama.tok", *prompt = "The", *adapter = NULL;
    int max_new = 64, threads = 0;
    double temperature = 0.8, top_p = 0.9;
    long seed = 0;
    const opt_spec specs[] = {
        {"adapter", OPT_STRING, &adapter, "a LoRA adapter in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors, e.g. from 'loqt export --format peft') to apply to the base model --checkpoint (fp32 base; all seven projections)", NULL},
        {"checkpoint", OPT_STRING, &ckpt, "checkpoint directory, a dense export, or a LLaMA in Hugging Face layout (config.json with model.safetensors or shards and model.safetensors.index.json)", NULL},
        {"tokenizer", OPT_STRING, &tok_path, "tokenizer file (from 'make tokenizer')", NULL},
        {"prompt", OPT_STRING, &prompt, "text to continue", NULL},
        {"max-new-tokens", OPT_INT, &max_new, "tokens to generate", NULL},
        {"temperature", OPT_FLOAT, &temperature, "sampling temperature; 0 = greedy", NULL},
        {"top-p", OPT_FLOAT, &top_p, "nucleus sampling: keep the most likely tokens up to this total probability", NULL},
        {"seed", OPT_LONG, &seed, "sampling seed", NULL},
        {"threads", OPT_INT, &threads, "CPU threads; 0 = all cores", NULL},
    };
    opts_parse(specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "generate",
               "Continues --prompt with text sampled from the model and prints it.");
    if (!ckpt) loqt_usage_die("generate: --checkpoint is required");
    if (max_new <= 0 || temperature < 0 || !(top_p > 0 && top_p <= 1))
        loqt_usage_die("generate: need --max-new-tokens > 0, --temperature >= 0, 0 < --top-p <= 1");
    cli_set_threads(threads);
    tokenizer *tk = tokenizer_load(tok_path);
    if (!tk) loqt_die_last("--tokenizer");
    {   /* the tokenizer the checkpoint's data was made with, when it is known */
        size_t len = 0;
        char *bytes = file_read_all(tok_path, (size_t)256 << 20, &len), model_tok[32], tok[32];
        snprintf(tok, sizeof tok, "%016llx", bytes ? (unsigned long long)corpus_hash(bytes, len) : 0ull);
        mem_free(bytes);
        cli_checkpoint_tokenizer_hash(ckpt, model_tok, sizeof model_tok);
        cli_check_same_tokenizer(model_tok, tok, "--tokenizer");
    }
    llama_model m;
    cli_load_model(&m, ckpt, adapter);
    const int V = m.cfg.vocab_size, Vt = tokenizer_vocab_size(tk) < V ? tokenizer_vocab_size(tk) : V;
    if (tokenizer_vocab_size(tk) > V) loqt_die("the tokenizer has more pieces than the model's vocab_size");
    int32_t *ids = NULL;
    long n = tokenizer_encode(tk, prompt, strlen(prompt), 1, &ids);
    if (n < 0) loqt_die_last("--prompt");
    /* room for the prompt (at least BOS) and every new token; refused, not crashed, when the
     * memory is not there */
    int32_t *grown = realloc(ids, sizeof(int32_t) * (size_t)((n > 0 ? n : 1) + (long)max_new));
    prob_id *buf = malloc(sizeof *buf * (size_t)V);
    if (!grown || !buf)
        loqt_die("generate: out of memory for %ld prompt + %d new tokens (lower --max-new-tokens)", n, max_new);
    ids = grown;
    if (n == 0) { /* an empty prompt: start from BOS alone */
        ids[0] = TOK_BOS;
        n = 1;
    }
    const int ctx = m.cfg.max_position_embeddings;
    rng_state r = {(uint64_t)seed, 0x67656e, 0};
    printf("%s", prompt);
    fflush(stdout);
    for (int i = 0; i < max_new; i++) {
        /* no key/value cache: each token re-runs the (short) context; the models this is for are small */
        int start = n > ctx ? (int)(n - ctx) : 0, T = (int)(n - start);
        llama_set_batch(&m, 1, T);
        float *logits = malloc(sizeof(float) * (size_t)T * V);
        if (!logits) loqt_die("generate: out of memory for the logits of %d tokens", T);
        llama_forward(&m, ids + start, NULL, 0.0f, logits);
        /* a model vocabulary larger than the tokenizer's (padded): ids the tokenizer cannot
         * decode are never sampled, so the text is not cut short at one */
        int next = sample(logits + (size_t)(T - 1) * V, Vt, (float)temperature, (float)top_p, &r, buf);
        free(logits);
        if (next == TOK_EOS) break;
        /* print the newly decoded suffix: decode(all) minus decode(all but the new token) */
        char *before = tokenizer_decode(tk, ids, (size_t)n);
        ids[n++] = next;
        char *after = tokenizer_decode(tk, ids, (size_t)n);
        if (before && after && strlen(after) >= strlen(before)) printf("%s", after + strlen(before));
        fflush(stdout);
        free(before);
        free(after);
    }
    printf("\n");
    free(buf);
    free(ids);
    llama_free(&m);
    tokenizer_free(tk);
    return 0;
}
