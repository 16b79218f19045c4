/* at-least-once: the fetch script (src/lua/fetch.lua) moves up to the free capacity from the
 * first non-empty queues, in priority order, into this worker's in-flight hash in one step, and
 * answers with the tasks it moved. When every queue is empty, one waiter connection per queue
 * blocks in BLMOVE q q RIGHT RIGHT (which leaves the list as it is), so that a push to any queue
 * wakes the consumer; behind each BLMOVE a one-task fetch is pipelined, which Redis runs the
 * moment the BLMOVE returns, so that a task pushed to an idle worker starts after one round trip,
 * not two. The ids of a fetch whose reply never arrived (or that Redis refused half-way) are
 * kept, and the rescue script puts back whatever they moved: nothing waits for a restart. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "capacity.h"
#include "clock.h"
#include "fetch.h"
#include "held.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "scripts.h"
#include "task.h"
#include "taskq.h"
#include "weights.h"
#include "wire.h"

/* A waiter whose queue cannot be waited on (wrong type, not allowed, Redis refusing) tries again
 * after this long. */
#define WAITER_HOLD_MS 1000

/* The largest BLMOVE reply a waiter reads (see waiter_reply_too_big). */
#define WAITER_MAX_REPLY (64 << 10)

typedef char task_id[TASK_ID_LEN + 1];

struct waiter {
    struct rconn rc;
    int q;                 /* its queue's index */
    int64_t hold_until_us; /* not armed before (its queue cannot be waited on now) */
    bool outstanding;      /* the BLMOVE is sent and its reply not read */
    bool fetching;         /* a one-task fetch is pipelined behind it, its reply not read */
    int64_t sent_us;
    const char *argv[6];
    const char **fetch_argv; /* EVALSHA sha numkeys FETCH_KEYS queues... 1 limits... id */
    task_id id;
};

/* The keys before the queues, and the arguments before the ids (src/lua/fetch.lua). */
#define FETCH_KEYS 5
#define FETCH_ARGS 5

struct script_fetch {
    struct fetch_ctx *ctx;
    char *inflight_key;
    char *dead_key; /* where the rescue sends what cannot go back to its queue */
    char *payloads_key; /* payloads over max_payload, kept whole, named by dead letters */
    char *stats_key;
    char *paused_key; /* queues no worker takes from (qworkerctl pause) */
    char block[16];

    /* Built from ctx->conf: */
    struct waiter *waiters; /* one per queue */
    int nwaiters;
    const char **fetch_keys; /* FETCH_KEYS keys, then the queues */
    const char **fetch_args; /* n, max_payload, max_bytes, worker, limits, then the ids */
    char *limits; /* the handlers' rate limits for the script (src/lua/rate_fn.lua); "": none */
    task_id *ids;
    char count[16];
    char max_payload[16];
    char max_bytes[16];
    char sha[41];
    char fetch_numkeys[16];
    int fetch_argc;
    /* queue_order = "weighted": the order of the queues in the next fetch's keys. */
    struct weights weights;
    int *order; /* NULL: strict, the configured order */

    /* Ids of fetches whose reply was lost: what they moved is put back by SCRIPT_RESCUE. Kept
     * across reloads. */
    task_id *orphans;
    size_t norphans, orphans_cap;

    struct rcond nonsense; /* fetch replies that make no sense: said once */
};

static void orphan(struct script_fetch *s, const char *id)
{
    if (s->norphans == s->orphans_cap) {
        size_t cap = s->orphans_cap ? s->orphans_cap * 2 : 16;
        task_id *grown = realloc(s->orphans, cap * sizeof(*grown));
        if (grown == NULL) {
            log_err("consumer: out of memory: task %s may stay in flight until qworker restarts",
                    id);
            return;
        }
        s->orphans = grown;
        s->orphans_cap = cap;
    }
    memcpy(s->orphans[s->norphans++], id, TASK_ID_LEN + 1);
}

