/* This worker's identity in Redis: its id, heartbeat key (with a TTL) and registry entry. The id
 * is claimed at start (refusing if a live process holds it), kept alive by the heartbeat thread
 * (beat.c), and given back at a clean exit. The heartbeat also drives the reaper, which
 * requeues the in-flight tasks of workers whose heartbeat expired. */
#ifndef QWORKER_IDENTITY_H
#define QWORKER_IDENTITY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "redis.h"
#include "reply.h"

struct identity {
    const struct config *conf;
    char token[33];
    char host[256];
    long long started; /* unix seconds */
    char *hb_key;
    char *workers_key;
    char *inflight_key;
    char *marker_key; /* the tag of the last batch recorded (record.lua) */
    char *dead_key;
    struct rcond beat_refused, reap_refused, claim_refused;
    bool lost; /* another process holds our id: said once */
    bool claimed;         /* the id is ours; its leftovers may still be going back */
    long long leftovers;  /* how many have gone back so far */
};

int identity_init(struct identity *id, const struct config *conf);
void identity_free(struct identity *id);

enum claim_result { CLAIM_OK, CLAIM_IN_USE, CLAIM_STOPPED, CLAIM_UNSUPPORTED };

/* The oldest Redis qworker runs on: BLMPOP and script flags came with 7.0. */
#define REDIS_MIN_MAJOR 7
#define REDIS_MIN_MINOR 0

/* On the main thread before the workers start: waits for Redis (returning CLAIM_STOPPED if one
 * of stop_signals arrives meanwhile), takes the id and requeues what a previous run of this id
 * left in flight. */
enum claim_result identity_claim(struct identity *id, struct rconn *rc, const sigset_t *stop);

/* The heartbeat thread only (beat.c): refreshes the heartbeat, then reaps dead workers. Returns
 * 0, or -1 if the connection was lost. */
int identity_beat(struct identity *id, struct rconn *rc, long inflight);
/* Milliseconds between heartbeats: a third of the TTL, so that two may be missed. */
int identity_beat_interval_ms(const struct identity *id);

/* At-least-once: past this share of heartbeat_ttl since the last heartbeat Redis took, the worker
 * stops its tasks and puts them back (loop.c), and takes no new ones: once the heartbeat expires
 * other workers put them back too, and two workers must never run one task at once. The rest
 * of the TTL is the margin for stopping them. */
#define FENCE_PERCENT 75
int64_t identity_beat_ok_us(void);
bool identity_expiring(const struct config *conf);
void identity_release(struct identity *id, struct rconn *rc);

#endif
