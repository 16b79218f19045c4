/* The loop thread owns every running task. Nothing here blocks: tasks come in through the inbox
 * (drained whole on each doorbell ring, since libevent merges activations), handlers arm timers or
 * watch children, and each finished task goes straight to the reporter. */
#include "loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "cancel.h"
#include "capacity.h"
#include "clock.h"
#include "envelope.h"
#include "jsonmem.h"
#include "handler.h"
#include "health.h"
#include "identity.h"
#include "log.h"
#include "taskq.h"

/* libevent allows 256 common timeouts per base; keep a few for later needs. */
#define COMMON_TIMEOUTS_MAX 240
#define FENCE_REASON "this worker's heartbeat is expiring: redis has not answered it"

enum stop_mode { STOP_NONE, STOP_DRAIN, STOP_NOW };

struct common_timeout {
    struct timeval duration;
    const struct timeval *magic;
};

struct hslot {
    const char *name;
    int running;
    struct taskq_chain waiting; /* linked by ->next, unused while the loop owns a task */
};

struct loop {
    const struct config *conf;
    struct capacity *cap;
    struct taskq inbox;
    struct taskq *done;
    struct outlog *output;
    struct event_base *base;
    struct event *doorbell;
    struct event *drain_timer;
    pthread_t thread;

    atomic_int stop_request; /* written by any thread, acted on by the loop thread */
    enum stop_mode stopping; /* loop thread: what it is doing about it */
    bool inbox_closed;
    /* cppcheck-suppress unusedStructMember ; used through the LIST_* macros */
    LIST_HEAD(, task) running;
    /* Written by the loop thread alone; atomic so that the main thread may show them. */
    atomic_size_t nrunning;

    /* Per handler name (kept across reloads, so that running tasks of an old configuration
     * still count): how many run, and those waiting under the handler's own concurrency limit,
     * in arrival order. */
    struct hslot *slots;
    int nslots;
    atomic_size_t nwaiting;
    struct event *tick;                          /* the watchdog's proof of progress */
    struct event *fence_check;                   /* at-least-once: identity_expiring */
    bool fenced;
    uint64_t cancel_gen; /* cancel_generation() when the tasks were last looked at */
    _Atomic(const struct config *) next_conf; /* a reload waiting to be applied */

    struct common_timeout timeouts[COMMON_TIMEOUTS_MAX];
    int ntimeouts;
};

static void ring(void *arg)
{
    struct loop *loop = arg;

    event_active(loop->doorbell, EV_READ, 0);
}

void loop_poke(void *loop)
{
    ring(loop);
}

void loop_counts(struct loop *loop, size_t *running, size_t *waiting)
{
    *running = atomic_load_explicit(&loop->nrunning, memory_order_relaxed);
    *waiting = atomic_load_explicit(&loop->nwaiting, memory_order_relaxed);
}

struct event_base *loop_base(struct loop *loop)
{
    return loop->base;
}

struct outlog *loop_outlog(struct loop *loop)
{
    return loop->output;
}

struct taskq *loop_inbox(struct loop *loop)
{
    return &loop->inbox;
}

const struct timeval *loop_timeout(struct loop *loop, const struct timeval *tv)
{
    struct common_timeout *ct;

    for (int i = 0; i < loop->ntimeouts; i++) {
        ct = &loop->timeouts[i];
        if (ct->duration.tv_sec == tv->tv_sec && ct->duration.tv_usec == tv->tv_usec)
            return ct->magic;
    }
    if (loop->ntimeouts == COMMON_TIMEOUTS_MAX)
        return tv;
    ct = &loop->timeouts[loop->ntimeouts];
    ct->magic = event_base_init_common_timeout(loop->base, tv);
    if (ct->magic == NULL)
        return tv;
    ct->duration = *tv;
    loop->ntimeouts++;
    return ct->magic;
}

static void maybe_exit(struct loop *loop)
{
    if (loop->stopping != STOP_NONE && loop->inbox_closed && loop->nrunning == 0 &&
        loop->nwaiting == 0)
        event_base_loopbreak(loop->base);
}

/* Hands a task that is no longer running to the reporter and frees its slot. */
static void finish(struct loop *loop, struct task *t, enum outcome outcome)
{
    t->outcome = outcome;
    t->finished_mono_us = clock_mono_us();
    capacity_release(loop->cap, 1);
    taskq_push(loop->done, t);
}

