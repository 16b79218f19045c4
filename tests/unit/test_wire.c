/* The byte formats shared with the Lua scripts, against the golden vectors of
 * tests/wire/vectors.json: what wire.c writes, byte for byte; what the scripts write for a
 * recovered task, read back by envelope.c as the same payload; and fetch replies that make no
 * sense refused whole. */
#include <setjmp.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "base64.h"
#include "envelope.h"
#include "wire.h"

#define VECTORS "tests/wire/vectors.json"

static struct handler_conf handlers[] = {{.name = "sleep", .type = HANDLER_SLEEP, .max_seconds = 60}};
static struct queue_conf queues[] = {{.name = "queue", .handler = &handlers[0]},
                                     {.name = "other", .handler = &handlers[0]}};
static struct config conf = {.queues = queues,
                             .nqueues = 2,
                             .handlers = handlers,
                             .nhandlers = 1,
                             .max_payload = 1 << 20,
                             .max_recoveries = 3};

static json_t *vectors(const char *which)
{
    json_error_t err;
    json_t *all = json_load_file(VECTORS, 0, &err), *v;

    if (all == NULL)
        fail_msg("%s:%d: %s", VECTORS, err.line, err.text);
    v = json_incref(json_object_get(all, which));
    json_decref(all);
    assert_true(json_is_array(v) && json_array_size(v) > 0);
    return v;
}

static char *payload_of(const json_t *v, size_t *len)
{
    char *p = base64_decode(json_string_value(json_object_get(v, "payload_base64")), len);

    assert_non_null(p);
    return p;
}

static const char *str(const json_t *v, const char *key)
{
    const char *s = json_string_value(json_object_get(v, key));

    assert_non_null(s);
    return s;
}

static int num(const json_t *v, const char *key)
{
    return (int)json_integer_value(json_object_get(v, key));
}

static void encoders_write_the_golden_bytes(void **state)
{
    json_t *all = vectors("encoded"), *v;
    size_t i;

    (void)state;
    json_array_foreach(all, i, v)
    {
        size_t len;
        char *p = payload_of(v, &len);
        char *w = wire_wrapper(p, len, num(v, "attempt"), str(v, "id"), num(v, "recoveries"));
        char *m = wire_schedule_member(str(v, "queue"), w, str(v, "push"));
        char *d = wire_dead_letter(p, len, str(v, "id"), str(v, "queue"), str(v, "handler"),
                                   str(v, "reason"), num(v, "attempts"), num(v, "time"),
                                   str(v, "worker"));

        assert_string_equal(w, str(v, "wrapper"));
        assert_string_equal(m, str(v, "schedule_member"));
        assert_string_equal(d, str(v, "dead_letter"));
        free(p);
        free(w);
        free(m);
        free(d);
    }
    json_decref(all);
}

/* The task that the JSON text v[key] becomes, with the payload it must hold. */
static struct task *read_back(const json_t *v, const char *key, int *rc, char **payload,
                              size_t *len)
{
    const char *text = str(v, key);
    struct task *t = task_new(&queues[0], text, strlen(text));

    assert_non_null(t);
    *payload = payload_of(v, len);
    *rc = envelope_parse(t, &conf);
    assert_int_equal(t->len, *len);
    assert_memory_equal(t->payload, *payload, *len);
    return t;
}

/* What goes back to a queue comes back as the same task: the payload byte for byte, with its
 * attempt, id and recovery count, whatever the payload holds (NUL, invalid UTF-8, JSON). */
static void wrappers_read_back_as_the_same_task(void **state)
{
    json_t *all = vectors("encoded"), *v;
    size_t i;

    (void)state;
    json_array_foreach(all, i, v)
    {
        size_t len;
        char *p;
        int rc;
        struct task *t = read_back(v, "wrapper", &rc, &p, &len);

        assert_int_equal(rc, 0);
        assert_int_equal(t->attempt, num(v, "attempt"));
        assert_int_equal(t->recoveries, num(v, "recoveries"));
        assert_string_equal(t->label, str(v, "id"));
        task_free(t);
        free(p);
    }
    json_decref(all);
}

/* A payload that is itself an envelope names a handler this config lacks: it is still unwrapped
 * whole first. */
