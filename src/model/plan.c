/* The memory planner (see plan.h): a replay of the trainer's allocations on byte counters.
 *
 * Every sim_* function below mirrors one piece of the real code and names it; when that code
 * changes what it allocates, the matching function here changes with it (tests/test_plan.c runs
 * the real code beside the plan and fails on any difference). */
#include "model/plan.h"

#include "core/error.h"
#include "kernels/ops.h"
#include "methods/loqt.h"
#include "optim/adam8bit.h"
#include "quant/nf4.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { M_FULL, M_LOQT };

/* ---- byte counters, as core/mem.c keeps them ---------------------------------------------- */

typedef struct {
    size_t cur[MEM_NCAT], peak[MEM_NCAT], total, peak_total;
    size_t loqt_buf; /* bytes of methods/loqt.c's shared work buffer (it only grows) */
} sim;

static void A(sim *s, mem_cat c, size_t b) {
    s->cur[c] += b;
    if (s->cur[c] > s->peak[c]) s->peak[c] = s->cur[c];
    s->total += b;
    if (s->total > s->peak_total) s->peak_total = s->total;
}

static void F(sim *s, mem_cat c, size_t b) {
    s->cur[c] -= b;
    s->total -= b;
}

static void AF(sim *s, mem_cat c, size_t b) { /* a buffer allocated and freed before the next */
    A(s, c, b);
    F(s, c, b);
}

/* ---- shapes ------------------------------------------------------------------------------- */

typedef struct {
    int out, in;
    size_t n;         /* out * in */
    /* LoQT */
    int r, left;
    size_t nP, nB;    /* elements of P (r x smaller dim) and B (larger dim x r) */
} lin_geom;

/* the seven projections of a block in llama.c's order: q, k, v, o, gate, up, down */
static lin_geom geom(const plan_input *in, int j) {
    const int d = in->cfg.hidden_size, Fi = in->cfg.intermediate_size;
    lin_geom g = {0};
    g.out = j == 4 || j == 5 ? Fi : d;
    g.in = j == 6 ? Fi : d;
    g.n = (size_t)g.out * g.in;
    g.left = g.in <= g.out;
    const int small = g.left ? g.in : g.out, large = g.left ? g.out : g.in;
    g.r = in->mo.rank < small ? in->mo.rank : small;
    g.nP = (size_t)g.r * small;
    g.nB = (size_t)g.r * large;
    return g;
}

/* backward visits a block's projections in this order (llama.c block_backward) */
static const int bwd_order[7] = {6, 4, 5, 3, 0, 1, 2};

/* ---- storage (quant/qmat.c, quant/nf4.c) -------------------------------------------------- */

typedef enum { Q_F32, Q_BF16, Q_NF4 } qkind;

static void sim_qmat_init(sim *s, qkind k, size_t n, int dq, mem_cat cat) {
    if (k == Q_F32) A(s, cat, 4 * n);
    else if (k == Q_BF16) A(s, cat, 2 * n);
    else {
        size_t nb = nf4_num_blocks(n);
        A(s, MEM_QWEIGHTS, nf4_packed_bytes(n));
        if (dq) {
            A(s, MEM_QSTATE, nb);
            A(s, MEM_QSTATE, 4 * ((nb + NF4_DQ_GROUP - 1) / NF4_DQ_GROUP));
        } else {
            A(s, MEM_QSTATE, 4 * nb);
        }
    }
}

/* qmat_set: only double-quantized NF4 needs a buffer (all block absmax values first) */
static void sim_qmat_set(sim *s, qkind k, size_t n, int dq) {
    if (k == Q_NF4 && dq) AF(s, MEM_SCRATCH, 4 * nf4_num_blocks(n));
}

static qkind w_kind(const method_opts *o) { return o->quantize_w ? Q_NF4 : Q_BF16; }
static qkind p_kind(const method_opts *o) { return o->quantize_projection ? Q_NF4 : Q_BF16; }
static qkind b_kind(const method_opts *o) { return o->lowrank_fp32 ? Q_F32 : Q_BF16; }

/* ---- optimizer state (optim/adamw.c, optim/adam8bit.c), allocated at the first update ------- */

