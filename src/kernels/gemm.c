#include "kernels/gemm.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef LOQT_OPENBLAS
#include <cblas.h>
#endif
#ifdef LOQT_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
/* gemm_set_threads and the single-thread behaviour inside our parallel regions rely on oneDNN
 * taking its threads from the same OpenMP runtime as ours: with its OpenMP runtime it asks
 * omp_get_max_threads() for the team size and runs on one thread when omp_in_parallel(). */
#if DNNL_CPU_THREADING_RUNTIME != DNNL_RUNTIME_OMP
#error "BLAS=dnnl needs a oneDNN built with its OpenMP threading runtime (Debian's libdnnl-dev is)"
#endif
#endif

/* Portable kernel: C is split into 64 x 256 tiles processed in parallel; within a tile the K loop
 * is blocked so a panel of op(B) stays in cache, and the innermost loop runs over contiguous
 * columns of C so the compiler vectorises it.  Transposed operands are read through strides. */
enum { TM = 64, TN = 256, TK = 256 };

static void tile(bool ta, bool tb, int m0, int m1, int n0, int n1, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
    float bpanel[TK * TN];
    for (int k0 = 0; k0 < K; k0 += TK) {
        int k1 = k0 + TK < K ? k0 + TK : K;
        int nn = n1 - n0;
        for (int k = k0; k < k1; k++)
            for (int j = 0; j < nn; j++)
                bpanel[(k - k0) * TN + j] = tb ? B[(size_t)(n0 + j) * ldb + k]
                                               : B[(size_t)k * ldb + n0 + j];
        for (int i = m0; i < m1; i++) {
            float *c = C + (size_t)i * ldc + n0;
            for (int k = k0; k < k1; k++) {
                float a = alpha * (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                const float *b = bpanel + (k - k0) * TN;
                for (int j = 0; j < nn; j++) c[j] += a * b[j];
            }
        }
    }
}

void gemm_portable(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
    if (K <= 0 || alpha == 0.0f) return;
    int tiles_m = (M + TM - 1) / TM, tiles_n = (N + TN - 1) / TN;
    int ntiles = tiles_m * tiles_n;
#ifdef _OPENMP
    int par = !omp_in_parallel() && (double)M * N * K > 1e6;
#endif
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int t = 0; t < ntiles; t++) {
        int tm = t / tiles_n, tn = t % tiles_n;
        int m0 = tm * TM, n0 = tn * TN;
        int m1 = m0 + TM < M ? m0 + TM : M, n1 = n0 + TN < N ? n0 + TN : N;
        tile(ta, tb, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, C, ldc);
    }
}

static void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);
static gemm_compute compute; /* GEMM_FP32 */

