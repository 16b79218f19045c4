#include "periodic.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "reply.h"
#include "scripts.h"

#define IDLE_MS 60000
#define REFUSED_RETRY_S 1

struct periodic {
    const struct config *conf;              /* whose schedules are checked */
    _Atomic(const struct config *) next;    /* a reload's, taken at the next check */
    int n;
    int64_t *due;   /* per schedule: unix seconds of its next check (tick, or a retry) */
    bool *checked;  /* per schedule: the first check since a start or reload went through */
    char **keys;    /* per schedule: <prefix>:periodic:<name> */
    struct rcond *refused; /* per schedule: its ticks refused, said once */
};

int64_t periodic_next(const struct schedule_conf *s, int64_t t)
{
    if (s->every > 0)
        return t - t % s->every + s->every;
    return cron_next(&s->cron, t);
}

int64_t periodic_latest(const struct schedule_conf *s, int64_t now)
{
    /* Cron: look back in growing windows, so that "every minute" costs one step and a yearly
     * one a few. */
    static const int64_t windows[] = {120, 7200, 2LL * 86400, 64LL * 86400, 400LL * 86400};
    int64_t t, later;

    if (s->every > 0)
        return now - now % s->every;
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        t = cron_next(&s->cron, now - windows[w]);
        if (t < 0 || t > now)
            continue;
        while ((later = cron_next(&s->cron, t)) > 0 && later <= now)
            t = later;
        return t;
    }
    return -1;
}

static void forget(struct periodic *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->keys[i]);
    free(p->keys);
    free(p->due);
    free(p->refused);
    free(p->checked);
    p->keys = NULL;
    p->due = NULL;
    p->refused = NULL;
    p->checked = NULL;
    p->n = 0;
}

/* Takes conf's schedules; -1 if out of memory (then none are checked). */
static int take(struct periodic *p, const struct config *conf)
{
    forget(p);
    p->conf = conf;
    if (conf->nschedules == 0)
        return 0;
    p->due = calloc((size_t)conf->nschedules, sizeof(*p->due));
    p->keys = calloc((size_t)conf->nschedules, sizeof(*p->keys));
    p->refused = calloc((size_t)conf->nschedules, sizeof(*p->refused));
    p->checked = calloc((size_t)conf->nschedules, sizeof(*p->checked));
    if (p->due == NULL || p->keys == NULL || p->refused == NULL || p->checked == NULL) {
        forget(p);
        return -1;
    }
    for (int i = 0; i < conf->nschedules; i++) {
        p->n = i + 1;
        if (asprintf(&p->keys[i], "%s:periodic:%s", conf->prefix, conf->schedules[i].name) < 0) {
            p->keys[i] = NULL;
            forget(p);
            return -1;
        }
    }
    return 0;
}

struct periodic *periodic_new(const struct config *conf)
{
    struct periodic *p = calloc(1, sizeof(*p));

    if (p == NULL || take(p, conf) < 0) {
        periodic_free(p);
        return NULL;
    }
    return p;
}

void periodic_free(struct periodic *p)
{
    if (p == NULL)
        return;
    forget(p);
    free(p);
}

void periodic_reconfigure(struct periodic *p, const struct config *conf)
{
    atomic_store(&p->next, conf);
}

int periodic_wait_ms(struct periodic *p)
{
    int64_t now_ms = clock_real_us() / 1000, soonest = now_ms + IDLE_MS;

    if (atomic_load(&p->next) != NULL)
        return 0;
    for (int i = 0; i < p->n; i++) {
        int64_t at = p->due[i] * 1000;
        if (at < soonest)
            soonest = at;
    }
    return soonest <= now_ms ? 0 : (int)(soonest - now_ms);
}

/* One tick of schedule i: 0 if Redis answered (pushed or not), 1 if it refused (the schedule
 * tries again in a second, the others go on), -1 if the connection was lost. */
static int push_tick(struct periodic *p, struct rconn *rc, int i, int64_t tick, bool catch_up)
{
    const struct schedule_conf *s = &p->conf->schedules[i];
    const char *keys[] = {p->keys[i], s->queue};
    char t[24];
    const char *args[] = {t, s->payload, catch_up ? "catch-up" : ""};
    size_t lens[3];
    redisReply *reply;

    snprintf(t, sizeof(t), "%" PRId64, tick);
    lens[0] = strlen(t);
    lens[1] = s->payload_len;
    lens[2] = strlen(args[2]);
    reply = script_run(rc, SCRIPT_TICK, 2, keys, NULL, 3, args, lens);
    if (reply == NULL)
        return -1;
    if (reply_class(reply, REDIS_REPLY_INTEGER) != RC_OK || reply->integer == -1) {
        rcond_begin(&p->refused[i], LOG_ERR,
                    reply->type == REDIS_REPLY_INTEGER
                        ? "tick is ahead of Redis's clock by more than a minute"
                        : reply_text(reply),
                    "cannot push the ticks of schedule %s (to queue %s); retrying every second",
                    s->name, s->queue);
        freeReplyObject(reply);
        return 1;
    }
    rcond_end(&p->refused[i], "the ticks of schedule %s are pushed again", s->name);
    if (reply->integer == 1)
        log_info("schedule %s: tick %" PRId64 " pushed to queue %s", s->name, tick, s->queue);
    else if (reply->integer == 2)
        log_info("schedule %s: first tick %" PRId64 " noted, not pushed: a new schedule fires "
                 "from its next tick",
                 s->name, tick);
    freeReplyObject(reply);
    return 0;
}

void periodic_run(struct periodic *p, struct rconn *rc)
{
    const struct config *next = atomic_exchange(&p->next, NULL);
    int64_t now;

    if (next != NULL && take(p, next) < 0)
        log_err("schedules: out of memory; none is checked until the next reload");
    if (p->n == 0)
        return;
    now = clock_real_us() / 1000000;
    for (int i = 0; i < p->n; i++) {
        const struct schedule_conf *s = &p->conf->schedules[i];
        int64_t tick;
        int rc_tick = 0;
        if (now < p->due[i])
            continue;
        tick = periodic_latest(s, now);
        /* The first check after a start or a reload catches up a missed tick; later ones push
         * the latest due (ticks this thread slept through are one push, not many). */
        if (tick >= 0 && (rc_tick = push_tick(p, rc, i, tick, !p->checked[i])) < 0)
            return;
        if (rc_tick > 0) {
            p->due[i] = now + REFUSED_RETRY_S; /* this one again in a second; the others go on */
            continue;
        }
        p->checked[i] = true;
        p->due[i] = periodic_next(s, tick >= 0 ? tick : now);
        if (p->due[i] < 0)
            p->due[i] = INT64_MAX / 2000; /* never again */
    }
}