static void sim_optim(sim *s, optim_kind k, size_t n) {
    if (k == OPTIM_ADAM8BIT && n >= ADAM8BIT_MIN_N) {
        A(s, MEM_OPTIM, adam8bit_state_bytes(n));
    } else {
        A(s, MEM_OPTIM, 4 * n); /* m */
        A(s, MEM_OPTIM, 4 * n); /* v */
    }
}

/* ---- LoQT (methods/loqt.c) ---------------------------------------------------------------- */

/* get_scratch(): the shared buffer is replaced by a larger one when a layer needs more */
static void sim_loqt_scratch(sim *s, size_t floats) {
    size_t b = 4 * floats;
    if (b <= s->loqt_buf) return;
    if (s->loqt_buf) F(s, MEM_SCRATCH, s->loqt_buf);
    A(s, MEM_SCRATCH, b);
    s->loqt_buf = b;
}

/* forward / backward: a row block of deq(W) (at most 2^22 elements), P and B in fp32, and the
 * [N, r] product */
static size_t loqt_fwd_floats(const lin_geom *g, size_t N) {
    int cr = (1 << 22) / (g->in > 0 ? g->in : 1);
    if (cr < 1) cr = 1;
    size_t rows = (size_t)(cr < g->out ? cr : g->out);
    return rows * g->in + g->nP + g->nB + N * g->r;
}

static void sim_loqt_init(sim *s, const plan_input *in, const lin_geom *g) {
    const method_opts *o = &in->mo;
    sim_qmat_init(s, w_kind(o), g->n, o->use_double_quant, MEM_DENSE);
    sim_qmat_init(s, p_kind(o), g->nP, o->use_double_quant, MEM_FACTORS);
    sim_qmat_init(s, b_kind(o), g->nB, 0, MEM_FACTORS);
    A(s, MEM_SCRATCH, 4 * g->n);               /* the random initial W, quantized, freed */
    sim_qmat_set(s, w_kind(o), g->n, o->use_double_quant);
    F(s, MEM_SCRATCH, 4 * g->n);
}

/* linalg/svd.c svd_randomized(G, out, in, r) with the default 10 oversamples */
static void sim_svd(sim *s, const lin_geom *g) {
    const size_t m = (size_t)(g->out < g->in ? g->out : g->in), n = g->n / m;
    const size_t k = (size_t)g->r + 10 < m ? (size_t)g->r + 10 : m, r = (size_t)g->r;
    const size_t b[7] = {4 * k * m, 4 * k * n, 8 * k * k, 8 * k * k, 4 * r * k, 4 * r * m, 4 * r * n};
    for (int i = 0; i < 7; i++) A(s, MEM_SCRATCH, b[i]);
    AF(s, MEM_SCRATCH, 4 * k * 64);  /* linalg_orthonormalize_rows: panel coefficients */
    AF(s, MEM_SCRATCH, 8 * k * 256); /* linalg_gram_d: a chunk in double */
    AF(s, MEM_SCRATCH, 8 * k * k);   /* linalg_eigh_d: eigenvectors */
    for (int i = 0; i < 7; i++) F(s, MEM_SCRATCH, b[i]);
}

/* linalg/lstsq.c lstsq_xp / lstsq_px, the usual path (the Gram matrix of P needs no ridge; with a
 * ridge the pseudo-inverse factor replaces Hf and C and is smaller) */
static void sim_lstsq(sim *s, const lin_geom *g) {
    const size_t r = (size_t)g->r;
    A(s, MEM_SCRATCH, 8 * r * r);      /* (P P^T)^-1 */
    AF(s, MEM_SCRATCH, 8 * r * 256);   /* linalg_gram_d chunk */
    AF(s, MEM_SCRATCH, 8 * r * r);     /* linalg_spd_inverse_d factor */
    size_t c = 4 * r * (size_t)(g->left ? g->out : g->in);
    A(s, MEM_SCRATCH, 4 * r * r);      /* Hf */
    A(s, MEM_SCRATCH, c);              /* R P^T or P^T R */
    F(s, MEM_SCRATCH, 4 * r * r);
    F(s, MEM_SCRATCH, c);
    F(s, MEM_SCRATCH, 8 * r * r);
}

