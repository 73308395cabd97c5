/* Error reporting for loqt.
 *
 * Library code never exits: a function that can fail on bad input returns a negative value (or NULL)
 * after recording a one-line message with loqt_set_error().  The command-line layer prints that
 * message and exits non-zero (loqt_die).  Tests read it back with loqt_last_error(). */
#ifndef LOQT_ERROR_H
#define LOQT_ERROR_H

#include <stdarg.h>

#if defined(__GNUC__)
#define LOQT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LOQT_NORETURN __attribute__((noreturn))
#else
#define LOQT_PRINTF(a, b)
#define LOQT_NORETURN
#endif

/* Records a message (thread-local) and returns -1 so callers can write `return loqt_set_error(...)`. */
int loqt_set_error(const char *fmt, ...) LOQT_PRINTF(1, 2);
const char *loqt_last_error(void);
void loqt_clear_error(void);

/* Prints "loqt: error: <message>" on one line to stderr and exits with status 1. */
LOQT_NORETURN void loqt_die(const char *fmt, ...) LOQT_PRINTF(1, 2);
/* The same for a usage error (options that cannot go together, a value out of range): exit 2.
 * Exit statuses: 0 done, 1 a bad file or a failure while running, 2 a usage error, 128 + N
 * stopped by signal N after writing a checkpoint (docs/bad_input.md). */
LOQT_NORETURN void loqt_usage_die(const char *fmt, ...) LOQT_PRINTF(1, 2);
/* loqt_die with the last recorded error, prefixed by a context string. */
LOQT_NORETURN void loqt_die_last(const char *context);

#endif
