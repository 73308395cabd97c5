/* DQT and BitNet b1.58: the packed grid, stochastic rounding on it, the activation quantizer and
 * the low-bit kernels against an independent PyTorch reference (tests/gen_lowbit_ref.py), the
 * optimizer's range form, and DQT's update by tiles and in training. */
#include "test.h"

#include "core/error.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "kernels/lowbit.h"
#include "methods/linear.h"
#include "optim/adam8bit.h"

#include <stdlib.h>
#include <unistd.h>


static double max_abs(const float *x, size_t n) {
    double a = 0;
    for (size_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e / fmax(max_abs(b, n), 1e-30);
}

static const linear_method *method(const char *name) {
    const linear_method *m = method_find(name);
    CHECK(m != NULL, "method %s registered", name);
    return m;
}

/* options of a method from "name=value" pairs (choices by their spelling) */
static method_opts opts_of(const linear_method *m, const char *const *kv, int n) {
    method_opts o;
    method_opts_defaults(&o, m);
    o.seed = 11;
    for (int i = 0; i < n; i++) {
        char name[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv[i]), kv[i]);
        const method_option *opt = method_option_find(m, name);
        CHECK(opt != NULL, "%s has --%s", m->name, name);
        if (!opt) continue;
        if (opt->type == MOPT_CHOICE) {
            char json[160];
            for (char *p = name; *p; p++) *p = *p == '-' ? '_' : *p; /* the JSON key */
            snprintf(json, sizeof json, "{\"%s\": \"%s\"}", name, eq + 1);
            CHECK(method_config_parse_json(m, &o, json) == 0, "%s: %s", json, loqt_last_error());
        } else {
            method_option_set(&o, opt, atof(eq + 1));
        }
    }
    return o;
}

static void make_layer(linear_layer *L, const linear_method *m, const method_opts *o, int out, int in, const float *W0) {
    memset(L, 0, sizeof *L);
    L->m = m;
    L->out = out;
    L->in = in;
    snprintf(L->name, sizeof L->name, "model.layers.0.mlp.test_%dx%d", out, in);
    linear_init ini = {.W0 = W0};
    CHECK(m->init(L, o, &ini) == 0, "%s init: %s", m->name, loqt_last_error());
}

/* The layer's saved codes and scales (its checkpoint tensors <name>.dqt.codes / .dqt.scale). */
static int saved_grid(const linear_layer *L, uint8_t *codes, size_t ncodes, float *scale, size_t nscale) {
    char dir[256], path[320], nm[200];
    if (test_make_tmpdir(dir, sizeof dir, "dqtgrid")) return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_writer *wm = st_writer_new(), *ws = st_writer_new();
    L->m->save(L, wm, ws);
    int rc = st_writer_write(wm, path);
    st_writer_free(wm);
    st_writer_free(ws);
    st_file f;
    if (!rc) rc = st_open(&f, path);
    if (!rc) {
        const int64_t cs[1] = {(int64_t)ncodes}, ss[1] = {(int64_t)nscale};
        snprintf(nm, sizeof nm, "%s.dqt.codes", L->name);
        rc = st_read_raw(&f, nm, codes, ST_U8, 1, cs);
        snprintf(nm, sizeof nm, "%s.dqt.scale", L->name);
        if (!rc) rc = st_read_raw(&f, nm, scale, ST_F32, 1, ss);
        st_close(&f);
    }
    unlink(path);
    rmdir(dir);
    CHECK(rc == 0, "saved grid: %s", loqt_last_error());
    return rc;
}

/* ---- the packed grid ----------------------------------------------------------------------- */

/* Sizes to the byte: ceil(n bits / 8) for the codes (ternary at 2 bits), 4 bytes per scale, and
 * a DQT layer's accounting (mem_bytes) and its plan hold exactly those. */
