/* Free capacity: how many more tasks this worker may hold, and how much more memory their
 * payloads may take. The consumer reserves slots before it fetches, so that what it cannot start
 * yet stays in Redis for other workers; the loop thread releases a slot when a task stops
 * running. The bytes a task holds (its payload, and the JSON parsed from it) are charged when
 * they are taken and refunded when the task is freed; while they are over the budget nothing is
 * reserved, so that payloads waiting behind a handler's concurrency cannot take the machine. */
#ifndef QWORKER_CAPACITY_H
#define QWORKER_CAPACITY_H

#include <pthread.h>
#include <stdbool.h>

struct capacity {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int limit;
    int used;
    size_t bytes;
    size_t bytes_limit; /* 0: none */
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
void capacity_set_bytes_limit(struct capacity *c, size_t limit);
void capacity_charge(struct capacity *c, size_t bytes);
void capacity_refund(struct capacity *c, size_t bytes);
/* What is left of the memory budget (SIZE_MAX: no budget). */
size_t capacity_bytes_free(struct capacity *c);
void capacity_stop(struct capacity *c);
void capacity_pause(struct capacity *c, bool paused);
bool capacity_paused(struct capacity *c);
int capacity_used(struct capacity *c);

#endif
