/* The consumer takes up to the free capacity in one round trip, from the first non-empty queue
 * in priority order: at-least-once, a Lua script moves the tasks into the in-flight hash (and
 * waiter connections blocked in BLMOVE q q RIGHT RIGHT say when an empty queue gets one);
 * at-most-once, one BLMPOP pops them. Behind each waiter's BLMOVE a one-task fetch is pipelined,
 * which Redis runs the moment the BLMOVE returns, so that a task pushed to an idle worker starts
 * after one round trip, not two. The ids of a fetch whose reply never arrived are kept and put
 * back by a script (nothing waits for a restart). The thread waits in poll() on its Redis sockets
 * and on an eventfd rung on stop, reload and pause, so that none waits for a block timeout, and a
 * task Redis has already handed out is never thrown away. */
#include "consumer.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "capacity.h"
#include "clock.h"
#include "health.h"
#include "log.h"
#include "redis.h"
#include "reply.h"
#include "scripts.h"
#include "task.h"
#include "taskq.h"
#include "wire.h"

/* How long one BLMPOP blocks in Redis: each expiry costs one round trip and proves the connection
 * alive. */
#define BLOCK_SECONDS 5
/* How long a pause waits for the consumer to take back its armed fetches. */
#define PAUSE_WAIT_MS 10000
/* After Redis refused a fetch: the first wait, doubling up to the last. */
#define REFUSED_MIN_MS 50
#define REFUSED_MAX_MS 1000
/* A waiter whose queue cannot be waited on (wrong type, not allowed, Redis refusing) tries again
 * after this long. */
#define WAITER_HOLD_MS 1000

enum wait_result { WAIT_REPLY, WAIT_STOPPED, WAIT_FAILED };

static void pause_unless_stopped(struct consumer *cs, int ms);
typedef char task_id[TASK_ID_LEN + 1];
struct consumer;
static void fetch_refused(struct consumer *cs, const redisReply *reply, enum rclass cls,
                          const task_id *ids, int n);
static void fetch_taken(struct consumer *cs);

struct waiter {
    struct rconn rc;
    int q;                /* its queue's index */
    int64_t hold_until_us; /* not armed before (its queue cannot be waited on now) */
    bool outstanding; /* the BLMOVE is sent and its reply not read */
    bool fetching;    /* a one-task fetch is pipelined behind it, its reply not read */
    int64_t sent_us;
    const char *argv[6];
    const char **fetch_argv; /* EVALSHA sha numkeys in-flight queues... 1 id */
    char id[TASK_ID_LEN + 1];
};

struct consumer {
    const struct config *conf;
    struct capacity *cap;
    struct taskq *out;
    struct rconn rc;
    int wakefd; /* written on stop, reload and pause: ends any wait */
    atomic_bool stopping;
    atomic_bool disarm; /* paused: take back the fetches pipelined behind the waiters */
    pthread_mutex_t disarm_mu;
    pthread_cond_t disarmed;
    _Atomic(const struct config *) next_conf; /* a reload waiting to be applied */
    _Atomic bool ready;
    pthread_t thread;

    /* at-least-once: one waiter connection per queue, blocked in BLMOVE q q RIGHT RIGHT (which
     * leaves the list as it is) so that a push to any queue wakes us; the fetch script then
     * moves the tasks into our in-flight hash. */
    struct waiter *waiters;
    const char **fetch_keys; /* in-flight hash, queues */
    const char **fetch_args; /* n, ids */
    task_id *ids;
    char sha[41];
    char fetch_numkeys[16];
    int fetch_argc;
    int64_t pause_until_us;

    /* Conditions said once each: Redis refusing fetches; each queue that cannot be read. */
    struct rcond refused;
    int refused_backoff_ms;
    struct rcond *queue_bad;

    char *dead_key; /* where the rescue sends what cannot go back to its queue */

    /* Ids of fetches whose reply was lost: what they moved is put back by SCRIPT_RESCUE. */
    task_id *orphans;
    size_t norphans, orphans_cap;

    /* at-most-once: BLMPOP <block> <numkeys> <queues...> RIGHT COUNT <n> */
    int argc;
    const char **argv;
    char block[16];
    char numkeys[16];
    char count[16];
};

