/* The main thread's work once the workers run: it alone receives signals (every thread blocks
 * them), reloads the configuration, and is the only one talking to systemd. It wakes once a
 * health period to ping the watchdog, if every worker thread showed progress, and to keep
 * STATUS= current. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "consumer.h"
#include "daemon.h"
#include "health.h"
#include "log.h"
#include "loop.h"
#include "monitor.h"
#include "notify.h"
#include "redis.h"
#include "reporter.h"

struct control {
    bool ready;
    bool paused;
    bool stale_said;
    char status[256];
};

/* Tasks running and tasks waiting under a handler's concurrency, apart, and what more the
 * worker would take now. Not the slots the consumer holds for a fetch: they are no task. */
static void status_line(struct daemon *d, const struct control *c, char *out, size_t len)
{
    long long ok, failed, free_slots;
    size_t running, waiting;

    reporter_counts(d->reporter, &ok, &failed);
    loop_counts(d->loop, &running, &waiting);
    free_slots = (long long)d->conf->concurrency - (long long)running - (long long)waiting;
    snprintf(out, len, "%s; %zu running, %zu waiting, %lld free, %lld done, %lld failed; redis %s",
             c->paused ? "paused (SIGTSTP)" : c->ready ? "running" : "starting", running, waiting,
             free_slots > 0 ? free_slots : 0, ok, failed, redis_outage() ? "unreachable" : "up");
}

/* READY=1 once Redis answered and every thread runs; then STATUS= whenever it changes. */
static void report(struct daemon *d, struct control *c)
{
    char now[256];

    status_line(d, c, now, sizeof(now));
    if (!c->ready && consumer_ready(d->consumer)) {
        c->ready = true;
        status_line(d, c, now, sizeof(now));
        notify_ready(now);
    } else if (strcmp(now, c->status) != 0) {
        notify_status(now);
    }
    snprintf(c->status, sizeof(c->status), "%s", now);
}

static void watchdog(struct control *c)
{
    uint64_t usec = notify_watchdog_usec();
    const char *stale = NULL;

    if (usec == 0)
        return;
    /* Half the interval: a thread that missed two of its beats is not making progress. */
    if (health_all_fresh((int64_t)usec / 2, &stale)) {
        notify_watchdog();
        c->stale_said = false;
    } else if (!c->stale_said) {
        c->stale_said = true;
        log_err("the %s thread shows no progress: no more watchdog pings until it does", stale);
    }
}

static void reload(struct daemon *d, struct control *c)
{
    struct config *next, **grown;
    const char *fixed;
    char err[1024];

    notify_reloading();
    next = config_load(d->conf->path, err, sizeof(err));
    if (next == NULL) {
        log_err("reload refused, the running configuration stays: %s", err);
    } else if ((fixed = config_fixed_change(d->conf, next)) != NULL) {
        log_err("reload refused, the running configuration stays: %s: %s cannot change "
                "without a restart",
                d->conf->path, fixed);
        config_free(next);
    } else if ((grown = realloc(d->retired,
                                (size_t)(d->nretired + 1) * sizeof(struct config *))) == NULL) {
        log_err("reload refused: out of memory");
        config_free(next);
    } else {
        /* Running tasks point into the old configuration: it stays until exit. */
        d->retired = grown;
        d->retired[d->nretired++] = (struct config *)d->conf;
        d->conf = next;
        log_set_level(next->log_level);
        capacity_set_limit(&d->cap, next->concurrency);
        capacity_set_bytes_limit(&d->cap, (size_t)next->task_memory_mb << 20);
        loop_reconfigure(d->loop, next);
        consumer_reconfigure(d->consumer, next);
        reporter_reconfigure(d->reporter, next);
        if (d->monitor != NULL)
            monitor_reconfigure(d->monitor, next);
        log_notice("reloaded %s: concurrency %d, %d queue(s), %d handler(s), log level %d",
                   next->path, next->concurrency, next->nqueues, next->nhandlers, next->log_level);
    }
    c->status[0] = '\0';
    status_line(d, c, c->status, sizeof(c->status));
    notify_ready(c->status);
}

