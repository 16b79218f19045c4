/* The heartbeat, on a thread (qw-beat) and a Redis connection of its own: nothing else the
 * worker waits on (a journald that stopped reading, which blocks whoever logs; a long record; a
 * schedule move) may let it lapse. A lapsed heartbeat has other workers put this one's tasks
 * back as a dead worker's, and has this one's fence stop the tasks it runs. */
#ifndef QWORKER_BEAT_H
#define QWORKER_BEAT_H

#include <pthread.h>
#include <stdbool.h>

#include "config.h"
#include "identity.h"
#include "redis.h"

struct loop;

struct beat {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;    /* under mu */
    bool running; /* the thread was started (owner's thread only) */
    struct rconn rc;
    struct identity *id; /* only this thread beats, until beat_stop returns */
    struct loop *loop;   /* its running count goes in the heartbeat; may be NULL */
};

/* Starts beating every heartbeat_ttl / 3, the first one an interval from now (the claim made
 * at start counts as the first). */
int beat_start(struct beat *b, const struct config *conf, struct identity *id, struct loop *loop);
/* Stops the thread and waits for it: after this the identity may be released. */
void beat_stop(struct beat *b);

#endif