/* The waiter's connection is gone or given up, and with it the reply of any fetch behind its
 * BLMOVE: that fetch may have moved a task, so its id is kept for the rescue. */
static void waiter_drop(struct script_fetch *s, struct waiter *w)
{
    if (w->fetching) {
        orphan(s, w->id);
        capacity_release(s->ctx->cap, 1);
    }
    w->fetching = false;
    w->outstanding = false;
}

static void waiter_lost(struct script_fetch *s, struct waiter *w, const char *why)
{
    waiter_drop(s, w);
    rconn_lost(&w->rc, why);
}

static void waiters_free(struct script_fetch *s)
{
    for (int i = 0; i < s->nwaiters; i++) {
        waiter_drop(s, &s->waiters[i]);
        rconn_close(&s->waiters[i].rc);
        free(s->waiters[i].fetch_argv);
    }
    free(s->waiters);
    free(s->fetch_keys);
    free(s->fetch_args);
    free(s->ids);
    free(s->order);
    free(s->limits);
    s->limits = NULL;
    weights_free(&s->weights);
    s->order = NULL;
    s->waiters = NULL;
    s->nwaiters = 0;
    s->fetch_keys = s->fetch_args = NULL;
    s->ids = NULL;
}

static int waiter_init(struct script_fetch *s, struct waiter *w, int q)
{
    const struct config *conf = s->ctx->conf;

    rconn_init(&w->rc, &conf->redis, "waiter");
    w->q = q;
    w->argv[0] = "BLMOVE";
    w->argv[1] = conf->queues[q].name;
    w->argv[2] = conf->queues[q].name;
    w->argv[3] = "RIGHT";
    w->argv[4] = "RIGHT";
    w->argv[5] = s->block;
    w->fetch_argv = calloc((size_t)s->fetch_argc, sizeof(*w->fetch_argv));
    if (w->fetch_argv == NULL)
        return -1;
    w->fetch_argv[0] = "EVALSHA";
    w->fetch_argv[1] = s->sha;
    w->fetch_argv[2] = s->fetch_numkeys;
    for (int k = 0; k < FETCH_KEYS + conf->nqueues; k++)
        w->fetch_argv[3 + k] = s->fetch_keys[k];
    w->fetch_argv[3 + FETCH_KEYS + conf->nqueues] = "1";
    for (int k = 1; k < FETCH_ARGS; k++)
        w->fetch_argv[3 + FETCH_KEYS + conf->nqueues + k] = s->fetch_args[k];
    w->fetch_argv[3 + FETCH_KEYS + conf->nqueues + FETCH_ARGS] = w->id;
    return 0;
}

/* The rate limits as src/lua/rate_fn.lua reads them: the bucket keys' prefix, each limited
 * handler's rate and burst, and each queue's default handler (a plain payload runs under it).
 * "" when no handler is limited: the script then does nothing more per task. NULL: out of
 * memory. */
static char *limits_spec(const struct config *conf)
{
    json_t *h = json_object(), *q = json_object(), *spec;
    char *key, *out;
    bool any = false;

    for (int i = 0; i < conf->nhandlers; i++) {
        const struct handler_conf *hc = &conf->handlers[i];
        if (hc->rate_limit > 0) {
            json_object_set_new(h, hc->name,
                                json_pack("[f, i]", hc->rate_limit, hc->rate_burst));
            any = true;
        }
    }
    if (!any) {
        json_decref(h);
        json_decref(q);
        return strdup("");
    }
    for (int i = 0; i < conf->nqueues; i++)
        json_object_set_new(q, conf->queues[i].name, json_string(conf->queues[i].handler->name));
    if (asprintf(&key, "%s:rate:", conf->prefix) < 0) {
        json_decref(h);
        json_decref(q);
        return NULL;
    }
    spec = json_pack("{s:s, s:o, s:o}", "k", key, "h", h, "q", q);
    out = spec != NULL ? json_dumps(spec, JSON_COMPACT) : NULL;
    json_decref(spec);
    free(key);
    return out;
}

