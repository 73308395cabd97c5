/* Learning-rate schedules, as in the GaLore/LoQT reference scripts ("cosine" with linear warmup). */
#ifndef LOQT_SCHEDULE_H
#define LOQT_SCHEDULE_H

typedef enum { SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT } sched_kind;

typedef struct {
    sched_kind kind;
    double lr;           /* peak */
    long warmup_steps;
    long total_steps;
    double min_lr_ratio; /* floor as a fraction of the peak */
} lr_schedule;

int sched_parse(const char *name, sched_kind *out);
/* Learning rate for optimizer step `step` (0-based: the first update uses step 0, whose warmup
 * multiplier is 0 exactly as torch's LambdaLR gives before its first scheduler.step()). */
double sched_lr(const lr_schedule *s, long step);

#endif
