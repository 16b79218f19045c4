#include "sentinel.h"

#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "log.h"
#include "reply.h"

#define WATCH_POLL_MS 250
#define WATCH_RETRY_US 1000000
#define SENTINEL_TIMEOUT_MAX_MS 1000 /* a silent sentinel must not hold a failover up */

/* The master as last found. addr_mu guards these few fields and is held only to copy them;
 * resolve_mu makes resolutions one at a time (the threads that lose their connections together
 * ask the sentinels once, not once each) and is held across their I/O, never while addr_mu is
 * wanted by anyone who holds another lock (redis_addr, under outage_mu, takes only addr_mu). */
static pthread_mutex_t resolve_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t addr_mu = PTHREAD_MUTEX_INITIALIZER;
static char cur_host[256];
static int cur_port;
static int64_t cur_learned_us; /* monotonic */
static atomic_uint_fast64_t generation; /* 0: no master known yet */
/* The last resolution (resolve_mu): when it began, and why it failed if it did, so that the
 * threads that waited for it take its answer rather than ask again. */
static int64_t last_try_us;
static char last_err[512];
/* What each sentinel last said, so that a sentinel down or stale is logged when that begins and
 * ends, not at every resolution. "" while it answers and agrees (resolve_mu). */
static char sentinel_state[SENTINELS_MAX][400];

struct master_at {
    char host[256];
    int port;
    int64_t learned_us;
    uint64_t gen;
};

static void current(struct master_at *m)
{
    pthread_mutex_lock(&addr_mu);
    snprintf(m->host, sizeof(m->host), "%s", cur_host);
    m->port = cur_port;
    m->learned_us = cur_learned_us;
    m->gen = atomic_load(&generation);
    pthread_mutex_unlock(&addr_mu);
}

static int cmp_answers(const void *a, const void *b)
{
    const struct sentinel_answer *x = a, *y = b;

    if (x->votes != y->votes)
        return y->votes - x->votes;
    return x->first - y->first;
}

int sentinel_rank(struct sentinel_answer *answers, int n)
{
    int distinct = 0;

    for (int i = 0; i < n; i++) {
        int j;
        for (j = 0; j < distinct; j++)
            if (answers[j].port == answers[i].port && strcmp(answers[j].host, answers[i].host) == 0)
                break;
        if (j < distinct) {
            answers[j].votes++;
            continue;
        }
        if (distinct != i)
            answers[distinct] = answers[i];
        answers[distinct].votes = 1;
        answers[distinct].first = i;
        distinct++;
    }
    qsort(answers, (size_t)distinct, sizeof(*answers), cmp_answers);
    return distinct;
}

uint64_t sentinel_generation(void)
{
    return atomic_load(&generation);
}

const char *sentinel_describe(const struct redis_conf *conf, char *buf, size_t len)
{
    struct master_at m = {.port = 0};

    current(&m);
    if (m.gen == 0)
        snprintf(buf, len, "%s (sentinel), not found yet", conf->sentinel.master);
    else
        snprintf(buf, len, "%s (sentinel) at %s:%d", conf->sentinel.master, m.host, m.port);
    return buf;
}

static struct timeval tv_ms(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static int64_t sentinel_deadline(const struct redis_conf *conf)
{
    int ms = conf->command_timeout_ms < SENTINEL_TIMEOUT_MAX_MS ? conf->command_timeout_ms
                                                                : SENTINEL_TIMEOUT_MAX_MS;
    return clock_mono_us() + (int64_t)ms * 1000;
}

/* A command and its whole reply within the deadline: SO_RCVTIMEO bounds each read, and a
 * sentinel that dribbles a byte a second would otherwise hold a resolution (and every thread
 * waiting for it) as long as it likes. NULL with the reason in err. */
static redisReply *command_within(redisContext *c, int64_t deadline_us, char *err, size_t errlen,
                                  const char *fmt, ...)
{
    void *reply = NULL;
    int done = 0;
    va_list ap;

    va_start(ap, fmt);
    if (redisvAppendCommand(c, fmt, ap) != REDIS_OK) {
        va_end(ap);
        snprintf(err, errlen, "%s", c->errstr);
        return NULL;
    }
    va_end(ap);
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr);
            return NULL;
        }
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int64_t left = deadline_us - clock_mono_us();
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr);
            return NULL;
        }
        if (reply != NULL)
            return reply;
        if (left <= 0 || poll(&pfd, 1, (int)((left + 999) / 1000)) == 0) {
            snprintf(err, errlen, "no whole reply within %d ms", SENTINEL_TIMEOUT_MAX_MS);
            return NULL;
        }
        if (redisBufferRead(c) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr);
            return NULL;
        }
    }
}

