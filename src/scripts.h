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
    SCRIPT_COUNT
};

/* Runs a script by its SHA1, loading it first if Redis does not know it (a new or restarted
 * server). keys and args are counted separately, as EVALSHA wants them. Returns the reply or NULL
 * (connection lost, already handled by rconn). */
/* The SHA1 Redis gave for s, for a caller that pipelines EVALSHA itself; false if not loaded
 * yet. */
bool script_sha(enum script s, char sha[41]);
redisReply *script_run(struct rconn *r, enum script s, int nkeys, const char **keys,
                       const size_t *keylens, int nargs, const char **args, const size_t *arglens);

#endif