static int init_reliable(struct consumer *cs)
{
    const struct config *conf = cs->conf;
    char *inflight;

    cs->waiters = calloc((size_t)conf->nqueues, sizeof(*cs->waiters));
    cs->fetch_keys = calloc((size_t)conf->nqueues + 1, sizeof(*cs->fetch_keys));
    cs->fetch_args = calloc((size_t)conf->fetch_batch + 1, sizeof(*cs->fetch_args));
    cs->ids = calloc((size_t)conf->fetch_batch, sizeof(*cs->ids));
    if (cs->waiters == NULL || cs->fetch_keys == NULL || cs->fetch_args == NULL ||
        cs->ids == NULL || asprintf(&inflight, "%s:inflight:%s", conf->prefix, conf->worker_id) < 0)
        return -1;
    cs->fetch_keys[0] = inflight;
    cs->fetch_args[0] = cs->count;
    for (int i = 0; i < conf->nqueues; i++)
        cs->fetch_keys[1 + i] = conf->queues[i].name;
    snprintf(cs->fetch_numkeys, sizeof(cs->fetch_numkeys), "%d", conf->nqueues + 1);
    cs->fetch_argc = conf->nqueues + 6;
    for (int i = 0; i < conf->nqueues; i++) {
        struct waiter *w = &cs->waiters[i];
        rconn_init(&w->rc, &conf->redis, "waiter");
        w->q = i;
        w->argv[0] = "BLMOVE";
        w->argv[1] = conf->queues[i].name;
        w->argv[2] = conf->queues[i].name;
        w->argv[3] = "RIGHT";
        w->argv[4] = "RIGHT";
        w->argv[5] = cs->block;
        w->fetch_argv = calloc((size_t)cs->fetch_argc, sizeof(*w->fetch_argv));
        if (w->fetch_argv == NULL)
            return -1;
        w->fetch_argv[0] = "EVALSHA";
        w->fetch_argv[1] = cs->sha;
        w->fetch_argv[2] = cs->fetch_numkeys;
        for (int k = 0; k <= conf->nqueues; k++)
            w->fetch_argv[3 + k] = cs->fetch_keys[k];
        w->fetch_argv[4 + conf->nqueues] = "1";
        w->fetch_argv[5 + conf->nqueues] = w->id;
    }
    for (int i = 0; i < conf->fetch_batch; i++)
        cs->fetch_args[1 + i] = cs->ids[i];
    return 0;
}

/* Everything built from the config: the fetch command and, for at-least-once, the waiters. */
static int configure(struct consumer *cs, const struct config *conf)
{
    int k = 0;

    cs->conf = conf;
    cs->argc = conf->nqueues + 6;
    cs->argv = calloc((size_t)cs->argc, sizeof(*cs->argv));
    cs->queue_bad = calloc((size_t)conf->nqueues, sizeof(*cs->queue_bad));
    if (cs->argv == NULL || cs->queue_bad == NULL ||
        (conf->delivery == DELIVERY_AT_LEAST_ONCE && init_reliable(cs) < 0))
        return -1;
    snprintf(cs->block, sizeof(cs->block), "%d", BLOCK_SECONDS);
    snprintf(cs->numkeys, sizeof(cs->numkeys), "%d", conf->nqueues);
    cs->argv[k++] = "BLMPOP";
    cs->argv[k++] = cs->block;
    cs->argv[k++] = cs->numkeys;
    for (int i = 0; i < conf->nqueues; i++)
        cs->argv[k++] = conf->queues[i].name;
    cs->argv[k++] = "RIGHT";
    cs->argv[k++] = "COUNT";
    cs->argv[k++] = cs->count;
    return 0;
}

static void orphan(struct consumer *cs, const char *id)
{
    if (cs->norphans == cs->orphans_cap) {
        size_t cap = cs->orphans_cap ? cs->orphans_cap * 2 : 16;
        task_id *grown = realloc(cs->orphans, cap * sizeof(*grown));
        if (grown == NULL) {
            log_err("consumer: out of memory: task %s may stay in flight until qworker restarts",
                    id);
            return;
        }
        cs->orphans = grown;
        cs->orphans_cap = cap;
    }
    memcpy(cs->orphans[cs->norphans++], id, TASK_ID_LEN + 1);
}

/* The waiter's connection is gone or given up, and with it the reply of any fetch behind its
 * BLMOVE: that fetch may have moved a task, so its id is kept for the rescue. */
static void waiter_drop(struct consumer *cs, struct waiter *w)
{
    if (w->fetching) {
        orphan(cs, w->id);
        capacity_release(cs->cap, 1);
    }
    w->fetching = false;
    w->outstanding = false;
}

static void waiter_lost(struct consumer *cs, struct waiter *w, const char *why)
{
    waiter_drop(cs, w);
    rconn_lost(&w->rc, why);
}

static void waiters_close(struct consumer *cs)
{
    if (cs->waiters == NULL)
        return;
    for (int i = 0; i < cs->conf->nqueues; i++) {
        waiter_drop(cs, &cs->waiters[i]);
        rconn_close(&cs->waiters[i].rc);
    }
}

