#include "redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "clock.h"
#include "log.h"
#include "reply.h"
#include "sentinel.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000 /* so that work resumes within a second of Redis coming back */
#define STALE_AFTER_US 1000000

/* The whole process is in one outage while any of its connections is down: one line when the
 * first goes down, one when the last comes back. */
static atomic_llong reconnects; /* redis_reconnects() */
static pthread_mutex_t outage_mu = PTHREAD_MUTEX_INITIALIZER;
static int outage_conns;
static int64_t outage_start_us;

static void outage_begin(struct rconn *r, const char *why)
{
    char addr[300];
    bool first;

    if (r->down || r->observer)
        return;
    r->down = true;
    pthread_mutex_lock(&outage_mu);
    first = outage_conns++ == 0;
    if (first)
        outage_start_us = clock_mono_us();
    pthread_mutex_unlock(&outage_mu);
    /* Said outside the lock: a journald that stopped reading blocks the caller, and must not
     * block the other connections' threads (the heartbeat's) on the lock as well. */
    if (first)
        log_warn("redis %s unreachable (%s: %s); retrying, tasks in progress keep running",
                 redis_addr(r->conf, addr, sizeof(addr)), r->role, why);
}

/* quiet: the connection is closed, not back: it leaves the outage without saying it ended. */
static void outage_end(struct rconn *r, bool quiet)
{
    char addr[300];
    int64_t lasted_us;
    bool last;

    if (!r->down)
        return;
    r->down = false;
    pthread_mutex_lock(&outage_mu);
    last = --outage_conns == 0;
    lasted_us = clock_mono_us() - outage_start_us;
    pthread_mutex_unlock(&outage_mu);
    if (last && !quiet)
        log_notice("redis %s reachable again after %.1f s", redis_addr(r->conf, addr, sizeof(addr)),
                   (double)lasted_us / 1e6);
}

const char *redis_addr(const struct redis_conf *conf, char *buf, size_t len)
{
    if (conf->sentinel.master != NULL)
        sentinel_describe(conf, buf, len);
    else if (conf->unix_socket != NULL)
        snprintf(buf, len, "unix:%s", conf->unix_socket);
    else
        snprintf(buf, len, "%s:%d", conf->host, conf->port);
    return buf;
}

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

bool reply_means_reconnect(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply_class(reply, 0) == RC_RECONNECT;
}

/* A connection accepted, then closed before any reply: not what a Redis does (it answers an
 * error instead), but what a proxy or TLS tunnel in front of it does when it cannot get
 * through. Said so, since the tunnel's own log has the reason. */
static const char *closed_hint(const redisContext *c)
{
    if (c->err == REDIS_ERR_EOF ||
        (c->err == REDIS_ERR_IO && strstr(c->errstr, strerror(ECONNRESET)) != NULL))
        return "; the connection was accepted, then closed before any reply: a proxy or TLS "
               "tunnel in front of Redis may be refusing it (see its log, e.g. journalctl -u "
               "qworker-redis-tls)";
    return "";
}

/* Runs a set-up command; 0 if it answered without error. */
static int setup_command(redisContext *c, char *err, size_t errlen, const char *what, int argc,
                         const char **argv)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);

    if (reply == NULL) {
        snprintf(err, errlen, "%s: %s%s", what, c->errstr[0] ? c->errstr : "connection lost",
                 closed_hint(c));
        return -1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", what, reply->str);
        freeReplyObject(reply);
        return -1;
    }
    freeReplyObject(reply);
    return 0;
}

