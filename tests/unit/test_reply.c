/* Every Redis reply classified in one place: what each error means to qworker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "reply.h"

static redisReply make_reply(int type, const char *str)
{
    redisReply r = {.type = type, .str = (char *)str, .len = str ? strlen(str) : 0};

    return r;
}

static void errors_are_classified_by_their_code(void **state)
{
    static const struct {
        const char *text;
        enum rclass want;
    } cases[] = {
        {"OOM command not allowed when used memory > 'maxmemory'.", RC_RETRY},
        {"OOM command not allowed when used memory > 'maxmemory'. script: 08, on @user_script:1.",
         RC_RETRY},
        {"BUSY Redis is busy running a script.", RC_RETRY},
        {"EXECABORT Transaction discarded because of previous errors.", RC_RETRY},
        {"MISCONF Redis is configured to save RDB snapshots, but it's not able to persist",
         RC_RETRY},
        {"TRYAGAIN Multiple keys request during rehashing of slot", RC_RETRY},
        {"NOSCRIPT No matching script.", RC_RETRY},
        {"LOADING Redis is loading the dataset in memory", RC_RECONNECT},
        {"READONLY You can't write against a read only replica.", RC_RECONNECT},
        {"UNBLOCKED force unblock from blocking operation", RC_RECONNECT},
        {"MASTERDOWN Link with MASTER is down", RC_RECONNECT},
        {"WRONGTYPE Operation against a key holding the wrong kind of value", RC_WRONG_KEY},
        {"WRONGTYPE qworker:stats is a string, not a hash", RC_WRONG_KEY},
        {"NOPERM this user has no permissions to run the 'evalsha' command", RC_DENIED},
        {"NOAUTH Authentication required.", RC_DENIED},
        {"WRONGPASS invalid username-password pair or user is disabled.", RC_DENIED},
        {"ERR The user executing the script can't access at least one of the keys mentioned",
         RC_DENIED},
        {"ERR unknown command 'BLMPOP'", RC_FAILED},
        {"ERR Error running script: attempt to index a nil value", RC_FAILED},
        {"OOMPH not a code we know", RC_FAILED},
        {"", RC_FAILED},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redisReply r = make_reply(REDIS_REPLY_ERROR, cases[i].text);
        if (reply_class(&r, REDIS_REPLY_ARRAY) != cases[i].want)
            fail_msg("\"%s\": %s, want %s", cases[i].text,
                     rclass_name(reply_class(&r, REDIS_REPLY_ARRAY)), rclass_name(cases[i].want));
    }
}

/* A reply that is not the expected success is never taken as done. */
static void unexpected_types_are_failures(void **state)
{
    redisReply nil = make_reply(REDIS_REPLY_NIL, NULL), n = make_reply(REDIS_REPLY_INTEGER, NULL);
    redisReply status = make_reply(REDIS_REPLY_STATUS, "OK");

    (void)state;
    assert_int_equal(reply_class(NULL, REDIS_REPLY_ARRAY), RC_RECONNECT);
    assert_int_equal(reply_class(&nil, REDIS_REPLY_ARRAY), RC_FAILED);
    assert_int_equal(reply_class(&n, REDIS_REPLY_ARRAY), RC_FAILED);
    assert_int_equal(reply_class(&n, REDIS_REPLY_INTEGER), RC_OK);
    assert_int_equal(reply_class(&status, 0), RC_OK);
    assert_string_equal(reply_text(&nil), "a nil reply");
    assert_string_equal(reply_text(NULL), "connection lost");
}

static void a_condition_is_counted_not_repeated(void **state)
{
    struct rcond c = {0};

    (void)state;
    rcond_begin(&c, LOG_WARNING, "OOM", "redis refuses %s", "writes");
    rcond_begin(&c, LOG_WARNING, "OOM", "redis refuses %s", "writes");
    assert_true(c.on);
    assert_int_equal(c.attempts, 2);
    rcond_end(&c, "redis takes writes again");
    assert_false(c.on);
    assert_int_equal(c.attempts, 0);
    rcond_end(&c, "said only if it held");
}

static redisReply *read_one(const char *resp, size_t len, int *status)
{
    redisReader *r = redisReaderCreate();
    void *reply = NULL;

    assert_non_null(r);
    r->fn = &reply_bounded;
    assert_int_equal(redisReaderFeed(r, resp, len), REDIS_OK);
    *status = redisReaderGetReply(r, &reply);
    redisReaderFree(r);
    return reply;
}

/* A reply is read as hiredis reads it, but what it only declares is never allocated. */
static void replies_over_the_bounds_are_refused_not_allocated(void **state)
{
    static const char nested[] = "*4\r\n:7\r\n$3\r\na\0b\r\n*2\r\n$-1\r\n+OK\r\n-ERR x\r\n";
    char huge[64];
    int status;
    redisReply *r = read_one(nested, sizeof(nested) - 1, &status);

    (void)state;
    assert_int_equal(status, REDIS_OK);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    assert_int_equal(r->element[0]->integer, 7);
    assert_int_equal(r->element[1]->len, 3);
    assert_memory_equal(r->element[1]->str, "a\0b", 3);
    assert_int_equal(r->element[2]->elements, 2);
    assert_int_equal(r->element[2]->element[0]->type, REDIS_REPLY_NIL);
    assert_string_equal(r->element[2]->element[1]->str, "OK");
    assert_string_equal(r->element[3]->str, "ERR x");
    freeReplyObject(r);
    r = read_one("*0\r\n", 4, &status);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    snprintf(huge, sizeof(huge), "*%d\r\n", REPLY_MAX_ELEMENTS + 1);
    assert_null(read_one(huge, strlen(huge), &status));
    assert_int_equal(status, REDIS_ERR);
    snprintf(huge, sizeof(huge), "*2\r\n*866666666\r\n");
    assert_null(read_one(huge, strlen(huge), &status));
    assert_int_equal(status, REDIS_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors_are_classified_by_their_code),
        cmocka_unit_test(unexpected_types_are_failures),
        cmocka_unit_test(a_condition_is_counted_not_repeated),
        cmocka_unit_test(replies_over_the_bounds_are_refused_not_allocated),
    };

    log_init(LOG_TARGET_STDERR, LOG_ERR); /* the conditions' lines are not what is tested */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