/* loqt_refresh(): merge, SVD of G, re-quantization (with error compensation) */
static void sim_loqt_refresh(sim *s, const plan_input *in, const lin_geom *g, int alloc_dB) {
    const method_opts *o = &in->mo;
    const size_t n = g->n, nP = g->nP, nB = g->nB;
    const int dq = o->use_double_quant;
    A(s, MEM_SCRATCH, 4 * n);  /* W_fp */
    A(s, MEM_SCRATCH, 4 * n);  /* Wt */
    A(s, MEM_SCRATCH, 4 * nP); /* Pf */
    A(s, MEM_SCRATCH, 4 * nB); /* Bf */
    sim_svd(s, g);
    sim_qmat_set(s, p_kind(o), nP, dq);
    if (o->compensate_quant_error_iterations > 0) {
        const size_t bufs[4] = {4 * n, 4 * n, 4 * n, 4 * nB}; /* R, LR, best W_hat, best B */
        for (int i = 0; i < 4; i++) A(s, MEM_SCRATCH, bufs[i]);
        for (int it = 0; it < o->compensate_quant_error_iterations; it++) {
            sim_qmat_set(s, w_kind(o), n, dq);
            sim_lstsq(s, g);
        }
        sim_qmat_set(s, w_kind(o), n, dq);
        for (int i = 0; i < 4; i++) F(s, MEM_SCRATCH, bufs[i]);
    } else {
        sim_qmat_set(s, w_kind(o), n, dq);
    }
    if (alloc_dB) A(s, MEM_GRADS, 4 * nB); /* dB, for the gradient of B in the new basis */
    F(s, MEM_SCRATCH, 4 * n);
    F(s, MEM_SCRATCH, 4 * n);
    F(s, MEM_SCRATCH, 4 * nP);
    F(s, MEM_SCRATCH, 4 * nB);
}

/* ---- per-layer updates and activation checkpointing ---------------------------------------- */

/* Per-layer updates (llama.c block_step, train.c): each layer is updated inside the backward of
 * the step's last micro-batch; without accumulation its gradient buffer is released right after
 * (so one block's linear gradients exist at a time), with accumulation every gradient has to
 * survive the micro-batches and nothing is released.  The embedding and lm_head gradients follow
 * the same rule (created at first use, released after their update); the norms' stay. */
static int transient_grads(const plan_input *in) { return in->per_layer_updates && in->accum == 1; }

/* Activation checkpointing (llama.c llama_set_batch): each block keeps its input x [N, d]; the
 * other activations of one block live in a shared work block, recomputed during backward. */
static void sim_block_acts(sim *s, size_t N, size_t d, size_t Fi, size_t H, int x_too) {
    if (x_too) A(s, MEM_ACTS, 4 * N * d);
    /* rstd1 xn1 q k v att lse x2 rstd2 xn2 g u h */
    const size_t b[13] = {N, N * d, N * d, N * d, N * d, N * d, N * H,
                          N * d, N, N * d, N * Fi, N * Fi, N * Fi};
    for (int i = 0; i < 13; i++) A(s, MEM_ACTS, 4 * b[i]);
}

/* ---- the model (model/llama.c) ------------------------------------------------------------ */

typedef struct {
    const plan_input *in;
    int method;
    optim_kind opt;
    int have_P;      /* LoQT: P exists (after the first refresh) */
    int lin_grads;   /* the linear layers' gradient buffers (dW, dB) exist */
    int optim_ready; /* optimizer state allocated */
} runstate;

/* a dense parameter; `on_demand`: embedding or lm_head, whose gradient buffer llama.c creates at
 * its first use (in the first forward or backward, before anything of the step is freed, so
 * counting it here gives the same peaks) unless per-layer updates release it after each update */
static void sim_dense_param(sim *s, const plan_input *in, size_t n, int on_demand) {
    A(s, MEM_DENSE, 4 * n);
    if (!(on_demand && transient_grads(in))) A(s, MEM_GRADS, 4 * n);
}

