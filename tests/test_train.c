/* Training-loop properties: schedule values, resume equals an uninterrupted run bit for bit,
 * gradient accumulation equals one large batch, checkpoints are complete or absent, and bad
 * checkpoints give errors. */
#include "test.h"

#include "core/error.h"
#include "core/rng.h"
#include "methods/dense.h"
#include "model/checkpoint.h"
#include "model/train.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static llama_config tiny(void) {
    llama_config c = {"tiny", 32, 64, 2, 4, 4, 96, 64, 1e-6, 10000.0, 0};
    return c;
}

static void make_model(llama_model *m, int B, int T, uint64_t seed) {
    llama_config c = tiny();
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    if (llama_create(m, &c, method_find("full"), &mo, seed)) {
        printf("%s\n", loqt_last_error());
        exit(1);
    }
    llama_set_batch(m, B, T);
}

static void tokens(int32_t *in, int32_t *tg, int n, uint64_t step) {
    for (int i = 0; i < n; i++) {
        in[i] = (int32_t)(rng_u64(5, step, (uint64_t)i) % 96);
        tg[i] = (int32_t)(rng_u64(6, step, (uint64_t)i) % 96);
    }
}

static train_hparams hp(void) {
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = 3e-3;
    h.sched.warmup_steps = 2;
    h.sched.total_steps = 8;
    h.weight_decay = 0.01f;
    h.grad_clipping = 1.0f;
    return h;
}

static void run_steps(llama_model *m, long from, long to, float *losses) {
    enum { B = 2, T = 8 };
    int32_t in[2][B * T], tg[2][B * T];
    train_hparams h = hp();
    for (long s = from; s < to; s++) {
        tokens(in[0], tg[0], B * T, (uint64_t)s * 2);
        tokens(in[1], tg[1], B * T, (uint64_t)s * 2 + 1);
        const int32_t *ins[2] = {in[0], in[1]}, *tgs[2] = {tg[0], tg[1]};
        {
            step_result sr_;
            CHECK(train_step(m, s, ins, tgs, 2, &h, &sr_) == 0, "train_step: %s", loqt_last_error());
            losses[s] = (float)sr_.loss;
        }
    }
}

static void test_schedule_matches_reference_formula(void) {
    lr_schedule s = {SCHED_COSINE, 0.01, 10, 110, 0.1};
    CHECK_CLOSE(sched_lr(&s, 0), 0.0, 1e-12, 0);
    CHECK_CLOSE(sched_lr(&s, 5), 0.005, 1e-12, 0);
    CHECK_CLOSE(sched_lr(&s, 10), 0.01, 1e-12, 0);
    CHECK_CLOSE(sched_lr(&s, 60), 0.01 * (0.1 + 0.9 * 0.5), 1e-12, 0);
    CHECK_CLOSE(sched_lr(&s, 110), 0.001, 1e-12, 0);
    CHECK_CLOSE(sched_lr(&s, 500), 0.001, 1e-12, 0);
    s.kind = SCHED_LINEAR;
    CHECK_CLOSE(sched_lr(&s, 60), 0.01 * (0.1 + 0.9 * 0.5), 1e-12, 0);
}

