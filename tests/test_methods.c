/* One test over every registered method (in the spirit of llama.cpp's test-backend-ops): for
 * each method and both layouts (in <= out, in > out) of a layer,
 *   - forward and dX against a dense layer holding export_dense,
 *   - a dense initial weight (fine-tuning) reproduced by export_dense,
 *   - the trainable gradients against central finite differences, and the gradient views,
 *   - a save/load round trip that continues bit for bit (resume),
 *   - release_grads returning the gradient memory, the next backward giving the same gradient,
 *   - skip_step discarding a step's gradients (and refresh buffers),
 *   - end_step not reading the views marked owner_only (data parallelism with --zero 1),
 *   - the planning hook equal to the real allocations, phase by phase, to the byte,
 *   - and in a tiny model, per-layer updates with accumulation equal to the ordinary step,
 *   - and --dtype bf16 (bf16 GEMMs in forward and backward) training with a finite loss near fp32's.
 * Each method supplies only its tolerances (and the options that make a check meaningful); a
 * registered method without an entry, or an entry without a method, fails. */
#include "test.h"

#include "core/choices.h"

#include "core/error.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "methods/linear.h"
#include "model/train.h"

#include <stdlib.h>
#include <unistd.h>

typedef struct {
    const char *method;
    double fwd_tol;  /* forward and dX against the dense layer, relative to max |Y| (|dX|) */
    double init_tol; /* export_dense after init from W0, relative to max |W0| */
    double fd_tol;   /* directional derivative against central differences, relative */
    const char *opts[4];    /* "name=value" set for every check */
    const char *variant[4]; /* a second setting, run by the forward, resume and plan checks too */
} method_entry;

static const method_entry entries[] = {
    {"full", 1e-5, 0, 1e-3, {NULL}, {NULL}},
    /* NF4 W: the initial weight within half the code book's widest gap (0.1385 of a block's
     * absmax); fp32 B so that finite differences see the perturbation (bf16 would round it) */
    {"loqt", 1e-5, 0.139, 1e-3, {"lowrank-dtype=fp32", NULL},
     {"use-double-quant=1", "quantize-projection-matrix=none", "compensate-quant-error-iterations=2", "lowrank-dtype=bf16"}},
    /* bf16 weights: forward and dX come from the stored (rounded) weights, as export_dense's do */
    {"galore", 1e-5, 0, 1e-3, {NULL}, {"weight-dtype=bf16", "galore-state=project", NULL}},
    /* int8 W (group 256): the initial weight within one step of its group, (max - min) / 255 <=
     * 2 max|W0| / 255 (half a step from rounding, up to a whole one where the zero point's
     * rounding pushes the top code past 255); finite differences perturb W by about 3 int8 steps
     * and params_set rounds the perturbed weights to the grid again, so the difference quotient
     * is off by the rounding error over the perturbation (0.11 and 0.009 measured for the two
     * shapes, tolerance 0.15; a wrong gradient is off by order 1);
     * variant: int8 P, round to nearest, the projected moments, a queue of 2 (full at the third
     * refresh, after which the gap may grow: inside the resume check, after the plan check's
     * three refreshes, which the planner cannot foresee being skipped) */
    {"qgalore", 1e-5, 2.0 / 255, 0.15, {NULL},
     {"proj-bits=8", "stochastic-round=0", "galore-state=project", "queue-size=2"}},
    /* 8-bit activations: the forward differs from y = x W_eff^T by their rounding (measured
     * 3.6e-3 of max|Y|; dX, passed straight through, exact).  Absmean init clips every weight
     * beyond mean|W0| (the paper's init): 1 - mean|W0| / max|W0| = 0.76-0.78 here, a
     * bound that an init off by a sign or a scale still fails (the exact init is in
     * test_dqt.c).  Finite differences are exact: the check uses the perturbation the grid
     * stored (the loss is linear in the dequantized weights). */
    {"dqt", 1e-2, 0.8, 1e-3, {"bits=8", NULL}, {"bits=ternary", "scale=per-row", "act-quant=none", NULL}},
    /* straight-through: finite differences in the effective weights (see check_finite_differences),
     * exact with fp32 activations (measured 2e-6); the variant's 8-bit activations as dqt's
     * (4.1e-3).  init: ternary absmean clips as dqt's does, to {-1, 0, 1} * mean|W0| */
    {"bitnet", 1e-2, 0.8, 1e-3, {"act-quant=none", NULL}, {"act-quant=int8", NULL}},
    /* int8 base (the initial weight within one step of its group, as qgalore's); dropout on, so
     * finite differences check the masked gradients (the loss is bilinear in A and B, so central
     * differences are exact but for rounding); variant: the QLoRA base (NF4, double quantization)
     * from LoftQ, rsLoRA's scale */
    {"lora", 1e-5, 2.0 / 255, 1e-3, {"base-bits=8", "lora-dropout=0.1", NULL},
     {"base-bits=4", "use-double-quant=1", "init=loftq", "rslora=1"}},
    /* bf16 base: the initial weight within half a bf16 step (2^-8 of the power of two at or below
     * |w|, so at most 2^-8 of max|W0|; 0.0025 to 0.0027 measured); a merge every 2
     * steps (in begin_step of steps 2, 4), so the resume and plan checks cross merges (with the
     * default pruning of the moments); variant: NF4 base re-quantized at each merge, moments
     * zeroed, no dropout, a merge every 3 steps: the checkpoint after step 2 holds the unmerged
     * base and adapters, and the resumed begin_step of step 3 merges them */
    {"relora", 1e-5, 1.0 / 256, 1e-3, {"relora-steps=2", NULL},
     {"base-bits=4", "optimizer-reset=reset", "lora-dropout=0", "relora-steps=3"}},
};
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

