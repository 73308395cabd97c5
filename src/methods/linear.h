/* The linear-method interface.
 *
 * Every training method in loqt (full-rank, LoQT, GaLore, ...) differs only in how a linear layer
 * y = x W^T (W: [out, in]) is stored, differentiated and updated.  The LLaMA model code calls the
 * seven projections of each block through this table of functions and knows nothing else about
 * the method; the command line, `--help`, checkpoint metadata and the memory planner know a method
 * only through its table.  Adding a method means writing one file that fills a linear_method
 * (with its option table) and adding one line to methods/registry.c.
 *
 * Life of a layer in one optimizer step:
 *   begin_step(step)           -> the method may ask for the dense gradient this step (refresh steps)
 *   forward / backward  x k    (k micro-batches; backward accumulates the method's gradients)
 *   end_step(step)             -> refresh / merge with the accumulated gradient, if asked
 *   grad_sqnorm                -> for global-norm clipping
 *   step(hparams)              -> optimizer update of the trainable parameters
 *   zero_grad (or release_grads under per-layer updates)
 * Each of these has a planning twin: `plan` replays the allocations of one phase on a mem_sim
 * byte counter from the same size functions the real code allocates with (model/plan.c). */
#ifndef LOQT_LINEAR_H
#define LOQT_LINEAR_H

#include "core/mem.h"
#include "io/safetensors.h"
#include "optim/optim.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- options ------------------------------------------------------------------------------
 * A method declares its options as a table over its own config struct.  The table is the only
 * place an option is written down: the CLI flag (--NAME), its help and default, the range check,
 * and the checkpoint JSON key (NAME with underscores) all come from it. */
typedef enum {
    MOPT_INT,    /* int field; value in [lo, hi] */
    MOPT_FLOAT,  /* double field; value in [lo, hi], and representable as a float when
                  * `as_float` (a value that the method uses in single precision) */
    MOPT_FLAG,   /* int field, 0 or 1; a flag without a value on the command line */
    MOPT_CHOICE, /* int field: index into `choices` ("static|linear|exponential") */
    MOPT_SET,    /* int field, a bit mask: a non-empty subset of `choices`, bit k = the k-th name;
                  * "q_proj,v_proj" (or "all") on the command line, the names in checkpoint JSON */
} mopt_type;

typedef struct {
    const char *name;    /* CLI spelling, dashes: "update-proj-gap" */
    mopt_type type;
    size_t offset;       /* offsetof(config struct, field) */
    double def, lo, hi;  /* default (CHOICE: index of the default; SET: its mask), closed range
                          * (INT, FLOAT) */
    const char *choices; /* CHOICE and SET only */
    const char *help;
} method_option;

/* One table line per option: MOPT_I(cfg, field, "name", default, lo, hi, "help"). */
#define MOPT_I(T, f, name, def, lo, hi, help) {name, MOPT_INT, offsetof(T, f), def, lo, hi, NULL, help}
#define MOPT_F(T, f, name, def, lo, hi, help) {name, MOPT_FLOAT, offsetof(T, f), def, lo, hi, NULL, help}
#define MOPT_B(T, f, name, def, help) {name, MOPT_FLAG, offsetof(T, f), def, 0, 1, NULL, help}
#define MOPT_C(T, f, name, def, choices, help) {name, MOPT_CHOICE, offsetof(T, f), def, 0, 0, choices, help}
#define MOPT_S(T, f, name, def, choices, help) {name, MOPT_SET, offsetof(T, f), def, 0, 0, choices, help}

/* Bytes reserved for a method's config struct inside method_opts (checked by the registry). */
#define METHOD_CONFIG_BYTES 256

/* What every method shares (the trainer's choices), plus the method's own config struct as
 * bytes, read and written only through method_config_get/_set (so method_opts copies by value). */
typedef struct {
    optim_kind optimizer;
    uint64_t seed;
    int freeze_dense; /* the embedding, norms and lm_head are not trained (fine-tuning, as
                       * QLoRA): no gradient, no optimizer state; the gradient still flows
                       * through them to the layers below */
    unsigned char config[METHOD_CONFIG_BYTES];
} method_opts;

typedef struct linear_method linear_method;

/* A method's default for one of the trainer's shared options ("optimizer", "beta2", "lr"): the
 * value as it would be written on the command line. */
typedef struct {
    const char *option, *value;
} method_run_default;

/* A layer's place in its block: the seven projections of a LLaMA block (model/llama.h's LIN_Q ..
 * LIN_DOWN), in the order and with the names PEFT's target_modules uses. */
#define LINEAR_PROJECTIONS "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
enum { LINEAR_N_PROJECTIONS = 7 };

