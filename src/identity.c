#include "identity.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "health.h"
#include "log.h"
#include "scripts.h"
#include "wire.h"

/* How many in-flight entries one script puts back: a few milliseconds of Redis's time. */
#define REQUEUE_CHUNK "1000"
/* A bound on one reap, should a hash refill as fast as it is emptied: 10,000,000 entries. */
#define REAP_ROUNDS_MAX 10000

int identity_init(struct identity *id, const struct config *conf)
{
    unsigned char raw[16];
    const char *prefix = conf->prefix, *wid = conf->worker_id;

    memset(id, 0, sizeof(*id));
    id->conf = conf;
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(id->token + 2 * i, 3, "%02x", raw[i]);
    gethostname(id->host, sizeof(id->host) - 1);
    id->started = (long long)time(NULL);
    if (asprintf(&id->hb_key, "%s:worker:%s", prefix, wid) < 0 ||
        asprintf(&id->workers_key, "%s:workers", prefix) < 0 ||
        asprintf(&id->inflight_key, "%s:inflight:%s", prefix, wid) < 0 ||
        asprintf(&id->marker_key, "%s:recorded:%s", prefix, wid) < 0 ||
        asprintf(&id->dead_key, "%s:dead", prefix) < 0)
        return -1;
    return 0;
}

void identity_free(struct identity *id)
{
    free(id->hb_key);
    free(id->workers_key);
    free(id->inflight_key);
    free(id->marker_key);
    free(id->dead_key);
}

int identity_beat_interval_ms(const struct identity *id)
{
    return id->conf->heartbeat_ttl_ms / 3;
}

static char *heartbeat_value(const struct identity *id, long inflight)
{
    json_t *o = json_pack("{s:s, s:i, s:s, s:I, s:I, s:s}", "host", id->host, "pid", (int)getpid(),
                          "version", QWORKER_VERSION, "started", (json_int_t)id->started,
                          "inflight", (json_int_t)inflight, "token", id->token);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return s;
}

/* Whether pid runs a qworker, as far as this process can see: a pid that exists but whose
 * /proc entry is hidden (ProtectProc=invisible, hidepid) counts as a live qworker. */
