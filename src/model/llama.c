#include "model/llama.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "linalg/dense.h"
#include "kernels/ops.h"
#include "model/dp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows of the lm_head / loss computed at once: bounds the [rows, V] logits buffer. */
enum { LOGIT_CHUNK = 256 };

static const char *lin_names[LIN_PER_BLOCK] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

static void param_init(dense_param *p, const char *name, int ndim, int64_t d0, int64_t d1,
                       const method_opts *mo, int grad_on_demand) {
    const optim_kind opt = mo->optimizer;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->n = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    p->w = mem_alloc(MEM_DENSE, p->n * sizeof(float));
    p->grad_on_demand = grad_on_demand;
    p->frozen = mo->freeze_dense;
    p->g = grad_on_demand || p->frozen ? NULL : mem_alloc(MEM_GRADS, p->n * sizeof(float));
    optim_state_init(&p->opt, p->n, opt);
}

/* The gradient buffer of p, zeroed when it is created here (see dense_param); NULL when frozen. */
static float *param_grad(dense_param *p) {
    if (!p->g && !p->frozen) p->g = mem_alloc(MEM_GRADS, p->n * sizeof(float));
    return p->g;
}

static void param_fill(dense_param *p, uint64_t seed, float std) {
    if (std > 0) rng_fill_normal(p->w, p->n, std, seed, rng_stream_id(p->name));
    else
        for (size_t i = 0; i < p->n; i++) p->w[i] = 1.0f;
}

static void param_free(dense_param *p) {
    mem_free(p->w);
    mem_free(p->g);
    optim_state_free(&p->opt);
}

/* A dense parameter's values: from the checkpoint, or normal(0, std) (ones for std 0). */
static int param_values(dense_param *p, const st_file *w, uint64_t seed, float std) {
    if (w) return st_read_f32(w, p->name, p->w, p->ndim, p->shape);
    param_fill(p, seed, std);
    return 0;
}

/* A linear layer's method state, from its pretrained weight when there is a checkpoint: the
 * weight is read into a scratch buffer of the layer's size, handed to the method's init, and
 * freed again, so one layer's fp32 copy exists beside the model at a time. */
static float *read_W0(const linear_layer *L, const st_file *w) {
    char name[160];
    const int64_t shape[2] = {L->out, L->in};
    snprintf(name, sizeof name, "%s.weight", L->name);
    float *W0 = mem_alloc(MEM_SCRATCH, llama_init_scratch_bytes(L->out, L->in));
    if (st_read_f32(w, name, W0, 2, shape)) {
        mem_free(W0);
        return NULL;
    }
    return W0;
}

/* The layer's init from W0 (NULL: random), with a calibration Gram or none; frees W0. */
static int linear_init_with(linear_layer *L, const method_opts *mo, float *W0, const float *gram, long rows) {
    const linear_init ini = {.W0 = W0, .gram = gram, .gram_rows = rows};
    int rc = L->m->init(L, mo, &ini);
    mem_free(W0);
    if (rc) loqt_set_error("%s: %s", L->name, loqt_last_error());
    return rc;
}

static int linear_from(linear_layer *L, const method_opts *mo, const st_file *w) {
    float *W0 = w ? read_W0(L, w) : NULL;
    if (w && !W0) return -1;
    return linear_init_with(L, mo, W0, NULL, 0);
}

/* ---- calibration (methods whose init wants the Gram of each layer's inputs: QuAILoRA) ------
 * The calibration sequences run through the dense pretrained model, block by block: the residual
 * stream of all of them ([tokens, d], the only activation held across blocks) enters block l,
 * whose seven dense weights W0 are read once; the block's forward (block_forward itself, through
 * the pass-through method below) runs micro-batch by micro-batch, and each projection's input is
 * added into its Gram X^T X as it goes, so no layer's inputs over all tokens are ever held.
 * q, k and v read the same input (the attention norm's output), as do gate and up (the MLP
 * norm's): four Grams per block (d x d three times, intermediate x intermediate for down).  Then
 * the block's layers are initialized from their W0 and Gram, and the stream, now the block's
 * output in the dense model, goes on to the next block.  So every layer's X is what the dense
 * model feeds it, the X of QuAILoRA's objective (the dense model's outputs are what the
 * quantized model with adapters should reproduce), and block l's inputs do not depend on how the
 * blocks below it were quantized. */

static void alloc_block(block_acts *a, const size_t bytes[BLOCK_ACT_BUFS], int x_too);
static void free_block(block_acts *a, int x_too);
static void block_forward(llama_model *m, int l, block_acts *a, const float *x, float *x_next, float *tmp);

typedef struct {
    const float *W0;
    float *gram; /* NULL: another layer of the block accumulates this input's Gram */
} calib_layer;

static void calib_forward(linear_layer *L, const float *X, float *Y, int N) {
    calib_layer *c = L->state;
    if (c->gram) linalg_gemm_det(true, false, L->in, L->in, N, 1.0f, X, L->in, X, L->in, 1.0f, c->gram, L->in);
    gemm(false, true, N, L->out, L->in, 1.0f, X, L->in, c->W0, L->in, 0.0f, Y, L->out);
}

