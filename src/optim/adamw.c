/* AdamW with bias correction and decoupled weight decay, written to match torch.optim.AdamW:
 *   w <- w * (1 - lr * wd)
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   w <- w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)            */
#include "optim/optim.h"

#include "core/error.h"
#include "core/mem.h"
#include "optim/adam8bit.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

optim_kind optim_kind_parse(const char *name, int *ok) {
    *ok = 1;
    if (!strcmp(name, "adamw") || !strcmp(name, "adam")) return OPTIM_ADAMW;
    if (!strcmp(name, "adam8bit") || !strcmp(name, "adamw8bit")) return OPTIM_ADAM8BIT;
    *ok = 0;
    return OPTIM_ADAMW;
}

const char *optim_kind_name(optim_kind k) { return k == OPTIM_ADAM8BIT ? "adam8bit" : "adamw"; }

void optim_state_init(optim_state *s, size_t n, optim_kind kind) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->n = n;
}

void optim_state_free(optim_state *s) {
    mem_free(s->m);
    mem_free(s->v);
    mem_free(s->q);
    s->m = s->v = NULL;
    s->q = NULL;
}

void optim_state_restart(optim_state *s, long t_done) {
    optim_state_reset(s);
    s->t_offset = t_done;
}

void optim_state_reset(optim_state *s) {
    if (s->m) memset(s->m, 0, s->n * sizeof(float));
    if (s->v) memset(s->v, 0, s->n * sizeof(float));
    if (s->q) memset(s->q, 0, mem_size(s->q));
}

size_t optim_state_bytes(const optim_state *s) {
    return mem_size(s->m) + mem_size(s->v) + (s->q ? mem_size(s->q) : 0);
}

int optim_state_get_moments(const optim_state *s, float *m, float *v) {
    if (s->m) {
        memcpy(m, s->m, s->n * sizeof(float));
        memcpy(v, s->v, s->n * sizeof(float));
        return 1;
    }
    return adam8bit_get_moments(s, m, v);
}

void optim_state_set_moments(optim_state *s, const float *m, const float *v) {
    if (s->m) {
        memcpy(s->m, m, s->n * sizeof(float));
        memcpy(s->v, v, s->n * sizeof(float));
        return;
    }
    adam8bit_set_moments(s, m, v);
}

void optim_plan_update(mem_sim *s, optim_kind kind, size_t n, int ready) {
    if (ready) return;
    if (kind == OPTIM_ADAM8BIT && adam8bit_state_bytes(n)) {
        mem_sim_alloc(s, MEM_OPTIM, adam8bit_state_bytes(n));
    } else {
        mem_sim_alloc(s, MEM_OPTIM, n * sizeof(float)); /* m */
        mem_sim_alloc(s, MEM_OPTIM, n * sizeof(float)); /* v */
    }
}

/* elements [e0, e1) of the state; w and g point at element e0 */
static void adamw_range(optim_state *s, float *w, const float *g, size_t e0, size_t e1,
                        const optim_hparams *h) {
    if (!s->m) {
        s->m = mem_alloc(MEM_OPTIM, s->n * sizeof(float));
        s->v = mem_alloc(MEM_OPTIM, s->n * sizeof(float));
    }
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps, gs = h->grad_scale;
    const double t = (double)(h->t - s->t_offset > 0 ? h->t - s->t_offset : 1);
    const double bc1 = 1.0 - pow(h->beta1, t), bc2 = 1.0 - pow(h->beta2, t);
    const float step = (float)(h->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - h->lr * h->weight_decay;
    float *m = s->m + e0, *v = s->v + e0;
    const long n = (long)(e1 - e0);
#pragma omp parallel for schedule(static) if (n > 32768)
    for (long i = 0; i < n; i++) {
        float gi = g[i] * gs;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] = w[i] * decay - step * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

void adamw_update(optim_state *s, float *w, const float *g, const optim_hparams *h) {
    adamw_range(s, w, g, 0, s->n, h);
}

void optim_update(optim_state *s, float *w, const float *g, const optim_hparams *h) {
    if (s->kind == OPTIM_ADAM8BIT) adam8bit_update(s, w, g, h);
    else adamw_update(s, w, g, h);
}

int optim_update_range(optim_state *s, float *w, const float *g, size_t e0, size_t e1,
                       const optim_hparams *h) {
    if (e0 > e1 || e1 > s->n)
        return loqt_set_error("optimizer: range [%zu, %zu) outside a state of %zu elements", e0, e1, s->n);
    if (adam8bit_is_quantized(s)) return adam8bit_update_range(s, w, g, e0, e1, h);
    adamw_range(s, w, g, e0, e1, h);
    return 0;
}

double optim_sqnorm(const float *g, size_t n) {
    /* fixed chunks summed in order: the clipping coefficient must not depend on scheduling */
    enum { CHUNKS = 64 };
    double part[CHUNKS];
    size_t per = (n + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int c = 0; c < CHUNKS; c++) {
        size_t i0 = (size_t)c * per, i1 = i0 + per < n ? i0 + per : n;
        double acc = 0;
        for (size_t i = i0; i < i1; i++) acc += (double)g[i] * g[i];
        part[c] = acc;
    }
    double acc = 0;
    for (int c = 0; c < CHUNKS; c++) acc += part[c];
    return acc;
}

void optim_state_save(const optim_state *s, st_writer *w, const char *prefix) {
    char name[256];
    int64_t shape[1] = {(int64_t)s->n};
    if (s->m) {
        snprintf(name, sizeof name, "%s.exp_avg", prefix);
        st_writer_add(w, name, ST_F32, 1, shape, s->m);
        snprintf(name, sizeof name, "%s.exp_avg_sq", prefix);
        st_writer_add(w, name, ST_F32, 1, shape, s->v);
    }
    if (s->t_offset) {
        int64_t one[1] = {1};
        snprintf(name, sizeof name, "%s.t_offset", prefix);
        st_writer_add(w, name, ST_I64, 1, one, &s->t_offset);
    }
    adam8bit_state_save(s, w, prefix);
}

int optim_state_load(optim_state *s, const st_file *f, const char *prefix) {
    char name[256];
    int64_t shape[1] = {(int64_t)s->n};
    snprintf(name, sizeof name, "%s.exp_avg", prefix);
    if (st_find(f, name)) {
        if (adam8bit_is_quantized(s))
            return loqt_set_error("optimizer state '%s' holds fp32 moments, but this run uses 8-bit Adam for it", name);
        if (!s->m) {
            s->m = mem_alloc(MEM_OPTIM, s->n * sizeof(float));
            s->v = mem_alloc(MEM_OPTIM, s->n * sizeof(float));
        }
        if (st_read_f32(f, name, s->m, 1, shape)) return -1;
        snprintf(name, sizeof name, "%s.exp_avg_sq", prefix);
        if (st_read_f32(f, name, s->v, 1, shape)) return -1;
    }
    snprintf(name, sizeof name, "%s.t_offset", prefix);
    if (st_find(f, name)) {
        int64_t one[1] = {1};
        if (st_read_raw(f, name, &s->t_offset, ST_I64, 1, one)) return -1;
    }
    return adam8bit_state_load(s, f, prefix);
}