static void sim_create(sim *s, runstate *rs) {
    const plan_input *in = rs->in;
    const llama_config *c = &in->cfg;
    const size_t d = c->hidden_size, V = c->vocab_size, hd = d / c->num_attention_heads;
    sim_dense_param(s, in, V * d, 1); /* embed */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        sim_dense_param(s, in, d, 0); /* attn_norm */
        sim_dense_param(s, in, d, 0); /* mlp_norm */
        for (int j = 0; j < 7; j++) {
            lin_geom g = geom(in, j);
            if (rs->method == M_FULL) A(s, MEM_DENSE, 4 * g.n); /* dW: at the first backward */
            else sim_loqt_init(s, in, &g);
        }
    }
    sim_dense_param(s, in, d, 0);     /* final_norm */
    sim_dense_param(s, in, V * d, 1); /* lm_head */
    const size_t half = (size_t)c->max_position_embeddings * (hd / 2);
    A(s, MEM_DENSE, 4 * half); /* rope cos, sin */
    A(s, MEM_DENSE, 4 * half);
}

static void sim_set_batch(sim *s, const plan_input *in, int threads) {
    const llama_config *c = &in->cfg;
    const size_t N = (size_t)in->batch * in->seq, d = c->hidden_size, Fi = c->intermediate_size;
    const size_t H = c->num_attention_heads, V = c->vocab_size, FF = Fi > d ? Fi : d;
    const int ckpt = in->activation_checkpointing;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (ckpt) A(s, MEM_ACTS, 4 * N * d);
        else sim_block_acts(s, N, d, Fi, H, 1);
    }
    if (ckpt) sim_block_acts(s, N, d, Fi, H, 0);
    A(s, MEM_ACTS, 4 * N * d); /* xf */
    A(s, MEM_ACTS, 4 * N);     /* rstdf */
    A(s, MEM_ACTS, 4 * N * d); /* xnf */
    A(s, MEM_ACTS, 4 * N * d); /* dxnf */
    A(s, MEM_ACTS, 4 * N);     /* targets */
    A(s, MEM_SCRATCH, 4 * (N < 256 ? N : 256) * V); /* logits chunk (LOGIT_CHUNK rows) */
    for (int i = 0; i < 4; i++) A(s, MEM_SCRATCH, 4 * N * d); /* d_res d_a d_b d_c */
    A(s, MEM_SCRATCH, 4 * N * FF);                            /* d_F1 */
    A(s, MEM_SCRATCH, 4 * N * FF);                            /* d_F2 */
    A(s, MEM_SCRATCH, 4 * (size_t)threads * (size_t)attention_scratch_floats(in->seq));
}

/* forward of one micro-batch: only LoQT allocates (its work buffer) */
static void sim_forward(sim *s, const runstate *rs) {
    if (rs->method != M_LOQT) return;
    const size_t N = (size_t)rs->in->batch * rs->in->seq;
    for (int l = 0; l < rs->in->cfg.num_hidden_layers; l++)
        for (int j = 0; j < 7; j++) {
            lin_geom g = geom(rs->in, j);
            sim_loqt_scratch(s, loqt_fwd_floats(&g, N));
        }
}

/* one layer's backward: the buffers the methods allocate at their first backward */
static void sim_linear_backward(sim *s, const runstate *rs, const lin_geom *g, int alloc_G) {
    if (rs->method == M_FULL) {
        if (!rs->lin_grads) A(s, MEM_GRADS, 4 * g->n); /* dW */
        return;
    }
    if (alloc_G) A(s, MEM_GRADS, 4 * g->n); /* G, for the refresh */
    if (rs->have_P && !rs->lin_grads) A(s, MEM_GRADS, 4 * g->nB); /* dB */
}

/* end_step (LoQT refresh) of one layer on an update step; dB is created there the first time */
static void sim_linear_end_step(sim *s, const runstate *rs, const lin_geom *g) {
    sim_loqt_refresh(s, rs->in, g, !rs->have_P);
    F(s, MEM_GRADS, 4 * g->n); /* G */
}

/* the update of one linear layer (its optimizer state at the first) */
static void sim_linear_step(sim *s, const runstate *rs, const lin_geom *g, int have_P) {
    if (rs->method == M_FULL) {
        if (!rs->optim_ready) sim_optim(s, rs->opt, g->n);
        return;
    }
    if (!have_P) return;
    if (!rs->in->mo.lowrank_fp32) sim_loqt_scratch(s, g->nB); /* bf16 B in fp32 for the update */
    if (!rs->optim_ready) sim_optim(s, rs->opt, g->nB);
}

static void sim_dense_step(sim *s, const runstate *rs, size_t n) {
    if (!rs->optim_ready) sim_optim(s, rs->opt, n);
}

