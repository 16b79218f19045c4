/* The hand-off between threads: a FIFO of tasks under a mutex. The producer pushes; the consumer
 * takes everything at once, so that one wake-up serves a whole burst. A queue is woken either by a
 * callback (the loop thread's libevent doorbell) or by its condition variable (the reporter). */
#ifndef QWORKER_TASKQ_H
#define QWORKER_TASKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct task;

struct taskq {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct task *head;
    struct task **tailp;
    size_t len;
    bool closed;             /* the producer is done: nothing more will be pushed */
    bool kicked;             /* taskq_kick: end the current wait without a task */
    void (*wake)(void *arg); /* called after a push onto an empty queue, and on close */
    void *wake_arg;
};

void taskq_init(struct taskq *q, void (*wake)(void *), void *wake_arg);
void taskq_destroy(struct taskq *q);

/* Appends the chain first..last (linked by ->next) of n tasks. */
void taskq_push_chain(struct taskq *q, struct task *first, struct task *last, size_t n);
void taskq_push(struct taskq *q, struct task *t);

/* A batch built before it is handed over in one push. */
struct taskq_chain {
    struct task *first, *last;
    size_t n;
};

void taskq_chain_add(struct taskq_chain *chain, struct task *t);
/* Takes the first task off the chain; NULL if it is empty. */
struct task *taskq_chain_pop(struct taskq_chain *chain);
/* Pushes the chain (if not empty) and empties it. */
void taskq_push_batch(struct taskq *q, struct taskq_chain *chain);
void taskq_close(struct taskq *q);
/* Ends the consumer's current (or next) wait even though no task came: it has other work. */
void taskq_kick(struct taskq *q);

/* Takes every queued task, in order; NULL if none. *closed tells whether the producer is done. */
struct task *taskq_take_all(struct taskq *q, bool *closed);
/* The same, waiting up to timeout_ms (-1: forever) for a task or for close. */
struct task *taskq_wait_all(struct taskq *q, int timeout_ms, bool *closed);

size_t taskq_len(struct taskq *q);

#endif
