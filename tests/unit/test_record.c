/* The arguments of a record.lua call, as tests/e2e/test_wire.py feeds them to the script: the
 * acknowledge-only tasks grouped by queue, then one 5-tuple for each task that goes somewhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "record.h"
#include "task.h"

static struct handler_conf h = {.name = "sleep", .type = HANDLER_SLEEP};
static struct queue_conf q1 = {.name = "queue", .handler = &h}, q2 = {.name = "other",
                                                                      .handler = &h};

static struct task *add(struct task **tail, const struct queue_conf *q, const char *id,
                        enum outcome o)
{
    struct task *t = task_new_with_id(q, "pay", 3, id);

    assert_non_null(t);
    t->outcome = o;
    *tail = t;
    return t;
}

static void check_args(const struct record_call *c, const char *const *want, int n)
{
    assert_int_equal(c->nargs, n);
    for (int i = 0; i < n; i++) {
        char got[256];
        snprintf(got, sizeof(got), "%.*s", (int)c->arglens[i], c->args[i]);
        if (strcmp(got, want[i]) != 0 && want[i][0] != '*')
            fail_msg("argument %d: \"%s\", want \"%s\"", i, got, want[i]);
    }
}

static void a_batch_is_grouped_then_listed(void **state)
{
    struct task *head = NULL, *t, *next;
    struct record_keys k = {"qworker:inflight:w", "qworker:stats", "qworker:dead",
                            "qworker:schedule", "qworker:recorded:w", "w", true};
    struct record_call c;

    (void)state;
    t = add(&head, &q1, "0000000000000001", OUTCOME_OK);
    t = add(&t->next, &q2, "0000000000000002", OUTCOME_OK);
    t = add(&t->next, &q1, "0000000000000003", OUTCOME_OK);
    t = add(&t->next, &q1, "0000000000000004", OUTCOME_INVALID);
    t->dead = true;
    t = add(&t->next, &q2, "0000000000000005", OUTCOME_FAILED);
    t->due_ms = 1234;
    t = add(&t->next, &q1, "0000000000000006", OUTCOME_REQUEUED);
    assert_int_equal(record_build(&c, &k, "tok:7", head, 1795750000), 0);
    assert_int_equal(c.nkeys, 7);
    assert_string_equal(c.keys[0], "qworker:inflight:w");
    assert_string_equal(c.keys[4], "qworker:recorded:w");
    assert_string_equal(c.keys[5], "queue");
    assert_string_equal(c.keys[6], "other");
    {
        /* "*": an entry checked elsewhere (tests/unit/test_wire.c) */
        const char *const want[] = {
            "tok:7", "1", "2",                                         /* tag, acks, 2 groups */
            "6", "2", "0000000000000001", "0000000000000003",          /* queue: 2 acks */
            "7", "1", "0000000000000002",                              /* other: 1 ack */
            "0000000000000004", "6", "d", "", "*",                     /* dead letter */
            "0000000000000005", "7", "r", "1234", "*",                 /* retry */
            "0000000000000006", "6", "q", "", "pay",                   /* back as it came */
        };
        check_args(&c, want, (int)(sizeof(want) / sizeof(want[0])));
    }
    assert_int_equal(c.ntasks, 6);
    record_free(&c);
    /* at-most-once: counts, no ids to acknowledge */
    k.acks = false;
    assert_int_equal(record_build(&c, &k, "tok:8", head, 1795750000), 0);
    assert_string_equal(c.args[1], "0");
    assert_string_equal(c.args[4], "2");
    assert_string_equal(c.args[5], "7");
    record_free(&c);
    for (t = head; t != NULL; t = next) {
        next = t->next;
        task_free(t);
    }
}

/* A duplicate and a cancelled task are counted and go nowhere; a unique task that never ran
 * (refused, or put back) hands the key of its claim in the score's place, to be given back; one
 * that ran and failed for good keeps it. */
static void tasks_not_run_are_counted_and_give_their_claim_back(void **state)
{
    struct task *head = NULL, *t, *next;
    struct record_keys k = {"qworker:inflight:w", "qworker:stats", "qworker:dead",
                            "qworker:schedule", "qworker:recorded:w", "w", true};
    struct record_call c;

    (void)state;
    t = add(&head, &q1, "0000000000000001", OUTCOME_DUPLICATE);
    t = add(&t->next, &q1, "0000000000000002", OUTCOME_CANCELLED);
    t = add(&t->next, &q1, "0000000000000003", OUTCOME_REQUEUED);
    t->unique = UNIQUE_CLAIMED;
    t->unique_key = strdup("qworker:unique:u3");
    t = add(&t->next, &q1, "0000000000000004", OUTCOME_INVALID);
    t->dead = true;
    t->unique = UNIQUE_CLAIMED;
    t->unique_key = strdup("qworker:unique:u4");
    t = add(&t->next, &q1, "0000000000000005", OUTCOME_FAILED);
    t->dead = true;
    t->unique = UNIQUE_CLAIMED;
    t->unique_key = strdup("qworker:unique:u5");
    t = add(&t->next, &q1, "0000000000000006", OUTCOME_REQUEUED);
    t->unique = UNIQUE_DUPLICATE; /* its claim was never its own */
    t->unique_key = strdup("qworker:unique:u6");
    t = add(&t->next, &q1, "0000000000000007", OUTCOME_REQUEUED);
    t->unique = UNIQUE_UNCHECKED; /* the reply was lost: the claim may be its own */
    t->unique_key = strdup("qworker:unique:u7");
    assert_int_equal(record_build(&c, &k, "tok:9", head, 1795750000), 0);
    {
        const char *const want[] = {
            "tok:9", "1", "0",
            "0000000000000001", "6", "n", "duplicate", "",
            "0000000000000002", "6", "n", "cancelled", "",
            "0000000000000003", "6", "q", "qworker:unique:u3", "pay",
            "0000000000000004", "6", "d", "qworker:unique:u4", "*",
            "0000000000000005", "6", "d", "", "*",
            "0000000000000006", "6", "q", "", "pay",
            "0000000000000007", "6", "q", "qworker:unique:u7", "pay",
        };
        check_args(&c, want, (int)(sizeof(want) / sizeof(want[0])));
    }
    record_free(&c);
    for (t = head; t != NULL; t = next) {
        next = t->next;
        task_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_batch_is_grouped_then_listed),
        cmocka_unit_test(tasks_not_run_are_counted_and_give_their_claim_back),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
