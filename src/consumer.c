/* The consumer's fetch is one BLMPOP: it takes up to the free capacity from the first non-empty
 * queue in priority order, and one task as soon as one arrives when all were empty. The thread
 * waits in poll() on both its Redis socket and a stop eventfd, so that a stop never waits for a
 * block timeout and a task Redis has already handed out is never thrown away. */
#include "consumer.h"

#include <errno.h>
#include <poll.h>
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
#include "log.h"
#include "redis.h"
#include "task.h"
#include "taskq.h"

/* How long one BLMPOP blocks in Redis: each expiry costs one round trip and proves the connection
 * alive. */
#define BLOCK_SECONDS 5

enum wait_result { WAIT_REPLY, WAIT_STOPPED, WAIT_FAILED };

struct consumer {
    const struct config *conf;
    struct capacity *cap;
    struct taskq *out;
    struct rconn rc;
    int stopfd;
    atomic_bool stopping;
    bool ready; /* has connected once */
    pthread_t thread;

    /* BLMPOP <block> <numkeys> <queues...> RIGHT COUNT <n> */
    int argc;
    const char **argv;
    char block[16];
    char numkeys[16];
    char count[16];
};

struct consumer *consumer_new(const struct config *conf, struct capacity *cap, struct taskq *out)
{
    struct consumer *cs = calloc(1, sizeof(*cs));
    int k = 0;

    if (cs == NULL)
        return NULL;
    cs->conf = conf;
    cs->cap = cap;
    cs->out = out;
    rconn_init(&cs->rc, &conf->redis, "consumer");
    cs->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    cs->argc = conf->nqueues + 6;
    cs->argv = calloc((size_t)cs->argc, sizeof(*cs->argv));
    if (cs->stopfd < 0 || cs->argv == NULL) {
        consumer_free(cs);
        return NULL;
    }
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
    return cs;
}

void consumer_free(struct consumer *cs)
{
    if (cs == NULL)
        return;
    if (cs->stopfd >= 0)
        close(cs->stopfd);
    free(cs->argv);
    free(cs);
}

/* Waits for the reply to the command in flight, for up to timeout_ms; returns early if a stop is
 * requested and watch_stop is set. */
static enum wait_result wait_reply(struct consumer *cs, int timeout_ms, bool watch_stop,
                                   redisReply **out)
{
    redisContext *c = cs->rc.c;
    int64_t deadline = clock_mono_us() + (int64_t)timeout_ms * 1000;

    for (;;) {
        struct pollfd fds[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = cs->stopfd, .events = POLLIN}};
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
        n = poll(fds, watch_stop ? 2 : 1, (int)((left + 999) / 1000));
        if (n < 0 && errno != EINTR) {
            rconn_lost(&cs->rc, strerror(errno));
            return WAIT_FAILED;
        }
        if (watch_stop && (fds[1].revents & POLLIN))
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
    struct task *first = NULL, *last = NULL;
    int n = 0;

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
        if (last != NULL)
            last->next = t;
        else
            first = t;
        last = t;
        n++;
    }
    if (n > 0)
        taskq_push_chain(cs->out, first, last, (size_t)n);
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
    if (reply_means_reconnect(reply) || reply->type == REDIS_REPLY_ERROR) {
        char why[256];
        snprintf(why, sizeof(why), "BLMPOP: %s", reply->str);
        if (!reply_means_reconnect(reply))
            log_err("consumer: %s", why);
        freeReplyObject(reply);
        rconn_lost(&cs->rc, why);
        return 0;
    }
    got = hand_over(cs, reply);
    freeReplyObject(reply);
    return got;
}

/* Sleeps up to ms unless a stop is requested. */
static void pause_unless_stopped(struct consumer *cs, int ms)
{
    struct pollfd pfd = {.fd = cs->stopfd, .events = POLLIN};

    if (ms > 0)
        poll(&pfd, 1, ms);
}

static void *consumer_main(void *arg)
{
    struct consumer *cs = arg;

    while (!atomic_load(&cs->stopping)) {
        int n, got;

        if (rconn_try(&cs->rc) < 0) {
            pause_unless_stopped(cs, rconn_wait_ms(&cs->rc));
            continue;
        }
        if (!cs->ready) {
            cs->ready = true;
            log_notice("ready: redis answered; taking tasks");
        }
        n = capacity_reserve(cs->cap, cs->conf->fetch_batch);
        if (n == 0)
            break;
        got = fetch(cs, n);
        if (got < n)
            capacity_release(cs->cap, n - got);
    }
    rconn_close(&cs->rc);
    taskq_close(cs->out);
    return NULL;
}

int consumer_start(struct consumer *cs)
{
    return pthread_create(&cs->thread, NULL, consumer_main, cs) == 0 ? 0 : -1;
}

void consumer_stop(struct consumer *cs)
{
    uint64_t one = 1;

    atomic_store(&cs->stopping, true);
    capacity_stop(cs->cap);
    if (write(cs->stopfd, &one, sizeof(one)) < 0)
        log_err("consumer: cannot signal stop: %s", strerror(errno));
}

void consumer_join(struct consumer *cs)
{
    pthread_join(cs->thread, NULL);
}
