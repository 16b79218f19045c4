/* Text from outside made safe for a log line: nothing can end the line or drive a terminal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "logtext.h"

static void check(const char *in, size_t len, const char *want)
{
    char out[256];
    size_t n = logtext_escape(in, len, out, sizeof(out));

    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

/* The literal's own length: it may hold NUL bytes. */
#define CHECK(lit, want) check(lit, sizeof(lit) - 1, want)

static void controls_are_escaped(void **state)
{
    (void)state;
    CHECK("plain text, 100% (ok)", "plain text, 100% (ok)");
    CHECK("id\nFAKE qworker[1]: task done", "id\\nFAKE qworker[1]: task done");
    CHECK("a\rb\tc", "a\\rb\\tc");
    CHECK("\x1b[2J\x1b[31mPWNED", "\\x1b[2J\\x1b[31mPWNED");
    CHECK("nul\0byte", "nul\\x00byte");
    CHECK("del\x7f", "del\\x7f");
}

static void hostile_unicode_is_escaped_and_the_rest_kept(void **state)
{
    (void)state;
    CHECK("caf\xc3\xa9 \xe2\x98\x83", "caf\xc3\xa9 \xe2\x98\x83");
    CHECK("c1 \x9b raw", "c1 \\x9b raw");
    CHECK("c1 \xc2\x9b utf8", "c1 \\xc2\\x9b utf8");
    CHECK("rlo \xe2\x80\xae txt", "rlo \\xe2\\x80\\xae txt");
    CHECK("ls \xe2\x80\xa8 x", "ls \\xe2\\x80\\xa8 x");
    CHECK("iso \xe2\x81\xa6 x", "iso \\xe2\\x81\\xa6 x");
    CHECK("bad \xc3\x28", "bad \\xc3(");
    CHECK("overlong \xc0\xaf", "overlong \\xc0\\xaf");
    CHECK("surrogate \xed\xa0\x80", "surrogate \\xed\\xa0\\x80");
    CHECK("cut \xe2\x98", "cut \\xe2\\x98");
}

/* Never past the buffer, never half an escape. */
static void a_full_buffer_ends_at_a_whole_character(void **state)
{
    char out[8];

    (void)state;
    assert_int_equal(logtext_escape("abc\ndef", 7, out, sizeof(out)), 7);
    assert_string_equal(out, "abc\\nde");
    assert_int_equal(logtext_escape("ab\x1b", 3, out, 5), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(logtext_escape("xyz", 3, out, 1), 0);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(controls_are_escaped),
        cmocka_unit_test(hostile_unicode_is_escaped_and_the_rest_kept),
        cmocka_unit_test(a_full_buffer_ends_at_a_whole_character),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