/* The fp32 product on the configured backend. */
static void gemm_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef LOQT_OPENBLAS
    if (K <= 0) {
        gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#elif defined(LOQT_DNNL)
    /* dnnl_sgemm, not a cached matmul primitive: it is row-major like us, takes any leading
     * dimensions and alpha/beta per call, keeps no state between calls (so it is safe from many
     * threads at once), and picks its kernels for the CPU it runs on (AVX2, AVX-512, ...) by
     * itself.  K = 0 is left to the portable path, which only scales C. */
    if (K <= 0) {
        gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                  beta, C, ldc);
    /* It refuses only what BLAS would (our callers never pass that) or fails to allocate its
     * packing buffers, possibly with part of C written: like any other allocation failure
     * (mem_alloc), that ends the program rather than leaving a wrong product behind. */
    if (st != dnnl_success)
        loqt_die("gemm: oneDNN's sgemm failed (%s) for M %d N %d K %d, lda %d ldb %d ldc %d",
                 dnnl_status2str(st), M, N, K, lda, ldb, ldc);
#else
    gemm_portable(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    /* K = 0 or alpha = 0 only scale C: no operand is read, nothing to round */
    if (compute.dtype == GEMM_BF16 && K > 0 && alpha != 0.0f)
        gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char *gemm_backend(void) {
#if defined(LOQT_OPENBLAS)
    return "openblas";
#elif defined(LOQT_DNNL)
    return "dnnl";
#else
    return "portable";
#endif
}

const char *gemm_kernels(void) {
#if defined(LOQT_OPENBLAS)
    const char *name = openblas_get_corename(); /* what it loaded, after OPENBLAS_CORETYPE */
    return name && *name ? name : "unknown";
#elif defined(LOQT_DNNL)
    /* the widest instruction set oneDNN's kernels use on this CPU ("avx2", ...) */
    const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    return strncmp(isa, "cpu_isa_", 8) ? isa : isa + 8;
#else
    return "c";
#endif
}

void gemm_set_threads(int n) {
    if (n <= 0) return;
#ifdef _OPENMP
    /* also oneDNN's team size (BLAS=dnnl): it asks the OpenMP runtime */
    omp_set_num_threads(n);
#endif
#ifdef LOQT_OPENBLAS
    openblas_set_num_threads(n);
#endif
}

/* ==== bf16 compute ============================================================================ */

gemm_compute gemm_set_compute(gemm_compute c) {
    gemm_compute prev = compute;
    compute = c;
    return prev;
}

gemm_compute gemm_get_compute(void) { return compute; }

/* One slot: a TILE x TILE tile of each operand, in fp32 (the emulation; a native bf16 tile takes
 * half of that), so the size does not depend on which path the CPU gets. */
static const size_t SLOT_FLOATS = 2 * (size_t)GEMM_BF16_TILE * GEMM_BF16_TILE;

size_t gemm_bf16_scratch_bytes(int slots) { return (size_t)(slots < 1 ? 1 : slots) * SLOT_FLOATS * sizeof(float); }

/* bf16 bits of x, rounded to nearest even (torch's round_to_nearest_even): adding 0x7fff plus
 * the lowest kept bit carries into the kept half exactly when the dropped half is above one
 * half, or equal to it with an odd kept half.  Infinities stay; NaN becomes a quiet NaN (the
 * addition could otherwise carry a NaN's payload into infinity). */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float gemm_bf16_round(float x) {
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float y;
    memcpy(&y, &u, sizeof y);
    return y;
}

/* rows [r0, r1) x columns [c0, c1) of the row-major src (leading dimension ld), rounded, into the
 * dense dst (leading dimension c1 - c0): as floats (f32 = 1) or as bf16 bits.  Split over the
 * threads when called outside a parallel region and large enough to be worth it. */
static void round_tile(void *dst, int f32, const float *src, int ld, int r0, int r1, int c0, int c1) {
    const int w = c1 - c0;
#ifdef _OPENMP
    const int par = !omp_in_parallel() && (long)(r1 - r0) * w >= 65536;
#endif
#pragma omp parallel for schedule(static) if (par)
    for (int r = r0; r < r1; r++) {
        const float *s = src + (size_t)r * ld + c0;
        if (f32) {
            float *d = (float *)dst + (size_t)(r - r0) * w;
            for (int j = 0; j < w; j++) d[j] = gemm_bf16_round(s[j]);
        } else {
            uint16_t *d = (uint16_t *)dst + (size_t)(r - r0) * w;
            for (int j = 0; j < w; j++) d[j] = bf16_bits(s[j]);
        }
    }
}

static int force_emulation = -1; /* -1: not decided yet (LOQT_BF16_GEMM read at the first use) */

void gemm_bf16_force_emulation(int on) { force_emulation = on != 0; }

#ifdef LOQT_DNNL
static int emulation_forced(void) {
    if (force_emulation < 0) {
        const char *e = getenv("LOQT_BF16_GEMM");
        force_emulation = e && !strcmp(e, "emulated");
    }
    return force_emulation;
}

/* ---- oneDNN's bf16 matmul ------------------------------------------------------------------
 * Whether the CPU has one is asked once, by creating the primitive descriptor of a small bf16 x
 * bf16 -> f32 matmul (oneDNN 2.6 implements it for AVX512_BF16 and AMX, not for AVX2).  Every
 * primitive uses a user-provided scratchpad: with the library's own, a primitive may only run on
 * the thread that created it, and ours run on whichever OpenMP thread calls gemm(). */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static int native_ok;
static char native_impl[96], native_why[160];

static void probe(void) {
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) {
        snprintf(native_why, sizeof native_why, "no oneDNN CPU engine");
        return;
    }
    const dnnl_dims_t ad = {64, 64}, bd = {64, 64}, cd = {64, 64}, st = {64, 1};
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    if (!strncmp(isa, "cpu_isa_", 8)) isa += 8;
    if (dnnl_memory_desc_init_by_strides(&amd, 2, ad, dnnl_bf16, st) == dnnl_success &&
        dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dnnl_bf16, st) == dnnl_success &&
        dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, st) == dnnl_success &&
        dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL) == dnnl_success) {
        const char *info = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) != dnnl_success || !info) info = "?";
        /* a reference implementation would be far slower than rounding plus the fp32 GEMM */
        if (strncmp(info, "ref", 3)) {
            native_ok = 1;
            snprintf(native_impl, sizeof native_impl, "%s", info);
        } else {
            snprintf(native_why, sizeof native_why, "only oneDNN's reference bf16 matmul on this CPU, %s", isa);
        }
        dnnl_primitive_desc_destroy(pd);
    } else {
        snprintf(native_why, sizeof native_why, "no bf16 matmul in oneDNN on this CPU, %s", isa);
    }
}