/* A connection to sentinel i, authenticated; NULL with the reason in err. */
static redisContext *sentinel_connect(const struct redis_conf *conf, int i, char *err,
                                      size_t errlen)
{
    const struct sentinel_conf *s = &conf->sentinel;
    int ms = conf->connect_timeout_ms < SENTINEL_TIMEOUT_MAX_MS ? conf->connect_timeout_ms
                                                                : SENTINEL_TIMEOUT_MAX_MS;
    redisContext *c = redisConnectWithTimeout(s->hosts[i], s->ports[i], tv_ms(ms));
    redisReply *r;
    char why[256];

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "%s", c->errstr);
        goto fail;
    }
    c->reader->fn = &reply_bounded;
    ms = conf->command_timeout_ms < SENTINEL_TIMEOUT_MAX_MS ? conf->command_timeout_ms
                                                            : SENTINEL_TIMEOUT_MAX_MS;
    if (redisSetTimeout(c, tv_ms(ms)) != REDIS_OK) {
        snprintf(err, errlen, "setting a timeout: %s", c->errstr);
        goto fail;
    }
    if (conf->sentinel.hosts[i][0] != '/')
        redisEnableKeepAlive(c); /* a subscription that goes half-open is noticed */
    if (s->password == NULL)
        return c;
    r = s->username ? command_within(c, sentinel_deadline(conf), why, sizeof(why), "AUTH %s %s",
                                     s->username, s->password)
                    : command_within(c, sentinel_deadline(conf), why, sizeof(why), "AUTH %s",
                                     s->password);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "AUTH: %.200s", r ? r->str : why);
        if (r != NULL)
            freeReplyObject(r);
        goto fail;
    }
    freeReplyObject(r);
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* Logs sentinel i's state when it changes: now is "" (answers and agrees) or what is wrong. */
static void sentinel_say(const struct redis_conf *conf, int i, const char *now)
{
    const struct sentinel_conf *s = &conf->sentinel;
    char *was = sentinel_state[i];

    if (strcmp(was, now) == 0)
        return;
    if (now[0] != '\0')
        log_warn("sentinel %s:%d: %s; not followed, the other sentinels are asked", s->hosts[i],
                 s->ports[i], now);
    else
        log_notice("sentinel %s:%d answers for master %s again", s->hosts[i], s->ports[i],
                   s->master);
    snprintf(was, sizeof(sentinel_state[0]), "%s", now);
}

/* "6379": 1 to 65535 and nothing else, or -1. */
static int parse_port(const char *text)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && n >= 1 && n <= 65535 ? (int)n : -1;
}

/* Asks sentinel i where the master is: 0 with the answer, or -1 with why not in err. */
static int ask_one(const struct redis_conf *conf, int i, struct sentinel_answer *out, char *err,
                   size_t errlen)
{
    redisContext *c = sentinel_connect(conf, i, err, errlen);
    redisReply *r;
    char why[256];
    int rc = -1;

    if (c == NULL)
        return -1;
    r = command_within(c, sentinel_deadline(conf), why, sizeof(why),
                       "SENTINEL get-master-addr-by-name %s", conf->sentinel.master);
    if (r == NULL)
        snprintf(err, errlen, "SENTINEL get-master-addr-by-name: %.200s", why);
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "SENTINEL get-master-addr-by-name: %s", r->str);
    else if (r->type == REDIS_REPLY_NIL)
        snprintf(err, errlen, "it monitors no master named %s", conf->sentinel.master);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
             r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
             r->element[0]->len == 0 || r->element[0]->len >= sizeof(out->host) ||
             strlen(r->element[0]->str) != r->element[0]->len ||
             (out->port = parse_port(r->element[1]->str)) < 0)
        snprintf(err, errlen, "an answer to SENTINEL get-master-addr-by-name that is not "
                              "(host, port)");
    else {
        snprintf(out->host, sizeof(out->host), "%s", r->element[0]->str);
        rc = 0;
    }
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Records where the master is (the caller holds resolve_mu). */
static uint64_t settle(const struct redis_conf *conf, const char *host, int port, const char *how)
{
    uint64_t gen;
    char was[sizeof(cur_host)];
    int was_port;

    pthread_mutex_lock(&addr_mu);
    gen = atomic_load(&generation);
    snprintf(was, sizeof(was), "%s", cur_host);
    was_port = cur_port;
    if (gen == 0 || cur_port != port || strcmp(cur_host, host) != 0) {
        snprintf(cur_host, sizeof(cur_host), "%.255s", host);
        cur_port = port;
        atomic_store(&generation, ++gen);
    } else {
        was_port = -1; /* unchanged: nothing to say */
    }
    cur_learned_us = clock_mono_us();
    pthread_mutex_unlock(&addr_mu);
    if (was_port == 0)
        log_notice("redis master %s is at %s:%d (%s)", conf->sentinel.master, host, port, how);
    else if (was_port > 0)
        log_notice("redis master %s moved from %s:%d to %s:%d (%s): every connection follows",
                   conf->sentinel.master, was, was_port, host, port, how);
    return gen;
}

