#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>


/* Seconds. Tasks run from a millisecond (a no-op) to hours (a batch job). */
static const double task_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300,
                                     1800};
#define TASK_BOUNDS (sizeof(task_bounds) / sizeof(task_bounds[0]))
/* A fetch on loopback takes 0.1-1 ms; a busy or remote Redis, more. */
static const double fetch_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define FETCH_BOUNDS (sizeof(fetch_bounds) / sizeof(fetch_bounds[0]))

/* One (queue, handler) pair. Names come from the configuration, never from a payload, so the
 * number of series is bounded by what the operator wrote (reloads included). */
struct series {
    char *queue, *handler;
    uint64_t outcomes[NOUTCOMES];
    uint64_t buckets[TASK_BOUNDS + 1]; /* the last one: over every bound */
    double sum;
    uint64_t count;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct series *all;
static size_t nall, cap_all, last;

static _Atomic uint64_t fetch_buckets[FETCH_BOUNDS + 1];
static _Atomic uint64_t fetch_sum_us;

void metrics_free(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nall; i++) {
        free(all[i].queue);
        free(all[i].handler);
    }
    free(all);
    all = NULL;
    nall = cap_all = last = 0;
    pthread_mutex_unlock(&mu);
}

static struct series *find(const char *queue, const char *handler)
{
    struct series *s;

