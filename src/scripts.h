/* The Lua scripts that make delivery atomic in Redis: each runs as one step, so that a task is
 * always in exactly one place (its queue, or one worker's in-flight hash). */
#ifndef QWORKER_SCRIPTS_H
#define QWORKER_SCRIPTS_H

#include <stdbool.h>

#include "redis.h"

enum script {
    SCRIPT_FETCH,   /* queues (priority order) -> in-flight hash, up to n tasks */
    SCRIPT_CLAIM,   /* take a worker id at start */
    SCRIPT_BEAT,    /* refresh the heartbeat, if the id is still ours */
    SCRIPT_REAP,    /* requeue the in-flight tasks of workers whose heartbeat expired */
    SCRIPT_RELEASE, /* give the id back at a clean exit */
    SCRIPT_DUE,     /* move due entries of the schedule back to the front of their queues */
    SCRIPT_RESCUE,  /* put back what a fetch moved when its reply was lost */
    SCRIPT_REQUEUE, /* put back a chunk of an in-flight hash (a previous run's leftovers) */
    SCRIPT_RECORD,  /* acknowledge finished tasks, send them on, count them */
    SCRIPT_DEAD_MOVE, /* qworkerctl: one dead letter back to a queue, or away */
    SCRIPT_TICK,      /* push a schedule's tick, once fleet-wide */
    SCRIPT_UNSCHEDULE, /* qworkerctl cancel: one member out of the schedule, counted */
    SCRIPT_COUNT
};

/* The SHA1 Redis gave for s, for a caller that pipelines EVALSHA itself; false if not loaded
 * yet. */
bool script_sha(enum script s, char sha[41]);
/* "fetch", "record"...: for log lines. */
const char *script_name(enum script s);
/* Runs a script by its SHA1, loading it first if Redis does not know it (a new or restarted
 * server). keys and args are counted separately, as EVALSHA wants them. Returns the reply, which
 * may be an error (SCRIPT LOAD's, or the script's) for the caller to classify (reply.h), or NULL
 * (connection lost, already handled by rconn). Logs nothing. */
redisReply *script_run(struct rconn *r, enum script s, int nkeys, const char **keys,
                       const size_t *keylens, int nargs, const char **args, const size_t *arglens);

#endif