static const method_entry *entry_of(const char *name) {
    for (int i = 0; i < N_ENTRIES; i++)
        if (!strcmp(entries[i].method, name)) return &entries[i];
    return NULL;
}

static void set_opt(method_opts *o, const linear_method *m, const char *name, double v) {
    const method_option *opt = method_option_find(m, name);
    if (opt) method_option_set(o, opt, v);
}

/* set by the loops below: apply the entry's variant settings on top of its options */
static int use_variant;

/* the method's test options: its entry's (and its variant's), plus a refresh gap */
static method_opts opts_for(const linear_method *m, const method_entry *e, int gap) {
    method_opts o;
    method_opts_defaults(&o, m);
    o.seed = 5;
    set_opt(&o, m, "rank", 6);
    set_opt(&o, m, "update-proj-gap", gap);
    for (int i = 0; i < 8; i++) {
        const char *kv = i < 4 ? e->opts[i] : use_variant ? e->variant[i - 4] : NULL;
        if (!kv) continue;
        char name[64];
        const char *eq = strchr(kv, '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
        const method_option *opt = method_option_find(m, name);
        CHECK(opt != NULL, "%s: entry option %s", m->name, name);
        if (!opt) continue;
        method_option_set(&o, opt, opt->type == MOPT_CHOICE ? choice_index(opt->choices, eq + 1) : atof(eq + 1));
    }
    CHECK(method_config_validate(m, &o) == 0, "%s: options: %s", m->name, loqt_last_error());
    return o;
}

typedef struct {
    int out, in, N;
    float *X, *dY, *Y, *dX, *W;
} layer_data;

static layer_data data_for(int out, int in, int N, uint64_t stream) {
    layer_data d = {out, in, N, NULL, NULL, NULL, NULL, NULL};
    d.X = malloc(sizeof(float) * N * in);
    d.dY = malloc(sizeof(float) * N * out);
    d.Y = malloc(sizeof(float) * N * out);
    d.dX = malloc(sizeof(float) * N * in);
    d.W = malloc(sizeof(float) * out * in);
    for (int i = 0; i < N * in; i++) d.X[i] = rng_normal(31, stream, (uint64_t)i);
    for (int i = 0; i < N * out; i++) d.dY[i] = rng_normal(32, stream, (uint64_t)i);
    return d;
}

static void data_free(layer_data *d) { free(d->X), free(d->dY), free(d->Y), free(d->dX), free(d->W); }

static void make(linear_layer *L, const linear_method *m, const method_opts *o, int out, int in,
                 const float *W0) {
    memset(L, 0, sizeof *L);
    L->m = m;
    L->out = out;
    L->in = in;
    snprintf(L->name, sizeof L->name, "model.layers.0.test_%dx%d", out, in);
    linear_init ini = {.W0 = W0};
    CHECK(m->init(L, o, &ini) == 0, "%s init: %s", m->name, loqt_last_error());
}

/* One optimizer step on (X, dY): begin, backward, end, update. */
static void one_step(linear_layer *L, const layer_data *d, long step) {
    const linear_method *m = L->m;
    optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f,
                       .grad_scale = 1.0f, .t = step + 1};
    m->zero_grad(L);
    if (m->begin_step) m->begin_step(L, step);
    m->backward(L, d->X, d->dY, NULL, d->N, 0);
    if (m->end_step) CHECK(m->end_step(L, step) == 0, "%s end_step: %s", m->name, loqt_last_error());
    CHECK(m->step(L, &h) == 0, "%s step: %s", m->name, loqt_last_error());
}

