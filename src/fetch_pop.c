/* at-most-once: one BLMPOP takes up to the free capacity from the first non-empty queue, in
 * priority order, as the original example popped. What it took is qworker's alone from then on:
 * a crash loses it (documented). A stop releases the blocked BLMPOP with CLIENT UNBLOCK from a
 * second connection, and whatever it had already taken is still handed over. BLMPOP runs no
 * script, so the paused queues (qworkerctl pause) are read at most once a second and left out of
 * its keys; it blocks a second at a time, so that a pause holds within a second. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fetch.h"
#include "health.h"
#include "log.h"
#include "task.h"
#include "taskq.h"
#include "weights.h"

enum wait_result { WAIT_REPLY, WAIT_STOPPED, WAIT_FAILED };

#define POP_BLOCK_SECONDS 1
#define PAUSED_EVERY_US 1000000

struct pop {
    struct fetch_ctx *ctx;
    /* BLMPOP <block> <numkeys> <queues not paused...> RIGHT COUNT <n> */
    int argc;
    const char **argv;
    char block[16];
    char numkeys[16];
    char count[16];
    char *paused_key;
    bool *paused; /* per queue of ctx->conf */
    int64_t paused_at_us;
    struct weights weights; /* queue_order = "weighted" */
    int *order;             /* NULL: strict */
};

static int pop_reconfigure(void *state)
{
    struct pop *p = state;
    const struct config *conf = p->ctx->conf;
    const char **argv = calloc((size_t)conf->nqueues + 6, sizeof(*argv));
    bool *paused = calloc((size_t)conf->nqueues, sizeof(*paused));

    if (argv == NULL || paused == NULL) {
        free(argv);
        free(paused);
        return -1;
    }
    free(p->argv);
    free(p->paused);
    free(p->order);
    weights_free(&p->weights);
    p->argv = argv;
    p->paused = paused;
    p->paused_at_us = 0;
    p->order = NULL;
    if (conf->queue_order == QUEUE_ORDER_WEIGHTED) {
        int weight[conf->nqueues];
        for (int i = 0; i < conf->nqueues; i++)
            weight[i] = conf->queues[i].weight;
        p->order = calloc((size_t)conf->nqueues, sizeof(*p->order));
        if (p->order == NULL || weights_init(&p->weights, weight, conf->nqueues) < 0) {
            free(p->order);
            p->order = NULL;
            return -1;
        }
    }
    return 0;
}

/* SMEMBERS <prefix>:paused, at most once a second; what Redis does not answer leaves the last
 * word standing. Each queue's pause is said once (fetch_queue_bad), as the fetch script's is. */
static void read_paused(struct pop *p)
{
    struct fetch_ctx *ctx = p->ctx;
    const char *argv[] = {"SMEMBERS", p->paused_key};
    redisReply *r;

    if (clock_mono_us() - p->paused_at_us < PAUSED_EVERY_US)
        return;
    p->paused_at_us = clock_mono_us();
    r = rconn_command(ctx->rc, 2, argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return;
    }
    for (int q = 0; q < ctx->conf->nqueues; q++) {
        const char *name = ctx->conf->queues[q].name;
        char why[320];
        p->paused[q] = false;
        for (size_t i = 0; i < r->elements; i++)
            p->paused[q] = p->paused[q] || (r->element[i]->type == REDIS_REPLY_STRING &&
                                            strcmp(r->element[i]->str, name) == 0);
        snprintf(why, sizeof(why), "PAUSED %s is paused", name);
        if (p->paused[q])
            fetch_queue_bad(ctx, q, why);
        else
            fetch_queue_good(ctx, q);
    }
    freeReplyObject(r);
}

/* The command for the queues not paused; 0 when every one is. */
static int build_argv(struct pop *p)
{
    const struct config *conf = p->ctx->conf;
    int k = 0, n = 0;

    p->argv[k++] = "BLMPOP";
    p->argv[k++] = p->block;
    p->argv[k++] = p->numkeys;
    if (p->order != NULL)
        weights_next(&p->weights, p->order);
    for (int j = 0; j < conf->nqueues; j++) {
        int i = p->order != NULL ? p->order[j] : j;
        if (!p->paused[i]) {
            p->argv[k++] = conf->queues[i].name;
            n++;
        }
    }
    snprintf(p->numkeys, sizeof(p->numkeys), "%d", n);
    p->argv[k++] = "RIGHT";
    p->argv[k++] = "COUNT";
    p->argv[k++] = p->count;
    p->argc = k;
    return n;
}

static void *pop_create(struct fetch_ctx *ctx)
{
    struct pop *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->ctx = ctx;
    snprintf(p->block, sizeof(p->block), "%d", POP_BLOCK_SECONDS);
    if (asprintf(&p->paused_key, "%s:paused", ctx->conf->prefix) < 0 || pop_reconfigure(p) < 0) {
        free(p->paused_key);
        free(p);
        return NULL;
    }
    return p;
}

static void pop_destroy(void *state)
{
    struct pop *p = state;

    if (p != NULL) {
        free(p->argv);
        free(p->paused);
        free(p->paused_key);
        free(p->order);
        weights_free(&p->weights);
    }
    free(p);
}

/* Waits for the reply to the command in flight, for up to timeout_ms; returns early if a stop is
 * requested and watch_stop is set. */