/* Asks every sentinel, then tries their answers best first; under resolve_mu. */
static uint64_t ask_and_try(const struct redis_conf *conf, sentinel_try_fn try, void *ctx,
                            char *err, size_t errlen)
{
    const struct sentinel_conf *s = &conf->sentinel;
    struct sentinel_answer answers[SENTINELS_MAX];
    char said[SENTINELS_MAX][sizeof(answers[0].host) + 8];
    char why[256], tried[512] = "";
    size_t off = 0;
    int n = 0, distinct;

    for (int i = 0; i < s->n; i++) {
        said[i][0] = '\0';
        if (ask_one(conf, i, &answers[n], why, sizeof(why)) < 0) {
            sentinel_say(conf, i, why);
            continue;
        }
        snprintf(said[i], sizeof(said[i]), "%.255s:%d", answers[n].host, answers[n].port);
        n++;
    }
    if (n == 0) {
        snprintf(err, errlen, "no sentinel of master %s answered", s->master);
        return 0;
    }
    distinct = sentinel_rank(answers, n);
    /* An address most of the sentinels that answered agree on is the only one tried: one
     * sentinel alone (stale, misconfigured or lying) never moves the worker while a majority
     * says otherwise; if that address is not the master yet, the next attempt asks again.
     * Without a majority (a split, two sentinels disagreeing) every answer is tried, and ROLE
     * decides. */
    if (answers[0].votes * 2 > n)
        distinct = 1;
    else if (distinct > 1)
        log_warn("the sentinels of master %s disagree, none by a majority: trying each address "
                 "they give, the master (ROLE) wins",
                 s->master);
    for (int k = 0; k < distinct; k++) {
        const struct sentinel_answer *a = &answers[k];
        char where[300];
        if (try(a->host, a->port, ctx, why, sizeof(why)) < 0) {
            if (off < sizeof(tried))
                off += (size_t)snprintf(tried + off, sizeof(tried) - off, "%s%s:%d %s",
                                        off ? "; " : "", a->host, a->port, why);
            continue;
        }
        snprintf(where, sizeof(where), "%.255s:%d", a->host, a->port);
        for (int i = 0; i < s->n; i++) {
            char stale[sizeof(said[0]) + 120];
            if (said[i][0] == '\0' || strcmp(said[i], where) == 0) {
                if (said[i][0] != '\0')
                    sentinel_say(conf, i, "");
                continue;
            }
            snprintf(stale, sizeof(stale), "it says the master is at %.263s, a server that is not "
                                           "the master now (its answer is stale)",
                     said[i]);
            sentinel_say(conf, i, stale);
        }
        snprintf(why, sizeof(why), "%d of %d sentinels say so", a->votes, s->n);
        return settle(conf, a->host, a->port, why);
    }
    snprintf(err, errlen, "no master where the sentinels point: %s", tried);
    return 0;
}

uint64_t sentinel_resolve(const struct redis_conf *conf, int64_t since_us, sentinel_try_fn try,
                          void *ctx, char *err, size_t errlen)
{
    struct master_at m = {.port = 0};
    uint64_t gen;
    int64_t start;

    /* The master known since this connection was lost: tried with no lock held. */
    current(&m);
    if (m.gen != 0 && m.learned_us > since_us) {
        if (try(m.host, m.port, ctx, err, errlen) == 0)
            return m.gen;
        since_us = clock_mono_us();
    }
    pthread_mutex_lock(&resolve_mu);
    if (last_try_us > since_us) {
        /* Another thread resolved while this one waited: its answer is as fresh as needed. */
        pthread_mutex_unlock(&resolve_mu);
        current(&m);
        if (m.gen != 0 && m.learned_us >= since_us)
            return try(m.host, m.port, ctx, err, errlen) == 0 ? m.gen : 0;
        pthread_mutex_lock(&resolve_mu);
        snprintf(err, errlen, "%s", last_err[0] ? last_err : "no master found");
        pthread_mutex_unlock(&resolve_mu);
        return 0;
    }
    start = clock_mono_us();
    gen = ask_and_try(conf, try, ctx, err, errlen);
    last_try_us = start;
    snprintf(last_err, sizeof(last_err), "%s", gen == 0 ? err : "");
    pthread_mutex_unlock(&resolve_mu);
    return gen;
}