/* per-layer updates: a dense parameter's update, with the gradient buffer of an embedding or
 * lm_head around it if transient (lm_head's is really created in the forward's fused loss, but
 * nothing is freed in between, so the peaks are the same) */
static void sim_dense_unit(sim *s, const runstate *rs, size_t n, int on_demand) {
    const int tr = on_demand && transient_grads(rs->in);
    if (tr) A(s, MEM_GRADS, 4 * n);
    sim_dense_step(s, rs, n);
    if (tr) F(s, MEM_GRADS, 4 * n);
}

/* model/train.c train_step, ordinary path: all micro-batches, end_step, then the updates */
static void sim_step(sim *s, runstate *rs, int update) {
    const plan_input *in = rs->in;
    const llama_config *c = &in->cfg;
    const int L = c->num_hidden_layers, loqt = rs->method == M_LOQT;
    const size_t d = c->hidden_size, V = c->vocab_size;
    for (int mb = 0; mb < in->accum; mb++) {
        sim_forward(s, rs);
        for (int l = L - 1; l >= 0; l--)
            for (int jj = 0; jj < 7; jj++) {
                lin_geom g = geom(in, bwd_order[jj]);
                sim_linear_backward(s, rs, &g, loqt && update && mb == 0);
            }
        if (!loqt || rs->have_P) rs->lin_grads = 1;
    }
    if (loqt && update) {
        for (int l = 0; l < L; l++)
            for (int j = 0; j < 7; j++) {
                lin_geom g = geom(in, j);
                sim_linear_end_step(s, rs, &g);
            }
        rs->have_P = rs->lin_grads = 1;
    }
    /* llama_optimizer_step: dense parameters (embed, norms, final norm, lm_head), then linears */
    sim_dense_step(s, rs, V * d);
    for (int l = 0; l < L; l++) {
        sim_dense_step(s, rs, d);
        sim_dense_step(s, rs, d);
    }
    sim_dense_step(s, rs, d);
    sim_dense_step(s, rs, V * d);
    for (int l = 0; l < L; l++)
        for (int j = 0; j < 7; j++) {
            lin_geom g = geom(in, j);
            sim_linear_step(s, rs, &g, rs->have_P);
        }
    rs->optim_ready = 1;
}

/* the per-layer-updates path: updates inside the last micro-batch's backward (llama_backward) */
static void sim_step_per_layer(sim *s, runstate *rs, int update) {
    const plan_input *in = rs->in;
    const llama_config *c = &in->cfg;
    const int loqt = rs->method == M_LOQT, transient = transient_grads(in);
    const size_t d = c->hidden_size, V = c->vocab_size;
    for (int mb = 0; mb < in->accum; mb++) {
        const int last = mb == in->accum - 1;
        sim_forward(s, rs);
        if (last) {
            sim_dense_unit(s, rs, V * d, 1); /* lm_head, complete after the forward */
            sim_dense_unit(s, rs, d, 0);     /* final norm */
        }
        for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
            for (int jj = 0; jj < 7; jj++) {
                lin_geom g = geom(in, bwd_order[jj]);
                sim_linear_backward(s, rs, &g, loqt && update && mb == 0);
            }
            if (!last) continue;
            for (int j = 0; j < 7; j++) { /* block_step */
                lin_geom g = geom(in, j);
                if (loqt && update) sim_linear_end_step(s, rs, &g);
                sim_linear_step(s, rs, &g, rs->have_P || (loqt && update));
                if (transient) F(s, MEM_GRADS, 4 * (loqt ? g.nB : g.n));
            }
            sim_dense_unit(s, rs, d, 0); /* the block's norms */
            sim_dense_unit(s, rs, d, 0);
        }
        if (last) sim_dense_unit(s, rs, V * d, 1); /* embedding */
        if (!transient && (!loqt || rs->have_P)) rs->lin_grads = 1;
    }
    if (loqt && update) rs->have_P = 1;
    if (loqt && !transient) rs->lin_grads = rs->have_P;
    rs->optim_ready = 1;
}

