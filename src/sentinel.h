/* Redis Sentinel, done here because hiredis 0.14 has no client for it: which address the master
 * has now, shared by every connection of the process so that they all move together, and a
 * thread that listens for the sentinels' +switch-master. Connecting to what it names is redis.c's
 * part: sentinel_resolve hands it candidates, best first, until one turns out to be a master. */
#ifndef QWORKER_SENTINEL_H
#define QWORKER_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct sentinel_answer {
    char host[256];
    int port;
    int votes; /* how many sentinels gave this address */
    int first; /* the index of the first of them in the configured list */
};

/* Orders distinct answers best first: the address most sentinels agree on, then the one the
 * earliest listed sentinel gave. A stale sentinel (one that missed a failover) is outvoted, and a
 * lone one is only tried after the others. answers: one per sentinel that answered, with votes
 * and first unset; returns how many distinct ones are now at the front. */
int sentinel_rank(struct sentinel_answer *answers, int n);

/* Tries one master candidate: 0 if it is connected and is the master (ROLE), else -1 with the
 * reason in err. */
typedef int (*sentinel_try_fn)(const char *host, int port, void *ctx, char *err, size_t errlen);

/* Finds the master and connects to it through try. The address known already is tried first
 * (with no lock held), unless a connection to it was lost at or after since_us (monotonic): then
 * the sentinels are asked again, all of them, and an address a majority of those that answer
 * agree on is the only one tried. One resolution at a time; the threads that waited for it take
 * its answer, a failure too. Returns the generation of the address that worked (it changes
 * whenever the master moves), or 0 with the reason in err. */
uint64_t sentinel_resolve(const struct redis_conf *conf, int64_t since_us, sentinel_try_fn try,
                          void *ctx, char *err, size_t errlen);
/* The generation of the master's address now: a connection made under another one is to a
 * server that is no longer the master, and moves. */
uint64_t sentinel_generation(void);
/* "mymaster at 10.0.0.5:6379" (or "mymaster, not found yet"), for log lines. */
const char *sentinel_describe(const struct redis_conf *conf, char *buf, size_t len);

/* Listens on every sentinel for +switch-master, so that connections move when a failover is
 * announced rather than when they next fail. An announcement starts a resolution, whose
 * candidates probe checks (its ctx: conf): a connection made, ROLE asked, and closed. */
int sentinel_watch_start(const struct redis_conf *conf, sentinel_try_fn probe);
void sentinel_watch_stop(void);

#endif
