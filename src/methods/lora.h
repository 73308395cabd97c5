/* The LoRA engine (methods/lora.c), shared by --method lora and --method relora.
 *
 * A layer is y = x W^T + s x_d A^T B^T: W (out x in) frozen and stored in 4 (NF4), 8 (int8), 16
 * (bf16) or 32 bits, A (r x in) and B (out x r) trained in fp32, x_d = dropout(x).  ReLoRA is the
 * same layer that every `merge_every` optimizer steps merges W <- Q(W + s B A), starts A and B
 * again and prunes or resets their optimizer state.  A method file turns its options into a
 * lora_spec and fills its linear_method with the hooks below (as galore.h does for GaLore). */
#ifndef LOQT_METHOD_LORA_H
#define LOQT_METHOD_LORA_H

#include "methods/linear.h"
#include "quant/qmat.h"

enum { LORA_BASE_4, LORA_BASE_8, LORA_BASE_16, LORA_BASE_32 }; /* --base-bits 4|8|16|32 */
enum { LORA_INIT_ZERO, LORA_INIT_LOFTQ, LORA_INIT_QUAILORA, LORA_INIT_QUAILORA_CLOSED }; /* --init */
enum { LORA_SVD_RANDOMIZED, LORA_SVD_EXACT };                 /* --svd */
enum { LORA_RESET_PRUNE, LORA_RESET_ZERO };                   /* --optimizer-reset prune|reset */
enum { LORA_LOFTQ_MAX = 100 };                                /* --loftq-iterations' limit */
enum { LORA_QUAILORA_MAX = 1000 };                            /* --quailora-iterations' limit */

/* The options both methods share (the tables are LORA_OPTIONS below). */
typedef struct {
    int rank;
    double lora_alpha;
    int rslora;
    double lora_dropout;
    int base_bits, use_double_quant, init, loftq_iterations, svd;
    int calibration_sequences, quailora_iterations;
    double quailora_ridge;
    int target_modules; /* bit j: projection j (LINEAR_PROJECTIONS) has adapters */
} lora_config;

enum { LORA_ALL_TARGETS = (1 << LINEAR_N_PROJECTIONS) - 1 };

/* One table line per shared option, over the struct T whose lora_config is reached by the member
 * prefix P (empty, or "l." for a struct that embeds one as `l`); DROPOUT is the method's default. */
#define LORA_OPTIONS(T, P, DROPOUT)                                                                                  \
    MOPT_I(T, P rank, "rank", 128, 1, 1 << 20, "rank r of the adapters A (r x in) and B (out x r); PEFT's r, the reference's --lora_r"), \
    MOPT_F(T, P lora_alpha, "lora-alpha", 32, 1e-6, 1e6, "alpha: the adapters are scaled by s = alpha / r (alpha / sqrt(r) with --rslora)"), \
    MOPT_B(T, P rslora, "rslora", 0, "rank-stabilized scale s = alpha / sqrt(r) (PEFT's use_rslora)"),                  \
    MOPT_F(T, P lora_dropout, "lora-dropout", DROPOUT, 0, 0.9, "dropout on the adapters' input during training steps (kept values scaled by 1 / (1 - p), as PEFT)"), \
    MOPT_C(T, P base_bits, "base-bits", LORA_BASE_16, "4|8|16|32", "storage of the frozen base W: NF4 (block 64, QLoRA), int8 (asymmetric, group 256), bf16 or fp32"), \
    MOPT_B(T, P use_double_quant, "use-double-quant", 0, "4-bit base: NF4 absmax values stored in 8 bits (QLoRA's double quantization)"), \
    MOPT_C(T, P init, "init", LORA_INIT_ZERO, "zero|loftq|quailora|quailora-closed", "adapters at the start: zero (A kaiming-uniform, B = 0, PEFT's default), loftq (base and adapters from alternating quantization and SVD of the residual), quailora (adapters minimizing the quantization error on calibration activations, alternating least squares) or quailora-closed (its closed-form optimum); the quailora inits need --init-from"), \
    MOPT_I(T, P loftq_iterations, "loftq-iterations", 5, 1, LORA_LOFTQ_MAX, "LoftQ: rounds of quantize / SVD of the residual (the reference's 5)"), \
    MOPT_C(T, P svd, "svd", LORA_SVD_RANDOMIZED, "randomized|exact", "the truncated SVD of LoftQ and QuAILoRA: randomized range finder, or exact one-sided Jacobi (slow; small layers, tests)"), \
    MOPT_I(T, P calibration_sequences, "calibration-sequences", 64, 1, 1 << 20, "QuAILoRA: training sequences (of --max-length tokens, evenly spaced over the training split) whose activations in the dense model calibrate the init"), \
    MOPT_I(T, P quailora_iterations, "quailora-iterations", 10, 0, LORA_QUAILORA_MAX, "--init quailora: alternating least-squares rounds (each solves B, then A) from the uncalibrated SVD start"), \
    MOPT_F(T, P quailora_ridge, "quailora-ridge", 0.01, 0, 1e3, "QuAILoRA: ridge lambda added to the calibration Gram X^T X, relative to the Gram's mean diagonal entry trace(H) / in (GPTQ's dampening)"), \
    MOPT_S(T, P target_modules, "target-modules", LORA_ALL_TARGETS, LINEAR_PROJECTIONS, "the projections that get adapters (PEFT's target_modules); the others keep only their frozen base, stored as --base-bits says")