/* The fetch command and the waiters, from ctx->conf; the waiters of the previous configuration
 * are closed (what their armed fetches may have moved is rescued). */
static int script_reconfigure(void *state)
{
    struct script_fetch *s = state;
    const struct config *conf = s->ctx->conf;

    /* Not read now: a reply names queues by their index in the configuration it was sent
     * under, and ctx->conf is the new one already. */
    waiters_free(s);
    s->waiters = calloc((size_t)conf->nqueues, sizeof(*s->waiters));
    s->fetch_keys = calloc((size_t)conf->nqueues + FETCH_KEYS, sizeof(*s->fetch_keys));
    s->fetch_args = calloc((size_t)conf->fetch_batch + FETCH_ARGS, sizeof(*s->fetch_args));
    s->ids = calloc((size_t)conf->fetch_batch, sizeof(*s->ids));
    s->limits = limits_spec(conf);
    if (s->waiters == NULL || s->fetch_keys == NULL || s->fetch_args == NULL || s->ids == NULL ||
        s->limits == NULL)
        goto fail;
    if (conf->queue_order == QUEUE_ORDER_WEIGHTED) {
        int weight[conf->nqueues];
        for (int i = 0; i < conf->nqueues; i++)
            weight[i] = conf->queues[i].weight;
        s->order = calloc((size_t)conf->nqueues, sizeof(*s->order));
        if (s->order == NULL || weights_init(&s->weights, weight, conf->nqueues) < 0)
            goto fail;
    }
    s->fetch_keys[0] = s->inflight_key;
    s->fetch_keys[1] = s->dead_key;
    s->fetch_keys[2] = s->payloads_key;
    s->fetch_keys[3] = s->stats_key;
    s->fetch_keys[4] = s->paused_key;
    for (int i = 0; i < conf->nqueues; i++)
        s->fetch_keys[FETCH_KEYS + i] = conf->queues[i].name;
    snprintf(s->max_payload, sizeof(s->max_payload), "%d", conf->max_payload);
    snprintf(s->max_bytes, sizeof(s->max_bytes), "%zu", fetch_max_bytes(s->ctx));
    s->fetch_args[0] = s->count;
    s->fetch_args[1] = s->max_payload;
    s->fetch_args[2] = s->max_bytes;
    s->fetch_args[3] = conf->worker_id;
    s->fetch_args[4] = s->limits;
    for (int i = 0; i < conf->fetch_batch; i++)
        s->fetch_args[FETCH_ARGS + i] = s->ids[i];
    snprintf(s->fetch_numkeys, sizeof(s->fetch_numkeys), "%d", conf->nqueues + FETCH_KEYS);
    /* EVALSHA sha numkeys, the keys, the arguments with one id */
    s->fetch_argc = 3 + FETCH_KEYS + conf->nqueues + FETCH_ARGS + 1;
    for (; s->nwaiters < conf->nqueues; s->nwaiters++)
        if (waiter_init(s, &s->waiters[s->nwaiters], s->nwaiters) < 0)
            goto fail;
    return 0;
fail:
    waiters_free(s); /* the waiter that failed holds nothing yet */
    return -1;
}

