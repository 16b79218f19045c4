/* The loop thread: one libevent event_base running every task as a non-blocking timed job. Tasks
 * arrive through its inbox (a taskq whose push rings the loop's doorbell); finished tasks leave
 * through the reporter's taskq. */
#ifndef QWORKER_LOOP_H
#define QWORKER_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>

#include "config.h"
#include "task.h"

struct capacity;
struct taskq;
struct event_base;

struct outlog;

/* Finished tasks go to done; children's output lines to output. */
struct loop *loop_new(const struct config *conf, struct capacity *cap, struct taskq *done,
                      struct outlog *output);
void loop_free(struct loop *loop);

/* Where the consumer hands tasks over; the consumer closes it when it stops. */
struct taskq *loop_inbox(struct loop *loop);

int loop_start(struct loop *loop);
/* From any thread: stop starting tasks; running ones get shutdown_timeout (or none if now) to
 * finish, then are cancelled and requeued. The thread ends once the inbox is closed and nothing
 * runs. */
void loop_stop(struct loop *loop, bool now);
void loop_join(struct loop *loop);
/* From any thread: tasks that start from now on use conf (its handlers, shutdown_timeout).
 * Running tasks keep the configuration they started with, so conf and the old one must outlive
 * the loop. */
void loop_reconfigure(struct loop *loop, const struct config *conf);

/* From any thread: makes the loop look at its tasks again (a cancel came: cancel.h). */
void loop_poke(void *loop);

/* From any thread, for the status: tasks running now, and tasks held waiting under their
 * handler's concurrency. */
void loop_counts(struct loop *loop, size_t *running, size_t *waiting);

/* Loop thread only, for handlers. */
struct event_base *loop_base(struct loop *loop);
struct outlog *loop_outlog(struct loop *loop);
/* The timeval to pass to event_add for a duration: a libevent common timeout when possible, so
 * that many timers of one duration cost O(1) each. */
const struct timeval *loop_timeout(struct loop *loop, const struct timeval *tv);
void loop_task_done(struct loop *loop, struct task *task, enum outcome outcome);

#endif
