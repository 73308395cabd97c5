/* PEFT LoRA adapters out and in (see peft.h).  The layout follows Hugging Face PEFT 0.18
 * (src/peft/utils/save_and_load.py: get_peft_model_state_dict keeps the "lora_" tensors and drops
 * the adapter name, so a key reads base_model.model.<module>.lora_A.weight; tuners/lora/config.py:
 * the LoraConfig fields). */
#include "model/peft.h"

#include "core/choices.h"
#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "methods/lora.h"
#include "model/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const PREFIX = "base_model.model.";

/* ---- adapter_config.json in ----------------------------------------------------------------- */

/* A key loqt cannot honour must hold its neutral value (absent, null, false, {} or []). */
static int neutral(const json_value *v) {
    return !v || v->type == JSON_NULL || (v->type == JSON_BOOL && !v->boolean) ||
           ((v->type == JSON_OBJECT || v->type == JSON_ARRAY) && v->len == 0);
}

static int read_targets(const json_value *cfg, const char *path, unsigned *targets) {
    const json_value *t = json_get(cfg, "target_modules");
    if (!t || t->type != JSON_ARRAY)
        return loqt_set_error("%s: target_modules must be a list of module names (a regular expression is not "
                              "supported)", path);
    *targets = 0;
    for (size_t i = 0; i < t->len; i++) {
        const json_value *s = &t->items[i];
        const int j = s->type == JSON_STRING ? choice_index(LINEAR_PROJECTIONS, s->string) : -1;
        if (j < 0)
            return loqt_set_error("%s: target_modules: '%s' is not a LLaMA projection (q_proj ... down_proj)", path,
                                  s->type == JSON_STRING ? s->string : "?");
        *targets |= 1u << j;
    }
    if (!*targets) return loqt_set_error("%s: target_modules is empty", path);
    return 0;
}

static int check_config(const json_value *cfg, const char *path, peft_config *pc) {
    const char *type = NULL, *bias = NULL;
    long long r = 0;
    if (cfg->type != JSON_OBJECT) return loqt_set_error("%s: expected a JSON object", path);
    if (json_get_string(cfg, "peft_type", &type) || strcmp(type, "LORA"))
        return loqt_set_error("%s: peft_type must be \"LORA\"", path);
    if (json_get_int(cfg, "r", &r) || r < 1 || r > (1 << 20))
        return loqt_set_error("%s: r must be a positive integer", path);
    pc->r = (int)r;
    if (json_get_number(cfg, "lora_alpha", &pc->lora_alpha) || !(pc->lora_alpha > 0) || !isfinite(pc->lora_alpha))
        return loqt_set_error("%s: lora_alpha must be a positive number", path);
    pc->lora_dropout = 0;
    if (json_get(cfg, "lora_dropout") && json_get_number(cfg, "lora_dropout", &pc->lora_dropout))
        return loqt_set_error("%s: lora_dropout must be a number", path);
    pc->use_rslora = 0;
    if (json_get(cfg, "use_rslora") && json_get_bool(cfg, "use_rslora", &pc->use_rslora))
        return loqt_set_error("%s: use_rslora must be true or false", path);
    if (json_get(cfg, "bias") && (json_get_string(cfg, "bias", &bias) || strcmp(bias, "none")))
        return loqt_set_error("%s: bias must be \"none\" (LLaMA's projections have no biases)", path);
    static const char *const unsupported[] = {"use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
                                              "layers_to_transform", "modules_to_save"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (!neutral(json_get(cfg, unsupported[i])))
            return loqt_set_error("%s: %s is set; loqt loads plain LoRA adapters on every layer only", path,
                                  unsupported[i]);
    return read_targets(cfg, path, &pc->targets);
}

int peft_read_config(const char *dir, peft_config *pc) {
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (access(path, F_OK) != 0)
        return loqt_set_error("--adapter %s: no adapter_config.json there (a PEFT adapter directory has "
                              "adapter_config.json and adapter_model.safetensors)", dir);
    size_t len = 0;
    char *text = file_read_all(path, (size_t)1 << 20, &len);
    if (!text) return loqt_set_error("%s: cannot read it", path);
    json_value *cfg = json_parse(text, len);
    mem_free(text);
    if (!cfg) return loqt_set_error("%s: %s", path, loqt_last_error());
    memset(pc, 0, sizeof *pc);
    const int rc = check_config(cfg, path, pc);
    json_free(cfg);
    return rc;
}

/* ---- the model's side ----------------------------------------------------------------------- */

static double opt_value(const llama_model *m, const char *name) {
    return method_option_get(&m->mopts, method_option_find(m->method, name));
}

static int targeted(const peft_config *pc, int j) { return pc->targets >> j & 1u; }

/* The model's adapter settings as a peft_config. */
static int model_config(const llama_model *m, peft_config *pc) {
    if (!lora_is_engine(m->method))
        return loqt_set_error("the model's method is %s; PEFT adapters belong to --method lora (or relora)",
                              m->method->name);
    pc->lora_alpha = opt_value(m, "lora-alpha");
    pc->lora_dropout = opt_value(m, "lora-dropout");
    pc->use_rslora = (int)opt_value(m, "rslora");
    pc->targets = (unsigned)opt_value(m, "target-modules");
    int first = 0;
    while (!targeted(pc, first)) first++; /* the option is never empty */
    pc->r = lora_rank(&m->blocks[0].lin[first]);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++)
            if (targeted(pc, j) && lora_rank(&m->blocks[l].lin[j]) != pc->r) /* PEFT has one r for all (no rank_pattern) */
                return loqt_set_error("%s has rank %d, the others %d: PEFT's r is one value", m->blocks[l].lin[j].name,
                                      lora_rank(&m->blocks[l].lin[j]), pc->r);
    return 0;
}

