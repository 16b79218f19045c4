#include "handler_sleep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "loop.h"
#include "task.h"

/* Longer than any number of seconds worth writing ("86400.000001"), short enough for the stack. */
#define SECONDS_TEXT_MAX 32

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* digits [ "." digits ]: the whole grammar, so that strtod's extras (hex, inf, nan, exponents,
 * leading spaces) are refused rather than half-accepted. */
static bool is_plain_decimal(const char *s, size_t len)
{
    size_t i = 0, int_digits = 0, frac_digits = 0;

    while (i < len && is_digit(s[i])) {
        i++;
        int_digits++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            i++;
            frac_digits++;
        }
        if (frac_digits == 0)
            return false;
    }
    return int_digits > 0 && i == len;
}

int sleep_parse_seconds(const char *payload, size_t len, double max, double *seconds, char *reason,
                        size_t reasonlen)
{
    char text[SECONDS_TEXT_MAX + 1], shown[96];
    double v;

    if (len == 0) {
        snprintf(reason, reasonlen, "empty payload: expected a number of seconds");
        return -1;
    }
    payload_excerpt(payload, len, 32, shown, sizeof(shown));
    if (len > SECONDS_TEXT_MAX) {
        snprintf(reason, reasonlen, "payload too long for a number of seconds (%zu bytes): %s", len,
                 shown);
        return -1;
    }
    if (!is_plain_decimal(payload, len)) {
        const char *what = (payload[0] == '-' && len > 1 && is_plain_decimal(payload + 1, len - 1))
                               ? "negative number of seconds"
                               : "not a plain number of seconds";
        snprintf(reason, reasonlen, "%s: %s", what, shown);
        return -1;
    }
    memcpy(text, payload, len);
    text[len] = '\0';
    v = strtod(text, NULL);
    if (!isfinite(v) || v > max) {
        snprintf(reason, reasonlen, "%s seconds is more than max_seconds (%g)", shown, max);
        return -1;
    }
    *seconds = v;
    return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;

    (void)fd;
    (void)what;
    loop_task_done(t->loop, t, OUTCOME_OK);
}

/* The seconds: the plain payload, or an envelope's "args" (a number, a string, or an array of
 * one of either). */
static int parse_seconds(struct task *t, const char *text, size_t len, double *seconds)
{
    char reason[TASK_REASON_MAX];

    if (sleep_parse_seconds(text, len, t->handler->max_seconds, seconds, reason, sizeof(reason)) < 0) {
        task_set_reason(t, "%s", reason);
        return -1;
    }
    return 0;
}

static int task_seconds(struct task *t, double *seconds)
{
    const json_t *a = t->args;
    char text[64];

    if (t->json == NULL)
        return parse_seconds(t, t->payload, t->len, seconds);
    if (json_is_array(a) && json_array_size(a) == 1)
        a = json_array_get(a, 0);
    if (json_is_number(a)) {
        if (json_number_value(a) < 0) {
            task_set_reason(t, "negative number of seconds");
            return -1;
        }
        snprintf(text, sizeof(text), "%.6f", json_number_value(a));
        return parse_seconds(t, text, strlen(text), seconds);
    }
    if (json_is_string(a))
        return parse_seconds(t, json_string_value(a), json_string_length(a), seconds);
    task_set_reason(t, "\"args\" must be a number of seconds for handler %s", t->handler->name);
    return -1;
}

static int sleep_start(struct loop *loop, struct task *t)
{
    double seconds;
    struct timeval tv;

    if (task_seconds(t, &seconds) < 0) {
        t->outcome = OUTCOME_INVALID;
        return -1;
    }
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)llround((seconds - (double)tv.tv_sec) * 1e6);
    if (tv.tv_usec >= 1000000) {
        tv.tv_sec++;
        tv.tv_usec -= 1000000;
    }
    t->sleep_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    evtimer_assign(&t->timer, loop_base(loop), on_timer, t);
    evtimer_add(&t->timer, loop_timeout(loop, &tv));
    return 0;
}

static void sleep_cancel(struct loop *loop, struct task *t)
{
    (void)loop;
    evtimer_del(&t->timer);
}

static void sleep_stop(struct loop *loop, struct task *t)
{
    evtimer_del(&t->timer);
    task_set_reason(t, "cancelled (qworkerctl cancel) while it ran");
    loop_task_done(loop, t, OUTCOME_CANCELLED);
}

const struct handler_ops handler_sleep_ops = {
    .start = sleep_start,
    .cancel = sleep_cancel,
    .stop = sleep_stop,
};
