/* The consumer thread: reserves free capacity, then blocks on Redis for up to that many tasks of
 * the configured queues (highest priority first) and hands them to the loop thread. */
#ifndef QWORKER_CONSUMER_H
#define QWORKER_CONSUMER_H

#include <stdbool.h>

#include "config.h"

struct capacity;
struct taskq;
struct consumer;

struct consumer *consumer_new(const struct config *conf, struct capacity *cap, struct taskq *out);
void consumer_free(struct consumer *cs);
int consumer_start(struct consumer *cs);
/* From any thread: stop fetching now. A blocked fetch is released (CLIENT UNBLOCK), and whatever
 * it had already taken is still handed over. The thread closes its output queue when it ends. */
void consumer_stop(struct consumer *cs);
void consumer_join(struct consumer *cs);
/* From any thread, after capacity_pause: takes back what waits to take a task the moment one is
 * pushed, and returns once it has, so that the pause holds from then on. */
void consumer_pause(struct consumer *cs);
/* From any thread: take tasks from conf's queues from the next fetch on. conf must outlive the
 * consumer. */
void consumer_reconfigure(struct consumer *cs, const struct config *conf);
/* Whether it has reached Redis once. */
bool consumer_ready(struct consumer *cs);

#endif
