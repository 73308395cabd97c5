/* The LLaMA model: embedding, L blocks of (RMSNorm, attention with RoPE (grouped-query when
 * num_key_value_heads < num_attention_heads), residual, RMSNorm, SwiGLU MLP, residual), final
 * RMSNorm, lm_head (or the embedding itself with tie_word_embeddings), mean cross-entropy.
 *
 * The seven projections of each block are linear_layer objects of one training method; the model
 * owns the dense parameters (embedding, norms, lm_head), their gradients and optimizer state, and
 * the activations of one micro-batch shape (B, T). */
#ifndef LOQT_LLAMA_H
#define LOQT_LLAMA_H

#include "kernels/gemm.h"
#include "methods/linear.h"
#include "model/config.h"
#include "optim/optim.h"

#include <stdint.h>

/* in the order of methods/linear.h's LINEAR_PROJECTIONS (a layer's proj) */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_PER_BLOCK };
_Static_assert((int)LIN_PER_BLOCK == (int)LINEAR_N_PROJECTIONS, "the projections of linear.h");

/* A dense parameter with its gradient and optimizer state.  The vocabulary-sized matrices
 * (embedding, lm_head) get their gradient buffer at its first use, and per-layer updates without
 * accumulation free it again right after their update (`grad_on_demand`); the norms keep theirs. */
typedef struct {
    char name[96];
    float *w, *g;
    int grad_on_demand;
    int frozen; /* method_opts.freeze_dense: never a gradient or optimizer state */
    size_t n;
    int ndim;
    int64_t shape[2];
    optim_state opt;
} dense_param;

typedef struct {
    dense_param attn_norm, mlp_norm;
    linear_layer lin[LIN_PER_BLOCK];
} llama_block;

/* Saved activations of one block for one micro-batch. */
typedef struct {
    float *x;          /* block input (residual stream) [N, d] */
    float *rstd1, *xn1;
    float *q, *k, *v;  /* after RoPE */
    float *att, *lse;  /* attention output [N, d], log-sum-exp [B, H, T] */
    float *x2;         /* residual after attention */
    float *rstd2, *xn2;
    float *g, *u, *h;  /* [N, F] */
} block_acts;

typedef struct {
    llama_config cfg;
    const linear_method *method;
    method_opts mopts;
    dense_param embed, final_norm, lm_head; /* lm_head unused (zeroed) when tied */
    llama_block *blocks;
    float *rope_cos, *rope_sin;

    /* activations and scratch for micro-batches of shape (B, T) */
    int B, T;
    block_acts *acts;
    float *xf, *rstdf, *xnf; /* final residual, its norm */
    int32_t *targets;
    float *dxnf;             /* gradient w.r.t. xnf, produced by the fused lm_head + loss */
    float *logits_chunk;     /* [chunk, V] */
    float *d_res, *d_a, *d_b, *d_c, *d_F1, *d_F2; /* backward scratch */
    float *attn_scratch;
    int n_threads;

    /* activation checkpointing: set before llama_set_batch */
    int checkpoint_activations;
    /* --dtype: GEMM_BF16 runs the GEMMs of forward and backward on bf16-rounded operands (fp32
     * accumulation, kernels/gemm.h); weights, norms, the loss, softmax and every update stay
     * fp32.  Set before llama_set_batch, which then allocates the GEMM's rounding scratch. */
    gemm_dtype dtype;
    void *gemm_scratch; /* gemm_bf16_scratch_bytes(n_threads), MEM_SCRATCH */
    block_acts work; /* the one block of activations recomputed during backward */

    /* per-layer updates: each layer steps inside the backward of the step's last micro-batch */
    int per_layer_updates;
    int last_microbatch;     /* set by train_step */
    int transient_grads;     /* per-layer updates without accumulation: free each layer's
                                gradient after its update (set by train_step) */
    optim_hparams layer_step; /* the hyperparameters of this step's update */
    long layer_step_index;

    /* data parallelism (model/dp.h), set by the trainer; NULL in a single process */
    struct llama_dp *dp;
} llama_model;