static void test_packed_sizes(void) {
    static const size_t ns[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 1000003};
    for (int bits = 2; bits <= 8; bits++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            CHECK(qgrid_data_bytes(ns[k], bits) == (ns[k] * bits + 7) / 8, "%zu elements at %d bits", ns[k], bits);
    CHECK(qgrid_data_bytes(1000003, 2) == 250001, "2 bits: 1000003 elements in 250001 bytes");
    CHECK(qgrid_data_bytes(1000003, 3) == 375002, "3 bits: 1000003 elements in 375002 bytes");
    const linear_method *m = method("dqt");
    static const char *const bits[] = {"bits=ternary", "bits=2", "bits=3", "bits=5", "bits=8"};
    static const int width[] = {2, 2, 3, 5, 8};
    for (int b = 0; b < 5; b++)
        for (int per_row = 0; per_row < 2; per_row++) {
            const int out = 37, in = 29; /* 1073 elements: no byte or chunk boundary is round */
            const char *kv[2] = {bits[b], per_row ? "scale=per-row" : "scale=per-tensor"};
            method_opts o = opts_of(m, kv, 2);
            linear_layer L;
            make_layer(&L, m, &o, out, in, NULL);
            size_t bytes[MEM_NCAT] = {0};
            m->mem_bytes(&L, bytes);
            const size_t codes = ((size_t)out * in * width[b] + 7) / 8, scales = 4 * (size_t)(per_row ? out : 1);
            CHECK(bytes[MEM_QWEIGHTS] == codes && bytes[MEM_QSTATE] == scales && bytes[MEM_DENSE] == 0,
                  "dqt %s %s: %zu code bytes (want %zu), %zu scale bytes (want %zu), %zu dense", bits[b], kv[1],
                  bytes[MEM_QWEIGHTS], codes, bytes[MEM_QSTATE], scales, bytes[MEM_DENSE]);
            mem_sim s = {0};
            linear_plan p = {.out = out, .in = in, .o = &o};
            m->plan(&p, LPHASE_INIT, &s);
            CHECK(s.cur[MEM_QWEIGHTS] == codes && s.cur[MEM_QSTATE] == scales, "dqt plan: %zu, %zu", s.cur[MEM_QWEIGHTS],
                  s.cur[MEM_QSTATE]);
            m->free(&L);
        }
}

/* Ranges: quantizing [e0, e1) leaves every other element's bits alone, whatever the alignment. */
static void test_qgrid_ranges(void) {
    const size_t rows = 7, cols = 11, n = rows * cols;
    float x[77], y[77], z[77];
    for (int bits = 2; bits <= 8; bits++) {
        qgrid_tensor t;
        CHECK(qgrid_init_rows(&t, rows, cols, bits, false) == 0 && t.nscale == rows, "per-row init");
        for (size_t r = 0; r < rows; r++) t.scale[r] = 0.5f + 0.25f * (float)r;
        for (size_t i = 0; i < n; i++) x[i] = (float)(t.qmin + (int)(i % (size_t)(t.qmax - t.qmin + 1))) * t.scale[i / cols];
        CHECK(qgrid_quantize(&t, x) == 0, "quantize");
        for (size_t i = 0; i < n; i++) z[i] = x[n - 1 - i] * 0 + (float)t.qmax * t.scale[i / cols];
        CHECK(qgrid_quantize_range(&t, 5, 23, z + 5, NULL, NULL) == 0, "range");
        qgrid_dequantize(&t, y);
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != (i >= 5 && i < 23 ? z[i] : x[i]);
        CHECK(bad == 0, "%d bits: %d elements wrong after quantizing [5, 23)", bits, bad);
        CHECK(qgrid_quantize_range(&t, 5, 78, z, NULL, NULL) == -1, "range past the end refused");
        qgrid_free(&t);
    }
}

/* SR onto the grids is unbiased: for values strictly inside the range, the mean of K roundings
 * (K independent keys) is within 5 standard errors of the value, with the standard error
 * delta sqrt(p (1 - p) / K) of a Bernoulli(p) step, p the fraction; only the two neighbours
 * occur.  8 widths x 64 values: a false alarm has probability about 3e-4. */
static void test_sr_unbiased(void) {
    enum { NV = 64, K = 4000 };
    for (int w = 1; w <= 8; w++) {
        const bool ternary = w == 1;
        qgrid_tensor t;
        CHECK(qgrid_init_rows(&t, 2, NV / 2, ternary ? 2 : w, ternary) == 0, "init");
        t.scale[0] = 0.01f, t.scale[1] = 0.37f;
        float x[NV], y[NV];
        double sum[NV] = {0};
        test_seed(77 + (uint64_t)w);
        for (int i = 0; i < NV; i++) /* inside (qmin, qmax), never on a grid point */
            x[i] = (float)((t.qmin + (t.qmax - t.qmin) * test_uniform()) * t.scale[i / (NV / 2)]);
        int outside = 0;
        for (int k = 0; k < K; k++) {
            sround_key key = {5, (uint64_t)k, 0};
            qgrid_quantize_range(&t, 0, NV, x, NULL, &key);
            qgrid_dequantize(&t, y);
            for (int i = 0; i < NV; i++) {
                const double d = t.scale[i / (NV / 2)], v = x[i] / d;
                const double q = y[i] / d;
                outside += fabs(q - floor(v)) > 1e-4 && fabs(q - floor(v) - 1) > 1e-4;
                sum[i] += y[i];
            }
        }
        int bad = 0;
        for (int i = 0; i < NV; i++) {
            const double d = t.scale[i / (NV / 2)], v = x[i] / d, p = v - floor(v);
            const double se = d * sqrt(p * (1 - p) / K);
            if (fabs(sum[i] / K - x[i]) > 5 * se + 1e-6 * d) bad++;
        }
        CHECK(outside == 0, "%s: %d roundings not to a neighbour", ternary ? "ternary" : "n-bit", outside);
        CHECK(bad == 0, "%d-bit%s: %d of %d means off by more than 5 standard errors", ternary ? 2 : w,
              ternary ? " ternary" : "", bad, NV);
        qgrid_free(&t);
    }
}

/* ---- activations and kernels against PyTorch ------------------------------------------------ */

static void test_actq_vs_torch(void) {
    size_t bytes;
    unsigned char *buf = test_read_ref(&bytes, "lowbit_actq.bin");
    CHECK(buf != NULL, "missing lowbit_actq.bin: run tests/gen_lowbit_ref.py (make test does)");
    if (!buf) return;
    int32_t hd[2];
    memcpy(hd, buf, sizeof hd);
    const size_t n = (size_t)hd[0] * hd[1];
    CHECK(bytes == sizeof hd + 8 * n, "lowbit_actq.bin: %zu bytes", bytes);
    if (bytes != sizeof hd + 8 * n) return free(buf);
    const float *X = (const float *)(buf + sizeof hd), *Xq = X + n;
    float *y = malloc(4 * n);
    actq_rows(X, y, hd[0], hd[1]);
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&y[i], &Xq[i], 4) != 0;
    /* the same fp32 operations in the same order: bit for bit (tolerance 0) */
    CHECK(diff == 0, "activation quantizer: %zu of %zu values differ from PyTorch's", diff, n);
    int levels = 0; /* a row quantized to 8 bits takes at most 255 values */
    for (int j = 0; j < hd[1]; j++) levels += y[j] != y[0];
    CHECK(levels > 0, "row 0 quantized to more than one level");
    free(y);
    free(buf);
}

