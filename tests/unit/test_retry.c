/* The retry policy alone: how many attempts, how long between them, what happens at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "retry.h"
#include "task.h"

static struct handler_conf exec_h = {.name = "thumb", .type = HANDLER_EXEC, .max_attempts = 3,
                                     .backoff = 2, .backoff_max = 5};
static struct handler_conf sleep_h = {.name = "sleep", .type = HANDLER_SLEEP};
static struct queue_conf queue = {.name = "queue", .handler = &exec_h};

static struct task *task(enum outcome outcome, int attempt)
{
    struct task *t = task_new(&queue, "x", 1);

    assert_non_null(t);
    t->outcome = outcome;
    t->attempt = attempt;
    return t;
}

#define NOW_US 1795750000123456LL /* rounded up: ...124 ms */

static void attempts_come_from_the_envelope_then_the_handler(void **state)
{
    struct task *t = task(OUTCOME_FAILED, 1);

    (void)state;
    assert_int_equal(retry_max_attempts(t), 3);
    t->max_attempts = 7;
    assert_int_equal(retry_max_attempts(t), 7);
    t->max_attempts = 0;
    t->handler = &sleep_h;
    assert_int_equal(retry_max_attempts(t), 1);
    task_free(t);
}

/* backoff * 2^(attempt-1), capped, times 0.75 to 1.25: the draw picks where in that range. */
static void backoff_doubles_is_capped_and_jittered_by_a_quarter(void **state)
{
    struct task *t = task(OUTCOME_FAILED, 1);

    (void)state;
    assert_int_equal(retry_backoff_ms(t, 0), 1500);
    assert_int_equal(retry_backoff_ms(t, 1000000), 2500);
    assert_int_equal(retry_backoff_ms(t, 500000), 2000);
    t->attempt = 2;
    assert_int_equal(retry_backoff_ms(t, 500000), 4000);
    t->attempt = 30; /* 2 * 2^29 s, capped at backoff_max = 5 s */
    assert_int_equal(retry_backoff_ms(t, 500000), 5000);
    for (uint64_t d = 0; d < 5000000; d += 99991) {
        int64_t ms = retry_backoff_ms(t, d * 2654435761u);
        assert_true(ms >= 3750 && ms <= 6250);
    }
    task_free(t);
}

static void failures_retry_until_the_last_attempt_then_die(void **state)
{
    struct task *t = task(OUTCOME_TIMEOUT, 2);

    (void)state;
    retry_decide(t, NOW_US, 500000);
    assert_false(t->dead);
    assert_int_equal(t->due_ms, 1795750000124LL + 4000);
    task_free(t);
    t = task(OUTCOME_FAILED, 3);
    retry_decide(t, NOW_US, 0);
    assert_true(t->dead);
    assert_int_equal(t->due_ms, 0);
    task_free(t);
}

static void invalid_dies_at_once_ok_and_requeued_go_nowhere(void **state)
{
    struct task *t = task(OUTCOME_INVALID, 1);

    (void)state;
    retry_decide(t, NOW_US, 0);
    assert_true(t->dead);
    task_free(t);
    for (enum outcome o = OUTCOME_OK; o <= OUTCOME_REQUEUED; o += OUTCOME_REQUEUED) {
        t = task(o, 1);
        retry_decide(t, NOW_US, 0);
        assert_false(t->dead);
        assert_int_equal(t->due_ms, 0);
        task_free(t);
    }
}

/* Never a millisecond early: both the clock and the delay are rounded up. */
static void a_delay_is_never_served_early(void **state)
{
    struct task *t = task(OUTCOME_DELAYED, 1);

    (void)state;
    t->delay = 0.0001;
    retry_decide(t, NOW_US, 0);
    assert_int_equal(t->due_ms, 1795750000124LL + 1);
    assert_false(t->dead);
    task_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(attempts_come_from_the_envelope_then_the_handler),
        cmocka_unit_test(backoff_doubles_is_capped_and_jittered_by_a_quarter),
        cmocka_unit_test(failures_retry_until_the_last_attempt_then_die),
        cmocka_unit_test(invalid_dies_at_once_ok_and_requeued_go_nowhere),
        cmocka_unit_test(a_delay_is_never_served_early),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
