/* qworkerctl cancel ID...: remembered in <prefix>:cancels for worker.cancel_remember and
 * published on <prefix>:cancel (src/cancel.h): every worker stops a running task of that id
 * (outcome "cancelled", never retried) and starts none, also one taken or pushed later. A task
 * of that id waiting in the schedule (a retry, a delayed task) is removed from it here, now. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "scripts.h"
#include "wire.h"

#define CHUNK "1000"

/* Whether a schedule member (src/wire.c: {"queue", "task": wrapper, "push"}) is a task of
 * that id; its queue in *queue (to be freed). */
static bool scheduled_as(const redisReply *m, const char *id, char **queue)
{
    json_t *o = json_loadb(m->str, m->len, 0, NULL), *w;
    const char *task = json_string_value(json_object_get(o, "task"));
    bool same = false;

    w = task != NULL ? json_loads(task, 0, NULL) : NULL;
    if (json_is_string(json_object_get(w, "id")) &&
        strcmp(json_string_value(json_object_get(w, "id")), id) == 0 &&
        json_is_string(json_object_get(o, "queue"))) {
        *queue = strdup(json_string_value(json_object_get(o, "queue")));
        same = *queue != NULL;
    }
    json_decref(w);
    json_decref(o);
    return same;
}

/* A glob matching members that hold id as it is, when JSON escapes nothing in it (twice: the
 * wrapper is a string inside the member); NULL: every member is looked at. */
static char *match_of(const char *id)
{
    char *m;

    if (strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") !=
        strlen(id))
        return NULL;
    return asprintf(&m, "*%s*", id) < 0 ? NULL : m;
}

/* One member out of the schedule, counted as cancelled, in one step (unschedule.lua): only
 * the caller that removes it counts it, so two operators never count one twice. 1 if removed,
 * 0 if gone already, or minus the exit status (said). */
static int unschedule_member(struct ctl *c, const redisReply *m, const char *queue)
{
    char schedule[256], stats[256];
    const char *keys[] = {schedule, stats}, *args[] = {m->str, queue};
    size_t arglens[] = {m->len, strlen(queue)};
    redisReply *r;
    int rc;

    snprintf(schedule, sizeof(schedule), "%s:schedule", c->conf->prefix);
    snprintf(stats, sizeof(stats), "%s:stats", c->conf->prefix);
    r = script_run(&c->rc, SCRIPT_UNSCHEDULE, 2, keys, NULL, 2, args, arglens);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 0 || r->integer > 1) {
        rc = -ctl_redis_failed(c, "cancel (unschedule)", r);
        freeReplyObject(r);
        return rc;
    }
    rc = (int)r->integer;
    freeReplyObject(r);
    return rc;
}

/* Removes the tasks of that id from the schedule; how many, or minus the exit status (said). */
static long unschedule(struct ctl *c, const char *id)
{
    char *match = match_of(id), cursor[32] = "0";
    long removed = 0;

    do {
        redisReply *r = match != NULL
                            ? ctl_command(c, "ZSCAN %s:schedule %s MATCH %s COUNT " CHUNK,
                                          c->conf->prefix, cursor, match)
                            : ctl_command(c, "ZSCAN %s:schedule %s COUNT " CHUNK,
                                          c->conf->prefix, cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            long rc = -ctl_redis_failed(c, "ZSCAN", r);
            freeReplyObject(r);
            free(match);
            return rc;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2) {
            const redisReply *m = r->element[1]->element[i];
            char *queue = NULL;
            int z;
            if (m->type != REDIS_REPLY_STRING || !scheduled_as(m, id, &queue))
                continue;
            z = unschedule_member(c, m, queue);
            free(queue);
            if (z < 0) {
                freeReplyObject(r);
                free(match);
                return z;
            }
            removed += z;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    free(match);
    return removed;
}

static int cancel_one(struct ctl *c, const char *id, long long until_ms, json_t *out)
{
    redisReply *z, *p;
    long removed;
    int rc = CTL_OK;

    /* GT: a cancel already remembered longer keeps its time. */
    z = ctl_command(c, "ZADD %s:cancels GT %lld %s", c->conf->prefix, until_ms, id);
    if (z == NULL || z->type != REDIS_REPLY_INTEGER) {
        rc = ctl_redis_failed(c, "ZADD", z);
        freeReplyObject(z);
        return rc;
    }
    freeReplyObject(z);
    p = ctl_command(c, "PUBLISH %s:cancel %s", c->conf->prefix, id);
    if (p == NULL || p->type != REDIS_REPLY_INTEGER) {
        rc = ctl_redis_failed(c, "PUBLISH", p);
        freeReplyObject(p);
        return rc;
    }
    if ((removed = unschedule(c, id)) < 0) {
        freeReplyObject(p);
        return (int)-removed;
    }
    if (c->json) {
        json_array_append_new(out, json_pack("{s:s, s:I, s:i, s:f}", "id", id,
                                             "workers_told", (json_int_t)p->integer,
                                             "unscheduled", (int)removed,
                                             "remembered_s", c->conf->cancel_remember));
    } else {
        print_safe(stdout, "cancelled: ", id);
        printf("  %lld worker(s) told now; %ld removed from the schedule; remembered for %g s "
               "for a task not taken yet\n",
               p->integer, removed, c->conf->cancel_remember);
    }
    freeReplyObject(p);
    return rc;
}

int ctl_cancel(struct ctl *c)
{
    redisReply *t;
    long long now_ms, until_ms;
    json_t *out = json_array();
    int rc = CTL_OK;

    for (int i = 0; i < c->argc; i++)
        if (c->argv[i][0] == '-' || strlen(c->argv[i]) > 128) {
            fprintf(stderr, "qworkerctl: cancel ID [ID]... (an id: 1 to 128 bytes, not an "
                            "option)\n");
            json_decref(out);
            return CTL_USAGE;
        }
    if (c->argc < 1 || c->argv[0][0] == '\0') {
        fprintf(stderr, "qworkerctl: cancel ID [ID]...\n");
        json_decref(out);
        return CTL_USAGE;
    }
    /* Redis's clock, which every worker reads the set by. */
    t = ctl_command(c, "TIME");
    if (!wire_time_ms(t, &now_ms)) {
        rc = ctl_redis_failed(c, "TIME", t);
        freeReplyObject(t);
        json_decref(out);
        return rc;
    }
    freeReplyObject(t);
    until_ms = now_ms + (long long)(c->conf->cancel_remember * 1000);
    freeReplyObject(ctl_command(c, "ZREMRANGEBYSCORE %s:cancels -inf (%lld", c->conf->prefix,
                                now_ms));
    for (int i = 0; i < c->argc && rc == CTL_OK; i++)
        rc = c->argv[i][0] != '\0' ? cancel_one(c, c->argv[i], until_ms, out) : CTL_USAGE;
    /* What was done before a failure is said too. */
    if (c->json)
        json_print(out);
    else
        json_decref(out);
    return rc;
}