static const linear_method calib_method = {.name = "calibration", .forward = calib_forward};

/* which Gram of the block projection j accumulates into, and whether it is the one that adds */
static int calib_gram_of(int j) { return j <= LIN_V ? 0 : j == LIN_O ? 1 : j <= LIN_UP ? 2 : 3; }
static int calib_adds(int j) { return j == LIN_Q || j == LIN_O || j == LIN_GATE || j == LIN_DOWN; }

void llama_calib_gram_dims(const llama_config *c, int dims[LLAMA_CALIB_GRAMS]) {
    dims[0] = dims[1] = dims[2] = c->hidden_size;
    dims[3] = c->intermediate_size;
}

void llama_calib_bytes(const llama_config *c, const llama_calib *cal, int threads, size_t out[LLAMA_CALIB_BUFS]) {
    const int B = cal->batch < cal->n_seqs ? cal->batch : cal->n_seqs;
    const size_t N = (size_t)B * cal->seq, f = sizeof(float);
    out[0] = f * (size_t)cal->n_seqs * cal->seq * c->hidden_size; /* the residual stream */
    out[1] = f * N * c->hidden_size;                              /* the down projection's output */
    out[2] = f * (size_t)threads * attention_scratch_floats(cal->seq);
}

typedef struct {
    float *x, *tmp, *scratch;
    block_acts a;
} calib_bufs;

static void calib_begin(llama_model *m, const llama_calib *cal, calib_bufs *cb) {
    size_t b[LLAMA_CALIB_BUFS], act[BLOCK_ACT_BUFS];
    llama_calib_bytes(&m->cfg, cal, m->n_threads, b);
    cb->x = mem_alloc(MEM_ACTS, b[0]);
    llama_block_act_bytes(&m->cfg, cal->batch < cal->n_seqs ? cal->batch : cal->n_seqs, cal->seq, act);
    memset(&cb->a, 0, sizeof cb->a);
    alloc_block(&cb->a, act, 0);
    cb->tmp = mem_alloc(MEM_SCRATCH, b[1]);
    cb->scratch = mem_alloc(MEM_SCRATCH, b[2]);
    embedding_forward(cb->x, cal->tokens, m->embed.w, cal->n_seqs * cal->seq, m->cfg.hidden_size);
}

static void calib_end(calib_bufs *cb) {
    mem_free(cb->scratch);
    mem_free(cb->tmp);
    free_block(&cb->a, 0);
    mem_free(cb->x);
}

/* Block l's layers from their weights and calibration Grams; the stream moves on past the block. */
static int calib_block(llama_model *m, int l, const st_file *w, const llama_calib *cal, calib_bufs *cb,
                       const linear_method *method) {
    llama_block *b = &m->blocks[l];
    const double t0 = loqt_now();
    float *W0[LIN_PER_BLOCK] = {0}, *gram[LLAMA_CALIB_GRAMS];
    int dims[LLAMA_CALIB_GRAMS];
    for (int j = 0; j < LIN_PER_BLOCK; j++)
        if (!(W0[j] = read_W0(&b->lin[j], w))) {
            for (int k = 0; k < j; k++) mem_free(W0[k]);
            return -1;
        }
    llama_calib_gram_dims(&m->cfg, dims);
    for (int g = 0; g < LLAMA_CALIB_GRAMS; g++) gram[g] = mem_alloc(MEM_SCRATCH, sizeof(float) * (size_t)dims[g] * dims[g]);
    calib_layer cl[LIN_PER_BLOCK];
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        cl[j] = (calib_layer){W0[j], calib_adds(j) ? gram[calib_gram_of(j)] : NULL};
        b->lin[j].m = &calib_method;
        b->lin[j].state = &cl[j];
    }
    m->method = &calib_method;
    m->attn_scratch = cb->scratch;
    const int d = m->cfg.hidden_size;
    for (int s0 = 0; s0 < cal->n_seqs; s0 += cal->batch) {
        m->B = cal->n_seqs - s0 < cal->batch ? cal->n_seqs - s0 : cal->batch;
        m->T = cal->seq;
        float *x = cb->x + (size_t)s0 * cal->seq * d;
        block_forward(m, l, &cb->a, x, x, cb->tmp); /* the block's output replaces its input */
    }
    m->method = method;
    m->attn_scratch = NULL;
    m->B = m->T = 0;
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        b->lin[j].m = method;
        b->lin[j].state = NULL;
    }
    int rc = 0;
    const long rows = (long)cal->n_seqs * cal->seq;
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        if (!rc) rc = linear_init_with(&b->lin[j], &m->mopts, W0[j], gram[calib_gram_of(j)], rows);
        else mem_free(W0[j]);
    }
    for (int g = LLAMA_CALIB_GRAMS - 1; g >= 0; g--) mem_free(gram[g]);
    loqt_progress("calibration and init: block %d of %d (%d sequences of %d tokens, %.1f s)", l + 1,
                  m->cfg.num_hidden_layers, cal->n_seqs, cal->seq, loqt_now() - t0);
    return rc;
}

/* A tied model's checkpoint may still carry lm_head.weight (some writers keep the copy): it must
 * then be the embedding, or the checkpoint is not the tied model its config says. */