static bool qworker_runs(int pid)
{
    char path[64], comm[32] = "";
    bool runs;
    FILE *f;

    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        return false;
    snprintf(path, sizeof(path), "/proc/%d/comm", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return true;
    /* The pid may have been reused by something that is not a qworker. */
    runs = fgets(comm, sizeof(comm), f) != NULL && strncmp(comm, "qworker", 7) == 0;
    fclose(f);
    return runs;
}

/* A heartbeat left by a process of this host that no longer runs (a crash or SIGKILL of a
 * previous run), or our own (a claim whose reply was lost): its id may be taken at once rather
 * than after the TTL. A pid equal to ours is a previous run (a container restarted with the same
 * pid): no live process can share our pid. */
static bool stale_local(const struct identity *id, const char *value, int *pid_out)
{
    json_t *o = json_loads(value, 0, NULL);
    const char *host = NULL, *token = NULL;
    int pid = 0;
    bool stale = false;

    if (o == NULL || json_unpack(o, "{s:s, s:i, s?s}", "host", &host, "pid", &pid, "token",
                                 &token) < 0) {
        json_decref(o);
        return false;
    }
    *pid_out = pid;
    if (token != NULL && strcmp(token, id->token) == 0)
        stale = true;
    else if (strcmp(host, id->host) == 0)
        stale = pid == getpid() || !qworker_runs(pid);
    json_decref(o);
    return stale;
}

static long long pttl(struct rconn *rc, const char *key)
{
    const char *argv[] = {"PTTL", key};
    redisReply *reply = rconn_command(rc, 2, argv, NULL);
    long long ms = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;

    if (reply != NULL)
        freeReplyObject(reply);
    return ms;
}

/* Puts back, a chunk per round trip, what a previous run of this id left in flight: before the
 * consumer starts, so that nothing running now is among it. 1 done, 0 try again. */
static int requeue_leftovers(struct identity *id, struct rconn *rc)
{
    const char *keys[] = {id->inflight_key, id->dead_key};
    const char *args[] = {REQUEUE_CHUNK};

    for (;;) {
        redisReply *reply = script_run(rc, SCRIPT_REQUEUE, 2, keys, NULL, 1, args, NULL);
        long long left;

        if (reply == NULL)
            return 0;
        if (reply_class(reply, REDIS_REPLY_ARRAY) != RC_OK || !wire_requeue_reply(reply)) {
            rcond_begin(&id->claim_refused, LOG_ERR, reply_text(reply),
                        "cannot put back what a previous run of worker %s left in %s; retrying",
                        id->conf->worker_id, id->inflight_key);
            freeReplyObject(reply);
            return 0;
        }
        id->leftovers += reply->element[0]->integer;
        left = reply->element[1]->integer;
        freeReplyObject(reply);
        if (left == 0)
            break;
    }
    if (id->leftovers > 0)
        log_notice("put %lld task(s) left in flight by a previous run of worker %s back at the "
                   "front of their queues",
                   id->leftovers, id->conf->worker_id);
    return 1;
}

/* Monotonic: when the last heartbeat that Redis then took was sent. The key lives at least
 * heartbeat_ttl from then; until it expires no other worker puts this one's tasks back. */
static _Atomic int64_t beat_ok_us;

int64_t identity_beat_ok_us(void)
{
    return atomic_load(&beat_ok_us);
}

bool identity_expiring(const struct config *conf)
{
    int64_t ok = atomic_load(&beat_ok_us);

    return conf->delivery == DELIVERY_AT_LEAST_ONCE && ok != 0 &&
           clock_mono_us() - ok > (int64_t)conf->heartbeat_ttl_ms * 1000 * FENCE_PERCENT / 100;
}

/* One attempt: 1 claimed, 0 try again, -1 in use. */
static int try_claim(struct identity *id, struct rconn *rc)
{
    const char *get[] = {"GET", id->hb_key};
    redisReply *cur, *reply;
    char *value, ttl[24], *seen;
    int pid = 0;
    int64_t sent_us;

    if (id->claimed)
        return requeue_leftovers(id, rc);
    cur = rconn_command(rc, 2, get, NULL);
    if (cur == NULL)
        return 0;
    if (cur->type == REDIS_REPLY_STRING && !stale_local(id, cur->str, &pid)) {
        long long left = pttl(rc, id->hb_key);
        log_err("worker id %s is in use: its heartbeat (%s) is alive for %.1f s more. Another "
                "qworker runs with this id; give this one another worker.id, or stop the other",
                id->conf->worker_id, cur->str, left > 0 ? (double)left / 1000 : 0.0);
        freeReplyObject(cur);
        return -1;
    }
    if (cur->type == REDIS_REPLY_STRING)
        log_notice("worker id %s was held by pid %d, which no longer runs: taking it over",
                   id->conf->worker_id, pid);
    seen = cur->type == REDIS_REPLY_STRING ? cur->str : "";
    value = heartbeat_value(id, 0);
    snprintf(ttl, sizeof(ttl), "%d", id->conf->heartbeat_ttl_ms);
    sent_us = clock_mono_us();
    {
        const char *keys[] = {id->hb_key, id->workers_key};
        const char *args[] = {value, ttl, id->conf->worker_id, seen};
        reply = value ? script_run(rc, SCRIPT_CLAIM, 2, keys, NULL, 4, args, NULL) : NULL;
    }
    free(value);
    freeReplyObject(cur);
    if (reply == NULL)
        return 0;
    if (reply_class(reply, REDIS_REPLY_INTEGER) != RC_OK || !wire_claim_reply(reply))
        rcond_begin(&id->claim_refused, LOG_ERR, reply_text(reply),
                    "cannot take worker id %s in redis; retrying", id->conf->worker_id);
    id->claimed = wire_claim_reply(reply) && reply->integer == 0;
    if (id->claimed)
        atomic_store(&beat_ok_us, sent_us);
    freeReplyObject(reply);
    return id->claimed ? requeue_leftovers(id, rc) : 0;
}

/* A Redis that may evict keys may evict queues and in-flight hashes. CONFIG may be refused by
 * an ACL: then there is nothing to say. */
static void warn_if_evicting(struct rconn *rc)
{
    const char *argv[] = {"CONFIG", "GET", "maxmemory-policy"};
    redisReply *reply = rconn_command(rc, 3, argv, NULL);

    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING &&
        strcmp(reply->element[1]->str, "noeviction") != 0)
        log_warn("redis maxmemory-policy is %s: under memory pressure Redis may evict queues and "
                 "in-flight tasks; set it to noeviction",
                 reply->element[1]->str);
    freeReplyObject(reply);
}

/* 1 if the server is recent enough, 0 if not (said why), -1 if it cannot tell (INFO refused:
 * then the first command it lacks will say). */
static int check_version(struct rconn *rc)
{
    const char *argv[] = {"INFO", "server"};
    redisReply *reply = rconn_command(rc, 2, argv, NULL);
    const char *v;
    int major = 0, minor = 0, ok = -1;

    if (reply == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_STRING && (v = strstr(reply->str, "redis_version:")) != NULL &&
        sscanf(v + 14, "%d.%d", &major, &minor) == 2) {
        ok = major > REDIS_MIN_MAJOR || (major == REDIS_MIN_MAJOR && minor >= REDIS_MIN_MINOR);
        if (!ok)
            log_err("redis %d.%d is too old: qworker needs redis %d.%d or newer", major, minor,
                    REDIS_MIN_MAJOR, REDIS_MIN_MINOR);
    }
    freeReplyObject(reply);
    return ok;
}

enum claim_result identity_claim(struct identity *id, struct rconn *rc, const sigset_t *stop)
{
    bool version_checked = false;

