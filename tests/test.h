/* A minimal test harness: each test_*.c is one program whose main() calls RUN(fn) for each test
 * function and ends with TEST_END(), which prints "N passed, N failed".  A test fails if any CHECK
 * inside it fails; every CHECK states its tolerance. */
#ifndef LOQT_TEST_H
#define LOQT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
