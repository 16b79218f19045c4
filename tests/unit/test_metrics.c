/* The series metrics.c renders: one counter per outcome, requeued and delayed included (which an
 * end-to-end scrape cannot catch: requeued happens only at shutdown), durations only of what
 * ran, cumulative buckets, and label values escaped as the text format wants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"
#include "task.h"

static struct handler_conf h = {.name = "sle\"ep\\", .type = HANDLER_SLEEP};
static struct queue_conf q = {.name = "qu\neue", .handler = &h};

static char *render(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *text;

    assert_non_null(b);
    assert_int_equal(metrics_render(b), 0);
    n = evbuffer_get_length(b);
    text = malloc(n + 1);
    evbuffer_remove(b, text, n);
    text[n] = '\0';
    evbuffer_free(b);
    return text;
}

static void finish(enum outcome o, int64_t ran_us)
{
    struct task *t = task_new(&q, "0", 1);

    assert_non_null(t);
    t->outcome = o;
    t->started_mono_us = ran_us ? 1000 : 0;
    t->finished_mono_us = 1000 + ran_us;
    metrics_tasks_begin();
    metrics_task(t);
    metrics_tasks_end();
    task_free(t);
}

#define LABELS "queue=\"qu\\neue\",handler=\"sle\\\"ep\\\\\""

static void every_outcome_has_its_counter(void **state)
{
    char *text;

    (void)state;
    finish(OUTCOME_OK, 3000);
    finish(OUTCOME_OK, 20000);
    finish(OUTCOME_FAILED, 700000);
    finish(OUTCOME_TIMEOUT, 2000000);
    finish(OUTCOME_INVALID, 0);
    finish(OUTCOME_REQUEUED, 0);
    finish(OUTCOME_DELAYED, 0);
    text = render();
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"ok\"} 2\n"));
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"failed\"} 1\n"));
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"timeout\"} 1\n"));
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"invalid\"} 1\n"));
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"requeued\"} 1\n"));
    assert_non_null(strstr(text, "qworker_tasks_total{" LABELS ",outcome=\"delayed\"} 1\n"));
    /* Four ran: 3 ms, 20 ms, 0.7 s, 2 s. Buckets count everything at or below their bound. */
    assert_non_null(strstr(text, "qworker_task_duration_seconds_bucket{" LABELS ",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "qworker_task_duration_seconds_bucket{" LABELS ",le=\"0.05\"} 2\n"));
    assert_non_null(strstr(text, "qworker_task_duration_seconds_bucket{" LABELS ",le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "qworker_task_duration_seconds_bucket{" LABELS ",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "qworker_task_duration_seconds_count{" LABELS "} 4\n"));
    assert_non_null(strstr(text, "qworker_task_duration_seconds_sum{" LABELS "} 2.723000\n"));
    free(text);
}

static void fetch_count_is_its_buckets_sum(void **state)
{
    char *text;

    (void)state;
    metrics_fetch_us(150);
    metrics_fetch_us(150);
    metrics_fetch_us(5000000);
    text = render();
    assert_non_null(strstr(text, "qworker_fetch_duration_seconds_bucket{le=\"0.00025\"} 2\n"));
    assert_non_null(strstr(text, "qworker_fetch_duration_seconds_bucket{le=\"2.5\"} 2\n"));
    assert_non_null(strstr(text, "qworker_fetch_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "qworker_fetch_duration_seconds_count 3\n"));
    free(text);
    metrics_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_outcome_has_its_counter),
        cmocka_unit_test(fetch_count_is_its_buckets_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
