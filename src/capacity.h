/* Free capacity: how many more tasks this worker may hold. The consumer reserves slots before it
 * fetches, so that what it cannot start yet stays in Redis for other workers; the loop thread
 * releases a slot when a task stops running. */
#ifndef QWORKER_CAPACITY_H
#define QWORKER_CAPACITY_H

#include <pthread.h>
#include <stdbool.h>

struct capacity {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int limit;
    int used;
    bool stopped;
    bool paused; /* SIGTSTP: reserve nothing until resumed */
};

void capacity_init(struct capacity *c, int limit);
void capacity_destroy(struct capacity *c);

/* Waits up to timeout_ms until at least one slot is free, then reserves up to max of them.
 * Returns how many were reserved, 0 once capacity_stop was called, -1 if none became free. */
int capacity_reserve(struct capacity *c, int max, int timeout_ms);
/* A new limit (reload): slots already used stay used. */
void capacity_set_limit(struct capacity *c, int limit);
void capacity_release(struct capacity *c, int n);
void capacity_stop(struct capacity *c);
void capacity_pause(struct capacity *c, bool paused);
int capacity_used(struct capacity *c);

#endif
