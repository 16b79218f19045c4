#include "reporter.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base64.h"
#include "beat.h"
#include "capacity.h"
#include "clock.h"
#include "health.h"
#include "held.h"
#include "identity.h"
#include "outlog.h"
#include "periodic.h"
#include "scripts.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "record.h"
#include "redis.h"
#include "reply.h"
#include "retry.h"
#include "task.h"
#include "taskq.h"
#include "wire.h"

/* At shutdown, how long to wait for Redis to record what is still held. */
#define FINAL_RECORD_US (10 * 1000000LL)

/* A batch Redis refused is sent again after this long, doubling. */
#define RECORD_BACKOFF_MIN_MS 50
#define RECORD_BACKOFF_MAX_MS 1000

/* The schedule is checked at least this often, for entries other workers left there. */
#define SCHEDULE_CHECK_US (2 * 1000000LL)
#define SCHEDULE_BATCH "1000"

/* Fields of the in-flight hash looked at per round trip when reconciling after a failover. */
#define RECONCILE_PAGE 1000

#define LATE_STEP_US 100
#define LATE_BUCKETS 1000 /* up to 100 ms */

struct reporter {
    const struct config *conf;
    struct taskq inbox;
    struct outlog output;
    struct rconn rc;
    pthread_t thread;

    /* Logged, not yet recorded in Redis: the batch being sent (frozen, with its tag), and
     * what came since. */
    struct task *sending;
    size_t nsending;
    struct record_call call;
    char tag[64];
    unsigned long long seq;
    struct task *pending;
    struct task **pending_tailp;
    size_t npending;
    int64_t next_record_us; /* monotonic: no attempt before (after a refusal) */
    int record_backoff_ms;
    struct rcond refusing;
    struct rcond due_refused;

    struct identity *id;
    struct capacity *cap;
    struct loop *loop; /* handed to the heartbeat thread, which counts its running tasks */
    struct beat beat;  /* the heartbeat's thread, started and stopped with this one */
    uint64_t master_gen; /* Sentinel: the master whose in-flight hash was last reconciled */

    struct periodic *periodic; /* schedules: ticks pushed from this thread */
    char *stats_key;
    char *dead_key;
    char *schedule_key;
    int64_t next_due_us; /* monotonic: when to move due schedule entries next */
    _Atomic long long done_ok, done_failed; /* for STATUS= */
    /* How late sleep timers fired, in LATE_STEP_US buckets (the last one: later still). */
    _Atomic unsigned long late[LATE_BUCKETS + 1];
    _Atomic int64_t late_max_us;
    uint64_t rng;
};

static void free_chain(struct reporter *rp, struct task *t);

struct reporter *reporter_new(const struct config *conf, struct identity *id, struct capacity *cap)
{
    struct reporter *rp = calloc(1, sizeof(*rp));

    if (rp == NULL)
        return NULL;
    rp->conf = conf;
    rp->id = id;
    rp->cap = cap;
    taskq_init(&rp->inbox, NULL, NULL);
    outlog_init(&rp->output, &rp->inbox);
    rconn_init(&rp->rc, &conf->redis, "reporter");
    rp->pending_tailp = &rp->pending;
    rp->record_backoff_ms = RECORD_BACKOFF_MIN_MS;
    rp->rng = (uint64_t)clock_real_us() | 1;
    if (asprintf(&rp->stats_key, "%s:stats", conf->prefix) < 0 ||
        asprintf(&rp->dead_key, "%s:dead", conf->prefix) < 0 ||
        asprintf(&rp->schedule_key, "%s:schedule", conf->prefix) < 0 ||
        (rp->periodic = periodic_new(conf)) == NULL) {
        reporter_free(rp);
        return NULL;
    }
    return rp;
}

void reporter_free(struct reporter *rp)
{
    if (rp == NULL)
        return;
    outlog_destroy(&rp->output);
    taskq_destroy(&rp->inbox);
    record_free(&rp->call);
    free_chain(rp, rp->sending);
    free_chain(rp, rp->pending);
    free(rp->stats_key);
    free(rp->dead_key);
    free(rp->schedule_key);
    periodic_free(rp->periodic);
    free(rp);
}

