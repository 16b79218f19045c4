/* qworkerctl push QUEUE [--handler H] [--delay S] [--id ID] [--timeout S] [--max-attempts N]
 * -- ARG...: an envelope built by jansson (no hand-written JSON, no quoting mistakes), pushed
 * with LPUSH as any producer would. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static int bad(const char *what)
{
    fprintf(stderr, "qworkerctl: push: %s\n", what);
    return CTL_USAGE;
}

static int number(const char *s, double *out)
{
    char *end;

    *out = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*out) && *out >= 0 ? 0 : -1;
}

int ctl_push(struct ctl *c)
{
    const char *queue = c->argc > 0 ? c->argv[0] : NULL, *handler = NULL;
    json_t *env = json_object(), *args = json_array();
    char *text;
    redisReply *r;
    double v;
    int i, rc;

    if (queue == NULL || queue[0] == '-') {
        json_decref(env);
        json_decref(args);
        return bad("QUEUE [--handler H] [--delay S] [--id ID] [--timeout S] [--max-attempts N] "
                   "-- ARG...");
    }
    for (i = 1; i < c->argc && strcmp(c->argv[i], "--") != 0; i++) {
        const char *opt = c->argv[i], *val = i + 1 < c->argc ? c->argv[i + 1] : NULL;
        rc = 0;
        if (val != NULL && strcmp(opt, "--handler") == 0)
            handler = val;
        else if (val != NULL && strcmp(opt, "--id") == 0)
            rc = json_object_set_new(env, "id", json_string(val));
        else if (val != NULL && (strcmp(opt, "--delay") == 0 || strcmp(opt, "--timeout") == 0))
            rc = number(val, &v) < 0 ? -1 : json_object_set_new(env, opt + 2, json_real(v));
        else if (val != NULL && strcmp(opt, "--max-attempts") == 0)
            rc = number(val, &v) < 0 || v != floor(v) || v < 1
                     ? -1
                     : json_object_set_new(env, "max_attempts", json_integer((json_int_t)v));
        else
            rc = -1;
        if (rc < 0) {
            json_decref(env);
            json_decref(args);
            print_safe(stderr, "qworkerctl: push: bad option or value: ", opt);
            return CTL_USAGE;
        }
        i++;
    }
    /* A queue's handler runs an envelope only if it names it: the queue's, by default. */
    for (int q = 0; handler == NULL && q < c->conf->nqueues; q++)
        if (strcmp(c->conf->queues[q].name, queue) == 0)
            handler = c->conf->queues[q].handler->name;
    if (handler == NULL) {
        json_decref(env);
        json_decref(args);
        return bad("the queue is not in the configuration: name its --handler");
    }
    for (i++; i < c->argc; i++)
        if (json_array_append_new(args, json_string(c->argv[i])) < 0) {
            json_decref(env);
            json_decref(args);
            return bad("an argument is not UTF-8 text");
        }
    json_object_set_new(env, "handler", json_string(handler));
    json_object_set_new(env, "args", args);
    text = json_dumps(env, JSON_COMPACT);
    json_decref(env);
    if (text == NULL)
        return bad("out of memory");
    r = ctl_command(c, "LPUSH %s %s", queue, text);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        rc = ctl_redis_failed(c, "LPUSH", r);
        freeReplyObject(r);
        free(text);
        return rc;
    }
    if (c->json)
        json_print(json_pack("{s:s, s:I}", "pushed", text, "length", (json_int_t)r->integer));
    else
        print_safe(stdout, "pushed ", text);
    freeReplyObject(r);
    free(text);
    return CTL_OK;
}