/* model/checkpoint.c llama_export_dense (--save-original-model): every W_eff in fp32 at once */
static void sim_export(sim *s, const runstate *rs) {
    const plan_input *in = rs->in;
    const int L = in->cfg.num_hidden_layers;
    size_t held = 0;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < 7; j++) {
            lin_geom g = geom(in, j);
            A(s, MEM_SCRATCH, 4 * g.n);
            held += 4 * g.n;
            if (rs->method == M_LOQT && rs->have_P) {
                A(s, MEM_SCRATCH, 4 * (g.nP + g.nB));
                A(s, MEM_SCRATCH, 4 * g.n);
                F(s, MEM_SCRATCH, 4 * g.n);
                F(s, MEM_SCRATCH, 4 * (g.nP + g.nB));
            }
        }
    F(s, MEM_SCRATCH, held);
}

/* ---- the plan ----------------------------------------------------------------------------- */

void plan_input_defaults(plan_input *in, const llama_config *cfg, const char *method) {
    memset(in, 0, sizeof *in);
    if (cfg) in->cfg = *cfg;
    in->method = method ? method : "full";
    method_opts_defaults(&in->mo);
    in->batch = 8;
    in->seq = 256;
    in->accum = 1;
    in->steps = 1000;
}

static int online_cores(void) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

int plan_make(plan *p, const plan_input *in) {
    memset(p, 0, sizeof *p);
    if (config_validate(&in->cfg)) return -1;
    const linear_method *lm = in->method ? method_find(in->method) : NULL;
    if (!lm) return loqt_set_error("unknown method '%s' (available: %s)", in->method ? in->method : "",
                                   method_names());
    int method;
    if (!strcmp(lm->name, "full")) method = M_FULL;
    else if (!strcmp(lm->name, "loqt")) method = M_LOQT;
    else return loqt_set_error("the memory planner does not know method '%s' yet", lm->name);
    if (in->batch <= 0 || in->seq <= 1 || in->accum <= 0 || in->steps <= 0)
        return loqt_set_error("plan: batch size, accumulation and steps must be positive and the "
                              "sequence length at least 2");
    if (in->seq > in->cfg.max_position_embeddings)
        return loqt_set_error("sequence length %d exceeds the model's max_position_embeddings %d",
                              in->seq, in->cfg.max_position_embeddings);
    if ((long long)in->batch * in->seq > (1LL << 31) / 4)
        return loqt_set_error("batch %d x %d tokens is too large", in->batch, in->seq);
    if (method == M_LOQT && (in->mo.rank <= 0 || in->mo.update_proj_gap <= 0))
        return loqt_set_error("--rank and --update-proj-gap must be positive");
    if (in->threads < 0) return loqt_set_error("threads must be >= 0");
    p->in = *in;
    p->in.method = lm->name; /* the canonical name, a static string */
    const int threads = in->threads ? in->threads : online_cores();
    p->in.threads = threads;

    sim s = {0};
    runstate rs = {.in = &p->in, .method = method, .opt = in->mo.optimizer};
    /* cmd_train opens the loaders first: the train split (plus one shard while reading), then
     * the validation split */
    if (in->train.tokens) {
        A(&s, MEM_DATA, 2 * in->train.tokens);
        AF(&s, MEM_DATA, 2 * in->train.max_shard);
    }
    if (in->val.tokens) {
        A(&s, MEM_DATA, 2 * in->val.tokens);
        AF(&s, MEM_DATA, 2 * in->val.max_shard);
    }
    sim_create(&s, &rs);
    sim_set_batch(&s, &p->in, threads);
    const size_t tok = (size_t)in->batch * in->seq * in->accum;
    A(&s, MEM_DATA, 4 * tok); /* inputs */
    A(&s, MEM_DATA, 4 * tok); /* targets */

    /* step 0 (a refresh for LoQT), step 1, and for LoQT the first later refresh within the run:
     * the first with the optimizer state already allocated, usually the peak of a long run */
    void (*step)(sim *, runstate *, int) = in->per_layer_updates ? sim_step_per_layer : sim_step;
    step(&s, &rs, method == M_LOQT);
    if (in->steps > 1) {
        const int up1 = method == M_LOQT && loqt_update_step(&in->mo, 1) == 1;
        step(&s, &rs, up1);
        p->refresh_with_optim = method == M_LOQT && loqt_update_step(&in->mo, 1) < in->steps;
        if (p->refresh_with_optim && !up1) step(&s, &rs, 1);
    }
    p->steady = s.total;
    if (in->save_original_model) sim_export(&s, &rs);

    memcpy(p->peak, s.peak, sizeof p->peak);
    p->accounted_peak = s.peak_total;
    p->overhead = plan_overhead_bytes(threads, method == M_LOQT || transient_grads(in));
    p->total = p->accounted_peak + p->overhead;
    return 0;
}

