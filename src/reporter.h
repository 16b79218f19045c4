/* The reporter thread: logs every finished task at once, then records it in Redis (stats, dead
 * letters, requeues) in one MULTI/EXEC per batch, holding the batch while Redis is away. */
#ifndef QWORKER_REPORTER_H
#define QWORKER_REPORTER_H

#include <stdint.h>

#include "config.h"

struct outlog;
struct reporter;
struct taskq;

struct capacity;
struct identity;

/* The reporter starts and stops the heartbeat's thread (beat.h), which also runs the reaper. */
struct reporter *reporter_new(const struct config *conf, struct identity *id, struct capacity *cap);
void reporter_free(struct reporter *rp);
struct loop;
/* Before reporter_start: the loop whose running tasks the heartbeat counts as in flight. */
/* From any thread (a reload): the schedules of conf are checked from now on. */
void reporter_reconfigure(struct reporter *rp, const struct config *conf);
void reporter_watch(struct reporter *rp, struct loop *loop);
/* Where the loop hands finished tasks over; the loop closes it when it ends, and the reporter
 * thread ends once everything it got is recorded (or, with Redis away at shutdown, given up
 * after a bounded wait, with an error line per task). */
struct taskq *reporter_inbox(struct reporter *rp);
/* Where the loop thread hands children's output lines to be logged. */
struct outlog *reporter_outlog(struct reporter *rp);
int reporter_start(struct reporter *rp);
void reporter_join(struct reporter *rp);
/* 0 if the thread has ended (and is joined), -1 if it still runs. */
int reporter_tryjoin(struct reporter *rp);
struct lateness {
    unsigned long count;
    int64_t p50_us, p99_us, max_us;
};

/* How late sleep timers fired, since start (percentiles to 0.1 ms, rounded up). */
void reporter_lateness(struct reporter *rp, struct lateness *out);
/* Tasks finished ok, and failed (invalid, failed, timed out), since start. */
void reporter_counts(struct reporter *rp, long long *ok, long long *failed);

#endif