/* Sizes, shared by the allocations below and the memory planner (model/plan.c). */
/* One block's activations in allocation order: x rstd1 xn1 q k v att lse x2 rstd2 xn2 g u h. */
enum { BLOCK_ACT_BUFS = 14 };
void llama_block_act_bytes(const llama_config *c, int B, int T, size_t out[BLOCK_ACT_BUFS]);
/* The model's batch buffers after the blocks, in allocation order: xf rstdf xnf dxnf targets
 * (MEM_ACTS), logits_chunk d_res d_a d_b d_c d_F1 d_F2 attn_scratch (MEM_SCRATCH). */
enum { BATCH_BUFS = 13, BATCH_ACT_BUFS = 5 };
void llama_batch_bytes(const llama_config *c, int B, int T, int threads, size_t out[BATCH_BUFS]);
/* The bf16 GEMMs' rounding scratch of a model with this dtype (0 for fp32), allocated after the
 * batch buffers (MEM_SCRATCH). */
size_t llama_gemm_scratch_bytes(gemm_dtype dtype, int threads);
/* The shape of projection j (LIN_Q .. LIN_DOWN) of a block: out x in. */
void llama_linear_shape(const llama_config *c, int j, int *out, int *in);
/* Floats of each RoPE table (cos and sin). */
size_t llama_rope_floats(const llama_config *c);

/* Creates a model with random init (normal(0, 0.02), norms 1) from `seed`, every tensor drawn from
 * its own named stream so the init does not depend on thread count or creation order. */
int llama_create(llama_model *m, const llama_config *cfg, const linear_method *method,
                 const method_opts *mo, uint64_t seed);
/* The same from pretrained weights (HF tensor names, F32/F16/BF16; NULL: random as above): the
 * embedding, norms and lm_head are read into place, and each linear layer's weight is read into
 * a scratch buffer (llama_init_scratch_bytes) and given to its method's init as linear_init.W0,
 * then freed.  A tied model's checkpoint may hold lm_head.weight only as a copy of the embedding.
 * Tensors of `weights` that were not read are left for the caller to report (st_first_unused).
 * -1 with an error naming the tensor (missing, wrong shape or dtype); nothing stays allocated. */
int llama_create_from(llama_model *m, const llama_config *cfg, const linear_method *method,
                      const method_opts *mo, uint64_t seed, const st_file *weights);
/* Calibration data for a method whose init wants each layer's input Gram (linear_method's
 * `calibration` hook, QuAILoRA): n_seqs sequences of seq tokens, run batch sequences at a time. */
typedef struct {
    const int32_t *tokens; /* n_seqs x seq */
    int n_seqs, seq, batch;
} llama_calib;
/* The calibration sequences the method's init wants (0: none). */
int llama_calibrates(const linear_method *method, const method_opts *mo);
/* llama_create_from, and when `weights` and `cal` are given and the method wants calibration, the
 * dense model's activations over cal's tokens give each layer's init its Gram (llama.c explains
 * the pass).  Memory beyond llama_create_from: the buffers of llama_calib_bytes (the residual
 * stream of all calibration tokens, MEM_ACTS; one micro-batch's block activations, MEM_ACTS; an
 * [N, d] output and the attention scratch, MEM_SCRATCH) while the model is created, and per block
 * its seven W0 and the Grams of llama_calib_gram_dims (MEM_SCRATCH) until its layers are made. */
int llama_create_calibrated(llama_model *m, const llama_config *cfg, const linear_method *method,
                            const method_opts *mo, uint64_t seed, const st_file *weights, const llama_calib *cal);
enum { LLAMA_CALIB_GRAMS = 4, LLAMA_CALIB_BUFS = 3 };
/* the Grams of a block: the inputs of q/k/v, o, gate/up (hidden) and down (intermediate) */
void llama_calib_gram_dims(const llama_config *c, int dims[LLAMA_CALIB_GRAMS]);
/* residual stream, down output, attention scratch (the block activations: llama_block_act_bytes
 * of min(batch, n_seqs) sequences, without x) */
