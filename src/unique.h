/* Unique tasks: an envelope with an "id" and "unique_for": S runs at most once per S seconds
 * per id, across every worker on the same Redis. The consumer claims the id (SET NX PX on
 * <prefix>:unique:<id>) before the task reaches the loop thread; a copy whose id is claimed
 * already is not run (outcome "duplicate"), and one whose claim Redis would not answer goes
 * back to its queue. Only a task as its sender pushed it is checked: its retries, a delayed
 * start, a recovery after a crash and a dead letter moved back are the same task, in qworker's
 * wrappers. A task that never runs (refused, put back) gives its claim back (record.lua). */
#ifndef QWORKER_UNIQUE_H
#define QWORKER_UNIQUE_H

#include "config.h"
#include "redis.h"
#include "reply.h"

struct taskq_chain;

/* Claims the ids of the tasks of chain that ask for it, in one round trip; sets each one's
 * unique state. How many Redis answered (claimed or duplicate), or -1 with the reply Redis
 * refused with (*refusal, to be freed) or none (the connection was lost): the tasks not
 * claimed are then UNIQUE_UNCHECKED. */
int unique_claim(struct rconn *rc, const struct config *conf, struct taskq_chain *chain,
                 redisReply **refusal);

struct json_t;

/* An envelope's "unique_for" and "id": 1 if it asks for it (*id: 1 to TASK_LABEL_MAX bytes, no
 * NUL; *seconds: more than 0, at most a year), 0 if it does not, -1 if it asks wrongly (*why).
 * The envelope's own check (envelope.c) and the consumer's claim both read it here, so that
 * the two never disagree on what is claimed. */
int unique_fields(const struct json_t *envelope, const char **id, double *seconds,
                  const char **why);

#endif
