/* qworkerctl dead list|show|retry|purge: the dead letters in <prefix>:dead, newest first. A
 * retry or a purge moves each letter with one script (dead_move.lua) that removes that exact
 * letter first: two operators running it at once never move one letter twice, nor lose one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base64.h"
#include "ctl.h"
#include "scripts.h"

#define CHUNK 1000

/* The letter as JSON, or {"raw": ...} for an entry qworker did not write. */
static json_t *letter(const redisReply *r)
{
    json_t *j = json_loadb(r->str, r->len, 0, NULL);

    if (json_is_object(j))
        return j;
    json_decref(j);
    return json_pack("{s:s%}", "raw", r->str, r->len);
}

static const char *field(json_t *l, const char *name)
{
    return json_string_value(json_object_get(l, name));
}

static redisReply *chunk(struct ctl *c, long start, long stop)
{
    redisReply *r = ctl_command(c, "LRANGE %s:dead %ld %ld", c->conf->prefix, start, stop);

    if (r != NULL && r->type != REDIS_REPLY_ARRAY) {
        ctl_redis_failed(c, "LRANGE", r);
        freeReplyObject(r);
        return NULL;
    }
    if (r == NULL)
        ctl_redis_failed(c, "LRANGE", NULL);
    return r;
}

static void print_letters(json_t *all)
{
    static const char *const head[] = {"TIME", "ID", "QUEUE", "HANDLER", "ATTEMPTS", "REASON"};
    struct table *t = table_new(head, 6);
    size_t i;
    json_t *l;

    json_array_foreach(all, i, l)
    {
        char when[32] = "-", attempts[16] = "-";
        time_t tt = (time_t)json_integer_value(json_object_get(l, "time"));
        struct tm tm;
        const char *cells[6];
        if (tt > 0 && gmtime_r(&tt, &tm) != NULL)
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        if (json_is_integer(json_object_get(l, "attempts")))
            snprintf(attempts, sizeof(attempts), "%d",
                     (int)json_integer_value(json_object_get(l, "attempts")));
        cells[0] = when;
        cells[1] = field(l, "id");
        cells[2] = field(l, "queue");
        cells[3] = field(l, "handler");
        cells[4] = attempts;
        cells[5] = field(l, "raw") ? "(not a letter qworker wrote)" : field(l, "reason");
        table_add(t, cells);
    }
    table_print(t);
    table_free(t);
}

static int output(struct ctl *c, json_t *all)
{
    if (c->json)
        return json_print(all) < 0 ? CTL_FAILED : CTL_OK;
    print_letters(all);
    json_decref(all);
    return CTL_OK;
}