void reporter_reconfigure(struct reporter *rp, const struct config *conf)
{
    periodic_reconfigure(rp->periodic, conf);
}

void reporter_watch(struct reporter *rp, struct loop *loop)
{
    rp->loop = loop;
}

struct taskq *reporter_inbox(struct reporter *rp)
{
    return &rp->inbox;
}

struct outlog *reporter_outlog(struct reporter *rp)
{
    return &rp->output;
}

static int priority_of(const struct task *t)
{
    if (t->outcome == OUTCOME_OK || t->outcome == OUTCOME_DELAYED)
        return LOG_INFO;
    if (t->outcome == OUTCOME_REQUEUED || t->outcome == OUTCOME_DUPLICATE ||
        t->outcome == OUTCOME_CANCELLED)
        return LOG_NOTICE;
    /* An invalid payload is the sender's mistake, not the worker's: warning, not err. */
    if (t->dead && t->outcome != OUTCOME_INVALID)
        return LOG_ERR;
    return LOG_WARNING;
}

static void log_completion(struct reporter *rp, const struct task *t)
{
    char duration[24], attempt[16], started[24], status[16], fate[96] = "";
    int64_t ms = t->started_mono_us ? (t->finished_mono_us - t->started_mono_us) / 1000 : 0;
    struct log_field f[] = {
        {"QWORKER_TASK_ID", t->label, false},
        {"QWORKER_QUEUE", t->queue->name, true},
        {"QWORKER_HANDLER", t->handler->name, true},
        {"QWORKER_OUTCOME", outcome_name(t->outcome), true},
        {"QWORKER_DURATION_MS", duration, true},
        {"QWORKER_ATTEMPT", attempt, true},
        {"QWORKER_STARTED_USEC", started, false},
        {"QWORKER_EXIT_STATUS", status, true},
        {"QWORKER_REASON", task_reason(t), false},
    };
    int n = t->handler->type == HANDLER_EXEC && t->started_mono_us ? 8 : 7;

    if (t->outcome == OUTCOME_DELAYED) {
        log_info("task %s delayed: runs in %g s", t->label, t->delay);
        return;
    }
    if (!log_enabled(priority_of(t)))
        return; /* most completions at high rates: format nothing */
    snprintf(duration, sizeof(duration), "%" PRId64, ms);
    snprintf(attempt, sizeof(attempt), "%d", t->attempt);
    snprintf(started, sizeof(started), "%" PRId64, t->started_real_us);
    snprintf(status, sizeof(status), "%d", t->exit_status);
    if (t->reason != NULL)
        f[n++] = f[8];
    if (t->due_ms > 0)
        snprintf(fate, sizeof(fate), "; attempt %d of %d, next in %.1f s", t->attempt,
                 retry_max_attempts(t), (double)(t->due_ms * 1000 - clock_real_us()) / 1e6);
    else if (t->dead && t->outcome != OUTCOME_INVALID)
        snprintf(fate, sizeof(fate), "; attempt %d of %d, moved to %s", t->attempt,
                 retry_max_attempts(t), rp->dead_key);
    if (t->outcome == OUTCOME_OK)
        log_fields(priority_of(t), f, n, "task %s done", t->label);
    else
        log_fields(priority_of(t), f, n, "task %s %s: %s%s", t->label, outcome_name(t->outcome),
                   task_reason(t), fate);
}

/* xorshift64: the jitter only has to spread retries apart, not be unpredictable. */
static uint64_t draw(struct reporter *rp)
{
    rp->rng ^= rp->rng << 13;
    rp->rng ^= rp->rng >> 7;
    rp->rng ^= rp->rng << 17;
    return rp->rng;
}

/* The tag of the next batch: unique to this process and batch, the same on every resend. */
static void next_tag(struct reporter *rp)
{
    snprintf(rp->tag, sizeof(rp->tag), "%s:%llu", rp->id->token, ++rp->seq);
}