static void unconfigure(struct consumer *cs)
{
    waiters_close(cs);
    if (cs->waiters != NULL)
        for (int i = 0; i < cs->conf->nqueues; i++)
            free(cs->waiters[i].fetch_argv);
    free(cs->argv);
    free(cs->queue_bad);
    cs->queue_bad = NULL;
    if (cs->fetch_keys != NULL)
        free((char *)cs->fetch_keys[0]);
    free(cs->fetch_keys);
    free(cs->fetch_args);
    free(cs->ids);
    free(cs->waiters);
    cs->argv = NULL;
    cs->fetch_keys = NULL;
    cs->fetch_args = NULL;
    cs->ids = NULL;
    cs->waiters = NULL;
}

struct consumer *consumer_new(const struct config *conf, struct capacity *cap, struct taskq *out)
{
    struct consumer *cs = calloc(1, sizeof(*cs));

    if (cs == NULL)
        return NULL;
    cs->cap = cap;
    cs->out = out;
    cs->conf = conf;
    cs->refused_backoff_ms = REFUSED_MIN_MS;
    rconn_init(&cs->rc, &conf->redis, "consumer");
    pthread_mutex_init(&cs->disarm_mu, NULL);
    cond_init_monotonic(&cs->disarmed);
    cs->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (cs->wakefd < 0 || asprintf(&cs->dead_key, "%s:dead", conf->prefix) < 0 ||
        configure(cs, conf) < 0) {
        consumer_free(cs);
        return NULL;
    }
    return cs;
}

void consumer_free(struct consumer *cs)
{
    if (cs == NULL)
        return;
    if (cs->wakefd >= 0)
        close(cs->wakefd);
    unconfigure(cs);
    free(cs->orphans);
    free(cs->dead_key);
    pthread_mutex_destroy(&cs->disarm_mu);
    pthread_cond_destroy(&cs->disarmed);
    free(cs);
}

/* A wake-up: true if it means stop or reload (the caller ends its wait); a stray one is
 * consumed and the wait goes on. */
static bool interrupted(struct consumer *cs)
{
    uint64_t n;

    if (atomic_load(&cs->stopping) || atomic_load(&cs->next_conf) != NULL ||
        atomic_load(&cs->disarm))
        return true;
    if (read(cs->wakefd, &n, sizeof(n)) < 0) {
        /* Nothing to consume. */
    }
    return false;
}

static int slice_ms(int64_t left_us)
{
    int64_t ms = (left_us + 999) / 1000;

    return ms < health_period_ms() ? (int)ms : health_period_ms();
}

/* Waits for the reply to the command in flight, for up to timeout_ms; returns early if a stop is
 * requested and watch_stop is set. */
static enum wait_result wait_reply(struct consumer *cs, int timeout_ms, bool watch_stop,
                                   redisReply **out)
{
    redisContext *c = cs->rc.c;
    int64_t deadline = clock_mono_us() + (int64_t)timeout_ms * 1000;

    for (;;) {
        struct pollfd fds[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = cs->wakefd, .events = POLLIN}};
        void *reply = NULL;
        int64_t left;
        int n;

        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
            rconn_lost(&cs->rc, c->errstr);
            return WAIT_FAILED;
        }
        if (reply != NULL) {
            *out = reply;
            return WAIT_REPLY;
        }
        left = deadline - clock_mono_us();
        if (left <= 0) {
            rconn_lost(&cs->rc, "no reply within the command timeout");
            return WAIT_FAILED;
        }
        n = poll(fds, watch_stop ? 2 : 1, slice_ms(left));
        health_beat(THREAD_CONSUMER);
        if (n < 0 && errno != EINTR) {
            rconn_lost(&cs->rc, strerror(errno));
            return WAIT_FAILED;
        }
        if (watch_stop && (fds[1].revents & POLLIN) && interrupted(cs))
            return WAIT_STOPPED;
        if (fds[0].revents != 0 && redisBufferRead(c) != REDIS_OK) {
            rconn_lost(&cs->rc, c->errstr);
            return WAIT_FAILED;
        }
    }
}

/* Releases our own blocked BLMPOP from a second connection; Redis then answers it as if its
 * block had expired, or with what it had already taken. */
static void unblock(struct consumer *cs)
{
    char err[256], id[32];
    const char *argv[] = {"CLIENT", "UNBLOCK", id};
    redisContext *c = redis_connect(cs->rc.conf, "qworker-stop", err, sizeof(err));
    redisReply *reply;

    if (c == NULL) {
        log_warn("consumer: cannot release the blocked fetch (%s); closing its connection", err);
        return;
    }
    snprintf(id, sizeof(id), "%lld", cs->rc.client_id);
    reply = redisCommandArgv(c, 3, argv, NULL);
    if (reply != NULL)
        freeReplyObject(reply);
    redisFree(c);
}

