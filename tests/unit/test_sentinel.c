/* Which of the sentinels' answers is tried first, and the set of held task ids that a failover
 * reconciles against. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "held.h"
#include "sentinel.h"

static int rank(struct sentinel_answer *a, const char *const *said, int n)
{
    for (int i = 0; i < n; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        snprintf(a[i].host, sizeof(a[i].host), "%s", said[i]);
        a[i].port = 6379;
    }
    return sentinel_rank(a, n);
}

static void the_majority_wins_over_the_first_listed(void **state)
{
    struct sentinel_answer a[4];
    const char *said[] = {"old", "new", "new"};

    (void)state;
    assert_int_equal(rank(a, said, 3), 2);
    assert_string_equal(a[0].host, "new");
    assert_int_equal(a[0].votes, 2);
    assert_int_equal(a[0].first, 1);
    assert_string_equal(a[1].host, "old"); /* still tried, after */
}

static void a_tie_goes_to_the_earliest_listed(void **state)
{
    struct sentinel_answer a[4];
    const char *said[] = {"b", "a", "a", "b"};

    (void)state;
    assert_int_equal(rank(a, said, 4), 2);
    assert_string_equal(a[0].host, "b");
    assert_string_equal(a[1].host, "a");
}

static void ports_tell_addresses_apart(void **state)
{
    struct sentinel_answer a[3] = {{"h", 1, 0, 0}, {"h", 2, 0, 0}, {"h", 2, 0, 0}};

    (void)state;
    assert_int_equal(sentinel_rank(a, 3), 2);
    assert_int_equal(a[0].port, 2);
    assert_int_equal(a[0].votes, 2);
}

static void held_ids_come_and_go(void **state)
{
    enum { N = 20000 };
    static char ids[N][17];
    uint64_t x = 0x1234567;

    (void)state;
    held_add("00000000000000aa"); /* disabled: nothing is kept */
    assert_false(held_has("00000000000000aa"));
    held_enable();
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* Keys that share their low bits too, so that runs form and deletions shift them. */
        snprintf(ids[i], sizeof(ids[i]), "%016llx",
                 (unsigned long long)(i % 3 == 0 ? (uint64_t)(i + 1) << 40 : x));
        held_add(ids[i]);
    }
    held_add("0000000000000000");
    assert_int_equal(held_count(), N + 1);
    for (int i = 0; i < N; i += 2)
        held_del(ids[i]);
    for (int i = 0; i < N; i++)
        assert_int_equal(held_has(ids[i]), i % 2 == 1);
    assert_true(held_has("0000000000000000"));
    held_del("0000000000000000");
    for (int i = 1; i < N; i += 2)
        held_del(ids[i]);
    assert_int_equal(held_count(), 0);
    held_del(ids[0]); /* not held: nothing happens */
    assert_int_equal(held_count(), 0);
}

static void only_ids_of_sixteen_hex_digits_are_held(void **state)
{
    (void)state;
    held_enable();
    held_add("000000000000abcd");
    held_add("0000000000000000");
    assert_true(held_has("000000000000abcd"));
    /* What strtoull would take for the same number: a field no qworker wrote. */
    assert_false(held_has("+00000000000abcd"));
    assert_false(held_has(" 00000000000abcd"));
    assert_false(held_has("000000000000ABCD"));
    assert_false(held_has("000000000000abcd0"));
    assert_false(held_has("not-an-id-at-all"));
    assert_true(held_has("0000000000000000"));
    held_del("000000000000abcd");
    held_del("0000000000000000");
    assert_int_equal(held_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_majority_wins_over_the_first_listed),
        cmocka_unit_test(a_tie_goes_to_the_earliest_listed),
        cmocka_unit_test(ports_tell_addresses_apart),
        cmocka_unit_test(held_ids_come_and_go),
        cmocka_unit_test(only_ids_of_sixteen_hex_digits_are_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
