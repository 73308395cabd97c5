/* Data-parallel training: one copy of the model per rank (core/dist.h), each rank computing the
 * gradient of its own slice of every global batch, the gradients summed across ranks before they
 * are used.
 *
 * What is summed comes from the methods' gradient views (methods/linear.h grad_views): for LoQT B's
 * gradient on ordinary steps and the dense G on refresh steps, for GaLore the dense gradient, for
 * full-rank training every weight's; plus the dense parameters' (embeddings, norms, lm_head).
 * The views of one bucket (lm_head + final norm, each block, the embedding) are reduced as one
 * vector without being copied together.  Under per-layer updates each bucket is reduced inside
 * backward just before its layers are updated.
 *
 * --zero 1 (ZeRO stage 1, the optimizer state sharded): each unit (llama_unit_count: a dense
 * parameter or a linear layer) has one owning rank, chosen by plan_dp_owners from the sizes of the
 * units' trainable values, which alone keeps its optimizer state and updates it.  Its owner_only
 * views are reduced to the owner alone; views every rank needs (a refresh's dense gradient) are
 * summed on every rank, since every rank runs the refresh.  After the update the owners broadcast
 * the units' trainable values (params_get / params_set).  Memory per rank: every optimizer state
 * of its own units and none of the others'; traffic: the same as the all-reduce
 * (docs/data_parallel.md). */
#ifndef LOQT_DP_H
#define LOQT_DP_H

#include "model/llama.h"

typedef struct llama_dp {
    int rank, size; /* of the communication layer */
    int zero;       /* --zero 1 */
    int n_units;
    int *owner;     /* per unit, under --zero 1 */
    float *stage;   /* --zero 1: one linear layer's trainable values (MEM_SCRATCH) */
    size_t stage_n;
} llama_dp;

/* Attaches data parallelism to m (m->dp = dp): 0, or -1 with an error (a method without
 * gradient views or parameter access cannot train data-parallel). */
int dp_init(llama_dp *dp, llama_model *m, int zero);
void dp_free(llama_dp *dp, llama_model *m);
int dp_owns(const llama_dp *dp, int unit);

/* Sums the gradients of the units across ranks (owner_only views to their owners under --zero 1). */
int dp_reduce_units(llama_dp *dp, llama_model *m, const int *units, int n);
int dp_reduce_block(llama_dp *dp, llama_model *m, int l);
/* Every bucket, in backward order. */
int dp_reduce_all(llama_dp *dp, llama_model *m);
/* --zero 1, after an update: every unit's trainable values from its owner to the other ranks. */
int dp_broadcast_params(llama_dp *dp, llama_model *m);
/* Sum over ranks of a few control values. */
int dp_sum(llama_dp *dp, double *x, int n);

#endif
