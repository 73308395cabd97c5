/* Progress lines for long work (a 7B refresh takes minutes).  They go to stderr as
 * "loqt: <message>", so stdout stays machine-readable; LOQT_QUIET=1 in the environment silences
 * them. */
#ifndef LOQT_PROGRESS_H
#define LOQT_PROGRESS_H

#include "core/error.h"

double loqt_now(void); /* monotonic seconds */
void loqt_progress(const char *fmt, ...) LOQT_PRINTF(1, 2);

#endif
