#include "optim/schedule.h"

#include <math.h>
#include <string.h>

int sched_parse(const char *name, sched_kind *out) {
    if (!strcmp(name, "cosine")) *out = SCHED_COSINE;
    else if (!strcmp(name, "linear")) *out = SCHED_LINEAR;
    else if (!strcmp(name, "constant")) *out = SCHED_CONSTANT;
    else return -1;
    return 0;
}

double sched_lr(const lr_schedule *s, long step) {
    if (step < s->warmup_steps) return s->lr * (double)step / (double)s->warmup_steps;
    if (s->kind == SCHED_CONSTANT) return s->lr;
    long span = s->total_steps - s->warmup_steps;
    double progress = span > 0 ? (double)(step - s->warmup_steps) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    double decay = s->kind == SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * progress)) : 1.0 - progress;
    return s->lr * (s->min_lr_ratio + (1.0 - s->min_lr_ratio) * decay);
}
