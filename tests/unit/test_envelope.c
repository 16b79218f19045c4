/* What a payload asks for: plain payloads, envelopes, retries and dead letters coming back, and
 * every way an envelope can be wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "envelope.h"

static struct handler_conf handlers[] = {
    {.name = "sleep", .type = HANDLER_SLEEP, .max_seconds = 60},
    {.name = "echo",
     .type = HANDLER_EXEC,
     .timeout = 2,
     .timeout_max = 3,
     .max_attempts = 3,
     .max_attempts_max = 4},
    {.name = "feed",
     .type = HANDLER_EXEC,
     .args_stdin = true,
     .timeout = 60,
     .timeout_max = 60,
     .max_attempts = 3,
     .max_attempts_max = 3},
};
static struct queue_conf queues[] = {{.name = "queue", .handler = &handlers[0]},
                                     {.name = "jobs", .handler = &handlers[1]}};
static struct config conf = {
    .queues = queues, .nqueues = 2, .handlers = handlers, .nhandlers = 3, .max_payload = 4096};

static struct task *parse(int queue, const char *payload, int *rc)
{
    struct task *t = task_new(&queues[queue], payload, strlen(payload));

    assert_non_null(t);
    *rc = envelope_parse(t, &conf);
    return t;
}

static void plain_payloads_go_to_the_queue_handler(void **state)
{
    int rc;
    struct task *t = parse(0, "5", &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_ptr_equal(t->handler, &handlers[0]);
    assert_null(t->json);
    assert_string_equal(t->label, t->id);
    task_free(t);
    t = parse(1, "[\"not\", \"an object\"]", &rc);
    assert_int_equal(rc, 0);
    assert_ptr_equal(t->handler, &handlers[1]);
    assert_null(t->json);
    task_free(t);
}

static void envelopes_name_handler_args_and_limits(void **state)
{
    int rc;
    struct task *t = parse(0,
                           " {\"handler\": \"echo\", \"args\": [\"a\", \"b c\"], \"id\": \"job-7\","
                           " \"timeout\": 2.5, \"max_attempts\": 4, \"delay\": 0}",
                           &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_ptr_equal(t->handler, &handlers[1]);
    assert_string_equal(t->label, "job-7");
    assert_int_equal(json_array_size(t->args), 2);
    assert_true(t->timeout == 2.5);
    assert_int_equal(t->max_attempts, 4);
    task_free(t);
    /* stdin delivery takes any JSON value as args */
    t = parse(0, "{\"handler\": \"feed\", \"args\": {\"k\": [1, 2]}}", &rc);
    assert_int_equal(rc, 0);
    task_free(t);
}

static void retries_and_dead_letters_unwrap(void **state)
{
    int rc;
    struct task *t = parse(1,
                           "{\"payload\": \"{\\\"handler\\\": \\\"echo\\\", \\\"delay\\\": 5}\","
                           " \"attempt\": 3, \"id\": \"first-id\", \"ready\": true}",
                           &rc);

    (void)state;
    assert_int_equal(rc, 0);
    assert_int_equal(t->attempt, 3);
    assert_true(t->delay == 0); /* served already */
    assert_string_equal(t->label, "first-id");
    assert_ptr_equal(t->handler, &handlers[1]);
    task_free(t);
    /* A dead letter moved back: a first attempt of the payload it keeps. */
    t = parse(1, "{\"payload\": \"plain\", \"queue\": \"jobs\", \"reason\": \"exited with status 1\","
                 " \"attempts\": 3}",
              &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->attempt, 1);
    assert_int_equal(t->len, 5);
    assert_memory_equal(t->payload, "plain", 5);
    task_free(t);
    /* A wrapper's id is held to the same limit as an envelope's. */
    {
        char p[400];
        snprintf(p, sizeof(p), "{\"payload\": \"plain\", \"attempt\": 2, \"id\": \"%0129d\"}", 0);
        t = parse(1, p, &rc);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(t->reason, "\"id\" must be a string of 1 to 128 bytes"));
        task_free(t);
    }
    t = parse(1, "{\"payload_base64\": \"AP8=\", \"reason\": \"x\"}", &rc); /* "\0\xff" */
    assert_int_equal(rc, -1);                                              /* NUL: not an arg */
    assert_non_null(strstr(t->reason, "NUL byte"));
    task_free(t);
}

static void tasks_recovered_too_often_are_poison(void **state)
{
    int rc;
    struct task *t;

    (void)state;
    conf.max_recoveries = 3;
    t = parse(1, "{\"payload\": \"plain\", \"recoveries\": 2}", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->recoveries, 2);
    assert_int_equal(t->attempt, 1);
    task_free(t);
    t = parse(0, "{\"payload_base64\": \"NQ==\", \"recoveries\": 3}", &rc); /* "5" */
    assert_int_equal(rc, -1);
    assert_string_equal(t->reason, "poison");
    assert_ptr_equal(t->handler, &handlers[0]); /* the dead letter names its handler */
    task_free(t);
    conf.max_recoveries = 0; /* never */
    t = parse(0, "{\"payload\": \"5\", \"recoveries\": 50}", &rc);
    assert_int_equal(rc, 0);
    task_free(t);
}

