/* What /metrics shows that only the worker threads know: finished tasks by queue, handler and
 * outcome, with their durations (the reporter adds them once Redis has recorded them, so that
 * they agree with <prefix>:stats), and fetch round trips (the consumer). Process-wide, like the
 * log; the monitor thread renders them in the Prometheus text format. */
#ifndef QWORKER_METRICS_H
#define QWORKER_METRICS_H

#include <stdint.h>

#include "task.h"

struct evbuffer;

/* At exit, after every thread. */
void metrics_free(void);

/* One batch of finished tasks: begin, a call per task, end (one lock for the batch). */
void metrics_tasks_begin(void);
void metrics_task(const struct task *t);
void metrics_tasks_end(void);

/* A fetch script's round trip (not a blocked wait), in microseconds. */
void metrics_fetch_us(int64_t us);

/* Appends every series above, with HELP and TYPE lines. 0, or -1 out of memory. */
int metrics_render(struct evbuffer *out);

/* A label value as the text format wants it: \ " and newline escaped. */
int metrics_label(struct evbuffer *out, const char *value);

#endif
