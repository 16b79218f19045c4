/* The set of cancelled ids every worker keeps (src/cancel.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cancel.h"

static void nothing_remembered_is_nothing_wanted(void **state)
{
    (void)state;
    cancel_forget_all();
    assert_false(cancel_wanted("a", "0123456789abcdef"));
}

static void a_task_is_wanted_by_its_label_or_its_own_id(void **state)
{
    uint64_t gen = cancel_generation();

    (void)state;
    assert_int_equal(cancel_add("job-1", 5, 1000), 1);
    assert_int_equal(cancel_add("0123456789abcdef", 16, 1000), 1);
    assert_true(cancel_generation() > gen);
    assert_true(cancel_wanted("job-1", "ffffffffffffffff"));
    assert_true(cancel_wanted("other", "0123456789abcdef"));
    assert_false(cancel_wanted("job-2", "ffffffffffffffff"));
    assert_false(cancel_wanted("job-", NULL)); /* counted bytes: no prefix matches */
    cancel_forget_all();
}

static void ids_no_task_can_have_are_not_kept(void **state)
{
    char big[200];

    (void)state;
    memset(big, 'x', sizeof(big));
    assert_int_equal(cancel_add("a\0b", 3, 1000), 0);
    assert_int_equal(cancel_add(big, sizeof(big), 1000), 0);
    assert_int_equal(cancel_add("", 0, 1000), 0);
    assert_false(cancel_wanted("a", NULL));
    assert_false(cancel_wanted("", NULL));
}

static void an_id_is_forgotten_when_its_time_is_past_and_a_later_add_extends_it(void **state)
{
    (void)state;
    cancel_add("short", 5, 100);
    cancel_add("long", 4, 100);
    cancel_add("long", 4, 500); /* extended */
    cancel_add("long", 4, 50);  /* never shortened */
    cancel_prune(200);
    assert_false(cancel_wanted("short", NULL));
    assert_true(cancel_wanted("long", NULL));
    cancel_prune(500);
    assert_false(cancel_wanted("long", NULL));
}

static void many_ids_are_each_found(void **state)
{
    char id[32];

    (void)state;
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(id, sizeof(id), "task-%d", i);
        assert_int_equal(cancel_add(id, (size_t)n, 1000), 1);
    }
    for (int i = 0; i < 20000; i += 997) {
        snprintf(id, sizeof(id), "task-%d", i);
        assert_true(cancel_wanted(id, NULL));
    }
    assert_false(cancel_wanted("task-20000", NULL));
    cancel_forget_all();
    assert_false(cancel_wanted("task-1", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_remembered_is_nothing_wanted),
        cmocka_unit_test(a_task_is_wanted_by_its_label_or_its_own_id),
        cmocka_unit_test(ids_no_task_can_have_are_not_kept),
        cmocka_unit_test(an_id_is_forgotten_when_its_time_is_past_and_a_later_add_extends_it),
        cmocka_unit_test(many_ids_are_each_found),
    };
    return cmocka_run_group_tests_name("cancel", tests, NULL, NULL);
}
