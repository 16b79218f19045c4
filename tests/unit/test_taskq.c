/* The hand-off queue: order, batches, close, and concurrent producers (run under TSan too). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capacity.h"
#include "task.h"
#include "taskq.h"

#define PRODUCERS 4
#define PER_PRODUCER 5000

static struct queue_conf queue = {.name = "q"};

static struct task *make(int n)
{
    struct task *t = task_new(&queue, (const char *)&n, sizeof(n));
    assert_non_null(t);
    return t;
}

static int value(const struct task *t)
{
    int n;
    memcpy(&n, t->payload, sizeof(n));
    return n;
}

static void keeps_order_and_takes_all(void **state)
{
    struct taskq q;
    struct task *t, *next;
    bool closed = true;
    int expect = 0;

    (void)state;
    taskq_init(&q, NULL, NULL);
    assert_null(taskq_take_all(&q, &closed));
    assert_false(closed);
    for (int i = 0; i < 10; i++)
        taskq_push(&q, make(i));
    assert_int_equal(taskq_len(&q), 10);
    for (t = taskq_take_all(&q, NULL); t != NULL; t = next) {
        next = t->next;
        assert_int_equal(value(t), expect++);
        task_free(t);
    }
    assert_int_equal(expect, 10);
    assert_int_equal(taskq_len(&q), 0);
    taskq_destroy(&q);
}

static void wait_times_out_then_sees_close(void **state)
{
    struct taskq q;
    bool closed = true;

    (void)state;
    taskq_init(&q, NULL, NULL);
    assert_null(taskq_wait_all(&q, 10, &closed));
    assert_false(closed);
    taskq_close(&q);
    assert_null(taskq_wait_all(&q, -1, &closed));
    assert_true(closed);
    taskq_destroy(&q);
}

static void chains_keep_order_when_popped(void **state)
{
    struct taskq_chain chain = {0};
    struct task *t;

    (void)state;
    assert_null(taskq_chain_pop(&chain));
    for (int i = 0; i < 3; i++)
        taskq_chain_add(&chain, make(i));
    for (int i = 0; i < 2; i++) {
        t = taskq_chain_pop(&chain);
        assert_int_equal(value(t), i);
        task_free(t);
    }
    taskq_chain_add(&chain, make(3)); /* after a pop, the tail is still right */
    assert_int_equal(chain.n, 2);
    for (int i = 2; i < 4; i++) {
        t = taskq_chain_pop(&chain);
        assert_int_equal(value(t), i);
        task_free(t);
    }
    assert_null(taskq_chain_pop(&chain));
    assert_null(chain.last);
}

/* A task moved from one chain to another (the loop's inbox batch to a handler's waiting line)
 * takes none of the first chain's links along: before, the task behind it in the batch (running
 * under another handler) was popped from the waiting line too, and started a second time. */
static void a_task_added_leaves_its_old_chain_behind(void **state)
{
    struct taskq_chain batch = {0}, waiting = {0};
    struct task *a = make(1), *b = make(2), *t;

    (void)state;
    taskq_chain_add(&batch, a);
    taskq_chain_add(&batch, b);
    t = taskq_chain_pop(&batch); /* a, still linked to b */
    taskq_chain_add(&waiting, t);
    assert_ptr_equal(taskq_chain_pop(&waiting), a);
    assert_null(taskq_chain_pop(&waiting));
    assert_int_equal(waiting.n, 0);
    task_free(a);
    task_free(b);
}

static void kick_ends_a_wait_without_a_task(void **state)
{
    struct taskq q;
    bool closed = true;

    (void)state;
    taskq_init(&q, NULL, NULL);
    taskq_kick(&q);
    assert_null(taskq_wait_all(&q, -1, &closed)); /* returns at once, neither task nor close */
    assert_false(closed);
    assert_null(taskq_wait_all(&q, 10, &closed)); /* the kick was used up: times out */
    taskq_destroy(&q);
}

static atomic_int wakes;

static void count_wake(void *arg)
{
    (void)arg;
    atomic_fetch_add(&wakes, 1);
}

static void wakes_only_when_it_was_empty(void **state)
{
    struct taskq q;
    struct task *t, *next;

    (void)state;
    atomic_store(&wakes, 0);
    taskq_init(&q, count_wake, NULL);
    taskq_push(&q, make(1));
    taskq_push(&q, make(2));
    assert_int_equal(atomic_load(&wakes), 1);
    for (t = taskq_take_all(&q, NULL); t != NULL; t = next) {
        next = t->next;
        task_free(t);
    }
    taskq_push(&q, make(3));
    assert_int_equal(atomic_load(&wakes), 2);
    task_free(taskq_take_all(&q, NULL));
    taskq_close(&q);
    assert_int_equal(atomic_load(&wakes), 3);
    taskq_destroy(&q);
}

struct producer {
    struct taskq *q;
    int id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;

    for (int i = 0; i < PER_PRODUCER; i++)
        taskq_push(p->q, make(p->id * PER_PRODUCER + i));
    return NULL;
}

static void concurrent_producers_lose_nothing(void **state)
{
    struct taskq q;
    struct producer p[PRODUCERS];
    pthread_t th[PRODUCERS];
    int last[PRODUCERS], got = 0;

    (void)state;
    taskq_init(&q, NULL, NULL);
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){&q, i};
        last[i] = -1;
        pthread_create(&th[i], NULL, produce, &p[i]);
    }
    while (got < PRODUCERS * PER_PRODUCER) {
        struct task *t, *next;
        for (t = taskq_wait_all(&q, 1000, NULL); t != NULL; t = next) {
            int v = value(t), who = v / PER_PRODUCER;
            next = t->next;
            assert_true(v > last[who]); /* each producer's tasks arrive in its order */
            last[who] = v;
            got++;
            task_free(t);
        }
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(got, PRODUCERS * PER_PRODUCER);
    taskq_destroy(&q);
}

static void capacity_reserves_only_what_is_free(void **state)
{
    struct capacity c;

    (void)state;
    capacity_init(&c, 5);
    assert_int_equal(capacity_reserve(&c, 3, 1000), 3);
    assert_int_equal(capacity_reserve(&c, 3, 1000), 2);
    capacity_release(&c, 1);
    assert_int_equal(capacity_reserve(&c, 100, 1000), 1);
    assert_int_equal(capacity_used(&c), 5);
    assert_int_equal(capacity_reserve(&c, 1, 10), -1); /* full: times out */
    capacity_set_limit(&c, 6);
    assert_int_equal(capacity_reserve(&c, 100, 10), 1);
    capacity_stop(&c);
    assert_int_equal(capacity_reserve(&c, 1, 1000), 0);
    capacity_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keeps_order_and_takes_all),
        cmocka_unit_test(wait_times_out_then_sees_close),
        cmocka_unit_test(kick_ends_a_wait_without_a_task),
        cmocka_unit_test(chains_keep_order_when_popped),
        cmocka_unit_test(a_task_added_leaves_its_old_chain_behind),
        cmocka_unit_test(wakes_only_when_it_was_empty),
        cmocka_unit_test(concurrent_producers_lose_nothing),
        cmocka_unit_test(capacity_reserves_only_what_is_free),
    };
    return cmocka_run_group_tests_name("hand-off", tests, NULL, NULL);
}
