#include "wire.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base64.h"
#include "task.h"

/* The payload as a JSON field: text as "payload" when it reads back byte for byte (UTF-8, no
 * NUL: jansson writes NUL as \u0000, which its reader refuses), else "payload_base64". */
static int set_payload(json_t *o, const char *p, size_t len)
{
    json_t *str = memchr(p, '\0', len) == NULL ? json_stringn(p, len) : NULL;
    char *b64;

    if (str != NULL)
        return json_object_set_new(o, "payload", str);
    b64 = base64_encode(p, len);
    if (b64 == NULL)
        return -1;
    json_t *s = json_string(b64);
    free(b64);
    return s != NULL ? json_object_set_new(o, "payload_base64", s) : -1;
}

/* A field from a text we do not control (an id, a reason): invalid UTF-8 must not make the
 * whole entry fail, so it goes through json_stringn's check and falls back to a hex form. */
static json_t *text(const char *s)
{
    json_t *v = json_string(s);
    char *hex;

    if (v != NULL)
        return v;
    hex = base64_encode(s, strlen(s));
    v = hex != NULL ? json_pack("{s:s}", "base64", hex) : NULL;
    free(hex);
    return v;
}

static char *dump(json_t *o, bool ok)
{
    char *s = ok && o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return s;
}

char *wire_wrapper(const char *payload, size_t len, int attempt, const char *id, int recoveries)
{
    json_t *o = json_object();
    bool ok = o != NULL && set_payload(o, payload, len) == 0 &&
              json_object_set_new(o, "attempt", json_integer(attempt)) == 0 &&
              json_object_set_new(o, "id", text(id)) == 0 &&
              json_object_set_new(o, "ready", json_true()) == 0 &&
              (recoveries == 0 ||
               json_object_set_new(o, "recoveries", json_integer(recoveries)) == 0);

    return dump(o, ok);
}

char *wire_task_wrapper(const struct task *t, int attempt)
{
    return wire_wrapper(t->payload, t->len, attempt, t->label, t->recoveries);
}

char *wire_schedule_member(const char *queue, const char *wrapper, const char *push)
{
    json_t *o = json_object();
    bool ok = o != NULL && json_object_set_new(o, "queue", text(queue)) == 0 &&
              json_object_set_new(o, "task", text(wrapper)) == 0 &&
              json_object_set_new(o, "push", text(push)) == 0;

    return dump(o, ok);
}

char *wire_dead_letter(const char *payload, size_t len, const char *id, const char *queue,
                       const char *handler, const char *reason, int attempts, int64_t time_s,
                       const char *worker)
{
    json_t *o = json_object();
    bool ok = o != NULL && set_payload(o, payload, len) == 0 &&
              json_object_set_new(o, "id", text(id)) == 0 &&
              json_object_set_new(o, "queue", text(queue)) == 0 &&
              json_object_set_new(o, "handler", text(handler)) == 0 &&
              json_object_set_new(o, "reason", text(reason)) == 0 &&
              json_object_set_new(o, "attempts", json_integer(attempts)) == 0 &&
              json_object_set_new(o, "time", json_integer(time_s)) == 0 &&
              json_object_set_new(o, "worker", text(worker)) == 0;

    return dump(o, ok);
}

bool wire_is_wrapper(const json_t *o)
{
    return json_object_get(o, "payload") != NULL || json_object_get(o, "payload_base64") != NULL;
}

/* A whole number from 1 to max, if present. */
static bool count_field(const json_t *o, const char *name, int max, int *out)
{
    const json_t *v = json_object_get(o, name);

    if (v == NULL)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return false;
    *out = (int)json_integer_value(v);
    return true;
}

int wire_read_wrapper(const json_t *o, struct wire_wrapped *out, const char **why)
{
    const json_t *p = json_object_get(o, "payload"), *b = json_object_get(o, "payload_base64");
    const json_t *id = json_object_get(o, "id");
    bool dead = json_object_get(o, "reason") != NULL;

    memset(out, 0, sizeof(*out));
    out->attempt = 1;
    if (!dead && !count_field(o, "attempt", 1000, &out->attempt)) {
        *why = "\"attempt\" must be a whole number from 1 to 1000";
        return -1;
    }
    if (!count_field(o, "recoveries", 1000000, &out->recoveries)) {
        *why = "\"recoveries\" must be a whole number from 1 to 1000000";
        return -1;
    }
    if (json_is_string(p)) {
        out->len = json_string_length(p);
        out->payload = malloc(out->len ? out->len : 1);
        if (out->payload != NULL)
            memcpy(out->payload, json_string_value(p), out->len);
    } else if (json_is_string(b)) {
        out->payload = base64_decode(json_string_value(b), &out->len);
    } else {
        *why = "a wrapped task needs a \"payload\" string";
        return -1;
    }
    if (out->payload == NULL) {
        *why = json_is_string(p) ? "out of memory" : "\"payload_base64\" is not base64";
        return -1;
    }
    if (!dead && id != NULL &&
        (!json_is_string(id) || json_string_length(id) == 0 ||
         json_string_length(id) > TASK_LABEL_MAX)) {
        free(out->payload);
        out->payload = NULL;
        *why = "a wrapped task's \"id\" must be a string of 1 to 128 bytes";
        return -1;
    }
    out->id = !dead && json_is_string(id) ? json_string_value(id) : NULL;
    out->ready = json_is_true(json_object_get(o, "ready"));
    return 0;
}