/* Freezes what is pending into the batch to send: it is sent unchanged until Redis takes it. */
static int freeze(struct reporter *rp)
{
    struct record_keys k = {
        .inflight = rp->id->inflight_key,
        .stats = rp->stats_key,
        .dead = rp->dead_key,
        .schedule = rp->schedule_key,
        .marker = rp->id->marker_key,
        .worker = rp->conf->worker_id,
        .acks = rp->conf->delivery == DELIVERY_AT_LEAST_ONCE,
    };

    next_tag(rp);
    if (record_build(&rp->call, &k, rp->tag, rp->pending, clock_real_us() / 1000000) < 0)
        return -1;
    rp->sending = rp->pending;
    rp->nsending = rp->npending;
    rp->pending = NULL;
    rp->pending_tailp = &rp->pending;
    rp->npending = 0;
    return 0;
}

static void free_chain(struct reporter *rp, struct task *t)
{
    size_t bytes = 0;

    for (struct task *next; t != NULL; t = next) {
        next = t->next;
        bytes += t->mem;
        task_free(t);
    }
    capacity_refund(rp->cap, bytes); /* one lock for the batch, not one per task */
}

/* Redis did not take the batch: it stays, and is sent again after a backoff; meanwhile the
 * consumer takes no new tasks (their completions could not be recorded either). */
static void refused(struct reporter *rp, const redisReply *reply, enum rclass cls)
{
    int prio = cls == RC_RETRY ? LOG_WARNING : LOG_ERR;

    rcond_begin(&rp->refusing, prio, reply_text(reply),
                "redis does not record finished tasks (%s; %zu waiting, nothing is lost: they "
                "are sent again, and no new task is taken until redis takes them)",
                rclass_name(cls), rp->nsending + rp->npending);
    redis_refusing_set(true);
    rp->next_record_us = clock_mono_us() + (int64_t)rp->record_backoff_ms * 1000;
    rp->record_backoff_ms = rp->record_backoff_ms * 2 > RECORD_BACKOFF_MAX_MS
                                ? RECORD_BACKOFF_MAX_MS
                                : rp->record_backoff_ms * 2;
}

/* Sends the frozen batch (freezing what is pending first if none is). 0 when Redis has
 * recorded it, -1 if it stays (lost connection, refusal). */
/* Counted (metrics) and logged once Redis holds the record, so that the counts agree with its
 * stats: a journal that is slow to take 500 lines (it blocks the writer) must not keep tasks
 * from being put back or acknowledged. */
static void log_completions(struct reporter *rp, const struct task *chain)
{
    metrics_tasks_begin();
    for (const struct task *t = chain; t != NULL; t = t->next)
        metrics_task(t);
    metrics_tasks_end();
    for (const struct task *t = chain; t != NULL; t = t->next)
        log_completion(rp, t);
}

static int record_pending(struct reporter *rp)
{
    redisReply *reply;
    enum rclass cls;

    if (rp->sending == NULL && freeze(rp) < 0) {
        rcond_begin(&rp->refusing, LOG_ERR, "out of memory", "cannot build the batch of %zu "
                    "finished task(s) to record", rp->npending);
        rp->next_record_us = clock_mono_us() + RECORD_BACKOFF_MAX_MS * 1000LL;
        return -1;
    }
    reply = script_run(&rp->rc, SCRIPT_RECORD, rp->call.nkeys, rp->call.keys, NULL,
                       rp->call.nargs, rp->call.args, rp->call.arglens);
    cls = reply_class(reply, REDIS_REPLY_ARRAY);
    if (cls == RC_OK && !wire_record_reply(reply))
        cls = RC_FAILED;
    if (cls == RC_RECONNECT)
        return -1; /* sent again, with the same tag, once connected */
    if (cls != RC_OK) {
        refused(rp, reply, cls);
        freeReplyObject(reply);
        return -1;
    }
    if (reply->element[1]->integer > 0)
        log_notice("%lld finished task(s) not recorded: they are no longer in this worker's "
                   "in-flight hash (another worker put them back after this one missed its "
                   "heartbeats, or the hash was deleted), and run again from there",
                   reply->element[1]->integer);
    freeReplyObject(reply);
    log_completions(rp, rp->sending);
    rcond_end(&rp->refusing, "redis records finished tasks again");
    redis_refusing_set(false);
    rp->record_backoff_ms = RECORD_BACKOFF_MIN_MS;
    record_free(&rp->call);
    free_chain(rp, rp->sending);
    rp->sending = NULL;
    rp->nsending = 0;
    return 0;
}