/* Turns BLMPOP's [queue, [payload...]] into tasks for the loop. Returns how many it handed over. */
static int hand_over(struct consumer *cs, const redisReply *reply)
{
    const struct queue_conf *queue;
    const redisReply *items;
    struct taskq_chain chain = {0};
    int n;

    if (reply->type == REDIS_REPLY_NIL)
        return 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        log_err("consumer: unexpected reply to BLMPOP (type %d)", reply->type);
        return 0;
    }
    queue = config_queue(cs->conf, reply->element[0]->str, reply->element[0]->len);
    if (queue == NULL) {
        log_err("consumer: BLMPOP answered for a queue not configured: %s", reply->element[0]->str);
        return 0;
    }
    items = reply->element[1];
    for (size_t i = 0; i < items->elements; i++) {
        const redisReply *it = items->element[i];
        struct task *t = task_new(queue, it->str, it->len);
        if (t == NULL) {
            char shown[96];
            log_err("consumer: out of memory: task from queue %s lost: %s", queue->name,
                    payload_excerpt(it->str, it->len, 64, shown, sizeof(shown)));
            continue;
        }
        taskq_chain_add(&chain, t);
    }
    n = (int)chain.n;
    taskq_push_batch(cs->out, &chain);
    return n;
}

/* One fetch of up to n tasks. Returns how many were handed over. */
static int fetch(struct consumer *cs, int n)
{
    redisContext *c = cs->rc.c;
    int timeout = BLOCK_SECONDS * 1000 + cs->conf->redis.command_timeout_ms;
    redisReply *reply = NULL;
    enum wait_result r;
    int done = 0, got;

    snprintf(cs->count, sizeof(cs->count), "%d", n);
    if (redisAppendCommandArgv(c, cs->argc, cs->argv, NULL) != REDIS_OK) {
        rconn_lost(&cs->rc, c->errstr);
        return 0;
    }
    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            rconn_lost(&cs->rc, c->errstr);
            return 0;
        }
    }
    r = wait_reply(cs, timeout, true, &reply);
    if (r == WAIT_STOPPED) {
        unblock(cs);
        r = wait_reply(cs, cs->conf->redis.command_timeout_ms, false, &reply);
    }
    if (r != WAIT_REPLY)
        return 0;
    if (reply_means_reconnect(reply)) {
        char why[256];
        snprintf(why, sizeof(why), "BLMPOP: %s", reply->str);
        freeReplyObject(reply);
        rconn_lost(&cs->rc, why);
        return 0;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        fetch_refused(cs, reply, reply_class(reply, 0), NULL, 0);
        freeReplyObject(reply);
        return 0;
    }
    fetch_taken(cs);
    got = hand_over(cs, reply);
    freeReplyObject(reply);
    return got;
}

/* A queue that cannot be read (not a list, not allowed): said once, skipped (never touched)
 * while it lasts, the others served. */
static void queue_bad(struct consumer *cs, int q, const char *why)
{
    rcond_begin(&cs->queue_bad[q], LOG_ERR, why,
                "queue %s is skipped: it cannot be read as a list; nothing in it is touched and "
                "the other queues are served",
                cs->conf->queues[q].name);
}

static void queue_good(struct consumer *cs, int q)
{
    rcond_end(&cs->queue_bad[q], "queue %s is served again", cs->conf->queues[q].name);
}

/* Redis did not run a fetch (OOM, BUSY, a key of the wrong type...): said once, tried again
 * after a growing wait. A fetch refused half-way could have moved tasks (Lua does not roll
 * back): its ids go to the rescue, which puts back whatever it finds. */
static void fetch_refused(struct consumer *cs, const redisReply *reply, enum rclass cls,
                          const task_id *ids, int n)
{
    if (cls == RC_DENIED || cls == RC_FAILED)
        for (int i = 0; i < n; i++)
            orphan(cs, ids[i]);
    rcond_begin(&cs->refused, cls == RC_RETRY ? LOG_WARNING : LOG_ERR, reply_text(reply),
                "redis does not hand out tasks (%s); trying again", rclass_name(cls));
    cs->pause_until_us = clock_mono_us() + (int64_t)cs->refused_backoff_ms * 1000;
    cs->refused_backoff_ms = cs->refused_backoff_ms * 2 > REFUSED_MAX_MS
                                 ? REFUSED_MAX_MS
                                 : cs->refused_backoff_ms * 2;
}

