/* libFuzzer target for the state loaders of every method and optimizer: the input is a
 * safetensors file given to each registered method's load() as both its model and its state file
 * (weights, factors, codes, P, Adam's fp32 and 8-bit moments), on a fresh small layer.  Nothing
 * may crash or read out of bounds whatever the file holds; a rejection is one line.
 *
 * FUZZ_WRITE_SEEDS=DIR: instead of fuzzing, write the checkpoint tensors of each method's layer
 * after two steps (with AdamW and with 8-bit Adam) to DIR as seeds, and exit. */
#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "methods/linear.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OUT = 96, IN = 48, N = 8 }; /* 8-bit Adam keeps 8-bit moments for the dense 96 x 48 */

static void make(linear_layer *L, const linear_method *m, optim_kind ok) {
    method_opts o;
    method_opts_defaults(&o, m);
    o.optimizer = ok;
    const method_option *r = method_option_find(m, "rank"), *g = method_option_find(m, "update-proj-gap");
    if (r) method_option_set(&o, r, 4);
    if (g) method_option_set(&o, g, 1);
    memset(L, 0, sizeof *L);
    L->m = m;
    L->out = OUT;
    L->in = IN;
    snprintf(L->name, sizeof L->name, "model.layers.0.mlp.up_proj");
    linear_init ini = {0};
    if (m->init(L, &o, &ini)) abort();
}

static void write_seeds(const char *dir) {
    static float X[N * IN], dY[N * OUT];
    for (int i = 0; i < N * IN; i++) X[i] = rng_normal(1, 1, (uint64_t)i);
    for (int i = 0; i < N * OUT; i++) dY[i] = rng_normal(1, 2, (uint64_t)i);
    for (int k = 0; k < method_count(); k++)
        for (int ok = 0; ok < 2; ok++) {
            const linear_method *m = method_at(k);
            linear_layer L;
            make(&L, m, ok ? OPTIM_ADAM8BIT : OPTIM_ADAMW);
            for (long s = 0; s < 2; s++) {
                optim_hparams h = {.kind = ok ? OPTIM_ADAM8BIT : OPTIM_ADAMW, .lr = 0.01f, .beta1 = 0.9f,
                                   .beta2 = 0.999f, .eps = 1e-6f, .grad_scale = 1, .t = s + 1};
                m->zero_grad(&L);
                if (m->begin_step) m->begin_step(&L, s);
                m->backward(&L, X, dY, NULL, N, 0);
                if (m->end_step && m->end_step(&L, s)) abort();
                if (m->step(&L, &h)) abort();
            }
            st_writer *w = st_writer_new();
            m->save(&L, w, w); /* model and state tensors in one file, as the fuzzer passes it */
            char path[512];
            snprintf(path, sizeof path, "%s/%s-%s.safetensors", dir, m->name, ok ? "adam8bit" : "adamw");
            if (st_writer_write(w, path)) abort();
            st_writer_free(w);
            m->free(&L);
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    if (st_open_memory(&f, "fuzz.safetensors", data, size)) return 0;
    for (int k = 0; k < method_count(); k++)
        for (int ok = 0; ok < 2; ok++) {
            const linear_method *m = method_at(k);
            linear_layer L;
            make(&L, m, ok ? OPTIM_ADAM8BIT : OPTIM_ADAMW);
            loqt_clear_error();
            if (m->load(&L, &f, &f) && (strchr(loqt_last_error(), '\n') || !loqt_last_error()[0])) abort();
            m->free(&L);
        }
    st_close(&f);
    return 0;
}
