/* The consumer thread: reserves free capacity, takes up to that many tasks from Redis by its
 * fetch protocol (fetch.h: at-least-once or at-most-once) and hands them to the loop thread. It
 * waits in poll() on its Redis sockets and on an eventfd rung on stop, reload and pause, so that
 * none waits for a block timeout, and a task Redis has already handed out is never thrown away.
 * While Redis refuses to record finished tasks (redis_refusing), it takes nothing. */
#include "consumer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "capacity.h"
#include "clock.h"
#include "fetch.h"
#include "health.h"
#include "identity.h"
#include "log.h"
#include "redis.h"
#include "taskq.h"

/* How long a pause waits for the consumer to take back its armed fetches. */
#define PAUSE_WAIT_MS 10000

struct consumer {
    struct fetch_ctx ctx;
    const struct fetch_ops *ops;
    void *fetch; /* the protocol's state */
    struct rconn rc;
    int wakefd; /* written on stop, reload and pause: ends any wait */
    atomic_bool stopping;
    atomic_bool disarm; /* paused: take back the fetches pipelined behind the waiters */
    pthread_mutex_t disarm_mu;
    pthread_cond_t disarmed;
    _Atomic(const struct config *) next_conf; /* a reload waiting to be applied */
    _Atomic bool ready;
    pthread_t thread;
};

/* A wake-up: true if it means stop, reload or pause (the caller ends its wait); a stray one is
 * consumed and the wait goes on. */
static bool interrupted(void *owner)
{
    struct consumer *cs = owner;
    uint64_t n;

    if (atomic_load(&cs->stopping) || atomic_load(&cs->next_conf) != NULL ||
        atomic_load(&cs->disarm))
        return true;
    if (read(cs->wakefd, &n, sizeof(n)) < 0) {
        /* Nothing to consume. */
    }
    return false;
}

struct consumer *consumer_new(const struct config *conf, struct capacity *cap, struct taskq *out)
{
    struct consumer *cs = calloc(1, sizeof(*cs));

    if (cs == NULL)
        return NULL;
    rconn_init(&cs->rc, &conf->redis, "consumer");
    pthread_mutex_init(&cs->disarm_mu, NULL);
    cond_init_monotonic(&cs->disarmed);
    cs->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    cs->ctx = (struct fetch_ctx){
        .conf = conf,
        .cap = cap,
        .out = out,
        .rc = &cs->rc,
        .wakefd = cs->wakefd,
        .interrupted = interrupted,
        .owner = cs,
        .queue_bad = calloc((size_t)conf->nqueues, sizeof(*cs->ctx.queue_bad)),
    };
    cs->ops = conf->delivery == DELIVERY_AT_LEAST_ONCE ? &fetch_script_ops : &fetch_pop_ops;
    if (cs->wakefd < 0 || cs->ctx.queue_bad == NULL ||
        (cs->fetch = cs->ops->create(&cs->ctx)) == NULL) {
        consumer_free(cs);
        return NULL;
    }
    return cs;
}

void consumer_free(struct consumer *cs)
{
    if (cs == NULL)
        return;
    if (cs->fetch != NULL)
        cs->ops->destroy(cs->fetch);
    if (cs->wakefd >= 0)
        close(cs->wakefd);
    free(cs->ctx.queue_bad);
    pthread_mutex_destroy(&cs->disarm_mu);
    pthread_cond_destroy(&cs->disarmed);
    free(cs);
}

