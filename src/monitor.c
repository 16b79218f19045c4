#include "monitor.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "capacity.h"
#include "clock.h"
#include "daemon.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "redis.h"
#include "reporter.h"
#include "status_page.h"

#ifndef QWORKER_VERSION
#define QWORKER_VERSION "0.0.0"
#endif

#define SAMPLE_EVERY_US 1000000

/* What Redis said at the last sample; -1: not known (no answer, or not the expected reply). */
struct sample {
    const struct config *conf; /* whose queues */
    int64_t at_us;
    long long *queue_len;
    long long *queue_paused; /* 1, 0, -1 */
    long long scheduled, dead;
};

struct monitor {
    _Atomic(const struct config *) conf;
    struct daemon *d; /* read only through what is safe from any thread (counts, flags) */
    int64_t started_real_us;
    struct event_base *base;
    struct event *stop;
    struct http *http;
    pthread_t thread;
    bool running;
    struct rconn rc; /* monitor thread only */
    struct sample last;
    struct evbuffer *page; /* the status page, made at most once a second */
    int64_t page_at_us;
};

static int page_metrics(void *arg, struct evbuffer *body, const char **type);
static int page_healthz(void *arg, struct evbuffer *body, const char **type);
static int page_status(void *arg, struct evbuffer *body, const char **type);

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

struct monitor *monitor_new(const struct config *conf, char *err, size_t errlen)
{
    struct monitor *m = calloc(1, sizeof(*m));

    if (m == NULL || (m->base = event_base_new()) == NULL || (m->page = evbuffer_new()) == NULL ||
        (m->stop = event_new(m->base, -1, 0, on_stop, m->base)) == NULL) {
        snprintf(err, errlen, "out of memory or no event backend");
        monitor_free(m);
        return NULL;
    }
    atomic_init(&m->conf, conf);
    m->started_real_us = clock_real_us();
    m->last.scheduled = m->last.dead = -1;
    rconn_init(&m->rc, &conf->redis, "monitor");
    m->rc.observer = true;
    m->http = http_new(m->base, conf->metrics_addr, conf->metrics_port, err, errlen);
    if (m->http == NULL || http_route(m->http, "/metrics", page_metrics, m) < 0 ||
        http_route(m->http, "/healthz", page_healthz, m) < 0 ||
        http_route(m->http, "/", page_status, m) < 0) {
        monitor_free(m);
        return NULL;
    }
    return m;
}

static void *run(void *arg)
{
    struct monitor *m = arg;

    event_base_dispatch(m->base);
    return NULL;
}

int monitor_start(struct monitor *m, struct daemon *d)
{
    int rc;

    m->d = d;
    rc = pthread_create(&m->thread, NULL, run, m);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    m->running = true;
    return 0;
}

void monitor_reconfigure(struct monitor *m, const struct config *conf)
{
    atomic_store(&m->conf, conf);
}

void monitor_stop(struct monitor *m)
{
    if (m == NULL || !m->running)
        return;
    event_active(m->stop, 0, 0); /* thread-safe: the base was made after evthread_use_pthreads */
    pthread_join(m->thread, NULL);
    m->running = false;
}

void monitor_free(struct monitor *m)
{
    if (m == NULL)
        return;
    monitor_stop(m);
    http_free(m->http);
    rconn_close(&m->rc);
    free(m->last.queue_len);
    free(m->last.queue_paused);
    if (m->page != NULL)
        evbuffer_free(m->page);
    if (m->stop != NULL)
        event_free(m->stop);
    if (m->base != NULL)
        event_base_free(m->base);
    free(m);
}

static long long integer_reply(struct monitor *m, bool *lost)
{
    redisReply *r;
    long long v = -1;

    if (*lost)
        return -1;
    r = rconn_reply(&m->rc);
    if (r == NULL) {
        *lost = true;
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0)
        v = r->integer;
    freeReplyObject(r);
    return v;
}

/* One pipelined round trip for every length shown, at most once a second: scrapes, however
 * frequent, cost Redis no more than that. */
