/* The memory planner (see plan.h): a replay of the trainer's allocations on a mem_sim counter.
 *
 * The functions below follow model/llama.c and model/train.c call by call: the model's own
 * buffers come from llama.c's size functions, and each linear layer's from its method's `plan`
 * hook, called for the same phase at the same moment as the real code calls the method
 * (tests/test_plan.c and tests/test_methods.c run the real code beside the plan and fail on any
 * difference). */
#include "model/plan.h"

#include "core/dist.h"
#include "core/error.h"
#include "model/llama.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* backward visits a block's projections in this order (llama.c block_backward) */
static const int bwd_order[LIN_PER_BLOCK] = {LIN_DOWN, LIN_GATE, LIN_UP, LIN_O, LIN_Q, LIN_K, LIN_V};

typedef struct {
    const plan_input *in;
    const linear_method *m;
    mem_sim s;
    linear_plan *lin;      /* one per linear layer, block-major */
    int transient;         /* per-layer updates without accumulation: gradients freed after use */
    int optim_ready;       /* the dense parameters' optimizer state exists */
    int embed_g, lm_head_g; /* their on-demand gradient buffers exist */
    int accum;             /* micro-batches of this rank per step */
    const int *owner;      /* --zero 1: each unit's rank; NULL: this rank updates every unit */
    int rank;
} replay;

/* the unit numbers of model/llama.h (llama_unit_count) */
/* the units of llama.c's numbering (llama_dense_at, llama_block_unit): embed, (attn_norm,
 * mlp_norm) per block, the final norm, lm_head (untied only), then the linear layers */
static int dense_units(const llama_config *c) { return 2 * c->num_hidden_layers + 3 - (c->tie_word_embeddings ? 1 : 0); }
static int final_norm_unit(const llama_config *c) { return 2 * c->num_hidden_layers + 1; }
static int lm_head_unit(const llama_config *c) { return 2 * c->num_hidden_layers + 2; }
static int norm_unit(int l, int k) { return 1 + 2 * l + k; }
static int linear_unit(const llama_config *c, int l, int j) { return dense_units(c) + l * LIN_PER_BLOCK + j; }
static int owned(const replay *r, int u) { return !r->owner || r->owner[u] == r->rank; }

static size_t fbytes(size_t n) { return n * sizeof(float); }

static linear_plan *layer(replay *r, int l, int j) { return &r->lin[l * LIN_PER_BLOCK + j]; }

static void phase(replay *r, int l, int j, linear_phase ph, long step) {
    linear_plan *p = layer(r, l, j);
    p->step = step;
    p->N = r->in->batch * r->in->seq;
    r->m->plan(p, ph, &r->s);
}

static void phase_all(replay *r, linear_phase ph, long step) {
    for (int l = 0; l < r->in->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++) phase(r, l, j, ph, step);
}

/* ---- model creation and batch buffers (llama_create, llama_set_batch) ---------------------- */

/* param_init: the weight, and the gradient unless it is created on demand or frozen */
static void param_init_replay(replay *r, size_t n, int on_demand) {
    mem_sim_alloc(&r->s, MEM_DENSE, fbytes(n));
    if (!on_demand && !r->in->mo.freeze_dense) mem_sim_alloc(&r->s, MEM_GRADS, fbytes(n));
}

/* the calibration of a run from pretrained weights whose method's init wants it (llama.c):
 * n_seqs sequences of the run's length, in micro-batches of its batch size */
static int calibration(const replay *r, llama_calib *cal) {
    const int n = r->in->init_from ? llama_calibrates(r->m, &r->in->mo) : 0;
    *cal = (llama_calib){NULL, n, r->in->seq, r->in->batch};
    return n > 0;
}

/* calib_begin / calib_end: the residual stream, one micro-batch's block activations (no x), the
 * down output and the attention scratch */