typedef struct {
    const linear_method *m;
    int out, in;
    int proj;        /* its projection, 0 .. LINEAR_N_PROJECTIONS - 1 (LINEAR_PROJECTIONS) */
    char name[96];   /* HF module name, e.g. "model.layers.3.mlp.up_proj" */
    void *state;     /* the method's own */
} linear_layer;

/* What a layer starts from.  W0 ([out, in], row-major): a dense initial or pretrained weight, or
 * NULL for normal(0, 0.02) drawn from (o->seed, rng_stream_id(L->name)).  Data-aware methods
 * (QuAILoRA: a method whose `calibration` hook asks for it) may also get the Gram matrix of the
 * layer's calibration inputs, gram = X^T X ([in, in], full, summed over gram_rows rows of X),
 * streamed in by the caller (model/llama.c: the dense model's activations); NULL when there is
 * no calibration data (the method then uses the identity, the uncalibrated objective). */
typedef struct {
    const float *W0;
    const float *gram;
    long gram_rows;
} linear_init;

/* A gradient buffer that data-parallel training must sum across ranks for this step (what a
 * method needs reduced can change from step to step: LoQT's dense G on refresh steps).
 * owner_only = 1 says that after backward only `step` reads the buffer (not end_step, whose
 * refresh every rank runs): with --zero 1 it is then reduced to the rank that owns the layer
 * alone.  0, the default, gives every rank the sum (always correct, twice the traffic under
 * --zero 1); tests/test_methods.c checks that end_step does not read an owner_only buffer. */
typedef struct {
    float *data;
    size_t n;
    const char *what; /* "dW", "dB", "G", ... */
    int owner_only;
} grad_view;

/* Per-method statistics (refresh seconds, refreshes, ...), summed (or averaged) over layers. */
typedef enum { STAT_SUM, STAT_MEAN } stat_kind;
typedef struct {
    int n;
    struct {
        const char *name; /* a static string: "refresh_s" */
        stat_kind kind;
        double sum;
        long count;
    } s[16];
} method_stats;
void method_stats_add(method_stats *st, const char *name, stat_kind kind, double value);
double method_stats_value(const method_stats *st, int i);

/* ---- planning ------------------------------------------------------------------------------ */
typedef enum {
    LPHASE_INIT,          /* init() */
    LPHASE_BEGIN_STEP,    /* begin_step(step) */
    LPHASE_FORWARD,       /* forward on N rows */
    LPHASE_BACKWARD,      /* backward on N rows */
    LPHASE_END_STEP,      /* end_step(step) */
    LPHASE_STEP,          /* step() */
    LPHASE_RELEASE_GRADS, /* release_grads() */
    LPHASE_EXPORT,        /* export_dense() (the caller's [out, in] buffer not included) */
} linear_phase;

/* One layer as the planner sees it: its shape, the run's options, the phase's arguments, and a
 * few slots of planning state that mirror what the real state has allocated (zero before INIT). */
typedef struct {
    int out, in;
    int proj;  /* as linear_layer.proj */
    const method_opts *o;
    long step; /* BEGIN_STEP, END_STEP, STEP */
    int N;     /* FORWARD, BACKWARD */
    int init_W0; /* INIT: the layer starts from a dense W0 (linear_init.W0, held by the caller),
                  * not from a random draw the method makes itself */
    int init_gram; /* INIT: linear_init.gram is given (held by the caller) */
    long slot[8];
} linear_plan;

struct linear_method {
    const char *name;
    const char *summary;          /* one line for --help */
    const method_option *options; /* the method's own options */
    int n_options;
    size_t config_size;           /* sizeof its config struct (<= METHOD_CONFIG_BYTES) */
    int heap_churn;               /* frees and re-allocates large buffers during training (the
                                   * planner's estimate of unaccounted memory uses it) */
    int straight_through;         /* its gradients are straight-through estimates: the
                                   * derivative with respect to the quantized weights the forward
                                   * uses, applied to latent parameters in which the loss is
                                   * piecewise constant (finite differences cannot see them) */

