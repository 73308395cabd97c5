/* The model against an independent PyTorch implementation (tests/gen_llama_ref.py): logits, loss,
 * every parameter gradient, and 10 AdamW steps with accumulation, clipping, weight decay and the
 * warmup + cosine schedule. */
#include "test.h"

#include "core/error.h"
#include "core/json.h"
#include "model/checkpoint.h"
#include "methods/dense.h"
#include "model/train.h"

#include <stdlib.h>

static const char *ref_dir(void) {
    const char *d = getenv("LOQT_REF_DIR");
    return d ? d : "build/ref";
}

static int open_ref(st_file *f, const char *name, llama_model *m, int B, int T) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", ref_dir(), name);
    if (st_open(f, path)) {
        printf("    cannot open %s: %s\n", path, loqt_last_error());
        return -1;
    }
    llama_config cfg;
    const char *cj = st_meta(f, "config");
    if (!cj || config_parse(&cfg, cj, strlen(cj), "reference config")) {
        printf("    bad reference config: %s\n", loqt_last_error());
        return -1;
    }
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    if (llama_create(m, &cfg, method_find("full"), &mo, 1)) return -1;
    llama_set_batch(m, B, T);
    if (llama_load_tensors(m, f, NULL)) {
        printf("    load: %s\n", loqt_last_error());
        return -1;
    }
    return 0;
}

static int meta_int(const st_file *f, const char *k) {
    const char *v = st_meta(f, k);
    return v ? atoi(v) : -1;
}
static double meta_num(const st_file *f, const char *k) {
    const char *v = st_meta(f, k);
    return v ? atof(v) : NAN;
}

/* Compares float buffer a with tensor `name` of the reference; tolerance |a-b| <= atol + rtol|b|. */
static void check_tensor(const st_file *f, const char *name, const float *a, size_t n, double atol,
                         double rtol) {
    const st_tensor *t = st_find(f, name);
    CHECK(t != NULL, "reference tensor %s missing", name);
    if (!t) return;
    CHECK(t->nbytes == n * sizeof(float), "%s: size %zu != %zu", name, t->nbytes / 4, n);
    if (t->nbytes != n * sizeof(float)) return;
    const float *b = st_data(f, t);
    size_t where = 0;
    double v = test_max_violation(a, b, n, atol, rtol, &where);
    CHECK(v <= 1.0, "%s: worst element %zu: %.9g vs reference %.9g (atol %g rtol %g)", name, where,
          a[where], b[where], atol, rtol);
}

static void for_each_param(llama_model *m, const st_file *f, const char *prefix, int grads,
                           double atol, double rtol) {
    char name[200];
    for (int i = 0; i < llama_dense_count(m); i++) {
        const dense_param *p = llama_dense_at(m, i);
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        check_tensor(f, name, grads ? p->g : p->w, p->n, atol, rtol);
    }
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            linear_layer *L = &m->blocks[l].lin[j];
            size_t sz = (size_t)L->out * L->in;
            float *buf = malloc(sz * sizeof(float));
            if (grads) {
                memcpy(buf, dense_grad(L), sz * sizeof(float));
            } else {
                m->method->export_dense(L, buf);
            }
            snprintf(name, sizeof name, "%s%s.weight", prefix, L->name);
            check_tensor(f, name, buf, sz, atol, rtol);
            free(buf);
        }
}

static void test_forward_backward(const char *file, int B, int T) {
    st_file f;
    llama_model m;
    if (open_ref(&f, file, &m, B, T)) {
        CHECK(0, "setup failed");
        return;
    }
    const st_tensor *ti = st_find(&f, "inputs"), *tt = st_find(&f, "targets");
    CHECK(ti && tt, "inputs/targets missing");
    if (!ti || !tt) return;
    const int32_t *in = st_data(&f, ti), *tg = st_data(&f, tt);
    const int V = m.cfg.vocab_size, N = B * T;
    float *logits = malloc(sizeof(float) * (size_t)N * V);
    llama_zero_grad(&m);
    double loss = llama_forward(&m, in, tg, 1.0f / N, logits);
    llama_backward(&m, in);
    const float *ref_loss = st_data(&f, st_find(&f, "loss"));
    /* fp32 throughout on both sides: agreement to ~1e-6 relative is expected; the tolerances
     * leave room for different summation orders only */
    CHECK_CLOSE(loss, ref_loss[0], 1e-5, 1e-5);
    check_tensor(&f, "logits", logits, (size_t)N * V, 1e-5, 1e-4);
    for_each_param(&m, &f, "grad.", 1, 1e-7, 2e-3);
    free(logits);
    llama_free(&m);
    st_close(&f);
}

static void test_reference_forward_backward(void) { test_forward_backward("llama_ref.safetensors", 2, 16); }
static void test_reference_long_sequence(void) { test_forward_backward("llama_ref_long.safetensors", 1, 64); }
/* grouped-query attention (2 key/value heads for 4 query heads) with the embedding tied to the
 * output layer: the reference has no lm_head.weight, and grad.model.embed_tokens.weight is the
 * sum of both uses */
static void test_reference_gqa_tied(void) { test_forward_backward("llama_ref_gqa_tied.safetensors", 2, 16); }

static void adamw_steps(const char *file) {
    st_file f;
    llama_model m;
    if (open_ref(&f, file, &m, 2, 16)) {
        CHECK(0, "setup failed");
        return;
    }
    const int accum = meta_int(&f, "accum"), steps = meta_int(&f, "steps");
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = meta_num(&f, "lr");
    h.sched.warmup_steps = meta_int(&f, "warmup_steps");
    h.sched.total_steps = steps;
    h.sched.min_lr_ratio = meta_num(&f, "min_lr_ratio");
    h.weight_decay = (float)meta_num(&f, "weight_decay");
    h.grad_clipping = (float)meta_num(&f, "grad_clip");
    h.beta1 = (float)meta_num(&f, "beta1");
    h.beta2 = (float)meta_num(&f, "beta2");
    h.eps = (float)meta_num(&f, "eps");
    CHECK(accum == 2 && steps == 10 && !isnan(h.sched.lr), "reference metadata incomplete");
    const int32_t *in = st_data(&f, st_find(&f, "inputs")), *tg = st_data(&f, st_find(&f, "targets"));
    const int N = 2 * 16;
    const int32_t *ins[2] = {in, in + N}, *tgs[2] = {tg, tg + N};
    float losses[10];
    for (int s = 0; s < steps && s < 10; s++) {
        step_result r;
    CHECK(train_step(&m, s, ins, tgs, accum, &h, &r) == 0, "train_step: %s", loqt_last_error());
        losses[s] = (float)r.loss;
    }
    check_tensor(&f, "losses", losses, 10, 1e-5, 1e-5);
    /* Adam divides by sqrt(v): tiny gradient differences move weights by up to ~lr * 1e-3 */
    for_each_param(&m, &f, "final.", 0, 2e-5, 1e-3);
    llama_free(&m);
    st_close(&f);
}

static void test_reference_adamw_steps(void) { adamw_steps("llama_ref.safetensors"); }
static void test_reference_gqa_tied_adamw_steps(void) { adamw_steps("llama_ref_gqa_tied.safetensors"); }

int main(void) {
    RUN(test_reference_forward_backward);
    RUN(test_reference_long_sequence);
    RUN(test_reference_adamw_steps);
    RUN(test_reference_gqa_tied);
    RUN(test_reference_gqa_tied_adamw_steps);
    TEST_END();
}