static void sample(struct monitor *m, const struct config *conf)
{
    struct sample *s = &m->last;
    int64_t now = clock_mono_us();
    bool lost = false;
    long long *lens, *paused;

    if (s->conf == conf && now - s->at_us < SAMPLE_EVERY_US)
        return;
    lens = realloc(s->queue_len, (size_t)conf->nqueues * sizeof(*lens));
    if (lens == NULL)
        return;
    s->queue_len = lens;
    paused = realloc(s->queue_paused, (size_t)conf->nqueues * sizeof(*paused));
    if (paused == NULL)
        return;
    s->queue_paused = paused;
    s->conf = conf;
    s->at_us = now;
    for (int i = 0; i < conf->nqueues; i++)
        lens[i] = paused[i] = -1;
    s->scheduled = s->dead = -1;
    if (rconn_try(&m->rc) < 0)
        return;
    for (int i = 0; i < conf->nqueues; i++) {
        redisAppendCommand(m->rc.c, "LLEN %s", conf->queues[i].name);
        redisAppendCommand(m->rc.c, "SISMEMBER %s:paused %s", conf->prefix, conf->queues[i].name);
    }
    redisAppendCommand(m->rc.c, "ZCARD %s:schedule", conf->prefix);
    redisAppendCommand(m->rc.c, "LLEN %s:dead", conf->prefix);
    for (int i = 0; i < conf->nqueues; i++) {
        lens[i] = integer_reply(m, &lost);
        paused[i] = integer_reply(m, &lost);
    }
    s->scheduled = integer_reply(m, &lost);
    s->dead = integer_reply(m, &lost);
}

static int gauge(struct evbuffer *out, const char *name, const char *help, long long value)
{
    return evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name,
                               name, value) < 0
               ? -1
               : 0;
}

/* One series per queue whose value is known: unknown is absent, never 0. */
static int queue_gauge(struct evbuffer *out, const char *name, const char *help,
                       const struct config *conf, const long long *values)
{
    if (evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name) < 0)
        return -1;
    for (int i = 0; i < conf->nqueues; i++) {
        if (values[i] < 0)
            continue;
        if (evbuffer_add_printf(out, "%s{queue=\"", name) < 0 ||
            metrics_label(out, conf->queues[i].name) < 0 ||
            evbuffer_add_printf(out, "\"} %lld\n", values[i]) < 0)
            return -1;
    }
    return 0;
}

static int render_redis(struct evbuffer *out, const struct sample *s, const struct config *conf)
{
    if (s->conf != conf)
        return 0;
    if (queue_gauge(out, "qworker_queue_length",
                    "Tasks waiting in each queue (LLEN, sampled at most once a second).", conf,
                    s->queue_len) < 0 ||
        queue_gauge(out, "qworker_queue_paused",
                    "1 while the queue is paused for every worker (qworkerctl pause).", conf,
                    s->queue_paused) < 0)
        return -1;
    if (s->scheduled >= 0 &&
        gauge(out, "qworker_scheduled_tasks", "Retries and delayed tasks waiting in the schedule.",
              s->scheduled) < 0)
        return -1;
    if (s->dead >= 0 &&
        gauge(out, "qworker_dead_tasks", "Tasks in the dead-letter list.", s->dead) < 0)
        return -1;
    return 0;
}

/* The standard process_* series, from /proc/self (readable under ProcSubset=pid). */
static int render_process(struct evbuffer *out, const struct monitor *m)
{
    char buf[1024], *p;
    unsigned long long utime = 0, stime = 0, vsize = 0;
    long long rss = 0, fds = -1;
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    struct rlimit nofile;
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    DIR *dir;

    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    /* After the command name, which may hold spaces: state is field 3, utime 14, vsize 23. */
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                                   "%*d %*d %*d %*d %*d %*d %*u %llu %lld",
                            &utime, &stime, &vsize, &rss) != 4)
        return evbuffer_add_printf(out, "# /proc/self/stat unreadable\n") < 0 ? -1 : 0;
    dir = opendir("/proc/self/fd");
    if (dir != NULL) {
        /* cppcheck-suppress readdirCalled ; this thread's own stream (readdir_r is deprecated) */
        for (fds = 0; readdir(dir) != NULL;)
            fds++;
        fds -= 3; /* ".", ".." and the directory's own descriptor */
        closedir(dir);
    }
    if (evbuffer_add_printf(out, "# HELP process_cpu_seconds_total User and system CPU time.\n"
                                 "# TYPE process_cpu_seconds_total counter\n"
                                 "process_cpu_seconds_total %.2f\n",
                            (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100)) < 0 ||
        gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
              rss * page) < 0 ||
        gauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
              (long long)vsize) < 0 ||
        (fds >= 0 && gauge(out, "process_open_fds", "Open file descriptors.", fds) < 0) ||
        evbuffer_add_printf(out, "# HELP process_start_time_seconds Start time since the epoch.\n"
                                 "# TYPE process_start_time_seconds gauge\n"
                                 "process_start_time_seconds %.3f\n",
                            (double)m->started_real_us / 1e6) < 0)
        return -1;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
        gauge(out, "process_max_fds", "The most file descriptors it may open.",
              (long long)nofile.rlim_cur) < 0)
        return -1;
    return 0;
}