static void recovered_tasks_from_the_scripts_read_back_whole(void **state)
{
    json_t *all = vectors("recovered"), *v;
    size_t i;

    (void)state;
    json_array_foreach(all, i, v)
    {
        size_t len;
        char *p;
        int rc;
        struct task *t = read_back(v, "recovered", &rc, &p, &len);

        if (rc == 0)
            assert_int_equal(t->recoveries, 1);
        task_free(t);
        free(p);
    }
    json_decref(all);
}

/* A wrapper around a wrapper (a retried task recovered from a dead worker, say): the newest id
 * wins and none leaks (valgrind runs this). */
static void nested_wrappers_keep_the_outer_id(void **state)
{
    const char *inner = "{\"payload\":\"5\",\"attempt\":2,\"id\":\"inner\",\"ready\":true}";
    char *outer = wire_wrapper(inner, strlen(inner), 3, "outer", 1);
    struct task *t = task_new(&queues[0], outer, strlen(outer));

    (void)state;
    assert_int_equal(envelope_parse(t, &conf), 0);
    assert_string_equal(t->label, "outer");
    assert_int_equal(t->len, 1);
    assert_memory_equal(t->payload, "5", 1);
    task_free(t);
    free(outer);
}

/* Hand-built replies, as hiredis would give them. */
static redisReply *integer(long long n)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_INTEGER;
    r->integer = n;
    return r;
}

static redisReply *string(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *array(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof(*r));
    va_list ap;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static void fetch_reply_is_read_whole(void **state)
{
    redisReply *r = array(10, integer(2), integer(1), integer(1), integer(0), string("WRONGTYPE no"),
                          integer(1), string("ref1"), integer(2000000), integer(1), string("5"));
    struct fetch_reply f;
    struct fetch_item it;
    struct fetch_large l;
    const char *why;

    (void)state;
    assert_int_equal(wire_fetch_reply(r, 2, 2, &f, &why), 0);
    assert_int_equal(f.examined, 2);
    assert_int_equal(f.nlarge, 1);
    l = wire_fetch_large(&f, 0);
    assert_int_equal(l.queue, 1);
    assert_string_equal(l.ref, "ref1");
    assert_int_equal(l.length, 2000000);
    assert_int_equal(f.nbad, 1);
    assert_int_equal(wire_fetch_bad(&f, 0).queue, 0);
    assert_string_equal(wire_fetch_bad(&f, 0).error, "WRONGTYPE no");
    assert_int_equal(f.nitems, 1);
    it = wire_fetch_item(&f, 0);
    assert_int_equal(it.queue, 1);
    assert_int_equal(it.len, 1);
    assert_memory_equal(it.payload, "5", 1);
    freeReplyObject(r);
}

/* A server that answers more tasks than asked for, a queue index out of range, or a shape that
 * does not add up is not trusted with anything. */
static void fetch_replies_that_make_no_sense_are_refused(void **state)
{
    redisReply *bad[] = {
        integer(3),
        array(1, integer(0)),
        array(5, integer(1), integer(0), integer(0), integer(0), string("a")), /* ok: 1 task */
        array(7, integer(1), integer(0), integer(0), integer(0), string("a"), /* 2 > max 1 */
              integer(0), string("b")),
        array(5, integer(1), integer(0), integer(0), integer(2), string("a")), /* index 2 of 2 */
        array(5, integer(1), integer(0), integer(0), integer(-1), string("a")),
        array(6, integer(1), integer(0), integer(0), integer(0), string("a"), integer(0)), /* odd */
        array(5, integer(1), integer(2), integer(0), integer(0), string("a")), /* 2 refused */
        array(5, integer(1), integer(0), integer(0), string("0"), string("a")),
        array(5, integer(1), integer(0), integer(0), integer(0), integer(7)),
        array(5, integer(3), integer(0), integer(0), integer(0), string("a")), /* examined 3 */
        /* One too large and one task: 2 > max 1. */
        array(8, integer(1), integer(0), integer(1), integer(0), string("r"), integer(9),
              integer(0), string("a")),
        array(6, integer(1), integer(0), integer(1), integer(0), integer(5), integer(9)), /* ref */
        array(6, integer(1), integer(0), integer(1), integer(0), string("r"), integer(-1)),
        array(4, integer(1), integer(0), integer(2), integer(0)), /* 2 too large, none given */
    };
    struct fetch_reply f;
    const char *why;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (i == 2) {
            assert_int_equal(wire_fetch_reply(bad[i], 2, 1, &f, &why), 0);
        } else {
            assert_int_equal(wire_fetch_reply(bad[i], 2, 1, &f, &why), -1);
            assert_non_null(why);
        }
        freeReplyObject(bad[i]);
    }
}

