#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* lo-based; NULL: numbers only */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},       {"hour", 0, 23, NULL},         {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names}, {"day of week", 0, 7, day_names},
};

/* A number or a name at *p; -1 if neither. */
static int value(const struct field *f, const char **p)
{
    const char *s = *p;
    long n;
    char *end;

    if (isdigit((unsigned char)*s)) {
        n = strtol(s, &end, 10);
        if (end - s > 2 || n < f->lo || n > f->hi)
            return -1;
        *p = end;
        return (int)n;
    }
    for (int i = 0; f->names != NULL && f->names[i] != NULL; i++)
        if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
            *p = s + 3;
            return f->lo + i;
        }
    return -1;
}

/* One field ("1-5/2,10") into bits; -1 on a mistake. */
static int parse_field(const struct field *f, const char *text, uint64_t *bits)
{
    const char *p = text;

    *bits = 0;
    for (;;) {
        int a, b, step = 1;
        bool single = false;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if ((a = value(f, &p)) < 0)
                return -1;
            b = a;
            single = *p != '-';
            if (*p == '-') {
                p++;
                if ((b = value(f, &p)) < 0 || b < a)
                    return -1;
            }
        }
        if (*p == '/') {
            char *end;
            long n;
            p++;
            if (!isdigit((unsigned char)*p))
                return -1;
            n = strtol(p, &end, 10);
            if (n < 1 || n > f->hi + 1)
                return -1;
            step = (int)n;
            p = end;
            if (single)
                b = f->hi; /* "5/15": from 5 on, as cronie reads it */
        }
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << v;
        if (*p == '\0')
            return 0;
        if (*p++ != ',')
            return -1;
    }
}

int cron_parse(const char *text, struct cron *out, char *err, size_t errlen)
{
    char copy[256], *save = NULL, *tok;
    uint64_t bits[5];
    int n = 0;

    if (strlen(text) >= sizeof(copy)) {
        snprintf(err, errlen, "longer than %zu characters", sizeof(copy) - 1);
        return -1;
    }
    snprintf(copy, sizeof(copy), "%s", text);
    memset(out, 0, sizeof(*out));
    for (tok = strtok_r(copy, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
        if (n == 5) {
            snprintf(err, errlen, "more than five fields (minute hour day-of-month month "
                                  "day-of-week)");
            return -1;
        }
        if (parse_field(&fields[n], tok, &bits[n]) < 0) {
            snprintf(err, errlen, "%s field \"%.32s\": want *, %d-%d, a range a-b, a list a,b or "
                                  "a step */n",
                     fields[n].name, tok, fields[n].lo, fields[n].hi);
            return -1;
        }
        if (n == 2)
            out->mday_any = tok[0] == '*';
        if (n == 4)
            out->wday_any = tok[0] == '*';
        n++;
    }
    if (n != 5) {
        snprintf(err, errlen, "%d field(s), want five: minute hour day-of-month month day-of-week",
                 n);
        return -1;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->mdays = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->wdays = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
    return 0;
}

static bool day_matches(const struct cron *c, const struct tm *tm)
{
    bool mday = c->mdays & (1u << tm->tm_mday), wday = c->wdays & (1u << tm->tm_wday);

    if (c->mday_any || c->wday_any)
        return mday && wday; /* a '*' matches every day: the other field decides */
    return mday || wday;
}

static int64_t at(int year, int mon, int mday, int hour, int min)
{
    struct tm tm = {.tm_year = year, .tm_mon = mon, .tm_mday = mday, .tm_hour = hour, .tm_min = min};

    return (int64_t)timegm(&tm); /* normalises the 13th month, the 32nd day, the 24th hour */
}

int64_t cron_next(const struct cron *c, int64_t t)
{
    int64_t limit = t + 5LL * 366 * 86400;

    t = (t / 60 + 1) * 60;
    while (t <= limit) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        if (!(c->months & (1u << (tm.tm_mon + 1))))
            t = at(tm.tm_year, tm.tm_mon + 1, 1, 0, 0);
        else if (!day_matches(c, &tm))
            t = at(tm.tm_year, tm.tm_mon, tm.tm_mday + 1, 0, 0);
        else if (!(c->hours & (1u << tm.tm_hour)))
            t = at(tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour + 1, 0);
        else if (!(c->minutes & (1ULL << tm.tm_min)))
            t += 60;
        else
            return t;
    }
    return -1;
}
