/* Fuzz target: envelope_parse() (src/envelope.c) and sleep_parse_seconds() (src/handler_sleep.c).
 *
 * The input is one payload, taken from queue "queue" whose default handler is "sleep", under a
 * configuration loaded once at start from a file written to a private temporary directory: a
 * sleep handler, an exec handler "echo" with args = "argv" and an exec handler "dump" with
 * args = "stdin". Every task is freed with task_free(), so LeakSanitizer reports any leak in the
 * parse (wrapped retries and dead letters included).
 *
 * Beyond "no crash, no leak, no undefined behaviour" it checks:
 * - failure leaves a reason, shorter than TASK_REASON_MAX; success leaves none;
 * - on success: the handler is one of the configuration's; the payload never grew; timeout and
 *   delay are in [0, 31536000] s, max_attempts in [0, 1000], attempt in [1, 1000], recoveries in
 *   [0, 1000000] and below max_recoveries; a plain payload has no args; an argv exec handler
 *   gets an array of strings as args, or a plain payload without a NUL byte; the label is a
 *   NUL-terminated string;
 * - sleep_parse_seconds(), on the raw input and on the parsed payload when it goes to the sleep
 *   handler as it is: accepts exactly digits["."digits] of at most 32 bytes whose value is at
 *   most max (checked against an independent grammar), gives a finite value in [0, max] when it
 *   accepts, and otherwise a NUL-terminated reason that stays within the reasonlen it was given.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "config.h"
#include "envelope.h"
#include "handler_sleep.h"
#include "task.h"

static const char conf_text[] =
    "queues = ( { name = \"queue\"; handler = \"sleep\"; } );\n"
    "handlers = (\n"
    "    { name = \"sleep\"; type = \"sleep\"; max_seconds = 86400; },\n"
    "    { name = \"echo\"; type = \"exec\"; command = [\"/bin/echo\", \"--\"]; args = \"argv\"; },\n"
    "    { name = \"dump\"; type = \"exec\"; command = [\"/bin/cat\"]; args = \"stdin\"; }\n"
    ");\n";

static struct config *conf;
static const struct queue_conf *queue;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[4096], path[4200], err[512];

    (void)argc;
    (void)argv;
    fuzz_make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/worker.conf", dir);
    fuzz_write_file(path, conf_text, strlen(conf_text));
    conf = config_load(path, err, sizeof(err));
    unlink(path);
    rmdir(dir);
    if (conf == NULL) {
        fprintf(stderr, "fuzz_envelope: the harness's configuration does not load: %s\n", err);
        abort();
    }
    queue = config_queue(conf, "queue", 5);
    CHECK(queue != NULL && queue->handler->type == HANDLER_SLEEP);
    CHECK(conf->nhandlers == 3);
    return 0;
}

/* digits [ "." digits ], at most 32 bytes: the grammar handler_sleep.h documents. */
static bool plain_decimal(const char *s, size_t len)
{
    size_t i = 0, a = 0, b = 0;

    if (len > 32)
        return false;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, a++;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, b++;
        if (b == 0)
            return false;
    }
    return a > 0 && i == len;
}

static void check_sleep_parse(const char *p, size_t len, double max)
{
    char reason[TASK_REASON_MAX + 16], text[40];
    const size_t reasonlen = TASK_REASON_MAX;
    double seconds = -1;
    bool expect;
    int rc;

    memset(reason, 'Z', sizeof(reason));
    rc = sleep_parse_seconds(p, len, max, &seconds, reason, reasonlen);
    expect = plain_decimal(p, len);
    if (expect) {
        memcpy(text, p, len);
        text[len] = '\0';
        expect = strtod(text, NULL) <= max;
    }
    CHECK((rc == 0) == expect);
    if (rc == 0) {
        CHECK(isfinite(seconds) && seconds >= 0 && seconds <= max);
    } else {
        CHECK(rc == -1);
        CHECK(memchr(reason, '\0', reasonlen) != NULL);
        CHECK(strlen(reason) > 0);
    }
    for (size_t i = reasonlen; i < sizeof(reason); i++)
        CHECK(reason[i] == 'Z');
}

static bool handler_of_conf(const struct handler_conf *h)
{
    for (int i = 0; i < conf->nhandlers; i++)
        if (h == &conf->handlers[i])
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct task *t = task_new(queue, (const char *)data, size);
    int rc;

    CHECK(t != NULL);
    rc = envelope_parse(t, conf);
    if (rc != 0) {
        CHECK(rc == -1);
        CHECK(t->reason != NULL);
        CHECK(strlen(t->reason) < TASK_REASON_MAX);
    } else {
        CHECK(t->reason == NULL);
        CHECK(t->handler != NULL && handler_of_conf(t->handler));
        CHECK(t->len <= size);
        CHECK(t->timeout >= 0 && t->timeout <= 31536000);
        CHECK(t->delay >= 0 && t->delay <= 31536000);
        CHECK(t->max_attempts >= 0 && t->max_attempts <= 1000);
        CHECK(t->attempt >= 1 && t->attempt <= 1000);
        CHECK(t->recoveries >= 0 && t->recoveries <= 1000000);
        CHECK(conf->max_recoveries == 0 || t->recoveries < conf->max_recoveries);
        CHECK(t->label != NULL);
        (void)strlen(t->label); /* ASan: a label must be a live, NUL-terminated string */
        if (t->json == NULL)
            CHECK(t->args == NULL);
        if (t->handler->type == HANDLER_EXEC && !t->handler->args_stdin) {
            if (t->args != NULL) {
                size_t i;
                json_t *a;
                CHECK(json_is_array(t->args));
                json_array_foreach(t->args, i, a) CHECK(json_is_string(a));
            }
            if (t->json == NULL)
                CHECK(memchr(t->payload, '\0', t->len) == NULL);
        }
        if (t->handler->type == HANDLER_SLEEP && t->json == NULL)
            check_sleep_parse(t->payload, t->len, t->handler->max_seconds);
    }
    check_sleep_parse((const char *)data, size, queue->handler->max_seconds);
    task_free(t);
    return 0;
}
