/* A minimal test harness: each test_*.c is one program whose main() calls RUN(fn) for each test
 * function and ends with TEST_END(), which prints "N passed, N failed".  A test fails if any CHECK
 * inside it fails; every CHECK states its tolerance. */
#ifndef LOQT_TEST_H
#define LOQT_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int test_passed, test_failed, test_cur_failed;

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (!(cond)) {                                                              \
            test_cur_failed = 1;                                                    \
            fprintf(stdout, "    check failed at %s:%d: ", __FILE__, __LINE__);     \
            fprintf(stdout, __VA_ARGS__);                                           \
            fprintf(stdout, "\n");                                                  \
        }                                                                           \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                          \
    do {                                                                                       \
        double a_ = (double)(a), b_ = (double)(b);                                             \
        CHECK(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_) && !isnan(a_) && !isnan(b_),            \
              "%s = %.9g, %s = %.9g (atol %g, rtol %g)", #a, a_, #b, b_, (double)(atol),      \
              (double)(rtol));                                                                 \
    } while (0)

#define RUN(fn)                                                  \
    do {                                                         \
        test_cur_failed = 0;                                     \
        fn();                                                    \
        if (test_cur_failed) {                                   \
            test_failed++;                                       \
            fprintf(stdout, "FAIL %s\n", #fn);                   \
        } else {                                                 \
            test_passed++;                                       \
            fprintf(stdout, "ok   %s\n", #fn);                   \
        }                                                        \
        fflush(stdout);                                          \
    } while (0)

/* A reference file written by tests/gen_*.py, LOQT_REF_DIR/<printf(fmt, ...)> (default build/ref),
 * read whole: malloc'd, its size in *bytes; NULL (and 0 bytes) when it is missing. */
#include <stdarg.h>
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline void *test_read_ref(size_t *bytes, const char *fmt, ...) {
    const char *dir = getenv("LOQT_REF_DIR");
    char name[512], path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "build/ref", name);
    *bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(sz > 0 ? (size_t)sz : 1);
    *bytes = fread(p, 1, sz > 0 ? (size_t)sz : 0, f);
    fclose(f);
    return p;
}

#define TEST_END()                                                           \
    do {                                                                     \
        fprintf(stdout, "%d passed, %d failed\n", test_passed, test_failed); \
        return test_failed ? 1 : 0;                                          \
    } while (0)

/* Largest |a-b| / (atol + rtol*|b|) over n elements: <= 1 means all within tolerance. */
static inline double test_max_violation(const float *a, const float *b, size_t n, double atol,
                                        double rtol, size_t *where) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (d > worst || isnan(d)) {
            worst = isnan(d) ? INFINITY : d;
            if (where) *where = i;
        }
    }
    return worst;
}

/* Deterministic test data: a small LCG + Box-Muller, independent of the library's RNG (which is
 * what some of the code under test uses).  test_seed() restarts the sequence. */
static uint64_t test_lcg_state = 88172645463325252ull;
static inline void test_seed(uint64_t seed) { test_lcg_state = seed; }
static inline double test_uniform(void) { /* in (0, 1) */
    test_lcg_state = test_lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(test_lcg_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static inline double test_randn(void) {
    return sqrt(-2.0 * log(test_uniform())) * cos(6.283185307179586 * test_uniform());
}
static inline void test_fill_randn(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)test_randn();
}

static inline void test_set_omp_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Creates $TMPDIR/loqt_test_<tag>_XXXXXX (or under /tmp) into buf; 0 on success. */
static inline int test_make_tmpdir(char *buf, size_t cap, const char *tag) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/loqt_test_%s_XXXXXX", t && *t ? t : "/tmp", tag);
    if (mkdtemp(buf)) return 0;
    printf("cannot create a temporary directory\n");
    return -1;
}

#endif
