/* Five-field cron expressions ("minute hour day-of-month month day-of-week"), as crontab(5)
 * reads them: numbers, a star, ranges a-b, lists a,b,c, steps (star or a-b, then /n), month and
 * day names (jan, mon), 7 for Sunday; when both day fields are restricted, a day matching either
 * fires.
 * Pure functions over UTC: which zone a schedule means is the caller's business. */
#ifndef QWORKER_CRON_H
#define QWORKER_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cron {
    uint64_t minutes; /* bit n: minute n fires */
    uint32_t hours;
    uint32_t mdays; /* bits 1..31 */
    uint16_t months; /* bits 1..12 */
    uint8_t wdays;  /* bits 0..6, Sunday 0 */
    bool mday_any, wday_any;
};

/* 0, or -1 with what is wrong (and where) in err. */
int cron_parse(const char *text, struct cron *out, char *err, size_t errlen);
/* The first minute strictly after t (unix seconds, UTC) at which c fires; -1 if none within
 * five years (30 February). */
int64_t cron_next(const struct cron *c, int64_t t);

#endif