/* At shutdown with Redis away: what was never recorded. */
static void give_up(struct reporter *rp)
{
    size_t n = rp->nsending + rp->npending;
    char shown[256];

    log_completions(rp, rp->sending);
    log_completions(rp, rp->pending);
    if (rp->conf->delivery == DELIVERY_AT_LEAST_ONCE) {
        log_warn("%zu finished task(s) could not be recorded in redis; they stay in this "
                 "worker's in-flight hash and run again after its restart, or once another "
                 "worker finds its heartbeat expired",
                 n);
    } else {
        for (struct task *l = rp->sending; l != NULL; l = l == rp->sending ? rp->pending : NULL)
            for (struct task *t = l; t != NULL; t = t->next)
                if (t->outcome == OUTCOME_REQUEUED || t->dead || t->due_ms > 0)
                    log_err("task %s from queue %s could not be written back to redis and is "
                            "lost: %s",
                            t->id, t->queue->name,
                            payload_excerpt(t->payload, t->len, 200, shown, sizeof(shown)));
    }
    record_free(&rp->call);
    free_chain(rp, rp->sending);
    free_chain(rp, rp->pending);
    rp->sending = rp->pending = NULL;
    rp->pending_tailp = &rp->pending;
    rp->nsending = rp->npending = 0;
}

static void count_lateness(struct reporter *rp, int64_t late_us)
{
    int64_t b = late_us < 0 ? 0 : late_us / LATE_STEP_US;

    atomic_fetch_add_explicit(&rp->late[b > LATE_BUCKETS ? LATE_BUCKETS : b], 1,
                              memory_order_relaxed);
    if (late_us > atomic_load_explicit(&rp->late_max_us, memory_order_relaxed))
        atomic_store_explicit(&rp->late_max_us, late_us, memory_order_relaxed);
}

static void take(struct reporter *rp, struct task *batch)
{
    for (struct task *t = batch; t != NULL; t = t->next) {
        retry_decide(t, clock_real_us(), draw(rp));
        if (t->outcome == OUTCOME_OK && t->sleep_us > 0)
            count_lateness(rp, t->finished_mono_us - t->started_mono_us - t->sleep_us);
        if (t->outcome == OUTCOME_OK)
            atomic_fetch_add(&rp->done_ok, 1);
        else if (t->outcome == OUTCOME_FAILED || t->outcome == OUTCOME_TIMEOUT ||
                 t->outcome == OUTCOME_INVALID)
            atomic_fetch_add(&rp->done_failed, 1);
        if (t->due_ms > 0) {
            int64_t due_us = clock_mono_us() + (t->due_ms - clock_real_us() / 1000) * 1000;
            if (due_us < rp->next_due_us)
                rp->next_due_us = due_us;
        }
        *rp->pending_tailp = t;
        rp->pending_tailp = &t->next;
        rp->npending++;
    }
}

/* Milliseconds the loop may wait for completions: until the next schedule check,
 * or the next connection attempt while something waits to be recorded. While Redis is away,
 * nothing that needs it can happen before the next connection attempt: waiting less would spin. */
static int wait_ms(struct reporter *rp)
{
    int64_t now = clock_mono_us();
    int64_t wake = rp->next_due_us;
    int64_t ms;

    bool waiting = rp->npending > 0 || rp->sending != NULL;

    if (rp->rc.c == NULL) {
        int64_t attempt = now + (int64_t)rconn_wait_ms(&rp->rc) * 1000;
        if (wake < attempt || waiting)
            wake = attempt;
    } else if (waiting) {
        wake = rp->next_record_us > now ? rp->next_record_us : now;
    }
    ms = (wake - now + 999) / 1000;
    if (ms < 0)
        ms = 0;
    if (rp->rc.c != NULL && periodic_wait_ms(rp->periodic) < ms)
        ms = periodic_wait_ms(rp->periodic);
    return ms < health_period_ms() ? (int)ms : health_period_ms();
}

/* Moves due entries of the schedule (retries, delayed tasks: ours or any worker's) back to
 * their queues, and learns when the next one is due. */