/* BitNet b1.58 through the method's forward and backward (8-bit activations), from the
 * reference's latent weights. */
static void test_bitnet_vs_torch(void) {
    size_t bytes;
    unsigned char *buf = test_read_ref(&bytes, "lowbit_bitnet.bin");
    CHECK(buf != NULL, "missing lowbit_bitnet.bin: run tests/gen_lowbit_ref.py (make test does)");
    if (!buf) return;
    int32_t hd[3];
    memcpy(hd, buf, sizeof hd);
    const int out = hd[0], in = hd[1], N = hd[2];
    const size_t nw = (size_t)out * in, want = sizeof hd + 4 * (3 * nw + 2 * (size_t)N * in + 2 * (size_t)N * out);
    CHECK(bytes == want, "lowbit_bitnet.bin: %zu bytes, want %zu", bytes, want);
    if (bytes != want) return free(buf);
    const float *W = (const float *)(buf + sizeof hd), *X = W + nw, *dY = X + (size_t)N * in, *Y = dY + (size_t)N * out;
    const float *dX = Y + (size_t)N * out, *dW = dX + (size_t)N * in, *Wq = dW + nw;
    const linear_method *m = method("bitnet");
    const char *kv[1] = {"act-quant=int8"};
    method_opts o = opts_of(m, kv, 1);
    linear_layer L;
    make_layer(&L, m, &o, out, in, W);
    float *y = malloc(4 * (size_t)N * out), *dx = malloc(4 * (size_t)N * in), *we = malloc(4 * nw);
    m->export_dense(&L, we);
    size_t wrong = 0; /* by value: torch's round gives -0 for small negative weights */
    for (size_t i = 0; i < nw; i++) wrong += we[i] != Wq[i];
    CHECK(wrong == 0, "%zu ternary weights differ from PyTorch's (tolerance 0)", wrong);
    m->forward(&L, X, y, N);
    m->zero_grad(&L);
    m->backward(&L, X, dY, dx, N, 0);
    grad_view v[2];
    CHECK(m->grad_views(&L, v, 2) == 1 && v[0].n == nw, "one gradient view");
    /* GEMMs in another order: 1e-5 of the largest value */
    const double ey = rel_err(y, Y, (size_t)N * out), ex = rel_err(dx, dX, (size_t)N * in), ew = rel_err(v[0].data, dW, nw);
    CHECK(ey <= 1e-5 && ex <= 1e-5 && ew <= 1e-5, "bitnet vs PyTorch: Y %.2g, dX %.2g, dW %.2g (tolerance 1e-5)", ey, ex, ew);
    /* without the activation quantizer dW would differ by its rounding: the check can see it */
    float *G = calloc(nw, 4);
    gemm(true, false, out, in, N, 1.0f, dY, out, X, in, 0.0f, G, in);
    CHECK(rel_err(G, dW, nw) > 1e-4, "dW from unquantized activations is distinguishable (%.2g)", rel_err(G, dW, nw));
    m->free(&L);
    free(y), free(dx), free(we), free(G), free(buf);
}

