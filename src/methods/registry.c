#include "methods/linear.h"

#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"

#include <string.h>

extern const linear_method method_dense, method_loqt;

static const linear_method *const methods[] = {&method_dense, &method_loqt};

const linear_method *method_find(const char *name) {
    if (!strcmp(name, "dense") || !strcmp(name, "adamw")) name = "full";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

const char *method_names(void) { return "full|loqt"; }

void method_opts_defaults(method_opts *o) {
    memset(o, 0, sizeof *o);
    o->rank = 128;
    o->lora_alpha = 0.5;
    o->update_proj_gap = 50;
    o->proj_gap_progression = GAP_STATIC;
    o->increment_size = 1.2;
    o->quantize_w = 1;
    o->quantize_projection = 1;
    o->merge_reset_optimizer = 1;
    o->galore_scale = 0.25;
    o->optimizer = OPTIM_ADAMW;
}

const char *gap_progression_name(gap_progression g) {
    return g == GAP_EXPONENTIAL ? "exponential" : g == GAP_LINEAR ? "linear" : "static";
}

int gap_progression_parse(const char *s, gap_progression *out) {
    if (!strcmp(s, "static")) *out = GAP_STATIC;
    else if (!strcmp(s, "linear")) *out = GAP_LINEAR;
    else if (!strcmp(s, "exponential")) *out = GAP_EXPONENTIAL;
    else return loqt_set_error("unknown projection gap progression '%s' (static, linear, exponential)", s);
    return 0;
}

void method_opts_write_json(const method_opts *o, FILE *f) {
    fprintf(f,
            "{\"rank\": %d, \"lora_alpha\": %.17g, \"update_proj_gap\": %d, "
            "\"proj_gap_progression\": \"%s\", \"increment_size\": %.17g, \"max_proj_gap\": %d, "
            "\"compensate_quant_error_iterations\": %d, \"quantize_w\": %d, "
            "\"quantize_projection\": %d, \"use_double_quant\": %d, \"merge_reset_optimizer\": %d, "
            "\"lowrank_fp32\": %d, \"galore_scale\": %.17g}",
            o->rank, o->lora_alpha, o->update_proj_gap, gap_progression_name(o->proj_gap_progression),
            o->increment_size, o->max_proj_gap, o->compensate_quant_error_iterations, o->quantize_w,
            o->quantize_projection, o->use_double_quant, o->merge_reset_optimizer, o->lowrank_fp32,
            o->galore_scale);
}

int method_opts_parse_json(method_opts *o, const char *text) {
    json_value *v = json_parse(text, strlen(text));
    if (!v) return -1;
    int rc = -1;
    if (v->type != JSON_OBJECT) {
        loqt_set_error("method options: expected a JSON object");
        goto done;
    }
    for (size_t i = 0; i < v->len; i++) {
        const char *k = v->keys[i];
        const json_value *x = &v->items[i];
        int *ip = !strcmp(k, "rank") ? &o->rank
                  : !strcmp(k, "update_proj_gap") ? &o->update_proj_gap
                  : !strcmp(k, "max_proj_gap") ? &o->max_proj_gap
                  : !strcmp(k, "compensate_quant_error_iterations") ? &o->compensate_quant_error_iterations
                  : !strcmp(k, "quantize_w") ? &o->quantize_w
                  : !strcmp(k, "quantize_projection") ? &o->quantize_projection
                  : !strcmp(k, "use_double_quant") ? &o->use_double_quant
                  : !strcmp(k, "merge_reset_optimizer") ? &o->merge_reset_optimizer
                  : !strcmp(k, "lowrank_fp32") ? &o->lowrank_fp32
                  : NULL;
        double *dp = !strcmp(k, "lora_alpha") ? &o->lora_alpha
                     : !strcmp(k, "increment_size") ? &o->increment_size
                     : !strcmp(k, "galore_scale") ? &o->galore_scale
                     : NULL;
        if (ip || dp) {
            if (x->type != JSON_NUMBER || (ip && (x->number != (int)x->number))) {
                loqt_set_error("method options: '%s' has a bad value", k);
                goto done;
            }
            if (ip) *ip = (int)x->number;
            else *dp = x->number;
        } else if (!strcmp(k, "proj_gap_progression") && x->type == JSON_STRING) {
            if (gap_progression_parse(x->string, &o->proj_gap_progression)) goto done;
        } else {
            loqt_set_error("method options: unknown key '%s'", k);
            goto done;
        }
    }
    rc = 0;
done:
    json_free(v);
    return rc;
}

float *linear_random_init(const linear_layer *L, uint64_t seed, mem_cat cat) {
    size_t n = (size_t)L->out * L->in;
    float *W = mem_alloc(cat, n * sizeof(float));
    rng_fill_normal(W, n, 0.02f, seed, rng_stream_id(L->name));
    return W;
}
