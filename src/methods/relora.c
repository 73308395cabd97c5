/* ReLoRA: high-rank training through low-rank updates (Lialin et al. 2023).
 *
 * The layer is LoRA's (methods/lora.c, through methods/lora.h), with one addition: after every
 * --relora-steps optimizer updates (after steps R-1, 2R-1, ...; done at the start of steps R, 2R,
 * ..., by begin_step, which every data-parallel rank runs, so --zero 1 works), each layer merges
 * W <- Q(W + s B A) (a quantized base is re-quantized from the merged fp32 matrix), draws A again
 * (kaiming-uniform), sets B = 0 and magnitude-prunes (default, 99% as the reference) or zeroes
 * the optimizer state of A and B, and the whole model's learning rate restarts with a linear warmup
 * over --restart-warmup-steps (the platform's lr_scale hook: the trainer's schedule times
 * min(1, (j + 1) / W) at the j-th step after a merge).
 *
 * Deviations from the reference (Guitaricet/relora), documented in docs/methods.md:
 *   - A is kaiming-uniform from the start; the reference zeroes A at the start (keeping the network
 *     equal to the original), which leaves the first cycle's adapters without a gradient.
 *   - The warmup restarts towards the ordinary schedule's value at each step; the reference's
 *     cosine_restarts scheduler ramps towards the value at the end of the restart warmup, and spends
 *     one update at lr 0 before each merge.  Its cyclical cosine (--cycle_length) and its
 *     full-rank warm start are not offered.
 *   - reset zeroes the moments (the reference prunes 99.9% at random to work around a ZeRO bug);
 *     both keep the bias-correction step count, as the reference does. */
#include "methods/lora.h"

typedef struct {
    lora_config l;
    int relora_steps, restart_warmup_steps, optimizer_reset;
    double prune_ratio;
} relora_config;

static const method_option relora_options[] = {
    LORA_OPTIONS(relora_config, l., 0.1),
    MOPT_I(relora_config, relora_steps, "relora-steps", 1000, 1, 1 << 30, "optimizer steps between merges W <- Q(W + s*B*A) and restarts of A, B (the reference's --relora)"),
    MOPT_I(relora_config, restart_warmup_steps, "restart-warmup-steps", 100, 0, 1 << 30, "after each merge the learning rate ramps up linearly over this many steps (0: no restart warmup)"),
    MOPT_C(relora_config, optimizer_reset, "optimizer-reset", LORA_RESET_PRUNE, "prune|reset", "A's and B's Adam moments at a merge: magnitude-prune them (zero the --prune-ratio smallest of each) or zero them"),
    MOPT_F(relora_config, prune_ratio, "prune-ratio", 0.99, 0, 1, "fraction of each moment tensor zeroed by --optimizer-reset prune (the reference's 0.99)"),
};
_Static_assert(sizeof(relora_config) <= METHOD_CONFIG_BYTES, "relora_config too large");

static lora_spec relora_spec_of(const method_opts *o) {
    relora_config c;
    method_config_get(o, &c, sizeof c);
    lora_spec sp = lora_spec_of(&c.l);
    sp.merge_every = c.relora_steps;
    sp.opt_reset = c.optimizer_reset;
    sp.prune_ratio = c.prune_ratio;
    return sp;
}

static int relora_init(linear_layer *L, const method_opts *o, const linear_init *ini) {
    const lora_spec sp = relora_spec_of(o);
    return lora_engine_init(L, o, ini, &sp);
}

static int relora_calibration(const method_opts *o) {
    const lora_spec sp = relora_spec_of(o);
    return lora_spec_calibration(&sp);
}

static void relora_plan(linear_plan *p, linear_phase phase, mem_sim *s) {
    const lora_spec sp = relora_spec_of(p->o);
    lora_engine_plan(p, phase, s, &sp);
}

/* the first merge step after `after`: the merge of steps ... k R - 1 is in begin_step of k R */
static long relora_next_refresh(const method_opts *o, long after) {
    const lora_spec sp = relora_spec_of(o);
    const long R = sp.merge_every;
    return (after / R + 1) * R;
}

/* the restarted warmup: the j-th step after a merge gets min(1, (j + 1) / W) of the schedule */
static double relora_lr_scale(const method_opts *o, long step) {
    relora_config c;
    method_config_get(o, &c, sizeof c);
    const long R = c.relora_steps, W = c.restart_warmup_steps;
    if (W <= 0 || step < R) return 1.0;
    const long j = step % R;
    return j < W ? (double)(j + 1) / (double)W : 1.0;
}

static double relora_paper_bytes(int out, int in, int proj, const method_opts *o) {
    const lora_spec sp = relora_spec_of(o);
    return lora_engine_paper_bytes(out, in, proj, &sp);
}

const linear_method method_relora = {
    .name = "relora",
    .summary = "ReLoRA: LoRA whose adapters are merged into the base every --relora-steps steps and restarted (optimizer state pruned, warmup restarted)",
    .options = relora_options,
    .n_options = sizeof relora_options / sizeof relora_options[0],
    .config_size = sizeof(relora_config),
    .heap_churn = 1, /* each merge frees and allocates a dense fp32 copy of W */
    .init = relora_init,
    .calibration = relora_calibration,
    LORA_ENGINE_HOOKS,
    .plan = relora_plan,
    .next_refresh = relora_next_refresh,
    .lr_scale = relora_lr_scale,
    .paper_bytes = relora_paper_bytes,
};
