/* What happens to a task after it ran: retried later, dead-lettered, or held for its delay.
 * Pure functions of the task, the time and a random draw, so that the policy is tested alone;
 * the reporter records what they decide. */
#ifndef QWORKER_RETRY_H
#define QWORKER_RETRY_H

#include <stdint.h>

struct task;

/* The attempts a task gets: its envelope's max_attempts, else its handler's (exec), else 1. */
int retry_max_attempts(const struct task *t);
/* Milliseconds before attempt t->attempt + 1: backoff * 2^(attempt-1), at most backoff_max,
 * times a jitter of 0.75 to 1.25 drawn from draw (any 64-bit value), which spreads the retries
 * of tasks that failed together. */
int64_t retry_backoff_ms(const struct task *t, uint64_t draw);
/* Sets t->due_ms (a retry or a delay, unix ms) or t->dead from t->outcome, at now_us (unix
 * microseconds). A delay is rounded up to the millisecond: a task never runs before it is
 * over. */
void retry_decide(struct task *t, int64_t now_us, uint64_t draw);

#endif
