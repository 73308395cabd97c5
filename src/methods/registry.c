/* The registry of training methods, and everything derived from their option tables: defaults,
 * range checks, checkpoint JSON, run descriptions. */
#include "methods/linear.h"

#include "core/choices.h"
#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"

#include <math.h>
#include <string.h>

/* One line per method: X(name) for the linear_method method_<name> of methods/<name>.c. */
#define METHODS      \
    X(dense)         \
    X(loqt)          \
    X(galore)        \
    X(qgalore)       \
    X(dqt)           \
    X(bitnet)        \
    X(lora)          \
    X(relora)        \
    /* end of list */

#define X(n) extern const linear_method method_##n;
METHODS
#undef X
#define X(n) &method_##n,
static const linear_method *const methods[] = {METHODS};
#undef X

enum { N_METHODS = sizeof methods / sizeof methods[0] };

int method_count(void) { return N_METHODS; }
const linear_method *method_at(int i) { return i >= 0 && i < N_METHODS ? methods[i] : NULL; }

const linear_method *method_find(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "dense") || !strcmp(name, "adamw")) name = "full";
    for (int i = 0; i < N_METHODS; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

const char *method_names(void) {
    static char buf[256];
    if (!buf[0]) {
        size_t k = 0;
        for (int i = 0; i < N_METHODS && k < sizeof buf; i++) {
            int w = snprintf(buf + k, sizeof buf - k, "%s%s", i ? "|" : "", methods[i]->name);
            if (w < 0) break;
            k += (size_t)w;
        }
    }
    return buf;
}

/* ---- option values ------------------------------------------------------------------------- */

void method_config_get(const method_opts *o, void *cfg, size_t size) {
    memcpy(cfg, o->config, size <= METHOD_CONFIG_BYTES ? size : METHOD_CONFIG_BYTES);
}

void method_config_set(method_opts *o, const void *cfg, size_t size) {
    memcpy(o->config, cfg, size <= METHOD_CONFIG_BYTES ? size : METHOD_CONFIG_BYTES);
}

double method_option_get(const method_opts *o, const method_option *opt) {
    if (opt->type == MOPT_FLOAT) {
        double d;
        memcpy(&d, o->config + opt->offset, sizeof d);
        return d;
    }
    int i;
    memcpy(&i, o->config + opt->offset, sizeof i);
    return i;
}

void method_option_set(method_opts *o, const method_option *opt, double v) {
    if (opt->type == MOPT_FLOAT) {
        memcpy(o->config + opt->offset, &v, sizeof v);
    } else {
        int i = (int)v;
        memcpy(o->config + opt->offset, &i, sizeof i);
    }
}

void method_opts_defaults(method_opts *o, const linear_method *m) {
    memset(o, 0, sizeof *o);
    o->optimizer = OPTIM_ADAMW;
    if (!m) return;
    for (int i = 0; i < m->n_options; i++) method_option_set(o, &m->options[i], m->options[i].def);
}

const method_option *method_option_find(const linear_method *m, const char *name) {
    for (int i = 0; m && i < m->n_options; i++)
        if (!strcmp(m->options[i].name, name)) return &m->options[i];
    return NULL;
}

static int check_option(const method_option *opt, double v) {
    switch (opt->type) {
    case MOPT_INT:
        if (v != floor(v) || v < opt->lo || v > opt->hi)
            return loqt_set_error("--%s must be an integer in [%.0f, %.0f], got %.17g", opt->name,
                                  opt->lo, opt->hi, v);
        return 0;
    case MOPT_FLOAT:
        if (!isfinite(v) || v < opt->lo || v > opt->hi)
            return loqt_set_error("--%s must be in [%g, %g], got %g", opt->name, opt->lo, opt->hi, v);
        return 0;
    case MOPT_FLAG:
        if (v != 0 && v != 1) return loqt_set_error("--%s is a flag (0 or 1), got %g", opt->name, v);
        return 0;
    case MOPT_CHOICE: {
        char buf[64];
        if (v != floor(v) || !choice_at(opt->choices, (int)v, buf, sizeof buf))
            return loqt_set_error("--%s must be one of %s", opt->name, opt->choices);
        return 0;
    }
    case MOPT_SET:
        if (v != floor(v) || v < 1 || v > choice_all(opt->choices))
            return loqt_set_error("--%s must be a non-empty list of %s", opt->name, opt->choices);
        return 0;
    }
    return loqt_set_error("--%s: unknown option type", opt->name);
}

int method_config_validate(const linear_method *m, const method_opts *o) {
    for (int i = 0; i < m->n_options; i++)
        if (check_option(&m->options[i], method_option_get(o, &m->options[i]))) return -1;
    return 0;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

/* "update-proj-gap" -> "update_proj_gap" */
static void json_key(const char *name, char *buf, size_t cap) {
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++) buf[i] = name[i] == '-' ? '_' : name[i];
    buf[i] = 0;
}

void method_config_write_json(const linear_method *m, const method_opts *o, FILE *f) {
    fprintf(f, "{");
    for (int i = 0; i < m->n_options; i++) {
        const method_option *opt = &m->options[i];
        char key[64], choice[64];
        json_key(opt->name, key, sizeof key);
        fprintf(f, "%s\"%s\": ", i ? ", " : "", key);
        double v = method_option_get(o, opt);
        if (opt->type == MOPT_CHOICE && choice_at(opt->choices, (int)v, choice, sizeof choice)) {
            json_write_string(f, choice);
        } else if (opt->type == MOPT_SET) {
            char list[512];
            choice_set_format(opt->choices, (unsigned)v, list, sizeof list);
            json_write_string(f, list);
        } else if (opt->type == MOPT_FLOAT) fprintf(f, "%.17g", v);
        else fprintf(f, "%d", (int)v);
    }
    fprintf(f, "}");
}

int method_config_parse_json(const linear_method *m, method_opts *o, const char *text) {
    json_value *v = json_parse(text, strlen(text));
    if (!v) return -1;
    int rc = -1;
    if (v->type != JSON_OBJECT) {
        loqt_set_error("method options: expected a JSON object");
        goto done;
    }
    for (size_t i = 0; i < v->len; i++) {
        const json_value *x = &v->items[i];
        const method_option *opt = NULL;
        for (int j = 0; j < m->n_options && !opt; j++) {
            char key[64];
            json_key(m->options[j].name, key, sizeof key);
            if (!strcmp(key, v->keys[i])) opt = &m->options[j];
        }
        if (!opt) {
            loqt_set_error("method options: method %s has no option '%s'", m->name, v->keys[i]);
            goto done;
        }
        double val;
        unsigned set;
        char bad[64];
        if (opt->type == MOPT_CHOICE && x->type == JSON_STRING) {
            val = choice_index(opt->choices, x->string);
        } else if (opt->type == MOPT_SET && x->type == JSON_STRING) {
            if (choice_set_parse(opt->choices, x->string, &set, bad, sizeof bad)) {
                loqt_set_error("method options: '%s': %s%s%s (a comma-separated list of %s, or all)", v->keys[i],
                               *bad ? "unknown name '" : "an empty name", bad, *bad ? "'" : "", opt->choices);
                goto done;
            }
            val = set;
        } else if (opt->type != MOPT_CHOICE && opt->type != MOPT_SET && x->type == JSON_NUMBER) {
            val = x->number;
        } else {
            loqt_set_error("method options: '%s' has a value of the wrong type", v->keys[i]);
            goto done;
        }
        if (check_option(opt, val)) {
            loqt_set_error("method options: %s", loqt_last_error());
            goto done;
        }
        method_option_set(o, opt, val);
    }
    rc = 0;
done:
    json_free(v);
    return rc;
}

void method_config_describe(const linear_method *m, const method_opts *o, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < m->n_options && k < cap; i++) {
        const method_option *opt = &m->options[i];
        double v = method_option_get(o, opt);
        char val[512];
        if (opt->type == MOPT_CHOICE) choice_at(opt->choices, (int)v, val, sizeof val);
        else if (opt->type == MOPT_SET) choice_set_format(opt->choices, (unsigned)v, val, sizeof val);
        else if (opt->type == MOPT_FLAG) snprintf(val, sizeof val, "%s", v ? "on" : "off");
        else snprintf(val, sizeof val, "%g", v);
        int w = snprintf(buf + k, cap - k, "%s%s %s", i ? ", " : "", opt->name, val);
        if (w < 0) break;
        k += (size_t)w;
    }
}

/* ---- statistics ---------------------------------------------------------------------------- */

void method_stats_add(method_stats *st, const char *name, stat_kind kind, double value) {
    int i = 0;
    while (i < st->n && strcmp(st->s[i].name, name)) i++;
    if (i == st->n) {
        if (st->n == (int)(sizeof st->s / sizeof st->s[0])) return;
        st->n++;
        st->s[i].name = name;
        st->s[i].kind = kind;
        st->s[i].sum = 0;
        st->s[i].count = 0;
    }
    st->s[i].sum += value;
    st->s[i].count++;
}

double method_stats_value(const method_stats *st, int i) {
    if (i < 0 || i >= st->n) return NAN;
    if (st->s[i].kind == STAT_MEAN) return st->s[i].count ? st->s[i].sum / st->s[i].count : NAN;
    return st->s[i].sum;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static size_t linear_random_init_bytes(const linear_layer *L) { return (size_t)L->out * L->in * sizeof(float); }

float *linear_random_init(const linear_layer *L, uint64_t seed, mem_cat cat) {
    float *W = mem_alloc(cat, linear_random_init_bytes(L));
    rng_fill_normal(W, (size_t)L->out * L->in, 0.02f, seed, rng_stream_id(L->name));
    return W;
}
