/* The watchdog's view of the threads: it pings only while every one beat recently. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "health.h"

static void every_thread_must_beat(void **state)
{
    const char *stale = NULL;
    struct timespec ms20 = {0, 20 * 1000 * 1000};

    (void)state;
    assert_false(health_all_fresh(1000000, &stale)); /* nobody beat yet */
    health_beat(THREAD_CONSUMER);
    health_beat(THREAD_LOOP);
    assert_false(health_all_fresh(1000000, &stale));
    assert_string_equal(stale, "reporter");
    health_beat(THREAD_REPORTER);
    assert_false(health_all_fresh(1000000, &stale));
    assert_string_equal(stale, "heartbeat");
    health_beat(THREAD_BEAT);
    assert_true(health_all_fresh(1000000, &stale));
    nanosleep(&ms20, NULL);
    health_beat(THREAD_CONSUMER);
    health_beat(THREAD_REPORTER);
    health_beat(THREAD_BEAT);
    /* The loop hangs: 20 ms without a beat is too long for a 10 ms limit. */
    assert_false(health_all_fresh(10000, &stale));
    assert_string_equal(stale, "loop");
}

static void the_period_has_a_floor(void **state)
{
    (void)state;
    health_set_period_ms(2500);
    assert_int_equal(health_period_ms(), 2500);
    health_set_period_ms(0);
    assert_int_equal(health_period_ms(), 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_thread_must_beat),
        cmocka_unit_test(the_period_has_a_floor),
    };
    return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
