/* qworkerctl status and workers: one screen of what the fleet on this Redis is doing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* A worker as its heartbeat tells it: {"id", "host", "pid", "version", "started", "inflight",
 * "heartbeat_age_ms"}; the token stays out. NULL when the heartbeat is gone or not JSON. */
static json_t *worker(struct ctl *c, const char *id, size_t len)
{
    redisReply *v, *ttl;
    json_t *hb, *w;

    v = ctl_command(c, "GET %s:worker:%b", c->conf->prefix, id, len);
    ttl = v ? ctl_command(c, "PTTL %s:worker:%b", c->conf->prefix, id, len) : NULL;
    hb = v && v->type == REDIS_REPLY_STRING ? json_loadb(v->str, v->len, 0, NULL) : NULL;
    w = json_object();
    json_object_set_new(w, "id", json_stringn(id, len));
    if (json_is_object(hb)) {
        static const char *const keep[] = {"host", "pid", "version", "started", "inflight"};
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
            if (json_object_get(hb, keep[i]) != NULL)
                json_object_set(w, keep[i], json_object_get(hb, keep[i]));
    }
    if (ttl != NULL && ttl->type == REDIS_REPLY_INTEGER && ttl->integer >= 0)
        json_object_set_new(w, "heartbeat_age_ms",
                            json_integer(c->conf->heartbeat_ttl_ms - ttl->integer > 0
                                             ? c->conf->heartbeat_ttl_ms - ttl->integer
                                             : 0));
    else
        json_object_set_new(w, "heartbeat_age_ms", json_null()); /* gone: a dead worker */
    json_decref(hb);
    freeReplyObject(v);
    freeReplyObject(ttl);
    return w;
}

static json_t *workers(struct ctl *c, int *status)
{
    redisReply *ids = ctl_command(c, "SMEMBERS %s:workers", c->conf->prefix);
    json_t *all = json_array();

    if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
        *status = ctl_redis_failed(c, "SMEMBERS", ids);
        freeReplyObject(ids);
        json_decref(all);
        return NULL;
    }
    for (size_t i = 0; i < ids->elements; i++)
        if (ids->element[i]->type == REDIS_REPLY_STRING)
            json_array_append_new(all, worker(c, ids->element[i]->str, ids->element[i]->len));
    freeReplyObject(ids);
    return all;
}

static void num(char *buf, size_t len, json_t *v)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        snprintf(buf, len, "-");
}

static void print_workers(json_t *all)
{
    static const char *const head[] = {"WORKER", "HOST", "PID", "VERSION", "IN FLIGHT",
                                       "HEARTBEAT"};
    struct table *t = table_new(head, 6);
    size_t i;
    json_t *w;

    json_array_foreach(all, i, w)
    {
        char pid[24], inflight[24], age[32];
        json_t *a = json_object_get(w, "heartbeat_age_ms");
        const char *cells[6];
        num(pid, sizeof(pid), json_object_get(w, "pid"));
        num(inflight, sizeof(inflight), json_object_get(w, "inflight"));
        if (json_is_integer(a))
            snprintf(age, sizeof(age), "%.1f s ago", (double)json_integer_value(a) / 1000);
        else
            snprintf(age, sizeof(age), "gone");
        cells[0] = json_string_value(json_object_get(w, "id"));
        cells[1] = json_string_value(json_object_get(w, "host"));
        cells[2] = pid;
        cells[3] = json_string_value(json_object_get(w, "version"));
        cells[4] = inflight;
        cells[5] = age;
        table_add(t, cells);
    }
    table_print(t);
    table_free(t);
}

int ctl_workers(struct ctl *c)
{
    int status = CTL_OK;
    json_t *all;

    if (c->argc != 0) {
        fprintf(stderr, "qworkerctl: workers takes no argument\n");
        return CTL_USAGE;
    }
    all = workers(c, &status);
    if (all == NULL)
        return status;
    if (c->json)
        return json_print(all) < 0 ? CTL_FAILED : CTL_OK;
    print_workers(all);
    json_decref(all);
    return CTL_OK;
}

/* LLEN of each queue, ZCARD of the schedule, LLEN of the dead list, the stats hash: one
 * pipelined round trip. */