/* The low-bit kernels on 3-bit per-row codes, with tiles of 1, 4 and all rows. */
static void test_kernels_vs_torch(void) {
    size_t bytes;
    unsigned char *buf = test_read_ref(&bytes, "lowbit_dqt.bin");
    CHECK(buf != NULL, "missing lowbit_dqt.bin: run tests/gen_lowbit_ref.py (make test does)");
    if (!buf) return;
    int32_t hd[4];
    memcpy(hd, buf, sizeof hd);
    const int out = hd[0], in = hd[1], N = hd[2], bits = hd[3];
    const size_t nw = (size_t)out * in;
    const size_t want = sizeof hd + 4 * (nw + (size_t)out + 2 * (size_t)N * in + 2 * (size_t)N * out + nw);
    CHECK(bytes == want, "lowbit_dqt.bin: %zu bytes, want %zu", bytes, want);
    if (bytes != want) return free(buf);
    const int32_t *codes = (const int32_t *)(buf + sizeof hd);
    const float *scale = (const float *)(codes + nw), *X = scale + out, *dY = X + (size_t)N * in;
    const float *Y = dY + (size_t)N * out, *dX = Y + (size_t)N * out, *dW = dX + (size_t)N * in;
    qgrid_tensor t;
    CHECK(qgrid_init_rows(&t, out, in, bits, false) == 0, "init");
    memcpy(t.scale, scale, 4 * (size_t)out);
    float *w = malloc(4 * nw);
    for (size_t i = 0; i < nw; i++) w[i] = (float)codes[i] * scale[i / in];
    qgrid_quantize(&t, w);
    int wrong = 0;
    for (size_t i = 0; i < nw; i++) wrong += qgrid_value(&t, i) != codes[i];
    CHECK(wrong == 0, "%d codes not stored", wrong);
    float *work = malloc(4 * lowbit_work_floats(out, in, N, 1)), *y = malloc(4 * (size_t)N * out);
    float *dx = malloc(4 * (size_t)N * in), *G = malloc(4 * nw);
    static const int tiles[] = {1, 4, 1 << 20};
    for (int k = 0; k < 3; k++) {
        const int tr = tiles[k] < out ? tiles[k] : out;
        lowbit_forward(&t, out, in, X, y, N, 1, tr, work);
        memset(G, 0, 4 * nw);
        lowbit_backward(&t, out, in, X, dY, dx, G, N, 0, 1, tr, work);
        const double ey = rel_err(y, Y, (size_t)N * out), ex = rel_err(dx, dX, (size_t)N * in), ew = rel_err(G, dW, nw);
        CHECK(ey <= 1e-5 && ex <= 1e-5 && ew <= 1e-5, "tiles of %d rows: Y %.2g, dX %.2g, dW %.2g (tolerance 1e-5)", tr, ey, ex, ew);
    }
    qgrid_free(&t);
    free(w), free(work), free(y), free(dx), free(G), free(buf);
}

