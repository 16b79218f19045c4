/* Periodic tasks (schedules = ( ... )): each tick of each schedule pushed to its queue once,
 * whichever worker of the fleet gets there first (tick.lua keeps the last tick pushed). Every
 * worker carries the schedules; the reporter thread checks them, on its own Redis connection. A
 * tick missed while no worker ran is pushed once, at the next start (only the latest one). */
#ifndef QWORKER_PERIODIC_H
#define QWORKER_PERIODIC_H

#include <stdint.h>

#include "config.h"
#include "redis.h"

struct periodic;

struct periodic *periodic_new(const struct config *conf);
void periodic_free(struct periodic *p);
/* From any thread (a reload): the schedules of conf from the next check on. conf outlives p. */
void periodic_reconfigure(struct periodic *p, const struct config *conf);
/* Reporter thread: milliseconds until a tick is due (a large number with no schedule). */
int periodic_wait_ms(struct periodic *p);
/* Reporter thread: pushes the ticks that are due. */
void periodic_run(struct periodic *p, struct rconn *rc);

/* The latest tick of s at or before now, and the first one after t (unix seconds); -1: none. */
int64_t periodic_latest(const struct schedule_conf *s, int64_t now);
int64_t periodic_next(const struct schedule_conf *s, int64_t t);

#endif