static double max_abs(const float *x, size_t n) {
    double a = 0;
    for (size_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

/* forward and dX of the method against y = x W_eff^T with W_eff from export_dense, after two
 * steps (so low-rank factors are non-zero), at N tokens */
static void check_forward_backward_at(const linear_method *m, const method_entry *e, int out, int in, int N) {
    method_opts o = opts_for(m, e, 1000);
    layer_data d = data_for(out, in, N, (uint64_t)out * 7 + in);
    linear_layer L;
    make(&L, m, &o, out, in, NULL);
    one_step(&L, &d, 0);
    one_step(&L, &d, 1);
    m->export_dense(&L, d.W);
    float *Yr = malloc(sizeof(float) * d.N * out), *dXr = malloc(sizeof(float) * d.N * in);
    gemm(false, true, d.N, out, in, 1.0f, d.X, in, d.W, in, 0.0f, Yr, out);
    gemm(false, false, d.N, in, out, 1.0f, d.dY, out, d.W, in, 0.0f, dXr, in);
    m->forward(&L, d.X, d.Y, d.N);
    m->zero_grad(&L);
    m->backward(&L, d.X, d.dY, d.dX, d.N, 0);
    double ey = max_diff(d.Y, Yr, (size_t)d.N * out) / max_abs(Yr, (size_t)d.N * out);
    double ex = max_diff(d.dX, dXr, (size_t)d.N * in) / max_abs(dXr, (size_t)d.N * in);
    CHECK(ey <= e->fwd_tol, "%s %dx%d, %d tokens: forward %.3g of max|Y| (tolerance %g)", m->name, out, in, N, ey, e->fwd_tol);
    CHECK(ex <= e->fwd_tol, "%s %dx%d, %d tokens: dX %.3g of max|dX| (tolerance %g)", m->name, out, in, N, ex, e->fwd_tol);
    /* accumulate = 1 adds to dX */
    for (int i = 0; i < d.N * in; i++) dXr[i] = 2 * d.dX[i];
    m->backward(&L, d.X, d.dY, d.dX, d.N, 1);
    CHECK(max_diff(d.dX, dXr, (size_t)d.N * in) <= 1e-5 * max_abs(dXr, (size_t)d.N * in), "%s accumulate dX", m->name);
    m->free(&L);
    free(Yr), free(dXr);
    data_free(&d);
}

/* a few tokens and many: a method may choose its products by the token count (LoQT folds s B P
 * into W's dequantized rows when in out < N (in + out): at 4 tokens neither test shape does, at
 * 64 both) */
static void check_forward_backward(const linear_method *m, const method_entry *e, int out, int in) {
    check_forward_backward_at(m, e, out, in, 4);
    check_forward_backward_at(m, e, out, in, 64);
}

static void check_dense_init(const linear_method *m, const method_entry *e, int out, int in) {
    method_opts o = opts_for(m, e, 1000);
    float *W0 = malloc(sizeof(float) * out * in), *W = malloc(sizeof(float) * out * in);
    for (int i = 0; i < out * in; i++) W0[i] = 0.05f * rng_normal(33, 1, (uint64_t)i);
    linear_layer L;
    make(&L, m, &o, out, in, W0);
    m->export_dense(&L, W);
    double err = max_diff(W, W0, (size_t)out * in) / max_abs(W0, (size_t)out * in);
    CHECK(err <= e->init_tol, "%s %dx%d: init from a dense W0 off by %.3g of max|W0| (tolerance %g)",
          m->name, out, in, err, e->init_tol);
    m->free(&L);
    free(W0), free(W);
}

/* sum(Y o C) for the layer's forward */
static double loss_of(linear_layer *L, const layer_data *d) {
    L->m->forward(L, d->X, d->Y, d->N);
    double s = 0;
    for (int i = 0; i < d->N * L->out; i++) s += (double)d->Y[i] * d->dY[i];
    return s;
}

/* sum(Y o dY) of the dense layer y = x W^T */
static double dense_loss(const layer_data *d, const float *W) {
    float *Y = malloc(sizeof(float) * d->N * d->out);
    gemm(false, true, d->N, d->out, d->in, 1.0f, d->X, d->in, W, d->in, 0.0f, Y, d->out);
    double s = 0;
    for (int i = 0; i < d->N * d->out; i++) s += (double)Y[i] * d->dY[i];
    free(Y);
    return s;
}

/* The loss at theta + eps u (sign +1) or theta - eps u; the parameters the method actually holds
 * then go to t2.  A method whose parameters live on a grid stores the perturbation rounded, so
 * the check compares the differences with the gradient along the stored perturbation.  For a
 * straight-through method the loss is piecewise constant in its latent parameters: the
 * differences are taken in the effective weights (export_dense), on the dense layer, which is
 * what the estimator claims the gradient is the derivative of. */
static double perturbed_loss(linear_layer *L, const layer_data *d, const float *theta, const float *u,
                             double eps, int sign, size_t np, float *t2) {
    for (size_t k = 0; k < np; k++) t2[k] = (float)(theta[k] + sign * eps * u[k]);
    if (L->m->straight_through) return dense_loss(d, t2);
    L->m->params_set(L, t2);
    L->m->params_get(L, t2);
    return loss_of(L, d);
}

static void check_finite_differences(const linear_method *m, const method_entry *e, int out, int in) {
    method_opts o = opts_for(m, e, 1000);
    layer_data d = data_for(out, in, 16, (uint64_t)out * 11 + in);
    linear_layer L;
    make(&L, m, &o, out, in, NULL);
    one_step(&L, &d, 0); /* step 0 refreshes: factors exist from here */
    CHECK(m->params_get && m->params_set && m->grad_views, "%s: params_get/params_set/grad_views", m->name);
    if (!m->params_get || !m->params_set || !m->grad_views) return;
    /* an ordinary step's gradient of sum(Y o dY) */
    if (m->begin_step) m->begin_step(&L, 1);
    m->zero_grad(&L);
    m->backward(&L, d.X, d.dY, NULL, d.N, 0);
    grad_view v[4];
    int nv = m->grad_views(&L, v, 4);
    size_t np = m->params_get(&L, NULL), ng = 0;
    double sq = 0;
    for (int i = 0; i < nv; i++) {
        ng += v[i].n;
        for (size_t k = 0; k < v[i].n; k++) sq += (double)v[i].data[k] * v[i].data[k];
    }
    CHECK(nv >= 1 && ng == np, "%s: gradient views cover the %zu trainable values (%zu in %d views)", m->name, np, ng, nv);
    CHECK_CLOSE(sq, m->grad_sqnorm(&L), 0, 1e-6);
    if (ng != np) return;
    CHECK(!m->straight_through || np == (size_t)out * in, "%s: straight-through parameters are the %d x %d weights", m->name, out, in);
    float *theta = malloc(sizeof(float) * np), *tp = malloc(sizeof(float) * np), *tm = malloc(sizeof(float) * np),
          *g = malloc(sizeof(float) * np);
    for (int i = 0, off = 0; i < nv; off += (int)v[i].n, i++) memcpy(g + off, v[i].data, sizeof(float) * v[i].n);
    if (m->straight_through) m->export_dense(&L, theta);
    else m->params_get(&L, theta);
    /* directional derivative along a random direction; the loss is linear in every method's
     * trainable values, so central differences are exact but for rounding */
    const double eps = 1e-2 * max_abs(theta, np) + 1e-3;
    float *u = calloc(np, sizeof(float));
    for (size_t k = 0; k < np; k++) u[k] = rng_normal(34, (uint64_t)out, k);
    double lp = perturbed_loss(&L, &d, theta, u, eps, 1, np, tp);
    double lm = perturbed_loss(&L, &d, theta, u, eps, -1, np, tm);
    if (!m->straight_through) m->params_set(&L, theta);
    double dir = 0, moved = 0, asked = 0;
    for (size_t k = 0; k < np; k++) {
        dir += (double)g[k] * ((double)tp[k] - tm[k]) / (2 * eps);
        moved += fabs((double)tp[k] - tm[k]);
        asked += 2 * eps * fabs((double)u[k]);
    }
    /* a grid that rounded the perturbation away would make the check vacuous */
    CHECK(moved >= 0.5 * asked, "%s %dx%d: the stored perturbation moved the parameters by %.3g in all, %.3g asked",
          m->name, out, in, moved, asked);
    double fd = (lp - lm) / (2 * eps);
    CHECK(fabs(fd - dir) <= e->fd_tol * fmax(fabs(dir), 1e-3), "%s %dx%d: directional derivative %.7g, finite difference %.7g (tolerance %g relative)",
          m->name, out, in, dir, fd, e->fd_tol);
    m->free(&L);
    free(theta), free(tp), free(tm), free(g), free(u);
    data_free(&d);
}

/* Steps 0..5 with a save after step 2; a fresh layer loaded from it repeats steps 3..5 exactly. */
static void check_save_load_resume(const linear_method *m, const method_entry *e, int out, int in) {
    method_opts o = opts_for(m, e, 2);
    char dir[256];
    CHECK(test_make_tmpdir(dir, sizeof dir, "methods") == 0, "tmpdir");
    char pm[300], ps[300];
    snprintf(pm, sizeof pm, "%s/model.safetensors", dir);
    snprintf(ps, sizeof ps, "%s/state.safetensors", dir);
    linear_layer A, B;
    make(&A, m, &o, out, in, NULL);
    layer_data d[6];
    double la[6], lb[6];
    for (int s = 0; s < 6; s++) {
        d[s] = data_for(out, in, 12, (uint64_t)(100 + s));
        la[s] = loss_of(&A, &d[s]);
        one_step(&A, &d[s], s);
        if (s == 2) {
            st_writer *wm = st_writer_new(), *ws = st_writer_new();
            m->save(&A, wm, ws);
            CHECK(st_writer_write(wm, pm) == 0 && st_writer_write(ws, ps) == 0, "write: %s", loqt_last_error());
            st_writer_free(wm);
            st_writer_free(ws);
        }
    }
    make(&B, m, &o, out, in, NULL);
    st_file fm, fs;
    CHECK(st_open(&fm, pm) == 0 && st_open(&fs, ps) == 0, "open: %s", loqt_last_error());
    CHECK(m->load(&B, &fm, &fs) == 0, "%s load: %s", m->name, loqt_last_error());
    st_close(&fm);
    st_close(&fs);
    for (int s = 3; s < 6; s++) {
        lb[s] = loss_of(&B, &d[s]);
        one_step(&B, &d[s], s);
        CHECK(la[s] == lb[s], "%s %dx%d resumed step %d: loss %.9g, uninterrupted %.9g", m->name, out, in, s, lb[s], la[s]);
    }
    float *Wa = malloc(sizeof(float) * out * in), *Wb = malloc(sizeof(float) * out * in);
    m->export_dense(&A, Wa);
    m->export_dense(&B, Wb);
    CHECK(max_diff(Wa, Wb, (size_t)out * in) == 0, "%s %dx%d: resumed weights differ", m->name, out, in);
    m->free(&A);
    m->free(&B);
    free(Wa), free(Wb);
    for (int s = 0; s < 6; s++) data_free(&d[s]);
    unlink(pm);
    unlink(ps);
    rmdir(dir);
}

static void check_release_grads(const linear_method *m, const method_entry *e, int out, int in) {
    method_opts o = opts_for(m, e, 1000);
    layer_data d = data_for(out, in, 8, 7);
    linear_layer L;
    make(&L, m, &o, out, in, NULL);
    one_step(&L, &d, 0);
    if (m->begin_step) m->begin_step(&L, 1);
    m->zero_grad(&L);
    m->backward(&L, d.X, d.dY, NULL, d.N, 0);
    const double g1 = m->grad_sqnorm(&L);
    CHECK(m->release_grads != NULL, "%s: release_grads", m->name);
    if (m->release_grads) {
        size_t had[MEM_NCAT] = {0}, bytes[MEM_NCAT] = {0};
        m->mem_bytes(&L, had);
        const size_t accounted = mem_current(MEM_GRADS);
        m->release_grads(&L);
        m->mem_bytes(&L, bytes);
        CHECK(bytes[MEM_GRADS] == 0, "%s: %zu gradient bytes after release_grads", m->name, bytes[MEM_GRADS]);
        CHECK(had[MEM_GRADS] > 0 && accounted - mem_current(MEM_GRADS) == had[MEM_GRADS],
              "%s: release_grads returned %zu of the %zu gradient bytes to the allocator", m->name,
              accounted - mem_current(MEM_GRADS), had[MEM_GRADS]);
        m->backward(&L, d.X, d.dY, NULL, d.N, 0);
        CHECK(m->grad_sqnorm(&L) == g1, "%s: the gradient after release_grads %.9g, before %.9g", m->name, m->grad_sqnorm(&L), g1);
    }
    m->free(&L);
    data_free(&d);
}

/* skip_step (a step with a non-finite loss): the step's gradients are gone, refresh buffers
 * freed, and the next step runs as if the skipped one had not begun. */
static void check_skip_step(const linear_method *m, const method_entry *e, int out, int in) {
    method_opts o = opts_for(m, e, 1); /* every step a refresh step */
    layer_data d = data_for(out, in, 8, 8);
    linear_layer L;
    make(&L, m, &o, out, in, NULL);
    one_step(&L, &d, 0);
    size_t b0[MEM_NCAT] = {0}, b1[MEM_NCAT] = {0};
    m->mem_bytes(&L, b0);
    if (m->begin_step) m->begin_step(&L, 1);
    m->zero_grad(&L);
    m->backward(&L, d.X, d.dY, NULL, d.N, 0);
    if (m->skip_step) m->skip_step(&L);
    else m->zero_grad(&L);
    m->mem_bytes(&L, b1);
    CHECK(m->grad_sqnorm(&L) == 0, "%s: a gradient survived skip_step", m->name);
    CHECK(b1[MEM_GRADS] <= b0[MEM_GRADS], "%s: skip_step left %zu gradient bytes (before the step %zu)", m->name,
          b1[MEM_GRADS], b0[MEM_GRADS]);
    one_step(&L, &d, 2);
    m->free(&L);
    data_free(&d);
}

/* owner_only gradient views (linear.h): end_step must not read them, since under --zero 1 only
 * the owning rank holds their sums.  Two identical layers run the same steps; before end_step one
 * of them has its owner_only views replaced, after it they are put back; the update that follows
 * must then leave both layers identical (bit for bit).  Checked on an ordinary step and on a
 * refresh step (a refresh that read such a view would choose another projection).  "Doubled" is
 * not enough (an SVD does not see a scale): the views are replaced by random values. */
static void owner_only_step(linear_layer *A, linear_layer *B, const layer_data *d, long step) {
    const linear_method *m = A->m;
    optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f,
                       .grad_scale = 1.0f, .t = step + 1};
    linear_layer *both[2] = {A, B};
    for (int k = 0; k < 2; k++) {
        m->zero_grad(both[k]);
        if (m->begin_step) m->begin_step(both[k], step);
        m->backward(both[k], d->X, d->dY, NULL, d->N, 0);
    }
    grad_view v[4];
    float *saved[4] = {NULL};
    const int nv = m->grad_views(B, v, 4);
    for (int i = 0; i < nv; i++)
        if (v[i].owner_only) {
            saved[i] = malloc(sizeof(float) * v[i].n);
            memcpy(saved[i], v[i].data, sizeof(float) * v[i].n);
            for (size_t k = 0; k < v[i].n; k++) v[i].data[k] = rng_normal(35, (uint64_t)i, k); /* another gradient */
        }
    for (int k = 0; k < 2; k++)
        if (m->end_step) CHECK(m->end_step(both[k], step) == 0, "%s end_step: %s", m->name, loqt_last_error());
    grad_view after[4];
    const int na = m->grad_views(B, after, 4);
    for (int i = 0; i < nv; i++) {
        /* put back only into a buffer that is still a view (a method that freed it fails below) */
        for (int k = 0; saved[i] && k < na; k++)
            if (after[k].data == v[i].data && after[k].n == v[i].n) memcpy(v[i].data, saved[i], sizeof(float) * v[i].n);
        free(saved[i]);
    }
    for (int k = 0; k < 2; k++) CHECK(m->step(both[k], &h) == 0, "%s step: %s", m->name, loqt_last_error());
}

static void check_owner_only_views(const linear_method *m, const method_entry *e, int out, int in) {
    if (!m->grad_views) return;
    for (int refresh = 0; refresh < 2; refresh++) {
        method_opts o = opts_for(m, e, 2); /* refreshes at 0, 2, 4, ... */
        layer_data d = data_for(out, in, 8, 13);
        linear_layer A, B;
        make(&A, m, &o, out, in, NULL);
        make(&B, m, &o, out, in, NULL);
        const long last = refresh ? 2 : 1;
        for (long s = 0; s < last; s++) {
            one_step(&A, &d, s);
            one_step(&B, &d, s);
        }
        owner_only_step(&A, &B, &d, last);
        m->export_dense(&A, d.W);
        float *WB = malloc(sizeof(float) * out * in);
        m->export_dense(&B, WB);
        CHECK(max_diff(d.W, WB, (size_t)out * in) == 0, "%s %dx%d: end_step of a%s step reads an owner_only gradient view",
              m->name, out, in, refresh ? " refresh" : "n ordinary");
        free(WB);
        m->free(&A);
        m->free(&B);
        data_free(&d);
    }
}

/* ---- the planning hook against the real allocations ------------------------------------- */

static int sim_matches(const mem_sim *s, const size_t base[MEM_NCAT], size_t base_total, const char *what) {
    int ok = 1;
    for (int c = 0; c < MEM_NCAT; c++) {
        size_t cur = mem_current((mem_cat)c) - base[c], pk = mem_peak((mem_cat)c) - base[c];
        if (cur != s->cur[c] || pk != s->peak[c]) {
            printf("    %s: %s now %zu peak %zu, planned %zu peak %zu\n", what, mem_cat_name((mem_cat)c), cur, pk,
                   s->cur[c], s->peak[c]);
            ok = 0;
        }
    }
    if (mem_peak_total() - base_total != s->peak_total) {
        printf("    %s: total peak %zu, planned %zu\n", what, mem_peak_total() - base_total, s->peak_total);
        ok = 0;
    }
    return ok;
}

static void sim_phase_start(mem_sim *s) {
    mem_peak_reset();
    for (int c = 0; c < MEM_NCAT; c++) s->peak[c] = s->cur[c];
    s->peak_total = s->total;
}

static void check_plan(const linear_method *m, const method_entry *e, int out, int in, optim_kind ok) {
    method_opts o = opts_for(m, e, 1); /* a refresh at every step: with the optimizer state too */
    o.optimizer = ok;
    layer_data d = data_for(out, in, 10, 9);
    mem_workspace_release();
    size_t base[MEM_NCAT], base_total = mem_current_total();
    for (int c = 0; c < MEM_NCAT; c++) base[c] = mem_current((mem_cat)c);
    mem_sim s = {0};
    linear_plan p = {.out = out, .in = in, .o = &o, .N = d.N};
    linear_layer L;
    char what[160];
    int good = 1;
#define PHASE(label, ph, real)                                                      \
    do {                                                                           \
        sim_phase_start(&s);                                                       \
        real;                                                                      \
        m->plan(&p, ph, &s);                                                       \
        snprintf(what, sizeof what, "%s %dx%d %s", m->name, out, in, label);       \
        good &= sim_matches(&s, base, base_total, what);                           \
    } while (0)
    {   /* from a dense W0 (a pretrained checkpoint): the init without the method's own draw */
        float *W0 = malloc(sizeof(float) * out * in);
        for (int i = 0; i < out * in; i++) W0[i] = 0.05f * rng_normal(33, 2, (uint64_t)i);
        linear_plan p0 = {.out = out, .in = in, .o = &o, .N = d.N, .init_W0 = 1};
        mem_sim s0 = {0};
        linear_layer L0;
        sim_phase_start(&s0);
        make(&L0, m, &o, out, in, W0);
        m->plan(&p0, LPHASE_INIT, &s0);
        snprintf(what, sizeof what, "%s %dx%d init from W0", m->name, out, in);
        good &= sim_matches(&s0, base, base_total, what);
        m->free(&L0);
        mem_workspace_release();
        free(W0);
    }
    PHASE("init", LPHASE_INIT, make(&L, m, &o, out, in, NULL));
    for (long st = 0; st < 3; st++) {
        optim_hparams h = {.kind = ok, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f, .grad_scale = 1.0f, .t = st + 1};
        p.step = st;
        m->zero_grad(&L);
        PHASE("begin_step", LPHASE_BEGIN_STEP, if (m->begin_step) m->begin_step(&L, st));
        PHASE("forward", LPHASE_FORWARD, m->forward(&L, d.X, d.Y, d.N));
        PHASE("backward", LPHASE_BACKWARD, m->backward(&L, d.X, d.dY, d.dX, d.N, 0));
        PHASE("end_step", LPHASE_END_STEP, if (m->end_step) m->end_step(&L, st));
        PHASE("step", LPHASE_STEP, m->step(&L, &h));
        if (st == 1 && m->release_grads) PHASE("release_grads", LPHASE_RELEASE_GRADS, m->release_grads(&L));
    }
    PHASE("export", LPHASE_EXPORT, m->export_dense(&L, d.W));
#undef PHASE
    CHECK(good, "%s %dx%d (%s): the plan differs from the real allocations (tolerance 0 bytes; details above)",
          m->name, out, in, optim_kind_name(ok));
    m->free(&L);
    mem_workspace_release();
    data_free(&d);
}

/* ---- the model: per-layer updates keep gradient accumulation exact ----------------------- */

/* Four steps of the tiny model md (two micro-batches of 2 x 8 tokens, lr 0.01) into loss[4]; the
 * GEMM must be back in fp32 after every step.  Frees md. */
static void train_four_steps(const linear_method *m, llama_model *md, float loss[4]) {
    llama_set_batch(md, 2, 8);
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = 0.01;
    h.sched.total_steps = 4;
    int32_t in[2][16], tg[2][16];
    for (long s = 0; s < 4; s++) {
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 16; i++) {
                in[k][i] = (int32_t)(rng_u64(3, (uint64_t)(s * 2 + k), (uint64_t)i) % 96);
                tg[k][i] = (in[k][i] + 1) % 96;
            }
        const int32_t *ins[2] = {in[0], in[1]}, *tgs[2] = {tg[0], tg[1]};
        step_result r;
        CHECK(train_step(md, s, ins, tgs, 2, &h, &r) == 0, "%s step: %s", m->name, loqt_last_error());
        CHECK(gemm_get_compute().dtype == GEMM_FP32, "%s: the GEMM stayed bf16 after a step", m->name);
        loss[s] = (float)r.loss;
    }
    llama_free(md);
}