static enum wait_result wait_reply(struct pop *p, int timeout_ms, bool watch_stop,
                                   redisReply **out)
{
    struct fetch_ctx *ctx = p->ctx;
    redisContext *c = ctx->rc->c;
    int64_t deadline = clock_mono_us() + (int64_t)timeout_ms * 1000;

    for (;;) {
        struct pollfd fds[2] = {{.fd = c->fd, .events = POLLIN},
                                {.fd = ctx->wakefd, .events = POLLIN}};
        void *reply = NULL;
        int64_t left;
        int n;

        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
            rconn_lost(ctx->rc, c->errstr);
            return WAIT_FAILED;
        }
        if (reply != NULL) {
            *out = reply;
            return WAIT_REPLY;
        }
        left = deadline - clock_mono_us();
        if (left <= 0) {
            rconn_lost(ctx->rc, "no reply within the command timeout");
            return WAIT_FAILED;
        }
        n = poll(fds, watch_stop ? 2 : 1, fetch_slice_ms(left));
        health_beat(THREAD_CONSUMER);
        if (n < 0 && errno != EINTR) {
            rconn_lost(ctx->rc, strerror(errno));
            return WAIT_FAILED;
        }
        if (watch_stop && (fds[1].revents & POLLIN) && ctx->interrupted(ctx->owner))
            return WAIT_STOPPED;
        if (fds[0].revents != 0 && redisBufferRead(c) != REDIS_OK) {
            rconn_lost(ctx->rc, c->errstr);
            return WAIT_FAILED;
        }
    }
}

/* Releases our own blocked BLMPOP from a second connection; Redis then answers it as if its
 * block had expired, or with what it had already taken. */
static void unblock(struct pop *p)
{
    char err[256], id[32];
    const char *argv[] = {"CLIENT", "UNBLOCK", id};
    redisContext *c = redis_connect(p->ctx->rc->conf, "qworker-stop", err, sizeof(err));
    redisReply *reply;

    if (c == NULL) {
        log_warn("consumer: cannot release the blocked fetch (%s); closing its connection", err);
        return;
    }
    snprintf(id, sizeof(id), "%lld", p->ctx->rc->client_id);
    reply = redisCommandArgv(c, 3, argv, NULL);
    if (reply != NULL)
        freeReplyObject(reply);
    redisFree(c);
}

/* Turns BLMPOP's [queue, [payload...]] into tasks for the loop. Returns how many it handed over. */
static int hand_over(struct pop *p, const redisReply *reply)
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
    queue = config_queue(p->ctx->conf, reply->element[0]->str, reply->element[0]->len);
    if (queue == NULL) {
        log_err("consumer: BLMPOP answered for a queue not configured: %s", reply->element[0]->str);
        return 0;
    }
    items = reply->element[1];
    for (size_t i = 0; i < items->elements; i++) {
        const redisReply *it = items->element[i];
        struct task *t =
            it->type == REDIS_REPLY_STRING ? fetch_task(queue, it->str, it->len, NULL) : NULL;
        if (t == NULL) {
            char shown[96];
            log_err("consumer: out of memory or a reply that is not a payload: task from queue "
                    "%s lost: %s",
                    queue->name,
                    it->type == REDIS_REPLY_STRING
                        ? payload_excerpt(it->str, it->len, 64, shown, sizeof(shown))
                        : reply_text(it));
            continue;
        }
        taskq_chain_add(&chain, t);
    }
    n = (int)chain.n;
    fetch_hand_over(p->ctx, &chain);
    return n;
}

static int pop_fetch(void *state, int n)
{
    struct pop *p = state;
    struct fetch_ctx *ctx = p->ctx;
    redisContext *c;
    int timeout = POP_BLOCK_SECONDS * 1000 + ctx->conf->redis.command_timeout_ms;
    redisReply *reply = NULL;
    enum wait_result r;
    int done = 0, got;

    read_paused(p);
    if (ctx->rc->c == NULL)
        return 0; /* lost while reading the pauses: the consumer reconnects */
    c = ctx->rc->c;
    snprintf(p->count, sizeof(p->count), "%d", n);
    if (build_argv(p) == 0) {
        ctx->pause_until_us = clock_mono_us() + PAUSED_EVERY_US; /* every queue is paused */
        return 0;
    }
    if (redisAppendCommandArgv(c, p->argc, p->argv, NULL) != REDIS_OK) {
        rconn_lost(ctx->rc, c->errstr);
        return 0;
    }
    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            rconn_lost(ctx->rc, c->errstr);
            return 0;
        }
    }
    r = wait_reply(p, timeout, true, &reply);
    if (r == WAIT_STOPPED) {
        unblock(p);
        r = wait_reply(p, ctx->conf->redis.command_timeout_ms, false, &reply);
    }
    if (r != WAIT_REPLY)
        return 0;
    if (reply_means_reconnect(reply)) {
        char why[256];
        snprintf(why, sizeof(why), "BLMPOP: %s", reply->str);
        freeReplyObject(reply);
        rconn_lost(ctx->rc, why);
        return 0;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        fetch_refused(ctx, reply, reply_class(reply, 0));
        freeReplyObject(reply);
        return -1;
    }
    fetch_taken(ctx);
    got = hand_over(p, reply);
    freeReplyObject(reply);
    return got;
}

static int pop_prepare(void *state)
{
    (void)state;
    return 0;
}

/* BLMPOP itself waits: nothing more to wait for. */
static void pop_idle(void *state)
{
    (void)state;
}

static bool pop_take_back(void *state)
{
    (void)state;
    return false;
}

const struct fetch_ops fetch_pop_ops = {
    .create = pop_create,
    .reconfigure = pop_reconfigure,
    .prepare = pop_prepare,
    .fetch = pop_fetch,
    .idle = pop_idle,
    .take_back = pop_take_back,
    .destroy = pop_destroy,
};
