/* queue_order = "weighted": each queue comes first in proportion to its weight, evenly spread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "weights.h"

static void shares_are_exact_and_spread(void **state)
{
    int weight[] = {5, 3, 2}, order[3], firsts[3] = {0}, gap = 0, worst = 0;
    struct weights w;

    (void)state;
    assert_int_equal(weights_init(&w, weight, 3), 0);
    for (int i = 0; i < 1000; i++) {
        weights_next(&w, order);
        firsts[order[0]]++;
        /* The rest follow, heaviest first. */
        assert_true(order[0] != order[1] && order[1] != order[2] && order[0] != order[2]);
        assert_true(weight[order[1]] >= weight[order[2]]);
        gap = order[0] == 2 ? 0 : gap + 1;
        worst = gap > worst ? gap : worst;
    }
    assert_int_equal(firsts[0], 500);
    assert_int_equal(firsts[1], 300);
    assert_int_equal(firsts[2], 200);
    assert_true(worst <= 5); /* the lightest waits at most a round (10) / its weight (2) */
    weights_free(&w);
}

static void a_light_queue_is_never_starved(void **state)
{
    int weight[] = {1000, 1}, order[2], since = 0, longest = 0;
    struct weights w;

    (void)state;
    assert_int_equal(weights_init(&w, weight, 2), 0);
    for (int i = 0; i < 5005; i++) {
        weights_next(&w, order);
        since = order[0] == 1 ? 0 : since + 1;
        longest = since > longest ? since : longest;
    }
    assert_true(longest <= 1000);
    weights_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shares_are_exact_and_spread),
        cmocka_unit_test(a_light_queue_is_never_starved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
