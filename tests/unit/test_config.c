/* Config loading: defaults, the shipped files, and an error with file:line for every mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char path[64];

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    int fd;
    FILE *f;

    strcpy(path, "/tmp/qworker-unit-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    struct config *c = config_load(path, err, errlen);
    unlink(path);
    return c;
}

static void empty_file_gives_every_default(void **state)
{
    char err[512];
    struct config *c = load_text("", err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_string_equal(c->redis.host, "127.0.0.1");
    assert_int_equal(c->redis.port, 6379);
    assert_null(c->redis.unix_socket);
    assert_int_equal(c->redis.connect_timeout_ms, 2000);
    assert_int_equal(c->redis.command_timeout_ms, 5000);
    assert_int_equal(c->concurrency, 1000);
    assert_int_equal(c->fetch_batch, 100);
    assert_int_equal(c->delivery, DELIVERY_AT_LEAST_ONCE);
    assert_int_equal(c->heartbeat_ttl_ms, 15000);
    assert_int_equal(c->max_recoveries, 3);
    assert_true(c->shutdown_timeout == 30);
    assert_string_equal(c->prefix, "qworker");
    assert_int_equal(c->nqueues, 1);
    assert_string_equal(c->queues[0].name, "queue");
    assert_string_equal(c->queues[0].handler->name, "sleep");
    assert_int_equal(c->log_level, LOG_INFO);
    assert_int_equal(c->log_target, LOG_TARGET_AUTO);
    assert_non_null(strchr(c->worker_id, ':'));
    config_free(c);
}

static void settings_are_read(void **state)
{
    char err[512];
    struct config *c = load_text(
        "redis = { unix_socket = \"/run/r.sock\"; db = 3; username = \"u\"; password = \"p\";\n"
        "          connect_timeout = 0.5; command_timeout = 2; };\n"
        "worker = { id = \"w:7\"; concurrency = 2; fetch_batch = 10; shutdown_timeout = 1.5;\n"
        "           prefix = \"qw\"; delivery = \"at-most-once\"; };\n"
        "queues = ( { name = \"high\"; handler = \"nap\"; }, { name = \"low\"; } );\n"
        "handlers = ( { name = \"nap\"; type = \"sleep\"; max_seconds = 10; } );\n"
        "log = { level = \"debug\"; target = \"stderr\"; };\n",
        err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_string_equal(c->redis.unix_socket, "/run/r.sock");
    assert_int_equal(c->redis.db, 3);
    assert_int_equal(c->redis.connect_timeout_ms, 500);
    assert_string_equal(c->worker_id, "w:7");
    assert_int_equal(c->concurrency, 2);
    assert_true(c->shutdown_timeout == 1.5);
    assert_int_equal(c->nqueues, 2);
    assert_string_equal(c->queues[0].handler->name, "nap");
    assert_true(c->queues[0].handler->max_seconds == 10);
    assert_string_equal(c->queues[1].handler->name, "sleep"); /* the built-in one */
    assert_ptr_equal(config_queue(c, "low", 3), &c->queues[1]);
    assert_null(config_queue(c, "lo", 2));
    assert_int_equal(c->log_level, LOG_DEBUG);
    assert_int_equal(c->log_target, LOG_TARGET_STDERR);
    config_free(c);
}

