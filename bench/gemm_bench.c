/* GEMM microbenchmark: the products one training step of a model runs, and 2048^3, through every
 * GEMM implementation this build can reach, so a training run's tokens/s can be read as a
 * fraction of what the machine's GEMMs do.
 *
 *   fp32  portable (gemm_portable), openblas (cblas_sgemm), dnnl (dnnl_sgemm), dnnl_matmul_f32
 *         (oneDNN's matmul primitive); the one loqt's gemm() runs is marked "loqt": true
 *   bf16  dnnl_matmul_bf16: bf16 inputs, fp32 accumulation and output, as a mixed-precision step
 *         would run them; oneDNN's implementation name is reported, and whether the CPU has bf16
 *         instructions (without them oneDNN emulates or falls back to a reference loop)
 *
 * Shapes, per model (--models, batch x sequence = N tokens): each linear layer's forward
 * [N, in] x [out, in]^T, its input gradient [N, out] x [out, in], its weight gradient
 * [N, out]^T x [N, in] accumulated (beta 1); lm_head's three products on the 256-row chunks the
 * loss works in; two attention score-block products (one thread: they run inside the attention's
 * parallel loop); and 2048^3.  One JSON object per line on stdout:
 *   {"kind":"gemm_info", ...}      libraries, kernels, threads, CPU features
 *   {"kind":"gemm", ...}           one shape through one implementation: GFLOP/s (median of the
 *                                  timed calls) and best_gflops (fastest call)
 *   {"kind":"gemm_model", ...}     per model and implementation: the FLOPs of a training step's
 *                                  linear and lm_head products, the time they take at the
 *                                  measured rates, and the model FLOPs per token (6 x matrix
 *                                  parameters + 12 x layers x seq x hidden, the usual count)
 *   {"kind":"gemm_peak", ...}      the best 2048^3 rate in fp32 and in bf16
 * bench/run_bench.sh runs it before the training runs and turns these into peak fractions. */
#include "kernels/gemm.h"
#include "kernels/openblas_kernels.h"
#include "model/config.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { IMPL_PORTABLE, IMPL_OPENBLAS, IMPL_DNNL, IMPL_MATMUL_F32, IMPL_MATMUL_BF16, N_IMPL };
static const char *impl_names[N_IMPL] = {"portable", "openblas", "dnnl", "dnnl_matmul_f32",
                                         "dnnl_matmul_bf16"};

typedef struct {
    char model[64], op[32];
    int M, N, K, ta, tb, threads;
    float beta;
    long per_step; /* times one training step runs it (0: not counted in the step estimate) */
} shape;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void set_threads(int n) {
    gemm_set_threads(n); /* OpenMP's, which oneDNN follows */
    openblas_set_num_threads(n);
}

static uint16_t to_bf16(float f) { /* round to nearest even; inputs here are finite */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* "avx2" for oneDNN's "cpu_isa_avx2" */
static const char *isa_name(unsigned isa) {
    const char *s = dnnl_cpu_isa2str((dnnl_cpu_isa_t)isa);
    return strncmp(s, "cpu_isa_", 8) ? s : s + 8;
}

static dnnl_engine_t engine;
static dnnl_stream_t stream;

/* A matmul primitive for one shape: src A [M, K], weights B [K, N] (transposes as strides), dst C
 * [M, N] fp32, beta through a sum post-op.  Returns NULL (and a reason) when it cannot be made. */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
    char info[96];
} matmul;

#define DNNL_OK(call, what)                                                                \
    do {                                                                                   \
        dnnl_status_t st_ = (call);                                                        \
        if (st_ != dnnl_success) {                                                         \
            snprintf(why, whylen, "%s: %s", what, dnnl_status2str(st_));                   \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

static matmul *matmul_create(const shape *s, dnnl_data_type_t dt, void *A, void *B, float *C,
                             char *why, size_t whylen) {
    matmul *m = calloc(1, sizeof *m);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    dnnl_dims_t ad = {s->M, s->K}, bd = {s->K, s->N}, cd = {s->M, s->N};
    dnnl_dims_t as = {s->ta ? 1 : lda, s->ta ? lda : 1}, bs = {s->tb ? 1 : ldb, s->tb ? ldb : 1};
    dnnl_dims_t cs = {s->N, 1};
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_matmul_desc_t md;
    DNNL_OK(dnnl_memory_desc_init_by_strides(&amd, 2, ad, dt, as), "A");
    DNNL_OK(dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dt, bs), "B");
    DNNL_OK(dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs), "C");
    DNNL_OK(dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd), "matmul_desc");
    DNNL_OK(dnnl_primitive_attr_create(&attr), "attr");
    if (s->beta != 0.0f) {
        DNNL_OK(dnnl_post_ops_create(&po), "post_ops");
        DNNL_OK(dnnl_post_ops_append_sum(po, s->beta), "sum");
        DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops");
    }
    DNNL_OK(dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL), "primitive_desc");
    const char *info = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) != dnnl_success || !info)
        info = "unknown";
    snprintf(m->info, sizeof m->info, "%s", info);
    DNNL_OK(dnnl_primitive_create(&m->prim, pd), "primitive");
    DNNL_OK(dnnl_memory_create(&m->a, &amd, engine, A), "memory A");
    DNNL_OK(dnnl_memory_create(&m->b, &bmd, engine, B), "memory B");
    DNNL_OK(dnnl_memory_create(&m->c, &cmd, engine, C), "memory C");
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    return m;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    if (m->prim) dnnl_primitive_destroy(m->prim);
    if (m->a) dnnl_memory_destroy(m->a);
    if (m->b) dnnl_memory_destroy(m->b);
    free(m);
    return NULL;
}