static int check_tied_copy(const st_file *w) {
    const st_tensor *h = st_find(w, "lm_head.weight"), *e = st_find(w, "model.embed_tokens.weight");
    if (!h || !e) return 0;
    if (h->dtype != e->dtype || h->nbytes != e->nbytes || memcmp(h->bytes, e->bytes, h->nbytes) != 0)
        return loqt_set_error("lm_head.weight differs from model.embed_tokens.weight, but config.json says "
                              "tie_word_embeddings: true (set it to false for an untied model)");
    return 0;
}

int llama_calibrates(const linear_method *method, const method_opts *mo) {
    return method->calibration ? method->calibration(mo) : 0;
}

static int create(llama_model *m, const llama_config *cfg, const linear_method *method,
                  const method_opts *mo, uint64_t seed, const st_file *w, const llama_calib *cal) {
    memset(m, 0, sizeof *m);
    if (config_validate(cfg)) return -1;
    m->cfg = *cfg;
    m->method = method;
    m->mopts = *mo;
    m->mopts.seed = seed;
#ifdef _OPENMP
    m->n_threads = omp_get_max_threads();
#else
    m->n_threads = 1;
#endif
    const int d = cfg->hidden_size, V = cfg->vocab_size;
    const int hd = d / cfg->num_attention_heads;
    /* the RoPE tables first: the calibration's forward needs them */
    size_t half = llama_rope_floats(cfg);
    m->rope_cos = mem_alloc(MEM_DENSE, half * sizeof(float));
    m->rope_sin = mem_alloc(MEM_DENSE, half * sizeof(float));
    rope_tables(m->rope_cos, m->rope_sin, cfg->max_position_embeddings, hd, cfg->rope_theta);
    param_init(&m->embed, "model.embed_tokens.weight", 2, V, d, &m->mopts, 1);
    if (param_values(&m->embed, w, seed, 0.02f)) return -1;
    const int calibrate = w && cal && llama_calibrates(method, mo) > 0;
    if (calibrate && (cal->n_seqs < 1 || cal->seq < 1 || cal->batch < 1 || cal->seq > cfg->max_position_embeddings))
        return loqt_set_error("calibration: %d sequences of %d tokens in batches of %d", cal->n_seqs, cal->seq, cal->batch);
    calib_bufs cb;
    if (calibrate) {
        calib_begin(m, cal, &cb);
        loqt_progress("calibration: %d sequences of %d tokens through the dense model, block by block", cal->n_seqs,
                      cal->seq);
    }
    m->blocks = calloc((size_t)cfg->num_hidden_layers, sizeof *m->blocks);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        llama_block *b = &m->blocks[l];
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        param_init(&b->attn_norm, name, 1, d, 0, &m->mopts, 0);
        int bad = param_values(&b->attn_norm, w, seed, 0);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        param_init(&b->mlp_norm, name, 1, d, 0, &m->mopts, 0);
        bad = bad || param_values(&b->mlp_norm, w, seed, 0);
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            linear_layer *L = &b->lin[j];
            L->m = method;
            L->proj = j;
            llama_linear_shape(cfg, j, &L->out, &L->in);
            snprintf(L->name, sizeof L->name, "model.layers.%d.%s", l, lin_names[j]);
            if (!bad && !calibrate) bad = linear_from(L, &m->mopts, w);
        }
        if (!bad && calibrate) bad = calib_block(m, l, w, cal, &cb, method);
        if (bad) {
            if (calibrate) calib_end(&cb);
            return -1;
        }
    }
    if (calibrate) calib_end(&cb);
    param_init(&m->final_norm, "model.norm.weight", 1, d, 0, &m->mopts, 0);
    if (param_values(&m->final_norm, w, seed, 0)) return -1;
    if (!cfg->tie_word_embeddings) { /* tied: the embedding is the output layer too */
        param_init(&m->lm_head, "lm_head.weight", 2, V, d, &m->mopts, 1);
        if (param_values(&m->lm_head, w, seed, 0.02f)) return -1;
    } else if (w && check_tied_copy(w)) {
        return -1;
    }
    return 0;
}

int llama_create_calibrated(llama_model *m, const llama_config *cfg, const linear_method *method,
                            const method_opts *mo, uint64_t seed, const st_file *weights, const llama_calib *cal) {
    if (create(m, cfg, method, mo, seed, weights, cal) == 0) return 0;
    if (m->method) llama_free(m); /* what was created so far */
    return -1;
}

int llama_create_from(llama_model *m, const llama_config *cfg, const linear_method *method,
                      const method_opts *mo, uint64_t seed, const st_file *weights) {
    return llama_create_calibrated(m, cfg, method, mo, seed, weights, NULL);
}

int llama_create(llama_model *m, const llama_config *cfg, const linear_method *method,
                 const method_opts *mo, uint64_t seed) {
    return llama_create_from(m, cfg, method, mo, seed, NULL);
}

size_t llama_init_scratch_bytes(int out, int in) { return (size_t)out * in * sizeof(float); }

