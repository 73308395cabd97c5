#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[512];

int loqt_set_error(const char *fmt, ...) {
    /* format into a local buffer first: callers often pass loqt_last_error() as an argument */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    /* keep it one line: a message built from file contents must not break the format */
    for (char *p = last_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return -1;
}

const char *loqt_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

void loqt_clear_error(void) { last_error[0] = 0; }

static LOQT_NORETURN void die_with(int status, const char *fmt, va_list ap) {
    char msg[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fflush(stdout);
    fprintf(stderr, "loqt: error: %s\n", msg);
    exit(status);
}

void loqt_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    die_with(1, fmt, ap);
}

void loqt_usage_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    die_with(2, fmt, ap);
}

void loqt_die_last(const char *context) {
    if (context && *context) loqt_die("%s: %s", context, loqt_last_error());
    loqt_die("%s", loqt_last_error());
}
