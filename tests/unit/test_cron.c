/* Cron expressions against known times: when each fires next, and what it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "config.h"
#include "cron.h"
#include "periodic.h"

static int64_t utc(const char *iso)
{
    struct tm tm = {0};

    assert_non_null(strptime(iso, "%Y-%m-%d %H:%M:%S", &tm));
    return (int64_t)timegm(&tm);
}

static void next_fire_times(void **state)
{
    static const struct {
        const char *expr, *from, *next; /* next NULL: never */
    } cases[] = {
        {"0 3 * * *", "2026-11-27 14:00:00", "2026-11-28 03:00:00"},
        {"*/15 * * * *", "2026-11-27 14:07:30", "2026-11-27 14:15:00"},
        {"*/15 * * * *", "2026-11-27 14:15:00", "2026-11-27 14:30:00"}, /* strictly after */
        {"0 0 1 1 *", "2026-11-27 00:00:00", "2027-01-01 00:00:00"},
        {"30 9 * * mon-fri", "2026-11-27 10:00:00", "2026-11-30 09:30:00"}, /* Fri -> Mon */
        {"0 12 13 * fri", "2026-11-27 13:00:00", "2026-12-04 12:00:00"}, /* either day field */
        {"0 12 13 * fri", "2026-12-05 00:00:00", "2026-12-11 12:00:00"},
        {"0 12 13 * *", "2026-12-05 00:00:00", "2026-12-13 12:00:00"},
        {"0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"},
        {"0 0 30 2 *", "2026-03-01 00:00:00", NULL},
        {"5/15 * * * *", "2026-11-27 14:00:00", "2026-11-27 14:05:00"},
        {"5/15 * * * *", "2026-11-27 14:06:00", "2026-11-27 14:20:00"},
        {"0 0 * * 7", "2026-11-27 00:00:00", "2026-11-29 00:00:00"}, /* 7 is Sunday */
        {"0 0 * * SUN", "2026-11-27 00:00:00", "2026-11-29 00:00:00"},
        {"59 23 31 12 *", "2026-12-31 23:59:00", "2027-12-31 23:59:00"},
        {"0 8-10/2 * jun *", "2026-11-27 00:00:00", "2027-06-01 08:00:00"},
        {"1,2,3-5/2 * * * *", "2026-11-27 14:03:00", "2026-11-27 14:05:00"},
        {"* * * * *", "2026-11-27 14:03:59", "2026-11-27 14:04:00"},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cron c;
        int64_t got;
        assert_int_equal(cron_parse(cases[i].expr, &c, err, sizeof(err)), 0);
        got = cron_next(&c, utc(cases[i].from));
        if (cases[i].next == NULL) {
            assert_int_equal(got, -1);
            continue;
        }
        if (got != utc(cases[i].next))
            fail_msg("%s from %s: got %lld, want %s", cases[i].expr, cases[i].from,
                     (long long)got, cases[i].next);
    }
}

static void mistakes_are_named(void **state)
{
    static const struct {
        const char *expr, *says;
    } cases[] = {
        {"60 * * * *", "minute field \"60\""},   {"* * * *", "4 field(s), want five"},
        {"* * * * * *", "more than five"},       {"a * * * *", "minute field"},
        {"*/0 * * * *", "minute field \"*/0\""}, {"5-1 * * * *", "minute field \"5-1\""},
        {"* * 0 * *", "day of month field"},     {"* * * 13 *", "month field"},
        {"* * * * 8", "day of week field"},      {"* * * * mo", "day of week field"},
        {"1,,2 * * * *", "minute field"},        {"", "0 field(s)"},
    };
    char err[256];
    struct cron c;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(cron_parse(cases[i].expr, &c, err, sizeof(err)), -1);
        if (strstr(err, cases[i].says) == NULL)
            fail_msg("\"%s\": said \"%s\", want \"%s\"", cases[i].expr, err, cases[i].says);
    }
}

static void latest_ticks_at_or_before_now(void **state)
{
    struct schedule_conf s = {0};
    char err[256];

    (void)state;
    s.every = 60;
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 14:00:30")), utc("2026-11-27 14:00:00"));
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 14:00:00")), utc("2026-11-27 14:00:00"));
    assert_int_equal(periodic_next(&s, utc("2026-11-27 14:00:00")), utc("2026-11-27 14:01:00"));
    s.every = 0;
    assert_int_equal(cron_parse("0 3 * * *", &s.cron, err, sizeof(err)), 0);
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 14:00:00")), utc("2026-11-27 03:00:00"));
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 03:00:00")), utc("2026-11-27 03:00:00"));
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 02:59:59")), utc("2026-11-26 03:00:00"));
    assert_int_equal(cron_parse("0 0 1 1 *", &s.cron, err, sizeof(err)), 0);
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 14:00:00")), utc("2026-01-01 00:00:00"));
    assert_int_equal(cron_parse("* * * * *", &s.cron, err, sizeof(err)), 0);
    assert_int_equal(periodic_latest(&s, utc("2026-11-27 14:00:59")), utc("2026-11-27 14:00:00"));
    assert_int_equal(periodic_next(&s, utc("2026-11-27 14:00:00")), utc("2026-11-27 14:01:00"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(next_fire_times),
        cmocka_unit_test(mistakes_are_named),
        cmocka_unit_test(latest_ticks_at_or_before_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
