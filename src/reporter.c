#include "reporter.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base64.h"
#include "capacity.h"
#include "clock.h"
#include "health.h"
#include "identity.h"
#include "outlog.h"
#include "scripts.h"
#include "log.h"
#include "redis.h"
#include "task.h"
#include "taskq.h"

/* At shutdown, how long to wait for Redis to record what is still held. */
#define FINAL_RECORD_US (10 * 1000000LL)

enum counter { C_PROCESSED, C_SUCCEEDED, C_FAILED, C_RETRIED, C_DEAD, C_REQUEUED, C_COUNT };

static const char *const counter_names[C_COUNT] = {"processed", "succeeded", "failed",
                                                   "retried",   "dead",      "requeued"};

/* The schedule is checked at least this often, for entries other workers left there. */
#define SCHEDULE_CHECK_US (2 * 1000000LL)
#define SCHEDULE_BATCH "1000"

#define LATE_STEP_US 100
#define LATE_BUCKETS 1000 /* up to 100 ms */

struct queue_count {
    const char *name;
    long long c[C_COUNT];
};

struct reporter {
    const struct config *conf;
    struct taskq inbox;
    struct outlog output;
    struct rconn rc;
    pthread_t thread;

    /* Logged, not yet recorded in Redis. */
    struct task *pending;
    struct task **pending_tailp;
    size_t npending;

    struct identity *id;
    struct capacity *cap;
    int64_t next_beat_us;

    struct queue_count *per_queue; /* scratch for one batch, by queue name */
    int nper_queue, per_queue_cap;
    const char **ack_argv;           /* HDEL <in-flight> <id>...: scratch for one batch */
    size_t ack_cap;
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
    rp->rng = (uint64_t)clock_real_us() | 1;
    if (asprintf(&rp->stats_key, "%s:stats", conf->prefix) < 0 ||
        asprintf(&rp->dead_key, "%s:dead", conf->prefix) < 0 ||
        asprintf(&rp->schedule_key, "%s:schedule", conf->prefix) < 0) {
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
    free(rp->per_queue);
    free(rp->ack_argv);
    free(rp->stats_key);
    free(rp->dead_key);
    free(rp->schedule_key);
    free(rp);
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
    if (t->outcome == OUTCOME_REQUEUED)
        return LOG_NOTICE;
    /* An invalid payload is the sender's mistake, not the worker's: warning, not err. */
    if (t->dead && t->outcome != OUTCOME_INVALID)
        return LOG_ERR;
    return LOG_WARNING;
}

static int max_attempts(const struct task *t)
{
    if (t->max_attempts > 0)
        return t->max_attempts;
    return t->handler->type == HANDLER_EXEC ? t->handler->max_attempts : 1;
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
                 max_attempts(t), (double)(t->due_ms - clock_real_us() / 1000) / 1000);
    else if (t->dead && t->outcome != OUTCOME_INVALID)
        snprintf(fate, sizeof(fate), "; attempt %d of %d, moved to %s", t->attempt,
                 max_attempts(t), rp->dead_key);
    if (t->outcome == OUTCOME_OK)
        log_fields(priority_of(t), f, n, "task %s done", t->label);
    else
        log_fields(priority_of(t), f, n, "task %s %s: %s%s", t->label, outcome_name(t->outcome),
                   task_reason(t), fate);
}

/* Exponential backoff with +-25% jitter: spreads retries of tasks that failed together. */
static int64_t backoff_ms(struct reporter *rp, const struct task *t)
{
    double base = t->handler->backoff * pow(2, t->attempt - 1);
    double jitter;

    if (base > t->handler->backoff_max)
        base = t->handler->backoff_max;
    rp->rng ^= rp->rng << 13;
    rp->rng ^= rp->rng >> 7;
    rp->rng ^= rp->rng << 17;
    jitter = 0.75 + 0.5 * (double)(rp->rng % 1000000) / 1e6;
    return (int64_t)(base * jitter * 1000);
}

/* Retry, dead letter, or the schedule for a delayed task. */
static void decide(struct reporter *rp, struct task *t)
{
    /* Rounded up, so that a task never runs before its delay is over. */
    int64_t now_ms = (clock_real_us() + 999) / 1000;

    switch (t->outcome) {
    case OUTCOME_FAILED:
    case OUTCOME_TIMEOUT:
        if (t->attempt < max_attempts(t))
            t->due_ms = now_ms + backoff_ms(rp, t);
        else
            t->dead = true;
        break;
    case OUTCOME_INVALID:
        t->dead = true;
        break;
    case OUTCOME_DELAYED:
        t->due_ms = now_ms + (int64_t)ceil(t->delay * 1000);
        break;
    case OUTCOME_OK:
    case OUTCOME_REQUEUED:
        break;
    }
}