/* ---- the optimizer's range form ------------------------------------------------------------ */

/* Tiles [0, 1024), [1024, 3072), [3072, n) over 3 steps give the whole update's bits, for AdamW
 * and 8-bit Adam; 8-bit Adam refuses a range that splits one of its blocks. */
static void test_optim_range(void) {
    const size_t n = 5000 + 17, cut[4] = {0, 1024, 3072, n};
    for (int kind = 0; kind < 2; kind++) {
        const optim_kind k = kind ? OPTIM_ADAM8BIT : OPTIM_ADAMW;
        optim_state a, b;
        optim_state_init(&a, n, k);
        optim_state_init(&b, n, k);
        float *wa = malloc(4 * n), *wb = malloc(4 * n), *g = malloc(4 * n);
        test_seed(9);
        test_fill_randn(wa, n, 0.1f);
        memcpy(wb, wa, 4 * n);
        for (long t = 1; t <= 3; t++) {
            test_fill_randn(g, n, 1.0f);
            optim_hparams h = {.kind = k, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                               .weight_decay = 0.1f, .grad_scale = 0.5f, .t = t};
            optim_update(&a, wa, g, &h);
            for (int c = 0; c < 3; c++)
                CHECK(optim_update_range(&b, wb + cut[c], g + cut[c], cut[c], cut[c + 1], &h) == 0, "range: %s", loqt_last_error());
        }
        size_t sa = optim_state_bytes(&a);
        CHECK(sa == optim_state_bytes(&b) && memcmp(wa, wb, 4 * n) == 0, "%s: the range form differs from the whole update", optim_kind_name(k));
        float *ma = malloc(4 * n), *va = malloc(4 * n), *mb = malloc(4 * n), *vb = malloc(4 * n);
        optim_state_get_moments(&a, ma, va);
        optim_state_get_moments(&b, mb, vb);
        CHECK(memcmp(ma, mb, 4 * n) == 0 && memcmp(va, vb, 4 * n) == 0, "%s: moments differ", optim_kind_name(k));
        optim_hparams h = {.kind = k, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .grad_scale = 1, .t = 4};
        CHECK(optim_update_range(&b, wb, g, 0, n + 1, &h) == -1, "a range past the end is refused");
        if (k == OPTIM_ADAM8BIT)
            CHECK(optim_update_range(&b, wb + 100, g + 100, 100, 700, &h) == -1, "8-bit Adam refuses a split block: %s", loqt_last_error());
        optim_state_free(&a);
        optim_state_free(&b);
        free(wa), free(wb), free(g), free(ma), free(va), free(mb), free(vb);
    }
}

/* ---- DQT ----------------------------------------------------------------------------------- */

