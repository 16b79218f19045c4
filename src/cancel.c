#include "cancel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "redis.h"
#include "reply.h"
#include "task.h"
#include "wire.h"

#define BUCKETS 4096
/* How often the remembered ids are read again from Redis (what a lost message missed). */
#define RELOAD_US (60 * 1000000LL)
#define POLL_MS 200
/* A subscription Redis refused is asked for again after this long. */
#define SUBSCRIBE_HOLD_US (60 * 1000000LL)
/* An id published without being in the set (PUBLISH by hand) is kept just long enough for a
 * task of that id already on its way to the loop thread. */
#define PUBLISHED_ONLY_MS 5000

struct entry {
    struct entry *next;
    int64_t until_ms;
    char id[]; /* NUL-terminated: ids with a NUL are refused on the way in */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[BUCKETS];
static atomic_size_t count;
static atomic_uint_fast64_t generation;

static size_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % BUCKETS);
}

static struct entry *find(const char *id)
{
    for (struct entry *e = buckets[hash(id)]; e != NULL; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

int cancel_add(const char *id, size_t len, int64_t until_ms)
{
    struct entry *e;
    int rc = 1;

    if (len == 0 || len > TASK_LABEL_MAX || memchr(id, '\0', len) != NULL)
        return 0; /* no task has such an id */
    pthread_mutex_lock(&mu);
    /* The id arrives counted, not NUL-terminated. */
    char key[TASK_LABEL_MAX + 1];
    memcpy(key, id, len);
    key[len] = '\0';
    if ((e = find(key)) != NULL) {
        if (until_ms > e->until_ms)
            e->until_ms = until_ms;
    } else if ((e = malloc(sizeof(*e) + len + 1)) != NULL) {
        size_t b = hash(key);
        memcpy(e->id, key, len + 1);
        e->until_ms = until_ms;
        e->next = buckets[b];
        buckets[b] = e;
        atomic_fetch_add(&count, 1);
    } else {
        rc = -1;
    }
    atomic_fetch_add(&generation, 1);
    pthread_mutex_unlock(&mu);
    return rc;
}

void cancel_prune(int64_t now_ms)
{
    pthread_mutex_lock(&mu);
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct entry **p = &buckets[b]; *p != NULL;) {
            struct entry *e = *p;
            if (e->until_ms > now_ms) {
                p = &e->next;
                continue;
            }
            *p = e->next;
            free(e);
            atomic_fetch_sub(&count, 1);
        }
    pthread_mutex_unlock(&mu);
}

void cancel_forget_all(void)
{
    cancel_prune(INT64_MAX);
}

bool cancel_wanted(const char *label, const char *id)
{
    bool found;

    if (atomic_load_explicit(&count, memory_order_relaxed) == 0)
        return false;
    pthread_mutex_lock(&mu);
    found = find(label) != NULL || (id != NULL && find(id) != NULL);
    pthread_mutex_unlock(&mu);
    return found;
}

uint64_t cancel_generation(void)
{
    return atomic_load(&generation);
}

/* The listener thread. */
static struct {
    const struct config *conf;
    void (*poke)(void *);
    void *arg;
    struct rconn sub, cmd;
    char *channel, *key;
    bool subscribed;
    int64_t next_reload_us, subscribe_after_us;
    int64_t offset_ms; /* our real-time clock minus Redis's, at the last reload */
    pthread_t thread;
    bool running;
    atomic_bool stop;
    struct rcond refused;     /* Redis refusing to let the set be read: said once */
    struct rcond sub_refused; /* Redis refusing SUBSCRIBE: said once */
    struct rcond score_refused; /* Redis refusing ZSCORE: said once */
    int64_t next_prune_us;
} w;

/* Every id remembered in Redis now, by Redis's clock. */
static int reload(void)
{
    const char *time_argv[] = {"TIME"};
    redisReply *t, *r;
    char now[32];
    long long now_ms, off_ms;

    if (rconn_try(&w.cmd) < 0)
        return -1;
    if ((t = rconn_command(&w.cmd, 1, time_argv, NULL)) == NULL)
        return -1;
    if (!wire_time_ms(t, &now_ms)) {
        rcond_begin(&w.refused, LOG_WARNING, reply_text(t), "cancel: cannot read %s", w.key);
        freeReplyObject(t);
        return -1;
    }
    freeReplyObject(t);
    /* Kept by our clock from here: what Redis says is due then, shifted by the difference. */
    off_ms = clock_real_us() / 1000 - now_ms;
    w.offset_ms = off_ms;
    snprintf(now, sizeof(now), "(%lld", now_ms);
    const char *argv[] = {"ZRANGEBYSCORE", w.key, now, "+inf", "WITHSCORES"};
    if ((r = rconn_command(&w.cmd, 5, argv, NULL)) == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        rcond_begin(&w.refused, LOG_WARNING, reply_text(r), "cancel: cannot read %s", w.key);
        freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *id = r->element[i], *until = r->element[i + 1];
        if (id->type == REDIS_REPLY_STRING && until->type == REDIS_REPLY_STRING)
            cancel_add(id->str, id->len, atoll(until->str) + off_ms);
    }
    freeReplyObject(r);
    cancel_prune(clock_real_us() / 1000);
    rcond_end(&w.refused, "cancel: %s is read again", w.key);
    if (w.poke != NULL)
        w.poke(w.arg);
    return 0;
}

static void drain(bool read_socket);

static int subscribe(void)
{
    const char *argv[] = {"SUBSCRIBE", w.channel};
    redisReply *r = rconn_command(&w.sub, 2, argv, NULL);

    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        rcond_begin(&w.sub_refused, LOG_WARNING, reply_text(r),
                    "cancel: cannot subscribe to %s (asked again every minute): cancels reach "
                    "this worker only through %s, read every minute",
                    w.channel, w.key);
        freeReplyObject(r);
        rconn_close(&w.sub);
        w.subscribe_after_us = clock_mono_us() + SUBSCRIBE_HOLD_US;
        return -1;
    }
    freeReplyObject(r);
    rcond_end(&w.sub_refused, "cancel: subscribed to %s", w.channel);
    w.subscribed = true;
    drain(false); /* a message read along with the confirmation */
    return w.subscribed ? 0 : -1;
}

