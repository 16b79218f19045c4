/* The monitor thread: serves GET /metrics (Prometheus text format 0.0.4), /healthz and the
 * status page (/) on metrics.listen, on an event base of its own, so that a scrape (or an attack
 * on the port) never takes time from the loop thread's tasks. Queue lengths come from its own Redis connection,
 * sampled at most once a second whatever the scrape rate. */
#ifndef QWORKER_MONITOR_H
#define QWORKER_MONITOR_H

#include <stddef.h>

#include "config.h"

struct daemon;
struct monitor;

/* Listens on conf's metrics address now, so that a port in use stops the start before the worker
 * takes its id. NULL with the reason in err. */
struct monitor *monitor_new(const struct config *conf, char *err, size_t errlen);
/* Reads d's counts and flags, never its configuration (monitor_reconfigure gives it that). */
int monitor_start(struct monitor *m, struct daemon *d);
/* From the main thread on a reload: queues to sample, concurrency to show. conf must outlive
 * the monitor (the daemon keeps every configuration until exit). */
void monitor_reconfigure(struct monitor *m, const struct config *conf);
/* Stops and joins the thread. */
void monitor_stop(struct monitor *m);
void monitor_free(struct monitor *m);

#endif
