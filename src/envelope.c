#include "envelope.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "isolate.h"
#include "unique.h"
#include "wire.h"


static const char *const fields[] = {"id",    "handler", "args",         "timeout",
                                     "delay", "attempt", "max_attempts", "then", "unique_for",
                                     NULL};

static int invalid(struct task *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int invalid(struct task *t, const char *fmt, ...)
{
    char buf[TASK_REASON_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    task_set_reason(t, "%s", buf);
    return -1;
}

/* A number of seconds in (0, max] (or [0, max] when zero is allowed). */
static int seconds_field(struct task *t, const json_t *o, const char *name, bool zero_ok,
                         double max, double *out)
{
    const json_t *v = json_object_get(o, name);
    double d;

    if (v == NULL)
        return 0;
    d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(d >= 0 && d <= max) || (!zero_ok && d == 0))
        return invalid(t, "\"%s\" must be a %s number of seconds up to %g", name,
                       zero_ok ? "non-negative" : "positive", max);
    *out = d;
    return 0;
}

static int int_field(struct task *t, const json_t *o, const char *name, int max, int *out)
{
    const json_t *v = json_object_get(o, name);

    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return invalid(t, "\"%s\" must be a whole number from 1 to %d", name, max);
    *out = (int)json_integer_value(v);
    return 0;
}

/* args = ["a", "b"] for argv delivery; any JSON value for stdin delivery. */
static int check_args(struct task *t)
{
    size_t i;
    json_t *a;

    if (t->args == NULL || t->handler->type != HANDLER_EXEC || t->handler->args_stdin)
        return 0;
    if (!json_is_array(t->args))
        return invalid(t, "\"args\" must be an array of strings for handler %s", t->handler->name);
    json_array_foreach(t->args, i, a) if (!json_is_string(a)) return invalid(
        t, "\"args\"[%zu] must be a string for handler %s", i, t->handler->name);
    return 0;
}

/* An envelope may lower its handler's limits, never raise them: the payload comes from whoever
 * can push, the limits from the operator (timeout_max and max_attempts_max allow more). */
static int check_limits(struct task *t)
{
    const struct handler_conf *h = t->handler;

    if (h->type != HANDLER_EXEC)
        return 0;
    if (t->timeout > h->timeout_max)
        return invalid(t, "\"timeout\" %g is over what handler \"%.40s\" allows (timeout_max %g)",
                       t->timeout, h->name, h->timeout_max);
    if (t->max_attempts > h->max_attempts_max)
        return invalid(t,
                       "\"max_attempts\" %d is over what handler \"%.40s\" allows "
                       "(max_attempts_max %d)",
                       t->max_attempts, h->name, h->max_attempts_max);
    return 0;
}

/* execve refuses (E2BIG) an argument over MAX_ARG_STRLEN, or arguments and environment that
 * together, pointers included, pass a quarter of the stack limit: such a task can never run, so
 * it is invalid rather than a failure to retry. */
#define ARG_STRLEN_MAX ((size_t)32 * 4096)
#define ARG_TOTAL_CAP (6 << 20) /* the kernel's own cap: 3/4 of _STK_LIM */
#define ENV_VAR_MAX ((size_t)256) /* each QWORKER_* variable (build_env in handler_exec.c) */

static int check_argv_size(struct task *t)
{
    const struct handler_conf *h = t->handler;
    long arg_max = sysconf(_SC_ARG_MAX);
    size_t limit = arg_max > 0 && arg_max < ARG_TOTAL_CAP ? (size_t)arg_max : ARG_TOTAL_CAP;
    size_t n = 0, bytes = 0, i;
    json_t *a;

    if (h->type != HANDLER_EXEC || h->args_stdin)
        return 0;
    if (t->json == NULL) {
        if (t->len + 1 > ARG_STRLEN_MAX)
            return invalid(t, "the payload is %zu bytes, over the %zu the kernel takes as one "
                              "argument (args = \"stdin\" takes any size)",
                           t->len, ARG_STRLEN_MAX - 1);
        n++;
        bytes += t->len + 1;
    } else if (t->args != NULL) {
        json_array_foreach(t->args, i, a)
        {
            size_t len = json_string_length(a);
            if (len + 1 > ARG_STRLEN_MAX)
                return invalid(t, "\"args\"[%zu] is %zu bytes, over the %zu the kernel takes as "
                                  "one argument",
                               i, len, ARG_STRLEN_MAX - 1);
            n++;
            bytes += len + 1;
        }
    }
    for (int j = 0; j < h->argc; j++, n++)
        bytes += strlen(h->argv[j]) + 1;
    for (int j = 0; h->env != NULL && h->env[j] != NULL; j++, n++)
        bytes += strlen(h->env[j]) + 1;
    n += 3 + ISOLATE_ARGS;
    bytes += 3 * ENV_VAR_MAX + ISOLATE_ARG_BYTES;
    if (bytes + n * sizeof(char *) > limit)
        return invalid(t, "the arguments and environment take %zu bytes, over the %zu the kernel "
                          "takes (a quarter of the stack limit)",
                       bytes + n * sizeof(char *), limit);
    return 0;
}

/* A task qworker wrapped: a retry or a delayed task coming back from the schedule ({"payload",
 * "attempt", "id", "ready"}), or a dead letter moved back into a queue ({"payload", "reason",
 * ...}), which runs again as a first attempt. The payload it keeps is parsed as the task. */
/* "then": the envelope of the next step of a chain, with an optional "queue" to push it to
 * (this task's queue otherwise). Checked for its shape now; the rest when it runs. */
static int parse_then(struct task *t, const json_t *o, const struct config *conf)
{
    const json_t *then = json_object_get(o, "then"), *q;
    json_t *next;

    if (then == NULL)
        return 0;
    if (!json_is_object(then) || !json_is_string(json_object_get(then, "handler")))
        return invalid(t, "\"then\" must be an envelope: an object with a \"handler\"");
    q = json_object_get(then, "queue");
    if (q != NULL && (!json_is_string(q) || json_string_length(q) == 0 ||
                      json_string_length(q) > TASK_LABEL_MAX ||
                      strlen(json_string_value(q)) != json_string_length(q)))
        return invalid(t, "\"then\": \"queue\" must be a queue's name (1 to %d bytes)",
                       TASK_LABEL_MAX);
    /* qworker's own keys are not queues: a payload must not write into them. */
    if (q != NULL && strncmp(json_string_value(q), conf->prefix, strlen(conf->prefix)) == 0 &&
        json_string_value(q)[strlen(conf->prefix)] == ':')
        return invalid(t, "\"then\": \"queue\" \"%.60s\" is one of qworker's own keys (%s:...)",
                       json_string_value(q), conf->prefix);
    next = json_copy((json_t *)then); /* shallow: its members are shared, not changed */
    if (next == NULL || (q != NULL && json_object_del(next, "queue") < 0)) {
        json_decref(next);
        return invalid(t, "out of memory");
    }
    t->then = json_dumps(next, JSON_COMPACT);
    json_decref(next);
    if (t->then == NULL || (q != NULL && (t->then_queue = strdup(json_string_value(q))) == NULL))
        return invalid(t, "out of memory");
    t->then_len = strlen(t->then);
    return 0;
}

/* NOLINTNEXTLINE(misc-no-recursion): one level per wrapper, each strictly shorter */
static int unwrap(struct task *t, json_t *o, const struct config *conf)
{
    struct wire_wrapped w;
    const char *why;

    if (wire_read_wrapper(o, &w, &why) < 0)
        return invalid(t, "%s", why);
    memcpy(t->payload, w.payload, w.len); /* never longer than the JSON around it */
    t->len = w.len;
    free(w.payload);
    /* The outermost wrapper's id: it is the newest, and a nested one must not leak it. */
    if (w.id != NULL && t->label_own == NULL)
        t->label_own = strdup(w.id);
    json_decref(o); /* w.id points into it: not used past here */
    t->json = NULL;
    t->args = NULL;
    if (envelope_parse(t, conf) < 0)
        return -1;
    t->attempt = w.attempt;
    t->recoveries = w.recoveries;
    /* Workers running it keep dying (the requeue scripts count): it is the likeliest cause. */
    if (conf->max_recoveries > 0 && w.recoveries >= conf->max_recoveries)
        return invalid(t, "poison");
    if (w.ready)
        t->delay = 0;
    if (t->label_own != NULL)
        t->label = t->label_own;
    return 0;
}

/* NOLINTNEXTLINE(misc-no-recursion): one level per wrapper, each strictly shorter */
static int parse_object(struct task *t, const struct config *conf)
{
    json_error_t err;
    json_t *o = json_loadb(t->payload, t->len, JSON_REJECT_DUPLICATES, &err), *v;
    const char *key, *name, *why;
    const struct handler_conf *handler = NULL;
    double seconds;

    if (o == NULL)
        return invalid(t, "invalid JSON at byte %d: %s", err.position, err.text);
    t->json = o;
    if (!json_is_object(o))
        return invalid(t, "a JSON envelope must be an object");
    if (wire_is_wrapper(o))
        return unwrap(t, o, conf);
    json_object_foreach(o, key, v)
    {
        bool known = false;
        for (int i = 0; fields[i] != NULL; i++)
            known = known || strcmp(key, fields[i]) == 0;
        if (!known)
            return invalid(t, "unknown field \"%.40s\" in the envelope", key);
    }
    /* The id first: a task refused for what follows is found in the dead list by its id. */
    v = json_object_get(o, "id");
    if (v != NULL) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > TASK_LABEL_MAX)
            return invalid(t, "\"id\" must be a string of 1 to %d bytes", TASK_LABEL_MAX);
        t->label = json_string_value(v);
    }
    if (unique_fields(o, &name, &seconds, &why) < 0)
        return invalid(t, "%s", why);
    v = json_object_get(o, "handler");
    if (!json_is_string(v))
        return invalid(t, "the envelope needs \"handler\": a string");
    name = json_string_value(v);
    for (int i = 0; i < conf->nhandlers && handler == NULL; i++)
        if (strcmp(conf->handlers[i].name, name) == 0)
            handler = &conf->handlers[i];
    if (handler == NULL)
        return invalid(t, "unknown handler \"%.40s\"", name);
    t->handler = handler;
    t->args = json_object_get(o, "args");
    if (seconds_field(t, o, "timeout", false, 31536000, &t->timeout) < 0 ||
        seconds_field(t, o, "delay", true, 31536000, &t->delay) < 0 ||
        int_field(t, o, "max_attempts", 1000, &t->max_attempts) < 0 ||
        int_field(t, o, "attempt", 1000, &t->attempt) < 0 || check_limits(t) < 0 ||
        check_args(t) < 0 || parse_then(t, o, conf) < 0)
        return -1;
    return check_argv_size(t);
}

/* NOLINTNEXTLINE(misc-no-recursion): one level per wrapper, each strictly shorter */
int envelope_parse(struct task *t, const struct config *conf)
{
    if (t->len > (size_t)conf->max_payload)
        return invalid(t, "payload too large: %zu bytes (max_payload is %d)", t->len,
                       conf->max_payload);
    t->handler = t->queue->handler;
    if (!task_is_envelope(t)) {
        if (t->handler->type == HANDLER_EXEC && !t->handler->args_stdin &&
            memchr(t->payload, '\0', t->len) != NULL)
            return invalid(t, "payload holds a NUL byte, which cannot be passed as an argument");
        return check_argv_size(t);
    }
    return parse_object(t, conf);
}