/* A connection to host:port, or to the configured address when host is NULL. */
static redisContext *connect_at(const struct redis_conf *conf, const char *host, int port,
                                const char *name, char *err, size_t errlen)
{
    struct timeval ct = ms_to_tv(conf->connect_timeout_ms);
    redisContext *c;
    char db[16];

    if (host != NULL)
        c = redisConnectWithTimeout(host, port, ct);
    else if (conf->unix_socket != NULL)
        c = redisConnectUnixWithTimeout(conf->unix_socket, ct);
    else
        c = redisConnectWithTimeout(conf->host, conf->port, ct);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "%s", c->errstr);
        goto fail;
    }
    c->reader->fn = &reply_bounded; /* no reply may make us allocate what it only declares */
    /* Without it a read blocks forever on a silent peer (hiredis 0.14). */
    if (redisSetTimeout(c, ms_to_tv(conf->command_timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "setting the command timeout: %s", c->errstr);
        goto fail;
    }
    if (conf->unix_socket == NULL)
        redisEnableKeepAlive(c);
    if (conf->password != NULL) {
        const char *auth_user[] = {"AUTH", conf->username, conf->password};
        const char *auth[] = {"AUTH", conf->password};
        if (conf->username != NULL ? setup_command(c, err, errlen, "AUTH", 3, auth_user)
                                   : setup_command(c, err, errlen, "AUTH", 2, auth))
            goto fail;
    }
    if (conf->db != 0) {
        const char *sel[] = {"SELECT", db};
        snprintf(db, sizeof(db), "%d", conf->db);
        if (setup_command(c, err, errlen, "SELECT", 2, sel) < 0)
            goto fail;
    }
    if (name != NULL) {
        const char *setname[] = {"CLIENT", "SETNAME", name};
        if (setup_command(c, err, errlen, "CLIENT SETNAME", 3, setname) < 0)
            goto fail;
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* Whether the server is the master: a sentinel's answer may be stale, and writing to a replica
 * (or to an old master that came back) would lose what was written. */
static int check_role(redisContext *c, char *err, size_t errlen)
{
    static atomic_bool said_noperm;
    redisReply *r = redisCommand(c, "ROLE");
    int rc = -1;

    if (r == NULL) {
        snprintf(err, errlen, "ROLE: %s", c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0) {
        /* An ACL user without ROLE: a replica still shows itself by refusing the first write
         * (READONLY), which moves the connection like a lost one. */
        if (!atomic_exchange(&said_noperm, true))
            log_notice("the redis user may not run ROLE: a server is taken for the master until "
                       "it refuses a write (READONLY)");
        rc = 0;
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "ROLE: %s", r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
               r->element[0]->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "ROLE: an answer that is not (role, ...)");
    } else if (strcmp(r->element[0]->str, "master") != 0) {
        snprintf(err, errlen, "is a %.32s, not the master", r->element[0]->str);
    } else {
        rc = 0;
    }
    freeReplyObject(r);
    return rc;
}

struct master_try {
    const struct redis_conf *conf;
    const char *name;
    redisContext *c;
};

static int try_master(const char *host, int port, void *ctx, char *err, size_t errlen)
{
    struct master_try *t = ctx;

    t->c = connect_at(t->conf, host, port, t->name, err, errlen);
    if (t->c == NULL)
        return -1;
    if (check_role(t->c, err, errlen) < 0) {
        redisFree(t->c);
        t->c = NULL;
        return -1;
    }
    return 0;
}

int redis_probe_master(const char *host, int port, void *conf, char *err, size_t errlen)
{
    struct master_try t = {.conf = conf, .name = "qworker-probe"};

    if (try_master(host, port, &t, err, errlen) < 0)
        return -1;
    redisFree(t.c);
    return 0;
}

/* A connection to the master the sentinels name; its address's generation in *gen. */
static redisContext *connect_master(const struct redis_conf *conf, const char *name,
                                    int64_t since_us, uint64_t *gen, char *err, size_t errlen)
{
    struct master_try t = {.conf = conf, .name = name};

    *gen = sentinel_resolve(conf, since_us, try_master, &t, err, errlen);
    return *gen != 0 ? t.c : NULL;
}

redisContext *redis_connect(const struct redis_conf *conf, const char *name, char *err,
                            size_t errlen)
{
    uint64_t gen;

    if (conf->sentinel.master != NULL)
        return connect_master(conf, name, 0, &gen, err, errlen);
    return connect_at(conf, NULL, 0, name, err, errlen);
}

bool rconn_moved(const struct rconn *r)
{
    return r->conf->sentinel.master != NULL && sentinel_generation() != r->gen;
}

/* Leaves a connection to an old master: not an outage, the new master is ready. */
static void leave_old_master(struct rconn *r)
{
    log_info("%s: leaving the old master's connection for the new master", r->role);
    redisFree(r->c);
    r->c = NULL;
    r->next_attempt_us = 0;
}

void rconn_init(struct rconn *r, const struct redis_conf *conf, const char *role)
{
    memset(r, 0, sizeof(*r));
    r->conf = conf;
    r->role = role;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->rng = (uint64_t)clock_real_us() ^ (uint64_t)(uintptr_t)r;
}

static int jitter(struct rconn *r, int ms)
{
    /* xorshift64: jitter only needs to spread workers apart, not to be unpredictable. */
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return ms / 2 + (int)(r->rng % (uint64_t)(ms / 2 + 1));
}

static void back_off(struct rconn *r)
{
    r->next_attempt_us = clock_mono_us() + (int64_t)jitter(r, r->backoff_ms) * 1000;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

int rconn_try(struct rconn *r)
{
    char err[512], name[64];
    redisReply *reply;

    if (r->c != NULL && rconn_moved(r))
        leave_old_master(r);
    if (r->c != NULL)
        return 0;
    if (clock_mono_us() < r->next_attempt_us)
        return -1;
    snprintf(name, sizeof(name), "qworker-%s", r->role);
    if (r->conf->sentinel.master != NULL)
        r->c = connect_master(r->conf, name, r->lost_us, &r->gen, err, sizeof(err));
    else
        r->c = connect_at(r->conf, NULL, 0, name, err, sizeof(err));
    if (r->c == NULL) {
        r->lost_us = clock_mono_us();
        outage_begin(r, err);
        back_off(r);
        return -1;
    }
    r->connected_us = clock_mono_us();
    /* CLIENT ID answers even while Redis loads its data; DBSIZE does not, so a server still
     * loading is not taken for a usable one. DBSIZE names no key: an ACL user limited to
     * qworker's keys may run it. */
    redisAppendCommand(r->c, "CLIENT ID");
    redisAppendCommand(r->c, "DBSIZE");
    for (int i = 0; i < 2; i++) {
        reply = NULL;
        if (redisGetReply(r->c, (void **)&reply) != REDIS_OK ||
            reply->type != REDIS_REPLY_INTEGER) {
            snprintf(err, sizeof(err), "%s: %s%s", i == 0 ? "CLIENT ID" : "DBSIZE",
                     reply ? (reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply")
                           : r->c->errstr,
                     reply ? "" : closed_hint(r->c));
            if (reply != NULL)
                freeReplyObject(reply);
            rconn_lost(r, err);
            return -1;
        }
        if (i == 0)
            r->client_id = reply->integer;
        freeReplyObject(reply);
    }
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->connected_once)
        atomic_fetch_add_explicit(&reconnects, 1, memory_order_relaxed);
    r->connected_once = true;
    log_debug("%s: connected to redis (client id %lld)", r->role, r->client_id);
    outage_end(r, false);
    return 0;
}

int rconn_wait_ms(struct rconn *r)
{
    int64_t left = r->next_attempt_us - clock_mono_us();

    if (r->c != NULL || left <= 0)
        return 0;
    return (int)((left + 999) / 1000);
}

void rconn_lost(struct rconn *r, const char *why)
{
    char reason[512];
    bool fresh = clock_mono_us() - r->connected_us < STALE_AFTER_US;

    snprintf(reason, sizeof(reason), "%s", why); /* why may live in the context freed below */
    r->lost_us = clock_mono_us(); /* with Sentinel: ask where the master is now */
    if (strcmp(why, "Out of memory") == 0)
        reply_take_refusal(reason, sizeof(reason));
    else if (strcmp(why, strerror(EAGAIN)) == 0) /* hiredis's word for its read timeout */
        snprintf(reason, sizeof(reason), "no reply within the command timeout");
    if (r->c != NULL) {
        redisFree(r->c);
        r->c = NULL;
    }
    /* A connection that served for a while may just have gone stale (server restarted, idle
     * connection dropped): reconnect at once, and call it an outage only if that fails too. One
     * that fails right after connecting means a server that is not usable yet: back off. */
    if (fresh) {
        outage_begin(r, reason);
        back_off(r);
    } else {
        r->next_attempt_us = 0;
    }
}

void rconn_close(struct rconn *r)
{
    if (r->c != NULL)
        redisFree(r->c);
    r->c = NULL;
    outage_end(r, true);
}

static redisReply *checked(struct rconn *r, redisReply *reply)
{
    char why[256];

    if (reply == NULL) {
        rconn_lost(r, r->c->errstr[0] ? r->c->errstr : "connection lost");
        return NULL;
    }
    if (reply_means_reconnect(reply)) {
        snprintf(why, sizeof(why), "%s", reply->str);
        freeReplyObject(reply);
        rconn_lost(r, why);
        return NULL;
    }
    return reply;
}

redisReply *rconn_command(struct rconn *r, int argc, const char **argv, const size_t *lens)
{
    if (r->c != NULL && rconn_moved(r))
        leave_old_master(r);
    if (r->c == NULL)
        return NULL;
    return checked(r, redisCommandArgv(r->c, argc, argv, lens));
}

redisReply *rconn_reply(struct rconn *r)
{
    void *reply = NULL;

    if (r->c == NULL)
        return NULL;
    if (redisGetReply(r->c, &reply) != REDIS_OK)
        reply = NULL;
    return checked(r, reply);
}

static atomic_bool refusing;

long long redis_reconnects(void)
{
    return atomic_load_explicit(&reconnects, memory_order_relaxed);
}

void redis_refusing_set(bool on)
{
    atomic_store(&refusing, on);
}

bool redis_refusing(void)
{
    return atomic_load(&refusing);
}

bool redis_outage(void)
{
    bool down;

    pthread_mutex_lock(&outage_mu);
    down = outage_conns > 0;
    pthread_mutex_unlock(&outage_mu);
    return down;
}
