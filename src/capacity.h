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
};

void capacity_init(struct capacity *c, int limit);
void capacity_destroy(struct capacity *c);

/* Waits until at least one slot is free, then reserves up to max of them. Returns how many were
 * reserved, or 0 once capacity_stop was called. */
int capacity_reserve(struct capacity *c, int max);
void capacity_release(struct capacity *c, int n);
void capacity_stop(struct capacity *c);
int capacity_used(struct capacity *c);

#endif