/* The watcher: one subscribed connection per sentinel that is up. */
static struct {
    const struct redis_conf *conf;
    sentinel_try_fn probe;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    redisContext *subs[SENTINELS_MAX];
    int64_t retry_us[SENTINELS_MAX];
} watch;

static void drain(int i, bool wait);

static void subscribe(int i)
{
    char err[256];
    redisContext *c = sentinel_connect(watch.conf, i, err, sizeof(err));
    redisReply *r;

    watch.retry_us[i] = clock_mono_us() + WATCH_RETRY_US;
    if (c == NULL)
        return;
    r = command_within(c, sentinel_deadline(watch.conf), err, sizeof(err),
                       "SUBSCRIBE +switch-master");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r != NULL)
            freeReplyObject(r);
        redisFree(c);
        return;
    }
    freeReplyObject(r);
    watch.subs[i] = c;
    drain(i, false); /* an announcement read along with the confirmation */
}

/* "+switch-master" says "<name> <old ip> <old port> <new ip> <new port>". One sentinel's word
 * is not enough to move every connection: it starts a resolution, in which the sentinels vote
 * and ROLE has the last word (a connection to the new master is made and dropped to check). */
static void announced(int i, const redisReply *r)
{
    const struct redis_conf *conf = watch.conf;
    char name[256], old_host[256], host[256], err[512];
    int old_port, port;
    uint64_t gen;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING || r->element[2]->len > 600)
        return;
    if (sscanf(r->element[2]->str, "%255s %255s %6d %255s %6d", name, old_host, &old_port, host,
               &port) != 5 ||
        strcmp(name, conf->sentinel.master) != 0)
        return;
    log_info("sentinel %s:%d announces a failover of %s to %.255s:%d: asking every sentinel",
             conf->sentinel.hosts[i], conf->sentinel.ports[i], name, host, port);
    pthread_mutex_lock(&resolve_mu);
    last_try_us = clock_mono_us();
    gen = ask_and_try(conf, watch.probe, (void *)conf, err, sizeof(err));
    snprintf(last_err, sizeof(last_err), "%s", gen == 0 ? err : "");
    pthread_mutex_unlock(&resolve_mu);
}

/* Reads what sentinel i sent; with wait, there is something to read (poll said so). */
static void drain(int i, bool wait)
{
    redisContext *c = watch.subs[i];
    void *r;

    if (wait && redisBufferRead(c) != REDIS_OK)
        goto lost;
    for (;;) {
        r = NULL;
        if (redisGetReplyFromReader(c, &r) != REDIS_OK)
            goto lost;
        if (r == NULL)
            return;
        announced(i, r);
        freeReplyObject(r);
    }
lost:
    redisFree(c);
    watch.subs[i] = NULL;
    watch.retry_us[i] = clock_mono_us() + WATCH_RETRY_US;
}

static void *watch_main(void *arg)
{
    const struct sentinel_conf *s = &watch.conf->sentinel;
    struct pollfd fds[SENTINELS_MAX];
    int who[SENTINELS_MAX];

    (void)arg;
    while (!atomic_load(&watch.stop)) {
        int n = 0;
        for (int i = 0; i < s->n; i++) {
            if (watch.subs[i] == NULL && clock_mono_us() >= watch.retry_us[i])
                subscribe(i);
            if (watch.subs[i] != NULL) {
                fds[n] = (struct pollfd){.fd = watch.subs[i]->fd, .events = POLLIN};
                who[n++] = i;
            }
        }
        if (poll(fds, (nfds_t)n, WATCH_POLL_MS) < 0 && errno != EINTR)
            break;
        for (int k = 0; k < n; k++)
            if (fds[k].revents != 0)
                drain(who[k], true);
    }
    for (int i = 0; i < s->n; i++)
        if (watch.subs[i] != NULL) {
            redisFree(watch.subs[i]);
            watch.subs[i] = NULL;
        }
    return NULL;
}

int sentinel_watch_start(const struct redis_conf *conf, sentinel_try_fn probe)
{
    if (conf->sentinel.master == NULL)
        return 0;
    watch.conf = conf;
    watch.probe = probe;
    atomic_store(&watch.stop, false);
    errno = pthread_create(&watch.thread, NULL, watch_main, NULL);
    if (errno != 0)
        return -1;
    pthread_setname_np(watch.thread, "qw-sentinel"); /* for top -H, ps -L, gdb */
    watch.running = true;
    return 0;
}

void sentinel_watch_stop(void)
{
    if (!watch.running)
        return;
    atomic_store(&watch.stop, true);
    pthread_join(watch.thread, NULL);
    watch.running = false;
}