static int list(struct ctl *c)
{
    long n = 20;
    char *end;
    redisReply *r;
    json_t *all = json_array();

    if (c->argc > 2 || (c->argc == 2 && ((n = strtol(c->argv[1], &end, 10)) < 1 || *end))) {
        fprintf(stderr, "qworkerctl: dead list [N], N a positive number\n");
        json_decref(all);
        return CTL_USAGE;
    }
    r = chunk(c, 0, n - 1);
    if (r == NULL) {
        json_decref(all);
        return c->rc.c ? CTL_FAILED : CTL_UNAVAILABLE;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            json_array_append_new(all, letter(r->element[i]));
    freeReplyObject(r);
    return output(c, all);
}

struct walk {
    int moved, failed, matched;
};

/* fn returns 1 if it moved the letter, 0 if not, -1 for a failure (said). */
typedef int (*visit)(struct ctl *c, const redisReply *raw, json_t *l, void *arg);

static void visit_one(struct ctl *c, const redisReply *raw, visit fn, void *arg, struct walk *w)
{
    json_t *l = letter(raw);
    int rc = fn(c, raw, l, arg);

    json_decref(l);
    w->moved += rc > 0;
    w->failed += rc < 0;
}

/* Every letter of task id, newest first, a chunk at a time. What fn moved out of a chunk moves
 * the next one up by as many. */
static int scan(struct ctl *c, const char *id, visit fn, void *arg, struct walk *w)
{
    for (long start = 0;;) {
        redisReply *r = chunk(c, start, start + CHUNK - 1);
        int before = w->moved;
        size_t n;

        if (r == NULL)
            return -1;
        for (size_t k = 0; k < r->elements; k++) {
            const redisReply *raw = r->element[k];
            json_t *l = raw->type == REDIS_REPLY_STRING ? letter(raw) : NULL;
            bool match = field(l, "id") != NULL && strcmp(field(l, "id"), id) == 0;
            json_decref(l);
            if (match) {
                w->matched++;
                visit_one(c, raw, fn, arg, w);
            }
        }
        n = r->elements;
        freeReplyObject(r);
        if (c->rc.c == NULL)
            return -1;
        if (n < CHUNK)
            return 0;
        start += CHUNK - (w->moved - before);
    }
}

/* Every letter there was at the start, oldest first (so that retried ones keep their order in
 * the queue), taking the oldest chunk again after each pass: what moved (here, or by another
 * operator) is simply not there any more, and the letters left in place (said why) are stepped
 * over. Bounded by the length at the start: retried tasks that die again, or new letters, wait
 * for the next run. */
static int drain(struct ctl *c, visit fn, void *arg, struct walk *w)
{
    redisReply *len = ctl_command(c, "LLEN %s:dead", c->conf->prefix);
    long long left;

    if (len == NULL || len->type != REDIS_REPLY_INTEGER) {
        ctl_redis_failed(c, "LLEN", len);
        freeReplyObject(len);
        return -1;
    }
    left = len->integer;
    freeReplyObject(len);
    while (left > 0) {
        long skip = w->failed;
        redisReply *r = chunk(c, -(CHUNK + skip), -(1 + skip));
        int before = w->moved + w->failed;

        if (r == NULL)
            return -1;
        for (size_t k = r->elements; k-- > 0 && c->rc.c != NULL && left > 0;)
            if (r->element[k]->type == REDIS_REPLY_STRING) {
                w->matched++;
                left--;
                visit_one(c, r->element[k], fn, arg, w);
            }
        freeReplyObject(r);
        if (c->rc.c == NULL)
            return -1;
        if (w->moved + w->failed == before)
            return 0; /* nothing more there (others moved the rest) */
    }
    return 0;
}

static int collect(struct ctl *c, const redisReply *raw, json_t *l, void *arg)
{
    (void)c;
    (void)raw;
    json_array_append(arg, l);
    return 0;
}

static int show(struct ctl *c)
{
    struct walk w = {0};
    json_t *all = json_array();

    if (c->argc != 2) {
        fprintf(stderr, "qworkerctl: dead show ID\n");
        json_decref(all);
        return CTL_USAGE;
    }
    if (scan(c, c->argv[1], collect, all, &w) < 0) {
        json_decref(all);
        return c->rc.c ? CTL_FAILED : CTL_UNAVAILABLE;
    }
    if (w.matched == 0) {
        print_safe(stderr, "qworkerctl: no dead letter of task ", c->argv[1]);
        json_decref(all);
        return CTL_FAILED;
    }
    if (c->json)
        return json_print(all) < 0 ? CTL_FAILED : CTL_OK;
    {
        size_t i;
        json_t *l;
        json_array_foreach(all, i, l)
        {
            const char *key;
            json_t *v;
            if (i > 0)
                putchar('\n');
            json_object_foreach(l, key, v)
            {
                char label[64];
                char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY);
                snprintf(label, sizeof(label), "%-15s ", key);
                print_safe(stdout, label, text ? text : json_string_value(v));
                free(text);
            }
        }
    }
    json_decref(all);
    return CTL_OK;
}

/* The payload to push back: "payload" as it is, "payload_base64" decoded, or "" for a payload
 * kept in the payloads hash (payload_ref). */
static char *payload_of(json_t *l, size_t *len)
{
    const char *p = field(l, "payload"), *b = field(l, "payload_base64");

    if (p != NULL) {
        char *copy;
        *len = json_string_length(json_object_get(l, "payload"));
        copy = malloc(*len + 1);
        return copy ? memcpy(copy, p, *len + 1) : NULL;
    }
    if (b != NULL)
        return base64_decode(b, len);
    if (field(l, "payload_ref") != NULL) {
        *len = 0;
        return strdup("");
    }
    return NULL;
}