/* The primitive of one tile shape: op(A) mb x kb, op(B) kb x nb (dense, transposed as stored),
 * C with leading dimension ldc, alpha as output scale, beta as a sum post-op. */
typedef struct {
    int mb, nb, kb, ta, tb, ldc;
    uint32_t alpha, beta; /* float bits */
} prim_key;

enum { PRIM_CACHE = 64 };
typedef struct {
    prim_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t amd, bmd, cmd, spmd;
    int in_use;           /* executions running now: an entry in use is never evicted */
    unsigned long used;   /* last use, for least-recently-used eviction */
} prim_entry;

static prim_entry cache[PRIM_CACHE];
static int cache_n;
static unsigned long cache_clock;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t fbits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static int prim_create(prim_entry *e, const prim_key *k, float alpha, float beta) {
    const dnnl_dims_t ad = {k->mb, k->kb}, bd = {k->kb, k->nb}, cd = {k->mb, k->nb};
    const dnnl_dims_t as = {k->ta ? 1 : k->kb, k->ta ? k->mb : 1}, bs = {k->tb ? 1 : k->nb, k->tb ? k->kb : 1};
    const dnnl_dims_t cs = {k->ldc, 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_memory_desc_init_by_strides(&e->amd, 2, ad, dnnl_bf16, as) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&e->bmd, 2, bd, dnnl_bf16, bs) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&e->cmd, 2, cd, dnnl_f32, cs) == dnnl_success &&
             dnnl_matmul_desc_init(&md, &e->amd, &e->bmd, NULL, &e->cmd) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && alpha != 1.0f) ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
    if (ok && beta != 0.0f)
        ok = dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL) == dnnl_success;
    if (ok) {
        const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (sp) e->spmd = *sp;
        else memset(&e->spmd, 0, sizeof e->spmd);
        ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    if (ok) e->key = *k;
    return ok ? 0 : -1;
}

/* The cached primitive of k, marked in use (release with prim_release); when the cache is full
 * of entries in use, a private one that the caller destroys (*owned = 1).  NULL: oneDNN refused. */
static prim_entry *prim_get(const prim_key *k, float alpha, float beta, prim_entry *priv, int *owned) {
    *owned = 0;
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < cache_n; i++)
        if (!memcmp(&cache[i].key, k, sizeof *k)) {
            cache[i].in_use++;
            cache[i].used = ++cache_clock;
            pthread_mutex_unlock(&cache_lock);
            return &cache[i];
        }
    /* created under the lock: creation is rare (a bounded set of tile shapes per run) */
    prim_entry *e = NULL;
    if (cache_n < PRIM_CACHE) e = &cache[cache_n];
    else
        for (int i = 0; i < PRIM_CACHE; i++)
            if (!cache[i].in_use && (!e || cache[i].used < e->used)) e = &cache[i];
    if (e && e->prim) {
        dnnl_primitive_destroy(e->prim);
        e->prim = NULL;
    }
    prim_entry *dst = e ? e : priv;
    memset(&dst->key, 0xff, sizeof dst->key); /* matches nothing until created */
    if (prim_create(dst, k, alpha, beta)) {
        pthread_mutex_unlock(&cache_lock);
        return NULL;
    }
    if (e) {
        if (e == &cache[cache_n]) cache_n++;
        e->in_use = 1;
        e->used = ++cache_clock;
    } else {
        *owned = 1;
    }
    pthread_mutex_unlock(&cache_lock);
    return dst;
}

static void prim_release(prim_entry *e, int owned) {
    if (owned) {
        dnnl_primitive_destroy(e->prim);
        return;
    }
    pthread_mutex_lock(&cache_lock);
    e->in_use--;
    pthread_mutex_unlock(&cache_lock);
}