/* Init: codes = clamp(round(W0 / d)), d = max(mean|W0|, 1e-5) / Qp per tensor or per row. */
static void test_dqt_init_exact(void) {
    const int out = 9, in = 21;
    float W0[189], y[189];
    test_seed(3);
    test_fill_randn(W0, 189, 0.05f);
    for (int j = 0; j < in; j++) W0[2 * in + j] *= 10.0f; /* a row of another scale */
    const linear_method *m = method("dqt");
    for (int per_row = 0; per_row < 2; per_row++) {
        const char *kv[2] = {"bits=4", per_row ? "scale=per-row" : "scale=per-tensor"};
        method_opts o = opts_of(m, kv, 2);
        linear_layer L;
        make_layer(&L, m, &o, out, in, W0);
        m->export_dense(&L, y);
        int bad = 0;
        for (int r = 0; r < out; r++) {
            const int r0 = per_row ? r : 0, len = per_row ? in : out * in;
            double s = 0;
            for (int i = 0; i < len; i++) s += fabs((double)W0[r0 * in + i]);
            const float d = fmaxf((float)(s / len), 1e-5f) / 7.0f;
            for (int j = 0; j < in; j++) {
                const float q = fminf(fmaxf(rintf(W0[r * in + j] / d), -8.0f), 7.0f);
                bad += y[r * in + j] != q * d;
            }
        }
        CHECK(bad == 0, "4-bit %s init: %d values differ from clamp(round(W0 / d)) d", kv[1], bad);
        m->free(&L);
    }
}

/* One step on a layer of 1100 x 1000 (two update tiles, the boundary inside a row, one scale per
 * row): every new weight is one of the two grid neighbours (at the step's rounding scale) of the
 * fp32 AdamW update of the dequantized weight, computed here as one whole-array update. */
static void test_dqt_step_by_tiles(void) {
    const int out = 1100, in = 1000, N = 4;
    const size_t n = (size_t)out * in;
    CHECK(n > LOWBIT_TILE_ELEMS && (LOWBIT_TILE_ELEMS % in) != 0, "the layer spans two tiles, split inside a row");
    const linear_method *m = method("dqt");
    const char *kv[2] = {"bits=8", "scale=per-row"};
    method_opts o = opts_of(m, kv, 2);
    linear_layer L;
    make_layer(&L, m, &o, out, in, NULL);
    float *X = malloc(4 * (size_t)N * in), *dY = malloc(4 * (size_t)N * out);
    test_seed(21);
    test_fill_randn(X, (size_t)N * in, 1.0f);
    test_fill_randn(dY, (size_t)N * out, 1.0f);
    float *w = malloc(4 * n), *w1 = malloc(4 * n), *G = malloc(4 * n);
    m->params_get(&L, w);
    m->zero_grad(&L);
    m->backward(&L, X, dY, NULL, N, 0);
    grad_view v[1];
    m->grad_views(&L, v, 1);
    memcpy(G, v[0].data, 4 * n);
    optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 2e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f, .grad_scale = 1, .t = 1};
    CHECK(m->step(&L, &h) == 0, "step: %s", loqt_last_error());
    m->params_get(&L, w1);
    optim_state ref;
    optim_state_init(&ref, n, OPTIM_ADAMW);
    float *want = malloc(4 * n);
    memcpy(want, w, 4 * n);
    optim_update(&ref, want, G, &h);
    size_t far = 0, moved = 0;
    double bias = 0, var = 0;
    for (int r = 0; r < out; r++) {
        /* the row's grid step: the smallest nonzero |difference| of its new values is a multiple */
        float d = 0;
        for (int j = 0; j < in; j++) d = fmaxf(d, fabsf(w1[(size_t)r * in + j]));
        d /= 128.0f; /* the row's largest code is -128 or 127: d is within 1/128 of the scale */
        for (int j = 0; j < in; j++) {
            const size_t i = (size_t)r * in + j;
            /* an update past the grid's ends is clamped there */
            const double t = fmin(fmax(want[i], -128.0 * d), 127.0 * d), e = (double)w1[i] - t;
            far += fabs(e) > 1.01 * d;
            moved += w1[i] != w[i];
            bias += e / d;
            var += 1.0 / 6;
        }
    }
    CHECK(far == 0, "%zu of %zu weights further than one grid step from the fp32 update", far, n);
    CHECK(moved > n / 100, "the step moved %zu of %zu codes", moved, n);
    /* unbiased rounding: the summed error in grid steps within 5 standard deviations (each
     * error's variance p (1 - p) <= 1/4; 1/6 is its mean for a uniform fraction p); d is the
     * row's scale to within its 1/128 rounding, which the 1e-3 per weight allows for */
    CHECK(fabs(bias) <= 5 * sqrt(var) + 1e-3 * n, "mean rounding error %.3g grid steps", bias / n);
    optim_state_free(&ref);
    m->free(&L);
    free(X), free(dY), free(w), free(w1), free(G), free(want);
}