static void calib_buffers(replay *r, const llama_calib *cal, int alloc) {
    size_t b[LLAMA_CALIB_BUFS], act[BLOCK_ACT_BUFS];
    llama_calib_bytes(&r->in->cfg, cal, r->in->threads, b);
    llama_block_act_bytes(&r->in->cfg, cal->batch < cal->n_seqs ? cal->batch : cal->n_seqs, cal->seq, act);
    void (*op)(mem_sim *, mem_cat, size_t) = alloc ? mem_sim_alloc : mem_sim_free;
    op(&r->s, MEM_ACTS, b[0]);
    for (int i = 1; i < BLOCK_ACT_BUFS; i++) op(&r->s, MEM_ACTS, act[i]);
    op(&r->s, MEM_SCRATCH, b[1]);
    op(&r->s, MEM_SCRATCH, b[2]);
}

static void create(replay *r) {
    const llama_config *c = &r->in->cfg;
    const size_t d = c->hidden_size, V = c->vocab_size;
    mem_sim_alloc(&r->s, MEM_DENSE, fbytes(llama_rope_floats(c))); /* rope cos, sin */
    mem_sim_alloc(&r->s, MEM_DENSE, fbytes(llama_rope_floats(c)));
    param_init_replay(r, V * d, 1); /* embed */
    llama_calib cal;
    const int calib = calibration(r, &cal);
    if (calib) calib_buffers(r, &cal, 1);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        param_init_replay(r, d, 0); /* attn_norm */
        param_init_replay(r, d, 0); /* mlp_norm */
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            linear_plan *p = layer(r, l, j);
            llama_linear_shape(c, j, &p->out, &p->in);
            p->proj = j;
            p->o = &r->in->mo;
            p->init_W0 = r->in->init_from;
            p->init_gram = calib;
        }
        if (calib) { /* calib_block: the block's seven W0 and four Grams, then the inits */
            int dims[LLAMA_CALIB_GRAMS];
            llama_calib_gram_dims(c, dims);
            for (int j = 0; j < LIN_PER_BLOCK; j++)
                mem_sim_alloc(&r->s, MEM_SCRATCH, llama_init_scratch_bytes(layer(r, l, j)->out, layer(r, l, j)->in));
            for (int g = 0; g < LLAMA_CALIB_GRAMS; g++) mem_sim_alloc(&r->s, MEM_SCRATCH, fbytes((size_t)dims[g] * dims[g]));
            for (int j = 0; j < LIN_PER_BLOCK; j++) {
                phase(r, l, j, LPHASE_INIT, 0);
                mem_sim_free(&r->s, MEM_SCRATCH, llama_init_scratch_bytes(layer(r, l, j)->out, layer(r, l, j)->in));
            }
            for (int g = 0; g < LLAMA_CALIB_GRAMS; g++) mem_sim_free(&r->s, MEM_SCRATCH, fbytes((size_t)dims[g] * dims[g]));
            continue;
        }
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            const linear_plan *p = layer(r, l, j);
            /* from a pretrained checkpoint: the layer's weight in fp32 while its init runs */
            const size_t w0 = llama_init_scratch_bytes(p->out, p->in);
            if (r->in->init_from) mem_sim_alloc(&r->s, MEM_SCRATCH, w0);
            phase(r, l, j, LPHASE_INIT, 0);
            if (r->in->init_from) mem_sim_free(&r->s, MEM_SCRATCH, w0);
        }
    }
    if (calib) calib_buffers(r, &cal, 0);
    param_init_replay(r, d, 0);     /* final_norm */
    if (!c->tie_word_embeddings) param_init_replay(r, V * d, 1); /* lm_head */
}

static void set_batch(replay *r, int threads) {
    const plan_input *in = r->in;
    size_t act[BLOCK_ACT_BUFS], bat[BATCH_BUFS];
    llama_block_act_bytes(&in->cfg, in->batch, in->seq, act);
    llama_batch_bytes(&in->cfg, in->batch, in->seq, threads, bat);
    const int ckpt = in->activation_checkpointing;
    for (int l = 0; l < in->cfg.num_hidden_layers; l++)
        for (int i = 0; i < (ckpt ? 1 : BLOCK_ACT_BUFS); i++) mem_sim_alloc(&r->s, MEM_ACTS, act[i]);
    if (ckpt) /* the shared work block, without x */
        for (int i = 1; i < BLOCK_ACT_BUFS; i++) mem_sim_alloc(&r->s, MEM_ACTS, act[i]);
    for (int i = 0; i < BATCH_BUFS; i++)
        mem_sim_alloc(&r->s, i < BATCH_ACT_BUFS ? MEM_ACTS : MEM_SCRATCH, bat[i]);
    mem_sim_alloc(&r->s, MEM_SCRATCH, llama_gemm_scratch_bytes(in->dtype, threads));
}

