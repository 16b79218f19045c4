#include "status_page.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "clock.h"
#include "redis.h"

#ifndef QWORKER_VERSION
#define QWORKER_VERSION "0.0.0"
#endif

#define MAX_WORKERS 50 /* shown; the rest are counted */
#define DEAD_SHOWN 10

static const char style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".bad{color:#b00}.ok{color:#070}code{font-size:90%}";

int html_text(struct evbuffer *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        int rc;

        switch (ch) {
        case '&':
            rc = evbuffer_add(out, "&amp;", 5);
            break;
        case '<':
            rc = evbuffer_add(out, "&lt;", 4);
            break;
        case '>':
            rc = evbuffer_add(out, "&gt;", 4);
            break;
        case '"':
            rc = evbuffer_add(out, "&quot;", 6);
            break;
        case '\'':
            rc = evbuffer_add(out, "&#39;", 5);
            break;
        default:
            rc = ch < 0x20 || ch == 0x7f ? evbuffer_add_printf(out, "\\x%02x", ch)
                                         : evbuffer_add(out, &s[i], 1);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int html(struct evbuffer *out, const char *s)
{
    return html_text(out, s ? s : "", s ? strlen(s) : 0);
}

static int cell_text(struct evbuffer *out, const char *s)
{
    return evbuffer_add_printf(out, "<td>") < 0 || html(out, s) < 0 ||
                   evbuffer_add_printf(out, "</td>") < 0
               ? -1
               : 0;
}

static int cell_count(struct evbuffer *out, long long v)
{
    return v < 0 ? evbuffer_add_printf(out, "<td class=n>?</td>")
                 : evbuffer_add_printf(out, "<td class=n>%lld</td>", v);
}

static int not_known(struct evbuffer *out)
{
    return evbuffer_add_printf(out, "<p>not known: redis did not answer</p>") < 0 ? -1 : 0;
}

static int head(struct evbuffer *out, const struct page_facts *f)
{
    const struct config *c = f->conf;

    if (evbuffer_add_printf(out, "<!doctype html><html lang=en><head><meta charset=utf-8>"
                                 "<meta http-equiv=refresh content=5>"
                                 "<title>qworker ") < 0 ||
        html(out, c->worker_id) < 0 ||
        evbuffer_add_printf(out, "</title><style>%s</style></head><body><h1>qworker ", style) < 0 ||
        html(out, c->worker_id) < 0)
        return -1;
    return evbuffer_add_printf(
               out,
               "</h1><p id=state>version %s; <b>%s</b>; redis <span class=%s>%s</span>; "
               "%zu running, %zu waiting, %lld free of %d; since start %lld done, %lld failed</p>",
               QWORKER_VERSION, f->paused ? "paused (SIGTSTP)" : "running",
               f->redis_up ? "ok" : "bad", f->redis_up ? "up" : "unreachable", f->running,
               f->waiting, f->free_slots, c->concurrency, f->ok, f->failed) < 0
               ? -1
               : 0;
}

static int queues(struct evbuffer *out, const struct page_facts *f)
{
    const struct config *c = f->conf;

    if (evbuffer_add_printf(out, "<h2>Queues</h2><table id=queues><tr><th>queue</th>"
                                 "<th>handler</th><th>waiting in Redis</th>"
                                 "<th>this worker</th></tr>") < 0)
        return -1;
    for (int i = 0; i < c->nqueues; i++)
        if (evbuffer_add_printf(out, "<tr>") < 0 || cell_text(out, c->queues[i].name) < 0 ||
            cell_text(out, c->queues[i].handler->name) < 0 ||
            cell_count(out, f->queue_len ? f->queue_len[i] : -1) < 0 ||
            evbuffer_add_printf(out, "<td>%s</td></tr>",
                                f->queue_paused && f->queue_paused[i] == 1
                                    ? "paused (every worker)"
                                : f->paused ? "paused (this worker)"
                                            : "taking") < 0)
            return -1;
    return evbuffer_add_printf(out, "</table>") < 0 ? -1 : 0;
}

/* One worker's row from its heartbeat (JSON: host, pid, version, started, inflight, ...) and
 * the key's remaining TTL, which tells how long ago it beat. The token is never shown. */
static int worker_row(struct evbuffer *out, const char *id, const redisReply *value,
                      const redisReply *pttl, int ttl_ms)
{
    json_t *hb = NULL;
    char age[32] = "gone";

    if (value != NULL && value->type == REDIS_REPLY_STRING)
        hb = json_loadb(value->str, value->len, 0, NULL);
    if (pttl != NULL && pttl->type == REDIS_REPLY_INTEGER && pttl->integer >= 0)
        snprintf(age, sizeof(age), "%.1f s ago",
                 (double)(ttl_ms - pttl->integer > 0 ? ttl_ms - pttl->integer : 0) / 1000);
    if (evbuffer_add_printf(out, "<tr>") < 0 || cell_text(out, id) < 0 ||
        cell_text(out, json_string_value(json_object_get(hb, "host"))) < 0 ||
        cell_count(out, json_is_integer(json_object_get(hb, "pid"))
                            ? json_integer_value(json_object_get(hb, "pid"))
                            : -1) < 0 ||
        cell_text(out, json_string_value(json_object_get(hb, "version"))) < 0 ||
        cell_count(out, json_is_integer(json_object_get(hb, "inflight"))
                            ? json_integer_value(json_object_get(hb, "inflight"))
                            : -1) < 0 ||
        evbuffer_add_printf(out, "<td>%s</td></tr>", age) < 0) {
        json_decref(hb);
        return -1;
    }
    json_decref(hb);
    return 0;
}

static int workers(struct evbuffer *out, struct rconn *rc, const struct config *c)
{
    redisReply *ids;
    size_t shown;
    int rv = 0;

    if (evbuffer_add_printf(out, "<h2>Workers</h2>") < 0)
        return -1;
    ids = rc->c ? redisCommand(rc->c, "SMEMBERS %s:workers", c->prefix) : NULL;
    if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
        if (ids == NULL && rc->c != NULL)
            rconn_lost(rc, "SMEMBERS: no reply");
        freeReplyObject(ids);
        return not_known(out);
    }
    shown = ids->elements;
    if (shown > MAX_WORKERS)
        shown = MAX_WORKERS;
    for (size_t i = 0; i < shown; i++) {
        const redisReply *id = ids->element[i];
        if (id->type == REDIS_REPLY_STRING) {
            redisAppendCommand(rc->c, "GET %s:worker:%b", c->prefix, id->str, id->len);
            redisAppendCommand(rc->c, "PTTL %s:worker:%b", c->prefix, id->str, id->len);
        }
    }
    if (evbuffer_add_printf(out, "<table id=workers><tr><th>id</th><th>host</th><th>pid</th>"
                                 "<th>version</th><th>in flight</th><th>heartbeat</th></tr>") < 0)
        rv = -1;
    for (size_t i = 0; i < shown; i++) {
        const redisReply *id = ids->element[i];
        redisReply *value = NULL, *pttl = NULL;
        if (id->type != REDIS_REPLY_STRING)
            continue;
        if (redisGetReply(rc->c, (void **)&value) != REDIS_OK ||
            redisGetReply(rc->c, (void **)&pttl) != REDIS_OK) {
            freeReplyObject(value);
            rconn_lost(rc, "worker heartbeats: no reply");
            freeReplyObject(ids);
            return rv < 0 || evbuffer_add_printf(out, "</table><p>redis stopped answering</p>") < 0
                       ? -1
                       : 0;
        }
        if (rv == 0)
            rv = worker_row(out, id->str, value, pttl, c->heartbeat_ttl_ms);
        freeReplyObject(value);
        freeReplyObject(pttl);
    }
    if (rv == 0 && evbuffer_add_printf(out, "</table>") < 0)
        rv = -1;
    if (rv == 0 && ids->elements > shown)
        rv = evbuffer_add_printf(out, "<p>and %zu more</p>", ids->elements - shown) < 0 ? -1 : 0;
    freeReplyObject(ids);
    return rv;
}

static int counter_table(struct evbuffer *out, const redisReply *r)
{
    if (evbuffer_add_printf(out, "<table id=counters>") < 0)
        return -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (evbuffer_add_printf(out, "<tr><th>") < 0 || html_text(out, k->str, k->len) < 0 ||
            evbuffer_add_printf(out, "</th><td class=n>") < 0 ||
            html_text(out, v->str, v->len) < 0 || evbuffer_add_printf(out, "</td></tr>") < 0)
            return -1;
    }
    return evbuffer_add_printf(out, "</table>") < 0 ? -1 : 0;
}