struct move_args {
    bool retry;
    const char *queue; /* --queue, or NULL: the letter's own */
};

static int move(struct ctl *c, const redisReply *raw, json_t *l, void *arg)
{
    const struct move_args *m = arg;
    const char *ref = field(l, "payload_ref") ? field(l, "payload_ref") : "";
    const char *queue = m->queue ? m->queue : field(l, "queue");
    char dead[256], payloads[256];
    const char *keys[3] = {dead, payloads, queue};
    const char *args[3];
    size_t arglens[3], len = 0;
    char *payload = m->retry ? payload_of(l, &len) : strdup("");
    redisReply *r;
    int rc;

    if (payload == NULL || (m->retry && queue == NULL)) {
        fprintf(stderr, "qworkerctl: a dead letter %s: left where it is\n",
                payload == NULL ? "without a payload qworker can push" : "names no queue");
        free(payload);
        return -1;
    }
    snprintf(dead, sizeof(dead), "%s:dead", c->conf->prefix);
    snprintf(payloads, sizeof(payloads), "%s:dead:payloads", c->conf->prefix);
    args[0] = raw->str;
    arglens[0] = raw->len;
    args[1] = ref;
    arglens[1] = strlen(ref);
    args[2] = payload;
    arglens[2] = len;
    r = script_run(&c->rc, SCRIPT_DEAD_MOVE, m->retry ? 3 : 2, keys, NULL, 3, args, arglens);
    free(payload);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 0 || r->integer > 1) {
        ctl_redis_failed(c, m->retry ? "dead retry" : "dead purge", r);
        freeReplyObject(r);
        return -1;
    }
    rc = (int)r->integer;
    freeReplyObject(r);
    return rc;
}

static int retry_or_purge(struct ctl *c, bool retry)
{
    struct move_args m = {.retry = retry};
    struct walk w = {0};
    const char *target = NULL;
    bool all = false;

    for (int i = 1; i < c->argc; i++) {
        if (strcmp(c->argv[i], "--all") == 0)
            all = true;
        else if (retry && strcmp(c->argv[i], "--queue") == 0 && i + 1 < c->argc)
            m.queue = c->argv[++i];
        else if (target == NULL && c->argv[i][0] != '-')
            target = c->argv[i];
        else
            target = "", all = true; /* both, or an unknown option: refused below */
    }
    if (all == (target != NULL)) {
        fprintf(stderr, "qworkerctl: dead %s ID|--all%s\n", retry ? "retry" : "purge",
                retry ? " [--queue Q]" : "");
        return CTL_USAGE;
    }
    if ((all ? drain(c, move, &m, &w) : scan(c, target, move, &m, &w)) < 0)
        return c->rc.c == NULL ? CTL_UNAVAILABLE : CTL_FAILED;
    if (c->json) {
        json_print(json_pack("{s:i, s:i}", retry ? "retried" : "purged", w.moved, "failed",
                             w.failed));
    } else {
        printf("%s %d dead letter(s)", retry ? "retried" : "purged", w.moved);
        if (w.failed > 0)
            printf(", %d left where they are (above: why)", w.failed);
        putchar('\n');
    }
    if (!all && w.matched == 0) {
        print_safe(stderr, "qworkerctl: no dead letter of task ", target);
        return CTL_FAILED;
    }
    return w.failed > 0 ? CTL_FAILED : CTL_OK;
}

int ctl_dead(struct ctl *c)
{
    const char *sub = c->argc > 0 ? c->argv[0] : "";

    if (strcmp(sub, "list") == 0)
        return list(c);
    if (strcmp(sub, "show") == 0)
        return show(c);
    if (strcmp(sub, "retry") == 0)
        return retry_or_purge(c, true);
    if (strcmp(sub, "purge") == 0)
        return retry_or_purge(c, false);
    fprintf(stderr, "qworkerctl: dead list|show|retry|purge\n");
    return CTL_USAGE;
}