/* Unaccounted memory, measured with `loqt bench` (docs/memory.md: RSS minus the accounted peak,
 * 60m and 130m, 1 to 16 threads): about 38 MiB for the program, its libraries and OpenBLAS's
 * packing buffer, 0.75 MiB per thread (stacks, per-thread buffers), and about 30 MiB more when
 * large buffers are freed and allocated again during training (LoQT's refresh, per-layer updates
 * that release gradients): glibc raises its mmap threshold to the size of the first large buffer
 * freed, after which such buffers come from the heap and freed ones stay resident.  Small models
 * whose products are too small to touch the whole OpenBLAS buffer need less. */
size_t plan_overhead_bytes(int threads, int heap_churn) {
    const size_t MiB = 1 << 20;
    if (threads < 1) threads = 1;
    return 38 * MiB + (size_t)threads * 3 * MiB / 4 + (heap_churn ? 30 * MiB : 0);
}

/* ---- reporting ---------------------------------------------------------------------------- */

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
    int k = snprintf(buf, cap, "model %s (%.1fM parameters), method %s", in->cfg.name,
                     config_params_total(&in->cfg) / 1e6, lm ? lm->name : in->method);
    if (lm && !strcmp(lm->name, "loqt") && k > 0 && (size_t)k < cap)
        k += snprintf(buf + k, cap - (size_t)k, " (rank %d, W %s, P %s, B %s%s)", in->mo.rank,
                      in->mo.quantize_w ? "nf4" : "bf16", in->mo.quantize_projection ? "nf4" : "bf16",
                      in->mo.lowrank_fp32 ? "fp32" : "bf16", in->mo.use_double_quant ? ", double quant" : "");
    if (k > 0 && (size_t)k < cap)
        snprintf(buf + k, cap - (size_t)k, ", optimizer %s, batch %d x %d, %d micro-batch%s per step, %d threads%s%s",
                 optim_kind_name(in->mo.optimizer), in->batch, in->seq, in->accum,
                 in->accum == 1 ? "" : "es", in->threads,
                 in->per_layer_updates ? ", per-layer updates" : "",
                 in->activation_checkpointing ? ", activation checkpointing" : "");
}

void plan_print(const plan *p, FILE *f) {
    const double MiB = 1048576.0;
    char desc[512];
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
    if (p->in.method && method_find(p->in.method))
        fprintf(f, "paper-style estimate (weights + optimizer state, 16-bit): %.2f GiB\n",
                plan_paper_estimate(&p->in.cfg, method_find(p->in.method)->name, p->in.mo.rank) /
                    1073741824.0);
    fprintf(f, "total: %.2f GiB\n", gib(p->total));
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
        if (strcmp(method_find(in->method)->name, "full")) return 0;
        t->method = "loqt";
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
        t.method = "loqt";
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

double plan_paper_estimate(const llama_config *c, const char *method, int rank) {
    const double d = c->hidden_size, V = c->vocab_size;
    const double lin = (double)config_params_linear(c);
    const double other = 2 * V * d + (2.0 * c->num_hidden_layers + 1) * d;
    if (!strcmp(method, "full")) return 2.0 * 3.0 * (lin + other); /* w, m, v in 16 bits */
    /* LoQT: embeddings, norms, lm_head as full; per projection W mn/2, P and B 16-bit, Adam on B */
    double b = 6.0 * other;
    plan_input in;
    plan_input_defaults(&in, c, "loqt");
    in.mo.rank = rank;
    for (int j = 0; j < 7; j++) {
        lin_geom g = geom(&in, j);
        b += c->num_hidden_layers * (0.5 * (double)g.n + 2.0 * (double)g.nP + 2.0 * (double)g.nB +
                                     4.0 * (double)g.nB);
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
            *out = (size_t)b;
            return 0;
        }
    return loqt_set_error("bad memory size '%s': unknown unit (use KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s);
}