int peft_method_opts(const peft_config *pc, const char *base_bits, method_opts *mo) {
    const linear_method *lm = method_find("lora");
    method_opts_defaults(mo, lm);
    method_option_set(mo, method_option_find(lm, "rank"), pc->r);
    method_option_set(mo, method_option_find(lm, "lora-alpha"), pc->lora_alpha);
    method_option_set(mo, method_option_find(lm, "rslora"), pc->use_rslora);
    method_option_set(mo, method_option_find(lm, "lora-dropout"), pc->lora_dropout);
    method_option_set(mo, method_option_find(lm, "target-modules"), pc->targets);
    const method_option *bb = method_option_find(lm, "base-bits");
    const char *choices[] = {"4", "8", "16", "32"};
    for (int k = 0; k < 4; k++)
        if (!strcmp(base_bits, choices[k])) method_option_set(mo, bb, k);
    return method_config_validate(lm, mo);
}

/* ---- adapters out --------------------------------------------------------------------------- */

static void write_config(FILE *f, const peft_config *pc, const char *base_model) {
    fprintf(f, "{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    if (base_model) json_write_string(f, base_model);
    else fprintf(f, "null");
    fprintf(f, ",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
               "  \"init_lora_weights\": true,\n  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n"
               "  \"lora_alpha\": %.17g,\n  \"lora_dropout\": %.17g,\n  \"modules_to_save\": null,\n"
               "  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"rank_pattern\": {},\n  \"revision\": null,\n"
               "  \"target_modules\": [", pc->lora_alpha, pc->lora_dropout, pc->r);
    char name[32];
    for (int j = 0, k = 0; choice_at(LINEAR_PROJECTIONS, j, name, sizeof name); j++)
        if (targeted(pc, j)) fprintf(f, "%s\"%s\"", k++ ? ", " : "", name);
    fprintf(f, "],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n  \"use_rslora\": %s\n}\n",
            pc->use_rslora ? "true" : "false");
}

static int write_tensors(const llama_model *m, const peft_config *pc, const char *path) {
    const int nl = m->cfg.num_hidden_layers * LIN_PER_BLOCK;
    float **AB = calloc((size_t)nl, sizeof *AB);
    char(*names)[2][192] = calloc((size_t)nl, sizeof *names);
    st_writer *w = st_writer_new();
    st_writer_meta(w, "format", "pt"); /* what PEFT's save_pretrained records */
    for (int l = 0, k = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++, k++) {
            if (!targeted(pc, j)) continue; /* PEFT writes tensors of the target modules only */
            const linear_layer *L = &m->blocks[l].lin[j];
            const size_t nA = (size_t)pc->r * L->in, nB = (size_t)L->out * pc->r;
            AB[k] = mem_alloc(MEM_SCRATCH, sizeof(float) * (nA + nB));
            lora_get_factors(L, NULL, AB[k], AB[k] + nA);
            const int64_t shA[2] = {pc->r, L->in}, shB[2] = {L->out, pc->r};
            snprintf(names[k][0], sizeof names[k][0], "%s%s.lora_A.weight", PREFIX, L->name);
            snprintf(names[k][1], sizeof names[k][1], "%s%s.lora_B.weight", PREFIX, L->name);
            st_writer_add(w, names[k][0], ST_F32, 2, shA, AB[k]);
            st_writer_add(w, names[k][1], ST_F32, 2, shB, AB[k] + nA);
        }
    int rc = st_writer_check_finite(w);
    if (!rc) rc = st_writer_write(w, path);
    st_writer_free(w);
    for (int k = 0; k < nl; k++) mem_free(AB[k]);
    free(AB);
    free(names);
    return rc;
}

int peft_write_adapter(const llama_model *m, const char *dir, const char *base_model) {
    peft_config pc;
    if (model_config(m, &pc) || file_mkdir_p(dir)) return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (write_tensors(m, &pc, path)) return -1;
    char *js = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&js, &len);
    if (!f) return loqt_set_error("%s: cannot build adapter_config.json", dir);
    write_config(f, &pc, base_model);
    fclose(f);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    const int rc = file_write_atomic(path, js, len);
    free(js);
    return rc;
}