/* Four steps of a tiny model with two micro-batches per step: ordinary, with per-layer updates
 * (each layer refreshed and updated inside backward; the losses agree to float rounding), and
 * with activation checkpointing (identical). */
static void check_per_layer_updates(const linear_method *m, const method_entry *e) {
    llama_config c = {"tiny", 32, 64, 2, 4, 4, 96, 64, 1e-6, 10000.0, 0};
    float loss[3][4];
    for (int v = 0; v < 3; v++) {
        method_opts o = opts_for(m, e, 2);
        llama_model md;
        CHECK(llama_create(&md, &c, m, &o, 3) == 0, "%s create: %s", m->name, loqt_last_error());
        md.per_layer_updates = v == 1;
        md.checkpoint_activations = v == 2;
        train_four_steps(m, &md, loss[v]);
    }
    for (int s = 0; s < 4; s++) {
        CHECK(fabsf(loss[1][s] - loss[0][s]) <= 1e-5f * fabsf(loss[0][s]),
              "%s step %d: per-layer updates %.9g, ordinary %.9g (tolerance 1e-5 relative)", m->name, s, loss[1][s], loss[0][s]);
        CHECK(loss[2][s] == loss[0][s], "%s step %d: checkpointing %.9g, ordinary %.9g (must be identical)", m->name, s, loss[2][s], loss[0][s]);
    }
}