/* A reload: the queues, their order, fetch_batch. Tasks already taken are not touched. */
static void apply_reload(struct consumer *cs)
{
    const struct config *next = atomic_exchange(&cs->next_conf, NULL), *prev = cs->ctx.conf;
    struct rcond *bad;

    if (next == NULL)
        return;
    interrupted(cs); /* consume the wake-up that announced it */
    bad = calloc((size_t)next->nqueues, sizeof(*bad));
    cs->ctx.conf = next;
    if (bad == NULL || cs->ops->reconfigure(cs->fetch) < 0) {
        log_err("consumer: out of memory applying the new configuration; retrying in 1 s");
        free(bad);
        cs->ctx.conf = prev;
        atomic_store(&cs->next_conf, next);
        cs->ctx.pause_until_us = clock_mono_us() + 1000000;
        return;
    }
    free(cs->ctx.queue_bad);
    cs->ctx.queue_bad = bad;
}

/* A pause: a fetch armed behind a waiter would still take a task when one is pushed. */
static void disarm(struct consumer *cs)
{
    if (!atomic_load(&cs->disarm))
        return;
    cs->ops->take_back(cs->fetch);
    pthread_mutex_lock(&cs->disarm_mu);
    atomic_store(&cs->disarm, false);
    pthread_cond_broadcast(&cs->disarmed);
    pthread_mutex_unlock(&cs->disarm_mu);
    interrupted(cs); /* consume the wake-up that announced it */
}

/* Free slots for a fetch. When none is free, those held by fetches armed behind waiters are taken
 * back first: a task on a queue whose waiter had no slot left would otherwise wait for a push to
 * another queue. */
static int reserve(struct consumer *cs)
{
    int batch = cs->ctx.conf->fetch_batch;
    int n = capacity_reserve(cs->ctx.cap, batch, 0);

    if (n < 0 && cs->ops->take_back(cs->fetch))
        n = capacity_reserve(cs->ctx.cap, batch, 0);
    if (n < 0)
        n = capacity_reserve(cs->ctx.cap, batch, health_period_ms());
    return n;
}

static void say_ready(struct consumer *cs)
{
    if (atomic_load(&cs->ready))
        return;
    atomic_store(&cs->ready, true);
    log_notice("ready: redis answered; taking tasks");
    /* Wakes the main thread (it waits for signals) to tell systemd at once. */
    kill(getpid(), SIGUSR2);
}

static void *consumer_main(void *arg)
{
    struct consumer *cs = arg;

    while (!atomic_load(&cs->stopping)) {
        int n, got;
        int64_t paused = cs->ctx.pause_until_us - clock_mono_us();

        health_beat(THREAD_CONSUMER);
        apply_reload(cs);
        disarm(cs);
        if (paused > 0) {
            fetch_pause(&cs->ctx, (int)(paused / 1000) + 1);
            continue;
        }
        if (rconn_try(&cs->rc) < 0) {
            fetch_pause(&cs->ctx, rconn_wait_ms(&cs->rc));
            continue;
        }
        say_ready(cs);
        if (identity_expiring(cs->ctx.conf)) {
            /* What it took would go straight back (loop.c): take nothing until a heartbeat
             * gets through. */
            cs->ops->take_back(cs->fetch);
            fetch_pause(&cs->ctx, 100);
            continue;
        }
        if (redis_refusing()) {
            /* Redis cannot record what finishes: take nothing more until it can. */
            cs->ops->take_back(cs->fetch);
            fetch_pause(&cs->ctx, 100);
            continue;
        }
        if (cs->ops->prepare(cs->fetch) < 0)
            continue;
        n = reserve(cs);
        if (n == 0)
            break;
        if (n < 0)
            continue; /* no free capacity yet */
        got = cs->ops->fetch(cs->fetch, n);
        if (got < n)
            capacity_release(cs->ctx.cap, got < 0 ? n : n - got);
        if (got == 0 && !atomic_load(&cs->stopping) && !cs->ctx.more)
            cs->ops->idle(cs->fetch);
        cs->ctx.more = false;
    }
    cs->ops->destroy(cs->fetch); /* puts back what armed or lost fetches took */
    cs->fetch = NULL;
    rconn_close(&cs->rc);
    taskq_close(cs->ctx.out);
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
    capacity_stop(cs->ctx.cap);
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