static void matmul_destroy(matmul *m) {
    if (!m) return;
    dnnl_primitive_destroy(m->prim);
    dnnl_memory_destroy(m->a);
    dnnl_memory_destroy(m->b);
    dnnl_memory_destroy(m->c);
    free(m);
}

static int matmul_run(const matmul *m) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, m->a}, {DNNL_ARG_WEIGHTS, m->b}, {DNNL_ARG_DST, m->c}};
    if (dnnl_primitive_execute(m->prim, stream, 3, args) != dnnl_success) return -1;
    return dnnl_stream_wait(stream) == dnnl_success ? 0 : -1;
}

typedef struct {
    const shape *s;
    const float *A, *B;
    float *C;
    const matmul *mm;
    int impl;
} call;

static int run_once(const call *c) {
    const shape *s = c->s;
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    switch (c->impl) {
    case IMPL_PORTABLE:
        gemm_portable(s->ta, s->tb, s->M, s->N, s->K, 1.0f, c->A, lda, c->B, ldb, s->beta, c->C, s->N);
        return 0;
    case IMPL_OPENBLAS:
        cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                    s->M, s->N, s->K, 1.0f, c->A, lda, c->B, ldb, s->beta, c->C, s->N);
        return 0;
    case IMPL_DNNL:
        return dnnl_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, 1.0f, c->A, lda,
                          c->B, ldb, s->beta, c->C, s->N) == dnnl_success ? 0 : -1;
    default:
        return matmul_run(c->mm);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One untimed call, then calls until min_time has passed and at least 3 were timed (at most
 * 1000).  Median and best seconds per call; -1 on failure. */