/* ---- one optimizer step (train_step, llama_forward, llama_backward) ------------------------ */

/* an on-demand gradient buffer (param_grad; none when frozen) */
static void need_grad(replay *r, int *exists) {
    const size_t n = (size_t)r->in->cfg.vocab_size * r->in->cfg.hidden_size;
    if (r->in->mo.freeze_dense) return;
    if (!*exists) mem_sim_alloc(&r->s, MEM_GRADS, fbytes(n));
    *exists = 1;
}

/* a dense parameter's update by its owner (its optimizer state at the first); under per-layer
 * updates an on-demand gradient is freed right after (param_step) */
static void dense_update(replay *r, int unit, size_t n, int *on_demand) {
    if (r->in->mo.freeze_dense) return; /* param_step: a frozen parameter is not updated */
    if (owned(r, unit)) optim_plan_update(&r->s, r->in->mo.optimizer, n, r->optim_ready);
    if (on_demand && r->transient) {
        mem_sim_free(&r->s, MEM_GRADS, fbytes(n));
        *on_demand = 0;
    }
}

static void block_forward(replay *r, int l) {
    for (int j = 0; j < LIN_PER_BLOCK; j++) phase(r, l, j, LPHASE_FORWARD, 0);
}

static void forward(replay *r) {
    for (int l = 0; l < r->in->cfg.num_hidden_layers; l++) block_forward(r, l);
    /* the fused lm_head + loss gradient (the embedding's when tied) */
    need_grad(r, r->in->cfg.tie_word_embeddings ? &r->embed_g : &r->lm_head_g);
}

/* block_step: each layer's refresh and update as soon as its gradient is complete */
static void block_step(replay *r, int l, long step) {
    const size_t d = r->in->cfg.hidden_size;
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        phase(r, l, j, LPHASE_END_STEP, step);
        if (owned(r, linear_unit(&r->in->cfg, l, j))) phase(r, l, j, LPHASE_STEP, step);
        if (r->transient && r->m->release_grads) phase(r, l, j, LPHASE_RELEASE_GRADS, step);
    }
    dense_update(r, norm_unit(l, 0), d, NULL); /* the block's norms */
    dense_update(r, norm_unit(l, 1), d, NULL);
}

static void backward(replay *r, int step_now, long step) {
    const llama_config *c = &r->in->cfg;
    const size_t d = c->hidden_size, Vd = (size_t)c->vocab_size * d;
    if (step_now && !c->tie_word_embeddings) dense_update(r, lm_head_unit(c), Vd, &r->lm_head_g);
    if (step_now) dense_update(r, final_norm_unit(c), d, NULL);
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        if (r->in->activation_checkpointing) block_forward(r, l); /* recomputed */
        for (int jj = 0; jj < LIN_PER_BLOCK; jj++) phase(r, l, bwd_order[jj], LPHASE_BACKWARD, step);
        if (step_now) block_step(r, l, step);
    }
    need_grad(r, &r->embed_g);
    if (step_now) dense_update(r, 0, Vd, &r->embed_g);
}