/* --dtype bf16 in the tiny model: four steps with two micro-batches and a refresh every 2 steps,
 * in fp32, in bf16, and in bf16 with per-layer updates.  bf16's losses are finite and within
 * 1e-2 relative of fp32's (bf16 rounds each GEMM operand by up to 2^-8 relative; measured up to
 * 3.9e-3 for lora, whose dropout masks hash the layer input that bf16 changes; the
 * others below 1e-3); bf16 with per-layer updates equals ordinary bf16 steps to
 * float rounding (1e-5 relative, as in fp32), which holds only if the refreshes and updates that
 * run inside backward there are computed in fp32 as the ordinary step's are; and the GEMM is
 * fp32 again after every step.  Returns the largest relative difference from fp32. */
static double check_bf16(const linear_method *m, const method_entry *e) {
    llama_config c = {"tiny", 32, 64, 2, 4, 4, 96, 64, 1e-6, 10000.0, 0};
    float loss[3][4];
    for (int v = 0; v < 3; v++) {
        method_opts o = opts_for(m, e, 2);
        llama_model md;
        CHECK(llama_create(&md, &c, m, &o, 3) == 0, "%s create: %s", m->name, loqt_last_error());
        md.dtype = v ? GEMM_BF16 : GEMM_FP32;
        md.per_layer_updates = v == 2;
        train_four_steps(m, &md, loss[v]);
    }
    double worst = 0;
    for (int s = 0; s < 4; s++) {
        const double d = fabs((double)loss[1][s] - loss[0][s]) / fabs((double)loss[0][s]);
        if (!(d <= worst)) worst = d;
        CHECK(isfinite(loss[1][s]) && d <= 1e-2, "%s step %d: bf16 loss %.9g, fp32 %.9g (band 1e-2 relative)",
              m->name, s, loss[1][s], loss[0][s]);
        CHECK(fabsf(loss[2][s] - loss[1][s]) <= 1e-5f * fabsf(loss[1][s]),
              "%s step %d: bf16 with per-layer updates %.9g, ordinary bf16 %.9g (tolerance 1e-5 relative)", m->name, s,
              loss[2][s], loss[1][s]);
    }
    return worst;
}