int peft_export_base(const llama_model *m, const char *dir) {
    peft_config pc;
    if (model_config(m, &pc)) return -1;
    return llama_export_dense_with(m, dir, lora_base_export);
}

/* ---- adapters in ---------------------------------------------------------------------------- */

static int same_scale(const peft_config *a, const peft_config *b) {
    return a->r == b->r && a->use_rslora == b->use_rslora && (float)a->lora_alpha == (float)b->lora_alpha;
}

/* into the layer's own factors (r is the layer's: checked by the caller) */
static int read_layer(linear_layer *L, const st_file *f, int r, const char *dir) {
    float *A, *B;
    lora_factors(L, &A, &B);
    const int64_t shA[2] = {r, L->in}, shB[2] = {L->out, r};
    char name[2][192];
    snprintf(name[0], sizeof name[0], "%s%s.lora_A.weight", PREFIX, L->name);
    snprintf(name[1], sizeof name[1], "%s%s.lora_B.weight", PREFIX, L->name);
    if (st_read_f32(f, name[0], A, 2, shA) || st_read_f32(f, name[1], B, 2, shB))
        return loqt_set_error("--adapter %s: %s (the adapter was made for another model or rank)", dir, loqt_last_error());
    return 0;
}

int peft_load_adapter(llama_model *m, const char *dir) {
    peft_config want, have;
    if (model_config(m, &want) || peft_read_config(dir, &have)) return -1;
    if (have.targets != want.targets) {
        char a[256], b[256];
        choice_set_format(LINEAR_PROJECTIONS, have.targets, a, sizeof a);
        choice_set_format(LINEAR_PROJECTIONS, want.targets, b, sizeof b);
        return loqt_set_error("--adapter %s: target_modules %s, but the model has --target-modules %s", dir, a, b);
    }
    if (!same_scale(&want, &have))
        return loqt_set_error("--adapter %s: r %d, lora_alpha %g%s, but the model has --rank %d, --lora-alpha %g%s",
                              dir, have.r, have.lora_alpha, have.use_rslora ? ", use_rslora" : "", want.r,
                              want.lora_alpha, want.use_rslora ? ", --rslora" : "");
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_file f;
    if (st_open(&f, path)) return loqt_set_error("--adapter %s: %s", dir, loqt_last_error());
    int rc = st_check_finite(&f);
    if (rc) loqt_set_error("--adapter %s: %s", dir, loqt_last_error());
    for (int l = 0; l < m->cfg.num_hidden_layers && !rc; l++)
        for (int j = 0; j < LIN_PER_BLOCK && !rc; j++)
            if (targeted(&have, j)) rc = read_layer(&m->blocks[l].lin[j], &f, have.r, dir);
    const char *extra = rc ? NULL : st_first_unused(&f);
    if (extra)
        rc = loqt_set_error("--adapter %s: tensor '%s' is not a LoRA factor of this model's projections", dir, extra);
    st_close(&f);
    return rc;
}

int peft_create_model(llama_model *m, const char *base_dir, const char *adapter_dir) {
    peft_config pc;
    llama_config cfg;
    method_opts mo;
    if (peft_read_config(adapter_dir, &pc) || peft_method_opts(&pc, "32", &mo)) return -1;
    if (checkpoint_read_config(base_dir, &cfg)) return -1;
    if (llama_load_pretrained(m, &cfg, method_find("lora"), &mo, 0, base_dir)) return -1;
    if (peft_load_adapter(m, adapter_dir)) {
        llama_free(m);
        return -1;
    }
    return 0;
}