    if (last < nall && strcmp(all[last].queue, queue) == 0 &&
        strcmp(all[last].handler, handler) == 0)
        return &all[last];
    for (size_t i = 0; i < nall; i++)
        if (strcmp(all[i].queue, queue) == 0 && strcmp(all[i].handler, handler) == 0)
            return &all[last = i];
    if (nall == cap_all) {
        size_t n = cap_all ? cap_all * 2 : 8;
        struct series *grown = realloc(all, n * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        all = grown;
        cap_all = n;
    }
    s = &all[nall];
    memset(s, 0, sizeof(*s));
    s->queue = strdup(queue);
    s->handler = strdup(handler);
    if (s->queue == NULL || s->handler == NULL) {
        free(s->queue);
        free(s->handler);
        return NULL;
    }
    last = nall++;
    return s;
}

static size_t bucket_of(const double *bounds, size_t n, double v)
{
    size_t i = 0;

    while (i < n && v > bounds[i])
        i++;
    return i;
}

void metrics_tasks_begin(void)
{
    pthread_mutex_lock(&mu);
}

void metrics_tasks_end(void)
{
    pthread_mutex_unlock(&mu);
}

void metrics_task(const struct task *t)
{
    struct series *s = find(t->queue->name, t->handler->name);
    double seconds;

    if (s == NULL)
        return; /* out of memory: a count is lost, never a task */
    s->outcomes[t->outcome]++;
    /* Durations of what ran: not of a task refused, delayed or put back before it started. */
    if (t->started_mono_us == 0 || (t->outcome != OUTCOME_OK && t->outcome != OUTCOME_FAILED &&
                                    t->outcome != OUTCOME_TIMEOUT))
        return;
    seconds = (double)(t->finished_mono_us - t->started_mono_us) / 1e6;
    s->buckets[bucket_of(task_bounds, TASK_BOUNDS, seconds)]++;
    s->sum += seconds;
    s->count++;
}

void metrics_fetch_us(int64_t us)
{
    size_t b = bucket_of(fetch_bounds, FETCH_BOUNDS, (double)us / 1e6);

    atomic_fetch_add_explicit(&fetch_buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&fetch_sum_us, (uint64_t)(us > 0 ? us : 0), memory_order_relaxed);
}

int metrics_label(struct evbuffer *out, const char *value)
{
    int rc = 0;

    for (const char *p = value; *p != '\0' && rc == 0; p++) {
        if (*p == '\\')
            rc = evbuffer_add(out, "\\\\", 2);
        else if (*p == '"')
            rc = evbuffer_add(out, "\\\"", 2);
        else if (*p == '\n')
            rc = evbuffer_add(out, "\\n", 2);
        else
            rc = evbuffer_add(out, p, 1);
    }
    return rc;
}

static int pair(struct evbuffer *out, const struct series *s)
{
    return evbuffer_add_printf(out, "queue=\"") < 0 || metrics_label(out, s->queue) < 0 ||
                   evbuffer_add_printf(out, "\",handler=\"") < 0 ||
                   metrics_label(out, s->handler) < 0 || evbuffer_add(out, "\"", 1) < 0
               ? -1
               : 0;
}

/* Cumulative buckets, +Inf, sum and count of one histogram. */
static int histogram(struct evbuffer *out, const char *name, const struct series *s,
                     const double *bounds, size_t n, const uint64_t *buckets, double sum,
                     uint64_t count)
{
    uint64_t running = 0;

    for (size_t i = 0; i <= n; i++) {
        running += buckets[i];
        if (evbuffer_add_printf(out, "%s_bucket{", name) < 0 || (s && pair(out, s) < 0))
            return -1;
        if (i < n && evbuffer_add_printf(out, "%sle=\"%g\"} %" PRIu64 "\n", s ? "," : "",
                                         bounds[i], running) < 0)
            return -1;
        if (i == n &&
            evbuffer_add_printf(out, "%sle=\"+Inf\"} %" PRIu64 "\n", s ? "," : "", running) < 0)
            return -1;
    }
    if (evbuffer_add_printf(out, "%s_sum", name) < 0 ||
        (s && (evbuffer_add(out, "{", 1) < 0 || pair(out, s) < 0 || evbuffer_add(out, "}", 1) < 0)))
        return -1;
    if (evbuffer_add_printf(out, " %.6f\n%s_count", sum, name) < 0 ||
        (s && (evbuffer_add(out, "{", 1) < 0 || pair(out, s) < 0 || evbuffer_add(out, "}", 1) < 0)))
        return -1;
    return evbuffer_add_printf(out, " %" PRIu64 "\n", count) < 0 ? -1 : 0;
}

static int render_tasks(struct evbuffer *out)
{
    if (evbuffer_add_printf(out, "# HELP qworker_tasks_total Tasks finished since start, as "
                                 "recorded in Redis, by queue, handler and outcome.\n"
                                 "# TYPE qworker_tasks_total counter\n") < 0)
        return -1;
    for (size_t i = 0; i < nall; i++)
        for (int o = 0; o < NOUTCOMES; o++)
            if (evbuffer_add_printf(out, "qworker_tasks_total{") < 0 || pair(out, &all[i]) < 0 ||
                evbuffer_add_printf(out, ",outcome=\"%s\"} %" PRIu64 "\n",
                                    outcome_name((enum outcome)o), all[i].outcomes[o]) < 0)
                return -1;
    if (evbuffer_add_printf(out, "# HELP qworker_task_duration_seconds How long tasks ran "
                                 "(ok, failed, timeout), by queue and handler.\n"
                                 "# TYPE qworker_task_duration_seconds histogram\n") < 0)
        return -1;
    for (size_t i = 0; i < nall; i++)
        if (histogram(out, "qworker_task_duration_seconds", &all[i], task_bounds, TASK_BOUNDS,
                      all[i].buckets, all[i].sum, all[i].count) < 0)
            return -1;
    return 0;
}

static int render_fetch(struct evbuffer *out)
{
    uint64_t buckets[FETCH_BOUNDS + 1], count = 0;

    /* The count is the buckets' sum: read apart, the two could disagree mid-scrape. */
    for (size_t i = 0; i <= FETCH_BOUNDS; i++) {
        buckets[i] = atomic_load_explicit(&fetch_buckets[i], memory_order_relaxed);
        count += buckets[i];
    }
    if (evbuffer_add_printf(out, "# HELP qworker_fetch_duration_seconds Round trips of the fetch "
                                 "script (a blocked wait for work is not one).\n"
                                 "# TYPE qworker_fetch_duration_seconds histogram\n") < 0)
        return -1;
    return histogram(out, "qworker_fetch_duration_seconds", NULL, fetch_bounds, FETCH_BOUNDS,
                     buckets,
                     (double)atomic_load_explicit(&fetch_sum_us, memory_order_relaxed) / 1e6,
                     count);
}

int metrics_render(struct evbuffer *out)
{
    int rc;

    pthread_mutex_lock(&mu);
    rc = render_tasks(out);
    pthread_mutex_unlock(&mu);
    return rc < 0 ? -1 : render_fetch(out);
}