/* ---- the loop over the registry ---------------------------------------------------------- */

static const int shapes[2][2] = {{48, 32}, {24, 40}}; /* in <= out, in > out */

static void test_every_method_has_an_entry(void) {
    for (int k = 0; k < method_count(); k++)
        CHECK(entry_of(method_at(k)->name) != NULL, "method %s has no entry in tests/test_methods.c", method_at(k)->name);
    for (int i = 0; i < N_ENTRIES; i++)
        CHECK(method_find(entries[i].method) != NULL, "entry %s names no registered method", entries[i].method);
    CHECK(method_count() == N_ENTRIES, "%d methods, %d entries", method_count(), N_ENTRIES);
}

#define FOR_EACH_METHOD_AND_SHAPE(body)                                                \
    for (int k = 0; k < method_count(); k++) {                                         \
        const linear_method *m = method_at(k);                                          \
        const method_entry *e = entry_of(m->name);                                      \
        if (!e) continue;                                                               \
        for (int sh = 0; sh < 2; sh++) {                                                \
            const int out = shapes[sh][0], in = shapes[sh][1];                          \
            body;                                                                       \
        }                                                                               \
    }

/* the body for the entry's options, then for its variant when it has one */
#define WITH_VARIANTS(body)                                                             \
    for (use_variant = 0; use_variant < 2; use_variant++) {                             \
        FOR_EACH_METHOD_AND_SHAPE(if (!use_variant || e->variant[0]) { body; });        \
    }                                                                                   \
    use_variant = 0