static void *script_create(struct fetch_ctx *ctx)
{
    struct script_fetch *s = calloc(1, sizeof(*s));
    const struct config *conf = ctx->conf;

    if (s == NULL)
        return NULL;
    s->ctx = ctx;
    snprintf(s->block, sizeof(s->block), "%d", FETCH_BLOCK_SECONDS);
    if (asprintf(&s->inflight_key, "%s:inflight:%s", conf->prefix, conf->worker_id) < 0) {
        s->inflight_key = NULL;
        goto fail;
    }
    if (asprintf(&s->dead_key, "%s:dead", conf->prefix) < 0) {
        s->dead_key = NULL;
        goto fail;
    }
    if (asprintf(&s->payloads_key, "%s:dead:payloads", conf->prefix) < 0) {
        s->payloads_key = NULL;
        goto fail;
    }
    if (asprintf(&s->stats_key, "%s:stats", conf->prefix) < 0) {
        s->stats_key = NULL;
        goto fail;
    }
    if (asprintf(&s->paused_key, "%s:paused", conf->prefix) < 0) {
        s->paused_key = NULL;
        goto fail;
    }
    if (script_reconfigure(s) < 0)
        goto fail;
    return s;
fail:
    free(s->inflight_key);
    free(s->dead_key);
    free(s->payloads_key);
    free(s->stats_key);
    free(s->paused_key);
    free(s);
    return NULL;
}

/* A fetch refused half-way could have moved tasks (Lua does not roll back): its ids go to the
 * rescue, which puts back whatever it finds. A refusal before anything moved (OOM, the script's
 * own type checks) owes nothing. */
static void refused(struct script_fetch *s, const redisReply *reply, enum rclass cls,
                    const task_id *ids, int n)
{
    for (int i = 0; i < n; i++) {
        if (cls == RC_DENIED || cls == RC_FAILED)
            orphan(s, ids[i]);
        else
            held_del(ids[i]); /* refused before anything moved */
    }
    fetch_refused(s->ctx, reply, cls);
}

/* A queue whose next task waits for its handler's rate limit: not waited on (nor fetched from,
 * when the waiter's fetch is all that would) until the token is due. */
static void throttled(struct script_fetch *s, int q, const char *ms)
{
    long wait = strtol(ms, NULL, 10);

    if (wait < 1 || wait > 60000)
        wait = wait < 1 ? 1 : 60000; /* a bucket cannot be further off than this; never spin */
    if (q < s->nwaiters)
        s->waiters[q].hold_until_us = clock_mono_us() + wait * 1000LL;
}

/* Hands over the tasks of a fetch script's reply, checked whole first. A reply that makes no
 * sense is not trusted with anything: what the fetch may have moved goes to the rescue, and -1
 * tells the caller to remake the connection it came on (whatever sent it is not Redis as we
 * know it, or the stream is out of step). Returns how many. */