static int time_calls(const call *c, double min_time, double *median, double *best, int *reps) {
    enum { MAX_REPS = 1000 };
    static double t[MAX_REPS];
    if (run_once(c)) return -1;
    int n = 0;
    double start = now_s();
    while (n < MAX_REPS && (n < 3 || now_s() - start < min_time)) {
        double t0 = now_s();
        if (run_once(c)) return -1;
        t[n++] = now_s() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    *median = t[n / 2];
    *best = t[0];
    *reps = n;
    return 0;
}

static void fill(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
}

static int add_shape(shape *v, int n, const char *model, const char *op, int M, int N, int K,
                     int ta, int tb, float beta, int threads, long per_step) {
    shape *s = &v[n];
    memset(s, 0, sizeof *s);
    snprintf(s->model, sizeof s->model, "%.63s", model);
    snprintf(s->op, sizeof s->op, "%.31s", op);
    s->M = M, s->N = N, s->K = K, s->ta = ta, s->tb = tb, s->beta = beta;
    s->threads = threads, s->per_step = per_step;
    return n + 1;
}

/* A training step's products of one model (see the top of the file). */
static int model_shapes(shape *v, int n, const llama_config *c, int tokens, int seq, int threads) {
    const int d = c->hidden_size, f = c->intermediate_size, L = c->num_hidden_layers;
    const int hd = d / c->num_attention_heads, kv = c->num_key_value_heads * hd;
    typedef struct {
        const char *name;
        int in, out;
        long count;
    } linear;
    linear lin[4];
    int nl = 0;
    if (kv == d) {
        lin[nl++] = (linear){"attn", d, d, 4L * L};
    } else {
        lin[nl++] = (linear){"attn_qo", d, d, 2L * L};
        lin[nl++] = (linear){"attn_kv", d, kv, 2L * L};
    }
    lin[nl++] = (linear){"ffn_in", d, f, 2L * L};
    lin[nl++] = (linear){"ffn_out", f, d, 1L * L};
    char op[32];
    for (int i = 0; i < nl; i++) {
        snprintf(op, sizeof op, "%s.fwd", lin[i].name);
        n = add_shape(v, n, c->name, op, tokens, lin[i].out, lin[i].in, 0, 1, 0.0f, threads, lin[i].count);
        snprintf(op, sizeof op, "%s.bwd_x", lin[i].name);
        n = add_shape(v, n, c->name, op, tokens, lin[i].in, lin[i].out, 0, 0, 0.0f, threads, lin[i].count);
        snprintf(op, sizeof op, "%s.bwd_w", lin[i].name);
        n = add_shape(v, n, c->name, op, lin[i].out, lin[i].in, tokens, 1, 0, 1.0f, threads, lin[i].count);
    }
    const int chunk = tokens < 256 ? tokens : 256, V = c->vocab_size; /* llama.c's LOGIT_CHUNK */
    const long chunks = (tokens + chunk - 1) / chunk;
    n = add_shape(v, n, c->name, "lm_head.fwd", chunk, V, d, 0, 1, 0.0f, threads, chunks);
    n = add_shape(v, n, c->name, "lm_head.bwd_w", V, d, chunk, 1, 0, 1.0f, threads, chunks);
    n = add_shape(v, n, c->name, "lm_head.bwd_x", chunk, d, V, 0, 0, 0.0f, threads, chunks);
    /* attention's largest score blocks (64 query rows against all keys), one thread each */
    const int T = seq < 256 ? seq : 256, rows = T < 64 ? T : 64;
    n = add_shape(v, n, c->name, "attn.qk", rows, T, hd, 0, 1, 0.0f, 1, 0);
    n = add_shape(v, n, c->name, "attn.pv", rows, hd, T, 0, 0, 0.0f, 1, 0);
    return n;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: gemm_bench [--threads N] [--models 20m,60m] [--batch 8] [--seq 256]\n"
            "                  [--min-time S] [--impls LIST] [--no-square]\n"
            "       gemm_bench --openblas-coretype\n"
            "  --threads N      threads for every implementation (default 2)\n"
            "  --models LIST    model sizes whose training shapes to time (default 20m,60m; '' for none)\n"
            "  --batch, --seq   tokens per step = batch x seq (default 8 x 256)\n"
            "  --min-time S     seconds of timed calls per shape and implementation (default 0.3)\n"
            "  --impls LIST     of portable,openblas,dnnl,dnnl_matmul_f32,dnnl_matmul_bf16 (default all)\n"
            "  --no-square      leave out 2048^3\n"
            "  --openblas-coretype  print the OPENBLAS_CORETYPE this program (and loqt with\n"
            "                   BLAS=openblas) runs with, empty for OpenBLAS's own choice, and exit\n"
            "JSON lines on stdout (see the top of bench/gemm_bench.c).\n");
}