void llama_block_act_bytes(const llama_config *c, int B, int T, size_t out[BLOCK_ACT_BUFS]) {
    const size_t N = (size_t)B * T, d = c->hidden_size, F = c->intermediate_size;
    const size_t H = c->num_attention_heads, kv = config_kv_dim(c), f = sizeof(float);
    const size_t b[BLOCK_ACT_BUFS] = {N * d, N, N * d, N * d, N * kv, N * kv, N * d,
                                      N * H, N * d, N,     N * d,  N * F,  N * F, N * F};
    for (int i = 0; i < BLOCK_ACT_BUFS; i++) out[i] = f * b[i];
}

void llama_batch_bytes(const llama_config *c, int B, int T, int threads, size_t out[BATCH_BUFS]) {
    const size_t N = (size_t)B * T, d = c->hidden_size, F = c->intermediate_size;
    const size_t V = c->vocab_size, f = sizeof(float), chunk = N < LOGIT_CHUNK ? N : LOGIT_CHUNK;
    const size_t FF = F > d ? F : d; /* the F-sized buffers also hold dk and dv */
    const size_t b[BATCH_BUFS] = {
        f * N * d, f * N, f * N * d, f * N * d, sizeof(int32_t) * N,
        f * chunk * V, f * N * d, f * N * d, f * N * d, f * N * d, f * N * FF, f * N * FF,
        f * (size_t)threads * attention_scratch_floats(T),
    };
    memcpy(out, b, sizeof b);
}

size_t llama_gemm_scratch_bytes(gemm_dtype dtype, int threads) {
    return dtype == GEMM_BF16 ? gemm_bf16_scratch_bytes(threads) : 0;
}

void llama_linear_shape(const llama_config *c, int j, int *out, int *in) {
    *out = j == LIN_GATE || j == LIN_UP ? c->intermediate_size
           : j == LIN_K || j == LIN_V   ? config_kv_dim(c)
                                        : c->hidden_size;
    *in = j == LIN_DOWN ? c->intermediate_size : c->hidden_size;
}

size_t llama_rope_floats(const llama_config *c) {
    return (size_t)c->max_position_embeddings * (c->hidden_size / c->num_attention_heads / 2);
}

/* a block's buffers in llama_block_act_bytes' order */
static void block_bufs(block_acts *a, float **b[BLOCK_ACT_BUFS]) {
    float **p[BLOCK_ACT_BUFS] = {&a->x,  &a->rstd1, &a->xn1, &a->q, &a->k, &a->v, &a->att,
                                 &a->lse, &a->x2,   &a->rstd2, &a->xn2, &a->g, &a->u, &a->h};
    memcpy(b, p, sizeof p);
}

static void free_block(block_acts *a, int x_too) {
    float **bufs[BLOCK_ACT_BUFS];
    block_bufs(a, bufs);
    for (int i = x_too ? 0 : 1; i < BLOCK_ACT_BUFS; i++) {
        mem_free(*bufs[i]);
        *bufs[i] = NULL;
    }
}

static void alloc_block(block_acts *a, const size_t bytes[BLOCK_ACT_BUFS], int x_too) {
    float **bufs[BLOCK_ACT_BUFS];
    block_bufs(a, bufs);
    for (int i = x_too ? 0 : 1; i < BLOCK_ACT_BUFS; i++) *bufs[i] = mem_alloc(MEM_ACTS, bytes[i]);
}

/* the model's float batch buffers in llama_batch_bytes' order (targets, index 4, is int32) */
static void batch_bufs(llama_model *m, float **b[BATCH_BUFS]) {
    float **p[BATCH_BUFS] = {&m->xf,  &m->rstdf, &m->xnf, &m->dxnf, NULL,     &m->logits_chunk,
                             &m->d_res, &m->d_a, &m->d_b, &m->d_c,  &m->d_F1, &m->d_F2,
                             &m->attn_scratch};
    memcpy(b, p, sizeof p);
}

static void free_acts(llama_model *m) {
    if (!m->acts) return;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) free_block(&m->acts[l], 1);
    free(m->acts);
    m->acts = NULL;
    free_block(&m->work, 0);
    float **bufs[BATCH_BUFS];
    batch_bufs(m, bufs);
    for (int i = 0; i < BATCH_BUFS; i++)
        if (bufs[i]) {
            mem_free(*bufs[i]);
            *bufs[i] = NULL;
        }
    mem_free(m->targets);
    m->targets = NULL;
    mem_free(m->gemm_scratch);
    m->gemm_scratch = NULL;
}

void llama_set_batch(llama_model *m, int B, int T) {
    if (m->acts && m->B == B && m->T == T) return;
    free_acts(m);
    m->B = B;
    m->T = T;
    size_t act[BLOCK_ACT_BUFS], bat[BATCH_BUFS];
    llama_block_act_bytes(&m->cfg, B, T, act);
    llama_batch_bytes(&m->cfg, B, T, m->n_threads, bat);
    m->acts = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->acts);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        /* with activation checkpointing only each block's input is kept; the rest of a block's
         * activations live in one work block, recomputed during backward */
        if (m->checkpoint_activations) m->acts[l].x = mem_alloc(MEM_ACTS, act[0]);
        else alloc_block(&m->acts[l], act, 1);
    }
    if (m->checkpoint_activations) alloc_block(&m->work, act, 0);
    float **bufs[BATCH_BUFS];
    batch_bufs(m, bufs);
    for (int i = 0; i < BATCH_BUFS; i++) {
        void *p = mem_alloc(i < BATCH_ACT_BUFS ? MEM_ACTS : MEM_SCRATCH, bat[i]);
        if (bufs[i]) *bufs[i] = p;
        else m->targets = p;
    }
    const size_t gs = llama_gemm_scratch_bytes(m->dtype, m->n_threads);
    if (gs) m->gemm_scratch = mem_alloc(MEM_SCRATCH, gs);
}