static redisReply *nil(void)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_NIL;
    return r;
}

/* Each script's reply as the script sends it is accepted; anything else, refused whole. */
/* TIME: seconds and microseconds as strings of digits; anything else is not a time. */
static void time_replies_are_checked_before_use(void **state)
{
    redisReply *good = array(2, string("1795800090"), string("123456"));
    redisReply *bad[] = {
        array(1, string("1795800090")),
        array(2, integer(1795800090), string("0")),
        array(2, string("17958x0090"), string("0")),
        array(2, string("1795800090"), string("1000000")),
        array(2, string(""), string("0")),
        string("1795800090"),
    };
    long long ms = -1;

    (void)state;
    assert_true(wire_time_ms(good, &ms));
    assert_int_equal(ms, 1795800090123LL);
    freeReplyObject(good);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (wire_time_ms(bad[i], &ms))
            fail_msg("bad TIME reply %zu accepted", i);
        freeReplyObject(bad[i]);
    }
}

static void script_replies_are_checked_whole(void **state)
{
    static const char *const names[] = {"requeue", "reap", "beat", "claim", "record", "due"};
    bool (*const check[])(const redisReply *) = {wire_requeue_reply, wire_reap_reply,
                                                 wire_beat_reply,    wire_claim_reply,
                                                 wire_record_reply,  wire_due_reply};
    struct {
        int script;
        bool ok;
        redisReply *r;
    } cases[] = {
        {0, true, array(2, integer(3), integer(0))},
        {0, false, array(2, integer(-1), integer(0))},
        {0, false, array(2, integer(LLONG_MAX), integer(0))},
        {0, false, array(3, integer(1), integer(0), integer(0))},
        {0, false, integer(2)},
        {1, true, array(3, string("w"), integer(1), integer(0))},
        {1, true, array(0)},
        {1, false, array(2, string("w"), integer(1))},
        {1, false, array(3, integer(1), integer(1), integer(0))},
        {1, false, array(3, string("w"), integer(LLONG_MAX), integer(LLONG_MAX))},
        {2, true, integer(1)},
        {2, true, integer(0)},
        {2, false, integer(5)},
        {2, false, string("1")},
        {3, true, integer(-1)},
        {3, false, integer(1)},
        {4, true, array(3, integer(5), integer(0), integer(0))},
        {4, false, array(3, integer(5), string("0"), integer(0))},
        {4, false, array(3, integer(5), integer(0), integer(2))},
        {4, false, array(2, integer(5), integer(0))},
        {5, true, array(2, integer(0), nil())},
        {5, true, array(2, integer(100), string("1764230000000"))},
        {5, false, array(2, integer(0), string("soon"))},
        {5, false, array(2, integer(0), string("nan"))},
        {5, false, array(2, integer(0), string("17642333333333333333333333"))},
        {5, false, array(2, integer(0), string("-1"))},
        {5, false, array(2, integer(0), string(""))},
        {5, false, array(1, integer(0))},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (check[cases[i].script](cases[i].r) != cases[i].ok)
            fail_msg("case %zu: the %s check says %s", i, names[cases[i].script],
                     cases[i].ok ? "no" : "yes");
        freeReplyObject(cases[i].r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encoders_write_the_golden_bytes),
        cmocka_unit_test(wrappers_read_back_as_the_same_task),
        cmocka_unit_test(recovered_tasks_from_the_scripts_read_back_whole),
        cmocka_unit_test(nested_wrappers_keep_the_outer_id),
        cmocka_unit_test(fetch_reply_is_read_whole),
        cmocka_unit_test(fetch_replies_that_make_no_sense_are_refused),
        cmocka_unit_test(script_replies_are_checked_whole),
        cmocka_unit_test(time_replies_are_checked_before_use),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