/* Ternary training of a layer towards a ternary teacher (loss 0.5 |Y - Y*|^2): after every step
 * every stored 2-bit field is 0, 1 or 2 (values -1, 0, 1; the field 3 would mean +2), the codes
 * move, all three values stay in use, and the loss falls. */
static void test_dqt_ternary_training(void) {
    const int out = 32, in = 48, N = 64, steps = 60;
    const linear_method *m = method("dqt");
    const char *kv[2] = {"bits=ternary", "scale=per-tensor"};
    method_opts o = opts_of(m, kv, 2);
    linear_layer L, T;
    make_layer(&L, m, &o, out, in, NULL);
    o.seed = 99;
    make_layer(&T, m, &o, out, in, NULL); /* the teacher */
    float *X = malloc(4 * (size_t)N * in), *Y = malloc(4 * (size_t)N * out), *Ys = malloc(4 * (size_t)N * out);
    float *dY = malloc(4 * (size_t)N * out);
    const size_t n = (size_t)out * in, nbytes = qgrid_data_bytes(n, 2);
    int bad_fields = 0, changed = 0, count[3] = {0, 0, 0};
    double loss0 = 0, loss = 0;
    uint8_t *codes = malloc(nbytes), *prev = malloc(nbytes);
    float scale;
    saved_grid(&L, prev, nbytes, &scale, 1);
    for (int s = 0; s < steps; s++) {
        test_seed(1000 + (uint64_t)s);
        test_fill_randn(X, (size_t)N * in, 1.0f);
        T.m->forward(&T, X, Ys, N);
        m->forward(&L, X, Y, N);
        loss = 0;
        for (int i = 0; i < N * out; i++) {
            dY[i] = (Y[i] - Ys[i]) / N;
            loss += 0.5 * (double)(Y[i] - Ys[i]) * (Y[i] - Ys[i]) / N;
        }
        if (s == 0) loss0 = loss;
        m->zero_grad(&L);
        m->backward(&L, X, dY, NULL, N, 0);
        optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 5e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .grad_scale = 1, .t = s + 1};
        CHECK(m->step(&L, &h) == 0, "step: %s", loqt_last_error());
        if (saved_grid(&L, codes, nbytes, &scale, 1)) break;
        changed += memcmp(prev, codes, nbytes) != 0;
        memcpy(prev, codes, nbytes);
        for (size_t i = 0; i < n; i++) {
            const unsigned field = (codes[i / 4] >> (2 * (i % 4))) & 3u;
            bad_fields += field == 3;
            if (s == steps - 1 && field < 3) count[field]++;
        }
    }
    CHECK(bad_fields == 0, "%d stored fields outside {-1, 0, 1}", bad_fields);
    CHECK(changed >= steps / 2, "codes changed in %d of %d steps", changed, steps);
    CHECK(count[0] > 0 && count[1] > 0 && count[2] > 0, "values -1, 0, 1 used %d, %d, %d times", count[0], count[1], count[2]);
    CHECK(loss < 0.5 * loss0, "loss %.4g after %d steps, %.4g at the start (must halve)", loss, steps, loss0);
    m->free(&L);
    m->free(&T);
    free(X), free(Y), free(Ys), free(dY), free(prev), free(codes);
}

/* The rounding scale follows the absmax: kept while the largest code is in use, smaller when
 * every weight has moved inside. */
