#include "taskq.h"

#include <errno.h>

#include "clock.h"

#include "task.h"

void taskq_init(struct taskq *q, void (*wake)(void *), void *wake_arg)
{
    pthread_mutex_init(&q->mu, NULL);
    cond_init_monotonic(&q->cond);
    q->head = NULL;
    q->tailp = &q->head;
    q->len = 0;
    q->closed = false;
    q->kicked = false;
    q->wake = wake;
    q->wake_arg = wake_arg;
}

void taskq_destroy(struct taskq *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cond);
}

void taskq_push_chain(struct taskq *q, struct task *first, struct task *last, size_t n)
{
    bool was_empty;

    last->next = NULL;
    pthread_mutex_lock(&q->mu);
    was_empty = q->head == NULL;
    *q->tailp = first;
    q->tailp = &last->next;
    q->len += n;
    if (was_empty)
        pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
    /* Outside the lock: the doorbell takes libevent's own lock. A wake-up for a non-empty queue
     * is owed already and would be merged anyway. */
    if (was_empty && q->wake != NULL)
        q->wake(q->wake_arg);
}

void taskq_push(struct taskq *q, struct task *t)
{
    taskq_push_chain(q, t, t, 1);
}

void taskq_chain_add(struct taskq_chain *chain, struct task *t)
{
    /* It may come from another chain (the loop's inbox batch): a link left over would make
     * the next pop hand out a task that is not in this chain. */
    t->next = NULL;
    if (chain->last != NULL)
        chain->last->next = t;
    else
        chain->first = t;
    chain->last = t;
    chain->n++;
}

struct task *taskq_chain_pop(struct taskq_chain *chain)
{
    struct task *t = chain->first;

    if (t != NULL) {
        chain->first = t->next;
        if (chain->first == NULL)
            chain->last = NULL;
        chain->n--;
    }
    return t;
}

void taskq_push_batch(struct taskq *q, struct taskq_chain *chain)
{
    if (chain->n > 0)
        taskq_push_chain(q, chain->first, chain->last, chain->n);
    *chain = (struct taskq_chain){0};
}

void taskq_close(struct taskq *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
    if (q->wake != NULL)
        q->wake(q->wake_arg);
}

void taskq_kick(struct taskq *q)
{
    pthread_mutex_lock(&q->mu);
    q->kicked = true;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

static struct task *take_locked(struct taskq *q, bool *closed)
{
    struct task *all = q->head;

    q->head = NULL;
    q->tailp = &q->head;
    q->len = 0;
    q->kicked = false;
    if (closed != NULL)
        *closed = q->closed;
    return all;
}

struct task *taskq_take_all(struct taskq *q, bool *closed)
{
    struct task *all;

    pthread_mutex_lock(&q->mu);
    all = take_locked(q, closed);
    pthread_mutex_unlock(&q->mu);
    return all;
}

struct task *taskq_wait_all(struct taskq *q, int timeout_ms, bool *closed)
{
    struct timespec deadline = clock_mono_deadline(timeout_ms < 0 ? 0 : timeout_ms);
    struct task *all;

    pthread_mutex_lock(&q->mu);
    while (q->head == NULL && !q->closed && !q->kicked) {
        int rc = timeout_ms < 0 ? pthread_cond_wait(&q->cond, &q->mu)
                                : pthread_cond_timedwait(&q->cond, &q->mu, &deadline);
        if (rc == ETIMEDOUT)
            break;
    }
    all = take_locked(q, closed);
    pthread_mutex_unlock(&q->mu);
    return all;
}

size_t taskq_len(struct taskq *q)
{
    size_t n;

    pthread_mutex_lock(&q->mu);
    n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}