typedef struct {
    int rank;          /* as given; a layer uses min(rank, its smaller side) */
    double scale;      /* s */
    double dropout;    /* p */
    qmat_kind base;    /* storage of W */
    int double_quant;  /* NF4 absmax in 8 bits */
    int init;          /* LORA_INIT_* */
    int loftq_iters;
    int svd;           /* LORA_SVD_* */
    int calib_seqs;    /* QuAILoRA: calibration sequences */
    int quailora_iters;
    double ridge;      /* QuAILoRA: lambda / (trace(H) / in) */
    /* ReLoRA: merge and restart every merge_every steps (0: never, plain LoRA) */
    int merge_every;
    int opt_reset;     /* LORA_RESET_* */
    double prune_ratio; /* the fraction of each moment tensor's entries zeroed (smallest |value|) */
    unsigned targets;  /* the projections with adapters (lora_config.target_modules) */
} lora_spec;

lora_spec lora_spec_of(const lora_config *c);
/* The calibration sequences the spec's init needs (QuAILoRA), 0 when it needs none: the
 * engine's `calibration` hook. */
int lora_spec_calibration(const lora_spec *sp);

/* Shapes and sizes, shared by the code and its planning twin.  A projection outside the targets
 * has r = 0: no adapters, no gradient, no optimizer state; its base alone. */
typedef struct {
    int r;
    size_t n, nA, nB; /* elements of W, A (r x in), B (out x r) */
} lora_geom;
lora_geom lora_geom_of(int out, int in, int proj, const lora_spec *sp);

int lora_engine_init(linear_layer *L, const method_opts *o, const linear_init *ini, const lora_spec *sp);
void lora_engine_plan(linear_plan *p, linear_phase phase, mem_sim *s, const lora_spec *sp);
double lora_engine_paper_bytes(int out, int in, int proj, const lora_spec *sp);

/* The hooks that take only the layer. */
void lora_forward(linear_layer *L, const float *X, float *Y, int N);
void lora_backward(linear_layer *L, const float *X, const float *dY, float *dX, int N, int accumulate);
void lora_begin_step(linear_layer *L, long step);
int lora_end_step(linear_layer *L, long step);
double lora_grad_sqnorm(const linear_layer *L);
int lora_step(linear_layer *L, const optim_hparams *h);
void lora_zero_grad(linear_layer *L);
void lora_skip_step(linear_layer *L);
void lora_release_grads(linear_layer *L);
void lora_mem_bytes(const linear_layer *L, size_t bytes[MEM_NCAT]);
void lora_export(const linear_layer *L, float *W);
void lora_save(const linear_layer *L, st_writer *model, st_writer *state);
int lora_load(linear_layer *L, const st_file *model, const st_file *state);
void lora_free(linear_layer *L);
int lora_grad_views(linear_layer *L, grad_view *v, int cap);
size_t lora_params_get(const linear_layer *L, float *x);
void lora_params_set(linear_layer *L, const float *x);
void lora_stats(const linear_layer *L, method_stats *acc);

/* For tests and tools. */
/* LoftQ's objective ||W0 - deq Q - s B A||_F after each round: err[0] is that of zero init
 * (||W0 - deq Q(W0)||), err[k] that of round k; returns the number of values (0 without LoftQ).
 * QuAILoRA: the calibrated objective sqrt(tr((W0 - W_eff) (H + lambda I) (W0 - W_eff)^T)), i.e.
 * ||X (W0 - W_eff)^T||_F with the ridge: err[0] zero init, err[1] the uncalibrated SVD start
 * (quailora) or the closed form (quailora-closed), err[1 + k] after alternating round k. */
int lora_init_errors(const linear_layer *L, double *err, int cap);
/* The dropout mask the layer applies to X (N x in) in a training step: keep[i] = 1 or 0. */
void lora_dropout_mask(const linear_layer *L, const float *X, int N, unsigned char *keep);
/* The base W (dequantized, out x in), A (r x in), B (out x r); any may be NULL. */
void lora_get_factors(const linear_layer *L, float *W, float *A, float *B);
/* The layer's r: min(rank, its smaller side), 0 for a projection outside --target-modules. */
int lora_rank(const linear_layer *L);
/* The layer's own A (r x in) and B (out x r), to be written in place (a PEFT adapter loaded
 * onto the layer, model/peft.h: no copy, so nothing for the memory planner to add). */
void lora_factors(linear_layer *L, float **A, float **B);
/* The frozen base alone, dequantized ([out, in] fp32): what a PEFT adapter is added to. */
void lora_base_export(const linear_layer *L, float *W);
/* 1 when the layer's method is the LoRA engine (--method lora, relora). */
int lora_is_engine(const linear_method *m);
/* Magnitude pruning as the ReLoRA reference does it: entries with |x| <= the `ratio` quantile of
 * |x| (linear interpolation between order statistics, as torch.quantile) become 0.  `sorted` is
 * scratch of n floats. */
void lora_magnitude_prune(float *x, size_t n, double ratio, float *sorted);

/* The hooks every method built on this engine shares, for its linear_method table (the method
 * adds its name, options, init, plan and whatever else is its own). */
#define LORA_ENGINE_HOOKS \
    .forward = lora_forward, \
    .backward = lora_backward, \
    .begin_step = lora_begin_step, \
    .end_step = lora_end_step, \
    .grad_sqnorm = lora_grad_sqnorm, \
    .step = lora_step, \
    .zero_grad = lora_zero_grad, \
    .skip_step = lora_skip_step, \
    .release_grads = lora_release_grads, \
    .mem_bytes = lora_mem_bytes, \
    .export_dense = lora_export, \
    .save = lora_save, \
    .load = lora_load, \
    .free = lora_free, \
    .grad_views = lora_grad_views, \
    .params_get = lora_params_get, \
    .params_set = lora_params_set, \
    .stats = lora_stats

#endif