static void errors_name_file_line_and_problem(void **state)
{
    static const struct {
        const char *text;
        int line;
        const char *message;
    } cases[] = {
        {"worker = { concurency = 4; };", 1, "unknown setting 'concurency' in the worker section"},
        {"\nredis = {\n port = 0; };", 3, "'port' = 0 is out of range (1 to 65535)"},
        {"worker = { concurrency = 1.5; };", 1, "'concurrency' must be a whole number"},
        {"worker = { concurrency = 4294967297; };", 1, "out of range"},
        {"worker = { shutdown_timeout = -1; };", 1, "'shutdown_timeout' = -1 is out of range"},
        {"worker = { shutdown_timeout = \"5\"; };", 1, "must be a number of seconds"},
        {"worker = { delivery = \"sometimes\"; };", 1, "'delivery' must be"},
        {"worker = { prefix = \"\"; };", 1, "'prefix' must not be empty"},
        {"redis = 5;", 1, "'redis' must be a group"},
        {"redis = { username = \"u\"; };", 1, "needs a 'password'"},
        {"queues = ();", 1, "'queues' is empty"},
        {"queues = ( { handler = \"sleep\"; } );", 1, "needs a 'name'"},
        {"queues = ( { name = \"a\"; }, \n { name = \"a\"; } );", 2, "listed twice"},
        {"queues = ( { name = \"a\"; colour = 1; } );", 1, "unknown setting 'colour' in a queue"},
        {"handlers = ( { name = \"x\"; type = \"magic\"; } );", 1, "unknown type \"magic\""},
        {"handlers = ( { name = \"x\"; } );", 1, "needs a 'type'"},
        {"handlers = ( { name = \"s\"; type = \"sleep\"; max_seconds = -3; } );", 1,
         "out of range"},
        {"log = { target = \"syslog\"; };", 1, "log target \"syslog\""},
        {"log = { level = 3; };", 1, "'level' must be a string"},
        {"redis = { port = 1 };\nworker = { ;", 2, "syntax error"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; } );", 1, "needs a 'command'"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"];\n"
         " timeout = 10; timeout_max = 5; } );",
         2, "'timeout_max' = 5 is out of range (10 to"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"];\n"
         " max_attempts_max = 2; } );",
         2, "'max_attempts_max' = 2 is out of range (3 to 1000)"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"sh\"]; } );", 1,
         "must start with an absolute path"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/nonexistent\"]; } );", 1,
         "/nonexistent is not an executable file"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"];\n"
         " args = \"shell\"; } );",
         2, "'args' must be \"argv\" or \"stdin\""},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"];\n"
         " env = { QWORKER_QUEUE = \"x\"; }; } );",
         2, "QWORKER_* variables are set by qworker"},
        {"handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"];"
         " max_seconds = 1; } );",
         1, "unknown setting 'max_seconds' in an exec handler"},
    };
    char err[512], want[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_null(load_text(cases[i].text, err, sizeof(err)));
        snprintf(want, sizeof(want), "%s:%d: ", path, cases[i].line);
        if (strncmp(err, want, strlen(want)) != 0 || strstr(err, cases[i].message) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s%s\"", i, err, want, cases[i].message);
    }
}

static void shipped_files_are_valid(void **state)
{
    static const char *const files[] = {"worker.conf.example", "conf/demo.conf"};
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct config *c = config_load(files[i], err, sizeof(err));
        if (c == NULL)
            fail_msg("%s", err);
        config_free(c);
    }
}

/* libconfig 1.5 exits the whole process on an @include it cannot read (a directory, a FIFO): a
 * bad reload would kill the daemon. They are refused first, with file:line. */
static void includes_that_libconfig_would_die_on_are_refused(void **state)
{
    char dir[] = "/tmp/qworker-inc-XXXXXX", file[256], inc[256], err[512];
    struct config *c;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(inc, sizeof(inc), "%s/more.conf", dir);
    f = fopen(inc, "w");
    fputs("worker = { concurrency = 7; };\n", f);
    fclose(f);
    snprintf(file, sizeof(file), "%s/main.conf", dir);
    f = fopen(file, "w");
    fputs("# relative to this file's directory\n  @include \"more.conf\"\n", f);
    fclose(f);
    c = config_load(file, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->concurrency, 7);
    config_free(c);

    f = fopen(file, "w");
    fputs("\n@include \"\"\n", f); /* the directory itself */
    fclose(f);
    assert_null(config_load(file, err, sizeof(err)));
    assert_non_null(strstr(err, "main.conf:2: @include \"\": cannot read: is a directory"));

    f = fopen(inc, "w");
    fputs("@include \"more.conf\"\n", f); /* includes itself */
    fclose(f);
    f = fopen(file, "w");
    fputs("@include \"more.conf\"\n", f);
    fclose(f);
    assert_null(config_load(file, err, sizeof(err)));
    assert_non_null(strstr(err, "more.conf:1: @include nested more than 10 deep"));

    assert_null(config_load(dir, err, sizeof(err)));
    assert_non_null(strstr(err, ":0: cannot read: is a directory"));
    unlink(inc);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_file_gives_every_default),
        cmocka_unit_test(settings_are_read),
        cmocka_unit_test(errors_name_file_line_and_problem),
        cmocka_unit_test(shipped_files_are_valid),
        cmocka_unit_test(includes_that_libconfig_would_die_on_are_refused),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