static void train_step_replay(replay *r, long step) {
    const plan_input *in = r->in;
    const llama_config *c = &in->cfg;
    const size_t d = c->hidden_size, Vd = (size_t)c->vocab_size * d;
    phase_all(r, LPHASE_BEGIN_STEP, step);
    for (int mb = 0; mb < r->accum; mb++) {
        forward(r);
        backward(r, in->per_layer_updates && mb == r->accum - 1, step);
    }
    if (!in->per_layer_updates) {
        phase_all(r, LPHASE_END_STEP, step);
        /* llama_optimizer_step: dense parameters in order (embed, norms, final norm, lm_head) */
        dense_update(r, 0, Vd, NULL);
        for (int l = 0; l < c->num_hidden_layers; l++) {
            dense_update(r, norm_unit(l, 0), d, NULL);
            dense_update(r, norm_unit(l, 1), d, NULL);
        }
        dense_update(r, final_norm_unit(c), d, NULL);
        if (!c->tie_word_embeddings) dense_update(r, lm_head_unit(c), Vd, NULL);
        for (int l = 0; l < c->num_hidden_layers; l++)
            for (int j = 0; j < LIN_PER_BLOCK; j++)
                if (owned(r, linear_unit(c, l, j))) phase(r, l, j, LPHASE_STEP, step);
    }
    r->optim_ready = 1;
}

/* llama_export_dense (--save-original-model): every W_eff in fp32 at once */
static void export_dense(replay *r) {
    const int L = r->in->cfg.num_hidden_layers;
    size_t held = 0;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            const linear_plan *p = layer(r, l, j);
            mem_sim_alloc(&r->s, MEM_SCRATCH, fbytes((size_t)p->out * p->in));
            held += fbytes((size_t)p->out * p->in);
            phase(r, l, j, LPHASE_EXPORT, 0);
        }
    mem_sim_free(&r->s, MEM_SCRATCH, held);
}

/* cmd_train opens the loaders first: the train split (plus one shard while reading), then the
 * validation split */
static void data_buffers(replay *r) {
    const plan_split *sp[2] = {&r->in->train, &r->in->val};
    for (int i = 0; i < 2; i++) {
        if (!sp[i]->tokens) continue;
        mem_sim_alloc(&r->s, MEM_DATA, 2 * sp[i]->tokens);
        mem_sim_temp(&r->s, MEM_DATA, 2 * sp[i]->max_shard);
    }
}

/* ---- the plan ----------------------------------------------------------------------------- */

void plan_input_defaults(plan_input *in, const llama_config *cfg, const char *method) {
    memset(in, 0, sizeof *in);
    if (cfg) in->cfg = *cfg;
    in->method = method ? method : "full";
    method_opts_defaults(&in->mo, method_find(in->method));
    in->batch = 8;
    in->seq = 256;
    in->accum = 1;
    in->steps = 1000;
}

static int online_cores(void) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

static int check_input(const plan_input *in, const linear_method *lm) {
    if (config_validate(&in->cfg)) return -1;
    if (!lm) return loqt_set_error("unknown method '%s' (available: %s)", in->method ? in->method : "",
                                   method_names());
    if (!lm->plan) return loqt_set_error("the memory planner cannot plan method '%s'", lm->name);
    if (in->batch <= 0 || in->seq <= 1 || in->accum <= 0 || in->steps <= 0)
        return loqt_set_error("plan: batch size, accumulation and steps must be positive and the "
                              "sequence length at least 2");
    if (in->seq > in->cfg.max_position_embeddings)
        return loqt_set_error("sequence length %d exceeds the model's max_position_embeddings %d",
                              in->seq, in->cfg.max_position_embeddings);
    if ((long long)in->batch * in->seq > (1LL << 31) / 4)
        return loqt_set_error("batch %d x %d tokens is too large", in->batch, in->seq);
    if (in->threads < 0) return loqt_set_error("threads must be >= 0");
    if (in->ranks < 0 || in->ranks > 65536) return loqt_set_error("plan: ranks must be in [1, 65536]");
    if (in->ranks > 1 && in->accum % in->ranks)
        return loqt_set_error("plan: %d micro-batches per step cannot be split evenly over %d ranks", in->accum, in->ranks);
    return method_config_validate(lm, &in->mo);
}