static void dump_state(struct daemon *d, struct control *c)
{
    char status[256];
    struct lateness late;

    status_line(d, c, status, sizeof(status));
    reporter_lateness(d->reporter, &late);
    log_notice("state: %s; worker %s, concurrency %d, %d queue(s), config %s, %d reload(s); "
               "timer lateness over %lu timers: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
               status, d->conf->worker_id, d->conf->concurrency, d->conf->nqueues, d->conf->path,
               d->nretired, late.count, (double)late.p50_us / 1000, (double)late.p99_us / 1000,
               (double)late.max_us / 1000);
}

void control_serve(struct daemon *d, const sigset_t *signals)
{
    struct control c = {0};
    int64_t next_tick = 0;

    for (;;) {
        int ms = health_period_ms();
        struct timespec tick = {ms / 1000, (long)(ms % 1000) * 1000000L};
        int sig = sigtimedwait(signals, NULL, &tick);

        /* Woken by something else than one of ours (EINTR) before the tick: nothing to do. */
        if (sig < 0 && clock_mono_us() < next_tick)
            continue;
        next_tick = clock_mono_us() + (int64_t)ms * 1000;

        switch (sig) {
        case SIGTERM:
        case SIGINT:
            log_notice("%s: stopping; no new tasks are taken", strsignal(sig));
            return;
        case SIGHUP:
            reload(d, &c);
            break;
        case SIGUSR1:
            dump_state(d, &c);
            break;
        case SIGTSTP:
        case SIGCONT:
            c.paused = sig == SIGTSTP;
            capacity_pause(&d->cap, c.paused);
            if (c.paused)
                consumer_pause(d->consumer);
            log_notice("%s: %s", strsignal(sig),
                       c.paused ? "taking no new tasks; running ones go on" : "taking tasks again");
            break;
        default:
            break;
        }
        report(d, &c);
        watchdog(&c);
    }
}

/* How long a stop may take when nothing hangs: the drain, the kill grace of exec handlers, and
 * the reporter's wait for Redis to record what finished (FINAL_RECORD_US in reporter.c), with a
 * margin. Past it something hangs (a child in D state, a blocked call): systemd is no longer
 * asked for more time nor told that all is well, so that TimeoutStopSec or the watchdog ends it. */
static int64_t stop_budget_us(const struct config *conf)
{
    double grace = 0;

    for (int i = 0; i < conf->nhandlers; i++)
        if (conf->handlers[i].kill_grace > grace)
            grace = conf->handlers[i].kill_grace;
    return (int64_t)((conf->shutdown_timeout + grace + 10 + 5) * 1e6);
}

void control_stop(struct daemon *d, const sigset_t *signals)
{
    struct timespec tick = {0, 20L * 1000 * 1000}; /* exit promptly once the reporter is done */
    int64_t next_ping = 0, give_up = clock_mono_us() + stop_budget_us(d->conf);
    bool now = false, stuck = false;
    char status[128];
    size_t running, waiting;

    loop_counts(d->loop, &running, &waiting);
    snprintf(status, sizeof(status),
             "stopping: %zu running task(s) finishing or going back to Redis, %zu waiting going "
             "back",
             running, waiting);
    notify_stopping(status);
    /* The consumer first: a task the loop puts back at once (it had not started yet) frees a slot
     * that a running consumer would fill with the next task from Redis. */
    consumer_stop(d->consumer);
    loop_stop(d->loop, false);
    while (reporter_tryjoin(d->reporter) < 0) {
        int ms = health_period_ms();
        int sig;

        if (!stuck && clock_mono_us() >= give_up) {
            stuck = true;
            log_err("stop: still not done after %.0f s, longer than any drain can take; no "
                    "more watchdog pings or extensions, so that systemd ends it",
                    (double)stop_budget_us(d->conf) / 1e6);
        }
        if (!stuck && clock_mono_us() >= next_ping) {
            /* The drain is bounded by shutdown_timeout: while it lasts, systemd waits. */
            notify_extend_timeout((uint64_t)ms * 3000);
            if (notify_watchdog_usec() > 0)
                notify_watchdog();
            next_ping = clock_mono_us() + (int64_t)ms * 1000;
        }
        sig = sigtimedwait(signals, NULL, &tick);
        if ((sig == SIGTERM || sig == SIGINT) && !now) {
            log_notice("%s again: stopping running tasks now", strsignal(sig));
            loop_stop(d->loop, true);
            now = true;
        }
    }
    consumer_join(d->consumer);
    loop_join(d->loop);
}
