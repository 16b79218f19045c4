/* Config loading: defaults, the shipped files, and an error with file:line for every mistake. */
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static void rate_limits_and_cancel_remember_are_read(void **state)
{
    char err[512];
    struct config *c = load_text(
        "worker = { cancel_remember = 60; };\n"
        "handlers = ( { name = \"a\"; type = \"sleep\"; rate_limit = 20.5; },\n"
        "  { name = \"b\"; type = \"exec\"; command = [\"/bin/true\"]; rate_limit = 0.5;\n"
        "    rate_burst = 3; },\n"
        "  { name = \"c\"; type = \"sleep\"; } );\n",
        err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_true(c->cancel_remember == 60);
    assert_true(c->handlers[0].rate_limit == 20.5);
    assert_int_equal(c->handlers[0].rate_burst, 21); /* a second's worth, by default */
    assert_true(c->handlers[1].rate_limit == 0.5);
    assert_int_equal(c->handlers[1].rate_burst, 3);
    assert_true(c->handlers[2].rate_limit == 0); /* none */
    config_free(c);
    c = load_text("", err, sizeof(err));
    assert_non_null(c);
    assert_true(c->cancel_remember == 86400);
    config_free(c);
}

static void sentinel_settings_are_read(void **state)
{
    char err[512];
    struct config *c = load_text(
        "redis = { password = \"data\"; db = 2;\n"
        "  sentinel = { master = \"mymaster\"; username = \"su\"; password = \"sp\";\n"
        "    addresses = (\"10.0.0.5:26379\", \"[fe80::1]:26380\", \"s3.example:26381\"); };\n"
        "};",
        err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_string_equal(c->redis.sentinel.master, "mymaster");
    assert_int_equal(c->redis.sentinel.n, 3);
    assert_string_equal(c->redis.sentinel.hosts[0], "10.0.0.5");
    assert_int_equal(c->redis.sentinel.ports[0], 26379);
    assert_string_equal(c->redis.sentinel.hosts[1], "fe80::1");
    assert_int_equal(c->redis.sentinel.ports[1], 26380);
    assert_string_equal(c->redis.sentinel.hosts[2], "s3.example");
    assert_string_equal(c->redis.sentinel.username, "su");
    assert_string_equal(c->redis.sentinel.password, "sp");
    assert_string_equal(c->redis.password, "data"); /* the data nodes' own */
    assert_int_equal(c->redis.db, 2);
    config_free(c);
}

static void settings_of_one_name_on_one_line_keep_their_own_values(void **state)
{
    char err[512];
    struct config *c = load_text(
        "queues = ( { name = \"a\"; weight = 3; }, { name = \"b\"; weight = 1; } );\n"
        "handlers = ( { name = \"x\"; type = \"exec\"; command = [\"/bin/true\"]; concurrency = 2; "
        "}, { name = \"y\"; type = \"exec\"; command = [\"/bin/true\"]; concurrency = 7; } );",
        err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_int_equal(c->queues[0].weight, 3);
    assert_int_equal(c->queues[1].weight, 1);
    assert_int_equal(c->handlers[0].concurrency, 2);
    assert_int_equal(c->handlers[1].concurrency, 7);
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
        {"worker = { task_memory_mb = 0; };", 1, "'task_memory_mb' = 0 is out of range (1 to"},
        {"worker = { shutdown_timeout = \"5\"; };", 1, "must be a number of seconds"},
        {"worker = { delivery = \"sometimes\"; };", 1, "'delivery' must be"},
        {"worker = { prefix = \"\"; };", 1, "'prefix' must not be empty"},
        {"worker = { prefix = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; };", 1,
         "'prefix' is longer than 128 bytes"},
        {"redis = 5;", 1, "'redis' must be a group"},
        {"redis = { username = \"u\"; };", 1, "'username' needs a 'password' or a 'password_file'"},
        {"redis = { password = \"p\";\n password_file = \"/etc/hostname\"; };", 2,
         "set 'password' or 'password_file', not both"},
        {"redis = { password_file = \"\"; };", 1, "'password_file' must not be empty"},
        {"redis = { password_file = 5; };", 1, "'password_file' must be a string"},
        {"redis = { sentinel = { addresses = [\"h:1\"]; }; };", 1, "needs 'master'"},
        {"redis = { sentinel = { master = \"m\"; }; };", 1, "needs 'addresses'"},
        {"redis = { sentinel = { master = \"m\";\n addresses = [\"h\"]; }; };", 2,
         "element 1 is not \"HOST:PORT\""},
        {"redis = { sentinel = { master = \"m\"; addresses = [\"h:1\", \"::1:5\"]; }; };", 1,
         "element 2 is not"},
        {"redis = { sentinel = { master = \"m\"; addresses = [\"h:70000\"]; }; };", 1,
         "element 1 is not"},
        {"redis = { sentinel = { master = \"a b\"; addresses = [\"h:1\"]; }; };", 1,
         "without spaces"},
        {"redis = { sentinel = { master = \"m\"; addresses = [\"h:1\"]; quorum = 2; }; };", 1,
         "unknown setting 'quorum' in redis.sentinel"},
        {"redis = { sentinel = { master = \"m\"; addresses = [\"h:1\"]; username = \"u\"; }; "
         "};",
         1, "'username' needs a 'password'"},
        {"redis = {\n port = 6380;\n sentinel = { master = \"m\"; addresses = [\"h:1\"]; }; };", 2,
         "'port' and 'sentinel' exclude each other"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\";\n cron = \"61 * * * *\"; } );",
         2, "schedule 'n': cron \"61 * * * *\": minute field \"61\""},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\"; cron = \"0 0 30 2 *\"; } );",
         1, "never fires"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\"; every = 5; cron = \"* * * * *\"; "
         "} );",
         1, "needs 'cron' (\"0 3 * * *\") or 'every' (seconds), one of them"},
        {"schedules = ( { name = \"n\"; payload = \"p\"; every = 5; } );", 1, "needs a 'queue'"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; every = 5; } );", 1, "needs a 'payload'"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\"; every = 0; } );", 1,
         "'every' = 0 is out of range"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\"; every = 5;\n"
         " timezone = \"Europe/Paris\"; } );",
         2, "only \"UTC\" is supported"},
        {"schedules = ( { name = \"n\"; queue = \"q\"; payload = \"p\"; every = 5; },\n"
         " { name = \"n\"; queue = \"q\"; payload = \"p\"; every = 6; } );",
         2, "schedule 'n' is listed twice"},
        {"handlers = ( { name = \"x\"; type = \"sleep\"; rate_limit = 0; } );", 1,
         "'rate_limit' = 0 is out of range (0.001 to 1000000 tasks a second)"},
        {"handlers = ( { name = \"x\"; type = \"sleep\"; rate_burst = 5; } );", 1,
         "'rate_burst' needs a 'rate_limit' in handler 'x'"},
        {"handlers = ( { name = \"x\"; type = \"sleep\"; rate_limit = \"5\"; } );", 1,
         "'rate_limit' must be a number of tasks a second"},
        {"worker = { delivery = \"at-most-once\"; };\nhandlers = ( { name = \"x\"; type = "
         "\"sleep\";\n rate_limit = 5; } );",
         3, "handler 'x': 'rate_limit' needs worker.delivery = \"at-least-once\""},
        {"worker = { cancel_remember = 0; };", 1, "'cancel_remember' = 0 is out of range"},
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

static bool user_exists(const char *name)
{
    struct passwd pw, *found = NULL;
    char buf[4096];

    return getpwnam_r(name, &pw, buf, sizeof(buf), &found) == 0 && found != NULL;
}

static void shipped_files_are_valid(void **state)
{
    static const char *const files[] = {"worker.conf.example", "conf/demo.conf"};
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct config *c = config_load(files[i], err, sizeof(err));
        /* The example is the packaged worker.conf: it names the user the package makes. Where
         * that user is missing, that is all that may be wrong (tests/e2e/test_seed.py checks the
         * rest with another user). */
        if (c == NULL && i == 0 && !user_exists("qworker-task") &&
            strstr(err, "task_user \"qworker-task\": no such user") != NULL)
            continue;
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

/* A password file and what it holds: dir/name, len bytes of data; its path in out. */
static void put_file(const char *dir, const char *name, const char *data, size_t len, char *out,
                     size_t outlen)
{
    FILE *f;

    snprintf(out, outlen, "%s/%s", dir, name);
    f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Loads "redis = { LINE }" with password_file = "name"; NULL with err on failure. */
static struct config *load_password_file(const char *name, char *err, size_t errlen)
{
    char text[512];

    snprintf(text, sizeof(text), "redis = { username = \"qw\";\n  password_file = \"%s\"; };\n",
             name);
    return load_text(text, err, errlen);
}

static void password_file_is_read_whole_but_one_newline(void **state)
{
    static const struct {
        const char *data;
        size_t len;
        const char *password;
    } cases[] = {
        {"s3cret\n", 7, "s3cret"},
        {"s3cret", 6, "s3cret"},            /* no newline: all of it */
        {"two\n\n", 5, "two\n"},            /* only one newline is the file's, not the password's */
        {" sp ace\r\n", 9, " sp ace\r"},     /* every other byte is the password's */
    };
    char dir[] = "/tmp/qworker-pw-XXXXXX", file[256], err[512];

    (void)state;
    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config *c;
        put_file(dir, "pw", cases[i].data, cases[i].len, file, sizeof(file));
        c = load_password_file(file, err, sizeof(err));
        if (c == NULL)
            fail_msg("case %zu: %s", i, err);
        assert_string_equal(c->redis.password, cases[i].password);
        assert_string_equal(c->redis.username, "qw");
        assert_string_equal(c->redis.password_path, file);
        assert_false(c->redis.password_inline);
        config_free(c);
    }
    unlink(file);
    rmdir(dir);
}

static void password_file_errors_name_the_file_and_the_reason(void **state)
{
    char dir[] = "/tmp/qworker-pw-XXXXXX", file[256], err[512], want[512], big[4097];
    static const char nul[] = "ab\0cd\n";
    struct config *c;

    (void)state;
    assert_non_null(mkdtemp(dir));
    memset(big, 'x', sizeof(big));

    put_file(dir, "empty", "", 0, file, sizeof(file));
    assert_null(load_password_file(file, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s is empty", path, file);
    assert_string_equal(err, want);
    unlink(file);

    put_file(dir, "newline", "\n", 1, file, sizeof(file)); /* empty once the newline goes */
    assert_null(load_password_file(file, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s is empty", path, file);
    assert_string_equal(err, want);
    unlink(file);

    put_file(dir, "big", big, sizeof(big), file, sizeof(file));
    assert_null(load_password_file(file, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s is larger than 4 KiB", path, file);
    assert_memory_equal(err, want, strlen(want));
    unlink(file);

    put_file(dir, "4k", big, 4096, file, sizeof(file)); /* exactly 4 KiB is a password */
    c = load_password_file(file, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(strlen(c->redis.password), 4096);
    config_free(c);
    unlink(file);

    put_file(dir, "nul", nul, sizeof(nul) - 1, file, sizeof(file));
    assert_null(load_password_file(file, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s holds a NUL byte", path, file);
    assert_memory_equal(err, want, strlen(want));
    unlink(file);

    snprintf(file, sizeof(file), "%s/absent", dir);
    assert_null(load_password_file(file, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s cannot be read: No such file", path,
             file);
    assert_memory_equal(err, want, strlen(want));

    /* (The tests run as root, whom a mode of 0000 does not stop: a directory cannot be read.) */
    assert_null(load_password_file(dir, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s is not a regular file", path, dir);
    assert_string_equal(err, want);
    rmdir(dir);
}

/* LoadCredential=redis-password:/etc/qworker/redis-password in the unit; password_file =
 * "redis-password" in the configuration. */
static void relative_password_file_is_a_systemd_credential(void **state)
{
    char dir[] = "/tmp/qworker-cred-XXXXXX", file[256], err[512], want[512];
    struct config *c;

    (void)state;
    assert_non_null(mkdtemp(dir));
    put_file(dir, "redis-password", "from-credential\n", 16, file, sizeof(file));
    assert_int_equal(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
    c = load_password_file("redis-password", err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(c->redis.password, "from-credential");
    assert_string_equal(c->redis.password_path, file);
    config_free(c);

    assert_null(load_password_file("other", err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: 'password_file' %s/other cannot be read: ", path, dir);
    assert_memory_equal(err, want, strlen(want));

    /* systemd's fallback for a missing source (SetCredential=ID: with nothing) is empty. */
    unlink(file);
    put_file(dir, "redis-password", "", 0, file, sizeof(file));
    assert_null(load_password_file("redis-password", err, sizeof(err)));
    assert_non_null(strstr(err, "is empty (is the file its LoadCredential= reads missing"));

    assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
    assert_null(load_password_file("redis-password", err, sizeof(err)));
    snprintf(want, sizeof(want),
             "%s:2: 'password_file' \"redis-password\" is relative, so it names a systemd "
             "credential in $CREDENTIALS_DIRECTORY, which is not set", path);
    assert_memory_equal(err, want, strlen(want));
    unlink(file);
    rmdir(dir);
}

/* What -t's warning about a readable password looks at. */
static void password_remembers_the_file_that_holds_it(void **state)
{
    char dir[] = "/tmp/qworker-inc-XXXXXX", file[256], inc[256], err[512];
    struct config *c;

    (void)state;
    c = load_text("redis = { password = \"inline\"; };\n", err, sizeof(err));
    assert_non_null(c);
    assert_true(c->redis.password_inline);
    assert_string_equal(c->redis.password_path, path);
    config_free(c);

    c = load_text("", err, sizeof(err));
    assert_non_null(c);
    assert_null(c->redis.password);
    assert_null(c->redis.password_path);
    config_free(c);

    assert_non_null(mkdtemp(dir));
    put_file(dir, "redis.conf", "redis = { password = \"inc\"; };\n", 31, inc, sizeof(inc));
    put_file(dir, "main.conf", "@include \"redis.conf\"\n", 22, file, sizeof(file));
    c = config_load(file, err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(c->redis.password, "inc");
    assert_string_equal(c->redis.password_path, inc); /* the file to chmod is the included one */
    config_free(c);
    unlink(inc);
    unlink(file);
    rmdir(dir);
}

/* A reload re-reads the password_file; the connections keep the password they started with,
 * so a changed one is refused like any change to the redis section. Where it is kept may move. */
static void a_changed_password_needs_a_restart(void **state)
{
    char dir[] = "/tmp/qworker-pw-XXXXXX", file[256], err[512], text[512];
    struct config *inline_c, *file_c, *changed;

    (void)state;
    assert_non_null(mkdtemp(dir));
    put_file(dir, "pw", "same\n", 5, file, sizeof(file));
    inline_c = load_text("redis = { password = \"same\"; };\n", err, sizeof(err));
    snprintf(text, sizeof(text), "redis = { password_file = \"%s\"; };\n", file);
    file_c = load_text(text, err, sizeof(err));
    put_file(dir, "pw", "rotated\n", 8, file, sizeof(file));
    changed = load_text(text, err, sizeof(err));
    assert_non_null(inline_c);
    assert_non_null(file_c);
    assert_non_null(changed);
    assert_null(config_fixed_change(inline_c, file_c));
    assert_string_equal(config_fixed_change(file_c, changed),
                        "the redis password (inline or in its password_file)");
    config_free(inline_c);
    config_free(file_c);
    config_free(changed);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_file_gives_every_default),
        cmocka_unit_test(settings_are_read),
        cmocka_unit_test(errors_name_file_line_and_problem),
        cmocka_unit_test(sentinel_settings_are_read),
        cmocka_unit_test(rate_limits_and_cancel_remember_are_read),
        cmocka_unit_test(settings_of_one_name_on_one_line_keep_their_own_values),
        cmocka_unit_test(shipped_files_are_valid),
        cmocka_unit_test(includes_that_libconfig_would_die_on_are_refused),
        cmocka_unit_test(password_file_is_read_whole_but_one_newline),
        cmocka_unit_test(password_file_errors_name_the_file_and_the_reason),
        cmocka_unit_test(relative_password_file_is_a_systemd_credential),
        cmocka_unit_test(password_remembers_the_file_that_holds_it),
        cmocka_unit_test(a_changed_password_needs_a_restart),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
