/* Q-GaLore: GaLore with the weights held only as int8 and the projection as packed int4, and a
 * refresh gap that grows per layer while its subspace stops moving (Zhang et al. 2024).
 *
 * The layer is GaLore's (methods/galore.c, its engine through methods/galore.h); what differs:
 *   W   int8, asymmetric per group of 256 elements (scale + zero point, quant/qint.h qasym).  An
 *       update dequantizes a tile of whole groups into the work buffer, adds the back-projected
 *       Adam step and re-quantizes the tile with fresh group ranges and stochastic rounding
 *       (counter-based: reproducible), so no fp32 copy of W ever exists; the random initial W is
 *       drawn and quantized by tiles too.
 *   P   packed int4 (two codes per byte), group 256, dequantized into the work buffer when used.
 *       Groups of one sign keep 0 in their range (qasym), where the reference's zero-point clamp
 *       clips them.
 *   gap at each refresh |cos| of the old and new top singular vectors enters a queue of
 *       --queue-size; when the queue is full and its mean is >= --cos-threshold, the layer's gap
 *       becomes int(gap * --gamma-proj).  The reference compares signed cosines, but a singular
 *       vector's sign is arbitrary (a trap); the queue survives a change, as in the reference.
 *       The next refresh is the gap after the last one (the reference waits for the next
 *       multiple of the new gap).
 *   8-bit Adam with betas (0.9, 0.95) and lr 0.015 by default, the reference's settings; the
 *       command line overrides them (run_defaults). */
#include "methods/galore.h"

enum { PROJ_INT4, PROJ_INT8, PROJ_FP32 };

typedef struct {
    int rank, update_proj_gap;
    double galore_scale;
    int galore_state, proj_bits, stochastic_round, queue_size;
    double cos_threshold, gamma_proj;
    int svd;
} qgalore_config;

static const method_option qgalore_options[] = {
    MOPT_I(qgalore_config, rank, "rank", 128, 1, 1 << 20, "rank r of the gradient projection (at most the layer's smaller side)"),
    MOPT_I(qgalore_config, update_proj_gap, "update-proj-gap", 200, 1, 1 << 30, "initial steps between refreshes of P (step 0 is one); each layer's gap then grows by --gamma-proj while its subspace stays"),
    MOPT_F(qgalore_config, galore_scale, "galore-scale", 0.25, 1e-6, 1e6, "scale of the back-projected update"),
    MOPT_C(qgalore_config, galore_state, "galore-state", GALORE_STATE_RESET, "keep|project|reset", "Adam's moments when P changes: keep (the reference), project into the new basis, or reset (as --method galore)"),
    MOPT_C(qgalore_config, proj_bits, "proj-bits", PROJ_INT4, "4|8|32", "storage of P: packed int4 or int8 (asymmetric, group 256), or fp32"),
    MOPT_B(qgalore_config, stochastic_round, "stochastic-round", 1, "re-quantize W with stochastic rounding after each update (off: round to nearest, the paper's ablation)"),
    MOPT_I(qgalore_config, queue_size, "queue-size", 5, 1, GALORE_QUEUE_MAX, "refreshes whose |cos| of successive top singular vectors are averaged"),
    MOPT_F(qgalore_config, cos_threshold, "cos-threshold", 0.4, 0, 1, "a full queue with mean |cos| at least this multiplies the layer's gap"),
    MOPT_F(qgalore_config, gamma_proj, "gamma-proj", 2, 1, 1000, "factor of the gap when the subspace stays (1: a fixed gap)"),
    MOPT_C(qgalore_config, svd, "svd", GALORE_SVD_RANDOMIZED, "randomized|exact", "SVD of the gradient: randomized range finder, or exact one-sided Jacobi (slow; small layers, tests)"),
};
_Static_assert(sizeof(qgalore_config) <= METHOD_CONFIG_BYTES, "qgalore_config too large");

static galore_spec qgalore_spec_of(const method_opts *o) {
    qgalore_config c;
    method_config_get(o, &c, sizeof c);
    static const qmat_kind pk[] = {QMAT_INT4, QMAT_INT8, QMAT_F32};
    return (galore_spec){.rank = c.rank, .gap = c.update_proj_gap, .scale = c.galore_scale, .moments = c.galore_state,
                         .svd = c.svd, .wk = QMAT_INT8, .pk = pk[c.proj_bits], .stochastic = c.stochastic_round,
                         .queue_size = c.queue_size, .cos_threshold = c.cos_threshold, .gamma = c.gamma_proj};
}

static int qgalore_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    const galore_spec sp = qgalore_spec_of(o);
    return galore_engine_init(L, o, ini, &sp);
}

static void qgalore_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    const galore_spec sp = qgalore_spec_of(p->o);
    galore_engine_plan(p, phase, s, &sp);
}

static long qgalore_next_refresh(const method_opts *o, long after) {
    const galore_spec sp = qgalore_spec_of(o);
    return galore_engine_next_refresh(&sp, after);
}

/* As the Q-GaLore paper counts: W in 8 bits, P in its bits, Adam's two moments of R in 8 bits
 * (16 with --optimizer adamw); scales and zero points are left out, as the papers leave them. */
static double qgalore_paper_bytes(int out, int in, int proj, const method_opts *o) {
    (void)proj; /* every projection alike */
    const galore_spec sp = qgalore_spec_of(o);
    const galore_geom g = galore_geom_of(out, in, &sp);
    const double p_bytes = sp.pk == QMAT_INT4 ? 0.5 : sp.pk == QMAT_INT8 ? 1.0 : 2.0;
    const double moment_bytes = o->optimizer == OPTIM_ADAM8BIT ? 2.0 : 4.0;
    return (double)g.n + p_bytes * (double)g.nP + moment_bytes * (double)g.nR;
}

static const method_run_default qgalore_run_defaults[] = {
    {"optimizer", "adam8bit"},
    {"beta2", "0.95"},
    {"lr", "0.015"},
    {NULL, NULL},
};

const linear_method method_qgalore = {
    .name = "qgalore",
    .summary = "Q-GaLore: GaLore with int8 weights (stochastic rounding, no fp32 copy), an int4 projection and a per-layer refresh gap that grows while the subspace stays",
    .options = qgalore_options,
    .n_options = sizeof qgalore_options / sizeof qgalore_options[0],
    .config_size = sizeof(qgalore_config),
    .heap_churn = 1, /* the refresh frees and allocates the SVD's buffers (docs/memory.md) */
    .init = qgalore_init,
    GALORE_ENGINE_HOOKS,
    .plan = qgalore_plan,
    .next_refresh = qgalore_next_refresh,
    .paper_bytes = qgalore_paper_bytes,
    .run_defaults = qgalore_run_defaults,
};