static void fetch_taken(struct consumer *cs)
{
    rcond_end(&cs->refused, "redis hands out tasks again");
    cs->refused_backoff_ms = REFUSED_MIN_MS;
}

/* Hands over the tasks of a fetch script's reply, checked whole first (a reply that makes no
 * sense is not trusted: what the fetch may have moved goes to the rescue). Returns how many. */
static int take_fetched(struct consumer *cs, const redisReply *reply, const task_id *ids, int n)
{
    struct taskq_chain chain = {0};
    struct fetch_reply f;
    const char *why;
    int got;

    if (wire_fetch_reply(reply, cs->conf->nqueues, (size_t)n, &f, &why) < 0) {
        log_err("consumer: a fetch reply that makes no sense (%s): what it took goes back", why);
        for (int i = 0; i < n; i++)
            orphan(cs, ids[i]);
        return 0;
    }
    fetch_taken(cs);
    for (int i = 0; i < f.nbad && i < (int)(sizeof(f.bad) / sizeof(f.bad[0])); i++)
        queue_bad(cs, f.bad[i].queue, f.bad[i].error);
    for (int q = 0; q < f.examined; q++) {
        bool bad = false;
        for (int i = 0; i < f.nbad && i < (int)(sizeof(f.bad) / sizeof(f.bad[0])); i++)
            bad = bad || f.bad[i].queue == q;
        if (!bad)
            queue_good(cs, q);
    }
    for (size_t i = 0; i < f.nitems; i++) {
        struct fetch_item it = wire_fetch_item(&f, i);
        struct task *t = task_new_with_id(&cs->conf->queues[it.queue], it.payload, it.len, ids[i]);
        if (t == NULL) {
            /* Still in the in-flight hash: the rescue puts it back. */
            log_err("consumer: out of memory: task %s of queue %s goes back to its queue", ids[i],
                    cs->conf->queues[it.queue].name);
            orphan(cs, ids[i]);
            continue;
        }
        taskq_chain_add(&chain, t);
    }
    got = (int)chain.n;
    taskq_push_batch(cs->out, &chain);
    return got;
}

/* at-least-once: moves up to n tasks into the in-flight hash in one script call. */
static int fetch_reliable(struct consumer *cs, int n)
{
    redisReply *reply;
    enum rclass cls;
    int got;

    snprintf(cs->count, sizeof(cs->count), "%d", n);
    for (int i = 0; i < n; i++)
        task_make_id(cs->ids[i]);
    reply = script_run(&cs->rc, SCRIPT_FETCH, 1 + cs->conf->nqueues, cs->fetch_keys, NULL, 1 + n,
                       cs->fetch_args, NULL);
    if (reply == NULL) {
        for (int i = 0; i < n; i++)
            orphan(cs, cs->ids[i]);
        return -1;
    }
    cls = reply_class(reply, REDIS_REPLY_ARRAY);
    if (cls == RC_OK) {
        got = take_fetched(cs, reply, cs->ids, n);
    } else {
        fetch_refused(cs, reply, cls, cs->ids, n);
        got = -1;
    }
    freeReplyObject(reply);
    return got;
}

/* The reply of the one-task fetch pipelined behind a BLMOVE. A refused script (NOSCRIPT after a
 * Redis restart) moved nothing: the main fetch, which reloads it, takes the task instead. */
static void waiter_fetched(struct consumer *cs, struct waiter *w, const redisReply *r)
{
    enum rclass cls = reply_class(r, REDIS_REPLY_ARRAY);
    int got = 0;

    w->fetching = false;
    if (cls == RC_OK)
        got = take_fetched(cs, r, &w->id, 1);
    else if (cls != RC_RECONNECT && !(r->type == REDIS_REPLY_ERROR &&
                                      strncmp(r->str, "NOSCRIPT", 8) == 0))
        fetch_refused(cs, r, cls, &w->id, 1);
    if (got == 0)
        capacity_release(cs->cap, 1);
}

/* The BLMOVE a waiter blocks in was refused: its queue is not a list or may not be read, or
 * Redis refuses it (BLMOVE is refused under maxmemory): the waiter holds a while, said once,
 * without reconnecting. */
static void waiter_refused(struct consumer *cs, struct waiter *w, const redisReply *r,
                           enum rclass cls)
{
    w->hold_until_us = clock_mono_us() + WAITER_HOLD_MS * 1000LL;
    if (cls == RC_WRONG_KEY || cls == RC_DENIED)
        queue_bad(cs, w->q, r->str);
    else
        rcond_begin(&cs->refused, cls == RC_RETRY ? LOG_WARNING : LOG_ERR, reply_text(r),
                    "redis does not hand out tasks (%s); trying again", rclass_name(cls));
}