static void test_dqt_rescale(void) {
    const int out = 4, in = 8;
    float W0[32];
    for (int i = 0; i < 32; i++) W0[i] = (float)((i % 4) - 2); /* mean |W0| = 1: delta 1/3 */
    const linear_method *m = method("dqt");
    const char *kv[2] = {"bits=3", "act-quant=none"};
    method_opts o = opts_of(m, kv, 2);
    linear_layer L;
    make_layer(&L, m, &o, out, in, W0);
    uint8_t codes[12];
    float d0, d1, d2;
    saved_grid(&L, codes, 12, &d0, 1);
    CHECK(d0 == 1.0f / 3.0f, "absmean scale %g, want mean|W0| / Qp = 1/3", d0);
    float X[8] = {0}, dY[4] = {0}, w[32], w1[32];
    m->params_get(&L, w);
    CHECK(max_abs(w, 32) == 4 * d0, "-2 / (1/3) = -6 clamps to the code -4: max |W| %g", max_abs(w, 32));
    m->zero_grad(&L);
    m->backward(&L, X, dY, NULL, 1, 0); /* a zero gradient: the weights stay */
    optim_hparams h = {.kind = OPTIM_ADAMW, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .grad_scale = 1, .t = 1};
    m->step(&L, &h);
    saved_grid(&L, codes, 12, &d1, 1);
    m->params_get(&L, w1);
    CHECK(d1 == d0 && memcmp(w, w1, sizeof w) == 0, "scale kept while the code -4 is in use: %g, was %g", d1, d0);
    for (int i = 0; i < 32; i++) w[i] *= 0.5f; /* every weight inside: largest code 2 */
    m->params_set(&L, w);
    h.t = 2;
    m->step(&L, &h);
    saved_grid(&L, codes, 12, &d2, 1);
    CHECK(d2 == d0 * 0.5f, "scale halves with the absmax: %g, want %g", d2, d0 * 0.5f);
    m->free(&L);
}

/* A checkpoint whose ternary codes hold the unused field 3 is refused with a message. */
static void test_dqt_bad_checkpoint(void) {
    const int out = 8, in = 8;
    const linear_method *m = method("dqt");
    const char *kv[1] = {"bits=ternary"};
    method_opts o = opts_of(m, kv, 1);
    linear_layer L;
    make_layer(&L, m, &o, out, in, NULL);
    char dir[256], path[320];
    CHECK(test_make_tmpdir(dir, sizeof dir, "dqt") == 0, "tmpdir");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    uint8_t codes[16];
    memset(codes, 0xff, sizeof codes);
    float scale[1] = {0.01f};
    char nm[160];
    st_writer *w = st_writer_new();
    int64_t cs[1] = {16}, ss[1] = {1};
    snprintf(nm, sizeof nm, "%s.dqt.codes", L.name);
    st_writer_add(w, nm, ST_U8, 1, cs, codes);
    char nm2[160];
    snprintf(nm2, sizeof nm2, "%s.dqt.scale", L.name);
    st_writer_add(w, nm2, ST_F32, 1, ss, scale);
    CHECK(st_writer_write(w, path) == 0, "write");
    st_writer_free(w);
    st_file f;
    CHECK(st_open(&f, path) == 0, "open");
    CHECK(m->load(&L, &f, NULL) == -1 && strstr(loqt_last_error(), "not a ternary value"), "refused: %s", loqt_last_error());
    st_close(&f);
    unlink(path);
    rmdir(dir);
    m->free(&L);
}

int main(void) {
    test_set_omp_threads(2);
    RUN(test_packed_sizes);
    RUN(test_qgrid_ranges);
    RUN(test_sr_unbiased);
    RUN(test_actq_vs_torch);
    RUN(test_bitnet_vs_torch);
    RUN(test_kernels_vs_torch);
    RUN(test_optim_range);
    RUN(test_dqt_init_exact);
    RUN(test_dqt_step_by_tiles);
    RUN(test_dqt_ternary_training);
    RUN(test_dqt_rescale);
    RUN(test_dqt_bad_checkpoint);
    TEST_END();
}