static int take_fetched(struct script_fetch *s, const redisReply *reply, const task_id *ids,
                        int n, const int *order)
{
    struct fetch_ctx *ctx = s->ctx;
    struct taskq_chain chain = {0};
    struct fetch_reply f;
    const char *why;
    int got, nq = ctx->conf->nqueues;
    bool refused_q[nq > 0 ? nq : 1];

    if (wire_fetch_reply(reply, nq, (size_t)n, &f, &why) < 0) {
        rcond_begin(&s->nonsense, LOG_ERR, why,
                    "consumer: fetch replies that make no sense; nothing in them is used, what "
                    "the fetch may have taken goes back, and the connection is remade");
        for (int i = 0; i < n; i++)
            orphan(s, ids[i]);
        return -1;
    }
    rcond_end(&s->nonsense, "consumer: fetch replies make sense");
    fetch_taken(ctx);
    memset(refused_q, 0, sizeof(refused_q));
    for (int i = 0; i < f.nbad; i++) {
        struct fetch_bad b = wire_fetch_bad(&f, i);
        /* The reply counts queues in the order of the fetch's keys: the configured ones'. */
        b.queue = order ? order[b.queue] : b.queue;
        if (strncmp(b.error, "THROTTLED ", 10) == 0) {
            /* Its head waits for a token: its waiter would wake at once, for nothing. */
            throttled(s, b.queue, b.error + 10);
            continue;
        }
        refused_q[b.queue] = true;
        fetch_queue_bad(ctx, b.queue, b.error);
        /* Paused: its waiter would wake at once on a queue that is not empty, for nothing. */
        if (strncmp(b.error, "PAUSED", 6) == 0 && b.queue < s->nwaiters)
            s->waiters[b.queue].hold_until_us = clock_mono_us() + WAITER_HOLD_MS * 1000LL;
    }
    for (int k = 0; k < f.examined; k++) {
        int q = order ? order[k] : k;
        if (!refused_q[q])
            fetch_queue_good(ctx, q);
    }
    ctx->more = ctx->more || f.nlarge > 0; /* the queue may hold more: no idle wait */
    for (size_t i = 0; i < f.nlarge; i++) {
        struct fetch_large l = wire_fetch_large(&f, i);
        l.queue = order ? order[l.queue] : l.queue;
        log_warn("task %s from queue %s refused: too large (%lld bytes, max_payload is %d); "
                 "kept whole in %s, field %s, named by its dead letter in %s",
                 l.ref, ctx->conf->queues[l.queue].name, l.length, ctx->conf->max_payload,
                 s->payloads_key, l.ref, s->dead_key);
    }
    for (size_t i = 0; i < f.nitems; i++) {
        struct fetch_item it = wire_fetch_item(&f, i);
        it.queue = order ? order[it.queue] : it.queue;
        struct task *t = fetch_task(&ctx->conf->queues[it.queue], it.payload, it.len, ids[i]);
        if (t == NULL) {
            /* Still in the in-flight hash: the rescue puts it back. */
            log_err("consumer: out of memory: task %s of queue %s goes back to its queue", ids[i],
                    ctx->conf->queues[it.queue].name);
            orphan(s, ids[i]);
            continue;
        }
        taskq_chain_add(&chain, t);
    }
    for (size_t i = f.nitems; i < (size_t)n; i++)
        held_del(ids[i]); /* not used: nothing of this fetch is under that id */
    got = (int)chain.n;
    fetch_hand_over(ctx, &chain);
    return got;
}

static int script_fetch(void *state, int n)
{
    struct script_fetch *s = state;
    redisReply *reply;
    enum rclass cls;
    int64_t sent_us;
    int got;

    snprintf(s->count, sizeof(s->count), "%d", n);
    snprintf(s->max_bytes, sizeof(s->max_bytes), "%zu", fetch_max_bytes(s->ctx));
    for (int i = 0; i < n; i++) {
        task_make_id(s->ids[i]);
        held_add(s->ids[i]); /* before the fetch can put it in the hash (held.h) */
    }
    if (s->order != NULL) {
        weights_next(&s->weights, s->order);
        for (int k = 0; k < s->ctx->conf->nqueues; k++)
            s->fetch_keys[FETCH_KEYS + k] = s->ctx->conf->queues[s->order[k]].name;
    }
    sent_us = clock_mono_us();
    reply = script_run(s->ctx->rc, SCRIPT_FETCH, FETCH_KEYS + s->ctx->conf->nqueues,
                       s->fetch_keys, NULL, FETCH_ARGS + n, s->fetch_args, NULL);
    if (reply != NULL)
        metrics_fetch_us(clock_mono_us() - sent_us);
    if (reply == NULL) {
        for (int i = 0; i < n; i++)
            orphan(s, s->ids[i]);
        return -1;
    }
    cls = reply_class(reply, REDIS_REPLY_ARRAY);
    if (cls == RC_OK) {
        got = take_fetched(s, reply, s->ids, n, s->order);
        if (got < 0) {
            /* Not an outage: Redis answered. Remade at once, tried again after a backoff. */
            rconn_close(s->ctx->rc);
            fetch_backoff(s->ctx);
            got = 0;
        }
    } else {
        refused(s, reply, cls, s->ids, n);
        got = -1;
    }
    freeReplyObject(reply);
    return got;
}

/* The reply of the one-task fetch pipelined behind a BLMOVE. A refused script (NOSCRIPT after a
 * Redis restart) moved nothing: the main fetch, which reloads it, takes the task instead.
 * false: the reply made no sense, and the connection is to be remade. */
