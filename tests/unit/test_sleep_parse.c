/* The sleep handler's payload grammar: plain decimal seconds, nothing strtod would half-accept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "handler_sleep.h"

static int parse(const char *s, double *v, char *reason)
{
    return sleep_parse_seconds(s, strlen(s), 86400, v, reason, 160);
}

static void accepts_integers_and_decimals(void **state)
{
    static const struct {
        const char *text;
        double want;
    } cases[] = {{"0", 0}, {"1", 1}, {"5", 5}, {"0.5", 0.5}, {"86400", 86400}, {"007", 7},
                 {"1.000001", 1.000001}};
    char reason[160];
    double v;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(cases[i].text, &v, reason), 0);
        assert_true(v == cases[i].want);
    }
}

static void refuses_with_a_reason(void **state)
{
    static const struct {
        const char *text;
        const char *reason;
    } cases[] = {
        {"", "empty payload"},
        {"abc", "not a plain number of seconds: \"abc\""},
        {"-1", "negative number of seconds: \"-1\""},
        {"1e999", "not a plain number"},
        {"1e3", "not a plain number"},
        {"nan", "not a plain number"},
        {"inf", "not a plain number"},
        {"0x10", "not a plain number"},
        {" 1", "not a plain number"},
        {"1 ", "not a plain number"},
        {"1.", "not a plain number"},
        {".5", "not a plain number"},
        {"+1", "not a plain number"},
        {"86400.5", "more than max_seconds (86400)"},
        {"99999999999999999999999999999999", "more than max_seconds"},
        {"999999999999999999999999999999999", "payload too long"},
    };
    char reason[160];
    double v = -1;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reason[0] = '\0';
        assert_int_equal(parse(cases[i].text, &v, reason), -1);
        assert_non_null(strstr(reason, cases[i].reason));
    }
    assert_true(v == -1);
}

static void binary_payloads_are_shown_escaped(void **state)
{
    char reason[160];
    double v;

    (void)state;
    assert_int_equal(sleep_parse_seconds("1\0" "2", 3, 10, &v, reason, sizeof(reason)), -1);
    assert_non_null(strstr(reason, "\"1\\x002\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_integers_and_decimals),
        cmocka_unit_test(refuses_with_a_reason),
        cmocka_unit_test(binary_payloads_are_shown_escaped),
    };
    return cmocka_run_group_tests_name("sleep payloads", tests, NULL, NULL);
}
