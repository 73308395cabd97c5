#include "model/config.h"

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* name, hidden, intermediate, layers, heads, max seq (vocab 32000 for all) */
static const llama_config builtins[] = {
#define C(n, d, f, l, h, s) {n, d, f, l, h, h, 32000, s, 1e-6, 10000.0, 0}
    C("9m", 128, 352, 4, 4, 1024),      C("20m", 256, 688, 4, 4, 1024),
    C("35m", 384, 1024, 6, 8, 1024),    C("60m", 512, 1376, 8, 8, 1024),
    C("130m", 768, 2048, 12, 12, 1024), C("350m", 1024, 2736, 24, 16, 1024),
    C("1b", 2048, 5461, 24, 32, 1024),  C("3b", 2560, 6848, 32, 32, 1024),
    C("7b", 4096, 11008, 32, 32, 2048), C("13b", 5120, 13824, 40, 40, 2048),
#undef C
};

int config_builtin_count(void) { return (int)(sizeof builtins / sizeof builtins[0]); }
const llama_config *config_builtin(int i) {
    return i >= 0 && i < config_builtin_count() ? &builtins[i] : NULL;
}

int config_validate(const llama_config *c) {
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
        c->num_attention_heads <= 0 || c->vocab_size <= 0 || c->max_position_embeddings <= 0)
        return loqt_set_error("config %s: sizes must be positive", c->name);
    if (c->hidden_size > 65536 || c->intermediate_size > 262144 || c->num_hidden_layers > 1024 ||
        c->vocab_size > 65536 || c->max_position_embeddings > 1048576)
        return loqt_set_error("config %s: sizes out of the supported range (hidden <= 65536, "
                              "intermediate <= 262144, layers <= 1024, vocab <= 65536)", c->name);
    if (c->hidden_size % c->num_attention_heads != 0)
        return loqt_set_error("config %s: hidden_size %d is not divisible by num_attention_heads %d",
                              c->name, c->hidden_size, c->num_attention_heads);
    if ((c->hidden_size / c->num_attention_heads) % 2 != 0)
        return loqt_set_error("config %s: head dimension %d must be even for RoPE", c->name,
                              c->hidden_size / c->num_attention_heads);
    if (c->num_key_value_heads <= 0 || c->num_attention_heads % c->num_key_value_heads != 0)
        return loqt_set_error("config %s: num_key_value_heads %d must be positive and divide num_attention_heads %d "
                              "(grouped-query attention)", c->name, c->num_key_value_heads, c->num_attention_heads);
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return loqt_set_error("config %s: rms_norm_eps and rope_theta must be positive", c->name);
    return 0;
}

static int get_int_key(const json_value *o, const char *key, int *dst, int required,
                       const char *what) {
    const json_value *v = json_get(o, key);
    if (!v) return required ? loqt_set_error("%s: missing key '%s'", what, key) : 0;
    if (v->type != JSON_NUMBER || v->number != floor(v->number) || fabs(v->number) > 2e9)
        return loqt_set_error("%s: '%s' must be an integer", what, key);
    *dst = (int)v->number;
    return 0;
}

static int get_num_key(const json_value *o, const char *key, double *dst, const char *what) {
    const json_value *v = json_get(o, key);
    if (!v) return 0;
    if (v->type != JSON_NUMBER) return loqt_set_error("%s: '%s' must be a number", what, key);
    *dst = v->number;
    return 0;
}

/* Keys loqt reads, Hugging Face keys it can safely ignore, and keys whose value must be what loqt
 * implements.  Any other key is an error: a misspelt key (max_position_embedding) would
 * otherwise be ignored and its default used without a word. */
static const char *const read_keys[] = {
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "tie_word_embeddings", "rope_scaling", "loqt_name", "head_dim",
};
static const char *const ignored_keys[] = {
    "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
    "transformers_version", "initializer_range", "use_cache", "_name_or_path", "attention_dropout",
    "loqt_checkpoint", /* what a loqt checkpoint directory holds (model/checkpoint.c) */
};