static void bad_envelopes_say_why(void **state)
{
    static const struct {
        const char *payload;
        const char *reason;
    } cases[] = {
        {"{\"handler\": ", "invalid JSON"},
        {"{\"args\": []}", "needs \"handler\""},
        {"{\"handler\": 5}", "needs \"handler\""},
        {"{\"handler\": \"nope\"}", "unknown handler \"nope\""},
        {"{\"handler\": \"echo\", \"args\": \"a\"}", "must be an array of strings"},
        {"{\"handler\": \"echo\", \"args\": [\"a\", null]}", "\"args\"[1] must be a string"},
        {"{\"handler\": \"echo\", \"timeout\": 0}", "\"timeout\" must be a positive number"},
        {"{\"handler\": \"echo\", \"timeout\": null}", "\"timeout\" must be a positive number"},
        {"{\"handler\": \"echo\", \"timeout\": -1}", "\"timeout\" must be a positive number"},
        {"{\"handler\": \"echo\", \"delay\": -1}", "\"delay\" must be a non-negative number"},
        {"{\"handler\": \"echo\", \"max_attempts\": 1.5}", "\"max_attempts\" must be a whole"},
        {"{\"handler\": \"echo\", \"id\": \"\"}", "\"id\" must be a string"},
        {"{\"handler\": \"echo\", \"handler\": \"sleep\"}", "invalid JSON"},
        {"{\"handler\": \"echo\", \"colour\": 1}", "unknown field \"colour\""},
        {"{\"handler\": \"echo\", \"args\": [\"\\u0000\"]}", "invalid JSON"},
        {"{\"payload\": 5, \"attempt\": 2}", "needs a \"payload\" string"},
        {"{\"handler\": \"echo\", \"then\": 5}", "\"then\" must be an envelope"},
        {"{\"handler\": \"echo\", \"then\": {\"args\": []}}", "\"then\" must be an envelope"},
        {"{\"handler\": \"echo\", \"then\": {\"handler\": \"echo\", \"queue\": \"\"}}",
         "\"queue\" must be a queue's name"},
        {"{\"handler\": \"echo\", \"then\": {\"handler\": \"echo\", \"queue\": 7}}",
         "\"queue\" must be a queue's name"},
        {"{\"handler\": \"echo\", \"queue\": \"q\"}", "unknown field \"queue\""},
        /* A payload never raises the operator's limits. */
        {"{\"handler\": \"echo\", \"timeout\": 3.5}",
         "\"timeout\" 3.5 is over what handler \"echo\" allows (timeout_max 3)"},
        {"{\"handler\": \"echo\", \"max_attempts\": 5}",
         "\"max_attempts\" 5 is over what handler \"echo\" allows (max_attempts_max 4)"},
        {"{\"handler\": \"feed\", \"max_attempts\": 1000}", "(max_attempts_max 3)"},
        {"{\"handler\": \"feed\", \"timeout\": 31536000}", "(timeout_max 60)"},
    };
    int rc;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct task *t = parse(0, cases[i].payload, &rc);
        if (rc != -1 || strstr(t->reason, cases[i].reason) == NULL)
            fail_msg("case %zu (%s): rc %d, reason \"%s\"", i, cases[i].payload, rc, t->reason);
        task_free(t);
    }
}

/* A JSON envelope for handler "echo" with n arguments of len bytes each. */
static char *args_envelope(int n, size_t len)
{
    size_t cap = 64 + (size_t)n * (len + 3);
    char *p = malloc(cap), *w = p;

    assert_non_null(p);
    w += sprintf(w, "{\"handler\": \"echo\", \"args\": [");
    for (int i = 0; i < n; i++) {
        *w++ = '"';
        memset(w, 'a', len);
        w += len;
        *w++ = '"';
        if (i + 1 < n)
            *w++ = ',';
    }
    strcpy(w, "]}");
    return p;
}

/* execve would say E2BIG: such a task is invalid at once, not a failure retried. */
static void arguments_the_kernel_refuses_are_invalid(void **state)
{
    static const struct {
        int n;
        size_t len;
        const char *reason; /* NULL: it fits */
    } cases[] = {
        {1, 131071, NULL},
        {1, 131072, "\"args\"[0] is 131072 bytes, over the 131071 the kernel takes"},
        {70, 100000, "the arguments and environment take"},
    };
    char *big = malloc(200001);
    struct task *t;
    int rc;

    (void)state;
    conf.max_payload = 16 << 20;
    memset(big, '1', 200000);
    big[200000] = '\0';
    t = parse(1, big, &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(t->reason, "the payload is 200000 bytes, over the 131071"));
    task_free(t);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *p = args_envelope(cases[i].n, cases[i].len);
        t = parse(1, p, &rc);
        if (cases[i].reason == NULL ? rc != 0
                                    : rc != -1 || strstr(t->reason, cases[i].reason) == NULL)
            fail_msg("case %zu: rc %d, reason \"%s\"", i, rc, t->reason);
        task_free(t);
        free(p);
    }
    /* On stdin the same arguments are fine. */
    {
        char *p = args_envelope(70, 100000);
        memcpy(p + 13, "feed", 4);
        t = parse(1, p, &rc);
        assert_int_equal(rc, 0);
        task_free(t);
        free(p);
    }
    conf.max_payload = 4096;
    free(big);
}

static void payloads_over_max_payload_are_refused(void **state)
{
    char *big = malloc(5000);
    struct task *t;

    (void)state;
    memset(big, '1', 4999);
    big[4999] = '\0';
    t = task_new(&queues[0], big, 4999);
    assert_int_equal(envelope_parse(t, &conf), -1);
    assert_non_null(strstr(t->reason, "payload too large: 4999 bytes (max_payload is 4096)"));
    task_free(t);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_payloads_go_to_the_queue_handler),
        cmocka_unit_test(envelopes_name_handler_args_and_limits),
        cmocka_unit_test(retries_and_dead_letters_unwrap),
        cmocka_unit_test(tasks_recovered_too_often_are_poison),
        cmocka_unit_test(bad_envelopes_say_why),
        cmocka_unit_test(payloads_over_max_payload_are_refused),
        cmocka_unit_test(arguments_the_kernel_refuses_are_invalid),
    };
    return cmocka_run_group_tests_name("envelopes", tests, NULL, NULL);
}