/* Reads the waiter's replies: the BLMOVE's, then that of the fetch behind it. Redis runs the
 * fetch the moment the BLMOVE returns, so its reply (and the rest of a long one) is waited for
 * here, not left for a later wake-up that a deep queue would put off. */
static void waiter_read(struct consumer *cs, struct waiter *w)
{
    int64_t deadline = clock_mono_us() + cs->conf->redis.command_timeout_ms * 1000LL;
    bool readable = true;

    for (;;) {
        redisContext *c = w->rc.c;
        void *reply = NULL;
        struct pollfd pfd;
        int64_t left;
        int n;

        if (readable && redisBufferRead(c) != REDIS_OK) {
            waiter_lost(cs, w, c->errstr);
            return;
        }
        while ((n = redisGetReplyFromReader(c, &reply)) == REDIS_OK && reply != NULL) {
            redisReply *r = reply;
            reply = NULL;
            if (w->outstanding) {
                enum rclass cls = reply_class(r, 0);
                w->outstanding = false;
                if (cls == RC_RECONNECT) {
                    char why[256];
                    snprintf(why, sizeof(why), "BLMOVE: %s", r->str);
                    freeReplyObject(r);
                    waiter_lost(cs, w, why);
                    return;
                }
                if (cls != RC_OK)
                    waiter_refused(cs, w, r, cls); /* the fetch behind it still ran */
                else if (r->type != REDIS_REPLY_NIL)
                    queue_good(cs, w->q);
            } else if (w->fetching) {
                waiter_fetched(cs, w, r);
            }
            freeReplyObject(r);
        }
        if (n != REDIS_OK) {
            waiter_lost(cs, w, c->errstr);
            return;
        }
        if (!w->outstanding && !w->fetching)
            return;
        if (w->outstanding && c->reader->pos == c->reader->len)
            return; /* the BLMOVE still blocks */
        left = deadline - clock_mono_us();
        if (left <= 0) {
            waiter_lost(cs, w, "no whole reply within the command timeout");
            return;
        }
        pfd = (struct pollfd){.fd = c->fd, .events = POLLIN};
        n = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (n < 0 && errno != EINTR) {
            waiter_lost(cs, w, strerror(errno));
            return;
        }
        readable = n > 0;
    }
}

/* Sends the waiter's BLMOVE and, if a slot is free and the script known, a one-task fetch
 * behind it. */