static void test_resume_continues_identically(void) {
    float straight[8], resumed[8];
    llama_model a, b, c;
    make_model(&a, 2, 8, 42);
    run_steps(&a, 0, 8, straight);

    make_model(&b, 2, 8, 42);
    run_steps(&b, 0, 4, resumed);
    char dir[] = "/tmp/loqt_test_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char ck[300];
    snprintf(ck, sizeof ck, "%s/step-00000004", dir);
    trainer_meta tm = {.step = 4, .tokens_seen = 4 * 32, .data_position = 123, .seed = 42, .loss = resumed[3]};
    snprintf(tm.method, sizeof tm.method, "full");
    snprintf(tm.optimizer, sizeof tm.optimizer, "adamw");
    CHECK(checkpoint_save(&b, &tm, ck) == 0, "save: %s", loqt_last_error());
    llama_free(&b);

    trainer_meta back;
    CHECK(checkpoint_read_meta(ck, &back) == 0, "meta: %s", loqt_last_error());
    CHECK(back.step == 4 && back.data_position == 123 && back.seed == 42, "metadata round trip");
    make_model(&c, 2, 8, 999); /* a different init: everything must come from the checkpoint */
    CHECK(checkpoint_load(&c, ck, 0) == 0, "load: %s", loqt_last_error());
    run_steps(&c, 4, 8, resumed);
    for (int s = 0; s < 8; s++)
        CHECK(straight[s] == resumed[s], "step %d: %.9g (straight) != %.9g (resumed)", s, straight[s], resumed[s]);

    char latest[400];
    CHECK(checkpoint_find_latest(dir, latest, sizeof latest) == 0 && !strcmp(latest, ck), "latest = %s", latest);
    /* a left-over temporary directory is never taken for a checkpoint */
    char tmpck[400];
    snprintf(tmpck, sizeof tmpck, "%s/step-00000009.tmp", dir);
    mkdir(tmpck, 0755);
    CHECK(checkpoint_find_latest(dir, latest, sizeof latest) == 0 && !strcmp(latest, ck), "tmp ignored");
    rmdir(tmpck);

    /* a truncated model file: clear error, no crash */
    char mf[400];
    snprintf(mf, sizeof mf, "%s/model.safetensors", ck);
    CHECK(truncate(mf, 1000) == 0, "truncate");
    loqt_clear_error();
    CHECK(checkpoint_load(&c, ck, 0) != 0, "truncated checkpoint must fail");
    CHECK(strstr(loqt_last_error(), "model.safetensors") != NULL, "error names the file: %s", loqt_last_error());
    llama_free(&a);
    llama_free(&c);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* A model with a NaN weight is never written as a checkpoint: the save fails with a message
 * naming the tensor, and neither the checkpoint nor its .tmp directory is left behind. */
static void test_no_checkpoint_of_nan_weights(void) {
    llama_model m;
    make_model(&m, 2, 8, 7);
    m.blocks[1].attn_norm.w[3] = NAN;
    char dir[256];
    CHECK(test_make_tmpdir(dir, sizeof dir, "nanckpt") == 0, "tmpdir");
    char ck[300], tmp[320];
    snprintf(ck, sizeof ck, "%s/step-00000001", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", ck);
    trainer_meta tm = {.step = 1, .seed = 7};
    snprintf(tm.method, sizeof tm.method, "full");
    snprintf(tm.optimizer, sizeof tm.optimizer, "adamw");
    CHECK(checkpoint_save(&m, &tm, ck) == -1, "a checkpoint with a NaN weight was written");
    CHECK(strstr(loqt_last_error(), "model.layers.1.input_layernorm.weight") && strstr(loqt_last_error(), "non-finite"),
          "the message names the tensor: %s", loqt_last_error());
    CHECK(access(ck, F_OK) != 0 && access(tmp, F_OK) != 0, "a checkpoint or .tmp directory was left behind");
    llama_free(&m);
    rmdir(dir);
}

static void test_accumulation_equals_large_batch(void) {
    /* two micro-batches of 2 sequences == one batch of 4 sequences (same tokens) */
    enum { T = 8 };
    llama_model a, b;
    make_model(&a, 2, T, 7);
    make_model(&b, 4, T, 7);
    int32_t in[4 * T], tg[4 * T];
    tokens(in, tg, 4 * T, 77);
    train_hparams h = hp();
    h.sched.warmup_steps = 0;
    const int32_t *ia[2] = {in, in + 2 * T}, *ta[2] = {tg, tg + 2 * T};
    const int32_t *ib[1] = {in}, *tb[1] = {tg};
    step_result ra;
    CHECK(train_step(&a, 0, ia, ta, 2, &h, &ra) == 0, "train_step: %s", loqt_last_error());
    step_result rb;
    CHECK(train_step(&b, 0, ib, tb, 1, &h, &rb) == 0, "train_step: %s", loqt_last_error());
    CHECK_CLOSE(ra.loss, rb.loss, 1e-6, 1e-6);
    CHECK_CLOSE(ra.grad_norm, rb.grad_norm, 1e-7, 1e-5);
    float wa[32 * 64], wb[32 * 64];
    a.method->export_dense(&a.blocks[1].lin[LIN_UP], wa);
    b.method->export_dense(&b.blocks[1].lin[LIN_UP], wb);
    size_t where = 0;
    CHECK(test_max_violation(wa, wb, 64 * 32, 1e-7, 1e-5, &where) <= 1, "weights differ at %zu", where);
    llama_free(&a);
    llama_free(&b);
}

/* Per-layer updates with accumulation 4 equal the ordinary step (the reference implementations
 * step on every micro-batch instead), and so do they without accumulation, where every gradient
 * buffer is released after its update; activation checkpointing recomputes identical values. */
enum { ACC = 4 };
static void run_variant(llama_model *m, int per_layer, int ckpt, int acc, float *losses,
                        float *w_out) {
    enum { B = 2, T = 8 };
    llama_config c = tiny();
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    if (llama_create(m, &c, method_find("full"), &mo, 11)) exit(1);
    m->per_layer_updates = per_layer;
    m->checkpoint_activations = ckpt;
    llama_set_batch(m, B, T);
    train_hparams h = hp();
    h.grad_clipping = 0; /* global clipping cannot be combined with per-layer updates */
    int32_t in[ACC][B * T], tg[ACC][B * T];
    for (int s = 0; s < 4; s++) {
        const int32_t *ins[ACC], *tgs[ACC];
        for (int i = 0; i < acc; i++) {
            tokens(in[i], tg[i], B * T, (uint64_t)(s * ACC + i));
            ins[i] = in[i];
            tgs[i] = tg[i];
        }
        {
            step_result sr_;
            CHECK(train_step(m, s, ins, tgs, acc, &h, &sr_) == 0, "train_step: %s", loqt_last_error());
            losses[s] = (float)sr_.loss;
        }
    }
    m->method->export_dense(&m->blocks[0].lin[LIN_Q], w_out);
    memcpy(w_out + 32 * 32, m->embed.w, 96 * 32 * sizeof(float));
}

static void test_per_layer_updates_with_accumulation(void) {
    llama_model a, b;
    float la[4], lb[4], wa[32 * 32 + 96 * 32], wb[32 * 32 + 96 * 32];
    run_variant(&a, 0, 0, ACC, la, wa);
    run_variant(&b, 1, 0, ACC, lb, wb);
    for (int s = 0; s < 4; s++) CHECK_CLOSE(lb[s], la[s], 1e-6, 1e-6);
    size_t where = 0;
    /* the same arithmetic in a different order of layers: identical up to float rounding */
    CHECK(test_max_violation(wb, wa, 32 * 32 + 96 * 32, 1e-7, 1e-5, &where) <= 1, "weights differ at %zu", where);
    llama_free(&a);
    llama_free(&b);
}

static void test_per_layer_updates_release_gradients(void) {
    llama_model a, b;
    float la[4], lb[4], wa[32 * 32 + 96 * 32], wb[32 * 32 + 96 * 32];
    run_variant(&a, 0, 0, 1, la, wa);
    run_variant(&b, 1, 0, 1, lb, wb);
    for (int s = 0; s < 4; s++) CHECK_CLOSE(lb[s], la[s], 1e-6, 1e-6);
    size_t where = 0;
    CHECK(test_max_violation(wb, wa, 32 * 32 + 96 * 32, 1e-7, 1e-5, &where) <= 1, "weights differ at %zu", where);
    CHECK(a.embed.g && a.lm_head.g, "the ordinary step keeps the gradient buffers");
    CHECK(!b.embed.g && !b.lm_head.g, "per-layer updates without accumulation release the vocabulary-sized gradients");
    CHECK(b.blocks[0].attn_norm.g != NULL, "the norms keep their (small) gradient buffers");
    llama_free(&a);
    llama_free(&b);
}

static void test_activation_checkpointing_is_exact(void) {
    llama_model a, b;
    float la[4], lb[4], wa[32 * 32 + 96 * 32], wb[32 * 32 + 96 * 32];
    run_variant(&a, 0, 0, ACC, la, wa);
    run_variant(&b, 0, 1, ACC, lb, wb);
    for (int s = 0; s < 4; s++) CHECK(la[s] == lb[s], "step %d: %.9g vs %.9g", s, la[s], lb[s]);
    CHECK(memcmp(wa, wb, sizeof wa) == 0, "weights differ");
    CHECK(b.acts[1].q == NULL && b.work.q != NULL, "checkpointing keeps one block of activations");
    llama_free(&a);
    llama_free(&b);
}

static void test_init_is_deterministic_and_scaled(void) {
    llama_model a, b;
    make_model(&a, 1, 4, 3);
    make_model(&b, 1, 4, 3);
    CHECK(memcmp(a.embed.w, b.embed.w, a.embed.n * sizeof(float)) == 0, "same seed, same init");
    double ss = 0;
    for (size_t i = 0; i < a.embed.n; i++) ss += (double)a.embed.w[i] * a.embed.w[i];
    double sd = sqrt(ss / a.embed.n);
    /* 3072 samples of N(0, 0.02): the sample std is within 5% with overwhelming probability */
    CHECK_CLOSE(sd, 0.02, 0.001, 0);
    CHECK(a.final_norm.w[0] == 1.0f, "norm weights start at 1");
    llama_free(&a);
    llama_free(&b);
}

static void test_config_errors(void) {
    llama_config c;
    CHECK(config_load(&c, "60m") == 0 && c.hidden_size == 512 && c.num_hidden_layers == 8, "60m");
    CHECK(config_load(&c, "llama_7b") == 0 && c.intermediate_size == 11008, "7b");
    CHECK(config_load(&c, "61m") != 0, "unknown name");
    const char *bad[] = {
        "{}", "[1]", "{\"hidden_size\": 64}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 3, \"vocab_size\": 10}",
        "{\"hidden_size\": 64.5, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}",
        "{\"hidden_size\": -64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}",
        /* key/value heads that do not divide the query heads; a head_dim that is not hidden / heads */
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"num_key_value_heads\": 3}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"num_key_value_heads\": 0}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"head_dim\": 8}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"tie_word_embeddings\": 1}",
        "{\"hidden_size\": \"64\", \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}",
        "{\"hidden_size\": 64, ",
        /* a key loqt does not know (misspelt), and keys with values loqt does not implement */
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"max_position_embedding\": 512}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"hidden_act\": \"gelu\"}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"attention_bias\": true}",
        "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"model_type\": \"mistral\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        loqt_clear_error();
        CHECK(config_parse(&c, bad[i], strlen(bad[i]), "cfg") != 0, "accepted bad config %zu", i);
        CHECK(strchr(loqt_last_error(), '\n') == NULL && strlen(loqt_last_error()) > 5, "message");
    }
    const char *good = "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"vocab_size\": 10}";
    CHECK(config_parse(&c, good, strlen(good), "cfg") == 0 && c.max_position_embeddings == 2048, "defaults");
    /* the keys of a Hugging Face LlamaConfig that do not change the model are accepted */
    const char *hf = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_act\": \"silu\", "
                     "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                     "\"vocab_size\": 10, \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"bfloat16\", "
                     "\"initializer_range\": 0.02, \"use_cache\": true, \"attention_bias\": false, \"pretraining_tp\": 1}";
    CHECK(config_parse(&c, hf, strlen(hf), "cfg") == 0, "a HF LlamaConfig: %s", loqt_last_error());
    /* grouped-query attention, tied embeddings and a consistent head_dim are accepted */
    const char *gqa = "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                      "\"num_key_value_heads\": 2, \"head_dim\": 16, \"vocab_size\": 10, \"tie_word_embeddings\": true}";
    CHECK(config_parse(&c, gqa, strlen(gqa), "cfg") == 0 && c.num_key_value_heads == 2 && c.tie_word_embeddings &&
              config_kv_dim(&c) == 32, "GQA + tied: %s", loqt_last_error());
    /* a tied model has one vocabulary matrix: 2 * (2*64*64 + 2*64*32 + 3*64*128) + 10*64 + 5*64 */
    CHECK(config_params_total(&c) == 2LL * (8192 + 4096 + 24576) + 640 + 320, "GQA + tied parameters: %lld",
          config_params_total(&c));
    const char *typo = "{\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"vocab_size\": 10, \"max_position_embedding\": 512}";
    config_parse(&c, typo, strlen(typo), "cfg");
    CHECK(strstr(loqt_last_error(), "max_position_embedding"), "the message names the key: %s", loqt_last_error());
}

static void test_builtin_configs_match_json_files(void) {
    for (int i = 0; i < config_builtin_count(); i++) {
        const llama_config *b = config_builtin(i);
        char path[128];
        snprintf(path, sizeof path, "configs/llama_%s.json", b->name);
        llama_config c;
        CHECK(config_load(&c, path) == 0, "%s: %s", path, loqt_last_error());
        CHECK(c.hidden_size == b->hidden_size && c.intermediate_size == b->intermediate_size &&
                  c.num_hidden_layers == b->num_hidden_layers && c.num_attention_heads == b->num_attention_heads &&
                  c.vocab_size == b->vocab_size && c.max_position_embeddings == b->max_position_embeddings,
              "%s differs from the built-in", path);
    }
}

int main(void) {
    RUN(test_schedule_matches_reference_formula);
    RUN(test_resume_continues_identically);
    RUN(test_no_checkpoint_of_nan_weights);
    RUN(test_accumulation_equals_large_batch);
    RUN(test_per_layer_updates_with_accumulation);
    RUN(test_per_layer_updates_release_gradients);
    RUN(test_activation_checkpointing_is_exact);
    RUN(test_init_is_deterministic_and_scaled);
    RUN(test_config_errors);
    RUN(test_builtin_configs_match_json_files);
    TEST_END();
}
