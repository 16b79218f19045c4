/* The status page (GET /): one screen of what an operator looks at first, in plain HTML with no
 * external asset, refreshing itself every 5 s: this worker's state, the queues, the workers alive,
 * the counters in <prefix>:stats and the newest dead letters. Read-only. */
#ifndef QWORKER_STATUS_PAGE_H
#define QWORKER_STATUS_PAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct evbuffer;
struct rconn;

/* What the monitor knows without asking Redis. */
struct page_facts {
    const struct config *conf;
    bool paused, redis_up;
    size_t running, waiting;
    long long free_slots, ok, failed;
    const long long *queue_len;    /* per queue of conf; -1: not known */
    const long long *queue_paused; /* per queue: 1 paused for every worker, 0 not, -1 unknown */
    long long dead;             /* -1: not known */
};

/* Asks Redis (on rc, the monitor's connection) for the workers, the stats and the newest dead
 * letters, and writes the page. What Redis does not answer is shown as unknown. */
int status_page(struct evbuffer *out, struct rconn *rc, const struct page_facts *f);

/* Text from outside (a task id, a reason, a host name) as HTML: markup characters as entities,
 * control bytes as \xNN. */
int html_text(struct evbuffer *out, const char *s, size_t len);

#endif