static void move_due_if_due(struct reporter *rp)
{
    int64_t now = clock_mono_us();
    char now_ms[24];
    const char *keys[] = {rp->schedule_key, rp->dead_key};
    const char *args[] = {now_ms, SCHEDULE_BATCH};
    redisReply *reply;

    if (now < rp->next_due_us || rconn_try(&rp->rc) < 0)
        return;
    snprintf(now_ms, sizeof(now_ms), "%" PRId64, clock_real_us() / 1000);
    reply = script_run(&rp->rc, SCRIPT_DUE, 2, keys, NULL, 2, args, NULL);
    if (reply == NULL)
        return;
    rp->next_due_us = now + SCHEDULE_CHECK_US;
    if (reply_class(reply, REDIS_REPLY_ARRAY) != RC_OK || !wire_due_reply(reply)) {
        rcond_begin(&rp->due_refused, LOG_ERR, reply_text(reply),
                    "cannot move due retries and delayed tasks from %s back to their queues "
                    "(they wait there; nothing is lost)",
                    rp->schedule_key);
    } else {
        rcond_end(&rp->due_refused, "due retries and delayed tasks move from %s again",
                  rp->schedule_key);
        const redisReply *moved = reply->element[0], *next = reply->element[1];
        if (moved->integer == atoi(SCHEDULE_BATCH))
            rp->next_due_us = now; /* more are due */
        else if (next->type == REDIS_REPLY_STRING) {
            int64_t in_us = (int64_t)(strtod(next->str, NULL) * 1000) - clock_real_us();
            if (now + in_us < rp->next_due_us)
                rp->next_due_us = now + (in_us > 0 ? in_us : 0);
        }
    }
    freeReplyObject(reply);
}

/* Puts back, in one rescue call, the ids among keys (an HSCAN page: field, value, ...) that
 * this worker does not hold: their completion (or retry, or requeue) was recorded on the old
 * master and never reached the replica that took over. They run again: at-least-once. The
 * number put back, or -1. */
static long long put_back_unheld(struct reporter *rp, const redisReply *page)
{
    const char *keys[] = {rp->id->inflight_key, rp->dead_key};
    const char *args[RECONCILE_PAGE];
    redisReply *reply;
    long long n = 0, put = 0;

    for (size_t i = 0; i + 1 < page->elements && n < RECONCILE_PAGE; i += 2) {
        const redisReply *e = page->element[i];
        if (e->type == REDIS_REPLY_STRING && !held_has(e->str))
            args[n++] = e->str;
    }
    if (n == 0)
        return 0;
    reply = script_run(&rp->rc, SCRIPT_RESCUE, 2, keys, NULL, (int)n, args, NULL);
    if (reply == NULL)
        return -1;
    if (reply_class(reply, REDIS_REPLY_INTEGER) != RC_OK || !wire_count(reply))
        put = -1;
    else
        put = reply->integer;
    freeReplyObject(reply);
    return put;
}

/* After a failover (Sentinel), and at the first connection (a failover may have come between
 * the start-up's put-back and it): reconciles this worker's in-flight hash with what it holds,
 * a page at a time, once per master. */
static void reconcile_if_moved(struct reporter *rp)
{
    char cursor[32] = "0", count[16];
    long long total = 0;

    if (rp->rc.c == NULL || rp->rc.gen == rp->master_gen)
        return;
    snprintf(count, sizeof(count), "%d", RECONCILE_PAGE / 2);
    do {
        const char *argv[] = {"HSCAN", rp->id->inflight_key, cursor, "COUNT", count};
        redisReply *reply = rconn_command(&rp->rc, 5, argv, NULL);
        long long put;
        if (reply == NULL)
            return;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[0]->len >= sizeof(cursor) ||
            reply->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(reply);
            return; /* tried again at the next round */
        }
        snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
        put = put_back_unheld(rp, reply->element[1]);
        freeReplyObject(reply);
        if (put < 0)
            return;
        total += put;
    } while (strcmp(cursor, "0") != 0);
    if (total > 0)
        log_warn("%lld task(s) in this worker's in-flight hash on the new master had ended here, "
                 "but their record reached only the old master (replication is asynchronous): "
                 "put back at the front of their queues, they run again",
                 total);
    rp->master_gen = rp->rc.gen;
}