static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    /* OpenBLAS at its best kernels for this CPU (the choice loqt makes with BLAS=openblas);
     * re-executes once when the environment has to change */
    openblas_choose_kernels(argv);
    int threads = 2, batch = 8, seq = 256, square = 1;
    double min_time = 0.3;
    const char *models = "20m,60m", *impls = "portable,openblas,dnnl,dnnl_matmul_f32,dnnl_matmul_bf16";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--openblas-coretype")) {
            const char *ct = getenv("OPENBLAS_CORETYPE");
            printf("%s\n", ct ? ct : "");
            return 0;
        } else if (!strcmp(a, "--no-square")) {
            square = 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (val && !strcmp(a, "--threads")) {
            threads = atoi(val), i++;
        } else if (val && !strcmp(a, "--batch")) {
            batch = atoi(val), i++;
        } else if (val && !strcmp(a, "--seq")) {
            seq = atoi(val), i++;
        } else if (val && !strcmp(a, "--min-time")) {
            min_time = atof(val), i++;
        } else if (val && !strcmp(a, "--models")) {
            models = val, i++;
        } else if (val && !strcmp(a, "--impls")) {
            impls = val, i++;
        } else {
            fprintf(stderr, "gemm_bench: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (threads < 1 || batch < 1 || seq < 1 || !(min_time >= 0)) {
        fprintf(stderr, "gemm_bench: --threads, --batch and --seq must be >= 1, --min-time >= 0\n");
        return 2;
    }
    int use[N_IMPL];
    for (int k = 0; k < N_IMPL; k++) use[k] = in_list(impls, impl_names[k]);
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "gemm_bench: cannot create a oneDNN CPU engine\n");
        return 1;
    }

    /* the CPU's bf16 instructions, as oneDNN sees them (AVX512_BF16, or AMX, whose ISA mask
     * contains it); ONEDNN_MAX_CPU_ISA lowers what it sees */
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const int bf16_native = (isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
                            (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    const dnnl_version_t *ver = dnnl_version();
    const char *ct = getenv("OPENBLAS_CORETYPE");
    set_threads(threads);
    printf("{\"kind\":\"gemm_info\",\"threads\":%d,\"loqt_backend\":\"%s\",\"loqt_kernels\":\"%s\","
           "\"dnnl_version\":\"%d.%d.%d\",\"dnnl_isa\":\"%s\",\"bf16_native\":%s,"
           "\"openblas_core\":\"%s\",\"openblas_coretype\":\"%s\",\"openblas_threads\":%d,"
           "\"omp_max_threads\":%d,\"dnnl_runtime\":\"%s\"}\n",
           threads, gemm_backend(), gemm_kernels(), ver->major, ver->minor, ver->patch,
           isa_name(isa), bf16_native ? "true" : "false", openblas_get_corename(),
           ct ? ct : "", openblas_get_num_threads(),
#ifdef _OPENMP
           omp_get_max_threads()
#else
           1
#endif
           , dnnl_runtime2str(ver->cpu_runtime));
    fflush(stdout);

    static shape shapes[256];
    int ns = 0;
    llama_config cfgs[16];
    int ncfg = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", models);
    for (char *tok = strtok(list, ","); tok && ncfg < 16; tok = strtok(NULL, ",")) {
        if (config_load(&cfgs[ncfg], tok)) {
            fprintf(stderr, "gemm_bench: unknown model '%s'\n", tok);
            return 2;
        }
        ns = model_shapes(shapes, ns, &cfgs[ncfg], batch * seq, seq, threads);
        ncfg++;
    }
    if (square) ns = add_shape(shapes, ns, "", "square", 2048, 2048, 2048, 0, 0, 0.0f, threads, 0);

    /* median seconds per call, per shape and implementation (-1: not timed) */
    static double sec[256][N_IMPL];
    double peak[2] = {0, 0};
    char peak_impl[2][96] = {"", ""};
    int failed = 0;
    for (int i = 0; i < ns; i++) {
        const shape *s = &shapes[i];
        const size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
        float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb);
        float *C = malloc(sizeof(float) * nc);
        uint16_t *A16 = malloc(sizeof(uint16_t) * na), *B16 = malloc(sizeof(uint16_t) * nb);
        if (!A || !B || !C || !A16 || !B16) {
            fprintf(stderr, "gemm_bench: out of memory for %s %s\n", s->model, s->op);
            return 1;
        }
        fill(A, na, 1);
        fill(B, nb, 2);
        /* beta 1 accumulates into C over many calls: small values keep it far from overflow */
        for (size_t j = 0; j < nc; j++) C[j] = 0.0f;
        for (size_t j = 0; j < na; j++) A16[j] = to_bf16(A[j]);
        for (size_t j = 0; j < nb; j++) B16[j] = to_bf16(B[j]);
        set_threads(s->threads);
        const double flop = 2.0 * s->M * s->N * s->K;
        for (int k = 0; k < N_IMPL; k++) {
            sec[i][k] = -1;
            if (!use[k]) continue;
            call c = {s, A, B, C, NULL, k};
            matmul *mm = NULL;
            char why[160] = "", info[96] = "";
            if (k == IMPL_MATMUL_F32 || k == IMPL_MATMUL_BF16) {
                const int bf = k == IMPL_MATMUL_BF16;
                mm = matmul_create(s, bf ? dnnl_bf16 : dnnl_f32, bf ? (void *)A16 : (void *)A,
                                   bf ? (void *)B16 : (void *)B, C, why, sizeof why);
                if (mm) snprintf(info, sizeof info, "%s", mm->info);
                c.mm = mm;
                if (!mm && bf && strstr(why, "unimplemented"))
                    /* oneDNN 2.6 has bf16 matmul kernels for AVX-512 and AMX only */
                    snprintf(why, sizeof why, "bf16 matmul not implemented by oneDNN %d.%d on this CPU (%s)",
                             ver->major, ver->minor, isa_name(isa));
                /* a reference loop is a correctness fallback, orders of magnitude off: its
                 * name is the result */
                if (mm && !strncmp(mm->info, "ref", 3)) {
                    snprintf(why, sizeof why, "only oneDNN's reference implementation (%s)", mm->info);
                    matmul_destroy(mm);
                    mm = NULL;
                }
            } else if (k == IMPL_OPENBLAS) {
                snprintf(info, sizeof info, "%s", openblas_get_corename());
            } else if (k == IMPL_DNNL) {
                snprintf(info, sizeof info, "%s", isa_name(isa));
            }
            double med = 0, best = 0;
            int reps = 0;
            const int ok = (k != IMPL_MATMUL_F32 && k != IMPL_MATMUL_BF16) || mm;
            if (ok && time_calls(&c, min_time, &med, &best, &reps)) snprintf(why, sizeof why, "call failed");
            const int timed = ok && !why[0];
            printf("{\"kind\":\"gemm\",\"model\":\"%s\",\"op\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,"
                   "\"ta\":%d,\"tb\":%d,\"beta\":%g,\"threads\":%d,\"per_step\":%ld,\"impl\":\"%s\","
                   "\"dtype\":\"%s\",\"loqt\":%s,\"impl_info\":\"%s\"",
                   s->model, s->op, s->M, s->N, s->K, s->ta, s->tb, (double)s->beta, s->threads,
                   s->per_step, impl_names[k], k == IMPL_MATMUL_BF16 ? "bf16" : "f32",
                   !strcmp(impl_names[k], gemm_backend()) ? "true" : "false", info);
            if (timed) {
                printf(",\"gflops\":%.1f,\"best_gflops\":%.1f,\"ms\":%.4f,\"reps\":%d}\n",
                       flop / med / 1e9, flop / best / 1e9, med * 1e3, reps);
                sec[i][k] = med;
                if (!strcmp(s->op, "square")) {
                    int p = k == IMPL_MATMUL_BF16;
                    if (flop / med / 1e9 > peak[p]) {
                        peak[p] = flop / med / 1e9;
                        snprintf(peak_impl[p], sizeof peak_impl[p], "%s%s%s", impl_names[k],
                                 info[0] ? " " : "", info);
                    }
                }
            } else {
                printf(",\"gflops\":null,\"skipped\":\"%s\"}\n", why);
                /* a missing bf16 path is a finding about the CPU, not a failure */
                if (k != IMPL_MATMUL_BF16) failed = 1;
            }
            fflush(stdout);
            matmul_destroy(mm);
        }
        free(A), free(B), free(C), free(A16), free(B16);
    }
    set_threads(threads);

    for (int m = 0; m < ncfg; m++) {
        const llama_config *c = &cfgs[m];
        const double d = c->hidden_size, f = c->intermediate_size, L = c->num_hidden_layers;
        const double kv = (double)c->num_key_value_heads * (d / c->num_attention_heads);
        const double matrix = L * (2 * d * d + 2 * d * kv + 3 * d * f) + (double)c->vocab_size * d;
        const double flop_token = 6 * matrix + 12 * L * seq * d;
        for (int k = 0; k < N_IMPL; k++) {
            if (!use[k]) continue;
            double flop = 0, t = 0;
            int complete = 1;
            for (int i = 0; i < ns; i++) {
                const shape *s = &shapes[i];
                if (strcmp(s->model, c->name) || !s->per_step) continue;
                flop += 2.0 * s->M * s->N * s->K * s->per_step;
                if (sec[i][k] < 0) complete = 0;
                else t += sec[i][k] * s->per_step;
            }
            if (!complete) continue;
            printf("{\"kind\":\"gemm_model\",\"model\":\"%s\",\"impl\":\"%s\",\"tokens\":%d,"
                   "\"matrix_params\":%.0f,\"flop_per_token\":%.0f,\"step_gemm_gflop\":%.3f,"
                   "\"step_gemm_s\":%.4f,\"step_gemm_gflops\":%.1f,\"tokens_per_s_gemm_only\":%.0f}\n",
                   c->name, impl_names[k], batch * seq, matrix, flop_token, flop / 1e9, t,
                   flop / t / 1e9, batch * seq / t);
        }
    }
    printf("{\"kind\":\"gemm_peak\",\"threads\":%d,\"fp32_gflops\":", threads);
    if (peak[0] > 0) printf("%.1f,\"fp32_impl\":\"%s\"", peak[0], peak_impl[0]);
    else printf("null");
    printf(",\"bf16_gflops\":");
    if (peak[1] > 0) printf("%.1f,\"bf16_impl\":\"%s\"", peak[1], peak_impl[1]);
    else printf("null");
    printf(",\"bf16_native\":%s}\n", bf16_native ? "true" : "false");
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    return failed;
}