static bool waiter_fetched(struct script_fetch *s, struct waiter *w, const redisReply *r)
{
    enum rclass cls = reply_class(r, REDIS_REPLY_ARRAY);
    bool sense = true;
    int got = 0;

    w->fetching = false;
    if (cls == RC_OK) {
        got = take_fetched(s, r, &w->id, 1, NULL);
        sense = got >= 0;
        got = got < 0 ? 0 : got;
    } else if (cls != RC_RECONNECT &&
               !(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)) {
        refused(s, r, cls, &w->id, 1);
    } else {
        held_del(w->id); /* refused before anything moved */
    }
    if (got == 0)
        capacity_release(s->ctx->cap, 1);
    return sense;
}

/* The BLMOVE a waiter blocks in was refused: its queue is not a list or may not be read, or
 * Redis refuses it (BLMOVE is refused under maxmemory): the waiter holds a while, said once,
 * without reconnecting. */
static void waiter_refused(struct script_fetch *s, struct waiter *w, const redisReply *r,
                           enum rclass cls)
{
    w->hold_until_us = clock_mono_us() + WAITER_HOLD_MS * 1000LL;
    if (cls == RC_WRONG_KEY || cls == RC_DENIED)
        fetch_queue_bad(s->ctx, w->q, r->str);
    else
        fetch_refused(s->ctx, r, cls);
}

/* Whether the BLMOVE reply arriving announces a string over WAITER_MAX_REPLY. BLMOVE q q hands
 * back the element it rotated, and the wake-up is all a waiter wants of it: a payload of 100
 * MB at the head of the queue is not read into the worker for that (hiredis would buffer it
 * whole before saying anything). */
static bool waiter_reply_too_big(const redisContext *c)
{
    const char *p = c->reader->buf + c->reader->pos, *end = c->reader->buf + c->reader->len;
    long long n = 0;

    if (p >= end || *p != '$')
        return false;
    for (p++; p < end && *p >= '0' && *p <= '9'; p++)
        if ((n = n * 10 + (*p - '0')) > WAITER_MAX_REPLY)
            return true;
    return false;
}

/* Reads the waiter's replies: the BLMOVE's, then that of the fetch behind it. Redis runs the
 * fetch the moment the BLMOVE returns, so its reply (and the rest of a long one) is waited for
 * here, not left for a later wake-up that a deep queue would put off. */
static void waiter_read(struct script_fetch *s, struct waiter *w)
{
    int64_t deadline = clock_mono_us() + s->ctx->conf->redis.command_timeout_ms * 1000LL;
    bool readable = true;

    for (;;) {
        redisContext *c = w->rc.c;
        void *reply = NULL;
        struct pollfd pfd;
        int64_t left;
        int n;

        if (readable && redisBufferRead(c) != REDIS_OK) {
            waiter_lost(s, w, c->errstr);
            return;
        }
        if (w->outstanding && waiter_reply_too_big(c)) {
            /* Woken: the consumer fetches next. What the fetch behind it took is rescued. */
            w->outstanding = false;
            waiter_drop(s, w);
            rconn_close(&w->rc);
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
                    waiter_lost(s, w, why);
                    return;
                }
                if (cls != RC_OK)
                    waiter_refused(s, w, r, cls); /* the fetch behind it still ran */
                else if (r->type != REDIS_REPLY_NIL && !w->fetching)
                    /* With a fetch behind it, its reply says (a paused queue wakes this BLMOVE
                     * and is still paused). */
                    fetch_queue_good(s->ctx, w->q);
            } else if (w->fetching && !waiter_fetched(s, w, r)) {
                freeReplyObject(r);
                waiter_drop(s, w);
                rconn_close(&w->rc);
                w->hold_until_us = clock_mono_us() + WAITER_HOLD_MS * 1000LL;
                return;
            }
            freeReplyObject(r);
        }
        if (n != REDIS_OK) {
            waiter_lost(s, w, c->errstr);
            return;
        }
        if (!w->outstanding && !w->fetching)
            return;
        if (w->outstanding && c->reader->pos == c->reader->len)
            return; /* the BLMOVE still blocks */
        left = deadline - clock_mono_us();
        if (left <= 0) {
            waiter_lost(s, w, "no whole reply within the command timeout");
            return;
        }
        pfd = (struct pollfd){.fd = c->fd, .events = POLLIN};
        n = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (n < 0 && errno != EINTR) {
            waiter_lost(s, w, strerror(errno));
            return;
        }
        readable = n > 0;
    }
}

