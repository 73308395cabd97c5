/* Reporting of a memory plan (model/plan.h): the breakdown, the refusal of a run that does not
 * fit with the fewest option changes that would make it fit, the papers' estimate, and the
 * parsing of memory sizes. */
#include "model/plan.h"

#include "model/llama.h"

#include "core/error.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double gib(size_t b) { return (double)b / 1073741824.0; }

/* "1.23 GiB", or "12.3 MiB" below 1 GiB; rotates over 4 buffers so one call can use several */
static const char *human(size_t b) {
    static _Thread_local char buf[4][32];
    static _Thread_local int k;
    char *o = buf[k++ & 3];
    if (b >= ((size_t)1 << 30)) snprintf(o, 32, "%.2f GiB", gib(b));
    else snprintf(o, 32, "%.1f MiB", (double)b / 1048576.0);
    return o;
}

static void describe(const plan *p, char *buf, size_t cap) {
    const plan_input *in = &p->in;
    const linear_method *lm = method_find(in->method);
    char opts[400] = "";
    if (lm && lm->n_options) method_config_describe(lm, &in->mo, opts, sizeof opts);
    snprintf(buf, cap,
             "model %s (%.1fM parameters), method %s%s%s%s, optimizer %s, batch %d x %d, %d "
             "micro-batch%s per step, %d threads%s%s",
             in->cfg.name, config_params_total(&in->cfg) / 1e6, lm ? lm->name : in->method,
             opts[0] ? " (" : "", opts, opts[0] ? ")" : "", optim_kind_name(in->mo.optimizer),
             in->batch, in->seq, in->accum, in->accum == 1 ? "" : "es", in->threads,
             in->per_layer_updates ? ", per-layer updates" : "",
             in->activation_checkpointing ? ", activation checkpointing" : "");
    if (in->ranks > 1) {
        size_t k = strlen(buf);
        snprintf(buf + k, cap - k, "; %d data-parallel ranks (%d micro-batch%s each)%s", in->ranks,
                 in->accum / in->ranks, in->accum / in->ranks == 1 ? "" : "es",
                 in->zero ? ", optimizer state sharded (--zero 1)" : "");
    }
}

void plan_print(const plan *p, FILE *f) {
    const double MiB = 1048576.0;
    char desc[1024];
    describe(p, desc, sizeof desc);
    fprintf(f, "plan: %s\n", desc);
    fprintf(f, "memory (MiB)                 peak\n");
    for (int c = 0; c < MEM_NCAT; c++)
        if (p->peak[c]) fprintf(f, "  %-20s %10.1f\n", mem_cat_name((mem_cat)c), p->peak[c] / MiB);
    fprintf(f, "  %-20s %10.1f\n", "accounted peak", p->accounted_peak / MiB);
    fprintf(f, "  %-20s %10.1f\n", "  (ordinary steps)", p->steady / MiB);
    fprintf(f, "  %-20s %10.1f\n", "unaccounted (est.)", p->overhead / MiB);
    if (p->in.per_layer_updates && p->in.accum > 1)
        fprintf(f, "note: with gradient accumulation, per-layer updates keep every gradient across "
                   "micro-batches (no saving)\n");
    const double paper = plan_paper_estimate(&p->in.cfg, p->in.method, &p->in.mo);
    if (paper > 0)
        fprintf(f, "paper-style estimate (weights + optimizer state in the papers' precision): %.2f GiB\n",
                paper / 1073741824.0);
    if (p->in.ranks > 1)
        fprintf(f, "per rank: the plan above is rank %d's, the largest; the ranks' accounted peaks range from "
                   "%.1f to %.1f MiB (%zu to %zu bytes)\n", p->rank, p->rank_min_accounted / MiB, p->accounted_peak / MiB,
                p->rank_min_accounted, p->accounted_peak);
    fprintf(f, "total: %.2f GiB%s\n", gib(p->total), p->in.ranks > 1 ? " per rank" : "");
}