/* C tile (mb x nb at C, ldc) = alpha op(At) op(Bt) + beta C on the bf16 tiles. */
static void matmul_tile(const prim_key *k, float alpha, float beta, const void *At, const void *Bt, float *C) {
    prim_entry priv = {0}, *e;
    int owned;
    if (!(e = prim_get(k, alpha, beta, &priv, &owned)))
        loqt_die("gemm: oneDNN refused a bf16 matmul of %d x %d x %d (ldc %d)", k->mb, k->nb, k->kb, k->ldc);
    dnnl_memory_t a = NULL, b = NULL, c = NULL, sp = NULL;
    dnnl_stream_t stream = NULL;
    const size_t spn = dnnl_memory_desc_get_size(&e->spmd);
    void *spbuf = spn ? aligned_alloc(64, (spn + 63) / 64 * 64) : NULL;
    int ok = (!spn || spbuf) &&
             dnnl_memory_create(&a, &e->amd, engine, (void *)At) == dnnl_success &&
             dnnl_memory_create(&b, &e->bmd, engine, (void *)Bt) == dnnl_success &&
             dnnl_memory_create(&c, &e->cmd, engine, C) == dnnl_success &&
             (!spn || dnnl_memory_create(&sp, &e->spmd, engine, spbuf) == dnnl_success) &&
             dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, sp}};
        ok = dnnl_primitive_execute(e->prim, stream, spn ? 4 : 3, args) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
    }
    if (stream) dnnl_stream_destroy(stream);
    if (a) dnnl_memory_destroy(a);
    if (b) dnnl_memory_destroy(b);
    if (c) dnnl_memory_destroy(c);
    if (sp) dnnl_memory_destroy(sp);
    free(spbuf);
    prim_release(e, owned);
    /* as for dnnl_sgemm: a failed product (its scratchpad not allocated) ends the program */
    if (!ok) loqt_die("gemm: oneDNN's bf16 matmul failed for %d x %d x %d", k->mb, k->nb, k->kb);
}

int gemm_bf16_native(void) {
    pthread_once(&probe_once, probe);
    return native_ok && !emulation_forced();
}

void gemm_bf16_describe(char *buf, size_t cap) {
    pthread_once(&probe_once, probe);
    if (gemm_bf16_native()) snprintf(buf, cap, "native (%s)", native_impl);
    else if (native_ok) snprintf(buf, cap, "emulated (LOQT_BF16_GEMM=emulated; native %s available)", native_impl);
    else snprintf(buf, cap, "emulated (%s)", native_why);
}
#else
int gemm_bf16_native(void) { return 0; }

void gemm_bf16_describe(char *buf, size_t cap) {
    snprintf(buf, cap, "emulated (a bf16 matmul needs BLAS=dnnl)");
}
#endif

/* Tile by tile: for each block of rows of op(A) and each block of K, the A tile is rounded once
 * and every B tile of that K block after it; each product adds into C (beta on the first K block
 * only).  The tiles keep the operands' layout (a transposed operand stays transposed), so the
 * copies read rows. */
static void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    const int TS = GEMM_BF16_TILE;
#ifdef _OPENMP
    const int slot = omp_in_parallel() ? omp_get_thread_num() : 0;
#else
    const int slot = 0;
#endif
    if (!compute.scratch || slot >= compute.slots)
        loqt_die("gemm: bf16 compute without scratch for thread %d (%d slots)", slot, compute.slots);
    float *At = (float *)compute.scratch + (size_t)slot * SLOT_FLOATS, *Bt = At + (size_t)TS * TS;
    const int native = gemm_bf16_native();
    for (int m0 = 0; m0 < M; m0 += TS) {
        const int mb = M - m0 < TS ? M - m0 : TS;
        for (int k0 = 0; k0 < K; k0 += TS) {
            const int kb = K - k0 < TS ? K - k0 : TS;
            /* op(A) rows m0.., columns k0..: stored rows k0.. x columns m0.. when transposed */
            if (ta) round_tile(At, !native, A, lda, k0, k0 + kb, m0, m0 + mb);
            else round_tile(At, !native, A, lda, m0, m0 + mb, k0, k0 + kb);
            const float be = k0 ? 1.0f : beta;
            for (int n0 = 0; n0 < N; n0 += TS) {
                const int nb = N - n0 < TS ? N - n0 : TS;
                if (tb) round_tile(Bt, !native, B, ldb, n0, n0 + nb, k0, k0 + kb);
                else round_tile(Bt, !native, B, ldb, k0, k0 + kb, n0, n0 + nb);
                float *Ct = C + (size_t)m0 * ldc + n0;
#ifdef LOQT_DNNL
                if (native) {
                    const prim_key key = {mb, nb, kb, ta, tb, ldc, fbits(alpha), fbits(be)};
                    matmul_tile(&key, alpha, be, At, Bt, Ct);
                    continue;
                }
#endif
                gemm_f32(ta, tb, mb, nb, kb, alpha, At, ta ? mb : kb, Bt, tb ? kb : nb, be, Ct, ldc);
            }
        }
    }
}
