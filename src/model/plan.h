/* The memory planner: what a training run will allocate, from its options alone.
 *
 * plan_make() replays, without allocating anything, the sequence of mem_alloc / mem_free calls
 * that `loqt train` and `loqt bench` make (the data buffers, model creation, activations, the
 * first optimizer step, an ordinary step, the first later refresh step with the optimizer state
 * in place, and the optional dense export at the end), on a mem_sim byte counter.  The model's
 * own buffers are replayed here from the size functions model/llama.c allocates with; every
 * linear layer's are replayed by its method's `plan` hook, phase by phase, next to the code it
 * mirrors (methods/linear.h), so this file names no method.  So plan.peak[c] is what mem_peak(c)
 * reports after such a run, and plan.accounted_peak what mem_peak_total() reports; the tests
 * check both to the byte for every registered method.  To that it adds an estimate of the memory
 * that is not accounted (the program, its libraries, the GEMM library's per-thread buffers,
 * thread stacks, malloc slack), measured on `loqt bench` runs (docs/memory.md), which gives
 * plan.total: the expected peak resident set size.  Reporting and the search for options that
 * make a run fit live in model/plan_report.c. */
#ifndef LOQT_PLAN_H
#define LOQT_PLAN_H

#include "core/mem.h"
#include "kernels/gemm.h"
#include "methods/linear.h"
#include "model/config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One split of the token data as the loader holds it: the whole split as uint16, and while it is
 * read, one shard more (read whole, then copied in). */
typedef struct {
    uint64_t tokens;     /* all shards */
    uint64_t max_shard;  /* tokens of the largest shard */
} plan_split;

typedef struct {
    llama_config cfg;
    const char *method;       /* a registered method's name (aliases as method_find) */
    method_opts mo;           /* the method's options; mo.optimizer is the optimizer */
    int batch, seq, accum;    /* micro-batch B x T, micro-batches per optimizer step */
    long steps;               /* optimizer steps of the run (decides whether a later LoQT refresh
                               * happens with the optimizer state in place) */
    int threads;              /* OpenMP threads (attention scratch, unaccounted overhead); 0 =
                               * the online cores, as --threads 0 */
    int per_layer_updates;
    int activation_checkpointing;
    int save_original_model;  /* the dense export at the end of `loqt train` */
    int init_from;            /* the model starts from a pretrained checkpoint (--init-from): each
                               * layer's weight passes through a scratch buffer to its init */
    plan_split train, val;    /* data held by the loaders (`loqt train`); zero for `loqt bench` */
    int ranks;                /* data-parallel ranks (accum counts the micro-batches of all of
                               * them); 0 or 1: one process */
    int zero;                 /* --zero 1: optimizer state sharded by unit (model/dp.h) */
    gemm_dtype dtype;         /* --dtype: bf16 adds the GEMM's rounding scratch (per thread) */
} plan_input;

typedef struct {
    plan_input in;
    size_t peak[MEM_NCAT];   /* per category, as mem_peak() */
    size_t accounted_peak;   /* as mem_peak_total(): all categories at the worst moment */
    size_t steady;           /* accounted bytes held during ordinary steps */
    size_t overhead;         /* estimate of unaccounted memory */
    size_t total;            /* accounted_peak + overhead: the expected peak RSS */
    int refresh_with_optim;  /* a refresh happens after the optimizer state exists */
    int rank;                /* data parallel: the rank planned above, the one with the largest
                              * accounted peak (rank 0, which also exports, without --zero) */
    size_t rank_min_accounted; /* the smallest accounted peak of any rank (= accounted_peak in
                                * one process) */
} plan;

/* Defaults: batch 8 x 256, 1 micro-batch, 1000 steps, threads 0, AdamW, method defaults. */
void plan_input_defaults(plan_input *in, const llama_config *cfg, const char *method);

/* Fills p from in.  0, or -1 with loqt_set_error on an impossible input (unknown method, sizes,
 * an option out of its range). */
int plan_make(plan *p, const plan_input *in);

/* 0 if p->total <= max_bytes; else -1 with a one-line error naming the total, the largest
 * categories and the options that would make the run fit. */
int plan_check_fits(const plan *p, size_t max_bytes);

/* The breakdown by category (mem_report's names), then "total: X GiB". */
void plan_print(const plan *p, FILE *f);
/* The same as one JSON object: {"<category>_mib": peak, ..., "accounted_peak_mib",
 * "steady_mib", "overhead_mib", "total_mib"} (the keys of the final record of metrics.jsonl). */
void plan_write_json(const plan *p, FILE *f);

/* The unaccounted memory of a training process with this many threads; heap_churn: large buffers
 * are freed and allocated again every step or refresh (LoQT, per-layer updates without
 * accumulation).  The measured model of docs/memory.md. */
size_t plan_overhead_bytes(int threads, int heap_churn);

/* The papers' memory estimate (weights + optimizer state, everything in 16 bits, each method's
 * layers as its paper_bytes hook counts them), in bytes; 0 when the method has no such hook. */
double plan_paper_estimate(const llama_config *cfg, const char *method, const method_opts *mo);

/* Data parallelism (model/dp.h).  The optimizer-state bytes of one linear layer of this shape and
 * projection (linear_layer.proj) after its first step, from the method's plan hook. */
size_t plan_linear_optim_bytes(const linear_method *lm, int out, int in, int proj, const method_opts *mo);
/* The owner of each unit (llama_unit_count order) under --zero 1, so that the ranks hold about the
 * same optimizer state: units by decreasing optimizer-state bytes (ties: lower unit first), each to
 * the rank with the least so far (ties: lower rank).  0, or -1 with an error. */
int plan_dp_owners(const llama_config *cfg, const linear_method *lm, const method_opts *mo, int ranks, int *owner);
/* The floats of the staging buffer of --zero 1's parameter broadcasts: the largest out x in of the
 * model's projections, at least the trainable values of a layer of every method so far (full and
 * GaLore: W; LoQT: B); dp_init refuses a method whose params_get gives more. */
size_t plan_dp_stage_floats(const llama_config *cfg);

/* "20GiB", "24000MiB", "1.5G", "512M", "123456" (bytes); KiB/MiB/GiB/TiB and K/M/G/T are powers
 * of 1024, KB/MB/GB/TB powers of 1000.  0, or -1 with an error. */
int plan_parse_bytes(const char *s, size_t *out);

#endif
