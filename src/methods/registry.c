#include "methods/linear.h"

#include "core/rng.h"

#include <string.h>

extern const linear_method method_dense;

static const linear_method *const methods[] = {&method_dense};

const linear_method *method_find(const char *name) {
    if (!strcmp(name, "dense") || !strcmp(name, "adamw")) name = "full";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

const char *method_names(void) { return "full"; }

void method_opts_defaults(method_opts *o) {
    memset(o, 0, sizeof *o);
    o->rank = 128;
    o->lora_alpha = 0.5;
    o->update_proj_gap = 50;
    o->proj_gap_progression = "static";
    o->increment_size = 1.2;
    o->quantize_w = "4bit";
    o->quantize_projection_matrix = "4bit";
    o->merge_optimizer_state = "keep";
    o->galore_scale = 0.25;
    o->optimizer = OPTIM_ADAMW;
}

float *linear_random_init(const linear_layer *L, uint64_t seed, mem_cat cat) {
    size_t n = (size_t)L->out * L->in;
    float *W = mem_alloc(cat, n * sizeof(float));
    rng_fill_normal(W, n, 0.02f, seed, rng_stream_id(L->name));
    return W;
}