static int page_metrics(void *arg, struct evbuffer *body, const char **type)
{
    struct monitor *m = arg;
    const struct config *conf = atomic_load(&m->conf);
    size_t running, waiting;

    *type = "text/plain; version=0.0.4; charset=utf-8";
    sample(m, conf);
    if (m->last.conf != conf) /* out of memory for the new queues: nothing of the old ones */
        m->last.conf = NULL;
    loop_counts(m->d->loop, &running, &waiting);
    if (evbuffer_add_printf(body, "# HELP qworker_build_info The version running.\n"
                                          "# TYPE qworker_build_info gauge\n"
                                          "qworker_build_info{version=\"%s\"} 1\n",
                            QWORKER_VERSION) < 0 ||
        gauge(body, "qworker_concurrency", "Tasks this worker may run at once.",
              conf->concurrency) < 0 ||
        gauge(body, "qworker_tasks_in_flight", "Tasks running now.", (long long)running) < 0 ||
        gauge(body, "qworker_tasks_waiting",
              "Tasks held waiting under their handler's concurrency.", (long long)waiting) < 0 ||
        render_redis(body, &m->last, conf) < 0 ||
        gauge(body, "qworker_redis_up", "1 while every connection to Redis works.",
              redis_outage() ? 0 : 1) < 0 ||
        evbuffer_add_printf(body, "# HELP qworker_redis_reconnects_total Connections to Redis "
                                  "made again after one was lost.\n"
                                  "# TYPE qworker_redis_reconnects_total counter\n"
                                  "qworker_redis_reconnects_total %lld\n",
                            redis_reconnects()) < 0 ||
        metrics_render(body) < 0 || render_process(body, m) < 0) {
        evbuffer_drain(body, evbuffer_get_length(body));
        evbuffer_add_printf(body, "out of memory\n");
        *type = "text/plain; charset=utf-8";
        return 500;
    }
    return 200;
}

/* 200 while Redis answers and every worker thread makes progress: what a load balancer or an
 * orchestrator needs to know. */
static int page_healthz(void *arg, struct evbuffer *body, const char **type)
{
    const char *stale = NULL;

    (void)arg;
    *type = "text/plain; charset=utf-8";
    if (redis_outage()) {
        evbuffer_add_printf(body, "redis unreachable\n");
        return 503;
    }
    if (!health_all_fresh((int64_t)health_period_ms() * 2000, &stale)) {
        evbuffer_add_printf(body, "the %s thread is not making progress\n", stale);
        return 503;
    }
    evbuffer_add_printf(body, "ok\n");
    return 200;
}

static int make_status(struct monitor *m, const struct config *conf)
{
    struct page_facts f = {.conf = conf, .redis_up = !redis_outage()};

    sample(m, conf);
    f.queue_len = m->last.conf == conf ? m->last.queue_len : NULL;
    f.queue_paused = m->last.conf == conf ? m->last.queue_paused : NULL;
    f.dead = m->last.dead;
    f.paused = capacity_paused(&m->d->cap);
    loop_counts(m->d->loop, &f.running, &f.waiting);
    f.free_slots = (long long)conf->concurrency - (long long)(f.running + f.waiting);
    if (f.free_slots < 0)
        f.free_slots = 0;
    reporter_counts(m->d->reporter, &f.ok, &f.failed);
    evbuffer_drain(m->page, evbuffer_get_length(m->page));
    return status_page(m->page, &m->rc, &f);
}

/* GET /: made at most once a second, however often it is asked for. */
static int page_status(void *arg, struct evbuffer *body, const char **type)
{
    struct monitor *m = arg;
    int64_t now = clock_mono_us();
    size_t len;

    *type = "text/html; charset=utf-8";
    if (now - m->page_at_us >= SAMPLE_EVERY_US || evbuffer_get_length(m->page) == 0) {
        m->page_at_us = now;
        if (make_status(m, atomic_load(&m->conf)) < 0) {
            evbuffer_drain(m->page, evbuffer_get_length(m->page));
            evbuffer_add_printf(body, "out of memory\n");
            *type = "text/plain; charset=utf-8";
            return 500;
        }
    }
    len = evbuffer_get_length(m->page);
    return evbuffer_add(body, evbuffer_pullup(m->page, -1), len) < 0 ? 500 : 200;
}