static bool is_int(const redisReply *r, long long lo, long long hi)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

static bool is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                         r->type == REDIS_REPLY_ERROR) && r->str != NULL;
}

int wire_fetch_reply(const redisReply *r, int nqueues, size_t max, struct fetch_reply *out,
                     const char **why)
{
    size_t head, rest;

    memset(out, 0, sizeof(*out));
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element == NULL) {
        *why = "not an array of at least three elements";
        return -1;
    }
    if (!is_int(r->element[0], 0, nqueues) || !is_int(r->element[1], 0, nqueues) ||
        !is_int(r->element[2], 0, (long long)max)) {
        *why = "bad counts of queues examined or refused, or of payloads too large";
        return -1;
    }
    out->examined = (int)r->element[0]->integer;
    out->nbad = (int)r->element[1]->integer;
    out->nlarge = (size_t)r->element[2]->integer;
    head = 3 + 2 * (size_t)out->nbad + 3 * out->nlarge;
    if (r->elements < head || (r->elements - head) % 2 != 0) {
        *why = "an element count that does not match its shape";
        return -1;
    }
    for (int i = 0; i < out->nbad; i++) {
        const redisReply *q = r->element[3 + 2 * i], *e = r->element[4 + 2 * i];
        if (!is_int(q, 0, nqueues - 1) || !is_str(e)) {
            *why = "a refused queue that is not (index, text)";
            return -1;
        }
    }
    out->bad = (const redisReply *const *)r->element + 3;
    out->large = (const redisReply *const *)r->element + 3 + 2 * (size_t)out->nbad;
    for (size_t i = 0; i < out->nlarge; i++) {
        const redisReply *const *l = out->large + 3 * i;
        if (!is_int(l[0], 0, nqueues - 1) || l[1] == NULL || l[1]->type != REDIS_REPLY_STRING ||
            l[1]->str == NULL || !is_int(l[2], 0, LLONG_MAX)) {
            *why = "a payload too large that is not (queue index, ref, length)";
            return -1;
        }
    }
    rest = (r->elements - head) / 2;
    if (rest + out->nlarge > max) {
        *why = "more tasks than were asked for";
        return -1;
    }
    for (size_t i = 0; i < rest; i++) {
        const redisReply *q = r->element[head + 2 * i], *p = r->element[head + 2 * i + 1];
        if (!is_int(q, 0, nqueues - 1) || p == NULL || p->type != REDIS_REPLY_STRING ||
            (p->str == NULL && p->len > 0)) {
            *why = "a task that is not (queue index, payload)";
            return -1;
        }
    }
    out->nitems = rest;
    out->items = (const redisReply *const *)r->element + head;
    return 0;
}

/* A string of 1 to 18 digits, as a number (anything else: -1). */
static long long digits(const redisReply *r)
{
    long long n = 0;

    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 18)
        return -1;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9')
            return -1;
        n = n * 10 + (r->str[i] - '0');
    }
    return n;
}

bool wire_time_ms(const redisReply *r, long long *ms)
{
    long long s, us;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        (s = digits(r->element[0])) < 0 || s > (1LL << 40) || (us = digits(r->element[1])) < 0 ||
        us >= 1000000)
        return false;
    *ms = s * 1000 + us / 1000;
    return true;
}

bool wire_count(const redisReply *r)
{
    return is_int(r, 0, 1LL << 40);
}

static bool counts(const redisReply *r, size_t n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!wire_count(r->element[i]))
            return false;
    return true;
}

bool wire_requeue_reply(const redisReply *r)
{
    return counts(r, 2);
}

bool wire_reap_reply(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 3 != 0)
        return false;
    for (size_t i = 0; i < r->elements; i += 3)
        if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i]->str == NULL ||
            !wire_count(r->element[i + 1]) || !wire_count(r->element[i + 2]))
            return false;
    return true;
}

bool wire_beat_reply(const redisReply *r)
{
    return is_int(r, 0, 1);
}

bool wire_claim_reply(const redisReply *r)
{
    return is_int(r, -1, 0);
}

bool wire_record_reply(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
           wire_count(r->element[0]) && wire_count(r->element[1]) && is_int(r->element[2], 0, 1);
}

bool wire_due_reply(const redisReply *r)
{
    const redisReply *next;
    char *end;
    double score;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !wire_count(r->element[0]))
        return false;
    next = r->element[1];
    if (next->type == REDIS_REPLY_NIL)
        return true;
    if (next->type != REDIS_REPLY_STRING || next->str == NULL || next->len == 0)
        return false;
    score = strtod(next->str, &end);
    /* A unix time in ms, cast to an integer by the reporter: 1e25 would overflow it. */
    return end == next->str + next->len && score >= 0 && score <= WIRE_SCORE_MAX;
}

struct fetch_large wire_fetch_large(const struct fetch_reply *f, size_t i)
{
    const redisReply *const *l = f->large + 3 * i;

    return (struct fetch_large){(int)l[0]->integer, l[1]->str, l[2]->integer};
}

struct fetch_bad wire_fetch_bad(const struct fetch_reply *f, int i)
{
    size_t at = 2 * (size_t)i;

    return (struct fetch_bad){(int)f->bad[at]->integer, f->bad[at + 1]->str};
}

struct fetch_item wire_fetch_item(const struct fetch_reply *f, size_t i)
{
    const redisReply *q = f->items[2 * i], *p = f->items[2 * i + 1];

    return (struct fetch_item){(int)q->integer, p->str, p->len};
}