/* The model's GEMM compute type, set for its forward or backward; the previous one is returned
 * for the caller to restore.  One slot of rounding scratch per thread, as the attention scratch. */
static gemm_compute compute_begin(const llama_model *m) {
    const gemm_compute c = {m->dtype, m->gemm_scratch, m->n_threads};
    if (m->dtype == GEMM_BF16 && !m->gemm_scratch) loqt_die("llama: --dtype bf16 set after llama_set_batch");
    return gemm_set_compute(c);
}

/* fp32 for what runs inside backward but is not part of it (per-layer updates: the optimizer
 * steps and the refreshes with their SVD, QR and least squares); returns the model's setting. */
static gemm_compute compute_fp32(void) { return gemm_set_compute((gemm_compute){GEMM_FP32, NULL, 0}); }

void llama_free(llama_model *m) {
    free_acts(m);
    if (m->blocks) {
        for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
            param_free(&m->blocks[l].attn_norm);
            param_free(&m->blocks[l].mlp_norm);
            for (int j = 0; j < LIN_PER_BLOCK; j++)
                if (m->blocks[l].lin[j].state) m->method->free(&m->blocks[l].lin[j]);
        }
        free(m->blocks);
    }
    param_free(&m->embed);
    param_free(&m->final_norm);
    param_free(&m->lm_head);
    mem_free(m->rope_cos);
    mem_free(m->rope_sin);
    mem_workspace_release(); /* the methods' shared work buffer */
    memset(m, 0, sizeof *m);
}

static void add_inplace(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) y[i] += x[i];
}

/* One block forward: x (the block input) -> x_next; all intermediate activations go into `a`
 * (a->x is not read: the input is passed explicitly so checkpointed blocks can use a shared work
 * block).  `tmp` is an [N, d] scratch. */
static void block_forward(llama_model *m, int l, block_acts *a, const float *x, float *x_next,
                          float *tmp) {
    const llama_config *c = &m->cfg;
    const int B = m->B, T = m->T, N = B * T, d = c->hidden_size, F = c->intermediate_size;
    const int H = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = d / H;
    const float eps = (float)c->rms_norm_eps;
    llama_block *b = &m->blocks[l];
    const linear_method *M = m->method;
    rmsnorm_forward(a->xn1, a->rstd1, x, b->attn_norm.w, N, d, eps);
    M->forward(&b->lin[LIN_Q], a->xn1, a->q, N);
    M->forward(&b->lin[LIN_K], a->xn1, a->k, N);
    M->forward(&b->lin[LIN_V], a->xn1, a->v, N);
    rope_forward(a->q, m->rope_cos, m->rope_sin, B, T, H, hd);
    rope_forward(a->k, m->rope_cos, m->rope_sin, B, T, Hkv, hd);
    attention_forward(a->att, a->lse, a->q, a->k, a->v, B, T, H, Hkv, hd, m->attn_scratch);
    M->forward(&b->lin[LIN_O], a->att, a->x2, N);
    add_inplace(a->x2, x, (size_t)N * d);
    rmsnorm_forward(a->xn2, a->rstd2, a->x2, b->mlp_norm.w, N, d, eps);
    M->forward(&b->lin[LIN_GATE], a->xn2, a->g, N);
    M->forward(&b->lin[LIN_UP], a->xn2, a->u, N);
    swiglu_forward(a->h, a->g, a->u, (long)N * F);
    M->forward(&b->lin[LIN_DOWN], a->h, tmp, N);
    memcpy(x_next, a->x2, sizeof(float) * (size_t)N * d);
    add_inplace(x_next, tmp, (size_t)N * d);
}

