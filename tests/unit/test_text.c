/* Payload excerpts for log lines, and base64 for dead letters that are not UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"
#include "task.h"

static void base64_matches_rfc4648(void **state)
{
    static const char *const want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                       "Zm9vYmFy"};
    (void)state;
    for (size_t n = 0; n <= 6; n++) {
        char *got = base64_encode("foobar", n);
        assert_string_equal(got, want[n]);
        free(got);
    }
}

static void base64_refuses_padding_not_at_the_end(void **state)
{
    static const char *const bad[] = {"AA=A", "A===", "A=A=", "====", "Zg=", "Zm9v!A==", NULL};
    size_t len;
    char *got;

    (void)state;
    for (int i = 0; bad[i] != NULL; i++)
        if ((got = base64_decode(bad[i], &len)) != NULL)
            fail_msg("\"%s\" decoded to %zu bytes", bad[i], len);
    got = base64_decode("Zg==", &len);
    assert_non_null(got);
    assert_int_equal(len, 1);
    assert_memory_equal(got, "f", 1);
    free(got);
}

static void excerpt_quotes_escapes_and_cuts(void **state)
{
    char out[128], big[1000];

    (void)state;
    assert_string_equal(payload_excerpt("abc", 3, 32, out, sizeof(out)), "\"abc\"");
    assert_string_equal(payload_excerpt("a\"b\\\n", 5, 32, out, sizeof(out)), "\"a\\\"b\\\\\\x0a\"");
    memset(big, 'x', sizeof(big));
    payload_excerpt(big, sizeof(big), 4, out, sizeof(out));
    assert_string_equal(out, "\"xxxx\"...(1000 bytes)");
    /* A small buffer is never overrun. */
    payload_excerpt(big, sizeof(big), 500, out, 16);
    assert_true(strlen(out) < 16);
}

static void task_ids_are_unique_hex(void **state)
{
    struct queue_conf q = {.name = "queue"};
    struct task *a = task_new(&q, "1", 1), *b = task_new(&q, "1", 1);

    (void)state;
    assert_int_equal(strlen(a->id), 16);
    assert_string_not_equal(a->id, b->id);
    assert_int_equal(strspn(a->id, "0123456789abcdef"), 16);
    assert_memory_equal(a->payload, "1", 1);
    task_free(a);
    task_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base64_matches_rfc4648),
        cmocka_unit_test(base64_refuses_padding_not_at_the_end),
        cmocka_unit_test(excerpt_quotes_escapes_and_cuts),
        cmocka_unit_test(task_ids_are_unique_hex),
    };
    return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}