/* One rank's replay into p (p->in filled): the whole run of cmd_train in its order. */
static int replay_rank(plan *p, const linear_method *lm, const int *owner, int rank) {
    const plan_input *in = &p->in;
    const int ranks = in->ranks > 1 ? in->ranks : 1;
    replay r = {.in = in, .m = lm, .owner = owner, .rank = rank, .accum = in->accum / ranks};
    r.transient = in->per_layer_updates && r.accum == 1;
    r.lin = calloc((size_t)in->cfg.num_hidden_layers * LIN_PER_BLOCK, sizeof *r.lin);
    if (!r.lin) return loqt_set_error("plan: out of memory");
    if (ranks > 1) mem_sim_alloc(&r.s, MEM_SCRATCH, dist_staging_bytes(ranks)); /* dist_init */
    data_buffers(&r);
    llama_calib cal;
    const size_t calib_tokens = calibration(&r, &cal) ? sizeof(int32_t) * (size_t)cal.n_seqs * cal.seq : 0;
    if (calib_tokens) mem_sim_alloc(&r.s, MEM_DATA, calib_tokens); /* the trainer's calibration tokens */
    create(&r);
    if (calib_tokens) mem_sim_free(&r.s, MEM_DATA, calib_tokens);
    set_batch(&r, in->threads);
    if (owner) /* dp_init: the staging buffer of the parameter broadcasts */
        mem_sim_alloc(&r.s, MEM_SCRATCH, fbytes(plan_dp_stage_floats(&in->cfg)));
    const size_t tok = (size_t)in->batch * in->seq * r.accum;
    mem_sim_alloc(&r.s, MEM_DATA, sizeof(int32_t) * tok); /* inputs */
    mem_sim_alloc(&r.s, MEM_DATA, sizeof(int32_t) * tok); /* targets */

    /* step 0, step 1, and the first later refresh within the run: the first with the optimizer
     * state already allocated, usually the peak of a long run */
    train_step_replay(&r, 0);
    const long first = lm->next_refresh ? lm->next_refresh(&in->mo, 0) : -1;
    p->refresh_with_optim = first > 0 && first < in->steps;
    if (in->steps > 1) train_step_replay(&r, 1);
    if (p->refresh_with_optim && first > 1) train_step_replay(&r, first);
    p->steady = r.s.total;
    if (in->save_original_model && rank == 0) export_dense(&r); /* rank 0 writes it */
    free(r.lin);

    memcpy(p->peak, r.s.peak, sizeof p->peak);
    p->accounted_peak = r.s.peak_total;
    p->overhead = plan_overhead_bytes(in->threads, lm->heap_churn || r.transient);
    p->total = p->accounted_peak + p->overhead;
    p->rank = rank;
    return 0;
}

int plan_make(plan *p, const plan_input *in) {
    memset(p, 0, sizeof *p);
    const linear_method *lm = in->method ? method_find(in->method) : NULL;
    if (check_input(in, lm)) return -1;
    p->in = *in;
    p->in.method = lm->name; /* the canonical name, a static string */
    p->in.threads = in->threads ? in->threads : online_cores();
    p->in.ranks = in->ranks > 1 ? in->ranks : 1;
    p->in.zero = in->zero && p->in.ranks > 1;
    if (!p->in.zero) {
        if (replay_rank(p, lm, NULL, 0)) return -1;
        p->rank_min_accounted = p->accounted_peak;
        return 0;
    }
    /* --zero 1: the ranks own different units; the plan is that of the rank with the largest peak */
    int *owner = malloc(sizeof *owner * (size_t)(dense_units(&in->cfg) + in->cfg.num_hidden_layers * LIN_PER_BLOCK));
    if (!owner || plan_dp_owners(&in->cfg, lm, &in->mo, p->in.ranks, owner)) {
        free(owner);
        return owner ? -1 : loqt_set_error("plan: out of memory");
    }
    plan best = *p, cur = *p;
    int rc = 0;
    for (int rank = 0; rank < p->in.ranks && !rc; rank++) {
        rc = replay_rank(&cur, lm, owner, rank);
        if (!rc && (rank == 0 || cur.accounted_peak > best.accounted_peak)) best = cur;
        if (!rc && (rank == 0 || cur.accounted_peak < best.rank_min_accounted)) best.rank_min_accounted = cur.accounted_peak;
    }
    free(owner);
    if (rc) return -1;
    *p = best;
    return 0;
}