/* One block backward: dres holds d(loss)/d(x_next) on entry and d(loss)/d(x) on exit. */
static void block_backward(llama_model *m, int l, block_acts *a, const float *x) {
    const llama_config *c = &m->cfg;
    const int B = m->B, T = m->T, N = B * T, d = c->hidden_size, F = c->intermediate_size;
    const int H = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = d / H;
    const linear_method *M = m->method;
    llama_block *b = &m->blocks[l];
    float *dres = m->d_res, *dxn = m->d_a, *datt = m->d_b, *dq = m->d_c;
    float *dF1 = m->d_F1, *dF2 = m->d_F2;
    /* MLP: x_next = x2 + down(silu(gate(xn2)) * up(xn2)) */
    M->backward(&b->lin[LIN_DOWN], a->h, dres, dF1, N, 0);
    swiglu_backward(dF1, dF2, dF1, a->g, a->u, (long)N * F);
    M->backward(&b->lin[LIN_GATE], a->xn2, dF1, dxn, N, 0);
    M->backward(&b->lin[LIN_UP], a->xn2, dF2, dxn, N, 1);
    rmsnorm_backward(dres, b->mlp_norm.g, dxn, a->x2, b->mlp_norm.w, a->rstd2, N, d, 1);
    /* attention: x2 = x + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))) */
    M->backward(&b->lin[LIN_O], a->att, dres, datt, N, 0);
    float *dk = dF1, *dv = dF2; /* the F-sized buffers are free again */
    attention_backward(dq, dk, dv, datt, a->att, a->lse, a->q, a->k, a->v, B, T, H, Hkv, hd,
                       m->attn_scratch);
    rope_backward(dq, m->rope_cos, m->rope_sin, B, T, H, hd);
    rope_backward(dk, m->rope_cos, m->rope_sin, B, T, Hkv, hd);
    M->backward(&b->lin[LIN_Q], a->xn1, dq, dxn, N, 0);
    M->backward(&b->lin[LIN_K], a->xn1, dk, dxn, N, 1);
    M->backward(&b->lin[LIN_V], a->xn1, dv, dxn, N, 1);
    rmsnorm_backward(dres, b->attn_norm.g, dxn, x, b->attn_norm.w, a->rstd1, N, d, 1);
}

/* dense parameter i (llama_dense_at): its update (by its owner under --zero 1), then its gradient
 * zeroed, or freed when it is created on demand and gradients are transient */
static void param_step(llama_model *m, int i) {
    dense_param *p = llama_dense_at(m, i);
    if (p->frozen) return;
    if (llama_unit_owned(m, i)) optim_update(&p->opt, p->w, param_grad(p), &m->layer_step);
    else param_grad(p);
    if (m->transient_grads && p->grad_on_demand) {
        mem_free(p->g);
        p->g = NULL;
    } else {
        memset(p->g, 0, p->n * sizeof(float));
    }
}

/* Per-layer updates: a layer's optimizer step as soon as its gradient for the whole batch is
 * complete (during the last micro-batch's backward), then its gradients are zeroed. */
static int all_finite(const float *x, size_t n) {
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (long i = 0; i < (long)n; i++) bad |= !isfinite(x[i]);
    return !bad;
}

static int block_step(llama_model *m, int l) {
    llama_block *b = &m->blocks[l];
    if (m->dp && dp_reduce_block(m->dp, m, l)) return -1; /* the block's gradients, summed */
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        linear_layer *L = &b->lin[j];
        const int owned = llama_unit_owned(m, llama_block_unit(m, l, j));
        grad_view v[4];
        const int nv = owned && m->method->grad_views ? m->method->grad_views(L, v, 4) : 0;
        for (int i = 0; i < nv; i++)
            if (!all_finite(v[i].data, v[i].n))
                return loqt_set_error("%s: the gradient is not finite at step %ld; with --per-layer-updates the "
                                      "earlier layers are already updated, so the step cannot be skipped "
                                      "(training diverged; lower --lr)", L->name, m->layer_step_index);
        if (m->method->end_step && m->method->end_step(L, m->layer_step_index)) return -1;
        if (owned && m->method->step(L, &m->layer_step)) return -1;
        if (m->transient_grads && m->method->release_grads) m->method->release_grads(L);
        else m->method->zero_grad(L);
    }
    param_step(m, llama_block_unit(m, l, LIN_PER_BLOCK));
    param_step(m, llama_block_unit(m, l, LIN_PER_BLOCK + 1));
    return 0;
}

/* under per-layer updates: a dense parameter's gradient summed across ranks, then its update */
static int dense_step_now(llama_model *m, int i) {
    if (m->dp && dp_reduce_units(m->dp, m, &i, 1)) return -1;
    param_step(m, i);
    return 0;
}

double llama_forward(llama_model *m, const int32_t *inputs, const int32_t *targets,
                     float loss_scale, float *logits) {
    const llama_config *c = &m->cfg;
    const int N = m->B * m->T, d = c->hidden_size, V = c->vocab_size;
    float *tmp = m->d_a;
    const gemm_compute outer = compute_begin(m);

    embedding_forward(m->acts[0].x, inputs, m->embed.w, N, d);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        float *x_next = l + 1 < c->num_hidden_layers ? m->acts[l + 1].x : m->xf;
        block_forward(m, l, m->checkpoint_activations ? &m->work : &m->acts[l], m->acts[l].x,
                      x_next, tmp);
    }
    rmsnorm_forward(m->xnf, m->rstdf, m->xf, m->final_norm.w, N, d, (float)c->rms_norm_eps);

    /* lm_head and loss, LOGIT_CHUNK rows at a time; with loss_scale > 0 the gradient of the loss
     * w.r.t. the logits is formed in place and pushed through lm_head right away, so the full
     * [N, V] logits never exist. */
    double loss = 0;
    int train = loss_scale > 0 && targets;
    dense_param *head = llama_output_param(m);
    float *dlm_head = train ? param_grad(head) : NULL;
    for (int r0 = 0; r0 < N; r0 += LOGIT_CHUNK) {
        int rows = N - r0 < LOGIT_CHUNK ? N - r0 : LOGIT_CHUNK;
        float *lc = m->logits_chunk;
        const float *xr = m->xnf + (size_t)r0 * d;
        gemm(false, true, rows, V, d, 1.0f, xr, d, head->w, d, 0.0f, lc, V);
        if (logits) memcpy(logits + (size_t)r0 * V, lc, sizeof(float) * (size_t)rows * V);
        if (!targets) continue;
        loss += softmax_xent(train ? lc : NULL, lc, targets + r0, rows, V, loss_scale);
        if (train) {
            if (dlm_head) gemm(true, false, V, d, rows, 1.0f, lc, V, xr, d, 1.0f, dlm_head, d);
            gemm(false, false, rows, d, V, 1.0f, lc, V, head->w, d, 0.0f,
                 m->dxnf + (size_t)r0 * d, d);
        }
    }
    gemm_set_compute(outer);
    return targets ? loss / N : 0.0;
}