/* Sends the waiter's BLMOVE and, if a slot is free and the script known, a one-task fetch
 * behind it. */
static int waiter_arm(struct script_fetch *s, struct waiter *w, int64_t now)
{
    redisContext *c = w->rc.c;
    int done = 0;

    if (redisAppendCommandArgv(c, 6, w->argv, NULL) != REDIS_OK)
        return -1;
    if (script_sha(SCRIPT_FETCH, s->sha) && capacity_reserve(s->ctx->cap, 1, 0) == 1) {
        task_make_id(w->id);
        if (redisAppendCommandArgv(c, s->fetch_argc, w->fetch_argv, NULL) != REDIS_OK) {
            capacity_release(s->ctx->cap, 1);
            return -1;
        }
        held_add(w->id);
        w->fetching = true;
    }
    w->outstanding = true;
    w->sent_us = now;
    while (done == 0)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* Puts back at the front of their queues what fetches whose reply was lost had moved into the
 * in-flight hash. -1 if it has to be tried again. */
static int rescue(struct script_fetch *s)
{
    const char **args = malloc(s->norphans * sizeof(*args));
    const char *keys[] = {s->inflight_key, s->dead_key};
    redisReply *reply;
    enum rclass cls;
    int rc = -1;

    if (args == NULL) {
        s->ctx->pause_until_us = clock_mono_us() + 1000000;
        return -1;
    }
    for (size_t i = 0; i < s->norphans; i++)
        args[i] = s->orphans[i];
    reply = script_run(s->ctx->rc, SCRIPT_RESCUE, 2, keys, NULL, (int)s->norphans, args, NULL);
    free(args);
    if (reply == NULL)
        return -1;
    cls = reply_class(reply, REDIS_REPLY_INTEGER);
    if (cls == RC_OK && !wire_count(reply))
        cls = RC_FAILED;
    if (cls == RC_OK) {
        if (reply->integer > 0)
            log_notice("consumer: %lld task(s) whose fetch reply was lost put back at the front of "
                       "their queue",
                       reply->integer);
        for (size_t i = 0; i < s->norphans; i++)
            held_del(s->orphans[i]);
        s->norphans = 0;
        rc = 0;
    } else {
        fetch_refused(s->ctx, reply, cls);
    }
    freeReplyObject(reply);
    return rc;
}

/* A waiter that did not wake us may still hold a fetch: if its queue got a task since, Redis has
 * moved it already, and it must start now, not when all queues are next empty. */
static void waiters_poll(struct script_fetch *s)
{
    int nq = s->nwaiters, k = 0;
    struct pollfd fds[nq > 0 ? nq : 1];
    int which[nq > 0 ? nq : 1];

    for (int i = 0; i < nq; i++)
        if (s->waiters[i].fetching && s->waiters[i].rc.c != NULL) {
            fds[k] = (struct pollfd){.fd = s->waiters[i].rc.c->fd, .events = POLLIN};
            which[k++] = i;
        }
    if (k == 0 || poll(fds, (nfds_t)k, 0) <= 0)
        return;
    for (int j = 0; j < k; j++)
        if (fds[j].revents != 0)
            waiter_read(s, &s->waiters[which[j]]);
}

static int script_prepare(void *state)
{
    struct script_fetch *s = state;

    if (s->norphans > 0 && rescue(s) < 0)
        return -1;
    waiters_poll(s);
    return 0;
}

/* All queues empty: blocks until a push to any of them, a wake-up, or a timeout. */
static void script_idle(void *state)
{
    struct script_fetch *s = state;
    struct fetch_ctx *ctx = s->ctx;
    int nq = s->nwaiters;
    int64_t limit_us = (FETCH_BLOCK_SECONDS * 1000LL + ctx->conf->redis.command_timeout_ms) * 1000;
    int64_t wait_us = limit_us;
    struct pollfd fds[nq + 1];
    int64_t now = clock_mono_us();

    for (int i = 0; i < nq; i++) {
        struct waiter *w = &s->waiters[i];

        if (w->outstanding && now - w->sent_us > limit_us)
            waiter_lost(s, w, "no reply to BLMOVE within its block time");
        /* The master moved: rconn_try leaves this connection, and what was sent on it will
         * never be answered on the next one. What its fetch may have moved is rescued. */
        if (w->outstanding && rconn_moved(&w->rc))
            waiter_drop(s, w);
        if (!w->outstanding && w->hold_until_us > now) {
            /* Not waited on now: come back when the hold ends. */
            if (w->hold_until_us - now < wait_us)
                wait_us = w->hold_until_us - now;
            fds[i] = (struct pollfd){.fd = -1};
            continue;
        }
        if (rconn_try(&w->rc) < 0) {
            fetch_pause(ctx, rconn_wait_ms(&w->rc));
            return;
        }
        if (!w->outstanding && waiter_arm(s, w, now) < 0) {
            waiter_lost(s, w, w->rc.c->errstr);
            return;
        }
        fds[i] = (struct pollfd){.fd = w->rc.c->fd, .events = POLLIN};
    }
    fds[nq] = (struct pollfd){.fd = ctx->wakefd, .events = POLLIN};
    for (;;) {
        int64_t left = now + wait_us - clock_mono_us();
        int n;

        if (left <= 0)
            return;
        n = poll(fds, (nfds_t)nq + 1, fetch_slice_ms(left));
        health_beat(THREAD_CONSUMER);
        if (n < 0 && errno != EINTR)
            return;
        if (n <= 0)
            continue;
        if ((fds[nq].revents & POLLIN) && ctx->interrupted(ctx->owner))
            return;
        for (int i = 0; i < nq; i++)
            if (fds[i].fd >= 0 && fds[i].revents != 0 && s->waiters[i].rc.c != NULL)
                waiter_read(s, &s->waiters[i]);
        return;
    }
}

/* Closes the waiters that hold a fetch (what it may have taken is rescued), which frees their
 * slots. Returns whether there was one. */
static bool script_take_back(void *state)
{
    struct script_fetch *s = state;
    bool any = false;

    for (int i = 0; i < s->nwaiters; i++) {
        struct waiter *w = &s->waiters[i];
        if (w->fetching) {
            waiter_drop(s, w);
            rconn_close(&w->rc);
            any = true;
        }
    }
    return any;
}

static void script_destroy(void *state)
{
    struct script_fetch *s = state;

    if (s == NULL)
        return;
    waiters_free(s);
    if (s->norphans > 0 && s->ctx->rc->c != NULL)
        rescue(s);
    free(s->orphans);
    free(s->inflight_key);
    free(s->dead_key);
    free(s->payloads_key);
    free(s->stats_key);
    free(s->paused_key);
    free(s);
}

const struct fetch_ops fetch_script_ops = {
    .create = script_create,
    .reconfigure = script_reconfigure,
    .prepare = script_prepare,
    .fetch = script_fetch,
    .idle = script_idle,
    .take_back = script_take_back,
    .destroy = script_destroy,
};
