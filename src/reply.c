#include "reply.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"

static bool starts(const redisReply *r, const char *code)
{
    size_t n = strlen(code);

    return r->len >= n && strncmp(r->str, code, n) == 0 && (r->len == n || r->str[n] == ' ');
}

/* Inside a script Redis reports a denied key as a plain ERR. */
static bool denied_in_script(const redisReply *r)
{
    return starts(r, "ERR") && (strstr(r->str, "can't access") != NULL ||
                                strstr(r->str, "no permissions") != NULL);
}

static enum rclass error_class(const redisReply *r)
{
    static const char *const retry[] = {"OOM",     "BUSY",       "TRYAGAIN", "EXECABORT",
                                        "MISCONF", "NOSCRIPT",   "NOREPLICAS", "BUSYKEY",
                                        NULL};
    static const char *const reconnect[] = {"LOADING", "READONLY", "UNBLOCKED", "MASTERDOWN",
                                            NULL};
    static const char *const denied[] = {"NOPERM", "NOAUTH", "WRONGPASS", NULL};

    if (r->str == NULL)
        return RC_FAILED;
    for (int i = 0; reconnect[i] != NULL; i++)
        if (starts(r, reconnect[i]))
            return RC_RECONNECT;
    for (int i = 0; retry[i] != NULL; i++)
        if (starts(r, retry[i]))
            return RC_RETRY;
    for (int i = 0; denied[i] != NULL; i++)
        if (starts(r, denied[i]))
            return RC_DENIED;
    if (starts(r, "WRONGTYPE"))
        return RC_WRONG_KEY;
    if (denied_in_script(r))
        return RC_DENIED;
    return RC_FAILED;
}

enum rclass reply_class(const redisReply *reply, int want)
{
    if (reply == NULL)
        return RC_RECONNECT;
    if (reply->type == REDIS_REPLY_ERROR)
        return error_class(reply);
    if (want != 0 && reply->type != want)
        return RC_FAILED;
    return RC_OK;
}

const char *rclass_name(enum rclass c)
{
    switch (c) {
    case RC_OK:
        return "ok";
    case RC_RETRY:
        return "not done, retrying";
    case RC_RECONNECT:
        return "connection unusable";
    case RC_WRONG_KEY:
        return "key of the wrong type";
    case RC_DENIED:
        return "not allowed";
    case RC_FAILED:
        return "unexpected reply";
    }
    return "?";
}

/* Why the last reply on this thread was refused for its bounds: hiredis then reports only "Out
 * of memory". */
static __thread char bound_why[96];

bool reply_take_refusal(char *out, size_t len)
{
    if (bound_why[0] == '\0')
        return false;
    snprintf(out, len, "%s", bound_why);
    bound_why[0] = '\0';
    return true;
}

/* As hiredis 0.14's own (hiredis.c), so that freeReplyObject frees them, with the bounds. */
static redisReply *new_reply(const redisReadTask *task, int type)
{
    redisReply *r = calloc(1, sizeof(*r)), *parent;

    if (r == NULL)
        return NULL;
    r->type = type;
    if (task->parent != NULL) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    char *buf;
    redisReply *r;

    if (len > REPLY_MAX_STRING) {
        snprintf(bound_why, sizeof(bound_why), "a reply string of %zu bytes, over the bound of %u",
                 len, REPLY_MAX_STRING);
        return NULL;
    }
    if ((buf = malloc(len + 1)) == NULL)
        return NULL;
    memcpy(buf, str, len);
    buf[len] = '\0';
    if ((r = new_reply(task, task->type)) == NULL) {
        free(buf);
        return NULL;
    }
    r->str = buf;
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    redisReply **element = NULL;
    redisReply *r;

    if (elements > REPLY_MAX_ELEMENTS) {
        snprintf(bound_why, sizeof(bound_why), "a reply of %d elements, over the bound of %d",
                 elements, REPLY_MAX_ELEMENTS);
        return NULL;
    }
    if (elements > 0 && (element = calloc((size_t)elements, sizeof(redisReply *))) == NULL)
        return NULL;
    if ((r = new_reply(task, REDIS_REPLY_ARRAY)) == NULL) {
        free(element);
        return NULL;
    }
    r->element = element;
    r->elements = elements > 0 ? (size_t)elements : 0;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = new_reply(task, REDIS_REPLY_INTEGER);

    if (r != NULL)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return new_reply(task, REDIS_REPLY_NIL);
}

redisReplyObjectFunctions reply_bounded = {
    create_string, create_array, create_integer, create_nil, freeReplyObject,
};

const char *reply_text(const redisReply *reply)
{
    if (reply == NULL)
        return "connection lost";
    switch (reply->type) {
    case REDIS_REPLY_ERROR:
        return reply->str != NULL ? reply->str : "an error";
    case REDIS_REPLY_ARRAY:
        return "an array reply";
    case REDIS_REPLY_INTEGER:
        return "an integer reply";
    case REDIS_REPLY_NIL:
        return "a nil reply";
    case REDIS_REPLY_STATUS:
        return "a status reply";
    default:
        return "a string reply";
    }
}

void rcond_begin(struct rcond *c, int priority, const char *why, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    c->attempts++;
    if (c->on)
        return;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    c->on = true;
    c->since_us = clock_mono_us();
    log_msg(priority, "%s: %s", what, why);
}

void rcond_end(struct rcond *c, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    if (!c->on)
        return;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    log_notice("%s after %.1f s (%lu attempt(s))", what,
               (double)(clock_mono_us() - c->since_us) / 1e6, c->attempts);
    c->on = false;
    c->attempts = 0;
}