static int counters(struct evbuffer *out, struct rconn *rc, const struct config *c)
{
    redisReply *r = rc->c ? redisCommand(rc->c, "HGETALL %s:stats", c->prefix) : NULL;
    int rv;

    if (evbuffer_add_printf(out, "<h2>Counters</h2>") < 0)
        rv = -1;
    else if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        rv = not_known(out);
    else
        rv = counter_table(out, r);
    if (r == NULL && rc->c != NULL)
        rconn_lost(rc, "HGETALL: no reply");
    freeReplyObject(r);
    return rv;
}

static int dead_row(struct evbuffer *out, const redisReply *entry)
{
    json_t *d = entry->type == REDIS_REPLY_STRING ? json_loadb(entry->str, entry->len, 0, NULL)
                                                  : NULL;
    char when[32] = "?";
    json_int_t t = json_integer_value(json_object_get(d, "time"));
    time_t tt = (time_t)t;
    struct tm tm;
    int rv;

    if (t > 0 && gmtime_r(&tt, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    rv = evbuffer_add_printf(out, "<tr><td>%s</td>", when) < 0 ||
                 cell_text(out, json_string_value(json_object_get(d, "id"))) < 0 ||
                 cell_text(out, json_string_value(json_object_get(d, "queue"))) < 0 ||
                 cell_text(out, json_string_value(json_object_get(d, "handler"))) < 0 ||
                 cell_text(out, d ? json_string_value(json_object_get(d, "reason"))
                                  : "(not a dead letter qworker wrote)") < 0 ||
                 evbuffer_add_printf(out, "</tr>") < 0
             ? -1
             : 0;
    json_decref(d);
    return rv;
}

static int dead_letters(struct evbuffer *out, struct rconn *rc, const struct page_facts *f)
{
    const struct config *c = f->conf;
    redisReply *r;
    int rv = 0;

    if (evbuffer_add_printf(out, "<h2>Dead letters</h2><p id=dead-count>") < 0 ||
        (f->dead < 0 ? evbuffer_add_printf(out, "?") : evbuffer_add_printf(out, "%lld", f->dead)) <
            0 ||
        evbuffer_add_printf(out, " in <code>") < 0 || html(out, c->prefix) < 0 ||
        evbuffer_add_printf(out, ":dead</code>; the newest:</p>") < 0)
        return -1;
    r = rc->c ? redisCommand(rc->c, "LRANGE %s:dead 0 %d", c->prefix, DEAD_SHOWN - 1) : NULL;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r == NULL && rc->c != NULL)
            rconn_lost(rc, "LRANGE: no reply");
        freeReplyObject(r);
        return not_known(out);
    }
    if (evbuffer_add_printf(out, "<table id=dead><tr><th>time</th><th>id</th><th>queue</th>"
                                 "<th>handler</th><th>reason</th></tr>") < 0)
        rv = -1;
    for (size_t i = 0; rv == 0 && i < r->elements; i++)
        rv = dead_row(out, r->element[i]);
    if (rv == 0 && evbuffer_add_printf(out, "</table>") < 0)
        rv = -1;
    freeReplyObject(r);
    return rv;
}

int status_page(struct evbuffer *out, struct rconn *rc, const struct page_facts *f)
{
    rconn_try(rc); /* not connected: every part Redis would fill says "not known" */
    if (head(out, f) < 0 || queues(out, f) < 0 || workers(out, rc, f->conf) < 0 ||
        counters(out, rc, f->conf) < 0 || dead_letters(out, rc, f) < 0)
        return -1;
    return evbuffer_add_printf(out, "</body></html>\n") < 0 ? -1 : 0;
}