static void *reporter_main(void *arg)
{
    struct reporter *rp = arg;
    int64_t give_up_us = 0;
    bool closed = false;

    for (;;) {
        int timeout = wait_ms(rp);
        struct task *batch;

        health_beat(THREAD_REPORTER);
        if (closed) {
            /* Nothing more can arrive: just wait for the next connection attempt. */
            struct timespec ts = {timeout / 1000, (long)(timeout % 1000) * 1000000};
            nanosleep(&ts, NULL);
            batch = NULL;
        } else if (timeout == 0) {
            batch = taskq_take_all(&rp->inbox, &closed);
        } else {
            batch = taskq_wait_all(&rp->inbox, timeout, &closed);
        }
        outlog_flush(&rp->output); /* a task's output before its completion line */
        take(rp, batch);
        if (rp->conf->redis.sentinel.master != NULL && rp->conf->delivery == DELIVERY_AT_LEAST_ONCE &&
            rconn_try(&rp->rc) == 0)
            reconcile_if_moved(rp);
        while ((rp->npending > 0 || rp->sending != NULL) &&
               clock_mono_us() >= rp->next_record_us && rconn_try(&rp->rc) == 0 &&
               record_pending(rp) == 0)
            ; /* a batch sent, then what came while it was refused */
        move_due_if_due(rp);
        if (!closed && periodic_wait_ms(rp->periodic) == 0 && rconn_try(&rp->rc) == 0)
            periodic_run(rp->periodic, &rp->rc);
        if (!closed)
            continue;
        if (rp->npending == 0 && rp->sending == NULL)
            break;
        if (give_up_us == 0) {
            give_up_us = clock_mono_us() + FINAL_RECORD_US;
            log_warn("reporter: waiting up to %lld s for redis to record %zu finished task(s)",
                     FINAL_RECORD_US / 1000000, rp->npending + rp->nsending);
        } else if (clock_mono_us() > give_up_us) {
            give_up(rp);
            break;
        }
    }
    beat_stop(&rp->beat); /* the id is released only once nothing refreshes it */
    identity_release(rp->id, &rp->rc);
    rconn_close(&rp->rc);
    return NULL;
}

int reporter_start(struct reporter *rp)
{
    if (beat_start(&rp->beat, rp->conf, rp->id, rp->loop) < 0)
        return -1;
    if (pthread_create(&rp->thread, NULL, reporter_main, rp) != 0) {
        beat_stop(&rp->beat);
        return -1;
    }
    pthread_setname_np(rp->thread, "qw-reporter"); /* for top -H, ps -L, gdb */
    return 0;
}

void reporter_join(struct reporter *rp)
{
    pthread_join(rp->thread, NULL);
}

int reporter_tryjoin(struct reporter *rp)
{
    return pthread_tryjoin_np(rp->thread, NULL) == 0 ? 0 : -1;
}

void reporter_counts(struct reporter *rp, long long *ok, long long *failed)
{
    *ok = atomic_load(&rp->done_ok);
    *failed = atomic_load(&rp->done_failed);
}

void reporter_lateness(struct reporter *rp, struct lateness *out)
{
    unsigned long counts[LATE_BUCKETS + 1], n = 0, seen = 0;

    for (int i = 0; i <= LATE_BUCKETS; i++) {
        counts[i] = atomic_load_explicit(&rp->late[i], memory_order_relaxed);
        n += counts[i];
    }
    out->count = n;
    out->p50_us = out->p99_us = 0;
    out->max_us = atomic_load_explicit(&rp->late_max_us, memory_order_relaxed);
    for (int i = 0; i <= LATE_BUCKETS && n > 0; i++) {
        seen += counts[i];
        /* The upper edge of the bucket: never better than it was. */
        if (out->p50_us == 0 && seen * 2 >= n)
            out->p50_us = (int64_t)(i + 1) * LATE_STEP_US;
        if (seen * 100 >= n * 99) {
            out->p99_us = (int64_t)(i + 1) * LATE_STEP_US;
            break;
        }
    }
}
