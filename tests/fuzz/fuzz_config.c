/* Fuzz target: config_load() (src/config.c, over libconfig) on the input as a configuration file.
 *
 * The input is written to <dir>/fuzz-input.cfg, rewritten each run, in a private temporary
 * directory made once, which also holds "inc.cfg" (a small valid fragment) so that
 * `@include "inc.cfg"` is a reachable path. config_free() runs on every success, so
 * LeakSanitizer reports any leak, on the error paths too.
 *
 * Beyond "no crash, no leak, no undefined behaviour" it checks:
 * - on failure: the error is NUL-terminated within errlen, non-empty, starts with a file name
 *   followed by ":", and nothing is written past errlen;
 * - on success: at least one queue, each with a non-empty unique name and a handler from the
 *   configuration's own table; a handler named "sleep" exists; handler names are non-empty and
 *   unique; an exec handler has an absolute command, argv NULL-terminated at argc, a PATH in its
 *   env and an absolute cwd; the redis port is in 1..65535; worker id and prefix are non-empty;
 *   timeouts are positive; config_fixed_change() of a config with itself is NULL.
 *
 * Inputs that @include a path with ".." or the input file itself are skipped: they could read
 * files of /proc or /dev that block or never end, or include the file in itself to the depth
 * limit many times over: a slow or blocking harness, not a finding about qworker.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config.h"

#define INPUT_NAME "fuzz-input.cfg"

static char dir[4096], path[4200], inc_path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
    unlink(path);
    unlink(inc_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char inc[] = "redis = { host = \"localhost\"; port = 6390; };\n";

    (void)argc;
    (void)argv;
    fuzz_make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/" INPUT_NAME, dir);
    snprintf(inc_path, sizeof(inc_path), "%s/inc.cfg", dir);
    fuzz_write_file(inc_path, inc, strlen(inc));
    atexit(cleanup);
    return 0;
}

/* Case-insensitive memmem, enough for the skip rule. */
static bool contains(const uint8_t *data, size_t size, const char *needle)
{
    size_t n = strlen(needle);

    for (size_t i = 0; i + n <= size; i++) {
        size_t k = 0;
        while (k < n && tolower(data[i + k]) == needle[k])
            k++;
        if (k == n)
            return true;
    }
    return false;
}


static void check_loaded(const struct config *c)
{
    bool has_sleep = false;

    CHECK(c->nqueues >= 1 && c->queues != NULL);
    CHECK(c->nhandlers >= 1 && c->handlers != NULL);
    for (int i = 0; i < c->nhandlers; i++) {
        const struct handler_conf *h = &c->handlers[i];
        CHECK(h->name != NULL && h->name[0] != '\0');
        for (int k = 0; k < i; k++)
            CHECK(strcmp(c->handlers[k].name, h->name) != 0);
        has_sleep = has_sleep || strcmp(h->name, "sleep") == 0;
        if (h->type == HANDLER_EXEC) {
            bool has_path = false;
            CHECK(h->argc >= 1 && h->argv != NULL && h->argv[h->argc] == NULL);
            for (int k = 0; k < h->argc; k++)
                CHECK(h->argv[k] != NULL);
            CHECK(h->argv[0][0] == '/');
            CHECK(h->env != NULL);
            for (int k = 0; h->env[k] != NULL; k++) {
                CHECK(strchr(h->env[k], '=') != NULL);
                has_path = has_path || strncmp(h->env[k], "PATH=", 5) == 0;
            }
            CHECK(has_path);
            CHECK(h->cwd != NULL && h->cwd[0] == '/');
            CHECK(h->timeout > 0 && h->max_attempts >= 1 && h->max_line >= 16);
        } else {
            CHECK(h->type == HANDLER_SLEEP);
            CHECK(h->max_seconds >= 0);
        }
    }
    CHECK(has_sleep);
    for (int i = 0; i < c->nqueues; i++) {
        const struct queue_conf *q = &c->queues[i];
        CHECK(q->name != NULL && q->name[0] != '\0');
        CHECK(q->handler >= c->handlers && q->handler < c->handlers + c->nhandlers);
        CHECK(config_queue(c, q->name, strlen(q->name)) == q);
    }
    CHECK(c->redis.host != NULL);
    CHECK(c->redis.port >= 1 && c->redis.port <= 65535);
    CHECK(c->redis.connect_timeout_ms > 0 && c->redis.command_timeout_ms > 0);
    CHECK(c->worker_id != NULL && c->worker_id[0] != '\0');
    CHECK(c->prefix != NULL && c->prefix[0] != '\0');
    CHECK(c->concurrency >= 1 && c->fetch_batch >= 1 && c->max_payload >= 16);
    CHECK(c->heartbeat_ttl_ms >= 1000);
    CHECK(config_fixed_change(c, c) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[600];
    const size_t errlen = 512;
    struct config *c;

    if (contains(data, size, "include") &&
        (contains(data, size, "..") || contains(data, size, INPUT_NAME)))
        return -1; /* not added to the corpus */
    fuzz_write_file(path, data, size);
    memset(err, 'Z', sizeof(err));
    c = config_load(path, err, errlen);
    for (size_t i = errlen; i < sizeof(err); i++)
        CHECK(err[i] == 'Z');
    if (c == NULL) {
        const char *colon;
        CHECK(memchr(err, '\0', errlen) != NULL);
        CHECK(err[0] != '\0');
        colon = strchr(err, ':');
        CHECK(colon != NULL && colon > err);
        return 0;
    }
    check_loaded(c);
    config_free(c);
    return 0;
}
