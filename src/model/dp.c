/* Data-parallel training (model/dp.h). */
#include "model/dp.h"

#include "core/dist.h"
#include "core/error.h"
#include "model/plan.h"

#include <stdlib.h>
#include <string.h>

/* views of one bucket: a block's 7 layers (up to 4 views each) and 2 norms */
enum { MAX_VIEWS = 4, MAX_BUCKET_UNITS = LIN_PER_BLOCK + 2, MAX_SEGS = MAX_BUCKET_UNITS * MAX_VIEWS };

int dp_owns(const llama_dp *dp, int unit) { return !dp->zero || dp->owner[unit] == dp->rank; }

int dp_init(llama_dp *dp, llama_model *m, int zero) {
    memset(dp, 0, sizeof *dp);
    const linear_method *lm = m->method;
    if (!lm->grad_views || !lm->params_get || !lm->params_set)
        return loqt_set_error("method %s has no gradient views (grad_views, params_get, params_set): it cannot "
                              "train data-parallel", lm->name);
    dp->rank = dist_rank();
    dp->size = dist_size();
    dp->zero = zero && dp->size > 1;
    dp->n_units = llama_unit_count(m);
    if (dp->zero) {
        dp->owner = malloc(sizeof *dp->owner * (size_t)dp->n_units);
        if (plan_dp_owners(&m->cfg, lm, &m->mopts, dp->size, dp->owner)) return -1;
        /* the staging buffer's size comes from the planner: params_get must fit in it */
        dp->stage_n = plan_dp_stage_floats(&m->cfg);
        for (int u = llama_dense_count(m); u < dp->n_units; u++)
            if (llama_unit_params_get(m, u, NULL) > dp->stage_n)
                return loqt_set_error("method %s: a layer has %zu trainable values, more than the %zu of the largest "
                                      "weight, which --zero 1's broadcast buffer holds", lm->name,
                                      llama_unit_params_get(m, u, NULL), dp->stage_n);
        dp->stage = mem_alloc(MEM_SCRATCH, dp->stage_n * sizeof(float));
    }
    m->dp = dp;
    return 0;
}

void dp_free(llama_dp *dp, llama_model *m) {
    free(dp->owner);
    mem_free(dp->stage);
    if (m && m->dp == dp) m->dp = NULL;
    memset(dp, 0, sizeof *dp);
}

/* the views of the units for which keep(view, owner) holds, as pieces */
static int collect(llama_model *m, const int *units, int n, int owner, dist_seg *segs) {
    llama_dp *dp = m->dp;
    int ns = 0;
    for (int i = 0; i < n; i++) {
        grad_view v[MAX_VIEWS];
        const int nv = llama_unit_views(m, units[i], v, MAX_VIEWS);
        for (int k = 0; k < nv && ns < MAX_SEGS; k++) {
            const int to_owner = dp->zero && v[k].owner_only;
            if (owner < 0 ? to_owner : !to_owner || dp->owner[units[i]] != owner) continue;
            segs[ns++] = (dist_seg){v[k].data, v[k].n};
        }
    }
    return ns;
}

int dp_reduce_units(llama_dp *dp, llama_model *m, const int *units, int n) {
    if (dp->size < 2) return 0;
    if (n > MAX_BUCKET_UNITS) return loqt_set_error("dp: a bucket of %d units is too large", n);
    dist_seg segs[MAX_SEGS];
    int ns = collect(m, units, n, -1, segs); /* what every rank needs */
    if (ns && dist_allreduce_f32(segs, ns, DIST_GRADS)) return -1;
    for (int o = 0; dp->zero && o < dp->size; o++) {
        ns = collect(m, units, n, o, segs);
        if (ns && dist_reduce_f32(segs, ns, o, DIST_GRADS)) return -1;
    }
    return 0;
}

int dp_reduce_block(llama_dp *dp, llama_model *m, int l) {
    int units[MAX_BUCKET_UNITS];
    for (int j = 0; j < MAX_BUCKET_UNITS; j++) units[j] = llama_block_unit(m, l, j);
    return dp_reduce_units(dp, m, units, MAX_BUCKET_UNITS);
}

int dp_reduce_all(llama_dp *dp, llama_model *m) {
    const int lm_head = llama_lm_head_unit(m), embed = 0;
    int head[2] = {lm_head, llama_final_norm_unit(m)}; /* the head: lm_head (untied), final norm */
    if (lm_head < 0 ? dp_reduce_units(dp, m, head + 1, 1) : dp_reduce_units(dp, m, head, 2)) return -1;
    for (int l = m->cfg.num_hidden_layers - 1; l >= 0; l--)
        if (dp_reduce_block(dp, m, l)) return -1;
    return dp_reduce_units(dp, m, &embed, 1);
}

int dp_broadcast_params(llama_dp *dp, llama_model *m) {
    if (!dp->zero) return 0;
    const int D = llama_dense_count(m);
    for (int u = 0; u < dp->n_units; u++) {
        const int root = dp->owner[u];
        if (u < D) { /* a dense parameter travels from where it lives */
            const dense_param *p = llama_dense_at(m, u);
            const dist_seg s = {p->w, p->n};
            if (dist_bcast_f32(&s, 1, root, DIST_PARAMS)) return -1;
            continue;
        }
        const dist_seg s = {dp->stage, llama_unit_params_get(m, u, NULL)};
        if (dp->rank == root) llama_unit_params_get(m, u, dp->stage);
        if (dist_bcast_f32(&s, 1, root, DIST_PARAMS)) return -1;
        if (dp->rank != root) llama_unit_params_set(m, u, dp->stage);
    }
    return 0;
}

int dp_sum(llama_dp *dp, double *x, int n) { return dp->size < 2 ? 0 : dist_allreduce_f64(x, n, DIST_CONTROL); }