static json_t *counts(struct ctl *c, int *status)
{
    const struct config *conf = c->conf;
    json_t *out = json_object(), *queues = json_array(), *stats = json_object();
    redisReply *r = NULL;
    bool lost = false;

    for (int i = 0; i < conf->nqueues; i++)
        redisAppendCommand(c->rc.c, "LLEN %s", conf->queues[i].name);
    for (int i = 0; i < conf->nqueues; i++)
        redisAppendCommand(c->rc.c, "SISMEMBER %s:paused %s", conf->prefix, conf->queues[i].name);
    redisAppendCommand(c->rc.c, "ZCARD %s:schedule", conf->prefix);
    redisAppendCommand(c->rc.c, "LLEN %s:dead", conf->prefix);
    redisAppendCommand(c->rc.c, "HGETALL %s:stats", conf->prefix);
    for (int i = 0; i < 2 * conf->nqueues + 3; i++) {
        r = NULL;
        if (lost || redisGetReply(c->rc.c, (void **)&r) != REDIS_OK) {
            lost = true;
            continue;
        }
        if (i >= conf->nqueues && i < 2 * conf->nqueues) {
            json_object_set_new(json_array_get(queues, (size_t)(i - conf->nqueues)), "paused",
                                json_boolean(r->type == REDIS_REPLY_INTEGER && r->integer == 1));
            freeReplyObject(r);
            continue;
        }
        if (i < conf->nqueues) {
            json_t *q = json_pack("{s:s, s:s}", "name", conf->queues[i].name, "handler",
                                  conf->queues[i].handler->name);
            json_object_set_new(q, "length", r->type == REDIS_REPLY_INTEGER
                                                 ? json_integer(r->integer)
                                                 : json_null());
            json_array_append_new(queues, q);
        } else if (i < 2 * conf->nqueues + 2) {
            json_object_set_new(out, i == 2 * conf->nqueues ? "scheduled" : "dead",
                                r->type == REDIS_REPLY_INTEGER ? json_integer(r->integer)
                                                               : json_null());
        } else if (r->type == REDIS_REPLY_ARRAY) {
            for (size_t k = 0; k + 1 < r->elements; k += 2)
                if (r->element[k]->type == REDIS_REPLY_STRING &&
                    r->element[k + 1]->type == REDIS_REPLY_STRING)
                    json_object_set_new(stats, r->element[k]->str,
                                        json_integer(strtoll(r->element[k + 1]->str, NULL, 10)));
        }
        freeReplyObject(r);
    }
    json_object_set_new(out, "queues", queues);
    json_object_set_new(out, "stats", stats);
    if (lost) {
        rconn_lost(&c->rc, "no reply");
        *status = ctl_redis_failed(c, "status", NULL);
        json_decref(out);
        return NULL;
    }
    return out;
}

static void print_status(json_t *s)
{
    static const char *const qhead[] = {"QUEUE", "HANDLER", "LENGTH", "PAUSED"};
    static const char *const chead[] = {"COUNTER", "VALUE"};
    struct table *t = table_new(qhead, 4);
    const char *key;
    size_t i;
    json_t *v;
    char n[32], m[32];

    json_array_foreach(json_object_get(s, "queues"), i, v)
    {
        const char *cells[4] = {json_string_value(json_object_get(v, "name")),
                                json_string_value(json_object_get(v, "handler")), n,
                                json_is_true(json_object_get(v, "paused")) ? "yes" : "no"};
        num(n, sizeof(n), json_object_get(v, "length"));
        table_add(t, cells);
    }
    table_print(t);
    table_free(t);
    num(n, sizeof(n), json_object_get(s, "scheduled"));
    num(m, sizeof(m), json_object_get(s, "dead"));
    printf("\nscheduled %s, dead %s\n\n", n, m);
    print_workers(json_object_get(s, "workers"));
    putchar('\n');
    t = table_new(chead, 2);
    json_object_foreach(json_object_get(s, "stats"), key, v)
    {
        const char *cells[2] = {key, n};
        num(n, sizeof(n), v);
        table_add(t, cells);
    }
    table_print(t);
    table_free(t);
}

int ctl_status(struct ctl *c)
{
    int status = CTL_OK;
    json_t *s, *all;

    if (c->argc != 0) {
        fprintf(stderr, "qworkerctl: status takes no argument\n");
        return CTL_USAGE;
    }
    s = counts(c, &status);
    all = s ? workers(c, &status) : NULL;
    if (all == NULL) {
        json_decref(s);
        return status;
    }
    json_object_set_new(s, "workers", all);
    if (c->json)
        return json_print(s) < 0 ? CTL_FAILED : CTL_OK;
    print_status(s);
    json_decref(s);
    return CTL_OK;
}
