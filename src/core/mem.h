/* Accounted memory.
 *
 * Every large buffer in loqt is allocated through mem_alloc() with a category, so a run can print
 * where its memory went and compare the sum with the process's peak resident set size.  Small
 * bookkeeping structs use plain malloc. */
#ifndef LOQT_MEM_H
#define LOQT_MEM_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    MEM_QWEIGHTS,    /* quantized (packed) weight codes */
    MEM_QSTATE,      /* quantization state: absmax, scales, zero points */
    MEM_FACTORS,     /* trainable low-rank factors and frozen projections */
    MEM_DENSE,       /* dense parameters: embeddings, norms, lm_head, full-rank linears */
    MEM_GRADS,       /* gradients */
    MEM_OPTIM,       /* optimizer state */
    MEM_ACTS,        /* activations kept for backward */
    MEM_SCRATCH,     /* temporary work buffers */
    MEM_DATA,        /* tokenizer, data shards, I/O buffers */
    MEM_NCAT
} mem_cat;

const char *mem_cat_name(mem_cat c); /* "quantized weights" */
const char *mem_cat_key(mem_cat c);  /* "quantized_weights" (JSON keys) */

/* 64-byte aligned, zero-filled.  Exits with a clear message if the allocation fails (an
 * out-of-memory in the middle of training cannot be recovered from; the planner exists to refuse
 * such runs before they start). */
void *mem_alloc(mem_cat c, size_t bytes);
/* Like mem_alloc but returns NULL (with loqt_set_error) instead of exiting. */
void *mem_try_alloc(mem_cat c, size_t bytes);
void mem_free(void *p);
size_t mem_size(const void *p);
mem_cat mem_category(const void *p);

size_t mem_current(mem_cat c);
size_t mem_peak(mem_cat c);
size_t mem_current_total(void);
size_t mem_peak_total(void);

/* Peak resident set size of this process in bytes (getrusage). */
size_t mem_peak_rss(void);
/* Current resident set size in bytes (/proc/self/statm), 0 if unknown. */
size_t mem_current_rss(void);
/* Physical memory of the machine in bytes, 0 if unknown. */
size_t mem_physical(void);

/* Starts the per-category and total peaks again from what is held now (tests measure one phase
 * at a time). */
void mem_peak_reset(void);

/* One grow-only work buffer (MEM_SCRATCH) shared by the linear methods: layers run one at a
 * time, so one buffer of the largest size any of them asked for serves all.  The pointer is
 * valid until the next call that asks for more, or mem_workspace_release(). */
void *mem_workspace(size_t bytes);
void mem_workspace_release(void);

/* A byte counter that replays allocations as mem_alloc / mem_free count them, for the memory
 * planner: each allocation of the real code has its twin here, fed by the same size function. */
typedef struct {
    size_t cur[MEM_NCAT], peak[MEM_NCAT], total, peak_total;
    size_t workspace; /* size of the mem_workspace() buffer */
} mem_sim;
void mem_sim_alloc(mem_sim *s, mem_cat c, size_t bytes);
void mem_sim_free(mem_sim *s, mem_cat c, size_t bytes);
void mem_sim_temp(mem_sim *s, mem_cat c, size_t bytes); /* allocated and freed before the next */
void mem_sim_workspace(mem_sim *s, size_t bytes);       /* mem_workspace(bytes) */
void mem_sim_workspace_release(mem_sim *s);

/* Prints a table: category, current, peak; then accounted peak and measured peak RSS. */
void mem_report(FILE *f);
/* The same as a JSON object (no trailing newline). */
void mem_report_json(FILE *f);

#endif