/* Until when the set in Redis keeps id (our clock), or a few seconds if it is not there. */
static int64_t remembered_until(const char *id, size_t len)
{
    const char *argv[] = {"ZSCORE", w.key, id};
    size_t lens[] = {strlen(argv[0]), strlen(w.key), len};
    int64_t soon = clock_real_us() / 1000 + PUBLISHED_ONLY_MS, until = soon;
    redisReply *r;

    if (rconn_try(&w.cmd) < 0 || (r = rconn_command(&w.cmd, 3, argv, lens)) == NULL)
        return soon; /* the next reload says */
    if (r->type == REDIS_REPLY_ERROR) {
        rcond_begin(&w.score_refused, LOG_WARNING, reply_text(r),
                    "cancel: cannot look up a cancel in %s: it is kept a few seconds, until the "
                    "set is read again (every minute)",
                    w.key);
    } else {
        rcond_end(&w.score_refused, "cancel: cancels are looked up in %s again", w.key);
        if (r->type == REDIS_REPLY_STRING)
            until = atoll(r->str) + w.offset_ms;
    }
    freeReplyObject(r);
    return until > soon ? until : soon;
}

/* A message: ["message", channel, id]. */
static void heard(const redisReply *r)
{
    const redisReply *id;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    id = r->element[2];
    switch (cancel_add(id->str, id->len, remembered_until(id->str, id->len))) {
    case 1:
        log_notice("cancel: task %.*s is cancelled: stopped if it runs here, never started",
                   (int)id->len, id->str);
        break;
    case 0:
        break; /* no task has such an id */
    default:
        log_err("cancel: out of memory: a cancel is not remembered until %s is read again",
                w.key);
    }
    if (w.poke != NULL)
        w.poke(w.arg);
}