static void test_forward_backward_vs_dense(void) { WITH_VARIANTS(check_forward_backward(m, e, out, in)); }
static void test_dense_init(void) { FOR_EACH_METHOD_AND_SHAPE(check_dense_init(m, e, out, in)); }
static void test_finite_differences(void) { FOR_EACH_METHOD_AND_SHAPE(check_finite_differences(m, e, out, in)); }
static void test_save_load_resume(void) { WITH_VARIANTS(check_save_load_resume(m, e, out, in)); }
static void test_release_grads(void) { FOR_EACH_METHOD_AND_SHAPE(check_release_grads(m, e, out, in)); }
static void test_skip_step(void) { FOR_EACH_METHOD_AND_SHAPE(check_skip_step(m, e, out, in)); }
static void test_owner_only_views(void) { WITH_VARIANTS(check_owner_only_views(m, e, out, in)); }
static void test_plan_equals_allocations(void) {
    WITH_VARIANTS(check_plan(m, e, out, in, OPTIM_ADAMW));
    /* 8-bit Adam keeps 8-bit moments from 4096 elements on: a layer whose rank-6 factors are that
     * large (6 x 720) */
    for (int k = 0; k < method_count(); k++)
        if (entry_of(method_at(k)->name)) check_plan(method_at(k), entry_of(method_at(k)->name), 720, 96, OPTIM_ADAM8BIT);
}

static void test_per_layer_updates_and_checkpointing(void) {
    for (int k = 0; k < method_count(); k++)
        if (entry_of(method_at(k)->name)) check_per_layer_updates(method_at(k), entry_of(method_at(k)->name));
}

static void test_bf16_every_method(void) {
    for (use_variant = 0; use_variant < 2; use_variant++)
        for (int k = 0; k < method_count(); k++) {
            const method_entry *e = entry_of(method_at(k)->name);
            if (!e || (use_variant && !e->variant[0])) continue;
            const double d = check_bf16(method_at(k), e);
            printf("    %s%s: bf16 losses within %.2e relative of fp32's\n", method_at(k)->name, use_variant ? " (variant)" : "", d);
        }
    use_variant = 0;
}

int main(void) {
    test_set_omp_threads(2);
    RUN(test_every_method_has_an_entry);
    RUN(test_forward_backward_vs_dense);
    RUN(test_dense_init);
    RUN(test_finite_differences);
    RUN(test_save_load_resume);
    RUN(test_release_grads);
    RUN(test_skip_step);
    RUN(test_owner_only_views);
    RUN(test_plan_equals_allocations);
    RUN(test_per_layer_updates_and_checkpointing);
    RUN(test_bf16_every_method);
    TEST_END();
}
