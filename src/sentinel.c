#include "sentinel.h"

#include <errno.h>
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

/* The master as last found or announced. resolve_mu also makes resolutions one at a time: the
 * threads that lose their connections together ask the sentinels once, not once each. */
static pthread_mutex_t resolve_mu = PTHREAD_MUTEX_INITIALIZER;
static char cur_host[256];
static int cur_port;
static int64_t cur_learned_us; /* monotonic */
static atomic_uint_fast64_t generation; /* 0: no master known yet */
/* What each sentinel last said, so that a sentinel down or stale is logged when that begins and
 * ends, not at every resolution. "" while it answers and agrees. */
static char sentinel_state[SENTINELS_MAX][400];

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
    pthread_mutex_lock(&resolve_mu);
    if (atomic_load(&generation) == 0)
        snprintf(buf, len, "%s (sentinel), not found yet", conf->sentinel.master);
    else
        snprintf(buf, len, "%s (sentinel) at %s:%d", conf->sentinel.master, cur_host, cur_port);
    pthread_mutex_unlock(&resolve_mu);
    return buf;
}

static struct timeval tv_ms(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
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
    if (s->password == NULL)
        return c;
    r = s->username ? redisCommand(c, "AUTH %s %s", s->username, s->password)
                    : redisCommand(c, "AUTH %s", s->password);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "AUTH: %s", r ? r->str : c->errstr);
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

/* Asks sentinel i where the master is: 0 with the answer, or -1 with why not in err. */
static int ask_one(const struct redis_conf *conf, int i, struct sentinel_answer *out, char *err,
                   size_t errlen)
{
    redisContext *c = sentinel_connect(conf, i, err, errlen);
    redisReply *r;
    int rc = -1;

    if (c == NULL)
        return -1;
    r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", conf->sentinel.master);
    if (r == NULL)
        snprintf(err, errlen, "SENTINEL get-master-addr-by-name: %s", c->errstr);
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "SENTINEL get-master-addr-by-name: %s", r->str);
    else if (r->type == REDIS_REPLY_NIL)
        snprintf(err, errlen, "it monitors no master named %s", conf->sentinel.master);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
             r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
             r->element[0]->len == 0 || r->element[0]->len >= sizeof(out->host) ||
             (out->port = atoi(r->element[1]->str)) < 1 || out->port > 65535)
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

/* Records where the master is; under resolve_mu. */
static uint64_t settle(const struct redis_conf *conf, const char *host, int port, const char *how)
{
    uint64_t gen = atomic_load(&generation);

    if (gen == 0 || cur_port != port || strcmp(cur_host, host) != 0) {
        if (gen == 0)
            log_notice("redis master %s is at %s:%d (%s)", conf->sentinel.master, host, port, how);
        else
            log_notice("redis master %s moved from %s:%d to %s:%d (%s): every connection "
                       "follows",
                       conf->sentinel.master, cur_host, cur_port, host, port, how);
        snprintf(cur_host, sizeof(cur_host), "%s", host);
        cur_port = port;
        atomic_store(&generation, ++gen);
    }
    cur_learned_us = clock_mono_us();
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
    for (int k = 0; k < distinct; k++) {
        const struct sentinel_answer *a = &answers[k];
        char where[300];
        if (try(a->host, a->port, ctx, why, sizeof(why)) < 0) {
            off += (size_t)snprintf(tried + off, off < sizeof(tried) ? sizeof(tried) - off : 0,
                                    "%s%s:%d %s", off ? "; " : "", a->host, a->port, why);
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
    uint64_t gen = 0;
    char host[sizeof(cur_host)];
    int port;

    pthread_mutex_lock(&resolve_mu);
    if (atomic_load(&generation) != 0 && cur_learned_us > since_us) {
        snprintf(host, sizeof(host), "%s", cur_host);
        port = cur_port;
        if (try(host, port, ctx, err, errlen) == 0)
            gen = atomic_load(&generation);
    }
    if (gen == 0)
        gen = ask_and_try(conf, try, ctx, err, errlen);
    pthread_mutex_unlock(&resolve_mu);
    return gen;
}

/* The watcher: one subscribed connection per sentinel that is up. */
static struct {
    const struct redis_conf *conf;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    redisContext *subs[SENTINELS_MAX];
    int64_t retry_us[SENTINELS_MAX];
} watch;

static void subscribe(int i)
{
    char err[256];
    redisContext *c = sentinel_connect(watch.conf, i, err, sizeof(err));
    redisReply *r;

    watch.retry_us[i] = clock_mono_us() + WATCH_RETRY_US;
    if (c == NULL)
        return;
    r = redisCommand(c, "SUBSCRIBE +switch-master");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r != NULL)
            freeReplyObject(r);
        redisFree(c);
        return;
    }
    freeReplyObject(r);
    watch.subs[i] = c;
}

/* "+switch-master" says "<name> <old ip> <old port> <new ip> <new port>". */
static void announced(int i, const redisReply *r)
{
    const struct redis_conf *conf = watch.conf;
    char name[256], old_host[256], host[256], how[300];
    int old_port, port;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    if (sscanf(r->element[2]->str, "%255s %255s %d %255s %d", name, old_host, &old_port, host,
               &port) != 5 ||
        strcmp(name, conf->sentinel.master) != 0 || port < 1 || port > 65535)
        return;
    snprintf(how, sizeof(how), "failover announced by sentinel %s:%d",
             conf->sentinel.hosts[i], conf->sentinel.ports[i]);
    pthread_mutex_lock(&resolve_mu);
    settle(conf, host, port, how);
    pthread_mutex_unlock(&resolve_mu);
}

static void drain(int i)
{
    redisContext *c = watch.subs[i];
    void *r;

    if (redisBufferRead(c) != REDIS_OK)
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
                drain(who[k]);
    }
    for (int i = 0; i < s->n; i++)
        if (watch.subs[i] != NULL) {
            redisFree(watch.subs[i]);
            watch.subs[i] = NULL;
        }
    return NULL;
}

int sentinel_watch_start(const struct redis_conf *conf)
{
    if (conf->sentinel.master == NULL)
        return 0;
    watch.conf = conf;
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