/* The payload as a JSON field: text as "payload", anything else as "payload_base64". */
static void set_payload(json_t *o, const struct task *t)
{
    json_t *payload = json_stringn(t->payload, t->len);

    if (payload != NULL) {
        json_object_set_new(o, "payload", payload);
    } else {
        char *b64 = base64_encode(t->payload, t->len);
        json_object_set_new(o, "payload_base64", b64 ? json_string(b64) : json_null());
        free(b64);
    }
}

/* What goes back into a queue for another attempt: the payload with its attempt number and id,
 * marked ready so that a delay is not served twice (envelope.c unwraps it). */
static char *wrapped(const struct task *t, int attempt)
{
    json_t *o = json_object();
    char *s;

    set_payload(o, t);
    json_object_set_new(o, "attempt", json_integer(attempt));
    json_object_set_new(o, "id", json_string(t->label));
    json_object_set_new(o, "ready", json_true());
    if (t->recoveries > 0)
        json_object_set_new(o, "recoveries", json_integer(t->recoveries));
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* A schedule entry: {"queue", "task"}, moved back by the due script. */
static char *schedule_entry(const struct task *t)
{
    char *task = wrapped(t, t->outcome == OUTCOME_DELAYED ? t->attempt : t->attempt + 1), *s;
    json_t *o;

    if (task == NULL)
        return NULL;
    o = json_pack("{s:s, s:s}", "queue", t->queue->name, "task", task);
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    free(task);
    return s;
}

/* The dead-letter entry: JSON with the original payload (as "payload_base64" when it is not
 * UTF-8 text) and where, why and when it died. */
static char *dead_entry(const struct reporter *rp, const struct task *t)
{
    json_t *o = json_object();
    char *s;

    set_payload(o, t);
    json_object_set_new(o, "id", json_string(t->label));
    json_object_set_new(o, "queue", json_string(t->queue->name));
    json_object_set_new(o, "handler", json_string(t->handler->name));
    json_object_set_new(o, "reason", json_string(task_reason(t)));
    json_object_set_new(o, "attempts", json_integer(t->attempt));
    json_object_set_new(o, "time", json_integer(clock_real_us() / 1000000));
    json_object_set_new(o, "worker", json_string(rp->conf->worker_id));
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Counters of one queue for this batch; queues are few, a batch holds a handful of them. Names
 * outlive the batch (configurations are kept until exit). */
static long long *queue_counters(struct reporter *rp, const char *name)
{
    static long long sink[C_COUNT]; /* only if out of memory: the per-queue counts are lost */
    struct queue_count *grown;

    for (int i = 0; i < rp->nper_queue; i++)
        if (strcmp(rp->per_queue[i].name, name) == 0)
            return rp->per_queue[i].c;
    if (rp->nper_queue == rp->per_queue_cap) {
        int cap = rp->per_queue_cap ? rp->per_queue_cap * 2 : 4;
        grown = realloc(rp->per_queue, (size_t)cap * sizeof(*grown));
        if (grown == NULL)
            return sink;
        rp->per_queue = grown;
        rp->per_queue_cap = cap;
    }
    rp->per_queue[rp->nper_queue] = (struct queue_count){.name = name};
    return rp->per_queue[rp->nper_queue++].c;
}

static void count(struct reporter *rp, const struct task *t, long long *total)
{
    long long *q = queue_counters(rp, t->queue->name);
    int c[3], n = 0;

    switch (t->outcome) {
    case OUTCOME_OK:
        c[n++] = C_PROCESSED;
        c[n++] = C_SUCCEEDED;
        break;
    case OUTCOME_INVALID:
    case OUTCOME_FAILED:
    case OUTCOME_TIMEOUT:
        c[n++] = C_PROCESSED;
        c[n++] = C_FAILED;
        c[n++] = t->dead ? C_DEAD : C_RETRIED;
        break;
    case OUTCOME_REQUEUED:
        c[n++] = C_REQUEUED;
        break;
    case OUTCOME_DELAYED:
        break;
    }
    for (int i = 0; i < n; i++) {
        total[c[i]]++;
        q[c[i]]++;
    }
}

static void append(struct reporter *rp, int argc, const char **argv, const size_t *lens)
{
    redisAppendCommandArgv(rp->rc.c, argc, argv, lens);
}

static int append_hincrby(struct reporter *rp, const char *field, long long by)
{
    char num[24];
    const char *argv[] = {"HINCRBY", rp->stats_key, field, num};

    snprintf(num, sizeof(num), "%lld", by);
    append(rp, 4, argv, NULL);
    return 1;
}

/* at-least-once: one HDEL takes every task of the batch out of the in-flight hash, in the same
 * transaction as its requeue or dead letter: a task is always somewhere. Returns whether it
 * appended the command. */
static bool append_ack(struct reporter *rp)
{
    size_t n = 2;

    if (rp->conf->delivery != DELIVERY_AT_LEAST_ONCE)
        return false;
    if (rp->ack_cap < rp->npending + 2) {
        const char **a = realloc(rp->ack_argv, (rp->npending + 2) * sizeof(*a));
        if (a == NULL)
            return false; /* left in flight: requeued by the next start; at worst it runs twice */
        rp->ack_argv = a;
        rp->ack_cap = rp->npending + 2;
    }
    rp->ack_argv[0] = "HDEL";
    rp->ack_argv[1] = rp->id->inflight_key;
    for (struct task *t = rp->pending; t != NULL; t = t->next)
        rp->ack_argv[n++] = t->id;
    append(rp, (int)n, rp->ack_argv, NULL);
    return true;
}

/* Where a finished task goes besides the stats: the dead list, the schedule, or back to the
 * front of its queue. Returns how many commands it appended. */
static int append_task(struct reporter *rp, struct task *t)
{
    char *entry = NULL, score[24];

    if (t->dead) {
        const char *argv[] = {"LPUSH", rp->dead_key, entry = dead_entry(rp, t)};
        if (entry != NULL)
            append(rp, 3, argv, NULL);
    } else if (t->due_ms > 0) {
        const char *argv[] = {"ZADD", rp->schedule_key, score, entry = schedule_entry(t)};
        snprintf(score, sizeof(score), "%" PRId64, t->due_ms);
        if (entry != NULL)
            append(rp, 4, argv, NULL);
    } else if (t->outcome == OUTCOME_REQUEUED) {
        /* RPUSH: back at the end the queue is popped from, ahead of waiting tasks. */
        if ((t->attempt > 1 || t->recoveries > 0) && (entry = wrapped(t, t->attempt)) == NULL)
            goto oom;
        const char *argv[] = {"RPUSH", t->queue->name, entry ? entry : t->payload};
        size_t lens[] = {5, strlen(t->queue->name), entry ? strlen(entry) : t->len};
        append(rp, 3, argv, lens);
    } else {
        return 0;
    }
    if (entry == NULL && (t->dead || t->due_ms > 0))
        goto oom;
    free(entry);
    return 1;
oom:
    log_err("task %s: out of memory writing it back to redis; payload lost: %.*s", t->label,
            (int)(t->len > 200 ? 200 : t->len), t->payload);
    return 0;
}

/* Queues the batch's commands inside MULTI/EXEC; returns how many replies EXEC's precede. */
static int append_batch(struct reporter *rp)
{
    long long total[C_COUNT] = {0};
    const char *multi[] = {"MULTI"};
    int queued = 0;

    rp->nper_queue = 0;
    append(rp, 1, multi, NULL);
    if (append_ack(rp))
        queued++;
    for (struct task *t = rp->pending; t != NULL; t = t->next) {
        count(rp, t, total);
        queued += append_task(rp, t);
    }
    for (int c = 0; c < C_COUNT; c++)
        if (total[c] > 0)
            queued += append_hincrby(rp, counter_names[c], total[c]);
    for (int i = 0; i < rp->nper_queue; i++) {
        for (int c = 0; c < C_COUNT; c++) {
            char field[512];
            if (rp->per_queue[i].c[c] == 0)
                continue;
            snprintf(field, sizeof(field), "queue:%s:%s", rp->per_queue[i].name, counter_names[c]);
            queued += append_hincrby(rp, field, rp->per_queue[i].c[c]);
        }
    }
    return queued;
}

/* Records every pending task in one transaction. Returns 0, or -1 if the connection was lost
 * (the batch stays pending and is sent again whole). */
static int record_pending(struct reporter *rp)
{
    const char *exec[] = {"EXEC"};
    int queued = append_batch(rp);
    redisReply *reply;

    append(rp, 1, exec, NULL);
    for (int i = 0; i < queued + 2; i++) {
        reply = rconn_reply(&rp->rc);
        if (reply == NULL)
            return -1;
        if (reply->type == REDIS_REPLY_ERROR)
            log_err("reporter: redis refused a command of a batch: %s", reply->str);
        else if (i == queued + 1 && reply->type == REDIS_REPLY_ARRAY)
            for (size_t k = 0; k < reply->elements; k++)
                if (reply->element[k]->type == REDIS_REPLY_ERROR)
                    log_err("reporter: redis refused a command of a batch: %s",
                            reply->element[k]->str);
        freeReplyObject(reply);
    }
    return 0;
}

static void free_pending(struct reporter *rp, bool lost)
{
    struct task *t, *next;
    char shown[256];

    if (lost && rp->conf->delivery == DELIVERY_AT_LEAST_ONCE) {
        log_warn("%zu finished task(s) could not be recorded in redis; they stay in this "
                 "worker's in-flight hash and run again after its restart, or once another "
                 "worker finds its heartbeat expired",
                 rp->npending);
        lost = false;
    }
    for (t = rp->pending; t != NULL; t = next) {
        next = t->next;
        if (lost && (t->outcome == OUTCOME_REQUEUED || t->dead || t->due_ms > 0))
            log_err("task %s from queue %s could not be written back to redis and is lost: %s",
                    t->id, t->queue->name, payload_excerpt(t->payload, t->len, 200, shown,
                                                           sizeof(shown)));
        task_free(t);
    }
    rp->pending = NULL;
    rp->pending_tailp = &rp->pending;
    rp->npending = 0;
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
        decide(rp, t);
        if (t->outcome == OUTCOME_OK && t->sleep_us > 0)
            count_lateness(rp, t->finished_mono_us - t->started_mono_us - t->sleep_us);
        if (t->outcome == OUTCOME_OK)
            atomic_fetch_add(&rp->done_ok, 1);
        else if (t->outcome != OUTCOME_REQUEUED && t->outcome != OUTCOME_DELAYED)
            atomic_fetch_add(&rp->done_failed, 1);
        if (t->due_ms > 0) {
            int64_t due_us = clock_mono_us() + (t->due_ms - clock_real_us() / 1000) * 1000;
            if (due_us < rp->next_due_us)
                rp->next_due_us = due_us;
        }
        log_completion(rp, t);
        *rp->pending_tailp = t;
        rp->pending_tailp = &t->next;
        rp->npending++;
    }
}

/* Milliseconds the loop may wait for completions: until the next heartbeat or schedule check,
 * or the next connection attempt while something waits to be recorded. While Redis is away,
 * nothing that needs it can happen before the next connection attempt: waiting less would spin. */
static int wait_ms(struct reporter *rp)
{
    int64_t now = clock_mono_us();
    int64_t wake = rp->next_beat_us < rp->next_due_us ? rp->next_beat_us : rp->next_due_us;
    int64_t ms;

    if (rp->rc.c == NULL) {
        int64_t attempt = now + (int64_t)rconn_wait_ms(&rp->rc) * 1000;
        if (wake < attempt || rp->npending > 0)
            wake = attempt;
    } else if (rp->npending > 0) {
        wake = now;
    }
    ms = (wake - now + 999) / 1000;
    if (ms < 0)
        ms = 0;
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
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        const redisReply *moved = reply->element[0], *next = reply->element[1];
        if (moved->type == REDIS_REPLY_INTEGER && moved->integer == atoi(SCHEDULE_BATCH))
            rp->next_due_us = now; /* more are due */
        else if (next->type == REDIS_REPLY_STRING) {
            int64_t in_us = (int64_t)(strtod(next->str, NULL) * 1000) - clock_real_us();
            if (now + in_us < rp->next_due_us)
                rp->next_due_us = now + (in_us > 0 ? in_us : 0);
        }
    }
    freeReplyObject(reply);
}