/* Reads what came on the subscription; with read_socket, poll said there is more on it. */
static void drain(bool read_socket)
{
    redisContext *c = w.sub.c;
    void *r;

    if (read_socket && redisBufferRead(c) != REDIS_OK) {
        rconn_lost(&w.sub, c->errstr);
        w.subscribed = false;
        return;
    }
    for (;;) {
        r = NULL;
        if (redisGetReplyFromReader(c, &r) != REDIS_OK) {
            rconn_lost(&w.sub, c->errstr);
            w.subscribed = false;
            return;
        }
        if (r == NULL)
            return;
        heard(r);
        freeReplyObject(r);
    }
}

static void *watch_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&w.stop)) {
        struct pollfd pfd = {.fd = -1};

        if (w.subscribed && rconn_moved(&w.sub)) {
            rconn_close(&w.sub); /* a failover: subscribe on the new master */
            w.subscribed = false;
        }
        if (!w.subscribed && clock_mono_us() >= w.subscribe_after_us &&
            rconn_try(&w.sub) == 0 && subscribe() == 0)
            w.next_reload_us = 0; /* what was published while away is in the set */
        if (clock_mono_us() >= w.next_reload_us)
            w.next_reload_us = clock_mono_us() + (reload() == 0 ? RELOAD_US : 1000000);
        if (clock_mono_us() >= w.next_prune_us) {
            /* Whether Redis answers or not: a cancel is forgotten in time. */
            cancel_prune(clock_real_us() / 1000);
            w.next_prune_us = clock_mono_us() + 1000000;
        }
        if (w.subscribed)
            pfd = (struct pollfd){.fd = w.sub.c->fd, .events = POLLIN};
        if (poll(&pfd, 1, POLL_MS) < 0 && errno != EINTR)
            break;
        if (w.subscribed && pfd.revents != 0)
            drain(true);
    }
    return NULL; /* the connections are closed by cancel_watch_stop */
}

static void watch_free(void)
{
    rconn_close(&w.sub);
    rconn_close(&w.cmd);
    free(w.channel);
    free(w.key);
    w.channel = w.key = NULL;
}

int cancel_watch_start(const struct config *conf, void (*poke)(void *), void *arg)
{
    w.conf = conf;
    w.poke = poke;
    w.arg = arg;
    w.channel = w.key = NULL;
    if (asprintf(&w.channel, "%s:cancel", conf->prefix) < 0 ||
        asprintf(&w.key, "%s:cancels", conf->prefix) < 0) {
        watch_free();
        return -1;
    }
    rconn_init(&w.sub, &conf->redis, "cancel");
    rconn_init(&w.cmd, &conf->redis, "cancel");
    w.sub.observer = w.cmd.observer = true; /* not the worker's outage: its own is said here */
    /* Before the consumer takes anything: subscribed, then the set read (in this order, so
     * that no cancel falls between the two), so that a task cancelled before this worker
     * started never starts here. If Redis does not answer now, the thread tries again. */
    if (rconn_try(&w.sub) == 0)
        (void)subscribe(); /* refused: the set is still read, and read every minute */
    if (reload() == 0)
        w.next_reload_us = clock_mono_us() + RELOAD_US;
    atomic_store(&w.stop, false);
    errno = pthread_create(&w.thread, NULL, watch_main, NULL);
    if (errno != 0) {
        watch_free();
        return -1;
    }
    pthread_setname_np(w.thread, "qw-cancel"); /* for top -H, ps -L, gdb */
    w.running = true;
    return 0;
}

void cancel_watch_stop(void)
{
    if (!w.running)
        return;
    atomic_store(&w.stop, true);
    pthread_join(w.thread, NULL);
    w.running = false;
    watch_free();
    cancel_forget_all();
}
