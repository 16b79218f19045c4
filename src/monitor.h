/* The monitor thread: serves GET /metrics (Prometheus text format 0.0.4) and /healthz on
 * metrics.listen, on an event base of its own, so that a scrape (or an attack on the port) never
 * takes time from the loop thread's tasks. Queue lengths come from its own Redis connection,
 * sampled at most once a second whatever the scrape rate. */
#ifndef QWORKER_MONITOR_H
#define QWORKER_MONITOR_H

#include <stddef.h>

#include "config.h"

struct loop;
struct monitor;

/* Listens on conf's metrics address now, so that a port in use stops the start before the worker
 * takes its id. NULL with the reason in err. */
struct monitor *monitor_new(const struct config *conf, char *err, size_t errlen);
int monitor_start(struct monitor *m, struct loop *loop);
/* From the main thread on a reload: queues to sample, concurrency to show. conf must outlive
 * the monitor (the daemon keeps every configuration until exit). */
void monitor_reconfigure(struct monitor *m, const struct config *conf);
/* Stops and joins the thread. */
void monitor_stop(struct monitor *m);
void monitor_free(struct monitor *m);

#endif