void plan_write_json(const plan *p, FILE *f) {
    const double MiB = 1048576.0;
    fprintf(f, "{");
    for (int c = 0; c < MEM_NCAT; c++) fprintf(f, "\"%s_mib\": %.2f, ", mem_cat_key((mem_cat)c), p->peak[c] / MiB);
    fprintf(f, "\"accounted_peak_mib\": %.2f, \"steady_mib\": %.2f, \"overhead_mib\": %.2f, \"total_mib\": %.2f}",
            p->accounted_peak / MiB, p->steady / MiB, p->overhead / MiB, p->total / MiB);
}

/* the categories by size, largest first, as "name X.X GiB, ..." */
static void largest(const plan *p, char *buf, size_t cap, int count) {
    int used[MEM_NCAT] = {0};
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < count; i++) {
        int best = -1;
        for (int c = 0; c < MEM_NCAT; c++)
            if (!used[c] && p->peak[c] && (best < 0 || p->peak[c] > p->peak[best])) best = c;
        if (best < 0) break;
        used[best] = 1;
        int w = snprintf(buf + k, cap - k, "%s%s %s", i ? ", " : "", mem_cat_name((mem_cat)best),
                         human(p->peak[best]));
        if (w < 0 || (size_t)w >= cap - k) break;
        k += (size_t)w;
    }
}

/* The changes the refusal can suggest: the four switches and a smaller micro-batch (with the same
 * total batch, through accumulation). */
enum { FIX_LOQT = 1, FIX_8BIT = 2, FIX_PLU = 4, FIX_CKPT = 8 };

static int apply_fix(const plan_input *in, int mask, int batch, plan_input *t) {
    *t = *in;
    if (mask & FIX_LOQT) {
        if (strcmp(method_find(in->method)->name, "full") || !method_find("loqt")) return 0;
        optim_kind k = in->mo.optimizer;
        t->method = "loqt";
        method_opts_defaults(&t->mo, method_find("loqt"));
        t->mo.optimizer = k;
        t->mo.seed = in->mo.seed;
    }
    if (mask & FIX_8BIT) {
        if (in->mo.optimizer == OPTIM_ADAM8BIT) return 0;
        t->mo.optimizer = OPTIM_ADAM8BIT;
    }
    /* per-layer updates save gradients only without accumulation */
    if (mask & FIX_PLU) {
        if (in->per_layer_updates || in->accum > 1 || batch != in->batch) return 0;
        t->per_layer_updates = 1;
    }
    if (mask & FIX_CKPT) {
        if (in->activation_checkpointing) return 0;
        t->activation_checkpointing = 1;
    }
    t->batch = batch;
    t->accum = in->accum * (in->batch / batch);
    return 1;
}

static void fix_text(const plan_input *in, int mask, int batch, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s%s%s", mask & FIX_LOQT ? " --method loqt" : "",
             mask & FIX_8BIT ? " --optimizer adam8bit" : "", mask & FIX_PLU ? " --per-layer-updates" : "",
             mask & FIX_CKPT ? " --activation-checkpointing" : "");
    if (batch != in->batch) {
        size_t k = strlen(buf);
        snprintf(buf + k, cap - k, " --batch-size %d --total-batch-size %d", batch, in->batch * in->accum);
    }
}

