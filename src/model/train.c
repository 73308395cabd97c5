#include "model/train.h"

#include "model/dp.h"

#include <math.h>

void train_hparams_defaults(train_hparams *h) {
    h->sched.kind = SCHED_COSINE;
    h->sched.lr = 1e-3;
    h->sched.warmup_steps = 0;
    h->sched.total_steps = 1000;
    h->sched.min_lr_ratio = 0.1;
    h->beta1 = 0.9f;
    h->beta2 = 0.999f;
    h->eps = 1e-6f;
    h->weight_decay = 0.0f;
    h->grad_clipping = 0.0f;
    h->optimizer = OPTIM_ADAMW;
}

/* no update: the step's gradients are discarded */
static int skip(llama_model *m, step_result *out) {
    llama_skip_step(m);
    out->skipped = 1;
    return 0;
}

int train_step(llama_model *m, long step, const int32_t *const *inputs,
               const int32_t *const *targets, int accum, const train_hparams *h, step_result *out) {
    step_result r = {0};
    /* a method may scale the whole model's learning rate (ReLoRA's restarting warmup) */
    const double lr_scale = m->method->lr_scale ? m->method->lr_scale(&m->mopts, step) : 1.0;
    const int N = m->B * m->T, world = m->dp ? m->dp->size : 1;
    /* each token's loss weighs 1 / (all tokens of the step, on every rank), so accumulated and
     * summed gradients are those of the mean loss of the whole global batch */
    const float scale = 1.0f / ((float)N * (float)accum * (float)world);
    optim_hparams oh = {
        .kind = h->optimizer,
        .lr = (float)(sched_lr(&h->sched, step) * lr_scale),
        .beta1 = h->beta1,
        .beta2 = h->beta2,
        .eps = h->eps,
        .weight_decay = h->weight_decay,
        .grad_scale = 1.0f,
        .t = step + 1,
    };
    r.lr = oh.lr;
    if (m->per_layer_updates) {
        /* each layer is updated inside the backward of the last micro-batch, as soon as its
         * gradient over the whole batch is complete; gradients of earlier micro-batches are
         * accumulated first, so the result equals the ordinary step (no global clipping) */
        m->layer_step = oh;
        m->layer_step_index = step;
        m->transient_grads = accum == 1;
        llama_begin_step(m, step);
        int rc = 0;
        for (int i = 0; i < accum && !rc; i++) {
            m->last_microbatch = i == accum - 1;
            double li = llama_forward(m, inputs[i], targets[i], scale, NULL);
            r.loss += li;
            /* the ranks agree on the loss before the updates of the last micro-batch */
            if (m->last_microbatch && m->dp && dp_sum(m->dp, &r.loss, 1)) return -1;
            if (!isfinite(world > 1 ? r.loss : li)) { /* before the updates: skip the step */
                m->last_microbatch = 0;
                llama_skip_step(m);
                r.loss = world > 1 ? r.loss : li;
                r.grad_norm = NAN; /* not computed: the step is skipped before its updates */
                r.skipped = 1;
                *out = r;
                return 0;
            }
            rc = llama_backward(m, inputs[i]);
        }
        m->last_microbatch = 0;
        if (!rc && m->dp) rc = dp_broadcast_params(m->dp, m);
        r.loss /= (double)accum * world;
        r.grad_norm = NAN;
        *out = r;
        return rc;
    }
    llama_zero_grad(m);
    llama_begin_step(m, step);
    for (int i = 0; i < accum; i++) {
        r.loss += llama_forward(m, inputs[i], targets[i], scale, NULL);
        llama_backward(m, inputs[i]);
    }
    if (m->dp && dp_reduce_all(m->dp, m)) return -1;
    /* the loss of the global batch, and whether any rank's gradients are not finite */
    double agree[2] = {r.loss, llama_grads_finite(m) ? 0.0 : 1.0};
    if (m->dp && dp_sum(m->dp, agree, 2)) return -1;
    r.loss = agree[0] / ((double)accum * world);
    *out = r;
    if (!isfinite(r.loss) || agree[1] != 0) { /* before a refresh would use them */
        out->grad_norm = NAN;
        return skip(m, out);
    }
    if (llama_end_step(m, step)) return -1;
    /* each rank holds the summed gradients of the units it owns (all of them but under --zero 1) */
    double sq = llama_grad_sqnorm_owned(m);
    if (m->dp && m->dp->zero && dp_sum(m->dp, &sq, 1)) return -1;
    r.grad_norm = sqrt(sq);
    out->grad_norm = r.grad_norm;
    if (!isfinite(r.grad_norm)) return skip(m, out);
    /* torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1 */
    if (h->grad_clipping > 0) {
        float coef = (float)(h->grad_clipping / (r.grad_norm + 1e-6));
        if (coef < 1.0f) oh.grad_scale = coef;
    }
    out->grad_norm = r.grad_norm;
    if (llama_optimizer_step(m, &oh)) return -1;
    return m->dp ? dp_broadcast_params(m->dp, m) : 0;
}