void llama_calib_bytes(const llama_config *c, const llama_calib *cal, int threads, size_t out[LLAMA_CALIB_BUFS]);
/* The scratch buffer that carries one pretrained out x in weight to its layer's init. */
size_t llama_init_scratch_bytes(int out, int in);
void llama_free(llama_model *m);

/* (Re)allocates activations for micro-batches of B sequences of T tokens. */
void llama_set_batch(llama_model *m, int B, int T);

/* Forward pass on inputs[B*T].  With targets: returns the mean cross-entropy; if `loss_scale` > 0
 * it also computes the lm_head gradient and the gradient flowing into the network (scaled so that
 * gradients are d(loss_scale * sum of token losses)), to be continued by llama_backward.  If logits
 * is non-NULL it receives all [B*T, V] logits (small models / tests / generation). */
double llama_forward(llama_model *m, const int32_t *inputs, const int32_t *targets,
                     float loss_scale, float *logits);
/* Backward through the blocks and embedding; accumulates gradients (call after a forward with
 * loss_scale > 0 on the same inputs).  Under per-layer updates of the last micro-batch it also
 * updates each layer; 0, or -1 with an error from a method's refresh or update. */
int llama_backward(llama_model *m, const int32_t *inputs);

void llama_zero_grad(llama_model *m);
/* Discards the current step's gradients (every method's skip_step, the dense gradients zeroed). */
void llama_skip_step(llama_model *m);
void llama_begin_step(llama_model *m, long step);
int llama_end_step(llama_model *m, long step);
double llama_grad_norm(llama_model *m);
int llama_optimizer_step(llama_model *m, const optim_hparams *h);

/* The dense parameters (embed, norms, lm_head) in HF order: count, and the i-th.  A tied model
 * has no lm_head among them (the embedding serves as both). */
int llama_dense_count(const llama_model *m);
dense_param *llama_dense_at(const llama_model *m, int i);
/* The output layer's weight: lm_head, or the embedding when tied. */
dense_param *llama_output_param(llama_model *m);

/* 1 when every gradient buffer of the step (llama_grad_views) holds finite values. */
int llama_grads_finite(llama_model *m);
/* The method's statistics summed over all linear layers. */
void llama_method_stats(const llama_model *m, method_stats *out);
/* Every gradient buffer of the current step (dense parameters, then each layer's views). */
int llama_grad_views(llama_model *m, grad_view *v, int cap);

/* Units of data parallelism: the dense parameters (llama_dense_at order), then the linear layers
 * block by block (unit D + 7 l + j, D = llama_dense_count).  Under --zero 1 each unit has one
 * owning rank, which alone keeps its optimizer state and updates it. */
int llama_unit_count(const llama_model *m);
int llama_block_unit(const llama_model *m, int l, int j); /* j = LIN_PER_BLOCK, +1: the norms */
/* The final norm's unit, and lm_head's (-1 when tied: the embedding, unit 0, is the output). */
int llama_final_norm_unit(const llama_model *m);
int llama_lm_head_unit(const llama_model *m);
/* The gradient views of unit u (a dense parameter's is owner_only). */
int llama_unit_views(llama_model *m, int u, grad_view *v, int cap);
/* The trainable values of unit u: count, and a copy into x when x is non-NULL; set writes them. */
size_t llama_unit_params_get(const llama_model *m, int u, float *x);
void llama_unit_params_set(llama_model *m, int u, const float *x);
/* 1 when this process updates unit u (always, but under --zero 1). */
int llama_unit_owned(const llama_model *m, int u);
/* Sum of squares of the gradients of the units this process owns. */
double llama_grad_sqnorm_owned(llama_model *m);

/* Bytes per memory category held by parameters, gradients and optimizer state (not activations). */
void llama_param_bytes(const llama_model *m, size_t bytes[MEM_NCAT]);

#endif