/* ---- data parallelism: the units' sizes and owners ------------------------------------------ */

size_t plan_linear_optim_bytes(const linear_method *lm, int out, int in, int proj, const method_opts *mo) {
    mem_sim s = {0};
    linear_plan p = {.out = out, .in = in, .proj = proj, .o = mo, .N = 1};
    const linear_phase first_step[] = {LPHASE_INIT, LPHASE_BEGIN_STEP, LPHASE_BACKWARD, LPHASE_END_STEP, LPHASE_STEP};
    for (size_t i = 0; i < sizeof first_step / sizeof first_step[0]; i++) lm->plan(&p, first_step[i], &s);
    return s.peak[MEM_OPTIM];
}

/* the optimizer-state bytes of every unit, llama_unit_count order */
static void unit_sizes(const llama_config *c, const linear_method *lm, const method_opts *mo, size_t *n) {
    const size_t d = c->hidden_size, Vd = (size_t)c->vocab_size * d;
    const int D = dense_units(c);
    for (int u = 0; u < D; u++) {
        mem_sim s = {0};
        if (!mo->freeze_dense) optim_plan_update(&s, mo->optimizer, u == 0 || (u == lm_head_unit(c) && !c->tie_word_embeddings) ? Vd : d, 0);
        n[u] = s.peak[MEM_OPTIM];
    }
    size_t per[LIN_PER_BLOCK];
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        int out, in;
        llama_linear_shape(c, j, &out, &in);
        per[j] = plan_linear_optim_bytes(lm, out, in, j, mo);
    }
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++) n[linear_unit(c, l, j)] = per[j];
}

int plan_dp_owners(const llama_config *cfg, const linear_method *lm, const method_opts *mo, int ranks, int *owner) {
    const int nu = dense_units(cfg) + cfg->num_hidden_layers * LIN_PER_BLOCK;
    if (ranks < 1) return loqt_set_error("plan: ranks must be >= 1");
    size_t *n = malloc(sizeof *n * (size_t)nu), *load = calloc((size_t)ranks, sizeof *load);
    int *done = calloc((size_t)nu, sizeof *done);
    if (!n || !load || !done) {
        free(n), free(load), free(done);
        return loqt_set_error("plan: out of memory");
    }
    unit_sizes(cfg, lm, mo, n);
    for (int k = 0; k < nu; k++) {
        int u = -1, to = 0;
        for (int i = 0; i < nu; i++) /* the largest unit not yet placed (stable) */
            if (!done[i] && (u < 0 || n[i] > n[u])) u = i;
        for (int q = 1; q < ranks; q++)
            if (load[q] < load[to]) to = q;
        done[u] = 1;
        owner[u] = to;
        load[to] += n[u];
    }
    free(n), free(load), free(done);
    return 0;
}

size_t plan_dp_stage_floats(const llama_config *cfg) {
    size_t best = 0;
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        int out, in;
        llama_linear_shape(cfg, j, &out, &in);
        if ((size_t)out * in > best) best = (size_t)out * in;
    }
    return best;
}

/* Unaccounted memory, measured with `loqt bench` (docs/memory.md: RSS minus the accounted peak,
 * 60m and 130m, 1 to 16 threads): about 38 MiB for the program, its libraries and the GEMM
 * library's packing buffer, 0.75 MiB per thread (stacks, per-thread buffers), and about 30 MiB
 * more when large buffers are freed and allocated again during training (refreshes, per-layer
 * updates that release gradients): glibc raises its mmap threshold to the size of the first large
 * buffer freed, after which such buffers come from the heap and freed ones stay resident.  Small
 * models whose products are too small to touch the whole packing buffer need less. */
size_t plan_overhead_bytes(int threads, int heap_churn) {
    const size_t MiB = 1 << 20;
    if (threads < 1) threads = 1;
    return 38 * MiB + (size_t)threads * 3 * MiB / 4 + (heap_churn ? 30 * MiB : 0);
}
