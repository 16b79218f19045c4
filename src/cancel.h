/* Cancellation: `qworkerctl cancel ID` remembers ID in <prefix>:cancels (a sorted set scored by
 * when it is forgotten, in Redis's milliseconds) and publishes it on <prefix>:cancel. Every
 * worker listens on a connection of its own (the qw-cancel thread), keeps the ids remembered
 * in memory, and tells the loop thread, which stops a running task of that id (outcome
 * "cancelled", never retried) and never starts one: a task taken later, or pushed after the
 * cancel, is not run either. The set is read again on each (re)connection and every minute,
 * so that a cancel published while a worker was away still reaches it. */
#ifndef QWORKER_CANCEL_H
#define QWORKER_CANCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct loop;

/* Starts the listener; poke(arg) is called from its thread whenever an id is added. */
int cancel_watch_start(const struct config *conf, void (*poke)(void *), void *arg);
void cancel_watch_stop(void);

/* Any thread: whether a task (its label, and its own id) is to be cancelled. At once false
 * while nothing is remembered: the cost of the feature unused. */
bool cancel_wanted(const char *label, const char *id);
/* Any thread: changes each time an id is added (the loop looks at its tasks again). */
uint64_t cancel_generation(void);

/* The set itself, for the listener and the unit tests: an id is remembered until until_ms
 * (real time, milliseconds; a later add of the same id may extend it); prune forgets the ids
 * whose time is past. add: 1 remembered, 0 an id no task can have (not kept), -1 out of
 * memory. */
int cancel_add(const char *id, size_t len, int64_t until_ms);
void cancel_prune(int64_t now_ms);
void cancel_forget_all(void);

#endif