static int in_list(const char *k, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

/* a key whose value must be one loqt implements; 1 if k is such a key (*bad set when it is not) */
static int check_fixed_key(const char *k, const json_value *v, const char *what, int *bad) {
    const struct { const char *key, *want; } strs[] = {{"hidden_act", "silu"}, {"model_type", "llama"}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!strcmp(k, strs[i].key)) {
            if (v->type != JSON_STRING || strcmp(v->string, strs[i].want)) {
                loqt_set_error("%s: '%s' must be \"%s\" (loqt implements only that)%s%s", what, k, strs[i].want,
                               v->type == JSON_STRING ? ", got " : "", v->type == JSON_STRING ? v->string : "");
                *bad = 1;
            }
            return 1;
        }
    const char *bools[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++)
        if (!strcmp(k, bools[i])) {
            if (v->type != JSON_BOOL || v->boolean) {
                loqt_set_error("%s: '%s' must be false (loqt's LLaMA has no biases)", what, k);
                *bad = 1;
            }
            return 1;
        }
    if (!strcmp(k, "pretraining_tp")) {
        if (v->type != JSON_NUMBER || v->number != 1) {
            loqt_set_error("%s: 'pretraining_tp' must be 1", what);
            *bad = 1;
        }
        return 1;
    }
    return 0;
}

static int check_keys(const json_value *root, const char *what) {
    for (size_t i = 0; i < root->len; i++) {
        const char *k = root->keys[i];
        int bad = 0;
        if (check_fixed_key(k, &root->items[i], what, &bad)) {
            if (bad) return -1;
            continue;
        }
        if (in_list(k, read_keys, sizeof read_keys / sizeof read_keys[0]) ||
            in_list(k, ignored_keys, sizeof ignored_keys / sizeof ignored_keys[0]))
            continue;
        return loqt_set_error("%s: unknown config key '%s' (misspelt? loqt reads hidden_size, intermediate_size, "
                              "num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, "
                              "max_position_embeddings, rms_norm_eps, rope_theta, tie_word_embeddings)", what, k);
    }
    return 0;
}

int config_parse(llama_config *c, const char *text, size_t len, const char *what) {
    json_value *root = json_parse(text, len);
    if (!root) return loqt_set_error("%s: %s", what, loqt_last_error());
    int rc = -1;
    if (root->type != JSON_OBJECT) {
        loqt_set_error("%s: expected a JSON object", what);
        goto done;
    }
    if (check_keys(root, what)) goto done;
    memset(c, 0, sizeof *c);
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->max_position_embeddings = 2048;
    c->num_key_value_heads = -1;
    if (get_int_key(root, "hidden_size", &c->hidden_size, 1, what) ||
        get_int_key(root, "intermediate_size", &c->intermediate_size, 1, what) ||
        get_int_key(root, "num_hidden_layers", &c->num_hidden_layers, 1, what) ||
        get_int_key(root, "num_attention_heads", &c->num_attention_heads, 1, what) ||
        get_int_key(root, "vocab_size", &c->vocab_size, 1, what) ||
        get_int_key(root, "num_key_value_heads", &c->num_key_value_heads, 0, what) ||
        get_int_key(root, "max_position_embeddings", &c->max_position_embeddings, 0, what) ||
        get_num_key(root, "rms_norm_eps", &c->rms_norm_eps, what) ||
        get_num_key(root, "rope_theta", &c->rope_theta, what))
        goto done;
    if (!json_get(root, "num_key_value_heads")) c->num_key_value_heads = c->num_attention_heads;
    /* newer configs state the head dimension; loqt's is always hidden_size / heads */
    int head_dim = 0;
    if (get_int_key(root, "head_dim", &head_dim, 0, what)) goto done;
    if (json_get(root, "head_dim") && c->num_attention_heads > 0 &&
        head_dim * c->num_attention_heads != c->hidden_size) {
        loqt_set_error("%s: 'head_dim' %d is not hidden_size / num_attention_heads = %d / %d (loqt implements only that)",
                       what, head_dim, c->hidden_size, c->num_attention_heads);
        goto done;
    }
    const json_value *tie = json_get(root, "tie_word_embeddings");
    if (tie) {
        if (tie->type != JSON_BOOL) {
            loqt_set_error("%s: 'tie_word_embeddings' must be true or false", what);
            goto done;
        }
        c->tie_word_embeddings = tie->boolean;
    }
    const json_value *rs = json_get(root, "rope_scaling");
    if (rs && rs->type != JSON_NULL) {
        loqt_set_error("%s: rope_scaling is not supported", what);
        goto done;
    }
    const json_value *nm = json_get(root, "loqt_name");
    snprintf(c->name, sizeof c->name, "%s", nm && nm->type == JSON_STRING ? nm->string : what);
    rc = config_validate(c);
done:
    json_free(root);
    return rc;
}

int config_load(llama_config *c, const char *spec) {
    const char *name = spec;
    if (strncmp(name, "llama_", 6) == 0) name += 6;
    for (int i = 0; i < config_builtin_count(); i++)
        if (strcmp(builtins[i].name, name) == 0) {
            *c = builtins[i];
            return 0;
        }
    size_t len = 0;
    char *text = file_read_all(spec, 1 << 20, &len);
    if (!text) {
        if (!strchr(spec, '/') && !strstr(spec, ".json"))
            return loqt_set_error("unknown model '%s' (built-in: 9m 20m 35m 60m 130m 350m 1b 3b 7b "
                                  "13b, or a path to a JSON config)", spec);
        return -1;
    }
    int rc = config_parse(c, text, len, spec);
    mem_free(text);
    return rc;
}

void config_write_json(const llama_config *c, FILE *f) {
    fprintf(f,
            "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
            "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
            "  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n"
            "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %g,\n  \"rope_theta\": %g,\n"
            "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
            "  \"torch_dtype\": \"float32\",\n  \"loqt_name\": ",
            c->hidden_size, c->intermediate_size, c->num_hidden_layers, c->num_attention_heads,
            c->num_key_value_heads, c->vocab_size, c->max_position_embeddings, c->rms_norm_eps,
            c->rope_theta, c->tie_word_embeddings ? "true" : "false");
    json_write_string(f, c->name);
    fprintf(f, "\n}\n");
}

int config_head_dim(const llama_config *c) { return c->hidden_size / c->num_attention_heads; }
int config_kv_dim(const llama_config *c) { return c->num_key_value_heads * config_head_dim(c); }

long long config_params_linear(const llama_config *c) {
    long long d = c->hidden_size, F = c->intermediate_size, kv = config_kv_dim(c);
    return (long long)c->num_hidden_layers * (2 * d * d + 2 * d * kv + 3 * d * F);
}

long long config_params_total(const llama_config *c) {
    long long d = c->hidden_size, V = c->vocab_size;
    return config_params_linear(c) + (c->tie_word_embeddings ? 1 : 2) * V * d +
           (long long)(2 * c->num_hidden_layers + 1) * d;
}