    for (;;) {
        int r, ms;

        if (rconn_try(rc) == 0) {
            if (!version_checked) {
                if (check_version(rc) == 0)
                    return CLAIM_UNSUPPORTED;
                version_checked = rc->c != NULL;
            }
            r = version_checked ? try_claim(id, rc) : 0;
            if (r > 0) {
                rcond_end(&id->claim_refused, "worker id %s taken", id->conf->worker_id);
                warn_if_evicting(rc);
            }
            if (r != 0)
                return r > 0 ? CLAIM_OK : CLAIM_IN_USE;
        }
        /* Connected yet refused (a script Redis will not run, an ACL): not at full speed. */
        ms = rc->c != NULL ? 1000 : rconn_wait_ms(rc);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        int sig = sigtimedwait(stop, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return CLAIM_STOPPED;
    }
}

/* Whether name is among the first n of seen; adds it if there is room. */
static bool seen_before(char seen[][128], int *n, int cap, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(seen[i], name) == 0)
            return true;
    if (*n < cap)
        snprintf(seen[(*n)++], sizeof(seen[0]), "%s", name);
    return false;
}

/* Puts back the in-flight tasks of workers whose heartbeat expired, a chunk per round trip until
 * none is left, with one line per worker. Runs on the heartbeat thread, whose progress it is. */
static void reap(struct identity *id, struct rconn *rc)
{
    const char *keys[] = {id->workers_key, id->dead_key};
    const char *args[] = {id->conf->prefix, id->conf->worker_id, REQUEUE_CHUNK};
    char seen[16][128];
    int nseen = 0;
    bool more = true;

    for (int round = 0; more && round < REAP_ROUNDS_MAX; round++) {
        redisReply *reply = script_run(rc, SCRIPT_REAP, 2, keys, NULL, 3, args, NULL);

        more = false;
        if (reply == NULL)
            return;
        if (reply_class(reply, REDIS_REPLY_ARRAY) != RC_OK) {
            rcond_begin(&id->reap_refused, LOG_ERR, reply_text(reply),
                        "cannot put back the tasks of workers whose heartbeat expired");
            freeReplyObject(reply);
            return;
        }
        if (!wire_reap_reply(reply)) {
            rcond_begin(&id->reap_refused, LOG_ERR, "a reply that is not (worker, moved, left)...",
                        "cannot put back the tasks of workers whose heartbeat expired");
            freeReplyObject(reply);
            rconn_close(rc); /* not an outage: Redis answered; remade at the next use */
            return;
        }
        rcond_end(&id->reap_refused, "the tasks of dead workers can be put back");
        for (size_t i = 0; i + 2 < reply->elements; i += 3) {
            const char *worker = reply->element[i]->str;
            long long moved = reply->element[i + 1]->integer, left = reply->element[i + 2]->integer;
            if (!seen_before(seen, &nseen, 16, worker))
                log_warn("worker %s stopped sending heartbeats: putting its %lld task(s) in flight "
                         "back at the front of their queues",
                         worker, moved + left);
            more = more || (left > 0 && moved > 0);
        }
        freeReplyObject(reply);
        health_beat(THREAD_BEAT);
    }
}

int identity_beat(struct identity *id, struct rconn *rc, long inflight)
{
    char *value = heartbeat_value(id, inflight), ttl[24];
    int64_t sent_us;
    const char *keys[] = {id->hb_key, id->workers_key};
    const char *args[] = {value, ttl, id->conf->worker_id, id->token};
    redisReply *reply;

    if (value == NULL)
        return 0;
    snprintf(ttl, sizeof(ttl), "%d", id->conf->heartbeat_ttl_ms);
    sent_us = clock_mono_us();
    reply = script_run(rc, SCRIPT_BEAT, 2, keys, NULL, 4, args, NULL);
    free(value);
    if (reply == NULL)
        return -1;
    if (reply_class(reply, REDIS_REPLY_INTEGER) != RC_OK || !wire_beat_reply(reply)) {
        rcond_begin(&id->beat_refused, LOG_ERR, reply_text(reply),
                    "cannot refresh the heartbeat %s: once it expires other workers put this "
                    "one's tasks back, and they may run twice",
                    id->hb_key);
        freeReplyObject(reply);
        return 0;
    }
    rcond_end(&id->beat_refused, "the heartbeat %s is refreshed", id->hb_key);
    if (reply->integer == 1)
        atomic_store(&beat_ok_us, sent_us);
    if (reply->integer == 0 && !id->lost) {
        id->lost = true;
        log_err("worker id %s now belongs to another process (this one missed its heartbeats): "
                "its tasks may run twice; at-least-once, this one runs nothing while the other "
                "holds the id; restart one of them with another worker.id",
                id->conf->worker_id);
    }
    freeReplyObject(reply);
    reap(id, rc);
    return rc->c != NULL ? 0 : -1;
}

void identity_release(struct identity *id, struct rconn *rc)
{
    const char *keys[] = {id->hb_key, id->workers_key, id->inflight_key, id->marker_key};
    const char *args[] = {id->conf->worker_id, id->token};
    redisReply *reply;

    if (rconn_try(rc) < 0)
        return;
    reply = script_run(rc, SCRIPT_RELEASE, 4, keys, NULL, 2, args, NULL);
    if (reply != NULL)
        freeReplyObject(reply);
}