/* Under per-layer updates: the step of dense parameter i, or of block l (i < 0), in fp32. */
static int step_fp32(llama_model *m, int i, int l) {
    const gemm_compute bw = compute_fp32();
    const int rc = i >= 0 ? dense_step_now(m, i) : block_step(m, l);
    gemm_set_compute(bw);
    return rc;
}

static int backward(llama_model *m, const int32_t *inputs) {
    const llama_config *c = &m->cfg;
    const int N = m->B * m->T, d = c->hidden_size;
    const int step_now = m->per_layer_updates && m->last_microbatch;

    /* the lm_head's gradient is complete since the forward's fused loss; a tied one is the
     * embedding's, which the backward below still adds to */
    if (step_now && !c->tie_word_embeddings && step_fp32(m, llama_lm_head_unit(m), 0)) return -1;
    rmsnorm_backward(m->d_res, m->final_norm.g, m->dxnf, m->xf, m->final_norm.w, m->rstdf, N, d, 0);
    if (step_now && step_fp32(m, llama_final_norm_unit(m), 0)) return -1;
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        block_acts *a = &m->acts[l];
        if (m->checkpoint_activations) {
            /* recompute this block's activations from its saved input; its output lands where
             * the block above's input was, which that block's backward no longer needs */
            a = &m->work;
            float *x_next = l + 1 < c->num_hidden_layers ? m->acts[l + 1].x : m->xf;
            block_forward(m, l, a, m->acts[l].x, x_next, m->d_a);
        }
        block_backward(m, l, a, m->acts[l].x);
        if (step_now && step_fp32(m, -1, l)) return -1;
    }
    if (!m->embed.frozen) embedding_backward(param_grad(&m->embed), inputs, m->d_res, N, d);
    if (step_now && step_fp32(m, 0, 0)) return -1;
    return 0;
}

int llama_backward(llama_model *m, const int32_t *inputs) {
    const gemm_compute outer = compute_begin(m);
    const int rc = backward(m, inputs);
    gemm_set_compute(outer);
    return rc;
}

/* embed, (attn_norm, mlp_norm) per block, final norm, lm_head (untied only) */
int llama_dense_count(const llama_model *m) {
    return 2 * m->cfg.num_hidden_layers + 3 - (m->cfg.tie_word_embeddings ? 1 : 0);
}

dense_param *llama_output_param(llama_model *m) {
    return m->cfg.tie_word_embeddings ? &m->embed : &m->lm_head;
}

int llama_final_norm_unit(const llama_model *m) { return 2 * m->cfg.num_hidden_layers + 1; }
int llama_lm_head_unit(const llama_model *m) { return m->cfg.tie_word_embeddings ? -1 : 2 * m->cfg.num_hidden_layers + 2; }

dense_param *llama_dense_at(const llama_model *m, int i) {
    const int L = m->cfg.num_hidden_layers;
    llama_model *mm = (llama_model *)m;
    if (i == 0) return &mm->embed;
    if (i <= 2 * L) return (i & 1) ? &mm->blocks[(i - 1) / 2].attn_norm : &mm->blocks[(i - 1) / 2].mlp_norm;
    if (i == 2 * L + 1) return &mm->final_norm;
    return i == 2 * L + 2 && !m->cfg.tie_word_embeddings ? &mm->lm_head : NULL;
}