/* The slot of a handler name, made on first use. -1 if out of memory. */
static int slot_of(struct loop *loop, const struct handler_conf *h)
{
    struct hslot *grown;

    for (int i = 0; i < loop->nslots; i++)
        if (strcmp(loop->slots[i].name, h->name) == 0)
            return i;
    grown = realloc(loop->slots, (size_t)(loop->nslots + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    loop->slots = grown;
    loop->slots[loop->nslots] = (struct hslot){.name = h->name};
    return loop->nslots++;
}

static void run_task(struct loop *loop, struct task *t)
{
    t->started_real_us = clock_real_us();
    t->started_mono_us = clock_mono_us();
    /* libevent measures timeouts from its cached time, which was taken before this batch began:
     * refresh it after the start time, so that a task never ends before its duration. */
    event_base_update_cache_time(loop->base);
    if (handler_ops(t->handler->type)->start(loop, t) < 0) {
        finish(loop, t, t->outcome);
        return;
    }
    LIST_INSERT_HEAD(&loop->running, t, running);
    loop->nrunning++;
    loop->slots[t->slot].running++;
}

static struct task *pop_waiting(struct loop *loop, int slot)
{
    struct task *t = taskq_chain_pop(&loop->slots[slot].waiting);

    if (t != NULL)
        loop->nwaiting--;
    return t;
}

void loop_task_done(struct loop *loop, struct task *t, enum outcome outcome)
{
    int slot = t->slot;
    struct task *next;

    LIST_REMOVE(t, running);
    loop->nrunning--;
    loop->slots[slot].running--;
    finish(loop, t, outcome);
    if (loop->stopping == STOP_NONE && (next = pop_waiting(loop, slot)) != NULL)
        run_task(loop, next);
    maybe_exit(loop);
}

/* Tasks waiting under their handler's concurrency have not started: on a stop they go back
 * at once, not one by one as running ones end. */
static void requeue_waiting(struct loop *loop)
{
    struct task *t;

    for (int h = 0; h < loop->nslots; h++) {
        while ((t = pop_waiting(loop, h)) != NULL) {
            task_set_reason(t, "worker shutting down");
            finish(loop, t, OUTCOME_REQUEUED);
        }
    }
}

static void requeue_running(struct loop *loop)
{
    struct task *t;

    if (loop->nrunning > 0)
        log_notice("shutdown: stopping %zu running task(s) and putting them back at the front of "
                   "their queue",
                   loop->nrunning);
    requeue_waiting(loop);
    while ((t = LIST_FIRST(&loop->running)) != NULL) {
        handler_ops(t->handler->type)->cancel(loop, t);
        LIST_REMOVE(t, running);
        loop->nrunning--;
        loop->slots[t->slot].running--;
        task_set_reason(t, "worker shutting down");
        finish(loop, t, OUTCOME_REQUEUED);
    }
}

/* The heartbeat is about to expire (identity_expiring): everything this worker holds goes back
 * now, while it is still the only one that may put it back. Tasks that arrive meanwhile go back
 * as they come, until a heartbeat gets through again. */
static void fence_update(struct loop *loop)
{
    struct task *t;
    bool expiring = identity_expiring(loop->conf);

    if (expiring == loop->fenced)
        return;
    loop->fenced = expiring;
    if (!expiring) {
        log_notice("the heartbeat is refreshed again: running tasks again");
        return;
    }
    log_warn("the heartbeat has not reached redis for %.1f s of its %.1f s TTL: stopping %zu "
             "running task(s) and putting everything this worker holds back at the front of its "
             "queue, before other workers may take it (no task runs twice at once)",
             (double)(clock_mono_us() - identity_beat_ok_us()) / 1e6,
             loop->conf->heartbeat_ttl_ms / 1000.0, loop->nrunning);
    for (int h = 0; h < loop->nslots; h++)
        while ((t = pop_waiting(loop, h)) != NULL) {
            task_set_reason(t, FENCE_REASON);
            finish(loop, t, OUTCOME_REQUEUED);
        }
    while ((t = LIST_FIRST(&loop->running)) != NULL) {
        handler_ops(t->handler->type)->cancel(loop, t);
        LIST_REMOVE(t, running);
        loop->nrunning--;
        loop->slots[t->slot].running--;
        task_set_reason(t, FENCE_REASON);
        finish(loop, t, OUTCOME_REQUEUED);
    }
}

static void on_fence_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fence_update(arg);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct loop *loop = arg;

    (void)fd;
    (void)what;
    requeue_running(loop);
    maybe_exit(loop);
}

static void begin_stop(struct loop *loop, enum stop_mode mode)
{
    struct timeval tv;
    double grace = mode == STOP_NOW ? 0 : loop->conf->shutdown_timeout;

    if (mode <= loop->stopping)
        return;
    if (loop->stopping == STOP_NONE && loop->nrunning > 0 && grace > 0)
        log_notice("shutdown: letting %zu running task(s) finish for up to %g s", loop->nrunning,
                   grace);
    loop->stopping = mode;
    requeue_waiting(loop);
    tv.tv_sec = (time_t)grace;
    tv.tv_usec = (suseconds_t)((grace - (double)tv.tv_sec) * 1e6);
    evtimer_add(loop->drain_timer, &tv);
}

/* The JSON an envelope becomes can take twenty times its bytes: what parsing really took
 * replaces the consumer's estimate in the memory budget, until the reporter frees the task. */
static int parse(struct loop *loop, struct task *t)
{
    size_t before = jsonmem_allocated();
    int rc = envelope_parse(t, loop->conf);
    size_t held = t->len + (jsonmem_allocated() - before);

    if (held > t->mem)
        capacity_charge(loop->cap, held - t->mem);
    else
        capacity_refund(loop->cap, t->mem - held);
    t->mem = held;
    return rc;
}

static void start_task(struct loop *loop, struct task *t)
{
    int h;

    t->loop = loop;
    if (loop->fenced)
        fence_update(loop); /* lifted the moment a heartbeat got through, as the consumer sees */
    if (loop->stopping != STOP_NONE || loop->fenced) {
        task_set_reason(t, loop->fenced ? FENCE_REASON : "worker shutting down");
        finish(loop, t, OUTCOME_REQUEUED);
        return;
    }
    if (parse(loop, t) < 0) {
        finish(loop, t, OUTCOME_INVALID);
        return;
    }
    if (t->unique == UNIQUE_DUPLICATE) {
        task_set_reason(t, "its id ran within its unique_for (%g s): not run", t->unique_for);
        finish(loop, t, OUTCOME_DUPLICATE);
        return;
    }
    if (cancel_wanted(t->label, t->id)) {
        task_set_reason(t, "cancelled (qworkerctl cancel) before it started");
        finish(loop, t, OUTCOME_CANCELLED);
        return;
    }
    if (t->unique == UNIQUE_UNCHECKED) {
        /* Run unchecked, it could run twice: back to its queue, to be claimed again. */
        task_set_reason(t, "its id could not be claimed in redis (unique_for)");
        finish(loop, t, OUTCOME_REQUEUED);
        return;
    }
    if (t->delay > 0) {
        /* Not now: the reporter puts it in the schedule, from where it comes back when due. */
        finish(loop, t, OUTCOME_DELAYED);
        return;
    }
    h = slot_of(loop, t->handler);
    if (h < 0) {
        task_set_reason(t, "out of memory");
        finish(loop, t, OUTCOME_FAILED);
        return;
    }
    t->slot = h;
    if (t->handler->concurrency > 0 && loop->slots[h].running >= t->handler->concurrency) {
        taskq_chain_add(&loop->slots[h].waiting, t);
        loop->nwaiting++;
        return;
    }
    run_task(loop, t);
}

/* A cancel came (cancel.h): the tasks held that it names stop. Those waiting under their
 * handler's concurrency first, so that none of them starts in a slot a cancelled one frees. */
static void cancel_held(struct loop *loop)
{
    struct task *t, *next;
    uint64_t gen = cancel_generation();

    if (gen == loop->cancel_gen)
        return;
    loop->cancel_gen = gen;
    for (int h = 0; h < loop->nslots; h++) {
        struct taskq_chain keep = {0};
        while ((t = pop_waiting(loop, h)) != NULL) {
            if (!cancel_wanted(t->label, t->id)) {
                taskq_chain_add(&keep, t);
                loop->nwaiting++;
                continue;
            }
            task_set_reason(t, "cancelled (qworkerctl cancel) before it started");
            finish(loop, t, OUTCOME_CANCELLED);
        }
        loop->slots[h].waiting = keep;
    }
    for (t = LIST_FIRST(&loop->running); t != NULL; t = next) {
        next = LIST_NEXT(t, running);
        if (cancel_wanted(t->label, t->id))
            handler_ops(t->handler->type)->stop(loop, t);
    }
}

static void on_doorbell(evutil_socket_t fd, short what, void *arg)
{
    struct loop *loop = arg;
    struct task *t, *next;
    int request = atomic_load(&loop->stop_request);

    const struct config *reloaded = atomic_exchange(&loop->next_conf, NULL);

    (void)fd;
    (void)what;
    if (reloaded != NULL)
        loop->conf = reloaded; /* for the tasks that start from now on */
    if (request != STOP_NONE)
        begin_stop(loop, (enum stop_mode)request);
    cancel_held(loop);
    for (t = taskq_take_all(&loop->inbox, &loop->inbox_closed); t != NULL; t = next) {
        next = t->next;
        start_task(loop, t);
    }
    maybe_exit(loop);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    health_beat(THREAD_LOOP);
}

/* A precise clock: libevent's default monotonic clock is the coarse one, whose jiffy steps would
 * let a 5 s task end a few milliseconds early or late. */
static struct event_base *new_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (cfg == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

struct loop *loop_new(const struct config *conf, struct capacity *cap, struct taskq *done,
                      struct outlog *output)
{
    struct loop *loop = calloc(1, sizeof(*loop));

    if (loop == NULL)
        return NULL;
    loop->conf = conf;
    loop->cap = cap;
    loop->done = done;
    loop->output = output;
    LIST_INIT(&loop->running);
    taskq_init(&loop->inbox, ring, loop);
    loop->base = new_base();
    if (loop->base == NULL)
        goto fail;
    /* No timeout on the doorbell: an activation racing its timeout can be lost (libevent #1530). */
    loop->doorbell = event_new(loop->base, -1, 0, on_doorbell, loop);
    loop->drain_timer = evtimer_new(loop->base, on_drain_timeout, loop);
    loop->tick = event_new(loop->base, -1, EV_PERSIST, on_tick, loop);
    loop->fence_check = event_new(loop->base, -1, EV_PERSIST, on_fence_check, loop);
    if (loop->doorbell == NULL || loop->drain_timer == NULL || loop->tick == NULL ||
        loop->fence_check == NULL)
        goto fail;
    return loop;
fail:
    loop_free(loop);
    return NULL;
}

void loop_free(struct loop *loop)
{
    if (loop == NULL)
        return;
    if (loop->doorbell != NULL)
        event_free(loop->doorbell);
    if (loop->drain_timer != NULL)
        event_free(loop->drain_timer);
    if (loop->tick != NULL)
        event_free(loop->tick);
    if (loop->fence_check != NULL)
        event_free(loop->fence_check);
    if (loop->base != NULL)
        event_base_free(loop->base);
    taskq_destroy(&loop->inbox);
    free(loop->slots);
    free(loop);
}

static void *loop_main(void *arg)
{
    struct loop *loop = arg;
    int ms = health_period_ms();
    struct timeval period = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    health_beat(THREAD_LOOP);
    evtimer_add(loop->tick, &period);
    if (loop->conf->delivery == DELIVERY_AT_LEAST_ONCE) {
        /* A twentieth of the TTL: the fence comes within 5% of its time, well inside the 25%
         * margin (FENCE_PERCENT). */
        int fms = loop->conf->heartbeat_ttl_ms / 20;
        struct timeval every = {fms / 1000, (suseconds_t)(fms % 1000) * 1000};
        evtimer_add(loop->fence_check, &every);
    }

    if (event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0)
        log_err("loop: event loop failed");
    /* Every task has been handed on: nothing more will reach the reporter from here. */
    taskq_close(loop->done);
    return NULL;
}

int loop_start(struct loop *loop)
{
    if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0)
        return -1;
    pthread_setname_np(loop->thread, "qw-loop"); /* for top -H, ps -L, gdb */
    return 0;
}

void loop_stop(struct loop *loop, bool now)
{
    int mode = now ? STOP_NOW : STOP_DRAIN;
    int cur = atomic_load(&loop->stop_request);

    while (cur < mode && !atomic_compare_exchange_weak(&loop->stop_request, &cur, mode))
        ;
    ring(loop);
}

void loop_reconfigure(struct loop *loop, const struct config *conf)
{
    atomic_store(&loop->next_conf, conf);
    ring(loop);
}

void loop_join(struct loop *loop)
{
    pthread_join(loop->thread, NULL);
}
