#include "unique.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "envelope.h"
#include "task.h"
#include "taskq.h"
#include "wire.h"

#define UNIQUE_MAX_SECONDS 31536000

int unique_fields(const json_t *o, const char **id, double *seconds, const char **why)
{
    const json_t *u = json_object_get(o, "unique_for"), *i = json_object_get(o, "id");

    if (u == NULL)
        return 0;
    if (!json_is_number(u) || !(json_number_value(u) > 0) ||
        json_number_value(u) > UNIQUE_MAX_SECONDS) {
        *why = "\"unique_for\" must be a number of seconds, more than 0 and at most 31536000";
        return -1;
    }
    if (!json_is_string(i) || json_string_length(i) == 0 ||
        json_string_length(i) > TASK_LABEL_MAX ||
        strlen(json_string_value(i)) != json_string_length(i)) {
        *why = "\"unique_for\" needs an \"id\": a string of 1 to 128 bytes, without NUL";
        return -1;
    }
    *id = json_string_value(i);
    *seconds = json_number_value(u);
    return 1;
}

/* Whether the loop will take the envelope (envelope_parse on a copy): one it refuses must not
 * claim the id, or a good copy taken meanwhile would be a duplicate of a task that never runs. */
static bool valid(const struct task *t, const struct config *conf)
{
    struct task *copy = task_new(t->queue, t->payload, t->len); /* an id of its own */
    bool ok = copy != NULL && envelope_parse(copy, conf) == 0;

    task_free(copy);
    return ok;
}

/* The claim a task asks for, as the task its sender pushed (not one of qworker's wrappers). A
 * quick look first: most payloads never mention it, and are not parsed here. A name written
 * with \u escapes is the same name to the loop's parser: such payloads are parsed too. */
static int wanted(struct task *t, const struct config *conf)
{
    static const char field[] = "\"unique_for\"";
    const char *id, *why;
    double seconds;
    json_t *o;
    int rc;

    if (!task_is_envelope(t) || (memmem(t->payload, t->len, field, sizeof(field) - 1) == NULL &&
                                 memmem(t->payload, t->len, "\\u", 2) == NULL))
        return 0;
    o = json_loadb(t->payload, t->len, JSON_REJECT_DUPLICATES, NULL);
    rc = json_is_object(o) && !wire_is_wrapper(o) ? unique_fields(o, &id, &seconds, &why) : 0;
    if (rc == 1 && !valid(t, conf))
        rc = 0; /* refused by the loop: it must not hold the id meanwhile */
    if (rc == 1) {
        /* A delayed one runs when its delay is up, unchecked (from the schedule): the claim
         * covers the delay too. */
        const json_t *delay = json_object_get(o, "delay");
        if (json_is_number(delay) && json_number_value(delay) > 0)
            seconds += json_number_value(delay);
        t->unique_for = seconds;
        t->unique = UNIQUE_UNCHECKED; /* without a key (out of memory): it goes back */
        if (asprintf(&t->unique_key, "%s:unique:%s", conf->prefix, id) < 0)
            t->unique_key = NULL;
    }
    json_decref(o);
    return rc == 1 && t->unique_key != NULL; /* else the loop refuses it, or it asks nothing */
}

int unique_claim(struct rconn *rc, const struct config *conf, struct taskq_chain *chain,
                 redisReply **refusal)
{
    int n = 0, answered = 0;
    bool refused = false;

    *refusal = NULL;
    for (struct task *t = chain->first; t != NULL; t = t->next)
        n += wanted(t, conf);
    if (n == 0)
        return 0;
    if (rc->c == NULL)
        return -1;
    for (struct task *t = chain->first; t != NULL; t = t->next) {
        char ms[32];
        /* GET: a key of another type is an error (WRONGTYPE, said), not a claim held forever. */
        const char *argv[] = {"SET", t->unique_key, t->id, "PX", ms, "NX", "GET"};

        if (t->unique != UNIQUE_UNCHECKED || t->unique_key == NULL)
            continue;
        snprintf(ms, sizeof(ms), "%lld", (long long)ceil(t->unique_for * 1000));
        if (redisAppendCommandArgv(rc->c, 7, argv, NULL) != REDIS_OK) {
            /* What was appended would answer someone else's command later. */
            rconn_lost(rc, "out of memory");
            return -1;
        }
    }
    /* Read in the order sent; a task whose reply never came stays UNIQUE_UNCHECKED. */
    for (struct task *t = chain->first; t != NULL; t = t->next) {
        redisReply *r;

        if (t->unique != UNIQUE_UNCHECKED || t->unique_key == NULL)
            continue;
        if ((r = rconn_reply(rc)) == NULL)
            return -1; /* lost: the rest is never read on the next connection */
        /* With GET, what was there: nothing (claimed now), or another copy's claim. */
        if (r->type == REDIS_REPLY_NIL)
            t->unique = UNIQUE_CLAIMED;
        else if (r->type == REDIS_REPLY_STRING)
            t->unique = UNIQUE_DUPLICATE;
        else
            refused = true;
        answered += t->unique != UNIQUE_UNCHECKED;
        if (t->unique == UNIQUE_UNCHECKED && *refusal == NULL)
            *refusal = r; /* the first refusal says why */
        else
            freeReplyObject(r);
    }
    return refused ? -1 : answered;
}
