#define _POSIX_C_SOURCE 200809L
#include "core/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double loqt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void loqt_progress(const char *fmt, ...) {
    static int quiet = -1;
    if (quiet < 0) {
        const char *q = getenv("LOQT_QUIET");
        quiet = q && *q && *q != '0';
    }
    if (quiet) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loqt: %s\n", buf);
    fflush(stderr);
}