int plan_check_fits(const plan *p, size_t max_bytes) {
    if (p->total <= max_bytes) return 0;
    const plan_input *in = &p->in;
    /* the fewest changes that fit (a smaller batch counts as one), with the largest batch; up to
     * three such alternatives */
    char fix[360] = "", one[128], big[160];
    int shown = 0;
    for (int cost = 1; cost <= 5 && !shown; cost++) {
        for (int mask = 0; mask < 16 && shown < 3; mask++) {
            const int bits = (mask & 1) + (mask >> 1 & 1) + (mask >> 2 & 1) + (mask >> 3 & 1);
            for (int b = in->batch; b >= 1 && shown < 3; b = b > 1 ? b / 2 : 0) {
                if (in->batch % b || bits + (b != in->batch) != cost) continue;
                plan_input t;
                plan q;
                if (!apply_fix(in, mask, b, &t) || plan_make(&q, &t) || q.total > max_bytes) continue;
                fix_text(in, mask, b, one, sizeof one);
                size_t k = strlen(fix);
                snprintf(fix + k, sizeof fix - k, "%s%s", shown ? ";" : "", one);
                shown++;
                break; /* the largest batch for this mask */
            }
        }
    }
    largest(p, big, sizeof big, 3);
    if (!shown) {
        plan_input t = *in;
        plan q;
        if (method_find("loqt") && !strcmp(method_find(in->method)->name, "full")) {
            t.method = "loqt";
            method_opts_defaults(&t.mo, method_find("loqt"));
        }
        t.mo.optimizer = OPTIM_ADAM8BIT;
        t.activation_checkpointing = t.per_layer_updates = 1;
        t.accum = in->accum * in->batch; /* the same sequences per step, one at a time */
        t.batch = 1;
        size_t least = plan_make(&q, &t) == 0 ? q.total : 0;
        return loqt_set_error("the run needs about %s, more than the %s allowed (largest: %s); "
                              "it does not fit even with --method loqt --optimizer adam8bit "
                              "--per-layer-updates --activation-checkpointing --batch-size 1 (%s): "
                              "use a smaller model",
                              human(p->total), human(max_bytes), big, human(least));
    }
    return loqt_set_error("the run needs about %s, more than the %s allowed (largest: %s); "
                          "it would fit with%s%s",
                          human(p->total), human(max_bytes), big, shown > 1 ? " one of:" : "", fix);
}

/* ---- the papers' estimate ------------------------------------------------------------------ */

double plan_paper_estimate(const llama_config *c, const char *method, const method_opts *mo) {
    const linear_method *lm = method_find(method);
    if (!lm || !lm->paper_bytes) return 0;
    const double d = c->hidden_size, V = c->vocab_size;
    /* embeddings, norms, lm_head: weights and Adam's two moments in 16 bits */
    double b = 6.0 * ((c->tie_word_embeddings ? 1 : 2) * V * d + (2.0 * c->num_hidden_layers + 1) * d);
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        int out, in;
        llama_linear_shape(c, j, &out, &in);
        b += c->num_hidden_layers * lm->paper_bytes(out, in, j, mo);
    }
    return b;
}

/* ---- "20GiB" ------------------------------------------------------------------------------ */

int plan_parse_bytes(const char *s, size_t *out) {
    if (!s || !*s) return loqt_set_error("empty memory size");
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v))
        return loqt_set_error("bad memory size '%s' (expected e.g. 20GiB, 24000MiB, 1.5G)", s);
    while (*end == ' ') end++;
    char u[8] = "";
    size_t k = 0;
    while (end[k] && k < sizeof u - 1) {
        u[k] = (char)tolower((unsigned char)end[k]);
        k++;
    }
    if (end[k]) return loqt_set_error("bad memory size '%s' (expected e.g. 20GiB, 24000MiB, 1.5G)", s);
    static const struct { const char *name; double mul; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1024.0}, {"kib", 1024.0}, {"kb", 1e3}, {"m", 1048576.0},
        {"mib", 1048576.0}, {"mb", 1e6}, {"g", 1073741824.0}, {"gib", 1073741824.0}, {"gb", 1e9},
        {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(u, units[i].name)) {
            double b = v * units[i].mul;
            if (b > 1.8e19) return loqt_set_error("memory size '%s' is too large", s);
            /* 0 would read as "no limit" further on: a limit must be a size */
            if (b < 1) return loqt_set_error("memory size '%s' is not positive (omit --max-memory for the machine's memory)", s);
            *out = (size_t)b;
            return 0;
        }
    return loqt_set_error("bad memory size '%s': unknown unit (use KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s);
}