    /* 0, or -1 with an error. */
    int (*init)(linear_layer *L, const method_opts *o, const linear_init *ini);
    /* Optional.  How many calibration sequences the init wants (linear_init.gram), 0 for none:
     * a model created from pretrained weights then runs them through the dense model first. */
    int (*calibration)(const method_opts *o);
    /* Y[N, out] = X[N, in] W_eff^T */
    void (*forward)(linear_layer *L, const float *X, float *Y, int N);
    /* dX[N, in] (= or += if accumulate; dX may be NULL) dY[N, out] W_eff, and accumulate the
     * method's gradients from (X, dY). */
    void (*backward)(linear_layer *L, const float *X, const float *dY, float *dX, int N,
                     int accumulate);
    /* Optional.  Called before the first micro-batch of optimizer step `step` (0-based), on
     * every rank: state outside the trainable values (which --zero 1 broadcasts from the
     * owner's `step`) changes here, identically everywhere (ReLoRA's merge of step - 1). */
    void (*begin_step)(linear_layer *L, long step);
    /* Optional.  After the last backward of the step, before clipping and the update. */
    int (*end_step)(linear_layer *L, long step);
    double (*grad_sqnorm)(const linear_layer *L);
    int (*step)(linear_layer *L, const optim_hparams *h);
    void (*zero_grad)(linear_layer *L);
    /* Optional.  Discards what this step's backward accumulated (a non-finite loss or gradient
     * skips the step): afterwards the layer is as before the step's begin_step.  NULL: zero_grad. */
    void (*skip_step)(linear_layer *L);
    /* Optional.  Frees the gradient buffers; the next backward allocates them again (per-layer
     * updates without accumulation: one layer's gradient exists at a time). */
    void (*release_grads)(linear_layer *L);
    /* Adds the layer's bytes per memory category into bytes[]. */
    void (*mem_bytes)(const linear_layer *L, size_t bytes[MEM_NCAT]);
    /* Writes W_eff ([out, in] fp32) into W. */
    void (*export_dense)(const linear_layer *L, float *W);
    /* Checkpoint state: model tensors go to `model` (HF names where the method has a dense weight),
     * everything needed to resume (optimizer state, factors, codes) to `state`. */
    void (*save)(const linear_layer *L, st_writer *model, st_writer *state);
    int (*load)(linear_layer *L, const st_file *model, const st_file *state);
    void (*free)(linear_layer *L);

    /* The allocations of one phase, on a byte counter (see linear_plan). */
    void (*plan)(linear_plan *p, linear_phase phase, mem_sim *s);
    /* Optional.  The first step > after at which the method refreshes (a refresh after the
     * optimizer state exists is usually a long run's peak), or -1. */
    long (*next_refresh)(const method_opts *o, long after);
    /* Optional.  The gradient buffers to sum across ranks for the current step (after backward,
     * before end_step); data-parallel training (model/dp.c) needs it. */
    int (*grad_views)(linear_layer *L, grad_view *v, int cap);
    /* Optional.  The trainable parameters as one fp32 vector in the order of grad_views (tests:
     * finite differences).  get returns the element count and copies when x is non-NULL. */
    size_t (*params_get)(const linear_layer *L, float *x);
    void (*params_set)(linear_layer *L, const float *x);
    /* Optional.  Adds the layer's statistics (refresh time and count, ...). */
    void (*stats)(const linear_layer *L, method_stats *acc);
    /* Optional.  A factor on the whole model's learning rate at `step` (ReLoRA's restarts). */
    double (*lr_scale)(const method_opts *o, long step);
    /* Optional.  The layer's bytes in the papers' memory estimate (16-bit weights and state);
     * proj as linear_layer.proj. */
    double (*paper_bytes)(int out, int in, int proj, const method_opts *o);
    /* Optional.  Defaults of the trainer's options for this method, ending with {NULL, NULL}:
     * set before the command line is parsed (so it overrides them, and --help shows them); an
     * option the command does not have is skipped (bench has no --lr). */
    const method_run_default *run_defaults;
};

/* ---- the registry (methods/registry.c) ----------------------------------------------------- */
int method_count(void);
const linear_method *method_at(int i);
const linear_method *method_find(const char *name); /* also "dense", "adamw" for full */
const char *method_names(void);                     /* "full|loqt|galore|..." */

/* The method's defaults, shared fields as the trainer's defaults (adamw, seed 0). */
void method_opts_defaults(method_opts *o, const linear_method *m);
/* The method's config struct out of / into o (size must be m->config_size). */
void method_config_get(const method_opts *o, void *cfg, size_t size);
void method_config_set(method_opts *o, const void *cfg, size_t size);
const method_option *method_option_find(const linear_method *m, const char *name);
/* An option's value as a double (INT, FLAG, CHOICE: the int) and back (no range check). */
double method_option_get(const method_opts *o, const method_option *opt);
void method_option_set(method_opts *o, const method_option *opt, double v);
/* Every option within its range: 0, or -1 with "--NAME must be ..." */
int method_config_validate(const linear_method *m, const method_opts *o);
/* The options as a one-line JSON object, and back (keys with underscores; unknown keys and
 * out-of-range values are errors). */
void method_config_write_json(const linear_method *m, const method_opts *o, FILE *f);
int method_config_parse_json(const linear_method *m, method_opts *o, const char *text);
/* "rank 128, lora-alpha 0.4, ..." (every option), for run descriptions. */
void method_config_describe(const linear_method *m, const method_opts *o, char *buf, size_t cap);

/* Shared helpers for implementations. */
float *linear_random_init(const linear_layer *L, uint64_t seed, mem_cat cat); /* N(0, 0.02) */

#endif