static int waiter_arm(struct consumer *cs, struct waiter *w, int64_t now)
{
    redisContext *c = w->rc.c;
    int done = 0;

    if (redisAppendCommandArgv(c, 6, w->argv, NULL) != REDIS_OK)
        return -1;
    if (script_sha(SCRIPT_FETCH, cs->sha) && capacity_reserve(cs->cap, 1, 0) == 1) {
        task_make_id(w->id);
        if (redisAppendCommandArgv(c, cs->fetch_argc, w->fetch_argv, NULL) != REDIS_OK) {
            capacity_release(cs->cap, 1);
            return -1;
        }
        w->fetching = true;
    }
    w->outstanding = true;
    w->sent_us = now;
    while (done == 0)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* A waiter that did not wake us may still hold a fetch: if its queue got a task since, Redis has
 * moved it already, and it must start now, not when all queues are next empty. */
static void waiters_poll(struct consumer *cs)
{
    int nq = cs->conf->nqueues, k = 0;
    struct pollfd fds[nq];
    int which[nq];

    for (int i = 0; i < nq; i++)
        if (cs->waiters[i].fetching && cs->waiters[i].rc.c != NULL) {
            fds[k] = (struct pollfd){.fd = cs->waiters[i].rc.c->fd, .events = POLLIN};
            which[k++] = i;
        }
    if (k == 0 || poll(fds, (nfds_t)k, 0) <= 0)
        return;
    for (int j = 0; j < k; j++)
        if (fds[j].revents != 0)
            waiter_read(cs, &cs->waiters[which[j]]);
}

/* at-least-once, all queues empty: blocks until a push to any of them, a stop, or a timeout. */
static void wait_for_work(struct consumer *cs)
{
    int nq = cs->conf->nqueues;
    int64_t limit_us = (BLOCK_SECONDS * 1000LL + cs->conf->redis.command_timeout_ms) * 1000;
    int64_t wait_us = limit_us;
    struct pollfd fds[nq + 1];
    int64_t now = clock_mono_us();

    for (int i = 0; i < nq; i++) {
        struct waiter *w = &cs->waiters[i];

        if (w->outstanding && now - w->sent_us > limit_us)
            waiter_lost(cs, w, "no reply to BLMOVE within its block time");
        if (!w->outstanding && w->hold_until_us > now) {
            /* Not waited on now: come back when the hold ends. */
            if (w->hold_until_us - now < wait_us)
                wait_us = w->hold_until_us - now;
            fds[i] = (struct pollfd){.fd = -1};
            continue;
        }
        if (rconn_try(&w->rc) < 0) {
            pause_unless_stopped(cs, rconn_wait_ms(&w->rc));
            return;
        }
        if (!w->outstanding && waiter_arm(cs, w, now) < 0) {
            waiter_lost(cs, w, w->rc.c->errstr);
            return;
        }
        fds[i] = (struct pollfd){.fd = w->rc.c->fd, .events = POLLIN};
    }
    fds[nq] = (struct pollfd){.fd = cs->wakefd, .events = POLLIN};
    for (;;) {
        int64_t left = now + wait_us - clock_mono_us();
        int n;

        if (left <= 0)
            return;
        n = poll(fds, (nfds_t)nq + 1, slice_ms(left));
        health_beat(THREAD_CONSUMER);
        if (n < 0 && errno != EINTR)
            return;
        if (n <= 0)
            continue;
        if ((fds[nq].revents & POLLIN) && interrupted(cs))
            return;
        for (int i = 0; i < nq; i++)
            if (fds[i].fd >= 0 && fds[i].revents != 0 && cs->waiters[i].rc.c != NULL)
                waiter_read(cs, &cs->waiters[i]);
        return;
    }
}

/* Sleeps up to ms unless a stop is requested. */
static void pause_unless_stopped(struct consumer *cs, int ms)
{
    struct pollfd pfd = {.fd = cs->wakefd, .events = POLLIN};

    if (ms > 0 && poll(&pfd, 1, ms < health_period_ms() ? ms : health_period_ms()) > 0)
        interrupted(cs);
}

/* A reload: the queues, their order, fetch_batch. Tasks already taken are not touched. */
static void apply_reload(struct consumer *cs)
{
    const struct config *next = atomic_exchange(&cs->next_conf, NULL);

    if (next == NULL)
        return;
    interrupted(cs); /* consume the wake-up that announced it */
    unconfigure(cs);
    if (configure(cs, next) < 0) {
        log_err("consumer: out of memory applying the new configuration; retrying in 1 s");
        atomic_store(&cs->next_conf, next);
        cs->pause_until_us = clock_mono_us() + 1000000;
    }
}

/* Puts back at the front of their queues what fetches whose reply was lost had moved into the
 * in-flight hash. -1 if it has to be tried again. */
static int rescue(struct consumer *cs)
{
    const char **args = malloc(cs->norphans * sizeof(*args));
    redisReply *reply;
    int rc = -1;

    if (args == NULL) {
        cs->pause_until_us = clock_mono_us() + 1000000;
        return -1;
    }
    for (size_t i = 0; i < cs->norphans; i++)
        args[i] = cs->orphans[i];
    {
        const char *keys[] = {cs->fetch_keys[0], cs->dead_key};
        reply = script_run(&cs->rc, SCRIPT_RESCUE, 2, keys, NULL, (int)cs->norphans, args, NULL);
    }
    free(args);
    if (reply == NULL)
        return -1;
    if (reply_class(reply, REDIS_REPLY_INTEGER) == RC_OK) {
        fetch_taken(cs);
        if (reply->integer > 0)
            log_notice("consumer: %lld task(s) whose fetch reply was lost put back at the front of "
                       "their queue",
                       reply->integer);
        cs->norphans = 0;
        rc = 0;
    } else {
        fetch_refused(cs, reply, reply_class(reply, REDIS_REPLY_INTEGER), NULL, 0);
    }
    freeReplyObject(reply);
    return rc;
}

/* Closes the waiters that hold a fetch (what it may have taken is rescued), which frees their
 * slots. Returns whether there was one. */
static bool take_back_armed(struct consumer *cs)
{
    bool any = false;

    for (int i = 0; cs->waiters != NULL && i < cs->conf->nqueues; i++) {
        struct waiter *w = &cs->waiters[i];
        if (w->fetching) {
            waiter_drop(cs, w);
            rconn_close(&w->rc);
            any = true;
        }
    }
    return any;
}

/* A pause: a fetch armed behind a waiter would still take a task when one is pushed. */
static void disarm(struct consumer *cs)
{
    if (!atomic_load(&cs->disarm))
        return;
    take_back_armed(cs);
    pthread_mutex_lock(&cs->disarm_mu);
    atomic_store(&cs->disarm, false);
    pthread_cond_broadcast(&cs->disarmed);
    pthread_mutex_unlock(&cs->disarm_mu);
    interrupted(cs); /* consume the wake-up that announced it */
}

/* Free slots for a fetch. When none is free, those held by fetches armed behind waiters are taken
 * back first: a task on a queue whose waiter had no slot left would otherwise wait for a push to
 * another queue. */
static int reserve(struct consumer *cs, bool reliable)
{
    int n = capacity_reserve(cs->cap, cs->conf->fetch_batch, 0);

    if (n < 0 && reliable && take_back_armed(cs))
        n = capacity_reserve(cs->cap, cs->conf->fetch_batch, 0);
    if (n < 0)
        n = capacity_reserve(cs->cap, cs->conf->fetch_batch, health_period_ms());
    return n;
}

static void *consumer_main(void *arg)
{
    struct consumer *cs = arg;

    while (!atomic_load(&cs->stopping)) {
        int n, got;
        int64_t paused = cs->pause_until_us - clock_mono_us();
        bool reliable = cs->conf->delivery == DELIVERY_AT_LEAST_ONCE;

        health_beat(THREAD_CONSUMER);
        apply_reload(cs);
        disarm(cs);
        if (paused > 0) {
            pause_unless_stopped(cs, (int)(paused / 1000) + 1);
            continue;
        }
        if (rconn_try(&cs->rc) < 0) {
            pause_unless_stopped(cs, rconn_wait_ms(&cs->rc));
            continue;
        }
        if (!atomic_load(&cs->ready)) {
            atomic_store(&cs->ready, true);
            log_notice("ready: redis answered; taking tasks");
            /* Wakes the main thread (it waits for signals) to tell systemd at once. */
            kill(getpid(), SIGUSR2);
        }
        if (redis_refusing()) {
            /* Redis cannot record what finishes: take nothing more until it can. */
            if (reliable)
                take_back_armed(cs);
            pause_unless_stopped(cs, 100);
            continue;
        }
        if (reliable && cs->norphans > 0 && rescue(cs) < 0)
            continue;
        if (reliable)
            waiters_poll(cs);
        n = reserve(cs, reliable);
        if (n == 0)
            break;
        if (n < 0)
            continue; /* no free capacity yet */
        got = reliable ? fetch_reliable(cs, n) : fetch(cs, n);
        if (got < n)
            capacity_release(cs->cap, got < 0 ? n : n - got);
        if (reliable && got == 0 && !atomic_load(&cs->stopping))
            wait_for_work(cs);
    }
    waiters_close(cs);
    if (cs->norphans > 0 && cs->rc.c != NULL)
        rescue(cs);
    unconfigure(cs);
    rconn_close(&cs->rc);
    taskq_close(cs->out);
    return NULL;
}

int consumer_start(struct consumer *cs)
{
    if (pthread_create(&cs->thread, NULL, consumer_main, cs) != 0)
        return -1;
    pthread_setname_np(cs->thread, "qw-consumer"); /* for top -H, ps -L, gdb */
    return 0;
}

static void wake(struct consumer *cs)
{
    uint64_t one = 1;

    if (write(cs->wakefd, &one, sizeof(one)) < 0)
        log_err("consumer: cannot wake the consumer thread: %s", strerror(errno));
}

void consumer_stop(struct consumer *cs)
{
    atomic_store(&cs->stopping, true);
    capacity_stop(cs->cap);
    wake(cs);
}

void consumer_pause(struct consumer *cs)
{
    /* Bounded: the consumer may be in the middle of a command (at most its timeout). */
    struct timespec deadline = clock_mono_deadline(PAUSE_WAIT_MS);

    pthread_mutex_lock(&cs->disarm_mu);
    atomic_store(&cs->disarm, true);
    wake(cs);
    while (atomic_load(&cs->disarm) && !atomic_load(&cs->stopping))
        if (pthread_cond_timedwait(&cs->disarmed, &cs->disarm_mu, &deadline) == ETIMEDOUT) {
            log_warn("consumer: still busy; a task pushed now may yet start despite the pause");
            break;
        }
    pthread_mutex_unlock(&cs->disarm_mu);
}

void consumer_reconfigure(struct consumer *cs, const struct config *conf)
{
    atomic_store(&cs->next_conf, conf);
    wake(cs);
}

bool consumer_ready(struct consumer *cs)
{
    return atomic_load(&cs->ready);
}

void consumer_join(struct consumer *cs)
{
    pthread_join(cs->thread, NULL);
}