#define FOR_DENSE(m, p)                                                   \
    for (int p##_i = 0; p##_i < llama_dense_count(m); p##_i++)            \
        for (dense_param *p = llama_dense_at(m, p##_i); p; p = NULL)

#define FOR_LINEAR(m, L)                                                  \
    for (int L##_l = 0; L##_l < (m)->cfg.num_hidden_layers; L##_l++)      \
        for (int L##_j = 0; L##_j < LIN_PER_BLOCK; L##_j++)               \
            for (linear_layer *L = &(m)->blocks[L##_l].lin[L##_j]; L; L = NULL)

void llama_zero_grad(llama_model *m) {
    FOR_DENSE(m, p) if (p->g) memset(p->g, 0, p->n * sizeof(float));
    FOR_LINEAR(m, L) m->method->zero_grad(L);
}

void llama_skip_step(llama_model *m) {
    FOR_DENSE(m, p) if (p->g) memset(p->g, 0, p->n * sizeof(float));
    FOR_LINEAR(m, L) {
        if (m->method->skip_step) m->method->skip_step(L);
        else m->method->zero_grad(L);
    }
}

void llama_begin_step(llama_model *m, long step) {
    if (!m->method->begin_step) return;
    FOR_LINEAR(m, L) m->method->begin_step(L, step);
}

int llama_end_step(llama_model *m, long step) {
    if (!m->method->end_step) return 0;
    FOR_LINEAR(m, L) if (m->method->end_step(L, step)) return -1;
    return 0;
}

int llama_unit_count(const llama_model *m) {
    return llama_dense_count(m) + m->cfg.num_hidden_layers * LIN_PER_BLOCK;
}

int llama_block_unit(const llama_model *m, int l, int j) {
    if (j < LIN_PER_BLOCK) return llama_dense_count(m) + l * LIN_PER_BLOCK + j;
    return 1 + 2 * l + (j - LIN_PER_BLOCK); /* attn_norm, mlp_norm (llama_dense_at) */
}

static linear_layer *unit_layer(const llama_model *m, int u) {
    const int k = u - llama_dense_count(m);
    return k < 0 ? NULL : &m->blocks[k / LIN_PER_BLOCK].lin[k % LIN_PER_BLOCK];
}

int llama_unit_views(llama_model *m, int u, grad_view *v, int cap) {
    linear_layer *L = unit_layer(m, u);
    if (L) return m->method->grad_views ? m->method->grad_views(L, v, cap) : 0;
    dense_param *p = llama_dense_at(m, u);
    if (!p->g || cap < 1) return 0;
    v[0] = (grad_view){p->g, p->n, p->name, 1};
    return 1;
}

size_t llama_unit_params_get(const llama_model *m, int u, float *x) {
    const linear_layer *L = unit_layer(m, u);
    if (L) return m->method->params_get(L, x);
    const dense_param *p = llama_dense_at(m, u);
    if (x) memcpy(x, p->w, p->n * sizeof(float));
    return p->n;
}

void llama_unit_params_set(llama_model *m, int u, const float *x) {
    linear_layer *L = unit_layer(m, u);
    if (L) m->method->params_set(L, x);
    else memcpy(llama_dense_at(m, u)->w, x, llama_dense_at(m, u)->n * sizeof(float));
}

int llama_unit_owned(const llama_model *m, int u) { return !m->dp || dp_owns(m->dp, u); }

double llama_grad_sqnorm_owned(llama_model *m) {
    double ss = 0;
    FOR_DENSE(m, p) if (p->g && llama_unit_owned(m, p_i)) ss += optim_sqnorm(p->g, p->n);
    FOR_LINEAR(m, L) if (llama_unit_owned(m, llama_block_unit(m, L_l, L_j))) ss += m->method->grad_sqnorm(L);
    return ss;
}

double llama_grad_norm(llama_model *m) {
    double ss = 0;
    FOR_DENSE(m, p) if (p->g) ss += optim_sqnorm(p->g, p->n);
    FOR_LINEAR(m, L) ss += m->method->grad_sqnorm(L);
    return sqrt(ss);
}

int llama_optimizer_step(llama_model *m, const optim_hparams *h) {
    FOR_DENSE(m, p) if (!p->frozen && llama_unit_owned(m, p_i)) optim_update(&p->opt, p->w, param_grad(p), h);
    FOR_LINEAR(m, L) if (llama_unit_owned(m, llama_block_unit(m, L_l, L_j)) && m->method->step(L, h)) return -1;
    return 0;
}

void llama_method_stats(const llama_model *m, method_stats *out) {
    memset(out, 0, sizeof *out);
    if (!m->method->stats) return;
    FOR_LINEAR(m, L) m->method->stats(L, out);
}

int llama_grads_finite(llama_model *m) {
    /* under --zero 1 a rank holds the sums of its own units only: the trainer combines the ranks' answers */
    FOR_DENSE(m, p) if (p->g && llama_unit_owned(m, p_i) && !all_finite(p->g, p->n)) return 0;
    if (!m->method->grad_views) return 1;
    FOR_LINEAR(m, L) {
        if (!llama_unit_owned(m, llama_block_unit(m, L_l, L_j))) continue;
        grad_view v[4];
        int n = m->method->grad_views(L, v, 4);
        for (int i = 0; i < n; i++)
            if (!all_finite(v[i].data, v[i].n)) return 0;
    }
    return 1;
}

int llama_grad_views(llama_model *m, grad_view *v, int cap) {
    int n = 0;
    FOR_DENSE(m, p) if (p->g && n < cap) v[n++] = (grad_view){p->g, p->n, p->name, 1};
    if (!m->method->grad_views) return n;
    FOR_LINEAR(m, L) n += m->method->grad_views(L, v + n, cap - n);
    return n;
}

void llama_param_bytes(const llama_model *m, size_t bytes[MEM_NCAT]) {
    llama_model *mm = (llama_model *)m;
    FOR_DENSE(mm, p) {
        bytes[MEM_DENSE] += mem_size(p->w);
        bytes[MEM_GRADS] += mem_size(p->g);
        bytes[MEM_OPTIM] += optim_state_bytes(&p->opt);
    }
    FOR_LINEAR(mm, L) m->method->mem_bytes(L, bytes);
}