static void beat_if_due(struct reporter *rp)
{
    if (clock_mono_us() < rp->next_beat_us || rconn_try(&rp->rc) < 0)
        return;
    if (identity_beat(rp->id, &rp->rc, capacity_used(rp->cap)) == 0)
        rp->next_beat_us = clock_mono_us() + (int64_t)identity_beat_interval_ms(rp->id) * 1000;
}

static void *reporter_main(void *arg)
{
    struct reporter *rp = arg;
    int64_t give_up_us = 0;
    bool closed = false;

    rp->next_beat_us = clock_mono_us() + (int64_t)identity_beat_interval_ms(rp->id) * 1000;
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
        if (rp->npending > 0 && rconn_try(&rp->rc) == 0 && record_pending(rp) == 0)
            free_pending(rp, false);
        beat_if_due(rp);
        move_due_if_due(rp);
        if (!closed)
            continue;
        if (rp->npending == 0)
            break;
        if (give_up_us == 0) {
            give_up_us = clock_mono_us() + FINAL_RECORD_US;
            log_warn("reporter: waiting up to %lld s for redis to record %zu finished task(s)",
                     FINAL_RECORD_US / 1000000, rp->npending);
        } else if (clock_mono_us() > give_up_us) {
            free_pending(rp, true);
            break;
        }
    }
    identity_release(rp->id, &rp->rc);
    rconn_close(&rp->rc);
    return NULL;
}

int reporter_start(struct reporter *rp)
{
    if (pthread_create(&rp->thread, NULL, reporter_main, rp) != 0)
        return -1;
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
